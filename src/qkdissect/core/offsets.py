"""The query-key interaction of a rotary model at many offsets at once: singular values and per-mode cosines of
``W_q^T R(-d) W_k`` for every head and every offset d, without forming a d_model x d_model matrix.

With the thin QR factorisations ``W_q^T = Q_q A`` and ``W_k^T = Q_k B`` (d_model x r and r x r, r = d_head),
``W_q^T R W_k = Q_q (A R B^T) Q_k^T``: the SVD of the small core ``A R B^T = P diag(S) Z^T`` gives the modes
``U = Q_q P``, ``V = Q_k Z``, and their cosines ``u_n . v_n = p_n^T (Q_q^T Q_k) z_n`` need only the r x r Gram
matrix ``Q_q^T Q_k``. One QR per head, then one batched r x r SVD per (head, offset), offsets taken in chunks so
that memory stays at ``chunk`` cores per head.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch

from .modes import _svd


def offset_spectrum(
    w_q: np.ndarray | torch.Tensor,
    w_k: np.ndarray | torch.Tensor,
    key_rotations: np.ndarray,
    *,
    chunk: int = 64,
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Singular values and cosines, each (..., offset, mode), of ``w_q^T R_o w_k`` for every leading index of
    ``w_q``/``w_k`` (..., d_head, d_model) and every ``key_rotations[o]`` (offset, d_head, d_head), or (offset,
    layer, head or 1, d_head, d_head) where layers (and heads) turn by their own frequencies, in float64.
    ``progress`` is called with the number of offsets done after each chunk."""
    wq = torch.as_tensor(w_q, dtype=torch.float64)
    wk = torch.as_tensor(w_k, dtype=torch.float64)
    if wq.shape != wk.shape:
        raise ValueError(f"w_q {tuple(wq.shape)} and w_k {tuple(wk.shape)} differ")
    q_q, a = torch.linalg.qr(wq.transpose(-1, -2), mode="reduced")  # (..., D, r), (..., r, r)
    q_k, b = torch.linalg.qr(wk.transpose(-1, -2), mode="reduced")
    gram = q_q.transpose(-1, -2) @ q_k  # (..., r, r)
    rot = torch.as_tensor(np.asarray(key_rotations), dtype=torch.float64)
    if rot.ndim > 3:  # per layer (and head): the offsets go next to the cores, (layer, head or 1, offset, r, r)
        rot = rot.movedim(0, -3)
    s_out, cos_out = [], []
    for start in range(0, rot.shape[-3], chunk):
        r = rot[..., start : start + chunk, :, :]  # (c, r, r) or (layer, head or 1, c, r, r)
        core = a.unsqueeze(-3) @ r @ b.transpose(-1, -2).unsqueeze(-3)  # (..., c, r, r)
        p, s, zt = _svd(core)
        cos = torch.einsum("...in,...ij,...nj->...n", p, gram.unsqueeze(-3), zt)
        s_out.append(s.numpy())
        cos_out.append(cos.numpy())
        if progress is not None:
            progress(int(r.shape[-3]))
    return np.concatenate(s_out, axis=-2), np.concatenate(cos_out, axis=-2)


def weighted_cosine(s: np.ndarray, cos: np.ndarray) -> np.ndarray:
    """The singular-value-weighted mean cosine of each head (the mean over its modes, weighted by s_n): the
    paper's head statistic, over the last axis."""
    total = s.sum(axis=-1)
    return np.divide((s * cos).sum(axis=-1), total, out=np.zeros_like(total), where=total > 0)
