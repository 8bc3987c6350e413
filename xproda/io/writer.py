"""The region-by-region resumable Zarr writer: :func:`write_zarr` and its inspection.

:func:`write_zarr` writes any lazy (dask-backed) :class:`xarray.Dataset` to a Zarr v3 store one
*region* (one dask chunk along the spatial dimensions) at a time:

1. a *template* holds the metadata, the coordinates and the run's attributes, with NaN as the
   fill value of float variables, so that never-written chunks read back as NaN;
2. each region is computed (in parallel, with whatever dask scheduler is active), written with
   ``to_zarr(region=...)`` into its own Zarr chunks, and then marked done by a tiny marker
   object in the store;
3. at the end the root attribute ``xproda_complete`` is set to 1 and the markers are removed.

A run killed at any point and started again with the same call (``resume=True``) writes only
the regions without a marker; the final store equals the one of an uninterrupted run.
:func:`is_complete` and :func:`list_done_regions` inspect a store.  The store layout, its root
attributes and the markers: :mod:`xproda.io.stores`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
import os
import sys
import time
import uuid
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import xarray as xr

from xproda.conventions import cf_encoding, cf_finalize, reference_target
from xproda.errors import StoreError
from xproda.io.compression import default_compressors
from xproda.io.digest import digest_inputs, hash_array
from xproda.io.integrity import (
    MANIFEST_VERSION,
    check_objects,
    chunk_key,
    describe_objects,
    inspect_store,
    restore_metadata,
    template_objects,
)
from xproda.io.locking import store_lock
from xproda.io.stores import (
    ATTR_COMPLETE,
    ATTR_FINGERPRINT,
    ATTR_INPUTS,
    ATTR_REGION_CHUNKS,
    ATTR_REGION_DIMS,
    ATTR_VERSION,
    Target,
    attr_differences,
    consolidate,
    is_nonempty,
    mark_template_done,
    marker_key,
    progress_state,
    read_progress_attrs,
    read_root,
    region_attrs,
    remove_marker,
    remove_markers,
    remove_partials,
    remove_store,
    set_root_attrs,
    stable_strings,
    write_marker,
    write_markers,
)
from xproda.io.stores import target as make_target
from xproda.options import check_workers, progress_bar

__all__ = [
    "write_zarr",
    "WriteReport",
    "distributed_client",
    "scheduler_threads",
    "is_complete",
    "list_done_regions",
]

# 2: the dataset's own attrs (model, mode) enter it; 3: the xproda version and the digests
# of the inputs (``inputs=``) enter it
_FINGERPRINT_VERSION = 3
# encoding keys carried from the input to the output store; everything else (compressors,
# chunks, netCDF-specific keys, packing) is dropped so that the output is self-consistent
_KEEP_ENCODING = (
    "dtype", "_FillValue", "missing_value", "units", "calendar", "grid_mapping", "bounds",
    "fill_value",  # Zarr's own fill value (not a mask): e.g. no_data for integer flags
)


# --------------------------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True, repr=False)
class WriteReport:
    """Outcome of :func:`write_zarr`.

    Attributes
    ----------
    store : str
        Store location (absolute local path or URL).
    regions : int
        Number of regions of the run.
    written : int
        Regions computed and written by this call.
    skipped_empty : int
        Regions found empty by this call (all-NaN data or all-False mask): no chunk written.
    resumed : int
        Regions already done by an earlier, interrupted call (not recomputed).
    seconds : float
        Wall-clock time of the call, s.
    complete : bool
        True when the store is complete (always True on normal return).
    """

    store: str
    regions: int
    written: int
    skipped_empty: int
    resumed: int
    seconds: float
    complete: bool = True

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return (
            f"WriteReport({self.store!r}: {self.regions} regions, {state}; "
            f"written={self.written}, skipped_empty={self.skipped_empty}, "
            f"resumed={self.resumed}; {self.seconds:.2f} s)"
        )

    def _repr_html_(self) -> str:
        from xproda.reprs import html_report

        return html_report("WriteReport", [
            ("store", self.store), ("regions", self.regions),
            ("state", "complete" if self.complete else "incomplete"),
            ("written", self.written), ("skipped (empty)", self.skipped_empty),
            ("resumed (done before)", self.resumed), ("time", f"{self.seconds:.2f} s")])


# --------------------------------------------------------------------------------------------
# planning: region grid, variables, fingerprint
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass
class _Plan:
    ds: xr.Dataset  # prepared: coords in memory, region variables dask-backed
    region_dims: tuple[Hashable, ...]
    sizes: dict[Hashable, int]  # sizes of the region dims
    chunk: dict[Hashable, int]  # regular chunk size of each region dim
    region_vars: list[Hashable]  # data variables written region by region
    static_vars: list[Hashable]  # data variables without region dims (written with template)

    @property
    def nchunks(self) -> tuple[int, ...]:
        return tuple(max(1, math.ceil(self.sizes[d] / self.chunk[d])) for d in self.region_dims)

    def regions(self) -> Iterator[tuple[int, ...]]:
        return itertools.product(*(range(n) for n in self.nchunks))

    def bounds(self, idx: tuple[int, ...]) -> dict[Hashable, tuple[int, int]]:
        return {
            d: (i * self.chunk[d], min((i + 1) * self.chunk[d], self.sizes[d]))
            for d, i in zip(self.region_dims, idx)
        }

    def owned(self, idx: tuple[int, ...]) -> list[Hashable]:
        """Region variables written by region ``idx``.

        A variable lacking some region dims is written only by the regions with index 0
        along those dims, so that every Zarr chunk is written by exactly one region.
        """
        out = []
        for name in self.region_vars:
            dims = self.ds[name].dims
            if all(i == 0 for d, i in zip(self.region_dims, idx) if d not in dims):
                out.append(name)
        return out


def _is_dask(var: xr.Variable) -> bool:
    return var.chunks is not None


def _regular(chunks: tuple[int, ...]) -> bool:
    return all(c == chunks[0] for c in chunks[:-1]) and chunks[-1] <= chunks[0]


def _plan(ds: xr.Dataset, region_dims: Sequence[Hashable] | Mapping[Hashable, int] | None) -> _Plan:
    if not isinstance(ds, xr.Dataset):
        raise TypeError(f"write_zarr: ds must be an xarray.Dataset, got {type(ds).__name__}")
    if isinstance(region_dims, str):
        region_dims = [region_dims]
    if isinstance(region_dims, Mapping):
        missing = [d for d in region_dims if d not in ds.dims]
        if missing:
            raise ValueError(
                f"write_zarr: region_dims names {missing} which are not dimensions of ds "
                f"(dims: {list(ds.dims)})"
            )
        ds = ds.chunk({d: (-1 if n is None else n) for d, n in region_dims.items()})
        rdims = tuple(region_dims)
    elif region_dims is not None:
        rdims = tuple(region_dims)
        missing = [d for d in rdims if d not in ds.dims]
        if missing:
            raise ValueError(
                f"write_zarr: region_dims names {missing} which are not dimensions of ds "
                f"(dims: {list(ds.dims)})"
            )
    else:
        split = {
            d
            for v in ds.variables.values()
            if _is_dask(v)
            for d, c in zip(v.dims, v.chunks)
            if len(c) > 1
        }
        rdims = tuple(d for d in ds.dims if d in split)
    if len(set(rdims)) != len(rdims):
        raise ValueError(f"write_zarr: region_dims has repeated dimensions: {list(rdims)}")

    # chunking checks on the data variables
    ref: dict[Hashable, tuple[tuple[int, ...], Hashable]] = {}
    for name, var in ds.data_vars.items():
        if not _is_dask(var.variable):
            continue
        for d, c in zip(var.dims, var.chunks):
            if d in rdims:
                if d in ref and ref[d][0] != c:
                    other_chunks, other = ref[d]
                    raise ValueError(
                        f"write_zarr: variables do not share the chunks along region dimension "
                        f"{d!r}: {other!r} has chunks {other_chunks}, {name!r} has {c}. "
                        f"Rechunk all variables alike, e.g. ds.chunk({{{d!r}: {other_chunks[0]}}})"
                    )
                ref.setdefault(d, (c, name))
            elif len(c) > 1:
                raise ValueError(
                    f"write_zarr: variable {name!r} is split into {len(c)} chunks along "
                    f"{d!r}, which is not a region dimension (region_dims={list(rdims)}); each "
                    f"region must hold whole extents of the other dimensions. Rechunk with "
                    f"ds.chunk({{{d!r}: -1}}) or add {d!r} to region_dims"
                )
    chunk: dict[Hashable, int] = {}
    sizes: dict[Hashable, int] = {}
    for d in rdims:
        c = ref.get(d, ((ds.sizes[d],), None))[0]
        if not _regular(c):
            raise ValueError(
                f"write_zarr: chunks of {ref[d][1]!r} along region dimension {d!r} are "
                f"irregular ({c}); Zarr chunks must be equal (only the last may be smaller). "
                f"Rechunk with ds.chunk({{{d!r}: {c[0]}}})"
            )
        chunk[d] = max(1, c[0])
        sizes[d] = ds.sizes[d]

    # without any split dimension: one region spanning every dimension
    if not rdims:
        rdims = tuple(ds.dims)
        chunk = {d: max(1, ds.sizes[d]) for d in rdims}
        sizes = {d: ds.sizes[d] for d in rdims}

    region_vars, static_vars = [], []
    new_vars: dict[Hashable, xr.Variable] = {}
    for name, var in ds.data_vars.items():
        rd = [d for d in var.dims if d in rdims]
        if rd:
            region_vars.append(name)
            if not _is_dask(var.variable):
                new_vars[name] = var.variable.chunk({d: chunk[d] for d in rd})
        else:
            static_vars.append(name)  # computed when the template is written
    coords = {k: v.variable for k, v in ds.coords.items() if _is_dask(v.variable)}
    if coords:  # one compute: the coordinates' chunks are read side by side
        from dask import compute as dask_compute

        coords = dict(zip(coords, dask_compute(*coords.values())))
    if new_vars:
        ds = ds.assign(new_vars)
    if coords:
        ds = ds.assign_coords(coords)
    return _Plan(ds, rdims, sizes, chunk, region_vars, static_vars)


def _check_mask(mask: Any, ds: xr.Dataset) -> xr.DataArray | None:
    if mask is None:
        return None
    if not isinstance(mask, xr.DataArray):
        raise TypeError(
            f"write_zarr: mask must be a boolean xarray.DataArray, got {type(mask).__name__}"
        )
    if mask.dtype != bool:
        raise TypeError(
            f"write_zarr: mask must have dtype bool (True = cell to write), got {mask.dtype}; "
            "use e.g. mask=landfrac > 0"
        )
    bad = [d for d in mask.dims if d not in ds.dims]
    if bad:
        raise ValueError(
            f"write_zarr: mask has dims {list(mask.dims)}; {bad} are not dimensions of ds "
            f"(dims: {list(ds.dims)})"
        )
    for d in mask.dims:
        if mask.sizes[d] != ds.sizes[d]:
            raise ValueError(
                f"write_zarr: mask has size {mask.sizes[d]} along {d!r}, ds has {ds.sizes[d]}"
            )
        if d in mask.indexes and d in ds.indexes and not mask.indexes[d].equals(ds.indexes[d]):
            raise ValueError(f"write_zarr: the {d!r} coordinate of mask differs from that of ds")
    return mask


def _zarr_chunks(plan: _Plan, var: xr.Variable) -> tuple[int, ...]:
    return tuple(
        plan.chunk[d] if d in plan.region_dims else max(1, n) for d, n in zip(var.dims, var.shape)
    )


def _fingerprint(
    plan: _Plan, *, skip_empty: bool, mask_hash: str | None, attrs: Mapping[str, Any] | None
) -> str:
    ds = plan.ds
    spec = {
        "version": _FINGERPRINT_VERSION,
        "region_dims": [[str(d), plan.chunk[d], plan.sizes[d]] for d in plan.region_dims],
        "variables": {
            str(k): {
                "kind": "data" if k in ds.data_vars else "coord",
                "dims": [str(d) for d in v.dims],
                "shape": list(v.shape),
                "dtype": v.dtype.str,
                "chunks": list(_zarr_chunks(plan, v)),
            }
            for k, v in ds.variables.items()
        },
        "coord_values": {str(k): hash_array(v.values) for k, v in ds.coords.items()},
        "skip_empty": bool(skip_empty),
        "mask": mask_hash,
        "attrs": dict(attrs or {}),
        "xproda_version": _version(),
        # what made the data (model, mode, title): a resume with another model or mode is
        # another run; ``history`` (time stamps) and xproda's own bookkeeping are left out
        "dataset_attrs": {str(k): v for k, v in ds.attrs.items()
                          if k != "history" and not str(k).startswith("xproda_")},
    }
    blob = json.dumps(spec, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()


def _version() -> str:
    from xproda import __version__

    return str(__version__)


def _encoding(plan: _Plan) -> dict[Hashable, dict[str, Any]]:
    ds = plan.ds
    enc: dict[Hashable, dict[str, Any]] = {}
    for name, var in ds.variables.items():
        e = {k: var.encoding[k] for k in _KEEP_ENCODING if k in var.encoding}
        for ref in ("grid_mapping", "bounds"):  # references to variables that are gone
            if ref in e and reference_target(e[ref]) not in ds.variables:
                del e[ref]
        if "dtype" in e and np.dtype(e["dtype"]).kind != var.dtype.kind:
            del e["dtype"]  # no packing: outputs are stored as computed
        if var.ndim:
            e["chunks"] = _zarr_chunks(plan, var)
            e["compressors"] = default_compressors()
        if name in plan.region_vars and var.dtype.kind == "f" and "_FillValue" not in e:
            e["_FillValue"] = np.nan  # unwritten chunks read back as NaN
        enc[name] = e
    for name, e in cf_encoding(ds).items():  # coordinates, bounds: no _FillValue (CF)
        if name not in plan.region_vars:
            enc[name].update(e)
    return enc



def _describe_mismatch(target: Target, plan: _Plan, old_attrs: Mapping[str, Any] | None = None,
                       new_attrs: Mapping[str, Any] | None = None) -> str:
    attr_diffs = attr_differences(old_attrs or {}, new_attrs or {})
    try:
        old = xr.open_zarr(**target.xr_kwargs(), chunks=None, decode_times=False)
    except Exception:  # noqa: BLE001 - best effort for the error message only
        return (" Differences: " + "; ".join(attr_diffs[:8]) + ".") if attr_diffs else ""
    new = plan.ds
    diffs = list(attr_diffs)
    if set(map(str, old.data_vars)) != set(map(str, new.data_vars)):
        diffs.append(
            f"data variables {sorted(map(str, old.data_vars))} in the store vs "
            f"{sorted(map(str, new.data_vars))} now"
        )
    for name in new.variables:
        if name in old.variables:
            o, n = old.variables[name], new.variables[name]
            if o.dims != n.dims or o.shape != n.shape:
                old_dims, new_dims = dict(zip(o.dims, o.shape)), dict(zip(n.dims, n.shape))
                diffs.append(f"{name!r}: dims {old_dims} vs {new_dims}")
            elif name in plan.region_vars and o.encoding.get("chunks") != _zarr_chunks(plan, n):
                old_chunks, new_chunks = o.encoding.get("chunks"), _zarr_chunks(plan, n)
                diffs.append(f"{name!r}: chunks {old_chunks} vs {new_chunks}")
    if not diffs:
        return (
            " Variables, dims and chunks agree; the coordinate values, the mask, skip_empty or "
            "attrs differ."
        )
    return " Differences: " + "; ".join(diffs[:8]) + "."



def _rewrite_static(plan: _Plan, target: Target, name: str) -> None:
    """Write a template variable (coordinate, region-less variable) again, as the template did."""
    import zarr
    from xarray.conventions import encode_cf_variable

    var = plan.ds.variables[name]
    values = np.asarray(var.values)
    # the encoding the template was written with (xarray applies it the same way)
    enc = {k: v for k, v in _encoding(plan)[name].items() if k not in ("chunks", "compressors")}
    data = np.asarray(encode_cf_variable(xr.Variable(var.dims, values, encoding=enc),
                                         name=name).values)
    arr = zarr.open_array(target.zarr_store(), path=str(name), mode="r+", zarr_format=3)
    arr[...] = data


def _repair_template(plan: _Plan, target: Target, template: Mapping[str, Any],
                     bad: Sequence[str]) -> None:
    """Restore damaged template objects (array metadata, coordinate chunks) in place."""
    restored = set(restore_metadata(target, [k for k in bad if k.endswith("zarr.json")]))
    names = {k.split("/")[0] for k in bad if k not in restored}
    for name in sorted(names):
        if name in plan.ds.variables and name not in plan.region_vars:
            _rewrite_static(plan, target, name)
    still = check_objects(target, {k: template[k] for k in bad if k in template},
                          checksums=True)
    still.update({k: "cannot be restored" for k in bad
                  if k not in template and k not in restored})
    if still:
        raise StoreError(
            f"write_zarr: cannot repair {target.url!r}: "
            + "; ".join(f"{k}: {why}" for k, why in list(still.items())[:5])
            + ". Pass overwrite=True to write it again")


def _resume_state(plan: _Plan, target: Target, meta: Mapping[str, Any], *,
                  checksums: bool = False) -> tuple[bool | None, set, dict, dict]:
    """What a resume finds: ``(fresh, done regions, their records, template record)``.

    ``fresh`` is True when the template was never finished (start over), None when the store
    is complete and intact (nothing to do), False otherwise.  Damaged regions of a finished
    or unfinished store are found by a quick check (presence and sizes of every recorded
    object) and dropped from ``done``, so that the resume rewrites them; damaged template
    objects are restored in place.
    """
    attrs = meta.get("attributes", {})
    complete = attrs.get(ATTR_COMPLETE) == 1
    prog = read_progress_attrs(target)
    if prog is None:
        return (None if complete else True), set(), {}, {}
    template_record = {k: v for k, v in prog.items() if k != "regions"}
    report, exp = inspect_store(target, checksums=checksums)
    if report.template_problems:
        _repair_template(plan, target, exp.template, report.template_problems)
    bad = {idx for idx in exp.records if any(k in report.problems for k in exp.objects(idx))}
    if complete and not bad:
        remove_markers(target)  # left by a kill between the completion flag and the cleanup
        return None, set(), {}, {}
    if complete:
        # un-finish first (a kill from here on resumes: every resume checks every record),
        # then markers for the intact regions, then the manifest without regions
        set_root_attrs(target, {ATTR_COMPLETE: 0})
        write_markers(target, {marker_key(i): r for i, r in exp.records.items() if i not in bad})
        mark_template_done(target, template_record)
    for idx in bad:
        remove_marker(target, marker_key(idx))
    records = {i: r for i, r in exp.records.items() if i not in bad}
    return False, set(records), records, template_record


# --------------------------------------------------------------------------------------------
# region task (runs on dask workers)
# --------------------------------------------------------------------------------------------


def _all_missing(block: xr.Dataset, fills: Mapping[Hashable, Any] | None = None) -> bool:
    """Whether every variable of a block equals what an unwritten chunk reads back as."""
    fills = fills or {}
    for name, var in block.data_vars.items():
        values = np.asarray(var.values)
        if name in fills:
            if not (values == fills[name]).all():
                return False
        elif values.dtype.kind not in "fc" or not np.isnan(values).all():
            return False
    return True


def _int_fill(var: xr.DataArray) -> Any:
    """Fill value of an integer variable (``encoding`` ``fill_value``/``_FillValue``) or None."""
    if var.dtype.kind not in "iub":
        return None
    for key in ("fill_value", "_FillValue"):
        if var.encoding.get(key) is not None:
            return var.encoding[key]
    return None


@dataclasses.dataclass(frozen=True)
class _RegionSpec:
    """Everything a region task needs besides the data blocks (opaque to dask)."""

    names: tuple[Hashable, ...]
    dims: tuple[tuple[Hashable, ...], ...]
    mask_block: np.ndarray | None
    mask_dims: tuple[Hashable, ...] | None
    masked_vars: tuple[Hashable, ...]
    target: Target
    bounds: dict[Hashable, tuple[int, int]]
    key: str
    skip_empty: bool
    fills: tuple[tuple[Hashable, Any], ...] = ()
    encodings: tuple[tuple[Hashable, dict[str, Any]], ...] = ()
    chunk_keys: tuple[str, ...] = ()  # the region's chunk of each variable (manifest)


def _region_task(spec: _RegionSpec, *blocks: np.ndarray) -> tuple[str, dict[str, Any]]:
    """Write one computed region, then its marker recording what was written.

    Returns ``(status, marker attributes)``, status "written" or "empty".
    """
    block = xr.Dataset({n: (d, b) for n, d, b in zip(spec.names, spec.dims, blocks)})
    if spec.mask_block is not None and spec.masked_vars and not spec.mask_block.all():
        m = xr.DataArray(spec.mask_block, dims=spec.mask_dims)
        fills = dict(spec.fills)
        block = block.assign({
            v: block[v].where(m) if v not in fills else block[v].where(m, fills[v])
            for v in spec.masked_vars
        })
    if not block.data_vars or (spec.skip_empty and _all_missing(block, dict(spec.fills))):
        # no chunk of an empty region exists: a resume has the same fingerprint (data, mask,
        # skip_empty), and a repair redoes only regions that recorded written chunks
        status = "empty"
        objects: dict[str, Any] = {}
    else:
        region = {d: slice(a, b) for d, (a, b) in spec.bounds.items() if d in block.dims}
        _write_region(spec, block, region)
        status = "written"
        # read back what the region wrote: size and digest of each chunk (the manifest)
        objects = describe_objects(spec.target, spec.chunk_keys)
    attrs = {**region_attrs(status, spec.bounds), "objects": objects}
    write_marker(spec.target, spec.key, attrs)
    return status, attrs


def _write_region(spec: _RegionSpec, block: xr.Dataset, region: Mapping[Hashable, slice]) -> None:
    """Write ``block`` into ``region`` of the template's arrays.

    What ``block.to_zarr(region=region, mode="r+")`` does, without its per-call cost (about
    0.9 s of the 66 regions of the 0.25 degree benchmark, one thread): xarray's region mode
    opens every array again, reads its encoding back and validates the region, once per
    region.  Here the variables are CF-encoded with the encoding the template was written
    with (:func:`_encoding`, carried in the spec) and all arrays are written concurrently in
    one call to Zarr's event loop (one round trip per region instead of one per variable).
    Times, durations, strings and objects, whose encoding xarray may have chosen when it
    wrote the template, take xarray's region mode.
    """
    from xarray.conventions import encode_cf_variable
    from zarr.core.sync import sync

    if any(v.dtype.kind in "mMOSU" for v in block.data_vars.values()):
        block.to_zarr(**spec.target.xr_kwargs(), region=dict(region), mode="r+",
                      consolidated=True, write_empty_chunks=not spec.skip_empty)
        return
    encodings = dict(spec.encodings)
    items = []
    for name, var in block.data_vars.items():
        v = xr.Variable(var.dims, var.data, encoding=dict(encodings.get(name, {})))
        data = np.asarray(encode_cf_variable(v, name=name).values)
        sel = tuple(region.get(d, slice(None)) for d in var.dims)
        items.append((str(name), tuple(map(str, var.dims)), sel, data))
    sync(_set_arrays(spec.target.zarr_store(), items, write_empty=not spec.skip_empty))


async def _set_arrays(store: Any, items: Sequence[tuple], *, write_empty: bool) -> None:
    """``array[sel] = data`` for every ``(name, dims, sel, data)`` of ``items``, concurrently."""
    import asyncio

    from zarr.api.asynchronous import open_group

    group = await open_group(store=store, mode="r+", zarr_format=3)

    async def one(name: str, dims: tuple[str, ...], sel: tuple, data: np.ndarray) -> None:
        arr = await group.getitem(name)
        if tuple(arr.metadata.dimension_names or ()) != dims:
            raise AssertionError(  # pragma: no cover - the template is written from the plan
                f"write_zarr: array {name!r} has dims {arr.metadata.dimension_names}, the "
                f"data {dims}"
            )
        await arr.with_config({"write_empty_chunks": write_empty}).setitem(sel, data)

    await asyncio.gather(*(one(*item) for item in items))


class _RegionProgress:
    """Call ``on_region(status)`` as each region task of a local dask scheduler finishes.

    A :class:`dask.callbacks.Callback` (threads, processes and synchronous schedulers; the
    callbacks run in the scheduling thread).  dask.distributed runs no such callbacks: the
    caller then counts the regions when the batch returns.
    """

    def __init__(self, prefix: str, on_region: Callable[[str], None]) -> None:
        from dask.callbacks import Callback

        def posttask(key, result, dsk, state, worker_id):  # dask's callback signature
            if isinstance(key, tuple) and key and key[0] == prefix:
                on_region(result[0])

        self._cb = Callback(posttask=posttask)

    def __enter__(self) -> _RegionProgress:
        self._cb.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self._cb.__exit__(*exc)


def _collect(*statuses: Any) -> list[Any]:
    return list(statuses)


# --------------------------------------------------------------------------------------------
# writing
# --------------------------------------------------------------------------------------------


def distributed_client() -> Any:
    """The active ``dask.distributed`` client, or None."""
    if "distributed" in sys.modules:
        try:
            from distributed import default_client

            return default_client()
        except (ImportError, ValueError):
            pass
    return None


def scheduler_threads() -> int:
    """Threads of the active scheduler: the dask.distributed workers' if a client exists,
    else dask's ``num_workers`` setting or the CPU count."""
    client = distributed_client()
    if client is not None:
        return max(1, sum(client.nthreads().values()))
    import dask

    return int(dask.config.get("num_workers", None) or os.cpu_count() or 1)


