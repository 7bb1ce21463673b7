"""The atlas pass: the query and key maps of every mode's top images, for the mode atlas (:mod:`qkdissect.website`).

A projections store ranks the images of a set per (layer, head, mode, sign) but keeps only the extremes of their
maps. This pass runs the model once over the union of those top images (each image once, however many modes it
tops), projects each layer's patch tokens onto every mode in one GEMM (``[U_l | V_l]``, as the projection pass) and
keeps, for every slot (layer, head, mode, sign, rank), the query and key maps ``x_t . u`` and ``x_t . v`` of the
slot's image, the mode's sign applied (``-``: ``-u``, ``-v``, as the maps pass). No Python loop runs over heads or
modes: the slots of a layer are gathered from its projection at once.

Size: a map is averaged over the patch grid down to at most ``grid`` cells a side (DINOv2 at 518 px: 37 x 37 ->
16 x 16; the offline default's 224 px give 16 x 16 already), then stored as 8 bits with its own offset and step
(``lo + step * code``, error <= step / 2). Each image
is stored once, as a thumbnail (at most ``thumbnail`` pixels a side) of the model-input crop.

Sharded (``--shard K/N``, as the projection pass): shard K runs over its share of the top images, in whole
batches, and keeps the slots whose image it holds (the others empty; ``attrs["shard"]`` says where its images lie);
:func:`qkdissect.passes.shards.merge_atlas` puts the N shard stores together into the store one job writes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import xarray as xr
from PIL import Image

from ..data.decoding import decode
from ..data.sources import ImageItem, image_source, item_sha256, read_raw
from ..errors import QKDissectError
from ..models import QKWeights
from ..options import TokenSource
from ..requests import AtlasMapsRequest
from ..stores.schema import atlas_dataset
from ..util.clock import utc_now
from .hooks import layer_token_hooks, modes_uv
from .io import finish, store_input
from .loop import ImageModel, image_bar, load_image_model, modes_of, pass_record
from .shards import Shard

#: 8 bits per map value
LEVELS = 255


def top_slots(top_image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The images a projections store ranks (positions on its image dim, sorted, each once) and every slot's
    position among them (-1: an empty slot)."""
    top = np.asarray(top_image, dtype=np.int64)
    used = np.unique(top[top >= 0])
    return used, np.where(top >= 0, np.searchsorted(used, np.maximum(top, 0)), -1)


def pooled_size(grid: tuple[int, int], most: int) -> tuple[int, int]:
    """The (gy, gx) a patch grid is averaged down to: at most ``most`` a side."""
    return min(grid[0], most), min(grid[1], most)


def pooled_tokens(x: torch.Tensor, qk: QKWeights, out_grid: tuple[int, int]) -> torch.Tensor:
    """A layer's patch tokens (batch, cell, d), averaged over the patch grid down to ``out_grid``: projecting
    them onto u and v gives the averaged maps (the average is linear), at a fraction of the cost."""
    grid = qk.layout.grid
    assert grid is not None
    patches = x[:, qk.layout.n_prefix :]
    if tuple(grid) == tuple(out_grid):
        return patches
    image = patches.transpose(1, 2).reshape(x.shape[0], x.shape[2], *grid)  # (batch, d, gy, gx)
    return torch.nn.functional.adaptive_avg_pool2d(image, out_grid).flatten(2).transpose(1, 2)


