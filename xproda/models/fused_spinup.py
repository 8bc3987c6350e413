"""Compiled passes of the transient spin-up (:func:`xproda.models.transient.spin_up`).

A spin-up cycles the columns through one period of forcing until their period-start state
repeats. Around the step kernel (:func:`xproda.models.fused.clm5_steps`) the driver forms the
period's mean operator once and, every cycle, gathers the columns still cycling, applies the
Newton-like mean-operator correction and measures the change. In torch each of those is a
handful of element-wise operations over ``[n, 20, 7]`` or ``[n, T, 20]`` tensors: every one
an OpenMP region, which on a machine shared with other OpenMP work ends at a spin-waiting
barrier (see docs/performance.md). Here:

* :func:`mean_operator` -- the dt-weighted period means (rates, transport bands, inputs);
* :func:`spin_cycle` -- one whole cycle of a set of columns in one compiled pass per column
  block (gather, steps, correction, update): one :func:`~xproda.models.parallel.run_blocks`
  call per cycle;
* :func:`take_rows` and :func:`cycle_update` -- the gather and the update on their own.

Each does the torch path's arithmetic in the same order (bit-identical results, tested), over
column blocks on :func:`xproda.models.parallel.run_blocks`' threads, which never spin. Used
where :func:`xproda.models.fused.fused_applicable` holds (CPU, float64, no gradient); the
torch expressions remain the reference and the path for every other case.
"""

from __future__ import annotations

import math

import numpy as np

from xproda.grid import N_LAYERS
from xproda.models.fused import HAVE_NUMBA, jit_kernel
from xproda.models.parallel import run_blocks

if HAVE_NUMBA:
    from xproda.models.fused import shifted_kernel, step_kernel

__all__ = ["take_rows", "mean_operator", "cycle_update", "spin_cycle", "cycle_workspace"]


def _take_kernel(b0, b1, a, idx, out):  # pragma: no cover - compiled by numba
    """``out[i] = a[idx[i]]`` for rows ``b0 <= i < b1`` of 2-D ``a`` and ``out``."""
    m = a.shape[1]
    for i in range(b0, b1):
        r = idx[i]
        for j in range(m):
            out[i, j] = a[r, j]


def _mean_kernel(b0, b1, w, es, el, kb, wb, lo, di, up, inp, prof, bidx,
                 K, mlo, mdi, mup, dens):  # pragma: no cover - compiled by numba
    """Columns ``b0 <= c < b1`` of :func:`mean_operator` (see there for the shapes)."""
    T = es.shape[1]
    L = es.shape[2]
    B = lo.shape[1]
    J = inp.shape[2]
    acs = np.empty(L)
    acl = np.empty(L)
    for c in range(b0, b1):
        # the rate modifiers: acc = w0 x0, then acc + w_t x_t (the torch path's order)
        for j in range(L):
            acs[j] = w[0] * es[c, 0, j]
            acl[j] = w[0] * el[c, 0, j]
        for t in range(1, T):
            wt = w[t]
            for j in range(L):
                acs[j] = acs[j] + wt * es[c, t, j]
                acl[j] = acl[j] + wt * el[c, t, j]
        for j in range(L):
            s = acs[j]
            q = acl[j]
            K[c, j, 0] = kb[c, j, 0] * s
            K[c, j, 1] = kb[c, j, 1] * q
            K[c, j, 2] = kb[c, j, 2] * q
            K[c, j, 3] = kb[c, j, 3] * q
            K[c, j, 4] = kb[c, j, 4] * s
            K[c, j, 5] = kb[c, j, 5] * s
            K[c, j, 6] = kb[c, j, 6] * s
        # the transport bands, weighted by each stored step's share of the period
        for j in range(L):
            mlo[c, j] = wb[0] * lo[c, 0, j]
            mdi[c, j] = wb[0] * di[c, 0, j]
            mup[c, j] = wb[0] * up[c, 0, j]
        for b in range(1, B):
            wt = wb[b]
            for j in range(L):
                mlo[c, j] = mlo[c, j] + wt * lo[c, b, j]
                mdi[c, j] = mdi[c, j] + wt * di[c, b, j]
                mup[c, j] = mup[c, j] + wt * up[c, b, j]
        # the input density: w_t (input_t x profile of step t's stored step)
        b = bidx[0]
        for j in range(L):
            pj = prof[c, b, j]
            for k in range(J):
                dens[c, j, k] = w[0] * (inp[c, 0, k] * pj)
        for t in range(1, T):
            wt = w[t]
            b = bidx[t]
            for j in range(L):
                pj = prof[c, b, j]
                for k in range(J):
                    dens[c, j, k] = dens[c, j, k] + wt * (inp[c, t, k] * pj)


