"""The I-JEPA predictor's transformer as a torch module (apart from :mod:`.ijepa`, which reads the spec and the
manifest of a checkpoint without torch)."""

from __future__ import annotations

from functools import partial

import torch
from torch import nn


class IJEPAPredictor(nn.Module):
    """The I-JEPA predictor's transformer: embed (encoder width -> predictor width), blocks, norm."""

    def __init__(self, d_in: int, d: int, depth: int, n_heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        from timm.models.vision_transformer import Block

        self.predictor_embed = nn.Linear(d_in, d)
        norm = partial(nn.LayerNorm, eps=1e-6)  # upstream vit_predictor's norm_layer
        self.blocks = nn.ModuleList(
            [Block(d, n_heads, mlp_ratio=mlp_ratio, qkv_bias=True, norm_layer=norm) for _ in range(depth)]  # type: ignore[arg-type]
        )
        self.predictor_norm = nn.LayerNorm(d, eps=1e-6)
        self.num_prefix_tokens = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.predictor_embed(x)
        for b in self.blocks:
            x = b(x)
        return self.predictor_norm(x)
