"""Covariate stacks: several covariate sources on heterogeneous grids brought onto one grid.

:func:`stack_covariates` opens (if needed) every source, works out for each variable how to
bring it onto the target grid (area-weighted mean or majority when the source is finer,
nearest or bilinear when it is coarser, a rioxarray reprojection for projected sources) and
returns one lazy :class:`xarray.Dataset` on the target's dims and coordinates.

On geographic (lat/lon) grids the regridding is a pair of small NumPy weight matrices, one
per axis, contracted lazily with the (dask) data: the exact spherical overlap areas of
rectilinear lat/lon cells factorise into an overlap in longitude times an overlap in
``sin(latitude)``, so an area-weighted mean is ``Wy @ (area * value) @ Wx.T`` divided by
the same contraction of ``area * valid``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import xarray as xr

from xproda import conventions
from xproda.spatial.areas import cell_area
from xproda.spatial.bounds import bounds_array, edges_1d
from xproda.spatial.discovery import Grid, coord_degrees, describe_grid
from xproda.spatial.regrid import align_grids, ensure_crs
from xproda.spatial.sampling import axis_locate, is_global_lon

__all__ = ["stack_covariates"]

#: methods for continuous and for categorical variables
CONTINUOUS_METHODS = ("mean", "nearest", "linear")
CATEGORICAL_METHODS = ("majority", "nearest")
#: rasterio resampling used for projected sources, by method
_RESAMPLING = {"mean": "average", "nearest": "nearest", "linear": "bilinear",
               "majority": "mode"}
#: attributes of a source variable carried to its output variable(s)
_KEPT_ATTRS = ("units", "long_name", "standard_name")
#: CF attributes of the class codes (encode="codes")
_FLAG_ATTRS = ("flag_values", "flag_meanings")
_SY, _SX, _CLASS = "__source_y", "__source_x", "__class"
#: weights below this (fraction of a source cell) are rounding noise of the cell edges
_TINY = 1e-12
#: relative slack of the coverage test (a fully covered cell passes min_coverage=1)
_SLACK = 1e-9


# -------------------------------------------------------------------------------------------
# grids
# -------------------------------------------------------------------------------------------
class _Axis:
    """One axis of a rectilinear lat/lon grid: centres and cell edges in degrees."""

    def __init__(self, obj: xr.DataArray | xr.Dataset, name: str, *, lat: bool) -> None:
        self.name = name
        self.centres = np.asarray(coord_degrees(obj, name).values, float)
        std = "latitude" if lat else "longitude"
        b = bounds_array(obj, name, std)
        if b is not None:
            if str(obj[name].attrs.get("units", "")).lower().startswith("rad"):
                b = np.rad2deg(b)
            lo, hi = np.minimum(b[:, 0], b[:, -1]), np.maximum(b[:, 0], b[:, -1])
            if not lat:  # a pair such as (359.5, 0.5) wraps round the seam
                wrap = hi - lo > 180.0
                lo, hi = np.where(wrap, hi, lo), np.where(wrap, lo + 360.0, hi)
        else:
            c = self.centres if lat else np.unwrap(self.centres, period=360.0)
            e = edges_1d(c, name)
            lo, hi = np.minimum(e[:-1], e[1:]), np.maximum(e[:-1], e[1:])
        if lat:
            lo, hi = np.clip(lo, -90.0, 90.0), np.clip(hi, -90.0, 90.0)
        self.lo, self.hi = lo, hi
        self.step = float(np.median(hi - lo))  # resolution, degrees

    def extent(self) -> str:
        return f"[{np.min(self.lo):g}, {np.max(self.hi):g}]"


def _lat_fractions(t: _Axis, s: _Axis) -> np.ndarray:
    """Fraction of each source latitude band (in ``sin(lat)``) inside each target band."""
    ts_lo, ts_hi, ss_lo, ss_hi = (np.sin(np.deg2rad(a)) for a in (t.lo, t.hi, s.lo, s.hi))
    ov = np.minimum(ts_hi[:, None], ss_hi[None]) - np.maximum(ts_lo[:, None], ss_lo[None])
    return _fractions(ov, ss_hi - ss_lo)


def _lon_fractions(t: _Axis, s: _Axis) -> np.ndarray:
    """Fraction of each source longitude interval inside each target interval (periodic)."""
    mid_t = 0.5 * (t.lo.min() + t.hi.max())
    mid_s = 0.5 * (s.lo.min() + s.hi.max())
    base = 360.0 * np.round((mid_t - mid_s) / 360.0)
    ov = np.zeros((t.lo.size, s.lo.size))
    for k in (-360.0, 0.0, 360.0):
        lo, hi = s.lo + base + k, s.hi + base + k
        ov += np.clip(np.minimum(t.hi[:, None], hi[None]) - np.maximum(t.lo[:, None], lo[None]),
                      0.0, None)
    return _fractions(ov, s.hi - s.lo)


def _fractions(overlap: np.ndarray, width: np.ndarray) -> np.ndarray:
    ov = np.clip(overlap, 0.0, None)
    f = np.divide(ov, width[None], out=np.zeros_like(ov), where=width[None] > 0)
    f[f < _TINY] = 0.0
    return f


def _linear_weights(t: _Axis, s: _Axis, *, lon: bool) -> np.ndarray:
    """Linear-interpolation weights ``(n_target, n_source)`` at the target centres.

    Between the outer source edge and the outermost centre the weight is all on that centre;
    beyond the outer edges the row is zero. Longitudes wrap on a global source.
    """
    c, v = s.centres, t.centres
    if lon:
        periodic = is_global_lon(c)
        if periodic:
            low = float(np.nanmin(c))
            edges = (float(c[0]), float(c[0]))
        else:
            c = np.unwrap(c, period=360.0)  # as the edges of s (from unwrapped centres)
            low = 0.5 * (np.nanmin(c) + np.nanmax(c)) - 180.0
            edges = (float(s.lo.min()), float(s.hi.max()))
        v = (v - low) % 360.0 + low
    else:
        periodic = False
        edges = (float(s.lo.min()), float(s.hi.max()))
    i0, i1, w, ok = axis_locate(c, v, edges, periodic=periodic)
    out = np.zeros((v.size, c.size))
    rows = np.flatnonzero(ok)
    np.add.at(out, (rows, i0[rows]), 1.0 - w[rows])
    np.add.at(out, (rows, i1[rows]), w[rows])
    return out


def _nearest_index(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Nearest source cell of each target centre from linear weights, and whether inside.

    The larger weight wins; a centre half-way between two source centres goes to the one
    with the lower index.
    """
    ok = w.sum(axis=1) > 0
    return np.where(ok, np.argmax(w, axis=1), 0), ok


