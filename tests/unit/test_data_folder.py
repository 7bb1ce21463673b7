"""One data folder for `make`, the CLI, the Python API and a bare `snakemake`: $QKDISSECT_DATA when set; inside a
checkout of qkdissect, its data/ folder (found from the working directory, also one folder down, as a notebook
runs); elsewhere the user cache. Weights converted by one of them are found by the others."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qkdissect.locations import CHECKOUT_MARKERS, IMGFOCUS_CHECKPOINT, checkout_root, data_dir, weights_files
from tests.helpers import REPO


def _checkout(root: Path) -> Path:
    """A folder that looks like a checkout of qkdissect (its marker files), with a notebooks/ folder."""
    for marker in CHECKOUT_MARKERS:
        (root / marker).parent.mkdir(parents=True, exist_ok=True)
        (root / marker).write_text("")
    (root / "notebooks").mkdir()
    return root


@pytest.fixture
def no_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No $QKDISSECT_DATA; the user cache under tmp_path/cache."""
    monkeypatch.delenv("QKDISSECT_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "qkdissect"


def test_inside_a_checkout_its_data_folder(no_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _checkout(tmp_path / "clone").resolve()
    for where in (root, root / "notebooks"):
        monkeypatch.chdir(where)
        assert checkout_root() == root
        assert data_dir() == root / "data"
    # what the Makefile used to set: the same paths, so a bare snakemake sees the inputs make's run recorded
    monkeypatch.setenv("QKDISSECT_DATA", str(root / "data"))
    with_env = weights_files("dinov2-vits14-imgfocus").converted
    monkeypatch.delenv("QKDISSECT_DATA")
    assert weights_files("dinov2-vits14-imgfocus").converted == with_env == [root / "data" / IMGFOCUS_CHECKPOINT]


def test_elsewhere_the_user_cache(no_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "elsewhere").mkdir()
    monkeypatch.chdir(tmp_path / "elsewhere")
    assert checkout_root() is None
    assert data_dir() == no_env
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert data_dir() == Path.home() / ".cache" / "qkdissect"


def test_half_a_checkout_is_not_one(no_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A folder with a workflow/Snakefile only (say a deployed workflow) keeps the user cache: one copy of the
    weights for all of them."""
    (tmp_path / "deployed/workflow").mkdir(parents=True)
    (tmp_path / "deployed/workflow/Snakefile").write_text("")
    monkeypatch.chdir(tmp_path / "deployed")
    assert data_dir() == no_env


def test_the_variable_wins(no_env: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _checkout(tmp_path / "clone")
    monkeypatch.chdir(root)
    monkeypatch.setenv("QKDISSECT_DATA", str(tmp_path / "shared-data"))
    assert data_dir() == tmp_path / "shared-data"


def test_this_checkout_is_one() -> None:
    assert checkout_root(REPO / "notebooks") == REPO.resolve()


def _models(cwd: Path, env: dict[str, str]) -> dict[str, str]:
    r = subprocess.run(
        [sys.executable, "-m", "qkdissect", "models", "--json"], cwd=cwd, env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr
    return {row["key"]: row["available"] for row in json.loads(r.stdout)}


def test_models_sees_what_make_converted(tmp_path: Path) -> None:
    """`qkdissect models` run in a checkout (or one folder down) reports the weights in the checkout's data/ as
    converted, with no variable set; outside the checkout, the user cache is asked instead."""
    root = _checkout(tmp_path / "clone")
    (root / "data" / IMGFOCUS_CHECKPOINT).parent.mkdir(parents=True)
    (root / "data" / IMGFOCUS_CHECKPOINT).write_bytes(b"converted by make")
    env = {k: v for k, v in os.environ.items() if k != "QKDISSECT_DATA"}
    env |= {"XDG_CACHE_HOME": str(tmp_path / "cache"), "PYTHONPATH": str(REPO / "src")}
    assert _models(root / "notebooks", env)["dinov2-vits14-imgfocus"] == "converted"
    assert _models(tmp_path, env)["dinov2-vits14-imgfocus"] != "converted"
