"""Sampling gridded data at site locations: nearest cell or bilinear interpolation."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import xarray as xr

from xproda import conventions
from xproda.spatial.bounds import edges_1d
from xproda.spatial.discovery import (
    Grid,
    coord_degrees,
    describe_grid,
    from_lonlat,
    lat_lon,
    object_label,
    to_lonlat,
)
from xproda.spatial.longitude import wrap_longitude
from xproda.spatial.sphere import unit_vectors

__all__ = ["sample_sites", "axis_locate", "is_global_lon"]


def _site_table(
    sites: Any, lat: Any, lon: Any, ids: Any, site_dim: str
) -> tuple[np.ndarray, np.ndarray, Any]:
    if sites is not None:
        if lat is not None or lon is not None:
            raise TypeError("pass either sites or lat=/lon=, not both")
        if isinstance(sites, xr.Dataset):
            names = {str(k).lower(): k for k in sites.variables}
        elif hasattr(sites, "columns"):  # pandas DataFrame
            names = {str(k).lower(): k for k in sites.columns}
        elif isinstance(sites, Mapping):
            names = {str(k).lower(): k for k in sites}
        else:
            raise TypeError(
                "sites must be a pandas DataFrame, an xarray Dataset or a mapping with "
                f"latitude/longitude entries, got {type(sites).__name__}"
            )
        kl = next((names[k] for k in ("lat", "latitude", "site_lat") if k in names), None)
        lon_keys = ("lon", "longitude", "long", "lng", "site_lon")
        ko = next((names[k] for k in lon_keys if k in names), None)
        if kl is None or ko is None:
            raise ValueError(
                "sites needs latitude and longitude entries named lat/latitude and "
                f"lon/longitude; found {list(names.values())}"
            )
        lat, lon = sites[kl], sites[ko]
        if ids is None:
            if isinstance(sites, xr.Dataset):
                d = sites[kl].dims
                if len(d) == 1 and d[0] in sites.indexes:
                    ids = sites.indexes[d[0]]
            elif hasattr(sites, "index"):
                idx = sites.index
                if not (type(idx).__name__ == "RangeIndex" and idx.start == 0 and idx.step == 1
                        and idx.name is None):
                    ids = idx
            for key in (site_dim, "site_id", "id"):
                if ids is None and key.lower() in names and names[key.lower()] not in (kl, ko):
                    ids = sites[names[key.lower()]]
    if lat is None or lon is None:
        raise TypeError("sample_sites needs sites, or both lat= and lon=")
    la = np.atleast_1d(np.asarray(lat, dtype=float)).ravel()
    lo = np.atleast_1d(np.asarray(lon, dtype=float)).ravel()
    if la.shape != lo.shape:
        raise ValueError(f"site lat and lon differ in length: {la.size} vs {lo.size}")
    bad = np.isfinite(la) & (np.abs(la) > 90)
    if bad.any():
        raise ValueError(
            f"site latitudes must lie in [-90, 90] degrees; found {la[bad][:5].tolist()} "
            f"at positions {np.flatnonzero(bad)[:5].tolist()}"
        )
    if ids is not None:
        ids = np.asarray(ids)
        if ids.shape != la.shape:
            raise ValueError(f"site ids have {ids.size} values for {la.size} sites")
    return la, lo, ids


def axis_locate(
    c: np.ndarray, v: np.ndarray, edges: tuple[float, float], *, periodic: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bracketing indices ``i0, i1``, weight ``w`` of ``i1`` and validity for positions ``v``.

    ``c`` is monotonic (either direction). Positions outside ``edges`` (the outer cell
    edges) are invalid; positions between an outer edge and the outermost centre get all
    weight on that centre.
    """
    order = np.argsort(c, kind="stable")
    cs = c[order]
    if periodic:
        cs = np.concatenate([[cs[-1] - 360.0], cs, [cs[0] + 360.0]])
        order = np.concatenate([[order[-1]], order, [order[0]]])
        valid = np.isfinite(v)
    else:
        lo, hi = min(edges), max(edges)
        valid = np.isfinite(v) & (v >= lo) & (v <= hi)
    vv = np.clip(np.where(valid, v, cs[0]), cs[0], cs[-1])
    if cs.size == 1:
        z = np.zeros(v.shape, dtype=int) + order[0]
        return z, z, np.zeros(v.shape), valid
    j = np.clip(np.searchsorted(cs, vv, side="right") - 1, 0, cs.size - 2)
    w = (vv - cs[j]) / (cs[j + 1] - cs[j])
    return order[j], order[j + 1], w, valid


def is_global_lon(c: np.ndarray) -> bool:
    """Whether longitude centres ``c`` (degrees) go all the way round (no gap > 1.5 steps)."""
    if c.size < 2:
        return False
    u = np.sort(wrap_longitude(c, "0..360"))
    gaps = np.diff(np.concatenate([u, [u[0] + 360.0]]))
    return bool(gaps.max() <= 1.5 * np.median(gaps[:-1]) + 1e-9)


