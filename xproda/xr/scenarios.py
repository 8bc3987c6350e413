"""Scenario forcing for transient runs: climatologies in time, warming, input change, anomalies.

Every helper takes and returns xarray Datasets of forcing (lazy where the input is), so
scenarios compose: ``warming(scale_inputs(repeat_climatology(clim, years=100), 1.2), 4.0)``.
:func:`compare_parameters` runs one scenario with several parameter maps, e.g. the spatially
heterogeneous (network) parameters against one homogeneous set (batch mode or the mean), the
experiment of Tao et al. (2023) behind their climate-change result.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr

from xproda import conventions
from xproda.models.forcing import LITTER_INPUTS

__all__ = ["repeat_climatology", "warming", "scale_inputs", "apply_anomaly",
           "compare_parameters", "ramp"]


def repeat_climatology(clim: xr.Dataset, *, years: int, start: str = "2001-01-01",
                       calendar: str = "noleap") -> xr.Dataset:
    """A 12-month climatology (``month`` dims) repeated as ``years`` of monthly ``time`` steps.

    Lazy: variables keep their ``month`` dim where nothing changes them; only variables
    modified later (e.g. by :func:`warming`) get a real ``time`` dim.  Here every variable
    with a ``month`` dim gets a ``time`` dim by indexing (a dask gather, no copy at build).

    Parameters
    ----------
    clim : Dataset
        Forcing with ``month`` (12) dims as for :func:`xproda.xr.api.steady_state`.
    years : int
        Length of the run.
    start : str, default "2001-01-01"
        First time stamp (mid-month stamps are not needed: steps are months).
    calendar : str, default "noleap"
        cftime calendar of the time coordinate (CLM uses a 365-day year).
    """
    if int(years) < 1:
        raise ValueError(f"years must be >= 1, got {years!r}")
    if "month" not in clim.dims or clim.sizes["month"] != 12:
        raise ValueError("clim must have a 'month' dim of 12 entries (a monthly climatology), "
                         f"found dims {dict(clim.sizes)}")
    time = xr.date_range(start, periods=12 * int(years), freq="MS", calendar=calendar,
                         use_cftime=calendar not in ("standard", "gregorian", "proleptic_gregorian"))
    one = clim.drop_vars([c for c in ("month",) if c in clim.coords]).rename(month="time")
    # one piece per year, concatenated: with dask every year is a 12-step chunk referring to
    # the same source blocks, so no task ever holds more than the chunks it is asked for
    # (an integer-array take would build each block's whole run in one task)
    years_ = [one.assign_coords(time=time[12 * y:12 * (y + 1)]) for y in range(int(years))]
    out = xr.concat(years_, dim="time", data_vars="minimal", coords="minimal",
                    compat="override", join="override")
    out["time"].attrs.update(conventions.attrs("time", section="coordinates"))
    return out


def ramp(time: xr.DataArray, *, start: Any = None, end: Any = None) -> xr.DataArray:
    """Linear ramp 0 -> 1 over ``time`` (from ``start`` to ``end`` positions or stamps)."""
    n = time.sizes["time"]
    i0 = 0 if start is None else int(np.searchsorted(time.values, _stamp(time, start)))
    i1 = n - 1 if end is None else int(np.searchsorted(time.values, _stamp(time, end)))
    pos = np.arange(n, dtype=np.float64)
    r = np.clip((pos - i0) / max(i1 - i0, 1), 0.0, 1.0)
    return xr.DataArray(r, dims="time", coords={"time": time})


def _stamp(time, value):
    if isinstance(value, (int, np.integer)):
        return time.values[int(value)]
    return type(time.values[0])(*[int(p) for p in str(value).split("-")]) if hasattr(
        time.values[0], "calendar") else np.datetime64(value)


def _weight(ds: xr.Dataset, gradual: bool) -> xr.DataArray | float:
    if "time" not in ds.dims:
        raise ValueError("scenario helpers need forcing with a 'time' dim; start from "
                         "repeat_climatology(clim, years=...)")
    return ramp(ds["time"]) if gradual else 1.0


def warming(ds: xr.Dataset, delta: float | xr.DataArray, *, gradual: bool = True) -> xr.DataArray:
    """Soil warming: ``TSOI + delta`` (K), reached linearly over the run when ``gradual``.

    ``delta`` may be a map (a DataArray on the spatial dims, K).  The active layer
    (``ALTMAX``) is not recomputed; recompute it with
    :func:`xproda.climate.active_layer_thickness` where permafrost thaw matters.
    """
    out = ds.copy()
    out["TSOI"] = _keep_dtype(ds["TSOI"] + _weight(ds, gradual) * delta, ds["TSOI"])
    out.attrs = dict(ds.attrs, scenario=_append(ds, f"warming {_describe(delta)} K"
                                                + (" (linear ramp)" if gradual else "")))
    return out


def scale_inputs(ds: xr.Dataset, factor: float | xr.DataArray, *, gradual: bool = True
                 ) -> xr.Dataset:
    """Litter inputs (and NPP) times ``factor`` (e.g. 1.2 for +20% NPP), ramped when ``gradual``."""
    w = _weight(ds, gradual)
    out = ds.copy()
    for k in (*LITTER_INPUTS, "NPP"):
        if k in ds:
            out[k] = _keep_dtype(ds[k] * (1.0 + w * (factor - 1.0)), ds[k])
    out.attrs = dict(ds.attrs, scenario=_append(ds, f"inputs x {_describe(factor)}"
                                                + (" (linear ramp)" if gradual else "")))
    return out


def apply_anomaly(ds: xr.Dataset, anomaly: xr.Dataset, *,
                  multiplicative: Sequence[str] = (*LITTER_INPUTS, "NPP")) -> xr.Dataset:
    """Add (or multiply by) a forcing anomaly Dataset (e.g. a climate model's change).

    Variables of ``anomaly`` named in ``multiplicative`` scale the forcing (ratios); others
    are added (differences, e.g. TSOI in K).  Anomalies broadcast: ``time``, ``month``
    (mapped by the time stamps' month) or static.  Scalars stay within their valid ranges:
    W_SCALAR, O_SCALAR and FPI_vr are clipped to [0, 1], inputs to >= 0.
    """
    unknown = [k for k in anomaly.data_vars if k not in ds]
    if unknown:
        raise ValueError(f"anomaly variables {unknown} are not in the forcing "
                         f"(variables: {sorted(map(str, ds.data_vars))})")
    out = ds.copy()
    for k, a in anomaly.data_vars.items():
        if "month" in a.dims and "time" in ds.dims:
            a = a.isel(month=xr.DataArray(ds["time"].dt.month.values - 1, dims="time",
                                          coords={"time": ds["time"]}))
            a = a.drop_vars("month", errors="ignore")
        v = ds[k] * a if k in multiplicative else ds[k] + a
        if k in ("W_SCALAR", "O_SCALAR", "FPI_vr"):
            v = v.clip(0.0, 1.0)
        elif k in (*LITTER_INPUTS, "NPP"):
            v = v.clip(min=0.0)
        out[k] = _keep_dtype(v, ds[k])
    out.attrs = dict(ds.attrs, scenario=_append(ds, f"anomaly ({', '.join(map(str, anomaly.data_vars))})"))
    return out


def _keep_dtype(new: xr.DataArray, old: xr.DataArray) -> xr.DataArray:
    """``new`` in ``old``'s float dtype and attrs (float32 forcing stays float32: half the
    bytes through the rest of the pipeline; the kernel computes in float64 anyway)."""
    if np.issubdtype(old.dtype, np.floating) and new.dtype != old.dtype:
        new = new.astype(old.dtype)
    return new.assign_attrs(old.attrs)


def _describe(x) -> str:
    return f"{float(x):+g}" if np.ndim(x) == 0 else "(map)"


def _append(ds: xr.Dataset, what: str) -> str:
    prev = ds.attrs.get("scenario")
    return f"{prev}; {what}" if prev else what


def compare_parameters(
    ds: xr.Dataset,
    params: Mapping[str, xr.DataArray | xr.Dataset],
    **options: Any,
) -> xr.Dataset:
    """Run one scenario with several parameter sets: an ``experiment`` dim per entry.

    Parameters
    ----------
    ds : Dataset
        Scenario forcing with a ``time`` dim.
    params : mapping of str to DataArray or Dataset
        E.g. ``{"heterogeneous": net_params, "homogeneous": batch_params}``; each is spun up
        to its own periodic state of the first year (or of ``spin_up_forcing``).
    **options
        Keyword arguments of :func:`xproda.xr.transient.simulate`.

    Returns
    -------
    Dataset
        The outputs of :func:`~xproda.xr.transient.simulate` stacked along ``experiment``, plus
        ``soc_change`` (kg m-2): stock at the end minus at the start of the run.
    """
    from xproda.xr.transient import simulate

    if not params:
        raise ValueError("params must name at least one parameter set")
    runs = []
    for name, p in params.items():
        r = simulate(ds, p, **options)
        r = r.drop_vars([k for k in r.data_vars if "pool" in r[k].dims])
        runs.append(r.expand_dims(experiment=[str(name)]))
    out = xr.concat(runs, dim="experiment", data_vars="all", coords="minimal",
                    compat="override", join="override")
    out["soc_change"] = (out["soc_stock"].isel(time=-1, drop=True) - out["initial_soc_stock"])
    out["soc_change"].attrs = conventions.attrs("soc_change", section="transient")
    return out
