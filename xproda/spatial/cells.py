"""Land-only (compressed) layout: a ``cell`` dim instead of the 2-D grid, and back."""

from __future__ import annotations

import numpy as np
import xarray as xr

from xproda.spatial.areas import cell_area
from xproda.spatial.bounds import bounds_name
from xproda.spatial.discovery import object_label

__all__ = ["to_cells", "from_cells"]


def to_cells(
    obj: xr.DataArray | xr.Dataset,
    mask: xr.DataArray,
    *,
    dim: str = "cell",
    chunk: int | None = None,
) -> xr.DataArray | xr.Dataset:
    """Keep only the cells where ``mask`` is True, on one ``dim`` (a land-only layout).

    The 2-D horizontal grid becomes an unstructured one: the selected cells in row-major
    order along ``dim``, placed **first** (``(cell, month, layer)``), with the grid's
    coordinates (e.g. ``lat``/``lon``) as 1-D coordinates on ``dim``.  Written to Zarr this
    is a land-only forcing store: no ocean cells to store, read or decompress, and every
    block a contiguous batch of columns, which :func:`xproda.xr.api.steady_state` passes to
    the kernel without a copy.  :func:`from_cells` puts results back onto the grid.

    Parameters
    ----------
    obj : DataArray or Dataset
        Data on the grid of ``mask`` (NumPy- or dask-backed; stays lazy).
    mask : DataArray of bool
        ``(y, x)`` cells to keep, e.g. a land mask; computed here (it is small).
    dim : str, default "cell"
        Name of the new dim.
    chunk : int, optional
        Chunk size along ``dim`` (e.g. 16384 columns); default as the indexing gives.

    Returns
    -------
    DataArray or Dataset
        ``obj`` on ``dim``; variables without the grid dims are unchanged.

    Examples
    --------
    >>> import numpy as np, xarray as xr
    >>> da = xr.DataArray(np.arange(6.0).reshape(2, 3), dims=("lat", "lon"),
    ...                   coords={"lat": [10.0, 0.0], "lon": [0.0, 1.0, 2.0]})
    >>> cells = to_cells(da, da > 2)
    >>> cells.values.tolist(), cells["lon"].values.tolist()
    ([3.0, 4.0, 5.0], [0.0, 1.0, 2.0])
    >>> from_cells(cells, da).values.tolist()
    [[nan, nan, nan], [3.0, 4.0, 5.0]]
    """
    if not isinstance(mask, xr.DataArray) or mask.dtype != bool or mask.ndim != 2:
        raise TypeError("to_cells: mask must be a 2-D boolean DataArray on the grid (y, x)")
    ydim, xdim = mask.dims
    for d in (ydim, xdim):
        if d not in obj.dims or obj.sizes[d] != mask.sizes[d]:
            raise ValueError(f"to_cells: mask dim {d!r} ({mask.sizes[d]}) does not match "
                             f"{object_label(obj)} (dims {dict(obj.sizes)})")
        if d in mask.indexes and d in obj.indexes and not mask.indexes[d].equals(obj.indexes[d]):
            raise ValueError(f"to_cells: the {d!r} coordinate of mask differs from the data's")
    # cell areas come from the grid (a cell's bounds alone are no CF vertex bounds): they
    # are gathered as a coordinate, and the 1-D bounds of the grid coordinates dropped
    if "cell_area" not in obj.coords and not (
            isinstance(obj, xr.Dataset) and "cell_area" in obj.data_vars):
        try:
            obj = obj.assign_coords(cell_area=cell_area(obj))
        except ValueError:  # no recognisable grid: no areas
            pass
    bounds = {bounds_name(obj, c, std) for c, std in ((ydim, "latitude"), (xdim, "longitude"))
              if c in obj.coords}
    obj = obj.drop_vars([b for b in bounds if b is not None and b in obj.variables])
    iy, ix = np.nonzero(np.asarray(mask.values, dtype=bool))
    out = obj.isel({ydim: xr.DataArray(iy, dims=dim), xdim: xr.DataArray(ix, dims=dim)})
    out = out.transpose(dim, ...)
    if not chunk:
        return out
    eager = {k: c.variable.copy(deep=False) for k, c in out.coords.items() if c.chunks is None}
    for k, v in eager.items():  # in memory, but stored in the data's chunks along dim
        v.encoding = {**v.encoding, "chunks": tuple(
            min(chunk, n) if d == dim else n for d, n in zip(v.dims, v.shape))} if v.ndim else {}
    return out.chunk({dim: chunk}).assign_coords(eager)


