"""Figures a reviewer accepts, round two: Fig. 3's band is the null of the plotted layer statistic (random Gaussian
layers of the model's shapes, checked against the full modes path) and the claims' "about 0" uses it; S17's rows
are equally long; logit_terms and Fig. 6 keep framed legends inside the figure and off the data, Fig. 6's chance
entry in the drawn colours; ln_folding says when two lines coincide; text_modes uses the image figures' cyan at
300 dpi; one number precision per figure; the automatic modes prefer concentrated maps; the claims page, the
report's category numbers and the figure notebooks' recorded paths."""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.transforms import Bbox

from qkdissect.core import scores as sc
from qkdissect.core.claims import Curve, Inputs, evaluate
from qkdissect.core.modes_np import qk_modes_np
from qkdissect.core.selection import candidate_modes, map_coherence, most_coherent
from qkdissect.passes.scores import compute_scores
from qkdissect.plots.images import KEY, image_and_top_figure
from qkdissect.plots.layers import folding_figure, layer_cosine_figure
from qkdissect.plots.logits import logit_terms_figure
from qkdissect.plots.masks import same_object_figure
from qkdissect.plots.style import MIN_FONT, decimals, image_title
from qkdissect.plots.text import KEY_RGB, QUERY_RGB
from qkdissect.provenance.claims import claims_html
from qkdissect.provenance.pages import report_categories
from qkdissect.stores import open_store
from qkdissect.stores.schema import logits_dataset
from qkdissect.workflow.paths import relative_if_inside
from tests.helpers.figures import check_page, random_modes, same_object_store
from tests.helpers.maps import maps, tiny  # noqa: F401 (a fixture)

ROOT = Path(__file__).resolve().parents[3]


# ------------------------------------------------------------------------------------- Fig. 3's null
def test_the_layer_null_is_the_plotted_statistic_on_random_layers_by_the_full_modes_path() -> None:
    """Brute force: per seed, the same Gaussian factors through qk_modes_np, mode_cosines, head_weighted and the
    mean over heads (with a grouped-query key head shared by two query heads)."""
    kv = [0, 0, 1]
    null = sc.layer_null(3, 4, 24, kv_heads=kv, seeds=range(5))
    for i, seed in enumerate(range(5)):
        rng = np.random.default_rng(seed)
        w_q = rng.standard_normal((3, 4, 24))
        w_k = rng.standard_normal((2, 4, 24))[kv]
        u, s, v = qk_modes_np(w_q, w_k)
        cos = sc.mode_cosines(u, v)
        assert null.weighted[i] == pytest.approx(float(np.mean(sc.head_weighted(cos, s))), abs=1e-12)
        assert null.mean[i] == pytest.approx(float(np.mean(cos)), abs=1e-12)
    z = 1.959963984540054
    centre, sd = null.weighted.mean(), null.weighted.std(ddof=1)
    assert null.weighted_interval == pytest.approx((centre - z * sd, centre + z * sd))


def test_the_layer_null_is_far_narrower_than_one_modes_and_stored_with_the_scores() -> None:
    rng = np.random.default_rng(3)
    ds = compute_scores(random_modes("m", 3, 192, rng))
    low, high = ds.attrs["layer_null_weighted"]
    assert low < 0 < high and high < 0.5 * ds.attrs["null_high"]  # 2 heads x 4 modes: already narrower
    assert ds.null_layer_weighted.dims == ("null_seed",) and ds.sizes["null_seed"] == sc.LAYER_NULL_SEEDS
    assert ds.attrs["layer_null_shape"] == {"d_model": 192, "heads": 2, "modes": 4, "key_heads": 2}
    assert "random layers" in ds.attrs["layer_null_definition"] and ds.null_layer_weighted.attrs["long_name"]
    again = compute_scores(random_modes("m", 3, 192, np.random.default_rng(3)))
    np.testing.assert_array_equal(again.null_layer_weighted.values, ds.null_layer_weighted.values)  # seeded
    fig = layer_cosine_figure([ds], weighted=False)
    assert "unweighted" in fig.axes[0].get_ylabel()
    (band,) = [p for p in fig.axes[0].patches if str(p.get_gid()).startswith("layer-null")]
    ys = band.get_path().transformed(band.get_patch_transform()).vertices[:, 1]
    assert (ys.min(), ys.max()) == pytest.approx(tuple(ds.attrs["layer_null_mean"]))
    plt.close(fig)
    old = ds.copy()
    del old.attrs["layer_null_weighted"]
    with pytest.raises(ValueError, match=r"no null of its layer statistics.*rerun its scores"):
        layer_cosine_figure([old])


