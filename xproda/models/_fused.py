"""Fused CPU kernel of the structured CLM5 steady-state solve (numba), the no-grad fast path.

The torch solver of :mod:`xproda.models.solve` is the reference implementation: batched,
differentiable, device-agnostic.  On CPU without autograd most of its time goes into launching
many small element-wise operations over the batch (every elimination step of every layer is a
handful of tensor operations).  This module solves the *same* staged system column by column
in one compiled loop — CWD in closed form, the three litter pools by Thomas sweeps, the SOM
pools by the 3x3 block-tridiagonal sweep — with the same elimination order and formulas, so
the two paths agree to rounding (tests check 1e-12 relative to the column maximum).

It is used by :class:`~xproda.models.clm5.CLM5Model` only when

* the computation runs on the CPU,
* no input requires a gradient (or grad mode is off),
* numba is importable and the option ``fused_kernels`` is true (default).

Otherwise the torch path runs; results do not depend on which path ran.

Thread safety: numba's default ``workqueue`` threading layer aborts the process when two
threads launch parallel kernels at once (as dask's threaded scheduler would).  Calls are
therefore serialised by a lock; each call already uses every core given to it
(``numba.set_num_threads`` follows ``torch.get_num_threads()``), so nothing is lost.
"""

from __future__ import annotations

import threading

import numpy as np

try:  # numba is a core dependency, but the torch path works without it
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None
    HAVE_NUMBA = False

__all__ = ["HAVE_NUMBA", "clm5_pools", "FRACTION_ORDER", "fused_applicable"]

#: order of the transfer fractions in the ``fractions`` argument of :func:`clm5_pools`
FRACTION_ORDER = ("fcwdl2", "fl1s1", "fl2s1", "fl3s2", "fs1s2", "fs1s3", "fs2s1", "fs2s3", "fs3s1")

_LOCK = threading.Lock()


def fused_applicable(*tensors) -> bool:
    """Whether a fused numba CPU kernel may replace torch operations on ``tensors``.

    True when numba is importable, the option ``fused_kernels`` is on, every tensor is on
    the CPU, floating tensors are float64 (float32 keeps the torch path: the kernels'
    scalars are float64) and no gradient is needed.  Non-tensor arguments are ignored.
    Shared by the structured solve and the PCHIP mapping (:mod:`xproda.interp`).
    """
    import torch

    from ..options import OPTIONS

    if not (HAVE_NUMBA and OPTIONS["fused_kernels"]):
        return False
    ts = [t for t in tensors if isinstance(t, torch.Tensor)]
    if any(t.device.type != "cpu" or (t.is_floating_point() and t.dtype != torch.float64)
           for t in ts):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in ts))


