"""Provenance names the code that ran: the workflow's checkout, a checkout of qkdissect, or the installed version,
never the commit of a repository the package merely sits in (a venv inside a user's analysis repository)."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

import qkdissect
from qkdissect.provenance import records
from qkdissect.provenance.records import WORKFLOW_CHECKOUT_ENV, export_workflow_checkout, git_state
from tests.helpers import REPO


def _git(where: Path, *args: str) -> str:
    cmd = ["git", "-c", "user.name=t", "-c", "user.email=t@example.org", "-c", "init.defaultBranch=main", *args]
    return subprocess.run(cmd, cwd=where, capture_output=True, text=True, check=True).stdout.strip()


def _repo(root: Path, project: str, package_dir: str) -> tuple[Path, str]:
    """A committed git repository at ``root`` whose pyproject names ``project``, with a qkdissect package
    folder at ``package_dir``; (that folder, the commit)."""
    pkg = root / package_dir
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (root / "pyproject.toml").write_text(f'[project]\nname = "{project}"\nversion = "1"\n')
    _git(root, "init", "-q")
    _git(root, "add", "-A")
    _git(root, "commit", "-qm", "first")
    return pkg, _git(root, "rev-parse", "HEAD")


@pytest.fixture(autouse=True)
def _not_in_a_workflow(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(WORKFLOW_CHECKOUT_ENV, "")  # unset for the package; restored after the test


def test_installed_in_a_venv_inside_an_analysis_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg, analysis_commit = _repo(tmp_path / "analysis", "my-analysis", ".venv/lib/python3.11/site-packages/qkdissect")
    monkeypatch.setattr(records, "PACKAGE_ROOT", pkg)
    state = git_state()
    assert state == {"commit": None, "dirty": None, "checkout": "installed package", "version": state["version"]}
    assert state["version"] in (qkdissect.__version__, "not installed") and analysis_commit not in str(state)


def test_a_vendored_copy_in_another_project_is_not_our_checkout(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pkg, _ = _repo(tmp_path / "other", "other-project", "src/qkdissect")
    monkeypatch.setattr(records, "PACKAGE_ROOT", pkg)
    assert git_state()["commit"] is None


def test_a_checkout_of_qkdissect_records_its_commit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pkg, commit = _repo(tmp_path / "qk", "qkdissect", "src/qkdissect")
    monkeypatch.setattr(records, "PACKAGE_ROOT", pkg)
    assert git_state() == {"commit": commit, "dirty": False, "checkout": "package checkout"}
    (pkg / "__init__.py").write_text("x = 1\n")
    assert git_state()["dirty"] is True
    # installed into a venv inside that checkout is still no checkout of its own
    venv_pkg = tmp_path / "qk/.venv/lib/python3.11/site-packages/qkdissect"
    venv_pkg.mkdir(parents=True)
    monkeypatch.setattr(records, "PACKAGE_ROOT", venv_pkg)
    assert git_state()["checkout"] == "installed package"


def test_the_workflow_records_its_own_checkout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Run from the workflow (which exports its checkout to its jobs), the package records the workflow
    checkout's commit, wherever the package itself was installed."""
    pkg, _ = _repo(tmp_path / "analysis", "my-analysis", ".venv/lib/python3.11/site-packages/qkdissect")
    _, workflow_commit = _repo(tmp_path / "qkdissect-checkout", "qkdissect", "src/qkdissect")
    monkeypatch.setattr(records, "PACKAGE_ROOT", pkg)
    export_workflow_checkout(tmp_path / "qkdissect-checkout")  # what workflow/rules/common.smk does
    assert git_state() == {"commit": workflow_commit, "dirty": False, "checkout": "workflow checkout"}
    assert records.code_record()["git"]["commit"] == workflow_commit
    smk = (REPO / "workflow/rules/common.smk").read_text()
    assert re.search(r"^export_environment\(.*, REPO\)$", smk, re.M)  # which calls export_workflow_checkout
