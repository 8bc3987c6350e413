"""What a converter or the cleaning did: counts in and out, and every row dropped and why.

:class:`CleaningReport` is the report handed to users; :class:`Ledger` applies row filters to a
table and writes the report as it goes.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pandas as pd

__all__ = ["CleaningReport", "Ledger"]

_RULE_COLUMNS = ["rule", "description", "layers_dropped", "profiles_dropped"]


@dataclasses.dataclass
class CleaningReport:
    """What a converter or :func:`clean_profiles` did: counts in and out, and why rows went.

    ``n_layers_in == n_layers_out + rules.layers_dropped.sum()`` and likewise for profiles
    (a rule that splits profiles, e.g. ``conflicting_locations="split"``, has a negative
    ``profiles_dropped``: the profiles it added).

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

    def _repr_html_(self) -> str:
        from xproda.reprs import html_report

        facts = [("source", self.source),
                 ("in", f"{self.n_layers_in:,} layers in {self.n_profiles_in:,} profiles"),
                 ("out", f"{self.n_layers_out:,} layers in {self.n_profiles_out:,} profiles")]
        facts += [("note", n) for n in self.notes]
        return html_report("CleaningReport", facts,
                           {"rules": self.rules, "dropped rows": self.dropped})


class Ledger:
    """Applies row filters to a table and records what each removed.

    The converters and :func:`~xproda.sites.observations.cleaning.clean_profiles` run their
    rules through a ledger; :meth:`report` then gives the :class:`CleaningReport`.

    Parameters
    ----------
    df : pandas.DataFrame
        The table (with a ``profile_id`` column); ``ledger.df`` is the table kept so far.
    source : str
        The function (and options) named in the report.

    Examples
    --------
    >>> import pandas as pd
    >>> led = Ledger(pd.DataFrame({"profile_id": [1, 1, 2], "soc": [1.0, 0.0, 2.0]}), "demo")
    >>> led.apply(led.df["soc"].to_numpy() > 0, "zero", "layers with soc == 0")
    >>> led.report().rules[["rule", "layers_dropped", "profiles_dropped"]].values.tolist()
    [['zero', 1, 0]]
    """

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
        """Keep the rows where ``keep`` is True and record the others under ``rule``."""
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

    def relabel(self, new_ids: Any, rule: str, description: str) -> None:
        """Give rows new profile ids (e.g. split one id into several) and record it.

        No row is dropped; the rule's ``profiles_dropped`` is the change in the number of
        profiles, negative when profiles were split (so that the counts still add up:
        ``n_profiles_in == n_profiles_out + sum(profiles_dropped)``).
        """
        before = self._np(self.df)
        df = self.df.copy()
        df["profile_id"] = np.asarray(new_ids, dtype=object)
        self.df = df
        self.rows.append({"rule": rule, "description": description, "layers_dropped": 0,
                          "profiles_dropped": before - self._np(df)})

    def note(self, msg: str) -> None:
        """Record a value derived or defaulted (listed in the report's ``notes``)."""
        self.notes.append(msg)

    def report(self) -> CleaningReport:
        """The :class:`CleaningReport` of the rules applied so far."""
        rules = pd.DataFrame(self.rows, columns=_RULE_COLUMNS)
        rules["layers_dropped"] = rules["layers_dropped"].astype(int)
        rules["profiles_dropped"] = rules["profiles_dropped"].astype(int)
        dropped = (pd.concat(self.dropped, ignore_index=True) if self.dropped else
                   pd.DataFrame(columns=["row", "profile_id", "top", "bottom", "soc", "rule"]))
        return CleaningReport(self.source, self.n_layers_in, self.n_profiles_in, len(self.df),
                              self._np(self.df), rules, list(self.notes), dropped)
