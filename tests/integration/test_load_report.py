"""transformers' LOAD REPORT table is not printed: the heads a checkpoint has and the base model has not (a
classifier), and the pooler the base model has and the checkpoint has not, are recorded in the weights' provenance;
one warning line is said only when a weight the analysis reads was missing (and so initialised at random). On the
real MiniLM and SmolLM2 weights."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from qkdissect.cli import main
from qkdissect.models.load_report import is_head, load_report
from qkdissect.models.loading import describe_loaded, load_model
from qkdissect.stores import open_store

QUERY = "encoder.layer.0.attention.self.query.weight"


@pytest.fixture(scope="module")
def minilm() -> Path:
    from qkdissect.models.sources.minilm import minilm_dir

    return minilm_dir()


def _variant(minilm: Path, folder: Path, drop: tuple[str, ...], add_classifier: bool) -> Path:
    """The real MiniLM saved again without the weights in ``drop`` (prefixes), with a classifier head if asked:
    what a fine-tuned checkpoint looks like to the base model."""
    shutil.copytree(minilm, folder)
    sd = {k: v for k, v in load_file(str(minilm / "model.safetensors")).items() if not k.startswith(drop)}
    if add_classifier:
        g = torch.Generator().manual_seed(0)
        sd |= {"classifier.weight": torch.randn(3, 384, generator=g), "classifier.bias": torch.zeros(3)}
        config = json.loads((folder / "config.json").read_text())
        (folder / "config.json").write_text(json.dumps({**config, "architectures": ["BertForSequenceClassification"]}))
    save_file(sd, str(folder / "model.safetensors"))
    return folder


def test_a_fine_tuned_checkpoint_loads_quietly_and_is_recorded(
    minilm: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capfd: pytest.CaptureFixture
) -> None:
    tuned = _variant(minilm, tmp_path / "tuned", ("pooler.",), add_classifier=True)
    (tmp_path / "texts.txt").write_text(
        "The attention of a transformer compares every query with every key of the sequence.\n\n"
        "A mode of the product of the query and key weights is a pair of directions and a strength.\n"
    )
    monkeypatch.chdir(tmp_path)
    stores = {}
    for name, spec in (("tuned", f"hf:{tuned}"), ("plain", f"hf:{minilm}")):
        assert main(["modes", spec, "-q", "-o", f"{name}-modes.zarr"]) == 0
        capfd.readouterr()
        args = [
            "--modes",
            f"{name}-modes.zarr",
            "--corpus",
            f"file:{tmp_path / 'texts.txt'}",
            "-q",
            "-o",
            f"{name}.zarr",
        ]
        assert main(["project-text", spec, *args]) == 0
        assert capfd.readouterr().err == ""  # no table, no warning: nothing the analysis reads was missing
        stores[name] = open_store(tmp_path / f"{name}.zarr")
    weights = stores["tuned"].attrs["provenance"]["weights"]
    report = weights["load_report"]
    assert report["unexpected"] == ["classifier.bias", "classifier.weight"]
    assert report["missing"] == ["pooler.dense.bias", "pooler.dense.weight"] and report["missing_read"] == []
    assert "load_report" not in stores["plain"].attrs["provenance"]["weights"]
    # the heads change nothing the analysis reads
    for var in stores["plain"].data_vars:
        if np.issubdtype(stores["plain"][var].dtype, np.floating):
            np.testing.assert_array_equal(stores["tuned"][var].values, stores["plain"][var].values, err_msg=var)


def test_a_missing_weight_the_analysis_reads_is_said_in_one_line(
    minilm: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture, capfd: pytest.CaptureFixture
) -> None:
    broken = _variant(minilm, tmp_path / "broken", (QUERY,), add_classifier=False)
    with caplog.at_level(logging.WARNING, logger="qkdissect"):
        loaded = load_model(f"hf:{broken}")
    (line,) = [r.getMessage() for r in caplog.records if r.name == "qkdissect"]
    assert QUERY in line and "initialised at random" in line and "1 weights" in line
    assert describe_loaded(loaded)["load_report"]["missing_read"] == [QUERY]
    assert "LOAD REPORT" not in capfd.readouterr().err


def test_smollm2_loads_without_a_report(capfd: pytest.CaptureFixture) -> None:
    loaded = load_model("smollm2-135m")
    assert loaded.load_report is None and "load_report" not in describe_loaded(loaded)
    assert "LOAD REPORT" not in capfd.readouterr().err


def test_heads_and_what_the_analysis_reads() -> None:
    assert all(is_head(k) for k in ("pooler.dense.weight", "classifier.bias", "lm_head.weight", "logit_scale"))
    assert not any(is_head(k) for k in (QUERY, "embeddings.word_embeddings.weight", "layers.3.input_layernorm.weight"))
    assert load_report({"missing_keys": [], "unexpected_keys": [], "mismatched_keys": []}) is None
    report = load_report(
        {
            "missing_keys": ["pooler.dense.weight"],
            "mismatched_keys": [("encoder.layer.1.output.dense.weight", (1,), (2,))],
        }
    )
    assert report is not None and report["missing_read"] == ["encoder.layer.1.output.dense.weight"]
    assert report["counts"] == {"missing": 1, "unexpected": 0, "mismatched": 1}
