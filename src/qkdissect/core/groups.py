"""Grouped-query attention: how differently the query heads that share one key-value head read the residual stream.

In a grouped-query (or multi-query) model, query heads h and h' of the same group meet the same keys W_k,g. The
query side of head h's interaction W_q,h^T W_k,g is the span of its query vectors U_h (d_model x d_head,
orthonormal columns: the row space of W_q,h). The **principal angles** between the spans of two heads of a group
say whether they ask the shared keys the same question (angles near 0) or different ones (near pi/2).

Angles are computed as Knyazev and Argentati (2002) do (and :func:`scipy.linalg.subspace_angles`): from the
cosines (singular values of U_a^T U_b) where they are at least pi/4, and from the sines (singular values of
U_b - U_a U_a^T U_b) for the small ones, which the cosines resolve only to about 1e-8 rad. One batched SVD of each
kind for every layer and pair of heads at once (numpy: the modes job that reads weights from a file never
imports torch).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def group_pairs(kv_heads: Sequence[int]) -> np.ndarray:
    """(pair, 2): every pair (a, b), a < b, of query heads that share a key-value head, ordered by a then b."""
    kv = np.asarray(kv_heads, dtype=np.int64)
    a, b = np.triu_indices(len(kv), k=1)
    same = kv[a] == kv[b]
    return np.stack([a[same], b[same]], axis=1)


def principal_angles(u: np.ndarray, pairs: np.ndarray) -> np.ndarray:
    """Principal angles (radians, ascending) between the column spans of ``u[..., a, :, :]`` and ``u[..., b, :, :]``
    for every pair (a, b) of ``pairs``: ``u`` is (..., head, d_model, k) with orthonormal columns; the result is
    (..., pair, k) float64."""
    x = np.asarray(u, dtype=np.float64)
    ua, ub = x[..., pairs[:, 0], :, :], x[..., pairs[:, 1], :, :]
    proj = np.swapaxes(ua, -1, -2) @ ub  # (..., pair, k, k)
    cos = np.clip(np.linalg.svd(proj, compute_uv=False), 0.0, 1.0)  # descending: ascending angles
    sin = np.clip(np.linalg.svd(ub - ua @ proj, compute_uv=False), 0.0, 1.0)[..., ::-1]  # ascending
    return np.where(cos**2 >= 0.5, np.arcsin(sin), np.arccos(cos))


def query_group_angles(u: np.ndarray, kv_heads: Sequence[int] | None) -> tuple[np.ndarray, np.ndarray] | None:
    """For a modes store's U (layer, head, d_model, mode) and each query head's key-value head: the pairs of heads
    sharing one (pair, 2) and the principal angles between their query sides (layer, pair, mode); None when no
    two query heads share a key-value head."""
    if kv_heads is None:
        return None
    pairs = group_pairs(kv_heads)
    if len(pairs) == 0:
        return None
    return pairs, principal_angles(u, pairs)
