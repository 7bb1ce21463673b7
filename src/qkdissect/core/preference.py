"""Attention preference on images with target, distractor and background masks (paper 4.1, Fig. 2).

Per (image, layer, head): the model's attention probabilities from the target token and from the distractor token
(:func:`query_tokens`: a maximum of the mask down-scaled to the token grid, inside the object), over the patch
keys (prefix keys dropped, renormalised to sum to 1), and their inner products with the three area-fraction
masks. That gives a (source, region) 2 x 3 table whose rows each sum to 1. Grouped as the paper does: same =
mean(target->target, distractor->distractor), different = mean(target->distractor, distractor->target),
background = mean(target->background, distractor->background).

The probabilities are the softmax of the model's own logits ``(W_q x_i + b_q).(W_k x_j + b_k) * scale``, computed
from the tokens that feed W_q and W_k (a hook on each layer's norm) for the two query rows only, so memory stays
small at any resolution. Models whose attention adds a position bias to these logits are flagged in the adapter
notes (the bias is not included).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

SOURCES = ("target", "distractor")


REGIONS = ("target", "distractor", "background")


#: token coverages within this of a mask's maximum tie for the maximum (area fractions are exact to ~1e-15)
MAX_TIE = 1e-9

QUERY_TOKEN_RULE = (
    "among the tokens where the mask's area fraction is maximal (within 1e-9), the one farthest (Euclidean, in "
    "tokens) from every token outside that set, positions off the grid counting as outside; the first in "
    "row-major order on ties; -1 where the mask is empty"
)


def query_tokens(token_masks: np.ndarray, grid: tuple[int, int]) -> np.ndarray:
    """(image, source, T) masks on the ``grid`` (g_h, g_w; T = g_h * g_w tokens, row-major) -> (image, source)
    patch index of the query token: a maximum of the mask, as far inside the object as the grid allows
    (:data:`QUERY_TOKEN_RULE`). A plain argmax would take the first maximal token, the object's top edge; a
    token at the object's edge attends to the background beside it as to its own object."""
    n_img, n_src, n_tok = token_masks.shape
    gh, gw = grid
    if gh * gw != n_tok:
        raise ValueError(f"{n_tok} tokens do not fill a {gh} x {gw} grid")
    m = token_masks.reshape(n_img * n_src, gh, gw)
    peak = m.max(axis=(1, 2), keepdims=True)
    top = (m >= peak - MAX_TIE) & (peak > 0)
    out = np.full(n_img * n_src, -1, np.int64)
    for i in np.flatnonzero(peak.ravel() > 0):
        depth = ndimage.distance_transform_edt(np.pad(top[i], 1))[1:-1, 1:-1]  # off the grid: outside
        out[i] = int(np.argmax(depth))  # first index among the farthest
    return out.reshape(n_img, n_src)


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
