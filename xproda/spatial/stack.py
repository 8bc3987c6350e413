"""Covariate stacks: several covariate sources on heterogeneous grids brought onto one grid.

:func:`stack_covariates` opens (if needed) every source, works out for each variable how to
bring it onto the target grid (area-weighted mean or majority when the source is finer,
nearest or bilinear when it is coarser, a rioxarray reprojection for projected sources) and
returns one lazy :class:`xarray.Dataset` on the target's dims and coordinates.

On geographic (lat/lon) grids the regridding is a pair of small NumPy weight matrices, one
per axis, contracted lazily with the (dask) data: the exact spherical overlap areas of
rectilinear lat/lon cells factorise into an overlap in longitude times an overlap in
``sin(latitude)``, so an area-weighted mean is ``Wy @ (area * value) @ Wx.T`` divided by
the same contraction of ``area * valid``. Where the source cells nest exactly in the target's
(the common case of regular global grids, e.g. 5 arcmin onto 0.5 degrees), the same
reductions are made on blocks of whole cells by reshaping (:func:`block_mean`,
:func:`block_fractions`, :func:`block_majority`, also public).
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

__all__ = ["stack_covariates", "block_mean", "block_fractions", "block_majority"]

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
# block reductions: source cells nesting exactly in the target's
# -------------------------------------------------------------------------------------------
#: tolerance on cell edges (fraction of the source cell) for exact nesting
_NEST_TOL = 1e-9
#: majority: fractions equal to this many decimals tie (the first class wins)
_TIE_DECIMALS = 12
#: cells (times classes) handled at once by block_majority: bounds its memory
_SLAB = 1 << 22


def _factors(factor: int | Sequence[int]) -> tuple[int, int]:
    f = (factor, factor) if np.ndim(factor) == 0 else tuple(np.ravel(factor))
    if len(f) != 2 or not all(float(k) == int(k) and int(k) >= 1 for k in f):
        raise ValueError(f"factor must be a positive integer or a pair (rows, columns) of "
                         f"them, got {factor!r}")
    return int(f[0]), int(f[1])


def _coverage(min_coverage: float) -> float:
    mc = float(min_coverage)
    if not 0.0 <= mc <= 1.0:  # (NaN fails too)
        raise ValueError(f"min_coverage must lie in [0, 1], got {min_coverage!r}")
    return mc


def _band_weights(lat: Any, n: int) -> np.ndarray:
    """``|sin(lat2) - sin(lat1)|`` of ``n`` rows, from edges ``(n + 1,)`` or bounds ``(n, 2)``.

    The relative areas of the rows' cells (edges clipped to [-90, 90]), as in
    :func:`~xproda.spatial.cell_area`.
    """
    b = np.asarray(lat, dtype=np.float64)
    if b.shape == (n + 1,):
        lo, hi = b[:-1], b[1:]
    elif b.shape == (n, 2):
        lo, hi = b[:, 0], b[:, 1]
    else:
        raise ValueError(f"lat: expected the {n + 1} latitude edges or the ({n}, 2) bounds "
                         f"(degrees) of the {n} rows, got an array of shape {b.shape}")
    s_lo, s_hi = (np.sin(np.deg2rad(np.clip(e, -90.0, 90.0))) for e in (lo, hi))
    return np.abs(s_hi - s_lo)


def _class_values(classes: Any, codes: Any) -> np.ndarray:
    """Sorted distinct class values (float64): ``classes``, or those of ``codes``."""
    if classes is None:
        classes = _distinct(codes)
    c = np.unique(np.asarray(classes, dtype=np.float64).ravel())
    c = c[np.isfinite(c)]
    if c.size == 0:
        raise ValueError("classes: no (finite) class values")
    return c


def _distinct(data: Any) -> np.ndarray:
    """The distinct values of NumPy or dask data (one pass over dask data)."""
    if _is_dask(data):
        import dask.array as dsa

        return np.asarray(dsa.unique(data.ravel()).compute())
    return np.unique(np.asarray(data))


def _class_index(codes: np.ndarray, classes: np.ndarray) -> np.ndarray:
    """Position of each code in ``classes``; ``classes.size`` for missing or unknown codes."""
    k = np.minimum(np.searchsorted(classes, codes), classes.size - 1)
    return np.where(classes[k] == codes, k, classes.size)


def _is_dask(a: Any) -> bool:
    return type(a).__module__.split(".")[0] == "dask"


def _data(a: Any) -> Any:
    """The NumPy or dask array of ``a`` (a DataArray's data, not loaded)."""
    return a.data if isinstance(a, xr.DataArray) else a


def _nested_chunks(chunks: tuple[int, ...], f: int) -> tuple[int, ...]:
    """Chunks along one axis with every boundary moved to the nearest multiple of ``f``."""
    if all(c % f == 0 for c in chunks):
        return chunks
    n = sum(chunks)
    stops = np.unique(np.clip(np.round(np.cumsum(chunks) / f).astype(np.int64) * f, 0, n))
    stops = np.union1d(stops[stops > 0], [n])
    return tuple(int(c) for c in np.diff(stops, prepend=0))


def _by_blocks(kernel, values: Any, factor: tuple[int, int], weights: np.ndarray, *,
               extra: int | None = None) -> Any:
    """``kernel(part, weights_of_its_rows)`` on ``values`` (..., ny, nx), NumPy or dask.

    The kernel reduces whole blocks: it returns ``(..., [extra,] ny / fy, nx / fx)``. Dask
    data are rechunked so that every chunk holds whole blocks (one task per chunk).
    """
    fy, fx = factor
    *lead, ny, nx = np.shape(values)
    if ny % fy or nx % fx:
        raise ValueError(f"the {ny} x {nx} cells do not divide into blocks of {fy} x {fx}")
    if not _is_dask(values):
        return kernel(np.asarray(values), weights)
    nd = len(lead) + 2
    v = values.rechunk({nd - 2: _nested_chunks(values.chunks[-2], fy),
                        nd - 1: _nested_chunks(values.chunks[-1], fx)})
    out_chunks = (*v.chunks[:-2], *([(extra,)] if extra else []),
                  tuple(c // fy for c in v.chunks[-2]), tuple(c // fx for c in v.chunks[-1]))

    def run(part: np.ndarray, block_info: dict | None = None) -> np.ndarray:
        a, b = block_info[0]["array-location"][-2]
        return kernel(part, weights[a:b])

    return v.map_blocks(run, chunks=out_chunks, dtype=np.float64,
                        new_axis=[nd - 2] if extra else None,
                        meta=np.empty((0,) * len(out_chunks), dtype=np.float64))


def _mean_kernel(v: np.ndarray, w: np.ndarray, fy: int, fx: int, min_coverage: float,
                 std: bool) -> np.ndarray:
    v = np.asarray(v, dtype=np.float64)
    if fy == fx == 1:  # one cell per block: the cell (its spread 0)
        return np.stack([v, np.where(np.isfinite(v), 0.0, np.nan)], axis=-3) if std else v
    *lead, ny, nx = v.shape
    b = v.reshape(*lead, ny // fy, fy, nx // fx, fx)
    valid = np.isfinite(b)
    wr = w.reshape(ny // fy, fy, 1)
    # sums along each fine row of a block first, then the rows with their areas
    den = (valid.sum(axis=-1) * wr).sum(axis=-2)
    num = (np.where(valid, b, 0.0).sum(axis=-1) * wr).sum(axis=-2)
    full = wr.sum(axis=-2) * fx
    ok = (den > 0) & (den >= (min_coverage - _SLACK) * full)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = num / den
        out = np.where(ok, mean, np.nan)
        if not std:
            return out
        dev = np.where(valid, b - mean[..., :, None, :, None], 0.0)
        var = (np.square(dev).sum(axis=-1) * wr).sum(axis=-2) / den
    return np.stack([out, np.where(ok, np.sqrt(var), np.nan)], axis=-3)


def _fractions_kernel(codes: np.ndarray, w: np.ndarray, fy: int, fx: int,
                      classes: np.ndarray, min_coverage: float) -> np.ndarray:
    """Class fractions ``(..., n_classes, ny / fy, nx / fx)`` of blocks (one bincount)."""
    codes = np.asarray(codes)
    *lead, ny, nx = codes.shape
    nl, nby, nbx, nk = int(np.prod(lead, dtype=np.int64)), ny // fy, nx // fx, classes.size
    k = _class_index(codes, classes).reshape(nl, nby, fy, nbx, fx)
    cell = np.arange(nl * nby * nbx).reshape(nl, nby, 1, nbx, 1) * (nk + 1)
    area = np.broadcast_to(w.reshape(1, nby, fy, 1, 1), k.shape)
    tot = np.bincount((cell + k).ravel(), weights=area.ravel(),
                      minlength=nl * nby * nbx * (nk + 1)).reshape(nl, nby, nbx, nk + 1)
    tot = tot[..., :nk]  # the last bin: missing and unknown codes
    den = tot.sum(axis=-1, keepdims=True)
    full = w.reshape(nby, fy).sum(axis=1)[:, None, None] * fx
    ok = (den > 0) & (den >= (min_coverage - _SLACK) * full)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(ok, tot / den, np.nan)
    return np.moveaxis(frac, -1, -3).reshape(*lead, nk, nby, nbx)


def _majority(frac: np.ndarray, classes: np.ndarray,
              prefer: np.ndarray | None = None) -> np.ndarray:
    """Class with the largest fraction (classes on the last axis); NaN where all are NaN.

    Fractions equal to :data:`_TIE_DECIMALS` decimals tie and the first class wins. With
    ``prefer`` (a mask of the classes), only the preferred classes compete where any of
    them has a (non-zero) fraction.
    """
    r = np.round(frac, _TIE_DECIMALS)
    if prefer is not None:
        has = (r[..., prefer] > 0).any(axis=-1, keepdims=True)
        r = np.where(has & ~prefer, 0.0, r)
    idx = np.where(np.isnan(r), -1.0, r).argmax(axis=-1)
    return np.where(np.isfinite(frac).any(axis=-1), classes[idx], np.nan)


def _majority_kernel(codes: np.ndarray, w: np.ndarray, fy: int, fx: int,
                     classes: np.ndarray, prefer: np.ndarray | None,
                     min_coverage: float) -> np.ndarray:
    codes = np.asarray(codes)
    if fy == fx == 1:  # one cell per block: its class
        k = _class_index(codes, classes)
        return np.where(k < classes.size, classes[np.minimum(k, classes.size - 1)], np.nan)
    *lead, ny, nx = codes.shape
    nby, nbx = ny // fy, nx // fx
    per_row = int(np.prod(lead, dtype=np.int64)) * max(fy * nx, nbx * (classes.size + 1))
    step = max(1, _SLAB // max(1, per_row))  # rows of blocks at a time
    out = np.empty((*lead, nby, nbx))
    for i in range(0, nby, step):
        j = min(nby, i + step)
        frac = _fractions_kernel(codes[..., i * fy:j * fy, :], w[i * fy:j * fy], fy, fx,
                                 classes, min_coverage)
        out[..., i:j, :] = _majority(np.moveaxis(frac, -3, -1), classes, prefer)
    return out


def block_mean(values: Any, factor: int | Sequence[int], *, lat: Any, std: bool = False,
               min_coverage: float = 0.0) -> Any:
    """Area-weighted mean over blocks of ``factor`` cells of a regular lat/lon grid.

    The coarsening of :func:`stack_covariates` where the source cells nest exactly in the
    target's (the target cell is a block of whole source cells), by reshaping: cell areas
    on the sphere are ``R**2 * dlon * |sin(lat2) - sin(lat1)|``, so within a block of equal
    longitude widths the weights are the rows' ``|sin(lat2) - sin(lat1)|`` (as
    :func:`~xproda.spatial.cell_area`). Missing (non-finite) cells are left out.

    Parameters
    ----------
    values : array_like or dask array
        ``(..., ny, nx)``: latitude on the second-last axis, longitude on the last (equal
        widths); any leading axes are kept.
    factor : int or (int, int)
        Cells per block along latitude and longitude (one number: both); they must divide
        ``ny`` and ``nx``.
    lat : array_like
        Latitude cell edges of the rows, degrees: ``(ny + 1,)`` (ascending or descending)
        or bounds ``(ny, 2)``.
    std : bool, keyword-only
        Also return the area-weighted (population) standard deviation within each block.
    min_coverage : float, keyword-only
        Minimum fraction (0..1) of a block's area in valid cells; below it, and where a
        block has no valid cell, the result is NaN. Default 0.

    Returns
    -------
    numpy.ndarray or dask array, or a pair of them
        float64 ``(..., ny / fy, nx / fx)``: the mean (and, with ``std``, the standard
        deviation). Lazy for dask input, chunked by whole blocks.

    Examples
    --------
    >>> v = np.array([[1.0, 3.0], [np.nan, 5.0]])
    >>> block_mean(v, 2, lat=[-30.0, 0.0, 30.0])  # two rows of equal area
    array([[3.]])
    >>> block_mean(v, 2, lat=[0.0, 30.0, 60.0]).round(4)  # the northern row is smaller
    array([[2.8038]])
    """
    fy, fx = _factors(factor)
    mc = _coverage(min_coverage)
    values = _data(values)
    w = _band_weights(lat, np.shape(values)[-2])

    def kernel(part: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return _mean_kernel(part, rows, fy, fx, mc, std)

    out = _by_blocks(kernel, values, (fy, fx), w, extra=2 if std else None)
    return (out[..., 0, :, :], out[..., 1, :, :]) if std else out


def block_fractions(codes: Any, factor: int | Sequence[int], *, lat: Any, classes: Any,
                    min_coverage: float = 0.0) -> Any:
    """Area-weighted class fractions over blocks of ``factor`` cells (see :func:`block_mean`).

    Parameters
    ----------
    codes : array_like or dask array
        ``(..., ny, nx)`` class codes (any numeric dtype); codes that are not in
        ``classes`` (NaN included) are missing and left out.
    factor, lat, min_coverage
        As for :func:`block_mean`.
    classes : array_like
        The class values (sorted and made distinct).

    Returns
    -------
    numpy.ndarray or dask array
        float64 ``(..., n_classes, ny / fy, nx / fx)``: the fraction of the block's valid
        area in each class (summing to 1), NaN where the valid area is below
        ``min_coverage`` or zero.
    """
    fy, fx = _factors(factor)
    mc = _coverage(min_coverage)
    codes = _data(codes)
    cls = _class_values(classes, codes)
    w = _band_weights(lat, np.shape(codes)[-2])

    def kernel(part: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return _fractions_kernel(part, rows, fy, fx, cls, mc)

    return _by_blocks(kernel, codes, (fy, fx), w, extra=cls.size)


def block_majority(codes: Any, factor: int | Sequence[int], *, lat: Any, classes: Any = None,
                   prefer: Any = None, min_coverage: float = 0.0) -> Any:
    """Area-weighted majority class over blocks of ``factor`` cells (see :func:`block_mean`).

    The class with the largest area in the block's valid cells (fractions of
    :func:`block_fractions`); ties (equal to 12 decimals) go to the lowest class, as with
    ``stack_covariates(..., encode="codes")``.

    Parameters
    ----------
    codes : array_like or dask array
        ``(..., ny, nx)`` class codes; codes not in ``classes`` (NaN included) are missing.
    factor, lat, min_coverage
        As for :func:`block_mean`.
    classes : array_like, optional
        The class values; default the distinct finite values of ``codes`` (read once, also
        from dask data).
    prefer : array_like, optional
        Classes that win over the others: a block with any area in them gets the majority
        of these classes alone (e.g. the land classes, so that a coastal cell gets a land
        class).

    Returns
    -------
    numpy.ndarray or dask array
        float64 ``(..., ny / fy, nx / fx)`` class values, NaN where the block's valid area
        is below ``min_coverage`` or zero.

    Examples
    --------
    >>> block_majority(np.array([[1, 2], [2, 3]]), 2, lat=[0.0, 1.0, 2.0])
    array([[2.]])
    """
    fy, fx = _factors(factor)
    mc = _coverage(min_coverage)
    codes = _data(codes)
    cls = _class_values(classes, codes)
    mask = None
    if prefer is not None:
        pref = np.unique(np.asarray(prefer, dtype=np.float64).ravel())
        unknown = np.setdiff1d(pref, cls)
        if unknown.size:
            raise ValueError(f"prefer: {unknown.tolist()} are not among the classes "
                             f"{cls.tolist()}")
        mask = np.isin(cls, pref)
    w = _band_weights(lat, np.shape(codes)[-2])

    def kernel(part: np.ndarray, rows: np.ndarray) -> np.ndarray:
        return _majority_kernel(part, rows, fy, fx, cls, mask, mc)

    return _by_blocks(kernel, codes, (fy, fx), w)


# -------------------------------------------------------------------------------------------
# exact nesting of a source grid in the target grid
# -------------------------------------------------------------------------------------------
def _regular_lo(ax: _Axis, *, lon: bool) -> np.ndarray | None:
    """Lower edges (unwrapped in longitude) of a regular, contiguous, monotonic axis."""
    lo = np.unwrap(ax.lo, period=360.0) if lon else ax.lo
    tol = _NEST_TOL * ax.step
    if not ax.step > 0 or np.any(np.abs(ax.hi - ax.lo - ax.step) > tol):
        return None
    d = np.diff(lo)
    if d.size and not (np.all(np.abs(d - ax.step) <= tol) or np.all(np.abs(d + ax.step) <= tol)):
        return None
    if lon and lo.size * ax.step > 360.0 + tol:
        return None
    return lo


def _nesting(t: _Axis, s: _Axis, *, lon: bool) -> tuple[int, np.ndarray, np.ndarray] | None:
    """How the source cells of one axis nest in the target's cells, or None if they don't.

    ``(factor, index, bounds)``: ``factor`` source cells per target cell; for each of the
    ``factor * n_target`` fine cells, in the target's order, the source cell (-1 outside
    the source, in longitude modulo 360) and its edges (degrees, ``(n, 2)``; the source's
    own where inside).
    """
    t_lo, s_lo = _regular_lo(t, lon=lon), _regular_lo(s, lon=lon)
    if t_lo is None or s_lo is None:
        return None
    f = int(round(t.step / s.step))
    if f < 1 or abs(f * s.step - t.step) > _NEST_TOL * s.step:
        return None
    width = t.step / f
    q = np.arange(f) if t_lo.size < 2 or t_lo[1] > t_lo[0] else np.arange(f)[::-1]
    fine = (t_lo[:, None] + q[None, :] * width).ravel()
    d = fine - s_lo.min()
    if lon:  # the periodic copy of the source at or just before each fine cell
        d -= 360.0 * np.floor((d + 0.5 * width) / 360.0)
    pos = d / width
    k = np.round(pos)
    if np.any(np.abs(pos - k) > _NEST_TOL):
        return None
    n = s_lo.size
    k = k.astype(np.int64)
    inside = (k >= 0) & (k < n)
    if s_lo.size > 1 and s_lo[1] < s_lo[0]:
        k = n - 1 - k
    idx = np.where(inside, k, -1)
    bounds = np.stack([fine, fine + width], axis=-1)
    bounds[inside] = np.stack([s.lo, s.hi], axis=-1)[idx[inside]]
    return f, idx, bounds


def _gather(da: xr.DataArray, dim: str, idx: np.ndarray) -> xr.DataArray:
    """``da`` at positions ``idx`` along ``dim`` (-1: NaN); slices of the dask data."""
    n = da.sizes[dim]
    if idx[0] >= 0 and np.array_equal(idx, np.arange(idx[0], idx[0] + idx.size)):
        return da.isel({dim: slice(int(idx[0]), int(idx[0]) + idx.size)})
    if np.any(idx < 0):
        da = da.pad({dim: (0, 1)}, constant_values=np.nan)
        idx = np.where(idx < 0, n, idx)
    if da.chunks is None:
        return da.isel({dim: idx})
    runs: list[list[int]] = []  # [first, step, count]: consecutive or repeated positions
    for k in idx.tolist():
        if runs:
            first, step, count = runs[-1]
            d = k - (first + step * (count - 1))
            if (count == 1 and abs(d) <= 1) or (count > 1 and d == step):
                runs[-1] = [first, d, count + 1]
                continue
        runs.append([k, 0, 1])
    parts = []
    for first, step, count in runs:
        if step == 0:
            sel = np.full(count, first)
        else:
            stop = first + step * count
            sel = slice(first, None if stop < 0 else stop, step)
        parts.append(da.isel({dim: sel}))
    return xr.concat(parts, dim=dim) if len(parts) > 1 else parts[0]


def _coarsen_nested(work: xr.DataArray, nest: tuple, tdims: tuple[str, str],
                    blocks: tuple[list, list], *, classes: np.ndarray | None,
                    min_coverage: float) -> xr.DataArray:
    """Mean (or, with ``classes``, the class fractions on dim ``_CLASS``) of the source
    cells nested in each target cell, on the target dims: :func:`block_mean` and
    :func:`block_fractions` on the source cells rearranged in target order."""
    (fy, iy, by), (fx, ix, _) = nest
    g = _gather(_gather(work, _SY, iy), _SX, ix)
    lead = [str(d) for d in g.dims if d not in (_SY, _SX)]
    g = g.transpose(*lead, _SY, _SX)
    if g.chunks is not None and (len(blocks[0]) > 1 or len(blocks[1]) > 1):
        g = g.chunk({_SY: tuple((b - a) * fy for a, b in blocks[0]),
                     _SX: tuple((b - a) * fx for a, b in blocks[1])})
    coords = {k: v.variable for k, v in g.coords.items()}
    if classes is None:
        data = block_mean(g.data, (fy, fx), lat=by, min_coverage=min_coverage)
        return xr.DataArray(data, dims=(*lead, *tdims), coords=coords)
    data = block_fractions(g.data, (fy, fx), lat=by, classes=classes,
                           min_coverage=min_coverage)
    return xr.DataArray(data, dims=(*lead, _CLASS, *tdims), coords=coords)


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
        classes = _distinct(da.data)
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
    exact_nesting: bool = True,
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
      ``value * cell area`` summed over the source cells inside the target. Where the
      source cells nest exactly in the target's (both grids regular, a whole number of
      source cells per target cell along each axis, edges aligned, in any longitude
      convention), the same mean is taken by blocks (:func:`block_mean`,
      :func:`block_fractions`), which is much faster (see ``exact_nesting``).
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
    exact_nesting : bool, keyword-only
        True (default): coarsen by blocks of whole source cells where a geographic
        source's cells nest exactly in the target's (edges equal to 1e-9 of a source
        cell); False: always with the overlap weights. Both give the same values, up to
        rounding (about 1e-15 relative), the same NaN cells and the same attributes.

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
    min_coverage = _coverage(min_coverage)
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
                exact_nesting=exact_nesting,
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
                     encode: str, min_coverage: float,
                     exact_nesting: bool) -> dict[str, xr.DataArray]:
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
    finer = src.y.step * src.x.step < t_y.step * t_x.step * (1.0 - 1e-6)
    m = forced or (("majority" if is_cat else "mean") if finer else "nearest")
    prov["regrid_method"] = m
    # no attribute of the source travels except the ones chosen above
    work = _drop_spatial(da, (ys, xs)).rename({ys: _SY, xs: _SX}).drop_attrs(deep=False)
    if work.dtype != np.float64:
        work = work.astype(np.float64)

    if m in ("mean", "majority"):
        prov["min_coverage"] = min_coverage
        nest = ((_nesting(t_y, src.y, lon=False), _nesting(t_x, src.x, lon=True))
                if exact_nesting else (None, None))
        if None not in nest:  # whole source cells in every target cell: by blocks
            if not ((nest[0][1] >= 0).any() and (nest[1][1] >= 0).any()):
                raise _no_overlap(src, t_y, t_x)
            res = _coarsen_nested(work, nest, (ty, tx), blocks, min_coverage=min_coverage,
                                  classes=classes if is_cat else None)
            if not is_cat:
                return {name: res.transpose(*order).assign_attrs({**base, **prov})}
            return _categorical_out(name, None, res, classes, labels, da, base, prov, encode,
                                    order)
        fy, fx = _lat_fractions(t_y, src.y), _lon_fractions(t_x, src.x)
        if not (fy.any() and fx.any()):
            raise _no_overlap(src, t_y, t_x)
        area = xr.DataArray(cell_area(src.ds).transpose(ys, xs).data, dims=(_SY, _SX))
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
        raise _no_overlap(src, t_y, t_x)
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


def _no_overlap(src: _Source, t_y: _Axis, t_x: _Axis) -> ValueError:
    return ValueError(
        f"source {src.key!r} ({src.origin}) does not overlap the target: source extent "
        f"{src.extent()}, target extent lat {t_y.extent()}, lon {t_x.extent()} (degrees)"
    )


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
            codes = xr.apply_ufunc(_majority, frac, input_core_dims=[[_CLASS]],
                                   kwargs={"classes": classes.astype(np.float64)},
                                   dask="parallelized", output_dtypes=[np.float64])
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
