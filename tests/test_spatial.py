"""Tests of xproda.spatial: spatial dims, lon conventions, cell areas, totals, sites, alignment."""

from __future__ import annotations

import dask
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from xproda import spatial
from xproda.testing import raise_if_dask_computes
from xproda.spatial import (
    EARTH_RADIUS,
    align_grids,
    cell_area,
    ensure_crs,
    global_total,
    lat_lon,
    normalize_longitude,
    sample_sites,
    spatial_dims,
    stock_units_factor,
)

try:
    import rioxarray  # noqa: F401  (registers .rio)

    HAS_RIO = True
except ImportError:  # pragma: no cover
    HAS_RIO = False

needs_rio = pytest.mark.skipif(not HAS_RIO, reason="rioxarray not installed")
# rioxarray uses affine's deprecated `*` composition
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

SPHERE = 4 * np.pi * EARTH_RADIUS**2




def global_grid(
    res: float = 2.0,
    *,
    lat_desc: bool = False,
    lon360: bool = True,
    bounds: bool = False,
    extra: dict | None = None,
    chunks: dict | None = None,
    seed: int = 0,
) -> xr.Dataset:
    lat = np.arange(-90 + res / 2, 90, res)
    lon = np.arange(res / 2, 360, res) if lon360 else np.arange(-180 + res / 2, 180, res)
    if lat_desc:
        lat = lat[::-1]
    extra = extra or {}
    shape = tuple(extra.values()) + (lat.size, lon.size)
    rng = np.random.default_rng(seed)
    ds = xr.Dataset(
        {"v": ((*extra, "lat", "lon"), rng.random(shape), {"units": "kg C m-2"})},
        coords={
            "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"}),
        },
    )
    if bounds:
        ds["lat_bnds"] = (("lat", "bnds"), np.stack([lat - res / 2, lat + res / 2], axis=1))
        ds["lon_bnds"] = (("lon", "bnds"), np.stack([lon - res / 2, lon + res / 2], axis=1))
        ds.lat.attrs["bounds"] = "lat_bnds"
        ds.lon.attrs["bounds"] = "lon_bnds"
    if chunks:
        ds = ds.chunk(chunks)
    return ds


# ---------------------------------------------------------------------------------------
# spatial_dims / lat_lon
# ---------------------------------------------------------------------------------------


def test_spatial_dims_common_and_cf_names():
    assert spatial_dims(global_grid()) == ("lat", "lon")
    da = xr.DataArray(np.zeros((12, 3, 4)), dims=("month", "latitude", "longitude"))
    assert spatial_dims(da) == ("latitude", "longitude")
    # dims with arbitrary names identified through CF attrs (axis / projection coords)
    da = xr.DataArray(
        np.zeros((2, 3, 4)),
        dims=("member", "north", "east"),
        coords={
            "north": ("north", np.arange(3.0), {"standard_name": "projection_y_coordinate"}),
            "east": ("east", np.arange(4.0), {"axis": "X"}),
        },
    )
    assert spatial_dims(da) == ("north", "east")
    # 1-D lat/lon coordinates with CF units on odd dim names
    da = xr.DataArray(
        np.zeros((3, 4)),
        dims=("j", "i"),
        coords={
            "la": ("j", [1.0, 2, 3], {"units": "degrees_north"}),
            "lo": ("i", [1.0, 2, 3, 4], {"units": "degrees_east"}),
        },
    )
    assert spatial_dims(da) == ("j", "i")


def test_spatial_dims_nav_lat_curvilinear():
    lat2, lon2 = np.meshgrid(np.linspace(40, 50, 4), np.linspace(0, 10, 5), indexing="ij")
    da = xr.DataArray(
        np.zeros((12, 4, 5)),
        dims=("month", "jj", "ii"),
        coords={
            "nav_lat": (("jj", "ii"), lat2, {"standard_name": "latitude"}),
            "nav_lon": (("jj", "ii"), lon2, {"standard_name": "longitude"}),
        },
    )
    assert spatial_dims(da) == ("jj", "ii")
    assert spatial.discovery.describe_grid(da).kind == "curvilinear"
    lat, lon = lat_lon(da)
    np.testing.assert_array_equal(lat.values, lat2)
    np.testing.assert_array_equal(lon.values, lon2)


@needs_rio
def test_spatial_dims_xy_with_crs_and_unstructured():
    da = xr.DataArray(
        np.zeros((3, 4)), dims=("y", "x"), coords={"y": [0.0, 1e4, 2e4], "x": np.arange(4) * 1e4}
    ).rio.write_crs("EPSG:3035")
    assert spatial_dims(da) == ("y", "x")
    assert spatial.discovery.describe_grid(da).kind == "projected"
    da = xr.DataArray(
        np.zeros((5, 20)),
        dims=("ncol", "layer"),
        coords={"lat": ("ncol", np.arange(5.0)), "lon": ("ncol", np.arange(5.0))},
    )
    assert spatial_dims(da) == ("ncol",)
    assert spatial.discovery.describe_grid(da).kind == "unstructured"


