"""Transient soil-carbon runs on xarray objects: lazy over space, sequential over time.

:func:`simulate` runs the CLM5 model (:mod:`xproda.models.transient`) through time-varying
forcing for every column of a grid (or site table).  The dask graph is one chain of tasks per
spatial block: ``spin-up -> time chunk 1 -> time chunk 2 -> ...``, each task passing the
pools (``[cells, 20, 7]``) to the next, so a block never holds more than one time chunk of
forcing and outputs, and blocks run in parallel.  :func:`write_simulation` streams the run
into a Zarr store time chunk by time chunk and resumes an interrupted run from its last
completed chunk.

Forcing variables carry a ``time`` dim where they vary in time, a ``month`` dim (12) where
they follow a climatology (mapped to each step by the month of its time stamp), or neither
(constant), plus ``layer`` where layered, as in :func:`xproda.xr.api.steady_state`.
"""

from __future__ import annotations

import functools
import itertools
import json
import operator
import os
from typing import Any, Mapping, Sequence

import numpy as np
import xarray as xr

from xproda import conventions, grid
from xproda.models import FLAGS
from xproda.models import transient as ktr
from xproda.models.forcing import FORCING_SCHEMA
from xproda.options import get_options
from xproda.xr import contract, engine
from xproda.xr.engine import gather, kernel_context, scatter

__all__ = ["simulate", "spin_up", "write_simulation", "step_days"]

_L = grid.N_LAYERS
_SERIES = ("soc_stock", "total_carbon", "input", "respiration", "net_flux")


# -------------------------------------------------------------------------------------------
# inputs
# -------------------------------------------------------------------------------------------
def step_days(time: xr.DataArray | None, steps: int, dt: Any = None) -> np.ndarray:
    """Step lengths (days) of a run: ``None`` -> 365/12; ``"calendar"`` -> days in month.

    ``"calendar"`` reads the month lengths of the ``time`` coordinate's calendar (datetime64
    or cftime; monthly steps), as PRODA's transient code does; numbers or arrays are used as
    they are.
    """
    if isinstance(dt, str):
        if dt != "calendar":
            raise ValueError(f"dt must be None, 'calendar', a number or an array, got {dt!r}")
        if time is None or not hasattr(time, "dt"):
            raise ValueError("dt='calendar' needs a datetime-like 'time' coordinate")
        return np.asarray(time.dt.days_in_month.values, dtype=np.float64)
    return ktr.step_lengths(dt, steps).numpy()


def _month_index(time: xr.DataArray | None, steps: int) -> np.ndarray:
    """0-based month of the year of each step (time stamps, else position modulo 12)."""
    if time is not None and hasattr(time, "dt"):
        try:
            return np.asarray(time.dt.month.values, dtype=np.int64) - 1
        except (AttributeError, TypeError):
            pass
    return np.arange(steps, dtype=np.int64) % 12


def _kind(da: xr.DataArray) -> str:
    return "time" if "time" in da.dims else ("month" if "month" in da.dims else "static")


def _forcing_vars(ds: xr.Dataset, model, required: Sequence[str],
                  batch_dims: Sequence[str] = ()) -> tuple[list[xr.DataArray], list[str],
                                                           tuple[str, ...]]:
    """Forcing of a transient run through the input contract: arrays, notes, horizontal dims."""
    problems = contract.forcing_problems(ds, required, steps="time", batch_dims=batch_dims,
                                         model_name=model.name)
    for k in required:
        if k in ds and "month" in ds[k].dims and ds[k].sizes["month"] != 12:
            problems.append(f"{k}: dim 'month' must have 12 entries (a monthly climatology "
                            f"mapped onto the time steps), found {ds[k].sizes['month']}")
    if not any("time" in ds[k].dims for k in required if k in ds):
        problems.append("no forcing variable has a 'time' dim: a transient run needs "
                        "time-varying forcing (see xproda.xr.scenarios.repeat_climatology)")
    contract.raise_problems(problems)
    conf = contract.conform_forcing(ds, required, steps="time", batch_dims=batch_dims,
                                    model_name=model.name)
    return [conf.arrays[k] for k in required], conf.notes, conf.horizontal


def _layout(theta: xr.DataArray, fvars: list[xr.DataArray], time_chunk: int):
    """Common spatial dims and chunks; arrays ordered ``(*spatial, time|month, layer)``."""
    core = ("time", "month", "layer", "parameter")
    spatial: list = []
    for v in [*fvars, theta]:
        spatial += [d for d in v.dims if d not in core and d not in spatial]
    sizes = {}
    for v in [*fvars, theta]:
        sizes.update({d: v.sizes[d] for d in v.dims if d in spatial})
    lazy = any(v.chunks is not None for v in [*fvars, theta])
    chunks: dict = {}
    if lazy:
        for v in [*fvars, theta]:  # forcing first: its spatial chunking is kept
            if v.chunks is None:
                continue
            for d, c in zip(v.dims, v.chunks):
                if d in spatial and d not in chunks:
                    chunks[d] = c
        chunks = {d: chunks.get(d, (sizes[d],)) for d in spatial}

    def arrange(v, tail):
        miss = {d: sizes[d] for d in spatial if d not in v.dims}
        if miss:
            v = v.expand_dims(miss)
        v = v.transpose(*spatial, *[d for d in tail if d in v.dims])
        if lazy:
            want = {d: chunks[d] for d in spatial}
            if "time" in v.dims:
                want["time"] = time_chunk
            for d in ("month", "layer", "parameter"):
                if d in v.dims:
                    want[d] = -1
            v = v.chunk(want)
        return v

    theta = arrange(theta, ("parameter",))
    fvars = [arrange(v, ("time", "month", "layer")) for v in fvars]
    return spatial, sizes, chunks, theta, fvars


