"""Figures of the mask-dataset passes: attention preference (Fig. 2) and same-object probability (Fig. 6)."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import xarray as xr
from matplotlib.legend_handler import HandlerTuple

from ..errors import QKDissectError
from .images import image_cell
from .style import PAGE_WIDTH, Entry, depth_axis, image_title, legend_outside, model_style


def preference_figure(stores: Sequence[xr.Dataset]) -> plt.Figure:
    """Fig. 2: (A) the first store's example image with its target (red) and distractor (cyan) query tokens; (B-D)
    the share of attention on the same object, a different object and the background against normalised depth,
    one line per model (mean over images and heads; dashed: the regions' mean area share, i.e. uniform
    attention). Page width; the legend below the panels, the models grouped by family."""
    first = stores[0]
    fig, axes = plt.subplots(1, 4, figsize=(PAGE_WIDTH, 3.0), layout="constrained")
    ds_spec = first.attrs["dataset"]
    example = int(first.attrs["example"])
    crop = first.example_crop.values
    gh, gw = first.attrs["grid"]
    image_cell(axes[0], crop, f"A: {image_title(str(first.image_id.values[example]))}", fontsize=8)
    axes[0].set_xlabel("query tokens:\nred: target\ncyan: distractor", fontsize=7)
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
    lines: list[Entry] = []
    for ax, (g, title) in zip(axes[1:], titles.items(), strict=True):
        for ds in stores:
            st = model_style(str(ds.attrs["model_id"]))
            (line,) = ax.plot(ds.depth.values, ds[f"layer_{g}"].values, markersize=2, lw=1.1, **st)
            if g == "same":
                lines.append((line, str(st["label"])))
        uniform = ax.axhline(share[g], color="0.6", lw=0.8, ls="--")
        ax.set_title(title, fontsize=8)
        ax.set_xlim(0, 1)
        ax.set_xticks([0, 0.5, 1])
        ax.set_xlabel("Normalised layer l/(L-1)", fontsize=7)
        ax.tick_params(labelsize=7)
    axes[1].set_ylabel("Attention ratio", fontsize=8)
    extras = [(uniform, "uniform attention (regions' area share)")]
    legend_outside(fig, lines, extras, where="below")
    fig.suptitle(f"Attention preference on {ds_spec['kind']} ({first.sizes['image']} images)", fontsize=9)
    return fig


#: inches: Fig. 6 is narrower than the page (one axes, its legend below)
FIG6_WIDTH = 5.2
#: the chance level's line: sparse dots, unlike any model's line style
CHANCE_LINE = (0, (1, 2.5))


def same_object_figure(stores: Sequence[xr.Dataset]) -> plt.Figure:
    """Fig. 6: the singular-value-weighted probability that a mode's query and key sides pick the same object in
    its top images, per layer, against normalised depth; one line per model, with its chance level in sparse dots in
    the same colour (``layer_chance`` of the store: :mod:`qkdissect.passes.same_object`). The legend below the
    axes, the models grouped by family; its chance entry in the colours the dots are drawn in. No title: how the
    images were chosen is the caption's (the report) and the provenance's (the store's attrs)."""
    missing = [str(ds.attrs["model_id"]) for ds in stores if "layer_chance" not in ds]
    if missing:
        raise QKDissectError(
            f"the same_object stores of {', '.join(missing)} hold no chance level (made before it was stored): "
            "rerun `qkdissect same-object` (the same_object rule) for them"
        )
    fig, ax = plt.subplots(figsize=(FIG6_WIDTH, 3.9), layout="constrained")
    lines: list[Entry] = []
    chances = []
    for ds in stores:
        st = model_style(str(ds.attrs["model_id"]))
        (line,) = ax.plot(ds.depth.values, ds.layer_p.values, markersize=2, lw=1.2, **st)
        lines.append((line, str(st.pop("label"))))
        chance_style = {**st, "color": line.get_color(), "linestyle": CHANCE_LINE, "marker": None, "lw": 0.8,
                        "gid": f"chance-{line.get_label()}"}  # fmt: skip
        (dots,) = ax.plot(ds.depth.values, ds.layer_chance.values, **chance_style)
        chances.append(dots)
    # the chance entry shows the dots in every model's colour, as they are drawn
    label = "chance level" + (" (each model's colour)" if len(chances) > 1 else "") + ":\nquery and key objects drawn\n"
    chance: Entry = (tuple(chances), label + "uniformly in each top image")  # type: ignore[assignment]
    depth_axis(ax)
    ax.set_ylim(0, 1)
    ax.set_ylabel("Same-object probability", fontsize=9)
    ax.tick_params(labelsize=8)
    legend = legend_outside(
        fig, lines, [chance], where="below", fontsize=7.5, handler_map={tuple: HandlerTuple(ndivide=None)}
    )
    legend.set_gid("fig6-legend")
    return fig
