"""Zarr I/O: open input stores with their CRS, write results region by region, resume.

:func:`open_dataset` opens Zarr, NetCDF and GeoTIFF inputs lazily (local paths or fsspec URLs
such as ``s3://bucket/covariates.zarr``), keeping the ``spatial_ref`` grid-mapping coordinate.

:func:`write_zarr` writes any lazy (dask-backed) :class:`xarray.Dataset` to a Zarr v3 store one
*region* (one dask chunk along the spatial dimensions) at a time, resumably: a run killed at
any point and started again with the same call (``resume=True``) writes only the regions not
done yet; the final store equals the one of an uninterrupted run.

Modules (each name below is also available from :mod:`xproda.io` itself):

- :mod:`xproda.io.opening`: :func:`open_dataset` (Zarr, NetCDF, GeoTIFF);
- :mod:`xproda.io.writer`: :func:`write_zarr`, :class:`WriteReport`, :func:`is_complete`,
  :func:`list_done_regions`;
- :mod:`xproda.io.integrity`: :func:`verify`, :class:`VerifyReport` (the manifest of what a
  run wrote; repair by resuming);
- :mod:`xproda.io.locking`: one writer per store;
- :mod:`xproda.io.digest`: digests of inputs and stored objects;
- :mod:`xproda.io.stores`: the store protocol (locations, root attributes such as
  :data:`ATTR_COMPLETE`, progress markers), shared with
  :func:`xproda.xr.transient.write_simulation`;
- :mod:`xproda.io.compression`: :data:`ZSTD_LEVEL`, :func:`default_compressors`;
- :mod:`xproda.io.clm`: :func:`open_clm_history`, :func:`clm_climatology` (CLM5/CESM2 history
  files).
"""

from __future__ import annotations

from xproda.io.clm import clm_climatology, open_clm_history
from xproda.io.compression import ZSTD_LEVEL, default_compressors
from xproda.io.integrity import VerifyReport, verify
from xproda.io.opening import open_dataset
from xproda.io.stores import (
    ATTR_COMPLETE,
    ATTR_FINGERPRINT,
    ATTR_REGION_CHUNKS,
    ATTR_REGION_DIMS,
)
from xproda.io.writer import WriteReport, is_complete, list_done_regions, write_zarr

__all__ = [
    "open_dataset",
    "write_zarr",
    "WriteReport",
    "is_complete",
    "list_done_regions",
    "verify",
    "VerifyReport",
    "ATTR_FINGERPRINT",
    "ATTR_COMPLETE",
    "ATTR_REGION_DIMS",
    "ATTR_REGION_CHUNKS",
    "ZSTD_LEVEL",
    "default_compressors",
    "open_clm_history",
    "clm_climatology",
]
