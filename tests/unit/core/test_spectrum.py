"""The rotary spectrum: each plane's energy at offset 0 and averaged over its angle against the d_model x d_model
matrices over many angles (hypothesis; both pairings, partial rotary), the cross-plane terms that no share holds,
the weighted cosine by distance against a loop; the store of a real trained model (stories260K) from its offsets
store, its figures drawn by their notebooks from stores alone, and the refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdissect.cli import main
from qkdissect.core.rotary import Rotary
from qkdissect.core.scores import null_interval
from qkdissect.core.spectrum import by_distance, plane_energies, unrotated_dims, wavelengths
from qkdissect.stores import open_store
from tests.helpers import REPO, STORIES, make_tiny_vit, need_assets

#: equally spaced angles: their average of a trigonometric polynomial of degree 2 (every energy here) is exact
ANGLES = np.linspace(0, 2 * np.pi, 48, endpoint=False)


def rotation(theta: float) -> np.ndarray:
    c, s = np.cos(theta), np.sin(theta)
    return np.array([[c, -s], [s, c]])


def test_the_average_of_a_turned_symmetric_matrix_is_its_half_trace() -> None:
    rng = np.random.default_rng(0)
    a = rng.normal(size=(2, 2))
    p = a + a.T
    turned = np.mean([rotation(t).T @ p @ rotation(t) for t in ANGLES], axis=0)
    np.testing.assert_allclose(turned, np.trace(p) / 2 * np.eye(2), atol=1e-13)
    random = np.mean([rotation(t).T @ p @ rotation(t) for t in rng.uniform(0, 2 * np.pi, 20_000)], axis=0)
    np.testing.assert_allclose(random, np.trace(p) / 2 * np.eye(2), atol=0.05 * np.abs(p).max())


@settings(max_examples=25, deadline=None)
@given(
    heads=st.integers(1, 3),
    half=st.integers(1, 4),
    unrotated=st.integers(0, 2),
    extra=st.integers(0, 5),
    pairing=st.sampled_from(["rotate-half", "interleaved"]),
    seed=st.integers(0, 2**16),
)
def test_plane_energies_are_the_matrices_over_many_angles(
    heads: int, half: int, unrotated: int, extra: int, pairing: str, seed: int
) -> None:
    d_head = 2 * (half + unrotated)
    d_model = d_head + extra
    rng = np.random.default_rng(seed)
    w_q, w_k = rng.normal(size=(2, 2, heads, d_head, d_model))  # (layer, head, d_head, d_model) each
    rot = Rotary(1.0 / 100 ** (np.arange(half) / half), pairing, 2 * half, d_head)  # type: ignore[arg-type]
    e = plane_energies(w_q, w_k, rot)
    a, b = rot.planes()
    u = unrotated_dims(rot)
    assert e.zero.shape == e.mean.shape == (2, heads, half + (1 if unrotated else 0))
    assert sorted([*a, *b, *u]) == list(range(d_head))
    for layer in range(2):
        for h in range(heads):
            q, k = w_q[layer, h], w_k[layer, h]
            for p in range(half):
                rows = [a[p], b[p]]
                turned = [q[rows].T @ rotation(t) @ k[rows] for t in ANGLES]  # d_model x d_model each
                assert e.zero[layer, h, p] == pytest.approx(np.sum((q[rows].T @ k[rows]) ** 2), rel=1e-10)
                assert e.mean[layer, h, p] == pytest.approx(np.mean([np.sum(m**2) for m in turned]), rel=1e-10)
            if unrotated:
                fixed = np.sum((q[u].T @ k[u]) ** 2)
                assert e.zero[layer, h, -1] == pytest.approx(fixed) and e.mean[layer, h, -1] == pytest.approx(fixed)
            total = np.sum((q.T @ k) ** 2)
            assert e.total[layer, h] == pytest.approx(total, rel=1e-10)
    np.testing.assert_allclose(e.share_mean.sum(-1), 1.0)
    np.testing.assert_allclose(e.share_zero.sum(-1), 1.0)


def test_angle_averaged_energies_sum_to_the_interaction_averaged_over_independent_angles() -> None:
    """Cross-plane terms are in no share: at offset 0 the total differs from the planes' sum; averaged over
    independent angles of the planes (a product grid: exact) the planes' sum is the whole."""
    rng = np.random.default_rng(1)
    d_head, d_model = 6, 7  # two planes and two unrotated dimensions
    w_q, w_k = rng.normal(size=(2, d_head, d_model))
    rot = Rotary(np.array([1.0, 0.1]), "interleaved", 4, d_head)
    e = plane_energies(w_q, w_k, rot)
    assert abs(e.total - e.zero.sum()) > 1e-3 * e.total  # cross-plane terms at offset 0
    grid = np.linspace(0, 2 * np.pi, 6, endpoint=False)
    energy = []
    for t0 in grid:
        for t1 in grid:
            r = np.eye(d_head)
            r[0:2, 0:2], r[2:4, 2:4] = rotation(t0), rotation(t1)
            energy.append(np.sum((w_q.T @ r @ w_k) ** 2))
    assert e.mean.sum() == pytest.approx(np.mean(energy), rel=1e-10)


