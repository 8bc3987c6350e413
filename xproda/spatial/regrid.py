"""CRS and grid alignment: write a CRS, bring one grid onto another (select or reproject)."""

from __future__ import annotations

from typing import Any

import numpy as np
import xarray as xr

from xproda.spatial.discovery import Grid, coord_degrees, describe_grid, get_crs, object_label
from xproda.spatial.longitude import drop_geotransform, normalize_longitude

__all__ = ["align_grids", "ensure_crs"]


def ensure_crs(obj: xr.DataArray | xr.Dataset, *, crs: Any = None) -> xr.DataArray | xr.Dataset:
    """Return ``obj`` with a CRS written (rioxarray ``spatial_ref`` coordinate).

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
    crs : str, int or pyproj.CRS, optional
        CRS to write when ``obj`` has none. Default: ``EPSG:4326`` for grids with
        latitude/longitude coordinates; projected grids without a CRS need it explicitly.

    Returns
    -------
    Same type as ``obj``
        Unchanged when it already has a CRS (equal to ``crs`` if that is given).

    Raises
    ------
    ValueError
        If ``obj`` has a different CRS than ``crs``, or no CRS can be inferred.
    """
    import pyproj

    have = get_crs(obj)
    want = pyproj.CRS.from_user_input(crs) if crs is not None else None
    if have is not None:
        if want is not None and not have.equals(want):
            raise ValueError(
                f"{object_label(obj)} already has the CRS {have.name!r}, not {want.name!r}"
            )
        return obj
    if want is None:
        try:
            geographic = describe_grid(obj).kind != "projected"
        except ValueError:
            geographic = False
        if not geographic:
            raise ValueError(
                f"{object_label(obj)} has no CRS and no latitude/longitude coordinates; pass crs="
            )
        want = pyproj.CRS.from_epsg(4326)
    try:
        import rioxarray  # noqa: F401

        return obj.rio.write_crs(want)
    except ImportError:  # pragma: no cover - manual CF grid mapping
        attrs = want.to_cf()
        attrs["spatial_ref"] = want.to_wkt()
        out = obj.assign_coords(spatial_ref=xr.Variable((), np.int64(0), attrs))
        return out


def _rename_map(src: Grid, tgt: Grid) -> dict[str, str]:
    m = {}
    for a, b in zip((*src.dims, src.lat, src.lon), (*tgt.dims, tgt.lat, tgt.lon)):
        if a is not None and b is not None and a != b:
            m[a] = b
    return m


def _positions(source: np.ndarray, target: np.ndarray, atol: float) -> np.ndarray | None:
    """Indices of ``target`` values in ``source`` (within ``atol``), or None."""
    order = np.argsort(source, kind="stable")
    s = source[order]
    j = np.clip(np.searchsorted(s, target), 1, max(s.size - 1, 1))
    if s.size == 1:
        j = np.zeros(target.shape, dtype=int)
        best = j
    else:
        best = np.where(np.abs(s[j - 1] - target) <= np.abs(s[j] - target), j - 1, j)
    if not np.all(np.abs(s[best] - target) <= atol):
        return None
    return order[best]


def _describe_range(obj, g: Grid) -> str:
    parts = []
    for n in ((g.lat, g.lon) if g.kind == "latlon" else (g.y, g.x) if g.y else (g.lat, g.lon)):
        if n is not None and n in obj.coords:
            v = np.asarray(obj[n].values, float)
            parts.append(f"{n}: {v.size} values [{np.nanmin(v):g}, {np.nanmax(v):g}]")
    return "; ".join(parts) or f"dims {dict((d, obj.sizes[d]) for d in g.dims)}"


