"""The norms that feed W_q and W_k, read off a model, and the folded factors and biases of its modes (the math:
:mod:`qkdissect.core.layernorm`). A LayerNorm gives gamma, beta and its centring; an RMS norm (Llama, SmolLM2,
Qwen, Gemma) is recognised by what it computes, ``g * x / rms(x)`` (:func:`rms_gains`), whatever its class: its
gains g are gamma, it has no beta and no centring."""

from __future__ import annotations

import copy
from typing import Any

import torch

from ..core.layernorm import fold_biases, fold_factors
from ..options import Folding
from .qk import QKWeights

#: the probe's scale: a power of two, so that rms(x) of a constant x is exact even in float32 and eps (1e-5 or so,
#: under the root) is below float64's resolution: the probed gains are the norm's own to the last bit
_PROBE = 2.0**13


def folded_factors(qk: QKWeights, folding: Folding = "folded") -> tuple[torch.Tensor, torch.Tensor]:
    """(layer, head, d_head, d_model) factors whose product ``A^T B`` is the folded interaction of ``qk`` (an RMS
    norm has no centring: its folded-centred factors are its folded ones)."""
    if folding == "raw":
        return qk.w_q.to(torch.float64), qk.w_k.to(torch.float64)
    kind, gamma, _, _ = _norms(qk)
    return fold_factors(qk.w_q, qk.w_k, gamma, folding, centring=kind == "layernorm")


def folded_biases(qk: QKWeights) -> tuple[torch.Tensor, torch.Tensor]:
    """(layer, head, d_head) biases with beta absorbed: ``b_q + W_q beta``, ``b_k + W_k beta``."""
    _, beta, _ = norm_parameters(qk)
    return fold_biases(qk.w_q, qk.w_k, qk.b_q, qk.b_k, beta)


class NotLayerNormError(ValueError):
    pass


def rms_gains(norm: torch.nn.Module, size: int) -> torch.Tensor | None:
    """The gains g (``size``, float64) of a norm that computes ``g * x / rms(x)`` over its last ``size`` dims, read
    off its outputs on a constant and on random vectors (so Gemma's ``(1 + w)`` is found as such); None where it
    computes something else (a LayerNorm's centring and beta). Float32 arithmetic inside is allowed (rtol 1e-5)."""
    probe = copy.deepcopy(norm).double().eval()
    with torch.no_grad():
        gains = probe(torch.full((1, size), _PROBE, dtype=torch.float64))[0]
        x = torch.randn(3, size, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * _PROBE + _PROBE / 2
        want = gains * x / x.pow(2).mean(-1, keepdim=True).sqrt()
        return gains if torch.allclose(probe(x), want, rtol=1e-5, atol=0) else None


def norm_kind(qk: QKWeights) -> str:
    """The kind of the norms feeding W_q and W_k, "layernorm" or "rms" (all layers alike; anything else raises)."""
    return _norms(qk)[0]


def norm_record(qk: QKWeights) -> dict[str, Any]:
    """What a folded modes store says of the norms it folded: their kind, class and whether they centre."""
    kind = norm_kind(qk)
    return {"kind": kind, "module": type(qk.layers[0].norm).__name__, "centring": kind == "layernorm"}


def norm_parameters(qk: QKWeights) -> tuple[torch.Tensor, torch.Tensor, list[float]]:
    """gamma (layer, d), beta (layer, d) and eps per layer of the norms feeding W_q and W_k (an RMS norm: its gains,
    beta 0, its ``variance_epsilon`` or ``eps``)."""
    return _norms(qk)[1:]


def _norms(qk: QKWeights) -> tuple[str, torch.Tensor, torch.Tensor, list[float]]:
    """The kind of the norms ("layernorm" or "rms"), gamma, beta and eps: anything else raises one line."""
    kinds, gammas, betas, eps = set(), [], [], []
    d = qk.d_model
    for i, layer in enumerate(qk.layers):
        norm = layer.norm
        if isinstance(norm, torch.nn.LayerNorm):
            kinds.add("layernorm")
            gammas.append(norm.weight.detach() if norm.weight is not None else torch.ones(d))
            betas.append(norm.bias.detach() if norm.bias is not None else torch.zeros(d))
            eps.append(float(norm.eps))
            continue
        gains = rms_gains(norm, d) if norm is not None else None
        if gains is None:
            raise NotLayerNormError(
                f"{qk.model_id} layer {i}: the module feeding W_q/W_k is {type(norm).__name__}, neither a LayerNorm "
                "nor an RMS norm (g x / rms(x)); folding needs one of them: use the raw modes"
            )
        kinds.add("rms")
        gammas.append(gains)
        betas.append(torch.zeros(d))
        eps.append(float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 0.0))))
    if len(kinds) > 1:
        raise NotLayerNormError(f"{qk.model_id}: the norms feeding W_q/W_k mix LayerNorm and RMS norm layers")
    as64 = [torch.stack([t.to(torch.float64).cpu() for t in ts]) for ts in (gammas, betas)]
    return kinds.pop(), as64[0], as64[1], eps
