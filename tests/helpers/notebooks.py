"""Checks on the figure notebooks: papermill only warns when a rule passes a parameter that the notebook's
``parameters`` cell does not define (the value is then silently unused), so the tests check every papermill call
of the workflow against its notebook with these helpers."""

from __future__ import annotations

import ast
import json
import shlex
from pathlib import Path

import yaml


def notebook_parameters(path: str | Path) -> set[str]:
    """Names assigned in the cell tagged ``parameters`` of a notebook."""
    nb = json.loads(Path(path).read_text())
    cells = [c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(cells) != 1:
        raise ValueError(f"{path}: expected one cell tagged 'parameters', found {len(cells)}")
    src = "".join(cells[0]["source"]) if isinstance(cells[0]["source"], list) else cells[0]["source"]
    names: set[str] = set()
    for node in ast.parse(src).body:
        targets = (
            node.targets if isinstance(node, ast.Assign) else [node.target] if isinstance(node, ast.AnnAssign) else []
        )
        names.update(t.id for t in targets if isinstance(t, ast.Name))
    return names


def papermill_call(command: str) -> tuple[str, set[str]]:
    """The input notebook and the parameter names of one ``papermill IN OUT ...`` shell command."""
    words = shlex.split(command)
    start = next(i for i, w in enumerate(words) if Path(w).name == "papermill")
    args = words[start + 1 :]
    positional: list[str] = []
    names: set[str] = set()
    i = 0
    while i < len(args):
        a = args[i]
        if a in (">", "2>&1") or a.startswith(">"):
            break
        if a in ("-p", "--parameters", "-r", "--parameters_raw"):
            names.add(args[i + 1])
            i += 3
        elif a in ("-y", "--parameters_yaml"):
            names.update(yaml.safe_load(args[i + 1]))
            i += 2
        elif a.startswith("-"):
            i += 1 if a in ("--log-output", "--no-progress-bar", "--report-mode", "--prepare-only") else 2
        else:
            positional.append(a)
            i += 1
    if len(positional) < 2:
        raise ValueError(f"not a papermill call with input and output notebooks: {command}")
    return positional[0], names


def check_papermill_call(command: str) -> list[str]:
    """Problems with one papermill command: parameters the notebook does not define."""
    nb, names = papermill_call(command)
    unknown = sorted(names - notebook_parameters(nb))
    return [f"{Path(nb).name} has no parameter {n!r} (papermill would only warn)" for n in unknown]
