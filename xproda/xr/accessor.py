"""The ``.proda`` accessor on Dataset and DataArray: thin delegation to the xarray layer.

Every method is the function of the same name (in :mod:`xproda.xr.api`,
:mod:`xproda.xr.transient`, :mod:`xproda.io`, :mod:`xproda.spatial` or
:mod:`xproda.analysis`) with the wrapped object as its first argument: the same signature,
keyword-only options and docstring (``inspect.signature(ds.proda.steady_state)`` shows the
real parameters).  The functions' modules, and so torch, are imported on first use: importing
xproda registers the accessor without loading the kernels.  The accessor holds no state beyond
the wrapped object; its ``repr`` says what the object looks like to xproda (:func:`describe`:
grid and chunks, forcing present and missing, covariates, parameters, outputs) and lists the
methods.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

import xarray as xr

__all__ = ["ProdaDatasetAccessor", "ProdaDataArrayAccessor", "describe"]


class _Mirror:
    """A method that calls ``module.name(obj, ...)``; resolved (and imported) on first use."""

    def __init__(self, module: str, name: str | None = None) -> None:
        self.module, self.name = module, name

    def __set_name__(self, owner: type, attr: str) -> None:
        self.name = self.name or attr

    def function(self) -> Callable:
        return getattr(importlib.import_module(self.module), self.name)

    def __get__(self, obj: Any, owner: type | None = None) -> Callable:
        fn = self.function()
        if obj is None:
            return fn
        bound = functools.partial(fn, obj._obj)
        functools.update_wrapper(bound, fn)  # name, docstring; the signature drops ``obj``
        del bound.__wrapped__  # inspect.signature reads the partial, not the full function
        return bound


class _Accessor:
    _kind = ""

    def __init__(self, obj: xr.Dataset | xr.DataArray) -> None:
        self._obj = obj

    @classmethod
    def methods(cls) -> dict[str, str]:
        """Method name -> the function it calls (``module.name``)."""
        return {k: f"{v.module}.{v.name}" for c in reversed(cls.__mro__)
                for k, v in vars(c).items() if isinstance(v, _Mirror)}

    def __dir__(self) -> list[str]:
        return sorted(set(super().__dir__()) | set(self.methods()))

    def __repr__(self) -> str:
        dims = ", ".join(f"{d}: {n}" for d, n in self._obj.sizes.items())
        lines = [f"<xproda {self._kind} accessor ({dims})>"]
        lines += [f"{k:<11}{v}" for k, v in describe(self._obj).items()]
        names = list(self.methods())
        for i in range(0, len(names), 6):
            lines.append(f"{'methods' if i == 0 else '':<11}" + ", ".join(names[i:i + 6]))
        return "\n".join(lines)


def _names(names: Any, limit: int = 8) -> str:
    names = [str(n) for n in names]
    more = f", ... ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def describe(obj: xr.Dataset | xr.DataArray) -> dict[str, str]:
    """What ``obj`` looks like to xproda, one line per aspect (the accessor's ``repr``).

    ``grid`` (horizontal dims and how they are chunked), ``forcing`` (which CLM5 kernel
    forcing variables are present, which of those ``steady_state`` needs are missing),
    ``covariates`` (variables registered as covariates in :mod:`xproda.conventions`),
    ``parameters`` (``theta`` and its ``parameter`` coordinate) and ``outputs`` (steady-state
    and transient outputs). Reads names, dims and chunks only: nothing is computed.

    Parameters
    ----------
    obj : Dataset or DataArray

    Returns
    -------
    dict
        Aspect -> one line of text; aspects with nothing to say are left out.
    """
    from xproda import conventions
    from xproda.models.base import SoilCarbonModel
    from xproda.models.forcing import FORCING_SCHEMA
    from xproda.xr.contract import horizontal_dims

    ds = obj.to_dataset(name=obj.name or "<unnamed>") if isinstance(obj, xr.DataArray) else obj
    out: dict[str, str] = {}
    hz = horizontal_dims(ds)
    if hz:
        chunks = ds.chunksizes
        how = ", ".join(f"{d} {max(chunks[d])}" for d in hz if d in chunks)
        out["grid"] = (f"{' x '.join(f'{d} {ds.sizes[d]}' for d in hz)}; "
                       + (f"chunks {how} (lazy)" if how else "in memory (not chunked)"))
    else:
        out["grid"] = "no horizontal dims found (lat/lon, y/x, or a site/cell dim)"
    if isinstance(obj, xr.DataArray):
        return out
    present = [k for k in FORCING_SCHEMA if k in ds.data_vars]
    if present:
        missing = [k for k in SoilCarbonModel.required_forcing if k not in ds.data_vars]
        state = (f"missing for steady_state: {_names(missing)}" if missing
                 else "complete for steady_state")
        out["forcing"] = f"{len(present)} CLM5 variables ({_names(present, 6)}); {state}"
    cov = [k for k in ds.data_vars if k in conventions.COVARIATES]
    if cov:
        out["covariates"] = f"{len(cov)} ({_names(cov, 6)})"
    if "theta" in ds.data_vars:
        p = ds["theta"].sizes.get("parameter")
        out["parameters"] = f"theta ({p} on 'parameter')" if p else "theta"
    outputs = [k for k in ds.data_vars
               if k in conventions.OUTPUTS or k in conventions.TRANSIENT or
               str(k).startswith("soc_stock_")]
    outputs = [k for k in outputs if k not in FORCING_SCHEMA and k != "theta"]
    if outputs:
        out["outputs"] = _names(outputs)
    if len(out) == 1 and ds.data_vars:
        out["variables"] = f"none xproda knows: {_names(ds.data_vars, 6)}"
    return out


_API, _TR, _AN = "xproda.xr.api", "xproda.xr.transient", "xproda.analysis"


@xr.register_dataset_accessor("proda")
class ProdaDatasetAccessor(_Accessor):
    """``ds.proda``: PRODA soil-carbon methods on a Dataset."""

    _kind = "Dataset"
    validate = _Mirror(_API)
    steady_state = _Mirror(_API)
    predict_parameters = _Mirror(_API)
    soc_stock = _Mirror(_API)
    turnover_time = _Mirror(_API)
    global_total = _Mirror(_API)
    cell_area = _Mirror("xproda.spatial")
    sample_sites = _Mirror("xproda.spatial")
    write_zarr = _Mirror("xproda.io")
    # transient runs (xproda.xr.transient)
    simulate = _Mirror(_TR)
    spin_up = _Mirror(_TR)
    write_simulation = _Mirror(_TR)
    # gridded analyses (xproda.analysis)
    bulk_indices = _Mirror(_AN)
    sensitivity = _Mirror(_AN)
    sensitivity_gradient = _Mirror(_AN)
    component_control = _Mirror(_AN)


@xr.register_dataarray_accessor("proda")
class ProdaDataArrayAccessor(_Accessor):
    """``da.proda``: methods that make sense on a single variable (e.g. ``soc``)."""

    _kind = "DataArray"
    soc_stock = _Mirror(_API)
    global_total = _Mirror(_API)
    cell_area = _Mirror("xproda.spatial")
    sample_sites = _Mirror("xproda.spatial")
