"""CLM5/CESM2 monthly history files -> xproda forcing (:mod:`xproda.io.clm`).

The fixture files mimic CLM5 history output as written by CLM5's ``histFileMod.F90``:

- monthly averages (h0 files, ``hist_nhtfrq = 0``), one month per file named
  ``<case>.clm2.h0.YYYY-MM.nc`` (``hist_mfilt = 1``);
- dims ``time`` (unlimited), ``lat``/``lon`` (or ``lndgrid`` for 1-D output on unstructured
  or sparse grids; ``column`` with ``hist_dov2xy = .false.``), ``levgrnd`` (``nlevgrnd`` = 25),
  ``levdcmp`` (``nlevdecomp_full`` = 25 with vertically resolved soil BGC), ``levsoi``
  (``nlevsoi`` = 20) and ``hist_interval`` (2);
- ``time`` in ``days since 0001-01-01 00:00:00``, ``calendar = "noleap"``,
  ``bounds = "time_bounds"``: a monthly mean is stamped with the END of its averaging interval
  (``0001-02-01`` holds January); ``time_bounds(time, hist_interval)``; ``mcdate``
  (YYYYMMDD of the stamp), ``mcsec``, ``nstep``;
- fields in float32 with ``_FillValue = missing_value = 1e36f`` (CLM's ``spval``), ``units``
  and ``long_name`` as CLM writes them (``K``, ``unitless``, ``proportion``, ``gC/m^2/s``,
  ``percent``), ``cell_methods = "time: mean"``;
- level coordinates holding the node depths ``zsoi`` (m); latitudes south to north,
  longitudes 0..360.

Values come from :func:`xproda.testing.forcing_dataset` converted to these conventions
(fluxes per second with the month lengths of the noleap calendar, 25 levels, fills over
ocean), so every round trip can be checked against the hand-made ``month``/``layer`` forcing.
Most fixtures are stored in float64 (CLM writes float32) so that the round trip is exact to
rtol 1e-12; float32 storage is tested on its own with a tolerance derived from its precision.
"""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xproda  # noqa: F401  (registers the .proda accessor)
from xproda import conventions, grid
from xproda.io import clm
from xproda.errors import DimensionError, InputError, UnitsError
from xproda.models.forcing import FORCING_SCHEMA, LAYER_INPUTS, LITTER_INPUTS
from xproda.testing import forcing_dataset, raise_if_dask_computes

DAYS = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=float)
START = np.concatenate([[0.0], np.cumsum(DAYS)[:-1]])
FILL = np.float32(1e36)
THETA = xr.DataArray(np.full(21, 0.5), dims="parameter")
LEVEL_VARS = {"TSOI": "levgrnd", "W_SCALAR": "levdcmp", "O_SCALAR": "levdcmp",
              "FPI_vr": "levdcmp"}
CLM_UNITS = {"TSOI": "K", "W_SCALAR": "unitless", "O_SCALAR": "unitless",
             "FPI_vr": "proportion", "ALTMAX": "m", "ALTMAX_LASTYEAR": "m",
             "nbedrock": "unitless", "NPP": "gC/m^2/s", "CELLSAND": "percent"}
#: values of the 5 bedrock levels (21-25) of each level variable: never read
BEDROCK = {"TSOI": 285.0, "W_SCALAR": 0.3, "O_SCALAR": 0.3, "FPI_vr": 0.3}


# -------------------------------------------------------------------------------------------
# fixtures: hand-made forcing -> CLM history conventions
# -------------------------------------------------------------------------------------------
def hand_forcing(ny=2, nx=3, seed=0, **kw) -> xr.Dataset:
    """The hand-made forcing on CLM's grid order (latitudes ascending, longitudes 0..360)."""
    fc = forcing_dataset(ny, nx, seed=seed, crs=None, **kw)
    fc = fc.drop_vars(["lat_bounds", "lon_bounds"])
    for c in ("lat", "lon"):
        fc[c].attrs.pop("bounds")
    return fc.assign_coords(lon=fc["lon"] % 360).sortby(["lat", "lon"])


