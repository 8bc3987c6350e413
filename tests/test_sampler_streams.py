"""A site's chains depend on the seed and its id only (adaptive Metropolis, reference sampler).

The samplers draw from per-site random streams (:mod:`xproda.sites.assimilation.streams`), so
a site's result is bit for bit the same whether it runs alone, in another batch, in another
order or in any split of the sites into shards (issue 19) -- given a target whose value for a
row depends on that row only, as the analytic toys here and :class:`SiteProblem` are.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import xproda
from xproda.sites.assimilation import streams
from xproda.sites.assimilation.checkpoint import load_checkpoint
from xproda.sites.assimilation.samplers import adaptive_metropolis, reference_sampler

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_torch_thread")


class Toy:
    """Per-site truncated Gaussian posteriors, looked up by site id (any subset, any order).

    Some sites sit near the box's edge (proposals outside are redrawn or rejected), some have
    a region of invalid points (AM start redraws; singular costs of the reference sampler).
    """

    def __init__(self, n_sites: int = 10, n_params: int = 2, seed: int = 0):
        rng = np.random.default_rng(seed)
        self.ids = [f"site-{i}" for i in range(n_sites)]
        self.P = n_params
        y = rng.uniform(0.2, 0.8, (n_sites, n_params))
        y[::3, 0] = 0.03  # near the edge
        self.y = torch.tensor(y)
        self.sd = torch.tensor(rng.uniform(0.03, 0.1, (n_sites, n_params)))
        self.hole = torch.tensor(np.arange(n_sites) % 4 == 1)  # theta_0 > 0.6 invalid

    def _rows(self, ids):
        idx = torch.tensor([self.ids.index(i) for i in ids])
        return self.y[idx], self.sd[idx], self.hole[idx]

    def log_density(self, ids):
        y, sd, hole = self._rows(ids)
        S = len(ids)

        def fn(theta):
            k = theta.shape[0] // S
            th = theta.view(S, k, self.P)
            r = (th - y[:, None]) / sd[:, None]
            lp = (-0.5 * r * r).sum(-1)
            lp = torch.where(hole[:, None] & (th[..., 0] > 0.6), -math.inf, lp)
            return lp.reshape(-1)

        return fn

    def cost(self, ids, predict: bool = False):
        lp = self.log_density(ids)

        def fn(theta):
            c = -lp(theta)
            c = torch.where(torch.isfinite(c), c, math.nan)  # "singular" solves
            if not predict:
                return c
            return c, theta[:, :1] * torch.tensor([1.0, 2.0, 3.0], dtype=F64)

        return fn


TOY = Toy()
AM_KW = dict(n_params=2, n_chains=3, n_iter=83, burn_in=20, adapt_start=30, adapt_every=7,
             seed=11, progress=False)
REF_KW = dict(n_params=2, n_chains=2, nsimu1=30, nsimu2=40, adapt_start=10, min_accept=5,
              restart_check_at=20, rate_check_at=35, max_redraws=50, seed=11, progress=False)


def run_am(ids, **kw):
    kw = {**AM_KW, **kw}
    return adaptive_metropolis(TOY.log_density(ids), n_sites=len(ids), site_ids=ids, **kw)


def run_ref(ids, predict=False, **kw):
    kw = {**REF_KW, **kw}
    obs = None
    if predict:
        idx = [TOY.ids.index(i) for i in ids]
        obs = (TOY.y[idx, :1] * torch.tensor([1.0, 2.0, 3.0], dtype=F64)).numpy()
    return reference_sampler(TOY.cost(ids, predict), n_sites=len(ids), site_ids=ids,
                             obs=obs, **kw)


def _same(a: torch.Tensor, b: torch.Tensor, what: str) -> None:
    a, b = a.detach().cpu(), b.detach().cpu()
    assert a.shape == b.shape and a.dtype == b.dtype, (what, a.shape, b.shape)
    if a.is_floating_point():
        same = torch.equal(torch.isnan(a), torch.isnan(b)) and torch.equal(
            a.nan_to_num(0.0), b.nan_to_num(0.0))
    else:
        same = torch.equal(a, b)
    assert same, f"{what} differs"


def _pad(x: torch.Tensor, width: int) -> torch.Tensor:
    """Reference samples [S, C, W, P]: NaN padding to ``width`` draws."""
    if x.shape[2] == width:
        return x
    pad = torch.full((*x.shape[:2], width - x.shape[2], *x.shape[3:]), math.nan, dtype=x.dtype)
    return torch.cat([x, pad], 2)


def assert_sites_equal(part, whole, rows) -> None:
    """``part``'s sites equal ``whole``'s sites ``rows`` bit for bit (every per-site output)."""
    rows = torch.as_tensor(rows)
    for name in ("mean", "sd", "best", "best_value", "rhat", "ess", "acceptance", "n_accepted"):
        _same(getattr(part, name), getattr(whole, name)[rows], name)
    if whole.samples is not None:
        a, b = part.samples, whole.samples[rows]
        w = max(a.shape[2], b.shape[2])  # the reference sampler pads to the batch's longest
        _same(_pad(a, w), _pad(b, w), "samples")
    assert part.extras.keys() == whole.extras.keys()
    for name, (dims, v) in whole.extras.items():
        assert dims[0] == "site"
        _same(part.extras[name][1], v[rows], name)


# --------------------------------------------------------------------------- AM


@pytest.fixture(scope="module", params=["box", "logit"])
def am_whole(request):
    return request.param, run_am(TOY.ids, transform=request.param)


def test_am_site_alone_other_batch_other_order(am_whole):
    transform, whole = am_whole
    assert torch.isfinite(whole.mean).all()
    assert (whole.acceptance > 0).all()
    # alone
    for i in (0, 1, 5):
        assert_sites_equal(run_am([TOY.ids[i]], transform=transform), whole, [i])
    # another order
    perm = [7, 2, 9, 0, 4, 1, 8, 3, 6, 5]
    assert_sites_equal(run_am([TOY.ids[i] for i in perm], transform=transform), whole, perm)
    # another batch: other sites around it
    other = Toy(4, seed=5)
    TOY_EXT = Toy(10)
    TOY_EXT.ids = TOY.ids + [f"other-{i}" for i in range(4)]
    TOY_EXT.y = torch.cat([TOY.y, other.y])
    TOY_EXT.sd = torch.cat([TOY.sd, other.sd])
    TOY_EXT.hole = torch.cat([TOY.hole, other.hole])
    ids = ["other-0", TOY.ids[3], "other-2", "other-3", TOY.ids[6]]
    res = adaptive_metropolis(TOY_EXT.log_density(ids), n_sites=len(ids), site_ids=ids,
                              transform=transform, **AM_KW)
    assert_sites_equal(SubResult(res, [1, 4]), whole, [3, 6])


class SubResult:
    """Sites ``rows`` of a SamplerResult (for comparisons)."""

    def __init__(self, res, rows):
        rows = torch.as_tensor(rows)
        for name in ("mean", "sd", "best", "best_value", "rhat", "ess", "acceptance",
                     "n_accepted"):
            setattr(self, name, getattr(res, name)[rows])
        self.samples = None if res.samples is None else res.samples[rows]
        self.extras = {k: (d, v[rows]) for k, (d, v) in res.extras.items()}


def test_am_ids_key_the_streams():
    a = run_am(TOY.ids[:3])
    b = run_am(TOY.ids[:3], seed=12)
    assert not torch.equal(a.samples, b.samples)
    # other ids for the same data: other chains; no ids: the positions are the ids
    c = adaptive_metropolis(TOY.log_density(TOY.ids[:3]), n_sites=3,
                            site_ids=["x", "y", "z"], **AM_KW)
    assert not torch.equal(a.samples[0], c.samples[0])
    d = adaptive_metropolis(TOY.log_density(TOY.ids[:3]), n_sites=3, **AM_KW)
    e = adaptive_metropolis(TOY.log_density(TOY.ids[:3]), n_sites=3, site_ids=["#0", "#1", "#2"],
                            **AM_KW)
    _same(d.samples, e.samples, "samples")
    with pytest.raises(ValueError, match="unique"):
        adaptive_metropolis(TOY.log_density(TOY.ids[:3]), n_sites=3, site_ids=["a", "b", "a"],
                            **AM_KW)
    with pytest.raises(ValueError, match="2 ids for n_sites=3"):
        adaptive_metropolis(TOY.log_density(TOY.ids[:3]), n_sites=3, site_ids=["a", "b"],
                            **AM_KW)


def test_am_start_redraws_are_per_site():
    """Sites with an invalid region redraw their starts; the redraws of one site do not
    shift the random numbers of another (the old single stream did)."""
    ids = [TOY.ids[i] for i in (1, 5, 9)]  # all with the hole
    res = run_am(ids, n_iter=10, burn_in=0)
    assert torch.isfinite(res.best_value).all()
    for j, i in enumerate(ids):
        assert_sites_equal(run_am([i], n_iter=10, burn_in=0), res, [j])


def test_am_draws_do_not_depend_on_the_adaptation_blocks():
    """Before adaptation the proposal is fixed, so chains with other ``adapt_every`` blocks
    (and a last, shorter block) only agree if every iteration's draws are its own."""
    ids = TOY.ids[:4]
    kw = dict(n_iter=50, burn_in=10, adapt_start=1000)
    a = run_am(ids, adapt_every=7, **kw)
    b = run_am(ids, adapt_every=10, **kw)
    c = run_am(ids, adapt_every=1, **kw)
    for name in ("samples", "best", "best_value", "n_accepted"):  # the chains themselves
        _same(getattr(a, name), getattr(b, name), name)
        _same(getattr(a, name), getattr(c, name), name)
    # the running moments are merged block by block: equal to rounding
    torch.testing.assert_close(a.mean, c.mean, rtol=1e-13, atol=0)
    torch.testing.assert_close(a.sd, c.sd, rtol=1e-11, atol=0)


