"""The whole steady state in one compiled pass per column (numba), the no-grad CPU path.

:meth:`xproda.models.clm5.CLM5Model.steady_state` and
:meth:`xproda.models.microbial.MicrobialModel.steady_state` are, in torch, chains of batched
stages: parameters, environmental scalars per month and their annual means, the monthly
transport operators and their mean, the input profile, the structured solve, fluxes, flags
and stocks. Each stage reads and writes ``[n, 12, 20]`` or ``[n, 20, P]`` arrays, so most of
the time goes into memory traffic and into launching small parallel regions -- and the
latter collapse when the machine is shared (spin-waiting OpenMP threads; see
:mod:`xproda.models.parallel`).

Here one serial kernel per model does all of it for a block of columns: a column's forcing
is read once (float32 or float64, C-contiguous or any strided view such as a transposed
``[n, 20, 12]`` array; computed in float64 inside), nothing ``[n, 12, 20]``-sized is
materialised, and the value checks of :func:`xproda.models.forcing.validate_forcing` are
computed on the way (per-column minimum and maximum of every variable read, reduced
afterwards and checked with the same messages in the same order, :func:`check_values`).
The blocks run on :func:`xproda.models.parallel.run_blocks`. :func:`transport_bands`
and :func:`step_profiles` serve the transient runs' compiled path with the same transport
and input-profile stages.

The two kernels share their stages (compiled functions below, inlined into the kernels):
parameters (:func:`_physical`), transport bands and litter inputs (:func:`_column_inputs`),
the staged litter/SOM solve (:func:`xproda.models.fused.group_solve_uniform`: the
parameters' transfer fractions are the same in every layer), the negatives rule,
flags, solve-error estimate and outputs of ``SoilCarbonModel._finish``. They differ in the
environmental scalars (CLM5: mean of monthly products, :func:`_env_means`; microbial:
product of monthly means, :func:`_env_product_means`) and in what follows the litter
(CLM5: the SOM pools of the same solve; microbial: closed-form soil pools per layer).
:func:`steady_state_fused` is the models' common entry (checks, kernel, SteadyState).

The formulas and their order follow the torch stages (:mod:`xproda.models.forcing`,
:mod:`xproda.models.transport`, :mod:`xproda.models.base`, the models' ``_steady_state``);
the two paths agree to ~1e-13 relative, at worst ~7e-12 of a column's largest value on
ill-conditioned columns (tests check 1e-11). Both decide per column whether
to build one transport operator (active layer and bedrock constant over the months) or
twelve, so a column's result never depends on the other columns of the batch (at the level
of rounding; ``solve_error_estimate`` of a closed column, itself rounding noise of order
1e-31, differs by more than that).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping

import numpy as np

from xproda import grid
from xproda.models.fused import HAVE_NUMBA, jit_kernel
from xproda.models.parallel import run_blocks

__all__ = ["clm5_steady_state", "microbial_steady_state", "steady_state_fused",
           "CLM5_PARAMETER_SLOTS", "MICROBIAL_PARAMETER_SLOTS", "MONTHLY_ORDER", "LAYERED_ORDER",
           "geometry", "steady_state_applicable", "prepare_arrays", "check_values", "as_array",
           "transport_bands", "step_profiles"]

#: the [n, 12] forcing variables, stacked in this order into one [n, 7, 12] array
MONTHLY_ORDER = ("ALTMAX", "ALTMAX_LASTYEAR", "nbedrock", "CWD_INPUT", "LITR1_INPUT",
                 "LITR2_INPUT", "LITR3_INPUT")
#: the [n, 12, 20] forcing variables, passed as they are
LAYERED_ORDER = ("TSOI", "W_SCALAR", "O_SCALAR", "FPI_vr")
#: the CLM5 parameters the kernel reads, in the order of its index array
CLM5_PARAMETER_SLOTS = ("q10", "w-scaling", "efolding", "taucwd", "taul1", "taul2", "tau4s1",
                        "tau4s2", "tau4s3", "fcwdl2", "fl1s1", "fl2s1", "fl3s2", "fs1s2",
                        "fs1s3", "fs2s1", "fs2s3", "fs3s1", "beta", "diffus", "cryo")
#: the microbial parameters the kernel reads, in the order of its index array
MICROBIAL_PARAMETER_SLOTS = ("q10", "w_scaling", "tau4cwd", "tau4l1", "tau4l2", "tau4s1",
                             "tau4s2_death", "tau4s2_enz", "tau4s3", "tau4s4", "mm_const_assim",
                             "mm_const_decom", "fcwdl2", "pl1s1", "pl2s1", "pl3s4", "l1_cue",
                             "l2l3_cue", "mic_cue", "pdeath2soc", "beta", "bio", "cryo")

_KELVIN = 273.15
_FILL = 1e-30
_MAX_ALT_CRYO = 2.0
_MAX_DEPTH_CRYO = 3.0
_L = grid.N_LAYERS
_NS = _L + 1


def geometry() -> np.ndarray:
    """Grid constants the kernels use, ``[11, 22]`` float64.

    Rows: ``zisoi`` (interface depths below each layer), ``zsoi`` (node depths),
    ``dz_node``, ``dz``, ``zisoi_top`` (layer tops), ``ZISOI`` at index ``1..20`` for the
    bedrock depth lookup, and ``zsoi`` again for the depth scalar (m); then the weights of
    the harmonic means of the diffusivity at the interfaces (:func:`_operator`): ``w_m``
    (at the top of layer ``j``, ``j >= 1``), ``1 - w_m``, ``w_p`` (at its bottom) and
    ``1 - w_p``, computed as the transport module's per-layer expressions are.
    """
    g = np.zeros((11, 22))
    g[0] = grid.ZISOI[:22]
    g[1] = grid.ZSOI[:22]
    g[2] = grid.DZ_NODE[:22]
    g[3] = grid.DZ[:22]
    g[4, :_L + 1] = grid.ZISOI_TOP[:_L + 1]
    g[5] = grid.ZISOI[:22]
    g[6] = grid.ZSOI[:22]
    for j in range(_L):
        if j >= 1:
            g[7, j] = (g[0, j - 1] - g[1, j - 1]) / g[2, j]
            g[8, j] = 1.0 - g[7, j]
        g[9, j] = (g[1, j + 1] - g[0, j]) / g[2, j + 1]
        g[10, j] = 1.0 - g[9, j]
    return g


# -------------------------------------------------------------------------------------------
# per-column stages (compiled; shared with the microbial kernel)
# -------------------------------------------------------------------------------------------
# rows of the flat scratch of the transport stage (``ow``, ``[_OW_ROWS * _OW]``; every row at
# a compile-time offset, so LLVM proves the rows apart and vectorises the layer loops -- as
# separate arrays they needed a runtime alias check per pair and stayed scalar)
_OW = 24  # row width (>= 21)
_R_D, _R_LOM, _R_DIM, _R_UPM, _R_DM, _R_DP, _R_LO, _R_DI, _R_UP, _R_C0, _R_C1, _R_C2 = range(12)
_OW_ROWS = 12


def _diffusivity(alt, altly, nb, d_bio, d_cryo, geo, ow):  # pragma: no cover - numba
    """:func:`xproda.models.transport.diffusivity` of one month into row ``_R_D`` of ``ow``.

    Branch-free over the layers (selects), so that LLVM vectorises the loop; the discarded
    branch's division may be by zero (IEEE, no exceptions).
    """
    D = _R_D * _OW
    a = max(alt, altly) if not (alt != alt or altly != altly) else math.nan
    missing = a != a or nb != nb
    if missing:
        for i in range(_NS):
            ow[D + i] = math.nan
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
    slope = den > 0.0
    other = d_bio if is_bio else 0.0
    nb1 = nb + 1.0
    for i in range(_NS):
        z = geo[0, i]
        v = d_cryo * (1.0 - (z - a) / den)
        v = 0.0 if v < 0.0 else v
        v = v if slope else 0.0
        v = d_cryo if z < a else v
        v = v if is_cryo else other
        v = v if i + 1.0 <= nb1 else 0.0
        ow[D + i] = _FILL if abs(v) < _FILL else v


def _patankar(pe):  # pragma: no cover - numba
    x = 1.0 - 0.1 * abs(pe)
    if x < 0.0:
        x = 0.0
    x2 = x * x
    return x2 * x2 * x


def _operator(nb, conservative, geo, ow):  # pragma: no cover - numba
    """:func:`xproda.models.transport.monthly_operator` of one month.

    From the diffusivity in row ``_R_D`` of ``ow`` to the bands in rows ``_R_LOM``,
    ``_R_DIM``, ``_R_UPM`` (``[20]`` each). Rows ``_R_DM``/``_R_DP`` take the conductances
    at the top / bottom of each layer (harmonic means of the diffusivity over the node
    spacing), computed in flat loops that LLVM vectorises (the weights come precomputed in
    ``geo`` rows 7-10). Each value goes through the same operations as the per-layer
    expressions of the transport module (``a = -dm``, ``-a - c == dm + dp`` exactly).
    """
    L = _L
    D = _R_D * _OW
    DM = _R_DM * _OW
    DP = _R_DP * _OW
    LO = _R_LOM * _OW
    DI = _R_DIM * _OW
    UP = _R_UPM * _OW
    ow[DM] = 0.0
    for j in range(1, L):
        ow[DM + j] = 1.0 / (geo[8, j] / ow[D + j] + geo[7, j] / ow[D + j - 1]) / geo[2, j]
    for j in range(L):
        ow[DP + j] = 1.0 / (geo[10, j] / ow[D + j] + geo[9, j] / ow[D + j + 1]) / geo[2, j + 1]
    if conservative:
        ow[DI] = ow[DP] / geo[3, 0]
        for j in range(1, L - 1):
            ow[DI + j] = (ow[DM + j] + ow[DP + j]) / geo[3, j]
        ow[DI + L - 1] = ow[DM + L - 1] / geo[3, L - 1]
        for j in range(L - 1):
            ow[UP + j] = -ow[DP + j] / geo[3, j]
        ow[UP + L - 1] = 0.0
        ow[LO] = 0.0
        for j in range(1, L):
            ow[LO + j] = -ow[DM + j] / geo[3, j]
        return
    for j in range(L):
        dm_j = ow[DM + j]
        dp_int = ow[DP + j]
        bottom = j >= nb and j >= 1
        dp_j = dm_j if bottom else dp_int
        pe_m = _FILL / dm_j if j >= 1 else 0.0
        pe_p = 0.0 if bottom else _FILL / dp_int
        a = -(dm_j * _patankar(pe_m) + _FILL)
        c = -(dp_j * _patankar(pe_p) + 0.0)
        dzj = geo[3, j]
        if j == 0:
            ow[DI + j] = -c / dzj
        elif j == L - 1:
            ow[DI + j] = -a / dzj
        else:
            ow[DI + j] = (-a - c) / dzj
        ow[UP + j] = c / dzj if j < L - 1 else 0.0
        ow[LO + j] = a / dzj if j >= 1 else 0.0


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


def _mean_operator(mon, c, bio, cryo, conservative, geo, ow):  # pragma: no cover - numba
    """Mean transport bands over the months (NaN months omitted) of column ``c``.

    Into rows ``_R_LO``, ``_R_DI``, ``_R_UP`` of the flat scratch ``ow`` (see
    :data:`_OW_ROWS`). ``mon[c, 0:3, :]``: ALTMAX, ALTMAX_LASTYEAR, nbedrock. One month is
    built when the three are constant over the months (as
    :func:`xproda.models.transport.mean_operator`); a month equal to the previous one in
    what the operator depends on reuses it. The sums over the months keep their order.
    """
    L = _L
    nm = mon.shape[2]
    const = True
    for v in range(3):
        f0 = mon[c, v, 0]
        for m in range(1, nm):
            x = mon[c, v, m]
            if not (x == f0 or (x != x and f0 != f0)):
                const = False
    months = 1 if const else nm
    for i in range(_R_LO * _OW, _OW_ROWS * _OW):
        ow[i] = 0.0
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
            _diffusivity(a0, a1, nb, d_bio, d_cryo, geo, ow)
            _operator(nb, conservative, geo, ow)
        for j in range(L):  # selects, not branches: the loop vectorises
            x = ow[_R_LOM * _OW + j]
            ok = x == x
            ow[_R_LO * _OW + j] = ow[_R_LO * _OW + j] + x if ok else ow[_R_LO * _OW + j]
            ow[_R_C0 * _OW + j] = ow[_R_C0 * _OW + j] + 1.0 if ok else ow[_R_C0 * _OW + j]
            x = ow[_R_DIM * _OW + j]
            ok = x == x
            ow[_R_DI * _OW + j] = ow[_R_DI * _OW + j] + x if ok else ow[_R_DI * _OW + j]
            ow[_R_C1 * _OW + j] = ow[_R_C1 * _OW + j] + 1.0 if ok else ow[_R_C1 * _OW + j]
            x = ow[_R_UPM * _OW + j]
            ok = x == x
            ow[_R_UP * _OW + j] = ow[_R_UP * _OW + j] + x if ok else ow[_R_UP * _OW + j]
            ow[_R_C2 * _OW + j] = ow[_R_C2 * _OW + j] + 1.0 if ok else ow[_R_C2 * _OW + j]
    for j in range(L):
        n0 = ow[_R_C0 * _OW + j]
        n1 = ow[_R_C1 * _OW + j]
        n2 = ow[_R_C2 * _OW + j]
        ow[_R_LO * _OW + j] = ow[_R_LO * _OW + j] / n0 if n0 > 0 else math.nan
        ow[_R_DI * _OW + j] = ow[_R_DI * _OW + j] / n1 if n1 > 0 else math.nan
        ow[_R_UP * _OW + j] = ow[_R_UP * _OW + j] / n2 if n2 > 0 else math.nan


def _bands_kernel(b0, b1, bio, cryo, alt, alt_ly, nb, conservative, geo, lo, di,
                  up):  # pragma: no cover - numba
    """Monthly transport bands of columns ``b0 <= c < b1`` (see :func:`transport_bands`)."""
    ow = np.empty(_OW_ROWS * _OW)
    for c in range(b0, b1):
        d_bio = bio[c] / 365.0
        d_cryo = cryo[c] / 365.0
        for m in range(alt.shape[1]):
            _diffusivity(alt[c, m], alt_ly[c, m], nb[c, m], d_bio, d_cryo, geo, ow)
            _operator(nb[c, m], conservative, geo, ow)
            for j in range(_L):
                lo[c, m, j] = ow[_R_LOM * _OW + j]
                di[c, m, j] = ow[_R_DIM * _OW + j]
                up[c, m, j] = ow[_R_UPM * _OW + j]


def transport_bands(bio: np.ndarray, cryo: np.ndarray, altmax: np.ndarray,
                    altmax_lastyear: np.ndarray, nbedrock: np.ndarray, *,
                    conservative: bool = True, threads: int | None = None):
    """Transport bands of every column and month, compiled: ``(lower, diag, upper)``.

    :func:`xproda.models.transport.monthly_operator` of
    :func:`~xproda.models.transport.diffusivity` (the same operations, value by value, so
    the same bits) without autograd, for the transient runs' CPU path.

    Parameters
    ----------
    bio, cryo : ndarray
        ``[n]`` bioturbation and cryoturbation diffusivity (m2 yr-1).
    altmax, altmax_lastyear, nbedrock : ndarray
        ``[n, B]`` active-layer thickness this and last year (m) and 1-based bedrock layer.
    conservative : bool, keyword-only
        The flux-consistent stencil below bedrock.
    threads : int, optional
        Threads (:func:`xproda.models.parallel.kernel_threads`).

    Returns
    -------
    tuple of ndarray
        ``[n, B, 20]`` float64 each (day-1).
    """
    if not HAVE_NUMBA:  # pragma: no cover
        raise RuntimeError("transport_bands needs numba")
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    alt = f64(altmax)
    n, B = alt.shape
    out = tuple(np.empty((n, B, _L)) for _ in range(3))
    bio, cryo = (f64(np.broadcast_to(np.asarray(v, dtype=np.float64).reshape(-1), (n,)))
                 for v in (bio, cryo))
    ly, nb = (f64(np.broadcast_to(v, (n, B))) for v in (altmax_lastyear, nbedrock))
    run_blocks(_bands_compiled, n, bio, cryo, alt, ly, nb, bool(conservative), geometry(),
               *out, threads=threads)
    return out


def _profiles_kernel(b0, b1, g, alt_ly, nb, truncate, scale, out):  # pragma: no cover
    """Input profiles of columns ``b0 <= c < b1`` (see :func:`step_profiles`)."""
    B = alt_ly.shape[1]
    for c in range(b0, b1):
        for b in range(B):
            if not (alt_ly[c, b] > 0.0):  # frozen (or no data): all input into layer 1
                out[c, b, 0] = 1.0 * scale[0]
                for j in range(1, _L):
                    out[c, b, j] = 0.0 * scale[j]
                continue
            prof = out[c, b]
            for j in range(_L):
                prof[j] = g[c, j]
            _truncate_normalise(prof, nb[c, b], truncate)
            for j in range(_L):
                prof[j] = prof[j] * scale[j]


def step_profiles(weights: np.ndarray, altmax_lastyear: np.ndarray, nbedrock: np.ndarray | None,
                  scale: np.ndarray, *, threads: int | None = None) -> np.ndarray:
    """Input profiles of every column and stored step, compiled: ``[n, B, 20]``.

    :func:`xproda.models.forcing.profile_from_weights` of the Jackson weights ``weights``
    ``[n, 20]`` for each step's thaw state (``altmax_lastyear [n, B] > 0``) and bedrock
    layer (``nbedrock [n, B]``; None: inputs below bedrock too), times ``scale`` ``[20]``
    (e.g. per day and per metre of layer). The same operations value by value except the
    normalising sum, taken in layer order (torch's reduction may round its last bit
    differently). For the transient runs' CPU path: no OpenMP regions.
    """
    if not HAVE_NUMBA:  # pragma: no cover
        raise RuntimeError("step_profiles needs numba")
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    ly = f64(altmax_lastyear)
    n, B = ly.shape
    g = f64(np.broadcast_to(weights, (n, _L)))
    nb = f64(np.broadcast_to(np.nan if nbedrock is None else nbedrock, (n, B)))
    out = np.empty((n, B, _L))
    run_blocks(_profiles_compiled, n, g, ly, nb, nbedrock is not None, f64(scale), out,
               threads=threads)
    return out


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
    top = beta ** (100.0 * geo[4, 0])
    for j in range(_L):
        # a layer's top is the bottom of the one above (the same number): one power each
        bottom = beta ** (100.0 * geo[0, j])
        prof[j] = top - bottom
        top = bottom if geo[4, j + 1] == geo[0, j] else beta ** (100.0 * geo[4, j + 1])
    _truncate_normalise(prof, nbmin, not below_bedrock)


def _truncate_normalise(prof, nb, truncate):  # pragma: no cover - numba
    """Jackson weights ``prof[20]`` into an input profile, in place: with ``truncate``
    zero below bedrock layer ``nb`` (1-based; NaN: no data, all NaN), then divided by their
    sum taken in layer order (:func:`xproda.models.forcing.profile_from_weights`)."""
    s = 0.0
    for j in range(_L):
        v = prof[j]
        if truncate:
            if nb != nb:
                v = math.nan
            elif not (j + 1.0 <= nb):
                v = 0.0
        prof[j] = v
        s += v
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


def _flat_block(a):  # pragma: no cover - numba
    """Whether each column's ``[12, 20]`` block of ``a`` is contiguous, C order."""
    return a.strides[2] == a.itemsize and a.strides[1] == _L * a.itemsize


