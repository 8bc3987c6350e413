"""The ``.proda`` accessor on Dataset and DataArray: thin delegation to :mod:`xproda.xr_api`
and the gridded analyses of :mod:`xproda.analysis`.

Every method mirrors the function of the same name in :mod:`xproda.xr_api` one to one (same
keyword-only options); the accessor holds no state beyond the wrapped object.
"""

from __future__ import annotations

import functools
from typing import Any

import xarray as xr

from . import analysis, transient, xr_api

__all__ = ["ProdaDatasetAccessor", "ProdaDataArrayAccessor"]


def _mirror(name: str, module: Any = xr_api):
    fn = getattr(module, name)

    @functools.wraps(fn)
    def method(self, *args: Any, **kwargs: Any):
        return fn(self._obj, *args, **kwargs)

    method.__doc__ = (
        f"Accessor form of :func:`{module.__name__}.{name}` (the wrapped object is the first "
        f"argument).\n\n" + (fn.__doc__ or "")
    )
    return method


@xr.register_dataset_accessor("proda")
class ProdaDatasetAccessor:
    """``ds.proda``: PRODA soil-carbon methods on a Dataset."""

    def __init__(self, obj: xr.Dataset) -> None:
        self._obj = obj

    steady_state = _mirror("steady_state")
    predict_parameters = _mirror("predict_parameters")
    soc_stock = _mirror("soc_stock")
    turnover_time = _mirror("turnover_time")
    cell_area = _mirror("cell_area")
    global_total = _mirror("global_total")
    sample_sites = _mirror("sample_sites")
    validate = _mirror("validate")
    # transient runs (xproda.transient)
    simulate = _mirror("simulate", transient)
    spin_up = _mirror("spin_up", transient)
    write_simulation = _mirror("write_simulation", transient)
    # gridded analyses (xproda.analysis)
    bulk_indices = _mirror("bulk_indices", analysis)
    sensitivity = _mirror("sensitivity", analysis)
    sensitivity_gradient = _mirror("sensitivity_gradient", analysis)
    component_control = _mirror("component_control", analysis)


@xr.register_dataarray_accessor("proda")
class ProdaDataArrayAccessor:
    """``da.proda``: methods that make sense on a single variable (e.g. ``soc``)."""

    def __init__(self, obj: xr.DataArray) -> None:
        self._obj = obj

    soc_stock = _mirror("soc_stock")
    cell_area = _mirror("cell_area")
    global_total = _mirror("global_total")
    sample_sites = _mirror("sample_sites")
