"""Bias terms and the share of real attention logits the modes explain (beyond the paper): the four terms sum to
the model's own logits, and every statistic equals an explicit per-head numpy computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdissect.core.logits import TERMS, LogitStats, default_ks
from qkdissect.core.modes import qk_modes


def brute_force(x: np.ndarray, w_q: np.ndarray, w_k: np.ndarray, b_q: np.ndarray, b_k: np.ndarray, ks: list[int]):  # type: ignore[no-untyped-def]
    """Per head, with loops and a full numpy SVD of the head's d x d matrix."""
    n_heads = w_q.shape[0]
    shares = np.zeros((2, 4, n_heads))
    explained = np.zeros((len(ks), n_heads))
    win = np.zeros(n_heads)
    for h in range(n_heads):
        num, den = np.zeros((2, 4)), np.zeros(2)
        res, tsq, pos, tot = np.zeros(len(ks)), 0.0, 0.0, 0.0
        u, s, vt = np.linalg.svd(w_q[h].T @ w_k[h])
        for img in x:
            t = img @ w_q[h].T @ w_k[h] @ img.T
            qb = np.tile(b_q[h] @ w_k[h] @ img.T, (len(img), 1))
            kb = np.tile((img @ w_q[h].T @ b_k[h])[:, None], (1, len(img)))
            c = np.full_like(t, b_q[h] @ b_k[h])
            total = t + qb + kb + c
            for si, centre in enumerate((lambda m: m - m.mean(), lambda m: m - m.mean(axis=1, keepdims=True))):
                lc = centre(total)
                den[si] += (lc**2).sum()
                for ti, term in enumerate((t, qb, kb, c)):
                    num[si, ti] += (centre(term) * lc).sum()
            tr = t - t.mean(axis=1, keepdims=True)
            tsq += (tr**2).sum()
            for ki, k in enumerate(ks):
                tk = (img @ u[:, :k]) * s[:k] @ (vt[:k] @ img.T)
                res[ki] += ((tr - (tk - tk.mean(axis=1, keepdims=True))) ** 2).sum()
            for i, j in enumerate(total.argmax(axis=1)):
                for n in range(w_q.shape[1]):
                    a = s[n] * (img[i] @ u[:, n])
                    kv = img @ vt[n]
                    m = a * (kv[j] - kv.mean())
                    tot += m
                    pos += m if u[:, n] @ vt[n] > 0 else 0.0
        shares[:, :, h] = num / den[:, None]
        explained[:, h] = 1 - res / tsq
        win[h] = pos / tot
    return shares, explained, win


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 1000), n_tok=st.integers(3, 9), d_head=st.integers(1, 4))
def test_statistics_equal_an_explicit_per_head_computation(seed: int, n_tok: int, d_head: int) -> None:
    rng = np.random.default_rng(seed)
    n_heads, d, n_img = 2, 6, 3
    w_q, w_k = rng.normal(size=(2, n_heads, d_head, d))
    b_q, b_k = rng.normal(size=(2, n_heads, d_head))
    x = rng.normal(size=(n_img, n_tok, d))
    modes = qk_modes(w_q, w_k, device="cpu")
    ks = default_ks(d_head)
    stats = LogitStats(n_heads, ks)
    t = torch.as_tensor
    stats.update(t(x), t(w_q), t(w_k), t(b_q), t(b_k), modes.U, modes.S, modes.V)
    shares, explained, win = brute_force(x, w_q, w_k, b_q, b_k, ks)
    np.testing.assert_allclose(stats.shares().numpy(), shares, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(stats.explained().numpy(), explained, rtol=1e-8, atol=1e-10)
    np.testing.assert_allclose(stats.winning_positive_share().numpy(), win, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(stats.shares().sum(dim=1).numpy(), 1.0, atol=1e-10)  # the terms add up
    rows = stats.shares()[1]
    assert torch.all(rows[TERMS.index("key_bias")].abs() < 1e-10) and torch.all(rows[3].abs() < 1e-10)
    np.testing.assert_allclose(stats.explained()[-1].numpy(), 1.0, atol=1e-10)  # all modes: everything


def test_logits_store_from_the_command_line(tmp_path: Path) -> None:
    from qkdissect.cli import main
    from qkdissect.passes.weights import compute_modes
    from qkdissect.stores import open_store, write_store
    from tests.helpers import make_tiny_vit, write_photos

    spec = make_tiny_vit(tmp_path / "w")
    write_photos(tmp_path / "photos", n=5)
    write_store(compute_modes(spec, device="cpu"), tmp_path / "m.zarr")
    out = tmp_path / "lg.zarr"
    args = ["logits", spec, "--modes", str(tmp_path / "m.zarr"), "--images", f"folder:{tmp_path / 'photos'}"]
    assert main([*args, "--workers", "0", "--limit", "4", "-q", "-o", str(out)]) == 0
    ds = open_store(out, "logits")
    assert ds.attrs["images"]["valid"] == 4 and list(ds.k.values) == [1, 2, 4, 8, 16]
    np.testing.assert_allclose(ds.share.sum("term").values, 1.0, atol=1e-9)
    assert np.all(np.abs(ds.share.sel(scope="rows", term=["key_bias", "constant"]).values) < 1e-9)
    np.testing.assert_allclose(ds.explained.sel(k=16).values, 1.0, atol=1e-9)
    deps = {d["role"] for d in ds.attrs["provenance"]["dependencies"]}
    assert deps == {"weights", "modes store", "images"}
