"""The prepared GPU check (benchmarks/gpu_check.py) cannot rot: its tiny mode runs here on the CPU, CPU against
CPU, and its two comparisons are shown to fail on perturbed results while ignoring sign flips of a mode."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.helpers import REPO

sys.path.insert(0, str(REPO / "benchmarks"))

import gpu_check
from qkdissect.core.modes import Modes, qk_modes


def test_tiny_run_writes_every_figure(tmp_path: Path) -> None:
    assert gpu_check.main(["--tiny", "--out", str(tmp_path)]) == 0
    out = json.loads((tmp_path / "results_check_cpu_tiny.json").read_text())
    assert [p.name for p in tmp_path.iterdir()] == ["results_check_cpu_tiny.json"]  # no temporary file left
    assert {"machine", "args", "tolerances", "modes", "modes_total_device_s", "projections", "checks_ok"} <= set(out)
    assert {"torch", "cuda", "timm", "device_name", "cudnn_allow_tf32"} <= set(out["machine"])
    assert out["checks_ok"] is True
    modes = out["modes"]
    assert {(r["name"], r["dtype"]) for r in modes} == {
        (n, d) for n in gpu_check.TINY_SHAPES for d in ("float32", "float64")
    }
    for r in modes:
        assert r["check"]["ok"] and r["check"]["modes_compared"] > 0
        assert r["device_s"] > 0 and r["cpu_over_device"] > 0
    (proj,) = out["projections"]
    assert proj["batch"] == 4 and proj["projection_images_per_s"] > 0 and proj["bare_images_per_s"] > 0
    assert proj["check"]["ok"] and proj["check"]["max_rel_err"] == 0.0  # CPU against CPU: the same numbers
    assert proj["check"]["top1_compared"] > 0


def _modes(seed: int = 0) -> Modes:
    return qk_modes(*gpu_check.make_weights((2, 3, 32, 6), seed), dtype="float64", device="cpu")


def test_compare_modes_ignores_sign_flips_and_catches_errors() -> None:
    ref = _modes()
    assert gpu_check.compare_modes(ref, ref, "float64").ok
    flip = torch.ones(ref.S.shape[-1], dtype=ref.U.dtype)
    flip[::2] = -1  # u_n -> -u_n and v_n -> -v_n: the same W_qk
    assert gpu_check.compare_modes(Modes(ref.U * flip, ref.S, ref.V * flip), ref, "float64").ok
    s = ref.S.clone()
    s[1, 2, 0] *= 1 + 1e-6
    bad_s = gpu_check.compare_modes(Modes(ref.U, s, ref.V), ref, "float64")
    assert not bad_s.ok and bad_s.max_s_rel_err == pytest.approx(1e-6, rel=1e-3)
    v = ref.V.clone()
    v[0, 1, :, 0] = ref.U[0, 1, :, 0]  # mode 0 of one head: a different cosine
    assert not gpu_check.compare_modes(Modes(ref.U, ref.S, v), ref, "float64").ok
    assert not gpu_check.compare_modes(_modes(seed=1), ref, "float32").ok  # other weights fail at float32's tolerance


def test_compare_scores_catches_errors_and_swapped_top_images() -> None:
    rng = np.random.default_rng(0)
    ref = rng.standard_normal((4, 2, 3, 5, 2))
    same = gpu_check.compare_scores(ref, ref)
    assert same["ok"] and same["max_rel_err"] == 0.0 and same["top1_compared"] > 0
    scale = np.abs(ref).max(axis=(0, 2, 3, 4), keepdims=True)
    assert gpu_check.compare_scores(ref + 1e-4 * scale * rng.standard_normal(ref.shape), ref)["ok"]
    assert not gpu_check.compare_scores(ref * (1 + 2e-2), ref)["ok"]
    # a mode whose best image leads clearly, and the device ranks another image first
    ref[:, 1, 2, 3, 0] = [0.10, 1.0, 0.50, 0.20]
    test = ref.copy()
    test[:, 1, 2, 3, 0] = [0.10, 0.99, 1.0, 0.20]
    swapped = gpu_check.compare_scores(test, ref)
    assert not swapped["ok"] and swapped["top1_same"] == swapped["top1_compared"] - 1


def test_output_names() -> None:
    assert gpu_check.slug("NVIDIA H200") == "nvidia-h200"
    assert gpu_check.slug("../..") == "device"
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert gpu_check.output_path(Path("/o"), cuda, False, "NVIDIA H200") == Path("/o/results_gpu_nvidia-h200.json")
    assert gpu_check.output_path(Path("/o/x.json"), cpu, True, "EPYC") == Path("/o/x.json")
    assert gpu_check.output_path(None, cpu, True, "EPYC").name == "results_check_cpu_tiny.json"


def test_a_failing_model_is_recorded_and_fails_the_check(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def broken(name: str, *_: object) -> dict[str, object]:
        raise RuntimeError(f"{name} broke")

    monkeypatch.setattr(gpu_check, "check_model", broken)
    args = gpu_check.parse(["--tiny"])
    (row,) = gpu_check.check_projections({"X": "x"}, torch.device("cpu"), args, tmp_path)
    assert row["error"] == "RuntimeError: X broke" and row["check"]["ok"] is False
