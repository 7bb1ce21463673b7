"""The interaction of a rotary model at many offsets: the batched spectrum (one QR per head, r x r cores per
offset) equals a full SVD of W_q^T R(-d) W_k offset by offset (hypothesis), and its Gram route the SVD route; the
offsets store of a real trained model (stories260K) agrees with its modes at single offsets; every offset (dy, dx)
of an image grid (a RoPE-ViT mixed stand-in: rotations per layer and head) is the full SVD there; a model without
rotary embedding is refused. The content core (the interaction averaged over the offsets of every pair of patches,
or of the causal pairs of a context) against the average of W_q^T R(-d_ij) W_k over those pairs built one by one."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import qkdissect as qk
from qkdissect.cli import main
from qkdissect.core.offsets import grid_offsets, offset_spectrum, pair_offsets, weighted_cosine
from qkdissect.core.rotary import Rotary
from qkdissect.errors import QKDissectError
from qkdissect.models import extract_qk as adapt
from qkdissect.passes.offsets import compute_offsets, parse_offsets
from qkdissect.stores import open_store
from tests.helpers import STORIES, make_tiny_vit, need_assets
from tests.helpers.rotary import image_stand_in, language_stand_in


@settings(max_examples=25, deadline=None)
@given(
    heads=st.integers(1, 3),
    half=st.integers(1, 4),
    extra=st.integers(0, 6),
    offsets=st.lists(st.integers(-500, 500), min_size=1, max_size=6, unique=True),
    seed=st.integers(0, 2**16),
)
def test_the_batched_spectrum_is_the_full_svd_at_each_offset(
    heads: int, half: int, extra: int, offsets: list[int], seed: int
) -> None:
    d_head = 2 * half
    d_model = d_head + extra
    rng = np.random.default_rng(seed)
    w_q, w_k = rng.normal(size=(2, heads, d_head, d_model))
    rot = Rotary(1.0 / 10000 ** (np.arange(0, d_head, 2) / d_head), "rotate-half", d_head, d_head)
    s, cos = offset_spectrum(w_q, w_k, rot.key_rotation(np.asarray(offsets)), chunk=2)
    assert s.shape == cos.shape == (heads, len(offsets), d_head)
    for h in range(heads):
        for o, d in enumerate(offsets):
            m = w_q[h].T @ rot.key_rotation(d) @ w_k[h]
            u, s_full, vt = np.linalg.svd(m)
            np.testing.assert_allclose(s[h, o], s_full[:d_head], rtol=1e-9, atol=1e-9)
            gaps = np.diff(s_full[:d_head])
            if np.all(np.abs(gaps) > 1e-6 * s_full[0]):  # cosines of single modes are defined when s_n differ
                want = np.einsum("in,ni->n", u[:, :d_head], vt[:d_head])
                np.testing.assert_allclose(cos[h, o], want, atol=1e-7)
            total = s_full[:d_head].sum()
            assert weighted_cosine(s[h, o], cos[h, o]) == pytest.approx(
                float((s_full[:d_head] * np.einsum("in,ni->n", u[:, :d_head], vt[:d_head])).sum() / total),
                abs=1e-8,
            )


def test_the_offsets_store_of_stories260k_agrees_with_single_offsets(tmp_path: Path, capsys) -> None:
    from transformers import AutoModelForCausalLM

    folder = need_assets(STORIES) / Path(STORIES).parent
    out = tmp_path / "off.zarr"
    assert main(["offsets", f"hf:{folder}", "--offsets", "64", "-q", "-o", str(out)]) == 0
    assert "5 layers x 8 heads at 64 offsets" in capsys.readouterr().out
    ds = open_store(out, "offsets")
    assert list(ds.offset.values) == list(range(64)) and list(ds.kv_head.values) == [0, 0, 1, 1, 2, 2, 3, 3]
    assert list(ds.distance.values) == list(range(64)) and ds.attrs["offset_axes"] == ["position"]
    assert main(["offsets", f"hf:{folder}", "--offsets", "all", "-o", str(tmp_path / "all.zarr")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # (after the loading messages)
    assert "is a language model" in last and "give a context length, --offsets N" in last
    model = AutoModelForCausalLM.from_pretrained(folder)
    for d in (0, 5, 63):
        single = qk.scores(qk.modes(model, offset=d, device="cpu"))
        np.testing.assert_allclose(ds.layer_weighted.sel(offset=d).values, single.layer_weighted.values, atol=1e-9)
        np.testing.assert_allclose(
            ds.S.sel(offset=d).values, qk.modes(model, offset=d, device="cpu").S.values, rtol=1e-9
        )


def test_offsets_are_checked_and_a_model_without_rotary_is_refused(tmp_path: Path, capsys) -> None:
    assert parse_offsets("4") == [0, 1, 2, 3] and parse_offsets("-2:1") == [-2, -1, 0]
    for bad in ("x", "5:5", "0:1000000"):
        with pytest.raises(Exception, match="--offsets"):
            parse_offsets(bad)
    spec = make_tiny_vit(tmp_path / "w", depth=1)
    assert main(["offsets", spec, "--offsets", "4", "-o", str(tmp_path / "o.zarr")]) == 2
    assert "has no rotary position embedding" in capsys.readouterr().err
    assert not (tmp_path / "o.zarr").exists()


def _full(w_q: np.ndarray, r: np.ndarray, w_k: np.ndarray) -> np.ndarray:
    """W_q^T R W_k of every (layer, head), d_model x d_model: R one matrix or one per (layer, head)."""
    return np.swapaxes(w_q, -1, -2) @ (r @ w_k)


def _spectrum(w_q: np.ndarray, r: np.ndarray, w_k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The singular values and the weighted cosine of each head's W_q^T R W_k (R one matrix or one per (layer,
    head)) without forming it: its squared singular values are the eigenvalues of W_q^T R W_k W_k^T R^T W_q, the
    same as those of (R W_k W_k^T R^T)(W_q W_q^T) (d_head x d_head; with W_q W_q^T = L L^T, of the symmetric
    L^T R W_k W_k^T R^T L); and sum_n s_n u_n . v_n = tr(U S V^T) = tr(R W_k W_q^T)."""
    rk = r @ w_k
    low = np.linalg.cholesky(w_q @ np.swapaxes(w_q, -1, -2))
    lt = np.swapaxes(low, -1, -2)
    s = np.sqrt(np.linalg.eigvalsh(lt @ rk @ np.swapaxes(rk, -1, -2) @ low))[..., ::-1]
    return s, np.trace(rk @ np.swapaxes(w_q, -1, -2), axis1=-2, axis2=-1) / s.sum(-1)


