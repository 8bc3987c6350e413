"""Machine-learning baselines (gbm, random forest) and their place in cross_validate."""

from __future__ import annotations

import dataclasses
import sys

import numpy as np
import pytest

pytest.importorskip("sklearn")

from xproda.learning import baselines
from xproda.learning import crossval  # noqa: E402
from xproda.datasets import synthetic_profiles, synthetic_world, truth_parameters  # noqa: E402
from xproda.learning.training import (  # noqa: E402
    BASELINE_METHODS,
    TrainingData,
    cross_validate,
    prepare_training_data,
)


@pytest.fixture(scope="module")
def data() -> TrainingData:
    world = synthetic_world(6.0, seed=0)
    truth = truth_parameters(world, kind="cue")
    prof = synthetic_profiles(world, n_sites=150, truth=truth, noise=0.1, seed=3)
    return prepare_training_data(world, prof)


def _with_soc(data: TrainingData, soc: np.ndarray) -> TrainingData:
    batch = dataclasses.replace(data.batch, soc=soc)
    return dataclasses.replace(data, batch=batch)


def test_design_rows_weights_and_depth(data):
    X, soc, w, (s, j) = baselines.baseline_design(data)
    n_valid = data.batch.mask.sum()
    assert X.shape == (n_valid, len(data.features) + 1) and soc.shape == (n_valid,)
    np.testing.assert_array_equal(X[:, :-1], data.x[s])
    np.testing.assert_array_equal(X[:, -1], data.batch.depth[s, j])
    np.testing.assert_array_equal(soc, data.batch.soc[s, j])
    # every site weighs 1 in total, whatever its number of layers
    np.testing.assert_allclose(np.bincount(s, weights=w), np.ones(len(data)))


@pytest.mark.parametrize("method", BASELINE_METHODS)
def test_baseline_learns_a_known_map_on_held_out_sites(data, method):
    x0 = (data.x[:, 0] - data.x[:, 0].mean()) / data.x[:, 0].std()
    log_soc = 9.0 + 0.8 * x0[:, None] - 1.5 * np.nan_to_num(data.batch.depth)
    truth = _with_soc(data, np.where(data.batch.mask, np.exp(log_soc), np.nan))
    tr, te = crossval.split_sites(data.batch.lat, data.batch.lon, fraction=0.3, seed=1)
    fit = baselines.fit_baseline(method, truth.subset(tr), seed=0, threads=1)
    assert fit.threads == 1 and fit.n_sites == tr.size
    assert fit.n_rows == int(data.batch.mask[tr].sum())
    pred = fit.predict(truth.subset(te))
    test = truth.subset(te)
    assert np.isnan(pred[~test.batch.mask]).all()
    sk = crossval.skill_scores(pred, test.batch.soc, mask=test.batch.mask)
    assert sk["r2_log"] > 0.8, sk


def test_baseline_skips_nonpositive_and_checks_inputs(data):
    soc = data.batch.soc.copy()
    soc[0, 0] = 0.0
    fit = baselines.fit_baseline("gbm", _with_soc(data, soc), options={"max_iter": 5},
                                 threads=1)
    assert fit.n_skipped == 1 and fit.n_rows == int(data.batch.mask.sum()) - 1
    other = dataclasses.replace(data, features=["a"] * len(data.features))
    with pytest.raises(ValueError, match="covariates: expected"):
        fit.predict(other)
    with pytest.raises(ValueError, match="must be one of"):
        baselines.fit_baseline("svm", data)
    with pytest.raises(ValueError, match="threads: expected"):
        baselines.fit_baseline("gbm", data, threads=0)
    bad_x = data.x.copy()
    bad_x[3, 0] = np.nan
    with pytest.raises(ValueError, match="finite covariates"):
        baselines.fit_baseline("gbm", dataclasses.replace(data, x=bad_x), threads=1)


def test_missing_sklearn_error_names_the_extra(data, monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn", None)
    monkeypatch.setitem(sys.modules, "sklearn.ensemble", None)
    with pytest.raises(ImportError, match=r"xproda\[ml\]"):
        baselines.fit_baseline("gbm", data)


def test_cross_validate_baselines_see_only_training_folds(data, monkeypatch):
    seen: list[np.ndarray] = []
    n_features: list[int] = []
    threads: list[int] = []
    real_fit = baselines.fit_baseline

    def spy(method, train, **kw):
        seen.append(np.asarray(train.batch.site_ids))
        fitted = real_fit(method, train, **kw)
        n_features.append(fitted.estimator.n_features_in_)
        threads.append(fitted.threads)
        return fitted

    monkeypatch.setattr(baselines, "fit_baseline", spy)
    table, pred = cross_validate(
        data, methods=["default", "gbm", "random_forest"], n_folds=3, block_size=30.0,
        seed=0, mapping="layer_mean", progress=False,
        baseline_options={"gbm": {"max_iter": 50, "threads": 1},
                          "random_forest": {"n_estimators": 20, "threads": 1}})
    assert list(table.index) == ["default", "gbm", "random_forest"]
    assert (table["n"] == table["n"].iloc[0]).all()  # same held-out observations
    assert np.isfinite(table.loc[["gbm", "random_forest"], ["r2", "rmse", "bias"]]).all().all()
    assert len(seen) == 6 and set(n_features) == {len(data.features) + 1}
    assert set(threads) == {1}
    ids = np.asarray(pred.site.values)
    blocks = crossval.spatial_blocks(pred.lat.values, pred.lon.values, block_size=30.0)
    folds_seen = []
    for fitted_ids in seen:  # in completion order: the fold is found by its test sites
        test_ids = set(ids) - set(fitted_ids)
        (k,) = [k for k in range(3) if set(ids[pred.fold.values == k]) == test_ids]
        folds_seen.append(k)
        in_fit = np.isin(ids, fitted_ids)
        assert not set(blocks[in_fit]) & set(blocks[~in_fit])  # disjoint in space
    assert sorted(folds_seen) == [0, 0, 1, 1, 2, 2]  # each fold's training sites, twice
    fitted = pred["fitted_sites"]
    assert fitted.sel(cv_method="default").values.tolist() == [0, 0, 0]
    n_train = [int((pred.fold.values != k).sum()) for k in range(3)]
    assert fitted.sel(cv_method="gbm").values.tolist() == n_train
    ok = data.batch.mask
    assert np.isfinite(pred["soc_gbm"].values[ok]).all()
    assert np.isnan(pred["soc_gbm"].values[~ok]).all()


def test_cross_validate_rejects_unknown_methods_and_options(data):
    with pytest.raises(ValueError, match="unknown method"):
        cross_validate(data, methods=["xgboost"], progress=False)
    with pytest.raises(ValueError, match="baseline_options"):
        cross_validate(data, methods=["gbm"], baseline_options={"rf": {}}, progress=False)


def test_baseline_threads_default_to_one_on_a_full_machine(data, monkeypatch):
    import os

    import torch

    import xproda
    from xproda.models import parallel

    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        opts = {"max_iter": 5}
        monkeypatch.setattr(parallel, "other_runnable", lambda: os.cpu_count())  # full
        busy = baselines.fit_baseline("gbm", data, options=opts)
        with xproda.set_options(torch_threads=2):  # the user's count wins
            assert baselines.fit_baseline("gbm", data, options=opts).threads == 2
        monkeypatch.setattr(parallel, "other_runnable", lambda: 0)
        quiet = baselines.fit_baseline("gbm", data, options=opts)
        assert (busy.threads, quiet.threads) == (1, 2)
        np.testing.assert_array_equal(busy.predict(data), quiet.predict(data))
    finally:
        torch.set_num_threads(before)