def fuse_regions(graph: dict, region_keys) -> dict:
    """Each region's private ancestors fused into its task (for ``dask.distributed``).

    On a cluster the scheduler places a region's read tasks (one per variable and block)
    on any worker, and the blocks then travel to the worker that computes the region
    (hundreds of MB per global run). Fusing every task that only this region needs into the
    region's task runs the reads, the kernel and the write in one place. Tasks needed by
    several regions, and data nodes, stay as they are. The results are the same.
    """
    from dask._task_spec import DataNode, Task, convert_legacy_graph

    g = convert_legacy_graph(graph)
    deps = {k: set(v.dependencies) & g.keys() for k, v in g.items()}
    dependents: dict = {k: set() for k in g}
    for k, ds in deps.items():
        for d in ds:
            dependents[d].add(k)
    for rk in region_keys:
        anc, stack = set(), [rk]
        while stack:
            for d in deps[stack.pop()]:
                if d not in anc and not isinstance(g[d], DataNode):
                    anc.add(d)
                    stack.append(d)
        own = {rk}
        grew = True
        while grew:  # a task joins once every task that needs it has joined
            grew = False
            for d in anc - own:
                if dependents[d] <= own:
                    own.add(d)
                    grew = True
        if len(own) > 1:
            fused = Task.fuse(*(g[k] for k in own), key=rk)
            for k in own:
                del g[k]
            g[rk] = fused
            for k in own - {rk}:
                for d in deps[k]:
                    dependents[d].discard(k)
                    dependents[d].add(rk)
    return g


