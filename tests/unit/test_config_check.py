"""Figure entries of the config checked against the models' shapes before any job runs: every bad mode, head,
layer range and colour named at once, with the valid range; image ids against the projected set; YAML errors
named by file, line and column."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qkdissect.catalogue import KNOWN_MODELS
from qkdissect.config_check import config_problems, image_problems, yaml_problem
from qkdissect.launch import configfiles
from tests.helpers import REPO

MODEL = "dinov2-vits14-imgfocus"


def shape_of(name: str) -> tuple[int, int, int] | None:
    return KNOWN_MODELS[name].shape if name in KNOWN_MODELS else None


def test_every_bad_entry_is_named_with_its_range() -> None:
    config = {
        "models": {MODEL: {"color": "tab:orang"}, "custom": {"spec": "timm:x@w.safetensors", "color": "C3"}},
        "figures": {
            "fig4": [{"model": MODEL, "modes": [[50, 3, 0], [3, 2, 1, "-"], [1, 9, 70]]}],
            "galleries": {"g": [{"model": MODEL, "modes": "auto", "layers": [4, 12]}]},
            "s17": {"dog": {"model": MODEL, "modes": [[11, 5, 63]]}, "cat": {"model": "custom", "modes": [[99, 0, 0]]}},
            "fig5": {"model": MODEL, "layer_heads": [[2, 6]]},
        },
    }
    problems = config_problems(config, shape_of)
    size = f"({MODEL}: layers 0-11, heads 0-5, modes 0-63)"
    assert problems == [
        f"figures.fig4[0].modes[0] [50, 3, 0]: layer 50 is not in 0-11 {size}",
        f"figures.fig4[0].modes[2] [1, 9, 70]: head 9 is not in 0-5, mode 70 is not in 0-63 {size}",
        f"figures.galleries.g[0].layers [4, 12]: last layer 12 is not in 0-11 {size}",
        f"figures.fig5.layer_heads[0] [2, 6]: head 6 is not in 0-5 {size}",
        f"models.{MODEL}.color 'tab:orang' is not a colour matplotlib knows (e.g. 'tab:blue', 'C3', '#1f77b4')",
    ]  # the custom model's shape is unknown before it is loaded: its pass checks it


@pytest.mark.parametrize("name", sorted(KNOWN_MODELS))
def test_every_known_model_has_a_shape(name: str) -> None:
    layers, heads, d_head = KNOWN_MODELS[name].shape or (0, 0, 0)
    assert layers >= 1 and heads >= 1 and d_head >= 1


def test_yaml_errors_name_the_file_line_and_column(tmp_path: Path) -> None:
    unclosed = tmp_path / "unclosed.yaml"
    unclosed.write_text("models:\n  dinov2-vits14-imgfocus:\n  x: [1, 2\nfigures: {}\n")
    tab = tmp_path / "tab.yaml"
    tab.write_text("models:\n\tdinov2-vits14-imgfocus:\n")
    a_list = tmp_path / "list.yaml"
    a_list.write_text("- models\n")
    assert yaml_problem(unclosed) == (
        f"config file {unclosed}, line 4, column 8: not valid YAML: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence at line 3, column 6)"
    )
    assert f"config file {tab}, line 2, column 1: not valid YAML" in (msg := yaml_problem(tab) or "")
    assert "a tab in the indentation?" in msg
    assert yaml_problem(a_list) == f"config file {a_list}: holds a list, not a mapping of keys (models:, images:, ...)"
    assert "cannot be read" in (yaml_problem(tmp_path / "absent.yaml") or "")
    for good in ("config.yaml", "paper.yaml", "beyond.yaml"):
        assert yaml_problem(REPO / "config" / good) is None


def test_qkdissect_run_checks_the_config_files_then_is_snakemake(tmp_path: Path) -> None:
    """`qkdissect run` (what `make figures` runs) stops on a bad --configfile with one line; otherwise it execs
    Snakemake with the same arguments (its own output and exit status)."""
    import subprocess
    import sys

    assert configfiles(["-n", "--configfile", "a.yaml", "b.yaml", "--cores", "2", "c"]) == ["a.yaml", "b.yaml"]
    assert configfiles(["--configfiles=x.yaml", "--configfile", "y.yaml"]) == ["x.yaml", "y.yaml"]
    bad = tmp_path / "bad.yaml"
    bad.write_text("models: [\n")
    run = [sys.executable, "-m", "qkdissect", "run"]
    from tests.helpers.workflow import workflow_path

    env = dict(os.environ, PATH=workflow_path(os.environ.get("PATH", "")))  # no 10 s wait for a SLURM controller
    r = subprocess.run([*run, "-n", "--configfile", str(bad)], capture_output=True, text=True, cwd=tmp_path, env=env)
    assert r.returncode == 2 and r.stdout == "", r.stderr
    assert r.stderr.startswith(f"qkdissect run: error: config file {bad}, line 2, column 1: not valid YAML")
    assert len(r.stderr.strip().splitlines()) == 1 and not (tmp_path / ".snakemake").exists()
    r = subprocess.run([*run, "--version"], capture_output=True, text=True, cwd=tmp_path, env=env)
    from importlib.metadata import version

    assert r.returncode == 0 and r.stdout.strip() == version("snakemake")


def test_an_image_id_must_be_one_of_the_projected_set(tmp_path: Path) -> None:
    refs = [("figures.fig5", "skimage:astronaut"), ("figures.s17.a", "skimage:chelsae"), ("figures.s17.b", "auto")]
    refs += [("figures.s17.c", "class:n02099601"), ("figures.s17.d", "zebra")]
    assert image_problems(refs, "skimage", "skimage", None) == [
        "figures.s17.a.image 'skimage:chelsae' is not an image of the set 'skimage' (skimage, 22 images); "
        "did you mean 'skimage:chelsea'?",
        "figures.s17.d.image 'zebra' is not an image of the set 'skimage' (skimage, 22 images); "
        "its ids look like 'skimage:astronaut', 'skimage:chelsea', 'skimage:coffee'",
    ]
    (tmp_path / "photos/sub").mkdir(parents=True)
    for name in ("a.jpg", "b.png", "sub/c.jpg"):
        (tmp_path / "photos" / name).write_bytes(b"not decoded")  # listed, never decoded
    folder = f"folder:{tmp_path / 'photos'}"
    assert image_problems([("f", "sub/c.jpg"), ("g", "auto")], "mine", folder, None) == []
    assert image_problems([("f", "sub/c.jpg")], "mine", folder, 2) == [
        f"f.image 'sub/c.jpg' is not an image of the set 'mine' ({folder}, 2 images); "
        "its ids look like 'a.jpg', 'b.png'"
    ]  # the set's limit applies
    # a set that cannot be listed is left to the job that reads it (figures redraw from stores without images)
    assert image_problems([("f", "x.jpg")], "gone", "folder:/nonexistent", None) == []


def test_the_config_check_imports_no_torch() -> None:
    """Listing an image set for the config check (each Snakemake start) needs no torch."""
    import subprocess
    import sys

    code = "import sys, qkdissect.config_check as c; c.image_problems([('f', 'x')], 's', 'skimage', None); "
    code += "print(sorted(m for m in ('torch', 'timm', 'transformers') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert r.stdout.strip() == "[]"
