"""What each kind of store holds: one builder per kind, arrays and attributes in, an xarray Dataset out. All dims
are named, integer indices 0-based; every variable and coordinate has ``long_name`` and ``units``
(:data:`VARIABLE_ATTRS`); every store has ``attrs["qkdissect_schema"]`` (``KIND/vN``), its ``model_id`` and
``attrs["provenance"]``.

==================  ==========================================================================================
modes               ``U``, ``V`` (layer, head, dim, mode), ``S`` (layer, head, mode), ``block`` (ids of blocks of
                    near-equal singular values); grouped-query models: ``query_group_angle`` (layer, head_pair,
                    angle), the principal angles between the query sides of two heads sharing a key head
scores              ``cosine``, ``null_mode`` (layer, head, mode), ``head_mean``/``head_weighted`` (layer, head),
                    ``layer_mean``/``layer_weighted`` (layer), ``depth`` = l / (L - 1); the plain means without
                    null modes (``n_null`` per head), and with them (``*_mean_all``); the per-mode null interval
                    in attrs; the null of the layer statistics, ``null_layer_weighted``/``null_layer_mean``
                    (null_seed: random Gaussian layers of the model's shapes) and their intervals in attrs
projections         per image ``q_max``, ``q_min``, ``k_max``, ``k_min`` (image, layer, head, mode; streamed),
                    ``top_image``/``top_score`` (layer, head, mode, sign, rank; the ids of the top images in the
                    coordinate ``top_image_id``), ``top_both_negative``, anisotropy sums, ``key_top_on_prefix``
                    and ``query_top_on_prefix`` (layer, head, mode, sign, prefix_kind: images whose map peaks on
                    a CLS, distillation or register token); the duplicates dropped from the image set and the
                    kind of each prefix token (``prefix_tokens``) in attrs
logits              variance shares of the logit terms, top-k modes explained, who wins the softmax
preference          attention of the target/distractor tokens on each region, grouped; an example crop
same_object         per mode the fraction of top images whose query and key sides pick the same object, and its
                    chance level; the top images (``top_image``, ``top_image_id``)
spectrum            a rotary model's energy per rotation plane (``energy_zero``, ``energy_mean``, their shares; layer,
                    head, plane: the planes, then its unrotated dimensions) and its weighted cosine by distance
                    (``head_weighted`` (layer, head, distance), ``layer_weighted``) from an offsets store
text_projections    top passages per (layer, head, mode, sign) with the best pair's positions (``top_passage_id``:
                    their ids); the passages
maps                per row (a mode drawn) and slot (an image or passage drawn for it): the maps and scores;
                    image crops or token pieces (:mod:`qkdissect.passes.maps`)
atlas               every mode's top images (``top_score``, ``slot_image``; layer, head, mode, sign, rank) with
                    their query and key maps, 8-bit with a per-map offset and step (``q_code``, ``q_lo``,
                    ``q_step``; ``k_*``), and one thumbnail per image (:mod:`qkdissect.passes.atlas`)
ablation            ``effect`` (layer, head, mode, metric, subset): what ablating each mode changes, mean over the
                    image set (subset ``all``) and over the mode's top images (``top``), NaN where not ablated;
                    ``n_images``, ``ablated``; per image ``image_effect`` (image, ablation, metric) and ``in_top``;
                    ``singular_value`` and ``cosine`` of every mode (:mod:`qkdissect.passes.ablation`)
==================  ==========================================================================================
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..options import PREFIX_KINDS
from .readwrite import jsonable

SCHEMA_VERSION = 1
SIGNS = ("+", "-")

CONVENTIONS = (
    "U = query side (left singular vectors), V = key side (right): a_ij = sum_n (x_i.u_n) S_n (v_n.x_j) "
    "for the bias-free, unscaled logit x_i^T W_q^T W_k x_j. Sign: largest-|entry| of each u_n positive. "
    "Layers, heads and modes are 0-based; modes in descending S."
)
MODE_DIMS = ("layer", "head", "mode")
TOP_DIMS = ("layer", "head", "mode", "sign", "rank")

#: a Dataset variable: (dims, values, its description or its attributes)
Var = tuple[tuple[str, ...], Any, str | dict[str, Any]]

#: ``long_name`` and ``units`` of every variable and coordinate of every kind of store, so that ``.plot()`` labels
#: its axes. Units: "1" for a dimensionless quantity or a count (CF conventions), "" for what is no quantity: an
#: index or position (layer, head, mode, token, top image), a flag, text. A name means the same in every store that
#: has it; ``description`` (where there is one) says more.
VARIABLE_ATTRS: dict[str, tuple[str, str]] = {
    # coordinates
    "layer": ("layer", ""),
    "head": ("head", ""),
    "kv_head": ("key-value head of the query head (grouped-query attention)", ""),
    "offset": ("offset d: query position minus key position (2-D: index of (dy, dx))", ""),
    "dy": ("offset in rows: query row minus key row", ""),
    "dx": ("offset in columns: query column minus key column", ""),
    "distance": ("distance |d| between query and key (tokens; patches for a 2-D offset)", "1"),
    "mode": ("mode (descending singular value)", ""),
    "head_pair": ("pair of query heads sharing a key-value head", ""),
    "pair_head_a": ("first query head of the pair", ""),
    "pair_head_b": ("second query head of the pair", ""),
    "pair_kv_head": ("key-value head the pair shares", ""),
    "angle": ("principal angle index (ascending)", ""),
    "query_group_angle": ("principal angle", "rad"),
    "plane": ("rotation plane (then the unrotated dimensions)", ""),
    "axis": ("axis of the rotary position", ""),
    "dim": ("residual-stream dimension", ""),
    "depth": ("normalised depth l / (L - 1)", "1"),
    "sign": ("sign of the projections", ""),
    "image_id": ("image id", ""),
    "image_sha256": ("sha256 of the image file", ""),
    "top_image_id": ("image id of the top image", ""),
    "passage_id": ("passage id", ""),
    "passage_sha256": ("sha256 of the passage", ""),
    "top_passage_id": ("passage id of the top passage", ""),
    "text": ("passage text", ""),
    "scope": ("scope of the variance share", ""),
    "term": ("term of the attention logit", ""),
    "k": ("modes kept", ""),
    "source": ("query source token", ""),
    "region": ("attended region", ""),
    "prefix_kind": ("kind of prefix token", ""),
    # modes
    "U": ("query-side singular vector u_n", "1"),
    "V": ("key-side singular vector v_n", "1"),
    "S": ("singular value s_n of W_q^T W_k", "1"),
    "singular_value": ("singular value s_n of W_q^T W_k", "1"),
    "block": ("block of near-equal singular values", ""),
    "block_first": ("first mode of the degenerate block", ""),
    "block_last": ("last mode of the degenerate block", ""),
    # spectrum
    "rotated": ("the group turns with the offset", ""),
    "dim_a": ("first dimension of the plane", ""),
    "dim_b": ("second dimension of the plane", ""),
    "rate": ("angle turned per token or patch of offset", "rad"),
    "wavelength": ("offset over which the plane turns once", ""),
    "energy_zero": ("energy of the plane at offset 0", "1"),
    "energy_mean": ("energy of the plane averaged over its angle", "1"),
    "energy_total_zero": ("||W_q^T W_k||_F^2 with the cross-plane terms", "1"),
    "share_zero": ("share of the head's energy at offset 0", "1"),
    "share_mean": ("share of the head's angle-averaged energy", "1"),
    "layer_share_zero": ("share of the energy at offset 0", "1"),
    "layer_share_mean": ("share of the angle-averaged energy", "1"),
    "n_offsets": ("offsets in the distance bin", "1"),
    # scores
    "cosine": ("cos(u_n, v_n)", "1"),
    "null_mode": ("numerically null mode", ""),
    "n_null": ("null modes of the head", "1"),
    "head_mean": ("mean cos(u_n, v_n) of the head", "1"),
    "head_mean_all": ("mean cos(u_n, v_n) of the head, every mode", "1"),
    "head_weighted": ("s-weighted mean cos(u_n, v_n) of the head", "1"),
    "layer_mean": ("mean cos(u_n, v_n)", "1"),
    "layer_mean_all": ("mean cos(u_n, v_n), every mode", "1"),
    "layer_weighted": ("s-weighted mean cos(u_n, v_n)", "1"),
    "null_seed": ("seed of the random layer", ""),
    "null_layer_weighted": ("s-weighted mean cos(u_n, v_n) of a random layer", "1"),
    "null_layer_mean": ("mean cos(u_n, v_n) of a random layer", "1"),
    # projections, text projections
    "q_max": ("max over tokens of x_t . u_n", "1"),
    "q_min": ("min over tokens of x_t . u_n", "1"),
    "k_max": ("max over tokens of x_t . v_n", "1"),
    "k_min": ("min over tokens of x_t . v_n", "1"),
    "valid": ("image decoded and projected", ""),
    "top_score": ("score of the top image or passage", "1"),
    "top_score_weighted": ("s_n x score of the top image or passage", "1"),
    "top_both_negative": ("top images with both extremes on the wrong side of 0", "1"),
    "top_both_negative_flag": ("top image with both extremes on the wrong side of 0", ""),
    "centre_unit_sum_fixed": ("sum of the unit centre-token vectors, fixed point", "1"),
    "top_image": ("top image (position on the image dim)", ""),
    "query_top_on_prefix": ("images whose query map peaks on a prefix token", "1"),
    "key_top_on_prefix": ("images whose key map peaks on a prefix token", "1"),
    "centre_unit_sum": ("sum of the unit centre-token vectors", "1"),
    "anisotropy": ("mean cosine between centre tokens of different images", "1"),
    "top_passage": ("top passage (position on the passage dim)", ""),
    "top_query_token": ("query token position of the best pair", ""),
    "top_key_token": ("key token position of the best pair", ""),
    "n_tokens": ("tokens of the passage", "1"),
    # logits
    "share": ("share of the logit variance", "1"),
    "explained": ("token-token term explained by the top k modes", "1"),
    "winning_positive": ("share of the winning margin from modes with cos(u, v) > 0", "1"),
    "sigma_positive": ("share of the singular values in modes with cos(u, v) > 0", "1"),
    # preference
    "table": ("attention on the region", "1"),
    "table_fp64": ("attention on the region", "1"),
    "per_image_score": ("image score of the mode", "1"),
    "per_image_same": ("query and key pick the same object", ""),
    "query_token": ("query token position", ""),
    "key_token": ("key token position", ""),
    "token_masks": ("area fraction of the region in the token", "1"),
    "example_crop": ("example image as the model saw it (8-bit RGB)", "1"),
    "same": ("attention on the same object", "1"),
    "different": ("attention on the other object", "1"),
    "background": ("attention on the background", "1"),
    "layer_same": ("attention on the same object", "1"),
    "layer_different": ("attention on the other object", "1"),
    "layer_background": ("attention on the background", "1"),
    # same object
    "p": ("fraction of top images with the same object on both sides", "1"),
    "head_p": ("s-weighted same-object fraction of the head", "1"),
    "layer_p": ("same-object fraction", "1"),
    "chance": ("chance level of the same-object fraction", "1"),
    "head_chance": ("s-weighted chance level of the head", "1"),
    "layer_chance": ("chance level of the same-object fraction", "1"),
    "n_objects": ("objects in the image", "1"),
    # maps
    "q_map": ("query map x_t . u_n", "1"),
    "k_map": ("key map x_t . v_n", "1"),
    "slot_image": ("image of the slot (position on the image dim)", ""),
    "slot_passage": ("passage of the slot (position in the text store)", ""),
    "slot_score": ("score of the slot", "1"),
    "crop": ("image as the model saw it (8-bit RGB)", "1"),
    "piece": ("token as it reads in the passage", ""),
    "spaced": ("a space precedes the token", ""),
    "scored": ("the token counts in the passage score", ""),
    # atlas
    "q_code": ("query map x_t . u_n, 8-bit code", ""),
    "k_code": ("key map x_t . v_n, 8-bit code", ""),
    "q_lo": ("query map value of code 0", "1"),
    "k_lo": ("key map value of code 0", "1"),
    "q_step": ("query map value per code step", "1"),
    "k_step": ("key map value per code step", "1"),
    "thumbnail": ("image as the model saw it, downscaled (8-bit RGB)", "1"),
    # ablation
    "metric": ("what the ablation changes", ""),
    "subset": ("images the effect is averaged over", ""),
    "ablation_layer": ("layer of the ablated mode", ""),
    "ablation_head": ("head of the ablated mode", ""),
    "ablation_mode": ("ablated mode", ""),
    "effect": ("change when the mode is ablated", "1"),
    "image_effect": ("change when the mode is ablated, per image", "1"),
    "n_images": ("images averaged", "1"),
    "ablated": ("the mode was ablated", ""),
    "in_top": ("the image is one of the mode's top images", ""),
    "top_image_score": ("mean image score of the mode's top images in the set", "1"),
}


def labels(name: str) -> dict[str, str]:
    """``long_name`` and ``units`` of a store variable (a name missing from :data:`VARIABLE_ATTRS` is a bug)."""
    if name not in VARIABLE_ATTRS:
        raise KeyError(f"store variable {name!r} has no long_name and units in qkdissect.stores.schema.VARIABLE_ATTRS")
    long_name, units = VARIABLE_ATTRS[name]
    return {"long_name": long_name, "units": units}


def dataset(kind: str, variables: Mapping[str, Var], coords: Mapping[str, Any], attrs: Mapping[str, Any]) -> xr.Dataset:
    """A store's Dataset: every variable with its description, every variable and coordinate with its
    ``long_name`` and ``units`` (:data:`VARIABLE_ATTRS`), the schema tag first among the attributes."""
    data = {
        name: (dims, values, desc if isinstance(desc, dict) else {"description": desc})
        for name, (dims, values, desc) in variables.items()
    }
    ds = xr.Dataset(
        data, coords=dict(coords), attrs=jsonable({"qkdissect_schema": f"{kind}/v{SCHEMA_VERSION}", **attrs})
    )
    for name, var in ds.variables.items():
        var.attrs.update(labels(str(name)))
    return ds


def ids_at(ids: Any, positions: np.ndarray) -> np.ndarray:
    """The ids at ``positions`` along an id coordinate ("" where a position is -1: fewer items than ranks)."""
    ids = np.asarray(ids, dtype=object)
    out = np.full(positions.shape, "", dtype=object)
    ok = positions >= 0
    out[ok] = ids[positions[ok]]
    return out


def layer_coords(n_layers: int) -> dict[str, Any]:
    """The layer dim with its normalised depth l / (L - 1)."""
    return {"layer": np.arange(n_layers), "depth": ("layer", np.arange(n_layers) / max(1, n_layers - 1))}


def sign_coord() -> dict[str, Any]:
    return {"sign": (("sign",), np.array(SIGNS, dtype=object))}


def modes_dataset(
    u: np.ndarray,
    s: np.ndarray,
    v: np.ndarray,
    block: np.ndarray,
    attrs: dict[str, Any],
    kv_heads: Sequence[int] | None = None,
    group_angles: tuple[np.ndarray, np.ndarray] | None = None,
) -> xr.Dataset:
    """``kv_heads``: the key-value head of each query head (grouped-query attention), a ``kv_head`` coordinate;
    ``group_angles``: the pairs of query heads sharing one (pair, 2) and the principal angles between their query
    sides (layer, pair, angle) (:func:`qkdissect.core.groups.query_group_angles`)."""
    n_layers, n_heads, d, n_modes = u.shape
    coords: dict[str, Any] = {
        "layer": np.arange(n_layers), "head": np.arange(n_heads), "dim": np.arange(d), "mode": np.arange(n_modes)
    }  # fmt: skip
    if kv_heads is not None:
        coords["kv_head"] = ("head", np.asarray(kv_heads, dtype=np.int64))
    dims = ("layer", "head", "dim", "mode")
    variables: dict[str, Var] = {
        **_group_angles(group_angles, kv_heads, coords),
        "U": (dims, u, "query-side singular vectors (unit)"),
        "V": (dims, v, "key-side singular vectors (unit)"),
        "S": (MODE_DIMS, s, "singular values of W_q^T W_k, descending"),
        "block": (
            MODE_DIMS,
            block.astype(np.int32),
            "id of the block of near-equal singular values (see attrs.block_rtol)",
        ),
    }
    return dataset("modes", variables, coords, {"conventions": CONVENTIONS, **attrs})


def _group_angles(
    found: tuple[np.ndarray, np.ndarray] | None, kv_heads: Sequence[int] | None, coords: dict[str, Any]
) -> dict[str, Var]:
    """Grouped-query heads: the principal angles between the query sides of every two heads that share a key-value
    head, with the pair's heads as coordinates along ``head_pair`` (added to ``coords``); nothing for a model whose
    query heads each have their own key head."""
    if found is None or kv_heads is None:
        return {}
    pairs, angles = found
    kv = np.asarray(kv_heads, dtype=np.int64)
    coords.update(
        pair_head_a=("head_pair", pairs[:, 0]), pair_head_b=("head_pair", pairs[:, 1]),
        pair_kv_head=("head_pair", kv[pairs[:, 0]]),
    )  # fmt: skip
    what = (
        "principal angles between the query sides (spans of U) of two query heads sharing a key-value head, "
        "ascending: 0 = they read the same subspace"
    )
    return {"query_group_angle": (("layer", "head_pair", "angle"), angles, what)}


def offsets_dataset(
    s: np.ndarray, cos: np.ndarray, head: np.ndarray, offsets: np.ndarray | Sequence[int], attrs: Mapping[str, Any],
    kv_heads: Sequence[int] | None,
) -> xr.Dataset:  # fmt: skip
    """A rotary model's interaction at many offsets: ``s``, ``cos`` (layer, head, offset, mode) of W_q^T R(-d) W_k
    (:mod:`qkdissect.core.offsets`), with each head's singular-value-weighted cosine per offset (``head``) and its
    mean over the heads of a layer. ``offsets`` (n,): token offsets, the ``offset`` coordinate itself; (n, 2): the
    (dy, dx) of each, coordinates ``dy`` and ``dx`` along an ``offset`` index 0..n-1. Either way a ``distance``
    coordinate (|d|, or sqrt(dy^2 + dx^2) patches)."""
    n_layers, n_heads, _, n_modes = s.shape
    dims = ("layer", "head", "offset", "mode")
    variables: dict[str, Var] = {
        "S": (dims, s, "singular values of W_q^T R(-d) W_k at each offset d, descending"),
        "cosine": (dims, cos, "u_n . v_n of the modes at each offset"),
        "head_weighted": (("layer", "head", "offset"), head, "singular-value-weighted mean of per-mode cosines"),
        "layer_weighted": (("layer", "offset"), head.mean(axis=1), "mean over heads of head_weighted"),
    }
    d = np.asarray(offsets, dtype=np.int64)
    coords: dict[str, Any] = {**layer_coords(n_layers), "head": np.arange(n_heads), "mode": np.arange(n_modes)}
    if d.ndim == 1:
        coords.update(offset=d, distance=("offset", np.abs(d).astype(np.float64)))
    else:
        coords.update(offset=np.arange(len(d)), dy=("offset", d[:, 0]), dx=("offset", d[:, 1]))
        coords["distance"] = ("offset", np.hypot(d[:, 0], d[:, 1]))
    if kv_heads is not None:
        coords["kv_head"] = ("head", np.asarray(kv_heads, dtype=np.int64))
    return dataset("offsets", variables, coords, attrs)


@dataclass(frozen=True)
class DistanceProfile:
    """The weighted cosine by distance: the bins (distance,), each head's mean over the offsets of a bin (layer,
    head, distance) and how many offsets each bin holds."""

    bins: np.ndarray
    head: np.ndarray
    counts: np.ndarray


def spectrum_dataset(
    energies: Any, planes: Mapping[str, Any], profile: DistanceProfile | None, attrs: Mapping[str, Any],
    kv_heads: Sequence[int] | None,
) -> xr.Dataset:  # fmt: skip
    """``energies``: :class:`qkdissect.core.spectrum.PlaneEnergies` (layer, head, plane); ``planes``: the plane
    coordinates (``rotated``, ``dim_a``, ``dim_b``, ``rate``, ``wavelength``, ``axis``) as (dims, values);
    ``profile``: the weighted cosine by distance (none without an offsets store)."""
    n_layers, n_heads, n_planes = energies.zero.shape
    dims = ("layer", "head", "plane")
    variables: dict[str, Var] = {
        "energy_zero": (dims, energies.zero, "||W_q,p^T W_k,p||_F^2: the plane's part of W_q^T W_k (offset 0)"),
        "energy_mean": (dims, energies.mean, "E_theta ||W_q,p^T R(theta) W_k,p||_F^2 = ||W_q,p||_F^2 ||W_k,p||_F^2 "
                        "/ 2 over a uniform angle (the unrotated group: its offset-0 energy)"),
        "share_zero": (dims, energies.share_zero, "energy_zero over the head's sum over planes (no cross-plane terms)"),
        "share_mean": (dims, energies.share_mean, "energy_mean over the head's sum over planes"),
        "layer_share_zero": (("layer", "plane"), energies.share_zero.mean(axis=1), "mean over heads of share_zero"),
        "layer_share_mean": (("layer", "plane"), energies.share_mean.mean(axis=1), "mean over heads of share_mean"),
        "energy_total_zero": (("layer", "head"), energies.total, "||W_q^T W_k||_F^2: the sum of energy_zero plus "
                              "the cross-plane terms"),
    }  # fmt: skip
    coords: dict[str, Any] = {
        **layer_coords(n_layers), "head": np.arange(n_heads), "plane": np.arange(n_planes), **planes,
    }  # fmt: skip
    if kv_heads is not None:
        coords["kv_head"] = ("head", np.asarray(kv_heads, dtype=np.int64))
    if profile is not None:
        coords["distance"] = np.asarray(profile.bins, dtype=np.float64)
        variables["head_weighted"] = (
            ("layer", "head", "distance"),
            profile.head,
            "the offsets store's head_weighted, averaged over the offsets of each distance",
        )
        variables["layer_weighted"] = (
            ("layer", "distance"),
            profile.head.mean(axis=1),
            "mean over heads of head_weighted",
        )
        variables["n_offsets"] = (("distance",), np.asarray(profile.counts, dtype=np.int64),
                                  "offsets of the offsets store in the distance bin")  # fmt: skip
    return dataset("spectrum", variables, coords, attrs)


def scores_dataset(
    r: Any, coords: Mapping[str, Any], released_code: bool, attrs: Mapping[str, Any], null: Any = None
) -> xr.Dataset:
    """``r``: the section-1.3 scores (:class:`qkdissect.core.scores.LayerScores`); ``null``: the null of its layer
    statistics (:class:`qkdissect.core.scores.LayerNull`), variables over ``null_seed``."""
    weighted = "singular-value-weighted mean of per-mode cosines" + (
        " / d_head (released code, bug B1)" if released_code else ""
    )
    kept = f"mean of per-mode cosines over the modes with s_n / s_0 >= {r.null_rtol:g} (see null_mode)"
    variables: dict[str, Var] = {
        "cosine": (MODE_DIMS, r.cosine, "u_n . v_n"),
        "null_mode": (
            MODE_DIMS,
            r.null_mode,
            "numerically null: s_n / s_0 < attrs.null_rtol (s_0: the head's largest)",
        ),
        "n_null": (("layer", "head"), r.null_mode.sum(axis=-1).astype(np.int64), "modes left out of head_mean"),
        "head_mean": (("layer", "head"), r.head_mean, kept),
        "head_mean_all": (
            ("layer", "head"),
            r.head_mean_all,
            "mean of per-mode cosines over every mode (released code)",
        ),
        "head_weighted": (("layer", "head"), r.head_weighted, weighted),
        "layer_mean": (("layer",), r.layer_mean, "mean over heads of head_mean"),
        "layer_mean_all": (("layer",), r.layer_mean_all, "mean over heads of head_mean_all (released code)"),
        "layer_weighted": (("layer",), r.layer_weighted, "mean over heads of head_weighted"),
    }
    extra: dict[str, Any] = {}
    if null is not None:
        variables["null_layer_weighted"] = (("null_seed",), null.weighted, "layer_weighted of a random layer")
        variables["null_layer_mean"] = (("null_seed",), null.mean, "layer_mean of a random layer")
        extra["null_seed"] = np.asarray(null.seeds, dtype=np.int64)
    return dataset("scores", variables, {**coords, **extra, "depth": ("layer", r.depth)}, attrs)


#: the per-image statistics a projections store streams, (image, layer, head, mode) float32
PROJECTION_STATS = {"q_max": "max_t x_t.u", "q_min": "min_t x_t.u", "k_max": "max_t x_t.v", "k_min": "min_t x_t.v"}


def layer_null_interval(ds: xr.Dataset, weighted: bool = True) -> tuple[float, float]:
    """The null interval of a scores store's layer statistic (``layer_weighted``, or ``layer_mean`` when not
    ``weighted``): the same statistic of random Gaussian layers of the model's shapes (attrs ``layer_null_*``)."""
    key = "layer_null_weighted" if weighted else "layer_null_mean"
    if key not in ds.attrs:
        raise ValueError(
            f"the scores store of {ds.attrs.get('model_id')} has no null of its layer statistics (written by an "
            "older qkdissect): rerun its scores (snakemake --forcerun scores)"
        )
    low, high = ds.attrs[key]
    return float(low), float(high)


