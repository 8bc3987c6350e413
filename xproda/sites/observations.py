"""Soil-profile observations: schema, validation, converters, cleaning, layer weights, packing.

xproda keeps soil-profile observations in one **long table** (a pandas DataFrame, one row
per layer, see :data:`PROFILE_COLUMNS`): ``profile_id``, ``lat``/``lon`` (degrees), layer
``top``/``bottom`` depths (m below the mineral soil surface) and ``soc``, the soil organic
carbon *density* in g C m-3 of whole soil, the quantity the models simulate (spec §5.1).

The pipeline is

1. a converter (:func:`from_gsif`, :func:`from_aqp`, :func:`from_table`) brings a source table
   to the schema: units, bulk density (with a documented pedotransfer function where it is
   missing), coarse fragments, organic layers, replicate and overlapping layers;
2. :func:`validate_profiles` checks the table and names every problem;
3. :func:`clean_profiles` applies the per-profile rules of the data assimilation (spec §5.2),
   optionally the "invalid profile" rules used before network training (spec §5.3);
4. :func:`pack_profiles` packs the table into padded ``[site, obs]`` arrays
   (:class:`ProfileBatch`) with the layer weights of spec §5.2 (:func:`layer_weights`), ready
   for the batched kernels (:meth:`ProfileBatch.to_torch`) or xarray
   (:meth:`ProfileBatch.to_xarray`).

Nothing is discarded silently: every converter and :func:`clean_profiles` return a
:class:`CleaningReport` that counts the layers and profiles each rule removed, lists the
removed rows (``report.dropped``) and notes every value that was derived or defaulted.

Example
-------
>>> import pandas as pd
>>> df = pd.DataFrame({
...     "profile_id": ["a"] * 3 + ["b"] * 2,
...     "lat": [10.0] * 3 + [-5.0] * 2, "lon": [20.0] * 3 + [30.0] * 2,
...     "top": [0.0, 0.1, 0.3, 0.0, 0.2], "bottom": [0.1, 0.3, 0.6, 0.2, 0.5],
...     "soc": [20000.0, 12000.0, 5000.0, 8000.0, 0.0]})
>>> report = validate_profiles(df)
>>> clean, rep = clean_profiles(df)
>>> rep.n_profiles_out, rep.n_layers_out
(1, 3)
>>> batch = pack_profiles(clean)
>>> batch.soc.shape, batch.weight[0].round(4).tolist()
((1, 3), [6.0653, 1.3534, 6.0653])
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import xarray as xr

__all__ = [
    "PROFILE_COLUMNS",
    "REQUIRED_COLUMNS",
    "CLEANING_RULES",
    "PEDOTRANSFER_FUNCTIONS",
    "Problem",
    "ValidationReport",
    "ProfileValidationError",
    "CleaningReport",
    "ProfileBatch",
    "validate_profiles",
    "clean_profiles",
    "layer_weights",
    "node_depth",
    "pack_profiles",
    "from_gsif",
    "from_aqp",
    "from_table",
    "bulk_density_adams",
    "soc_density",
    "profile_columns_markdown",
]

# ---------------------------------------------------------------------------------------
# schema
# ---------------------------------------------------------------------------------------

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

_NUMERIC = ("lat", "lon", "top", "bottom", "soc", "weight")

#: depths closer than this (m) count as equal (float noise of cm -> m conversions)
DEPTH_TOL = 1e-6

#: a table whose largest soc is below this (g C m-3) is in percent, g/kg or kg C m-3
SOC_MIN_PLAUSIBLE_MAX = 100.0
#: soc above this (g C m-3) exceeds the carbon density of pure peat (~0.6 t m-3 x 58 % C)
SOC_MAX_PLAUSIBLE = 6e5
#: a table whose deepest bottom exceeds this (m) is in cm
DEPTH_MAX_PLAUSIBLE = 20.0


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


def _num(x: Any) -> np.ndarray:
    """A Series (or array) as a float array; non-numbers and missing values become NaN."""
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


# ---------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------


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


def _missing_columns_message(missing: Sequence[str], found: Sequence[Any]) -> str:
    items = ", ".join(f"{c!r} ({PROFILE_COLUMNS[c]['description'].split(';')[0].split(',')[0]}, "
                      f"{PROFILE_COLUMNS[c]['units']})" for c in missing)
    return (f"missing required column(s): {items}; found columns {list(found)}. "
            "Rename columns or use from_table(df, columns={...}, units={...}).")


def _require_columns(df: Any, names: Sequence[str], where: str) -> None:
    if not isinstance(df, pd.DataFrame):
        raise TypeError(f"{where}: expected a pandas DataFrame, got {type(df).__name__}")
    missing = [c for c in names if c not in df.columns]
    if missing:
        rep = ValidationReport([Problem("missing_columns", "error",
                                        _missing_columns_message(missing, df.columns))],
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
        add("missing_columns", _missing_columns_message(missing, df.columns))

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
            ov, dup = _overlaps(df["profile_id"].to_numpy(), top, bot)
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


def _overlaps(pid: np.ndarray, top: np.ndarray, bot: np.ndarray,
              tol: float = DEPTH_TOL) -> tuple[np.ndarray, np.ndarray]:
    """Rows overlapping an earlier layer of their profile, and duplicated rows (boolean [N])."""
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


# ---------------------------------------------------------------------------------------
# cleaning reports
# ---------------------------------------------------------------------------------------

_RULE_COLUMNS = ["rule", "description", "layers_dropped", "profiles_dropped"]


@dataclasses.dataclass
class CleaningReport:
    """What a converter or :func:`clean_profiles` did: counts in and out, and why rows went.

    ``n_layers_in == n_layers_out + rules.layers_dropped.sum()`` and likewise for profiles.

    Attributes
    ----------
    source : str
        The function (and options) that produced the report.
    n_layers_in, n_profiles_in : int
        Layers (rows) and profiles received.
    n_layers_out, n_profiles_out : int
        Layers and profiles kept.
    rules : pandas.DataFrame
        One row per rule, in the order applied: ``rule``, ``description``,
        ``layers_dropped``, ``profiles_dropped`` (profiles left with no layer by the rule).
    notes : list of str
        Values derived or defaulted (pedotransfer bulk density, coarse fragments set to 0,
        unit conversions, ...).
    dropped : pandas.DataFrame
        The removed rows: ``row`` (index label in the table the rule saw), ``profile_id``,
        ``top``, ``bottom``, ``soc`` (where known) and ``rule``.
    """

    source: str
    n_layers_in: int
    n_profiles_in: int
    n_layers_out: int
    n_profiles_out: int
    rules: pd.DataFrame
    notes: list[str] = dataclasses.field(default_factory=list)
    dropped: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)

    @property
    def layers_dropped(self) -> int:
        """Total number of layers removed."""
        return int(self.rules["layers_dropped"].sum()) if len(self.rules) else 0

    @property
    def profiles_dropped(self) -> int:
        """Total number of profiles removed."""
        return int(self.rules["profiles_dropped"].sum()) if len(self.rules) else 0

    def to_frame(self) -> pd.DataFrame:
        """The per-rule table (a copy): rule, description, layers_dropped, profiles_dropped."""
        return self.rules.copy()

    def __add__(self, other: CleaningReport) -> CleaningReport:
        """Chain two reports (``self`` first): the output of one is the input of the next."""
        if not isinstance(other, CleaningReport):
            return NotImplemented
        if (self.n_layers_out, self.n_profiles_out) != (other.n_layers_in, other.n_profiles_in):
            raise ValueError("cannot chain reports: the first ends with "
                             f"{self.n_layers_out} layers / {self.n_profiles_out} profiles, the "
                             f"second starts with {other.n_layers_in} / {other.n_profiles_in}")
        return CleaningReport(
            source=f"{self.source} + {other.source}",
            n_layers_in=self.n_layers_in, n_profiles_in=self.n_profiles_in,
            n_layers_out=other.n_layers_out, n_profiles_out=other.n_profiles_out,
            rules=pd.concat([self.rules, other.rules], ignore_index=True),
            notes=self.notes + other.notes,
            dropped=pd.concat([d for d in (self.dropped, other.dropped) if len(d)],
                              ignore_index=True) if len(self.dropped) or len(other.dropped)
            else self.dropped)

    def __str__(self) -> str:
        lines = [f"CleaningReport: {self.source}",
                 f"  in : {self.n_layers_in:>9,} layers in {self.n_profiles_in:,} profiles",
                 f"  out: {self.n_layers_out:>9,} layers in {self.n_profiles_out:,} profiles"]
        if len(self.rules):
            with pd.option_context("display.max_colwidth", 80, "display.width", 200):
                tab = self.rules[["rule", "layers_dropped", "profiles_dropped",
                                  "description"]].to_string(index=False)
            lines += ["  " + ln for ln in tab.splitlines()]
        if self.notes:
            lines.append("  notes:")
            lines += [f"    - {n}" for n in self.notes]
        return "\n".join(lines)

    __repr__ = __str__


class _Ledger:
    """Applies row filters to a table and records what each removed."""

    def __init__(self, df: pd.DataFrame, source: str):
        self.df = df
        self.source = source
        self.n_layers_in = len(df)
        self.n_profiles_in = self._np(df)
        self.rows: list[dict[str, Any]] = []
        self.dropped: list[pd.DataFrame] = []
        self.notes: list[str] = []

    @staticmethod
    def _np(df: pd.DataFrame) -> int:
        return int(df["profile_id"].nunique(dropna=False))

    def apply(self, keep: Any, rule: str, description: str) -> None:
        keep = np.asarray(keep, dtype=bool)
        df = self.df
        before = self._np(df)
        if not keep.all():
            removed = df.loc[~keep]
            cols = [c for c in ("profile_id", "top", "bottom", "soc") if c in removed.columns]
            rec = removed[cols].copy()
            rec.insert(0, "row", removed.index)
            rec["rule"] = rule
            self.dropped.append(rec.reset_index(drop=True))
            self.df = df.loc[keep]
        self.rows.append({"rule": rule, "description": description,
                          "layers_dropped": int((~keep).sum()),
                          "profiles_dropped": before - self._np(self.df)})

    def drop_profiles(self, bad_row: Any, rule: str, description: str) -> None:
        """Drop every layer of the profiles having at least one flagged row."""
        bad_row = np.asarray(bad_row, dtype=bool)
        codes = pd.factorize(self.df["profile_id"])[0]
        badp = np.bincount(codes[bad_row], minlength=codes.max() + 1 if len(codes) else 0) > 0
        self.apply(~badp[codes] if len(codes) else bad_row, rule, description)

    def note(self, msg: str) -> None:
        self.notes.append(msg)

    def report(self) -> CleaningReport:
        rules = pd.DataFrame(self.rows, columns=_RULE_COLUMNS)
        rules["layers_dropped"] = rules["layers_dropped"].astype(int)
        rules["profiles_dropped"] = rules["profiles_dropped"].astype(int)
        dropped = (pd.concat(self.dropped, ignore_index=True) if self.dropped else
                   pd.DataFrame(columns=["row", "profile_id", "top", "bottom", "soc", "rule"]))
        return CleaningReport(self.source, self.n_layers_in, self.n_profiles_in, len(self.df),
                              self._np(self.df), rules, list(self.notes), dropped)


# ---------------------------------------------------------------------------------------
# cleaning (spec §5.2, §5.3)
# ---------------------------------------------------------------------------------------


def _group_codes(df: pd.DataFrame) -> tuple[np.ndarray, int]:
    codes, uniq = pd.factorize(df["profile_id"], sort=False)
    return codes, len(uniq)


def _rule_zero(led: _Ledger) -> None:
    df = led.df
    codes, n = _group_codes(df)
    soc = _num(df["soc"])
    zero = soc == 0
    all_zero = np.bincount(codes, weights=(~zero).astype(float), minlength=n) == 0
    drop = zero | all_zero[codes]
    led.apply(~drop, "zero_obs", "spec §5.2 (1): profiles whose obs are all 0 dropped; "
              "otherwise layers with obs == 0 dropped")


def _rule_missing(led: _Ledger) -> None:
    df = led.df
    ok = (np.isfinite(_num(df["top"])) & np.isfinite(_num(df["bottom"]))
          & np.isfinite(_num(df["soc"])))
    led.apply(ok, "missing", "spec §5.2 (2): layers with NaN depth or NaN obs dropped "
              "(profiles left empty dropped)")


def _rule_single(led: _Ledger) -> None:
    codes, n = _group_codes(led.df)
    one = np.bincount(codes, minlength=n) == 1
    led.apply(~one[codes] if n else np.ones(0, bool), "single_layer",
              "spec §5.2 (3): profiles with exactly one layer dropped")


def _profile_stats(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-profile quantities of the §5.3 checks, layers taken in node-depth order."""
    codes, n = _group_codes(df)
    d = node_depth(df["top"], df["bottom"])
    y = _num(df["soc"])
    order = np.lexsort((d, codes))
    c, d, y = codes[order], d[order], y[order]
    cnt = np.bincount(c, minlength=n)
    start = np.cumsum(cnt) - cnt
    last = start + cnt - 1
    md = np.bincount(c, weights=d, minlength=n) / np.maximum(cnt, 1)
    my = np.bincount(c, weights=y, minlength=n) / np.maximum(cnt, 1)
    dd, dy = d - md[c], y - my[c]
    cov = np.bincount(c, weights=dd * dy, minlength=n)
    vd = np.bincount(c, weights=dd * dd, minlength=n)
    vy = np.bincount(c, weights=dy * dy, minlength=n)
    with np.errstate(invalid="ignore", divide="ignore"):
        corr = cov / np.sqrt(vd * vy)
    # first index of the maximum obs (MATLAB max), in depth order
    pos = np.arange(len(y)) - start[c]
    ymax = np.full(n, -np.inf)
    np.maximum.at(ymax, c, y)
    cand = np.where(y == ymax[c], pos, np.iinfo(np.int64).max)
    argmax = np.full(n, np.iinfo(np.int64).max)
    np.minimum.at(argmax, c, cand)
    safe_last = np.clip(last, 0, max(len(y) - 1, 0))
    safe_first = np.clip(start, 0, max(len(y) - 1, 0))
    return {"codes": codes, "count": cnt, "corr": corr, "argmax": argmax,
            "first": y[safe_first] if len(y) else y, "last": y[safe_last] if len(y) else y}


