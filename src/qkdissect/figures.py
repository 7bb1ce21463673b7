"""Figures: data in, matplotlib figure out. The notebooks under ``notebooks/`` call these; so does the CLI.

- :func:`layer_cosine_figure` — Fig. 3 (and its unweighted variant): per-layer cosine vs normalised depth.
- :func:`cosine_histogram_figure` — Fig. S1: per-layer histograms of the per-mode cosines with the null interval.
- :func:`spectrum_grid_figure` — Fig. S2: layer x head grid of the singular spectrum and the per-mode cosine.
- :func:`encoder_predictor_figure` — Fig. S3: I-JEPA encoder vs predictor.
- :func:`save_figure` — PNG + PDF (+ a provenance sidecar), written atomically.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.layout_engine import ConstrainedLayoutEngine

from .registry import KNOWN_MODELS

Style = Mapping[str, Any]


def model_style(name: str, override: Style | None = None) -> dict[str, Any]:
    """Colour, line style and marker of a model: the paper's per family (registry), then any override."""
    known = KNOWN_MODELS.get(name)
    style: dict[str, Any] = {
        "color": known.color if known else None,
        "linestyle": known.linestyle if known else "-",
        "marker": known.marker if known else None,
        "label": name,
    }
    style.update({k: v for k, v in (override or {}).items() if v is not None})
    return style


def _null_band(ax: plt.Axes, stores: Sequence[xr.Dataset]) -> None:
    # the widest null band (smallest d_model among the models), labelled with the d it belongs to
    ref = min(stores, key=lambda ds: int(ds.attrs["d_model"]))
    hi = float(ref.attrs["null_high"])
    ax.axhspan(-hi, hi, color="0.88", zorder=0, label=f"per-mode null {_level(ref)} (d={int(ref.attrs['d_model'])})")
    ax.axhline(0, color="0.5", lw=0.5, zorder=0)


def layer_cosine_figure(
    stores: Sequence[xr.Dataset], *, weighted: bool = True, styles: Mapping[str, Style] | None = None
) -> plt.Figure:
    """Fig. 3 of the paper: per-layer (weighted) cosine between query- and key-side singular vectors
    against normalised depth, one line per model, in the paper's colour and line style per family."""
    if not stores:
        raise ValueError("layer_cosine_figure needs at least one scores store")
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for ds in stores:
        key = str(ds.attrs.get("model_id"))
        st = model_style(key, (styles or {}).get(key))
        y = ds.layer_weighted if weighted else ds.layer_mean
        ax.plot(ds.depth.values, y.values, markersize=2, lw=1.2, **st)
    _null_band(ax, stores)
    ax.set_xlabel("Normalised layer  l/(L-1)")
    ax.set_ylabel("Weighted cosine similarity" if weighted else "Cosine similarity")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=6, loc="upper right", frameon=False)
    fig.tight_layout()
    return fig


FOLDING_STYLES = {
    "raw": {"color": "k", "linestyle": "-", "label": "raw  W_q^T W_k (paper)"},
    "folded": {"color": "tab:blue", "linestyle": "--", "label": "folded  diag(γ) W_q^T W_k diag(γ)"},
    "folded-centred": {"color": "tab:orange", "linestyle": ":", "label": "folded + centred  P diag(γ)…diag(γ) P"},
}


