"""Same-object probability (paper 4.2, Fig. 6): do a mode's query and key sides pick out the same object in the
images that excite the mode most?

For every (layer, head, mode, sign): the top images by the mode's image score (section 1.6, as in the
projections); in each, the object with the largest mean query projection and the one with the largest mean key
projection (means weighted by each token's area fraction of the object; objects smaller than one token are left
out); p = the fraction of top images in which the two coincide. Per head, P = sum_n s_n p_n / sum_n s_n over modes
and both signs; per layer, the mean over heads. Images with fewer than two objects cannot separate the two sides
and are never counted among the top images.
"""

from __future__ import annotations

import numpy as np
import torch


def optimal_objects(q_means: torch.Tensor, k_means: torch.Tensor) -> torch.Tensor:
    """Whether the query and key sides pick the same object: q_means, k_means (object, ...) mean projections ->
    (..., sign) bool, sign + comparing argmax, sign - (the mode with -u, -v) comparing argmin."""
    plus = q_means.argmax(dim=0) == k_means.argmax(dim=0)
    minus = q_means.argmin(dim=0) == k_means.argmin(dim=0)
    return torch.stack([plus, minus], dim=-1)


def top_fraction(scores: np.ndarray, same: np.ndarray, top: int) -> np.ndarray:
    """scores, same (image, ...) -> fraction of the ``top`` highest-scoring images where ``same`` holds (...).
    Images with score -inf (not eligible) are never chosen; with fewer eligible images the fraction is over those."""
    k = min(top, scores.shape[0])
    order = np.argsort(-scores, axis=0, kind="stable")[:k]
    picked_same = np.take_along_axis(same, order, axis=0)
    eligible = np.isfinite(np.take_along_axis(scores, order, axis=0))
    n = eligible.sum(axis=0)
    return np.where(n > 0, (picked_same & eligible).sum(axis=0) / np.maximum(n, 1), np.nan)


def weighted_by_sigma(p: np.ndarray, s: np.ndarray) -> np.ndarray:
    """p (layer, head, mode, sign), s (layer, head, mode) -> (layer, head): sum s p / sum s over modes and signs."""
    w = np.repeat(s[..., None], p.shape[-1], axis=-1)
    ok = np.isfinite(p)
    return np.sum(np.where(ok, p * w, 0), axis=(2, 3)) / np.sum(np.where(ok, w, 0), axis=(2, 3))
