"""Images with object masks: the Odd-One-Out (O3) layout, PASCAL VOC-style palette masks, and a generator of
synthetic odd-one-out scenes with exact masks. Masks follow the model's own geometric preprocessing and are
reduced to the token grid by area fractions.

Every item gives its image and named float masks in [0, 1] at the image's resolution:

- O3 (``images/``, ``targ_labels/``, ``dist_labels/``, same file stems): ``target``, ``distractor`` (binary,
  > 0.5), ``background`` = 1 - max(target, distractor).
- ADE20K (SceneParsing ``images/validation`` + ``annotations/validation``): one object per class present.

**Counts.** O3 has 2001 images and the ADE20K SceneParsing validation split 2000 (:data:`EXPECTED`). Without a
``limit`` every item found must be complete (an image with all its masks) and there must be at least that many;
with ``limit: N`` the first N items (in sorted name order) must be complete. Anything else fails when the dataset
is listed, before a model is loaded, naming the folder, the count found, the count expected and the first
missing names: a half-unpacked download never yields a figure.
- VOC (``{N}_image.png`` + ``{N}_target.png``, or ``JPEGImages/`` + ``SegmentationClass/``): class segments in
  the VOC palette (black = background, (224, 224, 192) = void/boundary). VOC has no target/distractor design: we
  use the largest object segment as ``target`` and the second largest (another class) as ``distractor``; void
  pixels count as background. ``objects`` lists every class segment (for the same-object analysis).
- Synthetic (``synthetic:N``): one singleton target among similar distractors on a textured background, drawn
  with exact masks (tests and the offline default).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from ..errors import QKDissectError
from .decoding import decode
from .files import list_files
from .geometry import Preprocess
from .sources import IMAGE_SUFFIXES, ImageItem

VOC_VOID = (224, 224, 192)
REGIONS = ("target", "distractor", "background")
#: items in the full datasets (the paper: O3 has 2001 images; ADE20K SceneParsing validation 2000)
EXPECTED = {"o3": 2001, "ade20k": 2000}


class MaskDatasetError(QKDissectError):
    pass


@dataclass
class MaskedItem:
    """One image with masks; ``load`` returns (RGB image, {name: float mask HxW in [0, 1]}); ``files`` are the
    files it reads (none for generated scenes), for the provenance."""

    id: str
    load: Callable[[], tuple[Image.Image, dict[str, np.ndarray]]]
    files: tuple[Path, ...] = ()

    def sha256(self) -> str | None:
        """Digest of the item's files as read (None for a generated item, or when a file is unreadable)."""
        if not self.files:
            return None
        h = hashlib.sha256()
        try:
            for f in self.files:
                h.update(f.name.encode() + b"\0" + f.read_bytes())
        except OSError:
            return None
        return h.hexdigest()


@dataclass
class MaskDataset:
    kind: str
    root: str
    items: list[MaskedItem]
    granularity: str = ""
    notes: list[str] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.items)

    def describe(self) -> dict[str, object]:
        return {"kind": self.kind, "root": self.root, "count": len(self), "granularity": self.granularity}


# ----------------------------------------------------------------------------------------- O3
def _by_stem(folder: Path, pattern: str = "*") -> dict[str, Path]:
    """The image files of a folder (not recursive) by stem; links that leave the folder are skipped and named."""
    listing = list_files(folder, IMAGE_SUFFIXES, pattern=pattern, recursive=False)
    listing.warn("mask dataset folder")
    return {p.stem: p for p in listing.files}


