"""Batch mode (one parameter set for all sites): optimiser default, row support, the cost's optimum.

See ``docs/batch-mode.md`` and ``benchmarks/batch_mode_study.py`` (issue 19, item 6).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from xproda.sites.assimilation import costs
from xproda.sites.assimilation.samplers import batch_mode, map_estimate

F64 = torch.float64


def _quadratic(y: torch.Tensor, calls: list | None = None):
    """Per-site loss ``sum (theta - y_s)^2`` of S sites, site-major rows."""
    S, P = y.shape

    def loss(theta):
        k = theta.shape[0] // S
        if calls is not None:
            calls.append(k)
        return ((theta.view(S, k, P) - y[:, None]) ** 2).sum(-1).reshape(-1)

    return loss


def test_default_optimizer_is_lbfgs_and_converges():
    y = torch.rand(5, 3, generator=torch.Generator().manual_seed(1), dtype=F64) * 0.6 + 0.2
    fit = batch_mode(_quadratic(y), n_sites=5, n_params=3, progress=False)
    assert fit.settings["optimizer"] == "lbfgs" and fit.settings["batch_mode"]
    assert bool(fit.converged[0])
    torch.testing.assert_close(fit.theta_map[0], y.mean(0), atol=1e-6, rtol=0)
    adam = batch_mode(_quadratic(y), n_sites=5, n_params=3, optimizer="adam", steps=20,
                      n_starts=1, progress=False)
    assert adam.settings["optimizer"] == "adam"


def test_pooled_loss_has_row_support_with_identical_results():
    """Finished starts leave the computation; the fit equals the one without row support."""
    y = torch.rand(4, 2, generator=torch.Generator().manual_seed(2), dtype=F64) * 0.6 + 0.2
    calls: list[int] = []
    fit = batch_mode(_quadratic(y, calls), n_sites=4, n_params=2, n_starts=3, seed=5,
                     progress=False)
    assert max(calls) == 3 and min(calls) < 3  # some evaluations without the finished starts
    S = 4
    loss = _quadratic(y)

    def pooled_without_rows(theta):  # the pooled loss as before: every start, every call
        k = theta.shape[0]
        return loss(theta.repeat(S, 1)).reshape(S, k).sum(0)

    ref = map_estimate(pooled_without_rows, n_sites=1, n_params=2, n_starts=3, seed=5,
                       method="lbfgs", site_ids=["batch"], progress=False)
    torch.testing.assert_close(fit.start_theta, ref.start_theta, atol=0, rtol=0)
    torch.testing.assert_close(fit.start_loss, ref.start_loss, atol=0, rtol=0)


def test_spec_cost_optimum_of_one_set_underpredicts():
    """The finding of docs/batch-mode.md on a model with one scale parameter.

    Sites differ by a factor ``r_i = t_i / o_i`` between the model's shape and the data; one
    scale ``a`` is shared. The spec (cen) cost ``sum w (a r - 1)^2`` is minimised at
    ``a* = sum w r / sum w r^2``, the log-normal likelihood at the geometric mean
    ``exp(-mean log r)``. With heterogeneous sites ``a*`` lies far below it: the set the spec
    cost prefers underpredicts, and pooled linear R2 punishes that, though the same set has
    the lower cost. batch_mode finds the analytic optimum of either cost.
    """
    rng = np.random.default_rng(0)
    S, D = 40, 4
    t = np.exp(rng.normal(9.5, 0.8, (S, 1))) * np.exp(-np.arange(D) * 0.6)[None]  # model shape
    o = t * np.exp(rng.normal(0.0, 1.0, (S, 1)) + rng.normal(0.0, 0.1, (S, D)))  # data
    w = np.ones((S, D))
    tt, ot, wt = (torch.as_tensor(x) for x in (t, o, w))
    amax = 20.0

    def scaled(theta):
        k = theta.shape[0] // S
        a = amax * theta[:, 0].view(S, k, 1)
        return a * tt[:, None], ot[:, None].expand(S, k, D), wt[:, None].expand(S, k, D)

    def spec(theta):
        m, ob, ww = scaled(theta)
        return costs.cost_cen(m, ob, ww).reshape(-1)

    def lognormal(theta):
        m, ob, _ = scaled(theta)
        return costs.cost_gaussian(m, ob, sigma_rel=0.6, log_space=True).reshape(-1)

    r = t / o
    a_spec = (w * r).sum() / (w * r * r).sum()
    a_log = math.exp(-np.log(r).mean())
    f_spec = batch_mode(spec, n_sites=S, n_params=1, n_starts=2, progress=False)
    f_log = batch_mode(lognormal, n_sites=S, n_params=1, n_starts=2, progress=False)
    assert amax * float(f_spec.theta_map[0, 0]) == pytest.approx(a_spec, rel=1e-5)
    assert amax * float(f_log.theta_map[0, 0]) == pytest.approx(a_log, rel=1e-5)
    assert a_spec < 0.5 * a_log  # the spec cost's single set sits well below the typical site

    def r2(a):
        m = a * t
        return 1.0 - ((m - o) ** 2).sum() / ((o - o.mean()) ** 2).sum()

    def j(a):
        return float(costs.cost_cen(torch.as_tensor(a * t), ot, wt).sum())

    assert j(a_spec) < j(a_log) and r2(a_spec) < r2(a_log)  # lower cost, lower R2


def test_assimilate_batch_uses_lbfgs_by_default():
    """The cross-validation's path (assimilate(method="batch")) gets the L-BFGS default."""
    import pandas as pd

    from xproda.sites.assimilation.problem import assimilate
    from xproda.sites.observations import pack_profiles
    from xproda.testing import forcing_dataset

    grid = forcing_dataset(6, 8, seed=4, ocean_fraction=0.0)
    grid["nbedrock"][:] = 20
    lats, lons = grid.lat.values[[0, 2, 5]], grid.lon.values[[1, 4, 7]]
    df = pd.DataFrame([{"profile_id": f"s{i}", "lat": la, "lon": lo, "top": t, "bottom": b,
                        "soc": v}
                       for i, (la, lo) in enumerate(zip(lats, lons))
                       for t, b, v in ((0.0, 0.1, 3e4), (0.1, 0.3, 2e4), (0.3, 0.6, 1e4))])
    batch = pack_profiles(df)
    sites = grid.proda.sample_sites(lat=batch.lat, lon=batch.lon)
    ds = assimilate(batch, sites, method="batch", free=["efolding", "tau4s2"], progress=False,
                    sampler_options={"steps": 10, "n_starts": 1})
    assert ds.attrs["method"] == "map_lbfgs"
    assert ds["map"].dims == ("parameter",) and np.isfinite(ds["map"].values).all()
