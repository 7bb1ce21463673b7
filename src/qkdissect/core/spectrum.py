"""The rotary spectrum: how a rotary model's query-key interaction spreads over its rotation planes (frequencies),
and how its weighted cosine changes with the distance between a query and a key.

**Plane energies.** RoPE turns the dimensions (a, b) of a head's plane p together, by an angle that grows with the
offset at the plane's own rate. Write ``W_q,p`` and ``W_k,p`` (2 x d_model) for the rows a, b of a head's W_q and
W_k, and ``G_q,p = W_q,p W_q,p^T``, ``G_k,p`` for their 2 x 2 Gram matrices. The plane's part of the interaction at
offset 0 is ``W_q,p^T W_k,p`` (d_model x d_model, rank 2), of energy

    E0_p = ||W_q,p^T W_k,p||_F^2 = tr(G_q,p G_k,p)

and at an offset that turns it by theta, ``W_q,p^T R(theta) W_k,p``. Averaged over a uniform angle, R^T P R of a
symmetric 2 x 2 P is ``tr(P) / 2 * I`` (its anisotropic part turns at twice the angle and averages out), so

    Ebar_p = E_theta ||W_q,p^T R(theta) W_k,p||_F^2 = tr(G_q,p) tr(G_k,p) / 2 = ||W_q,p||_F^2 ||W_k,p||_F^2 / 2

what the plane carries once its angle is spread over the circle: far from offset 0, for a plane that turns many
times over the distances there. The dimensions that a partial rotary leaves unrotated form one more group,
``u``, whose energy ``||W_q,u^T W_k,u||_F^2`` is the same at every offset (both E0 and Ebar).

**Shares** are a head's group energies over their sum. Cross-plane terms are in no share: the interaction is
the sum of the groups' parts, ``W_q^T R W_k = sum_g W_q,g^T R_g W_k,g``, and ``||W_q^T W_k||_F^2`` also holds
``2 tr((W_q,g^T W_k,g)^T W_q,g'^T W_k,g')`` for every pair of groups; the store keeps that total beside the
groups (``energy_total_zero``), so the cross terms are ``energy_total_zero - sum_g E0_g``. Averaged over
independent uniform angles of the planes the cross terms vanish (E[R(theta)] = 0), so the Ebar shares are exact
shares of ``E ||W_q^T R W_k||_F^2`` in that average.

**Weighted cosine by distance.** An offsets store gives each head's singular-value-weighted cosine at every
offset; :func:`by_distance` averages it over the offsets at equal distance |d| (1-D: |d| in tokens; 2-D:
sqrt(dy^2 + dx^2) in patches, binned to multiples of a bin width).

Everything is batched over layers, heads and planes (one einsum, one gather); nothing loops in Python over them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .rotary import Rotary


@dataclass(frozen=True)
class PlaneEnergies:
    """Per (..., group): the energy at offset 0 (``zero``) and averaged over the plane's angle (``mean``); the
    groups are the rotary's planes in its order, then (with partial rotary) the unrotated dimensions. ``total``
    (...): ||W_q^T W_k||_F^2, cross-plane terms included."""

    zero: np.ndarray
    mean: np.ndarray
    total: np.ndarray

    @property
    def share_zero(self) -> np.ndarray:
        return shares(self.zero)

    @property
    def share_mean(self) -> np.ndarray:
        return shares(self.mean)


def unrotated_dims(rotary: Rotary) -> np.ndarray:
    """The dimensions of a head that no plane turns (partial rotary), in order; empty when every one turns."""
    a, b = rotary.planes()
    return np.setdiff1d(np.arange(rotary.d_head), np.concatenate([a, b]))


def n_groups(rotary: Rotary) -> int:
    """The rotary's planes, plus one group for its unrotated dimensions when it has any."""
    return rotary.rotary_dim // 2 + (1 if rotary.rotary_dim < rotary.d_head else 0)


