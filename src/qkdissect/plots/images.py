"""Figures built on token projections: optimal images per mode with query/key overlays (Fig. 1, Fig. 4, the
galleries S5-S16), one image's strongest modes (Fig. 5), one image next to the top images of chosen modes
(S17-S19), and the anisotropy baseline (S4).

Overlay (paper Fig. 4; the rendering is not specified anywhere, this is ours): each map is clipped to its
[30th, 95th] percentile and scaled to [0, 1], upsampled bilinearly to the image; red = query map, cyan (green
and blue) = key map, so white is where both are high; drawn over a dimmed grey copy of the image.

Contribution of a mode on one image (Fig. 5; the paper does not define it): ``s_n * max(max q * max k, min q *
min k)``, the largest rank-one logit term the mode can produce between two tokens of that image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import torch
import xarray as xr
from PIL import Image

from ..data.images import Preprocess, decode, image_source
from ..models import LoadedModel, QKWeights, load_qk, preprocess_for
from ..passes.hooks import layer_tokens, mode_maps

Mode = tuple[int, int, int, str]  # layer, head, mode, sign ("+" or "-")


def load_store_model(store: xr.Dataset) -> tuple[QKWeights, LoadedModel]:
    """The model a projections store was computed with (its ``spec``), refused when it loads other weights now."""
    qk, loaded = load_qk(store.attrs["spec"])
    want = store.attrs.get("weights_sha256")
    if want and loaded.weights_sha256 and want != loaded.weights_sha256:
        raise ValueError(
            f"{store.attrs['spec']} loads other weights (sha256 {loaded.weights_sha256[:12]}…) than the "
            f"projections were computed with ({want[:12]}…): recompute them"
        )
    return qk, loaded


def mode_label(m: Mode) -> str:
    """The paper's mode code, 0-based: "L8 H9 M2" (with "-" for the opposite sign)."""
    layer, head, mode, sign = m
    return f"L{layer} H{head} M{mode}" + (" (-)" if sign == "-" else "")


def degenerate_block(modes: xr.Dataset, m: Mode) -> tuple[int, int] | None:
    """(first, last) mode of the block of near-equal singular values that holds mode ``m`` (the store's ``block``
    ids, relative gap ``attrs.block_rtol``), or None when the mode is alone: then its u and v are identifiable;
    inside a block only the block's sum ``sum_n s_n u_n v_n^T`` is (any rotation of its vectors is as valid)."""
    layer, head, mode, _ = m
    ids = np.asarray(modes.block.values[layer, head])
    members = np.flatnonzero(ids == ids[mode])
    return (int(members[0]), int(members[-1])) if members.size > 1 else None


def _dagger(modes: xr.Dataset, m: Mode) -> str:
    return "†" if degenerate_block(modes, m) else ""


BLOCK_NOTE = "†: in a block of near-equal singular values; its vectors are not identifiable, only the block's sum"


def mode_text(modes: xr.Dataset, m: Mode, cosine: float, model: str) -> str:
    """The label of a mode in the galleries: model, code, cosine, singular value, and its degenerate block."""
    s = float(modes.S.values[m[0], m[1], m[2]])
    block = degenerate_block(modes, m)
    mark = f"\n† block M{block[0]}-M{block[1]}" if block else ""
    return f"{model}\n{mode_label(m)}\ncos = {cosine:.3f}\ns = {s:.3g}{mark}"


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