# -------------------------------------------------------------------------------------------
# block functions (numpy in, numpy out)
# -------------------------------------------------------------------------------------------
def _kernel_forcing(arrays, names, kinds, nb, month_idx, steps):
    """Kernel-shaped forcing ``[*batch, steps, ...]`` of one block (views where possible)."""
    out = {}
    for name, a, kind in zip(names, arrays, kinds):
        layered = len(FORCING_SCHEMA[name].shape) == 2
        if kind == "month":
            a = np.take(a, month_idx, axis=nb)
        elif kind == "static":
            a = np.expand_dims(a, nb)
            a = np.broadcast_to(a, a.shape[:nb] + (steps,) + a.shape[nb + 1:])
        if layered and a.ndim == nb + 1:  # a layered variable given without layer
            a = np.broadcast_to(a[..., None], a.shape + (_L,))
        out[name] = a
    return out


def _ok_columns(theta, forcing, state, nb):
    """Columns with data: finite parameters (and state) and a first step of every variable."""
    ok = np.isfinite(theta).all(-1)
    if state is not None:
        ok &= np.isfinite(state).all((-1, -2))
    for a in forcing.values():  # cheap probe: the first step of every variable
        first = a[(slice(None),) * nb + (0,)]
        ok &= np.isfinite(first).all(axis=tuple(range(nb, first.ndim))) if first.ndim > nb \
            else np.isfinite(first)
    return ok


def _init_block(theta, *arrays, names, kinds, month_idx, dt, model, opts, mode, options):
    """Initial pools of one block: ``{"state": [*batch, 20, 7], "cycles", "flags"}``."""
    import torch

    nb = theta.ndim - 1
    batch = theta.shape[:-1]
    with kernel_context(opts):
        f = _kernel_forcing(arrays, names, kinds, nb, month_idx, len(dt))
        ok = _ok_columns(theta, f, None, nb)
        all_ok = bool(ok.all())
        state = np.full(batch + (_L, 7), np.nan)
        cycles = np.zeros(batch, dtype=np.int64)
        flags = np.full(batch, FLAGS["no_data"], dtype=np.int64)
        if ok.any():
            th = gather(theta, ok, nb, all_ok)
            fk = {k: gather(a, ok, nb, all_ok) for k, a in f.items()}
            if mode == "spin_up":
                res = model.spin_up(th, fk, dt=dt, **options)
                pools, cyc, flg = res["pools"], res["cycles"], res["flags"]
            else:
                ops = ktr.build_operators(model, model.physical_parameters(torch.as_tensor(th)),
                                          {k: torch.as_tensor(v) for k, v in fk.items()},
                                          torch.as_tensor(dt))
                pools = ktr.mean_state(ops).numpy()
                cyc = np.zeros(len(th), dtype=np.int64)
                flg = np.where(np.isfinite(pools).all((1, 2)), 0, FLAGS["no_data"])
            state[ok], cycles[ok], flags[ok] = pools, cyc, flg
        return {"state": state, "spinup_cycles": cycles, "flags": flags}


def _run_block(init, theta, *arrays, names, kinds, month_idx, dt, model, opts, save_soc):
    """One time chunk of one block from ``init["state"]``: outputs and the new state."""
    state = init["state"]
    nb = theta.ndim - 1
    batch = theta.shape[:-1]
    steps = len(dt)
    with kernel_context(opts):
        f = _kernel_forcing(arrays, names, kinds, nb, month_idx, steps)
        ok = _ok_columns(theta, f, state, nb)
        all_ok = bool(ok.all())
        res = {"state": np.full(batch + (_L, 7), np.nan)}
        keys = _SERIES + (("soc",) if save_soc else ())
        if not ok.any():
            for k in keys:
                res[k] = np.full(batch + ((steps, _L) if k == "soc" else (steps,)), np.nan)
            return res
        sim = model.simulate(gather(theta, ok, nb, all_ok),
                             {k: gather(a, ok, nb, all_ok) for k, a in f.items()},
                             x0=gather(state, ok, nb, all_ok), dt=dt, save_soc=save_soc)
        scale = {"soc_stock": 1e-3, "total_carbon": 1e-3}  # g m-2 -> kg m-2
        res["state"][ok] = sim["pools"]
        for k in keys:
            v = sim[k] * scale.get(k, 1.0)
            tail = v.shape[1:]
            res[k] = v.reshape(batch + tail) if all_ok else scatter(v, ok, batch, tail)
        return res


