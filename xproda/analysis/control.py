"""Component control (spec §8.5): which group's spatial variation controls the SOC map."""

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

__all__ = ["DEFAULT_CONTROL_GROUPS", "component_control", "ranking"]

DEFAULT_CONTROL_GROUPS = ("A", "K", "Xi", "V", "I", "NPP")


def component_control(
    ds: xr.Dataset,
    params: xr.DataArray | xr.Dataset,
    *,
    groups: Sequence[str] | Mapping[str, Sequence[str]] = DEFAULT_CONTROL_GROUPS,
    model: str | SoilCarbonModel = "clm5",
    depth: tuple[float, float] | None = (0.0, 1.0),
    land_fraction: xr.DataArray | str | None = "auto",
) -> xr.Dataset:
    """Replace one group's spatial field by its global mean and measure what is lost.

    For each group the normalised parameters of the group are set, in every cell, to their
    area- (and land-fraction-) weighted mean over the land cells; for ``"NPP"`` each of the
    four litter inputs is set to its weighted land mean of each month.  All treatments run
    as one lazy steady state over an extra ``group`` dim.

    Parameters
    ----------
    ds : Dataset
        Forcing, optionally with a land fraction variable.
    params : DataArray or Dataset
        Normalised parameters on the forcing grid (the "fully varying" map, component 1).
    groups : sequence of str or mapping, keyword-only
        As for :func:`~xproda.analysis.sensitivity`; default A, K, Xi, V, I and NPP.
    model : str or model, keyword-only, default "clm5"
    depth : (top, bottom) or None, keyword-only, default (0, 1)
        Depth interval of the stocks in m (None: 0-8.6 m).
    land_fraction : DataArray, str or None, keyword-only, default "auto"
        As for :func:`~xproda.analysis.sensitivity`; also weights the means.

    Returns
    -------
    Dataset
        With the cells valid in the full run and in every treatment (one cell set):

        * ``soc_stock`` ``(group, <spatial>)`` and ``soc_stock_full`` (kg m-2);
        * ``global_stock`` ``(group)`` and ``global_stock_full`` (Pg C);
        * ``global_stock_change`` ``(group)``: Pg C, homogenised minus full;
        * ``total_absolute_deviation`` ``(group)``: ``sum |S_g - S_full| area lf`` (Pg C,
          the microbial-model metric of spec §8.5);
        * ``variation_loss`` ``(group)``: ``1 - R2`` of the homogenised log-stock map as a
          prediction of the full one, ``sum w (ln S_full - ln S_g)^2 / sum w (ln S_full -
          mean_w ln S_full)^2`` (w = area x land fraction): the share of the spatial
          variance of (log) SOC that is lost when the group is homogenised (0: none; 1 or
          more: all of it).  Logs because stocks vary over orders of magnitude and
          homogenising a group can create a few extreme cells that would dominate squared
          stock errors;
        * ``variation_loss_linear`` ``(group)``: the same with stocks instead of log stocks;
        * ``mean_abs_log_change`` ``(group)``: ``sum w |ln(S_g / S_full)| / sum w`` (1);

        Lazy on dask input; chunk-invariant up to the summation order of the means.  Order
        the groups with :func:`ranking`.
    """
    m = engine.resolve_model(model)
    grp = _common.resolve_groups(m, groups)
    labels = list(grp)
    lf = spatial.land_fraction_of(ds, land_fraction)
    th = xr_api.parameters_to_dataarray(params, m)
    sdims = spatial.spatial_dims(th)
    w = _common.cell_weights(th, lf)
    th_mean = _common.weighted_mean(th, w, sdims)  # (parameter,)
    G = xr.DataArray(_common.group_matrix(m, grp), dims=("group", "parameter"),
                     coords={"group": labels, "parameter": list(m.parameters.names)})
    th_cc = xr.where(G & th.notnull(), th_mean, th).transpose(..., "parameter")
    # treatments plus the full run (group "full")
    full_th = th.expand_dims(group=["__full__"])
    th_all = xr.concat([th_cc, full_th], dim="group", coords="minimal", compat="override")
    is_inp = xr.DataArray([g == _common.INPUTS for g in labels] + [False], dims="group",
                          coords={"group": labels + ["__full__"]})
    ds_all = ds.copy()
    for k in LITTER_INPUTS:
        v = ds[k]
        mean = _common.weighted_mean(v, w, sdims)
        ds_all[k] = xr.where(is_inp & v.notnull(), mean, v).assign_attrs(v.attrs)
    out = xr_api.steady_state(ds_all, th_all, model=m, batch_dims=("group",))
    stock = _common.stock_of(out["soc"], depth).transpose("group", *sdims, ...)
    valid = stock.notnull().all("group")
    stock = stock.where(valid)
    full = stock.sel(group="__full__", drop=True)
    treat = stock.sel(group=labels)
    tot = xr_api.global_total(treat, land_fraction=lf)
    tot_full = xr_api.global_total(full, land_fraction=lf)
    absdev = xr_api.global_total(abs(treat - full), land_fraction=lf, stock_units="kg m-2")
    wv = w.where(valid)
    mean_full = (full * wv).sum(sdims) / wv.sum(sdims)
    sst = (wv * (full - mean_full) ** 2).sum(sdims)
    sse = (wv * (full - treat) ** 2).sum(sdims)
    loss_lin = sse / sst
    lfull, ltreat = np.log(full), np.log(treat)
    lmean = (lfull * wv).sum(sdims) / wv.sum(sdims)
    loss = (wv * (lfull - ltreat) ** 2).sum(sdims) / (wv * (lfull - lmean) ** 2).sum(sdims)
    logc = (wv * abs(np.log(treat / full))).sum(sdims) / wv.sum(sdims)
    label = _common.depth_label(depth)
    res = conventions.annotate(xr.Dataset({
        "soc_stock": treat, "soc_stock_full": full, "global_stock": tot,
        "global_stock_full": tot_full, "global_stock_change": tot - tot_full,
        "total_absolute_deviation": absdev, "variation_loss": loss,
        "variation_loss_linear": loss_lin, "mean_abs_log_change": logc,
    }), "control", fields={"depth": label})
    res.attrs = {"depth": label, "model": m.name,
                 "history": conventions.history_line("component_control()")}
    return res


def ranking(result: xr.Dataset, *, by: str = "variation_loss") -> list[str]:
    """Groups ordered by ``by`` (largest first); computes the statistic."""
    if by not in result:
        raise KeyError(f"by: expected a variable of the result, found {by!r}; "
                       f"choose from {sorted(map(str, result.data_vars))}")
    vals = np.asarray(result[by].values)
    order = np.argsort(-np.abs(vals), kind="stable")
    return [str(result["group"].values[i]) for i in order]