def test_about_zero_uses_the_layer_null_not_one_modes() -> None:
    """A middle minimum of 0.05 is inside the per-mode interval at d = 384 (+-0.10) but far above the layer
    statistic's null: claim 2 holds on the first bound and not on the second."""
    depth = np.linspace(0, 1, 12)
    curve = Curve(depth, np.where((depth > 0.2) & (depth < 0.8), 0.05, 0.5))
    per_mode = {v.id: v for v in evaluate(Inputs({"m": curve}, {"m": 0.0999}))}
    layer = {v.id: v for v in evaluate(Inputs({"m": curve}, {"m": 0.005}))}
    assert per_mode["2"].holds is True and layer["2"].holds is False
    assert "random weights" in layer["2"].rule


# ------------------------------------------------------------------------------------- layout
def _legends_clear(fig: Figure) -> None:
    """Every legend inside the figure box and off every visible axes with data."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    frame = Bbox.from_bounds(0, 0, *fig.bbox.size)
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends
    for leg in legends:
        box = leg.get_window_extent(renderer)
        assert frame.contains(box.x0 + 1, box.y0 + 1) and frame.contains(box.x1 - 1, box.y1 - 1), box
        for ax in fig.axes:
            if ax.get_visible() and ax.lines:
                inter = Bbox.intersection(box, ax.get_window_extent(renderer))
                assert inter is None or inter.width * inter.height == 0, (leg, ax)


def logits_store(name: str, n_layers: int, rng: np.random.Generator) -> xr.Dataset:
    terms, heads = ["token", "query_bias", "key_bias", "constant"], 3
    shares = rng.dirichlet(np.ones(4), (n_layers, 2, heads)).transpose(0, 1, 3, 2)
    shares[:, 0, 2:] = 0.0  # within rows the key-bias term and the constant are 0
    explained = np.sort(rng.uniform(0, 1, (n_layers, 4, heads)), axis=1)
    winning, sigma = rng.uniform(0.5, 1, (n_layers, heads)), rng.uniform(0.5, 1, (n_layers, heads))
    return logits_dataset(shares, explained, winning, sigma, ["rows", "pairs"], terms, [1, 2, 4, 8], {"model_id": name})


def test_logit_terms_legends_are_framed_off_the_data_with_math_and_the_key_bias_on_top(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    fig = logit_terms_figure([logits_store("a", 12, rng), logits_store("b", 24, rng)])
    check_page(fig, tmp_path / "logit_terms.png")
    _legends_clear(fig)
    legends = fig.legends
    assert len(legends) == 3 and all(leg.get_frame_on() for leg in legends)
    labels = [t.get_text() for leg in legends for t in leg.get_texts()]
    assert any(r"$b_q^\top W_k x_j$" in label for label in labels) and not any("^T" in x for x in labels)
    assert min(t.get_fontsize() for t in fig.findobj(plt.Text) if t.get_text().strip()) >= MIN_FONT
    a = fig.axes[0]
    key_bias = [ln for ln in a.lines if ln.get_color() == "tab:green" and ln.get_linestyle() == "-"]
    constant = [ln for ln in a.lines if ln.get_color() == "0.7" and ln.get_linestyle() == "-"]
    assert key_bias[0].get_zorder() > constant[0].get_zorder() and key_bias[0].get_marker() not in (None, "None")
    plt.close(fig)


def test_fig6_legend_below_without_title_and_its_chance_entry_in_the_drawn_colours(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    stores = [same_object_store(n, 12, rng) for n in ("dino-vits16", "vit-base-patch16-224")]
    fig = same_object_figure(stores)
    check_page(fig, tmp_path / "fig6.png")
    _legends_clear(fig)
    (ax,) = fig.axes
    assert not ax.get_title() and not fig.get_suptitle()
    drawn = [to_rgb(ln.get_color()) for ln in ax.lines if str(ln.get_gid()).startswith("chance-")]
    (legend,) = fig.legends
    entry = next(h for h, t in zip(legend.legend_handles, legend.get_texts(), strict=True) if "chance" in t.get_text())
    shown = [to_rgb(c.get_color()) for c in entry] if isinstance(entry, tuple) else []
    boxes = [c for c in legend.findobj(plt.Line2D) if c.get_linestyle() not in ("-", "None") and c.axes is None]
    shown = shown or [to_rgb(c.get_color()) for c in boxes]
    assert set(drawn) <= set(shown), (drawn, shown)
    plt.close(fig)
    one = same_object_figure(stores[:1])
    colours = {to_rgb(c.get_color()) for c in one.legends[0].findobj(plt.Line2D) if c.get_linestyle() != "-"}
    assert to_rgb("0.4") not in colours  # not the grey key of old
    plt.close(one)


def test_s17_rows_are_equally_long(tiny: dict, tmp_path: Path) -> None:  # noqa: F811
    ds = open_store(maps(tiny, {"kind": "image-top", "image": "photo02.png", "k": 3}, "eq-s17"), "maps").load()
    ds["slot_image"].values[0, -1] = -1  # a row whose image was among its own top images: one fewer
    fig = image_and_top_figure(ds)
    fig.savefig(tmp_path / "s17.png", dpi=60)
    per_row: dict[int, int] = {}
    for ax in fig.axes:
        if ax.get_images() and ax.get_visible() and ax.get_title().startswith("score"):
            per_row[round(ax.get_position().y0, 3)] = per_row.get(round(ax.get_position().y0, 3), 0) + 1
    assert len(per_row) == ds.sizes["row"] and len(set(per_row.values())) == 1
    assert set(per_row.values()) == {2}  # the fewest any row has
    assert "the 2 best top images" in fig.legends[0].get_title().get_text()
    assert "photo02" in fig.get_suptitle() and "folder:" not in fig.get_suptitle()
    plt.close(fig)


def test_ln_folding_says_when_folded_and_centred_coincide() -> None:
    raw = compute_scores(random_modes("m", 4, 192, np.random.default_rng(5)))
    fig = folding_figure({"m": {"raw": raw, "folded": raw, "folded-centred": raw}})
    notes = [t.get_text() for t in fig.axes[0].texts]
    assert any("folded + centred ≈ folded" in t for t in notes)
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    assert any(r"$W_q^\top W_k$" in label for label in labels)
    plt.close(fig)
    apart = raw.copy(deep=True)
    apart["layer_weighted"] = apart.layer_weighted + 0.05
    fig = folding_figure({"m": {"raw": raw, "folded": raw, "folded-centred": apart}})
    assert not fig.axes[0].texts
    plt.close(fig)


def test_text_modes_use_the_image_figures_cyan_and_every_figure_is_saved_at_300_dpi() -> None:
    assert KEY_RGB == KEY[1][1] == (0.0, 1.0, 1.0) and KEY[0][1] == QUERY_RGB
    for nb in sorted((ROOT / "notebooks").glob("*.ipynb")):
        code = "".join("".join(c["source"]) for c in json.loads(nb.read_text())["cells"] if c["cell_type"] == "code")
        assert all(int(d) >= 300 for d in re.findall(r"dpi=(\d+)", code)), nb.name  # 300 dpi, save_figure's


def test_one_precision_per_figure_and_titles_without_specs() -> None:
    assert decimals([40, 41.8]) == 1 and f"{40:.1f}" == "40.0"
    assert decimals([119, 9.93]) == 0 and decimals([0.514, 0.3]) == 3 and decimals([]) == 2
    assert image_title("skimage:astronaut") == "astronaut (scikit-image sample)"
    assert image_title("synthetic:0") == "synthetic scene 0"
    assert image_title("folder:/data/photos/cat.jpg") == "cat.jpg"


# ------------------------------------------------------------------------------------- automatic modes
def test_coherence_tells_compact_maps_from_noise_and_single_spikes() -> None:
    rng = np.random.default_rng(0)
    y, x = np.mgrid[:16, :16]
    blob = np.exp(-((x - 5) ** 2 + (y - 9) ** 2) / 8.0)
    spike = np.zeros((16, 16))
    spike[3, 4] = 10
    assert map_coherence(blob[None] + 0.05 * rng.standard_normal((4, 16, 16))) > 0.8
    assert abs(map_coherence(rng.standard_normal((8, 16, 16)))) < 0.1
    assert abs(map_coherence(spike[None])) < 0.1
    s = np.zeros((2, 4, 3))
    s[1, :, 0] = [1.0, 0.9, 0.2, 0.6]
    assert candidate_modes(s, [(1, 0, 0, "+")]) == [[(1, 0, 0, "+"), (1, 1, 0, "+"), (1, 3, 0, "+")]]
    cands = [[(1, 0, 0, "+"), (1, 1, 0, "+")], [(1, 1, 0, "+"), (1, 0, 0, "+")]]
    assert most_coherent(cands, [[0.2, 0.9], [0.9, float("nan")]]) == [(1, 1, 0, "+"), (1, 0, 0, "+")]


def test_the_automatic_top_modes_record_the_rule_and_take_the_most_concentrated(tiny: dict) -> None:  # noqa: F811
    ds = open_store(maps(tiny, {"kind": "top", "modes": "auto", "n": 2, "k": 3}, "auto-coherent"), "maps")
    assert "concentrated" in ds.attrs["auto_rule"]
    for r, cands in enumerate(ds.attrs["auto_candidates"]):
        drawn = list(ds.attrs["drawn"][r])
        values = {tuple(c[:4]): c[4] for c in cands}
        assert tuple(drawn) in values and values[tuple(drawn)] == max(values.values())
        filled = ds.slot_image.values[r] >= 0
        q, k = ds.q_map.values[r][filled], ds.k_map.values[r][filled]
        assert map_coherence(np.concatenate([q, k])) == pytest.approx(values[tuple(drawn)], abs=1e-4)


# ------------------------------------------------------------------------------------- claims page, report
def test_the_claims_page_labels_links_and_says_what_each_verdict_rests_on() -> None:
    d = np.linspace(0, 1, 12)
    falling = Curve(d, 1 - d)
    inp = Inputs(
        {"m": falling}, {"m": 0.01},
        preference={"m": {"same": falling, "different": Curve(d, d), "background": Curve(d, d)}},
        same_object={"m": falling}, datasets={"preference": "synthetic:32", "same_object": "synthetic:32"},
    )  # fmt: skip
    verdicts = {v.id: v for v in evaluate(inp)}
    assert "needs two models" in verdicts["7"].summary and "nan" not in verdicts["7"].summary
    assert set(verdicts["6b"].models["m"]) == {
        "background_early", "background_late", "different_early", "different_late", "holds"
    }  # fmt: skip
    page = claims_html(list(verdicts.values()))
    assert '<a href="../figures/fig3_weighted_cosine.png">' in page
    assert '<a href="../figures/fig6_same_object_synthetic.png">' in page
    assert "<th>background_early</th>" in page and "[0." not in page
    assert page.count("Rests on:") == len(verdicts)
    assert "synthetic scenes" in page and "not the paper&#x27;s 16 models" in page


def test_report_categories_are_numbered_without_gaps() -> None:
    cats = ["Fig. 3 a", "Fig. S3 b", "Fig. S4 c", "The paper's claims"]
    named = report_categories(cats, present=["Fig. 3 a", "Fig. S4 c", "The paper's claims"])
    assert [named[c][:2] for c in ("Fig. 3 a", "Fig. S4 c", "The paper's claims")] == ["01", "02", "03"]
    assert report_categories(cats) == report_categories(cats, present=cats)


def test_figure_notebooks_are_named_relative_to_the_working_directory(tmp_path: Path) -> None:
    notebook = tmp_path / "checkout/notebooks/fig3.ipynb"
    assert relative_if_inside(notebook, tmp_path / "checkout") == "notebooks/fig3.ipynb"
    assert relative_if_inside(notebook, tmp_path / "elsewhere") == str(notebook)  # another checkout: absolute
    common = (ROOT / "workflow" / "rules" / "common.smk").read_text()
    assert re.search(r"def notebook\(name\):.*?relative_if_inside\(.*?Path\.cwd\(\)\)", common, re.S)


def test_the_modes_of_a_random_layer_are_what_the_lean_path_computes() -> None:
    """The null's cosines skip U and V (cos_n = a_n^T Q_q^T Q_k b_n): equal to the full path's to rounding."""
    rng = np.random.default_rng(7)
    w_q, w_k = rng.standard_normal((2, 5, 30)), rng.standard_normal((2, 5, 30))
    cos, s = sc._random_cosines(w_q, w_k)
    u, s2, v = qk_modes_np(w_q, w_k)
    np.testing.assert_allclose(cos, sc.mode_cosines(u, v), atol=1e-12)
    np.testing.assert_allclose(s, s2, rtol=1e-12)
