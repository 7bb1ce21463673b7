"""A model's query and key weights read straight from its weights file (memory-mapped), without building the model
(and for a safetensors file without torch): what a modes job needs, in a fraction of the time of importing torch and
timm or transformers and loading the whole model.

It reads the files the adapters' models are loaded from, by a key map per family: the converted DINOv2-S/14
(``imgfocus:``, timm names: ``blocks.{i}.attn.qkv`` split in thirds), a timm ViT's own ``.safetensors`` file
(``timm:NAME@FILE``, for the architectures of :data:`TIMM_VITS`: their heads and token layout are the
architecture's, not the file's; every tensor of the file must be the one the built model takes, name and shape, as
loading checks it), Hugging Face ``save_pretrained`` files
(``hf:`` hub cache or directory, ``minilm:``, ``smollm2:``; ``model.safetensors``, or where a repository has only
that, ``pytorch_model.bin``, read with torch's restricted unpickler as transformers reads it, so that job imports
torch but not transformers) of ViT, DeiT, DINOv2, BEiT, CLIP (the image tower),
BERT-style and GPT-2-style models and Llama decoders at their default RoPE (its ``config.json`` gives the heads, the
key-value heads, the layers, the rotary base and the image geometry; a Llama's frequencies are computed with torch,
in transformers' float32 arithmetic, so its job imports torch but not transformers), and the paper's own
checkpoints, SimMIM (``simmim:``, mapped onto timm's Beit) and I-JEPA (``ijepa:FILE#part``: the encoder, the target
encoder or the predictor), unpickled with torch (weights only, memory-mapped: of a 10 GB I-JEPA file only the part's
query and key tensors are read) and checked against the model loading would build. Heads are split as the
adapters split them, so W_q and W_k are the adapters' bit for bit (tests/unit/models/test_weightfile.py). The weights
are checked as loading checks them: the file's sha256 (and, for the converted checkpoint, its tensor digest).

Anything else returns None, and the caller builds the model as before: another source (timm's hub weights,
another timm architecture), options in the spec (they change the model; a timm ViT's sizes,
``img_size``, ``patch_size``, ``embed_dim``, ``num_heads`` and ``depth``, are read with its file and checked against
it, and I-JEPA's ``heads`` splits its heads), a sharded checkpoint, a configuration without the values the key
map needs, a family not listed, a missing tensor, a dtype numpy cannot hold (bfloat16), files not converted or
extracted yet, or a hub model not in the cache. A ``config.json`` that is not JSON, or a weights file cut short,
is an error naming the file and the fix (building the model would fail on it too).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ..catalogue import KNOWN_MODELS
from ..core.rotary import Rotary
from ..errors import QKDissectError
from ..locations import IMGFOCUS_CHECKPOINT, MINILM_DIR, MINILM_NAME, SMOLLM2_DIR, SMOLLM2_NAME, data_dir
from ..util.hashing import sha256_file
from .hubcache import read_config, snapshot_revision
from .layout import REL_POS_NOTE, TokenLayout, as_pair, describe_qk, prefix_kinds, rotary_group_notes
from .pins import (
    IMGFOCUS_ARCH,
    IMGFOCUS_ORIGIN,
    IMGFOCUS_PATCH,
    IMGFOCUS_REVISION,
    MINILM_ORIGIN,
    MINILM_REVISION,
    MINILM_WEIGHTS_SHA256,
    SMOLLM2_ORIGIN,
    SMOLLM2_REVISION,
    SMOLLM2_SHA256,
    imgfocus_img_size,
    verified_minilm,
    verified_smollm2,
)
from .spec import ModelSpec, hf_spec, local_path, parse_options
from .tensorfile import (
    HF_WEIGHTS,
    MissingTensor,
    TensorFile,
    tensor_file,
    torch_checkpoint,
    verified_imgfocus,
)

#: what a folded store records of the norms of the families read from files: LayerNorms, but Llama's RMS norms
LAYER_NORM: dict[str, Any] = {"kind": "layernorm", "module": "LayerNorm", "centring": True}
#: the converted DINOv2-S/14 (timm ``vit_small_patch14_dinov2``): heads; its layout follows the spec's img_size
IMGFOCUS_HEADS = 6


def imgfocus_layout(s: ModelSpec) -> TokenLayout:
    """The class token and the patch grid at the spec's input size (224 px, 16 x 16, unless img_size says)."""
    side = imgfocus_img_size(s.options) // IMGFOCUS_PATCH
    patch = (IMGFOCUS_PATCH, IMGFOCUS_PATCH)
    return TokenLayout(n_prefix=1, grid=(side, side), patch_size=patch, prefix_kinds=("cls",))