# -------------------------------------------------------------------------------------------
# graph
# -------------------------------------------------------------------------------------------
def _plan(ds, params, *, model, reference, normalised, model_options, time_chunk, dt,
          spin_up_forcing, batch_dims=()):
    m = engine.resolve_model(model, reference, model_options)
    if m.name != "clm5":
        raise NotImplementedError(
            f"transient runs are implemented for the linear CLM5 model; got {m.name!r}")
    if "time" not in ds.dims:
        raise ValueError("forcing needs a 'time' dim for a transient run (found dims "
                         f"{tuple(ds.dims)}); see xproda.xr.scenarios.repeat_climatology")
    if int(time_chunk) < 1:
        raise ValueError(f"time_chunk must be >= 1, got {time_chunk!r}")
    required = list(m.required_forcing)
    fvars, notes, horizontal = _forcing_vars(ds, m, required, batch_dims)
    T = ds.sizes["time"]
    time = ds["time"] if "time" in ds.coords else None
    days = step_days(time, T, dt)
    months = _month_index(time, T)
    theta = engine.parameters_to_dataarray(params, m, normalised=normalised)
    ref = next(v for v in fvars if "time" in v.dims)
    theta = engine.align_params(theta, ref, horizontal=horizontal, batch_dims=batch_dims)
    theta = theta.drop_vars([c for c in theta.coords if c not in theta.indexes and c in ds.coords])
    spatial, sizes, chunks, theta, fvars = _layout(theta, fvars, int(time_chunk))
    # forcing of the spin-up period: the first year of the run, or a given climatology
    if spin_up_forcing is None:
        period = min(12, T)
        sp_vars = [v.isel(time=slice(0, period)) if "time" in v.dims else v for v in fvars]
        sp_days, sp_months = days[:period], months[:period]
    else:
        sp_T = spin_up_forcing.sizes.get("time", 12)
        sp_time = spin_up_forcing["time"] if "time" in spin_up_forcing.coords else None
        sp_vars, sp_notes, _ = _forcing_vars(
            spin_up_forcing if "time" in spin_up_forcing.dims
            else _as_time(spin_up_forcing), m, required, batch_dims)
        notes = notes + [f"spin-up forcing: {n}" for n in sp_notes]
        if isinstance(dt, str):
            sp_days = step_days(sp_time, sp_T, dt if sp_time is not None else None)
        else:  # one number applies to the spin-up too; per-step lengths belong to the run
            sp_days = step_days(None, sp_T, dt if np.ndim(dt) == 0 else None)
        sp_months = _month_index(sp_time, sp_T)
        _, _, _, _, sp_vars = _layout(theta, sp_vars, sp_T)
    sp_vars = [v.chunk({"time": -1}) if "time" in v.dims and v.chunks is not None else v
               for v in sp_vars]
    return dict(model=m, names=tuple(required), fvars=fvars, theta=theta, spatial=spatial,
                sizes=sizes, chunks=chunks, days=days, months=months, sp_vars=sp_vars,
                sp_days=sp_days, sp_months=sp_months, T=T, time=time, notes=tuple(notes))


def _as_time(clim: xr.Dataset) -> xr.Dataset:
    """A 12-month climatology (``month`` dims) as 12 time steps."""
    out = clim.copy()
    for k, v in clim.data_vars.items():
        if "month" in v.dims:
            out[k] = v.rename(month="time")
    if "month" in out.coords:
        out = out.drop_vars("month")
    return out


def _x0_state(x0, plan) -> np.ndarray | xr.DataArray:
    pools = x0["pools"] if isinstance(x0, xr.Dataset) else x0
    if not isinstance(pools, xr.DataArray) or not {"layer", "pool"} <= set(pools.dims):
        raise ValueError("x0 must be 'spin_up', 'steady_state' or pools with dims "
                         "(layer, pool, <spatial>) in g m-3 (e.g. steady_state(..., pools=True) "
                         "or a previous simulate result)")
    pools = engine.strip(pools).transpose(*plan["spatial"], "layer", "pool")
    if pools.sizes["pool"] != 7 or pools.sizes["layer"] != _L:
        raise ValueError(f"x0 pools must have 20 layers and 7 pools, got {dict(pools.sizes)}")
    return pools