def folding_figure(stores: Mapping[str, Mapping[str, xr.Dataset]], *, ncols: int = 4) -> plt.Figure:
    """Beyond the paper: per model, the weighted layer cosine of its raw, LayerNorm-folded and folded-centred
    modes against normalised depth (``stores[model][folding]`` are scores stores), with the null band."""
    if not stores:
        raise ValueError("folding_figure needs at least one model")
    nrows, ncols = _grid(len(stores), ncols)
    fig, axes = plt.subplots(
        nrows, ncols, figsize=(max(4.5, 3.0 * ncols), 2.6 * nrows + 0.8), sharex=True, sharey=True, squeeze=False
    )
    for ax, (model, by_folding) in zip(axes.flat, stores.items(), strict=False):
        order = sorted(by_folding, key=lambda f: list(FOLDING_STYLES).index(f) if f in FOLDING_STYLES else 99)
        for folding in order:
            ds = by_folding[folding]
            st = FOLDING_STYLES.get(folding, {"label": folding})
            ax.plot(ds.depth.values, ds.layer_weighted.values, marker="o", ms=2, lw=1.1, **st)
        _null_band(ax, list(by_folding.values()))
        ax.set_title(model, fontsize=8)
        ax.set_xlim(0, 1)
    for ax in list(axes.flat)[len(stores) :]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=5.5, frameon=False, loc="upper right")
    title = "Weighted layer cosine: raw vs LayerNorm-folded modes"
    _label_grid(fig, title, "Normalised layer  l/(L-1)", "Weighted cosine similarity", fontsize=8)
    fig.tight_layout()
    return fig


TERM_STYLES = {
    "token": {"color": "k", "label": "token-token (the modes)"},
    "query_bias": {"color": "tab:red", "label": "query bias  b_q^T W_k x_j"},
    "key_bias": {"color": "tab:green", "label": "key bias  x_i^T W_q^T b_k"},
    "constant": {"color": "0.6", "label": "constant  b_q^T b_k"},
}


def logit_terms_figure(stores: Sequence[xr.Dataset]) -> plt.Figure:
    """Beyond the paper, one row per model (logits stores): A, the share of logit variance of each term per layer
    (solid: within query rows, what the softmax sees; dashed: over all pairs); B, the share of the token-token
    term's within-row variance that the top-k modes capture; C, the share of the winning keys' margin carried by
    modes with cos(u, v) > 0, against their share of the singular values."""
    if not stores:
        raise ValueError("logit_terms_figure needs at least one logits store")
    fig, axes = plt.subplots(len(stores), 3, figsize=(10, 2.7 * len(stores) + 0.5), squeeze=False)
    for row, ds in zip(axes, stores, strict=True):
        x = ds.depth.values
        a, b, c = row
        for term, st in TERM_STYLES.items():
            for scope, ls in (("rows", "-"), ("pairs", "--")):
                y = ds.share.sel(scope=scope, term=term).mean("head").values
                a.plot(x, y, ls=ls, marker="o", ms=2, lw=1, color=st["color"], label=st["label"] if ls == "-" else None)
        a.set_ylabel(f"{ds.attrs['model_id']}\nshare of logit variance", fontsize=8)
        a.set_title("A: logit terms (solid: within rows, dashed: all pairs)", fontsize=8)
        cmap = plt.get_cmap("viridis")
        ks = list(ds.k.values)
        for i, k in enumerate(ks):
            b.plot(x, ds.explained.sel(k=k).mean("head").values, marker="o", ms=2, lw=1,
                   color=cmap(i / max(1, len(ks) - 1)), label=f"top {k}")  # fmt: skip
        b.set_ylim(min(0.0, float(ds.explained.mean("head").min())), 1.02)
        b.set_title("B: token-token variance captured by the top-k modes", fontsize=8)
        c.plot(x, ds.winning_positive.mean("head").values, "o-", ms=2, lw=1.2, color="tab:purple",
               label="winning margin from cos > 0 modes")  # fmt: skip
        c.plot(x, ds.sigma_positive.mean("head").values, "o--", ms=2, lw=1, color="0.5",
               label="singular values in cos > 0 modes")  # fmt: skip
        c.axhline(0.5, color="0.8", lw=0.5)
        c.set_title("C: who wins the softmax", fontsize=8)
        for ax in row:
            ax.set_xlim(0, 1)
            ax.tick_params(labelsize=7)
        for ax in (a, b, c):
            ax.legend(fontsize=5.5, frameon=False)
    for ax in axes[-1]:
        ax.set_xlabel("Normalised layer  l/(L-1)", fontsize=8)
    fig.tight_layout()
    return fig


