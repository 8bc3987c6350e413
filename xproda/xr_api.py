"""xarray functions behind the ``.proda`` accessor (lazy, chunk-invariant, metadata-aware).

Every function takes and returns xarray objects, calls the torch kernels through
:func:`xarray.apply_ufunc` (``dask="parallelized"``) or :func:`dask.array.blockwise`, and
attaches metadata from :mod:`xproda.conventions`.  Nothing is computed while the graph is
built; numpy-backed input gives numpy-backed output; results do not depend on chunking
because every soil column is independent.

Dims (see ARCHITECTURE.md): forcing variables carry ``month`` (12) and/or ``layer`` (20, or
more: the first 20 are used) plus any spatial dims (found by name through cf-xarray); the
parameters carry ``parameter``.  All non-core dims are treated as batch dims, so a site table
(``site``) works exactly like a lat/lon grid.
"""

from __future__ import annotations

import functools
import operator
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import xarray as xr

from . import conventions, grid
from .models import FLAGS, get_model
from .models.base import SoilCarbonModel
from .models.forcing import FORCING_SCHEMA
from .options import get_options, set_options

__all__ = [
    "steady_state",
    "predict_parameters",
    "soc_stock",
    "turnover_time",
    "cell_area",
    "global_total",
    "sample_sites",
    "validate",
    "parameters_to_dataarray",
    "forcing_arrays",
]

CORE_DIMS = ("month", "layer")
_N_LAYERS = grid.N_LAYERS
_CELSIUS = {"degc", "deg_c", "c", "celsius", "degree_celsius", "degrees_celsius", "°c"}
_KELVIN = {"k", "kelvin", "degk", "deg_k", "degrees_kelvin"}
_DEPTH_UNITS_BAD = {"cm", "mm", "centimeter", "centimetre", "millimeter", "millimetre"}


# -------------------------------------------------------------------------------------------
# helpers
# -------------------------------------------------------------------------------------------
def _get_model(model: str | SoilCarbonModel, reference: bool, options: Mapping) -> SoilCarbonModel:
    if isinstance(model, SoilCarbonModel):
        if options or reference:
            raise TypeError("pass reference/model options to get_model, not with a model instance")
        return model
    return get_model(model, reference=reference, **options)


def _core_of(name: str) -> tuple[str, ...]:
    """Kernel core dims of forcing variable ``name`` from its schema shape."""
    shape = FORCING_SCHEMA[name].shape
    if shape == (12, _N_LAYERS):
        return ("month", "layer")
    if shape == (12,):
        return ("month",)
    if shape == (_N_LAYERS,):
        return ("layer",)
    raise AssertionError(shape)  # pragma: no cover


def _is_dask(obj: xr.DataArray | xr.Dataset) -> bool:
    if isinstance(obj, xr.Dataset):
        return any(v.chunks is not None for v in obj.data_vars.values())
    return obj.chunks is not None


def _single_chunk(obj, dims: Sequence[str]):
    """Rechunk ``dims`` to one chunk where the object is dask-backed and split along them."""
    if not _is_dask(obj):
        return obj
    # the data's chunks (coordinates, e.g. lazy lat/lon on a cell dim, may be chunked otherwise)
    vs = [obj] if isinstance(obj, xr.DataArray) else list(obj.data_vars.values())
    chunks = {d: c for v in vs if v.chunks is not None for d, c in zip(v.dims, v.chunks)}
    todo = {d: -1 for d in dims if d in chunks and len(chunks[d]) > 1}
    return obj.chunk(todo) if todo else obj


def _units_of(da: xr.DataArray) -> str | None:
    u = da.attrs.get("units")
    return None if u is None else str(u).strip()


def _check_forcing(ds: xr.Dataset, model: SoilCarbonModel, required: Sequence[str]) -> list[str]:
    """Problems of the forcing that are visible without reading data."""
    problems: list[str] = []
    missing = [k for k in required if k not in ds.variables]
    if missing:
        listing = ", ".join(
            f"{k} [{FORCING_SCHEMA[k].units}] dims ({', '.join(_core_of(k))}, <spatial>)"
            for k in missing
        )
        problems.append(
            f"missing forcing variable(s) for model {model.name!r}: {listing}; "
            f"found variables {sorted(map(str, ds.data_vars))}"
        )
    for k in required:
        if k not in ds.variables:
            continue
        da = ds[k]
        core = _core_of(k)
        if "month" in da.dims and da.sizes["month"] != 12:
            problems.append(f"{k}: dim 'month' must have 12 entries (a monthly climatology), "
                            f"found {da.sizes['month']}")
        if "layer" in core and "layer" not in da.dims:
            problems.append(f"{k}: expected dims ({', '.join(core)}, <spatial>) with a 'layer' "
                            f"dim of >= {_N_LAYERS} soil layers, found dims {da.dims}")
        elif "layer" in da.dims and da.sizes["layer"] < _N_LAYERS:
            problems.append(f"{k}: dim 'layer' must have >= {_N_LAYERS} soil layers (the first "
                            f"{_N_LAYERS} are used), found {da.sizes['layer']}")
        extra = [d for d in ("month", "layer") if d in da.dims and d not in core]
        if extra:
            problems.append(f"{k}: unexpected dim(s) {extra}; expected ({', '.join(core)}, "
                            "<spatial>)")
        if not np.issubdtype(da.dtype, np.number):
            problems.append(f"{k}: expected a numeric variable, found dtype {da.dtype}")
        units = _units_of(da)
        if units is not None:
            ul = units.lower().replace(" ", "_")
            if k == "TSOI" and ul in _CELSIUS:
                problems.append(f"TSOI: soil temperature must be in K, found units {units!r} "
                                "(add 273.15 and set units='K')")
            elif k == "TSOI" and ul not in _KELVIN:
                problems.append(f"TSOI: soil temperature must be in K, found units {units!r}")
            elif k in ("ALTMAX", "ALTMAX_LASTYEAR") and ul in _DEPTH_UNITS_BAD:
                problems.append(f"{k}: active-layer depth must be in m, found units {units!r}")
    return problems


