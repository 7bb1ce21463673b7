"""The pass over a rotary model's weights at many offsets (no data): for every head and every offset d between a
query and a key, the singular values and per-mode cosines of W_q^T R(-d) W_k (:mod:`qkdissect.core.offsets`),
and the weighted cosine of each head and layer as a function of d. The modes themselves (vectors) are stored
only for the offsets asked one by one (`qkdissect modes --offset D`): those of every offset would not fit."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from ..core.offsets import offset_spectrum, weighted_cosine
from ..errors import QKDissectError
from ..options import default
from ..provenance.records import utc_now
from ..stores.schema import offsets_dataset
from .io import finish

if TYPE_CHECKING:
    from ..models import ModelLike
    from .loop import Manifest

#: the most offsets one pass takes (each is a batch of d_head x d_head SVDs per head)
MAX_OFFSETS = 100_000


def compute_offsets(
    spec: ModelLike,
    offsets: Sequence[int],
    output: str | Path | None = None,
    *,
    device: str = default("device"),
    model_key: str | None = None,
    manifest: Manifest = None,
    progress: bool = True,
) -> xr.Dataset:
    """The offsets store of a rotary model: S and cosines (layer, head, offset, mode) of W_q^T R(-d) W_k for each
    offset d of ``offsets`` (the query's position minus the key's), and the weighted cosines per head and layer
    (written to ``output`` when given). A model without rotary embedding is refused: its interaction is the same
    at every offset."""
    from tqdm import tqdm

    from .loop import load, pass_record

    offs = sorted({int(d) for d in offsets})
    if not offs or len(offs) > MAX_OFFSETS:
        raise QKDissectError(f"give between 1 and {MAX_OFFSETS:,} offsets, not {len(offs):,}")
    started, t0 = utc_now(), time.perf_counter()
    m = load(spec, device, model_key, manifest)
    qk = m.qk
    if qk.rotary is None:
        raise QKDissectError(
            f"{m.name} has no rotary position embedding: its query-key interaction is the same at every offset "
            "(`qkdissect modes` gives it)"
        )
    if qk.rotary.n_axes != 1:
        raise QKDissectError(
            f"{m.name} rotates by a {qk.rotary.n_axes}-D position: its offsets are (dy, dx); this pass takes the "
            "1-D offsets of language models for now (`qkdissect modes --offset DY,DX` gives one 2-D offset)"
        )
    t_load, t1 = time.perf_counter() - t0, time.perf_counter()
    rotations = qk.rotary.key_rotation(np.asarray(offs))
    with tqdm(total=len(offs), desc=f"offsets {m.name}", unit="offset", disable=not progress) as bar:
        s, cos = offset_spectrum(qk.w_q.double(), qk.w_k.double(), rotations, progress=bar.update)
    timings = {"load": round(t_load, 4), "svd": round(time.perf_counter() - t1, 4)}
    params = {"offsets": {"first": offs[0], "last": offs[-1], "count": len(offs)}, "device_requested": device}
    record = pass_record("offsets", params, m, [], device, started, timings_s=timings)
    attrs = {
        "model_id": m.name,
        "spec": str(m.loaded.spec),
        "adapter": qk.adapter,
        "d_model": qk.d_model,
        "d_head": qk.d_head,
        "rotary": qk.rotary.describe(),
        "weights_sha256": m.loaded.weights_sha256,
        "notes": qk.notes,
        "provenance": record,
    }
    if qk.qk_norm is not None:
        attrs["qk_norm"] = qk.qk_norm
    ds = offsets_dataset(s, cos, weighted_cosine(s, cos), offs, attrs, qk.kv_heads)
    return finish(ds, output)


def parse_offsets(text: str) -> list[int]:
    """``N`` (offsets 0..N-1: a query and the N keys up to it, as a decoder sees them) or ``A:B`` (A..B-1)."""
    first, colon, last = text.partition(":")
    try:
        lo, hi = (int(first), int(last)) if colon else (0, int(first))
    except ValueError:
        raise QKDissectError(f"--offsets {text!r}: give N (offsets 0..N-1) or A:B (offsets A..B-1)") from None
    if hi <= lo or hi - lo > MAX_OFFSETS:
        raise QKDissectError(f"--offsets {text!r}: give between 1 and {MAX_OFFSETS:,} offsets (A < B)")
    return list(range(lo, hi))
