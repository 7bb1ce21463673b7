"""The maps pass stores everything an image or text figure draws, and the figures draw from it alone: the maps
equal the tokens' projections computed by hand, the crops are the model's own input, the chosen modes and images
follow the request, bad requests name every bad entry, and every figure draws with the model's weights gone."""

# ruff: noqa: F811 (the fixtures tiny and text_file are imported from tests.helpers)
from __future__ import annotations

from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch

from qkdissect.data.decoding import decode
from qkdissect.data.sources import image_source
from qkdissect.errors import QKDissectError
from qkdissect.models import load_qk, preprocess_for
from qkdissect.passes.hooks import layer_token_hooks
from qkdissect.passes.maps import compute_maps, scoring_sign, text_rows
from qkdissect.passes.scores import compute_scores
from qkdissect.passes.weights import compute_modes
from qkdissect.plots.images import gallery_figure, image_and_top_figure, image_modes_figure
from qkdissect.plots.text import text_modes_figure
from qkdissect.stores import open_store, write_store
from tests.helpers.maps import maps, tiny  # noqa: F401 (a fixture)
from tests.helpers.text import make_tiny_text_model, text_file  # noqa: F401 (a fixture)


def hand_maps(tiny: dict, image_id: str, layer: int, head: int, mode: int, sign: str) -> tuple[np.ndarray, ...]:
    """Query and key maps of one image computed by hand: the tokens W_q/W_k see, times u and v (float64)."""
    qk, loaded = load_qk(tiny["spec"])
    pre = preprocess_for(loaded)
    item = next(it for it in image_source(tiny["images"]).items if it.id == image_id)
    x = pre.tensor(decode(item, target=max(pre.crop)))[None]
    got = {}
    with layer_token_hooks(qk, "post-norm", lambda i, t: got.__setitem__(i, t.detach())), torch.no_grad():
        loaded.model(x)
    tokens = got[layer][0, qk.layout.n_prefix :].double().numpy()
    m = open_store(tiny["modes"], "modes")
    s = 1.0 if sign == "+" else -1.0
    u, v = s * m.U.values[layer, head, :, mode], s * m.V.values[layer, head, :, mode]
    grid = qk.layout.grid
    assert grid is not None
    crop = np.asarray(pre.image(decode(item, target=max(pre.crop))))
    return (tokens @ u).reshape(grid), (tokens @ v).reshape(grid), crop


def test_top_maps_are_the_tokens_projections_and_the_crops_the_model_input(tiny: dict) -> None:
    request = {"kind": "top", "modes": [[1, 2, 0], [2, 1, 3, "-"]], "k": 3}
    ds = open_store(maps(tiny, request, "top"), "maps")
    proj = open_store(tiny["proj"], "projections")
    scores = open_store(tiny["scores"], "scores")
    assert ds.attrs["drawn"] == [[1, 2, 0, "+"], [2, 1, 3, "-"]] and ds.sizes["slot"] == 3
    for r, (layer, head, mode, sign) in enumerate(ds.attrs["drawn"]):
        top = proj.sel(layer=layer, head=head, mode=mode, sign=sign)
        want = [str(proj.image_id.values[i]) for i in top.top_image.values[:3]]
        assert [str(ds.image_id.values[i]) for i in ds.slot_image.values[r]] == want
        np.testing.assert_array_equal(ds.slot_score.values[r], top.top_score.values[:3])
        assert ds.cosine.values[r] == scores.cosine.values[layer, head, mode]
        for j, image_id in enumerate(want):
            q, k, crop = hand_maps(tiny, image_id, layer, head, mode, sign)
            np.testing.assert_allclose(ds.q_map.values[r, j], q, rtol=1e-5, atol=1e-6)
            np.testing.assert_allclose(ds.k_map.values[r, j], k, rtol=1e-5, atol=1e-6)
            np.testing.assert_array_equal(ds.crop.values[ds.slot_image.values[r, j]], crop)
            # the map's extremes are the projections' per-image statistics
            row = int(np.flatnonzero(proj.image_id.values == image_id)[0])
            p = proj.isel(image=row).sel(layer=layer, head=head, mode=mode)
            q_max = float(p.q_max) if sign == "+" else -float(p.q_min)
            assert ds.q_map.values[r, j].max() == pytest.approx(q_max, rel=1e-4, abs=1e-5)
    assert ds.crop.dtype == np.uint8 and ds.crop.shape[1:] == (32, 32, 3)
    assert {d["role"] for d in ds.attrs["provenance"]["dependencies"]} >= {"modes store", "projections store"}