def parameters_to_dataarray(
    params: xr.DataArray | xr.Dataset,
    model: str | SoilCarbonModel = "clm5",
    *,
    normalised: bool = True,
) -> xr.DataArray:
    """Normalised parameters as one DataArray with a ``parameter`` dim in the model's order.

    Parameters
    ----------
    params : DataArray or Dataset
        A DataArray with a ``parameter`` dim (its coordinate names the parameters; without a
        coordinate the model's order is assumed), or a Dataset with one variable per
        parameter.  Other dims (spatial, ``member``...) are kept.
    model : str or model
        Model whose :class:`~xproda.ParameterSpace` defines names and order.
    normalised : bool, default True
        Whether values are normalised (0..1); ``False`` converts physical values (units as in
        the parameter table) with the space's transforms.

    Returns
    -------
    DataArray
        ``theta`` with dims ``(..., parameter)``, lazy where the input is.
    """
    m = _get_model(model, False, {})
    names = list(m.parameters.names)
    if isinstance(params, xr.Dataset):
        missing = [n for n in names if n not in params.data_vars]
        if missing:
            raise KeyError(f"params Dataset lacks parameter variable(s) {missing} of model "
                           f"{m.name!r}; found {sorted(map(str, params.data_vars))}")
        theta = xr.concat([_strip(params[n]) for n in names], dim="parameter",
                          coords="minimal", compat="override", join="exact")
        theta = theta.assign_coords(parameter=names)
    elif isinstance(params, xr.DataArray):
        if "parameter" not in params.dims:
            raise ValueError(f"params DataArray needs a 'parameter' dim, found dims {params.dims}")
        if "parameter" in params.coords:
            have = [str(v) for v in params["parameter"].values]
            missing = [n for n in names if n not in have]
            if missing:
                raise KeyError(f"params lacks parameter(s) {missing} of model {m.name!r}; "
                               f"found {have}")
            theta = params.sel(parameter=names) if have != names else params
        else:
            if params.sizes["parameter"] != len(names):
                raise ValueError(f"params has {params.sizes['parameter']} parameters, model "
                                 f"{m.name!r} has {len(names)} ({names})")
            theta = params.assign_coords(parameter=names)
        theta = _strip(theta)
    else:
        raise TypeError(f"params must be an xarray DataArray or Dataset, got {type(params)}")
    if not normalised:
        space = m.parameters
        theta = xr.apply_ufunc(
            lambda x: np.asarray(space.to_normalized(x), dtype=np.float64), theta,
            input_core_dims=[["parameter"]], output_core_dims=[["parameter"]],
            dask="parallelized", output_dtypes=[np.float64],
        )
    theta = theta.transpose(..., "parameter")
    theta.attrs = conventions.attrs("theta")
    theta.name = "theta"
    return theta


def _strip(da: xr.DataArray) -> xr.DataArray:
    """A shallow copy without the variable's own attrs (coordinate attrs are kept)."""
    da = da.copy(deep=False)
    da.attrs = {}
    da.encoding = {}
    return da


def _copy_coords(out: xr.Dataset, like: xr.Dataset) -> xr.Dataset:
    """Carry spatial coordinates of ``like`` (with attrs, bounds and the CRS) onto ``out``."""
    used = set()
    for v in like.data_vars.values():
        used.update(v.dims)
    for name, c in like.coords.items():
        if "month" in c.dims or "layer" in c.dims:
            continue
        if name in out.coords:
            out[name].attrs = dict(c.attrs)
        elif all(d in out.dims or d not in used for d in c.dims):
            out = out.assign_coords({name: c})
    return out


def _unify_batch_chunks(objs: list, core: Sequence[str]) -> list:
    """Give every input the same chunks along the batch dims (those of the first dask input).

    Chunk boundaries never change results (columns are independent); they only need to agree
    for :func:`dask.array.apply_gufunc`.  Numpy inputs stay numpy if every input is numpy.
    """
    if not any(o.chunks is not None for o in objs):
        return objs
    target: dict[str, tuple] = {}
    for o in objs[1:] + objs[:1]:  # forcing first: its chunking is the one to keep
        if o.chunks is None:
            continue
        for d, c in zip(o.dims, o.chunks):
            if d not in core and d not in target and o.sizes[d] > 1:
                target[d] = c
    out = []
    for o in objs:
        want = {d: target[d] for d in o.dims if d in target and o.sizes[d] > 1}
        have = dict(zip(o.dims, o.chunks)) if o.chunks is not None else {}
        if o.chunks is None or any(have.get(d) != c for d, c in want.items()):
            o = o.chunk(want)
        out.append(o)
    return out


