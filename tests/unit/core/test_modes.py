"""Modes against brute force: full per-head SVD of the explicit d x d product."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdissect.core.device import resolve_device
from qkdissect.core.modes import Modes, degenerate_blocks, qk_modes, reconstruct


@st.composite
def factors(draw: st.DrawFn, rank_deficient: bool = False) -> tuple[np.ndarray, np.ndarray]:
    n_layers = draw(st.integers(1, 2))
    n_heads = draw(st.integers(1, 3))
    d_head = draw(st.integers(1, 8))
    d = draw(st.integers(1, 20))
    seed = draw(st.integers(0, 2**31 - 1))
    rng = np.random.default_rng(seed)
    w_q = rng.standard_normal((n_layers, n_heads, d_head, d))
    w_k = rng.standard_normal((n_layers, n_heads, d_head, d))
    if rank_deficient:
        r = draw(st.integers(0, max(0, min(d_head, d) - 1)))
        w_q = rng.standard_normal((n_layers, n_heads, d_head, r)) @ rng.standard_normal((n_layers, n_heads, r, d))
    return w_q, w_k


def _brute(w_q: np.ndarray, w_k: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The released code's way: form M per head, full SVD, keep the first d_head modes."""
    k = min(w_q.shape[-2], w_q.shape[-1])
    m = np.swapaxes(w_q, -1, -2) @ w_k
    u, s, vt = np.linalg.svd(m)
    return m, u[..., :k], s[..., :k], np.swapaxes(vt, -1, -2)[..., :k]


def assert_exact(modes: Modes, w_q: np.ndarray, w_k: np.ndarray) -> tuple[np.ndarray, ...]:
    """S and U S V^T equal the full SVD to 1e-10 (relative to the largest singular value), U and V have
    orthonormal columns. Returns the brute-force (M, U, S, V) for further checks."""
    u, s, v = modes.numpy()
    m, ub, sb, vb = _brute(w_q, w_k)
    scale = max(1.0, float(np.abs(sb).max()))
    assert s.shape == sb.shape and u.shape == ub.shape
    np.testing.assert_allclose(s, sb, atol=1e-10 * scale, rtol=0)
    np.testing.assert_allclose(reconstruct(modes).numpy(), m, atol=1e-10 * scale, rtol=0)
    eye = np.eye(u.shape[-1])
    for x in (u, v):
        np.testing.assert_allclose(
            np.swapaxes(x, -1, -2) @ x, np.broadcast_to(eye, x.shape[:-2] + eye.shape), atol=1e-10
        )
    return m, ub, sb, vb


@settings(max_examples=60, deadline=None)
@given(factors())
def test_matches_full_svd(wqk: tuple[np.ndarray, np.ndarray]) -> None:
    w_q, w_k = wqk
    modes = qk_modes(w_q, w_k, device="cpu")
    _, ub, sb, vb = assert_exact(modes, w_q, w_k)
    u, _, v = modes.numpy()
    scale = max(1.0, float(np.abs(sb).max()))
    # sign-invariant per-mode quantity: the cosine u_n . v_n, where the mode is identifiable
    cos, cos_b = (u * v).sum(-2), (ub * vb).sum(-2)
    gaps = np.minimum(np.abs(np.diff(sb, axis=-1, prepend=np.inf)), np.abs(np.diff(sb, axis=-1, append=-np.inf)))
    ok = gaps > 1e-6 * scale
    np.testing.assert_allclose(cos[ok], cos_b[ok], atol=1e-8)


@settings(max_examples=40, deadline=None)
@given(factors(rank_deficient=True))
def test_rank_deficient_heads(wqk: tuple[np.ndarray, np.ndarray]) -> None:
    w_q, w_k = wqk
    assert_exact(qk_modes(w_q, w_k, device="cpu"), w_q, w_k)


