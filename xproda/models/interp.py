"""Model-to-observation mapping: batched, differentiable PCHIP and layer means (spec §6.1).

The DA of the reference code interpolates the simulated SOC density at the 20 CLM5 node
depths (``grid.ZSOI[:20]``, g C m-3) to the observed node depths with MATLAB's
``interp1(..., 'pchip', 'extrap')``, which equals SciPy's
``PchipInterpolator(x, y, extrapolate=True)``.  This module is a torch port of that
interpolant:

* :func:`pchip` -- evaluate the interpolant (any batch shape, shared or per-row knots,
  NaN queries give NaN, CPU or CUDA, differentiable in ``y``);
* :func:`pchip_derivatives`, :func:`pchip_coefficients` -- the Fritsch-Carlson slopes and the
  per-interval cubic coefficients as SciPy computes them;
* :func:`pchip_integral`, :func:`pchip_mean` -- the exact integral / mean of the interpolant
  over ``[a, b]`` (closed form per cubic segment, extrapolated end cubics included);
* :class:`PchipMap`, :class:`PchipMeanMap` -- the same with everything that depends only on
  the knots and the query depths precomputed (interval indices, powers of the local
  coordinate, knot spacings and harmonic-mean weights), so that repeated evaluation with new
  ``y`` (a sampler: same sites, new parameters) is a handful of batched tensor operations;
* :class:`ModelToObs` / :func:`model_to_obs` -- the CLM5 profile -> observation mapping with
  three methods: ``"pchip"`` (reference, value at the observed node depth), ``"pchip_mean"``
  (mean of the PCHIP curve over the observed layer) and ``"layer_mean"`` (thickness-weighted
  mean of the model's piecewise-constant layer profile over the observed layer).

Arithmetic follows SciPy's formulas (Fritsch-Carlson harmonic-mean slopes, SciPy's end
slopes, coefficients ``c0 s^3 + c1 s^2 + c2 s + c3`` in the power basis with ``s = x - x_i``,
summed in SciPy's order); divisions by the knot spacings are multiplications by precomputed
reciprocals, so values agree with SciPy to a few ulps (tests: <= 1e-14 of the profile's
magnitude).

On the CPU in float64 with shared 1-D knots and no autograd, evaluation runs in a fused numba
kernel (one pass per profile, the no-grad fast path of samplers) that performs the same
operations in the same order as the torch path -- results are bit-for-bit identical.  It is
switched off with ``xproda.set_options(fused_kernels=False)``; with autograd, on CUDA, or in
float32 the torch path runs.

All functions accept tensors or array_likes; non-tensor input is converted to float64 (the
dtype and device of ``y`` are used when it is a floating tensor).  Outputs are tensors.
"""

from __future__ import annotations

import threading
from typing import Literal, NamedTuple

import numpy as np
import torch

from xproda import grid
from xproda.models.fused import fused_applicable

__all__ = [
    "pchip",
    "pchip_derivatives",
    "pchip_coefficients",
    "pchip_integral",
    "pchip_mean",
    "PchipMap",
    "PchipMeanMap",
    "layer_mean_weights",
    "ModelToObs",
    "model_to_obs",
    "MODEL_NODE_DEPTHS",
]

#: node depths (m) of the 20 decomposition layers: the PCHIP knots of the model profile
MODEL_NODE_DEPTHS: np.ndarray = grid.ZSOI[: grid.N_LAYERS]

Method = Literal["pchip", "pchip_mean", "layer_mean"]


# --------------------------------------------------------------------------------------------
# tensor helpers
# --------------------------------------------------------------------------------------------


def float_tensor(v, dtype=None, device=None) -> torch.Tensor:
    """``v`` as a floating tensor (float64 unless ``dtype``/the tensor's own dtype says else)."""
    if isinstance(v, torch.Tensor):
        if dtype is None:
            dtype = v.dtype if v.is_floating_point() else torch.float64
        return v.to(dtype=dtype, device=device if device is not None else v.device)
    return torch.as_tensor(
        np.array(v, dtype=np.float64), dtype=dtype or torch.float64, device=device
    )


def dtype_device(*vals) -> tuple[torch.dtype, torch.device]:
    """Dtype and device of the first floating tensor in ``vals`` (else float64 and CPU)."""
    for v in vals:
        if isinstance(v, torch.Tensor) and v.is_floating_point():
            return v.dtype, v.device
    for v in vals:
        if isinstance(v, torch.Tensor):
            return torch.float64, v.device
    return torch.float64, torch.device("cpu")


def _check_knots(x: torch.Tensor, name: str = "x") -> None:
    if x.ndim < 1 or x.shape[-1] < 2:
        raise ValueError(f"{name} must have at least 2 knots along its last axis, got shape "
                         f"{tuple(x.shape)}")
    dx = x[..., 1:] - x[..., :-1]
    if not bool(torch.all(dx > 0)):
        raise ValueError(f"{name} (knots) must be finite and strictly increasing")


# --------------------------------------------------------------------------------------------
# PCHIP slopes and coefficients (SciPy's PchipInterpolator, operation by operation)
# --------------------------------------------------------------------------------------------


class _KnotTerms(NamedTuple):
    """Quantities that depend on the knots only."""

    h: torch.Tensor  # [..., K-1] knot spacing
    ih: torch.Tensor  # [..., K-1] 1 / h
    w1: torch.Tensor  # [..., K-2] 2 h_k + h_{k-1}
    w2: torch.Tensor  # [..., K-2] h_k + 2 h_{k-1}
    iwsum: torch.Tensor  # [..., K-2] 1 / (w1 + w2)
    e_a: torch.Tensor  # [..., 2] end formula: 2 h0 + h1 (first end, last end)
    e_h0: torch.Tensor  # [..., 2] h0
    e_iden: torch.Tensor  # [..., 2] 1 / (h0 + h1)


