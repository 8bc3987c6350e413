"""Tests of xproda.climate: forcing from climate covariates, bioclim reconstruction."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import xarray as xr

import xproda
from xproda import grid
from xproda.climate import (
    DEFAULTS, FORCING_VARIABLES, bioclim, column_forcing, from_climate,
    monthly_climate_from_bioclim,
)
from xproda.models.forcing import KELVIN
from xproda.testing import assert_lazy, raise_if_dask_computes

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
WORLDCLIM = DATA / "covariates" / "worldclim_bio_coarse.nc"
SIERRA = DATA / "profiles" / "aqp_sierraTransect_site.csv"

MONTH = np.arange(1, 13)


@pytest.fixture(scope="module")
def world10():
    from xproda.datasets import synthetic_world

    return synthetic_world(10.0)


def _harmonic(t_mean, amp, lat, p_ann, b):
    """Harmonic monthly climate [n, 12]: coldest month Jan (north) / Jul (south)."""
    peak = np.where(np.asarray(lat) >= 0, 7.0, 1.0)
    cos = np.cos(2 * np.pi * (MONTH[None, :] - peak[:, None]) / 12.0)
    tas = np.asarray(t_mean)[:, None] + np.asarray(amp)[:, None] * cos
    pr = np.asarray(p_ann)[:, None] / 12.0 * (1.0 + np.asarray(b)[:, None] * cos)
    return tas, pr


def _sites(maat, map_mm, lat, **extra):
    n = len(maat)
    # map needs its units (cm or m values would pass unnoticed: CLIMATE_SCHEMA)
    data = {"maat": ("site", np.asarray(maat, float)),
            "map": ("site", np.asarray(map_mm, float), {"units": "mm"})}
    data.update({k: ("site", np.asarray(v, float)) for k, v in extra.items()})
    return xr.Dataset(data, coords={"lat": ("site", np.asarray(lat, float)),
                                    "lon": ("site", np.linspace(-10, 10, n))})


def _no_history(ds):
    return ds.assign_attrs(history="")


def _theta(model="clm5"):
    names = list(xproda.get_model(model).parameters.names)
    return xr.DataArray(np.full(len(names), 0.5), dims="parameter", coords={"parameter": names})


# ------------------------------------------------------------------------------------------
# the synthetic world is unchanged by the move of its forcing functions to xproda.climate
# ------------------------------------------------------------------------------------------
#: sums (and sums of squares) of the 10-degree world's forcing, computed before the move
_WORLD10_SUMS = {
    "TSOI": (9288443.310638428, 2610126047.6320252),
    "W_SCALAR": (17190.3356571123, 11269.169350207698),
    "O_SCALAR": (30764.536167740822, 29247.7921669625),
    "ALTMAX": (51020.96546031123, 2118509.5407319246),
    "nbedrock": (21864.0, 324072.0),
    "NPP": (0.013902557428967312, 2.4371298836291126e-07),
    "CWD_INPUT": (5025.801979927971, 49571.07362790058),
    "LITR2_INPUT": (14988.429242826936, 214270.93207770042),
    "CELLSAND": (105755.43451956022, 4622898.119018733),
    "FPI_vr": (20823.056752681732, 14644.028862663336),
}


def test_world_forcing_unchanged_by_the_move(world10):
    for name, (s1, s2) in _WORLD10_SUMS.items():
        v = world10[name].values.astype(np.float64)
        np.testing.assert_allclose(np.nansum(v), s1, rtol=1e-12, err_msg=name)
        np.testing.assert_allclose(np.nansum(v**2), s2, rtol=1e-12, err_msg=name)
    from xproda.datasets import world

    assert world.column_forcing is column_forcing  # one implementation


def test_from_climate_reproduces_the_world_forcing(world10):
    # the world's own monthly climate and column state give back the world's forcing
    fpi = world10["FPI_vr"].isel(month=0, layer=0, drop=True).astype(np.float64)
    f = from_climate(world10[["tas", "pr"]], soil=world10, fpi=fpi)
    for k in FORCING_VARIABLES:
        assert f[k].dims == world10[k].dims, k
        np.testing.assert_allclose(f[k].values, world10[k].values, rtol=1e-12, atol=1e-25,
                                   equal_nan=True, err_msg=k)
    assert f.proda.validate(model="clm5") == []
    assert "nbedrock" in f and "comment" not in f["nbedrock"].attrs  # bedrock given


# ------------------------------------------------------------------------------------------
# bioclim reconstruction
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def harmonic_bio():
    rng = np.random.default_rng(3)
    n = 40
    lat = rng.uniform(-55, 75, n)
    t_mean = rng.uniform(-15, 27, n)
    amp = rng.uniform(0.5, 22, n)
    p_ann = rng.uniform(50, 3000, n)
    b = rng.uniform(-0.9, 0.9, n)
    tas, pr = _harmonic(t_mean, amp, lat, p_ann, b)
    bio = bioclim(tas, pr, rng.uniform(5, 15, n))
    ds = xr.Dataset({k: ("site", v) for k, v in bio.items()}, coords={"lat": ("site", lat)})
    return ds, tas, pr


@pytest.mark.parametrize("subset", [
    ("bio4", "bio11", "bio12"),  # what the coarse WorldClim file has (no bio1)
    ("bio1", "bio4", "bio12"),
    ("bio3", "bio7", "bio11", "bio12"),
    ("bio10", "bio11", "bio12"),
])
def test_bioclim_round_trip_temperature(harmonic_bio, subset):
    ds, tas, pr = harmonic_bio
    mc = monthly_climate_from_bioclim(ds[list(subset)])
    assert mc.tas.dims == ("month", "site") and mc.tas.attrs["units"] == "degC"
    np.testing.assert_allclose(mc.tas.values.T, tas, atol=1e-9)
    again = bioclim(mc.tas.values.T, mc.pr.values.T, np.full(tas.shape[0], 10.0))
    for k in ("bio4", "bio11", "bio12"):
        np.testing.assert_allclose(again[k], ds[k].values, rtol=1e-9, atol=1e-9, err_msg=k)
    # without bio15/bio18/bio19: uniform precipitation with the right annual total
    np.testing.assert_allclose(mc.pr.std("month").values, 0.0, atol=1e-9)
    assert "uniform" in mc.attrs["reconstruction"]


@pytest.mark.parametrize("subset", [("bio15", "bio18", "bio19"), ("bio18", "bio19")])
def test_bioclim_round_trip_precipitation(harmonic_bio, subset):
    ds, tas, pr = harmonic_bio
    mc = monthly_climate_from_bioclim(ds[["bio1", "bio4", "bio12", *subset]])
    np.testing.assert_allclose(mc.pr.values.T, pr, rtol=1e-9, atol=1e-9)
    again = bioclim(mc.tas.values.T, mc.pr.values.T, np.full(tas.shape[0], 10.0))
    np.testing.assert_allclose(again["bio15"], ds["bio15"].values, rtol=1e-9)


def test_bioclim_scale_and_hemisphere():
    bio = xr.Dataset({"bio4": ("site", [8000.0, 8000.0]), "bio11": ("site", [-50.0, -50.0]),
                      "bio12": ("site", [600.0, 600.0])},
                     coords={"lat": ("site", [45.0, -45.0])})
    mc = monthly_climate_from_bioclim(bio, temperature_scale=10)  # WorldClim 1.x: degC x 10
    ref = monthly_climate_from_bioclim(bio / xr.Dataset({"bio4": 10, "bio11": 10, "bio12": 1}))
    xr.testing.assert_allclose(mc, ref)
    assert mc.tas.values[:, 0].argmin() + 1 == 1 and mc.tas.values[:, 1].argmin() + 1 == 7
    np.testing.assert_allclose(float(mc.tas[:, 0].std(ddof=1)), 8.0)


def test_site_values_with_default_or_given_amplitude():
    ds = _sites([10.0, 10.0], [800.0, 800.0], [0.0, 60.0])
    mc = monthly_climate_from_bioclim(ds)
    half_range = ((mc.tas.max("month") - mc.tas.min("month")) / 2).values
    np.testing.assert_allclose(half_range, [1.0, 1.0 + 20 * 0.75])  # 1 + 20 sin^2(lat)
    np.testing.assert_allclose(mc.tas.mean("month").values, 10.0)
    assert "ASSUMED seasonal amplitude" in mc.attrs["reconstruction"]
    mc2 = monthly_climate_from_bioclim(ds, amplitude=5.0)
    np.testing.assert_allclose(((mc2.tas.max("month") - mc2.tas.min("month")) / 2).values, 5.0)
    # map in cm is converted
    cm = ds.assign(map=ds["map"].assign_attrs(units="cm") / 10)
    xr.testing.assert_allclose(monthly_climate_from_bioclim(cm).pr, mc.pr)


# ------------------------------------------------------------------------------------------
# physics
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def four_sites():
    # warm north, warm south, cold (permafrost), temperate with bedrock at 0.5 m
    clim = _sites([18.0, 18.0, -12.0, 8.0], [900.0, 900.0, 250.0, 700.0],
                  [40.0, -40.0, 68.0, 50.0], bio4=[700.0, 700.0, 1700.0, 650.0])
    soil = xr.Dataset({"depth_to_bedrock": ("site", [20.0, 20.0, 20.0, 0.5], {"units": "m"}),
                       "sand": ("site", [30.0, 30.0, 50.0, 70.0])})
    return from_climate(clim.drop_vars("maat").assign(bio1=clim["maat"]), soil=soil,
                        include_climate=True)


def test_soil_temperature_damps_and_lags_with_depth(four_sites):
    f = four_sites
    t = f["TSOI"].isel(site=0).values.astype(np.float64)  # [12, 20]
    amp = (t.max(0) - t.min(0)) / 2
    assert np.all(np.diff(amp) < 0) and amp[-1] < 0.05 * amp[0]
    # the warmest month comes later with depth (within the first damping depths)
    peak = [np.angle(np.sum(t[:, k] * np.exp(2j * np.pi * MONTH / 12))) for k in range(15)]
    assert np.all(np.diff(np.unwrap(peak)) > 0)
    # annual mean at the surface ~ air MAT + 1 K (snow-free), geothermal gradient below
    mean = t.mean(0) - KELVIN
    assert abs(mean[0] - (18.0 + 1.0)) < 0.1
    np.testing.assert_allclose(np.diff(mean), 0.025 * np.diff(grid.ZSOI[:20]), atol=2e-5)


def test_hemisphere_phase(four_sites):
    f = four_sites
    tas = f["tas"].values
    assert tas[:, 0].argmin() + 1 == 1 and tas[:, 1].argmin() + 1 == 7
    top = f["TSOI"].isel(layer=0).values
    assert top[:, 0].argmin() + 1 in (1, 2) and top[:, 1].argmin() + 1 in (7, 8)
    # the southern site is the northern one shifted by half a year
    np.testing.assert_allclose(np.roll(f["TSOI"].values[:, :, 0], 6, axis=0),
                               f["TSOI"].values[:, :, 1], rtol=1e-6)


def test_permafrost_and_bedrock(four_sites):
    f = four_sites
    alt = f["ALTMAX_LASTYEAR"].isel(month=0).values
    assert alt[2] < 0.5 * grid.SOIL_DEPTH  # permafrost: shallow active layer
    assert alt[0] > grid.SOIL_DEPTH and alt[1] > grid.SOIL_DEPTH  # thawed to the bottom
    assert (f["ALTMAX"].values[:, 2] <= alt[2] + 1e-12).all()  # running maximum of the year
    nb = f["nbedrock"].isel(month=0).values
    assert list(nb[:3]) == [20, 20, 20] and nb[3] == grid.layer_index(0.5) + 1
    np.testing.assert_allclose(f["CELLSAND"].isel(site=3).values, 70.0)
    assert "comment" not in f["nbedrock"].attrs and "one sand" in f["CELLSAND"].attrs["comment"]
    # litter inputs add up to the Miami NPP (g C m-2 yr-1)
    from xproda.climate import miami_npp

    npp = miami_npp(f["tas"].mean("month"), f["pr"].sum("month")).values
    litter = sum(f[k].sum("month") for k in ("CWD_INPUT", "LITR1_INPUT", "LITR2_INPUT",
                                             "LITR3_INPUT")).values
    np.testing.assert_allclose(litter, npp, rtol=1e-12)
    assert ((f["W_SCALAR"] >= 0) & (f["W_SCALAR"] <= 1)).all()


def test_metadata_and_defaults(four_sites):
    f = four_sites
    for k in FORCING_VARIABLES:
        assert f[k].attrs["units"] == xproda.conventions.forcing_attrs(k)["units"], k
        assert f[k].dims[-1] == "site"
    assert f["TSOI"].dims == ("month", "layer", "site") and f["TSOI"].dtype == np.float32
    assert f["TSOI"].attrs["standard_name"] == "soil_temperature"
    assert f["depth"].attrs["units"] == "m" and list(f["month"].values) == list(range(1, 13))
    np.testing.assert_array_equal(f["lat"].values, [40.0, -40.0, 68.0, 50.0])  # passed through
    assert f.attrs["Conventions"].startswith("CF-")
    for word in ("Miami", "elevation", "amplitude from bio4"):
        assert word in f.attrs["forcing_assumptions"], word
    assert "from_climate" in f.attrs["history"]
    assert f.proda.validate(model="clm5") == [] and f.proda.validate(model="microbial") == []
    # no soil at all: documented defaults, said so
    g = from_climate(_sites([5.0], [500.0], [45.0]))
    assert int(g["nbedrock"].max()) == grid.N_LAYERS
    assert "8.6 m assumed" in g["nbedrock"].attrs["comment"]
    np.testing.assert_allclose(g["CELLSAND"].values, DEFAULTS["sand"])


def test_units_conversion_and_nan_cells():
    tas, pr = _harmonic([10.0, 3.0, 20.0], [8.0, 12.0, 2.0], [45.0, 60.0, 5.0],
                        [700.0, 400.0, 2000.0], [0.3, 0.0, 0.5])
    ds = xr.Dataset({"tas": (("month", "site"), tas.T),
                     "pr": (("month", "site"), pr.T, {"units": "mm month-1"})})
    ref = from_climate(ds)
    # a monthly mean rate times the seconds of that month (365-day year), not of a mean month
    seconds = xr.DataArray([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dims="month") * 86400
    si = ds.assign(tas=(ds.tas + KELVIN).assign_attrs(units="K"),
                   pr=(ds.pr / seconds).assign_attrs(units="kg m-2 s-1"))
    xr.testing.assert_allclose(from_climate(si), ref)
    # a NaN in one cell gives NaN forcing there only
    bad = ds.copy(deep=True)
    bad["tas"][3, 1] = np.nan
    out = from_climate(bad, soil=xr.Dataset({"sand": ("site", [20.0, 30.0, np.nan])}))
    for k in FORCING_VARIABLES:
        v = out[k].values
        assert np.isfinite(v[..., 0]).all() and np.isnan(v[..., 1:]).all(), k
    # numpy mapping input (sites) with latitude given
    m = from_climate({"bio1": [10.0, 3.0], "bio4": [700.0, 1000.0], "bio12": [700.0, 400.0]},
                     latitude=[45.0, 60.0])
    assert m["TSOI"].dims == ("month", "layer", "site") and isinstance(m["TSOI"].data,
                                                                       np.ndarray)


# ------------------------------------------------------------------------------------------
# dask: lazy, chunk invariant, eager == lazy
# ------------------------------------------------------------------------------------------
def test_lazy_and_chunk_invariant(world10):
    clim = world10[["tas", "pr", "elevation"]]
    soil = world10[["sand_0cm", "sand_30cm", "sand_100cm", "depth_to_bedrock"]]
    eager = from_climate(clim, soil=soil)
    with raise_if_dask_computes():
        lazy = from_climate(clim.chunk({"lat": 5, "lon": 7}), soil=soil.chunk({"lat": 5}))
    assert_lazy(lazy[list(FORCING_VARIABLES)])
    xr.testing.assert_identical(_no_history(lazy.compute()), _no_history(eager))
    other = from_climate(clim.chunk({"lat": 18, "lon": 4}), soil=soil).compute()
    xr.testing.assert_identical(_no_history(other), _no_history(eager))
    # bioclim input, lazy
    bio = world10[["bio4", "bio11", "bio12"]]
    with raise_if_dask_computes():
        lazy_bio = from_climate(bio.chunk({"lat": 4, "lon": 9}))
    assert_lazy(lazy_bio[list(FORCING_VARIABLES)])
    xr.testing.assert_identical(_no_history(lazy_bio.compute()), _no_history(from_climate(bio)))


# ------------------------------------------------------------------------------------------
# real data (skipped where ../shared/data is absent)
# ------------------------------------------------------------------------------------------
@pytest.mark.skipif(not SIERRA.exists(), reason="shared data absent")
def test_sierra_transect_site_values():
    site = pd.read_csv(SIERRA)
    # MAAT (degC) and MAP (cm) of the site table; PRISM 800 m values fill the gaps
    maat = site["MAAT"].fillna(site["MAAT_800"]).to_numpy()
    map_cm = site["MAP"].fillna(site["MAP_800"] / 10).to_numpy()
    ds = xr.Dataset(
        {"maat": ("site", maat, {"units": "degC"}), "map": ("site", map_cm, {"units": "cm"}),
         "elevation": ("site", site["elev"].to_numpy(float), {"units": "m"})},
        coords={"site": site["id"].to_numpy(), "lat": ("site", site["y"].to_numpy()),
                "lon": ("site", site["x"].to_numpy())},
    )
    f = from_climate(ds)
    assert f.sizes["site"] == len(site) and list(f["site"].values) == list(site["id"])
    for k in FORCING_VARIABLES:
        assert np.isfinite(f[k].values).all(), k
    top = f["TSOI"].isel(layer=0).mean("month").values - KELVIN
    # MAT + 1 K at the surface, up to ~1 K more where winter snow insulates (cold sites)
    assert (top - maat > 0.9).all() and (top - maat < 2.5).all()
    assert np.corrcoef(top, maat)[0, 1] > 0.98
    assert (f["ALTMAX_LASTYEAR"] > grid.SOIL_DEPTH).all()  # no permafrost in the Sierra
    out = f.proda.steady_state(_theta())
    assert np.isfinite(out["soc_stock"].values).all() and (out["soc_stock"] > 0).all()


@pytest.mark.skipif(not WORLDCLIM.exists(), reason="shared data absent")
def test_coarse_worldclim_forcing_runs_the_model():
    ds = xr.open_dataset(WORLDCLIM).sel(period="current").load()
    with pytest.raises(ValueError, match="temperature_scale=10"):
        from_climate(ds)  # WorldClim 1.x stores temperatures x 10
    f = from_climate(ds, temperature_scale=10)
    assert f["TSOI"].dims == ("month", "layer", "lat", "lon")
    land = np.isfinite(ds["bio12"]) & np.isfinite(ds["bio4"]) & np.isfinite(ds["bio11"])
    assert int(land.sum()) > 2000
    assert np.isfinite(f["TSOI"].values[..., land.values]).all()
    assert np.isnan(f["TSOI"].values[..., ~land.values]).all()
    tsoi = f["TSOI"].where(land).values
    assert 220 < np.nanmin(tsoi) and np.nanmax(tsoi) < 320
    # the kernel accepts it and gives finite SOC on land
    m = xproda.get_model("clm5")
    cols = f.where(land).stack(cell=("lat", "lon")).isel(cell=np.flatnonzero(land.values))
    forcing = {k: cols[k].transpose("cell", ...).values for k in m.required_forcing}
    res = m.steady_state(np.full((cols.sizes["cell"], len(m.parameters)), 0.5), forcing)
    assert np.isfinite(res["soc_stock"]).all() and (res["soc_stock"] > 0).all()
    assert (res["flags"] == 0).mean() > 0.99


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
def test_bad_input_messages():
    ok = _sites([10.0], [500.0], [45.0])
    with pytest.raises(ValueError, match=r"tas \(°C\).*pr \(mm month-1\).*bio1.*maat.*found"):
        from_climate(xr.Dataset({"foo": ("site", [1.0])}))
    with pytest.raises(ValueError, match=r"missing pr \(mm month-1\)"):
        from_climate(xr.Dataset({"tas": (("month", "site"), np.zeros((12, 1)))}))
    with pytest.raises(ValueError, match="'month' dim of length 12"):
        from_climate(xr.Dataset({"tas": (("month", "site"), np.zeros((6, 1))),
                                 "pr": (("month", "site"), np.zeros((6, 1)))}))
    with pytest.raises(ValueError, match=r"annual precipitation: bio12 or map \(mm\)"):
        from_climate(ok.drop_vars("map"))
    with pytest.raises(ValueError, match="annual mean temperature"):
        monthly_climate_from_bioclim(xr.Dataset({"bio4": ("site", [500.0]),
                                                 "bio12": ("site", [500.0])},
                                                coords={"lat": ("site", [10.0])}))
    with pytest.raises(ValueError, match="latitude"):
        from_climate(ok.drop_vars(["lat", "lon"]))
    with pytest.raises(ValueError, match="temperature_scale"):
        from_climate(ok, temperature_scale=0)
    # units are read by pint (xproda.units): inch is converted, unreadable units raise
    with pytest.raises(ValueError, match=r"map: cannot read units 'bananas'.*expected in 'mm'"):
        from_climate(ok.assign(map=ok["map"].assign_attrs(units="bananas")))
    with pytest.raises(ValueError, match=r"sand_0cm.*sand_30cm.*sand_100cm"):
        from_climate(ok, soil=xr.Dataset({"sand_0cm": ("site", [50.0])}))
    with pytest.raises(ValueError, match=r"sand: values up to 150 % outside the plausible "
                                         r"range \[0, 100\] %"):
        from_climate(ok, soil=xr.Dataset({"sand": ("site", [150.0])}))
    with pytest.raises(ValueError, match=r"tas: values up to .* outside the plausible range "
                                         r"\[-90, 60\] degC.* units='K'"):
        tas, pr = _harmonic([285.0], [8.0], [45.0], [500.0], [0.0])
        from_climate(xr.Dataset({"tas": (("month", "site"), tas.T),
                                 "pr": (("month", "site"), pr.T)}))
    with pytest.raises(ValueError, match="apply to bioclimatic or site inputs only"):
        tas, pr = _harmonic([10.0], [8.0], [45.0], [500.0], [0.0])
        from_climate(xr.Dataset({"tas": (("month", "site"), tas.T),
                                 "pr": (("month", "site"), pr.T)}), amplitude=3.0)
    grid_a = xr.Dataset({"bio1": (("lat", "lon"), [[5.0]]), "bio12": (("lat", "lon"), [[5e2]])},
                        coords={"lat": [10.0], "lon": [20.0]})
    with pytest.raises(ValueError, match="same grid"):
        from_climate(grid_a, soil=xr.Dataset({"sand": (("lat", "lon"), [[40.0]])},
                                             coords={"lat": [11.0], "lon": [20.0]}))
    with pytest.raises(TypeError, match="climate must be"):
        from_climate([1, 2, 3])
    with pytest.raises(TypeError, match="npp must be"):
        from_climate(ok, npp=[1.0, 2.0])
