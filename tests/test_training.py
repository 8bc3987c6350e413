"""Training parameter networks (end to end and two-step), checkpoints/resume, CV."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import xproda
from xproda.learning import crossval
from xproda.datasets import synthetic_profiles, synthetic_world, truth_at_sites, truth_parameters
from xproda.learning.forward import SiteTensors
from xproda.learning.network import ParameterNet, ParameterNetEnsemble
from xproda.learning.training import (
    CV_METHODS,
    TrainingData,
    cross_validate,
    default_features,
    parameter_loss,
    prepare_training_data,
    soc_loss,
    train_network,
)

SMALL = dict(hidden=(32, 32), progress=False, mapping="layer_mean")


@pytest.fixture(scope="module")
def world():
    return synthetic_world(4.0, seed=0)


@pytest.fixture(scope="module")
def truth(world):
    return truth_parameters(world, kind="cue")


@pytest.fixture(scope="module")
def profiles(world, truth):
    return synthetic_profiles(world, n_sites=300, truth=truth, noise=0.1, seed=3)


@pytest.fixture(scope="module")
def data(world, profiles):
    return prepare_training_data(world, profiles)


# -------------------------------------------------------------------------------------
# data preparation
# -------------------------------------------------------------------------------------
def test_default_features_are_covariates_only(world):
    feats = default_features(world)
    assert len(feats) >= 20
    for name in ("TSOI", "CWD_INPUT", "nbedrock", "landfrac", "lat_bnds", "tas"):
        assert name not in feats
    assert all(set(world[f].dims) == {"lat", "lon"} for f in feats)


def test_prepare_samples_sites_and_scales_on_grid(world, profiles, data):
    assert isinstance(data, TrainingData) and len(data) == profiles.profile_id.nunique()
    f0 = data.features[0]
    grid = world[f0].values
    assert data.x_min[0] == np.nanmin(grid) and data.x_max[0] == np.nanmax(grid)
    site0 = world[data.features].proda.sample_sites(lat=data.batch.lat[:1],
                                                     lon=data.batch.lon[:1])
    np.testing.assert_array_equal(data.x[0], [float(site0[f].values[0]) for f in data.features])
    assert data.forcing["TSOI"].shape == (len(data), 12, 20)


def test_prepare_drops_and_reports(world, profiles):
    df = profiles.copy()
    first = df.profile_id.iloc[0]
    ocean = pd.DataFrame({"profile_id": ["ocean"] * 2, "lat": [0.0, 0.0],
                          "lon": [-30.0, -30.0], "top": [0.0, 0.1], "bottom": [0.1, 0.3],
                          "soc": [1e4, 5e3]})
    w = world.copy()
    w["bio1"] = w["bio1"].where(~((np.abs(w.lat - df.lat.iloc[0]) < 2.0)
                                  & (np.abs(w.lon - df.lon.iloc[0]) < 2.0)))
    d = prepare_training_data(w, pd.concat([df, ocean], ignore_index=True))
    reasons = dict(zip(d.dropped.site, d.dropped.reason))
    assert "ocean" in reasons and "NaN" in reasons["ocean"]
    assert "bio1" in reasons[first]
    assert len(d) + len(d.dropped) == df.profile_id.nunique() + 1


def test_prepare_errors_name_what_is_missing(world, profiles):
    with pytest.raises(KeyError, match="nope"):
        prepare_training_data(world, profiles, features=["bio1", "nope"])
    with pytest.raises(KeyError, match="TSOI"):
        prepare_training_data(world.drop_vars("TSOI"), profiles)
    with pytest.raises(TypeError, match="profile table"):
        train_network(world, [1, 2, 3])


# -------------------------------------------------------------------------------------
# losses
# -------------------------------------------------------------------------------------
def test_soc_loss_values_and_masking():
    mod = torch.tensor([[2.0, 4.0, float("nan")], [1.0, 1.0, 1.0]], requires_grad=True)
    obs = torch.tensor([[1.0, 4.0, float("nan")], [np.e, 1.0, 0.0]])
    mask = torch.tensor([[True, True, False], [True, True, True]])
    got = soc_loss(mod, obs, mask, kind="log")
    # site 1: (log 2)^2 / 2; site 2: obs 0 ignored -> (1 + 0) / 2
    expected = ((np.log(2.0) ** 2) / 2 + 0.5) / 2
    assert got.item() == pytest.approx(expected, rel=1e-6)
    got.backward()
    assert torch.isfinite(mod.grad).all() and float(mod.grad[0, 2]) == 0.0
    rel = soc_loss(torch.tensor([[2.0, 2.0]]), torch.tensor([[1.0, 2.0]]),
                   torch.tensor([[True, True]]), kind="soc")
    assert float(rel) == pytest.approx(1.0 / 5.0)
    with pytest.raises(ValueError, match="loss"):
        soc_loss(mod, obs, mask, kind="mse")


def test_parameter_loss():
    p, t = torch.tensor([[0.5, 0.5]]), torch.tensor([[0.25, 0.5]])
    assert float(parameter_loss(p, t)) == pytest.approx(0.03125)
    # spec §7.4 cen: (500 MSE)(25 MARE), MARE = mean |(y - yhat)/y| = 0.5
    assert float(parameter_loss(p, t, kind="cen_product")) == pytest.approx(
        500 * 0.03125 * 25 * 0.5)


# -------------------------------------------------------------------------------------
# end-to-end training
# -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def e2e(data):
    return train_network(data, epochs=25, patience=50, seed=1, **SMALL)


def test_end_to_end_learns(e2e, data):
    net, rep = e2e
    assert isinstance(net, ParameterNet) and not net.training
    h = rep.history
    assert len(h) == 25 and h.train_loss.iloc[-1] < 0.5 * h.train_loss.iloc[0]
    assert rep.best_epoch[0] == int(h.val_loss.idxmin())
    assert rep.n_train[0] + rep.n_val[0] == len(data)
    # held-out sites, after 25 epochs of a small net: clearly better than theta = 0.5
    assert rep.skill["r2"] > 0.5
    va = crossval.split_sites(data.batch.lat, data.batch.lon, fraction=0.1, seed=1)[1]
    st_ = SiteTensors(data, mapping="layer_mean", device="cpu", net_dtype=torch.float64)
    with torch.no_grad():
        i = torch.as_tensor(va)
        mid = st_.soc_at_obs(xproda.get_model("clm5"), torch.full((i.numel(), 21), 0.5), i)
    base = crossval.skill_scores(mid.numpy(), st_.obs[i].numpy(), mask=st_.mask[i].numpy())
    assert rep.skill["r2"] > base["r2"] + 0.3
    assert rep.profiles_per_second > 0 and "end_to_end" in str(rep)
    assert net.feature_names == tuple(data.features)


def test_end_to_end_deterministic(data, e2e):
    net2, rep2 = train_network(data, epochs=25, patience=50, seed=1, **SMALL)
    assert net2.content_hash == e2e[0].content_hash
    pd.testing.assert_series_equal(rep2.history.val_loss, e2e[1].history.val_loss)
    net3, _ = train_network(data, epochs=2, seed=2, **SMALL)
    net4, _ = train_network(data, epochs=2, seed=1, **SMALL)
    assert net3.content_hash != net4.content_hash


def test_training_on_a_full_machine_takes_one_torch_thread_same_result(data, monkeypatch):
    """Each epoch runs in parallel.torch_threads_scope: one torch thread while other work
    fills the machine (decided per epoch), torch's count restored, the same network."""
    import os

    from xproda.models import parallel

    seen = []
    scope = parallel.torch_threads_scope
    busy = {"runnable": 0}

    def spy():
        cm = scope()

        class Recording:
            def __enter__(self):
                # full for the first three epochs, then quiet
                busy["runnable"] = os.cpu_count() if len(seen) < 3 else 0
                k = cm.__enter__()
                seen.append((k, torch.get_num_threads()))
                return k

            def __exit__(self, *exc):
                return cm.__exit__(*exc)

        return Recording()

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        monkeypatch.setattr("xproda.learning.trainer.torch_threads_scope", spy)
        monkeypatch.setattr(parallel, "other_runnable", lambda: busy["runnable"])
        a, _ = train_network(data, epochs=5, patience=50, seed=4, **SMALL)
        assert seen == [(1, 1)] * 3 + [(2, 2)] * 2 and torch.get_num_threads() == 2
        monkeypatch.setattr(parallel, "other_runnable", lambda: 0)
        b, _ = train_network(data, epochs=5, patience=50, seed=4, **SMALL)
        assert a.content_hash == b.content_hash
    finally:
        torch.set_num_threads(before)


