"""Reading CLM5/CESM2 monthly history output into xproda's forcing contract.

CLM5 writes its monthly history files (``<case>.clm2.h0.YYYY-MM.nc``, ``hist_nhtfrq = 0``)
with its own conventions (``histFileMod``); this module turns them into the forcing of
:data:`~xproda.models.forcing.FORCING_SCHEMA` (spec §4):

- **levels**: ``TSOI`` on ``levgrnd`` (25 ground levels), ``W_SCALAR``, ``O_SCALAR``,
  ``FPI_vr`` and the ``*_INPUT_ACC_VECTOR`` litter inputs on ``levdcmp`` (20 or 25
  decomposition levels), ``CELLSAND`` on ``levsoi``/``levgrnd``: the first 20 levels become
  the ``layer`` dim (their depths are checked against :data:`xproda.grid.ZSOI`);
- **fill values**: ``_FillValue``/``missing_value`` (1e36, float32) are decoded to NaN, and
  values of magnitude above :data:`FILL_THRESHOLD` are NaN too (fills written without a
  declaration; recorded in ``history``);
- **time**: CLM stamps a monthly mean with the *end* of its averaging interval
  (``0001-02-01 00:00`` holds January).  The ``time`` labels returned are the midpoints of
  ``time_bounds``/``time_bnds`` when present, else the stamp minus one day, so that
  ``time.dt.year``/``time.dt.month`` name the month averaged;
- **units**: read from the ``units`` attributes with :mod:`xproda.units` (CLM spellings such
  as ``gC/m^2/s``, ``unitless``, ``proportion``, ``percent``) and converted to the schema
  units, each conversion recorded in ``history``; litter fluxes per second become monthly
  amounts with the length of each month of the file's calendar;
- **grids**: regular ``lat``/``lon`` files, 1-D ``lndgrid`` files (unstructured or sparse
  grids; ``lat``/``lon`` over ``lndgrid``) and 1-D ``column``/``gridcell`` files
  (``hist_dov2xy = .false.``; ``cols1d_lat``/``grid1d_lat``... coordinates).

>>> from xproda.io.clm import CLM_VARIABLES, clm_climatology
>>> CLM_VARIABLES["CWD_INPUT_vr"].describe()
'CWD_INPUT_ACC_VECTOR [gC/m^3 per month, on levdcmp]'
>>> clim = clm_climatology("case.clm2.h0.*.nc", years=(661, 680))  # doctest: +SKIP
>>> out = clim.proda.steady_state(theta)  # doctest: +SKIP
"""

from __future__ import annotations

import calendar
import datetime
import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from glob import glob
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from xproda import conventions, grid, units
from xproda.errors import DimensionError, InputError, UnitsError
from xproda.models.forcing import FORCING_SCHEMA, LAYER_INPUTS, LITTER_INPUTS

__all__ = [
    "CLM_VARIABLES",
    "FILL_THRESHOLD",
    "SOIL_LANDUNITS",
    "ClmSource",
    "clm_climatology",
    "open_clm_history",
]

#: values of larger magnitude are fill values (CLM's ``spval`` is 1e36)
FILL_THRESHOLD = 1e30
#: CLM landunit types (``cols1d_itype_lunit``) of the columns kept from 1-D ``column``
#: output: 1 natural vegetated (``istsoil``), 2 crop (``istcrop``) -- the soil columns on
#: which CLM5 runs its soil biogeochemistry
SOIL_LANDUNITS = (1, 2)
#: CLM history level dims, in order of preference
LEVEL_DIMS = ("levdcmp", "levgrnd", "levsoi")
#: 1-D cell dims of CLM output and the variables holding their latitude/longitude
_CELL_COORDS = {
    "lndgrid": ("lat", "lon"),
    "column": ("cols1d_lat", "cols1d_lon"),
    "gridcell": ("grid1d_lat", "grid1d_lon"),
}
#: CLM spellings of "no unit" missing from :data:`xproda.units.NO_UNITS`
_CLM_NO_UNITS = frozenset({"proportion", "ratio"})
#: ``time`` attrs of the returned Dataset (also marks a Dataset already converted here)
_TIME_ATTRS = conventions.attrs("time", section="clm")
_BOUNDS_NAMES = ("time_bounds", "time_bnds")
#: monthly amounts (schema units) and the same amount without "per month"
_AMOUNTS = {"g m-2 month-1": "g m-2", "g m-3 month-1": "g m-3"}
_N = grid.N_LAYERS


