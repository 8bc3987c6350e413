"""The whole CLM5 steady state in one compiled pass per column (numba), the no-grad CPU path.

:meth:`xproda.models.clm5.CLM5Model.steady_state` is, in torch, a chain of batched stages:
parameters, environmental scalars per month and their annual means, the monthly transport
operators and their mean, the input profile, the structured solve, fluxes, flags and stocks.
Each stage reads and writes ``[n, 12, 20]`` or ``[n, 20, 7]`` arrays, so most of the time
goes into memory traffic and into launching small parallel regions -- and the latter collapse
when the machine is shared (spin-waiting OpenMP threads; see :mod:`xproda.models.parallel`).

Here one serial kernel does all of it for a block of columns: a column's forcing is read
once (float32 or float64, C-contiguous or any strided view such as a transposed
``[n, 20, 12]`` array; computed in float64 inside), nothing ``[n, 12, 20]``-sized is
materialised, and the value checks of :func:`xproda.models.forcing.validate_forcing` are
computed on the way (per-column minimum and maximum, reduced afterwards and checked with
the same messages). The blocks run on :func:`xproda.models.parallel.run_blocks`.

The formulas and their order follow the torch stages (:mod:`xproda.models.forcing`,
:mod:`xproda.models.transport`, :mod:`xproda.models.base`); the two paths agree to ~1e-13
relative (tests check 1e-12). One deliberate difference: the torch path builds one
transport operator instead of twelve when the active layer and bedrock are constant over
the months in *every* column of the batch; this kernel decides per column, so a column's
result never depends on the other columns of the batch (at the level of rounding).
"""

from __future__ import annotations

import math

import numpy as np

from xproda import grid
from xproda.models.fused import HAVE_NUMBA, jit_kernel
from xproda.models.parallel import run_blocks

__all__ = ["clm5_steady_state", "CLM5_PARAMETER_SLOTS", "MONTHLY_ORDER", "LAYERED_ORDER",
           "geometry"]

#: the [n, 12] forcing variables, stacked in this order into one [n, 7, 12] array
MONTHLY_ORDER = ("ALTMAX", "ALTMAX_LASTYEAR", "nbedrock", "CWD_INPUT", "LITR1_INPUT",
                 "LITR2_INPUT", "LITR3_INPUT")
#: the [n, 12, 20] forcing variables, passed as they are
LAYERED_ORDER = ("TSOI", "W_SCALAR", "O_SCALAR", "FPI_vr")
#: the CLM5 parameters the kernel reads, in the order of its index array
CLM5_PARAMETER_SLOTS = ("q10", "w-scaling", "efolding", "taucwd", "taul1", "taul2", "tau4s1",
                        "tau4s2", "tau4s3", "fcwdl2", "fl1s1", "fl2s1", "fl3s2", "fs1s2",
                        "fs1s3", "fs2s1", "fs2s3", "fs3s1", "beta", "diffus", "cryo")

_KELVIN = 273.15
_FILL = 1e-30
_MAX_ALT_CRYO = 2.0
_MAX_DEPTH_CRYO = 3.0
_L = grid.N_LAYERS
_NS = _L + 1


def geometry() -> np.ndarray:
    """Grid constants the kernels use, ``[7, 22]`` float64.

    Rows: ``zisoi`` (interface depths below each layer), ``zsoi`` (node depths),
    ``dz_node``, ``dz``, ``zisoi_top`` (layer tops), ``ZISOI`` at index ``1..20`` for the
    bedrock depth lookup, and ``zsoi`` again for the depth scalar (m).
    """
    g = np.zeros((7, 22))
    g[0] = grid.ZISOI[:22]
    g[1] = grid.ZSOI[:22]
    g[2] = grid.DZ_NODE[:22]
    g[3] = grid.DZ[:22]
    g[4, :_L + 1] = grid.ZISOI_TOP[:_L + 1]
    g[5] = grid.ZISOI[:22]
    g[6] = grid.ZSOI[:22]
    return g


