"""Figures of the mask-dataset passes: attention preference (Fig. 2) and same-object probability (Fig. 6)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import xarray as xr

from .images import image_cell
from .style import model_style


def preference_figure(stores: Sequence[xr.Dataset]) -> plt.Figure:
    """Fig. 2: (A) the first store's example image with its target (red) and distractor (cyan) query tokens; (B-D)
    the share of attention on the same object, a different object and the background against normalised depth,
    one line per model (mean over images and heads; dashed: the regions' mean area share, i.e. uniform
    attention)."""
    first = stores[0]
    fig, axes = plt.subplots(1, 4, figsize=(11, 2.9), layout="constrained")
    ds_spec = first.attrs["dataset"]
    example = int(first.attrs["example"])
    crop = first.example_crop.values
    gh, gw = first.attrs["grid"]
    image_cell(axes[0], crop, f"A: {first.image_id.values[example]}")
    for src, colour in zip(range(2), ("red", "cyan"), strict=True):
        tok = int(first.query_token.values[example, src])
        if tok >= 0:
            r, c = divmod(tok, gw)
            h, w = crop.shape[0] / gh, crop.shape[1] / gw
            axes[0].add_patch(plt.Rectangle((c * w, r * h), w, h, fill=False, edgecolor=colour, lw=1.5))
    titles = {"same": "B: same object", "different": "C: different object", "background": "D: background"}
    # uniform attention would give: same = different = mean(target share, distractor share); background its share
    objects = float(first.token_masks.sel(region=["target", "distractor"]).mean())
    share = {
        "same": objects,
        "different": objects,
        "background": float(first.token_masks.sel(region="background").mean()),
    }
    for ax, (g, title) in zip(axes[1:], titles.items(), strict=True):
        for ds in stores:
            ax.plot(ds.depth.values, ds[f"layer_{g}"].values, markersize=2, **model_style(str(ds.attrs["model_id"])))
        ax.axhline(share[g], color="0.6", lw=0.8, ls="--")
        ax.set_title(title, fontsize=9)
        ax.set_xlim(0, 1)
        ax.set_xlabel("Normalised layer  l/(L-1)", fontsize=8)
    axes[1].set_ylabel("attention ratio", fontsize=8)
    axes[1].legend(fontsize=6, frameon=False)
    fig.suptitle(
        f"attention preference on {ds_spec['kind']} ({first.sizes['image']} images); dashed: area share of the "
        "objects / background (uniform attention)",
        fontsize=8,
    )
    return fig


def same_object_figure(stores: Sequence[xr.Dataset]) -> plt.Figure:
    """Fig. 6: the singular-value-weighted probability that a mode's query and key sides pick the same object in
    its top images, per layer, against normalised depth; one line per model."""
    fig, ax = plt.subplots(figsize=(4.5, 3.6), layout="constrained")
    for ds in stores:
        ax.plot(ds.depth.values, ds.layer_p.values, markersize=2, **model_style(str(ds.attrs["model_id"])))
    first = stores[0]
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("Normalised layer  l/(L-1)")
    ax.set_ylabel("Same-object probability")
    ax.set_title(
        f"top {first.attrs['top']} images per mode, {first.attrs['dataset']['kind']} "
        f"({first.attrs['eligible_images']} images)",
        fontsize=8,
    )
    ax.legend(fontsize=6, frameon=False)
    return fig