def _kernel(K, lo, di, up, dens, fr, out):  # pragma: no cover - compiled by numba
    """Steady-state pools of every column; see :func:`clm5_pools` for shapes."""
    n = K.shape[0]
    L = K.shape[1]
    for c in numba.prange(n):
        cp = np.empty((L, 3))  # Thomas: modified upper diagonal of the three litter pools
        dp = np.empty((L, 3))  # Thomas: modified right-hand sides
        ginv = np.empty((L, 3, 3))  # block sweep: inverses of the eliminated diagonal blocks
        y = np.empty((L, 3))
        # ---- CWD: closed form, zero input gives 0 (not NaN) even with a zero rate
        for j in range(L):
            i_cwd = dens[c, j, 0]
            out[c, j, 0] = 0.0 if i_cwd == 0.0 else i_cwd / K[c, j, 0]
        # ---- litter 1..3: Thomas sweeps (same pivots and order as solve.thomas)
        for j in range(L):
            i_cwd = dens[c, j, 0]
            f2 = fr[c, j, 0]
            for q in range(3):
                if q == 0:
                    r = dens[c, j, 1]
                elif q == 1:
                    r = dens[c, j, 2] + f2 * i_cwd
                else:
                    r = dens[c, j, 3] + (1.0 - f2) * i_cwd
                piv = di[c, j] + K[c, j, q + 1]
                if j > 0:
                    piv = piv - lo[c, j] * cp[j - 1, q]
                    r = r - lo[c, j] * dp[j - 1, q]
                inv = 1.0 / piv
                cp[j, q] = up[c, j] * inv
                dp[j, q] = r * inv
        for q in range(3):
            out[c, L - 1, q + 1] = dp[L - 1, q]
            for j in range(L - 2, -1, -1):
                out[c, j, q + 1] = dp[j, q] - cp[j, q] * out[c, j + 1, q + 1]
        # ---- SOM: 3x3 block-tridiagonal sweep (same formulas as solve.block3_thomas)
        for j in range(L):
            k1 = K[c, j, 4]
            k2 = K[c, j, 5]
            k3 = K[c, j, 6]
            d = di[c, j]
            b00 = d + k1
            b01 = -fr[c, j, 6] * k2
            b02 = -fr[c, j, 8] * k3
            b10 = -fr[c, j, 4] * k1
            b11 = d + k2
            b12 = 0.0
            b20 = -fr[c, j, 5] * k1
            b21 = -fr[c, j, 7] * k2
            b22 = d + k3
            r0 = fr[c, j, 1] * K[c, j, 1] * out[c, j, 1] + fr[c, j, 2] * K[c, j, 2] * out[c, j, 2]
            r1 = fr[c, j, 3] * K[c, j, 3] * out[c, j, 3]
            r2 = 0.0
            if j > 0:
                s = lo[c, j] * up[c, j - 1]
                g = ginv[j - 1]
                b00 -= s * g[0, 0]
                b01 -= s * g[0, 1]
                b02 -= s * g[0, 2]
                b10 -= s * g[1, 0]
                b11 -= s * g[1, 1]
                b12 -= s * g[1, 2]
                b20 -= s * g[2, 0]
                b21 -= s * g[2, 1]
                b22 -= s * g[2, 2]
                lj = lo[c, j]
                r0 -= lj * y[j - 1, 0]
                r1 -= lj * y[j - 1, 1]
                r2 -= lj * y[j - 1, 2]
            # cofactors C_ij (cyclic formula, as solve._inv3_stacked)
            c00 = b11 * b22 - b12 * b21
            c01 = b12 * b20 - b10 * b22
            c02 = b10 * b21 - b11 * b20
            c10 = b21 * b02 - b22 * b01
            c11 = b22 * b00 - b20 * b02
            c12 = b20 * b01 - b21 * b00
            c20 = b01 * b12 - b02 * b11
            c21 = b02 * b10 - b00 * b12
            c22 = b00 * b11 - b01 * b10
            det = b00 * c00 + b01 * c01 + b02 * c02
            gj = ginv[j]
            gj[0, 0] = c00 / det
            gj[0, 1] = c10 / det
            gj[0, 2] = c20 / det
            gj[1, 0] = c01 / det
            gj[1, 1] = c11 / det
            gj[1, 2] = c21 / det
            gj[2, 0] = c02 / det
            gj[2, 1] = c12 / det
            gj[2, 2] = c22 / det
            for a in range(3):
                y[j, a] = gj[a, 0] * r0 + gj[a, 1] * r1 + gj[a, 2] * r2
        for a in range(3):
            out[c, L - 1, 4 + a] = y[L - 1, a]
        for j in range(L - 2, -1, -1):
            u = up[c, j]
            x0 = out[c, j + 1, 4]
            x1 = out[c, j + 1, 5]
            x2 = out[c, j + 1, 6]
            for a in range(3):
                out[c, j, 4 + a] = y[j, a] - u * (
                    ginv[j, a, 0] * x0 + ginv[j, a, 1] * x1 + ginv[j, a, 2] * x2
                )


if HAVE_NUMBA:
    _compiled = numba.njit(parallel=True, cache=True, nogil=True)(_kernel)


def clm5_pools(K, lower, diag, upper, dens, fractions, *, threads=None):
    """Steady-state pools ``[n, L, 7]`` of the staged CLM5 system (numpy, float32/64).

    Parameters
    ----------
    K : ndarray
        ``[n, L, 7]`` decomposition rates (day-1), pools in model order.
    lower, diag, upper : ndarray
        ``[n, L]`` bands of the transport operator (day-1).
    dens : ndarray
        ``[n, L, 4]`` litter inputs (CWD, L1, L2, L3; g C m-3 day-1).
    fractions : ndarray
        ``[n, L, 9]`` transfer fractions in :data:`FRACTION_ORDER`.
    threads : int, optional
        Threads of the parallel loop (default: ``torch.get_num_threads()``).

    Returns
    -------
    ndarray
        ``[n, L, 7]`` pools (g C m-3), before clipping, flags and NaN masking.
    """
    if not HAVE_NUMBA:  # pragma: no cover
        raise RuntimeError("the fused kernel needs numba; install it or set fused_kernels=False")
    dtype = np.result_type(K, lower, diag, upper, dens, fractions)
    arrs = [np.ascontiguousarray(a, dtype=dtype) for a in (K, lower, diag, upper, dens, fractions)]
    out = np.empty(arrs[0].shape, dtype=dtype)
    if threads is None:
        import torch

        threads = torch.get_num_threads()
    threads = max(1, min(int(threads), numba.config.NUMBA_NUM_THREADS))
    with _LOCK:
        numba.set_num_threads(threads)
        _compiled(*arrs, out)
    return out
