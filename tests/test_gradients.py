"""Autograd gradients through the structured solver (gradcheck) and NaN isolation."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xproda
from conftest import random_forcing

P = {"clm5": 21, "microbial": 23}


def _forcing_t(n, seed, regime="mixed"):
    return {k: torch.tensor(v, dtype=torch.float64) for k, v in random_forcing(n, seed, regime=regime).items()}


def _theta(name, n, seed, lo=0.2, hi=0.8):
    rng = np.random.default_rng(seed)
    if name == "microbial":  # around kp = 0.3, which has a physical steady state (spec §3.5)
        th = 0.3 + rng.uniform(-0.05, 0.05, (n, P[name]))
    else:
        th = rng.uniform(lo, hi, (n, P[name]))
    return torch.tensor(th, dtype=torch.float64, requires_grad=True)


@pytest.mark.parametrize("name", ["clm5", "microbial"])
@pytest.mark.parametrize("regime", ["bio", "cryo"])
def test_gradcheck_theta(name, regime):
    m = xproda.get_model(name)
    f = _forcing_t(2, 11, regime)
    th = _theta(name, 2, 1)
    out0 = m.steady_state(th, f)
    assert bool(out0["valid"].all()), out0.flag_names()

    scale = out0["soc_stock"].detach().mean()  # O(1) outputs: finite differences resolve them

    def fn(t):
        out = m.steady_state(t, f)
        return out["soc"] / scale, torch.log(out["soc_stock"])

    assert torch.autograd.gradcheck(fn, (th,), eps=1e-6, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["clm5", "microbial"])
def test_gradcheck_forcing(name):
    m = xproda.get_model(name)
    f = _forcing_t(2, 12, "bio")
    th = _theta(name, 2, 2).detach()
    keys = ["TSOI", "W_SCALAR", "LITR1_INPUT", "CWD_INPUT", "ALTMAX"]
    leaves = [f[k].clone().requires_grad_(True) for k in keys]

    out0 = m.steady_state(th, f)
    assert bool(out0["valid"].all()), out0.flag_names()

    def fn(*xs):
        ff = dict(f)
        ff.update(zip(keys, xs))
        return torch.log(m.steady_state(th, ff)["soc_stock"])

    assert torch.autograd.gradcheck(fn, tuple(leaves), eps=1e-6, atol=1e-5, rtol=1e-4)


def test_gradcheck_reference_mode_with_open_bedrock():
    m = xproda.get_model("clm5", reference=True)
    f = _forcing_t(2, 13, "bio")
    f["nbedrock"] = torch.full_like(f["nbedrock"], 12.0)
    th = _theta("clm5", 2, 3)
    assert torch.autograd.gradcheck(
        lambda t: torch.log(m.steady_state(t, f)["soc_stock"]), (th,), eps=1e-6, atol=1e-6, rtol=1e-5
    )


def test_singular_column_is_nan_and_isolated():
    """A batch mixing valid and singular columns: NaN only for the bad ones, finite gradients
    for the good ones."""
    m = xproda.get_model("clm5")
    n = 5
    f = _forcing_t(n, 21, "bio")
    th = _theta("clm5", n, 4).detach().clone()
    th[2, 3] = 1e-7  # efolding 1e-7 m: every decomposition rate underflows to 0 -> singular
    th.requires_grad_(True)
    out = m.steady_state(th, f)
    names = out.flag_names()
    assert names[2] == ["singular"]
    assert [i for i in range(n) if names[i]] == [2]
    assert torch.isnan(out["soc_stock"][2]) and torch.isfinite(out["soc_stock"][[0, 1, 3, 4]]).all()
    out["soc_stock"][[0, 1, 3, 4]].sum().backward()
    assert torch.isfinite(th.grad[[0, 1, 3, 4]]).all()
    assert (th.grad[[0, 1, 3, 4]].abs().sum(-1) > 0).all()


def test_gradient_matches_finite_difference_of_stock():
    m = xproda.get_model("clm5")
    f = random_forcing(3, 31)
    th = np.random.default_rng(5).uniform(0.2, 0.8, (3, 21))
    tt = torch.tensor(th, requires_grad=True)
    m.steady_state(tt, {k: torch.tensor(v) for k, v in f.items()})["soc_stock"].sum().backward()
    h = 1e-6
    for i in (0, 4, 9, 13, 20):
        tp, tm = th.copy(), th.copy()
        tp[:, i] += h
        tm[:, i] -= h
        fd = (m.steady_state(tp, f)["soc_stock"] - m.steady_state(tm, f)["soc_stock"]) / (2 * h)
        np.testing.assert_allclose(tt.grad[:, i].numpy(), fd, rtol=1e-5)
