"""Cross-validation tasks on dask schedulers: the same results as the serial run."""

from __future__ import annotations

import threading

import dask
import numpy as np
import pandas as pd
import pytest
import torch
import xarray as xr

from xproda.datasets import synthetic_profiles, synthetic_world, truth_parameters
from xproda.learning import cv_parallel
from xproda.learning.cv_parallel import Ref, Task, resolve_scheduler, run_tasks
from xproda.learning.training import CV_METHODS, cross_validate, prepare_training_data
from xproda.options import current, get_options


@pytest.fixture(scope="module")
def data():
    world = synthetic_world(6.0, seed=0)
    truth = truth_parameters(world, kind="cue")
    prof = synthetic_profiles(world, n_sites=150, truth=truth, noise=0.1, seed=3)
    return prepare_training_data(world, prof).subset(np.arange(60))


#: small but complete: every method of CV_METHODS, the DA run by the folds themselves
CV_KW = dict(
    n_folds=3, block_size=30.0, seed=0, mapping="layer_mean",
    train_options=dict(epochs=3, hidden=(16, 16), min_da_r2=-np.inf,
                       da_options=dict(n_starts=1, sampler_options=dict(steps=10))),
    batch_options=dict(steps=10, n_starts=1), random_sampling_options=dict(n_draws=20))


def _assert_same(a, b):
    """Same numbers, same rows in the same order; only the run times may differ."""
    assert list(a[0].index) == list(b[0].index)
    pd.testing.assert_frame_equal(a[0].drop(columns="seconds"), b[0].drop(columns="seconds"),
                                  check_exact=True)
    xr.testing.assert_identical(a[1], b[1])


# -------------------------------------------------------------------------------------
# the task runner
# -------------------------------------------------------------------------------------
def _add(a, b, *, c=0):
    return a + b + c


def _probe(_):
    return torch.get_num_threads(), current("kernel_threads"), current("dtype"), \
        threading.current_thread() is threading.main_thread()


@pytest.mark.parametrize("scheduler", ["synchronous", "threads"])
def test_run_tasks_resolves_refs_and_reports_each_task(scheduler, capsys):
    tasks = [Task("a", "task a", _add, (Ref("x"), 1)),
             Task("b", "task b", _add, (Ref("a"), Ref("x")), {"c": 100}),
             Task("c", "task c", _add, (Ref("b"), Ref("a")))]
    out = run_tasks(tasks, {"x": 10}, scheduler=scheduler, progress=True, prefix="cv: ")
    assert {k: v[0] for k, v in out.items()} == {"a": 11, "b": 121, "c": 132}
    assert all(v[1] >= 0 for v in out.values())
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 3 and all(ln.startswith("cv: task ") for ln in lines)
    assert lines[-1].endswith("[3/3]")
    part = run_tasks(tasks, {"x": 10}, scheduler=scheduler, keep=["c"])
    assert part["c"][0] == 132 and part["a"][0] is None and part["b"][0] is None
    with pytest.raises(ValueError, match="distinct"):
        run_tasks([tasks[0], tasks[0]], {"x": 1}, scheduler=scheduler)
    with pytest.raises(ValueError, match="threads: expected None or an int >= 1"):
        run_tasks(tasks, {"x": 1}, scheduler=scheduler, threads=0)


def test_tasks_get_the_callers_options_and_their_threads():
    import xproda

    before = torch.get_num_threads()
    with xproda.set_options(dtype="float32"):
        runs = {(sch, th): run_tasks([Task("p", "p", _probe, (0,))], {}, scheduler=sch,
                                     threads=th)["p"][0]
                for sch, th in (("synchronous", None), ("threads", 1), ("synchronous", 1))}
    # serial path: the caller's settings, in the calling thread
    assert runs["synchronous", None] == (before, None, "float32", True)
    assert runs["threads", 1] == (1, 1, "float32", False)
    assert runs["synchronous", 1] == (1, 1, "float32", True)
    assert torch.get_num_threads() == before  # restored in the calling thread
    assert get_options()["dtype"] == "float64"
    assert cv_parallel.default_threads("synchronous") is None
    assert cv_parallel.default_threads("threads") >= 1


