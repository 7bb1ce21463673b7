"""How figures look: each model's colour, line style and marker (the paper's per family, from the catalogue, then
any override); the page they are drawn for (``PAGE_WIDTH`` inches wide, no text under ``MIN_FONT`` points at the
saved size); legends of many models outside the axes, the models grouped by family."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import matplotlib.pyplot as plt
from matplotlib.artist import Artist
from matplotlib.font_manager import FontProperties
from matplotlib.legend import Legend

from ..catalogue import KNOWN_MODELS

Style = Mapping[str, Any]
#: one legend entry: the artist it shows and its label
Entry = tuple[Artist, str]

#: inches: a figure meant for a page is this wide, so it is printed at its saved size
PAGE_WIDTH = 7.0
#: points: the smallest text on any figure at its saved size
MIN_FONT = 6.0
#: characters: a legend label longer than this is wrapped
LONGEST_LABEL = 40
#: the families in the catalogue's order (ViT, DINO, CLIP, DeiT, SimMIM, I-JEPA, then ours)
FAMILIES = list(dict.fromkeys(m.family for m in KNOWN_MODELS.values()))


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


def family_rank(name: str) -> int:
    """Where a model's family comes in the legends (models outside the catalogue last)."""
    known = KNOWN_MODELS.get(name)
    return FAMILIES.index(known.family) if known else len(FAMILIES)


def _columns(fig: plt.Figure, labels: Sequence[str], where: str, fontsize: float) -> int:
    """How many legend columns fit: below the axes, as many as the figure's width holds; right of them, as few as
    its height allows."""
    if where == "right":
        rows = max(1, math.floor(0.92 * fig.get_figheight() * 72 / (1.75 * fontsize)))
        return max(1, math.ceil(sum(label.count("\n") + 1 for label in labels) / rows))
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    prop = FontProperties(size=fontsize)
    lines = [line for label in labels for line in label.split("\n")]
    widest = max(renderer.get_text_width_height_descent(line, prop, ismath=False)[0] for line in lines)
    # the handle (2 em), the gap to its text (0.8 em) and the gap to the next column (2 em)
    column = widest / fig.dpi + 4.8 * fontsize / 72
    return max(1, min(len(labels), math.floor(0.97 * fig.get_figwidth() / column)))


def legend_outside(
    fig: plt.Figure,
    models: Sequence[Entry],
    extras: Sequence[Entry] = (),
    *,
    where: Literal["right", "below"] = "right",
    fontsize: float = MIN_FONT,
) -> Legend:
    """A figure legend outside every axes (the figure needs the constrained layout, which makes room for it): the
    models grouped by family (the catalogue's order, stable within a family), then ``extras`` (null bands, chance
    lines), in columns that read top to bottom."""
    entries = sorted(models, key=lambda e: family_rank(e[1])) + list(extras)
    # a long label (a model named by its spec) takes several lines rather than the axes' width
    labels = [label if "\n" in label else textwrap.fill(label, LONGEST_LABEL) for _, label in entries]
    ncol = _columns(fig, labels, where, fontsize)
    loc: Literal["outside right upper", "outside lower center"] = (
        "outside right upper" if where == "right" else "outside lower center"
    )
    return fig.legend([h for h, _ in entries], labels, loc=loc, ncol=ncol, fontsize=fontsize, frameon=False)


def depth_axis(ax: plt.Axes, fontsize: float = 9) -> None:
    """The x-axis of every per-layer curve: normalised depth l / (L - 1) from 0 to 1."""
    ax.set_xlim(0, 1)
    ax.set_xlabel("Normalised layer  l/(L-1)", fontsize=fontsize)
