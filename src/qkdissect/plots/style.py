"""How figures look: each model's colour, line style and marker (the paper's per family, from the catalogue, then
any override); the page they are drawn for (``PAGE_WIDTH`` inches wide, no text under ``MIN_FONT`` points at the
saved size); legends of many models outside the axes, the models grouped by family."""

from __future__ import annotations

import math
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import PurePosixPath
from typing import Any, Literal

import matplotlib.pyplot as plt
import numpy as np
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
    handler_map: Mapping[Any, Any] | None = None,
) -> Legend:
    """A figure legend outside every axes (the figure needs the constrained layout, which makes room for it): the
    models grouped by family (the catalogue's order, stable within a family), then ``extras`` (null bands, chance
    lines), in columns that read top to bottom."""
    entries = sorted(models, key=lambda e: family_rank(e[1])) + list(extras)
    # a long label (a model named by its spec) takes several lines rather than the axes' width
    # (math is never wrapped: a line break inside $...$ breaks it)
    labels = [label if "\n" in label or "$" in label else textwrap.fill(label, LONGEST_LABEL) for _, label in entries]
    ncol = _columns(fig, labels, where, fontsize)
    loc: Literal["outside right upper", "outside lower center"] = (
        "outside right upper" if where == "right" else "outside lower center"
    )
    return fig.legend([h for h, _ in entries], labels, loc=loc, ncol=ncol, fontsize=fontsize, frameon=False,
                      handler_map=dict(handler_map or {}))  # fmt: skip


def depth_axis(ax: plt.Axes, fontsize: float = 9) -> None:
    """The x-axis of every per-layer curve: normalised depth l / (L - 1) from 0 to 1."""
    ax.set_xlim(0, 1)
    ax.set_xlabel("Normalised layer  l/(L-1)", fontsize=fontsize)


#: the image sources a spec or an image id names (``SOURCE:NAME``), as a reader reads them
SOURCES = {"skimage": "scikit-image sample", "synthetic": "synthetic scene"}


def image_title(spec: str) -> str:
    """An image's name for a title, without the internal spec: ``skimage:astronaut`` -> "astronaut (scikit-image
    sample)", ``synthetic:0`` -> "synthetic scene 0", a path or ``SOURCE:path`` -> its file name."""
    source, sep, name = str(spec).partition(":")
    if not sep:
        return PurePosixPath(source).name or source
    if source == "synthetic":
        return f"{SOURCES[source]} {name}"
    stem = PurePosixPath(name).name or name
    return f"{stem} ({SOURCES[source]})" if source in SOURCES else stem


def decimals(values: Sequence[float] | Any, digits: int = 3) -> int:
    """Decimals that print the largest of ``values`` with ``digits`` significant digits (at most ``digits``,
    none for >= 10^(digits-1)): one precision for every number of a kind in a figure, so that 40 and 41.8 print
    as 40.0 and 41.8, and 119 and 9.93 as 119 and 10."""
    arr = np.abs(np.asarray(values, dtype=np.float64))
    arr = arr[np.isfinite(arr) & (arr > 0)]
    if arr.size == 0:
        return digits - 1
    return int(min(digits, max(0, digits - 1 - math.floor(math.log10(float(arr.max()))))))
