"""Kernel forcing from climate and soil covariates, for users without CLM5 history output.

:func:`from_climate` builds the CLM5-style forcing of the process models (``TSOI``,
``W_SCALAR``, ``O_SCALAR``, ``FPI_vr``, ``ALTMAX``, ``ALTMAX_LASTYEAR``, ``nbedrock``, ``NPP``,
``CELLSAND`` and the column-total litter inputs) from a monthly climatology (``tas``, ``pr``),
from WorldClim bioclimatic summaries (:func:`monthly_climate_from_bioclim`) or from site
values of mean annual air temperature and precipitation, plus optional soil covariates (sand
content, depth to bedrock, elevation) and NPP.  The same per-column functions
(:func:`column_forcing` and the helpers below) make the forcing of the synthetic world
(:func:`xproda.datasets.synthetic_world`).

Every formula, its source and its limits: ``docs/user-guide/forcing-from-climate.md`` and
``docs/user-guide/synthetic-world.md``.

Examples
--------
>>> import numpy as np, xarray as xr
>>> from xproda.climate import from_climate
>>> sites = xr.Dataset({"maat": ("site", [15.0, -8.0]), "map": ("site", [600.0, 300.0])},
...                    coords={"lat": ("site", [37.0, 68.0]), "lon": ("site", [-119.5, 133.0])})
>>> f = from_climate(sites)
>>> f["TSOI"].dims
('month', 'layer', 'site')
>>> f["ALTMAX_LASTYEAR"].isel(month=0).values.round(1)  # m: permafrost at the cold site
array([42. ,  3.9])
"""

from __future__ import annotations

import math
from typing import Any, Callable, Mapping

import numpy as np
import xarray as xr

from . import conventions, grid
from .models.forcing import DAYS_PER_YEAR, FORCING_SCHEMA, KELVIN

__all__ = [
    "from_climate", "monthly_climate_from_bioclim", "column_forcing", "active_layer_thickness",
    "thornthwaite_pet", "bioclim", "miami_npp", "FORCING_VARIABLES", "CLIMATE_VARIABLES",
    "DEFAULTS",
]

#: seconds per (365-day) year
_SECONDS_PER_YEAR = DAYS_PER_YEAR * 86400.0
#: the layered forcing is stored in float32, as in CLM history files (halves the memory)
_LAYERED_DTYPE = np.float32
#: geothermal gradient (K m-1) of the soil temperature profile
_GEOTHERMAL_GRADIENT = 0.025
#: carbon fraction of dry matter used to turn Miami-model NPP into carbon
_CARBON_FRACTION = 0.45

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
        attrs = conventions.forcing_attrs(name)
        if name in _FORCING_STANDARD_NAMES:
            attrs["standard_name"] = _FORCING_STANDARD_NAMES[name]
        out[name] = da.transpose(*_core(name), ...).assign_attrs(attrs)
    return out



# -------------------------------------------------------------------------------------------
# from climate covariates: inputs, units, defaults
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
#: plausible range of monthly mean air temperature (°C): values outside mean wrong units
_TAS_RANGE = (-90.0, 60.0)
#: month of the temperature maximum: July in the northern, January in the southern hemisphere
_PEAK_NORTH, _PEAK_SOUTH = 7.0, 1.0
_BIOCLIM_NAMES = tuple(f"bio{i}" for i in range(1, 20))

