"""The reference test case of the spec §12 (Octave runs of the original code)."""

from __future__ import annotations

import numpy as np


def spec12_forcing(case: int) -> dict[str, np.ndarray]:
    m = np.arange(1, 13)[:, None]
    j = np.arange(1, 21)[None, :]
    tsoi = 273.15 + 10 + 12 * np.sin(2 * np.pi * (m - 4) / 12) * np.exp(-j / 8)
    w = (0.5 + 0.2 * np.cos(2 * np.pi * m / 12)) * np.ones((1, 20))
    f = {
        "TSOI": tsoi,
        "W_SCALAR": w,
        "O_SCALAR": np.ones((12, 20)),
        "FPI_vr": np.full((12, 20), 0.7),
        "CELLSAND": np.full(20, 40.0),
        "NPP": np.full(12, 3e-6),
        "CWD_INPUT": np.full(12, 5.0),
        "LITR1_INPUT": np.full(12, 15.0),
        "LITR2_INPUT": np.full(12, 25.0),
        "LITR3_INPUT": np.full(12, 10.0),
    }
    if case == 1:
        f.update(nbedrock=np.full(12, 20.0), ALTMAX=np.full(12, 6.0), ALTMAX_LASTYEAR=np.full(12, 6.0))
    else:
        f.update(nbedrock=np.full(12, 12.0), ALTMAX=np.full(12, 0.8), ALTMAX_LASTYEAR=np.full(12, 0.9))
        f["TSOI"] = f["TSOI"] - 12.0
    return {k: v[None] for k, v in f.items()}