def complete_stems(
    root: Path, what: str, parts: dict[str, dict[str, Path]], limit: int | None, expected: int, hint: str
) -> list[str]:
    """The sorted names whose every part (images, each mask) is there: all of them, at least ``expected``
    (no limit), or the first ``limit`` (see the module docstring); else one line naming what is missing."""
    names = sorted(set().union(*parts.values()))
    lacking = {n: [p for p, files in parts.items() if n not in files] for n in names}
    wanted = names if limit is None else names[:limit]
    need = expected if limit is None else limit
    missing = [n for n in wanted if lacking[n]]
    found = len(wanted) - len(missing)
    if not missing and found >= need:
        return wanted
    shown = "; ".join(f"{n} (no {', '.join(lacking[n])})" for n in missing[:5])
    shown += f"; ... ({len(missing)} in all)" if len(missing) > 5 else ""
    scope = "" if limit is None else f" among the first {limit} names (limit {limit})"
    raise MaskDatasetError(
        f"{what} folder {root}: {found} complete items{scope}, expected {need}"
        f"{'; missing: ' + shown if missing else ''}. {hint}"
    )


def _binary(path: Path) -> np.ndarray:
    a = np.asarray(Image.open(path).convert("L"), dtype=np.float64) / 255.0
    return (a > 0.5).astype(np.float64)


def o3_dataset(root: str | Path, limit: int | None = None, expected: int = EXPECTED["o3"]) -> MaskDataset:
    """The O3 layout: ``images/``, ``targ_labels/``, ``dist_labels/`` with matching file stems, checked for its
    2001 complete items (or the first ``limit``)."""
    root = Path(root).expanduser()
    dirs = {name: root / name for name in ("images", "targ_labels", "dist_labels")}
    missing = [str(d) for d in dirs.values() if not d.is_dir()]
    if missing:
        raise MaskDatasetError(
            f"not an O3 dataset: missing {', '.join(missing)}. O3 (Kotseruba et al., BMVC 2019) comes from "
            "http://data.nvision2.eecs.yorku.ca/data/O3/ (O3_data.zip); unpack it and point the config at the "
            "folder holding images/, targ_labels/ and dist_labels/"
        )
    images, targ, dist = (_by_stem(d) for d in dirs.values())
    hint = "Every images/X needs targ_labels/X and dist_labels/X: unpack all of O3_data.zip, or set a limit"
    stems = complete_stems(root, "O3", {"images": images, "targ_labels": targ, "dist_labels": dist}, limit,
                           expected, hint)  # fmt: skip

    def item(stem: str) -> MaskedItem:
        def load() -> tuple[Image.Image, dict[str, np.ndarray]]:
            t, d = _binary(targ[stem]), _binary(dist[stem])
            return decode(ImageItem(stem, images[stem])), {
                "target": t,
                "distractor": d,
                "background": 1.0 - np.maximum(t, d),
            }

        return MaskedItem(stem, load, (images[stem], targ[stem], dist[stem]))

    return MaskDataset("o3", str(root), [item(s) for s in stems], "binary target/distractor masks")


# ----------------------------------------------------------------------------------------- VOC
def _voc_segments(rgb: np.ndarray) -> dict[tuple[int, int, int], np.ndarray]:
    colours, inverse = np.unique(rgb.reshape(-1, 3), axis=0, return_inverse=True)
    out = {}
    for i, c in enumerate(colours):
        key = (int(c[0]), int(c[1]), int(c[2]))
        if key in ((0, 0, 0), VOC_VOID):
            continue
        out[key] = (inverse.reshape(rgb.shape[:2]) == i).astype(np.float64)
    return out


def voc_masks(mask_path: Path) -> dict[str, np.ndarray]:
    """Target (largest class segment), distractor (second largest, or empty), background, and every object."""
    rgb = np.asarray(Image.open(mask_path).convert("RGB"))
    segs = sorted(_voc_segments(rgb).items(), key=lambda kv: -kv[1].sum())
    empty = np.zeros(rgb.shape[:2])
    target = segs[0][1] if segs else empty
    distractor = segs[1][1] if len(segs) > 1 else empty
    masks = {"target": target, "distractor": distractor, "background": 1.0 - np.maximum(target, distractor)}
    for colour, m in segs:
        masks[f"object:{colour[0]},{colour[1]},{colour[2]}"] = m
    masks["object:background"] = (np.all(rgb == 0, axis=-1)).astype(np.float64)
    return masks