# -------------------------------------------------------------------------------------------
# per-column stages (compiled; shared with the microbial kernel)
# -------------------------------------------------------------------------------------------
def _diffusivity(alt, altly, nb, d_bio, d_cryo, geo, d):  # pragma: no cover - numba
    """:func:`xproda.models.transport.diffusivity` of one month into ``d[21]``."""
    a = max(alt, altly) if not (alt != alt or altly != altly) else math.nan
    missing = a != a or nb != nb
    if missing:
        for i in range(_NS):
            d[i] = math.nan
        return
    nbi = int(nb)
    if nbi < 1:
        nbi = 1
    if nbi > _L:
        nbi = _L
    z_bottom = min(geo[5, nbi], _MAX_DEPTH_CRYO)
    den = z_bottom - a
    is_cryo = a > 0.0 and a <= _MAX_ALT_CRYO
    is_bio = a > _MAX_ALT_CRYO
    for i in range(_NS):
        z = geo[0, i]
        if is_cryo:
            if z < a:
                v = d_cryo
            elif den > 0.0:
                v = d_cryo * (1.0 - (z - a) / den)
                if v < 0.0:
                    v = 0.0
            else:
                v = 0.0
        elif is_bio:
            v = d_bio
        else:
            v = 0.0
        if not (i + 1.0 <= nb + 1.0):
            v = 0.0
        if abs(v) < _FILL:
            v = _FILL
        d[i] = v


def _patankar(pe):  # pragma: no cover - numba
    x = 1.0 - 0.1 * abs(pe)
    if x < 0.0:
        x = 0.0
    x2 = x * x
    return x2 * x2 * x


def _operator(d, nb, conservative, geo, lo, di, up):  # pragma: no cover - numba
    """:func:`xproda.models.transport.monthly_operator` of one month (bands ``[20]``)."""
    for j in range(_L):
        if j >= 1:
            w_m = (geo[0, j - 1] - geo[1, j - 1]) / geo[2, j]
            dm = 1.0 / ((1.0 - w_m) / d[j] + w_m / d[j - 1]) / geo[2, j]
        else:
            dm = 0.0
        w_p = (geo[1, j + 1] - geo[0, j]) / geo[2, j + 1]
        dp_int = 1.0 / ((1.0 - w_p) / d[j] + w_p / d[j + 1]) / geo[2, j + 1]
        if conservative:
            a = -dm
            c = -dp_int
        else:
            bottom = j >= nb and j >= 1
            dp = dm if bottom else dp_int
            pe_m = _FILL / (dm if j >= 1 else 1.0) if j >= 1 else 0.0
            pe_p = 0.0 if bottom else _FILL / dp_int
            a = -(dm * _patankar(pe_m) + _FILL)
            c = -(dp * _patankar(pe_p) + 0.0)
        dzj = geo[3, j]
        if j == 0:
            di[j] = -c / dzj
        elif j == _L - 1:
            di[j] = -a / dzj
        else:
            di[j] = (-a - c) / dzj
        up[j] = c / dzj if j < _L - 1 else 0.0
        lo[j] = a / dzj if j >= 1 else 0.0


def _same_operator(alt, altly, nb, alt0, altly0, nb0, conservative):  # pragma: no cover
    """Whether two months give the same transport operator (so one can reuse the other).

    Equal inputs do; so do two bioturbation months (active layer > 2 m: the diffusivity is
    the bioturbation value down to the bedrock, whatever the depth) with the same bedrock.
    """
    if nb != nb0 or nb != nb:
        return False
    if alt != alt or altly != altly or alt0 != alt0 or altly0 != altly0:
        return False
    a = max(alt, altly)
    a0 = max(alt0, altly0)
    if a == a0:
        return True
    return a > _MAX_ALT_CRYO and a0 > _MAX_ALT_CRYO


