"""Site-level assimilation in shards: tasks on any dask scheduler, resumable through Zarr.

:func:`xproda.sites.assimilation.problem.assimilate` with ``shard_size=`` or ``store=`` comes here.
The sites (in the order of the packed profiles) are cut into contiguous **shards**; each
shard is one task that runs the in-process :func:`assimilate` on its sites. The tasks run
on the active dask scheduler (the threaded one by default, a ``dask.distributed`` client if
one is active, or ``scheduler=``), so a ``LocalCluster`` or any cluster spreads the sites
over its workers.

**Identical results whatever the sharding.** A site's random numbers come from its own
stream, keyed by the seed and the site's id (:mod:`xproda.sites.assimilation.streams`), and
every model computation is per column (:func:`xproda.models.transport.mean_operator` and the
fused kernels decide per column), so a site's result does not depend on which other sites
share its shard, on the shard size, the worker count or the scheduler: the sharded result
equals the in-process one bit for bit (tests check it). Batch mode fits one parameter set
to all sites together and is not sharded.

**Resumable.** With ``store=`` the result is written to a Zarr store by
:func:`xproda.io.write_zarr`, one region per shard -- the protocol of every resumable write
in xproda: a shard's region is marked done once written; a run killed at any point (the
client with ``kill -9``, a lost worker) and started again with ``resume=True`` computes
only the shards without a marker, and the store equals the one of an uninterrupted run.
The digests of the inputs (profiles, forcing, options, seed, shard layout) are stored in
the store: a resume with other inputs is refused, naming what differs.

**Memory.** A worker holds one shard's forcing, state and draws at a time (for adaptive
Metropolis with stored draws: ``shard_size x chains x draws x parameters`` float32).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import xarray as xr

__all__ = ["shard_bounds", "default_shard_size", "assimilate_sharded"]

#: variables of the per-shard result that are counters over the shard's batch, not per site
_RUN_ATTRS = ("n_model_evaluations",)


def shard_bounds(n_sites: int, shard_size: int) -> list[tuple[int, int]]:
    """``[start, stop)`` of each shard of ``n_sites`` sites, ``shard_size`` sites per shard.

    Parameters
    ----------
    n_sites : int
        Number of sites.
    shard_size : int
        Sites per shard (the last shard may be smaller).

    Returns
    -------
    list of (int, int)

    Raises
    ------
    ValueError
        If ``shard_size`` is not a positive integer.

    Examples
    --------
    >>> shard_bounds(5, 2)
    [(0, 2), (2, 4), (4, 5)]
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, (int, np.integer)) \
            or shard_size < 1:
        raise ValueError(f"shard_size must be a positive integer (sites per shard), got "
                         f"{shard_size!r}")
    return [(a, min(a + int(shard_size), n_sites)) for a in range(0, n_sites, int(shard_size))]


def default_shard_size(n_sites: int, method: str = "am") -> int:
    """Sites per shard when none is given (results do not depend on it).

    About two shards per scheduler thread (every shard pays the sampler's and the model
    call's fixed cost per iteration, ~4 ms: more shards cost more; two keep the load
    balanced), and at most 500 sites for the
    samplers (``"am"``, ``"reference"``: a shard's stored draws must fit a worker's memory)
    or 2,500 for ``"map"`` (a few vectors per site; but every shard pays the optimiser's
    tail -- up to ~200 model calls of ~15 ms fixed cost each while its slowest sites
    converge -- so fewer, larger shards are faster). It also sets the granularity of
    resuming.

    Parameters
    ----------
    n_sites : int
        Sites of the run.
    method : str, default "am"
        The assimilation method.

    Returns
    -------
    int
    """
    from xproda.io.writer import scheduler_threads

    cap = 2500 if method == "map" else 500
    return max(1, min(cap, math.ceil(n_sites / (2 * scheduler_threads()))))


def _shard_task(spec: Mapping[str, Any]) -> xr.Dataset | None:
    """One shard: the in-process assimilation of its sites (run on a worker); None when no
    site of the shard has forcing and no template is given."""
    from xproda.errors import ProfileError
    from xproda.sites.assimilation.problem import assimilate

    with warnings.catch_warnings():  # the client has warned once about sites without forcing
        warnings.filterwarnings("ignore", message=r"assimilate: \d+ of \d+ site\(s\) have forcing")
        try:
            ds = assimilate(spec["batch"], spec["forcing"], fixed=spec["fixed"],
                            **spec["kwargs"])
        except ProfileError as err:
            if "no site to fit" not in str(err):
                raise
            ds = None
    template = spec.get("template")
    if ds is None:  # every site of the shard lacks forcing: the template's missing values
        if template is None:  # filled in by the caller from another shard's structure
            return None
        return _missing_block(template, spec["batch"])
    return _as_in_process(ds, spec["any_skipped"])


