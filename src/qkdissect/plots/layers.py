"""Per-layer figures of the scores stores: Fig. 3 (and its unweighted variant), S1 (cosine histograms), S2 (the
layer x head grid of spectra), S3 (I-JEPA encoder vs predictor), S4 (anisotropy), and, beyond the paper, raw vs
LayerNorm-folded modes."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.ticker import MaxNLocator

from ..options import NullLines
from ..stores.schema import layer_null_interval
from .style import MIN_FONT, PAGE_WIDTH, Entry, Style, depth_axis, legend_outside, model_style


def _shape(ds: xr.Dataset) -> tuple[int, int, int, int]:
    """What the layer null depends on: d_model, query heads, modes per head, key heads."""
    shape = ds.attrs.get("layer_null_shape") or {}
    key_heads = int(shape.get("key_heads", ds.sizes["head"]))
    return int(ds.attrs["d_model"]), int(ds.sizes["head"]), int(ds.sizes["mode"]), key_heads


def _shape_label(shape: tuple[int, int, int, int]) -> str:
    d, heads, modes, kv = shape
    grouped = f", {kv} key heads" if kv != heads else ""
    return f"d={d}, {heads}×{modes} modes{grouped}"


def null_bands(ax: plt.Axes, stores: Sequence[xr.Dataset], weighted: bool = True) -> list[Entry]:
    """One band per distinct model shape (d_model, heads, modes per head, key heads): the null interval of the
    plotted layer statistic (:func:`~qkdissect.stores.schema.layer_null_interval`: random Gaussian layers of that
    shape), the widest band lightest and underneath the narrower, darker ones; and their legend entries, labelled
    by the shape."""
    by_shape: dict[tuple[int, int, int, int], tuple[float, float]] = {}
    for ds in stores:
        by_shape.setdefault(_shape(ds), layer_null_interval(ds, weighted))
    shapes = sorted(by_shape, key=lambda k: by_shape[k][0] - by_shape[k][1])  # widest first
    greys = plt.get_cmap("Greys")(np.linspace(0.3, 0.6, len(shapes)) if len(shapes) > 1 else [0.45])
    level = _level(stores[0])
    entries: list[Entry] = []
    for shape, grey in zip(shapes, greys, strict=True):
        low, high = by_shape[shape]
        band = ax.axhspan(low, high, color=grey, lw=0, zorder=0)
        band.set_gid(f"layer-null-d{shape[0]}-h{shape[1]}-m{shape[2]}-k{shape[3]}")
        bound = f"{low:+.3f} to {high:+.3f}"
        entries.append((band, f"{level} null of this average ({bound}):\nrandom weights, {_shape_label(shape)}"))
    ax.axhline(0, color="0.5", lw=0.5, zorder=0)
    return entries


def _released(ds: xr.Dataset) -> float:
    """The released notebook's baseline of a scores store (paper 1.4, bug B3)."""
    if "null_released" not in ds.attrs:
        raise ValueError(
            f"the scores store of {ds.attrs.get('model_id')} has no released-code baseline (written by an older "
            "qkdissect): rerun its scores (snakemake --forcerun scores)"
        )
    return float(ds.attrs["null_released"])


def released_lines(ax: plt.Axes, stores: Sequence[xr.Dataset], vertical: bool = False, **style: Any) -> list[Entry]:
    """Dashed lines at +-the released notebook's baseline, one pair per distinct model width, as the published
    plots draw them; and their legend entries."""
    by_width: dict[int, float] = {}
    for ds in stores:
        by_width.setdefault(int(ds.attrs["d_model"]), _released(ds))
    entries: list[Entry] = []
    line = ax.axvline if vertical else ax.axhline
    for d, v in sorted(by_width.items()):
        for sign in (1, -1):
            kw: dict[str, Any] = {"ls": "--", "lw": 0.7, "zorder": 1, "color": "0.35", **style}
            artist = line(sign * v, **kw)
        artist.set_gid(f"released-null-d{d}")
        entries.append((artist, f"released code's baseline ±{v:.3f}, d={d}"))
    return entries


