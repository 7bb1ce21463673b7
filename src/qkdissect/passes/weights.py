"""Passes over a model's weights alone (no data): the modes of every head's W_q^T W_k and their scores, as
self-describing datasets with provenance."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
import xarray as xr

from ..core import scores as sc
from ..core.device import device_record, resolve_device
from ..core.modes import degenerate_blocks, qk_modes
from ..models import ModelLike, describe_loaded, load_qk
from ..models.layernorm import folded_factors
from ..options import DType, Folding
from ..provenance.records import base_record, dependency, tree_sha256, utc_now
from ..stores.io import jsonable
from ..stores.schema import SCHEMA_VERSION, modes_dataset
from .loop import Manifest, weights_checked


def compute_modes(
    spec: ModelLike,
    *,
    device: str = "auto",
    dtype: DType = "float64",
    block_rtol: float = 1e-3,
    model_key: str | None = None,
    manifest: Manifest = None,
    folding: Folding = "raw",
) -> xr.Dataset:
    """Load a model, extract its per-head W_q and W_k, and return the modes dataset with provenance.

    ``manifest`` (from :func:`qkdissect.weights.resolve_weights`, or its JSON file) is checked against the weights
    actually loaded and recorded in the provenance. ``folding`` "folded" / "folded-centred" decomposes the
    LayerNorm-aware interaction ``(P) diag(gamma) W_q^T W_k diag(gamma) (P)`` instead of the paper's raw one
    (:mod:`qkdissect.layernorm`)."""
    started = utc_now()
    t0 = time.perf_counter()
    qk, loaded = load_qk(spec)
    manifest, deps = weights_checked(loaded, model_key or str(loaded.spec), manifest)
    t_load = time.perf_counter() - t0
    dev = resolve_device(device)
    t1 = time.perf_counter()
    w_q, w_k = folded_factors(qk, folding)
    modes = qk_modes(w_q, w_k, dtype=dtype, device=dev)
    if dev.type == "cuda":
        torch.cuda.synchronize()
    t_svd = time.perf_counter() - t1
    u, s, v = modes.numpy()
    block = degenerate_blocks(s, rtol=block_rtol)
    info = qk.describe()
    record = base_record(
        "modes",
        {"dtype": dtype, "device_requested": device, "block_rtol": block_rtol, "weights_processing": folding},
    )
    record.update(
        {
            "model": {"key": model_key or str(loaded.spec), **info},
            "weights": {**describe_loaded(loaded), "manifest": manifest},
            "dependencies": deps,
            "device": device_record(device, dev),
            "started": started,
            "finished": utc_now(),
            "timings_s": {"load": round(t_load, 4), "svd": round(t_svd, 6)},
        }
    )
    attrs = {
        "model_id": model_key or str(loaded.spec),
        "spec": str(loaded.spec),
        "adapter": qk.adapter,
        "d_model": qk.d_model,
        "d_head": qk.d_head,
        "n_layers": qk.n_layers,
        "n_heads": qk.n_heads,
        "n_prefix_tokens": qk.layout.n_prefix,
        "grid": list(qk.layout.grid) if qk.layout.grid else None,
        "weights_sha256": loaded.weights_sha256,
        "weights_revision": loaded.revision,
        "dtype": dtype,
        "device": str(dev),
        "block_rtol": block_rtol,
        "folding": folding,
        "notes": qk.notes,
        "provenance": record,
    }
    return modes_dataset(u, s, v, block, attrs)


def compute_scores(
    modes: xr.Dataset,
    *,
    released_code: bool = False,
    level: float = 0.95,
    modes_path: str | Path | None = None,
) -> xr.Dataset:
    """All section-1.3 scores of a modes dataset, with the exact null interval in attrs (``modes_path``, when
    given, is recorded with its digest)."""
    u, s, v = (np.asarray(modes[n].values, dtype=np.float64) for n in ("U", "S", "V"))
    r = sc.score_modes(u, s, v, released_code=released_code, level=level)
    coords = {k: modes.coords[k].values for k in ("layer", "head", "mode")}
    coords["depth"] = ("layer", r.depth)  # type: ignore[assignment]
    weighted_desc = "singular-value-weighted mean of per-mode cosines" + (
        " / d_head (released code, bug B1)" if released_code else ""
    )
    ds = xr.Dataset(
        {
            "cosine": (("layer", "head", "mode"), r.cosine, {"description": "u_n . v_n"}),
            "head_mean": (("layer", "head"), r.head_mean, {"description": "mean of per-mode cosines"}),
            "head_weighted": (("layer", "head"), r.head_weighted, {"description": weighted_desc}),
            "layer_mean": (("layer",), r.layer_mean, {"description": "mean over heads of head_mean"}),
            "layer_weighted": (("layer",), r.layer_weighted, {"description": "mean over heads of head_weighted"}),
        },
        coords=coords,
    )
    record = base_record("scores", {"released_code": released_code, "null_level": level})
    record.update(
        {
            "inputs": {
                "modes": {
                    "model_id": modes.attrs.get("model_id"),
                    "provenance_finished": modes.attrs.get("provenance", {}).get("finished"),
                    **({"path": str(modes_path), "sha256": tree_sha256(modes_path)} if modes_path else {}),
                }
            },
            "weights": modes.attrs.get("provenance", {}).get("weights"),
            "dependencies": [dependency("modes store", modes_path)] if modes_path else [],
            "finished": utc_now(),
        }
    )
    ds.attrs.update(
        jsonable(
            {
                "qkdissect_schema": f"scores/v{SCHEMA_VERSION}",
                "model_id": modes.attrs.get("model_id"),
                "folding": modes.attrs.get("folding", "raw"),
                "d_model": int(u.shape[-2]),
                "d_head": modes.attrs.get("d_head"),
                "released_code": released_code,
                "null_level": level,
                "null_low": r.null_low,
                "null_high": r.null_high,
                "null_definition": "central interval of the cosine of two independent isotropic vectors in "
                "R^d_model: (t+1)/2 ~ Beta((d-1)/2, (d-1)/2), exact quantiles",
                "provenance": record,
            }
        )
    )
    return ds
