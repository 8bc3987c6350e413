"""Site-level data assimilation through the process model: twin experiments and glue.

Twin design: 200 synthetic sites with deep soils (no bedrock above 8.6 m), profiles observed
at six depth intervals (0-150 cm), log-normal noise of 5% and the matching Gaussian
likelihood on log SOC.  The free parameters are ``efolding``, ``tau4s2`` and ``diffus``; the
others are fixed at the truth.  Which free parameters are identifiable is decided from the
Fisher information at the truth (posterior sd <= 1/4 of the prior sd): with six depths,
``efolding`` (depth attenuation of decomposition) is identifiable at every site, the slow-pool
turnover ``tau4s2`` at most sites, and the bioturbation diffusivity ``diffus`` at few — the
equifinality that motivates PRODA's second (network) stage.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

import xproda
from xproda.sites.assimilation.problem import SiteProblem, assimilate
from xproda.testing import random_forcing, twin_profiles

FREE = ("efolding", "tau4s2", "diffus")
TOP = np.array([0.0, 0.1, 0.3, 0.5, 0.8, 1.0])
BOTTOM = np.array([0.1, 0.3, 0.5, 0.8, 1.0, 1.5])
SIGMA = 0.05
PRIOR_SD = 1 / np.sqrt(12)


def _twin(n_sites: int, seed: int = 0):
    """Forcing, truth (normalised, full vector) and noisy profiles for ``n_sites`` sites."""
    f = random_forcing(n_sites, seed, regime="bio")
    f["nbedrock"][:] = 20
    truth, df = twin_profiles(f, FREE, seed=seed, sigma=SIGMA, top=TOP, bottom=BOTTOM,
                              ids=[f"p{s:04d}" for s in range(n_sites)])
    return f, truth, df


def _problem(n_sites, seed=0):
    f, truth, df = _twin(n_sites, seed)
    prob = SiteProblem(df, f, likelihood="gaussian", sigma_rel=SIGMA, log_space=True,
                       free=FREE, fixed=truth)
    return prob, truth


def _fisher_sd(prob, theta_free):
    """Posterior sd from the Fisher information at ``theta_free`` (Laplace, uniform prior)."""
    th = torch.tensor(theta_free, requires_grad=True)
    logm = torch.log(prob.predict(th))  # [S, D]
    J = torch.stack([torch.autograd.grad(logm[:, d].sum(), th, retain_graph=True)[0]
                     for d in range(logm.shape[1])], 1)  # [S, D, Pf]
    F = J.transpose(1, 2) @ J / SIGMA**2 + torch.eye(J.shape[-1]) / PRIOR_SD**2
    return torch.sqrt(torch.diagonal(torch.linalg.inv(F), dim1=1, dim2=2)).detach().numpy()


def test_site_problem_glue():
    prob, truth = _problem(5)
    idx = [xproda.get_model("clm5").parameters.index(p) for p in FREE]
    th = torch.tensor(truth[:, idx]).repeat_interleave(2, 0)  # 2 replicas per site
    full = prob.full_theta(th)
    assert full.shape == (10, 21)
    np.testing.assert_array_equal(full[::2].numpy(), truth)
    lp = prob.log_density(th)
    assert lp.shape == (10,) and torch.isfinite(lp).all()
    assert torch.equal(lp[::2], lp[1::2])  # replicas of one site agree
    # the truth is better than a distant parameter set
    far = th.clone()
    far[:, 0] = 0.05
    assert (prob.log_density(far) < lp).all()
    with pytest.raises(KeyError, match="not parameters"):
        SiteProblem(prob.batch, prob.forcing, free=["nope"])
    with pytest.raises(ValueError, match="multiple"):
        prob.log_density(th[:3])


@pytest.mark.slow
def test_twin_recovers_identifiable_parameters():
    n = 200
    prob, truth = _problem(n, seed=1)
    idx = [xproda.get_model("clm5").parameters.index(p) for p in FREE]
    true_free = truth[:, idx]
    sd_fisher = _fisher_sd(prob, true_free)
    identifiable = sd_fisher < PRIOR_SD / 4  # [S, Pf]
    share = identifiable.mean(0)
    assert share[0] > 0.85, "efolding is identifiable at most sites"
    assert share[2] < 0.5, "diffus is weakly identified from six depths"

    # MAP (multi-start, gradients through the model)
    mp = assimilate(prob.batch, prob.forcing, method="map", likelihood="gaussian",
                    sigma_rel=SIGMA, log_space=True, free=FREE, fixed=truth, n_starts=3,
                    progress=False, seed=2)
    th_map = mp["map"].transpose("site", "parameter").values
    err = np.abs(th_map - true_free)
    ok = identifiable
    assert np.median(err[ok[:, 0], 0]) < 2 * np.median(sd_fisher[:, 0])
    assert np.mean(err[ok] < 4 * sd_fisher[ok]) > 0.9

    # adaptive Metropolis, 3 chains
    am = assimilate(prob.batch, prob.forcing, method="am", likelihood="gaussian",
                    sigma_rel=SIGMA, log_space=True, free=FREE, fixed=truth, n_chains=3,
                    n_iter=4000, progress=False, seed=3)
    rhat = am["rhat"].transpose("site", "parameter").values
    assert np.nanmax(rhat) < 1.05 or np.mean(rhat < 1.05) > 0.97
    post_mean = am["mean"].transpose("site", "parameter").values
    e = np.abs(post_mean - true_free)
    assert np.mean(e[ok] < 4 * sd_fisher[ok]) > 0.9
    # 90% central intervals cover the truth at the nominal rate (within sampling error)
    draws = am["samples"].transpose("site", "chain", "draw", "parameter").values
    draws = draws.reshape(n, -1, len(FREE))
    lo, hi = np.nanquantile(draws, 0.05, axis=1), np.nanquantile(draws, 0.95, axis=1)
    cover = ((true_free >= lo) & (true_free <= hi)).mean(0)
    tol = 3 * np.sqrt(0.9 * 0.1 / n)
    assert np.all(np.abs(cover - 0.9) < tol + 0.03), cover
    assert float(np.nanmedian(am["r2"])) > 0.9  # posterior-mean fits of the noisy profiles


def test_forcing_from_grid_via_sample_sites():
    """Profiles located on a gridded forcing: sample_sites supplies each site's forcing."""
    from xproda.testing import forcing_dataset

    grid = forcing_dataset(6, 8, seed=4, ocean_fraction=0.0)
    grid["nbedrock"][:] = 20
    lats = grid.lat.values[[0, 2, 5]]
    lons = grid.lon.values[[1, 4, 7]]
    rows = [{"profile_id": f"s{i}", "lat": la, "lon": lo, "top": t, "bottom": b, "soc": v}
            for i, (la, lo) in enumerate(zip(lats, lons))
            for t, b, v in ((0.0, 0.1, 3e4), (0.1, 0.3, 2e4), (0.3, 0.6, 1e4))]
    df = pd.DataFrame(rows)
    from xproda.sites.observations import pack_profiles

    batch = pack_profiles(df)
    sites = grid.proda.sample_sites(lat=batch.lat, lon=batch.lon)
    prob = SiteProblem(batch, sites, free=["efolding", "tau4s2"])
    lp = prob.log_density(torch.full((3, 2), 0.5, dtype=torch.float64))
    assert torch.isfinite(lp).all()
    # the same as the kernel on the grid cells themselves
    m = xproda.get_model("clm5")
    cells = grid.isel(lat=xr_idx([0, 2, 5]), lon=xr_idx([1, 4, 7]))
    ref = cells.proda.steady_state(
        xr.DataArray(np.full(21, 0.5), dims="parameter"))["soc"].transpose("site", "layer")
    th = torch.full((3, 21), 0.5, dtype=torch.float64)
    got = m.steady_state(th, prob._replicated(1)[0])["soc"].numpy()
    np.testing.assert_allclose(got, ref.values, rtol=1e-12)


