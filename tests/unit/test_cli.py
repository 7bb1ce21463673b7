"""The command line, end to end, on tiny models (on real weights: tests/integration/test_cli.py)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import qkdissect
from qkdissect.cli import build_parser, main
from qkdissect.stores import open_store
from tests.helpers import tiny_hf_dir


def test_models_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["models", "--json"]) == 0
    rows = json.loads(capsys.readouterr().out)
    keys = {r["key"] for r in rows}
    assert len([r for r in rows if r["paper"]]) == 16
    assert {"dino-vitb16", "simmim-vit-b16-pretrain", "ijepa-vith14-encoder", "dinov2-vits14-imgfocus"} <= keys
    assert all(r["available"] for r in rows)


def test_unknown_model_exits_2_with_message(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["modes", "dino-vitb61", "-o", str(tmp_path / "x.zarr")]) == 2
    err = capsys.readouterr().err
    assert "unknown model 'dino-vitb61'" in err and "dino-vitb16" in err
    assert not (tmp_path / "x.zarr").exists()


def test_several_models_need_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["modes", "a/b", "c/d", "-o", str(tmp_path / "x.zarr")]) == 2
    assert "output directory" in capsys.readouterr().err


def test_hf_local_directory_records_weights(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A save_pretrained directory loads with no network (HF_HUB_OFFLINE=1) and its file hash is recorded."""
    from qkdissect.passes.weights import compute_modes
    from qkdissect.util.hashing import sha256_file

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    d = tiny_hf_dir(tmp_path)
    ds = compute_modes(f"hf:{d}", device="cpu")
    assert ds.attrs["adapter"] == "hf-deit" and ds.attrs["n_prefix_tokens"] == 2
    assert ds.attrs["weights_sha256"] == sha256_file(d / "model.safetensors")
    assert ds.attrs["provenance"]["weights"]["origin"] == "local directory"


def test_several_models_into_a_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    d = tiny_hf_dir(tmp_path)
    out = tmp_path / "modes"
    assert main(["modes", f"hf:{d}", f"hf:{d}?attn_implementation=eager", "-o", str(out), "--dtype", "float32"]) == 0
    stores = sorted(out.glob("*.zarr"))
    assert len(stores) == 2
    ds = [open_store(s, "modes") for s in stores]
    assert all(x.attrs["dtype"] == "float32" and x.U.dtype == np.float32 for x in ds)
    # the spec with an option builds the model (torch), the plain one is read from its file (numpy): float32 rounding
    np.testing.assert_allclose(ds[0].S.values, ds[1].S.values, rtol=1e-5)


# ---------------------------------------------------------------------------------------- a CLI that behaves
def _timed(*args: str) -> tuple[subprocess.CompletedProcess[str], float]:
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "qkdissect", *args], capture_output=True, text=True, timeout=60)
    return r, time.perf_counter() - t0


def test_version_and_unknown_model_answer_at_once(tmp_path: Path) -> None:
    """Nothing heavy is imported before the model name is checked: both answer well under a second (1.5 s here,
    for a loaded machine; torch alone takes seconds)."""
    r, seconds = _timed("--version")
    assert r.returncode == 0 and r.stdout.strip() == f"qkdissect {qkdissect.__version__}", r
    assert seconds < 1.5
    r, seconds = _timed("modes", "no-such-model", "-o", str(tmp_path / "x.zarr"))
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "unknown model 'no-such-model'" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "x.zarr").exists()
    assert seconds < 1.5
    check = "import sys; from qkdissect.cli import main; main(['modes', 'nope', '-o', 'x.zarr']); print(sorted("
    check += "m for m in ('torch', 'timm', 'transformers', 'xarray') if m in sys.modules))"
    r = subprocess.run([sys.executable, "-c", check], capture_output=True, text=True, cwd=tmp_path, timeout=60)
    assert r.stdout.strip() == "[]", r


