"""Two modes stores of one model compared to rounding."""

from __future__ import annotations

from typing import Any

import numpy as np


def compare_modes(fast: Any, slow: Any, attrs: bool = True) -> None:
    """Two modes stores of one model: attrs equal, singular values to 1e-13 relative, and U, V per mode to
    rounding amplified by the mode's gap to its neighbours (1e-12 / relative gap)."""
    drop = ("provenance", "qkdissect_content")
    assert not attrs or {k: v for k, v in fast.attrs.items() if k not in drop} == {
        k: v for k, v in slow.attrs.items() if k not in drop
    }
    s = slow.S.values
    assert np.abs(fast.S.values - s).max() <= 1e-13 * s.max()
    assert np.array_equal(fast.block.values, slow.block.values)
    gap = np.minimum(-np.diff(s, axis=-1, prepend=np.inf), -np.diff(s, axis=-1, append=-np.inf)) / s[..., :1]
    for n in ("U", "V"):
        diff = np.abs(fast[n].values - slow[n].values).max(axis=-2)
        assert (diff * gap).max() <= 1e-12, n
