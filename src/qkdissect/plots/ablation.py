"""The ablation figure (beyond the paper): what removing each mode changes, against the mode's singular value and
its cosine, one panel per layer. It reads an ablation store and the modes store it was made from; no model."""

from __future__ import annotations

import math
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.lines import Line2D
from matplotlib.ticker import FuncFormatter, NullFormatter
from scipy.stats import spearmanr

from ..errors import QKDissectError
from .style import MIN_FONT, PAGE_WIDTH

#: layers per row of panels
COLUMNS = 6
#: the modes coloured one by one (by their index in the head); further modes share the last colour
COLOURED = 8
#: the x-axes of the figure: a modes-store quantity and its label
AXES = (("singular_value", "singular value s_n"), ("cosine", "cos(u_n, v_n)"))


@dataclass
class AblationPoints:
    """The ablated modes of one store, flat (one entry per ablated mode): where they are, their singular value
    and cosine (of the modes store), and the effect on their top images and on every image."""

    layer: np.ndarray
    mode: np.ndarray
    singular_value: np.ndarray
    cosine: np.ndarray
    top: np.ndarray
    every: np.ndarray
    metric: str
    subset: str


def ablation_points(ablation: xr.Dataset, modes: xr.Dataset, metric: str = "attention_kl") -> AblationPoints:
    """The plotted numbers: each ablated mode's ``metric`` on its top images (subset ``top``; the whole set where
    the store has no top images) and on the whole set, with the singular value and cosine of ``modes`` (the store
    the ablation was made from: the same weights and shape, else an error)."""
    weights = ablation.attrs.get("weights_sha256"), modes.attrs.get("weights_sha256")
    if modes.S.shape != ablation.ablated.shape or (all(weights) and weights[0] != weights[1]):
        raise QKDissectError(
            f"the ablation store ({ablation.attrs.get('model_id')}, {ablation.ablated.shape}) was not made from "
            f"this modes store ({modes.attrs.get('model_id')}, {modes.S.shape}): give the modes it ablated"
        )
    if metric not in ablation.metric.values:
        raise QKDissectError(f"the ablation store has no metric {metric!r}: it has {list(ablation.metric.values)}")
    at = np.nonzero(ablation.ablated.values)
    effect = ablation.effect.sel(metric=metric)
    subset = "top" if "top" in ablation.subset.values else "all"
    cos = (modes.U * modes.V).sum("dim").values
    return AblationPoints(
        at[0], at[2], modes.S.values[at], cos[at], effect.sel(subset=subset).values[at],
        effect.sel(subset="all").values[at], metric, subset,
    )  # fmt: skip


def layer_spearman(points: AblationPoints, x: np.ndarray, n_layers: int) -> np.ndarray:
    """(layer,) the Spearman correlation across a layer's ablated modes of ``x`` and the effect on their top
    images (NaN: fewer than 3 modes with an effect)."""
    out = np.full(n_layers, np.nan)
    for layer in np.unique(points.layer):  # one number per panel
        at = (points.layer == layer) & np.isfinite(points.top)
        if at.sum() >= 3:
            out[layer] = spearmanr(x[at], points.top[at]).statistic
    return out


def log_ticks(low: float, high: float, most: int = 3) -> list[float]:
    """At most ``most`` round ticks in [low, high] on a log axis: 1, 2, 5 times powers of ten, or any digit
    times one when fewer than two of those fall inside."""
    decades = np.arange(np.floor(np.log10(low)), np.ceil(np.log10(high)) + 1)
    for digits in ((1, 2, 5), tuple(range(1, 10))):
        ticks = [d * 10**k for k in decades for d in digits if low <= d * 10**k <= high]
        if len(ticks) >= 2:
            break
    step = max(1, -(-len(ticks) // most))
    return [float(f"{v:.3g}") for v in ticks[::step]]


def ablation_figure(ablation: xr.Dataset, modes: xr.Dataset, metric: str = "attention_kl") -> plt.Figure:
    """Two blocks of panels, one panel per layer: each ablated mode's ``metric`` on its top images (coloured by
    the mode's index in its head) and on every image of the set (grey), against its singular value (A) and its
    cosine (B); log effect axis shared by every panel, log singular values; each panel's Spearman rho between x
    and the top-image effect."""
    pts = ablation_points(ablation, modes, metric)
    n_layers = ablation.sizes["layer"]
    rows = math.ceil(n_layers / COLUMNS)
    fig, axes = plt.subplots(2 * rows, COLUMNS, figsize=(PAGE_WIDTH, 1.25 * 2 * rows + 1.2), sharey=True,
                             layout="constrained", squeeze=False)  # fmt: skip
    colours = plt.get_cmap("tab10")(np.arange(COLOURED))
    colour = colours[np.minimum(pts.mode, COLOURED - 1)]
    positive = np.concatenate([pts.top, pts.every])
    positive = positive[np.isfinite(positive) & (positive > 0)]
    low, high = (positive.min() / 2, positive.max() * 2) if positive.size else (1e-6, 1.0)
    for block, (name, label) in enumerate(AXES):
        x = getattr(pts, name)
        rho = layer_spearman(pts, x, n_layers)
        for layer in range(rows * COLUMNS):
            ax = axes[block * rows + layer // COLUMNS, layer % COLUMNS]
            if layer >= n_layers:
                ax.set_visible(False)
                continue
            at = pts.layer == layer
            ax.scatter(x[at], pts.every[at], s=6, color="0.65", marker="x", linewidths=0.6, zorder=1)
            ax.scatter(x[at], pts.top[at], s=9, c=colour[at], zorder=2)
            ax.set_yscale("log")
            ax.set_ylim(low, high)
            ax.set_title(f"L{layer}" + ("" if np.isnan(rho[layer]) else f"  ρ {rho[layer]:+.2f}"),
                         fontsize=MIN_FONT + 1, pad=2)  # fmt: skip
            if name == "cosine":
                ax.set_xlim(-1.1, 1.1)
                ax.set_xticks([-1, 0, 1])
            else:
                ax.set_xscale("log")
                ax.set_xticks(log_ticks(*ax.get_xlim()))
                ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
                ax.xaxis.set_minor_formatter(NullFormatter())
            ax.tick_params(which="both", labelsize=MIN_FONT, length=2, pad=1)
            if layer % COLUMNS == 0:
                what = "KL (nats)" if metric == "attention_kl" else metric
                ax.set_ylabel(f"{'AB'[block]}: {what}", fontsize=MIN_FONT + 1)
        for ax in axes[block * rows + rows - 1]:
            ax.set_xlabel(label, fontsize=MIN_FONT + 1)
    shown = sorted(set(np.minimum(pts.mode, COLOURED - 1).tolist()))
    handles = [Line2D([], [], ls="", marker="o", ms=4, color=colours[m],
                      label=f"M{m}" + ("+" if m == COLOURED - 1 else "") + f" ({pts.subset} images)")
               for m in shown]  # fmt: skip
    handles.append(Line2D([], [], ls="", marker="x", ms=4, color="0.65", label="all images"))
    fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=MIN_FONT + 1, frameon=False)
    kind = ablation.attrs.get("ablation", "zero")
    n = (ablation.attrs.get("images") or {}).get("valid", "?")
    what = "the head's attention KL" if metric == "attention_kl" else metric
    fig.suptitle(f"{ablation.attrs.get('model_id')}: {kind}-ablation of each mode, {what} ({n} images)",
                 fontsize=MIN_FONT + 2)  # fmt: skip
    return fig