def _rule_nn_increasing(led: _Ledger) -> None:
    s = _profile_stats(led.df)
    bad = (s["count"] > 1) & (s["corr"] > 0)
    led.apply(~bad[s["codes"]], "nn_increasing",
              "spec §5.3: profiles with corr(obs, depth) > 0 (SOC increasing with depth) dropped")


def _rule_nn_max_deepest(led: _Ledger) -> None:
    s = _profile_stats(led.df)
    bad = s["argmax"] == s["count"] - 1
    led.apply(~bad[s["codes"]], "nn_max_deepest",
              "spec §5.3: profiles whose largest obs is in the deepest layer dropped")


def _rule_nn_first_le_last(led: _Ledger) -> None:
    s = _profile_stats(led.df)
    bad = s["first"] <= s["last"]
    led.apply(~bad[s["codes"]], "nn_first_le_last",
              "spec §5.3: profiles with obs(shallowest) <= obs(deepest) dropped")


#: cleaning rules by name (applied in the order given to :func:`clean_profiles`)
CLEANING_RULES: dict[str, Callable[[_Ledger], None]] = {
    "zero_obs": _rule_zero,
    "missing": _rule_missing,
    "single_layer": _rule_single,
    "nn_increasing": _rule_nn_increasing,
    "nn_max_deepest": _rule_nn_max_deepest,
    "nn_first_le_last": _rule_nn_first_le_last,
}

