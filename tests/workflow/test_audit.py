"""`qkdissect audit` after a real workflow run: tamper with each kind of input (a weight byte, an image, a
notebook, the config) and the audit names exactly the artefacts made from it, and nothing else; a figure whose
provenance is gone, a store whose chunks changed or are gone, results behind a link; and the workflow reruns
exactly what the audit flags."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from qkdissect.provenance.crate import write_crate
from qkdissect.provenance.records import git_state, tree_sha256
from tests.helpers import REPO, make_tiny_vit, write_photos
from tests.helpers.weights import flip
from tests.helpers.workflow import snakemake, write_config

A, B = "tiny-a", "tiny-b"


def audit(results: Path, *extra: str) -> tuple[int, dict[str, dict[str, Any]]]:
    """Run the CLI as a user does; return its exit status and {artefact path relative to results: entry}."""
    args = [sys.executable, "-m", "qkdissect", "audit", str(results), "--json", *extra]
    if git_state().get("dirty"):  # a developer's checkout with uncommitted changes; CI's is clean
        args.append("--allow-dirty")
    r = subprocess.run(args, capture_output=True, text=True, cwd=results.parent, timeout=300)
    assert r.returncode in (0, 1), r.stderr
    entries = json.loads(r.stdout)
    return r.returncode, {str(Path(e["path"]).relative_to(results.resolve())): e for e in entries}


def not_ok(entries: dict[str, dict[str, Any]]) -> set[str]:
    return {p for p, e in entries.items() if e["status"] != "ok"}


@contextmanager
def tampered(path: Path, change: Any) -> Iterator[None]:
    """Change a file for the duration of the block, then put the original back (content and all)."""
    backup = path.with_name(path.name + ".orig")
    shutil.copy2(path, backup)
    try:
        change(path)
        yield
    finally:
        shutil.move(backup, path)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A workflow run on a copy of the workflow and notebooks (so a test may edit a notebook): two tiny random
    ViTs, six photographs; Fig. 3 of both, Fig. S4 (projections) of tiny-a."""
    base = tmp_path_factory.mktemp("audit")
    repo = base / "repo"
    repo.mkdir()
    for name in ("workflow", "notebooks", "config"):
        shutil.copytree(REPO / name, repo / name)
    shutil.copy2(REPO / "Snakefile", repo / "Snakefile")
    (repo / "src").symlink_to(REPO / "src")
    photos = base / "photos"
    write_photos(photos, n=6)
    cfg = write_config(
        base,
        {
            "models": {A: {"spec": make_tiny_vit(base / "wa")}, B: {"spec": make_tiny_vit(base / "wb", depth=2)}},
            "images": {"photos": {"source": f"folder:{photos}"}},
            "projections": {"images": "photos", "batch_size": 4},
            "analysis": {"device": "cpu"},
            "figures": {"fig3": [A, B], "s1": [], "s2": [], "s4": [A], "fig2": None, "fig6": None},
        },
    )
    work = base / "run"
    snakemake(work, "--cores", "2", config=cfg, snakefile=repo / "Snakefile")
    return {"work": work, "repo": repo, "config": cfg, "photos": photos, "weights_b": base / "wb/tiny.safetensors"}


FIG3 = {f"figures/fig3_{v}_cosine.provenance.json" for v in ("weighted", "unweighted")}
S4 = {"figures/s4_anisotropy.provenance.json"}
CLAIMS = {"claims/claims.provenance.json"}  # evaluated on the Fig. 3 scores and the S4 projections
ATLAS_PAGE = {"atlas/atlas.provenance.json"}  # the mode atlas of tiny-a (the projected model)
ATLAS = {f"atlas_maps/{A}/photos.zarr"} | ATLAS_PAGE  # made from its modes and projections


