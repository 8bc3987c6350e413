"""The store protocol: store locations, root attributes and progress markers.

Every store xproda reads or writes is a :class:`Target`, made by :func:`target` from a local
path or an fsspec URL (``s3://bucket/run.zarr``) and its storage options. The functions here
read and update the store's root document (:func:`read_root`, :func:`set_root_attrs`,
:func:`consolidate`), remove stores (:func:`remove_store`) and keep the progress markers of
a resumable run (:func:`write_marker`, :func:`progress_state`, :func:`remove_markers`).
:func:`xproda.io.write_zarr` and :func:`xproda.xr.transient.write_simulation` are built on
them.

Store layout while a :func:`~xproda.io.write_zarr` run is in progress (all of it valid Zarr
v3, so zarr and xarray read the store without warnings)::

    run.zarr/zarr.json                  root group: attrs incl. xproda_fingerprint, consolidated
    run.zarr/<var>/zarr.json, c/i/j/..  arrays and chunks
    run.zarr/.xproda/zarr.json          group written once the template is complete; its
                                        attributes record the template's objects
    run.zarr/.xproda/r<i>_<j>/zarr.json one empty group per finished region (its marker),
                                        recording the region's chunks (size, digest)
    run.zarr.lock                       beside the store: the writer's lock
                                        (:mod:`xproda.io.locking`)

Once the run is finished, the markers are gone and ``.xproda/zarr.json`` holds the manifest
of every object written (:mod:`xproda.io.integrity`).

Examples
--------
>>> t = target("s3://bucket/run.zarr/", {"anon": True})
>>> t.url, t.is_local, t.xr_kwargs()["storage_options"]
('s3://bucket/run.zarr', False, {'anon': True})
>>> target("file:///tmp/run.zarr", None).url
'/tmp/run.zarr'
>>> marker_key((2, 0))
'r2_0'
"""

from __future__ import annotations

import dataclasses
import json
import os
import uuid
import warnings
from collections.abc import Callable, Hashable, Mapping
from typing import Any

__all__ = [
    "stable_strings",
    "ATTR_FINGERPRINT",
    "ATTR_COMPLETE",
    "ATTR_REGION_DIMS",
    "ATTR_REGION_CHUNKS",
    "ATTR_VERSION",
    "ATTR_INPUTS",
    "PROGRESS_GROUP",
    "Target",
    "target",
    "put_object",
    "read_root",
    "is_nonempty",
    "set_root_attrs",
    "consolidate",
    "remove_store",
    "attr_differences",
    "marker_key",
    "region_attrs",
    "write_marker",
    "write_markers",
    "mark_template_done",
    "progress_state",
    "read_progress_attrs",
    "remove_markers",
    "remove_marker",
    "remove_progress_entries",
    "read_json",
    "remove_partials",
]

#: Root attribute holding the run's fingerprint (hex SHA-256).
ATTR_FINGERPRINT = "xproda_fingerprint"
#: Root attribute set to 1 once every region is written (0 before).
ATTR_COMPLETE = "xproda_complete"
#: Root attributes describing the region grid (names and chunk sizes of the region dims).
ATTR_REGION_DIMS = "xproda_region_dims"
ATTR_REGION_CHUNKS = "xproda_region_chunks"

#: Root attribute: the xproda version that wrote the store (part of the fingerprint).
ATTR_VERSION = "xproda_version"
#: Root attribute: digests of the run's inputs by name (part of the fingerprint).
ATTR_INPUTS = "xproda_inputs"

#: Group inside the store that holds the progress markers.
PROGRESS_GROUP = ".xproda"
_GROUP_DOC = {"zarr_format": 3, "node_type": "group"}


