"""Exact and near-duplicate images in an image set, by a perceptual hash (the set's ``dedupe`` option).

The rule: every image is reduced to a 64-bit DCT perceptual hash (pHash): decoded upright as every pass decodes it
(JPEGs at a reduced scale in the DCT domain, at least :data:`THUMB_SIDE` x 2 pixels a side), greyscale, squashed
to :data:`THUMB_SIDE` x :data:`THUMB_SIDE` by area averaging, 2-D DCT-II, the 8 x 8 lowest frequencies compared
with their median (bit = above the median). Two images whose hashes differ in at most ``max_distance`` bits
(Hamming distance) are duplicates. Walking the set in its own order (sorted ids), an image is dropped when it is a
duplicate of an image kept before it (the first such one is named); so the first of every group of copies is
kept, a byte-identical copy (distance 0) is always dropped, and the images kept from the first N of a set are the
first N's share of the images kept from the whole set (a ``limit`` and the dedupe commute).

The cost is a reduced decode and a 32 x 32 DCT per image (hundreds of images per second and core), and one
popcount of 64-bit XORs per pair of images, in blocks (50,000 images: 1.25e9 pairs, seconds).
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, ImageOps
from scipy.fft import dctn

from .decoding import ImageDecodeError, decode, decode_error, to_rgb
from .sources import ImageItem, ImageSource, Raw, item_sha256, read_raw

#: side of the greyscale thumbnail the hash is computed from
THUMB_SIDE = 32
#: the hash keeps the HASH_SIDE x HASH_SIDE lowest DCT frequencies: 64 bits
HASH_SIDE = 8
#: pairs of images compared per block (bounds memory: 8 bytes each)
BLOCK_PAIRS = 1 << 22

RULE = (
    "64-bit DCT perceptual hash (upright greyscale, 32 x 32 by area averaging, 8 x 8 lowest DCT-II frequencies "
    "above their median); an image within max_distance bits (Hamming) of an image kept before it in the set's "
    "order is dropped (the first such image is named); byte-identical copies have distance 0"
)


def thumbnail(item: ImageItem, raw: Raw | None = None) -> np.ndarray:
    """The image as a THUMB_SIDE x THUMB_SIDE greyscale float array, from a reduced decode (raises
    ImageDecodeError when it cannot be decoded)."""
    if item.path is None or isinstance(raw, np.ndarray):
        img = decode(item, raw=raw)
    else:
        try:
            with Image.open(io.BytesIO(raw) if raw is not None else item.path) as im:
                if im.format == "JPEG":
                    im.draft("RGB", (2 * THUMB_SIDE, 2 * THUMB_SIDE))  # 1/2..1/8 scale, never below 64 px a side
                im.load()
                img = to_rgb(ImageOps.exif_transpose(im) or im)
        except (OSError, ValueError, SyntaxError, Image.DecompressionBombError) as e:
            raise decode_error(item, e) from e
    grey = img.convert("L").resize((THUMB_SIDE, THUMB_SIDE), Image.Resampling.BOX)
    return np.asarray(grey, dtype=np.float64)


def phash(thumb: np.ndarray) -> int:
    """The 64-bit perceptual hash of a thumbnail: the 8 x 8 lowest 2-D DCT-II frequencies above their median."""
    low = dctn(thumb, type=2, norm="ortho")[:HASH_SIDE, :HASH_SIDE]
    bits = (low > np.median(low)).ravel()
    return int(np.packbits(bits).view(">u8")[0])


@dataclass
class Hashed:
    """What hashing an image set read: per item (in its order) the perceptual hash (None: not decodable) and the
    sha256 of the image as read (None: unreadable)."""

    hashes: list[int | None]
    digests: list[str | None]


def hash_items(items: Sequence[ImageItem]) -> Hashed:
    """The perceptual hash and sha256 of every item (each read once)."""
    hashes: list[int | None] = []
    digests: list[str | None] = []
    for item in items:
        try:
            raw: Raw | None = read_raw(item)
        except (OSError, ValueError):
            raw = None
        digests.append(item_sha256(item, raw))
        try:
            hashes.append(phash(thumbnail(item, raw)) if raw is not None else None)
        except ImageDecodeError:
            hashes.append(None)
    return Hashed(hashes, digests)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bits in which 64-bit hashes differ, broadcast: a (..., 1) and b (n,) -> (..., n)."""
    return np.bitwise_count(np.bitwise_xor(a, b))


def duplicate_of(hashes: Sequence[int | None], max_distance: int) -> tuple[np.ndarray, np.ndarray]:
    """For every hash (in the set's order), the index of the earlier kept image it duplicates (-1: kept) and
    the distance to it (-1: kept). Images without a hash are kept and never match."""
    n = len(hashes)
    of = np.full(n, -1, np.int64)
    dist = np.full(n, -1, np.int64)
    if n == 0:
        return of, dist
    ok = np.array([x is not None for x in hashes], bool)
    h = np.array([x if x is not None else 0 for x in hashes], dtype=np.uint64)
    rows = max(1, BLOCK_PAIRS // max(n, 1))
    found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []  # (image, earlier image, distance) within reach
    for a in range(0, n, rows):
        b = min(n, a + rows)
        d = hamming(h[a:b, None], h[None, :b]).astype(np.int64)
        near = (d <= max_distance) & ok[a:b, None] & ok[None, :b]
        near &= np.arange(a, b)[:, None] > np.arange(b)[None, :]  # only images before it
        i, j = np.nonzero(near)
        found.append((i + a, j, d[i, j]))
    i, j, d = (np.concatenate(c) for c in zip(*found, strict=True))
    for k in np.lexsort((j, i)):  # in the set's order, earlier images first: every j < i is already decided
        if of[i[k]] < 0 and of[j[k]] < 0:
            of[i[k]], dist[i[k]] = j[k], d[k]
    return of, dist


@dataclass
class Dedupe:
    """The outcome of de-duplicating an image set: the items kept, and for every item listed (kept or not) its
    sha256 as read; ``dropped``: id, the kept image it duplicates, the distance and its sha256."""

    max_distance: int
    listed: list[ImageItem]
    kept: list[ImageItem]
    digests: list[str | None]
    dropped: list[dict[str, Any]] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {
            "rule": RULE,
            "max_distance": self.max_distance,
            "listed": len(self.listed),
            "kept": len(self.kept),
            "dropped": self.dropped,
        }


def deduplicate(source: ImageSource, max_distance: int) -> Dedupe:
    """Drop the exact and near duplicates of an image set (see the module docstring)."""
    got = hash_items(source.items)
    of, dist = duplicate_of(got.hashes, max_distance)
    items = source.items
    dropped = [
        {"id": items[i].id, "duplicate_of": items[int(of[i])].id, "distance": int(dist[i]), "sha256": got.digests[i]}
        for i in np.flatnonzero(of >= 0)
    ]
    kept = [it for it, o in zip(items, of, strict=True) if o < 0]
    return Dedupe(max_distance, list(items), kept, got.digests, dropped)
