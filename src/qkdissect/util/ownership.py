"""What an output path may replace: an output owns only what its command writes.

An existing output is replaced only by one of the same kind: a store by a store of the same kind (its
``attrs["qkdissect_schema"]``), a page folder by the same page (the provenance sidecar at its root), a file by a
file of the same format (PNG, PDF, ZIP, JSON, HTML, text). An empty folder may be replaced. Two things are never
replaced, whatever the options:

- a folder that holds anything else (a results folder, a folder of stores, a user's documents);
- a command's own input, or a folder that holds one, or anything inside an input store or file.

Anything else (a store of another kind, a damaged store, a file of another format, a link) is refused with one line
unless the command is given ``--force``. :func:`check_output` is called by the command line before any work;
:func:`check_replace` is the last check before the rename that replaces an output
(:func:`qkdissect.util.atomic.atomic_path`), so the Python API and every writer inside the package are held to the
same rule, whatever called them.
"""

from __future__ import annotations

import json
import os
import threading
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from ..errors import QKDissectError

#: the kind of an output that is not there, and of an empty folder: both may be written
ABSENT = "nothing"
EMPTY = "an empty folder"
#: file formats told apart by their first bytes
_MAGIC = ((b"\x89PNG\r\n\x1a\n", "PNG"), (b"%PDF-", "PDF"), (b"PK\x03\x04", "ZIP"), (b"PK\x05\x06", "ZIP"))
#: a Zarr v3 store's root metadata, whose attributes name the kind of a store of ours (``qkdissect_schema``:
#: ``KIND/vN``, see :mod:`qkdissect.stores.schema`)
ROOT_META = "zarr.json"
SCHEMA_ATTR = "qkdissect_schema"
_forced: set[str] = set()  # outputs a command was told to replace (--force), absolute
_guard = threading.Lock()


class OutputExistsError(QKDissectError):
    """An output path that holds something this command did not write (or one of its inputs)."""


def kind_of(path: str | Path) -> str | None:
    """What ``path`` holds, in words: :data:`ABSENT`, :data:`EMPTY`, ``a modes store``, ``a zarr store of
    unknown kind``, ``an atlas page``, ``a PNG file``, ``a symbolic link``, ...; None for a folder that holds
    anything else (never replaced)."""
    p = Path(path)
    if p.is_symlink():
        return "a symbolic link"
    if not p.exists():
        return ABSENT
    if p.is_dir():
        return _folder_kind(p)
    if p.is_file():
        return _a(f"{_format(p)} file")
    return "a special file (not a regular file)"


def _folder_kind(p: Path) -> str | None:
    try:
        names = sorted(os.listdir(p))
    except OSError:
        return None
    if not names:
        return EMPTY
    if ROOT_META in names:
        return _store_kind(p)
    sidecars = [n for n in names if n.endswith(".provenance.json") and (p / n).is_file()]
    if len(sidecars) == 1:
        return f"{_a(sidecars[0].removesuffix('.provenance.json'))} page"
    return None


def _store_kind(store: Path) -> str:
    try:
        too_big = (store / ROOT_META).stat().st_size > 64 << 20  # a root zarr.json of ours is a few hundred kB
    except OSError:
        too_big = True
    kind = "" if too_big else _schema(store).split("/")[0]
    return f"{_a(kind.replace('_', '-'))} store" if kind else "a zarr store of unknown kind"


def _schema(store: Path) -> str:
    """The ``qkdissect_schema`` attribute in a store's root metadata ("" where there is none, or the metadata is no
    JSON: a damaged store, or a zarr store of someone else's)."""
    return str(root_attrs(store).get(SCHEMA_ATTR, ""))


def root_attrs(store: Path) -> dict[str, Any]:
    """A store's root attributes as written in its ``zarr.json`` (empty where there is none or it is no JSON)."""
    try:
        meta = json.loads((store / ROOT_META).read_text())
    except (OSError, ValueError):
        return {}
    attrs = meta.get("attributes") if isinstance(meta, dict) else None
    return dict(attrs) if isinstance(attrs, dict) else {}


def _a(noun: str) -> str:
    """``noun`` with its indefinite article, by its sound: an atlas, an empty file, an HTML file, a PNG file."""
    word = noun.split(" ")[0]
    acronym_vowel = word.isupper() and word[:1] in "AEFHILMNORSX"  # read letter by letter: aitch, ef, em, ...
    return f"{'an' if word[:1] in 'aeiou' or acronym_vowel else 'a'} {noun}"


