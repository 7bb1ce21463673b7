"""LayerNorm folding on the real DINOv2-S/14 with real photographs: the folded weights give its own attention logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.helpers.layernorm import folded_logit_error


@pytest.mark.assets
def test_folding_is_exact_on_real_dinov2(dinov2_file: Path, photos: torch.Tensor) -> None:
    err = folded_logit_error(f"timm:vit_small_patch14_dinov2@{dinov2_file}?img_size=224", photos)
    assert err["folded"] < 1e-4 and err["folded-centred"] < 1e-4, err
