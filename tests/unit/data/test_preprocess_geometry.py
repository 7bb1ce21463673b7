"""The model-input geometry against the libraries' own transforms, on awkward sizes (odd differences, portrait and
landscape, images smaller than the crop, non-square inputs): timm's eval transform (crop_pct, crop_mode center /
squash / border) and the Hugging Face PIL image processors (shortest_edge or height/width, with and without centre
crop or resize) give the same pixels as :class:`Preprocess`, and a mask follows the image exactly."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from qkdissect.data.geometry import Preprocess, centre_offset
from qkdissect.data.masks import mask_to_tokens
from qkdissect.errors import QKDissectError
from qkdissect.models.preprocessing import _hf_preprocess, _timm_preprocess, load_image_processor

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
sizes = st.tuples(st.integers(1, 72), st.integers(1, 72))


def _photo(width: int, height: int, seed: int) -> Image.Image:
    """Smooth colour ramps plus noise, so a one-pixel shift changes pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    a = np.stack([x * 7 + y * 3, x * 2 + y * 11, (x * y) % 256], -1) + rng.integers(0, 40, (height, width, 3))
    return Image.fromarray((a % 256).astype(np.uint8))


def test_centre_offset_rules() -> None:
    # torchvision (timm): Python round, half to even; padding floor((crop - size) / 2) before
    assert [centre_offset(s, 8, "round") for s in (8, 9, 10, 11, 33, 35, 5, 4)] == [0, 0, 1, 2, 12, 14, -1, -2]
    # Hugging Face: floor, padding included (ceil((crop - size) / 2) before)
    assert [centre_offset(s, 8, "floor") for s in (8, 9, 10, 11, 33, 35, 5, 4)] == [0, 0, 1, 1, 12, 13, -2, -2]


def _timm_model(h: int, w: int, pct: float, mode: str, interp: str) -> Any:
    cfg = dict(input_size=(3, h, w), crop_pct=pct, crop_mode=mode, interpolation=interp, mean=MEAN, std=STD)
    return SimpleNamespace(pretrained_cfg=cfg)  # all resolve_data_config reads of a model


@settings(max_examples=120, deadline=None)
@given(
    image=sizes,
    target=st.tuples(st.integers(4, 40), st.integers(4, 40)) | st.integers(4, 40).map(lambda s: (s, s)),
    pct=st.sampled_from([0.875, 0.9, 0.95, 1.0, 1.15]),  # 1.15: the crop is larger than the resize, it pads
    mode=st.sampled_from(["center", "squash", "border"]),
    interp=st.sampled_from(["bicubic", "bilinear", "nearest"]),
)
def test_timm_geometry_equals_timm_eval_transform(
    image: tuple[int, int], target: tuple[int, int], pct: float, mode: str, interp: str
) -> None:
    from timm.data import create_transform, resolve_data_config
    from torchvision import transforms

    model = _timm_model(*target, pct, mode, interp)
    ref = create_transform(**resolve_data_config({}, model=model))
    geometric, to_tensor = transforms.Compose(ref.transforms[:-2]), transforms.Compose(ref.transforms[-2:])
    pre, img = _timm_preprocess(model), _photo(*image, seed=sum(image))
    ours = pre.image(img)
    try:
        theirs = geometric(img)
    except ValueError:  # timm's border mode resizes a very thin image to zero pixels; ours keeps one
        assert mode == "border" and min(pre.resized(*image)) == 1
        return
    assert ours.size == theirs.size == (target[1], target[0])
    np.testing.assert_array_equal(np.asarray(ours), np.asarray(theirs))
    torch.testing.assert_close(pre.normalise(ours), to_tensor(theirs), atol=1e-6, rtol=0)


_HF_BASE: dict[str, Any] = {"do_normalize": True, "do_resize": True, "image_mean": MEAN, "image_std": STD}