def test_early_stopping_restores_best(data):
    net, rep = train_network(data, epochs=60, patience=2, lr=5e-2, seed=0, **SMALL)
    h = rep.history
    assert rep.stopped_early[0] and len(h) < 60
    assert len(h) == rep.best_epoch[0] + 3  # stopped after `patience` epochs without gain
    val = SiteTensors(data, mapping="layer_mean", device="cpu", net_dtype=torch.float32)
    va = torch.as_tensor(crossval.split_sites(data.batch.lat, data.batch.lon, fraction=0.1,
                                              seed=0)[1])
    with torch.no_grad():
        mod = val.soc_at_obs(xproda.get_model("clm5"), net(val.x[va]), va)
        loss = float(soc_loss(mod, val.obs[va], val.mask[va]))
    assert loss == pytest.approx(h.val_loss.min(), rel=1e-6)


def test_prior_regularisation_pulls_toward_prior(data):
    free, _ = train_network(data, epochs=8, lr=1e-2, seed=0, **SMALL)
    tied, _ = train_network(data, epochs=8, lr=1e-2, seed=0, prior_weight=100.0, prior=0.5,
                            **SMALL)
    d_free = np.abs(free.predict(data.x) - 0.5).mean()
    d_tied = np.abs(tied.predict(data.x) - 0.5).mean()
    assert d_tied < 0.5 * d_free


