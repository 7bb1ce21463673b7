"""A command lives only as long as the job that started it.

Snakemake (or a scheduler) runs each job as a shell that starts ``qkdissect``. When that shell is killed
(``kill -9``, a time limit), the job has failed and its output must not appear later. :func:`tie_to_parent`
(called once by the command line) remembers the parent process and, on Linux, asks the kernel to send SIGTERM
when it dies (``prctl(PR_SET_PDEATHSIG)``); SIGTERM stops the command at once (``SystemExit``: the temporary store
is removed, nothing is renamed into place). Elsewhere, and in the instant between the parent's death and the
signal, :func:`check_parent` before every final rename refuses to publish for a parent that is gone.

A command started under ``nohup`` (SIGHUP ignored) is asked to outlive its shell, and is not tied;
``$QKDISSECT_TIE_TO_PARENT`` = ``1`` ties it anyway (the workflow sets it for its jobs), ``0`` never ties.
"""

from __future__ import annotations

import ctypes
import os
import signal
import sys
import threading
from types import FrameType

from ..errors import QKDissectError

TIE_ENV = "QKDISSECT_TIE_TO_PARENT"
_PR_SET_PDEATHSIG = 1

_parent: int | None = None  # the parent process this command is tied to
_owner: int | None = None  # the process that tied itself (forked workers inherit the handler, not the tie)


class OrphanedError(QKDissectError):
    """The job that started this command is gone: its output is not published."""


def tie_to_parent() -> None:
    """Tie this process to its parent (see the module's docstring); a no-op outside the main thread."""
    global _parent, _owner
    want = os.environ.get(TIE_ENV, "")
    nohup = signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    parent = os.getppid()
    in_main = threading.current_thread() is threading.main_thread()
    if want == "0" or (want != "1" and nohup) or parent <= 1 or not in_main:
        return
    _parent, _owner = parent, os.getpid()
    signal.signal(signal.SIGTERM, _stop)
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    check_parent("anything")  # the parent may have died before the kernel was asked to tell us


def check_parent(target: object) -> None:
    """Raise :class:`OrphanedError` when this process was tied to a parent that has died since."""
    if _parent is not None and os.getpid() == _owner and os.getppid() != _parent:
        raise OrphanedError(
            f"the job that started this command (pid {_parent}) is gone: {target} is not written. "
            "Its run failed; run it again"
        )


def _stop(signum: int, frame: FrameType | None) -> None:
    """SIGTERM: leave through ``SystemExit`` so that every temporary store is removed on the way out."""
    if os.getpid() != _owner:  # a forked worker: the default action
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGTERM)
        return
    why = f": the job that started it (pid {_parent}) is gone" if os.getppid() != _parent else ""
    raise SystemExit(f"qkdissect: stopped by SIGTERM{why}; nothing half-written is left")
