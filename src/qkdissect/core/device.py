"""Where the math runs: ``auto`` picks CUDA when there is one; a GPU asked for where there is none is a recorded
fallback to the CPU (same results, only slower), never an error."""

from __future__ import annotations

import warnings

import torch

GPU_FALLBACK = (
    "fell back to CPU: {requested!r} was requested but torch sees no CUDA device here "
    "(torch {torch}, CUDA build: {cuda})"
)


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """``auto`` -> CUDA when available else CPU. ``cuda`` where there is none falls back to the CPU with a
    warning (results are the same, only slower); :func:`device_record` puts that into the provenance."""
    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        msg = GPU_FALLBACK.format(requested=str(device), torch=torch.__version__, cuda=torch.version.cuda)
        warnings.warn(msg, RuntimeWarning, stacklevel=2)
        return torch.device("cpu")
    return dev


def device_record(requested: str | torch.device | None, used: torch.device) -> dict[str, str | None]:
    """The device part of a provenance record: what was asked for, what ran, and why they differ."""
    req = str(requested or "auto")
    fallback = None
    if req.startswith("cuda") and used.type != "cuda":
        fallback = GPU_FALLBACK.format(requested=req, torch=torch.__version__, cuda=torch.version.cuda)
    return {"requested": req, "used": str(used), "fallback": fallback}
