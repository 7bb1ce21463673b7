"""The decoding benchmark (benchmarks/bench_decoding.py) cannot rot: it runs here on 8 real photographs."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import bench_decoding

pytestmark = pytest.mark.assets


def test_every_phase_sees_every_image_in_order(assets: Path) -> None:
    folder = assets / "images/imagenet_sample_1000"
    out = bench_decoding.run(folder, 8, 4, [0])
    (row,) = out["results"]
    assert row["images"] == 8 and row["workers"] == 0
    assert min(row["decode_images_per_s"], row["bare_images_per_s"], row["from_files_images_per_s"]) > 0
    _, batches = bench_decoding.decode(folder, 8, 4, 1)  # a worker process gives the same tensors in the same order
    _, again = bench_decoding.decode(folder, 8, 4, 0)
    assert len(batches) == 2 and all(a.equal(b) for a, b in zip(batches, again, strict=True))