def test_spatial_dims_error_lists_dims():
    da = xr.DataArray(np.zeros((12, 20, 7)), dims=("month", "layer", "pool"))
    with pytest.raises(ValueError, match=r"dims seen \('month', 'layer', 'pool'\)"):
        spatial_dims(da)


@needs_rio
def test_lat_lon_projected_uses_crs():
    import pyproj

    y = np.array([2.5e6, 2.6e6])
    x = np.array([4.0e6, 4.1e6, 4.2e6])
    da = xr.DataArray(np.zeros((2, 3)), coords={"y": y, "x": x}, dims=("y", "x"))
    da = da.rio.write_crs("EPSG:3035")
    lat, lon = lat_lon(da)
    assert lat.dims == ("y", "x") and lat.attrs["units"] == "degrees_north"
    t = pyproj.Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True)
    elon, elat = t.transform(*np.meshgrid(x, y))
    np.testing.assert_allclose(lat.values, elat, atol=1e-9)
    np.testing.assert_allclose(lon.values, elon, atol=1e-9)


@needs_rio
def test_geographic_crs_with_xy_dims_is_latlon():
    da = xr.DataArray(
        np.zeros((3, 4)), dims=("y", "x"), coords={"y": [-10.0, 0, 10], "x": [0.0, 10, 20, 30]}
    ).rio.write_crs("EPSG:4326")
    g = spatial.discovery.describe_grid(da)
    assert g.kind == "latlon" and (g.lat, g.lon) == ("y", "x")


# ---------------------------------------------------------------------------------------
# normalize_longitude
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("res", [1.0, 7.5])
def test_normalize_longitude_round_trip(res):
    ds = global_grid(res, lon360=False, bounds=True)
    a = normalize_longitude(ds, convention="0..360")
    assert a.lon.values.min() >= 0 and a.lon.values.max() < 360
    assert np.all(np.diff(a.lon.values) > 0)
    # bounds follow their centres and stay contiguous
    np.testing.assert_allclose(a.lon_bnds.mean("bnds"), a.lon)
    np.testing.assert_allclose(a.lon_bnds.values[1:, 0], a.lon_bnds.values[:-1, 1])
    # data moved with the coordinate
    xr.testing.assert_identical(a.v.sel(lon=res / 2), ds.v.sel(lon=res / 2))
    b = normalize_longitude(a, convention="-180..180")
    xr.testing.assert_identical(b, ds)


@settings(max_examples=30, deadline=None)
@given(
    nlon=st.integers(2, 90),
    start=st.floats(-540, 540),
    conv=st.sampled_from(["0..360", "-180..180"]),
)
def test_normalize_longitude_property(nlon, start, conv):
    lon = start + np.arange(nlon) * (360.0 / nlon)
    da = xr.DataArray(np.arange(nlon, dtype=float), coords={"lon": lon}, dims="lon")
    out = normalize_longitude(da, convention=conv)
    lo = 0.0 if conv == "0..360" else -180.0
    assert np.all(out.lon.values >= lo) and np.all(out.lon.values < lo + 360)
    assert np.all(np.diff(out.lon.values) > 0)
    # every value keeps its geographic longitude
    moved = spatial.longitude.wrap_longitude(
        out.lon.values - lon[out.values.astype(int)], "-180..180")
    np.testing.assert_allclose(moved, 0, atol=1e-9)
    np.testing.assert_allclose(cell_area(out.expand_dims(lat=[0.0, 1.0])).sum(), cell_area(
        da.expand_dims(lat=[0.0, 1.0])).sum(), rtol=1e-12)


def test_normalize_longitude_unsorted_lazy_and_2d():
    da = xr.DataArray(
        np.arange(4.0) * np.ones((2, 1)), dims=("lat", "lon"),
        coords={"lat": [0.0, 1.0], "lon": [300.0, 10.0, 200.0, 100.0]},
    ).chunk({"lon": 2})
    with raise_if_dask_computes():
        out = normalize_longitude(da)
        nosort = normalize_longitude(da, sort=False)
    assert out.lon.values.tolist() == [-160.0, -60.0, 10.0, 100.0]
    assert out.values[0].tolist() == [2.0, 0.0, 1.0, 3.0]
    assert nosort.lon.values.tolist() == [-60.0, 10.0, -160.0, 100.0]
    lon2 = np.array([[350.0, 10.0], [190.0, 170.0]])
    cur = xr.DataArray(
        np.zeros((2, 2)), dims=("j", "i"),
        coords={"nav_lat": (("j", "i"), np.ones((2, 2)), {"standard_name": "latitude"}),
                "nav_lon": (("j", "i"), lon2, {"standard_name": "longitude"})},
    )
    out = normalize_longitude(cur)
    np.testing.assert_array_equal(out.nav_lon.values, [[-10.0, 10.0], [-170.0, 170.0]])
    with pytest.raises(ValueError, match="convention"):
        normalize_longitude(da, convention="180")


