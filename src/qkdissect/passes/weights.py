"""Passes over a model's weights alone (no data): the modes of every head's W_q^T W_k and their scores."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ..core import scores as sc
from ..core.modes import degenerate_blocks, qk_modes
from ..models import ModelLike
from ..models.layernorm import folded_factors
from ..options import DType, Folding, default
from ..provenance.records import base_record, utc_now
from ..stores.schema import modes_dataset, scores_dataset
from .loop import Manifest, StoreLike, finish, load, pass_record, store_input


def compute_modes(
    spec: ModelLike,
    output: str | Path | None = None,
    *,
    device: str = default("device"),
    dtype: DType = default("dtype"),
    block_rtol: float = default("block_rtol"),
    folding: Folding = default("folding"),
    model_key: str | None = None,
    manifest: Manifest = None,
) -> xr.Dataset:
    """Load a model (or take one in memory), extract its per-head W_q and W_k, and return the modes dataset with
    provenance (written to ``output`` when given).

    ``manifest`` (from :func:`qkdissect.models.resolve_weights`, or its JSON file) is checked against the weights
    actually loaded and recorded in the provenance. ``folding`` "folded" / "folded-centred" decomposes the
    LayerNorm-aware interaction ``(P) diag(gamma) W_q^T W_k diag(gamma) (P)`` instead of the paper's raw one
    (:mod:`qkdissect.core.layernorm`)."""
    started, t0 = utc_now(), time.perf_counter()
    m = load(spec, device, model_key, manifest)
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    w_q, w_k = folded_factors(m.qk, folding)
    modes = qk_modes(w_q, w_k, dtype=dtype, device=m.device)
    if m.device.type == "cuda":
        torch.cuda.synchronize()
    t_svd = time.perf_counter() - t1
    u, s, v = modes.numpy()
    parameters = {"dtype": dtype, "device_requested": device, "block_rtol": block_rtol, "weights_processing": folding}
    timings = {"load": round(t_load, 4), "svd": round(t_svd, 6)}
    record = pass_record("modes", parameters, m, [], device, started, timings_s=timings)
    qk = m.qk
    attrs = {
        "model_id": m.name,
        "spec": str(m.loaded.spec),
        "adapter": qk.adapter,
        "d_model": qk.d_model,
        "d_head": qk.d_head,
        "n_layers": qk.n_layers,
        "n_heads": qk.n_heads,
        "n_prefix_tokens": qk.layout.n_prefix,
        "grid": list(qk.layout.grid) if qk.layout.grid else None,
        "weights_sha256": m.loaded.weights_sha256,
        "weights_revision": m.loaded.revision,
        "dtype": dtype,
        "device": str(m.device),
        "block_rtol": block_rtol,
        "folding": folding,
        "notes": qk.notes,
        "provenance": record,
    }
    return finish(modes_dataset(u, s, v, degenerate_blocks(s, rtol=block_rtol), attrs), output)


def compute_scores(
    modes: StoreLike,
    output: str | Path | None = None,
    *,
    released_code: bool = False,
    level: float = default("null_level"),
    null_rtol: float = default("null_rtol"),
) -> xr.Dataset:
    """All section-1.3 scores of a modes store (or Dataset), with the exact null interval in attrs (written to
    ``output`` when given); the plain mean leaves out the modes below ``null_rtol`` of their head's largest
    singular value (``layer_mean_all`` keeps them)."""
    ds, deps = store_input(modes, "modes", "modes store")
    u, s, v = (np.asarray(ds[n].values, dtype=np.float64) for n in ("U", "S", "V"))
    r = sc.score_modes(u, s, v, released_code=released_code, level=level, null_rtol=null_rtol)
    record = base_record("scores", {"released_code": released_code, "null_level": level, "null_rtol": null_rtol})
    record.update(
        {
            "inputs": {"modes": {"model_id": ds.attrs.get("model_id"), **{d["role"]: d for d in deps}}},
            "weights": ds.attrs.get("provenance", {}).get("weights"),
            "dependencies": deps,
            "finished": utc_now(),
        }
    )
    attrs = {
        "model_id": ds.attrs.get("model_id"),
        "folding": ds.attrs.get("folding", "raw"),
        "d_model": int(u.shape[-2]),
        "d_head": ds.attrs.get("d_head"),
        "released_code": released_code,
        "null_rtol": null_rtol,
        "null_rtol_definition": "modes with s_n / s_0 < null_rtol (s_0: the head's largest singular value) are "
        "numerically null: left out of head_mean and layer_mean, kept in head_mean_all and layer_mean_all "
        "(the released code's plain mean); n_null counts them per head",
        "null_level": level,
        "null_low": r.null_low,
        "null_high": r.null_high,
        "null_definition": "central interval of the cosine of two independent isotropic vectors in "
        "R^d_model: (t+1)/2 ~ Beta((d-1)/2, (d-1)/2), exact quantiles",
        "null_released": sc.released_null(int(u.shape[-2])),
        "null_released_definition": "the released notebook's baseline, drawn at +-value (paper 1.4, bug B3): "
        "99th percentile of 1/|a2| over 10,000 uniform positive vectors a2 in R^d_model, np.random.seed(0)",
        "provenance": record,
    }
    coords = {k: ds.coords[k].values for k in ("layer", "head", "mode")}
    return finish(scores_dataset(r, coords, released_code, attrs), output)