@dataclass
class FileQK:
    """Query-key weights read from a file: (layer, head, d_head, d_model) W_q and W_k in the file's dtype, the
    gamma (layer, d_model) of the LayerNorms feeding them (None where the key map does not know them), the token
    layout, and what identifies the weights (as :class:`~qkdissect.models.sources.base.LoadedModel` does)."""

    spec: ModelSpec
    adapter: str
    w_q: np.ndarray
    w_k: np.ndarray
    gamma: np.ndarray | None
    layout: TokenLayout
    path: Path
    sha256: str
    revision: str | None
    origin: str
    notes: list[str] = field(default_factory=list)
    kv_heads: list[int] | None = None  # each query head's key-value head (grouped-query models)
    rotary: Rotary | None = None
    norm: dict[str, Any] = field(default_factory=lambda: dict(LAYER_NORM))  # the norms gamma is read from

    @property
    def shape(self) -> tuple[int, int, int, int]:
        n_layers, n_heads, d_head, d_model = self.w_q.shape
        return int(n_layers), int(n_heads), int(d_head), int(d_model)

    def describe(self) -> dict[str, Any]:
        """The provenance's ``model`` (less its key), as :meth:`~qkdissect.models.qk.QKWeights.describe`."""
        out = describe_qk(str(self.spec), self.adapter, self.shape, self.layout, self.notes)
        if self.kv_heads is not None:
            out["kv_heads"] = list(self.kv_heads)
        if self.rotary is not None:
            out["rotary"] = self.rotary.describe()
        return out

    def weights(self) -> dict[str, Any]:
        """The provenance's ``weights``, as :func:`~qkdissect.models.loading.describe_loaded`."""
        return {"spec": str(self.spec), "origin": self.origin, "path": str(self.path), "sha256": self.sha256,
                "revision": self.revision, "model_class": None,
                "read": f"W_q, W_k and the norms' gamma read from {self.path.name} (no model built)"}  # fmt: skip


def read_qk_file(spec: str | ModelSpec, folding: str = "raw") -> FileQK | None:
    """The query-key weights of ``spec`` read from its weights file, or None where only building the model
    gives them (see the module's docstring); ``folding`` other than "raw" needs the norms' gamma too."""
    s = light_spec(spec)
    if s is None or (s.options and s.source not in ("imgfocus", "timm", "ijepa")) or (s.part and s.source != "ijepa"):
        return None
    read = {"imgfocus": _imgfocus, "timm": _timm_file, "minilm": _hf_source, "hf": _hf_source,
            "smollm2": _hf_source, "ijepa": _ijepa, "simmim": _simmim}.get(s.source)  # fmt: skip
    got = read(s) if read is not None else None
    if got is None or (folding != "raw" and got.gamma is None):
        return None
    return got


def light_spec(spec: str | ModelSpec) -> ModelSpec | None:
    """A spec of a source this module reads (imgfocus, timm@FILE, minilm, smollm2, hf, ijepa, simmim), parsed as its
    source parses it; else None."""
    if isinstance(spec, ModelSpec):
        return spec
    if spec in KNOWN_MODELS:
        spec = KNOWN_MODELS[spec].spec
    source, sep, rest = spec.partition(":")
    if not sep:
        return hf_spec(spec, ()) if "/" in spec and not spec.startswith(("/", ".")) else None
    if source == "imgfocus" and "?" in rest and "#" not in rest:  # img_size: the layout's grid
        name, _, query = rest.partition("?")
        return ModelSpec(source, name, options=parse_options(query))
    if source == "timm" and "@" in rest and "#" not in rest:  # a timm architecture and its file (options after ?)
        rest, _, query = rest.partition("?")
        name, _, weights = rest.partition("@")
        return ModelSpec(source, name, local_path(weights, "timm weights file"), options=parse_options(query))
    if source in ("ijepa", "simmim"):  # a checkpoint (I-JEPA: its part after #, the head count after ?)
        from .sources import parse_spec

        return parse_spec(spec)
    if source not in ("imgfocus", "minilm", "smollm2", "hf") or "#" in rest or "?" in rest:
        return None
    return hf_spec(rest, ()) if source == "hf" else ModelSpec(source, rest)


