"""Rotary position embeddings (RoPE) as matrices: the query-key interaction of two tokens at a relative offset.

A RoPE model rotates each head's query and key, after their projections, by angles set by the token's position,
plane by plane: the plane p of a head (two of its d_head dimensions) turns by ``c . f_p`` radians, where ``c`` is
the token's coordinate vector and ``f_p`` the plane's frequency vector (one number per axis). A language model has
one axis (the token index); a vision transformer two, the patch's row and column (``y``, ``x``), and 2-D RoPE
turns some planes with the row, some with the column (axial: EVA-02, DINOv3, RoPE-ViT) or every plane with a mix of
both, per head and per layer (RoPE-ViT "mixed", learned frequencies).

The coordinates are linear in the position: ``c = origin + step * p`` per axis, with ``p`` the position in tokens
or patches. ``step`` is 1 for the token index and the plain patch index; EVA-02 rescales the patch index to its
pretraining grid (``step = ref / grid``) and DINOv3 normalises coordinates to [-1, 1] over the grid
(``step = 2 / grid``), so for them an offset in patches is a coordinate offset that depends on the grid.

With R(c) the rotation of coordinate c, ``q_i' . k_j' = q_i^T R(c_i)^T R(c_j) k_j = q_i^T R(c_j - c_i) k_j``
(the planes commute): the logit of a query at position i and a key at position j is

    a_ij = x_i^T W_q^T R(step * (j - i)) W_k x_j

so the interaction depends on the offset, not on the positions (nor on the origin). We name the **offset**
``d = i - j``, the query's position minus the key's (text: a token attending to the one d tokens before it,
d > 0; images: (dy, dx) in patches, the query dy rows below and dx columns right of the key). The interaction at
offset d is ``W_q^T R(-d) W_k``: :func:`Rotary.key_rotation` gives R(-d), which multiplies W_k from the left; at
d = 0 it is the identity, and the interaction the paper's W_q^T W_k.

A token the model does not rotate (a vision transformer's CLS and register tokens) behaves exactly as a token at
the position whose coordinate is 0, :attr:`Rotary.unrotated_position` (``-origin / step``): its logit with any
other token is the interaction at the offset between those positions.

Two layouts pair the dimensions into planes: ``rotate-half`` (Llama, Qwen, Mistral, GPT-NeoX in transformers,
DINOv3: dimension p turns with p + r/2) and ``interleaved`` (GPT-J, the original RoFormer, llama2.c, EVA-02,
RoPE-ViT: 2p with 2p + 1). With partial rotary (GPT-NeoX, Phi) only the first ``rotary_dim`` dimensions of a head
turn; the others pass unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Pairing = Literal["rotate-half", "interleaved"]
#: an offset as the API takes it: a number (one axis) or one number per axis
OffsetLike = float | Sequence[float] | np.ndarray


@dataclass(frozen=True)
class Rotary:
    """One model's rotary embedding: the frequencies of its planes (radians per unit of coordinate, the model's own),
    how planes pair dimensions, how many of a head's dimensions turn, and how positions map to coordinates.

    ``inv_freq`` is (planes,) for one axis (a language model), (planes, axes) for several (an axial or mixed image
    RoPE shared by every head and layer), or (layer, head, planes, axes) where every head of every layer has its
    own (RoPE-ViT mixed), or (layer, 1, planes, axes) where every layer has its own, shared by its heads (Gemma 3's
    local and global layers). ``step`` and ``origin`` (per axis; default 1 and 0) map a position p to the coordinate
    ``origin + step * p`` the frequencies multiply; ``grid`` is the patch grid they were read for (its coordinates
    may depend on it, DINOv3), ``coordinates`` says how, and ``unrotated_prefix`` counts the leading tokens the model
    does not rotate."""

    inv_freq: np.ndarray
    pairing: Pairing
    rotary_dim: int
    d_head: int
    axes: tuple[str, ...] = ("position",)
    step: tuple[float, ...] | None = None
    origin: tuple[float, ...] | None = None
    grid: tuple[int, ...] | None = None
    coordinates: str | None = None
    unrotated_prefix: int = 0
    source: str | None = None

    def __post_init__(self) -> None:
        if self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.d_head:
            raise ValueError(f"rotary_dim {self.rotary_dim} must be even and in 2..d_head ({self.d_head})")
        f = np.asarray(self.inv_freq)
        n = len(self.axes)
        if f.ndim == 1 and n != 1:
            raise ValueError(f"one frequency per plane for {n} axes: give (planes, {n}) frequencies")
        if f.ndim > 1 and (f.ndim not in (2, 4) or f.shape[-1] != n):
            raise ValueError(f"frequencies of shape {f.shape}: want (planes, {n}) or (layer, head, planes, {n})")
        planes = f.shape[0] if f.ndim == 1 else f.shape[-2]
        if planes != self.rotary_dim // 2:
            raise ValueError(f"{planes} frequencies for {self.rotary_dim} rotated dimensions")
        for name in ("step", "origin"):
            v = getattr(self, name)
            if v is not None and len(v) != n:
                raise ValueError(f"{name} {v} must give one number per axis ({n}: {', '.join(self.axes)})")

    @property
    def n_axes(self) -> int:
        return len(self.axes)

    @property
    def per_head(self) -> bool:
        """Every layer (and head) has its own frequencies: rotations are (layer, head, d_head, d_head), head 1 where
        a layer's heads share them."""
        return np.asarray(self.inv_freq).ndim == 4

    @property
    def per_layer_only(self) -> bool:
        """Frequencies per layer, shared by the layer's heads: (layer, 1, planes, axes)."""
        return self.per_head and np.asarray(self.inv_freq).shape[1] == 1

    @property
    def frequencies(self) -> np.ndarray:
        """(planes, axes), or (layer, head, planes, axes): radians per unit of coordinate, float64."""
        f = np.asarray(self.inv_freq, dtype=np.float64)
        return f[:, None] if f.ndim == 1 else f

    @property
    def coordinate_step(self) -> np.ndarray:
        return np.ones(self.n_axes) if self.step is None else np.asarray(self.step, dtype=np.float64)

    @property
    def coordinate_origin(self) -> np.ndarray:
        return np.zeros(self.n_axes) if self.origin is None else np.asarray(self.origin, dtype=np.float64)

    @property
    def unrotated_position(self) -> np.ndarray:
        """The position (per axis) whose coordinate is 0, where the rotation is the identity: a token the model does
        not rotate (CLS, registers) interacts with every other token as a token at this position would."""
        return -self.coordinate_origin / self.coordinate_step

    def planes(self) -> tuple[np.ndarray, np.ndarray]:
        """The two dimensions (a, b) of each plane, in the order of ``inv_freq``."""
        half = self.rotary_dim // 2
        p = np.arange(half)
        return (p, p + half) if self.pairing == "rotate-half" else (2 * p, 2 * p + 1)

    def as_offset(self, offset: OffsetLike) -> np.ndarray:
        """An offset (or position) as an array: shape () for one axis, (axes,) for several; a ValueError of one line
        when it has not one number per axis."""
        d = np.asarray(offset, dtype=np.float64)
        if self.n_axes == 1 and d.shape in ((), (1,)):
            return d.reshape(())
        if d.shape != (self.n_axes,):
            raise ValueError(
                f"the rotary embedding has {self.n_axes} axes ({', '.join(self.axes)}): give the offset as "
                f"{self.n_axes} numbers ({', '.join('d' + a for a in self.axes)}), not {np.asarray(offset).tolist()}"
            )
        return d

    def _vectors(self, positions: np.ndarray | float | Sequence[float]) -> np.ndarray:
        """Positions as (..., axes): one axis takes any shape (...), several a last axis of their size."""
        p = np.asarray(positions, dtype=np.float64)
        if self.n_axes == 1:
            return p[..., None]
        if p.ndim == 0 or p.shape[-1] != self.n_axes:
            raise ValueError(f"positions of shape {p.shape}: the last axis must be the {self.n_axes} axes")
        return p

    def angles_at(self, coordinates: np.ndarray) -> np.ndarray:
        """The angle (radians) each plane turns by at coordinate vectors ``c`` (..., axes): (..., planes), or
        (..., layer, head, planes) with per-head frequencies."""
        c = np.asarray(coordinates, dtype=np.float64)
        f = self.frequencies
        return np.einsum("...a,pa->...p", c, f) if f.ndim == 2 else np.einsum("...a,lhpa->...lhp", c, f)

    def plane_matrix(self, cos: np.ndarray, sin: np.ndarray, rest: float = 1.0) -> np.ndarray:
        """The (..., d_head, d_head) matrix with ``[[cos, -sin], [sin, cos]]`` in each plane (``cos``, ``sin``:
        (..., planes)) and ``rest`` times the identity on the dimensions that do not turn."""
        r = np.broadcast_to(rest * np.eye(self.d_head), (*np.shape(cos)[:-1], self.d_head, self.d_head)).copy()
        a, b = self.planes()
        r[..., a, a], r[..., a, b], r[..., b, a], r[..., b, b] = cos, -sin, sin, cos
        return r

    def rotation_at(self, coordinates: np.ndarray) -> np.ndarray:
        """R(c) for coordinate vectors ``c`` (..., axes): (..., d_head, d_head), or (..., layer, head, d_head,
        d_head) with per-head frequencies."""
        angle = self.angles_at(coordinates)
        return self.plane_matrix(np.cos(angle), np.sin(angle))

    def coordinates_of(self, positions: np.ndarray | float | Sequence[float]) -> np.ndarray:
        """The coordinate vectors (..., axes) the model gives tokens at ``positions``."""
        return self.coordinate_origin + self.coordinate_step * self._vectors(positions)

    def rotation(self, positions: np.ndarray | float | Sequence[float]) -> np.ndarray:
        """R(c(t)) for each position ``t`` (one axis: any shape (...); several: (..., axes)): the rotation RoPE
        applies to a query or key there, (..., d_head, d_head) float64 (per-head frequencies: (..., layer, head,
        d_head, d_head)). Positions may be any real numbers."""
        return self.rotation_at(self.coordinates_of(positions))

    def key_rotation(self, offset: np.ndarray | float | Sequence[float]) -> np.ndarray:
        """R(-d): the interaction at offset d (query position minus key position) is W_q^T R(-d) W_k."""
        return self.rotation_at(-self.coordinate_step * self._vectors(offset))

    def key_angles(self, offset: np.ndarray | float | Sequence[float]) -> np.ndarray:
        """The angle each plane of R(-d) turns by, for offsets d (one axis: any shape (...); several: (...,
        axes)): (..., planes), or (..., layer, head, planes) with per-head frequencies."""
        return self.angles_at(-self.coordinate_step * self._vectors(offset))

    def mean_key_rotation(self, offsets: np.ndarray, weights: np.ndarray, chunk: int = 1024) -> np.ndarray:
        """``sum_d w_d R(-d)`` over ``offsets`` (one axis: (n,); several: (n, axes)) with ``weights`` (n,) normalised
        to sum 1: per plane a scaled rotation ``[[c, -s], [s, c]]`` with ``c = sum_d w_d cos(angle_d)``, ``s`` alike,
        the identity on the dimensions that do not turn. (d_head, d_head), or (layer, head, d_head, d_head) with
        per-head frequencies. Offsets are taken ``chunk`` at a time (memory)."""
        d = self._vectors(offsets).reshape(-1, self.n_axes)
        w = np.asarray(weights, dtype=np.float64).reshape(-1)
        if len(w) != len(d) or not np.all(w >= 0) or w.sum() <= 0:
            raise ValueError(f"{len(w)} non-negative weights (not all 0) for {len(d)} offsets")
        w = w / w.sum()
        cos = sin = np.zeros(())
        for start in range(0, len(w), chunk):
            angle = self.angles_at(-self.coordinate_step * d[start : start + chunk])  # (c, ..., planes)
            cos = cos + np.tensordot(w[start : start + chunk], np.cos(angle), axes=1)
            sin = sin + np.tensordot(w[start : start + chunk], np.sin(angle), axes=1)
        return self.plane_matrix(cos, sin)

    def describe(self) -> dict[str, Any]:
        """What a store records of it: pairing, rotated dimensions, axes, the frequencies, how positions map to
        coordinates and the offset convention."""
        out: dict[str, Any] = {
            "pairing": self.pairing,
            "rotary_dim": self.rotary_dim,
            "d_head": self.d_head,
            "axes": list(self.axes),
            "inv_freq": np.asarray(self.inv_freq, dtype=np.float64).tolist(),
        }
        if self.per_layer_only:
            out["frequencies"] = "radians per unit of coordinate, (layer, 1, plane, axis): every layer has its own"
        elif self.per_head:
            out["frequencies"] = (
                "radians per unit of coordinate, (layer, head, plane, axis): every head of every layer has its own"
            )
        if self.source:
            out["source"] = self.source
        if self.n_axes == 1 and self.step is None and self.origin is None:
            out["offset"] = (
                "query position minus key position, in tokens; the interaction at offset d is W_q^T R(-d) W_k"
            )
            return out
        out.setdefault("frequencies", "radians per unit of coordinate, (plane, axis)")
        out["coordinate_step"] = self.coordinate_step.tolist()
        out["coordinate_origin"] = self.coordinate_origin.tolist()
        out["unrotated_position"] = self.unrotated_position.tolist()
        out["unrotated_prefix_tokens"] = self.unrotated_prefix
        out["grid"] = list(self.grid) if self.grid is not None else None
        if self.coordinates:
            out["coordinates"] = self.coordinates
        unit = "patches" if self.grid is not None else "positions"
        out["offset"] = (
            f"query position minus key position, in {unit} ({', '.join('d' + a for a in self.axes)}); a token at "
            "position p has the coordinate origin + step * p; the interaction at offset d is W_q^T R(-step * d) W_k, "
            "where R(c) turns plane n by c . f_n; tokens the model does not rotate sit at unrotated_position"
        )
        return out


