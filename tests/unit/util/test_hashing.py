"""The sha256 of a file (qkdissect.util.hashing), read in blocks: the digest of its bytes, whatever the block."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest

from qkdissect.util.hashing import sha256_file


@pytest.mark.parametrize("size", [0, 1, 7, 1000])
def test_the_digest_of_a_file_read_in_blocks_is_that_of_its_bytes(tmp_path: Path, size: int) -> None:
    data = np.random.default_rng(size).integers(0, 256, size, dtype=np.uint8).tobytes()
    path = tmp_path / "f.bin"
    path.write_bytes(data)
    want = hashlib.sha256(data).hexdigest()
    assert sha256_file(path) == want == sha256_file(str(path), chunk=7)
