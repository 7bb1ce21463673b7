"""The weights lock: pinned on the first resolve, drift refused with the file named, re-pinned on request, and
safe with several resolves at once (the workflow's weights jobs)."""

from __future__ import annotations

import json
import subprocess
import sys
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import pytest

from qkdissect.errors import QKDissectError
from qkdissect.models.weights_lock import check_lock
from tests.helpers import make_tiny_vit


def manifest(model: str, weights: str = "a" * 64, revision: str | None = "r1", tensors: str | None = None) -> dict:
    files = [{"role": "config.json", "path": "/x/config.json", "sha256": "c" * 64},
             {"role": "weights", "path": f"/x/{model}.safetensors", "sha256": weights}]  # fmt: skip
    if tensors:
        files[1]["tensor_digest"] = tensors
    return {"model": model, "spec": f"hf:org/{model}", "revision": revision, "files": files}


def test_first_resolve_pins_later_ones_check(tmp_path: Path) -> None:
    lock = tmp_path / "paper.lock.json"
    assert check_lock(manifest("m"), lock) == "added"
    assert check_lock(manifest("m"), lock) == "same"
    pinned = json.loads(lock.read_text())["models"]["m"]
    assert pinned == {"spec": "hf:org/m", "revision": "r1", "files": {"config.json": "c" * 64, "weights": "a" * 64}}
    with pytest.raises(
        QKDissectError, match=r"m: the weights differ.*weights aaaaaaaaaaaa… -> bbbbbbbbbbbb….*--update-lock"
    ):
        check_lock(manifest("m", weights="b" * 64), lock)
    with pytest.raises(QKDissectError, match=r"hub revision r1 -> r2"):
        check_lock(manifest("m", revision="r2"), lock)
    assert json.loads(lock.read_text())["models"]["m"] == pinned  # a refusal changes nothing
    assert check_lock(manifest("m", weights="b" * 64), lock, update=True) == "updated"
    assert json.loads(lock.read_text())["models"]["m"]["files"]["weights"] == "b" * 64


def test_converted_files_are_pinned_by_their_tensors(tmp_path: Path) -> None:
    """A conversion that writes the same tensors with other file bytes is not a drift."""
    lock = tmp_path / "lock.json"
    check_lock(manifest("conv", weights="1" * 64, tensors="t" * 64), lock)
    assert check_lock(manifest("conv", weights="2" * 64, tensors="t" * 64), lock) == "same"
    with pytest.raises(QKDissectError, match="weights tttttttttttt… -> uuuuuuuuuuuu…"):
        check_lock(manifest("conv", tensors="u" * 64), lock)


def test_concurrent_resolves_all_land(tmp_path: Path) -> None:
    lock = tmp_path / "lock.json"
    names = [f"model-{i}" for i in range(8)]
    with ProcessPoolExecutor(4) as pool:
        assert list(pool.map(check_lock, [manifest(n) for n in names], [lock] * 8)) == ["added"] * 8
    assert sorted(json.loads(lock.read_text())["models"]) == names


def test_the_cli_refuses_a_changed_checkpoint(tmp_path: Path) -> None:
    spec = make_tiny_vit(tmp_path / "w")
    lock = tmp_path / "lock.json"

    def resolve(*extra: str) -> subprocess.CompletedProcess[str]:
        cmd = [sys.executable, "-m", "qkdissect", "resolve", spec, "--name", "tiny", "--lock", str(lock), *extra]
        return subprocess.run([*cmd, "-o", str(tmp_path / "m.json")], capture_output=True, text=True, timeout=300)

    assert resolve().returncode == 0
    assert json.loads((tmp_path / "m.json").read_text())["lock"]["status"] == "added"
    weights = Path(spec.split("@", 1)[1].split("?")[0])
    weights.write_bytes(weights.read_bytes()[:-4] + b"\0\0\0\0")
    r = resolve()
    assert r.returncode == 2 and "tiny: the weights differ from the ones pinned" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1  # one line, no traceback
    assert resolve("--update-lock").returncode == 0


def test_a_lock_entry_of_the_wrong_shape_names_the_file_and_the_entry(tmp_path: Path) -> None:
    """`"files": "abc"` in a lock gave an AttributeError; the lock file and the entry are named, with the fix."""
    lock = tmp_path / "paper.lock.json"
    check_lock(manifest("m"), lock)
    check_lock(manifest("other"), lock)
    data = json.loads(lock.read_text())
    for bad, what in (
        (
            {**data["models"]["m"], "files": "abc"},
            ": its 'files' is a str ('abc'), not an object of file role -> digest",
        ),
        (
            {**data["models"]["m"], "files": {"weights": 3}},
            ": its files.weights is an int (3), not a digest (a string)",
        ),
        ({**data["models"]["m"], "spec": ["x"]}, ": its 'spec' is a list (['x']), not a string"),
        ("abc", " is a str ('abc'), not an object with spec, revision and files"),
    ):
        lock.write_text(json.dumps({**data, "models": {**data["models"], "m": bad}}))
        for model in ("m", "other"):  # every entry is checked, not only the model resolved now
            with pytest.raises(QKDissectError) as e:
                check_lock(manifest(model), lock)
            msg = str(e.value)
            assert msg.startswith(f"weights lock {lock}: entry 'm'{what}: ") and "\n" not in msg, msg
            assert "correct the entry or delete it (the next resolve pins the model again)" in msg, msg
    lock.write_text(json.dumps({**data, "models": ["m"]}))
    with pytest.raises(
        QKDissectError,
        match=r"weights lock .*: its 'models' is a list \(\['m'\]\), not an object of model -> entry: correct it",
    ):
        check_lock(manifest("m"), lock)
