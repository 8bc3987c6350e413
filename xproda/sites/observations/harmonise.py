"""Converter steps shared by every source: reading, locations, depths, SOC density, replicates.

Each converter (:mod:`~xproda.sites.observations.gsif`, :mod:`~xproda.sites.observations.aqp`,
:mod:`~xproda.sites.observations.table`) brings its source to an internal frame and hands it
to :func:`harmonise`, which applies the same rules in the same order and records them.
The conventions of real databases (heights above the mineral surface, horizons with only an
upper boundary, nested sub-samples, replicate rows, longitude sign errors, one id at two
places, implausible densities) are options of every converter, gathered in
:class:`Conventions` so that each concept has one name and one meaning everywhere.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np
import pandas as pd

from xproda.errors import OptionError, ProfileError
from xproda.sites.observations.pedotransfer import VAN_BEMMELEN, soc_density
from xproda.sites.observations.report import Ledger
from xproda.sites.observations.schema import (
    DEPTH_UNITS_ATTR,
    PROFILE_COLUMNS,
    SOC_MAX_PLAUSIBLE,
    as_float_array,
    profile_codes,
)
from xproda.sites.observations.validation import (
    DEPTH_TOL,
    location_conflicts_message,
    overlapping_layers,
)

__all__ = ["Conventions", "read_table", "harmonise", "cm_to_m", "nested_layers"]


def _choice(name: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise OptionError(f"{name}={value!r}: expected one of {list(allowed)}")


@dataclasses.dataclass(frozen=True)
class Conventions:
    """The conventions options of the converters (each documented in the converters).

    Attributes
    ----------
    above_surface : {"drop", "shift"}
        Layers with negative depth (above the mineral surface): dropped (depths below the
        mineral surface) or the profile shifted down (depths below the top of the profile,
        organic layers included).
    depth_convention : {"depth", "height"}
        ``"depth"``: depths below the mineral surface, positive down (WoSIS; organic layers
        negative). ``"height"``: heights above the mineral surface (NPCTR: forest floor
        positive, e.g. +5 … 0 cm, mineral soil negative, 0 … -20 cm).
    missing_bottom : {"drop", "next_top", "thickness"}
        Horizons with only an upper boundary: dropped, closed at the top of the next horizon
        of the profile, or given ``default_thickness``.
    default_thickness : float or None
        Thickness (m) given to open horizons (``"thickness"``) or to the deepest open horizon
        of a profile (``"next_top"``; None drops it).
    duplicates : {"mean", "first", "drop_profile", "error"}
        Replicate rows of one (profile, top, bottom).
    nested : {None, "finest", "parent", "error"}
        Sub-samples nested in a parent layer: None treats them as any overlap (``overlaps``),
        ``"finest"`` keeps the sub-samples (drops the layers containing another),
        ``"parent"`` keeps the parent (drops the layers inside another), ``"error"`` raises.
    overlaps : {"drop_profile", "keep"}
        Profiles whose layers (still) overlap.
    lon_sign : {None, "profile", "east", "west"}
        Longitude sign errors: None reports the rows of a profile whose longitude sign differs
        from the rest of the profile (nothing changed); ``"profile"`` flips them to the
        profile's majority sign; ``"east"``/``"west"`` flips every longitude to that
        hemisphere (longitudes in -180 … 180).
    conflicting_locations : {"error", "split", "drop_profile"}
        One id at two or more locations: raise, split into one profile per location (ids
        ``"<id>@1"``, ``"<id>@2"``, ...; ``source_profile_id`` keeps the id), or drop.
    soc_max : float
        Layers denser than this (g C m-3) are dropped (rule ``soc_max``); at most
        :data:`~xproda.sites.observations.schema.SOC_MAX_PLAUSIBLE` (150,000).
    """

    above_surface: str = "drop"
    depth_convention: str = "depth"
    missing_bottom: str = "drop"
    default_thickness: float | None = None
    duplicates: str = "mean"
    nested: str | None = None
    overlaps: str = "drop_profile"
    lon_sign: str | None = None
    conflicting_locations: str = "error"
    soc_max: float = SOC_MAX_PLAUSIBLE

    def __post_init__(self) -> None:
        _choice("above_surface", self.above_surface, ("drop", "shift"))
        _choice("depth_convention", self.depth_convention, ("depth", "height"))
        _choice("missing_bottom", self.missing_bottom, ("drop", "next_top", "thickness"))
        _choice("duplicates", self.duplicates, ("mean", "first", "drop_profile", "error"))
        _choice("nested", self.nested, (None, "finest", "parent", "error"))
        _choice("overlaps", self.overlaps, ("drop_profile", "keep"))
        _choice("lon_sign", self.lon_sign, (None, "profile", "east", "west"))
        _choice("conflicting_locations", self.conflicting_locations,
                ("error", "split", "drop_profile"))
        dt = self.default_thickness
        if dt is not None and not (isinstance(dt, (int, float)) and np.isfinite(dt) and dt > 0):
            raise OptionError(f"default_thickness={dt!r}: expected a thickness > 0 in m "
                              "(or None)")
        if self.missing_bottom == "thickness" and dt is None:
            raise OptionError("missing_bottom='thickness' needs default_thickness= (m)")
        if self.missing_bottom == "drop" and dt is not None:
            raise OptionError(f"default_thickness={dt!r} is used with missing_bottom="
                              "'thickness' or 'next_top', not with 'drop'")
        sm = self.soc_max
        if not (isinstance(sm, (int, float)) and 0 < sm <= SOC_MAX_PLAUSIBLE):
            raise OptionError(f"soc_max={sm!r}: expected a bound in (0, "
                              f"{SOC_MAX_PLAUSIBLE:,.0f}] g C m-3 (validate_profiles flags "
                              "denser layers)")


def read_table(x: Any, what: str) -> pd.DataFrame:
    """A DataFrame as it is, or a CSV file read with :func:`pandas.read_csv`.

    Parameters
    ----------
    x : pandas.DataFrame, str or os.PathLike
        The table or the path of a CSV file.
    what : str
        The caller, named in the error message.

    Returns
    -------
    pandas.DataFrame

    Raises
    ------
    TypeError
        For any other type.
    """
    if isinstance(x, pd.DataFrame):
        return x
    if isinstance(x, (str, os.PathLike)):
        return pd.read_csv(x)
    raise TypeError(f"{what}: expected a DataFrame or a CSV path, got {type(x).__name__}")


def _where(led: Ledger) -> str:
    return led.source.split("(")[0]


def _examples(df: pd.DataFrame, mask: np.ndarray, k: int = 5) -> str:
    ids = list(dict.fromkeys(df.loc[mask, "profile_id"].tolist()))
    more = f" (+{len(ids) - k} more)" if len(ids) > k else ""
    return ", ".join(repr(i.item() if isinstance(i, np.generic) else i) for i in ids[:k]) + more


def _lon_sign(led: Ledger, cv: Conventions) -> None:
    df = led.df
    lon = as_float_array(df["lon"])
    if cv.lon_sign in ("east", "west"):
        if cv.lon_sign == "west" and (lon > 180).any():
            raise ProfileError(f"{_where(led)}: lon_sign='west' expects longitudes in "
                               f"-180 … 180; found {np.nanmax(lon):g} in column 'lon'")
        wrong = lon < 0 if cv.lon_sign == "east" else lon > 0
        if wrong.any():
            df = df.copy()
            df["lon"] = np.where(wrong, -lon, lon)
            led.df = df
            led.note(f"lon_sign={cv.lon_sign!r}: the sign of {int(wrong.sum()):,} longitude(s) "
                     f"flipped into the {cv.lon_sign}ern hemisphere (profiles "
                     f"{_examples(df, wrong)})")
        return
    codes, n = profile_codes(df)
    if n == 0:
        return
    pos = np.bincount(codes, weights=(lon > 0).astype(float), minlength=n)
    neg = np.bincount(codes, weights=(lon < 0).astype(float), minlength=n)
    major = np.sign(pos - neg)  # +1, -1, or 0 (tie: undecidable)
    ref = np.full(n, np.nan)  # |lon| of the majority rows
    maj_rows = np.sign(lon) == major[codes]
    np.fmax.at(ref, codes[maj_rows], np.abs(lon[maj_rows]))
    flip = ((major[codes] != 0) & (np.sign(lon) == -major[codes])
            & (np.abs(np.abs(lon) - ref[codes]) <= 1e-6))
    if not flip.any():
        return
    n_prof = len(np.unique(codes[flip]))
    i = np.flatnonzero(flip)[0]
    example = f"e.g. {df['profile_id'].iloc[i]!r}: {lon[i]:g} vs {-lon[i]:g}"
    if cv.lon_sign == "profile":
        df = df.copy()
        df["lon"] = np.where(flip, -lon, lon)
        led.df = df
        led.note(f"lon_sign='profile': the sign of {int(flip.sum()):,} longitude(s) in {n_prof} "
                 f"profile(s) flipped to their profile's majority ({example})")
    else:
        led.note(f"lon_sign: {int(flip.sum()):,} row(s) in {n_prof} profile(s) have a longitude "
                 f"whose sign differs from the rest of their profile ({example}); not changed "
                 "(lon_sign='profile' flips them)")


def _conflicting_locations(led: Ledger, cv: Conventions) -> None:
    df = led.df
    loc = pd.DataFrame({"p": df["profile_id"].to_numpy(),
                        "lat": np.round(as_float_array(df["lat"]), 6),
                        "lon": np.round(as_float_array(df["lon"]), 6)})
    nloc = loc.drop_duplicates().groupby("p", sort=False).size()
    conflict = nloc.index[nloc.to_numpy() > 1]
    mask = loc["p"].isin(conflict).to_numpy()
    desc = "profiles whose id appears at more than one location"
    if cv.conflicting_locations == "error":
        if len(conflict):
            raise ProfileError(
                f"{_where(led)}: {len(conflict)} profile id(s) appear at more than one location "
                f"(column 'profile_id'; 'lat'/'lon' differ between its rows): "
                f"{location_conflicts_message(loc, conflict)}. Pass "
                "conflicting_locations='split' (one profile per location, reported) or "
                "'drop_profile', lon_sign='profile' for longitude sign errors, or give each "
                "profile its own id")
        led.apply(np.ones(len(df), bool), "conflicting_locations", desc)
    elif cv.conflicting_locations == "drop_profile":
        led.apply(~mask, "conflicting_locations", desc + " dropped")
    else:
        ids = df["profile_id"].to_numpy(dtype=object).copy()
        if mask.any():
            sub = loc[mask]
            number: dict[tuple, int] = {}  # (id, lat, lon) -> k, in order of first appearance
            count: dict[Any, int] = {}
            for key in zip(sub["p"], sub["lat"], sub["lon"]):
                if key not in number:
                    count[key[0]] = count.get(key[0], 0) + 1
                    number[key] = count[key[0]]
            new = np.array([f"{key[0]}@{number[key]}"
                            for key in zip(sub["p"], sub["lat"], sub["lon"])], dtype=object)
            clash = sorted(set(new) & set(map(str, df["profile_id"].unique())))
            if clash:
                raise ProfileError(f"{_where(led)}: conflicting_locations='split' would name "
                                   f"profiles {clash[:5]}, ids the table already has; rename "
                                   "the profiles first")
            ids[mask] = new
            df = df.copy()
            if "source_profile_id" not in df.columns:
                df["source_profile_id"] = df["profile_id"].to_numpy()
            led.df = df
            led.note(f"conflicting_locations='split': {len(conflict)} id(s) at more than one "
                     f"location split into {len(set(new))} profiles: "
                     f"{location_conflicts_message(loc, conflict)}")
        led.relabel(ids, "conflicting_locations",
                    desc + " split, one profile per location (profiles_dropped < 0: added)")


def _depth_convention(led: Ledger, cv: Conventions) -> None:
    df = led.df
    top, bot = as_float_array(df["top"]), as_float_array(df["bottom"])
    both = np.isfinite(top) & np.isfinite(bot)
    if cv.depth_convention == "depth":
        odd = both & ((top > bot) | ((bot <= 0) & (top < 0)))
        if both.any() and odd.sum() > 0.5 * both.sum():
            raise ProfileError(
                f"{_where(led)}: {int(odd.sum()):,} of {int(both.sum()):,} layers have 'top' > "
                "'bottom' or lie entirely above the mineral surface (negative depths), e.g. "
                f"top={top[odd][0]:g}, bottom={bot[odd][0]:g} m in profile "
                f"{df['profile_id'].to_numpy()[odd][0]!r}: the table looks like heights above "
                "the mineral surface (NPCTR convention: forest floor +5 … 0 cm, mineral soil "
                "0 … -20 cm). Pass depth_convention='height', or map 'top'/'bottom' the other "
                "way round")
        return
    new_top = np.where(both, -np.fmax(top, bot), -top)
    new_bot = np.where(both, -np.fmin(top, bot), -bot)
    swapped = int((both & (top < bot)).sum())
    df = df.copy()
    df["top"], df["bottom"] = new_top + 0.0, new_bot + 0.0  # + 0.0: no -0.0
    led.df = df
    n_org = int((new_top < 0).sum())
    led.note(f"depth_convention='height': heights above the mineral surface turned into depths "
             f"below it for {len(df):,} layer(s); {n_org:,} organic layer(s) above the surface "
             f"(negative depth) then follow above_surface={cv.above_surface!r}"
             + (f"; {swapped} layer(s) had their upper boundary in 'bottom'" if swapped else ""))


def _missing_bottom(led: Ledger, cv: Conventions) -> None:
    df = led.df
    top, bot = as_float_array(df["top"]), as_float_array(df["bottom"])
    open_ = np.isfinite(top) & np.isnan(bot)
    rule = "no_bottom"
    if cv.missing_bottom == "drop" or not open_.any():
        led.apply(~open_, rule, "horizons with only an upper boundary (missing 'bottom'; "
                  f"missing_bottom={cv.missing_bottom!r})")
        return
    new = bot.copy()
    if cv.missing_bottom == "thickness":
        new[open_] = top[open_] + cv.default_thickness
        last = np.zeros(len(df), bool)
        msg = (f"missing_bottom='thickness': {int(open_.sum()):,} horizon(s) with only an upper "
               f"boundary closed with default_thickness={cv.default_thickness:g} m")
    else:
        codes, _ = profile_codes(df)
        tops = pd.DataFrame({"c": codes, "t": top}).dropna().drop_duplicates()
        tops = tops.sort_values(["c", "t"], kind="stable")
        tops["next"] = tops.groupby("c")["t"].shift(-1)
        nxt = pd.DataFrame({"c": codes, "t": top}).merge(tops, on=["c", "t"], how="left")
        nxt = nxt["next"].to_numpy(dtype=float, na_value=np.nan)
        closed = open_ & np.isfinite(nxt)
        last = open_ & ~closed
        new[closed] = nxt[closed]
        msg = (f"missing_bottom='next_top': {int(closed.sum()):,} horizon(s) with only an upper "
               "boundary closed at the top of the next horizon of their profile")
        if last.any() and cv.default_thickness is not None:
            new[last] = top[last] + cv.default_thickness
            msg += (f"; {int(last.sum()):,} deepest open horizon(s) closed with "
                    f"default_thickness={cv.default_thickness:g} m")
            last = np.zeros(len(df), bool)
    df = df.copy()
    df["bottom"] = np.round(new, 9)
    led.df = df
    led.note(msg)
    led.apply(~last, rule, "deepest horizons with only an upper boundary (no next horizon to "
              "close them; missing_bottom='next_top' without default_thickness)")


def _duplicates(led: Ledger, cv: Conventions) -> None:
    df = led.df
    key = pd.DataFrame({"p": pd.factorize(df["profile_id"])[0],
                        "t": df["top"].to_numpy(), "b": df["bottom"].to_numpy()})
    dup_any = key.duplicated(keep=False).to_numpy()
    if cv.duplicates == "error":
        if dup_any.any():
            i = np.flatnonzero(dup_any)[0]
            raise ProfileError(
                f"{_where(led)}: {int(key.duplicated().sum()):,} replicate row(s) (same "
                f"'profile_id', 'top', 'bottom') in profile(s) {_examples(df, dup_any)}, e.g. "
                f"{df['profile_id'].iloc[i]!r} {df['top'].iloc[i]:g}-{df['bottom'].iloc[i]:g} m; "
                "pass duplicates='mean' to average them (reported) or give them distinct ids")
        led.apply(np.ones(len(df), bool), "duplicate_layers",
                  "replicate rows of one (profile_id, top, bottom) (duplicates='error')")
    elif cv.duplicates == "drop_profile":
        led.drop_profiles(dup_any, "duplicate_layers",
                          "profiles with replicate rows of one depth interval dropped")
    else:
        later = key.duplicated(keep="first").to_numpy()
        if cv.duplicates == "mean" and later.any():
            df = df.copy()
            sub = df.loc[dup_any]
            gkey = [key.loc[dup_any, c].to_numpy() for c in ("p", "t", "b")]
            g = sub.groupby(gkey, sort=False)
            num_cols = [c for c in sub.columns
                        if pd.api.types.is_numeric_dtype(sub[c])
                        and not pd.api.types.is_bool_dtype(sub[c])
                        and c not in ("lat", "lon", "top", "bottom")]
            for col in num_cols:
                if not pd.api.types.is_float_dtype(df[col]):
                    df[col] = df[col].astype(float)
            means = g[num_cols].transform("mean")
            df.loc[dup_any, num_cols] = means.to_numpy()
            if "bd_from_ptf" in df.columns:
                df.loc[dup_any, "bd_from_ptf"] = g["bd_from_ptf"].transform("any").to_numpy()
            led.df = df
        desc = ("replicate rows of one (profile_id, top, bottom) "
                + ("averaged into one layer (numeric columns)" if cv.duplicates == "mean"
                   else "reduced to the first row"))
        led.apply(~later, "duplicate_layers", desc)


def nested_layers(pid: Any, top: Any, bottom: Any, tol: float = DEPTH_TOL
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Layers that contain another layer of their profile, and layers inside another.

    Parameters
    ----------
    pid : array_like, shape [N]
        Profile id of each row.
    top, bottom : array_like of float, shape [N]
        Layer bounds (m); rows with a NaN bound are ignored. Identical layers (replicates)
        do not count as nested.
    tol : float
        Depths closer than this (m) count as equal.

    Returns
    -------
    parent : numpy.ndarray of bool, shape [N]
        Rows whose layer contains another layer of the profile.
    child : numpy.ndarray of bool, shape [N]
        Rows whose layer lies inside another layer of the profile.

    Examples
    --------
    >>> parent, child = nested_layers(["a"] * 4, [0.0, 0.0, 0.1, 0.3], [0.3, 0.1, 0.2, 0.5])
    >>> parent.tolist(), child.tolist()
    ([True, False, False, False], [False, True, True, False])
    """
    t = np.asarray(top, dtype=float)
    b = np.asarray(bottom, dtype=float)
    n = len(t)
    parent, child = np.zeros(n, bool), np.zeros(n, bool)
    ok = np.isfinite(t) & np.isfinite(b)
    if not ok.any():
        return parent, child
    codes = pd.factorize(np.asarray(pid, dtype=object))[0]
    f = pd.DataFrame({"c": codes[ok], "t": t[ok], "b": b[ok], "i": np.flatnonzero(ok)})
    m = f.merge(f, on="c", suffixes=("_p", "_k"))
    inside = ((m["i_p"] != m["i_k"]) & (m["t_p"] <= m["t_k"] + tol) & (m["b_k"] <= m["b_p"] + tol)
              & ~(((m["t_p"] - m["t_k"]).abs() <= tol) & ((m["b_p"] - m["b_k"]).abs() <= tol)))
    parent[m.loc[inside, "i_p"].to_numpy()] = True
    child[m.loc[inside, "i_k"].to_numpy()] = True
    return parent, child