#: the image scores of a projections store by attrs["image_score"] (stores without it: released)
IMAGE_SCORE_DEFINITIONS = {
    "released": "score+ = max q * max k, score- = min q * min k (released code)",
    "clipped": "score+ = [max q]_+ [max k]_+, score- = [-min q]_+ [-min k]_+",
}


def projections_dataset(
    valid: np.ndarray, top_score: np.ndarray, top_image: np.ndarray, both_negative: np.ndarray, s: np.ndarray,
    unit_sum: np.ndarray, anisotropy: np.ndarray, coords: Mapping[str, Any], attrs: Mapping[str, Any], *,
    on_prefix: np.ndarray,
) -> xr.Dataset:  # fmt: skip
    """The small variables of a projections store (its per-image statistics are streamed beside them);
    ``on_prefix``: (side (query, key), layer, head, mode, sign, prefix_kind) counts of images whose map peaks on a
    prefix token of each kind of :data:`PREFIX_KINDS`."""
    n_layers, n_heads, n_modes = s.shape
    rule = IMAGE_SCORE_DEFINITIONS[attrs.get("image_score", "released")]
    variables: dict[str, Var] = {
        "valid": (("image",), valid, "the image was decoded and projected"),
        "top_score": (TOP_DIMS, top_score, f"{rule}, of the top images, descending"),
        "top_both_negative": (("layer", "head", "mode", "sign"), both_negative.astype(np.int64),
                              "top images whose two extremes are on the wrong side of 0 (sign +: max q < 0 and "
                              "max k < 0; sign -: min q > 0 and min k > 0)"),
        "top_image": (TOP_DIMS, top_image, "index (image dim) of the top images; -1 where fewer images"),
        "top_score_weighted": (TOP_DIMS, top_score * s[..., None, None],
                               "s_n * top_score (same images: the ranking per mode does not depend on s_n)"),
        "centre_unit_sum": (("layer", "dim"), unit_sum, "sum over valid images of the unit centre-token vector"),
        "anisotropy": (("layer",), anisotropy, "mean cosine between centre tokens of different images (Fig. S4 A)"),
    }  # fmt: skip
    for side, name in (("query", "u_n"), ("key", "v_n")):
        variables[f"{side}_top_on_prefix"] = (
            ("layer", "head", "mode", "sign", "prefix_kind"), on_prefix[0 if side == "query" else 1].astype(np.int64),
            f"valid images whose {side} map x_t . {name} takes its largest value over all tokens, prefix included "
            "(sign -: its smallest), on a prefix token of this kind (attrs.prefix_tokens: the kind of each); a tie "
            "counts for the prefix token. The per-image maxima, minima and top images are over patch tokens only",
        )  # fmt: skip
    axes = {"layer": np.arange(n_layers), "head": np.arange(n_heads), "mode": np.arange(n_modes),
            "prefix_kind": np.array(PREFIX_KINDS, dtype=object)}  # fmt: skip
    return dataset("projections", variables, {**coords, **sign_coord(), **axes, **top_ids(coords, top_image)}, attrs)