def simulate(
    ds: xr.Dataset,
    params: xr.DataArray | xr.Dataset,
    *,
    model: str = "clm5",
    x0: Any = "spin_up",
    spin_up_forcing: xr.Dataset | None = None,
    spin_up_options: Mapping[str, Any] | None = None,
    dt: Any = None,
    time_chunk: int = 120,
    save_soc: bool = False,
    normalised: bool = True,
    reference: bool = False,
    batch_dims: Sequence[str] = (),
    **model_options: Any,
) -> xr.Dataset:
    """Transient soil carbon of every column under time-varying forcing (lazy with dask).

    Parameters
    ----------
    ds : Dataset
        Forcing as for :func:`xproda.xr.api.steady_state` with a ``time`` dim on the
        variables that change (``month`` climatologies and constant variables are allowed;
        see :mod:`xproda.xr.scenarios` to build scenarios).  Litter inputs in g C m-2 month-1.
    params : DataArray or Dataset
        Normalised parameters (``parameter`` dim) on the grid or one set for all cells.
    model : str, default "clm5"
    x0 : {"spin_up", "steady_state"} or Dataset/DataArray, default "spin_up"
        Initial pools: periodic state of ``spin_up_forcing`` (default: the first 12 steps),
        the steady state of its mean operator, or pools ``(layer, pool, <spatial>)`` (g m-3),
        e.g. ``steady_state(..., pools=True)`` or the ``pools`` of a previous run.
    spin_up_forcing : Dataset, optional
        Forcing of the spin-up period (``month`` or ``time`` dims), e.g. a pre-industrial
        climatology.
    spin_up_options : mapping, optional
        ``tol``, ``max_cycles``, ``method`` of :func:`xproda.models.transient.spin_up`.
    dt : None, "calendar", float or array
        Step lengths in days: default 365/12 (see :mod:`xproda.models.transient`),
        ``"calendar"`` for the month lengths of the time coordinate.
    time_chunk : int, default 120
        Steps per task; memory per spatial block grows with it, not with the run length.
    save_soc : bool
        Also return ``soc`` ``(time, layer, <spatial>)`` (g m-3).
    normalised, reference, batch_dims, **model_options
        As for :func:`xproda.xr.api.steady_state`.

    Returns
    -------
    Dataset
        ``soc_stock`` and ``total_carbon`` (kg m-2, end of each step), ``input``,
        ``respiration`` and ``net_flux`` (g m-2 yr-1, step means) with dims
        ``(time, <spatial>)``; ``initial_soc_stock`` (kg m-2), ``pools`` (final state,
        ``(layer, pool, <spatial>)``, g m-3: pass it as ``x0`` to continue),
        ``spinup_cycles`` and ``flags``.  Lazy where the input is dask-backed.

    Examples
    --------
    >>> import numpy as np, xarray as xr, xproda
    >>> from xproda.testing import forcing_dataset
    >>> from xproda.xr.scenarios import repeat_climatology
    >>> fc = repeat_climatology(forcing_dataset(ny=2, nx=3), years=2)
    >>> out = fc.proda.simulate(xr.DataArray(np.full(21, 0.5), dims="parameter"))
    >>> out["soc_stock"].dims, out.sizes["time"]
    (('time', 'lat', 'lon'), 24)
    """
    plan = _plan(ds, params, model=model, reference=reference, normalised=normalised,
                 model_options=model_options, time_chunk=time_chunk, dt=dt,
                 spin_up_forcing=spin_up_forcing, batch_dims=batch_dims)
    if isinstance(x0, str):
        if x0 not in ("spin_up", "steady_state"):
            raise ValueError(f"x0 must be 'spin_up', 'steady_state' or pools, got {x0!r}")
        init = None
    else:
        init = _x0_state(x0, plan)
    arrays = _build(plan, init, x0 if isinstance(x0, str) else "given",
                    dict(spin_up_options or {}), int(time_chunk), save_soc)
    return _assemble(plan, arrays, ds, save_soc)


def _build(plan, init, mode, su_opts, time_chunk, save_soc):
    """The outputs as numpy (eager) or dask arrays ``(*spatial, time[, layer])`` etc."""
    m, names, opts = plan["model"], plan["names"], get_options()
    kinds = tuple(_kind(v) for v in plan["fvars"])
    sp_kinds = tuple(_kind(v) for v in plan["sp_vars"])
    T = plan["T"]
    bounds = list(range(0, T, time_chunk)) + [T]
    init_fn = functools.partial(_init_block, names=names, kinds=sp_kinds,
                                month_idx=plan["sp_months"], dt=plan["sp_days"], model=m,
                                opts=opts, mode=mode, options=su_opts)
    if plan["fvars"][0].chunks is not None or plan["theta"].chunks is not None or (
            isinstance(init, xr.DataArray) and init.chunks is not None):
        return _build_dask(plan, init, init_fn, kinds, save_soc)
    th = np.asarray(plan["theta"].values)
    if init is None:
        state = init_fn(th, *[np.asarray(v.values) for v in plan["sp_vars"]])
    else:
        state = _given_state(init.values)
    first = state
    parts = []
    for t0, t1 in zip(bounds[:-1], bounds[1:]):
        blocks = [np.asarray(v.isel(time=slice(t0, t1)).values) if k == "time"
                  else np.asarray(v.values) for v, k in zip(plan["fvars"], kinds)]
        state = _run_block(state, th, *blocks, names=names, kinds=kinds,
                           month_idx=plan["months"][t0:t1], dt=plan["days"][t0:t1], model=m,
                           opts=opts, save_soc=save_soc)
        parts.append(state)
    out = {k: np.concatenate([p[k] for p in parts], axis=th.ndim - 1)
           for k in parts[0] if k != "state"}
    out["pools"] = state["state"]
    out["initial_pools"] = first["state"]
    out["spinup_cycles"] = first["spinup_cycles"]
    out["init_flags"] = first["flags"]
    return out


