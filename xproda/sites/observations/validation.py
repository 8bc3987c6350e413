"""Validation of a profile table against the schema: every problem named, with its profiles.

:func:`validate_profiles` checks a table and returns a :class:`ValidationReport` of
:class:`Problem` entries (or raises :class:`ProfileValidationError` listing the errors);
:func:`require_columns` is the short check of the functions that take a table, and
:func:`overlapping_layers` finds overlapping and duplicated layers of a profile.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import pandas as pd

from xproda.errors import ProfileError
from xproda.sites.observations.schema import (
    DEPTH_UNITS_ATTR,
    PROFILE_COLUMNS,
    REQUIRED_COLUMNS,
    SOC_MAX_PLAUSIBLE,
    declared_depth_units,
)

__all__ = [
    "DEPTH_TOL",
    "SOC_MIN_PLAUSIBLE_MAX",
    "SOC_MIN_PLAUSIBLE_MEDIAN",
    "SOC_MAX_PLAUSIBLE",
    "DEPTH_MAX_PLAUSIBLE",
    "THICKNESS_MAX_PLAUSIBLE",
    "THICKNESS_UNAMBIGUOUS",
    "Problem",
    "ValidationReport",
    "ProfileValidationError",
    "validate_profiles",
    "require_columns",
    "missing_columns_message",
    "location_conflicts_message",
    "overlapping_layers",
]

#: depths closer than this (m) count as equal (float noise of cm -> m conversions)
DEPTH_TOL = 1e-6

#: a table whose largest soc is below this (g C m-3) is in percent, g/kg or kg C m-3
SOC_MIN_PLAUSIBLE_MAX = 100.0
#: a table whose median soc is below this (g C m-3; 0.01 % OC at 1 g cm-3) is in other units
#: (the data sets of ../shared have medians of 7,500 ... 20,000)
SOC_MIN_PLAUSIBLE_MEDIAN = 100.0
#: a table whose deepest bottom exceeds this (m) is in cm
DEPTH_MAX_PLAUSIBLE = 20.0
#: a table whose median layer thickness exceeds this (m) is in cm (no sampling design takes
#: layers of more than 2 m; 0-10/10-20 cm read as m would)
THICKNESS_MAX_PLAUSIBLE = 2.0
#: without declared units, a table whose median layer thickness is below this is in m: read
#: as cm its median layer would be thinner than 1 cm. From 1 to 2 both readings fit and the
#: units must be declared (``depth_units="m"`` or ``df.attrs["depth_units"]``)
THICKNESS_UNAMBIGUOUS = 1.0

_NUMERIC = ("lat", "lon", "top", "bottom", "soc", "weight")


@dataclasses.dataclass(frozen=True)
class Problem:
    """One problem found by :func:`validate_profiles`.

    Attributes
    ----------
    check : str
        Short name of the check (``"missing_columns"``, ``"inverted_depths"``, ...).
    severity : str
        ``"error"`` (the table cannot be used as is) or ``"warning"``.
    message : str
        What was expected and what was found, naming the column and some profiles.
    column : str or None
        The column concerned, if one.
    n_rows : int
        Number of rows (layers) concerned.
    profiles : tuple
        Up to 20 ids of the profiles concerned.
    """

    check: str
    severity: str
    message: str
    column: str | None = None
    n_rows: int = 0
    profiles: tuple = ()


@dataclasses.dataclass
class ValidationReport:
    """Result of :func:`validate_profiles`: the problems found in a profile table.

    Attributes
    ----------
    problems : list of Problem
        Every problem found, errors and warnings.
    n_layers, n_profiles : int
        Size of the table checked.
    """

    problems: list[Problem]
    n_layers: int
    n_profiles: int

    @property
    def errors(self) -> list[Problem]:
        """The problems of severity ``"error"``."""
        return [p for p in self.problems if p.severity == "error"]

    @property
    def warnings(self) -> list[Problem]:
        """The problems of severity ``"warning"``."""
        return [p for p in self.problems if p.severity == "warning"]

    @property
    def ok(self) -> bool:
        """True when there is no error (warnings allowed)."""
        return not self.errors

    def to_frame(self) -> pd.DataFrame:
        """The problems as a DataFrame (check, severity, column, n_rows, message)."""
        cols = ["check", "severity", "column", "n_rows", "message"]
        return pd.DataFrame([{c: getattr(p, c) for c in cols} for p in self.problems],
                            columns=cols)

    def raise_if_errors(self) -> None:
        """Raise :class:`ProfileValidationError` listing every error, if there is one."""
        if not self.ok:
            raise ProfileValidationError(self)

    def __str__(self) -> str:
        head = (f"ValidationReport: {self.n_layers:,} layers in {self.n_profiles:,} profiles, "
                f"{len(self.errors)} error(s), {len(self.warnings)} warning(s)")
        lines = [head] + [f"  [{p.severity}] {p.check}: {p.message}" for p in self.problems]
        return "\n".join(lines)

    __repr__ = __str__


class ProfileValidationError(ProfileError):
    """A profile table failed validation; ``.report`` holds the full :class:`ValidationReport`.

    A :class:`xproda.errors.ProfileError` (hence an ``InputError`` and a ``ValueError``).
    """

    def __init__(self, report: ValidationReport):
        self.report = report
        errs = report.errors
        msg = f"invalid profile table ({len(errs)} problem(s)):\n" + "\n".join(
            f"  - {p.check}: {p.message}" for p in errs)
        super().__init__(msg)


def _fmt_ids(ids: Iterable[Any], k: int = 5) -> str:
    ids = list(dict.fromkeys(ids))
    shown = ", ".join(repr(i.item() if isinstance(i, np.generic) else i) for i in ids[:k])
    more = f" (+{len(ids) - k} more)" if len(ids) > k else ""
    return shown + more


def _ids_of(df: pd.DataFrame, mask: Any) -> tuple:
    if "profile_id" not in df.columns:
        return ()
    vals = df.loc[np.asarray(mask, dtype=bool), "profile_id"]
    return tuple(dict.fromkeys(vals.tolist()))[:20]


def _where(df: pd.DataFrame, mask: Any) -> str:
    ids = _ids_of(df, mask)
    return f" in profile(s) {_fmt_ids(ids)}" if ids else ""


def missing_columns_message(missing: Sequence[str], found: Sequence[Any]) -> str:
    """The message for missing required columns: each with its meaning and units, and a hint.

    Parameters
    ----------
    missing : sequence of str
        Names of :data:`~xproda.sites.observations.schema.PROFILE_COLUMNS` not found.
    found : sequence
        The columns the table has.

    Returns
    -------
    str

    Examples
    --------
    >>> missing_columns_message(["soc"], ["lat"])[:60]
    "missing required column(s): 'soc' (soil organic carbon densi"
    """
    items = ", ".join(f"{c!r} ({PROFILE_COLUMNS[c]['description'].split(';')[0].split(',')[0]}, "
                      f"{PROFILE_COLUMNS[c]['units']})" for c in missing)
    return (f"missing required column(s): {items}; found columns {list(found)}. "
            "Rename columns or use from_table(df, columns={...}, units={...}).")


def require_columns(df: Any, names: Sequence[str], where: str) -> None:
    """Check that ``df`` is a DataFrame with the columns ``names``.

    Parameters
    ----------
    df : object
        The table to check.
    names : sequence of str
        Required columns (names of the schema).
    where : str
        The caller, named in the error messages.

    Raises
    ------
    TypeError
        If ``df`` is not a pandas DataFrame.
    ProfileValidationError
        If columns are missing (one ``missing_columns`` problem naming them).
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in names if c not in df.columns]
    if missing:
        rep = ValidationReport([Problem("missing_columns", "error",
                                        missing_columns_message(missing, df.columns))],
                               len(df), 0)
        raise ProfileValidationError(rep)


