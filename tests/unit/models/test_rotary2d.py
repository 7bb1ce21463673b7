"""2-D rotary position embeddings of timm's vision transformers, exactly: the modes at each offset (dy, dx) of the
patch grid (W_q^T R(-d) W_k, R read off the model's own rope module) reconstruct the model's own attention logits
for every pair of tokens, on stand-ins of DINOv3, EVA-02, RoPE-ViT (axial and mixed) and Perception Encoder (timm's
own classes and configurations, 2 blocks, the real width and heads, random weights, float64, a 3 x 4 patch grid).
q and k are the ones the model hands to its attention (after the projections, the biases and the rotation),
captured at ``F.scaled_dot_product_attention``. Prefix tokens (CLS, registers) are not rotated: they are the modes at
the offset from ``attrs.rotary.unrotated_position``. The rotations form a group whatever the axes and frequencies
(hypothesis); unchecked timm rope variants are refused in one line."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import qkdissect as qk
from qkdissect.cli import main
from qkdissect.core.rotary import Rotary, rotated_bias, rotated_keys
from qkdissect.errors import QKDissectError, UnsupportedModelError
from qkdissect.models import extract_qk as adapt
from qkdissect.stores import open_store
from tests.helpers.rotary import FAMILIES, GRID, image_stand_in, token_positions

#: the worst relative error of each family's reconstruction (reported by the test's output)
ERRORS: dict[str, float] = {}


@contextmanager
def captured(model: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[dict[int, torch.Tensor], list[Any]]]:
    """The tokens W_q and W_k see in each block (its norm1's output) and the q, k each block's attention hands to
    ``F.scaled_dot_product_attention`` (rotated by the model itself, prefix tokens unrotated)."""
    xs: dict[int, torch.Tensor] = {}
    got: list[tuple[torch.Tensor, torch.Tensor]] = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def capture(q: torch.Tensor, k: torch.Tensor, *args: Any, **kw: Any) -> torch.Tensor:
        got.append((q.detach()[0].clone(), k.detach()[0].clone()))
        return sdpa(q, k, *args, **kw)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", capture)
    hooks = []
    for i, block in enumerate(model.blocks):
        monkeypatch.setattr(block.attn, "fused_attn", True)
        hooks.append(block.norm1.register_forward_hook(lambda _m, _i, out, i=i: xs.__setitem__(i, out.detach()[0])))
    try:
        yield xs, got
    finally:
        for h in hooks:
            h.remove()


def own_logits(model: Any, monkeypatch: pytest.MonkeyPatch) -> tuple[np.ndarray, np.ndarray]:
    """(layer, token, d_model) inputs of W_q, W_k and the model's own (layer, head, query, key) q . k."""
    h, w = model.patch_embed.img_size
    image = torch.randn(1, 3, h, w, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    with captured(model, monkeypatch) as (xs, got), torch.no_grad():
        model.forward_features(image)
    assert len(got) == len(xs) == len(model.blocks)
    x = np.stack([xs[i].numpy() for i in range(len(xs))])
    logits = np.stack([torch.einsum("hid,hjd->hij", q, k).numpy() for q, k in got])
    return x, logits


class ModesLogits:
    """(layer, head, query, key) logits from the modes: for each pair, the modes at its offset (``qk.modes``, one
    call per distinct offset, kept) plus the bias terms rotated alike (b_q^T R W_k x_j, x_i^T W_q^T R b_k,
    b_q^T R b_k)."""

    def __init__(self, model: Any, x: np.ndarray) -> None:
        self.model, self.x, self.qkw = model, x, adapt(model)
        self.w = {n: getattr(self.qkw, n).double().numpy() for n in ("w_q", "w_k", "b_q", "b_k")}
        self.at: dict[tuple[float, float], np.ndarray] = {}

    def of_offset(self, d: tuple[float, float]) -> np.ndarray:
        """Every pair's logit as if it were at offset d."""
        if d not in self.at:
            x, rot = self.x, self.qkw.rotary
            assert rot is not None
            w_q, w_k, b_q, b_k = (self.w[n] for n in ("w_q", "w_k", "b_q", "b_k"))
            ds = qk.modes(self.model, offset=d, device="cpu")
            assert ds.attrs["offset"] == pytest.approx(list(d))
            u, s, v = ds.U.values, ds.S.values, ds.V.values  # (layer, head, dim, mode)
            full = np.einsum("ltd,lhdm,lhm,lse,lhem->lhts", x, u, s, x, v, optimize=True)
            rk, rbk = rotated_keys(w_k, rot, d), rotated_bias(b_k, rot, d)
            full += np.einsum("lhe,lhed,ltd->lht", b_q, rk, x)[:, :, None, :]  # b_q^T R W_k x_j
            full += np.einsum("ltd,lhed,lhe->lht", x, w_q, rbk)[:, :, :, None]  # x_i^T W_q^T R b_k
            full += np.einsum("lhe,lhe->lh", b_q, rbk)[:, :, None, None]
            self.at[d] = full
        return self.at[d]

    def __call__(self, offsets: np.ndarray) -> np.ndarray:
        """The logits of every pair at its own offset ``offsets[i, j]``."""
        n = offsets.shape[0]
        out = np.full((self.qkw.n_layers, self.qkw.n_heads, n, n), np.nan)
        for d in np.unique(offsets.reshape(-1, 2), axis=0):
            at = np.all(offsets == d, axis=-1)
            out[:, :, at] = self.of_offset((float(d[0]), float(d[1])))[:, :, at]
        assert not np.isnan(out).any()
        return out


def relative_error(have: np.ndarray, want: np.ndarray) -> float:
    """The worst error over every pair, relative to the largest logit of its head."""
    return float((np.abs(have - want) / np.abs(want).max(axis=(2, 3), keepdims=True)).max())


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_modes_at_every_offset_reconstruct_every_pair_of_tokens(family: str, monkeypatch: pytest.MonkeyPatch) -> None:
    model = image_stand_in(family)
    qkw = adapt(model)
    rot, grid, n_prefix = qkw.rotary, qkw.layout.grid, qkw.layout.n_prefix
    assert rot is not None and grid == GRID and rot.unrotated_prefix == n_prefix == model.num_prefix_tokens
    assert float(np.abs(qkw.b_q.numpy()).max()) > 0 or family == "dinov3"  # the bias terms are exercised
    x, want = own_logits(model, monkeypatch)
    pos = token_positions(rot, n_prefix, grid)
    offsets = pos[:, None, :] - pos[None, :, :]  # query's position minus key's
    modes_logits = ModesLogits(model, x)
    have = modes_logits(offsets)
    err = ERRORS[family] = relative_error(have, want)
    print(f"{family}: worst relative error {err:.2g} over {want.shape[0] * want.shape[1]} heads x {want.shape[2]}^2")
    assert err < 1e-5, err
    # the offsets matter: the offset-0 modes alone (W_q^T W_k), or the prefix tokens placed at patch (0, 0) where
    # they are not, miss the logits by far more
    at_zero = modes_logits(np.zeros_like(offsets))
    assert relative_error(at_zero, want) > 1e-2
    if np.any(rot.unrotated_position != 0):
        wrong = token_positions(rot, 0, grid)
        wrong = np.concatenate([np.zeros((n_prefix, 2)), wrong])
        assert relative_error(modes_logits(wrong[:, None] - wrong[None]), want) > 1e-2


def test_each_family_is_read_as_its_configuration_says() -> None:
    """The pairing, the axes of the frequencies, and the coordinates of each family (3 x 4 grid)."""
    read = {f: adapt(image_stand_in(f, (3, 4))).rotary for f in FAMILIES}
    assert all(r is not None for r in read.values())
    dino, eva, axial, mixed, pe = (read[f] for f in ("dinov3", "eva02", "rope-vit-axial", "rope-vit-mixed", "pe"))
    assert dino is not None and eva is not None and axial is not None and mixed is not None and pe is not None
    assert dino.pairing == "rotate-half" and {eva.pairing, axial.pairing, mixed.pairing} == {"interleaved"}
    # DINOv3: [-1, 1] over the grid, so a patch is 2/3 of a unit down, 1/2 across; unrotated = the grid centre
    np.testing.assert_allclose(dino.coordinate_step, [2 / 3, 1 / 2])
    np.testing.assert_allclose(dino.unrotated_position, [1.0, 1.5])
    np.testing.assert_allclose(eva.coordinate_step, [16 / 3, 16 / 4])  # the 16 x 16 reference grid
    np.testing.assert_allclose(pe.coordinate_step, [24 / 3, 24 / 4])
    np.testing.assert_allclose(pe.unrotated_position, [-1, -1])  # rope_grid_offset 1
    np.testing.assert_allclose(axial.coordinate_step, [1, 1])
    np.testing.assert_allclose(axial.unrotated_position, [0, 0])
    # axial: the first half of the planes turns with one axis only, the second with the other; 'ij' (DINOv3,
    # EVA-02) puts rows first, 'xy' (RoPE-ViT, PE) columns
    for r, first in ((dino, 0), (eva, 0), (axial, 1), (pe, 1)):
        f = r.frequencies
        half = len(f) // 2
        assert np.all(f[:half, 1 - first] == 0) and np.all(f[:half, first] > 0) and np.all(f[half:, first] == 0)
    assert mixed.per_head and mixed.frequencies.shape == (2, 6, 32, 2) and np.all(mixed.frequencies != 0)


def test_the_store_records_the_offset_and_the_rotary_layout(tmp_path: Path) -> None:
    model = image_stand_in("dinov3", (3, 4))
    ds = qk.modes(model, device="cpu", output=tmp_path / "m.zarr")
    assert ds.attrs["offset"] == [0, 0]
    rot = ds.attrs["rotary"]
    assert rot["axes"] == ["y", "x"] and rot["pairing"] == "rotate-half" and rot["grid"] == [3, 4]
    assert rot["unrotated_prefix_tokens"] == 5 and rot["unrotated_position"] == pytest.approx([1.0, 1.5])
    assert np.shape(rot["inv_freq"]) == (32, 2) and "normalised to [-1, 1]" in rot["coordinates"]
    assert "RotaryEmbeddingDinoV3" in rot["source"]
    notes = " ".join(ds.attrs["notes"])
    assert "offset d = (dy, dx)" in notes and "not rotated" in notes and "3x4 grid only" in notes
    far = qk.modes(model, device="cpu", offset=(1, -2))
    assert far.attrs["offset"] == [1, -2] and far.attrs["provenance"]["parameters"]["offset"] == [1, -2]
    assert not np.allclose(far.S.values, ds.S.values)
    with pytest.raises(QKDissectError, match=r"2 axes \(y, x\): give the offset as 2 numbers \(dy, dx\)"):
        qk.modes(model, device="cpu", offset=3)
    mixed = qk.modes(image_stand_in("rope-vit-mixed"), device="cpu", offset=(0, 1))
    assert np.shape(mixed.attrs["rotary"]["inv_freq"]) == (2, 6, 32, 2) and "per layer and head" in str(
        mixed.attrs["rotary"]
    )


def test_the_command_line_takes_dy_dx(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from safetensors.torch import save_file

    model = image_stand_in("rope-vit-axial", (3, 3)).float()
    path = tmp_path / "rope.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    spec = f"timm:vit_small_patch16_rope_224@{path}?depth=2&img_size=48"
    out = tmp_path / "m.zarr"
    assert main(["modes", spec, "-o", str(out), "--device", "cpu", "--offset=-1,2", "-q"]) == 0
    ds = open_store(out, "modes")
    assert ds.attrs["offset"] == [-1, 2] and ds.attrs["rotary"]["grid"] == [3, 3]
    w_q, w_k = (t.double().numpy() for t in (adapt(model).w_q, adapt(model).w_k))
    rk = rotated_keys(w_k, adapt(model).rotary, (-1, 2))  # type: ignore[arg-type]
    full = np.einsum("lhed,lhef->lhdf", w_q, rk)
    u, s, v = ds.U.values, ds.S.values, ds.V.values
    np.testing.assert_allclose(np.einsum("lhdm,lhm,lhfm->lhdf", u, s, v), full, atol=1e-10)
    for bad, message in (("1,2,3", "--offset '1,2,3' is not valid"), ("x", "--offset 'x' is not valid"),
                         ("2000000,0", "at most 1000000")):  # fmt: skip
        with pytest.raises(SystemExit) as e:
            main(["modes", spec, "-o", str(tmp_path / "bad.zarr"), f"--offset={bad}"])
        err = capsys.readouterr().err
        assert e.value.code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert main(["modes", spec, "-o", str(tmp_path / "one.zarr"), "--device", "cpu", "--offset", "3", "-q"]) != 0
    err = capsys.readouterr().err
    assert "give the offset as 2 numbers (dy, dx), not 3" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "one.zarr").exists()


def test_unchecked_timm_rope_variants_are_refused_in_one_line() -> None:
    import timm
    from timm.models.eva import Eva

    mrope = Eva(img_size=32, patch_size=16, embed_dim=64, depth=1, num_heads=2, num_classes=0,
                use_rot_pos_emb=True, use_abs_pos_emb=False, rope_type="mrope")  # fmt: skip
    with pytest.raises(UnsupportedModelError, match="RotaryEmbeddingMRope: qkdissect has not checked"):
        adapt(mrope)
    gqa = Eva(img_size=32, patch_size=16, embed_dim=64, depth=1, num_heads=2, num_classes=0, attn_type="rope",
              qkv_fused=False, num_kv_heads=1, use_rot_pos_emb=True, use_abs_pos_emb=False)  # fmt: skip
    with pytest.raises(UnsupportedModelError, match="grouped-query attention in timm models is not supported yet"):
        adapt(gqa)
    naflex = timm.create_model("naflexvit_base_patch16_gap", pretrained=False, depth=1, rope_type="axial")
    with pytest.raises(UnsupportedModelError, match="timm NaFlexVit has a rotary position embedding"):
        adapt(naflex)
    # a rope module whose table its buffers do not give (here: bands changed after the table was cached)
    tampered = image_stand_in("rope-vit-axial")
    tampered.rope.bands.mul_(1.5)
    with pytest.raises(UnsupportedModelError, match="its sin/cos table") as e:
        adapt(tampered)
    assert "\n" not in str(e.value)


@settings(max_examples=60, deadline=None)
@given(
    axes=st.integers(1, 3),
    half=st.integers(1, 6),
    pairing=st.sampled_from(["rotate-half", "interleaved"]),
    per_head=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_rotations_form_a_group_and_depend_on_the_offset_only(
    axes: int, half: int, pairing: str, per_head: bool, seed: int
) -> None:
    """For any axes, frequencies (shared or per head), steps and origins: R(a) R(b) = R(a + b), R is orthogonal,
    R(c_i)^T R(c_j) = key_rotation(i - j) for positions i, j, and a token at the unrotated position turns by I;
    timm's own apply_rot_embed_cat turns a vector as rotation() does."""
    from timm.layers import apply_rot_embed_cat

    rng = np.random.default_rng(seed)
    shape = (2, 3, half, axes) if per_head else (half, axes)
    rot = Rotary(rng.normal(size=shape), pairing, 2 * half, 2 * half + 2, axes=tuple("abc"[:axes]),  # type: ignore[arg-type]
                 step=tuple(rng.uniform(0.2, 3, axes)), origin=tuple(rng.normal(size=axes)))  # fmt: skip
    i, j = rng.normal(size=(2, axes)) * 5
    ri, rj = rot.rotation(i), rot.rotation(j)
    eye = np.eye(rot.d_head)
    np.testing.assert_allclose(np.swapaxes(ri, -1, -2) @ ri, np.broadcast_to(eye, ri.shape), atol=1e-12)
    np.testing.assert_allclose(np.swapaxes(ri, -1, -2) @ rj, rot.key_rotation(i - j), atol=1e-9)
    a, b = rng.normal(size=(2, axes))
    np.testing.assert_allclose(rot.rotation_at(a) @ rot.rotation_at(b), rot.rotation_at(a + b), atol=1e-9)
    np.testing.assert_allclose(rot.rotation(rot.unrotated_position), np.broadcast_to(eye, ri.shape), atol=1e-9)
    np.testing.assert_allclose(rot.key_rotation(np.zeros(axes)), np.broadcast_to(eye, ri.shape), atol=0)
    # timm's layout: interleaved [f0, f0, f1, f1, ...] or half [f0, f1, ..., f0, f1, ...], sin then cos
    angle = np.einsum("a,...pa->...p", rot.coordinates_of(i).reshape(axes), rot.frequencies)
    lay = np.repeat(angle, 2, -1) if pairing == "interleaved" else np.concatenate([angle, angle], -1)
    emb = torch.as_tensor(np.concatenate([np.sin(lay), np.cos(lay)], -1))
    q = rng.normal(size=2 * half)
    turned = apply_rot_embed_cat(torch.as_tensor(q), emb, half=pairing == "rotate-half").numpy()
    np.testing.assert_allclose(turned, (ri[..., : 2 * half, : 2 * half] @ q).reshape(turned.shape), atol=1e-9)
