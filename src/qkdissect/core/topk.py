"""Reducers over a stream of images: the top-k images per mode (memory independent of the stream) and the
anisotropy of the centre tokens (mean pairwise cosine from a sum of unit vectors)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


class StreamingTopK:
    """Top-k images per (layer, head, mode, sign) over a stream of batches; memory independent of the stream.
    ``n_payload`` integer tensors of the same shape can ride along with each kept item (``payload``: e.g. the
    token positions of a passage's best pair)."""

    def __init__(self, shape: tuple[int, ...], k: int, device: torch.device | str = "cpu", n_payload: int = 0) -> None:
        self.k = k
        self.score = torch.full((*shape, 0), -math.inf, device=device)
        self.index = torch.full((*shape, 0), -1, dtype=torch.int64, device=device)
        self.payload = [torch.full((*shape, 0), -1, dtype=torch.int64, device=device) for _ in range(n_payload)]

    def update(self, scores: torch.Tensor, indices: torch.Tensor, payload: Sequence[torch.Tensor] = ()) -> None:
        """``scores`` (batch, *shape) of the images with global ``indices`` (batch,); ``payload`` tensors of the
        same shape as ``scores``, one per ``n_payload``."""
        if scores.shape[0] == 0:
            return
        s = torch.cat([self.score, scores.movedim(0, -1).to(self.score)], dim=-1)
        idx = torch.cat([self.index, indices.to(self.index.device).expand(*s.shape[:-1], -1)], dim=-1)
        extra = [
            torch.cat([old, new.movedim(0, -1).to(old)], dim=-1) for old, new in zip(self.payload, payload, strict=True)
        ]
        # ties broken towards the smaller image index: sort by index first (stable), then by score
        order = torch.argsort(idx, dim=-1, stable=True)
        s, idx = s.gather(-1, order), idx.gather(-1, order)
        top = torch.argsort(s, dim=-1, descending=True, stable=True)[..., : self.k]
        self.score, self.index = s.gather(-1, top), idx.gather(-1, top)
        self.payload = [e.gather(-1, order).gather(-1, top) for e in extra]


def anisotropy(unit_sum: np.ndarray, count: int) -> np.ndarray:
    """Mean cosine over pairs of different images i != j from the sum of unit vectors S and their number n:
    sum_{i != j} cos = ||S||^2 - n, over n (n - 1) pairs. ``unit_sum`` (layer, d) -> (layer,)."""
    if count < 2:
        return np.full(unit_sum.shape[0], np.nan)
    return (np.sum(unit_sum.astype(np.float64) ** 2, axis=-1) - count) / (count * (count - 1))