def _mean_operator(mon, c, bio, cryo, conservative, geo, d, lo_m, di_m, up_m, lo, di, up,
                   cnt):  # pragma: no cover - numba
    """Mean transport bands over the months (NaN months omitted) of column ``c``.

    ``mon[c, 0:3, :]``: ALTMAX, ALTMAX_LASTYEAR, nbedrock. One month is built when the three
    are constant over the months (as :func:`xproda.models.transport.mean_operator`).
    """
    nm = mon.shape[2]
    const = True
    for v in range(3):
        f0 = mon[c, v, 0]
        for m in range(1, nm):
            x = mon[c, v, m]
            if not (x == f0 or (x != x and f0 != f0)):
                const = False
    months = 1 if const else nm
    for j in range(_L):
        lo[j] = 0.0
        di[j] = 0.0
        up[j] = 0.0
        cnt[0, j] = 0.0
        cnt[1, j] = 0.0
        cnt[2, j] = 0.0
    d_bio = bio / 365.0
    d_cryo = cryo / 365.0
    for m in range(months):
        nb = mon[c, 2, m]
        a0 = mon[c, 0, m]
        a1 = mon[c, 1, m]
        same = False
        if m > 0:  # a month equal to the last one in what the operator depends on: reuse it
            same = _same_operator(a0, a1, nb, mon[c, 0, m - 1], mon[c, 1, m - 1],
                                  mon[c, 2, m - 1], conservative)
        if not same:
            _diffusivity(a0, a1, nb, d_bio, d_cryo, geo, d)
            _operator(d, nb, conservative, geo, lo_m, di_m, up_m)
        for j in range(_L):
            if lo_m[j] == lo_m[j]:
                lo[j] += lo_m[j]
                cnt[0, j] += 1.0
            if di_m[j] == di_m[j]:
                di[j] += di_m[j]
                cnt[1, j] += 1.0
            if up_m[j] == up_m[j]:
                up[j] += up_m[j]
                cnt[2, j] += 1.0
    for j in range(_L):
        lo[j] = lo[j] / cnt[0, j] if cnt[0, j] > 0 else math.nan
        di[j] = di[j] / cnt[1, j] if cnt[1, j] > 0 else math.nan
        up[j] = up[j] / cnt[2, j] if cnt[2, j] > 0 else math.nan


def _input_profile(mon, c, beta, below_bedrock, geo, prof):  # pragma: no cover - numba
    """:func:`xproda.models.forcing.input_profile` of column ``c`` into ``prof[20]``."""
    nm = mon.shape[2]
    thawed = True
    nbmin = math.inf
    for m in range(nm):
        if not (mon[c, 1, m] > 0.0):
            thawed = False
        x = mon[c, 2, m]
        if x == x and x < nbmin:
            nbmin = x
    if not thawed:
        prof[0] = 1.0
        for j in range(1, _L):
            prof[j] = 0.0
        return
    if math.isinf(nbmin):
        nbmin = math.nan
    s = 0.0
    top = beta ** (100.0 * geo[4, 0])
    for j in range(_L):
        # a layer's top is the bottom of the one above (the same number): one power each
        bottom = beta ** (100.0 * geo[0, j])
        g = top - bottom
        top = bottom if geo[4, j + 1] == geo[0, j] else beta ** (100.0 * geo[4, j + 1])
        if not below_bedrock:
            if nbmin != nbmin:
                g = math.nan
            elif not (j + 1.0 <= nbmin):
                g = 0.0
        prof[j] = g
        s += g
    for j in range(_L):
        prof[j] = prof[j] / s


def _annual_input(mon, c, v):  # pragma: no cover - numba
    """Sum over months of ``mon[c, v]`` with NaN as 0; NaN in every month stays NaN."""
    s = 0.0
    ok = False
    for m in range(mon.shape[2]):
        x = mon[c, v, m]
        if x == x:
            s += x
            ok = True
    return s if ok else math.nan


