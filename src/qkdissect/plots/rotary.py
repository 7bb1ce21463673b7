"""Figures of a rotary model's spectrum store (beyond the paper): the share of each rotation plane in its layers'
interaction, by the plane's wavelength, and the weighted layer cosine by the distance between a query and a key."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np
import xarray as xr
from matplotlib.colors import Normalize

from .style import MIN_FONT, PAGE_WIDTH

#: two wavelengths closer than this (relative) are one column of the share figure (2-D axial: a row and a column
#: plane of the same frequency)
SAME_WAVELENGTH = 1e-6
#: the distance figure averages distances beyond 1 over bins of 1/PER_DECADE of a decade (one distance each up to
#: about 10 tokens)
PER_DECADE = 24
#: depth colours: early layers yellow, late ones blue (as S1)
DEPTH_COLOURS = "viridis_r"


def _unit(ds: xr.Dataset) -> str:
    return str(ds.attrs.get("distance_unit", "tokens"))


def share_columns(ds: xr.Dataset, share: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The rotated planes' ``share`` (layer, plane) summed over planes of one wavelength: the distinct
    wavelengths (ascending) and the shares (layer, wavelength). With per-head frequencies (RoPE-ViT mixed) the
    planes keep their index and the wavelengths are NaN."""
    rotated = ds.rotated.values
    if ds.wavelength.ndim != 1:
        return np.full(int(rotated.sum()), np.nan), share[:, rotated]
    lengths = ds.wavelength.values[rotated]
    order = np.argsort(lengths)
    lengths, part = lengths[order], share[:, rotated][:, order]
    new = np.r_[True, np.diff(np.log(lengths)) > SAME_WAVELENGTH]
    column = np.cumsum(new) - 1
    summed = np.zeros((part.shape[0], int(column[-1]) + 1))
    np.add.at(summed.T, column, part.T)
    return lengths[new], summed


def _edges(x: np.ndarray) -> np.ndarray:
    """Cell edges around increasing positive ``x`` on a log axis (geometric midpoints; half a step outside)."""
    if x.size == 1:
        return np.array([x[0] / 1.5, x[0] * 1.5])
    lx = np.log(x)
    mid = (lx[1:] + lx[:-1]) / 2
    return np.exp(np.r_[lx[0] - (mid[0] - lx[0]), mid, lx[-1] + (lx[-1] - mid[-1])])


def plane_share_figure(ds: xr.Dataset) -> plt.Figure:
    """Per layer (rows, heads averaged), the share of each rotation plane in the interaction, by the plane's
    wavelength 2 pi / rate (log): (A) averaged over the plane's angle, what the plane carries at a distance;
    (B) at offset 0. A column after the planes holds the dimensions a partial rotary leaves unrotated. The
    dashed line is the largest distance of the offsets store (planes right of it turn less than once there)."""
    n_layers = ds.sizes["layer"]
    panels = [("layer_share_mean", "A: averaged over each plane's angle"), ("layer_share_zero", "B: at offset 0")]
    shares = {name: np.asarray(ds[name].values) for name, _ in panels}
    top = max(float(v.max()) for v in shares.values()) or 1.0
    unrotated = ~ds.rotated.values
    fig, axes = plt.subplots(1, 2, figsize=(PAGE_WIDTH, 0.12 * n_layers + 2.2), sharey=True, layout="constrained")
    norm = Normalize(0.0, top)
    for ax, (name, title) in zip(axes, panels, strict=True):
        lengths, cells = share_columns(ds, shares[name])
        per_head = np.isnan(lengths).any()
        x = np.arange(cells.shape[1] + 1) - 0.5 if per_head else _edges(lengths)
        if unrotated.any():  # one more column past the planes, a gap before it
            x = np.r_[x, x[-1] + 1.0, x[-1] + 3.0] if per_head else np.r_[x, x[-1] * 2, x[-1] * 6]
            cells = np.concatenate([cells, np.full((n_layers, 1), np.nan), shares[name][:, unrotated]], axis=1)
        y = np.arange(n_layers + 1) - 0.5
        ax.pcolormesh(x, y, cells, cmap="magma", norm=norm, shading="flat")
        if not per_head:
            ax.set_xscale("log")
            if "distance" in ds.dims:
                ax.axvline(float(ds.distance.values.max()), color="w", ls="--", lw=0.8)
        if unrotated.any():
            ax.set_xticks([*ax.get_xticks(), np.sqrt(x[-1] * x[-2]) if not per_head else x[-1] - 1.0])
            ax.set_xlim(x[0], x[-1])
            labels = [t.get_text() for t in ax.get_xticklabels()]
            ax.set_xticklabels([*labels[:-1], "unrot."])
        ax.set_title(title, fontsize=8)
        ax.set_xlabel("plane (per-head frequencies)" if per_head else f"wavelength 2π / rate ({_unit(ds)})",
                      fontsize=8)  # fmt: skip
        ax.tick_params(labelsize=MIN_FONT + 1)
    axes[0].set_ylim(n_layers - 0.5, -0.5)
    axes[0].set_ylabel("layer", fontsize=8)
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap="magma"), ax=axes, shrink=0.9)
    bar.set_label("share of the head's plane energies (heads averaged)", fontsize=8)
    bar.ax.tick_params(labelsize=MIN_FONT + 1)
    fig.suptitle(f"{ds.attrs.get('model_id', '')}: share of each rotation plane per layer", fontsize=9)
    return fig