def _batch_dims(*objs: xr.DataArray, exclude=("parameter", "month", "layer", "pool")) -> list:
    out: list = []
    for o in objs:
        for d in o.dims:
            if d not in exclude and d not in out:
                out.append(d)
    return out


def _align_params(theta: xr.DataArray, like: xr.DataArray) -> xr.DataArray:
    """Bring parameters onto the forcing grid when their spatial coords differ."""
    common = [d for d in theta.dims if d in like.dims and d in theta.coords and d in like.coords]
    same = all(
        theta.sizes[d] == like.sizes[d]
        and np.array_equal(np.asarray(theta[d].values), np.asarray(like[d].values))
        for d in common
    )
    if same:
        return theta
    from . import spatial

    return spatial.align_grids(theta, like)


# -------------------------------------------------------------------------------------------
# steady state
# -------------------------------------------------------------------------------------------
def _steady_block(theta, *forcing, names, cores, model, outputs, opts):
    """Kernel call on one block: ``theta [..., P]``, forcing ``[..., core...]`` (numpy).

    Only columns with data are gathered (one copy of the land columns, no copy of the ocean)
    and passed to the kernel; the others are NaN / ``no_data``.  Which columns are skipped
    never changes a result: a column without data gives NaN and ``no_data`` in the kernel
    too.
    """
    import torch

    with set_options(**opts), torch.no_grad():
        batch = np.broadcast_shapes(
            theta.shape[:-1], *(f.shape[: f.ndim - len(c)] for f, c in zip(forcing, cores))
        )
        full_arrays = [_full_core(n, a, c, batch) for n, a, c in zip(names, forcing, cores)]
        th_b = np.broadcast_to(theta, batch + theta.shape[-1:])
        # skip cells without data: NaN theta, or no value at all in the smallest variable
        ok = np.isfinite(th_b).all(-1)
        small = min(range(len(forcing)), key=lambda i: forcing[i].size)
        probe = full_arrays[small]
        ok &= np.isfinite(probe).any(axis=tuple(range(len(batch), probe.ndim)))
        n_ok = int(ok.sum())
        if n_ok == ok.size:  # every column has data (e.g. a land-only ``cell`` store)
            sub = model.steady_state(
                _columns(th_b, len(batch), writeable=False),
                {k: _columns(a, len(batch), writeable=False)
                 for k, a in zip(names, full_arrays)},
            )
        elif n_ok:
            sub = model.steady_state(
                th_b[ok], {k: a[ok] for k, a in zip(names, full_arrays)}
            )
        n_pools = len(model.pools)
        tails = {"soc": (_N_LAYERS,), "pools": (_N_LAYERS, n_pools), "pool_stocks": (n_pools,)}
        res = []
        for key in outputs:
            shp = batch + tails.get(key, ())
            dtype = np.int64 if key == "flags" else np.float64  # the declared output dtypes
            val = np.asarray(sub[key]) if n_ok else None
            if n_ok and key in ("soc_stock", "pool_stocks"):
                val = val / 1000.0  # g m-2 -> kg m-2
            if n_ok == ok.size:
                out = np.asarray(val, dtype=dtype).reshape(shp)
            else:
                out = np.full(shp, FLAGS["no_data"] if key == "flags" else np.nan, dtype=dtype)
                if n_ok:
                    out[ok] = val
            res.append(out)
        return tuple(res)


def _columns(a: np.ndarray, nb: int, *, writeable: bool = True) -> np.ndarray:
    """``a [..batch, core...]`` (``nb`` batch axes) as ``[n, core...]``.

    Equals ``a[ok]`` for an all-True ``ok``, without a copy where ``a`` is C-contiguous (a
    block of a store with the batch dim first, e.g. a land-only ``cell`` store).  With
    ``writeable=False`` a read-only block stays read-only: the kernels' ``as_tensor`` copies
    such arrays itself, and converts float32 blocks to float64 in the same pass, so a copy
    here would be a second one (0.25 s of a 0.25 degree run).
    """
    out = np.ascontiguousarray(a.reshape((-1,) + a.shape[nb:]))
    return out if out.flags.writeable or not writeable else out.copy()


def _unwrap(x):
    """The one block of a single-chunk core dim (``blockwise(concatenate=False)`` nests lists)."""
    while isinstance(x, list):
        if len(x) != 1:  # pragma: no cover - core dims are made single-chunk first
            raise AssertionError(f"expected one block along a core dim, got {len(x)}")
        x = x[0]
    return x


def _call_unwrapped(fn, *blocks):
    return fn(*map(_unwrap, blocks))