_DAYS_PER_MONTH = DAYS_PER_YEAR / 12.0
#: accepted units per kind of input: (expected units in words, {units: (factor, offset)});
#: converted value = value * factor + offset; missing ``units`` attrs mean the expected units
_UNITS: dict[str, tuple[str, dict[str, tuple[float, float]]]] = {
    "temperature": ("degC (or K)", {
        **dict.fromkeys(("degc", "deg_c", "celsius", "degrees_celsius", "degree_celsius", "c",
                         "degrees c", "deg c"), (1.0, 0.0)),
        **dict.fromkeys(("k", "kelvin", "degk", "deg_k"), (1.0, -KELVIN)),
    }),
    "monthly_precipitation": ("mm month-1 (or kg m-2 s-1, mm d-1)", {
        **dict.fromkeys(("mm month-1", "mm/month", "mm mon-1", "mm/mon", "mm", "kg m-2",
                         "kg m-2 month-1", "kg m-2 mon-1"), (1.0, 0.0)),
        **dict.fromkeys(("mm d-1", "mm day-1", "mm/day", "mm/d", "kg m-2 d-1",
                         "kg m-2 day-1"), (_DAYS_PER_MONTH, 0.0)),
        **dict.fromkeys(("kg m-2 s-1", "mm s-1", "mm/s"), (_DAYS_PER_MONTH * 86400.0, 0.0)),
        **dict.fromkeys(("cm month-1", "cm/month", "cm"), (10.0, 0.0)),
    }),
    "annual_precipitation": ("mm (per year; or cm, m)", {
        **dict.fromkeys(("mm", "mm yr-1", "mm year-1", "mm/yr", "mm/year", "mm a-1",
                         "kg m-2", "kg m-2 yr-1", "kg m-2 year-1"), (1.0, 0.0)),
        **dict.fromkeys(("cm", "cm yr-1", "cm year-1", "cm/yr", "cm/year"), (10.0, 0.0)),
        **dict.fromkeys(("m", "m yr-1", "m year-1", "m/yr"), (1000.0, 0.0)),
    }),
    "depth": ("m (or cm)", {
        **dict.fromkeys(("m", "meter", "meters", "metre", "metres"), (1.0, 0.0)),
        "cm": (0.01, 0.0), "mm": (0.001, 0.0),
    }),
    "elevation": ("m (or km)", {
        **dict.fromkeys(("m", "meter", "meters", "metre", "metres", "m asl"), (1.0, 0.0)),
        "km": (1000.0, 0.0),
    }),
    "percent": ("% (or a fraction '1', or g kg-1)", {
        **dict.fromkeys(("%", "percent", "pct"), (1.0, 0.0)),
        **dict.fromkeys(("1", "fraction", "kg kg-1", "g g-1"), (100.0, 0.0)),
        **dict.fromkeys(("g kg-1", "g/kg"), (0.1, 0.0)),
    }),
    "fraction": ("1 (or %)", {
        **dict.fromkeys(("1", "", "fraction", "dimensionless"), (1.0, 0.0)),
        **dict.fromkeys(("%", "percent"), (0.01, 0.0)),
    }),
    "npp": ("g C m-2 yr-1 (or kg C m-2 yr-1, g C m-2 s-1, kg C m-2 s-1)", {
        **dict.fromkeys(("g m-2 yr-1", "gc m-2 yr-1", "g c m-2 yr-1", "g m-2 year-1",
                         "gc m-2 year-1", "g c m-2 year-1", "g m-2 a-1", "g/m2/yr",
                         "gc/m2/yr"), (1.0, 0.0)),
        **dict.fromkeys(("kg m-2 yr-1", "kgc m-2 yr-1", "kg c m-2 yr-1", "kg m-2 year-1"),
                        (1000.0, 0.0)),
        **dict.fromkeys(("g m-2 s-1", "gc m-2 s-1", "g c m-2 s-1"), (_SECONDS_PER_YEAR, 0.0)),
        **dict.fromkeys(("kg m-2 s-1", "kgc m-2 s-1", "kg c m-2 s-1"),
                        (1000.0 * _SECONDS_PER_YEAR, 0.0)),
    }),
}


def _norm_units(units: Any) -> str:
    return " ".join(str(units).replace("°", "deg").replace("**", "").strip().lower().split())