# ---------------------------------------------------------------------------------------
# cell_area
# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("res", [0.5, 1.0, 2.5, 7.2])
@pytest.mark.parametrize("lat_desc", [False, True])
@pytest.mark.parametrize("lon360", [False, True])
@pytest.mark.parametrize("bounds", [False, True])
def test_cell_area_global_sum(res, lat_desc, lon360, bounds):
    ds = global_grid(res, lat_desc=lat_desc, lon360=lon360, bounds=bounds)
    a = cell_area(ds)
    assert a.dims == ("lat", "lon") and a.name == "cell_area"
    assert a.attrs["units"] == "m2" and a.attrs["standard_name"] == "cell_area"
    np.testing.assert_array_equal(a.lat, ds.lat)
    np.testing.assert_allclose(float(a.sum()), SPHERE, rtol=1e-6)
    assert (a > 0).all()
    # DataArray (no bounds variables available) gives the same numbers
    np.testing.assert_allclose(cell_area(ds.v), a, rtol=1e-12)


@settings(max_examples=40, deadline=None)
@given(
    nlat=st.integers(2, 300),
    nlon=st.integers(2, 400),
    lon0=st.floats(-360, 360),
    desc=st.booleans(),
    radius=st.floats(1e3, 1e7),
)
def test_cell_area_global_sum_property(nlat, nlon, lon0, desc, radius):
    dlat, dlon = 180 / nlat, 360 / nlon
    lat = -90 + (np.arange(nlat) + 0.5) * dlat
    lon = lon0 + np.arange(nlon) * dlon
    da = xr.DataArray(
        np.zeros((nlat, nlon)), coords={"lat": lat[::-1] if desc else lat, "lon": lon},
        dims=("lat", "lon"),
    )
    a = cell_area(da, radius=radius)
    np.testing.assert_allclose(float(a.sum()), 4 * np.pi * radius**2, rtol=1e-9)
    # each latitude band matches the analytic band area
    s1, s2 = np.sin(np.deg2rad(lat - dlat / 2)), np.sin(np.deg2rad(lat + dlat / 2))
    band = 2 * np.pi * radius**2 * np.abs(s2 - s1)
    np.testing.assert_allclose(a.sum("lon").values, band[::-1] if desc else band, rtol=1e-9)


def test_cell_area_matches_spec_trapezoid():
    # spec §8.1: trapezoid with R = 6,371,008.8 m on the 0.5 degree grid
    r, d = 6371008.8, 0.5
    ds = global_grid(d)
    a = cell_area(ds, radius=r).isel(lon=0).values
    phi = ds.lat.values
    top = 2 * np.pi * r * np.cos(np.deg2rad(np.abs(phi + d / 2))) / 360 * d
    bot = 2 * np.pi * r * np.cos(np.deg2rad(np.abs(phi - d / 2))) / 360 * d
    trap = (top + bot) * (np.pi * r / 180 * d) / 2
    np.testing.assert_allclose(a, trap, rtol=1e-5)


def test_cell_area_irregular_and_regional():
    lat = np.array([10.0, 12.0, 15.0, 20.0])  # irregular
    lon = np.array([350.0, 355.0, 0.0, 5.0])  # crosses the prime meridian
    da = xr.DataArray(np.zeros((4, 4)), coords={"lat": lat, "lon": lon}, dims=("lat", "lon"))
    a = cell_area(da)
    edges = np.array([9.0, 11.0, 13.5, 17.5, 22.5])
    expect = EARTH_RADIUS**2 * np.deg2rad(5.0) * np.abs(np.diff(np.sin(np.deg2rad(edges))))
    np.testing.assert_allclose(a.values, expect[:, None] * np.ones(4), rtol=1e-12)
    with pytest.raises(ValueError, match="cannot infer cell edges"):
        cell_area(da.isel(lat=[0]))


@needs_rio
def test_cell_area_projected_equal_area():
    dx = dy = 25_000.0
    x = np.arange(-2.0e6, 2.0e6, dx) + dx / 2
    y = np.arange(1.0e6, 6.0e6, dy) + dy / 2
    da = xr.DataArray(np.zeros((y.size, x.size)), coords={"y": y, "x": x}, dims=("y", "x"))
    a = cell_area(da.rio.write_crs("EPSG:6933"))
    assert a.dims == ("y", "x") and "spatial_ref" in a.coords
    np.testing.assert_allclose(a.values, dx * dy, rtol=2e-5)


