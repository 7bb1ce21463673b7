"""The interaction of a rotary model at many offsets: the batched spectrum (one QR per head, r x r cores per
offset) equals a full SVD of W_q^T R(-d) W_k offset by offset (hypothesis), the offsets store of a real trained
model (stories260K) agrees with its modes at single offsets, and a model without rotary embedding is refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import qkdissect as qk
from conftest import _need_assets, make_tiny_vit
from qkdissect.cli import main
from qkdissect.core.offsets import offset_spectrum, weighted_cosine
from qkdissect.core.rotary import Rotary
from qkdissect.passes.offsets import parse_offsets
from qkdissect.stores import open_store
from test_rotary import STORIES


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

    folder = _need_assets(STORIES) / Path(STORIES).parent
    out = tmp_path / "off.zarr"
    assert main(["offsets", f"hf:{folder}", "--offsets", "64", "-q", "-o", str(out)]) == 0
    assert "5 layers x 8 heads at 64 offsets" in capsys.readouterr().out
    ds = open_store(out, "offsets")
    assert list(ds.offset.values) == list(range(64)) and list(ds.kv_head.values) == [0, 0, 1, 1, 2, 2, 3, 3]
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
