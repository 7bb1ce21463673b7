"""Figures a reader can use at the paper's 16 models: Fig. 2, Fig. 3 and Fig. 6 drawn from 16 synthetic stores
with the paper's geometries (12/24/32 layers, widths 192 to 1280), built through the passes' own functions, keep
their legend off the axes, draw one null band per model width, print no text under 6 pt and fit a 7.5 in page;
S1 shares its y-scale; every image figure carries the colour key and names the numbers it prints."""

from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import xarray as xr

from qkdissect.catalogue import PAPER_MODELS
from qkdissect.core.preference import REGIONS, SOURCES, grouped, preference_table
from qkdissect.errors import QKDissectError
from qkdissect.passes.scores import compute_scores
from qkdissect.plots.images import gallery_figure, image_and_top_figure, image_modes_figure
from qkdissect.plots.layers import cosine_histogram_figure, layer_cosine_figure, spectrum_grid_figure
from qkdissect.plots.masks import preference_figure, same_object_figure
from qkdissect.plots.style import MIN_FONT, decimals
from qkdissect.stores import open_store
from qkdissect.stores.schema import modes_dataset, preference_dataset
from tests.helpers.figures import HEADS, PAGE, check_page, random_modes, same_object_store, texts
from tests.helpers.maps import maps, tiny  # noqa: F401 (a fixture)

#: (layers, width) of the paper's 16 models of Fig. 3
GEOMETRY = {
    "vit-base-patch16-224": (12, 768), "vit-base-patch32-384": (12, 768), "vit-large-patch16-224": (24, 1024),
    "vit-large-patch32-384": (24, 1024), "vit-huge-patch14-224-in21k": (32, 1280), "dino-vits16": (12, 384),
    "dino-vitb16": (12, 768), "clip-vit-base-patch16": (12, 768), "clip-vit-base-patch32": (12, 768),
    "clip-vit-large-patch14": (24, 1024), "deit-tiny-distilled-patch16-224": (12, 192),
    "deit-small-distilled-patch16-224": (12, 384), "deit-base-distilled-patch16-224": (12, 768),
    "simmim-vit-b16-pretrain": (12, 768), "simmim-vit-b16-finetune": (12, 768), "ijepa-vith14-encoder": (32, 1280),
}  # fmt: skip


@pytest.fixture(scope="module")
def paper_scores() -> list[xr.Dataset]:
    rng = np.random.default_rng(0)
    return [compute_scores(random_modes(name, *geom, rng)) for name, geom in GEOMETRY.items()]


def preference_store(name: str, n_layers: int, rng: np.random.Generator, n_images: int = 3) -> xr.Dataset:
    """A preference store from the pass's own functions on random attention rows and region masks (4 x 4 grid)."""
    masks = rng.dirichlet(np.ones(3), size=(n_images, 16)).transpose(0, 2, 1)  # (image, region, token)
    probs = rng.dirichlet(np.ones(16), size=(n_images, n_layers, HEADS, 2))
    table = preference_table(probs, masks)
    rows = np.tile([3, 12], (n_images, 1))
    crop = rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)
    attrs = {"model_id": name, "dataset": {"kind": "synthetic"}, "grid": [4, 4], "example": 0}
    ids = {"image_id": (("image",), np.array([f"synthetic:{i}" for i in range(n_images)], dtype=object))}
    return preference_dataset(table, rows, masks, grouped(table, rows >= 0), crop, SOURCES, REGIONS, ids, attrs)


