"""Decoding memory is bounded: an image over DRAFT_PIXELS is reduced right after it is decoded (a JPEG while it is
decoded), before any full-size copy, and upright; one over the pixel limit ($QKDISSECT_MAX_PIXELS) is skipped
with a one-line reason. Images under DRAFT_PIXELS keep every pixel (tests/integration/test_preprocess_pixels.py)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageOps

from qkdissect.data import decoding
from qkdissect.data.decoding import MAX_PIXELS_ENV, ImageDecodeError, decode
from qkdissect.data.sources import ImageItem
from tests.helpers import REPO

PEAK = """
import resource, sys
from pathlib import Path
from qkdissect.data.decoding import decode
from qkdissect.data.sources import ImageItem
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
im = decode(ImageItem("big", Path(sys.argv[1])), target=224)
print(im.size, (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before) * 1024)
"""


@pytest.mark.parametrize("mode", ["RGB", "I;16"])
def test_a_huge_png_takes_no_more_memory_than_its_own_pixels(tmp_path: Path, mode: str) -> None:
    side = 8000  # 64 MP, over DRAFT_PIXELS: decoded in full (PNG has no reduced decode), then reduced at once
    Image.new(mode, (side, side), (10, 200, 30) if mode == "RGB" else 1000).save(tmp_path / "big.png")
    r = subprocess.run(
        [sys.executable, "-c", PEAK, str(tmp_path / "big.png")],
        env={**os.environ, "PYTHONPATH": str(REPO / "src")},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    size, peak = r.stdout.split(")")
    decoded = side * side * 4  # what PIL holds for the decoded image (4 bytes a pixel for RGB and 16-bit)
    assert size == "(471, 471" and int(peak) < 1.6 * decoded, int(peak) / decoded  # was 2.9x (RGB) and 6x (16-bit)


def test_a_reduced_image_is_the_box_average_of_the_upright_one(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(decoding, "DRAFT_PIXELS", 10_000)
    rng = np.random.default_rng(0)
    im = Image.fromarray(rng.integers(0, 255, (300, 600, 3), dtype=np.uint8))
    exif = Image.Exif()
    exif[0x0112] = 6  # stored lying on its side
    im.save(tmp_path / "turned.png", exif=exif)
    got = decode(ImageItem("turned", tmp_path / "turned.png"), target=50)  # 300 // 100: reduced 3x
    with Image.open(tmp_path / "turned.png") as ref:
        expected = (ImageOps.exif_transpose(ref) or ref).reduce(3)
    assert got.size == (100, 200) and np.array_equal(np.asarray(got), np.asarray(expected))
    palette = im.convert("P")  # palette indices are never averaged: the colours are
    palette.save(tmp_path / "palette.png")
    got = np.asarray(decode(ImageItem("palette", tmp_path / "palette.png"), target=50), dtype=float)
    assert np.abs(got - np.asarray(palette.convert("RGB").reduce(3), dtype=float)).max() <= 1


def test_an_image_over_the_pixel_limit_is_skipped_with_its_reason(tmp_path: Path, monkeypatch) -> None:
    Image.new("RGB", (400, 300)).save(tmp_path / "wide.png")
    monkeypatch.setenv(MAX_PIXELS_ENV, "100000")
    with pytest.raises(ImageDecodeError) as e:
        decode(ImageItem("wide", tmp_path / "wide.png"), target=224)
    assert str(e.value) == (
        f"{tmp_path / 'wide.png'}: 400x300 would be decoded at 120000 pixels, over the limit of 100000 "
        f"(${MAX_PIXELS_ENV}): skipped"
    )
    monkeypatch.setenv(MAX_PIXELS_ENV, "lots")
    with pytest.raises(Exception, match=r"QKDISSECT_MAX_PIXELS is 'lots': give a positive number of pixels"):
        decode(ImageItem("wide", tmp_path / "wide.png"), target=224)