def layer_cosine_figure(
    stores: Sequence[xr.Dataset],
    *,
    weighted: bool = True,
    styles: Mapping[str, Style] | None = None,
    null_lines: NullLines = "exact",
) -> plt.Figure:
    """Fig. 3 of the paper: per-layer (weighted) cosine between query- and key-side singular vectors against
    normalised depth, one line per model in the paper's colour and line style per family, over the null of the
    plotted statistic for each model shape (:func:`null_bands`; ``null_lines``: ``released`` draws the released
    notebook's dashed per-mode baseline instead, ``both`` both); the legend right of the axes, the models grouped
    by family."""
    if not stores:
        raise ValueError("layer_cosine_figure needs at least one scores store")
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH, 4.5), layout="constrained")
    lines: list[Entry] = []
    for ds in stores:
        key = str(ds.attrs.get("model_id"))
        st = model_style(key, (styles or {}).get(key))
        y = ds.layer_weighted if weighted else ds.layer_mean
        (line,) = ax.plot(ds.depth.values, y.values, markersize=2, lw=1.2, **st)
        lines.append((line, str(st["label"])))
    bands = null_bands(ax, stores, weighted) if null_lines != "released" else []
    if null_lines != "exact":
        bands += released_lines(ax, stores)
    depth_axis(ax)
    ax.set_ylabel(
        "Weighted cosine similarity" if weighted else "Cosine similarity (unweighted mean over modes)", fontsize=9
    )
    ax.tick_params(labelsize=8)
    legend_outside(fig, lines, bands, where="right")
    return fig


FOLDING_STYLES = {
    "raw": {"color": "k", "linestyle": "-", "label": r"raw  $W_q^\top W_k$ (paper)"},
    "folded": {
        "color": "tab:blue",
        "linestyle": "--",
        "label": r"folded  $\mathrm{diag}(\gamma)\, W_q^\top W_k\, "
        r"\mathrm{diag}(\gamma)$",
    },
    "folded-centred": {
        "color": "tab:orange",
        "linestyle": ":",
        "label": r"folded + centred  $P\, \mathrm{diag}("
        r"\gamma) \cdots \mathrm{diag}(\gamma)\, P$",
    },
}
#: two lines of a panel closer than this everywhere coincide on the page: the panel says so
COINCIDE = 0.01


def folding_figure(stores: Mapping[str, Mapping[str, xr.Dataset]], *, ncols: int = 4) -> plt.Figure:
    """Beyond the paper: per model, the weighted layer cosine of its raw, norm-folded and folded-centred modes
    against normalised depth (``stores[model][folding]`` are scores stores), with the null band. An RMS norm has no
    centring (its folded-centred store says so, attrs ``norm``): its folded-centred line, the folded one, is not
    drawn twice; the panel says why, and says so where the folded and folded-centred lines coincide
    (:func:`_coincide_note`)."""
    if not stores:
        raise ValueError("folding_figure needs at least one model")
    nrows, ncols = _grid(len(stores), ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(PAGE_WIDTH if ncols > 1 else 4.5, 2.3 * nrows + 1.2), sharex=True, sharey=True,
        squeeze=False, layout="constrained",
    )  # fmt: skip
    entries: dict[str, Entry] = {}
    for ax, (model, by_folding) in zip(axes.flat, stores.items(), strict=False):
        uncentred = [f for f, ds in by_folding.items() if f == "folded-centred" and not _centres(ds)]
        order = sorted(by_folding, key=lambda f: list(FOLDING_STYLES).index(f) if f in FOLDING_STYLES else 99)
        for folding in (f for f in order if f not in uncentred):
            ds = by_folding[folding]
            st = FOLDING_STYLES.get(folding, {"label": folding})
            (line,) = ax.plot(ds.depth.values, ds.layer_weighted.values, marker="o", ms=2, lw=1.1, **st)
            entries.setdefault(str(st["label"]), (line, str(st["label"])))
        for band, label in null_bands(ax, list(by_folding.values())):
            entries.setdefault(label, (band, label))
        note = _coincide_note(by_folding, uncentred)
        if note:
            ax.text(0.98, 0.96, note, transform=ax.transAxes, ha="right", va="top", fontsize=MIN_FONT, color="0.3",
                    bbox={"fc": "white", "ec": "0.8", "lw": 0.5, "alpha": 0.9})  # fmt: skip
        ax.set_title(model, fontsize=8)
        ax.set_xlim(0, 1)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(stores) :]:
        ax.set_visible(False)
    for ax in axes[-1]:
        depth_axis(ax, fontsize=8)
    fig.suptitle("Weighted layer cosine: raw vs norm-folded modes (LayerNorm or RMSNorm)", fontsize=9)
    fig.supylabel("Weighted cosine similarity", fontsize=8)
    legend_outside(fig, [], list(entries.values()), where="below", fontsize=7)
    return fig


