"""Every way a model can fail to load names the problem and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest

from qkdissect.errors import CheckpointMismatchError, UnknownModelError, WeightsUnavailableError
from qkdissect.models import load_qk, parse_spec


def test_unknown_short_name_lists_close_matches() -> None:
    with pytest.raises(UnknownModelError, match="dino-vitb16"):
        parse_spec("dino-vitb61")


def test_unknown_timm_name_lists_close_matches() -> None:
    with pytest.raises(UnknownModelError, match="vit_small_patch16_224"):
        load_qk("timm:vit_smal_patch16_224")


def test_hf_offline_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsUnavailableError, match=r"(?s)HF_HUB_OFFLINE is set.*hf download"):
        load_qk("hf:google/vit-base-patch16-224")


def test_timm_pretrained_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsUnavailableError, match=r"timm:vit_tiny_patch16_224@/path/to/weights"):
        load_qk("timm:vit_tiny_patch16_224")


def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_qk(f"timm:vit_tiny_patch16_224@{tmp_path / 'nothing.safetensors'}")


@pytest.mark.assets
def test_checkpoint_of_wrong_architecture(dinov2_file: Path) -> None:
    """DINOv2-S/14 weights given as a ViT-S/16: patch size and layer scale do not fit."""
    with pytest.raises(CheckpointMismatchError) as e:
        load_qk(f"timm:vit_small_patch16_224@{dinov2_file}")
    msg = str(e.value)
    assert "unexpected keys" in msg and "ls1.gamma" in msg
    assert "patch_embed.proj.weight: checkpoint (384, 3, 14, 14) vs model (384, 3, 16, 16)" in msg
    assert "blocks.0.ls1.gamma" in e.value.unexpected


class TrainingConfig(dict):  # stands for the yacs CfgNode SimMIM's save_checkpoint stores beside the weights
    pass


def test_a_checkpoint_with_python_objects_says_how_to_keep_its_weights(tmp_path: Path) -> None:
    """Never unpickled (that could run code): one line naming the object and the one-time fix."""
    import subprocess
    import sys

    import torch

    from conftest import make_tiny_vit

    spec = make_tiny_vit(tmp_path / "w")
    from safetensors.torch import load_file

    state = load_file(spec.split("@", 1)[1].split("?")[0])
    path = tmp_path / "simmim_pretrain__vit_base__img224__800ep.pth"
    torch.save({"model": state, "config": TrainingConfig(lr=1e-3), "epoch": 799}, path)
    r = subprocess.run([sys.executable, "-m", "qkdissect", "modes", f"simmim:{path}", "-o", str(tmp_path / "m.zarr")],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    *before, error = r.stderr.strip().splitlines()  # the line while the model loads, then the error: one line
    assert r.returncode == 2 and error.startswith("qkdissect modes: error: ") and before == [f"loading simmim:{path} …"]
    assert "holds Python objects besides tensors" in r.stderr and "TrainingConfig" in r.stderr
    assert "weights_only=False" in r.stderr and not (tmp_path / "m.zarr").exists()
