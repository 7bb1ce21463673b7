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


#: files inside a store that are not its content: Snakemake's timestamp marker of a directory() output
NOT_CONTENT = frozenset({".snakemake_timestamp"})


def tree_sha256(path: str | Path) -> str:
    """sha256 of a file, or of a directory tree (relative paths and contents, in sorted order; workflow markers
    such as ``.snakemake_timestamp`` excluded, so a store's digest depends on its content only)."""
    import hashlib

    p = Path(path)
    h = hashlib.sha256()
    files = [p] if p.is_file() else sorted(f for f in p.rglob("*") if f.is_file() and f.name not in NOT_CONTENT)
    for f in files:
        if p.is_dir():
            h.update(f.relative_to(p).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
    return h.hexdigest()


def store_attrs(path: str | Path) -> dict[str, Any]:
    """The root attributes of a Zarr v3 store, read from its metadata without opening the arrays."""
    import json

    meta = Path(path) / "zarr.json"
    return dict(json.loads(meta.read_text()).get("attributes", {})) if meta.exists() else {}


def input_record(path: str | Path) -> dict[str, Any]:
    """What a figure records about one input: its path and digest, and for a store the model it describes and
    the weights that model was computed from."""
    p = Path(path)
    rec: dict[str, Any] = {"path": str(p), "sha256": tree_sha256(p) if p.exists() else None}
    attrs = store_attrs(p) if p.is_dir() else {}
    if attrs:
        prov = attrs.get("provenance", {})
        rec.update(
            {
                "schema": attrs.get("qkdissect_schema"),
                "model_id": attrs.get("model_id"),
                "finished": prov.get("finished"),
                "code_commit": prov.get("code", {}).get("git", {}).get("commit"),
            }
        )
        weights = prov.get("weights") or {}
        if weights:
            rec["weights"] = {k: weights.get(k) for k in ("spec", "sha256", "revision", "origin")}
        upstream = prov.get("inputs")
        if upstream:
            rec["upstream"] = upstream
    return rec


def figure_record(
    name: str,
    parameters: dict[str, Any],
    inputs: list[str | Path],
    notebook: str | Path | None = None,
) -> dict[str, Any]:
    """The provenance of a figure: the notebook that drew it, its parameters and its inputs (with digests)."""
    rec = base_record("figure", parameters)
    rec["figure"] = name
    rec["inputs"] = [input_record(p) for p in inputs]
    if notebook is not None:
        nb = Path(notebook)
        rec["notebook"] = {"path": str(nb), "sha256": tree_sha256(nb) if nb.exists() else None}
    rec["finished"] = utc_now()
    return rec
