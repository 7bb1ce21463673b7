"""What every weights source shares: the :class:`Source` record each source module registers, the loaded model
(:class:`LoadedModel`), reading checkpoints safely (weights only, strict keys), and the manifest entry of a file.

A source is one file under :mod:`qkdissect.models.sources` that calls :func:`register` with its name and four
functions: how to read the text after ``NAME:`` into a :class:`~qkdissect.models.spec.ModelSpec`, how to load
the model, which files (with their sha256) a weights manifest lists for it, and whether its weights are on this
machine. Adding a source is one new file and its name in ``sources/__init__.py``.
"""

from __future__ import annotations

import inspect
import os
import pickle
import re
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ...errors import CheckpointMismatchError, CheckpointReadError, QKDissectError, WeightsUnavailableError
from ...util.hashing import sha256_file
from ..hubcache import download_again
from ..spec import ModelSpec, data_dir
from ..tensorfile import torch_load

if TYPE_CHECKING:  # (torch is imported where a model is read or built: a manifest needs none)
    import torch
    from torch import nn

#: (files, hub revision, origin) of a weights manifest: every file as {role, path, bytes, sha256}
Resolved = tuple[list[dict[str, Any]], str | None, str]


@dataclass(frozen=True)
class Source:
    """One place weights come from.

    - ``parse(rest, part, options)``: the spec after ``NAME:`` (without ``#part`` and ``?options``);
    - ``load(spec)``: the model on the CPU, in eval mode, with what identifies its weights;
    - ``resolve(spec, name)``: the manifest's files (downloading or converting where that is how they come);
    - ``availability(spec)``: whether the weights are here, without downloading anything.
    """

    name: str
    parse: Callable[[str, str, tuple[tuple[str, Any], ...]], ModelSpec]
    load: Callable[[ModelSpec], LoadedModel]
    resolve: Callable[[ModelSpec, str], Resolved]
    availability: Callable[[ModelSpec], str]


REGISTRY: dict[str, Source] = {}


def register(source: Source) -> Source:
    """Make a source known by its name (the ``NAME:`` of a spec)."""
    REGISTRY[source.name] = source
    return source


def file_record(path: Path, role: str, sha256: str | None = None) -> dict[str, Any]:
    """A manifest entry; ``sha256`` when the file was just verified against it (not hashed again)."""
    digest = sha256 or sha256_file(path)
    return {"role": role, "path": str(path.resolve()), "bytes": path.stat().st_size, "sha256": digest}


def local_checkpoint(spec: ModelSpec, name: str, where: str) -> Resolved:
    """The manifest of a local checkpoint file (SimMIM, I-JEPA): it must exist and be named like weights."""
    path = spec.weights
    if path is None or not path.exists():
        hint = f" Get it from {where}." if where else ""
        raise WeightsUnavailableError(f"{name}: checkpoint {path} does not exist.{hint}")
    return [file_record(checkpoint_file(path, name), "weights")], None, "local file"


def local_file_availability(spec: ModelSpec) -> str:
    return "local file" if spec.weights and spec.weights.exists() else f"missing: put it at {spec.weights}"


@dataclass
class LoadedModel:
    """A model, how to identify its weights, and where they came from."""

    spec: ModelSpec
    model: nn.Module
    weights_path: Path | None = None
    weights_sha256: str | None = None
    revision: str | None = None
    origin: str = ""
    #: the keys the checkpoint and the model class disagree on (:func:`qkdissect.models.load_report.load_report`)
    load_report: dict[str, Any] | None = None


#: what a weights file's name ends with (a checkpoint of any other name is refused before it is read or hashed)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".tar", ".ckpt")


