"""Image sources, robust decoding and each model's own preprocessing.

- **Sources** (:func:`image_source`): a folder (recursive), the ImageNet validation split (as ILSVRC files, or as
  the Hugging Face hub's parquet files), and the photographs that ship offline (scikit-image's bundled ones).
  Every image has a stable string id; a source lists them sorted by id, so an image's index (its position in
  sorted id order) is the same in every run:

  ==================================  =====================================================================
  ``skimage``                         ``skimage:NAME``
  ``folder:/path`` (or a bare path)   the path relative to the folder (``n01440764/x.JPEG``)
  ``imagenet-val:/path``              the file stem (``ILSVRC2012_val_00000001``), flat or in class folders
  ``imagenet-hf[:/cache][@rev]``      the stem of the row's ``image.path`` without the wnid the hub appends
                                      (``ILSVRC2012_val_00000001_n01751748.JPEG`` -> ``ILSVRC2012_val_00000001``)
  ``synthetic:N``                     ``synthetic:000000012``: N generated noise images (64 x 64, seeded by
                                      their number; no files), to try a set-up or time a pass at any scale
  ==================================  =====================================================================

  so the ImageNet validation images have the same ids, order and indices in both layouts. ``imagenet-hf`` reads
  the ``ILSVRC/imagenet-1k`` dataset's validation split from a Hugging Face hub cache (``$HF_HUB_CACHE``, else
  ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``; or the folder given), at ``refs/main`` or the revision
  given; it never downloads (see :mod:`qkdissect.data.parquet`). An image's bytes are read from its (file, row
  group, row), a few row groups cached per process.
- **Labels**: an image's ImageNet-1k class (index 0-999 in sorted-wnid order, and its wnid) where the source
  knows it: the parquet ``label`` column, the wnid class folder of a ``folder:`` or ``imagenet-val:`` image, or
  the ``LOC_val_solution.csv`` found beside or above a flat validation folder (:mod:`qkdissect.data.labels`,
  which also defines the ``class:`` references that pick an image by class).
- **Digests** (:func:`item_sha256`): the sha256 of an image as stored: a file's bytes, a parquet row's
  ``image.bytes`` (the same JPEG bytes), a bundled photograph's pixel array.
- **Decoding** (:func:`decode`): greyscale, palette, RGBA/LA (composited on white), CMYK, 16-bit and float
  images, EXIF rotation, tiny and huge images (over :data:`DRAFT_PIXELS` they are reduced while or right
  after they are decoded; all others in full, as the models' own libraries decode them; over
  :func:`max_pixels`, skipped). A file that cannot be decoded raises :class:`ImageDecodeError`;
  :class:`~qkdissect.data.dataset.ImageDataset` turns that into a skipped item, counted and logged.
- **Preprocessing** (:class:`Preprocess`): a model's own transform (resize, centre crop or pad, scale,
  normalisation), pixel-identical to timm's eval transform or to the Hugging Face *PIL* (slow) image processor,
  read by :func:`qkdissect.models.preprocess_for`. The geometry is explicit (:meth:`Preprocess.geometry`,
  :meth:`Preprocess.apply`) so masks follow exactly the same resize, crop box and rounding.
"""

from __future__ import annotations

import io
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageFile, ImageOps

from ..errors import QKDissectError
from . import parquet
from .files import list_files
from .labels import find_loc_solution, folder_labels, imagenet_classes, pick, read_loc_solution

if TYPE_CHECKING:
    import torch

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


#: decode larger images, but never more than this many pixels (PIL's own guard is 179 M); an image that would be
#: decoded at more pixels is skipped. ``$QKDISSECT_MAX_PIXELS`` sets another limit (lower it to bound memory: an
#: RGB image takes 4 bytes a pixel while it is decoded)
MAX_PIXELS = 400_000_000
MAX_PIXELS_ENV = "QKDISSECT_MAX_PIXELS"
#: images with more pixels than this are reduced while (JPEG: DCT-domain, 1/2 to 1/8) or right after (others: box
#: average by an integer factor, before any copy) they are decoded, never below twice the model's input side, to
#: bound memory; all others are decoded in full, pixel for pixel as timm and Hugging Face decode them
DRAFT_PIXELS = 50_000_000
#: modes whose pixels cannot be averaged as they are (palette indices; PIL reduces no 1-bit or 16-bit image)
_WIDEN = {"1": "L", "P": "RGBA", "PA": "RGBA", "I;16": "I", "I;16B": "I", "I;16L": "I", "I;16N": "I"}
#: EXIF orientation -> the transpose that makes the image upright (as ImageOps.exif_transpose)
_UPRIGHT = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def max_pixels() -> int:
    """The most pixels an image is decoded at: ``$QKDISSECT_MAX_PIXELS``, else :data:`MAX_PIXELS`."""
    text = os.environ.get(MAX_PIXELS_ENV, "")
    if not text:
        return MAX_PIXELS
    if not text.isdigit() or int(text) < 1:
        raise QKDissectError(f"${MAX_PIXELS_ENV} is {text!r}: give a positive number of pixels, e.g. 100000000")
    return int(text)


