"""The tensors of a weights file read one at a time, as numpy arrays, without building a model: a safetensors file
(memory-mapped, without torch) or a ``torch.save`` pickle (torch's restricted unpickler, memory-mapped where its format
allows); and the converted DINOv2-S/14's tensors checked against the conversion's digest. What the modes job's file
path (:mod:`.weightfile`) and the sources' manifests (:mod:`.sources`) read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CheckpointReadError
from .digest import state_dict_digest
from .hubcache import download_again
from .pins import IMGFOCUS_DIGEST, changed_imgfocus


class MissingTensor(Exception):
    """A tensor or value the key map needs is not in the file: the model is built instead."""


class TensorFile:
    """The tensors of one safetensors file, read on demand (memory-mapped), as numpy arrays."""

    def __init__(self, path: Path, fix: str | None = None):
        from safetensors import SafetensorError, safe_open

        try:
            self.file = safe_open(str(path), framework="numpy")
        except SafetensorError as e:  # cut short, or its header damaged
            raise CheckpointReadError(path, e, fix or download_again(path)) from e
        self.keys = set(self.file.keys())

    def __call__(self, name: str) -> np.ndarray:
        if name not in self.keys:
            raise MissingTensor(name)
        try:
            return self.file.get_tensor(name)
        except (TypeError, ValueError) as e:  # bfloat16 and other dtypes numpy lacks
            raise MissingTensor(f"{name}: {e}") from e

    def all(self) -> dict[str, np.ndarray]:
        return {k: self(k) for k in self.keys}


#: a Hugging Face checkpoint's weights file, in the order transformers takes them (safetensors where both are)
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin")


class PickledTensorFile(TensorFile):
    """The tensors of a ``pytorch_model.bin`` (``torch.save`` of a state dict, as ``save_pretrained`` writes it
    without safetensors), read with torch's restricted unpickler (``weights_only``, as transformers reads it) and
    memory-mapped where the file's format allows it; each tensor as a numpy array."""

    def __init__(self, path: Path, fix: str | None = None):
        import torch

        sd = torch_checkpoint(path, fix or download_again(path))
        # the tensors only: what is not one is missing here, and transformers says what it makes of it
        self.state = {k: v for k, v in sd.items() if isinstance(v, torch.Tensor)} if isinstance(sd, dict) else {}
        self.keys = set(self.state)

    def __call__(self, name: str) -> np.ndarray:
        if name not in self.keys:
            raise MissingTensor(name)
        try:
            return self.state[name].numpy()
        except TypeError as e:  # bfloat16 and other dtypes numpy lacks
            raise MissingTensor(f"{name}: {e}") from e


def tensor_file(path: Path) -> TensorFile:
    return PickledTensorFile(path) if path.name == HF_WEIGHTS[1] else TensorFile(path)


def torch_checkpoint(path: Path, fix: str | None = None) -> Any:
    """What ``torch.save`` wrote to ``path``, as loading reads it (:func:`torch_load`: weights only,
    memory-mapped, so that only the tensors a modes job takes are read from the disk). None where the file holds
    objects torch's restricted unpickler refuses (loading names them and says how to keep the weights)."""
    import pickle

    try:
        return torch_load(path)
    except pickle.UnpicklingError:
        return None
    except (OSError, RuntimeError, EOFError) as e:  # cut short, or not torch's
        raise CheckpointReadError(path, e, fix) from e


def torch_load(path: Path) -> Any:
    """A torch checkpoint as weights only, memory-mapped when its format allows (a 10 GB I-JEPA file whose one
    part a job needs is then not read whole); the legacy (pre-zip) format is read plainly."""
    import torch

    try:
        return torch.load(str(path), map_location="cpu", weights_only=True, mmap=True)
    except RuntimeError as e:
        if "mmap" not in str(e):
            raise
        return torch.load(str(path), map_location="cpu", weights_only=True)


def verified_imgfocus(path: Path) -> TensorFile:
    """The converted DINOv2-S/14's tensors, every one checked against the digest of the conversion (as every load
    checks them), read with numpy."""
    t = TensorFile(path, "delete it and run again: it is converted again from the wheel")
    digest = state_dict_digest(t.all())
    if digest != IMGFOCUS_DIGEST:
        raise changed_imgfocus(path, digest)
    return t
