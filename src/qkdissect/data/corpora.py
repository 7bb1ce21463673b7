"""Text corpora (beyond the paper, for language transformers): passages of real text.

=========================  ===========================================================================
``pydoc-topics``           the Python language reference shipped with every Python (``pydoc_data.topics``):
                           its prose paragraphs (grammar and code blocks dropped), topics interleaved
``file:/path``             a UTF-8 ``.txt`` file, or a folder of them (recursively, sorted): one passage per
                           paragraph (blank-line separated)
=========================  ===========================================================================
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import QKDissectError
from .files import list_files

#: bundled with Python itself: available on every machine, no download
PYDOC = "pydoc-topics"


MIN_WORDS = 12


class CorpusError(QKDissectError, ValueError):
    pass


@dataclass(frozen=True)
class Passage:
    id: str
    text: str

    def sha256(self) -> str:
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Corpus:
    spec: str
    passages: tuple[Passage, ...]
    origin: str

    def __len__(self) -> int:
        return len(self.passages)

    def describe(self) -> dict[str, Any]:
        return {"spec": self.spec, "count": len(self), "origin": self.origin}

    def digests(self) -> list[tuple[str, str | None]]:
        return [(p.id, p.sha256()) for p in self.passages]


def _prose(block: str) -> str | None:
    """One paragraph as a single line of prose, or None for code, grammar, tables and headings."""
    lines = block.split("\n")
    if not lines or lines[0][:1].isspace() or any(s in block for s in ("::=", ">>>", "+---", "====", "****")):
        return None
    text = " ".join(line.strip().removeprefix("* ") for line in lines)
    text = re.sub(r"\s+", " ", text).strip()
    return text if len(text.split()) >= MIN_WORDS else None


def paragraphs(text: str) -> list[str]:
    """The prose paragraphs (blank-line separated, whitespace collapsed) of a text with at least 12 words."""
    return [p for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")) if (p := _prose(block))]


def _interleave(groups: Sequence[tuple[str, list[str]]]) -> list[Passage]:
    """Paragraph k of every group, then k + 1, ...: the first N passages span every group."""
    out: list[Passage] = []
    for k in range(max((len(p) for _, p in groups), default=0)):
        out += [Passage(f"{name}#{k}", paras[k]) for name, paras in groups if k < len(paras)]
    return out


def _pydoc() -> tuple[list[Passage], str]:
    import sys
    from pydoc_data.topics import topics

    groups = [(f"{PYDOC}:{name}", paragraphs(topics[name])) for name in sorted(topics)]
    return _interleave(groups), f"pydoc_data.topics of Python {sys.version.split()[0]}"


def _files(root: Path) -> tuple[list[Passage], str]:
    if not root.exists():
        raise CorpusError(f"text corpus {root} does not exist: give a .txt file or a folder of .txt files")
    if root.is_file():
        files = [root]
    else:
        listing = list_files(root, (".txt",))
        listing.warn("text corpus")
        files = listing.files
    if not files:
        raise CorpusError(f"text corpus {root} has no .txt files")
    groups = []
    for f in files:
        try:
            text = f.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise CorpusError(f"text corpus file {f} is not UTF-8 text ({e}); convert it or remove it") from e
        name = f.name if root.is_file() else str(f.relative_to(root))
        groups.append((name, paragraphs(text)))
    return [Passage(f"{name}#{k}", p) for name, paras in groups for k, p in enumerate(paras)], f"text files in {root}"


def corpus(spec: str, limit: int | None = None) -> Corpus:
    """The passages of a corpus spec (see the module docstring), the first ``limit`` of them."""
    if spec in (PYDOC, f"{PYDOC}:"):
        passages, origin = _pydoc()
    elif spec.startswith("file:"):
        passages, origin = _files(Path(spec.removeprefix("file:")).expanduser())
    else:
        raise CorpusError(f"unknown text corpus {spec!r}: use {PYDOC} (bundled with Python) or file:/path/to/texts")
    if not passages:
        raise CorpusError(f"text corpus {spec} has no paragraph of at least {MIN_WORDS} words")
    return Corpus(spec, tuple(passages[:limit] if limit else passages), origin)
