"""The command line, end to end, on real weights."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from qkdissect.cli import main
from qkdissect.stores import open_store


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


def _tiny_hf_dir(tmp_path: Path) -> Path:
    from transformers import DeiTConfig, DeiTModel

    from conftest import randomise_

    model = randomise_(
        DeiTModel(
            DeiTConfig(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=128,
                image_size=32,
                patch_size=8,
            )
        )
    )
    out = tmp_path / "tiny-deit"
    model.save_pretrained(out)
    return out


def test_hf_local_directory_records_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save_pretrained directory loads with no network (HF_HUB_OFFLINE=1) and its file hash is recorded."""
    from qkdissect.models import sha256_file
    from qkdissect.passes.weights import compute_modes

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = _tiny_hf_dir(tmp_path)
    ds = compute_modes(f"hf:{d}", device="cpu")
    assert ds.attrs["adapter"] == "hf-deit" and ds.attrs["n_prefix_tokens"] == 2
    assert ds.attrs["weights_sha256"] == sha256_file(d / "model.safetensors")
    assert ds.attrs["provenance"]["weights"]["origin"] == "local directory"


def test_several_models_into_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = _tiny_hf_dir(tmp_path)
    out = tmp_path / "modes"
    assert main(["modes", f"hf:{d}", f"hf:{d}?attn_implementation=eager", "-o", str(out), "--dtype", "float32"]) == 0
    stores = sorted(out.glob("*.zarr"))
    assert len(stores) == 2
    ds = [open_store(s, "modes") for s in stores]
    assert all(x.attrs["dtype"] == "float32" and x.U.dtype == np.float32 for x in ds)
    np.testing.assert_allclose(ds[0].S.values, ds[1].S.values)