def _coincide_note(by_folding: Mapping[str, xr.Dataset], uncentred: Sequence[str]) -> str:
    """Why a panel shows fewer lines than foldings: an RMS norm has no centring (folded + centred is the folded
    line), or the folded and folded-centred lines differ by less than :data:`COINCIDE` at every layer (centring
    removes the mean direction, which the modes barely use) and one hides the other."""
    if uncentred:
        module = by_folding["folded-centred"].attrs["norm"].get("module", "RMS norm")
        return f"{module}: no centring\n(folded + centred = folded)"
    if {"folded", "folded-centred"} <= set(by_folding):
        gap = float(
            np.nanmax(np.abs(by_folding["folded"].layer_weighted - by_folding["folded-centred"].layer_weighted))
        )
        if gap < COINCIDE:
            return f"folded + centred ≈ folded\n(at most {gap:.3f} apart):\nthe dotted line covers the dashed"
    return ""


def _centres(scores: xr.Dataset) -> bool:
    """Whether the norm a folded store folded centres (a LayerNorm; stores without ``norm`` attrs are LayerNorm's)."""
    return bool(scores.attrs.get("norm", {}).get("centring", True))


def _null_note(scores: xr.Dataset, null_lines: NullLines, exact: str) -> str:
    """What the null lines of a panel figure are, for its title."""
    notes = {"exact": f"{exact}: per-mode null {_level(scores)}", "released": "dashed: the released code's baseline"}
    return "; ".join(v for k, v in notes.items() if null_lines in (k, "both"))


def _level(scores: xr.Dataset) -> str:
    return f"{float(scores.attrs.get('null_level', 0.95)):.0%}"


def _hide_empty(axes: np.ndarray, n: int) -> None:
    """Hide the panels after the first ``n`` of a shared-x grid; a panel above a hidden one labels its x ticks (it
    is the last of its column)."""
    nrows, ncols = axes.shape
    for i in range(n, nrows * ncols):
        axes.flat[i].set_visible(False)
        if i - ncols >= 0:
            axes.flat[i - ncols].tick_params(labelbottom=True)


def _label_grid(fig: plt.Figure, title: str, xlabel: str, ylabel: str, fontsize: float) -> None:
    fig.suptitle(title, fontsize=fontsize)
    fig.supxlabel(xlabel, fontsize=fontsize)
    fig.supylabel(ylabel, fontsize=fontsize)


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def cosine_histogram_figure(
    scores: xr.Dataset, *, ncols: int = 4, bins: int = 40, null_lines: NullLines = "exact"
) -> plt.Figure:
    """Fig. S1: for each layer, the histogram of cos(u_n, v_n) over all heads and modes, on one y-scale for every
    layer (each holds the same number of modes, so the layers compare); colour runs from yellow (early) to blue
    (late); red lines mark the per-mode null interval."""
    cos = scores.cosine.values  # (layer, head, mode)
    n_layers = cos.shape[0]
    nrows, ncols = _grid(n_layers, ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(1.75 * ncols, 1.45 * nrows + 0.5), sharex=True, sharey=True, squeeze=False
    )
    lo, hi = float(scores.attrs["null_low"]), float(scores.attrs["null_high"])
    edges = np.linspace(-1, 1, bins + 1)
    cmap = plt.get_cmap("viridis_r")
    for layer in range(n_layers):
        ax = axes.flat[layer]
        vals = cos[layer].ravel()
        ax.hist(vals, bins=edges, color=cmap(layer / max(1, n_layers - 1)), edgecolor="none")
        if null_lines != "released":
            for x in (lo, hi):
                ax.axvline(x, color="red", lw=0.8)
        if null_lines != "exact":
            released_lines(ax, [scores], vertical=True, color="red")
        ax.axvline(float(np.mean(vals)), color="k", lw=0.8, ls="--")
        ax.set_title(f"Layer {layer}", fontsize=8, pad=2)
        ax.tick_params(labelsize=6)
    _hide_empty(axes, n_layers)
    _label_grid(
        fig,
        f"{scores.attrs.get('model_id', '')}: per-mode cosine of query and key singular vectors "
        f"({_null_note(scores, null_lines, 'red')}; black dashed: mean)",
        "cos(u_n, v_n)",
        "modes (all heads)",
        fontsize=8,
    )
    fig.tight_layout()
    return fig


