"""On all 1000 ImageNet photographs of the assets, every image pass's model input is pixel for pixel the model's own
transform: timm's eval transform (ViT-B/16 augreg2 with crop_pct 0.9, DINOv2-S/14 at 518 px) and the Hugging Face
PIL image processors of the paper's ViT, CLIP and DeiT repositories. The uint8 resized and cropped image is compared
before scaling and normalisation, the final tensors to 1e-6, and a mask made of the image's own pixels follows it."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from rehearsal.hub_repos import HUB_REPOS

from qkdissect.data.decoding import decode
from qkdissect.data.geometry import Preprocess
from qkdissect.data.masks import mask_to_tokens
from qkdissect.data.sources import ImageItem
from qkdissect.models.preprocessing import _hf_preprocess, _timm_preprocess, load_image_processor

pytestmark = pytest.mark.assets

#: the paper's hub repositories whose processors the pixels are checked against, one of each kind (ViT: a square
#: resize; DINO: the same with ImageNet mean and std; CLIP: shorter side, then a crop; DeiT: a square 256 resize,
#: then a 224 crop); their preprocessor_config.json as the repositories write it, with sources, is in
#: rehearsal/hub_repos.py (legacy forms kept: the processor itself must turn them into sizes)
HF_REPOS = {
    "vit": "google/vit-base-patch16-224",
    "dino": "facebook/dino-vitb16",
    "clip": "openai/clip-vit-base-patch16",
    "deit": "facebook/deit-base-distilled-patch16-224",
}
HF_CONFIGS: dict[str, dict[str, Any]] = {kind: HUB_REPOS[repo].preprocessor for kind, repo in HF_REPOS.items()}
#: timm models whose pretrained config makes the crop matter (crop_pct 0.9) and DINOv2-S/14's (518 px)
TIMM_MODELS = ("vit_base_patch16_224.augreg2_in21k_ft_in1k", "vit_small_patch14_dinov2.lvd142m")

Reference = tuple[Preprocess, Callable[[list[Image.Image]], list[np.ndarray]], Callable[[np.ndarray], torch.Tensor]]


@pytest.fixture(scope="module")
def photographs(assets: Path) -> list[Image.Image]:
    """The 1000 photographs decoded once, as every pass decodes them; equal to a plain PIL decode."""
    files = sorted((assets / "images/imagenet_sample_1000").glob("*.jpg"))
    assert len(files) == 1000
    out = [decode(ImageItem(f.name, f), target=518) for f in files]
    for f, img in zip(files[::50], out[::50], strict=True):
        np.testing.assert_array_equal(np.asarray(img), np.asarray(Image.open(f).convert("RGB")))
    return out


def _timm(name: str) -> Reference:
    import timm
    from timm.data import create_transform, resolve_data_config
    from torchvision import transforms

    with torch.device("meta"):  # the pretrained config is all that matters; no weights
        model = timm.create_model(name, pretrained=False)
    ref = create_transform(**resolve_data_config({}, model=model))
    assert [type(t).__name__ for t in ref.transforms[-2:]] == ["MaybeToTensor", "Normalize"]
    geometric, tensor = transforms.Compose(ref.transforms[:-2]), transforms.Compose(ref.transforms[-2:])
    return _timm_preprocess(model), lambda ims: [np.asarray(geometric(im)) for im in ims], tensor


def _hf(kind: str, folder: Path) -> Reference:
    folder.mkdir()
    (folder / "preprocessor_config.json").write_text(json.dumps(HF_CONFIGS[kind]))
    proc = load_image_processor(str(folder))

    def geometric(ims: list[Image.Image]) -> list[np.ndarray]:
        out = proc(ims, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"]
        return list(out.transpose(0, 2, 3, 1))

    def tensor(x: np.ndarray) -> torch.Tensor:
        return proc(x, do_resize=False, do_center_crop=False, return_tensors="pt")["pixel_values"][0]

    return _hf_preprocess(proc), geometric, tensor


@pytest.mark.parametrize("kind", [*TIMM_MODELS, *HF_CONFIGS])
def test_model_input_equals_the_models_own_transform(kind: str, photographs: list[Image.Image], tmp_path: Path) -> None:
    pre, geometric, tensor = _timm(kind) if kind in TIMM_MODELS else _hf(kind, tmp_path / kind)
    differ = []
    for start in range(0, len(photographs), 100):
        batch = photographs[start : start + 100]
        for i, (img, theirs) in enumerate(zip(batch, geometric(batch), strict=True)):
            ours = np.asarray(pre.image(img))
            if ours.shape != theirs.shape or not np.array_equal(ours, theirs):
                differ.append(start + i)
    assert not differ, f"{kind}: {len(differ)} of 1000 photographs differ from the model's own transform"
    for img in photographs[::40]:  # scaling and normalisation: the same float32 tensors
        ours = np.array(pre.image(img))
        torch.testing.assert_close(pre.normalise(ours), tensor(ours), atol=1e-6, rtol=0)


@pytest.mark.parametrize("kind", [TIMM_MODELS[0], "deit"])
def test_a_mask_of_the_images_pixels_follows_it(kind: str, photographs: list[Image.Image], tmp_path: Path) -> None:
    """The red channel as a mask, through mask_to_tokens (nearest resampling, so no filter blurs it), equals the
    image path's red channel pooled over the same 14 x 14 tokens: same resized size, crop box and rounding."""
    pre = _timm(kind)[0] if kind in TIMM_MODELS else _hf(kind, tmp_path / kind)[0]
    pre = dataclasses.replace(pre, interpolation="nearest")
    for img in photographs[::10]:
        seen = np.asarray(pre.image(img))[..., 0].astype(np.float32)
        pooled = np.asarray(Image.fromarray(seen, "F").resize((14, 14), Image.Resampling.BOX), dtype=np.float64)
        red = np.asarray(img)[..., 0].astype(np.float64)
        np.testing.assert_array_equal(mask_to_tokens(red, pre, (14, 14), resample="nearest"), pooled)