@needs_rio
def test_cell_area_projected_laea_matches_geod():
    import pyproj

    crs = pyproj.CRS("EPSG:3035")
    dx = 50_000.0
    x = 4.0e6 + dx * np.arange(6)
    y = 3.0e6 + dx * np.arange(5)
    da = xr.DataArray(np.zeros((5, 6)), coords={"y": y, "x": x}, dims=("y", "x")).rio.write_crs(crs)
    a = cell_area(da)
    np.testing.assert_allclose(a.values, dx * dx, rtol=2e-5)  # LAEA is equal-area too
    geod = crs.get_geod()
    t = pyproj.Transformer.from_crs(crs, crs.geodetic_crs, always_xy=True)
    for j, i in [(0, 0), (2, 3), (4, 5)]:
        cx = x[i] + dx / 2 * np.array([-1, 1, 1, -1])
        cy = y[j] + dx / 2 * np.array([-1, -1, 1, 1])
        lon, lat = t.transform(cx, cy)
        ref = abs(geod.polygon_area_perimeter(lon, lat)[0])
        np.testing.assert_allclose(a.values[j, i], ref, rtol=1e-6)


def test_cell_area_curvilinear_close_to_rectilinear():
    lat = np.arange(30.5, 40, 1.0)
    lon = np.arange(10.5, 20, 1.0)
    lat2, lon2 = np.meshgrid(lat, lon, indexing="ij")
    cur = xr.DataArray(
        np.zeros(lat2.shape), dims=("j", "i"),
        coords={"nav_lat": (("j", "i"), lat2, {"standard_name": "latitude"}),
                "nav_lon": (("j", "i"), lon2, {"standard_name": "longitude"})},
    )
    rect = xr.DataArray(np.zeros(lat2.shape), coords={"lat": lat, "lon": lon}, dims=("lat", "lon"))
    np.testing.assert_allclose(cell_area(cur).values, cell_area(rect).values, rtol=1e-3)


def test_cell_area_lazy_input_stays_lazy():
    ds = global_grid(5.0, chunks={"lat": 9})
    with raise_if_dask_computes():
        a = cell_area(ds.v)
    assert isinstance(a.data, np.ndarray)
    # Dataset.chunk also chunks the bounds variables: the area is then lazy, not loaded
    eager = global_grid(5.0, bounds=True, lat_desc=True)
    lazy = eager.chunk({"lat": 9, "lon": 20})
    assert isinstance(lazy.lat_bnds.data, dask.array.Array)
    with raise_if_dask_computes():
        a = cell_area(lazy)
        tot = global_total(lazy.v)
    assert isinstance(a.data, dask.array.Array) and isinstance(tot.data, dask.array.Array)
    xr.testing.assert_allclose(a.compute(), cell_area(eager), rtol=1e-14)
    np.testing.assert_allclose(tot.values, global_total(eager.v).values, rtol=1e-12)


# ---------------------------------------------------------------------------------------
# global_total
# ---------------------------------------------------------------------------------------


def test_global_total_constant_stock():
    ds = global_grid(2.0)
    stock = xr.ones_like(ds.v).assign_attrs(units="kg m-2")
    lf = xr.ones_like(ds.v).rename("landfrac")
    lf.attrs = {"units": "1"}  # ones_like copies the stock's units; a fraction is a number
    tot = global_total(stock, land_fraction=lf)
    np.testing.assert_allclose(float(tot), SPHERE / 1e12, rtol=1e-12)
    assert tot.attrs["units"] == "Pg C" and "long_name" in tot.attrs
    assert tot.dims == ()


@pytest.mark.parametrize(
    ("units", "factor"),
    [("kg m-2", 1.0), ("kg C m-2", 1.0), ("kgC/m2", 1.0), ("kg m**-2", 1.0), ("g m-2", 1e-3),
     ("g C m-2", 1e-3), ("gC m^-2", 1e-3), ("Mg C ha-1", 0.1), ("t ha-1", 0.1)],
)
def test_global_total_units(units, factor):
    ds = global_grid(10.0)
    stock = xr.full_like(ds.v, 2.0).assign_attrs(units=units)
    np.testing.assert_allclose(float(global_total(stock)), 2 * factor * SPHERE / 1e12, rtol=1e-12)
    # explicit stock_units override attrs
    bare = stock.copy()
    bare.attrs = {}
    np.testing.assert_allclose(float(global_total(bare, stock_units=units)),
                               2 * factor * SPHERE / 1e12, rtol=1e-12)