def _update_kernel(b0, b1, xa, a, b, plain, idx, keep, X, change):  # pragma: no cover
    """Rows ``b0 <= i < b1`` of :func:`cycle_update`."""
    L = xa.shape[1]
    P = xa.shape[2]
    for i in range(b0, b1):
        dmax = 0.0
        xmax = 0.0
        nan = False
        k = keep[i]
        r = idx[i]
        for j in range(L):
            for p in range(P):
                d = b[i, j, p] - a[i, j, p] if plain else a[i, j, p] + b[i, j, p]
                xn = xa[i, j, p] + d
                ad = abs(d)
                ax = abs(xn)
                if ad > dmax:
                    dmax = ad
                elif ad != ad:
                    nan = True
                if ax > xmax:
                    xmax = ax
                elif ax != ax:
                    nan = True
                if k:
                    X[r, j, p] = xn
        change[i] = math.nan if nan else dmax / xmax


def _cycle_kernel(b0, b1, state, idx, keep, xa, xs, acc, rhs, S, change, plain, tau, Km, mlo,
                  mdi, mup, mfr, kb, lq, wsc, tsoi, wsca, osca, fpi, lo, di, up, prof, bidx, u,
                  fr, rdt, dz, no2, no3):  # pragma: no cover - compiled by numba
    """Work columns ``b0 <= i < b1`` of :func:`spin_cycle`: gather, steps, correction and
    update of one block in one call (the block's arrays stay in cache)."""
    L = xa.shape[1]
    for i in range(b0, b1):
        r = idx[i]
        for j in range(L):
            for p in range(7):
                v = state[r, j, p]
                xa[i, j, p] = v
                xs[i, j, p] = v
                acc[i, j, p] = 0.0
    step_kernel(b0, b1, idx, kb, lq, wsc, tsoi, wsca, osca, fpi, lo, di, up, prof, bidx, u, fr,
                rdt, dz, xs, not plain, acc, no2, no2, no2, no2, no3, False, False)
    if plain:
        _update_compiled(b0, b1, xa, xa, xs, True, idx, keep, state, change)
    else:
        for i in range(b0, b1):
            for j in range(L):
                for p in range(7):
                    rhs[i, j, p] = acc[i, j, p] / tau
        shifted_kernel(b0, b1, Km, mlo, mdi, mup, mfr, rhs, 0.0, S)
        _update_compiled(b0, b1, xa, acc, S, False, idx, keep, state, change)


if HAVE_NUMBA:
    _jit = {"nogil": True, "error_model": "numpy"}
    _take_compiled = jit_kernel(_take_kernel, **_jit)
    _mean_compiled = jit_kernel(_mean_kernel, **_jit)
    _update_compiled = jit_kernel(_update_kernel, **_jit)
    _cycle_compiled = jit_kernel(_cycle_kernel, **_jit)


def _need_numba(name: str) -> None:
    if not HAVE_NUMBA:  # pragma: no cover
        raise RuntimeError(f"{name} needs numba; install it or set fused_kernels=False")


def take_rows(a: np.ndarray, idx: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """``a[idx]`` along the first axis, a new C-contiguous array.

    Row copies over blocks of ``idx`` on :func:`~xproda.models.parallel.run_blocks`' threads
    (torch's index gather of large tensors is an OpenMP region; numpy's is one thread).

    Parameters
    ----------
    a : numpy.ndarray
        At least 1-D; any dtype numba handles (non-contiguous input is copied first).
    idx : array_like of int
        Row indices, ``0 <= idx < a.shape[0]``.
    threads : int, optional
        Kernel threads (default: :func:`xproda.models.parallel.kernel_threads`).

    Raises
    ------
    IndexError
        An index outside ``[0, a.shape[0])``.
    """
    _need_numba("take_rows")
    a = np.ascontiguousarray(a)
    idx = np.ascontiguousarray(idx, dtype=np.int64).reshape(-1)
    n = a.shape[0]
    if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= n):
        raise IndexError(f"take_rows: row indices must lie in [0, {n}), got "
                         f"[{int(idx.min())}, {int(idx.max())}]")
    out = np.empty((idx.size,) + a.shape[1:], dtype=a.dtype)
    if idx.size and out.size:
        run_blocks(_take_compiled, idx.size, a.reshape(n, -1), idx,
                   out.reshape(idx.size, -1), threads=threads)
    return out


