"""The column engine: the one path from xarray objects to kernel columns and back.

Every gridded or site computation of xproda -- steady states, bulk indices, sensitivities,
component control, transient runs and spin-ups, site forcing for assimilation -- goes
through this module, in five steps:

1. **validate** the forcing against the input contract (:mod:`xproda.xr.contract`: dims,
   units, fill values; ranges are checked by the kernels inside every task);
2. **align** parameters (and other per-cell inputs) to the forcing's horizontal dims: the
   same dims by name or CF axis, or another grid brought onto the forcing grid with
   :func:`xproda.spatial.align_grids` (coordinates or a CRS); otherwise a
   :class:`~xproda.errors.GridError` naming both grids;
3. **gather** the columns with data of each block (one copy of the land columns, none of the
   ocean), 4. **call** the kernel with the options captured when the graph was built
   (entered with :func:`xproda.options.use_options` inside the task: no task reads or
   writes process-global option state), and 5. **scatter** the results back, then attach
   coordinates, CF metadata from :mod:`xproda.conventions` and a ``history`` that records
   every unit conversion.

Results never depend on chunking: every soil column is independent.
"""

from __future__ import annotations

import functools
import operator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Mapping, Sequence

import numpy as np
import xarray as xr

from xproda import conventions, grid
from xproda.xr import contract
from xproda.errors import DimensionError, GridError, UnitsError
from xproda.options import get_options, use_options

if TYPE_CHECKING:  # the kernels load on first use
    from xproda.models.base import SoilCarbonModel

__all__ = [
    "Output",
    "ColumnInputs",
    "resolve_model",
    "parameters_to_dataarray",
    "column_inputs",
    "align_params",
    "run_columns",
    "column_block",
    "valid_columns",
    "columns",
    "gather",
    "scatter",
    "kernel_context",
    "single_chunk",
    "strip",
    "copy_coords",
    "spatial_metadata",
    "global_attrs",
    "forcing_arrays",
    "full_core",
]

_N = grid.N_LAYERS


# -------------------------------------------------------------------------------------------
# small helpers
# -------------------------------------------------------------------------------------------
def resolve_model(model: Any, reference: bool = False,
                  options: Mapping[str, Any] | None = None):
    """A model instance from a name (with options) or an instance (without options)."""
    from xproda.models import get_model
    from xproda.models.base import SoilCarbonModel

    if isinstance(model, SoilCarbonModel):
        if options or reference:
            raise TypeError("pass reference/model options to get_model, not with a model instance")
        return model
    return get_model(model, reference=reference, **dict(options or {}))


def is_dask(obj: xr.DataArray | xr.Dataset) -> bool:
    if isinstance(obj, xr.Dataset):
        return any(v.chunks is not None for v in obj.data_vars.values())
    return obj.chunks is not None


def single_chunk(obj, dims: Sequence[str]):
    """Rechunk ``dims`` to one chunk where the object is dask-backed and split along them."""
    if not is_dask(obj):
        return obj
    # the data's chunks (coordinates, e.g. lazy lat/lon on a cell dim, may be chunked otherwise)
    vs = [obj] if isinstance(obj, xr.DataArray) else list(obj.data_vars.values())
    chunks = {d: c for v in vs if v.chunks is not None for d, c in zip(v.dims, v.chunks)}
    todo = {d: -1 for d in dims if d in chunks and len(chunks[d]) > 1}
    return obj.chunk(todo) if todo else obj


def strip(da: xr.DataArray) -> xr.DataArray:
    """A shallow copy without the variable's own attrs (coordinate attrs are kept)."""
    da = da.copy(deep=False)
    da.attrs = {}
    da.encoding = {}
    return da


def copy_coords(out: xr.Dataset, like: xr.Dataset) -> xr.Dataset:
    """Carry spatial coordinates of ``like`` (with attrs, bounds and the CRS) onto ``out``."""
    used = set()
    for v in like.data_vars.values():
        used.update(v.dims)
    for name, c in like.coords.items():
        if set(c.dims) & {"month", "layer", "time"}:
            continue
        if name in out.coords:
            out[name].attrs = dict(c.attrs)
        elif all(d in out.dims or d not in used for d in c.dims):
            out = out.assign_coords({name: c})
    return out


