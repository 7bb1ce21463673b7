"""timm's 2-D rotary position embeddings, read off the model's own rope module into a :class:`Rotary`.

timm's ``Eva`` class builds every RoPE vision transformer of timm: EVA-02 (``RotaryEmbeddingCat``: the patch index
rescaled to the pretraining grid, ``ref_feat_shape``), RoPE-ViT axial (``RotaryEmbeddingCat`` on the plain patch
index), Perception Encoder (the same, the index shifted by ``rope_grid_offset``), RoPE-ViT mixed
(``RotaryEmbeddingMixed``: learned frequencies, every head of every layer its own) and DINOv3
(``RotaryEmbeddingDinoV3``: patch centres normalised to [-1, 1] over the grid). Its attention (``EvaAttention``,
``AttentionRope``) rotates q and k of the patch tokens (after the ``num_prefix_tokens`` CLS and register tokens,
which it leaves unrotated) by the module's sin/cos table, in the pairing of its ``rotate_half``.

What is read: the frequencies (``bands``, ``2 pi / periods``, ``freqs``: the module's own buffers), the pairing,
which coordinate channel is which axis (``grid_indexing``), and how the patch index maps to the coordinate (grid
type, reference grid, offset, normalisation). The reading is checked against the module's own sin/cos table for the
model's grid every time; a model whose table it does not reproduce, any other rope module or timm model with a
rotary embedding are refused in one line."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from ...core.rotary import Rotary
from ...errors import UnsupportedModelError

#: rope module class -> the families built with it, each checked against its own attention logits (tests)
VERIFIED = {
    "RotaryEmbeddingDinoV3": "DINOv3",
    "RotaryEmbeddingCat": "EVA-02, RoPE-ViT axial, Perception Encoder",
    "RotaryEmbeddingMixed": "RoPE-ViT mixed",
}
_ATTENTIONS = ("EvaAttention", "AttentionRope")
_AXES = ("y", "x")


def _refuse(what: str) -> UnsupportedModelError:
    families = "; ".join(f"{cls} ({fam})" for cls, fam in VERIFIED.items())
    return UnsupportedModelError(
        f"{what}: qkdissect has not checked this rotary embedding against the model's own attention logits "
        f"(checked: timm Eva models with {families})"
    )


def timm_rotary(model: Any, grid: tuple[int, int] | None, n_prefix: int, d_head: int) -> Rotary | None:
    """The rotary embedding of a timm model, or None when it has none; refused (one line) where unchecked."""
    rope = getattr(model, "rope", None)
    others = [n for n, m in model.named_modules() if "Rotary" in type(m).__name__ and m is not rope]
    if rope is None and not others:
        return None
    cls = type(model).__name__
    if cls != "Eva" or rope is None or others:
        where = others[0] if others else "rope"
        raise _refuse(f"timm {cls} has a rotary position embedding ({where})")
    kind = type(rope).__name__
    if kind not in VERIFIED:
        raise _refuse(f"timm {cls} with rope module {kind}")
    attns = [b.attn for b in model.blocks]
    bad = {type(a).__name__ for a in attns} - set(_ATTENTIONS)
    if bad:
        raise _refuse(f"timm {cls} with attention {', '.join(sorted(bad))}")
    if grid is None:
        raise _refuse(f"timm {cls} without a patch grid")
    halves = {bool(getattr(a, "rotate_half", False)) for a in attns}
    prefixes = {int(a.num_prefix_tokens) for a in attns}
    if len(halves) != 1 or prefixes != {n_prefix}:
        raise _refuse(
            f"timm {cls}: its blocks pair dimensions differently ({sorted(halves)}) or leave {sorted(prefixes)} "
            f"tokens unrotated where it has {n_prefix} prefix tokens"
        )
    pairing = "rotate-half" if halves.pop() else "interleaved"
    reader = {"RotaryEmbeddingCat": _cat, "RotaryEmbeddingDinoV3": _dinov3, "RotaryEmbeddingMixed": _mixed}[kind]
    freq, step, origin, how = reader(rope, grid, len(model.blocks), int(attns[0].num_heads), pairing)
    rotary = Rotary(
        freq, pairing, d_head, d_head, axes=_AXES, step=step, origin=origin, grid=grid,  # type: ignore[arg-type]
        coordinates=how, unrotated_prefix=n_prefix, source=f"timm {kind} ({VERIFIED[kind]})",
    )  # fmt: skip
    _check_table(model, rope, rotary, grid)
    return rotary


def _channel_axes(rope: nn.Module) -> tuple[int, int]:
    """The axis (0: y, row; 1: x, column) of each coordinate channel: 'ij' keeps (row, column), 'xy' swaps."""
    indexing = str(getattr(rope, "grid_indexing", "ij"))
    if indexing not in ("ij", "xy"):
        raise _refuse(f"grid_indexing {indexing!r}")
    return (0, 1) if indexing == "ij" else (1, 0)


def _axial(per_band: np.ndarray, rope: nn.Module) -> np.ndarray:
    """(planes, 2) frequencies of an axial table: channel c's bands, then the next channel's (timm's flatten of
    (channel, band)), each on its own axis."""
    nb = len(per_band)
    f = np.zeros((2 * nb, 2))
    for c, axis in enumerate(_channel_axes(rope)):
        f[c * nb : (c + 1) * nb, axis] = per_band
    return f


def _check_dim(rope: Any, nb: int, pairing: str, layout_half: bool | None) -> None:
    if 4 * nb != int(rope.dim):
        raise _refuse(f"{type(rope).__name__} of {rope.dim} dimensions with {nb} bands per axis")
    if layout_half is not None and layout_half != (pairing == "rotate-half"):
        raise _refuse(f"{type(rope).__name__}'s table and the attention pair dimensions differently")


def _cat(rope: Any, grid: tuple[int, int], _layers: int, _heads: int, pairing: str) -> tuple[Any, ...]:
    """EVA-02 / RoPE-ViT axial / PE: coordinates ``(index + grid_offset) * ref / grid`` (no ``ref_feat_shape``:
    the plain index)."""
    if str(rope.grid_type) != "index":
        raise _refuse(f"RotaryEmbeddingCat on a {rope.grid_type!r} grid")
    bands = rope.bands.detach().double().cpu().numpy()
    _check_dim(rope, len(bands), pairing, bool(rope.rotate_half))
    ref = rope.ref_feat_shape
    step = tuple(float(r) / g for r, g in zip(ref, grid, strict=True)) if ref is not None else (1.0, 1.0)
    off = float(rope.grid_offset)
    origin = tuple(off * s for s in step)
    how = (
        f"patch index{f' + {off:g}' if off else ''}"
        + (f", rescaled to the {ref[0]} x {ref[1]} reference grid (times ref / grid)" if ref is not None else "")
        + f"; channels {rope.grid_indexing}"
    )
    return _axial(bands, rope), step, origin, how


def _dinov3(rope: Any, grid: tuple[int, int], _layers: int, _heads: int, pairing: str) -> tuple[Any, ...]:
    """DINOv3: patch centres normalised to [-1, 1], ``2 (index + 0.5 + grid_offset) / n - 1`` with n the axis' size
    ('separate'), or the grid's smaller or larger side ('min', 'max'); angles ``2 pi c / period``."""
    periods = rope.periods.detach().double().cpu().numpy()
    _check_dim(rope, len(periods), pairing, bool(rope.rotate_half))
    norm = str(rope.normalize_coords)
    denom = {"separate": tuple(float(g) for g in grid), "min": (float(min(grid)),) * 2, "max": (float(max(grid)),) * 2}
    if norm not in denom:
        raise _refuse(f"RotaryEmbeddingDinoV3 normalize_coords {norm!r}")
    off = float(rope.grid_offset)
    step = tuple(2.0 / n for n in denom[norm])
    origin = tuple(2.0 * (0.5 + off) / n - 1.0 for n in denom[norm])
    how = (
        f"patch centres normalised to [-1, 1] over the grid (normalize_coords {norm!r}): 2 (index + 0.5"
        f"{f' + {off:g}' if off else ''}) / n - 1, so a patch step is 2 / n and an offset in patches depends on the "
        f"grid (these are for {grid[0]} x {grid[1]}); channels {rope.grid_indexing}; eval-mode coordinates (no "
        "training-time shift, jitter or rescale)"
    )
    return _axial(2 * math.pi / periods, rope), step, origin, how