@dataclass
class ModeViewer:
    """Everything needed to draw modes on images: the model, its modes and scores, and the projections store
    (with the image source it was computed on)."""

    modes: xr.Dataset
    scores: xr.Dataset
    projections: xr.Dataset
    qk: QKWeights
    model: torch.nn.Module
    preprocess: Preprocess
    source_items: dict[str, Any]
    _tokens: dict[tuple[str, int], torch.Tensor] = field(default_factory=dict)
    _scores: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)

    @classmethod
    def open(cls, modes: xr.Dataset, scores: xr.Dataset, projections: xr.Dataset) -> ModeViewer:
        qk, loaded = load_store_model(projections)
        src = image_source(projections.attrs["images"]["spec"])
        items = {it.id: it for it in src.items}
        return cls(modes, scores, projections, qk, loaded.model.eval(), preprocess_for(loaded), items)

    # ------------------------------------------------------------------ data
    def top_images(self, m: Mode, k: int = 8) -> list[tuple[str, float]]:
        layer, head, mode, sign = m
        top = self.projections.sel(layer=layer, head=head, mode=mode, sign=sign)
        idx, score = top.top_image.values[:k], top.top_score.values[:k]
        ids = self.projections.image_id.values
        return [(str(ids[i]), float(s)) for i, s in zip(idx, score, strict=True) if i >= 0]

    def crops(self, ids: Sequence[str]) -> list[Image.Image]:
        """The images as the model sees them (resized and cropped)."""
        return [self.preprocess.image(self._decode(i)) for i in ids]

    def _decode(self, image_id: str) -> Image.Image:
        return decode(self.source_items[image_id], target=max(self.preprocess.crop))

    def prefetch(self, needed: dict[str, set[int]], batch: int = 16) -> None:
        """Run the model once per batch of images and keep the patch tokens of the layers each image needs."""
        todo = sorted(i for i, layers in needed.items() if any((i, ll) not in self._tokens for ll in layers))
        for b in range(0, len(todo), batch):
            ids = todo[b : b + batch]
            layers = sorted(set().union(*(needed[i] for i in ids)))
            x = torch.stack([self.preprocess.tensor(self._decode(i)) for i in ids])
            got = layer_tokens(self.model, self.qk, x, layers, self.projections.attrs["token_source"])
            for j, i in enumerate(ids):
                for layer in needed[i]:
                    self._tokens[(i, layer)] = got[layer][j]

    def maps(self, ids: Sequence[str], m: Mode) -> tuple[np.ndarray, np.ndarray]:
        """Query and key maps (image, g_h, g_w) of a mode on images (tokens computed once and kept)."""
        layer, head, mode, sign = m
        self.prefetch({i: {layer} for i in ids})
        toks = torch.stack([self._tokens[(i, layer)] for i in ids])
        s = 1.0 if sign == "+" else -1.0
        u = s * self.modes.U.values[layer, head, :, mode]
        v = s * self.modes.V.values[layer, head, :, mode]
        return mode_maps(toks, u, v, tuple(self.projections.attrs["grid"]))  # type: ignore[arg-type]

    def cosine(self, m: Mode) -> float:
        return float(self.scores.cosine.values[m[0], m[1], m[2]])

    def image_scores(self, image_id: str) -> tuple[np.ndarray, np.ndarray]:
        """(layer, head, mode) score+ and score- of every mode on one image (read from the store once)."""
        if image_id not in self._scores:
            row = int(np.flatnonzero(self.projections.image_id.values == image_id)[0])
            p = self.projections.isel(image=row)
            self._scores[image_id] = ((p.q_max * p.k_max).values, (p.q_min * p.k_min).values)
        return self._scores[image_id]

    def contributions(self, image_id: str) -> xr.DataArray:
        """(layer, head, mode) contribution of every mode on one image: s_n * max over signs of the score."""
        plus, minus = self.image_scores(image_id)
        return xr.DataArray(np.maximum(plus, minus) * self.modes.S.values, dims=("layer", "head", "mode"))

    def best_sign(self, image_id: str, layer: int, head: int, mode: int) -> str:
        plus, minus = self.image_scores(image_id)
        return "+" if plus[layer, head, mode] >= minus[layer, head, mode] else "-"


def auto_modes(scores: xr.Dataset, modes: xr.Dataset, n: int = 5) -> list[Mode]:
    """n modes spread over depth: in each chosen layer the strongest mode (largest s) of the strongest head."""
    n_layers = modes.sizes["layer"]
    layers = sorted({round(float(x)) for x in np.linspace(1, n_layers - 2, n)}) if n_layers > 2 else [0]
    out: list[Mode] = []
    for layer in layers:
        s = modes.S.values[layer]
        head = int(np.argmax(s[:, 0]))
        out.append((layer, head, 0, "+"))
    return out


