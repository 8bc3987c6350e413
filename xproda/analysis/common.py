"""Shared pieces of the analyses: gridded column kernels, perturbations, weights.

Every gridded analysis runs through the column engine (:mod:`xproda.xr.engine`: input contract,
parameter alignment, gather/scatter, options passed to the tasks), so it is lazy and
chunk-invariant in the same way as :func:`xproda.xr.api.steady_state`.
"""

from __future__ import annotations

import functools
from typing import Callable, Mapping, Sequence

import numpy as np
import xarray as xr

from xproda import grid
from xproda.xr import engine
from xproda.xr import api as xr_api
from xproda.models.base import SoilCarbonModel
from xproda.models.forcing import LITTER_INPUTS

#: name of the pseudo-group that scales the litter inputs (NPP) instead of parameters
INPUTS = "NPP"
#: normalised parameters are kept in [THETA_MIN, THETA_MAX] after a perturbation (spec §8.4
#: clips theta <= 0 to 1e-4; the kernels need theta strictly inside (0, 1))
THETA_MIN, THETA_MAX = 1e-4, 1.0 - 1e-4
#: spec §8.4 caps the normalised beta at 0.98 in its (normalised) perturbations
BETA_CAP = 0.98
SPACES = ("physical", "normalised")


def resolve_groups(
    model: SoilCarbonModel, groups: Sequence[str] | Mapping[str, Sequence[str]]
) -> dict[str, tuple[str, ...]]:
    """``{label: parameter names}``; the label ``"NPP"`` (no names) scales the inputs."""
    space = model.parameters
    known = space.groups
    out: dict[str, tuple[str, ...]] = {}
    if isinstance(groups, str):
        groups = [groups]
    items = groups.items() if isinstance(groups, Mapping) else ((g, None) for g in groups)
    for label, names in items:
        label = str(label)
        if names is None:
            if label == INPUTS:
                out[label] = ()
            elif label in known:
                out[label] = known[label]
            else:
                raise ValueError(
                    f"groups: unknown group {label!r}; expected one of "
                    f"{list(known) + [INPUTS]} for model {model.name!r} or a mapping "
                    "label -> parameter names")
        else:
            names = tuple(str(n) for n in ([names] if isinstance(names, str) else names))
            for n in names:
                space.index(n)  # KeyError naming the parameter
            out[label] = names
    if not out:
        raise ValueError("groups: expected at least one group, found none")
    return out


def group_matrix(model: SoilCarbonModel, groups: Mapping[str, tuple[str, ...]]) -> np.ndarray:
    """Boolean ``[G, P]``: parameter p belongs to group g."""
    names = model.parameters.names
    return np.array([[n in members for n in names] for members in groups.values()], dtype=bool)


# -------------------------------------------------------------------------------------------
# perturbations (numpy and torch alike)
# -------------------------------------------------------------------------------------------
def _clip(x, lo, hi):
    if hasattr(x, "clamp"):
        return x.clamp(lo, hi)
    return np.clip(x, lo, hi)


def _log(x):
    return x.log() if hasattr(x, "log") else np.log(x)


def _exp(x):
    return x.exp() if hasattr(x, "exp") else np.exp(x)


def scale_theta(theta, factor, model: SoilCarbonModel, *, space: str):
    """Relative perturbation of normalised ``theta [..., P]`` by ``factor [..., P]``.

    ``space="physical"``: each physical value is multiplied by its factor, except ``beta``
    whose e-folding depth of the input profile is (``beta' = beta ** (1 / factor)``), then
    mapped back and clipped to the prior range.  ``space="normalised"``: the spec's
    ``theta * factor`` (clipped, ``beta`` at most 0.98).  A factor of 1 leaves a parameter
    exactly unchanged.
    """
    cols = []
    for i, p in enumerate(model.parameters):
        th, f = theta[..., i], factor[..., i]
        if space == "normalised":
            new = th * f
            hi = min(BETA_CAP, THETA_MAX) if p.name == "beta" else THETA_MAX
        else:
            phys = p.to_physical(th)
            phys = _exp(_log(phys) / f) if p.name == "beta" else phys * f
            new = p.to_normalized(phys)
            hi = THETA_MAX
        new = _clip(new, THETA_MIN, hi)
        if hasattr(f, "detach"):  # torch: exactly unchanged where f == 1 and no gradient
            cols.append(new)
        else:
            cols.append(np.where(f == 1.0, th, new))
    if hasattr(theta, "new_tensor"):
        import torch

        return torch.stack(cols, -1)
    return np.stack(cols, -1)


