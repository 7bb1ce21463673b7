"""Scores: weighted averages, the released-code variant, the plain mean without numerically null modes (against
brute force; on the real DINOv2-S/14 in tests/integration/test_scores.py), depth, and the exact null interval."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from qkdissect.core import scores as sc
from qkdissect.core.modes import qk_modes


def test_weighted_average_by_hand() -> None:
    cos = np.array([[1.0, -1.0, 0.5]])
    s = np.array([[3.0, 1.0, 0.0]])
    assert sc.head_weighted(cos, s)[0] == pytest.approx((3 * 1 - 1) / 4)
    assert sc.head_weighted(cos, s, released_code=True)[0] == pytest.approx(0.5 / 3)
    assert sc.head_mean(cos)[0] == pytest.approx(0.5 / 3)
    assert np.isnan(sc.head_weighted(cos, np.zeros_like(s))[0])


@settings(max_examples=50, deadline=None)
@given(
    hnp.arrays(np.float64, (3, 5), elements=st.floats(-1, 1)),
    hnp.arrays(np.float64, (3, 5), elements=st.floats(0, 100)),
)
def test_weighted_average_is_in_range(cos: np.ndarray, s: np.ndarray) -> None:
    w = sc.head_weighted(cos, s)
    ok = s.sum(-1) > 0
    assert np.all(w[ok] >= cos.min(-1)[ok] - 1e-12) and np.all(w[ok] <= cos.max(-1)[ok] + 1e-12)


def test_score_modes_against_explicit_loops() -> None:
    rng = np.random.default_rng(0)
    m = qk_modes(rng.standard_normal((3, 4, 8, 24)), rng.standard_normal((3, 4, 8, 24)), device="cpu")
    u, s, v = m.numpy()
    r = sc.score_modes(u, s, v)
    for layer in range(3):
        per_head = []
        for h in range(4):
            c = [float(u[layer, h, :, n] @ v[layer, h, :, n]) for n in range(8)]
            per_head.append(sum(s[layer, h, n] * c[n] for n in range(8)) / s[layer, h].sum())
            assert r.cosine[layer, h] == pytest.approx(c)
        assert r.layer_weighted[layer] == pytest.approx(np.mean(per_head))
    np.testing.assert_allclose(r.depth, [0, 0.5, 1])
    rc = sc.score_modes(u, s, v, released_code=True)
    np.testing.assert_allclose(rc.layer_weighted, r.layer_weighted / 8)


@settings(max_examples=25, deadline=None)
@given(
    rank=hnp.arrays(np.int64, (2, 3), elements=st.integers(0, 8)),
    tiny=st.sampled_from([0.0, 1e-7, 1e-3]),
    rtol=st.sampled_from([1e-4, 1e-2, 0.3]),
    seed=st.integers(0, 2**31 - 1),
)
def test_plain_mean_leaves_out_null_modes_against_brute_force(
    rank: np.ndarray, tiny: float, rtol: float, seed: int
) -> None:
    """Random heads of rank 0..8 (of 8 modes), the rest of the spectrum ``tiny`` times the largest: the plain
    mean over the modes at or above ``rtol`` of their head's largest, head by head in loops, the count left out,
    and the mean with every mode."""
    rng = np.random.default_rng(seed)
    w_q, w_k = rng.standard_normal((2, 2, 3, 8, 24))
    for layer, head in np.ndindex(2, 3):  # rank r: the last 8 - r rows of W_q shrunk to ``tiny`` (0: exactly null)
        w_q[layer, head, rank[layer, head] :] *= tiny
    u, s, v = qk_modes(w_q, w_k, device="cpu").numpy()
    r = sc.score_modes(u, s, v, null_rtol=rtol)
    for layer, head in np.ndindex(2, 3):
        kept = [n for n in range(8) if s[layer, head, n] >= rtol * s[layer, head].max() and s[layer, head].max() > 0]
        cos = [float(u[layer, head, :, n] @ v[layer, head, :, n]) for n in range(8)]
        expected = np.mean([cos[n] for n in kept]) if kept else np.nan
        np.testing.assert_allclose(r.head_mean[layer, head], expected, atol=1e-12)
        assert r.null_mode[layer, head].sum() == 8 - len(kept)
        assert r.head_mean_all[layer, head] == pytest.approx(np.mean(cos), abs=1e-12)
    for layer in range(2):
        heads = r.head_mean[layer][np.isfinite(r.head_mean[layer])]
        np.testing.assert_allclose(r.layer_mean[layer], heads.mean() if heads.size else np.nan, atol=1e-12)
        assert r.layer_mean_all[layer] == pytest.approx(np.mean(r.head_mean_all[layer]), abs=1e-12)
    np.testing.assert_array_equal(r.layer_weighted, sc.score_modes(u, s, v, null_rtol=0).layer_weighted)


def test_depth() -> None:
    np.testing.assert_allclose(sc.normalised_depth(12)[[0, 11]], [0, 1])
    assert sc.normalised_depth(1).tolist() == [0.0]
    with pytest.raises(ValueError):
        sc.normalised_depth(0)


@pytest.mark.parametrize("d", [3, 16, 384, 1280])
def test_null_interval_matches_sampling(d: int) -> None:
    """The exact quantiles agree with a large Monte Carlo sample of isotropic pairs."""
    rng = np.random.default_rng(d)
    n = 200_000 if d < 1000 else 50_000
    x, y = rng.standard_normal((2, n, d))
    cos = (x * y).sum(-1) / np.linalg.norm(x, axis=-1) / np.linalg.norm(y, axis=-1)
    low, high = sc.null_interval(d)
    assert low == pytest.approx(-high, abs=1e-12)
    se = 3 * np.sqrt(0.025 * 0.975 / n) / (np.sqrt(d) * 0.06)  # generous: quantile standard error bound
    assert np.quantile(cos, 0.975) == pytest.approx(high, abs=max(se, 2e-3))
    assert np.mean(np.abs(cos) > high) == pytest.approx(0.05, abs=0.005)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 20_000), st.floats(0, 1), st.floats(0.01, 0.999))
@example(7, 1.6276025699611379e-302, 0.5)  # scipy's Beta quantile is NaN there, both ways
def test_the_quantiles_are_scipy_stats_bit_for_bit(d: int, q: float, level: float) -> None:
    """The Beta and normal quantiles come from scipy.special (a quarter of scipy.stats' import, once per scores
    job): the same numbers, to the last bit, as scipy.stats' beta.ppf and norm.ppf (NaN where theirs is NaN)."""
    from scipy import stats

    a = (d - 1) / 2.0
    ours, theirs = sc.null_cosine_quantile(d, q), float(2.0 * stats.beta.ppf(q, a, a) - 1.0)
    assert ours == theirs or (np.isnan(ours) and np.isnan(theirs))  # (both NaN below ~1e-300 for small d)
    samples = np.array([0.1, 0.3, 0.2])
    z = float(stats.norm.ppf(0.5 + level / 2.0))
    centre, sd = float(np.mean(samples)), float(np.std(samples, ddof=1))
    assert sc._interval(samples, level) == (centre - z * sd, centre + z * sd)


