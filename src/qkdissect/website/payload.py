"""What the atlas's pages load, from the stores alone: per model a summary of every mode (singular value, cosine,
degenerate block, null flag; the heads' weighted cosines), per head its slots (top images, scores, the query and
key maps; where the model has an ablation store, each mode's removal effect and each top image's own). Plain
JSON-able values; the maps as text of one character per value (:data:`ALPHABET`: 64 levels, the
top 6 bits of the store's 8-bit codes), so that a head's page loads as one script."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from ..errors import QKDissectError
from ..stores import open_store

#: one character per map value: value v (0-63) is ALPHABET[v]
ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
_LETTERS = np.frombuffer(ALPHABET.encode("ascii"), dtype=np.uint8)
#: a model's name names its folder in the atlas (as the workflow's config names models)
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}")


@dataclass(frozen=True)
class AtlasStores:
    """The stores one model's part of the atlas is made from: its modes, scores and atlas maps, and its ablation
    store when it has one (each mode's effect beside its top images)."""

    modes: Path
    scores: Path
    maps: Path
    ablation: Path | None = None

    def paths(self) -> list[Path]:
        return [self.modes, self.scores, self.maps] + ([self.ablation] if self.ablation is not None else [])


@dataclass
class ModelData:
    """One model's stores, opened and checked to belong together."""

    key: str
    stores: AtlasStores
    modes: xr.Dataset
    scores: xr.Dataset
    maps: xr.Dataset
    ablation: xr.Dataset | None = None


def open_model(stores: AtlasStores) -> ModelData:
    """Open a model's stores; refuse a name that cannot name a folder and stores of different models or shapes."""
    maps = open_store(stores.maps, "atlas")
    modes, scores = open_store(stores.modes, "modes"), open_store(stores.scores, "scores")
    key = str(maps.attrs["model_id"])
    if not NAME.fullmatch(key):
        raise QKDissectError(
            f"model name {key!r} (of {stores.maps}) cannot name a folder of the atlas: make its stores with a name "
            "(--name) of letters, digits, '.', '_' and '-', starting with a letter or digit"
        )
    shape = maps.top_score.shape[:3]
    weights = maps.attrs.get("weights_sha256")
    for what, ds, got in (("modes", modes, modes.S.shape), ("scores", scores, scores.cosine.shape)):
        other = ds.attrs.get("weights_sha256")
        if got != shape or (weights and other and other != weights):
            raise QKDissectError(
                f"{stores.maps} holds {key} (layer, head, mode {shape}, weights {str(weights)[:12]}…), its {what} "
                f"store {getattr(stores, what)} {got} of weights {str(other)[:12]}…: give the stores of one model"
            )
    ablation = open_store(stores.ablation, "ablation") if stores.ablation is not None else None
    other = ablation.attrs.get("weights_sha256") if ablation is not None else None
    if ablation is not None and (ablation.ablated.shape != shape or (weights and other and other != weights)):
        raise QKDissectError(
            f"{stores.maps} holds {key} (layer, head, mode {shape}), its ablation store {stores.ablation} "
            f"{ablation.ablated.shape} of weights {str(other)[:12]}…: give the stores of one model"
        )
    return ModelData(key, stores, modes, scores, maps, ablation)


#: the ablation metric the atlas shows: the head's attention change
ABLATION_METRIC = "attention_kl"


def ablation_summary(ablation: xr.Dataset) -> dict[str, Any]:
    """Each mode's ablation effect (:data:`ABLATION_METRIC`, flat in (layer, head, mode) order; None: not
    ablated) on its top images in the set and on every image, and what it was measured on."""
    effect = ablation.effect.sel(metric=ABLATION_METRIC)
    subsets = [str(s) for s in ablation.subset.values]
    return {
        "metric": ABLATION_METRIC,
        "kind": ablation.attrs.get("ablation", "zero"),
        "images": (ablation.attrs.get("images") or {}).get("valid"),
        "all": _floats(effect.sel(subset="all").values, 4),
        "top": _floats(effect.sel(subset="top").values, 4) if "top" in subsets else None,
    }


def slot_effects(maps: xr.Dataset, ablation: xr.Dataset) -> np.ndarray:
    """(layer, head, mode, sign, rank): each top-image slot's :data:`ABLATION_METRIC` when its mode is ablated,
    on that image; NaN for an empty slot, a mode not ablated or an image outside the ablated set."""
    index = np.full(ablation.ablated.shape, -1, np.int64)
    at = tuple(ablation[c].values for c in ("ablation_layer", "ablation_head", "ablation_mode"))
    index[at] = np.arange(ablation.sizes["ablation"])
    mine = np.array([str(i) for i in ablation.image_id.values], dtype=str)
    theirs = np.array([str(i) for i in maps.image_id.values], dtype=str)
    order = np.argsort(mine)
    pos = np.minimum(np.searchsorted(mine[order], theirs), len(mine) - 1)
    image = np.where(mine[order][pos] == theirs, order[pos], -1)  # atlas image -> ablated image (-1: not there)
    slots = np.asarray(maps.slot_image.values, np.int64)
    img = np.where(slots >= 0, image[np.maximum(slots, 0)], -1)
    ab = np.broadcast_to(index[..., None, None], slots.shape)
    ok = (img >= 0) & (ab >= 0)
    values = np.asarray(ablation.image_effect.sel(metric=ABLATION_METRIC).values, np.float64)
    out = np.full(slots.shape, np.nan)
    out[ok] = values[img[ok], ab[ok]]
    return out


def _floats(a: Any, digits: int | None = None) -> list[float | None]:
    """A flat list of floats (None for NaN and infinities: an empty slot's score), rounded to ``digits``
    significant digits when given."""
    values = np.asarray(a, dtype=np.float64).ravel()
    if digits is not None:
        values = np.array([float(f"{v:.{digits}g}") for v in values])
    return [float(v) if np.isfinite(v) else None for v in values]


def model_summary(m: ModelData, label: str | None = None) -> dict[str, Any]:
    """What the grid and the head pages show of every mode of a model (flat arrays in (layer, head, mode) order);
    ``label``: the name the page shows (default: the model's key)."""
    n_layers, n_heads, n_modes = m.modes.S.shape
    maps = m.maps
    return {
        "key": m.key,
        "label": label or m.key,
        "layers": n_layers,
        "heads": n_heads,
        "modes": n_modes,
        "top_k": int(maps.sizes["rank"]),
        "grid": list(maps.attrs["grid"]),
        "map_grid": list(maps.attrs["map_grid"]),
        "token_source": maps.attrs.get("token_source"),
        "image_set": (maps.attrs.get("images") or {}).get("spec"),
        "image_score": maps.attrs.get("image_score"),
        "prefix_tokens": list(maps.attrs.get("prefix_tokens") or []),
        "prefix_kinds": [str(k) for k in maps.prefix_kind.values] if "key_top_on_prefix" in maps else [],
        "valid_images": (maps.attrs.get("images") or {}).get("valid"),
        "images": [str(i) for i in maps.image_id.values],
        "S": _floats(m.modes.S.values, 6),
        "cosine": _floats(m.scores.cosine.values),
        "block": np.asarray(m.modes.block.values, dtype=np.int64).ravel().tolist(),
        "null": np.asarray(m.scores.null_mode.values, dtype=bool).ravel().astype(int).tolist(),
        "head_weighted": _floats(m.scores.head_weighted.values),
        "layer_weighted": _floats(m.scores.layer_weighted.values),
        "depth": _floats(m.scores.depth.values),
        "stores": {k: str(p) for k, p in vars(m.stores).items() if p is not None},
        **({"ablation": ablation_summary(m.ablation)} if m.ablation is not None else {}),
    }


def map_text(codes: np.ndarray) -> str:
    """8-bit codes -> one character of :data:`ALPHABET` per value (their top 6 bits)."""
    return _LETTERS[np.asarray(codes, dtype=np.uint8).ravel() >> 2].tobytes().decode("ascii")


def head_payload(layer_maps: xr.Dataset, layer: int, head: int, effects: np.ndarray | None = None) -> dict[str, Any]:
    """One head's slots, in (mode, sign, rank) order: each slot's image (-1: empty), score and maps
    (``layer_maps``: the atlas store's variables of that layer, loaded); where the store has them, how many images'
    key maps peak on a prefix token of each kind, in (mode, sign, prefix_kind) order; ``effects`` (head, mode,
    sign, rank) of the layer: each slot's ablation effect on its image (:func:`slot_effects`)."""
    one = layer_maps.isel(head=head)
    out = {
        "layer": layer,
        "head": head,
        "image": np.asarray(one.slot_image.values, dtype=np.int64).ravel().tolist(),
        "score": _floats(one.top_score.values, 5),
        "q": map_text(one.q_code.values),
        "k": map_text(one.k_code.values),
    }
    if "key_top_on_prefix" in one:
        out["key_prefix"] = np.asarray(one.key_top_on_prefix.values, dtype=np.int64).ravel().tolist()
    if effects is not None:
        out["effect"] = _floats(effects[head], 4)
    return out