def _isel_points(obj: xr.DataArray | xr.Dataset, idx: dict[str, np.ndarray], site_dim: str):
    return obj.isel({d: xr.DataArray(i, dims=site_dim) for d, i in idx.items()})


def sample_sites(
    obj: xr.DataArray | xr.Dataset,
    sites: Any = None,
    *,
    lat: Any = None,
    lon: Any = None,
    ids: Any = None,
    method: str = "nearest",
    site_dim: str = "site",
    tolerance: float | None = None,
) -> xr.DataArray | xr.Dataset:
    """Values of a gridded object at site (soil-profile) locations.

    Pass the sites either as ``sites`` (a pandas DataFrame, an xarray Dataset or a mapping
    with ``lat``/``latitude`` and ``lon``/``longitude`` entries) or as ``lat=``/``lon=``
    array-likes in degrees. Site longitudes are wrapped to the grid's convention
    (0..360 or -180..180); latitudes may be in either order on the grid. Selection is
    vectorised pointwise indexing: one new dim ``site_dim``, lazy for dask input.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset
        Gridded data (geographic, projected with a CRS, curvilinear or unstructured).
    sites : DataFrame, Dataset or mapping, optional
        Site table. Site ids are taken from a non-default DataFrame index, the index of the
        Dataset's site dim, or a ``site``/``site_id``/``id`` column.
    lat, lon : array-like, optional
        Site latitudes and longitudes (degrees), instead of ``sites``.
    ids : array-like, optional
        Site ids, stored as the ``site_dim`` coordinate.
    method : {"nearest", "linear"}
        Grid cell containing the site (nearest centre), or bilinear interpolation between
        the four surrounding centres (in lon/lat, or in projected x/y). Between an outer
        cell edge and the outermost centres, linear takes the outermost value; across the
        dateline of a global grid it wraps. Terms with zero weight are ignored, so a site
        on a centre is never NaN because of a NaN neighbour. ``"linear"`` needs a
        rectilinear grid (geographic or projected).
    site_dim : str
        Name of the new dim.
    tolerance : float, optional
        Maximum distance, in degrees of latitude and (wrapped) longitude separately,
        between a site and the centre of the nearest grid cell; farther sites give NaN.
        Without it, sites outside the grid's extent (beyond its outer cell edges) give NaN
        on rectilinear grids, and every site gets its nearest cell on curvilinear and
        unstructured grids.

    Returns
    -------
    Same type as ``obj``
        Spatial dims replaced by ``site_dim``. Coordinates: the site ids (if any),
        ``site_lat``/``site_lon`` (the requested positions), and the grid coordinates
        of the selected cells (``"nearest"``) or of the interpolation points
        (``"linear"``).

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> da = xr.DataArray(np.arange(6.0).reshape(2, 3), coords={"lat": [10.0, -10.0],
    ...                   "lon": [0.0, 120.0, 240.0]}, dims=("lat", "lon"))
    >>> sample_sites(da, lat=[9.0, -11.0], lon=[-118.0, 1.0], ids=["a", "b"]).values.tolist()
    [2.0, 3.0]
    """
    if method not in ("nearest", "linear"):
        raise ValueError(f"method must be 'nearest' or 'linear', got {method!r}")
    if site_dim in obj.dims:
        raise ValueError(
            f"{object_label(obj)} already has a dim {site_dim!r}; choose another site_dim"
        )
    la, lo, ids = _site_table(sites, lat, lon, ids, site_dim)
    g = describe_grid(obj)

    if g.kind in ("latlon", "projected"):
        ydim, xdim = g.dims
        if g.kind == "latlon":
            cy = np.asarray(coord_degrees(obj, g.lat).values, float)
            cx = np.asarray(coord_degrees(obj, g.lon).values, float)
            periodic = is_global_lon(cx)
            if periodic:  # sites into [min, min + 360); the search wraps around
                low = float(np.nanmin(cx))
            else:  # unwrap a regional grid across the seam, sites around its middle
                cx = np.unwrap(cx, period=360.0)
                low = 0.5 * (np.nanmin(cx) + np.nanmax(cx)) - 180.0
            vx = (lo - low) % 360.0 + low
            vy = la
            ey = np.clip(edges_1d(cy, g.lat)[[0, -1]], -90, 90) if cy.size > 1 else cy[[0, 0]]
        else:
            cy = np.asarray(obj[g.y].values, float)
            cx = np.asarray(obj[g.x].values, float)
            periodic = False
            vx, vy = from_lonlat(g.crs, lo, la)
            ey = edges_1d(cy, g.y)[[0, -1]] if cy.size > 1 else cy[[0, 0]]
        ex = cx[[0, 0]] if periodic or cx.size < 2 else edges_1d(cx, xdim)[[0, -1]]
        iy0, iy1, wy, oky = axis_locate(cy, vy, tuple(ey), periodic=False)
        ix0, ix1, wx, okx = axis_locate(cx, vx, tuple(ex), periodic=periodic)
        valid = oky & okx
        iy = np.where(wy > 0.5, iy1, iy0)
        ix = np.where(wx > 0.5, ix1, ix0)
        if tolerance is not None:
            if g.kind == "latlon":
                near_lat, near_lon = cy[iy], cx[ix]
            else:
                near_lon, near_lat = to_lonlat(g.crs, cx[ix], cy[iy])
    else:
        if method == "linear":
            raise ValueError(
                f"method='linear' needs a rectilinear grid; {object_label(obj)} is {g.kind}. Use "
                "method='nearest'"
            )
        from scipy.spatial import cKDTree

        grid_lat, grid_lon = lat_lon(obj)
        gl = np.asarray(grid_lat.transpose(*g.dims).values, float)
        go = np.asarray(grid_lon.transpose(*g.dims).values, float)
        pts = unit_vectors(go.ravel(), gl.ravel())
        ok = np.all(np.isfinite(pts), axis=1)
        tree = cKDTree(pts[ok])
        q = unit_vectors(lo, la)
        valid = np.all(np.isfinite(q), axis=1)
        _, k = tree.query(np.where(valid[:, None], q, 0.0))
        flat = np.flatnonzero(ok)[k]
        near_lat, near_lon = gl.ravel()[flat], go.ravel()[flat]
        if g.kind == "curvilinear":
            iy, ix = np.unravel_index(flat, gl.shape)
        else:
            iy = flat
    if tolerance is not None:
        dlat = np.abs(near_lat - la)
        dlon = np.abs(wrap_longitude(near_lon - lo, "-180..180"))
        valid = valid & (dlat <= tolerance) & (dlon <= tolerance)

    if g.kind == "unstructured":
        out = _isel_points(obj, {g.dims[0]: np.where(valid, iy, 0)}, site_dim)
    elif method == "nearest":
        out = _isel_points(
            obj, {g.dims[0]: np.where(valid, iy, 0), g.dims[1]: np.where(valid, ix, 0)}, site_dim
        )
    else:
        out = _interp_bilinear(obj, g, (iy0, iy1, wy), (ix0, ix1, wx), valid, site_dim)
        if g.kind == "latlon":
            out = out.assign_coords({g.lat: (site_dim, vy), g.lon: (site_dim, vx)})
        else:
            out = out.assign_coords({g.y: (site_dim, vy), g.x: (site_dim, vx)})
    if not valid.all():
        mask = xr.DataArray(valid, dims=site_dim)
        if isinstance(out, xr.Dataset):
            out = out.map(lambda v: v.where(mask) if site_dim in v.dims else v, keep_attrs=True)
        else:
            out = out.where(mask)
    site_coords: dict[str, Any] = {
        "site_lat": (site_dim, la, conventions.attrs("site_lat", section="spatial")),
        "site_lon": (site_dim, lo, conventions.attrs("site_lon", section="spatial")),
    }
    if ids is not None:
        site_coords[site_dim] = (site_dim, ids)
    return out.assign_coords(site_coords)


