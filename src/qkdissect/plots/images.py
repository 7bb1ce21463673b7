"""Figures of modes on real images, drawn from maps stores (:mod:`qkdissect.passes.maps`): the top images per
mode with query/key overlays (Fig. 1, Fig. 4, the galleries S5-S16), one image's strongest modes (Fig. 5), one
image next to the top images of chosen modes (S17-S19).

Overlay (paper Fig. 4; the rendering is not specified anywhere, this is ours): each map is clipped to its
[30th, 95th] percentile and scaled to [0, 1], upsampled bilinearly to the image; red = query map, cyan (green
and blue) = key map, so white is where both are high; drawn over a dimmed grey copy of the image.

Contribution of a mode on one image (Fig. 5; the paper does not define it): ``s_n * max(max q * max k, min q *
min k)``, the largest rank-one logit term the mode can produce between two tokens of that image.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.legend import Legend
from matplotlib.patches import Patch
from PIL import Image

from ..options import Mode, mode_label
from .style import MIN_FONT, PAGE_WIDTH, decimals, image_title

BLOCK_NOTE = "†: in a block of near-equal singular values; its vectors are not identifiable, only the block's sum"


@dataclass(frozen=True)
class MapRow:
    """One row of a maps store: the mode, its numbers, and its slots (crops with their maps and scores)."""

    store: xr.Dataset
    index: int

    @property
    def mode(self) -> Mode:
        r = self.store.isel(row=self.index)
        return (int(r["layer"]), int(r["head"]), int(r["mode"]), str(r["sign"].values))

    @property
    def cosine(self) -> float:
        return float(self.store.cosine.values[self.index])

    @property
    def singular_value(self) -> float:
        return float(self.store.singular_value.values[self.index])

    @property
    def block(self) -> tuple[int, int] | None:
        first, last = (int(self.store[v].values[self.index]) for v in ("block_first", "block_last"))
        return (first, last) if first >= 0 else None

    @property
    def dagger(self) -> str:
        return "†" if self.block else ""

    def slots(self) -> list[tuple[Image.Image, np.ndarray, np.ndarray, float]]:
        """(crop, query map, key map, score) of each filled slot."""
        out = []
        for j, img in enumerate(self.store.slot_image.values[self.index]):
            if img >= 0:
                crop = Image.fromarray(self.store.crop.values[img])
                q, k = self.store.q_map.values[self.index, j], self.store.k_map.values[self.index, j]
                out.append((crop, q, k, float(self.store.slot_score.values[self.index, j])))
        return out


def map_rows(store: xr.Dataset) -> list[MapRow]:
    return [MapRow(store, i) for i in range(store.sizes["row"])]


def mode_text(row: MapRow, model: str) -> str:
    """The label of a mode in the galleries: model, code, cosine, singular value, and its degenerate block."""
    block = row.block
    mark = f"\n† block M{block[0]}-M{block[1]}" if block else ""
    name = textwrap.fill(model, _chars(LABEL_WIDTH))  # a long name (a spec) takes several lines
    return (
        f"{name}\n{mode_label(row.mode)}\ncos(u, v) = {row.cosine:.3f}\nsingular value {row.singular_value:.3g}{mark}"
    )


def _chars(width: float, fontsize: float = MIN_FONT) -> int:
    """About how many characters fit in ``width`` inches (an average character is about 0.55 em)."""
    return max(10, int(0.95 * width * 72 / (0.55 * fontsize)))


def _unit(a: np.ndarray, lo: float = 30, hi: float = 95) -> np.ndarray:
    a0, a1 = np.percentile(a, [lo, hi])
    return np.clip((a - a0) / (a1 - a0), 0, 1) if a1 > a0 else np.zeros_like(a)


def overlay(image: Image.Image, q: np.ndarray, k: np.ndarray) -> np.ndarray:
    """RGB float image: red = query map, cyan = key map (white where both), over the dimmed grey image."""
    w, h = image.size

    def up(m: np.ndarray) -> np.ndarray:
        return np.asarray(Image.fromarray(_unit(m).astype(np.float32)).resize((w, h), Image.Resampling.BILINEAR))

    qu, ku = up(q), up(k)
    grey = np.asarray(image.convert("L"), dtype=np.float32)[..., None] / 255.0
    colour = np.stack([qu, ku, ku], axis=-1)
    alpha = np.maximum(qu, ku)[..., None]
    return np.clip(0.45 * grey * (1 - alpha) + colour * alpha, 0, 1)


def image_cell(
    ax: plt.Axes, rgb: np.ndarray | Image.Image, caption: str | None = None, fontsize: float = MIN_FONT
) -> None:
    ax.imshow(rgb)
    ax.set_xticks([])
    ax.set_yticks([])
    for sp in ax.spines.values():
        sp.set_visible(False)
    if caption:
        ax.set_title(caption, fontsize=fontsize, pad=1)


#: the overlay's colours and what they mean (the colour key of every image figure)
KEY = (
    ("query map x·u (red)", (1.0, 0.0, 0.0)),
    ("key map x·v (cyan)", (0.0, 1.0, 1.0)),
    ("both (white)", (1.0, 1.0, 1.0)),
)
SIGN_NOTE = "(-): the mode with the opposite sign, maps of -u and -v"


def colour_key(fig: plt.Figure, notes: Sequence[str]) -> Legend:
    """The colour key below the panels (red = query map, cyan = key map, white = both; each map clipped to its
    [30, 95] percentiles), with ``notes`` saying what the printed numbers are above it."""
    handles = [Patch(facecolor=c, edgecolor="0.4", lw=0.5, label=label) for label, c in KEY]
    lines = [*notes, "overlay: each map clipped to its [30th, 95th] percentiles, over the dimmed image"]
    title = "\n".join(textwrap.fill(line, _chars(fig.get_figwidth()), subsequent_indent="  ") for line in lines)
    return fig.legend(handles=handles, loc="outside lower center", ncol=3, fontsize=7, title=title,
                      title_fontsize=MIN_FONT, frameon=False)  # fmt: skip


def _title(fig: plt.Figure, text: str, fontsize: float = 9) -> None:
    """The figure's title, wrapped to its width."""
    fig.suptitle(textwrap.fill(text, _chars(fig.get_figwidth(), fontsize)), fontsize=fontsize)


