"""Analyses (spec §8): bulk indices, sensitivity (finite and gradient), component control,
covariate importance and skill -- on the reference case and on synthetic twin worlds."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import Phase, given, settings
from hypothesis import strategies as st

import xproda
from xproda import analysis
from xproda.datasets import CUE_PARAMETERS, synthetic_profiles, synthetic_world, truth_parameters
from xproda.testing import assert_lazy, forcing_dataset, raise_if_dask_computes

from spec_cases import spec12_forcing


# -------------------------------------------------------------------------------------------
# fixtures
# -------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def world():
    return synthetic_world(6.0)


@pytest.fixture(scope="module")
def truths(world):
    return {k: truth_parameters(world, kind=k).compute() for k in ("cue", "inputs")}


def _theta(ds, seed):
    rng = np.random.default_rng(seed)
    th = xr.DataArray(rng.uniform(0.2, 0.8, (ds.sizes["lat"], ds.sizes["lon"], 21)),
                      dims=("lat", "lon", "parameter"),
                      coords={"lat": ds.lat, "lon": ds.lon})
    return th.where(ds["TSOI"].isel(month=0, layer=0).notnull())


# -------------------------------------------------------------------------------------------
# bulk indices
# -------------------------------------------------------------------------------------------
# spec §8.3: Octave runs of the original fun_bulk_process.m, kp = 0.5
_REF = {1: dict(A=0.425853, K=0.00738445, V=0.0139798, Xi=0.0302836, I=0.683861, NPP=660.0),
        2: dict(A=0.425896, K=0.0198385, V=0.0874014, Xi=0.032261, I=0.683861, NPP=660.0)}


@pytest.mark.parametrize("case", [1, 2])
def test_bulk_indices_match_reference(case):
    m = xproda.get_model("clm5", reference=True)
    out = analysis.bulk_indices_columns(m, np.full((1, 21), 0.5), spec12_forcing(case))
    for k, v in _REF[case].items():
        np.testing.assert_allclose(out[k][0], v, rtol=2e-5, err_msg=k)


def test_bulk_indices_gridded_lazy_and_metadata():
    ds = forcing_dataset(4, 6, seed=1)
    th = _theta(ds, 1)
    eager = ds.proda.bulk_indices(th)
    with raise_if_dask_computes():
        lazy = ds.chunk({"lat": 2, "lon": 3}).proda.bulk_indices(th.chunk({"lat": 1}))
    assert_lazy(lazy)
    xr.testing.assert_allclose(lazy.compute(), eager, rtol=1e-13)
    assert eager["K"].attrs["units"] == "yr-1" and eager["NPP"].attrs["units"] == "g m-2 yr-1"
    land = th.isel(parameter=0).notnull()
    assert bool(eager["A"].where(land).notnull().sum() > 0)
    assert bool(eager["A"].where(~land).isnull().all())
    # NPP index equals the steady state's total input
    ss = ds.proda.steady_state(th)
    xr.testing.assert_allclose(eager["NPP"], ss["input"].drop_vars("cell_area"), rtol=1e-12)
    a = eager["A"].values[np.isfinite(eager["A"].values)]
    assert ((a > 0) & (a < 1)).all()


def test_bulk_indices_rejects_microbial():
    ds = forcing_dataset(2, 3, seed=0)
    with pytest.raises(NotImplementedError, match="clm5"):
        analysis.bulk_indices(ds, xr.DataArray(np.full(23, 0.5), dims="parameter"),
                              model="microbial")


# -------------------------------------------------------------------------------------------
# twin-world attribution
# -------------------------------------------------------------------------------------------
def test_component_control_finds_the_dominant_mechanism(world, truths):
    res = {k: analysis.component_control(world, truths[k]).compute() for k in truths}
    rank = {k: analysis.ranking(r) for k, r in res.items()}
    loss = {k: r["variation_loss"].to_series().round(3).to_dict() for k, r in res.items()}
    print("variation loss", loss)
    assert rank["cue"][0] == "A", loss
    assert rank["inputs"][0] == "NPP", loss
    # the same from the mean |log| change (synthetic-world doc statistic)
    assert analysis.ranking(res["cue"], by="mean_abs_log_change")[0] == "A"
    assert analysis.ranking(res["inputs"], by="mean_abs_log_change")[0] == "NPP"
    assert float(res["cue"]["variation_loss"].sel(group="A")) > 0.3
    assert float(res["inputs"]["variation_loss"].sel(group="A")) < 0.15
    r = res["cue"]
    np.testing.assert_allclose(r["global_stock_change"],
                               r["global_stock"] - r["global_stock_full"], rtol=1e-12)
    assert (r["total_absolute_deviation"] >= abs(r["global_stock_change"]) - 1e-9).all()
    assert r["global_stock"].attrs["units"] == "Pg C"


def test_sensitivity_cue_world(world, truths):
    res = analysis.sensitivity(world, truths["cue"], levels=(-0.1, -0.05, 0.05, 0.1)).compute()
    rc = res["relative_change"]
    print(rc.to_pandas().round(2))
    # the stock is linear in the inputs: +-x % inputs -> +-x % stock exactly
    np.testing.assert_allclose(rc.sel(group="NPP"), 100 * rc["level"], atol=1e-9)
    # more transfer (A), slower turnover (K) -> more carbon; monotone in the level
    for g in ("A", "K", "NPP"):
        v = res["global_stock"].sel(group=g).values
        assert (np.diff(v) > 0).all(), g
    # a uniform 10 % change of the transfer fractions moves the global stock most
    assert str(abs(rc.sel(level=0.1)).idxmax("group").item()) == "A"
    assert res["global_stock"].attrs["units"] == "Pg C"
    base = res["global_stock"].sel(level=0.0)
    np.testing.assert_allclose(base, base.isel(group=0))  # one cell set, one baseline


def test_gradient_agrees_with_finite_perturbations(world, truths):
    cmp = analysis.compare_sensitivities(world, truths["cue"], delta=0.01)
    print(cmp.to_dataframe())
    assert (abs(cmp["relative_difference"]) < 0.02).all()
    assert (abs(cmp["forward_difference"] / cmp["gradient"] - 1) < 0.02).all()
    # d stock / d (relative inputs) = the stock itself
    g = analysis.sensitivity_gradient(world, truths["cue"], groups=["NPP"])
    np.testing.assert_allclose(g["global_gradient"].sel(group="NPP"), g["global_stock"],
                               rtol=1e-10)


def test_plus_one_percent_cue(world, truths):
    cue = {"CUE": CUE_PARAMETERS["clm5"]}
    fin = analysis.sensitivity(world, truths["cue"], groups=cue, levels=[0.01]).compute()
    grd = analysis.sensitivity_gradient(world, truths["cue"], groups=cue).compute()
    d_fin = float(fin["global_stock_change"].sel(group="CUE", level=0.01))
    d_lin = 0.01 * float(grd["global_gradient"].sel(group="CUE"))
    print(f"+1 % CUE: {d_fin:+.1f} Pg C (finite), {d_lin:+.1f} Pg C (gradient)")
    assert d_fin > 0
    assert abs(d_fin / d_lin - 1) < 0.02


def test_normalised_space_is_the_spec_rule(world, truths):
    th = truths["inputs"]
    res = analysis.sensitivity(world, th, groups=["V"], levels=[0.1], space="normalised")
    # by hand: theta_V * 1.1 (clipped), one steady state
    m = xproda.get_model("clm5")
    iv = list(m.parameters.group_indices("V"))
    th2 = th.copy()
    th2[..., iv] = np.clip(th.values[..., iv] * 1.1, 1e-4, 1 - 1e-4)
    ref = world.proda.steady_state(th2).proda.soc_stock()
    got = res["soc_stock"].sel(group="V", level=0.1)
    np.testing.assert_allclose(got.values, ref.where(got.notnull()).values, rtol=1e-12)


# -------------------------------------------------------------------------------------------
# laziness and chunk invariance
# -------------------------------------------------------------------------------------------
def test_gridded_analyses_are_lazy():
    ds = forcing_dataset(4, 6, seed=2, chunks={"lat": 2, "lon": 3})
    th = _theta(ds, 2).chunk({"lat": 2})
    with raise_if_dask_computes():
        s = ds.proda.sensitivity(th, levels=(-0.05, 0.05))
        g = ds.proda.sensitivity_gradient(th)
        c = ds.proda.component_control(th)
        b = ds.proda.bulk_indices(th)
    for obj in (s, g, c, b):
        assert_lazy(obj)
    assert s["soc_stock"].chunks is not None and c["soc_stock"].chunks is not None


_EAGER: dict = {}


def _eager(ds, th):
    if not _EAGER:
        _EAGER["s"] = analysis.sensitivity(ds, th, levels=(-0.05, 0.05), groups=("A", "NPP"))
        _EAGER["g"] = analysis.sensitivity_gradient(ds, th, groups=("A", "K", "NPP"))
        _EAGER["c"] = analysis.component_control(ds, th, groups=("A", "Xi", "NPP"))
    return _EAGER


@settings(max_examples=5, deadline=None, phases=[Phase.explicit, Phase.generate])
@given(cy=st.integers(1, 5), cx=st.integers(1, 6), cp=st.sampled_from([None, 1, 3]))
def test_chunk_invariance(cy, cx, cp):
    ds = forcing_dataset(5, 6, seed=3)
    th = _theta(ds, 3)
    ref = _eager(ds, th)
    dsc = ds.chunk({"lat": cy, "lon": cx})
    thc = th.chunk({"lat": cp} if cp else {"parameter": 5})
    s = analysis.sensitivity(dsc, thc, levels=(-0.05, 0.05), groups=("A", "NPP")).compute()
    g = analysis.sensitivity_gradient(dsc, thc, groups=("A", "K", "NPP")).compute()
    c = analysis.component_control(dsc, thc, groups=("A", "Xi", "NPP")).compute()
    np.testing.assert_allclose(s["soc_stock"].values, ref["s"]["soc_stock"].values, rtol=1e-12)
    np.testing.assert_allclose(s["global_stock"].values, ref["s"]["global_stock"].values,
                               rtol=1e-12)
    np.testing.assert_allclose(g["dsoc_stock"].values, ref["g"]["dsoc_stock"].values,
                               rtol=1e-10)
    for k in ("global_stock", "variation_loss", "total_absolute_deviation"):
        np.testing.assert_allclose(c[k].values, ref["c"][k].values, rtol=1e-9, err_msg=k)


# -------------------------------------------------------------------------------------------
# covariate importance and skill
# -------------------------------------------------------------------------------------------
_TRUTH_COVS = ["bio1", "clay_30cm", "ph_0cm", "aridity_index", "depth_to_bedrock",
               "tree_fraction"]


class _Oracle:
    """Maps covariates to the truth parameters exactly (a perfectly trained network)."""

    def __init__(self, features, kind):
        self.feature_names, self.kind = list(features), kind

    def __call__(self, x):
        cov = xr.Dataset({f: (("lat", "lon"), x[None, :, i])
                          for i, f in enumerate(self.feature_names)})
        return np.asarray(truth_parameters(cov, kind=self.kind).values)[0]


def test_permutation_importance_on_held_out_profiles(world, truths):
    from xproda.learning.training import prepare_training_data

    prof = synthetic_profiles(world, n_sites=120, truth=truths["cue"], noise=0.05, seed=3)
    feats = _TRUTH_COVS + ["elevation", "bio12"]
    data = prepare_training_data(world, prof, features=feats)
    net = _Oracle(feats, "cue")
    groups = {"climate": ["bio1", "aridity_index"], "soil": ["clay_30cm", "ph_0cm"],
              "unused": ["elevation", "bio12"]}
    imp = analysis.permutation_importance(net, data, groups=groups, n_repeats=4, seed=0,
                                          metric="r2_log")
    print(imp[["importance_mean", "importance_std"]].to_dataframe(), float(imp["baseline"]))
    assert float(imp["baseline"]) > 0.8
    mean, sd = imp["importance_mean"], imp["importance_std"]
    assert float(mean.sel(group="unused")) == 0.0 and float(sd.sel(group="unused")) == 0.0
    assert float(mean.sel(group="climate")) > float(mean.sel(group="soil")) > 0
    assert float(mean.sel(group="climate")) > 3 * float(sd.sel(group="climate"))
    # spec's group replacement, with the world's covariate_group attrs
    con = analysis.permutation_importance(net, data, groups="covariate_group",
                                          covariates=world, method="constant",
                                          n_repeats=3, metric="r2_log")
    assert set(con["group"].values) == {"climate", "soil texture", "soil chemistry",
                                        "geography", "vegetation"}
    assert float(con["importance_mean"].sel(group="climate")) > 0


def test_importance_errors():
    with pytest.raises(ValueError, match="metric"):
        analysis.permutation_importance(None, None, metric="mae")
    with pytest.raises(ValueError, match="method"):
        analysis.permutation_importance(None, None, method="shuffle")


def test_skill_by_group():
    rng = np.random.default_rng(0)
    S, D = 40, 5
    depth = np.sort(rng.uniform(0, 2, (S, D)), axis=1)
    obs = 1e4 * np.exp(-depth) * rng.lognormal(0, 0.2, (S, D))
    lat = rng.uniform(-60, 80, S)
    tab = analysis.skill_by_group(obs, obs, depth=depth, regions="latitude", lat=lat)
    assert np.allclose(tab["r2"].dropna(), 1.0) and np.allclose(tab["rmse"].dropna(), 0.0)
    mod = obs * 1.1
    tab = analysis.skill_by_group(mod, obs, depth=depth, regions="latitude", lat=lat)
    assert tab.loc[("all", "all"), "n"] == S * D
    bands = tab.xs("all", level="region")
    assert bands.loc[["0-0.3 m", "0.3-1 m", "1-inf m"], "n"].sum() == S * D
    regions = tab.xs("all", level="depth_band").drop("all")
    assert regions["n"].sum() == S * D
    assert (tab["bias"].dropna() > 0).all()
    with pytest.raises(ValueError, match="lat="):
        analysis.skill_by_group(mod, obs, depth=depth, regions="latitude")


def test_errors_name_the_argument(world, truths):
    with pytest.raises(ValueError, match="groups: unknown group 'Q'"):
        analysis.sensitivity(world, truths["cue"], groups=["Q"])
    with pytest.raises(ValueError, match="space"):
        analysis.sensitivity(world, truths["cue"], space="log")
    with pytest.raises(KeyError, match="nope"):
        analysis.component_control(world, truths["cue"], groups={"x": ["nope"]})
    with pytest.raises(KeyError, match="land_fraction"):
        analysis.sensitivity(world, truths["cue"], land_fraction="missing")