def _support(f: np.ndarray) -> np.ndarray | slice:
    """Source cells (columns of ``f``) with a weight: a slice where contiguous.

    A block without any gives the first cell (with zero weights), not an empty selection.
    """
    idx = np.flatnonzero(f.any(axis=0))
    if idx.size == 0:
        return slice(0, 1)
    if np.all(np.diff(idx) == 1):
        return slice(int(idx[0]), int(idx[-1]) + 1)
    return idx


def _blocks(n: int, chunks: tuple[int, ...] | None) -> list[tuple[int, int]]:
    """``(start, stop)`` of the target's chunks along one dim (one block if unchunked)."""
    if not chunks:
        return [(0, n)]
    stops = np.cumsum(chunks)
    return [(int(b - c), int(b)) for b, c in zip(stops, chunks)]


def _contract(data: xr.DataArray, wy: np.ndarray, wx: np.ndarray, tdims: tuple[str, str],
              blocks: tuple[list, list]) -> xr.DataArray:
    """``wy @ data @ wx.T`` over the (renamed) source dims, lazily for dask data.

    One contraction per block of the target grid (its chunks), each over only the source
    rows and columns with a weight in that block: the work of a block scales with the
    source cells it covers, and the result is chunked like the target.
    """
    ty, tx = tdims
    rows = []
    for a, b in blocks[0]:
        sy = _support(wy[a:b])
        row = []
        for c, d in blocks[1]:
            sx = _support(wx[c:d])
            part = data.isel({_SY: sy, _SX: sx})
            part = xr.dot(xr.DataArray(wx[c:d, sx], dims=(tx, _SX)), part, dim=_SX)
            row.append(xr.dot(xr.DataArray(wy[a:b, sy], dims=(ty, _SY)), part, dim=_SY))
        rows.append(row[0] if len(row) == 1 else xr.concat(row, dim=tx))
    return rows[0] if len(rows) == 1 else xr.concat(rows, dim=ty)


