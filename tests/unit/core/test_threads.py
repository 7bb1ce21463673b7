"""The CPU paths that split a batch of small decompositions over threads (one slice, or one chunk of offsets, per
torch thread) give what one thread gives. The suite's workers run with one thread each (tests/conftest.py), so these
tests turn torch's thread count up themselves."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch

from qkdissect.core.modes import in_threads, qk_modes
from qkdissect.core.offsets import offset_spectrum
from qkdissect.core.rotary import Rotary


@pytest.fixture
def threads() -> Iterator[int]:
    """Torch at 3 threads for the test (whatever the machine has), then as it was."""
    before = torch.get_num_threads()
    torch.set_num_threads(3)
    yield 3
    torch.set_num_threads(before)


def test_a_batch_split_over_threads_is_the_batch_in_one_call(threads: int) -> None:
    x = torch.randn(4, 5, 7, 6, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    slices: list[int] = []

    def svd(c: torch.Tensor) -> tuple[torch.Tensor, ...]:
        slices.append(c.shape[0])
        return tuple(torch.linalg.svd(c, full_matrices=False))

    parts = in_threads(svd, x)
    assert sorted(slices) == [6, 7, 7]  # the 20 matrices in one slice per thread, each on the pool's threads
    whole = torch.linalg.svd(x, full_matrices=False)
    for got, want in zip(parts, whole, strict=True):
        assert got.shape == want.shape
        torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    torch.set_num_threads(1)
    one = qk_modes(x[..., :3, :], x[..., 3:6, :], device="cpu")
    torch.set_num_threads(threads)
    many = qk_modes(x[..., :3, :], x[..., 3:6, :], device="cpu")
    for name in ("U", "S", "V"):
        torch.testing.assert_close(getattr(many, name), getattr(one, name), rtol=0, atol=1e-12)


def test_chunks_of_offsets_on_threads_are_those_of_one_thread(threads: int) -> None:
    rng = np.random.default_rng(1)
    w_q, w_k = rng.normal(size=(2, 3, 8, 12))
    rot = Rotary(1.0 / 10000 ** (np.arange(0, 8, 2) / 8), "rotate-half", 8, 8)
    offs = np.arange(0, 40, 3)
    s_many, c_many = offset_spectrum(w_q, w_k, rot, offsets=offs, chunk=2)
    assert torch.get_num_threads() == threads  # the pool's threads set their own count, not the caller's
    torch.set_num_threads(1)
    s_one, c_one = offset_spectrum(w_q, w_k, rot, offsets=offs, chunk=2)
    np.testing.assert_allclose(s_many, s_one, rtol=0, atol=1e-12)
    np.testing.assert_allclose(c_many, c_one, rtol=0, atol=1e-12)
