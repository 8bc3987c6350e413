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

from xproda.sites.observations.schema import PROFILE_COLUMNS, REQUIRED_COLUMNS

__all__ = [
    "DEPTH_TOL",
    "SOC_MIN_PLAUSIBLE_MAX",
    "SOC_MAX_PLAUSIBLE",
    "DEPTH_MAX_PLAUSIBLE",
    "Problem",
    "ValidationReport",
    "ProfileValidationError",
    "validate_profiles",
    "require_columns",
    "missing_columns_message",
    "overlapping_layers",
]

#: depths closer than this (m) count as equal (float noise of cm -> m conversions)
DEPTH_TOL = 1e-6

#: a table whose largest soc is below this (g C m-3) is in percent, g/kg or kg C m-3
SOC_MIN_PLAUSIBLE_MAX = 100.0
#: soc above this (g C m-3) exceeds the carbon density of pure peat (~0.6 t m-3 x 58 % C)
SOC_MAX_PLAUSIBLE = 6e5
#: a table whose deepest bottom exceeds this (m) is in cm
DEPTH_MAX_PLAUSIBLE = 20.0

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


class ProfileValidationError(ValueError):
    """A profile table failed validation; ``.report`` holds the full :class:`ValidationReport`."""

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


def validate_profiles(df: pd.DataFrame, *, strict: bool = True) -> ValidationReport:
    """Check a profile table against the schema (:data:`PROFILE_COLUMNS`).

    Errors: missing required columns; non-numeric values in ``lat``, ``lon``, ``top``,
    ``bottom``, ``soc``, ``weight``; missing ids or locations; latitude/longitude out of
    range; one id at two locations; negative depths; ``top >= bottom``; depths that look like
    cm (deepest bottom > 20 m); overlapping or duplicated layers within a profile; negative
    ``soc``; ``soc`` that looks like percent, g/kg or kg C m-3 (largest value < 100 g C m-3);
    negative or non-finite weights. Warnings: missing depths or ``soc`` (which
    :func:`clean_profiles` drops), ``soc`` above 6e5 g C m-3 (denser than pure peat), dates
    that are neither datetimes nor years.

    Parameters
    ----------
    df : pandas.DataFrame
        The profile table, one row per layer.
    strict : bool, keyword-only
        If True (default), raise :class:`ProfileValidationError` when any error is found; if
        False, return the report whatever it holds.

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
            ex = conflict[0]
            pts = loc.loc[loc.p == ex, ["lat", "lon"]].drop_duplicates().to_numpy().tolist()
            add("conflicting_locations", f"{len(conflict)} profile id(s) appear at more than "
                f"one location (same id, different lat/lon): {_fmt_ids(conflict)}; e.g. "
                f"{ex!r} at {pts[:3]}. Give each profile its own id.",
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
        if (~na).any() and np.nanmax(bot) > DEPTH_MAX_PLAUSIBLE:
            big = ~na & (bot > DEPTH_MAX_PLAUSIBLE)
            add("depth_units", f"depths look like cm, expected m: deepest 'bottom' is "
                f"{np.nanmax(bot):g} (> {DEPTH_MAX_PLAUSIBLE:g} m){_where(df, big)}; divide by "
                "100 or use from_table(df, units={'top': 'cm', 'bottom': 'cm'})",
                column="bottom", mask=big)
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
        if pos.size and pos.max() < SOC_MIN_PLAUSIBLE_MAX:
            add("soc_units", f"'soc' looks like percent, g/kg or kg C m-3 (largest value "
                f"{pos.max():g}); xproda expects the carbon density in g C m-3 (typically "
                "1e2 … 1e5). Convert with from_table(df, units={'soc': 'g/kg'}, "
                "columns={'bulk_density': ...}) or soc_density(oc_g_per_kg, bd_kg_m3, "
                "coarse_fragments_pct); kg C m-3: units={'soc': 'kg/m3'}", column="soc")
        huge = soc > SOC_MAX_PLAUSIBLE
        if huge.any():
            add("soc_range", f"{huge.sum()} 'soc' value(s) above {SOC_MAX_PLAUSIBLE:g} g C m-3 "
                f"(denser than pure peat; max {np.nanmax(soc):g}){_where(df, huge)}",
                column="soc", mask=huge, severity="warning")

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
