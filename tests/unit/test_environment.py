"""environment.yml (conda, for clusters) and pyproject.toml list the same packages with the same bounds."""

from __future__ import annotations

import re
import tomllib

import yaml

from tests.helpers import REPO

CONDA_NAMES = {"pytorch": "torch", "huggingface_hub": "huggingface-hub"}


def _req(s: str) -> tuple[str, str]:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", s)
    assert m, s
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def _conda(path: str) -> tuple[dict[str, str], dict]:
    env = yaml.safe_load((REPO / path).read_text())
    conda = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str) and not dep.startswith(("python", "pip")):
            name, bound = _req(dep)
            conda[CONDA_NAMES.get(name, name)] = bound
        elif isinstance(dep, dict):  # installed by pip from PyPI (the package itself aside)
            conda.update(_req(d.split("#")[0]) for d in dep.get("pip", []) if not d.startswith("-e"))
    return conda, env


def test_environment_matches_pyproject() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = pyproject["optional-dependencies"]
    py = dict(_req(r) for r in pyproject["dependencies"] + extras["test"] + extras["workflow"])
    conda, env = _conda("environment.yml")
    assert conda == py
    assert f">={pyproject['requires-python'].lstrip('>=')}" in str(env["dependencies"][0])


def test_workflow_conda_env_has_what_the_rules_run() -> None:
    """workflow/envs/qkdissect.yaml (rules under --sdm conda) = the package's dependencies + the notebook runner."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    wanted = dict(_req(r) for r in pyproject["dependencies"])
    wanted.update(
        _req(r) for r in pyproject["optional-dependencies"]["workflow"] if r.startswith(("papermill", "ipykernel"))
    )
    conda, _ = _conda("workflow/envs/qkdissect.yaml")
    assert conda == wanted


def _lock() -> dict[str, str]:
    lines = [ln for ln in (REPO / "requirements/lock.txt").read_text().splitlines() if ln and not ln.startswith("#")]
    pins = dict(ln.split("==") for ln in lines)
    assert all(re.fullmatch(r"[a-z0-9\-]+", n) and re.fullmatch(r"[0-9][0-9A-Za-z.+]*", v) for n, v in pins.items())
    return pins


def test_bounds_are_the_tested_versions() -> None:
    """Every requirement of pyproject (and so of environment.yml) is pinned in requirements/lock.txt, the
    environment the tests pass in, and its lower bound is that version: no bound claims an untested release."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    extras = pyproject["optional-dependencies"]
    lock = _lock()
    for req in pyproject["dependencies"] + extras["test"] + extras["workflow"]:
        name, bound = _req(req)
        assert name in lock, f"{name} is required but not in requirements/lock.txt: run python requirements/lock.py"
        assert bound == f">={lock[name]}", f"{name}{bound} in pyproject.toml, but the tests ran with {lock[name]}"
