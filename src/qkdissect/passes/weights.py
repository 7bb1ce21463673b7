"""The pass over a model's weights alone (no data): the modes of every head's W_q^T W_k (their scores:
:mod:`.scores`).

On the CPU, a model whose W_q and W_k its safetensors file gives (:mod:`qkdissect.models.weightfile`: the converted
DINOv2-S/14, a timm DINOv2 or ViT ``timm:NAME@FILE.safetensors``, Hugging Face ViT / DeiT / DINOv2 / BEiT / CLIP /
BERT / GPT-2 files) is read straight from the file and its modes computed with numpy
(:mod:`qkdissect.core.modes_np`): the job never imports torch, timm or transformers. A Llama decoder's file (SmolLM2,
at offset 0) imports torch for its rotary frequencies and computes its modes with torch, as the model path does,
but never imports transformers. Any other model, a model in memory, an offset other than 0 and the GPU build the
model and run the torch path."""

from __future__ import annotations

import logging
import os
import sys
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from ..core.groups import query_group_angles
from ..core.modes_np import degenerate_blocks, fold_factors_np, qk_modes_np
from ..core.rotary import Rotary, times_keys
from ..errors import QKDissectError
from ..models.spec import ModelSpec
from ..models.weightfile import FileQK, read_qk_file
from ..options import Folding, Offset, mean_context
from ..requests import ModesRequest
from ..stores.schema import modes_dataset
from ..util.clock import utc_now
from .io import finish, model_record, weights_checked

log = logging.getLogger("qkdissect")

