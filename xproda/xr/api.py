"""xarray functions behind the ``.proda`` accessor (lazy, chunk-invariant, metadata-aware).

Every function takes and returns xarray objects.  Column computations go through the column
engine (:mod:`xproda.xr.engine`: input contract, alignment, gather, kernel call, scatter,
metadata from :mod:`xproda.conventions`).  Nothing is computed while the graph is built;
numpy-backed input gives numpy-backed output; results do not depend on chunking because every
soil column is independent.

Dims: forcing variables carry ``month`` (12) and/or ``layer`` (20, or more: the first 20 are
used) plus the horizontal dims of the grid (found through CF attributes or common names) or
batch dims (``site``, ``cell``, ``member``... :data:`xproda.xr.contract.BATCH_DIMS`, and any
declared with ``batch_dims=``); the parameters carry ``parameter``.  Any other dim is an
error naming it.
"""

from __future__ import annotations

import functools
from typing import Any, Callable, Sequence

import numpy as np
import xarray as xr

from xproda import conventions, grid
from xproda.xr import contract
from xproda.xr import engine
from xproda.xr.engine import forcing_arrays, parameters_to_dataarray
from xproda.models import FLAGS
from xproda.models.base import SoilCarbonModel

__all__ = [
    "steady_state",
    "predict_parameters",
    "soc_stock",
    "turnover_time",
    "global_total",
    "validate",
    "parameters_to_dataarray",
    "forcing_arrays",
]

_N_LAYERS = grid.N_LAYERS


# -------------------------------------------------------------------------------------------
# steady state
# -------------------------------------------------------------------------------------------
_TAILS = {"soc": ("layer",), "pools": ("layer", "pool"), "pool_stocks": ("pool",)}
_KG = ("soc_stock", "pool_stocks")  # kernel g m-2 -> output kg m-2


def _steady_columns(theta, forcing, *, model, outputs):
    """Kernel call on the gathered columns of a block: one array per output."""
    sub = model.steady_state(theta, forcing)
    return [np.asarray(sub[k]) / 1000.0 if k in _KG else np.asarray(sub[k]) for k in outputs]


def steady_state(
    ds: xr.Dataset,
    params: xr.DataArray | xr.Dataset,
    *,
    model: str | SoilCarbonModel = "clm5",
    reference: bool = False,
    normalised: bool = True,
    pools: bool = False,
    batch_dims: Sequence[str] = (),
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
        25 ground levels) is cut to the 20 decomposition layers.  Units are read from the
        ``units`` attributes and converted where needed (recorded in ``history``); see
        :mod:`xproda.xr.contract` for the whole input contract.
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
    batch_dims : sequence of str, default ()
        Dims of ``ds`` or ``params`` that hold independent sets of columns besides the
        horizontal dims and :data:`xproda.xr.contract.BATCH_DIMS` (e.g. an experiment dim).
        Any other dim is refused (a monthly ``time`` dim, say, with advice).
    **model_options
        Switches of :class:`~xproda.models.base.ModelOptions`.

    Returns
    -------
    Dataset
        ``soc`` (g m-3, per layer), ``soc_stock`` (kg m-2, 0-8.6 m), ``turnover_time`` (yr),
        ``input`` and ``respiration`` (g m-2 yr-1), ``flags`` (see :data:`xproda.FLAGS`),
        plus the coordinate ``cell_area`` (m2) where the grid has latitude/longitude.  Lazy
        where ``ds`` or ``params`` is dask-backed.  Cells without data (ocean, NaN
        parameters) are NaN and flagged ``no_data``; they cost nothing.

    Raises
    ------
    xproda.errors.InputError
        (a ``ValueError``) listing every problem of the forcing visible without reading data:
        missing variables, unknown dims, wrong sizes, unreadable or inconvertible units.
        Values outside the plausible range of a variable (fill values, unit mistakes) raise
        when computed, naming the variable.
    xproda.errors.GridError
        Parameters on a grid that cannot be matched with the forcing's.

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
    m = engine.resolve_model(model, reference, model_options)
    inputs = engine.column_inputs(ds, params, m, normalised=normalised, batch_dims=batch_dims)
    keys = ["soc", "soc_stock", "turnover_time", "input", "respiration", "flags"]
    if pools:
        keys += ["pools", "pool_stocks"]
    n_pools = len(m.pools)
    sizes = {"layer": _N_LAYERS, "pool": n_pools}
    outputs = [engine.Output(k, _TAILS.get(k, ()), tuple(sizes[d] for d in _TAILS.get(k, ())),
                             np.int64 if k == "flags" else np.float64,
                             FLAGS["no_data"] if k == "flags" else np.nan) for k in keys]
    fn = functools.partial(_steady_columns, model=m, outputs=tuple(keys))
    results = engine.run_columns(inputs, fn, outputs, name="steady_state")
    out = xr.Dataset()
    for key, da in zip(keys, results):
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
        out = out.assign_coords(pool=("pool", list(m.pools),
                                      conventions.attrs("pool", section="coordinates")))
    out = engine.spatial_metadata(out, ds)
    out.attrs = engine.global_attrs(
        title=f"Steady-state soil organic carbon ({m.name} model)",
        source=f"xproda {_version()} {m.name} model "
               f"({'reference' if m.options.reference else 'corrected'} mode)",
        action=f"steady_state(model={m.name!r})", notes=inputs.notes)
    return out


