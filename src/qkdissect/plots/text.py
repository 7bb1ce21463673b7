"""Figures of text modes (beyond the paper): the top passages of chosen modes, each shown twice, shaded by its
query map ([x_t . u]_+, red) and by its key map ([x_t . v]_+, blue), around the best query-key pair (bold).

Shading (ours, as for the image overlays): each map is scaled by the largest value among the passages shown
for that mode, so rows of one mode compare; special tokens are grey and not scored.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import xarray as xr

from ..models import QKWeights
from ..models.tokenizer import tokenizer_for
from ..passes.text import TokenMaps, token_maps
from .images import BLOCK_NOTE, Mode, degenerate_block, load_store_model, mode_label

QUERY_RGB = (0.84, 0.15, 0.16)
KEY_RGB = (0.12, 0.47, 0.71)


@dataclass
class TextModeViewer:
    """A text model, its modes and scores, and its text projections store (top passages per mode)."""

    modes: xr.Dataset
    scores: xr.Dataset
    texts: xr.Dataset
    qk: QKWeights
    model: torch.nn.Module
    tokenizer: Any

    @classmethod
    def open(cls, modes: xr.Dataset, scores: xr.Dataset, texts: xr.Dataset) -> TextModeViewer:
        qk, loaded = load_store_model(texts)
        return cls(modes, scores, texts, qk, loaded.model.eval(), tokenizer_for(loaded))

    def top(self, m: Mode, k: int) -> list[tuple[int, float, int, int]]:
        """(passage, score, query position, key position) of the top ``k`` passages of a mode."""
        layer, head, mode, sign = m
        t = self.texts.sel(layer=layer, head=head, mode=mode, sign=sign)
        rows = zip(t.top_passage.values[:k], t.top_score.values[:k], t.top_query_token.values[:k],
                   t.top_key_token.values[:k], strict=True)  # fmt: skip
        return [(int(p), float(s), int(i), int(j)) for p, s, i, j in rows if p >= 0]

    def maps(self, m: Mode, passage: int) -> TokenMaps:
        layer, head, mode, sign = m
        u = self.modes.U.values[layer, head, :, mode]
        v = self.modes.V.values[layer, head, :, mode]
        prov = self.texts.attrs["provenance"]["parameters"]
        tm = token_maps(
            self.model, self.tokenizer, self.qk, str(self.texts.text.values[passage]), layer, u, v,
            max_tokens=int(prov["max_tokens"]), source=prov["tokens"],
        )  # fmt: skip
        if sign == "-":
            tm.q, tm.k = -tm.q, -tm.k
        return tm


def auto_text_modes(scores: xr.Dataset, modes: xr.Dataset, n_layers: int = 3) -> list[Mode]:
    """In the first, middle and last layer, among its strong modes (top 10% of s), the most positive cosine
    (grouping) and the most negative (contextualising)."""
    total = modes.sizes["layer"]
    layers = sorted({round(float(x)) for x in np.linspace(0, total - 1, n_layers)})
    out: list[Mode] = []
    for layer in layers:
        s = modes.S.values[layer]
        cos = np.where(s >= np.quantile(s, 0.9), scores.cosine.values[layer], np.nan)
        for pick, fill in ((np.argmax, -np.inf), (np.argmin, np.inf)):
            head, mode = np.unravel_index(int(pick(np.nan_to_num(cos, nan=fill))), s.shape)
            out.append((layer, int(head), int(mode), "+"))
    return out


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
    t = ax.text(0.0, y, label, fontsize=fontsize, color=rgb, fontweight="bold", transform=ax.transAxes, va="center")
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


def text_modes_figure(viewer: TextModeViewer, selected: Sequence[Mode], k: int = 3, title: str = "") -> plt.Figure:
    """Per selected mode, its top ``k`` passages shaded by the query map and by the key map."""
    lines_per_mode = 1 + 2 * k
    height = 0.19 * lines_per_mode * len(selected) + 0.6
    fig, axes = plt.subplots(len(selected), 1, figsize=(11, height), squeeze=False)
    # fixed margins before any token is measured (token widths are in axes units)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.15 / height, top=1 - 0.6 / height, hspace=0.15)
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    blocks = False
    for ax, m in zip(axes[:, 0], selected, strict=True):
        ax.set_axis_off()
        layer, head, mode, _ = m
        cos = float(viewer.scores.cosine.values[layer, head, mode])
        s = float(viewer.modes.S.values[layer, head, mode])
        block = degenerate_block(viewer.modes, m)
        blocks |= block is not None
        mark = f"  † block M{block[0]}-M{block[1]}" if block else ""
        kind = "grouping" if cos > 0 else "contextualising"
        ax.text(0, 1, f"{mode_label(m)}   cos = {cos:+.3f} ({kind})   s = {s:.3g}{mark}", fontsize=8,
                fontweight="bold", transform=ax.transAxes, va="top")  # fmt: skip
        top = viewer.top(m, k)
        maps = [viewer.maps(m, p) for p, *_ in top]
        vq = max((float(np.max(np.where(tm.scored, tm.q, 0))) for tm in maps), default=0.0)
        vk = max((float(np.max(np.where(tm.scored, tm.k, 0))) for tm in maps), default=0.0)
        step = 1.0 / lines_per_mode
        for r, ((_, score, i, j), tm) in enumerate(zip(top, maps, strict=True)):
            show = _window(i, j, len(tm.pieces))
            y = 1 - step * (1.5 + 2 * r)
            _tokens_line(ax, renderer, y, tm, show, tm.q, vq, QUERY_RGB, i, "q", 7)
            _tokens_line(ax, renderer, y - step * 0.95, tm, show, tm.k, vk, KEY_RGB, j, "k", 7)
            ax.text(1.0, y, f"{score:.2f}", fontsize=6, color="0.4", transform=ax.transAxes, ha="right", va="center")
    head_line = title or f"{viewer.texts.attrs['model_id']}: top passages per mode ({viewer.texts.attrs['corpus']})"
    note = "red: query map [x·u]+, blue: key map [x·v]+, bold: the best (query, key) pair; right: passage score"
    fig.suptitle(head_line + "\n" + note + (f"\n{BLOCK_NOTE}" if blocks else ""), fontsize=8, y=1 - 0.05 / height)
    return fig
