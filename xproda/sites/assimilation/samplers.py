"""Batched, model-agnostic samplers and optimisers: every site and chain in one target call.

The caller supplies a **batched target** on normalised parameters ``theta`` in (0, 1)^P:

- :func:`adaptive_metropolis` takes ``log_density(theta[B, P]) -> Tensor[B]`` (higher is
  better; ``-inf`` or NaN for invalid or singular points);
- :func:`reference_sampler` takes ``cost(theta[B, P]) -> Tensor[B]`` (lower is better;
  non-finite = singular solve), optionally returning ``(cost, prediction[B, L])``;
- :func:`map_estimate` takes a differentiable ``loss(theta[B, P]) -> Tensor[B]``.

**Batch layout.** ``B = n_sites * k`` where ``k`` is the number of chains (or starts) the
method runs per site, stacked **site-major**: row ``b`` belongs to site ``b // k`` and
chain ``b % k``, i.e. ``theta.view(n_sites, k, P)``. A target written for this layout
works for any ``k`` (``k = theta.shape[0] // n_sites``); :func:`reference_sampler` with
``chains="sequential"`` (its default) uses ``k = 1``. One call evaluates every site and
chain at once, so a single batched model solve serves all sites. Sites are independent:
each has its own state, proposal covariance and acceptance counts.

Computations use float64 on the device given by ``device=`` (default: the ``device``
option of :func:`xproda.set_options`, else CPU) with a ``torch.Generator`` seeded by
``seed``; on the CPU results are bit-for-bit reproducible, and a run resumed from a
checkpoint equals the uninterrupted run (see :mod:`xproda.sites.assimilation.checkpoint`).
Results for one site depend on the seed and on the whole batch (the random numbers of all
sites come from one stream), not on the site alone.

Examples
--------
Fifty independent sites whose posteriors are Gaussians truncated to (0, 1):

>>> import torch
>>> from xproda.sites.assimilation.samplers import adaptive_metropolis, map_estimate
>>> mu = torch.linspace(0.3, 0.7, 50)[:, None].repeat(1, 2)       # [sites, P]
>>> def log_density(theta):                                       # theta: [50 * k, 2]
...     k = theta.shape[0] // 50
...     return -0.5 * (((theta.view(50, k, 2) - mu[:, None]) / 0.05) ** 2).sum(-1).reshape(-1)
>>> res = adaptive_metropolis(log_density, n_sites=50, n_params=2, n_iter=2000,
...                           progress=False)
>>> bool((res.mean - mu).abs().max() < 0.02), bool(res.rhat.max() < 1.1)
(True, True)
>>> fit = map_estimate(lambda th: -log_density(th), n_sites=50, n_params=2,
...                    method="lbfgs", progress=False)
>>> bool((fit.theta_map - mu).abs().max() < 1e-6)
True
"""

from __future__ import annotations

import hashlib
import math
import os
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from xproda import conventions
from xproda.sites.assimilation import diagnostics as _diag
from xproda.sites.assimilation.checkpoint import (
    checkpoint_exists,
    load_checkpoint,
    normalize_settings,
    save_checkpoint,
)

__all__ = [
    "SamplerResult",
    "MapResult",
    "adaptive_metropolis",
    "reference_sampler",
    "map_estimate",
    "batch_mode",
    "annealed_acceptance_probability",
]

_F64 = torch.float64

Target = Callable[[Tensor], Any]


# ----------------------------------------------------------------------------- helpers


def _device(device: str | torch.device | None) -> torch.device:
    if device is None:
        from xproda.options import get_options

        device = get_options().get("device") or "cpu"
    return torch.device(device)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def _call(fn: Target, theta: Tensor, n: int, what: str) -> tuple[Tensor, Tensor | None]:
    """Call a batched target; returns (values [n] float64, optional extra [n, ...])."""
    out = fn(theta)
    extra = None
    if isinstance(out, tuple):
        if len(out) != 2:
            raise ValueError(f"{what} must return a tensor or a (value, prediction) pair")
        out, extra = out
        extra = torch.as_tensor(extra, device=theta.device).to(_F64).reshape(n, -1)
    val = torch.as_tensor(out, device=theta.device)
    if val.numel() != n:
        raise ValueError(
            f"{what} returned {val.numel()} values for a batch of {n} rows; it must return "
            "one value per row, shape [B]"
        )
    return val.to(_F64).reshape(n), extra


def _tensor_init(init: Any, device: torch.device) -> Tensor | None:
    if init is None:
        return None
    return torch.as_tensor(init, dtype=_F64, device=device)


def _hash_tensor(x: Tensor | None) -> str | None:
    if x is None:
        return None
    return hashlib.sha1(x.detach().to("cpu", _F64).contiguous().numpy().tobytes()).hexdigest()


def _progress(progress: bool, total: int, initial: int, desc: str):
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not progress, desc=desc, unit="it",
                dynamic_ncols=True, leave=False)


def _safe_cholesky(cov: Tensor, floor: float, *, out: Tensor) -> Tensor:
    """Batched Cholesky into ``out``; rows where it fails get the diagonal square root.

    Returns the per-row success mask.
    """
    info = torch.empty(cov.shape[0], dtype=torch.int32, device=cov.device)
    torch.linalg.cholesky_ex(cov, out=(out, info))
    ok = info == 0
    if not bool(ok.all()):
        bad = (~ok).nonzero().squeeze(1)
        diag = torch.diagonal(cov[bad], dim1=-2, dim2=-1).clamp_min(floor).sqrt()
        out[bad] = torch.diag_embed(diag)
    return ok


def _check_resume_settings(meta: Mapping[str, Any], settings: Mapping[str, Any], path: Any):
    old = meta.get("settings")
    new = normalize_settings(settings)
    if old != new:
        diff = sorted(k for k in set(old or {}) | set(new) if (old or {}).get(k) != new.get(k))
        raise ValueError(
            f"checkpoint {path} was written with different settings ({', '.join(diff)}); "
            "use resume=False or a new checkpoint path"
        )


def annealed_acceptance_probability(
    delta_cost: Tensor, n: Tensor | int, *, annealing: bool = True
) -> Tensor:
    """Acceptance probability of the PRODA sampler, ``min(1, exp(-dJ ln(n + 2)))``.

    Parameters
    ----------
    delta_cost : Tensor
        Cost increase ``J' - J_old`` (already penalised).
    n : Tensor or int
        Iteration index within the stage (1-based).
    annealing : bool
        If False, the corrected (non-annealed) rule ``min(1, exp(-dJ))`` (bug §10.2 #17).

    Returns
    -------
    Tensor
        Probabilities in [0, 1]; NaN ``delta_cost`` gives 1, like MATLAB's ``min(1, NaN)``.

    Examples
    --------
    >>> import torch
    >>> p = annealed_acceptance_probability(torch.tensor([0.0, 1.0, -1.0]), 1)
    >>> [round(v, 6) for v in p.tolist()]
    [1.0, 0.333333, 1.0]
    """
    delta = torch.as_tensor(delta_cost, dtype=_F64)
    n_t = torch.as_tensor(n, dtype=_F64, device=delta.device)
    temp = torch.log(n_t + 2.0) if annealing else torch.ones_like(n_t)
    p = torch.exp(-delta * temp).clamp(max=1.0)
    return torch.where(torch.isnan(p), torch.ones_like(p), p)


class _State(dict):
    """A dict of tensors with attribute access (serialised as-is into checkpoints)."""

    __getattr__ = dict.__getitem__

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def _save_state(path: Any, st: _State, gen: torch.Generator, settings: Mapping, scalars: Mapping):
    tensors = dict(st)
    tensors["rng_state"] = gen.get_state()
    save_checkpoint(path, tensors, {"settings": normalize_settings(settings), **scalars})


def _load_state(path: Any, gen: torch.Generator, settings: Mapping, device: torch.device):
    tensors, meta = load_checkpoint(path, device=device)
    _check_resume_settings(meta, settings, path)
    gen.set_state(tensors.pop("rng_state"))
    return _State(tensors), meta


# ----------------------------------------------------------------------------- results


