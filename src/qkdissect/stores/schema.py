"""What each kind of store holds (all dims are named integer indices, 0-based):

- **modes**: ``U``, ``V`` (layer, head, dim, mode) float64, ``S`` (layer, head, mode), ``block`` (layer, head,
  mode) int: id of the block of near-equal singular values a mode belongs to.
- **scores**: ``cosine`` (layer, head, mode), ``head_mean``/``head_weighted`` (layer, head),
  ``layer_mean``/``layer_weighted`` (layer), coordinate ``depth`` (layer) = l / (L - 1).
- **projections**, **logits**, **preference**, **same_object**, **text_projections**, **maps**: see the passes
  that write them (:mod:`qkdissect.passes`); :class:`TokenMaps` is one passage of a text maps store.
"""

from __future__ import annotations

from dataclasses import dataclass
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


@dataclass
class TokenMaps:
    """One passage under one mode: its token pieces (with whether a space precedes each) and both maps."""

    pieces: list[str]
    spaced: list[bool]
    q: np.ndarray
    k: np.ndarray
    scored: np.ndarray  # the tokens the passage score ranges over


def slot_maps(store: xr.Dataset, row: int, slot: int) -> TokenMaps:
    """The token maps of one slot of a text maps store."""
    n = int(store.n_tokens.values[row, slot])
    return TokenMaps(
        [str(p) for p in store.piece.values[row, slot, :n]],
        [bool(b) for b in store.spaced.values[row, slot, :n]],
        store.q_map.values[row, slot, :n],
        store.k_map.values[row, slot, :n],
        store.scored.values[row, slot, :n],
    )
