"""``qkdissect run [SNAKEMAKE ARGS]``: Snakemake, with the config files it is given checked first.

Snakemake reads ``--configfile`` before any of the workflow's code runs, and a YAML error there comes out as
"Config file is not valid JSON or YAML" with neither the file nor the line. This wrapper reads every file named
by ``--configfile`` / ``--configfiles`` itself, stops with one line naming the file, line and column of the first
error (:func:`qkdissect.config_check.yaml_problem`), and otherwise replaces itself with ``python -m snakemake``
and the same arguments (same exit status, signals and output). On results fetched from a published bundle
(``qkdissect fetch``) it lets only the rules that draw from the stores run
(:func:`qkdissect.provenance.fetch.redraw_arguments`). ``make figures`` runs through it; the workflow
checks the default ``config/config.yaml`` the same way when no config file is given.

Without a checkout: where the working directory has no Snakefile of its own (and ``-s`` names none), the workflow
is the one installed with the package (``qkdissect/_workflow``: the checkout's ``Snakefile``, ``workflow/``,
``config/`` and ``notebooks/``, copied into the wheel by ``setup.py``), or that of the checkout the package is
imported from. Snakemake then finds its default profile beside it (``workflow/profiles/default``), and a config or
profile path that is not in the working directory but is one of that workflow's (``config/paper-weights.yaml``,
``workflow/profiles/slurm``) is taken from there: ``qkdissect run --configfile config/paper-weights.yaml`` works the
same in a checkout and in an empty folder.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

from .config_check import yaml_problem

CONFIG_OPTIONS = ("--configfile", "--configfiles")
#: options whose values are files or folders of the workflow (taken from the workflow's own when not here)
PATH_OPTIONS = (*CONFIG_OPTIONS, "--profile", "--workflow-profile")
SNAKEFILE_OPTIONS = ("-s", "--snakefile")
#: where Snakemake looks for a Snakefile in the working directory (snakemake.common.SNAKEFILE_CHOICES)
SNAKEFILE_CHOICES = ("Snakefile", "snakefile", "workflow/Snakefile", "workflow/snakefile")
PACKAGE = Path(__file__).resolve().parent


def _values(args: Sequence[str], options: Sequence[str]) -> Iterator[tuple[int, str]]:
    """(index, value) of every value of ``options`` in ``args``: ``--opt A [B ...]`` or ``--opt=A`` (index of the
    ``--opt=A`` argument itself)."""
    taking = False
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in options:
            taking = not eq
            if eq:
                yield i, value
        elif arg.startswith("-"):
            taking = False
        elif taking:
            yield i, arg


def configfiles(args: Sequence[str]) -> list[str]:
    """The files named by ``--configfile[s] A [B ...]`` or ``--configfile[s]=A`` (Snakemake takes several)."""
    return [value for _, value in _values(args, CONFIG_OPTIONS)]


def workflow_root(package: Path = PACKAGE) -> Path | None:
    """The workflow `qkdissect run` runs where the working directory has none: the copy installed with the package
    (``_workflow`` in the package: a wheel), else the checkout the package is imported from (``src/qkdissect``'s
    top); None when there is neither."""
    for root in (package / "_workflow", package.parents[1]):
        if (root / "workflow" / "Snakefile").is_file():
            return root
    return None


def with_workflow(args: Sequence[str], root: Path) -> list[str]:
    """``args`` run on the workflow under ``root``: its Snakefile (``-s``; Snakemake finds its default profile
    beside it), and each config or profile path that is not here but is one of the workflow's, from there."""
    out = list(args)
    for i, value in _values(args, PATH_OPTIONS):
        given = Path(value)
        if given.is_absolute() or given.exists() or not (root / given).exists():
            continue
        name, eq, _ = out[i].partition("=")
        out[i] = f"{name}={root / given}" if eq else str(root / given)
    return ["-s", str(root / "workflow" / "Snakefile"), *out]


def _has_snakefile(args: Sequence[str]) -> bool:
    named = any(a in SNAKEFILE_OPTIONS or a.startswith("--snakefile=") for a in args)
    return named or any(Path(f).is_file() for f in SNAKEFILE_CHOICES)


def run(args: Sequence[str]) -> int:
    """Check the config files of ``args``; then exec Snakemake (returns only on a bad config file: 2). Where the
    working directory has no Snakefile, on the installed (or the package's checkout's) workflow."""
    root = None if _has_snakefile(args) else workflow_root()
    if root is not None:
        args = with_workflow(args, root)
    problems = [p for f in configfiles(args) if (p := yaml_problem(f))]
    if problems:
        print(f"qkdissect run: error: {problems[0]}", file=sys.stderr)
        return 2
    from .provenance.fetch import REDRAW_ENV, redraw_arguments

    if redraw := redraw_arguments(args):  # results fetched from a bundle: only what draws from the stores
        os.environ[REDRAW_ENV] = "1"
        print("results fetched from a bundle: only the figures, the claims, the mode atlas and the crate are made")
    if root is not None:
        print(f"qkdissect run: no Snakefile here; the workflow of {root}", file=sys.stderr)
    sys.stdout.flush()
    sys.stderr.flush()
    os.execve(sys.executable, [sys.executable, "-m", "snakemake", *args, *redraw], job_environment(os.environ))
    return 0  # not reached


def job_environment(env: Mapping[str, str]) -> dict[str, str]:
    """``env`` with this Python's scripts folder first on PATH: the jobs' ``python -m qkdissect`` and ``python -m
    papermill`` are this installation's, also when its environment is not activated (``venv/bin/qkdissect run``)."""
    scripts = str(Path(sys.executable).parent)
    path = env.get("PATH", "")
    first = path.split(os.pathsep, 1)[0]
    return {**env, "PATH": path if first == scripts else os.pathsep.join(p for p in (scripts, path) if p)}
