"""The workflow's logic (qkdissect.workflow) as plain functions of a config: what a config asks for, the defaults
laid under a user's config, the checks, the keys that lead to no job, the figure table's targets and the rules'
command lines. No Snakemake run: the configs are validated with the workflow's schema, as the workflow does."""

from __future__ import annotations

import json
import os
import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from qkdissect.provenance.records import CONFIG_FILES_ENV, WORKFLOW_CHECKOUT_ENV
from qkdissect.util.lifeline import TIE_ENV
from qkdissect.workflow import paths
from qkdissect.workflow.commands import Options, config_keys, papermill_command, pythonpath_prefix, qkdissect_command
from qkdissect.workflow.config import (
    IMAGE_FIGURE_KEYS,
    check_config,
    export_environment,
    unused_keys,
    unused_warning,
)
from qkdissect.workflow.plan import ConfigError, Plan
from qkdissect.workflow.targets import FigureTable
from tests.helpers.workflow import prepared

REPO = Path(__file__).resolve().parents[3]
SCHEMA = REPO / "workflow/schemas/config.schema.yaml"
TABLE = yaml.safe_load((REPO / "workflow/figures.yaml").read_text())
SHIPPED = sorted((REPO / "config").glob("*.yaml"))
DEFAULT = REPO / "config/config.yaml"
MY_SPEC = "timm:vit_small_patch16_224@/data/weights/mine.safetensors"


def table_of(given: dict[str, Any]) -> FigureTable:
    plan = Plan(prepared(given)[0])
    check_config(plan)
    return FigureTable(plan, TABLE)


def minimal(**figures: Any) -> dict[str, Any]:
    """A user's own model and image folder, nothing else (figures: what the user sets under figures)."""
    given: dict[str, Any] = {"models": {"mine": {"spec": MY_SPEC}}, "images": {"photos": {"source": "folder:/p"}}}
    return {**given, "figures": figures} if figures else given


# ------------------------------------------------------------------------------------------------ the defaults
def test_a_minimal_config_gets_the_image_figures_and_the_atlas() -> None:
    table = table_of(minimal())
    stems = set(table.stems)
    image_figures = {"fig1_example_modes", "fig4_top_images", "fig5_image_modes", "s4_anisotropy"}
    assert image_figures | {"fig3_weighted_cosine", "s1_cosine_histograms_mine", "s2_spectrum_grid_mine"} <= stems
    assert table.plan.atlas_models == ["mine"] and table.images == "photos"
    assert "results/projections/mine/photos.zarr" in table.intermediates()
    assert table.plan.figures["fig5"] == {"model": "mine", "image": "auto", "layer_heads": "auto", "n_modes": 6}
    assert unused_keys(table, minimal()) == []


@pytest.mark.parametrize("key", IMAGE_FIGURE_KEYS)
def test_a_config_that_sets_an_image_figure_gets_no_other(key: str) -> None:
    """Any image figure's key in the user's config: the image figures are the user's choice (here: off)."""
    off = {"fig5": None, "galleries": {}, "s17": {}}.get(key, [])
    config, filled = prepared(minimal(**{key: off}))
    assert filled == ["projections.images", "projections.texts"] and config["projections"]["images"] == "photos"
    assert not any(config["figures"][k] for k in IMAGE_FIGURE_KEYS)


def test_image_figures_follow_from_image_sets_only() -> None:
    """Without image sets of its own (the schema's skimage), a config gets what the schema says: no image figures;
    a text model is never given one."""
    config, _ = prepared({"models": {"mine": {"spec": MY_SPEC}}})
    assert config["figures"]["fig1"] == [] and config["projections"]["images"] == "skimage"
    text = {"models": {"t": {"spec": "hf:/m", "modality": "text"}}, "images": {"photos": {"source": "folder:/p"}}}
    assert prepared(text)[0]["figures"]["fig1"] == []
    two = prepared({**minimal(), "models": {"a": {"spec": MY_SPEC}, "b": {"spec": MY_SPEC}}})[0]
    assert [r["model"] for r in two["figures"]["fig1"]] == ["a", "b"] and two["figures"]["fig5"]["model"] == "a"
    corpora = {"texts": {"notes": {"source": "file:/n"}, "more": {"source": "file:/m"}}}
    assert prepared({**text, **corpora})[0]["projections"]["texts"] == "notes"  # the first corpus


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_the_shipped_configs_get_nothing_filled_in_and_no_warning(path: Path) -> None:
    given = yaml.safe_load(path.read_text())
    config, filled = prepared(given)
    assert set(filled) <= {"projections.images", "projections.texts"}
    if "projections.images" in filled:  # the schema's image set, the only one
        assert config["projections"]["images"] == "skimage" == next(iter(config["images"]))
    if "projections.texts" in filled:  # the schema's corpus, the only one
        assert config["projections"]["texts"] == "pydoc" == next(iter(config["texts"]))
    plan = Plan(config)
    check_config(plan)
    assert unused_keys(FigureTable(plan, TABLE), given) == []


