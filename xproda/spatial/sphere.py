"""Geometry on the sphere: Earth radius, unit vectors, spherical excess, authalic sphere."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["EARTH_RADIUS", "unit_vectors", "polygon_excess", "authalic"]


#: Earth radius in m used for cell areas on geographic grids: ``SHR_CONST_REARTH`` of the
#: CESM shared constants (``shr_const_mod.F90``), the sphere CLM5 uses for its grid-cell
#: areas. (The original PRODA post-processing, spec §8.1, used 6,371,008.8 m and a
#: trapezoid approximation; pass ``radius=6371008.8`` to use that sphere.)
EARTH_RADIUS: float = 6.37122e6


def unit_vectors(lon: np.ndarray, lat: np.ndarray) -> np.ndarray:
    """Unit vectors ``(..., 3)`` of points given by longitude and latitude in degrees."""
    lo, la = np.deg2rad(lon), np.deg2rad(lat)
    return np.stack([np.cos(la) * np.cos(lo), np.cos(la) * np.sin(lo), np.sin(la)], axis=-1)


def _triangle_excess(a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Spherical excess (sr) of great-circle triangles with unit-vector vertices."""
    num = np.abs(np.einsum("...i,...i->...", a, np.cross(b, c)))
    den = 1 + np.einsum("...i,...i->...", a, b) + np.einsum("...i,...i->...", b, c) + np.einsum(
        "...i,...i->...", c, a
    )
    return 2 * np.arctan2(num, den)


def polygon_excess(v: np.ndarray) -> np.ndarray:
    """Spherical excess (sr) of convex polygons ``v[..., nv, 3]`` (fan triangulation)."""
    out = np.zeros(v.shape[:-2])
    for k in range(1, v.shape[-2] - 1):
        out = out + _triangle_excess(v[..., 0, :], v[..., k, :], v[..., k + 1, :])
    return out


def authalic(lat: np.ndarray, crs: Any) -> tuple[np.ndarray, float]:
    """Authalic latitude (deg) and authalic-sphere radius (m) of the CRS's ellipsoid."""
    ell = crs.ellipsoid
    a = float(ell.semi_major_metre)
    inv_f = float(ell.inverse_flattening or 0.0)
    if not np.isfinite(inv_f) or inv_f <= 0:
        return lat, a
    f = 1.0 / inv_f
    e2 = f * (2 - f)
    e = np.sqrt(e2)

    def q(s: np.ndarray) -> np.ndarray:
        return (1 - e2) * (s / (1 - e2 * s**2) - np.log((1 - e * s) / (1 + e * s)) / (2 * e))

    qp = q(np.array(1.0))
    xi = np.rad2deg(np.arcsin(np.clip(q(np.sin(np.deg2rad(lat))) / qp, -1, 1)))
    return xi, a * np.sqrt(qp / 2)
