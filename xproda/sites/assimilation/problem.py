"""Site-level data assimilation problems: the model, the observations and the costs, batched.

:class:`SiteProblem` turns S soil profiles and their forcing into the batched callables the
samplers and optimisers of :mod:`xproda.sites.assimilation.samplers` need: one call evaluates the
process model for every site and every chain (or start) at once, maps the 20 layer values to
the observed depths (:class:`xproda.models.interp.ModelToObs`) and returns a cost or log-density
per row.  :func:`assimilate` runs a whole assimilation and returns an xarray Dataset.

Row order is site-major everywhere: row ``s * R + r`` is replica ``r`` (chain or start) of
site ``s``.
"""

from __future__ import annotations

from typing import Any, Literal, Mapping, Sequence

import numpy as np
import torch
import xarray as xr

from xproda import conventions
from xproda.sites import observations as obsmod
from xproda.models.interp import ModelToObs
from xproda.models import get_model
from xproda.models.base import SoilCarbonModel
from xproda.models.forcing import prepare_forcing
from xproda.sites.assimilation import costs

__all__ = ["SiteProblem", "assimilate", "LIKELIHOODS"]

#: likelihoods of :class:`SiteProblem` (log-density = -cost for the spec's costs)
LIKELIHOODS = {
    "cen": "spec §6.2 cen cost as a negative log-likelihood: Gaussian, 60% relative error, "
           "layer weights of §5.2 as exponents",
    "mic": "spec §6.2 microbial cost 5 (1 - R2) as a pseudo log-likelihood",
    "gaussian": "Gaussian log-likelihood with relative + absolute error (normalised)",
}


def _as_batch(profiles) -> Any:
    if hasattr(profiles, "to_torch") and hasattr(profiles, "soc"):
        return profiles
    return obsmod.pack_profiles(profiles)


