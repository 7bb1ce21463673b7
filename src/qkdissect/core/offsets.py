"""The query-key interaction of a rotary model at many offsets at once: singular values and per-mode cosines of
``W_q^T R(-d) W_k`` for every head and every offset d, without forming a d_model x d_model matrix.

With the thin QR factorisations ``W_q^T = Q_q A`` and ``W_k^T = Q_k B`` (d_model x r and r x r, r = d_head),
``W_q^T R W_k = Q_q (A R B^T) Q_k^T``: the SVD of the small core ``C = A R B^T = P diag(S) Z^T`` gives the modes
``U = Q_q P``, ``V = Q_k Z``, and their cosines ``u_n . v_n = p_n^T (Q_q^T Q_k) z_n`` need only the r x r Gram
matrix ``G = Q_q^T Q_k``. One QR per head, then one r x r decomposition per (head, offset), offsets taken in chunks
so that memory stays bounded.

The decomposition (``method``): ``svd`` is the SVD of each core. ``gram`` (the default, about twice as fast on a
CPU) takes the symmetric eigendecomposition of ``C^T C = Z diag(S^2) Z^T`` instead: S and the right vectors, and
the cosines without the left vectors, ``u_n . v_n = z_n^T C^T G z_n / s_n`` (``p_n = C z_n / s_n``). Squaring
loses accuracy on singular values far below the head's largest, so every core whose smallest singular value is
below ``GRAM_RTOL`` of its largest is redone with the SVD: both give the same numbers to ~1e-12.

The offsets of a whole grid, and the pairs of tokens they stand for: :func:`grid_offsets` (every offset between two
patches of an image grid), :func:`pair_offsets` (the offsets of every ordered pair of patches, or of the causal
pairs of a context, with their shares: the weights of the offset-averaged interaction, the content core).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import torch

from .modes import _svd, in_threads
from .rotary import Rotary

SpectrumMethod = Literal["gram", "svd"]
#: ``gram``: a core whose smallest singular value is below this fraction of its largest is redone with the SVD
GRAM_RTOL = 1e-3
#: the most float64 numbers one array of a chunk holds (cores of every head at ``chunk`` offsets): 32 MB
CHUNK_NUMBERS = 4 * 2**20


def offset_spectrum(
    w_q: np.ndarray | torch.Tensor,
    w_k: np.ndarray | torch.Tensor,
    key_rotations: np.ndarray | Rotary,
    *,
    offsets: np.ndarray | None = None,
    chunk: int | None = None,
    method: SpectrumMethod = "gram",
    progress: Callable[[int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Singular values and cosines, each (..., offset, mode), of ``w_q^T R_o w_k`` for every leading index of
    ``w_q``/``w_k`` (..., d_head, d_model) and every rotation R_o, in float64. ``key_rotations``: the rotations,
    (offset, d_head, d_head) shared by every head or (offset, ..., d_head, d_head) one per head; or a
    :class:`Rotary` with ``offsets`` (n,) or (n, axes), whose rotations ``R(-d)`` (per-head frequencies: per layer
    and head) are made a chunk at a time. ``chunk`` offsets at once (default: as many as keep each array of the
    chunk under :data:`CHUNK_NUMBERS` numbers); ``progress`` is called with the number of offsets done after each
    chunk."""
    wq = torch.as_tensor(w_q, dtype=torch.float64)
    wk = torch.as_tensor(w_k, dtype=torch.float64)
    if wq.shape != wk.shape:
        raise ValueError(f"w_q {tuple(wq.shape)} and w_k {tuple(wk.shape)} differ")
    lead, r = wq.shape[:-2], wq.shape[-2]
    rotations = _rotations(key_rotations, offsets, len(lead))
    n = len(offsets) if isinstance(key_rotations, Rotary) else len(key_rotations)  # type: ignore[arg-type]
    q_q, a = torch.linalg.qr(wq.transpose(-1, -2), mode="reduced")  # (..., D, r), (..., r, r)
    q_k, b = torch.linalg.qr(wk.transpose(-1, -2), mode="reduced")
    gram = (q_q.transpose(-1, -2) @ q_k).unsqueeze(-3)  # (..., 1, r, r)
    a, bt = a.unsqueeze(-3), b.transpose(-1, -2).unsqueeze(-3)
    step = chunk or max(1, CHUNK_NUMBERS // max(1, int(np.prod(lead, dtype=np.int64)) * r * r))
    s_out = np.empty((*lead, n, r))
    cos_out = np.empty((*lead, n, r))
    for start in range(0, n, step):
        stop = min(n, start + step)
        core = a @ rotations(start, stop) @ bt  # (..., c, r, r)
        s, cos = (_gram_spectrum if method == "gram" else _svd_spectrum)(core, gram)
        s_out[..., start:stop, :], cos_out[..., start:stop, :] = s.numpy(), cos.numpy()
        if progress is not None:
            progress(stop - start)
    return s_out, cos_out


def _rotations(
    key_rotations: np.ndarray | Rotary, offsets: np.ndarray | None, n_lead: int
) -> Callable[[int, int], torch.Tensor]:
    """The rotations of offsets start..stop-1 as a tensor that broadcasts against cores (..., c, r, r)."""
    if isinstance(key_rotations, Rotary):
        if offsets is None:
            raise ValueError("a Rotary needs the offsets")
        rot, offs = key_rotations, np.asarray(offsets, dtype=np.float64)
        return lambda i, j: _align(torch.from_numpy(rot.key_rotation(offs[i:j])), n_lead)
    every = torch.as_tensor(np.asarray(key_rotations), dtype=torch.float64)
    return lambda i, j: _align(every[i:j], n_lead)


def _align(rot: torch.Tensor, n_lead: int) -> torch.Tensor:
    """(c, r, r) as it is; one rotation per head (c, ..., r, r) -> (..., c, r, r)."""
    if rot.ndim == 3:
        return rot
    if rot.ndim != n_lead + 3:
        raise ValueError(f"rotations of shape {tuple(rot.shape)} for weights with {n_lead} leading dims")
    return rot.movedim(0, -3)


def _svd_spectrum(core: torch.Tensor, gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """S and u_n . v_n of each core by its SVD."""
    p, s, zt = _svd(core)
    return s, torch.einsum("...in,...ij,...nj->...n", p, gram, zt)


def _gram_spectrum(core: torch.Tensor, gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """S and u_n . v_n of each core from the eigendecomposition of C^T C (module docstring); cores with a singular
    value below :data:`GRAM_RTOL` of their largest by their SVD."""
    lam, z = in_threads(lambda c: tuple(torch.linalg.eigh(c)), core.transpose(-1, -2) @ core)
    lam, z = lam.flip(-1), z.flip(-1)  # descending
    s = lam.clamp_min(0).sqrt()
    hz = (core.transpose(-1, -2) @ gram) @ z  # C^T G z_n
    cos = (z * hz).sum(-2) / torch.where(s > 0, s, 1.0)
    bad = ~(s[..., -1] >= GRAM_RTOL * s[..., 0])  # NaN counts as bad
    if bool(bad.any()):
        s_bad, cos_bad = _svd_spectrum(core[bad], gram.expand_as(core)[bad])
        s[bad], cos[bad] = s_bad, cos_bad
    return s, cos


def weighted_cosine(s: np.ndarray, cos: np.ndarray) -> np.ndarray:
    """The singular-value-weighted mean cosine of each head (the mean over its modes, weighted by s_n): the
    paper's head statistic, over the last axis."""
    total = s.sum(axis=-1)
    return np.divide((s * cos).sum(axis=-1), total, out=np.zeros_like(total), where=total > 0)


def grid_offsets(grid: tuple[int, int]) -> np.ndarray:
    """Every offset (dy, dx) between two patches of an H x W grid, (2H-1)(2W-1) of them as (n, 2) integers:
    dy = -(H-1)..H-1, and for each dx = -(W-1)..W-1 (row-major)."""
    h, w = grid
    dy, dx = np.meshgrid(np.arange(1 - h, h), np.arange(1 - w, w), indexing="ij")
    return np.stack([dy.reshape(-1), dx.reshape(-1)], axis=-1).astype(np.int64)


def pair_offsets(grid: tuple[int, int] | None = None, context: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The offsets between query and key of a set of token pairs and the share of the pairs at each (weights sum
    to 1). ``grid`` (H, W): every ordered pair of patches (a patch with itself included), offsets
    :func:`grid_offsets`, share ``(H - |dy|)(W - |dx|) / (H W)^2``. ``context`` N: the causal pairs of N tokens
    (each query with every key at or before it, itself included), offsets d = 0..N-1, share
    ``(N - d) / (N (N + 1) / 2)``."""
    if (grid is None) == (context is None):
        raise ValueError("give a grid or a context length")
    if grid is not None:
        d = grid_offsets(grid)
        count = (grid[0] - np.abs(d[:, 0])) * (grid[1] - np.abs(d[:, 1]))
    else:
        assert context is not None
        d = np.arange(context, dtype=np.int64)
        count = context - d
    return d, count / count.sum()