def unify_batch_chunks(objs: list, core: Sequence[str]) -> list:
    """Give every input the same chunks along the batch dims (those of the first dask input).

    Chunk boundaries never change results (columns are independent); they only need to agree
    for the blockwise call.  Numpy inputs stay numpy if every input is numpy.
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


# -------------------------------------------------------------------------------------------
# parameters onto the forcing grid
# -------------------------------------------------------------------------------------------
def _grid_text(obj: xr.DataArray | xr.Dataset, dims: Sequence[str]) -> str:
    parts = []
    for d in dims:
        n = obj.sizes[d]
        if d in obj.coords and obj[d].ndim == 1 and n and np.issubdtype(obj[d].dtype, np.number):
            v = np.asarray(obj[d].values, float)
            parts.append(f"{d}={n} [{np.nanmin(v):g}..{np.nanmax(v):g}]")
        else:
            parts.append(f"{d}={n}")
    return "(" + ", ".join(parts) + ")"


def align_params(theta: xr.DataArray, like: xr.DataArray | xr.Dataset, *,
                 horizontal: Sequence[str], batch_dims: Sequence[str] = (),
                 what: str = "params", core: Sequence[str] = ("parameter",)) -> xr.DataArray:
    """``theta`` on the forcing's horizontal grid (dims of ``like``).

    Dims of ``theta`` other than ``core`` must be the forcing's horizontal dims (by name;
    coordinates must match or be selectable), declared batch dims, or horizontal dims of
    another grid that :func:`xproda.spatial.align_grids` can bring onto the forcing grid
    (other names found by CF attrs, another longitude convention or order, a CRS).

    Raises
    ------
    DimensionError
        ``theta`` has a dim that is neither horizontal nor a batch dim.
    GridError
        The two grids cannot be matched; the message describes both.
    """
    from xproda import spatial

    allowed = set(contract.BATCH_DIMS) | set(batch_dims)
    own = [d for d in theta.dims if d not in core and d not in allowed]
    if not own:
        return theta
    if set(own) <= set(horizontal):
        sizes_ok = all(theta.sizes[d] == like.sizes[d] for d in own)
        coords_ok = all(
            d not in theta.coords or d not in like.coords
            or np.array_equal(np.asarray(theta[d].values), np.asarray(like[d].values))
            for d in own) and sizes_ok
        if coords_ok:
            return theta
        if not all(d in theta.coords and d in like.coords for d in own):
            raise GridError(
                f"{what} grid {_grid_text(theta, own)} and forcing grid "
                f"{_grid_text(like, own)} differ in size and have no coordinates to match")
    else:
        theirs = contract.horizontal_dims(theta.isel({d: 0 for d in core if d in theta.dims}))
        unknown = [d for d in own if d not in theirs]
        if unknown:
            raise DimensionError(
                f"{what}: dim(s) {unknown} are neither horizontal dims of the forcing grid "
                f"({', '.join(horizontal) or 'none identified'}) nor batch dims "
                f"({', '.join(sorted(allowed))}); rename them to the forcing's dims, add CF "
                f"attrs (axis/standard_name) and coordinates, or pass batch_dims=[...]")
        if not horizontal:
            raise GridError(f"{what} are on a horizontal grid {_grid_text(theta, own)} but the "
                            "forcing has no horizontal dims to match them with")
    try:
        out = spatial.align_grids(theta, like)
    except (ValueError, KeyError) as err:
        raise GridError(
            f"{what} on grid {_grid_text(theta, own)} cannot be matched with the forcing grid "
            f"{_grid_text(like, horizontal)}: {err}") from None
    extra = [d for d in out.dims if d not in core and d not in allowed and d not in horizontal]
    if extra:  # pragma: no cover - align_grids returns the target's dims
        raise GridError(f"{what}: aligning left dims {extra} not on the forcing grid")
    return out


# -------------------------------------------------------------------------------------------
# prepared inputs
# -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ColumnInputs:
    """Validated, aligned and consistently chunked inputs of a column computation."""

    theta: xr.DataArray
    forcing: tuple[xr.DataArray, ...]
    names: tuple[str, ...]
    cores: tuple[tuple[str, ...], ...]
    notes: tuple[str, ...]
    horizontal: tuple[str, ...]
    source: xr.Dataset


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
        Whether values are normalised (0..1); ``False`` converts physical values with the
        space's transforms.  A Dataset's variables are read in their ``units`` attribute
        (converted to the parameter table's units, e.g. ``taucwd`` in days to years) or,
        without one, in the table's units; normalised variables must be dimensionless.

    Returns
    -------
    DataArray
        ``theta`` with dims ``(..., parameter)``, lazy where the input is.
    """
    m = resolve_model(model)
    names = list(m.parameters.names)
    if isinstance(params, xr.Dataset):
        missing = [n for n in names if n not in params.data_vars]
        if missing:
            raise KeyError(f"params Dataset lacks parameter variable(s) {missing} of model "
                           f"{m.name!r}; found {sorted(map(str, params.data_vars))}")
        theta = xr.concat([strip(_parameter_units(params[n], m.parameters[n], normalised))
                           for n in names], dim="parameter",
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
        theta = strip(theta)
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


def _parameter_units(da: xr.DataArray, p: Any, normalised: bool) -> xr.DataArray:
    """One parameter variable in the parameter table's units (physical values), or checked
    dimensionless (normalised values)."""
    from xproda import units

    have = da.attrs.get("units")
    if have is None:
        return da
    if normalised:
        if not units.is_dimensionless(have) or units.conversion(have, "1", name=p.name)[0] != 1:
            raise UnitsError(
                f"params: {p.name} has units {have!r}, but normalised parameters are numbers in "
                f"(0, 1); pass normalised=False for physical values (in {p.units!r})")
        return da
    return units.convert(da, p.units, name=f"params: {p.name}")[0]


def column_inputs(
    ds: xr.Dataset,
    params: Any,
    model: Any,
    *,
    normalised: bool = True,
    batch_dims: Sequence[str] = (),
    names: Sequence[str] | None = None,
) -> ColumnInputs:
    """Steps 1-2 for a steady-state-like computation (monthly climatology forcing).

    Parameters
    ----------
    ds : Dataset
        Forcing (see :func:`xproda.xr.api.steady_state`).
    params : DataArray or Dataset
        Parameters (see :func:`xproda.xr.api.parameters_to_dataarray`).
    model : model instance
    normalised : bool
        Whether ``params`` are normalised.
    batch_dims : sequence of str
        Extra dims accepted as independent sets of columns (besides
        :data:`xproda.xr.contract.BATCH_DIMS`).
    names : sequence of str, optional
        Forcing variables to pass (default the model's required ones).
    """
    names = tuple(names or model.required_forcing)
    conf = contract.conform_forcing(ds, names, batch_dims=batch_dims,
                                    required=list(model.required_forcing), model_name=model.name)
    fvars = [conf.arrays[k] for k in names]
    theta = parameters_to_dataarray(params, model, normalised=normalised)
    theta = align_params(theta, fvars[0], horizontal=conf.horizontal, batch_dims=batch_dims)
    theta = single_chunk(theta, ["parameter"])
    fvars = [single_chunk(v, contract.core_dims(k)) for k, v in zip(names, fvars)]
    theta, *fvars = unify_batch_chunks([theta] + fvars, core=("month", "layer", "parameter"))
    cores = tuple(tuple(d for d in contract.core_dims(k) if d in v.dims)
                  for k, v in zip(names, fvars))
    # theta's non-index coordinates that the forcing has too: the output takes the forcing's
    # (copy_coords), and comparing two lazy copies (e.g. lat/lon on a land-only ``cell``
    # dim) would read both stores once per output variable
    theta = theta.drop_vars([c for c in theta.coords if c not in theta.indexes and c in ds.coords])
    return ColumnInputs(theta, tuple(fvars), names, cores, tuple(conf.notes), conf.horizontal,
                        ds)


# -------------------------------------------------------------------------------------------
# blocks: gather, kernel, scatter
# -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Output:
    """One output of a column function: its tail dims/sizes, dtype and no-data fill."""

    name: str
    dims: tuple[str, ...] = ()
    sizes: tuple[int, ...] = ()
    dtype: Any = np.float64
    fill: Any = np.nan


def full_core(name: str, arr: np.ndarray, core: Sequence[str], batch: tuple) -> np.ndarray:
    """View of ``arr [..batch, core...]`` broadcast to ``batch + kernel core shape``.

    Missing core axes (e.g. a static ``nbedrock`` without ``month``) are inserted and
    broadcast; no data is copied.
    """
    full = contract.core_dims(name)
    a = arr
    nb = arr.ndim - len(core)
    for pos, d in enumerate(full):
        if d not in core:
            a = np.expand_dims(a, nb + pos)
    shape = tuple(batch) + tuple(12 if d == "month" else _N for d in full)
    return np.broadcast_to(a, shape)


def columns(a: np.ndarray, nb: int, *, writeable: bool = True) -> np.ndarray:
    """``a [..batch, core...]`` (``nb`` batch axes) as ``[n, core...]``.

    Equals ``a[ok]`` for an all-True ``ok``, without a copy where ``a`` is C-contiguous (a
    block of a store with the batch dim first, e.g. a land-only ``cell`` store).  With
    ``writeable=False`` a read-only block stays read-only: the kernels' ``as_tensor`` copies
    such arrays itself, and converts float32 blocks to float64 in the same pass, so a copy
    here would be a second one (0.25 s of a 0.25 degree run).
    """
    out = np.ascontiguousarray(a.reshape((-1,) + a.shape[nb:]))
    return out if out.flags.writeable or not writeable else out.copy()


def gather(a: np.ndarray, ok: np.ndarray, nb: int, all_ok: bool) -> np.ndarray:
    """The columns ``ok`` of ``a [..batch, core...]`` as a contiguous ``[n_ok, core...]``."""
    return columns(a, nb) if all_ok else np.ascontiguousarray(a[ok])


def scatter(val: np.ndarray, ok: np.ndarray, batch: tuple, tail: tuple, fill: Any = np.nan,
            dtype: Any = np.float64) -> np.ndarray:
    """``val [n_ok, *tail]`` back onto ``batch + tail``, ``fill`` elsewhere."""
    out = np.full(tuple(batch) + tuple(tail), fill, dtype=dtype)
    out[ok] = val
    return out


def valid_columns(theta: np.ndarray, probe: np.ndarray, nb: int) -> np.ndarray:
    """Columns with data: finite parameters and at least one value of ``probe``."""
    ok = np.isfinite(theta).all(-1)
    return ok & np.isfinite(probe).any(axis=tuple(range(nb, probe.ndim)))


class kernel_context:
    """Inside a task: the captured options, no autograd, torch's thread count as requested.

    ``torch_threads`` is torch's process-wide setting: it is applied (not restored), as the
    user asked for that many threads per worker.
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._options = use_options(options)
        self._threads = options.get("torch_threads")
        self._grad = None

    def __enter__(self) -> None:
        import torch

        if self._threads is not None and torch.get_num_threads() != self._threads:
            torch.set_num_threads(self._threads)
        self._options.__enter__()
        self._grad = torch.no_grad()
        self._grad.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._grad.__exit__(*exc)
        self._options.__exit__(*exc)


def column_block(theta, *forcing, names, cores, fn, outputs, options):
    """Steps 3-5 on one block: ``theta [..., P]``, forcing ``[..., core...]`` (numpy).

    ``fn(theta [n, P], forcing {name: [n, ...]})`` returns one array ``[n, *tail]`` per
    output.  Only columns with data are passed to ``fn`` (the others get each output's
    ``fill``); which columns are skipped never changes a result, since a column without data
    gives NaN and ``no_data`` in the kernels too.
    """
    with kernel_context(options):
        batch = np.broadcast_shapes(
            theta.shape[:-1], *(f.shape[: f.ndim - len(c)] for f, c in zip(forcing, cores)))
        nb = len(batch)
        full = [full_core(n, a, c, batch) for n, a, c in zip(names, forcing, cores)]
        th = np.broadcast_to(theta, batch + theta.shape[-1:])
        small = min(range(len(forcing)), key=lambda i: forcing[i].size)
        ok = valid_columns(th, full[small], nb)
        n_ok = int(ok.sum())
        all_ok = n_ok == ok.size
        res = None
        if n_ok:  # every column valid: no gather copy (e.g. a land-only ``cell`` store)
            res = fn(columns(th, nb, writeable=False) if all_ok else th[ok],
                     {k: columns(a, nb, writeable=False) if all_ok else a[ok]
                      for k, a in zip(names, full)})
        out = []
        for i, o in enumerate(outputs):
            shp = batch + tuple(o.sizes)
            if all_ok:
                out.append(np.asarray(res[i], dtype=o.dtype).reshape(shp))
            elif n_ok:
                out.append(scatter(np.asarray(res[i]), ok, batch, o.sizes, o.fill, o.dtype))
            else:
                out.append(np.full(shp, o.fill, dtype=o.dtype))
        return tuple(out)


def _unwrap(x):
    """The one block of a single-chunk core dim (``blockwise(concatenate=False)`` nests lists)."""
    while isinstance(x, list):
        if len(x) != 1:  # pragma: no cover - core dims are made single-chunk first
            raise AssertionError(f"expected one block along a core dim, got {len(x)}")
        x = x[0]
    return x


def _call_unwrapped(fn, *blocks):
    return fn(*map(_unwrap, blocks))


def apply_blocks(fn, *args, in_cores, out_cores, sizes, dtypes, name="columns"):
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
        meta=np.empty((0,) * nloop, dtype=object),
        name=f"{name}-{tokenize(fn, loop, *arginds)}",
    )
    outs = []
    for i, (core, dt) in enumerate(zip(out_cores, dtypes)):
        oname = f"{tmp.name}-{i}"
        tail = (0,) * len(core)
        dsk = {(oname, *key[1:], *tail): (operator.getitem, key, i)
               for key in flatten(tmp.__dask_keys__())}
        graph = HighLevelGraph.from_collections(oname, dsk, dependencies=[tmp])
        core_shape = tuple(sizes[d] for d in core)
        outs.append(dsa.Array(graph, oname, chunks=tmp.chunks + tuple((n,) for n in core_shape),
                              shape=tmp.shape + core_shape,
                              meta=np.empty((0,) * (nloop + len(core)), dtype=dt)))
    return tuple(outs)


def _first(fn, *args):
    return fn(*args)[0]


def run_columns(
    inputs: ColumnInputs,
    fn: Callable[[np.ndarray, Mapping[str, np.ndarray]], Sequence[np.ndarray]],
    outputs: Sequence[Output],
    *,
    options: Mapping[str, Any] | None = None,
    name: str = "columns",
) -> tuple[xr.DataArray, ...]:
    """Apply a per-column function to every column (lazy on dask input).

    Parameters
    ----------
    inputs : ColumnInputs
        From :func:`column_inputs`.
    fn : callable
        ``fn(theta [n, P], forcing {name: [n, ...]})`` -> one array ``[n, *o.sizes]`` per
        output (numpy); it runs inside :class:`kernel_context`.
    outputs : sequence of Output
    options : mapping, optional
        xproda options for the tasks (default: the current ones, captured now).
    name : str
        Prefix of the dask task names.

    Returns
    -------
    tuple of DataArray
        One per output, with the batch dims of the inputs plus the output's dims, no attrs.
    """
    opts = dict(options) if options is not None else get_options()
    block = functools.partial(column_block, names=inputs.names, cores=inputs.cores, fn=fn,
                              outputs=tuple(outputs), options=opts)
    in_cores = [["parameter"]] + [list(c) for c in inputs.cores]
    out_cores = [list(o.dims) for o in outputs]
    sizes = {d: n for o in outputs for d, n in zip(o.dims, o.sizes)}
    call = functools.partial(apply_blocks, block, in_cores=in_cores, out_cores=out_cores,
                             sizes=sizes, dtypes=[o.dtype for o in outputs], name=name)
    res = xr.apply_ufunc(
        call if len(outputs) > 1 else functools.partial(_first, call),
        inputs.theta, *inputs.forcing,
        input_core_dims=in_cores, output_core_dims=out_cores,
        dask="allowed", keep_attrs=False,
    )
    return res if isinstance(res, tuple) else (res,)


# -------------------------------------------------------------------------------------------
# finishing: coordinates, metadata
# -------------------------------------------------------------------------------------------
def spatial_metadata(out: xr.Dataset, like: xr.Dataset) -> xr.Dataset:
    """Coordinates of ``like``, cell areas, ``cell_measures`` and ``grid_mapping``."""
    out = copy_coords(out, like)
    if "cell_area" not in out.coords:  # else: carried from the input (e.g. a cell store)
        try:
            from xproda import spatial

            area = spatial.cell_area(out)
        except ValueError:  # no recognisable horizontal grid (e.g. a site table): no areas
            area = None
        if area is not None:  # a coordinate: grid metadata (never masked with the results)
            out = out.assign_coords(cell_area=area)
    if "cell_area" in out.coords:
        for k in ("soc", "soc_stock", "pools", "pool_stocks", "turnover_time", "input",
                  "respiration"):
            if k in out:
                out[k].attrs["cell_measures"] = "area: cell_area"
    if "spatial_ref" in out.coords:
        for k in out.data_vars:
            out[k].attrs["grid_mapping"] = "spatial_ref"
    return out


def global_attrs(*, title: str, source: str, action: str,
                 notes: Sequence[str] = ()) -> dict[str, str]:
    """CF global attributes of an output; ``history`` lists the input conversions too."""
    lines = [conventions.history_line(action)]
    lines += [conventions.history_line(f"input conversion: {n}") for n in notes]
    return {"Conventions": conventions.CF_CONVENTIONS, "title": title, "source": source,
            "history": "\n".join(lines)}


# -------------------------------------------------------------------------------------------
# site forcing (numpy, batch first)
# -------------------------------------------------------------------------------------------
def forcing_arrays(
    ds: xr.Dataset,
    *,
    model: Any = "clm5",
    dim: str | None = None,
    batch_dims: Sequence[str] = (),
) -> dict[str, np.ndarray]:
    """Kernel forcing (batch first, :data:`~xproda.models.forcing.FORCING_SCHEMA` shapes).

    Parameters
    ----------
    ds : Dataset
        Forcing with one batch dim (e.g. ``site`` from :func:`xproda.spatial.sample_sites`)
        or several (flattened in order), checked and converted like the gridded forcing.
    model : str or model
        Whose required variables to extract (plus ``CELLSAND`` and ``NPP`` where present).
    dim : str, optional
        The batch dim when ``ds`` has several non-core dims and only one should be used.
    batch_dims : sequence of str
        Extra dims accepted as independent sets of columns.

    Returns
    -------
    dict of ndarray
        ``{name: [n, ...]}`` ready for ``model.steady_state(theta, forcing)``.  Loads data.
    """
    m = resolve_model(model)
    names = list(m.required_forcing) + [k for k in ("CELLSAND", "NPP") if k in ds]
    extra = tuple(batch_dims) + ((dim,) if dim else ())
    conf = contract.conform_forcing(ds, names, batch_dims=extra,
                                    required=list(m.required_forcing), model_name=m.name)
    vars_ = conf.arrays
    if dim:
        bdims = [dim]
    else:
        bdims = []
        for v in vars_.values():
            bdims += [d for d in v.dims if d not in ("month", "layer") and d not in bdims]
    sizes = {d: ds.sizes[d] for d in bdims}
    out = {}
    for k, v in vars_.items():
        core = tuple(d for d in contract.core_dims(k) if d in v.dims)
        v = v.expand_dims({d: sizes[d] for d in bdims if d not in v.dims})
        arr = np.asarray(v.transpose(*bdims, *core).values)
        full = full_core(k, arr, core, tuple(sizes.values()))
        out[k] = np.ascontiguousarray(full.reshape((-1,) + full.shape[len(bdims):]))
    return out
