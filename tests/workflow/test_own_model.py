"""Your own model without surprises, through Snakemake's dry run: a config that gives one model and one image folder
is laid over the schema's defaults and plans the image figures and the mode atlas; a key that leads to no job is
named in one warning line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import yaml

from tests.helpers import REPO
from tests.helpers.workflow import workflow_path


def dry_run(tmp_path: Path, config: dict[str, object]) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "mine.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {**os.environ, "PATH": workflow_path(os.environ.get("PATH", "")), "QKDISSECT_DATA": str(tmp_path / "data")}
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path / "run")]
    r = subprocess.run(
        [*cmd, "--configfile", str(path), "-n", "--quiet", "rules"], capture_output=True, text=True, env=env
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r


def planned(stdout: str) -> dict[str, int]:
    """rule -> jobs, from the dry run's job stats."""
    rows = [line.split() for line in stdout.split("Job stats:")[1].splitlines()[3:] if line.strip()]
    return {row[0]: int(row[1]) for row in rows if len(row) == 2 and row[1].isdigit()}


def test_one_model_and_one_image_folder_get_the_image_figures_and_the_atlas(tmp_path: Path) -> None:
    weights = tmp_path / "weights/mine.safetensors"
    config = {
        "models": {"mine": {"spec": f"timm:vit_small_patch16_224@{weights}"}},
        "images": {"photos": {"source": f"folder:{tmp_path / 'photos'}"}, "unused": {"source": "skimage"}},
    }
    r = dry_run(tmp_path, config)
    jobs = planned(r.stdout)
    for rule in ("fig1", "fig4", "fig5", "s4", "fig3", "project", "maps", "atlas_maps", "atlas"):
        assert jobs.get(rule, 0) >= 1, (rule, jobs)
    assert jobs["project"] == jobs["atlas_maps"] == jobs["weights"] == 1  # the one model, on the one image set
    warnings = [line for line in r.stderr.splitlines() if "lead to no job" in line]
    assert len(warnings) == 1 and "images.unused" in warnings[0] and "images.photos" not in warnings[0]