def test_global_total_unit_errors():
    ds = global_grid(10.0)
    with pytest.raises(ValueError, match=r"unsupported carbon-density units 'kg'"):
        global_total(ds.v.assign_attrs(units="kg"))
    bare = ds.v.copy()
    bare.attrs = {}
    with pytest.raises(ValueError, match="'v' has no 'units'"):
        global_total(bare)
    assert stock_units_factor("mg m-2") == pytest.approx(1e-6)


def test_global_total_land_fraction_percent_nan_and_extra_dims():
    ds = global_grid(5.0, extra={"member": 3})
    area = cell_area(ds)
    stock = ds.v
    stock[0, 0, 0] = np.nan  # skipped
    lf = xr.full_like(ds.v.isel(member=0, drop=True), 50.0).assign_attrs(units="%")
    lf[1, 1] = np.nan  # ocean
    tot = global_total(stock, land_fraction=lf)
    assert tot.dims == ("member",)
    w = (area * 0.5).where(lf.notnull(), 0)
    expect = (stock.fillna(0) * w).sum(("lat", "lon")) / 1e12
    np.testing.assert_allclose(tot.values, expect.values, rtol=1e-12)
    # land fraction that is not in [0, 1] without % units is rejected
    with pytest.raises(ValueError, match=r"land_fraction .* \[0, 1\]"):
        global_total(stock, land_fraction=lf.assign_attrs(units="1"))
    # all-NaN slice gives NaN, not 0
    assert np.isnan(float(global_total(stock.where(stock < -1)).isel(member=0)))


def test_global_total_lazy_and_dataset():
    ds = global_grid(5.0, extra={"member": 2}, chunks={"lat": 12, "member": 1})
    ds["landfrac"] = xr.full_like(ds.v.isel(member=0, drop=True), 0.25).assign_attrs(
        standard_name="land_area_fraction", units="1"
    )
    ds["g"] = ds.v.assign_attrs(units="g C m-2")
    with raise_if_dask_computes():
        tot = global_total(ds, land_fraction="land_area_fraction")
        tot_v = global_total(ds.v)
    assert set(tot.data_vars) == {"v", "g"}
    assert isinstance(tot.v.data, dask.array.Array)
    expect = (ds.v * cell_area(ds) * 0.25).sum(("lat", "lon")).compute() / 1e12
    np.testing.assert_allclose(tot.v.values, expect.values, rtol=1e-12)
    np.testing.assert_allclose(tot.g.values, expect.values * 1e-3, rtol=1e-12)
    np.testing.assert_allclose(tot_v.values, expect.values * 4, rtol=1e-12)
    with pytest.raises(ValueError, match="neither a variable nor a CF standard name"):
        global_total(ds, land_fraction="nope")


def test_global_total_rejects_other_grid():
    ds = global_grid(5.0)
    other = global_grid(5.0, lon360=False)
    with pytest.raises(ValueError, match="not on the grid of the stock along 'lon'"):
        global_total(ds.v, land_fraction=xr.ones_like(other.v))


# ---------------------------------------------------------------------------------------
# sample_sites
# ---------------------------------------------------------------------------------------


def _plane(lat_desc=False, lon360=False, chunks=None):
    """A field linear in lat and lon (bilinear interpolation is exact away from the seam)."""
    ds = global_grid(2.0, lat_desc=lat_desc, lon360=lon360, chunks=None)
    lonv = xr.where(ds.lon > 180, ds.lon - 360, ds.lon)
    f = (2 * ds.lat + 0.5 * lonv).transpose("lat", "lon").rename("f")
    return f.chunk(chunks) if chunks else f


SITES = pd.DataFrame(
    {"lat": [10.3, -45.2, 60.9, 0.2], "lon": [20.4, -100.7, 150.1, 5.0]},
    index=pd.Index(["p1", "p2", "p3", "p4"], name="profile_id"),
)


@pytest.mark.parametrize("lat_desc", [False, True])
@pytest.mark.parametrize("lon360", [False, True])
def test_sample_sites_nearest_and_linear(lat_desc, lon360):
    f = _plane(lat_desc, lon360)
    near = sample_sites(f, SITES)
    assert near.dims == ("site",)
    assert near.site.values.tolist() == ["p1", "p2", "p3", "p4"]
    np.testing.assert_array_equal(near.site_lat, SITES.lat)
    # nearest cell centres of the 2-degree grid
    clat = np.floor(SITES.lat.values / 2) * 2 + 1
    clon = np.floor(SITES.lon.values / 2) * 2 + 1
    np.testing.assert_allclose(near.values, 2 * clat + 0.5 * clon)
    np.testing.assert_allclose(near.lat.values, clat)
    lin = sample_sites(f, lat=SITES.lat.values, lon=SITES.lon.values, method="linear")
    assert "site" not in lin.coords
    np.testing.assert_allclose(lin.values, 2 * SITES.lat.values + 0.5 * SITES.lon.values, atol=1e-9)
    np.testing.assert_allclose(lin.lat.values, SITES.lat.values)


