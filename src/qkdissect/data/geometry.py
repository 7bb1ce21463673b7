"""Each model's own input geometry and preprocessing.

- **Preprocessing** (:class:`Preprocess`): a model's own transform (resize, centre crop or pad, scale,
  normalisation), pixel-identical to timm's eval transform or to the Hugging Face *PIL* (slow) image processor,
  read by :func:`qkdissect.models.preprocess_for`. The geometry is explicit (:meth:`Preprocess.geometry`,
  :meth:`Preprocess.apply`) so masks follow exactly the same resize, crop box and rounding.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image

from .decoding import array_to_image, decode
from .sources import ImageItem

if TYPE_CHECKING:
    import torch


#: PIL's resampling filters by name; Hugging Face processors store PIL's own codes (``RESAMPLE_NAMES``)
RESAMPLE = {n: Image.Resampling[n.upper()] for n in ("nearest", "lanczos", "bilinear", "bicubic", "box", "hamming")}
RESAMPLE_NAMES = {int(f): n for n, f in RESAMPLE.items()}


def centre_offset(size: int, crop: int, rounding: str) -> int:
    """Offset of a centred ``crop`` in ``size`` pixels (negative: that many padded before). ``round``: torchvision's
    ``center_crop`` (timm), ``int(round((size - crop) / 2))`` with Python's half-to-even, padding
    ``(crop - size) // 2`` before; ``floor``: Hugging Face's ``center_crop``, ``(size - crop) // 2``, padding
    included."""
    if rounding == "floor":
        return (size - crop) // 2
    return -((crop - size) // 2) if crop > size else round((size - crop) / 2.0)


def _crop(img: Image.Image, box: tuple[int, int, int, int], fill: float | tuple[int, ...]) -> Image.Image:
    """``img.crop(box)``, with ``fill`` wherever the box leaves the image."""
    if box[0] >= 0 and box[1] >= 0 and box[2] <= img.width and box[3] <= img.height:
        return img.crop(box)
    out = Image.new(img.mode, (box[2] - box[0], box[3] - box[1]), fill)  # type: ignore[arg-type]
    out.paste(img, (-box[0], -box[1]))
    return out


@dataclass(frozen=True)
class Preprocess:
    """A model's own input transform, step for step as its library's PIL pipeline runs it (pixel-identical):
    resize, centre crop to ``crop`` (height, width) — padding with ``fill`` where the image is smaller — then
    ``x * scale`` and ``(x - mean) / std``.

    ``resize``: an int ``s`` sets the shorter side to ``s`` and the longer to ``int(s * long / short)`` (torchvision's
    ``Resize(s)``, Hugging Face's ``shortest_edge``); ``(h, w)`` squashes to exactly that size when ``keep_ratio`` is
    None, or is timm's ``ResizeKeepRatio((h, w), longest=keep_ratio)``: both sides divided by
    ``max(h/th, w/tw) * keep_ratio + min(h/th, w/tw) * (1 - keep_ratio)``, then rounded; None: no resize.
    ``rounding``: the centre crop's offset rule (:func:`centre_offset`)."""

    crop: tuple[int, int]
    resize: int | tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    origin: str = ""
    keep_ratio: float | None = None
    rounding: str = "round"
    fill: tuple[int, int, int] = (0, 0, 0)
    scale: float = 1 / 255

    def resized(self, width: int, height: int) -> tuple[int, int]:
        """The (w, h) an image of that size is resized to."""
        r = self.resize
        if r is None:
            return width, height
        if isinstance(r, int):
            long = int(r * max(width, height) / min(width, height))
            return (r, long) if width <= height else (long, r)
        if self.keep_ratio is None:
            return r[1], r[0]
        rh, rw = height / r[0], width / r[1]
        ratio = max(rh, rw) * self.keep_ratio + min(rh, rw) * (1.0 - self.keep_ratio)
        return max(1, round(width / ratio)), max(1, round(height / ratio))  # timm itself fails on 0

    def geometry(self, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """(resized (w, h), crop box (left, top, right, bottom) in resized pixels; it leaves the resized image
        where the crop pads) for an image of that size."""
        (rw, rh), (ch, cw) = self.resized(width, height), self.crop
        left, top = centre_offset(rw, cw, self.rounding), centre_offset(rh, ch, self.rounding)
        return (rw, rh), (left, top, left + cw, top + ch)

    def apply(
        self, img: Image.Image, resample: str | None = None, fill: float | tuple[int, ...] | None = None
    ) -> Image.Image:
        """``img`` (any PIL mode) through the geometry; a mask takes its own ``resample`` and ``fill``."""
        size, box = self.geometry(*img.size)
        if size != img.size:
            img = img.resize(size, RESAMPLE[resample or self.interpolation])
        return _crop(img, box, self.fill if fill is None else fill)

    def image(self, img: Image.Image) -> Image.Image:
        """The resized and cropped RGB image (what the model sees, before scaling and normalisation)."""
        return self.apply(img)

    def __call__(self, img: Image.Image | np.ndarray | str | Path) -> torch.Tensor:
        """The model-input tensor (3, h, w) of an image (a PIL image, an array, or a file, decoded as every pass
        decodes it)."""
        if isinstance(img, str | Path):
            img = decode(ImageItem(str(img), Path(img)), target=max(self.crop))
        elif isinstance(img, np.ndarray):
            img = array_to_image(img)
        return self.tensor(img)

    def tensor(self, img: Image.Image) -> torch.Tensor:
        return self.normalise(self.image(img))

    def normalise(self, img: Image.Image | np.ndarray) -> torch.Tensor:
        """(3, h, w) float32 of an (h, w, 3) uint8 model-input image: ``x * scale`` in float64 rounded to float32 once
        (as Hugging Face's ``rescale``; the same float32 as torchvision's ``x / 255``), then ``(x - mean) / std``
        in float32."""
        import torch  # here, not at the top: listing and decoding images needs no torch (the config check)

        x = (np.asarray(img, dtype=np.float64) * self.scale).astype(np.float32)
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return (torch.from_numpy(x).permute(2, 0, 1) - mean) / std

    def describe(self) -> dict[str, Any]:
        return {
            "crop": list(self.crop),
            "resize": self.resize if not isinstance(self.resize, tuple) else list(self.resize),
            "keep_ratio": self.keep_ratio,
            "crop_rounding": self.rounding,
            "fill": list(self.fill),
            "scale": self.scale,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "origin": self.origin,
        }
