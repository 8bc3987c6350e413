"""Training data: soil profiles with the covariates and forcing sampled at their sites.

:func:`prepare_training_data` samples gridded covariates and forcing at the profile sites,
drops (and reports) the sites that cannot be used, and returns a :class:`TrainingData`: what
training (:func:`xproda.learning.trainer.train_network`), cross-validation
(:func:`xproda.learning.validation.cross_validate`) and the machine-learning baselines
(:mod:`xproda.learning.baselines`) consume. :func:`default_features` picks the covariates used
when none are named.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import pandas as pd
import xarray as xr

from xproda.sites import observations as obsmod
from xproda.models import get_model
from xproda.models.base import SoilCarbonModel
from xproda.models.forcing import FORCING_SCHEMA

__all__ = ["TrainingData", "prepare_training_data", "default_features"]

_NOT_COVARIATES = {"landfrac", "landmask", "land_mask", "area", "cell_area", "spatial_ref",
                   "crs"}


def default_features(covariates: xr.Dataset) -> list[str]:
    """Covariate names used when ``features`` is not given.

    Every numeric data variable whose dims are all spatial (no ``month``/``layer``/...), that
    is not a forcing variable (:data:`~xproda.models.forcing.FORCING_SCHEMA`), not a bounds
    variable and not a land mask/area/CRS variable -- in the Dataset's order.
    """
    from xproda.spatial import spatial_dims

    sdims = set(spatial_dims(covariates))
    bounds = {str(v.attrs.get("bounds")) for v in covariates.variables.values()}
    out = []
    for name, da in covariates.data_vars.items():
        name = str(name)
        if (name in FORCING_SCHEMA or name in _NOT_COVARIATES or name in bounds
                or name.endswith(("_bnds", "_bounds"))):
            continue
        if not set(da.dims) <= sdims or not da.dims:
            continue
        if not np.issubdtype(da.dtype, np.number):
            continue
        out.append(name)
    return out


@dataclass
class TrainingData:
    """Profiles with their covariates and forcing, ready for training.

    The profiles are validated once: a batch made by
    :func:`~xproda.sites.observations.pack_profiles` (or a subset of one) is taken as it is,
    any other is validated when the TrainingData is made
    (:func:`~xproda.sites.observations.as_profile_batch`), so
    :func:`~xproda.learning.trainer.train_network` and
    :func:`~xproda.learning.validation.cross_validate` never validate them again.

    Attributes
    ----------
    batch : ProfileBatch
        Observations of the S usable sites.
    x : numpy.ndarray, shape [S, F]
        Raw covariates at the sites (order of ``features``).
    forcing : dict of numpy.ndarray
        Kernel forcing per site, batch first.
    features : list of str
    x_min, x_max : numpy.ndarray, shape [F]
        Min-max scaling constants (spec §7.2: over the whole covariate grid).
    feature_units : list of (str or None)
        The ``units`` attribute of each covariate (None where absent): a network trained on
        these data converts covariates given in other units, and refuses inconvertible ones.
    dropped : pandas.DataFrame
        ``site``, ``reason`` of every site that could not be used.
    """

    batch: Any
    x: np.ndarray
    forcing: dict[str, np.ndarray]
    features: list[str]
    x_min: np.ndarray
    x_max: np.ndarray
    dropped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["site",
                                                                                 "reason"]))
    feature_units: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.batch = obsmod.as_profile_batch(self.batch, where="TrainingData")

    def __len__(self) -> int:
        return len(self.batch)

    def subset(self, idx: Any) -> TrainingData:
        """The sites ``idx`` (integer indices)."""
        idx = np.asarray(idx)
        return TrainingData(self.batch.subset(idx), self.x[idx],
                            {k: v[idx] for k, v in self.forcing.items()}, list(self.features),
                            self.x_min, self.x_max, self.dropped, list(self.feature_units))


def prepare_training_data(
    covariates: xr.Dataset,
    profiles: Any,
    *,
    forcing: xr.Dataset | None = None,
    model: str | SoilCarbonModel = "clm5",
    features: Sequence[str] | None = None,
    scaling: Literal["grid", "sites"] = "grid",
) -> TrainingData:
    """Sample covariates and forcing at the profile sites; drop (and report) unusable sites.

    Parameters
    ----------
    covariates : Dataset
        Gridded covariates (may also hold the forcing).
    profiles : DataFrame or ProfileBatch
        Profile table (:mod:`xproda.sites.observations` schema) or a packed batch; validated
        once (:func:`~xproda.sites.observations.as_profile_batch`: a table that fails
        :func:`~xproda.sites.observations.validate_profiles`, e.g. depths in cm or ambiguous
        depth units, is refused with a :class:`~xproda.errors.ProfileError`).
    forcing : Dataset, optional
        Gridded forcing (default: taken from ``covariates``).
    model : str or model, default "clm5"
    features : sequence of str, optional
        Covariates to use, in order (default :func:`default_features`).
    scaling : {"grid", "sites"}, default "grid"
        Min-max constants from the whole grid (spec §7.2) or from the sites only.

    Returns
    -------
    TrainingData
    """
    import dask

    from xproda.spatial import sample_sites
    from xproda.xr.api import forcing_arrays, require_features

    mdl = model if isinstance(model, SoilCarbonModel) else get_model(model)
    batch = obsmod.as_profile_batch(profiles, where="prepare_training_data")
    feats = list(features) if features is not None else default_features(covariates)
    if not feats:
        raise ValueError("no covariates to train on: covariates has no variable with only "
                         "spatial dims; pass features=[...]")
    if scaling not in ("grid", "sites"):
        raise ValueError(f"scaling must be 'grid' or 'sites', got {scaling!r}")
    require_features(covariates, feats)
    fds = covariates if forcing is None else forcing
    need = [k for k in FORCING_SCHEMA if k in fds.variables
            and (k in mdl.required_forcing or k in ("CELLSAND", "NPP"))]
    absent = [k for k in mdl.required_forcing if k not in fds.variables]
    if absent:
        where = "covariates" if forcing is None else "forcing"
        raise KeyError(f"{where} lack forcing variable(s) {absent} needed by "
                       f"{mdl.name!r}; pass forcing=... or add them")
    cov_s = sample_sites(covariates[feats], lat=batch.lat, lon=batch.lon)
    frc_s = sample_sites(fds[need], lat=batch.lat, lon=batch.lon)
    grid = covariates[feats] if scaling == "grid" else cov_s
    cov_s, frc_s, lo, hi = dask.compute(cov_s, frc_s, grid.min(), grid.max())
    x = np.stack([np.asarray(cov_s[f].values, dtype=np.float64).reshape(-1) for f in feats], -1)
    f = forcing_arrays(frc_s, model=mdl, dim="site")
    x_min = np.array([float(lo[f_].values) for f_ in feats])
    x_max = np.array([float(hi[f_].values) for f_ in feats])
    bad_feat = [f_ for f_, a, b in zip(feats, x_min, x_max) if not (np.isfinite(a)
                                                                     and np.isfinite(b))]
    if bad_feat:
        raise ValueError(f"covariate(s) {bad_feat} are all-NaN on the {scaling}")
    S = len(batch)
    reasons = np.full(S, "", dtype=object)
    ok_obs = batch.mask.any(-1)
    reasons[~ok_obs] = "no valid observation"
    ok_x = np.isfinite(x).all(-1)
    for s in np.flatnonzero(~ok_x & ok_obs):
        reasons[s] = "NaN covariate(s): " + ", ".join(
            f_ for f_, v in zip(feats, x[s]) if not np.isfinite(v))
    ok_f = np.ones(S, dtype=bool)
    for k, v in f.items():
        ok_f &= np.isfinite(np.asarray(v, dtype=float).reshape(S, -1)).all(-1)
    reasons[(reasons == "") & ~ok_f] = "NaN forcing (off the model grid's land?)"
    keep = reasons == ""
    dropped = pd.DataFrame({"site": np.asarray(batch.site_ids)[~keep],
                            "reason": reasons[~keep].astype(str)})
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        raise ValueError(f"no usable site among {S}: {dropped['reason'].value_counts().to_dict()}")
    units = [covariates[f_].attrs.get("units") for f_ in feats]
    return TrainingData(batch.subset(idx), x[idx], {k: np.asarray(v)[idx] for k, v in f.items()},
                        feats, x_min, x_max, dropped, units)