def _with_bedrock(values: np.ndarray, extra: float) -> np.ndarray:
    """(12, 20, ...) -> (12, 25, ...): CLM's 25 ground levels (5 bedrock levels)."""
    pad = np.full((values.shape[0], 5) + values.shape[2:], extra)
    return np.concatenate([values, pad], axis=1)


def _time_vars(n_years: int, first_year: int = 1) -> dict:
    end = np.concatenate([365.0 * (first_year - 1 + y) + START + DAYS
                          for y in range(n_years)])
    bounds = np.stack([end - np.tile(DAYS, n_years), end], axis=-1)
    years = np.repeat(np.arange(first_year, first_year + n_years), 12)
    month_end = np.tile(np.arange(2, 14), n_years)
    mcdate = np.where(month_end == 13, (years + 1) * 10000 + 101, years * 10000 + month_end * 100
                      + 1).astype(np.int32)
    return {
        "time": ("time", end, {"long_name": "time", "units": "days since 0001-01-01 00:00:00",
                               "calendar": "noleap", "bounds": "time_bounds"}),
        "time_bounds": (("time", "hist_interval"), bounds,
                        {"long_name": "history time interval endpoints"}),
        "mcdate": ("time", mcdate, {"long_name": "current date (YYYYMMDD)"}),
        "mcsec": ("time", np.zeros(end.size, np.int32),
                  {"long_name": "current seconds of current date", "units": "s"}),
        "nstep": ("time", (end * 48).astype(np.int32), {"long_name": "time step"}),
    }


def _field(values, dims, units, long_name, dtype):
    return xr.Variable(dims, values.astype(dtype),
                       {"long_name": long_name, "units": units, "cell_methods": "time: mean"},
                       encoding={"_FillValue": FILL, "missing_value": FILL})


def clm_raw(fcs, *, dtype=np.float64, litter="total", first_year=1) -> xr.Dataset:
    """A raw CLM5 history Dataset (undecoded, as written) from yearly hand-made forcings.

    ``fcs``: one :func:`hand_forcing` per model year.  ``litter``: ``"total"`` writes the
    column totals ``CWD_INPUT``.. (gC/m^2/s), ``"vector"`` the per-layer
    ``*_ACC_VECTOR`` (gC/m^3 accumulated over the month) on ``levdcmp``.
    """
    fcs = [fcs] if isinstance(fcs, xr.Dataset) else list(fcs)
    ny, nx = fcs[0].sizes["lat"], fcs[0].sizes["lon"]

    def stacked(k):  # (time, ...) over all years
        return np.concatenate([f[k].transpose("month", ...).values for f in fcs])

    data = {}
    for k, lev in LEVEL_VARS.items():
        data[k] = _field(_with_bedrock(stacked(k), BEDROCK[k]), ("time", lev, "lat", "lon"),
                         CLM_UNITS[k], k, dtype)
    for k in ("ALTMAX", "ALTMAX_LASTYEAR", "nbedrock", "NPP"):
        data[k] = _field(stacked(k), ("time", "lat", "lon"), CLM_UNITS[k], k, dtype)
    sand = np.broadcast_to(fcs[0]["CELLSAND"].values, (12 * len(fcs), 20, ny, nx))
    data["CELLSAND"] = _field(sand, ("time", "levsoi", "lat", "lon"), "percent",
                              "percent sand", dtype)
    days = np.tile(DAYS, len(fcs))[:, None, None]
    weights = np.exp(-np.arange(20) / 6.0)
    weights /= weights.sum()
    for k in LITTER_INPUTS:
        monthly = stacked(k)  # g m-2 month-1
        if litter == "total":
            data[k] = _field(monthly / (days * 86400.0), ("time", "lat", "lon"), "gC/m^2/s",
                             k, dtype)
        else:
            vr = monthly[:, None] * (weights / grid.DZ[:20])[None, :, None, None]
            vr = np.concatenate([vr, np.ones((vr.shape[0], 5, ny, nx))], axis=1)
            name = f"{k}_ACC_VECTOR"
            data[name] = _field(vr, ("time", "levdcmp", "lat", "lon"), "gC/m^3", name, dtype)
    coords = {
        "lat": ("lat", fcs[0]["lat"].values.astype(np.float32),
                {"long_name": "coordinate latitude", "units": "degrees_north"}),
        "lon": ("lon", fcs[0]["lon"].values.astype(np.float32),
                {"long_name": "coordinate longitude", "units": "degrees_east"}),
        "levgrnd": ("levgrnd", grid.ZSOI.astype(np.float32),
                    {"long_name": "coordinate ground levels", "units": "m"}),
        "levdcmp": ("levdcmp", grid.ZSOI.astype(np.float32),
                    {"long_name": "coordinate levels for soil decomposition variables",
                     "units": "m"}),
        "levsoi": ("levsoi", grid.ZSOI[:20].astype(np.float32),
                   {"long_name": "coordinate soil levels (equivalent to top nlevsoi levels "
                                 "of levgrnd)", "units": "m"}),
    }
    tv = _time_vars(len(fcs), first_year)
    coords["time"] = tv.pop("time")
    ds = xr.Dataset(data, coords={**coords})
    for k, v in tv.items():
        ds[k] = v
    ds.attrs = {"title": "CLM History file information", "source": "Community Terrestrial "
                "Systems Model", "case_id": "test_case", "Conventions": "CF-1.0",
                "hostname": "test", "history": "created on 01/01/20 00:00:00"}
    return ds