def _mixed(rope: Any, grid: tuple[int, int], layers: int, heads: int, pairing: str) -> tuple[Any, ...]:
    """RoPE-ViT mixed: every plane of every head of every layer turns with ``t_x f_x + t_y f_y`` (learned)."""
    freqs = rope.freqs.detach().double().cpu().numpy()  # (2 channels, depth, heads, planes)
    if freqs.shape[1:3] != (layers, heads):
        raise _refuse(f"RotaryEmbeddingMixed for {freqs.shape[1]} layers x {freqs.shape[2]} heads")
    _check_dim_mixed(rope, freqs.shape[3], heads, pairing)
    f = np.zeros((*freqs.shape[1:], 2))
    for c, axis in enumerate(_channel_axes(rope)):
        f[..., axis] = freqs[c]
    how = f"patch index, learned frequencies per layer and head; channels {rope.grid_indexing}"
    return f, (1.0, 1.0), (0.0, 0.0), how


def _check_dim_mixed(rope: Any, planes: int, heads: int, pairing: str) -> None:
    if 2 * planes * heads != int(rope.dim) or pairing != "interleaved":
        raise _refuse(f"RotaryEmbeddingMixed of {rope.dim} dimensions, {planes} planes per head, {pairing}")


@contextmanager
def _eval(module: nn.Module) -> Iterator[None]:
    was = module.training
    module.train(False)
    try:
        yield
    finally:
        module.train(was)


