"""Parity with the original MATLAB model (Octave fixtures in ../shared/fixtures)."""

from __future__ import annotations

import numpy as np
import pytest

import xproda
from conftest import fixture_forcing, load_fixture, stack_forcing

pytestmark = pytest.mark.shared
RTOL = 1e-8  # relative to the profile's maximum (issue acceptance)


def _rel(got, exp):
    got, exp = np.asarray(got, float), np.asarray(exp, float)
    return np.max(np.abs(got - exp)) / np.max(np.abs(exp))


@pytest.fixture(scope="module")
def cen():
    return load_fixture("reference_clm5_cen.json")


@pytest.fixture(scope="module")
def mic():
    return load_fixture("reference_microbial.json")


def test_fixture_files_have_expected_cases(cen, mic):
    assert len(cen["cases"]) == 12
    assert len(mic["cases"]) == 15
    assert sum(not c["reproducible"] for c in cen["cases"]) == 1
    assert sum(not c["valid_steady_state"] for c in mic["cases"]) == 3


def test_clm5_reference_parity_case_by_case(cen):
    m = xproda.get_model("clm5", reference=True)
    for i, case in enumerate(cen["cases"]):
        if not case["reproducible"]:
            continue
        out = m.steady_state(np.array(case["params_normalized"])[None], fixture_forcing(case))
        exp = case["expected"]
        assert out["valid"][0], (i, out.flag_names())
        assert _rel(out["pools"][0], exp["cpools"]) < RTOL, i
        soc_layer = np.asarray(exp["soc_layer"])
        assert _rel(out["soc"][0], soc_layer[:, -1]) < RTOL, i
        assert _rel(out["pools"][0][:, 4:], soc_layer[:, :3]) < RTOL, i
        assert abs(out["soc_stock"][0] - exp["soc_stock"][0]) / abs(exp["soc_stock"][0]) < RTOL, i


def test_clm5_reference_parity_in_one_batch(cen):
    """All cases in one batched call give the same numbers as one by one."""
    m = xproda.get_model("clm5", reference=True)
    cases = cen["cases"]
    theta = np.array([c["params_normalized"] for c in cases])
    out = m.steady_state(theta, stack_forcing([fixture_forcing(c) for c in cases]))
    for i, case in enumerate(cases):
        if case["reproducible"]:
            assert out["valid"][i]
            assert _rel(out["pools"][i], case["expected"]["cpools"]) < RTOL
        else:
            assert not out["valid"][i]
            assert np.isnan(out["soc_stock"][i]) and np.isnan(out["pools"][i]).all()


def test_irreproducible_case_is_flagged_not_returned(cen):
    """Case 11 (efolding 0.109 m, nb = 17): float64 reference output is rounding noise (§2.2)."""
    m = xproda.get_model("clm5", reference=True)
    case = cen["cases"][11]
    assert not case["reproducible"]
    out = m.steady_state(np.array(case["params_normalized"])[None], fixture_forcing(case))
    assert out.flag_names()[0] == ["ill_conditioned"]
    assert not out["valid"][0]
    assert np.isnan(out["soc_stock"][0])


def test_ill_conditioning_estimate_separates_cases(cen):
    """The error estimate puts every reproducible case orders of magnitude below the threshold
    and the irreproducible one far above it; only case 11 is flagged."""
    m = xproda.get_model("clm5", reference=True)
    cases = cen["cases"]
    theta = np.array([c["params_normalized"] for c in cases])
    out = m.steady_state(theta, stack_forcing([fixture_forcing(c) for c in cases]))
    est = out["solve_error_estimate"]
    repro = np.array([c["reproducible"] for c in cases])
    assert est[repro].max() < 1e-11
    assert est[~repro].min() > 1.0
    np.testing.assert_array_equal(out["valid"], repro)
    # without detection the ill-conditioned column returns a number unrelated to the reference
    m_off = xproda.get_model("clm5", reference=True, detect_ill_conditioning=False)
    out_off = m_off.steady_state(theta, stack_forcing([fixture_forcing(c) for c in cases]))
    assert out_off["valid"][11] and np.isfinite(out_off["soc_stock"][11])
    assert not np.isclose(out_off["soc_stock"][11], cases[11]["expected"]["soc_stock"][0], rtol=1e-3)