# -------------------------------------------------------------------------------------------
# sources
# -------------------------------------------------------------------------------------------
class _Source:
    """One source, opened, with its grid."""

    def __init__(self, key: str, src: Any) -> None:
        self.key = key
        if isinstance(src, xr.DataArray):
            vname = str(src.name) if src.name is not None else key
            self.ds = src.to_dataset(name=vname)
            self.origin = "in-memory"
        elif isinstance(src, xr.Dataset):
            self.ds, self.origin = src, "in-memory"
        elif isinstance(src, (str, os.PathLike)):
            from xproda.io import open_dataset  # (xproda.io is above xproda.spatial)

            self.origin = os.fspath(src)
            self.ds = open_dataset(src)
        else:
            raise TypeError(
                f"source {key!r}: expected an xarray DataArray or Dataset or a path (NetCDF, "
                f"Zarr, GeoTIFF), found {type(src).__name__}"
            )
        try:
            self.grid: Grid = describe_grid(self.ds)
        except ValueError as err:
            raise ValueError(f"source {key!r} ({self.origin}): expected horizontal (spatial) "
                             f"dims and coordinates; {err}") from None
        if self.grid.kind not in ("latlon", "projected"):
            raise ValueError(
                f"source {key!r} ({self.origin}): expected a rectilinear lat/lon or projected "
                f"grid, found a {self.grid.kind} grid on dims {self.grid.dims}"
            )
        ys, xs = self.grid.dims
        self.variables = [str(v) for v, da in self.ds.data_vars.items()
                          if ys in da.dims and xs in da.dims]
        if not self.variables:
            raise ValueError(
                f"source {key!r} ({self.origin}): expected data variables on the spatial dims "
                f"{(ys, xs)}, found {[(str(k), v.dims) for k, v in self.ds.data_vars.items()]}"
            )
        if self.grid.kind == "latlon":
            try:
                self.y = _Axis(self.ds, self.grid.lat, lat=True)
                self.x = _Axis(self.ds, self.grid.lon, lat=False)
            except ValueError as err:
                raise ValueError(f"source {key!r} ({self.origin}): {err}") from None
            self.resolution = [self.y.step, self.x.step]
        else:
            dy = np.abs(np.diff(np.asarray(self.ds[self.grid.y].values, float)))
            dx = np.abs(np.diff(np.asarray(self.ds[self.grid.x].values, float)))
            self.resolution = [float(np.median(dy)) if dy.size else np.nan,
                               float(np.median(dx)) if dx.size else np.nan]

    def out_name(self, var: str) -> str:
        return self.key if len(self.variables) == 1 else f"{self.key}_{var}"

    def resolution_units(self) -> str:
        if self.grid.kind == "latlon":
            return "degree"
        units = {ax.unit_name for ax in self.grid.crs.axis_info}
        return units.pop() if len(units) == 1 else "CRS units"

    def extent(self) -> str:
        return f"lat {self.y.extent()}, lon {self.x.extent()}"


