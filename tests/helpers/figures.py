"""Figures built from random stores, and the checks every page figure passes (no tiny text, no wider than a page,
legends off the data and inside the figure)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure
from matplotlib.text import Text
from matplotlib.transforms import Bbox

from qkdissect.core.same_object import chance_of_same, top_fraction, top_order, weighted_by_sigma
from qkdissect.plots.style import MIN_FONT
from qkdissect.stores.schema import modes_dataset, same_object_dataset

HEADS, MODES = 2, 4
PAGE = 7.5  # in: the widest a page figure may be


def random_modes(name: str, n_layers: int, d: int, rng: np.random.Generator) -> xr.Dataset:
    """Random unit query-side vectors u; key-side v = c u + noise with c high early, low in the middle and rising
    late (the shape Fig. 3 exists to show), so the curves sweep the whole axes."""
    depth = np.linspace(0, 1, n_layers)[:, None, None, None]
    c = np.clip(0.7 * (1 - depth) ** 2 + 0.5 * depth**6 + rng.normal(0, 0.05, (1, 1, 1, 1)), -1, 1)
    u = np.linalg.qr(rng.normal(size=(n_layers, HEADS, d, MODES)))[0]
    noise = rng.normal(size=u.shape)
    noise -= np.einsum("lhdm,lhdm->lhm", noise, u)[:, :, None] * u
    v = c * u + np.sqrt(1 - c**2) * noise / np.linalg.norm(noise, axis=-2, keepdims=True)
    s = np.sort(rng.uniform(0.1, 2.0, (n_layers, HEADS, MODES)))[..., ::-1]
    block = np.broadcast_to(np.arange(MODES), s.shape).copy()
    return modes_dataset(u, s, v, block, {"model_id": name, "d_head": MODES})


def same_object_store(name: str, n_layers: int, rng: np.random.Generator, n_images: int = 12) -> xr.Dataset:
    """A same_object store from the pass's own functions on random image scores, picks and object counts."""
    shape = (n_layers, HEADS, MODES, 2)
    scores = rng.normal(size=(n_images, *shape))
    n_objects = rng.integers(2, 9, n_images)
    same = rng.random((n_images, *shape)) < np.linspace(0.8, 0.3, n_layers)[None, :, None, None, None]
    order = top_order(scores, 5)
    s = np.sort(rng.uniform(0.1, 2.0, shape[:3]))[..., ::-1]
    p, chance = top_fraction(scores, same, 5, order), chance_of_same(scores, n_objects, 5, order)
    values = {"p": p, "head_p": weighted_by_sigma(p, s), "chance": chance, "head_chance": weighted_by_sigma(chance, s)}
    attrs = {"model_id": name, "top": 5, "dataset": {"kind": "synthetic"}, "eligible_images": n_images}
    ids = {"image_id": (("image",), np.array([f"img{i:02d}" for i in range(n_images)], dtype=object))}
    return same_object_dataset(values, np.moveaxis(order, 0, -1), n_objects, ids, attrs)


def texts(fig: Figure) -> list[Text]:
    """Every visible, non-empty text of a figure (titles, labels, tick labels, legend entries and titles)."""
    return [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]


def check_page(fig: Figure, path: Path) -> None:
    """Saved at its size: no text under MIN_FONT, no wider than a page, every legend off every axes and inside the
    figure."""
    fig.savefig(path, dpi=100)
    small = sorted({(t.get_fontsize(), t.get_text()[:30]) for t in texts(fig) if t.get_fontsize() < MIN_FONT})
    assert not small, small
    assert fig.get_figwidth() <= PAGE
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    legends = fig.legends + [ax.get_legend() for ax in fig.axes if ax.get_legend()]
    assert legends
    frame = Bbox.from_bounds(0, 0, *fig.bbox.size)
    for leg in legends:
        box = leg.get_window_extent(renderer)
        assert frame.contains(box.x0 + 1, box.y0 + 1) and frame.contains(box.x1 - 1, box.y1 - 1)
        for ax in fig.axes:
            if ax.get_visible():
                inter = Bbox.intersection(box, ax.get_window_extent(renderer))
                assert inter is None or inter.width * inter.height == 0, (leg, ax)
