"""A **model spec** says where a model comes from (the table is in :mod:`qkdissect.models`): ``SOURCE:REST``,
where the text after the source is read by that source (:mod:`.sources`), ``#part`` picks a part of a
checkpoint and ``?k=v&...`` passes options to the model's constructor.

A relative local path (:func:`local_path`, :func:`data_path`) is taken from the working directory as given when a
user types it (a command-line or API argument: ``timm:NAME@../weights/w.safetensors`` from a notebook one folder
down). One that comes from a config (the workflow's jobs run with ``$QKDISSECT_PATHS_FROM_CONFIG=1``) never
climbs out of the folder it is taken from with '..': a config shared with you reads nothing above its run.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..data.files import inside
from ..errors import QKDissectError
from ..locations import data_dir

__all__ = [
    "PATHS_FROM_CONFIG",
    "ModelSpec",
    "data_dir",
    "data_path",
    "from_config",
    "known_options",
    "local_path",
    "parse_options",
]

#: set to 1 (by the workflow, for its jobs): the specs come from a config, their relative paths may not climb
PATHS_FROM_CONFIG = "QKDISSECT_PATHS_FROM_CONFIG"


def from_config() -> bool:
    """Whether the specs read now come from a config (``$QKDISSECT_PATHS_FROM_CONFIG=1``), not from a user's
    command line or Python call."""
    return os.environ.get(PATHS_FROM_CONFIG) == "1"


@dataclass(frozen=True)
class ModelSpec:
    """Where a model comes from. ``weights`` is a local file or directory when given."""

    source: str
    name: str
    weights: Path | None = None
    part: str | None = None
    options: tuple[tuple[str, Any], ...] = ()

    def __str__(self) -> str:
        if self.source in ("simmim", "ijepa") or (self.source == "hf" and self.weights is not None):
            s = f"{self.source}:{self.weights}"
        else:
            s = f"{self.source}:{self.name}"
        if self.weights is not None and self.source == "timm":
            s += f"@{self.weights}"
        if self.part:
            s += f"#{self.part}"
        if self.options:
            s += "?" + "&".join(f"{k}={v}" for k, v in self.options)
        return s

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


#: model options that count something (pixels, heads, blocks): positive integers (with an example each)
_EXAMPLE = {"img_size": 224, "patch_size": 16, "heads": 12, "num_heads": 12, "depth": 12, "embed_dim": 768}
COUNT_OPTIONS = frozenset(_EXAMPLE)
#: the most each counting option may be (and what it counts), far above any published vision transformer: 4096 px a
#: side (ViTs run at 224 to 1024; at 4096 px and 14 px patches one head's attention logits are 29 GB), 256 blocks
#: (ViT-22B: 48), a width of 16384 (ViT-22B: 6144) and 1024 heads; a larger value is a typo, and would fail in the
#: memory allocator with a message that names no option
OPTION_LIMITS = {"img_size": (4096, "px"), "patch_size": (4096, "px"), "depth": (256, "blocks"),
                 "embed_dim": (16384, "channels"), "heads": (1024, "heads"), "num_heads": (1024, "heads")}  # fmt: skip


def parse_options(query: str) -> tuple[tuple[str, Any], ...]:
    """``img_size=224&heads=16`` -> (("img_size", 224), ("heads", 16)); integers and floats are converted."""
    out: list[tuple[str, Any]] = []
    for item in filter(None, query.split("&")):
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise ValueError(f"bad model option {item!r}: expected KEY=VALUE, e.g. timm:NAME@FILE?img_size=224")
        val: Any = value
        for conv in (int, float):
            try:
                val = conv(value)
                break
            except ValueError:
                continue
        if key in COUNT_OPTIONS and (not isinstance(val, int) or val < 1):
            raise ValueError(f"model option {key}={value!r} must be a positive integer, e.g. ?{key}={_EXAMPLE[key]}")
        if key in OPTION_LIMITS and val > OPTION_LIMITS[key][0]:
            limit, unit = OPTION_LIMITS[key]
            raise ValueError(
                f"model option {key}={value} is over the limit of {limit} ({unit}): give at most {limit}, "
                f"e.g. ?{key}={_EXAMPLE[key]}"
            )
        out.append((key, val))
    return tuple(out)


def known_options(what: str, options: tuple[tuple[str, Any], ...], takes: dict[str, Any], why: str = "") -> None:
    """Refuse an option that the source ``what`` would ignore (``takes``: the ones it reads, with an example
    value each; ``why``: why it reads no more)."""
    other = [f"{k}={v}" for k, v in options if k not in takes]
    if other:
        reads = ", ".join(f"?{k}={v}" for k, v in takes.items()) if takes else "no model options"
        raise QKDissectError(
            f"model option {other[0]} is not known to {what}: it takes {reads}{why}; remove it from the spec"
        )


def local_path(p: str, what: str) -> Path:
    """A local path of a spec: absolute as given; relative, from the working directory (from a config: never
    above it)."""
    path = Path(p).expanduser()
    if not path.is_absolute() and from_config():
        inside(path, Path.cwd(), what)
    return path


def data_path(p: str, what: str = "checkpoint") -> Path:
    """A spec's FILE: absolute as given; relative, in the working directory when it is there, else under
    ``$QKDISSECT_DATA``. A path that climbs with '..' is taken from the working directory as given, and refused
    when it comes from a config."""
    path = Path(p).expanduser()
    if path.is_absolute():
        return path
    if not from_config() and _climbs(path):
        return path
    inside(path, Path.cwd(), what)
    if not path.exists():
        candidate = inside(path, data_dir(), what)
        if candidate.exists() or not path.parent.exists():
            return candidate
    return path


def _climbs(path: Path) -> bool:
    return os.path.normpath(path).split(os.sep)[0] == ".."


def hf_spec(rest: str, options: tuple[tuple[str, Any], ...]) -> ModelSpec:
    """``hf:REST``: a local ``save_pretrained`` directory (a path) or a hub id."""
    if rest.startswith(("/", ".", "~")):
        p = local_path(rest, "Hugging Face model directory")
        return ModelSpec("hf", p.name, p, options=options)
    return ModelSpec("hf", rest, options=options)
