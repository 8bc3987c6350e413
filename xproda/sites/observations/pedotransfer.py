"""Bulk density from organic carbon (pedotransfer functions) and SOC density of whole soil."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

__all__ = [
    "VAN_BEMMELEN",
    "PEDOTRANSFER_FUNCTIONS",
    "bulk_density_adams",
    "soc_density",
    "resolve_pedotransfer",
    "pedotransfer_skill",
    "fit_mineral_bd",
]

#: Van Bemmelen factor: organic matter / organic carbon (mass ratio)
VAN_BEMMELEN = 1.724


def bulk_density_adams(oc: Any, *, mineral_bd: float = 1.64) -> np.ndarray:
    """Bulk density from organic carbon, the Adams (1973) mixing-rule pedotransfer function.

    ``BD = 100 / (OM / 0.244 + (100 - OM) / MBD)`` with ``OM = 1.724 · OC`` (organic matter,
    %, van Bemmelen factor), 0.244 g cm-3 the bulk density of pure organic matter and ``MBD``
    the mineral bulk density. OM is clipped to [0, 100] % (OC above 58 % gives 0.244).

    Reference: Adams, W. A. (1973). The effect of organic matter on the bulk and true
    densities of some uncultivated podzolic soils. *Journal of Soil Science* 24(1), 10–17,
    doi:10.1111/j.1365-2389.1973.tb00737.x. The default ``MBD = 1.64 g cm-3`` is a typical
    bulk density of mineral soil, an xproda default rather than a value from Adams (1973);
    Tranter et al. (2007, *Soil Use and Management* 23, 437–443) estimate MBD from texture
    and depth instead, which a callable ``pedotransfer`` can do.

    Parameters
    ----------
    oc : array_like
        Organic carbon content of the fine earth (g kg-1).
    mineral_bd : float, keyword-only
        Bulk density of the mineral fraction (g cm-3), default 1.64.

    Returns
    -------
    numpy.ndarray
        Bulk density of the fine earth (g cm-3).

    Examples
    --------
    >>> round(float(bulk_density_adams(10.0)), 5)  # 1 % OC
    1.49276
    """
    om = np.clip(VAN_BEMMELEN * np.asarray(oc, dtype=float) / 10.0, 0.0, 100.0)
    return 100.0 / (om / 0.244 + (100.0 - om) / mineral_bd)


#: pedotransfer functions by name: organic carbon (g kg-1) -> bulk density (g cm-3)
PEDOTRANSFER_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "adams1973": bulk_density_adams,
}


def _paired(oc: Any, measured_bd: Any) -> tuple[np.ndarray, np.ndarray]:
    oc = np.asarray(oc, dtype=float).ravel()
    bd = np.asarray(measured_bd, dtype=float).ravel()
    if oc.shape != bd.shape:
        raise ValueError(f"oc and measured_bd must have the same length, found {oc.size} and "
                         f"{bd.size}")
    ok = np.isfinite(oc) & np.isfinite(bd) & (oc >= 0) & (bd > 0)
    if np.any(bd[ok] > 3.0):
        raise ValueError(f"measured_bd must be in g cm-3 (0 < BD < 3), found values up to "
                         f"{np.nanmax(bd):g}: divide kg m-3 by 1000")
    return oc[ok], bd[ok]


def pedotransfer_skill(oc: Any, measured_bd: Any, *, pedotransfer: Any = "adams1973",
                       mineral_bd: float = 1.64) -> dict[str, float]:
    """How well a pedotransfer function reproduces measured bulk densities.

    Parameters
    ----------
    oc : array_like
        Organic carbon of the fine earth (g kg-1) of horizons with a measured bulk density.
    measured_bd : array_like
        Their measured bulk density (g cm-3). Pairs with a NaN are left out.
    pedotransfer, mineral_bd : keyword-only
        The function, as the converters' ``pedotransfer=`` option
        (:func:`resolve_pedotransfer`).

    Returns
    -------
    dict
        ``n`` (pairs), ``bias`` (mean predicted - measured, g cm-3), ``relative_bias``
        (bias / mean measured), ``rmse`` (g cm-3), ``r2`` (1 - SSE / SST of the measured),
        ``mean_measured`` (g cm-3).

    Raises
    ------
    ValueError
        Without a usable pair, or for bulk densities that are not in g cm-3.
    """
    o, b = _paired(oc, measured_bd)
    if o.size == 0:
        raise ValueError("pedotransfer_skill: no horizon with both organic carbon and a "
                         "measured bulk density")
    fn, _ = resolve_pedotransfer(pedotransfer, mineral_bd)
    if fn is None:
        raise ValueError("pedotransfer_skill: pedotransfer=None has nothing to score")
    err = np.asarray(fn(o), dtype=float) - b
    sst = float(((b - b.mean()) ** 2).sum())
    return {"n": int(o.size), "bias": float(err.mean()),
            "relative_bias": float(err.mean() / b.mean()),
            "rmse": float(np.sqrt((err ** 2).mean())),
            "r2": float(1.0 - (err ** 2).sum() / sst) if sst > 0 else float("nan"),
            "mean_measured": float(b.mean())}


def fit_mineral_bd(oc: Any, measured_bd: Any, *, bounds: tuple[float, float] = (0.8, 2.2)
                   ) -> float:
    """The mineral bulk density of the Adams (1973) function that fits measured densities.

    Least squares over the pairs (:func:`bulk_density_adams` is monotonic in ``mineral_bd``,
    so the minimum is found by a bounded scalar search): a regional calibration of the one
    free constant of the pedotransfer function, for tables where some horizons have a
    measured bulk density and the others need the function.

    Parameters
    ----------
    oc, measured_bd : array_like
        As :func:`pedotransfer_skill` (g kg-1, g cm-3).
    bounds : (float, float), keyword-only
        Search interval (g cm-3).

    Returns
    -------
    float
        ``mineral_bd`` (g cm-3), for :func:`bulk_density_adams` or a converter's
        ``mineral_bd=``.

    Raises
    ------
    ValueError
        With fewer than 10 usable pairs (too few to calibrate).
    """
    from scipy.optimize import minimize_scalar

    o, b = _paired(oc, measured_bd)
    if o.size < 10:
        raise ValueError(f"fit_mineral_bd: expected at least 10 horizons with organic carbon "
                         f"and a measured bulk density, found {o.size}")
    res = minimize_scalar(lambda m: float(((bulk_density_adams(o, mineral_bd=m) - b) ** 2)
                                          .sum()), bounds=bounds, method="bounded",
                          options={"xatol": 1e-6})
    return float(res.x)


def soc_density(oc: Any, bulk_density: Any, coarse_fragments: Any = 0.0) -> np.ndarray:
    """SOC density of whole soil from organic carbon content, bulk density and coarse fragments.

    ``soc = OC · BD · (1 - CF / 100)``; g kg-1 × kg m-3 = g m-3.

    Parameters
    ----------
    oc : array_like
        Organic carbon content of the fine earth (g kg-1).
    bulk_density : array_like
        Bulk density of the fine earth (kg m-3; 1 g cm-3 = 1000 kg m-3).
    coarse_fragments : array_like
        Coarse fragments (> 2 mm), volume % of whole soil (default 0).

    Returns
    -------
    numpy.ndarray
        SOC density (g C m-3).

    Examples
    --------
    >>> float(soc_density(10.0, 1400.0, 10.0))
    12600.0
    """
    return (np.asarray(oc, dtype=float) * np.asarray(bulk_density, dtype=float)
            * (1.0 - np.asarray(coarse_fragments, dtype=float) / 100.0))


def resolve_pedotransfer(pedotransfer: Any, mineral_bd: float
                         ) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str]:
    """The bulk-density function a converter's ``pedotransfer=`` option names, and its label.

    Parameters
    ----------
    pedotransfer : str, float, callable or None
        ``"adams1973"`` (or ``"adams"``: :func:`bulk_density_adams`), a constant bulk
        density (g cm-3, in (0, 3)), a callable organic carbon (g kg-1) -> bulk density
        (g cm-3), or None (no pedotransfer function).
    mineral_bd : float
        Mineral bulk density of the Adams PTF (g cm-3).

    Returns
    -------
    function : callable or None
        Organic carbon (g kg-1) -> bulk density (g cm-3); None for ``pedotransfer=None``.
    label : str
        How the reports name it.

    Raises
    ------
    ValueError
        For an unknown name or a constant outside (0, 3) g cm-3.
    TypeError
        For any other type.

    Examples
    --------
    >>> fn, label = resolve_pedotransfer(1.3, 1.64)
    >>> fn([10.0, 20.0]).tolist(), label
    ([1.3, 1.3], 'constant 1.3 g cm-3')
    """
    if pedotransfer is None:
        return None, "none"
    if isinstance(pedotransfer, str):
        key = pedotransfer.lower()
        if key in ("adams", "adams1973"):
            return ((lambda oc: bulk_density_adams(oc, mineral_bd=mineral_bd)),
                    f"adams1973 (Adams 1973, mineral_bd={mineral_bd:g} g cm-3)")
        raise ValueError(f"pedotransfer={pedotransfer!r}: expected one of "
                         f"{list(PEDOTRANSFER_FUNCTIONS)}, a constant bulk density (g cm-3), a "
                         "callable oc (g kg-1) -> bulk density (g cm-3), or None")
    if isinstance(pedotransfer, (int, float, np.floating)) and not isinstance(pedotransfer, bool):
        v = float(pedotransfer)
        if not 0 < v < 3:
            raise ValueError(f"pedotransfer={v}: a constant bulk density must be in g cm-3 "
                             "(0 < BD < 3)")
        return (lambda oc: np.full(np.shape(oc), v)), f"constant {v:g} g cm-3"
    if callable(pedotransfer):
        return pedotransfer, getattr(pedotransfer, "__name__", "callable")
    raise TypeError(f"pedotransfer: unsupported {type(pedotransfer).__name__}")