def _apply_blocks(fn, *args, in_cores, out_cores, sizes, dtypes):
    """``fn`` on every block: numpy in, numpy out; dask in, one dask array per output.

    Like :func:`dask.array.apply_gufunc` (one task per block, the outputs split from its
    tuple), but core dims (single chunks) are passed to ``fn`` as they are: no
    ``concatenate3`` copy of every forcing block.  Inputs come from
    :func:`xarray.apply_ufunc` (``dask="allowed"``): loop dims first, right-aligned, then the
    core dims.
    """
    import dask.array as dsa

    if not any(isinstance(a, dsa.Array) for a in args):
        return fn(*args)
    from dask.base import tokenize
    from dask.core import flatten
    from dask.highlevelgraph import HighLevelGraph

    nloop = max(a.ndim - len(c) for a, c in zip(args, in_cores))
    loop = tuple(f"_b{i}" for i in range(nloop))
    arginds = []
    for a, core in zip(args, in_cores):
        k = a.ndim - len(core)
        if isinstance(a, dsa.Array) and len(core) and any(
                len(c) > 1 for c in a.chunks[k:]):  # pragma: no cover - made single first
            raise ValueError(f"core dims {core} must be single chunks")
        arginds += [a, loop[nloop - k:] + tuple(f"_c_{d}" for d in core)]
    tmp = dsa.blockwise(
        functools.partial(_call_unwrapped, fn), loop, *arginds, concatenate=False,
        meta=np.empty((0,) * nloop, dtype=object), name=f"steady_state-{tokenize(fn, loop, *arginds)}",
    )
    outs = []
    for i, (core, dt) in enumerate(zip(out_cores, dtypes)):
        name = f"{tmp.name}-{i}"
        tail = (0,) * len(core)
        dsk = {(name, *key[1:], *tail): (operator.getitem, key, i)
               for key in flatten(tmp.__dask_keys__())}
        graph = HighLevelGraph.from_collections(name, dsk, dependencies=[tmp])
        core_shape = tuple(sizes[d] for d in core)
        outs.append(dsa.Array(graph, name, chunks=tmp.chunks + tuple((n,) for n in core_shape),
                              shape=tmp.shape + core_shape,
                              meta=np.empty((0,) * (nloop + len(core)), dtype=dt)))
    return tuple(outs)


def _full_core(name: str, arr: np.ndarray, core: Sequence[str], batch: tuple) -> np.ndarray:
    """View of ``arr [..batch, core...]`` broadcast to ``batch + kernel core shape``.

    Missing core axes (e.g. a static ``nbedrock`` without ``month``) are inserted and
    broadcast; no data is copied.
    """
    full = _core_of(name)
    a = arr
    nb = arr.ndim - len(core)
    for pos, d in enumerate(full):
        if d not in core:
            a = np.expand_dims(a, nb + pos)
    shape = tuple(batch) + tuple(12 if d == "month" else _N_LAYERS for d in full)
    return np.broadcast_to(a, shape)


def forcing_arrays(
    ds: xr.Dataset,
    *,
    model: str | SoilCarbonModel = "clm5",
    dim: str | None = None,
) -> dict[str, np.ndarray]:
    """Kernel forcing (batch first, :data:`~xproda.models.forcing.FORCING_SCHEMA` shapes).

    Parameters
    ----------
    ds : Dataset
        Forcing with one batch dim (e.g. ``site`` from :func:`sample_sites`) or several
        (flattened in order).
    model : str or model
        Whose required variables to extract (plus ``CELLSAND`` and ``NPP`` where present).
    dim : str, optional
        The batch dim when ``ds`` has several non-core dims and only one should be used.

    Returns
    -------
    dict of ndarray
        ``{name: [n, ...]}`` ready for ``model.steady_state(theta, forcing)``.  Loads data.
    """
    m = _get_model(model, False, {})
    problems = _check_forcing(ds, m, list(m.required_forcing))
    if problems:
        raise ValueError("invalid forcing:\n  - " + "\n  - ".join(problems))
    names = list(m.required_forcing) + [k for k in ("CELLSAND", "NPP") if k in ds]
    vars_ = {}
    for k in names:
        v = ds[k]
        if "layer" in v.dims and v.sizes["layer"] > _N_LAYERS:
            v = v.isel(layer=slice(0, _N_LAYERS))
        vars_[k] = v
    bdims = [dim] if dim else _batch_dims(*vars_.values())
    sizes = {d: ds.sizes[d] for d in bdims}
    out = {}
    for k, v in vars_.items():
        core = tuple(d for d in _core_of(k) if d in v.dims)
        v = v.expand_dims({d: sizes[d] for d in bdims if d not in v.dims})
        arr = np.asarray(v.transpose(*bdims, *core).values)
        full = _full_core(k, arr, core, tuple(sizes.values()))
        out[k] = np.ascontiguousarray(full.reshape((-1,) + full.shape[len(bdims):]))
    return out


_TAILS = {"soc": ["layer"], "pools": ["layer", "pool"], "pool_stocks": ["pool"]}