def voc_dataset(root: str | Path) -> MaskDataset:
    """VOC-style pairs: ``N_image.png`` + ``N_target.png`` in one folder, or ``JPEGImages/`` +
    ``SegmentationClass/``."""
    root = Path(root).expanduser()
    if not root.is_dir():
        raise MaskDatasetError(f"mask dataset folder {root} does not exist")
    if (root / "SegmentationClass").is_dir():
        masks = _by_stem(root / "SegmentationClass")
        images = {s: p for s, p in _by_stem(root / "JPEGImages").items() if s in masks}
    else:
        images = {s.removesuffix("_image"): p for s, p in _by_stem(root, "*_image.*").items()}
        masks = {s.removesuffix("_target"): p for s, p in _by_stem(root, "*_target.*").items()}
        lacking = sorted(set(images) - set(masks))
        if lacking:
            raise MaskDatasetError(f"{root}: images without a *_target mask: {lacking[:5]}")
    if not images:
        raise MaskDatasetError(
            f"no VOC-style images with masks in {root} (N_image.png + N_target.png, or JPEGImages/ + "
            "SegmentationClass/)"
        )

    def item(stem: str) -> MaskedItem:
        return MaskedItem(
            stem, lambda: (decode(ImageItem(stem, images[stem])), voc_masks(masks[stem])), (images[stem], masks[stem])
        )

    keys = sorted(images, key=lambda s: (len(s), s))  # numeric stems in numeric order
    return MaskDataset(
        "voc",
        str(root),
        [item(s) for s in keys],
        "class segments (VOC palette); target = largest, distractor = second largest, void = background",
    )


