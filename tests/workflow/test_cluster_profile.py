"""The SLURM profile (workflow/profiles/slurm) routes every rule that asks for a GPU under `device: cuda` to the
partition named by $QKDISSECT_GPU_PARTITION (unset: the run stops in one line); no partition is assumed for the
rest (the cluster's default). Checked on the rules' text and on the jobs Snakemake plans with the profile."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO
from tests.helpers.workflow import workflow_path

PROFILE = REPO / "workflow/profiles/slurm/profile.yaml"
PLACEHOLDER = "$QKDISSECT_GPU_PARTITION"


def gpu_rules() -> set[str]:
    """The rules whose resources ask for a GPU (`gpu=...`), and those made from them with `use rule`."""
    gpu: set[str] = set()
    uses: list[tuple[str, str]] = []
    for smk in sorted((REPO / "workflow/rules").glob("*.smk")):
        blocks = re.split(r"^\s*(?=rule \w+:|use rule )", smk.read_text(), flags=re.M)
        for block in blocks:
            if m := re.match(r"rule (\w+):", block):
                body = re.split(r"^\S", block.split("\n", 1)[1], maxsplit=1, flags=re.M)[0]  # to the next top line
                if re.search(r"^\s+gpu=", body, re.M):
                    gpu.add(m.group(1))
            elif m := re.match(r"use rule (\w+) as (\w+)", block):
                uses.append((m.group(1), m.group(2)))
    gpu |= {new for old, new in uses if old in gpu}
    return gpu


def profile() -> dict:
    return yaml.safe_load(PROFILE.read_text())


def test_every_gpu_rule_is_routed() -> None:
    rules = gpu_rules()
    assert {"modes", "modes_folded", "project", "preference", "same_object", "logits", "text_project", "maps",
            "atlas_maps", "offsets", "modes_core", "preference_shard", "same_object_shard"} <= rules  # fmt: skip
    prof = profile()
    routed = {r for r, res in prof["set-resources"].items() if res.get("slurm_partition") == PLACEHOLDER}
    assert rules - routed == set()
    # a cluster job of a group has one partition: a GPU rule's group companions go with it
    groups = prof["groups"]
    companions = {r for r, g in groups.items() if any(groups.get(x) == g for x in rules)}
    assert routed == rules | companions
    assert "slurm_partition" not in prof["default-resources"]  # the cluster's default, not a guessed name


def _plan(tmp_path: Path, device: str, partition: str | None, *extra: str) -> subprocess.CompletedProcess[str]:
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg["analysis"]["device"] = device
    cfg["rotary"]["content_core"] = "mean"  # the content cores' modes too
    cfg["projections"]["shards"] = 2
    cfg["mask_datasets"]["synthetic"]["shards"] = 2
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PATH=workflow_path(os.environ.get("PATH", "")), HF_HUB_OFFLINE="1")
    env.pop("QKDISSECT_GPU_PARTITION", None)
    if partition is not None:
        env["QKDISSECT_GPU_PARTITION"] = partition
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path / "run")]
    cmd += ["--profile", str(PROFILE.parent), "--configfile", str(tmp_path / "config.yaml"), "-n", "--forceall", *extra]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)


def _jobs(out: str) -> list[tuple[str, dict[str, str]]]:
    """(rule, resources) of every job a dry run prints."""
    found = []
    for block in re.split(r"^\s*(?:local)?rule ", out, flags=re.M)[1:]:  # group jobs' rules are indented
        name = block.split(":", 1)[0]
        m = re.search(r"^\s+resources: (.*)$", block, re.M)
        found.append((name, dict(kv.partition("=")[::2] for kv in m.group(1).split(", ")) if m else {}))
    return found


def test_planned_gpu_jobs_go_to_the_gpu_partition(tmp_path: Path) -> None:
    r = _plan(tmp_path, "cuda", "gpu-test")
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = _jobs(r.stdout)
    asking = {name for name, res in jobs if res.get("gpu") == "1"}
    assert {"modes", "modes_core", "project", "preference_shard", "text_project", "atlas_maps", "maps"} <= asking
    assert asking <= gpu_rules()
    for name, res in jobs:
        assert res.get("slurm_partition") == ("gpu-test" if name in asking | {"scores", "scores_folded"} else None), (
            name,
            res,
        )


def test_cuda_without_a_gpu_partition_stops_in_one_line(tmp_path: Path) -> None:
    r = _plan(tmp_path, "cuda", None)
    assert r.returncode != 0 and "Job stats" not in r.stdout
    (line,) = [x for x in (r.stdout + r.stderr).splitlines() if "QKDISSECT_GPU_PARTITION" in x]
    assert "export QKDISSECT_GPU_PARTITION=<your GPU partition>" in line and "sinfo -s" in line


@pytest.mark.parametrize("partition", [None, "gpu-test"])
def test_on_cpus_every_job_goes_to_the_default_partition(tmp_path: Path, partition: str | None) -> None:
    r = _plan(tmp_path, "cpu", partition)
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = _jobs(r.stdout)
    assert not any(res.get("gpu") == "1" for _, res in jobs)
    assert {res["slurm_partition"] for _, res in jobs if "slurm_partition" in res} == {""}  # the plugin's default


def test_on_cpus_a_default_partition_the_profile_names_takes_every_job(tmp_path: Path) -> None:
    r = _plan(tmp_path, "cpu", "gpu-test", "--default-resources", "slurm_partition=cpu-test", "mem_mb=4000")
    assert r.returncode == 0, r.stderr[-3000:]
    jobs = _jobs(r.stdout)
    assert {res.get("slurm_partition") for _, res in jobs if res} == {"cpu-test"}
