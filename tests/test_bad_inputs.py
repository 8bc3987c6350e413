"""Bad inputs: every case gives a clear error naming the culprit, or the correct result.

"Correct" means equal to the result of the correctly prepared input.  Cases cover the forcing
(dims, units, fill values, ranges, dtypes), parameters and grids, covariates, transient
forcing and options; CLM history files and climate inputs have their own suites
(``test_clm_history.py``, ``test_climate_contract.py``).  Hypothesis draws random unit
scalings, fill values and extra dims.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xproda
from xproda.errors import DimensionError, GridError, InputError, OptionError, RangeError, UnitsError
from xproda.models.forcing import FORCING_SCHEMA
from xproda.testing import forcing_dataset

REQUIRED = list(xproda.get_model("clm5").required_forcing)
DIMENSIONAL = [k for k in REQUIRED if FORCING_SCHEMA[k].units != "1"]
DIMENSIONLESS = [k for k in REQUIRED if FORCING_SCHEMA[k].units == "1"]
# days of the months of a 365-day year (per-second fluxes to monthly amounts)
DAYS = xr.DataArray([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dims="month")


def _theta():
    return xr.DataArray(np.full(21, 0.5), dims="parameter")


@pytest.fixture(scope="module")
def ds():
    return forcing_dataset(2, 3, seed=7, ocean_fraction=0.0)


@pytest.fixture(scope="module")
def ref(ds):
    out = ds.proda.steady_state(_theta())
    assert np.isfinite(out["soc_stock"]).all()  # the subject is not empty: 6 land columns
    return out["soc_stock"]


def _run(ds, theta=None, **kw):
    return ds.proda.steady_state(_theta() if theta is None else theta, **kw)["soc_stock"]


def _with(ds, name, values, **attrs):
    out = ds.copy()
    a = dict(ds[name].attrs)
    a.update(attrs)
    a = {k: v for k, v in a.items() if v is not None}
    if isinstance(values, xr.DataArray):
        values = values.copy()
        values.attrs = a
        out[name] = values
    else:
        out[name] = xr.DataArray(values, dims=ds[name].dims, coords=ds[name].coords, attrs=a)
    return out


# ----------------------------------------------------------------------------------- dims
def test_time_instead_of_month_is_refused(ds):
    with pytest.raises(DimensionError, match="'time' dim .* 12-month climatology"):
        _run(ds.rename(month="time"))
    assert any("'time' dim" in p for p in
               ds.rename(month="time").proda.validate(raise_on_error=False))


def test_multi_year_time_is_refused(ds):
    two = xr.concat([ds.rename(month="time")] * 2, dim="time")
    with pytest.raises(DimensionError, match=r"\(24 steps\)"):
        _run(two)


@pytest.mark.parametrize("name", ["TSOI", "ALTMAX", "LITR2_INPUT", "nbedrock"])
def test_unknown_dim_is_refused_and_named(ds, name):
    bad = ds.assign({name: ds[name].expand_dims(foo=2)})
    with pytest.raises(DimensionError, match=f"{name}: dim 'foo' .* batch_dims=\\['foo'\\]"):
        _run(bad)


def test_declared_batch_dim_gives_one_result_per_entry(ds, ref):
    bad = ds.assign(TSOI=ds["TSOI"].expand_dims(foo=2))
    out = _run(bad, batch_dims=["foo"])
    assert out.sizes["foo"] == 2
    for i in range(2):
        np.testing.assert_array_equal(out.isel(foo=i).values, ref.values)


@pytest.mark.parametrize("dim", ["levgrnd", "levdcmp", "levsoi"])
def test_clm_level_dim_is_named(ds, dim):
    with pytest.raises(DimensionError, match=f"{dim!r} is a CLM level dim; rename it to 'layer'"):
        _run(ds.rename(layer=dim))


def test_too_few_layers(ds):
    with pytest.raises(InputError, match="dim 'layer' must have >= 20 soil layers.*found 15"):
        _run(ds.isel(layer=slice(0, 15)))


def test_25_layers_use_the_first_20(ds, ref):
    deep = ds.pad(layer=(0, 5), mode="edge")
    assert deep.sizes["layer"] == 25
    np.testing.assert_array_equal(_run(deep).values, ref.values)


def test_eleven_months(ds):
    with pytest.raises(InputError, match="dim 'month' must have 12 entries.*found 11"):
        _run(ds.isel(month=slice(0, 11)))


@pytest.mark.parametrize("name", ["TSOI", "LITR1_INPUT", "nbedrock"])
def test_missing_variable_listed_with_units(ds, name):
    with pytest.raises(InputError, match=f"missing forcing variable.*{name} \\["):
        _run(ds.drop_vars(name))


@pytest.mark.parametrize("dtype", ["U3", "bool"])
def test_non_numeric(ds, dtype):
    bad = ds.assign(O_SCALAR=ds["O_SCALAR"].astype(dtype))
    with pytest.raises(InputError, match="O_SCALAR: expected a numeric variable, found dtype"):
        _run(bad)


def test_variable_without_month_is_constant_over_the_year(ds, ref):
    const = ds.assign(nbedrock=ds["nbedrock"].isel(month=0, drop=True))
    np.testing.assert_array_equal(_run(const).values, ref.values)


# ---------------------------------------------------------------------------------- units
_CONVERSIONS = [  # (variable, units, value in those units from the schema's)
    ("TSOI", "degC", lambda v: v - 273.15),
    ("TSOI", "degrees_Celsius", lambda v: v - 273.15),
    ("TSOI", "kelvin", lambda v: v),
    ("ALTMAX", "cm", lambda v: v * 100),
    ("ALTMAX", "centimeters", lambda v: v * 100),
    ("ALTMAX_LASTYEAR", "mm", lambda v: v * 1000),
    ("ALTMAX_LASTYEAR", "meters", lambda v: v),
    ("CWD_INPUT", "kg m-2 month-1", lambda v: v / 1000),
    ("LITR1_INPUT", "gC/m^2/s", lambda v: v / (86400 * DAYS)),
    ("LITR2_INPUT", "g m-2 s-1", lambda v: v / (86400 * DAYS)),
    ("LITR3_INPUT", "g m-2 d-1", lambda v: v / DAYS),
    ("LITR3_INPUT", "kgC m-2 s-1", lambda v: v / (86400e3 * DAYS)),
    ("W_SCALAR", "%", lambda v: v * 100),
    ("FPI_vr", "percent", lambda v: v * 100),
]


@pytest.mark.parametrize("name,units,to", _CONVERSIONS, ids=[f"{a}-{b}" for a, b, _ in
                                                               _CONVERSIONS])
def test_convertible_units_are_converted_and_recorded(ds, ref, name, units, to):
    bad = _with(ds, name, to(ds[name]), units=units)
    out = bad.proda.steady_state(_theta())
    np.testing.assert_allclose(out["soc_stock"].values, ref.values, rtol=1e-11)
    if units not in ("kelvin", "meters"):
        assert f"{name}: converted from {units!r}" in out.attrs["history"]


@pytest.mark.parametrize("name,units", [("ALTMAX", "kg"), ("TSOI", "m"), ("LITR1_INPUT", "K"),
                                        ("W_SCALAR", "K"), ("CWD_INPUT", "g m-2"),
                                        ("nbedrock", "m"), ("ALTMAX_LASTYEAR", "s")])
def test_inconvertible_units_refused(ds, name, units):
    with pytest.raises(UnitsError, match=f"{name}: units {units!r} cannot be converted to the "
                                         "expected"):
        _run(_with(ds, name, ds[name], units=units))


@pytest.mark.parametrize("units", ["blargh", "g m-2 blorp-1"])
def test_unreadable_units_refused(ds, units):
    with pytest.raises(UnitsError, match=f"ALTMAX: cannot read units {units!r}"):
        _run(_with(ds, "ALTMAX", ds["ALTMAX"], units=units))


@pytest.mark.parametrize("name", DIMENSIONAL)
def test_dimensional_variable_without_units_refused(ds, name):
    bad = _with(ds, name, ds[name], units=None)
    with pytest.raises(UnitsError, match=f"{name}: no 'units' attribute; expected "):
        _run(bad)


@pytest.mark.parametrize("name", DIMENSIONLESS)
def test_dimensionless_variable_without_units_is_fine(ds, ref, name):
    np.testing.assert_array_equal(_run(_with(ds, name, ds[name], units=None)).values, ref.values)


def test_per_second_needs_month_lengths(ds):
    flat = ds.assign(CWD_INPUT=ds["CWD_INPUT"].isel(month=0, drop=True))
    bad = _with(flat, "CWD_INPUT", flat["CWD_INPUT"], units="g m-2 s-1")
    with pytest.raises(UnitsError, match="CWD_INPUT: units 'g m-2 s-1' are a rate"):
        _run(bad)


# ------------------------------------------------------------------------ fill values/ranges
_FILLS = [1e36, 9.969209968386869e36, -9999.0, -3.4e38, 1e20]


@pytest.mark.parametrize("fill", _FILLS)
@pytest.mark.parametrize("name", REQUIRED)
def test_undeclared_fill_value_in_a_land_cell_is_refused(ds, name, fill):
    v = ds[name].values.copy()
    v[..., 1, 2] = fill  # one land cell, every month/layer
    with pytest.raises(RangeError, match=f"forcing variable {name!r}"):
        _run(_with(ds, name, v)).values


@pytest.mark.parametrize("name", ["LITR1_INPUT", "ALTMAX", "TSOI"])
def test_undeclared_fill_value_lazy_raises_at_compute(ds, name):
    v = ds[name].values.copy()
    v[..., 0, 0] = 1e36
    lazy = _run(_with(ds, name, v).chunk({"lat": 1}))  # builds: values are not read
    with pytest.raises(RangeError, match=f"{name!r} has values above .* undecoded fill value"):
        lazy.compute()


@pytest.mark.parametrize("key", ["_FillValue", "missing_value"])
@pytest.mark.parametrize("name", ["LITR1_INPUT", "ALTMAX", "TSOI"])
def test_declared_fill_value_is_masked(ds, name, key):
    v = ds[name].values.copy()
    v[..., 0, 0] = 1e36
    bad = _with(ds, name, v, **{key: 1e36})
    expect = _run(_with(ds, name, np.where(v == 1e36, np.nan, v)))
    out = bad.proda.steady_state(_theta())
    np.testing.assert_array_equal(out["soc_stock"].values, expect.values)
    assert "declared fill value" in out.attrs["history"]


@pytest.mark.parametrize("name,factor", [("ALTMAX", 100.0), ("W_SCALAR", 100.0),
                                         ("FPI_vr", 100.0), ("O_SCALAR", 100.0),
                                         ("LITR1_INPUT", 86400 * 31.0 * 1000)])
def test_factor_mistakes_caught_by_upper_bounds(ds, name, factor):
    with pytest.raises(RangeError, match=f"{name!r} has values above"):
        _run(_with(ds, name, ds[name] * factor + (1.0 if name == "ALTMAX" else 0.0))).values


def test_celsius_labelled_kelvin(ds):
    with pytest.raises(RangeError, match="'TSOI' must be in kelvin"):
        _run(_with(ds, "TSOI", ds["TSOI"] - 273.15)).values


@pytest.mark.parametrize("name", ["CWD_INPUT", "ALTMAX", "W_SCALAR"])
def test_negative_values(ds, name):
    with pytest.raises(RangeError, match=f"{name!r} has negative values"):
        _run(_with(ds, name, -ds[name] - 1.0)).values


def test_infinite_values(ds):
    v = ds["TSOI"].values.copy()
    v[0, 0, 0, 0] = np.inf
    with pytest.raises(RangeError, match="'TSOI' contains infinite values"):
        _run(_with(ds, "TSOI", v)).values


@pytest.mark.parametrize("offset,match", [(-1.0, "below 1"), (0.5, "integer layer indices"),
                                          (20.0, "above 20")])
def test_nbedrock_index_checks(ds, offset, match):
    with pytest.raises(RangeError, match=match):
        _run(_with(ds, "nbedrock", ds["nbedrock"] * 0 + 1 + offset if offset != 20.0
                   else ds["nbedrock"] + offset)).values


def test_nan_propagates_as_no_data(ds, ref):
    v = ds["TSOI"].values.copy()
    v[..., 0, 1] = np.nan
    out = _with(ds, "TSOI", v).proda.steady_state(_theta())
    assert np.isnan(out["soc_stock"].values[0, 1])
    assert int(out["flags"].values[0, 1]) & xproda.FLAGS["no_data"]
    keep = np.ones(ref.shape, bool)
    keep[0, 1] = False
    np.testing.assert_array_equal(out["soc_stock"].values[keep], ref.values[keep])


# ------------------------------------------------------------------------ parameters/grids
@pytest.fixture(scope="module")
def theta_grid(ds):
    rng = np.random.default_rng(1)
    return xr.DataArray(rng.uniform(0.2, 0.8, (2, 3, 21)), dims=("lat", "lon", "parameter"),
                        coords={"lat": ds.lat, "lon": ds.lon})


@pytest.fixture(scope="module")
def ref_grid(ds, theta_grid):
    return _run(ds, theta_grid)


def test_params_yx_without_coords_refused(ds, theta_grid):
    bad = theta_grid.rename(lat="y", lon="x").drop_vars(["y", "x"])
    with pytest.raises(GridError, match=r"params on grid \(y=2, x=3\) cannot be matched with "
                                        r"the forcing grid \(lat=2"):
        _run(ds, bad)


def test_params_yx_geographic_with_crs_aligned(ds, theta_grid, ref_grid):
    pytest.importorskip("rioxarray")
    th = theta_grid.rename(lat="y", lon="x").rio.write_crs("EPSG:4326")
    out = _run(ds, th)
    assert out.dims == ("lat", "lon")  # not an outer product (y, x, lat, lon)
    np.testing.assert_array_equal(out.values, ref_grid.values)


def test_params_other_lat_order_and_lon_convention_aligned(ds, theta_grid, ref_grid):
    th = theta_grid.sortby("lat").assign_coords(lon=(theta_grid.lon % 360)).sortby("lon")
    np.testing.assert_array_equal(_run(ds, th).values, ref_grid.values)


def test_params_same_dims_different_size_without_coords(ds, theta_grid):
    bad = theta_grid.isel(lon=slice(0, 2)).drop_vars(["lat", "lon"])
    with pytest.raises(GridError, match="differ in size and have no coordinates"):
        _run(ds, bad)


@pytest.mark.parametrize("dim", ["foo", "time", "band"])
def test_params_unknown_dim_refused(ds, theta_grid, dim):
    with pytest.raises(DimensionError, match=f"params: dim\\(s\\) \\['{dim}'\\]"):
        _run(ds, theta_grid.expand_dims({dim: 2}))


def test_params_member_dim_is_a_batch_dim(ds, theta_grid, ref_grid):
    out = _run(ds, theta_grid.expand_dims(member=3))
    assert out.sizes["member"] == 3
    np.testing.assert_array_equal(out.isel(member=2).values, ref_grid.values)


def test_params_in_another_order_are_reordered(ds, theta_grid, ref_grid):
    names = list(xproda.get_model("clm5").parameters.names)
    th = theta_grid.assign_coords(parameter=names).isel(parameter=slice(None, None, -1))
    np.testing.assert_array_equal(_run(ds, th).values, ref_grid.values)


def test_params_missing_a_parameter(ds, theta_grid):
    names = list(xproda.get_model("clm5").parameters.names)
    th = theta_grid.assign_coords(parameter=names).isel(parameter=slice(1, None))
    with pytest.raises(KeyError, match=names[0]):
        _run(ds, th)


@pytest.mark.parametrize("value", [1.2, -0.1, 0.0, 1.0])
def test_params_outside_unit_interval(ds, value):
    th = _theta().copy(data=np.r_[np.full(20, 0.5), value])
    with pytest.raises(ValueError, match="strictly inside \\(0, 1\\)"):
        _run(ds, th).values


def test_params_nan_is_no_data(ds, theta_grid, ref_grid):
    th = theta_grid.copy()
    th[0, 0, 3] = np.nan
    out = _run(ds, th)
    assert np.isnan(out.values[0, 0]) and np.isfinite(out.values[1:]).all()


# ------------------------------------------------------------------------------ covariates
def test_covariates_missing_feature_named():
    cov = xr.Dataset({"a": (("lat", "lon"), np.zeros((2, 3)))})

    def net(x):
        return np.full((len(x), 21), 0.5)

    with pytest.raises(KeyError, match=r"covariates lack feature\(s\) \['b'\]"):
        cov.proda.predict_parameters(net, features=["a", "b"])


def test_covariates_without_features_refused():
    cov = xr.Dataset({"a": (("lat", "lon"), np.zeros((2, 3)))})
    with pytest.raises(ValueError, match="features are unknown"):
        cov.proda.predict_parameters(lambda x: x)


# ------------------------------------------------------------------------------- transient
@pytest.fixture(scope="module")
def transient_ds(ds):
    from xproda.xr.scenarios import repeat_climatology

    return repeat_climatology(ds, years=2)


def test_transient_unknown_dim_refused(transient_ds):
    bad = transient_ds.assign(TSOI=transient_ds["TSOI"].expand_dims(foo=2))
    with pytest.raises(DimensionError, match="TSOI: dim 'foo'"):
        bad.proda.simulate(_theta())


def test_transient_without_units_refused(transient_ds):
    bad = _with(transient_ds, "ALTMAX", transient_ds["ALTMAX"], units=None)
    with pytest.raises(UnitsError, match="ALTMAX: no 'units' attribute"):
        bad.proda.simulate(_theta())


def test_transient_per_second_inputs_use_the_calendar(transient_ds):
    if "time" not in transient_ds.coords or not hasattr(transient_ds["time"], "dt"):
        pytest.skip("repeat_climatology without datetime time stamps")
    ref = transient_ds.proda.simulate(_theta())["soc_stock"]
    days = transient_ds["time"].dt.days_in_month
    bad = _with(transient_ds, "LITR1_INPUT", transient_ds["LITR1_INPUT"] / (86400 * days),
                units="gC/m^2/s")
    out = bad.proda.simulate(_theta())
    np.testing.assert_allclose(out["soc_stock"].values, ref.values, rtol=1e-11)
    assert "LITR1_INPUT: converted from 'gC/m^2/s'" in out.attrs["history"]


def test_transient_undeclared_fill_refused(transient_ds):
    v = transient_ds["CWD_INPUT"].values.copy()
    v[5, 0, 0] = 1e36
    with pytest.raises(RangeError, match="'CWD_INPUT' has values above"):
        _with(transient_ds, "CWD_INPUT", v).proda.simulate(_theta())["soc_stock"].values


# --------------------------------------------------------------------------------- options
@pytest.mark.parametrize("key,value", [("dtype", "float16"), ("dtype", 64),
                                       ("kernel_batch_size", 0), ("kernel_batch_size", 2.5),
                                       ("kernel_batch_size", True), ("fused_kernels", "yes"),
                                       ("fused_kernels", 1), ("torch_threads", 0),
                                       ("torch_threads", "2"), ("device", 3)])
def test_invalid_option_values(key, value):
    with pytest.raises(OptionError, match=f"invalid value for xproda option {key!r}"):
        xproda.set_options(**{key: value})
    assert xproda.get_options()[key] == xproda.options.DEFAULTS[key]


def test_unknown_option():
    with pytest.raises(OptionError, match="unknown xproda option 'kernel_batchsize'"):
        xproda.set_options(kernel_batchsize=10)


# ------------------------------------------------------------------------------ hypothesis
_UNITS = {  # variable -> [(units, factor from the schema's units)]
    "ALTMAX": [("cm", 100.0), ("mm", 1000.0), ("km", 1e-3), ("m", 1.0), ("dm", 10.0)],
    "CWD_INPUT": [("kg m-2 month-1", 1e-3), ("mg m-2 month-1", 1e3), ("g m-2 month-1", 1.0),
                  ("Mg ha-1 month-1", 1e-2), ("g cm-2 month-1", 1e-4)],
    "LITR2_INPUT": [("kg m-2 month-1", 1e-3), ("t km-2 month-1", 1.0), ("g/m2/month", 1.0)],
    "W_SCALAR": [("%", 100.0), ("1", 1.0), ("permille", 1e3)],
}


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_unit_scalings_equal_the_canonical_input(ds, ref, data):
    name = data.draw(st.sampled_from(sorted(_UNITS)))
    units, factor = data.draw(st.sampled_from(_UNITS[name]))
    out = _run(_with(ds, name, ds[name] * factor, units=units))
    np.testing.assert_allclose(out.values, ref.values, rtol=1e-10)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_fill_values_are_refused(ds, data):
    name = data.draw(st.sampled_from(REQUIRED))
    fill = data.draw(st.one_of(st.floats(1e6, 1e38), st.floats(-1e38, -1e4),
                               st.sampled_from([1e36, -9999.0, -99999.0, 9.96921e36])))
    i, j = data.draw(st.integers(0, 1)), data.draw(st.integers(0, 2))
    v = ds[name].values.copy()
    v[..., i, j] = fill
    with pytest.raises(RangeError, match=f"forcing variable {name!r}"):
        _run(_with(ds, name, v)).values


_FORBIDDEN = {"month", "layer", "parameter", "lat", "lon", "time", *xproda.xr.contract.BATCH_DIMS}


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_random_extra_dims_refused_or_declared(ds, ref, data):
    name = data.draw(st.sampled_from(REQUIRED))
    dim = data.draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=8)
                    .filter(lambda d: d not in _FORBIDDEN and d not in
                            xproda.xr.contract.CLM_LEVEL_DIMS and d.lower() not in
                            {"x", "y", "latitude", "longitude", "site", "cell", "column"}))
    n = data.draw(st.integers(1, 3))
    bad = ds.assign({name: ds[name].expand_dims({dim: n})})
    with pytest.raises(DimensionError, match=f"dim {dim!r}"):
        _run(bad)
    out = _run(bad, batch_dims=[dim])
    assert out.sizes[dim] == n
    np.testing.assert_array_equal(out.isel({dim: n - 1}).values, ref.values)


# ------------------------------------------------------------------------------------ docs
def test_docs_table_matches_the_schema():
    """The forcing table of docs/user-guide/input-contract.md is the schema's."""
    import pathlib

    from xproda.xr.contract import core_dims

    doc = pathlib.Path(__file__).parents[1] / "docs" / "user-guide" / "input-contract.md"
    if not doc.exists():  # pragma: no cover - docs not shipped
        pytest.skip("docs not present")
    text = doc.read_text()
    for k, v in FORCING_SCHEMA.items():
        lo = "" if v.minimum is None else f"{v.minimum:g}"
        hi = "" if v.maximum is None else f"{v.maximum:g}"
        row = (f"| `{k}` | ({', '.join(core_dims(k))}, ...) | `{v.units}` | {lo} .. {hi} | "
               f"{'yes' if v.required else 'no'} | {'integer' if v.integer else ''} |")
        assert row in text, row


