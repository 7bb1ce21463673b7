"""The shape the config check knows for the offline default's model is its real weights' shape."""

from __future__ import annotations

import json
import struct
from pathlib import Path

from qkdissect.catalogue import KNOWN_MODELS

MODEL = "dinov2-vits14-imgfocus"


def test_the_offline_defaults_shape_is_its_weights(assets: Path, dinov2_file: Path) -> None:
    """The catalogue's (layers, heads, d_head) against the real checkpoint's header (layers and width)."""
    raw = dinov2_file.read_bytes()[:200_000]
    header = json.loads(raw[8 : 8 + struct.unpack("<Q", raw[:8])[0]])
    qkv = {k: v["shape"] for k, v in header.items() if k.endswith("attn.qkv.weight")}
    layers, heads, d_head = KNOWN_MODELS[MODEL].shape or (0, 0, 0)
    assert len(qkv) == layers and all(s == [3 * heads * d_head, heads * d_head] for s in qkv.values())
