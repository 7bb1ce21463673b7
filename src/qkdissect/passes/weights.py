"""The pass over a model's weights alone (no data): the modes of every head's W_q^T W_k (their scores:
:mod:`.scores`)."""

from __future__ import annotations

import time
from pathlib import Path

import torch
import xarray as xr

from ..core.modes import degenerate_blocks, qk_modes
from ..models import ModelLike
from ..models.layernorm import folded_factors
from ..options import DType, Folding, default
from ..provenance.records import utc_now
from ..stores.schema import modes_dataset
from .io import finish
from .loop import Manifest, load, pass_record


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