def _check_table(model: Any, rope: Any, rotary: Rotary, grid: tuple[int, int]) -> None:
    """The sin/cos table the model feeds its attention (as ``Eva._pos_embed`` asks it of the module) equals the one
    these frequencies and coordinates give, for every patch of the grid; refused otherwise."""
    with torch.no_grad(), _eval(rope):
        if getattr(model, "dynamic_img_size", False) or getattr(rope, "feat_shape", None) is None:
            table = rope.get_embed(shape=list(grid))
        else:
            table = rope.get_embed()
    table = table.detach().double().cpu().numpy()
    pos = np.stack(np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij"), -1).reshape(-1, 2)
    c = rotary.coordinates_of(pos)  # (N, 2), row-major as the patches
    f = rotary.frequencies
    angle = np.einsum("na,pa->np", c, f) if f.ndim == 2 else np.einsum("na,lhpa->lhnp", c, f)
    layout = np.concatenate([angle, angle], -1) if rotary.pairing == "rotate-half" else np.repeat(angle, 2, -1)
    want = np.concatenate([np.sin(layout), np.cos(layout)], -1)
    tol = max(1e-4, 10 * float(torch.finfo(rope_dtype(rope)).eps))
    if table.shape != want.shape or not np.allclose(table, want, rtol=0, atol=tol):
        worst = float(np.abs(table - want).max()) if table.shape == want.shape else float("nan")
        raise _refuse(
            f"timm {type(rope).__name__}: its sin/cos table (shape {table.shape}) is not the one read off its "
            f"frequencies and grid ({want.shape}, largest difference {worst:.2g})"
        )


def rope_dtype(rope: nn.Module) -> torch.dtype:
    for t in (*rope.parameters(), *rope.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.float32
