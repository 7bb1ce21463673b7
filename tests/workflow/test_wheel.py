"""An installed package runs the workflow: the wheel carries the workflow, the figure notebooks and the
configurations (as qkdissect/_workflow), and in a fresh virtual environment with the wheel installed, `qkdissect
run` from an empty folder draws the offline default's Fig. 3 with the installed code (no checkout in sight: not on
PATH, not on PYTHONPATH, not the working directory).

The environment's dependencies are this environment's (a .pth file puts its site-packages after the new one's):
what `pip install 'qkdissect[workflow]'` would install, without downloading it again; the one thing pip would
also have written, papermill's console script, is written as pip writes it."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

from tests.helpers import REPO
from tests.helpers.workflow import workflow_path

pytestmark = [pytest.mark.slow, pytest.mark.network]  # network: the offline default's wheels
SHIPPED = "qkdissect/_workflow/"
FIG3 = ["results/figures/fig3_weighted_cosine.png", "results/figures/fig3_unweighted_cosine.png"]
#: checkout folders that are never part of the source (environments, outputs, caches)
NOT_SOURCE = (".git", ".venv", "data", "results", ".snakemake", "build", "dist", "rehearsal-run", "paper-fig3")


def checkout_files() -> list[str]:
    """The checkout's source files, relative: tracked and new ones git does not ignore (or every file outside the
    environments and outputs, where there is no git)."""
    try:
        listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                                cwd=REPO, capture_output=True, check=True, timeout=60).stdout  # fmt: skip
        return sorted(f for f in listed.decode().split("\0") if f and (REPO / f).is_file())
    except (OSError, subprocess.SubprocessError):
        files = (p.relative_to(REPO) for p in REPO.rglob("*") if p.is_file())
        return sorted(str(f) for f in files if f.parts[0] not in NOT_SOURCE and "__pycache__" not in f.parts)


def shipped_sources() -> dict[str, str]:
    """What the wheel must carry: checkout path -> path in the wheel."""
    keep = [f for f in checkout_files() if f == "Snakefile" or f.startswith("workflow/")]
    keep += [f for f in checkout_files() if f.startswith("notebooks/") and f.endswith(".ipynb")]
    keep += [
        f for f in checkout_files() if f.startswith("config/") and (f.endswith(".yaml") or f == "config/README.md")
    ]
    return {f: SHIPPED + f for f in keep}


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel, built from a copy of the checkout's sources (the build writes nothing into the checkout)."""
    source, dist = tmp_path_factory.mktemp("source"), tmp_path_factory.mktemp("dist")
    for f in checkout_files():
        (source / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / f, source / f)
    r = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
                        "-q", "-w", str(dist), str(source)], capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (built,) = dist.glob("qkdissect-*.whl")
    return built


def test_the_wheel_carries_the_workflow_notebooks_and_configs(wheel: Path) -> None:
    expected = shipped_sources()
    assert {"Snakefile", "workflow/Snakefile", "workflow/figures.yaml", "workflow/schemas/config.schema.yaml",
            "config/config.yaml", "config/paper.yaml", "config/paper-weights.yaml",
            "notebooks/fig3_layer_cosine.ipynb"} <= set(expected)  # fmt: skip
    with zipfile.ZipFile(wheel) as z:
        carried = {n for n in z.namelist() if n.startswith(SHIPPED)}
        assert carried == set(expected.values())  # nothing missing, nothing else (no lock, cache or checkpoint)
        for source, name in expected.items():
            assert z.read(name) == (REPO / source).read_bytes(), source


@pytest.fixture(scope="module")
def venv(wheel: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh virtual environment with the wheel installed (its dependencies: this environment's)."""
    env = tmp_path_factory.mktemp("venv")
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True, timeout=120)
    python = env / "bin/python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()  # fmt: skip
    ours = dict.fromkeys(sysconfig.get_paths()[k] for k in ("purelib", "platlib"))
    (Path(site) / "qkdissect-test-dependencies.pth").write_text("".join(f"{p}\n" for p in ours))
    r = subprocess.run([str(python), "-m", "pip", "install", "--no-deps", "--no-index", "--ignore-installed", "-q",
                        str(wheel)], capture_output=True, text=True, timeout=300, env=clean_env(env))  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    script = env / "bin/papermill"  # what pip writes for papermill's console_scripts entry point
    script.write_text(f"#!{python}\nimport sys\nfrom papermill.cli import papermill\nsys.exit(papermill())\n")
    script.chmod(0o755)
    return env


def clean_env(env: Path) -> dict[str, str]:
    """The environment of a user of ``env``: its scripts first on PATH, and nothing that leads to the checkout
    (this environment's scripts, PYTHONPATH, the workflow checkout of a run around this test)."""
    ours = str(Path(sys.executable).parent)
    path = [p for p in workflow_path(os.environ.get("PATH", "")).split(os.pathsep) if p != ours]
    out = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "QKDISSECT_WORKFLOW_CHECKOUT")}
    return {**out, "PATH": os.pathsep.join([str(env / "bin"), *path]), "HF_HUB_OFFLINE": "1"}


def qkdissect_run(venv: Path, cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    cwd.mkdir(exist_ok=True)
    return subprocess.run([str(venv / "bin/qkdissect"), "run", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=900, env=clean_env(venv))  # fmt: skip


def test_an_installed_package_draws_fig3_from_an_empty_folder(venv: Path, tmp_path: Path) -> None:
    work = tmp_path / "empty"
    r = qkdissect_run(venv, work, "--cores", "2", *FIG3)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    installed = next(venv.glob("lib/python*/site-packages/qkdissect"))
    assert f"no Snakefile here; the workflow of {installed / '_workflow'}" in r.stderr
    assert all((work / f).stat().st_size > 10_000 for f in FIG3)
    assert {p.name for p in work.iterdir()} == {"results", ".snakemake"}  # nothing else written here
    record = json.loads((work / "results/figures/fig3_weighted_cosine.provenance.json").read_text())
    assert record["code"]["git"]["checkout"] == "installed package" and record["code"]["git"]["commit"] is None
    assert record["notebook"]["path"].startswith(str(installed / "_workflow/notebooks"))
    assert [Path(f["path"]) for f in record["config"]["files"]] == [installed / "_workflow/config/config.yaml"]


def test_a_shipped_config_is_found_by_its_path_in_the_checkout(venv: Path, tmp_path: Path) -> None:
    r = qkdissect_run(venv, tmp_path / "empty", "-n", "--configfile", "config/paper-weights.yaml")
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
    table = r.stdout[r.stdout.index("Job stats:") :].split("\ntotal")[0]
    jobs = dict(re.findall(r"^(\w+)\s+(\d+)$", table, re.M))
    assert {rule: jobs.get(rule) for rule in ("weights", "modes", "scores", "fig3", "s3_ijepa", "claims")} == {
        "weights": "17", "modes": "17", "scores": "17", "fig3": "2", "s3_ijepa": "1", "claims": "1"
    }  # fmt: skip
    assert not {"project", "preference", "same_object", "maps"} & set(jobs)  # the weights alone
    r = qkdissect_run(venv, tmp_path / "empty", "-n", "--configfile", "config/no-such.yaml")
    assert r.returncode == 2 and "config/no-such.yaml" in r.stderr  # a path in neither place is named as given