def steady_state(
    ds: xr.Dataset,
    params: xr.DataArray | xr.Dataset,
    *,
    model: str | SoilCarbonModel = "clm5",
    reference: bool = False,
    normalised: bool = True,
    pools: bool = False,
    **model_options: Any,
) -> xr.Dataset:
    """Steady-state soil carbon of every column of a gridded (or site) forcing Dataset.

    Parameters
    ----------
    ds : Dataset
        CLM5-style forcing: ``TSOI`` (K), ``W_SCALAR``, ``O_SCALAR``, ``FPI_vr`` with dims
        ``(month, layer, <spatial>)``; ``ALTMAX``, ``ALTMAX_LASTYEAR`` (m), ``nbedrock``
        (1-based) and the column-total litter inputs ``CWD_INPUT``, ``LITR1_INPUT``..
        ``LITR3_INPUT`` (g C m-2 month-1) with dims ``(month, <spatial>)`` (a variable may lack
        ``month``: it is then constant over the year).  A ``layer`` dim longer than 20 (CLM's
        25 ground levels) is cut to the 20 decomposition layers.
    params : DataArray or Dataset
        Normalised parameters (see :func:`parameters_to_dataarray`), on the forcing grid or
        broadcastable to it (a DataArray with only ``parameter`` applies one parameter set
        everywhere).  Parameters on another grid are brought onto the forcing grid
        (:func:`xproda.spatial.align_grids`).
    model : str or model, default "clm5"
        ``"clm5"`` (CENTURY) or ``"microbial"``, or a model instance.
    reference : bool, default False
        Reproduce the original PRODA code (see docs/corrections.md).
    normalised : bool, default True
        Whether ``params`` are normalised (0..1) or physical.
    pools : bool, default False
        Also return ``pools`` ``(layer, pool, ...)`` (g m-3) and ``pool_stocks`` (kg m-2).
    **model_options
        Switches of :class:`~xproda.models.base.ModelOptions`.

    Returns
    -------
    Dataset
        ``soc`` (g m-3, per layer), ``soc_stock`` (kg m-2, 0-8.6 m), ``turnover_time`` (yr),
        ``input`` and ``respiration`` (g m-2 yr-1), ``flags`` (see :data:`xproda.FLAGS`),
        plus the coordinate ``cell_area`` (m2) where the grid has latitude/longitude.  Lazy where ``ds`` or
        ``params`` is dask-backed.  Cells without data (ocean, NaN parameters) are NaN and
        flagged ``no_data``; they cost nothing.

    Examples
    --------
    >>> import numpy as np, xarray as xr, xproda
    >>> from xproda.testing import forcing_dataset
    >>> ds = forcing_dataset(ny=2, nx=3)
    >>> theta = xr.DataArray(np.full(21, 0.5), dims="parameter")
    >>> out = ds.proda.steady_state(theta)
    >>> out["soc"].dims, out["soc_stock"].attrs["units"]
    (('layer', 'lat', 'lon'), 'kg m-2')
    """
    m = _get_model(model, reference, model_options)
    required = [k for k in m.required_forcing]
    problems = _check_forcing(ds, m, required)
    if problems:
        raise ValueError("invalid forcing:\n  - " + "\n  - ".join(problems))
    theta = parameters_to_dataarray(params, m, normalised=normalised)
    fvars = []
    for k in required:
        da = ds[k]
        if "layer" in da.dims and da.sizes["layer"] > _N_LAYERS:
            da = da.isel(layer=slice(0, _N_LAYERS))
        fvars.append(_strip(da))
    theta = _align_params(theta, fvars[0])
    # coordinates of the layer dim come from xproda's grid, not from the input
    fvars = [v.drop_vars([c for c in v.coords if "layer" in v[c].dims]) for v in fvars]
    theta = _single_chunk(theta, ["parameter"])
    fvars = [_single_chunk(v, CORE_DIMS) for v in fvars]
    theta, *fvars = _unify_batch_chunks([theta] + fvars, core=CORE_DIMS + ("parameter",))
    cores = [tuple(d for d in _core_of(k) if d in v.dims) for k, v in zip(required, fvars)]
    outputs = ["soc", "soc_stock", "turnover_time", "input", "respiration", "flags"]
    if pools:
        outputs += ["pools", "pool_stocks"]
    out_dtypes = [np.int64 if k == "flags" else np.float64 for k in outputs]
    # options are captured here and applied in every task (workers use the client's settings)
    fn = functools.partial(_steady_block, names=tuple(required), cores=tuple(cores), model=m,
                           outputs=tuple(outputs), opts=get_options())
    in_cores = [["parameter"]] + [list(c) for c in cores]
    out_cores = [_TAILS.get(k, []) for k in outputs]
    sizes = {"layer": _N_LAYERS, "pool": len(m.pools)}
    # theta's non-index coordinates that the forcing has too: the output takes the forcing's
    # (_copy_coords), and comparing two lazy copies (e.g. lat/lon on a land-only ``cell``
    # dim) would read both stores once per output variable
    theta = theta.drop_vars([c for c in theta.coords if c not in theta.indexes and c in ds.coords])
    results = xr.apply_ufunc(
        functools.partial(_apply_blocks, fn, in_cores=in_cores, out_cores=out_cores,
                          sizes=sizes, dtypes=out_dtypes),
        theta, *fvars,
        input_core_dims=in_cores,
        output_core_dims=out_cores,
        dask="allowed",
        keep_attrs=False,
    )
    out = xr.Dataset()
    for key, da in zip(outputs, results):
        if "layer" in da.dims:
            da = da.transpose("layer", ...)
        if "pool" in da.dims:
            da = da.transpose("pool", ...) if "layer" not in da.dims else da.transpose(
                "layer", "pool", ...)
        da.attrs = conventions.attrs(key)
        if key == "flags":  # regions skipped when writing Zarr read back as no_data
            da.encoding["fill_value"] = FLAGS["no_data"]
        out[key] = da
    if "layer" in out.dims:
        out = out.assign_coords(conventions.layer_coords())
    if pools:
        out = out.assign_coords(pool=("pool", list(m.pools), {"long_name": "model carbon pool"}))
    out = _copy_coords(out, ds)
    out = _add_spatial_metadata(out, ds)
    out.attrs = {
        "Conventions": conventions.CF_CONVENTIONS,
        "title": f"Steady-state soil organic carbon ({m.name} model)",
        "source": f"xproda {_version()} {m.name} model "
                  f"({'reference' if m.options.reference else 'corrected'} mode)",
        "history": conventions.history_line(f"steady_state(model={m.name!r})"),
    }
    return out