# ------------------------------------------------------------------------------------------------ keys without jobs
def test_keys_that_lead_to_no_job_are_named_in_one_line() -> None:
    given = minimal(fig1=[], fig4=[], s4=[], fig3=["mine"], s1=["mine"], s2=["mine"])
    given["models"]["other"] = {"spec": MY_SPEC}
    given["images"]["more"] = {"source": "folder:/q"}
    given["projections"] = {"images": "photos", "texts": "notes"}
    given["texts"] = {"notes": {"source": "file:/t"}}
    given["mask_datasets"] = {"voc": {"source": "voc:/v"}}
    keys = unused_keys(table_of(given), given)
    assert keys == [
        "models.other",
        "images.photos",
        "images.more",
        "texts.notes",
        "mask_datasets.voc",
        "projections.images",
        "projections.texts",
    ]
    line = unused_warning(keys)
    assert line is not None and "\n" not in line and all(k in line for k in keys)
    assert unused_warning([]) is None


def test_an_image_set_beside_the_projected_one_leads_to_no_job() -> None:
    given = minimal()
    given["images"]["more"] = {"source": "folder:/q"}
    assert unused_keys(table_of(given), given) == ["images.more"]  # the first set is the projected one


# ------------------------------------------------------------------------------------------------ checks
@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"figures": {"fig4": [{"model": "nope"}]}}, "figures.fig4: nope"),
        ({"figures": {"rotary": ["mine"]}}, "not known to be rotary"),
        ({"figures": {"fig3": ["nope"]}}, "figures.fig3 names ['nope']"),
        ({"projections": {"images": "elsewhere"}}, "projections.images is 'elsewhere'"),
        ({"models": {"mine": {"spec": MY_SPEC}, "dinov2-vits14": None}}, "Did you mean"),
        ({"atlas": ["t"], "models": {"t": {"spec": "hf:/m", "modality": "text"}}}, "atlas names ['t']"),
        ({"figures": {"ablation": ["t"]}, "models": {"t": {"spec": "hf:/m", "modality": "text"}}}, "text models"),
        (
            {"figures": {"ablation": ["r"]}, "models": {"r": {"spec": "timm:v@/w.safetensors", "rotary": True}}},
            "rotary",
        ),
        ({"figures": {"ablation": ["h"]}, "models": {"h": {"spec": "hf:/m"}}}, "does not run yet"),
    ],
)
def test_a_config_that_cannot_run_is_refused_naming_its_key(change: dict[str, Any], message: str) -> None:
    given = {**minimal(), **change}
    with pytest.raises(ConfigError) as e:
        table_of(given)
    assert message in str(e.value)


# ------------------------------------------------------------------------------------------------ the figure table
@pytest.fixture(scope="module")
def offline() -> FigureTable:
    return table_of(yaml.safe_load(DEFAULT.read_text()))


def test_the_offline_default_plans_a_figure_per_model_and_row(offline: FigureTable) -> None:
    plan = offline.plan
    per_model = {key for key, row in TABLE.items() if row.get("each") == "model"}
    for key in per_model:  # brute force: a figure for each model of its rows, named by the table's output
        rows = offline.rows_of(TABLE[key]["rows"], None)
        expected = {TABLE[key]["output"].format(model=r["model"]) for r in rows}
        assert {s for s, (k, _) in offline.stems.items() if k == key} == expected
    assert set(plan.text_models) == {"minilm-l6", "smollm2-135m"} and plan.image_models == ["dinov2-vits14-imgfocus"]
    assert {w["model"] for k, w in offline.stems.values() if k == "text_modes"} == set(plan.text_models)
    assert offline.plan.figure_models("s4") == plan.image_models and offline.plan.figure_models("fig3") == plan.models


def test_every_store_a_figure_reads_is_a_target(offline: FigureTable) -> None:
    targets = set(offline.intermediates())
    for stem, (key, w) in offline.stems.items():
        for stores in offline.figure_stores(key, w).values():
            assert set([stores] if isinstance(stores, str) else stores) <= targets, stem
    maps = {f"results/maps/{stem}/{i}-{m}.zarr" for stem, i, m in offline.maps}
    assert maps == {t for t in targets if t.startswith("results/maps/")}
    assert {f"results/weights/{m}.json" for m in offline.plan.models} <= targets
    assert offline.claims_stores()["scores"] == ["results/scores/dinov2-vits14-imgfocus.zarr"]


def test_a_maps_request_is_the_tables_fields_then_the_rows_entry(offline: FigureTable) -> None:
    stem, index, model = next(m for m in offline.maps if m[0] == "fig4_top_images")
    request = json.loads(offline.maps_request({"stem": stem, "index": str(index)}))
    key, w = offline.stems[stem]
    row = offline.figure_rows(key, w)[index]
    assert row["model"] == model and request["modes"] == row["modes"] == "auto"
    assert {k: request[k] for k in TABLE[key]["maps"] if not str(TABLE[key]["maps"][k]).startswith("config:")} == {
        k: v for k, v in TABLE[key]["maps"].items() if not str(v).startswith("config:")
    }
    assert offline.maps_source({"stem": stem, "index": str(index)}) == f"results/projections/{model}/skimage.zarr"
    keys = json.loads(offline.maps_config_keys({"stem": stem, "index": str(index)}))
    assert keys[0] == ["models", model] and all(k[0] == "figures" for k in keys[1:])


