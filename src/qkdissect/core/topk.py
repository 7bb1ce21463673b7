"""Reducers over a stream of images: the image score of a mode, the top-k images per mode (memory independent of
the stream) and the anisotropy of the centre tokens (mean pairwise cosine from a sum of unit vectors).

Both reducers merge exactly, so that a pass split into shards gives the store one job gives
(:mod:`qkdissect.passes.shards`): the top-k of a union is the top-k of the shards' top-k lists in the same total
order (:func:`merge_top`, the rule of :class:`StreamingTopK`), and the unit vectors are summed in fixed point
(:func:`fixed_point`: integers, whose sum does not depend on the order or grouping of the images)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from .merging import FIXED_BITS, anisotropy, from_fixed_point, merge_top

__all__ = ["FIXED_BITS", "StreamingTopK", "anisotropy", "both_wrong_side", "count_kinds", "extreme_on_prefix",
           "fixed_point", "from_fixed_point", "image_scores", "merge_top"]  # fmt: skip


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


def extreme_on_prefix(p: torch.Tensor, n_prefix: int, top: torch.Tensor, bottom: torch.Tensor) -> torch.Tensor:
    """(batch, C, sign) int16: the prefix token (its position, 0 to n_prefix - 1) where the largest value of ``p``
    over all tokens lies (sign +) and the smallest (sign -: the largest of -p), or -1 where it lies on a patch
    token. ``p``: (batch, token, C), the ``n_prefix`` prefix tokens first; ``top``, ``bottom``: (batch, C) the
    max and min over the patch tokens. A tie goes to the prefix token (the first in the sequence, as argmax)."""
    if n_prefix == 0:
        return torch.full((*top.shape, 2), -1, dtype=torch.int16, device=p.device)
    hi, hi_at = p[:, :n_prefix].max(dim=1)
    lo, lo_at = p[:, :n_prefix].min(dim=1)
    on = torch.stack([hi >= top, lo <= bottom], dim=-1)
    return torch.where(on, torch.stack([hi_at, lo_at], dim=-1), -1).to(torch.int16)


def count_kinds(at: torch.Tensor, kind: torch.Tensor, n_kinds: int) -> torch.Tensor:
    """(..., kind) int64: over the batch (dim 0) of ``at`` (prefix token positions, -1: none), how many fall on a
    prefix token of each kind; ``kind``: (n_prefix,) the kind (0 to n_kinds - 1) of each prefix token."""
    if kind.numel() == 0:
        return torch.zeros((*at.shape[1:], n_kinds), dtype=torch.int64, device=at.device)
    k = torch.where(at >= 0, kind.to(at.device)[at.long().clamp(min=0)], -1)
    return torch.stack([(k == c).sum(dim=0) for c in range(n_kinds)], dim=-1)  # a few kinds, not heads or modes


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
        # + 0.0 makes -0.0 a +0.0: a sort that tells the two apart (a radix sort on a GPU) then ranks as this one
        s = torch.cat([self.score, scores.movedim(0, -1).to(self.score) + 0.0], dim=-1)
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


def fixed_point(x: torch.Tensor) -> torch.Tensor:
    """(2, ...) int64 limbs of values |x| <= 1 in fixed point, x ~ (hi + lo 2^-31) 2^-31 to within 2^-63: sums of
    them are exact, so any split of a stream sums to the same bits (:func:`from_fixed_point` reads them back)."""
    a = x.double() * 2.0**FIXED_BITS
    hi = torch.round(a)
    lo = torch.round((a - hi) * 2.0**FIXED_BITS)
    return torch.stack([hi, lo]).long()
