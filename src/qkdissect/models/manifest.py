"""Resolve a model's weights before anything is computed: find (or download, or convert) the files, hash them,
and write a small JSON manifest that later steps check against.

The workflow's ``weights`` rule calls :func:`resolve_weights` on the machine that has the network (on a cluster:
the login node, see the SLURM profile), so compute jobs never download. A manifest records, per file, the path,
size and sha256, plus the hub revision where there is one.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..errors import QKDissectError
from ..provenance.records import code_record, config_record
from ..util.clock import utc_now
from .spec import ModelSpec

MANIFEST_SCHEMA = "weights/v1"


def resolve_weights(spec: str | ModelSpec, name: str | None = None) -> dict[str, Any]:
    """Find (download or convert where needed) and hash the weights of a model; return its manifest."""
    from .sources import REGISTRY, parse_spec  # (reading and checking a manifest, below, needs no source)
    from .sources.base import hub_offline

    s = parse_spec(spec)
    name = name or str(s)
    files, revision, origin = REGISTRY[s.source].resolve(s, name)
    return {
        "qkdissect_manifest": MANIFEST_SCHEMA,
        "model": name,
        "spec": str(s),
        "origin": origin,
        "revision": revision,
        "hub_offline": hub_offline(),
        "files": files,
        "resolved": utc_now(),
        "code": code_record(),
        **({"config": cfg} if (cfg := config_record()) is not None else {}),
    }


def weights_sha256(manifest: dict[str, Any]) -> str | None:
    """The sha256 of the file with role 'weights' in a manifest."""
    for f in manifest.get("files", []):
        if f.get("role") == "weights":
            return str(f["sha256"])
    return None


def read_tagged_json(path: str | Path, tag: str, schema: str, what: str) -> dict[str, Any]:
    """A JSON file of ours: its content, refused in one line when it cannot be read or its ``tag`` is not
    ``schema`` (``what`` names it in the message)."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise QKDissectError(f"cannot read the {what} {p}: {e}") from e
    if not isinstance(data, dict) or data.get(tag) != schema:
        raise QKDissectError(f"{p} is not a qkdissect {what} ({schema})")
    return data


def read_manifest(path: str | Path) -> dict[str, Any]:
    return read_tagged_json(path, "qkdissect_manifest", MANIFEST_SCHEMA, "weights manifest")


def check_manifest(manifest: dict[str, Any], sha256: str | None, where: str, path: str | Path | None = None) -> None:
    """Fail when the weights actually loaded differ from the ones the manifest resolved."""
    expected = weights_sha256(manifest)
    if expected and sha256 and expected != sha256:
        resolved = next((f["path"] for f in manifest.get("files", []) if f.get("role") == "weights"), "?")
        raise QKDissectError(
            f"{where}: the weights loaded now ({path or 'file'}, sha256 {sha256[:12]}…) are not the ones resolved "
            f"in the manifest ({resolved}, sha256 {expected[:12]}…, {manifest.get('resolved')}): the file changed "
            "since, or $QKDISSECT_DATA points elsewhere now. Delete the manifest (results/weights/<model>.json) and "
            "run again."
        )
