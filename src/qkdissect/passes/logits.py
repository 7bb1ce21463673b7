"""The logit-terms pass (beyond the paper): a model's real attention logits on an image set, split into the
token-token term (the modes) and the three bias terms (:mod:`qkdissect.core.logits`)."""

from __future__ import annotations

from typing import Any

import torch
import xarray as xr

from ..core.logits import SCOPES, TERMS, LogitStats, default_ks
from ..requests import LogitsRequest
from ..stores.schema import logits_dataset
from ..util.clock import utc_now
from .hooks import layer_token_hooks
from .io import finish
from .loop import ImageStream, load_image_model, modes_of, pass_record


def compute_logit_stats(*args: Any, **kw: Any) -> xr.Dataset:
    """:func:`run_logit_stats` of ``LogitsRequest.build(spec, modes, images, output, batch_size=..., ...)``."""
    return run_logit_stats(LogitsRequest.build(*args, **kw))


def run_logit_stats(r: LogitsRequest) -> xr.Dataset:
    """Beyond the paper, on real images: the share of logit variance of each term (token-token, query bias, key
    bias, constant), the share of the token-token term the top-k modes capture, and whether the modes with
    cos > 0 or < 0 carry the winning keys -> a logits dataset (written to ``output`` when given)."""
    started = utc_now()
    im = load_image_model(r.model)
    im.qk.require_plain_logits("the logit-terms pass")
    modes_ds, deps = modes_of(r.modes, im)
    stream = ImageStream.open(r.images, r.limit, im.preprocess, r.dedupe)
    qk, dev = im.qk, im.device
    ks = default_ks(qk.d_head)
    stats = [LogitStats(qk.n_heads, ks) for _ in range(qk.n_layers)]

    def f64(t: Any) -> torch.Tensor:
        return torch.as_tensor(t).to(device=dev, dtype=torch.float64)

    weights = [(f64(a.w_q), f64(a.w_k), f64(a.b_q), f64(a.b_k)) for a in qk.layers]
    u, s, v = (f64(modes_ds[n].values) for n in ("U", "S", "V"))

    def update(i: int, t: torch.Tensor) -> None:
        stats[i].update(t.to(torch.float64), *weights[i], u[i], s[i], v[i])

    with torch.inference_mode():
        for _, _, _, x in stream.batches(r.batch_size, r.workers, f"logits {im.name}", r.progress):
            if x is not None:
                with layer_token_hooks(qk, "post-norm", update):
                    im.model(x.to(dev))
    shares = torch.stack([st.shares() for st in stats]).numpy()  # (layer, scope, term, head)
    explained = torch.stack([st.explained() for st in stats]).numpy()  # (layer, k, head)
    winning = torch.stack([st.winning_positive_share() for st in stats]).numpy()  # (layer, head)
    cos = (modes_ds.U * modes_ds.V).sum("dim").values
    sv = modes_ds.S.values
    sigma_pos = (sv * (cos > 0)).sum(-1) / sv.sum(-1)
    parameters = {"batch_size": r.batch_size, "device_requested": r.model.device, "limit": r.limit, "dedupe": r.dedupe}
    record = pass_record("logits", parameters, im, [*deps, stream.dependency()], r.model.device, started,
                         timings_s=stream.rate())  # fmt: skip
    attrs = {
        "model_id": im.name,
        "spec": str(im.source.spec),
        "images": stream.describe(),
        "skipped": stream.skipped[:1000],
        "provenance": record,
    }
    return finish(logits_dataset(shares, explained, winning, sigma_pos, SCOPES, TERMS, ks, attrs), r.output)
