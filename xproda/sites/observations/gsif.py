"""Converter of GSIF / WoSIS-style site and horizon tables to a profile table."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from xproda.sites.observations.harmonise import Conventions, cm_to_m, harmonise, read_table
from xproda.sites.observations.pedotransfer import resolve_pedotransfer
from xproda.sites.observations.report import CleaningReport, Ledger
from xproda.sites.observations.schema import SOC_MAX_PLAUSIBLE, as_float_array
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
              bld_units: str = "auto", above_surface: str = "drop", depth_convention: str = "depth",
              missing_bottom: str = "drop", default_thickness: float | None = None,
              duplicates: str = "mean", nested: str | None = None,
              overlaps: str = "drop_profile", lon_sign: str | None = None,
              soc_max: float = SOC_MAX_PLAUSIBLE) -> tuple[pd.DataFrame, CleaningReport]:
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
    conv = Conventions(
        above_surface=above_surface, depth_convention=depth_convention,
        missing_bottom=missing_bottom, default_thickness=default_thickness,
        duplicates=duplicates, nested=nested, overlaps=overlaps, lon_sign=lon_sign,
        soc_max=soc_max)
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
    out = harmonise(led, ptf=ptf, ptf_label=label, soc_direct=False,
                    conventions=conv)
    return out, led.report()
