"""Figures of text modes (beyond the paper), drawn from a maps store of kind ``text-top``
(:mod:`qkdissect.passes.maps`): the top passages of chosen modes, each shown twice, shaded by its query map
([x_t . u]_+, red) and by its key map ([x_t . v]_+, cyan, as in the image figures), around the best query-key pair
(bold).

Shading (ours, as for the image overlays): each map is scaled by the largest value among the passages shown
for that mode, so rows of one mode compare; special tokens are grey and not scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr

from ..options import mode_label
from ..stores.schema import TokenMaps, slot_maps
from .images import BLOCK_NOTE, KEY, map_rows
from .style import decimals, image_title

#: the shading colours: those of every image figure's overlay (red query, cyan key; :data:`.images.KEY`)
QUERY_RGB, KEY_RGB = KEY[0][1], KEY[1][1]
#: the "q" and "k" line labels: the same hues, dark enough to read on white
LABEL_RGB = {QUERY_RGB: (0.8, 0.0, 0.0), KEY_RGB: (0.0, 0.55, 0.55)}


def _window(i: int, j: int, n: int, context: int = 6, widest: int = 26) -> list[int | None]:
    """Token positions to show around query i and key j (None: an elision)."""
    lo, hi = max(0, min(i, j) - context), min(n, max(i, j) + context + 1)
    if hi - lo <= widest:
        return list(range(lo, hi))
    a, b = sorted((i, j))
    left = list(range(max(0, a - context), a + context + 1))
    right = list(range(max(left[-1] + 1, b - context), min(n, b + context + 1)))
    return [*left, None, *right]


def _tokens_line(ax: plt.Axes, renderer: Any, y: float, tm: TokenMaps, show: Sequence[int | None],
                 values: np.ndarray, vmax: float, rgb: tuple[float, float, float], bold: int, label: str,
                 fontsize: float) -> None:  # fmt: skip
    width_px = ax.get_window_extent(renderer).width
    colour = LABEL_RGB.get(rgb, rgb)
    t = ax.text(0.0, y, label, fontsize=fontsize, color=colour, fontweight="bold", transform=ax.transAxes, va="center")
    x = 0.035
    for pos in show:
        if pos is None:
            piece, spaced, alpha, grey, weight = "…", True, 0.0, True, "normal"
        else:
            piece, spaced = tm.pieces[pos], tm.spaced[pos]
            grey = not bool(tm.scored[pos])
            alpha = 0.0 if grey or vmax <= 0 else float(np.clip(values[pos] / vmax, 0, 1))
            weight = "bold" if pos == bold else "normal"
        if spaced:
            x += 0.004
        t = ax.text(
            x, y, piece, fontsize=fontsize, va="center", ha="left", transform=ax.transAxes, fontweight=weight,
            color="0.55" if grey else "k",
            bbox={"boxstyle": "square,pad=0.12", "fc": (*rgb, 0.85 * alpha), "ec": "none"},
        )  # fmt: skip
        x += t.get_window_extent(renderer).width / width_px
        if x > 0.995:
            break


def text_modes_figure(store: xr.Dataset, title: str = "") -> plt.Figure:
    """Per mode of the maps store, its top passages shaded by the query map and by the key map."""
    rows = map_rows(store)
    k = int(store.attrs["request"].get("k", 3))
    lines_per_mode = 1 + 2 * k
    height = 0.19 * lines_per_mode * len(rows) + 0.6
    fig, axes = plt.subplots(len(rows), 1, figsize=(11, height), squeeze=False)
    # fixed margins before any token is measured (token widths are in axes units)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.15 / height, top=1 - 0.6 / height, hspace=0.15)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    s_places = decimals([row.singular_value for row in rows])
    scores = store.slot_score.values[store.slot_passage.values >= 0]
    places = decimals(scores)
    for ax, row in zip(axes[:, 0], rows, strict=True):
        ax.set_axis_off()
        cos, block = row.cosine, row.block
        mark = f"  † block M{block[0]}-M{block[1]}" if block else ""
        kind = "grouping" if cos > 0 else "contextualising"
        sv = f"{row.singular_value:.{s_places}f}"
        ax.text(0, 1, f"{mode_label(row.mode)}   cos = {cos:+.3f} ({kind})   s = {sv}{mark}",
                fontsize=8, fontweight="bold", transform=ax.transAxes, va="top")  # fmt: skip
        filled = [j for j, p in enumerate(store.slot_passage.values[row.index]) if p >= 0]
        maps = [slot_maps(store, row.index, j) for j in filled]
        vq = max((float(np.max(np.where(tm.scored, tm.q, 0))) for tm in maps), default=0.0)
        vk = max((float(np.max(np.where(tm.scored, tm.k, 0))) for tm in maps), default=0.0)
        step = 1.0 / lines_per_mode
        for r, (j, tm) in enumerate(zip(filled, maps, strict=True)):
            i, jj = int(store.query_token.values[row.index, j]), int(store.key_token.values[row.index, j])
            score = float(store.slot_score.values[row.index, j])
            show = _window(i, jj, len(tm.pieces))
            y = 1 - step * (1.5 + 2 * r)
            _tokens_line(ax, renderer, y, tm, show, tm.q, vq, QUERY_RGB, i, "q", 7)
            _tokens_line(ax, renderer, y - step * 0.95, tm, show, tm.k, vk, KEY_RGB, jj, "k", 7)
            ax.text(
                1.0, y, f"{score:.{places}f}", fontsize=6, color="0.4", transform=ax.transAxes, ha="right", va="center"
            )
    head_line = title or f"{store.attrs['model_id']}: top passages per mode ({image_title(store.attrs['corpus'])})"
    note = "red: query map [x·u]+, cyan: key map [x·v]+, bold: the best (query, key) pair; right: passage score"
    blocks = any(row.block for row in rows)
    fig.suptitle(head_line + "\n" + note + (f"\n{BLOCK_NOTE}" if blocks else ""), fontsize=8, y=1 - 0.05 / height)
    return fig
