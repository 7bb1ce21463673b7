"""Same-object probability (paper 4.2, Fig. 6): do a mode's query and key sides pick out the same object in the
images that excite the mode most?

For every (layer, head, mode, sign): the top images by the mode's image score (section 1.6, as in the
projections); in each, the object with the largest mean query projection and the one with the largest mean key
projection (means weighted by each token's area fraction of the object; objects smaller than one token are left
out); p = the fraction of top images in which the two coincide. Per head, P = sum_n s_n p_n / sum_n s_n over modes
and both signs; per layer, the mean over heads. Images with fewer than two objects cannot separate the two sides
and are never counted among the top images.

Chance level: the same average of 1 / (the image's number of objects) over the same top images, i.e. the
expected P if in each top image the query and the key side picked one of its objects uniformly and
independently of each other.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:  # the aggregates below are numpy: the merge of a sharded pass needs no torch
    import torch


def optimal_objects(q_means: torch.Tensor, k_means: torch.Tensor) -> torch.Tensor:
    """Whether the query and key sides pick the same object: q_means, k_means (object, ...) mean projections ->
    (..., sign) bool, sign + comparing argmax, sign - (the mode with -u, -v) comparing argmin."""
    import torch

    plus = q_means.argmax(dim=0) == k_means.argmax(dim=0)
    minus = q_means.argmin(dim=0) == k_means.argmin(dim=0)
    return torch.stack([plus, minus], dim=-1)


def top_order(scores: np.ndarray, top: int) -> np.ndarray:
    """scores (image, ...) -> (rank, ...) the indices of the ``top`` highest-scoring images, best first."""
    return np.argsort(-scores, axis=0, kind="stable")[: min(top, scores.shape[0])]


def top_mean(scores: np.ndarray, values: np.ndarray, order: np.ndarray) -> np.ndarray:
    """scores, values (image, ..., broadcast to the scores) -> mean of ``values`` over the top images ``order``
    (:func:`top_order`), picked before any copy or cast (the arrays may be large). Images with score -inf (not
    eligible) never count; with fewer eligible images the mean is over those (NaN where none is)."""
    picked = np.take_along_axis(np.broadcast_to(values, scores.shape), order, axis=0)
    eligible = np.isfinite(np.take_along_axis(scores, order, axis=0))
    n = eligible.sum(axis=0)
    total = np.where(eligible, picked, 0.0).sum(axis=0)
    return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def top_fraction(scores: np.ndarray, same: np.ndarray, top: int, order: np.ndarray | None = None) -> np.ndarray:
    """scores, same (image, ...) -> fraction of the ``top`` highest-scoring images where ``same`` holds (...).
    Images with score -inf (not eligible) are never chosen; with fewer eligible images the fraction is over those.
    ``order``: :func:`top_order` when already computed."""
    return top_mean(scores, same, top_order(scores, top) if order is None else order)


def chance_of_same(scores: np.ndarray, n_objects: np.ndarray, top: int, order: np.ndarray | None = None) -> np.ndarray:
    """The chance level of :func:`top_fraction`: scores (image, ...), n_objects (image,) -> the mean of
    1 / n_objects over the same top images (...), i.e. the expected fraction if in each of them the query and
    the key side picked one of its objects uniformly and independently."""
    inverse = 1.0 / np.maximum(np.asarray(n_objects, dtype=np.float64), 1.0)
    order = top_order(scores, top) if order is None else order
    return top_mean(scores, inverse.reshape(-1, *([1] * (scores.ndim - 1))), order)


def weighted_by_sigma(p: np.ndarray, s: np.ndarray) -> np.ndarray:
    """p (layer, head, mode, sign), s (layer, head, mode) -> (layer, head): sum s p / sum s over modes and signs."""
    w = np.repeat(s[..., None], p.shape[-1], axis=-1)
    ok = np.isfinite(p)
    return np.sum(np.where(ok, p * w, 0), axis=(2, 3)) / np.sum(np.where(ok, w, 0), axis=(2, 3))


def same_object_values(
    scores: np.ndarray, same: np.ndarray, n_objects: np.ndarray, s: np.ndarray, top: int
) -> tuple[dict[str, np.ndarray], np.ndarray]:
    """The pass's results from its per-image arrays: scores and same (image, layer, head, mode, sign), n_objects
    (image,), s (layer, head, mode) -> p, chance (layer, head, mode, sign), head_p, head_chance (layer, head),
    and the top images (layer, head, mode, sign, rank). One job and the merge of its shards both call this."""
    flat = scores.reshape(scores.shape[0], scores.shape[1], -1, scores.shape[-1])  # (image, layer, head*mode, sign)
    same_flat = same.reshape(flat.shape)
    shape = scores.shape[1:]
    ranked = top_order(flat, top)
    p = top_fraction(flat, same_flat, top, ranked).reshape(shape)
    chance = chance_of_same(flat, n_objects, top, ranked).reshape(shape)
    order = np.moveaxis(ranked, 0, -1).reshape(*shape, -1)
    s = np.asarray(s, dtype=np.float64)
    values = {"p": p, "head_p": weighted_by_sigma(p, s), "chance": chance, "head_chance": weighted_by_sigma(chance, s)}
    return values, order
