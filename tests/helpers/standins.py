"""The paper's stand-ins (:mod:`rehearsal.hub`: the 13 hub repositories under ``hf/``, the SimMIM and I-JEPA
checkpoints under ``data/weights/``), built once per test session at a depth and shared by the workers of
``pytest -n``: the first worker to need them builds them under a lock, the others wait for them. The tests take
hard-linked copies (:func:`rehearsal.hub.link_stand_ins`), so that nothing a test does reaches the shared build.
The controller removes the builds when the session ends (2.4 GB at 2 blocks)."""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path

import pytest
from rehearsal.hub import build_hub_cache, build_local_checkpoints

#: the folder name of a shared build, by depth
FOLDER = "stand-ins-depth{depth}"


def session_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The session's own temporary folder, which the workers of ``pytest -n`` share (theirs are inside it)."""
    base = tmp_path_factory.getbasetemp()
    return base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base


def shared_stand_ins(tmp_path_factory: pytest.TempPathFactory, depth: int) -> Path:
    """The folder holding ``hf/`` and ``data/weights/`` of the stand-ins at ``depth`` blocks, built on first use."""
    root = session_folder(tmp_path_factory)
    done = root / FOLDER.format(depth=depth)
    with open(root / f".{done.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if not done.is_dir():
            building = root / f".{done.name}.building"
            shutil.rmtree(building, ignore_errors=True)  # a build a killed worker left half-made
            build_hub_cache(building / "hf", depth=depth)
            build_local_checkpoints(building / "data" / "weights", depth=depth)
            building.rename(done)
    return done


def remove_shared(root: Path) -> None:
    """The session's shared builds, at its end."""
    for folder in root.glob(FOLDER.format(depth="*")):
        shutil.rmtree(folder, ignore_errors=True)
