"""A tiny model's modes, scores and projections of random photographs, and the maps pass run on them: what the
tests of the maps store and of the figures drawn from it share."""

from __future__ import annotations

from pathlib import Path

import pytest

from qkdissect.passes.maps import compute_maps
from qkdissect.passes.projections import compute_projections
from qkdissect.passes.scores import compute_scores
from qkdissect.passes.weights import compute_modes
from qkdissect.stores import write_store

from . import make_tiny_vit, write_photos


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict:
    base = tmp_path_factory.mktemp("maps")
    spec = make_tiny_vit(base / "w")
    write_photos(base / "photos", n=7)
    modes = write_store(compute_modes(spec, device="cpu"), base / "modes.zarr")
    scores = base / "scores.zarr"
    compute_scores(modes, scores)
    images = f"folder:{base / 'photos'}"
    proj = base / "proj.zarr"
    compute_projections(spec, modes, images, proj, batch_size=3, top_k=4, workers=0, device="cpu", progress=False)
    return {"spec": spec, "modes": modes, "scores": scores, "proj": proj, "images": images, "base": base}


def maps(tiny: dict, request: dict, name: str) -> Path:
    out = tiny["base"] / f"{name}.zarr"
    compute_maps(tiny["spec"], tiny["modes"], tiny["scores"], tiny["proj"], request, out, device="cpu")
    return out
