"""The fused numba CPU kernel equals the torch structured solve (the no-grad fast path)."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import xproda
from conftest import random_forcing
from xproda.models import fused as _fused

pytestmark = pytest.mark.skipif(not _fused.HAVE_NUMBA, reason="numba not installed")


def _both(fn):
    """Run ``fn()`` with the fused kernel and with the torch path; return both results."""
    with xproda.set_options(fused_kernels=True):
        a = fn()
    with xproda.set_options(fused_kernels=False):
        b = fn()
    return a, b


def _assert_same(a, b, rtol=1e-11):
    """Same flags and NaN; values to ``rtol`` of each column's largest value.

    The whole-steady-state kernel computes the environmental scalars with
    :func:`xproda.models.fused.vexp` (within 1 ulp of the C library) and sums months in
    order, torch with its own vectorised ``exp`` and reduction order: inputs to the solve
    differ in the last bit, which the solve amplifies by the system's condition (~1e3-1e5)
    to ~1e-12 of the column maximum, at worst 7.0e-12 in 2,100 random-forcing draws with
    monthly active layers -- with the C library's ``exp`` and with ``vexp`` alike (the
    earlier 5e-12 was too tight for both).
    """
    np.testing.assert_array_equal(a["flags"], b["flags"])
    for key in ("pools", "soc", "soc_stock", "respiration", "turnover_time"):
        x, y = np.asarray(a[key]), np.asarray(b[key])
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=key)
        axes = tuple(range(1, x.ndim))
        ay = np.where(np.isnan(y), 0.0, np.abs(y))
        scale = ay.max(axis=axes, keepdims=True) if axes else ay
        scale = np.where(scale > 0, scale, 1.0)
        err = np.nan_to_num(np.abs(x - y) / scale)
        assert err.max() <= rtol, (key, err.max())


def test_fused_path_is_taken(monkeypatch):
    from xproda.models import fused_steady

    calls = []
    real = fused_steady.clm5_steady_state
    monkeypatch.setattr(fused_steady, "clm5_steady_state",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    f = random_forcing(8, 0)
    th = np.full((8, 21), 0.5)
    m = xproda.get_model("clm5")
    m.steady_state(th, f)
    assert calls, "no-grad CPU call must use the fused kernel"
    calls.clear()
    with xproda.set_options(fused_kernels=False):
        m.steady_state(th, f)
    assert not calls
    thr = torch.tensor(th, requires_grad=True)
    m.steady_state(thr, {k: torch.as_tensor(v) for k, v in f.items()})
    assert not calls, "a call that needs gradients must use the torch path"


@settings(max_examples=10, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    regime=st.sampled_from(["bio", "cryo", "mixed"]),
    reference=st.booleans(),
)
def test_fused_equals_torch(seed, regime, reference):
    n = 50
    f = random_forcing(n, seed, regime=regime)
    th = np.random.default_rng(seed).uniform(0.01, 0.99, (n, 21))
    m = xproda.get_model("clm5", reference=reference)
    a, b = _both(lambda: m.steady_state(th, f))
    _assert_same(a, b)


def test_fused_nan_and_zero_input_columns():
    n = 6
    f = random_forcing(n, 3)
    f["TSOI"][1] = np.nan  # no data -> NaN, flagged no_data on both paths
    f["CWD_INPUT"][2] = 0.0  # zero CWD input -> CWD pool 0, not NaN
    th = np.full((n, 21), 0.4)
    th[3, 0] = np.nan
    m = xproda.get_model("clm5")
    a, b = _both(lambda: m.steady_state(th, f))
    _assert_same(a, b)
    assert np.isnan(a["soc_stock"][[1, 3]]).all()
    assert np.all(a["pools"][2, :, 0] == 0.0)
    assert np.isfinite(a["soc_stock"][[0, 2, 4, 5]]).all()


@pytest.mark.parametrize("profile", ["surface", "beta"])
def test_fused_default_mode_per_layer_fractions(profile):
    """CLM5 default mode: sand-dependent fractions vary by layer ([n, 20] parameters)."""
    n = 20
    f = random_forcing(n, 5)
    f["CELLSAND"] = np.random.default_rng(5).uniform(5, 90, (n, 20))
    m = xproda.get_model("clm5")
    a, b = _both(lambda: m.default_steady_state(f, input_profile=profile))
    _assert_same(a, b)


def test_float32_keeps_torch_path():
    x = torch.ones(3, dtype=torch.float32)
    assert not _fused.fused_applicable(x)


def test_fused_thread_safe():
    """Concurrent calls (as from dask's threaded scheduler) neither crash nor mix results."""
    m = xproda.get_model("clm5")
    inputs = [(np.random.default_rng(s).uniform(0.2, 0.9, (300, 21)), random_forcing(300, s))
              for s in range(4)]
    expected = [m.steady_state(th, f)["soc_stock"] for th, f in inputs]
    results: dict[int, np.ndarray] = {}

    def work(i):
        th, f = inputs[i]
        results[i] = m.steady_state(th, f)["soc_stock"]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(4):
        np.testing.assert_array_equal(results[i], expected[i])


def test_use_fused_rules():
    x = torch.ones(3, dtype=torch.float64)
    g = torch.ones(3, dtype=torch.float64, requires_grad=True)
    assert _fused.fused_applicable(x, None)
    assert not _fused.fused_applicable(x, g)
    with torch.no_grad():
        assert _fused.fused_applicable(x, g)
    with xproda.set_options(fused_kernels=False):
        assert not _fused.fused_applicable(x)
    with pytest.raises(ValueError, match="fused_kernels"):
        xproda.set_options(fused_kernels="yes")


def test_fused_calls_leave_torch_threads_alone():
    """numba's OpenMP layer shares the thread count with torch: it is restored."""
    import torch

    import xproda
    from xproda.models import transient as tr
    from xproda.testing import random_forcing

    prev = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        m = xproda.get_model("clm5")
        f = random_forcing(16)
        m.steady_state(np.full((16, 21), 0.5), f)
        assert torch.get_num_threads() == 1
        m.simulate(np.full((16, 21), 0.5), tr.repeat_forcing(f, years=1))
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(prev)


# -------------------------------------------------------------------------------------------
# vexp: the vectorisable exp of the compiled kernels
# -------------------------------------------------------------------------------------------
def _vexp_loop(x, out):  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        out[i] = _fused.vexp(x[i])


if _fused.HAVE_NUMBA:
    _vexp_loop = _fused.jit_kernel(_vexp_loop, error_model="numpy")


def _vexp_array(x):
    out = np.empty_like(x)
    _vexp_loop(x, out)
    return out


def _c_exp(v):
    """The C library's exp (math.exp), inf where it overflows."""
    import math

    try:
        return math.exp(v)
    except OverflowError:
        return math.inf


def _ulps(a, b):
    """|a - b| in units of the last place of b (finite, positive b)."""
    return np.abs(a - b) / np.spacing(b)


def test_vexp_within_one_ulp_of_the_c_library():
    rng = np.random.default_rng(0)
    # the kernels' range (Q10 scalars: |x| < 20) densely, the whole range, and both ends
    # (overflow from 709.78, subnormal results below -708.4, 0 below -745.13)
    x = np.concatenate([rng.uniform(-20, 20, 200_000), rng.uniform(-745, 709.7, 200_000),
                        rng.uniform(-746, -700, 50_000), rng.uniform(700, 711, 50_000)])
    got = _vexp_array(x)
    want = np.array([_c_exp(v) for v in x])
    fin = np.isfinite(want) & (want > 0)
    assert fin.sum() > 490_000
    assert _ulps(got[fin], want[fin]).max() <= 1.0
    np.testing.assert_array_equal(got[~fin], want[~fin])  # inf above 709.78, 0 below -745.13
    special = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, -1e300, 709.78, -745.13,
                        -745.14, 5e-324, -5e-324])
    want = np.array([_c_exp(v) for v in special])
    np.testing.assert_array_equal(_vexp_array(special), want)


