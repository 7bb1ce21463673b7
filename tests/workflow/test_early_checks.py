"""An image folder, a mask dataset or a text corpus that is not there is named in one line before any model is
resolved or loaded: by the command line at once (no torch imported), by the workflow when it reads its config."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from qkdissect.config_check import source_problems
from qkdissect.data.checks import corpus_problem, image_source_problem, mask_dataset_problem
from tests.helpers import REPO
from tests.helpers.workflow import workflow_path

MODEL = "dinov2-vits14-imgfocus"
_RUN = """
import sys
from qkdissect.cli import main
rc = main(sys.argv[1:])
print("torch imported" if "torch" in sys.modules else "no torch")
sys.exit(rc)
"""


def _cli(cwd: Path, *args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    env = dict(os.environ, PYTHONPATH=str(REPO / "src"))
    start = time.perf_counter()
    r = subprocess.run([sys.executable, "-c", _RUN, *args], cwd=cwd, env=env, capture_output=True, text=True)
    return r, time.perf_counter() - start


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["project", MODEL, "--modes", "m.zarr", "--images", "folder:photos", "-o", "p.zarr"], "image folder photos"),
        (["project", MODEL, "--modes", "m.zarr", "--images", "photos", "-o", "p.zarr"], "image folder photos"),
        (["logits", MODEL, "--modes", "m.zarr", "--images", "imagenet-val:val", "-o", "l.zarr"], "validation folder"),
        (["ablate", MODEL, "--modes", "m.zarr", "--images", "folder:photos", "-o", "a.zarr"], "image folder photos"),
        (["preference", MODEL, "--dataset", "voc:masks", "-o", "p.zarr"], "mask dataset folder masks"),
        (
            ["same-object", MODEL, "--modes", "m.zarr", "--dataset", "ade20k:ade", "-o", "s.zarr"],
            "mask dataset folder ade",
        ),
        (["project-text", "minilm-l6", "--modes", "m.zarr", "--corpus", "file:texts", "-o", "t.zarr"], "corpus texts"),
    ],
)
def test_a_missing_folder_is_named_before_any_model(tmp_path: Path, args: list[str], named: str) -> None:
    r, seconds = _cli(tmp_path, *args)
    err = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(err) == 1 and named in err[0] and "does not exist" in err[0], r.stderr
    assert err[0].startswith(f"qkdissect {args[0]}: error: --")
    assert r.stdout.strip() == "no torch"  # nothing was resolved or loaded
    assert seconds < 3, seconds
    assert list(tmp_path.iterdir()) == []


def test_what_can_be_read_passes(tmp_path: Path) -> None:
    (tmp_path / "photos").mkdir()
    (tmp_path / "a.txt").write_text("text")
    for spec in ("skimage", "synthetic:4", f"folder:{tmp_path / 'photos'}", str(tmp_path / "photos")):
        assert image_source_problem(spec) is None, spec
    assert "synthetic:N" in str(image_source_problem("synthetic:x"))
    assert "imagenet-1k" in str(image_source_problem(f"imagenet-hf:{tmp_path / 'no-cache'}"))
    assert image_source_problem(f"folder:{tmp_path / 'a.txt'}") == f"image folder {tmp_path / 'a.txt'} does not " \
        "exist (a file, not a folder)"  # fmt: skip
    assert mask_dataset_problem("synthetic:8") is None and mask_dataset_problem(f"voc:{tmp_path / 'photos'}") is None
    assert "unknown mask dataset" in str(mask_dataset_problem("coco:/x"))
    assert corpus_problem("pydoc-topics") is None and corpus_problem(f"file:{tmp_path / 'a.txt'}") is None
    assert "unknown text corpus" in str(corpus_problem("wiki"))


def test_a_source_whose_stores_are_made_is_not_read(tmp_path: Path) -> None:
    """Figures redrawn from the stores alone need no image: a folder gone after its stores were made is fine."""
    made, missing = tmp_path / "made.zarr", tmp_path / "missing.zarr"
    made.mkdir()
    gone = f"folder:{tmp_path / 'gone'}"
    assert source_problems([("images.x.source", "images", gone, [made])]) == []
    assert source_problems([("images.x.source", "images", gone, [])]) == []  # no job reads it
    found = source_problems(
        [("images.x.source", "images", gone, [made, missing]), ("texts.t.source", "texts", "file:/none", [missing])]
    )
    assert found == [
        f"images.x.source {gone!r}: image folder {tmp_path / 'gone'} does not exist",
        "texts.t.source 'file:/none': text corpus /none does not exist: give a .txt file or a folder of .txt files",
    ]


def test_the_workflow_names_a_missing_image_folder_before_any_job(tmp_path: Path) -> None:
    """Named in one line when the config is read; a dry run still plans, a run stops before its first job."""
    photos = tmp_path / "my-photos"
    cfg = {
        "models": {MODEL: None},
        "images": {"mine": {"source": f"folder:{photos}"}},
        "projections": {"images": "mine"},
        "figures": {"fig1": [{"model": MODEL}]},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))
    env = dict(os.environ, PATH=workflow_path(os.environ.get("PATH", "")), HF_HUB_OFFLINE="1")
    env["QKDISSECT_DATA"] = str(tmp_path / "data")
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path / "run")]
    cmd += ["--configfile", str(tmp_path / "config.yaml"), "--cores", "1"]
    line = f"config: images.mine.source 'folder:{photos}': image folder {photos} does not exist"
    dry = subprocess.run([*cmd, "-n"], env=env, capture_output=True, text=True, timeout=300)
    assert dry.returncode == 0 and dry.stderr.count(line) == 1 and "Job stats" in dry.stdout, dry.stderr[-3000:]
    start = time.perf_counter()
    run = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    seconds = time.perf_counter() - start
    out = run.stdout + run.stderr
    assert run.returncode != 0 and f"{line} (nothing was run)" in out, out[-3000:]
    assert "rule weights" not in out and not (tmp_path / "data").exists(), out[-3000:]  # no model resolved
    assert not list((tmp_path / "run").glob("results/**/*.*"))
    print(f"the workflow stopped after {seconds:.1f} s")