def test_wavelengths_and_the_mean_by_distance() -> None:
    np.testing.assert_allclose(wavelengths(np.array([[1.0], [0.0], [3.0]])), [2 * np.pi, np.inf, 2 * np.pi / 3])
    np.testing.assert_allclose(wavelengths(np.array([[3.0, 4.0]])), [2 * np.pi / 5])
    rng = np.random.default_rng(2)
    dy, dx = np.meshgrid(np.arange(-3, 4), np.arange(-3, 4), indexing="ij")
    distance = np.hypot(dy, dx).ravel()
    values = rng.normal(size=(2, 3, distance.size))
    for width in (1.0, 0.5):
        bins, mean, counts = by_distance(values, distance, width)
        assert counts.sum() == distance.size and np.all(np.diff(bins) > 0)
        for i, centre in enumerate(bins):
            inside = np.floor(distance / width + 0.5) * width == centre
            assert counts[i] == inside.sum()
            np.testing.assert_allclose(mean[..., i], values[..., inside].mean(-1), rtol=1e-12)
    bins, mean, counts = by_distance(values[..., :5], np.array([3, 3, 0, 1, 1]))
    assert list(bins) == [0, 1, 3] and list(counts) == [1, 2, 2]
    with pytest.raises(ValueError, match="> 0"):
        by_distance(values, distance, 0.0)
    # an offsets store's distances: its distance coordinate, else sqrt(dy^2 + dx^2), else |offset|
    import xarray as xr

    from qkdissect.passes.spectrum import offset_distances

    flat = xr.Dataset(coords={"offset": [-2, 0, 3]})
    grid = xr.Dataset(coords={"offset": [0, 1], "dy": ("offset", [3, -1]), "dx": ("offset", [4, 0])})
    assert list(offset_distances(flat)) == [2, 0, 3] and list(offset_distances(grid)) == [5, 1]
    assert list(offset_distances(grid.assign_coords(distance=("offset", [0.5, 7.0])))) == [0.5, 7.0]


# ----------------------------------------------------------------------------------------- store, CLI, figures
@pytest.fixture(scope="module")
def stories_stores(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, str]:
    """stories260K's offsets store (offsets -8..23) and its spectrum store, and its spec."""
    folder = need_assets(STORIES) / Path(STORIES).parent
    tmp = tmp_path_factory.mktemp("spectrum")
    spec = f"hf:{folder}"
    assert main(["offsets", spec, "--offsets=-8:24", "-q", "-o", str(tmp / "off.zarr")]) == 0
    assert main(["spectrum", spec, str(tmp / "off.zarr"), "-q", "-o", str(tmp / "spec.zarr")]) == 0
    return tmp / "off.zarr", tmp / "spec.zarr", spec


