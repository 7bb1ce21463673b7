"""Scores of the query-key modes (paper section 1.3-1.4).

- per-mode cosine ``cos_n = u_n . v_n`` (both unit vectors; invariant to the joint sign flip);
- per-head plain mean over modes and singular-value-weighted average
  ``sum_n (s_n / sum_m s_m) cos_n``. The plain mean leaves out the numerically null modes, ``s_n / s_0 <
  null_rtol`` (s_0: the head's largest): their vectors are an arbitrary basis of a near-null space, so their
  cosines change with the SVD routine (49 of DINOv2-S/14's 384 layer-0 modes are below 1e-4, and move its plain
  mean at the 1e-3 level); ``head_mean_all`` keeps every mode, as the released code. The weighted average needs
  no such care (those modes weigh s_n);
- per-layer values: the mean over heads of the per-head values (every head has equal weight, as the
  released code does);
- normalised depth ``l / (L - 1)``;
- the exact null interval of the cosine of two independent isotropic vectors in R^d;
- the released code's own baseline (its bug B3), to draw the published lines next to the exact ones;
- the null of the *layer* statistics themselves (:func:`layer_null`): the same weighted and plain layer averages of
  random Gaussian ``W_q``, ``W_k`` of the model's shapes, one random layer per seed. A layer average over
  ``n_heads x d_head`` modes varies far less than one mode's cosine, so the per-mode interval is no null for it.

``released_code=True`` reproduces the released notebook's weighted average, which takes the *mean* over
modes of ``(s_n / sum_m s_m) cos_n`` instead of the sum, i.e. the paper's value divided by the number of
modes (d_head). It exists only to compare with the published plots (paper section 6, bug B1).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import special  # (not scipy.stats: the same quantiles, bit for bit, for a quarter of the import)

#: random layers (one per seed, seeds 0..n-1) the null of the layer statistics is drawn from
LAYER_NULL_SEEDS = 32


def mode_cosines(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Cosine between each query-side and key-side singular vector: (..., dim, mode) -> (..., mode)."""
    u = np.asarray(u)
    v = np.asarray(v)
    if u.shape != v.shape:
        raise ValueError(f"U and V must have the same shape, got {u.shape} and {v.shape}")
    num = np.einsum("...dm,...dm->...m", u, v)
    den = np.linalg.norm(u, axis=-2) * np.linalg.norm(v, axis=-2)
    return np.clip(num / den, -1.0, 1.0)


def head_mean(cos: np.ndarray) -> np.ndarray:
    """Plain mean of the per-mode cosines of each head: (..., mode) -> (...)."""
    return np.asarray(cos).mean(axis=-1)


def null_modes(s: np.ndarray, rtol: float) -> np.ndarray:
    """(..., mode) bool: the modes whose singular value is below ``rtol`` times the head's largest (every mode
    of a head whose singular values are all zero)."""
    s = np.asarray(s, dtype=np.float64)
    top = s.max(axis=-1, keepdims=True)
    return (s < rtol * top) | (top <= 0)


