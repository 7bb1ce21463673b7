"""Digests of weights, without torch: a format-independent digest of a state dict's tensors (torch tensors or numpy
arrays), so that a job reading tensors straight from a file checks them as a loaded model is checked (a file's
sha256: :func:`qkdissect.util.hashing.sha256_file`)."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

import numpy as np


def state_dict_digest(sd: Mapping[str, Any]) -> str:
    """A format-independent sha256 of a state dict: sorted names, dtypes, shapes and raw bytes."""
    h = hashlib.sha256()
    for k in sorted(sd):
        v = sd[k]
        a = np.ascontiguousarray(v.detach().cpu().numpy() if hasattr(v, "detach") else v)
        h.update(f"{k}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.data)  # the raw bytes, without copying them
    return h.hexdigest()