def write(raws, directory, name="case.clm2.h0") -> list[str]:
    """Write raw Datasets as CLM history files (undecoded numbers, CLM's encodings)."""
    paths = []
    for i, raw in enumerate([raws] if isinstance(raws, xr.Dataset) else raws):
        path = str(directory / f"{name}.{i:04d}.nc")
        enc = {k: {"_FillValue": None} for k in raw.variables
               if "_FillValue" not in raw[k].encoding and "missing_value" not in raw[k].encoding}
        raw.to_netcdf(path, encoding=enc, unlimited_dims=["time"])
        paths.append(path)
    return paths


def per_month(raw: xr.Dataset) -> list[xr.Dataset]:
    """One Dataset per month, like CLM's h0 files with hist_mfilt = 1."""
    return [raw.isel(time=[i]) for i in range(raw.sizes["time"])]


def to_cells(raw: xr.Dataset, dim: str = "lndgrid") -> xr.Dataset:
    """1-D CLM output: land cells only on ``dim`` with 1-D latitude/longitude variables.

    ``lndgrid`` (unstructured/sparse grids) stores them as ``lat``/``lon``; ``column``
    (``hist_dov2xy = .false.``) as ``cols1d_lat``/``cols1d_lon``.
    """
    st = raw.stack({dim: ("lat", "lon")})
    land = np.isfinite(st["ALTMAX"].isel(time=0).values)
    st = st.isel({dim: np.flatnonzero(land)})
    lat, lon = st["lat"].values.astype(np.float32), st["lon"].values.astype(np.float32)
    st = st.drop_vars([dim, "lat", "lon"])
    names = ("lat", "lon") if dim == "lndgrid" else ("cols1d_lat", "cols1d_lon")
    st[names[0]] = (dim, lat, {"long_name": "coordinate latitude", "units": "degrees_north"})
    st[names[1]] = (dim, lon, {"long_name": "coordinate longitude", "units": "degrees_east"})
    for k in st.data_vars:
        if dim in st[k].dims:
            st[k] = st[k].transpose(..., dim)
            st[k].encoding = raw[k].encoding if k in raw else {}
    return st


def add_lake_columns(cols: xr.Dataset) -> xr.Dataset:
    """Natural vegetated columns (landunit 1) plus a deep-lake column (landunit 5) per cell."""
    n = cols.sizes["column"]
    lake = cols.copy(deep=True)
    lake["TSOI"] = lake["TSOI"] + 7.0
    both = xr.concat([cols, lake], dim="column", data_vars="minimal", coords="minimal",
                     compat="override")
    for k in ("cols1d_lat", "cols1d_lon"):
        both[k] = ("column", np.concatenate([cols[k].values] * 2), cols[k].attrs)
    both["cols1d_itype_lunit"] = ("column", np.repeat(np.array([1, 5], np.int32), n),
                                  {"long_name": "column landunit type (vegetated,urban,lake,"
                                                "wetland,glacier or glacier_mdc)"})
    for k in cols.data_vars:
        if "column" in cols[k].dims:
            both[k].encoding = cols[k].encoding
    return both


