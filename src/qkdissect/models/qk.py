"""The per-head query and key weights of a model, in the model's own head split, with the norm that feeds them,
the logit scale and the token layout (prefix tokens, patch grid). Adapters (:mod:`.adapters`) build them."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from ..core.rotary import Rotary
from ..errors import UnsupportedModelError
from .layout import TokenLayout, as_pair, describe_qk

__all__ = [
    "AttentionLayer",
    "QKWeights",
    "TokenLayout",
    "as_pair",
    "head_bias",
    "is_identity",
    "qk_from_weights",
    "split_heads",
]


@dataclass
class AttentionLayer:
    """One layer's query-key weights, per head, in the model's own head split."""

    w_q: torch.Tensor  # (head, d_head, d_model)
    w_k: torch.Tensor  # (head, d_head, d_model)
    b_q: torch.Tensor  # (head, d_head)
    b_k: torch.Tensor  # (head, d_head)
    scale: float  # the model multiplies q . k by this before the softmax
    norm: nn.Module | None  # the module whose output feeds W_q and W_k
    attention: nn.Module
    #: a LayerNorm on q and k (timm qk_norm): its biases (head, d_head), the beta terms of the logit (None: none)
    beta_q: torch.Tensor | None = None
    beta_k: torch.Tensor | None = None


@dataclass
class QKWeights:
    """Query-key weights of every layer of one model."""

    model_id: str
    adapter: str
    layers: list[AttentionLayer]
    layout: TokenLayout
    notes: list[str] = field(default_factory=list)
    model: nn.Module | None = None  # the module holding the layers, which the passes run (a CLIP image tower)
    #: grouped-query / multi-query attention: the key-value head of each query head (the model's own mapping);
    #: ``w_k``, ``b_k`` hold each query head's key head already. None: one key head per query head
    kv_heads: list[int] | None = None
    #: rotary position embedding applied to q and k after their projections (None: none)
    rotary: Rotary | None = None
    #: QK-norm (gains folded into ``w_q``, ``w_k``): what the store records of the per-pair factor (None: none)
    qk_norm: dict[str, Any] | None = None

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_heads(self) -> int:
        return int(self.layers[0].w_q.shape[0])

    @property
    def d_head(self) -> int:
        return int(self.layers[0].w_q.shape[1])

    @property
    def d_model(self) -> int:
        return int(self.layers[0].w_q.shape[2])

    def stacked(self, name: str) -> torch.Tensor:
        """``w_q``/``w_k`` as (layer, head, d_head, d_model), ``b_q``/``b_k`` as (layer, head, d_head)."""
        return torch.stack([getattr(layer, name) for layer in self.layers])

    @property
    def w_q(self) -> torch.Tensor:
        return self.stacked("w_q")

    @property
    def w_k(self) -> torch.Tensor:
        return self.stacked("w_k")

    @property
    def b_q(self) -> torch.Tensor:
        return self.stacked("b_q")

    @property
    def b_k(self) -> torch.Tensor:
        return self.stacked("b_k")

    def require_plain_logits(self, what: str) -> None:
        """Refuse (one line) a pass that computes the logits as (W_q x_i + b_q) . (W_k x_j + b_k) * scale, which
        leaves out a rotation of q and k by position or a norm on them."""
        why = (
            "rotates q and k by position (RoPE)"
            if self.rotary is not None
            else "normalises q and k (QK-norm)"
            if self.qk_norm is not None
            else None
        )
        if why is not None:
            raise UnsupportedModelError(
                f"{self.model_id} {why}: {what} computes attention from (W_q x + b_q) . (W_k x + b_k), which leaves "
                "that out; not supported for this model yet"
            )

    def describe(self) -> dict[str, Any]:
        shape = (self.n_layers, self.n_heads, self.d_head, self.d_model)
        out = describe_qk(self.model_id, self.adapter, shape, self.layout, self.notes)
        if self.kv_heads is not None:
            out["kv_heads"] = list(self.kv_heads)
        if self.rotary is not None:
            out["rotary"] = self.rotary.describe()
        if self.qk_norm is not None:
            out["qk_norm"] = self.qk_norm
        return out


def split_heads(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(heads * d_head, d_model) -> (head, d_head, d_model): head h = rows h*d_head:(h+1)*d_head."""
    out, d = w.shape
    if out % n_heads:
        raise UnsupportedModelError(f"projection with {out} outputs cannot be split into {n_heads} heads")
    return w.detach().reshape(n_heads, out // n_heads, d).clone()


def head_bias(b: torch.Tensor | None, n_heads: int, d_head: int, like: torch.Tensor) -> torch.Tensor:
    if b is None:
        return torch.zeros(n_heads, d_head, dtype=like.dtype)
    return b.detach().reshape(n_heads, d_head).clone()


def is_identity(m: nn.Module | None) -> bool:
    return m is None or isinstance(m, nn.Identity)


def qk_from_weights(qk: QKWeights, layer: int, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """W_q x + b_q and W_k x + b_k of one layer, per head, float64: (batch, token, d) -> two (b, h, t, d_head)."""
    a = qk.layers[layer]
    x = x.double()
    q = torch.einsum("hed,btd->bhte", a.w_q.to(x), x) + a.b_q.to(x)[None, :, None, :]
    k = torch.einsum("hed,btd->bhte", a.w_k.to(x), x) + a.b_k.to(x)[None, :, None, :]
    return q, k