def test_every_offset_of_an_image_grid_is_the_full_svd_there(tmp_path: Path) -> None:
    """RoPE-ViT mixed, 2 x 3 patches: each layer and head turns with its own frequencies."""
    model = image_stand_in("rope-vit-mixed", (2, 3))
    compute_offsets(model, "all", tmp_path / "o.zarr", device="cpu", progress=False)
    ds = open_store(tmp_path / "o.zarr", "offsets")
    want = [(dy, dx) for dy in range(-1, 2) for dx in range(-2, 3)]
    assert list(ds.offset.values) == list(range(15)) and list(zip(ds.dy.values, ds.dx.values, strict=True)) == want
    np.testing.assert_allclose(ds.distance.values, [np.hypot(*d) for d in want])
    assert (
        ds.attrs["offset_axes"] == ["y", "x"]
        and "every offset between two patches of the 2 x 3 grid" in (ds.attrs["offsets"])
    )
    qkw = adapt(model)
    w_q, w_k, rot = qkw.w_q.double().numpy(), qkw.w_k.double().numpy(), qkw.rotary
    assert rot is not None and rot.per_head
    for o in (0, 7, 13):  # (-1, -2), (0, 0), (1, 1)
        s, weighted = _spectrum(w_q, rot.key_rotation(want[o]), w_k)
        np.testing.assert_allclose(ds.S.isel(offset=o).values, s, rtol=1e-9, atol=1e-10 * s.max())
        np.testing.assert_allclose(ds.head_weighted.isel(offset=o).values, weighted, atol=1e-10)
    # (dy, dx) pairs asked one by one: sorted, unique, the same numbers; a 1-D offset is refused
    some = compute_offsets(model, [(1, 1), (-1, -2), (1, 1)], device="cpu", progress=False)
    assert list(zip(some.dy.values, some.dx.values, strict=True)) == [(-1, -2), (1, 1)]
    np.testing.assert_allclose(some.S.values, ds.S.isel(offset=[0, 13]).values, rtol=1e-12)
    with pytest.raises(QKDissectError, match=r"takes offsets as \(dy, dx\) pairs"):
        compute_offsets(model, [1, 2], device="cpu", progress=False)


def test_the_offsets_store_of_dinov3_says_where_its_prefix_tokens_sit() -> None:
    ds = compute_offsets(image_stand_in("dinov3", (2, 2)), "all", device="cpu", progress=False)
    assert ds.sizes["offset"] == 9 and ds.attrs["unrotated_prefix_tokens"] == 5
    assert ds.attrs["unrotated_position"] == [0.5, 0.5]  # the grid centre, between patches
    assert "5 prefix tokens (CLS, registers) are not rotated" in ds.attrs["prefix_tokens"]
    assert "patch-patch pairs only" in ds.attrs["offsets"]


