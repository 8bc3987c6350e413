"""The random-sampling baseline (Tao et al. 2020): one parameter set drawn from site posteriors.

Tao et al. (2020, *Front. Big Data* 3:17) compare, on held-out profiles, the CLM5 default
parameters (R2 0.32), parameters **randomly sampled from the site-level posteriors** and used
for every site (0.36), one parameter set fitted to all sites at once ("one-batch" DA, 0.43)
and the parameter network (0.62). The paper does not say how the homogeneous set is taken
from the draws (the spec, ``proda_spec.md`` §9, only quotes the numbers), so xproda fixes a
rule that is deterministic for a seed and uses the training sites only.

The rule
--------
1. **Pool.** The site-level DA results of the training sites (the same results and the same
   §5.3 filter as two-step training, :func:`xproda.learning.two_step.two_step_targets`): each
   site's posterior samples ``samples (site, chain, draw, parameter)`` where the result has
   them (adaptive Metropolis, the reference sampler; NaN padding skipped), else its point
   estimate (``mean``, or ``map`` of a MAP fit). Parameters are taken by name.
2. **Draw.** ``n_draws`` candidate vectors with ``numpy.random.default_rng(seed)``: with
   samples, a site uniformly at random and then one of its samples uniformly at random (every
   site weighs the same, whatever its number of samples), so candidates are joint vectors of
   one site's posterior (parameters are not mixed across sites, which would break their
   correlations); with point estimates, ``min(n_draws, n_sites)`` distinct sites.
3. **Select** (``select``):

   - ``"median"`` (default): the element-wise median of the candidates (normalised space):
     a central set of the pooled posteriors, fitted to nothing. This is the baseline the
     paper's ordering asks for: a *typical* posterior set used everywhere, between the
     defaults (no data) and batch mode (one set fitted to all sites).
   - ``"best"``: the candidate with the lowest training cost, the spec cost
     (:class:`~xproda.sites.assimilation.problem.SiteProblem`: the weighted 60 %-error cost of
     CLM5, ``5 (1 - R2)`` of the microbial model) summed over the training sites, i.e. batch
     mode's objective (:func:`~xproda.sites.assimilation.samplers.batch.batch_mode`)
     restricted to the draws: batch mode searches the whole space for the set that fits all
     sites, this only the sets that fit some site. A candidate whose cost is NaN at a training
     site where another candidate's is finite (the model fails there) is never selected;
     sites where every candidate fails are left out of the sum (``n_sites_scored``).

   Why ``"median"`` by default: a single random draw is a lottery, so one set must be taken
   from many draws, deterministically. On the twin world (``synthetic_world(4.0)``, 300
   profiles, 5 folds of 20 degree blocks, the true parameters of the training sites as their
   DA estimates, 100 draws), the held-out linear R2 of single draws on one fold spans -1.87
   to 0.25 (5-95 %), more than the differences between methods. Pooled over the folds:
   defaults -0.02, ``"median"`` 0.18, ``"best"`` -0.40. ``"best"`` wins on its own objective
   by far (held-out CLM5 cost ~11 per site, against 250-4000 for the median), but that cost
   is on relative errors (60 % of each observation), so the deep layers with little carbon
   count as much as the topsoil, while R2 on linear SOC is dominated by the topsoil: the set
   it picks underestimates the topsoil (bias -18,000 g C m-3). Batch mode optimises the
   same cost (issue 19, item 6), so ``"best"`` would add little beside ``"batch"``; the median
   is the distinct baseline.

Examples
--------
>>> import numpy as np
>>> from xproda.learning.random_sampling import draw_candidates
>>> est = np.array([[[0.1, 0.2]], [[0.3, 0.4]], [[0.5, 0.6]]])  # 3 sites, 1 estimate each
>>> cand, site, draw = draw_candidates(est, n_draws=2, seed=0)  # 2 distinct sites
>>> cand.shape, len(set(site.tolist())), bool((cand == est[site, 0]).all()), draw.tolist()
((2, 2), 2, True, [0, 0])
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from xproda import conventions

from xproda.learning.data import TrainingData
from xproda.models import get_model
from xproda.models.base import SoilCarbonModel

__all__ = ["random_sampling_parameters", "draw_candidates", "pooled_estimates", "SELECT"]

#: How the homogeneous set is taken from the draws (see the module docstring).
SELECT = ("median", "best")


def pooled_estimates(assimilation: xr.Dataset, names: Sequence[str],
                     sites: Sequence[Any]) -> tuple[np.ndarray, str]:
    """Per-site parameter vectors of a DA result: posterior samples, else the point estimate.

    Parameters
    ----------
    assimilation : xarray.Dataset
        A result of :func:`~xproda.sites.assimilation.problem.assimilate` with dim ``site``:
        ``samples (site, chain, draw, parameter)``, or ``mean``/``map (site, parameter)``.
    names : sequence of str
        Parameters, in the order of the output (taken by name from the result).
    sites : sequence
        Site ids whose vectors are pooled (in this order).

    Returns
    -------
    vectors : numpy.ndarray, shape [S, M, P]
        Normalised parameter vectors: M samples per site (NaN-padded), or M = 1 estimate.
    estimate : str
        ``"samples"``, ``"mean"`` or ``"map"``: the variable used.

    Raises
    ------
    ValueError
        No per-site estimate in the result, or parameters missing.
    KeyError
        Sites missing from the result.
    """
    var = None
    for key in ("samples", "mean", "map"):
        if key in assimilation and {"site", "parameter"} <= set(assimilation[key].dims):
            var = key
            break
    if var is None:
        raise ValueError("random sampling needs per-site DA results: 'samples', 'mean' or 'map' "
                         "with dims 'site' and 'parameter' (a batch-mode result has one set)")
    est = assimilation[var]
    have = [str(p) for p in est["parameter"].values]
    missing = [p for p in names if p not in have]
    if missing:
        raise ValueError(f"DA estimated parameters {have}; random sampling needs all of "
                         f"{list(names)} (missing: {missing})")
    est = est.sel(parameter=list(names))
    pos = pd.Index(np.asarray(assimilation["site"].values)).get_indexer(np.asarray(sites))
    if (pos < 0).any():
        raise KeyError(f"assimilation result lacks {int((pos < 0).sum())} site(s), e.g. "
                       f"{np.asarray(sites)[pos < 0][:5].tolist()}")
    other = [d for d in est.dims if d not in ("site", "parameter")]
    arr = est.transpose("site", *other, "parameter").values[pos]
    return arr.reshape(arr.shape[0], -1, arr.shape[-1]).astype(np.float64), var


def draw_candidates(vectors: np.ndarray, *, n_draws: int,
                    seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Candidate parameter vectors drawn at random from per-site vectors (step 2 of the rule).

    Parameters
    ----------
    vectors : numpy.ndarray, shape [S, M, P]
        Per-site samples (NaN rows are padding) or estimates (M = 1).
    n_draws : int, keyword-only
        Candidates (M = 1: at most S, distinct sites).
    seed : int, keyword-only

    Returns
    -------
    candidates : numpy.ndarray, shape [N, P]
    site : numpy.ndarray of int, shape [N]
        Row of ``vectors`` each candidate comes from.
    draw : numpy.ndarray of int, shape [N]
        Its sample index (0 for estimates).

    Raises
    ------
    ValueError
        ``n_draws < 1``, or no site with a finite vector.
    """
    if isinstance(n_draws, bool) or int(n_draws) != n_draws or n_draws < 1:
        raise ValueError(f"n_draws: expected an int >= 1, found {n_draws!r}")
    v = np.asarray(vectors, dtype=np.float64)
    if v.ndim != 3:
        raise ValueError(f"vectors: expected shape [site, sample, parameter], found {v.shape}")
    finite = np.isfinite(v).all(-1)  # [S, M]
    usable = np.flatnonzero(finite.any(-1))
    if usable.size == 0:
        raise ValueError("random sampling: no training site has a finite DA estimate")
    rng = np.random.default_rng(int(seed))
    if v.shape[1] == 1:
        site = usable[np.sort(rng.choice(usable.size, size=min(int(n_draws), usable.size),
                                         replace=False))]
        draw = np.zeros(site.size, dtype=np.int64)
    else:
        site = usable[rng.integers(usable.size, size=int(n_draws))]
        n_ok = finite[site].sum(-1)
        k = (rng.random(site.size) * n_ok).astype(np.int64)  # k-th finite sample of the site
        draw = np.array([np.flatnonzero(finite[s])[j] for s, j in zip(site, k)], dtype=np.int64)
    return v[site, draw], site.astype(np.int64), draw