def quantise(maps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(n, cells) maps -> uint8 codes, the value of code 0 (the map's minimum) and of one step (range / 255)."""
    lo, hi = torch.aminmax(maps, dim=1)
    step = (hi - lo) / LEVELS
    step = torch.where(step >= torch.finfo(step.dtype).tiny, step, 0.0)  # a subnormal step: too coarse, a flat map
    safe = torch.where(step > 0, step, torch.ones_like(step))
    code = ((maps - lo[:, None]) / safe[:, None]).round().clamp(0, LEVELS)
    return code.to(torch.uint8), lo, step


def dequantise(code: np.ndarray, lo: np.ndarray, step: np.ndarray) -> np.ndarray:
    """The maps back from their codes (``lo`` and ``step`` broadcast over the map's last two dims)."""
    return np.asarray(lo)[..., None, None] + np.asarray(step)[..., None, None] * np.asarray(code, dtype=np.float64)


@dataclass
class SlotMaps:
    """Collects the quantised maps of every slot while the model runs over the top images, batch by batch."""

    qk: QKWeights
    uv: torch.Tensor  # (layer, d, 2 * head * mode)
    shape: tuple[int, int, int]  # (layer, head, mode)
    slot_image: np.ndarray  # (layer, head, mode, sign, rank): the slot's image (position among the top images)
    out_grid: tuple[int, int]
    source: TokenSource
    codes: dict[str, np.ndarray] = field(default_factory=dict)
    start: int = 0

    def __post_init__(self) -> None:
        n_layers = self.shape[0]
        slots = self.slot_image.reshape(n_layers, -1)  # (layer, head * mode * sign * rank)
        gy, gx = self.out_grid
        for side in ("q", "k"):
            self.codes[f"{side}_code"] = np.zeros((*slots.shape, gy, gx), np.uint8)
            self.codes[f"{side}_lo"] = np.full(slots.shape, np.nan, np.float32)
            self.codes[f"{side}_step"] = np.full(slots.shape, np.nan, np.float32)
        _, n_heads, n_modes = self.shape
        n_signs, n_ranks = self.slot_image.shape[3:]
        flat = np.arange(slots.shape[1])
        head, mode, sign, _ = np.unravel_index(flat, (n_heads, n_modes, n_signs, n_ranks))
        self._column = torch.as_tensor(head * n_modes + mode)  # the slot's column of [U_l | V_l] (its u)
        self._sign = torch.as_tensor(np.where(sign == 0, 1.0, -1.0), dtype=self.uv.dtype)
        self._slots = torch.as_tensor(slots)

    def _layer(self, layer: int, x: torch.Tensor) -> None:
        img = self._slots[layer]
        chosen = torch.nonzero((img >= self.start) & (img < self.start + x.shape[0])).flatten()
        if chosen.numel() == 0:
            return
        p = pooled_tokens(x, self.qk, self.out_grid).to(self.uv.dtype) @ self.uv[layer]  # (batch, cell, 2HM)
        dev = p.device
        b, col = (img[chosen] - self.start).to(dev), self._column[chosen].to(dev)
        sign = self._sign[chosen].to(dev)[:, None]
        half = self.shape[1] * self.shape[2]
        for side, maps in (("q", p[b, :, col] * sign), ("k", p[b, :, col + half] * sign)):  # (slot, cell)
            code, lo, step = quantise(maps)
            idx = chosen.numpy()
            self.codes[f"{side}_code"][layer, idx] = code.cpu().numpy().reshape(-1, *self.out_grid)
            self.codes[f"{side}_lo"][layer, idx] = lo.float().cpu().numpy()
            self.codes[f"{side}_step"][layer, idx] = step.float().cpu().numpy()

    @torch.inference_mode()
    def __call__(self, model: torch.nn.Module, x: torch.Tensor, start: int) -> None:
        """Run the model on images ``start``, ``start + 1``, ... (positions among the top images)."""
        self.start = start
        with layer_token_hooks(self.qk, self.source, self._layer):
            model(x.to(self.uv.device))

    def arrays(self) -> dict[str, np.ndarray]:
        """The codes, offsets and steps, shaped (layer, head, mode, sign, rank[, gy, gx])."""
        shape = self.slot_image.shape
        return {k: v.reshape(*shape, *v.shape[2:]) for k, v in self.codes.items()}


def _items(proj: xr.Dataset, used: np.ndarray) -> list[ImageItem]:
    """The image set's items of the top images, in their order."""
    by_id = {it.id: it for it in image_source(proj.attrs["images"]["spec"]).items}
    ids = [str(i) for i in proj.image_id.values[used]]
    missing = [i for i in ids if i not in by_id]
    if missing:
        raise QKDissectError(f"images {missing[:3]} of the projections store are no longer in its image set")
    return [by_id[i] for i in ids]


def _read(im: ImageModel, item: ImageItem, digest: str, thumbnail: int) -> tuple[torch.Tensor, np.ndarray]:
    """An image as the model saw it (checked against the digest the projections store recorded), its model input
    and its thumbnail."""
    raw = read_raw(item)
    now = item_sha256(item, raw)
    if digest and now != digest:
        raise QKDissectError(
            f"image {item.id} changed after the projections store was made (sha256 {digest[:12]}… -> "
            f"{str(now)[:12]}…): project the image set again"
        )
    crop = im.preprocess.image(decode(item, target=max(im.preprocess.crop), raw=raw))
    thumb = crop.copy()
    thumb.thumbnail((thumbnail, thumbnail), Image.Resampling.LANCZOS)
    return im.preprocess.normalise(crop), np.asarray(thumb, dtype=np.uint8)


def compute_atlas_maps(*args: Any, **kw: Any) -> xr.Dataset:
    """:func:`run_atlas_maps` of ``AtlasMapsRequest.build(spec, modes, projections, output, grid=..., ...)``."""
    return run_atlas_maps(AtlasMapsRequest.build(*args, **kw))


def run_atlas_maps(r: AtlasMapsRequest) -> xr.Dataset:
    """The query and key maps of every (layer, head, mode, sign)'s top images in ``projections`` (made from
    ``modes``), quantised, and each of those images once as a thumbnail -> an atlas dataset (written to
    ``output`` when given). ``shard``: only that shard of the top images, into a shard store that
    :func:`qkdissect.passes.shards.merge_atlas` merges with the others into this very store."""
    shard = Shard.of(r.shard)
    started, t0 = utc_now(), time.perf_counter()
    proj, pdeps = store_input(r.projections, "projections", "projections store")
    im = load_image_model(r.model)
    modes_ds, mdeps = modes_of(r.modes, im)
    if proj.top_image.shape[:3] != modes_ds.S.shape:
        raise QKDissectError(
            f"the projections store ranks {proj.top_image.shape[:3]} (layer, head, mode), the modes store has "
            f"{modes_ds.S.shape}: give the modes the projections were made from"
        )
    used, slot_image = top_slots(proj.top_image.values)
    n_used = len(used)
    first, stop = (0, n_used) if shard is None else shard.span(n_used, r.batch_size)
    used = used[first:stop]
    slot_image = np.where((slot_image >= first) & (slot_image < stop), slot_image - first, -1)
    items = _items(proj, used)
    digests = [str(d) for d in proj.image_sha256.values[used]]
    uv, shape = modes_uv(im.qk, modes_ds.U.values, modes_ds.V.values)
    out_grid = pooled_size(im.grid, r.grid)
    source: TokenSource = proj.attrs["token_source"]
    collect = SlotMaps(im.qk, uv.to(im.device, torch.float32).contiguous(), shape, slot_image, out_grid, source)
    thumbs: list[np.ndarray] = []
    t_load = time.perf_counter() - t0
    with image_bar(len(items), f"atlas {im.name}", r.progress) as bar:
        for start in range(0, len(items), r.batch_size):
            batch = zip(items[start : start + r.batch_size], digests[start : start + r.batch_size], strict=True)
            read = [_read(im, it, d, r.thumbnail) for it, d in batch]
            collect(im.model, torch.stack([x for x, _ in read]), start)
            thumbs += [t for _, t in read]
            bar.update(len(read))
    timings = {"load": round(t_load, 3), "total": round(time.perf_counter() - t0, 3)}
    parameters = {
        "grid": r.grid,
        "thumbnail": r.thumbnail,
        "batch_size": r.batch_size,
        "device_requested": r.model.device,
    }
    record = pass_record("atlas", parameters, im, [*mdeps, *pdeps], r.model.device, started, timings_s=timings)
    attrs = {
        "model_id": im.name,
        "spec": str(im.source.spec),
        "token_source": source,
        "grid": list(im.grid),
        "prefix_tokens": list(im.qk.layout.prefix_kinds),
        "map_grid": list(out_grid),
        "thumbnail": r.thumbnail,
        "images": proj.attrs["images"],
        "image_score": proj.attrs.get("image_score", "released"),
        "top_k": int(proj.sizes["rank"]),
        "preprocess": im.preprocess.describe(),
        "weights_sha256": im.source.weights_sha256,
        "provenance": record,
    }
    coords: dict[str, Any] = {
        "image_id": (("image",), np.array([it.id for it in items], dtype=object)),
        "image_sha256": (("image",), np.array(digests, dtype=object)),
    }
    thumbnails = np.stack(thumbs) if thumbs else np.zeros((0, 1, 1, 3), np.uint8)
    top_score = proj.top_score.values.astype(np.float32)
    on_prefix = proj.get("key_top_on_prefix")
    ds = atlas_dataset(collect.arrays(), top_score, slot_image, thumbnails, coords, attrs, on_prefix)
    if shard is not None:
        ds.attrs["shard"] = {**shard.describe(), "start": first, "stop": stop, "images": n_used}
    return finish(ds, r.output)
