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

Besides the solves: the transient step kernel (:func:`clm5_steps`; its column-block kernels
:data:`step_kernel` and :data:`shifted_kernel` are also called from the compiled spin-up cycle
of :mod:`xproda.models.fused_spinup`), and two compiled passes that spare the CPU paths torch's
parallel regions (:func:`value_range`, the forcing value checks of large arrays;
:func:`repeats`, which steps of a transient forcing repeat).

Parallelism: the kernels are serial over a range of columns and release the GIL;
:func:`xproda.models.parallel.run_blocks` runs them over column blocks on a shared thread
pool that never spin-waits (robust when the machine is shared), with the calling thread as
one of the workers. Calls from several threads at once are safe; results do not depend on
the number of threads.

Compiled-kernel cache: the kernels (here and in :mod:`xproda.models.interp`) are compiled
once and cached on disk by numba, so later processes start fast. :func:`jit_kernel` picks
the cache location per function, so ``import xproda`` and the kernels work even where the
install directory and ``HOME`` are read-only (a container or batch job running as another
user), where numba alone raises ``cannot cache function ...: no locator available``:

1. numba's own locations, in numba's order: ``NUMBA_CACHE_DIR`` if set, the package's
   ``__pycache__``, the user-wide cache (``~/.cache/numba``), each used only if writable;
