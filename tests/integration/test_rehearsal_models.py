"""The paper's 17 models (the 16 of Fig. 3 and the I-JEPA predictor of Fig. S3) as stand-ins built by
:mod:`rehearsal.hub` at 2 blocks: a Hugging Face hub cache with the 13 hub repositories' own files, classes and
configurations, and the SimMIM / I-JEPA checkpoints in their upstream layouts. Every model goes through every
analysis the paper's configuration runs, loaded through the catalogue's specs from the offline cache
(HF_HOME, HF_HUB_OFFLINE=1) and $QKDISSECT_DATA: weights resolved into a manifest, modes (which reconstruct
W_q^T W_k), scores, the projection pass on pre-norm and post-norm tokens, the preference pass (Fig. 2) and the
same-object pass (Fig. 6) on synthetic mask images, the maps of a top-images row, and beyond the paper the
logits pass and the LayerNorm-folded modes. The predictor is a weights-only model (Fig. S3): modes and scores."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from rehearsal.hub import build_hub_cache, build_local_checkpoints, link_stand_ins
from rehearsal.hub_repos import HUB_REPOS, LOCAL_CHECKPOINTS, PYTORCH_BIN, SAFETENSORS

from qkdissect.catalogue import KNOWN_MODELS, PAPER_MODELS
from qkdissect.models import load_qk, preprocess_for, resolve_weights
from qkdissect.passes.logits import compute_logit_stats
from qkdissect.passes.maps import compute_maps
from qkdissect.passes.preference import compute_preference
from qkdissect.passes.projections import compute_projections
from qkdissect.passes.same_object import compute_same_object
from qkdissect.passes.scores import compute_scores
from qkdissect.passes.weights import compute_modes
from tests.helpers import REPO, write_photos
from tests.helpers.standins import shared_stand_ins

DEPTH = 2
MODELS = [*PAPER_MODELS, "ijepa-vith14-predictor"]

#: paper.md section 3, independently of rehearsal.hub_repos: (layers, heads, width, token grid, prefix tokens)
PAPER_TABLE: dict[str, tuple[int, int, int, tuple[int, int] | None, int]] = {
    "vit-base-patch16-224": (12, 12, 768, (14, 14), 1),
    "vit-base-patch32-384": (12, 12, 768, (12, 12), 1),
    "vit-large-patch16-224": (24, 16, 1024, (14, 14), 1),
    "vit-large-patch32-384": (24, 16, 1024, (12, 12), 1),
    "vit-huge-patch14-224-in21k": (32, 16, 1280, (16, 16), 1),
    "dino-vits16": (12, 6, 384, (14, 14), 1),
    "dino-vitb16": (12, 12, 768, (14, 14), 1),
    "clip-vit-base-patch16": (12, 12, 768, (14, 14), 1),
    "clip-vit-base-patch32": (12, 12, 768, (7, 7), 1),
    "clip-vit-large-patch14": (24, 16, 1024, (16, 16), 1),
    "deit-tiny-distilled-patch16-224": (12, 3, 192, (14, 14), 2),  # CLS + distillation token
    "deit-small-distilled-patch16-224": (12, 6, 384, (14, 14), 2),
    "deit-base-distilled-patch16-224": (12, 12, 768, (14, 14), 2),
    "simmim-vit-b16-pretrain": (12, 12, 768, (14, 14), 1),
    "simmim-vit-b16-finetune": (12, 12, 768, (14, 14), 1),
    "ijepa-vith14-encoder": (32, 16, 1280, (16, 16), 0),  # no CLS token
    "ijepa-vith14-predictor": (12, 16, 384, None, 0),  # width 384, the encoder's 16 heads: d_head 24
}

#: key names the published checkpoints hold (the transformers converters' and the upstream repositories' naming)
SENTINEL_KEYS = {
    "ViTForImageClassification": ("vit.encoder.layer.1.attention.attention.query.weight", "classifier.weight"),
    "ViTModel": ("encoder.layer.1.attention.attention.key.weight", "embeddings.cls_token"),
    "CLIPModel": (
        "vision_model.encoder.layers.1.self_attn.q_proj.weight",
        "text_model.embeddings.position_ids",
        "visual_projection.weight",
        "logit_scale",
    ),
    "DeiTForImageClassificationWithTeacher": (
        "deit.embeddings.distillation_token",
        "deit.encoder.layer.1.attention.attention.query.weight",  # the converter's names (pytorch_model.bin)
        "distillation_classifier.weight",
    ),
}


def hub_repo(key: str) -> Any:
    return HUB_REPOS.get(KNOWN_MODELS[key].spec.removeprefix("hf:"))


@pytest.fixture(scope="session")
def rehearsal(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Path]]:
    """The stand-ins, built once per session (shared with the paper-weights rehearsal: tests.helpers.standins) and
    linked here: HF_HOME with the 13 hub repositories, QKDISSECT_DATA with the SimMIM and I-JEPA checkpoints, and
    two small photographs."""
    base = tmp_path_factory.mktemp("rehearsal")
    link_stand_ins(shared_stand_ins(tmp_path_factory, DEPTH), base / "hf", base / "data" / "weights", DEPTH)
    write_photos(base / "photos", n=2)
    yield {"hf_home": base / "hf", "data": base / "data", "photos": base / "photos"}
    shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def offline(rehearsal: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """HF_HOME and HF_HUB_OFFLINE=1 for this process. huggingface_hub reads both once, at its import (which an
    earlier test may have done), so its module constants are set too; a fresh process reads the variables
    (test_cli_finds_the_stand_ins_through_the_environment)."""
    import huggingface_hub
    from huggingface_hub import constants

    hub = rehearsal["hf_home"] / "hub"
    monkeypatch.setenv("HF_HOME", str(rehearsal["hf_home"]))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("QKDISSECT_DATA", str(rehearsal["data"]))
    monkeypatch.setattr(constants, "HF_HOME", str(rehearsal["hf_home"]))
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(sys.modules[huggingface_hub.is_offline_mode.__module__], "HF_HUB_OFFLINE", True)
    return {**rehearsal, "hub": hub}


# --------------------------------------------------------------------------------------------- the stand-ins
def test_repos_match_the_paper_table() -> None:
    """Every hub repository's configuration has the paper's layers, heads, width and token grid."""
    for key, (layers, heads, d, grid, _) in PAPER_TABLE.items():
        repo = hub_repo(key)
        if repo is None:
            continue
        cfg = repo.config.get("vision_config", repo.config)
        assert (cfg["num_hidden_layers"], cfg["num_attention_heads"], cfg["hidden_size"]) == (layers, heads, d), key
        assert grid == (cfg["image_size"] // cfg["patch_size"],) * 2, key
    assert {KNOWN_MODELS[k].spec.removeprefix("hf:") for k in PAPER_TABLE} >= set(HUB_REPOS)


def test_cache_has_the_hub_layout(offline: dict[str, Path]) -> None:
    """huggingface_hub reads the cache without a warning; every snapshot file links to its blob, named by its
    sha256 for the weights; each repository holds exactly its own files and weights formats."""
    import hashlib

    from huggingface_hub import scan_cache_dir

    info = scan_cache_dir(offline["hub"])
    assert not info.warnings
    assert {r.repo_id for r in info.repos} == set(HUB_REPOS)
    for cached in info.repos:
        repo = HUB_REPOS[cached.repo_id]
        (rev,) = cached.revisions
        assert rev.commit_hash == (cached.repo_path / "refs" / "main").read_text()
        names = {f.file_name for f in rev.files}
        assert names == {"config.json", "preprocessor_config.json", *repo.weights}
        for f in rev.files:
            assert f.file_path.is_symlink() and not Path(os.readlink(f.file_path)).is_absolute()
            if f.file_name in (SAFETENSORS, PYTORCH_BIN) and f.size_on_disk < 50e6:  # the small ones: fast
                assert f.blob_path.name == hashlib.sha256(f.blob_path.read_bytes()).hexdigest()
        snapshot = cached.repo_path / "snapshots" / rev.commit_hash
        assert json.loads((snapshot / "preprocessor_config.json").read_text()) == repo.preprocessor
        weights = snapshot / repo.weights[0]
        if weights.suffix == ".bin":
            keys = set(torch.load(weights, map_location="cpu", weights_only=True, mmap=True))
        else:
            from safetensors import safe_open

            with safe_open(str(weights), "pt") as fh:
                keys = set(fh.keys())
        assert set(SENTINEL_KEYS[repo.architecture]) <= keys, cached.repo_id
        assert any(k.endswith("pooler.dense.weight") for k in keys) == (
            repo.architecture == "ViTModel" and repo.pooler
        )  # DINO was saved without its pooler, the in21k ViT-H with it


def test_rebuild_is_deterministic_and_replaces_the_repository(tmp_path: Path) -> None:
    """The same build gives the same files and revision; another depth replaces the repository whole; a bad
    name or depth is refused before anything is written."""
    repo_dir = tmp_path / "hub" / "models--facebook--deit-tiny-distilled-patch16-224"
    revisions = []
    for depth in (1, 1, 2):
        build_hub_cache(tmp_path, depth=depth, repos=["deit-tiny-distilled-patch16-224"])
        revisions.append((repo_dir / "refs" / "main").read_text())
        assert [p.name for p in (repo_dir / "snapshots").iterdir()] == [revisions[-1]]
    assert revisions[0] == revisions[1] != revisions[2]
    assert sorted(p.name for p in tmp_path.joinpath("hub").iterdir()) == [repo_dir.name]  # no leftovers
    with pytest.raises(ValueError, match="not one of the paper's hub repositories"):
        build_hub_cache(tmp_path / "bad", repos=["google/vit-tiny"])
    with pytest.raises(ValueError, match="depth must be at least 1"):
        build_hub_cache(tmp_path / "bad", depth=0, repos=["deit-tiny-distilled-patch16-224"])
    assert not (tmp_path / "bad" / "hub" / repo_dir.name).exists()
    with pytest.raises(ValueError, match="depth must be at least 1"):
        build_local_checkpoints(tmp_path / "bad" / "weights", depth=0)


def test_stand_ins_are_linked_at_their_depth_only(tmp_path: Path) -> None:
    """A rehearsal links stand-ins built earlier (the same files, hard links) where they are of its depth; another
    depth, or a repository not built, is refused in one line."""
    source, repo = tmp_path / "built", "deit-tiny-distilled-patch16-224"
    build_hub_cache(source / "hf", depth=1, repos=[repo])
    (source / "data" / "weights").mkdir(parents=True)
    for c in LOCAL_CHECKPOINTS.values():
        (source / "data" / "weights" / c.filename).write_bytes(c.filename.encode())
    link_stand_ins(source, tmp_path / "hf", tmp_path / "weights", 1, [repo])
    built = sorted(p for p in (source / "hf").rglob("*") if p.is_file() and not p.is_symlink())
    linked = sorted(p for p in (tmp_path / "hf").rglob("*") if p.is_file() and not p.is_symlink())
    assert [p.relative_to(source / "hf") for p in built] == [p.relative_to(tmp_path / "hf") for p in linked]
    assert all(a.stat().st_ino == b.stat().st_ino for a, b in zip(built, linked, strict=True))
    assert (tmp_path / "weights" / LOCAL_CHECKPOINTS["ijepa-vith14-encoder"].filename).stat().st_nlink == 2
    with pytest.raises(SystemExit, match="no stand-in of facebook/deit-tiny-distilled-patch16-224 at depth 2"):
        link_stand_ins(source, tmp_path / "other", tmp_path / "w2", 2, [repo])
    with pytest.raises(SystemExit, match="no stand-in of google/vit-base-patch16-224"):
        link_stand_ins(source, tmp_path / "other", tmp_path / "w2", 1, ["vit-base-patch16-224"])


def test_local_checkpoints_have_the_upstream_layout(offline: dict[str, Path]) -> None:
    """SimMIM: the state dict under "model" (pretrain: encoder.* with a shared relative position bias, the mask
    token and the pixel decoder; finetune: per-block tables, fc_norm, a 1000-class head); I-JEPA: encoder,
    predictor and target_encoder with DDP prefixes, and the training state beside them."""
    weights = offline["data"] / "weights"
    pre = torch.load(weights / LOCAL_CHECKPOINTS["simmim-vit-b16-pretrain"].filename, weights_only=True)["model"]
    fine = torch.load(weights / LOCAL_CHECKPOINTS["simmim-vit-b16-finetune"].filename, weights_only=True)["model"]
    assert {"encoder.mask_token", "encoder.rel_pos_bias.relative_position_bias_table", "decoder.0.weight"} <= set(pre)
    assert pre["encoder.blocks.0.attn.qkv.weight"].shape == (3 * 768, 768) and "encoder.norm.weight" in pre
    assert fine["blocks.1.attn.relative_position_bias_table"].shape == ((2 * 14 - 1) ** 2 + 3, 12)
    assert fine["head.weight"].shape == (1000, 768) and "fc_norm.weight" in fine and "norm.weight" not in fine
    ckpt = torch.load(weights / LOCAL_CHECKPOINTS["ijepa-vith14-encoder"].filename, weights_only=True)
    assert {"encoder", "predictor", "target_encoder", "opt", "scaler", "epoch"} <= set(ckpt)
    assert ckpt["encoder"]["module.pos_embed"].shape == (1, 256, 1280)
    assert ckpt["predictor"]["module.predictor_embed.weight"].shape == (384, 1280)
    assert ckpt["predictor"]["module.predictor_blocks.1.mlp.fc1.weight"].shape == (4 * 384, 384)


def test_cli_finds_the_stand_ins_through_the_environment(rehearsal: dict[str, Path], tmp_path: Path) -> None:
    """A fresh process with HF_HOME, HF_HUB_OFFLINE=1 and QKDISSECT_DATA set (as the workflow's jobs run) sees
    all 17 models and computes modes from the cache (DeiT: the pytorch_model.bin path)."""
    env = {**os.environ, "HF_HOME": str(rehearsal["hf_home"]), "HF_HUB_OFFLINE": "1",
           "QKDISSECT_DATA": str(rehearsal["data"]), "PYTHONPATH": str(REPO / "src")}  # fmt: skip
    key, out = "deit-tiny-distilled-patch16-224", tmp_path / "modes.zarr"
    script = (
        "import sys; from qkdissect.cli import main; "
        f"main(['models', '--json']); sys.exit(main(['modes', '{key}', '-o', sys.argv[1], '--device', 'cpu', '-q']))"
    )
    done = subprocess.run([sys.executable, "-c", script, str(out)], env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    listing, _ = json.JSONDecoder().raw_decode(done.stdout)  # the modes summary line follows the JSON
    available = {r["key"]: r["available"] for r in listing}
    assert {k: available[k] for k in MODELS} == {k: "hub cache" if hub_repo(k) else "local file" for k in MODELS}
    from qkdissect.stores import open_store

    ds = open_store(out, "modes")
    assert ds.attrs["n_prefix_tokens"] == 2 and ds.sizes["layer"] == DEPTH
    assert ds.attrs["provenance"]["weights"]["path"].endswith(PYTORCH_BIN)


# ------------------------------------------------------------------------------------------ every pass, every model
def _check_manifest(key: str, manifest: dict[str, Any], offline: dict[str, Path]) -> None:
    """The manifest lists the repository's files from its snapshot (the revision refs/main names), or the
    local checkpoint under $QKDISSECT_DATA."""
    roles = [f["role"] for f in manifest["files"]]
    repo = hub_repo(key)
    if repo is None:
        assert roles == ["weights"] and manifest["origin"] == "local file"
        assert Path(manifest["files"][0]["path"]).parent == (offline["data"] / "weights").resolve()
        return
    org, name = repo.repo_id.split("/")
    repo_dir = offline["hub"] / f"models--{org}--{name}"
    assert manifest["revision"] == (repo_dir / "refs" / "main").read_text() and manifest["hub_offline"]
    assert roles == ["config.json", "preprocessor_config.json", "weights"]
    snapshot = repo_dir / "snapshots" / manifest["revision"]
    assert Path(manifest["files"][2]["path"]) == (snapshot / repo.weights[0]).resolve()  # safetensors if shipped
    assert all(Path(f["path"]).is_relative_to(repo_dir.resolve()) for f in manifest["files"])


def _check_modes(modes: Any, qk: Any, folding: str = "raw") -> None:
    """U diag(S) V^T is the head's (folded) W_q^T W_k, on random vectors (the d x d matrices are never formed)."""
    from qkdissect.models.layernorm import folded_factors

    w_q, w_k = folded_factors(qk, folding)  # type: ignore[arg-type]
    x = torch.randn(qk.d_model, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    want = w_q.transpose(-1, -2) @ (w_k @ x)
    u, s, v = (torch.from_numpy(np.asarray(modes[n].values, dtype=np.float64)) for n in ("U", "S", "V"))
    got = u @ (s[..., None] * (v.transpose(-1, -2) @ x))
    assert torch.linalg.norm(got - want) <= 1e-9 * torch.linalg.norm(want)


def _check_preprocess(key: str, pre: Any) -> None:
    """The crop is the processor's (DeiT: 224 from a 256 x 256 resize), and the tensor every pass feeds the model
    is the one the repository's own Hugging Face processor makes."""
    repo = hub_repo(key)
    if repo is None:  # timm's data config of the model's own size
        assert pre.crop == (224, 224)
        return
    proc = repo.preprocessor
    side = proc.get("crop_size", proc["size"]) if proc.get("do_center_crop") else proc["size"]
    assert pre.crop == (side, side)
    from PIL import Image
    from transformers import AutoImageProcessor

    yy, xx = np.mgrid[0:150, 0:200] / 150.0
    img = Image.fromarray((np.stack([np.sin(3 * xx), np.cos(2 * yy), xx - yy], -1) * 90 + 127).astype(np.uint8))
    theirs = AutoImageProcessor.from_pretrained(repo.repo_id, local_files_only=True)(images=img, return_tensors="pt")
    diff = (pre(img) - theirs["pixel_values"][0]).abs()
    assert diff.max() < 0.05 and diff.mean() < 1e-3


@pytest.mark.parametrize("key", MODELS)
def test_every_pass_on_a_stand_in(key: str, offline: dict[str, Path], tmp_path: Path) -> None:
    _, heads, d, grid, n_prefix = PAPER_TABLE[key]
    manifest = resolve_weights(key, key)
    _check_manifest(key, manifest, offline)

    # the modes through the spec, checked against the manifest; scores
    modes = compute_modes(key, tmp_path / "modes.zarr", device="cpu", model_key=key, manifest=manifest)
    assert (modes.sizes["layer"], modes.sizes["head"], modes.sizes["dim"]) == (DEPTH, heads, d)
    assert modes.sizes["mode"] == d // heads
    assert modes.attrs["weights_sha256"] == manifest["files"][-1]["sha256"]
    assert (modes.attrs["n_prefix_tokens"], modes.attrs["grid"]) == (n_prefix, list(grid) if grid else None)
    scores = compute_scores(tmp_path / "modes.zarr", tmp_path / "scores.zarr")
    assert np.all(np.abs(scores.cosine.values) <= 1 + 1e-9) and scores.layer_weighted.shape == (DEPTH,)

    # the model itself, loaded once for the passes below (its class as the repository's config names it); the
    # passes load a spec exactly as compute_modes did above, and as the CLI does in test_cli_finds_...
    qk, loaded = load_qk(key)
    if (repo := hub_repo(key)) is not None:
        assert loaded.model.config.architectures == [repo.architecture]
    _check_modes(modes, qk)
    model = loaded.model
    for folding in ("folded", "folded-centred"):  # beyond the paper: the LayerNorm-aware interaction
        folded = compute_modes(model, device="cpu", folding=folding, model_key=key)
        _check_modes(folded, qk, folding)
        assert not np.allclose(folded.S.values, modes.S.values)
    if grid is None:  # the I-JEPA predictor (Fig. S3): weights only, no image passes
        assert qk.layout.n_prefix == 0 and qk.d_head == 24
        return

    pre = preprocess_for(loaded)
    _check_preprocess(key, pre)
    images = f"folder:{offline['photos']}"

    # projections on post-norm tokens (the paper configuration's choice) and pre-norm tokens (the released code's)
    proj = {}
    for tokens in ("post-norm", "pre-norm"):
        proj[tokens] = p = compute_projections(
            model, tmp_path / "modes.zarr", images, tmp_path / f"proj-{tokens}.zarr", tokens=tokens,  # type: ignore[arg-type]
            batch_size=2, top_k=2, device="cpu", workers=0, progress=False, model_key=key,
        )  # fmt: skip
        assert (p.sizes["image"], p.sizes["layer"], p.sizes["head"], p.sizes["mode"], p.sizes["rank"]) == (
            2, DEPTH, heads, d // heads, 2,
        )  # fmt: skip
        assert bool(p.valid.all()) and np.isfinite(p.q_max.values).all() and p.attrs["grid"] == list(grid)
        assert p.attrs["n_prefix_tokens"] == n_prefix and p.attrs["preprocess"]["crop"] == list(pre.crop)
    assert not np.allclose(proj["post-norm"].q_max.values, proj["pre-norm"].q_max.values)

    # Fig. 2: attention preference on synthetic odd-one-out scenes; Fig. 6: same-object probability
    pref = compute_preference(model, "synthetic:4", tmp_path / "pref.zarr", batch_size=2, device="cpu",
                              progress=False, model_key=key)  # fmt: skip
    assert pref.table.shape == (4, DEPTH, heads, 2, 3) and pref.token_masks.sizes["token"] == grid[0] * grid[1]
    assert np.allclose(pref.table.sum("region").values, 1, atol=1e-4)
    assert pref.example_crop.shape == (*pre.crop, 3)
    same = compute_same_object(model, tmp_path / "modes.zarr", "synthetic:4", tmp_path / "same.zarr", top=2,
                               batch_size=2, device="cpu", progress=False, model_key=key)  # fmt: skip
    assert same.p.shape == (DEPTH, heads, d // heads, 2) and np.all((same.layer_p >= 0) & (same.layer_p <= 1))

    # the maps of one top-images row (Fig. 1, 4, galleries): the crops are the model's input, the maps its grid
    maps = compute_maps(model, tmp_path / "modes.zarr", tmp_path / "scores.zarr", tmp_path / "proj-post-norm.zarr",
                        {"kind": "top", "modes": [[DEPTH - 1, heads - 1, 0, "+"]], "k": 2}, tmp_path / "maps.zarr",
                        device="cpu", model_key=key)  # fmt: skip
    assert maps.q_map.shape == (1, 2, *grid) and maps.crop.shape[1:] == (*pre.crop, 3)
    assert maps.attrs["drawn"] == [[DEPTH - 1, heads - 1, 0, "+"]]

    # beyond the paper: the logits split into the token term (the modes) and the bias terms
    logits = compute_logit_stats(model, tmp_path / "modes.zarr", images, tmp_path / "logits.zarr", batch_size=2,
                                 device="cpu", workers=0, progress=False, model_key=key)  # fmt: skip
    assert np.allclose(logits.share.sum("term").values, 1, atol=1e-3)
    assert logits.explained.shape[0] == DEPTH