def checkpoint_file(path: Path | None, what: str, where: str = "") -> Path:
    """``path`` if it is an existing regular file named like a weights file, else an error naming it."""
    if path is None or not path.exists():
        hint = f" Download it from {where} and put it at that path" if where else ""
        raise WeightsUnavailableError(
            f"{what} checkpoint {path} does not exist.{hint} (relative paths are looked up under $QKDISSECT_DATA, "
            f"now {data_dir()})."
        )
    if not path.is_file() or not path.name.lower().endswith(WEIGHT_SUFFIXES):
        raise WeightsUnavailableError(
            f"{what} checkpoint {path} is not a weights file: expected a file ending in {', '.join(WEIGHT_SUFFIXES)}"
        )
    return path


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a torch pickle (.pth/.pt/.bin/.tar), loaded as weights only."""
    if not path.exists():
        raise WeightsUnavailableError(f"checkpoint file {path} does not exist")
    from safetensors import SafetensorError

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch_load(path)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)", str(e))
        raise QKDissectError(
            f"checkpoint {path} holds Python objects besides tensors ({found.group(1) if found else 'unknown'}), which "
            "qkdissect never unpickles (that could run code). If you trust the file, keep its weights once: "
            f"python -c \"import torch; c = torch.load('{path}', weights_only=False); torch.save(c.get('model', c), "
            "'weights.pth')\" and point the spec at weights.pth"
        ) from e
    except (OSError, RuntimeError, ValueError, EOFError, KeyError, IndexError, TypeError, SafetensorError) as e:
        raise CheckpointReadError(path, e, download_again(path)) from e  # (a text file renamed .pth: the unpickler)
    if not isinstance(obj, dict):
        raise CheckpointReadError(path, TypeError(f"it holds a Python {type(obj).__name__}, not a dict of tensors"))
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    return obj


def load_checkpoint_into(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    path: Path | str,
    arch: str,
    ignore_prefixes: tuple[str, ...] = ("head.",),
    assign: bool = False,
) -> None:
    """Strict load, except for classifier keys; mismatches raise :class:`CheckpointMismatchError`. ``assign``: the
    model was built on the meta device (no random initialisation to overwrite) and takes the checkpoint's tensors;
    every parameter and buffer must then come from the checkpoint."""
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    want = {k for k in own if not k.startswith(ignore_prefixes)}
    missing = sorted(want - keep.keys())
    unexpected = sorted(keep.keys() - want)
    shapes = sorted(
        f"{k}: checkpoint {tuple(keep[k].shape)} vs model {tuple(own[k].shape)}"
        for k in want & keep.keys()
        if tuple(keep[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(str(path), arch, missing, unexpected, shapes)
    model.load_state_dict(keep, strict=False, assign=assign)
    unset = sorted(n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta)
    if unset:
        raise CheckpointMismatchError(str(path), arch, unset, [])


_UNEXPECTED = re.compile(r"(\w+)\.__init__\(\) got an unexpected keyword argument '([^']+)'")
_ALLOCATE = re.compile(r"allocate (\d+) bytes")


def constructor_options(cls: type) -> list[str]:
    """The keyword arguments with a default that a class's constructor names (what a spec's ``?KEY=VALUE`` can
    set; those without one, such as a Hugging Face model's ``config``, the source gives)."""
    params = inspect.signature(cls.__init__).parameters.values()  # type: ignore[misc]
    return [p.name for p in params if p.default is not p.empty and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]


def option_error(
    what: str, options: tuple[tuple[str, Any], ...], e: BaseException, find_class: Callable[[str], type | None]
) -> QKDissectError | None:
    """An error of building the model ``what`` with the spec's ``options`` as one line naming the options: a
    constructor that does not know one (``?foo=bar``: the TypeError of an unexpected keyword argument), with what
    it takes (``find_class`` finds the class named in the TypeError), or a model the options make too big to build
    (the allocator's error). None for any other error, and for a model built without options."""
    if not options:
        return None
    given = dict(options)
    m = _UNEXPECTED.search(str(e)) if isinstance(e, TypeError) else None
    if m and m.group(2) in given:
        key, cls = m.group(2), find_class(m.group(1))
        takes = ", ".join(constructor_options(cls)) if cls is not None else "other options"
        return QKDissectError(
            f"model option {key}={given[key]} is not known to {what}: {m.group(1)} takes {takes}; "
            "remove it from the spec, or give one of those"
        )
    size = _ALLOCATE.search(str(e)) if isinstance(e, (RuntimeError, MemoryError)) else None
    if size or isinstance(e, MemoryError):
        need = f"it would take {int(size.group(1)) / 1e9:,.0f} GB" if size else "it does not fit in memory"
        query = "&".join(f"{k}={v}" for k, v in options)
        return QKDissectError(f"cannot build {what} with its options ?{query}: {need}; check the sizes among them")
    return None


def is_hf_model(model: object) -> bool:
    """Whether ``model`` is a Hugging Face ``PreTrainedModel``, without importing transformers where it is not
    imported yet (1.3 s a job): an instance of one means its class's module, ``transformers.modeling_utils``, is."""
    modeling = sys.modules.get("transformers.modeling_utils")
    return modeling is not None and isinstance(model, modeling.PreTrainedModel)


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")
