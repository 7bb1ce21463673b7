"""``simmim:FILE``: a raw SimMIM checkpoint (microsoft/SimMIM, BEiT-style ViT), mapped onto
:class:`timm.models.beit.Beit` (same key names, same attention) and loaded strictly.

SimMIM's attention has a fused ``qkv`` without bias plus ``q_bias``/``v_bias``; pretrain checkpoints hold
``encoder.*`` (+ decoder, mask token) and a shared relative position bias; finetune checkpoints hold the bare
ViT with per-layer relative position bias and mean pooling (fc_norm).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import numpy as np

from ...errors import CheckpointMismatchError
from ...util.hashing import sha256_file
from ..spec import ModelSpec, data_path, known_options
from .base import (
    LoadedModel,
    Resolved,
    Source,
    checkpoint_file,
    load_checkpoint_into,
    local_checkpoint,
    local_file_availability,
    read_state_dict,
    register,
)

if TYPE_CHECKING:
    import torch

WHERE = "https://github.com/microsoft/SimMIM (Google Drive links)"


def parse(rest: str, part: str, options: tuple[tuple[str, Any], ...]) -> ModelSpec:
    known_options("simmim", options, {}, " (the architecture is read from the checkpoint)")
    p = data_path(rest, "simmim checkpoint")
    return ModelSpec("simmim", p.name, p, part or None, options)


def resolve(spec: ModelSpec, name: str) -> Resolved:
    return local_checkpoint(spec, name, WHERE)


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


SOURCE = register(Source("simmim", parse, load_simmim, resolve, local_file_availability))
