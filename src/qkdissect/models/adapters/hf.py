"""Hugging Face ViT / DeiT / Dinov2 / CLIP vision (and other encoders with q/k projections), BERT-style text
encoders (post-LayerNorm: the norm feeding layer i's attention is layer i-1's output LayerNorm, or the
embeddings' LayerNorm for layer 0), GPT-2-style decoders whose fused ``c_attn`` (a ``Conv1D``, ``x W + b``)
holds W_q, W_k, W_v side by side, GPT-NeoX (Pythia) whose fused ``query_key_value`` holds, per head, the rows of
q, k and v one after the other, and Llama-style decoders (Llama, Mistral, Qwen2, SmolLM, Gemma 3): rotary position
embeddings (:mod:`qkdissect.core.rotary`; GPT-NeoX turns only the first quarter of each head, Gemma 3's sliding
and global layers turn at their own frequencies) and grouped-query heads, each query head paired with its
key-value head as the model's ``repeat_kv`` pairs them (query head h reads key head h // (heads / key heads)).

QK-norm (Qwen3, OLMo 2, Gemma 3: q and k normalised by RMS norms with learned gains, Gemma's 1 + weight) is written
as the gains folded into W_q and W_k, and a positive factor per pair of tokens that the store records. A model
whose attention these cannot write exactly as ``(W_q x_i + b_q)^T R (W_k x_j + b_k)`` (times that factor) is
refused in one line: a LayerNorm on q and k, rotary embeddings of other families or layouts, with a scaling of q
and k (YaRN, LongRoPE) or one that changes with the sequence length (dynamic NTK), a soft cap on the logits."""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch
from torch import nn

from ...core.rotary import Rotary
from ...errors import UnsupportedModelError
from ..layernorm import rms_gains
from ..layout import prefix_kinds, rotary_group_notes
from ..qk import AttentionLayer, QKWeights, TokenLayout, as_pair, head_bias, split_heads

_HF_Q = ("q_proj", "query")


_HF_K = ("k_proj", "key")


_HF_NORM = ("layernorm_before", "norm1", "layer_norm1", "input_layernorm")
#: decoders whose rotary embedding is transformers' rotate-half RoPE (of the whole head, or of its first
#: ``rotary_dim`` dimensions), checked against the model's own attention logits (tests): model_type -> family
ROTARY_FAMILIES = {
    "llama": "Llama",
    "mistral": "Mistral",
    "qwen2": "Qwen2",
    "qwen3": "Qwen3",
    "olmo2": "OLMo 2",
    "gemma3_text": "Gemma 3",
    "gpt_neox": "GPT-NeoX",
}
#: rope types whose inv_freq is fixed once built and whose cos/sin are not scaled
_STATIC_ROPE = ("default", "linear", "llama3")


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


def _hf_layer(layer: nn.Module, n_heads: int, kv_heads: list[int]) -> tuple[AttentionLayer, dict[str, Any] | None]:
    """One layer's per-head W_q, W_k (each query head with its key-value head's W_k) and biases; with QK-norm,
    its gains folded in (diag(g_q) W_q, diag(g_k) W_k) and what the store records of it (else None)."""
    attn = _hf_attention(layer)
    if attn is None:
        raise UnsupportedModelError(f"no query/key projections (q_proj/k_proj or query/key) in {type(layer).__name__}")
    q = _find_child(attn, _HF_Q)
    k = _find_child(attn, _HF_K)
    assert isinstance(q, nn.Linear) and isinstance(k, nn.Linear)
    n_kv = max(kv_heads) + 1
    w_q, w_k = split_heads(q.weight, n_heads), split_heads(k.weight, n_kv)
    d_head = w_q.shape[1]
    if w_k.shape[1] != d_head:
        raise UnsupportedModelError(
            f"query heads of {d_head} dims but key heads of {w_k.shape[1]} in {type(attn).__name__}"
        )
    b_q, b_k = head_bias(q.bias, n_heads, d_head, w_q), head_bias(k.bias, n_kv, d_head, w_q)
    if getattr(attn, "attn_logit_softcapping", None) is not None:
        raise UnsupportedModelError(
            f"{type(attn).__name__} caps its logits (c tanh(a / c), attn_logit_softcapping): not a bilinear form"
        )
    gains = qk_norm_gains(attn, n_heads, n_kv, d_head)
    record = None
    if gains is not None:
        (g_q, g_k), record = gains
        w_q, b_q = g_q[:, :, None] * w_q, g_q * b_q
        w_k, b_k = g_k[:, :, None] * w_k, g_k * b_k
    scale = getattr(attn, "scaling", None) or getattr(attn, "scale", None) or d_head**-0.5
    index = torch.as_tensor(kv_heads)
    attention = AttentionLayer(
        w_q=w_q,
        w_k=w_k[index],
        b_q=b_q,
        b_k=b_k[index],
        scale=float(scale),
        norm=_find_child(layer, _HF_NORM),
        attention=attn,
    )
    return attention, record


