"""Image sources: where a pass's images come from, with stable ids, labels and digests.

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

Decoding is :mod:`.decoding`; each model's input geometry :mod:`.geometry`."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import QKDissectError
from . import parquet
from .files import list_files
from .labels import find_loc_solution, folder_labels, imagenet_classes, pick, read_loc_solution

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


def bundled_array(item_id: str) -> np.ndarray:
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


Raw = bytes | np.ndarray  # an image as read: a file's bytes, or a bundled photograph's pixel array


def read_raw(item: ImageItem) -> Raw:
    """The image as read, before decoding (raises OSError/ValueError when it cannot be read)."""
    if item.row is not None and item.path is not None:
        return parquet.read_bytes(item.path, *item.row)
    return item.path.read_bytes() if item.path is not None else bundled_array(item.id)


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


def default_workers() -> int:
    return max(0, min(4, (os.cpu_count() or 1) - 1))
