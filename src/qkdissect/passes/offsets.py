"""The pass over a rotary model's weights at many offsets (no data): for every head and every offset d between a
query and a key, the singular values and per-mode cosines of W_q^T R(-d) W_k (:mod:`qkdissect.core.offsets`),
and the weighted cosine of each head and layer as a function of d. A language model's offsets are a range of
token offsets (a context length); an image model's (2-D RoPE) every offset (dy, dx) between two patches of its
grid (``"all"``). The modes themselves (vectors) are stored only for the offsets asked one by one (`qkdissect
modes --offset D`): those of every offset would not fit."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import xarray as xr

from ..core.offsets import grid_offsets, offset_spectrum, weighted_cosine
from ..core.rotary import Rotary
from ..errors import QKDissectError
from ..requests import OffsetsRequest
from ..stores.schema import offsets_dataset
from ..util.clock import utc_now
from .io import finish

if TYPE_CHECKING:
    pass

#: the most offsets one pass takes (each is a batch of d_head x d_head decompositions per head)
MAX_OFFSETS = 100_000
#: what ``offsets`` takes: token offsets (text), (dy, dx) pairs (images), or "all" (every offset of the grid)
OffsetsLike = Sequence[int] | Sequence[Sequence[int]] | np.ndarray | Literal["all"]


def compute_offsets(*args: Any, **kw: Any) -> xr.Dataset:
    """:func:`run_offsets` of ``OffsetsRequest.build(spec, offsets, output, device=...)``."""
    return run_offsets(OffsetsRequest.build(*args, **kw))


def run_offsets(r: OffsetsRequest) -> xr.Dataset:
    """The offsets store of a rotary model: S and cosines (layer, head, offset, mode) of W_q^T R(-d) W_k for each
    offset d of ``offsets`` (the query's position minus the key's), and the weighted cosines per head and layer
    (written to ``output`` when given). ``offsets``: token offsets for a language model; for an image model (2-D
    RoPE) ``"all"`` (every offset between two patches of its grid) or (dy, dx) pairs. A model without rotary
    embedding is refused: its interaction is the same at every offset."""
    from tqdm import tqdm

    from .loop import load, pass_record

    offsets = parse_offsets(r.offsets) if isinstance(r.offsets, str) else r.offsets
    started, t0 = utc_now(), time.perf_counter()
    m = load(r.model)
    qk = m.qk
    if qk.rotary is None:
        raise QKDissectError(
            f"{m.name} has no rotary position embedding: its query-key interaction is the same at every offset "
            "(`qkdissect modes` gives it)"
        )
    rot = qk.rotary
    grid = rot.grid or qk.layout.grid
    offs = offsets_of(m.name, rot, grid, offsets)
    t_load, t1 = time.perf_counter() - t0, time.perf_counter()
    with tqdm(total=len(offs), desc=f"offsets {m.name}", unit="offset", disable=not r.progress) as bar:
        s, cos = offset_spectrum(qk.w_q, qk.w_k, rot, offsets=offs, progress=bar.update)  # float64 inside
    timings = {"load": round(t_load, 4), "svd": round(time.perf_counter() - t1, 4)}
    asked = "all" if isinstance(offsets, str) else "list"
    params = {"offsets": {"asked": asked, "first": offs[0].tolist(), "last": offs[-1].tolist(), "count": len(offs)},
              "device_requested": r.model.device}  # fmt: skip
    record = pass_record("offsets", params, m, [], r.model.device, started, timings_s=timings)
    attrs = {
        "model_id": m.name,
        "spec": str(m.source.spec),
        "adapter": qk.adapter,
        "d_model": qk.d_model,
        "d_head": qk.d_head,
        **_offset_attrs(rot, grid, offs, asked),
        "rotary": rot.describe(),
        "weights_sha256": m.source.weights_sha256,
        "notes": qk.notes,
        "provenance": record,
    }
    if qk.qk_norm is not None:
        attrs["qk_norm"] = qk.qk_norm
    ds = offsets_dataset(s, cos, weighted_cosine(s, cos), offs, attrs, qk.kv_heads)
    return finish(ds, r.output)


def offsets_of(name: str, rot: Rotary, grid: tuple[int, ...] | None, offsets: OffsetsLike) -> np.ndarray:
    """The offsets of a pass, sorted and unique: (n,) integers for a language model, (n, 2) (dy, dx) row-major for
    an image model; ``"all"``: every offset between two patches of ``grid``. Refused in one line when they do not
    fit the model."""
    if rot.n_axes not in (1, 2):
        raise QKDissectError(f"{name} rotates by a {rot.n_axes}-D position: offsets take 1 (text) or 2 axes (images)")
    if isinstance(offsets, str):
        if offsets != "all":
            raise QKDissectError(f"offsets {offsets!r}: give 'all' or a list of offsets")
        if rot.n_axes == 1:
            raise QKDissectError(
                f"{name} is a language model: its offsets have no end; give a context length, --offsets N "
                "(offsets 0..N-1)"
            )
        if grid is None or len(grid) != 2:
            raise QKDissectError(f"{name} has no patch grid: give its offsets as (dy, dx) pairs")
        offs = grid_offsets((int(grid[0]), int(grid[1])))
    else:
        a = np.asarray(offsets)
        shape_ok = a.ndim == 1 if rot.n_axes == 1 else a.ndim == 2 and a.shape[1] == 2
        if a.size == 0 or not shape_ok or not np.issubdtype(a.dtype, np.integer):
            want = "(dy, dx) pairs of integers (or 'all')" if rot.n_axes == 2 else "integers (token offsets)"
            raise QKDissectError(f"{name} takes offsets as {want}, not {np.asarray(offsets).tolist()!r:.60}")
        offs = np.unique(a.astype(np.int64), axis=0)
    if len(offs) > MAX_OFFSETS:
        raise QKDissectError(f"give between 1 and {MAX_OFFSETS:,} offsets, not {len(offs):,}")
    return offs


def _offset_attrs(rot: Rotary, grid: tuple[int, ...] | None, offs: np.ndarray, asked: str) -> dict[str, Any]:
    """What the store says of its offsets: their axes, which pairs of tokens they cover, where the tokens the
    model does not rotate (CLS, registers) sit."""
    out: dict[str, Any] = {"offset_axes": list(rot.axes)}
    if rot.n_axes == 1:
        out["offsets"] = (
            f"{len(offs)} token offsets d from {offs[0]} to {offs[-1]}, the query's position minus the key's (d > 0: "
            "the key is before the query; distance = |d|)"
        )
        return out
    cover = (
        f"every offset between two patches of the {grid[0]} x {grid[1]} grid: dy = {1 - grid[0]}..{grid[0] - 1}, "
        f"dx = {1 - grid[1]}..{grid[1] - 1}, {len(offs)} offsets"
        if asked == "all" and grid is not None
        else f"{len(offs)} offsets (dy, dx) asked one by one"
    )
    out["offsets"] = (
        f"{cover}; (dy, dx) is the query's row and column minus the key's, in patches (coordinates dy, dx along "
        "offset; distance = sqrt(dy^2 + dx^2)); patch-patch pairs only"
    )
    n, at = rot.unrotated_prefix, (np.round(rot.unrotated_position, 12) + 0.0).tolist()
    out["unrotated_prefix_tokens"], out["unrotated_position"] = n, at
    if n:
        out["prefix_tokens"] = (
            f"the {n} prefix token{'s' if n > 1 else ''} (CLS, registers) {'are' if n > 1 else 'is'} not rotated: "
            f"one interacts with a patch at p as a token at unrotated_position {at} would, at offset "
            "unrotated_position - p (prefix query) or p - unrotated_position (prefix key), in this store only where "
            "that offset is whole and on the grid; two prefix tokens interact at offset (0, 0)"
        )
    return out


def parse_offsets(text: str) -> list[int] | Literal["all"]:
    """``N`` (offsets 0..N-1: a query and the N keys up to it, as a decoder sees them), ``A:B`` (A..B-1) or
    ``all`` (an image model: every offset between two patches of its grid)."""
    if text == "all":
        return "all"
    first, colon, last = text.partition(":")
    try:
        lo, hi = (int(first), int(last)) if colon else (0, int(first))
    except ValueError:
        raise QKDissectError(
            f"--offsets {text!r}: give N (offsets 0..N-1), A:B (offsets A..B-1) or all (every offset of an image "
            "model's grid)"
        ) from None
    if hi <= lo or hi - lo > MAX_OFFSETS:
        raise QKDissectError(f"--offsets {text!r}: give between 1 and {MAX_OFFSETS:,} offsets (A < B)")
    return list(range(lo, hi))
