"""The profile-table schema: columns, units and meaning, and column helpers.

A profile table is a pandas DataFrame with one row per layer (:data:`PROFILE_COLUMNS`);
:func:`node_depth` gives the depth at which a layer is compared with a model,
:func:`as_float_array` reads a column as floats and :func:`profile_codes` numbers the
profiles.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

__all__ = [
    "PROFILE_COLUMNS",
    "REQUIRED_COLUMNS",
    "SOC_MAX_PLAUSIBLE",
    "DEPTH_UNITS_ATTR",
    "declared_depth_units",
    "profile_columns_markdown",
    "node_depth",
    "as_float_array",
    "profile_codes",
]

#: Largest plausible SOC density of a layer (g C m-3). The densest organic horizon is pure
#: organic matter (58 % C by the van Bemmelen factor) at about 0.25 g cm-3, i.e.
#: 580 g kg-1 x 250 kg m-3 ~ 145,000 g C m-3; the Adams (1973) pedotransfer function tops out
#: at 146,400 (OC 600 g kg-1, bulk density 0.244 g cm-3) and peat carbon densities are
#: typically 30,000 ... 70,000 g C m-3; mineral topsoils (1 ... 5 % OC at 1.0 ... 1.6 g cm-3)
#: give 10,000 ... 80,000. A layer above 150,000 g C m-3 (e.g. 14 % OC with a bulk density
#: of 1.7 g cm-3: 238,000) pairs a carbon content and a bulk density that do not occur
#: together (organic-rich soils are light); the converters drop such layers (``soc_max=``,
#: rule ``soc_max``) and :func:`validate_profiles` flags them (warning ``soc_range``).
SOC_MAX_PLAUSIBLE = 150_000.0

#: the ``DataFrame.attrs`` key declaring the units of ``top`` and ``bottom`` (``"m"``); set by
#: the converters, read by :func:`validate_profiles` and :func:`pack_profiles`
DEPTH_UNITS_ATTR = "depth_units"

#: The profile-table schema: column -> units, whether required, and meaning.
PROFILE_COLUMNS: dict[str, dict[str, Any]] = {
    "profile_id": {
        "units": "–",
        "required": True,
        "description": "profile (site) identifier, str or int; all layers of a profile share it",
    },
    "lat": {
        "units": "degrees_north",
        "required": True,
        "description": "latitude (WGS84), -90 … 90; one location per profile",
    },
    "lon": {
        "units": "degrees_east",
        "required": True,
        "description": "longitude (WGS84), -180 … 360; one location per profile",
    },
    "top": {
        "units": "m",
        "required": True,
        "description": "upper depth of the layer below the mineral soil surface, >= 0",
    },
    "bottom": {
        "units": "m",
        "required": True,
        "description": "lower depth of the layer, > top; layers of a profile must not overlap",
    },
    "soc": {
        "units": "g m-3",
        "required": True,
        "description": "soil organic carbon density: g of carbon per m3 of whole soil "
                       "(coarse fragments included), typically 1e2 … 1e5; at most 150,000 "
                       "(SOC_MAX_PLAUSIBLE: pure organic matter at 0.25 g cm-3)",
    },
    "date": {
        "units": "–",
        "required": False,
        "description": "sampling date (datetime64) or year",
    },
    "weight": {
        "units": "1",
        "required": False,
        "description": "layer weight of the cen cost; used by pack_profiles(weights='column'), "
                       "which otherwise computes the spec §5.2 weights",
    },
}

#: the columns every profile table must have
REQUIRED_COLUMNS: tuple[str, ...] = tuple(k for k, v in PROFILE_COLUMNS.items() if v["required"])


def profile_columns_markdown() -> str:
    """The schema table (:data:`PROFILE_COLUMNS`) as markdown, as shown in the user guide.

    Returns
    -------
    str
        A markdown table with one row per column: name, units, required, meaning.

    Examples
    --------
    >>> print(profile_columns_markdown().splitlines()[5])
    | `top` | m | yes | upper depth of the layer below the mineral soil surface, >= 0 |
    """
    lines = ["| column | units | required | meaning |", "|---|---|---|---|"]
    for name, spec in PROFILE_COLUMNS.items():
        req = "yes" if spec["required"] else "no"
        lines.append(f"| `{name}` | {spec['units']} | {req} | {spec['description']} |")
    return "\n".join(lines)


def declared_depth_units(df: pd.DataFrame, depth_units: str | None = None, *,
                         where: str = "validate_profiles") -> str | None:
    """The declared units of ``top``/``bottom``: the argument, else ``df.attrs["depth_units"]``.

    Parameters
    ----------
    df : pandas.DataFrame
        A profile table; ``df.attrs[DEPTH_UNITS_ATTR]`` may declare its depth units (the
        converters set ``"m"``).
    depth_units : str or None
        Units passed by the caller (``"m"``, ``"cm"`` or ``"mm"``), or None.
    where : str, keyword-only
        The caller, named in the error message.

    Returns
    -------
    str or None
        The declared units, or None when neither declares them.

    Raises
    ------
    xproda.errors.ProfileError
        If the argument and the table's attrs declare different units, or a declaration is
        not one of ``"m"``, ``"cm"``, ``"mm"``.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"top": [0.0]})
    >>> declared_depth_units(df) is None
    True
    >>> df.attrs["depth_units"] = "m"
    >>> declared_depth_units(df)
    'm'
    """
    from xproda.errors import ProfileError

    attr = df.attrs.get(DEPTH_UNITS_ATTR) if isinstance(df, pd.DataFrame) else None
    for label, value in (("depth_units", depth_units),
                         (f"df.attrs[{DEPTH_UNITS_ATTR!r}]", attr)):
        if value is not None and value not in ("m", "cm", "mm"):
            raise ProfileError(f"{where}: {label}={value!r}: expected 'm', 'cm' or 'mm' "
                               "(units of the 'top' and 'bottom' columns)")
    if depth_units is not None and attr is not None and depth_units != attr:
        raise ProfileError(f"{where}: depth_units={depth_units!r} but the table declares "
                           f"df.attrs[{DEPTH_UNITS_ATTR!r}] = {attr!r} for 'top'/'bottom'; "
                           "pass the units the table is in")
    return depth_units if depth_units is not None else attr


def as_float_array(x: Any) -> np.ndarray:
    """A Series (or array) as a float array; non-numbers and missing values become NaN.

    Parameters
    ----------
    x : pandas.Series or array_like
        A table column (coerced with ``pandas.to_numeric(errors="coerce")``) or an array.

    Returns
    -------
    numpy.ndarray
        The values as float64.

    Examples
    --------
    >>> import pandas as pd
    >>> as_float_array(pd.Series(["1.5", "x", None])).tolist()
    [1.5, nan, nan]
    """
    return pd.to_numeric(x, errors="coerce").to_numpy(dtype=float, na_value=np.nan) \
        if isinstance(x, pd.Series) else np.asarray(x, dtype=float)


def node_depth(top: Any, bottom: Any) -> np.ndarray:
    """Node (mid-layer) depth, the depth at which an observation is compared with the model.

    Parameters
    ----------
    top, bottom : array_like
        Layer bounds (m).

    Returns
    -------
    numpy.ndarray
        ``(top + bottom) / 2`` (m), spec §5.1 column 5.

    Examples
    --------
    >>> node_depth([0.0, 0.1], [0.1, 0.3]).tolist()
    [0.05, 0.2]
    """
    return (np.asarray(top, dtype=float) + np.asarray(bottom, dtype=float)) / 2.0


def profile_codes(df: pd.DataFrame) -> tuple[np.ndarray, int]:
    """Integer code of each row's profile, in order of first appearance, and the count.

    Parameters
    ----------
    df : pandas.DataFrame
        A table with a ``profile_id`` column.

    Returns
    -------
    codes : numpy.ndarray of int, shape [N]
        ``pandas.factorize`` codes of ``profile_id`` (unsorted; -1 for a missing id).
    n_profiles : int
        Number of distinct ids.

    Examples
    --------
    >>> import pandas as pd
    >>> codes, n = profile_codes(pd.DataFrame({"profile_id": ["b", "a", "b"]}))
    >>> codes.tolist(), n
    ([0, 1, 0], 2)
    """
    codes, uniq = pd.factorize(df["profile_id"], sort=False)
    return codes, len(uniq)
