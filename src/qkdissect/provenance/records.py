"""What every artefact records about where it came from: the code (git state, source digest, package
versions), the config sections in force, the host, and each input with its digest."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata as md
import json
import os
import platform
import subprocess
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

#: the package's own source folder (src/qkdissect), whose code version every artefact records
PACKAGE_ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("qkdissect", "torch", "timm", "transformers", "numpy", "scipy", "xarray", "zarr", "safetensors", "onnx")


def package_versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for p in PACKAGES:
        try:
            out[p] = md.version(p)
        except md.PackageNotFoundError:
            out[p] = "not installed"
    return out


#: set by the workflow (workflow/rules/common.smk, :func:`export_workflow_checkout`) for its jobs: the checkout it
#: runs from, whose commit every artefact it makes records as the code that ran
WORKFLOW_CHECKOUT_ENV = "QKDISSECT_WORKFLOW_CHECKOUT"


#: the workflow installed with the package (copied into the wheel by setup.py; qkdissect.launch runs it)
INSTALLED_WORKFLOW = PACKAGE_ROOT / "_workflow"


def export_workflow_checkout(path: str | Path) -> None:
    """Tell the commands this process starts (the workflow's jobs) which checkout the workflow runs from. The
    workflow installed with the package is no checkout (a git repository around the environment it is installed
    in is not its code): its jobs record the installed version."""
    where = Path(path).resolve()
    if where == INSTALLED_WORKFLOW.resolve():
        os.environ.pop(WORKFLOW_CHECKOUT_ENV, None)
        return
    os.environ[WORKFLOW_CHECKOUT_ENV] = str(where)


def _git(where: Path, *args: str) -> str:
    return subprocess.run(
        ["git", *args], cwd=where, capture_output=True, text=True, timeout=10, check=True
    ).stdout.strip()


def _is_qkdissect_checkout(top: Path) -> bool:
    """Whether ``top`` is the top of a git checkout of qkdissect itself (its pyproject names the project), not a
    repository the package happens to be installed in (a venv inside a user's analysis repository)."""
    try:
        name = tomllib.loads((top / "pyproject.toml").read_text())["project"]["name"]
        return bool(name == "qkdissect" and Path(_git(top, "rev-parse", "--show-toplevel")).resolve() == top)
    except (OSError, KeyError, TypeError, tomllib.TOMLDecodeError, subprocess.SubprocessError):
        return False


def code_checkout(package_root: Path | None = None) -> tuple[Path | None, str]:
    """The git checkout whose commit names the code that runs, and what it is: the workflow's checkout when run
    from the workflow; else the package's own when it is imported from a checkout of qkdissect (src/qkdissect);
    else none (an installed package: its version says what ran)."""
    workflow = os.environ.get(WORKFLOW_CHECKOUT_ENV)
    if workflow:
        return Path(workflow), "workflow checkout"
    top = (package_root or PACKAGE_ROOT).parents[1]
    return (top, "package checkout") if _is_qkdissect_checkout(top) else (None, "installed package")


def git_state(path: str | Path | None = None) -> dict[str, Any]:
    """Commit and dirty flag of the git checkout holding ``path``; by default of the code that runs
    (:func:`code_checkout`), or the installed version where that is no checkout of qkdissect."""
    where, what = (Path(path), "path") if path is not None else code_checkout()
    if where is None:
        return {"commit": None, "dirty": None, "checkout": what, "version": _version()}
    try:
        commit = _git(where, "rev-parse", "HEAD")
        status = _git(where, "status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return {"commit": None, "dirty": None, "checkout": what, "version": _version(), "note": "not a git checkout"}
    return {"commit": commit, "dirty": bool(status), "checkout": what}


def _version() -> str:
    try:
        return md.version("qkdissect")
    except md.PackageNotFoundError:
        return "not installed"


@functools.cache
def source_sha256() -> str:
    """sha256 of this package's Python source (relative names and contents): the code version an artefact was
    made with, also for an installed package where there is no git checkout."""
    root = PACKAGE_ROOT
    h = hashlib.sha256()
    for f in sorted(root.rglob("*.py")):
        h.update(f.relative_to(root).as_posix().encode() + b"\0" + f.read_bytes() + b"\0")
    return h.hexdigest()


def code_record() -> dict[str, Any]:
    """The code that made an artefact: git commit and dirty flag, digest of the package source, package versions."""
    return {"git": git_state(), "source_sha256": source_sha256(), "packages": package_versions()}


#: set by the workflow's rules: the config file(s) in force (os.pathsep-separated) and, as a JSON list of key
#: paths, the sections of the config the artefact depends on
CONFIG_FILES_ENV = "QKDISSECT_CONFIG_FILES"
CONFIG_KEYS_ENV = "QKDISSECT_CONFIG_KEYS"


def export_config_files(files: Iterable[str | Path]) -> None:
    """Tell the commands this process starts (the workflow's jobs) which config files are in force: through the
    environment, so that a config's path is never part of a job's command."""
    os.environ[CONFIG_FILES_ENV] = os.pathsep.join(str(Path(f).resolve()) for f in files)


def _merged_config(files: Iterable[str | Path]) -> dict[str, Any]:
    """The config files merged in order the way Snakemake merges them (nested mappings updated key by key)."""
    import yaml

    def merge(into: dict[str, Any], new: dict[str, Any]) -> None:
        for k, v in new.items():
            if isinstance(v, dict) and isinstance(into.get(k), dict):
                merge(into[k], v)
            else:
                into[k] = v

    out: dict[str, Any] = {}
    for f in files:
        merge(out, yaml.safe_load(Path(f).read_text()) or {})
    return out


def config_value(config: Mapping[str, Any], key: Iterable[str]) -> Any:
    """The config's value at a key path; None where a section on the way is not set (null, false or absent)."""
    value: Any = config
    for part in key:
        if not isinstance(value, Mapping):
            return None
        value = value.get(part)
    return value


def config_values(files: Iterable[str | Path], keys: Iterable[Iterable[str]]) -> dict[str, Any]:
    """The values under each key path (joined with '/') of the merged config files; None where absent."""
    cfg = _merged_config(files)
    out = {"/".join(path): config_value(cfg, path) for path in map(list, keys)}
    return json.loads(json.dumps(out, default=str))


def recorded_path(path: str | Path) -> str:
    """How a record names a file the workflow read (a config file, a figure's notebook): relative to the working
    directory (the workflow's folder, which holds ``results/``) when it lies inside it, as the stores are named, so
    that the audit finds it where the results are now (a checkout moved with its results; results copied into
    another checkout: that checkout's file); absolute when it lies elsewhere."""
    p = Path(path).resolve()
    try:
        return p.relative_to(Path.cwd().resolve()).as_posix()
    except ValueError:
        return str(p)


def config_record() -> dict[str, Any] | None:
    """What the workflow's config said about an artefact (from the environment the rules set), or None."""
    files = [f for f in os.environ.get(CONFIG_FILES_ENV, "").split(os.pathsep) if f]
    if not files:
        return None
    keys = json.loads(os.environ.get(CONFIG_KEYS_ENV) or "[]")
    return {
        "files": [{"path": recorded_path(f), "sha256": tree_sha256(f)} for f in files],
        "values": config_values(files, keys),
    }


def base_record(kind: str, parameters: dict[str, Any]) -> dict[str, Any]:
    """The fields every artefact carries: what made it, with which code and config, on which machine."""
    rec: dict[str, Any] = {
        "kind": kind,
        "parameters": parameters,
        "code": code_record(),
        "host": {"platform": platform.platform(), "machine": platform.machine()},
    }
    cfg = config_record()
    if cfg is not None:
        rec["config"] = cfg
    return rec


def dependency(role: str, path: str | Path, sha256: str | None = None, **extra: Any) -> dict[str, Any]:
    """One input an artefact was made from, as `qkdissect audit` re-checks it: a file or a directory tree (a
    store) with its sha256 (computed here unless given)."""
    p = Path(path)
    digest = sha256 if sha256 is not None else (tree_sha256(p) if p.exists() else None)
    return {"role": role, "path": str(path), "sha256": digest, **extra}


def items_sha256(digests: Iterable[tuple[str, str | None]]) -> str:
    """One digest of a list of (id, per-item sha256): an image set or a mask dataset as it was read."""
    h = hashlib.sha256()
    for item_id, d in digests:
        h.update(f"{item_id}\t{d or ''}\n".encode())
    return h.hexdigest()


#: files inside a store (paths relative to it) that are not its content: Snakemake's timestamp marker of a
#: directory() output, empty, at the store's root only (the same as :data:`qkdissect.stores.content.NOT_CONTENT`,
#: repeated so that this module does not import xarray)
NOT_CONTENT = frozenset({".snakemake_timestamp"})


def tree_sha256(path: str | Path) -> str:
    """sha256 of a file, or of a directory tree (relative paths and contents, in sorted order; the workflow's
    marker at the root, ``.snakemake_timestamp``, excluded, so a store's digest depends on its content only)."""
    return tree_digests(path)[0]


def _is_marker(tree: Path, f: Path) -> bool:
    """Snakemake's marker: empty, at the root of the tree."""
    return f.relative_to(tree).as_posix() in NOT_CONTENT and f.stat().st_size == 0


def drop_workflow_markers(results: str | Path) -> list[Path]:
    """Remove the ``.snakemake_timestamp`` that Snakemake leaves at the root of every directory() output from the
    stores under ``results`` (a store holds its own files only). The marker's time passes to the store's folder,
    where Snakemake reads a directory's time when it has no marker: the workflow sees the same times as before.
    Returns what was removed."""
    removed: list[Path] = []
    for dirpath, dirnames, filenames in os.walk(results):
        if "zarr.json" not in filenames:
            continue
        dirnames.clear()  # a store's arrays hold no marker of Snakemake's
        for name in NOT_CONTENT & set(filenames):
            marker = Path(dirpath) / name
            if _is_marker(marker.parent, marker):  # nothing written by anyone else
                stamp = marker.stat()
                marker.unlink()
                os.utime(dirpath, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))  # the store's time, as Snakemake saw it
                removed.append(marker)
    return sorted(removed)


def tree_digests(path: str | Path) -> tuple[str, dict[str, str]]:
    """:func:`tree_sha256` of a file or tree and, for a tree, the sha256 of each of its files (relative path ->
    digest; empty for a file), reading every file once."""
    p = Path(path)
    tree = not p.is_file()
    h = hashlib.sha256()
    each: dict[str, str] = {}
    files = sorted(f for f in p.rglob("*") if f.is_file() and not _is_marker(p, f)) if tree else [p]
    for f in files:
        one = hashlib.sha256() if tree else None
        if tree:
            h.update(f.relative_to(p).as_posix().encode() + b"\0")
        with f.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
                if one is not None:
                    one.update(block)
        if one is not None:
            each[f.relative_to(p).as_posix()] = one.hexdigest()
    return h.hexdigest(), each


def store_attrs(path: str | Path) -> dict[str, Any]:
    """The root attributes of a Zarr v3 store, read from its metadata without opening the arrays."""
    meta = Path(path) / "zarr.json"
    return dict(json.loads(meta.read_text()).get("attributes", {})) if meta.exists() else {}
