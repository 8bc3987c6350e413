"""Converter of a plain layer table (a DataFrame or CSV file) to a profile table, with units."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from xproda.errors import ProfileError
from xproda.sites.observations.harmonise import Conventions, harmonise, read_table
from xproda.sites.observations.pedotransfer import resolve_pedotransfer
from xproda.sites.observations.report import CleaningReport, Ledger
from xproda.sites.observations.schema import (
    DEPTH_UNITS_ATTR,
    PROFILE_COLUMNS,
    REQUIRED_COLUMNS,
    SOC_MAX_PLAUSIBLE,
    as_float_array,
)
from xproda.sites.observations.validation import (
    DEPTH_MAX_PLAUSIBLE,
    THICKNESS_MAX_PLAUSIBLE,
    THICKNESS_UNAMBIGUOUS,
    Problem,
    ProfileValidationError,
    ValidationReport,
    missing_columns_message,
)

__all__ = ["from_table"]


def _unit_key(u: str) -> str:
    return (str(u).strip().replace(" ", "").replace("gC", "g").replace("·", "")
            .replace("^", "").replace("**", ""))


_DEPTH_UNITS = {"m": 1.0, "cm": 0.01, "mm": 0.001}
#: SOC density units -> factor to g m-3
_DENSITY_UNITS = {"g/m3": 1.0, "gm-3": 1.0, "kg/m3": 1e3, "kgm-3": 1e3, "mg/cm3": 1e3,
                  "mgcm-3": 1e3, "g/dm3": 1e3, "gdm-3": 1e3, "g/L": 1e3, "g/cm3": 1e6,
                  "gcm-3": 1e6, "Mg/m3": 1e6, "t/m3": 1e6}
#: organic-carbon content units -> factor to g kg-1
_CONTENT_UNITS = {"g/kg": 1.0, "gkg-1": 1.0, "mg/g": 1.0, "mgg-1": 1.0, "%": 10.0,
                  "percent": 10.0, "fraction": 1000.0, "kg/kg": 1000.0, "g/g": 1000.0}
#: bulk density units -> factor to kg m-3
_BD_UNITS = {"kg/m3": 1.0, "kgm-3": 1.0, "g/cm3": 1e3, "gcm-3": 1e3, "Mg/m3": 1e3,
             "Mgm-3": 1e3, "t/m3": 1e3, "kg/dm3": 1e3, "g/L": 1.0}
_CRF_UNITS = {"%": 1.0, "percent": 1.0, "fraction": 100.0}


def _unit_factor(table: Mapping[str, float], unit: str, what: str) -> float:
    key = _unit_key(unit)
    if key in table:
        return table[key]
    low = {k.lower(): v for k, v in table.items() if k not in ("Mg/m3", "Mgm-3")}
    if key.lower() in low and not key.startswith("M"):
        return low[key.lower()]
    raise ValueError(f"unknown units {unit!r} for {what}; known: {sorted(table)}")


def _depth_units(raw: pd.DataFrame, units: Mapping[str, str], top: np.ndarray,
                 bot: np.ndarray, cols: tuple[str, str], notes: list[str]) -> tuple[str, str]:
    """Units of the source depth columns: declared, or m where only m fits (else refused)."""
    given = {k: units[k] for k in ("depth", "top", "bottom") if k in units}
    attr = raw.attrs.get(DEPTH_UNITS_ATTR)
    if given:
        for k, u in given.items():
            _unit_factor(_DEPTH_UNITS, u, k)
        u_top = units.get("top", units.get("depth"))
        u_bot = units.get("bottom", units.get("depth"))
        if u_top is None or u_bot is None:
            raise ProfileError(f"from_table: units={dict(given)!r} gives the units of only one "
                               "of 'top'/'bottom'; pass units={'depth': ...} for both")
        if attr is not None and {u_top, u_bot} != {attr}:
            raise ProfileError(f"from_table: units={dict(given)!r} but the table declares "
                               f"df.attrs[{DEPTH_UNITS_ATTR!r}] = {attr!r}; pass the units the "
                               "table is in")
        return u_top, u_bot
    if attr is not None:
        notes.append(f"depth units {attr!r} from df.attrs[{DEPTH_UNITS_ATTR!r}]")
        return attr, attr
    ok = np.isfinite(top) & np.isfinite(bot) & (top != bot)
    if not ok.any():
        return "m", "m"
    thick = float(np.median(np.abs(bot[ok] - top[ok])))
    if thick < THICKNESS_UNAMBIGUOUS:
        notes.append(f"depth units not given: {cols[0]!r}/{cols[1]!r} taken as m (median layer "
                     f"thickness {thick:g}; read as cm the median layer would be thinner than "
                     "1 cm)")
        return "m", "m"
    raise ProfileError(
        f"from_table: the units of the depth columns {cols[0]!r}/{cols[1]!r} are not given and "
        f"cannot be told from the values (median layer thickness {thick:g}, deepest "
        f"{np.nanmax(np.abs(np.r_[top[ok], bot[ok]])):g}: "
        + ("cm or mm, or m with unusually thick layers" if thick <= THICKNESS_MAX_PLAUSIBLE
           else "cm or mm")
        + "); pass units={'depth': 'cm'} (or 'm', 'mm'), or set "
        f"df.attrs[{DEPTH_UNITS_ATTR!r}]")


def _check_depths_in_m(top: np.ndarray, bot: np.ndarray, unit: str,
                       cols: tuple[str, str]) -> None:
    """Refuse depths that are implausible in m once converted (units declared wrongly)."""
    ok = np.isfinite(top) & np.isfinite(bot) & (top != bot)
    if not ok.any():
        return
    thick = float(np.median(np.abs(bot[ok] - top[ok])))
    deepest = float(np.max(np.abs(np.r_[top[ok], bot[ok]])))
    if thick > THICKNESS_MAX_PLAUSIBLE or deepest > DEPTH_MAX_PLAUSIBLE:
        raise ProfileError(
            f"from_table: depth columns {cols[0]!r}/{cols[1]!r} in {unit!r} give a median layer "
            f"thickness of {thick:g} m and a deepest boundary of {deepest:g} m (expected at "
            f"most {THICKNESS_MAX_PLAUSIBLE:g} and {DEPTH_MAX_PLAUSIBLE:g} m): the depths look "
            "like cm; pass units={'depth': 'cm'}")


def from_table(df: pd.DataFrame | str | os.PathLike, *,
               columns: Mapping[str, str] | None = None,
               units: Mapping[str, str] | None = None, pedotransfer: Any = "adams1973",
               mineral_bd: float = 1.64, above_surface: str = "drop", depth_convention: str = "depth",
               missing_bottom: str = "drop", default_thickness: float | None = None,
               duplicates: str = "mean", nested: str | None = None,
               overlaps: str = "drop_profile", lon_sign: str | None = None,
               conflicting_locations: str = "error",
               soc_max: float = SOC_MAX_PLAUSIBLE) -> tuple[pd.DataFrame, CleaningReport]:
    """Convert a plain layer table (one row per layer) to a profile table, converting units.

    Parameters
    ----------
    df : pandas.DataFrame or path
        The table, or a CSV path. Profiles need their location on every row.
    columns : mapping, keyword-only
        Schema name -> source column, for the columns whose names differ: ``profile_id``,
        ``lat``, ``lon``, ``top``, ``bottom``, ``soc``, ``date``, ``weight``, and for a carbon
        *content* ``bulk_density`` and ``coarse_fragments``.
    units : mapping, keyword-only
        Units of the source columns. ``top``/``bottom`` (or ``depth`` for both): ``"m"``,
        ``"cm"``, ``"mm"``; default ``df.attrs["depth_units"]``, else m only where the values
        rule out cm (median layer thickness below 1; from 1 up the units must be given,
        :class:`~xproda.errors.ProfileError` otherwise). Depths that are implausible in m
        once converted (median layer over 2 m thick, or deeper than 20 m) are refused. ``soc``: a density, ``"g/m3"`` (default), ``"kg/m3"``
        (= kg C m-3), ``"g/cm3"``, ``"g/dm3"``; or a content, ``"g/kg"``, ``"%"`` (percent
        C), ``"fraction"``, in which case SOC density = content × bulk density × (1 −
        coarse fragments) as in :func:`soc_density`. ``bulk_density``: ``"g/cm3"`` (default)
        or ``"kg/m3"``. ``coarse_fragments``: ``"%"`` (default) or ``"fraction"``.
    pedotransfer : str, float, callable or None, keyword-only
        Bulk density where it is missing: ``"adams1973"`` (default,
        :func:`bulk_density_adams`), a constant bulk density (g cm-3), a callable organic
        carbon (g kg-1) -> bulk density (g cm-3), or None to drop such layers (reported).
    mineral_bd : float, keyword-only
        Mineral bulk density of the Adams PTF (g cm-3), default 1.64.
    above_surface : {"drop", "shift"}, keyword-only
        Layers with negative depths (organic layers above the mineral surface, WoSIS
        convention, or heights with ``depth_convention="height"``): ``"drop"`` them (default;
        depths below the mineral surface) or ``"shift"`` the profile down so its top layer
        starts at 0 m (depths below the top of the profile, organic layers included).
    depth_convention : {"depth", "height"}, keyword-only
        ``"depth"`` (default): depths below the mineral surface, positive down. ``"height"``:
        heights above the mineral surface (NPCTR convention: forest floor positive, e.g.
        +5 … 0 cm, mineral soil negative, 0 … -20 cm), turned into depths (noted). A
        ``"depth"`` table where most layers have ``top > bottom`` or lie above the surface
        is refused (:class:`~xproda.errors.ProfileError`): it looks like heights.
    missing_bottom : {"drop", "next_top", "thickness"}, keyword-only
        Horizons with only an upper boundary: ``"drop"`` them (default, rule ``no_bottom``),
        close them at the top of the next horizon of the profile (``"next_top"``; the
        deepest has none: dropped, or closed with ``default_thickness``), or give them
        ``default_thickness`` (``"thickness"``). Counts in the report.
    default_thickness : float, keyword-only, optional
        Thickness (m) of the open horizons closed by ``missing_bottom``.
    duplicates : {"mean", "first", "drop_profile", "error"}, keyword-only
        Replicate rows of one (profile, top, bottom): average their numeric columns
        (default), keep the first, drop the profile (each reported, rule
        ``duplicate_layers``), or raise :class:`~xproda.errors.ProfileError`.
    nested : {None, "finest", "parent", "error"}, keyword-only
        Sub-samples nested inside a parent layer of the same profile (e.g. 0-5 and 5-10 cm
        inside 0-30 cm): None (default) treats them as any overlap (``overlaps``);
        ``"finest"`` keeps the sub-samples and drops the layers containing them;
        ``"parent"`` keeps the parent and drops the sub-samples (rule ``nested_layers``);
        ``"error"`` raises :class:`~xproda.errors.ProfileError`.
    overlaps : {"drop_profile", "keep"}, keyword-only
        Profiles whose layers still overlap: drop them (default) or keep them
        (:func:`validate_profiles` then reports them).
    lon_sign : {None, "profile", "east", "west"}, keyword-only
        Longitude sign errors. None (default): rows of a profile whose longitude differs from
        the rest of the profile only by its sign are reported in the notes, not changed.
        ``"profile"``: they get the sign of the profile's majority. ``"east"``/``"west"``: every
        longitude is put in that hemisphere (longitudes in -180 … 180). Flips are noted.
    soc_max : float, keyword-only
        Layers whose SOC density exceeds this (g C m-3) are dropped (rule ``soc_max``);
        default and upper limit :data:`~xproda.sites.observations.schema.SOC_MAX_PLAUSIBLE`
        (150,000: pure organic matter at 0.25 g cm-3).
    conflicting_locations : {"error", "split", "drop_profile"}, keyword-only
        One ``profile_id`` at two or more locations (rows with different ``lat``/``lon``):
        raise :class:`~xproda.errors.ProfileError` listing the ids and their coordinates
        (default), split into one profile per location (ids ``"<id>@1"``, ``"<id>@2"`` in
        order of appearance; ``source_profile_id`` keeps the id; reported), or drop them.
        Never merged.

    Returns
    -------
    profiles : pandas.DataFrame
        Profile table; source columns not mapped are kept as they are.
    report : CleaningReport

    Examples
    --------
    >>> import pandas as pd
    >>> raw = pd.DataFrame({"site": ["a", "a"], "lat": 45.0, "lon": 5.0,
    ...                     "hzn_top": [0, 10], "hzn_bot": [10, 30], "oc_pct": [2.0, 1.0],
    ...                     "db": [1.2, 1.4]})
    >>> prof, rep = from_table(raw, columns={"profile_id": "site", "top": "hzn_top",
    ...                        "bottom": "hzn_bot", "soc": "oc_pct", "bulk_density": "db"},
    ...                        units={"depth": "cm", "soc": "%", "bulk_density": "g/cm3"})
    >>> prof[["top", "bottom", "soc"]].values.tolist()
    [[0.0, 0.1, 24000.0], [0.1, 0.3, 14000.0]]
    """
    conv = Conventions(
        above_surface=above_surface, depth_convention=depth_convention,
        missing_bottom=missing_bottom, default_thickness=default_thickness,
        duplicates=duplicates, nested=nested, overlaps=overlaps, lon_sign=lon_sign,
        conflicting_locations=conflicting_locations, soc_max=soc_max)
    raw = read_table(df, "from_table")
    columns = dict(columns or {})
    units = dict(units or {})
    known = set(PROFILE_COLUMNS) | {"bulk_density", "coarse_fragments"}
    bad = [k for k in columns if k not in known]
    if bad:
        raise ValueError(f"from_table: unknown target column(s) {bad} in columns=; known: "
                         f"{sorted(known)}")
    bad = [k for k in units if k not in known | {"depth"}]
    if bad:
        raise ValueError(f"from_table: unknown key(s) {bad} in units=; known: "
                         f"{sorted(known | {'depth'})}")
    src = {k: columns.get(k, k) for k in known}
    missing = [k for k in REQUIRED_COLUMNS if src[k] not in raw.columns]
    if missing:
        msg = missing_columns_message(missing, raw.columns)
        hint = ", ".join(f"{k!r} looked for {src[k]!r}" for k in missing)
        raise ProfileValidationError(ValidationReport(
            [Problem("missing_columns", "error", f"from_table: {msg} ({hint})")], len(raw), 0))
    for k, v in columns.items():
        if v not in raw.columns:
            raise ProfileValidationError(ValidationReport([Problem(
                "missing_columns", "error", f"from_table: columns={{{k!r}: {v!r}}} but the table "
                f"has no column {v!r}; found {list(raw.columns)}")], len(raw), 0))

    num = {k: as_float_array(raw[src[k]]) for k in ("lat", "lon", "top", "bottom", "soc")}
    depth_notes: list[str] = []
    units_top, units_bot = _depth_units(raw, units, num["top"], num["bottom"],
                                        (src["top"], src["bottom"]), depth_notes)
    f_top = _unit_factor(_DEPTH_UNITS, units_top, "top")
    f_bot = _unit_factor(_DEPTH_UNITS, units_bot, "bottom")
    _check_depths_in_m(num["top"] * f_top, num["bottom"] * f_bot, units_top,
                       (src["top"], src["bottom"]))
    soc_unit = units.get("soc", "g/m3")
    key = _unit_key(soc_unit)
    is_content = key in _CONTENT_UNITS or key.lower() in {k.lower() for k in _CONTENT_UNITS}
    for k in ("lat", "lon", "top", "bottom", "soc"):
        nonnum = np.isnan(num[k]) & raw[src[k]].notna().to_numpy()
        if nonnum.any():
            ex = list(dict.fromkeys(raw.loc[nonnum, src[k]].astype(str)))[:5]
            raise ProfileValidationError(ValidationReport([Problem(
                "non_numeric", "error", f"from_table: column {src[k]!r} ({k}) must be numeric; "
                f"found {ex} in {nonnum.sum()} row(s)", src[k], int(nonnum.sum()))],
                len(raw), 0))
    frame = pd.DataFrame({"profile_id": raw[src["profile_id"]].to_numpy(), "lat": num["lat"],
                          "lon": num["lon"], "top": np.round(num["top"] * f_top, 9),
                          "bottom": np.round(num["bottom"] * f_bot, 9)}, index=raw.index)
    for k in ("date", "weight"):
        if src[k] in raw.columns:
            frame[k] = raw[src[k]].to_numpy()
    notes = depth_notes
    if f_top != 1 or f_bot != 1:
        notes.append(f"depths converted from {units_top} to m")
    if is_content:
        f_c = _unit_factor(_CONTENT_UNITS, soc_unit, "soc")
        frame["_oc"] = num["soc"] * f_c
        if src["bulk_density"] in raw.columns:
            f_bd = _unit_factor(_BD_UNITS, units.get("bulk_density", "g/cm3"), "bulk_density")
            frame["_bd"] = as_float_array(raw[src["bulk_density"]]) * f_bd
        else:
            frame["_bd"] = np.nan
            notes.append("no bulk_density column: bulk density of every layer from the "
                         "pedotransfer function")
        if src["coarse_fragments"] in raw.columns:
            f_cf = _unit_factor(_CRF_UNITS, units.get("coarse_fragments", "%"),
                                "coarse_fragments")
            frame["_crf"] = as_float_array(raw[src["coarse_fragments"]]) * f_cf
        else:
            frame["_crf"] = np.nan
        notes.append(f"soc converted from organic-carbon content ({soc_unit}) to g C m-3 with "
                     "bulk density and coarse fragments")
    else:
        f_s = _unit_factor(_DENSITY_UNITS, soc_unit, "soc")
        frame["soc"] = num["soc"] * f_s
        if f_s != 1:
            notes.append(f"soc converted from {soc_unit} to g C m-3 (x {f_s:g})")
    used = {src[k] for k in known if src[k] in raw.columns and
            (k in REQUIRED_COLUMNS or k in ("date", "weight"))}
    extra = [c for c in raw.columns if c not in used and c not in frame.columns]
    derived = ("bulk_density", "bd_from_ptf", "coarse_fragments")
    frame = pd.concat([frame, raw[extra].rename(
        columns={c: f"{c}_source" for c in extra if c in derived})], axis=1)
    led = Ledger(frame, f"from_table(units={units!r})")
    led.notes.extend(notes)
    ptf, label = resolve_pedotransfer(pedotransfer, mineral_bd)
    out = harmonise(led, ptf=ptf, ptf_label=label, soc_direct=not is_content,
                    conventions=conv)
    return out, led.report()
