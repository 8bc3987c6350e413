"""Training data: soil profiles with the covariates and forcing sampled at their sites.

:func:`prepare_training_data` samples gridded covariates and forcing at the profile sites,
drops (and reports) the sites that cannot be used, and returns a :class:`TrainingData`: what
training (:func:`xproda.learning.trainer.train_network`), cross-validation
(:func:`xproda.learning.validation.cross_validate`) and the machine-learning baselines
(:mod:`xproda.learning.baselines`) consume. :func:`default_features` picks the covariates used
when none are named.
"""

from __future__ import annotations

import warnings
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
    site_features : list of str
        The features measured at the sites (``site_covariates`` of
        :func:`prepare_training_data`; the last columns of ``x``), empty for grid-only data.
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
    site_features: list = field(default_factory=list)

    def __post_init__(self) -> None:
        self.batch = obsmod.as_profile_batch(self.batch, where="TrainingData")

    def __len__(self) -> int:
        return len(self.batch)

    def subset(self, idx: Any) -> TrainingData:
        """The sites ``idx`` (integer indices)."""
        idx = np.asarray(idx)
        return TrainingData(self.batch.subset(idx), self.x[idx],
                            {k: v[idx] for k, v in self.forcing.items()}, list(self.features),
                            self.x_min, self.x_max, self.dropped, list(self.feature_units),
                            list(self.site_features))


def _site_columns(table: Any, batch: Any, grid_features: Sequence[str]
                  ) -> tuple[list[str], np.ndarray, list, np.ndarray]:
    """Site covariates of the batch's sites: ``(names, x [S, F], units, listed [S])``."""
    if not isinstance(table, pd.DataFrame):
        raise TypeError(f"site_covariates: expected a pandas DataFrame indexed by site id "
                        f"(e.g. xproda.sites.observations.site_properties), found "
                        f"{type(table).__name__}")
    names = [str(c) for c in table.columns]
    if not names:
        raise ValueError("site_covariates: expected at least one column, found none")
    if not table.index.is_unique:
        dup = table.index[table.index.duplicated()].unique()[:5].tolist()
        raise ValueError(f"site_covariates: expected one row per site, found repeated site "
                         f"id(s) {dup}")
    clash = sorted(set(names) & set(grid_features))
    if clash:
        raise ValueError(f"site_covariates: column(s) {clash} are also gridded features; "
                         f"rename one of them (a name means one covariate)")
    bad = [c for c in names if not pd.api.types.is_numeric_dtype(table[c])]
    if bad:
        raise ValueError(f"site_covariates: expected numeric columns, found {bad} of dtype(s) "
                         f"{[str(table[c].dtype) for c in bad]}")
    ids = pd.Index(np.asarray(batch.site_ids))
    pos = table.index.astype(str).get_indexer(ids.astype(str))
    listed = pos >= 0
    if not listed.any():
        raise ValueError(f"site_covariates: none of the {len(ids)} profile ids is in its index "
                         f"(e.g. {ids[:3].tolist()} vs {table.index[:3].tolist()}); index the "
                         f"table by profile_id")
    vals = table.to_numpy(dtype=np.float64)
    x = np.full((len(ids), len(names)), np.nan)
    x[listed] = vals[pos[listed]]
    known = table.attrs.get("column_units") or {}
    units = [known.get(c) for c in names]
    return names, x, units, listed


