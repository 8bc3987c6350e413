"""The structured solver equals a dense solve of the same system; solver building blocks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import xproda
from conftest import random_forcing
from xproda.models.solve import block3_thomas, thomas


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), regime=st.sampled_from(["bio", "cryo", "mixed"]))
def test_structured_equals_dense_solve(seed, regime):
    n = 12
    f = random_forcing(n, seed, regime=regime)
    th = np.random.default_rng(seed).uniform(0.2, 0.95, (n, 21))  # efolding >= 0.2 m
    m = xproda.get_model("clm5")
    L, rhs = m.dense_system(th, f)
    dense = torch.linalg.solve(L, rhs).reshape(n, 7, 20).transpose(1, 2).numpy()
    out = m.steady_state(th, f)
    assert out["valid"].all()
    scale = np.abs(dense).max(axis=(1, 2), keepdims=True)
    assert (np.abs(out["pools"] - dense) / scale).max() < 1e-10


def test_thomas_against_dense():
    rng = np.random.default_rng(0)
    L = 20
    lo, up = -rng.uniform(0, 1, (2, L, 5))
    di = np.abs(lo) + np.abs(up) + rng.uniform(0.1, 1, (L, 5))
    r = rng.normal(size=(L, 5))
    x = thomas(*(torch.tensor(a) for a in (lo, di, up, r))).numpy()
    for b in range(5):
        A = np.diag(di[:, b]) + np.diag(lo[1:, b], -1) + np.diag(up[:-1, b], 1)
        np.testing.assert_allclose(x[:, b], np.linalg.solve(A, r[:, b]), rtol=1e-12)


def test_block3_thomas_against_dense():
    rng = np.random.default_rng(1)
    L, B = 20, 4
    lo, up = -rng.uniform(0, 1, (2, L, B))
    blocks = -rng.uniform(0, 0.3, (3, 3, L, B))
    for i in range(3):
        blocks[i, i] = np.abs(lo) + np.abs(up) + rng.uniform(1, 2, (L, B))
    r = rng.normal(size=(3, L, B))
    t = lambda a: torch.tensor(a)  # noqa: E731
    x = block3_thomas(t(lo), [[t(blocks[i, j]) for j in range(3)] for i in range(3)], t(up), [t(r[p]) for p in range(3)])
    x = torch.stack(x, 0).numpy()  # [3, L, B]
    for b in range(B):
        A = np.zeros((3 * L, 3 * L))  # layer-major
        for j in range(L):
            A[3 * j:3 * j + 3, 3 * j:3 * j + 3] = blocks[:, :, j, b]
            if j > 0:
                A[3 * j:3 * j + 3, 3 * (j - 1):3 * j] = lo[j, b] * np.eye(3)
            if j < L - 1:
                A[3 * j:3 * j + 3, 3 * (j + 1):3 * j + 6] = up[j, b] * np.eye(3)
        sol = np.linalg.solve(A, r[:, :, b].T.reshape(-1)).reshape(L, 3).T
        np.testing.assert_allclose(x[:, :, b], sol, rtol=1e-11)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("name", ["clm5", "microbial"])
def test_cuda_matches_cpu(name):
    m = xproda.get_model(name)
    n = 64
    f = random_forcing(n, 4)
    th = 0.3 + np.random.default_rng(2).uniform(-0.05, 0.05, (n, len(m.parameters)))
    cpu = m.steady_state(th, f)
    fc = {k: torch.tensor(v, device="cuda") for k, v in f.items()}
    gpu = m.steady_state(torch.tensor(th, device="cuda"), fc)
    assert gpu["soc"].device.type == "cuda"
    np.testing.assert_allclose(gpu["soc"].cpu().numpy(), cpu["soc"], rtol=1e-10, equal_nan=True)
    np.testing.assert_array_equal(gpu["flags"].cpu().numpy(), cpu["flags"])


def _systems(seed: int, L: int = 6, B: int = 3):
    """Diagonally dominant tridiagonal and block systems (float64, batch last)."""
    rng = np.random.default_rng(seed)
    lo, up = -rng.uniform(0, 1, (2, L, B))
    di = np.abs(lo) + np.abs(up) + rng.uniform(0.5, 1, (L, B))
    blocks = -rng.uniform(0, 0.3, (3, 3, L, B))
    for i in range(3):
        blocks[i, i] = np.abs(lo) + np.abs(up) + rng.uniform(1, 2, (L, B))
    return lo, di, up, rng.normal(size=(L, B)), blocks, rng.normal(size=(3, L, B))


def _block_call(lo, blocks, up, r):
    out = block3_thomas(lo, [[blocks[i, j] for j in range(3)] for i in range(3)], up,
                        [r[p] for p in range(3)])
    return torch.stack(out, 0)


@pytest.mark.parametrize("fused", [True, False])
def test_solver_adjoint_gradients(fused):
    """The adjoint backward of both solves equals finite differences (gradcheck), on the
    compiled CPU solve and on the torch sweep; lower[0] and upper[-1] get no gradient."""
    lo, di, up, r, blocks, rb = (torch.tensor(a, requires_grad=True) for a in _systems(3))
    with xproda.set_options(fused_kernels=fused):
        assert torch.autograd.gradcheck(thomas, (lo, di, up, r))
        assert torch.autograd.gradcheck(_block_call, (lo, blocks, up, rb))
        # broadcast operands (a per-layer coupling shared by the batch)
        lo1 = lo[:, :1].detach().clone().requires_grad_(True)
        assert torch.autograd.gradcheck(thomas, (lo1, di, up, r))
        thomas(lo, di, up, r).sum().backward()
    assert float(lo.grad[0].abs().max()) == 0.0 and float(up.grad[-1].abs().max()) == 0.0


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), keep=st.lists(st.booleans(), min_size=7, max_size=7))
def test_solver_compiled_equals_torch_and_batch_independent(seed, keep):
    """The compiled CPU solve gives the torch sweep's values (to rounding) and a column's
    value and gradient do not depend on the other columns of its batch (bit for bit)."""
    keep = np.array(keep)
    keep[0] = True  # the subject: a non-empty subset
    lo, di, up, r, blocks, rb = _systems(seed, L=20, B=7)
    idx = np.flatnonzero(keep)

    def grads(sub, fused):
        ts = [torch.tensor(a[..., sub], requires_grad=True) for a in (lo, blocks, up, rb)]
        with xproda.set_options(fused_kernels=fused):
            x = _block_call(*ts)
            (x * torch.linspace(1, 2, x.shape[1], dtype=x.dtype)[:, None]).sum().backward()
        return [x.detach().numpy()] + [t.grad.numpy() for t in ts]

    full_c, sub_c = grads(slice(None), True), grads(idx, True)
    full_t = grads(slice(None), False)
    for a, b in zip(full_c, sub_c):
        np.testing.assert_array_equal(a[..., idx], b)
    for a, b in zip(full_c, full_t):
        np.testing.assert_allclose(a, b, rtol=1e-11, atol=1e-13)
