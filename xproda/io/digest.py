"""Content digests: what a long run was computed from, and what a store holds.

A resumable write records digests of its *inputs* (:func:`digest_inputs`) in its fingerprint,
so that resuming with other inputs is refused, and digests of the *chunks it wrote*
(:func:`chunk_digest`, kept in the store's manifest by :mod:`xproda.io.integrity`), so that a
deleted, truncated or altered chunk is found.

- :func:`hash_array` -- SHA-256 of an in-memory array (dtype, shape, values);
- :func:`hash_xarray` -- SHA-256 of a DataArray/Dataset: names, dims, attrs, coordinates and
  values, dask blocks hashed in parallel (reads the data once);
- :func:`content_digest` -- SHA-256 of the bytes of a file or of every object of a store
  (local path or fsspec URL); the cheap way to fingerprint a Zarr input: compressed bytes are
  hashed without decoding (about 1-2 GB/s);
- :func:`digest_inputs` -- one digest per named input, whatever its kind.

>>> import numpy as np
>>> hash_array(np.arange(3)) == hash_array(np.arange(3))
True
>>> hash_array(np.arange(3)) == hash_array(np.arange(3.0))
False
>>> len(chunk_digest(b"abc"))
32
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = [
    "hash_array",
    "hash_xarray",
    "content_digest",
    "chunk_digest",
    "digest_inputs",
    "SKIP_IN_DIGEST",
]

#: Top-level names skipped by :func:`content_digest` inside a store: xproda's progress group
#: (``*.partial`` files of interrupted atomic writes are skipped too).
SKIP_IN_DIGEST = (".xproda",)


def hash_array(values: Any) -> str:
    """SHA-256 of an array's dtype, shape and values (object arrays by their repr).

    Parameters
    ----------
    values : array_like
        Loaded into memory (use :func:`hash_xarray` for dask-backed data).

    Returns
    -------
    str
        Hex digest.
    """
    arr = np.asarray(values)
    h = hashlib.sha256(f"{arr.dtype.str}{arr.shape}".encode())
    if arr.dtype.kind == "O":
        h.update(repr(arr.tolist()).encode())
    else:
        h.update(np.ascontiguousarray(arr).tobytes())
    return h.hexdigest()


def chunk_digest(data: bytes) -> str:
    """Short digest (BLAKE2b, 16 bytes, hex) of one stored object, for store manifests.

    Parameters
    ----------
    data : bytes

    Returns
    -------
    str
        32 hex characters.
    """
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def _hash_variable(var: Any) -> str:
    """Digest of one xarray Variable: dims, dtype, shape, attrs and values (blockwise)."""
    import dask

    head = json.dumps(
        [list(map(str, var.dims)), var.dtype.str, list(var.shape),
         {str(k): str(v) for k, v in var.attrs.items()}],
        sort_keys=True,
    )
    h = hashlib.sha256(head.encode())
    data = var.data
    if hasattr(data, "to_delayed"):  # dask: one digest per block, in parallel
        blocks = data.to_delayed().ravel().tolist()
        h.update(repr(tuple(map(tuple, data.chunks))).encode())
        for d in dask.compute(*[dask.delayed(hash_array)(b) for b in blocks]):
            h.update(d.encode())
    else:
        h.update(hash_array(np.asarray(data)).encode())
    return h.hexdigest()


def hash_xarray(obj: Any) -> str:
    """SHA-256 of a DataArray or Dataset: names, dims, attrs, coordinates and values.

    Dask-backed variables are hashed block by block in parallel (the data are read once,
    nothing is kept); the digest then also depends on the chunks.

    Parameters
    ----------
    obj : xarray.DataArray or xarray.Dataset

    Returns
    -------
    str
        Hex digest.
    """
    import xarray as xr

    if isinstance(obj, xr.DataArray):
        obj = obj.to_dataset(name=str(obj.name) if obj.name is not None else "__da__")
    if not isinstance(obj, xr.Dataset):
        raise TypeError(f"hash_xarray: expected a DataArray or Dataset, got {type(obj).__name__}")
    h = hashlib.sha256(json.dumps({str(k): str(v) for k, v in obj.attrs.items()},
                                  sort_keys=True).encode())
    for name in sorted(obj.variables, key=str):
        h.update(str(name).encode())
        h.update(_hash_variable(obj.variables[name]).encode())
    return h.hexdigest()


def content_digest(location: str | os.PathLike, storage_options: Mapping[str, Any] | None = None
                   ) -> str:
    """SHA-256 of the bytes of a file, or of every object (key and bytes) of a store.

    Parameters
    ----------
    location : str or os.PathLike
        Local path or fsspec URL of a file (NetCDF, GeoTIFF, ...) or a directory-like store
        (Zarr). Inside a store, xproda's progress group ``.xproda`` and ``*.partial`` files
        are skipped.
    storage_options : mapping, optional
        fsspec options for URLs.

    Returns
    -------
    str
        Hex digest.

    Raises
    ------
    FileNotFoundError
        If nothing exists at ``location`` (the message names it).
    """
    from xproda.io.stores import target

    fs, root = target(location, storage_options).fs()
    if not fs.exists(root):
        raise FileNotFoundError(f"content_digest: nothing at {os.fspath(location)!r}")
    h = hashlib.sha256()
    if fs.isdir(root):
        files = []
        for f in sorted(fs.find(root)):
            rel = f[len(root):].lstrip("/")
            if rel.split("/")[0] in SKIP_IN_DIGEST or rel.endswith(".partial"):
                continue
            files.append((f, rel))
        # batches of concurrent reads (object stores: one round trip per batch, not per chunk)
        for i in range(0, len(files), 256):
            batch = files[i:i + 256]
            data = fs.cat([f for f, _ in batch])
            for f, rel in batch:
                h.update(rel.encode() + b"\0")
                h.update(hashlib.sha256(data[f]).digest())
    else:
        with fs.open(root, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def digest_inputs(inputs: Mapping[str, Any], *,
                  storage_options: Mapping[str, Any] | None = None) -> dict[str, str]:
    """One SHA-256 per named input of a run.

    Parameters
    ----------
    inputs : mapping of str to object
        ``str``/``os.PathLike``: a file or store, by :func:`content_digest` of its bytes;
        xarray objects by :func:`hash_xarray` (reads them once); numpy arrays by
        :func:`hash_array`; objects with a ``content_hash`` attribute (networks) by it;
        ``None`` as ``"none"``; anything else by the digest of its JSON (or repr) text.
    storage_options : mapping, optional
        fsspec options for URLs.

    Returns
    -------
    dict of str to str
        Same keys as ``inputs``, sorted.
    """
    import xarray as xr

    out: dict[str, str] = {}
    for name in sorted(inputs, key=str):
        value = inputs[name]
        if value is None:
            d = "none"
        elif isinstance(value, (str, os.PathLike)):
            d = content_digest(value, storage_options)
        elif isinstance(value, (xr.Dataset, xr.DataArray)):
            d = hash_xarray(value)
        elif isinstance(value, np.ndarray):
            d = hash_array(value)
        elif getattr(value, "content_hash", None) is not None:
            d = str(value.content_hash)
        else:
            text = json.dumps(value, sort_keys=True, default=repr)
            d = hashlib.sha256(text.encode()).hexdigest()
        out[str(name)] = d
    return out
