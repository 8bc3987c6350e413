"""The random-sampling baseline (Tao et al. 2020): one set drawn from site-level DA results.

The DA results here are made from the twin world's known truth (not by a sampler), so the
tests do not depend on any sampler's random stream.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xproda
from xproda.datasets import synthetic_profiles, synthetic_world, truth_at_sites, truth_parameters
from xproda.learning import random_sampling as rs
from xproda.learning.training import TrainingData, prepare_training_data

NAMES = list(xproda.get_model("clm5").parameters.names)


@pytest.fixture(scope="module")
def twin() -> tuple[TrainingData, xr.Dataset]:
    world = synthetic_world(6.0, seed=0)
    truth = truth_parameters(world, kind="cue")
    prof = synthetic_profiles(world, n_sites=120, truth=truth, noise=0.1, seed=3)
    data = prepare_training_data(world, prof)
    ids = np.asarray(data.batch.site_ids)
    th = truth_at_sites(truth, prof).sel(site=ids).transpose("site", "parameter")
    da = xr.Dataset({"map": th, "r2": ("site", np.full(len(ids), 0.9))}, coords={"site": ids})
    return data, da


def _samples(da: xr.Dataset, seed: int = 0) -> xr.Dataset:
    """A posterior-like result: 2 chains x 5 draws around the truth, with NaN padding."""
    rng = np.random.default_rng(seed)
    th = da["map"].values
    s = np.clip(th[:, None, None, :] + 0.02 * rng.standard_normal(th.shape[:1] + (2, 5)
                                                                  + th.shape[1:]), 0.01, 0.99)
    s[:, 1, 3:] = np.nan  # padding (the reference sampler's accepted samples are left-aligned)
    return xr.Dataset({"samples": (("site", "chain", "draw", "parameter"), s),
                       "mean": (("site", "parameter"), np.nanmean(s, axis=(1, 2)))},
                      coords={"site": da.site.values, "parameter": da.parameter.values})


def test_draw_candidates_point_estimates_and_samples():
    est = np.arange(12, dtype=float).reshape(4, 1, 3)
    cand, site, draw = rs.draw_candidates(est, n_draws=10, seed=1)
    assert sorted(site.tolist()) == [0, 1, 2, 3]  # at most one per site, distinct
    np.testing.assert_array_equal(cand, est[site, 0])
    assert (draw == 0).all()
    est[2] = np.nan  # a site without a finite estimate is never drawn
    _, site, _ = rs.draw_candidates(est, n_draws=2, seed=1)
    assert 2 not in site.tolist() and len(set(site.tolist())) == 2
    smp = np.random.default_rng(0).random((3, 6, 2))
    smp[:, 4:] = np.nan
    cand, site, draw = rs.draw_candidates(smp, n_draws=50, seed=2)
    assert cand.shape == (50, 2) and np.isfinite(cand).all() and (draw < 4).all()
    np.testing.assert_array_equal(cand, smp[site, draw])
    again = rs.draw_candidates(smp, n_draws=50, seed=2)
    for a, b in zip(again, (cand, site, draw)):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(rs.draw_candidates(smp, n_draws=50, seed=3)[0], cand)
    with pytest.raises(ValueError, match="n_draws: expected an int >= 1"):
        rs.draw_candidates(smp, n_draws=0, seed=0)
    with pytest.raises(ValueError, match="no training site has a finite DA estimate"):
        rs.draw_candidates(np.full((2, 1, 3), np.nan), n_draws=3, seed=0)


def test_median_and_best_are_deterministic_and_from_the_pool(twin):
    data, da = twin
    train = data.subset(np.arange(80))
    kw = dict(n_draws=30, seed=5, mapping="layer_mean")
    med = rs.random_sampling_parameters(da, train, **kw)
    assert med.attrs["select"] == "median" and med.attrs["estimate"] == "map"
    xr.testing.assert_identical(med, rs.random_sampling_parameters(da, train, **kw))
    assert med.sizes == {"parameter": len(NAMES), "candidate": 30}
    np.testing.assert_array_equal(med.theta.values, np.median(med.candidates.values, axis=0))
    # candidates are estimates of distinct training sites
    src = med.source_site.values
    assert len(set(src.tolist())) == 30
    assert set(src.tolist()) <= set(np.asarray(train.batch.site_ids).tolist())
    np.testing.assert_array_equal(med.candidates.values,
                                  da["map"].sel(site=src, parameter=NAMES).values)
    assert np.isfinite(med.cost.values).all() and np.isfinite(med.attrs["theta_cost"])
    best = rs.random_sampling_parameters(da, train, select="best", **kw)
    i = int(np.argmin(best.cost.values))
    assert best.attrs["chosen"] == i
    np.testing.assert_array_equal(best.theta.values, best.candidates.values[i])
    np.testing.assert_array_equal(best.cost.values, med.cost.values)  # same draws, same costs
    assert best.attrs["theta_cost"] == best.cost.values[i] <= med.attrs["theta_cost"]
    other = rs.random_sampling_parameters(da, train, **{**kw, "seed": 6})
    assert not np.array_equal(other.source_site.values, src)
    # the cost does not depend on how many rows go to the model at once
    small = rs.random_sampling_parameters(da, train, select="best", max_rows=100, **kw)
    np.testing.assert_allclose(small.cost.values, best.cost.values, rtol=1e-12)


def test_pools_only_the_given_sites_and_takes_parameters_by_name(twin):
    data, da = twin
    ids = np.asarray(data.batch.site_ids)
    train, held = np.arange(70), np.arange(70, len(ids))
    leaky = da.copy(deep=True)
    sentinel = 0.9 + 0.0001 * np.arange(held.size)[:, None] * np.ones(len(NAMES))
    leaky["map"][held] = sentinel  # held-out sites carry values no training site has
    res = rs.random_sampling_parameters(leaky, data.subset(train), n_draws=500,
                                        mapping="layer_mean")
    assert set(res.source_site.values.tolist()) == set(ids[train].tolist())  # all of them
    cand = res.candidates.values
    assert not (cand[:, None, :] == sentinel[None]).all(-1).any()
    # a subset of the training sites is pooled when given (two-step's DA filter)
    few = ids[train[:10]]
    sub = rs.random_sampling_parameters(leaky, data.subset(train), sites=few, n_draws=50,
                                        mapping="layer_mean")
    assert sub.sizes["candidate"] == 10 and set(sub.source_site.values.tolist()) == set(few)
    assert sub.attrs["n_sites_pooled"] == 10
    # parameters are matched by name, whatever their order in the DA result
    rev = rs.random_sampling_parameters(leaky.sel(parameter=NAMES[::-1]), data.subset(train),
                                        n_draws=500, mapping="layer_mean")
    xr.testing.assert_identical(rev, res)


def test_posterior_samples_are_pooled(twin):
    data, da = twin
    post = _samples(da)
    train = data.subset(np.arange(60))
    res = rs.random_sampling_parameters(post, train, n_draws=40, seed=1, select="best",
                                        mapping="layer_mean")
    assert res.attrs["estimate"] == "samples"
    flat = post["samples"].sel(site=res.source_site.values).values.reshape(40, 10, -1)
    d = res.source_draw.values
    np.testing.assert_array_equal(res.candidates.values, flat[np.arange(40), d])
    assert np.isfinite(res.candidates.values).all()  # padding never drawn
    assert not np.isin(d, [8, 9]).any()  # chain 1, draws 3-4 are padding


def test_bad_inputs_are_refused_clearly(twin):
    data, da = twin
    train = data.subset(np.arange(30))
    with pytest.raises(ValueError, match="select: expected one of"):
        rs.random_sampling_parameters(da, train, select="mean")
    with pytest.raises(ValueError, match=r"missing: \['beta'\]"):
        rs.random_sampling_parameters(da.drop_sel(parameter="beta"), train)
    with pytest.raises(KeyError, match="lacks 30 site"):
        rs.random_sampling_parameters(da.isel(site=slice(40, None)), train)
    with pytest.raises(ValueError, match="per-site DA results"):
        rs.random_sampling_parameters(da.isel(site=0, drop=True), train)
    with pytest.raises(ValueError, match="n_draws"):
        rs.random_sampling_parameters(da, train, n_draws=-1)