def _version() -> str:
    from . import __version__

    return __version__


def _add_spatial_metadata(out: xr.Dataset, like: xr.Dataset) -> xr.Dataset:
    """CRS, cell area and ``cell_measures``; never input attrs on data variables."""
    if "cell_area" not in out.coords:  # else: carried from the input (e.g. a cell store)
        try:
            from . import spatial

            area = spatial.cell_area(out)
        except ValueError:  # no recognisable horizontal grid (e.g. a site table): no areas
            return out
        # a coordinate: grid metadata (never masked or recomputed with the results)
        out = out.assign_coords(cell_area=area)
    for k in ("soc", "soc_stock", "pools", "pool_stocks", "turnover_time", "input",
              "respiration"):
        if k in out:
            out[k].attrs["cell_measures"] = "area: cell_area"
    if "spatial_ref" in out.coords:
        for k in out.data_vars:
            out[k].attrs["grid_mapping"] = "spatial_ref"
    return out


# -------------------------------------------------------------------------------------------
# parameters from covariates
# -------------------------------------------------------------------------------------------
def _predict_block(x, net, n_out, dtype):
    """Apply ``net`` to a block ``[..., F]``; rows with any NaN give NaN.

    ``n_out`` is the shape of one row's output: ``(P,)``, or ``(M, P)`` for an ensemble.
    """
    n_out = (n_out,) if isinstance(n_out, int) else tuple(n_out)
    batch = x.shape[:-1]
    flat = x.reshape(-1, x.shape[-1])
    ok = np.isfinite(flat).all(-1)
    out = np.full((flat.shape[0],) + n_out, np.nan, dtype=dtype)
    if ok.any():
        y = _call_net(net, np.ascontiguousarray(flat[ok]))
        if y.shape != (int(ok.sum()),) + n_out:
            raise ValueError(f"net returned shape {y.shape}, expected {(int(ok.sum()),) + n_out}")
        out[ok] = y
    return out.reshape(batch + n_out)


def _call_net(net, x: np.ndarray) -> np.ndarray:
    import torch

    if hasattr(net, "predict") and hasattr(net, "feature_names") and isinstance(
            net, torch.nn.Module):  # ParameterNet / ParameterNetEnsemble: eval mode, batched
        return net.predict(x)
    if isinstance(net, torch.nn.Module):
        p = next(iter(net.parameters()), None)
        dt = p.dtype if p is not None else torch.float64
        dev = p.device if p is not None else torch.device("cpu")
        with torch.no_grad():
            y = net(torch.as_tensor(x, dtype=dt, device=dev))
        return y.detach().cpu().double().numpy()
    y = net(x)
    if isinstance(y, torch.Tensor):
        y = y.detach().cpu().double().numpy()
    return np.asarray(y, dtype=np.float64)


def require_features(covariates: xr.Dataset, features: Sequence[str], *,
                     needed_by: str = "") -> None:
    """Raise a ``KeyError`` listing every name of ``features`` missing from ``covariates``."""
    missing = [f for f in features if f not in covariates.variables]
    if missing:
        raise KeyError(f"covariates lack feature(s) {missing}{needed_by}; found "
                       f"{sorted(map(str, covariates.data_vars))}")