def _notes(rows: Sequence[MapRow], *numbers: str) -> list[str]:
    """What the numbers are, then the sign and degenerate-block notes where a drawn mode needs them."""
    return [*numbers, *([SIGN_NOTE] if any(r.mode[3] == "-" for r in rows) else []),
            *([BLOCK_NOTE] if any(r.block for r in rows) else [])]  # fmt: skip


def _k(stores: Sequence[xr.Dataset]) -> int:
    return max(int(ds.attrs["request"].get("k", 8)) for ds in stores)


#: inches: the label column of the galleries, the largest image cell, the narrowest image figure (its key fits)
LABEL_WIDTH, CELL, NARROWEST = 1.35, 1.05, 5.0
SCORE_NOTE = "score: the image's score max q · max k over its patches (q, k: the maps shown)"
COS_NOTE = "cos: cos(u, v), the cosine of the mode's query- and key-side singular vectors"
CONTRIBUTION_NOTE = "contrib.: the mode's contribution on this image, s · max(max q · max k, min q · min k)"


def gallery_figure(stores: Sequence[xr.Dataset], title: str = "") -> plt.Figure:
    """One row per (model, mode) of the maps stores (kind ``top``), in order: its code, cosine and singular
    value, then its top-k images with the red (query) / cyan (key) overlay, each with its score (Fig. 1, Fig. 4,
    S5-S16), every score with one precision (:func:`~.style.decimals`); page width, the colour key below; a title
    only when ``title`` is given (the figure's caption belongs to the report)."""
    rows = [(ds.attrs["model_id"], row) for ds in stores for row in map_rows(ds)]
    k = _k(stores)
    places = decimals([score for _, row in rows for *_, score in row.slots()])
    cell = min(CELL, (PAGE_WIDTH - LABEL_WIDTH) / k)
    size = (max(NARROWEST, LABEL_WIDTH + cell * k), (cell + 0.15) * len(rows) + 1.0)
    fig, axes = plt.subplots(
        len(rows), k + 1, figsize=size, squeeze=False, layout="constrained", width_ratios=[LABEL_WIDTH / cell] + [1] * k
    )
    for n, (model, row) in enumerate(rows):
        label = axes[n, 0]
        label.axis("off")
        label.text(0.5, 0.5, mode_text(row, model), ha="center", va="center", fontsize=MIN_FONT, in_layout=False)
        slots = row.slots()
        for j, (crop, q, kk, score) in enumerate(slots):
            image_cell(axes[n, j + 1], overlay(crop, q, kk), f"score {score:.{places}f}")
        for j in range(len(slots), k):
            axes[n, j + 1].axis("off")
    if title:
        _title(fig, title)
    colour_key(fig, _notes([r for _, r in rows], SCORE_NOTE))
    return fig