@pytest.mark.parametrize("ensemble", ["repeats", "bootstrap"])
def test_ensembles(data, world, ensemble):
    ens, rep = train_network(data, epochs=2, n_members=2, ensemble=ensemble, seed=0, **SMALL)
    assert isinstance(ens, ParameterNetEnsemble) and ens.n_members == 2 and ens.kind == ensemble
    assert ens[0].content_hash != ens[1].content_hash
    assert set(rep.history.member) == {0, 1}
    if ensemble == "bootstrap":
        assert rep.n_train == [int(round(0.9 * len(data)))] * 2
        assert all(v > 0 for v in rep.n_val)  # out-of-bag sites
    th = world.isel(lat=slice(10, 14)).chunk(lon=20).proda.predict_parameters(ens)
    assert th.dims[-2:] == ("member", "parameter") and th.sizes["member"] == 2


class _Interrupt(Exception):
    pass


def test_checkpoint_resume_identical(data, tmp_path, monkeypatch):
    kw = dict(epochs=7, seed=4, checkpoint_every=2, **SMALL)
    ref, ref_rep = train_network(data, **kw)
    path = tmp_path / "train.safetensors"
    calls = {"n": 0}
    orig = torch.optim.Adam.step

    def flaky(self, *a, **k):
        calls["n"] += 1
        if calls["n"] == 5 * 3 + 2:  # during epoch 6 (3 steps per epoch at 270 sites / 128)
            raise _Interrupt
        return orig(self, *a, **k)

    monkeypatch.setattr(torch.optim.Adam, "step", flaky)
    with pytest.raises(_Interrupt):
        train_network(data, checkpoint=str(path), **kw)
    monkeypatch.setattr(torch.optim.Adam, "step", orig)
    assert path.exists()
    net, rep = train_network(data, checkpoint=str(path), resume=True, **kw)
    assert net.content_hash == ref.content_hash
    pd.testing.assert_frame_equal(rep.history.drop(columns="seconds"),
                                  ref_rep.history.drop(columns="seconds"))
    with pytest.raises(ValueError, match="other settings"):
        train_network(data, checkpoint=str(path), resume=True, **{**kw, "lr": 0.1})


# -------------------------------------------------------------------------------------
# two-step
# -------------------------------------------------------------------------------------
def test_two_step_with_given_assimilation(data, truth, profiles):
    ids = np.asarray(data.batch.site_ids)
    th = truth_at_sites(truth, profiles).sel(site=ids)
    r2 = np.full(len(ids), 0.9)
    r2[:5] = 0.1  # badly fitted sites are dropped (spec §5.3)
    da = xr.Dataset({"map": th.transpose("site", "parameter"), "r2": ("site", r2)},
                    coords={"site": ids})
    net, rep = train_network(data, method="two_step", assimilation=da, epochs=40, seed=0,
                             **SMALL)
    assert rep.n_sites == len(ids) - 5
    assert set(rep.dropped.site) >= set(ids[:5])
    assert rep.history.train_loss.iloc[-1] < rep.history.train_loss.iloc[0]
    # the network recovers the (known) parameters better than the constant prior mean
    pred = net.predict(data.x)
    err_net = np.abs(pred - th.values).mean()
    err_mean = np.abs(th.values.mean(0) - th.values).mean()
    assert err_net < err_mean
    with pytest.raises(KeyError, match="lacks"):
        train_network(data, method="two_step", assimilation=da.isel(site=slice(0, 10)),
                       epochs=1, **SMALL)