def validate_profiles(df: pd.DataFrame, *, strict: bool = True,
                      depth_units: str | None = None) -> ValidationReport:
    """Check a profile table against the schema (:data:`PROFILE_COLUMNS`).

    Errors: missing required columns; non-numeric values in ``lat``, ``lon``, ``top``,
    ``bottom``, ``soc``, ``weight``; missing ids or locations; latitude/longitude out of
    range; one id at two locations (the ids and their coordinates listed); negative depths;
    ``top >= bottom``; depth units (check ``depth_units``, see below); overlapping or
    duplicated layers within a profile; negative ``soc``; ``soc`` in other units (largest
    value or median below 100 g C m-3: percent, g/kg or kg C m-3; median above
    :data:`SOC_MAX_PLAUSIBLE`); negative or non-finite weights. Warnings: missing depths or
    ``soc`` (which :func:`clean_profiles` drops), ``soc`` above :data:`SOC_MAX_PLAUSIBLE`
    (150,000 g C m-3: denser than pure organic matter, check ``soc_range``; the rule
    ``soc_max`` of :func:`clean_profiles` and the converters drop them), dates that are
    neither datetimes nor years.

    **Depth units** are never guessed where both m and cm fit. With ``t`` the median layer
    thickness and ``z`` the deepest ``bottom`` (in the table's numbers):

    - ``z > 20`` or ``t > 2``: cm (error, even when declared ``"m"``: no layer sampling
      design gives layers over 2 m thick, or profiles deeper than 20 m);
    - ``t < 1``: m (read as cm, the median layer would be thinner than 1 cm);
    - ``1 <= t <= 2``: ambiguous: an error unless the units are declared ``"m"`` with
      ``depth_units="m"`` or ``df.attrs["depth_units"] = "m"`` (the converters set it).

    Parameters
    ----------
    df : pandas.DataFrame
        The profile table, one row per layer.
    strict : bool, keyword-only
        If True (default), raise :class:`ProfileValidationError` when any error is found; if
        False, return the report whatever it holds.
    depth_units : {"m"} or None, keyword-only
        Declares the units of ``top``/``bottom`` (default: ``df.attrs["depth_units"]``, else
        undeclared). ``"cm"``/``"mm"`` are refused: the profile table holds m, convert with
        :func:`from_table` (``units={"depth": "cm"}``).

    Returns
    -------
    ValidationReport
        Every problem found (warnings only, when ``strict`` and it returns).

    Raises
    ------
    ProfileValidationError
        If ``strict`` and an error was found. The message lists every error, naming the column,
        what was expected and found, and some of the profiles concerned.

    Examples
    --------
    >>> import pandas as pd
    >>> bad = pd.DataFrame({"profile_id": [1, 1], "lat": [0.0, 0.0], "lon": [0.0, 0.0],
    ...                     "top": [0.0, 30.0], "bottom": [30.0, 100.0], "soc": [1.2, 0.4]})
    >>> rep = validate_profiles(bad, strict=False)
    >>> sorted(p.check for p in rep.errors)
    ['depth_units', 'soc_units']
    """
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"validate_profiles: expected a pandas DataFrame, got {type(df).__name__}")
    declared = declared_depth_units(df, depth_units, where="validate_profiles")
    problems: list[Problem] = []

    def add(check: str, message: str, *, column: str | None = None, mask: Any = None,
            severity: str = "error") -> None:
        n = int(np.count_nonzero(mask)) if mask is not None else 0
        ids = _ids_of(df, mask) if mask is not None else ()
        problems.append(Problem(check, severity, message, column, n, ids))

    missing = [c for c in REQUIRED_COLUMNS if c not in df.columns]
    if missing:
        add("missing_columns", missing_columns_message(missing, df.columns))

    # numeric columns (coerced copies for the checks below)
    num: dict[str, np.ndarray] = {}
    for c in _NUMERIC:
        if c not in df.columns:
            continue
        s = df[c]
        if pd.api.types.is_bool_dtype(s) or not (pd.api.types.is_numeric_dtype(s)
                                                 or s.dtype == object or
                                                 pd.api.types.is_string_dtype(s)):
            add("non_numeric", f"column {c!r} ({PROFILE_COLUMNS[c]['units']}) must be numeric, "
                f"found dtype {s.dtype}", column=c)
            continue
        v = pd.to_numeric(s, errors="coerce")
        bad = v.isna().to_numpy() & s.notna().to_numpy()
        if bad.any():
            examples = list(dict.fromkeys(s[bad].astype(str).tolist()))[:5]
            add("non_numeric", f"column {c!r} ({PROFILE_COLUMNS[c]['units']}) must be numeric; "
                f"found non-numeric values {examples} in {bad.sum()} row(s){_where(df, bad)}",
                column=c, mask=bad)
        num[c] = v.to_numpy(dtype=float, na_value=np.nan)

    n_profiles = int(df["profile_id"].nunique()) if "profile_id" in df.columns else 0

    if "profile_id" in df.columns:
        na = df["profile_id"].isna().to_numpy()
        if na.any():
            add("missing_ids", f"column 'profile_id' has {na.sum()} missing value(s) "
                f"(rows {list(np.flatnonzero(na)[:5])})", column="profile_id", mask=na)

    # locations
    for c, lo, hi, unit in (("lat", -90.0, 90.0, "degrees_north"),
                            ("lon", -180.0, 360.0, "degrees_east")):
        if c not in num:
            continue
        v = num[c]
        na = np.isnan(v)
        if na.any():
            add("missing_location", f"column {c!r} is missing in {na.sum()} row(s)"
                f"{_where(df, na)}; every profile needs a location", column=c, mask=na)
        out = ~na & ((v < lo) | (v > hi))
        if out.any():
            add("location_range", f"column {c!r} must be in [{lo:g}, {hi:g}] {unit}; found "
                f"values {sorted(set(v[out].tolist()))[:5]}{_where(df, out)}",
                column=c, mask=out)
    if "profile_id" in df.columns and "lat" in num and "lon" in num:
        loc = pd.DataFrame({"p": df["profile_id"].to_numpy(), "lat": np.round(num["lat"], 6),
                            "lon": np.round(num["lon"], 6)}).dropna()
        nloc = loc.drop_duplicates().groupby("p", sort=False).size()
        conflict = nloc.index[nloc.to_numpy() > 1]
        if len(conflict):
            mask = df["profile_id"].isin(conflict).to_numpy()
            add("conflicting_locations", f"{len(conflict)} profile id(s) appear at more than "
                f"one location (same id, different lat/lon): {_fmt_ids(conflict)}; "
                f"{location_conflicts_message(loc, conflict)}. One id must be one profile: "
                "give each location its own id, or convert with from_table(..., "
                "conflicting_locations='split'), or lon_sign='profile' for longitude sign errors",
                column="profile_id", mask=mask)

    # depths
    if "top" in num and "bottom" in num:
        top, bot = num["top"], num["bottom"]
        na = np.isnan(top) | np.isnan(bot)
        if na.any():
            add("missing_depths", f"{na.sum()} layer(s) have a missing 'top' or 'bottom'"
                f"{_where(df, na)}; clean_profiles drops them", mask=na, severity="warning")
        neg = ~na & ((top < 0) | (bot < 0))
        if neg.any():
            add("negative_depths", f"depths must be >= 0 m below the mineral soil surface; found "
                f"{neg.sum()} layer(s) with negative 'top' or 'bottom'{_where(df, neg)} "
                "(organic layers above the surface: drop them or shift the profile)",
                column="top", mask=neg)
        inv = ~na & (top >= bot)
        if inv.any():
            i = np.flatnonzero(inv)[0]
            add("inverted_depths", f"expected top < bottom; found {inv.sum()} layer(s) with "
                f"top >= bottom{_where(df, inv)} (e.g. top={top[i]:g}, bottom={bot[i]:g})",
                column="bottom", mask=inv)
        _check_depth_units(add, df, top, bot, na, declared, depth_units)
        if "profile_id" in df.columns:
            ov, dup = overlapping_layers(df["profile_id"].to_numpy(), top, bot)
            if dup.any():
                add("duplicate_layers", f"{dup.sum()} duplicated (profile_id, top, bottom) "
                    f"row(s){_where(df, dup)}; merge replicates (e.g. average them) or give "
                    "them distinct ids", mask=dup)
            if ov.any():
                add("overlapping_layers", f"{ov.sum()} layer(s) overlap another layer of the "
                    f"same profile{_where(df, ov)}; layers of a profile must not overlap",
                    mask=ov)

    # soc
    if "soc" in num:
        soc = num["soc"]
        na = np.isnan(soc)
        if na.any():
            add("missing_soc", f"{na.sum()} layer(s) have a missing 'soc'{_where(df, na)}; "
                "clean_profiles drops them", column="soc", mask=na, severity="warning")
        neg = soc < 0
        if neg.any():
            add("negative_soc", f"'soc' (g m-3) must be >= 0; found {neg.sum()} negative "
                f"value(s) (min {np.nanmin(soc):g}){_where(df, neg)}", column="soc", mask=neg)
        pos = soc[soc > 0]
        convert = ("Convert with from_table(df, units={'soc': 'g/kg'}, columns={'bulk_density': "
                   "...}) or soc_density(oc_g_per_kg, bd_kg_m3, coarse_fragments_pct); kg C "
                   "m-3: units={'soc': 'kg/m3'}")
        med = float(np.median(pos)) if pos.size else np.nan
        if pos.size and pos.max() < SOC_MIN_PLAUSIBLE_MAX:
            add("soc_units", f"'soc' looks like percent, g/kg or kg C m-3 (largest value "
                f"{pos.max():g}); xproda expects the carbon density in g C m-3 (typically "
                f"1e2 … 1e5). {convert}", column="soc")
        elif pos.size and med < SOC_MIN_PLAUSIBLE_MEDIAN:
            add("soc_units", f"'soc' looks like percent, g/kg, kg C m-3 or a density divided "
                f"by 100 or more: its median is {med:g} (< {SOC_MIN_PLAUSIBLE_MEDIAN:g} g C "
                f"m-3; largest value {pos.max():g}); xproda expects the carbon density in "
                f"g C m-3 (medians of real tables: 5e3 … 2e4). {convert}", column="soc")
        elif pos.size and med > SOC_MAX_PLAUSIBLE:
            add("soc_units", f"'soc' looks like a density in other units (e.g. mg C m-3, or "
                f"a carbon content times a bulk density in g cm-3 x 1e3): its median is "
                f"{med:g}, above the densest plausible layer ({SOC_MAX_PLAUSIBLE:,.0f} g C "
                "m-3, SOC_MAX_PLAUSIBLE); xproda expects g C m-3 (medians of real tables: "
                "5e3 … 2e4). Convert with from_table(df, units={'soc': ...})", column="soc")
        huge = soc > SOC_MAX_PLAUSIBLE
        if huge.any():
            add("soc_range", f"{huge.sum()} 'soc' value(s) above {SOC_MAX_PLAUSIBLE:,.0f} g C "
                f"m-3 (max {np.nanmax(soc):g}){_where(df, huge)}: denser than pure organic "
                "matter at 0.25 g cm-3 (SOC_MAX_PLAUSIBLE), a carbon content and a bulk "
                "density that do not occur together. clean_profiles(df, rules=['soc_max', "
                "...]) or a converter (soc_max=) drops them", column="soc", mask=huge,
                severity="warning")

    if "weight" in num:
        w = num["weight"]
        bad = ~np.isfinite(w) | (w < 0)
        if "soc" in num:
            bad &= ~np.isnan(num["soc"])
        if bad.any():
            add("weight", f"'weight' must be finite and >= 0; found {bad.sum()} bad value(s)"
                f"{_where(df, bad)}", column="weight", mask=bad)

    if "date" in df.columns:
        s = df["date"]
        if not (pd.api.types.is_datetime64_any_dtype(s) or pd.api.types.is_numeric_dtype(s)):
            add("date", f"'date' should be datetime64 or a year, found dtype {s.dtype}",
                column="date", severity="warning")
        elif pd.api.types.is_numeric_dtype(s) and s.notna().any():
            y = s.to_numpy(dtype=float, na_value=np.nan)
            odd = ~np.isnan(y) & ((y < 1000) | (y > 3000))
            if odd.any():
                add("date", f"numeric 'date' should be a year; found {sorted(set(y[odd]))[:5]}",
                    column="date", mask=odd, severity="warning")

    report = ValidationReport(problems, len(df), n_profiles)
    if strict:
        report.raise_if_errors()
    return report


