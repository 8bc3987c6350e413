"""Batched samplers, optimisers and diagnostics (xproda.sites.assimilation.samplers/diagnostics)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from xproda.sites.assimilation import diagnostics as diag
from xproda.sites.assimilation.checkpoint import load_checkpoint
from xproda.sites.assimilation.samplers import (
    MapResult,
    SamplerResult,
    adaptive_metropolis,
    annealed_acceptance_probability,
    batch_mode,
    map_estimate,
    reference_sampler,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


# ----------------------------------------------------------------------------- toys


class TruncatedGaussians:
    """Twin experiment: per-site truth theta*, data y ~ N(theta*, sd^2), flat prior on
    (0, 1)^P, so the posterior is N(y, sd^2) truncated to the box (known exactly)."""

    def __init__(self, n_sites: int, n_params: int, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.S, self.P = n_sites, n_params
        self.truth = rng.uniform(0.25, 0.75, (n_sites, n_params))
        self.sd = rng.uniform(0.03, 0.08, (n_sites, n_params))
        self.y = self.truth + self.sd * rng.normal(size=(n_sites, n_params))
        self.y_t = torch.tensor(self.y)
        self.sd_t = torch.tensor(self.sd)
        a, b = (0 - self.y) / self.sd, (1 - self.y) / self.sd
        self.post_mean = stats.truncnorm.mean(a, b, loc=self.y, scale=self.sd)
        self.post_sd = stats.truncnorm.std(a, b, loc=self.y, scale=self.sd)

    def log_density(self, theta: torch.Tensor) -> torch.Tensor:
        assert bool(((theta > 0) & (theta < 1)).all()), "target called outside the box"
        k = theta.shape[0] // self.S
        r = (theta.view(self.S, k, self.P) - self.y_t[:, None]) / self.sd_t[:, None]
        return (-0.5 * r**2).sum(-1).reshape(-1)

    def loss(self, theta: torch.Tensor) -> torch.Tensor:
        return -self.log_density(theta)


def ar1(rho: float, shape: tuple[int, ...], n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    e = rng.normal(size=shape + (n,)) * math.sqrt(1 - rho**2)
    x = np.empty_like(e)
    x[..., 0] = rng.normal(size=shape)
    for t in range(1, n):
        x[..., t] = rho * x[..., t - 1] + e[..., t]
    return x


# ----------------------------------------------------------------------------- diagnostics


def test_rhat_iid_is_one():
    x = np.random.default_rng(0).normal(size=(20, 4, 1000))
    for method in ("rank", "split", "classic"):
        r = diag.rhat(x, method=method)
        assert r.shape == (20,)
        assert np.all(np.abs(r - 1) < 0.02), method


def test_rhat_detects_shifted_chain():
    x = np.random.default_rng(1).normal(size=(5, 3, 1000))
    x[:, 2] += 1.0
    for method in ("rank", "split", "classic"):
        assert np.all(diag.rhat(x, method=method) > 1.1), method


def test_split_rhat_detects_trend_within_chains():
    n = 1000
    x = np.random.default_rng(2).normal(size=(4, 4, n)) + np.linspace(0, 3, n)
    assert np.all(diag.rhat(x, method="split") > 1.1)
    assert np.all(diag.rhat(x, method="classic") < 1.05)  # classic misses it


def test_ess_iid_close_to_total_draws():
    x = np.random.default_rng(3).normal(size=(30, 4, 1000))
    for method in ("bulk", "basic"):
        e = diag.ess(x, method=method)
        assert abs(e.mean() / 4000 - 1) < 0.05, method
        assert np.all((e > 3000) & (e < 5500)), method
    assert np.all(diag.ess(x, method="tail") > 2000)


@pytest.mark.parametrize("rho", [0.5, 0.9])
def test_ess_ar1_matches_theory(rho):
    n, chains = 10000, 4
    x = ar1(rho, (8, chains), n, seed=4)
    expected = chains * n * (1 - rho) / (1 + rho)
    for method in ("basic", "bulk"):
        e = diag.ess(x, method=method)
        assert abs(e.mean() / expected - 1) < 0.08, (method, e.mean(), expected)
        assert np.all(np.abs(e / expected - 1) < 0.25), method


def test_diagnostics_axes_and_torch_roundtrip():
    x = np.random.default_rng(5).normal(size=(6, 3, 400, 2))  # site, chain, draw, param
    r_np = diag.rhat(x, chain_axis=1, draw_axis=2)
    e_np = diag.ess(x, chain_axis=1, draw_axis=2)
    assert r_np.shape == e_np.shape == (6, 2)
    r_t = diag.rhat(torch.tensor(x), chain_axis=1, draw_axis=2)
    assert isinstance(r_t, torch.Tensor) and r_t.dtype == F64
    np.testing.assert_array_equal(r_t.numpy(), r_np)
    moved = np.moveaxis(x, (1, 2), (-2, -1))
    np.testing.assert_array_equal(diag.ess(moved), e_np)
    # constant draws -> NaN
    assert np.isnan(diag.rhat(np.ones((3, 100)))) and np.isnan(diag.ess(np.ones((3, 100))))


def test_acceptance_rate_from_draws():
    draws = np.array([[0.1, 0.1], [0.1, 0.1], [0.2, 0.1], [0.2, 0.3], [0.2, 0.3]])  # [draw, P]
    x = np.broadcast_to(draws, (2, 3) + draws.shape)  # site, chain, draw, param
    r = diag.acceptance_rate(x)
    assert r.shape == (2, 3)
    np.testing.assert_allclose(r, 0.5)


def test_reference_gelman_rubin_matches_loop():
    rng = np.random.default_rng(6)
    counts = np.array([[50, 80, 65], [40, 40, 90]])
    x = np.full((2, 3, 90, 2), np.nan)
    for s in range(2):
        for c in range(3):
            x[s, c, : counts[s, c]] = rng.normal(c * 0.1, 1.0, (counts[s, c], 2))
    got = diag.reference_gelman_rubin(x, counts)
    for s in range(2):
        chains = [x[s, c, : counts[s, c]] for c in range(3)]
        n = len(chains[-1])  # PRODA: N of the last chain for all chains
        means = np.array([ch.mean(0) for ch in chains])
        b = n / 2 * ((means - means.mean(0)) ** 2).sum(0)
        w = sum(((ch - ch.mean(0)) ** 2).sum(0) for ch in chains) / (3 * (n - 1))
        expected = np.sqrt(((n - 1) / n * w + b / n) / w)
        np.testing.assert_allclose(got[s], expected, rtol=1e-12)


# ----------------------------------------------------------------------------- AM


@pytest.fixture(scope="module")
def am_twin():
    toy = TruncatedGaussians(50, 3, seed=10)
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        res = adaptive_metropolis(toy.log_density, n_sites=50, n_params=3, n_chains=3,
                                  n_iter=6000, burn_in=2000, adapt_start=300, seed=1,
                                  progress=False)
    finally:
        torch.set_num_threads(old)
    return toy, res


def test_am_twin_posterior_moments(am_twin):
    toy, res = am_twin
    assert isinstance(res, SamplerResult)
    assert res.samples.shape == (50, 3, 4000, 3)
    mean, sd, ess = res.mean.numpy(), res.sd.numpy(), res.ess.numpy()
    assert np.all(ess > 300)
    z = (mean - toy.post_mean) / (toy.post_sd / np.sqrt(ess))
    assert np.all(np.abs(z) < 4.5), np.abs(z).max()
    assert abs(np.mean(z**2) - 1) < 0.5  # errors consistent with the ESS
    rel = sd / toy.post_sd - 1
    assert np.all(np.abs(rel) < 5 / np.sqrt(ess)), np.abs(rel).max()
    assert float(res.rhat.max()) < 1.05
    acc = res.acceptance.numpy()
    assert np.all((acc > 0.15) & (acc < 0.6))


def test_am_twin_interval_coverage(am_twin):
    toy, res = am_twin
    draws = res.samples.numpy().reshape(50, -1, 3)
    lo, hi = np.quantile(draws, [0.05, 0.95], axis=1)
    covered = (lo <= toy.truth) & (toy.truth <= hi)
    n = covered.size  # 150 intervals
    # binomial(150, 0.9): 3 sd band
    tol = 3 * math.sqrt(0.9 * 0.1 / n)
    assert abs(covered.mean() - 0.9) < tol, covered.mean()


@pytest.mark.parametrize("adapt_every", [1, 7])
def test_am_running_covariance_equals_history_covariance(tmp_path, adapt_every):
    toy = TruncatedGaussians(4, 3, seed=11)
    init = torch.rand(4, 2, 3, generator=torch.Generator().manual_seed(3), dtype=F64) * 0.5 + 0.25
    path = tmp_path / "am.safetensors"
    res = adaptive_metropolis(toy.log_density, n_sites=4, n_params=3, n_chains=2, n_iter=230,
                              burn_in=0, init=init, adapt_start=40, adapt_every=adapt_every, seed=2,
                              progress=False, checkpoint=path)
    tensors, meta = load_checkpoint(path)
    assert meta["iteration"] == 230
    hist = torch.cat([init[:, :, None], res.samples], 2).reshape(8, 231, 3).numpy()
    for b in range(8):
        np.testing.assert_allclose(tensors["mean"][b].numpy(), hist[b].mean(0), rtol=1e-12)
        np.testing.assert_allclose(tensors["m2"][b].numpy() / 230, np.cov(hist[b].T),
                                   rtol=1e-9, atol=1e-15)
    # post-burn-in running moments equal the stored draws' moments
    np.testing.assert_allclose(res.extras["chain_mean"][1].numpy(),
                               res.samples.mean(2).numpy(), rtol=1e-12)


def test_am_respects_bounds_near_edge():
    """A posterior piled against theta = 0: proposals outside are rejected, never evaluated."""
    S, P = 20, 1
    y = torch.full((S, P), 0.01, dtype=F64)

    def log_density(theta):
        assert bool(((theta > 0) & (theta < 1)).all())
        k = theta.shape[0] // S
        return (-0.5 * ((theta.view(S, k, P) - y[:, None]) / 0.05) ** 2).sum(-1).reshape(-1)

    a = (0 - 0.01) / 0.05
    true_mean = stats.truncnorm.mean(a, np.inf, loc=0.01, scale=0.05)
    for transform in ("box", "logit"):
        res = adaptive_metropolis(log_density, n_sites=S, n_params=P, n_iter=4000,
                                  adapt_start=200, seed=3, transform=transform, progress=False)
        se = res.sd[:, 0].numpy() / np.sqrt(res.ess[:, 0].numpy())
        err = (res.mean[:, 0].numpy() - true_mean) / se
        assert np.all(np.abs(err) < 5), (transform, np.abs(err).max())
        assert float(res.samples.min()) > 0


def test_am_rejects_nan_region():
    S, P = 10, 2

    def log_density(theta):
        k = theta.shape[0] // S
        lp = (-0.5 * ((theta.view(S, k, P) - 0.5) / 0.1) ** 2).sum(-1).reshape(-1)
        return torch.where(theta[:, 0] > 0.6, torch.full_like(lp, math.nan), lp)

    res = adaptive_metropolis(log_density, n_sites=S, n_params=P, n_iter=1500, progress=False,
                              init=torch.full((S, 3, P), 0.4, dtype=F64))
    assert float(res.samples[..., 0].max()) <= 0.6


def test_am_deterministic_and_seed_dependent():
    toy = TruncatedGaussians(5, 2, seed=12)
    kw = dict(n_sites=5, n_params=2, n_iter=300, adapt_start=50, progress=False)
    a = adaptive_metropolis(toy.log_density, seed=7, **kw)
    b = adaptive_metropolis(toy.log_density, seed=7, **kw)
    c = adaptive_metropolis(toy.log_density, seed=8, **kw)
    assert torch.equal(a.samples, b.samples) and torch.equal(a.mean, b.mean)
    assert not torch.equal(a.samples, c.samples)


class Crash(RuntimeError):
    pass


def crashing(fn, after: int):
    calls = [0]

    def wrapped(theta):
        calls[0] += 1
        if calls[0] > after:
            raise Crash("simulated interruption")
        return fn(theta)

    return wrapped


@pytest.mark.parametrize("transform", ["box", "logit"])
def test_am_resume_is_bitwise_identical(tmp_path, transform):
    toy = TruncatedGaussians(6, 3, seed=13)
    kw = dict(n_sites=6, n_params=3, n_chains=3, n_iter=400, burn_in=100, thin=3,
              adapt_start=60, adapt_every=10, seed=5, transform=transform, progress=False)
    full = adaptive_metropolis(toy.log_density, **kw)
    path = tmp_path / "ck.safetensors"
    with pytest.raises(Crash):
        adaptive_metropolis(crashing(toy.log_density, 237), checkpoint=path,
                            checkpoint_every=50, **kw)
    _, meta = load_checkpoint(path)
    assert meta["iteration"] == 200  # the last checkpoint before the crash
    resumed = adaptive_metropolis(toy.log_density, checkpoint=path, checkpoint_every=50,
                                  resume=True, **kw)
    for name in ("samples", "mean", "sd", "best", "best_value", "acceptance", "n_accepted"):
        assert torch.equal(getattr(full, name), getattr(resumed, name)), name
    assert torch.equal(full.rhat.nan_to_num(), resumed.rhat.nan_to_num())
    # a checkpoint written with other settings is refused
    with pytest.raises(ValueError, match="different settings"):
        adaptive_metropolis(toy.log_density, checkpoint=path, resume=True,
                            **dict(kw, seed=6))


def test_am_storage_options():
    toy = TruncatedGaussians(3, 2, seed=14)
    kw = dict(n_sites=3, n_params=2, n_iter=1000, burn_in=200, progress=False)
    r = adaptive_metropolis(toy.log_density, max_draws=100, store_dtype=torch.float32, **kw)
    assert r.samples.shape == (3, 3, 100, 2) and r.samples.dtype == torch.float32
    assert r.settings["thin"] == 8
    assert not torch.isnan(r.samples).any()
    r2 = adaptive_metropolis(toy.log_density, store_draws=False, **kw)
    assert r2.samples is None and torch.isnan(r2.ess).all()
    assert torch.isfinite(r2.rhat).all() and float(r2.rhat.max()) < 1.2  # classic R-hat
    # running moments do not depend on how draws are stored
    torch.testing.assert_close(r.mean, r2.mean, rtol=0, atol=0)


def test_am_result_to_dataset_and_files(tmp_path, am_twin):
    toy, res = am_twin
    ds = res.to_dataset(param_names=["a", "b", "c"])
    assert ds["samples"].dims == ("site", "chain", "draw", "parameter")
    assert list(ds["parameter"].values) == ["a", "b", "c"]
    for name in ("mean", "sd", "best", "rhat", "ess"):
        assert ds[name].dims == ("site", "parameter")
    assert ds["acceptance"].dims == ("site", "chain")
    assert ds.attrs["method"] == "adaptive_metropolis" and ds.attrs["n_iter"] == 6000
    np.testing.assert_array_equal(ds["mean"].values, res.mean.numpy())
    small = SamplerResult(**{**res.__dict__, "samples": res.samples[:, :, :10]})
    small.to_netcdf(tmp_path / "am.nc")
    import xarray as xr

    back = xr.open_dataset(tmp_path / "am.nc")
    np.testing.assert_array_equal(back["rhat"].values, res.rhat.numpy())
    back.close()
    small.to_zarr(tmp_path / "am.zarr")
    assert xr.open_zarr(tmp_path / "am.zarr")["samples"].shape == (50, 3, 10, 3)


# ----------------------------------------------------------------------------- MAP


@pytest.mark.parametrize("method", ["lbfgs", "adam"])
def test_map_recovers_mode(method):
    toy = TruncatedGaussians(50, 3, seed=20)
    res = map_estimate(toy.loss, n_sites=50, n_params=3, method=method, n_starts=3,
                       progress=False, seed=1)
    assert isinstance(res, MapResult)
    assert res.theta_map.shape == (50, 3) and res.loss.shape == (50,)
    err = (res.theta_map - toy.y_t).abs().max()
    assert float(err) < 1e-4, float(err)
    assert bool(res.converged.all())
    assert int(res.n_steps.max()) < (200 if method == "lbfgs" else 2000)


def test_map_multistart_selects_global_mode():
    S = 8
    w = torch.tensor([0.3, 0.7], dtype=F64)
    mu = torch.tensor([0.2, 0.8], dtype=F64)

    def loss(theta):  # bimodal; the deeper mode at 0.8
        dens = (w * torch.exp(-0.5 * ((theta - mu) / 0.03) ** 2)).sum(-1)
        return -torch.log(dens + 1e-300)

    init = torch.tensor([0.15, 0.85], dtype=F64).repeat(S, 1)[..., None]  # [S, 2 starts, 1]
    for method in ("lbfgs", "adam"):
        res = map_estimate(loss, n_sites=S, n_params=1, n_starts=2, init=init, method=method,
                           progress=False)
        assert torch.allclose(res.start_theta[:, 0, 0], torch.full((S,), 0.2, dtype=F64), atol=1e-3)
        assert torch.allclose(res.theta_map[:, 0], torch.full((S,), 0.8, dtype=F64), atol=1e-4)
        assert bool((res.best_start == 1).all())


def test_map_handles_nonfinite_region_and_to_dataset():
    S = 5
    target = torch.linspace(0.5, 0.85, S, dtype=F64)

    def loss(theta):
        val = (theta[:, 0] - target.repeat_interleave(theta.shape[0] // S)) ** 2 / 0.01
        return torch.where(theta[:, 0] > 0.9, torch.full_like(val, math.nan), val)

    res = map_estimate(loss, n_sites=S, n_params=1, method="adam", lr=0.5, progress=False)
    assert float((res.theta_map[:, 0] - target).abs().max()) < 1e-4
    ds = res.to_dataset(param_names=["k"])
    assert ds["map"].dims == ("site", "parameter") and ds["start_loss"].dims == ("site", "start")
    assert ds.attrs["method"] == "map_adam"


def test_map_rejects_non_differentiable_loss():
    with pytest.raises(ValueError, match="differentiable"):
        map_estimate(lambda th: torch.ones(th.shape[0]), n_sites=2, n_params=1, progress=False)


# ----------------------------------------------------------------------------- batch mode


def test_batch_mode_map_and_am():
    S, P = 6, 2
    y = torch.rand(S, P, generator=torch.Generator().manual_seed(4), dtype=F64) * 0.4 + 0.3
    sd = 0.1

    def loss(theta):
        k = theta.shape[0] // S
        return (0.5 * ((theta.view(S, k, P) - y[:, None]) / sd) ** 2).sum(-1).reshape(-1)

    fit = batch_mode(loss, n_sites=S, n_params=P, method="map", optimizer="lbfgs",
                     progress=False)
    assert fit.theta_map.shape == (1, P) and fit.settings["batch_mode"]
    torch.testing.assert_close(fit.theta_map[0], y.mean(0), atol=1e-6, rtol=0)
    res = batch_mode(lambda th: -loss(th), n_sites=S, n_params=P, method="am", n_iter=6000,
                     adapt_start=300, progress=False)
    assert res.mean.shape == (1, P)
    se = (sd / math.sqrt(S)) / res.ess[0].sqrt()
    assert bool(((res.mean[0] - y.mean(0)).abs() < 5 * se).all())
    assert bool(((res.sd[0] / (sd / math.sqrt(S)) - 1).abs() < 0.15).all())


# ----------------------------------------------------------------------------- reference


def test_annealed_acceptance_probability_values():
    d = torch.tensor([1.0, 0.5, 2.0, 0.0, -3.0, math.nan], dtype=F64)
    n = torch.tensor([1, 7, 2, 100, 5, 1])
    p = annealed_acceptance_probability(d, n)
    expected = [1 / 3, 1 / 3, 1 / 16, 1.0, 1.0, 1.0]
    torch.testing.assert_close(p, torch.tensor(expected, dtype=F64))
    p = annealed_acceptance_probability(d, n, annealing=False)
    torch.testing.assert_close(p[:3], torch.exp(-d[:3]))


class Trace:
    """Callback collecting the per-iteration info of the reference sampler."""

    def __init__(self):
        self.items: list[dict] = []

    def __call__(self, info: dict) -> None:
        self.items.append(info)


def test_reference_annealing_rule_in_sampler():
    """J = 0 at theta0, d elsewhere: at n = 1 the acceptance rate is 3**-d."""
    S, d = 4000, 1.0

    def cost(theta):
        return torch.where((theta == 0.5).all(-1), 0.0, d).to(F64)

    tr = Trace()
    reference_sampler(cost, n_sites=S, n_params=1, nsimu1=3, nsimu2=3, adapt_start=1,
                      min_accept=0, max_chain_restarts=1, rate_bounds=(0.0, 1.0),
                      progress=False, callback=tr, seed=3)
    for info in tr.items:
        ran = info["ran"]
        p = info["probability"][ran]
        expected = annealed_acceptance_probability(info["delta"][ran], info["n"][ran])
        torch.testing.assert_close(p, expected)
        assert not bool((info["accepted"] & ~ran).any())
    first = tr.items[0]
    assert bool((first["n"] == 1).all()) and bool((first["delta"] == d).all())
    rate = first["accepted"].double().mean().item()
    assert abs(rate - 3.0**-d) < 4 * math.sqrt(3.0**-d * (1 - 3.0**-d) / S)


def test_reference_penalty_for_singular_cost():
    S, P = 30, 2

    def cost(theta):
        j = ((theta - 0.5) ** 2).sum(-1)
        return torch.where(theta[:, 0] > 0.55, torch.full_like(j, math.inf), j)

    for stale in (False, True):
        tr = Trace()
        res = reference_sampler(cost, n_sites=S, n_params=P, nsimu1=60, nsimu2=60,
                                adapt_start=20, min_accept=0, rate_bounds=(0.0, 1.0),
                                stale_penalty_delta=stale, progress=False, callback=tr)
        seen = 0
        prev_delta = torch.zeros(S, dtype=F64)
        for info in tr.items:
            sing = info["singular"]
            seen += int(sing.sum())
            torch.testing.assert_close(info["J_new"][sing], info["J_old"][sing] + 100.0)
            # a chain (re)start from theta0 clears the remembered delta
            fresh = (info["phase"] == 1) & (info["n"] == 1)
            prev_delta = torch.where(fresh, 0.0, prev_delta)
            if stale:  # cen v2 bug #20: the previous iteration's delta is reused
                torch.testing.assert_close(info["delta"][sing], prev_delta[sing])
            else:  # v22: delta = penalty, so a singular proposal is never accepted
                d = info["delta"][sing]
                torch.testing.assert_close(d, torch.full_like(d, 100.0))
                assert not bool(info["accepted"][sing].any())
            prev_delta = torch.where(info["ran"] & ~sing, info["delta"], prev_delta)
        assert seen > 100
        if not stale:
            assert float(res.samples[..., 0].nan_to_num(0).max()) <= 0.55


def test_reference_low_acceptance_restarts():
    """Few acceptances at the check: a grows by 1.1 twice, then the chain resets and
    is_second_time stops all further checks, also for the later chains."""
    S = 3

    def cost(theta):  # steep in theta_0, flat in theta_1: ~3 % acceptance
        return 1e5 * (theta[:, 0] - 0.5) ** 2

    tr = Trace()
    res = reference_sampler(cost, n_sites=S, n_params=2, nsimu1=200, nsimu2=50,
                            restart_check_at=199, min_accept=20, adapt_start=20,
                            rate_bounds=(0.0, 1.0), progress=False, callback=tr, seed=1)
    for s in range(S):
        events = [(info["chain"][s].item(), info["a"][s].item(),
                   info["events"]["low_acceptance"][s].item(),
                   info["events"]["low_acceptance_reset"][s].item(),
                   info["n"][s].item())
                  for info in tr.items if info["events"]["low_acceptance"][s]]
        assert len(events) == 3, events
        assert all(e[4] == 199 and e[0] == 0 for e in events)
        # a at the check (before the update): 5, 5.5, 6.05; the third event resets
        assert [round(e[1], 10) for e in events] == [5.0, 5.5, 6.05]
        assert [e[3] for e in events] == [False, False, True]
    after = [info for info in tr.items if info["events"]["low_acceptance"].any()][-1]
    i = tr.items.index(after)
    assert torch.allclose(tr.items[i + 1]["a"], torch.full((S,), 5.0, dtype=F64))
    assert bool(res.extras["is_second_time"][1].all())
    assert res.extras["n_low_accept_restarts"][1].tolist() == [3] * S
    assert not bool(res.extras["error"][1].any())
    # stage-1 steps are uniform in +-0.5/a around the current state
    for info in tr.items:
        m = info["ran"] & (info["phase"] == 1) & info["valid"]
        step = (info["proposal"][m] - info["theta_old"][m]).abs()
        assert bool((step <= 0.5 / info["a"][m][:, None]).all())
        assert bool(((info["proposal"][m] > 0) & (info["proposal"][m] < 1)).all())


def test_reference_rate_control_high_then_error():
    """A flat cost accepts everything: a_r = 1 > 0.5 -> s doubles and the chain restarts;
    the sixth such restart marks the site failed."""
    S = 2
    tr = Trace()
    res = reference_sampler(lambda th: torch.zeros(th.shape[0], dtype=F64), n_sites=S,
                            n_params=2, nsimu1=15, nsimu2=25, adapt_start=10,
                            min_accept=5, progress=False, callback=tr)
    highs = [(info["s"][0].item(), info["n"][0].item()) for info in tr.items
             if info["events"]["rate_high"][0]]
    assert len(highs) == 6
    assert all(n == 24 for _, n in highs)
    assert [round(s, 10) for s, _ in highs] == [round(2.4 * 2**i, 10) for i in range(6)]
    assert bool(res.extras["error"][1].all())
    assert torch.isnan(res.mean).all() and torch.isnan(res.acceptance).all()
    assert res.extras["n_rate_restarts"][1].tolist() == [6, 6]
    # after a rate restart the chain is back at theta0 in stage 1 with J0
    i = [k for k, info in enumerate(tr.items) if info["events"]["rate_high"][0]][0]
    nxt = tr.items[i + 1]
    assert nxt["phase"][0] == 1 and nxt["n"][0] == 1
    assert torch.equal(nxt["theta_old"][0], torch.full((2,), 0.5, dtype=F64))
    assert float(nxt["J_old"][0]) == 0.0 and float(nxt["a"][0]) == 5.0
    assert float(nxt["s"][0]) == pytest.approx(4.8)


def test_reference_rate_control_low():
    """Huge stage-2 proposals (s0 = 400) into a cost that is singular outside a small
    region: a_r < 0.1 -> s <- 0.7 s and the chain restarts from theta0."""
    S = 3

    def cost(theta):
        j = torch.zeros(theta.shape[0], dtype=F64)
        return torch.where(((theta - 0.5).abs() > 0.1).any(-1), math.nan, j)

    tr = Trace()
    res = reference_sampler(cost, n_sites=S, n_params=2, nsimu1=40, nsimu2=60,
                            adapt_start=1000, min_accept=0, s0=400.0, max_rate_restarts=1,
                            progress=False, callback=tr)
    lows = [info for info in tr.items if info["events"]["rate_low"].any()]
    assert lows
    first = lows[0]
    rows = first["events"]["rate_low"]
    assert bool((first["acceptance_ratio"][rows] < 0.1).all())
    assert bool((first["n"][rows] == 59).all())
    nxt = tr.items[tr.items.index(first) + 1]
    torch.testing.assert_close(nxt["s"][rows], 0.7 * first["s"][rows])
    assert bool((nxt["phase"][rows] == 1).all()) and bool((nxt["n"][rows] == 1).all())
    assert torch.equal(nxt["J_old"][rows], torch.zeros(int(rows.sum()), dtype=F64))
    # max_rate_restarts=1: the second out-of-band check fails the site
    assert bool(res.extras["error"][1].all())
    assert res.extras["n_rate_restarts"][1].tolist() == [2] * S


def test_reference_zero_covariance_proposes_current_state():
    """Like MATLAB's mvnrnd/cholcov, a zero stage-2 covariance (a chain that never moved)
    proposes the current state instead of failing."""
    tr = Trace()
    reference_sampler(lambda th: 1e6 * ((th - 0.5) ** 2).sum(-1), n_sites=2, n_params=2,
                      nsimu1=20, nsimu2=10, adapt_start=100, min_accept=0,
                      rate_bounds=(0.0, 1.0), progress=False, callback=tr, seed=2)
    st2 = [i for i in tr.items if (i["phase"] == 2).any()]
    assert st2
    for info in st2:
        m = info["phase"] == 2
        if bool((info["theta"][m] == 0.5).all()):
            assert torch.equal(info["proposal"][m], info["theta"][m])
    assert not any(i["events"]["chol_fail"].any() for i in tr.items)


@pytest.mark.parametrize("reset", [True, False])
def test_reference_stage2_starts_from_last_state_with_J0(reset):
    S, P = 10, 2
    c = torch.tensor([0.3, 0.7], dtype=F64)

    def cost(theta):
        return (((theta - c) / 0.1) ** 2).sum(-1)

    j0 = float(cost(torch.full((1, P), 0.5, dtype=F64)))
    tr = Trace()
    reference_sampler(cost, n_sites=S, n_params=P, nsimu1=80, nsimu2=30, adapt_start=10,
                      min_accept=0, rate_bounds=(0.0, 1.0), reset_cost_at_stage2=reset,
                      progress=False, callback=tr)
    checked = 0
    for k, info in enumerate(tr.items):
        start = info["events"]["stage2_start"]
        if not start.any():
            continue
        nxt = tr.items[k + 1]
        assert bool((nxt["phase"][start] == 2).all() and (nxt["n"][start] == 1).all())
        # the stage-2 chain starts at the last stage-1 state ...
        assert torch.equal(nxt["theta_old"][start], info["theta"][start])
        last_j = info["J"][start]
        expected = torch.full_like(last_j, j0) if reset else last_j
        torch.testing.assert_close(nxt["J_old"][start], expected)
        assert not torch.allclose(last_j, torch.full_like(last_j, j0))
        checked += int(start.sum())
    assert checked == S * 3


def _collect_accepted(tr: Trace, S: int, C: int, sequential: bool = True):
    """Accepted stage-2 samples and predictions per (site, chain) from the trace."""
    out = {(s, c): [] for s in range(S) for c in range(C)}
    for info in tr.items:
        rows = (info["accepted"] & (info["phase"] == 2)).nonzero().squeeze(1).tolist()
        for r in rows:
            s = r if sequential else r // C
            out[(s, int(info["chain"][r]))].append(
                (info["proposal"][r].clone(), info["J_new"][r].item()))
    return out


@pytest.mark.parametrize("chains", ["sequential", "parallel"])
def test_reference_summaries_on_toy_cost(chains, tmp_path):
    S, P, C = 4, 2, 3
    c = torch.tensor([[0.3, 0.6], [0.5, 0.5], [0.7, 0.4], [0.45, 0.55]], dtype=F64)
    obs = torch.tensor([[0.3, 0.6, 0.9, math.nan]] * S, dtype=F64)
    obs[:, :3] = torch.stack([c[:, 0], c[:, 1], c.sum(1)], 1)
    k = 1 if chains == "sequential" else C
    seen_rows = []

    def cost(theta):
        seen_rows.append(theta.shape[0])
        cc = c.repeat_interleave(theta.shape[0] // S, 0)
        j = 0.5 * (((theta - cc) / 0.08) ** 2).sum(-1)
        m = torch.stack([theta[:, 0], theta[:, 1], theta.sum(1), theta[:, 0] * 0], 1)
        return j, m

    tr = Trace()
    res = reference_sampler(cost, n_sites=S, n_params=P, n_chains=C, nsimu1=150, nsimu2=400,
                            adapt_start=100, min_accept=0, rate_bounds=(0.0, 1.0), obs=obs,
                            n_layers=torch.full((S,), 5.0), chains=chains, progress=False,
                            callback=tr, seed=4)
    assert set(seen_rows) == {S * k}
    assert not bool(res.extras["error"][1].any())
    acc = _collect_accepted(tr, S, C, sequential=chains == "sequential")
    N = torch.tensor([[len(acc[(s, ch)]) for ch in range(C)] for s in range(S)])
    assert torch.equal(res.n_accepted, N)
    burn = (N + 1) // 2  # MATLAB round(N/2)
    assert torch.equal(res.extras["burn_in"][1], burn)
    o = obs[:, :3]
    rmse = torch.zeros(S, C, dtype=F64)
    r2 = torch.zeros(S, C, dtype=F64)
    for s in range(S):
        for ch in range(C):
            th = torch.stack([t for t, _ in acc[(s, ch)]])
            n, b = int(N[s, ch]), int(burn[s, ch])
            post = th[b:]
            np.testing.assert_array_equal(res.samples[s, ch, : n - b].numpy(), post.numpy())
            assert bool(torch.isnan(res.samples[s, ch, n - b:]).all())
            trace = th[b - 1:]  # profile trace: round(N/2)..N (1-based), the off-by-one
            m = torch.stack([trace[:, 0], trace[:, 1], trace.sum(1)], 1).mean(0)
            rmse[s, ch] = torch.sqrt(((o[s] - m) ** 2).sum() / 5.0)
            r2[s, ch] = 1 - ((m - o[s]) ** 2).sum() / ((m - m.mean()) ** 2).sum()
    stat = res.extras["stat"][1]
    torch.testing.assert_close(stat[..., 1], rmse)
    torch.testing.assert_close(stat[..., 0], r2)
    opt = torch.argmin(rmse, 1)
    assert torch.equal(res.extras["optimal_chain"][1], opt)
    for s in range(S):
        post = torch.stack([t for t, _ in acc[(s, int(opt[s]))]])[int(burn[s, opt[s]]):]
        torch.testing.assert_close(res.mean[s], post.mean(0))
        torch.testing.assert_close(res.sd[s], post.std(0, unbiased=True))
        tr_ = torch.stack([t for t, _ in acc[(s, int(opt[s]))]])[int(burn[s, opt[s]]) - 1:]
        torch.testing.assert_close(res.extras["soc_mod_opt"][1][s, :3], torch.stack(
            [tr_[:, 0], tr_[:, 1], tr_.sum(1)], 1).mean(0))
    # Gelman-Rubin exactly as coded (N of the last chain)
    expected_gr = diag.reference_gelman_rubin(res.samples, (N - burn).double())
    torch.testing.assert_close(res.extras["gelman_rubin"][1], expected_gr)
    # the toy posterior: N(c, 0.08^2 / ln(n+2)-ish) -> means near c
    assert float((res.mean - c).abs().max()) < 0.05
    assert bool((res.rhat < 1.5).all())
    ds = res.to_dataset()
    assert ds["stat"].dims == ("site", "chain", "statistic")
    assert list(ds["statistic"].values) == ["r2", "rmse"]
    assert ds.attrs["method"] == "reference"
    res.to_netcdf(tmp_path / "ref.nc")
    import xarray as xr

    with xr.open_dataset(tmp_path / "ref.nc") as back:
        gr = res.extras["gelman_rubin"][1].numpy()
        np.testing.assert_array_equal(back["gelman_rubin"].values, gr)
        assert back.attrs["chains"] == chains


def test_reference_resume_is_bitwise_identical(tmp_path):
    S, P = 5, 2
    c = torch.linspace(0.3, 0.7, S, dtype=F64)[:, None].repeat(1, P)

    def cost(theta):
        return 0.5 * (((theta - c) / 0.1) ** 2).sum(-1)

    kw = dict(n_sites=S, n_params=P, nsimu1=60, nsimu2=100, adapt_start=30, min_accept=3,
              seed=9, progress=False)
    full = reference_sampler(cost, **kw)
    path = tmp_path / "ref.safetensors"
    with pytest.raises(Crash):
        reference_sampler(crashing(cost, 301), checkpoint=path, checkpoint_every=40, **kw)
    _, meta = load_checkpoint(path)
    assert meta["iteration"] == 280
    resumed = reference_sampler(cost, checkpoint=path, checkpoint_every=40, resume=True, **kw)
    for name in ("samples", "mean", "sd", "best", "n_accepted"):
        a, b = getattr(full, name), getattr(resumed, name)
        assert torch.equal(a.nan_to_num(-1), b.nan_to_num(-1)), name
    for name, (_, v) in full.extras.items():
        assert torch.equal(v.nan_to_num(-1), resumed.extras[name][1].nan_to_num(-1)), name


def test_reference_nonfinite_J0_marks_site_failed():
    S = 3

    def cost(theta):
        j = ((theta - 0.4) ** 2).sum(-1)
        bad = torch.zeros(theta.shape[0], dtype=torch.bool)
        bad[1] = True  # site 1 singular everywhere
        return torch.where(bad, torch.full_like(j, math.nan), j)

    res = reference_sampler(cost, n_sites=S, n_params=2, nsimu1=30, nsimu2=40, adapt_start=10,
                            min_accept=0, rate_bounds=(0.0, 1.0), progress=False)
    assert res.extras["error"][1].tolist() == [False, True, False]
    assert torch.isnan(res.mean[1]).all() and torch.isfinite(res.mean[[0, 2]]).all()


@pytest.mark.slow
def test_reference_gev_mode():
    S = 2

    def cost(theta):
        return 0.5 * (((theta - 0.4) / 0.1) ** 2).sum(-1)

    res = reference_sampler(cost, n_sites=S, n_params=2, nsimu1=100, nsimu2=600,
                            adapt_start=50, min_accept=0, rate_bounds=(0.0, 1.0),
                            gev_mode=True, progress=False)
    pe = res.extras["para_es"][1]
    assert pe.shape == (S, 2) and torch.isfinite(pe).all()
    assert float((pe - res.mean).abs().max()) < 0.1