def test_sample_sites_lon_wrapping_and_seam():
    f = _plane(lon360=True)
    a = sample_sites(f, lat=[0.5, 0.5], lon=[-100.7, 259.3])
    np.testing.assert_allclose(a.values[0], a.values[1])
    # linear across the seam of a global 0..360 grid: 359 <-> 1 (+360)
    g = xr.DataArray(np.ones((3, 180)) * np.arange(180), coords={"lat": [-2.0, 0, 2],
                     "lon": np.arange(1.0, 360, 2)}, dims=("lat", "lon"))
    v = sample_sites(g, lat=[0.0], lon=[0.0], method="linear")
    np.testing.assert_allclose(v.values, [0.5 * (179 + 0)])


def test_sample_sites_rotated_global_and_seam_crossing_regional_grids():
    f = _plane()  # lon -179..179
    rolled = f.roll(lon=37, roll_coords=True)  # unsorted global axis
    sites = dict(lat=[10.3, -45.2, 0.2], lon=[20.4, 259.3, -179.9])
    for method in ("nearest", "linear"):
        np.testing.assert_allclose(
            sample_sites(rolled, **sites, method=method).values,
            sample_sites(f, **sites, method=method).values,
        )
    reg = xr.DataArray(np.arange(4.0) * np.ones((2, 1)), dims=("lat", "lon"),
                       coords={"lat": [0.0, 1.0], "lon": [357.0, 359.0, 1.0, 3.0]})
    out = sample_sites(reg, lat=[0.0, 0.0, 0.0, 0.0], lon=[-2.2, 0.0, 3.9, 4.1], method="linear")
    np.testing.assert_allclose(out.values, [0.4, 1.5, 3.0, np.nan])
    near = sample_sites(reg, lat=[0.0, 0.0], lon=[-2.2, 355.5])
    np.testing.assert_allclose(near.values, [0.0, np.nan])  # 357.8 -> 357; 355.5 off grid


def test_sample_sites_tolerance_and_extent():
    f = _plane()
    out = sample_sites(f, lat=[10.8, 10.8], lon=[20.4, 20.1], tolerance=0.7)
    assert np.isfinite(out.values[0]) and np.isnan(out.values[1])  # 20.1 is 0.9 from 21
    reg = f.sel(lat=slice(0, 20), lon=slice(0, 30))
    out = sample_sites(reg, lat=[10.0, 25.0, 10.0, 21.0], lon=[10.0, 10.0, 35.0, 15.0],
                       method="linear")
    assert np.isfinite(out.values[0]) and np.isnan(out.values[1:]).all()
    # between last centre (19) and the outer edge (20): constant extrapolation
    inside = sample_sites(reg, lat=[19.8], lon=[15.0], method="linear")
    np.testing.assert_allclose(inside.values, 2 * 19 + 0.5 * 15)


def test_sample_sites_lazy_dataset_and_ids():
    f = _plane(chunks={"lat": 30, "lon": 60})
    ds = xr.Dataset({"f": f, "g": f * 2, "const": ("month", np.arange(12.0))})
    sites = xr.Dataset({"latitude": ("prof", [4.2, -5.05]), "longitude": ("prof", [8.3, 9.0])},
                       coords={"prof": ["a", "b"]})
    with raise_if_dask_computes():
        near = sample_sites(ds, sites, tolerance=0.1)
        lin = sample_sites(ds, sites, method="linear")
    assert isinstance(near.f.data, dask.array.Array) and isinstance(lin.g.data, dask.array.Array)
    assert near.site.values.tolist() == ["a", "b"]
    assert near.const.dims == ("month",)
    expect = 2 * (2 * np.array([4.2, -5.05]) + 0.5 * np.array([8.3, 9]))
    np.testing.assert_allclose(lin.g.values, expect)
    # centres are at odd degrees: site a is 0.8 degrees of latitude from its cell centre
    assert np.isnan(near.f.values[0]) and near.f.values[1] == 2 * -5 + 0.5 * 9


