"""Site properties from a profile table: measured layer values averaged over a depth interval.

Profile tables carry measured soil properties per layer besides SOC (GSIF / WoSIS / FEBR
columns such as ``CLYPPT`` clay, ``SNDPPT`` sand, ``PHIHOX`` pH, ``CEC``, ``BLD``; the
converters keep them). :func:`site_properties` turns them into one value per site -- the
thickness-weighted mean over a depth interval, e.g. topsoil clay 0-30 cm -- which training
(:func:`xproda.learning.data.prepare_training_data`, ``site_covariates=``) uses as covariates
measured at the sites.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd

from xproda.sites.observations.schema import as_float_array

__all__ = ["GSIF_PROPERTY_UNITS", "site_properties"]

#: Units of the measured-property columns of GSIF / WoSIS / FEBR horizon tables (after
#: :func:`~xproda.sites.observations.from_gsif`, which keeps them as they are): mass
#: percentages of the fine earth for texture, pH in water (dimensionless), cation exchange
#: capacity in cmol(+) kg-1; ``bulk_density`` (kg m-3, as used for SOC by the converter).
#: The raw ``BLD`` column is absent on purpose: sources store it in g cm-3 or in kg m-3.
GSIF_PROPERTY_UNITS: dict[str, str] = {
    "CLYPPT": "%", "SLTPPT": "%", "SNDPPT": "%", "PHIHOX": "1", "PHIKCL": "1",
    "CEC": "cmol kg-1", "CECSUM": "cmol kg-1", "bulk_density": "kg m-3",
    "ORCDRC": "g kg-1", "CRFVOL": "%",
}


def _label(metres: float) -> str:
    return f"{metres * 100:g}"


def site_properties(
    profiles: pd.DataFrame,
    columns: Sequence[str] | Mapping[str, str],
    *,
    top: float = 0.0,
    bottom: float = 0.3,
    min_coverage: float = 0.5,
    units: Mapping[str, str | None] | None = None,
) -> pd.DataFrame:
    """Thickness-weighted means of measured layer properties over a depth interval, per site.

    Parameters
    ----------
    profiles : DataFrame
        Profile table (:mod:`xproda.sites.observations` schema: ``profile_id``, ``top``,
        ``bottom`` in m) with the property columns.
    columns : sequence of str or mapping
        Property columns to average; a mapping gives the output name of each
        (``{"CLYPPT": "clay"}``). Default output names: ``<column>_<top>-<bottom>cm``, e.g.
        ``CLYPPT_0-30cm``.
    top, bottom : float, keyword-only, default 0 and 0.3
        The depth interval (m below the surface), ``0 <= top < bottom``.
    min_coverage : float, keyword-only, default 0.5
        Smallest fraction of the interval that layers with a value must cover; sites below
        it get NaN (a 0-30 cm mean from one 0-5 cm sample would not represent the interval).
    units : mapping, keyword-only, optional
        Units of the input columns; default :data:`GSIF_PROPERTY_UNITS` for the columns it
        knows, else None (unknown).

    Returns
    -------
    DataFrame
        Indexed by ``profile_id`` (every profile of the table, in table order), one column
        per property, NaN where the interval is not covered enough. ``attrs``:
        ``"column_units"`` (output name -> units or None) and ``"depth_interval_m"`` ``(top,
        bottom)``.

    Raises
    ------
    KeyError
        A column (or ``profile_id``/``top``/``bottom``) absent from the table.
    ValueError
        A non-numeric column, or an invalid interval or coverage.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"profile_id": ["a", "a", "b"], "top": [0.0, 0.1, 0.0],
    ...                    "bottom": [0.1, 0.4, 0.05], "CLYPPT": [20.0, 35.0, 10.0]})
    >>> site_properties(df, {"CLYPPT": "clay"}).round(2)["clay"].tolist()
    [30.0, nan]
    """
    mapping = dict(columns) if isinstance(columns, Mapping) else {
        c: f"{c}_{_label(top)}-{_label(bottom)}cm" for c in columns}
    if not mapping:
        raise ValueError("site_properties: expected at least one column, found none")
    need = ["profile_id", "top", "bottom", *mapping]
    missing = [c for c in need if c not in profiles.columns]
    if missing:
        raise KeyError(f"site_properties: the profile table lacks column(s) {missing}; found "
                       f"{list(profiles.columns)}")
    if not (np.isfinite(top) and np.isfinite(bottom) and 0.0 <= top < bottom):
        raise ValueError(f"site_properties: expected 0 <= top < bottom (m), found top={top}, "
                         f"bottom={bottom}")
    if not 0.0 < min_coverage <= 1.0:
        raise ValueError(f"site_properties: min_coverage must be in (0, 1], found "
                         f"{min_coverage}")
    for c in mapping:
        if not (pd.api.types.is_numeric_dtype(profiles[c]) or profiles[c].isna().all()):
            raise ValueError(f"site_properties: column {c!r} must be numeric, found dtype "
                             f"{profiles[c].dtype}")
    ids = pd.Index(pd.unique(profiles["profile_id"]), name="profile_id")
    codes = ids.get_indexer(profiles["profile_id"])
    t = np.clip(as_float_array(profiles["top"]), top, bottom)
    b = np.clip(as_float_array(profiles["bottom"]), top, bottom)
    overlap = np.where(np.isfinite(t) & np.isfinite(b), np.maximum(b - t, 0.0), 0.0)
    out = {}
    for c, name in mapping.items():
        v = as_float_array(profiles[c])
        w = np.where(np.isfinite(v), overlap, 0.0)
        num = np.bincount(codes, weights=np.where(w > 0, v * w, 0.0), minlength=len(ids))
        den = np.bincount(codes, weights=w, minlength=len(ids))
        ok = den >= min_coverage * (bottom - top) * (1.0 - 1e-9)
        with np.errstate(invalid="ignore", divide="ignore"):
            out[name] = np.where(ok, num / np.where(den > 0, den, 1.0), np.nan)
    res = pd.DataFrame(out, index=ids)
    known = dict(GSIF_PROPERTY_UNITS) if units is None else dict(units)
    res.attrs["column_units"] = {name: known.get(c) for c, name in mapping.items()}
    res.attrs["depth_interval_m"] = (float(top), float(bottom))
    return res