def _build_dask(plan, init, init_fn, kinds, save_soc):
    import dask.array as dsa
    from dask.base import tokenize
    from dask.highlevelgraph import HighLevelGraph

    m, names, opts = plan["model"], plan["names"], get_options()
    spatial, chunks = plan["spatial"], plan["chunks"]
    ns = len(spatial)

    def as_dask(v):
        if v.chunks is None:
            want = {d: chunks[d] for d in spatial}
            want.update({d: -1 for d in v.dims if d not in spatial})
            v = v.chunk(want)
        return v.data

    theta = as_dask(plan["theta"])
    fv = [as_dask(v) for v in plan["fvars"]]
    sv = [as_dask(v) for v in plan["sp_vars"]]
    iv = as_dask(init) if init is not None else None
    tchunks = next(a.chunks[ns] for a, k in zip(fv, kinds) if k == "time")
    tb = np.concatenate([[0], np.cumsum(tchunks)])
    token = tokenize(theta, *fv, *sv, iv, init_fn.keywords["mode"], init_fn.keywords["options"],
                     save_soc, m.options, opts, plan["days"], plan["months"], plan["sp_days"])
    init_name, run_name = f"simulate-init-{token}", f"simulate-run-{token}"
    dsk: dict = {}
    grid_idx = list(itertools.product(*[range(len(chunks[d])) for d in spatial]))

    def key(a, b, extra=()):
        return (a.name, *b, *extra, *([0] * (a.ndim - ns - len(extra))))

    for b in grid_idx:
        if iv is None:
            dsk[(init_name, *b)] = (init_fn, key(theta, b), *[key(a, b) for a in sv])
        else:
            dsk[(init_name, *b)] = (_given_state, key(iv, b))
        prev = (init_name, *b)
        for c in range(len(tchunks)):
            fn = functools.partial(_run_block, names=names, kinds=kinds,
                                   month_idx=plan["months"][tb[c]:tb[c + 1]],
                                   dt=plan["days"][tb[c]:tb[c + 1]], model=m, opts=opts,
                                   save_soc=save_soc)
            args = [key(a, b, (c,)) if k == "time" else key(a, b) for a, k in zip(fv, kinds)]
            dsk[(run_name, *b, c)] = (fn, prev, key(theta, b), *args)
            prev = (run_name, *b, c)
    deps = [theta, *fv, *sv] + ([iv] if iv is not None else [])
    sp_chunks = tuple(chunks[d] for d in spatial)
    specs = {}

    layers: dict = {}

    def extract(name, src, field, chunk_tail, per_time):
        g = layers.setdefault(name, {})
        for b in grid_idx:
            if per_time:
                for c in range(len(tchunks)):
                    g[(name, *b, c, *([0] * (len(chunk_tail) - 1)))] = (
                        operator.getitem, (run_name, *b, c), field)
            else:
                last = (run_name, *b, len(tchunks) - 1) if src == "final" else (init_name, *b)
                g[(name, *b, *([0] * len(chunk_tail)))] = (operator.getitem, last, field)
        specs[field if field != "state" else src] = (name, sp_chunks + tuple(chunk_tail),
                                                     field)

    for k in _SERIES:
        extract(f"simulate-{k}-{token}", None, k, (tchunks,), True)
    if save_soc:
        extract(f"simulate-soc-{token}", None, "soc", (tchunks, (_L,)), True)
    extract(f"simulate-pools-{token}", "final", "state", ((_L,), (7,)), False)
    extract(f"simulate-x0-{token}", "init", "state", ((_L,), (7,)), False)
    extract(f"simulate-cycles-{token}", "init", "spinup_cycles", (), False)
    extract(f"simulate-iflags-{token}", "init", "flags", (), False)
    merged = HighLevelGraph.merge(*[d.__dask_graph__() for d in deps])
    all_layers = dict(merged.layers)
    all_deps = dict(merged.dependencies)
    all_layers[run_name] = dsk  # the chains: init and run tasks of every block
    all_deps[run_name] = {d.name for d in deps}
    for name, g in layers.items():  # one layer per output, each reading the chains
        all_layers[name] = g
        all_deps[name] = {run_name}
    hg = HighLevelGraph(all_layers, all_deps)
    out = {}
    rename = {"final": "pools", "init": "initial_pools", "flags": "init_flags"}
    for field, (name, chunks_all, f) in specs.items():
        shape = tuple(sum(c) for c in chunks_all)
        dtype = np.int64 if f in ("spinup_cycles", "flags") else np.float64
        out[rename.get(field, field)] = dsa.Array(
            hg, name, chunks=chunks_all, shape=shape,
            meta=np.empty((0,) * len(shape), dtype=dtype))
    return out


def _given_state(st):
    st = np.asarray(st, dtype=np.float64)
    return {"state": st, "spinup_cycles": np.zeros(st.shape[:-2], np.int64),
            "flags": np.where(np.isfinite(st).all((-1, -2)), 0, FLAGS["no_data"])}


