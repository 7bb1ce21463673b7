"""Batches that shrink when they do not fit: an out-of-memory error splits the batch in halves and retries, and
the size that worked is kept for the batches after it. Results are the same as for one big batch (every
computation here is per image), so a run that had to shrink records only that it did, in its provenance."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from typing import Any, TypeVar

import torch

log = logging.getLogger("qkdissect")

T = TypeVar("T")

_OOM_MESSAGES = ("out of memory", "can't allocate memory", "not enough memory", "cannot allocate memory")


def is_out_of_memory(err: BaseException) -> bool:
    """CUDA's OutOfMemoryError, and the CPU allocator's and MPS's out-of-memory RuntimeErrors."""
    if isinstance(err, torch.OutOfMemoryError):
        return True
    return isinstance(err, RuntimeError) and any(m in str(err).lower() for m in _OOM_MESSAGES)


def concat(parts: list[Any]) -> Any:
    """Join per-piece results along the batch dim: tensors, tuples/lists and dicts of them, and dataclasses."""
    first = parts[0]
    if len(parts) == 1:
        return first
    if isinstance(first, torch.Tensor):
        return torch.cat(parts, dim=0)
    if dataclasses.is_dataclass(first) and not isinstance(first, type):
        return type(first)(**{f.name: concat([getattr(p, f.name) for p in parts]) for f in dataclasses.fields(first)})
    if isinstance(first, tuple | list):
        return type(first)(concat([p[i] for p in parts]) for i in range(len(first)))
    if isinstance(first, dict):
        return {k: concat([p[k] for p in parts]) for k in first}
    raise TypeError(f"cannot join batch results of type {type(first).__name__}")


class AdaptiveBatch:
    """Call ``fn`` on (a batch along dim 0 of) ``x``; on out of memory, halve and retry down to one item.

    >>> run = AdaptiveBatch("project")
    >>> out = run(lambda xb: model(xb), x)    # doctest: +SKIP
    """

    def __init__(self, what: str) -> None:
        self.what = what
        self.limit: int | None = None  # the largest size that has fit since the first out-of-memory error
        self.requested = 0
        self.retries = 0

    def __call__(self, fn: Callable[[torch.Tensor], T], x: torch.Tensor) -> T:
        self.requested = max(self.requested, x.shape[0])
        size = min(x.shape[0], self.limit or x.shape[0])
        parts = []
        start = 0
        while start < x.shape[0]:
            piece = x[start : start + size]
            try:
                parts.append(fn(piece))
            except Exception as e:
                if not is_out_of_memory(e):
                    raise
                if size == 1:
                    raise RuntimeError(
                        f"{self.what}: out of memory even for a batch of one image ({e}). Free memory on the "
                        "device (other jobs?), use --device cpu, or request more memory (resources.*.mem_mb)."
                    ) from e
                if torch.cuda.is_available():
                    torch.cuda.empty_cache()
                self.retries += 1
                failed, size = size, max(1, size // 2)
                self.limit = size
                log.warning("%s: out of memory at batch %d; retrying with batches of %d", self.what, failed, size)
                continue
            start += piece.shape[0]
        return concat(parts)

    def record(self) -> dict[str, Any]:
        """What the provenance says about the batches: requested size, smallest size used, retries."""
        return {"requested": self.requested, "used": self.limit or self.requested, "oom_retries": self.retries}
