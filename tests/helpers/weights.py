"""The command line in a child process, and data directories and files for the tests of converted weights."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "qkdissect", *args], capture_output=True, text=True, env={**os.environ, **(env or {})}
    )


def data_with_wheel(tmp_path: Path, wheel: Path) -> Path:
    """A data directory holding only ``wheel`` (linked from the repo's data/wheels): nothing converted yet."""
    data = tmp_path / "data"
    (data / "wheels").mkdir(parents=True)
    (data / "wheels" / wheel.name).symlink_to(wheel)
    return data


def flip(path: Path, offset: int = -100) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))
