"""Kernel forcing from climate and soil covariates, for users without CLM5 history output.

:func:`from_climate` builds the CLM5-style forcing of the process models (``TSOI``,
``W_SCALAR``, ``O_SCALAR``, ``FPI_vr``, ``ALTMAX``, ``ALTMAX_LASTYEAR``, ``nbedrock``, ``NPP``,
``CELLSAND`` and the column-total litter inputs) from a monthly climatology (``tas``, ``pr``),
from WorldClim bioclimatic summaries (:func:`monthly_climate_from_bioclim`) or from site
values of mean annual air temperature and precipitation, plus optional soil covariates (sand
content, depth to bedrock, elevation) and NPP.  The same per-column functions
(:func:`column_forcing` and the helpers below) make the forcing of the synthetic world
(:func:`xproda.datasets.synthetic_world`).

Every input is read against :data:`CLIMATE_SCHEMA` (its units, dims and plausible range):
units are converted with :mod:`xproda.units` (pint), every conversion is written to the
output's ``history``, and values outside the plausible range raise
:class:`~xproda.errors.RangeError` (at compute time for dask input).

Every formula, its source and its limits: ``docs/user-guide/forcing-from-climate.md`` and
``docs/user-guide/synthetic-world.md``.

Examples
--------
>>> import numpy as np, xarray as xr
>>> from xproda.climate import from_climate
>>> sites = xr.Dataset({"maat": ("site", [15.0, -8.0]),
...                     "map": ("site", [600.0, 300.0], {"units": "mm"})},
...                    coords={"lat": ("site", [37.0, 68.0]), "lon": ("site", [-119.5, 133.0])})
>>> f = from_climate(sites)
>>> f["TSOI"].dims
('month', 'layer', 'site')
>>> f["ALTMAX_LASTYEAR"].isel(month=0).values.round(1)  # m: permafrost at the cold site
array([42. ,  3.9])
"""

from __future__ import annotations

import functools
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import xarray as xr

from xproda import conventions, grid, units
from xproda.errors import DimensionError, GridError, InputError, RangeError, UnitsError
from xproda.models.forcing import DAYS_PER_YEAR, FORCING_SCHEMA, KELVIN

__all__ = [
    "CLIMATE_SCHEMA", "CLIMATE_VARIABLES", "DEFAULTS", "FORCING_VARIABLES", "ClimateInput",
    "active_layer_thickness", "bioclim", "column_forcing", "from_climate", "miami_npp",
    "monthly_climate_from_bioclim", "thornthwaite_pet",
]

#: seconds per (365-day) year
_SECONDS_PER_YEAR = DAYS_PER_YEAR * 86400.0
#: the layered forcing is stored in float32, as in CLM history files (halves the memory)
_LAYERED_DTYPE = np.float32
#: geothermal gradient (K m-1) of the soil temperature profile
_GEOTHERMAL_GRADIENT = 0.025
#: carbon fraction of dry matter used to turn Miami-model NPP into carbon
_CARBON_FRACTION = 0.45

#: monthly climate of the world (dims month, lat, lon): attributes from the metadata registry
CLIMATE_VARIABLES: dict[str, dict[str, Any]] = {
    k: conventions.attrs(k, section="climate") for k in ("tas", "pr", "pet")
}

#: forcing variables written (all of the kernel schema except CLM's per-layer inputs)
FORCING_VARIABLES: tuple[str, ...] = (
    "TSOI", "W_SCALAR", "O_SCALAR", "FPI_vr", "ALTMAX", "ALTMAX_LASTYEAR", "nbedrock", "NPP",
    "CELLSAND", "CWD_INPUT", "LITR1_INPUT", "LITR2_INPUT", "LITR3_INPUT",
)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


# -------------------------------------------------------------------------------------------
# climate (per land cell, 1-D arrays of n cells; monthly arrays [n, 12])
# -------------------------------------------------------------------------------------------
_MONTH = np.arange(1, 13, dtype=np.float64)


def thornthwaite_pet(tas: np.ndarray) -> np.ndarray:
    """Monthly potential evapotranspiration (mm month-1), Thornthwaite (1948).

    ``PET_m = 16 (10 T_m / I) ** a`` for ``0 < T_m < 26.5 °C`` with the heat index
    ``I = sum_m (T_m / 5) ** 1.514`` (months above 0 °C) and
    ``a = 6.75e-7 I**3 - 7.71e-5 I**2 + 1.792e-2 I + 0.49239``; above 26.5 °C the
    Willmott et al. (1985) form ``-415.85 + 32.24 T - 0.43 T**2``; 0 at or below 0 °C.
    No day-length correction (12-hour days, 30-day months).

    Parameters
    ----------
    tas : numpy.ndarray
        Monthly mean air temperature (°C), ``[..., 12]``.

    Returns
    -------
    numpy.ndarray
        ``[..., 12]`` in mm month-1.
    """
    tp = np.maximum(tas, 0.0)
    heat = ((tp / 5.0) ** 1.514).sum(-1, keepdims=True)
    a = 6.75e-7 * heat**3 - 7.71e-5 * heat**2 + 1.792e-2 * heat + 0.49239
    safe = np.where(heat > 0, heat, 1.0)
    pet = np.where(heat > 0, 16.0 * (10.0 * tp / safe) ** a, 0.0)
    hot = -415.85 + 32.24 * tas - 0.43 * tas**2
    return np.where(tas >= 26.5, hot, pet)


def _quarters(x: np.ndarray) -> np.ndarray:
    """Sums over the 12 circular windows of 3 consecutive months, ``[..., 12]``."""
    return x + np.roll(x, -1, axis=-1) + np.roll(x, -2, axis=-1)


def bioclim(tas: np.ndarray, pr: np.ndarray, dtr: np.ndarray) -> dict[str, np.ndarray]:
    """The 19 WorldClim bioclimatic variables from monthly climate.

    Definitions of ANUCLIM/WorldClim as computed by ``dismo::biovars`` (R): quarters are
    windows of 3 consecutive months (wrapping around the year), BIO4 is 100 times the standard
    deviation (``ddof=1``) of monthly mean temperature, BIO15 is the coefficient of variation
    (%) of ``pr + 1``; monthly minimum/maximum temperature are ``tas -/+ dtr / 2``.

    Parameters
    ----------
    tas : numpy.ndarray
        Monthly mean temperature (°C), ``[n, 12]``.
    pr : numpy.ndarray
        Monthly precipitation (mm), ``[n, 12]``.
    dtr : numpy.ndarray
        Mean diurnal temperature range (°C), ``[n]``.

    Returns
    -------
    dict
        ``bio1`` ... ``bio19``, each ``[n]``.
    """
    tmax = tas + dtr[:, None] / 2
    tmin = tas - dtr[:, None] / 2
    tq = _quarters(tas) / 3.0
    pq = _quarters(pr)
    rows = np.arange(tas.shape[0])
    out = {
        "bio1": tas.mean(-1),
        "bio2": (tmax - tmin).mean(-1),
        "bio4": 100.0 * tas.std(-1, ddof=1),
        "bio5": tmax.max(-1),
        "bio6": tmin.min(-1),
        "bio8": tq[rows, pq.argmax(-1)],
        "bio9": tq[rows, pq.argmin(-1)],
        "bio10": tq.max(-1),
        "bio11": tq.min(-1),
        "bio12": pr.sum(-1),
        "bio13": pr.max(-1),
        "bio14": pr.min(-1),
        "bio15": 100.0 * (pr + 1).std(-1, ddof=1) / (pr + 1).mean(-1),
        "bio16": pq.max(-1),
        "bio17": pq.min(-1),
        "bio18": pq[rows, tq.argmax(-1)],
        "bio19": pq[rows, tq.argmin(-1)],
    }
    out["bio7"] = out["bio5"] - out["bio6"]
    out["bio3"] = 100.0 * out["bio2"] / out["bio7"]
    return out


def miami_npp(bio1: np.ndarray, bio12: np.ndarray) -> np.ndarray:
    """Annual NPP of carbon (g C m-2 yr-1), Miami model (Lieth 1975).

    ``NPP = 0.45 min(3000 / (1 + exp(1.315 - 0.119 T)), 3000 (1 - exp(-0.000664 P)))``
    with ``T`` the annual mean temperature (°C), ``P`` the annual precipitation (mm) and
    0.45 g C per g of dry matter.
    """
    npp_t = 3000.0 / (1.0 + np.exp(1.315 - 0.119 * bio1))
    npp_p = 3000.0 * (1.0 - np.exp(-0.000664 * bio12))
    return _CARBON_FRACTION * np.minimum(npp_t, npp_p)