def mean_operator(w: np.ndarray, env_soil: np.ndarray, env_litter: np.ndarray,
                  kb: np.ndarray, band_weights: np.ndarray, lower: np.ndarray,
                  diag: np.ndarray, upper: np.ndarray, inputs: np.ndarray,
                  profile: np.ndarray, band_index: np.ndarray, *, threads: int | None = None
                  ) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """The dt-weighted period means of :meth:`xproda.models.transient.StepOperators.mean`.

    Every mean is ``w_0 x_0 + w_1 x_1 + ...`` summed in step order, as the torch path does
    (so the results are bit-identical to it and do not depend on the batch size).

    Parameters
    ----------
    w : numpy.ndarray
        ``[T]`` step weights ``dt / sum(dt)`` (1).
    env_soil, env_litter : numpy.ndarray
        ``[n, T, L]`` rate modifiers of CWD/SOM and litter pools per step (1).
    kb : numpy.ndarray
        ``[n, L, 7]`` base rates times the depth scalar (day-1).
    band_weights : numpy.ndarray
        ``[B]`` summed ``w`` of the steps that use each stored transport operator.
    lower, diag, upper : numpy.ndarray
        ``[n, B, L]`` stored transport bands (day-1).
    inputs : numpy.ndarray
        ``[n, T, 4]`` litter inputs (g C m-2 month-1).
    profile : numpy.ndarray
        ``[n, B, L]`` input profiles (g C m-3 day-1 per g C m-2 month-1).
    band_index : numpy.ndarray
        ``[T]`` int, the stored step of each step.
    threads : int, optional
        Kernel threads.

    Returns
    -------
    K : numpy.ndarray
        ``[n, L, 7]`` mean decomposition rates (day-1).
    bands : tuple of numpy.ndarray
        ``[n, L]`` mean lower, diagonal and upper transport bands (day-1).
    dens : numpy.ndarray
        ``[n, L, 4]`` mean input density (g C m-3 day-1).
    """
    _need_numba("mean_operator")
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    w, es, el, kb, wb = (f64(a) for a in (w, env_soil, env_litter, kb, band_weights))
    lo, di, up, inp, prof = (f64(a) for a in (lower, diag, upper, inputs, profile))
    bidx = np.ascontiguousarray(band_index, dtype=np.int64)
    for name, a in (("env_soil", es), ("lower", lo)):
        if a.ndim != 3:
            raise ValueError(f"mean_operator: {name} must be 3-D ([n, T, L] / [n, B, L]), got "
                             f"shape {a.shape}")
    n, T, L = es.shape
    B = lo.shape[1]
    shapes = {"env_litter": (el.shape, (n, T, L)), "kb": (kb.shape, (n, L, 7)),
              "w": (w.shape, (T,)), "band_weights": (wb.shape, (B,)),
              "lower": (lo.shape, (n, B, L)), "diag": (di.shape, (n, B, L)),
              "upper": (up.shape, (n, B, L)),
              "profile": (prof.shape, (n, B, L)), "inputs": (inp.shape[:2], (n, T)),
              "band_index": (bidx.shape, (T,))}
    for name, (got, want) in shapes.items():
        if tuple(got) != want:
            raise ValueError(f"mean_operator: {name} must have shape {want}, got {tuple(got)}")
    if T == 0 or B == 0:
        raise ValueError("mean_operator: needs at least one step and one stored step")
    if int(bidx.min()) < 0 or int(bidx.max()) >= B:
        raise ValueError(f"mean_operator: band_index must lie in [0, {B}), got "
                         f"[{int(bidx.min())}, {int(bidx.max())}]")
    K = np.empty((n, L, 7))
    mlo, mdi, mup = np.empty((n, L)), np.empty((n, L)), np.empty((n, L))
    dens = np.empty((n, L, inp.shape[2]))
    run_blocks(_mean_compiled, n, w, es, el, kb, wb, lo, di, up, inp, prof, bidx,
               K, mlo, mdi, mup, dens, threads=threads)
    return K, (mlo, mdi, mup), dens