def _classes(src: _Source, var: str, da: xr.DataArray) -> tuple[np.ndarray, list[str]]:
    """Class values and labels of a categorical variable (from ``flag_values`` if present)."""
    where = f"categorical source {src.key!r} variable {var!r}"
    if da.dtype.kind not in "iufb":
        raise ValueError(f"{where}: expected integer class codes, found dtype {da.dtype}")
    fv = da.attrs.get("flag_values")
    if fv is not None:
        classes = np.atleast_1d(np.asarray(fv)).ravel()
        if classes.dtype.kind not in "iufb":
            raise ValueError(f"{where}: expected integer flag_values, found {classes.tolist()}")
    else:  # no class list: one pass over the data
        data = da.data
        if hasattr(data, "compute"):
            import dask.array as dsa

            classes = np.asarray(dsa.unique(data.ravel()).compute())
        else:
            classes = np.unique(np.asarray(data))
        classes = classes[np.isfinite(classes)] if classes.dtype.kind == "f" else classes
    classes = np.asarray(classes, dtype=np.float64)
    bad = classes[classes != np.round(classes)]
    if bad.size:
        raise ValueError(
            f"{where}: expected integer class codes, found non-integer values "
            f"{bad[:5].tolist()} (dtype {da.dtype}); round or classify the data first, or "
            "treat the variable as continuous"
        )
    classes = np.unique(classes.astype(np.int64))
    meanings = str(da.attrs.get("flag_meanings", "")).split()
    if fv is not None and len(meanings) == len(np.atleast_1d(fv)):
        lookup = dict(zip(np.asarray(fv).astype(np.int64).tolist(), meanings))
        labels = [lookup[int(c)] for c in classes]
    else:
        labels = [str(int(c)) for c in classes]
    if classes.size == 0:
        raise ValueError(f"{where}: no class values found (all data missing?)")
    return classes, labels


# -------------------------------------------------------------------------------------------
# the stack
# -------------------------------------------------------------------------------------------
def _spec(value: Mapping[str, str] | Sequence[str] | None) -> dict[str, str | None]:
    if value is None:
        return {}
    if isinstance(value, str):
        value = (value,)
    if isinstance(value, Mapping):
        return {str(k): (None if v is None else str(v)) for k, v in value.items()}
    return {str(k): None for k in value}


def _target_chunks(target: xr.DataArray | xr.Dataset, dims: tuple[str, ...]) -> dict | None:
    try:
        sizes = dict(target.chunksizes)
    except ValueError:  # a Dataset with inconsistent chunks: the first chunked variable's
        sizes = next((dict(v.chunksizes) for v in target.data_vars.values() if v.chunks), {})
    out = {d: sizes[d] for d in dims if d in sizes}
    return out or None


def _drop_spatial(da: xr.DataArray, dims: tuple[str, ...]) -> xr.DataArray:
    drop = [c for c in da.coords if set(da[c].dims) & set(dims) or str(c) in
            ("spatial_ref", "crs")]
    return da.drop_vars(drop)