# ------------------------------------------------------------------- physical parameters
def _physical(theta_grid):
    m = xproda.get_model("clm5")
    phys = m.parameters.to_physical(theta_grid.values)
    return xr.Dataset({n: (("lat", "lon"), phys[..., i], {"units": p.units})
                       for i, (n, p) in enumerate(zip(m.parameters.names, m.parameters))},
                      coords=theta_grid.drop_vars("parameter", errors="ignore").coords)


def test_physical_params_in_other_units_are_converted(ds, theta_grid, ref_grid):
    phys = _physical(theta_grid)
    np.testing.assert_allclose(_run(ds, phys, normalised=False).values, ref_grid.values,
                               rtol=1e-10)
    days = phys.assign(taucwd=(phys["taucwd"] * 365.0).assign_attrs(units="d"),
                       efolding=(phys["efolding"] * 100).assign_attrs(units="cm"))
    np.testing.assert_allclose(_run(ds, days, normalised=False).values, ref_grid.values,
                               rtol=1e-10)


def test_physical_params_inconvertible_units_refused(ds, theta_grid):
    bad = _physical(theta_grid)
    bad["taucwd"].attrs["units"] = "m"
    with pytest.raises(UnitsError, match="params: taucwd: units 'm' cannot be converted"):
        _run(ds, bad, normalised=False)