def _as_in_process(ds: xr.Dataset, any_skipped: bool) -> xr.Dataset:
    """As the in-process run: sites without forcing anywhere make its integer per-site
    variables float (NaN for those sites) -- in every shard alike."""
    if any_skipped:
        for k, v in ds.data_vars.items():
            if "site" in v.dims and v.dtype.kind in "iu":
                ds[k] = v.astype(np.float64)
    return ds


def _missing_block(template: xr.Dataset, batch) -> xr.Dataset:
    """The result of a shard whose sites all lack forcing: NaN, flags set."""
    n = len(batch.site_ids)
    data = {}
    for k, v in template.data_vars.items():
        if "site" not in v.dims:
            data[k] = v
            continue
        shape = tuple(n if d == "site" else template.sizes[d] for d in v.dims)
        if k == "no_forcing":
            arr = np.ones(shape, dtype=bool)
        elif v.dtype == bool:
            arr = np.zeros(shape, dtype=bool)
        else:
            arr = np.full(shape, np.nan, dtype=np.float64 if v.dtype.kind in "iuf" else v.dtype)
        data[k] = xr.Variable(v.dims, arr, v.attrs)
    coords = {k: c for k, c in template.coords.items() if "site" not in c.dims}
    ds = xr.Dataset(data, coords=coords, attrs=template.attrs)
    return ds.assign_coords(site=np.asarray(batch.site_ids),
                            lat=("site", np.asarray(batch.lat)),
                            lon=("site", np.asarray(batch.lon)))


def _subset_forcing(forcing: Mapping[str, Any], idx: np.ndarray, n: int) -> dict:
    return {k: (np.asarray(v)[idx] if np.shape(v)[0] == n else np.asarray(v))
            for k, v in forcing.items()}


def _forcing_arrays(prob) -> dict[str, np.ndarray]:
    """The problem's forcing as numpy arrays (rows in the order of the packed profiles)."""
    return {k: (v.detach().cpu().numpy() if hasattr(v, "detach") else np.asarray(v))
            for k, v in prob.forcing.items()}


def _specs(prob, bounds, kwargs, any_skipped, template=None) -> list[dict]:
    S = prob.n_sites
    fixed = prob.fixed.cpu().numpy()
    forcing = _forcing_arrays(prob)
    out = []
    for a, b in bounds:
        idx = np.arange(a, b)
        out.append({"batch": prob.batch.subset(idx), "forcing": _subset_forcing(forcing, idx, S),
                    "fixed": fixed[idx], "kwargs": kwargs, "any_skipped": any_skipped,
                    "template": template})
    return out


def _inputs(prob, bounds, kwargs) -> dict[str, Any]:
    """What the result is computed from (digested into the store: a resume must match)."""
    b = prob.batch
    inputs: dict[str, Any] = {
        "site_ids": np.asarray([str(s) for s in b.site_ids]).astype("U"),
        "fixed": prob.fixed.cpu().numpy(),
        "shards": [list(x) for x in bounds],
    }
    model = kwargs.get("model")
    opts = {k: v for k, v in kwargs.items() if k != "model"}
    # a model's name and options (strings would be taken for paths by digest_inputs)
    opts["model"] = model if isinstance(model, str) else {
        "name": getattr(model, "name", repr(model)),
        "options": repr(getattr(model, "options", None))}
    inputs["options"] = opts
    for k in ("lat", "lon", "soc", "top", "bottom", "depth", "weight"):
        v = getattr(b, k, None)
        if v is not None:
            inputs[f"profiles_{k}"] = np.asarray(v)
    for k, v in _forcing_arrays(prob).items():
        inputs[f"forcing_{k}"] = v
    return inputs


def _tasks(specs) -> list:
    """One delayed :func:`_shard_task` per shard, keyed ``xproda-shard-<i>`` (progress)."""
    import dask

    return [dask.delayed(_shard_task, pure=False)(s, dask_key_name=f"xproda-shard-{i}")
            for i, s in enumerate(specs)]


def _scheduler_kwargs(scheduler) -> dict:
    return {} if scheduler is None else {"scheduler": scheduler}


