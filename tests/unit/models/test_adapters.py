"""Every adapter reproduces its model's own pre-softmax attention logits: on tiny random-initialised models
of each family (the real DINOv2-S/14 with real photographs: tests/integration/test_adapters.py)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

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

from qkdissect.models import extract_qk
from tests.helpers import REPO, make_tiny_vit, randomise_
from tests.helpers import TINY as TINY_GEOMETRY
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


def test_a_timm_models_passes_never_import_transformers(tmp_path: Path) -> None:
    """Telling a Hugging Face model from a timm one (the adapter, the preprocessing) imports nothing: a timm model's
    job does not pay for transformers' import (1.3 s), and a Hugging Face model is still told apart."""
    from qkdissect.models.sources.base import is_hf_model

    spec = make_tiny_vit(tmp_path, depth=1)
    check = (
        "import sys; from qkdissect.models import load_qk, preprocess_for; "
        "qk, loaded = load_qk(sys.argv[1]); preprocess_for(loaded); "
        "print(qk.n_layers, 'transformers' in sys.modules)"
    )
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "QKDISSECT_DATA": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", check, spec], capture_output=True, text=True, timeout=300, env=env)
    assert r.stdout.split() == ["1", "False"], r.stdout + r.stderr[-2000:]
    assert is_hf_model(ViTModel(ViTConfig(**HF_KW, intermediate_size=128)))
    assert not is_hf_model(_timm("vit_tiny_patch16_224")())
