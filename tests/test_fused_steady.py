"""The whole-steady-state CLM5 kernel (fused_steady) and the block scheduler (parallel)."""

from __future__ import annotations

import json
import multiprocessing
import os
import threading
from concurrent.futures import ProcessPoolExecutor

import numpy as np
import pytest
import torch
from conftest import FIXTURES
from hypothesis import given, settings
from hypothesis import strategies as st

import xproda
from xproda.models import fused, fused_steady, parallel
from xproda.testing import random_forcing, resampled_forcing

pytestmark = pytest.mark.skipif(not fused.HAVE_NUMBA, reason="numba not installed")

RTOL = 1e-11  # see tests/test_fused.py::_assert_same


def _cases():
    path = FIXTURES / "reference_clm5_cen.json"
    if not path.exists():
        pytest.skip(f"{path} not available (../shared absent)")
    return json.loads(path.read_text())["cases"]


def _both(m, th, f):
    a = m.steady_state(th, f)
    with xproda.set_options(fused_kernels=False):
        b = m.steady_state(th, f)
    return a, b


def _assert_parity(a, b, rtol=RTOL):
    assert set(a) == set(b)
    np.testing.assert_array_equal(a["flags"], b["flags"])
    np.testing.assert_array_equal(a["valid"], b["valid"])
    worst = 0.0
    for key in a:
        if key in ("flags", "valid"):
            continue
        x, y = np.asarray(a[key], dtype=float), np.asarray(b[key], dtype=float)
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=key)
        if key == "solve_error_estimate":  # rounding noise where small; the flags agree
            big = np.abs(y) > 1e-12
            np.testing.assert_allclose(x[big], y[big], rtol=1e-9)
            continue
        n = x.shape[0]
        ay = np.where(np.isnan(y), 0.0, np.abs(y)).reshape(n, -1).max(1)
        scale = np.where(ay > 0, ay, 1.0).reshape((n,) + (1,) * (x.ndim - 1))
        err = np.nan_to_num(np.abs(x - y) / scale)
        worst = max(worst, float(err.max()))
        assert err.max() <= rtol, (key, err.max())
    return worst


@pytest.mark.parametrize("reference", [False, True])
@pytest.mark.parametrize("layout,dtype", [("C", np.float64), ("transposed", np.float64),
                                          ("C", np.float32), ("transposed", np.float32)])
def test_parity_on_fixture_forcing_every_regime(reference, layout, dtype):
    cases = _cases()
    n = 240
    f = resampled_forcing(cases, n, 7, layout=layout, dtype=dtype)
    regimes = {c["regime"] for c in cases}
    assert {"bio", "cryo", "frozen_mixed", "shallow_bedrock"} <= regimes
    th = np.random.default_rng(7).uniform(0.02, 0.98, (n, 21))
    m = xproda.get_model("clm5", reference=reference)
    a, b = _both(m, th, f)
    assert a["valid"].sum() > n // 2  # the subject is not empty
    _assert_parity(a, b)


@pytest.mark.parametrize("model", ["clm5", "microbial"])
def test_every_layout_gives_the_same_bits(model):
    """C-contiguous, transposed views, one variable of each, float32 widened exactly: the
    kernel reads strided forcing through a per-column copy into the vectorised scan, so
    the results are identical, not merely close."""
    cases = _cases()
    n = 96
    m = xproda.get_model(model)
    P = len(m.parameters)
    th = np.random.default_rng(3).uniform(0.02, 0.98, (n, P))
    if model == "microbial":  # around kp = 0.3, where steady states are physical (spec §3.5)
        th = np.random.default_rng(3).uniform(0.25, 0.35, (n, P))
    c = resampled_forcing(cases, n, 5, layout="C")
    t = resampled_forcing(cases, n, 5, layout="transposed")
    assert c["TSOI"].flags.c_contiguous and not t["TSOI"].flags.c_contiguous
    mixed = {**c, "W_SCALAR": t["W_SCALAR"]}  # one strided variable: the copy path
    # every other column of a larger array: strided, but each column's [12, 20] block is
    # contiguous (read in place through fused.column_view)
    sparse = {k: (np.repeat(v, 2, axis=0)[::2] if v.ndim == 3 else v) for k, v in c.items()}
    assert not sparse["TSOI"].flags.c_contiguous and sparse["TSOI"].strides[1:] == (160, 8)
    # layers contiguous, months padded to 24 values: the copy path
    padded = {k: (np.pad(v, ((0, 0), (0, 0), (0, 4)))[..., :20] if v.ndim == 3 else v)
              for k, v in c.items()}
    assert padded["TSOI"].strides[1:] == (192, 8)
    c32 = resampled_forcing(cases, n, 5, layout="C", dtype=np.float32)
    w64 = {k: (v.astype(np.float64) if v.ndim == 3 else v) for k, v in c32.items()}
    ref = m.steady_state(th, c)
    assert np.isfinite(ref["soc_stock"]).sum() > n // 2  # the subject is not empty
    assert ref["valid"].sum() > 0
    for other, base in ((t, ref), (mixed, ref), (sparse, ref), (padded, ref),
                        (c32, m.steady_state(th, w64))):
        out = m.steady_state(th, other)
        for k in ("pools", "soc", "soc_stock", "respiration", "turnover_time", "flags"):
            np.testing.assert_array_equal(np.asarray(out[k]), np.asarray(base[k]), err_msg=k)