@needs_rio
def test_sample_sites_projected_and_unstructured():
    x = np.arange(4.0e6, 4.5e6, 1e4)
    y = np.arange(2.8e6, 3.2e6, 1e4)
    da = xr.DataArray(np.add.outer(y, x), coords={"y": y, "x": x}, dims=("y", "x"))
    da = da.rio.write_crs("EPSG:3035")
    import pyproj

    t = pyproj.Transformer.from_crs("EPSG:3035", "EPSG:4326", always_xy=True)
    px, py = np.array([4.10e6 + 1234, 4.3e6 - 777]), np.array([2.9e6 + 4321, 3.1e6 + 2])
    lon, lat = t.transform(px, py)
    lin = sample_sites(da, lat=lat, lon=lon, method="linear")
    np.testing.assert_allclose(lin.values, px + py, rtol=1e-9)
    near = sample_sites(da, lat=lat, lon=lon)
    np.testing.assert_allclose(near.values, np.round(px, -4) + np.round(py, -4))
    un = xr.DataArray(np.arange(4.0), dims="ncol",
                      coords={"lat": ("ncol", [0.0, 0, 50, 50]),
                              "lon": ("ncol", [0.0, 180, 0, 180])})
    assert sample_sites(un, lat=[49.0, 1.0], lon=[-179.0, 359.0]).values.tolist() == [3.0, 0.0]
    with pytest.raises(ValueError, match="needs a rectilinear grid"):
        sample_sites(un, lat=[0.0], lon=[0.0], method="linear")


def test_sample_sites_errors():
    f = _plane()
    with pytest.raises(ValueError, match=r"site latitudes must lie in \[-90, 90\]"):
        sample_sites(f, lat=[95.0], lon=[0.0])
    with pytest.raises(ValueError, match="lat/latitude"):
        sample_sites(f, pd.DataFrame({"y": [1.0], "x": [2.0]}))
    with pytest.raises(ValueError, match="method"):
        sample_sites(f, lat=[0.0], lon=[0.0], method="cubic")
    with pytest.raises(ValueError, match="already has a dim 'lat'"):
        sample_sites(f, lat=[0.0], lon=[0.0], site_dim="lat")


# ---------------------------------------------------------------------------------------
# align_grids / ensure_crs
# ---------------------------------------------------------------------------------------


def test_align_grids_same_grid_other_convention_and_order():
    target = global_grid(5.0, lon360=False)
    source = global_grid(5.0, lon360=True, lat_desc=True, extra={"parameter": 2}, seed=3)
    source = source.rename(lat="latitude", lon="longitude")
    with raise_if_dask_computes():
        out = align_grids(source.chunk({"latitude": 6}), target)
    assert isinstance(out.v.data, dask.array.Array)
    assert out.v.dims == ("parameter", "lat", "lon")
    xr.testing.assert_equal(out.lat, target.lat)
    xr.testing.assert_equal(out.lon, target.lon)
    # every value landed on the same geographic position
    back = source.v.sel(latitude=12.5, longitude=360 - 17.5)
    np.testing.assert_array_equal(out.v.sel(lat=12.5, lon=-17.5).values, back.values)
    # round trip restores the source grid
    again = align_grids(out, source)
    np.testing.assert_array_equal(again.v.values, source.v.values)


def test_align_grids_subset_region():
    source = global_grid(1.0)
    target = global_grid(1.0, lon360=False).sel(lat=slice(-20, 20), lon=slice(-30, 30))
    out = align_grids(source, target)
    assert out.sizes == target.sizes
    np.testing.assert_array_equal(out.v.sel(lat=0.5, lon=-0.5), source.v.sel(lat=0.5, lon=359.5))


@needs_rio
def test_align_grids_reproject_with_crs():
    source = global_grid(2.0, lon360=True, extra={"member": 2, "month": 3}).v
    source = source.rio.write_crs("EPSG:4326")
    target = global_grid(5.0, lon360=False).v.rio.write_crs("EPSG:4326")
    out = align_grids(source, target, resampling="nearest")
    # the 0..360 source was put into the target's -180..180 convention before warping
    source = normalize_longitude(source)
    assert out.dims == ("member", "month", "lat", "lon")
    xr.testing.assert_equal(out.lat, target.lat)
    xr.testing.assert_equal(out.lon, target.lon)
    ref = (
        source.isel(member=1, month=2).rename(lat="y", lon="x")
        .rio.reproject_match(target.rename(lat="y", lon="x"))
    )
    np.testing.assert_array_equal(out.isel(member=1, month=2).values, ref.values)
    assert np.isfinite(out.values).all()


@needs_rio
def test_align_grids_projected_reproject():
    x = np.arange(4.0e6, 4.6e6, 2e4) + 1e4
    y = np.arange(2.4e6, 3.2e6, 2e4) + 1e4
    src = xr.DataArray(np.add.outer(y, x), coords={"y": y, "x": x}, dims=("y", "x"), name="z")
    src = src.rio.write_crs("EPSG:3035")
    tgt = xr.DataArray(np.zeros((3, 4)), coords={"lat": [46.0, 47.0, 48.0],
                       "lon": [7.0, 8.0, 9.0, 10.0]}, dims=("lat", "lon"))
    tgt = tgt.rio.write_crs("EPSG:4326")
    out = align_grids(src, tgt, resampling="bilinear")
    assert out.dims == ("lat", "lon")
    import pyproj

    t = pyproj.Transformer.from_crs("EPSG:4326", "EPSG:3035", always_xy=True)
    ex, ey = t.transform(*np.meshgrid(tgt.lon.values, tgt.lat.values))
    np.testing.assert_allclose(out.values, ex + ey, rtol=2e-3)


