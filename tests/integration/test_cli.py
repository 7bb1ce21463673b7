"""The command line on real weights: modes and scores of the real DINOv2-S/14."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qkdissect.cli import main
from qkdissect.stores import open_store


@pytest.mark.assets
def test_modes_and_scores_on_real_weights(tmp_path: Path, dinov2_file: Path) -> None:
    spec = f"timm:vit_small_patch14_dinov2@{dinov2_file}"
    out = tmp_path / "modes.zarr"
    r = subprocess.run(
        [sys.executable, "-m", "qkdissect", "modes", spec, "-o", str(out), "--device", "cpu"],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr
    ds = open_store(out, "modes")
    assert dict(ds.sizes) == {"layer": 12, "head": 6, "dim": 384, "mode": 64}
    assert ds.attrs["weights_sha256"].startswith("20f14f60")
    assert main(["scores", str(out), "-o", str(tmp_path / "scores.zarr"), "-q"]) == 0
    sc = open_store(tmp_path / "scores.zarr", "scores")
    assert sc.attrs["null_high"] == pytest.approx(1.96 / np.sqrt(384), rel=5e-3)