def predict_parameters(
    covariates: xr.Dataset,
    net: Callable,
    *,
    features: Sequence[str] | None = None,
    model: str | SoilCarbonModel | None = None,
    parameter_names: Sequence[str] | None = None,
) -> xr.DataArray:
    """Normalised parameters predicted from covariates by a network (or any callable).

    Parameters
    ----------
    covariates : Dataset
        Covariate variables on the spatial grid, in the units the network was trained with
        (a :class:`~xproda.network.ParameterNet` scales them itself).
    net : ParameterNet, ParameterNetEnsemble or callable
        Maps a ``[n, F]`` float array (numpy, or a tensor for a :class:`torch.nn.Module`)
        to ``[n, P]`` normalised parameters (``[n, M, P]`` for an ensemble with
        ``n_members``). Attributes ``feature_names`` and ``parameter_names`` are used when
        present.
    features : sequence of str, optional
        Covariate names in the network's input order (default ``net.feature_names``).
        Covariates are matched by name, never by position.
    model : str or model, optional
        Model whose parameter names label the output (default ``net.model_name`` or
        ``"clm5"``), unless ``parameter_names``/``net.parameter_names`` is given.
    parameter_names : sequence of str, optional
        Names of the P outputs.

    Returns
    -------
    DataArray
        ``theta`` ``(<spatial>, parameter)`` -- ``(<spatial>, member, parameter)`` for an
        ensemble -- dimensionless, in (0, 1) for a sigmoid-output network; lazy on dask
        input; NaN where any covariate is NaN. The network enters the task graph once (one
        key), so on a distributed cluster each worker receives the weights once, not once
        per task.

    Raises
    ------
    KeyError
        Listing every feature the network needs that ``covariates`` lacks.
    """
    import dask
    import dask.array as dsa

    feats = list(features if features is not None else getattr(net, "feature_names", []) or [])
    if not feats:
        raise ValueError("features are unknown: pass features=[...] or use a net with "
                         "a feature_names attribute")
    require_features(covariates, feats, needed_by=" needed by the network")
    names = parameter_names or getattr(net, "parameter_names", None)
    if names is None:
        mname = model if model is not None else getattr(net, "model_name", "clm5")
        names = _get_model(mname, False, {}).parameters.names
    names = [str(n) for n in names]
    n_members = getattr(net, "n_members", None)
    tail = (len(names),) if n_members is None else (int(n_members), len(names))
    tail_dims = ["parameter"] if n_members is None else ["member", "parameter"]
    cols = [_strip(covariates[f]) for f in feats]
    cols = xr.broadcast(*cols)
    x = xr.concat(cols, dim="feature", coords="minimal", compat="override").transpose(..., "feature")
    x = _single_chunk(x, ["feature"]).astype(np.float64)
    batch_dims = list(x.dims[:-1])
    if x.chunks is None:
        data = _predict_block(x.values, net, tail, np.float64)
    else:
        net_d = dask.delayed(net, pure=False)
        ind = tuple(f"i{k}" for k in range(len(batch_dims)))
        out_ind = ("m", "p")[-len(tail):]
        data = dsa.blockwise(
            functools.partial(_predict_block, n_out=tail, dtype=np.float64), ind + out_ind,
            x.data, ind + ("f",), net_d, None, dtype=np.float64,
            new_axes=dict(zip(out_ind, tail)), concatenate=True,
            meta=np.empty((0,) * (len(ind) + len(tail)), dtype=np.float64),
        )
    coords = {k: v for k, v in x.coords.items() if "feature" not in v.dims}
    theta = xr.DataArray(data, dims=batch_dims + tail_dims, coords=coords, name="theta",
                         attrs=conventions.attrs("theta"))
    theta = theta.assign_coords(parameter=names)
    if n_members is not None:
        theta = theta.assign_coords(member=np.arange(int(n_members)))
    return theta


# -------------------------------------------------------------------------------------------
# stocks, turnover, areas, totals, sites
# -------------------------------------------------------------------------------------------
def _soc_of(obj: xr.Dataset | xr.DataArray) -> xr.DataArray:
    soc = obj["soc"] if isinstance(obj, xr.Dataset) else obj
    if "layer" not in soc.dims:
        raise ValueError(f"soc needs a 'layer' dim of {_N_LAYERS} layers, found dims {soc.dims}")
    if soc.sizes["layer"] != _N_LAYERS:
        raise ValueError(f"soc must have {_N_LAYERS} layers, found {soc.sizes['layer']}")
    return soc


def _intervals(depth) -> list[tuple[float, float]] | None:
    if depth is None:
        return None
    arr = np.asarray(depth, dtype=float)
    if arr.shape == (2,):
        return [(float(arr[0]), float(arr[1]))]
    if arr.ndim == 2 and arr.shape[1] == 2:
        return [(float(a), float(b)) for a, b in arr]
    raise ValueError(f"depth must be (top, bottom) in m or a list of such pairs, got {depth!r}")


def _weighted_layers(soc: xr.DataArray, top: float, bottom: float) -> xr.DataArray:
    w = grid.depth_weights(top, bottom)
    idx = np.flatnonzero(w > 0)
    wl = xr.DataArray(w[idx], dims="layer")
    sub = soc.isel(layer=idx).drop_vars([c for c in soc.coords if "layer" in soc[c].dims])
    return (sub * wl).sum("layer", skipna=False)


def soc_stock(
    obj: xr.Dataset | xr.DataArray,
    *,
    depth: tuple[float, float] | Sequence[tuple[float, float]] | None = None,
) -> xr.DataArray:
    """SOC stock of a depth interval with partial layers counted linearly (spec §8.1).

    Parameters
    ----------
    obj : Dataset or DataArray
        ``soc`` (g m-3) with a ``layer`` dim, or a Dataset holding it.
    depth : (top, bottom) or list of them, optional
        Interval(s) in m within 0-8.6 m; default the whole column.  A list adds a
        ``depth_interval`` dim with ``depth_top``/``depth_bottom`` coordinates.

    Returns
    -------
    DataArray
        Stock in kg m-2 (``soil_mass_content_of_carbon``); NaN where any layer of the
        interval is NaN.  Lazy on dask input.

    Examples
    --------
    >>> import numpy as np, xarray as xr, xproda
    >>> soc = xr.DataArray(np.full((20, 1), 1000.0), dims=("layer", "site"))  # 1 kg m-3
    >>> float(xproda.xr_api.soc_stock(soc, depth=(0, 0.3))[0])
    0.3
    """
    soc = _soc_of(obj)
    ivals = _intervals(depth)
    if ivals is None:
        out = _weighted_layers(soc, 0.0, grid.SOIL_DEPTH) / 1000.0
        label = f"0-{grid.SOIL_DEPTH:g} m"
    elif len(ivals) == 1 and np.asarray(depth, dtype=float).ndim == 1:
        out = _weighted_layers(soc, *ivals[0]) / 1000.0
        label = f"{ivals[0][0]:g}-{ivals[0][1]:g} m"
    else:
        parts = [_weighted_layers(soc, a, b) / 1000.0 for a, b in ivals]
        out = xr.concat(parts, dim="depth_interval")
        out = out.assign_coords(
            depth_top=("depth_interval", [a for a, _ in ivals], {"units": "m"}),
            depth_bottom=("depth_interval", [b for _, b in ivals], {"units": "m"}),
        )
        label = "the depth_interval"
    out.attrs = conventions.attrs("soc_stock", long_name=f"soil organic carbon stock, {label}")
    if "cell_area" in getattr(obj, "variables", {}):
        out.attrs["cell_measures"] = "area: cell_area"
    out.name = "soc_stock"
    return out