def location_conflicts_message(loc: pd.DataFrame, conflict: Any, k: int = 5) -> str:
    """The ids at two or more locations, each with its coordinates (for the error messages).

    Parameters
    ----------
    loc : pandas.DataFrame
        Columns ``p`` (profile id), ``lat``, ``lon`` (degrees), one row per layer.
    conflict : sequence
        The ids found at more than one location.
    k : int
        Number of ids listed.

    Returns
    -------
    str
        ``"'a' at [[10.0, 20.0], [10.0, -20.0]] (longitude sign differs); ..."``.

    Examples
    --------
    >>> import pandas as pd
    >>> loc = pd.DataFrame({"p": ["a", "a"], "lat": [1.0, 1.0], "lon": [20.0, -20.0]})
    >>> location_conflicts_message(loc, ["a"])
    "'a' at [[1.0, 20.0], [1.0, -20.0]] (longitude sign differs)"
    """
    parts = []
    for pid in list(conflict)[:k]:
        pts = loc.loc[loc["p"] == pid, ["lat", "lon"]].drop_duplicates().to_numpy()
        hint = ""
        if (len(pts) == 2 and pts[0, 0] == pts[1, 0] and pts[0, 1] == -pts[1, 1]
                and pts[0, 1] != 0):
            hint = " (longitude sign differs)"
        pid = pid.item() if isinstance(pid, np.generic) else pid
        parts.append(f"{pid!r} at {pts[:4].tolist()}{hint}")
    more = f"; (+{len(conflict) - k} more)" if len(conflict) > k else ""
    return "; ".join(parts) + more