def test_scheduler_resolution_and_errors():
    assert resolve_scheduler("synchronous") == ("synchronous", None)
    assert resolve_scheduler("threads") == ("threads", None)
    with dask.config.set(scheduler="synchronous"):
        assert resolve_scheduler(None) == ("synchronous", None)
    with dask.config.set(scheduler="processes"):
        assert resolve_scheduler(None) == ("processes", None)
    with pytest.raises(ValueError, match="scheduler: expected None, a distributed.Client"):
        resolve_scheduler("gpu")
    with pytest.raises(ValueError, match="scheduler: expected"):
        resolve_scheduler(3)
    if cv_parallel._client_or_none() is None:
        assert resolve_scheduler(None) == ("threads", None)
        with pytest.raises(ValueError, match="no active dask.distributed Client"):
            resolve_scheduler("distributed")


# -------------------------------------------------------------------------------------
# cross_validate
# -------------------------------------------------------------------------------------
def test_cross_validate_threads_equal_serial(data, capsys):
    serial = cross_validate(data, scheduler="synchronous", progress=False, **CV_KW)
    threaded = cross_validate(data, scheduler="threads", threads=1, progress=True, **CV_KW)
    _assert_same(serial, threaded)
    assert list(serial[0].index) == list(CV_METHODS)
    assert np.isfinite(serial[0][["r2", "rmse", "bias"]].to_numpy()).all()
    out = capsys.readouterr().out
    for m in CV_METHODS:  # a progress line per fold and method, and per fold's DA
        assert out.count(f" {m} done in ") == 3
    assert out.count("site-level DA done in ") == 3
    # the rows follow ``methods``, not completion order
    table, pred = cross_validate(data, methods=["end_to_end", "default"], scheduler="threads",
                                 progress=False, **CV_KW)
    assert list(table.index) == ["end_to_end", "default"]
    pd.testing.assert_frame_equal(
        table.drop(columns="seconds"),
        serial[0].loc[["end_to_end", "default"]].drop(columns="seconds"), check_exact=True)
    np.testing.assert_array_equal(pred["soc_default"].values, serial[1]["soc_default"].values)


def test_cross_validate_bad_scheduler_threads_and_methods(data):
    with pytest.raises(ValueError, match="scheduler: expected"):
        cross_validate(data, methods=["default"], n_folds=2, block_size=30.0,
                       scheduler="cluster", progress=False)
    with pytest.raises(ValueError, match="threads: expected"):
        cross_validate(data, methods=["default"], n_folds=2, block_size=30.0, threads=-2,
                       scheduler="threads", progress=False)
    with pytest.raises(ValueError, match="distinct"):
        cross_validate(data, methods=["default", "default"], progress=False)
    with pytest.raises(ValueError, match="distinct"):
        cross_validate(data, methods=[], progress=False)
    with pytest.raises(ValueError, match=r"unknown method\(s\) \['random'\]"):
        cross_validate(data, methods=["random"], progress=False)
    with pytest.raises(ValueError, match="random_sampling_options: expected keys"):
        cross_validate(data, methods=["random_sampling"], progress=False,
                       random_sampling_options={"draws": 3})
    with pytest.raises(ValueError, match="select must be one of"):
        cross_validate(data, methods=["random_sampling"], progress=False,
                       random_sampling_options={"select": "mean"})


@pytest.mark.slow
@pytest.mark.distributed
def test_cross_validate_local_cluster_equals_threads(data):
    distributed = pytest.importorskip("distributed")
    ref = cross_validate(data, scheduler="threads", progress=False, **CV_KW)
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=None) as cluster, \
            distributed.Client(cluster) as client:
        assert resolve_scheduler(None)[1] is client  # the active client is taken
        got = cross_validate(data, progress=False, **CV_KW)
        explicit = cross_validate(data, methods=["default", "random_sampling"],
                                  scheduler=client, progress=False, **CV_KW)
    _assert_same(ref, got)
    pd.testing.assert_frame_equal(
        explicit[0].drop(columns="seconds"),
        ref[0].loc[["default", "random_sampling"]].drop(columns="seconds"), check_exact=True)