def _assemble(plan, arrays, ds, save_soc) -> xr.Dataset:
    spatial = plan["spatial"]
    coords = {}
    if plan["time"] is not None:
        coords["time"] = plan["time"]
    out = xr.Dataset(coords=coords)
    for k in _SERIES:
        da = xr.DataArray(arrays[k], dims=(*spatial, "time")).transpose("time", *spatial)
        da.attrs = conventions.attrs(k, section="transient")
        out[k] = da
    if save_soc:
        da = xr.DataArray(arrays["soc"], dims=(*spatial, "time", "layer"))
        out["soc"] = da.transpose("time", "layer", *spatial).assign_attrs(
            conventions.attrs("soc", section="transient"))
    dzs = xr.DataArray(grid.DZ[:_L], dims="layer")
    x0 = xr.DataArray(arrays["initial_pools"], dims=(*spatial, "layer", "pool"))
    out["initial_soc_stock"] = ((x0.isel(pool=slice(4, 7)).sum("pool", skipna=False) * dzs)
                                .sum("layer", skipna=False) / 1000.0).assign_attrs(
        conventions.attrs("initial_soc_stock", section="transient"))
    out["pools"] = xr.DataArray(arrays["pools"], dims=(*spatial, "layer", "pool")).transpose(
        "layer", "pool", *spatial).assign_attrs(conventions.attrs("pools", section="transient"))
    out["spinup_cycles"] = xr.DataArray(arrays["spinup_cycles"], dims=spatial).assign_attrs(
        conventions.attrs("spinup_cycles"))
    fl = xr.DataArray(arrays["init_flags"], dims=spatial)
    finite = np.isfinite(out["soc_stock"].isel(time=-1))
    fl = fl | xr.where(finite | (fl & FLAGS["no_data"] > 0), 0, FLAGS["no_data"])
    out["flags"] = fl.astype(np.int64).assign_attrs(conventions.attrs("flags"))
    out["flags"].encoding["fill_value"] = FLAGS["no_data"]
    out = out.assign_coords(conventions.layer_coords())
    out = out.assign_coords(pool=("pool", list(plan["model"].pools),
                                  conventions.attrs("pool", section="coordinates")))
    out = engine.spatial_metadata(out, ds)
    from xproda import __version__

    out.attrs = engine.global_attrs(
        title="Transient soil organic carbon (clm5 model)",
        source=f"xproda {__version__} clm5 model, backward Euler steps "
               f"({'reference' if plan['model'].options.reference else 'corrected'} mode)",
        action="simulate(model='clm5')", notes=plan["notes"])
    return out


def spin_up(
    ds: xr.Dataset,
    params: xr.DataArray | xr.Dataset,
    *,
    model: str = "clm5",
    tol: float = 1e-10,
    max_cycles: int = 200,
    method: str = "semi_analytic",
    dt: Any = None,
    normalised: bool = True,
    reference: bool = False,
    batch_dims: Sequence[str] = (),
    **model_options: Any,
) -> xr.Dataset:
    """Periodic state of cyclic forcing (a ``month`` climatology or one period of ``time``).

    Returns ``pools`` ``(layer, pool, <spatial>)`` (g m-3; pass as ``x0`` of
    :func:`simulate`), ``soc_stock`` (kg m-2), ``spinup_cycles`` and ``flags`` (see
    :func:`xproda.models.transient.spin_up`).  Lazy where the input is.
    """
    clim = ds if "time" in ds.dims else _as_time(ds)
    # one period of output is run after the spin-up; only the initial state is kept
    res = simulate(clim, params, model=model, x0="spin_up", spin_up_forcing=clim,
                   spin_up_options={"tol": tol, "max_cycles": max_cycles, "method": method},
                   dt=dt, time_chunk=clim.sizes["time"], normalised=normalised,
                   reference=reference, batch_dims=batch_dims, **model_options)
    out = res[["pools", "spinup_cycles", "flags"]].copy()
    out["soc_stock"] = res["initial_soc_stock"]
    out.attrs = dict(res.attrs, title="Periodic (spun-up) soil carbon state (clm5 model)",
                     history=conventions.history_line(f"spin_up(method={method!r})"))
    return out


