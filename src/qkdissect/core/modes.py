"""Exact singular modes of every head's query-key interaction matrix, all heads at once.

For one head, the interaction matrix is ``M = W_q^T W_k`` (d_model x d_model, rank <= d_head), so that the
bias-free attention score between tokens x_i (query) and x_j (key) is ``x_i^T M x_j``. Its SVD
``M = U diag(S) V^T`` gives the modes (u_n, s_n, v_n):

    a_ij = sum_n (x_i . u_n) s_n (v_n . x_j)

with ``u_n`` the **query side** (left singular vectors) and ``v_n`` the **key side** (right singular vectors).

We never form the d x d product. With the thin QR factorisations ``W_q^T = Q_q R_q`` and ``W_k^T = Q_k R_k``
(d x r and r x r, r = min(d_head, d_model)), ``M = Q_q (R_q R_k^T) Q_k^T``; the SVD of the small r x r core
``R_q R_k^T = A diag(S) B^T`` gives ``U = Q_q A`` and ``V = Q_k B``. Every step is one batched call over all
leading (layer, head) dims: O(L H d r^2) work instead of O(L H d^3).

The QR factorisations are computed by CholeskyQR (Gram matrix, Cholesky, triangular solve: batched matrix
products at full BLAS speed), and every result is checked: a head whose U or V is not orthonormal to
rounding is recomputed with CholeskyQR2 (ill-conditioned W, ~10% of the heads of a trained DINOv2), and one
still failing (conditioning beyond ~1e8, rank deficiency) with Householder QR (LAPACK; slower on CPU, where
torch runs a batch serially). ``method="householder"`` uses Householder for all heads.

Sign convention
---------------
A mode is defined up to the joint flip (u, v) -> (-u, -v). We fix it so that the entry of largest magnitude
of each u_n is positive (a tie between +m and -m counts as positive). Cosines u_n . v_n, singular values and
every score are invariant to this choice. Within a block of (near-)equal singular values the individual vectors are only
defined up to a rotation inside the block; see :func:`degenerate_blocks`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from ..options import DType
from .device import resolve_device
from .modes_np import degenerate_blocks as _blocks

_TORCH_DTYPES: dict[str, torch.dtype] = {"float64": torch.float64, "float32": torch.float32}


@dataclass(frozen=True)
class Modes:
    """Singular modes of W_q^T W_k for a stack of heads.

    Shapes (leading dims ``...`` are usually (layer, head)):
        U: (..., d_model, mode)  query side, orthonormal columns
        S: (..., mode)           singular values, descending
        V: (..., d_model, mode)  key side, orthonormal columns
    """

    U: torch.Tensor
    S: torch.Tensor
    V: torch.Tensor

    @property
    def n_modes(self) -> int:
        return int(self.S.shape[-1])

    def numpy(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return (self.U.cpu().numpy(), self.S.cpu().numpy(), self.V.cpu().numpy())


def _check_factors(w_q: torch.Tensor, w_k: torch.Tensor) -> None:
    if w_q.ndim < 2 or w_k.ndim < 2:
        raise ValueError(
            f"w_q and w_k must be (..., d_head, d_model); got w_q {tuple(w_q.shape)}, w_k {tuple(w_k.shape)}"
        )
    if w_q.shape != w_k.shape:
        raise ValueError(
            f"w_q and w_k must have the same shape (..., d_head, d_model); "
            f"got w_q {tuple(w_q.shape)} and w_k {tuple(w_k.shape)}"
        )


Method = Literal["cholqr", "householder"]


def qk_modes(
    w_q: torch.Tensor | np.ndarray,
    w_k: torch.Tensor | np.ndarray,
    *,
    dtype: DType = "float64",
    device: str | torch.device | None = "auto",
    method: Method = "cholqr",
) -> Modes:
    """Exact SVD of ``w_q^T @ w_k`` for every leading index, in one batched call.

    Args:
        w_q: (..., d_head, d_model) query weights, one row per head dimension (as ``nn.Linear`` stores them).
        w_k: (..., d_head, d_model) key weights.
        dtype: computation dtype; float64 (default) gives reconstruction errors ~1e-13.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.
        method: how the thin QR of each factor is computed (see module docstring); results agree to rounding.

    Returns:
        :class:`Modes` with ``min(d_head, d_model)`` modes per head, on the computation device.
    """
    dev = resolve_device(device)
    tdtype = _TORCH_DTYPES[dtype]
    wq = torch.as_tensor(w_q).to(device=dev, dtype=tdtype)
    wk = torch.as_tensor(w_k).to(device=dev, dtype=tdtype)
    _check_factors(wq, wk)
    if method not in ("cholqr", "householder"):
        raise ValueError(f"method must be 'cholqr' or 'householder', got {method!r}")
    if method == "householder" or wq.shape[-2] > wq.shape[-1]:  # d_head > d_model: Householder handles it
        ut, s, vt, _ = _modes_householder(wq, wk)
    else:
        ut, s, vt = _modes_tiered(wq, wk)
    _fix_signs_(ut, vt)
    return Modes(U=ut.transpose(-1, -2), S=s, V=vt.transpose(-1, -2))


_Rows = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]


def _modes_tiered(wq: torch.Tensor, wk: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """One CholeskyQR pass for every head; heads whose U or V fail the orthonormality check are redone with
    CholeskyQR2, and those still failing with Householder QR."""
    ut, s, vt, good = _modes_cholqr(wq, wk, passes=1)
    for redo in (lambda q, k: _modes_cholqr(q, k, passes=2), _modes_householder):
        if bool(good.all()):
            break
        bad = ~good
        ut_b, s_b, vt_b, good_b = redo(wq[bad], wk[bad])
        ut[bad], s[bad], vt[bad] = ut_b, s_b, vt_b
        good[bad] = good_b
    return ut, s, vt


def _modes_householder(wq: torch.Tensor, wk: torch.Tensor) -> _Rows:
    """Thin Householder QR of both factors (LAPACK): the reference path, robust to any conditioning."""
    q_q, r_q = torch.linalg.qr(wq.transpose(-1, -2), mode="reduced")
    q_k, r_k = torch.linalg.qr(wk.transpose(-1, -2), mode="reduced")
    a, s, bh = _svd(r_q @ r_k.transpose(-1, -2))
    ut = a.transpose(-1, -2) @ q_q.transpose(-1, -2)  # rows u_n^T: (..., mode, d_model)
    vt = bh @ q_k.transpose(-1, -2)
    return ut, s, vt, torch.ones(s.shape[:-1], dtype=torch.bool, device=s.device)


def _modes_cholqr(wq: torch.Tensor, wk: torch.Tensor, passes: int) -> _Rows:
    """CholeskyQR with ``passes`` rounds, in row form, the final Q never materialised.

    Each round factors the current rows: ``P P^T = L L^T`` and (except the last) ``P <- L^-1 P``, so that
    ``w = (L_1 ... L_n) Q^T`` with ``Q^T = L_n^-1 P``. The core is ``R_q R_k^T`` with ``R^T = L_1 ... L_n``;
    with its SVD ``A S B^T`` the singular vectors are ``U^T = (A^T L_n,q^-1) P_q`` and ``V^T = (B^T
    L_n,k^-1) P_k``: one large product per side. Returns a per-head flag: U and V orthonormal to rounding.
    """
    p_q, last_q, rt_q, ok_q = _cholqr_rows(wq, passes)
    p_k, last_k, rt_k, ok_k = _cholqr_rows(wk, passes)
    a, s, bh = _svd(rt_q.transpose(-1, -2) @ rt_k)
    # A^T L^-1 = (L^-T A)^T: a triangular solve on the small matrices
    ut = torch.linalg.solve_triangular(last_q.transpose(-1, -2), a, upper=True).transpose(-1, -2) @ p_q
    vt = torch.linalg.solve_triangular(last_k.transpose(-1, -2), bh.transpose(-1, -2), upper=True)
    vt = vt.transpose(-1, -2) @ p_k
    eye = torch.eye(a.shape[-1], dtype=a.dtype, device=a.device)
    tol = 64 * a.shape[-1] * torch.finfo(a.dtype).eps
    err_u = torch.linalg.matrix_norm(ut @ ut.transpose(-1, -2) - eye, ord="fro")
    err_v = torch.linalg.matrix_norm(vt @ vt.transpose(-1, -2) - eye, ord="fro")
    return ut, s, vt, ok_q & ok_k & (err_u <= tol) & (err_v <= tol)  # NaN compares False


def _cholqr_rows(w: torch.Tensor, passes: int) -> _Rows:
    """CholeskyQR rounds on the rows of ``w``: (P, last L, R^T = L_1...L_n, success flag)."""
    p, ok = w, torch.ones(w.shape[:-2], dtype=torch.bool, device=w.device)
    eye = torch.eye(w.shape[-2], dtype=w.dtype, device=w.device)
    rt: torch.Tensor | None = None
    for i in range(passes):
        low, ok_i = _chol(p @ p.transpose(-1, -2))
        ok = ok & ok_i
        rt = low if rt is None else rt @ low
        if i < passes - 1:
            # L^-1 P as (small inverse) @ P: a batched GEMM, faster on CPU than a triangular solve with d columns
            low_inv = torch.linalg.solve_triangular(low, eye.expand_as(low), upper=False)
            p = low_inv @ p
    assert rt is not None
    return p, low, rt, ok


def _chol(gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Batched Cholesky; failed matrices get the identity (and a False flag) so the batch stays finite."""
    low, info = torch.linalg.cholesky_ex(gram)
    ok = info == 0
    eye = torch.eye(low.shape[-1], dtype=low.dtype, device=low.device)
    return torch.where(ok[..., None, None], low, eye), ok


