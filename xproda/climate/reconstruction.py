"""Monthly climate reconstructed from bioclimatic summaries or site means.

:func:`monthly_climate_from_bioclim` rebuilds 12 monthly values of air temperature and
precipitation from WorldClim bioclimatic variables (or mean annual temperature and
precipitation) with an annual harmonic; :func:`reconstruct_monthly` is its core, shared with
:func:`xproda.climate.from_climate`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from xproda.climate.contract import ClimateInputs, as_dataset, bare, check_temperature_scale
from xproda.climate.formulas import PEAK_MONTH_NORTH, PEAK_MONTH_SOUTH, clip
from xproda.climate.metadata import annotated, history, month_coord
from xproda.errors import InputError

__all__ = ["cell_latitude", "monthly_climate_from_bioclim", "reconstruct_monthly"]

#: annual-harmonic constants: ``std(ddof=1)`` of 12 monthly values of ``A cos`` is
#: ``A sqrt(6/11)``; a 3-month mean centred on the extreme is ``A (1 + sqrt 3) / 3``
_STD_FACTOR = math.sqrt(6.0 / 11.0)
_QUARTER_FACTOR = (1.0 + math.sqrt(3.0)) / 3.0


def cell_latitude(ds: xr.Dataset, latitude: Any) -> xr.DataArray:
    """Latitude (degrees north) of the cells of ``ds`` (keyword, a variable, or coordinates).

    Parameters
    ----------
    ds : xarray.Dataset
        The inputs.
    latitude : array-like, xarray.DataArray or None
        Given latitude (a 1-D array is on a ``site`` dim); None: the ``lat``/``latitude``
        variable of ``ds``, else its grid's (:func:`xproda.spatial.lat_lon`).

    Returns
    -------
    xarray.DataArray

    Raises
    ------
    xproda.errors.InputError
        If no latitude is found.
    """
    if latitude is not None:
        return latitude if isinstance(latitude, xr.DataArray) else xr.DataArray(
            np.asarray(latitude, dtype=np.float64),
            dims=() if np.ndim(latitude) == 0 else ("site",))
    for name in ("lat", "latitude", "Lat", "Latitude", "LAT", "LATITUDE"):
        if name in ds.variables:
            return ds[name]
    from xproda.spatial import lat_lon

    try:
        return lat_lon(ds)[0]
    except ValueError as err:
        raise InputError(
            "the latitude of each cell is needed to place the annual cycle (coldest month "
            "January in the northern, July in the southern hemisphere): add a 'lat' coordinate "
            "(degrees_north) or pass latitude=...; variables seen: "
            f"{sorted(map(str, ds.variables))}"
        ) from err


def _default_amplitude(lat: xr.DataArray) -> xr.DataArray:
    """Half the annual range of monthly mean air temperature (K): ``1 + 20 sin²(lat)``."""
    return 1.0 + 20.0 * np.sin(np.deg2rad(lat)) ** 2


def monthly_climate_from_bioclim(
    bioclim_vars: xr.Dataset | Mapping[str, Any],
    *,
    latitude: Any = None,
    temperature_scale: float = 1.0,
    amplitude: float | xr.DataArray | None = None,
) -> xr.Dataset:
    """Monthly air temperature and precipitation reconstructed from bioclimatic summaries.

    Temperature is an annual harmonic ``tas_m = T + A cos(2π (m - m*) / 12)`` with the warmest
    month ``m* = 7`` (July) north of the equator and 1 (January) south of it, so the coldest
    month is January in the north and July in the south.

    - Amplitude ``A`` (K) is, in this order: the ``amplitude`` option; ``bio4 / 100 /
      sqrt(6/11)`` (BIO4 is 100 x the standard deviation, ``ddof=1``, of the 12 monthly
      means); ``(bio7 - bio2) / 2``, with ``bio2 = bio3 bio7 / 100`` when only BIO3 is given
      (BIO7 = annual range of monthly extremes = ``2 A + bio2``); ``(bio10 - bio11) / (2 c)``;
      otherwise the latitude rule ``1 + 20 sin²(lat)``, a rough zonal land mean (an
      assumption, often wrong by a factor of 2 near coasts and deep inside continents).
    - Mean ``T`` (°C) is ``bio1`` (or ``maat``); else ``bio11 + c A`` (BIO11, the mean of the
      coldest quarter, lies ``c A`` below the annual mean, ``c = (1 + sqrt 3) / 3``); else
      ``bio10 - c A``.
    - Precipitation is ``pr_m = P / 12 (1 + b cos(2π (m - m*) / 12))`` with ``P`` = ``bio12``
      (or ``map``), mm.  ``|b|`` comes from BIO15 (coefficient of variation of ``pr + 1``, %)
      and its sign from BIO18 vs BIO19 (rain in the warm or the cold quarter); with BIO18 and
      BIO19 alone, ``b = 6 (bio18 - bio19) / (P (1 + sqrt 3))``; ``b`` is clipped to
      ``[-1, 1]``.  Without BIO15/BIO18/BIO19 the precipitation is **uniform** over the year
      (an assumption: it sets the water scalar's seasonality, not its annual mean).

    For harmonic monthly climates the reconstruction is exact (BIO4, BIO11, BIO12, BIO15
    are recovered); for real climates it keeps the annual mean, the seasonal amplitude and
    the annual total, not the shape of the annual cycle.

    Parameters
    ----------
    bioclim_vars : xarray.Dataset or mapping
        Any of ``bio1`` ... ``bio19`` (WorldClim/ANUCLIM definitions, temperatures in °C x
        ``temperature_scale``, precipitation in mm), or the site values ``maat`` (mean annual
        air temperature, °C, or per its ``units``) and ``map`` (mean annual precipitation;
        a ``units`` attribute is required: "mm", "cm", "m", "mm yr-1", ...), on any grid
        (``lat``/``lon``, a ``site`` dim, ...).  Units, dims and plausible ranges:
        :data:`~xproda.climate.CLIMATE_SCHEMA`.  A mapping of numpy arrays is taken as 1-D
        arrays over ``site``.  Needed: a mean-temperature source (``bio1``, ``maat``, ``bio11`` or
        ``bio10``) and ``bio12`` or ``map``.
    latitude : array-like or xarray.DataArray, keyword-only, optional
        Latitude (degrees north) of the cells; default: the ``lat``/``latitude`` coordinate or
        variable of ``bioclim_vars`` (or the grid's, :func:`xproda.spatial.lat_lon`).
    temperature_scale : float, keyword-only, default 1
        Factor by which the temperatures are stored: 10 for WorldClim 1.x and its aggregated
        copies (e.g. biomod2's ``bioclim`` layers, whose BIO11 reaches -450), where BIO4 is
        then 1,000 x the standard deviation in °C.  Does not apply to ``maat``.
    amplitude : float or xarray.DataArray, keyword-only, optional
        Half the annual range of monthly mean air temperature (K), overriding the BIO
        variables and the latitude rule.

    Returns
    -------
    xarray.Dataset
        ``tas`` (°C) and ``pr`` (mm month-1) with dims ``(month, <input dims>)``, float64,
        ``month`` = 1..12; the input's coordinates are kept; attributes from the metadata
        registry (:mod:`xproda.conventions`, section ``"climate"``).
        ``attrs["reconstruction"]`` says which sources and assumptions were used and
        ``attrs["history"]`` has one line per unit conversion of the inputs.

    Raises
    ------
    xproda.errors.InputError
        No source of the annual mean temperature or of the annual precipitation (the message
        lists what is accepted, with units, and what was found); bad ``temperature_scale``;
        no latitude.
    xproda.errors.UnitsError
        Units that cannot be read or converted, or missing where
        :data:`~xproda.climate.CLIMATE_SCHEMA` requires them (``map``).
    xproda.errors.DimensionError
        A reserved dim (``month``, ``time``, ``layer``, ``depth``) on an input.
    xproda.errors.RangeError
        Values outside the plausible range (fill values, wrong units): at once for numpy,
        at compute time for dask input.

    All are ``ValueError`` subclasses.

    Examples
    --------
    >>> import xarray as xr
    >>> bio = xr.Dataset({"bio4": ("site", [800.0]), "bio11": ("site", [-2.0]),
    ...                   "bio12": ("site", [700.0])}, coords={"lat": ("site", [50.0])})
    >>> mc = monthly_climate_from_bioclim(bio)
    >>> round(float(mc.tas.mean()), 2), round(float(mc.tas.std(ddof=1) * 100), 1)
    (7.86, 800.0)
    >>> round(float(mc.pr.sum()), 6)
    700.0
    """
    ds = as_dataset(bioclim_vars, "bioclim_vars")
    inputs = ClimateInputs(ds, temperature_scale=check_temperature_scale(temperature_scale))
    tas, pr, notes = reconstruct_monthly(inputs, cell_latitude(ds, latitude), amplitude)
    out = xr.Dataset({"tas": annotated(tas, "tas"), "pr": annotated(pr, "pr")})
    out = out.assign_coords(month=month_coord())
    out.attrs = {"reconstruction": "; ".join(notes),
                 "history": history("monthly_climate_from_bioclim", inputs.log,
                                     "monthly climate reconstructed: " + "; ".join(notes))}
    return out


def reconstruct_monthly(inputs: ClimateInputs, latitude: xr.DataArray,
                        amplitude: float | xr.DataArray | None
                        ) -> tuple[xr.DataArray, xr.DataArray, list[str]]:
    """Monthly ``tas`` (°C) and ``pr`` (mm month-1) from BIO/site values, and the notes.

    See :func:`monthly_climate_from_bioclim`.

    Parameters
    ----------
    inputs : xproda.climate.contract.ClimateInputs
        The inputs (BIO variables or ``maat``/``map``).
    latitude : xarray.DataArray
        Latitude of the cells, degrees north (:func:`cell_latitude`).
    amplitude : float, xarray.DataArray or None
        Half the annual range of monthly mean air temperature (K), if given.

    Returns
    -------
    tuple
        ``(tas, pr, notes)``: DataArrays with a leading ``month`` dim, and the sources and
        assumptions used.

    Raises
    ------
    xproda.errors.InputError
        No source of the annual mean temperature or of the annual precipitation.
    """
    have = set(inputs.variables)
    notes: list[str] = []
    mean_src = inputs.first(("bio1", "maat", "bio11", "bio10"))
    p_src = inputs.first(("bio12", "map"))
    if mean_src is None or p_src is None:
        missing = ([] if mean_src else [("annual mean temperature: bio1 or maat (°C), or "
                                         "bio11 or bio10 (°C; with bio4, bio7+bio3 or "
                                         "bio10+bio11 for the amplitude)")]) + \
                  ([] if p_src else ["annual precipitation: bio12 or map (mm)"])
        raise InputError(
            "cannot reconstruct the monthly climate: missing " + "; ".join(missing)
            + f". Variables found: {sorted(have)}"
        )
    lat = bare(latitude.astype(np.float64))
    # -- amplitude (K) ------------------------------------------------------------------------
    if amplitude is not None:
        amp = bare(amplitude.astype(np.float64)) if isinstance(amplitude, xr.DataArray) \
            else xr.DataArray(float(amplitude))
        notes.append("amplitude given")
    elif "bio4" in have:
        amp = inputs["bio4"] / 100.0 / _STD_FACTOR
        notes.append("amplitude from bio4")
    elif "bio7" in have and ({"bio2", "bio3"} & have):
        bio7 = inputs["bio7"]
        bio2 = inputs["bio2"] if "bio2" in have else inputs["bio3"] * bio7 / 100.0
        amp = (bio7 - bio2) / 2.0
        notes.append("amplitude from bio7 and " + ("bio2" if "bio2" in have else "bio3"))
    elif {"bio10", "bio11"} <= have:
        amp = (inputs["bio10"] - inputs["bio11"]) / (2.0 * _QUARTER_FACTOR)
        notes.append("amplitude from bio10 and bio11")
    else:
        amp = _default_amplitude(lat)
        notes.append("ASSUMED seasonal amplitude 1 + 20 sin^2(lat) K (no bio4/bio7/bio10 "
                     "given)")
    amp = np.maximum(amp, 0.0)
    # -- annual mean (degC) ------------------------------------------------------------------
    if mean_src in ("bio1", "maat"):
        t_mean = inputs[mean_src]
    elif mean_src == "bio11":
        t_mean = inputs["bio11"] + _QUARTER_FACTOR * amp
    else:
        t_mean = inputs["bio10"] - _QUARTER_FACTOR * amp
    notes.append(f"annual mean from {mean_src}")
    # -- precipitation (mm) ------------------------------------------------------------------
    p_ann = inputs[p_src]
    p_month = p_ann / 12.0
    p_safe = xr.where(p_ann > 0, p_ann, 1.0)  # no 0 / 0 in dry cells (b = 0 there)
    sign: Any = 1.0
    if {"bio18", "bio19"} <= have:
        sign = xr.where(inputs["bio19"] > inputs["bio18"], -1.0, 1.0)
    if "bio15" in have:
        cv = inputs["bio15"] / 100.0
        b = sign * cv * (p_safe / 12.0 + 1.0) / (p_safe / 12.0 * _STD_FACTOR)
        notes.append("precipitation seasonality from bio15"
                     + (" (phase from bio18/bio19)" if {"bio18", "bio19"} <= have else
                        " (rain in the warm season assumed)"))
    elif {"bio18", "bio19"} <= have:
        b = 6.0 * (inputs["bio18"] - inputs["bio19"]) / (p_safe * (1.0 + math.sqrt(3.0)))
        notes.append("precipitation seasonality from bio18 and bio19")
    else:
        b = xr.zeros_like(p_ann)
        notes.append("ASSUMED uniform monthly precipitation (no bio15/bio18/bio19 given)")
    b = xr.where(p_ann > 0, clip(b, -1.0, 1.0), 0.0)
    # -- monthly values -----------------------------------------------------------------------
    month = month_coord()
    peak = xr.where(lat >= 0, PEAK_MONTH_NORTH, PEAK_MONTH_SOUTH)
    cos = np.cos(2.0 * np.pi * (month.astype(np.float64) - peak) / 12.0)
    tas = (t_mean + amp * cos).transpose("month", ...)
    pr = np.maximum(p_month * (1.0 + b * cos), 0.0).transpose("month", ...)
    return bare(tas).assign_coords(month=month), bare(pr).assign_coords(month=month), notes
