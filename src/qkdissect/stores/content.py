"""A store's digest of its own content, recorded when it is written and checked when it is read.

Every file of a store but its root ``zarr.json`` (the arrays' metadata and every chunk) is listed with its sha256
in ``attrs["qkdissect_content"]`` (path inside the store -> sha256) once the store is complete. :func:`gone`
checks cheaply (one ``stat`` per file, no read) that every recorded chunk is still there; the audit re-hashes them
(:func:`differences`) and names each chunk that changed, is gone or was added.

The root ``zarr.json`` also holds the consolidated copy of every array's metadata (written with the store, before
the record; the record leaves it as it is): the audit checks that it is the arrays' own metadata
(:func:`stale_metadata`), so what a plain ``xr.open_zarr`` reads is what the record covers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

#: the root attribute holding {path inside the store: sha256} of every content file
CONTENT_ATTR = "qkdissect_content"
#: files inside a store (paths relative to it) that are not its content: Snakemake's timestamp marker of a
#: directory() output, empty, at the root only (the workflow removes it when it ends); the root metadata is not content
#: either: it holds the record itself, and the consolidated copy of the arrays' metadata (see :func:`stale_metadata`)
NOT_CONTENT = frozenset({".snakemake_timestamp"})
ROOT_META = "zarr.json"


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def content_files(store: Path) -> list[str]:
    """The content files of a store (sorted paths inside it, '/'-separated)."""
    return sorted(
        rel
        for f in store.rglob("*")
        if f.is_file()
        and (rel := f.relative_to(store).as_posix()) != ROOT_META
        and not (rel in NOT_CONTENT and f.stat().st_size == 0)
    )


def content_digests(store: Path) -> dict[str, str]:
    """{path inside the store: sha256} of every content file."""
    return {rel: file_sha256(store / rel) for rel in content_files(store)}


def record_content(store: Path) -> None:
    """Write the digests of a complete store into its root attributes (before it is renamed into place)."""
    meta_path = store / ROOT_META
    meta = json.loads(meta_path.read_text())
    meta.setdefault("attributes", {})[CONTENT_ATTR] = content_digests(store)
    meta_path.write_text(json.dumps(meta, indent=2))


def recorded(attrs: dict[str, Any]) -> dict[str, str] | None:
    """The content record in a store's attributes, or None for a store written before there was one."""
    rec = attrs.get(CONTENT_ATTR)
    return dict(rec) if isinstance(rec, dict) else None


def gone(store: Path, attrs: dict[str, Any]) -> list[str]:
    """Recorded content files that are not there any more (a stat each, nothing read)."""
    return [rel for rel in recorded(attrs) or {} if not (store / rel).is_file()]


def stale_metadata(store: Path) -> list[str]:
    """The arrays whose metadata in the root's consolidated copy (what a plain ``xr.open_zarr`` reads) is not
    their own ``zarr.json`` (which the record covers): changed, missing from the copy, or listed there but gone.
    Empty for a store without a consolidated copy."""
    meta = json.loads((store / ROOT_META).read_text())
    copy = (meta.get("consolidated_metadata") or {}).get("metadata")
    if copy is None:
        return []
    own = {
        f.parent.relative_to(store).as_posix(): json.loads(f.read_text())
        for f in store.rglob(ROOT_META)
        if f.parent != store
    }
    return sorted(n for n in own.keys() | copy.keys() if own.get(n) != copy.get(n))


def differences(now: dict[str, str], before: dict[str, str]) -> dict[str, list[str]]:
    """Which files differ between a store's recorded digests and those of its files now."""
    return {
        "changed": sorted(r for r in before.keys() & now.keys() if before[r] != now[r]),
        "gone": sorted(before.keys() - now.keys()),
        "added": sorted(now.keys() - before.keys()),
    }