def write_simulation(
    ds: xr.Dataset,
    params: xr.DataArray | xr.Dataset,
    store: str | os.PathLike,
    *,
    time_chunk: int = 120,
    resume: bool = False,
    overwrite: bool = False,
    storage_options: Mapping[str, Any] | None = None,
    progress: bool | None = None,
    **options: Any,
) -> xr.Dataset:
    """Run :func:`simulate` into a Zarr store, one time chunk after another, resumably.

    Each time chunk is computed for every spatial block (in parallel), written into its own
    region of the store, and the pools at its end are saved in the store's progress group
    with the number of steps done (root attribute ``xproda_steps_done``).  Memory holds one
    time chunk of every block, whatever the run length.  With ``resume=True`` an interrupted
    run continues after its last completed chunk and ends identical to an uninterrupted one.

    The store follows xproda's resumable-write protocol (as :func:`xproda.io.write_zarr`):
    the whole call holds the store's lock; the fingerprint covers the digests of the forcing,
    the parameters, the initial state and every option (read once, blockwise), ``time_chunk``
    and the xproda version, so a resume with anything else is refused naming what differs;
    every chunk written is recorded (size, digest) for :func:`xproda.io.integrity.verify`.

    Parameters
    ----------
    ds, params, **options
        As for :func:`simulate`.
    store : str or os.PathLike
        Local path or fsspec URL.
    time_chunk : int, default 120
    resume, overwrite : bool
        Continue an existing store / replace it.  Without either an existing store raises.
        With both, a store of another run is replaced instead of refused.
    storage_options : mapping, optional
        fsspec options for URLs.
    progress : bool or None, default None
        Progress bar over the time chunks.
        None: the option ``progress`` (:func:`xproda.set_options`).

    Returns
    -------
    Dataset
        The store, opened lazily.

    Raises
    ------
    FileExistsError
        If the store exists and neither ``resume`` nor ``overwrite`` is set.
    xproda.errors.StoreError
        On ``resume``, if the store holds another run (the message lists what differs).
    xproda.errors.StoreLockedError
        If another process is writing the store.

    Notes
    -----
    A finished store found damaged on ``resume`` (a missing or truncated chunk) is computed
    again from the start: a transient run cannot restart in the middle without the state
    of that time, which is not kept once the run is finished.
    """
    import warnings

    from xproda.io.digest import digest_inputs
    from xproda.io.locking import store_lock
    from xproda.io.stores import target as store_target

    target = store_target(store, storage_options)
    if not isinstance(time_chunk, (int, np.integer)) or time_chunk < 1:
        raise ValueError(f"write_simulation: time_chunk must be a positive int, got "
                         f"{time_chunk!r}")
    T = ds.sizes["time"]
    x0 = options.pop("x0", "spin_up")
    # the spin-up period is the run's first year (not the first time chunk), as in simulate
    spin = options.pop("spin_up_forcing", None)
    if spin is None and isinstance(x0, str):
        spin = ds.isel(time=slice(0, min(12, T)))
    digests = digest_inputs({
        "forcing": ds, "params": params, "spin_up_forcing": spin,
        "x0": {"mode": x0} if isinstance(x0, str) else x0,  # a str is not a path here
        "options": {str(k): v for k, v in sorted(options.items())},
        "run": {"time_chunk": int(time_chunk), "steps": int(T)},
    })
    with store_lock(target):
        return _write_simulation(ds, params, target, x0=x0, spin=spin, digests=digests,
                                 time_chunk=int(time_chunk), resume=resume,
                                 overwrite=overwrite, progress=progress, options=options,
                                 warn=warnings.warn)


_STATE = "state_"  # progress group member holding the pools after a time chunk


def _write_simulation(ds, params, target, *, x0, spin, digests, time_chunk, resume, overwrite,
                      progress, options, warn):
    import hashlib
    import json

    from xproda import __version__, io
    from xproda.errors import StoreError
    from xproda.io import integrity as iv
    from xproda.io import stores as st

    kw = target.xr_kwargs()
    T = ds.sizes["time"]
    bounds = list(range(0, T, time_chunk)) + [T]
    spec = {"inputs": digests, "version": str(__version__), "protocol": 1}
    fp = hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()
    new_attrs = {st.ATTR_INPUTS: digests, st.ATTR_VERSION: str(__version__)}
    done = 0
    root = st.read_root(target)
    exists = root is not None or st.is_nonempty(target)
    if exists and not (resume or overwrite):
        raise FileExistsError(f"write_simulation: store {target.url!r} exists; pass "
                              "resume=True to continue it or overwrite=True to replace it")
    fresh = True
    if exists and resume:
        old = (root or {}).get("attributes", {})
        if old.get(st.ATTR_FINGERPRINT) != fp:
            if not overwrite:
                diffs = st.attr_differences(old, new_attrs) or [
                    "the store was not written by this protocol (no matching fingerprint)"]
                raise StoreError(
                    f"write_simulation: cannot resume {target.url!r}: it holds another run. "
                    "Differences: " + "; ".join(diffs[:8]) + ". Use the original call, or "
                    "pass overwrite=True to start over")
        elif old.get(st.ATTR_COMPLETE) == 1:
            report = iv.inspect_store(target, checksums=False)[0]
            if report.ok:  # leftovers of a kill during the cleanup go
                st.remove_markers(target)
                _drop_states(target, keep=None)
                return xr.open_zarr(consolidated=False, **kw)
            warn(f"write_simulation: {target.url!r} is damaged ({len(report.problems)} "
                 "object(s), e.g. " + "; ".join(f"{k}: {v}" for k, v in
                                                list(report.problems.items())[:3])
                 + "); computing the run again from the start", RuntimeWarning, stacklevel=3)
        elif st.read_progress_attrs(target) is not None:
            done = int(old.get("xproda_steps_done", 0))
            fresh = False
            if done > 0:
                x0 = xr.open_zarr(consolidated=False, group=f"{st.PROGRESS_GROUP}/{_STATE}{done}",
                                  **kw)["pools"].load()
    if exists and fresh:
        st.remove_store(target)
    if not fresh:
        st.remove_partials(target)
    from xproda.options import progress_bar

    bar = progress_bar(progress, total=len(bounds) - 1, desc="time chunks", unit="chunk",
                       initial=sum(1 for b in bounds[1:] if b <= done))
    first = done == 0
    series_names: list[str] = []
    metas: dict = {}  # array metadata of the series variables, for their chunk keys
    for k, (t0, t1) in enumerate(zip(bounds[:-1], bounds[1:])):
        if t1 <= done:
            continue
        part = simulate(ds.isel(time=slice(t0, t1)), params, x0=x0,
                        spin_up_forcing=spin if first else None,
                        time_chunk=t1 - t0, **options)
        part = part.compute()
        series_names = [str(n) for n in part.data_vars if "time" in part[n].dims]
        if first and fresh:  # metadata, coordinates and the time-less variables
            tmpl = st.stable_strings(conventions.cf_finalize(_template(part, ds, T)))
            tmpl.attrs.update({st.ATTR_FINGERPRINT: fp, st.ATTR_COMPLETE: 0, **new_attrs})
            enc = {n: {"compressors": io.default_compressors()}
                   for n in tmpl.variables if tmpl[n].ndim}
            for n, e in conventions.cf_encoding(tmpl).items():  # coordinates, bounds: no fill
                enc.setdefault(n, {}).update(e)
            tmpl.to_zarr(mode="w", compute=False, consolidated=False, zarr_format=3,
                         encoding=enc, **kw)
            st.mark_template_done(target, {
                st.ATTR_FINGERPRINT: fp, "manifest_version": iv.MANIFEST_VERSION,
                "template": iv.template_objects(target, skip=series_names)})
            fresh = False
        first = False
        series = _data_only(part[series_names])
        series.to_zarr(mode="r+", consolidated=False, **kw,
                       region={d: slice(t0, t1) if d == "time" else slice(None)
                               for d in series.dims})
        # the pools at t1, then the chunk's record, then the step count (one atomic write)
        st.stable_strings(_data_only(part[["pools", "flags"]])).to_zarr(
            mode="w", consolidated=False, zarr_format=3,
            group=f"{st.PROGRESS_GROUP}/{_STATE}{t1}", **kw)
        keys = _series_keys(target, series, k, metas)
        st.write_marker(target, st.marker_key((k,)), {
            **st.region_attrs("written", {"time": (t0, t1)}),
            "objects": iv.describe_objects(target, keys)})
        _set_done(target, t1)
        _drop_states(target, keep=t1)
        x0 = part["pools"]
        bar.update(1)
    bar.close()
    # finalize: the last pools and flags, the manifest, the completion flag, cleanup
    last = xr.open_zarr(consolidated=False, group=f"{st.PROGRESS_GROUP}/{_STATE}{T}", **kw)
    state = _data_only(last[["pools", "flags"]]).load()
    state.to_zarr(mode="r+", consolidated=False, **kw,
                  region={d: slice(None) for d in state.dims})
    exp = iv.expected_objects(target)
    if not series_names:
        opened = xr.open_zarr(consolidated=False, **kw)
        series_names = [str(n) for n in opened.data_vars if "time" in opened[n].dims]
    manifest = {st.ATTR_FINGERPRINT: fp, "manifest_version": iv.MANIFEST_VERSION,
                "template": iv.template_objects(target, skip=series_names),
                "regions": {st.marker_key(i): r for i, r in sorted(exp.records.items())}}
    st.mark_template_done(target, manifest)
    st.set_root_attrs(target, {st.ATTR_COMPLETE: 1})
    st.remove_markers(target)
    _drop_states(target, keep=None)
    return xr.open_zarr(consolidated=False, **kw)


