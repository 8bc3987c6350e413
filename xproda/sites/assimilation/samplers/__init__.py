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
option of :func:`xproda.set_options`, else CPU); on the CPU results are bit-for-bit
reproducible, and a run resumed from a checkpoint equals the uninterrupted run (see
:mod:`xproda.sites.assimilation.checkpoint`). Random numbers come from per-site streams
(:mod:`xproda.sites.assimilation.streams`) keyed by ``seed`` and the site's id
(``site_ids=``; default: the site's position): :func:`adaptive_metropolis` and
:func:`reference_sampler` draw each chain's starts, proposals and acceptance uniforms from
the chain's own keys at counters given by the iteration, and their arithmetic is row by row
(sums in a fixed order, batched products and decompositions that do not depend on the
batch), so on the CPU a site's chains and summaries are bit for bit the same alone, in any
batch, in any order or in any split of the sites into shards, for a target whose value for
a row depends on that row only (the rank-normalised ``ess`` excepted, which
:func:`~xproda.sites.assimilation.diagnostics.rhat_ess` can round differently in large
batches). :func:`map_estimate` draws a site's starts from the site's
own stream too, so a site's MAP does not depend on the other sites.

One module per concept: :mod:`~xproda.sites.assimilation.samplers.common` (devices,
generators, target calls, checkpointed state), :mod:`~xproda.sites.assimilation.samplers.results`
(:class:`SamplerResult`, :class:`MapResult`), :mod:`~xproda.sites.assimilation.samplers.adaptive`
(:func:`adaptive_metropolis`), :mod:`~xproda.sites.assimilation.samplers.reference`
(:func:`reference_sampler`, :func:`annealed_acceptance_probability`),
:mod:`~xproda.sites.assimilation.samplers.optimize` (:func:`map_estimate`) and
:mod:`~xproda.sites.assimilation.samplers.batch` (:func:`batch_mode`).

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

from xproda.sites.assimilation.samplers.adaptive import adaptive_metropolis
from xproda.sites.assimilation.samplers.batch import batch_mode
from xproda.sites.assimilation.samplers.optimize import map_estimate
from xproda.sites.assimilation.samplers.reference import (
    annealed_acceptance_probability,
    max_post_draws,
    reference_sampler,
)
from xproda.sites.assimilation.samplers.results import MapResult, SamplerResult

__all__ = [
    "SamplerResult",
    "MapResult",
    "adaptive_metropolis",
    "reference_sampler",
    "map_estimate",
    "batch_mode",
    "annealed_acceptance_probability",
    "max_post_draws",
]
