"""The synthetic world: covariates, monthly climate and CLM5-style forcing on a global grid.

See :func:`synthetic_world` and ``docs/user-guide/synthetic-world.md`` for the formulas and
their sources.
"""

from __future__ import annotations

from typing import Any, Mapping

import numpy as np
import xarray as xr

from xproda import conventions
from xproda.climate import (
    CLIMATE_VARIABLES,
    FORCING_VARIABLES,
    active_layer_thickness,  # noqa: F401  (re-exported by xproda.datasets)
    bioclim,
    column_forcing,  # noqa: F401  (re-exported by xproda.datasets)
    miami_npp,
    thornthwaite_pet,
)
from xproda.climate.columns import forcing_dataset
from xproda.climate.formulas import (
    MONTHS,
    PEAK_MONTH_NORTH,
    PEAK_MONTH_SOUTH,
    aridity_index,
    fpi_rule,
    sigmoid,
    tree_fraction_rule,
)
from xproda.conventions import COVARIATES
from xproda.datasets import fields as _fields

__all__ = ["synthetic_world", "COVARIATES", "CLIMATE_VARIABLES", "FORCING_VARIABLES"]

#: cells south of this latitude (Antarctica) carry no soil column
_SOUTH_LIMIT = -60.0
#: a cell is modelled when at least this fraction of it is land
_MIN_LAND_FRACTION = 0.5


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
    # month of the T (and rain) maximum
    peak = np.where(la >= 0, PEAK_MONTH_NORTH, PEAK_MONTH_SOUTH)
    phase = 2.0 * np.pi * (MONTHS[None, :] - peak[:, None]) / 12.0
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
    ai = aridity_index(p_ann, pet.sum(-1))
    dtr = 6.0 + 9.0 * np.exp(-1.5 * ai)
    cov = bioclim(tas, pr, dtr)
    cov.update(geo_lat=la.copy(), geo_lon=lo.copy(), elevation=elev, distance_to_coast=dist,
               aridity_index=ai)
    # -- vegetation ------------------------------------------------------------------------
    cov["npp_annual"] = miami_npp(cov["bio1"], cov["bio12"])
    warmest = tas.max(-1)
    ftree = tree_fraction_rule(cov["bio12"], warmest)
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
    warm = sigmoid((cov["bio1"] - 15.0) / 5.0)
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
    fpi = fpi_rule(cov["bio1"], g("fpi", 800.0))
    return cov, {"tas": tas, "pr": pr, "pet": pet}, fpi


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
    from xproda.models import get_model
    from xproda.spatial import ensure_crs

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

    own = {"landfrac": landfrac.copy(), "landmask": soil.astype(np.int8), "fpi": grid2d(fpi)}
    data_vars: dict[str, Any] = {
        k: (("lat", "lon"), v, conventions.attrs(k, section="world")) for k, v in own.items()}
    for k in COVARIATES:
        data_vars[k] = (("lat", "lon"), grid2d(cov[k]), conventions.attrs(k, section="covariates"))
    for k, attrs in CLIMATE_VARIABLES.items():
        data_vars[k] = (("month", "lat", "lon"), grid3d(clim[k]), dict(attrs))
    ds = xr.Dataset(data_vars, coords=_coords(lat, lon, res))
    if spec is not None:
        ds = ds.chunk({**spec, "month": -1})
    # attrs from the registry: the forcing is computed from tas (whose attrs xarray carries)
    forcing = conventions.annotate(forcing_dataset(ds), "forcing")
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
    values = {
        "lat": ("lat", lat),
        "lon": ("lon", lon),
        "lat_bnds": (("lat", "bnds"), np.stack([lat + res / 2, lat - res / 2], -1)),
        "lon_bnds": (("lon", "bnds"), np.stack([lon - res / 2, lon + res / 2], -1)),
        "month": ("month", np.arange(1, 13)),
    }
    return {k: (*v, conventions.attrs(k, section="coordinates")) for k, v in values.items()}