def _level(scores: xr.Dataset) -> str:
    return f"{float(scores.attrs.get('null_level', 0.95)):.0%}"


def _label_grid(fig: plt.Figure, title: str, xlabel: str, ylabel: str, fontsize: float) -> None:
    fig.suptitle(title, fontsize=fontsize)
    fig.supxlabel(xlabel, fontsize=fontsize)
    fig.supylabel(ylabel, fontsize=fontsize)


def _grid(n: int, ncols: int) -> tuple[int, int]:
    ncols = max(1, min(ncols, n))
    return math.ceil(n / ncols), ncols


def cosine_histogram_figure(scores: xr.Dataset, *, ncols: int = 4, bins: int = 40) -> plt.Figure:
    """Fig. S1: for each layer, the histogram of cos(u_n, v_n) over all heads and modes; colour runs from
    yellow (early) to blue (late); red lines mark the per-mode null interval."""
    cos = scores.cosine.values  # (layer, head, mode)
    n_layers = cos.shape[0]
    nrows, ncols = _grid(n_layers, ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(1.9 * ncols, 1.45 * nrows + 0.5), sharex=True, squeeze=False)
    lo, hi = float(scores.attrs["null_low"]), float(scores.attrs["null_high"])
    edges = np.linspace(-1, 1, bins + 1)
    cmap = plt.get_cmap("viridis_r")
    for layer in range(n_layers):
        ax = axes.flat[layer]
        vals = cos[layer].ravel()
        ax.hist(vals, bins=edges, color=cmap(layer / max(1, n_layers - 1)), edgecolor="none")
        for x in (lo, hi):
            ax.axvline(x, color="red", lw=0.8)
        ax.axvline(float(np.mean(vals)), color="k", lw=0.8, ls="--")
        ax.set_title(f"Layer {layer}", fontsize=8, pad=2)
        ax.tick_params(labelsize=6)
    for ax in list(axes.flat)[n_layers:]:
        ax.set_visible(False)
    _label_grid(
        fig,
        f"{scores.attrs.get('model_id', '')}: per-mode cosine of query and key singular vectors "
        f"(red: null {_level(scores)}, dashed: mean)",
        "cos(u_n, v_n)",
        "modes (all heads)",
        fontsize=8,
    )
    fig.tight_layout()
    return fig


def spectrum_grid_figure(
    modes: xr.Dataset,
    scores: xr.Dataset,
    *,
    layers: Sequence[int] | None = None,
    heads: Sequence[int] | None = None,
) -> plt.Figure:
    """Fig. S2: rows = layers, columns = heads; per panel the singular values (blue x, right axis, scaled to the
    layer's largest) and the per-mode cosine (red dots, left axis, [-1, 1]) with the null interval dotted."""
    layers = list(range(modes.sizes["layer"])) if layers is None else list(layers)
    heads = list(range(modes.sizes["head"])) if heads is None else list(heads)
    s = modes.S.values
    cos = scores.cosine.values
    lo, hi = float(scores.attrs["null_low"]), float(scores.attrs["null_high"])
    nrows, ncols = len(layers), len(heads)
    fig, axes = plt.subplots(
        nrows,
        ncols,
        figsize=(1.5 * ncols + 0.8, 1.05 * nrows + 0.8),
        sharex=True,
        sharey=True,
        squeeze=False,
        layout=ConstrainedLayoutEngine(w_pad=0.01, h_pad=0.01, hspace=0.02, wspace=0.02),
    )
    x = np.arange(s.shape[-1])
    for i, layer in enumerate(layers):
        smax = float(s[layer].max()) or 1.0
        for j, head in enumerate(heads):
            ax = axes[i, j]
            ax.plot(x, cos[layer, head], ".", color="firebrick", ms=1.5)
            for y in (lo, hi):
                ax.axhline(y, color="0.3", lw=0.6, ls=":")
            ax.set_ylim(-1, 1)
            tw = ax.twinx()
            tw.plot(x, s[layer, head], "x", color="royalblue", ms=1.5, mew=0.5)
            tw.set_ylim(0, 1.1 * smax)
            tw.tick_params(labelsize=4, pad=1, length=1.5)
            if j != ncols - 1:
                tw.set_yticklabels([])
            ax.tick_params(labelsize=4, pad=1, length=1.5)
            ax.set_title(f"L{layer} H{head}", fontsize=5, pad=1)
    _label_grid(
        fig,
        f"{modes.attrs.get('model_id', '')}: per-mode cosine (red, left axis) and singular value (blue, right "
        f"axis); dotted: null {_level(scores)}",
        "Mode",
        "Cosine similarity (red)  |  singular value (blue, right axes)",
        fontsize=7,
    )
    return fig


