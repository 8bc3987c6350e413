"""Units of input variables: parsing (UDUNITS spellings, via pint) and exact conversion.

One place where xproda reads a ``units`` attribute.  Strings are parsed with the
UDUNITS-style pint registry of :mod:`cf_xarray.units` (``"g m-2 s-1"``, ``"kg/m2/s"``,
``"degC"``, ``"centimeters"``, ``"%"`` ...), after two rewrites that registry lacks:

- carbon masses as CLM and CMIP write them (``"gC/m^2/s"``, ``"g C m-2"``, ``"kgC"``,
  ``"PgC"``) are masses of carbon (``g``, ``kg``, ``Pg``);
- the words for "no unit" (``""``, ``"-"``, ``"1"``, ``"none"``, ``"unitless"``,
  ``"fraction"``, ``"dimensionless"``) are ``1``.

Conversions are affine (``y = scale * x + offset``; offsets only for temperatures).  A year
has 365 days (CLM5's noleap calendar and PRODA's year; pint's ``year`` is 365.25), except
between months and years, where pint's month is a twelfth of a year.  Amounts
*per month* are special: a flux per second (or per day) is turned into a monthly amount with
the length of each month -- of a 365-day year for a ``month`` climatology dim (CLM's noleap
calendar), of the time stamps' calendar for a ``time`` dim -- not with an average month.

>>> from xproda.units import conversion
>>> conversion("cm", "m", name="ALTMAX")
(0.01, 0.0)
>>> conversion("degC", "K", name="TSOI")
(1.0, 273.15)
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np

from xproda.errors import UnitsError

__all__ = [
    "NO_UNITS",
    "DAYS_IN_MONTH_NOLEAP",
    "normalise_units",
    "parse_units",
    "is_dimensionless",
    "conversion",
    "needs_month_lengths",
    "time_exponent",
    "has_years",
    "noleap_years",
    "per_month_factors",
    "convert",
]

#: spellings read as "no unit" (a dimensionless number)
NO_UNITS = frozenset({"", "-", "1", "none", "unitless", "fraction", "dimensionless", "n/a",
                      "frac", "unit", "units", "count", "index", "level"})
#: days of each calendar month in a 365-day (noleap) year, as CLM5 uses
DAYS_IN_MONTH_NOLEAP = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dtype=float)

_CARBON = re.compile(r"\b(P|T|G|M|k|m|u)?g\s?C\b")
_MON = re.compile(r"\bmon\b")
_YEAR = re.compile(r"\b(yr|year|years|a)\b")


def _registry():
    from cf_xarray.units import units

    return units


def normalise_units(text: Any) -> str:
    """The units string as the registry reads it (carbon masses and "no unit" rewritten)."""
    s = str(text).strip()
    if s.lower() in NO_UNITS:
        return "1"
    s = _CARBON.sub(lambda m: f"{m.group(1) or ''}g", s)
    s = _MON.sub("month", s)
    s = s.replace("**", "^")
    return s


@functools.lru_cache(maxsize=512)
def _parse(text: str):
    return _registry().Unit(normalise_units(text))


def parse_units(text: Any, *, name: str = "variable") -> Any:
    """A :class:`pint.Unit` for ``text``.

    Raises
    ------
    UnitsError
        Naming ``name`` and the string that could not be read.
    """
    try:
        return _parse(str(text))
    except Exception as err:  # pint raises several unrelated exception types
        raise UnitsError(
            f"{name}: cannot read units {text!r} ({type(err).__name__}: {err}); use UDUNITS "
            "spellings such as 'K', 'm', 'g m-2 month-1', 'kg m-2 s-1', '1'") from None


def is_dimensionless(text: Any) -> bool:
    """Whether ``text`` is a pure number (``1``, ``%``, ``fraction`` ...)."""
    if str(text).strip().lower() in NO_UNITS:  # without loading the registry
        return True
    try:
        return bool(parse_units(text).dimensionless)
    except UnitsError:
        return False


def _has_month(unit: Any) -> bool:
    return any("month" in str(k) for k in getattr(unit, "_units", {}))


def time_exponent(unit: Any, *, name: str = "variable") -> float:
    """Exponent of time in ``unit`` (a pint unit or a units string): -1 for a rate."""
    unit = parse_units(unit, name=name) if isinstance(unit, str) else unit
    return float(unit.dimensionality.get("[time]", 0))


def has_years(unit: Any) -> bool:
    """Whether a pint unit is expressed in years."""
    return bool(_YEAR.search(format(unit, "D")))


def noleap_years(unit: Any) -> Any:
    """A pint unit with years of 365 days (CLM5's noleap calendar), not pint's 365.25."""
    return _parse(_YEAR.sub("common_year", format(unit, "D"))) if has_years(unit) else unit


def conversion(src: Any, dst: Any, *, name: str = "variable") -> tuple[float, float]:
    """``(scale, offset)`` with ``value_in_dst = scale * value_in_src + offset``.

    For amounts per month (``dst`` per month, ``src`` per second or per day) the scale is
    per *day*: multiply by the days of each month (:func:`per_month_factors`).

    Raises
    ------
    UnitsError
        ``src`` cannot be read, or has another physical dimension than ``dst``.

    Notes
    -----
    The same spelling gives ``(1.0, 0.0)`` without reading it (as :func:`convert`): the
    usual case of data already in the expected units does not load the units registry
    (pint's import and registry take ~0.5 s of a run's start).
    """
    if str(src).strip() == str(dst).strip():
        return 1.0, 0.0
    for text in (src, dst):
        parse_units(text, name=name)  # a UnitsError naming the variable
    result = _conversion(str(src), str(dst))
    if result is None:
        raise UnitsError(
            f"{name}: units {str(src)!r} cannot be converted to the expected {str(dst)!r} "
            f"(dimension {parse_units(src).dimensionality} vs "
            f"{parse_units(dst).dimensionality})")
    return result


@functools.lru_cache(maxsize=1024)
def _conversion(src: str, dst: str) -> tuple[float, float] | None:
    """:func:`conversion` of two readable units strings; None when not convertible."""
    su, du = _parse(src), _parse(dst)
    reg = _registry()
    if not (_has_month(su) or _has_month(du)):  # years of 365 days (see the module docs)
        su, du = noleap_years(su), noleap_years(du)
    if _has_month(du) and not _has_month(su) and time_exponent(su) == time_exponent(du) == -1:
        du = du * reg.Unit("month") / reg.Unit("day")  # per day: the month length follows
        # a year of a per-year rate has 365 days here (CLM's noleap calendar and PRODA's
        # year), not pint's 365.25, so that 12 months of a 365-day year sum to the year
        su = noleap_years(su)
    try:
        zero = reg.Quantity(0.0, su).to(du).magnitude
        one = reg.Quantity(1.0, su).to(du).magnitude
    except Exception:  # pint's DimensionalityError and friends
        return None
    scale, offset = float(one - zero), float(zero)
    return scale, (0.0 if abs(offset) < 1e-12 * max(1.0, abs(scale)) else offset)


def needs_month_lengths(src: Any, dst: Any, *, name: str = "variable") -> bool:
    """Whether converting ``src`` to ``dst`` needs the length of each month."""
    if str(src).strip() == str(dst).strip():  # the same units: nothing to convert
        return False
    su, du = parse_units(src, name=name), parse_units(dst, name=name)
    return _has_month(du) and not _has_month(su) and time_exponent(su) == -1


def per_month_factors(da: Any) -> Any:
    """Days of each step of ``da`` along ``month`` (noleap) or ``time`` (its calendar).

    Returns a DataArray on that dim, or ``None`` when ``da`` has neither dim.
    """
    import xarray as xr

    if "month" in da.dims:
        n = da.sizes["month"]
        if n != 12:
            return None
        return xr.DataArray(DAYS_IN_MONTH_NOLEAP, dims="month")
    if "time" in da.dims and "time" in da.coords and hasattr(da["time"], "dt"):
        try:
            days = np.asarray(da["time"].dt.days_in_month.values, dtype=float)
        except (AttributeError, TypeError):
            return None
        return xr.DataArray(days, dims="time")
    return None


def convert(da: Any, dst: str, *, name: str, src: Any = None) -> tuple[Any, str | None]:
    """``da`` in units ``dst`` (lazy where ``da`` is), and a note of the conversion.

    Parameters
    ----------
    da : DataArray
        Values in ``src`` (default ``da.attrs["units"]``).
    dst : str
        Target units.
    name : str
        Variable name used in messages.
    src : str, optional
        Source units, when not in the attrs.

    Returns
    -------
    DataArray, str or None
        Converted values with ``units = dst`` (other attrs kept), and ``None`` when nothing
        changed or a sentence such as ``"ALTMAX: converted from 'cm' to 'm' (x 0.01)"``.

    Raises
    ------
    UnitsError
        Unreadable or inconvertible units, or a per-month conversion without a ``month`` or
        datetime ``time`` dim.
    """
    src = da.attrs.get("units") if src is None else src
    if src is None:
        raise UnitsError(f"{name}: no units attribute; expected {dst!r}")
    if str(src).strip() == str(dst).strip():  # the same spelling: nothing to read or convert
        return da, None
    scale, offset = conversion(src, dst, name=name)
    per_month = needs_month_lengths(src, dst, name=name)
    if not per_month and scale == 1.0 and offset == 0.0:
        if str(src) == str(dst):
            return da, None
        out = da.copy(deep=False)
        out.attrs = {**da.attrs, "units": dst}
        return out, None
    attrs = {**da.attrs, "units": dst}
    out = da * scale if scale != 1.0 else da
    if per_month:
        days = per_month_factors(da)
        if days is None:
            raise UnitsError(
                f"{name}: units {str(src)!r} are a rate; converting to {dst!r} needs the "
                "month lengths, from a 'month' dim of 12 or a datetime 'time' coordinate, and "
                f"{name} has dims {tuple(da.dims)}")
        out = out * days
    if offset:
        out = out + offset
    out.attrs = attrs
    out.encoding = dict(getattr(da, "encoding", {}))
    if per_month:
        how = f"x {scale:g} per day, x the days of each month"
    else:
        how = (f"x {scale:g}" if scale != 1.0 else "") + (f" + {offset:g}" if offset else "")
    return out, f"{name}: converted from {str(src)!r} to {dst!r} ({how.strip()})"