class SiteProblem:
    """Batched model-data problem for S soil profiles.

    Parameters
    ----------
    profiles : ProfileBatch or DataFrame
        Observations (see :mod:`xproda.sites.observations`); a DataFrame is packed with
        :func:`~xproda.sites.observations.pack_profiles` (site order = first appearance).
    forcing : mapping or Dataset
        Forcing of each site, batch first ``[S, ...]`` (kernel contract), or a Dataset with one
        batch dim (e.g. ``forcing_grid.proda.sample_sites(...)``).
    model : str or model, default "clm5"
    reference : bool, default False
    likelihood : {"cen", "mic", "gaussian"}
        See :data:`LIKELIHOODS`; default "cen" for clm5, "mic" for the microbial model.
    mapping : {"pchip", "pchip_mean", "layer_mean"}
        Model-to-observation mapping (spec §6.1 uses "pchip" at the node depths).
    free : sequence of str, optional
        Parameters to estimate (default all); the others are fixed at ``fixed``.
    fixed : array_like or mapping, optional
        Normalised values of the fixed parameters: ``[P]`` or ``[S, P]`` (full vector) or a
        mapping name -> value; default 0.5.
    sigma_rel, sigma_abs : float
        Error model of ``likelihood="gaussian"`` (relative, and absolute in g C m-3).
    log_space : bool, default False
        ``likelihood="gaussian"`` on log SOC (log-normal errors of sd ``sigma_rel``).
    """

    def __init__(
        self,
        profiles,
        forcing,
        *,
        model: str | SoilCarbonModel = "clm5",
        reference: bool = False,
        likelihood: Literal["cen", "mic", "gaussian"] | None = None,
        mapping: str = "pchip",
        free: Sequence[str] | None = None,
        fixed: Any = None,
        sigma_rel: float = 0.6,
        sigma_abs: float = 0.0,
        log_space: bool = False,
        **model_options: Any,
    ) -> None:
        self.model = model if isinstance(model, SoilCarbonModel) else get_model(
            model, reference=reference, **model_options)
        self.batch = _as_batch(profiles)
        S = len(self.batch)
        if isinstance(forcing, xr.Dataset):
            from xproda.xr.api import forcing_arrays

            forcing = forcing_arrays(forcing, model=self.model)
        n_f = {k: np.shape(v)[0] for k, v in forcing.items()}
        bad = {k: v for k, v in n_f.items() if v not in (1, S)}
        if bad:
            raise ValueError(f"forcing must have one row per site ({S} sites); got {bad}")
        self.forcing = dict(forcing)
        names = list(self.model.parameters.names)
        self.param_names = names
        free = list(free) if free is not None else names
        unknown = [p for p in free if p not in names]
        if unknown:
            raise KeyError(f"free parameters {unknown} are not parameters of {self.model.name!r}: "
                           f"{names}")
        self.free = free
        self.free_idx = torch.tensor([names.index(p) for p in free])
        base = np.full((S, len(names)), 0.5)
        if isinstance(fixed, Mapping):
            for k, v in fixed.items():
                base[:, names.index(k)] = v
        elif fixed is not None:
            base[:] = np.broadcast_to(np.asarray(fixed, dtype=float), base.shape)
        self.fixed = torch.as_tensor(base, dtype=torch.float64)
        self.likelihood = likelihood or ("mic" if self.model.name == "microbial" else "cen")
        if self.likelihood not in LIKELIHOODS:
            raise ValueError(f"likelihood must be one of {sorted(LIKELIHOODS)}, got "
                             f"{self.likelihood!r}")
        self.mapping = mapping
        self.sigma_rel, self.sigma_abs, self.log_space = sigma_rel, sigma_abs, log_space
        t = self.batch.to_torch()
        self._obs, self._w, self._depth = t["soc"], t["weight"], t["depth"]
        self._top, self._bottom = t["top"], t["bottom"]
        self._cache: dict[int, tuple] = {}
        self.n_evaluations = 0

    # ------------------------------------------------------------------------------------
    @property
    def n_sites(self) -> int:
        return len(self.batch)

    @property
    def n_free(self) -> int:
        return len(self.free)

    def _replicated(self, R: int):
        """Forcing, mapping and observations repeated R times per site (cached)."""
        if R not in self._cache:
            f = prepare_forcing(self.forcing, repeat=R)
            rep = lambda x: x.repeat_interleave(R, dim=0)  # noqa: E731
            m2o = ModelToObs(rep(self._depth), method=self.mapping, top=rep(self._top),
                             bottom=rep(self._bottom))
            self._cache[R] = (f, m2o, rep(self._obs), rep(self._w), rep(self.fixed))
        return self._cache[R]

    def full_theta(self, theta_free: torch.Tensor) -> torch.Tensor:
        """Full normalised parameter vectors ``[B, P]`` from the free ones ``[B, Pf]``."""
        B = theta_free.shape[0]
        R = self._replicas(B)
        fixed = self._replicated(R)[4].to(theta_free.dtype)
        if len(self.free) == len(self.param_names):
            return theta_free
        return fixed.index_copy(1, self.free_idx, theta_free)

    def _replicas(self, B: int) -> int:
        S = self.n_sites
        if B % S:
            raise ValueError(f"batch of {B} rows is not a multiple of the {S} sites")
        return B // S

    def predict(self, theta_free) -> torch.Tensor:
        """Modelled SOC (g C m-3) at the observed depths ``[B, D]`` (NaN where invalid)."""
        th = torch.as_tensor(theta_free, dtype=torch.float64)
        R = self._replicas(th.shape[0])
        f, m2o, *_ = self._replicated(R)
        out = self.model.steady_state(self.full_theta(th), f)
        self.n_evaluations += th.shape[0]
        return m2o(out["soc"])

    def cost(self, theta_free) -> torch.Tensor:
        """Cost per row (lower is better): the likelihood's negative log (see LIKELIHOODS)."""
        th = torch.as_tensor(theta_free, dtype=torch.float64)
        R = self._replicas(th.shape[0])
        _, _, obs, w, _ = self._replicated(R)
        mod = self.predict(th)
        if self.likelihood == "cen":
            j = costs.cost_cen(mod, obs, w)
        elif self.likelihood == "mic":
            j = costs.cost_mic(mod, obs)
        else:
            j = -costs.gaussian_loglik(mod, obs, sigma_rel=self.sigma_rel,
                                       sigma_abs=self.sigma_abs, log_space=self.log_space)
        invalid = ~torch.isfinite(mod).any(-1) | torch.isnan(j)
        return torch.where(invalid, torch.full_like(j, float("nan")), j)

    def log_density(self, theta_free) -> torch.Tensor:
        """Log posterior per row with a uniform prior on (0, 1)^P (``-inf`` outside/invalid)."""
        j = self.cost(theta_free)
        lp = -j
        return torch.where(torch.isfinite(lp), lp, torch.full_like(lp, -float("inf")))

    def fit(self, theta_free) -> dict[str, np.ndarray]:
        """Per-site fit statistics (R2, RMSE, NSE, bias) of ``theta_free [S, Pf]``."""
        with torch.no_grad():
            mod = self.predict(torch.as_tensor(theta_free, dtype=torch.float64))
        st = costs.fit_stats(mod, self._obs)
        return {k: v.detach().cpu().numpy() for k, v in st.items()}


