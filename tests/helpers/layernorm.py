"""LayerNorm folding checked against the model's own logits (the tokens a norm normalises, the logits rebuilt from
each folding's factors)."""

from __future__ import annotations

from typing import Any

import torch

from qkdissect.core.layernorm import normalise
from qkdissect.models import QKWeights, load_qk
from qkdissect.models.layernorm import folded_biases, folded_factors, norm_parameters
from qkdissect.passes.hooks import layer_token_hooks
from tests.helpers.logits import capture_logits


def residual_tokens(qk, model: torch.nn.Module, *args: Any, **kwargs: Any) -> dict[int, torch.Tensor]:  # type: ignore[no-untyped-def]
    """The residual stream entering each block's LayerNorm (what the norm normalises)."""
    got: dict[int, torch.Tensor] = {}
    with layer_token_hooks(qk, "pre-norm", lambda i, t: got.__setitem__(i, t.detach())), torch.inference_mode():
        model(*args, **kwargs)
    return got


def folded_logit_error(spec: str | tuple[QKWeights, torch.nn.Module], *args: Any, **kwargs: Any) -> dict[str, float]:
    """Worst relative error, over layers and heads, of the logits rebuilt from each folding's factors and biases
    on the normalised residual tokens, against the model's own pre-softmax logits (model inputs: args, kwargs)."""
    if isinstance(spec, str):
        qk, loaded = load_qk(spec)
        model = loaded.model
    else:
        qk, model = spec
    _, logits = capture_logits(model, qk, *args, **kwargs)
    res = residual_tokens(qk, model, *args, **kwargs)
    _, _, eps = norm_parameters(qk)
    bq, bk = folded_biases(qk)
    out = {}
    for folding in ("raw", "folded", "folded-centred"):
        a, b = folded_factors(qk, folding)  # type: ignore[arg-type]
        worst = 0.0
        for layer in range(qk.n_layers):
            xh = normalise(res[layer], eps[layer])
            q = torch.einsum("btd,hed->bhte", xh, a[layer]) + bq[layer][None, :, None]
            k = torch.einsum("btd,hed->bhte", xh, b[layer]) + bk[layer][None, :, None]
            ours = torch.einsum("bhie,bhje->bhij", q, k) * qk.layers[layer].scale
            ref = logits[layer].double()
            worst = max(worst, float(torch.linalg.norm(ours - ref) / torch.linalg.norm(ref)))
        out[folding] = worst
    return out
