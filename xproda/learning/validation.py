"""Cross-validation: held-out SOC skill of parameter sets, networks and baselines.

:func:`cross_validate` compares, on the same spatially blocked folds
(:func:`xproda.learning.crossval.kfold_sites`), the SOC skill on held-out profiles of CLM5
default parameters, batch mode (one parameter set), two-step PRODA and end-to-end training
(:func:`xproda.learning.trainer.train_network`), and optionally of machine-learning baselines
(:mod:`xproda.learning.baselines`).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from xproda import conventions
from xproda.learning import baselines, crossval
from xproda.models import get_model
from xproda.models.base import SoilCarbonModel
from xproda.learning.data import TrainingData, prepare_training_data
from xproda.learning.forward import soc_at_observations
from xproda.learning.trainer import train_network

__all__ = ["cross_validate", "CV_METHODS", "BASELINE_METHODS"]

#: Methods compared by :func:`cross_validate` (its default).
CV_METHODS = ("default", "batch", "two_step", "end_to_end")
#: Machine-learning baselines :func:`cross_validate` also offers (need scikit-learn).
BASELINE_METHODS = ("gbm", "random_forest")


def cross_validate(
    covariates: xr.Dataset | TrainingData,
    profiles: Any = None,
    *,
    forcing: xr.Dataset | None = None,
    model: str | SoilCarbonModel = "clm5",
    methods: Sequence[str] = CV_METHODS,
    features: Sequence[str] | None = None,
    n_folds: int = 5,
    split: Literal["random", "blocked"] = "blocked",
    block_size: float = 10.0,
    seed: int = 0,
    train_options: Mapping[str, Any] | None = None,
    batch_options: Mapping[str, Any] | None = None,
    baseline_options: Mapping[str, Mapping[str, Any]] | None = None,
    mapping: str = "pchip",
    progress: bool = True,
) -> tuple[pd.DataFrame, xr.Dataset]:
    """Held-out SOC skill of default, batch-mode, two-step and end-to-end parameters.

    Every method sees the same folds (:func:`xproda.learning.crossval.kfold_sites`): for each fold,
    the methods are fitted on the other folds' profiles only and predict SOC at the fold's
    observed layers.

    Parameters
    ----------
    covariates, profiles, forcing, model, features
        As for :func:`~xproda.learning.trainer.train_network`.
    methods : sequence of str
        Any of :data:`CV_METHODS`: ``"default"`` (CLM5 default parameters, no fitting),
        ``"batch"`` (one parameter set for all training sites, Tao et al. 2020),
        ``"two_step"``, ``"end_to_end"``; and of :data:`BASELINE_METHODS`: ``"gbm"``
        (gradient boosting) and ``"random_forest"``, log SOC predicted from the same
        covariates plus the observation depth, fitted on the training fold only
        (:func:`xproda.learning.baselines.fit_baseline`; needs scikit-learn).
    n_folds : int, default 5
    split : {"random", "blocked"}, default "blocked"
    block_size : float, default 10
        Degrees (blocked folds).
    seed : int
    train_options : mapping, optional
        Keyword arguments of :func:`~xproda.learning.trainer.train_network` (both network methods).
    batch_options : mapping, optional
        ``sampler_options`` of the batch-mode fit.
    baseline_options : mapping, optional
        Estimator options per baseline, e.g. ``{"gbm": {"max_iter": 500}}``; a ``"threads"``
        entry is the thread limit of :func:`~xproda.learning.baselines.fit_baseline`.
    mapping : str, default "pchip"
    progress : bool

    Returns
    -------
    table : pandas.DataFrame
        One row per method: pooled held-out ``r2`` (= ``nse``), ``rmse`` and ``bias``
        (g C m-3), ``corr``, ``r2_log``, ``n`` (observations) and the wall time (s).
    predictions : xarray.Dataset
        ``soc_obs`` and ``soc_<method>`` ``(site, obs)``, the ``fold`` of each site, and
        ``fitted_sites`` ``(cv_method, cv_fold)``: the training sites each fit used (all of the
        training fold, except two-step after its DA filter and 0 for the defaults).
    """
    from xproda.sites.assimilation.problem import assimilate

    unknown = [m for m in methods if m not in CV_METHODS + BASELINE_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from "
                         f"{CV_METHODS + BASELINE_METHODS}")
    bad_opts = [k for k in (baseline_options or {}) if k not in BASELINE_METHODS]
    if bad_opts:
        raise ValueError(f"baseline_options: expected keys among {BASELINE_METHODS}, found "
                         f"{bad_opts}")
    mdl = model if isinstance(model, SoilCarbonModel) else get_model(model)
    data = covariates if isinstance(covariates, TrainingData) else prepare_training_data(
        covariates, profiles, forcing=forcing, model=mdl, features=features)
    folds = crossval.kfold_sites(data.batch.lat, data.batch.lon, n_folds=n_folds,
                                 method=split, block_size=block_size, seed=seed)
    S, D = data.batch.soc.shape
    pred = {m: np.full((S, D), np.nan) for m in methods}
    wall = dict.fromkeys(methods, 0.0)
    n_fit = np.zeros((len(methods), len(folds)), dtype=np.int64)
    fold_of = np.empty(S, dtype=np.int64)
    opts = dict(train_options or {})
    opts.setdefault("progress", False)
    for k, test in enumerate(folds):
        fold_of[test] = k
        train = np.setdiff1d(np.arange(S), test)
        dtr, dte = data.subset(train), data.subset(test)
        Dt = dte.batch.soc.shape[1]
        for i, m in enumerate(methods):
            t0 = time.perf_counter()
            n_fit[i, k] = len(train)
            if m == "default":
                n_fit[i, k] = 0
                soc = soc_at_observations(mdl, dte, None, mapping=mapping)
            elif m == "batch":
                res = assimilate(dtr.batch, dtr.forcing, model=mdl, method="batch", seed=seed,
                                 progress=False, mapping=mapping,
                                 sampler_options=dict(batch_options or {}))
                th = res["map"].values.reshape(-1)
                soc = soc_at_observations(mdl, dte, np.broadcast_to(th, (len(test), th.size)),
                                          mapping=mapping)
            elif m in BASELINE_METHODS:
                o = dict((baseline_options or {}).get(m) or {})
                fitted = baselines.fit_baseline(m, dtr, seed=seed + k,
                                                threads=o.pop("threads", None), options=o)
                soc = fitted.predict(dte)
            else:
                net, rep = train_network(dtr, model=mdl, method=m, seed=seed + k,
                                         mapping=mapping, **opts)
                n_fit[i, k] = rep.n_sites
                soc = soc_at_observations(mdl, dte, net.predict(dte.x), mapping=mapping)
            wall[m] += time.perf_counter() - t0
            pred[m][test, :Dt] = soc
        if progress:
            print(f"cross_validate: fold {k + 1}/{len(folds)} done", flush=True)
    obs = np.where(data.batch.mask, data.batch.soc, np.nan)
    rows = []
    for m in methods:
        sc = crossval.skill_scores(pred[m], obs, mask=data.batch.mask)
        rows.append({"method": m, **sc, "seconds": wall[m]})
    table = pd.DataFrame(rows).set_index("method")
    ds = xr.Dataset({"soc_obs": (("site", "obs"), obs,
                                 conventions.attrs("soc_obs", section="validation")),
                     "fold": ("site", fold_of)},
                    coords={"site": np.asarray(data.batch.site_ids),
                            "lat": ("site", data.batch.lat), "lon": ("site", data.batch.lon)})
    for m in methods:
        ds[f"soc_{m}"] = (("site", "obs"), pred[m], conventions.attrs(
            "soc_method", section="validation", fields={"method": m}))
    ds["fitted_sites"] = (("cv_method", "cv_fold"), n_fit,
                          conventions.attrs("fitted_sites", section="validation"))
    ds = ds.assign_coords(cv_method=list(methods), cv_fold=np.arange(len(folds)))
    ds.attrs.update({"n_folds": int(n_folds), "split": split, "block_size": float(block_size)})
    return table, ds
