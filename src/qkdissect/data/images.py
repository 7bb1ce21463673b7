"""Image sources, robust decoding and each model's own preprocessing.

- **Sources** (:func:`image_source`): a folder (recursive), the ImageNet validation layout, and the photographs
  that ship offline (scikit-image's bundled ones). Every image has a stable string id (its path relative to the
  folder, or ``skimage:NAME``); a source lists them sorted, so an image's index is the same in every run.
- **Decoding** (:func:`decode`): greyscale, palette, RGBA/LA (composited on white), CMYK, 16-bit and float
  images, EXIF rotation, tiny and huge images (JPEGs are decoded at reduced size). A file that cannot be decoded
  raises :class:`ImageDecodeError`; :class:`ImageDataset` turns that into a skipped item, counted and logged.
- **Preprocessing** (:class:`Preprocess`): the geometric transform (resize, centre crop) and normalisation of a
  model (read from its timm data config or its Hugging Face image processor by
  :func:`qkdissect.models.preprocess_for`). The geometry is explicit (:meth:`Preprocess.geometry`) so masks can
  follow exactly the same transform.
"""

from __future__ import annotations

import io
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageFile, ImageOps

from ..errors import QKDissectError
from .files import list_files

log = logging.getLogger(__name__)


IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"})


#: scikit-image's bundled photographs (CC0 / public domain; no download): natural images first
SKIMAGE_PHOTOS = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "motorcycle_left",
    "motorcycle_right",
    "hubble_deep_field",
    "immunohistochemistry",
    "retina",
    "camera",
    "coins",
    "moon",
    "brick",
    "grass",
    "gravel",
    "page",
    "text",
    "cell",
    "clock",
    "logo",
    "colorwheel",
    "horse",
)


#: decode larger images, but never more than this many pixels (PIL's own guard is 179 M)
MAX_PIXELS = 400_000_000


class ImageDecodeError(QKDissectError):
    pass


class EmptyImageSourceError(QKDissectError):
    pass


@dataclass(frozen=True)
class ImageItem:
    id: str  # stable: relative path, or skimage:NAME
    path: Path | None  # None for bundled arrays


@dataclass
class ImageSource:
    """A sorted list of images with stable ids; ``outside``: links in the folder that lead out of it (skipped)."""

    kind: str
    root: str
    items: list[ImageItem]
    outside: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "root": self.root, "count": len(self.items)}
        if self.outside:
            out["links_outside_skipped"] = self.outside[:100]
        return out


def _folder_items(root: Path) -> tuple[list[ImageItem], list[str]]:
    """The images under ``root`` (ids: relative paths) and the links that leave it (skipped, named)."""
    listing = list_files(root, IMAGE_SUFFIXES)
    listing.warn("image folder")
    items = sorted((ImageItem(p.relative_to(root).as_posix(), p) for p in listing.files), key=lambda it: it.id)
    return items, listing.outside_names()


def image_source(spec: str, limit: int | None = None) -> ImageSource:
    """An image source from a spec: ``skimage`` (bundled photographs), ``folder:/path`` (or a bare path),
    ``imagenet-val:/path`` (the ILSVRC2012 validation folder, flat or one folder per class). ``limit`` keeps the
    first N ids in sorted order (the same N in every run)."""
    kind, sep, rest = spec.partition(":")
    if spec == "skimage":
        kind = "skimage"
    elif not sep or kind not in ("folder", "imagenet-val", "skimage"):
        kind, rest = "folder", spec
    if kind == "skimage":
        items = [ImageItem(f"skimage:{name}", None) for name in SKIMAGE_PHOTOS]
        src = ImageSource("skimage", "scikit-image bundled photographs", items)
    elif kind in ("folder", "imagenet-val"):
        root = Path(rest).expanduser()
        if not root.is_dir():
            hint = (
                " (the ILSVRC2012 validation images: ILSVRC/Data/CLS-LOC/val from image-net.org, or the "
                "'validation' split of the Hugging Face imagenet-1k dataset saved as files)"
                if kind == "imagenet-val"
                else ""
            )
            raise EmptyImageSourceError(f"image folder {root} does not exist{hint}")
        items, outside = _folder_items(root)
        if kind == "imagenet-val":
            # ids are the file names (ILSVRC2012_val_00000001), wherever the class sub-folders put them
            items = sorted((ImageItem(Path(it.id).stem, it.path) for it in items), key=lambda it: it.id)
            if len({it.id for it in items}) != len(items):
                raise QKDissectError(f"{root}: two files share an ImageNet id; is this a validation folder?")
        src = ImageSource(kind, str(root.resolve()), items, outside)
    else:
        raise QKDissectError(f"unknown image source {spec!r}: use skimage, folder:/path or imagenet-val:/path")
    if limit is not None:
        src.items = src.items[:limit]
    if not src.items:
        raise EmptyImageSourceError(
            f"no images in {src.root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, recursively)"
        )
    return src