def _version() -> str:
    from xproda import __version__

    return __version__


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
        y = apply_net(net, np.ascontiguousarray(flat[ok]))
        if y.shape != (int(ok.sum()),) + n_out:
            raise ValueError(f"net returned shape {y.shape}, expected {(int(ok.sum()),) + n_out}")
        out[ok] = y
    return out.reshape(batch + n_out)


def apply_net(net, x: np.ndarray) -> np.ndarray:
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


def _covariate_in_units(da: xr.DataArray, expected: str | None, name: str) -> xr.DataArray:
    """Covariate ``name`` in the units the network was trained with (``expected``)."""
    import warnings

    from xproda import units

    if expected is None:
        return da
    if "units" not in da.attrs:
        warnings.warn(f"covariate {name!r} has no units attribute; the network was trained "
                      f"with {expected!r}: assuming those", UserWarning, stacklevel=3)
        return da
    return units.convert(da, expected, name=f"covariate {name}")[0]


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
        (a :class:`~xproda.learning.network.ParameterNet` scales them itself).
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
        Listing every feature the network needs that ``covariates`` lacks; for features the
        network learnt from values measured at the sites (``net.site_features``) the message
        says so.
    xproda.errors.UnitsError
        A covariate whose ``units`` cannot be converted to the units the network was trained
        with (``net.feature_units``); convertible ones (``K``/``degC``, ``m``/``mm``...) are
        converted.
    """
    import dask
    import dask.array as dsa

    feats = list(features if features is not None else getattr(net, "feature_names", []) or [])
    if not feats:
        raise ValueError("features are unknown: pass features=[...] or use a net with "
                         "a feature_names attribute")
    site = [f for f in getattr(net, "site_features", ()) if f in feats
            and f not in covariates.variables]
    if site:
        raise KeyError(
            f"the network was trained with site covariate(s) {site}, measured at the training "
            f"profiles, and the covariates grid lacks them: a map of the same quantity under "
            f"the same name and units (e.g. a gridded clay fraction) is needed to apply it to "
            f"a grid; found {sorted(map(str, covariates.data_vars))}")
    require_features(covariates, feats, needed_by=" needed by the network")
    names = parameter_names or getattr(net, "parameter_names", None)
    if names is None:
        mname = model if model is not None else getattr(net, "model_name", "clm5")
        names = engine.resolve_model(mname).parameters.names
    names = [str(n) for n in names]
    n_members = getattr(net, "n_members", None)
    tail = (len(names),) if n_members is None else (int(n_members), len(names))
    tail_dims = ["parameter"] if n_members is None else ["member", "parameter"]
    trained = dict(zip(getattr(net, "feature_names", ()), getattr(net, "feature_units", ())))
    cols = [engine.strip(_covariate_in_units(covariates[f], trained.get(f), f)) for f in feats]
    cols = xr.broadcast(*cols)
    x = xr.concat(cols, dim="feature", coords="minimal", compat="override").transpose(..., "feature")
    x = engine.single_chunk(x, ["feature"]).astype(np.float64)
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
    >>> float(xproda.xr.api.soc_stock(soc, depth=(0, 0.3))[0])
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
            depth_top=("depth_interval", [a for a, _ in ivals],
                       conventions.attrs("depth_top", section="coordinates")),
            depth_bottom=("depth_interval", [b for _, b in ivals],
                          conventions.attrs("depth_bottom", section="coordinates")),
        )
        label = "the depth_interval"
    out.attrs = conventions.attrs("soc_stock", section="stocks", fields={"depth": label})
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
    tau.attrs = (conventions.attrs("turnover_time") if depth is None else conventions.attrs(
        "turnover_time", section="stocks", fields={"depth": f"{depth} m"}))
    tau.name = "turnover_time"
    return tau


def global_total(
    obj: xr.Dataset | xr.DataArray,
    *,
    depth: tuple[float, float] | Sequence[tuple[float, float]] | None = None,
    area: xr.DataArray | None = None,
    land_fraction: xr.DataArray | str | None = "auto",
    radius: float | None = None,
    stock_units: str | None = None,
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
    land_fraction : DataArray, str or None, default "auto"
        Land fraction of each cell (0..1 or %), the name of a variable of ``obj``, ``"auto"``
        (a variable with ``standard_name = land_area_fraction`` if ``obj`` has one; the
        default of the analyses too) or ``None`` (whole cells).
    radius : float, optional
        Sphere radius (m) of the default cell areas (see :func:`xproda.spatial.cell_area`).
    stock_units : str, optional
        Units of a stock DataArray when it has no ``units`` attribute.

    Returns
    -------
    DataArray
        Pg C (lazy on dask input).
    """
    from xproda import spatial

    land_fraction = spatial.land_fraction_of(obj, land_fraction)
    if isinstance(obj, xr.Dataset):
        if area is None and "cell_area" in obj:
            area = obj["cell_area"]
        stock = soc_stock(obj, depth=depth) if ("soc" in obj and (depth is not None or
                                                                  "soc_stock" not in obj)) \
            else obj["soc_stock"]
    elif "layer" in obj.dims:
        stock = soc_stock(obj, depth=depth)
    else:
        stock = obj
    extra = {} if radius is None else {"radius": radius}
    return spatial.global_total(stock, area=area, land_fraction=land_fraction,
                                stock_units=stock_units, **extra)