def _scan_layered(ts, ws, os_, fp, c, lq, wsc, has_w, product, wk, buf, ex):  # pragma: no cover
    """Monthly sums of the environmental scalars of column ``c`` per layer, into ``wk``.

    ``wk``: ``[17 * 20]``, see :func:`_scan_flat`; ``ex``: ``[12 * 20]`` scratch. A column
    whose ``[12, 20]`` block is contiguous (``[n, 12, 20]`` arrays, C order) is read in
    place as one flat vector (:func:`xproda.models.fused.column_view`, any dtype); other
    layouts (e.g. transposed ``[n, 20, 12]`` arrays) are first copied, column ``c`` of each
    variable, into ``buf`` ``[4, 12 * 20]`` (float64). Every layout gives the same results
    bit for bit.
    """
    nm = ts.shape[1]
    size = nm * _L
    if _flat_block(ts) and _flat_block(ws) and _flat_block(os_) and _flat_block(fp):
        _scan_flat(column_view(ts, c, size), column_view(ws, c, size),
                   column_view(os_, c, size), column_view(fp, c, size), nm, lq, wsc, has_w,
                   product, wk, ex)
        return
    for m in range(nm):
        for j in range(_L):
            buf[0, m * _L + j] = ts[c, m, j]
            buf[1, m * _L + j] = ws[c, m, j]
            buf[2, m * _L + j] = os_[c, m, j]
            buf[3, m * _L + j] = fp[c, m, j]
    _scan_flat(buf[0], buf[1], buf[2], buf[3], nm, lq, wsc, has_w, product, wk, ex)


