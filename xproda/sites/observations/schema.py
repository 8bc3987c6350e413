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
    "profile_columns_markdown",
    "node_depth",
    "as_float_array",
    "profile_codes",
]

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
                       "(coarse fragments included), typically 1e2 … 1e5",
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