def _clip(x: Any, lo: float, hi: float) -> Any:
    """``np.clip`` with ufuncs only, so lazy xarray/dask arrays stay lazy (same values)."""
    return np.minimum(np.maximum(x, lo), hi)


def _tree_fraction_rule(p_ann: Any, t_warmest: Any) -> Any:
    """Woody fraction (1) from annual precipitation (mm) and warmest-month temperature (°C).

    ``σ((P - 500) / 120) σ((T_warmest - 10) / 1.5)``: forests need ~500 mm and a warmest month
    above the 10 °C tree line (Köppen).
    """
    return _sigmoid((p_ann - 500.0) / 120.0) * _sigmoid((t_warmest - 10.0) / 1.5)


def _fpi_rule(t_mean: Any, anomaly: Any = 0.0) -> Any:
    """Fraction of potential N immobilisation (1) from annual mean air temperature (°C).

    ``clip(0.35 + 0.6 σ((T - 5) / 6) + 0.05 anomaly, 0.05, 1)``: stronger N limitation in
    cold soils (the synthetic world adds a random ``anomaly``).
    """
    return _clip(0.35 + 0.6 * _sigmoid((t_mean - 5.0) / 6.0) + 0.05 * anomaly, 0.05, 1.0)


def _aridity_index(p_ann: Any, pet_ann: Any) -> Any:
    """Aridity index (1): annual precipitation / PET (mm / mm, PET at least 1 mm), capped at 10."""
    return _clip(p_ann / np.maximum(pet_ann, 1.0), 0.0, 10.0)


# -------------------------------------------------------------------------------------------
# column forcing (pure per-cell functions: chunk invariant)
# -------------------------------------------------------------------------------------------

