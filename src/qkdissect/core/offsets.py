"""The query-key interaction of a rotary model at many offsets at once: singular values and per-mode cosines of
``W_q^T R(-d) W_k`` for every head and every offset d, without forming a d_model x d_model matrix.

With the thin QR factorisations ``W_q^T = Q_q A`` and ``W_k^T = Q_k B`` (d_model x r and r x r, r = d_head),
``W_q^T R W_k = Q_q (A R B^T) Q_k^T``: the SVD of the small core ``C = A R B^T = P diag(S) Z^T`` gives the modes
``U = Q_q P``, ``V = Q_k Z``, and their cosines ``u_n . v_n = p_n^T (Q_q^T Q_k) z_n`` need only the r x r Gram
matrix ``G = Q_q^T Q_k``. One QR per head, then one r x r decomposition per (head, offset), offsets taken in chunks
so that memory stays bounded.

The decomposition (``method``): ``svd`` is the SVD of each core. ``gram`` (the default, 1.5 times as fast on a
CPU) takes the symmetric eigendecomposition of ``C^T C = Z diag(S^2) Z^T`` instead: S and the right vectors, and
the cosines without the left vectors, ``u_n . v_n = z_n^T C^T G z_n / s_n`` (``p_n = C z_n / s_n``). Squaring
loses accuracy on singular values far below the head's largest and on vectors of close eigenvalues (errors
``eps s_0^2 / (s_n^2 - s_m^2)`` instead of the SVD's ``eps s_0 / (s_n - s_m)``), so a core whose smallest singular
value is below :data:`GRAM_RTOL` of its largest, or whose estimated error is above :data:`GRAM_TOL`, is redone
with the SVD. The weighted cosine does not depend on the vectors at all (``sum_n s_n u_n . v_n = tr(C^T G)``).

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
#: ``gram``: a core whose eigenvectors' estimated error (eps s_0^2 / gap) is above this is redone with the SVD
GRAM_TOL = 1e-11
#: singular values closer than this fraction of the largest form a block (the modes store's default block_rtol)
BLOCK_RTOL = 1e-3
#: the most float64 numbers one array of a chunk holds (cores of every head at ``chunk`` offsets): 8 MB
CHUNK_NUMBERS = 2**20


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
    (offset, d_head, d_head) shared by every head or (offset, ..., d_head, d_head) one per head (or per layer:
    (offset, layer, 1, d_head, d_head)); or a
    :class:`Rotary` with ``offsets`` (n,) or (n, axes), whose rotations ``R(-d)`` (per-head frequencies: per layer
    and head) turn the key factor plane by plane, a chunk of offsets at a time. ``chunk`` offsets at once (default:
    as many as keep each array of the chunk under :data:`CHUNK_NUMBERS` numbers); ``progress`` is called with the
    number of offsets done after each chunk."""
    wq = torch.as_tensor(w_q, dtype=torch.float64)
    wk = torch.as_tensor(w_k, dtype=torch.float64)
    if wq.shape != wk.shape:
        raise ValueError(f"w_q {tuple(wq.shape)} and w_k {tuple(wk.shape)} differ")
    lead, r = wq.shape[:-2], wq.shape[-2]
    q_q, a = torch.linalg.qr(wq.transpose(-1, -2), mode="reduced")  # (..., D, r), (..., r, r)
    q_k, b = torch.linalg.qr(wk.transpose(-1, -2), mode="reduced")
    gram = (q_q.transpose(-1, -2) @ q_k).unsqueeze(-3)  # (..., 1, r, r)
    del q_q, q_k, wq, wk  # (float64 copies of float32 weights: freed here)
    a, bt = a.unsqueeze(-3), b.transpose(-1, -2).unsqueeze(-3)
    turned, n = _key_factors(key_rotations, offsets, bt)
    step = chunk or max(1, CHUNK_NUMBERS // max(1, int(np.prod(lead, dtype=np.int64)) * r * r))
    s_out = np.empty((*lead, n, r))
    cos_out = np.empty((*lead, n, r))

    def run(start: int, stop: int) -> int:
        core = a @ turned(start, stop)  # A R B^T: (..., c, r, r)
        s, cos = (_gram_spectrum if method == "gram" else _svd_spectrum)(core, gram)
        s_out[..., start:stop, :], cos_out[..., start:stop, :] = s.numpy(), cos.numpy()
        return stop - start

    in_chunks(run, n, step, progress)
    return s_out, cos_out


def in_chunks(run: Callable[[int, int], int], n: int, step: int, progress: Callable[[int], None] | None) -> None:
    """``run(start, stop)`` for the chunks of ``step`` of 0..n-1, on torch's number of threads at once, each chunk
    on one thread (one thread's batched ops on small matrices beat several threads' on a loaded machine: no
    thread waits for another at every op); torch's thread count is the same after as before."""
    threads = torch.get_num_threads()
    chunks = [(i, min(n, i + step)) for i in range(0, n, step)]
    if threads < 2 or len(chunks) < 2:
        for i, j in chunks:
            done = run(i, j)
            if progress is not None:
                progress(done)
        return
    from concurrent.futures import ThreadPoolExecutor

    try:
        with ThreadPoolExecutor(threads, initializer=torch.set_num_threads, initargs=(1,)) as pool:
            for done in pool.map(lambda c: run(*c), chunks):
                if progress is not None:
                    progress(done)
    finally:
        torch.set_num_threads(threads)  # the MKL count the workers' setting changed for every thread


def _key_factors(
    key_rotations: np.ndarray | Rotary, offsets: np.ndarray | None, bt: torch.Tensor
) -> tuple[Callable[[int, int], torch.Tensor], int]:
    """``R_o B^T`` (..., c, r, r) for the offsets o = start..stop-1, and the number of offsets."""
    n_lead = bt.ndim - 3
    if isinstance(key_rotations, Rotary):
        if offsets is None:
            raise ValueError("a Rotary needs the offsets")
        rot, offs = key_rotations, np.asarray(offsets, dtype=np.float64)

        def turned(i: int, j: int) -> torch.Tensor:
            angle = torch.from_numpy(rot.key_angles(offs[i:j]))  # (c, planes) or (c, ..., planes)
            return _turn_rows(bt, _align(angle, n_lead, 2), rot)

        return turned, len(offs)
    every = torch.as_tensor(np.asarray(key_rotations), dtype=torch.float64)
    return (lambda i, j: _align(every[i:j], n_lead, 3) @ bt), len(every)


def _align(x: torch.Tensor, n_lead: int, own: int) -> torch.Tensor:
    """Per-offset values with ``own`` dims of their own, the offset first: shared (c, *own) as they are; one per
    head (c, ..., *own) -> (..., c, *own), to broadcast against (..., c, ...)."""
    if x.ndim == own:
        return x
    if x.ndim != n_lead + own:
        raise ValueError(f"rotations of shape {tuple(x.shape)} for weights with {n_lead} leading dims")
    return x.movedim(0, -own)


def _turn_rows(x: torch.Tensor, angle: torch.Tensor, rot: Rotary) -> torch.Tensor:
    """``R x`` for ``x`` (..., 1, r, m) and the rotations of ``angle`` (..., c, planes) (plane p turns rows a_p and
    b_p: :meth:`Rotary.planes`; rows past ``rotary_dim`` stay): (..., c, r, m), without forming R."""
    cos, sin = torch.cos(angle).unsqueeze(-1), torch.sin(angle).unsqueeze(-1)
    out = x.expand(torch.broadcast_shapes(x.shape, (*angle.shape[:-1], *x.shape[-2:]))).clone()
    half, turn = rot.rotary_dim // 2, (lambda t: t[..., : rot.rotary_dim, :])
    if rot.pairing == "rotate-half":  # rows p and p + half
        (xa, xb), (oa, ob) = (turn(t).unflatten(-2, (2, half)).unbind(-3) for t in (x, out))
    else:  # rows 2p and 2p + 1
        (xa, xb), (oa, ob) = (turn(t).unflatten(-2, (half, 2)).unbind(-2) for t in (x, out))
    oa.copy_(cos * xa - sin * xb)
    ob.copy_(sin * xa + cos * xb)
    return out


def _svd_spectrum(core: torch.Tensor, gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """S and u_n . v_n of each core by its SVD."""
    p, s, zt = _svd(core)
    return s, torch.einsum("...in,...ij,...nj->...n", p, gram, zt)


def _gram_spectrum(core: torch.Tensor, gram: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """S and u_n . v_n of each core from the eigendecomposition of C^T C (module docstring); the cores it cannot
    be trusted on (:func:`_trusted`) by their SVD."""
    lam, z = in_threads(lambda c: tuple(torch.linalg.eigh(c)), core.transpose(-1, -2) @ core)  # ascending
    hz = (core.transpose(-1, -2) @ gram) @ z  # C^T G z_n
    lam = lam.flip(-1)
    s = lam.clamp_min(0).sqrt()
    cos = (z * hz).sum(-2).flip(-1) / torch.where(s > 0, s, 1.0)
    bad = ~_trusted(s, lam)
    if bool(bad.any()):
        s_bad, cos_bad = _svd_spectrum(core[bad], gram.expand_as(core)[bad])
        s[bad], cos[bad] = s_bad, cos_bad
    return s, cos


def _trusted(s: torch.Tensor, lam: torch.Tensor) -> torch.Tensor:
    """Whether the Gram route is as good as the SVD for each core (S, and eigenvalues S^2 as computed, descending):
    no singular value below :data:`GRAM_RTOL` of the largest, and the error of the eigenvectors, ``eps s_0^2 /
    gap`` (the smallest gap between eigenvalues of different blocks of near-equal singular values, whose cosines
    are defined only as a block), below :data:`GRAM_TOL`. NaN is not trusted."""
    s0 = s[..., :1]
    between = s[..., :-1] - s[..., 1:] >= BLOCK_RTOL * s0
    gap = torch.where(between, lam[..., :-1] - lam[..., 1:], torch.inf).amin(-1)
    error = torch.finfo(lam.dtype).eps * lam[..., 0] / gap
    return (s[..., -1] >= GRAM_RTOL * s[..., 0]) & (error <= GRAM_TOL)


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
