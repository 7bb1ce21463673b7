"""``qkdissect fetch SOURCE -o RESULTS``: a published bundle (:mod:`.bundle`) back into a results folder.

SOURCE is a local zip, an http(s) URL of one, or a Zenodo record: its DOI (``10.5281/zenodo.N``, also as a
``https://doi.org/...`` link), its id, or its page (``https://zenodo.org/records/N``). A record's file list comes
from Zenodo's public REST API (``<api>/records/<id>``; ``QKDISSECT_ZENODO_API`` names another server with the
same API, e.g. a sandbox or a test's), and its zip is downloaded and checked against the record's checksum.

Nothing is unpacked before the whole bundle is verified: every member a plain file under a relative path (no
absolute path, no ``..``, no link, no name twice), every member but the crate itself listed in the crate
(``ro-crate-metadata.json``) with a sha256, and every member's content matching it. A bundle that does not verify
writes nothing and is refused with one line naming the first bad file. The verified bundle is unpacked into a
temporary folder beside RESULTS and renamed into place (RESULTS must not exist, or be an empty folder).

The unpacked files get the time of the fetch, the figures, executed notebooks and pages a little older than the
stores they are drawn from, and ``fetched.json`` records where they came from: ``make figures`` (``qkdissect run``)
on them plans only the figures, the claims, the mode atlas and the crate (the workflow's other rules need the
weights; :func:`redraw_arguments`) and redraws them; ``qkdissect audit`` notes, without counting them as missing, the
inputs that were not published (the weights, image sets).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import stat
import tempfile
import time
import urllib.error
import urllib.request
import zipfile
import zlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import QKDissectError
from ..util.hashing import sha256_file
from .audit import CRATE, FETCHED
from .bundle import crate_files, is_redrawable

ZENODO_API = "https://zenodo.org/api"
ZENODO_API_ENV = "QKDISSECT_ZENODO_API"
#: a Zenodo DOI, link to its DOI, record page or bare record id
_DOI = re.compile(r"^(?:https?://(?:dx\.)?doi\.org/)?(?:doi:)?10\.5281/zenodo\.(\d+)$", re.I)
_RECORD_PAGE = re.compile(r"^https?://(?:www\.)?(?:sandbox\.)?zenodo\.org/(?:records?|deposit)/(\d+)/?$", re.I)
_RECORD_ID = re.compile(r"^(?:zenodo:)?(\d+)$")
#: how much older than the stores the redrawable files are left: they are drawn again from them
REDRAW_AGE_S = 3600
TIMEOUT_S = 60
_BLOCK = 1 << 20


@dataclass(frozen=True)
class Fetched:
    """What a fetch wrote: the results folder, its number of files, where they came from."""

    results: Path
    files: int
    source: str
    sha256: str


def zenodo_record(source: str) -> str | None:
    """The Zenodo record id that SOURCE names (its DOI, a DOI link, its page, its id), else None."""
    s = source.strip()
    for pattern in (_DOI, _RECORD_PAGE, _RECORD_ID):
        if m := pattern.match(s):
            return m.group(1)
    return None


def _get(url: str) -> Any:
    if not url.lower().startswith(("http://", "https://")):
        raise QKDissectError(f"{url} is not an http(s) URL: a bundle is fetched over http(s) only")
    request = urllib.request.Request(url, headers={"Accept": "application/json, application/zip, */*"})
    try:
        return urllib.request.urlopen(request, timeout=TIMEOUT_S)  # the scheme is checked above
    except urllib.error.HTTPError as e:
        raise QKDissectError(f"{url}: HTTP {e.code} {e.reason}") from e
    except (urllib.error.URLError, OSError) as e:
        raise QKDissectError(f"{url} cannot be reached ({getattr(e, 'reason', e)}): check the address") from e


def _record_file(record: str) -> tuple[str, str | None, str]:
    """(download URL, "md5:..." checksum or None, file name) of the bundle of a Zenodo record: its one zip."""
    api = os.environ.get(ZENODO_API_ENV, ZENODO_API).rstrip("/")
    url = f"{api}/records/{record}"
    with _get(url) as r:
        try:
            data = json.loads(r.read())
        except json.JSONDecodeError as e:
            raise QKDissectError(f"{url} did not answer JSON ({e}): is it a Zenodo record?") from e
    files = data.get("files") if isinstance(data, dict) else None
    if isinstance(files, dict):  # the newer API's {"entries": {...}}
        files = list((files.get("entries") or {}).values())
    zips = [f for f in files or [] if isinstance(f, dict) and str(f.get("key", "")).lower().endswith(".zip")]
    if len(zips) != 1:
        names = ", ".join(str(f.get("key")) for f in files or [] if isinstance(f, dict)) or "no files"
        raise QKDissectError(
            f"Zenodo record {record} holds {len(zips)} zip files ({names}): a qkdissect bundle is the record's one "
            "zip; give its URL instead"
        )
    f = zips[0]
    links = f.get("links") or {}
    link = links.get("self") or links.get("content") or links.get("download")
    if not link:
        raise QKDissectError(f"Zenodo record {record}: its file {f.get('key')} has no download link")
    return str(link), f.get("checksum"), str(f["key"])


def _download(url: str, dest: Path, checksum: str | None) -> None:
    """Download ``url`` into ``dest``, checking an ``md5:``/``sha256:`` checksum when the record gives one."""
    algo, _, expected = (checksum or "").partition(":")
    h = hashlib.new(algo) if expected and algo in ("md5", "sha256") else None
    with _get(url) as r, dest.open("wb") as out:
        for block in iter(lambda: r.read(_BLOCK), b""):
            out.write(block)
            if h is not None:
                h.update(block)
    if h is not None and h.hexdigest() != expected.lower():
        raise QKDissectError(
            f"{url}: the download's {algo} is {h.hexdigest()}, the record says {expected}: nothing was written; "
            "fetch it again"
        )


@contextlib.contextmanager
def _bundle_file(source: str, scratch: Path) -> Iterator[tuple[Path, str]]:
    """The bundle SOURCE names, as a local file (downloaded into ``scratch``), and a description of it."""
    record = None if Path(source).exists() else zenodo_record(source)
    if record is not None:
        url, checksum, name = _record_file(record)
        dest = scratch / "bundle.zip"
        _download(url, dest, checksum)
        yield dest, f"Zenodo record {record} ({name})"
    elif source.lower().startswith(("http://", "https://")):
        dest = scratch / "bundle.zip"
        _download(source, dest, None)
        yield dest, source
    else:
        path = Path(source)
        if not path.is_file():
            raise QKDissectError(
                f"{source} is neither a file, an http(s) URL nor a Zenodo DOI or record id: name the bundle "
                "(e.g. 10.5281/zenodo.1234567, or results.zip)"
            )
        yield path, str(path.resolve())


def _unsafe(info: zipfile.ZipInfo) -> str | None:
    """Why a member may not be unpacked (a link, an absolute path, a path out of the folder), else None."""
    name = info.filename
    mode = info.external_attr >> 16
    if stat.S_ISLNK(mode):
        return "is a symbolic link"
    if mode and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        return "is not a regular file"
    p = PurePosixPath(name)
    if "\\" in name or "\0" in name or p.is_absolute() or re.match(r"^[A-Za-z]:", name):
        return "has an absolute path"
    if any(part in ("..", "") for part in name.rstrip("/").split("/")) or name.startswith("./"):
        return "points outside the folder (..)"
    return None


def verify(bundle: Path) -> tuple[list[zipfile.ZipInfo], dict[str, str]]:
    """Check every member of ``bundle`` against its crate before anything is written: returns the members (plain
    files) and the crate's digests; the first bad member raises, naming it."""
    try:
        zf = zipfile.ZipFile(bundle)
    except (zipfile.BadZipFile, OSError) as e:
        raise QKDissectError(f"{bundle} is not a zip file ({e}): nothing was written") from e
    with zf:
        infos = zf.infolist()
        for info in infos:
            if why := _unsafe(info):
                raise QKDissectError(f"{info.filename}: {why}: the bundle is refused, nothing was written")
        names = [i.filename for i in infos if not i.is_dir()]
        if len(set(names)) < len(names):
            twice = next(n for n in names if names.count(n) > 1)
            raise QKDissectError(f"{twice}: in the bundle twice: the bundle is refused, nothing was written")
        if CRATE not in names:
            raise QKDissectError(f"{bundle} holds no {CRATE}: not a qkdissect bundle; nothing was written")
        try:
            digests = crate_files(json.loads(zf.read(CRATE)))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise QKDissectError(f"{CRATE}: not JSON ({e}): the bundle is refused, nothing was written") from e
        files = [i for i in infos if not i.is_dir()]
        for info in sorted(files, key=lambda i: i.filename):
            if info.filename != CRATE:
                _check_member(zf, info, digests)
    return files, digests