def _scan_flat(ts, ws, os_, fp, nm, lq, wsc, has_w, product, wk, ex):  # pragma: no cover
    """:func:`_scan_layered` of one column given as flat ``[nm * 20]`` vectors (month-major).

    Two passes. First the temperature scalar of every month and layer into ``ex``, one flat
    loop of :func:`xproda.models.fused.vexp` (branch-free): LLVM vectorises and interleaves
    it, so several ``exp`` evaluations -- each a long chain of dependent multiply-adds --
    overlap (inside the month loop below, at 5 vectors per month, they ran one after the
    other: 3.7 ns per value, now ~1.5). Then months outside, layers inside: every statement
    is per layer, so the loop over the 20 layers is free of cross-iteration dependencies and
    the sums over the months keep their order (results equal a month-by-month scalar loop
    bit for bit). ``wk`` is flat, ``[17 * 20]``, row ``r`` at ``r * 20``: with compile-time
    offsets LLVM proves the rows apart and vectorises the layer loop (with a 2-D scratch it
    needed a runtime alias check per row pair and stayed scalar). Rows 0-3 sums and 4-7
    counts of the non-NaN values; for the CLM5 model (``product`` False) of
    ``xi_T xi_W xi_O`` (row 0) and ``... xi_N`` (row 1), for the microbial model of
    ``xi_T``, ``xi_W``, ``xi_O``, ``xi_N`` apart; row 8 counts NaN read; rows 9-12 / 13-16
    the minimum / maximum (NaN skipped) of the four variables.
    """
    L = _L
    off = -(_KELVIN + 25.0) * lq
    scale = has_w or product
    for i in range(nm * L):
        ex[i] = vexp(float(ts[i]) * lq + off)
    for i in range(9 * L):
        wk[i] = 0.0
    for i in range(9 * L, 13 * L):
        wk[i] = math.inf
    for i in range(13 * L, 17 * L):
        wk[i] = -math.inf
    for m in range(nm):
        b = m * L
        for j in range(L):
            t = float(ts[b + j])
            w = float(ws[b + j])
            o = float(os_[b + j])
            f = float(fp[b + j])
            wk[8 * L + j] += (t != t) + (w != w) + (o != o) + (f != f)
            lo = wk[9 * L + j]
            wk[9 * L + j] = t if t < lo else lo
            hi = wk[13 * L + j]
            wk[13 * L + j] = t if t > hi else hi
            lo = wk[10 * L + j]
            wk[10 * L + j] = w if w < lo else lo
            hi = wk[14 * L + j]
            wk[14 * L + j] = w if w > hi else hi
            lo = wk[11 * L + j]
            wk[11 * L + j] = o if o < lo else lo
            hi = wk[15 * L + j]
            wk[15 * L + j] = o if o > hi else hi
            lo = wk[12 * L + j]
            wk[12 * L + j] = f if f < lo else lo
            hi = wk[16 * L + j]
            wk[16 * L + j] = f if f > hi else hi
            xt = ex[b + j]
            xw = wsc * w if scale else w
            xw = 1.0 if scale and xw > 1.0 else xw
            if product:
                ok = xt == xt
                wk[j] += xt if ok else 0.0
                wk[4 * L + j] += 1.0 if ok else 0.0
                ok = xw == xw
                wk[L + j] += xw if ok else 0.0
                wk[5 * L + j] += 1.0 if ok else 0.0
                ok = o == o
                wk[2 * L + j] += o if ok else 0.0
                wk[6 * L + j] += 1.0 if ok else 0.0
                ok = f == f
                wk[3 * L + j] += f if ok else 0.0
                wk[7 * L + j] += 1.0 if ok else 0.0
            else:
                two = xt * xw * o
                lit = two * f
                ok = two == two
                wk[j] += two if ok else 0.0
                wk[4 * L + j] += 1.0 if ok else 0.0
                ok = lit == lit
                wk[L + j] += lit if ok else 0.0
                wk[5 * L + j] += 1.0 if ok else 0.0


