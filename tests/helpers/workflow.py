"""Running the repository's Snakemake workflow from a test, reading what its dry run prints, and checking the figures a
run drew."""

from __future__ import annotations

import copy
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml
from snakemake.utils import validate

from qkdissect.workflow.config import fill_in_defaults

from . import REPO


def workflow_path(path: str) -> str:
    """PATH for a Snakemake run that does not use SLURM: this Python's scripts first, then a stand-in
    ``scontrol`` that fails at once. The SLURM executor plugin runs ``scontrol show config`` when Snakemake
    starts (for its help text); with SLURM installed but no controller running (after the SLURM test stops its
    cluster) that call waits 10 s, on every Snakemake start."""
    shim = Path(tempfile.gettempdir()) / f"qkdissect-no-slurmctld-{os.getuid()}"
    scontrol = shim / "scontrol"
    if not scontrol.exists():
        shim.mkdir(exist_ok=True)
        tmp = shim / f".scontrol.{os.getpid()}"
        tmp.write_text("#!/bin/sh\necho 'no SLURM controller in this test' >&2\nexit 1\n")
        tmp.chmod(0o755)
        os.replace(tmp, scontrol)
    return os.pathsep.join([str(Path(sys.executable).parent), str(shim), path])


def snakemake(
    workdir: Path,
    *args: str,
    config: Path | None = None,
    check: bool = True,
    timeout: int = 900,
    snakefile: Path = REPO / "Snakefile",
    env_extra: dict[str, str] | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run the repository's workflow (or a copy's ``snakefile``) with ``workdir`` as working directory."""
    env = dict(os.environ)
    env["PATH"] = workflow_path(env.get("PATH", ""))  # qkdissect, papermill; no 10 s scontrol wait
    env.setdefault("HF_HUB_OFFLINE", "1")
    env.update(env_extra or {})
    cmd = [sys.executable, "-m", "snakemake", "-s", str(snakefile), "--directory", str(workdir)]
    if config is not None:
        cmd += ["--configfile", str(config)]
    r = subprocess.run([*cmd, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check:
        assert r.returncode == 0, f"snakemake {' '.join(args)} failed:\n{r.stdout[-3000:]}\n{r.stderr[-6000:]}"
    return r


def write_config(tmp_path: Path, config: dict[str, Any]) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def job_counts(dry_run_output: str) -> dict[str, int]:
    table = dry_run_output[dry_run_output.index("Job stats:") :]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M) if m.group(1) != "total"}


def planned_jobs(dry_run_output: str) -> list[tuple[str, set[str], set[str]]]:
    """(rule, inputs, outputs) of every job that `snakemake -n` prints."""
    jobs: list[tuple[str, set[str], set[str]]] = []
    for line in dry_run_output.splitlines():
        if line.startswith("rule ") and line.endswith(":"):
            jobs.append((line[5:-1], set(), set()))
        elif jobs and line.startswith(("    input: ", "    output: ")):
            key, _, files = line.strip().partition(": ")
            jobs[-1][1 if key == "input" else 2].update(f.strip() for f in files.split(","))
    return jobs


def papermill_commands(dry_run_output: str) -> list[str]:
    """The papermill command lines that `snakemake -n -p` prints."""
    return [
        line.split("Shell command: ", 1)[1]
        for line in dry_run_output.splitlines()
        if line.startswith("Shell command: ") and " papermill " in line
    ]


def prepared(given: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A config as the workflow prepares it, without Snakemake: validated with the workflow's schema (its defaults
    filled in), then the defaults that follow from what is given; and the keys so filled in."""
    schema = str(REPO / "workflow/schemas/config.schema.yaml")
    config = copy.deepcopy(given)
    validate(config, schema)
    filled = fill_in_defaults(config, given)
    if filled:
        validate(config, schema)
    return config, filled


def png_text(path: Path) -> dict[str, str]:
    from PIL import Image

    with Image.open(path) as im:
        return dict(im.text)  # type: ignore[attr-defined]


def check_figures(workdir: Path, stems: list[str]) -> None:
    """Every figure: non-empty PNG and PDF, provenance in the PNG and beside it, an executed notebook."""
    for stem in stems:
        png = workdir / "results/figures" / f"{stem}.png"
        pdf = png.with_suffix(".pdf")
        assert png.stat().st_size > 10_000 and pdf.stat().st_size > 5_000, stem
        assert pdf.read_bytes().startswith(b"%PDF")
        record = json.loads(png_text(png)["Description"])
        sidecar = json.loads((workdir / "results/figures" / f"{stem}.provenance.json").read_text())
        outputs = sidecar.pop("outputs")
        assert record == sidecar and record["kind"] == "figure" and set(outputs) == {png.name, pdf.name}
        assert record["notebook"]["sha256"] and record["inputs"] and all(i["sha256"] for i in record["inputs"])
        nb = json.loads((workdir / "results/notebooks" / f"{stem}.ipynb").read_text())
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert all(c["execution_count"] for c in code), stem
        assert not [o for c in code for o in c["outputs"] if o["output_type"] == "error"], stem
        assert any("injected-parameters" in c["metadata"].get("tags", []) for c in code), stem
        # the executed notebook is a visual record: it shows the figure as saved
        assert any("image/png" in o.get("data", {}) for c in code for o in c["outputs"]), stem


def pixels(folder: Path) -> dict[str, Any]:
    """The RGBA pixels of every PNG in ``folder``, by file name."""
    import numpy as np
    from PIL import Image

    return {p.name: np.asarray(Image.open(p).convert("RGBA")) for p in sorted(folder.glob("*.png"))}