def _svd(core: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Batched SVD of the small cores (:func:`in_threads`)."""
    a, s, bh = in_threads(lambda c: tuple(torch.linalg.svd(c, full_matrices=False)), core)
    return a, s, bh


def in_threads(fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """``fn`` (a batched decomposition returning tensors with the batch first) of the small matrices ``x`` (...,
    m, n). torch runs a CPU batch of small decompositions serially, so on CPU the batch is split into one slice per
    thread (torch releases the GIL inside the call)."""
    n = torch.get_num_threads()
    batch = x.reshape(-1, *x.shape[-2:])
    if x.device.type != "cpu" or n < 2 or batch.shape[0] < 2 * n:
        return fn(x)
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(n) as pool:
        parts = list(pool.map(fn, batch.chunk(n)))
    lead = x.shape[:-2]
    return tuple(torch.cat([p[i] for p in parts]).reshape(*lead, *parts[0][i].shape[1:]) for i in range(len(parts[0])))


def _fix_signs_(ut: torch.Tensor, vt: torch.Tensor) -> None:
    """Flip (u_n, v_n) jointly, in place, so the largest-magnitude entry of each u_n is positive.
    ``ut``/``vt`` hold the vectors as rows (..., mode, d_model)."""
    high, low = ut.amax(dim=-1, keepdim=True), ut.amin(dim=-1, keepdim=True)  # no temporaries of ut's size
    sign = torch.where(high >= -low, 1.0, -1.0).to(ut.dtype)
    ut.mul_(sign)
    vt.mul_(sign)


def reconstruct(modes: Modes) -> torch.Tensor:
    """``U diag(S) V^T`` (..., d_model, d_model): for tests and small models only."""
    return (modes.U * modes.S.unsqueeze(-2)) @ modes.V.transpose(-1, -2)


def degenerate_blocks(s: np.ndarray | torch.Tensor, rtol: float = 1e-3) -> np.ndarray:
    """:func:`qkdissect.core.modes_np.degenerate_blocks` of singular values on any device."""
    return _blocks(s.cpu().numpy() if isinstance(s, torch.Tensor) else s, rtol)
