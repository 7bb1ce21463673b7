"""Bad input and interruption: every bad input gets an error naming it (and nothing on disk that looks
finished); out-of-memory batches shrink; a GPU that is not there is a recorded fallback; a store write killed
with SIGKILL at any step leaves no store that reads as complete, and the next run makes an identical one."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdissect.cli import main
from qkdissect.passes import projections as projections_pass
from qkdissect.passes.batching import AdaptiveBatch
from qkdissect.passes.projections import compute_projections
from qkdissect.passes.weights import compute_modes
from qkdissect.stores import open_store, write_store
from qkdissect.util.atomic import FAILPOINT_ENV
from tests.helpers import REPO, make_tiny_vit, write_photos
from tests.helpers.workflow import workflow_path


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path | str]:
    base = tmp_path_factory.mktemp("rel")
    spec = make_tiny_vit(base / "w")
    write_photos(base / "photos", n=7)
    modes = base / "modes.zarr"
    write_store(compute_modes(spec, device="cpu"), modes)
    return {"spec": spec, "photos": base / "photos", "modes": modes, "weights": base / "w/tiny.safetensors"}


def content(path: Path) -> xr.Dataset:
    """A store's content: every array and attribute except the provenance (which has timestamps), and the content
    record but for the provenance's own digest."""
    ds = open_store(path).load()
    ds.attrs.pop("provenance")
    record = ds.attrs["qkdissect_content"]
    ds.attrs["qkdissect_content"] = {**record, "attributes": {k: v for k, v in record["attributes"].items()
                                                              if k != "provenance"}}  # fmt: skip
    return ds


