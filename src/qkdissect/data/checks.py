"""The data a command or a config names, checked before any model is resolved or loaded: an image source, a mask
dataset or a text corpus that cannot be read at all (a folder that is not there, a kind no reader knows) is named
in one line at once, instead of after the model has loaded. Nothing is listed or decoded here (no torch, no
model): what a folder holds is checked by the pass that reads it.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import QKDissectError

#: the kinds of image source (:func:`qkdissect.data.sources.image_source`) read from a folder
_FOLDER_KINDS = ("folder", "imagenet-val")


def image_source_problem(spec: str) -> str | None:
    """Why the image source ``spec`` cannot be read (one line), or None."""
    if spec == "imagenet-hf" or spec.startswith(("imagenet-hf:", "imagenet-hf@")):
        from . import parquet

        try:
            parquet.locate(*parquet.parse_spec(spec.removeprefix("imagenet-hf")))
        except QKDissectError as e:
            return str(e)
        return None
    kind, sep, rest = spec.partition(":")
    if spec == "skimage" or kind in ("skimage", "synthetic"):
        from .sources import image_source

        try:
            image_source(spec)  # no files: the bundled photographs' names, or N generated ones
        except QKDissectError as e:
            return str(e)
        return None
    if not sep or kind not in _FOLDER_KINDS:
        kind, rest = "folder", spec  # a bare path
    root = Path(rest).expanduser()
    if not root.is_dir():
        what = "ImageNet validation folder" if kind == "imagenet-val" else "image folder"
        return f"{what} {root} does not exist" + (" (a file, not a folder)" if root.is_file() else "")
    return None


def mask_dataset_problem(spec: str) -> str | None:
    """Why the mask dataset ``spec`` cannot be read (one line), or None."""
    kind, _, rest = spec.partition(":")
    if kind == "synthetic":
        return None if not rest or rest.isdigit() else f"mask dataset {spec!r}: give synthetic:N, N a number"
    if kind not in ("o3", "voc", "ade20k"):
        return f"unknown mask dataset {spec!r}: use synthetic[:N], o3:/path, voc:/path or ade20k:/path"
    root = Path(rest).expanduser()
    return None if root.is_dir() else f"mask dataset folder {root} ({kind}) does not exist"


def corpus_problem(spec: str) -> str | None:
    """Why the text corpus ``spec`` cannot be read (one line), or None."""
    from .corpora import PYDOC

    if spec in (PYDOC, f"{PYDOC}:"):
        return None
    if not spec.startswith("file:"):
        return f"unknown text corpus {spec!r}: use {PYDOC} (bundled with Python) or file:/path/to/texts"
    root = Path(spec.removeprefix("file:")).expanduser()
    if not root.exists():
        return f"text corpus {root} does not exist: give a .txt file or a folder of .txt files"
    return None
