"""The mode atlas's place in a results folder (:mod:`qkdissect.website`): its page, its data folder and its
provenance sidecar, whose record lists both under ``outputs`` (``qkdissect audit`` re-hashes them; an atlas whose
sidecar is gone is reported)."""

from __future__ import annotations

from pathlib import Path

#: the atlas's page, its data folder and its provenance sidecar, inside the atlas folder
INDEX = "index.html"
DATA = "data"
SIDECAR = "atlas.provenance.json"
#: a file of every atlas's data folder: how the audit knows an atlas folder whose sidecar is gone
MARKER = f"{DATA}/app.js"


def is_atlas(folder: Path) -> bool:
    """Whether ``folder`` holds an atlas (its page and data), with or without its sidecar."""
    return (folder / INDEX).is_file() and (folder / MARKER).is_file()
