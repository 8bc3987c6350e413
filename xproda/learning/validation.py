"""Cross-validation: held-out SOC skill of parameter sets, networks and baselines.

:func:`cross_validate` compares, on the same spatially blocked folds
(:func:`xproda.learning.crossval.kfold_sites`), the SOC skill on held-out profiles of CLM5
default parameters, one parameter set drawn from the training sites' posteriors (random
sampling, :mod:`xproda.learning.random_sampling`), batch mode (one parameter set fitted to all
training sites), two-step PRODA and end-to-end training
(:func:`xproda.learning.trainer.train_network`), and optionally of machine-learning baselines
(:mod:`xproda.learning.baselines`).

Folds x methods are independent tasks on a dask scheduler (:mod:`xproda.learning.cv_parallel`):
the site-level DA of a fold (shared by two-step training and random sampling) first, then one
task per fold and method; the results are assembled in fold and method order and equal the
serial run's (``scheduler="synchronous"``).
"""

from __future__ import annotations

import inspect
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from xproda.options import show_progress
from xproda import conventions
from xproda.learning import baselines, crossval
from xproda.learning import random_sampling as rs_mod
from xproda.learning.cv_parallel import Ref, Task, run_tasks
from xproda.models import get_model
from xproda.models.base import SoilCarbonModel
from xproda.learning.data import TrainingData, prepare_training_data
from xproda.learning.forward import soc_at_observations
from xproda.learning.trainer import train_network
from xproda.learning.two_step import two_step_targets

__all__ = ["cross_validate", "CV_METHODS", "BASELINE_METHODS"]

#: Methods compared by :func:`cross_validate` (its default), in the order of Tao et al.
#: (2020)'s comparison.
CV_METHODS = ("default", "random_sampling", "batch", "two_step", "end_to_end")
#: Machine-learning baselines :func:`cross_validate` also offers (need scikit-learn).
BASELINE_METHODS = ("gbm", "random_forest")
#: Methods that use the site-level DA of the training fold (run once per fold for both).
_DA_METHODS = ("random_sampling", "two_step")
_RS_OPTIONS = ("n_draws", "select", "likelihood", "max_rows")


def _train_default(name: str) -> Any:
    return inspect.signature(train_network).parameters[name].default


def _fold_da(data: TrainingData, mdl: SoilCarbonModel, train: np.ndarray, *, seed: int,
             fold: int, mapping: str, options: Mapping[str, Any]
             ) -> tuple[xr.Dataset, np.ndarray]:
    """Task: the site-level DA of a training fold, as two-step training would run it.

    Returns the DA result and the ids of the training sites that pass the two-step filter
    (spec §5.3). Passed to ``train_network(..., assimilation=)`` it gives the same network as
    a two-step run that does its own DA: both go through
    :func:`~xproda.learning.two_step.two_step_targets` with the same arguments.
    """
    dtr = data.subset(train)
    opt = {k: options.get(k, _train_default(k))
           for k in ("assimilation", "da_method", "da_options", "min_da_r2")}
    try:
        kept, _, da, _ = two_step_targets(dtr, mdl, seed=seed, progress=False,
                                          mapping=mapping, dropped=dtr.dropped.copy(), **opt)
    except (ValueError, KeyError) as err:
        msg = err.args[0] if err.args else err
        raise type(err)(f"cross_validate, fold {fold + 1}: the site-level DA of the training "
                        f"sites (for random_sampling and two_step): {msg}") from err
    return da, np.asarray(kept.batch.site_ids)


def _fold_method(data: TrainingData, mdl: SoilCarbonModel, train: np.ndarray,
                 test: np.ndarray, da: tuple[xr.Dataset, np.ndarray] | None, *, method: str,
                 seed: int, fold: int, mapping: str, train_options: Mapping[str, Any],
                 batch_options: Mapping[str, Any], baseline_options: Mapping[str, Any],
                 rs_options: Mapping[str, Any]) -> tuple[np.ndarray, int]:
    """Task: fit ``method`` on the training fold; SOC at the test fold's observed layers.

    Returns the prediction ``[n_test, D_test]`` and the number of training sites fitted.
    """
    from xproda.sites.assimilation.problem import assimilate

    dtr, dte = data.subset(train), data.subset(test)
    n_test = len(test)
    n_fit = len(train)
    if method == "default":
        return soc_at_observations(mdl, dte, None, mapping=mapping), 0
    if method == "batch":
        bo = dict(batch_options)
        # the likelihood of the pooled fit (default: the spec cost, as PRODA); the rest of
        # batch_options goes to the optimiser (docs/batch-mode.md: a symmetric log-space
        # likelihood, likelihood="gaussian", log_space=True, scores better on held-out R2)
        lik = {k: bo.pop(k) for k in ("likelihood", "log_space", "sigma_rel", "sigma_abs")
               if k in bo}
        res = assimilate(dtr.batch, dtr.forcing, model=mdl, method="batch", seed=seed,
                         progress=False, mapping=mapping, sampler_options=bo, **lik)
        th = res["map"].values.reshape(-1)
        return soc_at_observations(mdl, dte, np.broadcast_to(th, (n_test, th.size)),
                                   mapping=mapping), n_fit
    if method == "random_sampling":
        assimilation, kept = da
        res = rs_mod.random_sampling_parameters(assimilation, dtr, model=mdl, sites=kept,
                                                seed=seed + fold, mapping=mapping,
                                                **rs_options)
        th = res["theta"].values
        return soc_at_observations(mdl, dte, np.broadcast_to(th, (n_test, th.size)),
                                   mapping=mapping), len(kept)
    if method in BASELINE_METHODS:
        o = dict(baseline_options.get(method) or {})
        fitted = baselines.fit_baseline(method, dtr, seed=seed + fold,
                                        threads=o.pop("threads", None), options=o)
        return fitted.predict(dte), n_fit
    opts = dict(train_options)
    if method == "two_step":
        opts["assimilation"] = da[0]
    net, rep = train_network(dtr, model=mdl, method=method, seed=seed + fold, mapping=mapping,
                             **opts)
    return soc_at_observations(mdl, dte, net.predict(dte.x), mapping=mapping), rep.n_sites


