"""LayerNorm folding (beyond the paper): the folded weights on LayerNorm-normalised residual tokens give the
model's own attention logits, and the folded modes are the SVD of the folded d x d matrix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from conftest import make_tiny_vit
from qkdissect.core.layernorm import normalise
from qkdissect.models import QKWeights, load_qk
from qkdissect.models.layernorm import folded_biases, folded_factors, norm_parameters
from qkdissect.passes.attention import capture_logits
from qkdissect.passes.hooks import layer_token_hooks
from qkdissect.passes.weights import compute_modes


def residual_tokens(qk, model: torch.nn.Module, *args: Any, **kwargs: Any) -> dict[int, torch.Tensor]:  # type: ignore[no-untyped-def]
    """The residual stream entering each block's LayerNorm (what the norm normalises)."""
    got: dict[int, torch.Tensor] = {}
    with layer_token_hooks(qk, "pre-norm", lambda i, t: got.__setitem__(i, t.detach())), torch.inference_mode():
        model(*args, **kwargs)
    return got


def folded_logit_error(spec: str | tuple[QKWeights, torch.nn.Module], *args: Any, **kwargs: Any) -> dict[str, float]:
    """Worst relative error, over layers and heads, of the logits rebuilt from each folding's factors and biases
    on the normalised residual tokens, against the model's own pre-softmax logits (model inputs: args, kwargs)."""
    if isinstance(spec, str):
        qk, loaded = load_qk(spec)
        model = loaded.model
    else:
        qk, model = spec
    _, logits = capture_logits(model, qk, *args, **kwargs)
    res = residual_tokens(qk, model, *args, **kwargs)
    _, _, eps = norm_parameters(qk)
    bq, bk = folded_biases(qk)
    out = {}
    for folding in ("raw", "folded", "folded-centred"):
        a, b = folded_factors(qk, folding)  # type: ignore[arg-type]
        worst = 0.0
        for layer in range(qk.n_layers):
            xh = normalise(res[layer], eps[layer])
            q = torch.einsum("btd,hed->bhte", xh, a[layer]) + bq[layer][None, :, None]
            k = torch.einsum("btd,hed->bhte", xh, b[layer]) + bk[layer][None, :, None]
            ours = torch.einsum("bhie,bhje->bhij", q, k) * qk.layers[layer].scale
            ref = logits[layer].double()
            worst = max(worst, float(torch.linalg.norm(ours - ref) / torch.linalg.norm(ref)))
        out[folding] = worst
    return out


def test_folding_is_exact_on_a_random_model(tmp_path: Path) -> None:
    """Random gamma, beta, biases (conftest.randomise_), so no term can vanish by accident."""
    spec = make_tiny_vit(tmp_path)
    err = folded_logit_error(spec, torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(0)))
    assert err["folded"] < 1e-5 and err["folded-centred"] < 1e-5, err
    assert err["raw"] > 1e-2, err  # the unfolded weights do not describe what the attention sees


@pytest.mark.assets
def test_folding_is_exact_on_real_dinov2(dinov2_file: Path, photos: torch.Tensor) -> None:
    err = folded_logit_error(f"timm:vit_small_patch14_dinov2@{dinov2_file}?img_size=224", photos)
    assert err["folded"] < 1e-4 and err["folded-centred"] < 1e-4, err


def test_folded_modes_are_the_svd_of_the_folded_matrix(tmp_path: Path) -> None:
    spec = make_tiny_vit(tmp_path, depth=2)
    qk, _ = load_qk(spec)
    gamma, _, _ = norm_parameters(qk)
    d = qk.d_model
    centre = np.eye(d) - np.ones((d, d)) / d
    for folding in ("folded", "folded-centred"):
        ds = compute_modes(spec, device="cpu", folding=folding)  # type: ignore[arg-type]
        assert ds.attrs["folding"] == folding and ds.attrs["provenance"]["parameters"]["weights_processing"] == folding
        for layer in range(qk.n_layers):
            g = np.diag(gamma[layer].numpy())
            for h in range(qk.n_heads):
                m = g @ qk.layers[layer].w_q[h].double().numpy().T @ qk.layers[layer].w_k[h].double().numpy() @ g
                if folding == "folded-centred":
                    m = centre @ m @ centre
                s = np.linalg.svd(m, compute_uv=False)[: qk.d_head]
                np.testing.assert_allclose(ds.S.values[layer, h], s, rtol=1e-9, atol=1e-12)
                u, sv, v = (ds[n].values[layer, h] for n in ("U", "S", "V"))
                np.testing.assert_allclose((u * sv) @ v.T, m, atol=1e-10)