def _env_means(ts, ws, os_, fp, c, lq, wsc, has_w, soil, litter, stats):  # pragma: no cover
    """Annual means (NaN months omitted) of ``xi_T xi_W xi_O`` and ``... xi_N``, ``[20]``.

    Also updates ``stats[v, 0/1]`` (the minimum / maximum of the values read, NaN skipped)
    of the four layered forcing variables. Returns whether a NaN was read.
    """
    nm = ts.shape[1]
    nan = False
    for j in range(_L):
        s_sum = 0.0
        s_cnt = 0.0
        l_sum = 0.0
        l_cnt = 0.0
        for m in range(nm):
            t = float(ts[c, m, j])
            w = float(ws[c, m, j])
            o = float(os_[c, m, j])
            f = float(fp[c, m, j])
            if t != t or w != w or o != o or f != f:
                nan = True
            if t < stats[0, 0]:
                stats[0, 0] = t
            if t > stats[0, 1]:
                stats[0, 1] = t
            if w < stats[1, 0]:
                stats[1, 0] = w
            if w > stats[1, 1]:
                stats[1, 1] = w
            if o < stats[2, 0]:
                stats[2, 0] = o
            if o > stats[2, 1]:
                stats[2, 1] = o
            if f < stats[3, 0]:
                stats[3, 0] = f
            if f > stats[3, 1]:
                stats[3, 1] = f
            xt = math.exp(t * lq + (-(_KELVIN + 25.0) * lq))
            if has_w:
                xw = wsc * w
                if xw > 1.0:
                    xw = 1.0
            else:
                xw = w
            two = xt * xw * o
            if two == two:
                s_sum += two
                s_cnt += 1.0
            lit = two * f
            if lit == lit:
                l_sum += lit
                l_cnt += 1.0
        soil[j] = s_sum / s_cnt if s_cnt > 0 else math.nan
        litter[j] = l_sum / l_cnt if l_cnt > 0 else math.nan
    return nan


