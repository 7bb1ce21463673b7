"""The paper's claims (qkdissect.core.claims): each rule on curves built to meet it or not, and the page written
from real stores."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qkdissect.core.claims import (
    CONCAVE,
    NOT_CONCAVE,
    RISE,
    Curve,
    Inputs,
    ModeEffects,
    bootstrap_mean,
    evaluate,
    late_rise,
    within_head_spearman,
)
from qkdissect.errors import QKDissectError
from qkdissect.passes.scores import compute_scores
from qkdissect.passes.weights import compute_modes
from qkdissect.provenance.claims import write_claims
from tests.helpers import make_tiny_vit


def curve(values: list[float] | np.ndarray) -> Curve:
    v = np.asarray(values, dtype=float)
    return Curve(np.arange(len(v)) / (len(v) - 1), v)


FALLING = curve([0.8, 0.7, 0.5, 0.3, 0.1, 0.02, 0.0, 0.03, 0.05, 0.06, 0.08, 0.1])  # high early, ~0 mid, flat
CONCAVE_CURVE = curve([0.8, 0.7, 0.5, 0.3, 0.1, 0.02, 0.0, 0.03, 0.1, 0.2, 0.3, 0.4])  # rises again late


def by_id(inp: Inputs) -> dict[str, object]:
    return {v.id: v for v in evaluate(inp)}


def test_falling_curves_meet_claims_1_and_2_and_rising_ones_do_not() -> None:
    v = by_id(Inputs(weighted={"a": FALLING, "b": FALLING}, null_high={"a": 0.07, "b": 0.07}))
    assert v["1"].holds is True and v["2"].holds is True  # type: ignore[attr-defined]
    rising = curve(np.linspace(0.0, 0.8, 12))
    v = by_id(Inputs(weighted={"a": rising, "b": rising, "c": FALLING}, null_high=dict.fromkeys("abc", 0.07)))
    assert v["1"].holds is False and v["1"].summary == "1 of 3 models"  # type: ignore[attr-defined]


def test_the_concave_claim_compares_each_named_model_with_the_paper() -> None:
    assert late_rise(CONCAVE_CURVE) == pytest.approx(0.4) and late_rise(FALLING) == pytest.approx(0.1)
    flat = curve([0.8, 0.6, 0.4, 0.2, 0.1, 0.05, 0.04, 0.03, 0.02, 0.02, 0.02, 0.02])
    good = {CONCAVE[0]: CONCAVE_CURVE, NOT_CONCAVE[0]: flat, "mine": CONCAVE_CURVE}
    v = by_id(Inputs(weighted=good))["3"]
    assert v.holds is True and v.models["mine"]["holds"] is None  # type: ignore[attr-defined]
    bad = {CONCAVE[0]: flat, NOT_CONCAVE[0]: flat}
    v = by_id(Inputs(weighted=bad))["3"]
    assert v.holds is False and v.summary == "1 of 2 named models as the paper says"  # type: ignore[attr-defined]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.floats(-1, 1), min_size=4, max_size=32))
def test_a_rise_counts_exactly_when_the_last_layer_is_above_the_late_minimum_by_more_than_rise(vals: list) -> None:
    c = curve(vals)
    second = np.asarray(vals)[c.depth >= 0.5]
    expected = bool(vals[-1] - second.min() > RISE)
    v = by_id(Inputs(weighted={CONCAVE[0]: c}))["3"]
    assert v.models[CONCAVE[0]]["holds"] is expected  # type: ignore[attr-defined]


def test_missing_parts_are_not_evaluated_never_passed() -> None:
    verdicts = evaluate(Inputs())
    assert [v.id for v in verdicts] == ["1", "2", "3", "4", "5a", "5b", "6a", "6b", "6c", "7", "A1"]
    assert all(v.holds is None for v in verdicts)


def test_anisotropy_and_preference_rules() -> None:
    aniso = curve([0.3] * 12)
    v = by_id(Inputs(weighted={"a": FALLING}, anisotropy={"a": aniso}))
    assert v["5a"].holds is True and v["5b"].holds is True  # type: ignore[attr-defined]
    negative = curve([0.3] * 11 + [-0.01])
    assert by_id(Inputs(anisotropy={"a": aniso, "b": negative}))["5a"].holds is False  # type: ignore[attr-defined]
    same, grow = curve(np.linspace(0.8, 0.3, 12)), curve(np.linspace(0.1, 0.35, 12))
    pref = {"simmim-vit-b16-pretrain": {"same": curve([0.8] * 12), "different": grow, "background": grow},
            "simmim-vit-b16-finetune": {"same": same, "different": grow, "background": grow},
            "other": {"same": same, "different": grow, "background": grow}}  # fmt: skip
    v = by_id(Inputs(preference=pref, datasets={"preference": "o3:/data/O3"}))
    assert v["6a"].holds is True and v["6b"].holds is True and v["6c"].holds is True  # type: ignore[attr-defined]
    assert v["6a"].figure == "Fig. 2 (o3:/data/O3)"  # type: ignore[attr-defined]


def test_the_page_is_written_from_real_stores_with_its_provenance(tmp_path: Path) -> None:
    modes = compute_modes(make_tiny_vit(tmp_path / "w"), device="cpu")
    scores = tmp_path / "scores.zarr"
    compute_scores(modes, scores)
    out = tmp_path / "claims" / "claims.json"
    verdicts = write_claims({"scores": [scores]}, out)
    data = json.loads(out.read_text())
    assert [c["id"] for c in data["claims"]] == [v.id for v in verdicts]
    page = out.with_suffix(".html").read_text()
    assert "The paper's claims on this run" in page and "early mean &gt;" in page
    record = json.loads((out.parent / "claims.provenance.json").read_text())
    assert set(record["outputs"]) == {"claims.json", "claims.html"}
    assert record["dependencies"][0]["path"] == str(scores)


def test_stores_of_the_wrong_shape_are_one_line_naming_the_roles(tmp_path: Path, capsys) -> None:
    """`--stores '[]'` gave an AttributeError and `{"scores": "x"}` read the characters of "x" as stores: the
    shape is checked (an object of role -> list of store paths; a single string is refused, not taken as a list)."""
    from qkdissect.cli import main

    roles = "scores, projections, preference, same_object, s3, ablation"
    for stores, message in (
        ("[]", f"--stores is a JSON array, not an object of role -> list of store paths (roles: {roles}), e.g. "),
        ('{"scores": "x"}', "--stores: role 'scores' is a string ('x'), not a list of store paths: write [\"x\"]"),
        ('{"scorse": ["x"]}', f"--stores: unknown role 'scorse'; did you mean scores? The roles: {roles}"),
        ('{"scores": [3]}', "--stores: role 'scores' holds a number (3), not a store path"),
        ('{"s3": ["x"]}', "--stores: role 's3' holds 1 store, expected 2: the I-JEPA encoder's scores and the pre"),
    ):
        assert main(["claims", "--stores", stores, "-o", str(tmp_path / "claims.json")]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"qkdissect claims: error: {message}"), lines
    assert not list(tmp_path.iterdir())
    with pytest.raises(QKDissectError, match="stores: role 'scores' is a string"):  # the Python API alike
        write_claims({"scores": "x"}, tmp_path / "claims.json")  # type: ignore[dict-item]


def test_within_head_spearman_is_scipys_per_head_over_the_finite_modes() -> None:
    from scipy.stats import spearmanr

    rng = np.random.default_rng(1)
    x, y = rng.normal(size=(3, 5, 8)), rng.normal(size=(3, 5, 8))
    x[..., 4:] = np.nan  # 4 modes ablated per head
    x[0, 1, 1:] = np.nan  # a head with one: no correlation
    y[1, 2, 2] = np.nan  # a head with 3
    x[2, 3, :4] = [1, 1, 2, 2]  # ties: mean ranks
    rho = within_head_spearman(x, y)
    for (layer, head), got in np.ndenumerate(rho):
        ok = np.isfinite(x[layer, head]) & np.isfinite(y[layer, head])
        want = spearmanr(x[layer, head, ok], y[layer, head, ok]).statistic if ok.sum() >= 3 else np.nan
        np.testing.assert_allclose(got, want, rtol=1e-12, err_msg=str((layer, head)))
    assert np.isnan(rho[0, 1]) and np.isfinite(rho[1, 2])


def test_the_ablation_claim_holds_when_score_orders_effect_and_not_when_it_reverses_it() -> None:
    rng = np.random.default_rng(0)
    score = rng.uniform(1, 2, size=(4, 6, 16))
    score[..., 4:] = np.nan
    s = np.sort(rng.uniform(1, 2, size=(4, 6, 16)))[..., ::-1]
    noisy = score + rng.normal(scale=0.2, size=score.shape)
    agree = ModeEffects(score, noisy, s, "skimage, 15 images")
    v = evaluate(Inputs(ablation={"a": agree, "b": ModeEffects(score, -noisy, s)}))[-1]
    assert v.id == "A1" and v.figure == "Ablation (ours) (skimage, 15 images)"
    assert v.models["a"]["holds"] is True and v.models["a"]["interval"][0] > 0 and v.models["a"]["heads"] == 24
    assert v.models["b"]["holds"] is False and v.models["b"]["mean_rho"] < 0
    assert len(v.models["a"]["rho_by_layer"]) == 4 and v.holds is False  # 1 of 2 models: not more than half
    unrelated = ModeEffects(score, rng.uniform(size=score.shape), s)
    assert evaluate(Inputs(ablation={"c": unrelated}))[-1].models["c"]["interval"][0] < 0  # noise: no claim


def test_bootstrap_mean_interval_brackets_the_mean_and_narrows_with_more_heads() -> None:
    rng = np.random.default_rng(2)
    few, many = rng.normal(0.3, 1, 20), rng.normal(0.3, 1, 2000)
    lo, hi = bootstrap_mean(few)
    assert lo < few.mean() < hi
    lo2, hi2 = bootstrap_mean(many)
    assert hi2 - lo2 < (hi - lo) / 5 and lo2 < many.mean() < hi2
    assert np.isnan(bootstrap_mean(np.array([np.nan]))).all()  # none to resample
