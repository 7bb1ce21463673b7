"""timm VisionTransformer (ViT, DeiT, DINO, CLIP towers), Eva, Beit, and any module with timm ``blocks``; the 2-D
rotary embeddings of timm's Eva family (EVA-02, DINOv3, RoPE-ViT, PE) are read by :mod:`.timm_rope`."""

from __future__ import annotations

from typing import Any

import numpy as np

from ...core.rotary import Rotary
from ...errors import UnsupportedModelError
from ..layout import prefix_kinds
from ..qk import AttentionLayer, QKWeights, TokenLayout, as_pair, head_bias, is_identity, split_heads
from .timm_rope import timm_rotary


def _timm_layer(block: Any) -> AttentionLayer:
    attn: Any = block.attn
    n_heads = int(attn.num_heads)
    if not (is_identity(getattr(attn, "q_norm", None)) and is_identity(getattr(attn, "k_norm", None))):
        raise UnsupportedModelError(
            f"{type(attn).__name__} normalises q and k per head (qk_norm): the attention logit is not "
            "x_i^T W_q^T W_k x_j, so the query-key modes do not describe it. Use a model without qk_norm."
        )
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
    return AttentionLayer(
        w_q=w_q,
        w_k=w_k,
        b_q=head_bias(b_q_flat, n_heads, d_head, w_q),
        b_k=head_bias(b_k_flat, n_heads, d_head, w_q),
        scale=float(getattr(attn, "scale", d_head**-0.5)),
        norm=getattr(block, "norm1", None),
        attention=attn,
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
        notes.append("relative position bias is added to the logits; it does not depend on token content")
    return QKWeights(model_id, adapter, layers, layout, notes, model, rotary=rotary)


def _timm_prefix(model: Any) -> tuple[str, ...]:
    """The kind of each prefix token, from the model's own ``cls_token``, ``dist_token`` and ``reg_token`` (timm
    places them in that order); refused in one line where they do not add up to ``num_prefix_tokens``."""
    tokens = {n: getattr(model, n, None) for n in ("cls_token", "dist_token", "reg_token")}
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