2. else a private per-user directory, :func:`fallback_cache_dir`
   (``<tempdir>/xproda-numba-cache-<uid>``, mode 0700; refused if another user owns it or
   others may write to it, since numba's cache files are pickles);
3. else no disk cache (the kernels are compiled in every process, a few seconds).

For step 2 numba's ``numba.config.CACHE_DIR`` is set while that one function is decorated
and restored at once (under a lock); nothing else in the process sees it. Set
``NUMBA_CACHE_DIR`` to choose the location yourself.
"""

from __future__ import annotations

import math
import os
import stat
import tempfile
import threading
from collections.abc import Callable
from typing import Any

import numpy as np

from xproda.grid import N_LAYERS
from xproda.models.parallel import run_blocks

try:  # numba is a core dependency, but the torch path works without it
    import numba

    HAVE_NUMBA = True
except ImportError:  # pragma: no cover - exercised only where numba is absent
    numba = None
    HAVE_NUMBA = False

__all__ = ["HAVE_NUMBA", "vexp", "column_view", "value_range", "repeats", "thomas_solve",
           "block3_solve", "clm5_pools",
           "clm5_shifted_solve", "clm5_steps", "step_arguments", "step_kernel",
           "shifted_kernel", "FRACTION_ORDER",
           "fused_applicable",
           "group_scratch", "group_solve", "group_solve_uniform", "group_solve_numpy",
           "group_solve_program", "GROUP_SIZE", "jit_kernel", "fallback_cache_dir",
           "KERNEL_CACHE", "STEP_OUTPUTS"]

#: order of the transfer fractions in the ``fractions`` argument of :func:`clm5_pools`
FRACTION_ORDER = ("fcwdl2", "fl1s1", "fl2s1", "fl3s2", "fs1s2", "fs1s3", "fs2s1", "fs2s3", "fs3s1")

_CACHE_DIR_LOCK = threading.Lock()

#: Where each compiled kernel is cached, by qualified function name (filled by
#: :func:`jit_kernel`; informative): ``"numba"`` (numba's own location), the directory of
#: :func:`fallback_cache_dir`, or None (not cached on disk).
KERNEL_CACHE: dict[str, str | None] = {}


def fallback_cache_dir() -> str | None:
    """A private per-user directory for compiled kernels, or None when there is none.

    ``<tempfile.gettempdir()>/xproda-numba-cache-<uid>``, created with mode 0700. It is used
    only if it is a real directory (not a link) owned by the current user that neither the
    group nor others may write to, and a file can be created in it: numba's cache files are
    pickles, so a directory another user can write to would let that user run code here.

    Returns
    -------
    str or None
        The directory, or None when no such directory can be had (then kernels are not
        cached on disk).
    """
    try:
        uid = os.getuid() if hasattr(os, "getuid") else None
        tag = str(uid) if uid is not None else (os.environ.get("USERNAME") or "user")
        path = os.path.join(tempfile.gettempdir(), f"xproda-numba-cache-{tag}")
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
        if not stat.S_ISDIR(st.st_mode):
            return None
        if uid is not None and (st.st_uid != uid or st.st_mode & 0o022):
            return None
        tempfile.TemporaryFile(dir=path).close()
    except OSError:
        return None
    return path


def jit_kernel(func: Callable[..., Any], **options: Any) -> Any:
    """``numba.njit(func, cache=True, **options)`` with a cache location that is writable.

    Tries numba's own cache locations, then :func:`fallback_cache_dir`, then compiles
    without a disk cache (see the module docstring). The choice is recorded in
    :data:`KERNEL_CACHE`.

    Parameters
    ----------
    func : callable
        The Python function to compile.
    **options
        Other :func:`numba.njit` options (``parallel``, ``nogil``, ``error_model``, ...).

    Returns
    -------
    numba dispatcher
        The compiled (lazily, on first call) function.
    """
    name = f"{func.__module__}.{func.__qualname__}"
    try:
        disp = numba.njit(cache=True, **options)(func)
    except RuntimeError as e:  # "cannot cache function ...: no locator available ..."
        if "locator" not in str(e):
            raise
    else:
        KERNEL_CACHE[name] = "numba"
        return disp
    path = fallback_cache_dir()
    if path is not None:
        with _CACHE_DIR_LOCK:
            previous = numba.config.CACHE_DIR
            numba.config.CACHE_DIR = path
            try:
                disp = numba.njit(cache=True, **options)(func)
            except RuntimeError:
                disp = None
            finally:
                numba.config.CACHE_DIR = previous
        if disp is not None:
            KERNEL_CACHE[name] = path
            return disp
    KERNEL_CACHE[name] = None
    return numba.njit(cache=False, **options)(func)


def fused_applicable(*tensors) -> bool:
    """Whether a fused numba CPU kernel may replace torch operations on ``tensors``.

    True when numba is importable, the option ``fused_kernels`` is on, every tensor is on
    the CPU, floating tensors are float64 (float32 keeps the torch path: the kernels'
    scalars are float64) and no gradient is needed.  Non-tensor arguments are ignored.
    Shared by the structured solve and the PCHIP mapping (:mod:`xproda.models.interp`).
    """
    import torch

    from xproda.options import current as _option

    if not (HAVE_NUMBA and _option("fused_kernels")):
        return False
    ts = [t for t in tensors if isinstance(t, torch.Tensor)]
    if any(t.device.type != "cpu" or (t.is_floating_point() and t.dtype != torch.float64)
           for t in ts):
        return False
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in ts))


def numpy_compatible(*tensors) -> bool:
    """Whether every tensor is on the CPU with a dtype numpy shares, so that
    ``t.detach().numpy()`` views it: bool, integers, float16/32/64, complex64/128 -- not
    bfloat16, complex32, float8 or quantized types. Where numpy replaces a torch operation
    on the CPU (no OpenMP region: :meth:`~xproda.models.base.SoilCarbonModel.nan_rows`, the
    spin-up period's forcing copy of :func:`~xproda.models.transient.simulate`).
    """
    import torch

    shared = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64,
              torch.float16, torch.float32, torch.float64, torch.complex64, torch.complex128)
    return all(t.device.type == "cpu" and t.dtype in shared for t in tensors)




def _check_layers(name: str, n_layers: int) -> None:
    """The compiled group solves are built for :data:`xproda.grid.N_LAYERS` layers."""
    if n_layers != N_LAYERS:
        raise ValueError(f"{name}: the compiled CLM5 solves need {N_LAYERS} layers (the "
                         f"model grid), got {n_layers}; use the torch solve "
                         "(xproda.set_options(fused_kernels=False)) for other layer counts")


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
        Threads (default :func:`xproda.models.parallel.kernel_threads`).

    Returns
    -------
    ndarray
        ``[n, L, 7]`` pools (g C m-3), before clipping, flags and NaN masking.
    """
    if not HAVE_NUMBA:  # pragma: no cover
        raise RuntimeError("the fused kernel needs numba; install it or set fused_kernels=False")
    _check_layers("clm5_pools", np.shape(K)[1])
    dtype = np.result_type(K, lower, diag, upper, dens, fractions)
    arrs = [np.ascontiguousarray(a, dtype=dtype) for a in (K, lower, diag, upper, fractions)]
    rhs = np.zeros(arrs[0].shape, dtype=dtype)
    rhs[:, :, :4] = dens
    out = np.empty(arrs[0].shape, dtype=dtype)
    run_blocks(shifted_kernel, out.shape[0], *arrs, rhs, 0.0, out, threads=threads)
    return out


# -------------------------------------------------------------------------------------------
# transient CLM5: implicit (backward Euler) steps of the same staged system
# -------------------------------------------------------------------------------------------
def _shifted_kernel(b0, b1, K, lo, di, up, fr, rhs, r, out):  # pragma: no cover
    """Solve the shifted systems of columns ``b0 <= c < b1`` in groups of :data:`_G`."""
    L = K.shape[1]
    G = _G
    S, Kg, rg, xg, fg, lo_g, di_g, up_g = group_scratch()
    for grp in range((b1 - b0 + G - 1) // G):
        c0 = b0 + grp * G
        ng = min(G, b1 - c0)
        for g in range(ng):
            c = c0 + g
            for j in range(L):
                for q in range(7):
                    Kg[j, q, g] = K[c, j, q]
                    rg[j, q, g] = rhs[c, j, q]
                for q in range(9):
                    fg[j, q, g] = fr[c, j, q]
                lo_g[j, g] = lo[c, j]
                di_g[j, g] = di[c, j]
                up_g[j, g] = up[c, j]
        group_solve(S, r)
        for g in range(ng):
            c = c0 + g
            for j in range(L):
                for q in range(7):
                    out[c, j, q] = xg[j, q, g]


# the group layout: one flat float64 array per group of _G columns, layer-major; layer j's
# block holds these rows of _G lanes (one lane per column) at (j * _GW + row) * _G
_GK = 0     # K, 7 rows: decomposition rates
_GR = 7     # rhs, 7 rows
_GX = 14    # x, 7 rows: the solution
_GF = 21    # fractions, 9 rows (FRACTION_ORDER)
_GLO = 30   # transport bands: lower,
_GDI = 31   # diagonal,
_GUP = 32   # upper
_GCP = 33   # litter sweep: cp (3 rows),
_GDP = 36   # dp (3 rows)
_GINV = 39  # SOM block sweep: inverse pivots (3 x 3 rows),
_GY = 48    # y (3 rows)
_GW = 51    # rows per layer
_GL = N_LAYERS
#: columns solved together by the group solves (4 measured faster than 8 with this layout)
GROUP_SIZE = 4
_G = GROUP_SIZE


def _group_scratch():  # pragma: no cover - compiled by numba
    """The flat work array of one group solve (:func:`_group_solve`) and views into it.

    ``(S, K, rhs, x, fractions, lower, diag, upper)``: ``S`` ``[L * _GW * _G]`` zeros
    (``L`` = :data:`xproda.grid.N_LAYERS`, the only layer count of the compiled solves); the
    views are its rows in the ``[L, rows, _G]`` (``[L, _G]`` for the bands) group layout,
    for the caller to fill (inputs) and read (``x``). All of a group's work lives in one
    array at offsets fixed at compile time (a layer's rows side by side): with 4 lanes this
    ran the steady state 8-15 % faster than eleven separate arrays of 8 lanes (issue 18).
    The solve itself runs as explicit SIMD code (:func:`group_solve_program`).
    """
    L = _GL
    S = np.zeros(L * _GW * _G)
    v = S.reshape(L, _GW, _G)
    return (S, v[:, _GK:_GK + 7, :], v[:, _GR:_GR + 7, :], v[:, _GX:_GX + 7, :],
            v[:, _GF:_GF + 9, :], v[:, _GLO, :], v[:, _GDI, :], v[:, _GUP, :])


def group_solve_program(ops, steady: bool, uniform_fractions: bool = False) -> None:
    """The group solve, written once against an operation backend ``ops``.

    The solve of :func:`_col_shifted_solve` for the ``_G`` columns of a group at once, as
    straight-line code over *lane vectors* (one value per column of the group): ``ops.ld(i)``
    loads the ``_G`` lanes at flat offset ``i`` of the group's work array
    (:func:`_group_scratch`), ``ops.st(i, v)`` stores them, ``ops.add/sub/mul/div/neg`` are
    lane-wise IEEE operations, ``ops.nonzero(v, b)`` is ``v`` where ``b != 0`` (or NaN) and 0
    elsewhere, ``ops.r`` the shift and ``ops.zero``/``ops.one`` constants. ``steady``: the
    shift is 0 (a steady state: the CWD fragmentation flux is its right-hand side exactly,
    and the 3x3 inverse divides by the determinant, as the steady state always did).

    Two backends run it: :func:`group_solve` emits it as LLVM vector instructions
    (``<_G x double>``, explicit SIMD, inside the compiled kernels) and
    :func:`group_solve_numpy` evaluates it with numpy (tests, reading). Every lane goes
    through the same operations in the same order (no reductions across lanes, no fused
    multiply-add), so each column's result is bit-identical to solving it alone and equal
    between the backends. Lanes without a column hold zeros or an earlier column's values;
    their results are ignored (IEEE arithmetic, no exceptions).

    ``uniform_fractions``: every layer has the transfer fractions of the first (the steady
    kernels' per-column parameters), read from layer 0's rows only: the caller fills 9
    values per column instead of 180, and the solve loads them once.
    """
    G, L, W = _G, _GL, _GW * _G
    r, one, zero = ops.r, ops.one, ops.zero
    add, sub, mul, div, neg, ld, st = ops.add, ops.sub, ops.mul, ops.div, ops.neg, ops.ld, ops.st

    def at(o, row):  # flat offset of a row of the layer block starting at o
        return o + row * G

    def fr(o, q):  # a transfer fraction of the layer block starting at o
        return ld(at(0 if uniform_fractions else o, _GF + q))

    for j in range(L):  # CWD: not transported; zero input gives 0 (not NaN) at a zero rate
        o = j * W
        b = ld(at(o, _GR))
        st(at(o, _GX), ops.nonzero(div(b, add(ld(at(o, _GK)), r)), b))
    for j in range(L):  # litter: three Thomas sweeps, CWD fragmentation feeds L2 / L3
        o, p = j * W, (j - 1) * W
        # without a shift the fragmentation flux K x equals the CWD right-hand side: use it
        # exactly (the steady state keeps its historical rounding)
        flux = ld(at(o, _GR)) if steady else mul(ld(at(o, _GK)), ld(at(o, _GX)))
        f2, lj, uj, dj = fr(o, 0), ld(at(o, _GLO)), ld(at(o, _GUP)), ld(at(o, _GDI))
        rs = [ld(at(o, _GR + 1)),
              add(ld(at(o, _GR + 2)), mul(f2, flux)),
              add(ld(at(o, _GR + 3)), mul(sub(one, f2), flux))]
        ps = [add(add(dj, ld(at(o, _GK + q))), r) for q in (1, 2, 3)]
        for q in range(3):
            if j > 0:
                ps[q] = sub(ps[q], mul(lj, ld(at(p, _GCP + q))))
                rs[q] = sub(rs[q], mul(lj, ld(at(p, _GDP + q))))
            inv = div(one, ps[q])
            st(at(o, _GCP + q), mul(uj, inv))
            st(at(o, _GDP + q), mul(rs[q], inv))
    for q in range(3):  # litter back substitution
        o = (L - 1) * W
        st(at(o, _GX + q + 1), ld(at(o, _GDP + q)))
        for j in range(L - 2, -1, -1):
            o = j * W
            st(at(o, _GX + q + 1), sub(ld(at(o, _GDP + q)),
                                       mul(ld(at(o, _GCP + q)), ld(at(o + W, _GX + q + 1)))))
    for j in range(L):  # SOM: 3x3 block-tridiagonal sweep
        o, p = j * W, (j - 1) * W
        k1, k2, k3 = ld(at(o, _GK + 4)), ld(at(o, _GK + 5)), ld(at(o, _GK + 6))
        d = add(ld(at(o, _GDI)), r)
        B = [add(d, k1), mul(neg(fr(o, 6)), k2), mul(neg(fr(o, 8)), k3),
             mul(neg(fr(o, 4)), k1), add(d, k2), zero,
             mul(neg(fr(o, 5)), k1), mul(neg(fr(o, 7)), k2), add(d, k3)]
        flow = [mul(mul(fr(o, q), ld(at(o, _GK + q))), ld(at(o, _GX + q)))
                for q in (1, 2, 3)]  # litter -> SOM fluxes
        R = [add(add(ld(at(o, _GR + 4)), flow[0]), flow[1]),
             add(ld(at(o, _GR + 5)), flow[2]),
             ld(at(o, _GR + 6))]
        if j > 0:
            s = mul(ld(at(o, _GLO)), ld(at(p, _GUP)))
            B = [sub(B[i], mul(s, ld(at(p, _GINV + i)))) for i in range(9)]
            lj = ld(at(o, _GLO))
            R = [sub(R[a], mul(lj, ld(at(p, _GY + a)))) for a in range(3)]
        b00, b01, b02, b10, b11, b12, b20, b21, b22 = B
        c00 = sub(mul(b11, b22), mul(b12, b21))
        c01 = sub(mul(b12, b20), mul(b10, b22))
        c02 = sub(mul(b10, b21), mul(b11, b20))
        c10 = sub(mul(b21, b02), mul(b22, b01))
        c11 = sub(mul(b22, b00), mul(b20, b02))
        c12 = sub(mul(b20, b01), mul(b21, b00))
        c20 = sub(mul(b01, b12), mul(b02, b11))
        c21 = sub(mul(b02, b10), mul(b00, b12))
        c22 = sub(mul(b00, b11), mul(b01, b10))
        det = add(add(mul(b00, c00), mul(b01, c01)), mul(b02, c02))
        adj = (c00, c10, c20, c01, c11, c21, c02, c12, c22)  # the inverse, row-major, x det
        if steady:  # divisions, as the steady state always did (bit-stable results)
            inv = [div(c, det) for c in adj]
        else:  # one division per layer in the time steps
            idet = div(one, det)
            inv = [mul(c, idet) for c in adj]
        for i in range(9):
            st(at(o, _GINV + i), inv[i])
        for a in range(3):
            st(at(o, _GY + a), add(add(mul(inv[3 * a], R[0]), mul(inv[3 * a + 1], R[1])),
                                   mul(inv[3 * a + 2], R[2])))
    o = (L - 1) * W  # SOM back substitution
    for a in range(3):
        st(at(o, _GX + 4 + a), ld(at(o, _GY + a)))
    for j in range(L - 2, -1, -1):
        o, n = j * W, (j + 1) * W  # n: the layer below
        u = ld(at(o, _GUP))
        xs = [ld(at(n, _GX + 4 + a)) for a in range(3)]
        for a in range(3):
            t = add(add(mul(ld(at(o, _GINV + 3 * a)), xs[0]),
                        mul(ld(at(o, _GINV + 3 * a + 1)), xs[1])),
                    mul(ld(at(o, _GINV + 3 * a + 2)), xs[2]))
            st(at(o, _GX + 4 + a), sub(ld(at(o, _GY + a)), mul(u, t)))


class _NumpyLanes:
    """The numpy backend of :func:`group_solve_program` (lanes are float64 arrays)."""

    def __init__(self, S: np.ndarray, r: float) -> None:
        self.S = S
        self.r = np.full(_G, r)
        self.zero = np.zeros(_G)
        self.one = np.ones(_G)
        self.add, self.sub, self.mul = np.add, np.subtract, np.multiply
        self.div, self.neg = np.divide, np.negative

    def ld(self, i):
        return self.S[i:i + _G].copy()

    def st(self, i, v):
        self.S[i:i + _G] = v

    def nonzero(self, v, b):
        return np.where(b != 0.0, v, 0.0)


def group_solve_numpy(S: np.ndarray, r: float, *, uniform_fractions: bool = False) -> None:
    """:func:`group_solve` evaluated with numpy (slow; the same bits, for tests and reading).

    Parameters
    ----------
    S : ndarray
        A group's float64 work array (:func:`group_scratch`'s first item, or one of the
        same size), inputs filled; the solution is written to its ``x`` rows in place.
    r : float
        The shift (day-1): the reciprocal time step of an implicit step, 0 for a steady state.
    uniform_fractions : bool, keyword-only
        Every layer takes layer 0's transfer fractions (:func:`group_solve_program`; the
        compiled counterpart is :func:`group_solve_uniform`, steady state only).
    """
    if S.dtype != np.float64 or S.shape != (_GL * _GW * _G,):
        raise ValueError(f"group_solve_numpy: S must be float64 of shape ({_GL * _GW * _G},) "
                         f"(group_scratch); got {S.dtype} {S.shape}")
    with np.errstate(all="ignore"):
        group_solve_program(_NumpyLanes(S, float(r)), r == 0.0, uniform_fractions)


def _group_solve_uniform(S):  # pragma: no cover - compiled by numba
    """The steady group solve (shift 0) with every layer taking layer 0's transfer
    fractions (:func:`group_solve_program` ``uniform_fractions``), as SIMD code."""
    _group_solve_uniform_simd(S)


def _group_solve(S, r):  # pragma: no cover - compiled by numba
    """The group solve in the compiled kernels: :func:`group_solve_program` as SIMD code.

    ``S``: the group's work array (:func:`_group_scratch`), inputs filled; the solution is
    written to its ``x`` rows. ``r``: the shift (day-1; 0 for a steady state).
    """
    _group_solve_simd(S, r)


#: per-step outputs of :func:`clm5_steps` (``[n, T]``; ``soc`` ``[n, T, L]`` on request)
STEP_OUTPUTS = ("total_carbon", "soc_stock", "respiration", "input")

_TB = 12  # steps per block of the step kernel's environmental scalars (L1-sized buffers)


def _step_kernel(b0, b1, rows, kb, lq, wsc, tsoi, wsca, osca, fpi, lo, di, up, prof, bidx, u,
                 fr, rdt, dz, x, incr, acc, total, soc_stock, resp, inp, soc, save_soc, outputs
                 ):  # pragma: no cover - compiled by numba
    """Backward Euler through ``T`` steps for columns ``b0 <= c < b1`` (``x`` updated in place).

    Column ``c`` of the state and the outputs is row ``rows[c]`` of the inputs (the
    parameter terms, forcing, operators and inputs): a subset of a run's columns is stepped
    without copying its inputs (a spin-up's columns still cycling).

    Columns are stepped in groups of :data:`GROUP_SIZE`.  With ``incr``
    each step solves for the increment ``d`` from the residual ``I - (V - A K) x`` (defect
    form) and accumulates ``acc += d``: the period change of a spin-up cycle without the
    cancellation of ``x_end - x_start``. The environmental scalars of :data:`_TB` steps
    of a column come from one flat loop over its contiguous forcing block (``tsoi`` etc.
    C-contiguous, as :func:`clm5_steps` passes them), with :func:`vexp` in place of the C
    library's ``exp`` (within 1 ulp; per value in the step loop it kept that loop scalar).
    Without ``outputs`` the per-step sums (``total`` ... ``inp``, ``soc``) are skipped: a
    spin-up cycle needs only the state and ``acc`` (~10 % of a defect-form step).
    """
    L = kb.shape[1]
    T = tsoi.shape[1]
    G = _G
    ngroups = (b1 - b0 + G - 1) // G
    # work arrays of the block (every group writes what it reads)
    S, K, rhs, xn, frg, lo_g, di_g, up_g = group_scratch()
    xc = np.empty((L, 7, G))
    accg = np.empty((L, 7, G))  # defect form: the group's sums of increments (acc)
    rfg = np.empty((L, 7, G))
    kbg = np.empty((L, 7, G))
    # the environmental scalars of a block of _TB steps per column, from one flat pass
    esb = np.empty((G, _TB * L))
    elb = np.empty((G, _TB * L))
    for grp in range(ngroups):
        c0 = b0 + grp * G
        ng = min(G, b1 - c0)
        for g in range(ng):
            c = c0 + g
            ci = rows[c]
            for j in range(L):
                for q in range(7):
                    # plain steps keep the state in the solve's own x rows (the solve only
                    # writes them): no copy per step; the defect form also needs it in xc
                    if incr:
                        xc[j, q, g] = x[c, j, q]
                        accg[j, q, g] = acc[c, j, q]
                    xn[j, q, g] = x[c, j, q]
                    kbg[j, q, g] = kb[ci, j, q]
                for q in range(9):
                    frg[j, q, g] = fr[ci, j, q]
                rfg[j, 0, g] = 0.0
                rfg[j, 1, g] = 1.0 - fr[ci, j, 1]
                rfg[j, 2, g] = 1.0 - fr[ci, j, 2]
                rfg[j, 3, g] = 1.0 - fr[ci, j, 3]
                rfg[j, 4, g] = 1.0 - fr[ci, j, 4] - fr[ci, j, 5]
                rfg[j, 5, g] = 1.0 - fr[ci, j, 6] - fr[ci, j, 7]
                rfg[j, 6, g] = 1.0 - fr[ci, j, 8]
        for t in range(T):
            r = rdt[t]
            b = bidx[t]
            tb = t % _TB
            if tb == 0:
                # environmental scalars as forcing.temperature_scalar / water_scalar (Q10
                # frozen = Q10, reference 25 degC) times the O and N scalars, for the next
                # _TB steps of each column: one flat loop that LLVM vectorises (vexp is
                # within 1 ulp of exp, whose library call kept the step loop scalar)
                nv = min(_TB, T - t) * L
                for g in range(ng):
                    ci = rows[c0 + g]
                    lqc = lq[ci]
                    wc = wsc[ci]
                    b0v = t * L
                    ts = column_view(tsoi, ci, T * L)
                    ws = column_view(wsca, ci, T * L)
                    os_ = column_view(osca, ci, T * L)
                    fp = column_view(fpi, ci, T * L)
                    for i in range(nv):
                        e = vexp(lqc * (ts[b0v + i] - 298.15)) * min(1.0, wc * ws[b0v + i])
                        e = e * os_[b0v + i]
                        esb[g, i] = e
                        elb[g, i] = e * fp[b0v + i]
            for g in range(ng):
                c = c0 + g
                ci = rows[c]
                ip = 0.0
                u0 = u[ci, t, 0]
                u1 = u[ci, t, 1]
                u2 = u[ci, t, 2]
                u3 = u[ci, t, 3]
                for j in range(L):
                    es = esb[g, tb * L + j]
                    el = elb[g, tb * L + j]
                    K[j, 0, g] = kbg[j, 0, g] * es
                    K[j, 1, g] = kbg[j, 1, g] * el
                    K[j, 2, g] = kbg[j, 2, g] * el
                    K[j, 3, g] = kbg[j, 3, g] * el
                    K[j, 4, g] = kbg[j, 4, g] * es
                    K[j, 5, g] = kbg[j, 5, g] * es
                    K[j, 6, g] = kbg[j, 6, g] * es
                    pj = prof[ci, b, j]
                    dzj = dz[j]
                    d0 = u0 * pj
                    d1 = u1 * pj
                    d2 = u2 * pj
                    d3 = u3 * pj
                    if outputs:
                        ip += dzj * d0
                        ip += dzj * d1
                        ip += dzj * d2
                        ip += dzj * d3
                    if incr:
                        rhs[j, 0, g] = d0
                        rhs[j, 1, g] = d1
                        rhs[j, 2, g] = d2
                        rhs[j, 3, g] = d3
                        for q in range(4, 7):
                            rhs[j, q, g] = 0.0
                    else:  # backward Euler: inputs + x / dt (x: the last solution)
                        rhs[j, 0, g] = d0 + r * xn[j, 0, g]
                        rhs[j, 1, g] = d1 + r * xn[j, 1, g]
                        rhs[j, 2, g] = d2 + r * xn[j, 2, g]
                        rhs[j, 3, g] = d3 + r * xn[j, 3, g]
                        for q in range(4, 7):
                            rhs[j, q, g] = 0.0 + r * xn[j, q, g]
                    lo_g[j, g] = lo[ci, b, j]
                    di_g[j, g] = di[ci, b, j]
                    up_g[j, g] = up[ci, b, j]
                if outputs:
                    inp[c, t] = ip * 365.0
            if incr:
                # the residual's (V - A K) x, lanes innermost (G is a compile-time constant:
                # LLVM packs the lanes; a short group's idle lanes compute what is not used)
                for j in range(L):
                    for g in range(G):
                        f0 = K[j, 0, g] * xc[j, 0, g]
                        f1 = K[j, 1, g] * xc[j, 1, g]
                        f2 = K[j, 2, g] * xc[j, 2, g]
                        f3 = K[j, 3, g] * xc[j, 3, g]
                        f4 = K[j, 4, g] * xc[j, 4, g]
                        f5 = K[j, 5, g] * xc[j, 5, g]
                        f6 = K[j, 6, g] * xc[j, 6, g]
                        a1 = f1
                        a2 = f2 - frg[j, 0, g] * f0
                        a3 = f3 - (1.0 - frg[j, 0, g]) * f0
                        a4 = f4 - frg[j, 1, g] * f1 - frg[j, 2, g] * f2 \
                            - frg[j, 6, g] * f5 - frg[j, 8, g] * f6
                        a5 = f5 - frg[j, 3, g] * f3 - frg[j, 4, g] * f4
                        a6 = f6 - frg[j, 5, g] * f4 - frg[j, 7, g] * f5
                        d = di_g[j, g]
                        t1 = d * xc[j, 1, g]
                        t2 = d * xc[j, 2, g]
                        t3 = d * xc[j, 3, g]
                        t4 = d * xc[j, 4, g]
                        t5 = d * xc[j, 5, g]
                        t6 = d * xc[j, 6, g]
                        if j > 0:
                            lw = lo_g[j, g]
                            t1 += lw * xc[j - 1, 1, g]
                            t2 += lw * xc[j - 1, 2, g]
                            t3 += lw * xc[j - 1, 3, g]
                            t4 += lw * xc[j - 1, 4, g]
                            t5 += lw * xc[j - 1, 5, g]
                            t6 += lw * xc[j - 1, 6, g]
                        if j < L - 1:
                            uw = up_g[j, g]
                            t1 += uw * xc[j + 1, 1, g]
                            t2 += uw * xc[j + 1, 2, g]
                            t3 += uw * xc[j + 1, 3, g]
                            t4 += uw * xc[j + 1, 4, g]
                            t5 += uw * xc[j + 1, 5, g]
                            t6 += uw * xc[j + 1, 6, g]
                        rhs[j, 0, g] -= f0
                        rhs[j, 1, g] -= a1 + t1
                        rhs[j, 2, g] -= a2 + t2
                        rhs[j, 3, g] -= a3 + t3
                        rhs[j, 4, g] -= a4 + t4
                        rhs[j, 5, g] -= a5 + t5
                        rhs[j, 6, g] -= a6 + t6
            group_solve(S, r)
            if incr:  # lanes innermost; the sums go to acc when the group is done
                for j in range(L):
                    for q in range(7):
                        for g in range(G):
                            accg[j, q, g] += xn[j, q, g]
                            xn[j, q, g] += xc[j, q, g]
            for g in range(ng if outputs else 0):
                c = c0 + g
                tc = 0.0
                sc = 0.0
                rs = 0.0
                for j in range(L):
                    w = dz[j]
                    s = xn[j, 4, g] + xn[j, 5, g] + xn[j, 6, g]
                    tc += w * (xn[j, 0, g] + xn[j, 1, g] + xn[j, 2, g] + xn[j, 3, g] + s)
                    sc += w * s
                    rs += w * (rfg[j, 1, g] * K[j, 1, g] * xn[j, 1, g]
                               + rfg[j, 2, g] * K[j, 2, g] * xn[j, 2, g]
                               + rfg[j, 3, g] * K[j, 3, g] * xn[j, 3, g]
                               + rfg[j, 4, g] * K[j, 4, g] * xn[j, 4, g]
                               + rfg[j, 5, g] * K[j, 5, g] * xn[j, 5, g]
                               + rfg[j, 6, g] * K[j, 6, g] * xn[j, 6, g])
                    if save_soc:
                        soc[c, t, j] = s
                total[c, t] = tc
                soc_stock[c, t] = sc
                resp[c, t] = rs * 365.0
            if incr:
                for j in range(L):
                    for q in range(7):
                        for g in range(G):
                            xc[j, q, g] = xn[j, q, g]
        for g in range(ng):
            c = c0 + g
            for j in range(L):
                for q in range(7):
                    x[c, j, q] = xn[j, q, g]
                    if incr:
                        acc[c, j, q] = accg[j, q, g]


# -------------------------------------------------------------------------------------------
# the structured solves of xproda.models.solve, compiled (its differentiable torch path's
# forward and adjoint solves on the CPU: no per-operation overhead for small batches)
# -------------------------------------------------------------------------------------------
def _thomas_kernel(b0, b1, lo, di, up, r, x):  # pragma: no cover - compiled by numba
    """Tridiagonal solves of columns ``b0 <= c < b1``; arrays ``[L, N]`` (batch last)."""
    L = di.shape[0]
    cp = np.empty(L)
    dp = np.empty(L)
    for c in range(b0, b1):
        for j in range(L):
            if j == 0:
                piv = di[0, c]
                rr = r[0, c]
            else:
                piv = di[j, c] - lo[j, c] * cp[j - 1]
                rr = r[j, c] - lo[j, c] * dp[j - 1]
            inv = 1.0 / piv
            cp[j] = up[j, c] * inv
            dp[j] = rr * inv
        x[L - 1, c] = dp[L - 1]
        for j in range(L - 2, -1, -1):
            x[j, c] = dp[j] - cp[j] * x[j + 1, c]


def _block3_kernel(b0, b1, lo, B, up, R, X):  # pragma: no cover - compiled by numba
    """Block-tridiagonal (3x3 blocks, scalar couplings) solves of columns ``b0 <= c < b1``:
    ``lo, up [L, N]``, ``B [3, 3, L, N]``, ``R, X [3, L, N]``; the operations of
    :func:`xproda.models.solve.block3_thomas`'s torch sweep (cyclic cofactor inverse)."""
    L = B.shape[2]
    ginv = np.empty((L, 3, 3))
    y = np.empty((L, 3))
    b = np.empty((3, 3))
    cof = np.empty((3, 3))
    rv = np.empty(3)
    for c in range(b0, b1):
        for j in range(L):
            if j == 0:
                for i in range(3):
                    rv[i] = R[i, 0, c]
                    for k in range(3):
                        b[i, k] = B[i, k, 0, c]
            else:
                s = lo[j, c] * up[j - 1, c]
                for i in range(3):
                    rv[i] = R[i, j, c] - lo[j, c] * y[j - 1, i]
                    for k in range(3):
                        b[i, k] = B[i, k, j, c] - s * ginv[j - 1, i, k]
            for i in range(3):
                i1 = (i + 1) % 3
                i2 = (i + 2) % 3
                for k in range(3):
                    k1 = (k + 1) % 3
                    k2 = (k + 2) % 3
                    cof[i, k] = b[i1, k1] * b[i2, k2] - b[i1, k2] * b[i2, k1]
            det = b[0, 0] * cof[0, 0] + b[0, 1] * cof[0, 1] + b[0, 2] * cof[0, 2]
            for i in range(3):
                for k in range(3):
                    ginv[j, i, k] = cof[k, i] / det
            for i in range(3):
                y[j, i] = ginv[j, i, 0] * rv[0] + ginv[j, i, 1] * rv[1] + ginv[j, i, 2] * rv[2]
        for i in range(3):
            X[i, L - 1, c] = y[L - 1, i]
        for j in range(L - 2, -1, -1):
            u = up[j, c]
            for i in range(3):
                X[i, j, c] = y[j, i] - u * (ginv[j, i, 0] * X[0, j + 1, c]
                                            + ginv[j, i, 1] * X[1, j + 1, c]
                                            + ginv[j, i, 2] * X[2, j + 1, c])


def thomas_solve(lower, diag, upper, rhs, *, threads=None) -> np.ndarray:
    """Tridiagonal solves (no pivoting), numpy float64 ``[L, N]`` in and out (compiled).

    The forward and adjoint solves of :func:`xproda.models.solve.thomas` on the CPU.
    ``lower[0]`` and ``upper[-1]`` are ignored.
    """
    if not HAVE_NUMBA:  # pragma: no cover
        raise RuntimeError("the compiled solve needs numba; install it or set "
                           "fused_kernels=False")
    arrs = [np.ascontiguousarray(a, dtype=np.float64) for a in (lower, diag, upper, rhs)]
    if arrs[1].ndim != 2 or any(a.shape != arrs[1].shape for a in arrs):
        raise ValueError(f"thomas_solve: lower, diag, upper and rhs must all be [L, N]; got "
                         f"{[a.shape for a in arrs]}")
    out = np.empty(arrs[1].shape)
    run_blocks(_thomas_compiled, out.shape[1], *arrs, out, threads=threads,
               block=SOLVE_BLOCK)
    return out


#: columns per block of the compiled solves (~1 us per column): a call of fewer columns runs
#: on the calling thread alone -- handing ~0.1 ms of work to another thread costs more than
#: it saves, and on a busy machine the caller would wait for a descheduled helper
SOLVE_BLOCK = 2048


def block3_solve(lower, blocks, upper, rhs, *, threads=None) -> np.ndarray:
    """Block-tridiagonal solves, numpy float64 (compiled): ``lower, upper [L, N]``,
    ``blocks [3, 3, L, N]``, ``rhs [3, L, N]``; returns ``[3, L, N]``.

    The forward and adjoint solves of :func:`xproda.models.solve.block3_thomas` on the CPU.
    """
    if not HAVE_NUMBA:  # pragma: no cover
        raise RuntimeError("the compiled solve needs numba; install it or set "
                           "fused_kernels=False")
    lo, B, up, R = (np.ascontiguousarray(a, dtype=np.float64)
                    for a in (lower, blocks, upper, rhs))
    if R.ndim != 3 or R.shape[0] != 3 or lo.shape != R.shape[1:] or up.shape != lo.shape \
            or B.shape != (3,) + R.shape:
        raise ValueError(f"block3_solve: expected lower, upper [L, N], blocks [3, 3, L, N], "
                         f"rhs [3, L, N]; got {lo.shape}, {B.shape}, {up.shape}, {R.shape}")
    out = np.empty(R.shape)
    run_blocks(_block3_compiled, out.shape[2], lo, B, up, R, out, threads=threads,
               block=SOLVE_BLOCK)
    return out


def _range_kernel(b0, b1, a, integer, out):  # pragma: no cover - compiled by numba
    """Rows ``b0 <= r < b1`` of ``a [rows, m]``: ``out[r]`` = (min, max) of the row's values
    with NaN skipped (``inf, -inf`` where all are NaN), and 1.0 in ``out[r, 2]`` where
    ``integer`` and a finite value is not an integer (0.0 otherwise).

    Four independent accumulators per statistic: the compare-and-select chains overlap
    (without fast-math flags LLVM keeps a NaN-skipping reduction scalar).
    """
    m = a.shape[1]
    m4 = m - m % 4
    for r in range(b0, b1):
        lo0 = lo1 = lo2 = lo3 = math.inf
        hi0 = hi1 = hi2 = hi3 = -math.inf
        frac = 0.0
        for i in range(0, m4, 4):
            v0 = float(a[r, i])
            v1 = float(a[r, i + 1])
            v2 = float(a[r, i + 2])
            v3 = float(a[r, i + 3])
            lo0 = v0 if v0 < lo0 else lo0
            lo1 = v1 if v1 < lo1 else lo1
            lo2 = v2 if v2 < lo2 else lo2
            lo3 = v3 if v3 < lo3 else lo3
            hi0 = v0 if v0 > hi0 else hi0
            hi1 = v1 if v1 > hi1 else hi1
            hi2 = v2 if v2 > hi2 else hi2
            hi3 = v3 if v3 > hi3 else hi3
        for i in range(m4, m):
            v0 = float(a[r, i])
            lo0 = v0 if v0 < lo0 else lo0
            hi0 = v0 if v0 > hi0 else hi0
        if integer:
            for i in range(m):
                v0 = float(a[r, i])
                if math.isfinite(v0) and v0 != math.floor(v0):
                    frac = 1.0
                    break
        out[r, 0] = min(min(lo0, lo1), min(lo2, lo3))
        out[r, 1] = max(max(hi0, hi1), max(hi2, hi3))
        out[r, 2] = frac


def value_range(a: np.ndarray, *, integer: bool = False, threads: int | None = None
                ) -> tuple[float, float, bool, bool]:
    """``(min, max, has_inf, non_integer)`` of the values of ``a`` with NaN skipped.

    The compiled counterpart of :func:`xproda.models.forcing.value_range` for large arrays
    (one pass, row blocks on :func:`~xproda.models.parallel.run_blocks`' threads: no
    OpenMP region, so no spin-waiting barrier on a shared machine). ``a``: float32 or float64,
    C-contiguous, at least 1-D (rows: the first axis). ``(inf, -inf, False, False)`` where
    every value is NaN or ``a`` is empty; ``non_integer`` only with ``integer`` (a finite
    value that is not a whole number).
    """
    if not HAVE_NUMBA:  # pragma: no cover
        raise RuntimeError("value_range needs numba")
    a = np.ascontiguousarray(a)
    if a.size == 0:
        return math.inf, -math.inf, False, False
    a2 = a.reshape(a.shape[0], -1) if a.ndim > 1 else a.reshape(1, -1)
    out = np.empty((a2.shape[0], 3))
    run_blocks(_range_compiled, a2.shape[0], a2, bool(integer), out, threads=threads)
    lo, hi = float(out[:, 0].min()), float(out[:, 1].max())
    return lo, hi, math.isinf(lo) and lo < 0 or math.isinf(hi) and hi > 0, bool(out[:, 2].any())


def _repeat_kernel(b0, b1, a, lag, out):  # pragma: no cover - compiled by numba
    """``out[r]`` = 1 where row ``r`` of ``a [rows, T]`` repeats with ``lag`` (0: constant)."""
    T = a.shape[1]
    for r in range(b0, b1):
        same = 1
        for t in range(max(lag, 1), T):
            v = a[r, t]
            w = a[r, t - lag] if lag > 0 else a[r, 0]
            if v != w and not (v != v and w != w):
                same = 0
                break
        out[r] = same


def repeats(a: np.ndarray, lag: int = 0, *, threads: int | None = None) -> bool:
    """Whether ``a[:, t] == a[:, t - lag]`` for every ``t >= lag`` (NaN equal to NaN).

    ``lag`` 0: every step equals the first. ``a``: ``[n, T]`` float32/float64 (any
    strides). One compiled pass over row blocks that stops at a row's first difference
    (numpy's ``array_equal(..., equal_nan=True)`` made five temporaries; torch's comparisons
    OpenMP regions).
    """
    if not HAVE_NUMBA:  # pragma: no cover
        raise RuntimeError("repeats needs numba")
    if a.ndim != 2 or lag < 0:
        raise ValueError(f"repeats: expected a [n, T] array and lag >= 0, got {a.shape}, {lag}")
    if a.shape[0] == 0 or a.shape[1] <= max(lag, 1):
        return True
    out = np.empty(a.shape[0], dtype=np.uint8)
    run_blocks(_repeat_compiled, a.shape[0], a, int(lag), out, threads=threads)
    return bool(out.all())


def _vexp(x):  # pragma: no cover - numba
    """``exp(x)`` that LLVM can vectorise (branch-free, no library call), within 1 ulp.

    numba's ``math.exp`` is a call into the C library per value, which keeps every loop
    that contains it scalar (numba's LLVM has no vector math library here). This is the
    classic reduction ``x = k ln2 + r`` (Cody-Waite, ``|r| <= ln2 / 2``), a degree-13
    Taylor polynomial for ``exp(r)`` (truncation error < 1e-17 relative) and the scaling by
    ``2**k`` built from the exponent bits, in two halves so that subnormal results and
    overflow to ``inf`` come out as from the C library. Checked against ``math.exp`` to at
    most 1 ulp over the whole range, with NaN, +-inf, overflow and underflow exact
    (``tests/test_fused_steady.py``).
    """
    x = 710.0 if x > 710.0 else x  # exp overflows from 709.78; NaN passes both selects
    x = -746.0 if x < -746.0 else x  # and underflows to 0 below -745.13
    kf = math.floor(x * 1.4426950408889634 + 0.5)
    r = (x - kf * 6.93147180369123816490e-01) - kf * 1.90821492927058770002e-10
    p = 1.0 / 6227020800.0
    p = p * r + 1.0 / 479001600.0
    p = p * r + 1.0 / 39916800.0
    p = p * r + 1.0 / 3628800.0
    p = p * r + 1.0 / 362880.0
    p = p * r + 1.0 / 40320.0
    p = p * r + 1.0 / 5040.0
    p = p * r + 1.0 / 720.0
    p = p * r + 1.0 / 120.0
    p = p * r + 1.0 / 24.0
    p = p * r + 1.0 / 6.0
    p = p * r + 0.5
    p = p * r + 1.0
    p = p * r + 1.0
    k = numba.int64(kf) if kf == kf else numba.int64(0)  # NaN: p is NaN already
    k1 = k >> 1
    k2 = k - k1
    return p * _bits_as_float((k1 + 1023) << 52) * _bits_as_float((k2 + 1023) << 52)


if HAVE_NUMBA:
    import llvmlite.ir as _llvm_ir
    from numba.extending import intrinsic as _intrinsic

    @_intrinsic
    def _bits_as_float(typingctx, bits):  # pragma: no cover - compiled
        """Reinterpret an int64's bits as a float64 (an LLVM bitcast, vectorisable)."""
        def codegen(context, builder, signature, args):
            return builder.bitcast(args[0], _llvm_ir.DoubleType())
        return numba.types.float64(numba.types.int64), codegen

    @_intrinsic
    def _row_pointer(typingctx, a, c):  # pragma: no cover - compiled
        """Pointer to the first value of ``a[c]`` (``a``: an array of any layout)."""
        if not (isinstance(a, numba.types.Array) and isinstance(c, numba.types.Integer)):
            return None

        def codegen(context, builder, signature, args):
            ary = context.make_array(signature.args[0])(context, builder, args[0])
            stride = builder.extract_value(ary.strides, 0)
            c = context.cast(builder, args[1], signature.args[1], numba.types.intp)
            raw = builder.bitcast(ary.data, _llvm_ir.IntType(8).as_pointer())
            p = builder.gep(raw, [builder.mul(c, stride)])
            return builder.bitcast(p, ary.data.type)
        return numba.types.CPointer(a.dtype)(a, c), codegen

    def _column_view(a, c, size):  # pragma: no cover - numba
        """The ``size`` values from ``a[c, 0, ...]`` on, as a 1-D C-contiguous view.

        For compiled kernels that read one column's block of a ``[n, ...]`` array as one
        flat vector (LLVM vectorises and interleaves a flat loop better than nested short
        ones). The caller checks that ``a[c]`` is C-contiguous (``a.strides[1:]``) and holds
        ``size`` values; this works for arrays of any layout (a transposed view's numba
        type is ``'A'`` even where a column block is contiguous).
        """
        return numba.carray(_row_pointer(a, c), size)

    _DOUBLE = _llvm_ir.DoubleType()
    _LANES = _llvm_ir.VectorType(_DOUBLE, _G)

    class _LLVMLanes:
        """The LLVM backend of :func:`group_solve_program`: emits ``<_G x double>`` code.

        Unaligned vector loads and stores at constant offsets from the work array's data
        pointer; IEEE operations without fast-math flags (no contraction into FMA), so the
        results are those of the scalar operations lane by lane.
        """

        def __init__(self, builder, base, r):
            self.b, self.base = builder, base
            i32 = _llvm_ir.IntType(32)
            undef = _llvm_ir.Constant(_LANES, _llvm_ir.Undefined)
            first = builder.insert_element(undef, r, _llvm_ir.Constant(i32, 0))
            self.r = builder.shuffle_vector(
                first, undef, _llvm_ir.Constant(_llvm_ir.VectorType(i32, _G), [0] * _G))
            self.zero = _llvm_ir.Constant(_LANES, [_llvm_ir.Constant(_DOUBLE, 0.0)] * _G)
            self.one = _llvm_ir.Constant(_LANES, [_llvm_ir.Constant(_DOUBLE, 1.0)] * _G)
            self.add, self.sub = builder.fadd, builder.fsub
            self.mul, self.div, self.neg = builder.fmul, builder.fdiv, builder.fneg

        def _at(self, i):
            ptr = self.b.gep(self.base, [_llvm_ir.Constant(_llvm_ir.IntType(64), i)],
                             inbounds=True)
            return self.b.bitcast(ptr, _LANES.as_pointer())

        def ld(self, i):
            return self.b.load(self._at(i), align=8)

        def st(self, i, v):
            self.b.store(v, self._at(i), align=8)

        def nonzero(self, v, b):  # b != 0 is unordered: a NaN b keeps v (NaN)
            return self.b.select(self.b.fcmp_unordered("!=", b, self.zero), v, self.zero)

    @_intrinsic
    def _group_solve_simd(typingctx, S, r):  # pragma: no cover - compiled
        """:func:`group_solve_program` for work array ``S`` and shift ``r``, as SIMD code.

        Both variants (steady: ``r == 0``; shifted) are emitted, straight-line, and one is
        branched to at run time.
        """
        if not (isinstance(S, numba.types.Array) and S.dtype == numba.types.float64
                and S.ndim == 1 and isinstance(r, numba.types.Float)):
            return None

        def codegen(context, builder, signature, args):
            base = context.make_array(signature.args[0])(context, builder, args[0]).data
            rv = context.cast(builder, args[1], signature.args[1], numba.types.float64)
            zero = _llvm_ir.Constant(_DOUBLE, 0.0)
            with builder.if_else(builder.fcmp_ordered("==", rv, zero)) as (steady, shifted):
                with steady:
                    group_solve_program(_LLVMLanes(builder, base, rv), True)
                with shifted:
                    group_solve_program(_LLVMLanes(builder, base, rv), False)
            return context.get_dummy_value()
        return numba.types.void(S, r), codegen

    @_intrinsic
    def _group_solve_uniform_simd(typingctx, S):  # pragma: no cover - compiled
        """:func:`group_solve_program` (steady, ``uniform_fractions``) for work array ``S``."""
        if not (isinstance(S, numba.types.Array) and S.dtype == numba.types.float64
                and S.ndim == 1):
            return None

        def codegen(context, builder, signature, args):
            base = context.make_array(signature.args[0])(context, builder, args[0]).data
            zero = _llvm_ir.Constant(_DOUBLE, 0.0)
            group_solve_program(_LLVMLanes(builder, base, zero), True, True)
            return context.get_dummy_value()
        return numba.types.void(S), codegen

    # error_model="numpy": IEEE division (inf/NaN) instead of a ZeroDivisionError check on
    # every division; results are unchanged where no pivot is zero
    _jit = {"nogil": True, "error_model": "numpy"}
    #: ``exp`` for compiled kernels, vectorisable (:func:`_vexp`)
    vexp = jit_kernel(_vexp, inline="always", **_jit)
    #: a flat view of one column block of an array (:func:`_column_view`)
    column_view = jit_kernel(_column_view, inline="always", **_jit)
    _thomas_compiled = jit_kernel(_thomas_kernel, **_jit)
    _block3_compiled = jit_kernel(_block3_kernel, **_jit)
    #: the compiled group solve (callable from other compiled kernels): explicit SIMD code
    #: of :func:`group_solve_program`
    group_solve = jit_kernel(_group_solve, **_jit)
    #: the steady group solve with column-constant transfer fractions (layer 0's rows)
    group_solve_uniform = jit_kernel(_group_solve_uniform, **_jit)
    #: the work arrays of one group solve (callable from compiled kernels)
    group_scratch = jit_kernel(_group_scratch, **_jit)
    #: the compiled shifted solves of columns ``[b0, b1)`` (:func:`_shifted_kernel`), also
    #: callable from other compiled kernels
    shifted_kernel = jit_kernel(_shifted_kernel, **_jit)
    #: the compiled backward-Euler steps of columns ``[b0, b1)`` (:func:`_step_kernel`), also
    #: callable from other compiled kernels
    step_kernel = jit_kernel(_step_kernel, **_jit)
    _range_compiled = jit_kernel(_range_kernel, **_jit)
    _repeat_compiled = jit_kernel(_repeat_kernel, **_jit)


def clm5_shifted_solve(K, lower, diag, upper, fractions, rhs, shift, *, threads=None):
    """Solve ``(V - A K + shift I) X = rhs`` column by column, ``[n, L, 7]`` (numpy float64).

    ``rhs`` has a value for every pool (g C m-3 day-1); ``shift`` (day-1) is the reciprocal
    time step of an implicit step, 0 for a steady state.  Shapes as :func:`clm5_pools`.
    """
    if not HAVE_NUMBA:  # pragma: no cover
        raise RuntimeError("the fused kernel needs numba; install it or set fused_kernels=False")
    _check_layers("clm5_shifted_solve", np.shape(K)[1])
    arrs = [np.ascontiguousarray(a, dtype=np.float64)
            for a in (K, lower, diag, upper, fractions, rhs)]
    out = np.empty(arrs[0].shape, dtype=np.float64)
    run_blocks(shifted_kernel, out.shape[0], *arrs[:5], arrs[5], float(shift), out,
               threads=threads)
    return out


def step_arguments(kb, log_q10, w_scaling, tsoi, w_scalar, o_scalar, fpi, lower, diag, upper,
                   profile, band_index, inputs, fractions, rdt, dz) -> tuple:
    """The inputs of the step kernel as it reads them (shapes and units: :func:`clm5_steps`).

    C-contiguous; float64, except the forcing and the litter inputs, which keep float32;
    ``band_index`` int64. Layers checked. Used by :func:`clm5_steps` and by the compiled
    spin-up cycle (:func:`xproda.models.fused_spinup.spin_cycle`), which converts once per
    spin-up instead of once per cycle.
    """
    _check_layers("clm5_steps", np.shape(kb)[1])
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    same = lambda a: np.ascontiguousarray(a)  # noqa: E731  (float32 forcing stays float32)
    out = (f64(kb), f64(log_q10), f64(w_scaling), same(tsoi), same(w_scalar), same(o_scalar),
           same(fpi), f64(lower), f64(diag), f64(upper), f64(profile),
           np.ascontiguousarray(band_index, dtype=np.int64), same(inputs), f64(fractions),
           f64(rdt), f64(dz))
    # the compiled kernel does not check bounds: every shape here, or a clear error
    n, L = out[0].shape[0], out[0].shape[1]
    T = out[3].shape[1] if out[3].ndim == 3 else -1
    B = out[7].shape[1] if out[7].ndim == 3 else -1
    want = dict(zip(
        ("kb", "log_q10", "w_scaling", "tsoi", "w_scalar", "o_scalar", "fpi", "lower", "diag",
         "upper", "profile", "band_index", "inputs", "fractions", "rdt", "dz"),
        ((n, L, 7), (n,), (n,), (n, T, L), (n, T, L), (n, T, L), (n, T, L), (n, B, L),
         (n, B, L), (n, B, L), (n, B, L), (T,), (n, T, 4), (n, L, 9), (T,), (L,))))
    for (name, shape), a in zip(want.items(), out):
        if a.shape != shape or min(shape) < 0:
            raise ValueError(f"clm5_steps: {name} must have shape {shape} (n columns, T steps, "
                             f"B stored operators, L layers), got {a.shape}")
    bidx = out[11]
    if T and (int(bidx.min()) < 0 or int(bidx.max()) >= B):
        raise ValueError(f"clm5_steps: band_index must lie in [0, {B}), got "
                         f"[{int(bidx.min())}, {int(bidx.max())}]")
    return out


def clm5_steps(kb, log_q10, w_scaling, tsoi, w_scalar, o_scalar, fpi, lower, diag, upper,
               profile, band_index, inputs, fractions, rdt, dz, x, *, save_soc=False,
               increments=False, outputs=True, rows=None, out=None, threads=None):
    """Backward Euler steps of the CLM5 matrix model (numpy; ``x`` updated in place).

    Parameters
    ----------
    kb : ndarray
        ``[n, L, 7]`` base rates ``k xi_z`` (day-1).
    log_q10, w_scaling : ndarray
        ``[n]``: ``ln(Q10) / 10`` and the water-scalar multiplier.
    tsoi, w_scalar, o_scalar, fpi : ndarray
        ``[n, T, L]`` forcing per step (K, 1, 1, 1); float32 or float64.
    lower, diag, upper, profile : ndarray
        ``[n, B, L]`` transport bands (day-1) and input profile (per layer: g C m-3 day-1
        per g C m-2 month-1) of the ``B`` distinct step operators.
    band_index : ndarray
        ``[T]`` int: which of the ``B`` operators step ``t`` uses.
    inputs : ndarray
        ``[n, T, 4]`` litter inputs (g C m-2 month-1).
    fractions : ndarray
        ``[n, L, 9]`` transfer fractions in :data:`FRACTION_ORDER`.
    rdt : ndarray
        ``[T]`` reciprocal step lengths (day-1).
    dz : ndarray
        ``[L]`` layer thickness (m).
    x : ndarray
        ``[n, L, 7]`` float64 state (g C m-3), advanced in place to the end of the last step
        (``[m, L, 7]`` with ``rows``).
    increments : bool
        Solve each step in defect form and also return ``change`` ``[n, L, 7]``, the sum of
        the step increments (accurate where ``x`` is huge and changes little).
    outputs : bool, default True
        Compute the per-step outputs below; ``False`` returns only ``change`` (with
        ``increments``; else nothing): the state alone, as a spin-up cycle needs it.
    rows : ndarray, optional
        ``[m]`` int: step only these rows of the inputs (every argument above but ``x``,
        ``band_index``, ``rdt`` and ``dz``); ``x``, the outputs and ``change`` then have
        ``m`` rows, in this order. The inputs are read in place, not gathered.
    out : mapping, optional
        Arrays to write outputs into instead of new ones (any of the keys below except
        ``change``; float64, C-contiguous rows, e.g. a row slice of a larger array).

    Returns
    -------
    dict of ndarray
        ``total_carbon`` and ``soc_stock`` ``[n, T]`` (g C m-2, end of step), ``respiration``
        and ``input`` ``[n, T]`` (g C m-2 yr-1, step mean), ``soc`` ``[n, T, L]`` (g C m-3)
        when ``save_soc``, ``change`` with ``increments``.
    """
    if not HAVE_NUMBA:  # pragma: no cover
        raise RuntimeError("the fused kernel needs numba; install it or set fused_kernels=False")
    args = step_arguments(kb, log_q10, w_scaling, tsoi, w_scalar, o_scalar, fpi, lower, diag,
                          upper, profile, band_index, inputs, fractions, rdt, dz)
    T = tsoi.shape[1]
    L = kb.shape[1]
    n_in = tsoi.shape[0]
    if rows is None:
        rows = np.arange(n_in, dtype=np.int64)
    else:
        rows = np.ascontiguousarray(rows, dtype=np.int64).reshape(-1)
        if rows.size and (int(rows.min()) < 0 or int(rows.max()) >= n_in):
            raise IndexError(f"clm5_steps: rows must lie in [0, {n_in}), got "
                             f"[{int(rows.min())}, {int(rows.max())}]")
    n = rows.size
    if x.shape != (n, L, 7) or x.dtype != np.float64 or not x.flags.c_contiguous:
        raise ValueError(f"clm5_steps: x must be a C-contiguous float64 array of shape "
                         f"{(n, L, 7)}; got {x.dtype} {x.shape}")
    given = dict(out or {})
    if not outputs and (save_soc or given):
        raise ValueError("clm5_steps: save_soc and out need outputs=True")
    keys = STEP_OUTPUTS + ("soc",)
    for k, a in given.items():
        shape = (n, T, L) if k == "soc" else (n, T)
        if k not in keys or a.shape != shape or a.dtype != np.float64 \
                or not a.flags.c_contiguous or not a.flags.writeable:
            raise ValueError(f"clm5_steps: out[{k!r}] must be a writeable C-contiguous float64 "
                             f"array of shape {shape} (keys {keys}); got "
                             f"{getattr(a, 'dtype', None)} {getattr(a, 'shape', None)}")
    shape = (n, T) if outputs else (0, 0)
    outs = [given[k] if k in given else np.empty(shape) for k in STEP_OUTPUTS]
    soc = given.get("soc") if save_soc else None
    if soc is None:
        soc = np.empty((n, T, L) if save_soc else (0, 0, 0))
    acc = np.zeros((n, L, 7) if increments else (0, 0, 0))
    run_blocks(step_kernel, n, rows, *args, x, bool(increments), acc, *outs, soc,
               bool(save_soc), bool(outputs), threads=threads)
    res = dict(zip(STEP_OUTPUTS, outs)) if outputs else {}
    if save_soc:
        res["soc"] = soc
    if increments:
        res["change"] = acc
    return res
