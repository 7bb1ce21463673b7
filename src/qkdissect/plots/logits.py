"""Beyond the paper: what the modes and the biases contribute to real attention logits (a logits store per model)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import xarray as xr

from .style import MIN_FONT, PAGE_WIDTH, depth_axis

#: each logit term's line: colour, marker and legend label (math as it prints); the constant is drawn first and
#: thick, so the key-bias term, 0 within rows like it, shows on top of it
TERM_STYLES: dict[str, dict[str, Any]] = {
    "token": {"color": "k", "marker": "o", "label": "token-token (the modes)\n" r"$x_i^\top W_q^\top W_k x_j$"},
    "query_bias": {"color": "tab:red", "marker": "^", "label": r"query bias $b_q^\top W_k x_j$"},
    "key_bias": {
        "color": "tab:green",
        "marker": "s",
        "label": r"key bias $x_i^\top W_q^\top b_k$" "\n(0 within rows, over the constant)",
    },
    "constant": {"color": "0.7", "marker": None, "label": r"constant $b_q^\top b_k$"},
}
#: points: the text of the logit-terms figure
FONT = 7.5
ROW_HEIGHT = 2.3
#: inches: the row of legends under the panels
LEGEND_HEIGHT = 1.6


def _legend_under(fig: plt.Figure, ax: plt.Axes, source: plt.Axes, columns: int = 1) -> None:
    """``source``'s legend, framed, a figure legend at the top of ``ax``: an axes that only holds the legend's
    place in the layout (hidden, so no legend sits over an axes, and none over the data)."""
    ax.set_visible(False)
    handles, labels = source.get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", bbox_to_anchor=(0.5, 1.0), bbox_transform=ax.transAxes,
               ncol=columns, fontsize=MIN_FONT + 0.5, frameon=True, edgecolor="0.8", handlelength=2.4,
               borderaxespad=0.0)  # fmt: skip


def logit_terms_figure(stores: Sequence[xr.Dataset]) -> plt.Figure:
    """Beyond the paper, one row per model (logits stores): A, the share of logit variance of each term per layer
    (solid: within query rows, what the softmax sees; dashed: over all pairs); B, the share of the token-token
    term's within-row variance that the top-k modes capture; C, the share of the winning keys' margin carried by
    modes with cos(u, v) > 0, against their share of the singular values. Page width; each panel's framed legend
    under the last row's panel, outside the data; the model named at the left of its row."""
    if not stores:
        raise ValueError("logit_terms_figure needs at least one logits store")
    n = len(stores)
    fig, grid = plt.subplots(
        n + 1, 3, figsize=(PAGE_WIDTH, ROW_HEIGHT * n + LEGEND_HEIGHT + 0.6), squeeze=False, layout="constrained",
        height_ratios=[ROW_HEIGHT] * n + [LEGEND_HEIGHT],
    )  # fmt: skip
    axes, under = grid[:n], grid[n]
    for row, ds in zip(axes, stores, strict=True):
        x = ds.depth.values
        a, b, c = row
        for term in ("constant", "token", "query_bias", "key_bias"):
            st = TERM_STYLES[term]
            for scope, ls in (("rows", "-"), ("pairs", "--")):
                y = ds.share.sel(scope=scope, term=term).mean("head").values
                a.plot(x, y, ls=ls, ms=2.5, mfc="none" if scope == "pairs" else None,
                       lw=2.2 if term == "constant" else 1, zorder=1 if term == "constant" else 2,
                       color=st["color"], marker=st["marker"], label=st["label"] if ls == "-" else None)  # fmt: skip
        a.plot([], [], color="0.3", ls="-", lw=1, label="solid: within query rows")
        a.plot([], [], color="0.3", ls="--", lw=1, label="dashed: over all pairs")
        a.set_ylabel(f"{ds.attrs['model_id']}\nshare of logit variance", fontsize=FONT)
        cmap = plt.get_cmap("viridis")
        ks = list(ds.k.values)
        for i, k in enumerate(ks):
            b.plot(x, ds.explained.sel(k=k).mean("head").values, marker="o", ms=2, lw=1,
                   color=cmap(i / max(1, len(ks) - 1)), label=f"top {k}")  # fmt: skip
        b.set_ylim(min(0.0, float(ds.explained.mean("head").min())), 1.02)
        b.set_ylabel("share explained", fontsize=FONT)
        c.plot(x, ds.winning_positive.mean("head").values, "o-", ms=2, lw=1.2, color="tab:purple",
               label="winning margin carried by\n" r"the modes with $\cos(u, v) > 0$")  # fmt: skip
        c.plot(x, ds.sigma_positive.mean("head").values, "o--", ms=2, lw=1, color="0.45",
               label="share of the singular values\n" r"in the modes with $\cos(u, v) > 0$")  # fmt: skip
        c.axhline(0.5, color="0.8", lw=0.5)
        c.set_ylabel("share", fontsize=FONT)
        for ax in row:
            ax.set_xlim(0, 1)
            ax.tick_params(labelsize=MIN_FONT + 0.5)
    for ax, title in zip(axes[0], TITLES, strict=True):
        ax.set_title(title, fontsize=FONT)
    for ax in axes[-1]:
        depth_axis(ax, fontsize=FONT)
    for ax, source, columns in zip(under, axes[-1], (1, 2, 1), strict=True):
        _legend_under(fig, ax, source, columns)
    return fig


TITLES = ("A: the logit terms", "B: token-token variance\ncaptured by the top-k modes", "C: who wins the softmax")
