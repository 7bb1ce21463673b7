"""What each kind of store holds (all dims are named integer indices, 0-based):

- **modes**: ``U``, ``V`` (layer, head, dim, mode) float64, ``S`` (layer, head, mode), ``block`` (layer, head,
  mode) int: id of the block of near-equal singular values a mode belongs to.
- **scores**: ``cosine`` (layer, head, mode), ``head_mean``/``head_weighted`` (layer, head),
  ``layer_mean``/``layer_weighted`` (layer), coordinate ``depth`` (layer) = l / (L - 1).
- **projections**, **logits**, **preference**, **same_object**, **text_projections**: see the passes that write
  them (:mod:`qkdissect.passes`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from .io import jsonable

SCHEMA_VERSION = 1


CONVENTIONS = (
    "U = query side (left singular vectors), V = key side (right): a_ij = sum_n (x_i.u_n) S_n (v_n.x_j) "
    "for the bias-free, unscaled logit x_i^T W_q^T W_k x_j. Sign: largest-|entry| of each u_n positive. "
    "Layers, heads and modes are 0-based; modes in descending S."
)


def modes_dataset(u: np.ndarray, s: np.ndarray, v: np.ndarray, block: np.ndarray, attrs: dict[str, Any]) -> xr.Dataset:
    n_layers, n_heads, d, n_modes = u.shape
    coords = {
        "layer": np.arange(n_layers),
        "head": np.arange(n_heads),
        "dim": np.arange(d),
        "mode": np.arange(n_modes),
    }
    ds = xr.Dataset(
        {
            "U": (("layer", "head", "dim", "mode"), u, {"description": "query-side singular vectors (unit)"}),
            "V": (("layer", "head", "dim", "mode"), v, {"description": "key-side singular vectors (unit)"}),
            "S": (("layer", "head", "mode"), s, {"description": "singular values of W_q^T W_k, descending"}),
            "block": (
                ("layer", "head", "mode"),
                block.astype(np.int32),
                {"description": "id of the block of near-equal singular values (see attrs.block_rtol)"},
            ),
        },
        coords=coords,
    )
    ds.attrs.update(jsonable({"qkdissect_schema": f"modes/v{SCHEMA_VERSION}", "conventions": CONVENTIONS, **attrs}))
    return ds
