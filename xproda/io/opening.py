"""Opening inputs: Zarr, NetCDF and GeoTIFF, local or remote, lazily and with their CRS.

:func:`open_dataset` opens Zarr, NetCDF and GeoTIFF inputs lazily (local paths or fsspec URLs
such as ``s3://bucket/covariates.zarr``), keeping the ``spatial_ref`` grid-mapping coordinate.
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from xproda.conventions import cf_encoding, cf_finalize
from xproda.io.stores import Target
from xproda.io.stores import target as make_target

__all__ = ["open_dataset"]

_ZARR_SUFFIXES = (".zarr", ".zarr.zip")
_NETCDF_SUFFIXES = (".nc", ".nc4", ".netcdf", ".cdf", ".h5", ".hdf5", ".he5")
_TIFF_SUFFIXES = (".tif", ".tiff", ".gtiff", ".geotiff")


def _suffix(path: str) -> str:
    name = path.rstrip("/").rsplit("/", 1)[-1].lower()
    for s in _ZARR_SUFFIXES + _NETCDF_SUFFIXES + _TIFF_SUFFIXES:
        if name.endswith(s):
            return s
    return Path(name).suffix


def _looks_like_zarr_dir(fs: Any, path: str) -> bool:
    return any(fs.exists(f"{path}/{k}") for k in ("zarr.json", ".zgroup", ".zarray", ".zmetadata"))


def open_dataset(
    source: str | os.PathLike | xr.Dataset,
    *,
    storage_options: Mapping[str, Any] | None = None,
    chunks: Any = None,
    engine: str | None = None,
    **kwargs: Any,
) -> xr.Dataset:
    """Open a Zarr, NetCDF or GeoTIFF input lazily, keeping its CRS.

    Parameters
    ----------
    source : str, os.PathLike or xarray.Dataset
        Local path or fsspec URL (``s3://bucket/x.zarr``, ``gs://...``, ``file://...``,
        ``memory://...``). An :class:`xarray.Dataset` is returned unchanged. The format comes
        from ``engine`` if given, else from the suffix: ``.zarr`` or a directory holding Zarr
        metadata -> Zarr; ``.nc``/``.nc4``/``.h5`` -> NetCDF; ``.tif``/``.tiff`` -> GeoTIFF
        (through rioxarray); anything else is handed to :func:`xarray.open_dataset`.
    storage_options : mapping, optional
        fsspec options for URLs, e.g. ``{"endpoint_url": ..., "key": ..., "secret": ...}``
        for S3-compatible stores (s3fs). Ignored for local paths.
    chunks : dict, int, "auto" or None, optional
        dask chunks. ``None`` (default) means the store's own chunks (``{}``; for GeoTIFF the
        file's blocks), so nothing is loaded until computed.
    engine : str, optional
        ``"zarr"``, ``"netcdf4"``, ``"h5netcdf"``, ``"rasterio"`` or any xarray engine.
    **kwargs
        Passed to :func:`xarray.open_zarr` / :func:`xarray.open_dataset` /
        :func:`rioxarray.open_rasterio`. For Zarr and NetCDF ``decode_coords="all"`` is the
        default, so that ``grid_mapping`` and ``bounds`` variables become coordinates. For
        GeoTIFF ``masked=True`` is the default (no-data -> NaN).

    Returns
    -------
    xarray.Dataset
        Lazy (dask-backed) dataset. A ``spatial_ref`` grid-mapping variable, if any, is a
        coordinate, so ``ds.rio.crs`` works when rioxarray is installed. A GeoTIFF becomes a
        dataset with one variable named after the file stem; a single band is squeezed out
        (dims ``(y, x)``), several bands keep the ``band`` dim. Pass ``band_as_variable=True``
        to get one variable per band instead.

    Raises
    ------
    FileNotFoundError
        If ``source`` does not exist.
    TypeError
        If ``source`` is neither a path, a URL nor a Dataset.
    """
    if isinstance(source, xr.Dataset):
        return source
    if isinstance(source, xr.DataArray):
        raise TypeError(
            "open_dataset: source must be a path, an fsspec URL or an xarray.Dataset, got a "
            "DataArray; use da.to_dataset(name=...) instead"
        )
    target = make_target(source, storage_options)
    fs, path = target.fs()
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache(path)
    if not fs.exists(path):
        raise FileNotFoundError(f"open_dataset: source {str(source)!r} does not exist")
    suffix = _suffix(path)
    if engine is None:
        if suffix in _ZARR_SUFFIXES or (fs.isdir(path) and _looks_like_zarr_dir(fs, path)):
            engine = "zarr"
        elif suffix in _TIFF_SUFFIXES:
            engine = "rasterio"
        elif fs.isdir(path):
            raise ValueError(
                f"open_dataset: {str(source)!r} is a directory without Zarr metadata "
                "(zarr.json, .zgroup or .zmetadata); expected a Zarr store"
            )
    chunks = {} if chunks is None else chunks
    if engine == "zarr":
        kwargs.setdefault("decode_coords", "all")
        return _cf_ready(xr.open_zarr(**target.xr_kwargs(), chunks=chunks, **kwargs))
    if engine == "rasterio":
        return _open_geotiff(target, fs, path, chunks=chunks, **kwargs)
    kwargs.setdefault("decode_coords", "all")
    if target.is_local:
        return _cf_ready(xr.open_dataset(target.url, engine=engine, chunks=chunks, **kwargs))
    engine = engine or "h5netcdf"
    if engine == "h5netcdf":
        try:
            import h5netcdf  # noqa: F401
            import h5py  # noqa: F401
        except ImportError as err:
            raise ImportError(
                f"open_dataset: reading NetCDF from the URL {str(source)!r} needs h5netcdf and "
                "h5py (pip install h5netcdf h5py), or download the file first"
            ) from err
    return _cf_ready(xr.open_dataset(fs.open(path, "rb"), engine=engine, chunks=chunks,
                                     **kwargs))


def _netcdf_attr(v: Any) -> bool:
    if isinstance(v, bool):
        return False
    if isinstance(v, (str, bytes, int, float, np.number, np.ndarray)):
        return True
    return isinstance(v, (list, tuple)) and all(
        isinstance(x, (str, int, float, np.number)) and not isinstance(x, bool) for x in v)


def _cf_ready(ds: xr.Dataset) -> xr.Dataset:
    """``ds`` as it opened, ready to be written again CF-compliant with ``to_netcdf``:
    :func:`xproda.conventions.cf_finalize` attributes, no ``_FillValue`` on coordinates,
    bounds and grid mappings in the encoding (xarray otherwise gives every float variable a
    NaN one; see :func:`xproda.conventions.cf_encoding`), and the Dataset's attributes that
    NetCDF cannot hold (mappings, booleans) as JSON text."""
    ds = cf_finalize(ds)
    # NetCDF attributes are strings, numbers or flat arrays of them: a store's JSON-only
    # values (xproda's bookkeeping such as the inputs' digests, booleans) become JSON text
    ds.attrs = {k: (v if _netcdf_attr(v) else json.dumps(v, sort_keys=True, default=str))
                for k, v in ds.attrs.items()}
    for name, e in cf_encoding(ds).items():
        var = ds.variables[name]
        if "_FillValue" not in var.attrs:  # (undecoded: mask_and_scale=False keeps it there)
            var.encoding.update(e)
    return ds


def _open_geotiff(target: Target, fs: Any, path: str, *, chunks: Any, **kwargs: Any) -> xr.Dataset:
    try:
        import rioxarray
    except ImportError as err:  # pragma: no cover - rioxarray is a test dependency
        raise ImportError(
            "open_dataset: reading GeoTIFF needs rioxarray (pip install 'xproda[geo]')"
        ) from err
    kwargs.setdefault("masked", True)
    rio_chunks = True if (isinstance(chunks, dict) and not chunks) else chunks
    src = target.url if target.is_local else fs.open(path, "rb")
    with warnings.catch_warnings():
        # rioxarray <= 0.19 hands xarray chunks as a tuple (deprecated there); not ours to fix
        warnings.filterwarnings("ignore", message=".*chunks as dimension-order tuples.*")
        obj = rioxarray.open_rasterio(src, chunks=rio_chunks, **kwargs)
    if isinstance(obj, list):
        obj = xr.merge(obj, combine_attrs="drop_conflicts")
    if isinstance(obj, xr.DataArray):
        name = Path(path).name.split(".")[0] or "band_data"
        if name in obj.coords or name in obj.dims:
            name = f"{name}_data"
        if "band" in obj.dims and obj.sizes["band"] == 1:
            obj = obj.squeeze("band", drop=True)
        obj = obj.to_dataset(name=name)
    return obj
