"""The workflow through a real SLURM cluster: `snakemake --profile workflow/profiles/slurm` submits the modes,
scores and project jobs with sbatch; weights and figures run locally. Needs a running cluster, or root and the
start script of ../shared/slurm (QKDISSECT_SLURM_SCRIPT), which installs SLURM from Debian packages and starts a
single-node cluster. Skips otherwise, unless QKDISSECT_REQUIRE_SLURM=1 (set by .ci/run), which makes that a
failure."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO

SCRIPT = Path(os.environ.get("QKDISSECT_SLURM_SCRIPT", REPO.parent / "shared/slurm/start_local_slurm.sh"))


def _unavailable(msg: str) -> None:
    if os.environ.get("QKDISSECT_REQUIRE_SLURM") == "1":
        pytest.fail(msg + " — QKDISSECT_REQUIRE_SLURM=1 forbids skipping")
    pytest.skip(msg)


def _cluster_up() -> bool:
    if not shutil.which("scontrol"):
        return False
    r = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=30)
    return r.returncode == 0 and "UP" in r.stdout


@pytest.fixture(scope="module")
def slurm_cluster() -> Iterator[bool]:
    """A running SLURM cluster; started (and stopped afterwards) when there is none. Yields whether sacct works."""
    started = False
    if not _cluster_up():
        if not SCRIPT.exists():
            _unavailable(f"no SLURM cluster running and no start script at {SCRIPT}")
        if os.geteuid() != 0:
            _unavailable("no SLURM cluster running, and starting one needs root")
        r = subprocess.run(["bash", str(SCRIPT)], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            pytest.fail(f"{SCRIPT} failed:\n{r.stdout[-2000:]}\n{r.stderr[-2000:]}")
        started = True
    accounting = subprocess.run(["sacct", "-n", "-X", "-S", "now-1minutes"], capture_output=True).returncode == 0
    yield accounting
    if started:  # in the background: stopping waits about 10 s for the daemons to exit, which no test needs
        subprocess.Popen(["bash", str(SCRIPT), "--stop"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                         start_new_session=True)  # fmt: skip


def _job_state(job_id: str, accounting: bool) -> str:
    if accounting:
        r = subprocess.run(["sacct", "-j", job_id, "-X", "-n", "-P", "-o", "State"], capture_output=True, text=True)
        return r.stdout.strip()
    r = subprocess.run(["scontrol", "show", "job", job_id], capture_output=True, text=True)
    m = re.search(r"JobState=(\w+)", r.stdout)
    return m.group(1) if m else r.stderr.strip()


@pytest.mark.slurm
@pytest.mark.assets
def test_workflow_runs_through_sbatch(tmp_path: Path, dinov2_file: Path, assets: Path, slurm_cluster: bool) -> None:
    cfg = tmp_path / "config.yaml"
    cfg.write_text(
        yaml.safe_dump(
            {
                "models": {"my-dinov2": {"spec": f"timm:vit_small_patch14_dinov2@{dinov2_file}?img_size=224"}},
                "figures": {"fig3": "all", "s1": [], "s2": ["my-dinov2"], "s4": ["my-dinov2"]},
                "images": {"few": {"source": f"folder:{assets / 'images/imagenet_sample_1000'}", "limit": 6}},
                "projections": {"images": "few", "batch_size": 1, "shards": 4},  # 1 + 2 + 1 + 2 images
                "analysis": {"device": "cpu"},
                "atlas": False,  # submitted like the projection pass; tests/unit/passes/test_atlas.py covers it
                "resources": {
                    "modes": {"threads": 1, "mem_mb": 3000, "runtime": 10},
                    "scores": {"mem_mb": 1000},
                    "project": {"threads": 1, "mem_mb": 3000, "runtime": 10},
                },
            }
        )
    )
    work = tmp_path / "run"
    env = dict(os.environ, HF_HUB_OFFLINE="1")
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    cmd = [
        *("timeout", "-k", "30", "600"),  # a job-status problem shows up as a hang: fail instead
        *(sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(work)),
        *("--profile", str(REPO / "workflow/profiles/slurm"), "--configfile", str(cfg)),
        *("--slurm-init-seconds-before-status-checks", "2", "--seconds-between-status-checks", "3"),
        *("--cores", "2"),  # the test node's cores: a group job runs its parallel jobs in layers that fit
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=700)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    submitted = sorted(set(re.findall(r"(?:rule|group)_([\w-]+)/(?:[^/]+/)?(\d+)\.log", out)))
    counts = {rule: [r for r, _ in submitted].count(rule) for rule, _ in submitted}
    # weights and figures are local rules; a model's modes (raw and folded) and scores are one group job; the
    # pass runs as 4 shard jobs and a merge job
    assert counts == {"weights-my-dinov2_modes_scores": 1, "project": 4, "merge_shards": 1}, out[-3000:]
    for rule, job_id in submitted:
        assert _job_state(job_id, slurm_cluster) == "COMPLETED", (rule, job_id)
    assert "localrule weights" in out and "localrule fig3" in out
    for stem in ("fig3_weighted_cosine", "fig3_unweighted_cosine", "s2_spectrum_grid_my-dinov2", "s4_anisotropy"):
        assert (work / f"results/figures/{stem}.png").stat().st_size > 10_000
        assert (work / f"results/notebooks/{stem}.ipynb").exists()
    from qkdissect.stores import open_store

    assert open_store(work / "results/scores/my-dinov2.zarr", "scores").sizes["layer"] == 12
    _check_merged(work / "results/projections/my-dinov2")


def _check_merged(folder: Path) -> None:
    """The 4 shard stores hold 1, 2, 1 and 2 of the 6 images; the merged store holds all 6, lists the shards as
    its inputs, and its top images are the top-k of its per-image scores (ties: the smaller index)."""
    import numpy as np

    from qkdissect.passes.shards import shard_paths
    from qkdissect.stores import open_store

    shards = shard_paths(folder / "few.shards", 4)
    assert [open_store(p).sizes["image"] for p in shards] == [1, 2, 1, 2]
    ds = open_store(folder / "few.zarr", "projections")
    assert ds.sizes["image"] == 6 and ds.valid.values.all() and "shard" not in ds.attrs
    deps = [d for d in ds.attrs["provenance"]["dependencies"] if d["role"].startswith("shard ")]
    assert [Path(d["path"]).name for d in deps] == [p.name for p in shards]
    plus = np.moveaxis((ds.q_max * ds.k_max).values, 0, -1)  # (layer, head, mode, image)
    k = min(ds.sizes["rank"], 6)
    top = ds.top_image.sel(sign="+").values
    np.testing.assert_array_equal(top[..., :k], np.argsort(-plus, -1, kind="stable")[..., :k])
    assert (top[..., k:] == -1).all()