def qk_norm_gains(
    attn: nn.Module, n_heads: int, n_kv: int, d_head: int
) -> tuple[tuple[torch.Tensor, torch.Tensor], dict[str, Any]] | None:
    """QK-norm (q and k normalised by an RMS norm with learned gains before the rotation and the dot product):
    the gains per head, (head, d_head) for q and (key head, d_head) for k, and what the store records; None
    without it. Each norm is probed (its output on constant and random vectors, float64): one that is not
    ``g * x / rms(x)`` (a LayerNorm's centring and beta) is refused in one line."""
    for name in ("q_layernorm", "k_layernorm"):
        if getattr(attn, name, None) is not None:
            raise UnsupportedModelError(f"{type(attn).__name__}.{name}: a LayerNorm on q and k is not supported yet")
    q_norm, k_norm = getattr(attn, "q_norm", None), getattr(attn, "k_norm", None)
    if q_norm is None and k_norm is None:
        return None
    if q_norm is None or k_norm is None:
        raise UnsupportedModelError(f"{type(attn).__name__} normalises only one of q and k: not supported")
    (g_q, over_q, form), (g_k, over_k, _) = _rms_gains(q_norm, n_heads, d_head), _rms_gains(k_norm, n_kv, d_head)
    record = {
        "kind": "rms",
        "over": {"q": over_q, "k": over_k},
        "gains": form,
        "factor": "the logit of tokens i, j is the modes' times 1 / (rms(W_q x_i + b_q) rms(W_k x_j + b_k)) (rms over "
        "the head's dimensions, or over all heads' where 'over' says so; the norms' eps inside): a positive factor "
        "of each pair, which the softmax sees and the modes do not",
    }
    return (g_q, g_k), record


def _rms_gains(norm: nn.Module, heads: int, d_head: int) -> tuple[torch.Tensor, str, str]:
    """(heads, d_head) gains of an RMS norm over one head (``head``) or over all heads at once (``all heads``),
    and how they are stored (``weight``, or ``1 + weight`` as Gemma's)."""
    weight = getattr(norm, "weight", None)
    size = int(weight.numel()) if isinstance(weight, torch.Tensor) else -1
    if not isinstance(weight, torch.Tensor) or size not in (d_head, heads * d_head):
        raise UnsupportedModelError(f"QK-norm {type(norm).__name__} of size {size}: neither a head ({d_head}) nor all")
    gains = rms_gains(norm, size)
    if gains is None:  # (some norms compute in float32: rms_gains allows for it)
        raise UnsupportedModelError(
            f"QK-norm {type(norm).__name__} is not an RMS norm with gains (g x / rms(x)): a LayerNorm's centring "
            "and beta are not decomposed yet"
        )
    w = weight.detach().double().cpu()
    form = "1 + weight" if torch.allclose(gains, 1 + w, rtol=1e-6) and not torch.allclose(gains, w) else "weight"
    gains = gains.to(weight.dtype)
    if size == d_head:
        return gains.expand(heads, d_head).clone(), "head", form
    return gains.reshape(heads, d_head).clone(), "all heads", form