def turnover_time(
    ds: xr.Dataset,
    *,
    depth: tuple[float, float] | Sequence[tuple[float, float]] | None = None,
) -> xr.DataArray:
    """SOC turnover (residence) time: stock of the interval / total litter input (spec §8.2).

    Parameters
    ----------
    ds : Dataset
        Output of :func:`steady_state` (needs ``soc`` and ``input``).
    depth : (top, bottom) or list of them, optional
        Interval(s) in m; default the whole column (equals the ``turnover_time`` output).

    Returns
    -------
    DataArray
        Years; lazy on dask input.
    """
    if "input" not in ds:
        raise KeyError("turnover_time needs the 'input' variable (g m-2 yr-1) of steady_state")
    stock = soc_stock(ds, depth=depth)  # kg m-2
    tau = stock * 1000.0 / ds["input"]
    tau.attrs = conventions.attrs("turnover_time")
    if depth is not None:
        tau.attrs["long_name"] += f" for depth {depth} m"
    tau.name = "turnover_time"
    return tau


def cell_area(obj: xr.Dataset | xr.DataArray, **kwargs: Any) -> xr.DataArray:
    """Cell areas (m2) of the horizontal grid; see :func:`xproda.spatial.cell_area`."""
    from . import spatial

    return spatial.cell_area(obj, **kwargs)


def global_total(
    obj: xr.Dataset | xr.DataArray,
    *,
    depth: tuple[float, float] | Sequence[tuple[float, float]] | None = None,
    area: xr.DataArray | None = None,
    land_fraction: xr.DataArray | str | None = None,
    **kwargs: Any,
) -> xr.DataArray:
    """Global (area-weighted, land-fraction aware) SOC total in Pg C.

    Parameters
    ----------
    obj : Dataset or DataArray
        A steady-state Dataset (its ``soc`` is integrated over ``depth``, default the
        whole column), a ``soc`` DataArray with a ``layer`` dim, or a stock DataArray
        (kg m-2).
    depth : (top, bottom) or list, optional
        Depth interval(s) in m for ``soc`` input.
    area : DataArray, optional
        Cell areas (m2); default from the grid (``cell_area`` variable if present).
    land_fraction : DataArray or str, optional
        Land fraction of each cell (0..1 or %), or the name of a variable of ``obj``.

    Returns
    -------
    DataArray
        Pg C (lazy on dask input).
    """
    from . import spatial

    if isinstance(obj, xr.Dataset):
        if isinstance(land_fraction, str):
            land_fraction = obj[land_fraction]
        if area is None and "cell_area" in obj:
            area = obj["cell_area"]
        stock = soc_stock(obj, depth=depth) if ("soc" in obj and (depth is not None or
                                                                  "soc_stock" not in obj)) \
            else obj["soc_stock"]
    elif "layer" in obj.dims:
        stock = soc_stock(obj, depth=depth)
    else:
        stock = obj
    return spatial.global_total(stock, area=area, land_fraction=land_fraction, **kwargs)


def sample_sites(obj: xr.Dataset | xr.DataArray, *args: Any, **kwargs: Any):
    """Values at profile locations; see :func:`xproda.spatial.sample_sites`."""
    from . import spatial

    return spatial.sample_sites(obj, *args, **kwargs)


# -------------------------------------------------------------------------------------------
# validation without reading data
# -------------------------------------------------------------------------------------------
def validate(
    ds: xr.Dataset,
    *,
    model: str | SoilCarbonModel = "clm5",
    params: xr.DataArray | xr.Dataset | None = None,
    raise_on_error: bool = True,
) -> list[str]:
    """Check a forcing Dataset (and parameters) for a model run without reading any data.

    Checks presence of every required variable (with expected units and dims), dim sizes
    (``month`` = 12, ``layer`` >= 20), units attributes where present (TSOI in K, depths in
    m), parameter names and grid compatibility.  Value checks (ranges, Celsius values
    without units) happen when the kernels run.

    Parameters
    ----------
    ds : Dataset
        Forcing.
    model : str or model, default "clm5"
    params : DataArray or Dataset, optional
        Parameters to check as well.
    raise_on_error : bool, default True
        Raise :class:`ValueError` listing every problem; otherwise return the list.

    Returns
    -------
    list of str
        Problems found (empty when valid).
    """
    m = _get_model(model, False, {})
    problems = _check_forcing(ds, m, list(m.required_forcing))
    if params is not None:
        try:
            theta = parameters_to_dataarray(params, m)
            if problems == [] and theta.ndim > 1:
                like = ds[m.required_forcing[0]]
                _align_params(theta.isel(parameter=0), like)
        except (KeyError, ValueError, TypeError) as err:
            problems.append(f"params: {err}")
    if problems and raise_on_error:
        raise ValueError("invalid input:\n  - " + "\n  - ".join(problems))
    return problems