@given(st.floats(allow_nan=True, allow_infinity=True))
@settings(max_examples=300, deadline=None)
def test_vexp_property(v):
    """Any float: NaN for NaN, the C library's inf/0 outside the range, 1 ulp inside."""
    got = _vexp_array(np.array([v]))[0]
    want = _c_exp(v)
    if not np.isfinite(want) or want == 0.0:
        np.testing.assert_array_equal(got, want)
    else:
        assert _ulps(got, want) <= 1.0


def test_compiled_solves_refuse_other_layer_counts():
    n, L = 3, 10
    K = np.ones((n, L, 7))
    bands = [np.zeros((n, L))] * 3
    with pytest.raises(ValueError, match="need 20 layers .* got 10"):
        _fused.clm5_pools(K, *bands, np.ones((n, L, 4)), np.full((n, L, 9), 0.5))
    with pytest.raises(ValueError, match="clm5_shifted_solve: .* got 10"):
        _fused.clm5_shifted_solve(K, *bands, np.full((n, L, 9), 0.5), np.ones((n, L, 7)), 0.1)


def _group_inputs(seed):
    """A group's work array (:func:`group_scratch`) filled with physically shaped inputs,
    and its input views ``(K, rhs, fractions, lower, diag, upper)``."""
    rng = np.random.default_rng(seed)
    S, K, rhs, x, fr, lo, di, up = _fused.group_scratch()
    L, G = lo.shape
    assert (L, G) == (20, _fused.GROUP_SIZE) and S.size == 4080
    K[:] = rng.uniform(1e-4, 1e-1, K.shape)
    rhs[:] = rng.uniform(0, 1, rhs.shape)
    fr[:] = rng.uniform(0, 0.7, fr.shape)
    lo[:] = -rng.uniform(0, 1e-3, lo.shape)
    up[:] = -rng.uniform(0, 1e-3, up.shape)
    di[:] = -(lo + up) + rng.uniform(0, 1e-4, di.shape)
    return S, (K, rhs, fr, lo, di, up), x


