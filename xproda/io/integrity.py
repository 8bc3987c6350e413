"""Integrity of written stores: the manifest of what a run wrote, and :func:`verify`.

Every resumable write records, for every object it writes, its size and a digest
(:func:`xproda.io.digest.chunk_digest`):

- the *template* (array metadata ``<var>/zarr.json`` and the chunks of coordinates and other
  variables written with it) in the progress group's document ``.xproda/zarr.json`` once the
  template is written;
- each *region*'s chunks in the region's marker ``.xproda/r<i>_<j>/zarr.json`` (``None`` for a
  chunk that is not written because it holds only the fill value);
- at the end, all of them together in the *manifest*, the attributes of ``.xproda/zarr.json``
  of the finished store (the markers are then removed).

:func:`verify` compares a store with its manifest -- every object present, of the recorded
size, with the recorded digest (``checksums=True``), every array's metadata equal to the
consolidated copy in the root document -- and reports the damaged regions.  ``write_zarr(...,
resume=True)`` (``xproda run --resume``) runs the quick form of the check (presence and
sizes, one listing of the store) and rewrites what is damaged; :func:`xproda.io.is_complete`
is True only for a finished store whose objects are all present with their sizes.

Stores written before manifests existed (xproda < 0.9) have none: :func:`verify` then only
decodes what it can and says so (``VerifyReport.manifest`` is False).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Mapping
from typing import Any

from xproda.io.digest import chunk_digest
from xproda.io.stores import (
    ATTR_COMPLETE,
    ATTR_FINGERPRINT,
    PROGRESS_GROUP,
    Target,
    progress_state,
    read_progress_attrs,
    read_root,
)
from xproda.io.stores import target as make_target

__all__ = [
    "VerifyReport",
    "verify",
    "inspect_store",
    "ExpectedObjects",
    "parse_region_key",
    "describe_objects",
    "check_objects",
    "expected_objects",
    "template_objects",
    "chunk_key",
    "restore_metadata",
    "MANIFEST_VERSION",
]

#: Version of the manifest layout (``.xproda/zarr.json`` attributes ``manifest_version``).
MANIFEST_VERSION = 1

Objects = dict[str, "list[Any] | None"]  # key -> [size, digest], None = not written (fill)


def describe_objects(target: Target, keys: Iterable[str]) -> Objects:
    """Size and digest of objects of a store, as recorded in manifests.

    Parameters
    ----------
    target : Target
    keys : iterable of str
        Object keys relative to the store root (e.g. ``"soc/c/0/1"``).

    Returns
    -------
    dict
        ``{key: [size, digest]}``; ``None`` for a key with no object (a chunk not written
        because it holds only the fill value).
    """
    fs, root = target.fs()
    out: Objects = {}
    for key in keys:
        try:
            data = fs.cat_file(f"{root}/{key}")
        except (FileNotFoundError, NotADirectoryError):
            out[key] = None
            continue
        out[key] = [len(data), chunk_digest(data)]
    return out


def chunk_key(array_meta: Mapping[str, Any], coords: Iterable[int]) -> str:
    """Key of one chunk of a Zarr v3 array, relative to the array (e.g. ``"c/0/3"``).

    Parameters
    ----------
    array_meta : mapping
        The array's metadata document (its ``zarr.json``), for ``chunk_key_encoding``.
    coords : iterable of int
        Chunk index along each dim.

    Returns
    -------
    str
    """
    enc = array_meta.get("chunk_key_encoding") or {"name": "default"}
    sep = (enc.get("configuration") or {}).get("separator", "/" if enc.get("name") == "default"
                                                          else ".")
    parts = [str(int(c)) for c in coords]
    if enc.get("name") == "v2":
        return sep.join(parts) if parts else "0"
    return sep.join(["c", *parts])


def restore_metadata(target: Target, keys: Iterable[str]) -> list[str]:
    """Rewrite damaged array metadata documents from the consolidated copy in the root.

    The documents are serialised as zarr-python writes them (byte-identical to the
    originals).

    Parameters
    ----------
    target : Target
    keys : iterable of str
        Damaged keys; those of the form ``<var>/zarr.json`` with a consolidated copy are
        restored, others ignored.

    Returns
    -------
    list of str
        The keys restored.
    """
    from zarr.core.buffer import default_buffer_prototype
    from zarr.core.metadata import ArrayV3Metadata

    from xproda.io.stores import put_object

    meta = read_root(target) or {}
    cons = ((meta.get("consolidated_metadata") or {}).get("metadata") or {})
    fs, root = target.fs()
    done = []
    for key in keys:
        name, _, rest = key.rpartition("/")
        if rest != "zarr.json" or name not in cons or cons[name].get("node_type") != "array":
            continue
        doc = ArrayV3Metadata.from_dict(dict(cons[name]))
        data = doc.to_buffer_dict(default_buffer_prototype())["zarr.json"].to_bytes()
        put_object(fs, f"{root}/{key}", data)
        done.append(key)
    return done


def template_objects(target: Target, skip: Iterable[str] = ()) -> Objects:
    """Every object of a freshly written template, except the root document and progress.

    Parameters
    ----------
    target : Target
    skip : iterable of str
        Top-level names to leave out (e.g. variables whose chunks belong to regions: only
        their ``zarr.json`` is part of the template).

    Returns
    -------
    dict
        As :func:`describe_objects`.
    """
    fs, root = target.fs()
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache(root)
    skip = set(skip)
    keys = []
    for f in sorted(fs.find(root)):
        rel = f[len(root):].lstrip("/")
        top = rel.split("/")[0]
        if rel == "zarr.json" or top == PROGRESS_GROUP or rel.endswith(".partial"):
            continue
        if top in skip and rel != f"{top}/zarr.json":
            continue
        keys.append(rel)
    return describe_objects(target, keys)


def _listing(target: Target) -> dict[str, int]:
    fs, root = target.fs()
    if hasattr(fs, "invalidate_cache"):
        fs.invalidate_cache(root)
    try:
        found = fs.find(root, detail=True)
    except FileNotFoundError:
        return {}
    return {f[len(root):].lstrip("/"): int(info.get("size") or 0) for f, info in found.items()}


def check_objects(target: Target, objects: Mapping[str, Any], *, checksums: bool = False,
                  listing: Mapping[str, int] | None = None) -> dict[str, str]:
    """Objects of a store that differ from their record: ``{key: reason}``.

    Parameters
    ----------
    target : Target
    objects : mapping
        ``{key: [size, digest] or None}`` as recorded (None: nothing was written; not
        checked).
    checksums : bool, default False
        Also read every object and compare its digest (otherwise presence and size only,
        from one listing of the store).
    listing : mapping, optional
        ``{key: size}`` of the store, if already listed.

    Returns
    -------
    dict of str to str
        Damaged objects and why (``"missing"``, ``"size 80 B, recorded 1234 B"``,
        ``"content differs from the recorded digest"``); empty when all is well.
    """
    sizes = _listing(target) if listing is None else listing
    fs, root = target.fs()
    bad: dict[str, str] = {}
    for key, rec in objects.items():
        if rec is None:
            continue
        size, digest = int(rec[0]), str(rec[1])
        if key not in sizes:
            bad[key] = "missing"
        elif sizes[key] != size:
            bad[key] = f"size {sizes[key]} B, recorded {size} B (truncated or rewritten)"
        elif checksums:
            try:
                data = fs.cat_file(f"{root}/{key}")
            except FileNotFoundError:
                bad[key] = "missing"
                continue
            if chunk_digest(data) != digest:
                bad[key] = "content differs from the recorded digest"
    return bad


@dataclasses.dataclass(frozen=True)
class ExpectedObjects:
    """What a store should hold, from its manifest or progress markers.

    Attributes
    ----------
    template : dict
        ``{key: [size, digest]}`` of the template's objects.
    records : dict
        Region index -> marker attributes (``status``, ``region`` bounds, ``objects``).
    manifest : bool
        False for a store without any record (written before manifests existed).
    """

    template: Objects
    records: dict[tuple[int, ...], dict[str, Any]]
    manifest: bool

    def objects(self, idx: tuple[int, ...]) -> Objects:
        """Recorded objects of region ``idx``."""
        return dict(self.records[idx].get("objects") or {})

    def bounds(self, idx: tuple[int, ...]) -> dict[str, list[int]]:
        """``{dim: [start, stop]}`` of region ``idx``."""
        return dict(self.records[idx].get("region") or {})


def parse_region_key(key: str) -> tuple[int, ...]:
    """Region index of a marker/manifest key ``"r<i>_<j>"`` (inverse of ``marker_key``)."""
    body = key[1:] if key.startswith("r") else key
    return tuple(int(p) for p in body.split("_")) if body else ()


def expected_objects(target: Target) -> ExpectedObjects:
    """The objects a store should hold: the manifest of a finished store, plus the records of
    the template and of the finished regions (markers) of an unfinished one.

    Parameters
    ----------
    target : Target

    Returns
    -------
    ExpectedObjects
    """
    attrs = read_progress_attrs(target) or {}
    template = dict(attrs.get("template") or {})
    records = {parse_region_key(k): dict(rec) for k, rec in (attrs.get("regions") or {}).items()}
    _, markers = progress_state(target, with_attrs=True)
    records.update(markers)
    return ExpectedObjects(template, records, manifest="template" in attrs)


@dataclasses.dataclass(frozen=True, repr=False)
class VerifyReport:
    """Outcome of :func:`verify`.

    Attributes
    ----------
    store : str
        Store location.
    complete : bool
        Whether the run finished (root attribute ``xproda_complete`` is 1).
    manifest : bool
        Whether the store records what it wrote (stores of xproda >= 0.9).
    regions_checked : int
        Regions whose objects were checked (all of a finished store; the finished ones of an
        interrupted store).
    objects_checked : int
        Objects checked.
    problems : dict of str to str
        Damaged objects and why, by key.
    bad_regions : list of dict
        ``{dim: [start, stop]}`` of every region with a damaged object (``--resume``
        rewrites them).
    template_problems : list of str
        Keys of damaged template objects (metadata, coordinates).
    checksums : bool
        Whether digests were compared (else presence and sizes).
    """

    store: str
    complete: bool
    manifest: bool
    regions_checked: int
    objects_checked: int
    problems: dict[str, str]
    bad_regions: list[dict[str, list[int]]]
    template_problems: list[str]
    checksums: bool

    @property
    def ok(self) -> bool:
        """True when nothing is damaged (a finished or unfinished run)."""
        return not self.problems

    def __repr__(self) -> str:
        state = "complete" if self.complete else "incomplete"
        how = "checksums" if self.checksums else "sizes"
        head = (f"VerifyReport({self.store!r}: {state}, {self.regions_checked} regions, "
                f"{self.objects_checked} objects checked by {how}")
        if self.ok:
            return head + "; intact)"
        lines = [head + f"; {len(self.problems)} damaged object(s) in "
                 f"{len(self.bad_regions)} region(s)"
                 + (f" and the template ({len(self.template_problems)})"
                    if self.template_problems else "") + ")"]
        for k, why in list(self.problems.items())[:20]:
            lines.append(f"  {k}: {why}")
        if len(self.problems) > 20:
            lines.append(f"  ... {len(self.problems) - 20} more")
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        """The report as plain JSON-able data."""
        return dataclasses.asdict(self)


def _metadata_problems(target: Target, meta: Mapping[str, Any]) -> dict[str, str]:
    """Array metadata documents that differ from the consolidated copy in the root."""
    fs, root = target.fs()
    cons = ((meta.get("consolidated_metadata") or {}).get("metadata") or {})
    bad = {}
    for name, doc in cons.items():
        key = f"{name}/zarr.json"
        try:
            found = json.loads(fs.cat_file(f"{root}/{key}"))
        except (FileNotFoundError, NotADirectoryError):
            bad[key] = "missing"
            continue
        except ValueError:
            bad[key] = "not valid JSON (truncated?)"
            continue
        if found != doc:
            bad[key] = "differs from the consolidated metadata in the root document"
    return bad


def inspect_store(target: Target, *, checksums: bool) -> tuple[VerifyReport, ExpectedObjects]:
    """:func:`verify` on a :class:`Target`, also returning what the store should hold.

    Parameters
    ----------
    target : Target
    checksums : bool

    Returns
    -------
    (VerifyReport, ExpectedObjects)

    Raises
    ------
    FileNotFoundError
        No store at the location.
    xproda.errors.StoreError
        The root document is unreadable or the store was not written by xproda.
    """
    from xproda.errors import StoreError

    meta = read_root(target)
    if meta is None:
        raise FileNotFoundError(f"verify: no Zarr store at {target.url!r}")
    if not meta:
        raise StoreError(f"verify: the root document {target.url}/zarr.json is not valid JSON "
                         "(truncated?); the store cannot be repaired, write it again "
                         "(overwrite)")
    attrs = meta.get("attributes", {})
    if ATTR_FINGERPRINT not in attrs:
        raise StoreError(f"verify: {target.url!r} was not written by xproda's resumable "
                         "writers (no 'xproda_fingerprint' attribute): nothing to verify against")
    exp = expected_objects(target)
    listing = _listing(target)
    problems = _metadata_problems(target, meta)
    problems.update(check_objects(target, exp.template, checksums=checksums, listing=listing))
    template_bad = sorted(problems)
    bad_regions = []
    n_obj = len(exp.template)
    for idx in sorted(exp.records):
        objs = exp.objects(idx)
        n_obj += sum(v is not None for v in objs.values())
        bad = check_objects(target, objs, checksums=checksums, listing=listing)
        if bad:
            problems.update(bad)
            bad_regions.append(exp.bounds(idx))
    complete = attrs.get(ATTR_COMPLETE) == 1
    report = VerifyReport(
        store=target.url, complete=complete, manifest=exp.manifest,
        regions_checked=len(exp.records), objects_checked=n_obj, problems=problems,
        bad_regions=bad_regions, template_problems=template_bad, checksums=checksums,
    )
    return report, exp


def verify(store: Any, *, storage_options: Mapping[str, Any] | None = None,
           checksums: bool = True) -> VerifyReport:
    """Check that a store written by xproda holds every object it recorded, intact.

    Parameters
    ----------
    store : str or os.PathLike
        Local path or fsspec URL of a store written by :func:`xproda.io.write_zarr`,
        ``xproda run`` or :func:`xproda.xr.transient.write_simulation` (finished or not).
    storage_options : mapping, optional
        fsspec options for URLs.
    checksums : bool, default True
        Read every object and compare its digest with the manifest (finds any change);
        False checks presence and sizes only (one listing: finds deleted and truncated
        objects, fast on object stores).

    Returns
    -------
    VerifyReport
        ``report.ok`` when intact; ``report.problems`` names every damaged object and why,
        ``report.bad_regions`` the regions that ``resume=True`` / ``xproda run --resume``
        rewrites.

    Raises
    ------
    FileNotFoundError
        If there is no store at ``store``.
    xproda.errors.StoreError
        If the root document is unreadable or the store was not written by xproda.

    Examples
    --------
    >>> import xproda.io as xio  # doctest: +SKIP
    >>> report = xio.verify("result.zarr")  # doctest: +SKIP
    >>> report.ok, report.bad_regions  # doctest: +SKIP
    (False, [{'lat': [0, 90], 'lon': [180, 360]}])
    """
    return inspect_store(make_target(store, storage_options), checksums=checksums)[0]

