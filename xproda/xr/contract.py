"""The input contract of the xarray layer, driven by the kernel schema.

Every forcing variable that reaches a kernel through :mod:`xproda.xr.engine` is checked here
against :data:`~xproda.models.forcing.FORCING_SCHEMA`:

- **dims**: its core dims (``month`` of 12 and/or ``layer`` of >= 20 -- or ``time`` for a
  transient run), plus horizontal dims of the grid (found by CF attrs or common names, see
  :func:`xproda.spatial.spatial_dims`), plus declared batch dims (:data:`BATCH_DIMS` and the
  caller's ``batch_dims``).  Any other dim is refused with an error that names it: a dim that
  is silently broadcast would give one "result" per entry (a monthly ``time`` dim would give
  12 steady states, each with one month's forcing all year);
- **units**: read from the ``units`` attribute with :mod:`xproda.units` (pint, UDUNITS
  spellings); convertible units are converted (the conversion is recorded in the output's
  ``history``), others refused; a dimensional variable without units is refused;
- **fill values**: a ``_FillValue``/``missing_value`` attribute that was not decoded masks
  those values (recorded); undeclared fill values (CLM's 1e36) fail the range check;
- **ranges** (with upper bounds) and integer-ness are checked on the data when the kernels run
  (lazily, in every dask task; :func:`xproda.models.forcing.validate_forcing`), with an error
  naming the variable, the values found and the range expected.

Nothing here reads data.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np
import xarray as xr

from xproda import grid, units
from xproda.errors import DimensionError, InputError, UnitsError

__all__ = [
    "BATCH_DIMS",
    "CLM_LEVEL_DIMS",
    "core_dims",
    "expected_dims_text",
    "horizontal_dims",
    "month_order",
    "ConformedForcing",
    "forcing_problems",
    "conform_forcing",
    "raise_problems",
]

#: dims always accepted as independent sets of columns besides the horizontal ones
BATCH_DIMS = ("site", "cell", "member", "sample", "profile", "scenario", "realization",
              "ensemble")
#: CLM history level dims: rename to ``layer`` (or read with :mod:`xproda.io.clm`)
CLM_LEVEL_DIMS = ("levgrnd", "levdcmp", "levsoi", "levlak", "nlevgrnd", "nlevdecomp")
_N = grid.N_LAYERS


def _schema():
    from xproda.models.forcing import FORCING_SCHEMA

    return FORCING_SCHEMA


def core_dims(name: str, *, steps: str = "month") -> tuple[str, ...]:
    """Core dims of forcing variable ``name`` (from its schema shape).

    ``steps="time"`` names the time axis of a transient run ``time``.
    """
    shape = _schema()[name].shape
    out = {(12, _N): ("month", "layer"), (12,): ("month",), (_N,): ("layer",)}[shape]
    return tuple(steps if d == "month" else d for d in out)


def expected_dims_text(name: str, *, steps: str = "month") -> str:
    return f"({', '.join(core_dims(name, steps=steps))}, <horizontal or batch dims>)"


def horizontal_dims(obj: xr.Dataset | xr.DataArray) -> tuple[str, ...]:
    """The horizontal dims of ``obj`` (empty when none can be identified)."""
    from xproda.spatial import spatial_dims

    try:
        return tuple(spatial_dims(obj))
    except ValueError:
        return ()


@dataclass
class ConformedForcing:
    """Forcing variables ready for the kernels (attrs stripped, schema units, <= 20 layers)."""

    arrays: dict[str, xr.DataArray]
    notes: list[str] = field(default_factory=list)
    horizontal: tuple[str, ...] = ()


def month_order(da: xr.DataArray) -> np.ndarray | None:
    """Positions that put a ``month`` dim in calendar order (January first), or None.

    ``None`` when ``da`` has no numeric ``month`` coordinate or it is already 1..12 (or
    0..11) in order.

    Raises
    ------
    DimensionError
        A numeric ``month`` coordinate that is not the 12 months of a year.
    """
    if "month" not in da.dims or "month" not in da.coords or da.sizes["month"] != 12:
        return None
    v = np.asarray(da["month"].values)
    if not np.issubdtype(v.dtype, np.number):
        return None
    base = 1 if v.min() == 1 else 0
    if sorted(v.tolist()) != list(range(base, base + 12)):
        raise DimensionError(
            f"the coordinate of the 'month' dim must hold the 12 months of a year (1..12, "
            f"January = 1), found {v.tolist()}")
    order = np.argsort(v, kind="stable")
    return None if (order == np.arange(12)).all() else order


def _dim_problems(name: str, da: xr.DataArray, *, steps: str, allowed: set,
                  horizontal: tuple) -> list[str]:
    core = core_dims(name, steps=steps)
    out: list[str] = []
    if steps == "time" and "time" in da.dims and "month" in da.dims:
        out.append(f"{name}: has both 'time' and 'month' dims; give one of them")
    for d in da.dims:
        if d in core or d in allowed or d in horizontal or d == "time" or (
                steps == "time" and d == "month"):  # time on a steady state: reported once
            continue
        if d in CLM_LEVEL_DIMS:
            out.append(f"{name}: dim {d!r} is a CLM level dim; rename it to 'layer' (the first "
                       f"{_N} levels are the model's) or read the file with "
                       "xproda.io.clm.open_clm_history")
        elif d in ("month", "layer"):
            out.append(f"{name}: unexpected dim {d!r}; expected dims "
                       f"{expected_dims_text(name, steps=steps)}")
        else:
            out.append(
                f"{name}: dim {d!r} is neither a core dim ({', '.join(core)}), a horizontal "
                f"dim of the grid ({', '.join(horizontal) or 'none identified'}) nor a batch "
                f"dim ({', '.join(sorted(allowed)) or 'none'}). If each {d!r} entry is an "
                f"independent set of columns pass batch_dims=[{d!r}]; otherwise select or "
                f"reduce it (e.g. ds.isel({d}=0))")
    if "month" in core and steps == "month":
        if "month" in da.dims and da.sizes["month"] != 12:
            out.append(f"{name}: dim 'month' must have 12 entries (a monthly climatology, "
                       f"January first), found {da.sizes['month']}")
    if "layer" in core and "layer" not in da.dims:
        out.append(f"{name}: expected dims {expected_dims_text(name, steps=steps)} with a "
                   f"'layer' dim of >= {_N} soil layers, found dims {tuple(da.dims)}")
    elif "layer" in da.dims and da.sizes["layer"] < _N:
        out.append(f"{name}: dim 'layer' must have >= {_N} soil layers (the first {_N} are "
                   f"used), found {da.sizes['layer']}")
    return out


def _units_problem(name: str, da: xr.DataArray) -> str | None:
    expected = _schema()[name].units
    have = da.attrs.get("units")
    if have is None:
        if units.is_dimensionless(expected):
            return None
        return (f"{name}: no 'units' attribute; expected {expected!r} (or units convertible to "
                f"it). Set ds[{name!r}].attrs['units']")
    try:
        units.conversion(have, expected, name=name)
    except UnitsError as err:
        return str(err)
    if units.needs_month_lengths(have, expected, name=name) and units.per_month_factors(
            da) is None:
        return (f"{name}: units {have!r} are a rate; converting to {expected!r} needs a "
                f"'month' dim of 12 or a datetime 'time' coordinate")
    return None


def forcing_problems(
    ds: xr.Dataset,
    required: Sequence[str],
    *,
    optional: Sequence[str] = (),
    steps: str = "month",
    batch_dims: Sequence[str] = (),
    model_name: str = "",
) -> list[str]:
    """Every problem of the forcing visible without reading data (empty when valid).

    Parameters
    ----------
    ds : Dataset
        Forcing.
    required, optional : sequence of str
        Forcing variables that must be present / are checked when present.
    steps : {"month", "time"}
        Time axis of the monthly variables: a 12-month climatology (steady state) or time
        steps (transient run).
    batch_dims : sequence of str
        Dims accepted as independent sets of columns besides :data:`BATCH_DIMS` and the
        horizontal dims.
    """
    schema = _schema()
    problems: list[str] = []
    missing = [k for k in required if k not in ds.variables]
    if missing:
        listing = ", ".join(f"{k} [{schema[k].units}] dims {expected_dims_text(k, steps=steps)}"
                            for k in missing)
        who = f" for model {model_name!r}" if model_name else ""
        problems.append(f"missing forcing variable(s){who}: {listing}; found variables "
                        f"{sorted(map(str, ds.data_vars))}")
    names = [k for k in (*required, *optional) if k in ds.variables]
    horizontal = horizontal_dims(ds[names]) if names else ()
    allowed = set(BATCH_DIMS) | set(batch_dims)
    timed = [k for k in names if "time" in ds[k].dims]
    if steps == "month" and timed:
        problems.append(
            f"{', '.join(timed)}: a 'time' dim ({ds.sizes['time']} steps), but a steady state "
            "needs a 12-month climatology on a 'month' dim (January first), not one steady "
            "state per time step. Average each calendar month over the chosen years "
            "(xproda.io.clm.clm_climatology(ds, years=...) for CLM history output, or "
            "ds.groupby('time.month').mean('time')), or run a transient simulation "
            "(ds.proda.simulate), which steps through 'time'")
    monthly = [k for k in names if "month" in ds[k].dims]
    if monthly:
        try:
            month_order(ds[monthly[0]])
        except DimensionError as err:
            problems.append(f"{', '.join(monthly)}: {err}")
    for k in names:
        da = ds[k]
        problems += _dim_problems(k, da, steps=steps, allowed=allowed, horizontal=horizontal)
        if not (np.issubdtype(da.dtype, np.number) and not np.issubdtype(da.dtype, np.bool_)):
            problems.append(f"{k}: expected a numeric variable, found dtype {da.dtype}")
            continue
        p = _units_problem(k, da)
        if p:
            problems.append(p)
    return problems


def raise_problems(problems: Sequence[str], what: str = "forcing") -> None:
    """Raise one error listing every problem (the most specific :class:`InputError`)."""
    if not problems:
        return
    text = f"invalid {what}:\n  - " + "\n  - ".join(problems)
    if all("units" in p for p in problems):
        raise UnitsError(text)
    if all("dim" in p for p in problems):
        raise DimensionError(text)
    raise InputError(text)


def _declared_fill(da: xr.DataArray) -> list[float]:
    out = []
    for key in ("_FillValue", "missing_value"):
        v = da.attrs.get(key)
        if v is not None:
            out += [float(x) for x in np.atleast_1d(v)]
    return out


def conform_forcing(
    ds: xr.Dataset,
    names: Sequence[str],
    *,
    steps: str = "month",
    batch_dims: Sequence[str] = (),
    required: Sequence[str] | None = None,
    model_name: str = "",
) -> ConformedForcing:
    """Forcing variables ``names`` in the kernels' units and layout (lazy).

    Checks :func:`forcing_problems` and raises one error listing them all; masks declared
    but undecoded fill values; converts units; keeps the first 20 layers; drops the
    variables' attrs and their ``layer``/``month``/``time`` coordinates (xproda's own come
    from :mod:`xproda.conventions`).

    Returns
    -------
    ConformedForcing
        The arrays (in the order of ``names``), the notes of every conversion, and the
        horizontal dims identified.
    """
    required = list(names) if required is None else list(required)
    optional = [k for k in names if k not in required]
    raise_problems(forcing_problems(ds, required, optional=optional, steps=steps,
                                    batch_dims=batch_dims, model_name=model_name))
    schema = _schema()
    present = [k for k in names if k in ds.variables]
    out = ConformedForcing({}, [], horizontal_dims(ds[present]) if present else ())
    for k in present:
        da = ds[k]
        if "layer" in da.dims and da.sizes["layer"] > _N:
            da = da.isel(layer=slice(0, _N))
        order = month_order(da)
        if order is not None:  # e.g. a climatology that starts in July: January first
            da = da.isel(month=order)
            out.notes.append(f"{k}: months reordered to January first (the 'month' "
                             "coordinate was not in calendar order)")
        fills = _declared_fill(da)
        if fills:
            da = da.where(~da.isin(fills))
            out.notes.append(f"{k}: values equal to the declared fill value(s) {fills} set "
                             "to NaN (no data)")
        if "units" in da.attrs:
            conv, note = units.convert(da.astype(np.float64) if da.dtype.kind == "f" and
                                       _needs_change(da, schema[k].units, k) else da,
                                       schema[k].units, name=k)
            da = conv
            if note:
                out.notes.append(note)
        da = da.copy(deep=False)
        da.attrs, da.encoding = {}, {}
        da = da.drop_vars([c for c in da.coords
                           if set(da[c].dims) & {"layer", "month", "time"}])
        out.arrays[k] = da
    return out


def _needs_change(da: xr.DataArray, expected: str, name: str) -> bool:
    scale, offset = units.conversion(da.attrs["units"], expected, name=name)
    return scale != 1.0 or offset != 0.0 or units.needs_month_lengths(
        da.attrs["units"], expected, name=name)