def _training_costs(candidates: np.ndarray, data: TrainingData, mdl: SoilCarbonModel, *,
                    mapping: str, likelihood: str | None, max_rows: int) -> np.ndarray:
    """Spec cost of every candidate at every training site, ``[S, N]`` (NaN: no value)."""
    import torch

    from xproda.sites.assimilation.problem import SiteProblem

    prob = SiteProblem(data.batch, data.forcing, model=mdl, mapping=mapping,
                       likelihood=likelihood)
    S, N = prob.n_sites, candidates.shape[0]
    out = np.full((S, N), np.nan)
    ok = ~np.asarray(prob.no_forcing, dtype=bool)
    if not ok.any():
        return out
    if not ok.all():
        prob = prob.subset(ok)
    n = prob.n_sites
    th = np.clip(candidates, 1e-9, 1.0 - 1e-9)
    step = max(1, int(max_rows) // n)  # candidates per call: rows = sites x candidates
    cols = np.empty((n, N))
    with torch.no_grad():
        for c0 in range(0, N, step):
            c = th[c0:c0 + step]
            rows = np.tile(c, (n, 1))  # site-major: row s * R + r is candidate r at site s
            j = prob.cost(torch.as_tensor(rows, dtype=torch.float64))
            cols[:, c0:c0 + c.shape[0]] = j.cpu().numpy().reshape(n, c.shape[0])
    out[ok] = cols
    return out


def random_sampling_parameters(
    assimilation: xr.Dataset,
    data: TrainingData,
    *,
    model: str | SoilCarbonModel = "clm5",
    sites: Sequence[Any] | None = None,
    n_draws: int = 100,
    select: Literal["median", "best"] = "median",
    seed: int = 0,
    mapping: str = "pchip",
    likelihood: str | None = None,
    max_rows: int = 16384,
) -> xr.Dataset:
    """One homogeneous parameter set drawn from training sites' DA results (Tao et al. 2020).

    See the module docstring for the rule (pool, draw, select) and why.

    Parameters
    ----------
    assimilation : xarray.Dataset
        Site-level DA result (:func:`~xproda.sites.assimilation.problem.assimilate`, dim
        ``site``): posterior ``samples`` are pooled where present, else ``mean`` or ``map``.
    data : TrainingData
        The training sites: the candidates' costs are computed on them (and select the set
        with ``select="best"``); nothing else of the data is used.
    model : str or SoilCarbonModel, keyword-only, default "clm5"
    sites : sequence, keyword-only, optional
        Ids of the sites whose DA results are pooled (default: every site of ``data``). In
        :func:`~xproda.learning.validation.cross_validate`, the training sites that pass the
        two-step DA filter (spec §5.3).
    n_draws : int, keyword-only, default 100
        Candidate parameter vectors drawn (with point estimates at most one per site).
    select : {"median", "best"}, keyword-only, default "median"
        The element-wise median of the candidates, or the candidate with the lowest spec cost
        summed over ``data``'s sites.
    seed : int, keyword-only, default 0
        Seeds the draws; the result is deterministic for a seed and a DA result.
    mapping : str, keyword-only, default "pchip"
        Model-to-observation mapping of the cost.
    likelihood : str, keyword-only, optional
        Cost (default: the model's spec cost, "cen" for clm5, "mic" for the microbial model).
    max_rows : int, keyword-only, default 16384
        Site x candidate rows per model call (bounds memory; results do not depend on it).

    Returns
    -------
    xarray.Dataset
        ``theta (parameter)``: the set, normalised to [0, 1]; ``candidates (candidate,
        parameter)``; ``cost (candidate)``: summed training cost of each (dimensionless;
        ``inf`` where the model fails at a scored site); ``source_site (candidate)``: the site
        id each candidate comes from and ``source_draw (candidate)`` its flat sample index
        (chain-major; 0 for point estimates). Attributes: ``select``, ``seed``,
        ``n_draws``, ``estimate`` (variable pooled), ``n_sites_pooled``,
        ``n_sites_scored``, ``chosen`` (candidate index, -1 for the median),
        ``theta_cost`` (summed training cost of ``theta``), ``likelihood``, ``mapping``.

    Raises
    ------
    ValueError
        Unknown ``select``, bad ``n_draws``, a DA result without per-site estimates or
        missing parameters, no pooled site with a finite estimate, or no candidate with a
        finite cost.
    KeyError
        ``sites`` (or ``data``'s sites) missing from ``assimilation``.
    """
    if select not in SELECT:
        raise ValueError(f"select: expected one of {SELECT}, found {select!r}")
    if isinstance(max_rows, bool) or int(max_rows) < 1:
        raise ValueError(f"max_rows: expected an int >= 1, found {max_rows!r}")
    mdl = model if isinstance(model, SoilCarbonModel) else get_model(model)
    names = list(mdl.parameters.names)
    ids = np.asarray(data.batch.site_ids if sites is None else sites)
    vectors, estimate = pooled_estimates(assimilation, names, ids)
    cand, site, draw = draw_candidates(vectors, n_draws=n_draws, seed=seed)
    scored = np.vstack([cand, np.nanmedian(cand, axis=0)[None]]) if select == "median" else cand
    costs = _training_costs(scored, data, mdl, mapping=mapping,
                            likelihood=likelihood, max_rows=max_rows)
    useful = np.isfinite(costs[:, :cand.shape[0]]).any(-1)  # sites where some candidate runs
    c = costs[useful]
    total = np.where(np.isfinite(c).all(0), np.where(np.isfinite(c), c, 0.0).sum(0), np.inf)
    if select == "best":
        if not np.isfinite(total[:cand.shape[0]]).any():
            raise ValueError(f"random sampling: none of the {cand.shape[0]} candidates gives a "
                             f"finite cost at all {int(useful.sum())} training sites")
        chosen = int(np.argmin(total))  # ties: the first
        theta, theta_cost = cand[chosen], float(total[chosen])
    else:
        chosen, theta, theta_cost = -1, scored[-1], float(total[-1])
    n = cand.shape[0]
    n_pooled = int(np.isfinite(vectors).all(-1).any(-1).sum())
    ds = xr.Dataset(
        {"theta": ("parameter", theta, conventions.attrs("random_sampling_theta",
                                                         section="assimilation")),
         "candidates": (("candidate", "parameter"), cand,
                        conventions.attrs("random_sampling_candidates", section="assimilation")),
         "cost": ("candidate", total[:n],
                  conventions.attrs("random_sampling_cost", section="assimilation")),
         "source_site": ("candidate", ids[site]),
         "source_draw": ("candidate", draw)},
        coords={"parameter": names, "candidate": np.arange(n)})
    ds.attrs.update({"method": "random_sampling", "select": select, "seed": int(seed),
                     "n_draws": int(n_draws), "estimate": estimate,
                     "n_sites_pooled": n_pooled, "n_sites_scored": int(useful.sum()),
                     "chosen": chosen, "theta_cost": theta_cost,
                     "likelihood": likelihood or ("mic" if mdl.name == "microbial" else "cen"),
                     "mapping": mapping})
    return ds
