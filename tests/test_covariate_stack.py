"""Tests of xproda.spatial.stack_covariates: covariates from heterogeneous grids on one grid.

Reference values are computed here with NumPy from the cell edges (exact spherical areas of
lat/lon cells, R**2 * dlon * dsin(lat)), independently of the module's weight matrices.
"""

from __future__ import annotations

import contextlib

import dask
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

from xproda import conventions
from xproda.spatial import EARTH_RADIUS, sample_sites, stack_covariates
from xproda.testing import raise_if_dask_computes

rioxarray = pytest.importorskip("rioxarray")
# rioxarray uses affine's deprecated `*` composition
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

LAND_COVER = {"flag_values": [1, 2, 5], "flag_meanings": "forest grassland desert"}


# -------------------------------------------------------------------------------------------
# helpers
# -------------------------------------------------------------------------------------------


def centres(res, lo, hi):
    n = int(round((hi - lo) / res))
    return lo + res * (np.arange(n) + 0.5)


def field(res, lat=(-90, 90), lon=(-180, 180), *, seed=0, nan=0.0, name="v"):
    """A smooth field plus noise on a regular grid (lat ascending, lon as given)."""
    la, lo = centres(res, *lat), centres(res, *lon)
    rng = np.random.default_rng(seed)
    v = (np.cos(np.deg2rad(la))[:, None] * 20 + np.sin(np.deg2rad(lo))[None, :] * 5
         + rng.normal(size=(la.size, lo.size)))
    if nan:
        v[rng.random(v.shape) < nan] = np.nan
    return xr.DataArray(v, dims=("lat", "lon"), coords={"lat": la, "lon": lo}, name=name,
                        attrs={"units": "degC", "long_name": "a test field"})


def target(res, lat=(-90, 90), lon=(-180, 180)):
    return xr.Dataset(coords={"lat": centres(res, *lat), "lon": centres(res, *lon)})


def areas(res, lat, lon):
    """Exact cell areas (m2) of a regular grid, from its edges."""
    ey = np.deg2rad(np.arange(lat[0], lat[1] + res / 2, res))
    nx = int(round((lon[1] - lon[0]) / res))
    return EARTH_RADIUS**2 * np.abs(np.diff(np.sin(ey)))[:, None] * np.full(nx, np.deg2rad(res))