# --------------------------------------------------------------------------------------------
# locations
# --------------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Target:
    """A store location: a local absolute path or an fsspec URL, plus storage options.

    Make one with :func:`target`, which normalises paths and URLs.

    Attributes
    ----------
    url : str
        Absolute local path, or an fsspec URL without a trailing slash.
    storage_options : mapping or None
        fsspec options of a URL; None for a local path.
    """

    url: str
    storage_options: Mapping[str, Any] | None = None

    @property
    def is_local(self) -> bool:
        """Whether the store is a local path (no ``protocol://``)."""
        return "://" not in self.url

    def fs(self) -> tuple[Any, str]:
        """The fsspec filesystem and the root path of the store.

        Returns
        -------
        tuple
            ``(filesystem, root)``, the root path without trailing slash.
        """
        if self.is_local:
            from fsspec.implementations.local import LocalFileSystem

            return LocalFileSystem(), self.url
        import fsspec

        fs, path = fsspec.core.url_to_fs(self.url, **dict(self.storage_options or {}))
        return fs, path.rstrip("/")

    def xr_kwargs(self) -> dict[str, Any]:
        """``store=``/``storage_options=`` for :meth:`xarray.Dataset.to_zarr` / open_zarr.

        Returns
        -------
        dict
            ``{"store": url}``, plus ``storage_options`` for a URL.
        """
        if self.is_local:
            return {"store": self.url}
        return {"store": self.url, "storage_options": dict(self.storage_options or {})}

    def zarr_store(self) -> Any:
        """A zarr-python store object for this location.

        Returns
        -------
        zarr.storage.LocalStore or zarr.storage.FsspecStore
        """
        import zarr.storage

        if self.is_local:
            return zarr.storage.LocalStore(self.url)
        return zarr.storage.FsspecStore.from_url(
            self.url, storage_options=dict(self.storage_options or {})
        )


def target(store: str | os.PathLike, storage_options: Mapping[str, Any] | None) -> Target:
    """The :class:`Target` of a local path or fsspec URL.

    Parameters
    ----------
    store : str or os.PathLike
        Local path (``~`` expanded, made absolute; ``file://`` and ``local://`` URLs are local
        paths) or fsspec URL (``s3://bucket/run.zarr``; a trailing slash is dropped).
    storage_options : mapping or None
        fsspec options for URLs; ignored for local paths.

    Returns
    -------
    Target

    Raises
    ------
    TypeError
        If ``store`` is not a non-empty str or path, or ``storage_options`` is not a mapping.
    """
    if isinstance(store, os.PathLike):
        store = os.fspath(store)
    if not isinstance(store, str) or not store:
        raise TypeError(
            f"store must be a local path or an fsspec URL (str or os.PathLike), "
            f"got {type(store).__name__}: {store!r}"
        )
    if storage_options is not None and not isinstance(storage_options, Mapping):
        raise TypeError(
            f"storage_options must be a mapping (e.g. {{'anon': True}}), "
            f"got {type(storage_options).__name__}"
        )
    if "://" in store:
        protocol, rest = store.split("://", 1)
        if protocol in ("file", "local"):
            store = rest
        else:
            return Target(store.rstrip("/"), dict(storage_options or {}))
    path = os.path.abspath(os.path.expanduser(store))
    return Target(path, None)


# --------------------------------------------------------------------------------------------
# objects and the root document
# --------------------------------------------------------------------------------------------


def stable_strings(ds: Any) -> Any:
    """``ds`` with its fixed-width string variables (numpy ``<U``) as variable-length strings.

    Zarr v3 stores numpy ``<U`` arrays as fixed-length UTF-32, a data type without a Zarr v3
    specification (zarr-python warns that other readers may not open it and that its layout
    may change); variable-length strings (object arrays) are stored as the specified
    ``string`` type. The values are unchanged (they read back as numpy strings). Applied to
    every store xproda writes.

    Parameters
    ----------
    ds : xarray.Dataset

    Returns
    -------
    xarray.Dataset
        A shallow copy; only string variables are converted.
    """
    names = [k for k, v in ds.variables.items() if v.dtype.kind == "U"]
    if not names:
        return ds
    out = ds.copy(deep=False)
    for k in names:
        var = out.variables[k]
        new = var.copy(deep=False, data=var.values.astype(object))
        if k in out.dims:  # an index coordinate: replace through assign_coords
            out = out.assign_coords({k: new})
        else:
            out[k] = new
    return out