def log_binned(d: np.ndarray, y: np.ndarray, per_decade: int = PER_DECADE) -> tuple[np.ndarray, np.ndarray]:
    """``y`` (..., distance) averaged over log-spaced bins of the distances ``d`` (1/per_decade of a decade each;
    d = 0 a bin of its own): the bins' mean distances and mean values."""
    key = np.where(d > 0, np.floor(np.log10(np.where(d > 0, d, 1.0)) * per_decade + 0.5), -np.inf)
    rows = np.concatenate([d[None], np.reshape(y, (-1, d.size))])
    means = xr.DataArray(rows, dims=("row", "distance"), coords={"bin": ("distance", key)}).groupby("bin").mean()
    return means.values[0], means.values[1:].reshape(*np.shape(y)[:-1], -1)


def distance_cosine_figure(ds: xr.Dataset, per_decade: int = PER_DECADE) -> plt.Figure:
    """The weighted layer cosine against the distance |d| between query and key (log beyond 1; linear from 0 to
    1, so that d = 0 is on the axis), one line per layer coloured by depth, averaged over bins of 1/``per_decade``
    of a decade; d = 0 marked by dots and a dotted line; the grey band is the per-mode null interval of the model
    width (95%)."""
    if "distance" not in ds.dims:
        raise ValueError(
            f"the spectrum store of {ds.attrs.get('model_id')} has no weighted cosine by distance: make it with an "
            "offsets store (`qkdissect spectrum MODEL OFFSETS -o ...`)"
        )
    fig, ax = plt.subplots(figsize=(PAGE_WIDTH * 0.75, 3.6), layout="constrained")
    d, y = log_binned(ds.distance.values, ds.layer_weighted.values, per_decade)  # y: (layer, distance bin)
    n_layers = y.shape[0]
    cmap = plt.get_cmap(DEPTH_COLOURS)
    norm = Normalize(0.0, 1.0)
    depth = ds.depth.values
    lo, hi, level = ds.attrs["null_low"], ds.attrs["null_high"], ds.attrs["null_level"]
    ax.axhspan(lo, hi, color="0.85", lw=0, zorder=0, label=f"per-mode null {level:.0%}, d={ds.attrs['d_model']}")
    ax.axhline(0, color="0.5", lw=0.5, zorder=0)
    for layer in range(n_layers):
        ax.plot(d, y[layer], color=cmap(norm(depth[layer])), lw=0.9)
    at_zero = d == 0
    if at_zero.any():
        ax.axvline(0, color="0.3", ls=":", lw=0.8)
        ax.scatter(np.zeros(n_layers), y[:, at_zero][:, 0], c=depth, cmap=cmap, norm=norm, s=10, zorder=3,
                   edgecolors="k", linewidths=0.3, label="d = 0: W_q^T W_k")  # fmt: skip
    ax.set_xscale("symlog", linthresh=1.0, linscale=0.4)
    ax.set_xlim(left=min(0.0, float(d.min())), right=float(d.max()) * 1.05)
    ax.set_xlabel(f"distance |d| between query and key ({_unit(ds)}; log beyond 1)", fontsize=8)
    ax.set_ylabel("Weighted cosine similarity", fontsize=8)
    ax.tick_params(labelsize=MIN_FONT + 1)
    ax.legend(fontsize=MIN_FONT + 1, loc="lower left", framealpha=0.9, edgecolor="none")
    bar = fig.colorbar(plt.cm.ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
    bar.set_label("Normalised layer  l/(L-1)", fontsize=8)
    bar.ax.tick_params(labelsize=MIN_FONT + 1)
    ax.set_title(f"{ds.attrs.get('model_id', '')}: weighted layer cosine by distance", fontsize=9)
    return fig
