"""The automatic mode choices of the figures (qkdissect.core.selection), against brute force."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdissect.core.selection import image_depth_modes, spread_modes


@settings(max_examples=60, deadline=None)
@given(st.integers(2, 12), st.integers(1, 6), st.integers(1, 9), st.data())
def test_gallery_parts_take_the_strongest_heads_of_their_layers(n_layers: int, n_heads: int, n: int, data) -> None:
    s = np.sort(np.random.default_rng(n_layers * 7 + n_heads).random((n_layers, n_heads, 4)), axis=-1)[..., ::-1]
    first = data.draw(st.integers(0, n_layers - 1))
    last = data.draw(st.integers(first, n_layers - 1))
    chosen = spread_modes(s, n, (first, last))
    per_layer = -(-n // (last - first + 1))
    # brute force: every layer of the range, its heads by descending strongest singular value
    expected = [
        (layer, head, 0, "+")
        for layer in range(first, last + 1)
        for head in sorted(range(n_heads), key=lambda h: (-s[layer, h, 0], h))[:per_layer]
    ][:n]
    assert chosen == expected
    assert all(first <= m[0] <= last for m in chosen) and len(chosen) == min(n, len(expected))


def test_a_layer_range_outside_the_model_is_refused() -> None:
    with pytest.raises(ValueError, match=r"\[3, 12\] is not inside 0-11"):
        spread_modes(np.ones((12, 2, 3)), 4, (3, 12))


def test_image_depth_modes_skip_the_early_layers_and_pick_each_layers_best() -> None:
    rng = np.random.default_rng(0)
    plus, minus = rng.normal(size=(2, 12, 6, 8))
    s = np.sort(rng.random((12, 6, 8)), axis=-1)[..., ::-1]
    contrib = np.maximum(plus, minus) * s
    contrib[:3] += 100.0  # the early layers dominate, as colour and position modes do on real images
    modes = image_depth_modes(contrib, plus, minus, n=6)
    assert [m[0] for m in modes] == [3, 5, 6, 8, 9, 11]  # round(linspace(3, 11, 6))
    for layer, head, mode, sign in modes:
        assert contrib[layer, head, mode] == contrib[layer].max()
        assert sign == ("+" if plus[layer, head, mode] >= minus[layer, head, mode] else "-")