def test_fig3_at_16_models_keeps_its_legend_off_the_axes_with_a_band_per_width(
    paper_scores: list[xr.Dataset], tmp_path: Path
) -> None:
    assert set(GEOMETRY) == set(PAPER_MODELS)  # the 16 models of Fig. 3
    fig = layer_cosine_figure(paper_scores)
    check_page(fig, tmp_path / "fig3.png")
    (ax,) = fig.axes
    widths = sorted({int(ds.attrs["d_model"]) for ds in paper_scores})
    assert widths == [192, 384, 768, 1024, 1280]
    bands = [p for p in ax.patches if (p.get_gid() or "").startswith("layer-null")]
    assert sorted(int(b.get_gid().split("-")[2].removeprefix("d")) for b in bands) == widths  # one per shape
    for band in bands:  # each band spans exactly the null of the plotted statistic for its shape
        d = int(band.get_gid().split("-")[2].removeprefix("d"))
        ds = next(s for s in paper_scores if s.attrs["d_model"] == d)
        ys = band.get_path().transformed(band.get_patch_transform()).vertices[:, 1]
        assert (ys.min(), ys.max()) == pytest.approx(tuple(ds.attrs["layer_null_weighted"]))
    labels = [t.get_text() for t in fig.legends[0].get_texts()]
    nulls = [label for label in labels if "null" in label]
    assert len(nulls) == len(widths) and all(label.startswith("95% null of this average") for label in nulls)
    assert set(GEOMETRY) <= set(labels)
    families = [labels.index(m) for m in ("vit-base-patch16-224", "dino-vits16", "clip-vit-base-patch16")]
    assert families == sorted(families)  # grouped by family in the paper's order
    plt.close(fig)