def align_grids(
    source: xr.DataArray | xr.Dataset,
    target: xr.DataArray | xr.Dataset,
    *,
    resampling: str = "nearest",
    atol: float = 1e-9,
) -> xr.DataArray | xr.Dataset:
    """Bring ``source`` (e.g. covariates) onto the grid of ``target`` (e.g. forcing).

    1. If both are geographic lat/lon grids, ``source`` gets ``target``'s longitude
       convention (:func:`normalize_longitude`), latitude order and spatial dim/coordinate
       names. If every target coordinate value then occurs in ``source`` (within
       ``atol``), the matching cells are selected (lazy indexing; ``source`` may cover a
       larger domain) and ``target``'s coordinate values are assigned exactly.
    2. Same for projected grids in the same CRS.
    3. Otherwise, if both have a CRS (rioxarray ``spatial_ref``), ``source`` is resampled
       with ``rio.reproject_match`` (rasterio/GDAL warp) and put on ``target``'s
       dims and coordinates. **This step loads dask data** (rioxarray reprojects in
       memory). Fill value outside the source: NaN for floating data.
    4. Otherwise a ``ValueError`` describes both grids.

    Parameters
    ----------
    source, target : xarray.DataArray or xarray.Dataset
    resampling : str
        Name of a :class:`rasterio.enums.Resampling` method for step 3 (``"nearest"``,
        ``"bilinear"``, ``"average"``, ...).
    atol : float
        Tolerance (coordinate units) for matching coordinates in steps 1-2.

    Returns
    -------
    Same type as ``source``
        On ``target``'s spatial dims and coordinates; other dims untouched.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> tgt = xr.DataArray(np.zeros((2, 2)), coords={"lat": [10.0, -10.0], "lon": [-90.0, 90.0]})
    >>> src = xr.DataArray([[1.0, 2.0], [3.0, 4.0]], coords={"latitude": [-10.0, 10.0],
    ...                    "longitude": [90.0, 270.0]}, dims=("latitude", "longitude"))
    >>> align_grids(src, tgt).values.tolist()
    [[4.0, 3.0], [2.0, 1.0]]
    """
    gs, gt = describe_grid(source), describe_grid(target)
    if gs.kind == "latlon" and gt.kind == "latlon":
        tl = np.asarray(coord_degrees(target, gt.lon).values, float)
        conv = "0..360" if np.nanmax(tl) > 180 else "-180..180"
        source = normalize_longitude(source, convention=conv, sort=True)
        src = source.rename(_rename_map(gs, gt))
        ty = np.asarray(coord_degrees(target, gt.lat).values, float)
        sy = np.asarray(coord_degrees(src, gt.lat).values, float)
        sx = np.asarray(coord_degrees(src, gt.lon).values, float)
        iy, ix = _positions(sy, ty, atol), _positions(sx, tl, atol)
        if iy is not None and ix is not None:
            return _select(src, target, gt, {gt.dims[0]: iy, gt.dims[1]: ix}, (gt.lat, gt.lon))
    elif gs.kind == "projected" and gt.kind == "projected" and gs.crs.equals(gt.crs):
        ren = _rename_map(gs, gt) | {a: b for a, b in ((gs.y, gt.y), (gs.x, gt.x)) if a != b}
        src = source.rename(ren)
        iy = _positions(_values(src, gt.y), _values(target, gt.y), atol)
        ix = _positions(_values(src, gt.x), _values(target, gt.x), atol)
        if iy is not None and ix is not None:
            return _select(src, target, gt, {gt.dims[0]: iy, gt.dims[1]: ix}, (gt.y, gt.x))
    if gs.kind in ("curvilinear", "unstructured") or gt.kind in ("curvilinear", "unstructured"):
        raise ValueError(
            f"align_grids supports rectilinear grids only: source is {gs.kind}, target is "
            f"{gt.kind}; regrid first (e.g. xesmf) or use sample_sites"
        )
    if gs.crs is None or gt.crs is None:
        raise ValueError(
            "mismatched grids without CRS: source "
            f"({_describe_range(source, gs)}) vs target ({_describe_range(target, gt)}); "
            f"{'source' if gs.crs is None else 'target'} has no CRS. Write one with "
            ".rio.write_crs('EPSG:4326') (or xproda.spatial.ensure_crs) or regrid first"
        )
    return _reproject(source, gs, target, gt, resampling)