# -------------------------------------------------------------------------------------------
# the CLM5 kernel
# -------------------------------------------------------------------------------------------
def _clm5_kernel(b0, b1, th, plo, pspan, plog, ix, ts, ws, os_, fp, mon, geo, opts,
                 pools, soc, pool_stocks, scal, flags, stats):  # pragma: no cover - numba
    """Steady state of columns ``b0 <= c < b1``; see :func:`clm5_steady_state`.

    ``opts``: [conservative, inputs_below_bedrock, clip_negative, detect_ill_conditioning,
    conditioning_tolerance, has_w_scaling]. ``scal[c]``: input, respiration, turnover_time,
    soc_stock, solve_error_estimate. ``flags[c]``: model flags; bit 64: non-finite and no
    NaN input seen (the caller checks other forcing variables); bit 128: theta out of
    range. ``stats[c, v, 0/1]``: min/max of the layered variables (NaN skipped).
    """
    L = _L
    G = _fused_G
    P = th.shape[1]
    conservative = opts[0] != 0.0
    below = opts[1] != 0.0
    clip = opts[2] != 0.0
    detect = opts[3] != 0.0
    tol = opts[4]
    has_w = opts[5] != 0.0
    eps = 2.220446049250313e-16
    phys = np.empty(P)
    d = np.empty(_NS)
    lo_m = np.empty(L)
    di_m = np.empty(L)
    up_m = np.empty(L)
    lo1 = np.empty(L)
    di1 = np.empty(L)
    up1 = np.empty(L)
    cnt = np.empty((3, L))
    soil = np.empty(L)
    litter = np.empty(L)
    prof = np.empty(L)
    xz = np.empty(L)
    kb = np.empty(7)
    fr = np.empty(9)
    rf = np.empty(7)
    u = np.empty(4)
    Kg = np.empty((L, 7, G))
    rg = np.empty((L, 7, G))
    xg = np.empty((L, 7, G))
    fg = np.empty((L, 9, G))
    lo_g = np.empty((L, G))
    di_g = np.empty((L, G))
    up_g = np.empty((L, G))
    cp = np.empty((L, 3, G))
    dp = np.empty((L, 3, G))
    ginv = np.empty((L, 3, 3, G))
    y = np.empty((L, 3, G))
    nanin = np.empty(G, dtype=np.bool_)
    for grp in range((b1 - b0 + G - 1) // G):
        c0 = b0 + grp * G
        ng = min(G, b1 - c0)
        for g in range(ng):
            c = c0 + g
            st = stats[c]
            for v in range(4):
                st[v, 0] = math.inf
                st[v, 1] = -math.inf
            fl = 0
            bad = False
            for i in range(P):
                t = th[c, i]
                if t == t and not (t > 0.0 and t < 1.0):
                    fl |= 128
                if t != t:
                    bad = True
                if plog[i]:
                    phys[i] = 10.0 ** (plo[i] + t * pspan[i])
                else:
                    phys[i] = plo[i] + t * pspan[i]
            flags[c] = fl
            q10 = phys[ix[0]]
            lq = math.log(q10) / 10.0
            wsc = phys[ix[1]]
            efold = phys[ix[2]]
            kb[0] = 1.0 / (365.0 * phys[ix[3]])
            kb[1] = 1.0 / (365.0 * phys[ix[4]])
            kb[2] = 1.0 / (365.0 * phys[ix[5]])
            kb[3] = 1.0 / (365.0 * phys[ix[5]])  # L3 turns over with taul2, as in PRODA
            kb[4] = 1.0 / (365.0 * phys[ix[6]])
            kb[5] = 1.0 / (365.0 * phys[ix[7]])
            kb[6] = 1.0 / (365.0 * phys[ix[8]])
            for q in range(9):
                fr[q] = phys[ix[9 + q]]
            beta = phys[ix[18]]
            bio = phys[ix[19]]
            cryo = phys[ix[20]]
            for j in range(L):
                xz[j] = math.exp(-geo[6, j] / efold)
            if _env_means(ts, ws, os_, fp, c, lq, wsc, has_w, soil, litter, st):
                bad = True
            _mean_operator(mon, c, bio, cryo, conservative, geo, d, lo_m, di_m, up_m,
                           lo1, di1, up1, cnt)
            _input_profile(mon, c, beta, below, geo, prof)
            for q in range(4):
                u[q] = _annual_input(mon, c, 3 + q)
            for v in range(mon.shape[1]):
                for m in range(mon.shape[2]):
                    if mon[c, v, m] != mon[c, v, m]:
                        bad = True
            nanin[g] = bad
            for j in range(L):
                e_s = xz[j] * soil[j]
                e_l = xz[j] * litter[j]
                Kg[j, 0, g] = kb[0] * e_s
                Kg[j, 1, g] = kb[1] * e_l
                Kg[j, 2, g] = kb[2] * e_l
                Kg[j, 3, g] = kb[3] * e_l
                Kg[j, 4, g] = kb[4] * e_s
                Kg[j, 5, g] = kb[5] * e_s
                Kg[j, 6, g] = kb[6] * e_s
                lo_g[j, g] = lo1[j]
                di_g[j, g] = di1[j]
                up_g[j, g] = up1[j]
                pj = prof[j] / (geo[3, j] * 365.0)
                for q in range(4):
                    rg[j, q, g] = u[q] * pj
                for q in range(4, 7):
                    rg[j, q, g] = 0.0
                for q in range(9):
                    fg[j, q, g] = fr[q]
        _fused_grp_solve(Kg, lo_g, di_g, up_g, fg, rg, 0.0, xg, cp, dp, ginv, y, ng)
        for g in range(ng):
            c = c0 + g
            # respired fraction of each donor's decomposition flux (CWD respires nothing)
            rf[0] = 0.0
            rf[1] = 1.0 - fg[0, 1, g]
            rf[2] = 1.0 - fg[0, 2, g]
            rf[3] = 1.0 - fg[0, 3, g]
            rf[4] = 1.0 - fg[0, 4, g] - fg[0, 5, g]
            rf[5] = 1.0 - fg[0, 6, g] - fg[0, 7, g]
            rf[6] = 1.0 - fg[0, 8, g]
            total = 0.0
            lo_v = math.inf
            hi_v = -math.inf
            inp = 0.0
            resp = 0.0
            for j in range(L):
                dzj = geo[3, j]
                r = 0.0
                for q in range(7):
                    x = xg[j, q, g]
                    total += x
                    if x < lo_v:
                        lo_v = x
                    if x > hi_v:
                        hi_v = x
                    r += rf[q] * Kg[j, q, g] * x  # of the pools before negatives are zeroed
                resp += r * dzj
                inp += (rg[j, 0, g] + rg[j, 1, g] + rg[j, 2, g] + rg[j, 3, g]) * dzj
            # a NaN parameter marks no data even where that parameter is unused
            finite = math.isfinite(total)
            for i in range(P):
                if th[c, i] != th[c, i]:
                    finite = False
            fl = flags[c]
            sig_neg = False
            if lo_v < 0.0:
                a_lo = abs(lo_v)
                a_hi = abs(hi_v)
                ntol = 1e-9 * (a_hi if a_hi > a_lo else a_lo)
                if ntol != ntol or math.isinf(ntol):
                    ntol = 0.0
                for j in range(L):
                    for q in range(7):
                        x = xg[j, q, g]
                        if x < -ntol:
                            sig_neg = True
                        if x < 0.0 and (clip or x >= -ntol):
                            xg[j, q, g] = 0.0
            if not finite:
                # no data where a NaN was read; else singular (bit 64: the caller looks for
                # NaN in forcing variables the kernel does not read)
                fl |= 1 if nanin[g] else (2 | 64)
            elif sig_neg and not clip:
                fl |= 8
            cond = 0.0
            if not conservative:
                for j in range(L):
                    dzj = geo[3, j]
                    col = dzj * di_g[j, g]
                    if j > 0:
                        col = col + geo[3, j - 1] * up_g[j - 1, g]
                    if j < L - 1:
                        col = col + geo[3, j + 1] * lo_g[j + 1, g]
                    leak = -col
                    if leak < 0.0:
                        leak = 0.0
                    kmin = Kg[j, 1, g]
                    for q in range(2, 7):
                        kq = Kg[j, q, g]
                        if kq < kmin or kq != kq:
                            kmin = kq
                    est = eps * leak / (dzj * (kmin + di_g[j, g]))
                    if est != est:
                        est = 0.0
                    if j == 0 or est > cond:
                        cond = est
                if detect and cond > tol:
                    fl |= 4
            flags[c] = fl
            valid = (fl & 0x3F) == 0
            stock = 0.0
            for q in range(7):
                pool_stocks[c, q] = 0.0
            for j in range(L):
                dzj = geo[3, j]
                for q in range(7):
                    x = xg[j, q, g] if valid else math.nan
                    pools[c, j, q] = x
                    pool_stocks[c, q] += x * dzj
                s = pools[c, j, 4] + pools[c, j, 5] + pools[c, j, 6]
                soc[c, j] = s
                stock += s * dzj
            inp = inp * 365.0 if valid else math.nan
            resp = resp * 365.0 if valid else math.nan
            scal[c, 0] = inp
            scal[c, 1] = resp
            scal[c, 2] = stock / inp
            scal[c, 3] = stock
            scal[c, 4] = math.nan if fl & 1 else cond


_fused_G = 8
if HAVE_NUMBA:
    from xproda.models import fused as _fz

    _jit = {"nogil": True, "error_model": "numpy"}
    _fused_grp_solve = _fz.group_solve
    _diffusivity = jit_kernel(_diffusivity, **_jit)
    _patankar = jit_kernel(_patankar, **_jit)
    _operator = jit_kernel(_operator, **_jit)
    _same_operator = jit_kernel(_same_operator, **_jit)
    _mean_operator = jit_kernel(_mean_operator, **_jit)
    _input_profile = jit_kernel(_input_profile, **_jit)
    _annual_input = jit_kernel(_annual_input, **_jit)
    _env_means = jit_kernel(_env_means, **_jit)
    _clm5_compiled = jit_kernel(_clm5_kernel, **_jit)


def clm5_steady_state(theta, layered, monthly, space, *, conservative=True,
                      inputs_below_bedrock=False, clip_negative=False,
                      detect_ill_conditioning=True, conditioning_tolerance=1e-8,
                      w_scaling=True, threads=None) -> dict:
    """Steady state of the CLM5 model, every stage in one compiled pass (numpy).

    Parameters
    ----------
    theta : ndarray
        ``[n, P]`` normalised parameters (float64), in ``space``'s order.
    layered : sequence of ndarray
        TSOI (K), W_SCALAR, O_SCALAR, FPI_vr (1), each ``[n, 12, 20]`` float32 or float64,
        any strides (:data:`LAYERED_ORDER`).
    monthly : ndarray
        ``[n, 7, 12]`` float64 (:data:`MONTHLY_ORDER`; m, m, layer index, g C m-2 month-1).
    space : ParameterSpace
        The CLM5 parameter space (bounds and transforms).
    conservative, inputs_below_bedrock, clip_negative, detect_ill_conditioning, \
conditioning_tolerance
        The model options (:class:`~xproda.models.base.ModelOptions`).
    w_scaling : bool
        Scale W_SCALAR by the ``w-scaling`` parameter (False: CLM's scalar unchanged).
    threads : int, optional
        Threads (:func:`xproda.models.parallel.kernel_threads`).

    Returns
    -------
    dict
        ``pools`` ``[n, 20, 7]``, ``soc`` ``[n, 20]``, ``pool_stocks`` ``[n, 7]``,
        ``input``, ``respiration``, ``turnover_time``, ``soc_stock``,
        ``solve_error_estimate`` ``[n]``, ``flags`` ``[n]`` int64 (bit 64: non-finite
        without NaN input seen; bit 128: theta outside (0, 1)) and ``stats`` ``[n, 4, 2]``
        (per-column min / max of the layered variables, NaN skipped).
    """
    if not HAVE_NUMBA:  # pragma: no cover
        raise RuntimeError("the fused kernel needs numba; install it or set fused_kernels=False")
    n = theta.shape[0]
    L = _L
    names = space.names
    ix = np.array([names.index(k) for k in CLM5_PARAMETER_SLOTS], dtype=np.int64)
    plo = np.empty(len(names))
    pspan = np.empty(len(names))
    plog = np.zeros(len(names), dtype=np.bool_)
    for i, p in enumerate(space.parameters):
        if p.transform == "linear":
            plo[i], pspan[i] = p.minimum, p.maximum - p.minimum
        else:
            lo, hi = math.log10(p.minimum), math.log10(p.maximum)
            plo[i], pspan[i], plog[i] = lo, hi - lo, True
    opts = np.array([conservative, inputs_below_bedrock, clip_negative,
                     detect_ill_conditioning, conditioning_tolerance, w_scaling], dtype=float)
    out = {
        "pools": np.empty((n, L, 7)),
        "soc": np.empty((n, L)),
        "pool_stocks": np.empty((n, 7)),
    }
    scal = np.empty((n, 5))
    flags = np.empty(n, dtype=np.int64)
    stats = np.empty((n, 4, 2))
    run_blocks(_clm5_compiled, n, theta, plo, pspan, plog, ix, *layered, monthly,
               geometry(), opts, out["pools"], out["soc"], out["pool_stocks"], scal, flags,
               stats, threads=threads)
    for i, k in enumerate(("input", "respiration", "turnover_time", "soc_stock",
                           "solve_error_estimate")):
        out[k] = scal[:, i]
    out["flags"] = flags
    out["stats"] = stats
    return out


# -------------------------------------------------------------------------------------------
# inputs: checks without conversion (the kernel reads float32/float64 views as they are)
# -------------------------------------------------------------------------------------------
def as_array(x, name: str) -> np.ndarray:
    """A numpy view of ``x`` (float32/float64 kept, anything else converted to float64)."""
    import torch

    if isinstance(x, torch.Tensor):
        x = x.detach()
        if x.dtype not in (torch.float32, torch.float64):
            x = x.to(torch.float64)
        a = x.numpy()
    else:
        a = np.asarray(x)
    if a.dtype not in (np.float32, np.float64):
        try:
            a = np.asarray(a, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise TypeError(f"forcing variable {name!r} must be numeric array-like: {err}") \
                from None
    return a


def fused_applicable(theta, forcing) -> bool:
    """Whether :func:`clm5_steady_state` may serve a ``steady_state(theta, forcing)`` call.

    True when numba is importable, the options allow it (``fused_kernels``, ``dtype``
    float64, ``device`` None or CPU) and no input is a tensor that needs a gradient or lives
    on another device than the CPU.
    """
    import torch

    from xproda.options import current

    if not (HAVE_NUMBA and current("fused_kernels") and current("dtype") == "float64"):
        return False
    dev = current("device")
    if dev is not None and torch.device(dev).type != "cpu":
        return False
    grad = torch.is_grad_enabled()
    for v in (theta, *forcing.values()):
        if isinstance(v, torch.Tensor) and (v.device.type != "cpu" or (grad and v.requires_grad)):
            return False
    return True


def prepare_arrays(forcing, n: int | None, required: tuple[str, ...]):
    """Checked numpy views of the kernel's forcing: ``(layered, monthly, n, others)``.

    Shapes, batch sizes and the values of the monthly variables are checked here (same
    rules and messages as :func:`xproda.models.forcing.validate_forcing`); the values of the
    layered variables are checked from the kernel's per-column statistics by
    :func:`check_layered`. ``others``: the forcing variables the kernel does not read
    (validated by the caller).
    """
    from xproda.models import forcing as fmod

    fmod.check_required(forcing, required)
    arrays: dict[str, np.ndarray] = {}
    sizes: dict[str, int] = {}
    for name in LAYERED_ORDER + MONTHLY_ORDER:
        a = as_array(forcing[name], name)
        fmod.check_shape(name, a.shape, fmod.FORCING_SCHEMA[name].shape)
        arrays[name] = a
        sizes[name] = a.shape[0]
    n = fmod.batch_size(sizes, n)
    layered = []
    for name in LAYERED_ORDER:
        a = arrays[name]
        layered.append(np.broadcast_to(a, (n,) + a.shape[1:]) if a.shape[0] != n else a)
    if len({a.dtype for a in layered}) > 1:  # one dtype: fewer compiled variants
        layered = [np.asarray(a, dtype=np.float64) for a in layered]
    monthly = np.empty((n, len(MONTHLY_ORDER), fmod.N_MONTHS))
    for v, name in enumerate(MONTHLY_ORDER):
        a = arrays[name]
        monthly[:, v, :] = a
        lo, hi, inf = fmod.value_range(a)
        non_int = (fmod.FORCING_SCHEMA[name].integer and not inf
                   and bool(np.any((a != np.round(a)) & ~np.isnan(a))))
        fmod.check_range(name, lo, hi, has_inf=inf, non_integer=non_int)
    others = {}
    for name, x in forcing.items():  # variables the kernel does not read: checked all the same
        if name not in fmod.FORCING_SCHEMA or name in arrays:
            continue
        a = as_array(x, name)
        spec = fmod.FORCING_SCHEMA[name]
        fmod.check_shape(name, a.shape, spec.shape)
        fmod.batch_size({**sizes, name: a.shape[0]}, n)
        lo, hi, inf = fmod.value_range(a)
        non_int = (spec.integer and not inf
                   and bool(np.any((a != np.round(a)) & ~np.isnan(a))))
        fmod.check_range(name, lo, hi, has_inf=inf, non_integer=non_int)
        others[name] = a
    return layered, monthly, n, others


def check_layered(stats: np.ndarray) -> None:
    """Check the layered variables' values from the kernel's ``stats`` ``[n, 4, 2]``."""
    from xproda.models import forcing as fmod

    if stats.shape[0] == 0:
        return
    lo = stats[:, :, 0].min(0)
    hi = stats[:, :, 1].max(0)
    for v, name in enumerate(LAYERED_ORDER):
        fmod.check_range(name, float(lo[v]), float(hi[v]),
                         has_inf=bool(math.isinf(lo[v]) and lo[v] < 0
                                      or math.isinf(hi[v]) and hi[v] > 0))
