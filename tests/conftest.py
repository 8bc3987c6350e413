"""Shared test helpers: fixture loading and random forcing."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"

_LAYERED = {"tsoi": "TSOI", "w_scalar": "W_SCALAR", "o_scalar": "O_SCALAR", "fpi_vr": "FPI_vr"}
_MONTHLY = {
    "altmax": "ALTMAX",
    "altmax_lastyear": "ALTMAX_LASTYEAR",
    "nbedrock": "nbedrock",
    "npp": "NPP",
    "input_cwd": "CWD_INPUT",
    "input_litter1": "LITR1_INPUT",
    "input_litter2": "LITR2_INPUT",
    "input_litter3": "LITR3_INPUT",
}


def fixture_forcing(case: dict) -> dict[str, np.ndarray]:
    """Fixture forcing (stored as the original code takes it) -> the kernel contract."""
    f = case["forcing"]
    out = {}
    for k, v in _LAYERED.items():
        out[v] = np.asarray(f[k], dtype=float).T[None]  # [20,12] -> [1,12,20]
    for k, v in _MONTHLY.items():
        out[v] = np.asarray(f[k], dtype=float)[None]
    out["CELLSAND"] = np.asarray(f["sand"], dtype=float).mean(axis=1)[None]  # [1,20]
    return out


def load_fixture(name: str) -> dict:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"{path} not available (../shared absent)")
    return json.loads(path.read_text())


def stack_forcing(forcings: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([f[k] for f in forcings], axis=0) for k in forcings[0]}


def random_forcing(n: int, seed: int = 0, *, regime: str = "mixed") -> dict[str, np.ndarray]:
    """Physically shaped random forcing for ``n`` columns (numpy, batch first)."""
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


@pytest.fixture(autouse=True)
def _torch_defaults():
    torch.manual_seed(0)
    yield
