"""Figure entries of the config checked against the models' shapes before any job runs: every bad mode, head,
layer range and colour named at once, with the valid range."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from qkdissect.catalogue import KNOWN_MODELS
from qkdissect.config_check import config_problems

MODEL = "dinov2-vits14-imgfocus"


def shape_of(name: str) -> tuple[int, int, int] | None:
    return KNOWN_MODELS[name].shape if name in KNOWN_MODELS else None


def test_every_bad_entry_is_named_with_its_range() -> None:
    config = {
        "models": {MODEL: {"color": "tab:orang"}, "custom": {"spec": "timm:x@w.safetensors", "color": "C3"}},
        "figures": {
            "fig4": [{"model": MODEL, "modes": [[50, 3, 0], [3, 2, 1, "-"], [1, 9, 70]]}],
            "galleries": {"g": [{"model": MODEL, "modes": "auto", "layers": [4, 12]}]},
            "s17": {"dog": {"model": MODEL, "modes": [[11, 5, 63]]}, "cat": {"model": "custom", "modes": [[99, 0, 0]]}},
            "fig5": {"model": MODEL, "layer_heads": [[2, 6]]},
        },
    }
    problems = config_problems(config, shape_of)
    size = f"({MODEL}: layers 0-11, heads 0-5, modes 0-63)"
    assert problems == [
        f"figures.fig4[0].modes[0] [50, 3, 0]: layer 50 is not in 0-11 {size}",
        f"figures.fig4[0].modes[2] [1, 9, 70]: head 9 is not in 0-5, mode 70 is not in 0-63 {size}",
        f"figures.galleries.g[0].layers [4, 12]: last layer 12 is not in 0-11 {size}",
        f"figures.fig5.layer_heads[0] [2, 6]: head 6 is not in 0-5 {size}",
        f"models.{MODEL}.color 'tab:orang' is not a colour matplotlib knows (e.g. 'tab:blue', 'C3', '#1f77b4')",
    ]  # the custom model's shape is unknown before it is loaded: its pass checks it


def test_the_offline_defaults_shape_is_its_weights(assets: Path, dinov2_file: Path) -> None:
    """The catalogue's (layers, heads, d_head) against the real checkpoint's header (layers and width)."""
    raw = dinov2_file.read_bytes()[:200_000]
    header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])
    qkv = {k: v["shape"] for k, v in header.items() if k.endswith("attn.qkv.weight")}
    layers, heads, d_head = KNOWN_MODELS[MODEL].shape or (0, 0, 0)
    assert len(qkv) == layers and all(s == [3 * heads * d_head, heads * d_head] for s in qkv.values())


@pytest.mark.parametrize("name", sorted(KNOWN_MODELS))
def test_every_known_model_has_a_shape(name: str) -> None:
    layers, heads, d_head = KNOWN_MODELS[name].shape or (0, 0, 0)
    assert layers >= 1 and heads >= 1 and d_head >= 1