def cycle_update(x: np.ndarray, a: np.ndarray, b: np.ndarray, *, plain: bool,
                 state: np.ndarray, rows: np.ndarray, keep: np.ndarray,
                 threads: int | None = None) -> np.ndarray:
    """One spin-up cycle's update of the period-start state; returns the relative change.

    With ``delta = a + b`` (``plain=False``: the defect ``a`` plus its mean-operator
    correction ``b``) or ``delta = b - a`` (``plain=True``: ``b`` the period-end state and
    ``a`` the start state, ``x`` again), the new state ``x + delta`` is written into
    ``state[rows[i]]`` for every ``i`` with ``keep[i]``, and ``max|delta| / max|x + delta|``
    per row is returned (NaN where either holds a NaN), as the torch expressions compute it.

    Parameters
    ----------
    x, a, b : numpy.ndarray
        ``[m, L, 7]`` float64 (g C m-3): the start state of the ``m`` cycled columns and the
        two terms of the change.
    plain : bool
        Which form of ``delta`` (above).
    state : numpy.ndarray
        ``[n, L, 7]`` float64, C-contiguous: the state of all columns, updated in place.
    rows : numpy.ndarray
        ``[m]`` int, the row of ``state`` of each cycled column.
    keep : numpy.ndarray
        ``[m]`` bool, the columns whose new state is written.
    threads : int, optional
        Kernel threads.
    """
    _need_numba("cycle_update")
    x, a, b = (np.ascontiguousarray(v, dtype=np.float64) for v in (x, a, b))
    rows = np.ascontiguousarray(rows, dtype=np.int64)
    keep = np.ascontiguousarray(keep, dtype=np.bool_)
    m = x.shape[0]
    if a.shape != x.shape or b.shape != x.shape or rows.shape != (m,) or keep.shape != (m,):
        raise ValueError(f"cycle_update: x, a, b [m, L, 7] and rows, keep [m] expected, got "
                         f"{x.shape}, {a.shape}, {b.shape}, {rows.shape}, {keep.shape}")
    if (state.dtype != np.float64 or not state.flags.c_contiguous
            or state.shape[1:] != x.shape[1:]):
        raise ValueError("cycle_update: state must be a C-contiguous float64 [n, L, 7] array, "
                         f"got {state.dtype} {state.shape}")
    if m and (int(rows.min()) < 0 or int(rows.max()) >= state.shape[0]):
        raise IndexError(f"cycle_update: rows must lie in [0, {state.shape[0]})")
    change = np.empty(m)
    run_blocks(_update_compiled, m, x, a, b, bool(plain), rows, keep, state, change,
               threads=threads)
    return change


def cycle_workspace(n: int) -> dict[str, np.ndarray]:
    """Work arrays of :func:`spin_cycle` for up to ``n`` columns (reused across cycles)."""
    return {k: np.empty((n, N_LAYERS, 7)) for k in ("xa", "xs", "acc", "rhs", "S")}


