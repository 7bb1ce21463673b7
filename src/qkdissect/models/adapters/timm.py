"""timm VisionTransformer (ViT, DeiT, DINO, CLIP towers, SigLIP), Eva, Beit, and any module with timm ``blocks``;
the 2-D rotary embeddings of timm's Eva family (EVA-02, DINOv3, RoPE-ViT, PE) are read by :mod:`.timm_rope`.

``qk_norm=True`` (a LayerNorm on each head's q and k, with gains g and biases beta) is written exactly: with
q = W_q x + b_q and C = I - 11^T / d_head (the centring in head space), LN(q) = (G_q C q) / sigma(q) + beta_q, so

    LN(q_i) . LN(k_j) = q_i^T C G_q G_k C k_j / (sigma(q_i) sigma(k_j)) + beta_q . G_k C k_j / sigma(k_j)
                        + G_q C q_i . beta_k / sigma(q_i) + beta_q . beta_k

The adapter folds G C into W and b (the modes are those of W_q^T C diag(g_q g_k) C W_k); sigma(q_i) sigma(k_j) is a
positive factor of each pair and the beta terms (of the key, of the query, constant) are their own terms."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import torch
from torch import nn

from ...core.rotary import Rotary
from ...errors import UnsupportedModelError
from ..layout import REL_POS_NOTE, prefix_kinds
from ..qk import AttentionLayer, QKWeights, TokenLayout, as_pair, head_bias, is_identity, split_heads
from .timm_rope import timm_rotary


def _timm_layer(block: Any) -> AttentionLayer:
    attn: Any = block.attn
    n_heads = int(attn.num_heads)
    if int(getattr(attn, "num_kv_heads", n_heads)) != n_heads:
        raise UnsupportedModelError(
            f"{type(attn).__name__} shares key heads between query heads (num_kv_heads {attn.num_kv_heads} of "
            f"{n_heads}): grouped-query attention in timm models is not supported yet"
        )
    qkv = getattr(attn, "qkv", None)
    if qkv is not None:
        w = qkv.weight
        a = w.shape[0] // 3
        w_q, w_k = split_heads(w[:a], n_heads), split_heads(w[a : 2 * a], n_heads)
        if getattr(attn, "q_bias", None) is not None:  # BEiT / EVA / SimMIM: separate biases, no k bias
            b_q_flat = attn.q_bias
            b_k_flat = getattr(attn, "k_bias", None)
        elif qkv.bias is not None:
            b_q_flat, b_k_flat = qkv.bias[:a], qkv.bias[a : 2 * a]
        else:
            b_q_flat = b_k_flat = None
    elif getattr(attn, "q_proj", None) is not None:  # EVA with separate projections
        w_q, w_k = split_heads(attn.q_proj.weight, n_heads), split_heads(attn.k_proj.weight, n_heads)
        b_q_flat, b_k_flat = attn.q_proj.bias, attn.k_proj.bias
    else:
        raise UnsupportedModelError(f"timm attention {type(attn).__name__} has neither qkv nor q_proj/k_proj")
    d_head = w_q.shape[1]
    layer = AttentionLayer(
        w_q=w_q,
        w_k=w_k,
        b_q=head_bias(b_q_flat, n_heads, d_head, w_q),
        b_k=head_bias(b_k_flat, n_heads, d_head, w_q),
        scale=float(getattr(attn, "scale", d_head**-0.5)),
        norm=getattr(block, "norm1", None),
        attention=attn,
    )
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    if is_identity(q_norm) and is_identity(k_norm):
        return layer
    return _with_layer_norm_qk(layer, q_norm, k_norm)


def _with_layer_norm_qk(layer: AttentionLayer, q_norm: Any, k_norm: Any) -> AttentionLayer:
    """timm qk_norm: G C folded into W_q, b_q (and W_k, b_k), the norms' biases kept as beta_q, beta_k."""
    n_heads, d_head, _ = layer.w_q.shape
    for norm in (q_norm, k_norm):
        if not isinstance(norm, nn.LayerNorm) or tuple(norm.normalized_shape) != (d_head,):
            raise UnsupportedModelError(
                f"{type(layer.attention).__name__} normalises q and k with {type(norm).__name__}: only a LayerNorm "
                f"over each head's {d_head} dimensions (timm's qk_norm=True) is decomposed"
            )
    like = layer.w_q.detach()
    centre = torch.eye(d_head, dtype=like.dtype) - 1.0 / d_head

    def fold(norm: nn.LayerNorm, w: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        g = norm.weight.detach() if norm.weight is not None else torch.ones(d_head, dtype=like.dtype)
        beta = norm.bias.detach() if norm.bias is not None else torch.zeros(d_head, dtype=like.dtype)
        w_c = g[None, :, None] * torch.einsum("ij,hjd->hid", centre, w)
        return w_c, g * (b @ centre), beta.expand(n_heads, d_head).clone()

    w_q, b_q, beta_q = fold(q_norm, layer.w_q, layer.b_q)
    w_k, b_k, beta_k = fold(k_norm, layer.w_k, layer.b_k)
    return dataclasses.replace(layer, w_q=w_q, b_q=b_q, w_k=w_k, b_k=b_k, beta_q=beta_q, beta_k=beta_k)


def _layer_norm_record(attn: Any) -> dict[str, Any]:
    return {
        "kind": "layer",
        "over": {"q": "head", "k": "head"},
        "eps": {"q": float(attn.q_norm.eps), "k": float(attn.k_norm.eps)},
        "centring": "C = I - 11^T / d_head in each head's space: the modes are those of W_q^T C diag(g_q g_k) C W_k",
        "factor": "the logit of tokens i, j is the modes' (with the bias terms of b_q' = g_q C b_q, b_k' = g_k C b_k) "
        "times 1 / (sigma(W_q x_i + b_q) sigma(W_k x_j + b_k)), sigma the standard deviation over the head's "
        "dimensions with the norm's eps inside: a positive factor of each pair, which the softmax sees and the "
        "modes do not",
        "beta": "the norms' biases add beta_q . k'_j / sigma(k_j) (a term of the key), q'_i . beta_k / sigma(q_i) "
        "(of the query) and beta_q . beta_k (constant), with q'_i = W_q' x_i + b_q', k'_j = W_k' x_j + b_k' the "
        "folded projections",
    }


LAYER_NORM_QK_NOTE = (
    "QK-norm: q and k are normalised per head by LayerNorms (centring, gains, biases) before the dot product; the "
    "modes are those of W_q^T C diag(g_q g_k) C W_k (C centres each head's dimensions), each pair's logit also "
    "carries a positive factor 1 / (sigma(q_i) sigma(k_j)) and the norms' biases add terms of their own "
    "(attrs.qk_norm)"
)


def adapt_timm(model: Any, model_id: str) -> QKWeights:
    """timm VisionTransformer (ViT/DeiT/DINO/CLIP towers), Eva, Beit, and any module with timm ``blocks``."""
    cls = type(model).__name__
    adapter = {
        "VisionTransformer": "timm-vit",
        "VisionTransformerDistilled": "timm-vit",
        "Eva": "timm-eva",
        "Beit": "timm-beit",
    }.get(cls, "timm-blocks")
    layers = [_timm_layer(b) for b in model.blocks]
    pe = getattr(model, "patch_embed", None)
    layout = TokenLayout(
        n_prefix=int(getattr(model, "num_prefix_tokens", 0)),
        grid=as_pair(getattr(pe, "grid_size", None)) if pe is not None else None,
        patch_size=as_pair(getattr(pe, "patch_size", None)) if pe is not None else None,
        prefix_kinds=_timm_prefix(model),
    )
    rotary = timm_rotary(model, layout.grid, layout.n_prefix, int(layers[0].w_q.shape[1]))
    notes = _rotary_notes(rotary) if rotary is not None else []
    if cls == "Beit" or getattr(model, "rel_pos_bias", None) is not None:
        notes.append(REL_POS_NOTE)
    if getattr(model, "attn_pool", None) is not None:
        notes.append("the attention-pool head (a learned query attending to the tokens) is not among the layers")
    normed = [b.attn for b, a in zip(model.blocks, layers, strict=True) if a.beta_q is not None]
    qk_norm = _layer_norm_record(normed[0]) if normed else None
    if qk_norm is not None:
        if rotary is not None or len(normed) != len(layers):
            raise UnsupportedModelError(
                f"timm {cls} normalises q and k in {len(normed)} of {len(layers)} blocks"
                + (" and rotates them by position" if rotary is not None else "")
                + ": only qk_norm in every block, without rotary embedding, is decomposed"
            )
        notes.append(LAYER_NORM_QK_NOTE)
    return QKWeights(model_id, adapter, layers, layout, notes, model, rotary=rotary, qk_norm=qk_norm)


def _timm_prefix(model: Any) -> tuple[str, ...]:
    """The kind of each prefix token, from the model's own ``cls_token``, ``dist_token`` and ``reg_token`` (timm
    places them in that order; NaFlexVit in its ``embeds``); refused in one line where they do not add up to
    ``num_prefix_tokens``."""
    names = ("cls_token", "dist_token", "reg_token")
    holder = getattr(model, "embeds", model) if all(getattr(model, n, None) is None for n in names) else model
    tokens = {n: getattr(holder, n, None) for n in names}  # NaFlexVit keeps them in its embeds
    count = {n: int(t.shape[1]) if t is not None else 0 for n, t in tokens.items()}
    kinds = prefix_kinds(count["cls_token"], count["dist_token"], count["reg_token"])
    n_prefix = int(getattr(model, "num_prefix_tokens", 0))
    n_reg = int(getattr(model, "num_reg_tokens", count["reg_token"]))
    if len(kinds) != n_prefix or n_reg != count["reg_token"]:
        raise UnsupportedModelError(
            f"timm {type(model).__name__} has {n_prefix} prefix tokens ({n_reg} registers) but its cls_token, "
            f"dist_token and reg_token hold {count}: qkdissect cannot tell which token is which"
        )
    return kinds


def _rotary_notes(rotary: Rotary) -> list[str]:
    grid = "x".join(map(str, rotary.grid or ()))
    p0 = ", ".join(f"{v:g}" for v in rotary.unrotated_position)
    notes = [
        "2-D rotary position embedding (RoPE): q and k of the patch tokens are rotated by their grid position after "
        "their projections, so the interaction depends on the offset d = (dy, dx) between the query's patch and "
        "the key's, in patches; these modes are its value at the offset in attrs.offset ([0, 0] when not given: "
        "two tokens at the same position), W_q^T R(-d) W_k (attrs.rotary: the model's own frequencies, pairing "
        f"and coordinates, for the {grid} grid)",
        f"the {rotary.unrotated_prefix} prefix tokens (CLS, registers) are not rotated: each interacts as a token at "
        f"grid position ({p0}) (attrs.rotary.unrotated_position), so a prefix query and a patch key at p are the "
        "modes at offset unrotated_position - p, two prefix tokens the modes at offset 0",
    ]
    if rotary.per_head:
        notes.append("mixed RoPE: every head of every layer turns with its own learned frequencies")
    step = rotary.coordinate_step
    if not np.allclose(step, 1.0):
        notes.append(
            f"coordinates are not the patch index: a patch step is ({', '.join(f'{s:.4g}' for s in step)}) in the "
            f"model's coordinates ({rotary.coordinates}); the modes at an offset hold for the {grid} grid only"
        )
    return notes