def rotated_keys(w_k: np.ndarray, rotary: Rotary, offset: OffsetLike) -> np.ndarray:
    """``R(-d) W_k`` for every leading index of ``w_k`` (..., d_head, d_model): the key factor whose product with
    W_q is the interaction at offset ``d``. One matrix product for all layers and heads; with per-head frequencies
    ``w_k`` is (layer, head, d_head, d_model), each head turned by its own rotation."""
    return times_keys(rotary.key_rotation(rotary.as_offset(offset)), w_k, rotary.per_head)


def times_keys(r: np.ndarray, w_k: np.ndarray, per_head: bool) -> np.ndarray:
    """``r @ w_k`` for every leading index of ``w_k`` (..., d_head, d_model): ``r`` is one (d_head, d_head) matrix,
    or (layer, head, d_head, d_head) when ``per_head`` (then ``w_k`` is (layer, head, d_head, d_model))."""
    w = np.asarray(w_k, dtype=np.float64)
    if per_head:
        _check_heads(r, w)
        if r.shape[1] > 1:
            return r @ w  # (layer, head, d_head, d_head) @ (layer, head, d_head, d_model)
        n_layers, n_heads, d_head, d_model = w.shape  # one rotation per layer: a product per layer for all heads
        flat = r[:, 0] @ w.transpose(0, 2, 1, 3).reshape(n_layers, d_head, n_heads * d_model)
        return flat.reshape(n_layers, d_head, n_heads, d_model).transpose(0, 2, 1, 3)
    return np.einsum("ij,...jd->...id", r, w)


def rotated_bias(b: np.ndarray, rotary: Rotary, offset: OffsetLike) -> np.ndarray:
    """``R(-d) b`` for biases (..., d_head) (per-head frequencies: (layer, head, d_head))."""
    r = rotary.key_rotation(rotary.as_offset(offset))
    v = np.asarray(b, dtype=np.float64)
    if rotary.per_head:
        _check_heads(r, v[..., None])
        return (r @ v[..., None])[..., 0]
    return np.einsum("ij,...j->...i", r, v)


def _check_heads(r: np.ndarray, w: np.ndarray) -> None:
    """Per-head (or per-layer) rotations (layer, head or 1, ...) fit weights (layer, head, ...)."""
    if r.shape[0] != w.shape[0] or r.shape[1] not in (1, w.shape[1]):
        raise ValueError(f"per-head rotations for {r.shape[:2]} (layer, head), keys of {w.shape[:2]}")
