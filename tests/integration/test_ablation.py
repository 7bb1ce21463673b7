"""The ablation pass on the real DINOv2-S/14 with real photographs: nothing ablated is the model bit for bit, all modes
of a head leave its bias terms, one mode is the difference of two explicit forward computations, and the strongest
mode moves attention more than the weakest."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from qkdissect.core.modes import qk_modes
from qkdissect.models import extract_qk, load_qk
from qkdissect.passes.ablation import Ablations, Ablator, TimmRunner, select_modes
from qkdissect.passes.hooks import layer_token_hooks
from tests.helpers.logits import bias_terms

LAYER, HEAD = 9, 2  # the pass from the ablated layer onward runs 3 blocks


def _explicit_forward(model: Any, h: torch.Tensor, head_logits: torch.Tensor) -> torch.Tensor:
    """The model's embedding from ``h``, the residual stream entering layer LAYER, with head HEAD of that layer
    attending by ``head_logits`` (batch, token, token), its block written out by hand."""
    for i, blk in enumerate(model.blocks[LAYER:], start=LAYER):
        if i != LAYER:
            h = blk(h)
            continue
        a = blk.attn
        b, n, c = h.shape
        q, k, v = a.qkv(blk.norm1(h)).reshape(b, n, 3, a.num_heads, a.head_dim).permute(2, 0, 3, 1, 4).unbind(0)
        logits = q @ k.transpose(-1, -2) * a.scale
        logits[:, HEAD] = head_logits
        o = (logits.softmax(-1) @ v).transpose(1, 2).reshape(b, n, c)
        h = h + blk.ls1(a.proj(o))
        h = h + blk.ls2(blk.mlp(blk.norm2(h)))
    return model.forward_head(model.norm(h), pre_logits=True)


def _head_modes(qk: Any, layer: int, head: int, modes: list[int]) -> Ablations:
    """One ablation of the given modes of one head (float64)."""
    m = qk_modes(qk.w_q[layer, head], qk.w_k[layer, head], dtype="float64", device="cpu")
    idx = torch.tensor(modes)
    t = torch.tensor
    return Ablations(t([layer]), t([head]), m.U[None, :, idx], m.S[None, idx], m.V[None, :, idx])


class _Logits(TorchFunctionMode):
    """The pre-softmax logits of every attention call given a mask (q.k * scale + mask) and every softmax's input."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[torch.Tensor] = []

    def __torch_function__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        kwargs = kwargs or {}
        if func is F.scaled_dot_product_attention and kwargs.get("attn_mask") is not None:
            q, k = args[0].double(), args[1].double()
            self.found.append(q @ k.transpose(-1, -2) * q.shape[-1] ** -0.5 + kwargs["attn_mask"].double())
        elif func is torch.Tensor.softmax:
            self.found.append(args[0].double())
        return func(*args, **kwargs)


@pytest.fixture(scope="module")
def dinov2(dinov2_file: Path) -> tuple[Any, Any]:
    qk, loaded = load_qk(f"timm:vit_small_patch14_dinov2@{dinov2_file}?img_size=224")
    return qk, loaded.model


def test_nothing_ablated_is_the_model_bit_for_bit(dinov2: tuple[Any, Any], photos: torch.Tensor) -> None:
    qk, model = dinov2
    runner = TimmRunner(model, qk, "dinov2")
    x = photos[:1]
    with torch.inference_mode():
        ref = model(x)
        base = runner.baseline(x, [0, 11])
        zero = torch.zeros(1, qk.n_heads, 257, 257)
        assert torch.equal(base.outputs.embedding, ref)
        assert torch.equal(runner.tail(base.residual[0], 0, zero).embedding, ref)  # a zero bias in the attention
        assert torch.equal(runner.tail(base.residual[11], 11, None).embedding, ref)


