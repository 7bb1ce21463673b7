"""The model's own pre-softmax attention logits, captured while it runs, and the same logits rebuilt from
extracted weights. This is how every adapter is checked: hooks record the tokens that feed W_q and W_k
(the output of the layer's norm), and a torch-function mode records the q and k that the model passes to
``scaled_dot_product_attention`` (or the input of ``softmax`` on the eager path). The package's passes use none of
it: the ablation pass's q and k come from :func:`qkdissect.models.qk.qk_from_weights`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from qkdissect.models.qk import QKWeights, qk_from_weights
from qkdissect.passes.hooks import layer_token_hooks

_SOFTMAX = {F.softmax, torch.softmax, torch.Tensor.softmax}


class _LogitRecorder(TorchFunctionMode):
    def __init__(self) -> None:
        super().__init__()
        self.sdpa: list[torch.Tensor] = []
        self.softmax: list[torch.Tensor] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention:
            q, k = args[0], args[1]
            scale = kwargs.get("scale", args[6] if len(args) > 6 else None)
            if scale is None:
                scale = q.shape[-1] ** -0.5
            with torch.no_grad():
                self.sdpa.append((q.double() @ k.double().transpose(-1, -2) * scale).detach())
        elif func in _SOFTMAX:
            self.softmax.append(args[0].detach().double())
        return func(*args, **kwargs)


@contextmanager
def _norm_hooks(qk: QKWeights) -> Iterator[list[torch.Tensor | None]]:
    """Per layer, the tokens that feed W_q and W_k (the norm's output), filled in while the model runs."""
    tokens: list[torch.Tensor | None] = [None] * qk.n_layers

    def keep(i: int, t: torch.Tensor) -> None:
        tokens[i] = t.detach()

    with layer_token_hooks(qk, "post-norm", keep):
        yield tokens


def capture_logits(
    model: torch.nn.Module, qk: QKWeights, *args: Any, **kwargs: Any
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Run ``model(*args, **kwargs)`` and return, per layer, the tokens feeding the attention
    (batch, token, d_model) and the model's own pre-softmax logits q.k * scale (batch, head, token, token),
    without additive position biases or masks."""
    rec = _LogitRecorder()
    with _norm_hooks(qk) as tokens, torch.no_grad(), rec:
        model(*args, **kwargs)
    logits = rec.sdpa if rec.sdpa else rec.softmax
    if len(logits) != qk.n_layers or any(t is None for t in tokens):
        raise RuntimeError(
            f"captured {len(logits)} attention calls and {sum(t is not None for t in tokens)} token sets "
            f"for {qk.n_layers} layers"
        )
    return [t for t in tokens if t is not None], logits


def logits_from_weights(qk: QKWeights, layer: int, x: torch.Tensor) -> torch.Tensor:
    """(W_q x + b_q) . (W_k x + b_k) * scale for one layer, per head: (batch, token, d) -> (b, h, t, t)."""
    q, k = qk_from_weights(qk, layer, x)
    return q @ k.transpose(-1, -2) * qk.layers[layer].scale


def max_relative_error(qk: QKWeights, tokens: list[torch.Tensor], logits: list[torch.Tensor]) -> float:
    """Largest, over layers, of ||ours - model's|| / ||model's|| (Frobenius)."""
    worst = 0.0
    with torch.no_grad():
        for i, (x, ref) in enumerate(zip(tokens, logits, strict=True)):
            ours = logits_from_weights(qk, i, x)
            worst = max(worst, float(torch.linalg.norm(ours - ref) / torch.linalg.norm(ref)))
    return worst


def bias_terms(qk: Any, layer: int, head: int, x: torch.Tensor, drop: torch.Tensor | None = None) -> torch.Tensor:
    """scale * (x W_q^T + b_q)(W_k x + b_k) computed directly in float64, W_q^T W_k minus ``drop`` (d, d) when
    given, the full product when not; ``drop = W_q^T W_k`` leaves the bias terms."""
    a = qk.layers[layer]
    wq, wk, bq, bk = (t[head].double() for t in (a.w_q, a.w_k, a.b_q, a.b_k))
    x = x.double()
    core = wq.T @ wk - (drop if drop is not None else 0)
    return a.scale * (x @ core @ x.transpose(-1, -2) + (x @ wq.T @ bk)[..., :, None] + (x @ wk.T @ bq)[..., None, :]
                      + bq @ bk)  # fmt: skip
