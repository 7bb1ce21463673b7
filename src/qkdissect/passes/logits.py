"""The logit-terms pass (beyond the paper): a model's real attention logits on an image set, split into the
token-token term (the modes) and the three bias terms (:mod:`qkdissect.core.logits`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import xarray as xr

from ..core.logits import SCOPES, TERMS, LogitStats, default_ks
from ..models import ModelLike
from ..options import default
from ..provenance.records import utc_now
from ..stores.schema import logits_dataset
from .hooks import layer_token_hooks
from .io import StoreLike, finish
from .loop import ImageStream, Manifest, load_image_model, modes_of, pass_record


def compute_logit_stats(
    spec: ModelLike,
    modes: StoreLike,
    images: str,
    output: str | Path | None = None,
    *,
    batch_size: int = default("logits_batch_size"),
    device: str = default("device"),
    workers: int | None = default("workers"),
    limit: int | None = None,
    dedupe: int | None = default("dedupe"),
    model_key: str | None = None,
    manifest: Manifest = None,
    progress: bool = True,
) -> xr.Dataset:
    """Beyond the paper, on real images: the share of logit variance of each term (token-token, query bias, key
    bias, constant), the share of the token-token term the top-k modes capture, and whether the modes with
    cos > 0 or < 0 carry the winning keys -> a logits dataset (written to ``output`` when given)."""
    started = utc_now()
    im = load_image_model(spec, device, model_key, manifest)
    im.qk.require_plain_logits("the logit-terms pass")
    modes_ds, deps = modes_of(modes, im)
    stream = ImageStream.open(images, limit, im.preprocess, dedupe)
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
        for _, _, _, x in stream.batches(batch_size, workers, f"logits {im.name}", progress):
            if x is not None:
                with layer_token_hooks(qk, "post-norm", update):
                    im.model(x.to(dev))
    shares = torch.stack([st.shares() for st in stats]).numpy()  # (layer, scope, term, head)
    explained = torch.stack([st.explained() for st in stats]).numpy()  # (layer, k, head)
    winning = torch.stack([st.winning_positive_share() for st in stats]).numpy()  # (layer, head)
    cos = (modes_ds.U * modes_ds.V).sum("dim").values
    sv = modes_ds.S.values
    sigma_pos = (sv * (cos > 0)).sum(-1) / sv.sum(-1)
    parameters = {"batch_size": batch_size, "device_requested": device, "limit": limit, "dedupe": dedupe}
    record = pass_record("logits", parameters, im, [*deps, stream.dependency()], device, started,
                         timings_s=stream.rate())  # fmt: skip
    attrs = {
        "model_id": im.name,
        "spec": str(im.loaded.spec),
        "images": stream.describe(),
        "skipped": stream.skipped[:1000],
        "provenance": record,
    }
    return finish(logits_dataset(shares, explained, winning, sigma_pos, SCOPES, TERMS, ks, attrs), output)
