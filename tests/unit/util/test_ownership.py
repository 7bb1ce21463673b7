"""What an output path may replace (qkdissect.util.ownership), told apart without opening anything: a store's kind
from its root metadata alone, a page by its provenance sidecar, a file by its first bytes; another kind is replaced
only with --force, a folder of other files never."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from qkdissect.util.ownership import (
    ABSENT,
    EMPTY,
    OutputExistsError,
    check_output,
    check_replace,
    forget_forced,
    holding_only,
    kind_of,
)


def store(path: Path, attrs: dict | None = None, meta: str | None = None) -> Path:
    """A folder with a Zarr v3 root metadata holding ``attrs`` (or the text ``meta``)."""
    path.mkdir()
    body = {"zarr_format": 3, "node_type": "group", **({"attributes": attrs} if attrs is not None else {})}
    (path / "zarr.json").write_text(meta if meta is not None else json.dumps(body))
    (path / "U").mkdir()
    return path


def test_a_store_is_told_by_the_kind_in_its_root_metadata(tmp_path: Path) -> None:
    assert kind_of(store(tmp_path / "m.zarr", {"qkdissect_schema": "modes/v3"})) == "a modes store"
    assert kind_of(store(tmp_path / "a.zarr", {"qkdissect_schema": "atlas/v1"})) == "an atlas store"
    assert kind_of(store(tmp_path / "o.zarr", {"qkdissect_schema": "same_object/v1"})) == "a same-object store"
    unknown = (("x", {"other": 1}, None), ("y", None, None), ("z", None, "{not json"), ("w", None, "[]"))
    for name, attrs, meta in unknown:  # no kind, no attributes, no JSON, no mapping
        assert kind_of(store(tmp_path / name, attrs, meta)) == "a zarr store of unknown kind", name


def test_pages_files_links_and_folders_in_words(tmp_path: Path) -> None:
    page = tmp_path / "atlas"
    page.mkdir()
    (page / "atlas.provenance.json").write_text("{}")
    (page / "index.html").write_text("<html></html>")
    files = {
        "f.png": b"\x89PNG\r\n\x1a\n....", "f.pdf": b"%PDF-1.7", "f.zip": b"PK\x03\x04", "f.json": b' \n{"a": 1}',
        "f.html": b"<!DOCTYPE html><p>", "f.txt": b"mode L8 H1 M0", "f.bin": b"\xff\xfe\x00\x80",
        "f.empty": b"",
    }  # fmt: skip
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "link").symlink_to(tmp_path / "f.png")
    (tmp_path / "empty").mkdir()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("a user's")
    got = {name: kind_of(tmp_path / name) for name in [*files, "atlas", "link", "empty", "mine", "none"]}
    assert got.pop("f.html") == "an HTML file" and got.pop("f.empty") == "an empty file"
    assert got == {
        "f.png": "a PNG file", "f.pdf": "a PDF file", "f.zip": "a ZIP file", "f.json": "a JSON file",
        "f.txt": "a text file", "f.bin": "a binary file",
        "atlas": "an atlas page", "link": "a symbolic link", "empty": EMPTY, "mine": None, "none": ABSENT,
    }  # fmt: skip


def test_another_kind_is_replaced_only_when_forced_and_a_folder_of_other_files_never(tmp_path: Path) -> None:
    old = store(tmp_path / "s.zarr", {"qkdissect_schema": "modes/v3"})
    new = store(tmp_path / "s.zarr.tmp-1", {"qkdissect_schema": "scores/v2"})
    same = store(tmp_path / "s.zarr.tmp-2", {"qkdissect_schema": "modes/v3"})
    check_replace(old, same)  # the same kind: always
    with pytest.raises(OutputExistsError, match="is a modes store, not a scores store: it is left as it is"):
        check_replace(old, new)
    with pytest.raises(OutputExistsError, match="is a modes store, not a scores store: give another output path"):
        check_output(old, "a scores store")
    try:
        check_output(os.path.relpath(old), "a scores store", force=True)  # remembered as an absolute path
        check_replace(old, new)
    finally:
        forget_forced()
    with pytest.raises(OutputExistsError):
        check_replace(old, new)  # forgotten when the command ends
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="never replaced, not even with --force"):
        check_output(tmp_path / "docs", "a scores store", force=True)
    with pytest.raises(OutputExistsError, match="holding 1 file or folder this command did not write"):
        check_replace(tmp_path / "docs", new)


def test_a_writers_own_folder_holds_only_its_names_and_is_no_link(tmp_path: Path) -> None:
    own = holding_only(["config", "workflow"])
    folder = tmp_path / "run"
    folder.mkdir()
    assert own(folder)  # emptied
    (folder / "config").write_text("")
    assert own(folder)  # failed half way
    (folder / "notes").write_text("")
    assert not own(folder)
    (tmp_path / "link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    assert not own(tmp_path / "link") and not own(tmp_path / "none")


def test_an_input_or_a_folder_holding_one_is_never_an_output(tmp_path: Path) -> None:
    inp = store(tmp_path / "m.zarr", {"qkdissect_schema": "modes/v3"})
    with pytest.raises(OutputExistsError, match="is an input of this command"):
        check_output(inp, "a modes store", inputs=[inp], force=True)
    with pytest.raises(OutputExistsError, match="holds an input of this command"):
        check_output(tmp_path, "a modes store", inputs=[inp], force=True)
    with pytest.raises(OutputExistsError, match="lies inside the input"):
        check_output(inp / "s.zarr", "a scores store", inputs=[inp])