_RULE_SETS: dict[str, tuple[str, ...]] = {
    "proda": ("zero_obs", "missing", "single_layer"),
    "proda_nn": ("zero_obs", "missing", "single_layer", "nn_increasing", "nn_max_deepest",
                 "nn_first_le_last"),
}


def clean_profiles(df: pd.DataFrame, *, rules: str | Sequence[str] = "proda"
                   ) -> tuple[pd.DataFrame, CleaningReport]:
    """Apply the per-profile cleaning rules of the data assimilation and report each.

    ``rules="proda"`` (spec §5.2), in order:

    1. ``zero_obs``: a profile whose obs are all 0 is dropped; otherwise its layers with
       obs == 0 are dropped (a zero obs makes the cen cost infinite);
    2. ``missing``: layers with a NaN depth (``top`` or ``bottom``) or NaN obs are dropped; a
       profile left with none is dropped;
    3. ``single_layer``: a profile with exactly one layer left is dropped.

    ``rules="proda_nn"`` adds the "invalid profile" checks applied before network training
    (spec §5.3), each a rule of its own, with layers in node-depth order:

    4. ``nn_increasing``: corr(obs, node depth) > 0 (SOC increasing with depth);
    5. ``nn_max_deepest``: the largest obs (first one if tied) is in the deepest layer;
    6. ``nn_first_le_last``: obs of the shallowest layer <= obs of the deepest layer.

    A sequence of names from :data:`CLEANING_RULES` applies those rules in that order.

    Parameters
    ----------
    df : pandas.DataFrame
        Profile table (:data:`PROFILE_COLUMNS`; needs ``profile_id``, ``top``, ``bottom``,
        ``soc``). Validate it first (:func:`validate_profiles`).
    rules : str or sequence of str, keyword-only
        ``"proda"`` (default), ``"proda_nn"`` or rule names.

    Returns
    -------
    clean : pandas.DataFrame
        The kept rows, in their original order and with their original index.
    report : CleaningReport
        Counts per rule; ``report.dropped`` lists the removed rows.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"profile_id": [1, 1, 2, 2, 3], "lat": 0.0, "lon": 0.0,
    ...                    "top": [0, .1, 0, .1, 0], "bottom": [.1, .3, .1, .3, .2],
    ...                    "soc": [9e3, 4e3, 0.0, 0.0, 5e3]})
    >>> clean, rep = clean_profiles(df)
    >>> rep.to_frame()[["rule", "layers_dropped", "profiles_dropped"]]
               rule  layers_dropped  profiles_dropped
    0      zero_obs               2                 1
    1       missing               0                 0
    2  single_layer               1                 1
    """
    _require_columns(df, ("profile_id", "top", "bottom", "soc"), "clean_profiles")
    if isinstance(rules, str):
        if rules not in _RULE_SETS:
            raise ValueError(f"rules={rules!r}: expected one of {sorted(_RULE_SETS)} or a "
                             f"sequence of rule names from {list(CLEANING_RULES)}")
        names, label = _RULE_SETS[rules], repr(rules)
    else:
        names, label = tuple(rules), repr(list(rules))
        unknown = [r for r in names if r not in CLEANING_RULES]
        if unknown:
            raise ValueError(f"unknown cleaning rule(s) {unknown}; known: {list(CLEANING_RULES)}")
    led = _Ledger(df, f"clean_profiles(rules={label})")
    for name in names:
        CLEANING_RULES[name](led)
    return led.df, led.report()


