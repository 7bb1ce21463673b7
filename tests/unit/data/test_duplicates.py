"""Exact and near-duplicate images (copies of real photographs: tests/integration/test_duplicates.py): the greedy
rule equals a brute force on random hashes and commutes with a limit."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdissect.data.duplicates import deduplicate, duplicate_of, hamming
from qkdissect.data.sources import image_source
from qkdissect.options import DEDUPE_DISTANCE, dedupe_distance


def brute_force(hashes: list[int | None], t: int) -> list[int]:
    """The rule read literally: walk the set in order; an image is dropped when some image kept before it is
    within t bits (the first such one is named)."""
    kept: list[int] = []
    of = []
    for h in hashes:
        near = [j for j in kept if h is not None and _bits(h, hashes[j]) <= t]
        of.append(near[0] if near else -1)
        if not near:
            kept.append(len(of) - 1)
    return of


def _bits(a: int, b: int | None) -> int:
    return 65 if b is None else bin(a ^ b).count("1")


@settings(max_examples=60, deadline=None)
@given(
    base=st.lists(st.integers(0, 2**64 - 1), min_size=1, max_size=6),
    picks=st.lists(st.tuples(st.integers(0, 5), st.integers(0, 2**64 - 1), st.integers(0, 4)), max_size=25),
    t=st.integers(0, 12),
    limit=st.integers(1, 31),
)
def test_greedy_rule_equals_brute_force_and_commutes_with_a_limit(
    base: list[int], picks: list[tuple[int, int, int]], t: int, limit: int
) -> None:
    # near copies of a few base hashes (a few random bits flipped), so that chains and ties occur
    hashes: list[int | None] = list(base)
    for b, noise, n_bits in picks:
        flips = 0
        for k in range(n_bits):
            flips ^= 1 << ((noise >> (6 * k)) & 63)
        hashes.append(base[b % len(base)] ^ flips if noise % 7 else None)
    of, dist = duplicate_of(hashes, t)
    assert of.tolist() == brute_force(hashes, t)
    for i in np.flatnonzero(of >= 0):
        assert dist[i] == _bits(hashes[i], hashes[of[i]]) <= t  # type: ignore[arg-type]
    head, _ = duplicate_of(hashes[:limit], t)
    np.testing.assert_array_equal(head, of[:limit])  # the first N's share of the whole set's outcome


def test_hamming_counts_bits() -> None:
    a = np.array([0b1011, 2**64 - 1], dtype=np.uint64)
    assert hamming(a[:, None], np.array([0, 0b1000], dtype=np.uint64)).tolist() == [[3, 2], [64, 63]]


def test_the_option_as_the_passes_take_it() -> None:
    assert dedupe_distance(None) is None and dedupe_distance(False) is None
    assert dedupe_distance(True) == DEDUPE_DISTANCE and dedupe_distance(0) == 0
    with pytest.raises(ValueError, match="dedupe must be <= 64"):
        dedupe_distance(65)


def test_the_stereo_pair_of_the_offline_default_is_one_image() -> None:
    found = deduplicate(image_source("skimage"), DEDUPE_DISTANCE)
    assert [(d["id"], d["duplicate_of"]) for d in found.dropped] == [
        ("skimage:motorcycle_right", "skimage:motorcycle_left")
    ]
