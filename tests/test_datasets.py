"""Tests of xproda.datasets: the synthetic world, its truth parameters and profiles."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import xproda
from xproda import spatial
from xproda.xr import api as xr_api
from xproda.datasets import (
    COVARIATES, CUE_PARAMETERS, FORCING_VARIABLES, synthetic_profiles, synthetic_world,
    truth_at_sites, truth_parameters,
)
from xproda.models.forcing import validate_forcing
from xproda.sites.observations import validate_profiles
from xproda.testing import assert_lazy


@pytest.fixture(scope="module")
def world5():
    return synthetic_world(5.0, seed=0)


@pytest.fixture(scope="module")
def world2():
    return synthetic_world(2.0, seed=0)


@pytest.fixture(scope="module")
def truth2(world2):
    return truth_parameters(world2, kind="cue")


@pytest.fixture(scope="module")
def profiles2(world2, truth2):
    return synthetic_profiles(world2, n_sites=1000, truth=truth2, noise=0.1, seed=0)


def _land(world):
    return world["landmask"].values.astype(bool)


# ------------------------------------------------------------------------------------------
# grid, metadata, determinism, chunks
# ------------------------------------------------------------------------------------------
def test_grid_crs_and_cf_metadata(world5):
    w = world5
    assert w.sizes["lat"] == 36 and w.sizes["lon"] == 72
    assert w.lat.values[0] == 87.5 and w.lon.values[0] == -177.5 and w.lon.values[-1] == 177.5
    assert w.lat.attrs["standard_name"] == "latitude" and w.lat.attrs["units"] == "degrees_north"
    assert w.lon.attrs["bounds"] == "lon_bnds"
    np.testing.assert_allclose(w.lat_bnds.values[:, 0] - w.lat_bnds.values[:, 1], 5.0)
    assert w.rio.crs.to_epsg() == 4326
    assert "depth" in w.coords and w.sizes["layer"] == 20 and w.sizes["month"] == 12
    for name, v in w.data_vars.items():
        assert "units" in v.attrs and "long_name" in v.attrs, name
    assert w.TSOI.attrs["standard_name"] == "soil_temperature"
    assert w.landfrac.attrs["standard_name"] == "land_area_fraction"
    assert w.bio1.attrs["standard_name"] == "air_temperature"
    assert w.elevation.attrs["standard_name"] == "surface_altitude"
    assert len(COVARIATES) >= 20 and set(COVARIATES) <= set(w.data_vars)
    groups = {a["covariate_group"] for a in COVARIATES.values()}
    assert groups == {"geography", "vegetation", "climate", "soil texture", "soil chemistry"}
    for k in FORCING_VARIABLES:
        assert w[k].attrs["units"] == xproda.conventions.forcing_attrs(k)["units"]
    # global-total of the land area: the real land mask north of 60 S, ~ 1.3e8 km2
    area = spatial.cell_area(w)
    land_area = float((area * w.landmask).sum()) / 1e12
    assert 1.1e2 < land_area < 1.45e2


def test_deterministic_for_a_seed(world5):
    again = synthetic_world(5.0, seed=0)
    xr.testing.assert_equal(world5, again)
    other = synthetic_world(5.0, seed=1)
    np.testing.assert_array_equal(other.landfrac.values, world5.landfrac.values)  # real mask
    assert not np.allclose(other.bio12.values, world5.bio12.values, equal_nan=True)


def test_chunked_world_is_lazy_and_chunk_invariant(world5):
    lazy = synthetic_world(5.0, seed=0, chunks={"lat": 7, "lon": 13})
    assert_lazy(lazy[list(FORCING_VARIABLES)])
    assert lazy.TSOI.chunks[2] == (7, 7, 7, 7, 7, 1)
    xr.testing.assert_equal(lazy.compute(), world5)
    # any other chunking gives the same values
    xr.testing.assert_equal(synthetic_world(5.0, seed=0, chunks=20).compute(), world5)


def test_bad_arguments():
    with pytest.raises(ValueError, match="resolution"):
        synthetic_world(7.0)
    with pytest.raises(ValueError, match="resolution"):
        synthetic_world(-1.0)
    with pytest.raises(ValueError, match="chunks"):
        synthetic_world(10.0, chunks={"depth": 3})
    with pytest.raises(ValueError, match="seed"):
        synthetic_world(10.0, seed=-1)
    with pytest.raises(ValueError, match="unknown model"):
        synthetic_world(10.0, model="century")
    w = synthetic_world(10.0)
    with pytest.raises(ValueError, match="kind"):
        truth_parameters(w, kind="npp")
    with pytest.raises(KeyError, match="covariate"):
        truth_parameters(w.drop_vars("bio1"))
    with pytest.raises(ValueError, match="n_sites"):
        synthetic_profiles(w, n_sites=0)
    with pytest.raises(ValueError, match="noise"):
        synthetic_profiles(w, noise=-0.1)


# ------------------------------------------------------------------------------------------
# land only, forcing validity, physics
# ------------------------------------------------------------------------------------------
def test_land_only_values(world5):
    w = world5
    land = _land(w)
    assert land.sum() > 300
    assert np.all(w.landfrac.values[land] >= 0.5)
    assert not land[w.lat.values < -60].any()
    for name in list(COVARIATES) + ["tas", "pr", "pet"] + list(FORCING_VARIABLES):
        v = w[name].transpose(..., "lat", "lon").values
        finite = np.isfinite(v).reshape(-1, *land.shape)
        assert finite.all(axis=0)[land].all(), f"{name} has NaN on land"
        assert not finite.any(axis=0)[~land].any(), f"{name} has values outside the land mask"


@pytest.mark.parametrize("model", ["clm5", "microbial"])
def test_forcing_passes_model_validation(world5, model):
    assert world5.proda.validate(model=model) == []
    land = world5.where(world5.landmask == 1).stack(cell=("lat", "lon")).dropna("cell",
                                                                                 subset=["bio1"])
    arrays = xr_api.forcing_arrays(land, model=model, dim="cell")
    tensors, n = validate_forcing(arrays, required=tuple(arrays))  # values in range
    assert n == int(world5.landmask.sum())
    # covariate ranges are physical
    assert float(w_min(world5, "bio1")) > -40 and float(w_max(world5, "bio1")) < 35
    for tex in ("clay", "sand", "silt"):
        assert 0 < float(w_min(world5, f"{tex}_0cm")) and float(w_max(world5, f"{tex}_0cm")) < 100
    total = world5.clay_30cm + world5.sand_30cm + world5.silt_30cm
    np.testing.assert_allclose(total.values[_land(world5)], 100.0)
    assert 3.5 <= float(w_min(world5, "ph_100cm")) and float(w_max(world5, "ph_0cm")) <= 9.5


def w_min(w, k):
    return w[k].min()


def w_max(w, k):
    return w[k].max()


def _harmonic(tsoi):
    """Amplitude and phase (rad) of the annual harmonic over the month axis (axis 0)."""
    t = 2 * np.pi * (np.arange(1, 13) - 0.5) / 12
    c = np.tensordot(np.cos(t), tsoi, axes=(0, 0)) / 6
    s = np.tensordot(np.sin(t), tsoi, axes=(0, 0)) / 6
    return np.hypot(c, s), np.arctan2(s, c)


def test_soil_temperature_damped_and_lagged_with_depth(world5):
    w = world5
    land = _land(w)
    tsoi = w.TSOI.values.astype(np.float64)[:, :, land]  # (month, layer, cell)
    rng = tsoi.max(0) - tsoi.min(0)
    assert np.all(np.diff(rng, axis=0) < 1e-4)  # annual range decreases with depth
    amp, phase = _harmonic(tsoi)
    big = amp[0] > 2.0
    lag = np.unwrap(phase[:, big], axis=0)
    assert np.all(np.diff(lag, axis=0) > 0)  # the maximum comes later deeper down
    # at 1 m the annual amplitude is damped to exp(-1 / d) of the surface, d ~ 1.5-3 m
    ratio = amp[8, big] / amp[0, big]
    assert np.all((ratio > 0.4) & (ratio < 0.8))
    # soil is warmer than air on average (+1 K, more under snow)
    offset = tsoi[:, 0].mean(0) - 273.15 - w.bio1.values[land]
    assert np.all(offset > 0.9) and np.all(offset < 8)


def test_permafrost_only_where_cold(world5):
    w = world5
    land = _land(w)
    alt_ly = w.ALTMAX_LASTYEAR.values[0][land]
    perma = alt_ly < 8.6
    assert perma.sum() >= 10
    bio1 = w.bio1.values[land]
    assert np.all(bio1[perma] < 0.0)
    assert not perma[bio1 > 0.0].any()
    assert np.all(alt_ly > 0)  # no ice-cap cells: the surface thaws every summer
    altmax = w.ALTMAX.values[:, land]
    assert np.all(np.diff(altmax, axis=0) >= 0)  # running maximum since January
    np.testing.assert_allclose(altmax[-1], alt_ly)
    # ALTMAX_LASTYEAR is the same in every month; bedrock index is an integer 3..20
    np.testing.assert_array_equal(np.ptp(w.ALTMAX_LASTYEAR.values[:, land], axis=0), 0.0)
    nb = w.nbedrock.values[:, land]
    assert np.all((nb >= 3) & (nb <= 20) & (nb == np.round(nb)))


def test_litter_inputs_sum_to_miami_npp(world5):
    w = world5
    land = _land(w)
    total = sum(w[k].sum("month") for k in ("CWD_INPUT", "LITR1_INPUT", "LITR2_INPUT",
                                            "LITR3_INPUT"))
    np.testing.assert_allclose(total.values[land], w.npp_annual.values[land], rtol=1e-12)
    npp_month = w.NPP * (365.0 / 12.0 * 86400.0)
    np.testing.assert_allclose(npp_month.sum("month").values[land], w.npp_annual.values[land],
                               rtol=1e-12)
    assert np.all(w.CWD_INPUT.values[:, land] <= 0.25 * w.npp_annual.values[land] + 1e-9)


# ------------------------------------------------------------------------------------------
# the global stock
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind", ["cue", "inputs"])
def test_global_soc_stock_plausible(world2, kind):
    theta = truth2_of(world2, kind)
    out = world2.proda.steady_state(theta, model="clm5")
    total_1m = float(xr_api.global_total(out, depth=(0.0, 1.0)))
    total_full = float(xr_api.global_total(out))
    assert 1000.0 < total_1m < 2500.0
    assert total_1m < total_full < 4 * total_1m
    assert np.all(out.flags.values[_land(world2)] == 0)


def truth2_of(world, kind):
    return truth_parameters(world, kind=kind)


# ------------------------------------------------------------------------------------------
# truth parameters
# ------------------------------------------------------------------------------------------
def test_truth_in_unit_interval_and_nan_on_ocean(world5):
    space = xproda.get_model("clm5").parameters
    for kind in ("cue", "inputs"):
        th = truth_parameters(world5, kind=kind)
        assert th.dims == ("lat", "lon", "parameter")
        assert list(th.parameter.values) == list(space.names)
        v = th.values[_land(world5)]
        assert np.all((v > 0) & (v < 1))
        assert np.isnan(th.values[~_land(world5)]).all()
    lazy = truth_parameters(synthetic_world(5.0, chunks=12))
    assert lazy.chunks is not None
    xr.testing.assert_allclose(lazy.compute(), truth_parameters(world5), rtol=0, atol=0)
    mic = truth_parameters(world5, model="microbial")
    assert mic.sizes["parameter"] == 23


def test_truth_is_a_nonlinear_function_of_covariates(world5):
    land = _land(world5)
    x = np.stack([world5[k].values[land] for k in COVARIATES], -1)
    x = np.column_stack([np.ones(len(x)), (x - x.mean(0)) / (x.std(0) + 1e-12)])
    th = truth_parameters(world5, kind="cue")
    for p in CUE_PARAMETERS["clm5"][:3]:
        y = th.sel(parameter=p).values[land]
        coef, *_ = np.linalg.lstsq(x, y, rcond=None)
        r2 = 1 - np.var(y - x @ coef) / np.var(y)
        assert r2 < 0.95, (p, r2)
        assert np.std(y) > 0.1  # strongly heterogeneous


def test_truth_kinds_differ_as_documented(world5):
    cue = truth_parameters(world5, kind="cue")
    inputs = truth_parameters(world5, kind="inputs")
    land = _land(world5)
    names = list(CUE_PARAMETERS["clm5"])
    sd_cue = cue.sel(parameter=names).values[land].std(0)
    sd_inp = inputs.sel(parameter=names).values[land].std(0)
    assert np.all(sd_cue > 5 * sd_inp)
    others = [p for p in cue.parameter.values if p not in names]
    xr.testing.assert_equal(cue.sel(parameter=others), inputs.sel(parameter=others))
    # cue: colder -> more efficient (higher transfer fractions)
    bio1 = world5.bio1.values[land]
    assert np.corrcoef(bio1, cue.sel(parameter="fl1s1").values[land])[0, 1] < -0.8
    # component control (docs): mean |log| change of the 0-1 m stock when the CUE parameters,
    # or the litter inputs, are replaced by their area-weighted land mean
    area = spatial.cell_area(world5)
    wsum = float((area * world5.landmask).sum())

    def stock(world, theta):
        return xr_api.soc_stock(world.proda.steady_state(theta), depth=(0.0, 1.0)).values

    flat = world5.copy()
    for k in ("CWD_INPUT", "LITR1_INPUT", "LITR2_INPUT", "LITR3_INPUT"):
        mean = (world5[k] * area).sum(("lat", "lon")) / wsum
        flat[k] = (world5[k] * 0 + mean).astype(world5[k].dtype)
    dev = {}
    for kind, th in (("cue", cue), ("inputs", inputs)):
        s0 = stock(world5, th)
        th_c = th.copy()
        for p in names:
            th_c.loc[{"parameter": p}] = float((th.sel(parameter=p) * area).sum()) / wsum
        a = area.values[land]
        d_cue = np.sum(np.abs(np.log(stock(world5, th_c) / s0))[land] * a) / a.sum()
        d_inp = np.sum(np.abs(np.log(stock(flat, th) / s0))[land] * a) / a.sum()
        dev[kind] = (d_cue, d_inp)
    assert dev["cue"][0] > dev["cue"][1]  # CUE dominates
    assert dev["inputs"][1] > 3 * dev["inputs"][0]  # litter inputs dominate


def test_truth_seed_perturbs_coefficients(world5):
    a = truth_parameters(world5, seed=0)
    b = truth_parameters(world5, seed=3)
    xr.testing.assert_equal(a, truth_parameters(world5, seed=0))
    assert not np.allclose(a.values, b.values, equal_nan=True)


# ------------------------------------------------------------------------------------------
# profiles
# ------------------------------------------------------------------------------------------
def test_profiles_validate_and_have_realistic_depths(profiles2):
    df = profiles2
    report = validate_profiles(df)  # strict: raises on any error
    assert report.ok
    assert df["profile_id"].nunique() == 1000
    for _, g in df.groupby("profile_id"):
        assert 3 <= len(g) <= 8
        assert g["top"].iloc[0] == 0.0
        np.testing.assert_allclose(g["top"].values[1:], g["bottom"].values[:-1])
        assert g["bottom"].iloc[-1] <= 3.0
    bottoms = df.groupby("profile_id")["bottom"].max()
    assert 0.5 < bottoms.median() < 1.5 and (bottoms > 2.0).mean() > 0.03
    assert np.all(df["soc"] > 0) and np.isfinite(df["soc"]).all()


def test_profiles_deterministic(world2, truth2, profiles2):
    again = synthetic_profiles(world2, n_sites=1000, truth=truth2, noise=0.1, seed=0)
    pd.testing.assert_frame_equal(again, profiles2)
    other = synthetic_profiles(world2, n_sites=1000, truth=truth2, noise=0.1, seed=1)
    assert not np.allclose(other["lat"].values[:50], profiles2["lat"].values[:50])


def test_profile_noise_statistics(world2, truth2, profiles2):
    r = np.log(profiles2["soc"] / profiles2["soc_true"])
    assert abs(r.std() - 0.1) < 0.01
    assert abs(r.mean()) < 0.01
    exact = synthetic_profiles(world2, n_sites=50, truth=truth2, noise=0.0, seed=2)
    np.testing.assert_array_equal(exact["soc"].values, exact["soc_true"].values)


def test_profiles_map_back_to_their_cells_and_model(world2, truth2, profiles2):
    first = profiles2.groupby("profile_id", sort=False).first()
    # the nearest cell of every site is a modelled land cell
    lm = world2.landmask.proda.sample_sites(lat=first["lat"].values, lon=first["lon"].values)
    assert np.all(lm.values == 1)
    # the truth at the sites is the truth of their cells
    ts = truth_at_sites(truth2, profiles2)
    assert ts.dims == ("site", "parameter") and list(ts.site.values) == list(first.index)
    iy = np.abs(world2.lat.values[None, :] - first["lat"].values[:, None]).argmin(1)
    ix = np.abs(world2.lon.values[None, :] - first["lon"].values[:, None]).argmin(1)
    np.testing.assert_array_equal(ts.values, truth2.values[iy, ix])
    # soc_true is the steady state of the cell mapped with the layer mean
    cell = world2.isel(lat=xr.DataArray(iy[:5], dims="site"), lon=xr.DataArray(ix[:5],
                                                                                 dims="site"))
    out = cell.proda.steady_state(ts.isel(site=slice(0, 5)).drop_vars("site"))
    soc = out["soc"].transpose("site", "layer").values
    for i, pid in enumerate(first.index[:5]):
        g = profiles2[profiles2.profile_id == pid]
        w = xproda.models.interp.layer_mean_weights(g["top"].values[None], g["bottom"].values[None])
        np.testing.assert_allclose(g["soc_true"].values, (w.numpy() @ soc[i][:, None])[0, :, 0],
                                   rtol=1e-10)
