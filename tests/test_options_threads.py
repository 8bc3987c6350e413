"""Options are context-local and reach dask tasks explicitly: no leakage between threads."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest
import xarray as xr

import xproda
from xproda.xr import engine
from xproda.errors import OptionError
from xproda.options import DEFAULTS, get_options, use_options
from xproda.testing import forcing_dataset

A = {"dtype": "float32", "kernel_batch_size": 7, "fused_kernels": False}
B = {"dtype": "float64", "kernel_batch_size": 4096, "fused_kernels": True}


@pytest.fixture(autouse=True)
def _default_options():
    """Each test starts from the defaults (another test in this process may have called
    xproda.set_options as a function, which sets the options of its thread from then on)."""
    with use_options(DEFAULTS):
        yield


def _theta():
    return xr.DataArray(np.full(21, 0.5), dims="parameter")


def _recording_run(ds, seen, barrier):
    """A column computation whose tasks record the options they run under."""
    m = xproda.get_model("clm5")
    inputs = engine.column_inputs(ds, _theta(), m)

    def fn(theta, forcing):
        barrier.wait(timeout=30)  # both threads' tasks run at the same time
        seen.append(get_options())
        time.sleep(0.01)
        return [np.zeros(len(theta))]

    (res,) = engine.run_columns(inputs, fn, [engine.Output("x")])
    return res


def test_two_threads_different_options_no_leakage():
    ds = forcing_dataset(4, 6, seed=3, ocean_fraction=0.0, chunks={"lat": 1})
    seen = {"A": [], "B": []}
    after = {}
    errors = []
    barrier = threading.Barrier(2)

    def work(label, opts):
        try:
            with xproda.set_options(**opts):
                lazy = _recording_run(ds, seen[label], barrier)
                inside = get_options()
                lazy.compute(scheduler="threads", num_workers=2)
                assert get_options() == inside  # compute did not change this thread's options
            after[label] = get_options()
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=("A", A)),
               threading.Thread(target=work, args=("B", B))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert len(seen["A"]) == 4 and len(seen["B"]) == 4  # one task per lat chunk, each seen
    for label, opts in (("A", A), ("B", B)):
        for o in seen[label]:
            assert {k: o[k] for k in opts} == opts, (label, o)
        assert after[label] == dict(DEFAULTS)
    assert get_options() == dict(DEFAULTS)


def test_concurrent_steady_states_equal_sequential_runs():
    ds = forcing_dataset(4, 6, seed=4, chunks={"lat": 1})
    with xproda.set_options(**A):
        ref_a = ds.proda.steady_state(_theta()).soc_stock.compute(scheduler="sync")
    with xproda.set_options(**B):
        ref_b = ds.proda.steady_state(_theta()).soc_stock.compute(scheduler="sync")
    assert not np.array_equal(ref_a.values, ref_b.values, equal_nan=True)  # float32 differs
    out = {}

    def work(label, opts):
        with xproda.set_options(**opts):
            lazy = ds.proda.steady_state(_theta()).soc_stock
        # computed outside the context: the tasks carry the options of the graph's builder
        out[label] = lazy.compute(scheduler="threads", num_workers=2)

    for _ in range(3):
        threads = [threading.Thread(target=work, args=(k, o)) for k, o in (("A", A), ("B", B))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        np.testing.assert_array_equal(out["A"].values, ref_a.values)
        np.testing.assert_array_equal(out["B"].values, ref_b.values)
    assert get_options() == dict(DEFAULTS)


def test_use_options_restores_and_validates():
    with use_options({"kernel_batch_size": 5}) as opts:
        assert get_options()["kernel_batch_size"] == 5 and opts["dtype"] == "float64"
    assert get_options() == dict(DEFAULTS)
    with pytest.raises(OptionError, match="unknown xproda option 'bogus'"):
        use_options({"bogus": 1})
    with pytest.raises(ValueError, match="'kernel_batch_size': 0; expected an int >= 1"):
        xproda.set_options(kernel_batch_size=0)


def test_set_options_as_function_is_thread_local():
    seen = {}

    def other():
        seen["other"] = get_options()["kernel_batch_size"]

    token = xproda.set_options(kernel_batch_size=11)
    try:
        t = threading.Thread(target=other)
        t.start()
        t.join()
        assert get_options()["kernel_batch_size"] == 11
        assert seen["other"] == DEFAULTS["kernel_batch_size"]
    finally:
        token.__exit__()
    assert get_options() == dict(DEFAULTS)


def _policy(code: str, env_extra: dict) -> str:
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    env.update(env_extra)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                         check=True)
    return out.stdout.strip()


def test_import_sets_passive_openmp_wait_policy_unless_chosen():
    show = "import os, xproda; print(xproda.OPENMP_PASSIVE_SET, os.environ.get('OMP_WAIT_POLICY'))"
    assert _policy(show, {}) == "True PASSIVE"
    assert _policy(show, {"OMP_WAIT_POLICY": "ACTIVE"}) == "False ACTIVE"  # the user's choice
    late = "import torch, os, xproda; print(xproda.OPENMP_PASSIVE_SET, " \
           "os.environ.get('OMP_WAIT_POLICY'))"
    assert _policy(late, {}) == "False None"  # too late: the OpenMP runtime is loaded


def test_dask_worker_config():
    cfg = xproda.options.dask_worker_config()
    env = "distributed.nanny.pre-spawn-environ"
    assert cfg[f"{env}.MALLOC_TRIM_THRESHOLD_"] == 128 * 2**20
    assert cfg[f"{env}.MALLOC_MMAP_THRESHOLD_"] == 32 * 2**20
    assert cfg["distributed.worker.profile.enabled"] is False
    assert "distributed.worker.profile.enabled" not in xproda.options.dask_worker_config(
        profile=True)


@pytest.mark.slow
def test_local_cluster_workers_tuned_and_default_workers_warned():
    """Workers of a default LocalCluster (dask's MALLOC_TRIM_THRESHOLD_=65536) are tuned
    through client.run (option tune_workers, default) or named in a warning
    (tune_workers=False); xproda.options.local_cluster's workers need neither."""
    import os
    import warnings

    import distributed

    from xproda.options import check_workers, local_cluster

    saved = dict(os.environ)  # the nanny writes its settings into this process's environ
    try:
        with distributed.LocalCluster(n_workers=1, threads_per_worker=1,
                                      dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            with xproda.set_options(tune_workers=False), \
                    pytest.warns(RuntimeWarning, match="MALLOC_TRIM_THRESHOLD_=65536"):
                slow = check_workers(client)
            assert len(slow) == 1
            with warnings.catch_warnings():  # asked once per client: no second warning
                warnings.simplefilter("error")
                assert check_workers(client) == slow
                # the default: tuned through client.run, no warning, and stays tuned
                assert check_workers(client, refresh=True) == []
                with xproda.set_options(tune_workers=False):  # tuned: nothing to warn
                    assert check_workers(client, refresh=True) == []
        assert os.environ.get("MALLOC_TRIM_THRESHOLD_") == "65536"  # left by the nanny
        with local_cluster(1, dashboard_address=None) as cluster, \
                distributed.Client(cluster) as client:
            env = next(iter(client.run(lambda: dict(os.environ)).values()))
            assert env["MALLOC_TRIM_THRESHOLD_"] == str(128 * 2**20)
            assert env["MALLOC_MMAP_THRESHOLD_"] == str(32 * 2**20)
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                assert check_workers(client) == []
        assert os.environ.get("MALLOC_TRIM_THRESHOLD_") == "65536"  # restored
    finally:
        os.environ.clear()
        os.environ.update(saved)


class _FakeClient:
    """A client whose workers report preset environments; tuning them fails (not glibc)."""

    id = "fake-client"

    def __init__(self, envs):
        self.envs = envs
        self.tuned_on = None

    def nthreads(self):
        return {w: 1 for w in self.envs}

    def run(self, fn, workers=None):
        if workers is None:
            return self.envs
        self.tuned_on = list(workers)
        return {w: False for w in workers}


def test_check_workers_any_trim_threshold_without_mmap_threshold_is_untuned():
    """glibc freezes the mmap threshold whenever MALLOC_TRIM_THRESHOLD_ is set, whatever its
    value: a large one is as slow; tuned processes and set mmap thresholds are fine."""
    from xproda.options import check_workers

    envs = {
        "big-trim": {"MALLOC_TRIM_THRESHOLD_": "134217728", "MALLOC_MMAP_THRESHOLD_": None,
                     "tuned": False},
        "hex-trim": {"MALLOC_TRIM_THRESHOLD_": "0x10000", "MALLOC_MMAP_THRESHOLD_": None,
                     "tuned": False},
        "both-set": {"MALLOC_TRIM_THRESHOLD_": "65536", "MALLOC_MMAP_THRESHOLD_": "33554432",
                     "tuned": False},
        "tuned": {"MALLOC_TRIM_THRESHOLD_": "65536", "MALLOC_MMAP_THRESHOLD_": None,
                  "tuned": True},
        "unset": {"MALLOC_TRIM_THRESHOLD_": None, "MALLOC_MMAP_THRESHOLD_": None,
                  "tuned": False},
    }
    client = _FakeClient(envs)
    with pytest.warns(RuntimeWarning, match="2 of 5 dask worker"):
        slow = check_workers(client, refresh=True)
    assert sorted(slow) == ["big-trim", "hex-trim"] == sorted(client.tuned_on)


def test_kill_when_survives_a_child_writing_much_to_stderr(tmp_path):
    """The child's stderr goes to a file: 200 KB of it (more than a pipe holds) must not
    block the child before it is ready."""
    import sys

    from xproda.testing import kill_when

    flag = tmp_path / "ready"
    code = ("import sys, time, pathlib; sys.stderr.write('x' * 200_000); sys.stderr.flush(); "
            f"pathlib.Path({str(flag)!r}).touch(); time.sleep(60)")
    t0 = time.monotonic()
    kill_when([sys.executable, "-c", code], flag.exists, timeout=30)
    assert time.monotonic() - t0 < 30
    with pytest.raises(AssertionError, match="exited before it was killed: .*boom"):
        kill_when([sys.executable, "-c", "import sys; sys.exit('boom')"], lambda: False,
                  timeout=30)