def head_mean_kept(cos: np.ndarray, null: np.ndarray) -> np.ndarray:
    """Plain mean of the per-mode cosines of each head over the modes that are not ``null``: (..., mode) ->
    (...); NaN for a head whose modes are all null."""
    kept = ~np.asarray(null)
    n = kept.sum(axis=-1)
    total = np.where(kept, cos, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(n > 0, total / np.maximum(n, 1), np.nan)


def head_weighted(cos: np.ndarray, s: np.ndarray, *, released_code: bool = False) -> np.ndarray:
    """Singular-value-weighted average of the per-mode cosines of each head: (..., mode) -> (...).

    A head whose singular values are all zero has no defined average and gives NaN.
    With ``released_code=True`` the result is divided by the number of modes (see module docstring).
    """
    cos = np.asarray(cos, dtype=np.float64)
    s = np.asarray(s, dtype=np.float64)
    if cos.shape != s.shape:
        raise ValueError(f"cosines and singular values must have the same shape, got {cos.shape}, {s.shape}")
    total = s.sum(axis=-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        weights = s / total  # normalise first: s * cos could underflow for tiny (subnormal) s
        weighted = (weights * cos).sum(axis=-1)
    weighted = np.where(total[..., 0] > 0, weighted, np.nan)
    if released_code:
        weighted = weighted / cos.shape[-1]
    return weighted


def normalised_depth(n_layers: int) -> np.ndarray:
    """Layer index l = 0..L-1 mapped to l / (L - 1) in [0, 1] (a single layer sits at 0)."""
    if n_layers < 1:
        raise ValueError(f"n_layers must be >= 1, got {n_layers}")
    if n_layers == 1:
        return np.zeros(1)
    return np.arange(n_layers, dtype=np.float64) / (n_layers - 1)


def null_cosine_quantile(d: int, q: float) -> float:
    """Exact q-quantile of the cosine of two independent isotropic random vectors in R^d.

    For isotropic x, y in R^d (d >= 2), t = cos(x, y) has density proportional to (1 - t^2)^((d-3)/2) on
    [-1, 1], i.e. (t + 1) / 2 ~ Beta((d-1)/2, (d-1)/2). Computed from the Beta quantile function, not sampled.
    """
    if d < 2:
        raise ValueError(f"the cosine of two vectors needs d >= 2, got d={d}")
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"q must be in [0, 1], got {q}")
    a = (d - 1) / 2.0
    return float(2.0 * special.betaincinv(a, a, q) - 1.0)  # the Beta(a, a) quantile


def null_interval(d: int, level: float = 0.95) -> tuple[float, float]:
    """Central ``level`` interval of the isotropic null cosine in R^d (about +-1.96/sqrt(d) at 95%)."""
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    tail = (1.0 - level) / 2.0
    return (null_cosine_quantile(d, tail), null_cosine_quantile(d, 1.0 - tail))


def released_null(d: int, n: int = 10_000, seed: int = 0, chunk: int = 1000) -> float:
    """The baseline the released notebook draws at +-value (paper 1.4, bug B3), reproduced as written: ``n`` rows
    ``a1``, ``a2`` of uniform positive numbers in R^d (``np.random.seed(seed)``, then ``rand`` twice), ``a1``
    normalised, ``a2 = a1 / |a2|`` by mistake, the 99th percentile of the row-wise dot product, which is
    ``1 / |a2|``: 0.135, 0.093, 0.065, 0.056, 0.050 for d = 192, 384, 768, 1024, 1280 (close to, and slightly
    below, 1.96 / sqrt(d)). Drawn in chunks of rows (the same random stream), so memory stays small."""
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    rs = np.random.RandomState(seed)
    for start in range(0, n, chunk):  # a1: drawn only to advance the stream as the notebook does
        rs.rand(min(chunk, n - start), d)
    cos = np.concatenate(
        [1.0 / np.linalg.norm(rs.rand(min(chunk, n - start), d), axis=1) for start in range(0, n, chunk)]
    )
    return float(np.percentile(cos, 99))


def _nanmean_heads(hw: np.ndarray) -> np.ndarray:
    """Mean over heads, ignoring heads without an average (all-zero spectrum, or every mode null); NaN if none
    has one."""
    valid = np.isfinite(hw)
    count = valid.sum(axis=-1)
    total = np.where(valid, hw, 0.0).sum(axis=-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(count > 0, total / np.maximum(count, 1), np.nan)


@dataclass(frozen=True)
class LayerScores:
    """All the per-mode, per-head and per-layer numbers of one model (numpy arrays)."""

    cosine: np.ndarray  # (layer, head, mode)
    head_mean: np.ndarray  # (layer, head): null modes left out
    head_weighted: np.ndarray  # (layer, head)
    layer_mean: np.ndarray  # (layer,)
    layer_weighted: np.ndarray  # (layer,)
    depth: np.ndarray  # (layer,)
    null_low: float
    null_high: float
    null_mode: np.ndarray  # (layer, head, mode) bool: s_n / s_0 < null_rtol
    head_mean_all: np.ndarray  # (layer, head): every mode (released code)
    layer_mean_all: np.ndarray  # (layer,)
    null_rtol: float


def score_modes(
    u: np.ndarray,
    s: np.ndarray,
    v: np.ndarray,
    *,
    released_code: bool = False,
    level: float = 0.95,
    null_rtol: float = 1e-4,
) -> LayerScores:
    """Every score of section 1.3 from U, V (layer, head, dim, mode) and S (layer, head, mode); the plain mean
    without the modes below ``null_rtol`` of their head's largest singular value, and with every mode."""
    if u.ndim != 4 or s.ndim != 3:
        raise ValueError(f"expected U (layer, head, dim, mode) and S (layer, head, mode); got {u.shape}, {s.shape}")
    cos = mode_cosines(u, v)
    null = null_modes(s, null_rtol)
    hm = head_mean_kept(cos, null)
    hm_all = head_mean(cos)
    hw = head_weighted(cos, s, released_code=released_code)
    low, high = null_interval(u.shape[-2], level)
    return LayerScores(
        cosine=cos,
        head_mean=hm,
        head_weighted=hw,
        layer_mean=_nanmean_heads(hm),
        layer_weighted=_nanmean_heads(hw),
        depth=normalised_depth(u.shape[0]),
        null_low=low,
        null_high=high,
        null_mode=null,
        head_mean_all=hm_all,
        layer_mean_all=hm_all.mean(axis=-1),
        null_rtol=null_rtol,
    )


@dataclass(frozen=True)
class LayerNull:
    """The layer statistics of random Gaussian layers of a model's shapes (one per seed) and their central
    ``level`` intervals, ``mean +- z sd`` over the seeds (a layer average over many modes is close to normal)."""

    weighted: np.ndarray  # (seed,): the singular-value-weighted layer cosine of each random layer
    mean: np.ndarray  # (seed,): the plain layer mean
    weighted_interval: tuple[float, float]
    mean_interval: tuple[float, float]
    seeds: tuple[int, ...]


def _interval(samples: np.ndarray, level: float) -> tuple[float, float]:
    z = float(special.ndtri(0.5 + level / 2.0))  # the standard normal quantile
    centre, sd = float(np.mean(samples)), float(np.std(samples, ddof=1)) if samples.size > 1 else 0.0
    return centre - z * sd, centre + z * sd


def layer_null(
    n_heads: int,
    d_head: int,
    d_model: int,
    *,
    kv_heads: Sequence[int] | None = None,
    seeds: Sequence[int] = range(LAYER_NULL_SEEDS),
    level: float = 0.95,
    null_rtol: float = 1e-4,
) -> LayerNull:
    """The null of the per-layer statistics: for each seed, one layer of i.i.d. standard Gaussian ``W_q``
    (n_heads, d_head, d_model) and ``W_k`` (one per key head: ``kv_heads`` maps each query head to its key head
    under grouped-query attention), its modes, their cosines and the layer's weighted and plain averages exactly
    as :func:`score_modes` computes them. The statistics do not depend on the scale of the weights."""
    kv = tuple(range(n_heads)) if kv_heads is None else tuple(int(k) for k in kv_heads)
    # one random layer per seed: its own stream, so a seed's sample never depends on n
    samples = [_seed_layer(n_heads, d_head, d_model, kv, int(seed), null_rtol) for seed in seeds]
    w, m = (np.asarray(x, dtype=np.float64) for x in zip(*samples, strict=True))
    return LayerNull(w, m, _interval(w, level), _interval(m, level), tuple(int(x) for x in seeds))


@functools.lru_cache(maxsize=4096)
def _seed_layer(
    n_heads: int, d_head: int, d_model: int, kv: tuple[int, ...], seed: int, null_rtol: float
) -> tuple[float, float]:
    """The weighted and plain layer statistics of seed ``seed``'s random layer. Kept for the process: models of one
    shape (the paper's eight ViT-B/16-sized ones) share their null, which takes seconds at ViT-H's shape."""
    rng = np.random.default_rng(seed)
    w_q = rng.standard_normal((n_heads, d_head, d_model))
    w_k = rng.standard_normal((max(kv) + 1, d_head, d_model))[np.asarray(kv, dtype=np.int64)]
    cos, s = _random_cosines(w_q, w_k)
    weighted, plain = (
        _nanmean_heads(head_weighted(cos, s)),
        _nanmean_heads(head_mean_kept(cos, null_modes(s, null_rtol))),
    )
    return float(weighted), float(plain)


def _random_cosines(w_q: np.ndarray, w_k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """cos(u_n, v_n) and s_n of every head's ``w_q^T w_k`` (factors (head, d_head, d_model), d_head <= d_model),
    without forming U and V: with ``w_q^T = Q_q R_q``, ``w_k^T = Q_k R_k`` and ``R_q R_k^T = A S B^T``,
    u_n = Q_q a_n and v_n = Q_k b_n, so cos_n = a_n^T (Q_q^T Q_k) b_n. Householder QR: Gaussian factors have full
    rank."""
    q_q, r_q = np.linalg.qr(np.swapaxes(w_q, -1, -2))
    q_k, r_k = np.linalg.qr(np.swapaxes(w_k, -1, -2))
    a, s, bh = np.linalg.svd(r_q @ np.swapaxes(r_k, -1, -2))
    cross = np.swapaxes(q_q, -1, -2) @ q_k
    cos = np.einsum("hin,hij,hnj->hn", a, cross, bh)
    return np.clip(cos, -1.0, 1.0), s
