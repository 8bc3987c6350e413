"""Machine-learning baselines: SOC density mapped straight from covariates and depth.

A process-guided network should beat a pure machine-learning map on held-out profiles, or at
least come close while keeping the process model's structure. :func:`fit_baseline` fits such a
map, and :func:`xproda.learning.validation.cross_validate` scores it beside the networks
(``methods=[..., "gbm", "random_forest"]``) on the same folds.

The baseline
------------
- **Inputs**: the covariates the networks see (``TrainingData.x``, raw values, same order) plus
  the node depth of each observed layer (m, ``ProfileBatch.depth``). One row per observed
  layer; trees need no scaling, so no statistic of any other fold enters the fit.
- **Target**: ``log(soc)`` (g C m-3). SOC density spans three orders of magnitude and its
  errors are roughly log-normal; a least-squares fit in log space is the same criterion as the
  networks' default end-to-end loss (:func:`xproda.learning.losses.soc_loss`, ``kind="log"``).
  Predictions are back-transformed with ``exp`` (no smearing correction): they estimate the
  median, not the mean, of SOC given the inputs, as the networks do. Layers with SOC <= 0
  cannot enter a log fit and are skipped (counted in ``BaselineModel.n_skipped``).
- **Weights**: each site's layers weigh ``1 / n_layers`` (sample weights), so every site counts
  once, as in the networks' loss (mean over sites of the mean over its layers).
- **Estimators** (scikit-learn, imported only when a baseline is fitted): ``"gbm"``,
  :class:`~sklearn.ensemble.HistGradientBoostingRegressor` (``max_iter=300``,
  ``learning_rate=0.05``, ``min_samples_leaf=20``, early stopping on an internal 10 % of the
  training rows when there are more than 10,000 rows); ``"random_forest"``,
  :class:`~sklearn.ensemble.RandomForestRegressor` (``n_estimators=200``,
  ``min_samples_leaf=5``, ``max_features=1/3``). ``options`` overrides any of them.
- **Threads**: ``threads`` (default: torch's intra-op thread count, which
  ``xproda.set_options(torch_threads=...)`` sets; 1 when that option is unset and other work
  fills the machine, :func:`xproda.models.parallel.machine_full`) bounds the OpenMP threads of
  gradient boosting and the jobs of the forest. On a busy machine one thread can be much
  faster than two: OpenMP threads spin at barriers, and a descheduled thread stalls the others
  (measured ~35x on a loaded 2-core machine, ``docs/performance.md``).

scikit-learn is an optional dependency: ``pip install "xproda[ml]"``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from xproda.learning.data import TrainingData

__all__ = ["BASELINES", "BaselineModel", "fit_baseline", "baseline_design"]

#: Baselines by name: the scikit-learn estimator and its xproda defaults.
BASELINES: dict[str, tuple[str, dict[str, Any]]] = {
    "gbm": ("HistGradientBoostingRegressor",
            {"max_iter": 300, "learning_rate": 0.05, "min_samples_leaf": 20}),
    "random_forest": ("RandomForestRegressor",
                      {"n_estimators": 200, "min_samples_leaf": 5, "max_features": 1 / 3}),
}


def _estimator_class(method: str) -> type:
    if method not in BASELINES:
        raise ValueError(f"baseline method must be one of {sorted(BASELINES)}, got {method!r}")
    try:
        import sklearn.ensemble as ens
    except ImportError as err:  # pragma: no cover - exercised with sklearn hidden
        raise ImportError(
            f"the {method!r} baseline needs scikit-learn (>= 1.3), which is not installed: "
            "pip install 'xproda[ml]' (or pip install scikit-learn)") from err
    return getattr(ens, BASELINES[method][0])


def baseline_design(data: TrainingData) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                 tuple[np.ndarray, np.ndarray]]:
    """Rows of the baseline: one per observed layer of every site.

    Parameters
    ----------
    data : TrainingData
        Sites with covariates ``x [S, F]`` and observations (``batch``).

    Returns
    -------
    X : numpy.ndarray, shape [N, F + 1]
        The site's covariates, then the layer's node depth (m).
    soc : numpy.ndarray, shape [N]
        Observed SOC density (g C m-3).
    weight : numpy.ndarray, shape [N]
        ``1 / n_layers`` of the row's site (valid layers).
    index : tuple of numpy.ndarray
        ``(site, obs)`` position of each row in the ``[S, D]`` arrays of ``data.batch``.
    """
    b = data.batch
    mask = np.asarray(b.mask, dtype=bool)
    s_idx, j_idx = np.nonzero(mask)
    x = np.asarray(data.x, dtype=np.float64)
    X = np.column_stack([x[s_idx], np.asarray(b.depth, dtype=np.float64)[s_idx, j_idx]])
    n_valid = mask.sum(-1)
    w = 1.0 / np.maximum(n_valid[s_idx], 1)
    return X, np.asarray(b.soc, dtype=np.float64)[s_idx, j_idx], w, (s_idx, j_idx)


@dataclass
class BaselineModel:
    """A fitted baseline (see the module docstring).

    Attributes
    ----------
    method : str
        ``"gbm"`` or ``"random_forest"``.
    estimator : Any
        The fitted scikit-learn regressor (on ``[covariates..., depth]`` -> log SOC).
    features : list of str
        Covariate names (the depth column comes after them).
    n_rows, n_sites : int
        Training rows (layers) and sites.
    n_skipped : int
        Training layers with SOC <= 0 (not usable in log space).
    threads : int
        Thread limit of fit and prediction.
    """

    method: str
    estimator: Any
    features: list[str]
    n_rows: int
    n_sites: int
    n_skipped: int
    threads: int = 1

    def predict(self, data: TrainingData) -> np.ndarray:
        """SOC density (g C m-3) at the observed layers ``[S, D]`` of ``data`` (NaN padding).

        Raises
        ------
        ValueError
            If ``data`` has other covariates than the fit.
        """
        if list(data.features) != self.features:
            raise ValueError(f"covariates: expected {self.features} (those of the fit), found "
                             f"{list(data.features)}")
        X, _, _, (s, j) = baseline_design(data)
        out = np.full(np.shape(data.batch.soc), np.nan)
        if len(X):
            with _thread_limit(self.threads):
                out[s, j] = np.exp(self.estimator.predict(X))
        return out


def _thread_limit(threads: int) -> Any:
    from threadpoolctl import threadpool_limits  # a dependency of scikit-learn

    return threadpool_limits(limits=int(threads), user_api="openmp")


def fit_baseline(
    method: str,
    data: TrainingData,
    *,
    seed: int = 0,
    options: Mapping[str, Any] | None = None,
    threads: int | None = None,
) -> BaselineModel:
    """Fit a machine-learning baseline of log SOC on covariates + depth (training sites only).

    Parameters
    ----------
    method : {"gbm", "random_forest"}
        See :data:`BASELINES` and the module docstring.
    data : TrainingData
        The training sites (e.g. one cross-validation training fold); nothing else is used.
    seed : int, keyword-only, default 0
        ``random_state`` of the estimator.
    options : mapping, keyword-only, optional
        Constructor arguments of the estimator, overriding the xproda defaults.
    threads : int, keyword-only, optional
        Threads of fit and prediction (default ``torch.get_num_threads()``, or 1 on a full
        machine while the option ``torch_threads`` is unset; see the module docstring).

    Returns
    -------
    BaselineModel

    Raises
    ------
    ImportError
        If scikit-learn is not installed.
    ValueError
        If ``data`` has no layer with SOC > 0 or a non-finite covariate.
    """
    cls = _estimator_class(method)
    X, soc, w, _ = baseline_design(data)
    if not np.isfinite(X).all():
        raise ValueError("baseline inputs: expected finite covariates and depths, found "
                         f"{int((~np.isfinite(X)).any(-1).sum())} row(s) with NaN/inf")
    pos = soc > 0
    if not pos.any():
        raise ValueError(f"baseline {method!r}: expected layers with SOC > 0 to fit log SOC, "
                         f"found none among {soc.size}")
    if threads is None:
        import torch

        from xproda.models.parallel import openmp_threads

        # 1 on a full machine: OpenMP barriers spin beside other work (module docstring)
        threads = openmp_threads(torch.get_num_threads())
    if int(threads) < 1:
        raise ValueError(f"threads: expected an integer >= 1, found {threads!r}")
    kwargs = {**BASELINES[method][1], "random_state": int(seed)}
    if method == "random_forest":
        kwargs["n_jobs"] = int(threads)
    kwargs.update(dict(options or {}))
    est = cls(**kwargs)
    with _thread_limit(int(threads)):
        est.fit(X[pos], np.log(soc[pos]), sample_weight=w[pos])
    return BaselineModel(method=method, estimator=est, features=list(data.features),
                         n_rows=int(pos.sum()), n_sites=len(data), n_skipped=int((~pos).sum()),
                         threads=int(threads))