@settings(max_examples=8, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), regime=st.sampled_from(["bio", "cryo", "mixed"]),
       reference=st.booleans(), monthly_alt=st.booleans())
def test_parity_random_forcing(seed, regime, reference, monthly_alt):
    n = 40
    f = random_forcing(n, seed, regime=regime)
    if monthly_alt:  # active layer varying over the months: twelve operators per column
        f["ALTMAX"] = f["ALTMAX"] * np.linspace(0.6, 1.0, 12)
    th = np.random.default_rng(seed).uniform(0.01, 0.99, (n, 21))
    a, b = _both(xproda.get_model("clm5", reference=reference), th, f)
    _assert_parity(a, b)


def test_float32_and_views_are_read_without_copy():
    f = resampled_forcing(_cases(), 50, 1, layout="transposed", dtype=np.float32)
    assert not f["TSOI"].flags.c_contiguous
    layered, monthly, n, others = fused_steady.prepare_arrays(
        f, None, xproda.get_model("clm5").required_forcing)
    for name, a in zip(fused_steady.LAYERED_ORDER, layered):
        assert a.dtype == np.float32
        assert np.shares_memory(a, f[name]), name
    assert len(monthly) == 7 and n == 50
    for name, a in zip(fused_steady.MONTHLY_ORDER, monthly):
        assert a.shape == (50, 12) and a.dtype == np.float64, name
    assert set(others) == {"NPP", "CELLSAND"}


def test_torch_inputs_give_torch_outputs():
    f = random_forcing(20, 2)
    th = np.random.default_rng(2).uniform(0.1, 0.9, (20, 21))
    m = xproda.get_model("clm5")
    a = m.steady_state(torch.tensor(th), {k: torch.tensor(v) for k, v in f.items()})
    b = m.steady_state(th, f)
    assert isinstance(a["soc_stock"], torch.Tensor)
    np.testing.assert_array_equal(a["soc_stock"].numpy(), b["soc_stock"])


def test_no_data_columns_and_partial_months():
    n = 8
    f = random_forcing(n, 4)
    f["TSOI"][1] = np.nan  # a whole column missing
    f["W_SCALAR"][2, 3] = np.nan  # one month missing: omitted from the means
    f["ALTMAX"][3, 5] = np.nan  # one month's operator missing
    f["NPP"][4] = np.nan  # a variable the kernel does not read
    th = np.random.default_rng(4).uniform(0.1, 0.9, (n, 21))
    th[5, 3] = np.nan
    a, b = _both(xproda.get_model("clm5"), th, f)
    _assert_parity(a, b)
    assert a["flags"][1] == 1 and a["flags"][5] == 1  # no_data
    assert np.isfinite(a["soc_stock"][[0, 2, 3, 4, 6, 7]]).all()
    assert np.isnan(a["soc_stock"][[1, 5]]).all()