def _compute_shards(specs, *, scheduler, progress: bool) -> list[xr.Dataset]:
    """Run the shard tasks on the scheduler; results in shard order; progress per shard."""
    import dask

    from xproda.io.writer import distributed_client
    from xproda.options import progress_bar

    tasks = _tasks(specs)
    bar = progress_bar(progress, total=len(tasks), desc="assimilation shards", unit="shard")
    try:
        client = distributed_client() if scheduler is None else None
        if client is not None:
            from distributed import as_completed

            from xproda.options import check_workers

            check_workers(client)

            futures = client.compute(tasks)
            for _ in as_completed(futures):
                bar.update(1)
            return client.gather(futures)
        from dask.callbacks import Callback

        def posttask(key, result, dsk, state, worker_id):
            if isinstance(key, str) and key.startswith("xproda-shard-"):
                bar.update(1)

        with Callback(posttask=posttask):
            return list(dask.compute(*tasks, **_scheduler_kwargs(scheduler)))
    finally:
        bar.close()


def _run_settings(attrs: dict, fitted_ids: np.ndarray) -> dict:
    """The sampler's settings of the whole run (not of one shard): the sites it fitted."""
    from xproda.sites.assimilation.samplers.common import hash_ids

    attrs = dict(attrs)
    if "n_sites" in attrs:
        attrs["n_sites"] = int(len(fitted_ids))
    if attrs.get("site_ids_sha1") is not None:
        attrs["site_ids_sha1"] = hash_ids(fitted_ids)
    return attrs


def pad_draws(ds: xr.Dataset, width: int) -> xr.Dataset:
    """``ds`` with its ``draw`` dimension NaN-padded to ``width`` (no-op without ``draw``).

    The reference sampler's ``samples`` are padded to the longest chain of its batch, so
    shards differ in ``draw`` length; padded to one width they combine (in memory: the
    longest of the run, as in-process; in a store: :func:`~xproda.sites.assimilation.
    samplers.max_post_draws`, fixed before any shard runs).
    """
    n = ds.sizes.get("draw")
    if n is None or n == width:
        return ds
    if n > width:
        raise ValueError(f"pad_draws: the result has {n} draws, more than the width {width}")
    out = ds.pad(draw=(0, width - n), keep_attrs=True)
    return out.assign_coords(draw=("draw", np.arange(width), ds["draw"].attrs)) \
        if "draw" in ds.coords else out


def _combine(parts: Sequence[xr.Dataset], fitted_ids: np.ndarray) -> xr.Dataset:
    width = max(p.sizes.get("draw", 0) for p in parts)
    parts = [pad_draws(p, width) for p in parts]
    attrs = _run_settings(parts[0].attrs, fitted_ids)
    for k in _RUN_ATTRS:
        if all(k in p.attrs for p in parts):
            attrs[k] = int(sum(int(p.attrs[k]) for p in parts))
    site_vars = [k for k, v in parts[0].variables.items() if "site" in v.dims]
    ds = xr.concat(parts, dim="site", data_vars=[k for k in site_vars
                                                  if k in parts[0].data_vars],
                   coords="minimal", compat="override", join="override",
                   combine_attrs="override")
    ds.attrs = attrs
    return ds


def _lazy(specs, template: xr.Dataset) -> xr.Dataset:
    """The result as a dask-backed Dataset, one chunk (shard) per task along ``site``."""
    import dask
    import dask.array as da

    sizes = [len(s["batch"].site_ids) for s in specs]
    tasks = _tasks(specs)
    data = {}
    for k, v in template.data_vars.items():
        if "site" not in v.dims:
            data[k] = v
            continue
        ax = v.dims.index("site")
        blocks = []
        for t, n in zip(tasks, sizes):
            shape = tuple(n if d == "site" else template.sizes[d] for d in v.dims)
            arr = dask.delayed(_variable_values)(t, k, v.dtype, template.sizes.get("draw"))
            blocks.append(da.from_delayed(arr, shape=shape, dtype=v.dtype))
        data[k] = xr.Variable(v.dims, da.concatenate(blocks, axis=ax), v.attrs, v.encoding)
    site_ids = np.concatenate([np.asarray(s["batch"].site_ids) for s in specs])
    lat = np.concatenate([np.asarray(s["batch"].lat) for s in specs])
    lon = np.concatenate([np.asarray(s["batch"].lon) for s in specs])
    coords = {k: c for k, c in template.coords.items() if "site" not in c.dims}
    ds = xr.Dataset(data, coords=coords,
                    attrs={k: v for k, v in template.attrs.items() if k not in _RUN_ATTRS})
    site_attrs = template["site"].attrs if "site" in template.coords else {}
    return ds.assign_coords(site=("site", _text(site_ids), site_attrs),
                            lat=("site", lat, template["lat"].attrs),
                            lon=("site", lon, template["lon"].attrs))


def _text(ids: np.ndarray) -> np.ndarray:
    """Site ids as stored: variable-length text (object) unless numeric."""
    ids = np.asarray(ids)
    if ids.dtype.kind in "iuf":
        return ids
    return np.asarray([str(s) for s in ids], dtype=object)


