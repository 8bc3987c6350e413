"""The compiled passes of the spin-up (xproda.models.fused_spinup) against the torch path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import xproda
from xproda.models import fused_spinup as fsp
from xproda.models import transient as tr
from xproda.testing import random_forcing

M = xproda.get_model("clm5")


def _theta(n, seed=0):
    return np.random.default_rng(seed).uniform(0.15, 0.85, (n, 21))


def _operators(n, steps, seed, dt=None):
    """Step operators of a mixed-regime run whose active layer changes (several stored
    transport operators), with ``steps`` steps and step lengths ``dt``."""
    f = tr.repeat_forcing(random_forcing(n, seed=seed, regime="mixed"), years=2)
    f["ALTMAX"] = f["ALTMAX"] * np.linspace(0.7, 1.4, 24)[None]
    f["ALTMAX_LASTYEAR"] = f["ALTMAX_LASTYEAR"] * np.linspace(1.3, 0.8, 24)[None]
    f = {k: (v[:, :steps] if v.ndim >= 2 and v.shape[1] == 24 else v) for k, v in f.items()}
    th, fp, _, _, p, dts = tr._prepare(M, _theta(n, seed), f, dt)
    return tr.build_operators(M, p, fp, dts)


@settings(max_examples=30, deadline=None)
@given(rows=st.integers(1, 600), tail=st.sampled_from([(), (1,), (5,), (12, 20), (20, 7)]),
       dtype=st.sampled_from([np.float64, np.float32, np.int64]), m=st.integers(0, 700),
       seed=st.integers(0, 2**16))
def test_take_rows_is_indexing(rows, tail, dtype, m, seed):
    rng = np.random.default_rng(seed)
    a = (rng.normal(size=(rows,) + tail) * 100).astype(dtype)
    idx = rng.integers(0, rows, m)  # repeats and any order
    out = fsp.take_rows(a, idx, threads=3)
    assert out.dtype == a.dtype and out.shape == (m,) + tail and out.flags.c_contiguous
    np.testing.assert_array_equal(out, a[idx])
    # non-contiguous input
    np.testing.assert_array_equal(fsp.take_rows(a[::-1], idx), a[::-1][idx])


def test_take_rows_refuses_out_of_range_rows():
    a = np.zeros((5, 3))
    with pytest.raises(IndexError, match=r"\[0, 5\).*\[0, 5\]"):
        fsp.take_rows(a, np.array([0, 5]))
    with pytest.raises(IndexError, match="-1"):
        fsp.take_rows(a, np.array([-1]))
    assert fsp.take_rows(a, np.array([], dtype=np.int64)).shape == (0, 3)


@pytest.mark.parametrize("steps,dt", [(24, None), (1, None), (7, [5.0, 40, 31, 28, 31, 30, 31]),
                                      (13, 11.5)])
def test_mean_operator_bit_identical_to_torch(steps, dt):
    n = 700  # several column blocks on the kernel threads
    ops = _operators(n, steps, seed=steps, dt=dt)
    assert ops.lower.shape[1] > 1 or steps == 1  # the subject: several stored operators
    assert not ops.forcing["TSOI"].is_contiguous() or steps in (24, 1)  # views too
    with xproda.set_options(fused_kernels=False):
        K0, b0, d0 = ops.mean()
    K1, b1, d1 = ops.mean()
    for x, y in zip((K0, *b0, d0), (K1, *b1, d1)):
        assert x.shape == y.shape
        np.testing.assert_array_equal(y.numpy(), x.numpy())
    assert np.isfinite(K1.numpy()).all() and (d1.numpy() >= 0).all() and d1.numpy().max() > 0


def test_mean_operator_checks_shapes():
    ops = _operators(4, 24, seed=1)
    w = np.full(24, 1 / 24)
    args = [w, ops.environment()[0].numpy(), ops.environment()[1].numpy(), ops.kb.numpy(),
            np.ones(ops.lower.shape[1]), ops.lower.numpy(), ops.diag.numpy(), ops.upper.numpy(),
            ops.inputs.numpy(), ops.profile.numpy(), ops.band_index]
    bad = list(args)
    bad[0] = w[:5]
    with pytest.raises(ValueError, match=r"w must have shape \(24,\), got \(5,\)"):
        fsp.mean_operator(*bad)
    bad = list(args)
    bad[1] = args[1][0]
    with pytest.raises(ValueError, match=r"env_soil must be 3-D"):
        fsp.mean_operator(*bad)
    bad = list(args)
    bad[10] = np.full(24, ops.lower.shape[1])
    with pytest.raises(ValueError, match="band_index must lie in"):
        fsp.mean_operator(*bad)


@pytest.mark.parametrize("plain", [False, True])
def test_cycle_update_matches_torch(plain):
    rng = np.random.default_rng(5)
    n, m = 900, 700
    x = rng.uniform(0, 50, (m, 20, 7))
    a = rng.normal(size=(m, 20, 7)) * 1e-3
    b = rng.normal(size=(m, 20, 7)) * 1e-3 + (x if plain else 0.0)
    x[3] = 0.0
    a[3] = 0.0
    b[3] = 0.0  # 0 / 0: NaN, as torch
    a[5, 2, 1] = np.nan
    b[6, 19, 6] = np.inf
    x[7, 0, 0] = np.nan
    rows = rng.permutation(n)[:m]
    keep = rng.random(m) < 0.7
    state0 = rng.uniform(0, 50, (n, 20, 7))
    state = state0.copy()
    d = fsp.cycle_update(x, a, b, plain=plain, state=state, rows=rows, keep=keep, threads=3)
    X, A, B = (torch.from_numpy(v) for v in (x, a, b))
    delta = B - A if plain else A + B
    Xn = X + delta
    ref = (delta.abs().amax((1, 2)) / Xn.abs().amax((1, 2))).numpy()
    np.testing.assert_array_equal(d, ref)
    assert np.isnan(d[[3, 5, 6, 7]]).all() and np.isfinite(np.delete(d, [3, 5, 6, 7])).all()
    expect = state0.copy()
    expect[rows[keep]] = Xn.numpy()[keep]
    np.testing.assert_array_equal(state, expect)  # kept rows written, nothing else
    with pytest.raises(ValueError, match="C-contiguous float64"):
        fsp.cycle_update(x, a, b, plain=plain, state=state[:, ::-1], rows=rows, keep=keep)


@pytest.mark.parametrize("method", ["semi_analytic", "plain"])
def test_spin_up_compiled_updates(method):
    """The compiled gathers and updates: the caller's x0 is left alone, thread counts give the
    same bits, a no-data column stays NaN, and the torch path agrees to the tolerance."""
    n = 600
    f = random_forcing(n, seed=31, regime="mixed")
    f["TSOI"][9, 4, 2] = np.nan
    th = _theta(n, 3)
    x0 = M.steady_state(th, f)["pools"]
    x0 = np.nan_to_num(x0) * 1.1
    x0_copy = x0.copy()
    x0_t = torch.from_numpy(x0.copy())
    opts = {"method": method, "max_cycles": 200 if method == "semi_analytic" else 30}
    with xproda.set_options(kernel_threads=1):
        a = M.spin_up(th, f, x0=x0, **opts)
    with xproda.set_options(kernel_threads=3):
        b = M.spin_up(th, f, x0=x0_t, **opts)
    np.testing.assert_array_equal(x0, x0_copy)
    np.testing.assert_array_equal(x0_t.numpy(), x0_copy)
    np.testing.assert_array_equal(a["pools"], np.asarray(b["pools"]))
    np.testing.assert_array_equal(a["change"], np.asarray(b["change"]))
    assert np.isnan(a["pools"][9]).all() and a["flags"][9] != 0
    ok = np.arange(n) != 9
    assert np.isfinite(a["pools"][ok]).all() and (a["cycles"][ok] >= 1).all()
    with xproda.set_options(fused_kernels=False):
        c = M.spin_up(th, f, x0=x0, **opts)
    np.testing.assert_array_equal(a["cycles"], c["cycles"])
    scale = np.abs(c["pools"][ok]).max((1, 2), keepdims=True)
    err = np.abs(a["pools"][ok] - c["pools"][ok]) / scale
    assert err.max() < (1e-11 if method == "semi_analytic" else 1e-9)


@pytest.mark.parametrize("increments", [False, True])
def test_steps_without_outputs_give_the_same_state(increments):
    """A spin-up cycle's steps skip the per-step outputs: the same state and change bits."""
    ops = _operators(300, 24, seed=4)
    x = torch.from_numpy(np.nan_to_num(M.steady_state(_theta(300, 4), random_forcing(
        300, seed=4, regime="mixed"))["pools"]))
    xa, ra = tr.integrate(ops, x, increments=increments)
    xb, rb = tr.integrate(ops, x, increments=increments, outputs=False)
    np.testing.assert_array_equal(xb.numpy(), xa.numpy())
    assert set(rb) == ({"change"} if increments else set())
    assert set(ra) >= {"total_carbon", "soc_stock", "respiration", "input"}
    if increments:
        np.testing.assert_array_equal(rb["change"].numpy(), ra["change"].numpy())
    with xproda.set_options(fused_kernels=False):
        xc, rc = tr.integrate(ops, x, increments=increments, outputs=False)
    assert set(rc) == set(rb)
    np.testing.assert_allclose(xc.numpy(), xa.numpy(), rtol=1e-11)
    with pytest.raises(ValueError, match="save_soc and out arrays other than 'pools' need "
                                         "outputs=True"):
        tr.integrate(ops, x, save_soc=True, outputs=False)


