"""How each model is drawn: the paper's colour and line style per family (the catalogue), then any override."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..catalogue import KNOWN_MODELS

Style = Mapping[str, Any]


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
