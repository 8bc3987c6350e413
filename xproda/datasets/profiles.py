"""Synthetic soil-profile observations simulated in the synthetic world."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from xproda import grid
from xproda.datasets import fields as _fields

__all__ = ["synthetic_profiles", "profile_sites", "truth_at_sites"]

#: model-to-observation mapping used to turn layer densities into observed layer values
MAPPING_METHOD = "layer_mean"


def _layer_bounds(rng: np.random.Generator, bottom: float, n_layers: int) -> np.ndarray:
    """Contiguous horizon-like layer interfaces from 0 to ``bottom`` (m), thicker with depth."""
    k = np.arange(1, n_layers) / n_layers
    inner = bottom * (k + rng.uniform(-0.25, 0.25, n_layers - 1) / n_layers) ** 1.5
    edges = np.round(np.concatenate([[0.0], np.sort(inner), [bottom]]), 2)
    edges = np.maximum.accumulate(edges)
    for i in range(1, edges.size):  # at least 1 cm per layer
        edges[i] = max(edges[i], edges[i - 1] + 0.01)
    return edges


def profile_sites(profiles: pd.DataFrame) -> pd.DataFrame:
    """One row per profile (index ``profile_id``) with its ``lat`` and ``lon``.

    The form :func:`xproda.spatial.sample_sites` takes: ``truth.proda.sample_sites(
    profile_sites(df))`` gives the values at the profiles with the profile ids as the ``site``
    coordinate.
    """
    missing = [c for c in ("profile_id", "lat", "lon") if c not in profiles.columns]
    if missing:
        raise KeyError(f"profiles lacks column(s) {missing} (expected the profile-table schema)")
    return profiles.groupby("profile_id", sort=False)[["lat", "lon"]].first()


def truth_at_sites(truth: xr.DataArray, profiles: pd.DataFrame) -> xr.DataArray:
    """The truth parameters at the profiles' cells, ``(site, parameter)``.

    Parameters
    ----------
    truth : xarray.DataArray
        From :func:`~xproda.datasets.truth_parameters`.
    profiles : pandas.DataFrame
        From :func:`synthetic_profiles` (or any profile table on the same world).

    Returns
    -------
    xarray.DataArray
        Normalised ``theta`` of the nearest grid cell of every profile, ``site`` coordinate =
        profile id, in the order of first appearance in ``profiles``.
    """
    from xproda.spatial import sample_sites

    return sample_sites(truth, profile_sites(profiles)).transpose("site", "parameter")


def synthetic_profiles(
    world: xr.Dataset,
    *,
    n_sites: int = 1000,
    truth: xr.DataArray | None = None,
    noise: float = 0.1,
    seed: int = 0,
    model: str = "clm5",
) -> pd.DataFrame:
    """Soil profiles simulated in the synthetic world at the truth parameters, with noise.

    1. **Sites**: ``n_sites`` modelled cells drawn with probability proportional to their
       area (with replacement), each site placed uniformly at random within the central 90 %
       of its cell, so the nearest cell centre (:func:`xproda.spatial.sample_sites`) is the
       cell whose forcing generated it.
    2. **Depths**: 3-8 contiguous layers from the surface to a bottom depth drawn
       log-uniformly in 0.3-2 m (15 % of profiles: 2-3 m), cut at the depth to bedrock
       (at least 0.1 m); interfaces at ``bottom * ((k + u) / n) ** 1.5`` (``u ~ U(-0.25,
       0.25)``; thin horizons at the top, as genetic horizons), rounded to cm.
    3. **SOC**: the steady state of ``model`` at ``truth`` in the site's cell, mapped to each
       observed layer with :class:`xproda.models.interp.ModelToObs` ``method="layer_mean"`` (the
       thickness-weighted mean of the model's layer densities over the observed layer, i.e.
       what a bulk sample of the layer measures), times log-normal noise
       ``exp(noise * e)``, ``e ~ N(0, 1)`` (median-unbiased; sd of the log residual =
       ``noise``).

    Parameters
    ----------
    world : xarray.Dataset
        From :func:`~xproda.datasets.synthetic_world`.
    n_sites : int, keyword-only, default 1000
        Number of profiles.
    truth : xarray.DataArray, keyword-only, optional
        Normalised parameters ``(lat, lon, parameter)``; default
        ``truth_parameters(world, model=model)``.
    noise : float, keyword-only, default 0.1
        Standard deviation of the log observation error (0 for exact values).
    seed : int, keyword-only, default 0
        Seed of sites, depths and noise.
    model : {"clm5", "microbial"}, keyword-only

    Returns
    -------
    pandas.DataFrame
        The profile table of :data:`xproda.sites.observations.PROFILE_COLUMNS` (``profile_id``,
        ``lat``, ``lon``, ``top``, ``bottom`` in m, ``soc`` in g C m-3), plus ``soc_true``
        (noise-free, g C m-3).  It passes :func:`xproda.sites.observations.validate_profiles`.

    Examples
    --------
    >>> from xproda.datasets import synthetic_world, synthetic_profiles
    >>> world = synthetic_world(10.0)
    >>> df = synthetic_profiles(world, n_sites=5)
    >>> df["profile_id"].nunique(), list(df.columns[:6])
    (5, ['profile_id', 'lat', 'lon', 'top', 'bottom', 'soc'])
    """
    from xproda.models.interp import ModelToObs
    from xproda.models import get_model
    from xproda.spatial import cell_area, sample_sites
    from xproda.xr.api import forcing_arrays
    from xproda.datasets.truth import truth_parameters

    if isinstance(n_sites, bool) or not isinstance(n_sites, (int, np.integer)) or n_sites < 1:
        raise ValueError(f"n_sites must be a positive int, got {n_sites!r}")
    if not (isinstance(noise, (int, float, np.floating)) and np.isfinite(noise) and noise >= 0):
        raise ValueError(f"noise must be a finite float >= 0 (sd of log SOC), got {noise!r}")
    _fields.check_seed(seed)
    if not isinstance(world, xr.Dataset) or "landmask" not in world:
        raise TypeError("world must be the Dataset of xproda.datasets.synthetic_world "
                        "(with a 'landmask' variable)")
    m = get_model(model)
    if truth is None:
        truth = truth_parameters(world, model=m.name)
    if "parameter" not in truth.dims or truth.sizes["parameter"] != len(m.parameters):
        raise ValueError(f"truth must have a 'parameter' dim of {len(m.parameters)} "
                         f"{m.name} parameters, got dims {dict(truth.sizes)}")
    rng = np.random.default_rng([int(seed), 11])
    # -- sites -------------------------------------------------------------------------
    mask = np.asarray(world["landmask"].values, dtype=bool)
    area = np.asarray(cell_area(world).values)
    iy, ix = np.nonzero(mask)
    p = area[iy, ix] / area[iy, ix].sum()
    pick = rng.choice(iy.size, size=int(n_sites), p=p)
    lat_c = world["lat"].values[iy[pick]]
    lon_c = world["lon"].values[ix[pick]]
    dlat = np.abs(np.diff(world["lat"].values[:2]))[0]
    dlon = np.abs(np.diff(world["lon"].values[:2]))[0]
    lat_s = lat_c + rng.uniform(-0.45, 0.45, n_sites) * dlat
    lon_s = lon_c + rng.uniform(-0.45, 0.45, n_sites) * dlon
    ids = np.array([f"syn{seed:03d}-{i:05d}" for i in range(n_sites)])
    # -- model at the sites ------------------------------------------------------------
    site_ds = sample_sites(world, lat=lat_s, lon=lon_s, ids=ids)
    theta = sample_sites(truth, lat=lat_s, lon=lon_s, ids=ids).transpose("site", "parameter")
    forcing = forcing_arrays(site_ds, model=m, dim="site")
    soc_layers = np.asarray(m.steady_state(np.asarray(theta.values), forcing)["soc"])
    # -- depths -----------------------------------------------------------------------
    n_layers = rng.integers(3, 9, n_sites)
    deep = rng.random(n_sites) < 0.15
    bottom = np.where(deep, rng.uniform(2.0, 3.0, n_sites),
                      np.exp(rng.uniform(np.log(0.3), np.log(2.0), n_sites)))
    dtb = np.asarray(site_ds["depth_to_bedrock"].values)
    bottom = np.round(np.clip(np.minimum(bottom, dtb), 0.1, grid.SOIL_DEPTH), 2)
    edges = [_layer_bounds(rng, b, k) for b, k in zip(bottom, n_layers)]
    dmax = int(n_layers.max())
    top = np.full((n_sites, dmax), np.nan)
    bot = np.full((n_sites, dmax), np.nan)
    for i, e in enumerate(edges):
        top[i, : e.size - 1], bot[i, : e.size - 1] = e[:-1], e[1:]
    m2o = ModelToObs(None, method=MAPPING_METHOD, top=top, bottom=bot)
    soc_true = np.asarray(m2o(soc_layers))
    eps = rng.standard_normal(soc_true.shape)
    soc = soc_true * np.exp(float(noise) * eps)
    # -- table -------------------------------------------------------------------------
    ok = np.isfinite(top)
    rows = np.repeat(np.arange(n_sites), ok.sum(1))
    df = pd.DataFrame({
        "profile_id": ids[rows],
        "lat": lat_s[rows],
        "lon": lon_s[rows],
        "top": top[ok],
        "bottom": bot[ok],
        "soc": soc[ok],
        "soc_true": soc_true[ok],
    })
    df.attrs = {"source": "xproda.datasets.synthetic_profiles", "model": m.name,
                "noise": float(noise), "seed": int(seed), "mapping": MAPPING_METHOD}
    return df
