"""Language transformers (beyond the paper, its stated future work): real text, token projections onto every
mode, and the passages with the largest attention score per mode.

**Corpora.** A corpus spec names passages of real text:

=========================  ===========================================================================
``pydoc-topics``           the Python language reference shipped with every Python (``pydoc_data.topics``):
                           its prose paragraphs (grammar and code blocks dropped), topics interleaved
``file:/path``             a UTF-8 ``.txt`` file, or a folder of them (recursively, sorted): one passage per
                           paragraph (blank-line separated)
=========================  ===========================================================================

**Score of a passage for one mode.** The image score (paper 1.6) is ``max_t q_t * max_t k_t``. For text the
query and key tokens must also be a pair the model can attend over: for a decoder (causal) key j <= query i.
With ``q_t = x_t . u`` and ``k_t = x_t . v`` the score is ``max over allowed (i, j) of [q_i]_+ [k_j]_+`` (sign
"+"), and the same with -u, -v (sign "-"). For an encoder this is the image score whenever the maxima are
positive. Special tokens ([CLS], [SEP]) and padding are left out. The query and key positions of the best pair
are kept with each top passage, so a figure can mark them.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import xarray as xr

from ..core.pairs import pair_scores
from ..core.topk import StreamingTopK
from ..data.corpora import Corpus, Passage, corpus
from ..errors import QKDissectError
from ..models import QKWeights
from ..models.tokenizer import tokenizer_for
from ..options import TokenSource, top_k_within
from ..provenance.records import items_sha256
from ..requests import TextRequest
from ..stores.schema import TokenMaps, text_projections_dataset
from ..util.clock import utc_now
from .hooks import layer_token_hooks, modes_uv
from .io import finish
from .loop import image_bar, load, modes_of, pass_record


def encode(tokenizer: Any, texts: Sequence[str], max_tokens: int) -> dict[str, torch.Tensor]:
    """Token ids, attention mask and special-token mask of a batch, right-padded and truncated."""
    enc = tokenizer(
        list(texts),
        padding=True,
        truncation=True,
        max_length=max_tokens,
        return_tensors="pt",
        return_special_tokens_mask=True,
    )
    return dict(enc)


def scored_mask(enc: dict[str, torch.Tensor]) -> torch.Tensor:
    """(batch, token) True for the tokens a passage score ranges over: real tokens, not special ones."""
    return enc["attention_mask"].bool() & ~enc["special_tokens_mask"].bool()


@dataclass
class TextBatch:
    """Per passage (batch, layer, head, mode, sign): the score and the query/key token positions of its best pair."""

    score: torch.Tensor
    query_token: torch.Tensor
    key_token: torch.Tensor


class TextProjector:
    """Projects every layer's tokens onto all U and V of the modes in one GEMM per layer and keeps, per passage
    and mode, the best query-key pair (both signs at once)."""

    def __init__(
        self,
        qk: QKWeights,
        u: np.ndarray | torch.Tensor,
        v: np.ndarray | torch.Tensor,
        *,
        source: TokenSource = "post-norm",
        device: torch.device | str = "cpu",
        dtype: torch.dtype = torch.float32,
    ) -> None:
        uv, self.shape = modes_uv(qk, u, v)
        self.qk, self.source, self.causal = qk, source, qk.layout.causal
        self.device, self.dtype = torch.device(device), dtype
        self.uv_t = uv.to(device=self.device, dtype=dtype).transpose(1, 2).contiguous()

    @torch.inference_mode()
    def __call__(self, model: torch.nn.Module, enc: dict[str, torch.Tensor]) -> TextBatch:
        n_layers, n_heads, n_modes = self.shape
        keep = scored_mask(enc).to(self.device)  # (batch, token)
        hm = n_heads * n_modes
        out: list[Any] = [None] * n_layers

        def reduce(layer: int, x: torch.Tensor) -> None:
            # (2*H*M, d) @ (batch, d, token): tokens last, so the reductions and cummax run along contiguous memory
            p = torch.matmul(self.uv_t[layer], x.to(self.dtype).transpose(1, 2))
            q, k = p[:, :hm], p[:, hm:]
            per_sign = [pair_scores(q, k, keep, self.causal), pair_scores(-q, -k, keep, self.causal)]
            out[layer] = [torch.stack([a[n] for a in per_sign], dim=-1) for n in range(3)]  # (batch, H*M, 2)

        inputs = {k: v.to(self.device) for k, v in enc.items() if k in ("input_ids", "attention_mask")}
        with layer_token_hooks(self.qk, self.source, reduce):
            model(**inputs)
        if any(o is None for o in out):
            raise RuntimeError("the forward pass did not reach every attention layer")
        b = enc["input_ids"].shape[0]
        score, i, j = (torch.stack([o[n] for o in out], dim=1).reshape(b, *self.shape, 2) for n in range(3))
        return TextBatch(score, i, j)


def _batches(n: int, size: int) -> Iterator[range]:
    for start in range(0, n, size):
        yield range(start, min(start + size, n))


def project_corpus(
    model: torch.nn.Module,
    tokenizer: Any,
    proj: TextProjector,
    passages: Sequence[Passage],
    *,
    batch_size: int,
    top_k: int,
    max_tokens: int,
    progress: bool = True,
    desc: str = "project text",
) -> tuple[StreamingTopK, np.ndarray]:
    """Stream the passages through the model; return the top passages per mode (payload: the query and key
    positions of their best pair) and each passage's token count. The batches take the passages by token count (a
    batch is padded to its longest: sorted, the pass runs over about the corpus's own tokens instead of twice as
    many); the top passages do not depend on the order (ties go to the smaller index)."""

    topk = StreamingTopK((*proj.shape, 2), top_k, device=proj.device, n_payload=2)
    texts = [p.text for p in passages]
    n_tokens = np.array([len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_tokens)["input_ids"]],
                        dtype=np.int32)  # fmt: skip
    order = np.argsort(n_tokens, kind="stable")
    with image_bar(len(passages), desc, progress, unit="passage") as bar:
        for rows in _batches(len(passages), batch_size):
            idx = order[rows.start : rows.stop]
            enc = encode(tokenizer, [texts[i] for i in idx], max_tokens)
            out = proj(model, enc)
            topk.update(out.score, torch.as_tensor(idx), (out.query_token, out.key_token))
            bar.update(len(rows))
    return topk, n_tokens


def padded_top(topk: StreamingTopK, top_k: int) -> dict[str, np.ndarray]:
    """The streaming top-k as arrays of ``top_k`` ranks (score -inf and indices -1 where fewer passages)."""
    shape = (*topk.score.shape[:-1], top_k)
    have = topk.score.shape[-1]

    def padded(t: torch.Tensor, fill: float, dtype: Any) -> np.ndarray:
        a = np.full(shape, fill, dtype)
        a[..., :have] = t.cpu().numpy()
        return a

    return {
        "score": padded(topk.score.float(), -np.inf, np.float32),
        "passage": padded(topk.index, -1, np.int64),
        "query_token": padded(topk.payload[0], -1, np.int64),
        "key_token": padded(topk.payload[1], -1, np.int64),
    }


def corpus_dependency(spec: str, limit: int | None, c: Corpus) -> dict[str, Any]:
    return {"role": "text corpus", "spec": spec, "limit": limit, "count": len(c), "sha256": items_sha256(c.digests())}


def compute_text_projections(*args: Any, **kw: Any) -> xr.Dataset:
    """:func:`run_text_projections` of ``TextRequest.build(spec, modes, corpus, output, tokens=..., ...)``."""
    return run_text_projections(TextRequest.build(*args, **kw))


def run_text_projections(r: TextRequest) -> xr.Dataset:
    """Project every passage of a corpus onto all modes of a text model: the top passages per mode (written to
    ``output`` when given)."""
    started, t0 = utc_now(), time.perf_counter()
    m = load(r.model)
    if m.qk.layout.modality != "text":
        raise QKDissectError(f"{m.name} is an image model: project it on images (`qkdissect project`), not on text")
    modes_ds, deps = modes_of(r.modes, m)
    tok = tokenizer_for(m.source)
    c = corpus(r.corpus, r.limit)
    top_k_within(r.top_k, len(c.passages), f"passages of {r.corpus}")
    proj = TextProjector(m.qk, modes_ds.U.values, modes_ds.V.values, source=r.tokens, device=m.device)
    t1 = time.perf_counter()
    topk, n_tokens = project_corpus(
        m.model, tok, proj, c.passages, batch_size=r.batch_size, top_k=r.top_k, max_tokens=r.max_tokens,
        progress=r.progress, desc=f"project text {m.name}",
    )  # fmt: skip
    t_pass = time.perf_counter() - t1
    parameters = {"tokens": r.tokens, "batch_size": r.batch_size, "top_k": r.top_k, "max_tokens": r.max_tokens,
                  "limit": r.limit}  # fmt: skip
    timings = {"load": round(t1 - t0, 3), "pass": round(t_pass, 3),
               "passages_per_s": round(len(c) / t_pass, 3) if t_pass > 0 else None}  # fmt: skip
    tokenizer = {"class": type(tok).__name__, "name_or_path": str(getattr(tok, "name_or_path", ""))}
    record = pass_record("text_projections", parameters, m, [*deps, corpus_dependency(r.corpus, r.limit, c)],
                         r.model.device, started, tokenizer=tokenizer, timings_s=timings)  # fmt: skip
    attrs = {
        "model_id": m.name,
        "spec": str(m.source.spec),
        "weights_sha256": m.source.weights_sha256,
        "corpus": r.corpus,
        "provenance": record,
    }
    top = padded_top(topk, r.top_k)
    return finish(text_projections_dataset(top, n_tokens, c.passages, np.asarray(modes_ds.S.values), attrs), r.output)


def token_maps(
    model: torch.nn.Module,
    tokenizer: Any,
    qk: QKWeights,
    text: str,
    layer: int,
    u: np.ndarray,
    v: np.ndarray,
    *,
    max_tokens: int = 128,
    source: TokenSource = "post-norm",
) -> TokenMaps:
    """Query map ``x_t . u`` and key map ``x_t . v`` of one passage at one layer (float64)."""
    enc = tokenizer([text], truncation=True, max_length=max_tokens, return_tensors="pt",
                    return_special_tokens_mask=True, return_offsets_mapping=True)  # fmt: skip
    got: dict[int, torch.Tensor] = {}
    with layer_token_hooks(qk, source, lambda i, t: got.__setitem__(i, t.detach()), [layer]), torch.inference_mode():
        dev = next(model.parameters()).device
        model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev))
    x = got[layer][0].double().cpu().numpy()
    ids = enc["input_ids"][0].tolist()
    offsets = enc["offset_mapping"][0].tolist()
    special = enc["special_tokens_mask"][0].bool().numpy()
    pieces, spaced, prev_end = [], [], None
    for tid, (a, b), sp in zip(ids, offsets, special, strict=True):
        pieces.append(tokenizer.convert_ids_to_tokens(tid) if sp or a == b else text[a:b])
        spaced.append(prev_end is None or sp or a > prev_end or bool(text[a:b][:1].isspace()))
        if not sp and a != b:
            prev_end = b
    return TokenMaps(
        [p.strip() for p in pieces], spaced, x @ np.asarray(u, np.float64), x @ np.asarray(v, np.float64), ~special
    )
