"""The modes of :mod:`.modes` with numpy alone, for jobs that never import torch (a modes job on the CPU that
reads W_q and W_k straight from the weights file): the same algorithm (CholeskyQR of both factors, the SVD of the
small core, every head checked and redone with CholeskyQR2 and then Householder QR where its U or V is not
orthonormal to rounding), the same sign convention, and the degenerate blocks. Results agree with the torch path
to float64 rounding (different BLAS, LAPACK and summation orders), not bit for bit.

numpy's batched linear algebra stops a whole batch at the first failed Cholesky factorisation; a batch that fails
there is redone with Householder QR (rank-deficient or badly conditioned factors: rare in trained models)."""

from __future__ import annotations

import numpy as np

from ..options import FOLDINGS, Folding

_Rows = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]


def _t(x: np.ndarray) -> np.ndarray:
    return np.swapaxes(x, -1, -2)


def qk_modes_np(w_q: np.ndarray, w_k: np.ndarray, dtype: str = "float64") -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """U (..., d_model, mode), S (..., mode), V (..., d_model, mode) of every head's ``w_q^T w_k`` (factors
    (..., d_head, d_model)), as :func:`qkdissect.core.modes.qk_modes` on the CPU."""
    wq, wk = np.asarray(w_q, dtype=dtype), np.asarray(w_k, dtype=dtype)
    if wq.ndim < 2 or wq.shape != wk.shape:
        raise ValueError(f"w_q and w_k must be (..., d_head, d_model) of one shape; got {wq.shape} and {wk.shape}")
    if wq.shape[-2] > wq.shape[-1]:  # d_head > d_model: Householder handles it
        ut, s, vt, _ = _householder(wq, wk)
    else:
        ut, s, vt = _tiered(wq, wk)
    high, low = ut.max(axis=-1, keepdims=True), ut.min(axis=-1, keepdims=True)
    sign = np.where(high >= -low, 1.0, -1.0).astype(ut.dtype)
    return _t(ut * sign), s, _t(vt * sign)


def _tiered(wq: np.ndarray, wk: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    ut, s, vt, good = _cholqr(wq, wk, passes=1)
    for redo in (lambda q, k: _cholqr(q, k, passes=2), _householder):
        if bool(good.all()):
            break
        bad = ~good
        ut[bad], s[bad], vt[bad], good[bad] = redo(wq[bad], wk[bad])
    return ut, s, vt


def _householder(wq: np.ndarray, wk: np.ndarray) -> _Rows:
    q_q, r_q = np.linalg.qr(_t(wq))
    q_k, r_k = np.linalg.qr(_t(wk))
    a, s, bh = np.linalg.svd(r_q @ _t(r_k), full_matrices=False)
    return _t(a) @ _t(q_q), s, bh @ _t(q_k), np.ones(s.shape[:-1], dtype=bool)


def _cholqr(wq: np.ndarray, wk: np.ndarray, passes: int) -> _Rows:
    """CholeskyQR in row form (see :func:`qkdissect.core.modes._modes_cholqr`); a batch whose Cholesky
    factorisation fails anywhere is computed with Householder QR instead."""
    try:
        p_q, last_q, rt_q = _cholqr_rows(wq, passes)
        p_k, last_k, rt_k = _cholqr_rows(wk, passes)
    except np.linalg.LinAlgError:
        return _householder(wq, wk)
    a, s, bh = np.linalg.svd(_t(rt_q) @ rt_k, full_matrices=False)
    ut = _t(np.linalg.solve(_t(last_q), a)) @ p_q
    vt = _t(np.linalg.solve(_t(last_k), _t(bh))) @ p_k
    eye = np.eye(a.shape[-1], dtype=a.dtype)
    tol = 64 * a.shape[-1] * np.finfo(a.dtype).eps
    err_u = np.linalg.norm(ut @ _t(ut) - eye, axis=(-2, -1))
    err_v = np.linalg.norm(vt @ _t(vt) - eye, axis=(-2, -1))
    return ut, s, vt, (err_u <= tol) & (err_v <= tol)  # NaN compares False


def _cholqr_rows(w: np.ndarray, passes: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    p, rt = w, None
    for i in range(passes):
        low = np.linalg.cholesky(p @ _t(p))
        rt = low if rt is None else rt @ low
        if i < passes - 1:
            p = np.linalg.inv(low) @ p
    assert rt is not None
    return p, low, rt


def fold_factors_np(
    w_q: np.ndarray, w_k: np.ndarray, gamma: np.ndarray | None, folding: Folding, centring: bool = True
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`qkdissect.core.layernorm.fold_factors` with numpy: the (layer, head, d_head, d_model) factors of the
    raw, folded or folded-centred interaction, float64, from the raw ones and gamma (layer, d_model); an RMS norm
    (``centring`` False) has no centring: its folded-centred factors are its folded ones."""
    w_q, w_k = np.asarray(w_q, dtype=np.float64), np.asarray(w_k, dtype=np.float64)
    if folding == "raw":
        return w_q, w_k
    if folding not in FOLDINGS or gamma is None:
        raise ValueError(f"folding must be one of {FOLDINGS} (with gamma), got {folding!r}")
    g = np.asarray(gamma, dtype=np.float64)[:, None, None, :]
    a, b = w_q * g, w_k * g
    if folding == "folded-centred" and centring:
        a, b = a - a.mean(axis=-1, keepdims=True), b - b.mean(axis=-1, keepdims=True)
    return a, b


def degenerate_blocks(s: np.ndarray, rtol: float = 1e-3) -> np.ndarray:
    """Label blocks of near-equal singular values along the last axis.

    Consecutive (descending) singular values s_n, s_{n+1} are in the same block when
    ``s_n - s_{n+1} <= rtol * s_0`` (the head's largest singular value). Returns integer block ids with the
    shape of ``s``, starting at 0 for each head. Inside a block the individual singular vectors are an
    arbitrary rotation (only the block's sum is identifiable).
    """
    arr = np.asarray(s, dtype=np.float64)
    gaps = -np.diff(arr, axis=-1)
    scale = np.maximum(arr[..., :1], np.finfo(np.float64).tiny)
    new_block = gaps > rtol * scale
    ids = np.concatenate([np.zeros((*arr.shape[:-1], 1), dtype=np.int64), np.cumsum(new_block, axis=-1)], -1)
    return ids
