"""One writer per output: ``OUT.lock`` beside the output, held (``flock``) while a command writes ``OUT``.

A second process (or thread) that wants to write the same output is refused at once, with the holder's pid and
command, before it does any work and without touching the first one's temporary store. The kernel drops the lock
when its holder dies (SIGKILL included), so a lock file left by a killed writer is simply taken over. The lock
file is removed when the writer finishes. The same thread may take the same lock again (the command line locks
its output, and the write of that output locks it once more).
"""

from __future__ import annotations

import fcntl
import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import QKDissectError, output_error

_held: dict[tuple[int, str], list[int]] = {}  # (thread, lock path) -> [fd, depth]


class OutputBusyError(QKDissectError):
    """Another process or thread is writing the same output."""


def lock_path(target: str | Path) -> Path:
    """The lock file of an output: ``OUT.lock`` beside it."""
    p = Path(os.path.abspath(target))
    return p.with_name(p.name + ".lock")


@contextmanager
def writer_lock(target: str | Path | None) -> Iterator[None]:
    """Hold the lock of ``target`` (no lock for ``None`` or ``-``, stdout) while the block runs."""
    if target is None or str(target) == "-":
        yield
        return
    lock = lock_path(target)
    key = (threading.get_ident(), str(lock))
    if key in _held:
        _held[key][1] += 1
        try:
            yield
        finally:
            _held[key][1] -= 1
        return
    try:
        fd = _acquire(lock, target)
    except OSError as e:
        if (err := output_error(e, target)) is None:
            raise
        raise err from e
    _held[key] = [fd, 1]
    try:
        yield
    finally:
        del _held[key]
        lock.unlink(missing_ok=True)
        os.close(fd)


def _acquire(lock: Path, target: str | Path) -> int:
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise OutputBusyError(
                f"{target} is being written by another command ({holder}); two writers to one output are refused: "
                f"wait for it to finish, or stop it (the lock is {lock})"
            ) from None
        try:  # a writer that just finished may have removed the file we opened: lock the one at the path
            if os.fstat(fd).st_ino == os.stat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    command = " ".join(Path(a).name if i == 0 else a for i, a in enumerate(sys.argv))
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: {command[:200]}".encode(), 0)
    return fd
