"""Figure helpers shared by the CLI and the notebooks: data in, matplotlib figure out."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import xarray as xr

from .registry import KNOWN_MODELS


def layer_cosine_figure(stores: Sequence[xr.Dataset], *, weighted: bool = True) -> plt.Figure:
    """Fig. 3 of the paper: per-layer (weighted) cosine between query- and key-side singular vectors
    against normalised depth, one line per model, in the paper's colour and line style per family."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    for ds in stores:
        key = str(ds.attrs.get("model_id"))
        known = KNOWN_MODELS.get(key)
        y = ds.layer_weighted if weighted else ds.layer_mean
        ax.plot(
            ds.depth.values,
            y.values,
            color=known.color if known else None,
            linestyle=known.linestyle if known else "-",
            marker=known.marker if known else None,
            markersize=2,
            label=key,
        )
    # the widest null band (smallest d_model among the models), labelled with the d it belongs to
    ref = min(stores, key=lambda ds: int(ds.attrs["d_model"]))
    hi = float(ref.attrs["null_high"])
    ax.axhspan(-hi, hi, color="0.85", zorder=0, label=f"per-mode null 95% (d={int(ref.attrs['d_model'])})")
    ax.axhline(0, color="0.5", lw=0.5)
    ax.set_xlabel("Normalised layer  l/(L-1)")
    ax.set_ylabel("Weighted cosine similarity" if weighted else "Cosine similarity")
    ax.set_xlim(0, 1)
    ax.legend(fontsize=6, loc="upper right", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    return fig


def save_figure(fig: plt.Figure, path: str | Path, metadata: dict[str, str] | None = None) -> Path:
    """Save as PNG (and PDF beside it) with provenance metadata; written atomically."""
    from .store import atomic_path

    out = Path(path)
    meta = metadata or {}
    for ext in (out.suffix or ".png", ".pdf"):
        target = out.with_suffix(ext)
        # PNG text chunks take any key; PDF's info dictionary only standard ones (Description -> Subject)
        fmt_meta = {("Subject" if k == "Description" else k): v for k, v in meta.items()} if ext == ".pdf" else meta
        with atomic_path(target) as tmp:
            fig.savefig(tmp, format=ext.lstrip("."), dpi=300, metadata=fmt_meta)
    plt.close(fig)
    return out
