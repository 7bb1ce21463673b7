"""Attention preference on images with target, distractor and background masks (paper 4.1, Fig. 2).

Per (image, layer, head): the model's attention probabilities from the target token and from the distractor token
(the token where the down-scaled mask is largest, first index on ties), over the patch keys (prefix keys dropped,
renormalised to sum to 1), and their inner products with the three area-fraction masks. That gives a (source,
region) 2 x 3 table whose rows each sum to 1. Grouped as the paper does: same = mean(target->target,
distractor->distractor), different = mean(target->distractor, distractor->target), background =
mean(target->background, distractor->background).

The probabilities are the softmax of the model's own logits ``(W_q x_i + b_q).(W_k x_j + b_k) * scale``, computed
from the tokens that feed W_q and W_k (a hook on each layer's norm) for the two query rows only, so memory stays
small at any resolution. Models whose attention adds a position bias to these logits are flagged in the adapter
notes (the bias is not included).
"""

from __future__ import annotations

import numpy as np

SOURCES = ("target", "distractor")


REGIONS = ("target", "distractor", "background")


def query_tokens(token_masks: np.ndarray) -> np.ndarray:
    """(image, 2, T) target/distractor masks on the token grid -> (image, 2) patch index of each mask's maximum
    (first index on ties; -1 where the mask is empty)."""
    idx = token_masks.argmax(axis=-1)
    return np.where(token_masks.max(axis=-1) > 0, idx, -1)


def preference_table(probs: np.ndarray, token_masks: np.ndarray) -> np.ndarray:
    """Inner products of attention rows with the region masks: probs (image, layer, head, source, T) and
    token_masks (image, region, T) -> (image, layer, head, source, region)."""
    return np.einsum("blhst,brt->blhsr", probs, token_masks)


def grouped(table: np.ndarray, present: np.ndarray) -> dict[str, np.ndarray]:
    """Same / different / background per (image, layer, head) from a (image, layer, head, source, region) table.
    ``present`` (image, 2) marks whether the target and the distractor mask are non-empty: a missing object is
    neither a query source nor a region, so terms that involve it are left out (NaN), not counted as 0."""
    ok_src = present[:, None, None, :, None]
    ok_reg = np.concatenate([present, np.ones((present.shape[0], 1), bool)], axis=1)[:, None, None, None, :]
    t = np.where(ok_src & ok_reg, table, np.nan)

    def mean(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        s = np.stack([a, b])
        n = np.sum(~np.isnan(s), axis=0)
        return np.where(n > 0, np.nansum(s, axis=0) / np.maximum(n, 1), np.nan)

    return {
        "same": mean(t[..., 0, 0], t[..., 1, 1]),
        "different": mean(t[..., 0, 1], t[..., 1, 0]),
        "background": mean(t[..., 0, 2], t[..., 1, 2]),
    }
