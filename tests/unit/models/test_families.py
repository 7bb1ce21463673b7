"""Every vision family of ``qkdissect models --families``, exactly: on a stand-in of a released checkpoint's
configuration (its library's own class, the checkpoint's heads, head size, prefix tokens, norms and biases; one
block, a 3 x 3 patch grid, random weights, float64), the modes of ``qk.modes`` with the bias terms reconstruct the
model's own attention logits for every pair of tokens, prefix tokens (CLS, distillation, registers) included. q
and k are the ones the model hands to ``F.scaled_dot_product_attention`` (after its projections, biases and
norms); the scale it passes is the adapter's. timm's ``qk_norm=True`` (a LayerNorm on each head's q and k) is
reconstructed from the modes of W_q^T C diag(g_q g_k) C W_k, the per-pair factor sigma(q_i) sigma(k_j) and the
beta terms."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
import torch

import qkdissect as qk
from qkdissect.models import extract_qk as adapt
from qkdissect.passes.hooks import layer_token_hooks

#: the grid of the stand-ins (patches per side)
SIDE = 3


def _timm(arch: str, patch: int = 16, **kw: Any) -> Callable[[], torch.nn.Module]:
    import timm

    return lambda: timm.create_model(arch, pretrained=False, num_classes=0, depth=1, img_size=SIDE * patch, **kw)


def _hf(model: str, config: str, patch: int = 16, **kw: Any) -> Callable[[], torch.nn.Module]:
    import transformers

    def build() -> torch.nn.Module:
        cfg = getattr(transformers, config)(num_hidden_layers=1, image_size=SIDE * patch, patch_size=patch, **kw)
        return getattr(transformers, model)(cfg).eval()

    return build


_BASE = {"hidden_size": 768, "num_attention_heads": 12, "intermediate_size": 3072}  # ViT-B: 12 heads of 64
_SMALL = {"hidden_size": 384, "num_attention_heads": 6, "intermediate_size": 1536}  # ViT-S: 6 heads of 64
#: family -> (builder, prefix tokens); the hub checkpoint each configuration is read from is named
VISION: dict[str, tuple[Callable[[], torch.nn.Module], int]] = {
    "timm-vit": (_timm("vit_base_patch16_224"), 1),
    "timm-deit-distilled": (_timm("deit_small_distilled_patch16_224"), 2),  # CLS + distillation token
    "timm-dino": (_timm("vit_small_patch16_224.dino"), 1),
    "timm-clip": (_timm("vit_base_patch16_clip_224"), 1),  # a LayerNorm before the blocks, quick GELU
    "timm-dinov2": (_timm("vit_small_patch14_dinov2", 14), 1),  # layer scale
    "timm-dinov2-registers": (_timm("vit_small_patch14_reg4_dinov2", 14), 5),  # CLS + 4 registers
    "timm-siglip": (_timm("vit_base_patch16_siglip_224"), 0),  # no CLS; an attention-pool head
    "timm-beit": (_timm("beit_base_patch16_224"), 1),  # q bias, no k bias, relative position bias
    "timm-qk-norm": (_timm("vit_small_patch16_224", qk_norm=True), 1),  # a LayerNorm on each head's q and k
    "hf-vit": (_hf("ViTModel", "ViTConfig", **_BASE, qkv_bias=True, layer_norm_eps=1e-12), 1),  # vit-base-patch16
    "hf-deit": (_hf("DeiTModel", "DeiTConfig", **_BASE, layer_norm_eps=1e-12), 2),  # deit-base-distilled
    "hf-dino": (_hf("ViTModel", "ViTConfig", **_SMALL, qkv_bias=True), 1),  # facebook/dino-vits16
    "hf-clip": (_hf("CLIPVisionModel", "CLIPVisionConfig", 32, **_BASE, hidden_act="quick_gelu"), 1),  # ViT-B/32
    "hf-dinov2": (_hf("Dinov2Model", "Dinov2Config", 14, hidden_size=384, num_attention_heads=6,
                      layer_norm_eps=1e-6), 1),  # facebook/dinov2-small
    "hf-siglip": (_hf("SiglipVisionModel", "SiglipVisionConfig", **_BASE, layer_norm_eps=1e-6), 0),  # siglip-base
}  # fmt: skip


def stand_in(family: str) -> torch.nn.Module:
    """The family's model, every parameter moved off its initial value (biases, norms' gains and betas, layer
    scales, position tables), float64, eval, attention through F.scaled_dot_product_attention."""
    torch.manual_seed(0)
    model = VISION[family][0]()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    if hasattr(model, "set_attn_implementation"):
        model.set_attn_implementation("sdpa")
    for block in getattr(model, "blocks", []):
        block.attn.fused_attn = True
    return model.double().eval()


@contextmanager
def captured(model: Any, qkw: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, list]]:
    """Per layer: the tokens W_q and W_k see (the pipeline's own hooks), the q and k (and scale) the attention
    hands to F.scaled_dot_product_attention (self-attention calls only: a pooling head's one query is left out),
    and, for a norm on q and k, its input (the raw projections)."""
    got: dict[str, list] = {"x": [None] * qkw.n_layers, "qk": [], "raw": []}
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def capture(q: torch.Tensor, k: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
        if q.shape[-2] == k.shape[-2]:
            got["qk"].append((q.detach()[0].clone(), k.detach()[0].clone(), kw.get("scale")))
        return sdpa(q, k, *args, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", capture)
    hooks = []
    for layer in qkw.layers:
        for name in ("q_norm", "k_norm") if layer.beta_q is not None else ():
            hook = getattr(layer.attention, name).register_forward_pre_hook(
                lambda _m, args: got["raw"].append(args[0].detach()[0].clone())
            )
            hooks.append(hook)
    try:
        with layer_token_hooks(qkw, "post-norm", lambda i, t: got["x"].__setitem__(i, t.detach()[0])):
            yield got
    finally:
        for h in hooks:
            h.remove()


def reconstructed(model: Any, qkw: Any, x: np.ndarray, raw: list[torch.Tensor]) -> np.ndarray:
    """(layer, head, query, key) logits from the modes, the bias terms, and for a LayerNorm on q and k the
    per-pair factor and the beta terms."""
    ds = qk.modes(model, device="cpu")
    u, s, v = ds.U.values, ds.S.values, ds.V.values  # (layer, head, dim, mode)
    w_q, w_k, b_q, b_k = (getattr(qkw, n).double().numpy() for n in ("w_q", "w_k", "b_q", "b_k"))
    logits = np.einsum("ltd,lhdm,lhm,lse,lhem->lhts", x, u, s, x, v, optimize=True)
    logits += np.einsum("lhe,lhed,ltd->lht", b_q, w_k, x)[:, :, None, :]  # b_q^T W_k x_j
    logits += np.einsum("ltd,lhed,lhe->lht", x, w_q, b_k)[:, :, :, None]  # x_i^T W_q^T b_k
    logits += np.einsum("lhe,lhe->lh", b_q, b_k)[:, :, None, None]
    if not raw:
        return logits
    # LN(q) = q' / sigma(q) + beta_q with q' = G C (W_q x + b_q): the modes give q'_i . k'_j
    eps = qkw.qk_norm["eps"]
    sig_q, sig_k = (
        np.stack([(r.double().var(-1, unbiased=False) + eps[side]).sqrt().numpy() for r in raw[i::2]])
        for i, side in enumerate("qk")
    )  # (layer, head, token)
    beta_q, beta_k = (np.stack([getattr(a, n).double().numpy() for a in qkw.layers]) for n in ("beta_q", "beta_k"))
    q = np.einsum("lhed,ltd->lhte", w_q, x) + b_q[:, :, None]  # q'_i
    k = np.einsum("lhed,ltd->lhte", w_k, x) + b_k[:, :, None]
    logits /= sig_q[..., :, None] * sig_k[..., None, :]
    logits += (np.einsum("lhe,lhte->lht", beta_q, k) / sig_k)[:, :, None, :]  # of the key
    logits += (np.einsum("lhte,lhe->lht", q, beta_k) / sig_q)[:, :, :, None]  # of the query
    return logits + np.einsum("lhe,lhe->lh", beta_q, beta_k)[:, :, None, None]


@pytest.mark.parametrize("family", list(VISION))
def test_vision_stand_ins_reconstruct_their_logits(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = stand_in(family)
    qkw = adapt(model)
    n_prefix = VISION[family][1]
    assert qkw.layout.n_prefix == n_prefix and qkw.layout.grid == (SIDE, SIDE) and qkw.d_head == 64
    assert float(np.abs(qkw.b_q.numpy()).max()) > 0  # the bias terms are exercised
    cfg = getattr(model, "config", None)
    size = cfg.image_size if cfg is not None else model.patch_embed.img_size
    image = torch.randn(1, 3, *np.broadcast_to(size, 2), generator=torch.Generator().manual_seed(1)).double()
    with captured(model, qkw, monkeypatch) as got, torch.no_grad():
        model.forward_features(image) if hasattr(model, "forward_features") else model(pixel_values=image)
    assert len(got["qk"]) == qkw.n_layers and got["qk"][0][0].shape[-2] == n_prefix + SIDE * SIDE
    assert [s or qkw.d_head**-0.5 for _, _, s in got["qk"]] == [a.scale for a in qkw.layers]
    want = np.stack([torch.einsum("hid,hjd->hij", q, k).numpy() for q, k, _ in got["qk"]])
    x = np.stack([t.numpy() for t in got["x"]])
    have = reconstructed(model, qkw, x, got["raw"])
    err = float((np.abs(have - want) / np.abs(want).max(axis=(2, 3), keepdims=True)).max())
    print(f"{family}: worst relative error {err:.2g} over {want.shape[1]} heads x {want.shape[2]}^2 pairs")
    assert err < 1e-5, err


def test_qk_norm_modes_are_centred_and_the_store_says_what_the_logits_carry() -> None:
    """timm qk_norm: the modes are those of W_q^T C diag(g_q g_k) C W_k (brute force), the store records the
    LayerNorm's factor and beta terms; a pass that computes logits from the weights without the norm is refused."""
    model = stand_in("timm-qk-norm")
    ds = qk.modes(model, device="cpu")
    block = model.blocks[0].attn
    w = block.qkv.weight.detach().reshape(3, 6, 64, 384)
    d = 64
    centre = torch.eye(d, dtype=torch.float64) - 1 / d
    gains = torch.diag(block.q_norm.weight.detach() * block.k_norm.weight.detach())
    full = torch.einsum("hed,ef,fg,gi,hic->hdc", w[0], centre, gains, centre, w[1]).numpy()
    u, s, v = ds.U.values[0], ds.S.values[0], ds.V.values[0]
    np.testing.assert_allclose(np.einsum("hdm,hm,hcm->hdc", u, s, v), full, atol=1e-9 * np.abs(full).max())
    assert ds.attrs["qk_norm"]["kind"] == "layer" and "beta" in ds.attrs["qk_norm"]
    assert any("LayerNorms" in n for n in ds.attrs["notes"])
    with pytest.raises(qk.errors.UnsupportedModelError, match=r"normalises q and k.*preference pass"):
        adapt(model).require_plain_logits("the preference pass")
