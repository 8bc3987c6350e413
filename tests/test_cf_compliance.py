"""Every store xproda writes, exported with ``to_netcdf``, passes the IOOS CF checker.

The stores: the demo's ``world.zarr`` and ``results.zarr``, the output of ``xproda run``,
of ``write_simulation`` (a transient run), and the synthetic world written with
``write_zarr``. Each is opened with :func:`xproda.io.open_dataset` (which keeps the grid
mapping and bounds as coordinates and gives coordinates no ``_FillValue``; see
:func:`xproda.conventions.cf_encoding`), written with :meth:`xarray.Dataset.to_netcdf` and
checked with ``compliance-checker --test cf:1.10``: no high-priority (error) result may fail.
"""

from __future__ import annotations

import json
import warnings

import numpy as np
import pytest
import xarray as xr

import xproda
from xproda import conventions
from xproda import io as xio
from xproda.testing import forcing_dataset
from xproda.xr import scenarios as sc

pytest.importorskip("compliance_checker")
pytest.importorskip("netCDF4")


def cf_errors(nc_path) -> list[str]:
    """The failed high-priority checks of ``cf:1.10`` on a NetCDF file (name: messages)."""
    from compliance_checker.runner import CheckSuite, ComplianceChecker

    CheckSuite().load_all_available_checkers()
    report = nc_path.with_suffix(".json")
    ComplianceChecker.run_checker(str(nc_path), ["cf:1.10"], 0, "normal",
                                  output_filename=str(report), output_format="json")
    result = json.loads(report.read_text())["cf:1.10"]
    return [f"{c['name']}: {'; '.join(c['msgs'])}" for c in result["high_priorities"]
            if c["value"][0] < c["value"][1]]


def exported(store, tmp_path):
    """``store`` opened by xproda and written with plain ``to_netcdf``."""
    nc = tmp_path / (str(store).rstrip("/").split("/")[-1].replace(".zarr", "") + ".nc")
    ds = xio.open_dataset(store)
    assert len(ds.data_vars) > 0  # the subject is not empty
    ds.to_netcdf(nc)
    return nc


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from xproda.demo import run_demo

    out = tmp_path_factory.mktemp("demo_cf")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # the synthetic profiles' table notes
        run_demo(out, resolution=10.0, n_sites=20, epochs=1, seed=1, progress=False,
                 figures=False)
    return out


@pytest.mark.parametrize("store", ["world.zarr", "results.zarr"])
def test_demo_stores(demo, store, tmp_path):
    assert cf_errors(exported(demo / store, tmp_path)) == []


def test_xproda_run_store(tmp_path):
    from xproda.cli import main

    ds = forcing_dataset(6, 8, seed=11, chunks={"lat": 3, "lon": 4}, ocean_fraction=0.3)
    names = list(xproda.get_model("clm5").parameters.names)
    theta = xr.DataArray(np.random.default_rng(5).uniform(0.1, 0.9, (6, 8, len(names))),
                         dims=("lat", "lon", "parameter"),
                         coords={"lat": ds.lat, "lon": ds.lon, "parameter": names})
    fpath, ppath, out = tmp_path / "f.zarr", tmp_path / "p.zarr", tmp_path / "run.zarr"
    ds.to_zarr(fpath, mode="w", zarr_format=3)
    theta.to_dataset(name="theta").to_zarr(ppath, mode="w", zarr_format=3)
    assert main(["run", "--forcing", str(fpath), "--params", str(ppath), "--out", str(out),
                 "--depth", "0-0.3", "--quiet"]) == 0
    assert cf_errors(exported(out, tmp_path)) == []


def test_write_simulation_store(tmp_path):
    clim = forcing_dataset(ny=3, nx=4, seed=2)
    scenario = sc.warming(sc.repeat_climatology(clim, years=2), 2.0)
    th = xr.DataArray(np.full(21, 0.5), dims="parameter")
    store = tmp_path / "sim.zarr"
    scenario.proda.write_simulation(th, store, time_chunk=12, progress=False)
    assert cf_errors(exported(store, tmp_path)) == []


def test_synthetic_world_store(tmp_path):
    from xproda.datasets import synthetic_world

    world = synthetic_world(15.0).chunk({"lat": 6, "lon": 12})
    store = tmp_path / "world.zarr"
    xio.write_zarr(world, store, progress=False)
    assert cf_errors(exported(store, tmp_path)) == []


def test_cf_attributes_of_the_stores(demo):
    """What the checker found before (issue 20), asserted directly."""
    w = xio.open_dataset(demo / "world.zarr")
    r = xio.open_dataset(demo / "results.zarr")
    for ds in (w, r):
        for c in ("lat", "lon", "layer", "lat_bnds", "lon_bnds", "depth_bounds"):
            if c in ds.variables:
                assert ds[c].encoding.get("_FillValue", None) is None, c
        assert ds["spatial_ref"].attrs["long_name"] == "coordinate reference system"
        for name, v in ds.data_vars.items():
            if "flag_values" in v.attrs:
                assert np.asarray(v.attrs["flag_values"]).dtype == v.dtype, name
            if {"lat", "lon"} <= set(v.dims):  # every spatial variable names its grid
                gm = v.attrs.get("grid_mapping", v.encoding.get("grid_mapping"))
                assert gm == "spatial_ref", name
    for b in ("lat_bnds", "lon_bnds", "depth_bounds"):
        assert "long_name" not in w[b].attrs, b  # CF 7.1: nothing that disagrees with lat
    assert r["parameter"].attrs == conventions.attrs("parameter", section="coordinates")
    assert any(k.startswith("soc_stock_") for k in r.data_vars)
    flags = conventions.attrs("flags")
    assert 32 in flags["flag_masks"] and "not_converged" in flags["flag_meanings"]


def test_no_unstable_string_types(demo):
    """String coordinates are stored as Zarr v3 variable-length strings, not UTF-32."""
    import zarr

    g = zarr.open_group(str(demo / "results.zarr"), mode="r")
    kinds = {k: type(a.metadata.data_type).__name__ for k, a in g.arrays()
             if a.metadata.data_type.to_native_dtype().kind in "UTO"}
    assert kinds and set(kinds.values()) == {"VariableLengthUTF8"}, kinds


def test_own_stores_open_without_bounds_warnings(demo):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for store in ("world.zarr", "results.zarr"):
            xio.open_dataset(demo / store)


def test_cf_finalize_leaves_odd_flag_values_alone():
    ds = xr.Dataset({
        "a": ("x", np.array([0, 1], dtype="int8"), {"flag_values": [0, 1]}),
        "b": ("x", np.array([0, 1], dtype="int8"), {"flag_values": "0 1"}),  # a string
        "c": ("x", np.array([0, 1], dtype="int8"), {"flag_values": [0, 300]}),  # no int8
    })
    out = conventions.cf_finalize(ds)
    assert out["a"].attrs["flag_values"].dtype == np.int8
    assert out["b"].attrs["flag_values"] == "0 1"
    assert out["c"].attrs["flag_values"] == [0, 300]
    assert ds["a"].attrs["flag_values"] == [0, 1]  # the input is not changed
