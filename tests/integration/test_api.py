"""The README's Python API lines run as written, on the real DINOv2-S/14 checkpoint and on a timm model object in
memory, and give the command line's numbers."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from tests.helpers import REPO


def readme_api_block() -> str:
    text = (REPO / "README.md").read_text()
    section = text[text.index("## Python API") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.mark.assets
def test_the_readme_api_lines_run_and_match_the_cli(
    dinov2_file: Path, assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.symlink(dinov2_file, tmp_path / "dinov2_vits14.safetensors")
    photos = tmp_path / "photos"
    photos.mkdir()
    folder = assets / "images/imagenet_sample_1000"
    for f in sorted(folder.glob("*.jpg"))[:6]:
        shutil.copy(f, photos / f.name)
    shutil.copy(folder / "n01443537_goldfish.jpg", photos / "goldfish.jpg")
    # the store the last line opens: what `qkdissect modes` writes for the same checkpoint
    cli_store = tmp_path / "results/modes/dinov2-vits14-imgfocus.zarr"
    spec = "timm:vit_small_patch14_dinov2@dinov2_vits14.safetensors"
    r = subprocess.run([sys.executable, "-m", "qkdissect", "modes", spec, "-q", "-o", str(cli_store)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    monkeypatch.chdir(tmp_path)
    ns: dict = {}
    t0 = time.perf_counter()
    exec(compile(readme_api_block(), "README.md (Python API)", "exec"), ns)
    assert time.perf_counter() - t0 < 300
    m, s, p, x, same = ns["m"], ns["s"], ns["p"], ns["x"], ns["same"]
    # the spec and the model object give the same modes, and the command line the same again
    mem = ns["qk"].modes(ns["model"])
    for var in ("U", "S", "V"):
        np.testing.assert_array_equal(m[var].values, mem[var].values)
        np.testing.assert_array_equal(m[var].values, same[var].values)
    assert same.attrs["weights_sha256"] == m.attrs["weights_sha256"] and mem.attrs["weights_sha256"] is None
    assert "in memory: timm.models.vision_transformer.VisionTransformer" in mem.attrs["provenance"]["weights"]["origin"]
    assert isinstance(s, xr.Dataset) and s.layer_weighted.sizes["layer"] == 12
    assert s.layer_weighted.values[0] > s.layer_weighted.values[-1] > 0  # grouping early, less late
    assert p.sizes["image"] == 7 and p.top_image.sizes["rank"] == 4 and bool(p.valid.all())
    assert tuple(x.shape) == (3, 518, 518)  # DINOv2's own input size (timm's pretrained config)
    # project() through the API = `qkdissect project` on the same model, modes and images
    out = tmp_path / "cli_proj.zarr"
    r = subprocess.run([sys.executable, "-m", "qkdissect", "project", spec, "--modes", str(cli_store), "--images",
                        "folder:photos", "--top-k", "4", "--workers", "0", "-q", "-o", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    cli = xr.open_zarr(out, zarr_format=3, consolidated=False)
    for var in ("top_image", "top_score", "q_max", "k_min", "anisotropy"):
        np.testing.assert_array_equal(p[var].values, cli[var].values, err_msg=var)