class ImageDecodeError(QKDissectError):
    pass


class EmptyImageSourceError(QKDissectError):
    pass


@dataclass(frozen=True)
class ImageItem:
    id: str  # stable: relative path, file stem, or skimage:NAME
    path: Path | None  # the image file, or the parquet file holding it; None for bundled arrays
    label: int | None = None  # ImageNet-1k class index (sorted-wnid order), where the source knows it
    row: tuple[int, int] | None = None  # (row group, row in the group) of a parquet image

    @property
    def wnid(self) -> str | None:
        return imagenet_classes().wnids[self.label] if self.label is not None else None

    @property
    def where(self) -> str:
        """The image's file, or its place in a parquet file, for messages."""
        if self.row is not None:
            return f"{self.path} (row group {self.row[0]}, row {self.row[1]}: {self.id})"
        return str(self.path) if self.path is not None else self.id


@dataclass
class ImageSource:
    """A sorted list of images with stable ids; ``outside``: links in the folder that lead out of it (skipped)."""

    kind: str
    root: str
    items: list[ImageItem]
    outside: list[str] = field(default_factory=list)
    revision: str | None = None  # imagenet-hf: the dataset commit read

    def __len__(self) -> int:
        return len(self.items)

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"kind": self.kind, "root": self.root, "count": len(self.items)}
        if self.revision:
            out["revision"] = self.revision
        if self.outside:
            out["links_outside_skipped"] = self.outside[:100]
        return out

    def pick(self, ref: str, among: set[str] | None = None) -> ImageItem:
        """The image a ``class:`` reference picks (:mod:`qkdissect.data.labels`), among the ids ``among`` if
        given (e.g. the images of a projections store that could be decoded)."""
        items = [it for it in self.items if among is None or it.id in among]
        chosen = pick(ref, ((it.id, it.label) for it in items), self.root)
        return next(it for it in items if it.id == chosen)


def _folder_items(root: Path) -> tuple[list[ImageItem], list[str]]:
    """The images under ``root`` (ids: relative paths) and the links that leave it (skipped, named)."""
    listing = list_files(root, IMAGE_SUFFIXES)
    listing.warn("image folder")
    items = sorted((ImageItem(p.relative_to(root).as_posix(), p) for p in listing.files), key=lambda it: it.id)
    return items, listing.outside_names()


def _labelled(items: list[ImageItem], root: Path, kind: str) -> list[ImageItem]:
    """The items with their classes: from wnid class folders, else (a flat validation folder) from the
    LOC_val_solution.csv found beside or above it; unchanged when neither is there."""
    labels = folder_labels(it.path.relative_to(root).as_posix() for it in items if it.path is not None)
    if labels is not None:
        return [ImageItem(it.id, it.path, labels[it.path.relative_to(root).as_posix()]) for it in items if it.path]
    loc = find_loc_solution(root) if kind == "imagenet-val" else None
    if loc is None:
        return items
    solution = read_loc_solution(loc)
    log.info("imagenet-val %s: labels from %s", root, loc)
    return [ImageItem(it.id, it.path, solution.get(it.id)) for it in items]


def _hf_source(rest: str) -> ImageSource:
    location, revision = parquet.parse_spec(rest)
    split = parquet.locate(location, revision)
    rows = parquet.list_rows(split)
    items = sorted((ImageItem(r.id, r.file, r.label, (r.group, r.row)) for r in rows), key=lambda it: it.id)
    if len({it.id for it in items}) != len(items):
        raise QKDissectError(f"{split.root}: two rows share an ImageNet id; is this the validation split?")
    return ImageSource("imagenet-hf", str(split.root.resolve()), items, split.outside, split.revision)


