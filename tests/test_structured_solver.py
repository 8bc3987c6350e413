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
