"""Transient CLM5 runs: implicit steps, mass balance, spin-up, gradients, splits."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import xproda
from xproda.models import FLAGS, transient as tr
from xproda.testing import random_forcing

M = xproda.get_model("clm5")


def _theta(n, seed=0):
    return np.random.default_rng(seed).uniform(0.15, 0.85, (n, 21))


def _constant(f):
    """Every month equal to the first (constant forcing)."""
    return {k: (np.repeat(v[:, :1], 12, axis=1) if k in tr._TIMED else v) for k, v in f.items()}


def _warming(f, years, dT):
    """``years`` of monthly forcing with a linear warming ramp of ``dT`` K and +20% inputs."""
    out = tr.repeat_forcing(f, years=years)
    T = 12 * years
    ramp = np.linspace(0.0, 1.0, T)
    out["TSOI"] = out["TSOI"] + dT * ramp[None, :, None]
    for k in ("CWD_INPUT", "LITR1_INPUT", "LITR2_INPUT", "LITR3_INPUT"):
        out[k] = out[k] * (1.0 + 0.2 * ramp[None, :])
    return out


@pytest.mark.parametrize("regime", ["bio", "cryo", "mixed"])
@pytest.mark.parametrize("fused", [True, False])
def test_constant_forcing_keeps_steady_state(regime, fused):
    n = 12
    f = _constant(random_forcing(n, seed=3, regime=regime))
    th = _theta(n, 1)
    ss = M.steady_state(th, f)
    assert ss["valid"].all()
    years = 100 if fused else 20  # the torch path steps in Python: a shorter run, same bound
    with xproda.set_options(fused_kernels=fused):
        sim = M.simulate(th, tr.repeat_forcing(f, years=years), x0=ss)
    drift = np.abs(sim["pools"] - ss["pools"]).max((1, 2)) / np.abs(ss["pools"]).max((1, 2))
    assert drift.max() < 1e-10
    stock_drift = np.abs(sim["soc_stock"][:, -1] / ss["soc_stock"] - 1.0)
    assert stock_drift.max() < 1e-10
    # the steady-state fluxes: input = respiration
    np.testing.assert_allclose(sim["input"][:, -1], ss["input"], rtol=1e-12)
    np.testing.assert_allclose(sim["respiration"][:, -1], ss["respiration"], rtol=1e-9)


@pytest.mark.parametrize("fused", [True, False])
def test_mass_balance_every_step(fused):
    n = 16
    f = _warming(random_forcing(n, seed=5), years=5, dT=4.0)
    f["ALTMAX"] = f["ALTMAX"] * np.linspace(1.0, 1.3, 60)[None]  # changing active layer
    with xproda.set_options(fused_kernels=fused):
        sim = M.simulate(_theta(n, 2), f, x0="steady_state")
    err = sim.mass_balance_error()
    assert err.shape == (n, 60)
    assert np.nanmax(err) < 1e-10
    # explicitly: dC = (input - respiration) dt / 365
    tot = np.concatenate([sim["initial_total_carbon"][:, None], sim["total_carbon"]], 1)
    np.testing.assert_allclose(
        np.diff(tot, axis=1), sim["net_flux"] * sim["dt"] / 365.0,
        atol=1e-10 * np.abs(tot).max())


def test_halving_dt_changes_century_run_below_0p1_percent():
    n = 10
    f = _warming(random_forcing(n, seed=7, regime="bio"), years=100, dT=4.0)
    th = _theta(n, 3)
    x0 = M.spin_up(th, random_forcing(n, seed=7, regime="bio"))
    a = M.simulate(th, f, x0=x0)
    half = {k: (np.repeat(v, 2, axis=1) if k in tr._TIMED else v) for k, v in f.items()}
    b = M.simulate(th, half, x0=x0, dt=tr.DEFAULT_DT / 2)
    rel = np.abs(b["soc_stock"][:, -1] / a["soc_stock"][:, -1] - 1.0)
    assert rel.max() < 1e-3
    change = np.abs(a["soc_stock"][:, -1] / a["initial_soc_stock"] - 1.0)
    assert change.max() > 1e-3  # the run does change SOC: the comparison is not vacuous


def _period_map(th, f):
    """Exact periodic state of one column by dense linear algebra: (I - Phi) X = P(0)."""
    thx = torch.as_tensor(th, dtype=torch.float64)
    _, ff, _, _, p, dts = tr._prepare(M, thx, f, None)
    ops = tr.build_operators(M, p, ff, dts)
    eye = torch.eye(140, dtype=torch.float64).reshape(140, 7, 20).transpose(1, 2)
    zero_in = tr.replace(ops, inputs=ops.inputs * 0.0).columns(torch.zeros(140, dtype=torch.long))
    phi_cols, _ = tr.integrate(zero_in, eye.clone())
    phi = phi_cols.transpose(1, 2).reshape(140, 140).T.numpy()
    c, _ = tr.integrate(ops, torch.zeros(1, 20, 7, dtype=torch.float64))
    c = c.transpose(1, 2).reshape(140).numpy()
    x = np.linalg.solve(np.eye(140) - phi, c)
    return x.reshape(7, 20).T


def test_spin_up_matches_exact_periodic_state():
    f = random_forcing(3, seed=11, regime="bio")
    f["nbedrock"][:] = 20  # a dense solve needs every layer active (no inert deep layers)
    th = _theta(3, 4)
    th[:, M.parameters.index("efolding")] = 0.9
    su = M.spin_up(th, f, tol=1e-12)
    assert su["converged"].all() and su["valid"].all()
    assert su.report.cycles_max < 40
    for i in range(3):
        fi = {k: v[i:i + 1] for k, v in f.items()}
        exact = _period_map(th[i:i + 1], fi)
        rel = np.abs(su["pools"][i] - exact).max() / np.abs(exact).max()
        assert rel < 1e-8
    # periodic: one more year returns to the same state
    sim = M.simulate(th, f, x0=su)
    rel = np.abs(sim["pools"] - su["pools"]).max((1, 2)) / np.abs(su["pools"]).max((1, 2))
    assert rel.max() < 1e-10


def test_spin_up_faster_than_plain_cycling_and_flags_unconverged():
    n = 8
    f = random_forcing(n, seed=13, regime="mixed")
    th = _theta(n, 5)
    semi = M.spin_up(th, f, tol=1e-9)
    plain = M.spin_up(th, f, tol=1e-9, method="plain", x0=np.zeros((n, 20, 7)), max_cycles=30)
    assert semi["converged"].all()
    assert not plain["converged"].any()
    assert (plain["flags"] & FLAGS["not_converged"]).all()
    assert plain.report.converged == 0 and "plain spin-up" in str(plain.report)
    assert semi.report.column_steps < 60 * 12 * n


def test_spin_up_handles_inert_layers():
    """Rates of ~1e-20 day-1 below bedrock do not blow up the Newton correction."""
    n = 300
    f = random_forcing(n, seed=1, regime="mixed")
    su = M.spin_up(_theta(n, 0), f, max_cycles=100)
    assert su["converged"].all()
    assert np.isfinite(su["pools"]).all() and (su["pools"] >= 0).all()


@pytest.mark.parametrize("reference", [False, True])
def test_fused_and_torch_paths_agree(reference):
    m = xproda.get_model("clm5", reference=reference)
    n = 20
    f = _warming(random_forcing(n, seed=17), years=2, dT=3.0)
    th = _theta(n, 6)
    a = m.simulate(th, f, x0="steady_state", save_soc=True)
    with xproda.set_options(fused_kernels=False):
        b = m.simulate(th, f, x0="steady_state", save_soc=True)
    for k in ("soc_stock", "total_carbon", "respiration", "input", "soc"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-11, atol=0, err_msg=k)
    assert a["soc"].shape == (n, 24, 20)


@pytest.mark.parametrize("steps", [1, 7, 13, 25])
def test_fused_steps_across_scalar_blocks(steps):
    """The step kernel computes its environmental scalars in blocks of 12 steps per column:
    runs whose length is not a multiple of the block, float32 forcing and a no-data column
    agree with the torch path."""
    n = 9
    f = _warming(random_forcing(n, seed=23, regime="mixed"), years=3, dT=2.0)
    f = {k: (v[:, :steps] if v.ndim >= 2 and v.shape[1] == 36 else v) for k, v in f.items()}
    for k in ("TSOI", "W_SCALAR", "O_SCALAR", "FPI_vr"):
        f[k] = np.ascontiguousarray(f[k], dtype=np.float32)
    f["TSOI"][4, steps // 2, 3] = np.nan
    th = _theta(n, 8)
    x0 = M.steady_state(th, random_forcing(n, seed=23, regime="mixed"))["pools"]
    a = M.simulate(th, f, x0=x0, save_soc=True)
    with xproda.set_options(fused_kernels=False):
        b = M.simulate(th, f, x0=x0, save_soc=True)
    assert a["soc"].shape == (n, steps, 20)
    assert np.isnan(a["soc_stock"][4, steps // 2:]).all() and a["flags"][4] != 0
    keep = np.arange(n) != 4
    assert np.isfinite(a["soc"][keep]).all()
    for k in ("soc_stock", "total_carbon", "respiration", "input", "soc", "pools"):
        np.testing.assert_allclose(a[k], b[k], rtol=1e-11, atol=0, equal_nan=True, err_msg=k)


def test_numpy_and_torch_io_and_spin_up_default():
    n = 4
    f = tr.repeat_forcing(random_forcing(n, seed=19), years=2)
    th = _theta(n, 7)
    a = M.simulate(th, f)
    assert isinstance(a["soc_stock"], np.ndarray) and a["soc_stock"].shape == (n, 24)
    assert a.spin_up is not None and a.spin_up["converged"].all()
    ft = {k: torch.as_tensor(v) for k, v in f.items()}
    b = M.simulate(torch.as_tensor(th), ft)
    assert isinstance(b["soc_stock"], torch.Tensor)
    np.testing.assert_allclose(b["soc_stock"].numpy(), a["soc_stock"], rtol=1e-13)
    assert "Simulation: 4 columns x 24 steps" in repr(a)


def test_gradcheck_through_steps():
    n = 2
    fn_ = _warming(random_forcing(n, seed=23, regime="bio"), years=1, dT=2.0)
    fn_ = {k: (v[:, :4] if k in tr._TIMED else v) for k, v in fn_.items()}
    x0 = torch.as_tensor(M.simulate(_theta(n, 8), fn_, x0="steady_state")["initial_pools"])
    f = {k: torch.as_tensor(v) for k, v in fn_.items()}

    def fn(th):
        out = M.simulate(th, f, x0=x0)  # scaled to O(1): finite differences stay accurate
        return out["soc_stock"][:, -1] / 1e5, out["respiration"][:, -1] / 1e3

    th = torch.tensor(_theta(n, 8), requires_grad=True)
    assert torch.autograd.gradcheck(fn, (th,), eps=1e-5, atol=1e-7, rtol=1e-5)


def test_gradient_through_steady_state_start():
    n = 2
    f = {k: torch.as_tensor(v) for k, v in
         tr.repeat_forcing(random_forcing(n, seed=29, regime="bio"), years=1).items()}
    th = torch.tensor(_theta(n, 9), requires_grad=True)
    out = M.simulate(th, f, x0="steady_state")
    g, = torch.autograd.grad(out["soc_stock"][:, -1].sum(), th)
    assert torch.isfinite(g).all() and g.abs().sum() > 0


@settings(max_examples=10, deadline=None)
@given(cut=st.integers(1, 35), size=st.integers(1, 7))
def test_time_and_column_splits_are_bit_identical(cut, size):
    n = 7
    f = _warming(random_forcing(n, seed=31), years=3, dT=2.0)
    th = _theta(n, 10)
    full = M.simulate(th, f, x0="steady_state")
    first = M.simulate(th, {k: (v[:, :cut] if k in tr._TIMED else v) for k, v in f.items()},
                       x0=full["initial_pools"])
    rest = M.simulate(th, {k: (v[:, cut:] if k in tr._TIMED else v) for k, v in f.items()},
                      x0=first)
    np.testing.assert_array_equal(np.concatenate([first["soc_stock"], rest["soc_stock"]], 1),
                                  full["soc_stock"])
    np.testing.assert_array_equal(rest["pools"], full["pools"])
    with xproda.set_options(kernel_batch_size=size):
        chunked = M.simulate(th, f, x0=full["initial_pools"])
    np.testing.assert_array_equal(chunked["soc_stock"], full["soc_stock"])


def test_no_data_columns_propagate_nan():
    n = 5
    f = tr.repeat_forcing(random_forcing(n, seed=37), years=1)
    f["TSOI"][2] = np.nan
    th = _theta(n, 11)
    th[4, 3] = np.nan
    out = M.simulate(th, f)
    assert np.isnan(out["soc_stock"][[2, 4]]).all()
    assert np.isfinite(out["soc_stock"][[0, 1, 3]]).all()
    assert (out["flags"][[2, 4]] & FLAGS["no_data"]).all()
    assert out["valid"].tolist() == [True, True, False, True, False]


def test_calendar_steps_and_inputs_rate_convention():
    n = 3
    f = _constant(random_forcing(n, seed=41))
    th = _theta(n, 12)
    days = np.array([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], float)
    out = M.simulate(th, f, x0="steady_state", dt=days)
    # inputs are rates per mean month: a year adds the steady state's annual input
    added = (out["input"] * days / 365.0).sum(1)
    np.testing.assert_allclose(added, M.steady_state(th, f)["input"], rtol=1e-12)


def test_errors():
    f = tr.repeat_forcing(random_forcing(2, seed=43), years=2)
    th = _theta(2, 13)
    bad = dict(f, LITR1_INPUT=f["LITR1_INPUT"][:, :12])
    with pytest.raises(ValueError, match="LITR1_INPUT.*shape \\[n, 24\\]"):
        M.simulate(th, bad)
    with pytest.raises(ValueError, match="dt must"):
        M.simulate(th, f, dt=-1.0)
    with pytest.raises(ValueError, match="dt must be a number of days or one length per"):
        M.simulate(th, f, dt=np.ones(5))
    with pytest.raises(ValueError, match=r"x0 must have shape \[n=2, 20, 7\]"):
        M.simulate(th, f, x0=np.zeros((2, 20)))
    with pytest.raises(ValueError, match="x0 must be 'spin_up', 'steady_state'"):
        M.simulate(th, f, x0="cold")
    with pytest.raises(ValueError, match="method must be"):
        M.spin_up(th, f, method="fast")
    with pytest.raises(NotImplementedError, match="linear CLM5"):
        xproda.get_model("microbial").simulate(th, f)
    with pytest.raises(ValueError, match="years must be"):
        tr.repeat_forcing(f, years=0)


@pytest.mark.parametrize("below", [False, True])
def test_step_profiles_equal_the_torch_profiles(below):
    """The compiled per-step input profiles equal forcing.profile_from_weights (times the
    per-day scale) to the last bits of the normalising sum."""
    from xproda.models import forcing as fmod
    from xproda.models import fused_steady

    rng = np.random.default_rng(5)
    n, B = 50, 12
    beta = torch.as_tensor(rng.uniform(0.9, 0.99, n))
    g = fmod.jackson_weights(beta)
    alt_ly = rng.uniform(-0.5, 3.0, (n, B))
    alt_ly[3, 4] = np.nan
    nb = rng.integers(1, 21, (n, B)).astype(float)
    nb[6, 2] = np.nan
    scale = rng.uniform(1, 3, 20)
    got = fused_steady.step_profiles(g.numpy(), alt_ly, None if below else nb, scale)
    want = fmod.profile_from_weights(
        g.unsqueeze(1), torch.as_tensor(alt_ly > 0).unsqueeze(-1),
        None if below else torch.as_tensor(nb).unsqueeze(-1)) * torch.as_tensor(scale)
    want = want.numpy()
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got, want, rtol=4e-16 * 20, atol=0)
    assert (got[alt_ly <= 0][:, 1:] == 0).all()  # frozen: all input into layer 1
    if not below:
        assert np.isnan(got[6, 2]).all() or alt_ly[6, 2] <= 0