def test_image_requests_choose_as_the_figures_say(tiny: dict) -> None:
    proj = open_store(tiny["proj"], "projections")
    first = str(proj.image_id.values[0])
    five = open_store(maps(tiny, {"kind": "image-modes", "image": "auto", "n_modes": 2}, "five"), "maps")
    assert five.attrs["image"] == first and five.sizes["slot"] == 1
    modes = open_store(tiny["modes"], "modes")
    p = proj.isel(image=0)
    contrib = np.maximum((p.q_max * p.k_max).values, (p.q_min * p.k_min).values) * modes.S.values
    for layer, head in five.attrs["layer_heads"]:
        drawn = [m for m in five.attrs["drawn"] if (m[0], m[1]) == (layer, head)]
        assert [m[2] for m in drawn] == list(np.argsort(-contrib[layer, head])[:2])
        np.testing.assert_allclose(
            sorted(five.slot_score.values[[five.attrs["drawn"].index(m) for m in drawn], 0], reverse=True),
            np.sort(contrib[layer, head])[::-1][:2],
        )
    s17 = open_store(maps(tiny, {"kind": "image-top", "image": "photo03.png", "k": 2}, "s17"), "maps")
    assert s17.sizes["row"] == 3 and s17.sizes["slot"] == 3  # one mode per layer; the image, then 2 top images
    first = [str(s17.image_id.values[s17.slot_image.values[r, 0]]) for r in range(3)]
    others = [str(s17.image_id.values[i]) for i in s17.slot_image.values[:, 1:].ravel() if i >= 0]
    assert first == ["photo03.png"] * 3 and "photo03.png" not in others  # never among its own top images
    i3 = proj.isel(image=3)
    contrib = np.maximum((i3.q_max * i3.k_max).values, (i3.q_min * i3.k_min).values) * modes.S.values
    expected = [(layer, *np.unravel_index(int(np.argmax(contrib[layer])), contrib[layer].shape)) for layer in range(3)]
    assert [tuple(m[:3]) for m in s17.attrs["drawn"]] == expected  # each layer's mode contributing most


def test_bad_requests_name_every_bad_entry(tiny: dict) -> None:
    with pytest.raises(ValueError, match=r"L50 H3 M0: layer 50 out of range 0-2.*L0 H9 M99: head 9 out of range") as e:
        maps(tiny, {"kind": "top", "modes": [[50, 3, 0], [0, 9, 99]]}, "bad")
    assert "mode 99 out of range 0-15" in str(e.value) and "3 layers, 4 heads, 16 modes" in str(e.value)
    with pytest.raises(QKDissectError, match=r"'nope\.png' is not in the projected image set"):
        maps(tiny, {"kind": "image-top", "image": "nope.png"}, "bad2")
    with pytest.raises(QKDissectError, match="kind must be one of top, image-modes"):
        maps(tiny, {"kind": "everything"}, "bad3")
    assert not list(tiny["base"].glob("bad*"))


def test_every_image_figure_draws_from_its_maps_store_alone(tiny: dict, tmp_path: Path) -> None:
    stores = [maps(tiny, {"kind": "top", "modes": "auto", "k": 4}, "g"),
              maps(tiny, {"kind": "image-modes", "image": "photo01.png", "n_modes": 3}, "f5"),
              maps(tiny, {"kind": "image-top", "image": "photo02.png", "k": 4}, "s17b")]  # fmt: skip
    weights = Path(str(tiny["spec"]).split("@")[1].split("?")[0])
    hidden = weights.with_suffix(".hidden")
    weights.rename(hidden)  # the model cannot be loaded now; the figures do not need it
    try:
        figs = [gallery_figure([open_store(stores[0])], title="t"), image_modes_figure(open_store(stores[1])),
                image_and_top_figure(open_store(stores[2]))]  # fmt: skip
        for i, fig in enumerate(figs):
            fig.savefig(tmp_path / f"{i}.png", dpi=60)
            plt.close(fig)
    finally:
        hidden.rename(weights)
    assert all((tmp_path / f"{i}.png").stat().st_size > 1000 for i in range(3))
    g = open_store(stores[0], "maps")
    assert g.attrs["drawn"] == [[1, int(np.argmax(open_store(tiny["modes"]).S.values[1][:, 0])), 0, "+"]]


