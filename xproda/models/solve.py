"""Structured batched linear solvers for the steady state (torch, differentiable).

The steady state of the matrix models solves ``(V - A K) X = I`` with 7 (clm5) or 4 (microbial
litter) pools x 20 layers.  The structure makes a dense LU unnecessary:

* transfers are layer-local (``A`` is block diagonal per layer);
* transport is pool-local and the same tridiagonal matrix for every transported pool;
* CWD is not transported, receives only external input and feeds only L2/L3;
* litter pools receive only external input and CWD, never SOM.

So the system is solved in stages: CWD in closed form, each litter pool by a scalar
tridiagonal (Thomas) solve, and the three coupled SOM pools by a block-tridiagonal solve with
3x3 blocks whose off-diagonal blocks are multiples of the identity.  ``V - A K`` is a Z-matrix
whose dz-scaled form is column diagonally dominant when transport conserves mass, so Gaussian
elimination without pivoting is stable (no pivoting is needed); cost is O(20 * 3^3) per column
instead of O(140^3).

All functions take the layer dimension **first** (``[20, ...batch]``) for contiguous slicing in
the sweeps, use only out-of-place operations (autograd works through them), and run on any
device.
"""

from __future__ import annotations

import torch

__all__ = ["thomas", "block3_thomas", "solve3"]


def thomas(lower: torch.Tensor, diag: torch.Tensor, upper: torch.Tensor, rhs: torch.Tensor):
    """Solve tridiagonal systems without pivoting.

    Parameters
    ----------
    lower, diag, upper, rhs : Tensor
        ``[L, ...]`` broadcastable against each other; ``lower[0]`` and ``upper[-1]`` are
        ignored.

    Returns
    -------
    Tensor
        ``[L, ...]`` solution.
    """
    n = diag.shape[0]
    cp = []
    dp = []
    c_prev = None
    d_prev = None
    for j in range(n):
        if j == 0:
            piv = diag[0]
            r = rhs[0]
        else:
            piv = diag[j] - lower[j] * c_prev
            r = rhs[j] - lower[j] * d_prev
        inv = 1.0 / piv
        c_prev = upper[j] * inv if j < n - 1 else None
        d_prev = r * inv
        cp.append(c_prev)
        dp.append(d_prev)
    x = [None] * n
    x[n - 1] = dp[n - 1]
    for j in range(n - 2, -1, -1):
        x[j] = dp[j] - cp[j] * x[j + 1]
    return torch.stack(torch.broadcast_tensors(*x), dim=0)


def _inv3(m):
    """Inverse of 3x3 matrices given as a nested list of tensors ``m[r][c]`` (adjugate)."""
    (a, b, c), (d, e, f), (g, h, i) = m
    c00 = e * i - f * h
    c01 = -(d * i - f * g)
    c02 = d * h - e * g
    det = a * c00 + b * c01 + c * c02
    r = 1.0 / det
    return [
        [c00 * r, -(b * i - c * h) * r, (b * f - c * e) * r],
        [c01 * r, (a * i - c * g) * r, -(a * f - c * d) * r],
        [c02 * r, -(a * h - b * g) * r, (a * e - b * d) * r],
    ]


def _mv3(m, v):
    return [m[r][0] * v[0] + m[r][1] * v[1] + m[r][2] * v[2] for r in range(3)]


def solve3(m, v):
    """Solve one 3x3 system per batch element (nested lists of tensors)."""
    return _mv3(_inv3(m), v)


def block3_thomas(lower, blocks, upper, rhs):
    """Block-tridiagonal solve with 3x3 diagonal blocks and scalar off-diagonal blocks.

    Solves, for layers ``j = 0..L-1``::

        lower[j] * x[j-1] + B[j] @ x[j] + upper[j] * x[j+1] = r[j]

    where ``lower``/``upper`` multiply the identity (the same transport for every pool).

    Parameters
    ----------
    lower, upper : Tensor
        ``[L, ...]`` scalars per layer.
    blocks : nested list ``blocks[r][c]`` of Tensor
        Each ``[L, ...]``: entry (r, c) of the 3x3 diagonal block of every layer.
    rhs : list of 3 Tensor
        Each ``[L, ...]``.

    Returns
    -------
    list of 3 Tensor
        Solution per pool, each ``[L, ...]``.
    """
    n = lower.shape[0]
    ginv = []  # inverse of the modified pivot block per layer
    y = []  # modified right-hand side (already multiplied by the pivot inverse)
    prev_inv = None
    prev_y = None
    for j in range(n):
        b = [[blocks[r][c][j] for c in range(3)] for r in range(3)]
        r_j = [rhs[p][j] for p in range(3)]
        if j > 0:
            s = lower[j] * upper[j - 1]
            b = [[b[r][c] - s * prev_inv[r][c] for c in range(3)] for r in range(3)]
            r_j = [r_j[p] - lower[j] * prev_y[p] for p in range(3)]
        inv = _inv3(b)
        yj = _mv3(inv, r_j)
        ginv.append(inv)
        y.append(yj)
        prev_inv, prev_y = inv, yj
    x = [None] * n
    x[n - 1] = y[n - 1]
    for j in range(n - 2, -1, -1):
        corr = _mv3(ginv[j], x[j + 1])
        x[j] = [y[j][p] - upper[j] * corr[p] for p in range(3)]
    return [torch.stack(torch.broadcast_tensors(*[x[j][p] for j in range(n)]), dim=0) for p in range(3)]
