"""Per-profile cleaning rules of the data assimilation (spec §5.2) and network training (§5.3).

:func:`clean_profiles` applies a rule set or the rules named (:data:`CLEANING_RULES`) and
reports what each removed.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pandas as pd

from xproda.sites.observations.report import CleaningReport, Ledger
from xproda.sites.observations.schema import (
    SOC_MAX_PLAUSIBLE,
    as_float_array,
    node_depth,
    profile_codes,
)
from xproda.sites.observations.validation import require_columns

__all__ = ["CLEANING_RULES", "clean_profiles"]


def _rule_soc_max(led: Ledger) -> None:
    soc = as_float_array(led.df["soc"])
    led.apply(~(soc > SOC_MAX_PLAUSIBLE), "soc_max",
              f"layers with soc above {SOC_MAX_PLAUSIBLE:,.0f} g C m-3 (SOC_MAX_PLAUSIBLE: "
              "denser than pure organic matter at 0.25 g cm-3) dropped")


def _rule_zero(led: Ledger) -> None:
    df = led.df
    codes, n = profile_codes(df)
    soc = as_float_array(df["soc"])
    zero = soc == 0
    all_zero = np.bincount(codes, weights=(~zero).astype(float), minlength=n) == 0
    drop = zero | all_zero[codes]
    led.apply(~drop, "zero_obs", "spec §5.2 (1): profiles whose obs are all 0 dropped; "
              "otherwise layers with obs == 0 dropped")


def _rule_missing(led: Ledger) -> None:
    df = led.df
    ok = (np.isfinite(as_float_array(df["top"])) & np.isfinite(as_float_array(df["bottom"]))
          & np.isfinite(as_float_array(df["soc"])))
    led.apply(ok, "missing", "spec §5.2 (2): layers with NaN depth or NaN obs dropped "
              "(profiles left empty dropped)")


def _rule_single(led: Ledger) -> None:
    codes, n = profile_codes(led.df)
    one = np.bincount(codes, minlength=n) == 1
    led.apply(~one[codes] if n else np.ones(0, bool), "single_layer",
              "spec §5.2 (3): profiles with exactly one layer dropped")


def _profile_stats(df: pd.DataFrame) -> dict[str, np.ndarray]:
    """Per-profile quantities of the §5.3 checks, layers taken in node-depth order."""
    codes, n = profile_codes(df)
    d = node_depth(df["top"], df["bottom"])
    y = as_float_array(df["soc"])
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


def _rule_nn_increasing(led: Ledger) -> None:
    s = _profile_stats(led.df)
    bad = (s["count"] > 1) & (s["corr"] > 0)
    led.apply(~bad[s["codes"]], "nn_increasing",
              "spec §5.3: profiles with corr(obs, depth) > 0 (SOC increasing with depth) dropped")


def _rule_nn_max_deepest(led: Ledger) -> None:
    s = _profile_stats(led.df)
    bad = s["argmax"] == s["count"] - 1
    led.apply(~bad[s["codes"]], "nn_max_deepest",
              "spec §5.3: profiles whose largest obs is in the deepest layer dropped")


def _rule_nn_first_le_last(led: Ledger) -> None:
    s = _profile_stats(led.df)
    bad = s["first"] <= s["last"]
    led.apply(~bad[s["codes"]], "nn_first_le_last",
              "spec §5.3: profiles with obs(shallowest) <= obs(deepest) dropped")


#: cleaning rules by name (applied in the order given to :func:`clean_profiles`)
CLEANING_RULES: dict[str, Callable[[Ledger], None]] = {
    "soc_max": _rule_soc_max,
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

    A sequence of names from :data:`CLEANING_RULES` applies those rules in that order. Besides
    the rules above, ``soc_max`` drops layers whose ``soc`` exceeds
    :data:`~xproda.sites.observations.schema.SOC_MAX_PLAUSIBLE` (150,000 g C m-3, flagged by
    :func:`validate_profiles`); it is not part of the spec's rule sets (the converters apply
    it), so pass it by name: ``rules=["soc_max", "zero_obs", "missing", "single_layer"]``.

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
    require_columns(df, ("profile_id", "top", "bottom", "soc"), "clean_profiles")
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
    led = Ledger(df, f"clean_profiles(rules={label})")
    for name in names:
        CLEANING_RULES[name](led)
    return led.df, led.report()
