"""An output owns only what its command writes: `-o` never replaces a results folder, a folder holding a user's
files, a folder of stores, or one of the command's own inputs; a store or file of another kind only with --force;
a lock path is never followed (a planted link, folder or hard link is refused and left as it is); a config file
cannot make `qkdissect run` take unbounded memory (nested aliases, /dev/zero), nor a top-k beyond the images."""

from __future__ import annotations

import os
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import qkdissect as qk
from qkdissect.cli import main
from qkdissect.config_check import MAX_CONFIG_NODES, expanded_size, yaml_problem
from qkdissect.passes.projections import compute_projections
from qkdissect.passes.weights import compute_modes
from qkdissect.util.ownership import OutputExistsError, kind_of
from tests.helpers import REPO
from tests.helpers.atlas import tiny_results


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A results folder as the workflow lays it out (modes, scores, projections of a tiny ViT on 5 photos)."""
    return tiny_results(tmp_path_factory.mktemp("outputs"), photos=5, top_k=4, batch_size=2, depth=2)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under ``folder`` (or the file itself) with its bytes."""
    if folder.is_file():
        return {folder.name: folder.read_bytes()}
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    """Run the command line: it must exit 2 with one line (its own, or argparse's); returns that line."""
    try:
        code = main(list(argv))
    except SystemExit as e:
        code = int(e.code or 0)
    assert code == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1, lines
    return lines[0]


