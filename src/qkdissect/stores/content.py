"""A store's digest of its own content, recorded when it is written and checked when it is read.

Once the store is complete, ``attrs["qkdissect_content"]`` records (version 2, :data:`CONTENT_VERSION`):

- ``files``: every file of the store but its root ``zarr.json`` (the arrays' own metadata and every chunk), path
  inside the store -> sha256;
- ``attributes``: every root attribute but the record itself (``null_low``, ``d_model``, ``provenance``, ...),
  name -> sha256 of its canonical JSON. Nothing changes a store's attributes after it is written.

:func:`damage` checks cheaply on every open (one ``stat`` per file, the root metadata read once) that every recorded
chunk is still there and that the attributes are those recorded; the audit and the workflow re-hash the files
(:func:`differences`) and name each chunk that changed, is gone or was added. A record of version 1 (stores written
before the attributes were recorded: the files' digests alone, as a flat mapping) is read as such: its files are
checked, its attributes cannot be.

The root ``zarr.json`` also holds the consolidated copy of every array's metadata (written with the store, before
the record; the record leaves it as it is): the audit checks that it is the arrays' own metadata
(:func:`stale_metadata`), so what a plain ``xr.open_zarr`` reads is what the record covers.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

from ..util.hashing import sha256_file
from ..util.ownership import ROOT_META, root_attrs

#: the root attribute holding the record: {"version": 2, "files": {path: sha256}, "attributes": {name: sha256}}
CONTENT_ATTR = "qkdissect_content"
CONTENT_VERSION = 2
#: files inside a store (paths relative to it) that are not its content: Snakemake's timestamp marker of a
#: directory() output, empty, at the root only (the workflow removes it when it ends); the root metadata is not content
#: either: it holds the record itself, and the consolidated copy of the arrays' metadata (see :func:`stale_metadata`)
NOT_CONTENT = frozenset({".snakemake_timestamp"})


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
    return {rel: sha256_file(store / rel) for rel in content_files(store)}


def attribute_digests(attrs: dict[str, Any]) -> dict[str, str]:
    """{name: sha256 of its value's canonical JSON} of every root attribute but the content record."""
    return {
        str(k): hashlib.sha256(json.dumps(v, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
        for k, v in attrs.items()
        if k != CONTENT_ATTR
    }


def record_content(store: Path) -> None:
    """Write the digests of a complete store (its files and root attributes) into its root attributes (before it
    is renamed into place)."""
    meta_path = store / ROOT_META
    meta = json.loads(meta_path.read_text())
    attrs = meta.setdefault("attributes", {})
    attrs.pop(CONTENT_ATTR, None)
    attrs[CONTENT_ATTR] = {
        "version": CONTENT_VERSION,
        "files": content_digests(store),
        "attributes": attribute_digests(attrs),
    }
    meta_path.write_text(json.dumps(meta, indent=2))


def _record(attrs: dict[str, Any]) -> dict[str, Any] | None:
    """The record as version 2 ({"version", "files", "attributes"}; a version-1 record has no "attributes")."""
    rec = attrs.get(CONTENT_ATTR)
    if not isinstance(rec, dict):
        return None
    if isinstance(rec.get("version"), int) and isinstance(rec.get("files"), dict):
        return rec
    return {"version": 1, "files": rec}  # written before the attributes were recorded: the files alone


def recorded(attrs: dict[str, Any]) -> dict[str, str] | None:
    """The files' digests in a store's content record, or None for a store written before there was one."""
    rec = _record(attrs)
    return dict(rec["files"]) if rec is not None else None


def recorded_attributes(attrs: dict[str, Any]) -> dict[str, str] | None:
    """The attributes' digests in a store's content record, or None where it has none (a version-1 record)."""
    rec = _record(attrs)
    found = rec.get("attributes") if rec is not None else None
    return dict(found) if isinstance(found, dict) else None


def gone(store: Path, attrs: dict[str, Any]) -> list[str]:
    """Recorded content files that are not there any more (a stat each, nothing read)."""
    return [rel for rel in recorded(attrs) or {} if not (store / rel).is_file()]


def changed_attributes(attrs: dict[str, Any]) -> dict[str, list[str]]:
    """Which root attributes differ from those recorded ("changed", "gone", "added"; all empty for a record
    without attributes)."""
    before = recorded_attributes(attrs)
    return differences(attribute_digests(attrs), before) if before is not None else differences({}, {})


def attributes_line(diff: dict[str, list[str]]) -> str:
    """What changed among a store's attributes, in words ("attribute null_high changed and attribute x added"; ""
    when nothing did)."""
    parts = [
        f"{'attributes' if len(names) > 1 else 'attribute'} {', '.join(names[:5])}"
        f"{f' and {len(names) - 5} more' if len(names) > 5 else ''} {verb}"
        for verb, names in (("changed", diff["changed"]), ("removed", diff["gone"]), ("added", diff["added"]))
        if names
    ]
    return " and ".join(parts)


def damage(store: Path) -> str:
    """Why a store must not be read (its recorded chunks gone, its attributes not those recorded), in words for
    "store X is damaged: ..."; "" when it is whole. Cheap: a stat per file and the root metadata read once (the
    chunks' content is checked by the audit and the workflow, :func:`differences`)."""
    attrs = root_attrs(store)
    missing = gone(store, attrs)
    if missing:
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        return f"its chunk {missing[0]}{more} is gone"
    changed = attributes_line(changed_attributes(attrs))
    return f"its {changed} after it was written" if changed else ""


def stale_metadata(store: Path) -> list[str]:
    """The arrays whose metadata in the root's consolidated copy (what a plain ``xr.open_zarr`` reads) is not
    their own ``zarr.json`` (which the record covers): changed, missing from the copy, or listed there but gone.
    Empty for a store without a consolidated copy (or whose root metadata is no JSON: the record says what
    changed); an array's metadata that is no JSON is not its copy."""
    meta = _json(store / ROOT_META)
    copy = (meta.get("consolidated_metadata") or {}).get("metadata") if isinstance(meta, dict) else None
    if not isinstance(copy, dict):
        return []
    own = {f.parent.relative_to(store).as_posix(): _json(f) for f in store.rglob(ROOT_META) if f.parent != store}
    return sorted(n for n in own.keys() | copy.keys() if own.get(n) is None or own.get(n) != copy.get(n))


def _json(path: Path) -> Any:
    """The JSON in a file, or None where it cannot be read as JSON (edited, truncated)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def differences(now: dict[str, str], before: dict[str, str]) -> dict[str, list[str]]:
    """Which files differ between a store's recorded digests and those of its files now."""
    return {
        "changed": sorted(r for r in before.keys() & now.keys() if before[r] != now[r]),
        "gone": sorted(before.keys() - now.keys()),
        "added": sorted(now.keys() - before.keys()),
    }