def xr_idx(values):
    return xr.DataArray(values, dims="site")


def test_free_in_any_order_is_placed_by_name():
    """free= with every parameter in another order (a former silent-wrong bug: the columns
    were read in model order while the outputs carried the given labels)."""
    f, truth, df = _twin(5)
    prob = SiteProblem(df, f, likelihood="gaussian", sigma_rel=SIGMA, log_space=True,
                       free=FREE, fixed=truth)
    names = list(prob.param_names)
    rev = names[::-1]
    prob_rev = SiteProblem(prob.batch, prob.forcing, likelihood="gaussian", sigma_rel=SIGMA,
                           log_space=True, free=rev, fixed=truth)
    prob_all = SiteProblem(prob.batch, prob.forcing, likelihood="gaussian", sigma_rel=SIGMA,
                           log_space=True, free=names, fixed=truth)
    th = torch.tensor(truth)
    th[:, names.index("q10")] = 0.3  # not symmetric under reversal
    th_rev = th[:, [names.index(p) for p in rev]]
    np.testing.assert_array_equal(prob_rev.full_theta(th_rev).numpy(), th.numpy())
    np.testing.assert_array_equal(prob_rev.predict(th_rev).numpy(),
                                  prob_all.predict(th).numpy())
    # a subset in another order too
    sub = ["diffus", "efolding"]
    prob_sub = SiteProblem(prob.batch, prob.forcing, likelihood="gaussian", sigma_rel=SIGMA,
                           log_space=True, free=sub, fixed=truth)
    full = prob_sub.full_theta(th[:, [names.index(p) for p in sub]]).numpy()
    for p in sub:
        np.testing.assert_array_equal(full[:, names.index(p)], th[:, names.index(p)].numpy())
    with pytest.raises(ValueError, match="distinct.*'q10'"):
        SiteProblem(prob.batch, prob.forcing, free=["q10", "beta", "q10"])


def test_assimilate_free_order_labels_results():
    """assimilate(free=<all 21 in reverse>): each estimate carries its own parameter's label.

    The reported fit (r2, computed inside from the labelled estimates) must equal the fit
    recomputed independently by name in a model-order problem; with the former bug the
    labels were wrong and the two differed.
    """
    f, truth, df = _twin(5)
    names = list(xproda.get_model("clm5").parameters.names)
    rev = names[::-1]
    res = assimilate(df, f, free=rev, likelihood="gaussian", sigma_rel=SIGMA, log_space=True,
                     fixed=truth, method="map", n_starts=1, seed=0, progress=False,
                     sampler_options={"method": "lbfgs", "steps": 5})
    assert list(res["parameter"].values) == rev
    th = res["map"].sel(parameter=names).transpose("site", "parameter").values  # by name
    assert np.isfinite(th).all()
    ref = SiteProblem(df, f, likelihood="gaussian", sigma_rel=SIGMA, log_space=True,
                      free=names, fixed=truth)
    r2 = ref.fit(th)["r2"]
    np.testing.assert_allclose(res["r2"].values, r2, rtol=1e-10)
    # and the estimates are not symmetric under reversal (the test can tell orders apart)
    assert not np.allclose(th, th[:, ::-1])