def test_steps_of_a_subset_of_rows_read_in_place():
    """integrate(rows=...) steps columns of the operators without gathering them: the same
    bits as stepping a gathered copy; the torch path gathers and agrees."""
    n = 400
    ops = _operators(n, 24, seed=6)
    x_all = torch.from_numpy(np.nan_to_num(M.steady_state(_theta(n, 6), random_forcing(
        n, seed=6, regime="mixed"))["pools"]))
    rows = torch.from_numpy(np.random.default_rng(0).permutation(n)[:257])
    x = tr._take_rows(x_all, rows)
    for increments in (False, True):
        xa, ra = tr.integrate(ops.columns(rows), x, increments=increments)
        xb, rb = tr.integrate(ops, x, increments=increments, rows=rows)
        np.testing.assert_array_equal(xb.numpy(), xa.numpy())
        assert set(ra) == set(rb)
        for k in ra:
            np.testing.assert_array_equal(rb[k].numpy(), ra[k].numpy(), err_msg=k)
    with xproda.set_options(fused_kernels=False):
        xc, _ = tr.integrate(ops, x, rows=rows)
    np.testing.assert_allclose(xc.numpy(), tr.integrate(ops, x, rows=rows)[0].numpy(),
                               rtol=1e-11)
    with pytest.raises(IndexError, match=r"rows must lie in \[0, 400\)"):
        tr.integrate(ops, x[:1], rows=torch.tensor([400]))
    with pytest.raises(ValueError, match=r"x must be a C-contiguous float64 array of shape "
                                         r"\(257, 20, 7\)"):
        tr.integrate(ops, x[:5], rows=rows)


