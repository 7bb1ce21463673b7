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

Sign convention
---------------
A mode is defined up to the joint flip (u, v) -> (-u, -v). We fix it so that the entry of largest magnitude
of each u_n is positive (ties: the first such entry). Cosines u_n . v_n, singular values and every score are
invariant to this choice. Within a block of (near-)equal singular values the individual vectors are only
defined up to a rotation inside the block; see :func:`degenerate_blocks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

DType = Literal["float64", "float32"]
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


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA when available else CPU; ``cuda`` when none exists raises a clear error."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device 'cuda' was requested but torch sees no CUDA device here "
            f"(torch {torch.__version__}, cuda build: {torch.version.cuda}). "
            "Use --device cpu, or --device auto to fall back automatically."
        )
    return dev


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


def qk_modes(
    w_q: torch.Tensor | np.ndarray,
    w_k: torch.Tensor | np.ndarray,
    *,
    dtype: DType = "float64",
    device: str | torch.device | None = "auto",
) -> Modes:
    """Exact SVD of ``w_q^T @ w_k`` for every leading index, in one batched call.

    Args:
        w_q: (..., d_head, d_model) query weights, one row per head dimension (as ``nn.Linear`` stores them).
        w_k: (..., d_head, d_model) key weights.
        dtype: computation dtype; float64 (default) gives reconstruction errors ~1e-13.
        device: ``auto`` (CUDA if available), ``cpu`` or ``cuda``.

    Returns:
        :class:`Modes` with ``min(d_head, d_model)`` modes per head, on the computation device.
    """
    dev = resolve_device(device)
    tdtype = _TORCH_DTYPES[dtype]
    wq = torch.as_tensor(w_q).to(device=dev, dtype=tdtype)
    wk = torch.as_tensor(w_k).to(device=dev, dtype=tdtype)
    _check_factors(wq, wk)
    # Thin QR of the d_model x d_head factors: W^T = Q R.
    q_q, r_q = torch.linalg.qr(wq.transpose(-1, -2), mode="reduced")
    q_k, r_k = torch.linalg.qr(wk.transpose(-1, -2), mode="reduced")
    core = r_q @ r_k.transpose(-1, -2)  # (..., r, r)
    a, s, bh = torch.linalg.svd(core, full_matrices=False)
    u = q_q @ a
    v = q_k @ bh.transpose(-1, -2)
    u, v = _fix_signs(u, v)
    return Modes(U=u, S=s, V=v)


def _fix_signs(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Flip (u_n, v_n) jointly so the largest-magnitude entry of each u_n is positive."""
    idx = u.abs().argmax(dim=-2, keepdim=True)  # (..., 1, mode)
    sign = torch.sign(torch.gather(u, -2, idx))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    return u * sign, v * sign


def reconstruct(modes: Modes) -> torch.Tensor:
    """``U diag(S) V^T`` (..., d_model, d_model): for tests and small models only."""
    return (modes.U * modes.S.unsqueeze(-2)) @ modes.V.transpose(-1, -2)


def degenerate_blocks(s: np.ndarray | torch.Tensor, rtol: float = 1e-3) -> np.ndarray:
    """Label blocks of near-equal singular values along the last axis.

    Consecutive (descending) singular values s_n, s_{n+1} are in the same block when
    ``s_n - s_{n+1} <= rtol * s_0`` (the head's largest singular value). Returns integer block ids with the
    shape of ``s``, starting at 0 for each head. Inside a block the individual singular vectors are an
    arbitrary rotation (only the block's sum is identifiable).
    """
    arr = np.asarray(s.cpu() if isinstance(s, torch.Tensor) else s, dtype=np.float64)
    gaps = -np.diff(arr, axis=-1)
    scale = np.maximum(arr[..., :1], np.finfo(np.float64).tiny)
    new_block = gaps > rtol * scale
    ids = np.concatenate([np.zeros((*arr.shape[:-1], 1), dtype=np.int64), np.cumsum(new_block, axis=-1)], -1)
    return ids