def test_fig2_and_fig6_at_16_models(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    pref = [preference_store(name, n, rng) for name, (n, _) in GEOMETRY.items()]
    fig = preference_figure(pref)
    check_page(fig, tmp_path / "fig2.png")
    assert all(ax.get_title(loc="center") and ax.title.get_fontsize() >= 8 for ax in fig.axes)  # panel A included
    plt.close(fig)
    same = [same_object_store(name, n, rng) for name, (n, _) in GEOMETRY.items()]
    fig = same_object_figure(same)
    check_page(fig, tmp_path / "fig6.png")
    (ax,) = fig.axes
    dotted = [line for line in ax.lines if (line.get_gid() or "").startswith("chance-")]
    assert len(dotted) == 16  # a chance line per model, at its stored level
    for line, ds in zip(dotted, same, strict=True):
        np.testing.assert_allclose(line.get_ydata(), ds.layer_chance.values)
        assert np.all((ds.layer_chance.values > 1 / 9) & (ds.layer_chance.values < 1 / 2 + 1e-12))
    assert any("chance" in t.get_text() for t in fig.legends[0].get_texts())
    plt.close(fig)
    old = same[0].drop_vars(["chance", "head_chance", "layer_chance"])
    with pytest.raises(QKDissectError, match=r"vit-base-patch16-224 hold no chance level.*rerun"):
        same_object_figure([old])


def test_s1_shares_its_scale_and_s2_prints_no_tiny_text(paper_scores: list[xr.Dataset], tmp_path: Path) -> None:
    ds = paper_scores[0]
    fig = cosine_histogram_figure(ds)
    visible = [ax for ax in fig.axes if ax.get_visible()]
    assert len({ax.get_ylim() for ax in visible}) == 1 and len(visible) == 12
    plt.close(fig)
    rng = np.random.default_rng(2)
    u, v = (np.linalg.qr(rng.normal(size=(12, 12, 96, 16)))[0] for _ in range(2))  # ViT-B's 12 x 12 heads
    s = np.sort(rng.uniform(0.1, 2.0, (12, 12, 16)))[..., ::-1]
    modes = modes_dataset(u, s, v, np.broadcast_to(np.arange(16), s.shape).copy(), {"model_id": "m", "d_head": 16})
    fig = spectrum_grid_figure(modes, compute_scores(modes))
    fig.savefig(tmp_path / "s2.png", dpi=60)
    assert min(t.get_fontsize() for t in texts(fig)) >= MIN_FONT and fig.get_size_inches()[0] <= PAGE
    grid = np.array([ax for ax in fig.axes if ax.get_ylim() == (-1.0, 1.0)]).reshape(12, 12)
    assert [ax.get_title() for ax in grid[0]] == [f"H{h}" for h in range(12)]  # every column and row labelled
    assert [ax.get_ylabel() for ax in grid[:, 0]] == [f"L{layer}" for layer in range(12)]
    # drawn fast at any size: one axes per panel, none shared or twinned (a ViT-H/14 has 512 panels), the
    # singular values on the right column's secondary axes, one scale per layer
    assert len(fig.axes) == 144 and all(len(ax.get_shared_x_axes().get_siblings(ax)) == 1 for ax in fig.axes)
    right = [ax.child_axes[0] for ax in grid[:, -1]]
    assert all(not ax.child_axes for ax in grid[:, :-1].flat) and len(right) == 12
    smax = modes.S.max(("head", "mode")).values
    np.testing.assert_allclose([r.get_ylim()[1] for r in right], 1.1 * smax)  # the top of each row's scale
    plt.close(fig)


def test_every_image_figure_has_the_colour_key_and_names_its_numbers(tiny: dict, tmp_path: Path) -> None:  # noqa: F811
    stores = {
        "gallery": maps(tiny, {"kind": "top", "modes": [[1, 2, 0], [2, 1, 3, "-"]], "k": 3}, "key-top"),
        "fig5": maps(tiny, {"kind": "image-modes", "image": "photo01.png", "n_modes": 2}, "key-f5"),
        "s17": maps(tiny, {"kind": "image-top", "image": "photo02.png", "k": 2}, "key-s17"),
    }
    opened = {k: open_store(p, "maps") for k, p in stores.items()}
    figs = {
        "gallery": gallery_figure([opened["gallery"]], title="t"),
        "fig5": image_modes_figure(opened["fig5"]),
        "s17": image_and_top_figure(opened["s17"]),
    }
    for name, fig in figs.items():
        fig.savefig(tmp_path / f"{name}.png", dpi=60)
        (key,) = fig.legends
        entries = [t.get_text() for t in key.get_texts()]
        assert entries == ["query map x·u (red)", "key map x·v (cyan)", "both (white)"], name
        assert [tuple(p.get_facecolor()[:3]) for p in key.legend_handles] == [(1, 0, 0), (0, 1, 1), (1, 1, 1)]
        words = [t.get_text() for t in texts(fig)]
        ds = opened[name]
        # every slot's number is printed with its name, and the key says what the name means
        shown = ds.slot_score.values
        if name == "s17":  # every row as long as the shortest (the image is left out of its own top images)
            shown = shown[:, : 1 + min(int((ds.slot_image.values[r] >= 0).sum()) - 1 for r in range(ds.sizes["row"]))]
        scored = shown[np.isfinite(shown)]
        prefix = "contrib." if name == "fig5" else "score"
        places = decimals(scored)  # one precision per figure
        for value in scored:
            assert any(f"{prefix} {value:.{places}f}" in w for w in words), (name, value)
        assert key.get_title().get_text().count(f"{prefix}:") == 1
        for r in range(ds.sizes["row"]):
            assert any(f"{ds.cosine.values[r]:+.2f}" in w or f"{ds.cosine.values[r]:.3f}" in w for w in words)
        assert min(t.get_fontsize() for t in texts(fig)) >= MIN_FONT
        assert fig.get_figwidth() <= PAGE
        plt.close(fig)
    assert "(-): the mode with the opposite sign" in figs["gallery"].legends[0].get_title().get_text()


def test_the_released_null_lines_sit_next_to_the_exact_bands(paper_scores: list[xr.Dataset]) -> None:
    """null_lines both: a band and a dashed pair per width, the pair at +- the released notebook's baseline."""
    fig = layer_cosine_figure(paper_scores, null_lines="both")
    ax = fig.axes[0]
    widths = sorted({int(ds.attrs["d_model"]) for ds in paper_scores})
    released = {int(ds.attrs["d_model"]): float(ds.attrs["null_released"]) for ds in paper_scores}
    for d in widths:
        assert any(str(p.get_gid()).startswith(f"layer-null-d{d}-") for p in ax.patches)
        dashed = [ln for ln in ax.lines if ln.get_gid() == f"released-null-d{d}"]
        assert len(dashed) == 1 and dashed[0].get_ydata()[0] == pytest.approx(-released[d])
    plt.close(fig)
    only = layer_cosine_figure(paper_scores, null_lines="released")
    assert not [p for p in only.axes[0].patches if str(p.get_gid()).startswith("layer-null")]
    plt.close(only)
    old = paper_scores[0].copy()
    del old.attrs["null_released"]
    with pytest.raises(ValueError, match=r"no released-code baseline .* rerun its scores"):
        layer_cosine_figure([old], null_lines="released")
    for f in (cosine_histogram_figure(paper_scores[0], null_lines="both"),
              spectrum_grid_figure(random_modes("m", 2, 192, np.random.default_rng(1)), paper_scores[10],
                                   null_lines="released")):  # fmt: skip
        assert any(str(ln.get_gid()).startswith("released-null") for a in f.axes for ln in a.lines)
        plt.close(f)