@pytest.fixture(scope="module")
def hand():
    return hand_forcing()


@pytest.fixture(scope="module")
def clean(tmp_path_factory, hand):
    """The climatology from a clean float64 CLM file (reference of the bad-input cases)."""
    d = tmp_path_factory.mktemp("clean")
    return clm.clm_climatology(write(clm_raw(hand), d)).load()


def assert_values(got: xr.Dataset, ref: xr.Dataset, names=None, rtol=1e-12):
    for k in names or ref.data_vars:
        a, b = got[k], ref[k]
        assert a.dims == b.dims, (k, a.dims, b.dims)
        np.testing.assert_allclose(a.values, b.values, rtol=rtol, atol=0, equal_nan=True,
                                   err_msg=str(k))


# -------------------------------------------------------------------------------------------
# round trips
# -------------------------------------------------------------------------------------------
def test_climatology_matches_hand_made_forcing(tmp_path, hand):
    clim = clm.clm_climatology(write(clm_raw(hand), tmp_path))
    assert_values(clim, hand)
    assert clim["TSOI"].dims == ("month", "layer", "lat", "lon")
    assert clim["CELLSAND"].dims == ("layer", "lat", "lon")
    assert list(clim["month"].values) == list(range(1, 13))
    got = clim.proda.steady_state(THETA)["soc_stock"]
    want = hand.proda.steady_state(THETA)["soc_stock"]
    assert np.isfinite(want).sum() > 0
    np.testing.assert_allclose(got.values, want.values, rtol=1e-12, equal_nan=True)


def test_float32_storage(tmp_path, hand):
    """CLM writes float32: the inputs are rounded to 2**-24 relative (6e-8).

    The steady state is linear in the litter inputs (error ~1e-7) and depends on TSOI through
    Q10 ** (T/10): float32 spacing at 300 K is 3e-5 K, which moves soc_stock by
    ~ln(Q10)/10 x 1.5e-5 ~ 3e-6 relative.  rtol 2e-5 leaves a margin of ~5 over both.
    """
    clim = clm.clm_climatology(write(clm_raw(hand, dtype=np.float32), tmp_path))
    assert_values(clim, hand, rtol=1e-6)
    assert all(clim[k].dtype == np.float64 for k in clim.data_vars)
    got = clim.proda.steady_state(THETA)["soc_stock"]
    want = hand.proda.steady_state(THETA)["soc_stock"]
    np.testing.assert_allclose(got.values, want.values, rtol=2e-5, equal_nan=True)


def test_multi_year_climatology_over_chosen_years(tmp_path):
    """Year-to-year variation, one file per month (48 files): years=(2, 3) is their mean."""
    base = hand_forcing()
    fcs = []
    for y in range(1, 5):
        f = base.copy(deep=True)
        f["TSOI"] = f["TSOI"] + 0.7 * y
        f["W_SCALAR"] = f["W_SCALAR"] * (1 - 0.05 * y)
        f["ALTMAX"] = f["ALTMAX"] * (1 + 0.1 * y)
        for k in LITTER_INPUTS:
            f[k] = f[k] * (1 + 0.2 * y)
        fcs.append(f)
    paths = write(per_month(clm_raw(fcs)), tmp_path)
    assert len(paths) == 48
    clim = clm.clm_climatology(str(tmp_path / "*.nc"), years=(2, 3))
    want = (fcs[1] + fcs[2]) / 2
    assert_values(clim, want, names=["TSOI", "W_SCALAR", "ALTMAX", "NPP", *LITTER_INPUTS])
    # the same from the opened time series
    ts = clm.open_clm_history(paths)
    assert ts.sizes["time"] == 48
    assert_values(clm.clm_climatology(ts, years=(2, 3)), clim)