@dataclass(frozen=True)
class ClmSource:
    """Where a forcing variable comes from in CLM5 history output.

    Attributes
    ----------
    clm_name : str
        CLM history field name.
    clm_units : str
        Units CLM writes (for messages; the file's ``units`` attribute is what is read).
    levels : str or None
        CLM level dim (``levgrnd``, ``levdcmp``, ``levsoi``) of per-level fields.
    """

    clm_name: str
    clm_units: str
    levels: str | None = None

    def describe(self) -> str:
        """``"NAME [units, on level-dim]"``, as in error messages."""
        on = f", on {self.levels}" if self.levels else ""
        return f"{self.clm_name} [{self.clm_units}{on}]"


def _sources() -> dict[str, ClmSource]:
    out = {
        "TSOI": ClmSource("TSOI", "K", "levgrnd"),
        "W_SCALAR": ClmSource("W_SCALAR", "unitless", "levdcmp"),
        "O_SCALAR": ClmSource("O_SCALAR", "unitless", "levdcmp"),
        "FPI_vr": ClmSource("FPI_vr", "proportion", "levdcmp"),
        "ALTMAX": ClmSource("ALTMAX", "m"),
        "ALTMAX_LASTYEAR": ClmSource("ALTMAX_LASTYEAR", "m"),
        "nbedrock": ClmSource("nbedrock", "unitless"),
        "NPP": ClmSource("NPP", "gC/m^2/s"),
        "CELLSAND": ClmSource("CELLSAND", "percent", "levsoi"),
    }
    for total, vr in zip(LITTER_INPUTS, LAYER_INPUTS):
        out[total] = ClmSource(total, "gC/m^2/s")
        out[vr] = ClmSource(f"{total}_ACC_VECTOR", "gC/m^3 per month", "levdcmp")
    return out


#: forcing name -> its CLM history field (column-total litter inputs are summed from the
#: per-layer ``*_ACC_VECTOR`` fields when the file has no column totals)
CLM_VARIABLES: dict[str, ClmSource] = _sources()
_DERIVED = dict(zip(LITTER_INPUTS, LAYER_INPUTS))
_AUX = ("time_bounds", "time_bnds", "lat", "lon", "cols1d_itype_lunit",
        *(c for pair in _CELL_COORDS.values() for c in pair))


