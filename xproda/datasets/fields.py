"""Building blocks of the synthetic world: grid, land fraction, smooth random fields.

Everything here is deterministic numpy on the full grid; nothing depends on chunking.
"""

from __future__ import annotations

import functools
import zlib

import numpy as np

from xproda.spatial.sphere import EARTH_RADIUS, unit_vectors as _unit_vectors

#: Earth radius in km (the sphere of :data:`xproda.spatial.EARTH_RADIUS`)
EARTH_RADIUS_KM = EARTH_RADIUS / 1000.0


def check_seed(seed) -> None:
    """Raise a ValueError naming ``seed`` unless it is a non-negative int."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")


def regular_grid(resolution: float) -> tuple[np.ndarray, np.ndarray]:
    """Cell centres of the global regular grid: latitudes north to south, longitudes -180..180.

    Parameters
    ----------
    resolution : float
        Cell size in degrees; 180 / resolution must be an integer.

    Returns
    -------
    lat, lon : numpy.ndarray
        Cell-centre latitudes (degrees_north, descending) and longitudes (degrees_east,
        ascending from ``-180 + resolution / 2``).
    """
    try:
        res = float(resolution)
    except (TypeError, ValueError):
        raise TypeError(
            f"resolution must be a number of degrees, got {type(resolution).__name__}"
        ) from None
    if not np.isfinite(res) or res <= 0 or res > 90:
        raise ValueError(f"resolution must be in (0, 90] degrees, got {resolution!r}")
    ny = 180.0 / res
    if abs(ny - round(ny)) > 1e-6 * ny:
        raise ValueError(
            f"resolution must divide 180 degrees into a whole number of rows (e.g. 2, 1, 0.5, "
            f"0.25), got {resolution!r} (180 / resolution = {ny:.6g})"
        )
    ny = int(round(ny))
    lat = 90.0 - res * (np.arange(ny) + 0.5)
    lon = -180.0 + res * (np.arange(2 * ny) + 0.5)
    return lat, lon


@functools.lru_cache(maxsize=4)
def land_fraction(resolution: float) -> np.ndarray:
    """Fraction of land of every cell from the ``global-land-mask`` GLOBE 1 km mask.

    Each cell is sampled on a regular ``k x k`` sub-grid of points (``k = clip(round(8 *
    resolution), 1, 16)``, i.e. 16 x 16 points per 2° cell) classified by
    :func:`global_land_mask.globe.is_land`; the fraction is the share of land points.

    Returns
    -------
    numpy.ndarray
        Shape ``(ny, nx)``, values in [0, 1], read-only (cached per resolution).
    """
    try:
        from global_land_mask import globe
    except ImportError as err:  # pragma: no cover - a core dependency
        raise ImportError(
            "synthetic_world needs the 'global-land-mask' package (pip install global-land-mask)"
        ) from err
    lat, lon = regular_grid(resolution)
    res = float(resolution)
    k = int(np.clip(round(8 * res), 1, 16))
    off = res * ((np.arange(k) + 0.5) / k - 0.5)
    sub_lat = (lat[:, None] + off[None, :]).ravel()  # (ny * k)
    sub_lon = (lon[:, None] + off[None, :]).ravel()  # (nx * k)
    land = globe.is_land(sub_lat[:, None], sub_lon[None, :])  # (ny k, nx k)
    frac = land.reshape(lat.size, k, lon.size, k).mean(axis=(1, 3))
    frac.setflags(write=False)
    return frac


def distance_to_ocean(lat: np.ndarray, lon: np.ndarray, ocean: np.ndarray) -> np.ndarray:
    """Great-circle distance (km) from every cell centre to the nearest ocean cell centre.

    Parameters
    ----------
    lat, lon : numpy.ndarray
        1-D cell-centre coordinates (degrees).
    ocean : numpy.ndarray of bool
        ``(ny, nx)``, True for ocean cells.

    Returns
    -------
    numpy.ndarray
        ``(ny, nx)`` in km (0 on ocean cells).
    """
    from scipy.spatial import cKDTree

    la, lo = np.meshgrid(lat, lon, indexing="ij")
    xyz = _unit_vectors(lo.ravel(), la.ravel())
    tree = cKDTree(xyz[ocean.ravel()])
    chord, _ = tree.query(xyz)
    angle = 2.0 * np.arcsin(np.clip(chord / 2.0, 0.0, 1.0))
    return (angle * EARTH_RADIUS_KM).reshape(ocean.shape)


def smooth_field(
    lat: np.ndarray, lon: np.ndarray, *, seed: int, name: str, length_km: float,
    n_modes: int = 128,
) -> np.ndarray:
    """A smooth, approximately standard-normal random field on the sphere.

    Random Fourier features (Rahimi & Recht 2007) of a Gaussian covariance
    ``exp(-d**2 / (2 L**2))`` in the chordal distance ``d`` between points on the sphere of
    radius 6371 km: ``f(x) = sqrt(2 / M) * sum_k cos(w_k . x + phi_k)``, ``w_k ~ N(0, I / L**2)``,
    ``phi_k ~ U(0, 2 pi)``.  The field is a function of position only, so it is the same at
    every resolution and for every chunking; ``(seed, name)`` seed the modes.

    Parameters
    ----------
    lat, lon : numpy.ndarray
        Points (degrees), any equal shapes.
    seed : int
        World seed.
    name : str
        Field name (a different field for each name).
    length_km : float
        Correlation length ``L`` (km).
    n_modes : int
        Number of Fourier modes ``M``.

    Returns
    -------
    numpy.ndarray
        Same shape as ``lat``.
    """
    rng = np.random.default_rng([int(seed), zlib.crc32(name.encode())])
    w = rng.normal(size=(3, n_modes)) / float(length_km)
    phi = rng.uniform(0.0, 2.0 * np.pi, n_modes)
    xyz = _unit_vectors(np.ravel(lon), np.ravel(lat)) * EARTH_RADIUS_KM
    f = np.cos(xyz @ w + phi).sum(-1) * np.sqrt(2.0 / n_modes)
    return f.reshape(np.shape(lat))