def _convert(da: xr.DataArray, name: str, kind: str) -> xr.DataArray:
    """``da`` in the canonical units of ``kind`` (attrs dropped); error on unknown units."""
    expected, table = _UNITS[kind]
    units = da.attrs.get("units")
    if units is None:
        factor, offset = 1.0, 0.0
    else:
        key = _norm_units(units)
        if key not in table:
            raise ValueError(
                f"{name}: units {units!r} not understood; expected {expected} (accepted: "
                f"{', '.join(sorted({k for k in table if k}))})"
            )
        factor, offset = table[key]
    out = da.astype(np.float64) if da.dtype != np.float64 else da
    if factor != 1.0:
        out = out * factor
    if offset != 0.0:
        out = out + offset
    return _bare(out)


def _bare(da: xr.DataArray) -> xr.DataArray:
    """``da`` without attrs (input attrs never leak onto outputs)."""
    out = da.copy(deep=False)
    out.attrs = {}
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
                raise ValueError(
                    f"{what}[{k!r}]: expected a scalar or a 1-D array over sites (or an "
                    f"xarray object with named dims), got shape {a.shape}"
                )
            data[k] = (("site",) if a.ndim == 1 else (), a)
        return xr.Dataset(data)
    raise TypeError(f"{what} must be an xarray.Dataset or a mapping of arrays, got "
                    f"{type(obj).__name__}")


def _as_field(value: Any, name: str, kind: str) -> xr.DataArray:
    """A user-given field (DataArray, scalar or a variable of a Dataset) in canonical units."""
    if isinstance(value, xr.DataArray):
        da = value
    elif np.ndim(value) == 0:
        da = xr.DataArray(float(value))
    else:
        raise TypeError(f"{name} must be a number or an xarray.DataArray, got "
                        f"{type(value).__name__} of shape {np.shape(value)}")
    return _convert(da, name, kind)


