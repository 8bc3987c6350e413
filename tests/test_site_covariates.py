"""Covariates measured at the sites: site_properties, training, checkpoints, refusal on grids."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import xproda
from xproda.datasets import synthetic_profiles, synthetic_world, truth_parameters
from xproda.learning.baselines import fit_baseline
from xproda.learning.network import load_network
from xproda.learning.training import cross_validate, prepare_training_data, train_network
from xproda.sites.observations import site_properties
from xproda.spatial import sample_sites

SMALL = dict(hidden=(16, 16), progress=False, mapping="layer_mean", epochs=3)
GRID = ["bio1", "bio12", "elevation"]
MEASURED = ["clay_0cm", "ph_0cm"]  # "measured at the sites": the grid's values sampled there


@pytest.fixture(scope="module")
def world():
    return synthetic_world(4.0, seed=0)


@pytest.fixture(scope="module")
def profiles(world):
    return synthetic_profiles(world, n_sites=120, truth=truth_parameters(world, kind="cue"),
                              noise=0.1, seed=3)


@pytest.fixture(scope="module")
def measured(world, profiles):
    """The site table: grid values of MEASURED at each profile's location, by profile_id."""
    sites = profiles.groupby("profile_id", sort=False)[["lat", "lon"]].first()
    s = sample_sites(world[MEASURED], lat=sites["lat"].to_numpy(),
                     lon=sites["lon"].to_numpy()).compute()
    table = pd.DataFrame({m: np.asarray(s[m].values, float) for m in MEASURED},
                         index=sites.index)
    table.attrs["column_units"] = {m: world[m].attrs.get("units") for m in MEASURED}
    assert np.isfinite(table.to_numpy()).all() and len(table) == 120
    return table


# -------------------------------------------------------------------------------------
# site_properties
# -------------------------------------------------------------------------------------
def test_site_properties_thickness_weighted_over_the_interval():
    df = pd.DataFrame({
        "profile_id": ["a", "a", "a", "b", "b", "c"],
        "top": [0.0, 0.1, 0.25, 0.0, 0.2, 0.0], "bottom": [0.1, 0.25, 0.6, 0.2, 0.5, 0.1],
        "CLYPPT": [10.0, 20.0, 40.0, np.nan, 30.0, 5.0], "PHIHOX": [5.0, 6.0, 7.0, 6.5, 6.5, 7.0],
        "soc": 1.0, "lat": 0.0, "lon": 0.0})
    out = site_properties(df, ["CLYPPT", "PHIHOX"])
    assert out.index.tolist() == ["a", "b", "c"]
    assert out.columns.tolist() == ["CLYPPT_0-30cm", "PHIHOX_0-30cm"]
    # a: 0.1 m of 10, 0.15 m of 20, 0.05 m of 40 over 0.3 m
    assert out.loc["a", "CLYPPT_0-30cm"] == pytest.approx((1.0 + 3.0 + 2.0) / 0.3)
    # b: clay only from 0.2-0.3 m (1/3 < 0.5 coverage) -> NaN; pH covered
    assert np.isnan(out.loc["b", "CLYPPT_0-30cm"])
    assert out.loc["b", "PHIHOX_0-30cm"] == pytest.approx(6.5)
    assert np.isnan(out.loc["c", "CLYPPT_0-30cm"])  # 0.1 m of 0.3 m
    assert out.attrs["column_units"] == {"CLYPPT_0-30cm": "%", "PHIHOX_0-30cm": "1"}
    loose = site_properties(df, {"CLYPPT": "clay"}, min_coverage=0.3, units={"CLYPPT": "%"})
    assert loose.loc["b", "clay"] == pytest.approx(30.0)
    assert loose.loc["c", "clay"] == pytest.approx(5.0)
    deep = site_properties(df, {"CLYPPT": "clay"}, top=0.3, bottom=1.0, min_coverage=0.4)
    assert deep.loc["a", "clay"] == pytest.approx(40.0) and deep.attrs["depth_interval_m"] == (
        0.3, 1.0)


@given(st.lists(st.tuples(st.floats(0.01, 0.5), st.floats(0.0, 100.0)), min_size=1,
                max_size=8), st.floats(0.0, 0.5), st.floats(0.05, 1.0))
@settings(max_examples=60, deadline=None)
def test_site_properties_equals_the_integral(layers, top, width):
    """The mean over [top, bottom] equals the integral of the step profile / covered depth."""
    th = np.array([t for t, _ in layers])
    v = np.array([x for _, x in layers])
    edges = np.concatenate([[0.0], np.cumsum(th)])
    df = pd.DataFrame({"profile_id": "p", "top": edges[:-1], "bottom": edges[1:], "X": v})
    bottom = top + width
    out = site_properties(df, {"X": "x"}, top=top, bottom=bottom, min_coverage=1e-9)
    z = np.linspace(top, bottom, 200_001)[:-1] + width / 400_000  # midpoints
    inside = z < edges[-1]
    if not inside.any():
        assert np.isnan(out.loc["p", "x"]) or edges[-1] > top
        return
    k = np.searchsorted(edges, z[inside], side="right") - 1
    assert out.loc["p", "x"] == pytest.approx(v[k].mean(), rel=1e-3, abs=1e-3)


