"""The workflow remakes what changed in place after it was made, as the audit flags it.

Snakemake reruns a job when an output is missing, or older than an input whose content changed, or when the job's
inputs, params or code changed; it never reads an output's own content. A byte flipped in a chunk of a store, an
attribute edited in its ``zarr.json``, an edited figure or executed notebook left Snakemake with "Nothing to be
done" while ``qkdissect audit`` flagged them (a store's time is its folder's, which an edit inside it does not
change; setting it back does not help either: Snakemake compares the checksum of a small input before it counts
it as newer).

So the workflow (:func:`watch`, called at the end of ``workflow/Snakefile``) gives every rule that makes a store or a
figure-like page (outputs ``*.zarr`` or ``*.provenance.json`` under ``results/``) one more input,
``qkdissect_changed``: the file ``.snakemake/qkdissect/changed/<output>.changed`` when it exists, else nothing.
When Snakemake starts, :func:`mark_changed` checks every artefact under the results folder against its own record
(:func:`.audit.check_own`: a store's content record, a figure's outputs, its executed notebook against the RO-Crate)
and writes that file for each one that changed, one line on stderr each: a new input of that job, Snakemake makes it
again, and what was made from it. Nothing is deleted by the check (Snakemake replaces the output when the job runs).
Once the job has run (its output is newer than the file) the file stays, unchanged, as the job's recorded input; an
artefact put back as it was before any job ran loses its file again, and nothing is made.

Re-hashing every store on every start would cost seconds on large results: an artefact found unchanged is
remembered in ``.snakemake/qkdissect/unchanged.json`` by the size, times and inode of each of its files, and hashed
again only when one of them differs (an edit in place changes a file's ctime, which no user can set back).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import sys
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from .audit import CRATE, Artefact, _Hashes, check_own, crate_digests, executed_notebook, find_artefacts
from .records import NOT_CONTENT

#: the workflow's own state, under its working directory
STATE_DIR = Path(".snakemake") / "qkdissect"
#: the named input each watched rule gets
INPUT = "qkdissect_changed"
#: statuses of :func:`.audit.check_own` that mean the artefact is not what was made
_CHANGED = ("modified", "missing-input")


def marker(output: str | Path, markers: Path) -> Path:
    """The file whose presence makes the job of ``output`` run again."""
    return markers / (str(output).lstrip("/") + ".changed")


def _is_watched(pattern: str) -> bool:
    """An output the audit checks against its own record: a store or a provenance sidecar under a results folder."""
    return pattern.endswith((".zarr", ".provenance.json")) and f"/{pattern}".find("/results/") >= 0


def _root(pattern: str) -> str:
    """The results folder of an output (``results``, or under a module's prefix ``qk/results``)."""
    head = f"/{pattern}"
    return head[1 : head.index("/results/") + len("/results")]


def _changed_input(outputs: list[str], markers: Path, apply: Callable[[str, Any], str]) -> Callable[[Any], list[str]]:
    def changed(wildcards: Any) -> list[str]:
        return [str(m) for o in outputs if (m := marker(apply(o, wildcards), markers)).is_file()]

    return changed


def watch(workflow: Any, check: bool = True) -> list[Path]:
    """Give every rule of ``workflow`` (a Snakemake workflow, once its rules are defined) that makes a store or a
    provenance sidecar the input :data:`INPUT`; with ``check`` (the main Snakemake process, not its jobs) mark what
    changed under their results folders (:func:`mark_changed`). Returns the artefacts marked."""
    from snakemake.io import apply_wildcards

    # absolute, so that a module's prefix leaves it as it is; under the working directory, as Snakemake's own state
    markers = Path.cwd() / STATE_DIR / "changed"
    roots: set[str] = set()
    for rule in list(workflow.rules):
        outputs = [str(o) for o in rule.output if _is_watched(str(o))]
        if outputs:
            roots.update(_root(o) for o in outputs)
            rule.set_input(**{INPUT: _changed_input(outputs, markers, apply_wildcards)})
    return [p for r in sorted(roots) for p in mark_changed(r, markers)] if check else []


def _files(path: Path) -> Iterator[Path]:
    if path.is_dir():
        for dirpath, _, names in os.walk(path):
            for n in sorted(names):
                f = Path(dirpath) / n
                if not (f.parent == path and n in NOT_CONTENT):  # Snakemake's marker comes and goes
                    yield f
    elif path.exists():
        yield path


def _watched_files(art: Artefact, results: Path) -> list[Path]:
    """The files :func:`check_own` reads for an artefact (and the crate, for a figure's notebook)."""
    if art.path.is_dir():
        return [art.path]
    outs = [art.path.with_name(n) for n in art.record.get("outputs") or {}]
    nb = executed_notebook(art, results)
    return [art.path, *outs, *([nb, results / CRATE] if nb is not None else [])]


def _fingerprint(paths: list[Path]) -> str:
    """A digest of the size, mtime, ctime and inode of every file (no content read)."""
    h = hashlib.sha256()
    for top in paths:
        for f in _files(top):
            st = f.stat()
            h.update(f"{f}\0{st.st_size}\0{st.st_mtime_ns}\0{st.st_ctime_ns}\0{st.st_ino}\n".encode())
    return h.hexdigest()


def _made_at(path: Path) -> float:
    """An output's time as Snakemake reads it: a folder's marker where there is one, else its own."""
    stamp = path / ".snakemake_timestamp"
    return (stamp if path.is_dir() and stamp.is_file() else path).stat().st_mtime


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    tmp.write_text(text)
    os.replace(tmp, path)


def _load(state: Path) -> dict[str, str]:
    try:
        data = json.loads(state.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def mark_changed(results: str | Path = "results", markers: Path | None = None) -> list[Path]:
    """Write the marker of every artefact under ``results`` whose own content is not what was recorded when it was
    made (one line on stderr each), and remove the marker of one put back before its job ran. Returns the artefacts
    marked."""
    folder = Path(results)
    if not folder.is_dir():
        return []
    markers = markers if markers is not None else Path.cwd() / STATE_DIR / "changed"
    state = markers.parent / "unchanged.json"
    arts, _ = find_artefacts(folder)
    known = _load(state)
    seen: dict[str, str] = {}
    hashes = _Hashes()
    listed = crate_digests(folder)
    changed = []
    for art in arts:
        if art.findings:  # an unknown store, a figure whose sidecar is gone (Snakemake remakes that one)
            continue
        key, mark = str(art.path), marker(art.path, markers)
        fp = _fingerprint(_watched_files(art, folder))
        if known.get(key) != fp:
            check_own(art, hashes, folder, listed)
        bad = [f for f in art.findings if f.status in _CHANGED]
        if not bad:
            seen[key] = fp
            if mark.is_file() and mark.stat().st_mtime > _made_at(art.path):  # put back before its job ran
                mark.unlink()
            continue
        text = f"{fp}\n" + "\n".join(f.message for f in bad) + "\n"
        if not mark.is_file() or mark.read_text() != text:
            _write(mark, text)
        changed.append(art.path)
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        print(
            f"qkdissect: {art.path} changed after it was made ({bad[0].message}{more}): snakemake makes it again, "
            "and what was made from it (`qkdissect audit` lists them)",
            file=sys.stderr,
        )
    if seen != known:
        with contextlib.suppress(OSError):  # a working directory we may not write: the next start hashes again
            _write(state, json.dumps(seen, indent=0, sort_keys=True))
    return changed