def _latitude(ds: xr.Dataset, latitude: Any) -> xr.DataArray:
    """Latitude (degrees north) of the cells of ``ds`` (keyword, a variable, or coordinates)."""
    if latitude is not None:
        return latitude if isinstance(latitude, xr.DataArray) else xr.DataArray(
            np.asarray(latitude, dtype=np.float64),
            dims=() if np.ndim(latitude) == 0 else ("site",))
    for name in ("lat", "latitude", "Lat", "Latitude", "LAT", "LATITUDE"):
        if name in ds.variables:
            return ds[name]
    from .spatial import lat_lon

    try:
        return lat_lon(ds)[0]
    except ValueError as err:
        raise ValueError(
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
                        attrs={"long_name": "month of the year", "units": "1"})


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
        air temperature, °C or K per ``units``) and ``map`` (mean annual precipitation, mm;
        ``units`` "cm" or "m" are converted), on any grid (``lat``/``lon``, a ``site`` dim,
        ...).  A mapping of numpy arrays is taken as 1-D arrays over ``site``.  Needed: a
        mean-temperature source (``bio1``, ``maat``, ``bio11`` or ``bio10``) and ``bio12`` or
        ``map``.
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
        ``month`` = 1..12; the input's coordinates are kept.  ``attrs["reconstruction"]``
        says which sources and assumptions were used.

    Raises
    ------
    ValueError
        No source of the annual mean temperature or of the annual precipitation (the message
        lists what is accepted, with units, and what was found); bad ``temperature_scale``;
        units not understood; no latitude.

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
    if (isinstance(temperature_scale, bool) or not isinstance(temperature_scale, (int, float))
            or not math.isfinite(temperature_scale) or temperature_scale <= 0):
        raise ValueError(f"temperature_scale must be a positive number (1, or 10 for WorldClim "
                         f"1.x), got {temperature_scale!r}")
    s = float(temperature_scale)
    have = {str(k) for k in ds.data_vars}
    notes: list[str] = []

    def temp(name: str) -> xr.DataArray:  # an absolute or difference temperature in degC
        return _convert(ds[name], name, "temperature") if name == "maat" else (
            _bare(ds[name].astype(np.float64)) / s)

    def precip(name: str) -> xr.DataArray:
        return _convert(ds[name], name, "annual_precipitation")

    mean_src = next((k for k in ("bio1", "maat", "bio11", "bio10") if k in have), None)
    p_src = next((k for k in ("bio12", "map") if k in have), None)
    if mean_src is None or p_src is None:
        missing = ([] if mean_src else ["annual mean temperature: bio1 or maat (°C), or bio11 "
                                        "or bio10 (°C; with bio4, bio7+bio3 or bio10+bio11 "
                                        "for the amplitude)"]) + \
                  ([] if p_src else ["annual precipitation: bio12 or map (mm)"])
        raise ValueError(
            "cannot reconstruct the monthly climate: missing " + "; ".join(missing)
            + f". Variables found: {sorted(have)}"
        )
    lat = _bare(_latitude(ds, latitude).astype(np.float64))
    # -- amplitude (K) ------------------------------------------------------------------------
    if amplitude is not None:
        amp = _bare(amplitude.astype(np.float64)) if isinstance(amplitude, xr.DataArray) \
            else xr.DataArray(float(amplitude))
        notes.append("amplitude given")
    elif "bio4" in have:
        amp = _bare(ds["bio4"].astype(np.float64)) / (100.0 * s) / _STD_FACTOR
        notes.append("amplitude from bio4")
    elif "bio7" in have and ({"bio2", "bio3"} & have):
        bio7 = temp("bio7")
        bio2 = temp("bio2") if "bio2" in have else (
            _bare(ds["bio3"].astype(np.float64)) * bio7 / 100.0)
        amp = (bio7 - bio2) / 2.0
        notes.append("amplitude from bio7 and " + ("bio2" if "bio2" in have else "bio3"))
    elif {"bio10", "bio11"} <= have:
        amp = (temp("bio10") - temp("bio11")) / (2.0 * _QUARTER_FACTOR)
        notes.append("amplitude from bio10 and bio11")
    else:
        amp = _default_amplitude(lat)
        notes.append("ASSUMED seasonal amplitude 1 + 20 sin^2(lat) K (no bio4/bio7/bio10 "
                     "given)")
    amp = np.maximum(amp, 0.0)
    # -- annual mean (degC) ------------------------------------------------------------------
    if mean_src in ("bio1", "maat"):
        t_mean = temp(mean_src)
    elif mean_src == "bio11":
        t_mean = temp("bio11") + _QUARTER_FACTOR * amp
    else:
        t_mean = temp("bio10") - _QUARTER_FACTOR * amp
    notes.append(f"annual mean from {mean_src}")
    # -- precipitation (mm) ------------------------------------------------------------------
    p_ann = precip(p_src)
    p_month = p_ann / 12.0
    p_safe = xr.where(p_ann > 0, p_ann, 1.0)  # no 0 / 0 in dry cells (b = 0 there)
    sign: Any = 1.0
    if {"bio18", "bio19"} <= have:
        sign = xr.where(precip("bio19") > precip("bio18"), -1.0, 1.0)
    if "bio15" in have:
        cv = _bare(ds["bio15"].astype(np.float64)) / 100.0
        b = sign * cv * (p_safe / 12.0 + 1.0) / (p_safe / 12.0 * _STD_FACTOR)
        notes.append("precipitation seasonality from bio15"
                     + (" (phase from bio18/bio19)" if {"bio18", "bio19"} <= have else
                        " (rain in the warm season assumed)"))
    elif {"bio18", "bio19"} <= have:
        b = 6.0 * (precip("bio18") - precip("bio19")) / (p_safe * (1.0 + math.sqrt(3.0)))
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
    out = xr.Dataset(
        {"tas": tas.assign_attrs(CLIMATE_VARIABLES["tas"]),
         "pr": pr.assign_attrs(CLIMATE_VARIABLES["pr"])},
    ).assign_coords(month=month)
    out.attrs["reconstruction"] = "; ".join(notes)
    return out