def _interp_bilinear(obj, g: Grid, ylocs, xlocs, valid, site_dim):
    (iy0, iy1, wy), (ix0, ix1, wx) = ylocs, xlocs
    ydim, xdim = g.dims
    iy0, iy1, ix0, ix1 = (np.where(valid, i, 0) for i in (iy0, iy1, ix0, ix1))
    terms = [
        (iy0, ix0, (1 - wy) * (1 - wx)),
        (iy0, ix1, (1 - wy) * wx),
        (iy1, ix0, wy * (1 - wx)),
        (iy1, ix1, wy * wx),
    ]

    def interp(da: xr.DataArray) -> xr.DataArray:
        if not (ydim in da.dims and xdim in da.dims):
            return da
        drop = [c for c in da.coords if set(da[c].dims) & {ydim, xdim}]
        da0 = da.drop_vars(drop)
        acc = None
        for ky, kx, w in terms:
            if not np.any(w > 0):
                continue
            wd = xr.DataArray(w, dims=site_dim)
            v = _isel_points(da0, {ydim: ky, xdim: kx}, site_dim)
            t = (v * wd).where(wd > 0, 0.0)
            acc = t if acc is None else acc + t
        if acc is None:  # no sites
            acc = _isel_points(da0, {ydim: iy0, xdim: ix0}, site_dim) * 0.0
        acc.attrs = da.attrs
        acc.name = da.name
        return acc

    if isinstance(obj, xr.DataArray):
        return interp(obj)
    return obj.map(interp, keep_attrs=True).drop_vars(
        [c for c in obj.coords if set(obj[c].dims) & {ydim, xdim}], errors="ignore"
    )
