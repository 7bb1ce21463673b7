"""Every way a model can fail to load names the problem and the fix."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from qkdissect.errors import UnknownModelError, WeightsUnavailableError
from qkdissect.models import load_qk, parse_spec


def test_unknown_short_name_lists_close_matches() -> None:
    with pytest.raises(UnknownModelError, match="dino-vitb16"):
        parse_spec("dino-vitb61")


def test_unknown_timm_name_lists_close_matches() -> None:
    with pytest.raises(UnknownModelError, match="vit_small_patch16_224"):
        load_qk("timm:vit_smal_patch16_224")


def test_hf_offline_not_cached(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsUnavailableError, match=r"(?s)HF_HUB_OFFLINE is set.*hf download"):
        load_qk("hf:google/vit-base-patch16-224")


def test_timm_pretrained_offline(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(WeightsUnavailableError, match=r"timm:vit_tiny_patch16_224@/path/to/weights"):
        load_qk("timm:vit_tiny_patch16_224")


def test_missing_local_file(tmp_path: Path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        load_qk(f"timm:vit_tiny_patch16_224@{tmp_path / 'nothing.safetensors'}")


class TrainingConfig(dict):  # stands for the yacs CfgNode SimMIM's save_checkpoint stores beside the weights
    pass


def test_a_checkpoint_with_python_objects_says_how_to_keep_its_weights(tmp_path: Path) -> None:
    """Never unpickled (that could run code): one line naming the object and the one-time fix."""
    import subprocess
    import sys

    import torch

    from tests.helpers import make_tiny_vit

    spec = make_tiny_vit(tmp_path / "w")
    from safetensors.torch import load_file

    state = load_file(spec.split("@", 1)[1].split("?")[0])
    path = tmp_path / "simmim_pretrain__vit_base__img224__800ep.pth"
    torch.save({"model": state, "config": TrainingConfig(lr=1e-3), "epoch": 799}, path)
    r = subprocess.run([sys.executable, "-m", "qkdissect", "modes", f"simmim:{path}", "-o", str(tmp_path / "m.zarr")],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    *before, error = r.stderr.strip().splitlines()  # the error: one line (modes reads the file: no model loads)
    assert r.returncode == 2 and error.startswith("qkdissect modes: error: ") and before == []
    assert "holds Python objects besides tensors" in r.stderr and "TrainingConfig" in r.stderr
    assert "weights_only=False" in r.stderr and not (tmp_path / "m.zarr").exists()


# ------------------------------------------------------------------------------- a hub cache with damaged files
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def _git_blob_sha1(path: Path) -> str:
    """The name the hub's cache gives a file that is not in LFS (config.json): its git blob id, from git itself."""
    import subprocess

    return subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout.strip()


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """A hub cache as `hf download someorg/tiny-deit` leaves it, offline: ``snapshots/<commit>/FILE`` links to
    ``blobs/<its content address>`` (the sha256 of an LFS file, model.safetensors; the git blob id of another,
    config.json)."""
    import hashlib

    import huggingface_hub.constants

    from tests.helpers import tiny_hf_dir

    src = tiny_hf_dir(tmp_path / "src")
    repo = tmp_path / "hub" / "models--someorg--tiny-deit"
    snap = repo / "snapshots" / COMMIT
    snap.mkdir(parents=True)
    (repo / "blobs").mkdir()
    for f in src.iterdir():
        name = hashlib.sha256(f.read_bytes()).hexdigest() if f.suffix == ".safetensors" else _git_blob_sha1(f)
        (repo / "blobs" / name).write_bytes(f.read_bytes())
        (snap / f.name).symlink_to(f"../../blobs/{name}")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    return {"config": snap / "config.json", "weights": snap / "model.safetensors", "out": tmp_path / "out"}


