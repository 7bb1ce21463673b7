"""The logit-terms pass (beyond the paper): a model's real attention logits on an image set, split into the
token-token term (the modes) and the three bias terms (:mod:`qkdissect.core.logits`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch
import xarray as xr
from torch.utils.data import DataLoader
from tqdm import tqdm

from ..core.device import device_record
from ..core.logits import SCOPES, TERMS, LogitStats, default_ks
from ..data.images import ImageDataset, collate, default_workers, image_source
from ..models import ModelLike, describe_loaded
from ..provenance.records import base_record, dependency, utc_now
from ..stores import write_store
from ..stores.schema import SCHEMA_VERSION
from .hooks import layer_token_hooks
from .loop import Manifest, image_set_dependency, load_image_model, modes_of, weights_checked


def compute_logit_stats(
    spec: ModelLike,
    modes_path: str | Path,
    images: str,
    output: str | Path,
    *,
    batch_size: int = 4,
    device: str = "auto",
    workers: int | None = None,
    limit: int | None = None,
    model_key: str | None = None,
    manifest: Manifest = None,
    progress: bool = True,
) -> Path:
    """Beyond the paper, on real images: the share of logit variance of each term (token-token, query bias, key
    bias, constant), the share of the token-token term the top-k modes capture, and whether the modes with
    cos > 0 or < 0 carry the winning keys (:mod:`qkdissect.logits`) -> a logits store at ``output``."""

    started = utc_now()
    im = load_image_model(spec, device, model_key)
    qk, loaded, name, dev, model = im.qk, im.loaded, im.name, im.device, im.model
    manifest, deps = weights_checked(im.loaded, im.name, manifest)
    modes = modes_of(modes_path, loaded, name)
    source = image_source(images, limit=limit)
    ks = default_ks(qk.d_head)
    stats = [LogitStats(qk.n_heads, ks) for _ in range(qk.n_layers)]

    def f64(t: Any) -> torch.Tensor:
        return torch.as_tensor(t).to(device=dev, dtype=torch.float64)

    weights = [(f64(a.w_q), f64(a.w_k), f64(a.b_q), f64(a.b_k)) for a in qk.layers]
    u, s, v = (f64(modes[n].values) for n in ("U", "S", "V"))

    def update(i: int, t: torch.Tensor) -> None:
        stats[i].update(t.to(torch.float64), *weights[i], u[i], s[i], v[i])

    loader = DataLoader(
        ImageDataset(source, im.preprocess),
        batch_size=batch_size,
        num_workers=default_workers() if workers is None else workers,
        collate_fn=collate,
    )
    n_valid, skipped = 0, []
    digests: list[str | None] = [None] * len(source)
    with torch.inference_mode():
        for ok, x, bad, batch_digests in tqdm(loader, desc=f"logits {name}", unit="batch", disable=not progress):
            for i, d in batch_digests:
                digests[i] = d
            skipped += [source.items[i].id for i, _ in bad]
            if x is not None:
                with layer_token_hooks(qk, "post-norm", update):
                    model(x.to(dev))
                n_valid += len(ok)
    if n_valid == 0:
        raise ValueError(f"none of the {len(source)} images of {images} could be decoded")
    shares = torch.stack([st.shares() for st in stats]).numpy()  # (layer, scope, term, head)
    explained = torch.stack([st.explained() for st in stats]).numpy()  # (layer, k, head)
    winning = torch.stack([st.winning_positive_share() for st in stats]).numpy()  # (layer, head)
    cos = (modes.U * modes.V).sum("dim").values
    sv = modes.S.values
    sigma_pos = (sv * (cos > 0)).sum(-1) / sv.sum(-1)
    record = base_record("logits", {"batch_size": batch_size, "device_requested": device, "limit": limit})
    record.update(
        {
            "model": {"key": name, **qk.describe()},
            "weights": {**describe_loaded(loaded), "manifest": manifest},
            "dependencies": [
                *deps,
                dependency("modes store", modes_path),
                image_set_dependency(images, limit, source, digests),
            ],
            "device": device_record(device, dev),
            "started": started,
            "finished": utc_now(),
        }
    )
    n_layers = qk.n_layers
    out = xr.Dataset(
        {
            "share": (("layer", "scope", "term", "head"), shares, {"description": "cov(term, logit) / var(logit)"}),
            "explained": (
                ("layer", "k", "head"),
                explained,
                {"description": "1 - ||T - T_k||^2 / ||T||^2 within query rows (T: token-token term)"},
            ),
            "winning_positive": (
                ("layer", "head"),
                winning,
                {"description": "share of the winning keys' token-token margin from modes with cos(u, v) > 0"},
            ),
            "sigma_positive": (
                ("layer", "head"),
                sigma_pos,
                {"description": "baseline: share of the singular values in modes with cos(u, v) > 0"},
            ),
        },
        coords={
            "layer": np.arange(n_layers),
            "scope": np.array(SCOPES, dtype=object),
            "term": np.array(TERMS, dtype=object),
            "k": np.array(ks),
            "head": np.arange(qk.n_heads),
            "depth": ("layer", np.arange(n_layers) / max(1, n_layers - 1)),
        },
        attrs={
            "qkdissect_schema": f"logits/v{SCHEMA_VERSION}",
            "model_id": name,
            "spec": str(loaded.spec),
            "images": {**source.describe(), "spec": images, "valid": n_valid, "skipped": len(skipped)},
            "skipped": skipped[:1000],
            "provenance": record,
        },
    )
    return write_store(out, output)