def image_modes_figure(store: xr.Dataset) -> plt.Figure:
    """Fig. 5: one image; for each (layer, head) its strongest modes on this image by contribution (a maps store
    of kind ``image-modes``); page width, the colour key below."""
    layer_heads = [tuple(x) for x in store.attrs["layer_heads"]]
    n_modes = int(store.attrs["request"].get("n_modes", 6))
    cell = min(1.1, PAGE_WIDTH / (n_modes + 1))
    fig, axes = plt.subplots(
        len(layer_heads),
        n_modes + 1,
        figsize=(max(NARROWEST, cell * (n_modes + 1)), (cell + 0.3) * len(layer_heads) + 1.0),
        squeeze=False,
        layout="constrained",
    )
    by_head: dict[tuple[int, int], list[MapRow]] = {}
    for row in map_rows(store):
        by_head.setdefault(row.mode[:2], []).append(row)
    crop = Image.fromarray(store.crop.values[0])
    places = decimals([c for rows in by_head.values() for row in rows for *_, c in row.slots()])
    for n, (layer, head) in enumerate(layer_heads):
        image_cell(axes[n, 0], crop, f"L{layer} H{head}", fontsize=7)
        rows = by_head.get((layer, head), [])
        for j, row in enumerate(rows):
            ((img, q, k, contribution),) = row.slots()
            cap = f"{mode_label(row.mode)}{row.dagger}\ncos {row.cosine:+.2f}\ncontrib. {contribution:.{places}f}"
            image_cell(axes[n, j + 1], overlay(img, q, k), cap)
        for j in range(len(rows), n_modes):
            axes[n, j + 1].axis("off")
    _title(fig, f"{store.attrs['model_id']}: {image_title(store.attrs['image'])}, strongest modes per head")
    colour_key(fig, _notes(map_rows(store), COS_NOTE, CONTRIBUTION_NOTE))
    return fig


def image_and_top_figure(store: xr.Dataset) -> plt.Figure:
    """S17-S19: per mode, the image, its mode map, then the top images of that mode with their scores (a maps
    store of kind ``image-top``: slot 0 is the image, the others its top images); page width, the colour key
    below. The image is left out of its own top images, so a row where it is one of them has one fewer: every
    row shows the same number, the fewest any row has (the best of each row's), so that the columns line up."""
    rows = map_rows(store)
    slots = [row.slots() for row in rows]
    shown = min(len(s) - 1 for s in slots)
    places = decimals([score for s in slots for *_, score in s[1 : 1 + shown]])
    s_places = decimals([row.singular_value for row in rows])
    cell = min(1.0, PAGE_WIDTH / (shown + 2))
    fig, axes = plt.subplots(
        len(rows), shown + 2, figsize=(max(NARROWEST, cell * (shown + 2)), (cell + 0.35) * len(rows) + 1.1),
        squeeze=False, layout="constrained",
    )  # fmt: skip
    for n, (row, (first, *top)) in enumerate(zip(rows, slots, strict=True)):
        crop, q, kk, _ = first
        caption = f"{mode_label(row.mode)}{row.dagger}\ncos {row.cosine:+.2f}\ns {row.singular_value:.{s_places}f}"
        image_cell(axes[n, 0], crop, caption)
        image_cell(axes[n, 1], overlay(crop, q, kk), "its mode map")
        for j, (img, tq, tk, score) in enumerate(top[:shown]):
            image_cell(axes[n, j + 2], overlay(img, tq, tk), f"score {score:.{places}f}")
    _title(
        fig,
        f"{store.attrs['model_id']}: singular-mode maps of {image_title(store.attrs['image'])} and the top images "
        "of each mode",
    )
    note = f"each row: the {shown} best top images of the mode other than the image itself"
    colour_key(fig, _notes(rows, f"{COS_NOTE}; s: its singular value", SCORE_NOTE, note))
    return fig