#: S2's margins in inches: row labels and the cosine ticks (left), the singular-value ticks (right), the title
#: and head labels (top), the mode ticks and axis label (bottom)
S2_MARGINS = {"left": 0.62, "right": 0.36, "top": 0.62, "bottom": 0.36}
#: inches: the lowest S2 panel (its cosine tick labels -1, 0, 1 at 6 pt, with room between rows)
S2_LOWEST = 0.5
S2_TICKS: dict[str, Any] = {"labelsize": MIN_FONT, "pad": 1, "length": 1.5}


def spectrum_grid_figure(
    modes: xr.Dataset,
    scores: xr.Dataset,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
    null_lines: NullLines = "exact",
) -> plt.Figure:
    """Fig. S2: rows = layers, columns = heads, at page width (12 x 12 heads of a ViT-B fit one page); per panel
    the singular values (blue x, right axis, one scale per layer: the layer's largest) and the per-mode cosine (red
    dots, left axis, [-1, 1]) with the null interval dotted. Rows are labelled by layer at the left, columns by
    head at the top; tick labels sit on the outer panels only.

    Drawn for speed at any size (a ViT-H/14 has 512 panels): axes neither shared nor twinned (matplotlib relays
    every limit between shared axes, quadratic in their number), fixed limits and margins (no layout engine); the
    singular values are drawn on the cosine axes scaled per layer, and the right column's secondary axis reads
    them in their own units."""
    layers = list(range(modes.sizes["layer"])) if layers is None else list(layers)
    heads = list(range(modes.sizes["head"])) if heads is None else list(heads)
    s, cos = modes.S.values, scores.cosine.values
    nrows, ncols = len(layers), len(heads)
    fig, axes = _panel_grid(nrows, ncols, n_modes=s.shape[-1])
    x = np.arange(s.shape[-1])
    for i, layer in enumerate(layers):
        top = 1.1 * (float(s[layer].max()) or 1.0)  # one scale per layer (row): the right column labels it
        for j, head in enumerate(heads):
            ax = axes[i, j]
            ax.plot(x, cos[layer, head], ".", color="firebrick", ms=1.0)
            ax.plot(x, 2.0 * s[layer, head] / top - 1.0, "x", color="royalblue", ms=1.0, mew=0.4)
            _null_marks(ax, scores, null_lines)
        _singular_value_axis(axes[i, -1], top)
        axes[i, 0].set_ylabel(f"L{layer}", fontsize=MIN_FONT + 1, rotation=0, ha="right", va="center", labelpad=6)
    for j, head in enumerate(heads):
        axes[0, j].set_title(f"H{head}", fontsize=MIN_FONT + 1, pad=1.5)
    _label_grid(
        fig,
        f"{modes.attrs.get('model_id', '')}: per-mode cosine (red, left axes) and singular value (blue, right "
        f"axes, one scale per layer)\n{_null_note(scores, null_lines, 'dotted')}",
        "Mode",
        "Layer (rows) x head (columns)",
        fontsize=MIN_FONT + 1,
    )
    return fig


def _panel_grid(nrows: int, ncols: int, n_modes: int) -> tuple[plt.Figure, np.ndarray]:
    """S2's figure and its (nrows, ncols) panels: cosine limits [-1, 1], the modes' range, tick labels on the
    outer panels only, fixed margins (:data:`S2_MARGINS`)."""
    panel = (PAGE_WIDTH - 1.0) / ncols  # inches per panel, wide
    tall = max(0.7 * panel, S2_LOWEST)  # the -1, 0, 1 labels of neighbouring rows must not meet
    width, height = PAGE_WIDTH, tall * nrows + 1.0
    m = S2_MARGINS
    fig = plt.figure(figsize=(width, height))
    grid = fig.add_gridspec(
        nrows, ncols, left=m["left"] / width, right=1 - m["right"] / width, top=1 - m["top"] / height,
        bottom=m["bottom"] / height, wspace=0.08, hspace=0.25,
    )  # fmt: skip
    axes = grid.subplots(sharex=False, sharey=False, squeeze=False)
    pad = 0.05 * max(1, n_modes - 1)
    for (i, j), ax in np.ndenumerate(axes):
        ax.set_autoscale_on(False)
        ax.set(xlim=(-pad, n_modes - 1 + pad), ylim=(-1, 1), yticks=[-1, 0, 1])
        ax.xaxis.set_major_locator(MaxNLocator(2, integer=True))
        ax.tick_params(**S2_TICKS, labelleft=j == 0, labelbottom=i == nrows - 1)
    return fig, axes