def _skimage_array(name: str) -> np.ndarray:
    import skimage.data

    if name in ("motorcycle_left", "motorcycle_right"):
        left, right, _ = skimage.data.stereo_motorcycle()
        return np.asarray(left if name.endswith("left") else right)
    return np.asarray(getattr(skimage.data, name)())


def _to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> 8-bit RGB: 16-bit/32-bit/float scaled by their range, alpha composited on white."""
    if img.mode in ("I;16", "I;16B", "I;16L", "I", "F"):
        a = np.asarray(img, dtype=np.float64)
        lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
        a = (a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)
        img = Image.fromarray(np.nan_to_num(a).astype(np.uint8), "L")
    if img.mode == "P":
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "LA", "PA"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        img = Image.alpha_composite(white, rgba)
    return img.convert("RGB")


def _array_to_image(a: np.ndarray) -> Image.Image:
    if a.dtype == bool:
        a = a.astype(np.uint8) * 255
    if a.dtype != np.uint8:
        a = a.astype(np.float64)
        lo, hi = float(a.min()), float(a.max())
        a = ((a - lo) / (hi - lo) * 255.0 if hi > lo else np.zeros_like(a)).astype(np.uint8)
    if a.ndim == 3 and a.shape[2] == 4:
        return _to_rgb(Image.fromarray(a, "RGBA"))
    return Image.fromarray(a).convert("RGB")


Raw = bytes | np.ndarray  # an image as read: a file's bytes, or a bundled photograph's pixel array


def read_raw(item: ImageItem) -> Raw:
    """The image as read, before decoding (raises OSError/ValueError when it cannot be read)."""
    return item.path.read_bytes() if item.path is not None else _skimage_array(item.id.split(":", 1)[1])


def item_sha256(item: ImageItem, raw: Raw | None = None) -> str | None:
    """sha256 of an image as read (``raw``, read here when not given); None if unreadable."""
    import hashlib

    try:
        data = raw if raw is not None else read_raw(item)
    except (OSError, ValueError):
        return None
    return hashlib.sha256(data.tobytes() if isinstance(data, np.ndarray) else data).hexdigest()


def source_digests(source: ImageSource) -> list[tuple[str, str | None]]:
    """(id, sha256) of every image of a source, in its order (what `qkdissect audit` compares)."""
    return [(it.id, item_sha256(it)) for it in source.items]


def decode(item: ImageItem, target: int | None = None, raw: Raw | None = None) -> Image.Image:
    """An image as 8-bit RGB, upright (EXIF orientation applied). JPEGs much larger than ``target`` pixels on the
    shorter side are decoded at a reduced scale. ``raw``: the image already read (:func:`read_raw`), so that it
    is not read twice. Raises ImageDecodeError naming the file."""
    if item.path is None:
        return _array_to_image(raw if isinstance(raw, np.ndarray) else _skimage_array(item.id.split(":", 1)[1]))
    try:
        with Image.open(io.BytesIO(raw) if isinstance(raw, bytes) else item.path) as im:
            if im.width * im.height > MAX_PIXELS:
                raise ImageDecodeError(f"{item.path}: {im.width}x{im.height} is over {MAX_PIXELS} pixels")
            if target and im.format == "JPEG":
                im.draft("RGB", (2 * target, 2 * target))  # decode at 1/2..1/8 scale, never below 2x target
            im.load()
            upright: Image.Image = ImageOps.exif_transpose(im) or im
            return _to_rgb(upright)
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise ImageDecodeError(f"{item.path}: cannot decode ({type(e).__name__}: {e})") from e


ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


_RESAMPLE = {
    "bicubic": Image.Resampling.BICUBIC,
    "bilinear": Image.Resampling.BILINEAR,
    "nearest": Image.Resampling.NEAREST,
    "lanczos": Image.Resampling.LANCZOS,
}


@dataclass(frozen=True)
class Preprocess:
    """Resize, centre-crop to ``crop`` (height, width), scale to [0, 1] and normalise by ``mean``/``std``. The
    resize: the shorter side to ``resize`` (an int: torchvision, timm, CLIP), exactly to ``resize`` = (height,
    width) (a pair: a Hugging Face processor whose ``size`` is a height and width, e.g. DeiT's 256 x 256 before
    its 224 crop), or exactly to ``crop`` (None: a Hugging Face processor without a crop, e.g. ViT's 224 x 224)."""

    crop: tuple[int, int]
    resize: int | tuple[int, int] | None
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    interpolation: str = "bicubic"
    origin: str = ""

    def geometry(self, width: int, height: int) -> tuple[tuple[int, int], tuple[int, int, int, int]]:
        """(resized (w, h), crop box (left, top, right, bottom) in resized pixels) for an image of that size."""
        ch, cw = self.crop
        if self.resize is None:
            return (cw, ch), (0, 0, cw, ch)
        if isinstance(self.resize, tuple):
            rh, rw = self.resize
        # the shorter side becomes ``resize``, the longer int(resize * long / short): as torchvision and the
        # Hugging Face processors compute it
        elif width <= height:
            rw, rh = self.resize, int(self.resize * height / width)
        else:
            rw, rh = int(self.resize * width / height), self.resize
        rw, rh = max(cw, rw), max(ch, rh)
        left, top = (rw - cw) // 2, (rh - ch) // 2
        return (rw, rh), (left, top, left + cw, top + ch)

    def image(self, img: Image.Image) -> Image.Image:
        """The resized and cropped RGB image (what the model sees, before normalisation)."""
        size, box = self.geometry(*img.size)
        return img.resize(size, _RESAMPLE.get(self.interpolation, Image.Resampling.BICUBIC)).crop(box)

    def __call__(self, img: Image.Image | np.ndarray | str | Path) -> torch.Tensor:
        """The model-input tensor (3, h, w) of an image (a PIL image, an array, or a file, decoded as every pass
        decodes it)."""
        if isinstance(img, str | Path):
            img = decode(ImageItem(str(img), Path(img)), target=max(self.crop))
        elif isinstance(img, np.ndarray):
            img = _array_to_image(img)
        return self.tensor(img)

    def tensor(self, img: Image.Image) -> torch.Tensor:
        x = torch.from_numpy(np.asarray(self.image(img), dtype=np.float32) / 255.0).permute(2, 0, 1)
        mean = torch.tensor(self.mean, dtype=torch.float32)[:, None, None]
        std = torch.tensor(self.std, dtype=torch.float32)[:, None, None]
        return (x - mean) / std

    def describe(self) -> dict[str, Any]:
        return {
            "crop": list(self.crop),
            "resize": list(self.resize) if isinstance(self.resize, tuple) else self.resize,
            "mean": list(self.mean),
            "std": list(self.std),
            "interpolation": self.interpolation,
            "origin": self.origin,
        }


@dataclass
class ImageDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """(index, tensor, error, sha256) per image; a file that fails to decode yields (index, None, error, sha256)
    and is logged. The digest is of the file as read, for the store's provenance."""

    source: ImageSource
    preprocess: Preprocess
    skipped: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str, str | None]:
        item = self.source.items[i]
        try:
            raw: Raw | None = read_raw(item)
        except (OSError, ValueError):
            raw = None  # decode tries again and raises ImageDecodeError naming the file
        digest = item_sha256(item, raw)
        try:
            img = decode(item, target=max(self.preprocess.crop), raw=raw)
        except ImageDecodeError as e:
            log.warning("skipping %s", e)
            return i, None, str(e), digest
        return i, self.preprocess.tensor(img), "", digest


Batch = tuple[list[int], torch.Tensor | None, list[tuple[int, str]], list[tuple[int, str | None]]]


def collate(batch: Sequence[tuple[int, torch.Tensor | None, str, str | None]]) -> Batch:
    """Stack the decoded images; report the indices and errors of those that were not, and every digest."""
    ok = [(i, x) for i, x, _, _ in batch if x is not None]
    bad = [(i, err) for i, x, err, _ in batch if x is None]
    digests = [(i, d) for i, _, _, d in batch]
    if not ok:
        return [], None, bad, digests
    return [i for i, _ in ok], torch.stack([x for _, x in ok]), bad, digests


def default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))
