"""Publishing a run: `qkdissect bundle` makes one deterministic zip of a results folder, every file's sha256 in its
RO-Crate (a Workflow Run Crate); `qkdissect fetch` brings it back from a Zenodo-shaped record served over HTTP,
verified before anything is written; `qkdissect run` on the fetched folder redraws only the figures, the claims
and the crate, pixel for pixel, without the weights, and the audit is clean. A tampered bundle writes nothing."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from qkdissect.provenance.records import git_state
from tests.helpers import REPO, make_tiny_vit, write_photos
from tests.helpers.workflow import job_counts, snakemake, workflow_path, write_config

A = "tiny-a"
RECORD = "7654321"


def cli(*args: str, cwd: Path | None = None, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m qkdissect ARGS` as a user runs it."""
    full = {**os.environ, "PATH": workflow_path(os.environ.get("PATH", "")), "HF_HUB_OFFLINE": "1", **(env or {})}
    cmd = [sys.executable, "-m", "qkdissect", *args]
    return subprocess.run(cmd, capture_output=True, text=True, cwd=cwd, env=full, timeout=600)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A workflow run of one tiny random ViT: its weights manifest, modes and scores stores, Fig. 3 (both
    variants, drawn from the scores: weights-only figures), the claims page and the RO-Crate; and its bundle."""
    base = tmp_path_factory.mktemp("bundle")
    photos = base / "photos"
    write_photos(photos, n=4)
    cfg = write_config(
        base,
        {
            "models": {A: {"spec": make_tiny_vit(base / "weights", depth=2)}},
            "images": {"photos": {"source": f"folder:{photos}"}},
            "projections": {"images": "photos", "batch_size": 4},
            "analysis": {"device": "cpu"},
            "figures": {"fig3": [A], "s1": [], "s2": [], "s4": [], "fig2": None, "fig6": None},
        },
    )
    work = base / "run"
    snakemake(work, "--cores", "2", config=cfg)
    r = cli("bundle", str(work / "results"), "-o", str(base / "results.zip"))
    assert r.returncode == 0, r.stderr
    return {"base": base, "work": work, "config": cfg, "bundle": base / "results.zip", "report": r.stdout}


def crate_of(results: Path) -> dict[str, dict[str, Any]]:
    return {e["@id"]: e for e in json.loads((results / "ro-crate-metadata.json").read_text())["@graph"]}


def ids(value: Any) -> set[str]:
    return {v["@id"] for v in (value if isinstance(value, list) else [value])}


def test_the_bundle_is_deterministic_content_addressed_and_reports_its_size(run: dict[str, Any]) -> None:
    """Two bundles of the same results are the same bytes; every member but the crate is a File of the crate with
    its sha256 (a store's files each as a part of the store); members sorted, fixed time and permissions; the size
    report names each kind; --no-figures leaves out exactly what is redrawn."""
    results = run["work"] / "results"
    again = run["base"] / "again.zip"
    r = cli("bundle", str(results), "-o", str(again), "-q")
    assert r.returncode == 0, r.stderr
    assert again.read_bytes() == run["bundle"].read_bytes()
    graph = crate_of(results)
    with zipfile.ZipFile(run["bundle"]) as zf:
        infos = zf.infolist()
        names = [i.filename for i in infos]
        assert names[0] == "ro-crate-metadata.json" and names[1:] == sorted(names[1:])
        assert {i.date_time for i in infos} == {(1980, 1, 1, 0, 0, 0)} and {i.external_attr >> 16 for i in infos} == {
            0o100644
        }
        for name in names[1:]:
            assert graph[name]["sha256"] == hashlib.sha256(zf.read(name)).hexdigest(), name
    store_files = [n for n in names if n.startswith(f"modes/{A}.zarr/")]
    assert len(store_files) > 3 and all(n in ids(graph[f"modes/{A}.zarr/"]["hasPart"]) for n in store_files)
    assert {"figures/fig3_weighted_cosine.png", f"weights/{A}.json", "run/config/config.yaml"} <= set(names)
    assert not [n for n in names if n.startswith(("logs/", "benchmarks/"))]  # not part of the results
    report = run["report"]
    for kind in ("modes", "scores", "figures", "claims", "config and workflow", "RO-Crate", "total"):
        assert re.search(rf"^{kind} +\d+\.\d (kB|MB) +\d+ files", report, re.M), (kind, report)
    lean = run["base"] / "lean.zip"
    r = cli("bundle", str(results), "-o", str(lean), "--no-figures", "-q")
    assert r.returncode == 0, r.stderr
    left = set(names) - set(zipfile.ZipFile(lean).namelist())
    assert left and all(n.startswith(("figures/", "notebooks/")) for n in left)
    assert f"{len(left)} redrawable files left out" in r.stdout


def test_the_crate_is_a_workflow_run_crate_that_cites_the_paper(run: dict[str, Any]) -> None:
    """mainEntity the workflow's Snakefile (its rules as parts), the run a CreateAction with it as instrument, one
    action per job, the profiles, the paper and the software cited; roc-validator finds nothing (offline)."""
    from qkdissect.provenance.crate_check import validate_crate

    results = run["work"] / "results"
    graph = crate_of(results)
    root = graph["./"]
    main = graph[root["mainEntity"]["@id"]]
    assert main["@id"] == "run/workflow/Snakefile" and (results / main["@id"]).is_file()
    assert set(main["@type"]) == {"File", "SoftwareSourceCode", "ComputationalWorkflow"}
    assert "run/workflow/rules/figures.smk" in ids(main["hasPart"])
    assert graph[main["programmingLanguage"]["@id"]]["name"] == "Snakemake"
    run_action = graph["#run"]
    assert run_action["instrument"] == {"@id": main["@id"]} and "#run" in ids(root["mentions"])
    jobs = [graph[m] for m in ids(root["mentions"]) - {"#run"}]
    assert jobs and ids(run_action["result"]) == set().union(*(ids(j["result"]) for j in jobs))
    assert {
        "https://w3id.org/ro/wfrun/process/0.5",
        "https://w3id.org/ro/wfrun/workflow/0.5",
        "https://w3id.org/workflowhub/workflow-ro-crate/1.0",
    } <= ids(root["conformsTo"])
    paper = graph["https://arxiv.org/abs/2405.14880"]
    assert paper["sameAs"] == "https://openreview.net/forum?id=dIktpSgK4F" and paper["@id"] in ids(root["citation"])
    software = [graph[c] for c in ids(root["citation"]) if graph[c]["@type"] == "SoftwareApplication"]
    assert software and software[0]["softwareVersion"] and (results / "run/CITATION.cff").is_file()
    known: list[Any] = []
    assert (issues := validate_crate(results, known=known)) == [], "\n".join(map(str, issues))
    assert all("SoftwareApplication id" in i.message for i in known)  # the profiles' conflict on the workflow


class _Record(http.server.BaseHTTPRequestHandler):
    """A Zenodo-shaped record: ``/api/records/<id>`` (JSON: its files with checksums and links) and the file."""

    bundle: bytes = b""

    def do_GET(self) -> None:
        host = f"http://{self.headers['Host']}"
        content = f"/api/records/{RECORD}/files/results.zip/content"
        if self.path == f"/api/records/{RECORD}":
            md5 = "md5:" + hashlib.md5(self.bundle).hexdigest()
            entry = {"key": "results.zip", "size": len(self.bundle), "checksum": md5, "links": {"self": host + content}}
            record = {"id": int(RECORD), "doi": f"10.5281/zenodo.{RECORD}", "files": [entry]}
            self._send(json.dumps(record).encode(), "application/json")
        elif self.path in (content, "/results.zip"):
            self._send(self.bundle, "application/zip")
        else:
            self.send_error(404)

    def _send(self, body: bytes, kind: str) -> None:
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def zenodo(run: dict[str, Any]) -> Iterator[str]:
    """A local HTTP server serving the bundle as a Zenodo record; yields its API's base URL."""
    handler = type("Record", (_Record,), {"bundle": run["bundle"].read_bytes()})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def _pixels(path: Path) -> np.ndarray:
    return np.asarray(Image.open(path).convert("RGBA"))


def test_fetch_a_zenodo_record_and_redraw_pixel_for_pixel_without_the_weights(
    run: dict[str, Any], zenodo: str, tmp_path: Path
) -> None:
    """The record's DOI, through the (local) Zenodo API, into an empty folder; the weights gone (a reader has none);
    `qkdissect run` plans only the figures, the claims and the crate, and redraws every figure pixel for pixel; the
    audit is clean, the unpublished weights noted; a second run has nothing to do."""
    env = {"QKDISSECT_ZENODO_API": f"{zenodo}/api"}
    reader = tmp_path / "reader"
    results = reader / "results"
    r = cli("fetch", f"https://doi.org/10.5281/zenodo.{RECORD}", "-o", str(results), env=env)
    assert r.returncode == 0, r.stderr
    assert f"Zenodo record {RECORD} (results.zip)" in r.stdout
    assert (
        json.loads((results / "fetched.json").read_text())["bundle_sha256"]
        == hashlib.sha256(run["bundle"].read_bytes()).hexdigest()
    )
    # and from its plain URL too
    r = cli("fetch", f"{zenodo}/results.zip", "-o", str(tmp_path / "by-url"))
    assert r.returncode == 0 and (tmp_path / "by-url/modes" / f"{A}.zarr/zarr.json").is_file(), r.stderr
    original = run["work"] / "results/figures"
    weights = run["base"] / "weights"
    aside = weights.with_name("weights-aside")
    weights.rename(aside)
    try:
        args = ["run", "-s", str(REPO / "Snakefile"), "--directory", str(reader), "--configfile", str(run["config"])]
        r = cli(*args, "--cores", "2")
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-6000:]
        assert job_counts(r.stdout + r.stderr) == {"fig3": 2, "claims": 1, "crate": 1, "default": 1}
        drawn = sorted(p.name for p in original.glob("*.png"))
        assert drawn == sorted(p.name for p in (results / "figures").glob("*.png")) and drawn
        for name in drawn:
            assert np.array_equal(_pixels(original / name), _pixels(results / "figures" / name)), name
        audit = ["audit", str(results), "--json"] + (["--allow-dirty"] if git_state().get("dirty") else [])
        r = cli(*audit, cwd=reader)
        entries = json.loads(r.stdout)
        assert r.returncode == 0, [e for e in entries if e["status"] != "ok"]
        notes = [f["message"] for e in entries for f in e["findings"]]
        assert any("not part of the published results" in n for n in notes)
        r = cli(*args, "--cores", "1", "-n")
        assert r.returncode == 0 and "Nothing to be done" in r.stdout + r.stderr, r.stderr[-3000:]
    finally:
        aside.rename(weights)
    # plain snakemake (not through `qkdissect run`) is stopped with the reason, before any job
    r = snakemake(reader, "-n", config=run["config"], check=False)
    assert r.returncode != 0 and "fetched from a published bundle" in r.stdout + r.stderr


