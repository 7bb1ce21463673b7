"""The command line, end to end, on real weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qkdissect.cli import main
from qkdissect.store import open_store


def test_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    keys = {r["key"] for r in rows}
    assert len([r for r in rows if r["paper"]]) == 16
    assert {"dino-vitb16", "simmim-vit-b16-pretrain", "ijepa-vith14-encoder", "dinov2-vits14-imgfocus"} <= keys
    assert all(r["available"] for r in rows)


def test_unknown_model_exits_2_with_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["modes", "dino-vitb61", "-o", str(tmp_path / "x.zarr")]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'dino-vitb61'" in err and "dino-vitb16" in err
    assert not (tmp_path / "x.zarr").exists()


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


def test_several_models_need_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["modes", "a/b", "c/d", "-o", str(tmp_path / "x.zarr")]) == 2
    assert "output directory" in capsys.readouterr().err