def _knot_terms(x: torch.Tensor) -> _KnotTerms:
    h = x[..., 1:] - x[..., :-1]
    w1 = 2 * h[..., 1:] + h[..., :-1]
    w2 = h[..., 1:] + 2 * h[..., :-1]
    if h.shape[-1] >= 2:
        h0 = torch.stack([h[..., 0], h[..., -1]], dim=-1)
        h1 = torch.stack([h[..., 1], h[..., -2]], dim=-1)
    else:
        h0 = h1 = h[..., :1]
    return _KnotTerms(h, 1.0 / h, w1, w2, 1.0 / (w1 + w2), 2 * h0 + h1, h0, 1.0 / (h0 + h1))


def _derivatives(y: torch.Tensor, kt: _KnotTerms) -> tuple[torch.Tensor, torch.Tensor]:
    """PCHIP slopes ``d`` [..., K] and secant slopes ``m`` [..., K-1] (SciPy's rules).

    Interior: the weighted harmonic mean ``(w1 + w2) / (w1/m_{k-1} + w2/m_k)`` where both
    secants have the same (nonzero) sign, else 0.  Ends: ``((2 h0 + h1) m0 - h0 m1) /
    (h0 + h1)``, set to 0 if its sign differs from ``m0``'s, and to ``3 m0`` if ``m0``, ``m1``
    differ in sign and it exceeds ``3 |m0|``.  Divisions by the knot spacings are
    multiplications by precomputed reciprocals (results within a few ulps of SciPy's).
    """
    m = torch.diff(y, dim=-1) * kt.ih
    k = y.shape[-1]
    if k == 2:  # SciPy: two points -> linear
        return torch.cat([m, m], dim=-1), m
    sm = torch.sign(m)
    # same nonzero sign <=> product of signs > 0; NaN -> False (slope 0) like SciPy's test
    same = (sm[..., :-1] * sm[..., 1:]) > 0
    one = torch.ones((), dtype=m.dtype, device=m.device)
    zero = torch.zeros((), dtype=m.dtype, device=m.device)
    grad = torch.is_grad_enabled() and m.requires_grad
    # double ``where`` under autograd: discarded branches must not divide by zero (NaN grads).
    # Under autograd, secants below 1e-100 x the row's largest are also raised to that floor:
    # the reciprocal's derivative -1/m^2 would overflow (inf x 0 = NaN gradients, e.g. for
    # layers far below bedrock whose SOC underflows to ~1e-250). The slopes change by less
    # than 1e-100 x the row's largest secant; results without autograd are unchanged.
    if grad:
        floor = m.detach().abs().amax(-1, keepdim=True) * 1e-100
        small = (m.abs() < floor) & (m != 0)
        mt = torch.where(m == 0, one, torch.where(small, torch.sign(m) * floor, m))
        r = 1.0 / mt
    else:
        r = 1.0 / m
    whmean = (kt.w1 * r[..., :-1] + kt.w2 * r[..., 1:]) * kt.iwsum
    if grad:
        whmean = torch.where(same, whmean, one)
    inner = torch.where(same, 1.0 / whmean, zero)
    # both end points at once: [..., 2] = (first, last)
    em0 = torch.stack([m[..., 0], m[..., -1]], dim=-1)
    em1 = torch.stack([m[..., 1], m[..., -2]], dim=-1)
    de = (kt.e_a * em0 - kt.e_h0 * em1) * kt.e_iden
    sem0 = torch.sign(em0)
    mask = torch.sign(de) != sem0
    mask2 = (sem0 != torch.sign(em1)) & (torch.abs(de) > 3.0 * torch.abs(em0))
    de = torch.where(mask, zero, torch.where(mask2, 3.0 * em0, de))
    d = torch.cat([de[..., :1], inner, de[..., 1:]], dim=-1)
    return d, m


def _coefficients(y, d, m, ih):
    """Power-basis coefficients ``[c0, c1, c2, c3]`` (highest power first), [..., K-1, 4]."""
    d0 = d[..., :-1]
    t = (d0 + d[..., 1:] - 2 * m) * ih
    return torch.stack([t * ih, (m - d0) * ih - t, d0, y[..., :-1]], dim=-1)


def _prepare_xy(x, y):
    dtype, device = dtype_device(y, x)
    y = float_tensor(y, dtype, device)
    x = float_tensor(x, dtype, device)
    if y.ndim < 1 or x.shape[-1] != y.shape[-1]:
        raise ValueError(
            f"x and y must have the same number of knots along the last axis, got x "
            f"{tuple(x.shape)} and y {tuple(y.shape)}"
        )
    _check_knots(x)
    return x, y


def pchip_derivatives(x, y) -> torch.Tensor:
    """PCHIP slopes at the knots, as ``scipy.interpolate.PchipInterpolator`` computes them.

    Interior slopes are the weighted harmonic mean of the adjacent secant slopes
    (Fritsch-Carlson, weights ``2 h_k + h_{k-1}`` and ``h_k + 2 h_{k-1}``) where both have the
    same sign, and zero where the signs differ or one of them is zero.  End slopes use the
    one-sided three-point formula, set to zero if its sign differs from the end secant and
    limited to three times the end secant when the first two secants differ in sign.  With two
    knots the interpolant is linear.

    Parameters
    ----------
    x : array_like or torch.Tensor
        Knots, strictly increasing, shape ``[K]`` or ``[..., K]``.
    y : array_like or torch.Tensor
        Values at the knots, shape ``[..., K]`` (broadcasts against ``x``).

    Returns
    -------
    torch.Tensor
        Slopes ``dy/dx`` at the knots, shape ``[..., K]``, in units of ``y`` per unit of ``x``.

    Examples
    --------
    >>> pchip_derivatives([0.0, 1.0, 2.0, 3.0], [0.0, 1.0, 1.0, 0.0]).tolist()
    [1.5, 0.0, 0.0, -1.5]
    """
    x, y = _prepare_xy(x, y)
    d, _ = _derivatives(y, _knot_terms(x))
    return d