# ----------------------------------------------------------------------------------------- synthetic
def synthetic_scene(seed: int, size: int = 224, n_distractors: int = 5) -> tuple[Image.Image, dict[str, np.ndarray]]:
    """One odd-one-out scene: a textured background, ``n_distractors`` discs of one colour and one disc of another
    (the singleton target), non-overlapping; masks are exact (drawn with the same shapes)."""
    rng = np.random.default_rng(seed)
    tex = rng.normal(0, 18, (size // 8, size // 8, 3))
    base = np.clip(np.array([110.0, 120, 100]) + np.kron(tex, np.ones((8, 8, 1))), 0, 255).astype(np.uint8)
    img = Image.fromarray(base)
    hue = rng.uniform(0, 1)
    dist_col = tuple(int(255 * c) for c in _hsv(hue, 0.8, 0.9))
    targ_col = tuple(int(255 * c) for c in _hsv((hue + 0.5) % 1, 0.8, 0.9))
    r = size // 10
    centres: list[tuple[int, int]] = []
    while len(centres) < n_distractors + 1:
        c = (int(rng.integers(r + 2, size - r - 2)), int(rng.integers(r + 2, size - r - 2)))
        if all((c[0] - o[0]) ** 2 + (c[1] - o[1]) ** 2 > (2 * r + 6) ** 2 for o in centres):
            centres.append(c)
    masks: dict[str, np.ndarray] = {}
    draw = ImageDraw.Draw(img)
    for i, (x, y) in enumerate(centres):
        m = Image.new("L", (size, size), 0)
        ImageDraw.Draw(m).ellipse((x - r, y - r, x + r, y + r), fill=255)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=targ_col if i == 0 else dist_col)
        masks[f"object:disc{i}"] = np.asarray(m, dtype=np.float64) / 255.0
    discs = [masks[f"object:disc{i}"] for i in range(len(centres))]
    masks["target"] = discs[0]
    masks["distractor"] = np.maximum.reduce(discs[1:])
    masks["background"] = 1.0 - np.maximum(masks["target"], masks["distractor"])
    masks["object:background"] = masks["background"]
    return img, masks


def _hsv(h: float, s: float, v: float) -> tuple[float, float, float]:
    import colorsys

    return colorsys.hsv_to_rgb(h, s, v)


def synthetic_dataset(n: int = 16, size: int = 224, seed: int = 0) -> MaskDataset:
    def item(i: int) -> MaskedItem:
        return MaskedItem(f"synthetic:{i}", lambda: synthetic_scene(seed + i, size))

    items = [item(i) for i in range(n)]
    return MaskDataset("synthetic", f"generated (seed {seed}, {size} px)", items, "exact drawn masks")


def ade20k_dataset(
    root: str | Path, split: str = "validation", limit: int | None = None, expected: int | None = None
) -> MaskDataset:
    """ADE20K as the SceneParsing benchmark ships it (ADEChallengeData2016): ``images/<split>/*.jpg`` and
    ``annotations/<split>/*.png`` with class indices 1..150 (0 = unlabelled). Objects are class segments (the
    benchmark has no instances): one object per class present in the image. The validation split is checked for
    its 2000 complete items (or the first ``limit``); ``expected`` overrides that count (another split: 0)."""
    root = Path(root).expanduser()
    img_dir, ann_dir = root / "images" / split, root / "annotations" / split
    if not img_dir.is_dir() or not ann_dir.is_dir():
        raise MaskDatasetError(
            f"not an ADE20K SceneParsing folder: need {img_dir} and {ann_dir}. Get ADEChallengeData2016.zip from "
            "the MIT Scene Parsing benchmark (sceneparsing.csail.mit.edu) and point the config at the unpacked folder"
        )
    images, anns = _by_stem(img_dir), _by_stem(ann_dir)
    if expected is None:
        expected = EXPECTED["ade20k"] if split == "validation" else 0
    hint = f"Every images/{split}/X.jpg needs annotations/{split}/X.png: unpack all of ADEChallengeData2016.zip"
    parts = {f"images/{split}": images, f"annotations/{split}": anns}
    stems = complete_stems(root, "ADE20K", parts, limit, expected, hint + ", or set a limit")

    def item(stem: str) -> MaskedItem:
        def load() -> tuple[Image.Image, dict[str, np.ndarray]]:
            lab = np.asarray(Image.open(anns[stem]))
            masks = {f"object:class{c}": (lab == c).astype(np.float64) for c in np.unique(lab) if c != 0}
            return decode(ImageItem(stem, images[stem])), masks

        return MaskedItem(stem, load, (images[stem], anns[stem]))

    return MaskDataset("ade20k", str(root), [item(s) for s in stems], "SceneParsing class segments")


def mask_dataset(spec: str, limit: int | None = None) -> MaskDataset:
    """``synthetic[:N]``, ``o3:/path``, ``voc:/path``, ``ade20k:/path`` (SceneParsing validation split); O3 and
    ADE20K are checked for their full counts, or their first ``limit`` items (see the module docstring)."""
    kind, _, rest = spec.partition(":")
    if kind == "synthetic":
        ds = synthetic_dataset(int(rest) if rest else 16)
    elif kind == "o3":
        ds = o3_dataset(rest, limit=limit)
    elif kind == "voc":
        ds = voc_dataset(rest)
    elif kind == "ade20k":
        ds = ade20k_dataset(rest, limit=limit)
    else:
        raise MaskDatasetError(f"unknown mask dataset {spec!r}: use synthetic[:N], o3:/path, voc:/path or ade20k:/path")
    if limit is not None:
        ds.items = ds.items[:limit]
    return ds


# ----------------------------------------------------------------------------------------- geometry
def mask_to_tokens(mask: np.ndarray, pre: Preprocess, grid: tuple[int, int], resample: str = "box") -> np.ndarray:
    """A float mask at image resolution -> (g_h, g_w) area fractions, through the same resize and centre crop as
    the image (:meth:`Preprocess.apply`: same resized size, crop box and rounding; ``resample`` area-averaging by
    default; padding counts as outside the mask), then averaged over each token's pixels."""
    m = pre.apply(Image.fromarray(mask.astype(np.float32), "F"), resample=resample, fill=0.0)
    return np.asarray(m.resize((grid[1], grid[0]), Image.Resampling.BOX), dtype=np.float64)
