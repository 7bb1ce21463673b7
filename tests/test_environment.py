"""environment.yml (conda, for clusters) and pyproject.toml list the same packages with the same bounds."""

from __future__ import annotations

import re
import tomllib

import yaml

from conftest import REPO

CONDA_NAMES = {"pytorch": "torch", "huggingface_hub": "huggingface-hub"}


def _req(s: str) -> tuple[str, str]:
    m = re.fullmatch(r"\s*([A-Za-z0-9_.\-]+)\s*(.*)", s)
    assert m, s
    return m.group(1).lower().replace("_", "-"), m.group(2).replace(" ", "")


def test_environment_matches_pyproject() -> None:
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    py = dict(_req(r) for r in pyproject["dependencies"] + pyproject["optional-dependencies"]["test"])
    env = yaml.safe_load((REPO / "environment.yml").read_text())
    conda = {}
    for dep in env["dependencies"]:
        if isinstance(dep, str) and not dep.startswith(("python", "pip")):
            name, bound = _req(dep)
            conda[CONDA_NAMES.get(name, name)] = bound
    assert conda == py
    assert f">={pyproject['requires-python'].lstrip('>=')}" in str(env["dependencies"][0])
