"""``ijepa:FILE#part``: a raw I-JEPA checkpoint (facebookresearch/ijepa): ``{'encoder', 'predictor',
'target_encoder', ...}`` state dicts with DDP ``module.`` prefixes. The encoder is a timm ViT without class
token (fixed sin-cos position embedding); the predictor is ``predictor_embed`` -> timm blocks ->
``predictor_norm``. ``?heads=N`` gives the head count where the width does not tell it."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import CheckpointMismatchError
from ...util.hashing import sha256_file
from ..spec import ModelSpec, data_path, known_options
from .base import (
    CheckpointReadError,
    LoadedModel,
    Resolved,
    Source,
    checkpoint_file,
    load_checkpoint_into,
    local_checkpoint,
    local_file_availability,
    register,
)
from .simmim import _strip

if TYPE_CHECKING:
    import torch
    from torch import nn

WHERE = "https://github.com/facebookresearch/ijepa (README, checkpoints)"


def parse(rest: str, part: str, options: tuple[tuple[str, Any], ...]) -> ModelSpec:
    known_options("ijepa", options, {"heads": 16}, " (the rest of the architecture is read from the checkpoint)")
    p = data_path(rest, "ijepa checkpoint")
    return ModelSpec("ijepa", p.name, p, part or "encoder", options)


def resolve(spec: ModelSpec, name: str) -> Resolved:
    return local_checkpoint(spec, name, WHERE)


IJEPA_PARTS = ("encoder", "target_encoder", "predictor")


_HEADS_BY_WIDTH = {192: 3, 384: 6, 768: 12, 1024: 16, 1280: 16, 1408: 16}


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


def part_state(state: dict[str, Any], part: str) -> dict[str, Any]:
    """One part's state dict under the names of the module built for it: DDP's ``module.`` (and ``backbone.``)
    stripped; the predictor's ``predictor_blocks.`` as ``blocks.``, without its mask token, position embedding and
    projection (not part of the module). What loading and the modes job's file path both read."""
    sd = _strip(_strip(state, "module."), "backbone.")
    if part != "predictor":
        return sd
    sd = {k.replace("predictor_blocks.", "blocks."): v for k, v in sd.items()}
    return {k: v for k, v in sd.items() if not k.startswith(("mask_token", "predictor_pos_embed", "predictor_proj"))}


def ijepa_part(ckpt: dict, part: str, heads: object = None) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """Build the timm module for one part of an I-JEPA checkpoint and its (mapped) state dict."""
    if part not in IJEPA_PARTS:
        raise ValueError(f"I-JEPA part must be one of {IJEPA_PARTS}, got {part!r}")
    if part not in ckpt:
        raise CheckpointMismatchError("<ijepa>", f"ijepa#{part}", [part], sorted(k for k in ckpt if isinstance(k, str)))
    sd = part_state(ckpt[part], part)
    depth = 1 + max(int(m.group(1)) for k in sd if (m := re.match(r"blocks\.(\d+)\.", k)))
    if part == "predictor":
        d_in = int(sd["predictor_embed.weight"].shape[1])
        d = int(sd["predictor_embed.weight"].shape[0])
        enc_width = d_in
        n_heads = _n_heads(enc_width, heads)  # the predictor uses the encoder's head count
        hidden = int(sd["blocks.0.mlp.fc1.weight"].shape[0])
        from .ijepa_predictor import IJEPAPredictor

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
    import torch

    path = checkpoint_file(spec.weights, "I-JEPA", "https://github.com/facebookresearch/ijepa (README, checkpoints)")
    try:
        ckpt = torch.load(str(path), map_location="cpu", weights_only=True)
    except (OSError, RuntimeError, EOFError) as e:
        raise CheckpointReadError(path, e) from e
    part = spec.part or "encoder"
    with torch.device("meta"):  # no random initialisation of a model the checkpoint fills (ViT-H: 630M values)
        model, sd = ijepa_part(ckpt, part, spec.kwargs.get("heads"))
    load_checkpoint_into(model, sd, path, f"ijepa#{part}", assign=True)
    return LoadedModel(spec, model.eval(), path, sha256_file(path), origin=f"local I-JEPA checkpoint ({part})")


SOURCE = register(Source("ijepa", parse, load_ijepa, resolve, local_file_availability))
