"""The xarray layer and the .proda accessor: laziness, chunk invariance, parity, metadata."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import xproda
from xproda import grid
from xproda.xr import api as xr_api
from xproda.testing import assert_lazy, forcing_dataset, raise_if_dask_computes

P = 21


def _theta(ds, seed=0, parameter_first=False):
    rng = np.random.default_rng(seed)
    th = rng.uniform(0.1, 0.9, (ds.sizes["lat"], ds.sizes["lon"], P))
    da = xr.DataArray(th, dims=("lat", "lon", "parameter"),
                      coords={"lat": ds.lat, "lon": ds.lon,
                              "parameter": list(xproda.get_model("clm5").parameters.names)})
    return da.transpose("parameter", ...) if parameter_first else da


def _columns(ds, theta):
    """The same inputs as the kernel contract (flattened lat/lon, batch first)."""
    names = xproda.get_model("clm5").required_forcing
    f = {}
    for k in names:
        v = ds[k].transpose("lat", "lon", ...).values
        f[k] = v.reshape((-1,) + v.shape[2:])
    th = theta.transpose("lat", "lon", "parameter").values.reshape(-1, P)
    return th, f


def test_eager_equals_kernel():
    ds = forcing_dataset(4, 5, seed=1)
    theta = _theta(ds)
    out = xr_api.steady_state(ds, theta)
    th, f = _columns(ds, theta)
    ref = xproda.get_model("clm5").steady_state(th, f)
    soc = out["soc"].transpose("lat", "lon", "layer").values.reshape(-1, 20)
    np.testing.assert_array_equal(soc, ref["soc"])
    np.testing.assert_array_equal(out["soc_stock"].values.reshape(-1), ref["soc_stock"] / 1000)
    np.testing.assert_array_equal(out["flags"].values.reshape(-1), ref["flags"])
    np.testing.assert_array_equal(out["turnover_time"].values.reshape(-1), ref["turnover_time"])
    assert isinstance(out["soc"].data, np.ndarray)  # numpy in, numpy out
    # ocean cells: NaN and flagged no_data
    ocean = np.isnan(ds["TSOI"].isel(month=0, layer=0).values)
    assert ocean.any()
    assert np.isnan(out["soc_stock"].values[ocean]).all()
    assert (out["flags"].values[ocean] == xproda.FLAGS["no_data"]).all()
    assert np.isfinite(out["soc_stock"].values[~ocean]).all()


def test_lazy_and_equal_to_eager():
    ds = forcing_dataset(4, 6, seed=2)
    theta = _theta(ds, 1)
    eager = ds.proda.steady_state(theta, pools=True)
    with raise_if_dask_computes():
        lazy = ds.chunk({"lat": 2, "lon": 3}).proda.steady_state(theta.chunk({"lat": 1}),
                                                                 pools=True)
        stock = lazy.proda.soc_stock(depth=[(0, 0.3), (0, 1.0)])
        tau = lazy.proda.turnover_time(depth=(0, 1))
    assert_lazy(lazy)
    assert stock.chunks is not None and tau.chunks is not None
    xr.testing.assert_identical(lazy.compute().drop_attrs(), eager.drop_attrs())
    xr.testing.assert_allclose(stock.compute(), eager.proda.soc_stock(depth=[(0, 0.3), (0, 1)]))


@settings(max_examples=8, deadline=None)
@given(
    cy=st.integers(1, 5), cx=st.integers(1, 6), cp=st.sampled_from([None, 1, 2]),
    core=st.booleans(),
)
def test_chunk_invariance(cy, cx, cp, core):
    ds = forcing_dataset(5, 6, seed=3)
    theta = _theta(ds, 2)
    ref = ds.proda.steady_state(theta)
    chunks = {"lat": cy, "lon": cx}
    if core:  # split core dims too: they are rechunked to one chunk automatically
        chunks.update(month=5, layer=7)
    th = theta.chunk({"lat": cp} if cp else {"parameter": 4})
    out = ds.chunk(chunks).proda.steady_state(th).compute()
    for k in ("soc", "soc_stock", "flags", "turnover_time", "respiration"):
        np.testing.assert_array_equal(out[k].values, ref[k].values, err_msg=k)


def test_params_forms_are_equivalent():
    ds = forcing_dataset(3, 4, seed=4)
    theta = _theta(ds, 3)
    ref = ds.proda.steady_state(theta)
    names = list(theta.parameter.values)
    # parameter dim first, reversed order, Dataset of variables, no coordinate
    rev = theta.isel(parameter=slice(None, None, -1)).transpose("parameter", ...)
    as_ds = theta.to_dataset(dim="parameter")
    bare = theta.drop_vars("parameter")
    for p in (rev, as_ds, bare):
        out = ds.proda.steady_state(p)
        np.testing.assert_array_equal(out["soc_stock"].values, ref["soc_stock"].values)
    # physical values
    space = xproda.get_model("clm5").parameters
    phys = xr.apply_ufunc(space.to_physical, theta, input_core_dims=[["parameter"]],
                          output_core_dims=[["parameter"]])
    out = ds.proda.steady_state(phys, normalised=False)
    np.testing.assert_allclose(out["soc_stock"].values, ref["soc_stock"].values, rtol=1e-10)
    # one parameter set for all cells (batch mode)
    one = xr.DataArray(np.full(P, 0.5), dims="parameter", coords={"parameter": names})
    out1 = ds.proda.steady_state(one)
    assert out1["soc_stock"].dims == ("lat", "lon")


def test_static_and_long_layer_inputs():
    ds = forcing_dataset(3, 4, seed=5)
    theta = _theta(ds, 4)
    ref = ds.proda.steady_state(theta)
    static = ds.assign(nbedrock=ds["nbedrock"].isel(month=0, drop=True))
    np.testing.assert_array_equal(static.proda.steady_state(theta)["soc"].values, ref["soc"].values)
    # CLM's 25 ground levels: the first 20 are used
    layered = ("TSOI", "W_SCALAR", "O_SCALAR", "FPI_vr")
    long = ds.drop_vars(layered + ("CELLSAND",)).assign(
        {k: xr.concat([ds[k], ds[k].isel(layer=slice(0, 5)) * np.nan], dim="layer")
         for k in layered}
    )
    assert long.sizes["layer"] == 25
    np.testing.assert_array_equal(long.proda.steady_state(theta)["soc"].values, ref["soc"].values)


def test_metadata_and_no_attr_leak():
    ds = forcing_dataset(3, 4, seed=6)
    ds.attrs["title"] = "my forcing"
    ds["TSOI"].attrs["secret"] = "do not copy"
    out = ds.proda.steady_state(_theta(ds, 5), pools=True)
    assert out["soc_stock"].attrs["standard_name"] == "soil_mass_content_of_carbon"
    assert out["soc_stock"].attrs["units"] == "kg m-2"
    assert out["soc"].attrs["units"] == "g m-3"
    assert out["flags"].attrs["flag_meanings"].split()[0] == "no_data"
    assert "history" in out.attrs and out.attrs["Conventions"].startswith("CF-")
    assert out.attrs.get("title") != "my forcing"
    for v in out.data_vars.values():
        assert "secret" not in v.attrs
    assert "spatial_ref" in out.coords
    assert out["lat"].attrs["standard_name"] == "latitude"
    assert out["depth"].attrs["units"] == "m"
    assert list(out["pool"].values) == list(xproda.get_model("clm5").pools)
    np.testing.assert_allclose(
        out["pool_stocks"].sel(pool=["soil1", "soil2", "soil3"]).sum("pool", skipna=False),
        out["soc_stock"], rtol=1e-12)


def test_soc_stock_partial_layers_spec_8_1():
    rng = np.random.default_rng(0)
    s = rng.uniform(1e3, 1e5, (20, 7))
    soc = xr.DataArray(s, dims=("layer", "site"))
    dz = grid.DZ[:20]
    # S_0-30 = sum_{1..4} s dz + 0.10 s_5 ; S_0-100 = sum_{1..8} + 0.08 s_9 (g m-2)
    s030 = (s[:4] * dz[:4, None]).sum(0) + 0.10 * s[4]
    s0100 = (s[:8] * dz[:8, None]).sum(0) + 0.08 * s[8]
    np.testing.assert_allclose(xr_api.soc_stock(soc, depth=(0, 0.3)), s030 / 1000, rtol=1e-12)
    both = xr_api.soc_stock(soc, depth=[(0, 0.3), (0, 1.0)])
    assert both.dims == ("depth_interval", "site")
    np.testing.assert_allclose(both.sel(depth_interval=1), s0100 / 1000, rtol=1e-12)
    full = xr_api.soc_stock(soc)
    np.testing.assert_allclose(full, (s * dz[:, None]).sum(0) / 1000, rtol=1e-12)
    # NaN below the interval does not contaminate it; NaN inside does
    s2 = s.copy()
    s2[15] = np.nan
    soc2 = xr.DataArray(s2, dims=("layer", "site"))
    assert np.isfinite(xr_api.soc_stock(soc2, depth=(0, 1))).all()
    assert np.isnan(xr_api.soc_stock(soc2)).all()
    with pytest.raises(ValueError, match="depth"):
        xr_api.soc_stock(soc, depth=(0.5, 0.2))


def test_turnover_time_full_column_matches_output():
    ds = forcing_dataset(3, 4, seed=7)
    out = ds.proda.steady_state(_theta(ds, 6))
    np.testing.assert_allclose(out.proda.turnover_time(), out["turnover_time"], rtol=1e-12)


def test_microbial_runs():
    ds = forcing_dataset(3, 4, seed=8)
    m = xproda.get_model("microbial")
    theta = xr.DataArray(np.full(len(m.parameters), 0.5), dims="parameter")
    out = ds.proda.steady_state(theta, model="microbial")
    assert out["soc"].sizes["layer"] == 20
    ocean = np.isnan(ds["TSOI"].isel(month=0, layer=0).values)
    assert np.isnan(out["soc_stock"].values[ocean]).all()


# ------------------------------------------------------------------------------ errors
def test_missing_variables_error_lists_names_and_units():
    ds = forcing_dataset(2, 2).drop_vars(["TSOI", "LITR1_INPUT"])
    with pytest.raises(ValueError) as err:
        ds.proda.steady_state(_theta(forcing_dataset(2, 2)))
    msg = str(err.value)
    assert "TSOI [K]" in msg and "LITR1_INPUT [g m-2 month-1]" in msg
    assert ds.proda.validate(raise_on_error=False)[0].startswith("missing forcing")


def test_celsius_converted_or_refused():
    ds = forcing_dataset(2, 3)
    c = ds.assign(TSOI=ds["TSOI"] - 273.15)
    c["TSOI"].attrs["units"] = "degC"
    # degrees Celsius with a units attribute: converted (and recorded), same result
    out = c.proda.steady_state(_theta(ds))
    ref = ds.proda.steady_state(_theta(ds))
    np.testing.assert_allclose(out["soc_stock"], ref["soc_stock"], rtol=1e-12)
    assert "TSOI: converted from 'degC' to 'K'" in out.attrs["history"]
    # no units at all: refused at build time, naming the variable and the expected units
    c["TSOI"].attrs = {}
    with pytest.raises(ValueError, match="TSOI: no 'units' attribute; expected 'K'"):
        c.proda.steady_state(_theta(ds))
    # Celsius values labelled K: the kernel's value check names the variable on compute
    c["TSOI"].attrs = {"units": "K"}
    lazy = c.chunk({"lat": 1}).proda.steady_state(_theta(ds))
    with pytest.raises(ValueError, match="TSOI"):
        lazy.compute()


def test_bad_params_errors():
    ds = forcing_dataset(2, 3)
    th = _theta(ds)
    with pytest.raises(KeyError, match="lacks parameter"):
        ds.proda.steady_state(th.isel(parameter=slice(0, 20)))
    with pytest.raises(ValueError, match="'parameter' dim"):
        ds.proda.steady_state(th.rename(parameter="p"))
    with pytest.raises(KeyError, match="q10"):
        ds.proda.steady_state(th.to_dataset(dim="parameter").drop_vars("q10"))
    assert ds.proda.validate(params=th) == []


def test_validate_reads_no_data():
    ds = forcing_dataset(4, 4, chunks={"lat": 2})
    with raise_if_dask_computes():
        assert ds.proda.validate(params=_theta(ds).chunk({"lat": 2})) == []
        # cm is converted (units.convert); kg cannot be a depth
        assert ds.assign(ALTMAX=ds["ALTMAX"].assign_attrs(units="cm")).proda.validate() == []
        bad = ds.assign(ALTMAX=ds["ALTMAX"].assign_attrs(units="kg"))
        problems = bad.proda.validate(raise_on_error=False)
    assert any("ALTMAX" in p and "'kg'" in p and "'m'" in p for p in problems)


# ------------------------------------------------------------------------------ network
class _LinearNet:
    feature_names = ("a", "b")
    parameter_names = tuple(xproda.get_model("clm5").parameters.names)
    calls = 0

    def __call__(self, x):
        type(self).calls += 1
        w = np.linspace(0.1, 0.3, P)
        return 1 / (1 + np.exp(-(x[:, :1] * w + x[:, 1:2])))


def _covariates(chunks=None):
    rng = np.random.default_rng(0)
    cov = xr.Dataset(
        {"a": (("lat", "lon"), rng.normal(size=(4, 6))),
         "b": (("lat", "lon"), rng.normal(size=(4, 6))),
         "c": (("lat", "lon"), rng.normal(size=(4, 6)))},
        coords={"lat": np.linspace(60, -60, 4), "lon": np.linspace(-150, 150, 6)},
    )
    cov["a"][0, 0] = np.nan
    return cov.chunk(chunks) if chunks else cov


def test_predict_parameters_lazy_nan_and_single_net_key():
    net = _LinearNet()
    eager = _covariates().proda.predict_parameters(net)
    assert eager.dims == ("lat", "lon", "parameter")
    assert np.isnan(eager[0, 0]).all() and np.isfinite(eager[1:]).all()
    with raise_if_dask_computes():
        lazy = _covariates({"lat": 2, "lon": 2}).proda.predict_parameters(net)
    graph = dict(lazy.data.__dask_graph__())
    net_keys = [k for k, v in graph.items() if v is net or getattr(v, "value", None) is net]
    assert len(net_keys) == 1, "the network must enter the graph once"
    xr.testing.assert_identical(lazy.compute(), eager)
    # chained: predict -> steady state, still lazy
    ds = forcing_dataset(4, 6).chunk({"lat": 2})
    ds = ds.assign_coords(lat=_covariates().lat, lon=_covariates().lon)
    with raise_if_dask_computes():
        out = ds.proda.steady_state(_covariates({"lat": 2}).proda.predict_parameters(net))
    assert np.isnan(out["soc_stock"].values[0, 0])


def test_predict_parameters_torch_module_and_errors():
    torch.manual_seed(0)
    mod = torch.nn.Sequential(torch.nn.Linear(2, P), torch.nn.Sigmoid()).double()
    cov = _covariates()
    out = cov.proda.predict_parameters(mod, features=["a", "b"], model="clm5")
    x = np.stack([cov.a.values, cov.b.values], -1).reshape(-1, 2)
    with torch.no_grad():
        ref = mod(torch.tensor(x)).numpy().reshape(4, 6, P)
    np.testing.assert_allclose(out.values[1:], ref[1:], rtol=1e-14)
    with pytest.raises(KeyError, match=r"lack feature\(s\) \['zz'\]"):
        cov.proda.predict_parameters(mod, features=["a", "zz"])
    with pytest.raises(ValueError, match="features are unknown"):
        cov.proda.predict_parameters(mod)


@pytest.mark.slow
@pytest.mark.distributed
def test_local_cluster_equals_threaded():
    distributed = pytest.importorskip("distributed")
    ds = forcing_dataset(4, 6, seed=9, chunks={"lat": 2, "lon": 3})
    theta = _theta(ds, 7)
    ref = ds.proda.steady_state(theta).compute(scheduler="threads")
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster):
        with xproda.set_options(torch_threads=1):
            got = ds.proda.steady_state(theta).compute()
    xr.testing.assert_identical(got.drop_attrs(), ref.drop_attrs())


def test_params_on_other_grid_are_aligned_or_rejected():
    ds = forcing_dataset(4, 6, seed=10)
    theta = _theta(ds, 8)
    ref = ds.proda.steady_state(theta)
    # same cells in the 0..360 convention with latitudes south to north: aligned by name
    other = xproda.spatial.normalize_longitude(theta, convention="0..360").isel(
        lat=slice(None, None, -1))
    out = ds.proda.steady_state(other)
    np.testing.assert_array_equal(out["soc_stock"].values, ref["soc_stock"].values)
    # a different grid without a CRS: a clear error
    coarse = theta.coarsen(lat=2, lon=2).mean()
    with pytest.raises(ValueError, match="mismatched grids without CRS"):
        ds.drop_vars("spatial_ref").proda.steady_state(coarse)
    # with a CRS on both: reprojected (nearest) onto the forcing grid
    coarse = coarse.rio.write_crs("EPSG:4326")
    out = ds.proda.steady_state(coarse)
    assert out["soc_stock"].shape == (4, 6)


def test_forcing_arrays_match_kernel_contract():
    ds = forcing_dataset(3, 4, seed=12)
    theta = _theta(ds, 9)
    f = xr_api.forcing_arrays(ds)
    th, ref = _columns(ds, theta)
    for k, v in ref.items():
        np.testing.assert_array_equal(f[k], v, err_msg=k)
    sites = ds.stack(site=("lat", "lon")).reset_index("site")
    f2 = xr_api.forcing_arrays(sites.assign(nbedrock=sites["nbedrock"].isel(month=0)))
    np.testing.assert_array_equal(f2["nbedrock"], ref["nbedrock"])
    np.testing.assert_array_equal(f2["TSOI"], ref["TSOI"])


# -------------------------------------------------------------------------------------------
# land-only (cell) layout and the block machinery
# -------------------------------------------------------------------------------------------
def _land(ds, theta):
    """A mask with ocean cells, and the data NaN over them."""
    land = xr.DataArray(np.random.default_rng(3).random((ds.sizes["lat"], ds.sizes["lon"]))
                        < 0.6, dims=("lat", "lon"), coords={"lat": ds.lat, "lon": ds.lon})
    return land, ds.where(land), theta.where(land)


def test_cells_layout_equals_grid_bitwise():
    from xproda.spatial import from_cells, to_cells

    ds, theta = forcing_dataset(6, 7, seed=4), None
    theta = _theta(ds, seed=4)
    land, ds, theta = _land(ds, theta)
    grid_out = xr_api.steady_state(ds.chunk({"lat": 4, "lon": 3}),
                                   theta.chunk({"lat": 4, "lon": 3})).compute()
    cds, cth = to_cells(ds, land, chunk=5), to_cells(theta, land, chunk=5)
    assert cds["TSOI"].dims[0] == "cell" and cds["lat"].dims == ("cell",)
    with raise_if_dask_computes():
        cell_out = xr_api.steady_state(cds, cth)
        back = from_cells(cell_out, land)
    assert cell_out["soc"].dims == ("layer", "cell")
    back = back.compute()
    for k in ("soc", "soc_stock", "turnover_time", "input", "respiration", "flags"):
        assert back[k].dtype == grid_out[k].dtype, k
        np.testing.assert_array_equal(back[k].transpose(*grid_out[k].dims).values,
                                      grid_out[k].values)
    # chunk invariance on the cell dim, and numpy == dask
    eager = xr_api.steady_state(cds.compute(), cth.compute())
    for k in eager.data_vars:
        np.testing.assert_array_equal(eager[k].values, cell_out[k].values)


def test_cell_coords_not_compared_lazily():
    """theta's lazy lat/lon on ``cell`` are not computed (nor compared) building the graph."""
    from xproda.spatial import to_cells

    ds = forcing_dataset(3, 4, seed=2)
    theta = _theta(ds)
    land = xr.DataArray(np.ones((3, 4), bool), dims=("lat", "lon"),
                        coords={"lat": ds.lat, "lon": ds.lon})
    cds, cth = to_cells(ds, land), to_cells(theta, land)
    lazy = {c: (cds[c].variable.chunk(5)) for c in ("lat", "lon")}
    cds = cds.chunk({"cell": 5}).assign_coords(lazy)
    cth = cth.chunk({"cell": 5}).assign_coords({c: cth[c].variable.chunk(5) for c in lazy})
    with raise_if_dask_computes():
        out = xr_api.steady_state(cds, cth)
    assert out["lat"].chunks is not None  # the forcing's coordinate, still lazy


