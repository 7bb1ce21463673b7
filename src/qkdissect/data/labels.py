"""ImageNet-1k class labels of images, and picking an image by its class.

**Classes.** The 1000 ILSVRC-2012 classes in the standard order (index 0-999 = the wnids sorted, as torchvision,
timm and the Hugging Face ``imagenet-1k`` dataset number them) with their lemmas, as timm ships them
(:class:`timm.data.ImageNetInfo`'s files, read without importing timm): nothing is bundled here.

**Where labels come from** (see :mod:`qkdissect.data.sources`): the ``label`` column of the Hugging Face parquet
files; the class sub-folder (a wnid) of an image in an ImageNet folder; for a flat ILSVRC validation folder, the
Kaggle ``LOC_val_solution.csv`` (``ImageId,PredictionString``: the first wnid of the string) found in the folder or
one of its parents (``ILSVRC/Data/CLS-LOC/val`` sits four levels below it).

**Class references.** Where a figure takes one image (``fig5``, ``s17``), ``image: "class:REF"`` picks the first
image, in id order, of an ImageNet class among the images that were projected (and could be decoded):

- ``class:n02099601``: a wnid;
- ``class:207``: a class index 0-999;
- ``class:golden retriever``: a lemma: the class's whole name as timm lists it (``maillot, tank suit``) or one of its
  comma-separated synonyms, case-insensitive, ``_`` read as a space; a synonym shared by two classes (``crane``) is
  refused, naming both wnids;
- a ``#k`` suffix (``class:n02099601#2``) takes the image at position k (0-based, like every index in qkdissect)
  among that class's images instead of the first.
"""

from __future__ import annotations

import csv
import difflib
import functools
import importlib.util
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import QKDissectError

CLASS_PREFIX = "class:"
WNID = re.compile(r"n\d{8}")
#: how far above a flat validation folder LOC_val_solution.csv is looked for (ILSVRC/Data/CLS-LOC/val -> root)
LOC_LEVELS = 4
LOC_FILE = "LOC_val_solution.csv"


class ClassRefError(QKDissectError, ValueError):
    """A class reference that names no class, names two, or has no image in the image set."""


@dataclass(frozen=True)
class ImageNetClasses:
    wnids: tuple[str, ...]
    lemmas: tuple[str, ...]

    def index(self, wnid: str) -> int | None:
        return _positions(self.wnids).get(wnid)

    def name(self, index: int) -> str:
        return f"{self.wnids[index]} ({self.lemmas[index]})"


@functools.cache
def _positions(wnids: tuple[str, ...]) -> dict[str, int]:
    return {w: i for i, w in enumerate(wnids)}


def _timm_info_file(name: str) -> str:
    """A text file of timm's ImageNet info (``timm/data/_info/``), read without importing timm (and torch): the
    workflow checks class references when Snakemake starts."""
    spec = importlib.util.find_spec("timm")
    if spec is None or not spec.submodule_search_locations:
        raise QKDissectError("ImageNet class names come from timm, which is not installed: pip install timm")
    path = Path(next(iter(spec.submodule_search_locations))) / "data" / "_info" / name
    return path.read_text(encoding="utf-8")


@functools.cache
def imagenet_classes() -> ImageNetClasses:
    """The 1000 ImageNet-1k classes in sorted-wnid order, with their lemmas, as :class:`timm.data.ImageNetInfo`
    gives them (``imagenet-1k``: its synset list and lemma table, read from timm's files)."""
    wnids = tuple(_timm_info_file("imagenet_synsets.txt").splitlines())
    lemmas = dict(csv.reader(_timm_info_file("imagenet_synset_to_lemma.txt").splitlines(), delimiter="\t"))
    return ImageNetClasses(wnids, tuple(lemmas[w] for w in wnids))


def wnid_label(wnid: str) -> int | None:
    """The class index of a wnid, or None when it is not one of the 1000."""
    return imagenet_classes().index(wnid) if WNID.fullmatch(wnid) else None


def _norm(name: str) -> str:
    return " ".join(name.replace("_", " ").lower().split())


@functools.cache
def _lemma_index() -> dict[str, tuple[int, ...]]:
    """normalised name or synonym -> the classes it names."""
    found: dict[str, set[int]] = {}
    for i, lemma in enumerate(imagenet_classes().lemmas):
        for name in {lemma, *lemma.split(",")}:
            found.setdefault(_norm(name), set()).add(i)
    return {k: tuple(sorted(v)) for k, v in found.items()}