# ---------------------------------------------------------------------------------------
# layer weights (spec §5.2)
# ---------------------------------------------------------------------------------------


def _desc_ranks(key: np.ndarray) -> np.ndarray:
    """1-based ranks in descending order along the last axis, ties in original order."""
    order = np.argsort(-key, axis=-1, kind="stable")
    ranks = np.empty(key.shape, dtype=float)
    np.put_along_axis(ranks, order, np.arange(1, key.shape[-1] + 1, dtype=float)
                      * np.ones(key.shape[:-1] + (1,)), axis=-1)
    return ranks


def layer_weights(depth: Any, obs: Any) -> np.ndarray:
    """Layer weights of the cen cost (spec §5.2).

    For each profile, with ``r_s(i)`` the rank of ``|obs_i - mean(obs)|`` and ``r_d(i)`` the
    rank of ``|d_i - mean(d)|``, both in descending order (1 = farthest from the mean; ties
    keep their order, as MATLAB's stable ``sort(..., 'descend')``),
    ``w_i = max(1, 10·exp(-((r_s + r_d)/2 - 1)))``: the layers farthest from the mean obs
    and mean depth weigh up to 10, the others 1. Means are sequential sums divided by the
    count, as in MATLAB, so exact ties break the same way.

    Parameters
    ----------
    depth : array_like, shape [D] or [S, D]
        Node depths (m) of the layers of one profile, or of ``S`` profiles padded with NaN.
    obs : array_like, same shape
        Observed SOC density (g C m-3), NaN in padding.

    Returns
    -------
    numpy.ndarray
        Weights (dimensionless), same shape; 0 where ``depth`` or ``obs`` is NaN.

    Examples
    --------
    >>> w = layer_weights([0.05, 0.15, 0.3, 0.6, 1.0], [20000, 15000, 9000, 5000, 3000])
    >>> w.round(4).tolist()
    [6.0653, 1.0, 1.0, 1.0, 6.0653]
    """
    d = np.asarray(depth, dtype=float)
    y = np.asarray(obs, dtype=float)
    if d.shape != y.shape:
        raise ValueError(f"layer_weights: depth {d.shape} and obs {y.shape} must have the "
                         "same shape")
    if d.ndim not in (1, 2):
        raise ValueError(f"layer_weights: expected 1-D [D] or 2-D [S, D] arrays, got {d.ndim}-D")
    one = d.ndim == 1
    d2, y2 = np.atleast_2d(d), np.atleast_2d(y)
    valid = np.isfinite(d2) & np.isfinite(y2)
    n = valid.sum(axis=-1)
    ranks = []
    for x in (y2, d2):
        xv = np.where(valid, x, 0.0)
        s = np.zeros(x.shape[0])
        for j in range(x.shape[1]):  # sequential sum, like MATLAB's mean
            s = s + xv[:, j]
        with np.errstate(invalid="ignore", divide="ignore"):
            m = s / n
        key = np.where(valid, np.abs(x - m[:, None]), -np.inf)
        ranks.append(_desc_ranks(key))
    r = 0.5 * (ranks[0] + ranks[1])
    w = np.where(valid, np.maximum(1.0, 10.0 * np.exp(-(r - 1.0))), 0.0)
    return w[0] if one else w


# ---------------------------------------------------------------------------------------
# packing
# ---------------------------------------------------------------------------------------


