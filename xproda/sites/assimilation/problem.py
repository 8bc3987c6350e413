"""Site-level data assimilation problems: the model, the observations and the costs, batched.

:class:`SiteProblem` turns S soil profiles and their forcing into the batched callables the
samplers and optimisers of :mod:`xproda.sites.assimilation.samplers` need: one call evaluates the
process model for every site and every chain (or start) at once, maps the 20 layer values to
the observed depths (:class:`xproda.models.interp.ModelToObs`) and returns a cost or log-density
per row.  :func:`assimilate` runs a whole assimilation and returns an xarray Dataset.

Row order is site-major everywhere: row ``s * R + r`` is replica ``r`` (chain or start) of
site ``s``.

The profiles are validated once (:func:`~xproda.sites.observations.as_profile_batch`); a
forcing Dataset is matched to them (:func:`align_forcing`: by site id, or by its
``site_lat``/``site_lon``); sites whose forcing gives the model no data (NaN, e.g. ocean)
are reported and not fitted (``SiteProblem.no_forcing``, the ``no_forcing`` output of
:func:`assimilate`).
"""

from __future__ import annotations

import copy
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any, Literal

import numpy as np
import pandas as pd
import torch
import xarray as xr

from xproda import conventions
from xproda.errors import ProfileError
from xproda.models import get_model
from xproda.models.base import FLAGS, SoilCarbonModel
from xproda.models.forcing import prepare_forcing
from xproda.models.interp import ModelToObs
from xproda.models.parallel import torch_threads_scope
from xproda.sites.assimilation import costs
from xproda.sites.observations import ProfileBatch, as_profile_batch

__all__ = ["SiteProblem", "assimilate", "align_forcing", "LIKELIHOODS", "SITE_COORD_TOL"]

#: largest difference (degrees of latitude and of longitude) between a profile's location and
#: the ``site_lat``/``site_lon`` of its forcing row (~100 m; sample_sites copies the
#: requested positions, so a correct forcing matches to float precision)
SITE_COORD_TOL = 1e-3

#: likelihoods of :class:`SiteProblem` (log-density = -cost for the spec's costs)
LIKELIHOODS = {
    "cen": "spec §6.2 cen cost as a negative log-likelihood: Gaussian, 60% relative error, "
           "layer weights of §5.2 as exponents",
    "mic": "spec §6.2 microbial cost 5 (1 - R2) as a pseudo log-likelihood",
    "gaussian": "Gaussian log-likelihood with relative + absolute error (normalised)",
}


def _site_dim(ds: xr.Dataset) -> str | None:
    dims = {d for v in ds.data_vars.values() for d in v.dims if d not in ("month", "layer")}
    return dims.pop() if len(dims) == 1 else None