def put_object(fs: Any, path: str, data: bytes) -> None:
    """Write one small object; atomic on local disks (write + rename).

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
        Filesystem of the store (:meth:`Target.fs`).
    path : str
        Path of the object.
    data : bytes
        Its content.
    """
    from fsspec.implementations.local import LocalFileSystem

    if isinstance(fs, LocalFileSystem):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        tmp = f"{path}.{uuid.uuid4().hex}.partial"
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    else:
        fs.pipe_file(path, data)


def _group_doc(attrs: Mapping[str, Any]) -> bytes:
    return json.dumps({**_GROUP_DOC, "attributes": dict(attrs)}, sort_keys=True).encode()


def read_json(fs: Any, path: str, *, invalid: Any = None) -> Any:
    """The JSON document at ``path``, read afresh (fsspec's listing cache invalidated).

    Parameters
    ----------
    fs : fsspec.AbstractFileSystem
    path : str
    invalid : object, optional
        Returned when the object exists but is not valid JSON (truncated, foreign).

    Returns
    -------
    object or None
        The parsed document; None when there is no object at ``path``.
    """
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache(path)
    try:
        raw = fs.cat_file(path)
    except (FileNotFoundError, NotADirectoryError):
        return None
    try:
        return json.loads(raw)
    except ValueError:
        return invalid


def read_root(target: Target) -> dict[str, Any] | None:
    """Root ``zarr.json`` of the store as a dict, or None when there is none.

    Parameters
    ----------
    target : Target

    Returns
    -------
    dict or None
        The parsed document (``{}`` when it is not valid JSON); None without a root document.
    """
    fs, root = target.fs()
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache(root)
    return read_json(fs, f"{root}/zarr.json", invalid={})


def is_nonempty(target: Target) -> bool:
    """Whether the store's location exists and holds anything.

    Parameters
    ----------
    target : Target

    Returns
    -------
    bool
    """
    fs, root = target.fs()
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache(root)
    try:
        return len(fs.ls(root, detail=False)) > 0
    except (FileNotFoundError, NotADirectoryError):
        return False


def set_root_attrs(target: Target, attrs: Mapping[str, Any]) -> None:
    """Update attributes of the store's root group (one write of the root document).

    Parameters
    ----------
    target : Target
        An existing Zarr v3 store.
    attrs : mapping
        Attributes to set (others are kept).
    """
    import zarr

    group = zarr.open_group(target.zarr_store(), mode="r+", zarr_format=3)
    group.attrs.update(dict(attrs))


def consolidate(target: Target) -> None:
    """Consolidate the metadata of a Zarr v3 store (without zarr's v3-spec warning).

    Parameters
    ----------
    target : Target
    """
    import zarr

    with warnings.catch_warnings():
        # zarr warns that consolidated metadata is not part of the v3 spec (yet)
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
        zarr.consolidate_metadata(target.zarr_store(), zarr_format=3)


def remove_store(target: Target) -> None:
    """Delete a store (nothing happens if it is missing).

    Parameters
    ----------
    target : Target

    Raises
    ------
    FileExistsError
        If the location holds something that is not a Zarr store (it is left alone).
    """
    meta = read_root(target)
    fs, root = target.fs()
    if meta is None and is_nonempty(target):
        looks_zarr = any(fs.exists(f"{root}/{k}") for k in (".zgroup", ".zarray", ".zmetadata"))
        if not looks_zarr:
            raise FileExistsError(
                f"write_zarr: {target.url!r} exists and is not a Zarr store; refusing to delete "
                "it with overwrite=True. Remove it yourself or choose another store"
            )
    try:
        fs.rm(root, recursive=True)
    except FileNotFoundError:
        pass


