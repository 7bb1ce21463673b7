"""Files under a configured root, never outside it.

An image folder, a mask dataset or a text corpus is a root the user names; what is read (and hashed, and
recorded in a store's provenance) must lie inside it. A symbolic link whose target leaves the root (say
``photos/x.jpg -> /etc/shadow``) is skipped and named, never read. Relative weights paths from a config are
resolved the same way: inside the working directory or ``$QKDISSECT_DATA``, never above them ('..').
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import QKDissectError

log = logging.getLogger("qkdissect")


class OutsideRootError(QKDissectError, ValueError):
    """A path that would lead outside the folder it must stay in."""


def within(path: Path, root: Path) -> bool:
    """Whether ``path`` (symbolic links resolved) lies inside ``root`` (resolved)."""
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError, RuntimeError):  # RuntimeError: a symlink loop
        return False
    return True


@dataclass
class Listing:
    """The regular files found under a root, and the links that were skipped because they leave it."""

    root: Path
    files: list[Path] = field(default_factory=list)
    outside: list[Path] = field(default_factory=list)

    def warn(self, what: str) -> None:
        if self.outside:
            shown = ", ".join(f"{p.relative_to(self.root)} -> {_target(p)}" for p in self.outside[:5])
            more = f" (+{len(self.outside) - 5} more)" if len(self.outside) > 5 else ""
            log.warning("%s %s: skipped %d links that leave the folder: %s%s", what, self.root,
                        len(self.outside), shown, more)  # fmt: skip

    def outside_names(self) -> list[str]:
        return [p.relative_to(self.root).as_posix() for p in self.outside]


def _target(p: Path) -> str:
    try:
        return str(p.resolve())
    except (OSError, RuntimeError):
        return "?"


def list_files(
    root: Path, suffixes: Iterable[str] | None = None, *, pattern: str = "*", recursive: bool = True
) -> Listing:
    """Regular files under ``root`` matching ``pattern`` (and ``suffixes``, case-insensitive), sorted; files
    reached through links that leave ``root`` are set aside in ``outside``. Directories linked from outside are
    not entered (pathlib's glob does not follow directory links)."""
    wanted = {s.lower() for s in suffixes} if suffixes is not None else None
    found = root.rglob(pattern) if recursive else root.glob(pattern)
    listing = Listing(root)
    for p in sorted(found):
        if wanted is not None and p.suffix.lower() not in wanted:
            continue
        if not within(p, root):
            if p.is_symlink() or p.exists():
                listing.outside.append(p)
            continue
        if p.is_file():
            listing.files.append(p)
    return listing


def inside(path: str | Path, base: Path, what: str) -> Path:
    """``base / path``, refused when ``path`` climbs out of ``base`` with '..' (links inside ``base`` are the
    user's own layout, e.g. a weights folder linked to scratch space, and are followed)."""
    rel = os.path.normpath(path)
    if Path(rel).is_absolute() or rel == ".." or rel.startswith(".." + os.sep):
        raise OutsideRootError(
            f"{what} {path} leads outside {base}: give an absolute path, or a path inside {base} without '..'"
        )
    return base / path