def top_ids(coords: Mapping[str, Any], top_image: np.ndarray) -> dict[str, Any]:
    """``top_image_id``: the ids of the top images (a coordinate beside ``top_image``, their positions)."""
    return {"top_image_id": (TOP_DIMS, ids_at(coords["image_id"][1], top_image))}


def logits_dataset(
    shares: np.ndarray, explained: np.ndarray, winning: np.ndarray, sigma_positive: np.ndarray,
    scopes: Sequence[str], terms: Sequence[str], ks: Sequence[int], attrs: Mapping[str, Any],
) -> xr.Dataset:  # fmt: skip
    n_layers, _, _, n_heads = shares.shape
    variables: dict[str, Var] = {
        "share": (("layer", "scope", "term", "head"), shares, "cov(term, logit) / var(logit)"),
        "explained": (("layer", "k", "head"), explained,
                      "1 - ||T - T_k||^2 / ||T||^2 within query rows (T: token-token term)"),
        "winning_positive": (("layer", "head"), winning,
                             "share of the winning keys' token-token margin from modes with cos(u, v) > 0"),
        "sigma_positive": (("layer", "head"), sigma_positive,
                           "baseline: share of the singular values in modes with cos(u, v) > 0"),
    }  # fmt: skip
    coords = {
        **layer_coords(n_layers),
        "scope": np.array(scopes, dtype=object),
        "term": np.array(terms, dtype=object),
        "k": np.array(ks),
        "head": np.arange(n_heads),
    }
    return dataset("logits", variables, coords, attrs)