def _heads(w: np.ndarray, n_heads: int) -> np.ndarray:
    """(heads * d_head, d_model) -> (head, d_head, d_model), as :func:`~qkdissect.models.qk.split_heads`."""
    out, d = w.shape
    if out % n_heads:
        raise MissingTensor(f"{out} outputs do not split into {n_heads} heads")
    return w.reshape(n_heads, out // n_heads, d)


def _stack(read: list[tuple[np.ndarray, np.ndarray]], n_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-layer (W_q, W_k) rows -> two (layer, head, d_head, d_model) arrays."""
    return np.stack([_heads(q, n_heads) for q, _ in read]), np.stack([_heads(k, n_heads) for _, k in read])


# --------------------------------------------------------------------------------------- converted DINOv2-S/14
def _imgfocus(s: ModelSpec) -> FileQK | None:
    path = data_dir() / IMGFOCUS_CHECKPOINT
    if s.name not in ("dinov2_vits14", IMGFOCUS_ARCH) or not path.is_file():
        return None  # (an unknown name is the loading path's error; a missing file it converts)
    t = verified_imgfocus(path)
    try:
        w_q, w_k, gamma = _timm_blocks(t, IMGFOCUS_HEADS)
    except MissingTensor:
        return None
    return FileQK(s, "timm-vit", w_q, w_k, gamma, imgfocus_layout(s), path, sha256_file(path), IMGFOCUS_REVISION,
                  IMGFOCUS_ORIGIN)  # fmt: skip


def _timm_blocks(t: TensorFile, n_heads: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """timm ``blocks.{i}``: the fused qkv's first and second thirds (no q_bias / qk_norm variants here)."""
    n_layers = len({k.split(".")[1] for k in t.keys if k.startswith("blocks.")})
    if any(".attn.q_norm." in k or ".attn.q_bias" in k for k in t.keys):
        raise MissingTensor("q_norm / q_bias: the adapter's path")
    rows = []
    for i in range(n_layers):
        w = t(f"blocks.{i}.attn.qkv.weight")
        a = w.shape[0] // 3
        rows.append((w[:a], w[a : 2 * a]))
    w_q, w_k = _stack(rows, n_heads)
    gamma = np.stack([t(f"blocks.{i}.norm1.weight") for i in range(n_layers)])
    return w_q, w_k, gamma


# ---------------------------------------------------------------------------------------------- timm ViT files
@dataclass(frozen=True)
class TimmViT:
    """A timm VisionTransformer as ``timm.create_model(NAME)`` builds it: its depth, width, heads, patch, default
    input size, whether its blocks have layer scale (``ls1``, ``ls2``), its register tokens (after the class
    token), and the hidden width of its MLP (4 x width)."""

    depth: int
    width: int
    heads: int
    patch: int
    img_size: int
    layer_scale: bool = False
    registers: int = 0

    def shapes(self) -> dict[str, tuple[int, ...] | None]:
        """Every tensor of the model's state dict but its classifier (``head.``): name -> shape (None: any, the
        position embedding, which loading resamples to the grid)."""
        d, h = self.width, 4 * self.width
        top: dict[str, tuple[int, ...] | None] = {
            "cls_token": (1, 1, d), "pos_embed": None, "patch_embed.proj.weight": (d, 3, self.patch, self.patch),
            "patch_embed.proj.bias": (d,), "norm.weight": (d,), "norm.bias": (d,),
        }  # fmt: skip
        if self.registers:
            top["reg_token"] = (1, self.registers, d)
        block = {"norm1.weight": (d,), "norm1.bias": (d,), "attn.qkv.weight": (3 * d, d), "attn.qkv.bias": (3 * d,),
                 "attn.proj.weight": (d, d), "attn.proj.bias": (d,), "norm2.weight": (d,), "norm2.bias": (d,),
                 "mlp.fc1.weight": (h, d), "mlp.fc1.bias": (h,), "mlp.fc2.weight": (d, h),
                 "mlp.fc2.bias": (d,)}  # fmt: skip
        if self.layer_scale:
            block |= {"ls1.gamma": (d,), "ls2.gamma": (d,)}
        return top | {f"blocks.{i}.{k}": v for i in range(self.depth) for k, v in block.items()}


#: the timm architectures whose W_q and W_k a modes job reads from their file (each checked against the model timm
#: builds, by tests/unit/models/test_weightfile.py): DINOv2 (with and without registers) and the original ViTs
TIMM_VITS = {
    "vit_small_patch14_dinov2": TimmViT(12, 384, 6, 14, 518, layer_scale=True),
    "vit_base_patch14_dinov2": TimmViT(12, 768, 12, 14, 518, layer_scale=True),
    "vit_large_patch14_dinov2": TimmViT(24, 1024, 16, 14, 518, layer_scale=True),
    "vit_small_patch14_reg4_dinov2": TimmViT(12, 384, 6, 14, 518, layer_scale=True, registers=4),
    "vit_base_patch14_reg4_dinov2": TimmViT(12, 768, 12, 14, 518, layer_scale=True, registers=4),
    "vit_large_patch14_reg4_dinov2": TimmViT(24, 1024, 16, 14, 518, layer_scale=True, registers=4),
    "vit_tiny_patch16_224": TimmViT(12, 192, 3, 16, 224),
    "vit_small_patch16_224": TimmViT(12, 384, 6, 16, 224),
    "vit_base_patch16_224": TimmViT(12, 768, 12, 16, 224),
}


#: the options of a timm ViT's spec that set only its sizes (timm's keyword -> the field of :class:`TimmViT`): the
#: file's tensors are checked against the sizes they give, as loading them into the model built with them would
SIZE_OPTIONS = {"img_size": "img_size", "patch_size": "patch", "embed_dim": "width", "num_heads": "heads",
                "depth": "depth"}  # fmt: skip


def _timm_file(s: ModelSpec) -> FileQK | None:
    """``timm:NAME@FILE.safetensors[?SIZES]`` of an architecture of :data:`TIMM_VITS` (its sizes changed by the
    options of :data:`SIZE_OPTIONS`) whose file holds exactly the tensors the built model takes (the classifier
    aside); else None (the model is built, and names what is wrong)."""
    arch = TIMM_VITS.get(s.name.split(".")[0])
    path = s.weights
    if arch is None or path is None or path.suffix != ".safetensors" or not path.is_file():
        return None
    options = dict(s.options)
    sizes = {SIZE_OPTIONS[k]: options.pop(k) for k in list(options) if k in SIZE_OPTIONS}
    if options or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in sizes.values()):
        return None
    arch = replace(arch, **sizes)
    img = arch.img_size
    if img % arch.patch or arch.width % arch.heads:
        return None
    t = TensorFile(path)
    own = {k: tuple(t.file.get_slice(k).get_shape()) for k in t.keys if not k.startswith("head.")}
    want = arch.shapes()
    if own.keys() != want.keys() or any(w is not None and own[k] != w for k, w in want.items()):
        return None
    if len(own["pos_embed"]) != 3 or own["pos_embed"][::2] != (1, arch.width):
        return None
    try:
        w_q, w_k, gamma = _timm_blocks(t, arch.heads)
    except MissingTensor:
        return None
    side = img // arch.patch
    kinds = prefix_kinds(1, 0, arch.registers)
    layout = TokenLayout(len(kinds), (side, side), (arch.patch, arch.patch), prefix_kinds=kinds)
    return FileQK(s, "timm-vit", w_q, w_k, gamma, layout, path, sha256_file(path), None, "local file")


# ---------------------------------------------------------------------------------------- I-JEPA checkpoints
def _ijepa(s: ModelSpec) -> FileQK | None:
    """``ijepa:FILE#part[?heads=N]``: one part of an I-JEPA checkpoint (its encoder or target encoder, timm ViTs
    without class token; or its predictor's timm blocks), mapped as :func:`~.sources.ijepa.ijepa_part` maps it and
    checked as loading checks it: every tensor the model built from it takes, in float32 and of its shape, and no
    other (the classifier aside); else None (the model is built, and names what is wrong)."""
    import torch

    from .sources.ijepa import IJEPA_PARTS, _n_heads, part_state

    path, part = s.weights, s.part or "encoder"
    if path is None or not path.is_file() or part not in IJEPA_PARTS:
        return None
    ckpt = torch_checkpoint(path)
    sd = ckpt.get(part) if isinstance(ckpt, dict) else None
    if not isinstance(sd, dict) or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        return None
    if any(v.dtype != torch.float32 for v in sd.values()):  # (loading keeps a checkpoint's dtype)
        return None
    sd = part_state(sd, part)  # as loading maps it
    try:
        if part == "predictor":
            d, d_in = sd["predictor_embed.weight"].shape
            n_heads, qkv_bias = _n_heads(d_in, s.kwargs.get("heads")), True  # the encoder's head count
            top = {"predictor_embed.weight": (d, d_in), "predictor_embed.bias": (d,), "predictor_norm.weight": (d,),
                   "predictor_norm.bias": (d,)}  # fmt: skip
            adapter, layout = "timm-blocks", TokenLayout(0, None)
        else:
            d, _, patch, _ = sd["patch_embed.proj.weight"].shape
            side = round(np.sqrt(sd["pos_embed"].shape[1]))
            n_heads, qkv_bias = _n_heads(d, s.kwargs.get("heads")), "blocks.0.attn.qkv.bias" in sd
            top = {"pos_embed": (1, side * side, d), "patch_embed.proj.weight": (d, 3, patch, patch),
                   "patch_embed.proj.bias": (d,), "norm.weight": (d,), "norm.bias": (d,)}  # fmt: skip
            adapter, layout = "timm-vit", TokenLayout(0, (side, side), (patch, patch))
        hidden = int(d * (sd["blocks.0.mlp.fc1.weight"].shape[0] / d))  # as timm's Block sizes its MLP
    except (KeyError, ValueError, QKDissectError):
        return None
    depth = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    want = top | {f"blocks.{i}.{k}": v for i in range(depth) for k, v in _block_shapes(d, hidden, qkv_bias).items()}
    if {k: tuple(v.shape) for k, v in sd.items() if not k.startswith("head.")} != want or d % n_heads:
        return None
    rows = [(w[:d], w[d : 2 * d]) for w in (sd[f"blocks.{i}.attn.qkv.weight"].numpy() for i in range(depth))]
    w_q, w_k = _stack(rows, n_heads)
    gamma = np.stack([sd[f"blocks.{i}.norm1.weight"].numpy() for i in range(depth)])
    origin = f"local I-JEPA checkpoint ({part})"
    return FileQK(s, adapter, w_q, w_k, gamma, layout, path, sha256_file(path), None, origin)


# ---------------------------------------------------------------------------------------- SimMIM checkpoints
def _simmim(s: ModelSpec) -> FileQK | None:
    """``simmim:FILE``: a SimMIM checkpoint (pretrain or finetune), mapped onto timm's Beit as
    :func:`~.sources.simmim.simmim_to_timm` maps it, and checked as loading checks it (:func:`beit_shapes`: every
    tensor Beit takes, of its shape, and no other); its weights in float32, as loading copies them into Beit."""
    import torch

    from .sources.base import read_state_dict
    from .sources.simmim import simmim_to_timm

    if s.weights is None or not s.weights.is_file():
        return None
    sd, kwargs = simmim_to_timm(read_state_dict(s.weights))
    if not all(isinstance(v, torch.Tensor) and v.is_floating_point() for v in sd.values()):
        return None
    want = beit_shapes(**kwargs)  # type: ignore[arg-type]
    if {k: tuple(v.shape) for k, v in sd.items() if not k.startswith("head.")} != want:
        return None
    d, depth, n_heads, patch = (int(kwargs[k]) for k in ("embed_dim", "depth", "num_heads", "patch_size"))  # type: ignore[call-overload]
    if d % n_heads:
        return None
    rows = [(w[:d], w[d : 2 * d]) for w in (sd[f"blocks.{i}.attn.qkv.weight"].float().numpy() for i in range(depth))]
    w_q, w_k = _stack(rows, n_heads)
    gamma = np.stack([sd[f"blocks.{i}.norm1.weight"].float().numpy() for i in range(depth)])
    side = int(kwargs["img_size"]) // patch  # type: ignore[call-overload]
    layout = TokenLayout(1, (side, side), (patch, patch), prefix_kinds=("cls",))
    return FileQK(s, "timm-beit", w_q, w_k, gamma, layout, s.weights, sha256_file(s.weights), None,
                  "local SimMIM checkpoint", notes=[REL_POS_NOTE])  # fmt: skip


def beit_shapes(
    *, img_size: int, patch_size: int, embed_dim: int, depth: int, num_heads: int, use_abs_pos_emb: bool,
    use_rel_pos_bias: bool, use_shared_rel_pos_bias: bool, init_values: float | None, global_pool: str, **_: Any,
) -> dict[str, tuple[int, ...]]:  # fmt: skip
    """The state dict of timm's ``Beit(**kwargs)`` (its classifier aside, 4 x width MLPs): name -> shape."""
    d, side, h = embed_dim, img_size // patch_size, 4 * embed_dim
    table = ((2 * side - 1) ** 2 + 3, num_heads)
    top: dict[str, tuple[int, ...]] = {
        "cls_token": (1, 1, d), "patch_embed.proj.weight": (d, 3, patch_size, patch_size),
        "patch_embed.proj.bias": (d,),
    }  # fmt: skip
    if use_abs_pos_emb:
        top["pos_embed"] = (1, side * side + 1, d)
    if use_shared_rel_pos_bias:
        top["rel_pos_bias.relative_position_bias_table"] = table
    norm = "fc_norm" if global_pool == "avg" else "norm"
    top |= {f"{norm}.weight": (d,), f"{norm}.bias": (d,)}
    block: dict[str, tuple[int, ...]] = {
        "norm1.weight": (d,), "norm1.bias": (d,), "attn.q_bias": (d,), "attn.v_bias": (d,),
        "attn.qkv.weight": (3 * d, d), "attn.proj.weight": (d, d), "attn.proj.bias": (d,), "norm2.weight": (d,),
        "norm2.bias": (d,), "mlp.fc1.weight": (h, d), "mlp.fc1.bias": (h,), "mlp.fc2.weight": (d, h),
        "mlp.fc2.bias": (d,),
    }  # fmt: skip
    if use_rel_pos_bias:
        block["attn.relative_position_bias_table"] = table
    if init_values:
        block |= {"gamma_1": (d,), "gamma_2": (d,)}
    return top | {f"blocks.{i}.{k}": v for i in range(depth) for k, v in block.items()}


def _block_shapes(d: int, hidden: int, qkv_bias: bool) -> dict[str, tuple[int, ...]]:
    """The tensors of a timm ``Block`` of width ``d`` (LayerNorms, fused qkv, no layer scale) and their shapes."""
    out: dict[str, tuple[int, ...]] = {
        "norm1.weight": (d,), "norm1.bias": (d,), "attn.qkv.weight": (3 * d, d), "attn.proj.weight": (d, d),
        "attn.proj.bias": (d,), "norm2.weight": (d,), "norm2.bias": (d,), "mlp.fc1.weight": (hidden, d),
        "mlp.fc1.bias": (hidden,), "mlp.fc2.weight": (d, hidden), "mlp.fc2.bias": (d,),
    }  # fmt: skip
    return out | ({"attn.qkv.bias": (3 * d,)} if qkv_bias else {})


# ------------------------------------------------------------------------------------------- Hugging Face
@dataclass(frozen=True)
class _Family:
    """Where a Hugging Face family keeps layer i's query and key projections (``{i}`` in the names) and the
    LayerNorm feeding them; ``prefix``: the base model's name in the checkpoints of its task wrappers."""

    layer: str
    q: str
    k: str
    norm: str | None  # None: post-LayerNorm (BERT): the embeddings' LayerNorm, then layer i-1's output LayerNorm
    prefix: str


_VIT = "encoder.layer.{i}."
_FAMILIES = {
    "vit": _Family(_VIT + "attention.attention.", "query", "key", _VIT + "layernorm_before", "vit."),
    "deit": _Family(_VIT + "attention.attention.", "query", "key", _VIT + "layernorm_before", "deit."),
    "beit": _Family(_VIT + "attention.attention.", "query", "key", _VIT + "layernorm_before", "beit."),
    "dinov2": _Family(_VIT + "attention.attention.", "query", "key", _VIT + "norm1", "dinov2."),
    "clip_vision_model": _Family(
        "encoder.layers.{i}.self_attn.", "q_proj", "k_proj", "encoder.layers.{i}.layer_norm1", "vision_model."
    ),
    "bert": _Family(_VIT + "attention.self.", "query", "key", None, "bert."),
}
#: multi-tower models whose image tower the adapter takes: model_type -> (its config key, the tower's model_type)
_TOWERS = {"clip": ("vision_config", "clip_vision_model")}
_PREFIX_TOKENS = ("cls_token", "class_embedding", "distillation_token")


def _hf_source(s: ModelSpec) -> FileQK | None:
    """``hf:`` (a directory or the hub cache), ``minilm:`` (the extracted directory) and ``smollm2:`` (the converted
    one): each of their files checked."""
    revision, origin, sha256 = None, "local directory", None
    files: tuple[Path | None, Path | None]
    if s.source in ("minilm", "smollm2"):
        name, where = (MINILM_NAME, MINILM_DIR) if s.source == "minilm" else (SMOLLM2_NAME, SMOLLM2_DIR)
        folder = data_dir() / where
        if s.name != name or not (folder / "model.safetensors").is_file():
            return None  # (another name is the loading path's error; a missing file it extracts or converts)
        if s.source == "minilm":  # (the pinned sha256 of a verified file: not hashed again)
            verified_minilm(folder)
            revision, origin, sha256 = MINILM_REVISION, MINILM_ORIGIN, MINILM_WEIGHTS_SHA256
        else:
            verified_smollm2(folder)
            revision, origin, sha256 = SMOLLM2_REVISION, SMOLLM2_ORIGIN, SMOLLM2_SHA256["model.safetensors"]
        files = (folder / "config.json", folder / "model.safetensors")
    elif s.weights is not None:
        files = (s.weights / "config.json", next((w for n in HF_WEIGHTS if (w := s.weights / n).is_file()), None))
    else:
        files, origin = _cached(s.name), "hugging face hub cache"
    config, path = files
    if config is None or path is None or not config.is_file() or not path.is_file():
        return None
    cfg, tensors = read_config(config), tensor_file(path)  # not JSON, or cut short: named here, not left to a build
    if _wrong_sizes(cfg):
        return None  # a setting the model cannot be built with: the build names it (modes would not see it)
    try:
        got = _hf_file(s, cfg, tensors)
    except (MissingTensor, KeyError, TypeError, ValueError):
        return None
    adapter, w_q, w_k, gamma, layout, decoder = got
    return FileQK(s, adapter, w_q, w_k, gamma, layout, path, sha256 or sha256_file(path),
                  revision or snapshot_revision(path), origin, **decoder)  # fmt: skip


#: the configuration's sizes that must be integers (a model's, and its image tower's): transformers refuses others
_SIZES = ("hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size", "n_embd", "n_head", "n_layer")


def _wrong_sizes(cfg: dict[str, Any]) -> bool:
    towers = [cfg, *(cfg[key] for key, _ in _TOWERS.values() if isinstance(cfg.get(key), dict))]
    return any(k in c and (isinstance(c[k], bool) or not isinstance(c[k], int)) for c in towers for k in _SIZES)


def _cached(repo_id: str) -> tuple[Path | None, Path | None]:
    """config.json and the weights file (:data:`HF_WEIGHTS`, the first there) of a hub model from the cache (never
    downloads)."""
    from huggingface_hub import try_to_load_from_cache

    config, *weights = (
        Path(h) if isinstance(h, str) else None
        for h in (try_to_load_from_cache(repo_id, f) for f in ("config.json", *HF_WEIGHTS))
    )
    return config, next((w for w in weights if w is not None), None)


#: what :func:`_hf_file` reads: adapter, W_q, W_k, gamma or None, layout, and a decoder's notes, key-value heads and
#: rotary embedding (FileQK's fields of those names; none for an encoder)
_HFRead = tuple[str, np.ndarray, np.ndarray, Any, TokenLayout, dict[str, Any]]


def _hf_file(s: ModelSpec, cfg: dict[str, Any], t: TensorFile) -> _HFRead:
    """(adapter, W_q, W_k, gamma or None, layout, decoder) of a ``save_pretrained`` checkpoint, as the HF adapter
    reads the model ``AutoModel`` builds from it."""
    model_type = cfg["model_type"]
    if model_type in _TOWERS:
        key, model_type = _TOWERS[model_type]
        cfg = cfg[key]
    if model_type == "gpt2":
        return _gpt2(cfg, t)
    if model_type == "llama":
        return _llama(cfg, t)
    fam = _FAMILIES.get(model_type)
    if fam is None:
        raise MissingTensor(f"family {model_type}")
    n_layers, n_heads = int(cfg["num_hidden_layers"]), int(cfg["num_attention_heads"])
    p = _prefix(t, [fam.prefix], fam.layer.format(i=0) + fam.q + ".weight")
    _check_depth(t, p + fam.layer, fam.q + ".weight", n_layers)
    rows = [tuple(t(p + fam.layer.format(i=i) + n + ".weight") for n in (fam.q, fam.k)) for i in range(n_layers)]
    w_q, w_k = _stack(rows, n_heads)  # type: ignore[arg-type]
    norms = [fam.norm.format(i=i) for i in range(n_layers)] if fam.norm else _post_ln(n_layers)
    gamma = _gamma(t, [p + n for n in norms])
    is_text = cfg.get("image_size") is None and cfg.get("vocab_size") is not None
    layout = TokenLayout(0, None, None, bool(cfg.get("is_decoder", False))) if is_text else _image_layout(cfg, t, p)
    return f"hf-{model_type}", w_q, w_k, gamma, layout, {}


def _gpt2(cfg: dict[str, Any], t: TensorFile) -> _HFRead:
    """GPT-2: ``h.{i}.attn.c_attn`` is a Conv1D (``x W + b``, W (d, 3d)) holding W_q | W_k | W_v."""
    if cfg.get("add_cross_attention"):
        raise MissingTensor("cross-attention")
    d, n_heads, n_layers = int(cfg["n_embd"]), int(cfg["n_head"]), int(cfg["n_layer"])
    p = _prefix(t, ["transformer."], "h.0.attn.c_attn.weight")
    _check_depth(t, p + "h.{i}.", "attn.c_attn.weight", n_layers)
    rows = [(w[:d], w[d : 2 * d]) for w in (t(f"{p}h.{i}.attn.c_attn.weight").T for i in range(n_layers))]
    w_q, w_k = _stack(rows, n_heads)
    gamma = _gamma(t, [f"{p}h.{i}.ln_1" for i in range(n_layers)])
    return "hf-gpt2", w_q, w_k, gamma, TokenLayout(0, None, None, causal=True), {}


def _llama(cfg: dict[str, Any], t: TensorFile) -> _HFRead:
    """A Llama decoder at its default RoPE (SmolLM2, stories260K): ``layers.{i}.self_attn.q_proj``
    and ``k_proj``, each query head paired with its key-value head (``repeat_kv``: h // (heads / key heads)), its
    rotary frequencies computed as transformers computes them, its RMS norms' gains (``input_layernorm``: the
    adapter's probe of the norm gives them to the last bit). Other rope types (scaled or partial frequencies) are
    the model's."""
    d, n_heads, n_layers = int(cfg["hidden_size"]), int(cfg["num_attention_heads"]), int(cfg["num_hidden_layers"])
    n_kv = int(cfg.get("num_key_value_heads") or n_heads)
    d_head = int(cfg.get("head_dim") or d // n_heads)
    if d % n_heads or n_heads % n_kv or cfg.get("use_bidirectional_attention") or cfg.get("pretraining_tp", 1) != 1:
        raise MissingTensor("a setting the model refuses or that changes its attention")
    theta = _default_rope_theta(cfg)
    p = _prefix(t, ["model."], "layers.0.self_attn.q_proj.weight")
    _check_depth(t, p + "layers.{i}.", "self_attn.q_proj.weight", n_layers)
    kv_heads = [h // (n_heads // n_kv) for h in range(n_heads)]
    rows = []
    for i in range(n_layers):
        q, k = (t(f"{p}layers.{i}.self_attn.{n}_proj.weight") for n in ("q", "k"))
        if q.shape != (n_heads * d_head, d) or k.shape != (n_kv * d_head, d):
            raise MissingTensor(f"layer {i}: q {q.shape}, k {k.shape}")
        rows.append((q, k.reshape(n_kv, d_head, d)[kv_heads].reshape(n_heads * d_head, d)))
    w_q, w_k = _stack(rows, n_heads)
    rotary = Rotary(_default_inv_freq(theta, d_head), "rotate-half", d_head, d_head)
    decoder = {"notes": rotary_group_notes(rotary, kv_heads), "rotary": rotary,
               "kv_heads": kv_heads if n_kv < n_heads else None, "norm": RMS_NORM}  # fmt: skip
    gamma = _gamma(t, [f"{p}layers.{i}.input_layernorm" for i in range(n_layers)])
    return "hf-llama", w_q, w_k, gamma, TokenLayout(0, None, None, causal=True), decoder


#: Llama's norm, as a folded store records it (the adapter's norm_record of the model's LlamaRMSNorm)
RMS_NORM: dict[str, Any] = {"kind": "rms", "module": "LlamaRMSNorm", "centring": False}


def _default_rope_theta(cfg: dict[str, Any]) -> float:
    """The base of a default RoPE (``rope_parameters`` of transformers 5, or ``rope_theta`` without scaling)."""
    params = cfg.get("rope_parameters")
    if params is None and cfg.get("rope_scaling") is None and "partial_rotary_factor" not in cfg:
        params = {"rope_type": "default", "rope_theta": cfg.get("rope_theta")}
    if not isinstance(params, dict) or set(params) != {"rope_type", "rope_theta"} or params["rope_type"] != "default":
        raise MissingTensor(f"rope {params}: the model's own frequencies")
    theta = params["rope_theta"]
    if isinstance(theta, bool) or not isinstance(theta, int | float) or theta <= 0:
        raise MissingTensor(f"rope_theta {theta!r}")
    return theta


def _default_inv_freq(theta: float, d_head: int) -> np.ndarray:
    """The frequencies of transformers' default RoPE, ``1 / theta ** (arange(0, d, 2) / d)`` in float32 with torch's
    own arithmetic (numpy's float32 power differs in the last bit), as float64."""
    import torch

    return (1.0 / (theta ** (torch.arange(0, d_head, 2, dtype=torch.float) / d_head))).double().numpy()


def _prefix(t: TensorFile, wrappers: list[str], first: str) -> str:
    """The prefix of the base model's keys: none (a base model's checkpoint) or a task wrapper's."""
    found = [p for p in ["", *wrappers] if p + first in t.keys]
    if len(found) != 1:
        raise MissingTensor(f"{first} under {len(found)} prefixes")
    return found[0]


def _check_depth(t: TensorFile, layer: str, name: str, n_layers: int) -> None:
    """The file holds exactly the configuration's layers."""
    if (layer.format(i=n_layers - 1) + name) not in t.keys or (layer.format(i=n_layers) + name) in t.keys:
        raise MissingTensor(f"not {n_layers} layers")


def _post_ln(n_layers: int) -> list[str]:
    return ["embeddings.LayerNorm", *(f"encoder.layer.{i}.output.LayerNorm" for i in range(n_layers - 1))]


def _gamma(t: TensorFile, norms: list[str]) -> np.ndarray | None:
    """The LayerNorms' weights (layer, d); None when one is not in the file (folding then builds the model)."""
    try:
        return np.stack([t(n + ".weight") for n in norms])
    except MissingTensor:
        return None


def _image_layout(cfg: dict[str, Any], t: TensorFile, p: str) -> TokenLayout:
    """Prefix tokens (CLS, distillation, registers) from the embeddings' tensors; the grid from the config."""
    emb = p + "embeddings."
    has = {n: emb + n in t.keys for n in _PREFIX_TOKENS}
    reg = int(t(emb + "register_tokens").shape[1]) if emb + "register_tokens" in t.keys else 0
    kinds = prefix_kinds(has["cls_token"] + has["class_embedding"], has["distillation_token"], reg)
    img, patch = as_pair(cfg["image_size"]), as_pair(cfg["patch_size"])
    assert img is not None and patch is not None
    return TokenLayout(len(kinds), (img[0] // patch[0], img[1] // patch[1]), patch, prefix_kinds=kinds)