def test_text_maps_are_the_passages_tokens(text_file: Path, tmp_path: Path) -> None:
    from qkdissect.models.tokenizer import tokenizer_for
    from qkdissect.passes.text import compute_text_projections, token_maps

    spec = make_tiny_text_model(tmp_path / "bert", "bert")
    modes = write_store(compute_modes(spec, device="cpu"), tmp_path / "modes.zarr")
    scores = tmp_path / "scores.zarr"
    compute_scores(modes, scores)
    texts = tmp_path / "t.zarr"
    compute_text_projections(spec, modes, f"file:{text_file}", texts, top_k=3, progress=False)
    out = tmp_path / "maps.zarr"
    compute_maps(spec, modes, scores, texts, {"kind": "text-top", "modes": [[1, 2, 3, "-"]], "k": 2}, out)
    ds = open_store(out, "maps")
    t = open_store(texts, "text_projections").sel(layer=1, head=2, mode=3, sign="-")
    assert list(ds.slot_passage.values[0]) == list(t.top_passage.values[:2])
    qk, loaded = load_qk(spec)
    m = open_store(modes, "modes")
    for j, p in enumerate(ds.slot_passage.values[0]):
        text = str(open_store(texts).text.values[p])
        tm = token_maps(
            loaded.model, tokenizer_for(loaded), qk, text, 1, m.U.values[1, 2, :, 3], m.V.values[1, 2, :, 3]
        )
        n = int(ds.n_tokens.values[0, j])
        assert n == len(tm.pieces) and list(ds.piece.values[0, j, :n]) == tm.pieces
        np.testing.assert_allclose(ds.q_map.values[0, j, :n], -tm.q)  # sign "-": the maps of -u, -v
        assert int(ds.query_token.values[0, j]) == int(t.top_query_token.values[j])
    fig = text_modes_figure(ds)
    plt.close(fig)
    # modes chosen automatically: (u, v), or (-u, -v) where (u, v) scores nothing and (-u, -v) does
    t = open_store(texts, "text_projections")
    auto = [r.mode for r in text_rows({"k": 1}, open_store(modes, "modes"), open_store(scores, "scores"), t)]
    best = [t.top_score.sel(layer=m[0], head=m[1], mode=m[2]).isel(rank=0) for m in auto]
    assert [m[3] for m in auto] == ["-" if b.sel(sign="+") <= 0 < b.sel(sign="-") else "+" for b in best]
    assert {m[3] for m in auto} == {"+", "-"}  # (this random model's six modes have both cases)
    top = t.top_score.copy(deep=True)
    top.loc[{"layer": auto[0][0], "head": auto[0][1], "mode": auto[0][2]}] = 0.0
    assert scoring_sign(auto[0], t.assign(top_score=top))[3] == "+"  # neither scores: (u, v)


@pytest.mark.parametrize("source", ["post-norm", "pre-norm"])
def test_layer_tokens_stop_after_the_last_layer_wanted_with_the_full_passes_tokens(source: str) -> None:
    """The maps' forward pass stops once it has its layers: their tokens are those of a full pass, bit for bit,
    and no block after the deepest one wanted runs."""
    import timm

    from qkdissect.models import extract_qk
    from qkdissect.passes.hooks import layer_tokens
    from tests.helpers import TINY, randomise_

    model = randomise_(timm.create_model("vit_tiny_patch16_224", pretrained=False, num_classes=0, depth=4, **TINY))
    qk = extract_qk(model)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    full: dict[int, torch.Tensor] = {}
    with layer_token_hooks(qk, source, lambda i, t: full.__setitem__(i, t[:, 1:].clone())), torch.inference_mode():
        model(x)
    ran: list[int] = []
    for i, block in enumerate(model.blocks):
        block.register_forward_pre_hook(lambda _m, _x, i=i: ran.append(i))
    got = layer_tokens(model, qk, x, [2, 0], source)  # type: ignore[arg-type]
    assert sorted(got) == [0, 2] and ran == [0, 1, 2]
    for layer in (0, 2):
        assert torch.equal(got[layer], full[layer])
    ran.clear()
    assert sorted(layer_tokens(model, qk, x, [3], source)) == [3] and ran == [0, 1, 2, 3]  # type: ignore[arg-type]