# ----------------------------------------------------------------------------------------------- data loss
def test_the_atlas_never_replaces_its_results_folder_or_a_folder_of_other_files(
    tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    results = tiny["results"]
    before = snapshot(results)
    line = refused(capsys, "atlas", str(results), "--no-compute", "-o", str(results), "-q")
    assert "is an input of this command" in line and "never replaced" in line
    assert snapshot(results) == before
    mine = tmp_path / "somefolder"
    mine.mkdir()
    (mine / "thesis.tex").write_text("years of work")
    assert "never replaced, not even with --force" in refused(
        capsys, "atlas", str(results), "--no-compute", "-o", str(mine), "--force"
    )
    assert snapshot(mine) == {"thesis.tex": b"years of work"}
    assert not list(tmp_path.glob("somefolder.*"))  # no lock, no temporary folder


def test_a_store_never_replaces_a_folder_of_a_users_files_or_of_stores(
    tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    docs = tmp_path / "mydocs"
    docs.mkdir()
    (docs / "notes.txt").write_text("mine")
    line = refused(capsys, "scores", str(tiny["modes"]), "-o", str(docs), "--force")
    assert f"output {docs} is a folder holding 1 file or folder this command did not write" in line
    assert snapshot(docs) == {"notes.txt": b"mine"}
    folded = tmp_path / "modes_ln"  # a folder of four stores, as results/modes_ln
    for name in ("a", "b", "c", "d"):
        qk.scores(tiny["modes"], output=folded / f"{name}.zarr")
    before = snapshot(folded)
    assert "holding 4 files or folders" in refused(capsys, "scores", str(tiny["modes"]), "-o", str(folded))
    projections = tiny["results"] / "projections"
    kept = snapshot(projections)
    assert "never replaced, not even with --force" in refused(
        capsys, "merge-shards", str(folded / "a.zarr"), "-o", str(projections)
    )
    assert snapshot(folded) == before and snapshot(projections) == kept


def test_a_command_never_writes_over_its_own_inputs(tiny: dict, tmp_path: Path, capsys) -> None:
    shards = tmp_path / "p.shards"
    for k in (1, 2):
        compute_projections(tiny["spec"], tiny["modes"], tiny["images"], shards / f"{k}-of-2.zarr", batch_size=2,
                            top_k=4, workers=0, device="cpu", progress=False, shard=qk_shard(f"{k}/2"))  # fmt: skip
    parts = [str(shards / f"{k}-of-2.zarr") for k in (1, 2)]
    before = snapshot(shards)
    assert "is an input of this command" in refused(capsys, "merge-shards", *parts, "-o", parts[0], "--force")
    assert "holds an input of this command" in refused(capsys, "merge-shards", *parts, "-o", str(shards))
    assert "lies inside the input" in refused(capsys, "merge-shards", *parts, "-o", f"{parts[1]}/merged.zarr")
    modes = str(tiny["modes"])
    assert "is an input of this command" in refused(capsys, "scores", modes, "-o", modes, "--force")
    assert snapshot(shards) == before
    assert main(["merge-shards", *parts, "-o", str(tmp_path / "merged.zarr")]) == 0  # and a new path works
    capsys.readouterr()


def qk_shard(text: str) -> Any:
    from qkdissect.passes.shards import Shard

    return Shard.parse(text)


def test_another_kind_is_replaced_only_with_force_and_the_same_kind_always(
    tiny: dict, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "s.zarr"
    assert main(["scores", str(tiny["modes"]), "-q", "-o", str(out)]) == 0
    assert main(["scores", str(tiny["modes"]), "-q", "-o", str(out)]) == 0  # a rerun replaces its own kind
    capsys.readouterr()
    other = tmp_path / "m.zarr"
    compute_modes(tiny["spec"], other, device="cpu")
    before = snapshot(other)
    line = refused(capsys, "scores", str(tiny["modes"]), "-q", "-o", str(other))
    assert line.endswith(f"output {other} is a modes store, not a scores store: give another output path, or "
                         "--force to replace it")  # fmt: skip
    assert snapshot(other) == before
    assert main(["scores", str(tiny["modes"]), "-q", "-o", str(other), "--force"]) == 0
    assert kind_of(other) == "a scores store"
    capsys.readouterr()
    notes = tmp_path / "notes.txt"
    notes.write_text("not a manifest")
    assert "is a text file, not a JSON file" in refused(capsys, "resolve", tiny["spec"], "-o", str(notes))
    assert notes.read_text() == "not a manifest"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr", "notes.txt", "s.zarr"]


def test_the_python_api_is_held_to_the_same_rule_at_the_rename(tiny: dict, tmp_path: Path) -> None:
    """No command line, no early check: the write itself refuses to rename over what it does not own."""
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("mine")
    with pytest.raises(OutputExistsError, match="never replaced"):
        qk.scores(tiny["modes"], output=docs)
    modes_copy = tmp_path / "m.zarr"
    compute_modes(tiny["spec"], modes_copy, device="cpu")
    with pytest.raises(OutputExistsError, match="is a modes store, not a scores store"):
        qk.scores(tiny["modes"], output=modes_copy)
    assert snapshot(docs) == {"a.txt": b"mine"} and kind_of(modes_copy) == "a modes store"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "m.zarr"]  # no temporary store, no lock


def test_bad_output_paths_are_one_line(tiny: dict, tmp_path: Path, capsys, monkeypatch) -> None:
    notes = tmp_path / "notes.txt"
    notes.write_text("x")
    line = refused(capsys, "scores", str(tiny["modes"]), "-o", f"{notes}/s.zarr")
    assert line.endswith(f"cannot write {notes}/s.zarr: {notes} is a file, not a folder: give another output path")
    monkeypatch.chdir(tmp_path)
    assert "'..'" in refused(capsys, "scores", str(tiny["modes"]), "-o", "..")
    assert notes.read_text() == "x"


# ----------------------------------------------------------------------------------------------------- locks
def test_a_planted_lock_is_never_written_through(tiny: dict, tmp_path: Path, capsys) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    args = ["scores", str(tiny["modes"]), "-q", "-o"]
    (tmp_path / "s.zarr.lock").symlink_to(victim)
    assert "the lock" in (line := refused(capsys, *args, str(tmp_path / "s.zarr"))) and "a symbolic link" in line
    os.link(victim, tmp_path / "h.zarr.lock")  # a hard link: the same file under the lock's name
    assert "a file with 2 names (hard links)" in refused(capsys, *args, str(tmp_path / "h.zarr"))
    (tmp_path / "d.zarr.lock").mkdir()
    assert "is a folder" in refused(capsys, *args, str(tmp_path / "d.zarr"))
    (tmp_path / "f.zarr.lock").write_text("a user's file that happens to have this name")
    assert "a file that is not a qkdissect lock" in refused(capsys, *args, str(tmp_path / "f.zarr"))
    assert victim.read_text() == "precious"
    assert (tmp_path / "f.zarr.lock").read_text() == "a user's file that happens to have this name"
    assert not list(tmp_path.glob("*.zarr"))
    # a lock its writer left behind (killed) is still taken over
    (tmp_path / "ok.zarr.lock").write_text("pid 999999999: qkdissect scores ...")
    assert main([*args, str(tmp_path / "ok.zarr")]) == 0 and not (tmp_path / "ok.zarr.lock").exists()


# ------------------------------------------------------------------------------------------- bounded inputs
def _run_bounded(*argv: str) -> subprocess.CompletedProcess[str]:
    """`qkdissect run ...` with at most 1 GB of memory and 60 s: a config that runs away fails the test."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (1 << 30, 1 << 30))

    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    cmd = [sys.executable, "-m", "qkdissect", "run", *argv]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=60, preexec_fn=limit, env=env)


def test_a_config_of_nested_aliases_is_refused_before_it_is_expanded(tmp_path: Path) -> None:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for prev, name in zip("abcdefgh", "bcdefghi", strict=True):
        lines.append(f"{name}: &{name} [{', '.join(['*' + prev] * 9)}]")
    bomb = tmp_path / "laughs.yaml"
    bomb.write_text("\n".join(lines) + "\nfigures: {s2: *i}\n")
    assert bomb.stat().st_size < 8000
    node = yaml.compose(bomb.read_text(), Loader=yaml.SafeLoader)
    assert expanded_size(node) > 9**9  # counted, never expanded
    r = _run_bounded("-n", "--configfile", str(bomb))
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip() == (
        f"qkdissect run: error: config file {bomb}: its aliases (*name) expand it to over {MAX_CONFIG_NODES:,} "
        f"values ({expanded_size(node):,}): a config is data; write the values out, or use fewer nested aliases"
    )
    few = tmp_path / "few.yaml"  # aliases that stay small are fine (the config is still checked as usual)
    few.write_text("colours: &c {color: red}\nmodels: {dinov2-vits14-imgfocus: *c}\n")
    assert yaml_problem(few) is None
    assert yaml_problem(REPO / "config/paper.yaml") is None


def test_a_config_that_is_not_a_small_regular_file_is_refused(tmp_path: Path) -> None:
    r = _run_bounded("-n", "--configfile", "/dev/zero")
    assert r.returncode == 2 and "config file /dev/zero: is not a regular file" in r.stderr, r.stderr[-2000:]
    big = tmp_path / "big.yaml"
    big.write_text("# " + "x" * (2 << 20) + "\n")
    assert "over the 1,048,576 a config may have" in str(yaml_problem(big))
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    r = _run_bounded("-n", "--configfile", str(empty))
    assert r.returncode == 2 and f"config file {empty} is empty: give at least the models" in r.stderr


def test_a_top_k_beyond_the_images_is_refused_and_leaves_nothing(tiny: dict, tmp_path: Path, capsys) -> None:
    out = tmp_path / "x.zarr"
    base = ["project", tiny["spec"], "--modes", str(tiny["modes"]), "--images", tiny["images"], "-q", "-o", str(out)]
    assert "--top-k must be <= 1000, not '100000'" in refused(capsys, *base, "--top-k", "100000")
    line = refused(capsys, *base, "--top-k", "9", "--workers", "0")
    assert line.endswith(f"top-k 9 is more than the 5 images of {tiny['images']}: give at most 8 (--top-k; "
                         "projections.top_k in the config)")  # fmt: skip
    with pytest.raises(ValueError, match="top-k must be <= 1000, not 100000"):
        compute_projections(tiny["spec"], tiny["modes"], tiny["images"], out, top_k=100000, device="cpu")
    assert not list(tmp_path.iterdir())  # no store, no lock, no temporary store
    # up to the default's 8 ranks a small set is fine: the ranks beyond its images stay empty
    ds = compute_projections(tiny["spec"], tiny["modes"], tiny["images"], out, top_k=8, workers=0, device="cpu",
                             progress=False)  # fmt: skip
    assert ds.sizes["rank"] == 8 and (ds.top_image.values[..., 5:] == -1).all()


def test_the_schema_bounds_every_size(tmp_path: Path) -> None:
    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    unbounded = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            types = node.get("type") if isinstance(node.get("type"), list) else [node.get("type")]
            if "integer" in types and "minimum" in node and "maximum" not in node:
                unbounded.append(where)
            for k, v in node.items():
                walk(v, f"{where}.{k}")
        elif isinstance(node, list):
            for i, v in enumerate(node):
                walk(v, f"{where}[{i}]")

    walk(schema, "schema")
    # what is not a size: an image index, resources a scheduler bounds itself, modes' coordinates
    allowed = ("example", "mem_mb", "runtime", "threads", "notebook_timeout_s", "prefixItems", "items")
    assert [u for u in unbounded if not any(a in u for a in allowed)] == []


def test_a_full_disk_leaves_no_lock_and_no_temporary_store(
    tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A disk so full that the lock's own line cannot be written (the empty lock file can: it takes no block)."""
    import errno

    from qkdissect.util import locks

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(locks.os, "pwrite", full)
    line = refused(capsys, "scores", str(tiny["modes"]), "-q", "-o", str(tmp_path / "s.zarr"))
    assert "No space left on device (the disk is full)" in line
    assert not list(tmp_path.iterdir())


@pytest.mark.skipif(os.geteuid() != 0, reason="mounts a 100 kB tmpfs (root)")
def test_a_real_full_disk_leaves_nothing(tiny: dict, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=100k", "tmpfs", str(disk)]).returncode != 0:
        pytest.skip("this machine cannot mount a tmpfs")
    try:
        with (disk / "fill").open("wb") as fh, pytest.raises(OSError):
            fh.write(b"\0" * (200 << 10))
            fh.flush()
        for argv in (["scores", str(tiny["modes"])], ["modes", tiny["spec"]]):
            r = subprocess.run([sys.executable, "-m", "qkdissect", *argv, "-q", "-o", str(disk / "x.zarr")],
                               capture_output=True, text=True, timeout=120,
                               env={**os.environ, "PYTHONPATH": str(REPO / "src")})  # fmt: skip
            assert r.returncode == 2 and "the disk is full" in r.stderr, r.stderr[-2000:]
            assert sorted(p.name for p in disk.iterdir()) == ["fill"]
    finally:
        subprocess.run(["umount", str(disk)], check=True)