def test_the_spectrum_store_of_stories260k(stories_stores: tuple[Path, Path, str]) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    off_path, spec_path, spec = stories_stores
    ds, off = open_store(spec_path, "spectrum"), open_store(off_path, "offsets")
    assert ds.sizes == {"layer": 5, "head": 8, "plane": 4, "distance": 24, "axis": 1}
    assert list(ds.kv_head.values) == [0, 0, 1, 1, 2, 2, 3, 3] and ds.rotated.values.all()
    assert ds.attrs["provenance"]["kind"] == "spectrum" and ds.attrs["distance_unit"] == "tokens"
    low, high = null_interval(ds.attrs["d_model"], 0.95)  # the band the distance figure draws
    assert (ds.attrs["null_low"], ds.attrs["null_high"], ds.attrs["null_level"]) == (low, high, 0.95)
    assert Path(ds.attrs["provenance"]["inputs"]["offsets store"]["path"]).name == "off.zarr"
    model = AutoModelForCausalLM.from_pretrained(Path(spec.removeprefix("hf:")))
    inv_freq = model.model.rotary_emb.inv_freq.double().numpy()
    np.testing.assert_allclose(ds.wavelength.values, 2 * np.pi / inv_freq, rtol=1e-6)
    # layer 2, head 5 (key head 2) by hand: rows (p, p + 4) of W_q and of its key head's W_k
    attn = model.model.layers[2].self_attn
    w_q = attn.q_proj.weight.detach().double().reshape(8, 8, -1)[5]
    w_k = attn.k_proj.weight.detach().double().reshape(4, 8, -1)[2]
    for p in range(4):
        rows = [p, p + 4]
        zero = torch.sum((w_q[rows].T @ w_k[rows]) ** 2).item()
        assert float(ds.energy_zero[2, 5, p]) == pytest.approx(zero, rel=1e-9)
    assert float(ds.energy_total_zero[2, 5]) == pytest.approx(torch.sum((w_q.T @ w_k) ** 2).item(), rel=1e-9)
    # the weighted cosine by distance: d and -d averaged (offsets -8..23 hold both for |d| <= 8)
    assert list(ds.distance.values) == list(range(24))
    assert list(ds.n_offsets.values) == [1] + [2] * 8 + [1] * 15
    hw = off.head_weighted
    np.testing.assert_allclose(ds.head_weighted.sel(distance=5).values, (hw.sel(offset=5) + hw.sel(offset=-5)) / 2)
    np.testing.assert_allclose(ds.layer_weighted.sel(distance=20).values, off.layer_weighted.sel(offset=20).values)


