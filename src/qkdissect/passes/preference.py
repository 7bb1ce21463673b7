"""Attention preference on images with target, distractor and background masks (paper 4.1, Fig. 2).

Per (image, layer, head): the model's attention probabilities from the target token and from the distractor token
(the token where the down-scaled mask is largest, first index on ties), over the patch keys (prefix keys dropped,
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
from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from tqdm import tqdm

from ..core.device import device_record
from ..core.preference import REGIONS, SOURCES, grouped, preference_table, query_tokens
from ..data.masks import mask_dataset, mask_to_tokens
from ..errors import QKDissectError
from ..models import ModelLike, QKWeights, describe_loaded
from ..provenance.records import base_record, utc_now
from ..stores import write_store
from ..stores.schema import SCHEMA_VERSION
from .batching import AdaptiveBatch
from .hooks import layer_token_hooks
from .loop import Manifest, load_image_model, mask_dataset_dependency, weights_checked


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


def compute_preference(
    spec: ModelLike,
    dataset: str,
    output: str | Path,
    *,
    batch_size: int = 8,
    device: str = "auto",
    limit: int | None = None,
    example: int = 0,
    model_key: str | None = None,
    manifest: Manifest = None,
    progress: bool = True,
) -> Path:
    """Attention preference (paper 4.1) of a model on a mask dataset -> a preference store at ``output``, with the
    model-input crop of image ``example`` (the one Fig. 2 shows in panel A)."""

    started = utc_now()
    im = load_image_model(spec, device, model_key)
    qk, loaded, name, pre, dev, model, grid = im.qk, im.loaded, im.name, im.preprocess, im.device, im.model, im.grid
    manifest, deps = weights_checked(im.loaded, im.name, manifest)
    ds_masks = mask_dataset(dataset, limit=limit)
    tables, token_masks, rows_all = [], [], []
    items = ds_masks.items
    if not 0 <= example < len(items):
        raise QKDissectError(f"example image {example} is not in {dataset} ({len(items)} images: 0-{len(items) - 1})")
    example_crop = np.zeros((0, 0, 3), np.uint8)
    run = AdaptiveBatch(f"preference {name}")
    for b in tqdm(range(0, len(items), batch_size), desc=f"preference {name}", disable=not progress):
        xs, tms = [], []
        for j, it in enumerate(items[b : b + batch_size]):
            img, masks = it.load()
            if b + j == example:
                example_crop = np.asarray(pre.image(img), dtype=np.uint8)
            tm = np.stack([mask_to_tokens(masks[r], pre, grid).ravel() for r in REGIONS])
            tm = tm / np.maximum(tm.sum(axis=0, keepdims=True), 1e-12)  # area fractions summing to 1 per token
            xs.append(pre.tensor(img))
            tms.append(tm)
        tm_b = np.stack(tms)
        rows = query_tokens(tm_b[:, :2])
        x_b, rows_b = torch.stack(xs).to(dev), torch.as_tensor(rows, device=dev)
        probs = run(partial(_rows_of, model, qk, x_b, rows_b), torch.arange(len(xs), device=dev))
        tables.append(preference_table(probs.cpu().numpy(), tm_b))
        token_masks.append(tm_b)
        rows_all.append(rows)
    table = np.concatenate(tables)
    rows = np.concatenate(rows_all)
    present = rows >= 0
    groups = grouped(table, present)
    n_layers = qk.n_layers
    depth = np.arange(n_layers) / max(1, n_layers - 1)
    data = {
        "table": (
            ("image", "layer", "head", "source", "region"),
            table.astype(np.float32),
            {"description": "attention of the source token's row on each region (rows sum to 1)"},
        ),
        "query_token": (("image", "source"), rows, {"description": "patch index of the query token; -1: no mask"}),
        "token_masks": (
            ("image", "region", "token"),
            np.concatenate(token_masks).astype(np.float32),
            {"description": "area fractions of each region per patch token (sum to 1)"},
        ),
        "example_crop": (
            ("y", "x", "channel"),
            example_crop,
            {"description": "image `example` as the model saw it (resized, centre-cropped; 8-bit RGB)"},
        ),
    }
    for g, v in groups.items():
        data[g] = (("image", "layer", "head"), v.astype(np.float32), {"description": f"{g} (paper 4.1 grouping)"})
        data[f"layer_{g}"] = (("layer",), np.nanmean(v, axis=(0, 2)), {"description": "mean over images and heads"})
    record = base_record(
        "preference", {"batch_size": batch_size, "device_requested": device, "limit": limit, "example": example}
    )
    record.update(
        {
            "model": {"key": name, **qk.describe()},
            "weights": {**describe_loaded(loaded), "manifest": manifest},
            "inputs": {"dataset": ds_masks.describe()},
            "dependencies": [*deps, mask_dataset_dependency(ds_masks, dataset, limit)],
            "batch": run.record(),
            "device": device_record(device, dev),
            "started": started,
            "finished": utc_now(),
        }
    )
    out = xr.Dataset(
        data,
        coords={
            "image_id": (("image",), np.array([it.id for it in items], dtype=object)),
            "image_sha256": (("image",), np.array([it.sha256() or "" for it in items], dtype=object)),
            "source": (("source",), np.array(SOURCES, dtype=object)),
            "region": (("region",), np.array(REGIONS, dtype=object)),
            "layer": np.arange(n_layers),
            "depth": ("layer", depth),
        },
        attrs={
            "qkdissect_schema": f"preference/v{SCHEMA_VERSION}",
            "model_id": name,
            "spec": str(loaded.spec),
            "dataset": {**ds_masks.describe(), "spec": dataset, "limit": limit},
            "grid": list(grid),
            "preprocess": pre.describe(),
            "example": example,
            "notes": qk.notes,
            "provenance": record,
        },
    )
    return write_store(out, output)
