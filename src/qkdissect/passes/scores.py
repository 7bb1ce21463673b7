"""The scores of a modes store (paper 1.3): per-mode cosines, per-head and per-layer averages, the exact null
interval. It reads a store and writes one, without torch: a scores job starts in about a second."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from ..core import scores as sc
from ..provenance.records import base_record
from ..requests import ScoresRequest
from ..stores.schema import scores_dataset
from ..util.clock import utc_now
from .io import finish, store_input


def compute_scores(*args: Any, **kw: Any) -> xr.Dataset:
    """:func:`run_scores` of ``ScoresRequest.build(modes, output, released_code=..., ...)``."""
    return run_scores(ScoresRequest.build(*args, **kw))


def run_scores(req: ScoresRequest) -> xr.Dataset:
    """All section-1.3 scores of a modes store (or Dataset), with the exact null interval in attrs (written to
    ``output`` when given); the plain mean leaves out the modes below ``null_rtol`` of their head's largest
    singular value (``layer_mean_all`` keeps them)."""
    ds, deps = store_input(req.modes, "modes", "modes store")
    u, s, v = (np.asarray(ds[n].values, dtype=np.float64) for n in ("U", "S", "V"))
    res = sc.score_modes(u, s, v, released_code=req.released_code, level=req.level, null_rtol=req.null_rtol)
    kv = [int(h) for h in ds.coords["kv_head"].values] if "kv_head" in ds.coords else None
    null = sc.layer_null(int(u.shape[1]), int(u.shape[-1]), int(u.shape[-2]), kv_heads=kv, level=req.level,
                         null_rtol=req.null_rtol)  # fmt: skip
    record = base_record(
        "scores", {"released_code": req.released_code, "null_level": req.level, "null_rtol": req.null_rtol}
    )
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
        **({"norm": ds.attrs["norm"]} if "norm" in ds.attrs else {}),  # a folded store's norms (kind, centring)
        "d_model": int(u.shape[-2]),
        "d_head": ds.attrs.get("d_head"),
        "released_code": req.released_code,
        "null_rtol": req.null_rtol,
        "null_rtol_definition": "modes with s_n / s_0 < null_rtol (s_0: the head's largest singular value) are "
        "numerically null: left out of head_mean and layer_mean, kept in head_mean_all and layer_mean_all "
        "(the released code's plain mean); n_null counts them per head",
        "null_level": req.level,
        "null_low": res.null_low,
        "null_high": res.null_high,
        "null_definition": "central interval of the cosine of two independent isotropic vectors in "
        "R^d_model: (t+1)/2 ~ Beta((d-1)/2, (d-1)/2), exact quantiles",
        "null_released": sc.released_null(int(u.shape[-2])),
        "null_released_definition": "the released notebook's baseline, drawn at +-value (paper 1.4, bug B3): "
        "99th percentile of 1/|a2| over 10,000 uniform positive vectors a2 in R^d_model, np.random.seed(0)",
        "layer_null_weighted": list(null.weighted_interval),
        "layer_null_mean": list(null.mean_interval),
        "layer_null_seeds": list(null.seeds),
        "layer_null_shape": {
            "d_model": int(u.shape[-2]),
            "heads": int(u.shape[1]),
            "modes": int(u.shape[-1]),
            "key_heads": len(set(kv)) if kv is not None else int(u.shape[1]),
        },
        "layer_null_definition": "the null of the layer statistics (layer_weighted, layer_mean): the same "
        "statistics of random layers of this model's shapes (i.i.d. standard Gaussian W_q per query head and W_k "
        "per key head, numpy default_rng(seed), one layer per seed), central null_level interval mean +- z sd over "
        "the seeds; the samples are null_layer_weighted and null_layer_mean",
        "provenance": record,
    }
    coords = {k: ds.coords[k].values for k in ("layer", "head", "mode")}
    return finish(scores_dataset(res, coords, req.released_code, attrs, null), req.output)