def _nested(led: Ledger, cv: Conventions) -> None:
    if cv.nested is None:
        return
    df = led.df
    parent, child = nested_layers(df["profile_id"].to_numpy(), as_float_array(df["top"]),
                                  as_float_array(df["bottom"]))
    if cv.nested == "error":
        if parent.any():
            i = np.flatnonzero(parent)[0]
            raise ProfileError(
                f"{_where(led)}: {int(child.sum()):,} sub-sample(s) nested in a parent layer of "
                f"the same profile in profile(s) {_examples(df, parent | child)}, e.g. "
                f"{df['profile_id'].iloc[i]!r} {df['top'].iloc[i]:g}-{df['bottom'].iloc[i]:g} m "
                "contains another layer; pass nested='finest' (keep the sub-samples) or "
                "'parent' (keep the parent layer), both reported")
        led.apply(np.ones(len(df), bool), "nested_layers",
                  "sub-samples nested in a parent layer (nested='error')")
    elif cv.nested == "finest":
        led.apply(~parent, "nested_layers", "parent layers containing finer sub-samples of "
                  "the same profile dropped (nested='finest')")
    else:
        led.apply(~child, "nested_layers", "sub-samples nested in a parent layer of the same "
                  "profile dropped (nested='parent')")


def harmonise(led: Ledger, *, ptf: Any, ptf_label: str, soc_direct: bool,
              conventions: Conventions | None = None) -> pd.DataFrame:
    """Shared converter steps on an internal frame.

    Columns: profile_id, lat, lon, top, bottom (m, or heights with
    ``depth_convention="height"``) and either ``soc`` (g m-3, ``soc_direct``) or ``_oc``
    (g kg-1), ``_bd`` (kg m-3, NaN = missing), ``_crf`` (%, NaN = missing).

    In order, each a rule of ``led`` (also when it removes nothing) or a note: profiles
    without a valid location (``no_location``); longitude signs (``lon_sign``, a note); one id
    at several locations (``conflicting_locations``); heights to depths
    (``depth_convention``, a note; a depth table that looks like heights is refused);
    horizons with only an upper boundary (``no_bottom``); layers without or with a negative
    organic-carbon value (``no_soc``, ``negative_soc``); layers with a missing depth or
    ``top >= bottom`` (``bad_depths``); layers above the mineral surface (``above_surface``:
    dropped or the profile shifted); for a carbon content, bad bulk densities and coarse
    fragments, the pedotransfer bulk density and the SOC density
    (:func:`~xproda.sites.observations.pedotransfer.soc_density`); implausibly dense layers
    (``soc_max``); replicate layers (``duplicate_layers``); nested sub-samples
    (``nested_layers``, with ``nested=``); overlapping layers (``overlapping_layers``). The
    result is sorted by profile (first appearance) and depth, and declares its depth units
    (``attrs["depth_units"] = "m"``).

    Parameters
    ----------
    led : Ledger
        Ledger holding the internal frame (``led.df``); receives every rule and note.
    ptf : callable or None
        Organic carbon (g kg-1) -> bulk density (g cm-3) for missing bulk densities, or None
        to drop such layers (see
        :func:`~xproda.sites.observations.pedotransfer.resolve_pedotransfer`).
    ptf_label : str
        Name of ``ptf`` in the notes.
    soc_direct : bool
        True when the frame holds ``soc`` (a density) rather than a carbon content.
    conventions : Conventions, optional
        The options of the converter (default :class:`Conventions` ()).

    Returns
    -------
    pandas.DataFrame
        The profile table, schema columns first, with a fresh index.

    Raises
    ------
    xproda.errors.ProfileError
        Where an option says ``"error"`` and the case occurs, or a depth table looks like
        heights above the surface.
    """
    cv = conventions if conventions is not None else Conventions()
    df = led.df
    lat, lon = as_float_array(df["lat"]), as_float_array(df["lon"])
    ok = (np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (lon >= -180)
          & (lon <= 360))
    led.drop_profiles(~ok, "no_location", "profiles without a valid latitude/longitude")
    _lon_sign(led, cv)
    _conflicting_locations(led, cv)
    _depth_convention(led, cv)
    _missing_bottom(led, cv)

    df = led.df
    value = df["soc"] if soc_direct else df["_oc"]
    led.apply(value.notna().to_numpy(), "no_soc",
              "layers without an organic-carbon value")
    df = led.df
    value = (df["soc"] if soc_direct else df["_oc"]).to_numpy(dtype=float, na_value=np.nan)
    led.apply(value >= 0, "negative_soc", "layers with a negative organic-carbon value")

    df = led.df
    top, bot = as_float_array(df["top"]), as_float_array(df["bottom"])
    led.apply(np.isfinite(top) & np.isfinite(bot) & (top < bot), "bad_depths",
              "layers with a missing depth or top >= bottom")

    df = led.df
    neg = as_float_array(df["top"]) < 0
    if cv.above_surface == "drop":
        led.apply(~neg, "above_surface", "layers starting above the mineral soil surface "
                  "(negative depth: organic/litter layers)")
    else:
        codes, n = profile_codes(df)
        mins = np.zeros(n)
        np.minimum.at(mins, codes, as_float_array(df["top"]))
        shift = np.minimum(mins, 0.0)[codes]
        if neg.any():
            df = df.copy()
            df["top"] = np.round(df["top"] - shift, 6)
            df["bottom"] = np.round(df["bottom"] - shift, 6)
            led.df = df
            led.note(f"above_surface='shift': {int((mins < 0).sum())} profile(s) with layers "
                     "above the mineral surface shifted so that their top layer starts at 0 m "
                     "(depths below the top of the profile, organic layers included)")

    if not soc_direct:
        df = led.df
        bd = as_float_array(df["_bd"])
        bad_bd = np.isfinite(bd) & (bd <= 0)
        led.apply(~bad_bd, "bad_bulk_density", "layers with a bulk density <= 0")
        df = led.df
        if ptf is None:
            led.apply(np.isfinite(as_float_array(df["_bd"])), "no_bulk_density",
                      "layers without a measured bulk density (pedotransfer=None)")
            df = led.df
        crf = as_float_array(df["_crf"])
        bad_crf = np.isfinite(crf) & ((crf < 0) | (crf > 100))
        led.apply(~bad_crf, "bad_coarse_fragments",
                  "layers with coarse fragments outside 0 … 100 %")
        df = led.df.copy()
        oc = as_float_array(df["_oc"])
        bd = as_float_array(df["_bd"])
        miss = ~np.isfinite(bd)
        if miss.any():
            bd = bd.copy()
            bd[miss] = 1000.0 * np.asarray(ptf(oc[miss]), dtype=float)
            led.note(f"bulk density from pedotransfer {ptf_label} for {int(miss.sum()):,} of "
                     f"{len(bd):,} layers (column bd_from_ptf)")
            if ptf_label.startswith("adams1973"):
                clipped = int((VAN_BEMMELEN * oc[miss] / 10.0 > 100.0).sum())
                if clipped:
                    led.note(f"{clipped} layer(s) with OC > 58 %: organic matter clipped to "
                             "100 % in the pedotransfer function")
        crf = as_float_array(df["_crf"])
        crf_miss = ~np.isfinite(crf)
        if crf_miss.any():
            led.note(f"coarse fragments missing for {int(crf_miss.sum()):,} layer(s): set to 0 %")
            crf = np.where(crf_miss, 0.0, crf)
        full = int((crf >= 100).sum())
        if full:
            led.note(f"{full} layer(s) with 100 % coarse fragments have soc = 0")
        df["soc"] = soc_density(oc, bd, crf)
        df["bulk_density"] = bd
        df["bd_from_ptf"] = miss
        df["coarse_fragments"] = crf
        led.df = df.drop(columns=["_oc", "_bd", "_crf"])

    soc = as_float_array(led.df["soc"])
    led.apply(~(soc > cv.soc_max), "soc_max",
              f"layers with soc above soc_max={cv.soc_max:,.0f} g C m-3 (implausible: denser "
              "than pure organic matter at 0.25 g cm-3, e.g. a high carbon content with a "
              "mineral bulk density)")
    _duplicates(led, cv)
    _nested(led, cv)

    df = led.df
    if cv.overlaps == "drop_profile":
        ov, _ = overlapping_layers(df["profile_id"].to_numpy(), as_float_array(df["top"]),
                                   as_float_array(df["bottom"]))
        led.drop_profiles(ov, "overlapping_layers", "profiles with overlapping layers")

    df = led.df
    codes = pd.factorize(df["profile_id"], sort=False)[0]
    order = np.lexsort((as_float_array(df["bottom"]), as_float_array(df["top"]), codes))
    out = df.iloc[order].reset_index(drop=True)
    front = [c for c in PROFILE_COLUMNS if c in out.columns]
    out = out[front + [c for c in out.columns if c not in front]]
    out.attrs[DEPTH_UNITS_ATTR] = "m"
    return out


def cm_to_m(v: pd.Series) -> np.ndarray:
    """Depths in cm to m, rounded to 1 µm (the float32 noise of the sources).

    Parameters
    ----------
    v : pandas.Series
        Depths (cm); non-numbers become NaN.

    Returns
    -------
    numpy.ndarray

    Examples
    --------
    >>> import pandas as pd
    >>> cm_to_m(pd.Series([0, 12.5, None])).tolist()
    [0.0, 0.125, nan]
    """
    return np.round(as_float_array(v) / 100.0, 6)
