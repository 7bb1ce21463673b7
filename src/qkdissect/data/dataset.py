"""The images of a source as a torch dataset for the passes' data loader: decoded, preprocessed and hashed per
item, an image that fails to decode skipped (counted and logged), never fatal. Torch lives here, not in
:mod:`.images`, so that listing an image set (the workflow's config check) imports no torch."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from .decoding import ImageDecodeError, decode, max_pixels
from .geometry import Preprocess
from .sources import ImageSource, Raw, item_sha256, read_raw

log = logging.getLogger("qkdissect.data.decoding")


@dataclass
class ImageDataset(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """(index, tensor, error, sha256) per image; a file that fails to decode yields (index, None, error, sha256)
    and is logged. The digest is of the file as read, for the store's provenance."""

    source: ImageSource
    preprocess: Preprocess
    skipped: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        max_pixels()  # a bad $QKDISSECT_MAX_PIXELS stops here, in one line, not in each data loader worker

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int) -> tuple[int, torch.Tensor | None, str, str | None]:
        item = self.source.items[i]
        try:
            raw: Raw | None = read_raw(item)
        except (OSError, ValueError):
            raw = None  # decode tries again and raises ImageDecodeError naming the file
        digest = item_sha256(item, raw)
        try:
            img = decode(item, target=max(self.preprocess.crop), raw=raw)
        except ImageDecodeError as e:
            log.warning("skipping %s", e)
            return i, None, str(e), digest
        return i, self.preprocess.tensor(img), "", digest


Batch = tuple[list[int], torch.Tensor | None, list[tuple[int, str]], list[tuple[int, str | None]]]


def collate(batch: Sequence[tuple[int, torch.Tensor | None, str, str | None]]) -> Batch:
    """Stack the decoded images; report the indices and errors of those that were not, and every digest."""
    ok = [(i, x) for i, x, _, _ in batch if x is not None]
    bad = [(i, err) for i, x, err, _ in batch if x is None]
    digests = [(i, d) for i, _, _, d in batch]
    if not ok:
        return [], None, bad, digests
    return [i for i, _ in ok], torch.stack([x for _, x in ok]), bad, digests
