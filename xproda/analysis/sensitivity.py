"""Marginal sensitivity of the global SOC stock to process groups (spec §8.4), finite and
gradient-based.

A *relative perturbation* ``delta`` of a group multiplies its parameters by ``1 + delta``
everywhere (see :func:`sensitivity` for the exact definition in ``space="physical"``, the
default, and the spec's ``space="normalised"``); the pseudo-group ``"NPP"`` multiplies the
four litter inputs instead.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import xarray as xr

from xproda import conventions, spatial
from xproda.xr import api as xr_api
from xproda.models.base import SoilCarbonModel
from xproda.models.forcing import LITTER_INPUTS
from xproda.analysis import common as _common
from xproda.xr import engine

__all__ = ["DEFAULT_GROUPS", "DEFAULT_LEVELS", "sensitivity", "sensitivity_gradient",
           "compare_sensitivities"]

DEFAULT_GROUPS = ("A", "K", "Xi", "V", "I", "NPP")
DEFAULT_LEVELS = (-0.1, -0.05, 0.05, 0.1)


def _check_space(space: str) -> None:
    if space not in _common.SPACES:
        raise ValueError(f"space: expected one of {_common.SPACES}, found {space!r}")


def _levels(levels: Sequence[float]) -> np.ndarray:
    lv = np.unique(np.append(np.asarray(levels, dtype=float).ravel(), 0.0))
    if not np.isfinite(lv).all() or (lv <= -1).any():
        raise ValueError(f"levels: expected finite relative changes > -1, found {list(levels)}")
    return lv


def _finite_experiments(ds, params, m, groups, lv, space):
    """Theta and forcing with ``(group, level)`` dims for all experiments (lazy)."""
    G = _common.group_matrix(m, groups)  # [G, P]
    fac = 1.0 + lv[None, :, None] * G[:, None, :]  # [G, L, P]
    labels = list(groups)
    factor = xr.DataArray(fac, dims=("group", "level", "parameter"),
                          coords={"group": labels, "level": lv,
                                  "parameter": list(m.parameters.names)})
    th = xr_api.parameters_to_dataarray(params, m)
    th_p = _common.perturbed_theta(th, factor, m, space=space)
    inp = np.array([[1.0 + d if g == _common.INPUTS else 1.0 for d in lv] for g in labels])
    inp = xr.DataArray(inp, dims=("group", "level"), coords={"group": labels, "level": lv})
    return th_p, _common.scaled_inputs(ds, inp)


def sensitivity(
    ds: xr.Dataset,
    params: xr.DataArray | xr.Dataset,
    *,
    groups: Sequence[str] | Mapping[str, Sequence[str]] = DEFAULT_GROUPS,
    levels: Sequence[float] = DEFAULT_LEVELS,
    model: str | SoilCarbonModel = "clm5",
    space: str = "physical",
    depth: tuple[float, float] | None = None,
    land_fraction: xr.DataArray | str | None = "auto",
) -> xr.Dataset:
    """Change of the global SOC stock when one process group is perturbed everywhere.

    For every group ``g`` and level ``delta`` the steady state is recomputed with the
    group's parameters scaled by ``1 + delta`` in every cell; all experiments run as one
    lazy :func:`xproda.xr.api.steady_state` over extra ``group`` and ``level`` dims.

    Parameters
    ----------
    ds : Dataset
        Forcing (as for :func:`xproda.xr.api.steady_state`), optionally with a land
        fraction variable.
    params : DataArray or Dataset
        Normalised parameters on the forcing grid (e.g. a network's prediction).
    groups : sequence of str or mapping, keyword-only
        Groups of the model's :class:`~xproda.ParameterSpace` (clm5: ``A`` transfer
        fractions i.e. CUE-like, ``K`` turnover times, ``Xi`` environmental scalars, ``V``
        transport, ``I`` input profile), ``"NPP"`` (the four litter inputs), or a mapping
        ``label -> parameter names`` (e.g. ``{"CUE": CUE_PARAMETERS["clm5"]}``).
    levels : sequence of float, keyword-only
        Relative perturbations (``0.01`` = +1 %); 0 is always added as the baseline.
    model : str or model, keyword-only, default "clm5"
    space : {"physical", "normalised"}, keyword-only, default "physical"
        ``"physical"``: each physical parameter value is multiplied by ``1 + delta``
        (turnover times, transfer fractions, diffusivities, Q10, e-folding depth, water
        scaling); for ``beta`` the e-folding depth of the input profile
        ``-1 / (100 ln beta)`` is scaled (``beta' = beta ** (1 / (1 + delta))``), since
        beta itself is bounded by 1.  Values are then clipped to the prior range
        (normalised ``[1e-4, 1 - 1e-4]``).  ``"normalised"``: the spec's definition
        ``theta' = theta (1 + delta)`` on the normalised values (beta capped at 0.98);
        the relative change of the physical value then differs per parameter (spec §10
        item 42).
    depth : (top, bottom), keyword-only, optional
        Depth interval in m; default the whole 0-8.6 m column (spec §8.4, cen).
    land_fraction : DataArray, str or None, keyword-only, default "auto"
        Weights of the global totals besides the cell area: a variable name of ``ds``, a
        DataArray, ``"auto"`` (a variable with ``standard_name = land_area_fraction`` if
        ``ds`` has one) or ``None`` (whole cells).

    Returns
    -------
    Dataset
        * ``soc_stock`` ``(group, level, <spatial>)``: stock maps (kg m-2);
        * ``global_stock`` ``(group, level)``: Pg C, area- and land-fraction-weighted over
          the cells valid in *every* experiment (the fixed cell set of spec §10 item 43);
        * ``global_stock_change`` ``(group, level)``: Pg C relative to ``level = 0``;
        * ``relative_change`` ``(group, level)``: % of the baseline stock;
        * ``elasticity`` ``(group, level)``: ``relative change / delta`` (1; NaN at 0).

        Lazy on dask input; chunk-invariant.

    Examples
    --------
    The "+1 % CUE" experiment: transfer fractions (CLM5 group ``A`` without ``fcwdl2``)
    raised by 1 % everywhere:

    >>> from xproda.datasets import synthetic_world, truth_parameters, CUE_PARAMETERS
    >>> world = synthetic_world(6.0)                                    # doctest: +SKIP
    >>> theta = truth_parameters(world, kind="cue")                     # doctest: +SKIP
    >>> res = sensitivity(world, theta, groups={"CUE": CUE_PARAMETERS["clm5"]},
    ...                   levels=[0.01])                                # doctest: +SKIP
    >>> float(res["global_stock_change"].sel(group="CUE", level=0.01))  # doctest: +SKIP
    """
    _check_space(space)
    m = engine.resolve_model(model)
    grp = _common.resolve_groups(m, groups)
    lv = _levels(levels)
    lf = spatial.land_fraction_of(ds, land_fraction)
    th_p, ds_p = _finite_experiments(ds, params, m, grp, lv, space)
    out = xr_api.steady_state(ds_p, th_p, model=m, batch_dims=("group", "level"))
    stock = _common.stock_of(out["soc"], depth)
    sdims = spatial.spatial_dims(stock)
    stock = stock.transpose("group", "level", *sdims, ...)
    valid = stock.notnull().all(("group", "level"))
    tot = xr_api.global_total(stock.where(valid), land_fraction=lf)
    base = tot.sel(level=0.0)
    change = tot - base
    rel = 100.0 * change / base
    lvl = xr.DataArray(lv, dims="level", coords={"level": lv})
    elast = (change / base / lvl).where(lvl != 0)
    label = _common.depth_label(depth)
    res = conventions.annotate(xr.Dataset({
        "soc_stock": stock, "global_stock": tot, "global_stock_change": change,
        "relative_change": rel, "elasticity": elast,
    }), "sensitivity", fields={"depth": label})
    res["group"].attrs["members"] = "; ".join(f"{k}: {' '.join(v) or 'litter inputs'}"
                                              for k, v in grp.items())
    res.attrs = {"space": space, "depth": label, "model": m.name,
                 "history": conventions.history_line(f"sensitivity(space={space!r})")}
    return res


# -------------------------------------------------------------------------------------------
# gradients
# -------------------------------------------------------------------------------------------
def _gradient_columns(th, f, *, model, gmat, inputs_col, weights, space):
    """Per-column stock (kg m-2) and d stock / d s_g (kg m-2 per unit relative change)."""
    import torch

    n, G = th.shape[0], gmat.shape[0]
    size = 4096
    stock_out, grad_out = np.empty(n), np.empty((n, G))
    w = torch.tensor(np.array(weights, dtype=np.float64))
    gm = torch.as_tensor(gmat, dtype=torch.float64)
    for i in range(0, n, size):
        sl = slice(i, min(n, i + size))
        t = torch.as_tensor(th[sl], dtype=torch.float64)
        s = torch.zeros((t.shape[0], G), dtype=torch.float64, requires_grad=True)
        with torch.enable_grad():
            fac = 1.0 + s @ gm  # [n, P]
            tp = _common.scale_theta(t, fac, model, space=space)
            ff = {k: torch.as_tensor(v[sl], dtype=torch.float64) for k, v in f.items()}
            if inputs_col is not None:
                sc = (1.0 + s[:, inputs_col]).unsqueeze(-1)
                for k in LITTER_INPUTS:
                    ff[k] = ff[k] * sc
            out = model.steady_state(tp, ff)
            stock = (out["soc"] * w).sum(-1) / 1000.0
            ok = torch.isfinite(stock)
            (g,) = torch.autograd.grad(torch.where(ok, stock, 0.0).sum(), s)
        st = stock.detach().numpy()
        stock_out[sl] = st
        grad_out[sl] = np.where(np.isfinite(st)[:, None], g.numpy(), np.nan)
    return stock_out, grad_out


def sensitivity_gradient(
    ds: xr.Dataset,
    params: xr.DataArray | xr.Dataset,
    *,
    groups: Sequence[str] | Mapping[str, Sequence[str]] = DEFAULT_GROUPS,
    model: str | SoilCarbonModel = "clm5",
    space: str = "physical",
    depth: tuple[float, float] | None = None,
    land_fraction: xr.DataArray | str | None = "auto",
) -> xr.Dataset:
    """Gradient of the SOC stock with respect to a relative scaling of each group (autograd).

    The derivative at ``delta = 0`` of the quantities of :func:`sensitivity` (same
    definition of the perturbation), from one forward and one backward pass of the
    differentiable steady state per column for all groups at once.

    Parameters
    ----------
    ds, params, groups, model, space, depth, land_fraction
        As for :func:`sensitivity`.

    Returns
    -------
    Dataset
        * ``dsoc_stock`` ``(group, <spatial>)``: d stock / d delta (kg m-2 per unit
          relative change, i.e. per +100 %);
        * ``soc_stock`` ``(<spatial>)``: baseline stock (kg m-2);
        * ``global_gradient`` ``(group)``: d global stock / d delta (Pg C per unit relative
          change; times 0.01 gives Pg C per +1 %);
        * ``global_stock``: baseline (Pg C);
        * ``elasticity`` ``(group)``: ``global_gradient / global_stock`` (1).

        Lazy on dask input; chunk-invariant.  At cells where a parameter sits on the
        clipping bound the derivative is one-sided (zero), unlike finite perturbations.
    """
    _check_space(space)
    m = engine.resolve_model(model)
    grp = _common.resolve_groups(m, groups)
    lf = spatial.land_fraction_of(ds, land_fraction)
    labels = list(grp)
    gmat = _common.group_matrix(m, grp)
    inputs_col = labels.index(_common.INPUTS) if _common.INPUTS in labels else None
    weights = _common.depth_layer_weights(depth)

    def fn(th, f):
        return _gradient_columns(th, f, model=m, gmat=gmat, inputs_col=inputs_col,
                                 weights=weights, space=space)

    stock, grad = _common.gridded_columns(ds, params, m, fn, [(), (len(labels),)],
                                          [[], ["group"]])
    grad = grad.assign_coords(group=labels)
    sdims = spatial.spatial_dims(stock)
    grad = grad.transpose("group", *sdims, ...)
    valid = stock.notnull() & grad.notnull().all("group")
    label = _common.depth_label(depth)
    stock, grad = stock.where(valid), grad.where(valid)
    tot = xr_api.global_total(stock, land_fraction=lf, stock_units="kg m-2")
    gtot = xr_api.global_total(grad, land_fraction=lf, stock_units="kg m-2")
    res = conventions.annotate(xr.Dataset({
        "dsoc_stock": grad, "soc_stock": stock, "global_gradient": gtot, "global_stock": tot,
        "elasticity": gtot / tot,
    }), "sensitivity_gradient", fields={"depth": label})
    res.attrs = {"space": space, "depth": label, "model": m.name,
                 "history": conventions.history_line(f"sensitivity_gradient(space={space!r})")}
    return res


def compare_sensitivities(
    ds: xr.Dataset,
    params: xr.DataArray | xr.Dataset,
    *,
    groups: Sequence[str] | Mapping[str, Sequence[str]] = DEFAULT_GROUPS,
    delta: float = 0.01,
    model: str | SoilCarbonModel = "clm5",
    space: str = "physical",
    depth: tuple[float, float] | None = None,
    land_fraction: xr.DataArray | str | None = "auto",
) -> xr.Dataset:
    """Gradient-based vs finite-perturbation sensitivities on the same cells.

    Parameters
    ----------
    delta : float, keyword-only, default 0.01
        Relative perturbation of the finite runs (``+delta`` and ``-delta``).
    ds, params, groups, model, space, depth, land_fraction
        As for :func:`sensitivity`.

    Returns
    -------
    Dataset
        Per group (Pg C per unit relative change): ``gradient`` (autograd),
        ``central_difference`` ``(S(+delta) - S(-delta)) / (2 delta)``,
        ``forward_difference`` ``(S(+delta) - S(0)) / delta``, and
        ``relative_difference`` = ``central_difference / gradient - 1`` (1).  Computed
        (not lazy): the totals of both methods use the cells valid in all runs.
    """
    if not 0 < float(delta) < 1:
        raise ValueError(f"delta: expected a relative change in (0, 1), found {delta}")
    fin = sensitivity(ds, params, groups=groups, levels=(-delta, delta), model=model,
                      space=space, depth=depth, land_fraction=land_fraction)
    grd = sensitivity_gradient(ds, params, groups=groups, model=model, space=space,
                               depth=depth, land_fraction=land_fraction)
    maps = fin["soc_stock"]
    valid = maps.notnull().all(("group", "level")) & grd["dsoc_stock"].notnull().all("group")
    lf = spatial.land_fraction_of(ds, land_fraction)
    fin_t = xr_api.global_total(maps.where(valid), land_fraction=lf)
    g_t = xr_api.global_total(grd["dsoc_stock"].where(valid), land_fraction=lf,
                              stock_units="kg m-2")
    fin_t, g_t = (x.compute() for x in (fin_t, g_t))
    lv = fin_t["level"].values
    up, lo = lv.max(), lv.min()
    central = (fin_t.sel(level=up) - fin_t.sel(level=lo)) / (up - lo)
    forward = (fin_t.sel(level=up) - fin_t.sel(level=0.0)) / up
    out = xr.Dataset({
        "gradient": g_t, "central_difference": central, "forward_difference": forward,
    }).drop_vars("level", errors="ignore")
    out["relative_difference"] = out["central_difference"] / out["gradient"] - 1.0
    out = conventions.annotate(out, "compare_sensitivities")
    out.attrs = {"delta": float(delta), "space": space}
    return out
