"""CLM5-style forcing of soil columns from their climate and soil: the per-column kernel.

:func:`column_forcing` computes the kernel forcing of a batch of columns (numpy, every column
from its own inputs only, so chunk invariant); :func:`forcing_dataset` applies it to a
Dataset, lazily with dask.  Used by :func:`xproda.climate.from_climate` and by the synthetic
world (:func:`xproda.datasets.synthetic_world`).  Formulas:
``docs/user-guide/synthetic-world.md`` and ``docs/user-guide/forcing-from-climate.md``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import xarray as xr

from xproda import conventions, grid
from xproda.climate.formulas import MONTHS, active_layer_thickness, sigmoid
from xproda.models.forcing import DAYS_PER_YEAR, FORCING_SCHEMA, KELVIN

__all__ = ["FORCING_VARIABLES", "column_forcing", "forcing_block", "forcing_dataset"]

#: seconds per (365-day) year
_SECONDS_PER_YEAR = DAYS_PER_YEAR * 86400.0
#: the layered forcing is stored in float32, as in CLM history files (halves the memory)
_LAYERED_DTYPE = np.float32
#: geothermal gradient (K m-1) of the soil temperature profile
_GEOTHERMAL_GRADIENT = 0.025

#: forcing variables written (all of the kernel schema except CLM's per-layer inputs)
FORCING_VARIABLES: tuple[str, ...] = (
    "TSOI", "W_SCALAR", "O_SCALAR", "FPI_vr", "ALTMAX", "ALTMAX_LASTYEAR", "nbedrock", "NPP",
    "CELLSAND", "CWD_INPUT", "LITR1_INPUT", "LITR2_INPUT", "LITR3_INPUT",
)


def column_forcing(
    tas: np.ndarray, pr: np.ndarray, pet: np.ndarray, *, npp: np.ndarray, tree: np.ndarray,
    fpi: np.ndarray, aridity: np.ndarray, elevation: np.ndarray, bedrock: np.ndarray,
    sand: np.ndarray,
) -> dict[str, np.ndarray]:
    """CLM5-style forcing of soil columns from their climate and soil (numpy, batch first).

    Every output of a column depends on that column's inputs only.  Formulas: see the docs
    pages ``docs/user-guide/synthetic-world.md`` and ``docs/user-guide/forcing-from-climate.md``.

    Parameters
    ----------
    tas, pr, pet : numpy.ndarray
        ``[n, 12]`` monthly air temperature (°C), precipitation and PET (mm month-1).
    npp : numpy.ndarray
        ``[n]`` annual NPP (g C m-2 yr-1).
    tree, fpi, aridity, elevation, bedrock : numpy.ndarray
        ``[n]`` tree fraction (1), N-limitation factor (1), aridity index (1), elevation (m),
        depth to bedrock (m).
    sand : numpy.ndarray
        ``[n, 3]`` sand content (%) at 0, 30 and 100 cm.

    Returns
    -------
    dict
        Kernel forcing (:data:`~xproda.models.forcing.FORCING_SCHEMA` names and shapes).
    """
    n = tas.shape[0]
    t_year = (MONTHS - 0.5) / 12.0  # mid-month, fraction of the year
    omega_t = 2.0 * np.pi * t_year
    # -- soil temperature: annual harmonic of air temperature, damped and lagged with depth ---
    t_air = tas.mean(-1)
    c1 = (tas * np.cos(omega_t)).sum(-1) / 6.0
    s1 = (tas * np.sin(omega_t)).sum(-1) / 6.0
    amp_air, lag = np.hypot(c1, s1), np.arctan2(s1, c1)
    snow = sigmoid(-(tas.min(-1) + 2.0) / 3.0)  # insulating winter snow cover
    winter = 0.4 * amp_air * snow  # snow raises the winter minimum by this much (K)
    t_surf = t_air + 1.0 + 0.5 * winter
    amp_surf = amp_air - 0.5 * winter
    p_ann = pr.sum(-1)
    wet_rel = (pr + 0.25 * p_ann[:, None] / 12.0) / (pet + 10.0)
    w_surf = np.clip(1.0 - np.exp(-1.2 * wet_rel), 0.02, 1.0)
    w_mean = w_surf.mean(-1)
    kappa = (0.35 + 0.45 * w_mean) * 1e-6  # thermal diffusivity, m2 s-1
    damp = np.sqrt(kappa * _SECONDS_PER_YEAR / np.pi)  # damping depth, m
    z = grid.ZSOI[: grid.N_LEVELS]
    zd = z[None, None, :] / damp[:, None, None]
    tsoi = (KELVIN + t_surf[:, None, None] + _GEOTHERMAL_GRADIENT * z
            + amp_surf[:, None, None] * np.exp(-zd)
            * np.cos(omega_t[None, :, None] - lag[:, None, None] - zd))  # [n, 12, 25]
    # -- active layer: CLM5 ALT per month, ALTMAX = running maximum since January ---------
    alt = active_layer_thickness(tsoi, z)  # [n, 12]
    altmax = np.maximum.accumulate(alt, axis=-1)
    altmax_ly = np.repeat(alt.max(-1, keepdims=True), 12, axis=-1)
    tsoi = tsoi[..., : grid.N_LAYERS]
    zl = z[: grid.N_LAYERS]
    # -- water scalar: monthly wetness, damped with depth, reduced in frozen layers --------
    w = w_mean[:, None, None] + (w_surf - w_mean[:, None])[..., None] * np.exp(-zl / 0.3)
    w = np.clip(np.where(tsoi < KELVIN, 0.25 * w, w), 0.0, 1.0)
    # -- oxygen scalar: saturated lowlands and perched water above permafrost -------------
    f_wet = sigmoid((aridity - 1.8) / 0.3) * sigmoid((400.0 - elevation) / 150.0)
    f_wet = f_wet + (1.0 - f_wet) * 0.5 * (altmax_ly[:, 0] < 1.5)
    o = np.clip(1.0 - 0.8 * f_wet[:, None] * (1.0 - np.exp(-zl / 0.4)), 0.05, 1.0)
    o = np.broadcast_to(o[:, None, :], (n, 12, grid.N_LAYERS))
    # -- nitrogen scalar ----------------------------------------------------------------------
    fpi_vr = np.broadcast_to(fpi[:, None, None], (n, 12, grid.N_LAYERS))
    # -- bedrock --------------------------------------------------------------------------
    nb = np.clip(grid.layer_index(np.minimum(bedrock, grid.SOIL_DEPTH)) + 1, 3, grid.N_LAYERS)
    nbedrock = np.repeat(nb[:, None].astype(np.float64), 12, axis=-1)
    # -- NPP and litter inputs --------------------------------------------------------------
    growth = sigmoid((tas - 5.0) / 2.0) * (1.0 - np.exp(-1.5 * wet_rel)) + 1e-3
    share = growth / growth.sum(-1, keepdims=True)
    npp_month = npp[:, None] * share  # g C m-2 month-1
    litterfall = npp[:, None] * (0.5 / 12.0 + 0.5 * share)
    f_cwd = 0.25 * tree
    split = {
        "CWD_INPUT": f_cwd,
        "LITR1_INPUT": (1.0 - f_cwd) * (0.25 * tree + 0.35 * (1.0 - tree)),
        "LITR2_INPUT": (1.0 - f_cwd) * (0.50 * tree + 0.45 * (1.0 - tree)),
        "LITR3_INPUT": (1.0 - f_cwd) * (0.25 * tree + 0.20 * (1.0 - tree)),
    }
    # -- sand by layer: linear between 0, 0.3 and 1 m, constant below ---------------------
    upper = np.clip(zl / 0.3, 0.0, 1.0)  # weights of the piecewise-linear profile
    lower = np.clip((zl - 0.3) / 0.7, 0.0, 1.0)
    cellsand = (sand[:, :1] + (sand[:, 1:2] - sand[:, :1]) * upper
                + (sand[:, 2:3] - sand[:, 1:2]) * lower)
    out = {
        "TSOI": tsoi, "W_SCALAR": w, "O_SCALAR": o, "FPI_vr": fpi_vr,
        "ALTMAX": altmax, "ALTMAX_LASTYEAR": altmax_ly, "nbedrock": nbedrock,
        "NPP": npp_month / (DAYS_PER_YEAR / 12.0 * 86400.0), "CELLSAND": cellsand,
    }
    out.update({k: litterfall * f[:, None] for k, f in split.items()})
    return out


_STATE_2D = ("npp_annual", "tree_fraction", "fpi", "aridity_index", "elevation",
             "depth_to_bedrock", "sand_0cm", "sand_30cm", "sand_100cm")


def _core(name: str) -> tuple[str, ...]:
    shape = FORCING_SCHEMA[name].shape
    return ("month", "layer") if len(shape) == 2 else (
        ("layer",) if shape == (grid.N_LAYERS,) else ("month",))


def forcing_block(tas, pr, pet, *state):
    """apply_ufunc kernel: 2-D state (+ month core dim) -> forcing with trailing core dims.

    Parameters
    ----------
    tas, pr, pet : numpy.ndarray
        ``[..., 12]`` monthly air temperature (°C), precipitation and PET (mm month-1).
    *state : numpy.ndarray
        ``[...]`` each: annual NPP, tree fraction, FPI, aridity index, elevation, depth to
        bedrock, sand at 0, 30 and 100 cm (the order of :func:`column_forcing`).

    Returns
    -------
    tuple of numpy.ndarray
        :data:`FORCING_VARIABLES` in order, each ``[..., <core dims>]``; NaN in cells with a
        missing input.
    """
    batch = tas.shape[:-1]
    ok = np.isfinite(tas).all(-1) & np.all([np.isfinite(v) for v in state], axis=0)
    kw = dict(zip(("npp", "tree", "fpi", "aridity", "elevation", "bedrock"),
                  (v[ok] for v in state[:6])))
    sand = np.stack([v[ok] for v in state[6:]], -1)
    cols = column_forcing(tas[ok], pr[ok], pet[ok], sand=sand, **kw)
    res = []
    for name in FORCING_VARIABLES:
        size = {"month": 12, "layer": grid.N_LAYERS}
        shp = batch + tuple(size[d] for d in _core(name))
        dtype = _LAYERED_DTYPE if len(_core(name)) == 2 else np.float64
        out = np.full(shp, np.nan, dtype=dtype)
        out[ok] = cols[name]
        res.append(out)
    return tuple(res)


def forcing_dataset(ds: xr.Dataset, block: Callable[..., tuple] | None = None) -> xr.Dataset:
    """Forcing Dataset from ``tas``, ``pr``, ``pet`` (month) and the column state of ``ds``.

    Lazy with dask (``apply_ufunc``, ``dask="parallelized"``); non-dim coordinates are
    dropped (the caller puts its own back).  Dims: the core dims, then the input's other dims.
    Attributes: the metadata registry's (:func:`xproda.conventions.forcing_attrs`).

    Parameters
    ----------
    ds : xarray.Dataset
        ``tas``, ``pr``, ``pet`` (with a ``month`` dim) and the column state: ``npp_annual``,
        ``tree_fraction``, ``fpi``, ``aridity_index``, ``elevation``, ``depth_to_bedrock``,
        ``sand_0cm``, ``sand_30cm``, ``sand_100cm`` (see :func:`column_forcing`).
    block : callable, optional
        Kernel with the signature of :func:`forcing_block` (default).

    Returns
    -------
    xarray.Dataset
        :data:`FORCING_VARIABLES`, layered ones in float32.
    """
    args = [ds["tas"], ds["pr"], ds["pet"]] + [ds[k] for k in _STATE_2D]
    args = [a.drop_vars([c for c in a.coords if c not in a.dims]) for a in args]
    outs = xr.apply_ufunc(
        block or forcing_block, *args,
        input_core_dims=[["month"]] * 3 + [[]] * len(_STATE_2D),
        output_core_dims=[list(_core(k)) for k in FORCING_VARIABLES],
        dask="parallelized",
        output_dtypes=[_LAYERED_DTYPE if len(_core(k)) == 2 else np.float64
                       for k in FORCING_VARIABLES],
        dask_gufunc_kwargs={"output_sizes": {"layer": grid.N_LAYERS}},
    )
    out = xr.Dataset()
    for name, da in zip(FORCING_VARIABLES, outs):
        da = da.transpose(*_core(name), ...)
        da.attrs = conventions.forcing_attrs(name)
        out[name] = da
    return out
