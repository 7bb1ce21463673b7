"""One writer per output: ``OUT.lock`` beside the output, locked while a command writes ``OUT``.

A second process (or thread) that wants to write the same output is refused at once, with the holder's pid and
command, before it does any work and without touching the first one's temporary store. The lock is a POSIX record
lock (``lockf``): the kernel drops it when its holder dies (SIGKILL included), and the processes the holder forks
(image-decoding workers, which may outlive it by seconds) do not inherit it, so a lock file left by a killed writer
is simply taken over. The lock file is removed when the writer finishes. Threads of one process are told apart
here (a POSIX lock is the process's): the thread that holds a lock may take it again (the command line locks its
output, and the write of that output locks it once more); another thread is refused. A lock path is never
followed: a symbolic link, a folder, a special file, a file with hard links or one that holds anything but a lock's
own line is refused in one line, and nothing is written through it.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import stat
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from ..errors import QKDissectError, output_error

log = logging.getLogger(__name__)
#: lockf errors of a file system that has no locks
_NO_LOCKS = {errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS}
#: lockf errors of a lock that another process holds
_TAKEN = {errno.EACCES, errno.EAGAIN}
_held: dict[str, list[int]] = {}  # lock path -> [thread, fd, depth], of this process
_guard = threading.Lock()


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
    with _guard:
        mine = _take(lock, target)
    try:
        yield
    finally:
        with _guard:
            _release(lock, mine)


def _take(lock: Path, target: str | Path) -> bool:
    """Take the lock (True) or take it again in the thread that holds it (False)."""
    held = _held.get(str(lock))
    if held is not None:
        if held[0] != threading.get_ident():
            raise _busy(target, lock, f"pid {os.getpid()}, another thread")  # (opening it again would unlock it)
        held[2] += 1
        return False
    try:
        fd = _acquire(lock, target)
    except OSError as e:
        if (err := output_error(e, target)) is None:
            raise
        raise err from e
    _held[str(lock)] = [threading.get_ident(), fd, 1]
    return True


def _release(lock: Path, mine: bool) -> None:
    held = _held[str(lock)]
    held[2] -= 1
    if mine:
        del _held[str(lock)]
        lock.unlink(missing_ok=True)
        os.close(held[1])


def _busy(target: str | Path, lock: Path, holder: str) -> OutputBusyError:
    return OutputBusyError(
        f"{target} is being written by another command ({holder}); two writers to one output are refused: "
        f"wait for it to finish, or stop it (the lock is {lock})"
    )


def _acquire(lock: Path, target: str | Path) -> int:
    lock.parent.mkdir(parents=True, exist_ok=True)
    while True:
        fd, created = _open(lock, target)
        try:
            fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as e:
            if e.errno in _NO_LOCKS:  # a file system without locks (some network ones): write unguarded
                log.warning("cannot lock %s (%s): two writers of %s would not be told apart", lock, e.strerror, target)
                break
            holder = os.pread(fd, 300, 0).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            if e.errno not in _TAKEN:
                raise
            raise _busy(target, lock, holder) from None
        try:  # a writer that just finished may have removed the file we opened: lock the one at the path
            if os.fstat(fd).st_ino == os.lstat(lock).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    if not created and not _ours(fd):
        os.close(fd)
        raise _not_a_lock(lock, "a file that is not a qkdissect lock")
    prog = "qkdissect" if sys.argv[0].endswith(("__main__.py", "qkdissect")) else Path(sys.argv[0]).name
    command = " ".join([prog, *sys.argv[1:]])
    try:
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{HOLDER}{os.getpid()}: {command[:200]}".encode(), 0)
    except OSError:  # a full disk: the lock (ours, locked) goes, as the output would
        lock.unlink(missing_ok=True)
        os.close(fd)
        raise
    return fd


#: how a lock file begins (then the holder's pid and command)
HOLDER = "pid "


def _open(lock: Path, target: str | Path) -> tuple[int, bool]:
    """The lock file, opened without following a link: created by this call (True), or one that was there (a
    writer's that died, or another's that holds it). A link, a folder, a special file or a file with other names
    (hard links) is refused: it is never written through."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    while True:
        try:
            return os.open(lock, flags | os.O_CREAT | os.O_EXCL, 0o644), True
        except FileExistsError:
            pass
        try:
            fd = os.open(lock, flags | os.O_NONBLOCK)
        except FileNotFoundError:  # removed by its writer meanwhile: create it
            continue
        except OSError as e:
            if e.errno == errno.ELOOP:
                raise _not_a_lock(lock, "a symbolic link") from None
            if e.errno == errno.EISDIR:
                raise _not_a_lock(lock, "a folder") from None
            raise
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            os.close(fd)
            what = "a special file" if not stat.S_ISREG(st.st_mode) else f"a file with {st.st_nlink} names (hard links)"
            raise _not_a_lock(lock, what)
        return fd, False


def _ours(fd: int) -> bool:
    """Whether a lock file that was there holds what a lock of ours writes (or nothing)."""
    text = os.pread(fd, len(HOLDER) + 1, 0)
    return not text or text.startswith(HOLDER.encode())


def _not_a_lock(lock: Path, what: str) -> QKDissectError:
    return QKDissectError(
        f"the lock {lock} is {what}: a lock is never opened through it, and nothing was written; remove it "
        "(rm) if you know what it is, and run again"
    )
