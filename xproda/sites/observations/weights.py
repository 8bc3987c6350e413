"""Layer weights of the cen cost (spec §5.2)."""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["layer_weights", "descending_ranks"]


def descending_ranks(key: np.ndarray) -> np.ndarray:
    """1-based ranks in descending order along the last axis, ties in original order.

    The ranks of MATLAB's stable ``sort(..., 'descend')``, used by :func:`layer_weights`.

    Parameters
    ----------
    key : numpy.ndarray
        Values to rank along the last axis.

    Returns
    -------
    numpy.ndarray of float
        Ranks, same shape (1 = largest).

    Examples
    --------
    >>> import numpy as np
    >>> descending_ranks(np.array([0.2, 0.5, 0.2, 0.9])).tolist()
    [3.0, 2.0, 4.0, 1.0]
    """
    order = np.argsort(-key, axis=-1, kind="stable")
    ranks = np.empty(key.shape, dtype=float)
    np.put_along_axis(ranks, order, np.arange(1, key.shape[-1] + 1, dtype=float)
                      * np.ones(key.shape[:-1] + (1,)), axis=-1)
    return ranks


def layer_weights(depth: Any, obs: Any) -> np.ndarray:
    """Layer weights of the cen cost (spec §5.2).

    For each profile, with ``r_s(i)`` the rank of ``|obs_i - mean(obs)|`` and ``r_d(i)`` the
    rank of ``|d_i - mean(d)|``, both in descending order (1 = farthest from the mean; ties
    keep their order, as MATLAB's stable ``sort(..., 'descend')``),
    ``w_i = max(1, 10·exp(-((r_s + r_d)/2 - 1)))``: the layers farthest from the mean obs
    and mean depth weigh up to 10, the others 1. Means are sequential sums divided by the
    count, as in MATLAB, so exact ties break the same way.

    Parameters
    ----------
    depth : array_like, shape [D] or [S, D]
        Node depths (m) of the layers of one profile, or of ``S`` profiles padded with NaN.
    obs : array_like, same shape
        Observed SOC density (g C m-3), NaN in padding.

    Returns
    -------
    numpy.ndarray
        Weights (dimensionless), same shape; 0 where ``depth`` or ``obs`` is NaN.

    Examples
    --------
    >>> w = layer_weights([0.05, 0.15, 0.3, 0.6, 1.0], [20000, 15000, 9000, 5000, 3000])
    >>> w.round(4).tolist()
    [6.0653, 1.0, 1.0, 1.0, 6.0653]
    """
    d = np.asarray(depth, dtype=float)
    y = np.asarray(obs, dtype=float)
    if d.shape != y.shape:
        raise ValueError(f"layer_weights: depth {d.shape} and obs {y.shape} must have the "
                         "same shape")
    if d.ndim not in (1, 2):
        raise ValueError(f"layer_weights: expected 1-D [D] or 2-D [S, D] arrays, got {d.ndim}-D")
    one = d.ndim == 1
    d2, y2 = np.atleast_2d(d), np.atleast_2d(y)
    valid = np.isfinite(d2) & np.isfinite(y2)
    n = valid.sum(axis=-1)
    ranks = []
    for x in (y2, d2):
        xv = np.where(valid, x, 0.0)
        s = np.zeros(x.shape[0])
        for j in range(x.shape[1]):  # sequential sum, like MATLAB's mean
            s = s + xv[:, j]
        with np.errstate(invalid="ignore", divide="ignore"):
            m = s / n
        key = np.where(valid, np.abs(x - m[:, None]), -np.inf)
        ranks.append(descending_ranks(key))
    r = 0.5 * (ranks[0] + ranks[1])
    w = np.where(valid, np.maximum(1.0, 10.0 * np.exp(-(r - 1.0))), 0.0)
    return w[0] if one else w
