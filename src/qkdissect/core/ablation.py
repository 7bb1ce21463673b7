"""The math of a mode ablation: a mode's term of the attention logits, and what removing it changes.

Head h's unscaled logit of query token i and key token j is ``(W_q x_i + b_q) . (W_k x_j + b_k)``; its token-token
part ``x_i^T W_q^T W_k x_j = sum_n (x_i . u_n) s_n (v_n . x_j)``. Ablating a set of modes subtracts their terms
(zero-ablation) or replaces them by their mean over an image set (mean-ablation); the bias terms stay. The model
multiplies the logit by its scale before the softmax, so the additive attention bias is ``-scale * term``.

Everything here is batched tensors: no loop over images, heads or modes.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

#: what each metric of an ablation measures (the keys of :func:`attention_change` and :func:`output_change`)
METRICS = {
    "attention_kl": "KL(p || p') of each query token's attention distribution over keys in the ablated head (p: "
    "the model's, p': with the mode ablated), in nats, mean over query tokens (prefix tokens included)",
    "attention_moved": "share of attention moved: total variation 1/2 sum_j |p_ij - p'_ij| of each query token's "
    "attention in the ablated head, mean over query tokens",
    "output_kl": "KL(P || P') of the class distribution (softmax of the classifier's logits), in nats",
    "top1_flipped": "1 where the top-1 class changes, else 0 (mean: the share of images whose top-1 class flips)",
    "embedding_distance": "1 - cos(e, e') of the model's pooled output embedding (the final CLS token, or the pool "
    "the model uses) before and after the ablation",
}


def mode_projections(
    x: torch.Tensor, u: torch.Tensor, s: torch.Tensor, v: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokens projected onto the modes of several ablations at once: ``(x . u_n) s_n`` and ``x . v_n``.

    ``x``: tokens (batch, token, d); ``u``, ``v``: (ablation, d, k), ``s``: (ablation, k), the k modes of each
    ablation (a padding mode has s = 0) -> two (batch, ablation, token, k); the summed term of an ablation,
    ``sum_n (x_i . u_n) s_n (v_n . x_j)``, is the first times the second transposed."""
    q = torch.einsum("btd,adk->batk", x, u) * s[None, :, None, :]
    return q, torch.einsum("btd,adk->batk", x, v)


def attention_change(logits: torch.Tensor, bias: torch.Tensor) -> dict[str, torch.Tensor]:
    """``logits``: pre-softmax logits (..., query, key) of the heads, ``bias``: what the ablation adds to them ->
    ``attention_kl`` and ``attention_moved`` (...), means over query tokens (:data:`METRICS`)."""
    logp = F.log_softmax(logits, dim=-1)
    logq = F.log_softmax(logits + bias, dim=-1)
    p = logp.exp()
    kl = (p * (logp - logq)).sum(-1).clamp_min(0)  # >= 0 but for rounding (an ablated mode of s ~ 0)
    moved = 0.5 * (p - logq.exp()).abs().sum(-1)
    return {"attention_kl": kl.mean(-1), "attention_moved": moved.mean(-1)}


@dataclass
class Outputs:
    """A model's outputs for a batch: its class logits (None: not a classifier) and its pooled embedding."""

    logits: torch.Tensor | None
    embedding: torch.Tensor

    def __getitem__(self, index: torch.Tensor) -> Outputs:
        return Outputs(None if self.logits is None else self.logits[index], self.embedding[index])


def output_change(before: Outputs, after: Outputs) -> dict[str, torch.Tensor]:
    """Per row (rows of ``before`` and ``after`` paired): ``output_kl`` and ``top1_flipped`` (classifiers) and
    ``embedding_distance`` = 1 - cos, computed as |a/|a| - b/|b||^2 / 2 (no cancellation for tiny changes)."""
    out: dict[str, torch.Tensor] = {}
    if before.logits is not None and after.logits is not None:
        logp = F.log_softmax(before.logits.double(), dim=-1)
        logq = F.log_softmax(after.logits.double(), dim=-1)
        out["output_kl"] = (logp.exp() * (logp - logq)).sum(-1).clamp_min(0)
        out["top1_flipped"] = (before.logits.argmax(-1) != after.logits.argmax(-1)).double()
    a = F.normalize(before.embedding.double().flatten(1), dim=-1)
    b = F.normalize(after.embedding.double().flatten(1), dim=-1)
    out["embedding_distance"] = 0.5 * (a - b).square().sum(-1)
    return out
