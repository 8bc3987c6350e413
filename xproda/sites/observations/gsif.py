"""Converter of GSIF / WoSIS-style site and horizon tables to a profile table."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from xproda.sites.observations.harmonise import cm_to_m, harmonise, read_table
from xproda.sites.observations.pedotransfer import resolve_pedotransfer
from xproda.sites.observations.report import CleaningReport, Ledger
from xproda.sites.observations.schema import as_float_array
from xproda.sites.observations.validation import (
    Problem,
    ProfileValidationError,
    ValidationReport,
)

__all__ = ["from_gsif"]


def _pick(df: pd.DataFrame, names: Sequence[str], what: str, where: str) -> str:
    for n in names:
        if n in df.columns:
            return n
    raise ProfileValidationError(ValidationReport([Problem(
        "missing_columns", "error", f"{where}: no {what} column; expected one of {list(names)}, "
        f"found {list(df.columns)}")], len(df), 0))


def from_gsif(sites: pd.DataFrame | str | os.PathLike, horizons: pd.DataFrame | str | os.PathLike,
              *, pedotransfer: Any = "adams1973", mineral_bd: float = 1.64,
              bld_units: str = "auto", above_surface: str = "drop", duplicates: str = "mean",
              overlaps: str = "drop_profile") -> tuple[pd.DataFrame, CleaningReport]:
    """Convert GSIF / WoSIS-style site and horizon tables to a profile table.

    Sites: ``SOURCEID``, ``LONWGS84``/``LATWGS84`` (degrees; ``LONGDA94``/``LATGDA94`` are
    accepted and taken as WGS84, the datums differ by ~1 m), optional ``TIMESTRR`` (sampling
    date, days since 1970-01-01). Horizons: ``SOURCEID``, ``UHDICM``/``LHDICM`` (upper/lower
    depth, cm), ``ORCDRC`` (organic carbon, g kg-1 of fine earth), optional ``BLD`` (bulk
    density) and ``CRFVOL`` (coarse fragments, volume %).

    SOC density (g C m-3) = ORCDRC (g kg-1) × BLD (kg m-3) × (1 − CRFVOL/100). Missing
    ``BLD`` comes from the pedotransfer function (flag column ``bd_from_ptf``); missing
    ``CRFVOL`` is taken as 0 %. Both are counted in ``report.notes``. Depths are converted to
    m and rounded to 1 µm (float32 noise of the sources). Horizons without ``ORCDRC`` are
    dropped (rule ``no_soc``); zero values are kept for :func:`clean_profiles`.

    Parameters
    ----------
    sites, horizons : pandas.DataFrame or path
        The two tables, or paths to CSV files.
    bld_units : {"auto", "kg/m3", "g/cm3"}, keyword-only
        Units of ``BLD``. GSIF documents kg m-3 but several exports hold g cm-3; ``"auto"``
        (default) takes g cm-3 when the median value is below 10 (noted in the report).
    pedotransfer : str, float, callable or None, keyword-only
        Bulk density where it is missing: ``"adams1973"`` (default,
        :func:`bulk_density_adams`), a constant bulk density (g cm-3), a callable organic
        carbon (g kg-1) -> bulk density (g cm-3), or None to drop such layers (reported).
    mineral_bd : float, keyword-only
        Mineral bulk density of the Adams PTF (g cm-3), default 1.64.
    above_surface : {"drop", "shift"}, keyword-only
        Layers with negative depths (organic layers above the mineral surface, WoSIS
        convention): ``"drop"`` them (default) or ``"shift"`` the profile down so its top
        layer starts at 0 m.
    duplicates : {"mean", "first", "drop_profile"}, keyword-only
        Replicate rows of one (profile, top, bottom): average their numeric columns
        (default), keep the first, or drop the profile.
    overlaps : {"drop_profile", "keep"}, keyword-only
        Profiles whose layers overlap after merging replicates: drop them (default) or keep
        them (:func:`validate_profiles` then reports them).

    Returns
    -------
    profiles : pandas.DataFrame
        Profile table (:data:`PROFILE_COLUMNS`) sorted by profile (first appearance) and
        depth; extra columns: ``bulk_density`` (kg m-3, as used), ``bd_from_ptf``,
        ``coarse_fragments`` (%, as used) and every other source column.
    report : CleaningReport
        Layers and profiles dropped by each step, and notes.

    Examples
    --------
    >>> import pandas as pd
    >>> sites = pd.DataFrame({"SOURCEID": ["p1"], "LONWGS84": [36.1], "LATWGS84": [-6.9],
    ...                       "TIMESTRR": [15615.0]})
    >>> hz = pd.DataFrame({"SOURCEID": ["p1"] * 2, "UHDICM": [0.0, 20.0],
    ...                    "LHDICM": [20.0, 50.0], "ORCDRC": [10.0, 5.0],
    ...                    "BLD": [1400.0, None], "CRFVOL": [10.0, None]})
    >>> prof, rep = from_gsif(sites, hz)
    >>> prof[["top", "bottom", "soc", "bd_from_ptf"]].round(1)
       top  bottom      soc  bd_from_ptf
    0  0.0     0.2  12600.0        False
    1  0.2     0.5   7814.6         True
    """
    s = read_table(sites, "from_gsif(sites)").copy()
    h = read_table(horizons, "from_gsif(horizons)").copy()
    for need, tab, name in ((("SOURCEID",), s, "sites"),
                            (("SOURCEID", "UHDICM", "LHDICM", "ORCDRC"), h, "horizons")):
        miss = [c for c in need if c not in tab.columns]
        if miss:
            raise ProfileValidationError(ValidationReport([Problem(
                "missing_columns", "error", f"from_gsif: {name} table lacks column(s) {miss} "
                f"(SOURCEID: profile id; UHDICM/LHDICM: depths, cm; ORCDRC: organic carbon, "
                f"g kg-1); found {list(tab.columns)}")], len(tab), 0))
    lon_c = _pick(s, ("LONWGS84", "LONGDA94", "LON", "lon"), "longitude", "from_gsif(sites)")
    lat_c = _pick(s, ("LATWGS84", "LATGDA94", "LAT", "lat"), "latitude", "from_gsif(sites)")

    notes: list[str] = []
    if lon_c != "LONWGS84":
        notes.append(f"coordinates from {lon_c}/{lat_c} taken as WGS84")
    # one row per site; ids listed twice at different places are ambiguous
    locs = s[["SOURCEID", lat_c, lon_c]].drop_duplicates()
    ambiguous = set(locs.loc[locs["SOURCEID"].duplicated(), "SOURCEID"])
    s = s.drop_duplicates("SOURCEID")

    h["_row"] = np.arange(len(h))
    m = h.merge(s, on="SOURCEID", how="left", suffixes=("", "_site"), indicator=True)
    m = m.sort_values("_row", kind="stable").set_index(h.index)
    frame = pd.DataFrame({
        "profile_id": m["SOURCEID"].to_numpy(),
        "lat": as_float_array(m[lat_c]), "lon": as_float_array(m[lon_c]),
        "top": cm_to_m(m["UHDICM"]), "bottom": cm_to_m(m["LHDICM"]),
    }, index=m.index)
    if "TIMESTRR" in m.columns:
        frame["date"] = pd.to_datetime(pd.to_numeric(m["TIMESTRR"], errors="coerce"), unit="D",
                                       origin="unix")
    frame["_oc"] = as_float_array(m["ORCDRC"])
    bd = as_float_array(m["BLD"]) if "BLD" in m.columns else np.full(len(m), np.nan)
    if bld_units == "auto":
        med = np.nanmedian(bd) if np.isfinite(bd).any() else np.nan
        if np.isfinite(med) and med < 10:
            bld_units = "g/cm3"
            notes.append(f"BLD values look like g cm-3 (median {med:.3g}), not kg m-3: "
                         "multiplied by 1000")
        elif np.isfinite(med) and med < 100:
            raise ValueError(f"from_gsif: cannot tell the units of BLD (median {med:.3g}); "
                             "pass bld_units='kg/m3' or 'g/cm3'")
        else:
            bld_units = "kg/m3"
    if bld_units not in ("kg/m3", "g/cm3"):
        raise ValueError(f"bld_units={bld_units!r}: expected 'auto', 'kg/m3' or 'g/cm3'")
    frame["_bd"] = bd * (1000.0 if bld_units == "g/cm3" else 1.0)
    frame["_crf"] = (as_float_array(m["CRFVOL"]) if "CRFVOL" in m.columns
                     else np.full(len(m), np.nan))
    if "CRFVOL" not in m.columns:
        notes.append("no CRFVOL column: coarse fragments taken as 0 %")
    used = {"SOURCEID", lat_c, lon_c, "UHDICM", "LHDICM", "TIMESTRR", "_row", "_merge"}
    extra = [c for c in m.columns if c not in used and c not in frame.columns]
    frame = pd.concat([frame, m[extra]], axis=1)

    led = Ledger(frame, f"from_gsif(pedotransfer={pedotransfer!r})")
    led.notes.extend(notes)
    led.apply((m["_merge"] == "both").to_numpy(), "no_site",
              "horizons whose SOURCEID is not in the sites table")
    led.drop_profiles(led.df["profile_id"].isin(ambiguous).to_numpy(), "ambiguous_site",
                      "profiles listed at more than one location in the sites table")
    n_sites_no_hz = int((~s["SOURCEID"].isin(h["SOURCEID"])).sum())
    if n_sites_no_hz:
        led.note(f"{n_sites_no_hz:,} site(s) without horizons (not counted as profiles in)")
    ptf, label = resolve_pedotransfer(pedotransfer, mineral_bd)
    out = harmonise(led, ptf=ptf, ptf_label=label, above_surface=above_surface,
                    duplicates=duplicates, overlaps=overlaps, soc_direct=False)
    return out, led.report()