def test_two_step_targets_taken_by_parameter_name(data, truth, profiles):
    """A DA result whose parameters are in another order gives the same targets (by name);
    one that misses a parameter is refused, naming it."""
    from xproda.learning.two_step import two_step_targets

    ids = np.asarray(data.batch.site_ids)
    th = truth_at_sites(truth, profiles).sel(site=ids).transpose("site", "parameter")
    da = xr.Dataset({"map": th, "r2": ("site", np.full(len(ids), 0.9))}, coords={"site": ids})
    mdl = xproda.get_model("clm5")
    names = list(mdl.parameters.names)
    kw = dict(dropped=pd.DataFrame({"site": [], "reason": []}), da_method="map", da_options=None,
              min_da_r2=None, seed=0, progress=False, mapping="layer_mean")
    _, t_ref, _, _ = two_step_targets(data, mdl, assimilation=da, **kw)
    _, t_rev, _, _ = two_step_targets(data, mdl, assimilation=da.sel(parameter=names[::-1]),
                                      **kw)
    np.testing.assert_array_equal(t_rev, t_ref)
    np.testing.assert_array_equal(t_ref, th.sel(parameter=names).values)
    with pytest.raises(ValueError, match="missing: \\['beta'\\]"):
        two_step_targets(data, mdl, assimilation=da.drop_sel(parameter="beta"), **kw)


def test_two_step_runs_assimilation(data):
    sub = data.subset(np.arange(40))
    net, rep = train_network(sub, method="two_step", epochs=2, min_da_r2=-np.inf,
                             da_options=dict(n_starts=1, sampler_options=dict(steps=30)),
                             seed=0, **SMALL)
    assert rep.assimilation is not None and "map" in rep.assimilation
    assert rep.n_sites == 40


# -------------------------------------------------------------------------------------
# splits and cross-validation
# -------------------------------------------------------------------------------------
@settings(max_examples=30, deadline=None)
@given(n=st.integers(10, 200), k=st.integers(2, 5), size=st.sampled_from([5.0, 20.0, 45.0]),
       seed=st.integers(0, 10))
def test_kfold_blocked_disjoint_in_space(n, k, size, seed):
    rng = np.random.default_rng(seed)
    lat, lon = rng.uniform(-60, 70, n), rng.uniform(-180, 180, n)
    blocks = crossval.spatial_blocks(lat, lon, block_size=size)
    if np.unique(blocks).size < k:
        with pytest.raises(ValueError, match="block"):
            crossval.kfold_sites(lat, lon, n_folds=k, block_size=size, seed=seed)
        return
    folds = crossval.kfold_sites(lat, lon, n_folds=k, block_size=size, seed=seed)
    allidx = np.concatenate(folds)
    assert np.array_equal(np.sort(allidx), np.arange(n))
    for i in range(k):
        for j in range(i + 1, k):
            assert not set(blocks[folds[i]]) & set(blocks[folds[j]])


@settings(max_examples=30, deadline=None)
@given(n=st.integers(20, 200), frac=st.floats(0.05, 0.5), seed=st.integers(0, 10),
       method=st.sampled_from(["random", "blocked"]))
def test_split_sites_partition(n, frac, seed, method):
    rng = np.random.default_rng(seed)
    lat, lon = rng.uniform(-60, 70, n), rng.uniform(-180, 180, n)
    tr, va = crossval.split_sites(lat, lon, fraction=frac, method=method, block_size=10.0,
                                  seed=seed)
    assert np.array_equal(np.sort(np.concatenate([tr, va])), np.arange(n))
    assert tr.size and va.size
    if method == "blocked":
        b = crossval.spatial_blocks(lat, lon, block_size=10.0)
        assert not set(b[tr]) & set(b[va])
    else:
        assert va.size == max(1, round(frac * n))


def test_skill_scores():
    s = crossval.skill_scores([[1.0, 2.0, 4.0, np.nan]], [[1.0, 3.0, 5.0, 7.0]])
    assert s["n"] == 3 and s["r2"] == pytest.approx(0.75) and s["bias"] == pytest.approx(-2 / 3)
    assert s["r2"] == s["nse"]
    assert np.isnan(crossval.skill_scores([1.0], [2.0])["r2"])


