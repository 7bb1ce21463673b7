"""The four terms of the logits sum to the real DINOv2-S/14's own attention logits on real photographs."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qkdissect.core.logits import logit_terms
from qkdissect.models import load_qk
from tests.helpers.logits import capture_logits


@pytest.mark.assets
def test_the_four_terms_sum_to_the_models_logits_on_real_images(dinov2_file: Path, photos: torch.Tensor) -> None:
    qk, loaded = load_qk(f"timm:vit_small_patch14_dinov2@{dinov2_file}?img_size=224")
    tokens, logits = capture_logits(loaded.model, qk, photos)
    worst = 0.0
    for layer, a in enumerate(qk.layers):
        terms = logit_terms(tokens[layer].double(), a.w_q.double(), a.w_k.double(), a.b_q.double(), a.b_k.double())
        ours = sum(t for t in terms.values()) * a.scale
        ref = logits[layer].double()
        worst = max(worst, float(torch.linalg.norm(ours - ref) / torch.linalg.norm(ref)))
    assert worst < 1e-4, worst
