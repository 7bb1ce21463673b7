"""`qkdissect run` without a checkout: which workflow it runs where the working directory has no Snakefile, how
the paths it is given are found, the scripts its jobs call, and what the installed workflow's jobs record."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from qkdissect import launch
from qkdissect.launch import job_environment, with_workflow, workflow_root
from qkdissect.provenance import records
from tests.helpers import REPO


def _workflow(root: Path) -> Path:
    (root / "workflow/profiles/slurm").mkdir(parents=True)
    (root / "workflow/Snakefile").write_text("")
    (root / "config").mkdir()
    (root / "config/paper-weights.yaml").write_text("models: {}\n")
    return root


def test_the_installed_copy_comes_first_then_the_checkout(tmp_path: Path) -> None:
    package = tmp_path / "lib/site-packages/qkdissect"
    package.mkdir(parents=True)
    assert workflow_root(package) is None  # an installed package without its workflow
    _workflow(tmp_path / "lib")  # the layout of a checkout: src/qkdissect two levels down
    assert workflow_root(package) == tmp_path / "lib"
    _workflow(package / "_workflow")
    assert workflow_root(package) == package / "_workflow"
    assert workflow_root() == REPO  # this package: imported from this checkout


def test_paths_not_here_are_the_workflows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = _workflow(tmp_path / "wf")
    here = tmp_path / "here"
    (here / "config").mkdir(parents=True)
    (here / "mine.yaml").write_text("models: {}\n")
    monkeypatch.chdir(here)
    args = ["-n", "--configfile", "config/paper-weights.yaml", "mine.yaml", "--cores", "2", "all"]
    shipped = str(root / "config/paper-weights.yaml")
    assert with_workflow(args, root) == ["-s", str(root / "workflow/Snakefile"), "-n", "--configfile", shipped,
                                         "mine.yaml", "--cores", "2", "all"]  # fmt: skip
    args = ["--configfiles=config/paper-weights.yaml", "--profile", "workflow/profiles/slurm", "--report", "r.html"]
    assert with_workflow(args, root)[2:] == [f"--configfiles={root / 'config/paper-weights.yaml'}", "--profile",
                                             str(root / "workflow/profiles/slurm"), "--report", "r.html"]  # fmt: skip
    (here / "config/paper-weights.yaml").write_text("models: {}\n")  # a file of the user's own wins
    assert with_workflow(["--configfile", "config/paper-weights.yaml"], root)[2:] == [
        "--configfile", "config/paper-weights.yaml"
    ]  # fmt: skip
    assert with_workflow(["--configfile", "config/none.yaml"], root)[2:] == ["--configfile", "config/none.yaml"]


def test_a_snakefile_here_or_named_keeps_snakemakes_own_choice(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert not launch._has_snakefile(["-n"])
    assert launch._has_snakefile(["-s", "other.smk"]) and launch._has_snakefile(["--snakefile=x"])
    (tmp_path / "workflow").mkdir()
    (tmp_path / "workflow/Snakefile").write_text("")
    assert launch._has_snakefile(["-n"])


def test_the_jobs_call_this_installations_scripts() -> None:
    scripts = str(Path(sys.executable).parent)
    env = job_environment({"PATH": "/usr/bin:/bin", "X": "1"})
    assert env == {"PATH": f"{scripts}{os.pathsep}/usr/bin:/bin", "X": "1"}
    assert job_environment(env) == env  # not added twice
    assert job_environment({})["PATH"] == scripts


def test_the_installed_workflow_is_no_checkout(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(records.WORKFLOW_CHECKOUT_ENV, "/somewhere/else")
    records.export_workflow_checkout(records.INSTALLED_WORKFLOW)
    assert records.WORKFLOW_CHECKOUT_ENV not in os.environ  # its jobs record the installed version
    records.export_workflow_checkout(tmp_path)
    assert os.environ[records.WORKFLOW_CHECKOUT_ENV] == str(tmp_path.resolve())


def test_make_paper_fig3_runs_the_weights_config_in_its_own_folder() -> None:
    r = subprocess.run(["make", "-n", "paper-fig3", "kick-the-tires", "VENV=/nonexistent", "PAPER_FIG3_DIR=pf3"],
                       cwd=REPO, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert r.returncode == 0, r.stderr
    lines = [" ".join(line.split()) for line in r.stdout.replace("\\\n", " ").splitlines()]
    runs = [line for line in lines if " run " in line]
    assert len(runs) >= 2 and all(
        f"--configfile {REPO}/config/paper-weights.yaml --directory pf3" in x for x in runs[:2]
    )
    assert "--workflow-profile workflow/profiles/default" in runs[0]
    assert f"--report {REPO}/pf3/results/report.html" in runs[1]
    assert "-m rehearsal.run kick-the-tires/paper-fig3 --config config/paper-weights.yaml --shallow" in r.stdout
