"""Rehearsal datasets: the layouts of the paper's data (ImageNet validation as ILSVRC files and as a Hugging Face
hub cache, O3, ADE20K SceneParsing), built from real photographs of the offline assets, so that the paper's
configuration runs end to end on a machine without the real data (``make rehearsal``, and the test that runs
``config/paper.yaml`` offline).

Every builder takes a ``count`` (a handful for a shallow test; the real counts for the full rehearsal: 50,000
ImageNet images are possible but 1000 is the default, O3 2001, ADE20K 2000), writes into a temporary folder
beside its output and renames it into place when done (nothing half-written after a failure), and leaves a
``REHEARSAL.json`` marker: a second call with the same count returns the existing folder; a folder that is not a
rehearsal build of that count is never overwritten.

- **ImageNet** (:func:`imagenet_val_folder`, :func:`imagenet_hub_cache`): the 1000 photographs of
  ``images/imagenet_sample_1000`` (one per class; ``labels.csv``) become validation images
  ``ILSVRC2012_val_00000001`` ... in a fixed shuffled order (so id order is not class order), cycling through them
  beyond 1000. Both layouts hold the same ids, labels and JPEG bytes, so both give identical stores: the ILSVRC
  folder (``ILSVRC/Data/CLS-LOC/val/*.JPEG`` and the Kaggle ``LOC_val_solution.csv``), and the hub cache
  (``datasets--ILSVRC--imagenet-1k`` with ``blobs/``, ``snapshots/<rev>/data/validation-*-of-*.parquet`` linking
  into them, ``refs/main``; parquet rows ``image {bytes, path}``, ``label``, in id order, row groups of 100 rows
  as the Hugging Face writers make them, the ClassLabel names in the schema metadata).
- **O3** (:func:`o3_layout`): a real photograph (the ImageNet sample) with painted objects: several distractors
  of one colour and shape and one target of the opposite hue, non-overlapping; ``images/NAME.jpg``,
  ``targ_labels/NAME.png``, ``dist_labels/NAME.png`` (white = object), NAMEs like the real ones (13 letters
  and digits). No ``image_properties.csv``: qkdissect's loader does not read it.
- **ADE20K** (:func:`ade20k_layout`): the 14 real PASCAL VOC photographs with their real segmentations
  (``images/voc2012_seg_samples``), each item a different random crop (and flip, and size) of one of them;
  ``images/validation/ADE_val_00000001.jpg`` and ``annotations/validation/ADE_val_00000001.png`` with class
  indices: VOC class k is k + 1, VOC background is 1, VOC void is 0 (unlabelled).
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import os
import shutil
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

REPO = Path(__file__).resolve().parents[1]
MARKER = "REHEARSAL.json"
IMAGENET_SAMPLE = "images/imagenet_sample_1000"
VOC_SAMPLES = "images/voc2012_seg_samples"
HUB_REPO = "datasets--ILSVRC--imagenet-1k"
#: the counts of the real datasets
COUNTS = {"imagenet": 50_000, "o3": 2001, "ade20k": 2000}


def assets_folder(assets: str | Path | None = None) -> Path:
    """The offline assets: ``assets``, else ``$QKDISSECT_ASSETS``, else ``../shared/assets`` beside the checkout."""
    found = Path(assets or os.environ.get("QKDISSECT_ASSETS") or REPO.parent / "shared" / "assets").expanduser()
    if not (found / IMAGENET_SAMPLE / "labels.csv").is_file():
        raise FileNotFoundError(f"no {IMAGENET_SAMPLE}/labels.csv under {found}: set QKDISSECT_ASSETS")
    return found


@contextmanager
def _building(out: Path, kind: str, count: int) -> Iterator[Path | None]:
    """A temporary folder to build ``out`` in (renamed into place at the end), or None when ``out`` is already
    this build."""
    marker = {"kind": kind, "count": count}
    if out.exists():
        try:
            done = json.loads((out / MARKER).read_text()) == marker
        except (OSError, ValueError):
            done = False
        if not done:
            raise FileExistsError(f"{out} exists and is not a rehearsal {kind} of {count} items: remove it first")
        yield None
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        yield tmp
        (tmp / MARKER).write_text(json.dumps(marker))
        tmp.rename(out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


# ----------------------------------------------------------------------------------------- ImageNet
@dataclass(frozen=True)
class ValImage:
    id: str  # ILSVRC2012_val_00000001
    wnid: str
    label: int
    file: Path  # the photograph it is made of
    size: tuple[int, int]

    @property
    def data(self) -> bytes:
        return self.file.read_bytes()


def imagenet_images(count: int, assets: str | Path | None = None, first: Sequence[str] = ()) -> list[ValImage]:
    """The rehearsal validation images: id n (1-based) is photograph ``perm[(n - 1) % 1000]`` of the sample;
    ``first``: wnids whose photographs open the permutation (in that order), so that a small build still holds
    the classes a configuration picks images from (``class:`` references)."""
    folder = assets_folder(assets) / IMAGENET_SAMPLE
    with (folder / "labels.csv").open(newline="") as f:
        rows = sorted(csv.DictReader(f), key=lambda r: int(r["class_index"]))
    perm = np.random.default_rng(2012).permutation(len(rows))
    front = [next(i for i, r in enumerate(rows) if r["wnid"] == w) for w in first]
    perm = np.array(front + [int(i) for i in perm if int(i) not in front])
    out = []
    for n in range(count):
        r = rows[int(perm[n % len(rows)])]
        with Image.open(folder / r["file"]) as im:
            size = im.size
        out.append(ValImage(f"ILSVRC2012_val_{n + 1:08d}", r["wnid"], int(r["class_index"]), folder / r["file"], size))
    return out


def imagenet_val_folder(
    out: str | Path, count: int = 1000, assets: str | Path | None = None, first: Sequence[str] = ()
) -> Path:
    """The ILSVRC (Kaggle) layout under ``out``: ``ILSVRC/Data/CLS-LOC/val/ILSVRC2012_val_XXXXXXXX.JPEG`` and
    ``LOC_val_solution.csv``; returns the ``val`` folder (spec ``imagenet-val:<it>``)."""
    out = Path(out)
    rel = Path("ILSVRC/Data/CLS-LOC/val")
    with _building(out, "imagenet-val", count) as tmp:
        if tmp is not None:
            val = tmp / rel
            val.mkdir(parents=True)
            images = imagenet_images(count, assets, first)
            for im in images:
                shutil.copyfile(im.file, val / f"{im.id}.JPEG")
            with (tmp / "LOC_val_solution.csv").open("w", newline="") as f:
                w = csv.writer(f)
                w.writerow(["ImageId", "PredictionString"])
                for im in sorted(images, key=lambda i: hashlib.sha1(i.id.encode()).digest()):  # not in id order
                    w.writerow([im.id, f"{im.wnid} 0 0 {im.size[0] - 1} {im.size[1] - 1} "])
    return out / rel


def _parquet_bytes(images: list[ValImage], row_group_size: int) -> bytes:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from qkdissect.data.labels import imagenet_classes

    struct = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    features = {"image": {"_type": "Image"}, "label": {"names": list(imagenet_classes().lemmas), "_type": "ClassLabel"}}
    schema = pa.schema([("image", struct), ("label", pa.int64())],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})  # fmt: skip
    table = pa.table(
        {
            "image": pa.array([{"bytes": im.data, "path": f"{im.id}_{im.wnid}.JPEG"} for im in images], struct),
            "label": pa.array([im.label for im in images], pa.int64()),
        },
        schema=schema,
    )
    buf = io.BytesIO()
    pq.write_table(table, buf, row_group_size=row_group_size)
    return buf.getvalue()


def imagenet_hub_cache(
    cache: str | Path,
    count: int = 1000,
    assets: str | Path | None = None,
    files: int = 14,
    row_group_size: int = 100,
    first: Sequence[str] = (),
) -> Path:
    """The same images as :func:`imagenet_val_folder`, as the hub cache holds the ``ILSVRC/imagenet-1k`` dataset
    after ``hf download``: ``<cache>/datasets--ILSVRC--imagenet-1k/{blobs, snapshots/<rev>/data, refs/main}`` with
    ``files`` parquet files (the real split has 14); returns the snapshot folder (spec ``imagenet-hf:<cache>``)."""
    repo = Path(cache) / HUB_REPO
    with _building(repo, "imagenet-hf", count) as tmp:
        if tmp is not None:
            images = imagenet_images(count, assets, first)
            chunks = [c for c in np.array_split(np.arange(count), files) if c.size]
            blobs: list[tuple[str, str]] = []
            (tmp / "blobs").mkdir()
            for i, chunk in enumerate(chunks):
                data = _parquet_bytes([images[j] for j in chunk], row_group_size)
                sha = hashlib.sha256(data).hexdigest()
                (tmp / "blobs" / sha).write_bytes(data)
                blobs.append((f"validation-{i:05d}-of-{len(chunks):05d}.parquet", sha))
            revision = hashlib.sha1("".join(s for _, s in blobs).encode()).hexdigest()
            data_dir = tmp / "snapshots" / revision / "data"
            data_dir.mkdir(parents=True)
            for name, sha in blobs:
                (data_dir / name).symlink_to(f"../../../blobs/{sha}")
            (tmp / "refs").mkdir()
            (tmp / "refs" / "main").write_text(revision)
    return next((repo / "snapshots").iterdir())


# ----------------------------------------------------------------------------------------- O3
def _o3_name(i: int) -> str:
    alphabet = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
    n = int.from_bytes(hashlib.sha1(f"o3-{i}".encode()).digest()[:10], "big")
    return "".join(alphabet[(n >> (6 * k)) % 62] for k in range(13))


def _hue(h: float) -> tuple[int, int, int]:
    import colorsys

    r, g, b = colorsys.hsv_to_rgb(h % 1.0, 0.85, 0.95)
    return int(255 * r), int(255 * g), int(255 * b)


def paint_odd_one_out(photo: Image.Image, seed: int) -> tuple[Image.Image, np.ndarray, np.ndarray]:
    """``photo`` with 3-6 distractors of one colour and shape and one target of the opposite hue, placed without
    overlap; returns (image, target mask, distractor mask) with masks uint8 0/255."""
    rng = np.random.default_rng(seed)
    img = photo.convert("RGB")
    w, h = img.size
    r = max(6, int(min(w, h) * rng.uniform(0.06, 0.1)))
    want = int(rng.integers(4, 8))  # the target and 3-6 distractors
    centres: list[tuple[int, int]] = []
    for _ in range(500):
        if len(centres) == want:
            break
        c = (int(rng.integers(r + 1, w - r - 1)), int(rng.integers(r + 1, h - r - 1)))
        if all((c[0] - o[0]) ** 2 + (c[1] - o[1]) ** 2 > (2 * r + 4) ** 2 for o in centres):
            centres.append(c)
    hue = float(rng.uniform())
    square = bool(rng.integers(2))
    draw = ImageDraw.Draw(img)
    masks = [Image.new("L", (w, h), 0), Image.new("L", (w, h), 0)]
    for k, (x, y) in enumerate(centres):
        box = (x - r, y - r, x + r, y + r)
        colour = _hue(hue + 0.5) if k == 0 else _hue(hue)
        for canvas, fill in ((draw, colour), (ImageDraw.Draw(masks[min(k, 1)]), 255)):
            (canvas.rectangle if square else canvas.ellipse)(box, fill=fill)
    return img, np.asarray(masks[0]), np.asarray(masks[1])


def o3_layout(out: str | Path, count: int = 2001, assets: str | Path | None = None) -> Path:
    """An O3 layout of ``count`` items (images/, targ_labels/, dist_labels/) under ``out``; returns it (spec
    ``o3:<it>``)."""
    out = Path(out)
    with _building(out, "o3", count) as tmp:
        if tmp is not None:
            for d in ("images", "targ_labels", "dist_labels"):
                (tmp / d).mkdir()
            photos = imagenet_images(min(count, 1000), assets)
            for i in range(count):
                with Image.open(photos[i % len(photos)].file) as photo:
                    img, targ, dist = paint_odd_one_out(photo, seed=i)
                name = _o3_name(i)
                img.save(tmp / "images" / f"{name}.jpg", quality=90)
                Image.fromarray(targ).save(tmp / "targ_labels" / f"{name}.png")
                Image.fromarray(dist).save(tmp / "dist_labels" / f"{name}.png")
    return out


# ----------------------------------------------------------------------------------------- ADE20K
def voc_colormap(n: int = 21) -> np.ndarray:
    """The PASCAL VOC palette: colour of class i (bits of i spread over the high bits of r, g, b)."""
    cmap = np.zeros((n, 3), np.uint8)
    for i in range(n):
        c, rgb = i, [0, 0, 0]
        for j in range(8):
            for ch in range(3):
                rgb[ch] |= ((c >> ch) & 1) << (7 - j)
            c >>= 3
        cmap[i] = rgb
    return cmap


def voc_to_ade_classes(mask_rgb: np.ndarray) -> np.ndarray:
    """A VOC palette mask -> uint8 class indices: background 1, VOC class k -> k + 1, void and anything else 0."""
    out = np.zeros(mask_rgb.shape[:2], np.uint8)
    for k, colour in enumerate(voc_colormap()):
        out[np.all(mask_rgb == colour, axis=-1)] = k + 1
    return out


def _voc_samples(assets: str | Path | None) -> list[tuple[Image.Image, np.ndarray]]:
    folder = assets_folder(assets) / VOC_SAMPLES
    stems = sorted((p.name.removesuffix("_image.png") for p in folder.glob("*_image.png")), key=lambda s: (len(s), s))
    out = []
    for s in stems:
        with Image.open(folder / f"{s}_image.png") as im, Image.open(folder / f"{s}_target.png") as m:
            out.append((im.convert("RGB"), voc_to_ade_classes(np.asarray(m.convert("RGB")))))
    if not out:
        raise FileNotFoundError(f"no *_image.png in {folder}")
    return out


def scene_crop(image: Image.Image, classes: np.ndarray, seed: int) -> tuple[Image.Image, Image.Image]:
    """A random crop (60-100 % of each side), flip and size (shorter side 256-512) of a photograph and its class
    mask (nearest-neighbour, so every class index stays exact)."""
    rng = np.random.default_rng(seed)
    w, h = image.size
    cw, ch = int(w * rng.uniform(0.6, 1.0)), int(h * rng.uniform(0.6, 1.0))
    left, top = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
    box = (left, top, left + cw, top + ch)
    scale = rng.uniform(256, 512) / min(cw, ch)
    size = (round(cw * scale), round(ch * scale))
    img = image.crop(box).resize(size, Image.Resampling.BICUBIC)
    mask = Image.fromarray(classes, "L").crop(box).resize(size, Image.Resampling.NEAREST)
    if rng.integers(2):
        img, mask = img.transpose(Image.Transpose.FLIP_LEFT_RIGHT), mask.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    return img, mask


def ade20k_layout(out: str | Path, count: int = 2000, assets: str | Path | None = None) -> Path:
    """An ADE20K SceneParsing layout of ``count`` validation items under ``out``; returns it (spec
    ``ade20k:<it>``)."""
    out = Path(out)
    with _building(out, "ade20k", count) as tmp:
        if tmp is not None:
            images, annotations = tmp / "images" / "validation", tmp / "annotations" / "validation"
            images.mkdir(parents=True)
            annotations.mkdir(parents=True)
            samples = _voc_samples(assets)
            for i in range(count):
                img, mask = scene_crop(*samples[i % len(samples)], seed=i)
                img.save(images / f"ADE_val_{i + 1:08d}.jpg", quality=90)
                mask.save(annotations / f"ADE_val_{i + 1:08d}.png")
    return out


# ----------------------------------------------------------------------------------------- all of them
def build_all(
    out: str | Path, imagenet: int = 1000, o3: int = COUNTS["o3"], ade20k: int = COUNTS["ade20k"],
    assets: str | Path | None = None,
) -> dict[str, str]:  # fmt: skip
    """Every rehearsal dataset under ``out``; returns the image and mask dataset specs that read them."""
    out = Path(out)
    val = imagenet_val_folder(out / "imagenet", imagenet, assets)
    imagenet_hub_cache(out / "hf-cache", imagenet, assets)
    return {
        "imagenet-val": f"imagenet-val:{val}",
        "imagenet-hf": f"imagenet-hf:{out / 'hf-cache'}",
        "o3": f"o3:{o3_layout(out / 'O3', o3, assets)}",
        "ade20k": f"ade20k:{ade20k_layout(out / 'ADEChallengeData2016', ade20k, assets)}",
    }


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Build the rehearsal datasets (the paper's layouts from real photos).")
    p.add_argument("out", type=Path)
    p.add_argument("--imagenet", type=int, default=1000, help="ImageNet validation images (real split: 50000)")
    p.add_argument("--o3", type=int, default=COUNTS["o3"])
    p.add_argument("--ade20k", type=int, default=COUNTS["ade20k"])
    args = p.parse_args(argv)
    print(json.dumps(build_all(args.out, args.imagenet, args.o3, args.ade20k), indent=1))


if __name__ == "__main__":
    main()
