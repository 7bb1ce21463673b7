"""The ImageNet validation split as the Hugging Face hub stores it: the ``ILSVRC/imagenet-1k`` dataset repository's
``data/validation-XXXXX-of-YYYYY.parquet`` files (14 files, 50,000 rows), each row an ``image`` struct
``{bytes, path}`` (the JPEG as ImageNet ships it, and its name ``ILSVRC2012_val_00000001_n01751748.JPEG``) and an
integer ``label`` (0-999, the sorted-wnid order).

Where the files are found (nothing is ever downloaded: the hub cache is read as with ``HF_HUB_OFFLINE=1``):

- a **hub cache** (``$HF_HUB_CACHE``, else ``$HF_HOME/hub``, else ``~/.cache/huggingface/hub``), or a folder given in
  the spec that holds ``datasets--ILSVRC--imagenet-1k``, or that repository folder itself: the revision is
  ``refs/main`` (or the ref or commit the spec names), the files ``snapshots/<commit>/data/validation-*.parquet``
  (links into ``blobs/``, which stay inside the repository folder);
- a plain folder with ``data/validation-*.parquet`` or ``validation-*.parquet`` (``hf download --local-dir``).

Reading is memory-bounded: listing reads only the ``image.path`` and ``label`` columns; an image is read from its
(file, row group, row), each process keeping the image bytes of its last :data:`CACHED_GROUPS` row groups (at most
:data:`CACHED_BYTES`), so that a pass over the images in id order reads every row group once when the files hold
their rows in id order (as the rehearsal copies do; :func:`list_rows` warns when a split does not, and every
image read out of order then costs a row group). A figure's few images cost one row group each.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections import OrderedDict
from dataclasses import dataclass, field
from itertools import pairwise
from pathlib import Path
from typing import Any

from ..errors import QKDissectError
from .files import list_files
from .labels import imagenet_classes

log = logging.getLogger(__name__)

REPO_ID = "ILSVRC/imagenet-1k"
REPO_FOLDER = "datasets--ILSVRC--imagenet-1k"
SPLIT = "validation"
#: row groups whose image bytes each process keeps (the Hugging Face writers put 100 images in a row group, ~13 MB
#: of ImageNet JPEGs), and the most bytes they may hold (the row group being read is always kept)
CACHED_GROUPS = 4
CACHED_BYTES = 256 * 2**20
_SHARD = re.compile(rf"{SPLIT}-(\d{{5}})-of-(\d{{5}})\.parquet")
_REVISION = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_VAL_NAME = re.compile(r"(.+?)(?:_(n\d{8}))?")
DOWNLOAD_HINT = (
    f"get it with `hf download {REPO_ID} --repo-type dataset --include 'data/{SPLIT}-*'` (a gated dataset: accept "
    "its terms on the hub and log in first), on a machine with internet, into the same hub cache"
)


class ParquetSourceError(QKDissectError):
    pass


def hub_cache() -> Path:
    """The Hugging Face hub cache, as huggingface_hub resolves it from the environment now."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "huggingface" / "hub"


def parse_spec(rest: str) -> tuple[Path | None, str | None]:
    """The part of an ``imagenet-hf[:LOCATION][@REVISION]`` spec after ``imagenet-hf`` -> (location, revision)."""
    location, revision = rest, None
    if "@" in rest:
        head, _, tail = rest.rpartition("@")
        if "/" not in tail and not Path(rest.lstrip(":")).expanduser().exists():
            location, revision = head, tail
            if not _REVISION.fullmatch(revision):
                raise ParquetSourceError(f"imagenet-hf revision {revision!r}: use a commit hash or a ref name")
    location = location.removeprefix(":")
    return (Path(location).expanduser() if location else None), revision


@dataclass
class Split:
    """The parquet files of the split: ``root`` is the folder they must stay in (links leaving it are skipped)."""

    root: Path
    files: list[Path]
    revision: str | None
    outside: list[str] = field(default_factory=list)


def _repo_folder(base: Path) -> Path | None:
    if (base / REPO_FOLDER).is_dir():
        return base / REPO_FOLDER
    if base.name == REPO_FOLDER or (base / "snapshots").is_dir():
        return base
    if base.parent.name == "snapshots":  # a snapshot folder given directly
        return base.parent.parent
    return None


def _commit(repo: Path, revision: str | None, base: Path) -> str:
    if base.parent.name == "snapshots" and revision is None:
        return base.name
    rev = revision or "main"
    snapshots = repo / "snapshots"
    if (snapshots / rev).is_dir():
        return rev
    ref = repo / "refs" / rev
    if ref.is_file():
        commit = ref.read_text().strip()
        if not _REVISION.fullmatch(commit):
            raise ParquetSourceError(f"{ref}: {commit[:60]!r} is not a commit hash")
        return commit
    have = sorted(p.name for p in snapshots.iterdir()) if snapshots.is_dir() else []
    if revision is None and len(have) == 1:
        return have[0]
    raise ParquetSourceError(
        f"{repo}: no revision {rev!r} (refs: {sorted(p.name for p in (repo / 'refs').glob('*'))}, snapshots: "
        f"{have}); name one with imagenet-hf:{repo}@COMMIT"
    )