def _scan_stats(wk, stats):  # pragma: no cover - numba
    """Fold the per-layer minimum / maximum of :func:`_scan_layered` into ``stats[v, 0/1]``;
    return whether a NaN was read."""
    L = _L
    nan = False
    for j in range(L):
        nan = nan or wk[8 * L + j] > 0
        for v in range(4):
            if wk[(9 + v) * L + j] < stats[v, 0]:
                stats[v, 0] = wk[(9 + v) * L + j]
            if wk[(13 + v) * L + j] > stats[v, 1]:
                stats[v, 1] = wk[(13 + v) * L + j]
    return nan


def _env_means(ts, ws, os_, fp, c, lq, wsc, has_w, soil, litter, stats, wk, buf,
               ex):  # pragma: no cover
    """Annual means (NaN months omitted) of ``xi_T xi_W xi_O`` and ``... xi_N``, ``[20]``.

    The CLM5 model's mean of monthly products. Also updates ``stats`` (the minimum /
    maximum of the four layered forcing variables, NaN skipped). Returns whether a NaN was
    read. ``wk``, ``buf``, ``ex``: scratch (:func:`_scan_layered`).
    """
    L = _L
    _scan_layered(ts, ws, os_, fp, c, lq, wsc, has_w, False, wk, buf, ex)
    for j in range(L):
        soil[j] = wk[j] / wk[4 * L + j] if wk[4 * L + j] > 0 else math.nan
        litter[j] = wk[L + j] / wk[5 * L + j] if wk[5 * L + j] > 0 else math.nan
    return _scan_stats(wk, stats)


def _env_product_means(ts, ws, os_, fp, c, lq, wsc, env, stats, wk, buf,
                       ex):  # pragma: no cover
    """Annual means (NaN months omitted) of ``xi_T``, ``xi_W``, ``xi_O``, ``xi_N`` apart.

    The microbial model's product of monthly means: ``env[0..3, j]``. Also updates
    ``stats``. Returns whether a NaN was read. ``wk``, ``buf``, ``ex``: scratch
    (:func:`_scan_layered`).
    """
    L = _L
    _scan_layered(ts, ws, os_, fp, c, lq, wsc, True, True, wk, buf, ex)
    for r in range(4):
        for j in range(L):
            n = wk[(4 + r) * L + j]
            env[r, j] = wk[r * L + j] / n if n > 0 else math.nan
    return _scan_stats(wk, stats)


def _column_start(th, c, plo, pspan, plog, phys, st, flags):  # pragma: no cover - numba
    """Start column ``c``: reset its statistics ``st``, map its parameters into ``phys``,
    set its flags (bit 128 for theta outside (0, 1)); return whether theta has a NaN."""
    for v in range(st.shape[0]):
        st[v, 0] = math.inf
        st[v, 1] = -math.inf
    fl, bad = _physical(th, c, plo, pspan, plog, phys)
    flags[c] = fl
    return bad


def _physical(th, c, plo, pspan, plog, phys):  # pragma: no cover - numba
    """Physical parameters of column ``c`` into ``phys``; returns ``(flags, nan)``.

    ``flags``: 128 where a finite theta lies outside (0, 1) (the caller raises the torch
    path's error); ``nan``: a theta is NaN (no data).
    """
    fl = 0
    nan = False
    for i in range(th.shape[1]):
        t = th[c, i]
        if t == t and not (t > 0.0 and t < 1.0):
            fl |= 128
        if t != t:
            nan = True
        phys[i] = _to_physical(t, plo[i], pspan[i], plog[i])
    return fl, nan


def _to_physical(t, lo, span, log):  # pragma: no cover - numba
    """:meth:`xproda.models.parameters.Parameter.to_physical` of one value."""
    if log:
        return 10.0 ** (lo + t * span)
    return lo + t * span


def _column_inputs(mon, c, g, bio, cryo, beta, conservative, below, geo, ow, prof, u, lo_g,
                   di_g, up_g, rg):  # pragma: no cover - numba
    """Transport bands and litter inputs of column ``c`` into slot ``g`` of the group arrays.

    ``lo_g``/``di_g``/``up_g[:, g]``: :func:`_mean_operator`; ``rg[:, 0:4, g]``: litter
    inputs per layer (g C m-3 day-1, :func:`_input_profile` and :func:`_annual_input`); the
    other pools' inputs stay 0 (the group scratch starts zeroed and the solve only reads
    them). ``ow`` ``[_OW_ROWS * _OW]``, ``prof`` ``[20]``, ``u`` ``[4]``: scratch. (NaN in
    the monthly variables: :func:`_monthly_column`.)
    """
    _mean_operator(mon, c, bio, cryo, conservative, geo, ow)
    _input_profile(mon, c, beta, below, geo, prof)
    for q in range(4):
        u[q] = _annual_input(mon, c, 3 + q)
    for j in range(_L):
        lo_g[j, g] = ow[_R_LO * _OW + j]
        di_g[j, g] = ow[_R_DI * _OW + j]
        up_g[j, g] = ow[_R_UP * _OW + j]
        pj = prof[j] / (geo[3, j] * 365.0)
        for q in range(4):
            rg[j, q, g] = u[q] * pj


