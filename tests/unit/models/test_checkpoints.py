"""Raw SimMIM and I-JEPA checkpoints (tiny ones, written in the upstream key layout) load strictly, infer
their architecture, and their adapters reproduce the attention logits."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from qkdissect.errors import CheckpointMismatchError, WeightsUnavailableError
from qkdissect.models import load_qk, parse_spec
from qkdissect.models.sources.base import CheckpointReadError
from tests.helpers import make_ijepa_checkpoint, make_simmim_checkpoint
from tests.helpers.logits import capture_logits, max_relative_error

IMG = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))


@pytest.mark.parametrize("pretrain", [True, False], ids=["pretrain", "finetune"])
def test_simmim_checkpoint(tmp_path: Path, pretrain: bool) -> None:
    path, ref = make_simmim_checkpoint(tmp_path, pretrain)
    qk, loaded = load_qk(f"simmim:{path}")
    assert qk.adapter == "timm-beit"
    assert (qk.n_layers, qk.n_heads, qk.d_model, qk.layout.grid) == (3, 4, 64, (4, 4))
    assert torch.equal(qk.layers[1].b_q.flatten(), ref.blocks[1].attn.q_bias.detach())
    assert torch.count_nonzero(qk.b_k) == 0
    tokens, logits = capture_logits(loaded.model, qk, IMG)
    assert max_relative_error(qk, tokens, logits) < 1e-4
    with torch.no_grad():  # the loaded model is the reference model
        assert torch.allclose(loaded.model.forward_features(IMG), ref.forward_features(IMG), atol=1e-5)


def test_ijepa_encoder_and_predictor(tmp_path: Path) -> None:
    path, _, pred = make_ijepa_checkpoint(tmp_path)
    qk, loaded = load_qk(f"ijepa:{path}#encoder?heads=4")
    assert qk.layout.n_prefix == 0 and qk.layout.grid == (4, 4) and qk.n_heads == 4
    tokens, logits = capture_logits(loaded.model, qk, IMG)
    assert max_relative_error(qk, tokens, logits) < 1e-4

    qk_t, _ = load_qk(f"ijepa:{path}#target_encoder?heads=4")
    assert torch.allclose(qk_t.w_q, 2 * qk.w_q)

    qk_p, loaded_p = load_qk(f"ijepa:{path}#predictor?heads=4")
    assert (qk_p.n_layers, qk_p.n_heads, qk_p.d_head, qk_p.d_model) == (2, 4, 8, 32)
    x = torch.randn(2, 16, 64)
    tokens, logits = capture_logits(loaded_p.model, qk_p, x)
    assert max_relative_error(qk_p, tokens, logits) < 1e-4
    with torch.no_grad():
        assert torch.allclose(loaded_p.model(x), pred(x), atol=1e-5)


def test_ijepa_unknown_width_needs_heads(tmp_path: Path) -> None:
    path, _, _ = make_ijepa_checkpoint(tmp_path)
    with pytest.raises(CheckpointMismatchError, match="heads=N"):
        load_qk(f"ijepa:{path}#encoder")


def test_ijepa_missing_part(tmp_path: Path) -> None:
    path = tmp_path / "enc_only.pth.tar"
    torch.save({"encoder": {}}, path)
    with pytest.raises(CheckpointMismatchError, match="predictor"):
        load_qk(f"ijepa:{path}#predictor")


def test_missing_raw_checkpoint_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match=r"github\.com/microsoft/SimMIM"):
        load_qk(f"simmim:{tmp_path / 'nope.pth'}")


def test_truncated_checkpoint(tmp_path: Path) -> None:
    path, _ = make_simmim_checkpoint(tmp_path, pretrain=False)
    data = path.read_bytes()
    bad = tmp_path / "truncated.pth"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointReadError, match="truncated"):
        load_qk(f"simmim:{bad}")


def test_spec_round_trip() -> None:
    s = parse_spec("ijepa:/x/ckpt.pth.tar#predictor?heads=16")
    assert (s.source, s.part, s.kwargs) == ("ijepa", "predictor", {"heads": 16})
    assert parse_spec(str(s)) == s
    t = parse_spec("timm:vit_small_patch14_dinov2@/w.safetensors?img_size=224")
    assert t.kwargs == {"img_size": 224} and str(t.weights) == "/w.safetensors"
    assert parse_spec(str(t)) == t
    assert parse_spec("google/vit-base-patch16-224") == parse_spec("hf:google/vit-base-patch16-224")
    assert parse_spec("vit-base-patch16-224").name == "google/vit-base-patch16-224"
