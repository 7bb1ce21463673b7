"""The LayerNorms that feed W_q and W_k, read off a model, and the folded factors and biases of its modes
(the math: :mod:`qkdissect.core.layernorm`)."""

from __future__ import annotations

import torch

from ..core.layernorm import fold_biases, fold_factors
from ..options import Folding
from .qk import QKWeights


def folded_factors(qk: QKWeights, folding: Folding = "folded") -> tuple[torch.Tensor, torch.Tensor]:
    """(layer, head, d_head, d_model) factors whose product ``A^T B`` is the folded interaction of ``qk``."""
    if folding == "raw":
        return qk.w_q.to(torch.float64), qk.w_k.to(torch.float64)
    gamma, _, _ = norm_parameters(qk)
    return fold_factors(qk.w_q, qk.w_k, gamma, folding)


def folded_biases(qk: QKWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer, head, d_head) biases with beta absorbed: ``b_q + W_q beta``, ``b_k + W_k beta``."""
    _, beta, _ = norm_parameters(qk)
    return fold_biases(qk.w_q, qk.w_k, qk.b_q, qk.b_k, beta)


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
