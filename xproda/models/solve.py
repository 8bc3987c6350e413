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


def _thomas_sweep(lower, diag, upper, rhs):
    """The Thomas elimination (all inputs the same shape ``[L, ...]``)."""
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
    return torch.stack(x, dim=0)


def _shift_down(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``y[j] = x[j - 1]``, ``y[0] = 0`` along the layer dim ``dim`` (default first)."""
    return torch.cat([torch.zeros_like(x.narrow(dim, 0, 1)), x.narrow(dim, 0, x.shape[dim] - 1)],
                     dim)


def _shift_up(x: torch.Tensor, dim: int = 0) -> torch.Tensor:
    """``y[j] = x[j + 1]``, ``y[-1] = 0`` along the layer dim ``dim`` (default first)."""
    return torch.cat([x.narrow(dim, 1, x.shape[dim] - 1), torch.zeros_like(x.narrow(dim, 0, 1))],
                     dim)


def _compiled(*tensors: torch.Tensor) -> bool:
    """Whether the compiled CPU solves (:mod:`xproda.models.fused`) run these tensors: on
    the CPU, float64, numba present and the option ``fused_kernels`` on."""
    from xproda.models.fused import HAVE_NUMBA
    from xproda.options import current

    return HAVE_NUMBA and current("fused_kernels") and all(
        t.device.type == "cpu" and t.dtype == torch.float64 for t in tensors)


def _solve_tridiagonal(lower, diag, upper, rhs):
    """The forward sweep, compiled on the CPU (float64), else torch (same shapes in)."""
    if _compiled(lower, diag, upper, rhs):
        from xproda.models.fused import thomas_solve

        L = diag.shape[0]
        flat = [t.detach().reshape(L, -1).numpy() for t in (lower, diag, upper, rhs)]
        return torch.from_numpy(thomas_solve(*flat)).reshape(diag.shape)
    return _thomas_sweep(lower, diag, upper, rhs)


def _solve_block3(lower, B, upper, R):
    """:func:`_block3_sweep`, compiled on the CPU (float64), else torch."""
    if _compiled(lower, B, upper, R):
        from xproda.models.fused import block3_solve

        L = B.shape[2]
        out = block3_solve(lower.detach().reshape(L, -1).numpy(),
                           B.detach().reshape(3, 3, L, -1).numpy(),
                           upper.detach().reshape(L, -1).numpy(),
                           R.detach().reshape(3, L, -1).numpy())
        return torch.from_numpy(out).reshape(R.shape)
    return _block3_sweep(lower, B, upper, R)


class _Thomas(torch.autograd.Function):
    """Tridiagonal solve with an implicit (adjoint) backward.

    For ``M x = r`` the gradients follow from one transposed solve ``M^T lam = g``:
    ``dr = lam``, ``d diag_j = -lam_j x_j``, ``d lower_j = -lam_j x_{j-1}``,
    ``d upper_j = -lam_j x_{j+1}``. Two sweeps instead of an autograd graph of the
    elimination's ~6 L operations: a small batch's backward is dominated by per-operation
    overhead, which this removes (MAP fits call it hundreds of times per shard). Every
    operation is per column, so a column's gradient does not depend on its batch. First
    derivatives only (``once_differentiable``): second derivatives through the solve (Hessians,
    ``create_graph=True``) raise.
    """

    @staticmethod
    def forward(ctx, lower, diag, upper, rhs):  # type: ignore[override]
        x = _solve_tridiagonal(lower, diag, upper, rhs)
        ctx.save_for_backward(lower, diag, upper, x)
        return x

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):  # type: ignore[override]
        lower, diag, upper, x = ctx.saved_tensors
        # M^T: sub-diagonal upper[j-1], super-diagonal lower[j+1]
        lam = _solve_tridiagonal(_shift_down(upper), diag, _shift_up(lower), g.contiguous())
        need = ctx.needs_input_grad
        d_lower = -lam * _shift_down(x) if need[0] else None
        d_diag = -lam * x if need[1] else None
        d_upper = -lam * _shift_up(x) if need[2] else None
        return d_lower, d_diag, d_upper, lam if need[3] else None


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
        ``[L, ...]`` solution. Differentiable through an adjoint solve (:class:`_Thomas`).
    """
    shape = torch.broadcast_shapes(lower.shape, diag.shape, upper.shape, rhs.shape)
    lower, diag, upper, rhs = (broadcast_to(t, shape) for t in (lower, diag, upper, rhs))
    if torch.is_grad_enabled() and any(t.requires_grad for t in (lower, diag, upper, rhs)):
        return _Thomas.apply(lower, diag, upper, rhs)
    return _solve_tridiagonal(lower, diag, upper, rhs)


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


def _block3_sweep(lower, B, upper, R):
    """Block elimination: ``B [3, 3, L, ...]``, ``R [3, L, ...]``, ``lower/upper [L, ...]``
    (the same batch shape); returns ``X [3, L, ...]``."""
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
    return torch.stack(x, 1)  # [3, L, ...]


def _pool_dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``sum_p a[p] b[p]`` over the 3 pools (first dim), added in pool order per column."""
    return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]


class _Block3(torch.autograd.Function):
    """Block-tridiagonal solve with an implicit (adjoint) backward (see :class:`_Thomas`):
    ``M^T lam = g`` has blocks ``B_j^T``, sub-diagonal ``upper[j-1]`` and super-diagonal
    ``lower[j+1]``; then ``dR = lam``, ``dB_j[a, b] = -lam_j[a] x_j[b]``,
    ``d lower_j = -lam_j . x_{j-1}``, ``d upper_j = -lam_j . x_{j+1}``."""

    @staticmethod
    def forward(ctx, lower, B, upper, R):  # type: ignore[override]
        X = _solve_block3(lower, B, upper, R)
        ctx.save_for_backward(lower, B, upper, X)
        return X

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, g):  # type: ignore[override]
        lower, B, upper, X = ctx.saved_tensors
        lam = _solve_block3(_shift_down(upper), B.transpose(0, 1), _shift_up(lower),
                            g.contiguous())
        need = ctx.needs_input_grad
        d_lower = d_B = d_upper = None
        if need[0]:  # the layer index is dim 1 of X
            d_lower = -_pool_dot(lam, _shift_down(X, 1))
        if need[1]:
            d_B = -(lam.unsqueeze(1) * X.unsqueeze(0))
        if need[2]:
            d_upper = -_pool_dot(lam, _shift_up(X, 1))
        return d_lower, d_B, d_upper, lam if need[3] else None


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
        Solution per pool, each ``[L, ...]``. Differentiable through an adjoint solve
        (:class:`_Block3`).
    """
    shape = torch.broadcast_shapes(lower.shape, upper.shape,
                                   *(t.shape for row in blocks for t in row),
                                   *(t.shape for t in rhs))
    B = torch.stack([torch.stack([broadcast_to(t, shape) for t in row], 0) for row in blocks], 0)
    R = torch.stack([broadcast_to(t, shape) for t in rhs], 0)  # [3, L, ...]
    lower = broadcast_to(lower, shape)
    upper = broadcast_to(upper, shape)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (lower, B, upper, R)):
        X = _Block3.apply(lower, B, upper, R)
    else:
        X = _solve_block3(lower, B, upper, R)
    return [X[0], X[1], X[2]]