def _attr_value(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    if v is None:
        return "none"
    if isinstance(v, (int, float, str)):
        return v
    if isinstance(v, (list, tuple)) and all(
        isinstance(e, (int, float)) and not isinstance(e, bool) for e in v
    ):
        return np.asarray(v)
    return str(v)


def _np(x: Tensor) -> np.ndarray:
    x = x.detach().to("cpu")
    if x.dtype == torch.bool:
        return x.numpy()
    if x.is_floating_point():
        return x.to(_F64).numpy()
    return x.numpy()


def _param_coord(names: Sequence[str] | None, p: int) -> np.ndarray:
    if names is None:
        names = [f"theta_{i}" for i in range(p)]
    names = [str(n) for n in names]
    if len(names) != p:
        raise ValueError(f"param_names has {len(names)} names for {p} parameters")
    return np.asarray(names, dtype=object)


class _ToFiles:
    def to_netcdf(self, path: str | os.PathLike, **kwargs: Any) -> Any:
        """Write :meth:`to_dataset` to NetCDF (``kwargs`` go to ``Dataset.to_netcdf``)."""
        return self.to_dataset().to_netcdf(path, **kwargs)

    def to_zarr(self, store: Any, **kwargs: Any) -> Any:
        """Write :meth:`to_dataset` to Zarr (``kwargs`` go to ``Dataset.to_zarr``)."""
        with warnings.catch_warnings():
            # zarr warns that consolidated metadata is not part of the v3 spec (yet)
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            return self.to_dataset().to_zarr(store, **kwargs)


@dataclass
class SamplerResult(_ToFiles):
    """Output of :func:`adaptive_metropolis` and :func:`reference_sampler`.

    Attributes
    ----------
    method : str
        ``"adaptive_metropolis"`` or ``"reference"``.
    samples : Tensor or None
        Post-burn-in draws ``[site, chain, draw, parameter]`` (None if not stored). For the
        reference sampler the accepted samples after burn-in, left-aligned and NaN-padded
        (chains have different lengths).
    mean, sd : Tensor
        Posterior mean and standard deviation ``[site, parameter]`` (AM: pooled over chains;
        reference: PRODA's optimal chain).
    best : Tensor
        Best state ``[site, parameter]``: highest log density (AM) or lowest accepted cost
        (reference).
    best_value : Tensor
        Its log density or cost ``[site]``.
    rhat, ess : Tensor
        Rank-normalised split R-hat and bulk ESS ``[site, parameter]``.
    acceptance : Tensor
        Acceptance rate ``[site, chain]`` (AM: after burn-in; reference: accepted stage-2
        proposals / ``nsimu2`` of the final chain attempt).
    n_accepted : Tensor
        Accepted proposals ``[site, chain]`` (reference: ``upgrade2``).
    settings : dict
        The sampler's settings (stored as dataset attrs).
    param_names : list of str, optional
        Names for the ``parameter`` coordinate.
    extras : dict
        Method-specific outputs, ``name -> (dims, tensor)``.
    """

    method: str
    samples: Tensor | None
    mean: Tensor
    sd: Tensor
    best: Tensor
    best_value: Tensor
    rhat: Tensor
    ess: Tensor
    acceptance: Tensor
    n_accepted: Tensor
    settings: dict[str, Any]
    param_names: list[str] | None = None
    extras: dict[str, tuple[tuple[str, ...], Tensor]] = field(default_factory=dict)

    @property
    def n_sites(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_params(self) -> int:
        return int(self.mean.shape[1])

    @property
    def n_chains(self) -> int:
        return int(self.acceptance.shape[1])

    def to_dataset(
        self, *, param_names: Sequence[str] | None = None, site: Any = None
    ) -> "xr.Dataset":  # noqa: F821
        """The result as an :class:`xarray.Dataset`.

        Parameters
        ----------
        param_names : sequence of str, optional
            Values of the ``parameter`` coordinate (default: the names given to the sampler,
            else ``theta_0, theta_1, ...``).
        site : array_like, optional
            Values of the ``site`` coordinate (default ``0..n_sites-1``).

        Returns
        -------
        xarray.Dataset
            ``samples`` (site, chain, draw, parameter), ``mean``, ``sd``, ``best``, ``rhat``,
            ``ess`` (site, parameter), ``best_value`` (site), ``acceptance``, ``n_accepted``
            (site, chain) and the method's extras; attrs hold the method and settings.
        """
        import xarray as xr

        names = _param_coord(param_names or self.param_names, self.n_params)
        coords: dict[str, Any] = {
            "site": np.arange(self.n_sites) if site is None else np.asarray(site),
            "chain": np.arange(self.n_chains),
            "parameter": names,
        }
        dv: dict[str, Any] = {}
        if self.samples is not None:
            coords["draw"] = np.arange(self.samples.shape[2])
            dv["samples"] = (("site", "chain", "draw", "parameter"), _np(self.samples))
        for name in ("mean", "sd", "best", "rhat", "ess"):
            dv[name] = (("site", "parameter"), _np(getattr(self, name)))
        dv["best_value"] = (("site",), _np(self.best_value))
        dv["acceptance"] = (("site", "chain"), _np(self.acceptance))
        dv["n_accepted"] = (("site", "chain"), _np(self.n_accepted))
        for name, (dims, value) in self.extras.items():
            dv[name] = (tuple(dims), _np(value))
            if "statistic" in dims:
                coords["statistic"] = ["r2", "rmse"]
        ds = conventions.annotate(xr.Dataset(dv, coords=coords), "assimilation")
        ds.attrs = {"method": self.method}
        ds.attrs.update({k: _attr_value(v) for k, v in self.settings.items()})
        return ds


@dataclass
class MapResult(_ToFiles):
    """Output of :func:`map_estimate`.

    Attributes
    ----------
    theta_map : Tensor
        Best normalised parameters per site ``[site, parameter]`` (best start).
    loss : Tensor
        Loss at ``theta_map`` ``[site]``.
    n_steps : Tensor
        Optimiser steps of the selected start ``[site]``.
    converged : Tensor
        Whether the selected start met the convergence criteria ``[site]``.
    best_start : Tensor
        Index of the selected start ``[site]``.
    start_theta, start_loss, start_converged, start_n_steps : Tensor
        The same per start, ``[site, start, ...]``.
    method : str
        ``"adam"`` or ``"lbfgs"``.
    settings : dict
    param_names : list of str, optional
    """

    theta_map: Tensor
    loss: Tensor
    n_steps: Tensor
    converged: Tensor
    best_start: Tensor
    start_theta: Tensor
    start_loss: Tensor
    start_converged: Tensor
    start_n_steps: Tensor
    method: str
    settings: dict[str, Any]
    param_names: list[str] | None = None

    @property
    def theta(self) -> Tensor:
        """Alias of :attr:`theta_map`."""
        return self.theta_map

    def to_dataset(
        self, *, param_names: Sequence[str] | None = None, site: Any = None
    ) -> "xr.Dataset":  # noqa: F821
        """The result as an :class:`xarray.Dataset` (``map``, ``loss``, per-start values).

        Parameters
        ----------
        param_names : sequence of str, optional
            Values of the ``parameter`` coordinate.
        site : array_like, optional
            Values of the ``site`` coordinate.

        Returns
        -------
        xarray.Dataset
        """
        import xarray as xr

        s, k, p = self.start_theta.shape
        names = _param_coord(param_names or self.param_names, p)
        ds = xr.Dataset(
            {
                "map": (("site", "parameter"), _np(self.theta_map)),
                "loss": (("site",), _np(self.loss)),
                "converged": (("site",), _np(self.converged)),
                "n_steps": (("site",), _np(self.n_steps)),
                "best_start": (("site",), _np(self.best_start)),
                "start_map": (("site", "start", "parameter"), _np(self.start_theta)),
                "start_loss": (("site", "start"), _np(self.start_loss)),
                "start_converged": (("site", "start"), _np(self.start_converged)),
                "start_n_steps": (("site", "start"), _np(self.start_n_steps)),
            },
            coords={
                "site": np.arange(s) if site is None else np.asarray(site),
                "start": np.arange(k),
                "parameter": names,
            },
        )
        ds = conventions.annotate(ds, "assimilation")
        ds.attrs = {"method": f"map_{self.method}"}
        ds.attrs.update({kk: _attr_value(v) for kk, v in self.settings.items()})
        return ds


# ----------------------------------------------------------------------------- AM


def adaptive_metropolis(
    log_density: Target,
    *,
    n_sites: int,
    n_params: int,
    n_chains: int = 3,
    n_iter: int = 20000,
    burn_in: int | None = None,
    thin: int = 1,
    max_draws: int | None = None,
    init: Any = None,
    init_scale: float = 0.05,
    adapt_start: int | None = None,
    adapt_every: int = 20,
    scale: float | None = None,
    eps: float = 1e-6,
    transform: str = "box",
    store_draws: bool = True,
    store_dtype: torch.dtype = torch.float64,
    store_device: str | torch.device | None = None,
    diagnostics: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    param_names: Sequence[str] | None = None,
) -> SamplerResult:
    """Adaptive Metropolis (Haario, Saksman and Tamminen 2001) for every site and chain.

    Each of the ``n_sites * n_chains`` chains proposes ``theta' ~ N(theta, C_t)`` with
    ``C_t = scale * (Cov(theta_0..theta_{t-1}) + eps I)`` from the chain's own history once
    ``t >= adapt_start`` (``init_scale^2 I`` before), and accepts with
    ``log u < log_density(theta') - log_density(theta)``. One call of ``log_density``
    evaluates all chains of all sites.

    Parameters
    ----------
    log_density : callable
        ``log_density(theta[B, P]) -> Tensor[B]`` with ``B = n_sites * n_chains`` rows,
        site-major (``theta.view(n_sites, n_chains, P)``); ``-inf``/NaN marks invalid
        points. It is only ever called with points strictly inside (0, 1)^P.
    n_sites, n_params : int
        Number of independent sites and parameters P.
    n_chains : int
        Chains per site (default 3; at least 2 for R-hat).
    n_iter : int
        Iterations per chain (each is one ``log_density`` call for the whole batch).
    burn_in : int, optional
        Iterations discarded (default ``n_iter // 2``).
    thin : int
        Keep every ``thin``-th post-burn-in draw.
    max_draws : int, optional
        Upper bound on the kept draws per chain; ``thin`` is raised as needed.
    init : array_like, optional
        Starting points ``[n_sites, P]`` (chain 0 of each site; the other chains start
        dispersed) or ``[n_sites, n_chains, P]``. Default: uniform in (0.1, 0.9).
    init_scale : float
        Standard deviation of the initial (non-adapted) proposal, in theta units.
    adapt_start : int, optional
        Iteration from which the empirical covariance is used (default
        ``max(2P, min(1000, n_iter // 10))``).
    adapt_every : int
        The proposal covariance (and its Cholesky factor) is recomputed every
        ``adapt_every`` iterations (default 20; 1 = every iteration as in Haario et al.).
        The running covariance includes every state; updating it in blocks of
        ``adapt_every`` states turns ``adapt_every`` rank-one updates into one batched
        matrix product, which is what keeps the sampler's overhead small for large
        batches.
    scale : float, optional
        Scaling of the empirical covariance (default ``2.38**2 / P``, Haario et al. 2001).
    eps : float
        Regularisation added to the empirical covariance before scaling.
    transform : {"box", "logit"}
        ``"box"`` (default): random walk in theta; proposals outside (0, 1)^P are rejected
        (the target is zero outside the box, so detailed balance holds) without calling
        ``log_density`` for them. ``"logit"``: random walk in ``z = logit(theta)`` with the
        log-Jacobian ``sum log(theta (1 - theta))`` added, so no proposal leaves the box;
        ``init_scale`` then applies in z units multiplied by 4.
    store_draws : bool
        Keep the post-burn-in draws (needed for rank R-hat and ESS; without them R-hat is
        the classic Gelman-Rubin value from running chain moments and ESS is NaN).
    store_dtype : torch.dtype
        Dtype of stored draws (``torch.float32`` halves the memory). Memory of the draws is
        ``n_sites * n_chains * n_draws * P * itemsize``: 1,000 sites x 3 chains x 10,000
        draws x 21 parameters is 5 GB in float64, 2.5 GB in float32; use ``thin`` or
        ``max_draws`` to bound it.
    store_device : str or torch.device, optional
        Device of the stored draws (default: the computation device).
    diagnostics : bool
        Compute rank-normalised R-hat and bulk ESS from the stored draws at the end (on
        the CPU; about 10 s per 30 million stored values). If False, ``rhat`` is the
        classic Gelman-Rubin value from the running chain moments and ``ess`` is NaN;
        :func:`xproda.sites.assimilation.diagnostics.rhat_ess` computes them later.
    seed : int
        Seed of the ``torch.Generator``.
    device : str or torch.device, optional
        Computation device.
    progress : bool
        Show a tqdm progress bar.
    checkpoint : path-like, optional
        Checkpoint file (safetensors + JSON; see :mod:`xproda.sites.assimilation.checkpoint`).
    checkpoint_every : int, optional
        Iterations between checkpoints (rounded up to a multiple of ``adapt_every``;
        default ``n_iter // 20``). A final checkpoint is written at the end.
    resume : bool
        Continue from ``checkpoint`` if it exists (settings must match); the result is
        identical to an uninterrupted run with the same seed.
    param_names : sequence of str, optional
        Parameter names for :meth:`SamplerResult.to_dataset`.

    Returns
    -------
    SamplerResult
        ``mean``/``sd`` over all post-burn-in iterations (running moments, pooled over
        chains; not affected by thinning), ``rhat``/``ess`` from the stored draws,
        ``acceptance`` after burn-in, ``best`` = highest log density visited; extras
        ``acceptance_total`` (site, chain) over all iterations and ``chain_mean``,
        ``chain_sd`` (site, chain, parameter).
    """
    dev = _device(device)
    S, C, P = int(n_sites), int(n_chains), int(n_params)
    if S < 1 or C < 1 or P < 1 or n_iter < 1:
        raise ValueError("n_sites, n_chains, n_params and n_iter must be >= 1")
    if transform not in ("box", "logit"):
        raise ValueError(f"transform must be 'box' or 'logit'; got {transform!r}")
    B = S * C
    burn_in = n_iter // 2 if burn_in is None else int(burn_in)
    if not 0 <= burn_in < n_iter:
        raise ValueError(f"burn_in must be in [0, n_iter); got {burn_in}")
    n_post = n_iter - burn_in
    thin = max(1, int(thin))
    if max_draws is not None:
        thin = max(thin, math.ceil(n_post / max(1, int(max_draws))))
    n_draws = n_post // thin if store_draws else 0
    scale = 2.38**2 / P if scale is None else float(scale)
    if adapt_start is None:
        adapt_start = max(2 * P, min(1000, n_iter // 10))
    adapt_every = max(1, int(adapt_every))
    if checkpoint_every is None:
        checkpoint_every = max(1, n_iter // 20)
    checkpoint_every = math.ceil(int(checkpoint_every) / adapt_every) * adapt_every
    sdev = dev if store_device is None else torch.device(store_device)
    init_t = _tensor_init(init, dev)
    if init_t is not None and init_t.shape not in ((S, P), (S, C, P)):
        raise ValueError(
            f"init must have shape [{S}, {P}] or [{S}, {C}, {P}]; got {tuple(init_t.shape)}")
    settings = dict(
        n_sites=S, n_params=P, n_chains=C, n_iter=int(n_iter), burn_in=burn_in, thin=thin,
        n_draws=n_draws, init_scale=float(init_scale), adapt_start=int(adapt_start),
        adapt_every=adapt_every, scale=scale, eps=float(eps), transform=transform,
        store_draws=bool(store_draws), store_dtype=str(store_dtype), seed=int(seed),
        init_sha1=_hash_tensor(init_t),
    )
    gen = _generator(seed, dev)
    logit = transform == "logit"
    eye = torch.eye(P, dtype=_F64, device=dev)

    def evaluate(z: Tensor, fallback: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(chain log density, target log density, theta) at z; invalid rows -> -inf."""
        theta = torch.sigmoid(z) if logit else z
        inside = ((theta > 0) & (theta < 1)).all(-1)
        if fallback is None:
            fallback = torch.full_like(theta, 0.5)
        safe = torch.where(inside[:, None], theta, fallback)
        lpt, _ = _call(log_density, safe, B, "log_density")
        lpt = torch.where(inside & ~torch.isnan(lpt), lpt, torch.full_like(lpt, -math.inf))
        lp = lpt
        if logit:
            logsig = torch.nn.functional.logsigmoid
            lp = lpt + (logsig(z) + logsig(-z)).sum(-1)
        return lp, lpt, theta

    if resume and checkpoint_exists(checkpoint):
        st, meta = _load_state(checkpoint, gen, settings, dev)
        it = int(meta["iteration"])
        if store_draws:
            stored = st.pop("draws")
            draws = torch.full((S, C, n_draws, P), math.nan, dtype=store_dtype, device=sdev)
            draws[:, :, : stored.shape[2]] = stored.to(sdev, store_dtype)
    else:
        it = 0
        start = torch.rand(S, C, P, generator=gen, device=dev, dtype=_F64) * 0.8 + 0.1
        given = torch.zeros(S, C, dtype=torch.bool, device=dev)
        if init_t is not None:
            if init_t.dim() == 2:
                start[:, 0] = init_t
                given[:, 0] = True
            else:
                start = init_t.clone()
                given[:] = True
        theta0 = start.reshape(B, P)
        z0 = torch.logit(theta0) if logit else theta0.clone()
        lp, lpt, _ = evaluate(z0, None)
        given = given.reshape(B)
        for _ in range(100):
            bad = ~torch.isfinite(lp) & ~given
            if not bool(bad.any()):
                break
            n_bad = int(bad.sum())
            redraw = torch.rand(n_bad, P, generator=gen, device=dev, dtype=_F64) * 0.8 + 0.1
            theta0 = theta0.clone()
            theta0[bad] = redraw
            z0 = torch.logit(theta0) if logit else theta0.clone()
            lp2, lpt2, _ = evaluate(z0, None)
            lp = torch.where(bad, lp2, lp)
            lpt = torch.where(bad, lpt2, lpt)
        if not bool(torch.isfinite(lp).all()):
            warnings.warn(
                f"{int((~torch.isfinite(lp)).sum())} chains start at a point with non-finite "
                "log density; they move at their first finite proposal",
                RuntimeWarning, stacklevel=2,
            )
        s0 = init_scale * (4.0 if logit else 1.0)
        st = _State(
            z=z0, lp=lp, lpt=lpt,
            mean=z0.clone(), m2=torch.zeros(B, P, P, dtype=_F64, device=dev),
            count=torch.ones((), dtype=torch.int64, device=dev),
            chol=(s0 * eye).expand(B, P, P).clone(),
            n_acc=torch.zeros(B, dtype=torch.int64, device=dev),
            n_acc_post=torch.zeros(B, dtype=torch.int64, device=dev),
            post_mean=torch.zeros(B, P, dtype=_F64, device=dev),
            post_m2=torch.zeros(B, P, dtype=_F64, device=dev),
            best_lpt=lpt.clone(), best_theta=theta0.clone(),
        )
        if store_draws:
            draws = torch.full((S, C, n_draws, P), math.nan, dtype=store_dtype, device=sdev)

    def save(iteration: int) -> None:
        tensors = _State(st)
        if store_draws:
            kept = max(0, (iteration - burn_in) // thin) if iteration > burn_in else 0
            tensors["draws"] = draws[:, :, : min(kept, n_draws)]
        _save_state(checkpoint, tensors, gen, settings, {"iteration": iteration})

    # Work buffers (not part of the state). Large temporaries are reused in place: on some
    # systems fresh allocations of [B, P, P] or [k, B, P] tensors cost more (page faults)
    # than the arithmetic. Tensors handed to log_density are always fresh.
    w_noise = torch.empty(B, P, adapt_every, dtype=_F64, device=dev)
    w_steps = torch.empty(B, P, adapt_every, dtype=_F64, device=dev)
    w_block = torch.empty(adapt_every, B, P, dtype=_F64, device=dev)
    w_tblock = torch.empty(adapt_every, B, P, dtype=_F64, device=dev) if logit else None
    w_dev = torch.empty(adapt_every, B, P, dtype=_F64, device=dev)
    w_cols = torch.empty(B, P, adapt_every + 1, dtype=_F64, device=dev)
    w_cov = torch.empty(B, P, P, dtype=_F64, device=dev)
    w_prop = torch.empty(B, P, dtype=_F64, device=dev)
    w_z = torch.empty(B, P, dtype=_F64, device=dev)
    w_th = torch.empty(B, P, dtype=_F64, device=dev) if logit else None
    w_best = torch.empty(B, P, dtype=_F64, device=dev)
    pbar = _progress(progress, n_iter, it, "adaptive Metropolis")
    try:
        while it < n_iter:
            k = min(adapt_every, n_iter - it)
            if k == adapt_every:
                noise = w_noise.normal_(generator=gen)
            else:
                noise = torch.randn(B, P, k, generator=gen, device=dev, dtype=_F64)
            log_u = torch.log(torch.rand(k, B, generator=gen, device=dev, dtype=_F64))
            steps = w_steps[:, :, :k]
            torch.bmm(st.chol, noise, out=steps)  # [B, P, k]
            block = w_block[:k]  # z after each iteration
            tblock = w_tblock[:k] if logit else block
            accs = torch.empty(k, B, dtype=torch.bool, device=dev)
            z, lp, lpt = st.z, st.lp, st.lpt
            theta = torch.sigmoid(z) if logit else z
            for j in range(k):
                prop = torch.add(z, steps[:, :, j], out=w_prop)
                lp_p, lpt_p, theta_p = evaluate(prop, theta)
                acc = log_u[j] < lp_p - lp  # NaN (both -inf) -> False
                accs[j] = acc
                a_ = acc[:, None]
                z, w_z = torch.where(a_, prop, z, out=w_z), z
                lp = torch.where(acc, lp_p, lp)
                if logit:
                    theta, w_th = torch.where(a_, theta_p, theta, out=w_th), theta
                    lpt = torch.where(acc, lpt_p, lpt)
                    tblock[j] = theta
                else:
                    theta, lpt = z, lp
                block[j] = z
                better = lpt > st.best_lpt
                st.best_lpt = torch.where(better, lpt, st.best_lpt)
                st.best_theta, w_best = (
                    torch.where(better[:, None], theta, st.best_theta, out=w_best),
                    st.best_theta,
                )
            it0, it = it, it + k
            st.n_acc += accs.sum(0)
            j0 = max(0, burn_in - it0)  # first post-burn-in iteration of the block
            if j0 < k:
                st.n_acc_post += accs[j0:].sum(0)
                # merge the post-burn-in part into the running chain moments (theta space)
                xb = tblock[j0:]
                n_a, n_b = max(0, it0 - burn_in), k - j0
                mb = xb.mean(0)
                d = mb - st.post_mean
                dv = torch.sub(xb, mb, out=w_dev[:n_b])
                dv.mul_(dv)
                st.post_m2 = st.post_m2 + dv.sum(0) + d * d * (n_a * n_b / (n_a + n_b))
                st.post_mean = st.post_mean + d * (n_b / (n_a + n_b))
                if store_draws:
                    m_first = it0 + j0 + 1 - burn_in  # post-burn-in index of row j0 (1-based)
                    start = j0 + (-m_first) % thin  # first kept row of the block
                    d0 = (m_first + start - j0) // thin - 1  # its index among the draws
                    n_keep = min(len(range(start, k, thin)), max(0, n_draws - d0))
                    if n_keep:
                        src = tblock[start : start + (n_keep - 1) * thin + 1 : thin]
                        draws[:, :, d0 : d0 + n_keep].copy_(
                            src.view(n_keep, S, C, P).permute(1, 2, 0, 3))
            st.z, st.lp, st.lpt = z, lp, lpt
            # merge the block into the running mean/covariance (Chan et al. parallel update);
            # in place into preallocated buffers: fresh [B, P, P] temporaries are slow
            n_a = int(st.count)
            n_ab = n_a + k
            mean_b = block.mean(0)
            delta = mean_b - st.mean
            cols = w_cols[:, :, : k + 1]
            torch.sub(block.permute(1, 2, 0), mean_b[:, :, None], out=cols[:, :, :k])
            cols[:, :, k] = delta * math.sqrt(n_a * k / n_ab)
            st.m2.baddbmm_(cols, cols.transpose(1, 2))
            st.mean.add_(delta, alpha=k / n_ab)
            st.count = st.count + k
            if it >= adapt_start:
                torch.mul(st.m2, scale / (n_ab - 1), out=w_cov)
                w_cov.diagonal(dim1=-2, dim2=-1).add_(scale * eps)
                _safe_cholesky(w_cov, scale * eps, out=st.chol)
            pbar.update(k)
            if checkpoint is not None and (it % checkpoint_every == 0 or it == n_iter):
                save(it)
    finally:
        pbar.close()

    # ---- summaries
    nc = n_post
    cm = st.post_mean.view(S, C, P)
    cvar = st.post_m2.view(S, C, P) / max(nc - 1, 1)
    mean = cm.mean(1)
    pooled_var = (st.post_m2.view(S, C, P).sum(1) + nc * ((cm - mean[:, None]) ** 2).sum(1)) / max(
        C * nc - 1, 1
    )
    sd = pooled_var.sqrt()
    if store_draws and n_draws >= 4 and diagnostics:
        rh, es = _diag.rhat_ess(draws, chain_axis=1, draw_axis=2)
        rh, es = rh.to(dev), es.to(dev)
    else:
        if C > 1 and nc > 1:
            w = cvar.mean(1)
            bn = cm.var(1, unbiased=True)
            rh = torch.sqrt(((nc - 1) / nc * w + bn) / w)
        else:
            rh = torch.full((S, P), math.nan, dtype=_F64, device=dev)
        es = torch.full((S, P), math.nan, dtype=_F64, device=dev)
    best_lpt = st.best_lpt.view(S, C)
    bc = torch.argmax(torch.nan_to_num(best_lpt, nan=-math.inf), dim=1)
    ar = torch.arange(S, device=dev)
    best = st.best_theta.view(S, C, P)[ar, bc]
    settings_out = dict(settings, checkpoint=str(checkpoint) if checkpoint else None)
    return SamplerResult(
        method="adaptive_metropolis",
        samples=draws if store_draws else None,
        mean=mean,
        sd=sd,
        best=best,
        best_value=best_lpt[ar, bc],
        rhat=rh,
        ess=es,
        acceptance=(st.n_acc_post.view(S, C).to(_F64) / n_post),
        n_accepted=st.n_acc_post.view(S, C).clone(),
        settings=settings_out,
        param_names=list(param_names) if param_names is not None else None,
        extras={
            "acceptance_total": (("site", "chain"), st.n_acc.view(S, C).to(_F64) / n_iter),
            "chain_mean": (("site", "chain", "parameter"), cm.clone()),
            "chain_sd": (("site", "chain", "parameter"), cvar.sqrt()),
        },
    )


# ----------------------------------------------------------------------------- reference


_PHASE_STAGE1, _PHASE_STAGE2, _PHASE_DONE, _PHASE_ERROR = 1, 2, 3, 4


def _cholcov(cov: Tensor, *, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Factor ``T`` with ``T T' = cov`` like MATLAB's ``cholcov`` (used by ``mvnrnd``).

    Cholesky where it succeeds; for the other rows an eigen-decomposition, accepted when
    the matrix is symmetric positive semi-definite within ``10 eps(max |diag|)`` (so a
    rank-deficient or zero covariance samples in its range, as ``mvnrnd`` does). ``ok`` is
    False where the matrix is not finite or not positive semi-definite (``mvnrnd`` fails).
    """
    if out is None:
        chol, info = torch.linalg.cholesky_ex(cov)
    else:
        info = torch.empty(cov.shape[0], dtype=torch.int32, device=cov.device)
        chol, _ = torch.linalg.cholesky_ex(cov, out=(out, info))
    finite = torch.isfinite(cov.sum((-2, -1)))  # NaN/inf propagate; cheaper than isfinite
    ok = (info == 0) & finite
    redo = (~ok & finite).nonzero().squeeze(1)
    if redo.numel():
        c = cov[redo]
        c = 0.5 * (c + c.transpose(-1, -2))
        lam, vec = torch.linalg.eigh(c)
        dmax = torch.diagonal(c, dim1=-2, dim2=-1).abs().amax(-1)
        tol = 10 * torch.finfo(_F64).eps * dmax.clamp_min(torch.finfo(_F64).tiny)
        psd = (lam >= -tol[:, None]).all(-1)
        root = torch.where(lam > tol[:, None], lam, torch.zeros_like(lam)).sqrt()
        chol[redo] = vec * root[:, None, :]
        ok[redo] = psd
    return chol, ok


def _draw_inside(
    center: Tensor, step: Callable[[Tensor | None, int], Tensor], max_tries: int
) -> tuple[Tensor, Tensor]:
    """Redraw ``center + step`` until strictly inside (0, 1)^P, for every row.

    Candidates are drawn in rounds of 1, 2, 4, ... (up to 1024) per pending row; the first
    valid candidate of each row is taken, which has the same distribution as redrawing one
    at a time. ``step(rows, r)`` returns ``r`` random steps for the given rows (None = all
    rows). Returns (proposals, found); rows without a valid candidate after ``max_tries``
    draws keep ``center`` and ``found = False``.
    """
    m = center.shape[0]
    out = center.clone()
    found = torch.zeros(m, dtype=torch.bool, device=center.device)
    pending = torch.arange(m, device=center.device)
    tries, r = 0, 1
    while pending.numel() and tries < max_tries:
        r = min(r, max_tries - tries)
        if tries == 0:  # all rows pending: no gathers ("None" = every row)
            cand = center[:, None, :] + step(None, r)  # [m, r, P]
        else:
            cand = center[pending, None, :] + step(pending, r)  # [np, r, P]
        inside = ((cand > 0) & (cand < 1)).all(-1)
        has = inside.any(-1)
        first = torch.argmax(inside.to(torch.int8), dim=-1)
        rows = pending[has]
        out[rows] = cand[has, first[has]]
        found[rows] = True
        pending = pending[~has]
        tries += r
        r = min(2 * r, 1024)
    return out, found


class _Reference:
    """Vectorised per-site state machines of the PRODA sampler (see reference_sampler)."""

    def __init__(self, cost, predict, cfg: dict, S: int, C: int, P: int, dev, gen, callback):
        self.cost, self.predict, self.cfg = cost, predict, cfg
        self.S, self.C, self.P, self.dev, self.gen = S, C, P, dev, gen
        self.callback = callback
        self.sequential = cfg["chains"] == "sequential"
        self.k = 1 if self.sequential else C
        self.B = S * self.k
        rows = torch.arange(self.B, device=dev)
        self.site_of = rows // self.k
        self.store_dtype = getattr(torch, cfg["store_dtype"].replace("torch.", ""))
        t0 = cfg["theta0"]
        self.theta0 = (torch.tensor(t0, dtype=_F64, device=dev) if isinstance(t0, list)
                       else torch.full((P,), t0, dtype=_F64, device=dev))

    # -- evaluation ------------------------------------------------------------------
    def evaluate(self, theta: Tensor) -> tuple[Tensor, Tensor | None]:
        j, m = _call(self.cost, theta, self.B, "cost")
        if self.predict is not None:
            m = torch.as_tensor(self.predict(theta), device=self.dev).to(_F64).reshape(self.B, -1)
        return j, m

    # -- state -----------------------------------------------------------------------
    def init_state(self) -> _State:
        B, P, S, C, dev, cfg = self.B, self.P, self.S, self.C, self.dev, self.cfg
        th0 = self.theta0.expand(B, P).clone()
        j0, m0 = self.evaluate(th0)
        i64 = dict(dtype=torch.int64, device=dev)
        f64 = dict(dtype=_F64, device=dev)
        cap = max(1, min(cfg["nsimu2"], 256))
        L = 0 if m0 is None else m0.shape[1]
        st = _State(
            theta=th0, J=j0.clone(), J0=j0.clone(),
            phase=torch.full((B,), _PHASE_STAGE1, **i64),
            chain=(torch.zeros(B, **i64) if self.sequential else torch.arange(B, device=dev) % C),
            n=torch.zeros(B, **i64), a=torch.full((B,), cfg["a0"], **f64),
            low=torch.zeros(B, **i64), low_total=torch.zeros(B, **i64),
            second=torch.zeros(B, dtype=torch.bool, device=dev),
            s=torch.full((B,), cfg["s0"], **f64),
            rate_restarts=torch.zeros(B, **i64), chain_restarts=torch.zeros(B, **i64),
            chain_restarts_total=torch.zeros(B, **i64),
            nacc1=torch.zeros(B, **i64), nacc2=torch.zeros(B, **i64),
            ar=torch.zeros(B, **f64), last_delta=torch.zeros(B, **f64),
            rec_n=torch.zeros(B, **i64), rec_mean=torch.zeros(B, P, **f64),
            rec_m2=torch.zeros(B, P, P, **f64), chol=torch.zeros(B, P, P, **f64),
            acc_theta=torch.full((S, C, cap, P), math.nan, dtype=self.store_dtype, device=dev),
            acc_J=torch.full((S, C, cap), math.nan, **f64),
            acc_m=torch.full((S, C, cap, L), math.nan, **f64),
            acc_count=torch.zeros(S, C, **i64), acc_ratio=torch.full((S, C), math.nan, **f64),
            finished_at=torch.full((B,), -1, **i64),
        )
        bad = ~torch.isfinite(j0)
        st.phase[bad] = _PHASE_ERROR
        return st

    # [B, P, P] tensors are updated in place and temporaries live in preallocated buffers:
    # fresh allocations of that size can cost more than the arithmetic (page faults).

    def _reset_record(self, mask: Tensor) -> None:
        st = self.st
        rows = mask.nonzero().squeeze(1)
        if rows.numel():
            st.rec_n[rows] = 0
            st.rec_mean[rows] = 0.0
            st.rec_m2[rows] = 0.0

    def _record(self, mask: Tensor) -> None:
        """Welford update of the state record with the current state for rows in mask."""
        st = self.st
        n_new = st.rec_n + mask.to(torch.int64)
        nn = n_new.clamp_min(1).to(_F64)
        delta = st.theta - st.rec_mean
        st.rec_mean = st.rec_mean + delta * (mask.to(_F64) / nn)[:, None]
        w = torch.where(mask, (nn - 1.0) / nn, torch.zeros_like(nn))
        st.rec_m2.baddbmm_((delta * w[:, None])[:, :, None], delta[:, None, :])
        st.rec_n = n_new

    def _work(self, name: str, n: int) -> Tensor:
        """A [n, P, P] work buffer (allocated once per sampler)."""
        buf = self.__dict__.get(name)
        if buf is None:
            buf = torch.empty(self.B, self.P, self.P, dtype=_F64, device=self.dev)
            self.__dict__[name] = buf
        return buf[:n]

    def _cov_chol(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Factor of (s/P) Cov(record) for the given row indices; returns (L, ok).

        ``L`` lives in a work buffer: copy it out (``_put_chol``) before the next call.
        """
        st = self.st
        n = st.rec_n[rows]
        cov = torch.index_select(st.rec_m2, 0, rows, out=self._work("_w_cov", rows.numel()))
        cov.mul_((st.s[rows] / self.P / (n - 1).clamp_min(1).to(_F64))[:, None, None])
        chol, ok = _cholcov(cov, out=self._work("_w_chol", rows.numel()))
        return chol, ok & (n >= 2)

    def _put_chol(self, rows: Tensor, chol: Tensor, ok: Tensor) -> None:
        if bool(ok.all()):
            self.st.chol.index_copy_(0, rows, chol)
        elif bool(ok.any()):
            self.st.chol[rows[ok]] = chol[ok]

    def restart_scratch(self, mask: Tensor, count: bool) -> None:
        """Restart the chain from theta0/J0 (stage 1, a = a0); s and is_second_time kept."""
        st, cfg = self.st, self.cfg
        if count:
            st.chain_restarts = st.chain_restarts + mask.to(torch.int64)
            st.chain_restarts_total = st.chain_restarts_total + mask.to(torch.int64)
            err = mask & (st.chain_restarts > cfg["max_chain_restarts"])
            st.phase = torch.where(err, _PHASE_ERROR, st.phase)
            mask = mask & ~err
        st.phase = torch.where(mask, _PHASE_STAGE1, st.phase)
        st.theta = torch.where(mask[:, None], self.theta0.expand_as(st.theta), st.theta)
        st.J = torch.where(mask, st.J0, st.J)
        st.a = torch.where(mask, torch.full_like(st.a, cfg["a0"]), st.a)
        for name in ("low", "n", "nacc1", "nacc2"):
            st[name] = torch.where(mask, 0, st[name])
        st.ar = torch.where(mask, 0.0, st.ar)
        st.last_delta = torch.where(mask, 0.0, st.last_delta)
        self._reset_record(mask)

    def start_stage2(self, mask: Tensor) -> None:
        st, cfg = self.st, self.cfg
        rows = mask.nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        chol, ok = self._cov_chol(rows)
        good = rows[ok]
        self._put_chol(rows, chol, ok)
        m_ok = torch.zeros_like(mask)
        m_ok[good] = True
        st.phase = torch.where(m_ok, _PHASE_STAGE2, st.phase)
        st.n = torch.where(m_ok, 0, st.n)
        if cfg["reset_cost_at_stage2"]:
            st.J = torch.where(m_ok, st.J0, st.J)
        st.nacc2 = torch.where(m_ok, 0, st.nacc2)
        st.ar = torch.where(m_ok, 0.0, st.ar)
        self._reset_record(m_ok)
        fail = mask & ~m_ok
        if bool(fail.any()):
            self.restart_scratch(fail, count=True)

    def finish_chain(self, mask: Tensor) -> None:
        st = self.st
        rows = mask.nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        site, ch = self.site_of[rows], st.chain[rows]
        st.acc_count[site, ch] = st.nacc2[rows]
        st.acc_ratio[site, ch] = st.ar[rows]
        if self.sequential:
            st.chain = torch.where(mask, st.chain + 1, st.chain)
            more = mask & (st.chain < self.C)
            done = mask & ~more
            st.phase = torch.where(done, _PHASE_DONE, st.phase)
            self.restart_scratch(more, count=False)
            # a new chain starts fresh: its own restart budget
            st.chain_restarts = torch.where(more, 0, st.chain_restarts)
        else:
            st.phase = torch.where(mask, _PHASE_DONE, st.phase)

    def ensure_capacity(self, need: int) -> None:
        st = self.st
        cap = st.acc_theta.shape[2]
        if need <= cap:
            return
        new = min(max(need, 2 * cap), self.cfg["nsimu2"])
        pad = new - cap
        S, C = self.S, self.C
        st.acc_theta = torch.cat([st.acc_theta, torch.full(
            (S, C, pad, self.P), math.nan, dtype=st.acc_theta.dtype, device=self.dev)], 2)
        st.acc_J = torch.cat([st.acc_J, torch.full((S, C, pad), math.nan, dtype=_F64,
                                                   device=self.dev)], 2)
        st.acc_m = torch.cat([st.acc_m, torch.full((S, C, pad, st.acc_m.shape[3]), math.nan,
                                                   dtype=_F64, device=self.dev)], 2)

    # -- one iteration ---------------------------------------------------------------
    def step(self, iteration: int) -> None:
        st, cfg, gen, dev, P, B = self.st, self.cfg, self.gen, self.dev, self.P, self.B
        in1 = st.phase == _PHASE_STAGE1
        in2 = st.phase == _PHASE_STAGE2
        prop = st.theta.clone()
        ok = torch.ones(B, dtype=torch.bool, device=dev)
        i1 = in1.nonzero().squeeze(1)
        if i1.numel():
            a1 = st.a[i1]

            def step1(rows: Tensor | None, r: int) -> Tensor:
                a = a1 if rows is None else a1[rows]
                u = torch.rand(a.numel(), r, P, generator=gen, device=dev, dtype=_F64)
                return (u - 0.5) / a[:, None, None]

            prop[i1], ok[i1] = _draw_inside(st.theta[i1], step1, cfg["max_redraws"])
        i2 = in2.nonzero().squeeze(1)
        if i2.numel():
            l2 = torch.index_select(st.chol, 0, i2, out=self._work("_w_l2", i2.numel()))

            def step2(rows: Tensor | None, r: int) -> Tensor:
                m = l2.shape[0] if rows is None else rows.numel()
                z = torch.randn(m, r, P, generator=gen, device=dev, dtype=_F64)
                return torch.einsum("bij,brj->bri", l2 if rows is None else l2[rows], z)

            prop[i2], ok[i2] = _draw_inside(st.theta[i2], step2, cfg["max_redraws"])
        events: dict[str, Tensor] = {}
        # stage-2 redraw cap without any acceptance: restart the chain (replaces the 60-s abort)
        abort = in2 & ~ok & (st.nacc2 == 0)
        events["redraw_abort"] = abort
        if bool(abort.any()):
            self.restart_scratch(abort, count=True)
        ran = (in1 | in2) & ~abort
        use = ran & ok
        theta_eval = torch.where(use[:, None], prop, st.theta)
        j_new, m_new = self.evaluate(theta_eval)
        singular = ~torch.isfinite(j_new)
        j_old = st.J.clone()
        theta_old = st.theta
        j_pen = torch.where(singular, j_old + cfg["penalty"], j_new)
        delta = j_pen - j_old
        if cfg["stale_penalty_delta"]:
            delta = torch.where(singular, st.last_delta, delta)
            st.last_delta = torch.where(ran & ~singular, delta, st.last_delta)
        n_cur = st.n + 1
        p = annealed_acceptance_probability(delta, n_cur, annealing=cfg["annealing"])
        u = torch.rand(B, generator=gen, device=dev, dtype=_F64)
        acc = use & (p > u)
        st.theta = torch.where(acc[:, None], prop, st.theta)
        st.J = torch.where(acc, j_pen, st.J)
        st.n = torch.where(ran, n_cur, st.n)
        st.nacc1 = st.nacc1 + (acc & in1).to(torch.int64)
        a2 = acc & in2
        r2 = a2.nonzero().squeeze(1)
        if r2.numel():
            pos = st.nacc2[r2]
            self.ensure_capacity(int(pos.max()) + 1)
            site, ch = self.site_of[r2], st.chain[r2]
            st.acc_theta[site, ch, pos] = prop[r2].to(st.acc_theta.dtype)
            st.acc_J[site, ch, pos] = j_pen[r2]
            if m_new is not None:
                if st.acc_m.shape[3] != m_new.shape[1]:
                    raise ValueError("the prediction length changed between calls")
                st.acc_m[site, ch, pos] = m_new[r2]
        st.nacc2 = st.nacc2 + a2.to(torch.int64)
        st.ar = torch.where(a2, st.nacc2.to(_F64) / n_cur.to(_F64), st.ar)
        self._record(ran)
        info = None
        if self.callback is not None:
            info = dict(
                iteration=iteration, phase=torch.where(in1, 1, torch.where(in2, 2, st.phase)),
                ran=ran, n=n_cur, chain=st.chain.clone(), theta_old=theta_old,
                proposal=prop, valid=ok,
                J_old=j_old, J_new=j_pen, singular=singular & ran, delta=delta,
                probability=p, accepted=acc, theta=st.theta.clone(), J=st.J.clone(),
                a=st.a.clone(), s=st.s.clone(), acceptance_ratio=st.ar.clone(),
            )
        # ---- transitions, stage 1
        low = ran & in1 & (n_cur == cfg["restart_check_at"]) & ~st.second & (
            st.nacc1 < cfg["min_accept"])
        events["low_acceptance"] = low
        events["low_acceptance_reset"] = torch.zeros_like(low)
        if bool(low.any()):
            st.low = st.low + low.to(torch.int64)
            st.low_total = st.low_total + low.to(torch.int64)
            grow = low & (st.low <= cfg["max_low_accept_restarts"])
            st.a = torch.where(grow, st.a * cfg["a_factor"], st.a)
            st.n = torch.where(grow, 0, st.n)
            st.nacc1 = torch.where(grow, 0, st.nacc1)
            self._reset_record(grow)
            reset = low & ~grow
            events["low_acceptance_reset"] = reset
            st.second = st.second | reset
            self.restart_scratch(reset, count=False)
        end1 = ran & in1 & (st.phase == _PHASE_STAGE1) & (st.n == cfg["nsimu1"])
        events["stage2_start"] = end1
        self.start_stage2(end1)
        # ---- transitions, stage 2
        cur2 = ran & in2 & (st.phase == _PHASE_STAGE2)
        check = cur2 & (n_cur == cfg["rate_check_at"])
        too_low = check & (st.ar < cfg["rate_bounds"][0])
        too_high = check & (st.ar > cfg["rate_bounds"][1])
        out = too_low | too_high
        events["rate_low"], events["rate_high"] = too_low, too_high
        events["error"] = torch.zeros_like(out)
        if bool(out.any()):
            st.rate_restarts = st.rate_restarts + out.to(torch.int64)
            err = out & (st.rate_restarts > cfg["max_rate_restarts"])
            events["error"] = err
            st.phase = torch.where(err, _PHASE_ERROR, st.phase)
            f_lo, f_hi = cfg["rate_factors"]
            st.s = torch.where(too_low & ~err, st.s * f_lo, st.s)
            st.s = torch.where(too_high & ~err, st.s * f_hi, st.s)
            self.restart_scratch(out & ~err, count=False)
        cur2 = cur2 & (st.phase == _PHASE_STAGE2)
        upd = cur2 & (n_cur > cfg["adapt_start"]) & (n_cur < cfg["nsimu2"])
        rows = upd.nonzero().squeeze(1)
        chol_fail = torch.zeros_like(upd)
        if rows.numel():
            chol, okc = self._cov_chol(rows)
            self._put_chol(rows, chol, okc)
            chol_fail[rows[~okc]] = True
            if bool(chol_fail.any()):
                self.restart_scratch(chol_fail, count=True)
        events["chol_fail"] = chol_fail
        fin = cur2 & ~chol_fail & (n_cur == cfg["nsimu2"])
        events["chain_done"] = fin
        self.finish_chain(fin)
        newly = (st.phase >= _PHASE_DONE) & (st.finished_at < 0)
        st.finished_at = torch.where(newly, iteration, st.finished_at)
        if info is not None:
            info["events"] = events
            info["phase_after"] = st.phase.clone()
            self.callback(info)


def _matlab_round_half(n: Tensor) -> Tensor:
    """MATLAB ``round(n / 2)`` for non-negative integers (halves away from zero)."""
    return (n + 1) // 2


def _gather_window(buf: Tensor, start: Tensor, count: Tensor) -> Tensor:
    """buf [S, C, cap, ...]: rows start..start+count-1 left-aligned, NaN-padded."""
    S, C, cap = buf.shape[:3]
    width = int(count.max()) if count.numel() else 0
    width = max(width, 0)
    idx = start[..., None] + torch.arange(width, device=buf.device)
    valid = torch.arange(width, device=buf.device) < count[..., None]
    idx = idx.clamp(0, max(cap - 1, 0))
    tail = buf.shape[3:]
    gi = idx.view(S, C, width, *([1] * len(tail))).expand(S, C, width, *tail)
    out = torch.gather(buf, 2, gi).to(_F64) if width else buf[:, :, :0].to(_F64)
    vmask = valid.view(S, C, width, *([1] * len(tail)))
    return torch.where(vmask, out, torch.full_like(out, math.nan))


def _nanmean(x: Tensor, dim: int) -> Tensor:
    return torch.nanmean(x, dim=dim)


def _nanstd(x: Tensor, dim: int) -> Tensor:
    n = (~torch.isnan(x)).sum(dim)
    mu = torch.nanmean(x, dim=dim, keepdim=True)
    ss = torch.nansum((x - mu) ** 2, dim=dim)
    return torch.where(n > 1, (ss / (n - 1).clamp_min(1)).sqrt(), torch.full_like(ss, math.nan))


def _gev_mode(x: np.ndarray) -> float:
    """Mode of a GEV fitted by maximum likelihood (MATLAB gevfit parameterisation)."""
    from scipy import stats

    x = x[np.isfinite(x)]
    if x.size < 3 or np.ptp(x) == 0:
        return float("nan")
    # fit on standardised data (scipy's optimiser is unreliable for tiny scales)
    m, sdv = x.mean(), x.std()
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c, loc, scl = stats.genextreme.fit((x - m) / sdv)
        loc, scl = m + sdv * loc, sdv * scl
        k = -c  # MATLAB's shape parameter k = -c (scipy)
        if k == 0:
            return float(loc)
        # NaN for k <= -1 (no interior mode; MATLAB gives a complex number there)
        return float(loc + scl * ((1 + k) ** (-k) - 1) / k) if 1 + k > 0 else float("nan")


def _rhat_ess_ragged(post: Tensor, npost: Tensor) -> tuple[Tensor, Tensor]:
    """Rank R-hat and bulk ESS per site using the last min_c(npost) samples of each chain."""
    S, C, _, P = post.shape
    rh = torch.full((S, P), math.nan, dtype=_F64)
    es = torch.full((S, P), math.nan, dtype=_F64)
    nmin = npost.min(1).values.cpu()
    post_c, npost_c = post.cpu(), npost.cpu()
    for n in torch.unique(nmin).tolist():
        if n < 4:
            continue
        sites = (nmin == n).nonzero().squeeze(1)
        start = npost_c[sites] - n
        win = _gather_window(post_c[sites], start, torch.full_like(start, n))
        rh[sites], es[sites] = _diag.rhat_ess(win, chain_axis=1, draw_axis=2)
    return rh.to(post.device), es.to(post.device)


def reference_sampler(
    cost: Target,
    *,
    n_sites: int,
    n_params: int,
    n_chains: int = 3,
    nsimu1: int = 20000,
    nsimu2: int = 50000,
    seed: int = 0,
    theta0: float | Sequence[float] = 0.5,
    s0: float = 2.4,
    a0: float = 5.0,
    a_factor: float = 1.1,
    restart_check_at: int | None = None,
    min_accept: int = 50,
    max_low_accept_restarts: int = 2,
    adapt_start: int = 4000,
    rate_check_at: int | None = None,
    rate_bounds: tuple[float, float] = (0.1, 0.5),
    rate_factors: tuple[float, float] = (0.7, 2.0),
    max_rate_restarts: int = 5,
    penalty: float = 100.0,
    annealing: bool = True,
    reset_cost_at_stage2: bool = True,
    stale_penalty_delta: bool = False,
    max_redraws: int = 100_000,
    max_chain_restarts: int = 20,
    chains: str = "sequential",
    predict: Target | None = None,
    obs: Any = None,
    n_layers: Any = None,
    gev_mode: bool = False,
    store_dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    progress: bool = True,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    callback: Callable[[dict], None] | None = None,
    param_names: Sequence[str] | None = None,
) -> SamplerResult:
    """The PRODA adaptive-Metropolis-style sampler with annealing, as coded (spec §6.3).

    Every site runs its own state machine; one ``cost`` call per iteration evaluates the
    current proposal of every site (and, with ``chains="parallel"``, every chain).

    **Per chain** (``n_chains`` chains, run one after the other per site by default):

    - *Stage 1* (``nsimu1`` iterations): from ``theta0`` with ``J_old = J0 = cost(theta0)``
      and step divisor ``a = a0``, propose ``theta + (U^P - 0.5)/a``, redrawn until strictly
      inside (0, 1)^P; a non-finite cost ("singular") counts as ``J_old + penalty``;
      accept if ``min(1, exp(-(J' - J_old) ln(n + 2))) > U`` (annealing). The state after
      every iteration enters the state record. At ``n = restart_check_at``, if fewer than
      ``min_accept`` proposals were accepted and ``is_second_time`` is unset, stage 1
      restarts with ``a <- a_factor * a`` keeping the current state (counter and records
      cleared); the ``max_low_accept_restarts + 1``-th time the chain restarts from
      ``theta0``/``J0`` with ``a = a0`` and sets ``is_second_time``, which is never cleared
      (not even for later chains of the site), so no further checks happen.
    - *Stage 2* (``nsimu2`` iterations): ``C = (s/P) Cov(stage-1 record)`` (``s = s0``
      initially, not squared), start at the last stage-1 state but with ``J_old = J0``
      (bug §10.2 #19, ``reset_cost_at_stage2=True``); propose ``N(theta, C)`` redrawn until
      inside; same penalty and annealed rule; accepted samples (and predictions) are
      stored and the acceptance ratio ``a_r = accepted / n`` is updated only at
      acceptances; for ``n > adapt_start`` the covariance is recomputed after every
      iteration from the stage-2 record (running Welford sums: the same value as the
      reference's full recomputation, in O(P^2) per iteration). At
      ``n = rate_check_at``: ``a_r < rate_bounds[0]`` -> ``s <- rate_factors[0] s``,
      ``a_r > rate_bounds[1]`` -> ``s <- rate_factors[1] s``, and the chain restarts from
      scratch (stage 1 from ``theta0``); ``s`` is never reset between chains; the
      ``max_rate_restarts + 1``-th such restart marks the site as failed (MCMC_Error).
      Proposals use a factor of ``C`` computed like MATLAB's ``cholcov`` (inside
      ``mvnrnd``): Cholesky, or an eigen-decomposition for a positive *semi*-definite
      ``C`` (a zero covariance, from a chain that never moved, proposes the current
      state); only a ``C`` that is not positive semi-definite or not finite (where
      ``mvnrnd`` errors) restarts the chain from scratch.

    **Summaries** (spec §6.3 items 4-6): burn-in is the first ``round(N/2)`` accepted
    stage-2 samples of each chain (parameters use ``round(N/2)+1..N``; the prediction
    trace ``round(N/2)..N``, the reference's off-by-one); per-chain ``[R2, RMSE]`` with
    PRODA's R2 (denominator from the modelled mean) and RMSE over ``n_layers`` when
    predictions and ``obs`` are given; the optimal chain has the minimum RMSE (ties:
    maximum R2, the fix of bug §10.2 #24; without predictions: the minimum mean
    post-burn-in cost); ``mean``/``sd`` (std with N-1) of its post-burn-in samples;
    PRODA's Gelman-Rubin (``gelman_rubin``, with the last chain's N) and, in addition, the
    rank-normalised split ``rhat``/bulk ``ess`` on a common length (the last
    ``min_c N_c/2`` post-burn-in samples of every chain).

    Parameters
    ----------
    cost : callable
        ``cost(theta[B, P]) -> Tensor[B]`` (lower is better; NaN/inf = singular), or
        returning ``(cost[B], prediction[B, L])`` where ``prediction`` is the modelled
        profile at the observed depths. ``B = n_sites`` (``chains="sequential"``) or
        ``n_sites * n_chains`` site-major (``chains="parallel"``). Rows of finished or
        failed sites are evaluated at their last state and ignored.
    n_sites, n_params : int
        Sites and parameters P.
    n_chains : int
        Chains per site (3 in PRODA).
    nsimu1, nsimu2 : int
        Iterations of stage 1 and stage 2 (20000, 50000).
    seed : int
        Seed of the ``torch.Generator``.
    theta0 : float or sequence of float
        Start point (0.5 for every parameter).
    s0 : float
        Initial covariance scale factor ``sd_controling_factor`` (2.4).
    a0, a_factor : float
        Stage-1 step divisor (5) and its growth at low acceptance (1.1).
    restart_check_at : int, optional
        Stage-1 iteration of the low-acceptance check (default ``nsimu1 - 1``: 19,999).
    min_accept : int
        Minimum stage-1 acceptances at the check (50).
    max_low_accept_restarts : int
        Low-acceptance restarts with ``a <- a_factor a`` before the chain is reset and
        ``is_second_time`` set (2, i.e. the third time resets).
    adapt_start : int
        Stage-2 iteration after which the covariance is updated every iteration (4000).
    rate_check_at : int, optional
        Stage-2 iteration of the acceptance-rate control (default ``nsimu2 - 1``: 49,999).
    rate_bounds, rate_factors : (float, float)
        Acceptance-rate band (0.1, 0.5) and the factors applied to ``s`` below/above it
        (0.7, 2).
    max_rate_restarts : int
        Rate-control restarts allowed per site before it is marked failed (5).
    penalty : float
        Cost added to ``J_old`` for a singular solve (100).
    annealing : bool
        Annealed acceptance ``exp(-dJ ln(n+2))`` (reference); False uses ``exp(-dJ)``.
    reset_cost_at_stage2 : bool
        Stage 2 starts with ``J_old = J0`` (reference, bug #19); False keeps the cost of
        the last stage-1 state.
    stale_penalty_delta : bool
        Reproduce the cen-v2 bug #20 (on a singular solve the acceptance uses the previous
        iteration's ``dJ``); default False = the v22 behaviour (``dJ = penalty``).
    max_redraws : int
        Cap on redraws of one proposal (replaces the reference's 60-s wall-clock abort,
        bug #27). In stage 2 before any acceptance, hitting it restarts the chain from
        scratch (as the reference's abort); otherwise the proposal is rejected.
    max_chain_restarts : int
        Safeguard (not in the reference): restarts of one chain caused by a
        non-positive-definite covariance or the redraw cap beyond which the site is marked
        failed (the reference would loop forever).
    chains : {"sequential", "parallel"}
        ``"sequential"`` (reference semantics): the chains of a site run one after the
        other, ``s`` and ``is_second_time`` carry over; ``B = n_sites``. ``"parallel"``:
        all chains run at once as batch members (``B = n_sites * n_chains``, 3x fewer
        iterations); ``s``, ``is_second_time`` and the restart counters are then per chain
        (the carry-over between chains is lost).
    predict : callable, optional
        ``predict(theta[B, P]) -> Tensor[B, L]``, called on the same batch right after
        ``cost`` (alternatively return ``(cost, prediction)`` from ``cost``).
    obs : array_like, optional
        Observations ``[n_sites, L]`` at the prediction points (NaN = padding) for the
        per-chain ``[R2, RMSE]``.
    n_layers : array_like, optional
        RMSE divisor per site (the layer count *before* cleaning in PRODA; default: the
        number of non-NaN ``obs``).
    gev_mode : bool
        Also compute ``para_es`` (mode of a GEV fitted by maximum likelihood to each
        parameter of the optimal chain; slow: one scipy fit per site and parameter).
    store_dtype : torch.dtype
        Dtype of the stored accepted samples (memory ``n_sites * n_chains * N_acc * P``).
    device : str or torch.device, optional
        Computation device.
    progress : bool
        Show a tqdm progress bar (total = the minimum number of iterations).
    checkpoint, checkpoint_every, resume
        As in :func:`adaptive_metropolis` (default every ``(nsimu1 + nsimu2) // 10``
        iterations).
    callback : callable, optional
        Called after every iteration with a dict of per-row tensors (``phase``, ``n``,
        ``chain``, ``theta_old``, ``proposal``, ``J_old``, ``J_new`` (penalised), ``delta``,
        ``probability``, ``accepted``, ``theta`` (after the step), ``a``, ``s``, ...) and
        ``events`` (masks ``low_acceptance``, ``low_acceptance_reset``, ``stage2_start``,
        ``rate_low``, ``rate_high``, ``error``, ``chol_fail``, ``redraw_abort``,
        ``chain_done``), for tracing and tests.
    param_names : sequence of str, optional
        Parameter names for :meth:`SamplerResult.to_dataset`.

    Returns
    -------
    SamplerResult
        With extras ``gelman_rubin`` (site, parameter), ``optimal_chain``, ``error``,
        ``burn_in`` (site, chain), ``acceptance_ratio`` (PRODA's ``a_r``, site, chain),
        ``scale_factor`` (final ``s``), ``is_second_time``, the counters
        ``n_rate_restarts``, ``n_low_accept_restarts``, ``n_chain_restarts`` (covariance
        or redraw-cap restarts), ``finished_at`` (iteration at which the site finished),
        and with predictions ``stat`` (site, chain, statistic = [r2, rmse]),
        ``soc_mod_opt``/``soc_std_opt`` (site, obs_layer); ``para_es`` with
        ``gev_mode``. Per-site extras have dims (site, chain) with ``chains="parallel"``.
        Failed sites have NaN summaries and ``optimal_chain = -1``.

    Notes
    -----
    Interpretations where the spec is silent: the low-acceptance counter restarts with
    every chain (re)start; the checks happen after iteration ``restart_check_at`` (and
    ``rate_check_at``); the rate-control counter counts per site; the remembered ``dJ``
    of ``stale_penalty_delta`` is cleared when a chain (re)starts; a site whose ``J0`` is
    not finite is marked failed.

    All sites advance in lockstep, one batched ``cost`` call per iteration, so a run
    lasts as long as its slowest site (a site that restarts a chain keeps the batch
    going; finished sites are evaluated at their last state and ignored). Iterations
    needed: at least ``n_chains * (nsimu1 + nsimu2)`` with ``chains="sequential"``,
    ``nsimu1 + nsimu2`` with ``"parallel"``. The sampler's own cost per iteration is
    dominated by the batched Cholesky factorisation of every stage-2 covariance (the
    reference recomputes it each iteration), ``O(B P^3)``.
    """
    dev = _device(device)
    S, C, P = int(n_sites), int(n_chains), int(n_params)
    if chains not in ("sequential", "parallel"):
        raise ValueError(f"chains must be 'sequential' or 'parallel'; got {chains!r}")
    if C < 2:
        raise ValueError("the reference sampler needs at least 2 chains (Gelman-Rubin)")
    cfg = dict(
        n_sites=S, n_params=P, n_chains=C, nsimu1=int(nsimu1), nsimu2=int(nsimu2),
        seed=int(seed),
        theta0=(float(theta0) if np.ndim(theta0) == 0 else [float(v) for v in theta0]),
        s0=float(s0), a0=float(a0), a_factor=float(a_factor),
        restart_check_at=int(nsimu1 - 1 if restart_check_at is None else restart_check_at),
        min_accept=int(min_accept), max_low_accept_restarts=int(max_low_accept_restarts),
        adapt_start=int(adapt_start),
        rate_check_at=int(nsimu2 - 1 if rate_check_at is None else rate_check_at),
        rate_bounds=[float(v) for v in rate_bounds], rate_factors=[float(v) for v in rate_factors],
        max_rate_restarts=int(max_rate_restarts), penalty=float(penalty),
        annealing=bool(annealing), reset_cost_at_stage2=bool(reset_cost_at_stage2),
        stale_penalty_delta=bool(stale_penalty_delta), max_redraws=int(max_redraws),
        max_chain_restarts=int(max_chain_restarts), chains=chains,
        store_dtype=str(store_dtype),
    )
    if isinstance(cfg["theta0"], list) and len(cfg["theta0"]) != P:
        raise ValueError(f"theta0 must be a scalar or have {P} values")
    gen = _generator(seed, dev)
    ref = _Reference(cost, predict, cfg, S, C, P, dev, gen, callback)
    every = int(checkpoint_every) if checkpoint_every else max(1, (nsimu1 + nsimu2) // 10)
    if resume and checkpoint_exists(checkpoint):
        ref.st, meta = _load_state(checkpoint, gen, cfg, dev)
        it = int(meta["iteration"])
    else:
        ref.st = ref.init_state()
        it = 0
    total = (C if chains == "sequential" else 1) * (nsimu1 + nsimu2)
    pbar = _progress(progress, total, it, "PRODA sampler")
    active = lambda: bool(((ref.st.phase == 1) | (ref.st.phase == 2)).any())  # noqa: E731
    try:
        while active():
            it += 1
            ref.step(it)
            if pbar.total is not None and it > pbar.total:
                pbar.total = it
            pbar.update(1)
            if checkpoint is not None and it % every == 0:
                _save_state(checkpoint, ref.st, gen, cfg, {"iteration": it})
        if checkpoint is not None:
            _save_state(checkpoint, ref.st, gen, cfg, {"iteration": it})
    finally:
        pbar.close()
    return _reference_summary(ref, obs, n_layers, gev_mode, cfg, it, param_names, checkpoint)


def _reference_summary(ref: _Reference, obs, n_layers, gev_mode, cfg, it, param_names, checkpoint):
    st, S, C, P, dev = ref.st, ref.S, ref.C, ref.P, ref.dev
    err_rows = st.phase == _PHASE_ERROR
    err = err_rows.view(S, ref.k).any(1)
    N = st.acc_count.clone()
    N[err] = 0
    burn = _matlab_round_half(N)
    npost = N - burn
    post = _gather_window(st.acc_theta, burn, npost)  # [S, C, W, P]
    cmean = _nanmean(post, 2)
    csd = _nanstd(post, 2)
    have_pred = st.acc_m.shape[3] > 0
    extras: dict[str, tuple[tuple[str, ...], Tensor]] = {}
    opt = None
    if have_pred:
        tstart = (burn - 1).clamp_min(0)
        tcount = torch.where(N > 0, N - tstart, torch.zeros_like(N))
        trace = _gather_window(st.acc_m, tstart, tcount)  # [S, C, W, L]
        mbar = _nanmean(trace, 2)
        msd = _nanstd(trace, 2)
        if obs is not None:
            o = torch.as_tensor(obs, dtype=_F64, device=dev).reshape(S, -1)
            if o.shape[1] != mbar.shape[2]:
                raise ValueError(f"obs has {o.shape[1]} layers, predictions {mbar.shape[2]}")
            valid = torch.isfinite(o)[:, None, :].expand_as(mbar)
            nl = (valid[:, 0].sum(-1).to(_F64) if n_layers is None
                  else torch.as_tensor(n_layers, dtype=_F64, device=dev).reshape(S))
            zero = torch.zeros_like(mbar)
            ss_res = torch.where(valid, (mbar - o[:, None]) ** 2, zero).sum(-1)
            mmean = torch.where(valid, mbar, zero).sum(-1) / valid.sum(-1).clamp_min(1)
            ss_mod = torch.where(valid, (mbar - mmean[..., None]) ** 2, zero).sum(-1)
            r2 = 1 - ss_res / ss_mod
            rmse = torch.sqrt(ss_res / nl[:, None])
            stat = torch.stack([r2, rmse], -1)
            stat[err] = math.nan
            extras["stat"] = (("site", "chain", "statistic"), stat)
            rm = torch.nan_to_num(rmse, nan=math.inf)
            tied = rm == rm.min(1, keepdim=True).values
            ninf = torch.full_like(r2, -math.inf)
            r2k = torch.where(tied, torch.nan_to_num(r2, nan=-math.inf), ninf)
            opt = torch.argmax(r2k, 1)
            opt = torch.where(torch.isfinite(rm).any(1), opt, torch.full_like(opt, -1))
    jpost = _gather_window(st.acc_J[..., None], burn, npost)[..., 0]
    opt_j = torch.argmin(torch.nan_to_num(_nanmean(jpost, 2), nan=math.inf), 1)
    opt = opt_j if opt is None else torch.where(opt < 0, opt_j, opt)
    ar = torch.arange(S, device=dev)
    mean = cmean[ar, opt]
    sd = csd[ar, opt]
    if have_pred:
        extras["soc_mod_opt"] = (("site", "obs_layer"), mbar[ar, opt])
        extras["soc_std_opt"] = (("site", "obs_layer"), msd[ar, opt])
    gr = _diag.reference_gelman_rubin(post, npost.to(_F64))
    rh, es = _rhat_ess_ragged(post, npost)
    # best accepted sample of the final chains
    cap = st.acc_J.shape[2]
    inwin = torch.arange(cap, device=dev) < N[..., None]
    jall = torch.where(inwin, st.acc_J, torch.full_like(st.acc_J, math.inf)).reshape(S, -1)
    flat = torch.argmin(jall, 1)
    best_value = jall[ar, flat]
    best = st.acc_theta.reshape(S, C * cap, P)[ar, flat].to(_F64)
    nobest = ~torch.isfinite(best_value)
    best[nobest] = math.nan
    best_value[nobest] = math.nan
    for t in (mean, sd, gr, rh, es):
        t[err] = math.nan
    opt = torch.where(err, torch.full_like(opt, -1), opt)
    if gev_mode:
        post_opt = post[ar, opt.clamp_min(0)].cpu().numpy()
        pe = np.full((S, P), np.nan)
        for s_ in range(S):
            if bool(err[s_]):
                continue
            for p_ in range(P):
                pe[s_, p_] = _gev_mode(post_opt[s_, :, p_])
        extras["para_es"] = (("site", "parameter"), torch.from_numpy(pe).to(dev))
    per = ("site",) if ref.sequential else ("site", "chain")
    shp = (S,) if ref.sequential else (S, C)

    def per_row(x: Tensor) -> Tensor:
        return x.reshape(shp)

    extras.update({
        "gelman_rubin": (("site", "parameter"), gr),
        "optimal_chain": (("site",), opt),
        "error": (("site",), err),
        "burn_in": (("site", "chain"), burn),
        "acceptance_ratio": (("site", "chain"), st.acc_ratio),
        "scale_factor": (per, per_row(st.s)),
        "n_rate_restarts": (per, per_row(st.rate_restarts)),
        "n_low_accept_restarts": (per, per_row(st.low_total)),
        "n_chain_restarts": (per, per_row(st.chain_restarts_total)),
        "is_second_time": (per, per_row(st.second)),
        "finished_at": (per, per_row(st.finished_at)),
    })
    acc = N.to(_F64) / cfg["nsimu2"]
    acc[err] = math.nan
    settings = dict(cfg, iterations=it, checkpoint=str(checkpoint) if checkpoint else None)
    return SamplerResult(
        method="reference",
        samples=post,
        mean=mean,
        sd=sd,
        best=best,
        best_value=best_value,
        rhat=rh,
        ess=es,
        acceptance=acc,
        n_accepted=N,
        settings=settings,
        param_names=list(param_names) if param_names is not None else None,
        extras=extras,
    )


# ----------------------------------------------------------------------------- MAP


def _value_and_grad(loss: Target, z: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Loss [n], gradient w.r.t. z [n, P] (zeros where not finite) and finite mask."""
    zz = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        theta = torch.sigmoid(zz)
        # saturated sigmoid (|z| very large) gives theta = 0 or 1 exactly: never pass those
        inside = ((theta > 0) & (theta < 1)).all(-1).detach()
        theta = torch.where(inside[:, None], theta, torch.full_like(theta, 0.5))
        out = loss(theta)
        if isinstance(out, tuple):
            out = out[0]
        val = torch.as_tensor(out)
        if val.numel() != n:
            raise ValueError(f"loss returned {val.numel()} values for a batch of {n} rows")
        val = val.reshape(n)
        if not val.requires_grad:
            raise ValueError("loss must be differentiable with respect to theta (torch ops)")
        fin = torch.isfinite(val.detach()) & inside
        total = torch.where(fin, val, torch.zeros_like(val)).sum()
        (g,) = torch.autograd.grad(total, zz, allow_unused=True)
    if g is None:
        g = torch.zeros_like(z)
    fin = fin & torch.isfinite(g).all(-1)
    g = torch.where(fin[:, None], g, torch.zeros_like(g)).to(_F64)
    v = val.detach().to(_F64)
    return torch.where(fin, v, torch.full_like(v, math.inf)), g, fin


def map_estimate(
    loss: Target,
    *,
    n_sites: int,
    n_params: int,
    n_starts: int = 4,
    method: str = "adam",
    steps: int | None = None,
    lr: float | None = None,
    init: Any = None,
    seed: int = 0,
    rtol: float = 1e-10,
    gtol: float = 1e-8,
    patience: int = 20,
    min_lr: float | None = None,
    history: int = 10,
    max_line_search: int = 30,
    device: str | torch.device | None = None,
    progress: bool = True,
    param_names: Sequence[str] | None = None,
) -> MapResult:
    """Gradient-based MAP / minimum-loss estimate per site, multi-start, in logit space.

    The optimiser works on ``z = logit(theta)`` (``theta = sigmoid(z)``), so every iterate
    is inside (0, 1)^P. All ``n_sites * n_starts`` problems form one batch (site-major);
    each site keeps its best start.

    Parameters
    ----------
    loss : callable
        Differentiable ``loss(theta[B, P]) -> Tensor[B]`` (lower is better; e.g. a cost or
        a negative log posterior), ``B = n_sites * n_starts`` site-major. Rows must be
        independent (the gradient of the summed loss is then the per-row gradient).
    n_sites, n_params : int
        Sites and parameters.
    n_starts : int
        Starts per site: uniform in (0.1, 0.9), except those given by ``init``.
    method : {"adam", "lbfgs"}
        ``"adam"``: batched Adam with a per-row learning rate halved whenever the row's
        best loss has not improved for ``patience`` steps (converged when it falls below
        ``min_lr``). ``"lbfgs"``: a batched L-BFGS with per-row two-loop recursion,
        per-row backtracking Armijo line search and per-row curvature-pair memory, so line
        searches are *not* coupled across sites (torch.optim.LBFGS on the summed loss
        would use one step length for every site). Each line-search trial is one batched
        call. Converged rows are frozen.
    steps : int, optional
        Maximum iterations (default 2000 for Adam, 200 for L-BFGS).
    lr : float, optional
        Adam learning rate in z units (default 0.05). Unused by L-BFGS.
    init : array_like, optional
        Starts ``[n_sites, P]`` (start 0) or ``[n_sites, n_starts, P]``.
    seed : int
        Seed of the random starts.
    rtol : float
        L-BFGS: converged when the loss decrease is at most ``rtol * max(|L|, 1)``; Adam:
        improvements smaller than this do not reset the patience counter.
    gtol : float
        L-BFGS: converged when ``max |dL/dz| <= gtol``.
    patience : int
        Adam: steps without improvement before the row's learning rate is halved.
    min_lr : float, optional
        Adam: a row is converged when its learning rate falls below this (default
        ``lr * 1e-4``).
    history : int
        L-BFGS memory (curvature pairs).
    max_line_search : int
        L-BFGS: step halvings per line search; a row whose search fails with an empty
        memory is frozen and reported not converged.
    device : str or torch.device, optional
        Computation device.
    progress : bool
        Show a tqdm progress bar.
    param_names : sequence of str, optional
        Names for :meth:`MapResult.to_dataset`.

    Returns
    -------
    MapResult
        ``theta_map [S, P]``, ``loss [S]``, ``n_steps [S]``, ``converged [S]`` of the best
        start of each site, and the per-start values.
    """
    dev = _device(device)
    S, K, P = int(n_sites), int(n_starts), int(n_params)
    B = S * K
    if method not in ("adam", "lbfgs"):
        raise ValueError(f"method must be 'adam' or 'lbfgs'; got {method!r}")
    steps = (2000 if method == "adam" else 200) if steps is None else int(steps)
    lr = 0.05 if lr is None else float(lr)
    min_lr = lr * 1e-4 if min_lr is None else float(min_lr)
    gen = _generator(seed, dev)
    start = torch.rand(S, K, P, generator=gen, device=dev, dtype=_F64) * 0.8 + 0.1
    given = torch.zeros(S, K, dtype=torch.bool, device=dev)
    init_t = _tensor_init(init, dev)
    if init_t is not None:
        if init_t.shape == (S, P):
            start[:, 0] = init_t
            given[:, 0] = True
        elif init_t.shape == (S, K, P):
            start = init_t.clone()
            given[:] = True
        else:
            raise ValueError(f"init must have shape [{S}, {P}] or [{S}, {K}, {P}]")
    theta = start.reshape(B, P).clamp(1e-12, 1 - 1e-12)
    given = given.reshape(B)
    z = torch.logit(theta)
    L, g, fin = _value_and_grad(loss, z, B)
    for _ in range(20):  # redraw random starts with a non-finite loss
        bad = ~fin & ~given
        if not bool(bad.any()):
            break
        z = z.clone()
        z[bad] = torch.logit(
            torch.rand(int(bad.sum()), P, generator=gen, device=dev, dtype=_F64) * 0.8 + 0.1)
        L2, g2, f2 = _value_and_grad(loss, z, B)
        L = torch.where(bad, L2, L)
        g = torch.where(bad[:, None], g2, g)
        fin = torch.where(bad, f2, fin)
    conv = torch.zeros(B, dtype=torch.bool, device=dev)
    frozen = ~fin  # rows that cannot be optimised
    nsteps = torch.zeros(B, dtype=torch.int64, device=dev)
    pbar = _progress(progress, steps, 0, f"MAP ({method})")
    try:
        if method == "adam":
            z, L, conv, nsteps = _adam(loss, z, L, g, fin, frozen, steps, lr, min_lr, rtol,
                                       patience, pbar)
        else:
            z, L, conv, nsteps = _lbfgs(loss, z, L, g, frozen, steps, rtol, gtol, history,
                                        max_line_search, pbar)
    finally:
        pbar.close()
    theta_all = torch.sigmoid(z).view(S, K, P)
    loss_all = L.view(S, K)
    best = torch.argmin(torch.nan_to_num(loss_all, nan=math.inf), 1)
    ar = torch.arange(S, device=dev)
    settings = dict(n_sites=S, n_params=P, n_starts=K, optimizer=method, steps=steps, lr=lr,
                    seed=int(seed), rtol=rtol, gtol=gtol, patience=patience, min_lr=min_lr,
                    history=history, max_line_search=max_line_search)
    lb = loss_all[ar, best]
    return MapResult(
        theta_map=theta_all[ar, best],
        loss=torch.where(torch.isfinite(lb), lb, torch.full_like(lb, math.nan)),
        n_steps=nsteps.view(S, K)[ar, best],
        converged=conv.view(S, K)[ar, best],
        best_start=best,
        start_theta=theta_all,
        start_loss=torch.where(torch.isfinite(loss_all), loss_all,
                               torch.full_like(loss_all, math.nan)),
        start_converged=conv.view(S, K),
        start_n_steps=nsteps.view(S, K),
        method=method,
        settings=settings,
        param_names=list(param_names) if param_names is not None else None,
    )


def _adam(loss, z, L, g, fin, frozen, steps, lr, min_lr, rtol, patience, pbar):
    B, P = z.shape
    dev = z.device
    b1, b2, eps = 0.9, 0.999, 1e-8
    m = torch.zeros_like(z)
    v = torch.zeros_like(z)
    t = torch.zeros(B, dtype=_F64, device=dev)
    lr_row = torch.full((B,), lr, dtype=_F64, device=dev)
    bad = torch.zeros(B, dtype=torch.int64, device=dev)
    conv = torch.zeros(B, dtype=torch.bool, device=dev)
    nsteps = torch.zeros(B, dtype=torch.int64, device=dev)
    best_z, best_L, best_g = z.clone(), L.clone(), g.clone()
    for _ in range(steps):
        act = ~conv & ~frozen
        if not bool(act.any()):
            break
        a = act[:, None]
        t = t + act.to(_F64)
        m = torch.where(a, b1 * m + (1 - b1) * g, m)
        v = torch.where(a, b2 * v + (1 - b2) * g * g, v)
        tt = t.clamp_min(1)[:, None]
        mhat = m / (1 - b1**tt)
        vhat = v / (1 - b2**tt)
        z = torch.where(a, z - lr_row[:, None] * mhat / (vhat.sqrt() + eps), z)
        nsteps = nsteps + act.to(torch.int64)
        L, g, fin = _value_and_grad(loss, z, B)
        # a non-finite loss: back to the best point, half the learning rate, fresh moments
        nf = act & ~fin
        z = torch.where(nf[:, None], best_z, z)
        L = torch.where(nf, best_L, L)
        g = torch.where(nf[:, None], best_g, g)
        lr_row = torch.where(nf, lr_row * 0.5, lr_row)
        m = torch.where(nf[:, None], 0.0, m)
        v = torch.where(nf[:, None], 0.0, v)
        t = torch.where(nf, 0.0, t)
        ok = act & fin
        improved = ok & (L < best_L - rtol * best_L.abs().clamp_min(1.0))
        better = ok & (L < best_L)
        best_z = torch.where(better[:, None], z, best_z)
        best_g = torch.where(better[:, None], g, best_g)
        best_L = torch.where(better, L, best_L)
        bad = torch.where(improved, 0, bad + act.to(torch.int64))
        plateau = act & (bad >= patience)
        lr_row = torch.where(plateau, lr_row * 0.5, lr_row)
        bad = torch.where(plateau, 0, bad)
        conv = conv | (act & (lr_row < min_lr))
        pbar.update(1)
    return best_z, best_L, conv, nsteps


def _lbfgs(loss, z, L, g, frozen, steps, rtol, gtol, history, max_ls, pbar):
    B, P = z.shape
    dev = z.device
    M = max(1, int(history))
    S_h = torch.zeros(B, M, P, dtype=_F64, device=dev)
    Y_h = torch.zeros(B, M, P, dtype=_F64, device=dev)
    rho = torch.zeros(B, M, dtype=_F64, device=dev)
    conv = (g.abs().amax(-1) <= gtol) & ~frozen
    stuck = frozen.clone()
    nsteps = torch.zeros(B, dtype=torch.int64, device=dev)
    c1 = 1e-4
    for _ in range(steps):
        act = ~conv & ~stuck
        if not bool(act.any()):
            break
        # two-loop recursion (empty memory slots have rho = 0 and do nothing)
        q = g.clone()
        alpha = torch.zeros(B, M, dtype=_F64, device=dev)
        for i in range(M - 1, -1, -1):
            alpha[:, i] = rho[:, i] * (S_h[:, i] * q).sum(-1)
            q = q - alpha[:, i, None] * Y_h[:, i]
        sy = (S_h[:, -1] * Y_h[:, -1]).sum(-1)
        yy = (Y_h[:, -1] ** 2).sum(-1)
        gamma0 = torch.clamp(1.0 / g.abs().sum(-1).clamp_min(1e-300), max=1.0)
        gamma = torch.where(rho[:, -1] > 0, sy / yy.clamp_min(1e-300), gamma0)
        r = gamma[:, None] * q
        for i in range(M):
            beta = rho[:, i] * (Y_h[:, i] * r).sum(-1)
            r = r + S_h[:, i] * (alpha[:, i] - beta)[:, None]
        d = -r
        gd = (g * d).sum(-1)
        nd = act & ~(gd < 0)
        if bool(nd.any()):  # not a descent direction: steepest descent, memory cleared
            d = torch.where(nd[:, None], -g * gamma0[:, None], d)
            gd = (g * d).sum(-1)
            S_h[nd], Y_h[nd], rho[nd] = 0.0, 0.0, 0.0
        step = torch.ones(B, dtype=_F64, device=dev)
        done = ~act
        z_new, L_new, g_new = z.clone(), L.clone(), g.clone()
        for _ls in range(max_ls):
            trial = ~done
            if not bool(trial.any()):
                break
            zt = torch.where(trial[:, None], z + step[:, None] * d, z_new)
            Lt, gt, ft = _value_and_grad(loss, zt, B)
            arm = trial & ft & (Lt <= L + c1 * step * gd)
            z_new = torch.where(arm[:, None], zt, z_new)
            L_new = torch.where(arm, Lt, L_new)
            g_new = torch.where(arm[:, None], gt, g_new)
            done = done | arm
            step = torch.where(trial & ~arm, step * 0.5, step)
        failed = act & ~done
        had_memory = (rho > 0).any(-1)
        # failed search: clear the memory and retry with steepest descent; if that already
        # failed, the row cannot make progress
        stuck = stuck | (failed & ~had_memory)
        reset = failed & had_memory
        S_h[reset], Y_h[reset], rho[reset] = 0.0, 0.0, 0.0
        succ = act & done
        s = z_new - z
        y = g_new - g
        sy_new = (s * y).sum(-1)
        upd = succ & (sy_new > 1e-12 * (y * y).sum(-1).clamp_min(1e-300)) & (sy_new > 0)
        if bool(upd.any()):
            S_h[upd] = torch.cat([S_h[upd, 1:], s[upd, None]], 1)
            Y_h[upd] = torch.cat([Y_h[upd, 1:], y[upd, None]], 1)
            rho[upd] = torch.cat([rho[upd, 1:], (1.0 / sy_new[upd])[:, None]], 1)
        dec = L - L_new
        scale = torch.maximum(torch.maximum(L.abs(), L_new.abs()), torch.ones_like(L))
        small = succ & (dec <= rtol * scale)
        gconv = succ & (g_new.abs().amax(-1) <= gtol)
        z = torch.where(succ[:, None], z_new, z)
        L = torch.where(succ, L_new, L)
        g = torch.where(succ[:, None], g_new, g)
        nsteps = nsteps + act.to(torch.int64)
        conv = conv | small | gconv
        pbar.update(1)
    return z, L, conv & ~frozen, nsteps


# ----------------------------------------------------------------------------- batch mode


def batch_mode(
    target: Target,
    *,
    n_sites: int,
    n_params: int,
    method: str = "map",
    reduce: str = "sum",
    **kwargs: Any,
) -> SamplerResult | MapResult:
    """One parameter set for all sites (Tao et al. 2020's "batch" data assimilation).

    The pooled target of a candidate ``theta`` is the sum (or mean) over sites of the
    per-site values: each candidate is broadcast to every site, the batched ``target`` is
    called once for all sites and candidates, and the per-site values are reduced.

    Parameters
    ----------
    target : callable
        Per-site target ``target(theta[n_sites * k, P]) -> Tensor[n_sites * k]``
        (site-major), as for the other samplers: a log density (``method="am"``), a cost
        (``"reference"``) or a differentiable loss (``"map"``).
    n_sites, n_params : int
        Sites that share the parameters, and parameters.
    method : {"map", "am", "reference"}
        :func:`map_estimate`, :func:`adaptive_metropolis` or :func:`reference_sampler`.
    reduce : {"sum", "mean"}
        Reduction over sites (sum = joint likelihood of independent sites).
    **kwargs
        Passed on to the method (``n_chains``, ``n_iter``, ``steps``, ``seed``, ...); for
        ``method="map"`` the optimiser is chosen with ``optimizer="adam"|"lbfgs"``.

    Returns
    -------
    SamplerResult or MapResult
        With a single site; ``settings["batch_mode"]`` is True and
        ``settings["n_sites_pooled"]`` the number of sites.

    Examples
    --------
    >>> import torch
    >>> y = torch.tensor([[0.2, 0.6], [0.4, 0.8]])                 # two sites, P = 2
    >>> def loss(theta):                                            # [2 * k, 2]
    ...     k = theta.shape[0] // 2
    ...     return ((theta.view(2, k, 2) - y[:, None]) ** 2).sum(-1).reshape(-1)
    >>> fit = batch_mode(loss, n_sites=2, n_params=2, method="map",
    ...                  optimizer="lbfgs", progress=False)
    >>> [round(v, 4) for v in fit.theta_map[0].tolist()]            # the mean of the sites
    [0.3, 0.7]
    """
    if reduce not in ("sum", "mean"):
        raise ValueError(f"reduce must be 'sum' or 'mean'; got {reduce!r}")
    S = int(n_sites)

    def pooled(theta: Tensor) -> Any:
        k = theta.shape[0]
        full = theta.repeat(S, 1)  # row s * k + j = theta[j]
        out = target(full)
        if isinstance(out, tuple):
            out = out[0]
        vals = torch.as_tensor(out).reshape(S, k)
        return vals.sum(0) if reduce == "sum" else vals.mean(0)

    if method == "map":
        if "optimizer" in kwargs:
            kwargs["method"] = kwargs.pop("optimizer")
        res = map_estimate(pooled, n_sites=1, n_params=n_params, **kwargs)
    elif method == "am":
        res = adaptive_metropolis(pooled, n_sites=1, n_params=n_params, **kwargs)
    elif method == "reference":
        res = reference_sampler(pooled, n_sites=1, n_params=n_params, **kwargs)
    else:
        raise ValueError(f"method must be 'map', 'am' or 'reference'; got {method!r}")
    res.settings.update(batch_mode=True, n_sites_pooled=S, reduce=reduce)
    return res
