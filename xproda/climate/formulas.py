"""Climate formulas: per-cell numpy functions of monthly or annual climate.

Thornthwaite PET (:func:`thornthwaite_pet`), the 19 WorldClim bioclimatic variables
(:func:`bioclim`), Miami-model NPP (:func:`miami_npp`), the vegetation and nitrogen rules of
the forcing (:func:`tree_fraction_rule`, :func:`fpi_rule`, :func:`aridity_index`) and the
CLM5 active layer thickness (:func:`active_layer_thickness`).  Monthly arrays are ``[..., 12]``,
January first.  They make the forcing of :func:`xproda.climate.from_climate` and of the
synthetic world (:func:`xproda.datasets.synthetic_world`).

Examples
--------
>>> import numpy as np
>>> tas = np.array([[-5.0, -3, 2, 8, 13, 17, 19, 18, 14, 8, 2, -3]])
>>> thornthwaite_pet(tas).round(1)[0, :4]
array([ 0. ,  0. ,  9.1, 38.6])
>>> round(float(miami_npp(np.array(10.0), np.array(800.0))), 1)
556.3
"""

from __future__ import annotations

from typing import Any

import numpy as np

from xproda.models.forcing import KELVIN

__all__ = [
    "MONTHS", "PEAK_MONTH_NORTH", "PEAK_MONTH_SOUTH", "active_layer_thickness",
    "aridity_index", "bioclim", "clip", "fpi_rule", "miami_npp", "sigmoid", "thornthwaite_pet",
    "tree_fraction_rule",
]

#: carbon fraction of dry matter used to turn Miami-model NPP into carbon
_CARBON_FRACTION = 0.45
#: month numbers 1..12 (float64), January first
MONTHS = np.arange(1, 13, dtype=np.float64)
#: month of the temperature maximum in the northern hemisphere (July)
PEAK_MONTH_NORTH = 7.0
#: month of the temperature maximum in the southern hemisphere (January)
PEAK_MONTH_SOUTH = 1.0


def sigmoid(x):
    """Logistic function ``1 / (1 + exp(-x))``.

    Parameters
    ----------
    x : array-like
        numpy, xarray or dask values (ufuncs only, so lazy values stay lazy).

    Returns
    -------
    array-like
        Same type and shape as ``x``, in (0, 1).
    """
    return 1.0 / (1.0 + np.exp(-x))


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


def clip(x: Any, lo: float, hi: float) -> Any:
    """``np.clip`` with ufuncs only, so lazy xarray/dask arrays stay lazy (same values).

    Parameters
    ----------
    x : array-like
        numpy, xarray or dask values.
    lo, hi : float
        Bounds.

    Returns
    -------
    array-like
        ``min(max(x, lo), hi)``, of the type of ``x``.
    """
    return np.minimum(np.maximum(x, lo), hi)


def tree_fraction_rule(p_ann: Any, t_warmest: Any) -> Any:
    """Woody fraction (1) from annual precipitation (mm) and warmest-month temperature (°C).

    ``σ((P - 500) / 120) σ((T_warmest - 10) / 1.5)``: forests need ~500 mm and a warmest month
    above the 10 °C tree line (Köppen).

    Parameters
    ----------
    p_ann : array-like
        Annual precipitation (mm).
    t_warmest : array-like
        Mean temperature of the warmest month (°C).

    Returns
    -------
    array-like
        Tree fraction in (0, 1), lazy for lazy input.
    """
    return sigmoid((p_ann - 500.0) / 120.0) * sigmoid((t_warmest - 10.0) / 1.5)


def fpi_rule(t_mean: Any, anomaly: Any = 0.0) -> Any:
    """Fraction of potential N immobilisation (1) from annual mean air temperature (°C).

    ``clip(0.35 + 0.6 σ((T - 5) / 6) + 0.05 anomaly, 0.05, 1)``: stronger N limitation in
    cold soils (the synthetic world adds a random ``anomaly``).

    Parameters
    ----------
    t_mean : array-like
        Annual mean air temperature (°C).
    anomaly : array-like, default 0
        Additive anomaly (1), scaled by 0.05.

    Returns
    -------
    array-like
        FPI in [0.05, 1], lazy for lazy input.
    """
    return clip(0.35 + 0.6 * sigmoid((t_mean - 5.0) / 6.0) + 0.05 * anomaly, 0.05, 1.0)


def aridity_index(p_ann: Any, pet_ann: Any) -> Any:
    """Aridity index (1): annual precipitation / PET (mm / mm, PET at least 1 mm), capped at 10.

    Parameters
    ----------
    p_ann, pet_ann : array-like
        Annual precipitation and potential evapotranspiration (mm).

    Returns
    -------
    array-like
        Aridity index in [0, 10], lazy for lazy input.
    """
    return clip(p_ann / np.maximum(pet_ann, 1.0), 0.0, 10.0)


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