def test_figure_wildcards_match_the_configured_instances_only(offline: FigureTable) -> None:
    for key in TABLE:
        patterns = offline.figure_wildcards(key)
        for w in offline.figure_instances(key):
            assert all(re.fullmatch(patterns[k], v) for k, v in w.items())
        assert all(not re.fullmatch(p, "not-configured") for p in patterns.values())


def test_figure_parameters_are_one_line_of_yaml(offline: FigureTable) -> None:
    stores = offline.figure_stores("s4", {})
    params = yaml.safe_load(offline.figure_parameters("s4")({}, type("I", (), stores)()))
    assert params["stores"] == stores and params["options"]["styles"] == {"dinov2-vits14-imgfocus": {}}
    assert "\n" not in offline.figure_options("s4")({})
    assert json.loads(offline.figure_config_keys("s4")({})) == [["figures", *k] for k in TABLE["s4"]["config"]]


# ------------------------------------------------------------------------------------------------ commands, paths
def test_command_lines_record_config_sections_and_quote_paths(tmp_path: Path) -> None:
    prefix = pythonpath_prefix(tmp_path / "a checkout")
    assert prefix.startswith(f"PYTHONPATH={shlex.quote(str(tmp_path / 'a checkout' / 'src'))}")
    assert pythonpath_prefix(None) == ""
    command = qkdissect_command("modes {params.spec:q}", "", threads=True)
    assert command.startswith("OMP_NUM_THREADS={threads} QKDISSECT_CONFIG_KEYS={params.config_keys:q} ")
    assert command.endswith(" python -m qkdissect modes {params.spec:q}")
    assert "--execution-timeout 77 " in papermill_command(77, "")
    assert config_keys(["models", "{model}"], ["atlas"])({"model": "m"}) == '[["models","m"],["atlas"]]'


def test_options_take_the_smallest_limit_and_quote_the_lock() -> None:
    given = minimal()
    given["images"]["photos"]["limit"] = 30
    given["images"]["photos"]["dedupe"] = 4
    given["projections"] = {"logits_limit": 12, "workers": 3}
    given["lock"] = {"path": "my locks/l.json", "update": True}
    options = Options(Plan(prepared(given)[0]))
    assert options.logits_limit("photos") == "--limit 12" and options.limit_option("images", "photos") == "--limit 30"
    assert options.dedupe_option("photos") == "--dedupe 4"
    assert options.lock_options() == "--lock 'my locks/l.json' --update-lock"
    assert options.model_spec({"model": "mine"}) == MY_SPEC and options.offsets_option({"model": "mine"}) == "all"
    given["ablation"] = {"limit": 16, "select": ["top:2", "3,1,0"], "attention_only": True, "mean": True}
    options = Options(Plan(prepared(given)[0]))
    assert options.ablation_limit("photos") == "--limit 16"
    config = prepared(minimal())[0]  # no image set limit: the schema's logits_limit
    assert Options(Plan(config)).logits_limit("photos") == f"--limit {config['projections']['logits_limit']}"


def test_store_paths() -> None:
    assert paths.folding_store("m", "raw") == "results/scores/m.zarr"
    assert paths.folding_store("m", "folded") == "results/scores_ln/folded/m.zarr"
    assert paths.store_path("preference", "m", "imgs", {"dataset": "d"}, "fig2", 0) == "results/preference/m/d.zarr"
    assert paths.store_path("maps", "m", "imgs", {}, "fig4_top_images", 2) == "results/maps/fig4_top_images/2-m.zarr"
    assert paths.model_store("modes_folded_centred", "m") == "results/modes_ln/folded-centred/m.zarr"
    assert re.fullmatch(paths.names_pattern(["a.b"]), "a.b") and not re.fullmatch(paths.names_pattern(["a.b"]), "axb")
    assert not re.fullmatch(paths.names_pattern([]), "")


def test_the_environment_is_exported_by_one_call(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (CONFIG_FILES_ENV, WORKFLOW_CHECKOUT_ENV, TIE_ENV):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(TIE_ENV, "0")  # a user's choice is kept
    export_environment([DEFAULT], None)
    assert os.environ[CONFIG_FILES_ENV] == str(DEFAULT) and WORKFLOW_CHECKOUT_ENV not in os.environ
    assert os.environ[TIE_ENV] == "0"
    export_environment([], tmp_path)
    assert os.environ[WORKFLOW_CHECKOUT_ENV] == str(tmp_path.resolve()) and os.environ[CONFIG_FILES_ENV] == ""