def test_site_properties_errors():
    df = pd.DataFrame({"profile_id": ["a"], "top": [0.0], "bottom": [0.3], "X": ["high"]})
    with pytest.raises(KeyError, match=r"lacks column\(s\) \['CLYPPT'\]"):
        site_properties(df, ["CLYPPT"])
    with pytest.raises(ValueError, match="column 'X' must be numeric"):
        site_properties(df, ["X"])
    with pytest.raises(ValueError, match="expected 0 <= top < bottom"):
        site_properties(df.assign(X=1.0), ["X"], top=0.3, bottom=0.1)
    with pytest.raises(ValueError, match="min_coverage must be in"):
        site_properties(df.assign(X=1.0), ["X"], min_coverage=0.0)


# -------------------------------------------------------------------------------------
# training data
# -------------------------------------------------------------------------------------
def test_prepare_appends_site_covariates_scaled_on_the_sites(world, profiles, measured):
    d = prepare_training_data(world, profiles, features=GRID, site_covariates=measured)
    assert d.features == GRID + MEASURED and d.site_features == MEASURED
    assert d.x.shape == (len(d), 5) and len(d) > 100
    ids = np.asarray(d.batch.site_ids)
    np.testing.assert_array_equal(d.x[:, 3:], measured.loc[ids].to_numpy())
    np.testing.assert_array_equal(d.x_min[3:], measured.min().to_numpy())
    np.testing.assert_array_equal(d.x_max[3:], measured.max().to_numpy())
    grid_only = prepare_training_data(world, profiles, features=GRID)
    np.testing.assert_array_equal(d.x_min[:3], grid_only.x_min)  # grid scaling unchanged
    assert d.feature_units[3:] == [world[m].attrs.get("units") for m in MEASURED]
    sub = d.subset([0, 2])
    assert sub.site_features == MEASURED and sub.x.shape == (2, 5)


def test_prepare_reports_missing_site_values(world, profiles, measured):
    table = measured.copy()
    ids = table.index.to_numpy()
    table.loc[ids[0], "ph_0cm"] = np.nan
    table = table.drop(index=ids[1])
    d = prepare_training_data(world, profiles, features=GRID, site_covariates=table)
    reasons = d.dropped.set_index("site")["reason"]
    assert reasons[ids[0]] == "NaN site covariate(s): ph_0cm"
    assert reasons[ids[1]] == "not in site_covariates"
    assert ids[0] not in set(d.batch.site_ids) and ids[1] not in set(d.batch.site_ids)
    base = prepare_training_data(world, profiles, features=GRID)
    assert len(d) == len(base) - 2


def test_prepare_site_covariates_only(world, profiles, measured):
    d = prepare_training_data(world, profiles, features=[], site_covariates=measured)
    assert d.features == MEASURED == d.site_features and d.x.shape[1] == 2
    with pytest.raises(ValueError, match="pass features=.* or site_covariates"):
        prepare_training_data(world, profiles, features=[])


def test_prepare_site_covariate_errors(world, profiles, measured):
    with pytest.raises(ValueError, match=r"column\(s\) \['bio1'\] are also gridded features"):
        prepare_training_data(world, profiles, features=GRID,
                              site_covariates=measured.rename(columns={"ph_0cm": "bio1"}))
    with pytest.raises(ValueError, match="expected numeric columns, found \\['soil'\\]"):
        prepare_training_data(world, profiles, features=GRID,
                              site_covariates=measured.assign(soil="loam"))
    with pytest.raises(ValueError, match="none of the 120 profile ids is in its index"):
        prepare_training_data(world, profiles, features=GRID,
                              site_covariates=measured.reset_index(drop=True))
    with pytest.raises(ValueError, match="repeated site id"):
        prepare_training_data(world, profiles, features=GRID,
                              site_covariates=pd.concat([measured, measured.iloc[:1]]))
    with pytest.raises(TypeError, match="expected a pandas DataFrame"):
        prepare_training_data(world, profiles, features=GRID, site_covariates={"a": 1})
    with pytest.raises(ValueError, match=r"have no finite value at the 120 sites"):
        prepare_training_data(world, profiles, features=GRID,
                              site_covariates=measured.assign(ph_0cm=np.nan))