@dataclasses.dataclass
class ProfileBatch:
    """Profiles packed into padded ``[site, obs]`` arrays for the batched kernels.

    Layers of each site are sorted by node depth; positions ``j >= n_layers[s]`` are padding
    (NaN in the float arrays, 0 in ``weight``, False in ``mask``). ``mask`` is True where a
    layer is present and has a finite depth and obs.

    Attributes
    ----------
    site_ids : numpy.ndarray, shape [S]
        Profile ids, in order of first appearance in the table.
    lat, lon : numpy.ndarray, shape [S]
        Location (degrees_north, degrees_east).
    depth : numpy.ndarray, shape [S, D]
        Node depths (m).
    top, bottom : numpy.ndarray, shape [S, D]
        Layer bounds (m).
    soc : numpy.ndarray, shape [S, D]
        Observed SOC density (g C m-3).
    weight : numpy.ndarray, shape [S, D]
        Layer weights (spec §5.2), 0 in padding.
    mask : numpy.ndarray of bool, shape [S, D]
        Valid observations.
    n_layers : numpy.ndarray of int, shape [S]
        Layers per site (rows of the table).
    date : numpy.ndarray or None, shape [S]
        Sampling date of each site (first layer's), if the table had a ``date`` column.
    """

    site_ids: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    depth: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    soc: np.ndarray
    weight: np.ndarray
    mask: np.ndarray
    n_layers: np.ndarray
    date: np.ndarray | None = None

    _LAYERED = ("depth", "top", "bottom", "soc", "weight", "mask")

    def __post_init__(self) -> None:
        s = len(self.site_ids)
        for name in ("lat", "lon", "n_layers"):
            if getattr(self, name).shape != (s,):
                raise ValueError(f"ProfileBatch.{name}: expected shape ({s},), got "
                                 f"{getattr(self, name).shape}")
        shape = self.soc.shape
        if len(shape) != 2 or shape[0] != s:
            raise ValueError(f"ProfileBatch.soc: expected shape ({s}, D), got {shape}")
        for name in self._LAYERED:
            if getattr(self, name).shape != shape:
                raise ValueError(f"ProfileBatch.{name}: expected shape {shape}, got "
                                 f"{getattr(self, name).shape}")
        if self.date is not None and self.date.shape != (s,):
            raise ValueError(f"ProfileBatch.date: expected shape ({s},), got {self.date.shape}")

    def __len__(self) -> int:
        return len(self.site_ids)

    @property
    def n_obs(self) -> int:
        """Padded number of layers ``D``."""
        return self.soc.shape[1]

    def __repr__(self) -> str:
        return (f"ProfileBatch({len(self)} sites, up to {self.n_obs} layers, "
                f"{int(self.mask.sum())} valid obs)")

    def subset(self, idx: Any) -> ProfileBatch:
        """The sites ``idx`` (integer indices, a slice or a boolean mask over sites).

        The layer axis is trimmed to the deepest selected site's ``n_layers``.
        """
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"boolean subset needs shape ({len(self)},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        nl = self.n_layers[idx]
        dmax = int(nl.max()) if nl.size else 0
        kw = {name: getattr(self, name)[idx][:, :dmax] for name in self._LAYERED}
        return ProfileBatch(site_ids=self.site_ids[idx], lat=self.lat[idx], lon=self.lon[idx],
                            n_layers=nl, date=None if self.date is None else self.date[idx], **kw)

    def to_torch(self, dtype: torch.dtype | None = None, device: Any = None, *,
                 fill_value: float | None = None) -> dict[str, torch.Tensor]:
        """The arrays as torch tensors.

        Parameters
        ----------
        dtype : torch.dtype, optional
            Float dtype (default ``torch.float64``).
        device : torch.device or str, optional
            Target device (default CPU).
        fill_value : float, keyword-only, optional
            If given, replaces padding and invalid entries (``~mask``) of ``depth``, ``top``,
            ``bottom`` and ``soc``, so that no NaN enters a differentiable computation
            (``0 * NaN`` is NaN even where masked).

        Returns
        -------
        dict of str to torch.Tensor
            ``lat``, ``lon`` [S]; ``depth``, ``top``, ``bottom``, ``soc``, ``weight`` [S, D]
            (float); ``mask`` [S, D] (bool); ``n_layers`` [S] (int64).
        """
        import torch

        dtype = torch.float64 if dtype is None else dtype
        out: dict[str, torch.Tensor] = {}
        for name in ("lat", "lon", "depth", "top", "bottom", "soc", "weight"):
            a = np.asarray(getattr(self, name), dtype=float)
            if fill_value is not None and name in ("depth", "top", "bottom", "soc"):
                a = np.where(self.mask, a, fill_value)
            out[name] = torch.as_tensor(a, dtype=dtype, device=device)
        out["mask"] = torch.as_tensor(self.mask, dtype=torch.bool, device=device)
        out["n_layers"] = torch.as_tensor(self.n_layers, dtype=torch.int64, device=device)
        return out

    def to_xarray(self) -> xr.Dataset:
        """The batch as an xarray Dataset with dims ``site`` and ``obs``.

        ``site`` is indexed by the profile ids; ``lat``, ``lon`` (and ``date``) are site
        coordinates; ``depth``, ``top``, ``bottom``, ``soc``, ``weight``, ``mask`` are
        ``(site, obs)`` variables and ``n_layers`` a ``site`` variable, each with units.
        """
        import xarray as xr

        def a(name: str, **extra: Any) -> dict[str, Any]:
            base = {"units": PROFILE_COLUMNS[name]["units"],
                    "long_name": PROFILE_COLUMNS[name]["description"].split(";")[0]}
            base.update(extra)
            return base

        so = ("site", "obs")
        data_vars = {
            "soc": (so, self.soc, a("soc", long_name="observed soil organic carbon density "
                                    "(mass of carbon per volume of soil)")),
            "depth": (so, self.depth, {"units": "m", "long_name": "node depth of the layer "
                                       "(mid point)", "positive": "down"}),
            "top": (so, self.top, a("top", positive="down")),
            "bottom": (so, self.bottom, a("bottom", positive="down")),
            "weight": (so, self.weight, {"units": "1", "long_name": "layer weight of the cen "
                                         "cost (spec 5.2)"}),
            "mask": (so, self.mask, {"long_name": "valid observation"}),
            "n_layers": ("site", self.n_layers, {"long_name": "number of layers"}),
        }
        coords: dict[str, Any] = {
            "site": ("site", self.site_ids, {"long_name": "profile id"}),
            "obs": ("obs", np.arange(self.n_obs), {"long_name": "layer index (by depth)"}),
            "lat": ("site", self.lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("site", self.lon, {"units": "degrees_east", "standard_name": "longitude"}),
        }
        if self.date is not None:
            coords["date"] = ("site", self.date, {"long_name": "sampling date"})
        return xr.Dataset(data_vars, coords=coords)

    @classmethod
    def from_xarray(cls, ds: xr.Dataset) -> ProfileBatch:
        """Inverse of :meth:`to_xarray`."""
        return cls(site_ids=ds["site"].values, lat=ds["lat"].values, lon=ds["lon"].values,
                   depth=ds["depth"].values, top=ds["top"].values, bottom=ds["bottom"].values,
                   soc=ds["soc"].values, weight=ds["weight"].values,
                   mask=ds["mask"].values.astype(bool),
                   n_layers=ds["n_layers"].values.astype(np.int64),
                   date=ds["date"].values if "date" in ds.coords else None)

    def to_frame(self) -> pd.DataFrame:
        """Unpack to a profile table (one row per layer, padding removed)."""
        s_idx, j_idx = np.nonzero(np.arange(self.n_obs)[None, :] < self.n_layers[:, None])
        out = pd.DataFrame({"profile_id": self.site_ids[s_idx], "lat": self.lat[s_idx],
                            "lon": self.lon[s_idx], "top": self.top[s_idx, j_idx],
                            "bottom": self.bottom[s_idx, j_idx], "soc": self.soc[s_idx, j_idx],
                            "weight": self.weight[s_idx, j_idx]})
        if self.date is not None:
            out["date"] = self.date[s_idx]
        return out


def pack_profiles(df: pd.DataFrame, *, weights: str | None = "spec") -> ProfileBatch:
    """Pack a (cleaned) profile table into padded ``[site, obs]`` arrays.

    Sites come in order of first appearance of ``profile_id``; the layers of each site are
    sorted by node depth (stable). ``lat``, ``lon`` and ``date`` are those of a site's first
    row.

    Parameters
    ----------
    df : pandas.DataFrame
        Profile table (:data:`PROFILE_COLUMNS`), typically the output of
        :func:`clean_profiles`.
    weights : {"spec", "column", None}, keyword-only
        ``"spec"`` (default): :func:`layer_weights` of each site; ``"column"``: the table's
        ``weight`` column; None: 1 for every valid layer.

    Returns
    -------
    ProfileBatch

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"profile_id": ["x", "y", "x"], "lat": [1.0, 2.0, 1.0],
    ...                    "lon": [3.0, 4.0, 3.0], "top": [0.2, 0.0, 0.0],
    ...                    "bottom": [0.5, 0.3, 0.2], "soc": [4e3, 9e3, 1e4]})
    >>> b = pack_profiles(df)
    >>> b.site_ids.tolist(), b.n_layers.tolist(), b.depth.tolist()
    (['x', 'y'], [2, 1], [[0.1, 0.35], [0.15, nan]])
    """
    _require_columns(df, REQUIRED_COLUMNS, "pack_profiles")
    if weights not in ("spec", "column", None):
        raise ValueError(f"weights={weights!r}: expected 'spec', 'column' or None")
    if weights == "column" and "weight" not in df.columns:
        raise ValueError("weights='column' but the table has no 'weight' column")
    codes, uniq = pd.factorize(df["profile_id"], sort=False)
    if (codes < 0).any():
        raise ValueError("pack_profiles: 'profile_id' has missing values")
    n_sites = len(uniq)
    top = _num(df["top"])
    bot = _num(df["bottom"])
    soc = _num(df["soc"])
    dep = node_depth(top, bot)
    order = np.lexsort((dep, codes))
    c = codes[order]
    n_layers = np.bincount(c, minlength=n_sites).astype(np.int64)
    start = np.cumsum(n_layers) - n_layers
    j = np.arange(len(c)) - start[c]
    dmax = int(n_layers.max()) if n_sites else 0

    def grid(v: np.ndarray, fill: Any = np.nan, dtype: Any = float) -> np.ndarray:
        out = np.full((n_sites, dmax), fill, dtype=dtype)
        out[c, j] = v[order]
        return out

    T, B, Y, Dp = grid(top), grid(bot), grid(soc), grid(dep)
    mask = np.isfinite(Y) & np.isfinite(Dp)
    if weights == "spec":
        W = layer_weights(np.where(mask, Dp, np.nan), np.where(mask, Y, np.nan))
    elif weights == "column":
        W = np.where(mask, grid(_num(df["weight"]), 0.0), 0.0)
    else:
        W = mask.astype(float)
    first_row = np.unique(codes, return_index=True)[1]  # each site's first row (table order)
    date = None
    if "date" in df.columns:
        date = df["date"].to_numpy()[first_row]
    site_ids = np.asarray(uniq.to_numpy() if hasattr(uniq, "to_numpy") else uniq)
    return ProfileBatch(site_ids=site_ids,
                        lat=_num(df["lat"])[first_row],
                        lon=_num(df["lon"])[first_row],
                        depth=Dp, top=T, bottom=B, soc=Y, weight=W, mask=mask,
                        n_layers=n_layers, date=date)


# ---------------------------------------------------------------------------------------
# pedotransfer and density
# ---------------------------------------------------------------------------------------

#: Van Bemmelen factor: organic matter / organic carbon (mass ratio)
VAN_BEMMELEN = 1.724


def bulk_density_adams(oc: Any, *, mineral_bd: float = 1.64) -> np.ndarray:
    """Bulk density from organic carbon, the Adams (1973) mixing-rule pedotransfer function.

    ``BD = 100 / (OM / 0.244 + (100 - OM) / MBD)`` with ``OM = 1.724 · OC`` (organic matter,
    %, van Bemmelen factor), 0.244 g cm-3 the bulk density of pure organic matter and ``MBD``
    the mineral bulk density. OM is clipped to [0, 100] % (OC above 58 % gives 0.244).

    Reference: Adams, W. A. (1973). The effect of organic matter on the bulk and true
    densities of some uncultivated podzolic soils. *Journal of Soil Science* 24(1), 10–17,
    doi:10.1111/j.1365-2389.1973.tb00737.x. The default ``MBD = 1.64 g cm-3`` is a typical
    bulk density of mineral soil, an xproda default rather than a value from Adams (1973);
    Tranter et al. (2007, *Soil Use and Management* 23, 437–443) estimate MBD from texture
    and depth instead, which a callable ``pedotransfer`` can do.

    Parameters
    ----------
    oc : array_like
        Organic carbon content of the fine earth (g kg-1).
    mineral_bd : float, keyword-only
        Bulk density of the mineral fraction (g cm-3), default 1.64.

    Returns
    -------
    numpy.ndarray
        Bulk density of the fine earth (g cm-3).

    Examples
    --------
    >>> round(float(bulk_density_adams(10.0)), 5)  # 1 % OC
    1.49276
    """
    om = np.clip(VAN_BEMMELEN * np.asarray(oc, dtype=float) / 10.0, 0.0, 100.0)
    return 100.0 / (om / 0.244 + (100.0 - om) / mineral_bd)


#: pedotransfer functions by name: organic carbon (g kg-1) -> bulk density (g cm-3)
PEDOTRANSFER_FUNCTIONS: dict[str, Callable[..., np.ndarray]] = {
    "adams1973": bulk_density_adams,
}


def soc_density(oc: Any, bulk_density: Any, coarse_fragments: Any = 0.0) -> np.ndarray:
    """SOC density of whole soil from organic carbon content, bulk density and coarse fragments.

    ``soc = OC · BD · (1 - CF / 100)``; g kg-1 × kg m-3 = g m-3.

    Parameters
    ----------
    oc : array_like
        Organic carbon content of the fine earth (g kg-1).
    bulk_density : array_like
        Bulk density of the fine earth (kg m-3; 1 g cm-3 = 1000 kg m-3).
    coarse_fragments : array_like
        Coarse fragments (> 2 mm), volume % of whole soil (default 0).

    Returns
    -------
    numpy.ndarray
        SOC density (g C m-3).

    Examples
    --------
    >>> float(soc_density(10.0, 1400.0, 10.0))
    12600.0
    """
    return (np.asarray(oc, dtype=float) * np.asarray(bulk_density, dtype=float)
            * (1.0 - np.asarray(coarse_fragments, dtype=float) / 100.0))


def _resolve_ptf(pedotransfer: Any, mineral_bd: float
                 ) -> tuple[Callable[[np.ndarray], np.ndarray] | None, str]:
    if pedotransfer is None:
        return None, "none"
    if isinstance(pedotransfer, str):
        key = pedotransfer.lower()
        if key in ("adams", "adams1973"):
            return ((lambda oc: bulk_density_adams(oc, mineral_bd=mineral_bd)),
                    f"adams1973 (Adams 1973, mineral_bd={mineral_bd:g} g cm-3)")
        raise ValueError(f"pedotransfer={pedotransfer!r}: expected one of "
                         f"{list(PEDOTRANSFER_FUNCTIONS)}, a constant bulk density (g cm-3), a "
                         "callable oc (g kg-1) -> bulk density (g cm-3), or None")
    if isinstance(pedotransfer, (int, float, np.floating)) and not isinstance(pedotransfer, bool):
        v = float(pedotransfer)
        if not 0 < v < 3:
            raise ValueError(f"pedotransfer={v}: a constant bulk density must be in g cm-3 "
                             "(0 < BD < 3)")
        return (lambda oc: np.full(np.shape(oc), v)), f"constant {v:g} g cm-3"
    if callable(pedotransfer):
        return pedotransfer, getattr(pedotransfer, "__name__", "callable")
    raise TypeError(f"pedotransfer: unsupported {type(pedotransfer).__name__}")


# ---------------------------------------------------------------------------------------
# converters
# ---------------------------------------------------------------------------------------


def _read(x: Any, what: str) -> pd.DataFrame:
    if isinstance(x, pd.DataFrame):
        return x
    if isinstance(x, (str, os.PathLike)):
        return pd.read_csv(x)
    raise TypeError(f"{what}: expected a DataFrame or a CSV path, got {type(x).__name__}")


def _harmonise(led: _Ledger, *, ptf: Any, ptf_label: str, above_surface: str,
               duplicates: str, overlaps: str, soc_direct: bool) -> pd.DataFrame:
    """Shared converter steps on an internal frame.

    Columns: profile_id, lat, lon, top, bottom (m) and either ``soc`` (g m-3, ``soc_direct``)
    or ``_oc`` (g kg-1), ``_bd`` (kg m-3, NaN = missing), ``_crf`` (%, NaN = missing).
    """
    df = led.df
    lat, lon = _num(df["lat"]), _num(df["lon"])
    ok = (np.isfinite(lat) & np.isfinite(lon) & (np.abs(lat) <= 90) & (lon >= -180)
          & (lon <= 360))
    led.drop_profiles(~ok, "no_location", "profiles without a valid latitude/longitude")

    df = led.df
    value = df["soc"] if soc_direct else df["_oc"]
    led.apply(value.notna().to_numpy(), "no_soc",
              "layers without an organic-carbon value")
    df = led.df
    value = (df["soc"] if soc_direct else df["_oc"]).to_numpy(dtype=float, na_value=np.nan)
    led.apply(value >= 0, "negative_soc", "layers with a negative organic-carbon value")

    df = led.df
    top, bot = _num(df["top"]), _num(df["bottom"])
    led.apply(np.isfinite(top) & np.isfinite(bot) & (top < bot), "bad_depths",
              "layers with a missing depth or top >= bottom")

    df = led.df
    neg = _num(df["top"]) < 0
    if above_surface == "drop":
        led.apply(~neg, "above_surface", "layers starting above the mineral soil surface "
                  "(negative depth: organic/litter layers)")
    elif above_surface == "shift":
        codes, n = _group_codes(df)
        mins = np.zeros(n)
        np.minimum.at(mins, codes, _num(df["top"]))
        shift = np.minimum(mins, 0.0)[codes]
        if neg.any():
            df = df.copy()
            df["top"] = np.round(df["top"] - shift, 6)
            df["bottom"] = np.round(df["bottom"] - shift, 6)
            led.df = df
            led.note(f"above_surface='shift': {int((mins < 0).sum())} profile(s) with layers "
                     "above the mineral surface shifted so that their top layer starts at 0 m")
    else:
        raise ValueError(f"above_surface={above_surface!r}: expected 'drop' or 'shift'")

    if not soc_direct:
        df = led.df
        bd = _num(df["_bd"])
        bad_bd = np.isfinite(bd) & (bd <= 0)
        led.apply(~bad_bd, "bad_bulk_density", "layers with a bulk density <= 0")
        df = led.df
        if ptf is None:
            led.apply(np.isfinite(_num(df["_bd"])), "no_bulk_density",
                      "layers without a measured bulk density (pedotransfer=None)")
            df = led.df
        crf = _num(df["_crf"])
        bad_crf = np.isfinite(crf) & ((crf < 0) | (crf > 100))
        led.apply(~bad_crf, "bad_coarse_fragments",
                  "layers with coarse fragments outside 0 … 100 %")
        df = led.df.copy()
        oc = _num(df["_oc"])
        bd = _num(df["_bd"])
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
        crf = _num(df["_crf"])
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

    # replicate rows of one depth interval
    df = led.df
    key = pd.DataFrame({"p": pd.factorize(df["profile_id"])[0],
                        "t": df["top"].to_numpy(), "b": df["bottom"].to_numpy()})
    dup_any = key.duplicated(keep=False).to_numpy()
    if duplicates == "drop_profile":
        led.drop_profiles(dup_any, "duplicate_layers",
                          "profiles with replicate rows of one depth interval dropped")
    elif duplicates in ("mean", "first"):
        later = key.duplicated(keep="first").to_numpy()
        if duplicates == "mean" and later.any():
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
                + ("averaged into one layer (numeric columns)" if duplicates == "mean"
                   else "reduced to the first row"))
        led.apply(~later, "duplicate_layers", desc)
    else:
        raise ValueError(f"duplicates={duplicates!r}: expected 'mean', 'first' or "
                         "'drop_profile'")

    df = led.df
    if overlaps == "drop_profile":
        ov, _ = _overlaps(df["profile_id"].to_numpy(), _num(df["top"]), _num(df["bottom"]))
        led.drop_profiles(ov, "overlapping_layers", "profiles with overlapping layers")
    elif overlaps != "keep":
        raise ValueError(f"overlaps={overlaps!r}: expected 'drop_profile' or 'keep'")

    df = led.df
    codes = pd.factorize(df["profile_id"], sort=False)[0]
    order = np.lexsort((_num(df["bottom"]), _num(df["top"]), codes))
    out = df.iloc[order].reset_index(drop=True)
    front = [c for c in PROFILE_COLUMNS if c in out.columns]
    out = out[front + [c for c in out.columns if c not in front]]
    return out


