"""A results folder as the workflow lays it out, for a tiny model, and its mode atlas page written by the command
line: what the tests of the atlas pass and of the page in a browser share."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from qkdissect.passes.projections import compute_projections
from qkdissect.passes.scores import compute_scores
from qkdissect.passes.weights import compute_modes

from . import make_tiny_vit, write_photos


def tiny_results(base: Path, photos: int, top_k: int, batch_size: int, depth: int = 3) -> dict:
    """A results folder under ``base`` as the workflow lays it out: a tiny random ViT (model key ``tiny``), its
    modes, scores and projections (top ``top_k`` images per mode) on ``photos`` generated photographs."""
    spec = make_tiny_vit(base / "w", depth=depth)
    write_photos(base / "photos", n=photos)
    results = base / "results"
    modes = results / "modes/tiny.zarr"
    compute_modes(spec, modes, device="cpu", model_key="tiny")
    compute_scores(modes, results / "scores/tiny.zarr")
    images = f"folder:{base / 'photos'}"
    proj = results / "projections/tiny/photos.zarr"
    compute_projections(spec, modes, images, proj, batch_size=batch_size, top_k=top_k, workers=0, device="cpu",
                        progress=False, model_key="tiny")  # fmt: skip
    return {"spec": spec, "modes": modes, "proj": proj, "images": images, "results": results, "base": base}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A tiny model's results folder on seven photographs, top 8 images per mode: each mode has an empty slot."""
    return tiny_results(tmp_path_factory.mktemp("atlas"), photos=7, top_k=8, batch_size=3)


@pytest.fixture(scope="module")
def atlas_page(tiny: dict) -> Path:
    """`qkdissect atlas RESULTS`: the atlas pass for the model (its store was missing), then the page."""
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "qkdissect", "atlas", str(tiny["results"]), "--device", "cpu", "-q"],
                       capture_output=True, text=True, timeout=300)  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("open it in a browser (no server needed)"), r.stdout
    tiny["seconds"] = time.perf_counter() - t0
    return tiny["results"] / "atlas/index.html"
