"""The wheel carries the workflow: setuptools builds the package from pyproject.toml, and this build step copies
the checkout's workflow files into it as ``qkdissect/_workflow/`` (the checkout's own layout), so that an installed
package runs the workflow without a checkout (``qkdissect run``; see ``qkdissect.launch``). An editable install
runs the checkout's own files and copies nothing. The source distribution carries the same files (MANIFEST.in)."""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

HERE = Path(__file__).resolve().parent
#: what is copied: the entry Snakefile, the workflow (rules, schemas, figure table, report captions, profiles,
#: environment), the figure notebooks and the configurations (not a lock a run wrote beside them)
SHIPPED = {"Snakefile": None, "workflow": ("*",), "notebooks": ("*.ipynb",), "config": ("*.yaml", "README.md")}


class BuildWithWorkflow(build_py):
    """build_py, then the workflow's files into the built package."""

    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        target = Path(self.build_lib) / "qkdissect" / "_workflow"
        if target.exists():
            shutil.rmtree(target)
        target.mkdir(parents=True)
        for name, patterns in SHIPPED.items():
            source = HERE / name
            if patterns is None:
                shutil.copy2(source, target / name)
                continue
            keep = {p for pattern in patterns for p in source.rglob(pattern) if p.is_file()}
            for path in sorted(keep):
                rel = path.relative_to(HERE)
                if any(part.startswith(".") or part == "__pycache__" for part in rel.parts) or path.match(
                    "*.lock.json"
                ):
                    continue
                (target / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(path, target / rel)


setup(cmdclass={"build_py": BuildWithWorkflow})