def spin_cycle(step_args: tuple, state: np.ndarray, rows: np.ndarray, keep: np.ndarray, *,
               plain: bool, tau: float, mean: tuple | None = None,
               workspace: dict[str, np.ndarray] | None = None,
               threads: int | None = None) -> np.ndarray:
    """One spin-up cycle of the columns ``rows``, compiled in one pass per column block.

    For each column: its period-start state ``x = state[rows[i]]``; one period of backward
    Euler steps (:func:`xproda.models.fused.clm5_steps` on row ``rows[i]`` of the inputs, in
    defect form unless ``plain``); the change ``delta`` -- the summed increments ``D`` plus
    the mean-operator correction solving ``(V - A Kbar) c = D / tau`` (semi-analytic), or
    ``x_end - x`` (``plain``); then :func:`cycle_update` (``state`` written where ``keep``;
    the relative change returned). The same operations in the same order as
    :func:`xproda.models.transient.spin_up`'s separate calls (bit-identical), without their
    intermediate ``[m, L, 7]`` arrays going through memory and with one
    :func:`~xproda.models.parallel.run_blocks` call per cycle instead of four (on a shared
    machine every call ends with the caller waiting for its helpers).

    Parameters
    ----------
    step_args : tuple
        :func:`xproda.models.fused.step_arguments` of the run's ``n`` columns (the period).
    state : numpy.ndarray
        ``[n, L, 7]`` float64, C-contiguous (g C m-3): period-start states, updated in place.
    rows : numpy.ndarray
        ``[m]`` int, distinct: the columns of this cycle.
    keep : numpy.ndarray
        ``[m]`` bool: the columns whose new state is written.
    plain : bool
        Plain cycling instead of the semi-analytic correction.
    tau : float
        Period length (days).
    mean : tuple, optional
        Without ``plain``: ``(K, lower, diag, upper, fractions)`` of the mean operator for the
        ``m`` columns, in ``rows`` order: ``[m, L, 7]``, 3 x ``[m, L]``, ``[m, L, 9]``.
    workspace : dict, optional
        :func:`cycle_workspace` of at least ``m`` columns.
    threads : int, optional
        Kernel threads.

    Returns
    -------
    numpy.ndarray
        ``[m]`` relative change per column (NaN where the change or the state holds a NaN).
    """
    _need_numba("spin_cycle")
    rows = np.ascontiguousarray(rows, dtype=np.int64).reshape(-1)
    keep = np.ascontiguousarray(keep, dtype=np.bool_).reshape(-1)
    m, n = rows.size, state.shape[0]
    if len(step_args) != 16 or step_args[3].shape[0] != n or step_args[0].shape != (
            n, N_LAYERS, 7):
        raise ValueError("spin_cycle: step_args must be fused.step_arguments(...) of the "
                         f"state's {n} columns")
    if (state.dtype != np.float64 or not state.flags.c_contiguous
            or state.shape[1:] != (N_LAYERS, 7)):
        raise ValueError("spin_cycle: state must be a C-contiguous float64 [n, "
                         f"{N_LAYERS}, 7] array, got {state.dtype} {state.shape}")
    if keep.shape != (m,):
        raise ValueError(f"spin_cycle: keep must have shape ({m},), got {keep.shape}")
    if m and (int(rows.min()) < 0 or int(rows.max()) >= n):
        raise IndexError(f"spin_cycle: rows must lie in [0, {n})")
    if plain:
        z2, z3 = np.empty((0, 0)), np.empty((0, 0, 0))
        Km, mlo, mdi, mup, mfr = z3, z2, z2, z2, z3
    else:
        if mean is None or len(mean) != 5:
            raise ValueError("spin_cycle: the semi-analytic cycle needs mean=(K, lower, "
                             "diag, upper, fractions)")
        Km, mlo, mdi, mup, mfr = (np.ascontiguousarray(a, dtype=np.float64) for a in mean)
        L = N_LAYERS
        want = {"K": (Km, (m, L, 7)), "lower": (mlo, (m, L)), "diag": (mdi, (m, L)),
                "upper": (mup, (m, L)), "fractions": (mfr, (m, L, 9))}
        for name, (a, shape) in want.items():
            if a.shape != shape:
                raise ValueError(f"spin_cycle: mean {name} must have shape {shape} (the "
                                 f"cycle's {m} columns), got {a.shape}")
    ws = workspace if workspace is not None else cycle_workspace(m)
    if any(a.shape[0] < m for a in ws.values()):
        raise ValueError(f"spin_cycle: the workspace holds fewer than {m} columns")
    xa, xs, acc, rhs, S = (ws[k][:m] for k in ("xa", "xs", "acc", "rhs", "S"))
    change = np.empty(m)
    run_blocks(_cycle_compiled, m, state, rows, keep, xa, xs, acc, rhs, S, change,
               bool(plain), float(tau), Km, mlo, mdi, mup, mfr, *step_args,
               np.empty((0, 0)), np.empty((0, 0, 0)), threads=threads)
    return change