def encoder_predictor_figure(encoder: xr.Dataset, predictor: xr.Dataset) -> plt.Figure:
    """Fig. S3: weighted and plain layer cosine of the I-JEPA encoder and predictor vs normalised depth, each
    with its own null band (their widths differ)."""
    fig, axes = plt.subplots(1, 2, figsize=(7, 3.2), sharey=True)
    parts = [(encoder, "encoder", "tab:olive"), (predictor, "predictor", "tab:purple")]
    for ax, weighted in zip(axes, (True, False), strict=True):
        for ds, label, color in parts:
            y = ds.layer_weighted if weighted else ds.layer_mean
            ax.plot(ds.depth.values, y.values, "o-", ms=2.5, lw=1.2, color=color, label=f"{label} (d={ds.d_model})")
            hi = float(ds.attrs["null_high"])
            ax.axhspan(-hi, hi, color=color, alpha=0.12, zorder=0)
        ax.axhline(0, color="0.5", lw=0.5)
        ax.set_xlim(0, 1)
        ax.set_xlabel("Normalised layer  l/(L-1)")
        ax.set_title("singular-value weighted" if weighted else "unweighted", fontsize=9)
    axes[0].set_ylabel("Cosine similarity")
    axes[0].legend(fontsize=7, frameon=False)
    fig.tight_layout()
    return fig


def save_figure(
    fig: plt.Figure,
    path: str | Path,
    metadata: dict[str, str] | None = None,
    provenance: dict[str, Any] | None = None,
    dpi: int = 300,
) -> Path:
    """Save as PNG and PDF with metadata; with ``provenance`` also ``<name>.provenance.json`` beside them (the
    record plus the sha256 of the PNG and PDF under ``outputs``), ``<name>.provenance.html`` (the same record for
    readers, shown in the Snakemake report) and the record in the files' metadata (PNG text chunk
    ``Description``, PDF ``Subject``). Written atomically."""
    from .store import atomic_path

    out = Path(path)
    meta = dict(metadata or {})
    if provenance is not None:
        meta.setdefault("Description", json.dumps(provenance, sort_keys=True))
    for ext in (out.suffix or ".png", ".pdf"):
        target = out.with_suffix(ext)
        # PNG text chunks take any key; PDF's info dictionary only standard ones (Description -> Subject)
        fmt_meta = {("Subject" if k == "Description" else k): v for k, v in meta.items()} if ext == ".pdf" else meta
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext.lstrip("."), dpi=dpi, metadata=fmt_meta)
    if provenance is not None:
        # the sidecar also records the digests of the files just written: `qkdissect audit` notices an edited figure
        from .provenance import tree_sha256

        outputs = {t.name: tree_sha256(t) for t in (out.with_suffix(e) for e in (out.suffix or ".png", ".pdf"))}
        with atomic_path(provenance_path(out)) as tmp:
            tmp.write_text(json.dumps({**provenance, "outputs": outputs}, indent=2, sort_keys=True) + "\n")
        from .report import provenance_html

        with atomic_path(provenance_path(out).with_suffix(".html")) as tmp:
            tmp.write_text(provenance_html(provenance))
    plt.close(fig)
    return out


def provenance_path(figure: str | Path) -> Path:
    p = Path(figure)
    return p.with_name(p.stem + ".provenance.json")