@pytest.mark.parametrize("shift", [0.0, 1.0 / 30.0])
@given(seed=st.integers(0, 2**31), hostile=st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 10**6),
              st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, 1e-300, -1.0])),
    max_size=6))
@settings(max_examples=40, deadline=None)
def test_simd_group_solve_equals_the_numpy_program(shift, seed, hostile):
    """The explicit-SIMD group solve (LLVM vectors) gives the numpy evaluation of the same
    program bit for bit, every entry of the work array, hostile inputs (NaN, inf, zeros)
    included."""
    S, inputs, _ = _group_inputs(seed)
    for which, i, val in hostile:
        a = inputs[which].reshape(-1)  # a view of S
        a[i % a.size] = val
    want, got = S.copy(), S.copy()
    _fused.group_solve_numpy(want, shift)
    _fused.group_solve(got, shift)
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("shift", [0.0, 0.1])
def test_group_solve_lanes_are_independent(shift):
    """Each lane (column) gets the bits it gets alone: permuting the columns of a group
    permutes the solution exactly, and a NaN column leaves the others untouched."""
    S, (K, *_), x = _group_inputs(3)
    G = _fused.GROUP_SIZE
    K[5, 4, 1] = np.nan  # column 1 is no-data
    shape = S.size // G, G  # lanes are the last axis of the flat layout
    lanes = S.reshape(shape).copy()
    _fused.group_solve(S, shift)
    sol = x.copy()
    assert np.isfinite(sol[..., [0, 2, 3]]).all() and np.isnan(sol[..., 1]).any()
    perm = np.roll(np.arange(G), 1)
    S[:] = lanes[:, perm].ravel()
    _fused.group_solve(S, shift)
    np.testing.assert_array_equal(x, sol[..., perm])
    for g in range(G):  # one column copied into every lane
        S[:] = np.repeat(lanes[:, g:g + 1], G, axis=1).ravel()
        _fused.group_solve(S, shift)
        np.testing.assert_array_equal(x[..., 0], sol[..., g])


