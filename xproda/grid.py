"""The CLM5 soil column and depth helpers.

The vertical grid is the CLM5 25-level ground column (``zsoi``, ``zisoi``, ``dzsoi_decomp``)
of which the first 20 levels (``nlevdecomp``) carry soil carbon; levels 21-25 are used only
as look-ahead in the transport stencil (spec §1).

All depths are in metres, positive downwards, with the surface at 0.

Attributes
----------
N_LAYERS : int
    Number of decomposition layers (20).
DZ : numpy.ndarray
    Layer thickness ``dz`` (m), shape ``(25,)``.
ZISOI : numpy.ndarray
    Depth of the **bottom** interface of each layer (m), shape ``(25,)``.
ZISOI_TOP : numpy.ndarray
    Depth of the top interface of each layer (m), shape ``(25,)`` (``ZISOI_TOP[0] == 0``).
ZSOI : numpy.ndarray
    Node depth (layer midpoint, m), shape ``(25,)``.
DZ_NODE : numpy.ndarray
    Distance between consecutive nodes ``zsoi[j] - zsoi[j-1]`` (m), with ``DZ_NODE[0] = zsoi[0]``.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "N_LAYERS",
    "N_LEVELS",
    "DZ",
    "ZISOI",
    "ZISOI_TOP",
    "ZSOI",
    "DZ_NODE",
    "SOIL_DEPTH",
    "layer_bounds",
    "depth_weights",
    "integrate",
    "layer_index",
    "STANDARD_INTERVALS",
]

N_LAYERS: int = 20
N_LEVELS: int = 25

# bottom interfaces of the 25 CLM5 ground levels (m); spec §1 table
ZISOI = np.array(
    [
        0.02, 0.06, 0.12, 0.20, 0.32, 0.48, 0.68, 0.92, 1.20, 1.52,
        1.88, 2.28, 2.72, 3.26, 3.90, 4.64, 5.48, 6.42, 7.46, 8.60,
        10.99, 15.6655339059327, 23.3007244343160, 34.4407244343160, 49.5561492936897,
    ],
    dtype=np.float64,
)
ZISOI_TOP = np.concatenate([[0.0], ZISOI[:-1]])
DZ = ZISOI - ZISOI_TOP
ZSOI = 0.5 * (ZISOI + ZISOI_TOP)
DZ_NODE = np.diff(ZSOI, prepend=0.0)

#: total depth of the 20 decomposition layers (m)
SOIL_DEPTH: float = float(ZISOI[N_LAYERS - 1])

#: depth intervals used throughout PRODA's analyses (m): 0-30 cm, 0-100 cm, 0-200 cm, full
STANDARD_INTERVALS: dict[str, tuple[float, float]] = {
    "0-30cm": (0.0, 0.3),
    "0-100cm": (0.0, 1.0),
    "0-200cm": (0.0, 2.0),
    "full": (0.0, SOIL_DEPTH),
}

for _a, _b in ((ZISOI, "zisoi"), (DZ, "dz"), (ZSOI, "zsoi")):
    _a.setflags(write=False)
del _a, _b
ZISOI_TOP.setflags(write=False)
DZ_NODE.setflags(write=False)


def layer_bounds(n_layers: int = N_LAYERS) -> np.ndarray:
    """Top and bottom depth of each decomposition layer.

    Parameters
    ----------
    n_layers : int, default 20
        Number of layers from the surface.

    Returns
    -------
    numpy.ndarray
        Shape ``(n_layers, 2)``: ``[top, bottom]`` in m, CF ``bounds`` layout.
    """
    return np.stack([ZISOI_TOP[:n_layers], ZISOI[:n_layers]], axis=-1)


def depth_weights(top: float = 0.0, bottom: float = SOIL_DEPTH) -> np.ndarray:
    """Thickness of each layer that lies inside ``[top, bottom]`` (m).

    Multiplying a per-layer density (g C m-3) by these weights and summing over layers gives
    the stock of the interval (g C m-2), with partial layers counted linearly: this is the
    rule of the spec §8.1 (e.g. 0-30 cm = layers 1-4 plus 0.10 m of layer 5).

    Parameters
    ----------
    top, bottom : float
        Interval in m, ``0 <= top < bottom <= 8.6``.

    Returns
    -------
    numpy.ndarray
        Shape ``(20,)``, in m.
    """
    top = float(top)
    bottom = float(bottom)
    if not (np.isfinite(top) and np.isfinite(bottom)):
        raise ValueError(f"depth interval must be finite, got top={top!r}, bottom={bottom!r} (m)")
    if top < 0 or bottom <= top:
        raise ValueError(
            f"depth interval must satisfy 0 <= top < bottom (m), got top={top}, bottom={bottom}"
        )
    if bottom > SOIL_DEPTH + 1e-12:
        raise ValueError(
            f"depth interval bottom={bottom} m is below the modelled soil column "
            f"(0-{SOIL_DEPTH} m)"
        )
    lo = np.clip(ZISOI_TOP[:N_LAYERS], top, bottom)
    hi = np.clip(ZISOI[:N_LAYERS], top, bottom)
    return hi - lo


def integrate(values, top: float = 0.0, bottom: float = SOIL_DEPTH, *, axis: int = -1):
    """Depth-integrate per-layer densities over ``[top, bottom]``.

    Parameters
    ----------
    values : array_like or torch.Tensor
        Densities per layer (e.g. g C m-3) with the 20 layers along ``axis``.
    top, bottom : float
        Interval in m.
    axis : int, default -1
        Layer axis.

    Returns
    -------
    array_like
        Stock of the interval (e.g. g C m-2), same array type as ``values``; NaN layers
        inside the interval give NaN.
    """
    w = depth_weights(top, bottom)
    try:
        import torch

        if isinstance(values, torch.Tensor):
            wt = torch.as_tensor(w, dtype=values.dtype, device=values.device)
            v = values.movedim(axis, -1)
            if v.shape[-1] != N_LAYERS:
                raise ValueError(f"values must have {N_LAYERS} layers along axis {axis}, got {v.shape[-1]}")
            v = torch.where(wt > 0, v, torch.zeros((), dtype=v.dtype, device=v.device))
            return (v * wt).sum(-1)
    except ImportError:  # pragma: no cover - torch is a hard dependency
        pass
    v = np.moveaxis(np.asarray(values, dtype=np.float64), axis, -1)
    if v.shape[-1] != N_LAYERS:
        raise ValueError(f"values must have {N_LAYERS} layers along axis {axis}, got {v.shape[-1]}")
    # layers with zero weight must not turn a NaN outside the interval into NaN
    vv = np.where(w > 0, v, 0.0)
    return (vv * w).sum(-1)


def layer_index(depth) -> np.ndarray:
    """0-based index of the decomposition layer containing each depth (m).

    Depths on an interface belong to the layer above; depths below 8.6 m raise.
    """
    d = np.asarray(depth, dtype=np.float64)
    if np.any(d[np.isfinite(d)] < 0) or np.any(d[np.isfinite(d)] > SOIL_DEPTH):
        raise ValueError(f"depth must be within 0-{SOIL_DEPTH} m")
    return np.searchsorted(ZISOI[:N_LAYERS], d, side="left")