def stack_covariates(
    sources: Mapping[str, xr.DataArray | xr.Dataset | str | os.PathLike],
    target: xr.Dataset | xr.DataArray,
    *,
    categorical: Mapping[str, str] | Sequence[str] = (),
    method: Mapping[str, str] | None = None,
    encode: Literal["onehot", "codes"] = "onehot",
    min_coverage: float = 0.5,
) -> xr.Dataset:
    """Bring covariates from several grids onto the grid of ``target``, lazily.

    Each source may have its own resolution, extent, longitude convention (0..360 or
    -180..180), latitude order, dim names (``lat``/``latitude``/``y``...) and CRS. For every
    variable the regridding is chosen from the two grids (or forced with ``method``):

    * **source finer than the target** (smaller cells; geographic source): area-weighted
      mean over the source cells overlapping each target cell, weights = overlap area (the
      source cell area of :func:`~xproda.spatial.cell_area` times the fraction of the cell
      inside the target cell; exact spherical areas for lat/lon cells, nesting or not).
      Missing (NaN) source cells are left out of numerator and denominator; a target cell
      whose valid covered area is below ``min_coverage`` of its area is NaN. The mean is
      area-conserving: ``mean * valid covered area`` summed over the target equals
      ``value * cell area`` summed over the source cells inside the target.
    * **source coarser than or as fine as the target**: ``"nearest"`` (the source cell that
      holds the target cell centre) or ``"linear"`` (bilinear in latitude/longitude between
      the four surrounding source centres; NaN neighbours are dropped and the weights
      renormalised, NaN if the valid weight is below ``min_coverage``). Target centres
      outside the source's outer cell edges are NaN; a global source wraps round in
      longitude.
    * **projected source** (a projected CRS): reprojected with
      :func:`~xproda.spatial.align_grids` (rioxarray ``reproject_match``; resampling
      ``"average"`` for continuous, ``"mode"`` for categorical variables unless ``method``
      says otherwise). **This step loads the source's data** (rioxarray reprojects in
      memory); ``min_coverage`` does not apply.

    Categorical variables (``categorical``) hold integer class codes. Coarsening takes the
    class fractions of each target cell (area-weighted, as the mean); ``"nearest"`` takes
    the class of the cell holding the target centre (fractions 0 or 1). With
    ``encode="onehot"`` (default) every class ``c`` becomes a variable ``<name>_<c>``: the
    fraction (0..1) of the target cell's valid covered area in class ``c`` (the fractions
    sum to 1 on covered cells). With ``encode="codes"`` the variable ``<name>`` holds the
    majority class (largest covered area; ties go to the first class). The classes come
    from the source's ``flag_values`` attribute (labels from ``flag_meanings``); without
    it, they are the distinct values of the data, which are read once for that (the only
    compute at build time besides projected sources). Source values that are not one of
    the classes count as missing.

    Parameters
    ----------
    sources : mapping of str to DataArray, Dataset or path
        Name -> source. A DataArray becomes the variable ``name``; a Dataset (or a file)
        contributes its data variables on the spatial dims: the variable ``name`` if it
        has one, else ``<name>_<variable>`` for each. Paths are opened lazily with
        :func:`xproda.io.open_dataset` (NetCDF ``.nc``, Zarr store, GeoTIFF ``.tif``/
        ``.tiff`` through ``rioxarray.open_rasterio(..., chunks=True)``).
    target : xarray.Dataset or xarray.DataArray
        Defines the grid: a geographic grid with 1-D latitude/longitude coordinates (any
        names, order and longitude convention; CF bounds used when present). Only its
        coordinates and chunks are read.
    categorical : sequence of str or mapping of str to str, keyword-only
        Names (source names or output variable names) of the categorical variables, or a
        mapping name -> ``"majority"``/``"nearest"`` forcing the method.
    method : mapping of str to str, keyword-only, optional
        Name -> ``"mean"``, ``"nearest"`` or ``"linear"`` for continuous variables
        (``"majority"``/``"nearest"`` for categorical ones), overriding the automatic
        choice.
    encode : {"onehot", "codes"}, keyword-only
        Encoding of categorical variables (see above).
    min_coverage : float, keyword-only
        Minimum fraction (0..1) of a target cell's area covered by valid source cells for
        ``"mean"``/``"majority"`` (minimum valid weight for ``"linear"``); below it the
        target cell is NaN. Default 0.5.

    Returns
    -------
    xarray.Dataset
        float64 variables on the target's spatial dims and coordinates (plus the sources'
        other dims, e.g. ``band`` or ``month``), chunked like the target where the target
        is dask-backed. Lazy (dask) wherever a source is; the result does not depend on
        the chunking of the sources or of the target (up to rounding). Attributes of
        every variable: ``units``, ``long_name``, ``standard_name`` of the source variable
        (one-hot fractions: units ``1`` and a long name from :mod:`xproda.conventions`),
        and the provenance ``source`` (path or ``"in-memory"``), ``source_variable``,
        ``source_resolution`` (``[dlat, dlon]`` in ``source_resolution_units``, degrees for
        geographic sources), ``regrid_method``, ``min_coverage`` where it applies;
        categorical ones also ``classes`` and ``class_labels`` (and ``class_value``/
        ``class_label`` for one-hot variables, ``flag_values``/``flag_meanings`` for codes).
        The Dataset's ``history`` lists the stack. Sample it at sites with
        ``xproda.spatial.sample_sites(stack, lat=..., lon=...)``.

    Raises
    ------
    ValueError
        A source without spatial dims or on an unsupported grid, a categorical variable
        with non-integer values, an unknown method or encoding, a target without 1-D
        latitude/longitude coordinates, a source whose extent does not overlap the target
        (both extents named), or two sources giving the same output name.
    KeyError
        Names in ``categorical`` or ``method`` that match no source or variable.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> fine = xr.DataArray(np.arange(16.0).reshape(4, 4), dims=("lat", "lon"),
    ...                     coords={"lat": [-0.75, -0.25, 0.25, 0.75],
    ...                             "lon": [0.25, 0.75, 1.25, 1.75]})
    >>> target = xr.Dataset(coords={"lat": [-0.5, 0.5], "lon": [0.5, 1.5]})
    >>> stack = stack_covariates({"elev": fine}, target)
    >>> stack["elev"].attrs["regrid_method"], stack["elev"].round(3).values.tolist()
    ('mean', [[2.5, 4.5], [10.5, 12.5]])
    """
    if encode not in ("onehot", "codes"):
        raise ValueError(f"encode must be 'onehot' or 'codes', got {encode!r}")
    if not 0.0 <= float(min_coverage) <= 1.0:
        raise ValueError(f"min_coverage must lie in [0, 1], got {min_coverage!r}")
    if not isinstance(sources, Mapping) or not sources:
        raise ValueError("sources must be a non-empty mapping name -> DataArray/Dataset/path")
    try:
        tg = describe_grid(target)
    except ValueError as err:
        raise ValueError(f"target: expected a geographic grid with 1-D latitude/longitude "
                         f"coordinates; {err}") from None
    if tg.kind != "latlon":
        raise ValueError(
            f"target: expected a geographic grid with 1-D latitude/longitude coordinates, "
            f"found a {tg.kind} grid on dims {tg.dims} (coords {list(map(str, target.coords))})"
        )
    ty, tx = tg.dims
    try:
        t_y, t_x = _Axis(target, tg.lat, lat=True), _Axis(target, tg.lon, lat=False)
    except ValueError as err:
        raise ValueError(f"target: {err}") from None
    t_area = xr.DataArray(cell_area(target).transpose(ty, tx).data, dims=(ty, tx))
    t_coords = {k: v.variable for k, v in target.coords.items()
                if (v.dims and set(v.dims) <= {ty, tx})
                or (not v.dims and str(k) in ("spatial_ref", "crs"))}

    chunks = _target_chunks(target, (ty, tx))
    blocks = (_blocks(t_y.centres.size, (chunks or {}).get(ty)),
              _blocks(t_x.centres.size, (chunks or {}).get(tx)))

    cat_spec = _spec(categorical)
    meth_spec = _spec(method)
    opened = [_Source(str(k), v) for k, v in sources.items()]
    known = {s.key for s in opened} | {s.out_name(v) for s in opened for v in s.variables}
    for what, spec in (("categorical", cat_spec), ("method", meth_spec)):
        unknown = sorted(set(spec) - known)
        if unknown:
            raise KeyError(f"{what}: {unknown} match no source or output variable; known: "
                           f"{sorted(known)}")

    out: dict[str, xr.DataArray] = {}
    log: list[str] = []
    for src in opened:
        for var in src.variables:
            name = src.out_name(var)
            is_cat = name in cat_spec or src.key in cat_spec
            forced = meth_spec.get(name, meth_spec.get(src.key))
            if forced is None and is_cat:
                forced = cat_spec.get(name, cat_spec.get(src.key))
            allowed = CATEGORICAL_METHODS if is_cat else CONTINUOUS_METHODS
            if forced is not None and forced not in allowed:
                kind = "categorical" if is_cat else "continuous"
                raise ValueError(f"unknown method {forced!r} for the {kind} variable {name!r} "
                                 f"(source {src.key!r}); expected one of {allowed}")
            made = _regrid_variable(
                src, var, name, target, tg, (t_y, t_x), t_area, blocks, forced=forced,
                is_cat=is_cat, encode=encode, min_coverage=float(min_coverage),
            )
            for k, da in made.items():
                if k in out:
                    raise ValueError(f"two covariates are named {k!r} (the second from source "
                                     f"{src.key!r}); rename a source")
                out[k] = da
            m = next(iter(made.values())).attrs["regrid_method"]
            log.append(f"{name} <- {src.origin}:{var} ({m})")

    ds = xr.Dataset(out).assign_coords(t_coords)
    if chunks is not None:
        ds = ds.chunk(chunks)
    ds.attrs["history"] = conventions.history_line("stack_covariates: " + "; ".join(log))
    return ds


