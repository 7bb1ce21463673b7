"""A command in a process of its own, paused at a named step of its write (``$QKDISSECT_FAILPOINT``), and what the
tests of the writers' locks and of a job's lifeline read of processes (their children, whether one is gone)."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from qkdissect.util.atomic import FAILPOINT_ENV

from . import REPO


def modes_args(spec: str, out: Path) -> list[str]:
    return ["modes", spec, "--name", "tiny", "--device", "cpu", "-q", "-o", str(out)]


def start(args: list[str], pause_at: str, shell: bool = False) -> subprocess.Popen[str]:
    """The command in a new process that pauses 5 s at ``pause_at`` (under ``sh -c`` as a job's shell runs it)."""
    env = {**os.environ, "PYTHONPATH": str(REPO / "src"), FAILPOINT_ENV: f"{pause_at}:pause"}
    cmd = [sys.executable, "-m", "qkdissect", *args]
    if shell:
        cmd = ["sh", "-c", f"{shlex.join(cmd)}; exit $?"]  # the shell stays the command's parent
    return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def wait_for(condition: Callable[[], bool], seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.1)


def children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (read from /proc)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rpartition(")")[2].split()[1]) == pid:
                found.append(int(d.name))
        except OSError:
            continue
    return found


def gone(pid: int) -> bool:
    """Whether process ``pid`` has ended (a zombie counts)."""
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]) in ("Z", "X")
    except FileNotFoundError:
        return True