# -------------------------------------------------------------------------------------------
# from_climate
# -------------------------------------------------------------------------------------------
#: checked ranges of the column state passed to the kernel (name: (min, max, units))
_STATE_RANGES: dict[str, tuple[float, float, str]] = {
    "npp_annual": (0.0, math.inf, "g C m-2 yr-1"),
    "tree_fraction": (0.0, 1.0, "1"),
    "fpi": (0.0, 1.0, "1"),
    "aridity_index": (0.0, math.inf, "1"),
    "elevation": (-1000.0, 9000.0, "m"),
    "depth_to_bedrock": (0.0, math.inf, "m"),
    "sand_0cm": (0.0, 100.0, "%"),
    "sand_30cm": (0.0, 100.0, "%"),
    "sand_100cm": (0.0, 100.0, "%"),
}


def _check_range(name: str, x: np.ndarray, lo: float, hi: float, units: str,
                 hint: str = "") -> None:
    v = x[np.isfinite(x)]
    if v.size and (v.min() < lo or v.max() > hi):
        raise ValueError(
            f"{name}: expected values in [{lo:g}, {hi:g}] {units}, found {v.min():.4g} .. "
            f"{v.max():.4g}{hint}"
        )


def _checked_block(tas, pr, pet, *state):
    """:func:`_forcing_block` on broadcast float64 inputs after checking their ranges."""
    batch = np.broadcast_shapes(tas.shape[:-1], pr.shape[:-1], pet.shape[:-1],
                                *(np.shape(v) for v in state))
    tas, pr, pet = (np.broadcast_to(np.asarray(a, np.float64), batch + (12,))
                    for a in (tas, pr, pet))
    state = [np.broadcast_to(np.asarray(v, np.float64), batch) for v in state]
    _check_range("tas", tas, *_TAS_RANGE, "degC", hint=(
        ": monthly air temperature in K needs units='K'; WorldClim 1.x bioclim temperatures "
        "are stored x 10 (pass temperature_scale=10)"))
    _check_range("pr", pr, 0.0, math.inf, "mm month-1")
    for name, v in zip(_STATE_2D, state):
        _check_range(name, v, *_STATE_RANGES[name])
    return _forcing_block(tas, pr, pet, *state)


