"""Converter of the aqp ``sierraTransect`` site and horizon tables to a profile table."""

from __future__ import annotations

import os
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

__all__ = ["from_aqp"]


def from_aqp(sites: pd.DataFrame | str | os.PathLike, horizons: pd.DataFrame | str | os.PathLike,
             *, carbon_units: str = "g/kg", pedotransfer: Any = "adams1973",
             mineral_bd: float = 1.64, above_surface: str = "drop", depth_convention: str = "depth",
             missing_bottom: str = "drop", default_thickness: float | None = None,
             duplicates: str = "mean", nested: str | None = None,
             overlaps: str = "drop_profile", lon_sign: str | None = None,
             soc_max: float = SOC_MAX_PLAUSIBLE) -> tuple[pd.DataFrame, CleaningReport]:
    """Convert the aqp ``sierraTransect`` site and horizon tables to a profile table.

    Sites: ``id``, ``x`` (longitude), ``y`` (latitude), degrees. Horizons: ``id``, ``top``,
    ``bottom`` (cm), ``C`` (organic carbon), ``Db`` (bulk density, g cm-3), optional ``frags``
    (coarse fragments, volume %). SOC density = C (g kg-1) × Db × 1000 (kg m-3) ×
    (1 − frags/100); missing ``Db`` from the pedotransfer function, missing ``frags`` 0 %.

    The R package's documentation gives ``C`` in percent, but its values reach 120 (McCarthy
    A1), impossible for a percentage and typical of g kg-1 for forest A horizons (Dahlgren et
    al. 1997); hence ``carbon_units="g/kg"`` by default.

    Parameters
    ----------
    sites, horizons : pandas.DataFrame or path
        The two tables, or paths to CSV files.
    carbon_units : {"g/kg", "%"}, keyword-only
        Units of ``C``.
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
    report : CleaningReport
    """
    conv = Conventions(
        above_surface=above_surface, depth_convention=depth_convention,
        missing_bottom=missing_bottom, default_thickness=default_thickness,
        duplicates=duplicates, nested=nested, overlaps=overlaps, lon_sign=lon_sign,
        soc_max=soc_max)
    s = read_table(sites, "from_aqp(sites)")
    h = read_table(horizons, "from_aqp(horizons)")
    for need, tab, name in ((("id", "x", "y"), s, "site"),
                            (("id", "top", "bottom", "C"), h, "horizons")):
        miss = [c for c in need if c not in tab.columns]
        if miss:
            raise ProfileValidationError(ValidationReport([Problem(
                "missing_columns", "error", f"from_aqp: {name} table lacks column(s) {miss}; "
                f"found {list(tab.columns)}")], len(tab), 0))
    factor = {"g/kg": 1.0, "%": 10.0, "percent": 10.0}.get(carbon_units)
    if factor is None:
        raise ValueError(f"carbon_units={carbon_units!r}: expected 'g/kg' or '%'")
    c = as_float_array(h["C"])
    if factor == 10.0 and np.nanmax(np.append(c, 0)) > 100:
        raise ValueError(f"from_aqp: carbon_units='%' but C reaches {np.nanmax(c):g} (> 100 %); "
                         "use carbon_units='g/kg'")
    # one row per site; ids listed twice at different places are ambiguous (never merged)
    locs = s[["id", "y", "x"]].drop_duplicates()
    ambiguous = set(locs.loc[locs["id"].duplicated(), "id"])
    site = s.drop_duplicates("id").set_index("id")
    lat = as_float_array(h["id"].map(site["y"]))
    lon = as_float_array(h["id"].map(site["x"]))
    frame = pd.DataFrame({"profile_id": h["id"].to_numpy(), "lat": lat, "lon": lon,
                          "top": cm_to_m(h["top"]), "bottom": cm_to_m(h["bottom"])},
                         index=h.index)
    frame["_oc"] = c * factor
    frame["_bd"] = as_float_array(h["Db"]) * 1000.0 if "Db" in h.columns else np.nan
    frame["_crf"] = as_float_array(h["frags"]) if "frags" in h.columns else np.nan
    extra = [col for col in h.columns if col not in ("id", "top", "bottom")]
    frame = pd.concat([frame, h[extra]], axis=1)
    led = Ledger(frame, f"from_aqp(carbon_units={carbon_units!r})")
    led.apply(h["id"].isin(site.index).to_numpy(), "no_site",
              "horizons whose id is not in the site table")
    led.drop_profiles(led.df["profile_id"].isin(ambiguous).to_numpy(), "ambiguous_site",
                      "profiles listed at more than one location in the site table")
    ptf, label = resolve_pedotransfer(pedotransfer, mineral_bd)
    out = harmonise(led, ptf=ptf, ptf_label=label, soc_direct=False,
                    conventions=conv)
    return out, led.report()
