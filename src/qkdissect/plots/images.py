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

from collections.abc import Sequence
from dataclasses import dataclass

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from PIL import Image

from ..options import Mode, mode_label

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
    return f"{model}\n{mode_label(row.mode)}\ncos = {row.cosine:.3f}\ns = {row.singular_value:.3g}{mark}"


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


def image_cell(ax: plt.Axes, rgb: np.ndarray | Image.Image, caption: str | None = None) -> None:
    ax.imshow(rgb)
    ax.set_xticks([])
    ax.set_yticks([])
    for sp in ax.spines.values():
        sp.set_visible(False)
    if caption:
        ax.set_title(caption, fontsize=5, pad=1)


def _k(stores: Sequence[xr.Dataset]) -> int:
    return max(int(ds.attrs["request"].get("k", 8)) for ds in stores)


def gallery_figure(stores: Sequence[xr.Dataset], title: str = "") -> plt.Figure:
    """One row per (model, mode) of the maps stores (kind ``top``), in order: its code, cosine and singular
    value, then its top-k images with the red (query) / cyan (key) overlay (Fig. 1, Fig. 4, S5-S16)."""
    rows = [(ds.attrs["model_id"], row) for ds in stores for row in map_rows(ds)]
    k = _k(stores)
    fig, axes = plt.subplots(
        len(rows), k + 1, figsize=(1.05 * (k + 1), 1.1 * len(rows) + 0.4), squeeze=False, layout="constrained"
    )
    for n, (model, row) in enumerate(rows):
        label = axes[n, 0]
        label.axis("off")
        label.text(0.5, 0.5, mode_text(row, model), ha="center", va="center", fontsize=6)
        slots = row.slots()
        for j, (crop, q, kk, score) in enumerate(slots):
            image_cell(axes[n, j + 1], overlay(crop, q, kk), f"{score:.3g}")
        for j in range(len(slots), k):
            axes[n, j + 1].axis("off")
    title = title or "top images per mode (red: query map, cyan: key map, white: both)"
    if any(row.block for _, row in rows):
        title += "\n" + BLOCK_NOTE
    fig.suptitle(title, fontsize=8)
    return fig


def image_modes_figure(store: xr.Dataset) -> plt.Figure:
    """Fig. 5: one image; for each (layer, head) its strongest modes on this image by contribution (a maps store
    of kind ``image-modes``)."""
    layer_heads = [tuple(x) for x in store.attrs["layer_heads"]]
    n_modes = int(store.attrs["request"].get("n_modes", 6))
    fig, axes = plt.subplots(
        len(layer_heads),
        n_modes + 1,
        figsize=(1.1 * (n_modes + 1), 1.2 * len(layer_heads) + 0.4),
        squeeze=False,
        layout="constrained",
    )
    by_head: dict[tuple[int, int], list[MapRow]] = {}
    for row in map_rows(store):
        by_head.setdefault(row.mode[:2], []).append(row)
    crop = Image.fromarray(store.crop.values[0])
    marked = False
    for n, (layer, head) in enumerate(layer_heads):
        image_cell(axes[n, 0], crop, f"L{layer} H{head}")
        rows = by_head.get((layer, head), [])
        for j, row in enumerate(rows):
            ((img, q, k, contribution),) = row.slots()
            cap = f"{mode_label(row.mode)}{row.dagger} cos {row.cosine:+.2f}\ncontribution {contribution:.3g}"
            marked |= bool(row.dagger)
            image_cell(axes[n, j + 1], overlay(img, q, k), cap)
        for j in range(len(rows), n_modes):
            axes[n, j + 1].axis("off")
    title = f"{store.attrs['model_id']}: {store.attrs['image']}, strongest modes per head"
    fig.suptitle(title + (f"\n{BLOCK_NOTE}" if marked else ""), fontsize=8)
    return fig


def image_and_top_figure(store: xr.Dataset) -> plt.Figure:
    """S17-S19: per mode, the image, its mode map, then the top-k images of that mode (a maps store of kind
    ``image-top``: slot 0 is the image, the others its top images)."""
    rows = map_rows(store)
    k = _k([store])
    fig, axes = plt.subplots(
        len(rows), k + 2, figsize=(1.0 * (k + 2), 1.15 * len(rows) + 0.4), squeeze=False, layout="constrained"
    )
    for n, row in enumerate(rows):
        (crop, q, kk, _), *top = row.slots()
        image_cell(axes[n, 0], crop, f"{mode_label(row.mode)}{row.dagger} cos {row.cosine:+.2f}")
        image_cell(axes[n, 1], overlay(crop, q, kk), "its mode map")
        for j, (img, tq, tk, _) in enumerate(top):
            image_cell(axes[n, j + 2], overlay(img, tq, tk))
        for j in range(len(top), k):
            axes[n, j + 2].axis("off")
    title = f"{store.attrs['model_id']}: singular-mode maps of {store.attrs['image']} and the top images of each mode"
    if any(row.dagger for row in rows):
        title += f"\n{BLOCK_NOTE}"
    fig.suptitle(title, fontsize=8)
    return fig