def test_spectrum_refuses_other_weights_and_models_without_rotary(
    stories_stores: tuple[Path, Path, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from qkdissect.errors import QKDissectError
    from qkdissect.passes.spectrum import compute_spectrum

    off_path, _, spec = stories_stores
    other = open_store(off_path, "offsets")
    other.attrs["weights_sha256"] = "0" * 64
    with pytest.raises(QKDissectError, match="other weights"):
        compute_spectrum(spec, other)
    vit = make_tiny_vit(tmp_path / "w", depth=1)
    assert main(["spectrum", vit, "-o", str(tmp_path / "s.zarr")]) == 2
    assert "has no rotary position embedding" in capsys.readouterr().err
    assert main(["spectrum", spec, str(off_path), "-o", str(off_path)]) == 2  # -o: its own input
    assert "input" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["spectrum", spec, str(off_path), "--distance-bin", "0", "-o", str(tmp_path / "s.zarr")])
    assert "--distance-bin must be > 0" in capsys.readouterr().err
    assert not (tmp_path / "s.zarr").exists()


def run_notebook(path: Path, parameters: dict[str, object]) -> dict[str, object]:
    """A figure notebook's code cells run in this process (a kernel's start would cost seconds) with
    ``parameters`` in place of its parameters cell, as papermill injects them; its namespace after."""
    cells = [c for c in json.loads(path.read_text())["cells"] if c["cell_type"] == "code"]
    assert "parameters" in cells[0]["metadata"].get("tags", [])
    namespace: dict[str, object] = {**parameters, "display": lambda *a: None}
    for cell in cells[1:]:
        exec(compile("".join(cell["source"]), str(path), "exec"), namespace)
    return namespace


@pytest.mark.parametrize("notebook", ["rotary_spectrum.ipynb", "rotary_distance.ipynb"])
def test_the_figure_notebooks_draw_from_the_store(
    stories_stores: tuple[Path, Path, str], tmp_path: Path, notebook: str
) -> None:
    _, spec_path, _ = stories_stores
    out, nb = tmp_path / "fig.png", REPO / "notebooks" / notebook
    run_notebook(nb, {"stores": {"spectrum": str(spec_path)}, "options": {}, "output": str(out), "notebook": str(nb)})
    assert out.stat().st_size > 10_000 and out.with_suffix(".pdf").exists()
    record = json.loads(out.with_suffix(".provenance.json").read_text())
    assert [Path(i["path"]).name for i in record["inputs"]] == ["spec.zarr"]


def test_the_share_figure_sums_planes_of_one_wavelength_and_shows_unrotated_dims() -> None:
    """A 2-D axial rotary (a row and a column plane at each of two frequencies) with partial rotary: the figure's
    columns are the two wavelengths (each the sum of its row and column plane) and the unrotated dimensions."""
    import matplotlib.pyplot as plt

    from qkdissect.passes.spectrum import plane_coords
    from qkdissect.plots.rotary import distance_cosine_figure, plane_share_figure, share_columns
    from qkdissect.stores.schema import DistanceProfile, spectrum_dataset

    rng = np.random.default_rng(3)
    freqs = np.array([[1.0, 0.0], [0.0, 1.0], [0.1, 0.0], [0.0, 0.1]])
    rot = Rotary(freqs, "interleaved", 8, 10, axes=("y", "x"), step=(0.5, 0.5))
    w_q, w_k = rng.normal(size=(2, 3, 2, 10, 12))
    e = plane_energies(w_q, w_k, rot)
    bins, head, counts = by_distance(rng.normal(size=(3, 2, 9)), np.hypot(*np.divmod(np.arange(9), 3)))
    attrs = {"model_id": "axial", "d_model": 12, "distance_unit": "patches", "null_low": -0.5, "null_high": 0.5,
             "null_level": 0.95}  # fmt: skip
    ds = spectrum_dataset(e, plane_coords(rot), DistanceProfile(bins, head, counts), attrs, None)
    assert list(ds.rotated.values) == [True] * 4 + [False] and list(ds.dim_a.values) == [0, 2, 4, 6, -1]
    np.testing.assert_allclose(ds.wavelength.values, [4 * np.pi, 4 * np.pi, 40 * np.pi, 40 * np.pi, np.inf])
    lengths, cells = share_columns(ds, ds.layer_share_mean.values)
    np.testing.assert_allclose(lengths, [4 * np.pi, 40 * np.pi])
    share = ds.layer_share_mean.values
    np.testing.assert_allclose(cells, np.stack([share[:, 0] + share[:, 1], share[:, 2] + share[:, 3]], axis=1))
    fig = plane_share_figure(ds)
    assert "unrot." in [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert fig.axes[0].get_xlabel() == "wavelength 2π / rate (patches)"
    assert "patches" in distance_cosine_figure(ds).axes[0].get_xlabel()
    mixed = Rotary(rng.uniform(0.1, 1, size=(3, 2, 4, 2)), "interleaved", 8, 10, axes=("y", "x"))  # per head
    ds = spectrum_dataset(plane_energies(w_q, w_k, mixed), plane_coords(mixed), None, attrs, None)
    assert ds.wavelength.dims == ("layer", "head", "plane") and ds.rate.dims == ("layer", "head", "plane", "axis")
    assert plane_share_figure(ds).axes[0].get_xlabel() == "plane (per-head frequencies)"
    plt.close("all")


# ----------------------------------------------------------------------------------------- workflow