def from_cells(
    obj: xr.DataArray | xr.Dataset,
    like: xr.DataArray | xr.Dataset,
    *,
    dim: str = "cell",
) -> xr.DataArray | xr.Dataset:
    """Put data on a ``cell`` dim (see :func:`to_cells`) back onto the grid of ``like``.

    Cells are located by their grid coordinates (e.g. the 1-D ``lat``/``lon`` on ``dim``;
    read here where they are lazy, as when opened from a store) in ``like``'s; grid cells without a cell are NaN (integer variables: their
    ``fill_value``/``_FillValue`` encoding, e.g. ``no_data`` for ``flags``, else 0).  Lazy
    on dask input: nothing is read until computed; chunks follow ``like`` where it is
    dask-backed.

    Parameters
    ----------
    obj : DataArray or Dataset
        Data with ``dim`` and 1-D coordinates on it named like the grid dims of ``like``.
    like : DataArray or Dataset
        Anything on the target grid: its last two dims are the grid ``(y, x)`` and must
        have index coordinates (e.g. the land mask, or the gridded forcing).
    dim : str, default "cell"

    Returns
    -------
    DataArray or Dataset
        ``obj`` with ``dim`` replaced by the grid dims (last), with ``like``'s grid
        coordinates.
    """
    ref = like if isinstance(like, xr.DataArray) else like[next(iter(like.data_vars))]
    ydim, xdim = ref.dims[-2:]
    missing = [d for d in (ydim, xdim) if d not in obj.coords or obj[d].dims != (dim,)]
    if missing or dim not in obj.dims:
        raise ValueError(f"from_cells: {object_label(obj)} needs dim {dim!r} with 1-D coordinates "
                         f"{[ydim, xdim]} on it (found coords {list(map(str, obj.coords))})")
    pos = []
    for d in (ydim, xdim):
        if d not in like.indexes:
            raise ValueError(f"from_cells: like needs an index coordinate {d!r}")
        p = like.indexes[d].get_indexer(np.asarray(obj[d].values))
        if (p < 0).any():
            raise ValueError(f"from_cells: {(p < 0).sum()} cells have a {d!r} value that is "
                             f"not on the grid of like")
        pos.append(p)
    ny, nx = ref.sizes[ydim], ref.sizes[xdim]
    inv = np.full(ny * nx, -1, dtype=np.int64)
    inv[pos[0] * nx + pos[1]] = np.arange(pos[0].size)
    inv = inv.reshape(ny, nx)
    have = xr.DataArray(inv >= 0, dims=(ydim, xdim))
    idx = xr.DataArray(np.where(inv >= 0, inv, 0), dims=(ydim, xdim))
    src = obj.drop_vars([ydim, xdim])
    grid_coords = {k: c for k, c in like.coords.items() if set(c.dims) <= {ydim, xdim}}

    def one(da: xr.DataArray) -> xr.DataArray:
        if dim not in da.dims:
            return da
        out = da.isel({dim: idx})
        if da.dtype.kind in "iub":
            fill = next((da.encoding[k] for k in ("fill_value", "_FillValue")
                         if da.encoding.get(k) is not None), 0)
            out = out.where(have, fill).astype(da.dtype)
        else:
            out = out.where(have)
        out = out.transpose(*[d for d in da.dims if d != dim], ydim, xdim)
        out.attrs, out.encoding = da.attrs, dict(da.encoding)
        if ref.chunks is not None and out.chunks is not None:
            out = out.chunk({d: ref.chunksizes[d] for d in (ydim, xdim)})
        return out

    if isinstance(src, xr.DataArray):
        out = one(src)
    else:
        out = src.assign({k: one(v) for k, v in src.data_vars.items()})
        out = out.drop_dims(dim) if dim in out.dims else out
    return out.assign_coords(grid_coords)