def _values(obj: xr.DataArray | xr.Dataset, name: str) -> np.ndarray:
    return np.asarray(obj[name].values, float)


def _yx_names(g: Grid) -> tuple[str, str]:
    """Names of the 1-D coordinates along the (y, x) dims of a rectilinear grid."""
    return (g.lat, g.lon) if g.kind == "latlon" else (g.y, g.x)


def _select(src, target, gt: Grid, idx: dict[str, np.ndarray], names: tuple) -> Any:
    out = src.isel(idx)
    coords = {n: target[n].variable for n in names if n is not None}
    coords.update({d: target[d].variable for d in gt.dims if d in target.coords})
    return drop_geotransform(out.assign_coords(coords))


def _reproject(source, gs: Grid, target, gt: Grid, resampling: str):
    try:
        import rioxarray  # noqa: F401
        from rasterio.enums import Resampling
    except ImportError as err:  # pragma: no cover
        raise ImportError(
            "align_grids needs rioxarray to reproject (pip install xproda[geo])"
        ) from err
    try:
        rs = Resampling[resampling]
    except KeyError:
        raise ValueError(
            f"unknown resampling {resampling!r}; one of {[r.name for r in Resampling]}"
        ) from None
    ys, xs = gs.dims
    yt, xt = gt.dims
    sy, sx = (_values(source, n) for n in _yx_names(gs))
    ty, tx = (_values(target, n) for n in _yx_names(gt))
    template = xr.DataArray(
        np.zeros((ty.size, tx.size), dtype=np.uint8), dims=("y", "x"), coords={"y": ty, "x": tx}
    ).rio.write_crs(gt.crs)
    src_crs = gs.crs

    def one(da: xr.DataArray) -> xr.DataArray:
        if not (ys in da.dims and xs in da.dims):
            return da
        others = [d for d in da.dims if d not in (ys, xs)]
        work = da.transpose(*others, ys, xs)
        oshape = tuple(work.shape[:-2])
        data = np.asarray(work.values)  # rioxarray reprojects in memory
        if not (np.issubdtype(data.dtype, np.floating) or np.issubdtype(data.dtype, np.integer)):
            data = data.astype(float)
        band = xr.DataArray(
            data.reshape((int(np.prod(oshape)),) + data.shape[-2:]), dims=("band", "y", "x"),
            coords={"y": sy, "x": sx},
            attrs={k: v for k, v in da.attrs.items() if k in ("_FillValue", "nodata")},
        ).rio.write_crs(src_crs)
        res = band.rio.reproject_match(template, resampling=rs)
        out = np.asarray(res.values).reshape(oshape + res.shape[-2:])
        res = xr.DataArray(
            out, dims=(*others, yt, xt),
            coords={k: v.variable for k, v in da.coords.items() if not set(v.dims) & {ys, xs}
                    and k not in ("spatial_ref", "crs")},
        )
        res.attrs = {k: v for k, v in da.attrs.items() if k not in ("grid_mapping",)}
        res.name = da.name
        order = [yt if d == ys else xt if d == xs else d for d in da.dims]
        return res.transpose(*order)

    if isinstance(source, xr.DataArray):
        out = one(source)
    else:
        src = source.drop_dims([d for d in (ys, xs)], errors="ignore")
        out = src.assign(
            {k: one(v) for k, v in source.data_vars.items() if ys in v.dims and xs in v.dims}
        )
    coords = {d: target[d].variable for d in gt.dims if d in target.coords}
    for n in (gt.lat, gt.lon, gt.y, gt.x):
        if n is not None and n in target.coords and set(target[n].dims) <= set(gt.dims):
            coords[n] = target[n].variable
    for n in ("spatial_ref", "crs"):
        if n in target.coords:
            coords[n] = target[n].variable
    return out.assign_coords(coords)