def test_a_scores_job_never_imports_torch(tmp_path: Path) -> None:
    """The scores pass reads a modes store and writes a scores store with numpy and xarray alone: its job does not
    pay torch's import (seconds per job, 17 scores jobs in the paper's run)."""
    from qkdissect.stores import write_store
    from qkdissect.stores.schema import modes_dataset

    rng = np.random.default_rng(0)
    u, v = (np.linalg.qr(rng.normal(size=(2, 3, 12, 4)))[0] for _ in range(2))
    s = np.sort(rng.uniform(0.1, 2.0, (2, 3, 4)))[..., ::-1]
    block = np.broadcast_to(np.arange(4), s.shape).copy()
    write_store(modes_dataset(u, s, v, block, {"model_id": "r", "d_head": 4}), tmp_path / "modes.zarr")
    check = "import sys; from qkdissect.cli import main; rc = main(['scores', sys.argv[1], '-o', sys.argv[2], '-q']); "
    check += "print(rc, sorted(m for m in ('torch', 'timm', 'transformers') if m in sys.modules))"
    args = [str(tmp_path / "modes.zarr"), str(tmp_path / "scores.zarr")]
    r = subprocess.run([sys.executable, "-c", check, *args], capture_output=True, text=True, timeout=120)
    assert r.stdout.strip().splitlines()[-1] == "0 []", r.stdout + r.stderr
    assert open_store(tmp_path / "scores.zarr", "scores").layer_weighted.sizes["layer"] == 2


def test_debug_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["--debug", "modes", "nope"], ["modes", "nope", "--debug"]):
        assert main([*argv, "-o", str(tmp_path / "x.zarr")]) == 2
        err = capsys.readouterr().err
        assert "Traceback (most recent call last)" in err and "UnknownModelError" in err
        assert err.strip().splitlines()[-1].startswith("qkdissect modes: error: unknown model 'nope'")


def test_sources_are_the_registered_ones() -> None:
    """The catalogue's list of sources (checked before torch is imported) is the registry's."""
    from qkdissect.catalogue import SOURCES, spec_source
    from qkdissect.models.sources import REGISTRY

    assert set(SOURCES) == set(REGISTRY)
    assert [spec_source(s) for s in ("dino-vitb16", "timm:x", "org/name", "./a/b", "nope", "bogus:x")] == [
        "hf", "timm", "hf", None, None, None,
    ]  # fmt: skip


def test_help_lists_every_command() -> None:
    parser = build_parser()
    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    r, seconds = _timed("--help")
    assert r.returncode == 0 and seconds < 1.5
    listed = {line.split()[0] for line in r.stdout.splitlines() if line.startswith("    ") and line.strip()}
    assert set(sub.choices) <= listed, set(sub.choices) - listed
    docs = parser.description or ""
    missing = [c for c in sub.choices if f" {c}," not in docs.replace(".", ",").replace("\n", " ")]
    assert not missing, f"the top-level description does not name {missing}"


def test_progress_counts_images_with_the_rate(capsys: pytest.CaptureFixture[str]) -> None:
    from qkdissect.data.geometry import Preprocess
    from qkdissect.passes.loop import ImageStream

    stream = ImageStream.open("skimage", 5, Preprocess((16, 16), 16, (0.5,) * 3, (0.5,) * 3))
    assert len(list(stream.batches(2, 0, "project tiny-model", progress=True))) == 3
    bar = capsys.readouterr().err.replace("\r", "\n").strip().splitlines()[-1]
    assert bar.startswith("project tiny-model: 100%") and "5/5 [" in bar and "image/s" in bar, bar


def test_quiet_keeps_the_summary_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """-q: no progress, no per-layer lines, no loading line, but the one summary line naming the output."""
    d = tiny_hf_dir(tmp_path)
    modes = tmp_path / "m.zarr"
    assert main(["modes", f"hf:{d}", "-o", str(modes), "-q"]) == 0
    out, err = capsys.readouterr()
    assert out.strip().splitlines() == [f"hf:{d}: 2 layers x 4 heads x 16 modes (d=64) -> {modes}"]
    assert "loading" not in err
    assert main(["scores", str(modes), "-o", str(tmp_path / "s.zarr"), "-q"]) == 0
    quiet = capsys.readouterr().out.strip().splitlines()
    assert len(quiet) == 1 and quiet[0].endswith(f"-> {tmp_path / 's.zarr'}")
    assert main(["scores", str(modes), "-o", str(tmp_path / "s2.zarr")]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 3  # two layers, then the summary
    assert main(["modes", f"hf:{d}", "-o", str(tmp_path / "m2.zarr"), "--name", "tiny"]) == 0
    assert f"loading tiny (hf:{d}) …" in capsys.readouterr().err
