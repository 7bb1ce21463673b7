"""The adapters on the real DINOv2-S/14 checkpoint with real photographs (timm's model and Hugging Face's) reproduce
its own pre-softmax attention logits."""

from __future__ import annotations

import pytest
import torch
from transformers import (
    Dinov2Config,
    Dinov2Model,
)

from qkdissect.core.modes import qk_modes
from qkdissect.models import extract_qk, load_qk
from tests.helpers.logits import capture_logits, max_relative_error


def _timm_dinov2_into_hf(timm_model: torch.nn.Module, img_size: int) -> Dinov2Model:
    """Copy a timm DINOv2 into a Hugging Face Dinov2Model, module by module (version-independent names)."""
    from qkdissect.models.adapters.hf import _find_child, _hf_attention, _hf_layers

    d, heads = timm_model.embed_dim, timm_model.blocks[0].attn.num_heads
    hf = Dinov2Model(
        Dinov2Config(
            hidden_size=d,
            num_hidden_layers=len(timm_model.blocks),
            num_attention_heads=heads,
            image_size=img_size,
            patch_size=14,
            layer_norm_eps=1e-6,
        )
    ).eval()
    with torch.no_grad():
        emb = hf.embeddings
        emb.cls_token.copy_(timm_model.cls_token)
        emb.position_embeddings.copy_(timm_model.pos_embed)
        emb.patch_embeddings.projection.load_state_dict(timm_model.patch_embed.proj.state_dict())
        for blk, layer in zip(timm_model.blocks, _hf_layers(hf), strict=True):
            attn = _hf_attention(layer)
            w, b = blk.attn.qkv.weight.chunk(3), blk.attn.qkv.bias.chunk(3)
            for lin, wi, bi in zip(
                (
                    _find_child(attn, ("q_proj", "query")),
                    _find_child(attn, ("k_proj", "key")),
                    _find_child(attn, ("v_proj", "value")),
                ),
                w,
                b,
                strict=True,
            ):
                lin.weight.copy_(wi)
                lin.bias.copy_(bi)
            out = getattr(attn, "o_proj", None) or layer.attention.output.dense
            out.load_state_dict(blk.attn.proj.state_dict())
            layer.norm1.load_state_dict(blk.norm1.state_dict())
            layer.norm2.load_state_dict(blk.norm2.state_dict())
            layer.layer_scale1.lambda1.copy_(blk.ls1.gamma)
            layer.layer_scale2.lambda1.copy_(blk.ls2.gamma)
            layer.mlp.fc1.load_state_dict(blk.mlp.fc1.state_dict())
            layer.mlp.fc2.load_state_dict(blk.mlp.fc2.state_dict())
        hf.layernorm.load_state_dict(timm_model.norm.state_dict())
    return hf


TOL = 1e-4


@pytest.mark.assets
@pytest.mark.parametrize("img_size", [224, 518])
def test_real_dinov2_timm_reproduces_logits(dinov2_file, photos, img_size: int) -> None:
    qk, loaded = load_qk(f"timm:vit_small_patch14_dinov2@{dinov2_file}?img_size={img_size}")
    assert loaded.weights_sha256.startswith("20f14f60")
    assert qk.layout.grid == (img_size // 14, img_size // 14)
    x = photos if img_size == 224 else torch.nn.functional.interpolate(photos, size=518, mode="bilinear")
    tokens, logits = capture_logits(loaded.model, qk, x)
    assert max_relative_error(qk, tokens, logits) < TOL


@pytest.mark.assets
def test_real_dinov2_hf_adapter(dinov2_file, photos) -> None:
    """The same real weights through the Hugging Face Dinov2 adapter: same features as timm, its own
    logits reproduced, and identical modes."""
    qk_t, loaded = load_qk(f"timm:vit_small_patch14_dinov2@{dinov2_file}?img_size=224")
    hf = _timm_dinov2_into_hf(loaded.model, 224)
    with torch.no_grad():
        feats_t = loaded.model.forward_features(photos)
        feats_h = hf(pixel_values=photos).last_hidden_state
    assert torch.allclose(feats_t, feats_h, atol=1e-3, rtol=1e-3)
    qk_h = extract_qk(hf, "hf-dinov2")
    assert qk_h.layout.n_prefix == 1 and qk_h.layout.grid == (16, 16)
    tokens, logits = capture_logits(hf, qk_h, pixel_values=photos)
    assert max_relative_error(qk_h, tokens, logits) < TOL
    assert torch.equal(qk_h.w_q, qk_t.w_q) and torch.equal(qk_h.b_k, qk_t.b_k)
    m_t, m_h = qk_modes(qk_t.w_q, qk_t.w_k), qk_modes(qk_h.w_q, qk_h.w_k)
    assert torch.allclose(m_t.S, m_h.S, rtol=1e-12)