def test_site_values_equal_to_the_grid_give_the_same_fits(world, profiles, measured):
    """Measured values that equal the grid's at the sites give the same tree baseline and,
    with the same scaling constants, the same network as the gridded covariates."""
    site = prepare_training_data(world, profiles, features=GRID, site_covariates=measured)
    grid = prepare_training_data(world, profiles, features=GRID + MEASURED, scaling="sites")
    np.testing.assert_array_equal(site.x, grid.x)
    np.testing.assert_array_equal(site.x_min[3:], grid.x_min[3:])  # both from the sites
    pred = fit_baseline("gbm", site).predict(site)
    assert np.isfinite(pred).sum() > 300
    np.testing.assert_array_equal(pred, fit_baseline("gbm", grid).predict(grid))
    grid.x_min, grid.x_max = site.x_min, site.x_max
    a, _ = train_network(site, **SMALL)
    b, _ = train_network(grid, **SMALL)
    for (k, v), w in zip(a.state_dict().items(), b.state_dict().values()):
        assert np.array_equal(v.numpy(), w.numpy()), k


# -------------------------------------------------------------------------------------
# the network: metadata, checkpoint, refusal on grids without the site covariates
# -------------------------------------------------------------------------------------
def test_network_records_site_covariates_and_refuses_grids_without_them(world, profiles,
                                                                        measured, tmp_path):
    net, report = train_network(world, profiles, features=GRID, site_covariates=measured,
                                **SMALL)
    assert net.site_features == tuple(MEASURED)
    assert "2 measured at sites" in repr(net)
    assert report.settings["site_features"] == MEASURED
    assert net.config()["site_features"] == MEASURED
    net.save(tmp_path / "net")
    back = load_network(tmp_path / "net")
    assert back.site_features == tuple(MEASURED) and back.feature_names == net.feature_names
    grid = world.drop_vars(MEASURED)
    with pytest.raises(KeyError, match=r"site covariate\(s\) \['clay_0cm', 'ph_0cm'\], "
                                       r"measured at the training profiles"):
        xproda.xr.api.predict_parameters(grid, back)
    # a grid that maps the same quantities under the same names is used
    theta = xproda.xr.api.predict_parameters(world, back)
    land = world["landmask"].values > 0
    assert land.sum() > 100 and np.isfinite(theta.values[land]).all()


def test_grid_only_network_config_unchanged(world, profiles):
    """Networks without site covariates keep their config (and so their content hash)."""
    net, _ = train_network(world, profiles, features=GRID, **SMALL)
    assert net.site_features == () and "site_features" not in net.config()
    assert "measured at sites" not in repr(net)


def test_site_features_must_be_features():
    from xproda.learning.network import ParameterNet

    with pytest.raises(ValueError, match="site_features must be among the features"):
        ParameterNet(["a", "b"], ["q10"], site_features=["c"])


@pytest.mark.slow
def test_cross_validate_with_site_covariates(world, profiles, measured):
    table, pred = cross_validate(
        world, profiles, features=GRID, site_covariates=measured, methods=["default", "gbm",
                                                                              "end_to_end"],
        n_folds=3, block_size=30.0, seed=0, mapping="layer_mean", progress=False,
        train_options=dict(epochs=3, hidden=(16, 16)))
    assert list(table.index) == ["default", "gbm", "end_to_end"]
    assert (table["n"] == table["n"].iloc[0]).all() and table["n"].iloc[0] > 300
    assert np.isfinite(table["r2"]).all()


# -------------------------------------------------------------------------------------
# pedotransfer skill against measured bulk density, and its calibration
# -------------------------------------------------------------------------------------
def test_pedotransfer_skill_and_calibration():
    from xproda.sites.observations.pedotransfer import (
        bulk_density_adams,
        fit_mineral_bd,
        pedotransfer_skill,
    )

    rng = np.random.default_rng(0)
    oc = rng.uniform(1.0, 60.0, 400)
    bd = bulk_density_adams(oc, mineral_bd=1.45) * (1 + 0.03 * rng.standard_normal(400))
    bd[:5] = np.nan  # unmeasured: left out
    s = pedotransfer_skill(oc, bd)
    assert s["n"] == 395 and s["bias"] > 0.05  # 1.64 overestimates a 1.45 mineral soil
    want = bulk_density_adams(oc[5:]) - bd[5:]
    assert s["bias"] == pytest.approx(want.mean()) and s["rmse"] == pytest.approx(
        np.sqrt((want ** 2).mean()))
    m = fit_mineral_bd(oc, bd)
    assert m == pytest.approx(1.45, abs=0.01)
    cal = pedotransfer_skill(oc, bd, mineral_bd=m)
    assert abs(cal["bias"]) < 0.005 and cal["rmse"] < s["rmse"] and cal["r2"] > s["r2"]
    with pytest.raises(ValueError, match="must be in g cm-3 .* divide kg m-3 by 1000"):
        pedotransfer_skill(oc, bd * 1000)
    with pytest.raises(ValueError, match="at least 10 horizons .* found 3"):
        fit_mineral_bd(oc[5:8], bd[5:8])
    with pytest.raises(ValueError, match="no horizon with both"):
        pedotransfer_skill([np.nan], [1.2])