@settings(max_examples=30, deadline=None)
@given(st.integers(2, 8), st.integers(8, 24), st.integers(0, 2**31 - 1))
def test_invariant_under_change_of_head_basis(d_head: int, d: int, seed: int) -> None:
    """W_q -> A^T W_q, W_k -> A^-1 W_k leaves W_q^T W_k, its SVD and all cosines unchanged."""
    rng = np.random.default_rng(seed)
    w_q, w_k = rng.standard_normal((2, 1, 1, d_head, d))
    q1, _ = np.linalg.qr(rng.standard_normal((d_head, d_head)))
    q2, _ = np.linalg.qr(rng.standard_normal((d_head, d_head)))
    a = q1 @ np.diag(rng.uniform(0.5, 2.0, d_head)) @ q2  # condition number <= 4
    m1 = qk_modes(w_q, w_k, device="cpu")
    m2 = qk_modes(a.T @ w_q, np.linalg.inv(a) @ w_k, device="cpu")
    np.testing.assert_allclose(m2.S.numpy(), m1.S.numpy(), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(reconstruct(m2).numpy(), reconstruct(m1).numpy(), atol=1e-9)
    s = m1.S.numpy()[0, 0]
    ok = np.minimum(np.abs(np.diff(s, prepend=np.inf)), np.abs(np.diff(s, append=-np.inf))) > 1e-6 * s[0]
    c1 = (m1.U * m1.V).sum(-2).numpy()[0, 0]
    c2 = (m2.U * m2.V).sum(-2).numpy()[0, 0]
    np.testing.assert_allclose(c2[ok], c1[ok], atol=1e-7)


def test_sign_convention_largest_entry_of_u_positive() -> None:
    rng = np.random.default_rng(0)
    u = qk_modes(rng.standard_normal((3, 4, 8, 32)), rng.standard_normal((3, 4, 8, 32)), device="cpu").U.numpy()
    idx = np.abs(u).argmax(axis=-2)
    assert np.all(np.take_along_axis(u, idx[..., None, :], axis=-2) > 0)


def test_identical_and_opposite_factors_give_cosine_plus_and_minus_one() -> None:
    rng = np.random.default_rng(1)
    w = rng.standard_normal((1, 2, 8, 32))
    same = qk_modes(w, w, device="cpu")
    opposite = qk_modes(w, -w, device="cpu")
    np.testing.assert_allclose((same.U * same.V).sum(-2).numpy(), 1.0, atol=1e-10)
    np.testing.assert_allclose((opposite.U * opposite.V).sum(-2).numpy(), -1.0, atol=1e-10)


def test_float32_is_close_to_float64() -> None:
    rng = np.random.default_rng(2)
    w_q, w_k = rng.standard_normal((2, 2, 3, 16, 64))
    m64 = qk_modes(w_q, w_k, device="cpu")
    m32 = qk_modes(w_q, w_k, dtype="float32", device="cpu")
    assert m32.S.dtype == torch.float32
    np.testing.assert_allclose(m32.S.numpy(), m64.S.numpy(), rtol=1e-4)


def test_shape_errors_name_the_arguments() -> None:
    with pytest.raises(ValueError, match=r"w_q \(2, 4, 8\) and w_k \(2, 4, 9\)"):
        qk_modes(np.zeros((2, 4, 8)), np.zeros((2, 4, 9)), device="cpu")


def test_cuda_request_without_cuda_falls_back_with_a_warning(monkeypatch: pytest.MonkeyPatch) -> None:
    if torch.cuda.is_available():
        assert resolve_device("cuda").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(RuntimeWarning, match="fell back to CPU: 'cuda:1' was requested"):
        assert resolve_device("cuda:1").type == "cpu"
    assert resolve_device("auto").type == "cpu"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_matches_cpu() -> None:
    rng = np.random.default_rng(3)
    w_q, w_k = rng.standard_normal((2, 12, 12, 64, 768))
    cpu, gpu = qk_modes(w_q, w_k, device="cpu"), qk_modes(w_q, w_k, device="cuda")
    np.testing.assert_allclose(gpu.S.cpu().numpy(), cpu.S.numpy(), rtol=1e-10)
    np.testing.assert_allclose(reconstruct(gpu).cpu().numpy(), reconstruct(cpu).numpy(), atol=1e-9)


def test_degenerate_blocks() -> None:
    s = np.array([[10.0, 10.0, 9.999, 5.0, 1.0, 1.0, 0.0]])
    np.testing.assert_array_equal(degenerate_blocks(s, rtol=1e-3), [[0, 0, 0, 1, 2, 2, 3]])
    np.testing.assert_array_equal(degenerate_blocks(s, rtol=1e-6), [[0, 0, 1, 2, 3, 3, 4]])


@pytest.mark.parametrize(
    "cond, rank_drop",
    [(1.0, 0), (1e4, 0), (1e9, 0), (1.0, 3)],
    ids=["well-conditioned", "kappa=1e4 (CholeskyQR2)", "kappa=1e9 (Householder)", "rank-deficient"],
)
def test_every_tier_of_the_fast_path_is_exact(cond: float, rank_drop: int) -> None:
    """The default path (CholeskyQR, then CholeskyQR2, then Householder for heads failing the orthonormality
    check) matches the brute-force SVD at every conditioning the tiers are built for."""
    rng = np.random.default_rng(7)
    d_head, d = 16, 96
    q1, _ = np.linalg.qr(rng.standard_normal((d_head, d_head)))
    q2, _ = np.linalg.qr(rng.standard_normal((d, d_head)))
    sv = np.logspace(0, -np.log10(cond), d_head)
    if rank_drop:
        sv[-rank_drop:] = 0
    w_q = (q1 * sv) @ q2.T  # singular values sv: condition number `cond`
    w_q = np.stack([w_q, rng.standard_normal((d_head, d))])[None]  # one ill head, one ordinary head
    w_k = rng.standard_normal((1, 2, d_head, d))
    fast, ref = qk_modes(w_q, w_k, device="cpu"), qk_modes(w_q, w_k, device="cpu", method="householder")
    _, _, sb, _ = assert_exact(fast, w_q, w_k)
    np.testing.assert_allclose(fast.S.numpy(), ref.S.numpy(), atol=1e-12 * sb.max())


def test_unknown_method() -> None:
    with pytest.raises(ValueError, match="cholqr"):
        qk_modes(np.zeros((1, 2, 3)), np.zeros((1, 2, 3)), device="cpu", method="lu")  # type: ignore[arg-type]


@settings(max_examples=20, deadline=None)
@given(angle=st.floats(0.1, 3.0), seed=st.integers(0, 100))
def test_degenerate_block_marks_modes_whose_vectors_are_not_identifiable(angle: float, seed: int) -> None:
    """Two equal singular values: any rotation of that block's u and v pairs gives the same W_q^T W_k, so the
    figures mark those modes (block sums stay valid) and leave a lone mode unmarked."""
    from qkdissect.core.selection import degenerate_block

    rng = np.random.default_rng(seed)
    basis_q, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    basis_k, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    s = np.array([2.0, 2.0, 0.5])
    w_q = (np.sqrt(s)[:, None] * basis_q[:3])[None, None]  # (layer, head, d_head, d)
    w_k = (np.sqrt(s)[:, None] * basis_k[:3])[None, None]
    modes = qk_modes(w_q, w_k, device="cpu")
    u, sv, v = modes.numpy()
    block = degenerate_blocks(sv)[0, 0]
    assert degenerate_block(block, 0) == degenerate_block(block, 1) == (0, 1) and degenerate_block(block, 2) is None
    c, sn = np.cos(angle), np.sin(angle)
    rot = np.array([[c, -sn], [sn, c]])
    u2, v2 = u.copy(), v.copy()
    u2[0, 0, :, :2] = u[0, 0, :, :2] @ rot
    v2[0, 0, :, :2] = v[0, 0, :, :2] @ rot
    whole = (u[0, 0] * sv[0, 0]) @ v[0, 0].T
    np.testing.assert_allclose((u2[0, 0] * sv[0, 0]) @ v2[0, 0].T, whole, atol=1e-12)  # the block's sum is the same
    assert not np.allclose(u2[0, 0, :, 0], u[0, 0, :, 0])  # its individual vectors are not