def test_normalised_params_with_physical_units_refused(ds, theta_grid):
    names = list(xproda.get_model("clm5").parameters.names)
    normed = theta_grid.assign_coords(parameter=names).to_dataset(dim="parameter")
    normed["taucwd"].attrs["units"] = "yr"
    with pytest.raises(UnitsError, match="taucwd has units 'yr', but normalised parameters"):
        _run(ds, normed)


# --------------------------------------------------------------------- covariate units
@pytest.fixture(scope="module")
def unit_net():
    from xproda.learning.network import ParameterNet

    names = list(xproda.get_model("clm5").parameters.names)
    return ParameterNet(["tas", "elev"], names, hidden=(4,), seed=0, x_min=[-10.0, 0.0],
                        x_max=[30.0, 3000.0], feature_units=["degC", "m"])


def _cov(tas, elev, tas_units="degC", elev_units="m"):
    return xr.Dataset({"tas": (("lat", "lon"), tas, {"units": tas_units}),
                       "elev": (("lat", "lon"), elev, {"units": elev_units})})


def test_covariates_in_other_units_are_converted(unit_net):
    rng = np.random.default_rng(0)
    tas, elev = rng.uniform(-5, 25, (2, 3)), rng.uniform(0, 2000, (2, 3))
    ref = _cov(tas, elev).proda.predict_parameters(unit_net)
    other = _cov(tas + 273.15, elev / 1000, "K", "km").proda.predict_parameters(unit_net)
    np.testing.assert_allclose(other.values, ref.values, rtol=1e-12)