def pchip_coefficients(x, y) -> torch.Tensor:
    """Per-interval cubic coefficients of the PCHIP interpolant (SciPy's ``PPoly.c`` layout).

    On interval ``i`` (``x_i <= xq < x_{i+1}``) the interpolant is
    ``c0 s^3 + c1 s^2 + c2 s + c3`` with ``s = xq - x_i``.

    Parameters
    ----------
    x, y : array_like or torch.Tensor
        Knots ``[K]`` or ``[..., K]`` and values ``[..., K]``.

    Returns
    -------
    torch.Tensor
        Shape ``[..., K-1, 4]``: ``[c0, c1, c2, c3]`` per interval (highest power first), i.e.
        ``PchipInterpolator(x, y).c`` transposed.

    Examples
    --------
    >>> pchip_coefficients([0.0, 1.0], [1.0, 3.0]).tolist()
    [[0.0, 0.0, 2.0, 1.0]]
    """
    x, y = _prepare_xy(x, y)
    kt = _knot_terms(x)
    d, m = _derivatives(y, kt)
    return _coefficients(y, d, m, kt.ih)


# --------------------------------------------------------------------------------------------
# query-point preparation (interval search), shared by functions and precomputed maps
# --------------------------------------------------------------------------------------------


def _locate(x: torch.Tensor, xq: torch.Tensor, batch_shape, extrapolate: bool):
    """Interval index and local coordinate of each query point.

    Returns ``idx`` (int64, shape ``batch_shape + [Q]``, SciPy's ``find_interval``: the ``i``
    with ``x_i <= xq < x_{i+1}``, closed on the right at the last knot and clamped to the end
    intervals for extrapolation), ``s = xq - x_idx`` (0 where invalid) and the mask of query
    points that give NaN (NaN queries, and out-of-range ones without extrapolation).
    """
    k = x.shape[-1]
    xq = xq.expand(*batch_shape, xq.shape[-1])
    invalid = torch.isnan(xq)
    if not extrapolate:
        invalid = invalid | (xq < x[..., :1]) | (xq > x[..., -1:])
    # NaN queries are replaced by the first knot so that nothing NaN enters the graph
    xq_safe = torch.where(invalid, x[..., :1], xq)
    if x.ndim == 1:
        idx = torch.searchsorted(x, xq_safe.contiguous(), right=True)
    else:
        xb = x.expand(*batch_shape, k).contiguous()
        idx = torch.searchsorted(xb, xq_safe.contiguous(), right=True)
    idx = (idx - 1).clamp_(0, k - 2)
    if x.ndim == 1:
        xi = x[idx]
    else:
        xi = torch.gather(x.expand(*batch_shape, k), -1, idx)
    s = xq_safe - xi
    return idx, s, invalid