def test_time_labels_are_the_month_averaged(tmp_path, hand):
    """January is stamped 0001-02-01: labelled January, converted with 31 days."""
    raw = clm_raw(hand).isel(time=[0])
    ts = clm.open_clm_history(write(raw, tmp_path))
    t = ts["time"].isel(time=0)
    assert (int(t.dt.year), int(t.dt.month), int(t.dt.day)) == (1, 1, 16)
    assert ts["time_bounds"].shape == (1, 2)
    assert ts["time"].attrs["bounds"] == "time_bounds"
    np.testing.assert_allclose(ts["CWD_INPUT"].isel(time=0).values,
                               hand["CWD_INPUT"].isel(month=0).values, rtol=1e-12)
    # stamped one day back without bounds
    raw = raw.drop_vars("time_bounds")
    del raw["time"].attrs["bounds"]
    ts = clm.open_clm_history(write(raw, tmp_path, name="nobounds"))
    t = ts["time"].isel(time=0)
    assert (int(t.dt.month), int(t.dt.day)) == (1, 31)


def test_outputs_follow_the_contract(tmp_path, hand):
    ts = clm.open_clm_history(write(clm_raw(hand), tmp_path))
    for k in ts.data_vars:
        assert ts[k].attrs == conventions.forcing_attrs(k), k
        assert ts[k].encoding == {}
    assert ts["TSOI"].dims == ("time", "layer", "lat", "lon")
    assert ts["lat"].attrs["standard_name"] == "latitude"
    assert ts["lon"].attrs["units"] == "degrees_east"
    assert ts["depth"].attrs["units"] == "m"
    hist = ts.attrs["history"]
    assert "CWD_INPUT: converted from 'gC/m^2/s' to 'g m-2 month-1'" in hist
    assert "CELLSAND: time-invariant" in hist
    assert set(ts.data_vars) == set(FORCING_SCHEMA) - set(LAYER_INPUTS)


def test_climatology_is_lazy(tmp_path, hand):
    ts = clm.open_clm_history(write(per_month(clm_raw(hand)), tmp_path))
    with raise_if_dask_computes():
        clim = clm.clm_climatology(ts)
    assert all(clim[k].chunks is not None for k in clim.data_vars)


def test_lndgrid_layout_equals_latlon(tmp_path, hand):
    raw = clm_raw(hand)
    latlon = clm.clm_climatology(write(raw, tmp_path, name="ll"))
    cells = clm.clm_climatology(write(to_cells(raw), tmp_path, name="ug"))
    assert cells["TSOI"].dims == ("month", "layer", "lndgrid")
    assert cells["lat"].dims == ("lndgrid",)
    assert cells["lat"].attrs["standard_name"] == "latitude"
    at = {"lat": cells["lat"], "lon": cells["lon"]}
    assert_values(cells, latlon.sel(at))
    a = cells.proda.steady_state(THETA)["soc_stock"]
    b = latlon.proda.steady_state(THETA)["soc_stock"].sel(at)
    np.testing.assert_allclose(a.values, b.values, rtol=1e-12)


def test_column_output_keeps_soil_columns(tmp_path, hand):
    raw = clm_raw(hand)
    cols = add_lake_columns(to_cells(raw, "column"))
    ts = clm.open_clm_history(write(cols, tmp_path))
    assert ts.sizes["column"] == cols.sizes["column"] // 2
    assert "kept" in ts.attrs["history"]
    latlon = clm.open_clm_history(write(raw, tmp_path, name="ll"))
    at = {"lat": ts["lat"], "lon": ts["lon"]}
    assert_values(ts, latlon.sel(at), names=["TSOI", "W_SCALAR", "CWD_INPUT"])