@pytest.mark.parametrize("name,edit,match", [
    ("TSOI", lambda f: f["TSOI"] - 273.15, "kelvin"),
    ("W_SCALAR", lambda f: np.where(np.arange(20) == 3, np.inf, f["W_SCALAR"]), "infinite"),
    ("FPI_vr", lambda f: np.where(np.arange(20) == 2, 1e36, f["FPI_vr"]), "fill value"),
    ("O_SCALAR", lambda f: f["O_SCALAR"] * 100.0, "above 1"),
    ("LITR1_INPUT", lambda f: -f["LITR1_INPUT"], "negative"),
    ("nbedrock", lambda f: np.minimum(f["nbedrock"], 19) + 0.5, "integer"),
    ("ALTMAX", lambda f: f["ALTMAX"][:, :6], r"shape \[n, 12\]"),
    ("NPP", lambda f: f["NPP"] * -1.0, "negative"),
    # monthly variables are checked from the kernel's statistics: same messages
    ("CWD_INPUT", lambda f: np.where(np.arange(12) == 4, 1e36, f["CWD_INPUT"]), "fill value"),
    ("ALTMAX_LASTYEAR", lambda f: np.where(np.arange(12) == 0, -np.inf, f["ALTMAX_LASTYEAR"]),
     "infinite"),
    ("nbedrock", lambda f: np.where(np.arange(12) == 7, 21.0, f["nbedrock"]), "nbedrock"),
    ("nbedrock", lambda f: np.where(np.arange(12) == 7, np.nan,
                                    np.minimum(f["nbedrock"], 19) + 0.25), "integer"),
])
def test_bad_forcing_same_errors_as_torch_path(name, edit, match):
    f = random_forcing(10, 5)
    f[name] = edit(f)
    th = np.full((10, 21), 0.5)
    m = xproda.get_model("clm5")
    with pytest.raises(ValueError, match=match) as fast:
        m.steady_state(th, f)
    with xproda.set_options(fused_kernels=False), pytest.raises(ValueError) as slow:
        m.steady_state(th, f)
    assert str(fast.value) == str(slow.value)


@pytest.mark.parametrize("bad", [("theta", "LITR2_INPUT"), ("LITR2_INPUT", "TSOI"),
                                 ("NPP", "nbedrock"), ("CWD_INPUT", "NPP")])
def test_several_bad_inputs_same_first_error(bad):
    """Several bad inputs at once: the fused path (values checked after the kernel, from
    its statistics) reports the one the torch path reports first."""
    f = random_forcing(6, 8)
    th = np.full((6, 21), 0.5)
    for what in bad:
        if what == "theta":
            th[1, 4] = 1.5
        elif what == "TSOI":
            f["TSOI"] = f["TSOI"] - 273.15
        elif what == "nbedrock":
            f["nbedrock"] = np.minimum(f["nbedrock"], 19) + 0.5
        else:
            f[what] = -f[what]
    m = xproda.get_model("clm5")
    with pytest.raises(ValueError) as fast:
        m.steady_state(th, f)
    with xproda.set_options(fused_kernels=False), pytest.raises(ValueError) as slow:
        m.steady_state(th, f)
    assert str(fast.value) == str(slow.value)


@pytest.mark.parametrize("bad", [0.0, 1.0, np.inf, 1.5])
def test_theta_out_of_range_same_error(bad):
    f = random_forcing(4, 6)
    th = np.full((4, 21), 0.5)
    th[2, 7] = bad
    m = xproda.get_model("clm5")
    with pytest.raises(ValueError, match="tau4s1") as fast:
        m.steady_state(th, f)
    with xproda.set_options(fused_kernels=False), pytest.raises(ValueError) as slow:
        m.steady_state(th, f)
    assert str(fast.value) == str(slow.value)


def test_results_do_not_depend_on_threads_or_blocks():
    n = 1000
    f = resampled_forcing(_cases(), n, 3)
    th = np.random.default_rng(3).uniform(0.05, 0.95, (n, 21))
    m = xproda.get_model("clm5")
    with xproda.set_options(kernel_threads=1):
        ref = m.steady_state(th, f)
    for threads in (2, 3):
        with xproda.set_options(kernel_threads=threads):
            out = m.steady_state(th, f)
        for k in ref:
            np.testing.assert_array_equal(out[k], ref[k], err_msg=k)
    # a column alone gives the bits it gives in the batch
    one = m.steady_state(th[17:18], {k: v[17:18] for k, v in f.items()})
    np.testing.assert_array_equal(one["pools"][0], ref["pools"][17])


def test_concurrent_threads_share_the_pool():
    m = xproda.get_model("clm5")
    inputs = [(np.random.default_rng(s).uniform(0.2, 0.9, (500, 21)), random_forcing(500, s))
              for s in range(4)]
    expected = [m.steady_state(th, f)["soc_stock"] for th, f in inputs]
    results: dict[int, np.ndarray] = {}

    def work(i):
        with xproda.set_options(kernel_threads=2):  # explicit: several threads at once
            results[i] = m.steady_state(*inputs[i])["soc_stock"]

    ts = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    for i in range(4):
        np.testing.assert_array_equal(results[i], expected[i])


def _stock_in_process(seed):
    import numpy as np

    import xproda
    from xproda.testing import random_forcing

    th = np.random.default_rng(seed).uniform(0.2, 0.9, (300, 21))
    return xproda.get_model("clm5").steady_state(th, random_forcing(300, seed))["soc_stock"]


