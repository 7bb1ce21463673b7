"""Damaged files of a model: where they are, and how to get them again, in one line.

A Hugging Face hub cache (what ``hf download`` leaves, huggingface_hub's layout) keeps a file of a repository's
commit as ``models--ORG--NAME/snapshots/<commit>/FILE``, a link to ``blobs/<its content address>``: the file's
sha256 for a file stored in Git LFS (the weights), git's blob id (sha1 of ``blob <size>\\0`` and the content) for
another (``config.json``). :func:`check_blob` checks both when a manifest is written. A cache made without links
(huggingface_hub's fallback where the file system has none) holds no address: its files are not checked.

The fix of a damaged cache file is to delete the blob, not the link: ``hf download`` links a blob that is there
again without reading it. No torch here: the file reader of :mod:`.weightfile` uses it too.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any

from ..errors import QKDissectError

_SHA256 = re.compile(r"[0-9a-f]{64}")
_GIT_SHA1 = re.compile(r"[0-9a-f]{40}")


def hub_repo(path: str | Path) -> str | None:
    """``ORG/NAME`` of a file under ``models--ORG--NAME/snapshots/``; None for a file elsewhere."""
    parts = Path(path).parts
    if "snapshots" not in parts[:-1]:
        return None
    folder = parts[parts.index("snapshots") - 1]
    kind, sep, repo = folder.partition("--")
    return repo.replace("--", "/") if sep and kind in ("models", "datasets", "spaces") else None


def download_again(path: str | Path) -> str | None:
    """How to get a damaged file of the hub cache again (None for a file that is not in one)."""
    repo = hub_repo(path)
    if repo is None:
        return None
    return (
        f"delete {Path(path).resolve()} and download it again (`hf download {repo}`, on a machine with internet, "
        "into this cache)"
    )


def read_config(path: str | Path) -> dict[str, Any]:
    """A model's ``config.json``; one that is not JSON refused in one line naming it and the fix."""
    p = Path(path)
    try:
        data = json.loads(p.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        where = f"{e.msg}: line {e.lineno}, column {e.colno}" if isinstance(e, json.JSONDecodeError) else str(e)
        fix = download_again(p) or "correct it, or save the model again (save_pretrained)"
        raise QKDissectError(f"{p} is not valid JSON ({where}): {fix}") from e
    if not isinstance(data, dict):
        fix = download_again(p) or "correct it, or save the model again (save_pretrained)"
        raise QKDissectError(f"{p} holds a JSON {type(data).__name__}, not an object of settings: {fix}")
    return data


def git_blob_sha1(path: Path) -> str:
    """git's id of a file's content (``git hash-object``): the name the hub cache gives a file not in LFS."""
    h = hashlib.sha1(b"blob %d\0" % path.stat().st_size, usedforsecurity=False)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def check_blob(path: Path, sha256: str) -> None:
    """Refuse a hub cache file whose content is no longer what its blob's name says (``sha256``: its content's,
    already computed for the manifest). Files that are not links into ``blobs/`` are not checked."""
    blob = path.resolve()
    if blob.parent.name != "blobs" or blob == path.absolute():
        return
    if _SHA256.fullmatch(blob.name):
        now, kind = sha256, "sha256"
    elif _GIT_SHA1.fullmatch(blob.name):
        now, kind = git_blob_sha1(blob), "git blob id"
    else:
        return
    if now != blob.name:
        raise QKDissectError(
            f"hub cache file {path} does not hold the content its name {blob.name} says (its {kind} is now "
            f"{now[:12]}…): it changed or was cut short after it was downloaded; "
            + (download_again(path) or f"delete {blob} and download it again")
        )


def snapshot_revision(path: str | Path | None) -> str | None:
    """The commit hash in a hub-cache path ``.../snapshots/<commit>/file`` (None elsewhere)."""
    parts = Path(path).parts if path is not None else ()
    return parts[parts.index("snapshots") + 1] if "snapshots" in parts[:-1] else None