@settings(max_examples=25, deadline=None)
@given(
    heads=st.integers(1, 3),
    half=st.integers(1, 8),
    extra=st.integers(0, 8),
    decay=st.floats(0, 7),
    seed=st.integers(0, 2**16),
)
def test_the_gram_route_is_the_svd(heads: int, half: int, extra: int, decay: float, seed: int) -> None:
    """S to 1e-10 of the largest, the cosine of every mode that is not in a block of near-equal singular values
    and the weighted cosine to 1e-10, with W_q's singular values spread over up to 7 decades (cores the Gram route
    hands to the SVD among them)."""
    d_head = 2 * half
    rng = np.random.default_rng(seed)
    w_q, w_k = rng.normal(size=(2, heads, d_head, d_head + extra))
    w_q *= np.logspace(0, -decay, d_head)[:, None]
    rot = Rotary(1.0 / 10000 ** (np.arange(0, d_head, 2) / d_head), "rotate-half", d_head, d_head)
    offs = np.arange(0, 300, 37)
    s1, c1 = offset_spectrum(w_q, w_k, rot, offsets=offs, method="svd")
    threads = torch.get_num_threads()
    s2, c2 = offset_spectrum(w_q, w_k, rot, offsets=offs, method="gram", chunk=3)  # chunks on threads of their own
    assert torch.get_num_threads() == threads
    np.testing.assert_allclose(s2, s1, rtol=0, atol=1e-10 * s1.max())
    gap = np.diff(s1, axis=-1) / -s1[..., :1]
    alone = np.concatenate([gap, np.ones_like(gap[..., :1])], -1) >= 1e-3
    alone &= np.concatenate([np.ones_like(gap[..., :1]), gap], -1) >= 1e-3
    np.testing.assert_allclose(c2[alone], c1[alone], rtol=0, atol=1e-10)
    np.testing.assert_allclose(weighted_cosine(s2, c2), weighted_cosine(s1, c1), rtol=0, atol=1e-10)


@settings(max_examples=30, deadline=None)
@given(
    axes=st.integers(1, 3),
    half=st.integers(1, 4),
    still=st.integers(0, 3),
    per_head=st.booleans(),
    n=st.integers(1, 12),
    seed=st.integers(0, 2**16),
)
def test_the_mean_rotation_is_the_weighted_sum_of_the_rotations(
    axes: int, half: int, still: int, per_head: bool, n: int, seed: int
) -> None:
    """Any axes, frequencies (shared or per head), steps, partial rotary (``still`` dimensions that do not turn),
    weights and offsets; taken a few offsets at a time."""
    rng = np.random.default_rng(seed)
    shape = (2, 3, half, axes) if per_head else (half, axes)
    rot = Rotary(rng.normal(size=shape), "interleaved", 2 * half, 2 * half + still, axes=tuple("abc"[:axes]),
                 step=tuple(rng.uniform(0.2, 3, axes)))  # fmt: skip
    offs = rng.integers(-9, 10, size=(n, axes) if axes > 1 else n)
    w = rng.uniform(0, 1, n) + 1e-3
    want = sum(wi * rot.key_rotation(d) for wi, d in zip(w, offs, strict=True)) / w.sum()
    np.testing.assert_allclose(rot.mean_key_rotation(offs, w, chunk=5), want, atol=1e-12)


