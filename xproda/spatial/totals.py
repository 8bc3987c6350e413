"""Totals over the spatial domain: area-weighted sums in Pg C, stock units, land fractions."""

from __future__ import annotations

import re
from collections.abc import Hashable

import numpy as np
import xarray as xr

from xproda import conventions
from xproda.spatial.areas import cell_area
from xproda.spatial.discovery import spatial_dims
from xproda.spatial.sphere import EARTH_RADIUS

__all__ = ["global_total", "stock_units_factor", "fraction", "land_fraction_of"]


_MASS_KG = {"mg": 1e-6, "g": 1e-3, "kg": 1.0, "Mg": 1e3, "t": 1e3, "Gg": 1e6, "Tg": 1e9, "Pg": 1e12}
_AREA_M2 = {"m2": 1.0, "ha": 1e4, "km2": 1e6}
_UNITS_RE = re.compile(
    r"^(?P<mass>mg|g|kg|Mg|t|Gg|Tg|Pg)(?:C|c|\(C\))?"
    r"(?:/(?P<a1>m2|ha|km2)|(?P<a2>m-2|ha-1|km-2))$"
)


def stock_units_factor(units: str) -> float:
    """Factor converting an areal carbon density in ``units`` to kg C m-2.

    Accepts a mass (``mg``, ``g``, ``kg``, ``Mg``/``t``, ``Gg``, ``Tg``, ``Pg``), optionally
    followed by ``C``, per area (``m-2``/``/m2``/``m^-2``/``m**-2``, ``ha-1``, ``km-2``),
    with or without spaces: e.g. ``"kg m-2"``, ``"kg C m-2"``, ``"g C m-2"``, ``"gC/m2"``,
    ``"Mg C ha-1"``, ``"t ha-1"``.

    Raises
    ------
    ValueError
        For anything else (the message shows the units found).

    Examples
    --------
    >>> stock_units_factor("g C m-2"), stock_units_factor("Mg C ha-1")
    (0.001, 0.1)
    """
    s = str(units).replace("**", "").replace("^", "").replace("·", " ").replace(".", " ")
    s = "".join(s.split())
    m = _UNITS_RE.match(s)
    if m is None:
        raise ValueError(
            f"unsupported carbon-density units {units!r}; expected e.g. 'kg C m-2', "
            "'kg m-2', 'g C m-2', 'g m-2', 'Mg C ha-1' (mass per area)"
        )
    area = m.group("a1") or {"m-2": "m2", "ha-1": "ha", "km-2": "km2"}[m.group("a2")]
    return _MASS_KG[m.group("mass")] / _AREA_M2[area]


def fraction(lf: xr.DataArray) -> xr.DataArray:
    """A land fraction in [0, 1]: converted from its ``units`` (``%``...), range-checked."""
    from xproda import units as xunits

    if "units" in lf.attrs:
        scale, _ = xunits.conversion(lf.attrs["units"], "1", name=f"land_fraction {lf.name!r}")
        if scale != 1.0:
            return lf * scale
    if not isinstance(lf.data, np.ndarray) or lf.size == 0:  # dask: not checked
        return lf
    mx = float(np.nanmax(lf.values)) if np.isfinite(lf.values).any() else 0.0
    mn = float(np.nanmin(lf.values)) if np.isfinite(lf.values).any() else 0.0
    if mx > 1.0 + 1e-9 or mn < -1e-9:
        raise ValueError(
            f"land_fraction {lf.name!r} must lie in [0, 1] (found {mn:g} .. {mx:g}); if it is "
            "in percent set its attrs['units'] = '%'"
        )
    return lf


