"""The paper's own run, rehearsed: config/paper.yaml, unchanged but for where O3 and ADE20K are (and how many of
their images a shallow run uses), through Snakemake to every figure, offline (HF_HUB_OFFLINE=1), on stand-ins of
its 13 hub repositories (their classes, configurations, processors and weight formats; 2 blocks each), its SimMIM
and I-JEPA checkpoints and its datasets made of real photographs (rehearsal/)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qkdissect.catalogue import KNOWN_MODELS, PAPER_MODELS
from qkdissect.data.labels import imagenet_classes, parse_class_ref
from qkdissect.data.sources import image_source
from qkdissect.stores import open_store
from tests.helpers import REPO
from tests.helpers.workflow import workflow_path

pytestmark = [pytest.mark.assets, pytest.mark.rehearsal]
PAPER = yaml.safe_load((REPO / "config/paper.yaml").read_text())
ALL17 = [*PAPER_MODELS, "ijepa-vith14-predictor"]


@pytest.fixture(scope="module")
def rehearsal(assets: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("rehearsal")
    env = {"PATH": workflow_path(os.environ.get("PATH", "")), "QKDISSECT_ASSETS": str(assets)}
    r = subprocess.run(
        [sys.executable, "-m", "rehearsal.run", str(out), "--shallow", "--cores", "2"],
        cwd=REPO, capture_output=True, text=True, timeout=1500, env={**os.environ, **env},
    )  # fmt: skip
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    return out


def test_every_paper_figure_is_drawn_offline(rehearsal: Path) -> None:
    results = rehearsal / "run/results"
    figures = {p.stem for p in (results / "figures").glob("*.png")}
    expected = {"fig3_weighted_cosine", "fig3_unweighted_cosine", "s1_cosine_histograms_vit-base-patch16-224",
                "s2_spectrum_grid_vit-base-patch16-224", "s3_ijepa_encoder_predictor", "s4_anisotropy",
                "fig1_example_modes", "fig4_top_images", "fig5_image_modes", "fig2_preference_o3",
                "fig6_same_object_ade20k"}  # fmt: skip
    expected |= {f"gallery_{name}" for name in PAPER["figures"]["galleries"]}
    expected |= {f"s17_{name}" for name in PAPER["figures"]["s17"]}
    assert figures == expected and len(expected) == 11 + 12 + 3
    assert (results / "report.html").stat().st_size > 100_000
    claims = json.loads((results / "claims/claims.json").read_text())["claims"]
    assert [c["id"] for c in claims] == ["1", "2", "3", "4", "5a", "5b", "6a", "6b", "6c", "7"]
    assert all(c["holds"] is not None for c in claims)  # every claim evaluated: all the paper's models are here


def test_the_weights_are_the_paper_models_resolved_offline_and_pinned(rehearsal: Path) -> None:
    results = rehearsal / "run/results"
    manifests = {p.stem: json.loads(p.read_text()) for p in (results / "weights").glob("*.json")}
    assert sorted(manifests) == sorted(ALL17)
    for name, m in manifests.items():
        assert m["hub_offline"] is True
        hub = KNOWN_MODELS[name].spec.startswith("hf:")
        assert (m["revision"] is not None) == hub, name  # a hub model records its revision
        assert m["lock"]["status"] == "added"
    lock = json.loads((rehearsal / "run/config/paper.lock.json").read_text())
    assert sorted(lock["models"]) == sorted(ALL17)


def test_the_passes_ran_as_the_released_code(rehearsal: Path) -> None:
    results = rehearsal / "run/results"
    for model in PAPER_MODELS:
        proj = open_store(results / f"projections/{model}/imagenet-val.zarr", "projections")
        assert proj.attrs["token_source"] == "pre-norm" and proj.attrs["images"]["kind"] == "imagenet-hf"
        n_prefix = {"DeiT": 2, "I-JEPA": 0}.get(KNOWN_MODELS[model].family, 1)
        assert proj.attrs["n_prefix_tokens"] == n_prefix, model
        assert proj.sizes["rank"] == PAPER["projections"]["top_k"]


@pytest.mark.parametrize("figure", ["fig5_image_modes", *(f"s17_{n}" for n in PAPER["figures"]["s17"])])
def test_fig5_and_s17_show_an_image_of_the_class_the_config_names(
    rehearsal: Path, figure: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HOME", str(rehearsal / "hf"))  # where the rehearsal's ImageNet is
    results = rehearsal / "run/results"
    store = open_store(next((results / "maps" / figure).glob("0-*.zarr")), "maps")
    entry = PAPER["figures"]["fig5"] if figure == "fig5_image_modes" else PAPER["figures"]["s17"][figure[4:]]
    wanted, _ = parse_class_ref(entry["image"])
    labels = {it.id: it.label for it in image_source(store.attrs["images"]["spec"]).items}
    assert labels[store.attrs["image"]] == wanted, imagenet_classes().wnids[wanted]
    if figure.startswith("s17"):  # the image itself is never among its own top images
        ids = store.image_id.values
        assert all(str(ids[i]) != store.attrs["image"] for i in store.slot_image.values[:, 1:].ravel() if i >= 0)


def test_the_mode_atlas_holds_every_paper_model(rehearsal: Path) -> None:
    """The paper's configuration publishes every mode of its 16 image models: one atlas maps store each (on the
    projected set, every slot filled) and one page with a data folder per model."""
    results = rehearsal / "run/results"
    for model in PAPER_MODELS:
        atlas = open_store(results / f"atlas_maps/{model}/imagenet-val.zarr", "atlas")
        assert (atlas.slot_image.values >= 0).all() and atlas.sizes["image"] >= 1, model
        assert (results / "atlas/data" / model).is_dir(), model
    assert (results / "atlas/index.html").stat().st_size > 1000


def test_the_cost_table_has_every_job(rehearsal: Path) -> None:
    cost = json.loads((rehearsal / "cost.json").read_text())
    rules = {r["rule"] for r in cost["jobs"]}
    assert {"weights", "modes", "scores", "project", "preference", "same_object", "maps", "figures"} <= rules
    assert {"atlas_maps", "atlas"} <= rules
    table = (rehearsal / "cost.md").read_text()
    assert "| figures |" in table
    hours = re.search(r"one job at a time on this machine: ([0-9.]+) h of jobs", table)
    assert hours and float(hours.group(1)) > 0