def test_transient_run_reads_time(tmp_path):
    """2 model years x 4 cells: the run uses the files' monthly steps."""
    fc = hand_forcing(ny=2, nx=2, ocean_fraction=0.0)
    ts = clm.open_clm_history(write(clm_raw([fc, fc]), tmp_path))
    assert ts.sizes["time"] == 24
    out = ts.proda.simulate(THETA)
    assert out["soc_stock"].sizes["time"] == 24
    assert np.isfinite(out["soc_stock"].values).all()
    from xproda.xr.scenarios import repeat_climatology

    ref = repeat_climatology(fc, years=2).proda.simulate(THETA)
    np.testing.assert_allclose(out["soc_stock"].values, ref["soc_stock"].values, rtol=1e-10)


def test_nbedrock_kept_one_based(tmp_path, hand):
    ts = clm.open_clm_history(write(clm_raw(hand), tmp_path))
    nb = ts["nbedrock"].values
    assert np.nanmin(nb) >= 1 and np.nanmax(nb) <= 20
    np.testing.assert_array_equal(nb, hand["nbedrock"].transpose("month", ...).values)


@pytest.mark.parametrize("how", ["decoded", "undecoded", "gregorian"])
def test_opened_datasets(tmp_path, hand, clean, how):
    """A raw CLM Dataset opened by the caller (decoded or not; numpy datetimes) is read too."""
    raw = clm_raw(hand)
    if how == "gregorian":  # datetime64 times: 2001 has the month lengths of noleap
        raw["time"].attrs.update(units="days since 2001-01-01 00:00:00", calendar="gregorian")
    path = write(raw, tmp_path)[0]
    ds = xr.open_dataset(path, decode_cf=how != "undecoded")
    if how == "gregorian":
        assert ds["time"].dtype.kind == "M"
    clim = clm.clm_climatology(ds)
    assert_values(clim, clean)
    assert clim.attrs["source"].endswith(".nc")


def test_open_errors_on_paths(tmp_path):
    with pytest.raises(InputError, match="no file matches"):
        clm.open_clm_history(str(tmp_path / "nothing*.nc"))
    with pytest.raises(InputError, match="not found"):
        clm.open_clm_history(str(tmp_path / "missing.nc"))


# -------------------------------------------------------------------------------------------
# bad inputs: a clear error, or the same result as the clean file
# -------------------------------------------------------------------------------------------
def _set(raw, name, values=None, units=None):
    raw = raw.copy()
    if values is not None:
        raw[name] = raw[name].copy(data=values)
        raw[name].encoding = {"_FillValue": FILL, "missing_value": FILL}
    if units is not None:
        raw[name].attrs["units"] = units
    return raw


def undeclared_fills(raw):
    raw = raw.copy()
    for k in raw.data_vars:
        if raw[k].dtype.kind == "f" and "time" in raw[k].dims and k != "time_bounds":
            raw[k] = raw[k].fillna(1e36)
            raw[k].encoding = {}
    return raw


def missing_value_only(raw):
    raw = raw.copy()
    for k in ("TSOI", "ALTMAX", "CWD_INPUT"):
        raw[k].encoding = {"missing_value": FILL, "_FillValue": None}
        raw[k] = raw[k].fillna(1e36)
    return raw


def relabel_time(raw, step_days):
    """The same fields on a time axis of ``step_days``-long steps."""
    raw = raw.copy()
    end = step_days * np.arange(1, raw.sizes["time"] + 1, dtype=float)
    raw = raw.assign_coords(time=("time", end, raw["time"].attrs))
    raw["time_bounds"] = (("time", "hist_interval"), np.stack([end - step_days, end], -1),
                          raw["time_bounds"].attrs)
    return raw


def to_acc_vectors(hand, **kw):
    return clm_raw(hand, litter="vector", **kw)


def cut_levels(raw, dim, n):
    return raw.isel({dim: slice(0, n)})


def drop_month(raw, month):
    return raw.isel(time=[i for i in range(raw.sizes["time"]) if i % 12 != month - 1])


def int_nbedrock(raw):
    raw = raw.copy()
    nb = raw["nbedrock"].fillna(-9999).astype(np.int32)
    raw["nbedrock"] = nb
    raw["nbedrock"].encoding = {"_FillValue": np.int32(-9999)}
    return raw


def npp_on_patches(raw):
    raw = raw.copy()
    raw["NPP"] = xr.Variable(("time", "pft"), np.ones((raw.sizes["time"], 3)),
                             {"units": "gC/m^2/s"})
    return raw