def plane_energies(w_q: np.ndarray | torch.Tensor, w_k: np.ndarray | torch.Tensor, rotary: Rotary) -> PlaneEnergies:
    """The energies of every group of every head of ``w_q``, ``w_k`` (..., d_head, d_model), float64: two Gram
    matrices per head, then one gather of their 2 x 2 plane blocks."""
    wq = torch.as_tensor(w_q, dtype=torch.float64)
    wk = torch.as_tensor(w_k, dtype=torch.float64)
    if wq.shape != wk.shape or wq.shape[-2] != rotary.d_head:
        raise ValueError(f"w_q {tuple(wq.shape)} and w_k {tuple(wk.shape)}: want equal (..., {rotary.d_head}, d_model)")
    g_q = wq @ wq.transpose(-1, -2)  # (..., d_head, d_head)
    g_k = wk @ wk.transpose(-1, -2)
    a, b = (torch.as_tensor(x) for x in rotary.planes())
    pair = torch.stack([a, b], dim=-1)  # (planes, 2)
    block_q = g_q[..., pair[:, :, None], pair[:, None, :]]  # (..., planes, 2, 2)
    block_k = g_k[..., pair[:, :, None], pair[:, None, :]]
    zero = (block_q * block_k).sum((-1, -2))  # tr(G_q G_k) of symmetric blocks
    mean = block_q.diagonal(dim1=-2, dim2=-1).sum(-1) * block_k.diagonal(dim1=-2, dim2=-1).sum(-1) / 2
    u = torch.as_tensor(unrotated_dims(rotary))
    if len(u):
        fixed = (g_q[..., u[:, None], u[None, :]] * g_k[..., u[:, None], u[None, :]]).sum((-1, -2))[..., None]
        zero, mean = torch.cat([zero, fixed], -1), torch.cat([mean, fixed], -1)
    total = (g_q * g_k).sum((-1, -2))
    return PlaneEnergies(zero.numpy(), mean.numpy(), total.numpy())


def shares(energy: np.ndarray) -> np.ndarray:
    """Each group's energy over the sum of its head's groups (last axis); 0 for a head without any."""
    total = energy.sum(axis=-1, keepdims=True)
    return np.divide(energy, total, out=np.zeros_like(energy), where=total > 0)


def plane_rates(rotary: Rotary) -> np.ndarray:
    """Radians each plane turns per token (text) or patch (images) of offset, per axis: the model's frequencies
    times its coordinate step, (planes, axes) or (layer, head, planes, axes) with per-head frequencies."""
    return rotary.frequencies * rotary.coordinate_step


def group_rates(rotary: Rotary) -> np.ndarray:
    """:func:`plane_rates` for every group: the unrotated group (partial rotary) turns at rate 0."""
    rates = plane_rates(rotary)
    if n_groups(rotary) == rates.shape[-2]:
        return rates
    pad = [(0, 0)] * rates.ndim
    pad[-2] = (0, 1)
    return np.pad(rates, pad)


def wavelengths(rates: np.ndarray) -> np.ndarray:
    """2 pi / |rate| of each group (the rate's norm over the last axis, the axes): the offset, in tokens or
    patches, over which the plane turns once; infinite for a group that does not turn."""
    norm = np.linalg.norm(rates, axis=-1)
    with np.errstate(divide="ignore"):
        return np.where(norm > 0, 2 * np.pi / np.where(norm > 0, norm, 1.0), np.inf)


def distance_bins(distance: np.ndarray, width: float) -> np.ndarray:
    """Each distance rounded to the nearest multiple of ``width`` (halves up): bin k * width holds the distances
    in [(k - 1/2) width, (k + 1/2) width)."""
    if not width > 0:
        raise ValueError(f"the distance bin width must be > 0, not {width}")
    return np.floor(np.asarray(distance, dtype=np.float64) / width + 0.5) * width


def by_distance(
    values: np.ndarray, distance: np.ndarray, width: float = 1.0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean of ``values`` (..., offset) over the offsets of each distance bin (:func:`distance_bins`): the
    bins (n,) in increasing order, the means (..., n) and how many offsets each bin holds (n,)."""
    binned = distance_bins(distance, width)
    if binned.shape != (np.shape(values)[-1],):
        raise ValueError(f"{binned.shape[0]} distances for {np.shape(values)[-1]} offsets")
    return group_means(values, binned)


def group_means(values: np.ndarray, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The mean of ``values`` (..., n) over the entries of each distinct key (n,): the keys in increasing order,
    the means (..., keys) and each key's count. One matrix product with the (entry, key) averaging matrix."""
    unique, index, counts = np.unique(keys, return_inverse=True, return_counts=True)
    average = np.zeros((np.size(keys), unique.size))
    average[np.arange(np.size(keys)), index] = 1.0 / counts[index]
    return unique, np.asarray(values, dtype=np.float64) @ average, counts
