"""The rotary spectrum of a model (no data): per layer, head and rotation plane, the energy of the plane's part of
the query-key interaction at offset 0 and averaged over its angle, with their shares (:mod:`qkdissect.core.spectrum`);
and, from an offsets store of the same weights (`qkdissect offsets`), the weighted cosine of each head and layer by
distance |d| between a query and a key."""

from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any

import numpy as np
import xarray as xr

from ..core.rotary import Rotary
from ..core.scores import null_interval
from ..core.spectrum import by_distance, group_rates, n_groups, plane_energies, unrotated_dims, wavelengths
from ..errors import QKDissectError
from ..requests import SpectrumRequest
from ..stores.schema import DistanceProfile, spectrum_dataset
from ..util.clock import utc_now
from .io import finish

if TYPE_CHECKING:
    pass

#: what the store's attrs say of its planes and shares
DEFINITIONS = (
    "plane p of a head: its dimensions (dim_a, dim_b), turned together by RoPE at `rate` radians per token (patch) "
    "of offset; the last plane, where `rotated` is false, holds the dimensions a partial rotary leaves unrotated. "
    "energy_zero = ||W_q,p^T W_k,p||_F^2 (offset 0); energy_mean = its average over a uniform angle of the plane, "
    "||W_q,p||_F^2 ||W_k,p||_F^2 / 2. Shares are over the head's sum over planes: cross-plane terms are in no share "
    "(energy_total_zero - sum of energy_zero; they vanish on average over independent angles)"
)


def compute_spectrum(*args: Any, **kw: Any) -> xr.Dataset:
    """:func:`run_spectrum` of ``SpectrumRequest.build(spec, offsets_store, output, distance_bin=...)``."""
    return run_spectrum(SpectrumRequest.build(*args, **kw))


def run_spectrum(r: SpectrumRequest) -> xr.Dataset:
    """The spectrum store of a rotary model (written to ``output`` when given): its plane energies and shares, and
    with ``offsets`` (an offsets store of the same weights) the weighted cosines by distance, binned to multiples
    of ``distance_bin`` (tokens, or patches for images). A model without rotary embedding is refused."""
    from .loop import load, pass_record, store_of

    started, t0 = utc_now(), time.perf_counter()
    m = load(dataclasses.replace(r.model, device="cpu"))
    rotary = m.qk.rotary
    if rotary is None:
        raise QKDissectError(
            f"{m.name} has no rotary position embedding: its interaction has no rotation planes (`qkdissect modes` "
            "gives it)"
        )
    deps: list[dict[str, Any]] = []
    profile, offset_attrs = None, {}
    if r.offsets_store is not None:
        ds, deps = store_of(r.offsets_store, "offsets", m, "run `qkdissect offsets` on this model again")
        bins, head, counts = by_distance(ds.head_weighted.values, offset_distances(ds), r.distance_bin)
        profile = DistanceProfile(bins, head, counts)
        offset_attrs = {"offsets": ds.attrs["provenance"]["parameters"].get("offsets"), "distance_bin": r.distance_bin}
    t_load, t1 = time.perf_counter() - t0, time.perf_counter()
    energies = plane_energies(m.qk.w_q, m.qk.w_k, rotary)
    timings = {"load": round(t_load, 4), "spectrum": round(time.perf_counter() - t1, 4)}
    params = {"distance_bin": r.distance_bin if r.offsets_store is not None else None}
    record = pass_record("spectrum", params, m, deps, "cpu", started, timings_s=timings)
    attrs = {
        "model_id": m.name,
        "spec": str(m.source.spec),
        "adapter": m.qk.adapter,
        "d_model": m.qk.d_model,
        "d_head": m.qk.d_head,
        "rotary": rotary.describe(),
        "definitions": DEFINITIONS,
        "distance_unit": "patches" if rotary.n_axes > 1 else "tokens",
        "unrotated_dims": unrotated_dims(rotary).tolist(),
        **offset_attrs,
        **dict(zip(("null_low", "null_high"), null_interval(m.qk.d_model, NULL_LEVEL), strict=True)),
        "null_level": NULL_LEVEL,
        "weights_sha256": m.source.weights_sha256,
        "provenance": record,
    }
    if m.qk.qk_norm is not None:
        attrs["qk_norm"] = m.qk.qk_norm
    return finish(spectrum_dataset(energies, plane_coords(rotary), profile, attrs, m.qk.kv_heads), r.output)


#: the level of the per-mode null interval the distance figure draws (that of a random mode of the model's width)
NULL_LEVEL = 0.95


def plane_coords(rotary: Rotary) -> dict[str, Any]:
    """The coordinates of the plane dim: whether it turns, its two dimensions (-1 for the unrotated group), its
    rate per axis and its wavelength (per layer and head with per-head frequencies)."""
    a, b = rotary.planes()
    extra = n_groups(rotary) - len(a)
    rates = group_rates(rotary)
    lead = ("layer", "head") if rotary.per_head else ()
    return {
        "rotated": ("plane", np.arange(n_groups(rotary)) < len(a)),
        "dim_a": ("plane", np.concatenate([a, [-1] * extra]).astype(np.int64)),
        "dim_b": ("plane", np.concatenate([b, [-1] * extra]).astype(np.int64)),
        "axis": ("axis", np.array(rotary.axes, dtype=object)),
        "rate": ((*lead, "plane", "axis"), rates),
        "wavelength": ((*lead, "plane"), wavelengths(rates)),
    }


def offset_distances(ds: xr.Dataset) -> np.ndarray:
    """The distance |d| of every offset of an offsets store: its ``distance`` coordinate, else sqrt(dy^2 + dx^2)
    from ``dy``, ``dx``, else |offset| (1-D)."""
    if "distance" in ds.coords:
        return np.asarray(ds.distance.values, dtype=np.float64)
    if "dy" in ds.coords and "dx" in ds.coords:
        return np.hypot(ds.dy.values.astype(np.float64), ds.dx.values.astype(np.float64))
    return np.abs(ds.offset.values.astype(np.float64))