def _check_same_grid(
    ref: xr.DataArray | xr.Dataset, other: xr.DataArray, dims: tuple[str, ...], what: str
) -> None:
    missing = [d for d in dims if d not in other.dims]
    if missing:
        raise ValueError(f"{what} lacks the spatial dims {missing} (its dims: {other.dims})")
    for d in dims:
        if d in ref.indexes and d in other.indexes:
            a, b = np.asarray(ref[d].values), np.asarray(other[d].values)
            if a.shape != b.shape or (
                np.issubdtype(a.dtype, np.number) and not np.allclose(a, b, rtol=0, atol=1e-9)
            ):
                raise ValueError(
                    f"{what} is not on the grid of the stock along {d!r}: {b.size} values "
                    f"[{b.min()}, {b.max()}] vs {a.size} values [{a.min()}, {a.max()}]; use "
                    "align_grids first"
                )
        elif other.sizes[d] != ref.sizes[d]:
            raise ValueError(
                f"{what} has {other.sizes[d]} values along {d!r}, the stock {ref.sizes[d]}"
            )


def _lookup_var(ds: xr.Dataset, key: str, what: str) -> xr.DataArray:
    if key in ds.variables:
        return ds[key]
    try:
        return ds.cf[key]
    except Exception:
        raise ValueError(
            f"{what} {key!r} is neither a variable nor a CF standard name in the Dataset "
            f"(variables: {list(map(str, ds.variables))})"
        ) from None


def land_fraction_of(ds: xr.Dataset | xr.DataArray,
                     land_fraction: xr.DataArray | str | None) -> xr.DataArray | None:
    """Resolve ``land_fraction``: "auto" uses a ``land_area_fraction`` variable if present.

    ``"auto"`` (the default of :func:`global_total` and the analyses) looks for a variable
    or coordinate whose ``standard_name`` is ``land_area_fraction``; a name looks up that
    variable; a DataArray or ``None`` is returned as it is.
    """
    if isinstance(ds, xr.DataArray):
        ds = ds.coords.to_dataset()
    if land_fraction is None or isinstance(land_fraction, xr.DataArray):
        return land_fraction
    if isinstance(land_fraction, str):
        if land_fraction == "auto":
            for k, v in ds.variables.items():
                if v.attrs.get("standard_name") == "land_area_fraction":
                    return ds[k]
            return None
        if land_fraction not in ds.variables:
            raise KeyError(f"land_fraction: no variable {land_fraction!r} in the Dataset; "
                           f"found {sorted(map(str, ds.data_vars))}")
        return ds[land_fraction]
    raise TypeError(f"land_fraction: expected a DataArray, a variable name, 'auto' or None, "
                    f"found {type(land_fraction).__name__}")


