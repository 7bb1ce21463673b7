"""A real checkpoint given for the wrong architecture names the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from qkdissect.errors import CheckpointMismatchError
from qkdissect.models import load_qk


@pytest.mark.assets
def test_checkpoint_of_wrong_architecture(dinov2_file: Path) -> None:
    """DINOv2-S/14 weights given as a ViT-S/16: patch size and layer scale do not fit."""
    with pytest.raises(CheckpointMismatchError) as e:
        load_qk(f"timm:vit_small_patch16_224@{dinov2_file}")
    msg = str(e.value)
    assert "unexpected keys" in msg and "ls1.gamma" in msg
    assert "patch_embed.proj.weight: checkpoint (384, 3, 14, 14) vs model (384, 3, 16, 16)" in msg
    assert "blocks.0.ls1.gamma" in e.value.unexpected