@pytest.mark.slow
def test_cross_validate_table(data):
    sub = data.subset(np.arange(120))
    table, pred = cross_validate(
        sub, n_folds=3, block_size=30.0, seed=0, mapping="layer_mean", progress=False,
        train_options=dict(epochs=8, hidden=(32, 32),
                           da_options=dict(n_starts=1, sampler_options=dict(steps=40))),
        batch_options=dict(steps=40, n_starts=1))
    assert list(table.index) == list(CV_METHODS)
    assert {"r2", "rmse", "bias", "n", "seconds"} <= set(table.columns)
    assert (table["n"] == table["n"].iloc[0]).all()  # every method scored on the same obs
    # folds are spatially disjoint and cover every site once
    blocks = crossval.spatial_blocks(pred.lat.values, pred.lon.values, block_size=30.0)
    for k in range(3):
        assert not set(blocks[pred.fold.values == k]) & set(blocks[pred.fold.values != k])
    assert np.isfinite(pred["soc_end_to_end"].values[sub.batch.mask]).all()
    assert table.loc["end_to_end", "r2"] > table.loc["default", "r2"]
    fitted = pred["fitted_sites"]  # two-step fits only the sites passing its DA filter
    n_train = [int((pred.fold.values != k).sum()) for k in range(3)]
    assert fitted.sel(cv_method="end_to_end").values.tolist() == n_train
    assert (fitted.sel(cv_method="two_step") <= fitted.sel(cv_method="end_to_end")).all()
    # random sampling pools the DA results of the sites two-step trains on
    np.testing.assert_array_equal(fitted.sel(cv_method="random_sampling"),
                                  fitted.sel(cv_method="two_step"))
    assert np.isfinite(pred["soc_random_sampling"].values[sub.batch.mask]).all()


def test_cross_validate_random_sampling_draws_from_training_sites_only(data, truth, profiles,
                                                                       monkeypatch):
    """Random sampling (Tao et al. 2020) on the twin world: it runs, scores finite, is
    deterministic for a seed, and pools only the training fold's DA results that pass the
    two-step filter -- although the DA result given covers the held-out sites too."""
    from xproda.learning import random_sampling as rs_mod
    from xproda.learning.forward import soc_at_observations

    sub = data.subset(np.arange(120))
    ids = np.asarray(sub.batch.site_ids)
    th = truth_at_sites(truth, profiles).sel(site=ids).transpose("site", "parameter")
    r2 = np.full(len(ids), 0.9)
    r2[::7] = 0.2  # badly fitted sites: never pooled (spec §5.3)
    da = xr.Dataset({"map": th, "r2": ("site", r2)}, coords={"site": ids})
    calls = []
    real = rs_mod.random_sampling_parameters

    def spy(assimilation, train, **kw):
        res = real(assimilation, train, **kw)
        calls.append((np.asarray(train.batch.site_ids), np.asarray(kw["sites"]), res))
        return res

    monkeypatch.setattr(rs_mod, "random_sampling_parameters", spy)
    kw = dict(methods=["default", "random_sampling"], n_folds=3, block_size=30.0, seed=0,
              mapping="layer_mean", progress=False, train_options={"assimilation": da},
              random_sampling_options={"n_draws": 40})
    table, pred = cross_validate(sub, **kw)
    assert np.isfinite(table.loc["random_sampling", ["r2", "rmse", "bias", "r2_log"]]).all()
    assert table.loc["random_sampling", "n"] == table.loc["default", "n"]
    assert len(calls) == 3
    fold = pred.fold.values
    mdl = xproda.get_model("clm5")
    for train_ids, pooled, res in calls:
        (k,) = {int(f) for f in fold[~np.isin(ids, train_ids)]}  # the fold held out
        test = np.flatnonzero(fold == k)
        assert set(train_ids) == set(ids[fold != k])
        good = ids[(fold != k) & (r2 > 0.75)]
        assert set(pooled) == set(good)  # the training sites passing the DA filter
        assert set(res.source_site.values.tolist()) <= set(good.tolist())
        np.testing.assert_array_equal(res.candidates.values,
                                      da["map"].sel(site=res.source_site.values).values)
        assert int(pred["fitted_sites"].sel(cv_method="random_sampling", cv_fold=k)) == good.size
        # the held-out sites get the one set chosen
        theta = np.broadcast_to(res.theta.values, (test.size, th.sizes["parameter"]))
        soc = soc_at_observations(mdl, sub.subset(test), theta, mapping="layer_mean")
        np.testing.assert_array_equal(pred["soc_random_sampling"].values[test, :soc.shape[1]],
                                      soc)
    again = cross_validate(sub, **kw)[1]
    xr.testing.assert_identical(again, pred)
    other = cross_validate(sub, **{**kw, "seed": 1})[1]  # other folds and draws
    assert not np.array_equal(other["soc_random_sampling"].values,
                              pred["soc_random_sampling"].values, equal_nan=True)
    with pytest.raises(ValueError, match=r"fold \d: the site-level DA .* no site passes"):
        cross_validate(sub, **{**kw, "train_options": {"assimilation": da, "min_da_r2": 2.0}})