def test_group_solve_numpy_checks_the_work_array():
    with pytest.raises(ValueError, match=r"S must be float64 of shape \(4080,\)"):
        _fused.group_solve_numpy(np.zeros(10), 0.0)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_column_view_reads_a_column_block_in_place(dtype):
    """``column_view(a, c, size)`` is ``a[c]`` flattened, read in place, whatever the numba
    layout of ``a`` (C arrays, and strided views whose column blocks are contiguous)."""
    numba = pytest.importorskip("numba")
    view = _fused.column_view

    @numba.njit
    def first_values(a, c, size):
        v = view(a, c, size)
        out = np.empty(size)
        for i in range(size):
            out[i] = v[i]
        v[0] = -1.0  # a view: writes reach a
        return out

    base = np.arange(6 * 12 * 20, dtype=dtype).reshape(6, 12, 20)
    for a in (base, base[::2], base[1:]):  # C layout, then two 'A' / strided ones
        a = a.copy() if a is base else a
        for c in range(a.shape[0]):
            want = a[c].ravel().astype(np.float64)
            got = first_values(a, c, 240)
            np.testing.assert_array_equal(got, want)
            assert a[c, 0, 0] == -1.0


@pytest.mark.parametrize("shift", [0.0, 1.0 / 30.0])
def test_group_solve_never_writes_its_inputs(shift):
    """The solve reads K, the right-hand side, the fractions and the bands and writes only
    its own rows: the steady kernels fill the SOM inputs' zeros once per call and rely on
    them staying 0."""
    S, inputs, _ = _group_inputs(11)
    before = [a.copy() for a in inputs]
    _fused.group_solve(S, shift)
    for a, b in zip(inputs, before):
        np.testing.assert_array_equal(a, b)


@given(seed=st.integers(0, 2**31), hostile=st.lists(
    st.tuples(st.integers(0, 5), st.integers(0, 10**6),
              st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -0.0, 1e300, -1.0])),
    max_size=4))
@settings(max_examples=25, deadline=None)
def test_uniform_fraction_solve(seed, hostile):
    """``group_solve_uniform`` (the steady kernels' solve: every layer takes layer 0's
    transfer fractions) equals its numpy program bit for bit, and equals the per-layer solve
    of the same system (fractions copied to every layer) bit for bit."""
    S, inputs, _ = _group_inputs(seed)
    for which, i, val in hostile:
        a = inputs[which].reshape(-1)
        a[i % a.size] = val
    fr = inputs[2]
    got, want = S.copy(), S.copy()
    _fused.group_solve_numpy(want, 0.0, uniform_fractions=True)
    _fused.group_solve_uniform(got)
    np.testing.assert_array_equal(got, want)
    fr[:] = fr[:1]  # layer 0's fractions in every layer: the general solve gives the same
    layered = S.copy()
    _fused.group_solve(layered, 0.0)
    uni = S.copy()
    _fused.group_solve_uniform(uni)
    np.testing.assert_array_equal(uni, layered)


_finite = st.floats(-1e300, 1e300, allow_nan=False, allow_infinity=False, allow_subnormal=False)
_value = st.one_of(_finite, st.just(np.nan), st.just(np.inf), st.just(-np.inf))


@settings(max_examples=60, deadline=None)
@given(st.lists(_value, min_size=0, max_size=60), st.integers(1, 7),
       st.sampled_from([np.float64, np.float32]))
def test_value_range_equals_numpy(values, width, dtype):
    """The compiled range (NaN skipped, infinities seen) equals the numpy reference."""
    from xproda.models import forcing as fmod

    with np.errstate(over="ignore"):
        a = np.array(values + [np.nan] * (-len(values) % width), dtype=dtype)
    a = a.reshape(-1, width) if a.size else a.reshape(0, width)
    lo, hi, inf, _ = _fused.value_range(a)
    want = fmod.value_range(a)
    assert (lo, hi, inf) == want or (np.isinf(lo) and np.isinf(hi) and want[0] > want[1]
                                     and lo > hi)


