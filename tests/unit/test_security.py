"""Files outside the roots a user configured: no file outside an image folder, a mask dataset, a text corpus or the
data directory is read, hashed or recorded (names that would reach a shell: tests/workflow/test_security.py)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from qkdissect.data.corpora import corpus
from qkdissect.data.files import OutsideRootError, list_files
from qkdissect.data.masks import mask_dataset
from qkdissect.data.sources import image_source
from qkdissect.errors import WeightsUnavailableError
from qkdissect.models import parse_spec, resolve_weights
from tests.helpers import write_photos


# ----------------------------------------------------------------------------------------- files outside roots
def _link(link: Path, target: Path) -> None:
    link.parent.mkdir(parents=True, exist_ok=True)
    os.symlink(target, link)


def test_image_folder_skips_and_names_links_that_leave_it(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    photos = tmp_path / "photos"
    write_photos(photos, n=3)
    secret = tmp_path / "elsewhere" / "secret.png"
    secret.parent.mkdir()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(secret)
    _link(photos / "shadow.jpg", Path("/etc/shadow"))
    _link(photos / "sub" / "secret.png", secret)
    _link(photos / "again.png", photos / "photo00.png")  # a link that stays inside is an image like any other
    with caplog.at_level("WARNING", logger="qkdissect"):
        src = image_source(f"folder:{photos}")
    ids = [it.id for it in src.items]
    assert ids == ["again.png", "photo00.png", "photo01.png", "photo02.png"]
    assert src.outside == ["shadow.jpg", "sub/secret.png"]
    assert src.describe()["links_outside_skipped"] == ["shadow.jpg", "sub/secret.png"]
    assert "skipped 2 links that leave the folder" in caplog.text and "/etc/shadow" in caplog.text


def test_linked_directories_are_not_entered(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    write_photos(outside, n=2)
    root = tmp_path / "root"
    write_photos(root, n=1)
    _link(root / "linked", outside)
    listing = list_files(root, {".png"})
    assert [p.name for p in listing.files] == ["photo00.png"]


def test_mask_dataset_and_corpus_skip_links_that_leave_them(tmp_path: Path) -> None:
    voc = tmp_path / "voc"
    voc.mkdir()
    img = np.zeros((16, 16, 3), np.uint8)
    Image.fromarray(img).save(voc / "1_image.png")
    Image.fromarray(img).save(voc / "1_target.png")
    secret = tmp_path / "secret.png"
    Image.fromarray(img).save(secret)
    _link(voc / "2_image.png", secret)
    _link(voc / "2_target.png", secret)
    ds = mask_dataset(f"voc:{voc}")
    assert [it.id for it in ds.items] == ["1"]
    assert all(secret not in it.files for it in ds.items)
    texts = tmp_path / "texts"
    texts.mkdir()
    (texts / "a.txt").write_text("one two three four five six seven eight nine ten eleven twelve thirteen\n")
    other = tmp_path / "other.txt"
    other.write_text("secret " * 20)
    _link(texts / "b.txt", other)
    c = corpus(f"file:{texts}")
    assert [p.id for p in c.passages] == ["a.txt#0"]


@pytest.mark.parametrize(
    "spec", ["simmim:../../../../etc/shadow", "ijepa:../../x.pth.tar", "timm:vit_tiny_patch16_224@../w.pth"]
)
def test_relative_weights_paths_never_lead_above_their_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, spec: str
) -> None:
    monkeypatch.setenv("QKDISSECT_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("QKDISSECT_PATHS_FROM_CONFIG", "1")  # a spec from a config (a typed one may climb)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(OutsideRootError, match="leads outside"):
        parse_spec(spec)


def test_a_file_that_is_not_a_weights_file_is_neither_hashed_nor_recorded(tmp_path: Path) -> None:
    """An absolute path is the user's choice, but /etc/shadow is no checkpoint: refused before it is read."""
    with pytest.raises(WeightsUnavailableError, match="is not a weights file"):
        resolve_weights("simmim:/etc/shadow")
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights")
    with pytest.raises(WeightsUnavailableError, match="is not a weights file"):
        resolve_weights(f"timm:vit_tiny_patch16_224@{notes}")