def block(a, fy, fx):
    """Sums over blocks of fy x fx cells."""
    ny, nx = a.shape
    return np.nansum(a.reshape(ny // fy, fy, nx // fx, fx), axis=(1, 3))


def block_mean(v, area, fy, fx):
    """Area-weighted block mean ignoring NaN, and the valid-area fraction of each block."""
    ok = np.isfinite(v)
    num = block(np.where(ok, v * area, 0.0), fy, fx)
    den = block(np.where(ok, area, 0.0), fy, fx)
    with np.errstate(invalid="ignore"):
        return num / den, den / block(area, fy, fx)


def classes_field(res, lat, lon, *, seed=0, nan=0.0):
    la, lo = centres(res, *lat), centres(res, *lon)
    rng = np.random.default_rng(seed)
    v = rng.choice([1.0, 2.0, 5.0], size=(la.size, lo.size), p=[0.5, 0.3, 0.2])
    if nan:
        v[rng.random(v.shape) < nan] = np.nan
    return xr.DataArray(v, dims=("lat", "lon"), coords={"lat": la, "lon": lo},
                        name="land_cover", attrs={**LAND_COVER, "long_name": "land cover"})


# -------------------------------------------------------------------------------------------
# coarsening: area-weighted mean
# -------------------------------------------------------------------------------------------
def test_mean_equals_a_direct_numpy_block_mean_with_nans_and_min_coverage():
    lat, lon = (-60, 60), (-30, 30)
    src = field(0.25, lat, lon, nan=0.4)
    a = areas(0.25, lat, lon)
    ref, cover = block_mean(src.values, a, 4, 4)
    assert 0 < (cover < 0.5).sum() and (cover < 1).sum() > (cover < 0.5).sum()  # a real test
    for mc in (0.0, 0.5, 0.8):
        out = stack_covariates({"v": src}, target(1.0, lat, lon), min_coverage=mc)["v"].values
        want = np.where(cover >= mc, ref, np.nan)
        np.testing.assert_allclose(out, want, rtol=1e-12, atol=0)
        assert np.array_equal(np.isnan(out), np.isnan(want))
    # min_coverage=1 keeps exactly the fully valid cells (no rounding loss)
    full = stack_covariates({"v": src.fillna(3.0)}, target(1.0, lat, lon), min_coverage=1.0)
    assert np.isfinite(full["v"].values).all()
    # the weights are areas, not counts: a plain block mean differs at high latitude
    plain = np.nanmean(src.values.reshape(120, 4, 60, 4), axis=(1, 3))
    assert np.nanmax(np.abs(plain - ref)) > 1e-3


@pytest.mark.parametrize("res", [1.0, 0.7])
def test_coarsening_conserves_the_area_integral(res):
    """0.25 deg onto 1 deg (nesting) and 0.7 deg (not nesting): integral of value * area."""
    lat, lon = (-28, 28), (0, 56)
    src = field(0.25, lat, lon, nan=0.3, seed=3)
    a = areas(0.25, lat, lon)
    valid = src.notnull().astype(float).rename("valid")
    stack = stack_covariates({"v": src, "valid": valid}, target(res, lat, lon), min_coverage=0)
    t_area = areas(res, lat, lon)
    # the mean of the valid indicator (no NaN) is the valid fraction of the target cell
    valid_area = stack["valid"].values * t_area
    total = np.nansum(stack["v"].values * valid_area)
    np.testing.assert_allclose(total, np.nansum(src.values * a), rtol=1e-12)
    np.testing.assert_allclose(valid_area.sum(), (a * np.isfinite(src.values)).sum(),
                               rtol=1e-12)
    # and without NaN: the covered area is the target cell area
    dense = stack_covariates({"v": src.fillna(1.0)}, target(res, lat, lon))["v"].values
    np.testing.assert_allclose((dense * t_area).sum(), (src.fillna(1.0).values * a).sum(),
                               rtol=1e-12)
    assert stack["v"].attrs["regrid_method"] == "mean"


@settings(max_examples=15, deadline=None)
@given(fy=st.integers(2, 5), fx=st.integers(2, 5), tres=st.sampled_from([1.0, 2.0, 3.0]),
       lat0=st.integers(-80, 40), seed=st.integers(0, 2**16), nan=st.floats(0.0, 0.6))
def test_conservation_for_random_nesting_factors_and_fields(fy, fx, tres, lat0, seed, nan):
    ny, nx = 8, 10
    lat, lon = (lat0, lat0 + ny * tres), (-170.0, -170.0 + nx * tres)
    la = centres(tres / fy, *lat)
    lo = centres(tres / fx, *lon)
    rng = np.random.default_rng(seed)
    v = rng.lognormal(size=(la.size, lo.size))
    v[rng.random(v.shape) < nan] = np.nan
    src = xr.DataArray(v, dims=("lat", "lon"), coords={"lat": la, "lon": lo})
    out = stack_covariates({"v": src}, target(tres, lat, lon), min_coverage=0)["v"].values
    ey = np.deg2rad(np.linspace(lat[0], lat[1], la.size + 1))
    a = EARTH_RADIUS**2 * np.diff(np.sin(ey))[:, None] * np.full(lo.size, np.deg2rad(tres / fx))
    ref, _ = block_mean(v, a, fy, fx)
    np.testing.assert_allclose(out, ref, rtol=1e-11)
    valid_area = block(np.where(np.isfinite(v), a, 0.0), fy, fx)
    np.testing.assert_allclose(np.nansum(out * valid_area), np.nansum(v * a), rtol=1e-11)


# -------------------------------------------------------------------------------------------
# laziness and chunks
# -------------------------------------------------------------------------------------------
def test_nothing_is_computed_while_the_stack_is_built():
    lat, lon = (-40, 40), (0, 60)
    fine = field(0.25, lat, lon, nan=0.1).chunk({"lat": 60, "lon": 70})
    coarse = field(4.0, lat, lon, seed=1).chunk({"lat": 5})
    cover = classes_field(0.5, lat, lon, nan=0.1).chunk({"lat": 33})
    tgt = target(2.0, lat, lon)
    tgt["mask"] = xr.zeros_like(tgt.lat * tgt.lon).chunk({"lat": 15, "lon": 10})
    with raise_if_dask_computes():
        stack = stack_covariates(
            {"fine": fine, "coarse": coarse, "smooth": coarse, "cover": cover}, tgt,
            categorical=["cover"], method={"smooth": "linear"},
        )
        codes = stack_covariates({"cover": cover}, tgt, categorical={"cover": "majority"},
                                 encode="codes")
    assert all(v.chunks is not None for v in stack.data_vars.values())
    assert stack.chunksizes == {"lat": (15, 15, 10), "lon": (10, 10, 10)}
    assert sorted(stack.data_vars) == ["coarse", "cover_1", "cover_2", "cover_5", "fine",
                                       "smooth"]
    methods = {k: v.attrs["regrid_method"] for k, v in stack.data_vars.items()}
    assert methods == {"fine": "mean", "coarse": "nearest", "smooth": "linear",
                       "cover_1": "majority", "cover_2": "majority", "cover_5": "majority"}
    computed = stack.compute()
    assert np.isfinite(computed["fine"]).all() and np.isfinite(computed["coarse"]).all()
    assert np.isfinite(codes["cover"].compute()).all()


def test_results_do_not_depend_on_the_chunks():
    lat, lon = (-40, 40), (-30, 30)
    src = field(0.25, lat, lon, nan=0.2)
    coarse = field(3.0, lat, lon, nan=0.1, seed=2)
    cover = classes_field(0.5, lat, lon, nan=0.1)
    tgt = target(1.0, lat, lon)
    kw = {"categorical": ["cover"], "method": {"smooth": "linear"}}
    ref = stack_covariates({"v": src, "c": coarse, "smooth": coarse, "cover": cover}, tgt, **kw)
    for sc, tc in [({"lat": 37, "lon": 50}, {"lat": 7, "lon": 11}),
                   ({"lat": 100, "lon": 23}, None), ({"lat": -1, "lon": 9}, {"lat": 80})]:
        t = tgt.assign(m=(tgt.lat * tgt.lon).chunk(tc)) if tc else tgt
        srcs = {"v": src.chunk(sc), "c": coarse.chunk({"lat": 4}),
                "smooth": coarse.chunk({"lon": 3}), "cover": cover.chunk(sc)}
        out = stack_covariates(srcs, t, **kw)
        if tc:
            assert out["v"].chunksizes["lat"] == t["m"].chunksizes["lat"]
        out = out.compute()
        for k in ref.data_vars:
            np.testing.assert_allclose(out[k].values, ref[k].values, rtol=1e-12, atol=1e-12,
                                       err_msg=k)
            assert np.array_equal(np.isnan(out[k].values), np.isnan(ref[k].values)), k


# -------------------------------------------------------------------------------------------
# mixed inputs
# -------------------------------------------------------------------------------------------
@pytest.mark.filterwarnings("ignore:Consolidated metadata is currently not part:UserWarning")
def test_mixed_conventions_names_and_files_give_the_same_stack(tmp_path):
    base = field(0.5)  # global, lat ascending, lon -180..180
    lon360 = base.assign_coords(lon=base.lon % 360).sortby("lon")
    desc = base.isel(lat=slice(None, None, -1))
    named = base.rename(lat="latitude", lon="longitude")
    tif = tmp_path / "elev.tif"
    geo = base.isel(lat=slice(None, None, -1)).rename(lat="y", lon="x")
    geo.rio.write_crs("EPSG:4326").rio.to_raster(tif)
    nc = tmp_path / "v.nc"
    lon360.to_dataset(name="v").to_netcdf(nc)
    zarr = tmp_path / "v.zarr"
    named.to_dataset(name="v").chunk({"latitude": 90}).to_zarr(zarr, zarr_format=3)
    tgt = target(2.0, (-60, 60), (-180, 180))
    stack = stack_covariates(
        {"base": base, "lon360": lon360, "desc": desc, "named": named, "tif": tif, "nc": nc,
         "zarr": str(zarr)}, tgt)
    ref, _ = block_mean(base.values[60:300], areas(0.5, (-60, 60), (-180, 180)), 4, 4)
    for k in stack.data_vars:
        np.testing.assert_allclose(stack[k].values, ref, rtol=1e-9, err_msg=k)
        assert stack[k].dims == ("lat", "lon")
    assert stack["tif"].attrs["source"] == str(tif)
    assert stack["nc"].attrs["source"] == str(nc) and stack["base"].attrs["source"] == "in-memory"
    assert stack["zarr"].attrs["source_variable"] == "v"
    assert stack["tif"].attrs["source_variable"] == "elev"
    # the file sources are opened lazily
    assert all(stack[k].chunks is not None for k in ("tif", "nc", "zarr"))
    # a target in 0..360 with descending latitudes: the same values, in its order
    t2 = target(2.0, (-60, 60), (0, 360)).isel(lat=slice(None, None, -1))
    other = stack_covariates({"desc": desc, "tif": tif}, t2)
    want = stack["base"].assign_coords(lon=stack.lon % 360).sortby("lon").isel(
        lat=slice(None, None, -1))
    for k in other.data_vars:
        np.testing.assert_allclose(other[k].values, want.values, rtol=1e-9)
        np.testing.assert_array_equal(other[k].lon.values, t2.lon.values)


def test_coarser_sources_nearest_and_linear_across_the_dateline():
    src = field(5.0, seed=4)  # global, coarser than the 1 deg target
    src360 = src.assign_coords(lon=src.lon % 360).sortby("lon")
    tgt = target(1.0, (-20, 20), (170, 190))  # crosses the dateline (0..360 convention)
    out = stack_covariates({"near": src360, "lin": src}, tgt, method={"lin": "linear"})
    # nearest: the 5 deg cell holding the target centre
    iy = np.floor((tgt.lat.values + 90) / 5).astype(int)
    ix = np.floor(((tgt.lon.values + 180) % 360) / 5).astype(int)
    np.testing.assert_array_equal(out["near"].values, src.values[np.ix_(iy, ix)])
    assert out["near"].attrs["regrid_method"] == "nearest"
    # linear: bilinear between the centres, wrapping round at 180
    lo = ((tgt.lon.values + 180) % 360) - 180
    want = np.empty((tgt.lat.size, tgt.lon.size))
    ext = np.concatenate([src.values, src.values[:, :1]], axis=1)
    elon = np.append(src.lon.values, src.lon.values[0] + 360)
    for j, x in enumerate(np.where(lo < elon[0], lo + 360, lo)):
        col = np.array([np.interp(x, elon, ext[i]) for i in range(src.lat.size)])
        want[:, j] = np.interp(tgt.lat.values, src.lat.values, col)
    np.testing.assert_allclose(out["lin"].values, want, rtol=1e-12)
    # a target cell centre beyond the source's outer edge is NaN
    regional = field(5.0, (-20, 20), (0, 40))
    edge = stack_covariates({"r": regional}, target(1.0, (-25, 25), (0, 40)))["r"]
    assert np.isnan(edge.sel(lat=slice(-25, -20))).all()
    assert np.isfinite(edge.sel(lat=slice(-20, 20))).all()


def test_a_projected_source_is_reprojected_with_average():
    x = np.arange(-1.0e6, 1.0e6, 2.5e4) + 1.25e4
    y = np.arange(1.0e6, -1.0e6, -2.5e4) - 1.25e4
    da = xr.DataArray(np.full((y.size, x.size), 7.0), dims=("y", "x"),
                      coords={"y": y, "x": x}).rio.write_crs("EPSG:6933")
    out = stack_covariates({"proj": da}, target(1.0, (-20, 20), (-20, 20)))["proj"]
    assert out.attrs["regrid_method"].startswith("mean (rioxarray reproject, average")
    assert "6933" in out.attrs["source_crs"]
    inner = out.sel(lat=slice(-5, 5), lon=slice(-5, 5))
    np.testing.assert_allclose(inner.values, 7.0)
    assert np.isnan(out.sel(lon=slice(15, 20))).all()  # outside the source
    assert out.attrs["source_resolution"] == [2.5e4, 2.5e4]
    assert out.attrs["source_resolution_units"] == "metre"
    # categorical: the mode, one-hot (0/1) without the source's flag attributes
    rng = np.random.default_rng(0)
    lc = da.copy(data=rng.choice([1, 2, 5], size=da.shape).astype(np.int16))
    lc.attrs = dict(LAND_COVER)
    stack = stack_covariates({"lc": lc}, target(1.0, (-20, 20), (-20, 20)), categorical=["lc"])
    frac = np.stack([stack[f"lc_{c}"].values for c in (1, 2, 5)])
    covered = np.isfinite(frac[0])
    assert covered.sum() > 50 and set(np.unique(frac[:, covered])) == {0.0, 1.0}
    np.testing.assert_array_equal(frac[:, covered].sum(0), 1.0)
    assert "flag_values" not in stack["lc_1"].attrs
    assert stack["lc_1"].attrs["regrid_method"] == "majority (rioxarray reproject, mode)"


# -------------------------------------------------------------------------------------------
# categorical
# -------------------------------------------------------------------------------------------
def test_categorical_fractions_majority_and_codes():
    lat, lon = (-50, 50), (10, 40)
    cover = classes_field(0.25, lat, lon, nan=0.3, seed=5)
    a = areas(0.25, lat, lon)
    tgt = target(1.0, lat, lon)
    onehot = stack_covariates({"lc": cover}, tgt, categorical=["lc"], min_coverage=0.6)
    codes = stack_covariates({"lc": cover}, tgt, categorical={"lc": "majority"},
                             encode="codes", min_coverage=0.6)
    frac = np.stack([onehot[f"lc_{c}"].values for c in (1, 2, 5)])
    ok = np.isfinite(v := cover.values)
    valid = block(np.where(ok, a, 0.0), 4, 4)
    cov = valid / block(a, 4, 4)
    for k, c in enumerate((1, 2, 5)):
        want = block(np.where(v == c, a, 0.0), 4, 4) / valid
        np.testing.assert_allclose(frac[k], np.where(cov >= 0.6, want, np.nan), rtol=1e-12)
    covered = np.isfinite(frac[0])
    assert 0 < (~covered).sum() < covered.sum()
    np.testing.assert_allclose(frac[:, covered].sum(axis=0), 1.0, rtol=1e-12)
    maj = codes["lc"].values
    np.testing.assert_array_equal(maj[covered], np.array([1, 2, 5])[frac[:, covered].argmax(0)])
    assert np.isnan(maj[~covered]).all()
    # labels and classes in the attrs
    att = codes["lc"].attrs
    assert list(att["flag_values"]) == [1, 2, 5] and att["flag_meanings"] == LAND_COVER[
        "flag_meanings"]
    assert att["long_name"] == "land cover" and att["regrid_method"] == "majority"
    f2 = onehot["lc_2"].attrs
    assert f2["class_value"] == 2 and f2["class_label"] == "grassland"
    assert f2["units"] == "1" and f2["classes"] == [1, 2, 5]
    assert f2["long_name"] == conventions.attrs(
        "class_fraction", section="spatial", fields={"label": "lc class 2 (grassland)"}
    )["long_name"]


def test_categorical_nearest_from_a_coarse_source_and_classes_from_the_data():
    lat, lon = (-30, 30), (0, 30)
    cover = classes_field(5.0, lat, lon, seed=6).astype(np.int32)
    cover.attrs = {}  # classes from the data
    tgt = target(1.0, lat, lon)
    out = stack_covariates({"lc": cover}, tgt, categorical=["lc"])
    assert sorted(out.data_vars) == ["lc_1", "lc_2", "lc_5"]
    frac = np.stack([out[f"lc_{c}"].values for c in (1, 2, 5)])
    assert set(np.unique(frac)) <= {0.0, 1.0} and (frac.sum(0) == 1).all()
    iy, ix = (np.floor((tgt.lat.values + 30) / 5).astype(int),
              np.floor(tgt.lon.values / 5).astype(int))
    want = cover.values[np.ix_(iy, ix)]
    np.testing.assert_array_equal(np.array([1, 2, 5])[frac.argmax(0)], want)
    assert out["lc_5"].attrs["regrid_method"] == "nearest"
    assert out["lc_5"].attrs["class_labels"] == "1 2 5"


# -------------------------------------------------------------------------------------------
# datasets, attributes, sites
# -------------------------------------------------------------------------------------------
def test_dataset_sources_provenance_and_history():
    lat, lon = (-20, 20), (0, 20)
    ds = xr.Dataset({"clay": field(0.5, lat, lon), "sand": field(0.5, lat, lon, seed=9),
                     "monthly": field(0.5, lat, lon).expand_dims(month=np.arange(1, 13))})
    ds["sand"].attrs = {"units": "%", "long_name": "sand content", "comment": "not kept"}
    coarse = field(2.0, lat, lon).assign_attrs(comment="not kept", scale_factor=2.0)
    stack = stack_covariates({"soil": ds, "t": field(0.25, lat, lon), "c": coarse},
                             target(1.0, lat, lon))
    assert sorted(stack.data_vars) == ["c", "soil_clay", "soil_monthly", "soil_sand", "t"]
    assert set(stack["c"].attrs) == {"units", "long_name", "source", "source_variable",
                                     "source_resolution", "source_resolution_units",
                                     "regrid_method"}
    assert stack["soil_monthly"].dims == ("month", "lat", "lon")
    np.testing.assert_allclose(stack["soil_monthly"].isel(month=3), stack["soil_clay"])
    att = stack["soil_sand"].attrs
    assert {k: att[k] for k in ("units", "long_name", "source", "source_variable")} == {
        "units": "%", "long_name": "sand content", "source": "in-memory",
        "source_variable": "sand"}
    assert "comment" not in att
    assert att["source_resolution"] == [0.5, 0.5] and att["source_resolution_units"] == "degree"
    assert att["regrid_method"] == "mean" and att["min_coverage"] == 0.5
    assert stack["t"].attrs["source_resolution"] == [0.25, 0.25]
    hist = stack.attrs["history"]
    assert "stack_covariates" in hist and "soil_sand <- in-memory:sand (mean)" in hist
    assert "t <- in-memory:v (mean)" in hist


def test_sample_sites_works_on_the_stack():
    lat, lon = (-20, 20), (0, 20)
    stack = stack_covariates({"v": field(0.25, lat, lon)}, target(1.0, lat, lon))
    at = sample_sites(stack, lat=[0.2, -19.9, 30.0], lon=[10.4, 0.1, 5.0])
    assert at["v"].dims == ("site",)
    np.testing.assert_allclose(at["v"].values[:2],
                               [stack["v"].sel(lat=0.5, lon=10.5), stack["v"].isel(lat=0, lon=0)])
    assert np.isnan(at["v"].values[2])


# -------------------------------------------------------------------------------------------
# errors
# -------------------------------------------------------------------------------------------
def test_errors_name_the_source_and_what_was_expected():
    tgt = target(1.0, (-10, 10), (0, 10))
    src = field(0.25, (-10, 10), (0, 10))
    with pytest.raises(ValueError, match=r"source 'bad' \(in-memory\): expected horizontal "
                                         r"\(spatial\) dims.*dims seen \('band', 'k'\)"):
        stack_covariates({"bad": xr.DataArray(np.zeros((2, 3)), dims=("band", "k"))}, tgt)
    with pytest.raises(ValueError, match=r"categorical source 'lc' variable 'v': expected "
                                         r"integer class codes, found non-integer values"):
        stack_covariates({"lc": src}, tgt, categorical=["lc"])
    with pytest.raises(ValueError, match=r"categorical source 'lc'.*found dtype <U\d+"):
        stack_covariates({"lc": src.astype(str)}, tgt, categorical=["lc"])
    with pytest.raises(ValueError, match=r"unknown method 'cubic' for the continuous variable "
                                         r"'v'.*\('mean', 'nearest', 'linear'\)"):
        stack_covariates({"v": src}, tgt, method={"v": "cubic"})
    with pytest.raises(ValueError, match=r"unknown method 'mean' for the categorical"):
        stack_covariates({"v": src.round()}, tgt, categorical={"v": "mean"})
    with pytest.raises(KeyError, match=r"categorical: \['nope'\] match no source.*\['v'\]"):
        stack_covariates({"v": src}, tgt, categorical=["nope"])
    with pytest.raises(ValueError, match=r"target: expected a geographic grid with 1-D "
                                         r"latitude/longitude.*dims seen \('a', 'b'\)"):
        stack_covariates({"v": src}, xr.Dataset(coords={"a": [1, 2], "b": [1, 2]}))
    proj = xr.Dataset(coords={"y": [0.0, 1e5], "x": [0.0, 1e5]}).rio.write_crs("EPSG:3857")
    with pytest.raises(ValueError, match=r"target: expected .*found a projected grid"):
        stack_covariates({"v": src}, proj)
    far = target(1.0, (40, 50), (100, 110))
    with pytest.raises(ValueError, match=r"source 'v' \(in-memory\) does not overlap the target: "
                                         r"source extent lat \[-10, 10\], lon \[0, 10\], "
                                         r"target extent lat \[40, 50\], lon \[100, 110\]"):
        stack_covariates({"v": src}, far)
    with pytest.raises(ValueError, match=r"'c' \(in-memory\) does not overlap the target"):
        stack_covariates({"c": field(5.0, (-10, 10), (0, 10))}, far)
    with pytest.raises(ValueError, match="encode must be 'onehot' or 'codes'"):
        stack_covariates({"v": src}, tgt, encode="dummy")
    with pytest.raises(ValueError, match=r"two covariates are named 'v_1'"):
        stack_covariates({"v": src.round().clip(1, 1), "v_1": src}, tgt, categorical=["v"])


# -------------------------------------------------------------------------------------------
# exact nesting: by blocks (block_mean, block_fractions, block_majority)
# -------------------------------------------------------------------------------------------
@contextlib.contextmanager
def counting(monkeypatch, *names):
    """Count the calls of public block reductions made by stack_covariates."""
    from xproda.spatial import stack as module

    calls = dict.fromkeys(names, 0)
    for name in names:
        def spy(*args, _f=getattr(module, name), _n=name, **kwargs):
            calls[_n] += 1
            return _f(*args, **kwargs)

        monkeypatch.setattr(module, name, spy)
    yield calls


def assert_same_stack(a, b):
    assert sorted(a.data_vars) == sorted(b.data_vars)
    for k in a.data_vars:
        assert a[k].dims == b[k].dims, k
        np.testing.assert_allclose(a[k].values, b[k].values, rtol=1e-12, atol=1e-12, err_msg=k)
        assert np.array_equal(np.isnan(a[k].values), np.isnan(b[k].values)), k
        assert a[k].attrs == b[k].attrs, k
        xr.testing.assert_identical(a[k].coords.to_dataset(), b[k].coords.to_dataset())


def global_cases():
    g = field(1.0, nan=0.2)
    return {"g": g, "desc": g.isel(lat=slice(None, None, -1)),
            "lon360": g.assign_coords(lon=g.lon % 360).sortby("lon"),
            "dask": g.chunk({"lat": 37, "lon": 51})}


NESTED = {
    # name: (sources, target, keyword arguments)
    "regional, NaN": (lambda: {"v": field(0.25, (-60, 60), (-30, 30), nan=0.4)},
                      lambda: target(1.0, (-60, 60), (-30, 30)), {}),
    "conventions and order": (global_cases,
                              lambda: target(2.0, (-60, 60), (0, 360)).isel(
                                  lat=slice(None, None, -1)), {}),
    "across the dateline": (global_cases, lambda: target(2.0, (-20, 20), (170, 190)), {}),
    "target beyond the source": (
        lambda: {"v": field(0.25, (-60, 60), (-30, 30), nan=0.3),
                 "d": field(0.25, (-60, 60), (-30, 30), nan=0.3).chunk({"lat": 70})},
        lambda: target(1.0, (-70, 70), (-40, 50)), {}),
    "rectangular factors, extra dims": (
        lambda: {"m": field(0.5, (-30, 30), (0, 60), nan=0.3).expand_dims(
            month=np.arange(1, 4)).interp(lon=centres(0.25, 0, 60), method="nearest",
                                          kwargs={"fill_value": "extrapolate"})},
        lambda: target(1.5, (-30, 30), (0, 60)), {}),
    "categorical one-hot": (
        lambda: {"lc": classes_field(0.25, (-50, 50), (10, 40), nan=0.3, seed=5),
                 "lcd": classes_field(0.25, (-50, 50), (10, 40), seed=6).chunk({"lon": 45})},
        lambda: target(1.0, (-52, 50), (10, 41)), {"categorical": ["lc", "lcd"]}),
    "categorical codes": (
        lambda: {"lc": classes_field(0.5, (-50, 50), (10, 40), nan=0.03, seed=5)},
        lambda: target(2.5, (-50, 50), (10, 40)),
        {"categorical": ["lc"], "encode": "codes"}),
}


@pytest.mark.parametrize("min_coverage", [0.0, 0.5, 1.0])
@pytest.mark.parametrize("case", sorted(NESTED))
def test_nested_sources_by_blocks_equal_the_overlap_weights(monkeypatch, case, min_coverage):
    make_sources, make_target, kw = NESTED[case]
    sources, tgt = make_sources(), make_target()
    general = stack_covariates(sources, tgt, min_coverage=min_coverage, exact_nesting=False,
                               **kw)
    with counting(monkeypatch, "block_mean", "block_fractions") as calls, \
            raise_if_dask_computes():
        blocks = stack_covariates(sources, tgt, min_coverage=min_coverage, **kw)
    assert calls["block_mean" if "categorical" not in kw else "block_fractions"] == \
        len(sources)
    assert_same_stack(blocks.compute(), general)
    values = general.to_array().values
    assert np.isfinite(values).any() and (min_coverage < 1 or np.isnan(values).any())


def test_grids_that_do_not_nest_use_the_overlap_weights(monkeypatch):
    src = field(0.25, (-30, 30), (0, 30))
    shifted = src.assign_coords(lon=src.lon + 0.1)  # edges not on the target's
    irregular = src.isel(lat=np.r_[0:100, 101:240])  # one row missing
    with counting(monkeypatch, "block_mean") as calls:
        out = stack_covariates({"v": src}, target(0.7, (-30, 30), (0, 30)))  # 2.8 cells
        stack_covariates({"shifted": shifted, "irregular": irregular},
                         target(1.0, (-30, 30), (0, 30)))
    assert calls["block_mean"] == 0 and np.isfinite(out["v"]).all()
    with counting(monkeypatch, "block_mean") as calls:
        stack_covariates({"v": src}, target(1.0, (-30, 30), (0, 30)))
    assert calls["block_mean"] == 1


def test_block_mean_weights_rows_by_area_with_nan_std_and_coverage():
    from xproda import spatial

    lat, lon = (-80, 70), (10, 40)
    src = field(0.5, lat, lon, nan=0.35, seed=7)
    v, a = src.values, areas(0.5, lat, lon)
    edges = np.arange(lat[0], lat[1] + 0.25, 0.5)
    ref, cover = block_mean(v, a, 3, 4)
    for mc in (0.0, 0.6):
        want = np.where(cover >= mc, ref, np.nan)
        got = spatial.block_mean(v, (3, 4), lat=edges, min_coverage=mc)
        np.testing.assert_allclose(got, want, rtol=1e-12)
        assert np.array_equal(np.isnan(got), np.isnan(want))
    # descending rows, bounds instead of edges: the same
    bnds = np.stack([edges[:-1], edges[1:]], -1)[::-1]
    np.testing.assert_allclose(spatial.block_mean(v[::-1], (3, 4), lat=bnds), ref[::-1],
                               rtol=1e-12)
    # the area-weighted (population) standard deviation within each block
    mean, sd = spatial.block_mean(v, (3, 4), lat=edges, std=True)
    dev = np.where(np.isfinite(v), (v - np.repeat(np.repeat(ref, 3, 0), 4, 1)) ** 2, np.nan)
    np.testing.assert_allclose(sd, np.sqrt(block_mean(dev, a, 3, 4)[0]), rtol=1e-10)
    np.testing.assert_allclose(mean, ref, rtol=1e-12)
    # constant blocks: spread exactly 0 (no cancellation)
    _, flat = spatial.block_mean(np.full((6, 8), 1234.5678), 2, lat=np.linspace(0, 60, 7),
                                 std=True)
    assert (flat == 0).all()
    assert np.isnan(spatial.block_mean(np.full((2, 2), np.nan), 2, lat=[0, 1, 2])).all()


def test_block_reductions_of_dask_data_are_lazy_and_chunk_invariant():
    from xproda import spatial

    lat, lon = (-60, 60), (0, 30)
    v = np.stack([field(0.25, lat, lon, nan=0.3, seed=s).values for s in range(2)])
    c = classes_field(0.25, lat, lon, nan=0.2).values
    edges = np.arange(lat[0], lat[1] + 0.1, 0.25)
    kw = {"lat": edges, "min_coverage": 0.4}
    ref_mean, ref_sd = spatial.block_mean(v, (4, 3), std=True, **kw)
    ref_frac = spatial.block_fractions(c, 4, classes=[1, 2, 5], **kw)
    ref_maj = spatial.block_majority(c, 4, classes=[1, 2, 5], prefer=[5], **kw)
    for chunks in [(1, 37, 50), (2, 480, 7), (1, 100, 120)]:
        d = dask.array.from_array(v, chunks=chunks)
        dc = dask.array.from_array(c, chunks=chunks[1:])
        with raise_if_dask_computes():
            mean, sd = spatial.block_mean(d, (4, 3), std=True, **kw)
            frac = spatial.block_fractions(dc, 4, classes=[1, 2, 5], **kw)
            maj = spatial.block_majority(dc, 4, classes=[1, 2, 5], prefer=[5], **kw)
        assert frac.shape == (3, 120, 30) and frac.chunks[0] == (3,)
        for got, want in ((mean, ref_mean), (sd, ref_sd), (frac, ref_frac), (maj, ref_maj)):
            np.testing.assert_array_equal(got.compute(), want)
    # the classes default to the distinct values of the data
    np.testing.assert_array_equal(spatial.block_majority(c, 4, lat=edges),
                                  spatial.block_majority(c, 4, lat=edges, classes=[1, 2, 5]))


def test_block_fractions_and_majority_by_area_with_ties_and_preferred_classes():
    from xproda import spatial

    lat, lon = (-50, 50), (10, 40)
    cover = classes_field(0.25, lat, lon, nan=0.3, seed=5).values
    cover[0, 0] = 7.0  # an unknown code: missing
    a = areas(0.25, lat, lon)
    edges = np.arange(lat[0], lat[1] + 0.1, 0.25)
    frac = spatial.block_fractions(cover, 4, lat=edges, classes=[5, 1, 2, 2],
                                   min_coverage=0.6)
    ok = np.isin(cover, [1, 2, 5])
    valid = block(np.where(ok, a, 0.0), 4, 4)
    cov = valid / block(a, 4, 4)
    for k, c in enumerate((1, 2, 5)):
        want = block(np.where(cover == c, a, 0.0), 4, 4) / valid
        np.testing.assert_allclose(frac[k], np.where(cov >= 0.6, want, np.nan), rtol=1e-12)
    maj = spatial.block_majority(cover, 4, lat=edges, classes=[1, 2, 5], min_coverage=0.6)
    covered = np.isfinite(frac[0])
    np.testing.assert_array_equal(maj[covered], np.array([1, 2, 5])[frac[:, covered].argmax(0)])
    assert np.isnan(maj[~covered]).all()
    # ties (equal areas) go to the lowest class; preferred classes win where present
    codes = np.array([[3, 8, 8, 8], [8, 3, 9, 8]])
    eq = [-1.0, 0.0, 1.0]  # two rows of equal area
    assert spatial.block_majority(codes, 2, lat=eq).tolist() == [[3.0, 8.0]]
    assert spatial.block_majority(codes, 2, lat=eq, prefer=[9]).tolist() == [[3.0, 9.0]]
    assert spatial.block_majority(codes, 2, lat=eq, prefer=[8, 9]).tolist() == [[8.0, 8.0]]
    np.testing.assert_array_equal(  # one cell per block: the cell's class, NaN if unknown
        spatial.block_majority(codes, 1, lat=eq, classes=[3, 8]),
        [[3.0, 8.0, 8.0, 8.0], [8.0, 3.0, np.nan, 8.0]])


def test_block_reductions_refuse_bad_arguments():
    from xproda import spatial

    v = np.zeros((4, 6))
    with pytest.raises(ValueError, match=r"the 4 x 6 cells do not divide into blocks of 4 x 4"):
        spatial.block_mean(v, 4, lat=np.arange(5.0))
    with pytest.raises(ValueError, match=r"lat: expected the 5 latitude edges or the \(4, 2\)"):
        spatial.block_mean(v, 2, lat=np.arange(4.0))
    with pytest.raises(ValueError, match="factor must be a positive integer"):
        spatial.block_mean(v, (2, 0), lat=np.arange(5.0))
    with pytest.raises(ValueError, match="min_coverage must lie in"):
        spatial.block_fractions(v, 2, lat=np.arange(5.0), classes=[0], min_coverage=2)
    with pytest.raises(ValueError, match=r"prefer: \[3.0\] are not among the classes"):
        spatial.block_majority(v, 2, lat=np.arange(5.0), prefer=[3])
