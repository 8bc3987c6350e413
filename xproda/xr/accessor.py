"""The ``.proda`` accessor on Dataset and DataArray: thin delegation to the xarray layer.

Every method is the function of the same name (in :mod:`xproda.xr.api`,
:mod:`xproda.xr.transient`, :mod:`xproda.io`, :mod:`xproda.spatial` or
:mod:`xproda.analysis`) with the wrapped object as its first argument: the same signature,
keyword-only options and docstring (``inspect.signature(ds.proda.steady_state)`` shows the
real parameters).  The functions' modules, and so torch, are imported on first use: importing
xproda registers the accessor without loading the kernels.  The accessor holds no state beyond
the wrapped object; its ``repr`` lists what is available.
"""

from __future__ import annotations

import functools
import importlib
from typing import Any, Callable

import xarray as xr

__all__ = ["ProdaDatasetAccessor", "ProdaDataArrayAccessor"]


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
        names = list(self.methods())
        dims = ", ".join(f"{d}: {n}" for d, n in self._obj.sizes.items())
        lines = [f"<xproda {self._kind} accessor ({dims})>"]
        for i in range(0, len(names), 5):
            lines.append("  " + ", ".join(names[i:i + 5]))
        return "\n".join(lines)


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
