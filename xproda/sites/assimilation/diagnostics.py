"""MCMC convergence diagnostics, batched over any leading dims (sites, parameters, ...).

All functions take draws with a ``chain`` and a ``draw`` axis (by default the last two
axes, ``(..., chain, draw)``; pass ``chain_axis``/``draw_axis`` for other layouts such as
the samplers' ``(site, chain, draw, parameter)``, i.e. ``chain_axis=1, draw_axis=2``) and
reduce those two axes. NumPy arrays give NumPy results and torch tensors give torch tensors
(float64, on the input's device); the computation runs in NumPy/SciPy on the CPU in blocks
that bound the temporary memory.

Methods (Vehtari, Gelman, Simpson, Carpenter and Bürkner 2021, *Rank-normalization,
folding, and localization: an improved R-hat*, Bayesian Analysis 16, 667-718; Gelman et al.
2013, *Bayesian Data Analysis*, 3rd ed., §11.4-11.5):

- :func:`rhat`: ``"rank"`` (default) is the rank-normalised split R-hat, the maximum of the
  bulk (rank-normalised split chains) and tail (rank-normalised folded split chains)
  values; ``"split"`` is split R-hat on the raw draws (Gelman et al. 2013); ``"classic"``
  is the original Gelman-Rubin potential scale reduction factor without splitting.
- :func:`ess`: ``"bulk"`` (default) is the effective sample size of the rank-normalised
  split chains; ``"basic"`` uses the raw split chains; ``"tail"`` is the minimum of the
  ESS of the 5 % and 95 % quantile indicators. Autocorrelations come from FFTs and are
  truncated with Geyer's initial monotone sequence.
- :func:`acceptance_rate`: fraction of transitions in which the draw changed.
- :func:`reference_gelman_rubin`: the Gelman-Rubin statistic exactly as PRODA codes it
  (spec §6.3 item 5, including the "N of the last chain" quirk, bug §10.2 #25).

Constant draws (zero variance) give NaN for R-hat and ESS.

Examples
--------
>>> import numpy as np
>>> from xproda.sites.assimilation.diagnostics import rhat, ess
>>> x = np.random.default_rng(0).normal(size=(4, 1000))   # 4 chains of iid draws
>>> bool(abs(rhat(x) - 1) < 0.01)
True
>>> bool(3000 < ess(x) < 5000)
True
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from scipy import fft as _fft
from scipy import special as _special
from scipy import stats as _stats

__all__ = [
    "rhat",
    "ess",
    "rhat_ess",
    "acceptance_rate",
    "autocorrelation",
    "reference_gelman_rubin",
]

#: bound on the temporary memory of one block of the batched computations (bytes)
_BLOCK_BYTES = 64 * 2**20


def _to_numpy(x: Any) -> tuple[np.ndarray, torch.device | None]:
    if isinstance(x, torch.Tensor):
        return x.detach().to("cpu", torch.float64).numpy(), x.device
    return np.asarray(x, dtype=np.float64), None


def _from_numpy(out: np.ndarray, device: torch.device | None) -> Any:
    if device is None:
        return out if out.ndim else out[()]
    return torch.from_numpy(np.ascontiguousarray(out)).to(device)


def _flatten(x: np.ndarray, chain_axis: int, draw_axis: int) -> tuple[np.ndarray, tuple]:
    """Move (chain, draw) to the end and flatten the rest: [K, C, N], leading shape."""
    if x.ndim < 2:
        raise ValueError(f"draws need a chain and a draw axis; got shape {x.shape}")
    ca, da = chain_axis % x.ndim, draw_axis % x.ndim
    if ca == da:
        raise ValueError("chain_axis and draw_axis must differ")
    x = np.moveaxis(x, (ca, da), (-2, -1))
    lead = x.shape[:-2]
    return x.reshape((-1,) + x.shape[-2:]), lead


def _blocks(k: int, per_item_bytes: int) -> list[slice]:
    step = max(1, int(_BLOCK_BYTES // max(per_item_bytes, 1)))
    return [slice(i, min(i + step, k)) for i in range(0, k, step)] or [slice(0, 0)]


def _split(x: np.ndarray) -> np.ndarray:
    """[K, C, N] -> [K, 2C, N//2]: first and last halves (the middle draw of odd N dropped)."""
    half = x.shape[-1] // 2
    return np.concatenate([x[..., :half], x[..., x.shape[-1] - half:]], axis=-2)


def _z_scale(x: np.ndarray) -> np.ndarray:
    """Rank-normalise over all chains and draws of each batch item (average ranks for ties)."""
    k, c, n = x.shape
    flat = x.reshape(k, c * n)
    r = _stats.rankdata(flat, method="average", axis=-1)
    z = _special.ndtri((r - 0.375) / (c * n + 0.25))
    return z.reshape(k, c, n)


def _rhat_core(x: np.ndarray) -> np.ndarray:
    """Gelman-Rubin R-hat of [K, M, N] (M chains of N draws)."""
    n = x.shape[-1]
    with np.errstate(invalid="ignore", divide="ignore"):
        w = x.var(axis=-1, ddof=1).mean(axis=-1)
        b_over_n = x.mean(axis=-1).var(axis=-1, ddof=1)
        var_plus = (n - 1) / n * w + b_over_n
        out = np.sqrt(var_plus / w)
    out[~(w > 0)] = np.nan
    return out


def _autocov(x: np.ndarray) -> np.ndarray:
    """Biased autocovariance (divisor N) along the last axis, via FFT."""
    n = x.shape[-1]
    xc = x - x.mean(axis=-1, keepdims=True)
    nfft = _fft.next_fast_len(2 * n, real=True)
    f = _fft.rfft(xc, n=nfft, axis=-1)
    # |f|^2 as real squares: numpy's SIMD complex product rounds by position in the array,
    # which made a site's ESS depend on the other sites of the batch
    acov = _fft.irfft(f.real ** 2 + f.imag ** 2, n=nfft, axis=-1)[..., :n]
    return acov / n


def _ess_core(x: np.ndarray) -> np.ndarray:
    """ESS of [K, M, N] with Geyer's initial monotone sequence (Stan / Vehtari et al.)."""
    k, m, n = x.shape
    out = np.full(k, np.nan)
    if n < 4:
        return out
    for sl in _blocks(k, m * (2 * n + 2) * 16 * 3):
        xb = x[sl]
        acov = _autocov(xb)  # [kb, M, N]
        chain_mean = xb.mean(axis=-1)
        mean_var = acov[..., 0].mean(axis=-1) * n / (n - 1.0)
        var_plus = mean_var * (n - 1.0) / n
        if m > 1:
            var_plus = var_plus + chain_mean.var(axis=-1, ddof=1)
        with np.errstate(invalid="ignore", divide="ignore"):
            rho = 1.0 - (mean_var[:, None] - acov.mean(axis=1)) / var_plus[:, None]
        rho[:, 0] = 1.0
        n_pairs = (n - 2) // 2  # pairs (rho_2t, rho_2t+1) with 2t+1 <= N-3 (Stan's bound)
        pairs = rho[:, 0 : 2 * n_pairs : 2] + rho[:, 1 : 2 * n_pairs : 2]
        # initial positive sequence: pairs up to (excluding) the first non-positive one
        positive = np.cumprod(pairs > 0, axis=-1).astype(bool)
        # initial monotone sequence: running minimum
        mono = np.minimum.accumulate(np.where(np.isnan(pairs), -np.inf, pairs), axis=-1)
        tau = -1.0 + 2.0 * np.sum(np.where(positive, mono, 0.0), axis=-1)
        tau = np.maximum(tau, 1.0 / np.log10(m * n))
        e = m * n / tau
        bad = ~(var_plus > 0) | ~np.isfinite(e) | np.isnan(rho).any(axis=-1)
        e[bad] = np.nan
        out[sl] = e
    return out


def rhat(
    x: Any, *, chain_axis: int = -2, draw_axis: int = -1, method: str = "rank"
) -> Any:
    """Potential scale reduction factor R-hat, batched over all other axes.

    Parameters
    ----------
    x : array_like or Tensor
        Draws with a chain and a draw axis (at least 2 chains, or 1 chain with ``"rank"``
        or ``"split"``, which split every chain in halves).
    chain_axis, draw_axis : int
        Axes of chains and draws (default: the last two).
    method : {"rank", "split", "classic"}
        Rank-normalised split R-hat (Vehtari et al. 2021; the maximum of the bulk and the
        folded/tail version), split R-hat on raw draws (Gelman et al. 2013), or the
        classic Gelman-Rubin statistic without splitting.

    Returns
    -------
    ndarray or Tensor
        R-hat with the chain and draw axes removed (NaN for constant draws).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(1)
    >>> stuck = rng.normal(size=(3, 500)) + np.array([[0.0], [0.0], [3.0]])
    >>> bool(rhat(stuck) > 1.1)
    True
    """
    arr, dev = _to_numpy(x)
    flat, lead = _flatten(arr, chain_axis, draw_axis)
    if method == "classic":
        out = _rhat_core(flat)
    elif method == "split":
        out = _rhat_core(_split(flat))
    elif method == "rank":
        out = np.full(flat.shape[0], np.nan)
        for sl in _blocks(flat.shape[0], flat[0].size * 8 * 6):
            out[sl] = _rank_rhat(flat[sl])
    else:
        raise ValueError(f"method must be 'rank', 'split' or 'classic'; got {method!r}")
    return _from_numpy(out.reshape(lead), dev)


def _rank_rhat(xb: np.ndarray, zb: np.ndarray | None = None) -> np.ndarray:
    """Rank-normalised split R-hat of a block ``[n, chain, draw]``: max of bulk and tail.

    ``zb`` is the z-scaled split block when the caller already has it (shared with ESS).
    """
    if zb is None:
        zb = _z_scale(_split(xb))
    bulk = _rhat_core(zb)
    folded = np.abs(xb - np.median(xb.reshape(xb.shape[0], -1), axis=-1)[:, None, None])
    tail = _rhat_core(_z_scale(_split(folded)))
    out = np.fmax(bulk, tail)
    out[np.isnan(bulk)] = np.nan
    return out


def rhat_ess(x: Any, *, chain_axis: int = -2, draw_axis: int = -1) -> tuple[Any, Any]:
    """Rank-normalised split R-hat and bulk ESS together (the ranking is shared).

    Equal to ``(rhat(x, method="rank"), ess(x, method="bulk"))`` at about two thirds of
    the cost.

    Parameters
    ----------
    x : array_like or Tensor
        Draws with a chain and a draw axis.
    chain_axis, draw_axis : int
        Axes of chains and draws (default: the last two).

    Returns
    -------
    rhat, ess : ndarray or Tensor

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(0).normal(size=(2, 4, 500))
    >>> r, e = rhat_ess(x)
    >>> bool(np.allclose(r, rhat(x)) and np.allclose(e, ess(x)))
    True
    """
    arr, dev = _to_numpy(x)
    flat, lead = _flatten(arr, chain_axis, draw_axis)
    r = np.full(flat.shape[0], np.nan)
    e = np.full(flat.shape[0], np.nan)
    for sl in _blocks(flat.shape[0], flat[0].size * 8 * 6):
        xb = flat[sl]
        zb = _z_scale(_split(xb))
        r[sl] = _rank_rhat(xb, zb)
        e[sl] = _ess_core(zb)
    return _from_numpy(r.reshape(lead), dev), _from_numpy(e.reshape(lead), dev)


def ess(x: Any, *, chain_axis: int = -2, draw_axis: int = -1, method: str = "bulk") -> Any:
    """Effective sample size, batched over all other axes.

    Parameters
    ----------
    x : array_like or Tensor
        Draws with a chain and a draw axis.
    chain_axis, draw_axis : int
        Axes of chains and draws (default: the last two).
    method : {"bulk", "basic", "tail"}
        Bulk ESS of the rank-normalised split chains (Vehtari et al. 2021), ESS of the raw
        split chains, or tail ESS (minimum over the 5 % and 95 % quantile indicators).

    Returns
    -------
    ndarray or Tensor
        ESS (in draws, summed over chains) with the chain and draw axes removed.

    Notes
    -----
    The autocorrelation at lag t is ``1 - (W - mean_m acov_m(t)) / var_plus``, computed
    from FFT autocovariances of every chain; the sum of consecutive pairs of
    autocorrelations is truncated at the first non-positive pair and made monotone
    (Geyer 1992). ``ESS = M N / tau`` with ``tau = -1 + 2 sum(pairs)``, bounded below by
    ``1 / log10(M N)``.

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(2)
    >>> rho, n = 0.9, 20000
    >>> e = rng.normal(size=(2, n)) * np.sqrt(1 - rho**2)
    >>> ar = np.zeros((2, n))
    >>> for t in range(1, n):
    ...     ar[:, t] = rho * ar[:, t - 1] + e[:, t]
    >>> expected = 2 * n * (1 - rho) / (1 + rho)
    >>> bool(0.8 < ess(ar, method="basic") / expected < 1.2)
    True
    """
    arr, dev = _to_numpy(x)
    flat, lead = _flatten(arr, chain_axis, draw_axis)
    if method == "basic":
        out = _ess_core(_split(flat))
    elif method == "bulk":
        out = np.full(flat.shape[0], np.nan)
        for sl in _blocks(flat.shape[0], flat[0].size * 8 * 4):
            out[sl] = _ess_core(_z_scale(_split(flat[sl])))
    elif method == "tail":
        out = np.full(flat.shape[0], np.nan)
        for sl in _blocks(flat.shape[0], flat[0].size * 8 * 4):
            xb = flat[sl]
            pooled = xb.reshape(xb.shape[0], -1)
            q05, q95 = np.quantile(pooled, [0.05, 0.95], axis=-1)
            e05 = _ess_core(_split((xb <= q05[:, None, None]).astype(float)))
            e95 = _ess_core(_split((xb <= q95[:, None, None]).astype(float)))
            out[sl] = np.fmin(e05, e95)
    else:
        raise ValueError(f"method must be 'bulk', 'basic' or 'tail'; got {method!r}")
    return _from_numpy(out.reshape(lead), dev)


def autocorrelation(x: Any, *, axis: int = -1) -> Any:
    """Autocorrelation function along ``axis`` (FFT, biased estimator, lag 0 = 1).

    Parameters
    ----------
    x : array_like or Tensor
        Series; any other axes are batch axes.
    axis : int
        Time axis.

    Returns
    -------
    ndarray or Tensor
        Same shape as ``x``.

    Examples
    --------
    >>> import numpy as np
    >>> float(autocorrelation(np.array([1.0, -1.0, 1.0, -1.0]))[1])
    -0.75
    """
    arr, dev = _to_numpy(x)
    arr = np.moveaxis(arr, axis, -1)
    acov = _autocov(arr)
    with np.errstate(invalid="ignore", divide="ignore"):
        out = acov / acov[..., :1]
    return _from_numpy(np.moveaxis(out, -1, axis), dev)


def acceptance_rate(
    x: Any, *, draw_axis: int = -2, param_axis: int | None = -1
) -> Any:
    """Fraction of transitions in which the state changed, batched over the other axes.

    Parameters
    ----------
    x : array_like or Tensor
        Draws, e.g. ``(site, chain, draw, parameter)`` with the defaults
        ``draw_axis=-2, param_axis=-1``.
    draw_axis : int
        Axis of the draws (consecutive iterations, not thinned).
    param_axis : int or None
        Axis of the parameters (a transition counts as accepted when any parameter
        changed); None when ``x`` holds a single parameter.

    Returns
    -------
    ndarray or Tensor
        Acceptance rate with the draw (and parameter) axes removed.

    Examples
    --------
    >>> import numpy as np
    >>> float(acceptance_rate(np.array([0.1, 0.1, 0.3, 0.2]), draw_axis=0, param_axis=None))
    0.6666666666666666
    """
    arr, dev = _to_numpy(x)
    changed = np.diff(arr, axis=draw_axis) != 0
    if param_axis is not None:
        pa = param_axis % arr.ndim
        changed = changed.any(axis=pa)
        da = draw_axis % arr.ndim
        da = da - 1 if da > pa else da
    else:
        da = draw_axis % arr.ndim
    out = changed.mean(axis=da)
    return _from_numpy(np.asarray(out, dtype=np.float64), dev)


def reference_gelman_rubin(samples: Any, counts: Any) -> Any:
    """Gelman-Rubin statistic as coded in PRODA (spec §6.3 item 5), batched.

    Parameters
    ----------
    samples : array_like or Tensor, shape (..., chain, draw, parameter)
        Post-burn-in samples of every chain, left-aligned; entries at ``draw >= counts``
        are padding and ignored.
    counts : array_like or Tensor, shape (..., chain)
        Number of valid samples per chain.

    Returns
    -------
    ndarray or Tensor, shape (..., parameter)
        ``sqrt(((N - 1)/N W + B/N) / W)`` with ``B = N/(C-1) sum_c (mean_c - mean)^2``,
        ``W = 1/(C (N-1)) sum_c sum_i (x_ci - mean_c)^2`` and, as in the reference code,
        ``N`` = the sample count of the **last** chain used for every chain (bug §10.2
        #25); each chain's mean and sum of squares use its own samples.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.random.default_rng(3).normal(size=(3, 2000, 1))
    >>> r = reference_gelman_rubin(x, np.array([2000, 2000, 2000]))
    >>> bool(abs(r[0] - 1) < 0.01)
    True
    """
    arr, dev = _to_numpy(samples)
    cnt, _ = _to_numpy(counts)
    c, n_max = arr.shape[-3], arr.shape[-2]
    valid = np.arange(n_max) < cnt[..., None]  # [..., C, N]
    x = np.where(valid[..., None], arr, 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        chain_mean = x.sum(axis=-2) / cnt[..., None]  # [..., C, P]
        grand = chain_mean.mean(axis=-2)  # [..., P]
        n = cnt[..., -1][..., None]  # [..., 1]
        b = n / (c - 1) * ((chain_mean - grand[..., None, :]) ** 2).sum(axis=-2)
        ss = np.where(valid[..., None], (arr - chain_mean[..., None, :]) ** 2, 0.0)
        w = ss.sum(axis=(-3, -2)) / (c * (n - 1))
        out = np.sqrt(((n - 1) / n * w + b / n) / w)
    return _from_numpy(out, dev)