def test_covariates_inconvertible_units_refused(unit_net):
    cov = _cov(np.zeros((2, 3)), np.zeros((2, 3)), elev_units="kg")
    with pytest.raises(UnitsError, match="covariate elev: units 'kg' cannot be converted to the "
                                         "expected 'm'"):
        cov.proda.predict_parameters(unit_net)


def test_covariates_without_units_warn(unit_net):
    cov = _cov(np.zeros((2, 3)), np.zeros((2, 3)))
    del cov["tas"].attrs["units"]
    with pytest.warns(UserWarning, match="covariate 'tas' has no units attribute"):
        cov.proda.predict_parameters(unit_net)


def test_feature_units_survive_save_and_load(unit_net, tmp_path):
    from xproda.learning.network import load_network, save_network

    save_network(unit_net, tmp_path / "net.safetensors")
    assert load_network(tmp_path / "net.safetensors").feature_units == ("degC", "m")


def test_covariates_in_the_trained_units_need_no_parsing():
    """WorldClim-style labels pint cannot read ('degC*100') are fine when unchanged."""
    from xproda.learning.network import ParameterNet

    names = list(xproda.get_model("clm5").parameters.names)
    net = ParameterNet(["bio4"], names, hidden=(2,), seed=0, feature_units=["degC*100"])
    cov = xr.Dataset({"bio4": (("lat", "lon"), np.ones((2, 3)), {"units": "degC*100"})})
    assert np.isfinite(cov.proda.predict_parameters(net).values).all()
    cov["bio4"].attrs["units"] = "K"
    with pytest.raises(UnitsError, match="covariate bio4: cannot read units 'degC\\*100'"):
        cov.proda.predict_parameters(net)


