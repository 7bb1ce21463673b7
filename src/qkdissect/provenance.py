"""What every stored array records about where it came from."""

from __future__ import annotations

import datetime as _dt
import importlib.metadata as md
import platform
import subprocess
from pathlib import Path
from typing import Any

PACKAGES = ("qkdissect", "torch", "timm", "transformers", "numpy", "scipy", "xarray", "zarr", "safetensors", "onnx")


def utc_now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = "not installed"
    return out


def git_state(path: str | Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the git checkout holding ``path`` (default: this package's source)."""
    where = Path(path) if path is not None else Path(__file__).resolve().parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=where, capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=where,
            capture_output=True,
            text=True,
            timeout=10,
            check=True,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "note": "not a git checkout (installed package)"}
    return {"commit": commit, "dirty": bool(status.strip())}


def base_record(kind: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The fields every artefact carries: what made it, with which code, on which machine."""
    return {
        "kind": kind,
        "parameters": parameters,
        "code": {"git": git_state(), "packages": package_versions()},
        "host": {"platform": platform.platform(), "machine": platform.machine()},
    }
