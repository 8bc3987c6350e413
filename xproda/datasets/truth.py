"""Known "truth" parameter maps of the synthetic world (the twin-world targets)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import xarray as xr

from xproda import conventions
from xproda.datasets import fields as _fields

__all__ = ["truth_parameters", "TRUTH_KINDS", "CUE_PARAMETERS", "DRIVERS"]

#: kinds of truth: which mechanism dominates the spatial variation of SOC
TRUTH_KINDS = ("cue", "inputs")

#: the carbon-use-efficiency-like parameters of each model: the transfer fractions between
#: pools of the CLM5 model (group A without ``fcwdl2``, which only splits CWD between litter
#: pools) and the microbial CUEs of the microbial model
CUE_PARAMETERS: dict[str, tuple[str, ...]] = {
    "clm5": ("fl1s1", "fl2s1", "fl3s2", "fs1s2", "fs1s3", "fs2s1", "fs2s3", "fs3s1"),
    "microbial": ("l1_cue", "l2l3_cue", "mic_cue"),
}


def _tanh(x):
    return np.tanh(x)


#: driver functions ``f(world) -> DataArray`` (dimensionless, of order 1), fixed constants only
#: (never statistics of the world, so the truth of a cell does not depend on the grid extent)
DRIVERS: dict[str, Callable[[xr.Dataset], xr.DataArray]] = {
    # carbon-use efficiency: high in cold soils (saturating in temperature), raised by clay
    # (mineral protection, more so in warm soils) and highest near pH 6
    "cue": lambda w: (
        1.6 * _tanh(-(w["bio1"] - 8.0) / 7.0)
        + 0.5 * _tanh((w["clay_30cm"] - 25.0) / 12.0) * (1.0 + 0.5 * _tanh((w["bio1"] - 10.0)
                                                                             / 10.0))
        + 0.4 * np.exp(-(((w["ph_0cm"] - 6.0) / 1.2) ** 2))
        - 0.7
    ),
    "dryness": lambda w: _tanh(-np.log(w["aridity_index"])),
    "clay": lambda w: _tanh((w["clay_30cm"] - 25.0) / 12.0),
    "bedrock": lambda w: _tanh(np.log(w["depth_to_bedrock"] / 5.0)),
    "cold": lambda w: _tanh(-(w["bio1"] - 5.0) / 8.0),
    "wood": lambda w: 2.0 * w["tree_fraction"] - 1.0,
    "acidity": lambda w: _tanh((6.0 - w["ph_0cm"]) / 1.0),
}

# name -> (base theta, driver, slope in logit space); slopes of the CUE parameters are used
# for kind="cue" and divided by 10 for kind="inputs" (all others are the same in both kinds,
# already weak)
_CLM5 = {
    "diffus": (0.5, "wood", 0.3),
    "cryo": (0.5, "cold", 0.3),
    "q10": (0.3, "dryness", -0.3),
    "efolding": (0.75, "bedrock", 0.3),
    "taucwd": (0.5, "wood", 0.3),
    "taul1": (0.5, "acidity", 0.3),
    "taul2": (0.5, "acidity", 0.3),
    "tau4s1": (0.3, "clay", 0.3),
    "tau4s2": (0.3, "clay", 0.3),
    "tau4s3": (0.3, "clay", 0.3),
    "fl1s1": (0.55, "cue", 1.2),
    "fl2s1": (0.55, "cue", 1.2),
    "fl3s2": (0.55, "cue", 1.2),
    "fs1s2": (0.45, "cue", 1.2),
    "fs1s3": (0.2, "cue", 1.0),
    "fs2s1": (0.4, "cue", 1.0),
    "fs2s3": (0.3, "cue", 1.0),
    "fs3s1": (0.4, "cue", 0.8),
    "fcwdl2": (0.5, "wood", 0.3),
    "w-scaling": (0.4, "dryness", 0.3),
    "beta": (0.85, "dryness", 0.3),
}
_MICROBIAL = {
    "bio": (0.5, "wood", 0.3),
    "cryo": (0.5, "cold", 0.3),
    "q10": (0.3, "dryness", -0.3),
    "w_scaling": (0.4, "dryness", 0.3),
    "tau4cwd": (0.5, "wood", 0.3),
    "tau4l1": (0.5, "acidity", 0.3),
    "tau4l2": (0.5, "acidity", 0.3),
    "tau4s1": (0.5, "clay", 0.3),
    "tau4s2_death": (0.5, "clay", 0.3),
    "tau4s2_enz": (0.5, "acidity", 0.3),
    "tau4s3": (0.5, "clay", 0.3),
    "tau4s4": (0.5, "clay", 0.3),
    "mm_const_assim": (0.5, "acidity", 0.3),
    "mm_const_decom": (0.5, "clay", 0.3),
    "fcwdl2": (0.5, "wood", 0.3),
    "pl1s1": (0.5, "acidity", 0.3),
    "pl2s1": (0.5, "acidity", 0.3),
    "pl3s4": (0.5, "clay", 0.3),
    "l1_cue": (0.5, "cue", 1.2),
    "l2l3_cue": (0.5, "cue", 1.2),
    "mic_cue": (0.45, "cue", 1.2),
    "pdeath2soc": (0.5, "clay", 0.3),
    "beta": (0.85, "dryness", 0.3),
}
_TABLES = {"clm5": _CLM5, "microbial": _MICROBIAL}


def _logit(p: float) -> float:
    return float(np.log(p / (1.0 - p)))


def truth_parameters(
    world: xr.Dataset,
    *,
    model: str = "clm5",
    kind: str = "cue",
    seed: int = 0,
) -> xr.DataArray:
    """Known spatial maps of the normalised parameters: a nonlinear function of covariates.

    Every parameter is ``theta_p = sigmoid(logit(b_p) + s_p * D_p(x))`` with a base value
    ``b_p``, a slope ``s_p`` and a driver ``D_p``, a fixed nonlinear function of the world's
    covariates ``x`` (see :data:`DRIVERS`).  For the CUE-like parameters
    (:data:`CUE_PARAMETERS`: the CLM5 transfer fractions, the microbial CUEs) the driver is

    ``D_cue = 1.6 tanh(-(BIO1 - 8) / 7) + 0.5 tanh((clay30 - 25) / 12) (1 + 0.5 tanh((BIO1 - 10)
    / 10)) + 0.4 exp(-((pH0 - 6) / 1.2)**2) - 0.7``

    (BIO1 in °C, clay in %): efficiency falls steeply with temperature, as the PRODA analyses
    of carbon-use efficiency report, and rises with clay and near-neutral pH.  The other
    parameters vary weakly (``|s_p| <= 0.3``) with aridity, clay, depth to bedrock, cold,
    woodiness or acidity.

    Parameters
    ----------
    world : xarray.Dataset
        From :func:`~xproda.datasets.synthetic_world` (needs its covariates).
    model : {"clm5", "microbial"}, keyword-only
        Whose parameters (``ParameterSpace.names`` order).
    kind : {"cue", "inputs"}, keyword-only
        ``"cue"``: the CUE-like parameters vary strongly (slopes 0.8-1.2 in logit space), so
        carbon-use efficiency dominates the spatial variation of SOC.  ``"inputs"``: the
        same maps with the CUE slopes divided by 10, so every parameter varies weakly and
        litter inputs (with the climate scalars) dominate the variation of SOC.
    seed : int, keyword-only, default 0
        0 gives the documented coefficients; another seed perturbs every base by
        ``N(0, 0.25)`` in logit space and every slope by a factor ``U(0.8, 1.2)`` — still a
        deterministic function of the covariates.

    Returns
    -------
    xarray.DataArray
        ``theta`` with dims ``(lat, lon, parameter)``, values in (0, 1), NaN where the
        covariates are NaN (ocean); lazy when ``world`` is dask-backed.

    Examples
    --------
    >>> from xproda.datasets import synthetic_world, truth_parameters
    >>> world = synthetic_world(10.0)
    >>> theta = truth_parameters(world)
    >>> theta.dims, theta.sizes["parameter"]
    (('lat', 'lon', 'parameter'), 21)
    """
    from xproda.models import get_model

    space = get_model(model).parameters
    if kind not in TRUTH_KINDS:
        raise ValueError(f"kind must be one of {TRUTH_KINDS}, got {kind!r}")
    _fields.check_seed(seed)
    if not isinstance(world, xr.Dataset):
        raise TypeError(f"world must be an xarray.Dataset (synthetic_world), got "
                        f"{type(world).__name__}")
    needed = {"bio1", "clay_30cm", "ph_0cm", "aridity_index", "depth_to_bedrock",
              "tree_fraction"}
    missing = sorted(needed - set(world.data_vars))
    if missing:
        raise KeyError(f"world lacks covariate(s) {missing} needed by truth_parameters; "
                       "pass a Dataset from xproda.datasets.synthetic_world")
    table = _TABLES[space.model]
    cue = set(CUE_PARAMETERS[space.model])
    rng = np.random.default_rng([int(seed), 7])
    drivers: dict[str, xr.DataArray] = {}
    cols = []
    for name in space.names:
        base, driver, slope = table[name]
        if kind == "inputs" and name in cue:
            slope = slope / 10.0
        logit_b = _logit(base)
        if seed:
            logit_b += rng.normal(0.0, 0.25)
            slope *= rng.uniform(0.8, 1.2)
        if driver not in drivers:
            drivers[driver] = DRIVERS[driver](world)
        z = logit_b + slope * drivers[driver]
        cols.append(1.0 / (1.0 + np.exp(-z)))
    theta = xr.concat(cols, dim="parameter", coords="minimal", compat="override")
    theta = theta.assign_coords(parameter=list(space.names)).transpose("lat", "lon",
                                                                       "parameter")
    theta = theta.drop_vars([c for c in theta.coords
                             if c not in ("lat", "lon", "parameter", "spatial_ref")])
    theta.name = "theta"
    theta.attrs = conventions.attrs(
        "theta", description=f"xproda.datasets.truth_parameters(model={space.model!r}, "
                             f"kind={kind!r}, seed={int(seed)})")
    return theta
