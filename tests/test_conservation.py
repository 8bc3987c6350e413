"""Mass balance at steady state: total input = total heterotrophic respiration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xproda
from conftest import random_forcing

MODELS = {"clm5": 21, "microbial": 23}


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), regime=st.sampled_from(["bio", "cryo", "mixed"]))
@pytest.mark.parametrize("name", ["clm5", "microbial"])
def test_input_equals_respiration_corrected(name, seed, regime):
    n = 16
    rng = np.random.default_rng(seed)
    theta = rng.uniform(0.02, 0.98, (n, MODELS[name]))
    f = random_forcing(n, seed, regime=regime)
    out = xproda.get_model(name).steady_state(theta, f)
    ok = out["valid"]
    if name == "clm5":
        assert ok.all(), out.flag_names()
    np.testing.assert_allclose(out["respiration"][ok], out["input"][ok], rtol=1e-10)
    assert (out["pools"][ok] >= 0).all()
    # the input is the annual sum of the monthly column totals
    total = sum(f[k].sum(-1) for k in ("CWD_INPUT", "LITR1_INPUT", "LITR2_INPUT", "LITR3_INPUT"))
    np.testing.assert_allclose(out["input"][ok], total[ok], rtol=1e-12)


def test_reference_leaks_through_open_bedrock():
    """Bioturbation with nb < 20: the reference loses carbon at the bedrock (§2.6, §10.10)."""
    n = 8
    f = random_forcing(n, 3, regime="bio")
    f["nbedrock"][:] = 14
    theta = np.full((n, 21), 0.5)
    ref = xproda.get_model("clm5", reference=True).steady_state(theta, f)
    cor = xproda.get_model("clm5").steady_state(theta, f)
    assert ref["valid"].all() and cor["valid"].all()
    leak = (ref["input"] - ref["respiration"]) / ref["input"]
    assert (leak > 1e-6).all()  # carbon leaves the column without being respired
    np.testing.assert_allclose(cor["respiration"], cor["input"], rtol=1e-10)


def test_turnover_time_is_stock_over_input():
    f = random_forcing(10, 5)
    out = xproda.get_model("clm5").steady_state(np.full((10, 21), 0.4), f)
    np.testing.assert_allclose(out["turnover_time"], out["soc_stock"] / out["input"], rtol=1e-14)


def test_inputs_truncated_at_bedrock_in_corrected_mode():
    f = random_forcing(4, 7, regime="bio")
    f["nbedrock"][:] = 6
    out = xproda.get_model("clm5").steady_state(np.full((4, 21), 0.5), f)
    # below the first layer under bedrock: no input and only the 1e-30 fill diffusivity
    deep = np.abs(out["pools"][:, 7:, :]).max(axis=(1, 2))
    assert (deep < 1e-12 * out["pools"].max(axis=(1, 2))).all()
    assert (out["pools"][:, 6, 4:] > 0).all()  # layer nb+1 is still mixed into (reference too)
    ref = xproda.get_model("clm5", reference=True).steady_state(np.full((4, 21), 0.5), f)
    assert (ref["pools"][:, 7:, 0] > 0).all()  # the reference feeds litter below bedrock