def test_microbial_reference_parity(mic):
    m = xproda.get_model("microbial", reference=True)
    for i, case in enumerate(mic["cases"]):
        out = m.steady_state(np.array(case["params_normalized"])[None], fixture_forcing(case))
        exp = case["expected"]
        if not case["valid_steady_state"]:
            assert not out["valid"][0], i
            assert set(out.flag_names()[0]) & {"negative_pools", "low_soc_to_mic_ratio"}
            assert np.isnan(out["soc_stock"][0])
            # the reference flips signs of invalid columns: its totals are negative
            assert np.asarray(exp["soc_stock"])[-1] < 0
            continue
        assert out["valid"][0], (i, out.flag_names())
        assert _rel(out["pools"][0], exp["cpools"]) < RTOL, i
        soc_layer = np.asarray(exp["soc_layer"])
        assert _rel(out["soc"][0], soc_layer[:, -1]) < RTOL, i
        assert _rel(out["pools"][0][:, 4:], soc_layer[:, :4]) < RTOL, i
        stocks = np.asarray(exp["soc_stock"])
        assert _rel(out["pool_stocks"][0][4:], stocks[:4]) < RTOL, i
        assert abs(out["soc_stock"][0] - stocks[-1]) / stocks[-1] < RTOL, i


def test_microbial_batch_mixing_valid_and_invalid(mic):
    m = xproda.get_model("microbial", reference=True)
    cases = mic["cases"]
    theta = np.array([c["params_normalized"] for c in cases])
    out = m.steady_state(theta, stack_forcing([fixture_forcing(c) for c in cases]))
    valid = np.array([c["valid_steady_state"] for c in cases])
    np.testing.assert_array_equal(out["valid"], valid)
    assert np.isfinite(out["soc_stock"][valid]).all()
    assert np.isnan(out["soc_stock"][~valid]).all()


def test_corrected_equals_reference_where_no_bug_applies(cen):
    """Corrected mode differs only through the bug-list items: with nb = 20 (closed column,
    inputs not truncated) both modes agree."""
    ref = xproda.get_model("clm5", reference=True)
    cor = xproda.get_model("clm5")
    for case in cen["cases"]:
        if int(case["forcing"]["nbedrock"][0]) != 20:
            continue
        th = np.array(case["params_normalized"])[None]
        f = fixture_forcing(case)
        a, b = ref.steady_state(th, f), cor.steady_state(th, f)
        assert _rel(b["pools"][0], a["pools"][0]) < 1e-12


def test_corrected_mode_is_finite_where_reference_is_ill_conditioned(cen):
    """With the bedrock closed the ill-conditioned case has a well-defined steady state."""
    case = cen["cases"][11]
    out = xproda.get_model("clm5").steady_state(
        np.array(case["params_normalized"])[None], fixture_forcing(case)
    )
    assert out["valid"][0]
    np.testing.assert_allclose(out["respiration"], out["input"], rtol=1e-10)


def test_microbial_enzyme_index_difference_is_the_only_one_with_closed_bedrock(mic):
    """Corrected microbial reads tau4s3 from slot 11, the reference from slot 13 (§10 item 1)."""
    ref = xproda.get_model("microbial", reference=True)
    cor = xproda.get_model("microbial")
    for case in mic["cases"]:
        if not case["valid_steady_state"] or int(case["forcing"]["nbedrock"][0]) != 20:
            continue
        th = np.array(case["params_normalized"])[None]
        f = fixture_forcing(case)
        th_fix = th.copy()
        th_fix[0, 10] = th[0, 12]  # put the value the reference used into the right slot
        a, b = ref.steady_state(th, f), cor.steady_state(th_fix, f)
        assert _rel(b["pools"][0], a["pools"][0]) < 1e-12
        c = cor.steady_state(th, f)
        if not np.isclose(th[0, 10], th[0, 12]):
            assert not np.allclose(c["pools"][0][:, 6], a["pools"][0][:, 6], rtol=1e-6)