# -------------------------------------------------------------------------------------------
# public API
# -------------------------------------------------------------------------------------------
def open_clm_history(
    paths: str | os.PathLike | Sequence[str | os.PathLike] | xr.Dataset,
    *,
    years: tuple[int, int] | None = None,
    chunks: Any = None,
    variables: Iterable[str] | None = None,
    engine: str | None = None,
    landunits: Sequence[int] = SOIL_LANDUNITS,
) -> xr.Dataset:
    """Forcing from CLM5 monthly history files, keeping the monthly ``time`` dim.

    Parameters
    ----------
    paths : str, path, sequence of them, or Dataset
        One file, a glob (``"case.clm2.h0.*.nc"``), a list of files, or an already opened
        raw CLM history Dataset.  Files are combined along ``time`` with
        :func:`xarray.open_mfdataset` (CF decoding on, cftime dates).
    years : (int, int), optional
        First and last model year (inclusive) to keep, by the corrected time labels (see
        Notes).
    chunks : optional
        Dask chunks passed to :func:`xarray.open_mfdataset` (default: one chunk per file).
    variables : iterable of str, optional
        Forcing names (:data:`~xproda.models.forcing.FORCING_SCHEMA` keys) to return.  Default:
        every one found; the required ones (``TSOI``, ``W_SCALAR``, ``O_SCALAR``, ``FPI_vr``,
        ``ALTMAX``, ``ALTMAX_LASTYEAR``, ``nbedrock`` and the four litter inputs) must be.
    engine : str, optional
        xarray backend (e.g. ``"netcdf4"``, ``"h5netcdf"``).
    landunits : sequence of int, default (1, 2)
        For 1-D ``column`` output with ``cols1d_itype_lunit``: the CLM landunit types kept
        (1 natural vegetated, 2 crop: the columns with soil biogeochemistry; lakes,
        glaciers, wetlands and urban columns are dropped).

    Returns
    -------
    Dataset
        Lazy (dask) forcing with dims ``(time, layer, <cells>)`` (``TSOI``, ``W_SCALAR``,
        ``O_SCALAR``, ``FPI_vr``, ``*_INPUT_vr``), ``(time, <cells>)`` and ``(layer, <cells>)``
        (``CELLSAND``, time-invariant: the first step), ``<cells>`` being ``(lat, lon)``,
        ``lndgrid``, ``column`` or ``gridcell``.  Units are the schema's: ``TSOI`` K,
        ``ALTMAX``/``ALTMAX_LASTYEAR`` m, ``NPP`` g m-2 s-1, ``CELLSAND`` %, scalars and
        ``nbedrock`` 1, litter inputs g m-2 month-1 (column totals) and g m-3 month-1 (by
        layer).  Values are float64.  Variable attrs are ``units`` and ``long_name`` from
        :func:`xproda.conventions.forcing_attrs`; ``time`` has ``time_bounds``; ``history``
        records every conversion.

    Raises
    ------
    InputError
        No file found, a variable missing (listed with the CLM names and units expected),
        ``years`` outside the files.
    UnitsError
        A ``units`` attribute missing, unreadable or not convertible to the schema units
        (naming the variable and the file).
    DimensionError
        A ``time`` axis that is not monthly or holds a month twice, fewer than 20 levels,
        levels that are not CLM5's depths, variables on different horizontal layouts.

    Notes
    -----
    *Time stamps.*  CLM stamps each monthly mean with the end of its averaging interval:
    ``0001-02-01 00:00`` holds January of year 1.  The ``time`` labels returned are the
    midpoints of ``time_bounds`` (or ``time_bnds``) when the file has them, else the stamp
    shifted back by one day; ``years`` and the month lengths of the flux conversions use
    these labels.

    *Litter inputs.*  Column totals ``CWD_INPUT``, ``LITR1_INPUT``.. (a flux, e.g.
    ``gC/m^2/s``) are converted to g m-2 month-1 with the days of each month of the file's
    calendar.  The per-layer ``*_INPUT_ACC_VECTOR`` fields (``gC/m^3``, the amount
    accumulated over the month; spec §4.2) become ``*_INPUT_vr`` (g m-3 month-1), and, where
    the file has no column totals, the totals ``sum_j value_j dz_j`` over the first 20
    layers (:data:`xproda.grid.DZ`).

    *nbedrock* is CLM's ``col%nbedrock``, a Fortran (1-based) index of the deepest soil
    layer above bedrock (3..20 in CLM5), written as a real number: it is kept as it is
    (1-based, as the schema expects); values outside 1..20 are refused when a model runs.

    *Not read*: ``T_SCALAR`` and ``SOILPSI`` (no model uses them; spec §4.2).
    """
    if isinstance(paths, xr.Dataset):
        raw, source = _decode(paths), str(paths.encoding.get("source", "<Dataset>"))
    else:
        files = _resolve_paths(paths)
        source = files[0] if len(files) == 1 else f"{len(files)} files {files[0]} .. {files[-1]}"
        raw = xr.open_mfdataset(
            files, combine="nested", concat_dim="time", data_vars="minimal", coords="minimal",
            compat="override", chunks=chunks, engine=engine, preprocess=_keep_needed,
            decode_times=xr.coders.CFDatetimeCoder(use_cftime=True),
        )
    return _to_contract(raw, source=source, years=years, variables=variables,
                        landunits=tuple(landunits))


