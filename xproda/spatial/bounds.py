"""Cell edges: CF bounds variables of coordinates, and edges inferred from cell centres."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

__all__ = ["bounds_name", "bounds_array", "bounds_data", "edges_1d"]


def bounds_name(obj: xr.DataArray | xr.Dataset, name: str, std: str | None) -> str | None:
    """Name of the CF bounds variable of coordinate ``name`` in ``obj``, or ``None``."""
    if isinstance(obj, xr.DataArray):  # a bounds variable cannot be a DataArray coordinate
        return None
    cands = []
    b = obj[name].attrs.get("bounds")
    if isinstance(b, str):
        cands.append(b)
    if std is not None:
        import warnings

        try:
            with warnings.catch_warnings():  # cf_xarray warns of bounds named but absent
                warnings.filterwarnings("ignore", message="Variables .* not found in object")
                cands.append(str(obj.cf.get_bounds(std).name))
        except Exception:  # absent or ambiguous
            pass
    cands += [f"{name}_bnds", f"{name}_bounds", f"{name}_bnd"]
    for c in cands:
        if c in obj.variables and c != name:
            return c
    return None


def bounds_array(obj: xr.DataArray | xr.Dataset, name: str, std: str | None) -> np.ndarray | None:
    """Bounds of coordinate ``name`` as NumPy ``coord.shape + (nv,)``, or ``None``.

    Loads dask-backed bounds; see :func:`bounds_data` for the lazy version.
    """
    d = bounds_data(obj, name, std)
    return None if d is None else np.asarray(d)


def bounds_data(obj: xr.DataArray | xr.Dataset, name: str, std: str | None) -> Any:
    """Bounds of coordinate ``name``, ``coord.shape + (nv,)``, NumPy or dask (not loaded)."""
    b = bounds_name(obj, name, std)
    if b is None:
        return None
    bv = obj[b]
    cdims = obj[name].dims
    extra = [d for d in bv.dims if d not in cdims]
    if len(extra) != 1 or not set(cdims) <= set(bv.dims):
        raise ValueError(
            f"bounds variable {b!r} of coordinate {name!r} has dims {bv.dims}; expected "
            f"{cdims} plus one vertex dim"
        )
    return bv.transpose(*cdims, extra[0]).data.astype(float)


def edges_1d(c: np.ndarray, name: str) -> np.ndarray:
    """Cell edges of 1-D monotonic centres: midpoints, extended half a step at the ends."""
    c = np.asarray(c, float)
    if c.size < 2:
        raise ValueError(
            f"cannot infer cell edges of coordinate {name!r} with {c.size} value(s); add CF "
            "bounds (attribute 'bounds' naming an (n, 2) variable) or pass area="
        )
    d = np.diff(c)
    if not (np.all(d > 0) or np.all(d < 0)):
        raise ValueError(f"coordinate {name!r} must be strictly monotonic to infer cell edges")
    mid = 0.5 * (c[1:] + c[:-1])
    return np.concatenate([[c[0] - 0.5 * d[0]], mid, [c[-1] + 0.5 * d[-1]]])