def test_null_interval_values_from_the_paper_spec() -> None:
    """paper.md section 1.4 lists *sampled* isotropic 97.5th percentiles (0.098 at d=384, 0.070 at d=768,
    0.056 at d=1280; 99th: 0.083 at d=768); the exact values agree to sampling error and to 1.96/sqrt(d)."""
    for d, sampled in [(192, 0.142), (384, 0.098), (768, 0.070), (1024, 0.062), (1280, 0.056)]:
        exact = sc.null_interval(d)[1]
        assert exact == pytest.approx(sampled, abs=3e-3)
        assert exact == pytest.approx(1.96 / np.sqrt(d), rel=5e-3)
    assert sc.null_cosine_quantile(768, 0.99) == pytest.approx(0.083, abs=2e-3)
    assert sc.null_cosine_quantile(3, 0.75) == pytest.approx(0.5)  # d=3: cosine is uniform on [-1, 1]


@pytest.mark.parametrize(("d", "published"), [(192, 0.135), (384, 0.094), (768, 0.065), (1024, 0.056), (1280, 0.050)])
def test_released_null_reproduces_the_published_baseline(d: int, published: float) -> None:
    """paper.md 1.4: the notebook's bugged 99th percentile, close to and slightly below 1.96/sqrt(d)."""
    value = sc.released_null(d)
    assert abs(value - published) < 1e-3
    assert 0.9 * 1.96 / np.sqrt(d) < value < 1.96 / np.sqrt(d)
