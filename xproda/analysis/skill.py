"""SOC skill by depth band and region (reuses :func:`xproda.learning.crossval.skill_scores`)."""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import pandas as pd

from xproda import conventions
from xproda.learning.crossval import SKILL_METRICS, skill_scores

__all__ = ["DEPTH_BANDS", "LATITUDE_REGIONS", "latitude_regions", "skill_by_group"]

#: default depth bands (m), those of the cen spatial-variation metrics (spec §8.5 b)
DEPTH_BANDS: tuple[tuple[float, float], ...] = ((0.0, 0.3), (0.3, 1.0), (1.0, np.inf))
#: latitude belts of :func:`latitude_regions`: (name, lower |lat|, upper |lat|) in degrees
LATITUDE_REGIONS = (("tropical", 0.0, 23.5), ("temperate", 23.5, 50.0),
                    ("boreal_polar", 50.0, 90.01))


def latitude_regions(lat: Any) -> np.ndarray:
    """Region label of each site by absolute latitude (:data:`LATITUDE_REGIONS`)."""
    a = np.abs(np.asarray(lat, dtype=float))
    out = np.full(a.shape, "unknown", dtype=object)
    for name, lo, hi in LATITUDE_REGIONS:
        out[(a >= lo) & (a < hi)] = name
    return out


def skill_by_group(
    mod: Any,
    obs: Any,
    *,
    depth: Any,
    regions: Any = None,
    depth_bands: Sequence[tuple[float, float]] = DEPTH_BANDS,
    lat: Any = None,
    mask: Any = None,
) -> pd.DataFrame:
    """R2 (= NSE), RMSE, bias, ... of SOC by depth band and region, plus the pooled totals.

    Parameters
    ----------
    mod, obs : array_like, shape [S, D]
        Modelled and observed SOC density at the observed layers (g C m-3); NaN ignored.
    depth : array_like, shape [S, D]
        Node depth of each observation (m); an observation is in band ``[top, bottom)``.
    regions : array_like of shape [S], "latitude" or None, keyword-only
        Region label per site; ``"latitude"`` uses :func:`latitude_regions` of ``lat``;
        None: one region ``"all"``.
    depth_bands : sequence of (top, bottom), keyword-only
        In m; default 0-0.3, 0.3-1 and below 1 m.
    lat : array_like, shape [S], keyword-only, optional
        Site latitudes (degrees_north), needed for ``regions="latitude"``.
    mask : array_like of bool, shape [S, D], keyword-only, optional
        Observations to use.

    Returns
    -------
    pandas.DataFrame
        Index ``(region, depth_band)`` including ``"all"`` for each; columns the metrics
        of :func:`xproda.learning.crossval.skill_scores` (``n``, ``r2``, ``nse``, ``rmse`` and
        ``bias`` in g C m-3, ``corr``, ``r2_log``); ``attrs["metrics"]`` holds the units
        and long_name of each column (the registry's ``skill`` section).
    """
    m = np.asarray(mod, dtype=float)
    o = np.asarray(obs, dtype=float)
    d = np.asarray(depth, dtype=float)
    if not (m.shape == o.shape == d.shape) or m.ndim != 2:
        raise ValueError(f"mod, obs and depth: expected the same [S, D] shape, found "
                         f"{m.shape}, {o.shape} and {d.shape}")
    S = m.shape[0]
    base = np.ones(m.shape, dtype=bool) if mask is None else np.asarray(mask, dtype=bool)
    if isinstance(regions, str):
        if regions != "latitude":
            raise ValueError(f"regions: expected labels, 'latitude' or None, found {regions!r}")
        if lat is None:
            raise ValueError("regions='latitude' needs lat= (site latitudes)")
        labels = latitude_regions(lat)
    elif regions is None:
        labels = np.full(S, "all", dtype=object)
    else:
        labels = np.asarray(regions, dtype=object)
    if labels.shape != (S,):
        raise ValueError(f"regions: expected one label per site ({S}), found shape "
                         f"{labels.shape}")
    bands = [(f"{a:g}-{b:g} m", a, b) for a, b in depth_bands] + [("all", -np.inf, np.inf)]
    regs = list(dict.fromkeys(labels.tolist()))
    regs = regs + (["all"] if regs != ["all"] else [])
    rows, index = [], []
    for r in regs:
        rmask = np.ones(S, dtype=bool) if r == "all" else labels == r
        for name, a, b in bands:
            sel = base & rmask[:, None] & (d >= a) & (d < b)
            rows.append(skill_scores(m, o, mask=sel))
            index.append((r, name))
    out = pd.DataFrame(rows, index=pd.MultiIndex.from_tuples(index, names=["region",
                                                                           "depth_band"]),
                       columns=list(SKILL_METRICS))
    out.attrs["metrics"] = {k: conventions.attrs(k, section="skill") for k in SKILL_METRICS}
    return out
