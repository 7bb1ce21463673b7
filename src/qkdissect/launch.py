"""``qkdissect run [SNAKEMAKE ARGS]``: Snakemake, with the config files it is given checked first.

Snakemake reads ``--configfile`` before any of the workflow's code runs, and a YAML error there comes out as
"Config file is not valid JSON or YAML" with neither the file nor the line. This wrapper reads every file named
by ``--configfile`` / ``--configfiles`` itself, stops with one line naming the file, line and column of the first
error (:func:`qkdissect.config_check.yaml_problem`), and otherwise replaces itself with ``python -m snakemake``
and the same arguments (same exit status, signals and output). On results fetched from a published bundle
(``qkdissect fetch``) it lets only the rules that draw from the stores run
(:func:`qkdissect.provenance.fetch.redraw_arguments`). ``make figures`` runs through it; the workflow
checks the default ``config/config.yaml`` the same way when no config file is given.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence

from .config_check import yaml_problem

CONFIG_OPTIONS = ("--configfile", "--configfiles")


def configfiles(args: Sequence[str]) -> list[str]:
    """The files named by ``--configfile[s] A [B ...]`` or ``--configfile[s]=A`` (Snakemake takes several)."""
    found: list[str] = []
    taking = False
    for arg in args:
        name, eq, value = arg.partition("=")
        if name in CONFIG_OPTIONS:
            taking = not eq
            found += [value] if eq else []
        elif arg.startswith("-"):
            taking = False
        elif taking:
            found.append(arg)
    return found


def run(args: Sequence[str]) -> int:
    """Check the config files of ``args``; then exec Snakemake (returns only on a bad config file: 2)."""
    problems = [p for f in configfiles(args) if (p := yaml_problem(f))]
    if problems:
        print(f"qkdissect run: error: {problems[0]}", file=sys.stderr)
        return 2
    from .provenance.fetch import REDRAW_ENV, redraw_arguments

    if redraw := redraw_arguments(args):  # results fetched from a bundle: only what draws from the stores
        os.environ[REDRAW_ENV] = "1"
        print("results fetched from a bundle: only the figures, the claims, the mode atlas and the crate are made")
    sys.stdout.flush()
    os.execv(sys.executable, [sys.executable, "-m", "snakemake", *args, *redraw])
    return 0  # not reached
