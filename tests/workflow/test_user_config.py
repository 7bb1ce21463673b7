"""A user's own configuration, run once for the module: their own weights files (the real DINOv2-S/14 through timm,
a tiny I-JEPA checkpoint's encoder and predictor for Fig. S3) and their own photographs (12 ImageNet ones), Fig. 3
and S1 to S4, and two image figures: Fig. 4 (modes given by the user) and Fig. 5 (a photograph named by its file).
The Fig. 3 numbers equal an independent brute-force computation; with the weights and the photographs gone, every
figure draws again from the stores alone, pixel for pixel. (The other image figures, Fig. 1, the galleries and S17,
draw from maps stores of the same kind: the offline default's run draws them, and no figure notebook imports
anything that could load a model: tests/unit/plots/test_notebook_imports.py.)"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from qkdissect.stores import open_store
from tests.helpers import make_ijepa_checkpoint
from tests.helpers.workflow import check_figures, pixels, snakemake, write_config

FIGURES = [
    "fig3_weighted_cosine",
    "fig3_unweighted_cosine",
    "s1_cosine_histograms_jepa-enc",
    "s2_spectrum_grid_jepa-pred",
    "s3_ijepa_encoder_predictor",
    "s4_anisotropy",
    "fig4_top_images",
    "fig5_image_modes",
]
#: the rules that draw them (and the claims page, made from the same stores)
FIGURE_RULES = ["fig3", "s1_histograms", "s2_spectrum", "s3_ijepa", "s4", "fig4", "fig5"]


@pytest.fixture(scope="module")
def user_run(tmp_path_factory: pytest.TempPathFactory, dinov2_file: Path, assets: Path) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("user")
    (base / "weights").mkdir()
    weights = Path(shutil.copy(dinov2_file, base / "weights/dinov2.safetensors"))  # theirs: gone in the redraw
    ijepa, _, _ = make_ijepa_checkpoint(base / "weights")
    photos = base / "photos"
    photos.mkdir()
    for jpg in sorted((assets / "images/imagenet_sample_1000").glob("*.jpg"))[:12]:
        shutil.copy(jpg, photos)
    cfg = write_config(
        base,
        {
            "models": {
                "my-dinov2": {"spec": f"timm:vit_small_patch14_dinov2@{weights}?img_size=224", "color": "k"},
                "jepa-enc": {"spec": f"ijepa:{ijepa}#encoder?heads=4"},
                "jepa-pred": {"spec": f"ijepa:{ijepa}#predictor?heads=4"},
            },
            "figures": {
                "fig3": ["my-dinov2", "jepa-enc"],
                "s1": ["jepa-enc"],
                "s2": ["jepa-pred"],
                "s3": {"encoder": "jepa-enc", "predictor": "jepa-pred"},
                "s4": ["my-dinov2"],
                "fig4": [{"model": "my-dinov2", "modes": [[3, 1, 0], [9, 2, 1, "-"]]}],
                "fig5": {"model": "my-dinov2", "image": "n01443537_goldfish.jpg", "n_modes": 2},
                "gallery_k": 4,
            },
            "images": {"inet": {"source": f"folder:{photos}"}},
            "projections": {"images": "inet", "batch_size": 4, "tokens": "pre-norm"},
            "analysis": {"device": "cpu"},
            "atlas": False,  # not this module's subject (test_atlas.py, the end-to-end test)
        },
    )
    work = base / "run"
    snakemake(work, "--cores", "2", config=cfg)
    return {"work": work, "config": cfg, "weights": base / "weights", "photos": photos, "base": base}


def brute_force_layer_cosines(path: Path, n_heads: int) -> tuple[np.ndarray, np.ndarray]:
    """Weighted and plain per-layer cosine straight from a timm checkpoint: split the fused qkv by hand, form
    each head's d x d matrix W_q^T W_k and take its full numpy SVD (no qkdissect code involved); the plain mean
    over the modes with s_n >= 1e-4 s_0."""
    from safetensors.numpy import load_file

    sd = load_file(str(path))
    n_layers = len({k.split(".")[1] for k in sd if k.startswith("blocks.")})
    weighted, plain = np.zeros(n_layers), np.zeros(n_layers)
    for layer in range(n_layers):
        qkv = sd[f"blocks.{layer}.attn.qkv.weight"].astype(np.float64)
        d = qkv.shape[1]
        dh = d // n_heads
        w_q, w_k = qkv[:d], qkv[d : 2 * d]
        hw, hp = [], []
        for h in range(n_heads):
            rows = slice(h * dh, (h + 1) * dh)
            u, s, vt = np.linalg.svd(w_q[rows].T @ w_k[rows])
            cos = np.sum(u[:, :dh] * vt[:dh].T, axis=0)
            hw.append(np.sum(s[:dh] / s[:dh].sum() * cos))
            hp.append(cos[s[:dh] >= 1e-4 * s[0]].mean())  # numerically null modes left out (analysis.null_rtol)
        weighted[layer], plain[layer] = np.mean(hw), np.mean(hp)
    return weighted, plain


@pytest.mark.assets
def test_fig3_data_match_brute_force_and_s3_runs(user_run: dict[str, Path], dinov2_file: Path) -> None:
    """Every figure drawn, with its record; the Fig. 3 numbers equal an independent brute-force computation."""
    work = user_run["work"]
    check_figures(work, FIGURES)
    proj = open_store(work / "results/projections/my-dinov2/inet.zarr", "projections")
    assert proj.attrs["token_source"] == "pre-norm" and proj.sizes["image"] == 12
    assert str(proj.image_id.values[0]).startswith("n01440764")  # ids: relative paths, sorted
    record = json.loads((work / "results/figures/fig4_top_images.provenance.json").read_text())
    assert record["parameters"]["drawn"] == [["my-dinov2", 3, 1, 0, "+"], ["my-dinov2", 9, 2, 1, "-"]]
    scores = open_store(work / "results/scores/my-dinov2.zarr", "scores")
    weighted, plain = brute_force_layer_cosines(dinov2_file, n_heads=6)
    np.testing.assert_allclose(scores.layer_weighted.values, weighted, atol=1e-9)
    np.testing.assert_allclose(scores.layer_mean.values, plain, atol=1e-9)
    np.testing.assert_allclose(scores.depth.values, np.linspace(0, 1, 12))
    # the notebook plotted exactly these numbers (it prints them into the executed notebook)
    nb = json.loads((work / "results/notebooks/fig3_weighted_cosine.ipynb").read_text())
    printed = "".join("".join(o.get("text", "")) for c in nb["cells"] for o in c.get("outputs", []))
    assert "my-dinov2 " + " ".join(f"{v:+.3f}" for v in weighted) in printed
    # the user's style reached the figure's provenance
    record = json.loads((work / "results/figures/fig3_weighted_cosine.provenance.json").read_text())
    assert record["parameters"]["styles"]["my-dinov2"] == {"color": "k"}
    assert {i["model_id"] for i in record["inputs"]} == {"my-dinov2", "jepa-enc"}
    assert record["inputs"][0]["weights"]["sha256"].startswith("20f14f60")


def test_figures_redraw_from_stores_alone(user_run: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Plotting only reads stores: with the weights files and the photographs gone, forcing every figure rule to
    run again draws every figure, pixel for pixel the same. (The module's last test: it takes them away.)"""
    work, base = user_run["work"], user_run["base"]
    before = pixels(work / "results/figures")
    assert sorted(before) == sorted(f"{stem}.png" for stem in FIGURES)
    user_run["weights"].rename(base / "weights-gone")
    user_run["photos"].rename(base / "photos-gone")
    monkeypatch.setenv("QKDISSECT_DATA", str(base / "no-data"))
    # the weights are gone, so the workflow would resolve them again (the audit flags them missing too);
    # --allowed-rules draws from the stores alone, as the README says
    args: list[Any] = ["--cores", "2", "--forcerun", *FIGURE_RULES, "--allowed-rules", *FIGURE_RULES, "claims"]
    r = snakemake(work, *args, config=user_run["config"])
    assert "rule maps" not in r.stdout + r.stderr and "rule project" not in r.stdout + r.stderr
    after = pixels(work / "results/figures")
    assert after.keys() == before.keys()
    for name, img in before.items():
        np.testing.assert_array_equal(after[name], img, err_msg=name)
    assert not (base / "no-data").exists()
