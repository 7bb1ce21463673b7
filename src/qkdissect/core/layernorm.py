"""LayerNorm-aware query-key interaction (beyond the paper).

The attention sees ``LN(x) = gamma * (x - mean(x)) / sqrt(var(x) + eps) + beta``, not ``x``. Writing
``x_hat = P x / sigma(x)`` with the centring projector ``P = I - 1 1^T / d``, the logit of tokens i, j is

    (W_q (gamma * x_hat_i) + b_q')^T (W_k (gamma * x_hat_j) + b_k'),   b_q' = b_q + W_q beta,  b_k' = b_k + W_k beta

so the token-token interaction on the normalised residual stream is ``diag(gamma) W_q^T W_k diag(gamma)``
("folded"), and on the raw residual direction, centring included, ``P diag(gamma) W_q^T W_k diag(gamma) P``
("folded-centred"). Both are products of two (d_head, d_model) factors, so their modes come from the same
batched SVD as the raw ones: :func:`fold_factors` gives the factors, :func:`fold_biases` the biases that absorb
beta. :func:`normalise` is the LayerNorm without its affine part. (Reading gamma and beta off a model:
:func:`qkdissect.models.layernorm.norm_parameters`.)

An RMS norm (Llama, SmolLM2, Qwen, Gemma: ``RMSNorm(x) = g * x / rms(x)``, ``rms(x) = sqrt(mean(x^2) + eps)``) has
gains and neither centring nor beta: its folded interaction is ``diag(g) W_q^T W_k diag(g)``, and since
``x_hat = x / rms(x)`` has no projector, that is also the interaction on the raw residual direction:
with ``centring=False`` "folded-centred" is "folded".
"""

from __future__ import annotations

import torch

from ..options import FOLDINGS, Folding


def fold_factors(
    w_q: torch.Tensor, w_k: torch.Tensor, gamma: torch.Tensor, folding: Folding = "folded", centring: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer, head, d_head, d_model) factors whose product ``A^T B`` is the folded interaction, from the raw
    factors and gamma (layer, d_model); float64. ``centring``: whether the norm centres (a LayerNorm; an RMS norm
    does not, and its "folded-centred" factors are its "folded" ones)."""
    w_q, w_k = w_q.to(torch.float64), w_k.to(torch.float64)
    if folding == "raw":
        return w_q, w_k
    if folding not in FOLDINGS:
        raise ValueError(f"folding must be one of {FOLDINGS}, got {folding!r}")
    g = gamma.to(torch.float64)[:, None, None, :]  # W diag(gamma): scale the columns
    a, b = w_q * g, w_k * g
    if folding == "folded-centred" and centring:  # (W diag(gamma)) P: subtract each row's mean
        a = a - a.mean(dim=-1, keepdim=True)
        b = b - b.mean(dim=-1, keepdim=True)
    return a, b


def fold_biases(
    w_q: torch.Tensor, w_k: torch.Tensor, b_q: torch.Tensor, b_k: torch.Tensor, beta: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer, head, d_head) biases with beta (layer, d_model) absorbed: ``b_q + W_q beta``, ``b_k + W_k beta``."""
    w_q, w_k, beta = w_q.to(torch.float64), w_k.to(torch.float64), beta.to(torch.float64)
    bq = b_q.to(torch.float64) + torch.einsum("lhed,ld->lhe", w_q, beta)
    bk = b_k.to(torch.float64) + torch.einsum("lhed,ld->lhe", w_k, beta)
    return bq, bk


def normalise(x: torch.Tensor, eps: float, centring: bool = True) -> torch.Tensor:
    """LayerNorm without gamma and beta: ``(x - mean) / sqrt(var + eps)`` over the last dim (biased var); with
    ``centring=False`` the RMS norm without its gains, ``x / sqrt(mean(x^2) + eps)``."""
    x = x.to(torch.float64)
    c = x - x.mean(dim=-1, keepdim=True) if centring else x
    return c / torch.sqrt(c.pow(2).mean(dim=-1, keepdim=True) + eps)
