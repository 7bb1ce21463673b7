"""config/paper-weights.yaml, the paper's Fig. 3, S1, S2, S3 and claims 1-4 from its models' weights alone:
config/paper.yaml less what needs images, rehearsed offline (HF_HUB_OFFLINE=1) at 2 blocks on stand-ins of its 16
models and the I-JEPA predictor (rehearsal/), with no image read; and the table of what it downloads, computed
from the stand-ins' real configurations, checked against the files the stand-ins are and printed in the docs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from rehearsal.hub_repos import HUB_REPOS, LOCAL_CHECKPOINTS
from rehearsal.sizes import downloads, markdown

from qkdissect.catalogue import PAPER_MODELS
from qkdissect.stores import open_store
from tests.helpers import REPO
from tests.helpers.standins import shared_stand_ins
from tests.helpers.workflow import workflow_path

PAPER = yaml.safe_load((REPO / "config/paper.yaml").read_text())
WEIGHTS_CONFIG = REPO / "config/paper-weights.yaml"
WEIGHTS = yaml.safe_load(WEIGHTS_CONFIG.read_text())
ALL17 = [*PAPER_MODELS, "ijepa-vith14-predictor"]
DRAWN = {"fig3_weighted_cosine", "fig3_unweighted_cosine", "s1_cosine_histograms_vit-base-patch16-224",
         "s2_spectrum_grid_vit-base-patch16-224", "s3_ijepa_encoder_predictor"}  # fmt: skip
#: a file's bytes beyond its tensors' (safetensors' JSON header, torch.save's zip records)
HEADER_BYTES = 64 * 1024


def test_the_weights_config_is_the_papers_less_what_needs_images() -> None:
    assert WEIGHTS["models"] == PAPER["models"]  # the same 17 models, memory and all
    assert WEIGHTS["analysis"] == PAPER["analysis"] and WEIGHTS["lock"] == PAPER["lock"]
    assert set(WEIGHTS["figures"]) == {"fig3", "null_lines", "s1", "s2", "s3"}
    assert all(WEIGHTS["figures"][k] == PAPER["figures"][k] for k in WEIGHTS["figures"])
    assert not {"images", "mask_datasets", "projections", "atlas"} & set(WEIGHTS)
    assert {k: WEIGHTS["resources"][k] == PAPER["resources"][k] for k in WEIGHTS["resources"]} == {
        "modes": True,
        "scores": True,
    }


@pytest.fixture(scope="module")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The rehearsal, on the session's stand-ins at 2 blocks (tests.helpers.standins: the ones every stand-in's
    passes are tested on), linked instead of built again."""
    out, stand_ins = tmp_path_factory.mktemp("paper-weights"), shared_stand_ins(tmp_path_factory, 2)
    r = subprocess.run(
        [sys.executable, "-m", "rehearsal.run", str(out), "--shallow", "--cores", "2", "--config", str(WEIGHTS_CONFIG),
         "--stand-ins", str(stand_ins)],
        cwd=REPO, capture_output=True, text=True, timeout=1200,
        env={**os.environ, "PATH": workflow_path(os.environ.get("PATH", ""))},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


@pytest.mark.slow
def test_fig3_s1_s2_s3_and_claims_1_to_4_from_the_weights_alone(rehearsal: Path) -> None:
    results = rehearsal / "run/results"
    assert {p.stem for p in (results / "figures").glob("*.png")} == DRAWN
    claims = {c["id"]: c for c in json.loads((results / "claims/claims.json").read_text())["claims"]}
    assert {i for i, c in claims.items() if c["holds"] is not None} == {"1", "2", "3", "4"}
    assert sorted(claims["1"]["models"]) == sorted(PAPER_MODELS)  # Fig. 3's 16 models, not the predictor
    fig3 = json.loads((results / "figures/fig3_weighted_cosine.provenance.json").read_text())
    assert sorted(i["model_id"] for i in fig3["inputs"]) == sorted(PAPER_MODELS)
    # only the weights were read: no image pass ran, no dataset was built
    cost = json.loads((rehearsal / "cost.json").read_text())
    assert {r["rule"] for r in cost["jobs"]} == {"weights", "modes", "scores", "figures"}
    assert sorted(p.name for p in results.iterdir() if p.is_dir()) == [
        "benchmarks", "claims", "figures", "logs", "modes", "notebooks", "run", "scores", "weights"
    ]  # fmt: skip
    assert not any((rehearsal / "hf/hub").glob("datasets--*")) and not (rehearsal / "O3").exists()
    assert "no image pass" in (rehearsal / "cost.md").read_text()


@pytest.mark.slow
def test_every_model_was_resolved_offline_and_analysed_at_the_stand_ins_depth(rehearsal: Path) -> None:
    results = rehearsal / "run/results"
    manifests = {p.stem: json.loads(p.read_text()) for p in (results / "weights").glob("*.json")}
    assert sorted(manifests) == sorted(ALL17)
    assert all(m["hub_offline"] is True for m in manifests.values())
    for model in ALL17:
        modes = open_store(results / f"modes/{model}.zarr", "modes")
        assert modes.sizes["layer"] == 2, model  # the shallow stand-ins' 2 blocks
    lock = json.loads((rehearsal / "run/config/paper.lock.json").read_text())
    assert sorted(lock["models"]) == sorted(ALL17)  # pinned in the paper's own lock file


@pytest.mark.slow
def test_the_download_sizes_are_the_stand_in_files_sizes(rehearsal: Path) -> None:
    """The sizes the docs give are computed on the meta device; computed at the stand-ins' 2 blocks they are the
    bytes of the files the rehearsal wrote, to within a file's header."""
    hub = rehearsal / "hf/hub"
    by_key = {r.key: r for r in HUB_REPOS.values()}
    for d in downloads(depth=2):
        if d.keys[0] in by_key:
            org, name = by_key[d.keys[0]].repo_id.split("/")
            (path,) = (hub / f"models--{org}--{name}/snapshots").glob(f"*/{d.file}")
        else:
            path = rehearsal / "data/weights" / d.file
        assert 0 <= path.stat().st_size - d.bytes <= HEADER_BYTES, (d.file, path.stat().st_size, d.bytes)


def test_the_docs_print_the_computed_download_table() -> None:
    rows = downloads()
    assert [k for d in rows for k in d.keys] == [r.key for r in HUB_REPOS.values()] + [
        "simmim-vit-b16-pretrain", "simmim-vit-b16-finetune", "ijepa-vith14-encoder", "ijepa-vith14-predictor"
    ]  # fmt: skip
    assert sorted(k for d in rows for k in d.keys) == sorted(ALL17)
    vit_b = next(d for d in rows if d.keys == ("vit-base-patch16-224",))
    assert 86e6 < vit_b.parameters < 87e6 and vit_b.bytes == 4 * vit_b.parameters  # float32, ViT-B/16's 86.6 M
    assert {d.lower_bound for d in rows} == {False, True} and len(LOCAL_CHECKPOINTS) == 3
    page = (REPO / "docs/how-to/paper-fig3.md").read_text()
    assert markdown(rows) in page, "docs/how-to/paper-fig3.md: paste the output of `python -m rehearsal.sizes`"