def cli(*args: str, env: dict[str, str] | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    full = {**os.environ, **(env or {}), "PYTHONPATH": str(REPO / "src")}
    return subprocess.run(
        [sys.executable, "-m", "qkdissect", *args], capture_output=True, text=True, env=full, cwd=cwd, timeout=300
    )


# ----------------------------------------------------------------------------------------- bad inputs
def test_truncated_checkpoint_names_the_file_and_writes_nothing(tiny: dict, tmp_path: Path, capsys) -> None:
    data = Path(tiny["weights"]).read_bytes()
    cut = tmp_path / "tiny.safetensors"
    cut.write_bytes(data[: len(data) // 2])
    out = tmp_path / "m.zarr"
    assert main(["modes", str(tiny["spec"]).replace(str(tiny["weights"]), str(cut)), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"cannot read checkpoint {cut}" in err and "truncated" in err and "download it again" in err
    assert not out.exists() and not list(tmp_path.glob("m.zarr*"))


def test_empty_image_folder_and_all_corrupt_images(tiny: dict, tmp_path: Path, capsys) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    out = tmp_path / "p.zarr"
    args = ["project", str(tiny["spec"]), "--modes", str(tiny["modes"]), "--workers", "0", "-q", "-o", str(out)]
    assert main([*args, "--images", f"folder:{empty}"]) == 2
    assert f"no images in {empty}" in capsys.readouterr().err
    bad = tmp_path / "bad"
    bad.mkdir()
    for i in range(3):
        (bad / f"b{i}.jpg").write_bytes(b"\xff\xd8 not a jpeg")
    assert main([*args, "--images", f"folder:{bad}"]) == 2
    assert f"none of the 3 images in {bad} could be decoded" in capsys.readouterr().err
    assert not list(tmp_path.glob("p.zarr*"))


@pytest.mark.parametrize("command", ["project", "logits", "same-object"])
def test_modes_of_other_weights_are_refused(tiny: dict, tmp_path: Path, capsys, command: str) -> None:
    other = make_tiny_vit(tmp_path / "other", depth=3)
    data = Path(str(other).split("@")[1].split("?")[0])
    raw = bytearray(data.read_bytes())  # the same architecture and seed: one changed byte makes other weights
    raw[-10] ^= 0x01
    data.write_bytes(bytes(raw))
    out = tmp_path / "p.zarr"
    inputs = ["--dataset", "synthetic:2"] if command == "same-object" else ["--images", f"folder:{tiny['photos']}"]
    code = main([command, other, "--modes", str(tiny["modes"]), *inputs, "-q", "-o", str(out)])
    assert code == 2 and "was computed from other weights" in capsys.readouterr().err and not out.exists()


# ----------------------------------------------------------------------------------------- out of memory
class _SmallMemory(torch.nn.Module):
    """A model that runs out of (pretend CUDA) memory on batches of more than ``fits`` images."""

    def __init__(self, inner: torch.nn.Module, fits: int) -> None:
        super().__init__()
        self.inner, self.fits, self.calls = inner, fits, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls.append(x.shape[0])
        if x.shape[0] > self.fits:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return self.inner(x)


def test_out_of_memory_batches_are_split_and_give_the_same_store(
    tiny: dict, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kwargs = dict(batch_size=4, top_k=3, device="cpu", workers=0, progress=False)
    ref, out = tmp_path / "a.zarr", tmp_path / "b.zarr"
    compute_projections(tiny["spec"], tiny["modes"], f"folder:{tiny['photos']}", ref, **kwargs)
    real = projections_pass.load_image_model
    wrapped: list[_SmallMemory] = []

    def small_memory(*a, **k):  # type: ignore[no-untyped-def]
        im = real(*a, **k)
        wrapped.append(_SmallMemory(im.model, fits=1))
        im.model = wrapped[-1]
        return im

    monkeypatch.setattr(projections_pass, "load_image_model", small_memory)
    compute_projections(tiny["spec"], tiny["modes"], f"folder:{tiny['photos']}", out, **kwargs)
    xr.testing.assert_identical(content(ref), content(out))
    batch = open_store(out).attrs["provenance"]["batch"]
    assert batch == {"requested": 4, "used": 1, "oom_retries": 2}
    # after the first split, later batches go straight to the size that fitted
    assert wrapped[0].calls[:3] == [4, 2, 1] and set(wrapped[0].calls[3:]) == {1}


@settings(max_examples=25, deadline=None)
@given(n=st.integers(1, 17), fits=st.integers(1, 9))
def test_adaptive_batch_equals_one_big_batch(n: int, fits: int) -> None:
    x = torch.arange(n * 3, dtype=torch.float64).reshape(n, 3)

    def f(xb: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        if xb.shape[0] > fits:
            raise RuntimeError("DefaultCPUAllocator: can't allocate memory: you tried to allocate 1 bytes")
        return xb * 2, {"s": xb.sum(dim=1)}

    run = AdaptiveBatch("test")
    got, extra = run(f, x)
    torch.testing.assert_close(got, x * 2)
    torch.testing.assert_close(extra["s"], x.sum(dim=1))
    assert run.record()["used"] <= fits


def test_out_of_memory_for_one_image_and_other_errors_are_not_retried() -> None:
    def oom(xb: torch.Tensor) -> torch.Tensor:
        raise torch.OutOfMemoryError("CUDA out of memory")

    with pytest.raises(RuntimeError, match=r"out of memory even for a batch of one image.*--device cpu"):
        AdaptiveBatch("project m")(oom, torch.zeros(4, 2))
    calls = []

    def broken(xb: torch.Tensor) -> torch.Tensor:
        calls.append(xb.shape[0])
        raise ValueError("a bug")

    with pytest.raises(ValueError, match="a bug"):
        AdaptiveBatch("x")(broken, torch.zeros(4, 2))
    assert calls == [4]


# ----------------------------------------------------------------------------------------- no GPU
def test_gpu_requested_without_one_falls_back_and_says_so(tiny: dict, tmp_path: Path) -> None:
    """CUDA_VISIBLE_DEVICES= hides any GPU, so this runs the fallback on GPU machines too."""
    out = tmp_path / "m.zarr"
    r = cli("modes", str(tiny["spec"]), "--device", "cuda", "-o", str(out), env={"CUDA_VISIBLE_DEVICES": ""})
    assert r.returncode == 0, r.stderr
    assert "fell back to CPU: 'cuda' was requested" in r.stderr
    dev = open_store(out).attrs["provenance"]["device"]
    assert dev["requested"] == "cuda" and dev["used"] == "cpu" and dev["fallback"].startswith("fell back to CPU")
    # the modes of the model built (the GPU path's CPU fallback) against those read from its file
    np.testing.assert_allclose(open_store(out).S.values, open_store(tiny["modes"]).S.values, rtol=1e-12, atol=0)


# ----------------------------------------------------------------------------------------- SIGKILL
def _args(tiny: dict, command: str, out: Path) -> list[str]:
    if command == "modes":
        return ["modes", str(tiny["spec"]), "--name", "tiny", "--device", "cpu", "-q", "-o", str(out)]
    return [
        *("project", str(tiny["spec"]), "--name", "tiny", "--modes", str(tiny["modes"])),
        *("--images", f"folder:{tiny['photos']}", "--batch-size", "2", "--workers", "0", "--device", "cpu"),
        *("-q", "-o", str(out)),
    ]


def _killed(args: list[str], point: str) -> None:
    """Run the command in a process that SIGKILLs itself at ``point``."""
    r = cli(*args, env={FAILPOINT_ENV: point})
    assert r.returncode == -signal.SIGKILL, (point, r.returncode, r.stderr[-2000:])


@pytest.mark.parametrize(
    ("command", "point"),
    [
        ("modes", "store:written"),  # all arrays written, not yet renamed
        ("project", "stream:write@1"),  # the first chunk of the first array
        ("project", "stream:write@6"),  # half way through the images
        ("project", "stream:finish"),  # streamed arrays done, small variables and attributes not
        ("project", "store:before-rename"),  # complete under the temporary name
    ],
)
def test_a_write_killed_at_any_step_leaves_no_store_and_the_next_run_is_identical(
    tiny: dict, tmp_path: Path, command: str, point: str
) -> None:
    ref, out = tmp_path / "ref.zarr", tmp_path / "out.zarr"
    assert main(_args(tiny, command, ref)) == 0  # uninterrupted
    _killed(_args(tiny, command, out), point)
    assert not out.exists()
    with pytest.raises(FileNotFoundError):
        open_store(out)
    assert list(tmp_path.glob("out.zarr.tmp-*"))  # the partial write is there, under a name nothing reads
    assert main(_args(tiny, command, out)) == 0  # the next run
    xr.testing.assert_identical(content(ref), content(out))
    assert not list(tmp_path.glob("out.zarr.*"))  # it cleared what the killed one left


def test_a_replacement_killed_between_the_renames_leaves_no_store(tiny: dict, tmp_path: Path) -> None:
    args = _args(tiny, "modes", tmp_path / "m.zarr")
    assert main(args) == 0
    ref = content(tmp_path / "m.zarr")
    _killed(args, "store:between-renames")
    assert not (tmp_path / "m.zarr").exists() and list(tmp_path.glob("m.zarr.old-*"))
    assert main(args) == 0
    xr.testing.assert_identical(ref, content(tmp_path / "m.zarr"))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.zarr"]


def test_snakemake_killed_mid_write_resumes_to_identical_stores(tiny: dict, tmp_path: Path) -> None:
    """The whole run (Snakemake and its job) killed while the projection store is being written; `snakemake`
    with the default profile then finishes it, and the stores equal those of an uninterrupted run."""
    from tests.helpers.workflow import snakemake, write_config

    cfg = write_config(
        tmp_path,
        {
            "models": {"tiny": {"spec": str(tiny["spec"])}},
            "images": {"photos": {"source": f"folder:{tiny['photos']}"}},
            "projections": {"images": "photos", "batch_size": 2},
            "analysis": {"device": "cpu"},
        },
    )
    target = "results/projections/tiny/photos.zarr"
    profile = ("--workflow-profile", str(REPO / "workflow/profiles/default"), "--cores", "1")
    ref = {"results/modes/tiny.zarr": tmp_path / "ref_modes.zarr", target: tmp_path / "ref_proj.zarr"}
    assert main(_args(tiny, "modes", ref["results/modes/tiny.zarr"])) == 0
    ref_args = _args(tiny, "project", ref[target])
    ref_args[ref_args.index("--modes") + 1] = str(ref["results/modes/tiny.zarr"])
    assert main(ref_args) == 0
    # 1. the job alone is killed (as a scheduler's time limit would): Snakemake reports it and keeps nothing
    killed = {FAILPOINT_ENV: "stream:write@3"}
    r = snakemake(tmp_path / "run", *profile, target, config=cfg, check=False, env_extra=killed)
    assert r.returncode != 0 and not (tmp_path / "run" / target).exists()
    # 2. Snakemake itself and its job are killed together while the store is half written (a write of this run:
    # step 1's killed job left its own partial store behind, which must not count)
    partial = tmp_path / "run/results/projections/tiny"
    before = set(partial.glob("photos.zarr.tmp-*"))
    env = {**os.environ, FAILPOINT_ENV: "stream:write@2:hang", "HF_HUB_OFFLINE": "1"}
    env["PATH"] = workflow_path(env["PATH"])
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(tmp_path / "run")]
    proc = subprocess.Popen(
        [*cmd, *profile, target, "--configfile", str(cfg)],
        env=env,
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 240

        def writing() -> list[Path]:
            return [d for d in partial.glob("photos.zarr.tmp-*") if d not in before and (d / "q_max/c").exists()]

        while not writing() and time.monotonic() < deadline:
            time.sleep(0.5)
        assert writing(), "the projection job of this run never started writing"
        time.sleep(1)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (tmp_path / "run" / target).exists()
    # 3. Snakemake's own lock outlives a SIGKILL: the next run says so and names --unlock; after `snakemake --unlock`
    # plain `snakemake` again (the profile reruns incomplete jobs) finishes, and the stores are identical
    locked = snakemake(tmp_path / "run", *profile, target, config=cfg, check=False)
    assert locked.returncode != 0 and "--unlock" in locked.stdout + locked.stderr
    snakemake(tmp_path / "run", "--unlock", target, config=cfg)
    snakemake(tmp_path / "run", *profile, target, config=cfg)
    for store, expected in ref.items():
        xr.testing.assert_identical(content(expected), content(tmp_path / "run" / store))
    assert not list((tmp_path / "run/results/projections/tiny").glob("*.tmp-*"))
    assert np.isfinite(open_store(tmp_path / "run" / target).q_max.values).all()
