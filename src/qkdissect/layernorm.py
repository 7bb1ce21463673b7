"""LayerNorm-aware query-key interaction (beyond the paper).

The attention sees ``LN(x) = gamma * (x - mean(x)) / sqrt(var(x) + eps) + beta``, not ``x``. Writing
``x_hat = P x / sigma(x)`` with the centring projector ``P = I - 1 1^T / d``, the logit of tokens i, j is

    (W_q (gamma * x_hat_i) + b_q')^T (W_k (gamma * x_hat_j) + b_k'),   b_q' = b_q + W_q beta,  b_k' = b_k + W_k beta

so the token-token interaction on the normalised residual stream is ``diag(gamma) W_q^T W_k diag(gamma)``
("folded"), and on the raw residual direction, centring included, ``P diag(gamma) W_q^T W_k diag(gamma) P``
("folded-centred"). Both are products of two (d_head, d_model) factors, so their modes come from the same
batched SVD as the raw ones: :func:`folded_factors` gives the factors, :func:`folded_biases` the biases that
absorb beta. :func:`normalise` is the LayerNorm without its affine part.
"""

from __future__ import annotations

from typing import Literal

import torch

from .models import QKWeights

Folding = Literal["raw", "folded", "folded-centred"]
FOLDINGS: tuple[str, ...] = ("raw", "folded", "folded-centred")


class NotLayerNormError(ValueError):
    pass


def norm_parameters(qk: QKWeights) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """gamma (layer, d), beta (layer, d) and eps per layer of the LayerNorms feeding W_q and W_k."""
    gammas, betas, eps = [], [], []
    for i, layer in enumerate(qk.layers):
        norm = layer.norm
        if not isinstance(norm, torch.nn.LayerNorm):
            raise NotLayerNormError(
                f"{qk.model_id} layer {i}: the module feeding W_q/W_k is {type(norm).__name__}, not a LayerNorm; "
                "LayerNorm folding needs one (RMSNorm has no centring: use the raw modes)"
            )
        d = qk.d_model
        w = norm.weight if norm.weight is not None else torch.ones(d)
        b = norm.bias if norm.bias is not None else torch.zeros(d)
        gammas.append(w.detach().to(torch.float64).cpu())
        betas.append(b.detach().to(torch.float64).cpu())
        eps.append(float(norm.eps))
    return torch.stack(gammas), torch.stack(betas), eps


def folded_factors(qk: QKWeights, folding: Folding = "folded") -> tuple[torch.Tensor, torch.Tensor]:
    """(layer, head, d_head, d_model) factors whose product ``A^T B`` is the folded interaction."""
    w_q, w_k = qk.w_q.to(torch.float64), qk.w_k.to(torch.float64)
    if folding == "raw":
        return w_q, w_k
    if folding not in FOLDINGS:
        raise ValueError(f"folding must be one of {FOLDINGS}, got {folding!r}")
    gamma, _, _ = norm_parameters(qk)
    g = gamma[:, None, None, :]  # W diag(gamma): scale the columns
    a, b = w_q * g, w_k * g
    if folding == "folded-centred":  # (W diag(gamma)) P: subtract each row's mean
        a = a - a.mean(dim=-1, keepdim=True)
        b = b - b.mean(dim=-1, keepdim=True)
    return a, b


def folded_biases(qk: QKWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer, head, d_head) biases with beta absorbed: ``b_q + W_q beta``, ``b_k + W_k beta``."""
    _, beta, _ = norm_parameters(qk)
    w_q, w_k = qk.w_q.to(torch.float64), qk.w_k.to(torch.float64)
    bq = qk.b_q.to(torch.float64) + torch.einsum("lhed,ld->lhe", w_q, beta)
    bk = qk.b_k.to(torch.float64) + torch.einsum("lhed,ld->lhe", w_k, beta)
    return bq, bk


def normalise(x: torch.Tensor, eps: float) -> torch.Tensor:
    """LayerNorm without gamma and beta: ``(x - mean) / sqrt(var + eps)`` over the last dim (biased var)."""
    x = x.to(torch.float64)
    c = x - x.mean(dim=-1, keepdim=True)
    return c / torch.sqrt(c.pow(2).mean(dim=-1, keepdim=True) + eps)