def _null_marks(ax: plt.Axes, scores: xr.Dataset, null_lines: NullLines) -> None:
    if null_lines != "released":
        ax.hlines([float(scores.attrs["null_low"]), float(scores.attrs["null_high"])], 0, 1,
                  transform=ax.get_yaxis_transform(), color="0.3", lw=0.4, ls=":")  # fmt: skip
    if null_lines != "exact":
        released_lines(ax, [scores], lw=0.4)


def _singular_value_axis(ax: plt.Axes, top: float) -> None:
    """The right-hand axis of a row's last panel, in singular-value units: 0 at the bottom, ``top`` at the top."""

    def to_value(y: Any) -> Any:
        return (np.asarray(y) + 1.0) * top / 2.0

    def to_cosine(v: Any) -> Any:
        return 2.0 * np.asarray(v) / top - 1.0

    sec = ax.secondary_yaxis("right", functions=(to_value, to_cosine))
    sec.yaxis.set_major_locator(MaxNLocator(1))
    sec.tick_params(**S2_TICKS)


def encoder_predictor_figure(encoder: xr.Dataset, predictor: xr.Dataset) -> plt.Figure:
    """Fig. S3: weighted and plain layer cosine of the I-JEPA encoder and predictor vs normalised depth, each
    with the null band of the plotted statistic for its shape
    (:func:`~qkdissect.stores.schema.layer_null_interval`; their widths differ)."""
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.2), sharey=True)
    parts = [(encoder, "encoder", "tab:olive"), (predictor, "predictor", "tab:purple")]
    for ax, weighted in zip(axes, (True, False), strict=True):
        for ds, label, color in parts:
            y = ds.layer_weighted if weighted else ds.layer_mean
            ax.plot(ds.depth.values, y.values, "o-", ms=2.5, lw=1.2, color=color, label=f"{label} (d={ds.d_model})")
            ax.axhspan(*layer_null_interval(ds, weighted), color=color, alpha=0.2, zorder=0)
        ax.axhline(0, color="0.5", lw=0.5)
        ax.set_xlim(0, 1)
        ax.set_xlabel("Normalised layer  l/(L-1)")
        ax.set_title("singular-value weighted" if weighted else "unweighted", fontsize=9)
    axes[0].set_ylabel("Cosine similarity")
    axes[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def anisotropy_figure(items: Sequence[tuple[xr.Dataset, xr.Dataset]]) -> plt.Figure:
    """S4: (A) mean cosine between the centre tokens of different images per layer; (B) the layer cosine of the
    query/key singular vectors minus (A), weighted (full line) and plain (faint line, same style).
    ``items``: (projections, scores) per model. The legend sits below the panels, the models grouped by family."""
    fig, (a, b) = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 3.6), layout="constrained")
    lines: list[Entry] = []
    for proj, sc in items:
        st = model_style(str(proj.attrs["model_id"]))
        depth = sc.depth.values
        (line,) = a.plot(depth, proj.anisotropy.values, markersize=2, **st)
        lines.append((line, str(st.pop("label"))))
        st["color"] = line.get_color()  # a model outside the catalogue: the colour the cycle gave it in A
        b.plot(depth, sc.layer_weighted.values - proj.anisotropy.values, markersize=2, **st)
        b.plot(depth, sc.layer_mean.values - proj.anisotropy.values, markersize=1, lw=0.8, alpha=0.45, **st)
    n = items[0][0].attrs["images"]["valid"]
    a.set_title(f"A: centre-token cosine between images\n({n} images, {items[0][0].attrs['token_source']} tokens)",
                fontsize=8)  # fmt: skip
    b.set_title("B: layer cosine minus A\n(full line: weighted, faint: plain mean over modes)", fontsize=8)
    for ax in (a, b):
        ax.axhline(0, color="0.5", lw=0.5)
        depth_axis(ax, fontsize=8)
        ax.tick_params(labelsize=7)
    a.set_ylabel("Cosine similarity", fontsize=8)
    b.set_ylabel("Layer cosine minus centre-token cosine", fontsize=8)
    legend_outside(fig, lines, where="below")
    return fig
