"""Converter of the aqp ``sierraTransect`` site and horizon tables to a profile table."""

from __future__ import annotations

import os
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

__all__ = ["from_aqp"]


def from_aqp(sites: pd.DataFrame | str | os.PathLike, horizons: pd.DataFrame | str | os.PathLike,
             *, carbon_units: str = "g/kg", pedotransfer: Any = "adams1973",
             mineral_bd: float = 1.64, above_surface: str = "drop", duplicates: str = "mean",
             overlaps: str = "drop_profile") -> tuple[pd.DataFrame, CleaningReport]:
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
    report : CleaningReport
    """
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
    ptf, label = resolve_pedotransfer(pedotransfer, mineral_bd)
    out = harmonise(led, ptf=ptf, ptf_label=label, above_surface=above_surface,
                    duplicates=duplicates, overlaps=overlaps, soc_direct=False)
    return out, led.report()