def cross_validate(
    covariates: xr.Dataset | TrainingData,
    profiles: Any = None,
    *,
    forcing: xr.Dataset | None = None,
    model: str | SoilCarbonModel = "clm5",
    methods: Sequence[str] = CV_METHODS,
    features: Sequence[str] | None = None,
    site_covariates: pd.DataFrame | None = None,
    n_folds: int = 5,
    split: Literal["random", "blocked"] = "blocked",
    block_size: float = 10.0,
    seed: int = 0,
    train_options: Mapping[str, Any] | None = None,
    batch_options: Mapping[str, Any] | None = None,
    baseline_options: Mapping[str, Mapping[str, Any]] | None = None,
    random_sampling_options: Mapping[str, Any] | None = None,
    mapping: str = "pchip",
    scheduler: Any = None,
    threads: int | None = None,
    progress: bool | None = None,
) -> tuple[pd.DataFrame, xr.Dataset]:
    """Held-out SOC skill of default, random-sampling, batch, two-step and end-to-end parameters.

    Every method sees the same folds (:func:`xproda.learning.crossval.kfold_sites`): for each fold,
    the methods are fitted on the other folds' profiles only and predict SOC at the fold's
    observed layers. Folds x methods run as independent tasks on a dask scheduler
    (:mod:`xproda.learning.cv_parallel`) with the same results as the serial run.

    Parameters
    ----------
    covariates, profiles, forcing, model, features, site_covariates
        As for :func:`~xproda.learning.trainer.train_network`: every method that uses
        covariates (two-step, end to end, the tree baselines) gets the same ones, site
        covariates included.
    methods : sequence of str
        Distinct names among :data:`CV_METHODS`: ``"default"`` (CLM5 default parameters, no
        fitting), ``"random_sampling"`` (one parameter set drawn from the training sites'
        site-level DA results and used for every held-out site, Tao et al. 2020:
        :func:`xproda.learning.random_sampling.random_sampling_parameters`), ``"batch"`` (one
        parameter set fitted to all training sites, Tao et al. 2020), ``"two_step"``,
        ``"end_to_end"``; and of :data:`BASELINE_METHODS`: ``"gbm"`` (gradient boosting)
        and ``"random_forest"``, log SOC predicted from the same covariates plus the
        observation depth, fitted on the training fold only
        (:func:`xproda.learning.baselines.fit_baseline`; needs scikit-learn).
    n_folds : int, default 5
    split : {"random", "blocked"}, default "blocked"
    block_size : float, default 10
        Degrees (blocked folds).
    seed : int
        Fold ``k`` fits with seed ``seed + k`` (networks, baselines, random sampling); batch
        mode with ``seed``.
    train_options : mapping, optional
        Keyword arguments of :func:`~xproda.learning.trainer.train_network` (both network
        methods). Its DA entries (``assimilation``, ``da_method``, ``da_options``,
        ``min_da_r2``) also make the site-level DA results that random sampling draws from:
        the DA of a training fold runs once for both methods.
    batch_options : mapping, optional
        ``sampler_options`` of the batch-mode fit.
    baseline_options : mapping, optional
        Estimator options per baseline, e.g. ``{"gbm": {"max_iter": 500}}``; a ``"threads"``
        entry is the thread limit of :func:`~xproda.learning.baselines.fit_baseline`.
    random_sampling_options : mapping, optional
        ``n_draws`` (default 100), ``select`` (``"median"`` (default) or ``"best"``),
        ``likelihood``, ``max_rows`` of
        :func:`~xproda.learning.random_sampling.random_sampling_parameters`.
    mapping : str, default "pchip"
    scheduler : None, str or distributed.Client, keyword-only
        Where the tasks run: ``None`` (default) the active dask scheduler (a distributed
        ``Client`` if one is the default, else dask's ``scheduler`` config, else
        ``"threads"``); ``"synchronous"`` the serial path, one task after another in the
        calling thread; ``"threads"``, ``"processes"``; ``"distributed"`` or a ``Client``.
    threads : int, keyword-only, optional
        torch intra-op and compiled-kernel threads inside each task. Default: cores divided
        by the workers of a local scheduler (tasks side by side do not oversubscribe the
        cores); the workers' own settings on a distributed cluster; the caller's settings in
        the serial path.
    progress : bool or None, default None
        A line per finished task (fold, method, its run time, the count done).
        None: the option ``progress`` (:func:`xproda.set_options`).

    Returns
    -------
    table : pandas.DataFrame
        One row per method, in the order of ``methods``: pooled held-out ``r2`` (= ``nse``),
        ``rmse`` and ``bias`` (g C m-3), ``corr``, ``r2_log``, ``n`` (observations) and
        ``seconds``, the run time of its tasks summed over the folds (for two-step and
        random sampling including the fold's DA, which they share). Only ``seconds``
        depends on the scheduler.
    predictions : xarray.Dataset
        ``soc_obs`` and ``soc_<method>`` ``(site, obs)``, the ``fold`` of each site, and
        ``fitted_sites`` ``(cv_method, cv_fold)``: the training sites each fit used (all of the
        training fold, except two-step and random sampling, the sites passing the two-step
        DA filter, and 0 for the defaults).

    Raises
    ------
    ValueError
        Unknown or repeated methods, unknown option keys, a bad ``scheduler`` or
        ``threads``.
    """
    methods = list(methods)
    unknown = [m for m in methods if m not in CV_METHODS + BASELINE_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from "
                         f"{CV_METHODS + BASELINE_METHODS}")
    if not methods or len(set(methods)) != len(methods):
        raise ValueError(f"methods: expected distinct names, at least one; found {methods}")
    bad_opts = [k for k in (baseline_options or {}) if k not in BASELINE_METHODS]
    if bad_opts:
        raise ValueError(f"baseline_options: expected keys among {BASELINE_METHODS}, found "
                         f"{bad_opts}")
    rs_opts = dict(random_sampling_options or {})
    bad_rs = [k for k in rs_opts if k not in _RS_OPTIONS]
    if bad_rs:
        raise ValueError(f"random_sampling_options: expected keys among {_RS_OPTIONS}, found "
                         f"{bad_rs}")
    if "select" in rs_opts and rs_opts["select"] not in rs_mod.SELECT:
        raise ValueError(f"random_sampling_options: select must be one of {rs_mod.SELECT}, "
                         f"found {rs_opts['select']!r}")
    mdl = model if isinstance(model, SoilCarbonModel) else get_model(model)
    data = covariates if isinstance(covariates, TrainingData) else prepare_training_data(
        covariates, profiles, forcing=forcing, model=mdl, features=features,
        site_covariates=site_covariates)
    folds = crossval.kfold_sites(data.batch.lat, data.batch.lon, n_folds=n_folds,
                                 method=split, block_size=block_size, seed=seed)
    S, D = data.batch.soc.shape
    K = len(folds)
    opts = dict(train_options or {})
    opts.setdefault("progress", False)
    common = dict(mapping=mapping, train_options=opts, batch_options=dict(batch_options or {}),
                  baseline_options=dict(baseline_options or {}), rs_options=rs_opts)
    trains = [np.setdiff1d(np.arange(S), test) for test in folds]
    tasks: list[Task] = []
    if any(m in _DA_METHODS for m in methods):
        for k, train in enumerate(trains):
            tasks.append(Task(f"da-{k}", f"fold {k + 1}/{K} site-level DA", _fold_da,
                              (Ref("data"), Ref("model"), train),
                              dict(seed=seed + k, fold=k, mapping=mapping, options=opts)))
    for k, (train, test) in enumerate(zip(trains, folds)):
        for m in methods:
            da = Ref(f"da-{k}") if m in _DA_METHODS else None
            tasks.append(Task(f"{m}-{k}", f"fold {k + 1}/{K} {m}", _fold_method,
                              (Ref("data"), Ref("model"), train, test, da),
                              dict(method=m, seed=seed, fold=k, **common)))
    out = run_tasks(tasks, {"data": data, "model": mdl}, scheduler=scheduler, threads=threads,
                    progress=show_progress(progress), prefix="cross_validate: ",
                    keep=[t.key for t in tasks if not t.key.startswith("da-")])

    pred = {m: np.full((S, D), np.nan) for m in methods}
    wall = dict.fromkeys(methods, 0.0)
    n_fit = np.zeros((len(methods), K), dtype=np.int64)
    fold_of = np.empty(S, dtype=np.int64)
    for k, test in enumerate(folds):
        fold_of[test] = k
        for i, m in enumerate(methods):
            (soc, n_fit[i, k]), sec = out[f"{m}-{k}"]
            wall[m] += sec + (out[f"da-{k}"][1] if m in _DA_METHODS else 0.0)
            pred[m][test, :soc.shape[1]] = soc
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
    ds = ds.assign_coords(cv_method=list(methods), cv_fold=np.arange(K))
    ds.attrs.update({"n_folds": int(n_folds), "split": split, "block_size": float(block_size)})
    return table, ds