def preference_dataset(
    table: np.ndarray, query_token: np.ndarray, token_masks: np.ndarray, groups: Mapping[str, np.ndarray],
    example_crop: np.ndarray, sources: Sequence[str], regions: Sequence[str], coords: Mapping[str, Any],
    attrs: Mapping[str, Any],
) -> xr.Dataset:  # fmt: skip
    variables: dict[str, Var] = {
        "table": (("image", "layer", "head", "source", "region"), table.astype(np.float32),
                  "attention of the source token's row on each region (rows sum to 1)"),
        "query_token": (("image", "source"), query_token, "patch index of the query token; -1: no mask"),
        "token_masks": (("image", "region", "token"), token_masks.astype(np.float32),
                        "area fractions of each region per patch token (sum to 1)"),
        "example_crop": (("y", "x", "channel"), example_crop,
                         "image `example` as the model saw it (resized, centre-cropped; 8-bit RGB)"),
    }  # fmt: skip
    for g, v in groups.items():
        variables[g] = (("image", "layer", "head"), v.astype(np.float32), f"{g} (paper 4.1 grouping)")
        variables[f"layer_{g}"] = (("layer",), np.nanmean(v, axis=(0, 2)), "mean over images and heads")
    axes = {
        "source": (("source",), np.array(sources, dtype=object)),
        "region": (("region",), np.array(regions, dtype=object)),
        **layer_coords(table.shape[1]),
    }
    return dataset("preference", variables, {**coords, **axes}, attrs)