def _batched(items: Sequence[Any], n: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def _write_template(plan: _Plan, target: Target, attrs: Mapping[str, Any]) -> None:
    import dask.array as dsa
    import zarr
    from dask import compute as dask_compute

    tmpl = stable_strings(cf_finalize(plan.ds)).drop_encoding()
    static = {n: tmpl[n].variable for n in plan.static_vars if _is_dask(tmpl[n].variable)}
    if static:
        tmpl = tmpl.assign(dict(zip(static, dask_compute(*static.values()))))
    # the region variables as placeholders of the same shape, chunks and dtype: with
    # compute=False to_zarr writes only their metadata, but it still built (and optimised)
    # the delayed writes of their whole graph, ~0.13 s of a 0.25 degree run, then dropped
    tmpl = tmpl.assign({
        n: xr.Variable(v.dims, dsa.zeros(v.shape, chunks=v.chunks, dtype=v.dtype), v.attrs)
        for n in plan.region_vars if _is_dask(v := tmpl[n].variable)})
    tmpl.attrs = dict(attrs)
    # the root group (with the fingerprint) is the store's first object: a run killed while
    # writing the template is then recognised as ours on resume and simply started over
    own = {k: v for k, v in attrs.items() if str(k).startswith("xproda_")}
    zarr.create_group(target.zarr_store(), attributes=own, zarr_format=3, overwrite=True)
    tmpl.to_zarr(
        **target.xr_kwargs(),
        mode="a",
        compute=False,
        zarr_format=3,
        consolidated=False,
        encoding=_encoding(plan),
    )
    consolidate(target)


def write_zarr(
    ds: xr.Dataset,
    store: str | os.PathLike,
    *,
    storage_options: Mapping[str, Any] | None = None,
    region_dims: Sequence[Hashable] | Mapping[Hashable, int] | None = None,
    mask: xr.DataArray | None = None,
    skip_empty: bool = True,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool | None = None,
    batch_size: int | None = None,
    attrs: Mapping[str, Any] | None = None,
    inputs: Mapping[str, Any] | None = None,
    verify: bool = False,
) -> WriteReport:
    """Write a (lazy) Dataset to a Zarr v3 store region by region, resumably.

    A *region* is one dask chunk of ``ds`` along the region dimensions (typically the
    spatial ones); each region is computed once and written into its own Zarr chunks, so
    parallel writers never touch the same chunk. After a region is written a marker object is
    stored; an interrupted run called again with ``resume=True`` skips the marked regions, and
    the final store equals the store of an uninterrupted run.

    Parameters
    ----------
    ds : xarray.Dataset
        Data to write, usually dask-backed (nothing is computed before the region loop). All
        data variables must share their chunks along the region dims, and every other dim must
        be a single chunk. A numpy-backed dataset is written as one region unless
        ``region_dims`` is a mapping of chunk sizes.
    store : str or os.PathLike
        Local path or fsspec URL, e.g. ``"run.zarr"`` or ``"s3://bucket/run.zarr"``.
    storage_options : mapping, optional
        fsspec options for URLs (e.g. s3fs's ``endpoint_url``, ``key``, ``secret``).
    region_dims : sequence of str or mapping of str to int, optional
        Dimensions defining the regions. Default: every dim along which some variable has
        more than one chunk. A mapping ``{dim: size}`` rechunks ``ds`` first.
    mask : xarray.DataArray of bool, optional
        Cells to write (e.g. a land mask on the spatial dims; True = write). Regions where the
        mask is all False are skipped *without computing the data*. In written regions, float
        variables spanning the mask's dims are set to NaN where the mask is False, so that the
        result does not depend on the region layout. The mask is computed up front.
    skip_empty : bool, default True
        Skip regions (and chunks) whose data are all NaN: nothing is written, and the fill
        value (NaN) reads back. Without ``mask`` a region is computed, then checked. With
        False every chunk is written.
    resume : bool, default False
        Continue an interrupted run: an existing store with the same fingerprint is kept and
        regions already marked done are not recomputed. A store with another fingerprint
        raises (unless ``overwrite=True``, then it is replaced); a missing store starts fresh.
    overwrite : bool, default False
        Replace an existing store. Without ``resume`` and ``overwrite`` an existing store
        raises :class:`FileExistsError`.
    progress : bool or None, default None
        Show a progress bar over the regions; None: the option ``progress``
        (:func:`xproda.set_options`).
    batch_size : int, optional
        Regions computed per :func:`dask.compute` call. Each region writes itself and its
        marker inside the graph, so finished regions hold no memory, and dask's ordering
        finishes regions before it reads far ahead (peak memory does not grow with the batch:
        tested). Default: 32 regions per thread of the active scheduler (dask.distributed
        workers if a client exists). Every call ends with threads idle while its last regions
        finish: with 8 per thread the 0.25 degree benchmark spent 1 s of its 6 s that way.
        The progress bar advances region by region on local schedulers, batch by batch on
        dask.distributed.
    attrs : mapping, optional
        Extra global attributes of the store; they enter the fingerprint (e.g. a run id or
        the model configuration).
    inputs : mapping of str to object, optional
        What ``ds`` is computed from, by name: paths/URLs of input files or stores (their
        bytes are hashed, compressed, without decoding), xarray objects (their values are
        read and hashed once), arrays, networks (their ``content_hash``) or JSON-able
        options (:func:`xproda.io.digest.digest_inputs`).  The digests are stored in the
        root attribute ``xproda_inputs`` and enter the fingerprint: a resume with other
        inputs is refused, naming the inputs that differ.

    Returns
    -------
    WriteReport
        Region counts (total, written, skipped_empty, resumed) and the elapsed time.

    Raises
    ------
    FileExistsError
        If the store exists and neither ``resume`` nor ``overwrite`` is set.
    xproda.errors.StoreError
        On ``resume``, if the store holds another run (another fingerprint: the message
        lists what differs) or damage that cannot be repaired in place. A ValueError.
    xproda.errors.StoreLockedError
        If another process is writing the store (the message names it).
    ValueError
        If chunks are inconsistent or unsuitable for regions.

    Notes
    -----
    The fingerprint (root attribute ``xproda_fingerprint``) is a SHA-256 of the variable
    names, dims, shapes, dtypes and Zarr chunks, the region grid, the coordinate values, the
    mask, ``skip_empty``, ``attrs``, the digests of ``inputs``, the xproda version and
    ``ds.attrs`` without ``history`` (so another model or mode, recorded in ``source``, is
    another run). The computed data are not part of it: pass ``inputs`` (``xproda run``
    does) to refuse resuming with other input values.

    The whole call holds the store's lock (:func:`xproda.io.locking.store_lock`). Every
    region records the size and digest of the chunks it wrote; the finished store keeps them
    in a manifest (:mod:`xproda.io.integrity`). A resume checks every recorded object (presence
    and size) and rewrites the regions with a missing or truncated chunk, and damaged array
    metadata or coordinates, even in a finished store; :func:`xproda.io.integrity.verify` also
    compares digests. The store's root
    attributes are ``ds.attrs`` (without any ``xproda_*`` keys), then ``attrs``, then
    ``xproda_inputs``, ``xproda_version``, ``xproda_fingerprint``, ``xproda_region_dims``,
    ``xproda_region_chunks`` and ``xproda_complete`` (0 while running, 1 when done; see
    :func:`is_complete`). Variables
    without a region dim are computed and written with the template. Integer variables of
    skipped regions read back as their fill value (0 unless ``fill_value`` (Zarr's, not a
    mask) or ``_FillValue`` is set in their encoding); with a ``mask``, such variables are
    also set to it where the mask is False.
    """
    import dask
    from dask.delayed import Delayed
    from dask.optimization import cull as _cull

    t0 = time.perf_counter()
    target = make_target(store, storage_options)
    if batch_size is not None and (not isinstance(batch_size, int) or batch_size < 1):
        raise ValueError(f"write_zarr: batch_size must be a positive int, got {batch_size!r}")
    if attrs is not None and not isinstance(attrs, Mapping):
        raise TypeError(f"write_zarr: attrs must be a mapping, got {type(attrs).__name__}")
    plan = _plan(ds, region_dims)
    mask = _check_mask(mask, plan.ds)
    mask_np = mask_dims = None
    mask_hash = None
    if mask is not None:
        mask_dims = tuple(mask.dims)
        mask_np = np.asarray(mask.values, dtype=bool)
        mask_hash = hash_array(mask_np) + repr([str(d) for d in mask_dims])
    if inputs is not None and not isinstance(inputs, Mapping):
        raise TypeError(f"write_zarr: inputs must be a mapping of name to input, got "
                        f"{type(inputs).__name__}")
    run_attrs = dict(attrs or {})
    if inputs:
        run_attrs[ATTR_INPUTS] = digest_inputs(inputs, storage_options=storage_options)
    fp = _fingerprint(plan, skip_empty=skip_empty, mask_hash=mask_hash, attrs=run_attrs)

    root_attrs = {k: v for k, v in plan.ds.attrs.items() if not str(k).startswith("xproda_")}
    root_attrs.update(run_attrs)
    root_attrs.update(
        {
            ATTR_VERSION: _version(),
            ATTR_FINGERPRINT: fp,
            ATTR_REGION_DIMS: [str(d) for d in plan.region_dims],
            ATTR_REGION_CHUNKS: [int(plan.chunk[d]) for d in plan.region_dims],
            ATTR_COMPLETE: 0,
        }
    )
    all_regions = list(plan.regions())
    n_total = len(all_regions)

    def locked() -> WriteReport:
        # ---- existing store: error, overwrite, resume (and repair) -- under the store's lock
        fresh = True
        done: set[tuple[int, ...]] = set()
        records: dict[tuple[int, ...], dict[str, Any]] = {}  # marker attrs of finished regions
        template_record: dict[str, Any] = {}
        meta = read_root(target)
        exists = meta is not None or is_nonempty(target)
        if exists:
            if not resume and not overwrite:
                raise FileExistsError(
                    f"write_zarr: store {target.url!r} already exists; pass resume=True to "
                    "continue an interrupted run, or overwrite=True to replace it"
                )
            if resume:
                old_attrs = (meta or {}).get("attributes", {})
                old_fp = old_attrs.get(ATTR_FINGERPRINT)
                if old_fp is None:
                    if not overwrite:
                        raise StoreError(
                            f"write_zarr: cannot resume {target.url!r}: it was not written by "
                            "xproda.io.write_zarr (no 'xproda_fingerprint' attribute); pass "
                            "overwrite=True to replace it"
                        )
                elif old_fp != fp:
                    if not overwrite:
                        raise StoreError(
                            f"write_zarr: cannot resume {target.url!r}: the store was started "
                            f"with a different dataset, inputs or options (fingerprint "
                            f"{old_fp[:12]}... vs {fp[:12]}...)."
                            f"{_describe_mismatch(target, plan, old_attrs, root_attrs)} Use the "
                            "original call, or pass overwrite=True to start over"
                        )
                else:
                    fresh, done, records, template_record = _resume_state(
                        plan, target, meta, checksums=verify)
                    if fresh is None:  # complete and intact
                        return WriteReport(target.url, n_total, 0, 0, n_total,
                                           time.perf_counter() - t0)
            if fresh:
                remove_store(target)
        if fresh:
            done, records = set(), {}
            _write_template(plan, target, root_attrs)
            template_record = {
                ATTR_FINGERPRINT: fp, "manifest_version": MANIFEST_VERSION,
                "template": template_objects(target, skip=[str(v) for v in plan.region_vars]),
            }
            mark_template_done(target, template_record)
        else:
            remove_partials(target)
        # chunk keys of each region variable: the region index along region dims, 0 elsewhere
        array_meta = ((read_root(target) or {}).get("consolidated_metadata") or {}).get(
            "metadata") or {}

        def region_keys(idx: tuple[int, ...], owned: Sequence[Hashable]) -> tuple[str, ...]:
            pos = dict(zip(plan.region_dims, idx))
            return tuple(
                f"{n}/" + chunk_key(array_meta.get(str(n), {}),
                                    [pos.get(d, 0) for d in plan.ds[n].dims])
                for n in owned
            )

        todo = [idx for idx in all_regions if idx not in done]
        n_resumed = n_total - len(todo)
        counts = {"written": 0, "empty": 0}

        # ---- mask: per region "anything to write?" without computing the data
        base = plan.ds[plan.region_vars]
        base = base.drop_vars(list(base.coords)).drop_encoding().drop_attrs()
        masked_vars: tuple[Hashable, ...] = ()
        mask_blocks: dict[tuple[int, ...], np.ndarray | None] = {}
        # integer variables with a fill value (e.g. quality flags) are masked with it
        fills: dict[Hashable, Any] = {v: _int_fill(plan.ds[v]) for v in plan.region_vars}
        if mask_np is not None:
            masked_vars = tuple(
                v
                for v in plan.region_vars
                if (base[v].dtype.kind == "f" or fills[v] is not None)
                and set(mask_dims) <= set(base[v].dims)
            )
            empty_by_mask = []
            compute = []
            for idx in todo:
                b = plan.bounds(idx)
                sl = tuple(slice(*b[d]) if d in b else slice(None) for d in mask_dims)
                mb = mask_np[sl]
                owned = plan.owned(idx)
                if skip_empty and not mb.any() and owned and all(v in masked_vars for v in owned):
                    empty_by_mask.append(idx)
                else:
                    compute.append(idx)
                    mask_blocks[idx] = mb
            empty_records = {
                idx: {**region_attrs("empty", plan.bounds(idx)), "objects": {}}
                for idx in empty_by_mask
            }
            write_markers(target, {marker_key(idx): a for idx, a in empty_records.items()})
            records.update(empty_records)
            counts["empty"] += len(empty_by_mask)
            todo = compute

        per_call = batch_size if batch_size is not None else 32 * scheduler_threads()

        bar = progress_bar(progress, total=n_total, initial=n_total - len(todo),
                           desc=f"write_zarr {Path(target.url).name}", unit="region")

        # regions of the running batch, counted as they finish (local schedulers only); the
        # batch's statuses replace them in ``counts`` when it returns
        live = {"written": 0, "empty": 0}

        def postfix() -> None:
            bar.set_postfix(
                written=counts["written"] + live["written"], empty=counts["empty"] + live["empty"],
                resumed=n_resumed, refresh=False,
            )

        def on_region(status: str) -> None:
            live["written" if status == "written" else "empty"] += 1
            postfix()
            bar.update(1)

        postfix()
        if todo:
            # One materialised, optimised graph for all regions; each batch culls what it needs
            # from it (cheap), so the cost per region does not grow with the number of regions.
            dsk = dict(base.__dask_graph__()) if base.data_vars else {}
            arrays = {name: base[name].data for name in base.data_vars}
            token = uuid.uuid4().hex[:12]
            # the template's CF encoding of each variable, for the direct writes of the regions
            encodings = {
                n: {k: v for k, v in e.items() if k not in ("chunks", "compressors")}
                for n, e in _encoding(plan).items()
            }
        try:
            for ibatch, batch in enumerate(_batched(todo, per_call)):
                graph_keys, tasks = [], {}
                for idx in batch:
                    owned = plan.owned(idx)
                    pos = dict(zip(plan.region_dims, idx))
                    block_keys = [
                        (arrays[n].name, *(pos.get(d, 0) for d in base[n].dims)) for n in owned
                    ]
                    graph_keys.extend(block_keys)
                    spec = _RegionSpec(
                        names=tuple(owned),
                        dims=tuple(base[n].dims for n in owned),
                        mask_block=mask_blocks.get(idx),
                        mask_dims=mask_dims,
                        masked_vars=tuple(v for v in masked_vars if v in owned),
                        fills=tuple((v, fills[v]) for v in owned if fills[v] is not None),
                        target=target,
                        bounds=plan.bounds(idx),
                        key=marker_key(idx),
                        skip_empty=skip_empty,
                        encodings=tuple((n, encodings[n]) for n in owned),
                        chunk_keys=region_keys(idx, owned),
                    )
                    tasks[(f"xproda-region-{token}", *idx)] = (_region_task, spec, *block_keys)
                graph = dict(_cull(dsk, graph_keys)[0]) if graph_keys else {}
                graph.update(tasks)
                client = distributed_client()
                if client is not None:
                    check_workers(client)
                    graph = fuse_regions(graph, list(tasks))
                batch_key = f"xproda-batch-{token}-{ibatch}"
                graph[batch_key] = (_collect, *tasks)
                with _RegionProgress(f"xproda-region-{token}", on_region):
                    (results,) = dask.compute(Delayed(batch_key, graph), optimize_graph=False)
                bar.update(len(batch) - sum(live.values()))  # dask.distributed: no task callbacks
                live.update(written=0, empty=0)
                for idx, (status, rec) in zip(batch, results):
                    counts["written" if status == "written" else "empty"] += 1
                    records[idx] = rec
                postfix()
        finally:
            bar.close()

        # ---- finalize: the manifest, then the completion flag (one atomic write of the root
        # document), then the markers go.  A kill between two steps leaves a store that a resume
        # finishes (markers and manifest agree).
        manifest = dict(template_record)
        manifest["regions"] = {marker_key(idx): records[idx] for idx in sorted(records)}
        mark_template_done(target, manifest)
        set_root_attrs(target, {ATTR_COMPLETE: 1})
        remove_markers(target)
        return WriteReport(
            target.url,
            n_total,
            counts["written"],
            counts["empty"],
            n_resumed,
            time.perf_counter() - t0,
        )

    with store_lock(target):
        return locked()


# --------------------------------------------------------------------------------------------
# inspection
# --------------------------------------------------------------------------------------------


def is_complete(
    store: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None
) -> bool:
    """Whether ``store`` holds a finished :func:`write_zarr` run.

    Parameters
    ----------
    store : str or os.PathLike
        Local path or fsspec URL.
    storage_options : mapping, optional
        fsspec options for URLs.

    Returns
    -------
    bool
        True when the root attribute ``xproda_complete`` is 1 *and* every object the run
        recorded is present with its recorded size (one listing of the store; see
        :func:`xproda.io.integrity.verify` for a check of the digests); False when the run is
        unfinished or damaged, when the store is missing or was not written by xproda.
    """
    from xproda.errors import StoreError

    t = make_target(store, storage_options)
    meta = read_root(t)
    if not (bool(meta) and meta.get("attributes", {}).get(ATTR_COMPLETE) == 1):
        return False
    try:
        return inspect_store(t, checksums=False)[0].ok
    except StoreError:
        return False


def list_done_regions(
    store: str | os.PathLike, *, storage_options: Mapping[str, Any] | None = None
) -> list[dict[str, slice]]:
    """Regions of a :func:`write_zarr` run that are written (or found empty) so far.

    Parameters
    ----------
    store : str or os.PathLike
        Local path or fsspec URL.
    storage_options : mapping, optional
        fsspec options for URLs.

    Returns
    -------
    list of dict
        One ``{dim: slice(start, stop)}`` per finished region (index ranges along the region
        dims), sorted; every region for a complete store, ``[]`` for a missing store.
    """
    target = make_target(store, storage_options)
    meta = read_root(target)
    if not meta or ATTR_FINGERPRINT not in meta.get("attributes", {}):
        return []
    a = meta["attributes"]
    dims = list(a.get(ATTR_REGION_DIMS, []))
    chunk = dict(zip(dims, a.get(ATTR_REGION_CHUNKS, [])))
    sizes: dict[str, int] = {}
    if dims:
        opened = xr.open_zarr(**target.xr_kwargs(), chunks=None, decode_times=False)
        sizes = {d: int(opened.sizes[d]) for d in dims}
    if a.get(ATTR_COMPLETE) == 1:
        done: Iterable[tuple[int, ...]] = itertools.product(
            *(range(max(1, math.ceil(sizes[d] / chunk[d]))) for d in dims)
        )
    else:
        done = progress_state(target)[1]
    out = []
    for idx in sorted(done):
        if len(idx) != len(dims):
            continue
        out.append(
            {d: slice(i * chunk[d], min((i + 1) * chunk[d], sizes[d])) for d, i in zip(dims, idx)}
        )
    return out