def test_blocks_without_concatenate_copy():
    """Core dims reach the kernel block as they are: no dask concatenate3 in the graph."""
    ds = forcing_dataset(4, 4, seed=5).chunk({"lat": 2, "lon": 2})
    out = xr_api.steady_state(ds, _theta(ds))
    graph = dict(out["soc"].data.__dask_graph__())
    assert not any("concatenate" in repr(t) for t in graph.values())
    np.testing.assert_array_equal(
        out["soc"].values, xr_api.steady_state(ds.compute(), _theta(ds))["soc"].values)
    # one kernel task per block, shared by every output variable
    names = {k[0] for k in graph if isinstance(k, tuple) and str(k[0]).startswith("steady_state")}
    assert len([n for n in names if n.count("-") == 1]) == 1


def test_cells_store_round_trip(tmp_path):
    """A land-only store written from to_cells opens with consistent chunks and runs."""
    from xproda.spatial import from_cells, to_cells

    ds = forcing_dataset(5, 6, seed=7)
    theta = _theta(ds, seed=7)
    land, ds, theta = _land(ds, theta)
    to_cells(ds, land, chunk=4).to_zarr(tmp_path / "f.zarr", zarr_format=3)
    to_cells(theta.to_dataset(name="theta"), land, chunk=4).to_zarr(tmp_path / "p.zarr", zarr_format=3)
    f = xr.open_zarr(tmp_path / "f.zarr")
    p = xr.open_zarr(tmp_path / "p.zarr")["theta"]
    assert f["lat"].chunks == f["TSOI"].chunks[:1]
    out = from_cells(xr_api.steady_state(f, p), land).compute()
    ref = xr_api.steady_state(ds, theta)
    np.testing.assert_array_equal(out["soc"].transpose(*ref["soc"].dims).values,
                                  ref["soc"].values)
    assert "cell_area" in xr_api.steady_state(f, p).coords  # gathered from the grid
