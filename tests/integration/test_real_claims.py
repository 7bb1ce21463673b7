"""Claims about real pretrained weights (../shared/assets/README.md, paper section 5): checked, not assumed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import timm
import torch

from qkdissect.core import scores as sc
from qkdissect.core.modes import qk_modes
from qkdissect.models import extract_qk, load_qk


def _layer_weighted(qk) -> np.ndarray:  # type: ignore[no-untyped-def]
    u, s, v = qk_modes(qk.w_q, qk.w_k, device="cpu").numpy()
    return sc.score_modes(u, s, v).layer_weighted


@pytest.mark.assets
def test_dinov2_grouping_early_contextualisation_late(dinov2_file: Path) -> None:
    """Trained DINOv2-S/14: clearly positive weighted cosine in early layers (~+0.6), lower later;
    a freshly initialised model of the same architecture gives ~0 everywhere."""
    trained = _layer_weighted(load_qk(f"timm:vit_small_patch14_dinov2@{dinov2_file}")[0])
    torch.manual_seed(0)
    fresh = _layer_weighted(extract_qk(timm.create_model("vit_small_patch14_dinov2", pretrained=False)))
    assert trained[:2].min() > 0.5
    assert trained[3:].max() < trained[:2].min() - 0.2
    assert np.abs(fresh).max() < 0.05
    assert np.abs(fresh).max() < sc.null_interval(384)[1]