def _annual_block(tas: np.ndarray, pr: np.ndarray) -> tuple[np.ndarray, ...]:
    """PET ``[..., 12]`` and annual mean T, total P, warmest month, total PET ``[...]``.

    Computed on contiguous copies, so every cell's values depend on its 12 months only (not
    on the memory layout of the chunk): chunk invariant, eager == lazy.  No overflow warnings
    on out-of-range input (the forcing kernel raises on it).
    """
    tas = np.ascontiguousarray(tas, dtype=np.float64)
    pr = np.ascontiguousarray(pr, dtype=np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        pet = thornthwaite_pet(tas)
    return pet, tas.mean(-1), pr.sum(-1), tas.max(-1), pet.sum(-1)


def _pick(sources: list[xr.Dataset | None], names: tuple[str, ...]) -> tuple[str, Any] | None:
    for src in sources:
        if src is None:
            continue
        for n in names:
            if n in src.data_vars:
                return n, src[n]
    return None


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

    Parameters
    ----------
    climate : xarray.Dataset or mapping
        On any grid (``lat``/``lon``, projected, or a ``site`` dim; extra dims such as a
        scenario broadcast), one of, in this order of preference:

        - ``tas`` (°C, or K with ``units="K"``) and ``pr`` (mm month-1; kg m-2 s-1 and
          mm d-1 are converted) with a ``month`` dim of length 12 (January first);
        - bioclimatic variables ``bio1`` ... ``bio19`` (any subset sufficient for
          :func:`monthly_climate_from_bioclim`, e.g. ``bio4``, ``bio11``, ``bio12``);
        - site values ``maat`` (°C) and ``map`` (mm; ``units="cm"`` is converted), with a
          default seasonal amplitude (``amplitude``).

        May also hold the column variables listed under ``soil``.  A mapping of numpy arrays
        is taken as 1-D arrays over ``site`` (then pass ``latitude`` for bioclimatic or site
        inputs).
    soil : xarray.Dataset or mapping, keyword-only, optional
        Soil covariates on the same grid: ``sand_0cm``, ``sand_30cm``, ``sand_100cm`` (%,
        interpolated linearly in depth between 0, 0.3 and 1 m, constant below) or a single
        ``sand`` (%); ``depth_to_bedrock`` (m, or cm with ``units="cm"``); and, used when
        the keyword of the same name is not given, ``elevation`` (m), ``npp`` or
        ``npp_annual`` (g C m-2 yr-1), ``tree_fraction`` and ``fpi`` (1) (looked up in
        ``soil``, then in ``climate``).  Missing: sand 40 % and no bedrock within the 8.6 m
        column (:data:`DEFAULTS`); every default used is recorded in the ``comment`` of the
        variable it affects and in the dataset's ``forcing_assumptions`` and ``history``.
    npp : float or xarray.DataArray, keyword-only, optional
        Annual NPP (g C m-2 yr-1, or with ``units``).  Default: the Miami model (Lieth 1975,
        :func:`miami_npp`) from annual mean temperature and precipitation.
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
        :func:`xproda.xr_api.steady_state` (``ds.proda.steady_state``) and
        :func:`xproda.train_network` (``forcing=``).

    Raises
    ------
    ValueError
        Missing climate inputs (the message lists the accepted variables with their units
        and the variables found); units not understood; a ``month`` dim that is not 12
        long; options that do not apply (``amplitude`` or ``temperature_scale`` with monthly
        ``tas``/``pr``); grids that do not match.  Out-of-range values (e.g. temperatures
        outside -90..60 °C, negative precipitation, sand outside 0..100 %) raise when the
        values are computed: at once for numpy input, at compute time for dask input.
    TypeError
        ``climate``, ``soil`` or a field of the wrong type.

    Examples
    --------
    >>> import xarray as xr
    >>> from xproda.climate import from_climate
    >>> yx = ("lat", "lon")
    >>> clim = xr.Dataset({"bio4": (yx, [[900.0]]), "bio11": (yx, [[-4.0]]),
    ...                    "bio12": (yx, [[650.0]])}, coords={"lat": [48.0], "lon": [11.0]})
    >>> f = from_climate(clim, soil=xr.Dataset({"depth_to_bedrock": (("lat", "lon"), [[1.2]])}))
    >>> f["TSOI"].dims, f["TSOI"].attrs["units"], int(f["nbedrock"][0, 0, 0])
    (('month', 'layer', 'lat', 'lon'), 'K', 9)
    """
    ds = _as_dataset(climate, "climate")
    soil_ds = None if soil is None else _as_dataset(soil, "soil")
    notes: list[str] = []
    comments: dict[str, str] = {}
    have = {str(k) for k in ds.data_vars}
    if {"tas", "pr"} & have:
        missing = [f"{k} ({u})" for k, u in (("tas", "°C"), ("pr", "mm month-1"))
                   if k not in have]
        if missing:
            raise ValueError(f"climate: monthly climate needs both tas (°C) and pr "
                             f"(mm month-1) with a month dim; missing {', '.join(missing)}")
        if amplitude is not None or temperature_scale != 1.0:
            raise ValueError("amplitude and temperature_scale apply to bioclimatic or site "
                             "inputs only, not to monthly tas/pr")
        for k in ("tas", "pr"):
            if "month" not in ds[k].dims or ds[k].sizes["month"] != 12:
                raise ValueError(f"climate[{k!r}]: expected a 'month' dim of length 12 "
                                 f"(January first), found dims {dict(ds[k].sizes)}")
        tas = _convert(ds["tas"], "tas", "temperature")
        pr = _convert(ds["pr"], "pr", "monthly_precipitation")
        notes.append("monthly climate given (tas, pr)")
    elif (set(_BIOCLIM_NAMES) | {"maat", "map"}) & have:
        mc = monthly_climate_from_bioclim(ds, latitude=latitude,
                                          temperature_scale=temperature_scale,
                                          amplitude=amplitude)
        tas, pr = _bare(mc["tas"]), _bare(mc["pr"])
        notes.append("monthly climate reconstructed: " + mc.attrs["reconstruction"])
    else:
        raise ValueError(
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

    def field(key: str, value: Any, names: tuple[str, ...], kind: str,
              default: Callable[[], xr.DataArray], var: str, note: str) -> None:
        found = _pick([soil_ds, ds], names)
        if value is not None:
            state[key] = _as_field(value, names[0], kind)
        elif found is not None:
            state[key] = _convert(found[1], found[0], kind)
        else:
            state[key] = default()
            comments[var] = note
            notes.append(note)

    field("npp_annual", npp, ("npp", "npp_annual"), "npp", lambda: miami_npp(t_mean, p_ann),
          "NPP", "NPP from the Miami model (Lieth 1975) of annual temperature and precipitation")
    field("tree_fraction", tree_fraction, ("tree_fraction",), "fraction",
          lambda: _tree_fraction_rule(p_ann, t_warm), "CWD_INPUT",
          "tree fraction from climate: sigmoid((P - 500) / 120) sigmoid((T_warmest - 10) / 1.5)")
    field("fpi", fpi, ("fpi",), "fraction", lambda: _fpi_rule(t_mean), "FPI_vr",
          "FPI from climate: clip(0.35 + 0.6 sigmoid((T - 5) / 6), 0.05, 1)")
    state["aridity_index"] = _aridity_index(p_ann, pet_ann)
    field("elevation", elevation, ("elevation",), "elevation",
          lambda: xr.DataArray(DEFAULTS["elevation"]), "O_SCALAR",
          f"no elevation given: {DEFAULTS['elevation']:g} m assumed (no lowland anoxia)")
    field("depth_to_bedrock", None, ("depth_to_bedrock",), "depth",
          lambda: xr.DataArray(DEFAULTS["depth_to_bedrock"]), "nbedrock",
          f"no depth to bedrock given: {DEFAULTS['depth_to_bedrock']:g} m assumed (no bedrock "
          "within the soil column)")
    layers = ("sand_0cm", "sand_30cm", "sand_100cm")
    if soil_ds is not None and set(layers) <= set(map(str, soil_ds.data_vars)):
        for k in layers:
            state[k] = _convert(soil_ds[k], k, "percent")
    elif soil_ds is not None and "sand" in soil_ds.data_vars:
        for k in layers:
            state[k] = _convert(soil_ds["sand"], "sand", "percent")
        comments["CELLSAND"] = "one sand content used at every depth"
    else:
        if soil_ds is not None and set(layers) & set(map(str, soil_ds.data_vars)):
            raise ValueError(f"soil: give all of {list(layers)} (%) or a single 'sand' (%); "
                             f"found {sorted(set(layers) & set(map(str, soil_ds.data_vars)))}")
        for k in layers:
            state[k] = xr.DataArray(DEFAULTS["sand"])
        comments["CELLSAND"] = f"no sand content given: {DEFAULTS['sand']:g} % assumed"
        notes.append(comments["CELLSAND"])
    # -- one grid ---------------------------------------------------------------------------------
    named = {"tas": tas, "pr": pr, "pet": pet}
    named.update({k: v.drop_vars([c for c in v.coords if c not in v.dims])
                  for k, v in state.items()})
    try:
        aligned = xr.align(*named.values(), join="exact")
    except ValueError as err:
        raise ValueError(
            "from_climate: the climate and soil inputs (and npp/tree_fraction/fpi/elevation) "
            f"must share the same grid coordinates: {err}"
        ) from err
    forcing = _forcing_dataset(xr.Dataset(dict(zip(named, aligned))), block=_checked_block)
    # -- metadata ---------------------------------------------------------------------------------
    for name, text in comments.items():
        forcing[name].attrs["comment"] = text
    if include_climate:
        for k, v in (("tas", tas), ("pr", pr), ("pet", pet)):
            forcing[k] = v.transpose("month", ...).assign_attrs(CLIMATE_VARIABLES[k])
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
        "history": conventions.history_line("from_climate: " + "; ".join(notes)),
    }
    return forcing