def clm_climatology(
    ds_or_paths: xr.Dataset | str | os.PathLike | Sequence[str | os.PathLike],
    *,
    years: tuple[int, int] | None = None,
    chunks: Any = None,
    variables: Iterable[str] | None = None,
    engine: str | None = None,
    landunits: Sequence[int] = SOIL_LANDUNITS,
) -> xr.Dataset:
    """The 12-month forcing climatology of a steady-state run from CLM5 history output.

    Parameters
    ----------
    ds_or_paths : Dataset, str, path or sequence
        The result of :func:`open_clm_history`, a raw CLM history Dataset, or files (as for
        :func:`open_clm_history`).
    years : (int, int), optional
        First and last model year (inclusive) averaged; default every year of the input.
        Every calendar month must be present in every chosen year.
    chunks, variables, engine, landunits
        As for :func:`open_clm_history` (used when files or a raw Dataset are given).

    Returns
    -------
    Dataset
        Dims ``(month, layer, <cells>)``, ``(month, <cells>)`` and ``(layer, <cells>)`` with
        ``month`` 1..12 (January first): for each calendar month, the mean over the chosen
        years, in the units of :func:`open_clm_history` (litter inputs: the mean monthly total,
        g m-2 month-1).  A value missing (NaN) in any chosen year is missing in the
        climatology.  Lazy on dask input.  Ready for ``ds.proda.steady_state(theta)``.

    Raises
    ------
    InputError
        A calendar month missing in the chosen years (naming the month and the year), and the
        errors of :func:`open_clm_history`.
    """
    if _is_converted(ds_or_paths):
        ds = _select_years(ds_or_paths, years, _source_of(ds_or_paths))
    else:
        ds = open_clm_history(ds_or_paths, years=years, chunks=chunks, variables=variables,
                              engine=engine, landunits=landunits)
    source = _source_of(ds)
    _check_full_years(ds, years, source)
    timed = [k for k in ds.data_vars if "time" in ds[k].dims]
    month = ds["time"].dt.month.rename("month")
    clim = ds[timed].drop_vars("time_bounds", errors="ignore").groupby(month).mean(
        "time", skipna=False)
    out = xr.merge([clim, ds[[k for k in ds.data_vars if k not in timed]]],
                   combine_attrs="drop")
    out = out.assign_coords(month=("month", np.arange(1, 13),
                                   conventions.attrs("month", section="coordinates")))
    for c in out.coords:
        if c in ds.coords:  # coordinate attrs are lost by the reduction
            out[c].attrs = ds[c].attrs
    for k in out.data_vars:
        out[k] = out[k].transpose("month", "layer", ..., missing_dims="ignore")
        out[k].attrs = conventions.forcing_attrs(str(k))
    action = f"clm_climatology: mean of each calendar month over model years {_years_text(ds)}"
    out.attrs = {**ds.attrs, "history": _history(ds.attrs.get("history", ""), [action])}
    return out


# -------------------------------------------------------------------------------------------
# files and decoding
# -------------------------------------------------------------------------------------------
def _resolve_paths(paths) -> list[str]:
    items = [paths] if isinstance(paths, (str, os.PathLike)) else list(paths)
    if not items:
        raise InputError("open_clm_history: no file given")
    files: list[str] = []
    for p in items:
        s = os.fspath(p)
        if any(c in s for c in "*?["):
            found = sorted(glob(s))
            if not found:
                raise InputError(f"open_clm_history: no file matches {s!r}")
            files += found
        elif "://" not in s and not os.path.exists(s):
            raise InputError(f"open_clm_history: file {s!r} not found")
        else:
            files.append(s)
    return files


def _keep_needed(ds: xr.Dataset) -> xr.Dataset:
    """Only the fields read here (CLM files hold hundreds)."""
    wanted = {s.clm_name for s in CLM_VARIABLES.values()} | set(_AUX)
    return ds[[k for k in ds.data_vars if k in wanted]]


def _decode(ds: xr.Dataset) -> xr.Dataset:
    """CF-decode a Dataset opened without decoding (a no-op on decoded data)."""
    return xr.decode_cf(ds, decode_times=xr.coders.CFDatetimeCoder(use_cftime=True))


def _source_of(ds: xr.Dataset) -> str:
    return str(ds.attrs.get("source", "<Dataset>")).removeprefix("CLM history: ")


def _is_converted(obj: Any) -> bool:
    return (isinstance(obj, xr.Dataset) and "time" in obj.coords
            and obj["time"].attrs.get("long_name") == _TIME_ATTRS["long_name"])


