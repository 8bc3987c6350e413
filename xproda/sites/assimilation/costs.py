"""Misfit costs, likelihoods, priors and fit statistics for profile data assimilation (§6.2).

Every function is batched over any leading dims (typically ``[B]`` profiles, or
``[chain, B]``) with the observations of a profile along the **last** axis, padded to a common
length ``D``.  Inputs are torch tensors or array_likes (converted to float64); results are
tensors, differentiable with respect to ``mod`` (and everything else), on the device of the
inputs.

Padding and missing values
--------------------------
An observation is *used* where ``obs`` is not NaN, its weight (if any) is not NaN, and the
optional boolean ``mask`` (True = use) is set.  Unused terms contribute nothing -- this is the
reference's ``nansum`` over the padded layers -- and get exactly zero gradient (they are
replaced before any arithmetic, so NaN never enters the graph).

A NaN **model** value at a used observation is *not* ignored: the cost (or statistic) of that
profile is NaN.  A failed or singular solve is thereby reported as a non-finite cost, which the
samplers treat as "singular" (spec §6.3), instead of silently scoring as a perfect fit.

Costs (lower is better)
-----------------------
| name       | J per profile                                    | provenance                 |
|------------|--------------------------------------------------|----------------------------|
| `cen`      | `sum_i w_i (m_i - o_i)^2 / (2 (0.6 o_i)^2)`      | `PUB:DA/cost_fun.m`        |
| `mic`      | `5 sum_i (m_i - o_i)^2 / sum_i (o_i - mean o)^2` | `MIC:DA/cost_fun.m` (v22)  |
| `gaussian` | `-log L` of :func:`gaussian_loglik`              | xproda (error model)       |

``cen`` (cen v2 and mic v7) uses the §5.2 layer weights and a fixed 60 % relative
observation error; ``mic`` (v22) is ``5 (1 - R^2)`` with no weights (weights passed to it
through the registry are ignored) and no error model; ``gaussian`` is a proper likelihood with
a configurable relative + absolute error, optionally on log SOC.

The registry :class:`Cost` / :func:`get_cost` gives the three under one calling convention
``cost(mod, obs, weights=None, *, mask=None, **options) -> Tensor[...]``.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable

import numpy as np
import torch

from xproda.models.interp import dtype_device, float_tensor

__all__ = [
    "cost_cen",
    "cost_mic",
    "cost_gaussian",
    "gaussian_loglik",
    "log_prior_uniform",
    "fit_stats",
    "fit_stats_log",
    "Cost",
    "COSTS",
    "get_cost",
    "CEN_RELATIVE_ERROR",
    "MIC_SCALE",
]

#: relative observation error of the cen cost ("as indicated in WoSIS dataset", spec §6.2)
CEN_RELATIVE_ERROR: float = 0.6
#: scale factor of the mic v22 cost (spec §6.2)
MIC_SCALE: float = 5.0

_LOG_2PI = math.log(2.0 * math.pi)


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


def _prepare(mod, obs, weights=None, mask=None):
    """Tensors broadcast to a common shape ``[..., D]`` and the mask of used terms.

    Returns ``mod, obs_safe, w_safe, used`` where unused entries of ``obs``/``weights`` are
    replaced by 1 (so nothing NaN or zero enters the arithmetic) and ``mod`` is left as is
    (callers replace it with :func:`_safe_mod`).
    """
    dtype, device = dtype_device(mod, obs, weights)
    m = float_tensor(mod, dtype, device)
    o = float_tensor(obs, dtype, device)
    tensors = [m, o]
    if weights is not None:
        tensors.append(float_tensor(weights, dtype, device))
    if mask is not None:
        mk = mask if isinstance(mask, torch.Tensor) else torch.as_tensor(np.asarray(mask))
        tensors.append(mk.to(device=device, dtype=torch.bool))
    tensors = torch.broadcast_tensors(*tensors)
    m, o = tensors[0], tensors[1]
    if m.ndim == 0:
        raise ValueError("mod and obs need an observation axis (the last axis)")
    used = ~torch.isnan(o)
    w = None
    if weights is not None:
        w = tensors[2]
        used = used & ~torch.isnan(w)
    if mask is not None:
        used = used & tensors[-1]
    one = torch.ones((), dtype=dtype, device=device)
    o_safe = torch.where(used, o, one)
    w_safe = None if w is None else torch.where(used, w, torch.zeros((), dtype=dtype,
                                                                        device=device))
    return m, o_safe, w_safe, used


def _safe_mod(m, o_safe, used):
    """Model values at used terms; the observation elsewhere (so the residual is 0 and no
    NaN from padded model values reaches the graph)."""
    return torch.where(used, m, o_safe)


def _zero_unused(term, used):
    return torch.where(used, term, torch.zeros((), dtype=term.dtype, device=term.device))


# --------------------------------------------------------------------------------------------
# costs of the reference code
# --------------------------------------------------------------------------------------------


def cost_cen(mod, obs, weights=None, *, mask=None,
             rel_error: float = CEN_RELATIVE_ERROR) -> torch.Tensor:
    """The cen misfit cost (spec §6.2, ``PUB:DA/cost_fun.m``; also used by mic v7).

    ``J = sum_i w_i (m_i - o_i)^2 / (2 (0.6 o_i)^2)``: a weighted least-squares misfit with a
    fixed 60 % relative observation error.  ``J`` is dimensionless; it is half the weighted
    chi-square, i.e. minus the weighted Gaussian log-likelihood up to a constant (see
    :func:`gaussian_loglik`).

    Parameters
    ----------
    mod : array_like or torch.Tensor
        Modelled SOC density at the observations (g C m-3), ``[..., D]``.
    obs : array_like or torch.Tensor
        Observed SOC density (g C m-3), ``[..., D]``; NaN marks padding.  Zero observations
        give an infinite cost (the reference removes them first, spec §5.2).
    weights : array_like or torch.Tensor, optional
        Layer weights ``w_i`` of spec §5.2 (dimensionless), ``[..., D]``; default 1.
    mask : array_like of bool, optional
        True where the observation is used (in addition to the NaN rule).
    rel_error : float, default 0.6
        Relative observation error (the reference's 0.6).

    Returns
    -------
    torch.Tensor
        ``J`` per profile, shape ``[...]`` (0 for a profile without observations).

    Examples
    --------
    The profile of spec §5.2 with its layer weights:

    >>> obs = [20000.0, 15000.0, 9000.0, 5000.0, 3000.0]
    >>> mod = [18000.0, 16000.0, 10000.0, 4000.0, 3500.0]
    >>> w = [10 * math.exp(-0.5), 1.0, 1.0, 1.0, 10 * math.exp(-0.5)]
    >>> round(float(cost_cen(mod, obs, w)), 6)
    0.397117
    """
    m, o, w, used = _prepare(mod, obs, weights, mask)
    m = _safe_mod(m, o, used)
    term = (m - o) ** 2 / (2.0 * (rel_error * o) ** 2)
    if w is not None:
        term = w * term
    return _zero_unused(term, used).sum(-1)


def cost_mic(mod, obs, *, mask=None) -> torch.Tensor:
    """The mic v22 misfit cost (spec §6.2, ``MIC:DA/cost_fun.m``).

    ``J = 5 sum_i (m_i - o_i)^2 / sum_i (o_i - mean(o))^2 = 5 (1 - R^2)`` with ``R^2`` the
    observation-based coefficient of determination (Nash-Sutcliffe efficiency).  No layer
    weights and no observation error.

    Parameters
    ----------
    mod, obs : array_like or torch.Tensor
        Modelled and observed SOC density (g C m-3), ``[..., D]``; NaN ``obs`` marks padding.
    mask : array_like of bool, optional
        True where the observation is used.

    Returns
    -------
    torch.Tensor
        ``J`` per profile (dimensionless), ``[...]``.  A profile with fewer than two used
        observations (or constant observations) has ``sum (o - mean(o))^2 = 0`` and gives
        ``inf`` (``NaN`` if the model also fits exactly); the reference skips such profiles.

    Examples
    --------
    >>> obs = [20000.0, 15000.0, 9000.0, 5000.0, 3000.0]
    >>> mod = [18000.0, 16000.0, 10000.0, 4000.0, 3500.0]
    >>> round(float(cost_mic(mod, obs)), 6)
    0.181978
    """
    m, o, _, used = _prepare(mod, obs, None, mask)
    m = _safe_mod(m, o, used)
    n = used.sum(-1, keepdim=True).to(o.dtype)
    omean = _zero_unused(o, used).sum(-1, keepdim=True) / n
    sse = _zero_unused((m - o) ** 2, used).sum(-1)
    sst = _zero_unused((o - omean) ** 2, used).sum(-1)
    return MIC_SCALE * sse / sst


# --------------------------------------------------------------------------------------------
# likelihood, prior
# --------------------------------------------------------------------------------------------


def gaussian_loglik(mod, obs, *, sigma_rel=CEN_RELATIVE_ERROR, sigma_abs=0.0, weights=None,
                    log_space: bool = False, mask=None) -> torch.Tensor:
    """Gaussian log-likelihood of the observations with a relative + absolute error model.

    Linear space (default): ``o_i ~ N(m_i, s_i^2)`` with
    ``s_i = sqrt((sigma_rel o_i)^2 + sigma_abs^2)`` (g C m-3), so

    ``log L = sum_i w_i [ -(m_i - o_i)^2 / (2 s_i^2) - log s_i - log(2 pi) / 2 ]``.

    With ``sigma_rel=0.6, sigma_abs=0`` and the §5.2 layer weights, ``-log L`` equals
    :func:`cost_cen` plus ``sum_i w_i (log(0.6 o_i) + log(2 pi)/2)``, a constant in the model
    parameters.

    Log space (``log_space=True``): ``log o_i ~ N(log m_i, s_i^2)`` with
    ``s_i = sqrt(sigma_rel^2 + (sigma_abs / o_i)^2)`` (the delta-method image of the same error
    model), and the Jacobian ``-log o_i`` is included so that ``L`` is a density of ``o`` in
    g C m-3 (log-normal) and comparable with the linear-space likelihood.  ``m_i <= 0`` gives
    ``-inf`` (the model sign-flips invalid states, spec §3.5); ``o_i <= 0`` gives NaN.

    Parameters
    ----------
    mod, obs : array_like or torch.Tensor
        Modelled and observed SOC density (g C m-3), ``[..., D]``; NaN ``obs`` marks padding.
    sigma_rel : float or array_like, default 0.6
        Relative error sd (dimensionless); broadcastable to ``[..., D]``.
    sigma_abs : float or array_like, default 0
        Absolute error sd (g C m-3); broadcastable to ``[..., D]``.
    weights : array_like or torch.Tensor, optional
        Per-observation exponents ``w_i`` (a tempered/weighted likelihood, e.g. the §5.2
        layer weights); default 1.
    log_space : bool, default False
        Errors on log SOC (log-normal) instead of SOC.
    mask : array_like of bool, optional
        True where the observation is used.

    Returns
    -------
    torch.Tensor
        ``log L`` per profile (normalising constants included), ``[...]``; 0 for a profile
        without observations.

    Examples
    --------
    >>> ll = gaussian_loglik([1.0], [1.0], sigma_rel=0.0, sigma_abs=1.0)
    >>> round(float(ll), 6) == round(-0.5 * math.log(2 * math.pi), 6)
    True
    """
    if isinstance(sigma_rel, (int, float)) and isinstance(sigma_abs, (int, float)):
        if sigma_rel < 0 or sigma_abs < 0 or (sigma_rel == 0 and sigma_abs == 0):
            raise ValueError(f"sigma_rel and sigma_abs must be >= 0 and not both 0, got "
                             f"sigma_rel={sigma_rel}, sigma_abs={sigma_abs}")
    m, o, w, used = _prepare(mod, obs, weights, mask)
    m = _safe_mod(m, o, used)
    sr = float_tensor(sigma_rel, o.dtype, o.device)
    sa = float_tensor(sigma_abs, o.dtype, o.device)
    if log_space:
        one = torch.ones((), dtype=o.dtype, device=o.device)
        pos = m > 0
        logm = torch.log(torch.where(pos, m, one))
        logo = torch.log(o)
        var = sr ** 2 + (sa / o) ** 2
        term = -0.5 * (logo - logm) ** 2 / var - 0.5 * torch.log(var) - 0.5 * _LOG_2PI - logo
        term = torch.where(pos, term, torch.full((), -math.inf, dtype=o.dtype, device=o.device))
    else:
        var = (sr * o) ** 2 + sa ** 2
        term = -0.5 * (m - o) ** 2 / var - 0.5 * torch.log(var) - 0.5 * _LOG_2PI
    if w is not None:
        term = w * term
    return _zero_unused(term, used).sum(-1)


def cost_gaussian(mod, obs, weights=None, *, mask=None, **options) -> torch.Tensor:
    """Negative Gaussian log-likelihood, ``-gaussian_loglik(...)`` (lower is better).

    Parameters
    ----------
    mod, obs, weights, mask
        As for :func:`gaussian_loglik`.
    **options
        ``sigma_rel``, ``sigma_abs``, ``log_space`` of :func:`gaussian_loglik`.

    Returns
    -------
    torch.Tensor
        ``-log L`` per profile, ``[...]``.

    Examples
    --------
    >>> float(cost_gaussian([2.0], [2.0], sigma_rel=0.0, sigma_abs=1.0)) > 0
    True
    """
    return -gaussian_loglik(mod, obs, weights=weights, mask=mask, **options)


def log_prior_uniform(theta) -> torch.Tensor:
    """Log density of the uniform prior on the open unit hypercube ``(0, 1)^P``.

    Parameters
    ----------
    theta : array_like or torch.Tensor
        Normalised parameters ``[..., P]``.

    Returns
    -------
    torch.Tensor
        ``0`` where every component is inside ``(0, 1)``, ``-inf`` otherwise (also for NaN),
        shape ``[...]``.

    Examples
    --------
    >>> log_prior_uniform([[0.5, 0.2], [0.5, 1.0], [0.0, 0.3]]).tolist()
    [0.0, -inf, -inf]
    """
    dtype, device = dtype_device(theta)
    th = float_tensor(theta, dtype, device)
    inside = ((th > 0) & (th < 1)).all(-1)
    zero = torch.zeros((), dtype=dtype, device=device)
    return torch.where(inside, zero, torch.full((), -math.inf, dtype=dtype, device=device))


# --------------------------------------------------------------------------------------------
# fit statistics
# --------------------------------------------------------------------------------------------


def fit_stats(mod, obs, *, mask=None) -> dict[str, torch.Tensor]:
    """Goodness-of-fit statistics per profile (NaN ``obs`` = padding).

    Parameters
    ----------
    mod, obs : array_like or torch.Tensor
        Modelled and observed values (e.g. g C m-3), ``[..., D]``.
    mask : array_like of bool, optional
        True where the observation is used.

    Returns
    -------
    dict of str to torch.Tensor
        Each of shape ``[...]``:

        * ``n`` -- number of used observations;
        * ``r2`` -- ``1 - SSE/SST`` with ``SST = sum (o - mean(o))^2``: the observation-based
          R^2 of the reference (``cost_mic = 5 (1 - r2)``; the post-DA filter of spec §5.3
          keeps profiles with max-chain ``r2 > 0.75``).  Can be negative; NaN for ``n < 2``
          or constant observations;
        * ``nse`` -- Nash-Sutcliffe efficiency; by definition identical to ``r2`` (reported
          under both names);
        * ``corr`` -- Pearson correlation of ``mod`` and ``obs`` (``corr**2`` is the
          regression R^2, which ignores bias);
        * ``rmse`` -- root-mean-square error ``sqrt(SSE/n)`` (units of ``obs``);
        * ``mae`` -- mean absolute error (units of ``obs``);
        * ``bias`` -- mean error ``mean(m - o)`` (units of ``obs``; positive = model too high).

        Profiles without used observations give NaN (``n = 0``).

    Examples
    --------
    >>> s = fit_stats([[1.0, 2.0, 4.0]], [[1.0, 3.0, 5.0]])
    >>> round(float(s["r2"][0]), 4), round(float(s["bias"][0]), 4), int(s["n"][0])
    (0.75, -0.6667, 3)
    """
    m, o, _, used = _prepare(mod, obs, None, mask)
    m = _safe_mod(m, o, used)
    dtype = o.dtype
    n = used.sum(-1).to(dtype)
    nk = n.unsqueeze(-1)
    e = _zero_unused(m - o, used)
    sse = (e ** 2).sum(-1)
    omean = _zero_unused(o, used).sum(-1, keepdim=True) / nk
    mmean = _zero_unused(m, used).sum(-1, keepdim=True) / nk
    do = _zero_unused(o - omean, used)
    dm = _zero_unused(m - mmean, used)
    sst = (do ** 2).sum(-1)
    r2 = 1.0 - sse / sst
    corr = (do * dm).sum(-1) / torch.sqrt(sst * (dm ** 2).sum(-1))
    nan = torch.full((), math.nan, dtype=dtype, device=o.device)
    few = n < 2
    return {
        "n": n,
        "r2": torch.where(few, nan, r2),
        "nse": torch.where(few, nan, r2),
        "corr": torch.where(few, nan, corr),
        "rmse": torch.sqrt(sse / n),
        "mae": e.abs().sum(-1) / n,
        "bias": e.sum(-1) / n,
    }


def fit_stats_log(mod, obs, *, mask=None) -> dict[str, torch.Tensor]:
    """:func:`fit_stats` of log SOC: the statistics in the space of a log-space likelihood.

    ``log m`` against ``log o`` over the used observations (NaN ``obs`` = padding) where
    ``o > 0`` and ``m > 0``: observations or model values ``<= 0`` have no logarithm and
    are left out (they count in neither ``n`` nor the sums; NaN never enters the graph). A
    NaN model value at a used observation still gives NaN, as in :func:`fit_stats`.

    The ``gaussian`` likelihood with ``log_space=True`` works in this space; ``cen`` works on
    SOC with residuals relative to the observation (``(m - o) / o``, to first order the log
    residual) and ``mic`` on SOC (``5 (1 - r2)`` of :func:`fit_stats`).

    Parameters
    ----------
    mod, obs : array_like or torch.Tensor
        Modelled and observed values (e.g. g C m-3), ``[..., D]``.
    mask : array_like of bool, optional
        True where the observation is used.

    Returns
    -------
    dict of str to torch.Tensor
        The keys of :func:`fit_stats` (``n``, ``r2``, ``nse``, ``corr``, ``rmse``, ``mae``,
        ``bias``) of the logs: ``rmse``, ``mae`` and ``bias`` are in log units (``bias`` is
        the mean log ratio ``mean(log(m / o))``); ``r2`` is NaN with fewer than two
        observations left.

    Examples
    --------
    Logs 0, 2, 2 against 0, 1, 2 (the fourth observation is padding): SSE = 1, SST = 2.

    >>> e = math.e
    >>> s = fit_stats_log([[1.0, e**2, e**2, 5.0]], [[1.0, e, e**2, float("nan")]])
    >>> int(s["n"][0]), round(float(s["r2"][0]), 6)
    (3, 0.5)
    >>> int(fit_stats_log([[1.0, -2.0, 4.0]], [[1.0, 3.0, 0.0]])["n"][0])
    1
    """
    m, o, _, used = _prepare(mod, obs, None, mask)
    one = torch.ones((), dtype=o.dtype, device=o.device)
    keep = used & (o > 0) & ~(m <= 0)  # NaN model values stay (they make the stat NaN)
    log_o = torch.log(torch.where(keep, o, one))
    log_m = torch.log(torch.where(keep, m, one))
    return fit_stats(log_m, log_o, mask=keep)


# --------------------------------------------------------------------------------------------
# registry
# --------------------------------------------------------------------------------------------


def _mic_registry(mod, obs, weights=None, *, mask=None, **options):
    if options:
        raise TypeError(f"cost 'mic' takes no options, got {sorted(options)}")
    return cost_mic(mod, obs, mask=mask)


def _cen_registry(mod, obs, weights=None, *, mask=None, **options):
    return cost_cen(mod, obs, weights, mask=mask, **options)


#: name -> callable ``(mod, obs, weights=None, *, mask=None, **options) -> Tensor[...]``
COSTS: dict[str, Callable[..., torch.Tensor]] = {
    "cen": _cen_registry,
    "mic": _mic_registry,
    "gaussian": cost_gaussian,
}


class Cost(str, enum.Enum):
    """The misfit costs by name, callable with one convention (lower is better).

    ``Cost(name)(mod, obs, weights=None, *, mask=None, **options) -> Tensor[...]``

    | member     | function                 | notes                                          |
    |------------|--------------------------|------------------------------------------------|
    | `CEN`      | :func:`cost_cen`         | §6.2 cen; §5.2 layer weights; `rel_error=0.6`  |
    | `MIC`      | :func:`cost_mic`         | §6.2 mic v22; `weights` ignored (none in ref.) |
    | `GAUSSIAN` | :func:`cost_gaussian`    | `sigma_rel`, `sigma_abs`, `log_space` options  |

    Examples
    --------
    >>> Cost("mic").uses_weights
    False
    >>> round(float(Cost.MIC([1.0, 2.0, 4.0], [1.0, 3.0, 5.0], [9.0, 9.0, 9.0])), 4)
    1.25
    """

    CEN = "cen"
    MIC = "mic"
    GAUSSIAN = "gaussian"

    @property
    def function(self) -> Callable[..., torch.Tensor]:
        """The underlying callable of :data:`COSTS`."""
        return COSTS[self.value]

    @property
    def uses_weights(self) -> bool:
        """Whether the layer weights enter the cost."""
        return self is not Cost.MIC

    def __call__(self, mod, obs, weights=None, *, mask=None, **options) -> torch.Tensor:
        return self.function(mod, obs, weights, mask=mask, **options)


def get_cost(name: str | Cost) -> Cost:
    """The cost registered under ``name`` (``"cen"``, ``"mic"`` or ``"gaussian"``).

    Examples
    --------
    >>> get_cost("cen") is Cost.CEN
    True
    """
    try:
        return Cost(name)
    except ValueError:
        raise ValueError(f"unknown cost {name!r}; choose from {sorted(COSTS)}") from None
