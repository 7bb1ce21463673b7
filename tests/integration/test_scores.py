"""The plain mean of the real DINOv2-S/14's modes does not depend on the SVD routine."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest


@pytest.mark.assets
def test_plain_mean_does_not_depend_on_the_svd_routine(dinov2_file: Path) -> None:
    """On the real DINOv2-S/14 (layers 0-2, where its null modes are: 49 and 3 of 384): the plain layer mean
    without null modes is the same from our factored SVD as from numpy's full SVD of each d x d matrix
    W_q^T W_k, in float64 (to 1e-9) and even in float32 (to 1e-6); with every mode it equals float64 numpy (1e-9)
    but not float32 numpy, the null modes' cosines being arbitrary."""
    from safetensors.numpy import load_file

    from qkdissect.passes.scores import compute_scores
    from qkdissect.passes.weights import compute_modes

    ours = compute_scores(compute_modes(f"timm:vit_small_patch14_dinov2@{dinov2_file}", device="cpu"))
    assert ours.attrs["null_rtol"] == 1e-4 and ours.n_null.sum("head").values[:3].tolist() == [49, 0, 3]
    layers = 3
    sd = load_file(str(dinov2_file))
    for dtype, tol in ((np.float64, 1e-9), (np.float32, 1e-6)):
        kept, every = np.zeros(layers), np.zeros(layers)
        for layer in range(layers):
            qkv = sd[f"blocks.{layer}.attn.qkv.weight"].astype(dtype)
            w_q, w_k = qkv[:384].reshape(6, 64, 384), qkv[384:768].reshape(6, 64, 384)
            u, s, vt = np.linalg.svd(np.swapaxes(w_q, 1, 2) @ w_k)  # (head, d, d) full SVD, numpy
            cos = np.einsum("hdm,hmd->hm", u[:, :, :64], vt[:, :64]).astype(np.float64)
            s = s[:, :64].astype(np.float64)
            keep = s >= 1e-4 * s[:, :1]
            kept[layer] = np.mean([c[k].mean() for c, k in zip(cos, keep, strict=True)])
            every[layer] = cos.mean()
        np.testing.assert_allclose(ours.layer_mean.values[:layers], kept, atol=tol, rtol=0)
        if dtype is np.float64:
            np.testing.assert_allclose(ours.layer_mean_all.values[:layers], every, atol=1e-9, rtol=0)
        else:
            assert np.abs(ours.layer_mean_all.values[:layers] - every).max() > 100 * tol