def contrast_modes(scores: xr.Dataset, modes: xr.Dataset) -> list[Mode]:
    """Two illustrative modes for Fig. 1: among each layer's strong modes (top 10% of s), the most positive
    cosine at about 60% depth (grouping) and the most negative at about 85% (contextualisation)."""
    out: list[Mode] = []
    n_layers = modes.sizes["layer"]
    for frac, pick in ((0.6, np.argmax), (0.85, np.argmin)):
        layer = round(frac * (n_layers - 1))
        s = modes.S.values[layer]
        cos = np.where(s >= np.quantile(s, 0.9), scores.cosine.values[layer], np.nan)
        flat = pick(np.nan_to_num(cos, nan=-np.inf if pick is np.argmax else np.inf))
        head, mode = np.unravel_index(int(flat), s.shape)
        out.append((layer, int(head), int(mode), "+"))
    return out


def parse_modes(spec: Any, scores: xr.Dataset, modes: xr.Dataset, auto: str = "spread") -> list[Mode]:
    """Modes from a notebook parameter: "auto" or a list of [layer, head, mode] or [layer, head, mode, sign]."""
    if spec in (None, "auto"):
        return contrast_modes(scores, modes) if auto == "contrast" else auto_modes(scores, modes)
    out: list[Mode] = []
    for item in spec:
        layer, head, mode = (int(v) for v in item[:3])
        sign = str(item[3]) if len(item) > 3 else "+"
        for name, val, size in (("layer", layer, "layer"), ("head", head, "head"), ("mode", mode, "mode")):
            if not 0 <= val < modes.sizes[size]:
                raise ValueError(f"{mode_label((layer, head, mode, sign))}: {name} {val} out of range")
        out.append((layer, head, mode, sign))
    return out


def _image_cell(ax: plt.Axes, rgb: np.ndarray | Image.Image, caption: str | None = None) -> None:
    ax.imshow(rgb)
    ax.set_xticks([])
    ax.set_yticks([])
    for sp in ax.spines.values():
        sp.set_visible(False)
    if caption:
        ax.set_title(caption, fontsize=5, pad=1)


def mode_gallery_figure(rows: Sequence[tuple[ModeViewer, Mode]], k: int = 8, title: str = "") -> plt.Figure:
    """One row per (model, mode): its code, cosine and singular value, then its top-k images with the red (query) /
    cyan (key) overlay (Fig. 1, Fig. 4, S5-S16)."""
    fig, axes = plt.subplots(
        len(rows), k + 1, figsize=(1.05 * (k + 1), 1.1 * len(rows) + 0.4), squeeze=False, layout="constrained"
    )
    tops = [viewer.top_images(m, k) for viewer, m in rows]
    for viewer in {id(v): v for v, _ in rows}.values():
        needed: dict[str, set[int]] = {}
        for (v, m), top in zip(rows, tops, strict=True):
            if v is viewer:
                for i, _ in top:
                    needed.setdefault(i, set()).add(m[0])
        viewer.prefetch(needed)
    for row, ((viewer, m), top) in enumerate(zip(rows, tops, strict=True)):
        label = axes[row, 0]
        label.axis("off")
        text = mode_text(viewer.modes, m, viewer.cosine(m), viewer.projections.attrs["model_id"])
        label.text(0.5, 0.5, text, ha="center", va="center", fontsize=6)
        if top:
            crops = viewer.crops([i for i, _ in top])
            q, kk = viewer.maps([i for i, _ in top], m)
            for j, ((_, score), img) in enumerate(zip(top, crops, strict=True)):
                _image_cell(axes[row, j + 1], overlay(img, q[j], kk[j]), f"{score:.3g}")
        for j in range(len(top), k):
            axes[row, j + 1].axis("off")
    title = title or "top images per mode (red: query map, cyan: key map, white: both)"
    if any(degenerate_block(viewer.modes, m) for viewer, m in rows):
        title += "\n" + BLOCK_NOTE
    fig.suptitle(title, fontsize=8)
    return fig


def auto_layer_heads(viewer: ModeViewer, image_id: str, n: int = 3) -> list[tuple[int, int]]:
    """n layers spread over depth, each with the head whose strongest mode contributes most on the image."""
    c = viewer.contributions(image_id).values
    n_layers = c.shape[0]
    layers = sorted({round(float(x)) for x in np.linspace(1, max(1, n_layers - 2), n)})
    return [(layer, int(np.argmax(c[layer].max(axis=-1)))) for layer in layers]