def _gather_last(v: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``v[..., idx]`` with ``v`` [K'] (shared) or [..., K'] broadcast to ``idx``'s batch."""
    if v.ndim == 1:
        return v[idx]
    return torch.gather(v.expand(*idx.shape[:-1], v.shape[-1]), -1, idx)


def _batch_shape(*shapes) -> torch.Size:
    return torch.broadcast_shapes(*[tuple(s[:-1]) for s in shapes])


def _nan_add(invalid: torch.Tensor, dtype) -> torch.Tensor:
    """0 where valid, NaN where invalid: added to a result it marks padding without touching
    valid values (bit for bit) and without sending NaN into gradients."""
    zero = torch.zeros((), dtype=dtype, device=invalid.device)
    return torch.where(invalid, torch.full((), float("nan"), dtype=dtype, device=invalid.device),
                       zero)


def _hermite_torch(y, d, idx, idx1, ihq, s, s2, s3, nanadd) -> torch.Tensor:
    """Evaluate the PCHIP cubic of each query's interval from knot values and slopes.

    Gathers ``y_i, y_{i+1}, d_i, d_{i+1}`` and forms SciPy's power-basis coefficients for the
    queried intervals only, then sums ``c3 + c2 s + c1 s^2 + c0 s^3`` in SciPy's order (so
    results equal SciPy's ``PPoly`` evaluation operation by operation).
    """
    bshape = idx.shape[:-1]
    k = y.shape[-1]
    y = y.expand(*bshape, k)
    d = d.expand(*bshape, k)
    y0 = torch.gather(y, -1, idx)
    y1 = torch.gather(y, -1, idx1)
    d0 = torch.gather(d, -1, idx)
    d1 = torch.gather(d, -1, idx1)
    m = (y1 - y0) * ihq
    t = (d0 + d1 - 2 * m) * ihq
    out = y0 + d0 * s
    out = out + ((m - d0) * ihq - t) * s2
    out = out + (t * ihq) * s3
    return out + nanadd


def _use_fused(y: torch.Tensor, kt: _KnotTerms, *others: torch.Tensor) -> bool:
    """The numba kernel runs on CPU float64 without autograd, for shared 1-D knots."""
    return kt.h.ndim == 1 and fused_applicable(y, *others)


def _evaluate(y, kt: _KnotTerms, idx, idx1, ihq, s, s2, s3, nanadd) -> torch.Tensor:
    """PCHIP values at precomputed query points: fused numba kernel or torch ops (same
    arithmetic, same results)."""
    bshape = torch.broadcast_shapes(y.shape[:-1], idx.shape[:-1])
    q = idx.shape[-1]
    if bshape != idx.shape[:-1]:
        idx, idx1, ihq, s, s2, s3, nanadd = (
            t.expand(*bshape, q) for t in (idx, idx1, ihq, s, s2, s3, nanadd))
    if _use_fused(y, kt, s):
        return _fused_pchip(y, kt, idx, ihq, s, s2, s3, nanadd)
    d, _ = _derivatives(y, kt)
    return _hermite_torch(y, d, idx, idx1, ihq, s, s2, s3, nanadd)


# --------------------------------------------------------------------------------------------
# fused CPU kernel (numba): the no-grad fast path, same arithmetic as the torch path
# --------------------------------------------------------------------------------------------


def _sign(v):  # pragma: no cover - compiled by numba
    if v > 0.0:
        return 1.0
    if v < 0.0:
        return -1.0
    if v == 0.0:
        return 0.0
    return v  # NaN


def _edge(a, h0, iden, m0, m1):  # pragma: no cover - compiled by numba
    dd = (a * m0 - h0 * m1) * iden
    s0 = _sign(m0)
    if _sign(dd) != s0:  # also true for NaN, as in SciPy
        return 0.0
    if s0 != _sign(m1) and abs(dd) > 3.0 * abs(m0):
        return 3.0 * m0
    return dd


def _pchip_kernel(y, ih, w1, w2, iwsum, e_a, e_h0, e_iden, idx, ihq, s, s2, s3, nanadd,
                  out):  # pragma: no cover - compiled by numba
    """Same operations, in the same order, as ``_derivatives`` + ``_hermite_torch``."""
    n, k = y.shape
    nq = idx.shape[1]
    m = np.empty(k - 1)
    r = np.empty(k - 1)
    d = np.empty(k)
    for b in range(n):
        for j in range(k - 1):
            m[j] = (y[b, j + 1] - y[b, j]) * ih[j]
            r[j] = 1.0 / m[j] if m[j] != 0.0 else 1.0
        if k == 2:
            d[0] = m[0]
            d[1] = m[0]
        else:
            for j in range(1, k - 1):
                if _sign(m[j - 1]) * _sign(m[j]) > 0.0:
                    d[j] = 1.0 / ((w1[j - 1] * r[j - 1] + w2[j - 1] * r[j]) * iwsum[j - 1])
                else:
                    d[j] = 0.0
            d[0] = _edge(e_a[0], e_h0[0], e_iden[0], m[0], m[1])
            d[k - 1] = _edge(e_a[1], e_h0[1], e_iden[1], m[k - 2], m[k - 3])
        for i in range(nq):
            j = idx[b, i]
            y0 = y[b, j]
            d0 = d[j]
            hh = ihq[b, i]
            mm = (y[b, j + 1] - y0) * hh
            t = (d0 + d[j + 1] - 2.0 * mm) * hh
            o = y0 + d0 * s[b, i]
            o = o + ((mm - d0) * hh - t) * s2[b, i]
            o = o + (t * hh) * s3[b, i]
            out[b, i] = o + nanadd[b, i]


_COMPILED = None
_COMPILE_LOCK = threading.Lock()


def _compiled():
    global _COMPILED
    with _COMPILE_LOCK:
        if _COMPILED is not None:
            return _COMPILED
        from xproda.models.fused import jit_kernel  # cache location that is writable

        g = globals()
        # helpers must be jitted before the kernel that calls them
        g["_sign"] = jit_kernel(_sign, nogil=True)
        g["_edge"] = jit_kernel(_edge, nogil=True)
        _COMPILED = jit_kernel(_pchip_kernel, nogil=True)
        return _COMPILED


def _fused_arrays(kt: _KnotTerms, idx, ihq, s, s2, s3, nanadd, bshape) -> tuple:
    """numpy views/copies of the precomputed terms in the kernel's layout."""
    q = idx.shape[-1]

    def a2(t):
        return np.ascontiguousarray(t.detach().expand(*bshape, q).reshape(-1, q).cpu().numpy())

    def a1(t):
        return np.ascontiguousarray(t.detach().cpu().numpy())

    return (a1(kt.ih), a1(kt.w1), a1(kt.w2), a1(kt.iwsum), a1(kt.e_a), a1(kt.e_h0),
            a1(kt.e_iden), a2(idx), a2(ihq), a2(s), a2(s2), a2(s3), a2(nanadd))


def _fused_pchip(y, kt: _KnotTerms, idx, ihq, s, s2, s3, nanadd, *, arrays=None) -> torch.Tensor:
    bshape = idx.shape[:-1]
    k = y.shape[-1]
    q = idx.shape[-1]
    if arrays is None:
        arrays = _fused_arrays(kt, idx, ihq, s, s2, s3, nanadd, bshape)
    yy = np.ascontiguousarray(y.detach().expand(*bshape, k).reshape(-1, k).numpy())
    out = np.empty((yy.shape[0], q), dtype=np.float64)
    _compiled()(yy, *arrays, out)
    return torch.from_numpy(out).reshape(*bshape, q)


def _antiderivative(coef, h, idx, s, s2, s3):
    """``F(xq)``: integral of the piecewise cubic from ``x_0`` to ``xq`` (end cubics extended).

    ``F = I_i + c0 s^4/4 + c1 s^3/3 + c2 s^2/2 + c3 s`` on interval ``i`` with ``I_i`` the
    cumulative integral of the full intervals before it.
    """
    c0, c1, c2, c3 = coef.unbind(-1)
    full = ((c0 * h / 4 + c1 / 3) * h + c2 / 2) * h * h + c3 * h  # integral of each interval
    cum = torch.cat([torch.zeros_like(full[..., :1]), torch.cumsum(full, dim=-1)], dim=-1)
    bshape = idx.shape[:-1]
    pieces = torch.cat([cum[..., :-1, None], coef], dim=-1)
    pieces = pieces.expand(*bshape, pieces.shape[-2], 5)
    g = torch.gather(pieces, -2, idx.unsqueeze(-1).expand(*idx.shape, 5))
    s4 = s2 * s2
    return g[..., 0] + (g[..., 1] * s4 / 4 + g[..., 2] * s3 / 3 + g[..., 3] * s2 / 2
                        + g[..., 4] * s)


# --------------------------------------------------------------------------------------------
# functional API
# --------------------------------------------------------------------------------------------


def pchip(x, y, xq, *, extrapolate: bool = True) -> torch.Tensor:
    """Monotone piecewise cubic Hermite interpolation (PCHIP), batched and differentiable.

    Equals ``scipy.interpolate.PchipInterpolator(x, y, extrapolate=extrapolate)(xq)`` row by
    row (same slopes, coefficients and evaluation order; agreement to a few ulps), and hence
    MATLAB's ``interp1(x, y, xq, 'pchip', 'extrap')`` (spec §6.1).  Outside ``[x_0, x_{K-1}]``
    the end cubics are extended.

    Parameters
    ----------
    x : array_like or torch.Tensor
        Knots, strictly increasing: ``[K]`` (shared by all rows) or ``[..., K]``.
    y : array_like or torch.Tensor
        Values at the knots, ``[..., K]``.
    xq : array_like or torch.Tensor
        Query points, ``[..., Q]`` (``[Q]`` is shared by all rows).  NaN gives NaN.
    extrapolate : bool, default True
        Extend the end cubics beyond the knots; if False, out-of-range queries give NaN.

    Returns
    -------
    torch.Tensor
        Interpolated values, shape ``broadcast(x, y, xq batch dims) + [Q]``, dtype and device
        of ``y`` (float64 for non-tensor input).  Differentiable with respect to ``y`` (and
        ``xq``); NaN queries do not produce NaN gradients.

    Examples
    --------
    >>> y = torch.tensor([[3.0, 2.0, 1.0, 1.0], [0.0, 1.0, 4.0, 9.0]], dtype=torch.float64)
    >>> pchip([0.0, 1.0, 2.0, 3.0], y, [[0.5, 2.5], [1.5, float("nan")]])
    tensor([[2.5000, 1.0000],
            [2.2188,    nan]], dtype=torch.float64)
    """
    x, y = _prepare_xy(x, y)
    xq = float_tensor(xq, y.dtype, y.device)
    if xq.ndim == 0:
        xq = xq.reshape(1)
    bshape = _batch_shape(x.shape, y.shape, xq.shape)
    kt = _knot_terms(x)
    idx, s, invalid = _locate(x, xq, bshape, extrapolate)
    ihq = _gather_last(kt.ih, idx)
    s2 = s * s
    return _evaluate(y, kt, idx, idx + 1, ihq, s, s2, s2 * s, _nan_add(invalid, y.dtype))


def pchip_integral(x, y, a, b, *, extrapolate: bool = True) -> torch.Tensor:
    """Exact integral of the PCHIP interpolant from ``a`` to ``b``.

    Each cubic segment is integrated in closed form; beyond the knots the extended end cubics
    are integrated (as ``PchipInterpolator(...).integrate(a, b)`` does with
    ``extrapolate=True``).

    Parameters
    ----------
    x, y : array_like or torch.Tensor
        Knots ``[K]`` or ``[..., K]`` and values ``[..., K]``.
    a, b : array_like or torch.Tensor
        Integration bounds, ``[..., Q]`` each (``b < a`` gives the negative integral).  NaN
        gives NaN.
    extrapolate : bool, default True
        If False, bounds outside the knots give NaN.

    Returns
    -------
    torch.Tensor
        ``integral_a^b y(x) dx`` in units of ``y`` times units of ``x``, shape ``[..., Q]``.

    Examples
    --------
    >>> pchip_integral([0.0, 1.0, 2.0], [1.0, 1.0, 1.0], [[0.0, -1.0]], [[2.0, 0.5]]).tolist()
    [[2.0, 1.5]]
    """
    x, y = _prepare_xy(x, y)
    a = float_tensor(a, y.dtype, y.device)
    b = float_tensor(b, y.dtype, y.device)
    a, b = torch.broadcast_tensors(a.reshape(1) if a.ndim == 0 else a,
                                   b.reshape(1) if b.ndim == 0 else b)
    bshape = _batch_shape(x.shape, y.shape, a.shape)
    kt = _knot_terms(x)
    h = kt.h
    d, m = _derivatives(y, kt)
    coef = _coefficients(y, d, m, kt.ih)
    out = []
    for q in (a, b):
        idx, s, inv = _locate(x, q, bshape, extrapolate)
        s2 = s * s
        out.append((_antiderivative(coef, h, idx, s, s2, s2 * s), inv))
    (fa, ia), (fb, ib) = out
    res = fb - fa
    return torch.where(ia | ib, torch.full((), float("nan"), dtype=res.dtype, device=res.device),
                       res)


def pchip_mean(x, y, top, bottom, *, extrapolate: bool = True) -> torch.Tensor:
    """Mean of the PCHIP interpolant over ``[top, bottom]``.

    ``integral_top^bottom y dx / (bottom - top)``; where ``bottom == top`` the value at
    ``top``.

    Parameters
    ----------
    x, y : array_like or torch.Tensor
        Knots ``[K]`` or ``[..., K]`` and values ``[..., K]``.
    top, bottom : array_like or torch.Tensor
        Interval bounds ``[..., Q]``, ``bottom >= top``; NaN gives NaN.
    extrapolate : bool, default True
        If False, bounds outside the knots give NaN.

    Returns
    -------
    torch.Tensor
        Mean value, units of ``y``, shape ``[..., Q]``.

    Examples
    --------
    >>> pchip_mean([0.0, 1.0, 2.0], [0.0, 1.0, 2.0], [[0.0, 0.5]], [[2.0, 0.5]]).tolist()
    [[1.0, 0.5]]
    """
    x, y = _prepare_xy(x, y)
    top = float_tensor(top, y.dtype, y.device)
    bottom = float_tensor(bottom, y.dtype, y.device)
    return PchipMeanMap(x, top, bottom, extrapolate=extrapolate)(y)


# --------------------------------------------------------------------------------------------
# precomputed maps
# --------------------------------------------------------------------------------------------


class PchipMap:
    """PCHIP evaluation with fixed knots and query points, precomputed (spec §6.1).

    Everything that depends on the knots and the query points only -- the knot spacings and
    harmonic-mean weights, the interval of each query point and the powers ``s, s^2, s^3`` of
    its local coordinate -- is computed once.  Calling the map with new knot values ``y``
    computes the slopes (a few element-wise operations on ``[B, K]``), the cubic coefficients
    and one gather.  Results are identical to :func:`pchip`.

    Parameters
    ----------
    knots : array_like or torch.Tensor
        Strictly increasing knots ``[K]`` or ``[..., K]`` (e.g. ``grid.ZSOI[:20]``, m).
    xq : array_like or torch.Tensor
        Query points ``[..., Q]`` (NaN padding allowed, gives NaN).
    extrapolate : bool, default True
        Extend the end cubics; if False, out-of-range queries give NaN.
    dtype, device : optional
        Of the precomputed tensors (default: those of ``xq`` if a floating tensor, else float64
        on the CPU).  ``y`` passed to the map is cast to this dtype and device.

    Examples
    --------
    >>> m = PchipMap([0.0, 1.0, 2.0, 3.0], [[0.5, 2.5], [1.5, 3.0]])
    >>> m(torch.tensor([[3.0, 2.0, 1.0, 1.0], [0.0, 1.0, 4.0, 9.0]], dtype=torch.float64))
    tensor([[2.5000, 1.0000],
            [2.2188, 9.0000]], dtype=torch.float64)
    """

    def __init__(self, knots, xq, *, extrapolate: bool = True, dtype=None, device=None) -> None:
        if dtype is None or device is None:
            dt, dev = dtype_device(xq, knots)
            dtype = dtype or dt
            device = device if device is not None else dev
        x = float_tensor(knots, dtype, device)
        _check_knots(x, "knots")
        xq = float_tensor(xq, dtype, device)
        if xq.ndim == 0:
            xq = xq.reshape(1)
        self.knots = x
        self.extrapolate = bool(extrapolate)
        self.batch_shape = _batch_shape(x.shape, xq.shape)
        self._terms = _knot_terms(x)
        self.idx, self.s, self.invalid = _locate(x, xq, self.batch_shape, extrapolate)
        self.idx1 = self.idx + 1
        self.ihq = _gather_last(self._terms.ih, self.idx)
        self.s2 = self.s * self.s
        self.s3 = self.s2 * self.s
        self.nanadd = _nan_add(self.invalid, dtype)
        self._fused = None  # numpy arrays of the fused kernel, built on first use
        self.dtype = dtype
        self.device = torch.device(device) if device is not None else x.device

    @property
    def n_knots(self) -> int:
        """Number of knots ``K``."""
        return int(self.knots.shape[-1])

    def _check_y(self, y) -> torch.Tensor:
        y = float_tensor(y, self.dtype, self.device)
        if y.ndim < 1 or y.shape[-1] != self.n_knots:
            raise ValueError(f"y must have {self.n_knots} values along its last axis, got shape "
                             f"{tuple(y.shape)}")
        return y

    def coefficients(self, y) -> torch.Tensor:
        """Cubic coefficients ``[..., K-1, 4]`` for knot values ``y`` (see
        :func:`pchip_coefficients`)."""
        y = self._check_y(y)
        d, m = _derivatives(y, self._terms)
        return _coefficients(y, d, m, self._terms.ih)

    def derivatives(self, y) -> torch.Tensor:
        """PCHIP slopes ``[..., K]`` at the knots for knot values ``y`` (see
        :func:`pchip_derivatives`)."""
        return _derivatives(self._check_y(y), self._terms)[0]

    def __call__(self, y) -> torch.Tensor:
        """Interpolated values at the query points, ``broadcast(batch) + [Q]``."""
        y = self._check_y(y)
        if y.shape[:-1] == self.idx.shape[:-1] and _use_fused(y, self._terms):
            if self._fused is None:
                self._fused = _fused_arrays(self._terms, self.idx, self.ihq, self.s, self.s2,
                                            self.s3, self.nanadd, self.idx.shape[:-1])
            return _fused_pchip(y, self._terms, self.idx, self.ihq, self.s, self.s2, self.s3,
                                self.nanadd, arrays=self._fused)
        return _evaluate(y, self._terms, self.idx, self.idx1, self.ihq, self.s, self.s2, self.s3,
                         self.nanadd)


class PchipMeanMap(PchipMap):
    """Exact mean of the PCHIP interpolant over fixed intervals ``[top, bottom]``, precomputed.

    The mean is ``(F(bottom) - F(top)) / (bottom - top)`` with ``F`` the closed-form
    antiderivative of the piecewise cubic (extended end cubics outside the knots); where
    ``bottom == top`` it is the value at ``top``.

    Parameters
    ----------
    knots : array_like or torch.Tensor
        Strictly increasing knots ``[K]`` or ``[..., K]``.
    top, bottom : array_like or torch.Tensor
        Interval bounds ``[..., Q]`` with ``bottom >= top`` (NaN padding gives NaN).
    extrapolate : bool, default True
        If False, bounds outside the knots give NaN.
    dtype, device : optional
        As for :class:`PchipMap`.

    Examples
    --------
    >>> m = PchipMeanMap([0.0, 1.0, 2.0], [[0.0, 1.0]], [[1.0, 1.0]])
    >>> m(torch.tensor([[0.0, 2.0, 4.0]])).tolist()
    [[1.0, 2.0]]
    """

    def __init__(self, knots, top, bottom, *, extrapolate: bool = True, dtype=None,
                 device=None) -> None:
        if dtype is None or device is None:
            dt, dev = dtype_device(top, bottom, knots)
            dtype = dtype or dt
            device = device if device is not None else dev
        top = float_tensor(top, dtype, device)
        bottom = float_tensor(bottom, dtype, device)
        top, bottom = torch.broadcast_tensors(top.reshape(1) if top.ndim == 0 else top,
                                              bottom.reshape(1) if bottom.ndim == 0 else bottom)
        if bool(torch.any(bottom < top)):
            raise ValueError("bottom must be >= top for every interval")
        super().__init__(knots, top, extrapolate=extrapolate, dtype=dtype, device=device)
        x = self.knots
        self.idx_b, self.s_b, inv_b = _locate(x, bottom, self.batch_shape, extrapolate)
        self.s2_b = self.s_b * self.s_b
        self.s3_b = self.s2_b * self.s_b
        self.invalid = self.invalid | inv_b
        self.nanadd = _nan_add(self.invalid, dtype)
        width = (bottom - top).expand(*self.batch_shape, top.shape[-1])
        self.point = width == 0
        one = torch.ones((), dtype=dtype, device=self.device)
        self.inv_width = 1.0 / torch.where(self.point | self.invalid, one, width)

    def __call__(self, y) -> torch.Tensor:
        """Mean of the interpolant over each interval, ``broadcast(batch) + [Q]``."""
        y = self._check_y(y)
        kt = self._terms
        d, m = _derivatives(y, kt)
        coef = _coefficients(y, d, m, kt.ih)
        bshape = torch.broadcast_shapes(y.shape[:-1], self.idx.shape[:-1])
        q = self.idx.shape[-1]

        def ex(*ts):
            return [t.expand(*bshape, q) for t in ts]

        idx, idx1, ihq, s, s2, s3 = ex(self.idx, self.idx1, self.ihq, self.s, self.s2, self.s3)
        idxb, sb, s2b, s3b = ex(self.idx_b, self.s_b, self.s2_b, self.s3_b)
        point, iw, nanadd = ex(self.point, self.inv_width, self.nanadd)
        fa = _antiderivative(coef, kt.h, idx, s, s2, s3)
        fb = _antiderivative(coef, kt.h, idxb, sb, s2b, s3b)
        mean = (fb - fa) * iw
        val = _hermite_torch(y, d, idx, idx1, ihq, s, s2, s3, nanadd)
        return torch.where(point, val, mean + nanadd)


# --------------------------------------------------------------------------------------------
# CLM5 profile -> observations
# --------------------------------------------------------------------------------------------


def layer_mean_weights(top, bottom, *, dtype=None, device=None) -> torch.Tensor:
    """Weights that average the model's piecewise-constant layer profile over ``[top, bottom]``.

    ``W[..., q, j] = |[top_q, bottom_q] ∩ layer j| / (bottom_q - top_q)`` with the CLM5
    layer interfaces ``grid.ZISOI_TOP[:20]`` / ``grid.ZISOI[:20]``.  The deepest layer is
    extended downwards without limit, so an observed layer reaching below the modelled column
    (8.6 m) takes the deepest layer's density for its part below 8.6 m.  Where
    ``bottom == top`` the weight is 1 on the layer containing that depth (an interface belongs
    to the layer above, as in :func:`xproda.grid.layer_index`).  Rows with NaN bounds are 0.

    Parameters
    ----------
    top, bottom : array_like or torch.Tensor
        Observed layer bounds (m), ``[..., Q]``, ``0 <= top <= bottom``.
    dtype, device : optional
        Of the result (default float64 / the bounds' device).

    Returns
    -------
    torch.Tensor
        ``[..., Q, 20]``, rows summing to 1 (0 for NaN bounds).

    Examples
    --------
    >>> w = layer_mean_weights([0.0], [0.1])
    >>> [round(v, 12) for v in w[0, :4].tolist()]
    [0.2, 0.4, 0.4, 0.0]
    """
    if dtype is None or device is None:
        dt, dev = dtype_device(top, bottom)
        dtype = dtype or dt
        device = device if device is not None else dev
    top = float_tensor(top, dtype, device)
    bottom = float_tensor(bottom, dtype, device)
    top, bottom = torch.broadcast_tensors(top, bottom)
    bad = torch.isnan(top) | torch.isnan(bottom)
    if bool(torch.any(~bad & ((top < 0) | (bottom < top)))):
        raise ValueError("observed layer bounds must satisfy 0 <= top <= bottom (m)")
    n = grid.N_LAYERS
    zt = torch.tensor(grid.ZISOI_TOP[:n], dtype=dtype, device=device)
    zb = torch.tensor(grid.ZISOI[:n], dtype=dtype, device=device).clone()
    zb[-1] = float("inf")
    zero = torch.zeros((), dtype=dtype, device=device)
    t = torch.where(bad, zero, top)[..., None]
    b = torch.where(bad, zero, bottom)[..., None]
    overlap = (torch.minimum(b, zb) - torch.maximum(t, zt)).clamp(min=0)
    width = b - t
    point = width == 0
    w = overlap / torch.where(point, torch.ones((), dtype=dtype, device=device), width)
    # zero-thickness layers: the layer containing the depth (interfaces belong to the layer above)
    j = torch.searchsorted(torch.tensor(grid.ZISOI[:n], dtype=dtype, device=device),
                           t.squeeze(-1).contiguous(), side="left").clamp(max=n - 1)
    onehot = torch.nn.functional.one_hot(j, n).to(dtype)
    w = torch.where(point, onehot, w)
    return torch.where(bad[..., None], zero, w)


class ModelToObs:
    """Map modelled per-layer SOC density to observed layers (spec §6.1), precomputed.

    Parameters
    ----------
    depth : array_like or torch.Tensor or None
        Observed node depths (m), ``[B, D]`` or ``[D]``, NaN-padded.  Needed for
        ``method="pchip"``; for the mean methods it is only used for the padding mask (NaN
        depth gives NaN) when given.
    method : {"pchip", "pchip_mean", "layer_mean"}, default "pchip"
        * ``"pchip"`` -- the reference: the PCHIP interpolant through the 20 layer values at
          the node depths ``grid.ZSOI[:20]``, evaluated at the observed node depths
          (extrapolated with the end cubics above 0.01 m and below 8.03 m).
        * ``"pchip_mean"`` -- the exact mean of the same PCHIP curve over ``[top, bottom]``.
        * ``"layer_mean"`` -- the thickness-weighted mean of the model's piecewise-constant
          layer profile over ``[top, bottom]`` (overlap with the CLM5 layers; see
          :func:`layer_mean_weights`).  This is what a sample of the observed layer measures
          if the model's layer densities are taken as uniform within each layer; the mean
          times the thickness equals :func:`xproda.grid.integrate` over the same interval.
    top, bottom : array_like or torch.Tensor, optional
        Observed layer bounds (m), ``[B, D]`` or ``[D]``; required for the mean methods.
    dtype, device : optional
        Of the precomputed tensors (default: float64 on the CPU, or those of a floating tensor
        input).  ``soc_layers`` is cast to them.

    Examples
    --------
    >>> soc = torch.linspace(20000.0, 1000.0, 20, dtype=torch.float64)[None]
    >>> m2o = ModelToObs([[0.01, 0.04, float("nan")]])
    >>> m2o(soc)[0, :2].tolist() == soc[0, :2].tolist()
    True
    >>> bool(torch.isnan(m2o(soc)[0, 2]))
    True
    >>> ModelToObs(None, method="layer_mean", top=[[0.0]], bottom=[[8.6]])(soc * 0 + 5.0).item()
    5.0
    """

    METHODS = ("pchip", "pchip_mean", "layer_mean")

    def __init__(self, depth=None, *, method: Method = "pchip", top=None, bottom=None,
                 dtype=None, device=None) -> None:
        if method not in self.METHODS:
            raise ValueError(f"method must be one of {self.METHODS}, got {method!r}")
        if dtype is None or device is None:
            dt, dev = dtype_device(depth, top, bottom)
            dtype = dtype or dt
            device = device if device is not None else dev
        self.method = method
        self.dtype = dtype
        self.device = torch.device(device)
        knots = torch.tensor(MODEL_NODE_DEPTHS, dtype=dtype, device=device)
        dep = None if depth is None else float_tensor(depth, dtype, device)
        if dep is not None and bool(torch.any(dep[~torch.isnan(dep)] < 0)):
            raise ValueError("observation depth must be >= 0 (m, positive downwards)")
        if method == "pchip":
            if dep is None:
                raise ValueError("method='pchip' needs the observed node depths `depth` (m)")
            self._map = PchipMap(knots, dep, dtype=dtype, device=device)
            self._nan = None
            return
        if top is None or bottom is None:
            raise ValueError(f"method={method!r} needs the observed layer bounds `top` and "
                             "`bottom` (m)")
        top = float_tensor(top, dtype, device)
        bottom = float_tensor(bottom, dtype, device)
        top, bottom = torch.broadcast_tensors(top, bottom)
        nan = torch.isnan(top) | torch.isnan(bottom)
        if dep is not None:
            nan = nan | torch.isnan(dep)
        self._nan = nan
        if bool(torch.any(~nan & ((top < 0) | (bottom < top)))):
            raise ValueError("observed layer bounds must satisfy 0 <= top <= bottom (m)")
        if method == "pchip_mean":
            self._map = PchipMeanMap(knots, top, bottom, dtype=dtype, device=device)
        else:
            self._weights = layer_mean_weights(top, bottom, dtype=dtype, device=device)

    def __call__(self, soc_layers) -> torch.Tensor:
        """Modelled values at the observations, ``[B, D]`` (g C m-3), NaN where padded.

        Parameters
        ----------
        soc_layers : array_like or torch.Tensor
            SOC density of the 20 model layers, ``[B, 20]`` (g C m-3).
        """
        y = float_tensor(soc_layers, self.dtype, self.device)
        if y.ndim < 1 or y.shape[-1] != grid.N_LAYERS:
            raise ValueError(f"soc_layers must have {grid.N_LAYERS} layers along its last axis, "
                             f"got shape {tuple(y.shape)}")
        if self.method == "layer_mean":
            out = torch.matmul(self._weights, y.unsqueeze(-1)).squeeze(-1)
        else:
            out = self._map(y)
        if self._nan is not None:
            out = torch.where(self._nan, torch.full((), float("nan"), dtype=out.dtype,
                                                    device=out.device), out)
        return out


def model_to_obs(soc_layers, depth=None, *, method: Method = "pchip", top=None,
                 bottom=None) -> torch.Tensor:
    """Map modelled per-layer SOC density (g C m-3) to observed layers (spec §6.1).

    One-shot form of :class:`ModelToObs` (build it once and call it repeatedly when the
    observation depths are fixed, e.g. in a sampler).

    Parameters
    ----------
    soc_layers : array_like or torch.Tensor
        SOC density of the 20 model layers at the node depths ``grid.ZSOI[:20]``,
        ``[B, 20]`` (g C m-3).
    depth : array_like or torch.Tensor, optional
        Observed node depths (m), ``[B, D]``, NaN-padded (required for ``"pchip"``).
    method : {"pchip", "pchip_mean", "layer_mean"}, default "pchip"
        See :class:`ModelToObs`.
    top, bottom : array_like or torch.Tensor, optional
        Observed layer bounds (m), ``[B, D]`` (required for the mean methods).

    Returns
    -------
    torch.Tensor
        ``[B, D]`` modelled SOC density at the observations (g C m-3), NaN where padded.

    Examples
    --------
    >>> soc = torch.full((2, 20), 1000.0, dtype=torch.float64)
    >>> model_to_obs(soc, [[0.05, 0.3], [0.1, float("nan")]]).tolist()
    [[1000.0, 1000.0], [1000.0, nan]]
    """
    dtype, device = dtype_device(soc_layers, depth, top, bottom)
    return ModelToObs(depth, method=method, top=top, bottom=bottom, dtype=dtype,
                      device=device)(soc_layers)
