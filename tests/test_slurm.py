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

from conftest import REPO

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
    if started:
        subprocess.run(["bash", str(SCRIPT), "--stop"], capture_output=True, timeout=300)


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
                "projections": {"images": "few", "batch_size": 3},
                "analysis": {"device": "cpu"},
                "atlas": False,  # its pass is submitted like the projection pass; tests/test_atlas.py covers it
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
    ]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=700)
    out = r.stdout + r.stderr
    assert r.returncode == 0, out[-6000:]
    submitted = dict(re.findall(r"rule_(\w+)/[^/]+/(\d+)\.log", out))
    assert set(submitted) == {"modes", "scores", "project"}, out[-3000:]  # weights and figures are local rules
    for rule, job_id in submitted.items():
        assert _job_state(job_id, slurm_cluster) == "COMPLETED", (rule, job_id)
    assert "localrule weights" in out and "localrule fig3" in out
    for stem in ("fig3_weighted_cosine", "fig3_unweighted_cosine", "s2_spectrum_grid_my-dinov2", "s4_anisotropy"):
        assert (work / f"results/figures/{stem}.png").stat().st_size > 10_000
        assert (work / f"results/notebooks/{stem}.ipynb").exists()
    from qkdissect.stores import open_store

    assert open_store(work / "results/scores/my-dinov2.zarr", "scores").sizes["layer"] == 12
