"""Attention preference on images with target, distractor and background masks (paper 4.1, Fig. 2).

Per (image, layer, head): the model's attention probabilities from the target token and from the distractor token
(a maximum of the mask down-scaled to the token grid: among its maximal tokens, the one farthest from the tokens
outside them and from the grid's edge, so that the query sits inside the object, not on its edge against the
background; :func:`qkdissect.core.preference.query_tokens`), over the patch keys (prefix keys dropped,
renormalised to sum to 1), and their inner products with the three area-fraction masks. That gives a (source,
region) 2 x 3 table whose rows each sum to 1. Grouped as the paper does: same = mean(target->target,
distractor->distractor), different = mean(target->distractor, distractor->target), background =
mean(target->background, distractor->background).

The probabilities are the softmax of the model's own logits ``(W_q x_i + b_q).(W_k x_j + b_k) * scale``, computed
from the tokens that feed W_q and W_k (a hook on each layer's norm) for the two query rows only, so memory stays
small at any resolution. Models whose attention adds a position bias to these logits are flagged in the adapter
notes (the bias is not included).
"""

from __future__ import annotations

from functools import partial
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..core.preference import QUERY_TOKEN_RULE, REGIONS, SOURCES, grouped, preference_table, query_tokens
from ..data.masks import mask_dataset, mask_to_tokens
from ..errors import QKDissectError
from ..models import QKWeights
from ..requests import PreferenceRequest
from ..stores.schema import preference_dataset
from ..util.clock import utc_now
from .batching import AdaptiveBatch
from .hooks import layer_token_hooks
from .io import finish
from .loop import load_image_model, mask_batches, mask_coords, mask_dataset_dependency, pass_record
from .shards import Shard, shard_of_dataset, shard_store


@torch.inference_mode()
def attention_rows(model: torch.nn.Module, qk: QKWeights, x: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
    """Attention probabilities (image, layer, head, row, patch key) of the given patch-token query rows
    (image, row), over patch keys only (prefix keys dropped, renormalised)."""
    n_prefix = qk.layout.n_prefix
    out: list[torch.Tensor | None] = [None] * qk.n_layers
    safe = rows.clamp(min=0)

    def hook(i: int, t: torch.Tensor) -> None:
        a = qk.layers[i]
        t = t.double()
        q_tok = t[torch.arange(t.shape[0])[:, None], n_prefix + safe]  # (b, r, d)
        q = torch.einsum("hed,brd->bhre", a.w_q.double(), q_tok) + a.b_q.double()[None, :, None, :]
        k = torch.einsum("hed,btd->bhte", a.w_k.double(), t) + a.b_k.double()[None, :, None, :]
        p = torch.softmax(q @ k.transpose(-1, -2) * a.scale, dim=-1)[..., n_prefix:]  # (b, h, r, patches)
        out[i] = p / p.sum(dim=-1, keepdim=True)

    with layer_token_hooks(qk, "post-norm", hook):
        model(x)
    if any(o is None for o in out):
        raise RuntimeError("the forward pass did not reach every attention layer")
    return torch.stack([o for o in out if o is not None], dim=1)


def _rows_of(model: Any, qk: QKWeights, x: torch.Tensor, rows: torch.Tensor, i: torch.Tensor) -> torch.Tensor:
    """The preference pass's attention rows of the images ``i`` of a batch (one piece for AdaptiveBatch)."""
    return attention_rows(model, qk, x[i], rows[i])


def compute_preference(*args: Any, **kw: Any) -> xr.Dataset:
    """:func:`run_preference` of ``PreferenceRequest.build(spec, dataset, output, batch_size=..., ...)``."""
    return run_preference(PreferenceRequest.build(*args, **kw))


def run_preference(r: PreferenceRequest) -> xr.Dataset:
    """Attention preference (paper 4.1) of a model on a mask dataset -> a preference dataset (written to
    ``output`` when given), with the model-input crop of image ``example`` (the one Fig. 2 shows in panel A).
    ``shard``: only that shard of the dataset (whole batches), a store :func:`.shards.merge_preference` merges."""
    shard = Shard.of(r.shard)
    started = utc_now()
    whole = mask_dataset(r.dataset, limit=r.limit)  # an incomplete dataset fails before the model loads
    data, where = shard_of_dataset(whole, shard, r.batch_size)
    im = load_image_model(r.model)
    im.qk.require_plain_logits("the preference pass")
    pre, grid = im.preprocess, im.grid
    if not 0 <= r.example < len(whole):
        raise QKDissectError(
            f"example image {r.example} is not in {r.dataset} ({len(whole)} images: 0-{len(whole) - 1})"
        )
    example_crop = np.zeros((0, 0, 3), np.uint8)
    tables, token_masks, rows_all = [], [], []
    run = AdaptiveBatch(f"preference {im.name}")
    for b, batch in mask_batches(data, r.batch_size, f"preference {im.name}", r.progress):
        xs, tms = [], []
        for j, (_, img, masks) in enumerate(batch):
            if where["start"] + b + j == r.example:
                example_crop = np.asarray(pre.image(img), dtype=np.uint8)
            tm = np.stack([mask_to_tokens(masks[region], pre, grid).ravel() for region in REGIONS])
            tms.append(tm / np.maximum(tm.sum(axis=0, keepdims=True), 1e-12))  # area fractions summing to 1
            xs.append(pre.tensor(img))
        tm_b = np.stack(tms)
        rows = query_tokens(tm_b[:, :2], grid)
        x_b, rows_b = torch.stack(xs).to(im.device), torch.as_tensor(rows, device=im.device)
        probs = run(partial(_rows_of, im.model, im.qk, x_b, rows_b), torch.arange(len(xs), device=im.device))
        tables.append(preference_table(probs.cpu().numpy(), tm_b))
        token_masks.append(tm_b)
        rows_all.append(rows)
    n_layers, n_heads = im.qk.n_layers, im.qk.n_heads
    table = np.concatenate(tables) if tables else np.zeros((0, n_layers, n_heads, len(SOURCES), len(REGIONS)))
    rows = np.concatenate(rows_all) if rows_all else np.zeros((0, 2), np.int64)
    masks_all = np.concatenate(token_masks) if token_masks else np.zeros((0, len(REGIONS), grid[0] * grid[1]))
    parameters = {
        "batch_size": r.batch_size,
        "device_requested": r.model.device,
        "limit": r.limit,
        "example": r.example,
    }
    inputs = [mask_dataset_dependency(whole, r.dataset, r.limit)]
    record = pass_record("preference", parameters, im, inputs, r.model.device, started, batch=run.record())
    attrs = {
        "model_id": im.name,
        "spec": str(im.source.spec),
        "dataset": {**whole.describe(), "spec": r.dataset, "limit": r.limit},
        "grid": list(grid),
        "preprocess": pre.describe(),
        "example": r.example,
        "query_token_rule": QUERY_TOKEN_RULE,
        "notes": im.qk.notes,
        "provenance": record,
    }
    out = preference_dataset(table, rows, masks_all, grouped(table, rows >= 0), example_crop, SOURCES, REGIONS,
                             mask_coords(data), attrs)  # fmt: skip
    if shard is not None:  # the float64 table the groups are computed from, for the merge
        dims = ("image", "layer", "head", "source", "region")
        desc = "table in float64 (what the groups are computed from)"
        out = shard_store(out, {"table_fp64": (dims, table.astype(np.float64), desc)}, where)
    return finish(out, r.output)
