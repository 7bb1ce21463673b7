"""A store's digest of its own content, recorded when it is written and checked when it is read.

Every file of a store but its root ``zarr.json`` (the arrays' metadata and every chunk) is listed with its sha256
in ``attrs["qkdissect_content"]`` (path inside the store -> sha256) once the store is complete. :func:`gone`
checks cheaply (one ``stat`` per file, no read) that every recorded chunk is still there; the audit re-hashes them
(:func:`differences`) and names each chunk that changed, is gone or was added.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

#: the root attribute holding {path inside the store: sha256} of every content file
CONTENT_ATTR = "qkdissect_content"
#: files inside a store that are not its content: the root metadata (which holds the record itself) and
#: Snakemake's timestamp marker of a directory() output
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
        if f.is_file() and f.name not in NOT_CONTENT and (rel := f.relative_to(store).as_posix()) != ROOT_META
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


def differences(now: dict[str, str], before: dict[str, str]) -> dict[str, list[str]]:
    """Which files differ between a store's recorded digests and those of its files now."""
    return {
        "changed": sorted(r for r in before.keys() & now.keys() if before[r] != now[r]),
        "gone": sorted(before.keys() - now.keys()),
        "added": sorted(now.keys() - before.keys()),
    }
