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
