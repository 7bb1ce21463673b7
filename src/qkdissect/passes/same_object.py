"""Same-object probability (paper 4.2, Fig. 6): do a mode's query and key sides pick out the same object in the
images that excite the mode most?

For every (layer, head, mode, sign): the top images by the mode's image score (section 1.6, as in the
projections); in each, the object with the largest mean query projection and the one with the largest mean key
projection (means weighted by each token's area fraction of the object; objects smaller than one token are left
out); p = the fraction of top images in which the two coincide. Per head, P = sum_n s_n p_n / sum_n s_n over modes
and both signs; per layer, the mean over heads. Images with fewer than two objects cannot separate the two sides
and are never counted among the top images.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm import tqdm

from ..core.device import device_record
from ..core.same_object import optimal_objects, top_fraction, weighted_by_sigma
from ..data.images import Preprocess
from ..data.masks import mask_dataset, mask_to_tokens
from ..models import ModelLike, describe_loaded
from ..options import SIGNS
from ..provenance.records import base_record, dependency, tree_sha256, utc_now
from ..stores import write_store
from ..stores.schema import SCHEMA_VERSION
from .batching import AdaptiveBatch
from .hooks import layer_token_hooks, stacked_uv
from .loop import Manifest, load_image_model, mask_dataset_dependency, modes_of, weights_checked


def object_weights(
    masks: dict[str, np.ndarray], pre: Preprocess, grid: tuple[int, int], min_tokens: float = 1.0
) -> tuple[np.ndarray, list[str]]:
    """(object, token) weights, each row the object's area fractions normalised to sum to 1, for the masks named
    ``object:*`` that cover at least ``min_tokens`` tokens; and their names."""
    rows, names = [], []
    for name, m in masks.items():
        if not name.startswith("object:"):
            continue
        t = mask_to_tokens(m, pre, grid).ravel()
        if t.sum() >= min_tokens:
            rows.append(t / t.sum())
            names.append(name)
    return (np.stack(rows) if rows else np.zeros((0, grid[0] * grid[1]))), names


def compute_same_object(
    spec: ModelLike,
    modes_path: str | Path,
    dataset: str,
    output: str | Path,
    *,
    top: int = 5,
    tokens: str = "post-norm",
    batch_size: int = 4,
    device: str = "auto",
    limit: int | None = None,
    model_key: str | None = None,
    manifest: Manifest = None,
    progress: bool = True,
) -> Path:
    """Same-object probability (paper 4.2, Fig. 6) of every mode on a dataset with object masks."""

    started = utc_now()
    im = load_image_model(spec, device, model_key)
    qk, loaded, name, pre, dev, model, grid = im.qk, im.loaded, im.name, im.preprocess, im.device, im.model, im.grid
    manifest, deps = weights_checked(im.loaded, im.name, manifest)
    modes = modes_of(modes_path, loaded, name)
    data = mask_dataset(dataset, limit=limit)
    run = AdaptiveBatch(f"same-object {name}")
    u = torch.as_tensor(modes.U.values, dtype=torch.float32)
    n_layers, n_heads, _, n_modes = u.shape
    uv = stacked_uv(u, torch.as_tensor(modes.V.values, dtype=torch.float32)).to(dev)
    hm = n_heads * n_modes
    n_img = len(data)
    scores = np.full((n_img, n_layers, hm, 2), -np.inf, np.float32)
    same = np.zeros((n_img, n_layers, hm, 2), bool)
    n_objects = np.zeros(n_img, np.int32)
    for b in tqdm(range(0, n_img, batch_size), desc=f"same-object {name}", disable=not progress):
        batch = data.items[b : b + batch_size]
        loaded_items = [it.load() for it in batch]
        weights = [object_weights(m, pre, grid) for _, m in loaded_items]
        x = torch.stack([pre.tensor(img) for img, _ in loaded_items]).to(dev)

        def project(xb: torch.Tensor) -> torch.Tensor:
            proj: list[torch.Tensor | None] = [None] * n_layers

            def keep(i: int, t: torch.Tensor) -> None:
                proj[i] = t[:, qk.layout.n_prefix :].float() @ uv[i]  # (b, T, 2*H*M)

            with layer_token_hooks(qk, tokens, keep), torch.inference_mode():  # type: ignore[arg-type]
                model(xb)
            return torch.stack([p for p in proj if p is not None], dim=1)  # (b, L, T, 2HM)

        p_all = run(project, x)
        for j, (w, _) in enumerate(weights):
            idx = b + j
            n_objects[idx] = w.shape[0]
            if w.shape[0] < 2:
                continue
            pj = p_all[j]  # (L, T, 2HM)
            means = torch.einsum("ot,ltk->olk", torch.as_tensor(w, dtype=torch.float32, device=dev), pj)
            same[idx] = optimal_objects(means[..., :hm], means[..., hm:]).cpu().numpy()
            q, k = pj[..., :hm], pj[..., hm:]
            sc = torch.stack([q.amax(1) * k.amax(1), q.amin(1) * k.amin(1)], dim=-1)  # (L, HM, 2)
            scores[idx] = sc.cpu().numpy()
    p = top_fraction(scores, same, top).reshape(n_layers, n_heads, n_modes, 2)
    order = np.argsort(-scores, axis=0, kind="stable")[: min(top, n_img)]
    order = np.moveaxis(order, 0, -1).reshape(n_layers, n_heads, n_modes, 2, -1)
    s = np.asarray(modes.S.values, dtype=np.float64)
    head_p = weighted_by_sigma(p, s)
    depth = np.arange(n_layers) / max(1, n_layers - 1)
    record = base_record("same_object", {"top": top, "tokens": tokens, "batch_size": batch_size, "limit": limit})
    record.update(
        {
            "model": {"key": name, **qk.describe()},
            "weights": {**describe_loaded(loaded), "manifest": manifest},
            "inputs": {
                "modes": {"path": str(modes_path), "sha256": tree_sha256(modes_path)},
                "dataset": data.describe(),
            },
            "dependencies": [
                *deps,
                dependency("modes store", modes_path),
                mask_dataset_dependency(data, dataset, limit),
            ],
            "batch": run.record(),
            "device": device_record(device, dev),
            "started": started,
            "finished": utc_now(),
        }
    )
    out = xr.Dataset(
        {
            "p": (
                ("layer", "head", "mode", "sign"),
                p,
                {"description": "fraction of top images where the query and key sides pick the same object"},
            ),
            "top_image": (
                ("layer", "head", "mode", "sign", "rank"),
                order.astype(np.int64),
                {"description": "index of the top images"},
            ),
            "head_p": (("layer", "head"), head_p, {"description": "sum_n s_n p_n / sum_n s_n over modes and signs"}),
            "layer_p": (("layer",), np.nanmean(head_p, axis=1), {"description": "mean over heads of head_p"}),
            "n_objects": (("image",), n_objects, {"description": "objects covering at least one token"}),
        },
        coords={
            "image_id": (("image",), np.array([it.id for it in data.items], dtype=object)),
            "image_sha256": (("image",), np.array([it.sha256() or "" for it in data.items], dtype=object)),
            "sign": (("sign",), np.array(list(SIGNS), dtype=object)),
            "layer": np.arange(n_layers),
            "depth": ("layer", depth),
        },
        attrs={
            "qkdissect_schema": f"same_object/v{SCHEMA_VERSION}",
            "model_id": name,
            "spec": str(loaded.spec),
            "dataset": {**data.describe(), "spec": dataset, "limit": limit},
            "top": top,
            "token_source": tokens,
            "eligible_images": int((n_objects >= 2).sum()),
            "provenance": record,
        },
    )
    return write_store(out, output)
