"""The workflow's modern run draws the rotary spectrum of rotary models only (Snakemake's dry run)."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO
from tests.helpers.workflow import job_counts, papermill_commands, snakemake, write_config


def test_the_modern_run_draws_rotary_models_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config/modern.yaml with a model without rotary embedding added (MiniLM) and the content core asked for:
    SmolLM2 alone gets its offsets (at rotary.context), spectrum, content core and two figures, each notebook
    given only the parameters it defines; naming a model without rotary embedding in figures.rotary is refused
    before any job."""
    from tests.helpers.notebooks import check_papermill_call

    monkeypatch.setenv("QKDISSECT_DATA", str(tmp_path / "empty-data"))
    cfg = yaml.safe_load((REPO / "config/modern.yaml").read_text())
    cfg["models"]["minilm-l6"] = None
    cfg["rotary"]["content_core"] = "mean:256"
    r = snakemake(tmp_path / "run", "-n", "-p", config=write_config(tmp_path, cfg))
    counts = job_counts(r.stdout)
    rotary = {k: counts.get(k) for k in ("offsets", "spectrum", "modes_core", "rotary_spectrum", "rotary_distance")}
    assert rotary == dict.fromkeys(rotary, 1) and counts["modes"] == 2
    assert "offsets smollm2:SmolLM2-135M-Instruct --name smollm2-135m" in r.stdout and "--offsets 2048" in r.stdout
    assert "results/spectrum/smollm2-135m.zarr" in r.stdout and "minilm-l6.zarr -q" not in r.stdout
    assert "--offset mean:256" in r.stdout and "results/modes_core/smollm2-135m.zarr" in r.stdout
    commands = papermill_commands(r.stdout)
    assert len([c for c in commands if "rotary_" in c]) == 2 and all(check_papermill_call(c) == [] for c in commands)
    cfg["figures"]["rotary"] = ["smollm2-135m", "minilm-l6"]
    r = snakemake(tmp_path / "run", "-n", config=write_config(tmp_path, cfg), check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "figures.rotary names ['minilm-l6'], which are not known to be rotary" in out
