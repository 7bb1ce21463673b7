"""What the paper's models download, computed from the stand-ins' real configurations: the tensors (names, shapes,
dtypes) of the one weights file the package fetches for each model (a hub repository's ``model.safetensors``,
else its ``pytorch_model.bin``; the SimMIM and I-JEPA checkpoints as their repositories save them), built on the
meta device, so nothing is allocated. The stand-ins hold exactly the real files' tensors (:mod:`rehearsal.hub`),
so their byte count is the real files' to within the few KB of a file's header. What a released checkpoint holds
beyond its weights is not known here (the stand-ins' I-JEPA optimizer state is empty): its size is a lower bound.

    python -m rehearsal.sizes            # the table of docs/how-to/paper-fig3.md (Markdown)
"""

from __future__ import annotations

import argparse
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import torch

from .hub import ijepa_checkpoint, legacy_buffers, meta_model, repo_config, simmim_state_dict
from .hub_repos import HUB_REPOS, LOCAL_CHECKPOINTS, SAFETENSORS, HubRepo, LocalCheckpoint


@dataclass(frozen=True)
class Download:
    """One model's weights file: the catalogue keys it serves, the file, its tensors' parameters and bytes."""

    keys: tuple[str, ...]
    file: str
    parameters: int
    bytes: int
    lower_bound: bool = False  # the released file may hold more than its weights (optimizer state)


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for v in obj.values():
            yield from _tensors(v)
    elif isinstance(obj, (list, tuple)):
        for v in obj:
            yield from _tensors(v)


def _count(obj: Any) -> tuple[int, int]:
    """(elements, bytes) of every tensor in a nested checkpoint (buffers included: they are in the file)."""
    tensors = list(_tensors(obj))
    return sum(t.numel() for t in tensors), sum(t.numel() * t.element_size() for t in tensors)


def hub_download(repo: HubRepo, depth: int | None = None) -> Download:
    """The weights file the package fetches from ``repo`` (model.safetensors when the repository ships one); with
    ``depth``, that of the rehearsal's stand-in of that many blocks."""
    state = dict(meta_model(repo, depth).state_dict())
    state.update(legacy_buffers(repo, repo_config(repo, depth)))
    n, size = _count(state)
    return Download((repo.key,), SAFETENSORS if SAFETENSORS in repo.weights else repo.weights[0], n, size)


def local_download(c: LocalCheckpoint, depth: int | None = None) -> Download:
    """A SimMIM or I-JEPA checkpoint as its repository saves it (the I-JEPA file serves encoder and predictor);
    with ``depth``, the rehearsal's stand-in of that many blocks (the I-JEPA predictor's too)."""
    lay = c.layout
    if c.family == "SimMIM":
        obj: Any = simmim_state_dict(lay, depth or lay["depth"], 0, device="meta")
        keys: tuple[str, ...] = (c.key,)
    else:
        obj = ijepa_checkpoint(lay, depth or lay["depth"], depth or lay["pred_depth"], 0, device="meta")
        keys = (c.key, c.key.replace("encoder", "predictor"))
    n, size = _count(obj)
    return Download(keys, c.filename, n, size, lower_bound=True)


def downloads(depth: int | None = None) -> list[Download]:
    """Every file the paper's 16 models and the I-JEPA predictor read, hub repositories first."""
    hub = [hub_download(r, depth) for r in HUB_REPOS.values()]
    return [*hub, *(local_download(c, depth) for c in LOCAL_CHECKPOINTS.values())]


def markdown(rows: list[Download] | None = None) -> str:
    """The table: model(s), where from, file, parameters (millions), GB (10^9 bytes); and the total."""
    rows = downloads() if rows is None else rows
    lines = ["| model | from | file | parameters (M) | GB |", "| --- | --- | --- | --- | --- |"]
    for d in rows:
        hub = next((r.repo_id for r in HUB_REPOS.values() if r.key == d.keys[0]), None)
        where = f"Hugging Face `{hub}`" if hub else "you, under `$QKDISSECT_DATA/weights/`"
        gb = f"{'at least ' if d.lower_bound else ''}{d.bytes / 1e9:.2f}"
        lines.append(f"| {', '.join(d.keys)} | {where} | `{d.file}` | {d.parameters / 1e6:.1f} | {gb} |")
    hub_gb = sum(d.bytes for d in rows if not d.lower_bound) / 1e9
    local_gb = sum(d.bytes for d in rows if d.lower_bound) / 1e9
    lines += ["", f"In all: {hub_gb:.1f} GB from the Hugging Face hub and at least {local_gb:.1f} GB of checkpoints "
              f"you download yourself, {hub_gb + local_gb:.1f} GB of disk."]  # fmt: skip
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m rehearsal.sizes", description=__doc__.split("\n\n")[0])
    p.parse_args(argv)
    print(markdown(), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
