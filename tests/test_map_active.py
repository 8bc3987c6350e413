"""MAP that stops working on rows that are done, and per-site random starts (issue 19).

* ``SiteProblem`` computes a subset of the rows of the site-major batch (``rows=``) with the
  values those rows have in a full-batch call, bit for bit;
* ``map_estimate`` calls a loss with row support only on the rows that need a value
  (converged/frozen rows in Adam, rows that finished their line search in L-BFGS), with
  results identical to evaluating the whole batch every time;
* a site's random starts come from its own stream (seed and site id): its MAP does not
  depend on the other sites of the batch nor on its position.
"""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from xproda.sites.assimilation import streams
from xproda.sites.assimilation.problem import SiteProblem, assimilate
from xproda.sites.assimilation.samplers import map_estimate
from xproda.sites.assimilation.samplers.optimize import accepts_rows
from xproda.testing import random_forcing, twin_profiles

F64 = torch.float64
FREE = ("efolding", "tau4s2")
TOP = np.array([0.0, 0.1, 0.3, 0.5, 0.8, 1.0])
BOTTOM = np.array([0.1, 0.3, 0.5, 0.8, 1.0, 1.5])
SIGMA = 0.05


def _twin(n_sites: int, seed: int = 0):
    f = random_forcing(n_sites, seed, regime="bio")
    f["nbedrock"][:] = 20
    truth, df = twin_profiles(f, FREE, seed=seed, sigma=SIGMA, top=TOP, bottom=BOTTOM,
                              ids=[f"p{s:04d}" for s in range(n_sites)])
    return f, truth, df


@pytest.fixture(scope="module")
def twin():
    f, truth, df = _twin(12)
    return f, truth, df


def _problem(twin, **kw):
    f, truth, df = twin
    opts = dict(likelihood="gaussian", sigma_rel=SIGMA, log_space=True, free=FREE, fixed=truth)
    return SiteProblem(df, f, **{**opts, **kw})


