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

__all__ = ["thomas", "block3_thomas", "broadcast_to"]


class _Broadcast(torch.autograd.Function):
    """``x`` expanded to ``shape``; the backward sums over the broadcast dims *innermost*.

    Autograd's own reduction of a broadcast operand's gradient runs over outer dims, and
    torch's outer reductions round differently depending on the sizes of the other dims (the
    batch): a column's gradient would depend on how many columns share its batch. Moving the
    broadcast dims last and summing a contiguous copy gives each column the same bits
    whatever the batch (sharded site-level fits rely on it).
    """

    @staticmethod
    def forward(ctx, x, shape):  # type: ignore[override]
        ctx.in_shape = x.shape
        return x.expand(shape)

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        in_shape = ctx.in_shape
        lead = g.dim() - len(in_shape)
        full = (1,) * lead + tuple(in_shape)
        red = [d for d in range(g.dim()) if full[d] == 1 and g.shape[d] != 1]
        if not red:
            return g.reshape(in_shape), None
        keep = [d for d in range(g.dim()) if d not in red]
        gp = g.permute(*keep, *red).contiguous()
        gp = gp.reshape(*[g.shape[d] for d in keep], -1).sum(-1)
        return gp.reshape(in_shape), None


def broadcast_to(x: torch.Tensor, shape) -> torch.Tensor:
    """``x.expand(shape)`` with a batch-size-independent gradient (see :class:`_Broadcast`).

    Without autograd it is ``x.expand(shape)``.
    """
    shape = torch.Size(shape)
    if x.shape == shape:
        return x
    if x.requires_grad and torch.is_grad_enabled():
        return _Broadcast.apply(x, shape)
    return x.expand(shape)


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
    shape = torch.broadcast_shapes(lower.shape, diag.shape, upper.shape, rhs.shape)
    lower, diag, upper, rhs = (broadcast_to(t, shape) for t in (lower, diag, upper, rhs))
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


_R1 = [1, 2, 0]
_R2 = [2, 0, 1]


def _inv3_stacked(m: torch.Tensor) -> torch.Tensor:
    """Inverse of 3x3 matrices stored as ``[3, 3, ...]`` (cyclic cofactor formula)."""
    a = m[_R1][:, _R1]
    b = m[_R2][:, _R2]
    c = m[_R1][:, _R2]
    d = m[_R2][:, _R1]
    cof = a * b - c * d  # cof[i, j] = cofactor C_ij
    det = (m[0] * cof[0]).sum(0)
    return cof.transpose(0, 1) / broadcast_to(det, cof.shape)


def block3_thomas(lower, blocks, upper, rhs):
    """Block-tridiagonal solve with 3x3 diagonal blocks and scalar off-diagonal blocks.

    Solves, for layers ``j = 0..L-1``::

        lower[j] * x[j-1] + B[j] @ x[j] + upper[j] * x[j+1] = r[j]

    where ``lower``/``upper`` multiply the identity (the same transport for every pool).
    The 3x3 blocks are processed as stacked ``[3, 3, ...]`` tensors so each elimination step
    is a handful of vectorised operations.

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
    B = torch.stack([torch.stack(torch.broadcast_tensors(*row), 0) for row in blocks], 0)
    R = torch.stack(torch.broadcast_tensors(*rhs), 0)  # [3, L, ...]
    lower = lower.expand(B.shape[2:])
    upper = upper.expand(B.shape[2:])
    n = B.shape[2]
    ginv, y = [], []
    s33 = B.shape[:2] + B.shape[3:]  # [3, 3, ...]
    s3 = R.shape[:1] + R.shape[2:]  # [3, ...]
    for j in range(n):
        b = B[:, :, j]
        r = R[:, j]
        if j > 0:
            b = b - broadcast_to(lower[j] * upper[j - 1], s33) * ginv[-1]
            r = r - broadcast_to(lower[j], s3) * y[-1]
        inv = _inv3_stacked(b)
        ginv.append(inv)
        y.append((inv * broadcast_to(r.unsqueeze(0), s33)).sum(1))
    x = [None] * n
    x[n - 1] = y[n - 1]
    for j in range(n - 2, -1, -1):
        x[j] = y[j] - broadcast_to(upper[j], s3) * (
            ginv[j] * broadcast_to(x[j + 1].unsqueeze(0), s33)).sum(1)
    X = torch.stack(x, 1)  # [3, L, ...]
    return [X[0], X[1], X[2]]