def _regrid_variable(src: _Source, var: str, name: str, target, tg: Grid, taxes, t_area,
                     blocks: tuple[list, list], *, forced: str | None, is_cat: bool,
                     encode: str, min_coverage: float) -> dict[str, xr.DataArray]:
    """The output variable(s) of one source variable."""
    da = src.ds[var]
    ys, xs = src.grid.dims
    ty, tx = tg.dims
    classes = labels = None
    if is_cat:
        classes, labels = _classes(src, var, da)
    base = {k: da.attrs[k] for k in _KEPT_ATTRS if k in da.attrs}
    prov: dict[str, Any] = {
        "source": src.origin, "source_variable": var,
        "source_resolution": [float(r) for r in src.resolution],
        "source_resolution_units": src.resolution_units(),
    }
    order = [ty if d == ys else tx if d == xs else str(d) for d in da.dims]

    if src.grid.kind == "projected":
        m = forced or ("majority" if is_cat else "mean")
        template = ensure_crs(xr.Dataset(coords={tg.lat: target[tg.lat].variable,
                                                 tg.lon: target[tg.lon].variable}))
        res = align_grids(src.ds[[var]], template, resampling=_RESAMPLING[m])[var]
        res = _drop_spatial(res, (ty, tx)).astype(np.float64).transpose(*order)
        res = res.drop_attrs(deep=False)
        prov["regrid_method"] = f"{m} (rioxarray reproject, {_RESAMPLING[m]})"
        prov["source_crs"] = src.grid.crs.to_string()
        if not is_cat:
            return {name: res.assign_attrs({**base, **prov})}
        return _categorical_out(name, res, None, classes, labels, da, base, prov, encode,
                                order)

    t_y, t_x = taxes
    fy, fx = _lat_fractions(t_y, src.y), _lon_fractions(t_x, src.x)
    finer = src.y.step * src.x.step < t_y.step * t_x.step * (1.0 - 1e-6)
    m = forced or (("majority" if is_cat else "mean") if finer else "nearest")
    prov["regrid_method"] = m
    # no attribute of the source travels except the ones chosen above
    work = _drop_spatial(da, (ys, xs)).rename({ys: _SY, xs: _SX}).drop_attrs(deep=False)
    if work.dtype != np.float64:
        work = work.astype(np.float64)

    if m in ("mean", "majority"):
        if not (fy.any() and fx.any()):
            raise ValueError(
                f"source {src.key!r} ({src.origin}) does not overlap the target: source extent "
                f"{src.extent()}, target extent lat {t_y.extent()}, lon {t_x.extent()} "
                "(degrees)"
            )
        area = xr.DataArray(cell_area(src.ds).transpose(ys, xs).data, dims=(_SY, _SX))
        prov["min_coverage"] = min_coverage
        if not is_cat:
            valid = work.notnull()
            num = _contract((work * area).where(valid, 0.0), fy, fx, (ty, tx), blocks)
            den = _contract(area.where(valid, 0.0), fy, fx, (ty, tx), blocks)
            ok = (den > 0) & (den >= (min_coverage - _SLACK) * t_area)
            res = (num / den.where(den > 0)).where(ok)
            return {name: res.transpose(*order).assign_attrs({**base, **prov})}
        cls = xr.DataArray(classes.astype(np.float64), dims=_CLASS)
        num = _contract((work == cls) * area, fy, fx, (ty, tx), blocks)
        den = num.sum(_CLASS)
        ok = (den > 0) & (den >= (min_coverage - _SLACK) * t_area)
        frac = (num / den.where(den > 0)).where(ok)
        return _categorical_out(name, None, frac, classes, labels, da, base, prov, encode,
                                order)

    # nearest / linear: from the target centres
    wy = _linear_weights(t_y, src.y, lon=False)
    wx = _linear_weights(t_x, src.x, lon=True)
    if not (wy.any() and wx.any()):
        raise ValueError(
            f"source {src.key!r} ({src.origin}) does not overlap the target: source extent "
            f"{src.extent()}, target extent lat {t_y.extent()}, lon {t_x.extent()} (degrees)"
        )
    if m == "linear":
        valid = work.notnull()
        num = _contract(work.where(valid, 0.0), wy, wx, (ty, tx), blocks)
        den = _contract(valid.astype(np.float64), wy, wx, (ty, tx), blocks)
        ok = (den > 0) & (den >= min_coverage - _SLACK)
        prov["min_coverage"] = min_coverage
        res = (num / den.where(den > 0)).where(ok)
        return {name: res.transpose(*order).assign_attrs({**base, **prov})}
    iy, oky = _nearest_index(wy)
    ix, okx = _nearest_index(wx)
    res = work.isel({_SY: iy, _SX: ix}).rename({_SY: ty, _SX: tx})
    res = res.where(xr.DataArray(oky[:, None] & okx[None, :], dims=(ty, tx)))
    res = res.transpose(*order)
    if not is_cat:
        return {name: res.assign_attrs({**base, **prov})}
    return _categorical_out(name, res, None, classes, labels, da, base, prov, encode, order)