class Toy:
    """A row-independent loss with a per-site optimum keyed by the site's id, two modes per
    parameter, a non-finite region (redraws) and optional row support."""

    def __init__(self, ids, n_params=3):
        self.ids = list(ids)
        self.P = n_params
        self.mu = streams.uniform(streams.site_keys(self.ids, 99), 0, n_params) * 0.5 + 0.25
        self.rows_seen = []  # rows computed per call

    def _value(self, theta, site):
        mu = self.mu[site]
        val = torch.zeros(theta.shape[0], dtype=theta.dtype)
        for j in range(self.P):  # explicit per-column sums: elementwise only
            d = (theta[:, j] - mu[:, j]) / 0.1
            val = val + d * d - 0.8 * torch.exp(-((theta[:, j] - 0.1) / 0.05) ** 2)
        return torch.where(theta[:, 0] > 0.85, torch.full_like(val, math.nan), val)

    def loss(self, theta):
        K = theta.shape[0] // len(self.ids)
        self.rows_seen.append(theta.shape[0])
        return self._value(theta, torch.arange(theta.shape[0]) // K)

    def loss_rows(self, theta, rows=None):
        if rows is None:
            return self.loss(theta)
        K = rows.numel() // len(self.ids)
        idx = torch.nonzero(rows).reshape(-1)
        self.rows_seen.append(idx.numel())
        return self._value(theta, idx // K)


def _same(a, b):
    for k in ("theta_map", "loss", "n_steps", "converged", "start_theta", "start_loss"):
        x, y = getattr(a, k), getattr(b, k)
        assert torch.equal(torch.nan_to_num(x, nan=-1.0), torch.nan_to_num(y, nan=-1.0)), k


# ------------------------------------------------------------------ SiteProblem rows


def test_site_problem_rows_are_bit_identical(twin):
    prob = _problem(twin)
    S, R, P = prob.n_sites, 3, prob.n_free
    g = torch.Generator().manual_seed(1)
    th = torch.rand(S * R, P, generator=g, dtype=F64) * 0.8 + 0.1
    mask = torch.rand(S * R, generator=g) < 0.35
    idx = torch.nonzero(mask).reshape(-1)
    full = prob.cost(th)
    n0 = prob.n_evaluations
    assert torch.equal(prob.cost(th[mask], rows=mask), full[mask])
    assert prob.n_evaluations - n0 == int(mask.sum())  # only the rows are computed
    assert torch.equal(prob.cost(th[idx], rows=idx, n_rows=S * R), full[idx])
    assert torch.equal(prob.predict(th[idx], rows=idx, n_rows=S * R), prob.predict(th)[idx])
    assert torch.equal(prob.log_density(th[mask], rows=mask), prob.log_density(th)[mask])
    assert torch.equal(prob.full_theta(th[mask], rows=mask), prob.full_theta(th)[mask])
    # one row, and the other mappings
    one = torch.zeros(S * R, dtype=torch.bool)
    one[7] = True
    assert torch.equal(prob.cost(th[one], rows=one), full[one])
    for mapping in ("pchip_mean", "layer_mean"):
        p2 = _problem(twin, mapping=mapping)
        assert torch.equal(p2.cost(th[mask], rows=mask), p2.cost(th)[mask])
    with pytest.raises(ValueError, match="n_rows"):
        prob.cost(th[idx], rows=idx)
    with pytest.raises(ValueError, match="select"):
        prob.cost(th, rows=mask)
    with pytest.raises(IndexError):
        prob.cost(th[:2], rows=[0, S * R], n_rows=S * R)
    assert accepts_rows(prob.cost) and accepts_rows(prob.log_density)


# ------------------------------------------------------------------ map_estimate rows


@pytest.mark.parametrize("method", ["lbfgs", "adam"])
def test_map_with_row_support_equals_full_batch(method):
    ids = [f"s{i}" for i in range(9)]
    a, b = Toy(ids), Toy(ids)
    kw = dict(n_sites=9, n_params=3, n_starts=3, method=method, progress=False, site_ids=ids,
              steps=300 if method == "lbfgs" else 2000)
    ra = map_estimate(a.loss, **kw)
    rb = map_estimate(b.loss_rows, **kw)
    _same(ra, rb)
    # the full-batch loss was called with all 27 rows every time; the rows loss with fewer
    assert set(a.rows_seen) == {27}
    assert len(b.rows_seen) == len(a.rows_seen)
    assert sum(b.rows_seen) < 0.8 * 27 * len(b.rows_seen), (sum(b.rows_seen), len(b.rows_seen))
    assert min(b.rows_seen) < 27
    # and the result is a good one: the deeper mode of every site
    assert float((ra.theta_map - a.mu).abs().max()) < 1e-3


def test_map_rows_skip_converged_rows_on_a_site_problem(twin):
    prob = _problem(twin)
    seen = []

    def counting(theta, rows=None):
        seen.append(theta.shape[0])
        return prob.cost(theta, rows=rows)

    B = prob.n_sites * 2
    res = map_estimate(counting, n_sites=prob.n_sites, n_params=2, n_starts=2, method="lbfgs",
                       steps=60, rtol=1e-7, progress=False, site_ids=prob.batch.site_ids)
    assert sum(seen) < 0.6 * B * len(seen), (sum(seen), B * len(seen))
    assert prob.n_evaluations == sum(seen)
    assert bool(torch.isfinite(res.loss).all())
    # the same run evaluating the full batch every time: identical, bit for bit
    full = map_estimate(lambda th: prob.cost(th), n_sites=prob.n_sites, n_params=2,
                        n_starts=2, method="lbfgs", steps=60, rtol=1e-7, progress=False,
                        site_ids=prob.batch.site_ids)
    _same(full, res)
    # a site fitted alone (its own problem) is the same site fitted in the batch
    one = prob.subset([5])
    alone = map_estimate(one.cost, n_sites=1, n_params=2, n_starts=2, method="lbfgs",
                         steps=60, rtol=1e-7, progress=False, site_ids=one.batch.site_ids)
    for k in ("theta_map", "loss", "n_steps", "start_theta"):
        assert torch.equal(getattr(alone, k)[0], getattr(res, k)[5]), k


# ------------------------------------------------------------------ per-site streams


@pytest.mark.parametrize("method", ["lbfgs", "adam"])
def test_map_site_result_independent_of_the_batch(method):
    ids = ["a", "b", "c", "d", "e"]
    kw = dict(n_params=3, n_starts=3, method=method, progress=False, seed=4,
              steps=300 if method == "lbfgs" else 2000)
    batch = map_estimate(Toy(ids).loss_rows, n_sites=5, site_ids=ids, **kw)
    alone = map_estimate(Toy(["c"]).loss_rows, n_sites=1, site_ids=["c"], **kw)
    order = ["e", "c", "a"]
    other = map_estimate(Toy(order).loss_rows, n_sites=3, site_ids=order, **kw)
    no_rows = map_estimate(Toy(order).loss, n_sites=3, site_ids=order, **kw)
    for k in ("theta_map", "loss", "n_steps", "start_theta", "start_loss"):
        ref = getattr(batch, k)
        assert torch.equal(getattr(alone, k)[0], ref[2]), k
        assert torch.equal(getattr(other, k)[1], ref[2]), k
        assert torch.equal(getattr(other, k)[0], ref[4]), k
        assert torch.equal(getattr(no_rows, k)[2], ref[0]), k


def test_map_starts_and_redraws_come_from_the_site_stream():
    ids = ["x", "y", "z"]
    P, K = 2, 4
    keys = streams.derive(streams.site_keys(ids, 7).repeat_interleave(K), "map-start",
                          torch.arange(K).repeat(3))
    u0 = (streams.uniform(keys, 0, P) * 0.8 + 0.1).view(3, K, P)
    res = map_estimate(lambda th: (th * 0).sum(-1) + th[:, 0], n_sites=3, n_params=P,
                       n_starts=K, steps=0, seed=7, site_ids=ids, progress=False)
    np.testing.assert_allclose(res.start_theta.numpy(), u0.numpy(), rtol=1e-15)

    # starts with a non-finite loss are redrawn at counter 1, 2, ... of their own key
    def loss(th):
        return torch.where(th[:, 0] > 0.5, torch.full_like(th[:, 0], math.nan), th.sum(-1))

    res = map_estimate(loss, n_sites=3, n_params=P, n_starts=K, steps=0, seed=7,
                       site_ids=ids, progress=False)
    for r in range(3 * K):
        c = 0
        while float(streams.uniform(keys[r:r + 1], c, P)[0, 0]) * 0.8 + 0.1 > 0.5:
            c += 1
        want = streams.uniform(keys[r:r + 1], c, P)[0] * 0.8 + 0.1
        np.testing.assert_allclose(res.start_theta.view(-1, P)[r].numpy(), want.numpy(),
                                   rtol=1e-15)
    # positions stand in for missing ids; repeated ids are refused
    pos = map_estimate(lambda th: th.sum(-1), n_sites=2, n_params=1, steps=0, progress=False)
    assert pos.settings["random_streams"] == "per site (seed, position)"
    with pytest.raises(ValueError, match="unique"):
        map_estimate(lambda th: th.sum(-1), n_sites=2, n_params=1, site_ids=["a", "a"],
                     progress=False)
    with pytest.raises(ValueError, match="site_ids"):
        map_estimate(lambda th: th.sum(-1), n_sites=2, n_params=1, site_ids=["a"],
                     progress=False)


# ------------------------------------------------------------------ fit statistics


def test_assimilate_map_reports_r2_log(twin):
    f, truth, df = twin
    ds = assimilate(df, f, method="map", likelihood="gaussian", sigma_rel=SIGMA,
                    log_space=True, free=list(FREE), fixed=truth, progress=False,
                    n_starts=1, sampler_options=dict(method="lbfgs", steps=30))
    assert ds["r2_log"].dims == ("site",)
    assert "log SOC" in ds["r2_log"].attrs["comment"]
    assert "likelihood works on log SOC" in ds["r2_log"].attrs["comment"]
    assert "r2_log" in ds["r2_log"].attrs["long_name"]
    prob = _problem(twin)
    th = ds["map"].transpose("site", "parameter").values
    mod = prob.predict(torch.tensor(th)).numpy()
    obs = prob._obs.numpy()
    for s in range(3):
        ok = np.isfinite(obs[s]) & (obs[s] > 0) & (mod[s] > 0)
        lo, lm = np.log(obs[s, ok]), np.log(mod[s, ok])
        want = 1 - ((lm - lo) ** 2).sum() / ((lo - lo.mean()) ** 2).sum()
        assert ds["r2_log"].values[s] == pytest.approx(want, rel=1e-10)
    assert prob.fit_space == "log"
    assert _problem(twin, likelihood="cen").fit_space == "linear"


def test_assimilate_map_takes_one_torch_thread_on_a_full_machine(twin, monkeypatch):
    """The MAP fit runs in parallel.torch_threads_scope: one torch thread while other work
    fills the machine (no spinning OpenMP barriers), torch's count restored afterwards."""
    from xproda.models import parallel
    from xproda.sites.assimilation import samplers

    f, truth, df = twin
    seen = []
    fit = samplers.map_estimate

    def spy(*args, **kw):
        seen.append(torch.get_num_threads())
        return fit(*args, **kw)

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        monkeypatch.setattr(samplers, "map_estimate", spy)
        opts = dict(method="map", likelihood="gaussian", sigma_rel=SIGMA, log_space=True,
                    free=list(FREE), fixed=truth, progress=False, n_starts=1,
                    sampler_options=dict(method="lbfgs", steps=5))
        monkeypatch.setattr(parallel, "other_runnable", lambda: os.cpu_count())
        a = assimilate(df, f, **opts)
        monkeypatch.setattr(parallel, "other_runnable", lambda: 0)
        b = assimilate(df, f, **opts)
        assert seen == [1, 2] and torch.get_num_threads() == 2
        np.testing.assert_array_equal(a["map"].values, b["map"].values)  # the same bits
    finally:
        torch.set_num_threads(before)