def same_object_dataset(
    values: Mapping[str, np.ndarray], top_image: np.ndarray, n_objects: np.ndarray, coords: Mapping[str, Any],
    attrs: Mapping[str, Any],
) -> xr.Dataset:  # fmt: skip
    """``values``: ``p`` and ``chance`` (layer, head, mode, sign), ``head_p`` and ``head_chance`` (layer, head)."""
    p = values["p"]
    variables: dict[str, Var] = {
        "p": (("layer", "head", "mode", "sign"), p,
              "fraction of top images where the query and key sides pick the same object"),
        "top_image": (TOP_DIMS, top_image.astype(np.int64), "index of the top images"),
        "head_p": (("layer", "head"), values["head_p"], "sum_n s_n p_n / sum_n s_n over modes and signs"),
        "layer_p": (("layer",), np.nanmean(values["head_p"], axis=1), "mean over heads of head_p"),
        "chance": (("layer", "head", "mode", "sign"), values["chance"],
                   "chance level of p: mean of 1 / n_objects over the same top images (query and key objects drawn "
                   "uniformly and independently in each)"),
        "head_chance": (("layer", "head"), values["head_chance"], "sum_n s_n chance_n / sum_n s_n, as head_p"),
        "layer_chance": (("layer",), np.nanmean(values["head_chance"], axis=1), "mean over heads of head_chance"),
        "n_objects": (("image",), n_objects, "objects covering at least one token"),
    }  # fmt: skip
    axes = {**sign_coord(), **layer_coords(p.shape[0]), **top_ids(coords, top_image)}
    return dataset("same_object", variables, {**coords, **axes}, attrs)


