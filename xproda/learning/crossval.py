"""Site splits for validation and cross-validation (random or spatially blocked), and skill.

Soil profiles are spatially autocorrelated: a random split puts near-duplicates of training
sites into the test set and overstates skill. A *spatially blocked* split assigns whole blocks
of ``block_size`` x ``block_size`` degrees to one side, so test sites are at least a block
edge away from most training sites (Roberts et al. 2017, Ecography 40:913). Training
(:func:`xproda.learning.trainer.train_network`), cross-validation
(:func:`xproda.learning.validation.cross_validate`) and the analyses use the helpers here, so
every method compared in a cross-validation table sees the same folds.

Examples
--------
>>> import numpy as np
>>> from xproda.learning.crossval import kfold_sites, spatial_blocks
>>> lat = np.array([1.0, 2.0, 31.0, 32.0, -40.0, -41.0])
>>> lon = np.array([1.0, 2.0, 1.0, 2.0, 100.0, 101.0])
>>> b = spatial_blocks(lat, lon, block_size=10.0)
>>> bool(b[0] == b[1] and b[2] == b[3] and b[0] != b[2])
True
>>> folds = kfold_sites(lat, lon, n_folds=3, method="blocked", block_size=10.0, seed=0)
>>> sorted(np.concatenate(folds).tolist())
[0, 1, 2, 3, 4, 5]
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np

__all__ = ["spatial_blocks", "split_sites", "kfold_sites", "skill_scores", "valid_pairs",
           "SKILL_METRICS"]

#: Metrics of :func:`skill_scores` (pooled over all observations).
SKILL_METRICS = ("n", "r2", "nse", "rmse", "bias", "corr", "r2_log")


def _latlon(lat: Any, lon: Any) -> tuple[np.ndarray, np.ndarray]:
    lat = np.asarray(lat, dtype=float).ravel()
    lon = np.asarray(lon, dtype=float).ravel()
    if lat.shape != lon.shape:
        raise ValueError(f"lat and lon must have the same length, got {lat.size} and {lon.size}")
    if not (np.isfinite(lat).all() and np.isfinite(lon).all()):
        raise ValueError("site lat/lon must be finite")
    return lat, lon


def spatial_blocks(lat: Any, lon: Any, *, block_size: float = 10.0) -> np.ndarray:
    """Block id of each site on a regular lat/lon lattice of ``block_size`` degrees.

    Parameters
    ----------
    lat, lon : array_like of shape [S]
        Site coordinates (degrees; any longitude convention: wrapped to [-180, 180)).
    block_size : float, keyword-only, default 10
        Edge of the square blocks (degrees).

    Returns
    -------
    numpy.ndarray of int64, shape [S]
        Block ids (equal for sites in the same block).
    """
    if not block_size > 0:
        raise ValueError(f"block_size must be > 0 degrees, got {block_size}")
    lat, lon = _latlon(lat, lon)
    lon = (lon + 180.0) % 360.0 - 180.0
    i = np.floor((lat + 90.0) / block_size).astype(np.int64)
    j = np.floor((lon + 180.0) / block_size).astype(np.int64)
    return i * (int(np.ceil(360.0 / block_size)) + 1) + j


def _groups(lat, lon, method: str, block_size: float) -> np.ndarray:
    if method == "random":
        return np.arange(np.asarray(lat).size)
    if method == "blocked":
        return spatial_blocks(lat, lon, block_size=block_size)
    raise ValueError(f"method must be 'random' or 'blocked', got {method!r}")


def split_sites(
    lat: Any,
    lon: Any,
    *,
    fraction: float = 0.1,
    method: Literal["random", "blocked"] = "random",
    block_size: float = 10.0,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Split sites into a training and a held-out set.

    Parameters
    ----------
    lat, lon : array_like of shape [S]
        Site coordinates (degrees).
    fraction : float, default 0.1
        Target share of sites held out (blocked splits hold out whole blocks until the share
        is reached, so the share is approximate).
    method : {"random", "blocked"}
        Sites drawn at random, or whole spatial blocks (:func:`spatial_blocks`).
    block_size : float, default 10
        Block edge in degrees (``method="blocked"``).
    seed : int, default 0

    Returns
    -------
    train, held_out : numpy.ndarray of int
        Sorted site indices; disjoint, together all sites.
    """
    if not 0.0 < fraction < 1.0:
        raise ValueError(f"fraction must be in (0, 1), got {fraction}")
    g = _groups(lat, lon, method, block_size)
    S = g.size
    if S < 2:
        raise ValueError(f"need at least 2 sites to split, got {S}")
    rng = np.random.default_rng(seed)
    uniq, inv = np.unique(g, return_inverse=True)
    order = rng.permutation(uniq.size)
    sizes = np.bincount(inv, minlength=uniq.size)[order]
    target = max(1, int(round(fraction * S)))
    take = order[: max(1, int(np.searchsorted(np.cumsum(sizes), target) + 1))]
    held = np.isin(inv, take)
    if held.all():  # one block holds everything: fall back to leaving one group in training
        held = np.isin(inv, take[:-1]) if take.size > 1 else held
    if held.all() or not held.any():
        raise ValueError(f"cannot split {S} sites in {uniq.size} block(s) of {block_size} "
                         "degrees: use a smaller block_size or method='random'")
    return np.flatnonzero(~held), np.flatnonzero(held)


