"""Outputs written atomically: under a temporary name beside the output, renamed into place only when complete.

:func:`atomic_path` yields ``NAME.tmp-XXXX`` beside ``NAME``; the output appears under its final name only when the
block succeeds, so a crash (SIGKILL included) leaves either the old output or none, never a half-written one. The
next write of the same output removes what an interrupted one left (``NAME.tmp-*``, ``NAME.old-*``). Every writer
of the package (stores, figures, pages, manifests, bundles) writes through it.

:func:`failpoint` marks the steps of a write for the fault-injection tests (``$QKDISSECT_FAILPOINT``).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import output_error
from .lifeline import check_parent
from .locks import writer_lock
from .ownership import check_replace

FAILPOINT_ENV = "QKDISSECT_FAILPOINT"


_hits: dict[str, int] = {}


def failpoint(name: str) -> None:
    """A named step of a write, for fault injection. ``$QKDISSECT_FAILPOINT=NAME[@N][:ACTION]`` makes the N-th
    (default first) arrival here ``kill`` the process with SIGKILL (the default: what a scheduler's time limit
    or the OOM killer does), ``hang`` (so that a test can kill the whole process group from outside) or ``pause``
    for 5 s and go on (so that a test can kill its parent meanwhile)."""
    want = os.environ.get(FAILPOINT_ENV)
    if not want:
        return
    point, _, action = want.rpartition(":")
    if action not in ("kill", "hang", "pause"):  # no action given: the whole value names the point
        point, action = want, "kill"
    point, _, nth = point.partition("@")
    if point != name:
        return
    _hits[name] = _hits.get(name, 0) + 1
    if _hits[name] != int(nth or 1):
        return
    if action == "pause":
        time.sleep(5)
        return
    if action == "hang":
        while True:
            time.sleep(60)
    os.kill(os.getpid(), signal.SIGKILL)


def _remove(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif path.exists() or path.is_symlink():
        path.unlink(missing_ok=True)


def _remove_all(tmp: Path, tries: int = 20) -> None:
    """Remove a failed write's temporary output, again while writers that were still running (zarr writes chunks
    from a thread pool) add files to it after the first removal."""
    for _ in range(tries):
        _remove(tmp)
        if not (tmp.exists() or tmp.is_symlink()):
            return
        time.sleep(0.05)


def remove_leftovers(path: str | Path) -> list[Path]:
    """Delete what interrupted writes of ``path`` left beside it (``NAME.tmp-*``, ``NAME.old-*``)."""
    final = Path(path)
    found = [p for kind in ("tmp", "old") for p in sorted(final.parent.glob(f"{final.name}.{kind}-*"))]
    for p in found:
        _remove(p)
    return found


@contextmanager
def atomic_path(path: str | Path, owned: Callable[[Path], bool] | None = None) -> Iterator[Path]:
    """Yield a temporary sibling path; on success it replaces ``path``, on any error it is removed (and what an
    earlier, killed write left is removed first; a full disk or a forbidden folder is one error line). The
    output's lock (:mod:`qkdissect.util.locks`) is held throughout: a second writer is refused before it touches
    anything; the rename happens only while this process's job is alive (:mod:`qkdissect.util.lifeline`). What is at
    ``path`` is replaced only when it is of the same kind as what was written, or ``owned`` accepts it
    (:func:`qkdissect.util.ownership.check_replace`): anything else is left as it is and the write fails."""
    final = Path(path)
    try:
        with writer_lock(final):
            final.parent.mkdir(parents=True, exist_ok=True)
            remove_leftovers(final)
            tmp = final.with_name(f"{final.name}.tmp-{uuid.uuid4().hex[:8]}")
            try:
                yield tmp
                failpoint("store:before-rename")
                check_replace(final, tmp, owned)
                _publish(tmp, final)
            except BaseException:
                _remove_all(tmp)
                raise
    except OSError as e:  # a full disk, a folder we may not write: one line naming the output
        if (err := output_error(e, final)) is None:
            raise
        raise err from e


def _publish(tmp: Path, final: Path) -> None:
    """Rename ``tmp`` to ``final`` (replacing it) while the job that started this process is alive; SIGTERM
    waits until both renames are done."""
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM})
    try:
        check_parent(final)
        if final.exists():
            old = final.with_name(f"{final.name}.old-{uuid.uuid4().hex[:8]}")
            os.replace(final, old)
            failpoint("store:between-renames")
            os.replace(tmp, final)
            _remove(old)
        else:
            os.replace(tmp, final)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
