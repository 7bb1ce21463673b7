"""Image sources and robust decoding: every exotic format becomes upright 8-bit RGB, a broken file is an error
naming it, ids are stable and sorted, and the preprocessing follows the model's own configuration."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qkdissect.data import decoding
from qkdissect.data.decoding import ImageDecodeError, decode
from qkdissect.data.geometry import Preprocess
from qkdissect.data.sources import EmptyImageSourceError, ImageItem, image_source
from qkdissect.models.preprocessing import _hf_preprocess, _timm_preprocess


def _item(path: Path) -> ImageItem:
    return ImageItem(path.name, path)


def test_exotic_formats_become_rgb(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    cases = {
        "grey.png": Image.fromarray(rng.integers(0, 255, (20, 30), dtype=np.uint8), "L"),
        "rgba.png": Image.fromarray(rng.integers(0, 255, (20, 30, 4), dtype=np.uint8), "RGBA"),
        "palette.gif": Image.fromarray(rng.integers(0, 255, (20, 30, 3), dtype=np.uint8)).convert("P"),
        "cmyk.jpg": Image.fromarray(rng.integers(0, 255, (20, 30, 4), dtype=np.uint8), "CMYK"),
        "sixteen.png": Image.fromarray(rng.integers(0, 65535, (20, 30), dtype=np.uint16)),
        "bilevel.png": Image.fromarray(rng.integers(0, 2, (20, 30), dtype=np.uint8) * 255).convert("1"),
    }
    for name, im in cases.items():
        im.save(tmp_path / name)
        out = decode(_item(tmp_path / name))
        assert out.mode == "RGB" and out.size == (30, 20), name
    sixteen = np.asarray(decode(_item(tmp_path / "sixteen.png")))
    assert sixteen.max() == 255 and sixteen.min() == 0  # scaled by its range, not clipped
    white = Image.new("RGBA", (4, 4), (10, 20, 30, 0))
    white.save(tmp_path / "clear.png")
    assert np.all(np.asarray(decode(_item(tmp_path / "clear.png"))) == 255)  # transparent -> white


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    im = Image.new("RGB", (40, 20), (200, 10, 10))
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    im.save(tmp_path / "rot.jpg", exif=exif.tobytes())
    assert decode(_item(tmp_path / "rot.jpg")).size == (20, 40)


def test_tiny_and_huge_images(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    Image.new("RGB", (2, 3), (1, 2, 3)).save(tmp_path / "tiny.png")
    pre = Preprocess((32, 32), 36, (0.5,) * 3, (0.5,) * 3)
    assert pre.tensor(decode(_item(tmp_path / "tiny.png"))).shape == (3, 32, 32)
    Image.new("RGB", (4000, 3000), (9, 9, 9)).save(tmp_path / "huge.jpg", quality=50)
    assert decode(_item(tmp_path / "huge.jpg"), target=224).size == (4000, 3000)  # 12 MP: in full, as timm/HF do
    monkeypatch.setattr(decoding, "DRAFT_PIXELS", 10_000_000)
    big = decode(_item(tmp_path / "huge.jpg"), target=224)
    assert 448 <= min(big.size) < 3000  # over DRAFT_PIXELS: reduced scale, still >= 2x what the model needs


def test_broken_files_raise_naming_the_file(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), (5, 5, 5)).save(buf, "JPEG")
    (tmp_path / "truncated.jpg").write_bytes(buf.getvalue()[:200])
    (tmp_path / "garbage.png").write_bytes(b"not an image at all")
    for name in ("truncated.jpg", "garbage.png"):
        with pytest.raises(ImageDecodeError, match=name):
            decode(_item(tmp_path / name))


def test_folder_ids_are_sorted_relative_paths_and_limit_is_stable(tmp_path: Path) -> None:
    for rel in ("b/2.png", "a.png", "b/1.jpeg", "c.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    src = image_source(str(tmp_path))
    assert [it.id for it in src.items] == ["a.png", "b/1.jpeg", "b/2.png"]
    assert [it.id for it in image_source(f"folder:{tmp_path}", limit=2).items] == ["a.png", "b/1.jpeg"]


def test_imagenet_val_ids_are_file_stems(tmp_path: Path) -> None:
    for rel in ("n01/ILSVRC2012_val_00000002.JPEG", "n02/ILSVRC2012_val_00000001.JPEG"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    ids = [it.id for it in image_source(f"imagenet-val:{tmp_path}").items]
    assert ids == ["ILSVRC2012_val_00000001", "ILSVRC2012_val_00000002"]


def test_empty_and_missing_folders_say_so(tmp_path: Path) -> None:
    with pytest.raises(EmptyImageSourceError, match="no images in"):
        image_source(str(tmp_path))
    with pytest.raises(EmptyImageSourceError, match="ILSVRC2012"):
        image_source(f"imagenet-val:{tmp_path / 'nope'}")


def test_skimage_photographs_decode() -> None:
    src = image_source("skimage")
    assert len(src) >= 20 and src.items[0].id == "skimage:astronaut"
    for it in src.items:
        assert decode(it).mode == "RGB"


def test_preprocessing_follows_the_model() -> None:
    import timm
    from transformers import CLIPImageProcessor, ViTImageProcessor

    pre = _timm_preprocess(timm.create_model("vit_base_patch16_224", pretrained=False))
    assert (pre.crop, pre.resize, pre.mean) == ((224, 224), 248, (0.5, 0.5, 0.5))  # crop_pct 0.9
    vit = _hf_preprocess(ViTImageProcessor())
    assert (vit.crop, vit.resize, vit.interpolation) == ((224, 224), (224, 224), "bilinear")  # squashed to 224x224
    clip = _hf_preprocess(CLIPImageProcessor())
    assert (clip.crop, clip.resize) == ((224, 224), 224) and clip.mean[0] == pytest.approx(0.4815, abs=1e-4)
    size, box = clip.geometry(448, 300)  # shorter side to 224, then the centre 224 x 224
    assert size == (334, 224) and box == (55, 0, 279, 224)


def test_synthetic_source_generates_the_same_images_every_time() -> None:
    """``synthetic:N``: N noise images, no files, ids in order, each the same pixels (and digest) on every read."""
    from qkdissect.data.decoding import decode
    from qkdissect.data.sources import image_source, item_sha256
    from qkdissect.errors import QKDissectError

    src = image_source("synthetic:3")
    assert [it.id for it in src.items] == ["synthetic:000000000", "synthetic:000000001", "synthetic:000000002"]
    a, b = (decode(it) for it in src.items[:2])
    assert a.size == (64, 64) and a.tobytes() != b.tobytes() and decode(src.items[0]).tobytes() == a.tobytes()
    assert item_sha256(src.items[0]) == item_sha256(image_source("synthetic:5").items[0])
    for bad in ("synthetic:0", "synthetic:x"):
        with pytest.raises(QKDissectError, match="synthetic:N"):
            image_source(bad)
