"""The synthetic world: covariates, monthly climate and CLM5-style forcing on a global grid.

See :func:`synthetic_world` and ``docs/user-guide/synthetic-world.md`` for the formulas and
their sources.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import xarray as xr

from .. import conventions, grid
from ..models.forcing import DAYS_PER_YEAR, FORCING_SCHEMA, KELVIN
from . import _fields

__all__ = ["synthetic_world", "COVARIATES", "CLIMATE_VARIABLES", "FORCING_VARIABLES"]

#: seconds per (365-day) year
_SECONDS_PER_YEAR = DAYS_PER_YEAR * 86400.0
#: the layered forcing is stored in float32, as in CLM history files (halves the memory)
_LAYERED_DTYPE = np.float32
#: cells south of this latitude (Antarctica) carry no soil column
_SOUTH_LIMIT = -60.0
#: a cell is modelled when at least this fraction of it is land
_MIN_LAND_FRACTION = 0.5
#: geothermal gradient (K m-1) of the soil temperature profile
_GEOTHERMAL_GRADIENT = 0.025
#: carbon fraction of dry matter used to turn Miami-model NPP into carbon
_CARBON_FRACTION = 0.45


def _cov(units: str, long_name: str, group: str, **extra: Any) -> dict[str, Any]:
    return {"units": units, "long_name": long_name, "covariate_group": group, **extra}


_T = {"standard_name": "air_temperature"}
_P = {"standard_name": "lwe_thickness_of_precipitation_amount"}
#: covariates of the synthetic world (name -> CF attributes incl. ``covariate_group``), in the
#: spirit of PRODA's 60 network inputs (spec §7.1); groups as in its permutation test
COVARIATES: dict[str, dict[str, Any]] = {
    "geo_lon": _cov("degrees_east", "longitude of the cell centre (as a covariate)", "geography"),
    "geo_lat": _cov("degrees_north", "latitude of the cell centre (as a covariate)", "geography"),
    "elevation": _cov("m", "surface elevation above sea level", "geography",
                      standard_name="surface_altitude"),
    "distance_to_coast": _cov("km", "great-circle distance to the nearest ocean cell",
                              "geography"),
    "depth_to_bedrock": _cov("m", "absolute depth to bedrock", "geography"),
    "land_cover": _cov("1", "land cover class", "vegetation",
                       flag_values=[1, 2, 3, 4, 5, 6],
                       flag_meanings="tropical_forest temperate_forest boreal_forest "
                                     "grassland_shrubland bare_desert tundra"),
    "tree_fraction": _cov("1", "woody (tree) fraction of vegetation", "vegetation"),
    "npp_annual": _cov("g m-2 yr-1", "annual net primary production (carbon), Miami model",
                       "vegetation"),
    "bio1": _cov("degC", "BIO1 annual mean temperature", "climate", **_T),
    "bio2": _cov("K", "BIO2 mean diurnal range (monthly tmax - tmin)", "climate"),
    "bio3": _cov("%", "BIO3 isothermality (100 BIO2 / BIO7)", "climate"),
    "bio4": _cov("cK", "BIO4 temperature seasonality (100 x standard deviation of the "
                       "monthly means)", "climate"),
    "bio5": _cov("degC", "BIO5 max temperature of the warmest month", "climate", **_T),
    "bio6": _cov("degC", "BIO6 min temperature of the coldest month", "climate", **_T),
    "bio7": _cov("K", "BIO7 temperature annual range (BIO5 - BIO6)", "climate"),
    "bio8": _cov("degC", "BIO8 mean temperature of the wettest quarter", "climate", **_T),
    "bio9": _cov("degC", "BIO9 mean temperature of the driest quarter", "climate", **_T),
    "bio10": _cov("degC", "BIO10 mean temperature of the warmest quarter", "climate", **_T),
    "bio11": _cov("degC", "BIO11 mean temperature of the coldest quarter", "climate", **_T),
    "bio12": _cov("mm", "BIO12 annual precipitation", "climate", **_P),
    "bio13": _cov("mm", "BIO13 precipitation of the wettest month", "climate", **_P),
    "bio14": _cov("mm", "BIO14 precipitation of the driest month", "climate", **_P),
    "bio15": _cov("%", "BIO15 precipitation seasonality (coefficient of variation)", "climate"),
    "bio16": _cov("mm", "BIO16 precipitation of the wettest quarter", "climate", **_P),
    "bio17": _cov("mm", "BIO17 precipitation of the driest quarter", "climate", **_P),
    "bio18": _cov("mm", "BIO18 precipitation of the warmest quarter", "climate", **_P),
    "bio19": _cov("mm", "BIO19 precipitation of the coldest quarter", "climate", **_P),
    "aridity_index": _cov("1", "aridity index: annual precipitation / potential "
                               "evapotranspiration (Thornthwaite), capped at 10", "climate"),
}
for _d in (0, 30, 100):
    COVARIATES.update({
        f"clay_{_d}cm": _cov("%", f"clay content (mass) at {_d} cm", "soil texture"),
        f"sand_{_d}cm": _cov("%", f"sand content (mass) at {_d} cm", "soil texture"),
        f"silt_{_d}cm": _cov("%", f"silt content (mass) at {_d} cm", "soil texture"),
        f"bulk_density_{_d}cm": _cov("g cm-3", f"bulk density of the fine earth at {_d} cm",
                                     "soil texture"),
        f"ph_{_d}cm": _cov("1", f"soil pH in water at {_d} cm", "soil chemistry"),
        f"cec_{_d}cm": _cov("cmol kg-1", f"cation exchange capacity at {_d} cm",
                            "soil chemistry"),
    })
del _d

#: monthly climate of the world (dims month, lat, lon)
CLIMATE_VARIABLES: dict[str, dict[str, Any]] = {
    "tas": {"units": "degC", "long_name": "monthly mean near-surface air temperature",
            "standard_name": "air_temperature", "cell_methods": "time: mean"},
    "pr": {"units": "mm month-1", "long_name": "monthly precipitation",
           "standard_name": "lwe_precipitation_rate"},
    "pet": {"units": "mm month-1",
            "long_name": "monthly potential evapotranspiration (Thornthwaite 1948)"},
}

#: forcing variables written (all of the kernel schema except CLM's per-layer inputs)
FORCING_VARIABLES: tuple[str, ...] = (
    "TSOI", "W_SCALAR", "O_SCALAR", "FPI_vr", "ALTMAX", "ALTMAX_LASTYEAR", "nbedrock", "NPP",
    "CELLSAND", "CWD_INPUT", "LITR1_INPUT", "LITR2_INPUT", "LITR3_INPUT",
)
_FORCING_STANDARD_NAMES = {
    "TSOI": "soil_temperature",
    "NPP": "net_primary_productivity_of_biomass_expressed_as_carbon",
}


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


def _climate_and_soils(la, lo, dist, seed):
    """Covariates (1-D per land cell) and monthly climate ``[n, 12]`` of the land cells."""

    def g(name, length_km):
        return _fields.smooth_field(la, lo, seed=seed, name=name, length_km=length_km)

    alat = np.abs(la)
    s = np.sin(np.deg2rad(alat))
    cont = 1.0 - np.exp(-dist / 600.0)
    # -- geography -------------------------------------------------------------------------
    relief = 0.7 * g("elevation", 1500.0) + 0.7 * g("elevation_local", 400.0)
    elev = 50.0 + 500.0 * cont + 4500.0 * np.tanh(0.2 * np.maximum(relief, 0.0) ** 2)
    # -- temperature -----------------------------------------------------------------------
    t_mean = (27.0 - 0.0075 * la**2 - 4.0 * cont * s**2 - 0.0065 * elev
              + 1.5 * g("temperature", 1500.0))
    amp = (1.0 + 26.0 * s**1.2 * (0.55 + 0.45 * cont)) * np.exp(0.1 * g("seasonality", 1500.0))
    peak = np.where(la >= 0, 7.0, 1.0)  # month of the temperature (and rain) maximum
    phase = 2.0 * np.pi * (_MONTH[None, :] - peak[:, None]) / 12.0
    tas = t_mean[:, None] + amp[:, None] * np.cos(phase)
    # -- precipitation ---------------------------------------------------------------------
    p_zonal = (250.0 + 2100.0 * np.exp(-((la / 11.0) ** 2))
               + 850.0 * np.exp(-(((alat - 52.0) / 14.0) ** 2)))
    p_ann = (p_zonal * (0.3 + 0.7 * np.exp(-dist / 1500.0)) * (1.0 + 0.2 * elev / 1000.0)
             * np.exp(0.4 * g("precipitation", 1000.0)))
    cv = np.clip(0.15 + 0.75 * np.exp(-(((alat - 14.0) / 9.0) ** 2)) + 0.25 * cont
                 + 0.1 * g("precipitation_seasonality", 1500.0), 0.05, 1.3)
    w = np.maximum(1.0 + np.sqrt(2.0) * cv[:, None] * np.cos(phase), 0.0)
    pr = p_ann[:, None] * w / w.sum(-1, keepdims=True)
    pet = thornthwaite_pet(tas)
    ai = np.clip(p_ann / np.maximum(pet.sum(-1), 1.0), 0.0, 10.0)
    dtr = 6.0 + 9.0 * np.exp(-1.5 * ai)
    cov = bioclim(tas, pr, dtr)
    cov.update(geo_lat=la.copy(), geo_lon=lo.copy(), elevation=elev, distance_to_coast=dist,
               aridity_index=ai)
    # -- vegetation ------------------------------------------------------------------------
    cov["npp_annual"] = miami_npp(cov["bio1"], cov["bio12"])
    warmest = tas.max(-1)
    ftree = _sigmoid((cov["bio12"] - 500.0) / 120.0) * _sigmoid((warmest - 10.0) / 1.5)
    cov["tree_fraction"] = ftree
    lc = np.full(la.shape, 4.0)  # grassland / shrubland
    forest = ftree >= 0.5
    lc[forest] = 3.0
    lc[forest & (cov["bio11"] > -3.0)] = 2.0
    lc[forest & (tas.min(-1) >= 18.0)] = 1.0
    lc[~forest & (cov["bio12"] < 200.0)] = 5.0
    lc[warmest < 10.0] = 6.0
    cov["land_cover"] = lc
    # -- soils -----------------------------------------------------------------------------
    warm = _sigmoid((cov["bio1"] - 15.0) / 5.0)
    wet = np.clip(ai, 0.0, 3.0) / 3.0
    g_clay, g_sand, g_silt = g("clay", 800.0), g("sand", 800.0), g("silt", 800.0)
    g_bd, g_ph, g_cec = g("bulk_density", 500.0), g("ph", 800.0), g("cec", 500.0)
    for k, d in enumerate((0, 30, 100)):
        logits = np.stack([
            1.2 * warm * wet + 0.5 * g_clay + (0.0, 0.25, 0.45)[k],
            0.4 + 1.2 * (1.0 - np.minimum(ai, 1.0)) + 0.5 * g_sand - (0.0, 0.1, 0.15)[k],
            0.3 + 0.4 * g_silt,
        ])
        frac = np.exp(logits - logits.max(0))
        clay, sand, silt = 100.0 * frac / frac.sum(0)
        cov[f"clay_{d}cm"], cov[f"sand_{d}cm"], cov[f"silt_{d}cm"] = clay, sand, silt
        cov[f"bulk_density_{d}cm"] = np.clip(
            1.05 + 0.0045 * sand - 0.002 * clay + (0.0, 0.12, 0.2)[k] + 0.05 * g_bd, 0.7, 1.85)
        ph = 4.6 + 3.4 / (1.0 + (ai / 0.7) ** 2) + 0.35 * g_ph + (0.0, 0.15, 0.3)[k]
        cov[f"ph_{d}cm"] = np.clip(ph, 3.5, 9.5)
        cov[f"cec_{d}cm"] = np.maximum(
            2.0 + 0.5 * clay * (1.0 + 0.5 * (1.0 - warm)) + 1.5 * g_cec, 1.0)
    cov["depth_to_bedrock"] = np.clip(
        5.0 * np.exp(0.9 * g("bedrock", 600.0) - 0.8 * elev / 1000.0), 0.2, 100.0)
    fpi = np.clip(0.35 + 0.6 * _sigmoid((cov["bio1"] - 5.0) / 6.0) + 0.05 * g("fpi", 800.0),
                  0.05, 1.0)
    return cov, {"tas": tas, "pr": pr, "pet": pet}, fpi


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

    Every output of a column depends on that column's inputs only.  Formulas: see the module
    docs page ``docs/user-guide/synthetic-world.md``.

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


def _forcing_dataset(ds: xr.Dataset) -> xr.Dataset:
    args = [ds["tas"], ds["pr"], ds["pet"]] + [ds[k] for k in _STATE_2D]
    args = [a.drop_vars([c for c in a.coords if c not in a.dims]) for a in args]
    outs = xr.apply_ufunc(
        _forcing_block, *args,
        input_core_dims=[["month"]] * 3 + [[]] * len(_STATE_2D),
        output_core_dims=[list(_core(k)) for k in FORCING_VARIABLES],
        dask="parallelized",
        output_dtypes=[_LAYERED_DTYPE if len(_core(k)) == 2 else np.float64
                       for k in FORCING_VARIABLES],
        dask_gufunc_kwargs={"output_sizes": {"layer": grid.N_LAYERS}},
    )
    out = xr.Dataset()
    for name, da in zip(FORCING_VARIABLES, outs):
        attrs = conventions.forcing_attrs(name)
        if name in _FORCING_STANDARD_NAMES:
            attrs["standard_name"] = _FORCING_STANDARD_NAMES[name]
        out[name] = da.transpose(*_core(name), "lat", "lon").assign_attrs(attrs)
    return out


# -------------------------------------------------------------------------------------------
# public
# -------------------------------------------------------------------------------------------
def _chunk_spec(chunks: Any) -> dict[str, Any] | None:
    if chunks is None:
        return None
    if isinstance(chunks, (int, np.integer)) and not isinstance(chunks, bool) and chunks > 0:
        return {"lat": int(chunks), "lon": int(chunks)}
    if chunks == "auto":
        return {"lat": "auto", "lon": "auto"}
    if isinstance(chunks, Mapping):
        unknown = set(chunks) - {"lat", "lon", "month", "layer"}
        if unknown:
            raise ValueError(
                f"chunks: expected keys among 'lat', 'lon' (month and layer stay whole), got "
                f"{sorted(map(str, unknown))}"
            )
        return {k: v for k, v in chunks.items() if k in ("lat", "lon")}
    raise TypeError(
        "chunks must be None, a positive int, 'auto' or a mapping like {'lat': 45, 'lon': 90}; "
        f"got {chunks!r}"
    )


def synthetic_world(
    resolution: float = 2.0,
    *,
    seed: int = 0,
    chunks: int | str | Mapping[str, Any] | None = None,
    model: str = "clm5",
) -> xr.Dataset:
    """A synthetic global world: covariates, monthly climate and CLM5-style forcing.

    The world is a deterministic function of ``seed`` (and ``resolution``): a real land mask
    (``global-land-mask``, GLOBE 1 km), a latitude/continentality/elevation-driven climate with
    smooth random spatial heterogeneity, soils and vegetation derived from it, and the forcing
    the process models need (soil temperature from the analytic heat-conduction solution, CLM5
    active layer, water/oxygen/nitrogen scalars, bedrock, Miami-model litter inputs).  Every
    formula and its source: ``docs/user-guide/synthetic-world.md``.

    Parameters
    ----------
    resolution : float, default 2.0
        Cell size in degrees (180 / resolution must be an integer): 2° has 90 x 180 cells
        (~4,000 land columns), 0.5° 360 x 720 (~61,000).
    seed : int, keyword-only, default 0
        Seed of the random fields (climate anomalies, relief, soils).
    chunks : int, "auto" or mapping, keyword-only, optional
        Dask chunks of ``lat``/``lon`` (``month`` and ``layer`` stay whole).  The covariates
        are computed with numpy and then chunked; the forcing is computed lazily per chunk
        from them.  Values never depend on the chunking.  Default: numpy-backed.
    model : {"clm5", "microbial"}, keyword-only
        Model whose forcing requirements are checked (both need the same variables).

    Returns
    -------
    xarray.Dataset
        Dims ``lat`` (north to south), ``lon`` (-180..180), ``month`` (12), ``layer`` (20) with
        coordinates ``lat_bnds``/``lon_bnds``, ``depth``/``depth_bounds`` and ``spatial_ref``
        (EPSG:4326).  Variables: ``landfrac`` (land area fraction, 0..1) and ``landmask``
        (1 where a soil column is modelled: land fraction >= 0.5, north of 60° S and not an
        ice-cap climate, i.e. warmest month >= 0 °C); the
        covariates of :data:`COVARIATES`; the monthly climate ``tas``, ``pr``, ``pet``; the
        forcing of :data:`FORCING_VARIABLES` (layered variables in float32).  Covariates,
        climate and forcing are NaN outside ``landmask``.

    Raises
    ------
    ValueError
        Bad ``resolution`` or ``chunks``, unknown ``model``.

    Examples
    --------
    >>> from xproda.datasets import synthetic_world
    >>> world = synthetic_world(10.0)
    >>> world["TSOI"].dims, world["TSOI"].attrs["units"]
    (('month', 'layer', 'lat', 'lon'), 'K')
    >>> world.proda.validate(model="clm5")
    []
    """
    from ..models import get_model
    from ..spatial import ensure_crs

    m = get_model(model)  # raises on an unknown model, naming the choices
    _fields.check_seed(seed)
    spec = _chunk_spec(chunks)
    lat, lon = _fields.regular_grid(resolution)
    res = float(resolution)
    landfrac = np.asarray(_fields.land_fraction(res))
    la2, lo2 = np.meshgrid(lat, lon, indexing="ij")
    soil = (landfrac >= _MIN_LAND_FRACTION) & (la2 >= _SOUTH_LIMIT)
    dist = _fields.distance_to_ocean(lat, lon, landfrac < _MIN_LAND_FRACTION)
    cov, clim, fpi = _climate_and_soils(la2[soil], lo2[soil], dist[soil], int(seed))
    # ice-cap climate (Koppen EF: warmest month below 0 degC) carries no soil column
    keep = clim["tas"].max(-1) >= 0.0
    soil[soil] = keep
    cov = {k: v[keep] for k, v in cov.items()}
    clim = {k: v[keep] for k, v in clim.items()}
    fpi = fpi[keep]

    def grid2d(v):
        out = np.full(soil.shape, np.nan)
        out[soil] = v
        return out

    def grid3d(v):
        out = np.full((12,) + soil.shape, np.nan)
        out[:, soil] = v.T
        return out

    data_vars: dict[str, Any] = {
        "landfrac": (("lat", "lon"), landfrac.copy(), {
            "units": "1", "standard_name": "land_area_fraction",
            "long_name": "land fraction of the cell (global-land-mask, GLOBE 1 km)"}),
        "landmask": (("lat", "lon"), soil.astype(np.int8), {
            "units": "1", "long_name": "cells with a modelled soil column",
            "flag_values": [0, 1], "flag_meanings": "no_soil_column soil_column"}),
    }
    for k, attrs in COVARIATES.items():
        data_vars[k] = (("lat", "lon"), grid2d(cov[k]), dict(attrs))
    for k, attrs in CLIMATE_VARIABLES.items():
        data_vars[k] = (("month", "lat", "lon"), grid3d(clim[k]), dict(attrs))
    data_vars["fpi"] = (("lat", "lon"), grid2d(fpi), {
        "units": "1", "long_name": "fraction of potential N immobilisation (column value)"})
    ds = xr.Dataset(data_vars, coords=_coords(lat, lon, res))
    if spec is not None:
        ds = ds.chunk({**spec, "month": -1})
    forcing = _forcing_dataset(ds)
    ds = ds.drop_vars("fpi").merge(forcing).assign_coords(conventions.layer_coords())
    # the CRS coordinate is made on the coordinates alone (rioxarray copies whatever it writes to)
    ref = ensure_crs(xr.Dataset(coords={"lat": ds["lat"], "lon": ds["lon"]}), crs="EPSG:4326")
    ds = ds.assign_coords(spatial_ref=ref["spatial_ref"])
    for v in ds.data_vars.values():
        v.encoding["grid_mapping"] = "spatial_ref"
    ds.attrs = {
        "Conventions": conventions.CF_CONVENTIONS,
        "title": f"xproda synthetic world ({res:g} degree, seed {int(seed)})",
        "source": "xproda.datasets.synthetic_world: analytic climate, soils and CLM5-style "
                  "forcing on the global-land-mask land mask",
        "references": "docs/user-guide/synthetic-world.md",
        "history": conventions.history_line(
            f"synthetic_world(resolution={res:g}, seed={int(seed)}, model={m.name!r})"),
        "seed": int(seed),
        "resolution": res,
        "model": m.name,
    }
    return ds


def _coords(lat: np.ndarray, lon: np.ndarray, res: float) -> dict[str, Any]:
    return {
        "lat": ("lat", lat, {"standard_name": "latitude", "long_name": "latitude",
                             "units": "degrees_north", "axis": "Y", "bounds": "lat_bnds"}),
        "lon": ("lon", lon, {"standard_name": "longitude", "long_name": "longitude",
                             "units": "degrees_east", "axis": "X", "bounds": "lon_bnds"}),
        "lat_bnds": (("lat", "bnds"), np.stack([lat + res / 2, lat - res / 2], -1),
                     {"units": "degrees_north"}),
        "lon_bnds": (("lon", "bnds"), np.stack([lon - res / 2, lon + res / 2], -1),
                     {"units": "degrees_east"}),
        "month": ("month", np.arange(1, 13), {"long_name": "month of the year", "units": "1"}),
    }
