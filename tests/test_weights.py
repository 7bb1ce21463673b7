"""Resolving weights before computing: manifests for local files, Hugging Face directories and the hub cache
(offline), clear failures, and the check that modes loads the weights its manifest resolved."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qkdissect.errors import QKDissectError, WeightsUnavailableError
from qkdissect.models import check_manifest, read_manifest, resolve_weights, sha256_file, weights_sha256
from qkdissect.stores import open_store
from test_cli import _tiny_hf_dir

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qkdissect", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


@pytest.mark.assets
def test_local_timm_file(dinov2_file: Path) -> None:
    m = resolve_weights(f"timm:vit_small_patch14_dinov2@{dinov2_file}", "mine")
    assert m["model"] == "mine" and m["origin"] == "local file"
    assert weights_sha256(m) == sha256_file(dinov2_file) and weights_sha256(m).startswith("20f14f60")
    assert m["files"][0]["bytes"] == dinov2_file.stat().st_size


def test_hf_directory(tmp_path: Path) -> None:
    d = _tiny_hf_dir(tmp_path)
    m = resolve_weights(f"hf:{d}")
    roles = [f["role"] for f in m["files"]]
    assert roles == ["config.json", "weights"]
    assert weights_sha256(m) == sha256_file(d / "model.safetensors")


def _fake_hub_cache(tmp_path: Path) -> Path:
    """A Hugging Face hub cache holding one tiny model at a known commit, as `hf download` leaves it."""
    cache = tmp_path / "hub"
    repo = cache / "models--someorg--tiny-deit"
    snap = repo / "snapshots" / COMMIT
    src = _tiny_hf_dir(tmp_path)
    snap.mkdir(parents=True)
    for f in src.iterdir():
        (snap / f.name).write_bytes(f.read_bytes())
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    return cache


def test_hub_cache_offline_resolve_then_modes(tmp_path: Path) -> None:
    """Offline, a hub id resolves from the cache with its revision, and modes checks it loaded those weights."""
    env = {"HF_HUB_CACHE": str(_fake_hub_cache(tmp_path)), "HF_HUB_OFFLINE": "1"}
    manifest = tmp_path / "w.json"
    r = _cli("resolve", "hf:someorg/tiny-deit", "--name", "tiny", "-o", str(manifest), env=env)
    assert r.returncode == 0, r.stderr
    m = read_manifest(manifest)
    assert m["revision"] == COMMIT and m["origin"] == "Hugging Face hub cache" and m["hub_offline"] is True
    out = tmp_path / "modes.zarr"
    r = _cli("modes", "hf:someorg/tiny-deit", "--name", "tiny", "--manifest", str(manifest), "-o", str(out), env=env)
    assert r.returncode == 0, r.stderr
    ds = open_store(out, "modes")
    assert ds.attrs["model_id"] == "tiny" and ds.attrs["weights_revision"] == COMMIT
    assert ds.attrs["provenance"]["weights"]["manifest"]["files"] == m["files"]


def test_hub_model_missing_offline_says_how_to_get_it(tmp_path: Path) -> None:
    env = {"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    r = _cli("resolve", "hf:someorg/not-here", env=env)
    assert r.returncode == 2
    assert "HF_HUB_OFFLINE is set" in r.stderr and "hf download someorg/not-here" in r.stderr


def test_missing_local_files() -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        resolve_weights("timm:vit_small_patch16_224@/nowhere/w.safetensors")
    with pytest.raises(WeightsUnavailableError, match=r"github\.com/microsoft/SimMIM"):
        resolve_weights("simmim:/nowhere/simmim.pth", "simmim-vit-b16-pretrain")


def test_changed_weights_are_caught(tmp_path: Path) -> None:
    d = _tiny_hf_dir(tmp_path)
    m = resolve_weights(f"hf:{d}")
    check_manifest(m, sha256_file(d / "model.safetensors"), "x")  # same file: fine
    with pytest.raises(QKDissectError, match="not the ones resolved in the manifest"):
        check_manifest(m, "0" * 64, "x")


def test_cli_manifest_to_stdout_is_json(tmp_path: Path) -> None:
    d = _tiny_hf_dir(tmp_path)
    r = _cli("resolve", f"hf:{d}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["qkdissect_manifest"] == "weights/v1"
