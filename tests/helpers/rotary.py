"""Rotary models checked pair by pair: stand-ins of the rotary families (transformers' causal language models,
timm's 2-D rope vision transformers) and the reconstruction of a model's own logits from its modes at every
offset."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

import qkdissect as qk
from qkdissect.core.rotary import Rotary, rotated_bias, rotated_keys
from qkdissect.models import extract_qk as adapt


@contextmanager
def captured_qk(model: Any) -> Iterator[dict[int, tuple[torch.Tensor, torch.Tensor, float | None]]]:
    """The model's own q and k of every layer, as its attention gets them (after the projections, the biases, the
    norms and the rotation; key heads not yet repeated), and the scale it multiplies q . k by, through an attention
    function registered with transformers."""
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    got: dict[int, tuple[torch.Tensor, torch.Tensor, float | None]] = {}

    def capture(module: Any, query: torch.Tensor, key: torch.Tensor, *args: Any, **kw: Any) -> Any:
        got[int(module.layer_idx)] = (query.detach().clone(), key.detach().clone(), kw.get("scaling"))
        return sdpa_attention_forward(module, query, key, *args, **kw)

    AttentionInterface.register("qkdissect_capture", capture)
    before = model.config._attn_implementation
    model.set_attn_implementation("qkdissect_capture")
    try:
        yield got
    finally:
        model.set_attn_implementation(before)


def norm_outputs(model: Any, ids: torch.Tensor) -> tuple[dict[int, torch.Tensor], dict[int, tuple], dict]:
    """The tokens W_q and W_k see in each layer (the attention's input: its norm's output, or the residual stream
    of a post-norm block as OLMo 2's), the model's q and k as its attention gets them, and its q and k
    projections before any norm (for QK-norm's per-pair factor)."""
    qkw = adapt(model)
    xs: dict[int, torch.Tensor] = {}
    proj: dict[tuple[int, str], torch.Tensor] = {}

    def keep(key: Any, store: dict) -> Any:
        return lambda _m, _i, out: store.__setitem__(key, out.detach()[0].double())

    def seen(i: int) -> Any:  # the attention's input: the tokens its q and k projections read
        def hook(_m: Any, args: tuple, kwargs: dict) -> None:
            xs[i] = (args[0] if args else kwargs["hidden_states"]).detach()[0].double()

        return hook

    hooks = []
    for i, layer in enumerate(qkw.layers):
        hooks.append(layer.attention.register_forward_pre_hook(seen(i), with_kwargs=True))
        for side in ("q_proj", "k_proj") if qkw.qk_norm is not None else ():
            hooks.append(getattr(layer.attention, side).register_forward_hook(keep((i, side), proj)))
    try:
        with captured_qk(model) as got, torch.no_grad():
            model(input_ids=ids)
    finally:
        for h in hooks:
            h.remove()
    assert len(xs) == len(got) == qkw.n_layers
    assert [got[i][2] for i in range(qkw.n_layers)] == [a.scale for a in qkw.layers]  # the model's own scale
    return xs, got, proj


def qk_norm_factor(model: Any, proj: dict, kv_heads: list[int]) -> np.ndarray:
    """(layer, head, query, key) rms(q_i) rms(k_j) of the model's own projections, with its norms' eps: the
    factor QK-norm divides each logit by."""
    qkw = adapt(model)
    out = []
    for i, layer in enumerate(qkw.layers):
        rms = {}
        for side, norm in (("q_proj", layer.attention.q_norm), ("k_proj", layer.attention.k_norm)):
            x = proj[(i, side)]  # (T, heads * d_head)
            eps = float(getattr(norm, "variance_epsilon", getattr(norm, "eps", 0.0)))
            by_head = x.reshape(x.shape[0], -1, qkw.d_head)
            per_head = qkw.qk_norm["over"][side[0]] == "head"
            r = by_head.pow(2).mean(-1) if per_head else x.pow(2).mean(-1, keepdim=True).expand(-1, by_head.shape[1])
            rms[side] = (r + eps).sqrt().T.numpy()  # (heads, T)
        k = rms["k_proj"][kv_heads]
        out.append(rms["q_proj"][:, :, None] * k[:, None, :])
    return np.stack(out)


def model_logits(got: dict[int, tuple], kv_heads: list[int]) -> np.ndarray:
    """(layer, head, query, key) q . k of the model's own rotated q and k, each query head with its key head."""
    out = []
    for layer in sorted(got):
        q, k = (t[0].double() for t in got[layer][:2])  # (heads, T, d_head), (kv heads, T, d_head)
        out.append(torch.einsum("hid,hjd->hij", q, k[torch.as_tensor(kv_heads)]).numpy())
    return np.stack(out)


def reconstructed(model: Any, xs: dict[int, torch.Tensor], n: int, causal: bool = False) -> np.ndarray:
    """(layer, head, query, key) logits from the modes at every offset d = i - j (``causal``: d >= 0 only, the
    pairs a decoder's mask keeps; the others are 0), plus the bias terms at that offset (b_q^T R W_k x_j,
    x_i^T W_q^T R b_k, b_q^T R b_k), without the 1/sqrt(d_head) scale."""
    qkw = adapt(model)
    x = torch.stack([xs[i] for i in range(qkw.n_layers)]).numpy()  # (layer, T, d_model)
    w_q, b_q, b_k = (getattr(qkw, name).double().numpy() for name in ("w_q", "b_q", "b_k"))
    w_k = qkw.w_k.double().numpy()
    out = np.zeros((qkw.n_layers, qkw.n_heads, n, n))
    for d in range(0 if causal else -(n - 1), n):
        ds = qk.modes(model, offset=d, device="cpu")
        u, s, v = ds.U.values, ds.S.values, ds.V.values  # (layer, head, dim, mode)
        qs = np.einsum("ltd,lhdm->lhtm", x, u) * s[:, :, None, :]
        ks = np.einsum("ltd,lhdm->lhtm", x, v)
        full = np.einsum("lhim,lhjm->lhij", qs, ks)
        rk = rotated_keys(w_k, qkw.rotary, d) if qkw.rotary is not None else w_k  # (layer, head, d_head, d_model)
        rbk = rotated_bias(b_k, qkw.rotary, d) if qkw.rotary is not None else b_k  # R(-d) b_k
        key_bias = np.einsum("lhe,lhed,ltd->lht", b_q, rk, x)  # b_q^T R W_k x_j
        query_bias = np.einsum("ltd,lhed,lhe->lht", x, w_q, rbk)  # x_i^T W_q^T R b_k
        const = np.einsum("lhe,lhe->lh", b_q, rbk)
        full = full + key_bias[:, :, None, :] + query_bias[:, :, :, None] + const[:, :, None, None]
        i = np.arange(n)
        j = i - d
        ok = (j >= 0) & (j < n)
        out[:, :, i[ok], j[ok]] = full[:, :, i[ok], j[ok]]
    return out


def assert_reconstructs(model: Any, ids: torch.Tensor, causal: bool = False) -> float:
    """Every pair of tokens (``causal``: every pair a decoder's mask keeps, key j <= query i), every head and
    layer: the modes' logits equal the model's own; returns the worst relative error (to the largest logit of its
    head)."""
    model = model.double().eval()
    xs, got, proj = norm_outputs(model, ids)
    qkw = adapt(model)
    kv = qkw.kv_heads or list(range(qkw.n_heads))
    want = model_logits(got, kv)
    if qkw.qk_norm is not None:  # the modes give the logit times the per-pair factor the store records
        want = want * qk_norm_factor(model, proj, kv)
    have = reconstructed(model, xs, ids.shape[1], causal)
    if causal:
        want = np.tril(want)
    scale = np.abs(want).max(axis=(2, 3), keepdims=True)
    err = float((np.abs(have - want) / scale).max())
    assert err < 1e-5, err
    return err


def language_stand_in(model_type: str, **cfg: Any) -> Any:
    """A transformers model of the family's class with its real configuration's structure, small and random."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.for_model(model_type, vocab_size=97, num_hidden_layers=2, pad_token_id=0, **cfg)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(config)
    with torch.no_grad():
        for p in model.parameters():  # biases too: they are zeros at init
            p.add_(torch.randn_like(p) * 0.05)
    return model


#: family -> (timm architecture, its patch size)
FAMILIES = {
    "dinov3": ("vit_small_patch16_dinov3", 16),  # CLS + 4 registers, rotate-half, normalised coordinates
    "eva02": ("eva02_tiny_patch14_224", 14),  # interleaved, index rescaled to its 16 x 16 reference grid
    "rope-vit-axial": ("vit_small_patch16_rope_224", 16),  # interleaved, plain index, 'xy' channels
    "rope-vit-mixed": ("vit_small_patch16_rope_mixed_224", 16),  # learned frequencies per layer and head
    "pe": ("vit_pe_core_small_patch16_384", 16),  # index + 1, rescaled to 24 x 24, 'xy' channels
}
#: the patch grid of the reconstructions: not square, so that rows and columns cannot be confused; every offset
#: (dy, dx) of it is one call of qk.modes
GRID = (2, 3)


def image_stand_in(family: str, grid: tuple[int, int] = GRID, seed: int = 0) -> Any:
    """timm's own model of the family's architecture, its configuration's heads and width, 2 blocks, an image of
    ``grid`` patches, random weights (every parameter moved off its initial value: biases, layer scales and mixed
    frequencies too), float64, eval."""
    import timm

    arch, patch = FAMILIES[family]
    torch.manual_seed(seed)
    img_size = (grid[0] * patch, grid[1] * patch)
    model = timm.create_model(arch, pretrained=False, num_classes=0, depth=2, img_size=img_size)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    return model.double().eval()


def token_positions(rot: Rotary, n_prefix: int, grid: tuple[int, int]) -> np.ndarray:
    """(token, 2) grid position of every token: the prefix tokens at the unrotated position, then the patches in
    row-major order."""
    patches = np.stack(np.meshgrid(np.arange(grid[0]), np.arange(grid[1]), indexing="ij"), -1).reshape(-1, 2)
    return np.concatenate([np.tile(np.round(rot.unrotated_position, 9), (n_prefix, 1)), patches]).astype(float)