def test_the_content_core_of_an_image_model_is_the_mean_over_every_pair_of_patches(tmp_path: Path) -> None:
    """RoPE-ViT mixed (per layer and head) and DINOv3 (axial, coordinates normalised to the grid), 2 x 3 patches:
    the modes of --offset mean against the average of W_q^T R(-d_ij) W_k over all 36 ordered pairs of patches
    (R(-d_ij) of each pair, averaged, between W_q^T and W_k)."""
    from tests.helpers.rotary import token_positions

    for family in ("rope-vit-mixed", "dinov3"):
        model = image_stand_in(family, (2, 3))
        qkw = adapt(model)
        rot = qkw.rotary
        assert rot is not None
        w_q, w_k = qkw.w_q.double().numpy(), qkw.w_k.double().numpy()
        pos = token_positions(rot, 0, (2, 3))
        mean = sum(rot.key_rotation(i - j) for i in pos for j in pos) / len(pos) ** 2  # R(-d_ij), pair by pair
        want = _full(w_q, mean, w_k)
        ds = qk.modes(model, offset="mean", device="cpu", output=tmp_path / f"{family}.zarr")
        have = np.einsum("lhdm,lhm,lhfm->lhdf", ds.U.values, ds.S.values, ds.V.values)
        np.testing.assert_allclose(have, want, rtol=0, atol=1e-10 * np.abs(want).max())  # so S is the SVD's
        scores = qk.scores(tmp_path / f"{family}.zarr")  # the store reads as any modes store
        weighted = np.trace(want, axis1=-2, axis2=-1) / ds.S.values.sum(-1)  # sum_n s_n u_n . v_n = tr(U S V^T)
        np.testing.assert_allclose(scores.head_weighted.values, weighted, atol=1e-10)
        core = ds.attrs["content_core"]
        assert ds.attrs["offset"] == "mean" and core["grid"] == [2, 3] and core["n_offsets"] == 15
        assert "every ordered pair (query, key) of patches of the 2 x 3 grid" in core["pairs"]
        assert any(n.startswith("content core") for n in ds.attrs["notes"])
        # every ordered pair of a grid: each plane only shrinks (the offsets come in +-d pairs), by the product of
        # two Fejer kernels |mean_y exp(i a y)|^2 |mean_x exp(i b x)|^2 of its frequencies per patch (a, b)
        step = rot.coordinate_step * rot.frequencies  # (..., plane, axis): radians per patch
        fejer = [np.abs(np.exp(1j * np.multiply.outer(step[..., k], np.arange(n))).mean(-1)) ** 2
                 for k, n in enumerate((2, 3))]  # fmt: skip
        np.testing.assert_allclose(core["plane_scale"], fejer[0] * fejer[1], atol=1e-12)
        np.testing.assert_allclose(core["plane_scale"] * np.sin(core["plane_angle"]), 0, atol=1e-12)


def test_the_content_core_of_a_language_model_is_the_mean_over_the_causal_pairs(tmp_path: Path) -> None:
    """A Llama stand-in (4 query heads on 2 key-value heads), a context of 7 tokens: the modes of --offset mean:7
    against the average of W_q^T R(-(i - j)) W_k over the 28 pairs j <= i; the refusals, in one line each."""
    model = language_stand_in("llama", hidden_size=64, num_attention_heads=4, num_key_value_heads=2,
                              intermediate_size=64)  # fmt: skip
    qkw = adapt(model)
    rot = qkw.rotary
    assert rot is not None
    w_q, w_k = qkw.w_q.double().numpy(), qkw.w_k.double().numpy()
    pairs = [(i, j) for i in range(7) for j in range(i + 1)]
    want = sum(_full(w_q, rot.key_rotation(i - j), w_k) for i, j in pairs) / len(pairs)  # d_model x d_model each
    ds = qk.modes(model, offset="mean:7", device="cpu")
    have = np.einsum("lhdm,lhm,lhfm->lhdf", ds.U.values, ds.S.values, ds.V.values)
    np.testing.assert_allclose(have, want, rtol=0, atol=1e-10 * np.abs(want).max())
    core = ds.attrs["content_core"]
    assert ds.attrs["offset"] == "mean:7" and core["context"] == 7 and core["n_offsets"] == 7
    assert "causal pairs of a context of 7 tokens" in core["pairs"] and list(ds.kv_head.values) == [0, 0, 1, 1]
    d, w = pair_offsets(context=7)
    np.testing.assert_allclose(w, (7 - d) / 28)
    assert len(grid_offsets((3, 4))) == 35 and np.allclose(pair_offsets(grid=(3, 4))[1].sum(), 1)
    for offset, message in (
        ("mean", "is a language model: say over which context to average, --offset mean:N"),
        ("mean:x", "give mean (an image model's grid) or mean:N"),
    ):
        with pytest.raises(QKDissectError, match=re.escape(message)) as e:
            qk.modes(model, offset=offset, device="cpu")
        assert "\n" not in str(e.value)
    with pytest.raises(QKDissectError, match="is an image model: it averages over every pair of patches"):
        qk.modes(image_stand_in("rope-vit-axial", (2, 2)), offset="mean:4", device="cpu")


def test_the_command_line_takes_mean(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = make_tiny_vit(tmp_path / "w", depth=1)
    assert main(["modes", spec, "-o", str(tmp_path / "m.zarr"), "--offset", "mean", "-q"]) != 0
    err = capsys.readouterr().err.strip()
    assert "has no rotary position embedding" in err and len(err.splitlines()) == 1
    for bad in ("mean:", "mean:0", "means"):
        with pytest.raises(SystemExit):
            main(["modes", spec, "-o", str(tmp_path / "bad.zarr"), "--offset", bad])
        err = capsys.readouterr().err.strip()
        assert f"--offset {bad!r} is not valid" in err and len(err.splitlines()) == 1
