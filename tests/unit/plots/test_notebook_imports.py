"""Plots never load a model, for the figure notebooks too: their code imports only the plotting modules, the stores'
reader, the figures' provenance and the options vocabulary (import-linter holds ``qkdissect.plots`` to stores only),
and importing all of that loads no model library and no module that loads models, runs passes or decodes images. A
figure therefore draws again from its stores alone, whatever the figure (the workflow tests redraw some of them
with the weights and the photographs gone)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import REPO

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
#: what a figure notebook may import (a module or a package of modules)
ALLOWED = (
    "IPython.display", "qkdissect.plots", "qkdissect.stores", "qkdissect.provenance.figures", "qkdissect.options",
)  # fmt: skip
#: what none of it may load
FORBIDDEN = ("torch", "timm", "transformers", "torchvision", "qkdissect.models", "qkdissect.passes", "qkdissect.data")


def imported(nb: Path) -> set[str]:
    modules: set[str] = set()
    for cell in json.loads(nb.read_text())["cells"]:
        if cell["cell_type"] != "code":
            continue
        for node in ast.walk(ast.parse("".join(cell["source"]))):
            if isinstance(node, ast.Import):
                modules |= {a.name for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module:
                modules.add(node.module)
    return modules


def allowed(module: str) -> bool:
    return any(module == a or module.startswith(a + ".") for a in ALLOWED)


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=lambda p: p.name)
def test_a_figure_notebook_imports_only_plots_and_stores(nb: Path) -> None:
    modules = imported(nb)
    assert modules, nb  # every notebook draws with the package
    assert {m for m in modules if not allowed(m)} == set(), nb.name


def test_what_the_notebooks_import_loads_no_model_library() -> None:
    modules = sorted(set().union(*(imported(nb) for nb in NOTEBOOKS)))
    code = (
        "import importlib, json, sys\n"
        f"for m in {modules!r}: importlib.import_module(m)\n"
        "print(json.dumps(sorted(sys.modules)))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    loaded = json.loads(r.stdout)
    assert [m for m in loaded if any(m == f or m.startswith(f + ".") for f in FORBIDDEN)] == []
    assert "qkdissect.plots.layers" in loaded  # the check saw the plotting modules
