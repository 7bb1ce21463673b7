"""``qkdissect bundle``: a results folder as one zip that anyone can redraw every figure from.

The bundle holds what the folder's RO-Crate (``ro-crate-metadata.json``) lists, and the crate itself: the stores,
weights manifests, figures and their provenance, the claims, the mode atlas, the executed notebooks, the run's
config files and workflow. It is content-addressed: the crate gives every file's sha256 (a store's files each as a
part of the store), and each file is checked against it as it is written into the zip (a file changed since the
crate was written stops the bundle). It is deterministic: members in sorted order, each with the same fixed time,
permissions and compression, so the same results give the same bytes (and the same archive checksum). What can be
redrawn from the rest (the figures, their provenance pages and executed notebooks, the mode atlas's page) may be
left out (``redrawable=False``): the reader's ``make figures`` draws them again.

Fetching it back (verified before anything is unpacked) is :mod:`qkdissect.provenance.fetch`.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import QKDissectError
from .audit import CRATE

#: every member's time in the zip (the earliest a zip can hold): the same results give the same bytes
ZIP_TIME = (1980, 1, 1, 0, 0, 0)
#: every member's permissions (a regular file, rw-r--r--)
ZIP_MODE = 0o100644
#: what a figure or page is drawn into: redrawn by ``make figures`` from the stores (left out with redrawable=False)
REDRAWABLE = ("figures/", "notebooks/", "atlas/")
#: what each top folder of a results folder holds, for the size report (anything else: its folder's name)
KINDS = {
    "figures": "figures",
    "notebooks": "executed notebooks",
    "atlas": "mode atlas page",
    "claims": "claims",
    "run": "config and workflow",
    "weights": "weights manifests",
    CRATE: "RO-Crate",
    "README.md": "RO-Crate",
}
_BLOCK = 1 << 20


@dataclass
class Bundled:
    """What a bundle holds: its path, bytes per kind and file count, and what was left out."""

    path: Path
    sizes: dict[str, int] = field(default_factory=dict)
    files: dict[str, int] = field(default_factory=dict)
    left_out: int = 0

    def report(self) -> list[str]:
        """One line per kind (largest first) and the total."""
        width = max((len(k) for k in self.sizes), default=5)
        rows = sorted(self.sizes.items(), key=lambda kv: (-kv[1], kv[0]))
        lines = [f"{k:<{width}}  {_mb(n):>10}  {self.files[k]:>6} files" for k, n in rows]
        total, count = sum(self.sizes.values()), sum(self.files.values())
        lines.append(f"{'total':<{width}}  {_mb(total):>10}  {count:>6} files (uncompressed)")
        return lines


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB" if n >= 100_000 else f"{n / 1e3:.1f} kB"


def kind_of_member(name: str) -> str:
    """The kind a member of a bundle counts under in the size report: its top folder's."""
    top = name.split("/", 1)[0]
    return KINDS.get(top, top)


def is_redrawable(name: str) -> bool:
    """A member that ``make figures`` draws again from the rest."""
    return name.startswith(REDRAWABLE)


def crate_files(crate: dict[str, Any]) -> dict[str, str]:
    """{path inside the crate: sha256} of every File the crate describes (a folder's files included; contextual
    entities, whose ids start with ``#`` or are URLs, are not files of the crate)."""
    graph = crate.get("@graph")
    if not isinstance(graph, list):
        raise QKDissectError(f"{CRATE} has no @graph: not an RO-Crate")
    out: dict[str, str] = {}
    for e in graph:
        if not isinstance(e, dict) or not isinstance(eid := e.get("@id"), str):
            continue
        types = e.get("@type")
        is_file = "File" in (types if isinstance(types, list) else [types])
        if is_file and isinstance(e.get("sha256"), str) and not eid.startswith("#") and "://" not in eid:
            out[eid] = e["sha256"]
    return out


def _listed(results: Path) -> dict[str, str]:
    path = results / CRATE
    if not path.is_file():
        raise QKDissectError(
            f"{results} has no {CRATE}: write it first (`qkdissect crate {results}`, or run the workflow)"
        )
    try:
        crate = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise QKDissectError(f"{path} cannot be read as JSON ({e}): write it again (`qkdissect crate`)") from e
    files = crate_files(crate)
    if not files:
        raise QKDissectError(f"{path} lists no file with its sha256: write it again (`qkdissect crate {results}`)")
    return files


def _members(results: Path, redrawable: bool) -> tuple[list[tuple[str, str | None]], int]:
    """(name, sha256 from the crate; None for the crate itself) of every member, sorted; and how many were left
    out as redrawable."""
    listed = _listed(results)
    keep = {n: d for n, d in listed.items() if redrawable or not is_redrawable(n)}
    members: list[tuple[str, str | None]] = [(CRATE, None), *sorted(keep.items())]
    return members, len(listed) - len(keep)


def _copy(src: Path, dst: Any, expected: str | None, name: str) -> int:
    """Copy ``src`` into an open zip member, checking its sha256; returns its size."""
    h, n = hashlib.sha256(), 0
    with src.open("rb") as fh:
        for block in iter(lambda: fh.read(_BLOCK), b""):
            h.update(block)
            dst.write(block)
            n += len(block)
    if expected is not None and h.hexdigest() != expected:
        raise QKDissectError(
            f"{name} is not the file the crate lists (sha256 {expected[:12]}… there, {h.hexdigest()[:12]}… now): "
            "changed after the crate was written; run the workflow again (it rewrites the crate) or audit it "
            "(`qkdissect audit`)"
        )
    return n


def member_info(name: str, size: int) -> zipfile.ZipInfo:
    """The fixed header of a member: time, permissions, system and compression the same for every bundle."""
    info = zipfile.ZipInfo(name, date_time=ZIP_TIME)
    info.external_attr = ZIP_MODE << 16
    info.create_system = 3  # Unix, wherever the bundle is made
    info.compress_type = zipfile.ZIP_DEFLATED
    info.file_size = size
    return info


def _write(results: Path, out: Path, members: list[tuple[str, str | None]], made: Bundled) -> None:
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=6) as zf:
        for name, digest in members:
            src = results / name
            if not src.is_file() or src.is_symlink():
                raise QKDissectError(
                    f"{name}, listed in {CRATE}, is {'a link' if src.is_symlink() else 'gone'}: run the workflow "
                    "again (it rewrites the crate)"
                )
            size = src.stat().st_size
            with zf.open(member_info(name, size), "w", force_zip64=size >= 1 << 31) as dst:
                _copy(src, dst, digest, name)
            kind = kind_of_member(name)
            made.sizes[kind] = made.sizes.get(kind, 0) + size
            made.files[kind] = made.files.get(kind, 0) + 1


def write_bundle(results: str | Path, output: str | Path, redrawable: bool = True) -> Bundled:
    """Write the bundle of ``results`` to ``output`` (a zip, written whole or not at all); ``redrawable=False``
    leaves out the figures, executed notebooks and the mode atlas's page (redrawn from the rest)."""
    from ..util.atomic import atomic_path

    results = Path(results)
    if not results.is_dir():
        raise QKDissectError(f"{results} is not a folder: name a results folder (`qkdissect bundle results`)")
    members, left_out = _members(results, redrawable)
    made = Bundled(Path(output), left_out=left_out)
    with atomic_path(output) as tmp:
        _write(results, tmp, members, made)
    return made