def holding_only(names: Iterable[str]) -> Callable[[Path], bool]:
    """An ``owned`` test for :func:`check_replace`: a real folder (not a link) that holds only ``names`` (what a
    writer alone puts there: one that failed half way, or was emptied, is its own)."""
    allowed = set(names)
    return lambda folder: folder.is_dir() and not folder.is_symlink() and {p.name for p in folder.iterdir()} <= allowed


def _format(p: Path) -> str:
    try:
        with p.open("rb") as fh:
            head = fh.read(1024)
    except OSError:
        return "unreadable"
    for magic, name in _MAGIC:
        if head.startswith(magic):
            return name
    text = head.lstrip()
    if text[:1] in (b"{", b"["):
        return "JSON"
    if text[:14].lower().startswith((b"<!doctype html", b"<html")):
        return "HTML"
    if not head:
        return "empty"
    try:
        head.decode("utf-8")
    except UnicodeDecodeError:
        return "binary"
    return "text"


def _abs(path: str | Path) -> Path:
    """The absolute path, its last link (if any) not followed; its folders resolved."""
    p = Path(os.path.abspath(path))
    return p.parent.resolve() / p.name


def _inside(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


def _check_inputs(out: Path, inputs: Iterable[str | Path]) -> None:
    for given in inputs:
        inp = Path(given)
        if not (inp.exists() or inp.is_symlink()):
            continue
        real = inp.resolve()
        for o in {out, out.resolve()}:
            if _inside(real, o):
                what = "is" if real == o else "holds"
                raise OutputExistsError(
                    f"output {o} {what} an input of this command ({given}): it is never replaced; give another "
                    "output path"
                )
            if _inside(o, real) and (real.is_file() or (real / "zarr.json").is_file()):
                raise OutputExistsError(f"output {o} lies inside the input {given}: give an output path outside it")


def _check_parents(out: Path) -> None:
    for parent in out.parents:
        if parent.exists() and not parent.is_dir():
            raise OutputExistsError(f"cannot write {out}: {parent} is a file, not a folder: give another output path")


def check_output(path: str | Path, writes: str, inputs: Iterable[str | Path] = (), force: bool = False) -> None:
    """Refuse, before any work, an output ``path`` that this command would not own: one of its ``inputs`` (or a
    folder holding one, or a path inside an input store or file), a folder holding anything else, or, unless
    ``force``, anything but nothing, an empty folder or what the command writes (``writes``: a phrase of
    :func:`kind_of`, e.g. ``a scores store``). With ``force`` the output is replaced (once the new one is
    complete)."""
    out = _abs(path)
    if str(path) in ("", ".", "..") or out == Path(out.anchor) or out == Path.home():
        raise OutputExistsError(f"output {str(path)!r} ({out}) is a folder that is never replaced: name a new path")
    _check_parents(out)
    _check_inputs(out, inputs)
    kind = kind_of(out)
    if kind in (ABSENT, EMPTY, writes):
        return
    if kind is None:
        raise OutputExistsError(_foreign(out))
    if not force:
        raise OutputExistsError(
            f"output {path} is {kind}, not {writes}: give another output path, or --force to replace it"
        )
    with _guard:
        _forced.add(str(out))


def _foreign(out: Path) -> str:
    try:
        n = len(os.listdir(out))
    except OSError:
        n = 0
    return (
        f"output {out} is a folder holding {n} file{'s' if n != 1 else ''} or folder{'s' if n != 1 else ''} this "
        "command did not write (not a store or page of its kind): it is never replaced, not even with --force; "
        "give a new path (e.g. a .zarr name inside it)"
    )


def check_replace(final: Path, tmp: Path, owned: Callable[[Path], bool] | None = None) -> None:
    """Refuse to rename ``tmp`` over ``final`` unless ``final`` is nothing, an empty folder, of the same kind as
    ``tmp``, accepted by ``owned`` (a writer's own test, e.g. a folder it alone writes), or of another kind that
    the command was told to replace (``--force``, :func:`check_output`)."""
    final = _abs(final)
    old = kind_of(final)
    if old in (ABSENT, EMPTY) or (owned is not None and owned(final)):
        return
    new = kind_of(tmp)
    if old == new:
        return
    with _guard:
        forced = str(final) in _forced
    if old is None:
        raise OutputExistsError(_foreign(final))
    if not forced:
        raise OutputExistsError(
            f"output {final} is {old}, not {new}: it is left as it is and nothing was written; give another "
            "output path, or --force to replace it"
        )


def forget_forced() -> None:
    """Forget the outputs a command was told to replace (when it ends)."""
    with _guard:
        _forced.clear()