def test_a_fresh_run_audits_clean(run: dict[str, Path]) -> None:
    status, entries = audit(run["work"] / "results")
    assert status == 0, {p: e["findings"] for p, e in entries.items() if e["status"] != "ok"}
    kinds = {e["kind"] for e in entries.values()}
    assert {"weights manifest", "modes/v1", "scores/v1", "projections/v1", "figure", "atlas/v1", "atlas"} <= kinds
    # manifests, modes, scores, projections, figures, the claims page, the atlas maps store, the mode atlas, and the
    # RO-Crate (the run's config and workflow it lists; the executed notebooks are checked with their figures)
    assert len(entries) == 2 + 2 + 2 + 1 + 3 + 1 + 2 + 1
    assert entries[next(iter(CLAIMS))]["status"] == "ok"
    # a store holds its own files only (the workflow removed Snakemake's markers) and opens as xarray users open it
    stores = sorted((run["work"] / "results").glob("**/*.zarr"))
    assert len(stores) == 6 and not [f for s in stores for f in s.rglob(".snakemake_timestamp")]
    code = "import sys, xarray as xr\nfor p in sys.argv[1:]: xr.open_zarr(p)"
    r = subprocess.run([sys.executable, "-W", "error", "-c", code, *map(str, stores)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]


def test_an_edited_weight_byte_flags_that_model_and_what_was_made_from_it(run: dict[str, Path]) -> None:
    with tampered(run["weights_b"], flip):
        status, entries = audit(run["work"] / "results")
    assert status == 1
    assert not_ok(entries) == {f"weights/{B}.json", f"modes/{B}.zarr", f"scores/{B}.zarr"} | FIG3 | CLAIMS
    assert any("tiny.safetensors: sha256" in f["message"] for f in entries[f"modes/{B}.zarr"]["findings"])
    assert entries[f"scores/{B}.zarr"]["status"] == "changed-input"  # through the modes store it was made from
    # a weights file that is gone is a missing input
    moved = run["weights_b"].with_name("away")
    run["weights_b"].rename(moved)
    try:
        _, entries = audit(run["work"] / "results")
    finally:
        moved.rename(run["weights_b"])
    assert entries[f"weights/{B}.json"]["status"] == "missing-input"


def test_a_replaced_image_flags_the_projections_and_their_figure(run: dict[str, Path]) -> None:
    target = run["photos"] / "photo03.png"

    def replace(p: Path) -> None:
        Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(p)

    with tampered(target, replace):
        status, entries = audit(run["work"] / "results")
    assert status == 1
    assert not_ok(entries) == {f"projections/{A}/photos.zarr"} | S4 | CLAIMS | ATLAS
    messages = [f["message"] for f in entries[f"projections/{A}/photos.zarr"]["findings"]]
    assert any("1 changed (photo03.png)" in m for m in messages), messages
    # an image added to the folder changes the set that was projected
    extra = run["photos"] / "photo99.png"
    Image.fromarray(np.zeros((40, 48, 3), np.uint8)).save(extra)
    try:
        _, entries = audit(run["work"] / "results")
    finally:
        extra.unlink()
    assert not_ok(entries) == {f"projections/{A}/photos.zarr"} | S4 | CLAIMS | ATLAS
    assert any("1 added (photo99.png)" in f["message"] for f in entries[f"projections/{A}/photos.zarr"]["findings"])


def test_an_edited_notebook_flags_its_figure_only(run: dict[str, Path]) -> None:
    nb = run["repo"] / "notebooks/s4_anisotropy.ipynb"

    def edit(p: Path) -> None:
        data = json.loads(p.read_text())
        data["cells"].append({"cell_type": "markdown", "metadata": {}, "source": ["an edit"]})
        p.write_text(json.dumps(data))

    with tampered(nb, edit):
        status, entries = audit(run["work"] / "results")
    assert status == 1 and not_ok(entries) == S4
    assert "notebook" in entries[next(iter(S4))]["findings"][0]["message"]


def test_a_config_change_flags_the_artefacts_of_that_section(run: dict[str, Path]) -> None:
    import yaml

    def reorder(p: Path) -> None:
        cfg = yaml.safe_load(p.read_text())
        cfg["figures"]["fig3"] = [B, A]
        p.write_text(yaml.safe_dump(cfg))

    with tampered(run["config"], reorder):
        status, entries = audit(run["work"] / "results")
    assert status == 1 and not_ok(entries) == FIG3 | CLAIMS  # the claims record figures.fig3 too
    msg = entries[sorted(FIG3)[0]]["findings"][0]["message"]
    assert msg.startswith("config figures/fig3 changed") and '["tiny-b", "tiny-a"]' in msg

    def unrelated(p: Path) -> None:  # a comment or another section: the file's digest changes, no artefact does
        p.write_text(p.read_text() + "# a note\n")

    with tampered(run["config"], unrelated):
        status, _ = audit(run["work"] / "results")
    assert status == 0


def test_an_edited_figure_a_different_code_version_and_a_dirty_tree(run: dict[str, Path]) -> None:
    png = run["work"] / "results/figures/s4_anisotropy.png"
    with tampered(png, lambda p: p.write_bytes(p.read_bytes() + b"\0")):
        _, entries = audit(run["work"] / "results")
    assert entries["figures/s4_anisotropy.provenance.json"]["status"] == "modified"

    sidecar = run["work"] / "results/figures/s4_anisotropy.provenance.json"

    def other_code(p: Path) -> None:
        rec = json.loads(p.read_text())
        rec["code"]["source_sha256"] = "0" * 64
        rec["code"]["git"]["dirty"] = True
        p.write_text(json.dumps(rec))

    with tampered(sidecar, other_code):
        r = subprocess.run(
            [sys.executable, "-m", "qkdissect", "audit", "results"],
            capture_output=True,
            text=True,
            cwd=run["work"],
        )
    assert r.returncode == 1
    line = next(x for x in r.stdout.splitlines() if "s4_anisotropy" in x)
    assert line.startswith("different-code")
    assert "uncommitted changes" in r.stdout and "made by qkdissect source 000000000000…" in r.stdout


def test_a_leftover_of_a_killed_write_is_reported_but_not_a_result(run: dict[str, Path]) -> None:
    left = run["work"] / f"results/modes/{A}.zarr.tmp-deadbeef"
    left.mkdir()
    (left / "zarr.json").write_text("{}")
    try:
        status, entries = audit(run["work"] / "results")
    finally:
        shutil.rmtree(left)
    assert status == 0 and entries[f"modes/{A}.zarr.tmp-deadbeef"]["kind"] == "partial write"


def ids(value: Any) -> set[str]:
    """The ids of a JSON-LD reference or list of references (RO-Crate writes a single one without a list)."""
    return {r["@id"] for r in (value if isinstance(value, list) else [value])}


def test_figure_provenance_page_and_ro_crate(run: dict[str, Path]) -> None:
    """The reader's record: per figure an HTML page (in the Snakemake report) with models, data, parameters and
    code; the results folder as an RO-Crate whose actions link every artefact to its inputs."""
    results = run["work"] / "results"
    page = (results / "figures/s4_anisotropy.provenance.html").read_text()
    weights_a = json.loads((results / f"weights/{A}.json").read_text())["files"][0]["sha256"]
    for text in (A, weights_a[:16], f"folder:{run['photos']}", "<td>6</td>", "Parameters", "source sha256"):
        assert text in page, text
    assert B not in page  # S4 shows tiny-a only
    crate = json.loads((results / "ro-crate-metadata.json").read_text())
    graph = {e["@id"]: e for e in crate["@graph"]}
    assert len(graph) == len(crate["@graph"])  # ids are unique
    assert graph["ro-crate-metadata.json"]["about"] == {"@id": "./"}
    assert "https://w3id.org/ro/crate/1.1" in ids(graph["ro-crate-metadata.json"]["conformsTo"])
    root = graph["./"]
    parts = ids(root["hasPart"])
    assert {
        f"modes/{A}.zarr/",
        f"projections/{A}/photos.zarr/",
        "figures/s4_anisotropy.png",
        "claims/claims.json",
    } <= parts
    assert all(p in graph for p in parts)
    # one action per job (10 + the claims page, the atlas maps store and the mode atlas), and the run's
    actions = [graph[m] for m in ids(root["mentions"]) - {"#run"}]
    assert len(actions) == 13 and all(a["@type"] == "CreateAction" for a in actions)
    assert graph["#run"]["instrument"] == root["mainEntity"] == {"@id": "run/workflow/Snakefile"}
    made = {r: a for a in actions for r in ids(a["result"])}
    proj_inputs = ids(made[f"projections/{A}/photos.zarr/"]["object"])
    assert f"modes/{A}.zarr/" in proj_inputs and any(i.startswith("#images-") for i in proj_inputs)
    assert graph[f"modes/{A}.zarr/"]["sha256"] == tree_sha256(results / f"modes/{A}.zarr")
    for a in actions:
        assert ids(a["object"]) <= set(graph) and a["agent"]["@id"] in graph
        assert graph[a["instrument"]["@id"]]["@type"] == "SoftwareApplication" and a["description"]


def test_ro_crate_validates_offline_with_no_path_of_the_machine(run: dict[str, Path]) -> None:
    """roc-validator (workflow-run-crate and the profiles it builds on, offline) finds no REQUIRED or RECOMMENDED
    issue; every id is inside the crate, the weights and source notebooks outside it are contextual entities with
    their sha256 and role; the executed notebooks, the config and the workflow are in the crate; parameters are
    PropertyValues."""
    from qkdissect.provenance.crate_check import validate_crate

    results = run["work"] / "results"
    issues = validate_crate(results)
    assert issues == [], "\n".join(map(str, issues))
    text = (results / "ro-crate-metadata.json").read_text()
    for machine in ("file://", str(run["work"].parent), str(REPO), str(Path.home())):
        assert machine not in text, machine
    graph = {e["@id"]: e for e in json.loads(text)["@graph"]}
    parts = ids(graph["./"]["hasPart"])
    for part in parts:
        assert not part.startswith(("/", "#")) and (results / part).exists(), part
    assert {"notebooks/s4_anisotropy.ipynb", "run/workflow/", "run/config/config.yaml"} <= parts
    assert (results / "run/config/config.yaml").read_bytes() == run["config"].read_bytes()
    weights = tree_sha256(run["weights_b"])
    (outside,) = [e for e in graph.values() if e.get("sha256") == weights]
    assert outside["@id"].startswith("#") and outside["roleName"] == "weights" and outside["@id"] not in parts
    notebooks = [e for e in graph.values() if e.get("roleName") == "notebook"]
    assert notebooks and all(e["name"].endswith(".ipynb") and len(e["sha256"]) == 64 for e in notebooks)
    s4 = graph["#make-figures/s4_anisotropy.provenance.json"]
    params = {graph[o]["name"] for o in ids(s4["object"]) if graph[o]["@type"] == "PropertyValue"}
    assert "config figures/s4" in params
    assert graph["./"]["license"] == {"@id": "https://spdx.org/licenses/MIT"} and "author" in graph["./"]


def test_report_in_the_paper_order_each_figure_linked_to_its_provenance(run: dict[str, Path], tmp_path: Path) -> None:
    """The Snakemake report lists the categories as the paper does (numbered: the report sorts them by name), each
    figure's provenance page in the figure's own category and linked from its caption; the landing page shows the
    analysis settings as text, not as a Python dict."""
    report = tmp_path / "report.html"
    snakemake(run["work"], "--report", str(report), config=run["config"], snakefile=run["repo"] / "Snakefile")
    text = report.read_text()
    found = re.search(r"var categories = (\{.*?\});", text)
    assert found, "no categories in the report"
    categories = json.loads(found.group(1))
    assert list(categories) == [
        "01 Fig. 3 layer cosine",
        "02 Fig. S4 anisotropy",
        "03 The paper's claims",
        "04 The mode atlas",
    ]  # fmt: skip: only the categories this run makes are numbered, in the paper's order, without gaps
    assert sorted(categories["02 Fig. S4 anisotropy"]["Other"]) == [
        "results/figures/s4_anisotropy.png",
        "results/figures/s4_anisotropy.provenance.html",
    ]
    for stem in ("fig3_weighted_cosine", "fig3_unweighted_cosine", "s4_anisotropy"):
        assert f"showResultInfo('results/figures/{stem}.provenance.html')" in text  # the caption's link
    assert "Analysis settings: block_rtol = 0.001; device = cpu;" in text and "{'device'" not in text
    assert "showCategory('01%20Fig.%203%20layer%20cosine')" in text  # the landing page lists them in order


# ----------------------------------------------------------------------------------------- blind spots (issue 13)
@contextmanager
def moved_away(path: Path) -> Iterator[None]:
    """Move a file or folder aside for the duration of the block (as if deleted), then put it back."""
    aside = path.with_name(path.name + ".aside")
    path.rename(aside)
    try:
        yield
    finally:
        aside.rename(path)


CRATE = "ro-crate-metadata.json"
SIDECARS = ("figures/s4_anisotropy.provenance.json", "claims/claims.provenance.json")


def test_a_figure_or_claims_page_without_its_provenance_is_reported(run: dict[str, Path]) -> None:
    """Deleting a figure's sidecar made the figure vanish from the audit ("ok", exit 0)."""
    figures, claims = run["work"] / "results/figures", run["work"] / "results/claims"
    with moved_away(figures / "s4_anisotropy.provenance.json"), moved_away(claims / "claims.provenance.json"):
        status, entries = audit(run["work"] / "results")
        rerun = planned(run)
    assert status == 1 and not_ok(entries) == {"figures/s4_anisotropy.png", "claims/claims.json", CRATE}
    gone = {f["message"] for f in entries[CRATE]["findings"]}  # the crate lists every file with its digest
    assert gone == {f"{p}, listed in the crate, is gone" for p in SIDECARS}
    for name, kind in (("figures/s4_anisotropy.png", "figure"), ("claims/claims.json", "claims")):
        (finding,) = entries[name]["findings"]
        assert entries[name]["kind"] == kind and finding["status"] == "missing-input"
        assert (
            finding["message"].startswith("no provenance: its sidecar")
            and ".provenance.json is gone" in finding["message"]
        )
    assert "s4_anisotropy.pdf" in entries["figures/s4_anisotropy.png"]["findings"][0]["message"]
    assert artefacts(rerun) == {"results/" + p for p in S4 | CLAIMS}  # the workflow draws them again


def _chunk(store: Path) -> Path:
    return sorted((store / "U/c").rglob("*"), key=str)[-1]


def test_a_changed_or_missing_chunk_of_a_store_is_named(run: dict[str, Path]) -> None:
    """Overwriting a chunk of a modes store flagged its dependants but not the store; deleting one went unseen."""
    store = run["work"] / f"results/modes/{A}.zarr"
    chunk = _chunk(store)
    name = chunk.relative_to(store).as_posix()
    made_from_a = {f"scores/{A}.zarr", f"projections/{A}/photos.zarr"} | FIG3 | S4 | CLAIMS | ATLAS
    with tampered(chunk, lambda p: p.write_bytes(p.read_bytes()[:-1] + bytes([p.read_bytes()[-1] ^ 1]))):
        status, entries = audit(run["work"] / "results")
    assert status == 1 and not_ok(entries) == {f"modes/{A}.zarr"} | made_from_a
    assert entries[f"modes/{A}.zarr"]["status"] == "modified"
    assert {"status": "modified", "message": f"chunk {name} changed after the store was written"} in entries[
        f"modes/{A}.zarr"
    ]["findings"]
    with moved_away(chunk):
        status, entries = audit(run["work"] / "results")
        r = subprocess.run(
            [sys.executable, "-m", "qkdissect", "scores", str(store), "-o", str(run["work"] / "s.zarr")],
            capture_output=True,
            text=True,
        )
    assert (
        entries[f"modes/{A}.zarr"]["status"] == "missing-input" and not_ok(entries) == {f"modes/{A}.zarr"} | made_from_a
    )
    assert any(f"chunk {name} gone" in f["message"] for f in entries[f"modes/{A}.zarr"]["findings"])
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert f"is damaged: its chunk {name} is gone. Delete the store and make it again" in r.stderr
    assert not (run["work"] / "s.zarr").exists()


def test_files_foreign_to_a_store_and_stale_consolidated_metadata(run: dict[str, Path]) -> None:
    """Snakemake's empty marker at a store's root is not content (a run of the workflow as a module keeps it); the
    same name deeper in the store, or with something in it, is; the consolidated copy of the arrays' metadata that a
    plain xr.open_zarr reads must be their own metadata."""
    store = run["work"] / f"results/scores/{A}.zarr"
    was = store.stat()
    try:
        _foreign_files_and_stale_metadata(run, store)
    finally:  # the folder's time is the store's time for Snakemake: as it was, for the tests that follow
        os.utime(store, ns=(was.st_atime_ns, was.st_mtime_ns))


def _foreign_files_and_stale_metadata(run: dict[str, Path], store: Path) -> None:
    marker, deep = store / ".snakemake_timestamp", store / "cosine/.snakemake_timestamp"
    for path, text, flagged in ((marker, "", False), (marker, "x", True), (deep, "", True)):
        path.write_text(text)
        try:
            status, entries = audit(run["work"] / "results")
        finally:
            path.unlink()
        assert (entries[f"scores/{A}.zarr"]["status"] == "modified") == flagged, (path, text)
        if flagged:
            name = path.relative_to(store).as_posix()
            assert (
                entries[f"scores/{A}.zarr"]["findings"][0]["message"]
                == f"chunk {name} added after the store was written"
            )

    def relabel(p: Path) -> None:
        meta = json.loads(p.read_text())
        meta["consolidated_metadata"]["metadata"]["cosine"]["attributes"]["units"] = "m"
        p.write_text(json.dumps(meta))

    with tampered(store / "zarr.json", relabel):
        status, entries = audit(run["work"] / "results")
    assert status == 1 and entries[f"scores/{A}.zarr"]["status"] == "modified"
    assert "consolidated metadata (root zarr.json) of cosine is not the array's own" in str(entries[f"scores/{A}.zarr"])


def test_results_behind_a_link_and_an_empty_folder(run: dict[str, Path], tmp_path: Path) -> None:
    """results/ a link to a folder of another name elsewhere: relative records are read from the folder holding
    the link, not from the target's parent (which gave false missing inputs)."""
    results = run["work"] / "results"
    elsewhere = tmp_path / "scratch" / "run-1"
    elsewhere.parent.mkdir()
    results.rename(elsewhere)
    results.symlink_to(elsewhere, target_is_directory=True)
    try:
        status, entries = audit(results)
        crate = write_crate(results, [run["config"]], run["repo"] / "workflow").read_text()
    finally:
        results.unlink()
        elsewhere.rename(results)
    assert status == 0, {p: e["findings"] for p, e in entries.items() if e["status"] != "ok"}
    assert len(entries) == 14
    parts = ids(next(e for e in json.loads(crate)["@graph"] if e["@id"] == "./")["hasPart"])
    assert f"modes/{A}.zarr/" in parts and all((results / p).exists() for p in parts)  # ids inside the crate
    assert str(tmp_path) not in crate and str(run["work"]) not in crate
    empty = tmp_path / "empty"
    empty.mkdir()
    for folder in (empty, tmp_path / "nowhere"):
        r = subprocess.run([sys.executable, "-m", "qkdissect", "audit", str(folder)], capture_output=True, text=True)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert str(folder) in r.stderr and ("no artefacts under" in r.stderr or "no results folder" in r.stderr)


# ----------------------------------------------------------------------------------------- the workflow agrees
def planned(run: dict[str, Path], config: Path | None = None) -> set[str]:
    """The outputs of the jobs `snakemake -n` would run now (paths as the rules name them)."""
    r = snakemake(run["work"], "-n", config=config or run["config"], snakefile=run["repo"] / "Snakefile")
    out = r.stdout + r.stderr
    if "Nothing to be done" in out:
        return set()
    return {p.strip() for line in out.splitlines() if line.startswith("    output: ") for p in line[12:].split(",")}


def artefacts(outputs: set[str]) -> set[str]:
    """The outputs the audit lists: stores, weights manifests and provenance sidecars."""
    return {o for o in outputs if o.endswith((".zarr", ".provenance.json")) or o.startswith("results/weights/")}


def test_the_workflow_reruns_what_the_audit_flags(run: dict[str, Path], tmp_path: Path) -> None:
    """A changed weights file and a deleted intermediate store left Snakemake with "Nothing to be done" while the
    audit was red; a byte-identical config at another path reran every job."""
    assert planned(run) == set()
    same = tmp_path / "elsewhere" / "config.yaml"
    same.parent.mkdir()
    shutil.copy2(run["config"], same)
    assert planned(run, same) == set()  # the config's path is no part of a job

    with tampered(run["weights_b"], flip):
        _, entries = audit(run["work"] / "results")
        rerun = planned(run)
    assert artefacts(rerun) == {"results/" + p for p in not_ok(entries)}
    assert f"results/modes/{B}.zarr" in rerun and f"results/modes/{A}.zarr" not in rerun

    with moved_away(run["work"] / f"results/scores/{A}.zarr"):
        _, entries = audit(run["work"] / "results")
        rerun = planned(run)
    # made from the store that is gone; and the RO-Crate, which lists it
    assert not_ok(entries) == FIG3 | S4 | CLAIMS | ATLAS_PAGE | {"ro-crate-metadata.json"}
    (gone,) = entries["ro-crate-metadata.json"]["findings"]
    assert gone == {"status": "missing-input", "message": f"scores/{A}.zarr/, listed in the crate, is gone"}
    assert artefacts(rerun) == {f"results/scores/{A}.zarr"} | {"results/" + p for p in FIG3 | S4 | CLAIMS | ATLAS_PAGE}


def test_a_figure_option_or_a_models_style_changed_in_the_config_redraws_the_figure(run: dict[str, Path]) -> None:
    """`figures.null_lines` changed: the audit flags Fig. 3 (its config section) and Snakemake plans to redraw
    exactly what the audit flags; a model's colour changed: Snakemake redraws the figures that draw that model
    (Fig. 3, S4), and no pass."""
    import yaml

    def edit(section: str, change: Any) -> Any:
        def apply(p: Path) -> None:
            cfg = yaml.safe_load(p.read_text())
            change(cfg[section])
            p.write_text(yaml.safe_dump(cfg))

        return apply

    with tampered(run["config"], edit("figures", lambda f: f.__setitem__("null_lines", "both"))):
        _, entries = audit(run["work"] / "results")
        rerun = planned(run)
    assert not_ok(entries) >= FIG3 and artefacts(rerun) == {"results/" + p for p in not_ok(entries)}
    with tampered(run["config"], edit("models", lambda m: m[A].__setitem__("color", "tab:green"))):
        rerun = planned(run)
    assert artefacts(rerun) == {"results/" + p for p in FIG3 | S4}


# ----------------------------------------------------------------------------------------- integrity (issue 26)
@contextmanager
def times_kept(*paths: Path) -> Iterator[None]:
    """Put back the access and modification times of files or folders after the block (the workflow sets a changed
    artefact's time back; a folder's time changes with a file made in it): as they were, for the tests that follow."""
    was = {p: p.stat() for p in paths}
    try:
        yield
    finally:
        for p, st in was.items():
            os.utime(p, ns=(st.st_atime_ns, st.st_mtime_ns))


@contextmanager
def in_place(path: Path, change: Any) -> Iterator[None]:
    """Change a file in place for the duration of the block (no backup beside it, which a store would count as a
    file added to it), then write its original bytes back."""
    original = path.read_bytes()
    try:
        change(path)
        yield
    finally:
        path.write_bytes(original)


def dry_run(run: dict[str, Path]) -> tuple[set[str], str]:
    """The artefacts `snakemake -n` would make again now, and its stderr."""
    r = snakemake(run["work"], "-n", config=run["config"], snakefile=run["repo"] / "Snakefile")
    out = r.stdout + r.stderr
    jobs = {p.strip() for line in out.splitlines() if line.startswith("    output: ") for p in line[12:].split(",")}
    return artefacts(jobs), r.stderr


def test_a_store_whose_root_attributes_were_edited_is_flagged_refused_and_made_again(run: dict[str, Path]) -> None:
    """Item 9: `null_high` edited in a scores store's zarr.json (Fig. 3, S1 and the claims read it): the audit said
    the store was ok and flagged only what was made from it; `qkdissect claims` read the edited value."""
    store = run["work"] / f"results/scores/{A}.zarr"
    made_from = FIG3 | S4 | CLAIMS | ATLAS_PAGE

    def edit(p: Path) -> None:
        meta = json.loads(p.read_text())
        meta["attributes"]["null_high"] = 0.999
        p.write_text(json.dumps(meta, indent=2))

    out = run["work"] / "claims-check.json"
    with times_kept(store), in_place(store / "zarr.json", edit):
        status, entries = audit(run["work"] / "results")
        r = subprocess.run(
            [sys.executable, "-m", "qkdissect", "claims", "--stores", json.dumps({"scores": [str(store)]}), "-o",
             str(out)],
            capture_output=True, text=True, cwd=run["work"],
        )  # fmt: skip
        rerun, err = dry_run(run)
    assert status == 1 and entries[f"scores/{A}.zarr"]["status"] == "modified"
    assert not_ok(entries) == {f"scores/{A}.zarr"} | made_from
    assert {
        "status": "modified",
        "message": "attribute null_high changed after the store was written (root zarr.json): it does not open",
    } in entries[f"scores/{A}.zarr"]["findings"]
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert "is damaged: its attribute null_high changed after it was written. Delete the store and make it again" in (
        r.stderr
    )
    assert not out.exists()
    assert rerun == {f"results/scores/{A}.zarr"} | {"results/" + p for p in made_from}
    assert f"results/scores/{A}.zarr changed after it was made (attribute null_high changed" in err
    assert planned(run) == set()  # put back as it was: nothing to do


def test_a_byte_flipped_in_a_chunk_in_place_is_made_again_with_what_was_made_from_it(run: dict[str, Path]) -> None:
    """Item 10: the audit flagged the store, `snakemake -n` said "Nothing to be done" (the store folder's time, which
    Snakemake reads, does not change when a file inside it is rewritten)."""
    store = run["work"] / f"results/modes/{A}.zarr"
    chunk = _chunk(store)
    before = store.stat().st_mtime_ns

    def flip_a_bit(p: Path) -> None:
        data = bytearray(p.read_bytes())
        data[len(data) // 2] ^= 0x01
        p.write_bytes(bytes(data))

    with times_kept(store), in_place(chunk, flip_a_bit):
        assert store.stat().st_mtime_ns == before  # an edit in place: the store's own time is as it was
        _, entries = audit(run["work"] / "results")
        rerun, err = dry_run(run)
        again, _ = dry_run(run)  # the same on every start until it is made again
    flagged = {"results/" + p for p in not_ok(entries)}
    assert entries[f"modes/{A}.zarr"]["status"] == "modified" and len(flagged) > 5
    assert rerun == flagged == again
    name = chunk.relative_to(store).as_posix()
    (line,) = [x for x in err.splitlines() if "changed after it was made" in x]
    assert f"results/modes/{A}.zarr changed after it was made (chunk {name} changed after the store was" in line
    assert "snakemake makes it again" in line
    assert store.exists() and planned(run) == set()  # nothing was deleted; put back, nothing to do


def test_an_edited_executed_notebook_is_flagged_and_drawn_again(run: dict[str, Path]) -> None:
    """Item 11: results/notebooks/*.ipynb is in the RO-Crate with its sha256, but the audit never checked it."""
    results = run["work"] / "results"
    nb = results / "notebooks/s4_anisotropy.ipynb"
    sidecar = results / "figures/s4_anisotropy.provenance.json"

    def edit(p: Path) -> None:
        data = json.loads(p.read_text())
        data["cells"][-1].setdefault("outputs", []).append({"output_type": "stream", "name": "stdout", "text": "x"})
        p.write_text(json.dumps(data))

    with times_kept(sidecar), in_place(nb, edit):
        status, entries = audit(results)
        rerun, _ = dry_run(run)
    assert status == 1 and not_ok(entries) == S4
    (finding,) = entries[next(iter(S4))]["findings"]
    assert finding["status"] == "modified"
    assert finding["message"].startswith(
        "its executed notebook notebooks/s4_anisotropy.ipynb is not the one the RO-Crate lists (sha256 "
    )
    assert rerun == {"results/" + p for p in S4}
    with moved_away(nb):
        _, entries = audit(results)
    assert entries[next(iter(S4))]["status"] == "missing-input"
    # the run's config copied into the crate is listed with its sha256 too
    copied = results / "run/config/config.yaml"
    with tampered(copied, lambda p: p.write_text(p.read_text() + "# edited\n")):
        status, entries = audit(results)
    assert status == 1 and not_ok(entries) == {"ro-crate-metadata.json"}
    assert entries["ro-crate-metadata.json"]["findings"][0]["message"].startswith(
        "run/config/config.yaml was changed after the crate was written"
    )


def test_an_unknown_store_or_notebook_in_the_results_is_reported(run: dict[str, Path]) -> None:
    """From the issue's list: a `.zarr` in results/modes/ that no qkdissect command wrote was skipped in silence."""
    results = run["work"] / "results"
    v3, v2, nb = results / "modes/stray.zarr", results / "modes/old.zarr", results / "notebooks/extra.ipynb"
    with (
        times_kept(results / "modes", results / "notebooks"),
        in_place(results / "ro-crate-metadata.json", lambda p: None),
    ):
        v3.mkdir()
        (v3 / "zarr.json").write_text(json.dumps({"zarr_format": 3, "node_type": "group", "attributes": {}}))
        v2.mkdir()
        (v2 / ".zgroup").write_text('{"zarr_format": 2}')
        nb.write_text("{}")
        try:
            status, entries = audit(results)
            crate = json.loads(write_crate(results).read_text())
        finally:
            shutil.rmtree(v3), shutil.rmtree(v2), nb.unlink()
    assert status == 1 and not_ok(entries) == {"modes/stray.zarr", "modes/old.zarr", "notebooks/extra.ipynb"}
    assert {entries[p]["status"] for p in not_ok(entries)} == {"unknown"}
    assert entries["modes/stray.zarr"]["kind"] == "unknown store"
    (finding,) = entries["modes/stray.zarr"]["findings"]
    assert finding["message"].startswith("a Zarr store without qkdissect's schema attribute: no qkdissect command")
    assert entries["modes/old.zarr"]["findings"][0]["message"].startswith("a Zarr v2 store")
    assert "delete it" in entries["notebooks/extra.ipynb"]["findings"][0]["message"]
    assert not [e for e in crate["@graph"] if "stray" in e["@id"] or "old.zarr" in e["@id"]]  # not results


def test_config_and_notebook_are_recorded_from_the_workflows_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Item 12: a config file and a notebook were recorded by absolute path: a checkout moved with its results had
    them "gone"; results copied into another checkout were checked against the first checkout's notebook."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from qkdissect.provenance.audit import audit as audit_api
    from qkdissect.provenance.figures import figure_record, save_figure
    from qkdissect.provenance.records import CONFIG_FILES_ENV, CONFIG_KEYS_ENV

    def checkout(where: Path, cells: str) -> Path:
        (where / "notebooks").mkdir(parents=True)
        (where / "notebooks/f.ipynb").write_text(json.dumps({"cells": [cells]}))
        (where / "config").mkdir()
        (where / "config/config.yaml").write_text("figures: {f: [m]}\n")
        return where

    first = checkout(tmp_path / "first", "plot")
    monkeypatch.chdir(first)
    monkeypatch.setenv(CONFIG_FILES_ENV, str(first / "config/config.yaml"))
    monkeypatch.setenv(CONFIG_KEYS_ENV, '[["figures", "f"]]')
    record = figure_record("f", {}, [], notebook=first / "notebooks/f.ipynb")
    fig = plt.figure()
    save_figure(fig, first / "results/figures/f.png", provenance=record)
    assert record["notebook"]["path"] == "notebooks/f.ipynb"
    assert record["config"]["files"][0]["path"] == "config/config.yaml"
    monkeypatch.chdir(tmp_path)

    moved = first.rename(tmp_path / "moved")
    assert [a.status for a in audit_api(moved / "results", allow_dirty=True)] == ["ok"]

    other = checkout(tmp_path / "other", "another plot")
    (other / "config/config.yaml").write_text("figures: {f: [n]}\n")
    shutil.copytree(moved / "results", other / "results")
    (art,) = audit_api(other / "results", allow_dirty=True)
    messages = [f.message for f in art.findings]
    assert art.status == "changed-input" and any(m.startswith("notebook notebooks/f.ipynb: sha256") for m in messages)
    assert 'config figures/f changed: ["m"] -> ["n"]' in messages