def _depth_m(v: pd.Series) -> np.ndarray:
    return np.round(_num(v) / 100.0, 6)


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
    s = _read(sites, "from_gsif(sites)").copy()
    h = _read(horizons, "from_gsif(horizons)").copy()
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
        "lat": _num(m[lat_c]), "lon": _num(m[lon_c]),
        "top": _depth_m(m["UHDICM"]), "bottom": _depth_m(m["LHDICM"]),
    }, index=m.index)
    if "TIMESTRR" in m.columns:
        frame["date"] = pd.to_datetime(pd.to_numeric(m["TIMESTRR"], errors="coerce"), unit="D",
                                       origin="unix")
    frame["_oc"] = _num(m["ORCDRC"])
    bd = _num(m["BLD"]) if "BLD" in m.columns else np.full(len(m), np.nan)
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
    frame["_crf"] = _num(m["CRFVOL"]) if "CRFVOL" in m.columns else np.full(len(m), np.nan)
    if "CRFVOL" not in m.columns:
        notes.append("no CRFVOL column: coarse fragments taken as 0 %")
    used = {"SOURCEID", lat_c, lon_c, "UHDICM", "LHDICM", "TIMESTRR", "_row", "_merge"}
    extra = [c for c in m.columns if c not in used and c not in frame.columns]
    frame = pd.concat([frame, m[extra]], axis=1)

    led = _Ledger(frame, f"from_gsif(pedotransfer={pedotransfer!r})")
    led.notes.extend(notes)
    led.apply((m["_merge"] == "both").to_numpy(), "no_site",
              "horizons whose SOURCEID is not in the sites table")
    led.drop_profiles(led.df["profile_id"].isin(ambiguous).to_numpy(), "ambiguous_site",
                      "profiles listed at more than one location in the sites table")
    n_sites_no_hz = int((~s["SOURCEID"].isin(h["SOURCEID"])).sum())
    if n_sites_no_hz:
        led.note(f"{n_sites_no_hz:,} site(s) without horizons (not counted as profiles in)")
    ptf, label = _resolve_ptf(pedotransfer, mineral_bd)
    out = _harmonise(led, ptf=ptf, ptf_label=label, above_surface=above_surface,
                     duplicates=duplicates, overlaps=overlaps, soc_direct=False)
    return out, led.report()


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
    s = _read(sites, "from_aqp(sites)")
    h = _read(horizons, "from_aqp(horizons)")
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
    c = _num(h["C"])
    if factor == 10.0 and np.nanmax(np.append(c, 0)) > 100:
        raise ValueError(f"from_aqp: carbon_units='%' but C reaches {np.nanmax(c):g} (> 100 %); "
                         "use carbon_units='g/kg'")
    site = s.drop_duplicates("id").set_index("id")
    lat = _num(h["id"].map(site["y"]))
    lon = _num(h["id"].map(site["x"]))
    frame = pd.DataFrame({"profile_id": h["id"].to_numpy(), "lat": lat, "lon": lon,
                          "top": _depth_m(h["top"]), "bottom": _depth_m(h["bottom"])},
                         index=h.index)
    frame["_oc"] = c * factor
    frame["_bd"] = _num(h["Db"]) * 1000.0 if "Db" in h.columns else np.nan
    frame["_crf"] = _num(h["frags"]) if "frags" in h.columns else np.nan
    extra = [col for col in h.columns if col not in ("id", "top", "bottom")]
    frame = pd.concat([frame, h[extra]], axis=1)
    led = _Ledger(frame, f"from_aqp(carbon_units={carbon_units!r})")
    led.apply(h["id"].isin(site.index).to_numpy(), "no_site",
              "horizons whose id is not in the site table")
    ptf, label = _resolve_ptf(pedotransfer, mineral_bd)
    out = _harmonise(led, ptf=ptf, ptf_label=label, above_surface=above_surface,
                     duplicates=duplicates, overlaps=overlaps, soc_direct=False)
    return out, led.report()


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