def _check_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, digests: dict[str, str]) -> None:
    name = info.filename
    expected = digests.get(name)
    if expected is None:
        raise QKDissectError(f"{name}: not listed in the bundle's {CRATE}: the bundle is refused, nothing was written")
    h = hashlib.sha256()
    try:
        with zf.open(info) as fh:
            for block in iter(lambda: fh.read(_BLOCK), b""):
                h.update(block)
    except (zipfile.BadZipFile, OSError, EOFError, zlib.error) as e:  # a CRC error, a damaged or cut member
        raise QKDissectError(f"{name}: unreadable ({e}): the bundle is refused, nothing was written") from e
    if h.hexdigest() != expected:
        raise QKDissectError(
            f"{name}: sha256 {h.hexdigest()[:12]}… is not the crate's {expected[:12]}…: the bundle is refused, "
            "nothing was written"
        )


def _unpack(bundle: Path, files: Iterable[zipfile.ZipInfo], into: Path) -> int:
    n = 0
    with zipfile.ZipFile(bundle) as zf:
        for info in files:
            dest = into.joinpath(*info.filename.split("/"))
            dest.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as src, dest.open("xb") as out:
                shutil.copyfileobj(src, out, _BLOCK)
            dest.chmod(0o644)
            n += 1
    return n