@pytest.fixture(scope="module")
def hf_classes(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The PIL processor classes of the ViT, CLIP and DeiT kinds, loaded as preprocess_for loads them."""
    out = {}
    for kind in ("ViT", "CLIP", "DeiT"):
        d = tmp_path_factory.mktemp(kind)
        (d / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": f"{kind}ImageProcessor"}))
        out[kind] = type(load_image_processor(str(d)))
    return out


@settings(max_examples=120, deadline=None)
@given(
    image=sizes,
    kind=st.sampled_from(["ViT", "CLIP", "DeiT"]),
    resize=st.none() | st.integers(4, 40) | st.tuples(st.integers(4, 40), st.integers(4, 40)),
    crop=st.none() | st.tuples(st.integers(4, 40), st.integers(4, 40)),
    resample=st.sampled_from([0, 2, 3]),
    rescale=st.booleans(),
)
def test_hf_geometry_equals_pil_processor(
    hf_classes: dict[str, Any],
    image: tuple[int, int],
    kind: str,
    resize: int | tuple[int, int] | None,
    crop: tuple[int, int] | None,
    resample: int,
    rescale: bool,
) -> None:
    cfg = {**_HF_BASE, "resample": resample, "do_rescale": rescale, "do_resize": resize is not None}
    if isinstance(resize, int):
        cfg["size"] = {"shortest_edge": resize}
    elif resize is not None:
        cfg["size"] = {"height": resize[0], "width": resize[1]}
    cfg["do_center_crop"] = crop is not None
    if crop is not None:
        cfg["crop_size"] = {"height": crop[0], "width": crop[1]}
    proc = hf_classes[kind](**cfg)
    if crop is None and not isinstance(resize, tuple):
        with pytest.raises(QKDissectError, match="output size varies"):
            _hf_preprocess(proc)
        return
    pre, img = _hf_preprocess(proc), _photo(*image, seed=sum(image))
    theirs = proc(img, do_rescale=False, do_normalize=False, return_tensors="np")["pixel_values"][0]
    np.testing.assert_array_equal(np.asarray(pre.image(img)), theirs.transpose(1, 2, 0))
    torch.testing.assert_close(pre.tensor(img), proc(img, return_tensors="pt")["pixel_values"][0], atol=1e-6, rtol=0)


@settings(max_examples=60, deadline=None)
@given(image=sizes, rounding=st.sampled_from(["round", "floor"]), resize=st.none() | st.integers(4, 40))
def test_a_mask_follows_the_image(image: tuple[int, int], rounding: str, resize: int | None) -> None:
    """A mask made of the image's own red channel, sent through mask_to_tokens (nearest resampling so no filter
    blurs it), equals the image path's red channel pooled the same way: same size, crop box, rounding, padding."""
    pre = Preprocess((24, 16), resize, MEAN, STD, "nearest", rounding=rounding)
    img = _photo(*image, seed=sum(image))
    seen = np.asarray(pre.image(img))[..., 0].astype(np.float32)
    pooled = np.asarray(Image.fromarray(seen, "F").resize((4, 6), Image.Resampling.BOX), dtype=np.float64)
    red = np.asarray(img)[..., 0].astype(np.float64)
    np.testing.assert_array_equal(mask_to_tokens(red, pre, (6, 4), resample="nearest"), pooled)


def test_hf_legacy_size_forms_are_read_from_the_processor(tmp_path: Path) -> None:
    """Legacy ``size: 224`` means 224x224 for ViT and the shortest edge for CLIP; DeiT's ``size: 256`` with
    ``crop_size: 224`` resizes to 256x256 and crops the centre 224 (not a 16x16 grid of 256 px)."""
    forms = {
        "ViTFeatureExtractor": ({"size": 224, "resample": 2}, (224, 224), (224, 224)),
        "CLIPFeatureExtractor": (
            {"size": 224, "crop_size": 224, "do_center_crop": True, "resample": 3},
            224,
            (224, 224),
        ),
        "DeiTFeatureExtractor": (
            {"size": 256, "crop_size": 224, "do_center_crop": True, "resample": 3},
            (256, 256),
            (224, 224),
        ),
    }
    for name, (cfg, resize, crop) in forms.items():
        d = tmp_path / name
        d.mkdir()
        (d / "preprocessor_config.json").write_text(json.dumps({**_HF_BASE, **cfg, "feature_extractor_type": name}))
        pre = _hf_preprocess(load_image_processor(str(d)))
        assert (pre.resize, pre.crop, pre.rounding) == (resize, crop, "floor"), name
        assert "PIL backend" in pre.describe()["origin"]


def test_hf_steps_it_cannot_reproduce_are_refused(tmp_path: Path) -> None:
    (tmp_path / "preprocessor_config.json").write_text(json.dumps({"image_processor_type": "ConvNextImageProcessor"}))
    with pytest.raises(QKDissectError, match="crop_pct is not supported"):
        _hf_preprocess(load_image_processor(str(tmp_path)))


def test_describe_records_every_step() -> None:
    pre = _timm_preprocess(_timm_model(20, 30, 0.9, "border", "bicubic"))
    d = pre.describe()
    assert (d["resize"], d["keep_ratio"], d["crop_rounding"]) == ([22, 33], 1.0, "round")
    assert d["fill"] == [round(255 * v) for v in MEAN] and "crop_mode border" in d["origin"]
    assert dataclasses.replace(pre, rounding="floor").describe()["crop_rounding"] == "floor"