@pytest.mark.parametrize("plain", [False, True])
def test_spin_cycle_is_the_separate_calls(plain):
    """One compiled pass per block (gather, steps, correction, update) gives the bits of the
    separate calls it replaces; rows outside ``keep`` and outside the cycle stay untouched."""
    from xproda.models import fused

    n = 500
    ops = _operators(n, 12, seed=8)
    K, bands, _ = ops.mean()
    X0 = np.nan_to_num(M.steady_state(_theta(n, 8), random_forcing(
        n, seed=8, regime="mixed"))["pools"]) * 1.05
    rows = np.sort(np.random.default_rng(1).permutation(n)[:321])
    keep = np.random.default_rng(2).random(rows.size) < 0.8
    tau = float(ops.dt.sum())
    # the separate calls
    xa = torch.from_numpy(X0[rows].copy())
    xp, res = tr.integrate(ops, xa, increments=not plain, outputs=False,
                           rows=torch.from_numpy(rows))
    t = torch.from_numpy(rows)
    if plain:
        a, b = xa.numpy(), xp.numpy()
    else:
        D = res["change"].numpy()
        b = tr.shifted_solve(tr._take_rows(K, t), tuple(tr._take_rows(x, t) for x in bands),
                             tr._take_rows(ops.fractions, t), torch.from_numpy(D / tau),
                             0.0).numpy()
        a = D
    want = X0.copy()
    d_want = fsp.cycle_update(xa.numpy(), a, b, plain=plain, state=want, rows=rows, keep=keep)
    # one pass
    state = X0.copy()
    args = fused.step_arguments(*tr._step_inputs(ops, tr.layer_thickness(torch.from_numpy(X0))))
    mean = None if plain else (K.numpy()[rows], *(x.numpy()[rows] for x in bands),
                               ops.fractions.numpy()[rows])
    d = fsp.spin_cycle(args, state, rows, keep, plain=plain, tau=tau, mean=mean,
                       workspace=fsp.cycle_workspace(n), threads=3)
    np.testing.assert_array_equal(d, d_want)
    np.testing.assert_array_equal(state, want)
    untouched = np.setdiff1d(np.arange(n), rows[keep])
    np.testing.assert_array_equal(state[untouched], X0[untouched])
    assert np.isfinite(d).all() and (d > 0).any()
    if not plain:
        with pytest.raises(ValueError, match="needs mean="):
            fsp.spin_cycle(args, state, rows, keep, plain=False, tau=tau)
        bad = (mean[0], mean[1][:, :5], *mean[2:])
        with pytest.raises(ValueError, match=r"mean lower must have shape \(321, 20\)"):
            fsp.spin_cycle(args, state, rows, keep, plain=False, tau=tau, mean=bad)
    with pytest.raises(ValueError, match="step_args must be"):
        fsp.spin_cycle(args[:-1], state, rows, keep, plain=plain, tau=tau, mean=mean)
    with pytest.raises(IndexError, match=r"rows must lie in \[0, 500\)"):
        fsp.spin_cycle(args, state, np.array([500]), np.array([True]), plain=True, tau=tau)


def test_step_arguments_refuse_inconsistent_shapes():
    """The compiled steps read without bounds checks: inconsistent inputs are refused with
    the argument's name, the shape expected and the shape found."""
    from xproda.models import fused

    ops = _operators(6, 24, seed=9)
    x = torch.zeros(6, 20, 7, dtype=torch.float64)
    good = list(tr._step_inputs(ops, tr.layer_thickness(x)))
    fused.step_arguments(*good)  # consistent
    bad = list(good)
    bad[11] = np.full(24, ops.lower.shape[1])  # band_index past the stored operators
    with pytest.raises(ValueError, match=r"band_index must lie in \[0, \d+\)"):
        fused.step_arguments(*bad)
    bad = list(good)
    bad[12] = good[12][:, :, :3]
    with pytest.raises(ValueError, match=r"inputs must have shape \(6, 24, 4\).*\(6, 24, 3\)"):
        fused.step_arguments(*bad)
    bad = list(good)
    bad[3] = good[3][:5]
    with pytest.raises(ValueError, match=r"tsoi must have shape \(6, 24, 20\)"):
        fused.step_arguments(*bad)