def _error(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    from qkdissect.cli import main

    capsys.readouterr()
    assert main(list(argv)) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


def _one_line_error(load: object) -> str:
    from qkdissect.errors import QKDissectError

    with pytest.raises(QKDissectError) as e:
        load()  # type: ignore[operator]
    assert "\n" not in str(e.value), str(e.value)
    return str(e.value)


def test_a_hub_config_field_of_the_wrong_type_names_the_file_and_the_field(hub: dict[str, Path], capsys) -> None:
    """`hidden_size: "abc"` gave huggingface_hub's validation traceback (and `modes`, which reads the weights
    file without building the model, used the file as if nothing were wrong)."""
    from qkdissect.models import load_model

    config = json.loads(hub["config"].read_text())
    hub["config"].resolve().write_text(json.dumps({**config, "hidden_size": "abc"}))
    for msg in (
        _one_line_error(lambda: load_model("hf:someorg/tiny-deit")),
        _error(capsys, "modes", "hf:someorg/tiny-deit", "-q", "-o", str(hub["out"])),
    ):
        assert f"{hub['config']}: field 'hidden_size': expected int, got str (value: 'abc'): " in msg, msg
        assert f"correct it, or delete {hub['config'].resolve()} and download it again" in msg, msg
    assert not hub["out"].exists()


def test_a_truncated_or_damaged_hub_checkpoint_says_so(hub: dict[str, Path], capsys) -> None:
    """A cut-short or header-corrupted model.safetensors gave safetensors' SafetensorError, with its traceback."""
    from qkdissect.models import load_model

    blob = hub["weights"].resolve()
    whole = blob.read_bytes()
    for damaged in (whole[: len(whole) // 2], whole[:8] + b"#" * 16 + whole[24:]):
        blob.write_bytes(damaged)
        for msg in (
            _error(capsys, "modes", "hf:someorg/tiny-deit", "-q", "-o", str(hub["out"])),  # the file read directly
            _one_line_error(lambda: load_model("hf:someorg/tiny-deit")),  # the model built by transformers
        ):
            assert f"cannot read checkpoint {hub['weights']}: SafetensorError: " in msg, msg
            assert "may be truncated" in msg and f"delete {blob} and download it again" in msg, msg
    assert not hub["out"].exists()


def test_a_truncated_timm_checkpoint_in_the_hub_cache_is_not_blamed_on_the_hub(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """timm's own weights from the hub cache, cut short: was "pretrained weights ... are not available here"."""
    import huggingface_hub.constants

    repo = tmp_path / "hub" / "models--timm--vit_tiny_patch16_224.augreg_in21k_ft_in1k"
    weights = repo / "snapshots" / COMMIT / "model.safetensors"
    weights.parent.mkdir(parents=True)
    weights.write_bytes(b"\x40\x00\x00\x00\x00\x00\x00\x00" + b'{"pos_embed": {"dtype": "F32", "shape": [1, 197')
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(COMMIT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    msg = _error(capsys, "modes", "timm:vit_tiny_patch16_224", "-q", "-o", str(tmp_path / "m.zarr"))
    assert f"cannot read checkpoint {weights}: SafetensorError: " in msg and "may be truncated" in msg, msg
    assert f"delete {weights} and download it again (`hf download timm/vit_tiny_patch16_224" in msg, msg
    assert "not available" not in msg and not (tmp_path / "m.zarr").exists()


def test_a_hub_config_that_is_not_json_is_not_blamed_on_offline_mode(hub: dict[str, Path], capsys) -> None:
    """A corrupt config.json was reported as the model not being available offline."""
    from qkdissect.models import load_model

    hub["config"].resolve().write_text('{"model_type": "deit", "hidden_size": 6')
    for msg in (
        _error(capsys, "modes", "hf:someorg/tiny-deit", "-q", "-o", str(hub["out"])),
        _one_line_error(lambda: load_model("hf:someorg/tiny-deit")),
    ):
        assert f"{hub['config']} is not valid JSON (" in msg and "line 1, column" in msg, msg
        assert f"delete {hub['config'].resolve()} and download it again" in msg and "OFFLINE" not in msg, msg
    assert not hub["out"].exists()


def test_a_hub_blob_that_no_longer_matches_its_name_is_refused_when_resolved(hub: dict[str, Path], capsys) -> None:
    """The hub cache names a file by its content (sha256, or git's blob id): a file changed since is refused by
    resolve, which used to record its new content without a word."""
    manifest = hub["out"].with_suffix(".json")
    assert main_ok("resolve", "hf:someorg/tiny-deit", "-o", str(manifest))  # the cache as downloaded: fine
    for f, offset in ((hub["weights"], -10), (hub["config"], 5)):  # one byte each: the size is unchanged
        blob = f.resolve()
        data = bytearray(blob.read_bytes())
        data[offset] ^= 1
        blob.write_bytes(bytes(data))
        msg = _error(capsys, "resolve", "hf:someorg/tiny-deit", "-o", str(manifest))
        assert f"hub cache file {f} does not hold the content its name {blob.name} says" in msg, msg
        assert f"delete {blob} and download it again (`hf download someorg/tiny-deit`" in msg, msg
        data[offset] ^= 1
        blob.write_bytes(bytes(data))


def main_ok(*argv: str) -> bool:
    from qkdissect.cli import main

    return main(list(argv)) == 0
