"""The workflow imported by another one as a Snakemake module (README "Use it as a module"): `module` with a
`prefix` and `use rule * from qk as qk_*` runs, writes every output under the prefix and keeps local rules local;
the catalog's `.test` configuration plans the weights-only figures."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from tests.helpers import REPO, make_tiny_vit
from tests.helpers.workflow import job_counts, snakemake

PREFIX = "qk"
#: the consumer's own rule, beside ours: its output must be the only file outside the prefix
CONSUMER = f"""\
module qk:
    snakefile: {str(REPO / "workflow" / "Snakefile")!r}
    config: config["qk"]
    prefix: {PREFIX!r}


use rule * from qk as qk_*


rule summary:
    input:
        "{PREFIX}/results/scores/tiny.zarr",
    output:
        "summary.txt",
    shell:
        "echo {{input:q}} > {{output:q}}"
"""
#: printed when the consumer's Snakefile is parsed: the rules Snakemake runs on the submitting machine
SHOW_LOCAL_RULES = '\nprint("local rules:", " ".join(sorted(workflow._localrules)))\n'
#: the figures a tiny model's weights alone make (no image set, no mask dataset, no text corpus)
WEIGHTS_ONLY = {
    "fig3": "all",
    "s1": [],
    "s2": [],
    "s3": None,
    "s4": [],
    "logits": [],
    "ln_folding": [],
    "text_modes": [],
    "fig1": [],
    "fig4": [],
    "fig5": None,
    "galleries": {},
    "s17": {},
    "fig2": None,
    "fig6": None,
}


def consumer(tmp_path: Path, extra: str = "") -> Path:
    """A workflow in tmp_path/consumer that imports ours with the prefix, and its config (a tiny random ViT whose
    weights lie outside the consumer's folder)."""
    spec = make_tiny_vit(tmp_path / "weights", depth=2)
    work = tmp_path / "consumer"
    work.mkdir()
    (work / "Snakefile").write_text(CONSUMER + extra)
    config = {"qk": {"models": {"tiny": {"spec": spec}}, "analysis": {"device": "cpu"}, "figures": WEIGHTS_ONLY}}
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    return work


def files_under(folder: Path) -> set[str]:
    """Every file under folder (relative), Snakemake's own records under .snakemake/ left out."""
    return {
        str(p.relative_to(folder))
        for p in folder.rglob("*")
        if p.is_file() and p.relative_to(folder).parts[0] != ".snakemake"
    }


def run_consumer(work: Path, *args: str, **kw: object) -> str:
    r = snakemake(work, *args, config=work / "config.yaml", snakefile=work / "Snakefile", **kw)  # type: ignore[arg-type]
    return r.stdout + r.stderr


def test_consumer_runs_our_rules_under_its_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A real run of the tiny model's Fig. 3 (weights, modes, scores, the notebook) and of the consumer's own rule
    on our scores: every file lands under qk/, the notebook read the prefixed store, nothing else is written."""
    monkeypatch.setenv("QKDISSECT_DATA", str(tmp_path / "data"))
    work = consumer(tmp_path)
    before = files_under(work)
    figure = f"{PREFIX}/results/figures/fig3_weighted_cosine.png"
    out = run_consumer(work, "--cores", "2", figure, "summary.txt")
    assert "rule qk_fig3:" in out and "rule qk_modes:" in out
    made = files_under(work) - before
    outside = sorted(f for f in made if not f.startswith(f"{PREFIX}/"))
    assert outside == ["summary.txt"], f"written outside the prefix {PREFIX}/: {outside}"
    assert (work / "summary.txt").read_text().strip() == f"{PREFIX}/results/scores/tiny.zarr"
    for path in (figure, "results/scores/tiny.zarr", "results/weights/tiny.json", "results/logs/modes/tiny.log"):
        assert (work / PREFIX / path.removeprefix(f"{PREFIX}/")).exists(), path
    executed = (work / PREFIX / "results/notebooks/fig3_weighted_cosine.ipynb").read_text()
    assert f"{PREFIX}/results/scores/tiny.zarr" in executed  # the store the notebook read: ours, under the prefix
    assert sorted(p.name for p in tmp_path.iterdir()) == ["consumer", "weights"]  # nor beside it


def test_consumer_dry_run_keeps_local_rules_local_and_paths_prefixed(tmp_path: Path) -> None:
    """Our local rules (the downloading weights rule, the figures, the claims, the crate) are local under their
    prefixed names, so a cluster profile never sends them to a compute node; the commands that take paths from the
    config rather than from input/output (the claims' stores, the crate's folder) get the prefixed paths too."""
    work = consumer(tmp_path, SHOW_LOCAL_RULES)
    out = run_consumer(work, "-n", "-p", "--forceall", f"{PREFIX}/results/ro-crate-metadata.json")
    local = set(re.search(r"^local rules: (.*)$", out, re.M).group(1).split())  # type: ignore[union-attr]
    assert {"qk_weights", "qk_fig3", "qk_claims", "qk_crate"} <= local
    assert not [r for r in local if not r.startswith("qk_")], f"local rules without the prefix: {local}"
    assert not {"qk_modes", "qk_scores", "qk_project"} & local  # the compute rules still go to the cluster
    assert job_counts(out) == dict(qk_weights=1, qk_modes=1, qk_scores=1, qk_fig3=2, qk_claims=1, qk_crate=1)
    assert f"qkdissect crate {PREFIX}/results --root . --workflow " in out  # records resolved from the run folder
    assert f'"scores":["{PREFIX}/results/scores/tiny.zarr"]' in out
    assert f"stores: {{scores: [{PREFIX}/results/scores/tiny.zarr]}}" in out
    assert str(REPO / "notebooks" / "fig3_layer_cosine.ipynb") in out  # our notebook, not the consumer's folder


def test_catalog_test_config_plans_the_weights_only_figures(tmp_path: Path) -> None:
    """The catalog's .test configuration is valid and needs no model hub: the offline model, Fig. 3, S1, S2."""
    test_config, snakefile = REPO / ".test/config/config.yaml", REPO / "workflow/Snakefile"
    counts = job_counts(snakemake(tmp_path, "-n", "--forceall", config=test_config, snakefile=snakefile).stdout)
    wanted = dict(weights=1, modes=1, scores=1, fig3=2, s1_histograms=1, s2_spectrum=1)
    assert {k: counts.get(k) for k in wanted} == wanted
    assert not {"project", "preference", "same_object", "maps", "text_project"} & counts.keys()