def is_class_ref(image: object) -> bool:
    return isinstance(image, str) and image.startswith(CLASS_PREFIX)


def parse_class_ref(ref: str) -> tuple[int, int]:
    """``class:REF[#k]`` -> (class index 0-999, k); raises ClassRefError naming the reference and the fix."""
    body = ref.removeprefix(CLASS_PREFIX).strip()
    k = 0
    if "#" in body:
        body, _, pos = body.rpartition("#")
        if not pos.isdigit():
            raise ClassRefError(f"image {ref!r}: after '#' comes a position 0, 1, 2, ... among the class's images")
        k = int(pos)
    classes = imagenet_classes()
    if WNID.fullmatch(body):
        index = classes.index(body)
        if index is None:
            raise ClassRefError(f"image {ref!r}: {body} is not one of the 1000 ImageNet-1k classes")
        return index, k
    if body.isdigit():
        if not 0 <= int(body) < len(classes.wnids):
            raise ClassRefError(f"image {ref!r}: a class index is 0-{len(classes.wnids) - 1}")
        return int(body), k
    hits = _lemma_index().get(_norm(body), ())
    if len(hits) == 1:
        return hits[0], k
    if hits:
        named = ", ".join(classes.name(i) for i in hits)
        raise ClassRefError(f"image {ref!r}: {body!r} names {len(hits)} classes ({named}); use the wnid")
    close = difflib.get_close_matches(_norm(body), list(_lemma_index()), n=3)
    hint = f" (close: {', '.join(close)})" if close else ""
    raise ClassRefError(
        f"image {ref!r}: no ImageNet-1k class is called {body!r}{hint}; use class:WNID, class:INDEX or a lemma"
    )


def pick(ref: str, labelled: Iterable[tuple[str, int | None]], where: str) -> str:
    """The id that a class reference picks among (id, label) pairs in id order (see the module docstring)."""
    index, k = parse_class_ref(ref)
    pairs = list(labelled)
    if not any(label is not None for _, label in pairs):
        raise ClassRefError(
            f"image {ref!r}: the image set {where} has no class labels; class references need imagenet-hf, an "
            f"ImageNet folder with one sub-folder per wnid, or a flat validation folder with {LOC_FILE} beside it "
            "or above it (else give the image's id)"
        )
    hits = [i for i, label in pairs if label == index]
    if len(hits) <= k:
        name = imagenet_classes().name(index)
        have = f"only {len(hits)} images" if hits else "no image"
        raise ClassRefError(f"image {ref!r}: {have} of class {name} among the {len(pairs)} images of {where}")
    return hits[k]


# ----------------------------------------------------------------------------------------- labels of folders
def folder_labels(ids: Iterable[str]) -> dict[str, int] | None:
    """Labels from class sub-folders: ``{id: index}`` when every id (a relative path) lies in a folder named by
    an ImageNet-1k wnid, else None."""
    out: dict[str, int] = {}
    for rel in ids:
        parent = Path(rel).parent.name
        label = wnid_label(parent)
        if label is None:
            return None
        out[rel] = label
    return out or None


def find_loc_solution(folder: Path) -> Path | None:
    """``LOC_val_solution.csv`` in ``folder`` or up to LOC_LEVELS folders above it (the Kaggle layout)."""
    here = folder.resolve()
    for candidate in [here, *here.parents][: LOC_LEVELS + 1]:
        f = candidate / LOC_FILE
        if f.is_file():
            return f
    return None


def read_loc_solution(path: Path) -> dict[str, int]:
    """``{ImageId: class index}`` from a Kaggle ``LOC_val_solution.csv`` (the first wnid of each row)."""
    out: dict[str, int] = {}
    with path.open(newline="") as f:
        rows = csv.reader(f)
        header = next(rows, [])
        if [h.strip() for h in header[:2]] != ["ImageId", "PredictionString"]:
            raise QKDissectError(f"{path}: not a LOC_val_solution.csv (its header must be ImageId,PredictionString)")
        for row in rows:
            if len(row) < 2 or not row[1].split():
                continue
            label = wnid_label(row[1].split()[0])
            if label is None:
                raise QKDissectError(f"{path}: {row[0]} has {row[1].split()[0]!r}, not an ImageNet-1k wnid")
            out[row[0].strip()] = label
    return out
