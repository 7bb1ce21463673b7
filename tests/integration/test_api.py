"""The Python API page's notebook lines (docs/reference/api.md) run as written, on the real DINOv2-S/14 checkpoint
and on a timm model object in memory, and give the command line's numbers."""

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


def api_page_block() -> str:
    text = (REPO / "docs/reference/api.md").read_text()
    section = text[text.index("## In a notebook") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)  # type: ignore[union-attr]


@pytest.mark.assets
def test_the_api_page_lines_run_and_match_the_cli(
    dinov2_file: Path, assets: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    os.symlink(dinov2_file, tmp_path / "dinov2_vits14.safetensors")
    photos = tmp_path / "photos"
    photos.mkdir()
    folder = assets / "images/imagenet_sample_1000"
    for f in sorted(folder.glob("*.jpg"))[:2]:  # three photographs at DINOv2's 518 px, projected twice
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
    exec(compile(api_page_block(), "docs/reference/api.md (In a notebook)", "exec"), ns)
    assert time.perf_counter() - t0 < 300
    m, s, p, x, same = ns["m"], ns["s"], ns["p"], ns["x"], ns["same"]
    # the spec and the command line read W_q and W_k from the file (numpy): the same modes; the model object gives
    # them with torch: the same to float64 rounding (singular values to 1e-13 relative, singular vectors to 1e-12
    # over the mode's relative gap to its neighbours, the bound of tests/integration/test_weightfile.py)
    mem_store = tmp_path / "mem.zarr"
    mem = ns["qk"].modes(ns["model"], output=mem_store)
    for var in ("U", "S", "V"):
        np.testing.assert_array_equal(m[var].values, same[var].values)
    sv = mem.S.values
    assert np.abs(m.S.values - sv).max() <= 1e-13 * sv.max()
    gap = np.minimum(-np.diff(sv, axis=-1, prepend=np.inf), -np.diff(sv, axis=-1, append=-np.inf)) / sv[..., :1]
    for var in ("U", "V"):
        assert (np.abs(m[var].values - mem[var].values).max(axis=-2) * gap).max() <= 1e-12, var
    assert same.attrs["weights_sha256"] == m.attrs["weights_sha256"] and mem.attrs["weights_sha256"] is None
    assert "in memory: timm.models.vision_transformer.VisionTransformer" in mem.attrs["provenance"]["weights"]["origin"]
    assert isinstance(s, xr.Dataset) and s.layer_weighted.sizes["layer"] == 12
    assert s.layer_weighted.values[0] > s.layer_weighted.values[-1] > 0  # grouping early, less late
    assert p.sizes["image"] == 3 and p.top_image.sizes["rank"] == 4 and bool(p.valid.all())
    assert tuple(x.shape) == (3, 518, 518)  # DINOv2's own input size (timm's pretrained config)
    # project() through the API = `qkdissect project` on the same model, modes (the model object's) and images
    out = tmp_path / "cli_proj.zarr"
    r = subprocess.run([sys.executable, "-m", "qkdissect", "project", spec, "--modes", str(mem_store), "--images",
                        "folder:photos", "--top-k", "4", "--workers", "0", "-q", "-o", str(out)],
                       cwd=tmp_path, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert r.returncode == 0, r.stderr
    cli = xr.open_zarr(out, zarr_format=3, consolidated=False)
    for var in ("top_image", "top_score", "q_max", "k_min", "anisotropy"):
        np.testing.assert_array_equal(p[var].values, cli[var].values, err_msg=var)