#: device nodes of a GPU torch could use (NVIDIA, AMD ROCm, WSL): without any, ``auto`` is the CPU
_GPU_NODES = ("/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def compute_modes(*args: Any, **kw: Any) -> xr.Dataset:
    """The modes of a model: :func:`run_modes` of ``ModesRequest.build(spec, output, device=..., ...)``."""
    return run_modes(ModesRequest.build(*args, **kw))


def run_modes(r: ModesRequest) -> xr.Dataset:
    """Load a model (or take one in memory), extract its per-head W_q and W_k, and return the modes dataset with
    provenance (written to ``r.output`` when given). A rotary (RoPE) model's interaction depends on the offset d
    between the query's and the key's positions (:mod:`qkdissect.core.rotary`): ``offset`` d gives the modes of
    W_q^T R(-d) W_k; without it, those of offset 0 (the store records which). d is a number of tokens for a
    language model, ``(dy, dx)`` patches for a 2-D RoPE vision transformer (timm's EVA-02, DINOv3, RoPE-ViT, PE);
    fractions are allowed (a prefix token sits at ``attrs.rotary.unrotated_position``, the grid centre for DINOv3).
    ``offset="mean"`` (an image model) or ``"mean:N"`` (a language model) gives the content core, the interaction
    averaged over every ordered pair of patches of the grid or over the causal pairs of N tokens,
    ``sum_d w_d W_q^T R(-d) W_k`` with w_d the share of the pairs at offset d (``attrs.content_core``).
    A grouped-query model pairs each query head with its own key-value head (coordinate ``kv_head``).

    The model's manifest (from :func:`qkdissect.models.resolve_weights`, or its JSON file) is checked against the
    weights actually read and recorded in the provenance. ``folding`` "folded" / "folded-centred" decomposes the
    LayerNorm-aware interaction ``(P) diag(gamma) W_q^T W_k diag(gamma) (P)`` instead of the paper's raw one
    (:mod:`qkdissect.core.layernorm`; an RMS norm folds its gains and has no P)."""
    started, t0 = utc_now(), time.perf_counter()
    spec = r.model.spec
    light = isinstance(spec, str | ModelSpec) and on_cpu(r.model.device) and r.offset is None
    fq = read_qk_file(spec, r.folding) if light else None
    if fq is None:
        return _modes_of_model(r)
    return _modes_of_file(fq, time.perf_counter() - t0, started, r)


def on_cpu(device: str) -> bool:
    """Whether the modes run on the CPU, known without importing torch: ``cpu``, or ``auto`` where torch (if it is
    imported already) sees no CUDA device, or the machine has no GPU device node (torch would find none either)."""
    if device == "cpu":
        return True
    if device != "auto":
        return False
    torch = sys.modules.get("torch")
    if torch is not None:  # imported already: it says
        return not torch.cuda.is_available()
    return sys.platform in ("linux", "darwin") and not any(os.path.exists(p) for p in _GPU_NODES)


@dataclass(frozen=True)
class _Read:
    """What a modes store says of the weights its modes were computed from, whichever path read them (the file or
    the model): the model's name, spec and adapter, its sizes and token layout, the weights' identity, the device
    of the SVD, the adapter's notes, and each query head's key-value head (grouped-query models)."""

    name: str
    spec: Any
    adapter: str
    shape: tuple[int, int, int, int]  # layers, heads, d_head, d_model
    layout: Any
    sha256: str | None
    revision: str | None
    device: str
    notes: list[str]
    kv_heads: list[int] | None = None

    def attrs(self) -> dict[str, Any]:
        n_layers, n_heads, d_head, d_model = self.shape
        layout = self.layout
        return {
            "model_id": self.name,
            "spec": str(self.spec),
            "adapter": self.adapter,
            "d_model": d_model,
            "d_head": d_head,
            "n_layers": n_layers,
            "n_heads": n_heads,
            "n_prefix_tokens": layout.n_prefix,
            "prefix_tokens": list(layout.prefix_kinds),
            "grid": list(layout.grid) if layout.grid else None,
            "weights_sha256": self.sha256,
            "weights_revision": self.revision,
        }


def _modes_of_file(fq: FileQK, t_read: float, started: str, r: ModesRequest) -> xr.Dataset:
    """The modes of weights read from their file, with numpy."""
    name = r.model.name or str(fq.spec)
    log.info("loading %s%s … (W_q, W_k from %s)", name, "" if name == str(fq.spec) else f" ({fq.spec})", fq.path)
    checked, deps = weights_checked(fq.path, fq.sha256, name, r.model.manifest)
    t1 = time.perf_counter()
    w_q, w_k = fold_factors_np(fq.w_q, fq.w_k, fq.gamma, r.folding, centring=fq.norm["centring"])
    u, s, v = _file_modes(w_q, w_k, r.dtype, torch_too=fq.rotary is not None)
    t_svd = time.perf_counter() - t1
    timings = {"load": round(t_read, 4), "svd": round(t_svd, 6)}
    device_rec = {"requested": str(r.model.device), "used": "cpu", "fallback": None}
    record = model_record("modes", _parameters(r), {"key": name, **fq.describe()},
                          {**fq.weights(), "manifest": checked}, (deps, []), device_rec, started,
                          timings_s=timings)  # fmt: skip
    read = _Read(name, fq.spec, fq.adapter, fq.shape, fq.layout, fq.sha256, fq.revision, "cpu", fq.notes,
                 fq.kv_heads)  # fmt: skip
    rotary = _at_offset(name, fq.rotary, None)[0] if fq.rotary is not None else {}  # (the file path: offset 0)
    norm = _norm_attrs(fq.norm if r.folding != "raw" else None, r.folding)
    return _finish(u, s, v, r, read, record, rotary | norm)


def _file_modes(w_q: np.ndarray, w_k: np.ndarray, dtype: str, torch_too: bool) -> tuple[Any, Any, Any]:
    """U, S, V with numpy; with torch's :func:`~qkdissect.core.modes.qk_modes` where reading the file imported
    torch already (a rotary decoder's frequencies): the model path's arithmetic, so both paths' stores are the
    same bit for bit."""
    if not torch_too:
        return qk_modes_np(w_q, w_k, dtype=dtype)
    import torch

    from ..core.modes import qk_modes

    return qk_modes(torch.from_numpy(w_q), torch.from_numpy(w_k), dtype=dtype, device="cpu").numpy()  # type: ignore[arg-type]


def _modes_of_model(r: ModesRequest) -> xr.Dataset:
    """The modes of a model built (or in memory), with torch."""
    import torch

    from ..core.modes import qk_modes
    from ..models.layernorm import folded_factors, norm_record
    from .loop import load, pass_record

    started, t0 = utc_now(), time.perf_counter()
    m = load(r.model)
    t_load = time.perf_counter() - t0
    t1 = time.perf_counter()
    w_q, w_k = folded_factors(m.qk, r.folding)
    extra, turn = _rotary_attrs(m.qk, r.offset)
    extra |= _norm_attrs(norm_record(m.qk) if r.folding != "raw" else None, r.folding)
    if turn is not None and m.qk.rotary is not None:  # R(-d), or the mean rotation of a content core
        w_k = torch.as_tensor(times_keys(turn, w_k.cpu().numpy(), m.qk.rotary.per_head))
    modes = qk_modes(w_q, w_k, dtype=r.dtype, device=m.device)
    if m.device.type == "cuda":
        torch.cuda.synchronize()
    t_svd = time.perf_counter() - t1
    u, s, v = modes.numpy()
    timings = {"load": round(t_load, 4), "svd": round(t_svd, 6)}
    given = {"offset": _as_json(r.offset)} if r.offset is not None else {}
    record = pass_record("modes", {**_parameters(r), **given}, m, [], r.model.device, started, timings_s=timings)
    qk = m.qk
    read = _Read(m.name, m.source.spec, qk.adapter, (qk.n_layers, qk.n_heads, qk.d_head, qk.d_model), qk.layout,
                 m.source.weights_sha256, m.source.revision, str(m.device), qk.notes, qk.kv_heads)  # fmt: skip
    return _finish(u, s, v, r, read, record, extra)


def _norm_attrs(norm: dict[str, Any] | None, folding: Folding) -> dict[str, Any]:
    """What a folded modes store says of the norms it folded (``norm``), and, for an RMS norm's folded-centred
    modes, that they are its folded ones (nothing to centre)."""
    if norm is None:
        return {}
    if folding == "folded-centred" and not norm["centring"]:
        norm = {**norm, "note": f"{norm['module']} has no centring (g x / rms(x)): these folded-centred modes are "
                "the folded ones, diag(g) W_q^T W_k diag(g)"}  # fmt: skip
    return {"norm": norm}


def _is_zero(offset: Offset | None) -> bool:
    if isinstance(offset, str):
        return False
    return offset is None or not np.any(np.asarray(offset, dtype=np.float64))


def _as_json(offset: Offset | np.ndarray) -> Any:
    """An offset as a store records it: a number, or a list of numbers (integers where whole); a mean as given."""
    if isinstance(offset, str):
        return offset
    a = np.asarray(offset, dtype=np.float64)
    vals = [int(v) if float(v).is_integer() else float(v) for v in a.reshape(-1)]
    return vals[0] if a.ndim == 0 else vals


def _rotary_attrs(qk: Any, offset: Offset | None) -> tuple[dict[str, Any], np.ndarray | None]:
    """What a modes store says of a rotary model (the offset of its modes, a number for text, [dy, dx] for an image
    grid, or a content core's mean, and the rotary layout) and of a QK-norm one (the per-pair factor), with the
    matrix that turns W_k from the left for that offset (R(-d), or the mean rotation; None at offset 0); an offset
    for a model without rotary embedding, or of the wrong number of axes, is refused."""
    norm = {"qk_norm": qk.qk_norm} if qk.qk_norm is not None else {}
    if qk.rotary is None:
        if not _is_zero(offset):
            raise QKDissectError(
                f"{qk.model_id} has no rotary position embedding: its query-key interaction is the same at every "
                "offset; leave --offset out"
            )
        return norm, None
    if isinstance(offset, str):
        r, core = content_core(qk.model_id, qk.rotary, qk.rotary.grid or qk.layout.grid, offset)
        notes = {"notes": [*qk.notes, CONTENT_CORE_NOTE]}
        return {"offset": offset, "content_core": core, "rotary": qk.rotary.describe(), **notes, **norm}, r
    at, turn = _at_offset(qk.model_id, qk.rotary, offset)
    return at | norm, turn


def _at_offset(
    name: str, rot: Rotary, offset: float | tuple[float, ...] | None
) -> tuple[dict[str, Any], np.ndarray | None]:
    """What a rotary model's modes store says of the offset of its modes (a number for text, [dy, dx] for an image
    grid; 0 when not given) and of its rotary layout, with R(-d) for that offset (None at offset 0); an offset of
    the wrong number of axes is refused."""
    try:
        d = rot.as_offset(np.zeros(rot.n_axes) if offset is None else offset)
    except ValueError as e:
        raise QKDissectError(f"{name}: {e}") from None
    turn = None if _is_zero(offset) else rot.key_rotation(d)
    return {"offset": _as_json(d), "rotary": rot.describe()}, turn


CONTENT_CORE_NOTE = (
    "content core: these modes are those of the interaction averaged over the offsets of a set of query-key pairs, "
    "sum_d w_d W_q^T R(-d) W_k, not of one offset (attrs.offset is 'mean' or 'mean:N'; attrs.content_core says "
    "over which pairs and with which weights)"
)


def content_core(
    name: str, rot: Rotary, grid: tuple[int, ...] | None, offset: str
) -> tuple[np.ndarray, dict[str, Any]]:
    """The mean key rotation ``sum_d w_d R(-d)`` of ``offset`` ``mean`` (every ordered pair of patches of an image
    model's grid) or ``mean:N`` (the causal pairs of a context of N tokens), (d_head, d_head) or per layer and head,
    and what the store says of it; refused in one line where it does not fit the model."""
    from ..core.offsets import pair_offsets  # (torch: not for the modes job that reads a file)

    try:
        n = mean_context(offset)
    except ValueError as e:
        raise QKDissectError(f"--offset {e}") from None
    if rot.n_axes not in (1, 2):
        raise QKDissectError(f"{name} rotates by a {rot.n_axes}-D position: the mean takes 1 (text) or 2 axes (images)")
    if rot.n_axes == 1 and n is None:
        raise QKDissectError(
            f"{name} is a language model: say over which context to average, --offset mean:N (the causal pairs of "
            "N tokens)"
        )
    if rot.n_axes == 2 and n is not None:
        raise QKDissectError(
            f"{name} is an image model: it averages over every pair of patches of its grid, --offset mean"
        )
    if n is None:
        if grid is None or len(grid) != 2:
            raise QKDissectError(f"{name} has no patch grid to average over: give one offset (--offset DY,DX)")
        h, w = int(grid[0]), int(grid[1])
        offs, weights = pair_offsets(grid=(h, w))
        what: dict[str, Any] = {
            "pairs": f"every ordered pair (query, key) of patches of the {h} x {w} grid, a patch with itself "
            "included; pairs with a prefix token (CLS, registers: not rotated) are not in the average",
            "weights": "w_d = (H - |dy|)(W - |dx|) / (H W)^2, the share of the pairs at offset d = (dy, dx)",
            "grid": [h, w],
        }
    else:
        offs, weights = pair_offsets(context=n)
        what = {
            "pairs": f"the causal pairs of a context of {n} tokens: each query with every key at or before it, "
            "itself included",
            "weights": "w_d = (N - d) / (N (N + 1) / 2), the share of the pairs at offset d = 0..N-1",
            "context": n,
        }
    r = rot.mean_key_rotation(offs, weights)
    a, b = rot.planes()
    cos, sin = r[..., a, a], r[..., b, a]
    return r, {
        "interaction": "sum_d w_d W_q^T R(-d) W_k = W_q^T (sum_d w_d R(-d)) W_k: the interaction averaged over "
        "the offsets d of the pairs below, w_d the share of the pairs at offset d",
        **what,
        "n_offsets": len(offs),
        "mean_rotation": "sum_d w_d R(-d) turns and shrinks each plane: [[c, -s], [s, c]] with c = "
        "plane_scale cos(plane_angle), s = plane_scale sin(plane_angle); dimensions that do not turn keep weight 1",
        "plane_scale": np.hypot(cos, sin).tolist(),
        "plane_angle": np.arctan2(sin, cos).tolist(),
    }


def _parameters(r: ModesRequest) -> dict[str, Any]:
    return {"dtype": r.dtype, "device_requested": r.model.device, "block_rtol": r.block_rtol,
            "weights_processing": r.folding}  # fmt: skip


def _finish(
    u: Any, s: Any, v: Any, r: ModesRequest, read: _Read, record: dict[str, Any], extra: dict[str, Any]
) -> xr.Dataset:
    """The modes store (written to ``r.output`` when given): the modes, their degenerate blocks, and the attrs
    (``extra``: a rotary model's offset and layout, the norms folded)."""
    options = {"dtype": r.dtype, "device": read.device, "block_rtol": r.block_rtol, "folding": r.folding}
    attrs = {**read.attrs(), **options, "notes": read.notes, **extra, "provenance": record}
    angles = query_group_angles(u, read.kv_heads)
    ds = modes_dataset(u, s, v, degenerate_blocks(s, rtol=r.block_rtol), attrs, read.kv_heads, angles)
    return finish(ds, r.output)