def test_months_out_of_calendar_order_are_reordered(ds, ref):
    july_first = ds.isel(month=np.r_[6:12, 0:6])  # the month coordinate travels along
    out = july_first.proda.steady_state(_theta())
    np.testing.assert_allclose(out["soc_stock"].values, ref.values, rtol=1e-13)
    assert "months reordered to January first" in out.attrs["history"]


def test_month_coordinate_not_a_year_refused(ds):
    bad = ds.assign_coords(month=np.arange(3, 15))
    with pytest.raises(DimensionError, match="TSOI, .*: the coordinate of the .month. dim must hold the 12"):
        _run(bad)


def test_transient_climatology_out_of_order_is_reordered(transient_ds):
    from xproda.xr.scenarios import repeat_climatology

    clim = forcing_dataset(2, 3, seed=7, ocean_fraction=0.0)
    ref = repeat_climatology(clim, years=2).proda.simulate(_theta())["soc_stock"]
    # monthly climatology variables mapped onto time steps by the month of each step
    mixed = repeat_climatology(clim, years=2)
    mixed["TSOI"] = clim["TSOI"].isel(month=np.r_[6:12, 0:6])
    out = mixed.proda.simulate(_theta())["soc_stock"]
    np.testing.assert_allclose(out.values, ref.values, rtol=1e-12)