def _check_depth_units(add: Any, df: pd.DataFrame, top: np.ndarray, bot: np.ndarray,
                       na: np.ndarray, declared: str | None, given: str | None) -> None:
    """The ``depth_units`` check of :func:`validate_profiles` (see its docstring)."""
    how = "depth_units=" if given is not None else f"df.attrs[{DEPTH_UNITS_ATTR!r}]"
    if declared in ("cm", "mm"):
        add("depth_units", f"'top'/'bottom' are declared in {declared} ({how}{declared!r}); a "
            "profile table holds depths in m: convert with from_table(df, "
            f"units={{'depth': {declared!r}}})", column="top")
        return
    ok = ~na & (top < bot)
    if not ok.any():
        return
    thick = float(np.median(bot[ok] - top[ok]))
    deepest = float(np.nanmax(bot[~na]))
    to_cm = "divide by 100 or convert with from_table(df, units={'depth': 'cm'})"
    if deepest > DEPTH_MAX_PLAUSIBLE:
        big = ~na & (bot > DEPTH_MAX_PLAUSIBLE)
        add("depth_units", f"depths look like cm, expected m: deepest 'bottom' is "
            f"{deepest:g} (> {DEPTH_MAX_PLAUSIBLE:g} m){_where(df, big)}; {to_cm}",
            column="bottom", mask=big)
    elif thick > THICKNESS_MAX_PLAUSIBLE:
        add("depth_units", f"depths look like cm, expected m: the median layer thickness "
            f"('bottom' - 'top') is {thick:g} (> {THICKNESS_MAX_PLAUSIBLE:g} m; deepest "
            f"'bottom' {deepest:g}){' although declared m' if declared else ''}; {to_cm}",
            column="bottom", mask=ok)
    elif declared is None and thick >= THICKNESS_UNAMBIGUOUS:
        add("depth_units", f"the units of 'top'/'bottom' are ambiguous: median layer "
            f"thickness {thick:g} and deepest 'bottom' {deepest:g} fit both m and cm, and "
            "the table does not declare them. If they are m, pass depth_units='m' "
            "(validate_profiles, pack_profiles) or set df.attrs['depth_units'] = 'm'; if "
            "cm, convert with from_table(df, units={'depth': 'cm'})", column="top")