def kfold_sites(
    lat: Any,
    lon: Any,
    *,
    n_folds: int = 5,
    method: Literal["random", "blocked"] = "blocked",
    block_size: float = 10.0,
    seed: int = 0,
) -> list[np.ndarray]:
    """K disjoint folds of site indices (random, or whole spatial blocks per fold).

    Blocks are shuffled and dealt to the folds greedily by size (largest first, into the
    currently smallest fold), so folds have similar numbers of sites.

    Parameters
    ----------
    lat, lon : array_like of shape [S]
        Site coordinates (degrees).
    n_folds : int, default 5
    method : {"random", "blocked"}, default "blocked"
    block_size : float, default 10
        Block edge in degrees (``method="blocked"``).
    seed : int, default 0

    Returns
    -------
    list of numpy.ndarray
        ``n_folds`` sorted index arrays; disjoint; their union is all sites. With
        ``method="blocked"`` no block is split between folds.
    """
    if int(n_folds) < 2:
        raise ValueError(f"n_folds must be >= 2, got {n_folds}")
    g = _groups(lat, lon, method, block_size)
    uniq, inv = np.unique(g, return_inverse=True)
    if uniq.size < n_folds:
        raise ValueError(f"only {uniq.size} spatial block(s) of {block_size} degrees for "
                         f"{n_folds} folds: use a smaller block_size or fewer folds")
    rng = np.random.default_rng(seed)
    order = rng.permutation(uniq.size)
    sizes = np.bincount(inv, minlength=uniq.size)
    order = order[np.argsort(-sizes[order], kind="stable")]
    fold_of_group = np.empty(uniq.size, dtype=np.int64)
    load = np.zeros(int(n_folds), dtype=np.int64)
    for grp in order:
        k = int(np.argmin(load))
        fold_of_group[grp] = k
        load[k] += sizes[grp]
    fold = fold_of_group[inv]
    return [np.flatnonzero(fold == k) for k in range(int(n_folds))]


def valid_pairs(mod: Any, obs: Any, *, mask: Any = None) -> tuple[np.ndarray, np.ndarray,
                                                                    np.ndarray]:
    """Flat float ``mod``, ``obs`` and the mask of pairs where both are finite (and ``mask``).

    Raises
    ------
    ValueError
        ``mod`` and ``obs`` differ in size.
    """
    m = np.asarray(mod, dtype=float).ravel()
    o = np.asarray(obs, dtype=float).ravel()
    if m.shape != o.shape:
        raise ValueError(f"mod and obs must have the same size, got {m.size} and {o.size}")
    ok = np.isfinite(m) & np.isfinite(o)
    if mask is not None:
        ok &= np.asarray(mask, dtype=bool).ravel()
    return m, o, ok


def skill_scores(mod: Any, obs: Any, *, mask: Any = None) -> dict[str, float]:
    """Skill of modelled vs observed values pooled over all observations.

    Parameters
    ----------
    mod, obs : array_like
        Modelled and observed values of the same shape (e.g. SOC in g C m-3 at the observed
        layers, ``[S, D]``); NaN entries (padding) are ignored.
    mask : array_like of bool, optional
        True where an observation is used.

    Returns
    -------
    dict of str to float
        ``n``; ``r2`` = ``nse`` = 1 - SSE/SST (the observation-based R^2 of
        :func:`xproda.sites.assimilation.costs.fit_stats`, pooled); ``rmse`` and ``bias`` (units
        of ``obs``); ``corr`` (Pearson); ``r2_log`` (1 - SSE/SST of log values, for
        positive data).
    """
    m, o, ok = valid_pairs(mod, obs, mask=mask)
    m, o = m[ok], o[ok]
    out = dict.fromkeys(SKILL_METRICS, float("nan"))
    out["n"] = float(m.size)
    if m.size < 2:
        return out
    e = m - o
    sst = float(((o - o.mean()) ** 2).sum())
    out["r2"] = out["nse"] = 1.0 - float((e ** 2).sum()) / sst if sst > 0 else float("nan")
    out["rmse"] = float(np.sqrt((e ** 2).mean()))
    out["bias"] = float(e.mean())
    if m.std() > 0 and o.std() > 0:
        out["corr"] = float(np.corrcoef(m, o)[0, 1])
    pos = (m > 0) & (o > 0)
    if pos.sum() >= 2:
        lm, lo = np.log(m[pos]), np.log(o[pos])
        sst_l = float(((lo - lo.mean()) ** 2).sum())
        if sst_l > 0:
            out["r2_log"] = 1.0 - float(((lm - lo) ** 2).sum()) / sst_l
    return out