def _fmt(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def align_forcing(forcing: xr.Dataset, profiles: ProfileBatch, *,
                  tolerance: float = SITE_COORD_TOL, where: str = "align_forcing"
                  ) -> xr.Dataset:
    """The forcing rows matched to the profile sites: realigned by id, or checked by location.

    The forcing Dataset has one batch dim (e.g. ``site`` from
    :func:`xproda.spatial.sample_sites`). In order:

    1. if that dim has a coordinate holding the profile ids (``sample_sites(..., ids=...)``),
       the rows are put in the order of the profiles (``profiles.site_ids``); ids missing on
       either side are an error;
    2. otherwise, if it has ``site_lat``/``site_lon`` (the requested positions, which
       ``sample_sites`` records), they must match the profiles' ``lat``/``lon`` row by row
       within ``tolerance`` degrees (longitudes compared modulo 360), else an error names
       the first mismatched sites;
    3. otherwise (no ids, no positions) nothing can be checked: rows are taken in the order
       of the profiles.

    A forcing with one row (size 1) applies to every site and is returned as it is.

    Parameters
    ----------
    forcing : xarray.Dataset
        Forcing per site.
    profiles : ProfileBatch
        The packed profiles (:func:`~xproda.sites.observations.as_profile_batch`).
    tolerance : float, keyword-only
        Degrees (default :data:`SITE_COORD_TOL`, ~100 m).
    where : str, keyword-only
        The caller, named in the messages.

    Returns
    -------
    xarray.Dataset
        The forcing, rows in the order of the profiles.

    Raises
    ------
    xproda.errors.ProfileError
        Ids that do not match, a number of rows other than the number of sites, or positions
        that do not match the profiles.

    Examples
    --------
    >>> import numpy as np, pandas as pd, xarray as xr
    >>> from xproda.sites.observations import pack_profiles
    >>> b = pack_profiles(pd.DataFrame({"profile_id": ["a", "a", "b", "b"],
    ...     "lat": [1.0, 1.0, 2.0, 2.0], "lon": 3.0, "top": [0.0, 0.1] * 2,
    ...     "bottom": [0.1, 0.3] * 2, "soc": [2e4, 1e4, 9e3, 4e3]}))
    >>> f = xr.Dataset({"NPP": ("site", [2.0, 1.0])}, coords={"site": ["b", "a"]})
    >>> align_forcing(f, b)["site"].values.tolist()
    ['a', 'b']
    """
    dim = _site_dim(forcing)
    S = len(profiles)
    if dim is None or (forcing.sizes[dim] == 1 and S != 1):
        return forcing
    n = forcing.sizes[dim]
    ids = np.asarray(profiles.site_ids)
    if dim in forcing.coords:
        fid = forcing[dim].to_numpy()
        known = pd.Index(fid).isin(ids)
        if known.any():
            missing = [_fmt(i) for i in ids[~pd.Index(ids).isin(fid)]]
            extra = [_fmt(i) for i in fid[~known]]
            if missing or extra or pd.Index(fid).has_duplicates:
                raise ProfileError(
                    f"{where}: the forcing's {dim!r} coordinate holds ids that do not match the "
                    f"{S} profile ids: missing in the forcing {missing[:5]}"
                    f"{f' (+{len(missing) - 5} more)' if len(missing) > 5 else ''}, not "
                    f"among the profiles {extra[:5]}"
                    + (", repeated ids" if pd.Index(fid).has_duplicates else "")
                    + "; sample the forcing at the profiles: sample_sites(forcing_grid, "
                    "lat=batch.lat, lon=batch.lon, ids=batch.site_ids)")
            if not np.array_equal(fid, ids):
                forcing = forcing.sel({dim: ids})
            return forcing
    if "site_lat" in forcing.coords and "site_lon" in forcing.coords:
        if n != S:
            raise ProfileError(f"{where}: the forcing has {n} rows along {dim!r}, the profiles "
                               f"{S} sites; expected one forcing row per site")
        flat = np.asarray(forcing["site_lat"].values, dtype=float).reshape(-1)
        flon = np.asarray(forcing["site_lon"].values, dtype=float).reshape(-1)
        dlat = np.abs(flat - profiles.lat)
        dlon = np.abs((flon - profiles.lon + 180.0) % 360.0 - 180.0)
        bad = ~((dlat <= tolerance) & (dlon <= tolerance))
        if bad.any():
            rows = np.flatnonzero(bad)
            shown = "; ".join(
                f"site {i} ({_fmt(ids[i])!r}): profile at ({profiles.lat[i]:g}, "
                f"{profiles.lon[i]:g}), forcing at ({flat[i]:g}, {flon[i]:g})"
                for i in rows[:3])
            raise ProfileError(
                f"{where}: the forcing rows do not match the profile sites: {bad.sum()} of {S} "
                f"'site_lat'/'site_lon' differ from the profiles' lat/lon by more than "
                f"{tolerance:g} degrees; first: {shown}. The forcing must be in the order of "
                "the packed profiles (batch.site_ids, first appearance in the table): sample "
                "it with sample_sites(forcing_grid, lat=batch.lat, lon=batch.lon, "
                "ids=batch.site_ids), or give it the profile ids as its site coordinate")
    return forcing


def _no_forcing(model: SoilCarbonModel, forcing: Mapping[str, Any], theta: np.ndarray
                ) -> np.ndarray:
    """Sites whose forcing holds non-finite values that leave the model without data."""
    S = theta.shape[0]
    nonfinite = np.zeros(S, dtype=bool)
    for v in forcing.values():
        a = np.asarray(v.detach().cpu() if torch.is_tensor(v) else v)
        if a.dtype.kind not in "fc" or a.shape[:1] not in ((S,), (1,)):
            continue
        bad = ~np.isfinite(a.reshape(a.shape[0], -1)).all(-1)
        nonfinite |= np.broadcast_to(bad, (S,))
    if not nonfinite.any():
        return nonfinite
    rows = {k: (v.expand(S, *v.shape[1:]) if torch.is_tensor(v) else
                np.broadcast_to(v, (S, *np.shape(v)[1:])))
            if np.ndim(v) and np.shape(v)[0] == 1 and S > 1 else v
            for k, v in forcing.items()}
    with torch.no_grad():
        flags = model.steady_state(theta, rows)["flags"]
    flags = flags.cpu().numpy() if torch.is_tensor(flags) else np.asarray(flags)
    return nonfinite & ((flags & FLAGS["no_data"]) != 0)


class SiteProblem:
    """Batched model-data problem for S soil profiles.

    Parameters
    ----------
    profiles : ProfileBatch or DataFrame
        Observations (see :mod:`xproda.sites.observations`), validated once
        (:func:`~xproda.sites.observations.as_profile_batch`); a DataFrame is packed with
        :func:`~xproda.sites.observations.pack_profiles` (site order = first appearance).
    forcing : mapping or Dataset
        Forcing of each site, batch first ``[S, ...]`` (kernel contract; rows in the order
        of the packed profiles, which cannot be checked), or a Dataset with one batch dim
        (e.g. ``forcing_grid.proda.sample_sites(...)``), matched to the profiles by
        :func:`align_forcing` (by id, or checked by ``site_lat``/``site_lon``).
    model : str or model, default "clm5"
    reference : bool, default False
    likelihood : {"cen", "mic", "gaussian"}
        See :data:`LIKELIHOODS`; default "cen" for clm5, "mic" for the microbial model.
    mapping : {"pchip", "pchip_mean", "layer_mean"}
        Model-to-observation mapping (spec §6.1 uses "pchip" at the node depths).
    free : sequence of str, optional
        Parameters to estimate (default all, in model order); the others are fixed at
        ``fixed``. Any order: the columns of ``theta_free`` (and of the results) follow
        ``free`` and are placed by name. Names must be distinct.
    fixed : array_like or mapping, optional
        Normalised values of the fixed parameters: ``[P]`` or ``[S, P]`` (full vector) or a
        mapping name -> value; default 0.5.
    sigma_rel, sigma_abs : float
        Error model of ``likelihood="gaussian"`` (relative, and absolute in g C m-3).
    log_space : bool, default False
        ``likelihood="gaussian"`` on log SOC (log-normal errors of sd ``sigma_rel``).

    Attributes
    ----------
    no_forcing : numpy.ndarray of bool, shape [S]
        Sites whose forcing has non-finite values that leave the model without data (flag
        ``no_data`` at the fixed parameters, e.g. an ocean cell); their cost is NaN.
        :func:`assimilate` does not fit them.
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
        self.batch = as_profile_batch(profiles, where="SiteProblem")
        S = len(self.batch)
        if isinstance(forcing, xr.Dataset):
            from xproda.xr.api import forcing_arrays

            forcing = forcing_arrays(align_forcing(forcing, self.batch, where="SiteProblem"),
                                     model=self.model)
        n_f = {k: np.shape(v)[0] for k, v in forcing.items()}
        bad = {k: v for k, v in n_f.items() if v not in (1, S)}
        if bad:
            raise ProfileError(f"forcing must have one row per site ({S} sites); got {bad}")
        self.forcing = dict(forcing)
        names = list(self.model.parameters.names)
        self.param_names = names
        free = list(free) if free is not None else names
        unknown = [p for p in free if p not in names]
        if unknown:
            raise KeyError(f"free parameters {unknown} are not parameters of {self.model.name!r}: "
                           f"{names}")
        repeated = sorted({p for p in free if free.count(p) > 1})
        if repeated:
            raise ValueError(f"free parameters must be distinct; {repeated} given more than once")
        self.free = free
        # theta_free's columns are in the order of ``free``, which may differ from the model's:
        # they are always placed by name (full_theta), never assumed to be in model order
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
        self.no_forcing = _no_forcing(self.model, self.forcing, base)

    def subset(self, idx: Any) -> SiteProblem:
        """The same problem for the sites ``idx`` (integer indices or a boolean mask)."""
        idx = np.asarray(idx)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        S = self.n_sites
        new = copy.copy(self)
        new.batch = self.batch.subset(idx)
        new.forcing = {k: (v[idx] if np.shape(v)[0] == S else v) for k, v in self.forcing.items()}
        t = torch.as_tensor(idx, dtype=torch.long)
        new.fixed = self.fixed[t]
        new._obs, new._w, new._depth = (x[t][:, :new.batch.n_obs]
                                        for x in (self._obs, self._w, self._depth))
        new._top, new._bottom = (x[t][:, :new.batch.n_obs] for x in (self._top, self._bottom))
        new._cache = {}
        new.n_evaluations = 0
        new.no_forcing = self.no_forcing[idx]
        return new

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

    def _row_index(self, n: int, rows: Any, n_rows: int | None
                   ) -> tuple[int, torch.Tensor | None]:
        """Replicas per site R of the full batch and the row indices of a call on ``n`` rows.

        ``rows`` None: the call is the full batch (``n = S * R``). A boolean mask ``[S * R]``
        or integer indices into the full batch (``n_rows`` = its size) select ``n`` rows.
        """
        if rows is None:
            return self._replicas(n), None
        r = torch.as_tensor(rows)
        if r.dtype == torch.bool:
            if r.ndim != 1:
                raise ValueError(f"rows as a mask must be 1-D [S * R]; got shape {tuple(r.shape)}")
            total = r.numel()
            idx = torch.nonzero(r.cpu()).reshape(-1)
        else:
            if n_rows is None:
                raise ValueError("rows given as indices need n_rows, the size S * R of the full "
                                 "site-major batch (or give rows as a boolean mask [S * R])")
            if r.dtype.is_floating_point or r.dtype.is_complex:
                raise TypeError(f"rows must be integer indices or a boolean mask; got {r.dtype}")
            total = int(n_rows)
            idx = r.cpu().to(torch.long).reshape(-1)
            if idx.numel() and (int(idx.min()) < 0 or int(idx.max()) >= total):
                raise IndexError(f"rows out of range for a batch of {total} rows")
        R = self._replicas(total)
        if idx.numel() != n:
            raise ValueError(f"rows select {idx.numel()} rows but theta has {n}")
        return R, idx

    def _rows_data(self, R: int, idx: torch.Tensor | None):
        """``_replicated(R)`` restricted to the rows ``idx`` of the full batch (None: all).

        Row ``b`` of the full batch belongs to site ``b // R``; every replica of a site has the
        site's forcing, observations and fixed parameters, so the restriction is a gather (the
        mapping is rebuilt for the rows' observation depths). The model is row-independent:
        the rows' values equal those of the full batch exactly.
        """
        full = self._replicated(R)
        if idx is None:
            return full
        f, _, obs, w, fixed = full
        sites = idx // R
        m2o = ModelToObs(self._depth[sites], method=self.mapping, top=self._top[sites],
                         bottom=self._bottom[sites])
        return (f.subset(idx), m2o, obs[idx], w[idx], fixed[idx])

    def full_theta(self, theta_free: torch.Tensor, rows: Any = None,
                   n_rows: int | None = None) -> torch.Tensor:
        """Full normalised parameter vectors ``[B, P]`` from the free ones ``[B, Pf]``.

        ``rows``, ``n_rows``: as for :meth:`predict`.
        """
        B = theta_free.shape[0]
        R, idx = self._row_index(B, rows, n_rows)
        fixed = self._rows_data(R, idx)[4].to(theta_free.dtype)
        if self.free == self.param_names:  # all free, in model order
            return theta_free
        # by name: the columns of theta_free follow ``free`` (any order, any subset)
        return fixed.index_copy(1, self.free_idx, theta_free)

    def _replicas(self, B: int) -> int:
        S = self.n_sites
        if B % S:
            raise ValueError(f"batch of {B} rows is not a multiple of the {S} sites")
        return B // S

    def predict(self, theta_free, rows: Any = None, n_rows: int | None = None) -> torch.Tensor:
        """Modelled SOC (g C m-3) at the observed depths ``[B, D]`` (NaN where invalid).

        Parameters
        ----------
        theta_free : array_like
            ``[B, Pf]`` free parameters (normalised), rows site-major: the full batch
            ``B = S * R`` (row ``b`` is replica ``b % R`` of site ``b // R``), or the rows
            ``rows`` of it.
        rows : Tensor, optional
            The rows of the full site-major batch that ``theta_free`` holds: a boolean mask
            ``[S * R]`` (the full batch's size is its length), or integer indices with
            ``n_rows``. Only these rows are computed; the model is row-independent, so the
            values are bit-identical to the same rows of a full-batch call
            (:func:`~xproda.sites.assimilation.samplers.map_estimate` uses this to leave
            converged rows out).
        n_rows : int, optional
            Size ``S * R`` of the full batch when ``rows`` are indices.
        """
        th = torch.as_tensor(theta_free, dtype=torch.float64)
        R, idx = self._row_index(th.shape[0], rows, n_rows)
        f, m2o, *_ = self._rows_data(R, idx)
        out = self.model.steady_state(self.full_theta(th, rows, n_rows), f)
        self.n_evaluations += th.shape[0]
        return m2o(out["soc"])

    def cost(self, theta_free, rows: Any = None, n_rows: int | None = None) -> torch.Tensor:
        """Cost per row (lower is better): the likelihood's negative log (see LIKELIHOODS).

        ``rows``, ``n_rows``: a subset of the full batch, as for :meth:`predict`.
        """
        th = torch.as_tensor(theta_free, dtype=torch.float64)
        R, idx = self._row_index(th.shape[0], rows, n_rows)
        _, _, obs, w, _ = self._rows_data(R, idx)
        mod = self.predict(th, rows, n_rows)
        if self.likelihood == "cen":
            j = costs.cost_cen(mod, obs, w)
        elif self.likelihood == "mic":
            j = costs.cost_mic(mod, obs)
        else:
            j = -costs.gaussian_loglik(mod, obs, sigma_rel=self.sigma_rel,
                                       sigma_abs=self.sigma_abs, log_space=self.log_space)
        invalid = ~torch.isfinite(mod).any(-1) | torch.isnan(j)
        return torch.where(invalid, torch.full_like(j, float("nan")), j)

    def log_density(self, theta_free, rows: Any = None, n_rows: int | None = None
                    ) -> torch.Tensor:
        """Log posterior per row with a uniform prior on (0, 1)^P (``-inf`` outside/invalid).

        ``rows``, ``n_rows``: a subset of the full batch, as for :meth:`predict`.
        """
        j = self.cost(theta_free, rows, n_rows)
        lp = -j
        return torch.where(torch.isfinite(lp), lp, torch.full_like(lp, -float("inf")))

    @property
    def fit_space(self) -> str:
        """Space of the likelihood's residuals: ``"log"`` or ``"linear"`` SOC.

        ``"gaussian"`` with ``log_space=True`` works on log SOC; ``"cen"`` (60 % relative
        error, i.e. residuals scaled by the observation) and ``"mic"`` (5 (1 - R2) of SOC,
        spec §6.2) and ``"gaussian"`` without ``log_space`` work on linear SOC.
        """
        return "log" if (self.likelihood == "gaussian" and self.log_space) else "linear"

    def fit(self, theta_free) -> dict[str, np.ndarray]:
        """Per-site fit statistics of ``theta_free [S, Pf]``.

        Returns
        -------
        dict of str to numpy.ndarray
            ``[S]`` each: ``r2``, ``rmse``, ``nse``, ``bias`` (and ``n``, ``corr``, ``mae``)
            of linear SOC (:func:`~xproda.sites.assimilation.costs.fit_stats`), and ``r2_log``,
            the R2 of log SOC (observations or model values <= 0 left out;
            :func:`~xproda.sites.assimilation.costs.fit_stats_log`).
        """
        with torch.no_grad():
            mod = self.predict(torch.as_tensor(theta_free, dtype=torch.float64))
        st = costs.fit_stats(mod, self._obs)
        st["r2_log"] = costs.fit_stats_log(mod, self._obs)["r2"]
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
    n_starts: int = 2,
    seed: int = 0,
    progress: bool | None = None,
    checkpoint: str | None = None,
    resume: bool = False,
    mapping: str = "pchip",
    reference: bool = False,
    sigma_rel: float = 0.6,
    sigma_abs: float = 0.0,
    log_space: bool = False,
    sampler_options: Mapping[str, Any] | None = None,
    shard_size: int | None = None,
    store: str | os.PathLike | None = None,
    storage_options: Mapping[str, Any] | None = None,
    overwrite: bool = False,
    scheduler: Any = None,
    **model_options: Any,
) -> xr.Dataset:
    """Assimilate soil profiles into the model: posterior samples or MAP per site.

    Parameters
    ----------
    profiles : DataFrame or ProfileBatch
        Observations (``profile_id``, ``lat``, ``lon``, ``top``, ``bottom`` (m), ``soc``
        (g C m-3)), validated once
        (:func:`~xproda.sites.observations.as_profile_batch`).
    forcing : mapping or Dataset
        Forcing per site: arrays in the order of the packed profiles, or a Dataset matched to
        them by :func:`align_forcing` (realigned by site id, or refused when its
        ``site_lat``/``site_lon`` differ from the profiles). Sites whose forcing leaves the
        model without data (NaN, e.g. ocean) are not fitted: a ``UserWarning`` names them,
        their results are NaN and the output variable ``no_forcing`` flags them.
    model, reference, likelihood, mapping, free, fixed, sigma_rel, sigma_abs, log_space
        See :class:`SiteProblem`.
    method : {"am", "reference", "map", "batch"}
        ``"am"``: adaptive Metropolis (Haario 2001), ``n_chains`` chains of ``n_iter``;
        ``"reference"``: the original PRODA sampler (spec §6.3, with its annealing rule);
        ``"map"``: gradient-based MAP (:func:`~xproda.sites.assimilation.samplers.map_estimate`:
        L-BFGS, at most 200 iterations, unless ``sampler_options`` say otherwise) with
        ``n_starts`` starts per site (default 2: on a 300-site twin world with 2 free
        parameters 2 starts reached the same per-site losses as 4 with about 3/4 of the
        CPU time; with 21 free parameters 4 starts find slightly lower losses at half of
        the sites for 1.4x the time; docs/performance.md);
        ``"batch"``: one parameter set for all sites (MAP of the summed cost, Tao et al.
        2020).
    seed : int
    progress : bool or None, default None
        Progress bar. None: the option ``progress`` (:func:`xproda.set_options`).
    checkpoint, resume
        Checkpoint file of the sampler (safetensors + JSON); ``resume=True`` continues.
    sampler_options : mapping, optional
        Extra options of the sampler/optimiser.
    shard_size : int, optional
        Run the sites in shards of this many sites, each a task on the active dask scheduler
        (threads by default, a ``dask.distributed`` client if one is active, or
        ``scheduler``): a ``LocalCluster`` or any cluster spreads the sites over its workers.
        Results are identical whatever the shard size, worker count or scheduler (per-site
        random streams from the seed and the site id). Default with ``store``: about four
        shards per scheduler thread, at most 500 sites. Not for ``method="batch"``.
    store : str or os.PathLike, optional
        Write the result to this Zarr store, one region per shard, resumably
        (:func:`xproda.io.write_zarr`; ``resume=True`` continues a killed run without redoing
        finished shards and refuses a store written from other inputs), and return it
        opened lazily. See :mod:`xproda.sites.assimilation.distributed`.
    storage_options : mapping, optional
        fsspec options of ``store``.
    overwrite : bool, default False
        Replace an existing ``store``.
    scheduler : str or dask scheduler, optional
        dask scheduler of the shards (e.g. ``"threads"``, ``"processes"``, ``"synchronous"``);
        default: the active one.

    Returns
    -------
    Dataset
        Sampler output (``samples`` (site, chain, draw, parameter), ``mean``, ``sd``,
        ``rhat``, ``ess``, ``acceptance`` ... or ``map``), plus per-site fit ``r2``,
        ``rmse``, ``nse``, ``bias`` of SOC and ``r2_log`` of log SOC (observations and model
        values <= 0 left out) of the posterior mean (or MAP), ``site`` ids, lat/lon,
        ``no_forcing`` (site; True where the site was not fitted for lack of forcing, its
        results NaN; attribute ``n_sites_no_forcing``) and the number of model evaluations.
        Which space the likelihood works in (:attr:`SiteProblem.fit_space`): ``"gaussian"``
        with ``log_space=True`` on log SOC (compare ``r2_log``); ``"cen"`` on SOC with
        residuals relative to the observation (to first order log residuals), ``"mic"`` and
        ``"gaussian"`` otherwise on SOC (``"mic"`` is ``5 (1 - r2)``). The attribute
        ``comment`` of each statistic names both spaces.

    Raises
    ------
    xproda.errors.ProfileError
        Profiles that fail validation, forcing that does not match them, or no site with
        usable forcing.
    """
    from xproda.sites.assimilation import samplers

    prob_all = SiteProblem(profiles, forcing, model=model, reference=reference,
                           likelihood=likelihood, mapping=mapping, free=free, fixed=fixed,
                           sigma_rel=sigma_rel, sigma_abs=sigma_abs, log_space=log_space,
                           **model_options)
    skip = prob_all.no_forcing
    all_ids = np.asarray(prob_all.batch.site_ids)
    if skip.any():
        shown = ", ".join(repr(_fmt(i)) for i in all_ids[skip][:5])
        more = f" (+{int(skip.sum()) - 5} more)" if skip.sum() > 5 else ""
        msg = (f"{int(skip.sum())} of {len(skip)} site(s) have forcing with NaN that leaves the "
               f"model without data (off the model grid's land?): {shown}{more}")
        if skip.all():
            raise ProfileError(f"assimilate: no site to fit: {msg}")
        warnings.warn(f"assimilate: {msg}; they are not fitted: their results are NaN and "
                      "the output variable 'no_forcing' flags them", UserWarning, stacklevel=2)
        prob = prob_all.subset(~skip)
    else:
        prob = prob_all
    if shard_size is not None or store is not None:
        from xproda.sites.assimilation.distributed import assimilate_sharded

        kw = dict(model=prob_all.model, method=method, likelihood=prob_all.likelihood,
                  free=list(prob_all.free), n_chains=n_chains, n_iter=n_iter,
                  n_starts=n_starts, seed=seed, checkpoint=checkpoint, mapping=mapping,
                  sigma_rel=sigma_rel, sigma_abs=sigma_abs, log_space=log_space,
                  sampler_options=dict(sampler_options or {}))
        return assimilate_sharded(prob_all, kwargs=kw, shard_size=shard_size, store=store,
                                  storage_options=storage_options, resume=resume,
                                  overwrite=overwrite, scheduler=scheduler, progress=progress)
    if resume and checkpoint is None:
        raise ValueError("assimilate: resume=True needs checkpoint= (the sampler's checkpoint "
                         "file) or store= (a sharded run's Zarr store)")
    opts = dict(sampler_options or {})
    S, P = prob.n_sites, prob.n_free
    if method == "am":
        with torch.no_grad():
            res = samplers.adaptive_metropolis(
                prob.log_density, n_sites=S, n_params=P, n_chains=n_chains, n_iter=n_iter,
                seed=seed, progress=progress, checkpoint=checkpoint, resume=resume,
                param_names=prob.free, site_ids=prob.batch.site_ids, **opts)
    elif method == "reference":
        with torch.no_grad():
            res = samplers.reference_sampler(
                prob.cost, n_sites=S, n_params=P, seed=seed, progress=progress,
                checkpoint=checkpoint, resume=resume, param_names=prob.free,
                site_ids=prob.batch.site_ids, **opts)
    elif method == "map":
        with torch_threads_scope():  # one torch thread on a full machine (OpenMP spinning)
            res = samplers.map_estimate(prob.cost, n_sites=S, n_params=P, n_starts=n_starts,
                                        seed=seed, progress=progress, param_names=prob.free,
                                        site_ids=prob.batch.site_ids, **opts)
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
        fit = {k: np.full(S, np.nan) for k in ("r2", "rmse", "nse", "bias", "r2_log")}
        if ok.any():
            th_c = np.where(ok[:, None], th, 0.5)
            st = prob.fit(np.clip(th_c, 1e-9, 1 - 1e-9))
            for k in fit:
                if k in st:
                    fit[k] = np.where(ok, st[k], np.nan)
        space = {k: "SOC" for k in fit} | {"r2_log": "log SOC (values <= 0 left out)"}
        for k, v in fit.items():
            ds[k] = ("site", v, conventions.attrs(
                "fit_statistic", section="assimilation", fields={"stat": k, "estimate": est.name},
                comment=f"of {space[k]}; the likelihood works on {prob.fit_space} SOC"))
    ds = ds.assign_coords(site=np.asarray(prob.batch.site_ids))
    if skip.any():
        ds = _expand_sites(ds, all_ids)
    b = prob_all.batch
    ds = ds.assign_coords(lat=("site", np.asarray(b.lat)), lon=("site", np.asarray(b.lon)))
    ds["no_forcing"] = ("site", skip.copy(), conventions.attrs("no_forcing",
                                                               section="assimilation"))
    ds.attrs.update({"model": prob.model.name, "likelihood": prob.likelihood,
                     "mapping": mapping, "free_parameters": list(prob.free),
                     "n_model_evaluations": int(prob.n_evaluations),
                     "n_sites_no_forcing": int(skip.sum())})
    return ds


def _expand_sites(ds: xr.Dataset, ids: np.ndarray) -> xr.Dataset:
    """``ds`` on every site ``ids``: sites not in it get NaN (False for booleans)."""
    booleans = [k for k, v in ds.variables.items() if "site" in v.dims and v.dtype == bool]
    out = ds.reindex(site=ids)
    for k in booleans:
        out[k] = out[k].fillna(False).astype(bool)
    return out