def active_layer_thickness(tsoi: np.ndarray, depth: np.ndarray) -> np.ndarray:
    """Active layer thickness (m) from soil temperature profiles, as CLM5 computes ``ALT``.

    From the bottom level upwards, find the deepest thawed node ``k`` (T > 273.15 K); the
    thickness is where the temperature interpolated linearly between nodes ``k`` and
    ``k + 1`` crosses freezing; the deepest node depth if the bottom node is thawed; 0 if no
    node is thawed (CLM5 ``ActiveLayerMod``, ``alt_calc``).

    Parameters
    ----------
    tsoi : numpy.ndarray
        ``[..., L]`` soil temperature (K) at node depths ``depth`` (top first).
    depth : numpy.ndarray
        ``[L]`` node depths (m).

    Returns
    -------
    numpy.ndarray
        ``[...]`` in m.
    """
    thawed = tsoi > KELVIN
    nl = tsoi.shape[-1]
    # deepest thawed node above the bottom (index from the top), -1 if none
    rev = thawed[..., : nl - 1][..., ::-1]
    has = rev.any(-1)
    k = np.where(has, nl - 2 - rev.argmax(-1), 0)
    t1 = np.take_along_axis(tsoi, k[..., None], -1)[..., 0]
    t2 = np.take_along_axis(tsoi, (k + 1)[..., None], -1)[..., 0]
    z1, z2 = depth[k], depth[k + 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        alt = z1 + (t1 - KELVIN) * (z2 - z1) / (t1 - t2)
    alt = np.where(has, alt, 0.0)
    return np.where(thawed[..., -1], depth[-1], alt)


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
    t_year = (_MONTH - 0.5) / 12.0  # mid-month, fraction of the year
    omega_t = 2.0 * np.pi * t_year
    # -- soil temperature: annual harmonic of air temperature, damped and lagged with depth ---
    t_air = tas.mean(-1)
    c1 = (tas * np.cos(omega_t)).sum(-1) / 6.0
    s1 = (tas * np.sin(omega_t)).sum(-1) / 6.0
    amp_air, lag = np.hypot(c1, s1), np.arctan2(s1, c1)
    snow = _sigmoid(-(tas.min(-1) + 2.0) / 3.0)  # insulating winter snow cover
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
    f_wet = _sigmoid((aridity - 1.8) / 0.3) * _sigmoid((400.0 - elevation) / 150.0)
    f_wet = f_wet + (1.0 - f_wet) * 0.5 * (altmax_ly[:, 0] < 1.5)
    o = np.clip(1.0 - 0.8 * f_wet[:, None] * (1.0 - np.exp(-zl / 0.4)), 0.05, 1.0)
    o = np.broadcast_to(o[:, None, :], (n, 12, grid.N_LAYERS))
    # -- nitrogen scalar ----------------------------------------------------------------------
    fpi_vr = np.broadcast_to(fpi[:, None, None], (n, 12, grid.N_LAYERS))
    # -- bedrock --------------------------------------------------------------------------
    nb = np.clip(grid.layer_index(np.minimum(bedrock, grid.SOIL_DEPTH)) + 1, 3, grid.N_LAYERS)
    nbedrock = np.repeat(nb[:, None].astype(np.float64), 12, axis=-1)
    # -- NPP and litter inputs --------------------------------------------------------------
    growth = _sigmoid((tas - 5.0) / 2.0) * (1.0 - np.exp(-1.5 * wet_rel)) + 1e-3
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


def _forcing_block(tas, pr, pet, *state):
    """apply_ufunc kernel: 2-D state (+ month core dim) -> forcing with trailing core dims."""
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
def _forcing_dataset(ds: xr.Dataset, block: Callable[..., tuple] | None = None) -> xr.Dataset:
    """Forcing Dataset from ``tas``, ``pr``, ``pet`` (month) and the column state of ``ds``.

    Lazy with dask (``apply_ufunc``, ``dask="parallelized"``); non-dim coordinates are
    dropped (the caller puts its own back).  Dims: the core dims, then the input's other dims.
    Attributes: the metadata registry's (:func:`xproda.conventions.forcing_attrs`).
    """
    args = [ds["tas"], ds["pr"], ds["pet"]] + [ds[k] for k in _STATE_2D]
    args = [a.drop_vars([c for c in a.coords if c not in a.dims]) for a in args]
    outs = xr.apply_ufunc(
        block or _forcing_block, *args,
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


# -------------------------------------------------------------------------------------------
# the input contract: CLIMATE_SCHEMA
# -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ClimateInput:
    """Contract of one input variable of :func:`from_climate` (see :data:`CLIMATE_SCHEMA`).

    Attributes
    ----------
    name : str
        Variable name (in ``climate``, in ``soil`` or a keyword of :func:`from_climate`).
    units : str
        Canonical units (UDUNITS); the values are converted to them.
    minimum, maximum : float
        Plausible physical range in ``units`` (inclusive).  Values outside it raise
        :class:`~xproda.errors.RangeError` (NaN is "no data" and passes): undecoded fill
        values (1e36, -9999, -3.4e38 ...) and most factor 10-1000 unit mistakes land there.
    range_source : str
        Where the range comes from.
    units_attr : {"required", "default", "definition"}
        What the ``units`` attribute means.  ``"required"``: a missing attribute raises
        :class:`~xproda.errors.UnitsError`, because values in other common units fall inside
        the plausible range (the mistake would be silent).  ``"default"``: a missing attribute
        means ``units`` (safe: the common mistakes fall outside the range).  ``"definition"``:
        the attribute is not read; the units are those of the variable's definition
        (WorldClim/ANUCLIM), temperatures divided by ``temperature_scale`` (copies of
        WorldClim 1.x label degC x 10 as "degC").  A present attribute of a ``"required"`` or
        ``"default"`` variable is always read and converted.
    units_note : str
        Why ``units_attr`` is what it is.
    accepted : str
        Examples of units that are converted.
    dims : tuple of str
        Dims the variable must have: ``("month",)`` (12 long, January first) for the monthly
        climate, ``()`` for annual and column values.  Other dims broadcast (a ``scenario``,
        an ensemble ``member``, a grid), except the reserved ones (``month`` on an annual
        value, ``time``, ``layer``, ``depth``), which raise
        :class:`~xproda.errors.DimensionError`.
    period : str or None
        What an amount refers to (``"month"``, ``"year"``): a total without a time unit
        (``mm`` for ``pr``) is the amount of one period, a rate given for a total (``mm yr-1``
        for ``map``) is multiplied by the period.
    water : bool
        Precipitation: a mass per area (``kg m-2``) is a depth of liquid water of density
        1000 kg m-3 (1 kg m-2 = 1 mm).
    scaled : bool
        A WorldClim temperature: divided by ``temperature_scale``.
    hint : str
        Usual cause of out-of-range values, added to the error message.
    """

    name: str
    units: str
    minimum: float
    maximum: float
    range_source: str
    units_attr: str
    units_note: str
    accepted: str = ""
    dims: tuple[str, ...] = ()
    period: str | None = None
    water: bool = False
    scaled: bool = False
    hint: str = ""


_CI = ClimateInput
#: air temperature: the observed extremes bound any monthly or annual mean
_AIR_T: dict[str, Any] = {
    "minimum": -90.0, "maximum": 60.0,
    "range_source": "observed extremes of near-surface air temperature (-89.2 degC, Vostok; "
                    "56.7 degC, Death Valley)",
}
_T_DEFAULT: dict[str, Any] = {
    "units_attr": "default", "accepted": "K, degF",
    "units_note": "K (values above 183) lies outside the range and is refused; degF only "
                  "partly, so give units for degF",
    "hint": "temperatures in K or degF need units='K' or 'degF'",
}
_WORLDCLIM: dict[str, Any] = {
    "units_attr": "definition",
    "units_note": "WorldClim/ANUCLIM definition; temperatures x temperature_scale (the "
                  "attribute of WorldClim copies is unreliable: degC x 10 labelled degC)",
}
_WORLDCLIM_T: dict[str, Any] = {
    **_WORLDCLIM, "scaled": True,
    "hint": "WorldClim 1.x stores temperatures x 10: pass temperature_scale=10",
}
_WORLDCLIM_P: dict[str, Any] = {
    "units_attr": "default", "water": True, "accepted": "cm, m, kg m-2",
    "units_note": "WorldClim/ANUCLIM definition (mm); an attribute is converted",
}
_ANNUAL_P: dict[str, Any] = {
    "minimum": 0.0, "maximum": 15000.0,
    "range_source": "wettest places on Earth: ~12,000-13,500 mm yr-1 (Mawsynram, Cherrapunji, "
                    "Lloro)",
}
_QUARTER_P = {**_ANNUAL_P, "range_source": "a quarter's total is at most the annual total"}
_SAND: dict[str, Any] = {
    "minimum": 0.0, "maximum": 100.0, "range_source": "a mass percentage",
    "units_attr": "default", "accepted": "1 (a fraction), g kg-1 (SoilGrids)",
    "units_note": "% is the convention of CLM (PCT_SAND), HWSD and WoSIS; SoilGrids' g kg-1 "
                  "exceeds 100 in all but the poorest soils; a fraction (0-1) would pass: "
                  "give units='1' for fractions",
}
_NPP: dict[str, Any] = {
    "minimum": 0.0, "maximum": 5000.0,
    "range_source": "the most productive ecosystems reach ~2,000-3,000 g C m-2 yr-1 "
                    "(tropical forests, C4 crops; MODIS MOD17 maximum ~3,000)",
    "units_attr": "required",
    "accepted": "kg C m-2 yr-1, g C m-2 d-1, g C m-2 s-1, kg C m-2 s-1, t ha-1 yr-1",
    "units_note": "MODIS gives kg C m-2 yr-1 (0-3) and CLM/CMIP g or kg C m-2 s-1: values "
                  "all inside the range",
}
_FRACTION: dict[str, Any] = {
    "minimum": 0.0, "maximum": 1.0, "range_source": "a fraction",
    "units_attr": "default", "accepted": "%",
    "units_note": "percentages (e.g. MODIS VCF tree cover) exceed 1 and are refused",
}

#: the input contract of :func:`from_climate` and :func:`monthly_climate_from_bioclim`: name
#: -> :class:`ClimateInput` (canonical units, required dims, plausible range, units policy).
#: BIO variables not listed (bio5, bio6, bio8, bio9, bio13, bio14, bio16, bio17) are not used.
CLIMATE_SCHEMA: dict[str, ClimateInput] = {e.name: e for e in (
    _CI("tas", "degC", dims=("month",), **_AIR_T, **_T_DEFAULT),
    _CI("pr", "mm month-1", 0.0, 5000.0, dims=("month",), period="month", water=True,
        range_source="wettest monthly means on Earth ~3,000-3,700 mm (Mawsynram, "
                     "Cherrapunji, June-July)",
        units_attr="required",
        accepted="mm d-1, mm s-1, kg m-2 s-1, kg m-2 month-1, m month-1, cm month-1, "
                 "mm (a monthly total)",
        units_note="mm d-1 (0-100), kg m-2 s-1 (0-1e-3), m month-1 and cm month-1 values "
                   "all fall inside the range"),
    _CI("maat", "degC", **_AIR_T, **_T_DEFAULT),
    _CI("map", "mm", **_ANNUAL_P, period="year", water=True, units_attr="required",
        accepted="cm, m, inch, kg m-2, mm yr-1, mm d-1",
        units_note="cm (e.g. MAP of the Sierra transect table) and m values fall inside "
                   "the range"),
    *(_CI(k, "degC", **_AIR_T, **_WORLDCLIM_T) for k in ("bio1", "bio10", "bio11")),
    _CI("bio2", "K", 0.0, 50.0, range_source="mean diurnal range: at most ~25 K (deserts, "
        "high plateaus)", **_WORLDCLIM_T),
    _CI("bio3", "%", 0.0, 100.0, range_source="100 bio2 / bio7, and bio2 <= bio7",
        **_WORLDCLIM),
    _CI("bio4", "0.01 K", 0.0, 3000.0, range_source="100 x standard deviation of the "
        "monthly means: at most ~2,300 (Yakutia)", **_WORLDCLIM_T),
    _CI("bio7", "K", 0.0, 100.0, range_source="annual range: at most ~75 K (Yakutia)",
        **_WORLDCLIM_T),
    _CI("bio12", "mm", **_ANNUAL_P, period="year", **_WORLDCLIM_P),
    _CI("bio15", "%", 0.0, 350.0, range_source="coefficient of variation of 12 values: at "
        "most 100 sqrt(12) = 346 %", **_WORLDCLIM),
    *(_CI(k, "mm", **_QUARTER_P, **_WORLDCLIM_P) for k in ("bio18", "bio19")),
    *(_CI(k, "%", **_SAND) for k in ("sand", "sand_0cm", "sand_30cm", "sand_100cm")),
    _CI("depth_to_bedrock", "m", 0.0, 1000.0,
        range_source="global depth-to-bedrock maps: regolith of tens of metres (Pelletier "
                     "et al. 2016, capped at 50 m), a few hundred metres in sedimentary "
                     "basins (Shangguan et al. 2017, global mean ~13 m)",
        units_attr="required", accepted="cm (SoilGrids; Shangguan et al. 2017), mm, ft",
        units_note="the global maps give cm (SoilGrids BDTICM): cm read as m is silent "
                   "for shallow soils"),
    _CI("elevation", "m", -500.0, 9000.0,
        range_source="Dead Sea shore (-430 m) to Mount Everest (8,849 m)",
        units_attr="default", accepted="km, ft",
        units_note="DEMs (SRTM, GMTED, ETOPO, WorldClim) give m; feet mostly exceed the range"),
    *(_CI(k, "g C m-2 yr-1", **_NPP) for k in ("npp", "npp_annual")),
    *(_CI(k, "1", **_FRACTION) for k in ("tree_fraction", "fpi")),
)}
del _CI
#: dims an input may not carry besides its own (``month`` on an annual value, ``time``: a
#: climatology is needed, ``layer``/``depth``: the forcing's own layer dim), with advice
_RESERVED_DIMS: dict[str, str] = {
    "month": "an annual or column value: reduce it over the months first",
    "time": "a monthly climatology is needed: average over the years by month first, "
            "e.g. da.groupby('time.month').mean() renamed to a 'month' dim",
    "layer": "the forcing's own layer dim: give sand at 0, 30 and 100 cm as sand_0cm, "
             "sand_30cm and sand_100cm",
    "depth": "the forcing's own depth coordinate: give sand at 0, 30 and 100 cm as sand_0cm, "
             "sand_30cm and sand_100cm",
}
#: 1000 kg m-3 = 1 g cm-3: dividing a mass per area by this unit gives the water depth exactly
_WATER_DENSITY = "g cm-3"
_YEAR = re.compile(r"\byear\b")
#: fill values in common use (besides anything above 1e20 in magnitude)
_FILL_VALUES = frozenset({-99.0, -999.0, -9999.0, -99999.0, 9999.0, 99999.0, 32767.0,
                          -32768.0, 65535.0})


def _check_dims(da: xr.DataArray, spec: ClimateInput, name: str) -> None:
    for d in spec.dims:
        if da.sizes.get(d) != 12:
            raise DimensionError(f"{name}: expected a {d!r} dim of length 12 (January "
                                 f"first), found dims {dict(da.sizes)}")
    bad = [d for d in da.dims if d in _RESERVED_DIMS and d not in spec.dims]
    if bad:
        raise DimensionError(f"{name}: a {bad[0]!r} dim is not allowed here "
                             f"({_RESERVED_DIMS[bad[0]]}); found dims {dict(da.sizes)}")


def _mask_fill_values(da: xr.DataArray, attrs: Mapping[str, Any], name: str,
                      log: list[str]) -> xr.DataArray:
    """``da`` with the values of undecoded ``_FillValue``/``missing_value`` attrs as NaN."""
    for key in ("_FillValue", "missing_value"):
        for fill in np.atleast_1d(attrs.get(key, [])).astype(np.float64):
            if not np.isnan(fill):
                da = da.where(da != fill)
                log.append(f"{name}: values equal to its {key} {fill:g} read as missing (NaN)")
    return da


def _time_exponent(unit: Any) -> float:
    return float(unit.dimensionality.get("[time]", 0))


def _noleap(unit: Any) -> Any:
    """``unit`` with years of 365 days (CLM's noleap calendar), not pint's 365.25."""
    text = format(unit, "D")
    return units.parse_units(_YEAR.sub("common_year", text)) if _YEAR.search(text) else unit


def _effective_units(src: str, spec: ClimateInput, name: str) -> tuple[str, str, list[str]]:
    """Source and target units as pint compares them, and the assumptions that made them.

    A mass per area of precipitation is a water depth (density 1000 kg m-3); a total is the
    amount of the variable's period and a rate over the period is its total; years have 365
    days unless months are converted to years (pint's month is exactly a twelfth of a year).
    """
    su, du = units.parse_units(src, name=name), units.parse_units(spec.units, name=name)
    how = []
    if spec.water and "[mass]" in su.dimensionality and "[mass]" not in du.dimensionality:
        su = su / units.parse_units(_WATER_DENSITY)
        how.append("water density 1000 kg m-3")
    shift = _time_exponent(su) - _time_exponent(du)
    if spec.period is not None and shift in (-1.0, 1.0):
        du = du * units.parse_units(spec.period) ** int(shift)
        how.append(f"a total per {spec.period}" if shift > 0 else
                   f"a rate over the {spec.period}")
    if "month" not in format(su, "D"):
        if bool(_YEAR.search(format(su, "D"))) != bool(_YEAR.search(format(du, "D"))):
            how.append("365-day year")
        su, du = _noleap(su), _noleap(du)
    return str(su), str(du), how


def _to_canonical(da: xr.DataArray, src: str, spec: ClimateInput, name: str,
                  log: list[str]) -> tuple[xr.DataArray, str]:
    """``da`` (in ``src``) in the canonical units of ``spec``, and how it was converted."""
    expected = f"{name} is expected in {spec.units!r} or convertible units (e.g. {spec.accepted})"
    try:
        su, du, how = _effective_units(src, spec, name)
    except UnitsError as err:  # unreadable
        raise UnitsError(f"{err}; {expected}") from None
    try:
        scale, offset = units.conversion(su, du, name=name)
    except UnitsError:  # another physical dimension
        dims = [units.parse_units(u).dimensionality for u in (src, spec.units)]
        raise UnitsError(f"{name}: units {src!r} ({dims[0]}) cannot be converted to "
                         f"{spec.units!r} ({dims[1]}); {expected}") from None
    out, _ = units.convert(da, du, name=name, src=su)
    per_month = units.needs_month_lengths(su, du, name=name)
    steps = ([f"x {scale:.10g}" + (" per day, x the days of each month" if per_month else "")]
             if scale != 1.0 or per_month else []) + ([f"{'+' if offset > 0 else '-'} {abs(offset):g}"] if offset else [])
    done = ", ".join(steps + how)
    if done:
        log.append(f"{name}: converted from {src!r} to {spec.units!r} ({done})")
    return out, f"read as {src!r}" + (f", {done}" if done else "")


def _by_definition(da: xr.DataArray, spec: ClimateInput, name: str, log: list[str],
                   temperature_scale: float) -> tuple[xr.DataArray, str]:
    """``da`` in its definition's units (WorldClim temperatures: / ``temperature_scale``)."""
    if not spec.scaled or temperature_scale == 1.0:
        return da, f"read as {spec.units} (its definition)"
    log.append(f"{name}: divided by temperature_scale={temperature_scale:g}")
    return da / temperature_scale, f"read as {spec.units} x {temperature_scale:g}"


def _missing_units(spec: ClimateInput, name: str) -> UnitsError:
    return UnitsError(
        f"{name}: no units attribute, and {name} needs one: {spec.units_note}. Set "
        f"attrs['units'] (e.g. {spec.units!r}; also accepted: {spec.accepted}; for a mapping "
        "of arrays pass an xarray.DataArray with attrs={'units': ...})")


def _looks_like_fill(x: float) -> bool:
    return abs(x) >= 1e20 or float(x) in _FILL_VALUES


def _range_block(x: np.ndarray, *, name: str, lo: float, hi: float, units_: str, how: str,
                 hint: str) -> np.ndarray:
    """Identity that raises :class:`RangeError` on values outside ``[lo, hi]`` (NaN passes)."""
    v = x[~np.isnan(x)]
    if v.size == 0:
        return x
    vmin, vmax = float(v.min()), float(v.max())
    if lo <= vmin and vmax <= hi:
        return x
    if vmin < lo and vmax > hi:
        span, worst = f"from {vmin:.4g} to {vmax:.4g}", (vmin, vmax)
    else:
        span, worst = (f"down to {vmin:.4g}", (vmin,)) if vmin < lo else (
            f"up to {vmax:.4g}", (vmax,))
    if any(_looks_like_fill(w) for w in worst):
        hint = ("an undecoded fill value? Decode the file with xarray (mask_and_scale) or set "
                "the _FillValue/missing_value attribute, so that it reads as NaN")
    raise RangeError(f"{name}: values {span} {units_} outside the plausible range "
                     f"[{lo:g}, {hi:g}] {units_} ({how}); {hint}")


def _range_checked(da: xr.DataArray, spec: ClimateInput, name: str, how: str) -> xr.DataArray:
    """``da``, checked against the plausible range: now for numpy, at compute time for dask."""
    check = functools.partial(_range_block, name=name, lo=spec.minimum, hi=spec.maximum,
                              units_=spec.units, how=how,
                              hint=spec.hint or "wrong or mislabelled units?")
    return xr.apply_ufunc(check, da, dask="parallelized", output_dtypes=[np.float64])


def _read(da: xr.DataArray, name: str, log: list[str],
          temperature_scale: float = 1.0) -> xr.DataArray:
    """Input ``name`` checked against :data:`CLIMATE_SCHEMA`: float64 in the canonical units,
    fill values as NaN, range checked, no attributes.  Conversions are appended to ``log``.
    """
    spec = CLIMATE_SCHEMA[name]
    _check_dims(da, spec, name)
    src = da.attrs.get("units")
    out = _mask_fill_values(da.astype(np.float64), da.attrs, name, log)
    if spec.units_attr == "definition":
        out, how = _by_definition(out, spec, name, log, temperature_scale)
    elif src is None:
        if spec.units_attr == "required":
            raise _missing_units(spec, name)
        how = f"no units attribute, so {spec.units} assumed"
    else:
        out, how = _to_canonical(out, str(src), spec, name, log)
    return _range_checked(_bare(out), spec, name, how)


def _given(value: Any, name: str, log: list[str]) -> xr.DataArray:
    """A keyword value: a DataArray (read as an input) or a number in the canonical units."""
    if isinstance(value, xr.DataArray):
        return _read(value, name, log)
    if isinstance(value, bool) or np.ndim(value) != 0:
        raise TypeError(f"{name} must be a number or an xarray.DataArray, got "
                        f"{type(value).__name__} of shape {np.shape(value)}")
    spec = CLIMATE_SCHEMA[name]
    return _range_checked(xr.DataArray(float(value)), spec, name,
                          f"a number, so {spec.units} (the canonical units)")


class _Inputs:
    """The variables of ``climate`` and ``soil``, each read once against :data:`CLIMATE_SCHEMA`.

    Climate variables (``tas``, ``pr``, ``maat``, ``map``, BIO) come from ``climate``; the
    column variables from ``soil`` if it has them, else from ``climate``.  :attr:`log` has
    one line per conversion.
    """

    def __init__(self, climate: xr.Dataset, soil: xr.Dataset | None = None, *,
                 temperature_scale: float = 1.0) -> None:
        self.variables = {str(k): v for k, v in climate.data_vars.items()}
        if soil is not None:
            self.variables.update({str(k): v for k, v in soil.data_vars.items()
                                   if k not in _CLIMATE_NAMES})
        self.temperature_scale = temperature_scale
        self.log: list[str] = []
        self._done: dict[str, xr.DataArray] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.variables

    def __getitem__(self, name: str) -> xr.DataArray:
        if name not in self._done:
            self._done[name] = _read(self.variables[name], name, self.log,
                                     self.temperature_scale)
        return self._done[name]

    def first(self, names: tuple[str, ...]) -> str | None:
        """The first of ``names`` present."""
        return next((n for n in names if n in self.variables), None)

    def given(self, value: Any, name: str) -> xr.DataArray:
        """A keyword value (see :func:`_given`), logged with the others."""
        return _given(value, name, self.log)


# -------------------------------------------------------------------------------------------
# from climate covariates: defaults, helpers
# -------------------------------------------------------------------------------------------
#: defaults used where an input is absent (each use is recorded in the output's attrs):
#: sand content (%) at every depth (a loam), depth to bedrock (m; the full 8.6 m column, i.e.
#: no bedrock) and elevation (m; an upland, so no saturated-lowland anoxia)
DEFAULTS: dict[str, float] = {
    "sand": 40.0,
    "depth_to_bedrock": float(grid.SOIL_DEPTH),
    "elevation": 2000.0,
}
#: annual-harmonic constants: ``std(ddof=1)`` of 12 monthly values of ``A cos`` is
#: ``A sqrt(6/11)``; a 3-month mean centred on the extreme is ``A (1 + sqrt 3) / 3``
_STD_FACTOR = math.sqrt(6.0 / 11.0)
_QUARTER_FACTOR = (1.0 + math.sqrt(3.0)) / 3.0
#: month of the temperature maximum: July in the northern, January in the southern hemisphere
_PEAK_NORTH, _PEAK_SOUTH = 7.0, 1.0
_BIOCLIM_NAMES = tuple(f"bio{i}" for i in range(1, 20))
_CLIMATE_NAMES = frozenset({"tas", "pr", "maat", "map", *_BIOCLIM_NAMES})
_SAND_LAYERS = ("sand_0cm", "sand_30cm", "sand_100cm")


def _bare(da: xr.DataArray) -> xr.DataArray:
    """``da`` without attrs (input attrs never leak onto outputs)."""
    out = da.copy(deep=False)
    out.attrs = {}
    return out


def _annotated(da: xr.DataArray, name: str, section: str = "climate") -> xr.DataArray:
    """``da`` with the registry's attrs of ``name`` (replaced, never merged)."""
    out = da.copy(deep=False)
    out.attrs = conventions.attrs(name, section=section)
    return out


def _as_dataset(obj: Any, what: str) -> xr.Dataset:
    """A Dataset from a Dataset or a mapping of arrays (1-D arrays on a ``site`` dim)."""
    if isinstance(obj, xr.Dataset):
        return obj
    if isinstance(obj, Mapping):
        data = {}
        for k, v in obj.items():
            if isinstance(v, xr.DataArray):
                data[k] = v
                continue
            a = np.asarray(v, dtype=np.float64)
            if a.ndim > 1:
                raise DimensionError(
                    f"{what}[{k!r}]: expected a scalar or a 1-D array over sites (or an "
                    f"xarray object with named dims), got shape {a.shape}"
                )
            data[k] = (("site",) if a.ndim == 1 else (), a)
        return xr.Dataset(data)
    raise TypeError(f"{what} must be an xarray.Dataset or a mapping of arrays, got "
                    f"{type(obj).__name__}")


def _temperature_scale(value: Any) -> float:
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or not math.isfinite(value) or value <= 0):
        raise InputError(f"temperature_scale must be a positive number (1, or 10 for "
                         f"WorldClim 1.x), got {value!r}")
    return float(value)


def _latitude(ds: xr.Dataset, latitude: Any) -> xr.DataArray:
    """Latitude (degrees north) of the cells of ``ds`` (keyword, a variable, or coordinates)."""
    if latitude is not None:
        return latitude if isinstance(latitude, xr.DataArray) else xr.DataArray(
            np.asarray(latitude, dtype=np.float64),
            dims=() if np.ndim(latitude) == 0 else ("site",))
    for name in ("lat", "latitude", "Lat", "Latitude", "LAT", "LATITUDE"):
        if name in ds.variables:
            return ds[name]
    from xproda.spatial import lat_lon

    try:
        return lat_lon(ds)[0]
    except ValueError as err:
        raise InputError(
            "the latitude of each cell is needed to place the annual cycle (coldest month "
            "January in the northern, July in the southern hemisphere): add a 'lat' coordinate "
            "(degrees_north) or pass latitude=...; variables seen: "
            f"{sorted(map(str, ds.variables))}"
        ) from err


def _default_amplitude(lat: xr.DataArray) -> xr.DataArray:
    """Half the annual range of monthly mean air temperature (K): ``1 + 20 sin²(lat)``."""
    return 1.0 + 20.0 * np.sin(np.deg2rad(lat)) ** 2


def _month_coord() -> xr.DataArray:
    return xr.DataArray(np.arange(1, 13), dims="month",
                        attrs=conventions.attrs("month", section="coordinates"))


def _history(action: str, log: list[str], summary: str) -> str:
    """CF ``history``: one line per conversion of the inputs, then ``summary``."""
    return "\n".join(conventions.history_line(f"{action}: {line}") for line in [*log, summary])


def monthly_climate_from_bioclim(
    bioclim_vars: xr.Dataset | Mapping[str, Any],
    *,
    latitude: Any = None,
    temperature_scale: float = 1.0,
    amplitude: float | xr.DataArray | None = None,
) -> xr.Dataset:
    """Monthly air temperature and precipitation reconstructed from bioclimatic summaries.

    Temperature is an annual harmonic ``tas_m = T + A cos(2π (m - m*) / 12)`` with the warmest
    month ``m* = 7`` (July) north of the equator and 1 (January) south of it, so the coldest
    month is January in the north and July in the south.

    - Amplitude ``A`` (K) is, in this order: the ``amplitude`` option; ``bio4 / 100 /
      sqrt(6/11)`` (BIO4 is 100 x the standard deviation, ``ddof=1``, of the 12 monthly
      means); ``(bio7 - bio2) / 2``, with ``bio2 = bio3 bio7 / 100`` when only BIO3 is given
      (BIO7 = annual range of monthly extremes = ``2 A + bio2``); ``(bio10 - bio11) / (2 c)``;
      otherwise the latitude rule ``1 + 20 sin²(lat)``, a rough zonal land mean (an
      assumption, often wrong by a factor of 2 near coasts and deep inside continents).
    - Mean ``T`` (°C) is ``bio1`` (or ``maat``); else ``bio11 + c A`` (BIO11, the mean of the
      coldest quarter, lies ``c A`` below the annual mean, ``c = (1 + sqrt 3) / 3``); else
      ``bio10 - c A``.
    - Precipitation is ``pr_m = P / 12 (1 + b cos(2π (m - m*) / 12))`` with ``P`` = ``bio12``
      (or ``map``), mm.  ``|b|`` comes from BIO15 (coefficient of variation of ``pr + 1``, %)
      and its sign from BIO18 vs BIO19 (rain in the warm or the cold quarter); with BIO18 and
      BIO19 alone, ``b = 6 (bio18 - bio19) / (P (1 + sqrt 3))``; ``b`` is clipped to
      ``[-1, 1]``.  Without BIO15/BIO18/BIO19 the precipitation is **uniform** over the year
      (an assumption: it sets the water scalar's seasonality, not its annual mean).

    For harmonic monthly climates the reconstruction is exact (BIO4, BIO11, BIO12, BIO15
    are recovered); for real climates it keeps the annual mean, the seasonal amplitude and
    the annual total, not the shape of the annual cycle.

    Parameters
    ----------
    bioclim_vars : xarray.Dataset or mapping
        Any of ``bio1`` ... ``bio19`` (WorldClim/ANUCLIM definitions, temperatures in °C x
        ``temperature_scale``, precipitation in mm), or the site values ``maat`` (mean annual
        air temperature, °C, or per its ``units``) and ``map`` (mean annual precipitation;
        a ``units`` attribute is required: "mm", "cm", "m", "mm yr-1", ...), on any grid
        (``lat``/``lon``, a ``site`` dim, ...).  Units, dims and plausible ranges:
        :data:`CLIMATE_SCHEMA`.  A mapping of numpy arrays is taken as 1-D arrays over
        ``site``.  Needed: a mean-temperature source (``bio1``, ``maat``, ``bio11`` or
        ``bio10``) and ``bio12`` or ``map``.
    latitude : array-like or xarray.DataArray, keyword-only, optional
        Latitude (degrees north) of the cells; default: the ``lat``/``latitude`` coordinate or
        variable of ``bioclim_vars`` (or the grid's, :func:`xproda.spatial.lat_lon`).
    temperature_scale : float, keyword-only, default 1
        Factor by which the temperatures are stored: 10 for WorldClim 1.x and its aggregated
        copies (e.g. biomod2's ``bioclim`` layers, whose BIO11 reaches -450), where BIO4 is
        then 1,000 x the standard deviation in °C.  Does not apply to ``maat``.
    amplitude : float or xarray.DataArray, keyword-only, optional
        Half the annual range of monthly mean air temperature (K), overriding the BIO
        variables and the latitude rule.

    Returns
    -------
    xarray.Dataset
        ``tas`` (°C) and ``pr`` (mm month-1) with dims ``(month, <input dims>)``, float64,
        ``month`` = 1..12; the input's coordinates are kept; attributes from the metadata
        registry (:mod:`xproda.conventions`, section ``"climate"``).
        ``attrs["reconstruction"]`` says which sources and assumptions were used and
        ``attrs["history"]`` has one line per unit conversion of the inputs.

    Raises
    ------
    xproda.errors.InputError
        No source of the annual mean temperature or of the annual precipitation (the message
        lists what is accepted, with units, and what was found); bad ``temperature_scale``;
        no latitude.
    xproda.errors.UnitsError
        Units that cannot be read or converted, or missing where :data:`CLIMATE_SCHEMA`
        requires them (``map``).
    xproda.errors.DimensionError
        A reserved dim (``month``, ``time``, ``layer``, ``depth``) on an input.
    xproda.errors.RangeError
        Values outside the plausible range (fill values, wrong units): at once for numpy,
        at compute time for dask input.

    All are ``ValueError`` subclasses.

    Examples
    --------
    >>> import xarray as xr
    >>> bio = xr.Dataset({"bio4": ("site", [800.0]), "bio11": ("site", [-2.0]),
    ...                   "bio12": ("site", [700.0])}, coords={"lat": ("site", [50.0])})
    >>> mc = monthly_climate_from_bioclim(bio)
    >>> round(float(mc.tas.mean()), 2), round(float(mc.tas.std(ddof=1) * 100), 1)
    (7.86, 800.0)
    >>> round(float(mc.pr.sum()), 6)
    700.0
    """
    ds = _as_dataset(bioclim_vars, "bioclim_vars")
    inputs = _Inputs(ds, temperature_scale=_temperature_scale(temperature_scale))
    tas, pr, notes = _reconstruct(inputs, _latitude(ds, latitude), amplitude)
    out = xr.Dataset({"tas": _annotated(tas, "tas"), "pr": _annotated(pr, "pr")})
    out = out.assign_coords(month=_month_coord())
    out.attrs = {"reconstruction": "; ".join(notes),
                 "history": _history("monthly_climate_from_bioclim", inputs.log,
                                     "monthly climate reconstructed: " + "; ".join(notes))}
    return out


def _reconstruct(inputs: _Inputs, latitude: xr.DataArray,
                 amplitude: float | xr.DataArray | None) -> tuple[xr.DataArray, xr.DataArray,
                                                                  list[str]]:
    """Monthly ``tas`` (°C) and ``pr`` (mm month-1) from BIO/site values, and the notes.

    See :func:`monthly_climate_from_bioclim`.
    """
    have = set(inputs.variables)
    notes: list[str] = []
    mean_src = inputs.first(("bio1", "maat", "bio11", "bio10"))
    p_src = inputs.first(("bio12", "map"))
    if mean_src is None or p_src is None:
        missing = ([] if mean_src else [("annual mean temperature: bio1 or maat (°C), or "
                                         "bio11 or bio10 (°C; with bio4, bio7+bio3 or "
                                         "bio10+bio11 for the amplitude)")]) + \
                  ([] if p_src else ["annual precipitation: bio12 or map (mm)"])
        raise InputError(
            "cannot reconstruct the monthly climate: missing " + "; ".join(missing)
            + f". Variables found: {sorted(have)}"
        )
    lat = _bare(latitude.astype(np.float64))
    # -- amplitude (K) ------------------------------------------------------------------------
    if amplitude is not None:
        amp = _bare(amplitude.astype(np.float64)) if isinstance(amplitude, xr.DataArray) \
            else xr.DataArray(float(amplitude))
        notes.append("amplitude given")
    elif "bio4" in have:
        amp = inputs["bio4"] / 100.0 / _STD_FACTOR
        notes.append("amplitude from bio4")
    elif "bio7" in have and ({"bio2", "bio3"} & have):
        bio7 = inputs["bio7"]
        bio2 = inputs["bio2"] if "bio2" in have else inputs["bio3"] * bio7 / 100.0
        amp = (bio7 - bio2) / 2.0
        notes.append("amplitude from bio7 and " + ("bio2" if "bio2" in have else "bio3"))
    elif {"bio10", "bio11"} <= have:
        amp = (inputs["bio10"] - inputs["bio11"]) / (2.0 * _QUARTER_FACTOR)
        notes.append("amplitude from bio10 and bio11")
    else:
        amp = _default_amplitude(lat)
        notes.append("ASSUMED seasonal amplitude 1 + 20 sin^2(lat) K (no bio4/bio7/bio10 "
                     "given)")
    amp = np.maximum(amp, 0.0)
    # -- annual mean (degC) ------------------------------------------------------------------
    if mean_src in ("bio1", "maat"):
        t_mean = inputs[mean_src]
    elif mean_src == "bio11":
        t_mean = inputs["bio11"] + _QUARTER_FACTOR * amp
    else:
        t_mean = inputs["bio10"] - _QUARTER_FACTOR * amp
    notes.append(f"annual mean from {mean_src}")
    # -- precipitation (mm) ------------------------------------------------------------------
    p_ann = inputs[p_src]
    p_month = p_ann / 12.0
    p_safe = xr.where(p_ann > 0, p_ann, 1.0)  # no 0 / 0 in dry cells (b = 0 there)
    sign: Any = 1.0
    if {"bio18", "bio19"} <= have:
        sign = xr.where(inputs["bio19"] > inputs["bio18"], -1.0, 1.0)
    if "bio15" in have:
        cv = inputs["bio15"] / 100.0
        b = sign * cv * (p_safe / 12.0 + 1.0) / (p_safe / 12.0 * _STD_FACTOR)
        notes.append("precipitation seasonality from bio15"
                     + (" (phase from bio18/bio19)" if {"bio18", "bio19"} <= have else
                        " (rain in the warm season assumed)"))
    elif {"bio18", "bio19"} <= have:
        b = 6.0 * (inputs["bio18"] - inputs["bio19"]) / (p_safe * (1.0 + math.sqrt(3.0)))
        notes.append("precipitation seasonality from bio18 and bio19")
    else:
        b = xr.zeros_like(p_ann)
        notes.append("ASSUMED uniform monthly precipitation (no bio15/bio18/bio19 given)")
    b = xr.where(p_ann > 0, _clip(b, -1.0, 1.0), 0.0)
    # -- monthly values -----------------------------------------------------------------------
    month = _month_coord()
    peak = xr.where(lat >= 0, _PEAK_NORTH, _PEAK_SOUTH)
    cos = np.cos(2.0 * np.pi * (month.astype(np.float64) - peak) / 12.0)
    tas = (t_mean + amp * cos).transpose("month", ...)
    pr = np.maximum(p_month * (1.0 + b * cos), 0.0).transpose("month", ...)
    return _bare(tas).assign_coords(month=month), _bare(pr).assign_coords(month=month), notes


# -------------------------------------------------------------------------------------------
# from_climate
# -------------------------------------------------------------------------------------------
def _broadcast_block(tas, pr, pet, *state):
    """:func:`_forcing_block` on inputs broadcast to one batch shape, float64.

    The inputs' ranges were checked when they were read (:data:`CLIMATE_SCHEMA`).
    """
    batch = np.broadcast_shapes(tas.shape[:-1], pr.shape[:-1], pet.shape[:-1],
                                *(np.shape(v) for v in state))
    tas, pr, pet = (np.broadcast_to(np.asarray(a, np.float64), batch + (12,))
                    for a in (tas, pr, pet))
    state = [np.broadcast_to(np.asarray(v, np.float64), batch) for v in state]
    return _forcing_block(tas, pr, pet, *state)


def _annual_block(tas: np.ndarray, pr: np.ndarray) -> tuple[np.ndarray, ...]:
    """PET ``[..., 12]`` and annual mean T, total P, warmest month, total PET ``[...]``.

    Computed on contiguous copies, so every cell's values depend on its 12 months only (not
    on the memory layout of the chunk): chunk invariant, eager == lazy.  No overflow warnings
    on out-of-range input (the forcing kernel raises on it).
    """
    tas, pr = np.broadcast_arrays(tas, pr)  # extra dims of one of them (a scenario) broadcast
    tas = np.ascontiguousarray(tas, dtype=np.float64)
    pr = np.ascontiguousarray(pr, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        pet = thornthwaite_pet(tas)
    return pet, tas.mean(-1), pr.sum(-1), tas.max(-1), pet.sum(-1)


def from_climate(
    climate: xr.Dataset | Mapping[str, Any],
    *,
    soil: xr.Dataset | Mapping[str, Any] | None = None,
    npp: float | xr.DataArray | None = None,
    tree_fraction: float | xr.DataArray | None = None,
    fpi: float | xr.DataArray | None = None,
    elevation: float | xr.DataArray | None = None,
    latitude: Any = None,
    temperature_scale: float = 1.0,
    amplitude: float | xr.DataArray | None = None,
    include_climate: bool = False,
) -> xr.Dataset:
    """CLM5-style kernel forcing built from climate (and optionally soil) covariates.

    For users without CLM5 history output: the forcing the process models need is derived
    column by column from a monthly climatology (or from bioclimatic summaries or site
    means, reconstructed with :func:`monthly_climate_from_bioclim`) with the formulas of the
    synthetic world (:func:`column_forcing`): soil temperature from the annual harmonic of
    air temperature damped and lagged with depth (analytic heat conduction, snow offset);
    active layer as CLM5 computes it; water scalar from precipitation / Thornthwaite PET;
    oxygen scalar from wetness and elevation; bedrock layer from the depth to bedrock;
    monthly NPP and litter inputs split by tree fraction.  Formulas, sources and limits:
    ``docs/user-guide/forcing-from-climate.md``.

    The computation is lazy for dask-backed inputs (``xarray.apply_ufunc`` with
    ``dask="parallelized"``; every column depends on its own inputs only, so the values do
    not depend on the chunking) and eager for numpy-backed inputs.  A cell with a missing
    (NaN) input gets NaN forcing.

    Every input is read against :data:`CLIMATE_SCHEMA`: its ``units`` attribute is converted
    to the canonical units with :mod:`xproda.units` (pint; per-second and per-day rates of a
    monthly climatology with the month lengths of a 365-day year, precipitation masses with
    a water density of 1000 kg m-3), and required where values in other common units would
    pass unnoticed (``pr``, ``map``, ``depth_to_bedrock``, ``npp``); undecoded
    ``_FillValue``/``missing_value`` attributes become NaN; values outside the plausible
    range raise.  Each conversion is one line of the output's ``history``.

    Parameters
    ----------
    climate : xarray.Dataset or mapping
        On any grid (``lat``/``lon``, projected, or a ``site`` dim; extra dims such as a
        scenario broadcast), one of, in this order of preference:

        - ``tas`` (°C, or per its ``units``) and ``pr`` (``units`` required: mm month-1,
          kg m-2 s-1, mm d-1, m month-1, ...) with a ``month`` dim of length 12 (January
          first);
        - bioclimatic variables ``bio1`` ... ``bio19`` (any subset sufficient for
          :func:`monthly_climate_from_bioclim`, e.g. ``bio4``, ``bio11``, ``bio12``);
        - site values ``maat`` (°C) and ``map`` (``units`` required: mm, cm, m ...), with a
          default seasonal amplitude (``amplitude``).

        May also hold the column variables listed under ``soil``.  A mapping of numpy arrays
        is taken as 1-D arrays over ``site`` (then pass ``latitude`` for bioclimatic or site
        inputs).
    soil : xarray.Dataset or mapping, keyword-only, optional
        Soil covariates on the same grid: ``sand_0cm``, ``sand_30cm``, ``sand_100cm`` (%,
        interpolated linearly in depth between 0, 0.3 and 1 m, constant below) or a single
        ``sand`` (%); ``depth_to_bedrock`` (``units`` required: m, cm ...); and, used when
        the keyword of the same name is not given, ``elevation`` (m), ``npp`` or
        ``npp_annual`` (``units`` required: g C m-2 yr-1, kg C m-2 yr-1, g C m-2 s-1 ...),
        ``tree_fraction`` and ``fpi`` (1) (each looked up in ``soil``, then in
        ``climate``).  Missing: sand 40 % and no bedrock within the 8.6 m
        column (:data:`DEFAULTS`); every default used is recorded in the ``comment`` of the
        variable it affects and in the dataset's ``forcing_assumptions`` and ``history``.
    npp : float or xarray.DataArray, keyword-only, optional
        Annual NPP: a number in g C m-2 yr-1, or a DataArray with ``units``.  Default: the
        Miami model (Lieth 1975, :func:`miami_npp`) from annual mean temperature and
        precipitation.
    tree_fraction : float or xarray.DataArray, keyword-only, optional
        Woody fraction of vegetation (1); sets the coarse woody debris share (25 % of litter
        at full tree cover) and the litter quality split.  Default:
        ``σ((P - 500) / 120) σ((T_warmest - 10) / 1.5)`` (forests need ~500 mm and a warmest
        month above 10 °C).
    fpi : float or xarray.DataArray, keyword-only, optional
        Fraction of potential N immobilisation (1), the same in every layer and month.
        Default: ``clip(0.35 + 0.6 σ((T - 5) / 6), 0.05, 1)`` with ``T`` the annual mean air
        temperature (°C).
    elevation : float or xarray.DataArray, keyword-only, optional
        Elevation (m), used by the oxygen scalar (saturated lowlands below ~400 m in humid
        climates).  Default: ``soil["elevation"]``, else ``climate["elevation"]``, else 2,000
        m (no lowland anoxia).
    latitude, temperature_scale, amplitude
        Passed to :func:`monthly_climate_from_bioclim` (bioclimatic or site inputs only).
    include_climate : bool, keyword-only, default False
        Also return the monthly ``tas``, ``pr`` and ``pet`` (Thornthwaite PET, mm month-1)
        the forcing was made from.

    Returns
    -------
    xarray.Dataset
        The kernel forcing (:data:`FORCING_VARIABLES`, names and units of
        :data:`~xproda.models.forcing.FORCING_SCHEMA`): ``TSOI``, ``W_SCALAR``,
        ``O_SCALAR``, ``FPI_vr`` with dims ``(month, layer, <spatial>)`` (float32, as in CLM
        history files); ``ALTMAX``, ``ALTMAX_LASTYEAR``, ``nbedrock``, ``NPP``,
        ``CWD_INPUT``, ``LITR1_INPUT`` .. ``LITR3_INPUT`` with ``(month, <spatial>)``;
        ``CELLSAND`` with ``(layer, <spatial>)``; coordinates ``month``, ``layer``, ``depth``
        and the input's spatial coordinates and CRS.  Accepted by
        :func:`xproda.xr.api.steady_state` (``ds.proda.steady_state``) and
        :func:`xproda.train_network` (``forcing=``).

    Raises
    ------
    xproda.errors.InputError
        Missing climate inputs (the message lists the accepted variables with their units
        and the variables found); options that do not apply (``amplitude`` or
        ``temperature_scale`` with monthly ``tas``/``pr``); no latitude.
    xproda.errors.UnitsError
        Units that cannot be read, or of another physical dimension than the canonical
        units, or missing where :data:`CLIMATE_SCHEMA` requires them (the message names the
        variable and the expected units).
    xproda.errors.DimensionError
        A ``month`` dim that is not 12 long; a reserved dim on an input (``month`` on an
        annual value, ``time``, ``layer``, ``depth``).
    xproda.errors.GridError
        Inputs on grids that do not match.
    xproda.errors.RangeError
        Values outside the plausible range of :data:`CLIMATE_SCHEMA` (undecoded fill values,
        wrong or mislabelled units), naming the variable, the values found and the range:
        at once for numpy input, at compute time for dask input.

    All of these are ``ValueError`` subclasses.
    TypeError
        ``climate``, ``soil`` or a field of the wrong type.

    Examples
    --------
    >>> import xarray as xr
    >>> from xproda.climate import from_climate
    >>> yx = ("lat", "lon")
    >>> clim = xr.Dataset({"bio4": (yx, [[900.0]]), "bio11": (yx, [[-4.0]]),
    ...                    "bio12": (yx, [[650.0]])}, coords={"lat": [48.0], "lon": [11.0]})
    >>> soil = xr.Dataset({"depth_to_bedrock": (yx, [[120.0]], {"units": "cm"})})
    >>> f = from_climate(clim, soil=soil)
    >>> f["TSOI"].dims, f["TSOI"].attrs["units"], int(f["nbedrock"][0, 0, 0])
    (('month', 'layer', 'lat', 'lon'), 'K', 9)
    >>> f.attrs["history"].splitlines()[0].split(": ", 1)[1]  # after the timestamp
    "from_climate: depth_to_bedrock: converted from 'cm' to 'm' (x 0.01)"
    """
    ds = _as_dataset(climate, "climate")
    soil_ds = None if soil is None else _as_dataset(soil, "soil")
    inputs = _Inputs(ds, soil_ds, temperature_scale=_temperature_scale(temperature_scale))
    notes: list[str] = []
    comments: dict[str, str] = {}
    have = {str(k) for k in ds.data_vars}
    if {"tas", "pr"} & have:
        missing = [f"{k} ({u})" for k, u in (("tas", "°C"), ("pr", "mm month-1"))
                   if k not in have]
        if missing:
            raise InputError(f"climate: monthly climate needs both tas (°C) and pr "
                             f"(mm month-1) with a month dim; missing {', '.join(missing)}")
        if amplitude is not None or temperature_scale != 1.0:
            raise InputError("amplitude and temperature_scale apply to bioclimatic or site "
                             "inputs only, not to monthly tas/pr")
        tas, pr = inputs["tas"], inputs["pr"]
        notes.append("monthly climate given (tas, pr)")
    elif (set(_BIOCLIM_NAMES) | {"maat", "map"}) & have:
        tas, pr, how = _reconstruct(inputs, _latitude(ds, latitude), amplitude)
        notes.append("monthly climate reconstructed: " + "; ".join(how))
    else:
        raise InputError(
            "climate: expected monthly tas (°C) and pr (mm month-1) with a 'month' dim, or "
            "bioclimatic variables bio1..bio19 (°C, mm; e.g. bio4 + bio11 + bio12), or site "
            f"values maat (°C) and map (mm); found variables {sorted(have)}"
        )
    tas = tas.drop_vars([c for c in tas.coords if c != "month" and c not in tas.dims])
    pr = pr.drop_vars([c for c in pr.coords if c != "month" and c not in pr.dims])
    if tas.chunks is not None or pr.chunks is not None:
        tas, pr = tas.chunk({"month": -1}), pr.chunk({"month": -1})
    pet, t_mean, p_ann, t_warm, pet_ann = xr.apply_ufunc(
        _annual_block, tas, pr, input_core_dims=[["month"], ["month"]],
        output_core_dims=[["month"], [], [], [], []], dask="parallelized",
        output_dtypes=[np.float64] * 5,
    )
    # -- column state: given > a variable of soil/climate > default (recorded) ------------------
    state: dict[str, xr.DataArray] = {}

    def field(key: str, value: Any, names: tuple[str, ...],
              default: Callable[[], xr.DataArray], var: str, note: str) -> None:
        found = inputs.first(names)
        if value is not None:
            state[key] = inputs.given(value, names[0])
        elif found is not None:
            state[key] = inputs[found]
        else:
            state[key] = default()
            comments[var] = note
            notes.append(note)

    field("npp_annual", npp, ("npp", "npp_annual"), lambda: miami_npp(t_mean, p_ann),
          "NPP", "NPP from the Miami model (Lieth 1975) of annual temperature and precipitation")
    field("tree_fraction", tree_fraction, ("tree_fraction",),
          lambda: _tree_fraction_rule(p_ann, t_warm), "CWD_INPUT",
          "tree fraction from climate: sigmoid((P - 500) / 120) sigmoid((T_warmest - 10) / 1.5)")
    field("fpi", fpi, ("fpi",), lambda: _fpi_rule(t_mean), "FPI_vr",
          "FPI from climate: clip(0.35 + 0.6 sigmoid((T - 5) / 6), 0.05, 1)")
    state["aridity_index"] = _aridity_index(p_ann, pet_ann)
    field("elevation", elevation, ("elevation",),
          lambda: xr.DataArray(DEFAULTS["elevation"]), "O_SCALAR",
          f"no elevation given: {DEFAULTS['elevation']:g} m assumed (no lowland anoxia)")
    field("depth_to_bedrock", None, ("depth_to_bedrock",),
          lambda: xr.DataArray(DEFAULTS["depth_to_bedrock"]), "nbedrock",
          f"no depth to bedrock given: {DEFAULTS['depth_to_bedrock']:g} m assumed (no bedrock "
          "within the soil column)")
    state.update(_sand(inputs, comments, notes))
    # -- one grid ---------------------------------------------------------------------------------
    named = {"tas": tas, "pr": pr, "pet": pet}
    named.update({k: v.drop_vars([c for c in v.coords if c not in v.dims])
                  for k, v in state.items()})
    try:
        aligned = xr.align(*named.values(), join="exact")
    except ValueError as err:
        raise GridError(
            "from_climate: the climate and soil inputs (and npp/tree_fraction/fpi/elevation) "
            f"must share the same grid coordinates: {err}"
        ) from err
    forcing = _forcing_dataset(xr.Dataset(dict(zip(named, aligned))), block=_broadcast_block)
    # -- metadata (from the registry; input attrs never reach the output) -------------------------
    for name, text in comments.items():
        forcing[name].attrs["comment"] = text
    if include_climate:
        for k, v in (("tas", tas), ("pr", pr), ("pet", pet)):
            forcing[k] = _annotated(v.transpose("month", ...), k)
    keep = {k: v for k, v in ds.coords.items()
            if k != "month" and set(v.dims) <= set(forcing.dims) | {"bnds", "nv", "bounds"}}
    forcing = forcing.assign_coords(keep).assign_coords(month=_month_coord())
    forcing = forcing.assign_coords(conventions.layer_coords())
    if "spatial_ref" in forcing.coords:
        for v in forcing.data_vars.values():
            v.encoding["grid_mapping"] = "spatial_ref"
    forcing.attrs = {
        "Conventions": conventions.CF_CONVENTIONS,
        "title": "CLM5-style soil-carbon forcing built from climate covariates",
        "source": "xproda.climate.from_climate: analytic soil temperature, CLM5 active layer, "
                  "Thornthwaite water balance, Miami-model litter inputs",
        "references": "docs/user-guide/forcing-from-climate.md",
        "forcing_assumptions": "; ".join(notes),
        "history": _history("from_climate", inputs.log, "; ".join(notes)),
    }
    return forcing


def _sand(inputs: _Inputs, comments: dict[str, str], notes: list[str]) -> dict[str, Any]:
    """Sand content (%) at 0, 30 and 100 cm: the three layers, one ``sand``, or the default."""
    present = [k for k in _SAND_LAYERS if k in inputs]
    if len(present) == len(_SAND_LAYERS):
        return {k: inputs[k] for k in _SAND_LAYERS}
    if present:
        raise InputError(f"soil: give all of {list(_SAND_LAYERS)} (%) or a single 'sand' (%); "
                         f"found {present}")
    if "sand" in inputs:
        comments["CELLSAND"] = "one sand content used at every depth"
        return dict.fromkeys(_SAND_LAYERS, inputs["sand"])
    comments["CELLSAND"] = f"no sand content given: {DEFAULTS['sand']:g} % assumed"
    notes.append(comments["CELLSAND"])
    return dict.fromkeys(_SAND_LAYERS, xr.DataArray(DEFAULTS["sand"]))
