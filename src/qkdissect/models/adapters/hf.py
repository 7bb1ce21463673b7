"""Hugging Face ViT / DeiT / Dinov2 / CLIP vision (and other encoders with q/k projections), BERT-style text
encoders (post-LayerNorm: the norm feeding layer i's attention is layer i-1's output LayerNorm, or the
embeddings' LayerNorm for layer 0), and GPT-2-style decoders whose fused ``c_attn`` (a ``Conv1D``, ``x W + b``)
holds W_q, W_k, W_v side by side."""

from __future__ import annotations

import dataclasses
from typing import Any

from torch import nn

from ...errors import UnsupportedModelError
from ..qk import AttentionLayer, QKWeights, TokenLayout, as_pair, head_bias, split_heads

_HF_Q = ("q_proj", "query")


_HF_K = ("k_proj", "key")


_HF_NORM = ("layernorm_before", "norm1", "layer_norm1")


def _hf_layers(model: nn.Module) -> nn.ModuleList:
    """The first ModuleList named ``layer``/``layers`` (``encoder.layer`` in transformers 4, ``layers`` at the
    top of ViT in transformers 5) whose layers hold query/key projections."""
    for name, mod in model.named_modules():
        if (
            isinstance(mod, nn.ModuleList)
            and name.split(".")[-1] in ("layer", "layers")
            and len(mod) > 0
            and _hf_attention(mod[0]) is not None
        ):
            return mod
    raise UnsupportedModelError(f"no list of transformer layers with query/key projections in {type(model).__name__}")


def _hf_attention(layer: nn.Module) -> nn.Module | None:
    for mod in layer.modules():
        if _find_child(mod, _HF_Q) is not None and _find_child(mod, _HF_K) is not None:
            return mod
    return None


def _find_child(module: nn.Module, names: tuple[str, ...]) -> nn.Module | None:
    for n in names:
        m = getattr(module, n, None)
        if m is not None:
            return m
    return None


def _hf_layer(layer: nn.Module, n_heads: int) -> AttentionLayer:
    attn = _hf_attention(layer)
    if attn is None:
        raise UnsupportedModelError(f"no query/key projections (q_proj/k_proj or query/key) in {type(layer).__name__}")
    q = _find_child(attn, _HF_Q)
    k = _find_child(attn, _HF_K)
    assert isinstance(q, nn.Linear) and isinstance(k, nn.Linear)
    w_q, w_k = split_heads(q.weight, n_heads), split_heads(k.weight, n_heads)
    d_head = w_q.shape[1]
    scale = getattr(attn, "scaling", None) or getattr(attn, "scale", None) or d_head**-0.5
    return AttentionLayer(
        w_q=w_q,
        w_k=w_k,
        b_q=head_bias(q.bias, n_heads, d_head, w_q),
        b_k=head_bias(k.bias, n_heads, d_head, w_q),
        scale=float(scale),
        norm=_find_child(layer, _HF_NORM),
        attention=attn,
    )


def _hf_layout(model: Any) -> TokenLayout:
    cfg = model.config
    emb = getattr(model, "embeddings", None)
    n_prefix = 0
    if emb is not None:
        for name in ("cls_token", "class_embedding", "distillation_token"):
            if getattr(emb, name, None) is not None:
                n_prefix += 1
        reg = getattr(emb, "register_tokens", None)
        if reg is not None:
            n_prefix += int(reg.shape[1])
    img = as_pair(getattr(cfg, "image_size", None))
    patch = as_pair(getattr(cfg, "patch_size", None))
    grid = (img[0] // patch[0], img[1] // patch[1]) if img and patch else None
    return TokenLayout(n_prefix=n_prefix, grid=grid, patch_size=patch)


def _post_ln_norms(model: nn.Module, layers: nn.ModuleList, found: list[nn.Module | None]) -> list[nn.Module | None]:
    """Post-LayerNorm encoders (BERT, RoBERTa, ...) have no norm before the attention: the tokens it sees are the
    output of the previous layer's output LayerNorm, or of the embeddings' LayerNorm for layer 0."""
    if any(n is not None for n in found):
        return found
    emb_norm = getattr(getattr(model, "embeddings", None), "LayerNorm", None)
    outs = [getattr(getattr(layer, "output", None), "LayerNorm", None) for layer in layers]
    if isinstance(emb_norm, nn.LayerNorm) and all(isinstance(o, nn.LayerNorm) for o in outs):
        return [emb_norm, *outs[:-1]]
    return found


def _gpt2_layer(block: nn.Module) -> AttentionLayer:
    """GPT-2: ``c_attn`` is a Conv1D (``y = x W + b``, W of shape (d, 3d)) holding W_q | W_k | W_v."""
    attn: Any = block.attn
    norm = block.ln_1
    assert isinstance(norm, nn.Module)
    if getattr(attn, "is_cross_attention", False):
        raise UnsupportedModelError("GPT-2 cross-attention blocks are not supported (queries come from q_attn)")
    d, n_heads = int(attn.embed_dim), int(attn.num_heads)
    w = attn.c_attn.weight.detach().T  # (3d, d): rows are output features, as nn.Linear
    b = attn.c_attn.bias.detach()
    w_q, w_k = split_heads(w[:d], n_heads), split_heads(w[d : 2 * d], n_heads)
    d_head = d // n_heads
    return AttentionLayer(
        w_q=w_q,
        w_k=w_k,
        b_q=b[:d].reshape(n_heads, d_head).clone(),
        b_k=b[d : 2 * d].reshape(n_heads, d_head).clone(),
        scale=float(attn.scaling),
        norm=norm,
        attention=attn,
    )


def _text_layout(causal: bool) -> TokenLayout:
    return TokenLayout(n_prefix=0, grid=None, patch_size=None, causal=causal)


def adapt_hf(model: Any, model_id: str) -> QKWeights:
    """Hugging Face ViT / DeiT / Dinov2 / CLIP vision (and other encoders with q/k projections), BERT-style text
    encoders, and GPT-2-style decoders (fused ``c_attn``)."""
    if getattr(model, "vision_model", None) is not None:  # CLIPModel -> its vision tower
        model = model.vision_model
    for attr in ("vit", "deit", "dinov2", "bert", "roberta", "transformer"):  # *For... task wrappers
        inner = getattr(model, attr, None)
        if isinstance(inner, nn.Module) and hasattr(inner, "config"):
            model = inner
            break
    cfg = model.config
    blocks = getattr(model, "h", None)
    if isinstance(blocks, nn.ModuleList) and len(blocks) and hasattr(getattr(blocks[0], "attn", None), "c_attn"):
        gpt2 = [_gpt2_layer(b) for b in blocks]
        return QKWeights(model_id, f"hf-{cfg.model_type}", gpt2, _text_layout(causal=True), [], model)
    n_heads = int(cfg.num_attention_heads)
    hf_layers = _hf_layers(model)
    layers = [_hf_layer(layer, n_heads) for layer in hf_layers]
    norms = _post_ln_norms(model, hf_layers, [a.norm for a in layers])
    layers = [dataclasses.replace(a, norm=n) for a, n in zip(layers, norms, strict=True)]
    is_text = getattr(cfg, "image_size", None) is None and getattr(cfg, "vocab_size", None) is not None
    layout = _text_layout(bool(getattr(cfg, "is_decoder", False))) if is_text else _hf_layout(model)
    return QKWeights(model_id, f"hf-{cfg.model_type}", layers, layout, [], model)