def _series_keys(target, series: xr.Dataset, k: int, metas: dict) -> list[str]:
    """Chunk keys of time chunk ``k`` of every series variable (one chunk per variable).

    ``metas`` caches each array's metadata document (read once per run).
    """
    from xproda.io.integrity import chunk_key

    fs, root = target.fs()
    keys = []
    for name, var in series.data_vars.items():
        if name not in metas:
            metas[name] = json.loads(fs.cat_file(f"{root}/{name}/zarr.json"))
        keys.append(f"{name}/" + chunk_key(metas[name],
                                           [k if d == "time" else 0 for d in var.dims]))
    return keys


def _drop_states(target, keep: int | None) -> None:
    """Remove saved states of earlier time chunks (all of them with ``keep=None``)."""
    from xproda.io.stores import remove_progress_entries

    remove_progress_entries(
        target, lambda name: name.startswith(_STATE) and name != f"{_STATE}{keep}")


def _data_only(ds: xr.Dataset) -> xr.Dataset:
    """Data variables with their dims' index coordinates only (region writes)."""
    return ds.drop_vars([c for c in ds.coords if c not in ds.dims])


def _template(part: xr.Dataset, ds: xr.Dataset, T: int) -> xr.Dataset:
    """Lazy full-length template of a run from its first time chunk."""
    import dask.array as dsa

    out = part.drop_dims("time")
    if "time" in ds.coords:
        out = out.assign_coords(time=ds["time"])
    for k, v in part.data_vars.items():
        if "time" in v.dims:
            shape = tuple(T if d == "time" else v.sizes[d] for d in v.dims)
            chunks = tuple(part.sizes["time"] if d == "time" else v.sizes[d] for d in v.dims)
            out[k] = xr.DataArray(dsa.full(shape, np.nan, chunks=chunks, dtype=v.dtype),
                                  dims=v.dims, attrs=v.attrs)
    out.attrs = dict(part.attrs, xproda_steps_done=0)
    return out


def _set_done(target, steps: int) -> None:
    from xproda.io.stores import set_root_attrs

    set_root_attrs(target, {"xproda_steps_done": int(steps)})
