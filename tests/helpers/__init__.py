"""What the tests share: the repository's paths, the real assets (``$QKDISSECT_ASSETS``, default ``../shared/assets``
beside the checkout; a test that needs them skips with a reason when they are absent, unless
``QKDISSECT_REQUIRE_ASSETS=1``, set by ``.ci/run``, which turns the skip into a failure), and tiny inputs built on
the spot: random photographs, a tiny random ViT and I-JEPA checkpoint. The fixtures are in ``tests/conftest.py``;
the helpers of one subject in the modules beside this one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[2]
ASSETS = Path(os.environ.get("QKDISSECT_ASSETS", REPO.parent / "shared" / "assets")).resolve()
DINOV2_FILE = "weights/dinov2_vits14_imgfocus_backbone.safetensors"
#: stories260K (a trained Llama-architecture model: RoPE, 8 query heads sharing 4 key-value heads) in the assets
STORIES = "weights/stories260K/hf/model.safetensors"
#: a tiny ViT geometry shared by the random-initialised models of every family: 32 px, 4 x 4 patches of 8 px
TINY = dict(img_size=32, patch_size=8, embed_dim=64, num_heads=4)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def need_assets(*rel: str) -> Path:
    """The assets folder, when it holds every path of ``rel``; otherwise the test skips (fails under
    ``QKDISSECT_REQUIRE_ASSETS=1``) naming what is missing."""
    missing = [r for r in rel if not (ASSETS / r).exists()]
    if missing:
        msg = f"real assets missing under {ASSETS}: {', '.join(missing)} (set QKDISSECT_ASSETS)"
        if os.environ.get("QKDISSECT_REQUIRE_ASSETS") == "1":
            pytest.fail(msg + " — QKDISSECT_REQUIRE_ASSETS=1 forbids skipping")
        pytest.skip(msg)
    return ASSETS


def load_photo(path: Path, size: int = 224) -> torch.Tensor:
    """A real photograph as a normalised (1, 3, size, size) tensor (resize shorter side, centre crop)."""
    from PIL import Image

    img = Image.open(path).convert("RGB")
    w, h = img.size
    s = size / min(w, h)
    img = img.resize((max(size, round(w * s)), max(size, round(h * s))), Image.BICUBIC)
    w, h = img.size
    left, top = (w - size) // 2, (h - size) // 2
    img = img.crop((left, top, left + size, top + size))
    x = torch.from_numpy(np.asarray(img, dtype=np.float32) / 255.0).permute(2, 0, 1)
    x = (x - torch.tensor(IMAGENET_MEAN)[:, None, None]) / torch.tensor(IMAGENET_STD)[:, None, None]
    return x[None]


def randomise_(model: torch.nn.Module, seed: int = 0, std: float = 0.3) -> torch.nn.Module:
    """Give every parameter (biases, norms, layer scales included) random values, so that a check of
    biases or norms cannot pass because they happen to be zero or one."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)
    return model.eval()


def make_tiny_vit(folder: Path, depth: int = 3) -> str:
    """A tiny random timm ViT (32 px, 4 x 4 patches, width 64, 4 heads) saved as safetensors; returns its spec."""
    import timm
    from safetensors.torch import save_file

    m = randomise_(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=depth, **TINY))
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny.safetensors"
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(path))
    opts = "&".join(f"{k}={v}" for k, v in TINY.items())
    return f"timm:vit_tiny_patch16_224@{path}?{opts}&depth={depth}"


def write_photos(folder: Path, n: int = 6, seed: int = 0) -> list[Path]:
    """``n`` small random-noise RGB photographs of different sizes (PNG)."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        path = folder / f"photo{i:02d}.png"
        Image.fromarray(rng.integers(0, 255, (40 + 4 * i, 48, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def make_simmim_checkpoint(tmp_path: Path, pretrain: bool) -> tuple[Path, Any]:
    """A tiny random SimMIM checkpoint in the released layout, and the timm Beit it holds (3 blocks of width 64, 4
    heads, 32 px): pretrain (``encoder.*`` with a shared relative position bias, the mask token and a pixel
    decoder) or finetune (per-block tables, mean pooling, a classifier); the index buffers beside them."""
    from timm.models.beit import Beit

    ref = randomise_(
        Beit(**TINY, depth=3, num_classes=0, use_abs_pos_emb=False, use_shared_rel_pos_bias=pretrain,
             use_rel_pos_bias=not pretrain, init_values=0.1, global_pool="token" if pretrain else "avg")
    )  # fmt: skip
    sd = dict(ref.state_dict())
    for i in range(3):  # upstream checkpoints carry the index buffers too
        sd[f"blocks.{i}.attn.relative_position_index"] = torch.zeros(17, 17, dtype=torch.long)
    if pretrain:  # SimMIM wrapper: encoder.* + mask token + a pixel decoder
        sd = {f"encoder.{k}": v for k, v in sd.items()}
        sd["encoder.mask_token"] = torch.zeros(1, 1, 64)
        sd["decoder.0.weight"] = torch.zeros(8 * 8 * 3, 64, 1, 1)
    else:
        sd["head.weight"] = torch.zeros(10, 64)
    path = tmp_path / ("pretrain.pth" if pretrain else "finetune.pth")
    torch.save({"model": sd, "epoch": 800}, path)
    return path, ref


def make_ijepa_checkpoint(tmp_path: Path) -> tuple[Path, Any, Any]:
    """A tiny random I-JEPA checkpoint in the released layout (encoder, target_encoder, predictor; `module.`
    prefixes): 2 encoder blocks of width 64, 2 predictor blocks of width 32, 4 heads each."""
    from timm.models.vision_transformer import VisionTransformer

    from qkdissect.models.sources.ijepa_predictor import IJEPAPredictor

    enc = randomise_(
        VisionTransformer(
            **TINY,
            depth=2,
            class_token=False,
            global_pool="avg",
            fc_norm=False,
            num_classes=0,
        )
    )
    pred = randomise_(IJEPAPredictor(64, 32, depth=2, n_heads=4))
    psd = {k.replace("blocks.", "predictor_blocks."): v for k, v in pred.state_dict().items()}
    psd.update(
        mask_token=torch.zeros(1, 1, 32),
        predictor_pos_embed=torch.zeros(1, 16, 32),
        **{"predictor_proj.weight": torch.zeros(64, 32), "predictor_proj.bias": torch.zeros(64)},
    )
    ckpt = {
        "encoder": {f"module.{k}": v for k, v in enc.state_dict().items()},
        "target_encoder": {f"module.{k}": v * 2 for k, v in enc.state_dict().items()},
        "predictor": {f"module.{k}": v for k, v in psd.items()},
        "epoch": 300,
    }
    path = tmp_path / "IN1K-tiny.pth.tar"
    torch.save(ckpt, path)
    return path, enc, pred


def tiny_hf_dir(tmp_path: Path) -> Path:
    """A tiny random DeiT (2 blocks, width 64, 4 heads, 32 px) saved with save_pretrained."""
    from transformers import DeiTConfig, DeiTModel

    model = randomise_(
        DeiTModel(
            DeiTConfig(
                hidden_size=64,
                num_hidden_layers=2,
                num_attention_heads=4,
                intermediate_size=128,
                image_size=32,
                patch_size=8,
            )
        )
    )
    out = tmp_path / "tiny-deit"
    model.save_pretrained(out)
    return out
