"""Misfit costs, likelihood, prior and fit statistics (spec §6.2)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy import stats

from xproda.sites.assimilation import (
    COSTS,
    Cost,
    cost_cen,
    cost_gaussian,
    cost_mic,
    fit_stats,
    gaussian_loglik,
    get_cost,
    log_prior_uniform,
)
from xproda.sites.assimilation.costs import fit_stats_log

# spec §5.2 / §6.2 example profile
OBS = np.array([20000.0, 15000.0, 9000.0, 5000.0, 3000.0])
MOD = np.array([18000.0, 16000.0, 10000.0, 4000.0, 3500.0])
W = np.array([10 * math.exp(-0.5), 1.0, 1.0, 1.0, 10 * math.exp(-0.5)])
NAN = float("nan")


def padded(rng, b=6, d=7):
    obs = rng.uniform(500.0, 30000.0, (b, d))
    mod = obs * rng.uniform(0.5, 1.5, (b, d))
    w = rng.uniform(1.0, 6.0, (b, d))
    n = rng.integers(2, d + 1, b)
    pad = np.arange(d)[None] >= n[:, None]
    obs[pad] = np.nan
    mod[pad] = np.nan  # ModelToObs gives NaN at padded depths too
    return mod, obs, w, pad


# ------------------------------------------------------------------------------------------
# spec examples
# ------------------------------------------------------------------------------------------


def test_cen_spec_example():
    assert W[0] == pytest.approx(6.0653066, rel=1e-7)
    j = cost_cen(MOD, OBS, W)
    assert j.dtype == torch.float64 and j.shape == ()
    assert float(j) == pytest.approx(0.397117, abs=5e-7)
    assert float(Cost.CEN(MOD, OBS, W)) == float(j)


def test_mic_spec_example():
    j = cost_mic(MOD, OBS)
    assert float(j) == pytest.approx(0.181978, abs=5e-7)
    # = 5 (1 - R^2)
    assert float(j) == pytest.approx(5 * (1 - float(fit_stats(MOD, OBS)["r2"])), rel=1e-14)
    # weights passed through the registry are ignored
    assert float(Cost.MIC(MOD, OBS, W)) == float(j)


# ------------------------------------------------------------------------------------------
# padding, batching
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(COSTS))
def test_padding_ignored_and_batch_equals_loop(name):
    rng = np.random.default_rng(0)
    mod, obs, w, pad = padded(rng)
    cost = get_cost(name)
    batch = cost(mod, obs, w)
    assert batch.shape == (mod.shape[0],)
    for b in range(mod.shape[0]):
        keep = ~pad[b]
        one = cost(mod[b, keep], obs[b, keep], w[b, keep])
        torch.testing.assert_close(batch[b], one, rtol=1e-14, atol=0)
    # explicit mask == NaN padding; padded values may then be anything finite
    obs2 = np.where(pad, 123.0, obs)
    mod2 = np.where(pad, 7.0, mod)
    torch.testing.assert_close(cost(mod2, obs2, w, mask=~pad), batch, rtol=0, atol=0)
    # NaN weights also mark padding (costs that use weights)
    if cost.uses_weights:
        torch.testing.assert_close(cost(mod, np.where(pad, 1.0, obs), np.where(pad, NAN, w)),
                                   batch, rtol=0, atol=0)


def test_leading_dims_and_broadcasting():
    rng = np.random.default_rng(1)
    mod, obs, w, _ = padded(rng)
    chains = torch.stack([torch.tensor(mod), torch.tensor(mod) * 1.1])  # [C, B, D]
    out = cost_cen(chains, obs, w)  # obs/weights broadcast over chains
    assert out.shape == (2, mod.shape[0])
    torch.testing.assert_close(out[1], cost_cen(mod * 1.1, obs, w), rtol=1e-14, atol=0)


def test_model_nan_at_used_observation_propagates():
    # a failed solve must not look like a perfect fit
    mod = MOD.copy()
    mod[2] = NAN
    for name in COSTS:
        assert torch.isnan(get_cost(name)(mod, OBS, W))
    assert torch.isnan(fit_stats(mod, OBS)["rmse"])


def test_empty_and_degenerate_profiles():
    empty = np.full(4, NAN)
    assert float(cost_cen(empty, empty)) == 0.0
    assert float(gaussian_loglik(empty, empty)) == 0.0
    assert math.isnan(float(cost_mic(empty, empty)))
    assert math.isinf(float(cost_mic([1.0, 2.0], [3.0, NAN])))  # one layer: SST = 0
    s = fit_stats([[1.0, NAN]], [[2.0, NAN]])
    assert int(s["n"][0]) == 1 and math.isnan(float(s["r2"][0]))
    assert float(s["rmse"][0]) == 1.0 and float(s["bias"][0]) == -1.0
    assert math.isinf(float(cost_cen([1.0], [0.0])))  # zero obs (removed by §5.2 cleaning)


# ------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fn",
    [
        lambda m, o, w: cost_cen(m, o, w),
        lambda m, o, w: cost_mic(m, o),
        lambda m, o, w: gaussian_loglik(m, o, sigma_rel=0.3, sigma_abs=200.0, weights=w),
        lambda m, o, w: gaussian_loglik(m, o, sigma_rel=0.3, sigma_abs=200.0, log_space=True),
        lambda m, o, w: fit_stats(m, o)["r2"] + fit_stats(m, o)["corr"],
    ],
)
def test_gradcheck(fn):
    rng = np.random.default_rng(2)
    mod, obs, w, pad = padded(rng, b=3, d=4)
    m = torch.tensor(np.where(pad, NAN, mod), requires_grad=True)
    o = torch.tensor(obs)
    wt = torch.tensor(w)

    def f(mm):
        # gradcheck perturbs every entry, padded NaNs included: keep them NaN
        return fn(torch.where(torch.tensor(pad), NAN, mm), o, wt)

    m0 = torch.tensor(np.where(pad, 1.0, mod), requires_grad=True)
    assert torch.autograd.gradcheck(f, (m0,))
    out = fn(m, o, wt).sum()
    out.backward()
    assert torch.isfinite(m.grad).all() and (m.grad[torch.tensor(pad)] == 0).all()


def test_gradient_of_cen_is_analytic():
    m = torch.tensor(MOD, requires_grad=True)
    cost_cen(m, OBS, W).backward()
    np.testing.assert_allclose(m.grad.numpy(), W * (MOD - OBS) / (0.6 * OBS) ** 2, rtol=1e-14)


# ------------------------------------------------------------------------------------------
# Gaussian likelihood, prior
# ------------------------------------------------------------------------------------------


def test_gaussian_matches_scipy_and_cen():
    sr, sa = 0.3, 150.0
    ll = gaussian_loglik(MOD, OBS, sigma_rel=sr, sigma_abs=sa)
    sd = np.sqrt((sr * OBS) ** 2 + sa**2)
    assert float(ll) == pytest.approx(stats.norm.logpdf(OBS, MOD, sd).sum(), rel=1e-13)
    # weighted, 60 % relative error: -log L = cost_cen + constant
    llw = gaussian_loglik(MOD, OBS, sigma_rel=0.6, weights=W)
    const = np.sum(W * (np.log(0.6 * OBS) + 0.5 * np.log(2 * np.pi)))
    assert float(-llw) == pytest.approx(float(cost_cen(MOD, OBS, W)) + const, rel=1e-13)
    assert float(cost_gaussian(MOD, OBS, W, sigma_rel=0.6)) == float(-llw)
    # log space: log-normal density of the observations (Jacobian included)
    lll = gaussian_loglik(MOD, OBS, sigma_rel=sr, sigma_abs=sa, log_space=True)
    s = np.sqrt(sr**2 + (sa / OBS) ** 2)
    ref = stats.lognorm.logpdf(OBS, s, scale=MOD).sum()
    assert float(lll) == pytest.approx(ref, rel=1e-13)


def test_gaussian_log_space_nonpositive_model_and_validation():
    mod = MOD.copy()
    mod[1] = -5.0
    assert float(gaussian_loglik(mod, OBS, log_space=True)) == -math.inf
    m = torch.tensor(mod, requires_grad=True)
    gaussian_loglik(m, OBS, log_space=True).backward()
    assert torch.isfinite(m.grad).all()
    with pytest.raises(ValueError, match="not both 0"):
        gaussian_loglik(MOD, OBS, sigma_rel=0.0, sigma_abs=0.0)
    # per-observation error sd (tensor) broadcasts
    sd = np.full(5, 0.2)
    assert float(gaussian_loglik(MOD, OBS, sigma_rel=torch.tensor(sd))) == pytest.approx(
        float(gaussian_loglik(MOD, OBS, sigma_rel=0.2)), rel=1e-15)


def test_log_prior_uniform():
    th = torch.tensor([[0.5, 0.1], [1e-12, 1 - 1e-12], [0.0, 0.5], [0.5, 1.0], [NAN, 0.5],
                       [-0.1, 0.5]], dtype=torch.float64)
    out = log_prior_uniform(th)
    assert out.tolist() == [0.0, 0.0, -math.inf, -math.inf, -math.inf, -math.inf]
    assert log_prior_uniform(np.full((2, 3, 4), 0.3)).shape == (2, 3)


# ------------------------------------------------------------------------------------------
# fit statistics
# ------------------------------------------------------------------------------------------


def test_fit_stats_match_numpy():
    rng = np.random.default_rng(3)
    mod, obs, _, pad = padded(rng)
    s = fit_stats(mod, obs)
    for b in range(mod.shape[0]):
        m, o = mod[b, ~pad[b]], obs[b, ~pad[b]]
        sse = np.sum((m - o) ** 2)
        sst = np.sum((o - o.mean()) ** 2)
        np.testing.assert_allclose(float(s["r2"][b]), 1 - sse / sst, rtol=1e-12)
        np.testing.assert_allclose(float(s["nse"][b]), 1 - sse / sst, rtol=1e-12)
        np.testing.assert_allclose(float(s["rmse"][b]), np.sqrt(sse / len(o)), rtol=1e-12)
        np.testing.assert_allclose(float(s["mae"][b]), np.abs(m - o).mean(), rtol=1e-12)
        np.testing.assert_allclose(float(s["bias"][b]), (m - o).mean(), rtol=1e-12)
        np.testing.assert_allclose(float(s["corr"][b]), np.corrcoef(m, o)[0, 1], rtol=1e-12)
        assert int(s["n"][b]) == len(o)



def test_fit_stats_log_hand_example():
    e = math.e
    # logs: model 0, 2, 2; observations 0, 1, 2 -> SSE = 1, SST = 2, R2 = 0.5; the fourth
    # observation is padding, the fifth <= 0 and the sixth has a model value <= 0: left out
    mod = [[1.0, e**2, e**2, 7.0, 3.0, -1.0]]
    obs = [[1.0, e, e**2, NAN, 0.0, 5.0]]
    s = fit_stats_log(mod, obs)
    assert int(s["n"][0]) == 3
    assert float(s["r2"][0]) == pytest.approx(0.5, rel=1e-14)
    assert float(s["bias"][0]) == pytest.approx(1 / 3, rel=1e-14)  # mean log(m / o)
    assert float(s["rmse"][0]) == pytest.approx(math.sqrt(1 / 3), rel=1e-14)
    # linear R2 of the same profile differs (the statistic is in log space)
    assert float(fit_stats(mod, obs)["r2"][0]) != pytest.approx(0.5)
    # a NaN model value at a used observation is a failed solve: NaN, not ignored
    assert torch.isnan(fit_stats_log([[1.0, NAN, 4.0]], [[1.0, 2.0, 3.0]])["r2"][0])
    # fewer than two usable observations: NaN; gradients finite where defined
    assert torch.isnan(fit_stats_log([[1.0, -2.0]], [[1.0, 3.0]])["r2"][0])
    m = torch.tensor([[1.0, -2.0, 4.0, 3.0, 0.0]], dtype=torch.float64, requires_grad=True)
    fit_stats_log(m, [[1.0, 3.0, 0.0, 2.0, 5.0]])["rmse"].sum().backward()
    assert bool(torch.isfinite(m.grad).all()) and float(m.grad[0, 1]) == 0.0


def test_registry():
    assert set(COSTS) == {"cen", "mic", "gaussian"}
    assert get_cost("gaussian") is Cost.GAUSSIAN and get_cost(Cost.CEN) is Cost.CEN
    assert Cost.CEN.uses_weights and not Cost.MIC.uses_weights
    with pytest.raises(ValueError, match="unknown cost"):
        get_cost("chi2")
    with pytest.raises(TypeError, match="takes no options"):
        Cost.MIC(MOD, OBS, sigma_rel=0.1)
    assert float(Cost.CEN(MOD, OBS, W, rel_error=0.3)) == pytest.approx(
        4 * float(cost_cen(MOD, OBS, W)), rel=1e-14)


# ------------------------------------------------------------------------------------------
# properties
# ------------------------------------------------------------------------------------------

pos = st.floats(1.0, 1e6, allow_nan=False, allow_infinity=False)


@settings(max_examples=100, deadline=None)
@given(
    obs=hnp.arrays(np.float64, (3, 5), elements=pos),
    # mod == obs exactly, or a misfit the float64 log-likelihood can resolve: a factor within
    # an ulp or so of 1 changes mod but leaves every cost term below rounding of the sum
    factor=hnp.arrays(np.float64, (3, 5), elements=st.one_of(
        st.just(1.0), st.floats(0.0, 1.0 - 1e-6), st.floats(1.0 + 1e-6, 3.0))),
    w=hnp.arrays(np.float64, (3, 5), elements=st.floats(1.0, 10.0)),
    npad=st.integers(0, 3),
)
def test_costs_nonnegative_zero_iff_equal(obs, factor, w, npad):
    obs = obs.copy()
    if npad:
        obs[:, -npad:] = np.nan
    mod = obs * factor
    used = ~np.isnan(obs)
    equal = np.all(np.where(used, mod == obs, True), axis=1)
    jc = cost_cen(mod, obs, w).numpy()
    assert (jc >= 0).all()
    np.testing.assert_array_equal(jc == 0, equal)
    # the mic cost needs non-constant observations
    sst = np.nansum((obs - np.nanmean(obs, axis=1, keepdims=True)) ** 2, axis=1)
    ok = sst > 1e-6 * np.nanmax(obs, axis=1) ** 2
    jm = cost_mic(mod, obs).numpy()
    assert (jm[ok] >= 0).all()
    np.testing.assert_array_equal(jm[ok] == 0, equal[ok])
    # the likelihood (error sd fixed by the observations) is maximal at mod == obs
    ll = gaussian_loglik(mod, obs, sigma_rel=0.2, sigma_abs=10.0).numpy()
    llmax = gaussian_loglik(obs, obs, sigma_rel=0.2, sigma_abs=10.0).numpy()
    assert (ll <= llmax).all()
    np.testing.assert_array_equal(ll == llmax, equal)