def _rewrite(src: Path, dest: Path, change: dict[str, bytes | None], extra: list[zipfile.ZipInfo] = ()) -> None:
    """A copy of a bundle with members' content replaced (None: dropped) and members added."""
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dest, "w") as zout:
        for info in zin.infolist():
            data = change.get(info.filename, zin.read(info))
            if data is not None:
                zout.writestr(info, data)
        for info in extra:
            zout.writestr(info, b"x")


def _link(name: str) -> zipfile.ZipInfo:
    info = zipfile.ZipInfo(name)
    info.external_attr = 0o120777 << 16
    return info


@pytest.mark.parametrize(
    "case",
    ["chunk", "byte", "unlisted", "slip", "absolute", "link"],
)
def test_a_tampered_or_unsafe_bundle_writes_nothing(run: dict[str, Any], tmp_path: Path, case: str) -> None:
    """A changed chunk, a flipped byte of the zip, a file the crate does not list, a path out of the folder, an
    absolute path, a link: one line naming the first bad member, and nothing written (no folder, no leftover)."""
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(run["bundle"]) as zf:
        chunk = next(n for n in zf.namelist() if n.startswith(f"scores/{A}.zarr/") and "/c/" in n)
        data = zf.read(chunk)
    if case == "chunk":
        _rewrite(run["bundle"], bad, {chunk: bytes([data[0] ^ 1]) + data[1:]})
        named = chunk
    elif case == "byte":
        raw = bytearray(run["bundle"].read_bytes())
        with zipfile.ZipFile(run["bundle"]) as zf:
            info = zf.getinfo(chunk)
        at = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra) + 2
        raw[at] ^= 0xFF
        bad.write_bytes(bytes(raw))
        named = chunk
    else:
        name = {"unlisted": "scores/extra.txt", "slip": "../escaped.txt", "absolute": "/tmp/abs.txt"}.get(case)
        member = _link("figures/link.png") if case == "link" else zipfile.ZipInfo(str(name))
        _rewrite(run["bundle"], bad, {}, [member])
        named = member.filename
    out = tmp_path / "into" / "results"
    r = cli("fetch", str(bad), "-o", str(out))
    assert r.returncode == 2, r.stdout
    (line,) = r.stderr.strip().splitlines()
    assert named in line and "nothing was written" in line, line
    assert not out.exists() and os.listdir(tmp_path / "into") == []
    assert not (tmp_path / "escaped.txt").exists()


def test_fetch_refuses_a_folder_that_holds_anything(run: dict[str, Any], tmp_path: Path) -> None:
    """The results folder a fetch writes is new or empty: one that holds a file is left as it is."""
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "mine.txt").write_text("mine")
    r = cli("fetch", str(run["bundle"]), "-o", str(tmp_path / "results"))
    assert r.returncode == 2 and os.listdir(tmp_path / "results") == ["mine.txt"], r.stderr
    shutil.rmtree(tmp_path / "results")