def image_source(spec: str, limit: int | None = None) -> ImageSource:
    """An image source from a spec: ``skimage`` (bundled photographs), ``synthetic:N`` (generated), ``folder:/path``
    (or a bare path), ``imagenet-val:/path`` (the ILSVRC2012 validation folder, flat or one folder per class),
    ``imagenet-hf[:/path][@revision]`` (the Hugging Face ``ILSVRC/imagenet-1k`` validation parquet files in a hub
    cache). ``limit`` keeps the first N ids in sorted order (the same N in every run)."""
    if spec == "imagenet-hf" or spec.startswith(("imagenet-hf:", "imagenet-hf@")):
        return _limited(_hf_source(spec.removeprefix("imagenet-hf")), limit)
    kind, sep, rest = spec.partition(":")
    if spec == "skimage":
        kind = "skimage"
    elif not sep or kind not in ("folder", "imagenet-val", "skimage", "synthetic"):
        kind, rest = "folder", spec
    if kind == "synthetic":
        if not rest.isdigit() or not 0 < int(rest) < 10**SYNTHETIC_DIGITS:
            raise QKDissectError(f"image source {spec!r}: give synthetic:N, N images (1 to {10**SYNTHETIC_DIGITS - 1})")
        items = [ImageItem(f"synthetic:{i:0{SYNTHETIC_DIGITS}d}", None) for i in range(int(rest))]
        src = ImageSource("synthetic", f"{rest} generated noise images", items)
    elif kind == "skimage":
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
        src = ImageSource(kind, str(root.resolve()), _labelled(items, root, kind), outside)
    else:
        raise QKDissectError(
            f"unknown image source {spec!r}: use skimage, folder:/path, imagenet-val:/path or imagenet-hf[:/path]"
        )
    return _limited(src, limit)


def _limited(src: ImageSource, limit: int | None) -> ImageSource:
    if limit is not None:
        src.items = src.items[:limit]
    if not src.items:
        raise EmptyImageSourceError(
            f"no images in {src.root} (looked for {', '.join(sorted(IMAGE_SUFFIXES))}, recursively)"
        )
    return src


#: digits of a synthetic image's number in its id; its side in pixels
SYNTHETIC_DIGITS, SYNTHETIC_SIDE = 9, 64


def _bundled_array(item_id: str) -> np.ndarray:
    """The pixels of an image without a file: a bundled photograph, or a generated one (seeded by its number)."""
    kind, name = item_id.split(":", 1)
    if kind == "synthetic":
        return np.random.default_rng(int(name)).integers(0, 256, (SYNTHETIC_SIDE, SYNTHETIC_SIDE, 3), np.uint8)
    return _skimage_array(name)


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
    if item.row is not None and item.path is not None:
        return parquet.read_bytes(item.path, *item.row)
    return item.path.read_bytes() if item.path is not None else _bundled_array(item.id)


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
    """An image as 8-bit RGB, upright (EXIF orientation applied), decoded in full — except JPEGs over
    :data:`DRAFT_PIXELS` pixels when a ``target`` (the model's input side) is given: those are decoded at a reduced
    scale, never below twice ``target`` on either side. ``raw``: the image already read (:func:`read_raw`), so that
    it is not read twice. Raises ImageDecodeError naming the file."""
    if item.path is None:
        return _array_to_image(raw if isinstance(raw, np.ndarray) else _bundled_array(item.id))
    limit = max_pixels()
    try:
        if raw is None and item.row is not None:
            raw = read_raw(item)
        with Image.open(io.BytesIO(raw) if isinstance(raw, bytes) else item.path) as im:
            size = f"{im.width}x{im.height}"
            side = 2 * target if target else 0  # the least a reduced image keeps a side
            huge = side > 0 and im.width * im.height > DRAFT_PIXELS
            if huge and im.format == "JPEG":
                im.draft("RGB", (side, side))  # decode at 1/2..1/8 scale, never below 2x target
            if im.width * im.height > limit:
                raise ImageDecodeError(
                    f"{item.where}: {size} would be decoded at {im.width * im.height} pixels, over the limit of "
                    f"{limit} (${MAX_PIXELS_ENV}): skipped"
                )
            im.load()
            if huge and im.format != "JPEG":
                return _to_rgb(_reduced(im, side))
            upright: Image.Image = ImageOps.exif_transpose(im) or im
            return _to_rgb(upright)
    except ImageDecodeError:
        raise
    except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
        raise decode_error(item, e) from e


def _reduced(im: Image.Image, side: int) -> Image.Image:
    """A decoded image box-averaged by an integer factor to no less than ``side`` pixels a side, and made upright,
    without any full-size copy of it (what a JPEG's draft does while it is decoded)."""
    turn = _UPRIGHT.get(im.getexif().get(0x0112, 1))
    k = min(im.width, im.height) // side
    small = im if k < 2 else (im.convert(_WIDEN[im.mode]) if im.mode in _WIDEN else im).reduce(k)
    return small.transpose(turn) if turn is not None else small


def decode_error(item: ImageItem, e: Exception) -> ImageDecodeError:
    """``e`` of decoding ``item`` as one line naming the image (PIL names an image read from memory by the
    object's address: the image's id instead)."""
    said = re.sub(r"<_io\.BytesIO object at 0x[0-9a-fA-F]+>", repr(item.id), str(e))
    return ImageDecodeError(f"{item.where}: cannot decode ({type(e).__name__}: {said})")


ImageFile.LOAD_TRUNCATED_IMAGES = False  # a truncated file is an error, not a grey half-image
Image.MAX_IMAGE_PIXELS = MAX_PIXELS


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
            img = _array_to_image(img)
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


def default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))
