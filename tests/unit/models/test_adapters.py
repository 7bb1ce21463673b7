"""Every adapter reproduces its model's own pre-softmax attention logits: on tiny random-initialised models
of each family, and on the real DINOv2-S/14 checkpoint with real photographs."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import timm
import torch
from timm.models.beit import Beit
from timm.models.eva import Eva
from transformers import (
    CLIPConfig,
    CLIPModel,
    CLIPVisionConfig,
    CLIPVisionModel,
    DeiTConfig,
    DeiTModel,
    Dinov2Config,
    Dinov2Model,
    ViTConfig,
    ViTForImageClassification,
    ViTModel,
)

from qkdissect.core.modes import qk_modes
from qkdissect.models import extract_qk, load_qk
from tests.helpers import TINY as TINY_GEOMETRY
from tests.helpers import randomise_
from tests.helpers.logits import capture_logits, max_relative_error

TOL = 1e-4
TINY = dict(TINY_GEOMETRY, depth=2)
IMG = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def _timm(name: str, **kw: object) -> Callable[[], torch.nn.Module]:
    return lambda: timm.create_model(name, pretrained=False, num_classes=0, **{**TINY, **kw})


TIMM_CASES = {
    # name: (builder, adapter, prefix tokens)
    "vit": (_timm("vit_tiny_patch16_224"), "timm-vit", 1),
    "deit-distilled": (_timm("deit_tiny_distilled_patch16_224"), "timm-vit", 2),
    "dino": (_timm("vit_small_patch16_224.dino"), "timm-vit", 1),
    "clip-tower": (_timm("vit_base_patch16_clip_224"), "timm-vit", 1),
    "dinov2-registers": (_timm("vit_small_patch14_reg4_dinov2", patch_size=8), "timm-vit", 5),
    "eva": (lambda: Eva(**TINY, num_classes=0, use_rot_pos_emb=False, qkv_bias=True), "timm-eva", 1),
    "eva-separate-qkv": (
        lambda: Eva(**TINY, num_classes=0, use_rot_pos_emb=False, qkv_fused=False, qkv_bias=True),
        "timm-eva",
        1,
    ),
    "beit": (lambda: Beit(**TINY, num_classes=0, use_rel_pos_bias=True, init_values=0.1), "timm-beit", 1),
}


@pytest.mark.parametrize("case", list(TIMM_CASES))
@pytest.mark.parametrize("fused", [True, False], ids=["sdpa", "eager"])
def test_timm_adapter_reproduces_logits(case: str, fused: bool) -> None:
    build, adapter, n_prefix = TIMM_CASES[case]
    model = randomise_(build())
    for blk in model.blocks:
        blk.attn.fused_attn = fused
    qk = extract_qk(model, case)
    assert qk.adapter == adapter
    assert (qk.n_layers, qk.n_heads, qk.d_head, qk.d_model) == (2, 4, 16, 64)
    assert qk.layout.n_prefix == n_prefix and qk.layout.grid == (4, 4)
    assert qk.b_q.abs().sum() > 0  # random biases: the check below includes them
    tokens, logits = capture_logits(model, qk, IMG)
    if not fused and case == "beit":  # eager BEiT adds its relative position bias before the softmax
        logits = [lg - blk.attn._get_rel_pos_bias().double() for lg, blk in zip(logits, model.blocks, strict=True)]
    assert tokens[0].shape == (2, n_prefix + 16, 64)
    assert max_relative_error(qk, tokens, logits) < TOL


def test_timm_adapter_rejects_qk_norm_other_than_layer_norm() -> None:
    """qk_norm=True with a LayerNorm is exact (test_families); with another norm it is refused in one line."""
    from timm.layers import RmsNorm

    from qkdissect.errors import UnsupportedModelError

    model = timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, qk_norm=True,
                              norm_layer=RmsNorm, **TINY)  # fmt: skip
    with pytest.raises(UnsupportedModelError, match="normalises q and k with RmsNorm: only a LayerNorm"):
        extract_qk(model)


def test_beit_k_bias_is_zero_and_q_bias_read() -> None:
    model = randomise_(Beit(**TINY, num_classes=0, init_values=0.1))
    qk = extract_qk(model)
    assert torch.equal(qk.b_k, torch.zeros_like(qk.b_k))
    assert torch.equal(qk.layers[0].b_q.flatten(), model.blocks[0].attn.q_bias.detach())


HF_KW = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, image_size=32, patch_size=8)
HF_CASES = {
    "vit": (lambda: ViTModel(ViTConfig(**HF_KW, intermediate_size=128)), "hf-vit", 1),
    "vit-classifier": (lambda: ViTForImageClassification(ViTConfig(**HF_KW, intermediate_size=128)), "hf-vit", 1),
    "deit-distilled": (lambda: DeiTModel(DeiTConfig(**HF_KW, intermediate_size=128)), "hf-deit", 2),
    "dinov2": (lambda: Dinov2Model(Dinov2Config(**HF_KW)), "hf-dinov2", 1),
    "clip-vision": (
        lambda: CLIPVisionModel(CLIPVisionConfig(**HF_KW, intermediate_size=128)),
        "hf-clip_vision_model",
        1,
    ),
    "clip-full": (
        lambda: CLIPModel(
            CLIPConfig(
                vision_config=dict(**HF_KW, intermediate_size=128),
                text_config=dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64),
            )
        ),
        "hf-clip_vision_model",
        1,
    ),
}


@pytest.mark.parametrize("case", list(HF_CASES))
@pytest.mark.parametrize("impl", ["sdpa", "eager"])
def test_hf_adapter_reproduces_logits(case: str, impl: str) -> None:
    build, adapter, n_prefix = HF_CASES[case]
    model = build()
    model.set_attn_implementation(impl)
    randomise_(model)
    qk = extract_qk(model, case)
    assert qk.adapter == adapter
    assert (qk.n_layers, qk.n_heads, qk.d_head, qk.d_model) == (2, 4, 16, 64)
    assert qk.layout.n_prefix == n_prefix and qk.layout.grid == (4, 4)
    runner = model.vision_model if case == "clip-full" else model
    tokens, logits = capture_logits(runner, qk, pixel_values=IMG)
    assert tokens[0].shape == (2, n_prefix + 16, 64)
    assert max_relative_error(qk, tokens, logits) < TOL


def test_hf_head_split_matches_model() -> None:
    """Head h of the HF query projection is output rows h*d_head:(h+1)*d_head."""
    model = randomise_(ViTModel(ViTConfig(**HF_KW, intermediate_size=128)))
    qk = extract_qk(model)
    layer = model.layers[0] if hasattr(model, "layers") else model.encoder.layer[0]
    attn = layer.attention
    q = getattr(attn, "q_proj", None) or attn.attention.query
    assert torch.equal(qk.layers[0].w_q[2], q.weight[32:48].detach())


# ---------------------------------------------------------------------------------------- real weights
@pytest.mark.assets
@pytest.mark.parametrize("img_size", [224, 518])
def test_real_dinov2_timm_reproduces_logits(dinov2_file, photos, img_size: int) -> None:
    qk, loaded = load_qk(f"timm:vit_small_patch14_dinov2@{dinov2_file}?img_size={img_size}")
    assert loaded.weights_sha256.startswith("20f14f60")
    assert qk.layout.grid == (img_size // 14, img_size // 14)
    x = photos if img_size == 224 else torch.nn.functional.interpolate(photos, size=518, mode="bilinear")
    tokens, logits = capture_logits(loaded.model, qk, x)
    assert max_relative_error(qk, tokens, logits) < TOL


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
