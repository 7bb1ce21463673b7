"""The scale benchmark (benchmarks/bench_scale.py) cannot rot: it runs here at a tiny size, through the real pass
(a shard run in a child process, a merge of 2 and 3 shards) and its extrapolation to 14 M images."""

from __future__ import annotations

import sys

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import bench_scale


def test_tiny_scale_run_measures_and_extrapolates() -> None:
    out = bench_scale.run([48], 32, [2, 3], 16, [4, 16], copy_images=8)
    assert [r["images"] for r in out["shards"]] == [48]
    assert all(r["pass_s"] > 0 and r["peak_rss_mb"] > 100 for r in out["shards"])
    assert out["shard_fit"]["slope"] > 0 and out["listing_bytes_per_image"] > 50
    assert [(r["shards"], r["images"], r["valid"]) for r in out["merge"]] == [(2, 32, 32), (3, 32, 32), (2, 128, 128)]
    plan = out["extrapolation"]
    assert [r["images_per_shard"] for r in plan["per_shard_count"]] == [3_500_000, 875_000]
    vit_b = plan["models"]["ViT-B/16"]
    assert vit_b["row_bytes_per_image"] == 12 * 12 * 64 * 4 * 4
    assert abs(vit_b["rows_tb"] - vit_b["row_bytes_per_image"] * 14e6 / 1e12) < 0.01
    assert plan["models"]["ViT-H/14"]["cpu_2core_hours"] > vit_b["cpu_2core_hours"] > 0
    assert all(r["copy_mb_per_s"] > 0 and 0.5 < r["stored_over_raw"] < 1.5 for r in out["row_copy"].values())