def _categorical_out(name: str, codes: xr.DataArray | None, frac: xr.DataArray | None,
                     classes: np.ndarray, labels: list[str], da: xr.DataArray, base: dict,
                     prov: dict, encode: str, order: list[str]) -> dict[str, xr.DataArray]:
    """One-hot fractions or majority codes from either the codes or the class fractions."""
    cls = xr.DataArray(classes.astype(np.float64), dims=_CLASS)
    if frac is None:  # from codes: fractions 0/1, NaN where the code is missing/unknown
        known = codes.isin(classes.astype(np.float64))
        frac = (codes == cls).astype(np.float64).where(known)
    cat = {"classes": [int(c) for c in classes], "class_labels": " ".join(labels)}
    if encode == "codes":
        if codes is None:
            # ties (equal fractions up to rounding) go to the first class
            idx = frac.round(12).fillna(-1.0).argmax(_CLASS)
            values = classes.astype(np.float64)
            codes = xr.apply_ufunc(lambda i: values[i], idx, dask="parallelized",
                                   output_dtypes=[np.float64])
            codes = codes.where(frac.notnull().any(_CLASS))
        else:
            codes = codes.where(codes.isin(classes.astype(np.float64)))
        attrs = {**base, **prov, **cat, _FLAG_ATTRS[0]: cat["classes"],
                 _FLAG_ATTRS[1]: " ".join(labels)}
        return {name: codes.transpose(*order).assign_attrs(attrs)}
    out = {}
    for k, (c, label) in enumerate(zip(classes, labels)):
        lab = f"{name} class {int(c)} ({label})" if label != str(int(c)) else \
            f"{name} class {int(c)}"
        a = conventions.attrs("class_fraction", section="spatial", fields={"label": lab})
        v = frac.isel({_CLASS: k}, drop=True).transpose(*order)
        out[f"{name}_{int(c)}"] = v.assign_attrs(
            {**a, **prov, **cat, "class_value": int(c), "class_label": label})
    return out