def locate(location: Path | None, revision: str | None) -> Split:
    """The validation parquet files that a spec names (see the module docstring)."""
    base = location or hub_cache()
    if not base.is_dir():
        raise ParquetSourceError(f"{base} does not exist: the {REPO_ID} {SPLIT} split is not there; {DOWNLOAD_HINT}")
    repo = _repo_folder(base)
    commit: str | None = None
    if repo is not None:
        commit = _commit(repo, revision, base)
        root, pattern = repo, f"snapshots/{commit}/data/{SPLIT}-*.parquet"
    elif revision is not None:
        raise ParquetSourceError(f"{base} is no hub cache (no {REPO_FOLDER}, no snapshots/): it has no @{revision}")
    else:
        root = base
        pattern = f"data/{SPLIT}-*.parquet" if (base / "data").is_dir() else f"{SPLIT}-*.parquet"
    listing = list_files(root, {".parquet"}, pattern=pattern, recursive=False)
    listing.warn("imagenet-hf")
    split = Split(root, listing.files, commit, listing.outside_names())
    _check_shards(split, root / pattern)
    return split


def _check_shards(split: Split, where: Path) -> None:
    """Every file ``validation-i-of-N`` for i < N is there (a partial download fails, naming what is missing)."""
    if not split.files:
        raise ParquetSourceError(f"no {where.name} files in {where.parent}: {DOWNLOAD_HINT}")
    shards = [_SHARD.fullmatch(f.name) for f in split.files]
    totals = {int(m.group(2)) for m in shards if m}
    if len(totals) != 1 or not all(shards):
        raise ParquetSourceError(f"{where.parent}: the {SPLIT} files do not form one series of N shards")
    total = totals.pop()
    have = {int(m.group(1)) for m in shards if m}
    missing = [f"{SPLIT}-{i:05d}-of-{total:05d}.parquet" for i in range(total) if i not in have]
    if missing:
        raise ParquetSourceError(
            f"{where.parent} has {len(have)} of the {total} {SPLIT} files (missing: {', '.join(missing[:3])}"
            f"{', ...' if len(missing) > 3 else ''}; a link into blobs/ that leads nowhere counts as missing): "
            f"finish the download: {DOWNLOAD_HINT}"
        )


@dataclass(frozen=True)
class Row:
    """One image of the split: its id, label (None: unlabelled) and where its bytes are."""

    id: str
    label: int | None
    file: Path
    group: int
    row: int


def image_id(path: str | None, file: Path, row: int) -> str:
    """``ILSVRC2012_val_00000001`` from ``ILSVRC2012_val_00000001_n01751748.JPEG`` (the stem, without the wnid the
    hub's file names append), so that an image has the same id as in the ILSVRC folder; without a path,
    ``<file stem>/<row in file>``."""
    if not path:
        return f"{file.stem}/{row:06d}"
    m = _VAL_NAME.fullmatch(Path(path).stem)
    return m.group(1) if m else Path(path).stem


def _check_label_names(pf: Any, file: Path) -> None:
    """When the file records its ClassLabel names (the ``huggingface`` schema metadata), they must be the
    sorted-wnid order's lemmas: a different order would give every image a wrong class."""
    meta = pf.schema_arrow.metadata or {}
    try:
        names = json.loads(meta[b"huggingface"])["info"]["features"]["label"]["names"]
    except (KeyError, TypeError, ValueError):
        return
    lemmas = imagenet_classes().lemmas
    differ = [i for i, (a, b) in enumerate(zip(names, lemmas, strict=False)) if a.split(",")[0] != b.split(",")[0]]
    if len(names) != len(lemmas) or len(differ) > 10:
        first = differ[0] if differ else min(len(names), len(lemmas))
        raise ParquetSourceError(
            f"{file}: its labels are not the ImageNet-1k sorted-wnid order ({len(names)} names; label {first} is "
            f"{names[first] if first < len(names) else None!r}, expected {lemmas[first] if first < 1000 else None!r})"
        )
    if differ:
        log.warning("%s: %d label names differ in wording from timm's lemmas (first: %d)", file, len(differ), differ[0])


def out_of_order(rows: list[Row]) -> int:
    """How many times a pass in id order goes back to an earlier (file, row group) or row."""
    order = {f: i for i, f in enumerate(sorted({r.file for r in rows}))}
    keys = [(order[r.file], r.group, r.row) for r in sorted(rows, key=lambda r: r.id)]
    return sum(b < a for a, b in pairwise(keys))