@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "eager"])
def test_all_modes_of_a_head_leave_its_bias_terms(dinov2: tuple[Any, Any], photos: torch.Tensor, fused: bool) -> None:
    qk, model = dinov2
    photos = photos[:1]
    attn = model.blocks[LAYER].attn
    attn.fused_attn = fused
    try:
        ablator = Ablator(TimmRunner(model, qk, "dinov2"), _head_modes(qk, LAYER, HEAD, list(range(qk.d_head))))
        rec, seen = _Logits(), []
        with torch.inference_mode(), layer_token_hooks(qk, "post-norm", lambda _, t: seen.append(t), [LAYER]), rec:
            ablator(photos)
        tokens = seen[0]  # what the layer's W_q and W_k see (the same again in the pass from the layer onward)
    finally:
        attn.fused_attn = True
    a = qk.layers[LAYER]
    got = rec.found[-1]  # the ablated layer's logits in the pass from it onward (eager: the softmax's input)
    terms = bias_terms(qk, LAYER, HEAD, tokens, drop=a.w_q[HEAD].double().T @ a.w_k[HEAD].double())
    err = (got[:, HEAD] - terms).norm() / bias_terms(qk, LAYER, HEAD, tokens).norm()
    others = [h for h in range(qk.n_heads) if h != HEAD]
    full = torch.stack([bias_terms(qk, LAYER, h, tokens) for h in others], dim=1)
    assert err < 1e-6, err  # measured 1.6e-7 (sdpa), 2.1e-7 (eager)
    assert (got[:, others] - full).norm() / full.norm() < 1e-6  # the other heads untouched (9e-8, 1.6e-7)


def test_one_mode_is_the_difference_of_two_explicit_forwards(dinov2: tuple[Any, Any], photos: torch.Tensor) -> None:
    """In float64: the pass's head metrics and output change against the model run by hand, with the head's logits
    x^T (W_q^T W_k - s u v^T) x + bias terms computed explicitly."""
    _, model32 = dinov2
    model = copy.deepcopy(model32).double()
    qk = extract_qk(model, "dinov2-f64")
    x = photos[:1].double()
    ab = _head_modes(qk, LAYER, HEAD, [0])
    ablator = Ablator(TimmRunner(model, qk, "dinov2"), ab)
    with torch.inference_mode():
        got = dict(zip(ablator.metrics, ablator(x)[:, 0].T, strict=True))
        base = ablator.runner.baseline(x, [LAYER])
        tokens = base.tokens[LAYER]
        drop = ab.s[0, 0] * ab.u[0] @ ab.v[0].T
        before, after = bias_terms(qk, LAYER, HEAD, tokens), bias_terms(qk, LAYER, HEAD, tokens, drop)
        p, logq = before.softmax(-1), after.log_softmax(-1)
        kl = (p * (p.log() - logq)).sum(-1).mean(-1)
        moved = 0.5 * (p - logq.exp()).abs().sum(-1).mean(-1)
        e0, e1 = base.outputs.embedding, _explicit_forward(model, base.residual[LAYER], after)
    cos = F.cosine_similarity(e0, e1, dim=-1)
    for name, want in (("attention_kl", kl), ("attention_moved", moved), ("embedding_distance", 1 - cos)):
        assert torch.allclose(got[name], want, rtol=1e-6, atol=0), (name, got[name], want)  # measured: 5e-13
    assert (got["embedding_distance"] > 1e-7).all()  # a change far above float64 noise


def test_the_strongest_mode_moves_attention_more_than_the_weakest(
    dinov2: tuple[Any, Any], photos: torch.Tensor
) -> None:
    """Every head of every layer, its mode 0 and its mode 63, on two photographs: the head's attention only."""
    qk, model = dinov2
    m = qk_modes(qk.w_q, qk.w_k, dtype="float64", device="cpu")
    sel = select_modes(["0,0,0"], (qk.n_layers, qk.n_heads, qk.d_head))
    grid = np.stack(np.meshgrid(np.arange(qk.n_layers), np.arange(qk.n_heads), [0, qk.d_head - 1], indexing="ij"))
    sel = type(sel)(*grid.reshape(3, -1))
    t = [torch.as_tensor(a) for a in (sel.layer, sel.head, sel.mode)]
    ab = Ablations(
        t[0], t[1], m.U[t[0], t[1], :, t[2]][..., None], m.S[*t][:, None], m.V[t[0], t[1], :, t[2]][..., None]
    )
    ablator = Ablator(TimmRunner(model, qk, "dinov2"), ab, outputs=False)
    kl = ablator(photos)[..., 0].mean(0).reshape(qk.n_layers, qk.n_heads, 2)
    strongest, weakest = kl[..., 0], kl[..., 1]
    print(f"attention KL, mean over heads: strongest {strongest.mean():.3g}, weakest {weakest.mean():.3g}; "
          f"strongest > weakest in {(strongest > weakest).float().mean():.0%} of heads")  # fmt: skip
    assert strongest.mean() > 10 * weakest.mean()  # measured: 0.057 against 0.00093 nats
    assert (strongest > weakest).float().mean() > 0.9  # measured: 71 of 72 heads