def global_total(
    stock: xr.DataArray | xr.Dataset,
    *,
    area: xr.DataArray | str | None = None,
    land_fraction: xr.DataArray | str | None = "auto",
    radius: float = EARTH_RADIUS,
    stock_units: str | None = None,
) -> xr.DataArray | xr.Dataset:
    """Area-weighted sum of a carbon density over the spatial dims, in Pg C.

    ``total = sum(stock * factor * area * land_fraction) / 1e12`` where ``factor``
    converts ``stock_units`` to kg C m-2. NaN cells (in ``stock`` or ``land_fraction``)
    are skipped; an all-NaN slice gives NaN. Non-spatial dims (``member``, depth
    interval, ...) are kept. Lazy for dask input.

    Parameters
    ----------
    stock : xarray.DataArray or xarray.Dataset
        Areal carbon density. A Dataset gives one total per data variable that has all
        spatial dims (the land-fraction and cell-area variables excepted).
    area : xarray.DataArray or str, optional
        Cell areas in m2 on the same grid (or a variable/standard name in the Dataset
        ``stock``). Default :func:`cell_area` of ``stock`` with ``radius``.
    land_fraction : xarray.DataArray or str, optional
        Land fraction of each cell in [0, 1], or in percent when its ``units`` attr is
        ``"%"``. A str names a variable of the Dataset ``stock``, or a CF standard name
        such as ``"land_area_fraction"``. Default ``"auto"``: a variable or coordinate of
        ``stock`` with ``standard_name = land_area_fraction`` if there is one (as in the
        analyses), else 1 everywhere; ``None`` for 1 everywhere.
    radius : float
        Sphere radius in m for the default ``area`` (see :func:`cell_area`).
    stock_units : str, optional
        Units of ``stock``; default ``stock.attrs["units"]``. See
        :func:`stock_units_factor` for the accepted forms.

    Returns
    -------
    xarray.DataArray or xarray.Dataset
        Totals with units ``Pg C``.

    Raises
    ------
    ValueError
        Missing or unsupported units, land fraction outside [0, 1] (NumPy input only), or
        ``area``/``land_fraction`` on a different grid.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> lat = np.arange(-89.5, 90, 1.0); lon = np.arange(0.5, 360, 1.0)
    >>> soc = xr.DataArray(np.ones((180, 360)), coords={"lat": lat, "lon": lon},
    ...                    name="soc", attrs={"units": "kg C m-2"})
    >>> round(float(global_total(soc)), 3)  # 4 pi R^2 * 1 kg m-2 in Pg
    510.1
    """
    ds_ctx = stock if isinstance(stock, xr.Dataset) else None
    if isinstance(land_fraction, str) and land_fraction == "auto":
        land_fraction = land_fraction_of(stock, "auto")
    if isinstance(area, str) or isinstance(land_fraction, str):
        if ds_ctx is None:
            raise TypeError("area/land_fraction given by name need a Dataset stock")
    if isinstance(area, str):
        area = _lookup_var(ds_ctx, area, "area")
    if isinstance(land_fraction, str):
        land_fraction = _lookup_var(ds_ctx, land_fraction, "land_fraction")
    dims = spatial_dims(stock)
    if area is None:
        area = cell_area(stock, radius=radius)
    else:
        _check_same_grid(stock, area, dims, f"area {area.name!r}")
    weights = area.drop_vars(list(area.coords))
    if land_fraction is not None:
        _check_same_grid(stock, land_fraction, dims, f"land_fraction {land_fraction.name!r}")
        weights = weights * fraction(land_fraction).drop_vars(list(land_fraction.coords))
    extra = [d for d in weights.dims if d not in dims]
    if extra:
        raise ValueError(f"area/land_fraction have non-spatial dims {extra}")

    def one(da: xr.DataArray, name: Hashable) -> xr.DataArray:
        units = stock_units if stock_units is not None else da.attrs.get("units")
        if units is None:
            raise ValueError(
                f"stock variable {name!r} has no 'units' attribute; pass stock_units= "
                "(e.g. 'kg C m-2')"
            )
        try:
            factor = stock_units_factor(units)
        except ValueError as err:
            raise ValueError(f"stock variable {name!r}: {err}") from None
        w = weights * (factor / 1e12)  # kg -> Pg
        drop = [c for c in da.coords if set(da[c].dims) & set(dims)]
        tot = (da.drop_vars(drop) * w).sum(dims, skipna=True, min_count=1)
        tot = tot.drop_vars([c for c in ("spatial_ref", "crs") if c in tot.coords])
        label = da.attrs.get("long_name", name)
        tot.attrs = conventions.attrs("total", section="stocks", fields={"label": label})
        tot.name = name
        return tot

    if isinstance(stock, xr.DataArray):
        return one(stock, stock.name)
    skip = set()
    for v in (area, land_fraction):
        if isinstance(v, xr.DataArray) and v.name is not None:
            skip.add(v.name)
    out = {}
    for k, v in stock.data_vars.items():
        if k in skip or v.attrs.get("standard_name") in ("land_area_fraction", "cell_area"):
            continue
        if set(dims) <= set(v.dims):
            out[k] = one(v, k)
    if not out:
        raise ValueError(f"no data variable of the Dataset has the spatial dims {dims}")
    return xr.Dataset(out)