def test_value_range_non_integer_and_threads():
    rng = np.random.default_rng(3)
    a = np.round(rng.uniform(1, 20, (5000, 13)))
    a[rng.random(a.shape) < 0.05] = np.nan
    assert _fused.value_range(a, integer=True)[3] is False
    a[4321, 7] = 3.25
    for threads in (1, 2, 5):
        lo, hi, inf, frac = _fused.value_range(a, integer=True, threads=threads)
        assert (lo, hi, inf, frac) == (1.0, 20.0, False, True)
    assert _fused.value_range(a, integer=False)[3] is False
    assert _fused.value_range(np.full((4, 3), np.nan)) == (np.inf, -np.inf, False, False)
    assert _fused.value_range(np.empty((0, 3))) == (np.inf, -np.inf, False, False)


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 30), st.integers(1, 40), st.integers(0, 13), st.integers(0, 2**32 - 1),
       st.booleans())
def test_repeats_equals_the_definition(n, T, lag, seed, spoil):
    rng = np.random.default_rng(seed)
    period = max(lag, 1)
    base = rng.uniform(0, 3, (n, period))
    base[rng.random(base.shape) < 0.2] = np.nan
    a = np.tile(base, (1, T // period + 1))[:, :T] if lag else np.repeat(base[:, :1], T, 1)
    if spoil and T > period:
        a[rng.integers(n), rng.integers(period, T)] = 7.5
    a = np.asfortranarray(a) if seed % 2 else a  # any strides
    ref = a[:, :1] if lag == 0 else a[:, :-lag]
    cur = a if lag == 0 else a[:, lag:]
    want = bool(((cur == ref) | (np.isnan(cur) & np.isnan(ref))).all())
    assert _fused.repeats(a, lag) is want


def test_clm5_steps_out_arrays_checked():
    n, T, L = 3, 5, 20
    z = np.zeros
    args = (z((n, L, 7)), z(n), z(n), *(z((n, T, L)) for _ in range(4)),
            *(z((n, 1, L)) for _ in range(4)), np.zeros(T, np.int64), z((n, T, 4)),
            z((n, L, 9)), np.ones(T), np.ones(L), z((n, L, 7)))
    with pytest.raises(ValueError, match=r"out\['soc_stock'\] must be a writeable C-contiguous"):
        _fused.clm5_steps(*args, out={"soc_stock": np.zeros((n, T + 1))})
    with pytest.raises(ValueError, match=r"out\['pools'\]"):
        _fused.clm5_steps(*args, out={"pools": np.zeros((n, T))})
    big = np.full((n + 2, T), -1.0)
    res = _fused.clm5_steps(*args, out={"input": big[1:n + 1]})
    assert res["input"].base is big or np.shares_memory(res["input"], big)
    assert (big[1:n + 1] == 0).all() and (big[0] == -1).all() and (big[-1] == -1).all()


def test_numpy_compatible_dtypes_and_nan_rows_on_either_path():
    """numpy_compatible: CPU tensors whose dtype numpy shares; nan_rows gives the same rows
    through numpy and, for the dtypes numpy lacks (bfloat16), through torch."""
    shared = [torch.bool, torch.uint8, torch.int16, torch.int64, torch.float16, torch.float32,
              torch.float64, torch.complex64]
    for dt in shared:
        t = torch.zeros(3, dtype=dt)
        assert _fused.numpy_compatible(t)
        t.numpy()  # the view it promises
    lacking = [torch.bfloat16, torch.complex32, torch.float8_e4m3fn]
    for dt in lacking:
        assert not _fused.numpy_compatible(torch.zeros(3, dtype=dt))
        assert not _fused.numpy_compatible(torch.zeros(3), torch.zeros(3, dtype=dt))
    assert _fused.numpy_compatible()  # nothing to convert
    model = xproda.get_model("clm5")
    th = torch.full((4, 21), 0.5, dtype=torch.float64)
    th[1, 3] = float("nan")
    f = {"TSOI": torch.ones(4, 12, 20), "NPP": torch.ones(4, 12)}
    f["TSOI"][2, 5, 7] = float("nan")
    expected = [False, True, True, False]
    assert model.nan_rows(th, f).tolist() == expected  # numpy
    fb = {k: v.to(torch.bfloat16) for k, v in f.items()}
    assert model.nan_rows(th, fb).tolist() == expected  # torch (numpy has no bfloat16)
