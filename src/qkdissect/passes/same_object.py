"""Same-object probability (paper 4.2, Fig. 6): do a mode's query and key sides pick out the same object in the
images that excite the mode most?

For every (layer, head, mode, sign): the top images by the mode's image score (section 1.6, as in the
projections, with the same ``score`` option: released or clipped); in each, the object with the largest mean
query projection and the one with the largest mean key projection (means weighted by each token's area fraction
of the object; objects smaller than one token are left out); p = the fraction of top images in which the two
coincide. Per head, P = sum_n s_n p_n / sum_n s_n over modes and both signs; per layer, the mean over heads.
Images with fewer than two objects cannot separate the two sides and are never counted among the top images.

Chance level (what Fig. 6 draws dotted): the same sigma-weighted average with, in place of "the two sides pick the
same object", 1 / (the number of objects of the image), i.e. the expected P if in each top image the query and
the key side picked one of its objects uniformly and independently.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
import xarray as xr

from ..core.same_object import optimal_objects, same_object_values
from ..core.topk import image_scores
from ..data.geometry import Preprocess
from ..data.masks import mask_dataset, mask_to_tokens
from ..options import TokenSource
from ..requests import SameObjectRequest
from ..stores.schema import same_object_dataset
from ..util.clock import utc_now
from .batching import AdaptiveBatch
from .hooks import layer_token_hooks, stacked_uv
from .io import finish
from .loop import (
    ImageModel,
    load_image_model,
    mask_batches,
    mask_coords,
    mask_dataset_dependency,
    modes_of,
    pass_record,
)
from .shards import Shard, shard_of_dataset, shard_store


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


def _projector(im: ImageModel, uv: torch.Tensor, tokens: TokenSource):  # type: ignore[no-untyped-def]
    """Every layer's patch tokens times ``[U_l | V_l]``: (batch, layer, token, 2 * head * mode)."""

    def project(xb: torch.Tensor) -> torch.Tensor:
        proj: list[torch.Tensor | None] = [None] * im.qk.n_layers

        def keep(i: int, t: torch.Tensor) -> None:
            proj[i] = t[:, im.qk.layout.n_prefix :].float() @ uv[i]  # (b, T, 2*H*M)

        with layer_token_hooks(im.qk, tokens, keep), torch.inference_mode():
            im.model(xb)
        return torch.stack([p for p in proj if p is not None], dim=1)  # (b, L, T, 2HM)

    return project


def compute_same_object(*args: Any, **kw: Any) -> xr.Dataset:
    """:func:`run_same_object` of ``SameObjectRequest.build(spec, modes, dataset, output, top=..., ...)``."""
    return run_same_object(SameObjectRequest.build(*args, **kw))


def run_same_object(r: SameObjectRequest) -> xr.Dataset:
    """Same-object probability (paper 4.2, Fig. 6) of every mode on a dataset with object masks (written to
    ``output`` when given). ``shard``: only that shard of the dataset (whole batches), with its per-image scores
    and same-object flags, which :func:`.shards.merge_same_object` merges into this very store."""
    shard = Shard.of(r.shard)
    started = utc_now()
    whole = mask_dataset(r.dataset, limit=r.limit)  # an incomplete dataset fails before the model loads
    data, where = shard_of_dataset(whole, shard, r.batch_size)
    im = load_image_model(r.model)
    modes_ds, deps = modes_of(r.modes, im)
    run = AdaptiveBatch(f"same-object {im.name}")
    u = torch.as_tensor(modes_ds.U.values, dtype=torch.float32)
    n_layers, n_heads, _, n_modes = u.shape
    uv = stacked_uv(u, torch.as_tensor(modes_ds.V.values, dtype=torch.float32)).to(im.device)
    project = _projector(im, uv, r.tokens)
    hm, n_img = n_heads * n_modes, len(data)
    scores = np.full((n_img, n_layers, hm, 2), -np.inf, np.float32)
    same = np.zeros((n_img, n_layers, hm, 2), bool)
    n_objects = np.zeros(n_img, np.int32)
    for b, batch in mask_batches(data, r.batch_size, f"same-object {im.name}", r.progress):
        weights = [object_weights(m, im.preprocess, im.grid)[0] for _, _, m in batch]
        p_all = run(project, torch.stack([im.preprocess.tensor(img) for _, img, _ in batch]).to(im.device))
        for j, w in enumerate(weights):
            n_objects[b + j] = w.shape[0]
            if w.shape[0] < 2:
                continue
            pj = p_all[j]  # (L, T, 2HM)
            means = torch.einsum("ot,ltk->olk", torch.as_tensor(w, dtype=torch.float32, device=im.device), pj)
            same[b + j] = optimal_objects(means[..., :hm], means[..., hm:]).cpu().numpy()
            q, k = pj[..., :hm], pj[..., hm:]
            scores[b + j] = image_scores(q.amax(1), q.amin(1), k.amax(1), k.amin(1), r.score).cpu().numpy()
    shape = (n_img, n_layers, n_heads, n_modes, 2)
    scores, same = scores.reshape(shape), same.reshape(shape)
    variables, order = same_object_values(scores, same, n_objects, modes_ds.S.values, r.top)
    parameters = {"top": r.top, "tokens": r.tokens, "batch_size": r.batch_size, "limit": r.limit, "score": r.score}
    record = pass_record("same_object", parameters, im, [*deps, mask_dataset_dependency(whole, r.dataset, r.limit)],
                         r.model.device, started, batch=run.record())  # fmt: skip
    attrs = {
        "model_id": im.name,
        "spec": str(im.source.spec),
        "dataset": {**whole.describe(), "spec": r.dataset, "limit": r.limit},
        "top": r.top,
        "token_source": r.tokens,
        "image_score": r.score,
        "eligible_images": int((n_objects >= 2).sum()),
        "provenance": record,
    }
    out = same_object_dataset(variables, order, n_objects, mask_coords(data), attrs)
    if shard is not None:  # what the merge needs: every image's scores and same-object flags, and s
        dims = ("image", "layer", "head", "mode", "sign")
        extras = {
            "per_image_score": (dims, scores, "the mode's image score (-inf: fewer than 2 objects)"),
            "per_image_same": (dims, same, "the query and key sides pick the same object"),
            "singular_value": (("layer", "head", "mode"), modes_ds.S.values, "s_n of the modes"),
        }
        out = shard_store(out, extras, where)
    return finish(out, r.output)