def list_rows(split: Split) -> list[Row]:
    """Every image of the split (reads the ``image.path`` and ``label`` columns only), in file order; warns when
    id order is not file order (reading in id order is then slow)."""
    rows: list[Row] = []
    for file in split.files:
        pf, table, has_path = _listing(file)
        _check_label_names(pf, file)
        names = pf.schema_arrow.names
        paths = table.column("image").combine_chunks().field("path").to_pylist() if has_path and table else None
        labels = table.column("label").to_pylist() if table is not None and "label" in names else None
        n = 0
        for g in range(pf.metadata.num_row_groups):
            for r in range(pf.metadata.row_group(g).num_rows):
                label = labels[n] if labels is not None else None
                ok = label is not None and 0 <= label < 1000
                rows.append(Row(image_id(paths[n] if paths else None, file, n), label if ok else None, file, g, r))
                n += 1
    back = out_of_order(rows)
    if back:
        log.warning("%s: the rows are not in id order (%d steps back): reading in id order rereads row groups, "
                    "expect it to be slow", split.root, back)  # fmt: skip
    return rows


def _listing(file: Path) -> tuple[Any, Any, bool]:
    """A parquet file of the split, its ``image.path`` and ``label`` columns read, and whether it has the paths;
    a file that is not parquet or not the split's refused in one line naming it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(file)
        names = pf.schema_arrow.names
        image = pf.schema_arrow.field("image").type if "image" in names else None
        if image is None or not hasattr(image, "get_field_index") or image.get_field_index("bytes") < 0:
            raise ParquetSourceError(f"{file}: no `image` column of {{bytes, path}}: not an imagenet-1k parquet file")
        label = pf.schema_arrow.field("label").type if "label" in names else None
        if label is not None and not (pa.types.is_integer(label) or pa.types.is_null(label)):
            raise ParquetSourceError(
                f"{file}: its `label` column holds {label}, not ImageNet class indices (integers 0-999, -1 for "
                f"none): not an imagenet-1k validation file; {DOWNLOAD_HINT}"
            )
        has_path = image.get_field_index("path") >= 0
        cols = [c for c, ok in (("image.path", has_path), ("label", label is not None)) if ok]
        return pf, (pf.read(columns=cols) if cols else None), has_path
    except (pa.ArrowException, OSError) as e:  # (pyarrow's errors are ValueError, OSError, ...: none names the file)
        raise ParquetSourceError(
            f"{file} is not a parquet file that can be read ({type(e).__name__}: {e}): it is damaged or cut short; "
            f"delete {file.resolve()} and download it again: {DOWNLOAD_HINT}"
        ) from e


class _RowGroups:
    """The image bytes of the last few row groups read by this process (workers each have their own)."""

    def __init__(self, size: int = CACHED_GROUPS, max_bytes: int = CACHED_BYTES) -> None:
        self.size, self.max_bytes = size, max_bytes
        self.pid = -1
        self.files: dict[Path, Any] = {}
        self.groups: OrderedDict[tuple[Path, int], list[bytes | None]] = OrderedDict()
        self.nbytes: dict[tuple[Path, int], int] = {}

    def get(self, file: Path, group: int, row: int) -> bytes:
        if os.getpid() != self.pid:  # a forked worker: never share the parent's open files
            self.pid, self.files, self.groups, self.nbytes = os.getpid(), {}, OrderedDict(), {}
        key = (file, group)
        if key in self.groups:
            self.groups.move_to_end(key)
        else:
            self.groups[key] = self._read(file, group)
            self.nbytes[key] = sum(len(b) for b in self.groups[key] if b)
            while len(self.groups) > 1 and (len(self.groups) > self.size or sum(self.nbytes.values()) > self.max_bytes):
                old, _ = self.groups.popitem(last=False)
                del self.nbytes[old]
        data = self.groups[key][row]
        if data is None:
            raise ValueError(f"{file}: row {row} of row group {group} has no image bytes")
        return data

    def _read(self, file: Path, group: int) -> list[bytes | None]:
        import pyarrow.parquet as pq

        if file not in self.files:
            self.files[file] = pq.ParquetFile(file)
        table = self.files[file].read_row_group(group, columns=["image.bytes"])
        images = table.column("image").combine_chunks()
        return images.field("bytes").to_pylist()  # type: ignore[no-any-return]


_CACHE = _RowGroups()


def read_bytes(file: Path, group: int, row: int) -> bytes:
    """One image's bytes as stored (raises OSError or ValueError when they cannot be read)."""
    try:
        return _CACHE.get(file, group, row)
    except (OSError, ValueError):
        raise
    except Exception as e:  # pyarrow's own errors (ArrowInvalid, ...) for a damaged file
        raise ValueError(f"{file}: cannot read row group {group} ({type(e).__name__}: {e})") from e