def test_align_grids_mismatch_without_crs():
    source = global_grid(2.0)
    target = global_grid(5.0)
    with pytest.raises(ValueError, match=r"mismatched grids without CRS: source \(lat: 90 values"):
        align_grids(source, target)


@needs_rio
def test_ensure_crs():
    ds = global_grid(10.0)
    out = ensure_crs(ds)
    assert out.rio.crs.to_epsg() == 4326
    assert ensure_crs(out) is out
    with pytest.raises(ValueError, match="already has the CRS"):
        ensure_crs(out, crs="EPSG:3035")
    xy = xr.DataArray(np.zeros((2, 2)), coords={"y": [0.0, 1], "x": [0.0, 1]}, dims=("y", "x"))
    with pytest.raises(ValueError, match="pass crs="):
        ensure_crs(xy)
    assert ensure_crs(xy, crs="EPSG:3035").rio.crs.to_epsg() == 3035


# ---------------------------------------------------------------------------------------
# land-only layout: to_cells / from_cells
# ---------------------------------------------------------------------------------------
def _grid_ds():
    rng = np.random.default_rng(0)
    lat = np.array([30.0, 20.0, 10.0, 0.0])
    lon = np.array([0.0, 1.0, 2.0, 3.0, 4.0])
    ds = xr.Dataset(
        {"a": (("month", "lat", "lon"), rng.random((12, 4, 5))),
         "flags": (("lat", "lon"), rng.integers(0, 5, (4, 5))),
         "static": ("month", np.arange(12.0))},
        coords={"lat": lat, "lon": lon},
    )
    land = xr.DataArray(rng.random((4, 5)) < 0.5, dims=("lat", "lon"),
                        coords={"lat": lat, "lon": lon})
    land[3, :] = False  # an all-ocean row: from_cells must still restore it
    return ds, land


def test_to_cells_layout_and_round_trip():
    from xproda.spatial import from_cells, to_cells

    ds, land = _grid_ds()
    ds["flags"].encoding["fill_value"] = -1
    cells = to_cells(ds, land, chunk=3)
    n = int(land.sum())
    assert cells.sizes["cell"] == n and cells["a"].dims == ("cell", "month")
    assert cells["lat"].dims == ("cell",) and cells["a"].chunks[0][0] == 3
    iy, ix = np.nonzero(land.values)
    np.testing.assert_array_equal(cells["a"].values, ds["a"].values[:, iy, ix].T)
    np.testing.assert_array_equal(cells["lon"].values, ds.lon.values[ix])
    back = from_cells(cells, land.chunk({"lat": 2, "lon": 5}))
    assert back["a"].dims == ("month", "lat", "lon") and back["a"].chunks is not None
    assert back["a"].chunksizes["lat"] == (2, 2)
    back = back.compute()
    np.testing.assert_array_equal(back["a"].values, ds["a"].where(land).values)
    assert back["flags"].dtype == ds["flags"].dtype
    np.testing.assert_array_equal(back["flags"].values, ds["flags"].where(land, -1).values)
    np.testing.assert_array_equal(back["static"].values, ds["static"].values)
    xr.testing.assert_equal(back["lat"], ds["lat"])
    assert "cell" not in back.dims


def test_cells_lazy():
    from xproda.spatial import from_cells, to_cells
    from xproda.testing import raise_if_dask_computes

    ds, land = _grid_ds()
    lazy = ds.chunk({"lat": 2, "lon": 2})
    with raise_if_dask_computes():
        cells = to_cells(lazy, land, chunk=4)
        back = from_cells(cells, land)
    np.testing.assert_array_equal(back["a"].values, ds["a"].where(land).values)


def test_cells_errors():
    from xproda.spatial import from_cells, to_cells

    ds, land = _grid_ds()
    with pytest.raises(TypeError, match="boolean"):
        to_cells(ds, land.astype(int))
    with pytest.raises(ValueError, match="does not match"):
        to_cells(ds, land.isel(lat=slice(0, 2)))
    cells = to_cells(ds, land)
    other = land.assign_coords(lat=land.lat + 0.5)
    with pytest.raises(ValueError, match="not on the grid"):
        from_cells(cells, other)
    with pytest.raises(ValueError, match="1-D coordinates"):
        from_cells(cells.drop_vars("lat"), land)