def test_processes_give_the_same_bits():
    ctx = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(2, mp_context=ctx) as ex:
        got = list(ex.map(_stock_in_process, [0, 1]))
    for seed, g in zip([0, 1], got):
        np.testing.assert_array_equal(g, _stock_in_process(seed))


# -------------------------------------------------------------------------------------------
# the block scheduler
# -------------------------------------------------------------------------------------------
def test_run_blocks_covers_every_column_once():
    seen = np.zeros(1003, dtype=int)
    lock = threading.Lock()

    def kernel(c0, c1, out):
        with lock:
            out[c0:c1] += 1

    parallel.run_blocks(kernel, 1003, seen, threads=3, block=64)
    assert (seen == 1).all()
    parallel.run_blocks(kernel, 0, seen, threads=2)  # nothing to do
    assert (seen == 1).all()


def test_run_blocks_raises_the_first_error():
    def kernel(c0, c1):
        if c0 >= 128:
            raise ZeroDivisionError("block failed")

    with pytest.raises(ZeroDivisionError, match="block failed"):
        parallel.run_blocks(kernel, 1000, threads=2, block=64)


def test_kernel_threads_rules(monkeypatch):
    assert parallel.kernel_threads(3) == 3
    with pytest.raises(ValueError, match="threads"):
        parallel.kernel_threads(0)
    monkeypatch.setattr(parallel, "other_runnable", lambda: 0)  # a quiet machine
    assert parallel.kernel_threads() == torch.get_num_threads()
    monkeypatch.setattr(parallel, "other_runnable", lambda: None)  # unknown (not Linux)
    assert parallel.kernel_threads() == torch.get_num_threads()
    # a full machine: as many other runnable threads as cores -> twice the threads
    monkeypatch.setattr(parallel, "other_runnable", lambda: os.cpu_count())
    assert parallel.kernel_threads() == 2 * torch.get_num_threads()
    monkeypatch.setattr(parallel, "other_runnable", lambda: os.cpu_count() - 1)
    assert parallel.kernel_threads() == torch.get_num_threads()
    spike = iter([os.cpu_count(), 0, 0])  # runnable for an instant only: not a full machine
    monkeypatch.setattr(parallel, "other_runnable", lambda: next(spike))
    assert parallel.kernel_threads() == torch.get_num_threads()
    with xproda.set_options(kernel_threads=3):  # an explicit count wins
        monkeypatch.setattr(parallel, "other_runnable", lambda: 10 * os.cpu_count())
        assert parallel.kernel_threads() == 3
    with xproda.set_options(kernel_threads=5):
        assert parallel.kernel_threads() == 5
    seen = []
    t = threading.Thread(target=lambda: seen.append(parallel.kernel_threads()))
    t.start()
    t.join()
    assert seen == [1]  # a worker thread takes its share, not every core
    with pytest.raises(ValueError, match="kernel_threads"):
        xproda.set_options(kernel_threads=0)