def _monthly_column(mon, c, out, st):  # pragma: no cover - numba
    """Column ``c`` of the seven monthly variables (a tuple of ``[n, 12]`` arrays, any
    strides, :data:`MONTHLY_ORDER`) into ``out[0, v, m]`` (float64).

    Also their minimum / maximum (NaN skipped) into ``st[4 + v, 0/1]``; returns
    ``(nan, non_integer)``: whether a value is NaN (no data), and whether nbedrock holds a
    value that is not an integer (the checks of
    :func:`xproda.models.forcing.check_array_values`, made on the way instead of in passes
    over the arrays before the kernel).
    """
    a = mon[0]
    b = mon[1]
    d = mon[2]
    e = mon[3]
    f = mon[4]
    g = mon[5]
    h = mon[6]
    for m in range(out.shape[2]):
        out[0, 0, m] = a[c, m]
        out[0, 1, m] = b[c, m]
        out[0, 2, m] = d[c, m]
        out[0, 3, m] = e[c, m]
        out[0, 4, m] = f[c, m]
        out[0, 5, m] = g[c, m]
        out[0, 6, m] = h[c, m]
    nan = False
    non_integer = False
    for v in range(7):
        lo = st[4 + v, 0]
        hi = st[4 + v, 1]
        for m in range(out.shape[2]):
            x = out[0, v, m]
            nan = nan | (x != x)
            lo = x if x < lo else lo
            hi = x if x > hi else hi
        st[4 + v, 0] = lo
        st[4 + v, 1] = hi
    for m in range(out.shape[2]):
        x = out[0, 2, m]
        if x == x and not math.isinf(x) and x != math.floor(x):
            non_integer = True
    return nan, non_integer


def _clip_negatives(x, clip):  # pragma: no cover - numba
    """Negative pools of one column ``x`` ``[20, P]``, as :meth:`SoilCarbonModel._finish`.

    Zeroes negatives (``clip``) or those within 1e-9 of the column's largest magnitude;
    returns whether one beyond that exists (significant).
    """
    lo_v = math.inf
    hi_v = -math.inf
    for j in range(x.shape[0]):
        for q in range(x.shape[1]):
            v = x[j, q]
            if v < lo_v:
                lo_v = v
            if v > hi_v:
                hi_v = v
    if not lo_v < 0.0:
        return False
    a_lo = abs(lo_v)
    a_hi = abs(hi_v)
    ntol = 1e-9 * (a_hi if a_hi > a_lo else a_lo)
    if ntol != ntol or math.isinf(ntol):
        ntol = 0.0
    sig_neg = False
    for j in range(x.shape[0]):
        for q in range(x.shape[1]):
            v = x[j, q]
            if v < -ntol:
                sig_neg = True
            if v < 0.0 and (clip or v >= -ntol):
                x[j, q] = 0.0
    return sig_neg


def _finite_flags(fl, finite, nanin, sig_neg, clip):  # pragma: no cover - numba
    """Flags of :meth:`SoilCarbonModel._finish` from finiteness and negatives.

    Not finite: no data where a NaN was read, else singular (bit 64: the caller looks for
    NaN in the forcing variables the kernel does not read).
    """
    if not finite:
        fl |= 1 if nanin else (2 | 64)
    elif sig_neg and not clip:
        fl |= 8
    return fl


def _solve_error(lo, di, up, K, q1, geo):  # pragma: no cover - numba
    """:meth:`SoilCarbonModel._conditioning` of one column; ``K[:, 1:q1]``: its ``kmin``."""
    eps = 2.220446049250313e-16
    cond = 0.0
    for j in range(_L):
        dzj = geo[3, j]
        col = dzj * di[j]
        if j > 0:
            col = col + geo[3, j - 1] * up[j - 1]
        if j < _L - 1:
            col = col + geo[3, j + 1] * lo[j + 1]
        leak = -col
        if leak < 0.0:
            leak = 0.0
        kmin = K[j, 1]
        for q in range(2, q1):
            kq = K[j, q]
            if kq < kmin or kq != kq:
                kmin = kq
        est = eps * leak / (dzj * (kmin + di[j]))
        if est != est:
            est = 0.0
        if j == 0 or est > cond:
            cond = est
    return cond