# -------------------------------------------------------------------------------------------
# conversion to the contract
# -------------------------------------------------------------------------------------------
def _to_contract(raw: xr.Dataset, *, source: str, years, variables, landunits) -> xr.Dataset:
    notes: list[str] = []
    keep = _requested(variables)
    found = _find_sources(raw, keep, source, explicit=variables is not None)
    raw = _monthly_time(raw, source, notes)
    raw = _select_years(raw, years, source)
    raw, cells, cell_coords = _horizontal(raw, found, source, landunits, notes)
    out: dict[str, xr.DataArray] = {}
    for name, src in found.items():
        out[name] = _read_variable(raw[src.clm_name], name, src, source, notes)
    for total, vr in _DERIVED.items():
        if total in keep and total not in found and vr in out:
            out[total] = _column_total(out[vr], total)
            notes.append(f"{total}: column total sum_j {vr}_j dz_j over the first {_N} layers")
    ds = xr.Dataset({k: out[k] for k in keep if k in out})
    ds = ds.assign_coords(cell_coords)
    if "layer" in ds.dims:
        ds = ds.assign_coords(conventions.layer_coords())
    if "time_bounds" in raw.coords:
        ds = ds.assign_coords(time_bounds=raw["time_bounds"])
    ds.attrs = {
        "Conventions": conventions.CF_CONVENTIONS,
        "title": "Soil carbon model forcing from CLM5 history output",
        "source": f"CLM history: {source}",
        "history": _history("", [f"open_clm_history({source!r}); cells {cells}"] + notes),
    }
    return ds


def _requested(variables: Iterable[str] | None) -> list[str]:
    if variables is None:
        return list(CLM_VARIABLES)
    names = [str(v) for v in ([variables] if isinstance(variables, str) else variables)]
    unknown = [v for v in names if v not in CLM_VARIABLES]
    if unknown:
        raise InputError(f"variables: unknown forcing name(s) {unknown}; known: "
                         f"{list(CLM_VARIABLES)}")
    return names


def _find_sources(raw: xr.Dataset, names: list[str], source: str, *,
                  explicit: bool) -> dict[str, ClmSource]:
    """The CLM fields to read; error listing every required one missing."""
    wanted = set(names) | {_DERIVED[k] for k in names if k in _DERIVED}
    found = {k: CLM_VARIABLES[k] for k in CLM_VARIABLES
             if k in wanted and CLM_VARIABLES[k].clm_name in raw.variables}
    missing = []
    for k in names:
        if k in found or (k in _DERIVED and _DERIVED[k] in found):
            continue
        if explicit or FORCING_SCHEMA[k].required:
            alt = f" or {CLM_VARIABLES[_DERIVED[k]].describe()}" if k in _DERIVED else ""
            missing.append(f"{k}: {CLM_VARIABLES[k].describe()}{alt}")
    if missing:
        known = sorted(str(v) for v in raw.data_vars if str(v) not in _AUX)
        raise InputError(f"missing CLM history variable(s) in {source}:\n  - "
                         + "\n  - ".join(missing) + f"\nfound: {known}")
    return found


def _read_variable(da: xr.DataArray, name: str, src: ClmSource, source: str,
                   notes: list[str]) -> xr.DataArray:
    """One field in the contract: fills masked, levels cut to 20, schema units, CF attrs."""
    shape = FORCING_SCHEMA[name].shape
    da = _mask_fills(da, src.clm_name, notes)
    if _N in shape:
        da = _to_layers(da, src.clm_name, source, notes)
    if shape == (_N,) and "time" in da.dims:
        da = da.isel(time=0, drop=True)
        notes.append(f"{src.clm_name}: time-invariant; the first time step is used")
    da = _to_schema_units(da, name, src.clm_name, source, notes)
    da = da.transpose("time", "layer", ..., missing_dims="ignore")
    da = da.drop_vars([c for c in da.coords if c not in da.dims or c == "layer"])
    da.attrs, da.encoding = conventions.forcing_attrs(name), {}
    return da


def _mask_fills(da: xr.DataArray, clm_name: str, notes: list[str]) -> xr.DataArray:
    """float64 values, NaN where the magnitude exceeds :data:`FILL_THRESHOLD` (lazy)."""
    if not any(k in da.encoding for k in ("_FillValue", "missing_value")):
        notes.append(f"{clm_name}: no _FillValue/missing_value declared; values of magnitude "
                     f"above {FILL_THRESHOLD:g} (CLM's fill value 1e36) set to NaN")
    da = da.astype(np.float64)
    return da.where(abs(da) <= FILL_THRESHOLD)