def test_torch_threads_scope_rules(monkeypatch):
    """One torch thread for the block on a full machine without a passive wait policy;
    unchanged otherwise; the count restored afterwards, also after an error."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
        monkeypatch.setattr(parallel, "other_runnable", lambda: os.cpu_count())  # full
        with parallel.torch_threads_scope() as k:
            assert k == 1 and torch.get_num_threads() == 1
        assert torch.get_num_threads() == 2
        with pytest.raises(RuntimeError, match="inside"):
            with parallel.torch_threads_scope():
                raise RuntimeError("inside")
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("OMP_WAIT_POLICY", "passive")  # threads sleep: kept
        with parallel.torch_threads_scope() as k:
            assert k == 2 and torch.get_num_threads() == 2
        monkeypatch.delenv("OMP_WAIT_POLICY")
        with xproda.set_options(torch_threads=2):  # the user's count: kept
            with parallel.torch_threads_scope() as k:
                assert k == 2
        seen = []

        def worker():
            with parallel.torch_threads_scope() as k:
                seen.append(k)

        t = threading.Thread(target=worker)
        t.start()
        t.join()
        assert seen == [2]  # not from a worker thread (the setting is process-wide)
        spike = iter([os.cpu_count(), 0, 0])
        monkeypatch.setattr(parallel, "other_runnable", lambda: next(spike))
        with parallel.torch_threads_scope() as k:
            assert k == 2  # runnable for an instant: not full
        monkeypatch.setattr(parallel, "other_runnable", lambda: 0)
        with parallel.torch_threads_scope() as k:
            assert k == 2
        assert parallel.machine_full() is False
    finally:
        torch.set_num_threads(before)


def test_other_runnable_reads_the_run_queue():
    r = parallel.other_runnable()
    if not os.path.exists("/proc/loadavg"):
        assert r is None
        return
    assert isinstance(r, int) and r >= 0
    # a busy process beside us is seen as (at least) one other runnable thread
    import subprocess
    import sys
    import time

    p = subprocess.Popen([sys.executable, "-c", "print('go', flush=True)\nwhile True: pass"],
                         stdout=subprocess.PIPE, text=True)
    try:
        p.stdout.readline()
        seen = []
        for _ in range(40):
            seen.append(parallel.other_runnable())
            time.sleep(0.005)
    finally:
        p.kill()
        p.wait()
    assert max(seen) >= 1, seen


def test_oversubscribed_threads_give_the_same_bits():
    """More threads than cores (rule 4 on a full machine, or an explicit count): the pool
    starts the helpers and every column is computed alike."""
    n = 700
    f = random_forcing(n, seed=31, regime="mixed")
    th = np.random.default_rng(2).uniform(0.05, 0.95, (n, 21))
    m = xproda.get_model("clm5")
    with xproda.set_options(kernel_threads=1):
        ref = m.steady_state(th, f)
    with xproda.set_options(kernel_threads=4 * (os.cpu_count() or 1)):
        many = m.steady_state(th, f)
    for k in ("pools", "soc_stock", "flags"):
        np.testing.assert_array_equal(many[k], ref[k], err_msg=k)


def test_block_size_bounds():
    assert parallel.block_size(10, 2) == parallel.MIN_BLOCK
    assert parallel.block_size(10**7, 2) == parallel.MAX_BLOCK
    assert parallel.block_size(10**4, 2) % 8 == 0


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 300_000), threads=st.integers(1, 16))
def test_guided_block_bounds(n, threads):
    """Guided blocks cover every column once, in order; full-size blocks first, then
    shrinking ones (multiples of 8, at least MIN_BLOCK but for the last), never above the
    block size."""
    b = parallel.block_bounds(n, threads)
    sizes = np.diff(b)
    assert b[0] == 0 and b[-1] == n and (sizes > 0).all()
    full = parallel.block_size(n, threads)
    assert (sizes <= full).all()
    assert (sizes[:-1] % 8 == 0).all() and (sizes[:-1] >= min(parallel.MIN_BLOCK, n)).all()
    assert (np.diff(sizes[:-1]) <= 0).all()  # non-increasing
    fixed = parallel.block_bounds(n, threads, block=100)
    assert fixed == list(range(0, n, 100)) + [n]


@pytest.mark.parametrize("conservative", [True, False])
@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**31 - 1))
def test_compiled_transport_bands_equal_torch_bits(conservative, seed):
    """``transport_bands`` (the transient runs' compiled operators) gives the torch
    operators bit for bit: cryoturbation ramps, the 2 m and 3 m limits, bedrock at 1 and 20,
    zero and NaN active layers, NaN bedrock."""
    from xproda.models import transport

    rng = np.random.default_rng(seed)
    n, B = 64, 12
    alt = rng.choice([0.0, 0.3, 1.0, 2.0, 2.5, 5.0, np.nan], (n, B)) * rng.uniform(0.5, 1.5,
                                                                                (n, B))
    alt[rng.random((n, B)) < 0.2] = 2.0  # exactly at the cryoturbation limit
    ly = np.where(rng.random((n, B)) < 0.5, alt, rng.uniform(0, 4, (n, B)))
    nb = rng.integers(1, 21, (n, B)).astype(float)
    nb[rng.random((n, B)) < 0.05] = np.nan
    bio = rng.uniform(1e-5, 1e-3, n)
    cryo = rng.uniform(1e-5, 1e-3, n)
    got = fused_steady.transport_bands(bio, cryo, alt, ly, nb, conservative=conservative)
    T = torch.from_numpy
    d = transport.diffusivity(T(bio), T(cryo), T(alt), T(ly), T(nb))
    want = transport.monthly_operator(d, T(nb), conservative=conservative)
    assert np.isfinite(got[1]).sum() > n * B  # the subject is not empty
    for g, w in zip(got, want):
        w = w.numpy()
        np.testing.assert_array_equal(np.isnan(g), np.isnan(w))  # NaN signs may differ
        ok = ~np.isnan(w)
        np.testing.assert_array_equal(g[ok].view(np.uint64), w[ok].view(np.uint64))