def overlapping_layers(pid: np.ndarray, top: np.ndarray, bot: np.ndarray,
                       tol: float = DEPTH_TOL) -> tuple[np.ndarray, np.ndarray]:
    """Rows overlapping an earlier layer of their profile, and duplicated rows (boolean [N]).

    Parameters
    ----------
    pid : numpy.ndarray, shape [N]
        Profile id of each row.
    top, bot : numpy.ndarray of float, shape [N]
        Layer bounds (m); rows with a NaN bound are ignored.
    tol : float
        Depths closer than this (m) count as equal (default :data:`DEPTH_TOL`).

    Returns
    -------
    overlapping : numpy.ndarray of bool, shape [N]
        Both partners of every overlap (a layer starting above the deepest bottom of the
        layers before it, in depth order), duplicates excluded.
    duplicated : numpy.ndarray of bool, shape [N]
        Repeats of an earlier (profile, top, bottom) row.

    Examples
    --------
    >>> import numpy as np
    >>> ov, dup = overlapping_layers(np.array([1, 1, 1, 2]), np.array([0.0, 0.1, 0.1, 0.0]),
    ...                              np.array([0.2, 0.3, 0.3, 0.1]))
    >>> ov.tolist(), dup.tolist()
    ([True, True, False, False], [False, False, True, False])
    """
    n = len(top)
    ov = np.zeros(n, dtype=bool)
    dup = np.zeros(n, dtype=bool)
    ok = ~(np.isnan(top) | np.isnan(bot))
    if n == 0 or not ok.any():
        return ov, dup
    codes = pd.factorize(pid)[0]
    idx = np.flatnonzero(ok)
    order = idx[np.lexsort((bot[idx], top[idx], codes[idx]))]
    c, t, b = codes[order], top[order], bot[order]
    same = c[1:] == c[:-1]
    d = same & (np.abs(t[1:] - t[:-1]) <= tol) & (np.abs(b[1:] - b[:-1]) <= tol)
    # running deepest bottom within the profile, to catch a layer nested in an earlier one
    run = pd.Series(b).groupby(c).cummax().to_numpy()
    o = same & ~d & (t[1:] < run[:-1] - tol)
    dup[order[1:][d]] = True
    ov[order[1:][o]] = True
    # flag both partners of an overlap
    ov[order[:-1][o]] = True
    return ov, dup