def _to_layers(da: xr.DataArray, clm_name: str, source: str,
               notes: list[str]) -> xr.DataArray:
    """The first 20 CLM levels as the ``layer`` dim."""
    lev = [d for d in da.dims if d in LEVEL_DIMS]
    if len(lev) != 1:
        raise DimensionError(f"{clm_name} in {source}: expected one CLM level dim "
                             f"({', '.join(LEVEL_DIMS)}), found dims {tuple(da.dims)}")
    d = lev[0]
    n = da.sizes[d]
    if n < _N:
        raise DimensionError(
            f"{clm_name} in {source}: {n} levels on {d!r}; the model needs the first {_N} "
            "levels of CLM5's ground column (20 soil layers to 8.6 m, soil_layerstruct "
            "'20SL_8.5m'); other soil-layer structures, CLM4.5 files or runs without "
            "vertically resolved soil carbon (levdcmp of 1) cannot be used")
    if d in da.coords:
        _check_depths(np.asarray(da[d].values[:_N], dtype=np.float64), d, clm_name, source)
    notes.append(f"{clm_name}: the first {_N} of {n} levels of {d!r} as 'layer'")
    return da.isel({d: slice(0, _N)}).rename({d: "layer"})


def _check_depths(z: np.ndarray, dim: str, clm_name: str, source: str) -> None:
    """Level coordinates must be CLM5's node depths (m) or plain level indices."""
    ok = (np.allclose(z, grid.ZSOI[:_N], rtol=1e-4, atol=1e-6)
          or np.array_equal(z, np.arange(1, _N + 1)) or np.array_equal(z, np.arange(_N)))
    if not ok:
        raise DimensionError(
            f"{clm_name} in {source}: the depths of {dim!r} ({', '.join(f'{v:.4g}' for v in z[:4])}"
            f" .. m) are not CLM5's layer nodes (xproda.grid.ZSOI: "
            f"{', '.join(f'{v:.4g}' for v in grid.ZSOI[:4])} .. m)")


def _to_schema_units(da: xr.DataArray, name: str, clm_name: str, source: str,
                     notes: list[str]) -> xr.DataArray:
    """``da`` converted from its ``units`` attribute to the schema units of ``name``.

    A monthly amount (litter input) given without a time unit (``gC/m^3``, CLM's
    ``*_ACC_VECTOR``) is the amount accumulated over the month.
    """
    dst = FORCING_SCHEMA[name].units
    src = da.attrs.get("units")
    if src is None:
        raise UnitsError(f"{clm_name} in {source}: no 'units' attribute; expected "
                         f"{CLM_VARIABLES[name].clm_units!r} or units convertible to {dst!r}")
    src = "1" if str(src).strip().lower() in _CLM_NO_UNITS else str(src)
    amount = _AMOUNTS.get(dst)
    try:
        if amount is not None and units.time_exponent(src, name=clm_name) == 0:
            out, note = units.convert(da, amount, name=clm_name, src=src)
            notes.append(f"{clm_name}: {src!r} read as the amount accumulated over each "
                         f"month, in {dst!r}")
        else:
            out, note = units.convert(da, dst, name=clm_name, src=src)
    except UnitsError as err:
        raise UnitsError(f"{err} (in {source})") from None
    if note:
        notes.append(note)
    return out


def _column_total(vr: xr.DataArray, total: str) -> xr.DataArray:
    """``sum_j vr_j dz_j`` over the first 20 layers (g m-3 month-1 -> g m-2 month-1)."""
    dz = xr.DataArray(grid.DZ[:_N], dims="layer")
    out = (vr * dz).sum("layer", skipna=False)
    out.attrs = conventions.forcing_attrs(total)
    return out


# -------------------------------------------------------------------------------------------
# horizontal layout
# -------------------------------------------------------------------------------------------
_LAT_ATTRS = conventions.attrs("lat", section="clm")
_LON_ATTRS = conventions.attrs("lon", section="clm")


