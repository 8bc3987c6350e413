"""The input contract of the climate functions: :data:`CLIMATE_SCHEMA` and reading inputs.

Every input of :func:`xproda.climate.from_climate` and
:func:`xproda.climate.monthly_climate_from_bioclim` is read against :data:`CLIMATE_SCHEMA`
(one :class:`ClimateInput` per variable: canonical units, required dims, plausible range,
units policy): units are converted with :mod:`xproda.units` (pint), undecoded fill values
become NaN, values outside the plausible range raise :class:`~xproda.errors.RangeError` (at
compute time for dask input), and every conversion is logged for the output's ``history``.
:class:`ClimateInputs` reads the variables of a dataset, :func:`read_input` and
:func:`read_value` read one.

Examples
--------
>>> import xarray as xr
>>> log = []
>>> x = read_input(xr.DataArray([1.2], dims="site", attrs={"units": "m"}), "map", log)
>>> float(x[0]), log[0]
(1200.0, "map: converted from 'm' to 'mm' (x 1000)")
>>> CLIMATE_SCHEMA["pr"].units, CLIMATE_SCHEMA["pr"].units_attr
('mm month-1', 'required')
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from xproda import units
from xproda.errors import DimensionError, InputError, RangeError, UnitsError

__all__ = [
    "BIOCLIM_NAMES", "CLIMATE_SCHEMA", "ClimateInput", "ClimateInputs", "as_dataset", "bare",
    "check_temperature_scale", "read_input", "read_value",
]


@dataclass(frozen=True)
class ClimateInput:
    """Contract of one input variable of :func:`~xproda.climate.from_climate`.

    The contract of every input: :data:`CLIMATE_SCHEMA`.

    Attributes
    ----------
    name : str
        Variable name (in ``climate``, in ``soil`` or a keyword of
        :func:`~xproda.climate.from_climate`).
    units : str
        Canonical units (UDUNITS); the values are converted to them.
    minimum, maximum : float
        Plausible physical range in ``units`` (inclusive).  Values outside it raise
        :class:`~xproda.errors.RangeError` (NaN is "no data" and passes): undecoded fill
        values (1e36, -9999, -3.4e38 ...) and most factor 10-1000 unit mistakes land there.
    range_source : str
        Where the range comes from.
    units_attr : {"required", "default", "definition"}
        What the ``units`` attribute means.  ``"required"``: a missing attribute raises
        :class:`~xproda.errors.UnitsError`, because values in other common units fall inside
        the plausible range (the mistake would be silent).  ``"default"``: a missing attribute
        means ``units`` (safe: the common mistakes fall outside the range).  ``"definition"``:
        the attribute is not read; the units are those of the variable's definition
        (WorldClim/ANUCLIM), temperatures divided by ``temperature_scale`` (copies of
        WorldClim 1.x label degC x 10 as "degC").  A present attribute of a ``"required"`` or
        ``"default"`` variable is always read and converted.
    units_note : str
        Why ``units_attr`` is what it is.
    accepted : str
        Examples of units that are converted.
    dims : tuple of str
        Dims the variable must have: ``("month",)`` (12 long, January first) for the monthly
        climate, ``()`` for annual and column values.  Other dims broadcast (a ``scenario``,
        an ensemble ``member``, a grid), except the reserved ones (``month`` on an annual
        value, ``time``, ``layer``, ``depth``), which raise
        :class:`~xproda.errors.DimensionError`.
    period : str or None
        What an amount refers to (``"month"``, ``"year"``): a total without a time unit
        (``mm`` for ``pr``) is the amount of one period, a rate given for a total (``mm yr-1``
        for ``map``) is multiplied by the period.
    water : bool
        Precipitation: a mass per area (``kg m-2``) is a depth of liquid water of density
        1000 kg m-3 (1 kg m-2 = 1 mm).
    scaled : bool
        A WorldClim temperature: divided by ``temperature_scale``.
    hint : str
        Usual cause of out-of-range values, added to the error message.
    """

    name: str
    units: str
    minimum: float
    maximum: float
    range_source: str
    units_attr: str
    units_note: str
    accepted: str = ""
    dims: tuple[str, ...] = ()
    period: str | None = None
    water: bool = False
    scaled: bool = False
    hint: str = ""


_CI = ClimateInput
#: air temperature: the observed extremes bound any monthly or annual mean
_AIR_T: dict[str, Any] = {
    "minimum": -90.0, "maximum": 60.0,
    "range_source": "observed extremes of near-surface air temperature (-89.2 degC, Vostok; "
                    "56.7 degC, Death Valley)",
}
_T_DEFAULT: dict[str, Any] = {
    "units_attr": "default", "accepted": "K, degF",
    "units_note": "K (values above 183) lies outside the range and is refused; degF only "
                  "partly, so give units for degF",
    "hint": "temperatures in K or degF need units='K' or 'degF'",
}
_WORLDCLIM: dict[str, Any] = {
    "units_attr": "definition",
    "units_note": "WorldClim/ANUCLIM definition; temperatures x temperature_scale (the "
                  "attribute of WorldClim copies is unreliable: degC x 10 labelled degC)",
}
_WORLDCLIM_T: dict[str, Any] = {
    **_WORLDCLIM, "scaled": True,
    "hint": "WorldClim 1.x stores temperatures x 10: pass temperature_scale=10",
}
_WORLDCLIM_P: dict[str, Any] = {
    "units_attr": "default", "water": True, "accepted": "cm, m, kg m-2",
    "units_note": "WorldClim/ANUCLIM definition (mm); an attribute is converted",
}
_ANNUAL_P: dict[str, Any] = {
    "minimum": 0.0, "maximum": 15000.0,
    "range_source": "wettest places on Earth: ~12,000-13,500 mm yr-1 (Mawsynram, Cherrapunji, "
                    "Lloro)",
}
_QUARTER_P = {**_ANNUAL_P, "range_source": "a quarter's total is at most the annual total"}
_SAND: dict[str, Any] = {
    "minimum": 0.0, "maximum": 100.0, "range_source": "a mass percentage",
    "units_attr": "default", "accepted": "1 (a fraction), g kg-1 (SoilGrids)",
    "units_note": "% is the convention of CLM (PCT_SAND), HWSD and WoSIS; SoilGrids' g kg-1 "
                  "exceeds 100 in all but the poorest soils; a fraction (0-1) would pass: "
                  "give units='1' for fractions",
}
_NPP: dict[str, Any] = {
    "minimum": 0.0, "maximum": 5000.0,
    "range_source": "the most productive ecosystems reach ~2,000-3,000 g C m-2 yr-1 "
                    "(tropical forests, C4 crops; MODIS MOD17 maximum ~3,000)",
    "units_attr": "required",
    "accepted": "kg C m-2 yr-1, g C m-2 d-1, g C m-2 s-1, kg C m-2 s-1, t ha-1 yr-1",
    "units_note": "MODIS gives kg C m-2 yr-1 (0-3) and CLM/CMIP g or kg C m-2 s-1: values "
                  "all inside the range",
}
_FRACTION: dict[str, Any] = {
    "minimum": 0.0, "maximum": 1.0, "range_source": "a fraction",
    "units_attr": "default", "accepted": "%",
    "units_note": "percentages (e.g. MODIS VCF tree cover) exceed 1 and are refused",
}

#: the input contract of :func:`~xproda.climate.from_climate` and
#: :func:`~xproda.climate.monthly_climate_from_bioclim`: name -> :class:`ClimateInput`
#: (canonical units, required dims, plausible range, units policy).
#: BIO variables not listed (bio5, bio6, bio8, bio9, bio13, bio14, bio16, bio17) are not used.
CLIMATE_SCHEMA: dict[str, ClimateInput] = {e.name: e for e in (
    _CI("tas", "degC", dims=("month",), **_AIR_T, **_T_DEFAULT),
    _CI("pr", "mm month-1", 0.0, 5000.0, dims=("month",), period="month", water=True,
        range_source="wettest monthly means on Earth ~3,000-3,700 mm (Mawsynram, "
                     "Cherrapunji, June-July)",
        units_attr="required",
        accepted="mm d-1, mm s-1, kg m-2 s-1, kg m-2 month-1, m month-1, cm month-1, "
                 "mm (a monthly total)",
        units_note="mm d-1 (0-100), kg m-2 s-1 (0-1e-3), m month-1 and cm month-1 values "
                   "all fall inside the range"),
    _CI("maat", "degC", **_AIR_T, **_T_DEFAULT),
    _CI("map", "mm", **_ANNUAL_P, period="year", water=True, units_attr="required",
        accepted="cm, m, inch, kg m-2, mm yr-1, mm d-1",
        units_note="cm (e.g. MAP of the Sierra transect table) and m values fall inside "
                   "the range"),
    *(_CI(k, "degC", **_AIR_T, **_WORLDCLIM_T) for k in ("bio1", "bio10", "bio11")),
    _CI("bio2", "K", 0.0, 50.0, range_source="mean diurnal range: at most ~25 K (deserts, "
        "high plateaus)", **_WORLDCLIM_T),
    _CI("bio3", "%", 0.0, 100.0, range_source="100 bio2 / bio7, and bio2 <= bio7",
        **_WORLDCLIM),
    _CI("bio4", "0.01 K", 0.0, 3000.0, range_source="100 x standard deviation of the "
        "monthly means: at most ~2,300 (Yakutia)", **_WORLDCLIM_T),
    _CI("bio7", "K", 0.0, 100.0, range_source="annual range: at most ~75 K (Yakutia)",
        **_WORLDCLIM_T),
    _CI("bio12", "mm", **_ANNUAL_P, period="year", **_WORLDCLIM_P),
    _CI("bio15", "%", 0.0, 350.0, range_source="coefficient of variation of 12 values: at "
        "most 100 sqrt(12) = 346 %", **_WORLDCLIM),
    *(_CI(k, "mm", **_QUARTER_P, **_WORLDCLIM_P) for k in ("bio18", "bio19")),
    *(_CI(k, "%", **_SAND) for k in ("sand", "sand_0cm", "sand_30cm", "sand_100cm")),
    _CI("depth_to_bedrock", "m", 0.0, 1000.0,
        range_source="global depth-to-bedrock maps: regolith of tens of metres (Pelletier "
                     "et al. 2016, capped at 50 m), a few hundred metres in sedimentary "
                     "basins (Shangguan et al. 2017, global mean ~13 m)",
        units_attr="required", accepted="cm (SoilGrids; Shangguan et al. 2017), mm, ft",
        units_note="the global maps give cm (SoilGrids BDTICM): cm read as m is silent "
                   "for shallow soils"),
    _CI("elevation", "m", -500.0, 9000.0,
        range_source="Dead Sea shore (-430 m) to Mount Everest (8,849 m)",
        units_attr="default", accepted="km, ft",
        units_note="DEMs (SRTM, GMTED, ETOPO, WorldClim) give m; feet mostly exceed the range"),
    *(_CI(k, "g C m-2 yr-1", **_NPP) for k in ("npp", "npp_annual")),
    *(_CI(k, "1", **_FRACTION) for k in ("tree_fraction", "fpi")),
)}
del _CI
#: dims an input may not carry besides its own (``month`` on an annual value, ``time``: a
#: climatology is needed, ``layer``/``depth``: the forcing's own layer dim), with advice
_RESERVED_DIMS: dict[str, str] = {
    "month": "an annual or column value: reduce it over the months first",
    "time": "a monthly climatology is needed: average over the years by month first, "
            "e.g. da.groupby('time.month').mean() renamed to a 'month' dim",
    "layer": "the forcing's own layer dim: give sand at 0, 30 and 100 cm as sand_0cm, "
             "sand_30cm and sand_100cm",
    "depth": "the forcing's own depth coordinate: give sand at 0, 30 and 100 cm as sand_0cm, "
             "sand_30cm and sand_100cm",
}
#: 1000 kg m-3 = 1 g cm-3: dividing a mass per area by this unit gives the water depth exactly
_WATER_DENSITY = "g cm-3"
#: fill values in common use (besides anything above 1e20 in magnitude)
_FILL_VALUES = frozenset({-99.0, -999.0, -9999.0, -99999.0, 9999.0, 99999.0, 32767.0,
                          -32768.0, 65535.0})

BIOCLIM_NAMES = tuple(f"bio{i}" for i in range(1, 20))
_CLIMATE_NAMES = frozenset({"tas", "pr", "maat", "map", *BIOCLIM_NAMES})


def bare(da: xr.DataArray) -> xr.DataArray:
    """``da`` without attrs (input attrs never leak onto outputs).

    Parameters
    ----------
    da : xarray.DataArray

    Returns
    -------
    xarray.DataArray
        A shallow copy of ``da`` without attributes.
    """
    out = da.copy(deep=False)
    out.attrs = {}
    return out


def _check_dims(da: xr.DataArray, spec: ClimateInput, name: str) -> None:
    for d in spec.dims:
        if da.sizes.get(d) != 12:
            raise DimensionError(f"{name}: expected a {d!r} dim of length 12 (January "
                                 f"first), found dims {dict(da.sizes)}")
    bad = [d for d in da.dims if d in _RESERVED_DIMS and d not in spec.dims]
    if bad:
        raise DimensionError(f"{name}: a {bad[0]!r} dim is not allowed here "
                             f"({_RESERVED_DIMS[bad[0]]}); found dims {dict(da.sizes)}")


def _mask_fill_values(da: xr.DataArray, attrs: Mapping[str, Any], name: str,
                      log: list[str]) -> xr.DataArray:
    """``da`` with the values of undecoded ``_FillValue``/``missing_value`` attrs as NaN."""
    for key in ("_FillValue", "missing_value"):
        for fill in np.atleast_1d(attrs.get(key, [])).astype(np.float64):
            if not np.isnan(fill):
                da = da.where(da != fill)
                log.append(f"{name}: values equal to its {key} {fill:g} read as missing (NaN)")
    return da


def _effective_units(src: str, spec: ClimateInput, name: str) -> tuple[str, str, list[str]]:
    """Source and target units as pint compares them, and the assumptions that made them.

    A mass per area of precipitation is a water depth (density 1000 kg m-3); a total is the
    amount of the variable's period and a rate over the period is its total; years have 365
    days unless months are converted to years (pint's month is exactly a twelfth of a year).
    """
    su, du = units.parse_units(src, name=name), units.parse_units(spec.units, name=name)
    how = []
    if spec.water and "[mass]" in su.dimensionality and "[mass]" not in du.dimensionality:
        su = su / units.parse_units(_WATER_DENSITY)
        how.append("water density 1000 kg m-3")
    shift = units.time_exponent(su) - units.time_exponent(du)
    if spec.period is not None and shift in (-1.0, 1.0):
        du = du * units.parse_units(spec.period) ** int(shift)
        how.append(f"a total per {spec.period}" if shift > 0 else
                   f"a rate over the {spec.period}")
    if "month" not in format(su, "D"):
        if units.has_years(su) != units.has_years(du):
            how.append("365-day year")
        su, du = units.noleap_years(su), units.noleap_years(du)
    return str(su), str(du), how


def _to_canonical(da: xr.DataArray, src: str, spec: ClimateInput, name: str,
                  log: list[str]) -> tuple[xr.DataArray, str]:
    """``da`` (in ``src``) in the canonical units of ``spec``, and how it was converted."""
    expected = f"{name} is expected in {spec.units!r} or convertible units (e.g. {spec.accepted})"
    try:
        su, du, how = _effective_units(src, spec, name)
    except UnitsError as err:  # unreadable
        raise UnitsError(f"{err}; {expected}") from None
    try:
        scale, offset = units.conversion(su, du, name=name)
    except UnitsError:  # another physical dimension
        dims = [units.parse_units(u).dimensionality for u in (src, spec.units)]
        raise UnitsError(f"{name}: units {src!r} ({dims[0]}) cannot be converted to "
                         f"{spec.units!r} ({dims[1]}); {expected}") from None
    out, _ = units.convert(da, du, name=name, src=su)
    per_month = units.needs_month_lengths(su, du, name=name)
    steps = ([f"x {scale:.10g}" + (" per day, x the days of each month" if per_month else "")]
             if scale != 1.0 or per_month else []) + ([f"{'+' if offset > 0 else '-'} {abs(offset):g}"] if offset else [])
    done = ", ".join(steps + how)
    if done:
        log.append(f"{name}: converted from {src!r} to {spec.units!r} ({done})")
    return out, f"read as {src!r}" + (f", {done}" if done else "")


def _by_definition(da: xr.DataArray, spec: ClimateInput, name: str, log: list[str],
                   temperature_scale: float) -> tuple[xr.DataArray, str]:
    """``da`` in its definition's units (WorldClim temperatures: / ``temperature_scale``)."""
    if not spec.scaled or temperature_scale == 1.0:
        return da, f"read as {spec.units} (its definition)"
    log.append(f"{name}: divided by temperature_scale={temperature_scale:g}")
    return da / temperature_scale, f"read as {spec.units} x {temperature_scale:g}"


def _missing_units(spec: ClimateInput, name: str) -> UnitsError:
    return UnitsError(
        f"{name}: no units attribute, and {name} needs one: {spec.units_note}. Set "
        f"attrs['units'] (e.g. {spec.units!r}; also accepted: {spec.accepted}; for a mapping "
        "of arrays pass an xarray.DataArray with attrs={'units': ...})")


def _looks_like_fill(x: float) -> bool:
    return abs(x) >= 1e20 or float(x) in _FILL_VALUES


def _range_block(x: np.ndarray, *, name: str, lo: float, hi: float, units_: str, how: str,
                 hint: str) -> np.ndarray:
    """Identity that raises :class:`RangeError` on values outside ``[lo, hi]`` (NaN passes)."""
    v = x[~np.isnan(x)]
    if v.size == 0:
        return x
    vmin, vmax = float(v.min()), float(v.max())
    if lo <= vmin and vmax <= hi:
        return x
    if vmin < lo and vmax > hi:
        span, worst = f"from {vmin:.4g} to {vmax:.4g}", (vmin, vmax)
    else:
        span, worst = (f"down to {vmin:.4g}", (vmin,)) if vmin < lo else (
            f"up to {vmax:.4g}", (vmax,))
    if any(_looks_like_fill(w) for w in worst):
        hint = ("an undecoded fill value? Decode the file with xarray (mask_and_scale) or set "
                "the _FillValue/missing_value attribute, so that it reads as NaN")
    raise RangeError(f"{name}: values {span} {units_} outside the plausible range "
                     f"[{lo:g}, {hi:g}] {units_} ({how}); {hint}")


def _range_checked(da: xr.DataArray, spec: ClimateInput, name: str, how: str) -> xr.DataArray:
    """``da``, checked against the plausible range: now for numpy, at compute time for dask."""
    check = functools.partial(_range_block, name=name, lo=spec.minimum, hi=spec.maximum,
                              units_=spec.units, how=how,
                              hint=spec.hint or "wrong or mislabelled units?")
    return xr.apply_ufunc(check, da, dask="parallelized", output_dtypes=[np.float64])


def read_input(da: xr.DataArray, name: str, log: list[str],
               temperature_scale: float = 1.0) -> xr.DataArray:
    """Input ``name`` checked against :data:`CLIMATE_SCHEMA`: float64 in the canonical units,
    fill values as NaN, range checked, no attributes.  Conversions are appended to ``log``.

    Parameters
    ----------
    da : xarray.DataArray
        The input, with its ``units`` (and ``_FillValue``/``missing_value``) attributes.
    name : str
        Its name in :data:`CLIMATE_SCHEMA`.
    log : list of str
        Appended to: one line per conversion.
    temperature_scale : float, default 1
        Factor of WorldClim temperatures (``units_attr="definition"``, ``scaled``).

    Returns
    -------
    xarray.DataArray
        Lazy for dask input (the range is checked at compute time).

    Raises
    ------
    xproda.errors.DimensionError, xproda.errors.UnitsError, xproda.errors.RangeError
        See :func:`~xproda.climate.from_climate`.
    """
    spec = CLIMATE_SCHEMA[name]
    _check_dims(da, spec, name)
    src = da.attrs.get("units")
    out = _mask_fill_values(da.astype(np.float64), da.attrs, name, log)
    if spec.units_attr == "definition":
        out, how = _by_definition(out, spec, name, log, temperature_scale)
    elif src is None:
        if spec.units_attr == "required":
            raise _missing_units(spec, name)
        how = f"no units attribute, so {spec.units} assumed"
    else:
        out, how = _to_canonical(out, str(src), spec, name, log)
    return _range_checked(bare(out), spec, name, how)


def read_value(value: Any, name: str, log: list[str]) -> xr.DataArray:
    """A keyword value: a DataArray (read as an input) or a number in the canonical units.

    Parameters
    ----------
    value : float or xarray.DataArray
        A number (in the canonical units of ``name``) or a DataArray (:func:`read_input`).
    name : str
        Its name in :data:`CLIMATE_SCHEMA`.
    log : list of str
        Appended to: one line per conversion.

    Returns
    -------
    xarray.DataArray
        Range checked, float64, in the canonical units.

    Raises
    ------
    TypeError
        If ``value`` is neither a number nor a DataArray.
    """
    if isinstance(value, xr.DataArray):
        return read_input(value, name, log)
    if isinstance(value, bool) or np.ndim(value) != 0:
        raise TypeError(f"{name} must be a number or an xarray.DataArray, got "
                        f"{type(value).__name__} of shape {np.shape(value)}")
    spec = CLIMATE_SCHEMA[name]
    return _range_checked(xr.DataArray(float(value)), spec, name,
                          f"a number, so {spec.units} (the canonical units)")


class ClimateInputs:
    """The variables of ``climate`` and ``soil``, each read once against :data:`CLIMATE_SCHEMA`.

    Climate variables (``tas``, ``pr``, ``maat``, ``map``, BIO) come from ``climate``; the
    column variables from ``soil`` if it has them, else from ``climate``.  :attr:`log` has
    one line per conversion.

    Parameters
    ----------
    climate : xarray.Dataset
        Climate inputs (and column variables absent from ``soil``).
    soil : xarray.Dataset, optional
        Soil and other column inputs.
    temperature_scale : float, keyword-only, default 1
        Factor of WorldClim temperatures (:func:`read_input`).

    Attributes
    ----------
    variables : dict of str to xarray.DataArray
        The raw inputs by name.
    log : list of str
        One line per conversion of the variables read so far.

    Examples
    --------
    >>> import xarray as xr
    >>> inputs = ClimateInputs(xr.Dataset({"maat": ("site", [280.0], {"units": "K"})}))
    >>> "maat" in inputs, round(float(inputs["maat"][0]), 2), inputs.first(("bio1", "maat"))
    (True, 6.85, 'maat')
    """

    def __init__(self, climate: xr.Dataset, soil: xr.Dataset | None = None, *,
                 temperature_scale: float = 1.0) -> None:
        self.variables = {str(k): v for k, v in climate.data_vars.items()}
        if soil is not None:
            self.variables.update({str(k): v for k, v in soil.data_vars.items()
                                   if k not in _CLIMATE_NAMES})
        self.temperature_scale = temperature_scale
        self.log: list[str] = []
        self._done: dict[str, xr.DataArray] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.variables

    def __getitem__(self, name: str) -> xr.DataArray:
        if name not in self._done:
            self._done[name] = read_input(self.variables[name], name, self.log,
                                     self.temperature_scale)
        return self._done[name]

    def first(self, names: tuple[str, ...]) -> str | None:
        """The first of ``names`` present."""
        return next((n for n in names if n in self.variables), None)

    def given(self, value: Any, name: str) -> xr.DataArray:
        """A keyword value (see :func:`read_value`), logged with the others."""
        return read_value(value, name, self.log)


def as_dataset(obj: Any, what: str) -> xr.Dataset:
    """A Dataset from a Dataset or a mapping of arrays (1-D arrays on a ``site`` dim).

    Parameters
    ----------
    obj : xarray.Dataset or mapping
        A Dataset (returned as is), or a mapping of DataArrays, scalars and 1-D arrays.
    what : str
        Name of the argument, for error messages.

    Returns
    -------
    xarray.Dataset

    Raises
    ------
    xproda.errors.DimensionError
        An array of a mapping with more than one dim.
    TypeError
        ``obj`` is neither a Dataset nor a mapping.
    """
    if isinstance(obj, xr.Dataset):
        return obj
    if isinstance(obj, Mapping):
        data = {}
        for k, v in obj.items():
            if isinstance(v, xr.DataArray):
                data[k] = v
                continue
            a = np.asarray(v, dtype=np.float64)
            if a.ndim > 1:
                raise DimensionError(
                    f"{what}[{k!r}]: expected a scalar or a 1-D array over sites (or an "
                    f"xarray object with named dims), got shape {a.shape}"
                )
            data[k] = (("site",) if a.ndim == 1 else (), a)
        return xr.Dataset(data)
    raise TypeError(f"{what} must be an xarray.Dataset or a mapping of arrays, got "
                    f"{type(obj).__name__}")



def check_temperature_scale(value: Any) -> float:
    """``value`` as the factor by which WorldClim temperatures are stored (checked).

    Parameters
    ----------
    value : int or float
        1, or 10 for WorldClim 1.x.

    Returns
    -------
    float

    Raises
    ------
    xproda.errors.InputError
        If ``value`` is not a positive finite number.
    """
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise InputError(f"temperature_scale must be a positive number (1, or 10 for "
                         f"WorldClim 1.x), got {value!r}")
    return float(value)