# -------------------------------------------------------------------------------------------
# validation without reading data
# -------------------------------------------------------------------------------------------
def validate(
    ds: xr.Dataset,
    *,
    model: str | SoilCarbonModel = "clm5",
    params: xr.DataArray | xr.Dataset | None = None,
    batch_dims: Sequence[str] = (),
    transient: bool = False,
    raise_on_error: bool = True,
) -> list[str]:
    """Check a forcing Dataset (and parameters) for a model run without reading any data.

    Checks, for every variable the model needs (:mod:`xproda.xr.contract`): presence, dims
    (core dims, horizontal dims, batch dims; any other dim -- e.g. a monthly ``time`` for a
    steady state -- is a problem), sizes (``month`` = 12, ``layer`` >= 20), numeric dtype and
    units (readable, convertible to the schema's; dimensional variables need units); then
    parameter names and whether the parameters' grid can be matched with the forcing's.
    Value ranges are checked when the kernels run.

    Parameters
    ----------
    ds : Dataset
        Forcing.
    model : str or model, default "clm5"
    params : DataArray or Dataset, optional
        Parameters to check as well.
    batch_dims : sequence of str, default ()
        Extra dims accepted as independent sets of columns (as for :func:`steady_state`).
    transient : bool, default False
        Check for a transient run (monthly variables on ``time``) instead of a steady state.
    raise_on_error : bool, default True
        Raise :class:`xproda.errors.InputError` (a ``ValueError``) listing every problem;
        otherwise return the list.

    Returns
    -------
    list of str
        Problems found (empty when valid).
    """
    m = engine.resolve_model(model)
    steps = "time" if transient else "month"
    required = list(m.required_forcing)
    problems = contract.forcing_problems(ds, required, steps=steps, batch_dims=batch_dims,
                                         model_name=m.name)
    if params is not None:
        try:
            theta = parameters_to_dataarray(params, m)
            if problems == [] and theta.ndim > 1:
                like = ds[required[0]]
                engine.align_params(theta.isel(parameter=0), like, core=(),
                                    horizontal=contract.horizontal_dims(ds[required]),
                                    batch_dims=batch_dims)
        except (KeyError, ValueError, TypeError) as err:
            problems.append(f"params: {err}")
    if problems and raise_on_error:
        contract.raise_problems(problems, "input")
    return problems