def perturbed_theta(theta: xr.DataArray, factor: xr.DataArray, model: SoilCarbonModel,
                    *, space: str) -> xr.DataArray:
    """Lazy :func:`scale_theta` on DataArrays (``factor`` has a ``parameter`` dim)."""
    theta = engine.single_chunk(theta, ["parameter"])
    out = xr.apply_ufunc(
        functools.partial(scale_theta, model=model, space=space), theta, factor,
        input_core_dims=[["parameter"], ["parameter"]], output_core_dims=[["parameter"]],
        dask="parallelized", output_dtypes=[np.float64],
    )
    return out.where(theta.notnull())  # NaN (no data) stays NaN


def scaled_inputs(ds: xr.Dataset, factor: xr.DataArray | float) -> xr.Dataset:
    """``ds`` with the four litter inputs multiplied by ``factor`` (lazy, attrs kept)."""
    out = ds.copy()
    for k in LITTER_INPUTS:
        out[k] = (ds[k] * factor).assign_attrs(ds[k].attrs)
    return out


# -------------------------------------------------------------------------------------------
# weights and reductions
# -------------------------------------------------------------------------------------------
def cell_weights(like: xr.DataArray | xr.Dataset, land_fraction: xr.DataArray | None) -> xr.DataArray:
    """Cell area (m2) times land fraction on the spatial grid of ``like``."""
    from xproda import spatial

    area = spatial.cell_area(like)
    w = area.drop_vars(list(area.coords))
    if land_fraction is not None:
        w = w * spatial.fraction(land_fraction).drop_vars(list(land_fraction.coords))
    return w


def weighted_mean(da: xr.DataArray, w: xr.DataArray, dims: Sequence[str]) -> xr.DataArray:
    """Weighted mean over ``dims`` of the finite values of ``da`` (lazy)."""
    ww = w.where(da.notnull())
    return (da.fillna(0.0) * ww).sum(dims) / ww.sum(dims)


def stock_of(soc: xr.DataArray, depth) -> xr.DataArray:
    """Depth-integrated stock (kg m-2) of ``soc``: :func:`xproda.xr.api.soc_stock`."""
    return xr_api.soc_stock(soc, depth=depth)


def depth_layer_weights(depth) -> np.ndarray:
    """Per-layer weights (m) of a depth interval, partial layers linear (spec §8.1)."""
    if depth is None:
        return np.asarray(grid.DZ[: grid.N_LAYERS], dtype=float)
    top, bottom = (float(x) for x in np.asarray(depth, dtype=float).reshape(2))
    return np.asarray(grid.depth_weights(top, bottom), dtype=float)


def depth_label(depth) -> str:
    if depth is None:
        return f"0-{grid.SOIL_DEPTH:g} m"
    top, bottom = (float(x) for x in np.asarray(depth, dtype=float).reshape(2))
    return f"{top:g}-{bottom:g} m"


# -------------------------------------------------------------------------------------------
# generic gridded column kernel
# -------------------------------------------------------------------------------------------
def gridded_columns(
    ds: xr.Dataset,
    params,
    model: SoilCarbonModel,
    fn: Callable[[np.ndarray, Mapping[str, np.ndarray]], Sequence[np.ndarray]],
    tails: Sequence[tuple[int, ...]],
    tail_dims: Sequence[Sequence[str]],
    *,
    batch_dims: Sequence[str] = (),
) -> tuple[xr.DataArray, ...]:
    """Apply a per-column kernel ``fn`` to every column of a forcing grid (lazy on dask).

    ``fn`` maps ``theta [n, P]`` and kernel forcing ``{name: [n, ...]}`` (numpy) to a list
    of arrays ``[n, *tail]``; the outputs carry the batch dims of the inputs plus
    ``tail_dims``.  Runs through the column engine (:mod:`xproda.xr.engine`).
    """
    inputs = engine.column_inputs(ds, params, model, batch_dims=batch_dims)
    outputs = [engine.Output(f"out{i}", tuple(d), tuple(t))
               for i, (d, t) in enumerate(zip(tail_dims, tails))]
    res = engine.run_columns(inputs, fn, outputs, name="analysis")
    return tuple(engine.copy_coords(r.to_dataset(name="_v"), ds)["_v"].rename(None)
                 for r in res)