def _horizontal(raw: xr.Dataset, found: dict[str, ClmSource], source: str,
                landunits: tuple[int, ...], notes: list[str]):
    """The cell dims shared by every field, the fields on the chosen columns, lat/lon coords."""
    layouts: dict[tuple[str, ...], list[str]] = {}
    for src in found.values():
        dims = tuple(str(d) for d in raw[src.clm_name].dims
                     if d != "time" and d not in LEVEL_DIMS)
        layouts.setdefault(dims, []).append(src.clm_name)
    if len(layouts) > 1:
        raise DimensionError(
            f"fields of {source} are on different horizontal layouts: "
            + "; ".join(f"{', '.join(v)} on {d}" for d, v in layouts.items())
            + ". Choose fields on one layout with variables=[...] (CLM 1-D output puts "
            "column, patch and gridcell fields on different dims)")
    cells = next(iter(layouts), ())
    if set(cells) == {"lat", "lon"}:
        return raw, cells, {
            "lat": ("lat", _floats(raw["lat"]), {**_LAT_ATTRS, "axis": "Y"}),
            "lon": ("lon", _floats(raw["lon"]), {**_LON_ATTRS, "axis": "X"}),
        }
    if len(cells) == 1 and cells[0] in _CELL_COORDS:
        dim = cells[0]
        if dim == "column" and "cols1d_itype_lunit" in raw.variables:
            raw = _soil_columns(raw, landunits, notes)
        lat, lon = _CELL_COORDS[dim]
        if lat not in raw.variables or lon not in raw.variables:
            return raw, cells, {}
        return raw, cells, {"lat": (dim, _floats(raw[lat]), _LAT_ATTRS),
                            "lon": (dim, _floats(raw[lon]), _LON_ATTRS)}
    raise DimensionError(
        f"fields of {source} have horizontal dims {cells}; expected ('lat', 'lon') or one of "
        f"{', '.join(map(repr, _CELL_COORDS))} (CLM 1-D output)")


def _floats(da: xr.DataArray) -> np.ndarray:
    return np.asarray(da.values, dtype=np.float64)


def _soil_columns(raw: xr.Dataset, landunits: tuple[int, ...], notes: list[str]) -> xr.Dataset:
    itype = np.asarray(raw["cols1d_itype_lunit"].values)
    keep = np.flatnonzero(np.isin(itype, landunits))
    notes.append(f"column: kept {keep.size} of {itype.size} columns with cols1d_itype_lunit in "
                 f"{list(landunits)} (1 natural vegetated, 2 crop)")
    return raw.isel(column=keep)


# -------------------------------------------------------------------------------------------
# time
# -------------------------------------------------------------------------------------------
def _monthly_time(raw: xr.Dataset, source: str, notes: list[str]) -> xr.Dataset:
    """``time`` relabelled with the middle of each averaging interval, sorted, checked."""
    if "time" not in raw.dims or "time" not in raw.coords:
        raise DimensionError(f"{source}: no 'time' coordinate; expected CLM monthly history "
                             "(h0 files, hist_nhtfrq = 0)")
    stamps = np.asarray(raw["time"].values)
    if not _is_dates(stamps):
        raise DimensionError(f"time in {source}: not decoded to dates (dtype {stamps.dtype}, "
                             f"units {raw['time'].attrs.get('units')!r})")
    bounds = _bounds(raw)
    if bounds is not None:
        labels = bounds[:, 0] + (bounds[:, 1] - bounds[:, 0]) / 2
        notes.append("time: CLM's stamps (end of each averaging interval) replaced by the "
                     "middle of the time bounds")
    else:
        labels = stamps - datetime.timedelta(days=1)
        notes.append("time: CLM's stamps (end of each averaging interval) moved one day back "
                     "(no time bounds in the files)")
    order = np.argsort(labels, kind="stable")
    _check_monthly(bounds, stamps[order], source)
    _check_unique_months(labels, source)
    ds = raw.drop_vars([n for n in _BOUNDS_NAMES if n in raw.variables]).isel(time=order)
    attrs = dict(_TIME_ATTRS) if bounds is not None else {
        k: v for k, v in _TIME_ATTRS.items() if k != "bounds"}
    ds = ds.assign_coords(time=("time", labels[order], attrs))
    ds["time"].encoding = {k: v for k, v in raw["time"].encoding.items()
                           if k in ("units", "calendar")}
    if bounds is not None:
        ds = ds.assign_coords(time_bounds=(("time", "nv"), bounds[order],
                                           conventions.attrs("time_bounds", section="clm")))
    return ds


