"""What the reducers of a stream of images (:mod:`.topk`) need to merge partial results, without torch: the top-k
of several top-k lists in :class:`qkdissect.core.topk.StreamingTopK`'s order, fixed-point sums read back as floats,
and the anisotropy from a sum of unit vectors (a merge of a sharded pass, :mod:`qkdissect.passes.shards`, runs
in a job that never imports torch)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def merge_top(
    score: np.ndarray, index: np.ndarray, k: int, payload: Sequence[np.ndarray] = ()
) -> tuple[np.ndarray, np.ndarray, list[np.ndarray]]:
    """The top ``k`` along the last axis of candidates (e.g. several top-k lists side by side, with global
    indices) in the order of :class:`~qkdissect.core.topk.StreamingTopK`: score descending with NaN first (as
    torch sorts), ties by the smaller index; candidates with index < 0 (padding) last. Returns score, index and
    each payload at those k places (padding: -inf and -1 where there are fewer than k candidates)."""
    if score.shape[-1] < k:
        pad = [(0, 0)] * (score.ndim - 1) + [(0, k - score.shape[-1])]
        score = np.pad(score, pad, constant_values=-np.inf)
        index = np.pad(index, pad, constant_values=-1)
        payload = [np.pad(p, pad, constant_values=0) for p in payload]
    nan = np.isnan(score)
    key = np.where(nan, 0.0, -score)  # ascending key = descending score; -0.0 and 0.0 compare equal
    order = np.lexsort((index, key, ~nan, index < 0), axis=-1)[..., :k]
    top = [np.take_along_axis(a, order, -1) for a in (score, index, *payload)]
    return top[0], top[1], top[2:]


#: bits of each of the two int64 limbs of :func:`fixed_point` (resolution 2^-62; n images sum without overflow
#: while n < 2^32)
FIXED_BITS = 31


def from_fixed_point(limbs: np.ndarray) -> np.ndarray:
    """float64 values of (2, ...) fixed-point limbs (:func:`fixed_point`), sums of them included."""
    hi, lo = limbs.astype(np.float64)
    return (hi + lo * 2.0**-FIXED_BITS) * 2.0**-FIXED_BITS


def anisotropy(unit_sum: np.ndarray, count: int) -> np.ndarray:
    """Mean cosine over pairs of different images i != j from the sum of unit vectors S and their number n:
    sum_{i != j} cos = ||S||^2 - n, over n (n - 1) pairs. ``unit_sum`` (layer, d) -> (layer,)."""
    if count < 2:
        return np.full(unit_sum.shape[0], np.nan)
    return (np.sum(unit_sum.astype(np.float64) ** 2, axis=-1) - count) / (count * (count - 1))