def _variable_values(ds: xr.Dataset, name: str, dtype, width: int | None) -> np.ndarray:
    if width is not None and "draw" in ds[name].dims:  # pad this variable only
        ds = pad_draws(ds[[name]], width)
    return np.asarray(ds[name].values).astype(dtype, copy=False)


def assimilate_sharded(prob, *, kwargs: Mapping[str, Any], shard_size: int | None,
                       store: Any = None, storage_options: Mapping[str, Any] | None = None,
                       resume: bool = False, overwrite: bool = False, scheduler: Any = None,
                       progress: bool | None = None) -> xr.Dataset:
    """The sharded run behind :func:`~xproda.sites.assimilation.problem.assimilate` (see there).

    Parameters
    ----------
    prob : SiteProblem
        The whole problem (validated profiles, aligned forcing, fixed parameters).
    kwargs : mapping
        The per-shard options of :func:`assimilate` (model, method, seed, ...; without
        profiles, forcing, fixed and the sharding options).
    shard_size : int or None
        Sites per shard (default :func:`default_shard_size`).
    store, storage_options, resume, overwrite
        Zarr output (:func:`xproda.io.write_zarr`); None keeps the result in memory.
    scheduler : str or dask scheduler, optional
        Passed to dask (default: the active one).
    progress : bool or None, default None
        Progress per shard. None: the option ``progress`` (:func:`xproda.set_options`).

    Returns
    -------
    Dataset
        As the in-process :func:`assimilate`; with ``store`` the store opened lazily.
    """
    from xproda.io.writer import write_zarr
    from xproda.sites.assimilation.problem import assimilate

    kwargs = dict(kwargs)
    if kwargs.get("method") == "batch":
        raise ValueError("assimilate: method='batch' fits one parameter set to all sites "
                         "together and cannot be sharded (shard_size/store); run it in-process")
    if kwargs.get("checkpoint") is not None:
        raise ValueError("assimilate: checkpoint= (the sampler's own checkpoint file) and "
                         "shard_size/store= (resumable shards) do not combine; with shards "
                         "the store is the checkpoint: use store= and resume=True")
    kwargs.pop("checkpoint", None)
    kwargs["progress"] = False
    kwargs["resume"] = False
    S = prob.n_sites
    size = default_shard_size(S, kwargs.get("method", "am")) if shard_size is None \
        else shard_size
    bounds = shard_bounds(S, size)
    skip = np.asarray(prob.no_forcing, dtype=bool)
    any_skipped = bool(skip.any())
    if store is None:
        specs = _specs(prob, bounds, kwargs, any_skipped)
        parts = _compute_shards(specs, scheduler=scheduler, progress=progress)
        some = next(p for p in parts if p is not None)  # a site with forcing exists
        parts = [p if p is not None else _missing_block(some.isel(site=slice(0, 0)),
                                                        specs[i]["batch"])
                 for i, p in enumerate(parts)]
        out = _combine(parts, np.asarray(prob.batch.site_ids)[~skip])
        out.attrs["n_sites_no_forcing"] = int(skip.sum())
        out.attrs["n_shards"] = len(bounds)
        return out
    # a template: the result of one site with usable forcing (its structure, not its values)
    first = np.flatnonzero(~skip)[:1]
    spec = _specs(prob, [(int(first[0]), int(first[0]) + 1)], kwargs, False)[0]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        template = assimilate(spec["batch"], spec["forcing"], fixed=spec["fixed"], **kwargs)
    template = _as_in_process(template, any_skipped)
    if kwargs.get("method") == "reference" and "draw" in template.dims:
        from xproda.sites.assimilation.samplers import max_post_draws

        nsimu2 = (kwargs.get("sampler_options") or {}).get("nsimu2")
        template = pad_draws(template, max_post_draws(nsimu2))
    specs = _specs(prob, bounds, kwargs, any_skipped, template=template.isel(site=slice(0, 0)))
    ds = _lazy(specs, template)
    ds.attrs["n_shards"] = len(bounds)
    ds.attrs["n_sites_no_forcing"] = int(skip.sum())
    ds.attrs = _run_settings(ds.attrs, np.asarray(prob.batch.site_ids)[~skip])
    import contextlib

    import dask

    ctx = dask.config.set(scheduler=scheduler) if scheduler is not None else \
        contextlib.nullcontext()
    with ctx:
        write_zarr(ds, store, storage_options=storage_options, region_dims=["site"],
                   skip_empty=False, resume=resume, overwrite=overwrite, progress=progress,
                   inputs=_inputs(prob, bounds, kwargs))
    from xproda.io.opening import open_dataset

    return open_dataset(store, storage_options=storage_options)