def assimilate(
    profiles,
    forcing,
    *,
    model: str | SoilCarbonModel = "clm5",
    method: Literal["am", "reference", "map", "batch"] = "am",
    likelihood: str | None = None,
    free: Sequence[str] | None = None,
    fixed: Any = None,
    n_chains: int = 3,
    n_iter: int = 20000,
    n_starts: int = 4,
    seed: int = 0,
    progress: bool = True,
    checkpoint: str | None = None,
    resume: bool = False,
    mapping: str = "pchip",
    reference: bool = False,
    sigma_rel: float = 0.6,
    sigma_abs: float = 0.0,
    log_space: bool = False,
    sampler_options: Mapping[str, Any] | None = None,
    **model_options: Any,
) -> xr.Dataset:
    """Assimilate soil profiles into the model: posterior samples or MAP per site.

    Parameters
    ----------
    profiles : DataFrame or ProfileBatch
        Observations (``profile_id``, ``lat``, ``lon``, ``top``, ``bottom`` (m), ``soc``
        (g C m-3)).
    forcing : mapping or Dataset
        Forcing per site (same order as the packed profiles).
    model, reference, likelihood, mapping, free, fixed, sigma_rel, sigma_abs, log_space
        See :class:`SiteProblem`.
    method : {"am", "reference", "map", "batch"}
        ``"am"``: adaptive Metropolis (Haario 2001), ``n_chains`` chains of ``n_iter``;
        ``"reference"``: the original PRODA sampler (spec §6.3, with its annealing rule);
        ``"map"``: gradient-based MAP with ``n_starts`` starts; ``"batch"``: one parameter
        set for all sites (MAP of the summed cost, Tao et al. 2020).
    seed : int
    progress : bool
        Progress bar.
    checkpoint, resume
        Checkpoint file of the sampler (safetensors + JSON); ``resume=True`` continues.
    sampler_options : mapping, optional
        Extra options of the sampler/optimiser.

    Returns
    -------
    Dataset
        Sampler output (``samples`` (site, chain, draw, parameter), ``mean``, ``sd``,
        ``rhat``, ``ess``, ``acceptance`` ... or ``map``), plus per-site fit ``r2``,
        ``rmse``, ``nse``, ``bias`` of the posterior mean (or MAP), ``site`` ids, lat/lon,
        and the number of model evaluations.
    """
    from xproda.sites.assimilation import samplers

    prob = SiteProblem(profiles, forcing, model=model, reference=reference,
                       likelihood=likelihood, mapping=mapping, free=free, fixed=fixed,
                       sigma_rel=sigma_rel, sigma_abs=sigma_abs, log_space=log_space,
                       **model_options)
    opts = dict(sampler_options or {})
    S, P = prob.n_sites, prob.n_free
    if method == "am":
        with torch.no_grad():
            res = samplers.adaptive_metropolis(
                prob.log_density, n_sites=S, n_params=P, n_chains=n_chains, n_iter=n_iter,
                seed=seed, progress=progress, checkpoint=checkpoint, resume=resume,
                param_names=prob.free, **opts)
    elif method == "reference":
        with torch.no_grad():
            res = samplers.reference_sampler(
                prob.cost, n_sites=S, n_params=P, seed=seed, progress=progress,
                checkpoint=checkpoint, resume=resume, param_names=prob.free, **opts)
    elif method == "map":
        res = samplers.map_estimate(prob.cost, n_sites=S, n_params=P, n_starts=n_starts,
                                    seed=seed, progress=progress, param_names=prob.free, **opts)
    elif method == "batch":
        res = samplers.batch_mode(prob.cost, n_sites=S, n_params=P, seed=seed,
                                  progress=progress, param_names=prob.free, **opts)
    else:
        raise ValueError(f"method must be 'am', 'reference', 'map' or 'batch', got {method!r}")
    ds = res.to_dataset()
    if method == "batch" and ds.sizes.get("site") == 1:
        ds = ds.isel(site=0, drop=True)  # one parameter set for all sites
    est = None
    for name in ("mean", "map", "theta"):
        if name in ds and "parameter" in ds[name].dims:
            est = ds[name]
            break
    if est is not None:
        th = est.transpose(..., "parameter").values
        if th.ndim == 1:
            th = np.broadcast_to(th, (S, P))
        ok = np.isfinite(th).all(-1)
        fit = {k: np.full(S, np.nan) for k in ("r2", "rmse", "nse", "bias")}
        if ok.any():
            th_c = np.where(ok[:, None], th, 0.5)
            st = prob.fit(np.clip(th_c, 1e-9, 1 - 1e-9))
            for k in fit:
                if k in st:
                    fit[k] = np.where(ok, st[k], np.nan)
        for k, v in fit.items():
            ds[k] = ("site", v, conventions.attrs("fit_statistic", section="assimilation",
                                                  fields={"stat": k, "estimate": est.name}))
    b = prob.batch
    ds = ds.assign_coords(site=np.asarray(b.site_ids))
    if hasattr(b, "lat"):
        ds = ds.assign_coords(lat=("site", np.asarray(b.lat)), lon=("site", np.asarray(b.lon)))
    ds.attrs.update({"model": prob.model.name, "likelihood": prob.likelihood,
                     "mapping": mapping, "free_parameters": list(prob.free),
                     "n_model_evaluations": int(prob.n_evaluations)})
    return ds