def no_bounds_attr(raw):
    raw = raw.copy()
    raw["time"].attrs = {k: v for k, v in raw["time"].attrs.items() if k != "bounds"}
    return raw


def no_bounds(raw):
    return no_bounds_attr(raw).drop_vars("time_bounds")


def bnds_name(raw):
    raw = no_bounds_attr(raw).rename({"time_bounds": "time_bnds"})
    raw["time"].attrs["bounds"] = "time_bnds"
    return raw


def no_units_altmax(raw):
    raw = raw.copy()
    raw["ALTMAX"].attrs = {k: v for k, v in raw["ALTMAX"].attrs.items() if k != "units"}
    return raw


def wrong_depths(raw):
    return raw.assign_coords(levgrnd=raw["levgrnd"] * 2)


def level_mean(raw):
    raw = raw.copy()
    raw["W_SCALAR"] = raw["W_SCALAR"].mean("levdcmp")
    raw["W_SCALAR"].encoding = {"_FillValue": FILL}
    return raw


OK = None
BAD_CASES = [
    # fills
    ("undeclared 1e36 fill", undeclared_fills, {}, OK),
    ("missing_value only", missing_value_only, {}, OK),
    ("int nbedrock with fill", int_nbedrock, {}, OK),
    # units converted
    ("TSOI in degC", lambda r: _set(r, "TSOI", r["TSOI"].values - 273.15, "degC"), {}, OK),
    ("ALTMAX in cm", lambda r: _set(r, "ALTMAX", r["ALTMAX"].values * 100, "cm"), {}, OK),
    ("ALTMAX_LASTYEAR in mm",
     lambda r: _set(r, "ALTMAX_LASTYEAR", r["ALTMAX_LASTYEAR"].values * 1000, "mm"), {}, OK),
    ("LITR1_INPUT in kg m-2 s-1",
     lambda r: _set(r, "LITR1_INPUT", r["LITR1_INPUT"].values / 1000, "kg m-2 s-1"), {}, OK),
    ("CWD_INPUT per day",
     lambda r: _set(r, "CWD_INPUT", r["CWD_INPUT"].values * 86400, "gC/m^2/d"), {}, OK),
    ("O_SCALAR as 'fraction'", lambda r: _set(r, "O_SCALAR", units="fraction"), {}, OK),
    ("CELLSAND as '%'", lambda r: _set(r, "CELLSAND", units="%"), {}, OK),
    # units refused
    ("W_SCALAR in K", lambda r: _set(r, "W_SCALAR", units="K"), {},
     (UnitsError, r"W_SCALAR: units 'K' cannot be converted to the expected '1'.*clm_bad")),
    ("TSOI unreadable units", lambda r: _set(r, "TSOI", units="kelvins_ish"), {},
     (UnitsError, r"TSOI: cannot read units 'kelvins_ish'.*clm_bad")),
    ("ALTMAX without units", no_units_altmax, {},
     (UnitsError, r"ALTMAX in .*clm_bad.*no 'units' attribute; expected 'm'")),
    ("litter input as a density", lambda r: _set(r, "CWD_INPUT", units="gC/m^3"), {},
     (UnitsError, r"CWD_INPUT: units 'gC/m\^3' cannot be converted to the expected 'g m-2'")),
    # variables
    ("TSOI missing", lambda r: r.drop_vars("TSOI"), {},
     (InputError, r"TSOI: TSOI \[K, on levgrnd\]")),
    ("litter input missing", lambda r: r.drop_vars("LITR2_INPUT"), {},
     (InputError, r"LITR2_INPUT: LITR2_INPUT \[gC/m\^2/s\] or LITR2_INPUT_ACC_VECTOR")),
    ("optional NPP missing", lambda r: r.drop_vars("NPP"), {}, OK),
    ("unknown variable requested", lambda r: r, {"variables": ["TSOI", "FOO"]},
     (InputError, "unknown forcing name.*FOO")),
    ("requested optional missing", lambda r: r.drop_vars("CELLSAND"),
     {"variables": ["CELLSAND"]}, (InputError, r"CELLSAND: CELLSAND \[percent, on levsoi\]")),
    ("fields on two layouts", npp_on_patches, {},
     (DimensionError, r"different horizontal layouts.*NPP on \('pft',\)")),
    # levels
    ("15 ground levels", lambda r: cut_levels(r, "levgrnd", 15), {},
     (DimensionError, r"TSOI in .*clm_bad.*15 levels on 'levgrnd'")),
    ("1 decomposition level", lambda r: cut_levels(r, "levdcmp", 1), {},
     (DimensionError, r"W_SCALAR in .*1 levels on 'levdcmp'")),
    ("20 decomposition levels", lambda r: cut_levels(r, "levdcmp", 20), {}, OK),
    ("level depths not CLM5", wrong_depths, {},
     (DimensionError, r"TSOI in .*depths of 'levgrnd'.*not CLM5's layer nodes")),
    ("no level dim", level_mean, {}, (DimensionError, r"W_SCALAR in .*expected one CLM level")),
    # time
    ("daily time axis", lambda r: relabel_time(r, 1.0), {},
     (DimensionError, r"time in .*clm_bad.*steps of 1 days; expected monthly")),
    ("annual time axis", lambda r: relabel_time(r, 365.0), {},
     (DimensionError, r"steps of 365 days; expected monthly")),
    ("no time_bounds", no_bounds, {}, OK),
    ("time_bnds", bnds_name, {}, OK),
    ("bounds not declared on time", no_bounds_attr, {}, OK),
    ("files in reverse order", lambda r: per_month(r)[::-1], {}, OK),
    ("file given twice", lambda r: [r, r], {},
     (DimensionError, "January of year 1.* more than once")),
    ("March missing", lambda r: drop_month(r, 3), {},
     (InputError, r"March of year 1 missing in model years 1\.\.1")),
    ("years outside the files", lambda r: r, {"years": (5, 6)},
     (InputError, r"years=\(5, 6\): no time step.*holds years 1\.\.1")),
    ("years reversed", lambda r: r, {"years": (2, 1)}, (InputError, "after the last")),
]