def _kv_heads(cfg: Any, n_heads: int) -> list[int]:
    """The key-value head of each query head: h // (heads / key-value heads), as transformers' ``repeat_kv``."""
    n_kv = int(getattr(cfg, "num_key_value_heads", None) or n_heads)
    if n_kv < 1 or n_heads % n_kv:
        raise UnsupportedModelError(f"{n_heads} query heads cannot share {n_kv} key-value heads evenly")
    return [h // (n_heads // n_kv) for h in range(n_heads)]


def _rotary(model: nn.Module, cfg: Any, d_head: int, layers: list[AttentionLayer]) -> Rotary | None:
    """The model's rotary embedding (its ``rotary_emb`` module's own frequencies: the first ``rotary_dim``
    dimensions of a head turn, GPT-NeoX's partial rotary; one table per layer type, Gemma 3's sliding and global
    layers), or None; refused (one line) where it is not the rotate-half RoPE of a family checked against its own
    logits."""
    found = [m for name, m in model.named_modules() if name.split(".")[-1] == "rotary_emb"]
    if not found:
        return None
    family = ROTARY_FAMILIES.get(str(cfg.model_type))
    if family is None:
        raise UnsupportedModelError(
            f"{cfg.model_type} rotates q and k by position (RoPE) in a way qkdissect has not checked against its "
            f"own attention logits; supported rotary families: {', '.join(ROTARY_FAMILIES.values())}"
        )
    emb = found[0]
    kinds = [str(getattr(a.attention, "layer_type", None)) for a in layers]
    if not hasattr(emb, "inv_freq"):  # one table per layer type (Gemma 3: sliding_attention, full_attention)
        tables = {k: _static_inv_freq(emb, cfg, k) for k in sorted(set(kinds))}
        per_layer = np.stack([tables[k] for k in kinds])[:, None]  # (layer, 1, planes)
        source = "; ".join(f"{k} layers: {_table(cfg, k)}" for k in tables)
        if all(np.array_equal(t, per_layer[0, 0]) for t in tables.values()):
            return Rotary(per_layer[0, 0], "rotate-half", 2 * per_layer.shape[-1], d_head, source=source)
        return Rotary(per_layer[..., None], "rotate-half", 2 * per_layer.shape[-1], d_head, source=source)
    inv_freq = _static_inv_freq(emb, cfg, None)
    return Rotary(inv_freq, "rotate-half", 2 * len(inv_freq), d_head)


def _static_inv_freq(emb: nn.Module, cfg: Any, layer_type: str | None) -> np.ndarray:
    """The frequencies of one rotary table (of a layer type, or the only one), refused where q and k are scaled
    or the frequencies change with the sequence length."""
    pre = f"{layer_type}_" if layer_type else ""
    types = getattr(emb, "rope_type", "default")
    rope_type = str(types.get(layer_type) if isinstance(types, dict) else types)
    scaling = float(getattr(emb, f"{pre}attention_scaling", 1.0))
    if rope_type not in _STATIC_ROPE or scaling != 1.0:
        raise UnsupportedModelError(
            f"{cfg.model_type}: rope_type {rope_type!r} (q and k scaled by {scaling}, or frequencies that change "
            f"with the sequence length) is not supported; supported: {', '.join(_STATIC_ROPE)}"
        )
    table = getattr(emb, f"{pre}inv_freq", None)
    if not isinstance(table, torch.Tensor):
        raise UnsupportedModelError(f"{cfg.model_type}: {type(emb).__name__} has no frequencies {pre}inv_freq")
    return table.detach().double().cpu().numpy()


def _table(cfg: Any, layer_type: str) -> str:
    """A layer type's rotary parameters as its configuration gives them (theta, and any static scaling)."""
    params = (getattr(cfg, "rope_parameters", None) or {}).get(layer_type) or {}
    return ", ".join(f"{k} {v:g}" if isinstance(v, float | int) else f"{k} {v}" for k, v in sorted(params.items()))


def _hf_layout(model: Any) -> TokenLayout:
    cfg = model.config
    emb = getattr(model, "embeddings", None)
    has = {n: getattr(emb, n, None) is not None for n in ("cls_token", "class_embedding", "distillation_token")}
    reg = getattr(emb, "register_tokens", None)
    n_reg = int(reg.shape[1]) if reg is not None else 0
    kinds = prefix_kinds(has["cls_token"] + has["class_embedding"], has["distillation_token"], n_reg)
    img = as_pair(getattr(cfg, "image_size", None))
    patch = as_pair(getattr(cfg, "patch_size", None))
    grid = (img[0] // patch[0], img[1] // patch[1]) if img and patch else None
    return TokenLayout(n_prefix=len(kinds), grid=grid, patch_size=patch, prefix_kinds=kinds)


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


def _neox_layers(model: nn.Module) -> list[AttentionLayer] | None:
    """GPT-NeoX (Pythia): ``query_key_value`` (an nn.Linear) holds, per head, d_head rows of q, then of k, then of
    v (the model views its output as (head, 3 d_head) and splits the last axis in three); None for other models."""
    blocks = getattr(model, "layers", None)
    if not (isinstance(blocks, nn.ModuleList) and len(blocks) and hasattr(blocks[0], "attention")):
        return None
    if not hasattr(blocks[0].attention, "query_key_value"):
        return None
    out = []
    for block in blocks:
        attn: Any = block.attention
        d_head = int(attn.head_size)
        qkv = attn.query_key_value
        w = qkv.weight.detach().reshape(-1, 3, d_head, qkv.weight.shape[1])  # (head, q|k|v, d_head, d_model)
        b = qkv.bias.detach().reshape(-1, 3, d_head) if qkv.bias is not None else torch.zeros(w.shape[:3])
        norm = block.input_layernorm
        assert isinstance(norm, nn.Module)
        out.append(AttentionLayer(w_q=w[:, 0].clone(), w_k=w[:, 1].clone(), b_q=b[:, 0].clone(),
                                  b_k=b[:, 1].clone(), scale=float(attn.scaling), norm=norm,
                                  attention=attn))  # fmt: skip
    return out


def _text_layout(causal: bool) -> TokenLayout:
    return TokenLayout(n_prefix=0, grid=None, patch_size=None, causal=causal)


def adapt_hf(model: Any, model_id: str) -> QKWeights:
    """Hugging Face ViT / DeiT / Dinov2 / CLIP vision (and other encoders with q/k projections), BERT-style text
    encoders, and GPT-2-style decoders (fused ``c_attn``)."""
    if getattr(model, "vision_model", None) is not None:  # CLIPModel -> its vision tower
        model = model.vision_model
    task_wrapped = ("vit", "deit", "dinov2", "dinov2_with_registers", "bert", "roberta", "transformer", "gpt_neox")
    for attr in task_wrapped:  # *For... task wrappers
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
    kv_heads = _kv_heads(cfg, n_heads)
    layers, qk_norm = _neox_layers(model), None
    if layers is None:
        hf_layers = _hf_layers(model)
        built = [_hf_layer(layer, n_heads, kv_heads) for layer in hf_layers]
        layers, qk_norm = [a for a, _ in built], built[0][1]
        norms = _post_ln_norms(model, hf_layers, [a.norm for a in layers])
        layers = [dataclasses.replace(a, norm=n) for a, n in zip(layers, norms, strict=True)]
    is_text = getattr(cfg, "image_size", None) is None and getattr(cfg, "vocab_size", None) is not None
    layout = _text_layout(_causal(model, cfg)) if is_text else _hf_layout(model)
    rotary = _rotary(model, cfg, int(layers[0].w_q.shape[1]), layers)
    grouped = kv_heads if len(set(kv_heads)) < n_heads else None
    notes = rotary_group_notes(rotary, kv_heads) + _qk_norm_notes(qk_norm) + _attention_notes(layers, cfg)
    return QKWeights(model_id, f"hf-{cfg.model_type}", layers, layout, notes, model, grouped, rotary, qk_norm)


def _causal(model: nn.Module, cfg: Any) -> bool:
    """A decoder: BERT-style configs say so (is_decoder), Llama-style models are decoders by their kind, unless
    their configuration makes them bidirectional (EmbeddingGemma)."""
    settings = cfg.to_dict()
    if settings.get("use_bidirectional_attention"):
        return False
    decoder = settings.get("is_decoder", False)
    return bool(decoder) or str(cfg.model_type) in ROTARY_FAMILIES or type(model).__name__.endswith("ForCausalLM")


QK_NORM_NOTE = (
    "QK-norm: q and k are normalised by RMS norms with learned gains before the dot product; the modes are those "
    "of W_q^T diag(g_q) R diag(g_k) W_k, and each pair's logit also carries a positive factor "
    "1 / (rms(q_i) rms(k_j)) (attrs.qk_norm)"
)


def _qk_norm_notes(qk_norm: dict[str, Any] | None) -> list[str]:
    if qk_norm is None:
        return []
    if qk_norm.get("gains") == "1 + weight":
        return [QK_NORM_NOTE, "the QK-norm gains are 1 + the norms' weight (as Gemma stores them)"]
    return [QK_NORM_NOTE]


def _attention_notes(layers: list[AttentionLayer], cfg: Any) -> list[str]:
    """What else the attention does that the modes leave out: a scale of q . k other than 1/sqrt(d_head) (Gemma 3:
    query_pre_attn_scalar ** -0.5; the modes are of the unscaled logit), a sliding window (a mask)."""
    notes = []
    d_head = int(layers[0].w_q.shape[1])
    scales = sorted({a.scale for a in layers})
    if any(not math.isclose(v, d_head**-0.5, rel_tol=1e-9) for v in scales):
        by = getattr(cfg, "query_pre_attn_scalar", None)
        why = f" (query_pre_attn_scalar {by:g} ** -0.5)" if isinstance(by, int | float) else ""
        notes.append(f"the model scales q . k by {', '.join(f'{v:.6g}' for v in scales)}{why}, not 1/sqrt(d_head) "
                     f"= {d_head**-0.5:.6g}; the modes are of the unscaled logit")  # fmt: skip
    windows = {i: int(w) for i, a in enumerate(layers) if (w := getattr(a.attention, "sliding_window", None))}
    if windows:
        notes.append(f"sliding window: in layers {', '.join(map(str, windows))} a query sees only the keys within "
                     f"{', '.join(map(str, sorted(set(windows.values()))))} tokens (a mask); the logits of the pairs "
                     "it keeps are the modes'")  # fmt: skip
    return notes