def image_modes_figure(
    viewer: ModeViewer, image_id: str, layer_heads: Sequence[tuple[int, int]], n_modes: int = 6
) -> plt.Figure:
    """Fig. 5: one image; for each (layer, head) its n strongest modes on this image by contribution."""
    crops = viewer.crops([image_id])
    viewer.prefetch({image_id: {layer for layer, _ in layer_heads}})
    contrib = viewer.contributions(image_id).values
    fig, axes = plt.subplots(
        len(layer_heads),
        n_modes + 1,
        figsize=(1.1 * (n_modes + 1), 1.2 * len(layer_heads) + 0.4),
        squeeze=False,
        layout="constrained",
    )
    marked = False
    for row, (layer, head) in enumerate(layer_heads):
        _image_cell(axes[row, 0], crops[0], f"L{layer} H{head}")
        order = np.argsort(-contrib[layer, head])[:n_modes]
        for j, mode in enumerate(order):
            m: Mode = (layer, head, int(mode), viewer.best_sign(image_id, layer, head, int(mode)))
            q, k = viewer.maps([image_id], m)
            cap = f"{mode_label(m)}{_dagger(viewer.modes, m)} cos {viewer.cosine(m):+.2f}\n"
            cap += f"contribution {contrib[layer, head, mode]:.3g}"
            marked |= bool(_dagger(viewer.modes, m))
            _image_cell(axes[row, j + 1], overlay(crops[0], q[0], k[0]), cap)
    title = f"{viewer.projections.attrs['model_id']}: {image_id}, strongest modes per head"
    fig.suptitle(title + (f"\n{BLOCK_NOTE}" if marked else ""), fontsize=8)
    return fig


def image_and_top_figure(viewer: ModeViewer, image_id: str, selected: Sequence[Mode], k: int = 8) -> plt.Figure:
    """S17-S19: per mode, the image, its mode map, then the top-k images of that mode."""
    crops = viewer.crops([image_id])
    tops = {m: viewer.top_images(m, k) for m in selected}
    needed: dict[str, set[int]] = {image_id: {m[0] for m in selected}}
    for m, top in tops.items():
        for i, _ in top:
            needed.setdefault(i, set()).add(m[0])
    viewer.prefetch(needed)
    fig, axes = plt.subplots(
        len(selected), k + 2, figsize=(1.0 * (k + 2), 1.15 * len(selected) + 0.4), squeeze=False, layout="constrained"
    )
    for row, m in enumerate(selected):
        _image_cell(axes[row, 0], crops[0], f"{mode_label(m)}{_dagger(viewer.modes, m)} cos {viewer.cosine(m):+.2f}")
        q, kk = viewer.maps([image_id], m)
        _image_cell(axes[row, 1], overlay(crops[0], q[0], kk[0]), "its mode map")
        top = tops[m]
        if top:
            tc = viewer.crops([i for i, _ in top])
            tq, tk = viewer.maps([i for i, _ in top], m)
            for j, img in enumerate(tc):
                _image_cell(axes[row, j + 2], overlay(img, tq[j], tk[j]))
        for j in range(len(top), k):
            axes[row, j + 2].axis("off")
    title = f"{viewer.projections.attrs['model_id']}: singular-mode maps of {image_id} and the top images of each mode"
    if any(_dagger(viewer.modes, m) for m in selected):
        title += f"\n{BLOCK_NOTE}"
    fig.suptitle(title, fontsize=8)
    return fig


def top_modes_of_image(viewer: ModeViewer, image_id: str, n: int = 4) -> list[Mode]:
    """The n modes (over all layers and heads) with the largest contribution on one image."""
    c = viewer.contributions(image_id).values
    flat = np.argsort(-c, axis=None)[:n]
    out: list[Mode] = []
    for f in flat:
        layer, head, mode = (int(v) for v in np.unravel_index(int(f), c.shape))
        out.append((layer, head, mode, viewer.best_sign(image_id, layer, head, mode)))
    return out
