"""PRODA's first step: per-site parameters by data assimilation, as training targets.

Two-step training (:func:`xproda.learning.trainer.train_network`, ``method="two_step"``,
spec §7) fits the network to the normalised parameters retrieved site by site
(:func:`xproda.sites.assimilation.problem.assimilate`, or a result passed in), keeping only the
sites whose retrieval fits (spec §5.3). :func:`two_step_targets` makes those targets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from xproda.models.base import SoilCarbonModel
from xproda.learning.data import TrainingData

__all__ = ["two_step_targets"]


def two_step_targets(
    data: TrainingData,
    mdl: SoilCarbonModel,
    *,
    assimilation: xr.Dataset | None,
    da_method: str,
    da_options: Mapping[str, Any] | None,
    min_da_r2: float | None,
    seed: int,
    progress: bool,
    mapping: str,
    dropped: pd.DataFrame,
) -> tuple[TrainingData, np.ndarray, xr.Dataset, pd.DataFrame]:
    """DA targets per site (running assimilation if needed) and the §5.3 filter.

    Parameters
    ----------
    data : TrainingData
        The usable sites.
    mdl : SoilCarbonModel
    assimilation : Dataset or None, keyword-only
        A result of :func:`~xproda.sites.assimilation.problem.assimilate` for these sites (a
        ``mean`` or ``map`` estimate with dims ``site`` and ``parameter``, site ids matched);
        ``None`` runs ``assimilate(..., method=da_method)``.
    da_method : str, keyword-only
        DA method when ``assimilation`` is None (``"map"``: 2 starts of at most 150 Adam steps
        unless ``da_options`` says otherwise).
    da_options : mapping or None, keyword-only
        Extra keyword arguments of ``assimilate``.
    min_da_r2 : float or None, keyword-only
        Keep sites whose DA fit R^2 exceeds this (None: 0.75 for clm5 (cen), 0 for the
        microbial model, spec §5.3).
    seed : int, keyword-only
    progress : bool, keyword-only
    mapping : str, keyword-only
        Model-to-observation mapping of the DA run.
    dropped : pandas.DataFrame, keyword-only
        ``site``, ``reason`` of sites dropped so far.

    Returns
    -------
    data : TrainingData
        The sites passing the filter (finite estimate, R^2 above the threshold, mean R-hat
        below 1.05 where the result has one).
    target : numpy.ndarray, shape [S, P]
        Their normalised DA estimates (all parameters of ``mdl``, in order).
    assimilation : Dataset
        The DA result used.
    dropped : pandas.DataFrame
        ``dropped`` plus the sites the filter removed, with the reason.

    Raises
    ------
    ValueError
        If the result is not per site, misses parameters, or no site passes the filter.
    KeyError
        If the result lacks sites of ``data``.
    """
    from xproda.sites.assimilation.problem import assimilate

    names = list(mdl.parameters.names)
    if assimilation is None:
        opts = dict(da_options or {})
        if da_method == "map":  # the budget measured in docs/performance.md (fits R2 ~0.99)
            opts.setdefault("n_starts", 2)
            opts["sampler_options"] = {"steps": 150, **dict(opts.get("sampler_options") or {})}
        assimilation = assimilate(data.batch, data.forcing, model=mdl, method=da_method,
                                  seed=seed, progress=progress, mapping=mapping, **opts)
    est = None
    for key in ("mean", "map"):
        if key in assimilation and "parameter" in assimilation[key].dims:
            est = assimilation[key]
            break
    if est is None:
        raise ValueError("assimilation result has neither 'mean' nor 'map' with a 'parameter' "
                         "dim")
    if "site" not in est.dims:
        raise ValueError("two-step training needs per-site DA results (dim 'site'); a batch-"
                         "mode result has one parameter set")
    free = [str(p) for p in est["parameter"].values]
    missing = [p for p in names if p not in free]
    if missing or len(free) != len(names):
        raise ValueError(f"DA estimated parameters {free}; two-step training needs all of "
                         f"{names} (missing: {missing})")
    if free != names:  # any order: taken by name
        est = est.sel(parameter=names)
    ids = np.asarray(data.batch.site_ids)
    da_ids = np.asarray(assimilation["site"].values)
    pos = pd.Index(da_ids).get_indexer(ids)
    if (pos < 0).any():
        raise KeyError(f"assimilation result lacks {int((pos < 0).sum())} site(s), e.g. "
                       f"{ids[pos < 0][:5].tolist()}")
    target = est.transpose("site", "parameter").values[pos]
    r2 = assimilation["r2"].values[pos] if "r2" in assimilation else np.full(len(ids), np.inf)
    thr = (0.0 if mdl.name == "microbial" else 0.75) if min_da_r2 is None else min_da_r2
    ok_t = np.isfinite(target).all(-1)
    ok_r2 = r2 > thr
    reasons = np.where(~ok_t, "two-step: NaN DA estimate",
                       np.where(~ok_r2, f"two-step: DA fit R2 <= {thr}", ""))
    if "rhat" in assimilation and assimilation["rhat"].ndim >= 1:
        rh = assimilation["rhat"].values[pos]
        rh = rh.mean(-1) if rh.ndim == 2 else rh
        bad = (reasons == "") & ~(rh < 1.05)
        reasons = np.where(bad, "two-step: mean R-hat >= 1.05", reasons)
    keep = reasons == ""
    if not keep.any():
        raise ValueError(f"no site passes the two-step DA filter (R2 > {thr}); lower min_da_r2")
    dropped = pd.concat([dropped, pd.DataFrame({"site": ids[~keep],
                                                "reason": reasons[~keep].astype(str)})],
                        ignore_index=True)
    idx = np.flatnonzero(keep)
    return data.subset(idx), target[idx], assimilation, dropped
