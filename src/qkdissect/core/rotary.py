"""Rotary position embeddings (RoPE) as matrices: the query-key interaction of two tokens at a relative offset.

A RoPE model rotates each head's query and key, after their projections, by an angle proportional to the token's
position, plane by plane: the plane p of a head (two of its d_head dimensions) turns by ``pos * f_p`` radians.
With R(t) the rotation of position t, ``q_i' . k_j' = q_i^T R(i)^T R(j) k_j = q_i^T R(j - i) k_j``: the logit of a
query at position i and a key at position j is

    a_ij = x_i^T W_q^T R(j - i) W_k x_j

so the interaction depends on the offset, not on the positions. We name the **offset** ``d = i - j``, the query's
position minus the key's (a token attending to the one d tokens before it: d > 0). The interaction at offset d is
``W_q^T R(-d) W_k``: :func:`key_rotation` gives R(-d), which multiplies W_k from the left; at d = 0 it is the
identity, and the interaction the paper's W_q^T W_k.

Two layouts pair the dimensions into planes: ``rotate-half`` (Llama, Qwen, Mistral, GPT-NeoX in transformers:
dimension p turns with p + r/2) and ``interleaved`` (GPT-J, the original RoFormer, llama2.c: 2p with 2p + 1). With
partial rotary (GPT-NeoX, Phi) only the first ``rotary_dim`` dimensions of a head turn; the others pass unchanged.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

Pairing = Literal["rotate-half", "interleaved"]


@dataclass(frozen=True)
class Rotary:
    """One model's rotary embedding along one axis (language): the frequency of each plane (radians per position,
    the model's own ``inv_freq``), how planes pair dimensions, and how many of a head's dimensions turn."""

    inv_freq: np.ndarray  # (rotary_dim // 2,)
    pairing: Pairing
    rotary_dim: int
    d_head: int

    def __post_init__(self) -> None:
        if self.rotary_dim % 2 or not 0 < self.rotary_dim <= self.d_head:
            raise ValueError(f"rotary_dim {self.rotary_dim} must be even and in 2..d_head ({self.d_head})")
        if len(self.inv_freq) != self.rotary_dim // 2:
            raise ValueError(f"{len(self.inv_freq)} frequencies for {self.rotary_dim} rotated dimensions")

    def planes(self) -> tuple[np.ndarray, np.ndarray]:
        """The two dimensions (a, b) of each plane, in the order of ``inv_freq``."""
        half = self.rotary_dim // 2
        p = np.arange(half)
        return (p, p + half) if self.pairing == "rotate-half" else (2 * p, 2 * p + 1)

    def rotation(self, positions: np.ndarray | float) -> np.ndarray:
        """R(t) for each ``t`` (shape (..., d_head, d_head), float64): the rotation RoPE applies to a query or key
        at position t (t may be any real number: an offset, a position)."""
        t = np.asarray(positions, dtype=np.float64)
        angle = t[..., None] * np.asarray(self.inv_freq, dtype=np.float64)  # (..., planes)
        cos, sin = np.cos(angle), np.sin(angle)
        r = np.broadcast_to(np.eye(self.d_head), (*t.shape, self.d_head, self.d_head)).copy()
        a, b = self.planes()
        r[..., a, a], r[..., a, b], r[..., b, a], r[..., b, b] = cos, -sin, sin, cos
        return r

    def key_rotation(self, offset: np.ndarray | float) -> np.ndarray:
        """R(-d): the interaction at offset d (query position minus key position) is W_q^T R(-d) W_k."""
        return self.rotation(-np.asarray(offset, dtype=np.float64))

    def describe(self) -> dict[str, Any]:
        """What a store records of it: pairing, rotated dimensions, the frequencies and the offset convention."""
        return {
            "pairing": self.pairing,
            "rotary_dim": self.rotary_dim,
            "d_head": self.d_head,
            "axes": 1,
            "inv_freq": [float(f) for f in self.inv_freq],
            "offset": "query position minus key position, in tokens; the interaction at offset d is W_q^T R(-d) W_k",
        }


def rotated_keys(w_k: np.ndarray, rotary: Rotary, offset: float) -> np.ndarray:
    """``R(-d) W_k`` for every leading index of ``w_k`` (..., d_head, d_model): the key factor whose product with
    W_q is the interaction at offset ``d``. One matrix product for all layers and heads."""
    r = rotary.key_rotation(offset)
    return np.einsum("ij,...jd->...id", r, np.asarray(w_k, dtype=np.float64))
