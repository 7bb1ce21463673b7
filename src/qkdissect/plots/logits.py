"""Beyond the paper: what the modes and the biases contribute to real attention logits (a logits store per model)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import xarray as xr

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
