"""Testing helpers: synthetic forcing for tests, examples and benchmarks."""

from __future__ import annotations

import numpy as np

__all__ = ["random_forcing"]


def random_forcing(n: int, seed: int = 0, *, regime: str = "mixed") -> dict[str, np.ndarray]:
    """Physically shaped random forcing for ``n`` columns (numpy, batch first).

    Parameters
    ----------
    n : int
        Number of columns.
    seed : int
        Seed of :func:`numpy.random.default_rng`.
    regime : {"mixed", "bio", "cryo"}
        Active-layer regime: bioturbation (ALT > 2 m), cryoturbation (ALT <= 2 m) or a mix
        including frozen columns.

    Returns
    -------
    dict
        Forcing following :data:`xproda.models.forcing.FORCING_SCHEMA`.
    """
    rng = np.random.default_rng(seed)
    m = np.arange(1, 13)
    j = np.arange(1, 21)
    t_mean = rng.uniform(-8, 25, (n, 1, 1))
    amp = rng.uniform(0, 15, (n, 1, 1))
    tsoi = 273.15 + t_mean + amp * np.sin(2 * np.pi * (m[None, :, None] - 4) / 12) * np.exp(
        -j[None, None, :] / 8
    )
    w = np.clip(rng.uniform(0.2, 0.9, (n, 1, 20)) + 0.1 * np.cos(2 * np.pi * m / 12)[None, :, None], 0, 1)
    o = rng.uniform(0.6, 1.0, (n, 1, 1)) * np.ones((1, 12, 20))
    fpi = rng.uniform(0.3, 1.0, (n, 12, 20))
    if regime == "bio":
        alt = rng.uniform(2.5, 9, (n, 1))
    elif regime == "cryo":
        alt = rng.uniform(0.2, 1.9, (n, 1))
    else:
        alt = rng.choice([0.0, 0.8, 1.5, 5.0, 8.0], size=(n, 1)) * rng.uniform(0.8, 1.2, (n, 1))
    altmax = alt * np.ones((1, 12))
    altmax_ly = np.maximum(alt * rng.uniform(0.9, 1.1, (n, 1)), 0) * np.ones((1, 12))
    nb = rng.integers(3, 21, (n, 1)) * np.ones((1, 12))
    scale = rng.uniform(1, 30, (n, 1))
    season = 1 + 0.3 * np.sin(2 * np.pi * m / 12)[None]
    f = {
        "TSOI": tsoi,
        "W_SCALAR": w,
        "O_SCALAR": o,
        "FPI_vr": fpi,
        "ALTMAX": altmax,
        "ALTMAX_LASTYEAR": altmax_ly,
        "nbedrock": nb,
        "NPP": rng.uniform(1e-7, 1e-5, (n, 12)),
        "CELLSAND": rng.uniform(5, 90, (n, 1)) * np.ones((1, 20)),
        "CWD_INPUT": 0.3 * scale * season,
        "LITR1_INPUT": 1.0 * scale * season,
        "LITR2_INPUT": 1.5 * scale * season,
        "LITR3_INPUT": 0.7 * scale * season,
    }
    return f