def _finish_column(x, c, fl, inp, resp, cond, nsoil, geo, pools, soc, pool_stocks,
                   scal):  # pragma: no cover - numba
    """Outputs of column ``c`` from its pools ``x`` ``[20, P]`` and flags ``fl``.

    As :meth:`SoilCarbonModel._finish`: NaN unless valid, ``soc`` the sum of the last
    ``nsoil`` pools, stocks; ``scal[c]``: input, respiration (per day, summed over the
    layers), turnover_time, soc_stock, solve_error_estimate.
    """
    valid = (fl & 0x3F) == 0
    npool = x.shape[1]
    stock = 0.0
    for q in range(npool):
        pool_stocks[c, q] = 0.0
    for j in range(_L):
        dzj = geo[3, j]
        for q in range(npool):
            v = x[j, q] if valid else math.nan
            pools[c, j, q] = v
            pool_stocks[c, q] += v * dzj
        s = pools[c, j, npool - nsoil]
        for q in range(npool - nsoil + 1, npool):
            s = s + pools[c, j, q]
        soc[c, j] = s
        stock += s * dzj
    inp = inp * 365.0 if valid else math.nan
    resp = resp * 365.0 if valid else math.nan
    scal[c, 0] = inp
    scal[c, 1] = resp
    scal[c, 2] = stock / inp
    scal[c, 3] = stock
    scal[c, 4] = math.nan if fl & 1 else cond


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
    range; bit 256: nbedrock not an integer. ``stats[c, v, 0/1]``: min/max of the layered
    (``v < 4``), then the monthly variables (NaN skipped).
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
    phys = np.empty(P)
    ow = np.empty(_OW_ROWS * _OW)
    prof = np.empty(L)
    soil = np.empty(L)
    wk = np.empty(17 * L)
    buf = np.empty((4, ts.shape[1] * L))
    ex = np.empty(ts.shape[1] * L)
    mcol = np.empty((1, len(mon), 12))
    litter = np.empty(L)
    xz = np.empty(L)
    kb = np.empty(7)
    fr = np.empty(9)
    rf = np.empty(7)
    u = np.empty(4)
    S, Kg, rg, xg, fg, lo_g, di_g, up_g = _group_scratch()
    nanin = np.empty(G, dtype=np.bool_)
    thnan = np.empty(G, dtype=np.bool_)
    for grp in range((b1 - b0 + G - 1) // G):
        c0 = b0 + grp * G
        ng = min(G, b1 - c0)
        for g in range(ng):
            c = c0 + g
            st = stats[c]
            bad = _column_start(th, c, plo, pspan, plog, phys, st, flags)
            thnan[g] = bad
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
            if _env_means(ts, ws, os_, fp, c, lq, wsc, has_w, soil, litter, st, wk, buf, ex):
                bad = True
            nan_m, non_integer = _monthly_column(mon, c, mcol, st)
            if non_integer:
                flags[c] |= 256
            nanin[g] = bad or nan_m
            _column_inputs(mcol, 0, g, bio, cryo, beta, conservative, below, geo, ow, prof, u,
                           lo_g, di_g, up_g, rg)
            for q in range(9):  # column-constant: layer 0's rows (group_solve_uniform)
                fg[0, q, g] = fr[q]
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
        _fused_grp_solve_uniform(S)
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
            inp = 0.0
            resp = 0.0
            for j in range(L):
                dzj = geo[3, j]
                r = 0.0
                for q in range(7):
                    x = xg[j, q, g]
                    total += x
                    r += rf[q] * Kg[j, q, g] * x  # of the pools before negatives are zeroed
                resp += r * dzj
                inp += (rg[j, 0, g] + rg[j, 1, g] + rg[j, 2, g] + rg[j, 3, g]) * dzj
            # a NaN parameter marks no data even where that parameter is unused
            finite = math.isfinite(total) and not thnan[g]
            xc = xg[:, :, g]
            sig_neg = _clip_negatives(xc, clip)
            fl = _finite_flags(flags[c], finite, nanin[g], sig_neg, clip)
            cond = 0.0
            if not conservative:
                cond = _solve_error(lo_g[:, g], di_g[:, g], up_g[:, g], Kg[:, :, g], 7, geo)
                if detect and cond > tol:
                    fl |= 4
            flags[c] = fl
            _finish_column(xc, c, fl, inp, resp, cond, 3, geo, pools, soc, pool_stocks, scal)


# -------------------------------------------------------------------------------------------
# the microbial kernel
# -------------------------------------------------------------------------------------------
def _microbial_kernel(b0, b1, th, plo, pspan, plog, ix, ts, ws, os_, fp, mon, geo, opts,
                      pools, soc, pool_stocks, scal, flags, stats):  # pragma: no cover - numba
    """Steady state of columns ``b0 <= c < b1``; see :func:`microbial_steady_state`.

    ``ix``: theta slots of :data:`MICROBIAL_PARAMETER_SLOTS`. ``opts``: [conservative,
    inputs_below_bedrock, clip_negative, detect_ill_conditioning, conditioning_tolerance,
    min_soc_to_mic_ratio, enzyme_turnover_index, efolding]. Outputs as :func:`_clm5_kernel`.

    The litter pools are solved as the CLM5 litter (the shared group solve; its SOM part
    gets unit rates and no input, a cheap well-conditioned system whose result is unused),
    then the soil pools in closed form per layer (:meth:`MicrobialModel._steady_state`).
    """
    L = _L
    G = _fused_G
    P = th.shape[1]
    conservative = opts[0] != 0.0
    below = opts[1] != 0.0
    clip = opts[2] != 0.0
    detect = opts[3] != 0.0
    tol = opts[4]
    min_ratio = opts[5]
    eti = int(opts[6])
    efold = opts[7]
    day = 365.0
    phys = np.empty(P)
    ow = np.empty(_OW_ROWS * _OW)
    prof = np.empty(L)
    env = np.empty((4, L))
    wk = np.empty(17 * L)
    buf = np.empty((4, ts.shape[1] * L))
    ex = np.empty(ts.shape[1] * L)
    mcol = np.empty((1, len(mon), 12))
    xz = np.empty(L)
    u = np.empty(4)
    col = np.empty((L, 8))
    S, Kg, rg, xg, fg, lo_g, di_g, up_g = _group_scratch()
    fg[:] = 0.0
    xig = np.empty((L, G))
    pg = np.empty((P + 1, G))
    nanin = np.empty(G, dtype=np.bool_)
    thnan = np.empty(G, dtype=np.bool_)
    for j in range(L):
        xz[j] = math.exp(-geo[6, j] / efold)
    for grp in range((b1 - b0 + G - 1) // G):
        c0 = b0 + grp * G
        ng = min(G, b1 - c0)
        for g in range(ng):
            c = c0 + g
            st = stats[c]
            bad = _column_start(th, c, plo, pspan, plog, phys, st, flags)
            thnan[g] = bad
            for i in range(P):
                pg[i, g] = phys[i]
            # enzyme turnover time: the configured theta slot, mapped as tau4s3
            i_s3 = ix[8]
            pg[P, g] = _to_physical(th[c, eti], plo[i_s3], pspan[i_s3], plog[i_s3])
            lq = math.log(phys[ix[0]]) / 10.0
            wsc = phys[ix[1]]
            if _env_product_means(ts, ws, os_, fp, c, lq, wsc, env, st, wk, buf, ex):
                bad = True
            nan_m, non_integer = _monthly_column(mon, c, mcol, st)
            if non_integer:
                flags[c] |= 256
            nanin[g] = bad or nan_m
            _column_inputs(mcol, 0, g, phys[ix[21]], phys[ix[22]], phys[ix[20]],
                           conservative, below, geo, ow, prof, u, lo_g, di_g, up_g, rg)
            t_cwd = day * phys[ix[2]]
            t_l1 = day * phys[ix[3]]
            t_l2 = day * phys[ix[4]]
            f2 = phys[ix[12]]
            for j in range(L):
                xi = env[0, j] * env[1, j] * env[2, j] * xz[j]
                xin = xi * env[3, j]
                xig[j, g] = xi
                Kg[j, 0, g] = xi / t_cwd
                Kg[j, 1, g] = xin / t_l1
                Kg[j, 2, g] = xin / t_l2
                Kg[j, 3, g] = Kg[j, 2, g]
                Kg[j, 4, g] = 1.0
                Kg[j, 5, g] = 1.0
                Kg[j, 6, g] = 1.0
            fg[0, 0, g] = f2  # column-constant: layer 0's row (group_solve_uniform)
        _fused_grp_solve_uniform(S)
        for g in range(ng):
            c = c0 + g
            # litter: negatives zeroed (clip) or within 1e-9 of the largest finite magnitude
            amax = 0.0
            for j in range(L):
                for q in range(4):
                    a = abs(xg[j, q, g])
                    if a > amax and a < math.inf:
                        amax = a
            ltol = 1e-9 * amax
            for j in range(L):
                for q in range(4):
                    x = xg[j, q, g]
                    if x < 0.0 and (clip or x >= -ltol):
                        x = 0.0
                    col[j, q] = x
            pl1 = pg[ix[13], g]
            pl2 = pg[ix[14], g]
            pl3 = pg[ix[15], g]
            cue1 = pg[ix[16], g]
            cue23 = pg[ix[17], g]
            ecue = pg[ix[18], g]
            pd = pg[ix[19], g]
            k_d = 1.0 / (day * pg[ix[6], g])
            k_e = 1.0 / (day * pg[ix[7], g])
            k_z = 1.0 / (day * pg[P, g])
            v_u = 1.0 / (day * pg[ix[5], g])
            v_s = 1.0 / (day * pg[ix[9], g])
            k_a = pg[ix[10], g]
            k_dd = pg[ix[11], g]
            # soil part: closed form per layer
            negative = False
            inp = 0.0
            resp = 0.0
            total_stock = 0.0
            mic_stock = 0.0
            total = 0.0
            for j in range(L):
                dzj = geo[3, j]
                xi = xig[j, g]
                d1 = Kg[j, 1, g] * col[j, 1]
                d2 = Kg[j, 2, g] * col[j, 2]
                d3 = Kg[j, 3, g] * col[j, 3]
                u_soc = pl3 * d3
                u_doc = pl1 * d1 + pl2 * d2
                u_mic = (1 - pl1) * cue1 * d1 + (1 - pl2) * cue23 * d2 + (1 - pl3) * cue23 * d3
                # no supply (e.g. below bedrock with truncated inputs): no soil C
                no_supply = u_soc + u_doc + u_mic == 0
                if no_supply:
                    u_soc = 1.0
                    u_doc = 1.0
                    u_mic = 1.0
                kde = (k_d + k_e) * xi
                mic = (u_mic + ecue * (u_doc + u_soc)) / ((1 - ecue) * kde)
                enz = (k_e / k_z) * mic
                supply = u_soc + pd * k_d * xi * mic
                socj = k_dd * xi * supply / (v_s * xi * enz - supply)
                doc = k_a * xi * (kde * mic - u_mic) / ((ecue * v_u * xi - kde) * mic + u_mic)
                if no_supply:
                    doc = 0.0
                    mic = 0.0
                    enz = 0.0
                    socj = 0.0
                col[j, 4] = doc
                col[j, 5] = mic
                col[j, 6] = enz
                col[j, 7] = socj
                if doc < 0.0 or mic < 0.0 or enz < 0.0 or socj < 0.0:
                    negative = True
                total_stock += (doc + mic + enz + socj) * dzj
                mic_stock += mic * dzj
                uptake = v_u * xi * mic * doc / (k_a * xi + doc)
                r = ((1 - pl1) * (1 - cue1) * d1 + (1 - pl2) * (1 - cue23) * d2
                     + (1 - pl3) * (1 - cue23) * d3 + (1 - ecue) * uptake)
                resp += r * dzj
                inp += (rg[j, 0, g] + rg[j, 1, g] + rg[j, 2, g] + rg[j, 3, g]) * dzj
                for q in range(8):
                    total += col[j, q]
            low = total_stock < min_ratio * mic_stock and not negative
            # a NaN parameter marks no data even where that parameter is unused
            finite = math.isfinite(total) and not thnan[g]
            sig_neg = _clip_negatives(col, clip)
            fl = _finite_flags(flags[c], finite, nanin[g], sig_neg, clip)
            cond = 0.0
            if not conservative:
                cond = _solve_error(lo_g[:, g], di_g[:, g], up_g[:, g], Kg[:, :, g], 4, geo)
                if detect and cond > tol:
                    fl |= 4
            if finite:
                if negative:
                    fl |= 8
                if low:
                    fl |= 16
            flags[c] = fl
            _finish_column(col, c, fl, inp, resp, cond, 4, geo, pools, soc, pool_stocks, scal)


if HAVE_NUMBA:
    from xproda.models import fused as _fz

    vexp = _fz.vexp
    column_view = _fz.column_view
    _jit = {"nogil": True, "error_model": "numpy"}
    _fused_grp_solve_uniform = _fz.group_solve_uniform
    _fused_G = _fz.GROUP_SIZE
    _group_scratch = _fz.group_scratch
    _diffusivity = jit_kernel(_diffusivity, **_jit)
    _patankar = jit_kernel(_patankar, **_jit)
    _operator = jit_kernel(_operator, **_jit)
    _same_operator = jit_kernel(_same_operator, **_jit)
    _mean_operator = jit_kernel(_mean_operator, **_jit)
    _truncate_normalise = jit_kernel(_truncate_normalise, inline="always", **_jit)
    _input_profile = jit_kernel(_input_profile, **_jit)
    _annual_input = jit_kernel(_annual_input, **_jit)
    _flat_block = jit_kernel(_flat_block, inline="always", **_jit)
    _scan_flat = jit_kernel(_scan_flat, **_jit)
    _scan_layered = jit_kernel(_scan_layered, **_jit)
    _scan_stats = jit_kernel(_scan_stats, **_jit)
    _env_means = jit_kernel(_env_means, inline="always", **_jit)
    _env_product_means = jit_kernel(_env_product_means, inline="always", **_jit)
    _to_physical = jit_kernel(_to_physical, **_jit)
    _physical = jit_kernel(_physical, **_jit)
    _column_start = jit_kernel(_column_start, inline="always", **_jit)
    _column_inputs = jit_kernel(_column_inputs, inline="always", **_jit)
    _monthly_column = jit_kernel(_monthly_column, inline="always", **_jit)
    _clip_negatives = jit_kernel(_clip_negatives, inline="always", **_jit)
    _finite_flags = jit_kernel(_finite_flags, inline="always", **_jit)
    _solve_error = jit_kernel(_solve_error, **_jit)
    _finish_column = jit_kernel(_finish_column, inline="always", **_jit)
    _clm5_compiled = jit_kernel(_clm5_kernel, **_jit)
    _bands_compiled = jit_kernel(_bands_kernel, **_jit)
    _profiles_compiled = jit_kernel(_profiles_kernel, **_jit)
    _microbial_compiled = jit_kernel(_microbial_kernel, **_jit)


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
    monthly : tuple of ndarray
        The seven ``[n, 12]`` float64 variables of :data:`MONTHLY_ORDER` (m, m, layer index,
        g C m-2 month-1), any strides.
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
        without NaN input seen; bit 128: theta outside (0, 1); bit 256: a non-integer
        nbedrock) and ``stats`` ``[n, 11, 2]`` (per-column min / max of the layered, then
        the monthly variables, NaN skipped).
    """
    opts = np.array([conservative, inputs_below_bedrock, clip_negative,
                     detect_ill_conditioning, conditioning_tolerance, w_scaling], dtype=float)
    return _run_kernel(_clm5_compiled if HAVE_NUMBA else None, theta, layered, monthly, space,
                       CLM5_PARAMETER_SLOTS, opts, 7, threads)


def microbial_steady_state(theta, layered, monthly, space, *, efolding,
                           enzyme_turnover_index=10, conservative=True,
                           inputs_below_bedrock=False, clip_negative=False,
                           detect_ill_conditioning=True, conditioning_tolerance=1e-8,
                           min_soc_to_mic_ratio=10.0, threads=None) -> dict:
    """Steady state of the microbial model, every stage in one compiled pass (numpy).

    The stages of :meth:`xproda.models.microbial.MicrobialModel._steady_state`: the
    environmental scalars as the product of their monthly means, the CLM5 litter and
    transport, the closed-form soil pools per layer and their flags.

    Parameters
    ----------
    theta, layered, monthly, threads
        As for :func:`clm5_steady_state` (``space``: the microbial parameter space).
    space : ParameterSpace
        The microbial parameter space.
    efolding : float
        E-folding depth of the depth scalar (m; the model's constant).
    enzyme_turnover_index, conservative, inputs_below_bedrock, clip_negative, detect_ill_conditioning, conditioning_tolerance, min_soc_to_mic_ratio
        The model options (:class:`~xproda.models.base.ModelOptions`).

    Returns
    -------
    dict
        As :func:`clm5_steady_state`, with 8 pools (``pools`` ``[n, 20, 8]``,
        ``pool_stocks`` ``[n, 8]``; ``soc``: DOC + MIC + ENZ + SOC).
    """
    P = len(space)
    eti = int(enzyme_turnover_index)
    if not -P <= eti < P:  # the torch path's indexing error
        raise IndexError(f"index {eti} is out of bounds for dimension 1 with size {P}")
    opts = np.array([conservative, inputs_below_bedrock, clip_negative,
                     detect_ill_conditioning, conditioning_tolerance, min_soc_to_mic_ratio,
                     eti % P, efolding], dtype=float)
    return _run_kernel(_microbial_compiled if HAVE_NUMBA else None, theta, layered, monthly,
                       space, MICROBIAL_PARAMETER_SLOTS, opts, 8, threads)


def _run_kernel(kernel, theta, layered, monthly, space, slots, opts, npools, threads) -> dict:
    """Allocate the outputs, run ``kernel`` over column blocks, name the results."""
    if kernel is None:  # pragma: no cover
        raise RuntimeError("the fused kernel needs numba; install it or set fused_kernels=False")
    n = theta.shape[0]
    L = _L
    names = space.names
    ix = np.array([names.index(k) for k in slots], dtype=np.int64)
    plo = np.empty(len(names))
    pspan = np.empty(len(names))
    plog = np.zeros(len(names), dtype=np.bool_)
    for i, p in enumerate(space.parameters):
        if p.transform == "linear":
            plo[i], pspan[i] = p.minimum, p.maximum - p.minimum
        else:
            lo, hi = math.log10(p.minimum), math.log10(p.maximum)
            plo[i], pspan[i], plog[i] = lo, hi - lo, True
    out = {
        "pools": np.empty((n, L, npools)),
        "soc": np.empty((n, L)),
        "pool_stocks": np.empty((n, npools)),
    }
    scal = np.empty((n, 5))
    flags = np.empty(n, dtype=np.int64)
    stats = np.empty((n, 4 + len(MONTHLY_ORDER), 2))
    run_blocks(kernel, n, theta, plo, pspan, plog, ix, *layered, monthly, geometry(), opts,
               out["pools"], out["soc"], out["pool_stocks"], scal, flags, stats,
               threads=threads)
    for i, k in enumerate(("input", "respiration", "turnover_time", "soc_stock",
                           "solve_error_estimate")):
        out[k] = scal[:, i]
    out["flags"] = flags
    out["stats"] = stats
    return out


# -------------------------------------------------------------------------------------------
# the models' fused path: inputs in, SteadyState out
# -------------------------------------------------------------------------------------------
def steady_state_fused(model, theta, forcing: Mapping, solve: Callable[..., dict]):
    """``model.steady_state(theta, forcing)`` by a fused kernel driver (no gradients, CPU).

    Checks theta and the forcing as the torch path does (same errors; see
    :func:`prepare_arrays`, :func:`check_values`), runs ``solve(th, layered, monthly)``
    (e.g. :func:`clm5_steady_state` with the model's options bound) and builds the
    :class:`~xproda.models.base.SteadyState`: numpy in gives numpy out, torch in torch out.
    Call it where :func:`steady_state_applicable` holds.

    Parameters
    ----------
    model : SoilCarbonModel
        The model (its ``parameters``, ``options``, ``pools``, ``required_forcing`` and
        theta check).
    theta : array_like or Tensor
        ``[n, P]`` (or ``[1, P]``) normalised parameters.
    forcing : mapping
        The forcing, batch first.
    solve : callable
        ``solve(th, layered, monthly) -> dict``: a driver's result (flags with bits 64 /
        128, stats).
    """
    import torch

    from xproda.models.base import SteadyState

    torch_out = isinstance(theta, torch.Tensor) or any(
        isinstance(v, torch.Tensor) for v in forcing.values())
    cpu = torch.device("cpu")
    th = theta.detach().cpu().numpy() if isinstance(theta, torch.Tensor) else theta
    try:
        th = np.asarray(th, dtype=np.float64)
    except (TypeError, ValueError):  # the torch path's message
        th = model.check_theta(theta, torch.float64, cpu)
    P = len(model.parameters)
    if th.ndim != 2 or th.shape[1] != P:
        model.check_theta(torch.from_numpy(np.array(th)), torch.float64, cpu)  # shape error
    layered, monthly, n, others = prepare_arrays(forcing, th.shape[0], model.required_forcing)
    if th.shape[0] != n:
        th = np.broadcast_to(th, (n, P))
    th = np.ascontiguousarray(th)
    res = solve(th, layered, monthly)
    flags = res.pop("flags")
    stats = res.pop("stats")
    # the torch path's order: theta outside (0, 1) (its message), then the forcing values
    if (flags & 128).any():
        model.check_theta(torch.from_numpy(th), torch.float64, cpu)
    check_values(stats, flags, others)
    suspect = (flags & 64) != 0
    if suspect.any() and others:  # non-finite: no data where any other variable is NaN
        idx = np.nonzero(suspect)[0]
        nan = np.zeros(len(idx), dtype=bool)
        for v in others.values():
            a = np.broadcast_to(v, (n,) + v.shape[1:])[idx]
            nan |= np.isnan(a.reshape(len(idx), -1)).any(-1)
        flags[idx[nan]] = (flags[idx[nan]] & ~2) | 1
        res["solve_error_estimate"][idx[nan]] = math.nan
    flags &= 0x3F
    if model.options.conservative_transport:
        del res["solve_error_estimate"]
    out = SteadyState(pools=res["pools"], soc=res["soc"], soc_stock=res["soc_stock"],
                      pool_stocks=res["pool_stocks"], input=res["input"],
                      respiration=res["respiration"], turnover_time=res["turnover_time"])
    if "solve_error_estimate" in res:
        out["solve_error_estimate"] = res["solve_error_estimate"]
    out["flags"] = flags
    out["valid"] = flags == 0
    out.pool_names = model.pools
    if torch_out:
        for k in list(out):
            out[k] = torch.from_numpy(np.ascontiguousarray(out[k]))
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


def steady_state_applicable(theta, forcing) -> bool:
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

    Shapes and batch sizes are checked here (same rules and messages as
    :func:`xproda.models.forcing.validate_forcing`); values are checked after the kernel by
    :func:`check_values` (those the kernel reads from its per-column statistics: no passes
    over the arrays before it). ``others``: the forcing variables the kernel does not read.
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
    monthly = []  # read in place by the kernel (no [n, 7, 12] stack: a copy per call)
    for name in MONTHLY_ORDER:
        a = np.asarray(arrays[name], dtype=np.float64)  # small; one dtype for the kernel
        monthly.append(np.broadcast_to(a, (n,) + a.shape[1:]) if a.shape[0] != n else a)
    monthly = tuple(monthly)
    others = {}
    for name, x in forcing.items():  # variables the kernel does not read: checked all the same
        if name not in fmod.FORCING_SCHEMA or name in arrays:
            continue
        a = as_array(x, name)
        fmod.check_shape(name, a.shape, fmod.FORCING_SCHEMA[name].shape)
        fmod.batch_size({**sizes, name: a.shape[0]}, n)
        others[name] = a
    return layered, monthly, n, others


def _stats_range(stats):  # pragma: no cover - numba
    """Minimum / maximum over the columns of per-column statistics ``[n, V, 2]`` (one pass;
    numpy's reductions over the first axis of such an array took ~8 ms per 1e5 columns)."""
    V = stats.shape[1]
    lo = np.full(V, np.inf)
    hi = np.full(V, -np.inf)
    for c in range(stats.shape[0]):
        for v in range(V):
            a = stats[c, v, 0]
            b = stats[c, v, 1]
            lo[v] = a if a < lo[v] else lo[v]
            hi[v] = b if b > hi[v] else hi[v]
    return lo, hi


if HAVE_NUMBA:
    _stats_range = jit_kernel(_stats_range, nogil=True, error_model="numpy")


def check_values(stats: np.ndarray, flags: np.ndarray, others: Mapping) -> None:
    """Check the forcing values after a kernel ran, in the torch path's order.

    Variables in :data:`xproda.models.forcing.FORCING_SCHEMA` order (the order in which
    :func:`~xproda.models.forcing.validate_forcing` raises): the layered and monthly ones
    the kernel read from its per-column statistics (``stats[:, v]`` minimum / maximum,
    :data:`LAYERED_ORDER` then :data:`MONTHLY_ORDER`; ``flags`` bit 256: an nbedrock that
    is not an integer), ``others`` (see :func:`prepare_arrays`) from their arrays. Same
    messages as :func:`~xproda.models.forcing.check_array_values` on every array.
    """
    from xproda.models import forcing as fmod

    rows = {name: v for v, name in enumerate(LAYERED_ORDER + MONTHLY_ORDER)}
    if stats.shape[0]:
        lo, hi = _stats_range(stats)
    non_integer = bool((flags & 256).any())
    for name, spec in fmod.FORCING_SCHEMA.items():
        if name in others:
            fmod.check_array_values(name, others[name])
        elif name in rows and stats.shape[0]:
            v = rows[name]
            inf = bool(math.isinf(lo[v]) and lo[v] < 0 or math.isinf(hi[v]) and hi[v] > 0)
            fmod.check_range(name, float(lo[v]), float(hi[v]), has_inf=inf,
                             non_integer=spec.integer and not inf and non_integer)