def _set_times(into: Path, now: float) -> None:
    """Every file and folder the time of the fetch; what is drawn from the stores (figures, notebooks, the
    atlas page, the claims) an hour older, so that the workflow draws it again from them."""
    old = now - REDRAW_AGE_S
    for dirpath, _dirs, names in os.walk(into, topdown=False):
        here = Path(dirpath)
        for name in names:
            rel = (here / name).relative_to(into).as_posix()
            t = old if is_redrawable(rel) or rel.startswith("claims/") else now
            os.utime(here / name, (t, t))
        os.utime(here, (now, now))


def fetch_bundle(source: str, output: str | Path) -> Fetched:
    """Fetch, verify and unpack the bundle that ``source`` names into ``output`` (nothing there, or an empty
    folder): nothing is written unless every file verifies."""
    from ..util.atomic import atomic_path

    out = Path(output)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise QKDissectError(f"{out} is not empty: fetch into a new folder (it is never replaced)")
    out.parent.mkdir(parents=True, exist_ok=True)
    with (
        tempfile.TemporaryDirectory(dir=out.parent, prefix=f".{out.name}.tmp-") as scratch,
        _bundle_file(source, Path(scratch)) as (bundle, where),
    ):
        files, _ = verify(bundle)
        digest = sha256_file(bundle)
        with atomic_path(out) as tmp:
            tmp.mkdir()
            n = _unpack(bundle, files, tmp)
            note = {"source": where, "bundle_sha256": digest, "files": n}
            (tmp / FETCHED).write_text(json.dumps(note, indent=1) + "\n")
            _set_times(tmp, time.time())
    return Fetched(out, n, where, digest)


def is_fetched(results: str | Path) -> bool:
    """Whether ``results`` was unpacked from a published bundle (``fetched.json`` there)."""
    return (Path(results) / FETCHED).is_file()


#: the workflow's rules that draw from stores alone, beside the figures' (named by the figure table,
#: workflow/figures.yaml), and its targets
REDRAW_RULES = ("claims", "atlas", "crate", "all", "default")


#: set by ``qkdissect run`` when it restricts the workflow to :func:`redraw_rules` on fetched results
REDRAW_ENV = "QKDISSECT_REDRAW_ONLY"


def _option(args: Sequence[str], *names: str) -> str | None:
    """The value of the last of ``names`` in Snakemake's ``args`` (``--x V`` or ``--x=V``)."""
    found = None
    for i, arg in enumerate(args):
        name, eq, value = arg.partition("=")
        if name in names:
            found = value if eq else (args[i + 1] if i + 1 < len(args) else None)
    return found


def _figure_table(snakefile: Path) -> Path | None:
    for cand in (snakefile.parent / "workflow" / "figures.yaml", snakefile.parent / "figures.yaml"):
        if cand.is_file():
            return cand
    return None


def redraw_arguments(args: Sequence[str]) -> list[str]:
    """The Snakemake arguments that restrict a run on fetched results to :func:`redraw_rules`
    (``--allowed-rules``), where the working directory's ``results`` were fetched; none otherwise (or where
    ``--allowed-rules`` is given already)."""
    import yaml

    workdir = Path(_option(args, "--directory", "-d") or ".")
    if not is_fetched(workdir / "results") or _option(args, "--allowed-rules") is not None:
        return []
    given = _option(args, "--snakefile", "-s")
    snakefile = (
        Path(given)
        if given
        else next((f for f in (Path("Snakefile"), Path("workflow/Snakefile")) if f.is_file()), Path("Snakefile"))
    )
    table = _figure_table(snakefile)
    figures = list(yaml.safe_load(table.read_text()) or {}) if table else []
    return ["--allowed-rules", *REDRAW_RULES, *figures]


def check_redraw_only(results: str | Path) -> str | None:
    """Why the workflow may not run on ``results`` as it was started (fetched results, and not through
    ``qkdissect run``, which lets only the rules that draw from the stores run), else None."""
    if not is_fetched(results) or os.environ.get(REDRAW_ENV) == "1":
        return None
    return (
        f"{results} holds results fetched from a published bundle ({FETCHED}): their stores are the bundle's, and "
        "the rules that made them need the weights; run `make figures` or `qkdissect run` (which let only the "
        "figures, the claims, the mode atlas and the crate be made), or snakemake with --allowed-rules "
        f"{' '.join(REDRAW_RULES)} and the figures' rules, and {REDRAW_ENV}=1"
    )
