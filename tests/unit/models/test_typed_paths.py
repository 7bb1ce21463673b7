"""A relative path a user types (a command-line or Python argument) is taken from the working directory as given,
'..' included: `qk.modes("timm:NAME@../weights/w.safetensors")` from a notebook one folder down. One that comes
from a config (the workflow's jobs, $QKDISSECT_PATHS_FROM_CONFIG=1) never climbs above the run's folder."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import qkdissect as qk
from qkdissect.cli import main
from qkdissect.data.files import OutsideRootError
from qkdissect.models.spec import PATHS_FROM_CONFIG
from qkdissect.stores import open_store
from tests.helpers import make_tiny_vit


@pytest.fixture
def notebook(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A tiny ViT in project/weights/, the working directory project/notebooks/; returns the spec with '..'."""
    spec = make_tiny_vit(tmp_path / "project/weights")
    (tmp_path / "project/notebooks").mkdir()
    monkeypatch.chdir(tmp_path / "project/notebooks")
    monkeypatch.delenv(PATHS_FROM_CONFIG, raising=False)
    return spec.replace(str(tmp_path / "project/weights"), "../weights")


def test_a_typed_path_climbs(notebook: str, tmp_path: Path) -> None:
    assert "@../weights/tiny.safetensors?" in notebook
    typed = qk.modes(notebook)
    absolute = qk.modes(notebook.replace("../weights", str(tmp_path / "project/weights")))
    np.testing.assert_array_equal(typed.S.values, absolute.S.values)
    assert main(["modes", notebook, "-o", "tiny.zarr", "-q"]) == 0
    np.testing.assert_array_equal(open_store("tiny.zarr", "modes").S.values, typed.S.values)


def test_a_config_path_does_not(notebook: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    monkeypatch.setenv(PATHS_FROM_CONFIG, "1")
    with pytest.raises(OutsideRootError, match="leads outside"):
        qk.modes(notebook)
    assert main(["modes", notebook, "-o", "tiny.zarr", "-q"]) == 2
    assert "leads outside" in capsys.readouterr().err
    assert not Path("tiny.zarr").exists()


@pytest.mark.parametrize("spec", ["simmim:../ckpt.pth", "ijepa:../ckpt.pth.tar#encoder"])
def test_typed_checkpoints_are_taken_as_given(spec: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """simmim:/ijepa: paths that climb are looked up from the working directory, not under the data folder."""
    from qkdissect.models.loading import parse_spec

    (tmp_path / "here").mkdir()
    monkeypatch.chdir(tmp_path / "here")
    monkeypatch.delenv(PATHS_FROM_CONFIG, raising=False)
    assert parse_spec(spec).weights == Path(spec.partition(":")[2].partition("#")[0])
    monkeypatch.setenv(PATHS_FROM_CONFIG, "1")
    with pytest.raises(OutsideRootError):
        parse_spec(spec)
