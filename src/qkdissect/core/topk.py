"""Reducers over a stream of images: the image score of a mode, the top-k images per mode (memory independent of
the stream) and the anisotropy of the centre tokens (mean pairwise cosine from a sum of unit vectors)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import torch


def image_scores(
    q_max: torch.Tensor, q_min: torch.Tensor, k_max: torch.Tensor, k_min: torch.Tensor, rule: str = "released"
) -> torch.Tensor:
    """(..., sign) image scores of a mode from the extremes of its query and key maps over the image's tokens.
    ``released`` (the released code, paper 1.6): score+ = max q * max k, score- = min q * min k, where two
    negative maxima (or two positive minima) give a positive score; ``clipped``: score+ = [max q]_+ [max k]_+,
    score- = [-min q]_+ [-min k]_+ (the same for the mode (-u, -v)), 0 where either side never reaches the
    sign."""
    if rule == "released":
        return torch.stack([q_max * k_max, q_min * k_min], dim=-1)
    if rule == "clipped":
        return torch.stack([q_max.clamp(min=0) * k_max.clamp(min=0), q_min.clamp(max=0) * k_min.clamp(max=0)], dim=-1)
    raise ValueError(f"image score rule must be released or clipped, not {rule!r}")


def both_wrong_side(q_max: torch.Tensor, q_min: torch.Tensor, k_max: torch.Tensor, k_min: torch.Tensor) -> torch.Tensor:
    """(..., sign) bool: both extremes on the wrong side of 0 (max q < 0 and max k < 0 for sign +; min q > 0 and
    min k > 0 for sign -), where the released score is a product of two negatives."""
    return torch.stack([(q_max < 0) & (k_max < 0), (q_min > 0) & (k_min > 0)], dim=-1)


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
