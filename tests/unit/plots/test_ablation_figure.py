"""The ablation figure (qkdissect.plots.ablation) from built stores: the points are the stores' numbers, each
panel's rho is scipy's over the layer's modes, no text under the minimum size, and stores of two models are
refused."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from matplotlib.text import Text
from scipy.stats import spearmanr

from qkdissect.errors import QKDissectError
from qkdissect.passes.ablation import select_modes
from qkdissect.plots.ablation import ablation_figure, ablation_points, layer_spearman, log_ticks
from qkdissect.plots.style import MIN_FONT
from qkdissect.stores.schema import ablation_dataset, modes_dataset

LAYERS, HEADS, D = 8, 3, 6


def stores(seed: int = 0) -> tuple[xr.Dataset, xr.Dataset]:
    """A modes store and an ablation store of its 2 strongest modes of every head on 5 images (the mode's top
    images: the first 3), the effect growing with s_n."""
    rng = np.random.default_rng(seed)
    u = np.linalg.qr(rng.normal(size=(LAYERS, HEADS, D, D)))[0]
    v = np.linalg.qr(rng.normal(size=(LAYERS, HEADS, D, D)))[0]
    s = np.sort(rng.uniform(0.1, 3, (LAYERS, HEADS, D)))[..., ::-1]
    attrs = {"model_id": "m", "weights_sha256": "ab"}
    modes = modes_dataset(u, s, v, np.broadcast_to(np.arange(D), s.shape).copy(), attrs)
    sel = select_modes("top:2", (LAYERS, HEADS, D))
    base = s[sel.layer, sel.head, sel.mode] ** 2 / 10
    per_image = base[None, :, None] * rng.uniform(0.5, 1.5, (5, len(sel), 2))
    top = np.zeros((5, len(sel)), bool)
    top[:3] = True
    coords = {"image_id": (("image",), np.array([f"i{k}" for k in range(5)], dtype=object))}
    cos = np.einsum("lhdm,lhdm->lhm", u, v)
    ab = ablation_dataset(per_image, sel, ["attention_kl", "attention_moved"], top, s, cos, coords,
                          {**attrs, "ablation": "zero", "images": {"valid": 5}})  # fmt: skip
    return ab, modes


def test_the_points_are_the_stores_numbers_and_rho_is_scipys() -> None:
    ab, modes = stores()
    pts = ablation_points(ab, modes)
    assert len(pts.layer) == LAYERS * HEADS * 2 and pts.subset == "top"
    kl = ab.image_effect.sel(metric="attention_kl").values
    np.testing.assert_allclose(pts.top, kl[:3].mean(0), rtol=1e-6)  # float32 per image
    np.testing.assert_allclose(pts.every, kl.mean(0), rtol=1e-6)
    np.testing.assert_allclose(pts.singular_value, ab.singular_value.values[ab.ablated.values])
    np.testing.assert_allclose(pts.cosine, ab.cosine.values[ab.ablated.values], atol=1e-12)
    rho = layer_spearman(pts, pts.singular_value, LAYERS)
    for layer in range(LAYERS):
        at = pts.layer == layer
        assert rho[layer] == pytest.approx(spearmanr(pts.singular_value[at], pts.top[at]).statistic)
    assert np.nanmean(rho) > 0.5  # the effect was built to grow with s_n


def test_the_figure_has_a_panel_per_layer_and_axis_and_no_tiny_text() -> None:
    ab, modes = stores()
    fig = ablation_figure(ab, modes)
    shown = [ax for ax in fig.axes if ax.get_visible()]
    assert len(shown) == 2 * LAYERS
    titles = [ax.get_title() for ax in shown]
    assert titles[0].startswith("L0  ρ ") and titles[LAYERS].startswith("L0  ρ ")
    sizes = [t.get_fontsize() for t in fig.findobj(Text) if t.get_text() and t.get_visible()]
    assert min(sizes) >= MIN_FONT


def test_stores_of_other_weights_are_refused() -> None:
    ab, modes = stores()
    other = modes.assign_attrs(weights_sha256="cd")
    with pytest.raises(QKDissectError, match="was not made from this modes store"):
        ablation_figure(ab, other)
    with pytest.raises(QKDissectError, match="no metric 'output_kl'"):
        ablation_points(ab, modes, "output_kl")


def test_log_ticks_are_round_and_few() -> None:
    assert log_ticks(0.17, 0.45) == [0.2, 0.3, 0.4]
    assert log_ticks(0.4, 16) == [0.5, 2.0, 10.0]
    for low, high in ((0.011, 0.9), (3.0, 7.0), (0.2, 2000)):
        ticks = log_ticks(low, high)
        assert 2 <= len(ticks) <= 3 and all(low <= t <= high for t in ticks)
