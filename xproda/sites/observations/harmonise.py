"""Converter steps shared by every source: reading, locations, depths, SOC density, replicates.

Each converter (:mod:`~xproda.sites.observations.gsif`, :mod:`~xproda.sites.observations.aqp`,
:mod:`~xproda.sites.observations.table`) brings its source to an internal frame and hands it
to :func:`harmonise`, which applies the same rules in the same order and records them.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import pandas as pd

from xproda.sites.observations.pedotransfer import VAN_BEMMELEN, soc_density
from xproda.sites.observations.report import Ledger
from xproda.sites.observations.schema import PROFILE_COLUMNS, as_float_array, profile_codes
from xproda.sites.observations.validation import overlapping_layers

__all__ = ["read_table", "harmonise", "cm_to_m"]


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


def harmonise(led: Ledger, *, ptf: Any, ptf_label: str, above_surface: str,
              duplicates: str, overlaps: str, soc_direct: bool) -> pd.DataFrame:
    """Shared converter steps on an internal frame.

    Columns: profile_id, lat, lon, top, bottom (m) and either ``soc`` (g m-3, ``soc_direct``)
    or ``_oc`` (g kg-1), ``_bd`` (kg m-3, NaN = missing), ``_crf`` (%, NaN = missing).

    In order, each recorded in ``led``: profiles without a valid location, layers without or
    with a negative organic-carbon value, layers with a missing depth or ``top >= bottom``,
    layers above the mineral surface (dropped or shifted), then, for a carbon content, bad
    bulk densities and coarse fragments, the pedotransfer bulk density and the SOC density
    (:func:`~xproda.sites.observations.pedotransfer.soc_density`); replicate layers;
    overlapping layers. The result is sorted by profile (first appearance) and depth.

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
    above_surface : {"drop", "shift"}
        Layers with negative depths: drop them or shift their profile down.
    duplicates : {"mean", "first", "drop_profile"}
        Replicate rows of one (profile, top, bottom).
    overlaps : {"drop_profile", "keep"}
        Profiles whose layers overlap.
    soc_direct : bool
        True when the frame holds ``soc`` (a density) rather than a carbon content.

    Returns
    -------
    pandas.DataFrame
        The profile table, schema columns first, with a fresh index.
    """
    df = led.df
    lat, lon = as_float_array(df["lat"]), as_float_array(df["lon"])
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
    top, bot = as_float_array(df["top"]), as_float_array(df["bottom"])
    led.apply(np.isfinite(top) & np.isfinite(bot) & (top < bot), "bad_depths",
              "layers with a missing depth or top >= bottom")

    df = led.df
    neg = as_float_array(df["top"]) < 0
    if above_surface == "drop":
        led.apply(~neg, "above_surface", "layers starting above the mineral soil surface "
                  "(negative depth: organic/litter layers)")
    elif above_surface == "shift":
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
                     "above the mineral surface shifted so that their top layer starts at 0 m")
    else:
        raise ValueError(f"above_surface={above_surface!r}: expected 'drop' or 'shift'")

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
        ov, _ = overlapping_layers(df["profile_id"].to_numpy(), as_float_array(df["top"]),
                                   as_float_array(df["bottom"]))
        led.drop_profiles(ov, "overlapping_layers", "profiles with overlapping layers")
    elif overlaps != "keep":
        raise ValueError(f"overlaps={overlaps!r}: expected 'drop_profile' or 'keep'")

    df = led.df
    codes = pd.factorize(df["profile_id"], sort=False)[0]
    order = np.lexsort((as_float_array(df["bottom"]), as_float_array(df["top"]), codes))
    out = df.iloc[order].reset_index(drop=True)
    front = [c for c in PROFILE_COLUMNS if c in out.columns]
    out = out[front + [c for c in out.columns if c not in front]]
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