def text_projections_dataset(
    top: Mapping[str, np.ndarray], n_tokens: np.ndarray, passages: Sequence[Any], s: np.ndarray,
    attrs: Mapping[str, Any],
) -> xr.Dataset:  # fmt: skip
    """``top``: ``score``, ``passage``, ``query_token``, ``key_token`` (layer, head, mode, sign, rank)."""
    variables: dict[str, Var] = {
        "top_score": (TOP_DIMS, top["score"], "max over allowed pairs of [q_i]_+ [k_j]_+, descending"),
        "top_score_weighted": (TOP_DIMS, top["score"] * s[..., None, None].astype(np.float32), "s_n * top_score"),
        "top_passage": (TOP_DIMS, top["passage"], "passage index; -1: fewer"),
        "top_query_token": (TOP_DIMS, top["query_token"], "query position i"),
        "top_key_token": (TOP_DIMS, top["key_token"], "key position j"),
        "n_tokens": (("passage",), n_tokens, "tokens of the passage after truncation"),
    }
    coords = {
        **sign_coord(),
        "passage_id": (("passage",), np.array([p.id for p in passages], dtype=object)),
        "passage_sha256": (("passage",), np.array([p.sha256() for p in passages], dtype=object)),
        "text": (("passage",), np.array([p.text for p in passages], dtype=object)),
        "top_passage_id": (TOP_DIMS, ids_at([p.id for p in passages], top["passage"])),
    }
    return dataset("text_projections", variables, coords, attrs)