@pytest.mark.parametrize("mutate,kwargs,expect", [c[1:] for c in BAD_CASES],
                         ids=[c[0] for c in BAD_CASES])
def test_bad_inputs(tmp_path, hand, clean, mutate, kwargs, expect):
    paths = write(mutate(clm_raw(hand)), tmp_path, name="clm_bad")
    if expect is OK:
        got = clm.clm_climatology(paths, **kwargs)
        assert_values(got, clean, names=[k for k in clean.data_vars if k in got])
        return
    exc, match = expect
    with pytest.raises(exc, match=match):
        clm.clm_climatology(paths, **kwargs)


def test_undeclared_fills_are_recorded(tmp_path, hand):
    ts = clm.open_clm_history(write(undeclared_fills(clm_raw(hand)), tmp_path))
    assert "TSOI: no _FillValue/missing_value declared; values of magnitude above 1e+30" in \
        ts.attrs["history"]
    assert np.isnan(ts["TSOI"].values).any() and np.nanmax(ts["TSOI"].values) < 400


def test_acc_vectors_give_layer_and_column_inputs(tmp_path, hand, clean):
    ts = clm.clm_climatology(write(to_acc_vectors(hand), tmp_path))
    assert_values(ts, clean, names=list(LITTER_INPUTS))
    for k in LAYER_INPUTS:
        assert ts[k].dims == ("month", "layer", "lat", "lon")
        assert ts[k].attrs["units"] == "g m-3 month-1"
    assert "accumulated over each month" in ts.attrs["history"]
    # the per-layer inputs in kgC/m^3 are scaled
    raw = to_acc_vectors(hand)
    raw = _set(raw, "CWD_INPUT_ACC_VECTOR", raw["CWD_INPUT_ACC_VECTOR"].values / 1000,
               "kgC/m^3")
    kg = clm.clm_climatology(write(raw, tmp_path, name="kg"))
    assert_values(kg, ts)