def _check_monthly(bounds: np.ndarray | None, sorted_stamps: np.ndarray, source: str) -> None:
    """Averaging intervals (else steps between stamps) of 28-31 days."""
    if bounds is not None:
        lengths = _days(bounds[:, 1] - bounds[:, 0])
    else:
        lengths = _days(np.diff(sorted_stamps))
        lengths = lengths[lengths > 0]  # a month twice is reported by _check_unique_months
    bad = lengths[(lengths < 27.5) | (lengths > 31.5)]
    if bad.size:
        raise DimensionError(
            f"time in {source}: steps of {', '.join(f'{v:g}' for v in np.unique(bad)[:4])} "
            "days; expected monthly means (28-31 days: CLM h0 files with hist_nhtfrq = 0); "
            "daily, sub-daily or annual history files cannot be used")


def _is_dates(values: np.ndarray) -> bool:
    return values.dtype.kind == "M" or (values.dtype == object and values.size > 0
                                        and hasattr(values.flat[0], "calendar"))


def _bounds(raw: xr.Dataset) -> np.ndarray | None:
    """Decoded ``(time, 2)`` bounds of the averaging intervals, or ``None``."""
    name = raw["time"].attrs.get("bounds")
    if name not in raw.variables:
        name = next((n for n in _BOUNDS_NAMES if n in raw.variables), None)
    if name is None:
        return None
    b = raw[name].transpose("time", ...)
    values = np.asarray(b.values)
    if not _is_dates(values):
        enc = raw["time"].encoding
        if "units" not in enc:
            return None
        # decode the bounds with the encoding of the file's time axis (an input, not metadata
        # that xproda creates)
        attrs = {k: enc.get(k, "standard") for k in ("units", "calendar")}
        values = np.asarray(_decode(xr.Dataset({"b": (b.dims, values, attrs)}))["b"].values)
    return values


def _days(deltas: np.ndarray) -> np.ndarray:
    return np.asarray(pd.to_timedelta(np.asarray(deltas).ravel()).total_seconds()) / 86400.0


def _year_month(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    t = xr.DataArray(labels, dims="time")
    return np.asarray(t.dt.year.values), np.asarray(t.dt.month.values)


def _check_unique_months(labels: np.ndarray, source: str) -> None:
    yr, mo = _year_month(labels)
    pairs = list(zip(yr.tolist(), mo.tolist()))
    twice = sorted({p for p in pairs if pairs.count(p) > 1})
    if twice:
        raise DimensionError(
            f"time in {source}: {', '.join(_month_text(*p) for p in twice[:6])} more than once "
            "(the same file given twice, or overlapping runs?)")


def _month_text(year: int, month: int) -> str:
    return f"{calendar.month_name[month]} of year {year}"


def _check_years(years) -> tuple[int, int]:
    try:
        first, last = (int(y) for y in years)
    except (TypeError, ValueError):
        raise InputError(f"years must be (first, last) model years, got {years!r}") from None
    if first > last:
        raise InputError(f"years: first year {first} is after the last {last}")
    return first, last


def _select_years(ds: xr.Dataset, years, source: str) -> xr.Dataset:
    if years is None:
        return ds
    first, last = _check_years(years)
    yr = np.asarray(ds["time"].dt.year.values)
    keep = np.flatnonzero((yr >= first) & (yr <= last))
    if keep.size == 0:
        raise InputError(f"years=({first}, {last}): no time step in these model years in "
                         f"{source}, which holds years {yr.min()}..{yr.max()}")
    return ds.isel(time=keep)


def _check_full_years(ds: xr.Dataset, years, source: str) -> None:
    """Every calendar month of every chosen year must be present."""
    yr, mo = _year_month(ds["time"].values)
    first, last = _check_years(years) if years is not None else (int(yr.min()), int(yr.max()))
    have = set(zip(yr.tolist(), mo.tolist()))
    missing = [(y, m) for y in range(first, last + 1) for m in range(1, 13)
               if (y, m) not in have]
    if missing:
        listed = ", ".join(_month_text(*p) for p in missing[:12])
        more = f" and {len(missing) - 12} more" if len(missing) > 12 else ""
        raise InputError(
            f"clm_climatology: {listed}{more} missing in model years {first}..{last} of "
            f"{source}; every calendar month of every chosen year is needed (choose complete "
            "years with years=(first, last))")


def _years_text(ds: xr.Dataset) -> str:
    yr = np.asarray(ds["time"].dt.year.values)
    return f"{yr.min()}..{yr.max()}"


def _history(previous: str, lines: list[str]) -> str:
    new = [conventions.history_line(line) for line in lines]
    return "\n".join([previous, *new] if previous else new)
