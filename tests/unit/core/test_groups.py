"""Grouped-query heads: the principal angles between the query sides of heads that share a key-value head, against
scipy's subspace_angles (random subspaces, hypothesis), against angles built in (down to 1e-9 rad, which cosines
alone cannot resolve), and in the modes store of a real grouped-query model (stories260K)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.linalg
from hypothesis import given, settings
from hypothesis import strategies as st

import qkdissect as qk
from qkdissect.core.groups import group_pairs, principal_angles
from qkdissect.models import extract_qk
from tests.helpers import need_assets

STORIES = "weights/stories260K/hf/model.safetensors"


def _basis(rng: np.random.Generator, d: int, k: int) -> np.ndarray:
    return np.linalg.qr(rng.standard_normal((d, k)))[0]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 10_000), st.integers(2, 24), st.data())
def test_angles_are_scipys_on_random_subspaces(seed: int, d: int, data: st.DataObject) -> None:
    k = data.draw(st.integers(1, d))
    rng = np.random.default_rng(seed)
    u = np.stack([_basis(rng, d, k) for _ in range(3)])  # three heads
    pairs = np.array([[0, 1], [0, 2], [1, 2]])
    got = principal_angles(u, pairs)
    assert got.shape == (3, k) and np.all(np.diff(got, axis=-1) >= -1e-12)  # ascending
    for i, (a, b) in enumerate(pairs):
        want = np.sort(scipy.linalg.subspace_angles(u[a], u[b]))
        np.testing.assert_allclose(got[i], want, atol=1e-7)  # scipy: arccos where two subspaces meet (~2e-8)


def test_small_angles_are_resolved_by_their_sines() -> None:
    """Two subspaces a known set of angles apart, down to 1e-9 rad: cosines alone give 0 below ~1e-8."""
    theta = np.array([1e-9, 1e-6, 1e-3, 0.3, 1.2])
    d, k = 16, len(theta)
    q = np.linalg.qr(np.random.default_rng(0).standard_normal((d, 2 * k)))[0]
    a = q[:, :k]
    b = a * np.cos(theta) + q[:, k:] * np.sin(theta)  # column i turned by theta_i towards a new direction
    got = principal_angles(np.stack([a, b]), np.array([[0, 1]]))[0]
    np.testing.assert_allclose(got, theta, rtol=1e-6, atol=1e-15)


def test_pairs_are_the_heads_sharing_a_key_head() -> None:
    assert group_pairs([0, 0, 1, 1]).tolist() == [[0, 1], [2, 3]]
    assert group_pairs([0, 0, 0]).tolist() == [[0, 1], [0, 2], [1, 2]]  # multi-query: every pair
    assert group_pairs([0, 1, 2]).shape == (0, 2)  # one key head per query head: no pairs


def test_the_modes_store_of_a_grouped_model_has_its_angles(tmp_path: Path) -> None:
    from transformers import AutoModelForCausalLM

    model: Any = AutoModelForCausalLM.from_pretrained(need_assets(STORIES) / Path(STORIES).parent)
    ds = qk.modes(model, device="cpu", output=tmp_path / "m.zarr")
    assert ds.pair_head_a.values.tolist() == [0, 2, 4, 6] and ds.pair_head_b.values.tolist() == [1, 3, 5, 7]
    assert ds.pair_kv_head.values.tolist() == [0, 1, 2, 3]
    assert ds.query_group_angle.dims == ("layer", "head_pair", "angle") and ds.query_group_angle.units == "rad"
    # the query side of a head is the row space of its W_q: the angles are those between the rows of two heads
    w_q = extract_qk(model).w_q.double().numpy()
    for layer in (0, 4):
        want = np.sort(scipy.linalg.subspace_angles(w_q[layer, 2].T, w_q[layer, 3].T))
        np.testing.assert_allclose(ds.query_group_angle.values[layer, 1], want, atol=1e-9)
    with pytest.raises(AttributeError):
        qk.modes(_dense(), device="cpu").query_group_angle  # noqa: B018


def _dense() -> Any:
    """A GPT-2 stand-in: one key head per query head."""
    from transformers import GPT2Config, GPT2LMHeadModel

    return GPT2LMHeadModel(GPT2Config(n_layer=1, n_head=2, n_embd=8, vocab_size=11, n_positions=8))
