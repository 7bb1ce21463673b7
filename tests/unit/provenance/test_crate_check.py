"""Validating a crate: one pass of roc-validator against the crate's profile and the profiles it builds on, offline,
each issue once and named with the profile of its check."""

from __future__ import annotations

import json
from pathlib import Path

from qkdissect.provenance.crate_check import PROCESS_PROFILE, PROFILE, WORKFLOW_RUN_CRATE, crate_profile, validate_crate

CONTEXT = "https://w3id.org/ro/crate/1.1/context"


def write_crate(folder: Path, root: dict[str, object]) -> Path:
    """A crate of one file, its root Data Entity ``root`` (less its id, type and parts)."""
    folder.mkdir()
    (folder / "a.txt").write_text("a\n")
    graph = [
        {"@id": "ro-crate-metadata.json", "@type": "CreativeWork", "about": {"@id": "./"},
         "conformsTo": {"@id": "https://w3id.org/ro/crate/1.1"}},
        {"@id": "./", "@type": "Dataset", "hasPart": [{"@id": "a.txt"}], **root},
        {"@id": "a.txt", "@type": "File", "name": "a"},
    ]  # fmt: skip
    (folder / "ro-crate-metadata.json").write_text(json.dumps({"@context": CONTEXT, "@graph": graph}))
    return folder


def test_an_issue_of_the_base_profile_is_found_once_and_named_with_its_profile(tmp_path: Path) -> None:
    """The root lacks the license and datePublished that RO-Crate 1.1 requires: validating the crate's profile
    (process-run-crate, which builds on ro-crate-1.1) finds each once, as ro-crate-1.1's."""
    crate = write_crate(tmp_path / "c", {"name": "c", "description": "a crate"})
    assert crate_profile(crate) == PROCESS_PROFILE
    issues = validate_crate(crate, severity="REQUIRED")
    checks = [i.check for i in issues]
    assert {"ro-crate-1.1_8.3", "ro-crate-1.1_8.4"} <= set(checks) and len(checks) == len(set(checks))
    assert {i.profile for i in issues if i.check.startswith("ro-crate-1.1_")} == {"ro-crate-1.1"}


def test_the_profile_follows_what_the_crate_says_it_conforms_to(tmp_path: Path) -> None:
    said = {"conformsTo": [{"@id": WORKFLOW_RUN_CRATE}]}
    assert crate_profile(write_crate(tmp_path / "w", said)) == PROFILE
    assert crate_profile(write_crate(tmp_path / "p", {})) == PROCESS_PROFILE
    assert crate_profile(tmp_path / "none") == PROFILE  # no metadata (yet): the workflow's