def maps_dataset(variables: Mapping[str, Var], coords: Mapping[str, Any], attrs: Mapping[str, Any]) -> xr.Dataset:
    return dataset("maps", variables, coords, attrs)


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


def atlas_dataset(
    codes: Mapping[str, np.ndarray], top_score: np.ndarray, slot_image: np.ndarray, thumbnails: np.ndarray,
    coords: Mapping[str, Any], attrs: Mapping[str, Any], key_on_prefix: xr.DataArray | None = None,
) -> xr.Dataset:  # fmt: skip
    """``codes``: ``q_code``/``k_code`` (layer, head, mode, sign, rank, gy, gx) uint8 and ``q_lo``, ``q_step``,
    ``k_lo``, ``k_step`` (layer, head, mode, sign, rank): a map is ``lo + step * code``; ``key_on_prefix``: the
    projections store's ``key_top_on_prefix`` (None: a store made before it was counted)."""
    maps = (*TOP_DIMS, "gy", "gx")
    variables: dict[str, Var] = {
        "top_score": (TOP_DIMS, top_score, "the projections store's top_score of the slot's image"),
        "slot_image": (TOP_DIMS, slot_image, "index (image dim) of the slot's image; -1: empty"),
        "thumbnail": (("image", "y", "x", "channel"), thumbnails,
                      "the image as the model saw it (resized, centre-cropped), then downscaled"),
    }  # fmt: skip
    for side, what in (("q", "query map x_t . u_n"), ("k", "key map x_t . v_n")):
        variables[f"{side}_code"] = (maps, codes[f"{side}_code"], f"{what} (the mode's sign applied), averaged "
                                     "over the patch grid down to (gy, gx), as lo + step * code")  # fmt: skip
        variables[f"{side}_lo"] = (TOP_DIMS, codes[f"{side}_lo"], "the map's minimum: code 0")
        variables[f"{side}_step"] = (TOP_DIMS, codes[f"{side}_step"], "(max - min) / 255: the error is <= step / 2")
    n_layers, n_heads, n_modes = top_score.shape[:3]
    axes = {"layer": np.arange(n_layers), "head": np.arange(n_heads), "mode": np.arange(n_modes)}
    if key_on_prefix is not None:
        what = "the projections store's: images whose key map peaks on a prefix token of the kind (of images.valid)"
        variables["key_top_on_prefix"] = (tuple(map(str, key_on_prefix.dims)), key_on_prefix.values, what)
        axes["prefix_kind"] = key_on_prefix.prefix_kind.values
    ids = coords["image_id"][1]
    return dataset(
        "atlas",
        variables,
        {**coords, **sign_coord(), **axes, "top_image_id": (TOP_DIMS, ids_at(ids, slot_image))},
        attrs,
    )


