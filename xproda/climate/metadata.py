"""Metadata of the monthly climate and the forcing made by :mod:`xproda.climate`.

Attributes come from the metadata registry (:mod:`xproda.conventions`, section
``"climate"``): :data:`CLIMATE_VARIABLES`, :func:`annotated`, :func:`month_coord`; the CF
``history`` of an output has one line per unit conversion of its inputs (:func:`history`).

Examples
--------
>>> month_coord().values.tolist()[:3], month_coord().dims
([1, 2, 3], ('month',))
"""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from xproda import conventions

__all__ = ["CLIMATE_VARIABLES", "annotated", "history", "month_coord"]

#: monthly climate of the world (dims month, lat, lon): attributes from the metadata registry
CLIMATE_VARIABLES: dict[str, dict[str, Any]] = {
    k: conventions.attrs(k, section="climate") for k in ("tas", "pr", "pet")
}


def annotated(da: xr.DataArray, name: str, section: str = "climate") -> xr.DataArray:
    """``da`` with the registry's attrs of ``name`` (replaced, never merged).

    Parameters
    ----------
    da : xarray.DataArray
    name : str
        Variable name in the metadata registry.
    section : str, default "climate"
        Registry section (:func:`xproda.conventions.attrs`).

    Returns
    -------
    xarray.DataArray
        A shallow copy of ``da`` with the registry's attributes only.
    """
    out = da.copy(deep=False)
    out.attrs = conventions.attrs(name, section=section)
    return out


def month_coord() -> xr.DataArray:
    """The ``month`` coordinate of the outputs: 1..12 with the registry's attributes.

    Returns
    -------
    xarray.DataArray
    """
    return xr.DataArray(np.arange(1, 13), dims="month",
                        attrs=conventions.attrs("month", section="coordinates"))


def history(action: str, log: list[str], summary: str) -> str:
    """CF ``history``: one line per conversion of the inputs, then ``summary``.

    Parameters
    ----------
    action : str
        Name of the function that made the output (prefix of each line).
    log : list of str
        Conversions of the inputs (:attr:`xproda.climate.contract.ClimateInputs.log`).
    summary : str
        Last line.

    Returns
    -------
    str
        Time-stamped lines (:func:`xproda.conventions.history_line`) joined by newlines.
    """
    return "\n".join(conventions.history_line(f"{action}: {line}") for line in [*log, summary])