def prepare_training_data(
    covariates: xr.Dataset,
    profiles: Any,
    *,
    forcing: xr.Dataset | None = None,
    model: str | SoilCarbonModel = "clm5",
    features: Sequence[str] | None = None,
    site_covariates: pd.DataFrame | None = None,
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
        Gridded covariates to use, in order (default :func:`default_features`; ``[]`` for
        site covariates only).
    site_covariates : DataFrame, optional
        Covariates measured at the sites, besides or instead of the gridded ones: one row
        per site indexed by site id (the profile table's ``profile_id``), one numeric column
        per covariate, e.g. :func:`xproda.sites.observations.site_properties` (topsoil clay,
        sand, pH...). Units from ``site_covariates.attrs["column_units"]`` (a dict by
        column) when present. They follow the gridded features in ``x``; their min-max
        scaling comes from the sites (there is no grid); sites absent from the table or with
        a NaN value are dropped and reported like NaN gridded covariates. A network trained
        on them records them (``site_features``) and refuses a grid that lacks them.
    scaling : {"grid", "sites"}, default "grid"
        Min-max constants of the gridded covariates from the whole grid (spec §7.2) or from
        the sites only.

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
    if not feats and site_covariates is None:
        raise ValueError("no covariates to train on: covariates has no variable with only "
                         "spatial dims; pass features=[...] or site_covariates=...")
    if scaling not in ("grid", "sites"):
        raise ValueError(f"scaling must be 'grid' or 'sites', got {scaling!r}")
    require_features(covariates, feats)
    site_names: list[str] = []
    if site_covariates is not None:
        site_names, x_site, site_units, listed = _site_columns(site_covariates, batch, feats)
    fds = covariates if forcing is None else forcing
    need = [k for k in FORCING_SCHEMA if k in fds.variables
            and (k in mdl.required_forcing or k in ("CELLSAND", "NPP"))]
    absent = [k for k in mdl.required_forcing if k not in fds.variables]
    if absent:
        where = "covariates" if forcing is None else "forcing"
        raise KeyError(f"{where} lack forcing variable(s) {absent} needed by "
                       f"{mdl.name!r}; pass forcing=... or add them")
    frc_s = sample_sites(fds[need], lat=batch.lat, lon=batch.lon)
    S = len(batch)
    if feats:
        cov_s = sample_sites(covariates[feats], lat=batch.lat, lon=batch.lon)
        grid = covariates[feats] if scaling == "grid" else cov_s
        cov_s, frc_s, lo, hi = dask.compute(cov_s, frc_s, grid.min(), grid.max())
        x = np.stack([np.asarray(cov_s[f].values, dtype=np.float64).reshape(-1)
                      for f in feats], -1)
    else:  # site covariates only
        (frc_s,) = dask.compute(frc_s)
        x = np.zeros((S, 0))
    f = forcing_arrays(frc_s, model=mdl, dim="site")
    x_min = np.array([float(lo[f_].values) for f_ in feats])
    x_max = np.array([float(hi[f_].values) for f_ in feats])
    bad_feat = [f_ for f_, a, b in zip(feats, x_min, x_max) if not (np.isfinite(a)
                                                                     and np.isfinite(b))]
    if bad_feat:
        raise ValueError(f"covariate(s) {bad_feat} are all-NaN on the {scaling}")
    units = [covariates[f_].attrs.get("units") for f_ in feats]
    if site_names:
        with warnings.catch_warnings():  # an all-NaN column is refused below
            warnings.simplefilter("ignore", RuntimeWarning)
            s_min, s_max = np.nanmin(x_site, 0), np.nanmax(x_site, 0)
        empty = [n for n, v in zip(site_names, s_min) if not np.isfinite(v)]
        if empty:
            raise ValueError(f"site covariate(s) {empty} have no finite value at the "
                             f"{S} sites")
        x = np.concatenate([x, x_site], axis=1)
        x_min, x_max = np.concatenate([x_min, s_min]), np.concatenate([x_max, s_max])
        units = units + site_units
    names = feats + site_names
    reasons = np.full(S, "", dtype=object)
    ok_obs = batch.mask.any(-1)
    reasons[~ok_obs] = "no valid observation"
    if site_names:
        reasons[ok_obs & ~listed] = "not in site_covariates"
    ok_x = np.isfinite(x).all(-1)
    for s in np.flatnonzero(~ok_x & (reasons == "")):
        bad = [f_ for f_, v in zip(names, x[s]) if not np.isfinite(v)]
        grid_bad = [b for b in bad if b not in site_names]
        site_bad = [b for b in bad if b in site_names]
        reasons[s] = "; ".join(
            ([f"NaN covariate(s): {', '.join(grid_bad)}"] if grid_bad else [])
            + ([f"NaN site covariate(s): {', '.join(site_bad)}"] if site_bad else []))
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
    return TrainingData(batch.subset(idx), x[idx], {k: np.asarray(v)[idx] for k, v in f.items()},
                        names, x_min, x_max, dropped, units, site_names)