#: the image subsets an ablation store averages over
ABLATION_SUBSETS = {"all": "every valid image of the set", "top": "the mode's top images (either sign) in the set"}


def ablation_dataset(
    per_image: np.ndarray, sel: Any, metrics: Sequence[str], top: np.ndarray | None, s: np.ndarray,
    cos: np.ndarray, coords: Mapping[str, Any], attrs: Mapping[str, Any], top_score: np.ndarray | None = None,
) -> xr.Dataset:  # fmt: skip
    """``per_image``: (image, ablation, metric) float64, NaN for an image not decoded; ``sel``: the ablated modes
    (``layer``, ``head``, ``mode`` arrays, one per ablation); ``top``: (image, ablation) the mode's top images (None:
    no projections store, no ``top`` subset); ``s``, ``cos``: (layer, head, mode) of the modes store;
    ``top_score``: (ablation,) the mean image score of each mode's top images in the set (with ``top``)."""
    valid = ~np.isnan(per_image[:, 0, 0]) if per_image.shape[1] else np.zeros(per_image.shape[0], bool)
    subsets = {"all": np.broadcast_to(valid[:, None], per_image.shape[:2])}
    if top is not None:
        subsets["top"] = top & valid[:, None]
    shape = s.shape
    effect = np.full((*shape, len(metrics), len(subsets)), np.nan)
    count = np.zeros((*shape, len(subsets)), np.int64)
    for j, member in enumerate(subsets.values()):  # two subsets at most
        n = member.sum(axis=0)
        total = np.where(member[..., None], per_image, 0.0).sum(axis=0)  # (ablation, metric)
        with np.errstate(invalid="ignore", divide="ignore"):
            effect[sel.layer, sel.head, sel.mode, :, j] = total / n[:, None]
        count[sel.layer, sel.head, sel.mode, j] = n
    ablated = np.zeros(shape, bool)
    ablated[sel.layer, sel.head, sel.mode] = True
    variables: dict[str, Var] = {
        "effect": ((*MODE_DIMS, "metric", "subset"), effect,
                   "mean over the subset's images of each metric (attrs.metrics); NaN: not ablated, or no image"),
        "n_images": ((*MODE_DIMS, "subset"), count, "images averaged in effect"),
        "ablated": (MODE_DIMS, ablated, "the mode was ablated (selected)"),
        "image_effect": (("image", "ablation", "metric"), per_image.astype(np.float32),
                         "each image's value of each metric; NaN: image not decoded"),
        "singular_value": (MODE_DIMS, np.asarray(s, np.float64), "s_n of the modes store"),
        "cosine": (MODE_DIMS, np.asarray(cos, np.float64), "u_n . v_n of the modes store"),
    }  # fmt: skip
    if top is not None:
        variables["in_top"] = (("image", "ablation"), top, "the image is one of the mode's top images (either sign)")
    if top_score is not None:
        score = np.full(shape, np.nan)
        score[sel.layer, sel.head, sel.mode] = top_score
        variables["top_image_score"] = (
            MODE_DIMS,
            score,
            "mean over the (sign, rank) slots of the mode's top "
            "images that lie in the set of the image score that ranked them (the "
            "projections store's top_score); NaN: not ablated, or none in the set",
        )
    axes = {
        **layer_coords(shape[0]), "head": np.arange(shape[1]), "mode": np.arange(shape[2]),
        "metric": np.array(list(metrics), dtype=object),
        "subset": (("subset",), np.array(list(subsets), dtype=object), {"description": ", ".join(
            f"{k}: {ABLATION_SUBSETS[k]}" for k in subsets)}),
        "ablation_layer": (("ablation",), np.asarray(sel.layer, np.int64)),
        "ablation_head": (("ablation",), np.asarray(sel.head, np.int64)),
        "ablation_mode": (("ablation",), np.asarray(sel.mode, np.int64)),
    }  # fmt: skip
    return dataset("ablation", variables, {**coords, **axes}, attrs)