def _shards(draw, n):
    order = draw(st.permutations(list(range(n))))
    cuts = sorted(draw(st.sets(st.integers(1, n - 1), max_size=n - 1)))
    bounds = [0, *cuts, n]
    return [order[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


@st.composite
def shardings(draw):
    n = draw(st.integers(6, 10))
    return n, _shards(draw, n)


@settings(max_examples=12, deadline=None)
@given(shardings(), st.sampled_from(["box", "logit"]))
def test_am_any_sharding_equals_the_whole_run(sharding, transform):
    n, shards = sharding
    ids = TOY.ids[:n]
    kw = dict(n_iter=45, burn_in=15, adapt_start=20, adapt_every=6, transform=transform)
    whole = run_am(ids, **kw)
    for rows in shards:
        assert_sites_equal(run_am([ids[i] for i in rows], **kw), whole, rows)


def test_am_resume_with_site_ids_equals_uninterrupted(tmp_path):
    ids = [TOY.ids[i] for i in (4, 0, 7, 2)]
    kw = dict(n_iter=120, burn_in=30, adapt_start=20, adapt_every=10, transform="logit")
    whole = run_am(ids, **kw)
    path = tmp_path / "am.safetensors"
    fn, calls = TOY.log_density(ids), [0]

    def crashing(theta):
        calls[0] += 1
        if calls[0] > 75:
            raise KeyboardInterrupt
        return fn(theta)

    with pytest.raises(KeyboardInterrupt):
        adaptive_metropolis(crashing, n_sites=4, site_ids=ids, checkpoint=path,
                            checkpoint_every=20, **{**AM_KW, **kw})
    tensors, meta = load_checkpoint(path)
    assert meta["iteration"] == 60 and "rng_state" not in tensors
    resumed = adaptive_metropolis(fn, n_sites=4, site_ids=ids, checkpoint=path,
                                  checkpoint_every=20, resume=True, **{**AM_KW, **kw})
    assert_sites_equal(resumed, whole, range(4))
    # other ids: other random numbers, so the checkpoint does not apply
    with pytest.raises(ValueError, match="site_ids_sha1"):
        adaptive_metropolis(fn, n_sites=4, site_ids=ids[::-1], checkpoint=path, resume=True,
                            **{**AM_KW, **kw})


# --------------------------------------------------------------------------- reference


@pytest.fixture(scope="module", params=["sequential", "parallel"])
def ref_whole(request):
    return request.param, run_ref(TOY.ids, predict=True, chains=request.param)


def test_reference_site_alone_and_other_order(ref_whole):
    chains, whole = ref_whole
    assert (whole.n_accepted > 0).all()
    ex = whole.extras
    # the toy exercises the state machine: redraws, restarts and singular costs happen
    assert int(ex["n_low_accept_restarts"][1].sum()) + int(ex["n_rate_restarts"][1].sum()) > 0
    for i in (0, 1, 6):
        assert_sites_equal(run_ref([TOY.ids[i]], predict=True, chains=chains), whole, [i])
    perm = [3, 8, 1, 0, 9, 5, 7, 2, 6, 4]
    assert_sites_equal(run_ref([TOY.ids[i] for i in perm], predict=True, chains=chains),
                       whole, perm)


@settings(max_examples=10, deadline=None)
@given(shardings(), st.sampled_from(["sequential", "parallel"]))
def test_reference_any_sharding_equals_the_whole_run(sharding, chains):
    n, shards = sharding
    ids = TOY.ids[:n]
    kw = dict(nsimu1=15, nsimu2=20, restart_check_at=10, rate_check_at=18, adapt_start=5,
              chains=chains)
    whole = run_ref(ids, **kw)
    for rows in shards:
        assert_sites_equal(run_ref([ids[i] for i in rows], **kw), whole, rows)


def test_reference_resume_with_site_ids_equals_uninterrupted(tmp_path):
    ids = [TOY.ids[i] for i in (2, 9, 4)]
    whole = run_ref(ids, predict=True)
    path = tmp_path / "ref.safetensors"
    fn, calls = TOY.cost(ids, True), [0]

    def crashing(theta):
        calls[0] += 1
        if calls[0] > 95:
            raise KeyboardInterrupt
        return fn(theta)

    obs = (TOY.y[[2, 9, 4], :1] * torch.tensor([1.0, 2.0, 3.0], dtype=F64)).numpy()
    kw = dict(REF_KW, n_sites=3, site_ids=ids, obs=obs, checkpoint=path, checkpoint_every=30)
    with pytest.raises(KeyboardInterrupt):
        reference_sampler(crashing, **kw)
    tensors, meta = load_checkpoint(path)
    assert meta["iteration"] == 90 and "rng_state" not in tensors
    resumed = reference_sampler(fn, resume=True, **kw)
    assert_sites_equal(resumed, whole, range(3))


# --------------------------------------------------------------------------- wide problems


def test_many_parameters_site_alone_equals_batch():
    """17 parameters, 60 sites: sizes at which torch's batched matrix products (MKL) and
    reductions round differently for different batch sizes; the samplers use
    batch-independent arithmetic (matmul_bt, ordered_sum, per-matrix eigh)."""
    wide = Toy(60, n_params=17, seed=3)
    ids = wide.ids
    am_kw = dict(AM_KW, n_params=17, n_iter=50, burn_in=10, adapt_start=20, adapt_every=10)
    ref_kw = dict(REF_KW, n_params=17, nsimu1=15, nsimu2=20, restart_check_at=10,
                  rate_check_at=18, adapt_start=5)
    whole_am = adaptive_metropolis(wide.log_density(ids), n_sites=60, site_ids=ids, **am_kw)
    whole_ref = reference_sampler(wide.cost(ids), n_sites=60, site_ids=ids, **ref_kw)
    for rows in ([7], [59, 3, 30], list(range(10, 33))):
        sub = [ids[i] for i in rows]
        am = adaptive_metropolis(wide.log_density(sub), n_sites=len(sub), site_ids=sub, **am_kw)
        ref = reference_sampler(wide.cost(sub), n_sites=len(sub), site_ids=sub, **ref_kw)
        for part, whole in ((am, whole_am), (ref, whole_ref)):
            # ESS: diagnostics._autocov's complex product (numpy's SIMD loop) rounds by
            # position in the batch; equal to rounding until that is made row-invariant
            torch.testing.assert_close(part.ess, whole.ess[rows], rtol=1e-12, atol=0,
                                       equal_nan=True)
            part.ess = whole.ess[rows]
            assert_sites_equal(part, whole, rows)


@pytest.mark.parametrize("fused", [True, False])
def test_batch_independent_primitives(fused):
    from xproda.sites.assimilation.samplers.common import matmul_bt, ordered_sum
    from xproda.sites.assimilation.samplers.reference import _cholcov

    g = torch.Generator().manual_seed(0)
    a = torch.randn(64, 20, 21, generator=g, dtype=F64)
    b = torch.randn(64, 19, 21, generator=g, dtype=F64)
    c = torch.randn(64, 15, 18, generator=g, dtype=F64)
    cov = c @ c.transpose(1, 2)
    cov[::3, 0, :] = 0.0
    cov[::3, :, 0] = 0.0  # semi-definite: the eigen-decomposition fallback
    cov[1::7] = -cov[1::7]  # not positive semi-definite
    x = torch.randn(64, 40, 5, generator=g, dtype=F64) * 1e3
    with xproda.set_options(fused_kernels=fused):
        ab = matmul_bt(a, b)
        torch.testing.assert_close(ab, torch.bmm(a, b.transpose(1, 2)), rtol=1e-12, atol=1e-12)
        fac, ok = _cholcov(cov.clone())
        semi = sorted(set(range(0, 64, 3)) - set(range(1, 64, 7)))
        assert ok[semi].all() and not ok[1::7].any()
        s0, s1 = ordered_sum(x, 1), ordered_sum(x, 0)
        for rows in ([5], [0, 63], list(range(7, 40)), list(range(0, 64, 3))):
            _same(matmul_bt(a[rows], b[rows]), ab[rows], "matmul_bt")
            f2, ok2 = _cholcov(cov[rows].clone())
            _same(f2, fac[rows], "cholcov")
            assert torch.equal(ok2, ok[rows])
            _same(ordered_sum(x[rows], 1), s0[rows], "ordered_sum")
            cols = [r for r in rows if r < 40]
            _same(ordered_sum(x[:, cols], 0), s1[cols], "ordered_sum")
    # both paths of matmul_bt give the same bits
    with xproda.set_options(fused_kernels=not fused):
        _same(matmul_bt(a, b), ab, "matmul_bt, other path")


# --------------------------------------------------------------------------- through the model


def _twin_profiles(n_sites: int):
    from xproda.models.interp import ModelToObs
    from xproda.testing import random_forcing

    top, bottom = np.array([0.0, 0.1, 0.3, 0.6]), np.array([0.1, 0.3, 0.6, 1.0])
    rng = np.random.default_rng(4)
    f = random_forcing(n_sites, 4, regime="bio")
    f["nbedrock"][:] = 20
    m = xproda.get_model("clm5")
    truth = np.full((n_sites, len(m.parameters)), 0.5)
    for p in ("efolding", "tau4s2"):
        truth[:, m.parameters.index(p)] = rng.uniform(0.3, 0.7, n_sites)
    soc = m.steady_state(truth, f)["soc"]
    depth = np.broadcast_to((top + bottom) / 2, (n_sites, top.size))
    obs = ModelToObs(torch.tensor(depth))(torch.tensor(soc)).numpy()
    obs = obs * np.exp(0.05 * rng.standard_normal(obs.shape)) * 0.05  # plausible densities
    rows = [{"profile_id": f"p{s:02d}", "lat": 10.0, "lon": float(s), "top": top[i],
             "bottom": bottom[i], "soc": obs[s, i]}
            for s in range(n_sites) for i in range(top.size)]
    return f, truth, pd.DataFrame(rows)


@pytest.mark.parametrize("method", ["am", "reference"])
def test_assimilate_site_results_do_not_depend_on_the_other_sites(method):
    """SiteProblem twin: a subset of the profiles, in another order, gives the same
    per-site results as the whole set (``assimilate`` passes the profile ids)."""
    from xproda.sites.assimilation.problem import assimilate

    n = 5
    f, truth, df = _twin_profiles(n)
    kw = dict(method=method, free=["efolding", "tau4s2"], likelihood="gaussian",
              sigma_rel=0.05, log_space=True, fixed=truth, seed=2, progress=False)
    if method == "am":
        kw.update(n_chains=2, n_iter=40, sampler_options=dict(adapt_start=10, adapt_every=5))
    else:
        kw.update(sampler_options=dict(n_chains=2, nsimu1=10, nsimu2=12, adapt_start=4,
                                       restart_check_at=8, rate_check_at=11))
    whole = assimilate(df, f, **kw)
    pick = [3, 0]
    sub_df = pd.concat([df[df.profile_id == f"p{s:02d}"] for s in pick])
    sub_f = {k: (v[pick] if isinstance(v, np.ndarray) and v.ndim and v.shape[0] == n else v)
             for k, v in f.items()}
    part = assimilate(sub_df, sub_f, **{**kw, "fixed": truth[pick]})
    assert list(part["site"].values) == ["p03", "p00"]
    ref = whole.sel(site=["p03", "p00"])
    compared = []
    for name, v in part.data_vars.items():
        if "site" not in v.dims:
            continue
        a, b = v.values, ref[name].values
        if "draw" in v.dims and method == "reference":  # NaN padding to the batch's longest
            n = min(a.shape[v.dims.index("draw")], b.shape[v.dims.index("draw")])
            a, b = v.isel(draw=slice(0, n)).values, ref[name].isel(draw=slice(0, n)).values
            assert np.isnan(v.isel(draw=slice(n, None)).values).all()
            assert np.isnan(ref[name].isel(draw=slice(n, None)).values).all()
        np.testing.assert_array_equal(a, b, err_msg=name)
        compared.append(name)
    assert {"mean", "sd", "samples", "acceptance"} <= set(compared), compared
    assert np.isfinite(part["mean"].values).all()


# --------------------------------------------------------------------------- the streams' fast path


@pytest.mark.parametrize("fused", [True, False])
def test_stream_fast_paths_equal_the_formula(fused):
    """The compiled (numba) and blocked torch paths of streams.uniform/normal give the bits
    of the plain formula: SplitMix64 of key, counter and position; Box-Muller."""
    keys = streams.derive(streams.site_keys([f"s{i}" for i in range(3000)], seed=3), "x", 1)
    ctr = torch.arange(3000) * 5 + 2
    with xproda.set_options(fused_kernels=fused):
        u = streams.uniform(keys, ctr, 6)
        u7 = streams.uniform(keys, ctr, 7)
        z = streams.normal(keys, ctr, 5)
        z1 = streams.normal(keys[:1], ctr[:1], 5)
    k = streams.mix(keys ^ streams.mix(ctr))
    pos = torch.arange(1, 7, dtype=torch.int64) * streams._GOLDEN
    bits = streams.mix(k[:, None] + pos)
    uu = (((bits >> 11) & ((1 << 53) - 1)).to(F64) + 0.5) * 2.0**-53
    _same(u, uu, "uniform")
    _same(u7[:, :6], uu, "uniform, 7 per row")  # a position's value is its own
    r = torch.sqrt(-2.0 * torch.log(uu[:, :3]))
    t = (2.0 * math.pi) * uu[:, 3:]
    zz = torch.cat([r * torch.cos(t), r * torch.sin(t)], 1)[:, :5]
    _same(z, zz, "normal")
    _same(z1, zz[:1], "normal, one row")