def from_table(df: pd.DataFrame | str | os.PathLike, *,
               columns: Mapping[str, str] | None = None,
               units: Mapping[str, str] | None = None, pedotransfer: Any = "adams1973",
               mineral_bd: float = 1.64, above_surface: str = "drop", duplicates: str = "mean",
               overlaps: str = "drop_profile") -> tuple[pd.DataFrame, CleaningReport]:
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
        Units of the source columns. ``top``/``bottom`` (or ``depth`` for both): ``"m"``
        (default), ``"cm"``, ``"mm"``. ``soc``: a density, ``"g/m3"`` (default), ``"kg/m3"``
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
    raw = _read(df, "from_table")
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
        msg = _missing_columns_message(missing, raw.columns)
        hint = ", ".join(f"{k!r} looked for {src[k]!r}" for k in missing)
        raise ProfileValidationError(ValidationReport(
            [Problem("missing_columns", "error", f"from_table: {msg} ({hint})")], len(raw), 0))
    for k, v in columns.items():
        if v not in raw.columns:
            raise ProfileValidationError(ValidationReport([Problem(
                "missing_columns", "error", f"from_table: columns={{{k!r}: {v!r}}} but the table "
                f"has no column {v!r}; found {list(raw.columns)}")], len(raw), 0))

    dunit = units.get("depth", "m")
    f_top = _unit_factor(_DEPTH_UNITS, units.get("top", dunit), "top")
    f_bot = _unit_factor(_DEPTH_UNITS, units.get("bottom", dunit), "bottom")
    soc_unit = units.get("soc", "g/m3")
    key = _unit_key(soc_unit)
    is_content = key in _CONTENT_UNITS or key.lower() in {k.lower() for k in _CONTENT_UNITS}
    num = {k: _num(raw[src[k]]) for k in ("lat", "lon", "top", "bottom", "soc")}
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
    notes = []
    if f_top != 1 or f_bot != 1:
        notes.append(f"depths converted from {units.get('top', dunit)} to m")
    if is_content:
        f_c = _unit_factor(_CONTENT_UNITS, soc_unit, "soc")
        frame["_oc"] = num["soc"] * f_c
        if src["bulk_density"] in raw.columns:
            f_bd = _unit_factor(_BD_UNITS, units.get("bulk_density", "g/cm3"), "bulk_density")
            frame["_bd"] = _num(raw[src["bulk_density"]]) * f_bd
        else:
            frame["_bd"] = np.nan
            notes.append("no bulk_density column: bulk density of every layer from the "
                         "pedotransfer function")
        if src["coarse_fragments"] in raw.columns:
            f_cf = _unit_factor(_CRF_UNITS, units.get("coarse_fragments", "%"),
                                "coarse_fragments")
            frame["_crf"] = _num(raw[src["coarse_fragments"]]) * f_cf
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
    led = _Ledger(frame, f"from_table(units={units!r})")
    led.notes.extend(notes)
    ptf, label = _resolve_ptf(pedotransfer, mineral_bd)
    out = _harmonise(led, ptf=ptf, ptf_label=label, above_surface=above_surface,
                     duplicates=duplicates, overlaps=overlaps, soc_direct=not is_content)
    return out, led.report()