def attr_differences(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """What differs between the root attributes of a store and those of a new run.

    Parameters
    ----------
    old, new : mapping
        Root attributes of the existing store and of the run about to resume it.

    Returns
    -------
    list of str
        One phrase per difference: inputs by name (:data:`ATTR_INPUTS`), the xproda version,
        other attributes (``history`` and xproda's bookkeeping are left out).
    """
    diffs = []
    oi, ni = old.get(ATTR_INPUTS), new.get(ATTR_INPUTS)
    if isinstance(oi, Mapping) and isinstance(ni, Mapping):
        for k in sorted(set(oi) | set(ni)):
            if oi.get(k) != ni.get(k):
                o, n = oi.get(k), ni.get(k)
                diffs.append(f"input {k!r} ({'absent' if o is None else str(o)[:12] + '...'} "
                             f"in the store, {'absent' if n is None else str(n)[:12] + '...'} "
                             "now)")
    elif oi != ni:
        diffs.append("the inputs (their digests differ)")
    if old.get(ATTR_VERSION) != new.get(ATTR_VERSION):
        diffs.append(f"xproda version ({old.get(ATTR_VERSION, 'unknown')} in the store, "
                     f"{new.get(ATTR_VERSION)} now)")
    skip = {"history", "coordinates", ATTR_INPUTS, ATTR_VERSION}  # coordinates: xarray's
    for k in sorted(set(old) | set(new), key=str):
        if k in skip or str(k).startswith("xproda_"):
            continue
        if old.get(k) != new.get(k):
            diffs.append(f"attribute {k!r} ({str(old.get(k))[:60]!r} in the store, "
                         f"{str(new.get(k))[:60]!r} now)")
    return diffs


# --------------------------------------------------------------------------------------------
# progress markers
# --------------------------------------------------------------------------------------------


def marker_key(idx: tuple[int, ...]) -> str:
    """Name of the marker of region ``idx``: ``"r<i>_<j>..."``.

    Parameters
    ----------
    idx : tuple of int
        Index of the region along each region dim.

    Returns
    -------
    str
    """
    return "r" + "_".join(str(i) for i in idx)


def _parse_key(name: str) -> tuple[int, ...] | None:
    if not name.startswith("r"):
        return None
    body = name[1:]
    try:
        return tuple(int(p) for p in body.split("_")) if body else ()
    except ValueError:
        return None


def region_attrs(status: str, bounds: Mapping[Hashable, tuple[int, int]]) -> dict[str, Any]:
    """Attributes of a region marker.

    Parameters
    ----------
    status : {"written", "empty"}
        What happened to the region.
    bounds : mapping of dim to (start, stop)
        Index range of the region along each region dim.

    Returns
    -------
    dict
        ``{"status": status, "region": {dim: [start, stop]}}``.
    """
    return {"status": status, "region": {str(d): list(b) for d, b in bounds.items()}}


def write_marker(target: Target, key: str, attrs: Mapping[str, Any]) -> None:
    """Mark one region done: an empty group ``.xproda/<key>`` with ``attrs``.

    Parameters
    ----------
    target : Target
    key : str
        Marker name (:func:`marker_key`).
    attrs : mapping
        Marker attributes (:func:`region_attrs`).
    """
    fs, root = target.fs()
    put_object(fs, f"{root}/{PROGRESS_GROUP}/{key}/zarr.json", _group_doc(attrs))


def write_markers(target: Target, markers: Mapping[str, Mapping[str, Any]]) -> None:
    """Write many markers at once (concurrent requests on object stores).

    Parameters
    ----------
    target : Target
    markers : mapping of str to mapping
        Marker name -> attributes, as for :func:`write_marker`.
    """
    if not markers:
        return
    fs, root = target.fs()
    docs = {f"{root}/{PROGRESS_GROUP}/{k}/zarr.json": _group_doc(a) for k, a in markers.items()}
    if target.is_local:
        for path, data in docs.items():
            put_object(fs, path, data)
    else:
        fs.pipe(docs)


def mark_template_done(target: Target, attrs: Mapping[str, Any]) -> None:
    """Write the progress group itself (``.xproda/zarr.json``): the template is complete.

    Parameters
    ----------
    target : Target
    attrs : mapping
        Attributes of the progress group (the run's fingerprint).
    """
    fs, root = target.fs()
    put_object(fs, f"{root}/{PROGRESS_GROUP}/zarr.json", _group_doc(attrs))


def progress_state(target: Target, *, with_attrs: bool = False
                   ) -> tuple[bool, Any]:
    """Progress of an unfinished run, from the markers.

    Parameters
    ----------
    target : Target
    with_attrs : bool, default False
        Also read every marker's attributes (one request per marker).

    Returns
    -------
    tuple
        ``(template done, set of the indices of the done regions)``; with ``with_attrs``,
        ``(template done, {index: marker attributes})``.
    """
    fs, root = target.fs()
    prefix = f"{root}/{PROGRESS_GROUP}"
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache(prefix)
    try:
        files = fs.find(prefix)
    except FileNotFoundError:
        files = []
    template_done, done = False, {}
    for f in files:
        rel = f.rstrip("/")[len(prefix) :].strip("/").split("/")
        if rel == ["zarr.json"]:
            template_done = True
        elif len(rel) == 2 and rel[1] == "zarr.json":
            idx = _parse_key(rel[0])
            if idx is not None:
                done[idx] = f
    if not with_attrs:
        return template_done, set(done)
    out = {}
    for idx, f in done.items():
        doc = read_json(fs, f)
        if isinstance(doc, dict):  # else a marker being written or damaged: not done
            out[idx] = doc.get("attributes", {})
    return template_done, out


def read_progress_attrs(target: Target) -> dict[str, Any] | None:
    """Attributes of the progress group ``.xproda/zarr.json`` (fingerprint, manifest).

    Parameters
    ----------
    target : Target

    Returns
    -------
    dict or None
        None when there is no progress group (``{}`` when its document is unreadable).
    """
    fs, root = target.fs()
    doc = read_json(fs, f"{root}/{PROGRESS_GROUP}/zarr.json", invalid={})
    if doc is None:
        return None
    attrs = doc.get("attributes", {}) if isinstance(doc, dict) else {}
    return dict(attrs) if isinstance(attrs, dict) else {}


def _rm(fs: Any, path: str) -> None:
    try:
        fs.rm(path, recursive=True)
    except FileNotFoundError:
        pass


def remove_marker(target: Target, key: str) -> None:
    """Delete one region marker (the region is then redone by a resume).

    Parameters
    ----------
    target : Target
    key : str
        Marker name (:func:`marker_key`).
    """
    fs, root = target.fs()
    _rm(fs, f"{root}/{PROGRESS_GROUP}/{key}")


def remove_progress_entries(target: Target, match: Callable[[str], bool]) -> None:
    """Delete the members of the progress group whose name satisfies ``match``.

    Parameters
    ----------
    target : Target
    match : callable
        Name of a member (e.g. ``"r0_3"``) -> whether to delete it.
    """
    fs, root = target.fs()
    prefix = f"{root}/{PROGRESS_GROUP}"
    try:
        entries = fs.ls(prefix, detail=False)
    except FileNotFoundError:
        return
    for e in entries:
        if match(e.rstrip("/").rsplit("/", 1)[-1]):
            _rm(fs, e)


def remove_markers(target: Target) -> None:
    """Delete the region markers, keeping the progress group's own document (the manifest).

    Parameters
    ----------
    target : Target
    """
    remove_progress_entries(target, lambda name: _parse_key(name) is not None)


def remove_partials(target: Target) -> None:
    """Drop temporary files of interrupted atomic writes on local disks (``*.partial``).

    Parameters
    ----------
    target : Target
        Nothing happens for URLs.
    """
    if not target.is_local:
        return
    for dirpath, _, files in os.walk(target.url):
        for f in files:
            if f.endswith(".partial"):
                try:
                    os.remove(os.path.join(dirpath, f))
                except FileNotFoundError:
                    pass
