"""Soil-profile tables: schema, validation, converters, cleaning, weights, packing (spec §5)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xproda.sites import observations as ob
from xproda.sites.observations import (
    CleaningReport,
    ProfileBatch,
    ProfileValidationError,
    bulk_density_adams,
    clean_profiles,
    from_aqp,
    from_gsif,
    from_table,
    layer_weights,
    pack_profiles,
    soc_density,
    validate_profiles,
)
from xproda.sites.observations.weights import descending_ranks

from conftest import SHARED

PROFILES = SHARED / "data" / "profiles"
DOCS = Path(__file__).resolve().parents[1] / "docs" / "user-guide" / "observations.md"


def table(**overrides) -> pd.DataFrame:
    """A valid two-profile table."""
    df = pd.DataFrame({
        "profile_id": ["a", "a", "a", "b", "b"],
        "lat": [10.0, 10.0, 10.0, -5.0, -5.0],
        "lon": [20.0, 20.0, 20.0, 30.0, 30.0],
        "top": [0.0, 0.1, 0.3, 0.0, 0.2],
        "bottom": [0.1, 0.3, 0.6, 0.2, 0.5],
        "soc": [20000.0, 12000.0, 5000.0, 8000.0, 3000.0],
    })
    for k, v in overrides.items():
        df[k] = v
    return df


def assert_counts_add_up(rep: CleaningReport) -> None:
    assert rep.n_layers_in == rep.n_layers_out + rep.rules["layers_dropped"].sum()
    assert rep.n_profiles_in == rep.n_profiles_out + rep.rules["profiles_dropped"].sum()
    assert len(rep.dropped) == rep.layers_dropped
    for rule, n in rep.rules.set_index("rule")["layers_dropped"].items():
        assert (rep.dropped["rule"] == rule).sum() == n


# --------------------------------------------------------------------------- weights


def test_spec_weight_example():
    d = [0.05, 0.15, 0.3, 0.6, 1.0]
    obs = [20000, 15000, 9000, 5000, 3000]
    w = layer_weights(d, obs)
    w_exp = 10 * math.exp(-0.5)
    np.testing.assert_allclose(w, [w_exp, 1, 1, 1, w_exp], rtol=1e-15)
    np.testing.assert_allclose(w.round(4), [6.0653, 1, 1, 1, 6.0653])
    # the spec's ranks
    np.testing.assert_array_equal(descending_ranks(np.abs(np.array(obs) - np.mean(obs))),
                                  [1, 4, 5, 3, 2])
    np.testing.assert_array_equal(descending_ranks(np.abs(np.array(d) - 0.42)), [2, 3, 5, 4, 1])


def test_weights_ties_keep_order():
    # |d - mean| and |obs - mean| tie exactly: the first layer ranks first (stable sort)
    w = layer_weights([1.0, 3.0], [10.0, 30.0])
    np.testing.assert_allclose(w, [10.0, 10 * math.exp(-1.0)])
    w = layer_weights([1.0, 2.0, 3.0], [5.0, 5.0, 5.0])  # obs all tie: ranks 1, 2, 3
    # r_d: |d - 2| = (1, 0, 1) -> ranks (1, 3, 2); r = (1, 2.5, 2.5)
    np.testing.assert_allclose(w, [10.0, 10 * math.exp(-1.5), 10 * math.exp(-1.5)])


def test_weights_batched_with_padding():
    d = np.array([[0.05, 0.15, 0.3, 0.6, 1.0], [0.1, 0.4, np.nan, np.nan, np.nan]])
    y = np.array([[20000, 15000, 9000, 5000, 3000], [5e3, 2e3, np.nan, np.nan, np.nan]])
    w = layer_weights(d, y)
    np.testing.assert_array_equal(w[0], layer_weights(d[0], y[0]))
    np.testing.assert_array_equal(w[1, :2], layer_weights(d[1, :2], y[1, :2]))
    np.testing.assert_array_equal(w[1, 2:], 0.0)
    with pytest.raises(ValueError, match="same shape"):
        layer_weights([0.1, 0.2], [1.0])


finite = st.floats(1e-3, 1e5, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
# no subnormal depths: the mean of [0, 5e-324] underflows to 0 while that of its double
# does not, so the scaling property below is false there (found by hypothesis)
@given(st.lists(st.tuples(st.floats(0.0, 8.0, allow_subnormal=False), finite), min_size=1,
                max_size=12))
def test_weights_properties(layers):
    d = np.array([x[0] for x in layers])
    y = np.array([x[1] for x in layers])
    w = layer_weights(d, y)
    assert w.shape == d.shape
    assert np.all((w >= 1.0) & (w <= 10.0))
    # ranks depend only on order statistics: exact scaling by powers of two changes nothing
    np.testing.assert_array_equal(layer_weights(2.0 * d, 4.0 * y), w)
    # padding anywhere after the profile changes nothing
    pad = np.full(3, np.nan)
    wp = layer_weights(np.concatenate([d, pad])[None], np.concatenate([y, pad])[None])[0]
    np.testing.assert_array_equal(wp[: len(d)], w)
    np.testing.assert_array_equal(wp[len(d):], 0.0)


# --------------------------------------------------------------------------- validation


def test_valid_table_passes():
    rep = validate_profiles(table())
    assert rep.ok and not rep.problems
    assert rep.n_layers == 5 and rep.n_profiles == 2
    # missing soc is a warning (clean_profiles drops it), not an error
    rep = validate_profiles(table(soc=[20000.0, np.nan, 5000.0, 8000.0, 3000.0]))
    assert rep.ok and [p.check for p in rep.warnings] == ["missing_soc"]
    assert rep.to_frame().shape[0] == 1 and "missing_soc" in str(rep)


def _bad_cases():
    t = table()
    yield "missing", t.drop(columns=["soc", "lat"]), "missing_columns", \
        r"missing required column\(s\): 'lat' .*degrees_north.*'soc' .*g m-3"
    yield "non_numeric", table(soc=["2e4", "n.d.", "5000", "8000", "<0.1"]), "non_numeric", \
        r"column 'soc' .* must be numeric; found non-numeric values \['n.d.', '<0.1'\]"
    yield "inverted", table(bottom=[0.1, 0.1, 0.6, 0.2, 0.5]), "inverted_depths", \
        r"expected top < bottom; found 1 layer\(s\) with top >= bottom in profile\(s\) 'a'"
    yield "negative_depth", table(top=[-0.05, 0.1, 0.3, 0.0, 0.2]), "negative_depths", \
        r"depths must be >= 0 m .* in profile\(s\) 'a'"
    yield "overlap", table(top=[0.0, 0.1, 0.3, 0.0, 0.1]), "overlapping_layers", \
        r"2 layer\(s\) overlap another layer of the same profile in profile\(s\) 'b'"
    yield "negative_soc", table(soc=[2e4, 1e4, -5.0, 8e3, 3e3]), "negative_soc", \
        r"'soc' \(g m-3\) must be >= 0; found 1 negative value\(s\) \(min -5\) in profile\(s\) 'a'"
    yield "percent", table(soc=[2.1, 1.0, 0.5, 1.5, 0.3]), "soc_units", \
        r"'soc' looks like percent, g/kg or kg C m-3 \(largest value 2.1\)"
    yield "cm", table(top=[0.0, 10, 30, 0, 20], bottom=[10, 30, 60, 20, 50]), "depth_units", \
        r"depths look like cm, expected m: deepest 'bottom' is 60"
    yield "id_two_places", table(lat=[10.0, 10.0, 10.0, 10.0, 10.0],
                                 profile_id=["a", "a", "a", "a", "a"],
                                 top=[0, .1, .3, .6, .8], bottom=[.1, .3, .6, .8, 1.0]), \
        "conflicting_locations", r"1 profile id\(s\) appear at more than one location .*'a'"
    yield "duplicate_rows", table(top=[0.0, 0.1, 0.1, 0.0, 0.2],
                                  bottom=[0.1, 0.3, 0.3, 0.2, 0.5]), \
        "duplicate_layers", r"1 duplicated \(profile_id, top, bottom\) row\(s\) in profile\(s\) 'a'"
    yield "lat_range", table(lat=[100.0] * 3 + [-5.0] * 2), "location_range", \
        r"column 'lat' must be in \[-90, 90\] degrees_north; found values \[100.0\]"


@pytest.mark.parametrize("name,df,check,pattern", list(_bad_cases()),
                         ids=[c[0] for c in _bad_cases()])
def test_bad_tables_raise_clear_errors(name, df, check, pattern):
    with pytest.raises(ProfileValidationError, match=pattern) as exc:
        validate_profiles(df)
    assert check in [p.check for p in exc.value.report.errors]
    rep = validate_profiles(df, strict=False)
    assert not rep.ok and check in rep.to_frame()["check"].tolist()


def test_id_two_places_variant():
    df = table(lon=[20.0, 20.0, 20.5, 30.0, 30.0])  # one layer of 'a' elsewhere
    rep = validate_profiles(df, strict=False)
    (p,) = [p for p in rep.errors if p.check == "conflicting_locations"]
    assert p.profiles == ("a",) and p.n_rows == 3
    assert "[[10.0, 20.0], [10.0, 20.5]]" in p.message


def test_validate_rejects_non_frames():
    with pytest.raises(TypeError, match="DataFrame"):
        validate_profiles({"soc": [1]})


# --------------------------------------------------------------------------- cleaning


def cleaning_table() -> pd.DataFrame:
    rows = [
        # pid, top, bottom, soc
        ("ok", 0.0, 0.1, 2e4), ("ok", 0.1, 0.3, 1e4), ("ok", 0.3, 0.6, 4e3),
        ("zeros", 0.0, 0.1, 0.0), ("zeros", 0.1, 0.3, 0.0),                 # (1) profile
        ("somezero", 0.0, 0.1, 9e3), ("somezero", 0.1, 0.3, 0.0),
        ("somezero", 0.3, 0.5, 3e3),                                         # (1) one layer
        ("nan", 0.0, 0.1, np.nan), ("nan", np.nan, 0.3, 1e3),               # (2) profile
        ("somenan", 0.0, 0.1, 8e3), ("somenan", 0.1, 0.2, np.nan),
        ("somenan", 0.2, 0.4, 5e3),                                          # (2) one layer
        ("single", 0.0, 0.3, 7e3),                                           # (3)
        ("becomes_single", 0.0, 0.2, 6e3), ("becomes_single", 0.2, 0.4, 0.0),  # (1) then (3)
    ]
    df = pd.DataFrame(rows, columns=["profile_id", "top", "bottom", "soc"])
    df.insert(1, "lat", 1.0)
    df.insert(2, "lon", 2.0)
    df.index = df.index + 100  # index labels are kept
    return df


def test_cleaning_report_counts():
    df = cleaning_table()
    clean, rep = clean_profiles(df)
    assert_counts_add_up(rep)
    tab = rep.to_frame().set_index("rule")
    assert tab.loc["zero_obs", "layers_dropped"] == 4      # zeros x2, somezero, becomes_single
    assert tab.loc["zero_obs", "profiles_dropped"] == 1
    assert tab.loc["missing", "layers_dropped"] == 3
    assert tab.loc["missing", "profiles_dropped"] == 1
    assert tab.loc["single_layer", "layers_dropped"] == 2
    assert tab.loc["single_layer", "profiles_dropped"] == 2
    assert (rep.n_layers_in, rep.n_profiles_in) == (16, 7)
    assert (rep.n_layers_out, rep.n_profiles_out) == (7, 3)
    assert clean["profile_id"].unique().tolist() == ["ok", "somezero", "somenan"]
    assert clean.index.tolist() == [100, 101, 102, 105, 107, 110, 112]
    assert set(rep.dropped["row"]) == set(df.index) - set(clean.index)
    text = str(rep)
    assert "zero_obs" in text and "16 layers in 7 profiles" in text
    assert repr(rep) == text


def test_cleaning_nn_rules():
    rows = [
        ("good", 0.0, 0.1, 2e4), ("good", 0.1, 0.3, 1e4), ("good", 0.3, 0.6, 4e3),
        ("increasing", 0.0, 0.1, 1e3), ("increasing", 0.1, 0.3, 2e3),
        ("increasing", 0.3, 0.6, 3e3),
        # corr < 0 but the largest value is in the deepest layer
        ("max_deepest", 0.0, 0.1, 9e3), ("max_deepest", 0.1, 0.3, 1e3),
        ("max_deepest", 0.3, 0.5, 1e3), ("max_deepest", 0.5, 0.6, 1e3),
        ("max_deepest", 0.6, 0.7, 1e3), ("max_deepest", 0.7, 0.8, 9.5e3),
        # corr < 0, max on top, but first <= last; listed deepest first (depth order is used)
        ("first_le_last", 0.6, 0.9, 5e3), ("first_le_last", 0.0, 0.1, 5e3),
        ("first_le_last", 0.1, 0.3, 9e3), ("first_le_last", 0.3, 0.6, 1e3),
    ]
    df = pd.DataFrame(rows, columns=["profile_id", "top", "bottom", "soc"])
    df["lat"], df["lon"] = 0.0, 0.0
    clean, rep = clean_profiles(df, rules="proda_nn")
    assert_counts_add_up(rep)
    tab = rep.to_frame().set_index("rule")["profiles_dropped"]
    assert tab.to_dict() == {"zero_obs": 0, "missing": 0, "single_layer": 0, "nn_increasing": 1,
                             "nn_max_deepest": 1, "nn_first_le_last": 1}
    assert clean["profile_id"].unique().tolist() == ["good"]
    # only the first rules, in a custom order
    _, rep2 = clean_profiles(df, rules=["nn_first_le_last"])
    # 'increasing' and 'max_deepest' also have obs(first) <= obs(last)
    assert rep2.to_frame()["profiles_dropped"].tolist() == [3]
    with pytest.raises(ValueError, match="unknown cleaning rule"):
        clean_profiles(df, rules=["nope"])
    with pytest.raises(ValueError, match="expected one of"):
        clean_profiles(df, rules="nope")


def test_clean_requires_columns():
    with pytest.raises(ProfileValidationError, match=r"missing required column\(s\): 'soc'"):
        clean_profiles(table().drop(columns="soc"))


def test_report_chaining():
    df = cleaning_table()
    a, r1 = clean_profiles(df, rules=["zero_obs"])
    b, r2 = clean_profiles(a, rules=["missing", "single_layer"])
    r = r1 + r2
    assert_counts_add_up(r)
    assert r.to_frame()["rule"].tolist() == ["zero_obs", "missing", "single_layer"]
    with pytest.raises(ValueError, match="cannot chain"):
        r2 + r1


# --------------------------------------------------------------------------- pedotransfer


def test_adams_ptf_hand_values():
    # OC 10 g/kg = 1 % -> OM 1.724 %; BD = 100 / (1.724/0.244 + 98.276/1.64)
    assert bulk_density_adams(10.0) == pytest.approx(100 / (7.06557377 + 59.92439024), rel=1e-9)
    assert bulk_density_adams(10.0) == pytest.approx(1.492762, rel=1e-6)
    assert bulk_density_adams(0.0) == pytest.approx(1.64)
    assert bulk_density_adams(0.0, mineral_bd=1.5) == pytest.approx(1.5)
    # OC 58.0046 % -> OM = 100 %: pure organic matter, clipped above
    assert bulk_density_adams(600.0) == pytest.approx(0.244)
    oc = np.array([1.0, 50.0, 200.0])
    assert np.all(np.diff(bulk_density_adams(oc)) < 0)
    assert soc_density(10.0, 1400.0, 10.0) == pytest.approx(12600.0)
    assert soc_density(10.0, 1400.0) == pytest.approx(14000.0)


def gsif_tables(bld_scale: float = 1.0):
    sites = pd.DataFrame({
        "SOURCEID": ["p1", "p2", "p3", "p4", "lonely"],
        "LONWGS84": [36.1, 10.0, 11.0, 12.0, 0.0],
        "LATWGS84": [-6.9, 5.0, 6.0, np.nan, 0.0],
        "TIMESTRR": [15615.0, 0.0, np.nan, 1.0, 1.0],
        "TAXGWRB": ["Ferralsol", "", "", "", ""],
    })
    hz = pd.DataFrame({
        "SOURCEID": ["p1", "p1", "p1", "p1", "p2", "p2", "p2", "p3", "p3", "p4", "p4", "ghost"],
        "UHDICM": [-5.0, 0.0, 20.0, 20.0, 0.0, 10.0, 30.0, 0.0, 10.0, 0.0, 10.0, 0.0],
        "LHDICM": [0.0, 20.0, 50.0, 50.0, 10.0, 30.0, 60.0, 10.0, 30.0, 10.0, 20.0, 10.0],
        "ORCDRC": [300.0, 10.0, 5.0, 7.0, 20.0, np.nan, 4.0, 12.0, 6.0, 5.0, 5.0, 5.0],
        "BLD": [np.nan, 1.4, np.nan, np.nan, 1.2, 1.3, 1.5, 1.0, 1.1, 1.0, 1.0, 1.0],
        "CRFVOL": [np.nan, 10.0, np.nan, np.nan, 0.0, 0.0, 50.0, 0.0, 0.0, 0.0, 0.0, 0.0],
        "PHIHOX": np.arange(12.0),
    })
    hz["BLD"] *= bld_scale
    return sites, hz


@pytest.mark.parametrize("bld_scale", [1.0, 1000.0])
def test_from_gsif(bld_scale):
    sites, hz = gsif_tables(bld_scale)
    prof, rep = from_gsif(sites, hz)
    assert_counts_add_up(rep)
    validate_profiles(prof)
    tab = rep.to_frame().set_index("rule")
    assert tab.loc["no_site", "layers_dropped"] == 1            # 'ghost'
    assert tab.loc["no_location", "profiles_dropped"] == 1      # p4: no latitude
    assert tab.loc["no_soc", "layers_dropped"] == 1
    assert tab.loc["above_surface", "layers_dropped"] == 1      # p1 -5..0 cm
    assert tab.loc["duplicate_layers", "layers_dropped"] == 1   # p1 20-50 twice
    assert (rep.n_profiles_in, rep.n_profiles_out) == (5, 3)
    assert prof["profile_id"].tolist() == ["p1", "p1", "p2", "p2", "p3", "p3"]
    p1 = prof[prof.profile_id == "p1"]
    np.testing.assert_allclose(p1["top"], [0.0, 0.2])
    np.testing.assert_allclose(p1["bottom"], [0.2, 0.5])
    # 10 g/kg x 1400 kg/m3 x 0.9; replicates (5, 7 g/kg, both PTF) averaged -> mean of densities
    exp_dup = 0.5 * (5 * 1000 * bulk_density_adams(5.0) + 7 * 1000 * bulk_density_adams(7.0))
    np.testing.assert_allclose(p1["soc"], [12600.0, exp_dup], rtol=1e-12)
    assert p1["bd_from_ptf"].tolist() == [False, True]
    p2 = prof[prof.profile_id == "p2"]
    np.testing.assert_allclose(p2["soc"], [20 * 1200.0, 4 * 1500.0 * 0.5])
    assert prof["date"].iloc[0] == pd.Timestamp("2012-10-02")  # 15615 days after 1970-01-01
    assert "TAXGWRB" in prof.columns and "PHIHOX" in prof.columns
    notes = " ".join(rep.notes)
    assert "coarse fragments missing for 2 layer(s)" in notes
    assert "pedotransfer adams1973" in notes
    assert ("look like g cm-3" in notes) == (bld_scale == 1.0)
    assert "1 site(s) without horizons" in notes


def test_from_gsif_options(tmp_path):
    sites, hz = gsif_tables()
    sites.to_csv(tmp_path / "s.csv", index=False)
    hz.to_csv(tmp_path / "h.csv", index=False)
    prof, rep = from_gsif(tmp_path / "s.csv", str(tmp_path / "h.csv"), above_surface="shift",
                          duplicates="drop_profile", pedotransfer=None)
    assert_counts_add_up(rep)
    tab = rep.to_frame().set_index("rule")
    # pedotransfer=None drops layers without BLD: p1's -5..0 and both 20-50 replicates
    assert tab.loc["no_bulk_density", "layers_dropped"] == 3
    assert prof["profile_id"].unique().tolist() == ["p1", "p2", "p3"]
    # a constant bulk density of 0.3 g cm-3 (1.3 would make the 300 g/kg litter layer
    # 390,000 g C m-3, above SOC_MAX_PLAUSIBLE: dropped by the rule soc_max)
    prof, rep = from_gsif(sites, hz, above_surface="shift", pedotransfer=0.3)
    p1 = prof[prof.profile_id == "p1"]
    np.testing.assert_allclose(p1["top"], [0.0, 0.05, 0.25])
    np.testing.assert_allclose(p1["soc"].iloc[0], 300 * 300.0)
    assert any("shifted" in n for n in rep.notes)
    with pytest.raises(ProfileValidationError, match=r"lacks column\(s\) \['ORCDRC'\]"):
        from_gsif(sites, hz.drop(columns="ORCDRC"))


def test_from_gsif_overlaps():
    sites = pd.DataFrame({"SOURCEID": ["a", "b"], "LONWGS84": [1.0, 2.0],
                          "LATWGS84": [1.0, 2.0]})
    hz = pd.DataFrame({"SOURCEID": ["a", "a", "b", "b"], "UHDICM": [0.0, 10.0, 0.0, 8.0],
                       "LHDICM": [10.0, 30.0, 25.0, 40.0], "ORCDRC": [10.0, 5.0, 10.0, 5.0]})
    prof, rep = from_gsif(sites, hz)
    assert rep.to_frame().set_index("rule").loc["overlapping_layers", "profiles_dropped"] == 1
    assert prof["profile_id"].unique().tolist() == ["a"]
    prof, _ = from_gsif(sites, hz, overlaps="keep")
    with pytest.raises(ProfileValidationError, match="overlap"):
        validate_profiles(prof)


def test_from_aqp():
    site = pd.DataFrame({"id": ["A", "B"], "x": [-120.0, -119.0], "y": [38.0, 37.0]})
    hz = pd.DataFrame({"id": ["A", "A", "B"], "top": [0, 10, 0], "bottom": [10, 40, 5],
                       "C": [89.0, 27.0, np.nan], "Db": [0.9, np.nan, np.nan],
                       "frags": [np.nan, 20.0, 5.0]})
    prof, rep = from_aqp(site, hz)
    assert_counts_add_up(rep)
    np.testing.assert_allclose(prof["soc"], [89 * 900.0, 27 * 1000 * bulk_density_adams(27.0)
                                             * 0.8])
    np.testing.assert_allclose(prof[["lat", "lon"]].iloc[0], [38.0, -120.0])
    assert rep.to_frame().set_index("rule").loc["no_soc", "profiles_dropped"] == 1
    with pytest.raises(ValueError, match=r"C reaches 120 \(> 100 %\)"):
        from_aqp(site, hz.assign(C=[89.0, 120.0, 1.0]), carbon_units="%")


def test_from_table_units():
    raw = pd.DataFrame({"site": ["a", "a", "b", "b"], "y": 45.0, "x": 5.0,
                        "hzn_top": [0, 10, 0, 15], "hzn_bot": [10, 30, 15, 40],
                        "oc_pct": [2.0, 1.0, 3.0, 0.5], "db": [1.2, 1.4, np.nan, 1.5],
                        "cf": [0.0, 0.1, 0.0, 0.2], "note": list("wxyz")})
    prof, rep = from_table(raw, columns={"profile_id": "site", "lat": "y", "lon": "x",
                                         "top": "hzn_top", "bottom": "hzn_bot",
                                         "soc": "oc_pct", "bulk_density": "db",
                                         "coarse_fragments": "cf"},
                           units={"depth": "cm", "soc": "%", "bulk_density": "g/cm3",
                                  "coarse_fragments": "fraction"})
    assert_counts_add_up(rep)
    validate_profiles(prof)
    np.testing.assert_allclose(prof["top"], [0.0, 0.1, 0.0, 0.15])
    np.testing.assert_allclose(
        prof["soc"], [20 * 1200, 10 * 1400 * 0.9, 30 * 1000 * bulk_density_adams(30.0),
                      5 * 1500 * 0.8])
    assert prof["bd_from_ptf"].tolist() == [False, False, True, False]
    assert "note" in prof.columns and "db" in prof.columns
    # densities: kg C m-3 -> g C m-3, m depths
    dens = pd.DataFrame({"profile_id": [1, 1], "lat": 0.0, "lon": 0.0, "top": [0, .2],
                         "bottom": [.2, .5], "soc": [12.5, 4.0]})
    prof, rep = from_table(dens, units={"soc": "kg C m-3"})
    np.testing.assert_allclose(prof["soc"], [12500.0, 4000.0])
    assert any("x 1000" in n for n in rep.notes)
    with pytest.raises(ValueError, match="unknown units 'furlongs'"):
        from_table(dens, units={"top": "furlongs"})
    with pytest.raises(ProfileValidationError, match=r"'soc' .*looked for 'carbon'"):
        from_table(dens.drop(columns="soc"), columns={"soc": "carbon"})
    with pytest.raises(ProfileValidationError, match=r"must be numeric; found \['n.d.'\]"):
        from_table(dens.assign(soc=["n.d.", "4"]))


# --------------------------------------------------------------------------- packing


@st.composite
def profile_tables(draw):
    n_prof = draw(st.integers(1, 6))
    rows = []
    for p in range(n_prof):
        n = draw(st.integers(1, 7))
        # valid tables (pack_profiles validates): layers under 1 m (depth units unambiguous),
        # SOC densities in g C m-3
        edges = np.cumsum([0.0] + draw(st.lists(st.floats(0.01, 0.99), min_size=n, max_size=n)))
        socs = draw(st.lists(st.floats(200.0, 1e5), min_size=n, max_size=n))
        lat, lon = draw(st.floats(-90, 90)), draw(st.floats(-180, 180))
        pid = draw(st.sampled_from([f"s{p}", p * 7]))
        for i in range(n):
            rows.append((pid, lat, lon, edges[i], edges[i + 1], socs[i]))
    df = pd.DataFrame(rows, columns=["profile_id", "lat", "lon", "top", "bottom", "soc"])
    perm = draw(st.permutations(range(len(df))))
    return df.iloc[list(perm)].reset_index(drop=True)


@settings(max_examples=50, deadline=None)
@given(profile_tables())
def test_pack_round_trip(df):
    b = pack_profiles(df)
    assert len(b) == df["profile_id"].nunique()
    assert b.site_ids.tolist() == list(dict.fromkeys(df["profile_id"].tolist()))
    assert b.n_layers.sum() == len(df) and b.mask.sum() == len(df)
    for s in range(len(b)):
        assert np.all(np.diff(b.depth[s, : b.n_layers[s]]) >= 0)
    assert np.all(b.weight[~b.mask] == 0) and np.all(np.isnan(b.soc[~b.mask]))
    back = b.to_frame()
    codes = pd.factorize(df["profile_id"])[0]
    exp = df.iloc[np.lexsort(((df.top + df.bottom).to_numpy(), codes))].reset_index(drop=True)
    pd.testing.assert_frame_equal(back.drop(columns="weight"), exp, check_dtype=False)
    # weights are the per-profile spec weights
    for s in range(len(b)):
        n = b.n_layers[s]
        np.testing.assert_array_equal(b.weight[s, :n], layer_weights(b.depth[s, :n],
                                                                     b.soc[s, :n]))
    b2 = ProfileBatch.from_xarray(b.to_xarray())
    for f in ("depth", "top", "bottom", "soc", "weight", "mask", "n_layers", "lat", "lon"):
        np.testing.assert_array_equal(getattr(b2, f), getattr(b, f))


def test_pack_xarray_torch_subset():
    df = table(date=pd.to_datetime(["2000-01-01"] * 3 + ["2010-06-01"] * 2))
    b = pack_profiles(df)
    assert repr(b) == "ProfileBatch(2 sites, up to 3 layers, 5 valid obs)"
    ds = b.to_xarray()
    assert ds["soc"].dims == ("site", "obs") and ds.sizes == {"site": 2, "obs": 3}
    assert ds["soc"].attrs["units"] == "g m-3" and ds["depth"].attrs["units"] == "m"
    assert ds["lat"].attrs["units"] == "degrees_north"
    assert ds["site"].values.tolist() == ["a", "b"]
    assert ds["date"].values[1] == np.datetime64("2010-06-01")
    np.testing.assert_allclose(ds["depth"].sel(site="b").values, [0.1, 0.35, np.nan])
    t = b.to_torch()
    assert t["soc"].dtype == torch.float64 and t["mask"].dtype == torch.bool
    assert t["n_layers"].tolist() == [3, 2] and torch.isnan(t["soc"][1, 2])
    t = b.to_torch(torch.float32, fill_value=0.0)
    assert t["soc"].dtype == torch.float32 and t["soc"][1, 2] == 0 and t["depth"][1, 2] == 0
    sub = b.subset([1])
    assert len(sub) == 1 and sub.soc.shape == (1, 2) and sub.site_ids.tolist() == ["b"]
    assert b.subset(np.array([True, False])).soc.shape == (1, 3)
    assert len(b.subset(slice(0, 0))) == 0
    # weights options
    w1 = pack_profiles(df, weights=None).weight
    assert w1.tolist() == [[1, 1, 1], [1, 1, 0]]
    wc = pack_profiles(df.assign(weight=2.0), weights="column").weight
    assert wc.tolist() == [[2, 2, 2], [2, 2, 0]]
    with pytest.raises(ValueError, match="no 'weight' column"):
        pack_profiles(df, weights="column")


def test_pack_keeps_invalid_rows_masked():
    df = table(soc=[2e4, np.nan, 5e3, 8e3, 3e3])
    b = pack_profiles(df)
    assert b.n_layers.tolist() == [3, 2]
    assert b.mask.tolist() == [[True, False, True], [True, True, False]]
    w = layer_weights(b.depth[0, [0, 2]], [2e4, 5e3])
    np.testing.assert_array_equal(b.weight[0], [w[0], 0.0, w[1]])


# --------------------------------------------------------------------------- docs


def test_docs_schema_table_in_sync():
    if not DOCS.exists():
        pytest.skip("docs not present")
    assert ob.profile_columns_markdown() in DOCS.read_text()


# --------------------------------------------------------------------------- real data


@pytest.mark.shared
def test_real_profiles_pipeline():
    if not PROFILES.exists():
        pytest.skip(f"{PROFILES} not available (../shared absent)")
    loaded = {
        name: from_gsif(PROFILES / f"gsif_{name}_sites.csv", PROFILES / f"gsif_{name}_horizons.csv")
        for name in ("afsp", "isis", "edgeroi")
    }
    loaded["sierra"] = from_aqp(PROFILES / "aqp_sierraTransect_site.csv",
                                PROFILES / "aqp_sierraTransect_horizons.csv")
    # profiles with at least one SOC value, as listed in the data README
    with_soc = {"afsp": (63686, 22574), "isis": (3880, 675), "edgeroi": (2089, 325),
                "sierra": (31, 7)}
    for name, (prof, conv) in loaded.items():
        assert_counts_add_up(conv)
        tab = conv.to_frame().set_index("rule")
        n_in = (conv.n_layers_in - tab.loc[["no_site", "no_soc"], "layers_dropped"].sum(),
                conv.n_profiles_in - tab.loc[["no_site", "no_soc"], "profiles_dropped"].sum())
        assert n_in == with_soc[name], name
        rep = validate_profiles(prof)
        assert not rep.errors
        clean, crep = clean_profiles(prof)
        assert_counts_add_up(crep)
        total = conv + crep
        assert_counts_add_up(total)
        b = pack_profiles(clean)
        assert len(b) == total.n_profiles_out and b.mask.sum() == total.n_layers_out
        soc = clean["soc"].to_numpy()
        assert np.all(soc > 0), name
        assert 1e3 < np.median(soc) < 1e5, name
        assert clean["bottom"].max() < 20 and clean["top"].min() >= 0, name
        assert np.all(b.weight[b.mask] >= 1) and np.all(b.weight[~b.mask] == 0)
    # sizes after conversion and cleaning (regression guard)
    out = {k: (v[1].n_profiles_out,) for k, v in loaded.items()}
    assert out["sierra"] == (7,) and out["edgeroi"] == (325,)
    assert loaded["afsp"][1].to_frame().set_index("rule").loc["duplicate_layers",
                                                               "layers_dropped"] > 0


def _real_profiles_example():
    """The module of ``examples/real_profiles.py`` (its FEBR steps: organic layers, copies)."""
    import importlib.util

    path = Path(__file__).resolve().parents[1] / "examples" / "real_profiles.py"
    spec = importlib.util.spec_from_file_location("real_profiles_example", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.shared
def test_febr_profiles():
    """FEBR (Brazil, CC BY 4.0 part): from_gsif + clean_profiles, and the example's steps."""
    sites, hz = PROFILES / "febr_brazil_sites.csv", PROFILES / "febr_brazil_horizons.csv"
    if not (sites.exists() and hz.exists()):
        pytest.skip(f"{sites} not available (../shared absent)")
    prof, conv = from_gsif(sites, hz)
    assert_counts_add_up(conv)
    # the README's counts: 1,823 sites, 5,456 horizons with SOC, BLD on 1,394 horizons
    assert (conv.n_layers_in, conv.n_profiles_in) == (5456, 1823)
    tab = conv.to_frame().set_index("rule")
    assert tab.loc["bad_depths", "layers_dropped"] == 6  # 4 without depths, 2 zero-thickness
    assert tab.loc["overlapping_layers", "profiles_dropped"] == 13
    assert any("for 4,056 of 5,450 layers" in n for n in conv.notes)  # 1,394 measured
    assert any("no CRFVOL" in n for n in conv.notes) and (prof["coarse_fragments"] == 0).all()
    assert not validate_profiles(prof).errors
    clean, crep = clean_profiles(prof)
    assert_counts_add_up(crep)
    assert (crep.n_profiles_out, crep.n_layers_out) == (1090, 4660)
    assert crep.to_frame().set_index("rule").loc["single_layer", "profiles_dropped"] == 719
    # depths in m, SOC density in g C m-3 (positive), measured columns kept
    assert clean.attrs["depth_units"] == "m"
    assert clean["top"].min() >= 0 and 3 < clean["bottom"].max() < 20
    assert (clean["soc"] > 0).all() and 1e3 < clean["soc"].median() < 1e5
    for c in ("CLYPPT", "SNDPPT", "SLTPPT", "PHIHOX", "CEC", "BLD"):
        assert clean[c].notna().any(), c

    # the example: forest-floor layers above the surface, one copy per duplicated profile
    ex = _real_profiles_example()
    table, dropped, counts = ex.load_profiles(SHARED / "data", sources=["febr"], verbose=False)
    row = counts.iloc[0]
    assert (row.profiles_in, row.layers_in) == (1823, 5456)
    assert (row.profiles_out, row.layers_out) == (1043, 4369)
    assert row.profiles_in == row.profiles_out + row.profiles_dropped
    assert row.layers_in == row.layers_out + row.layers_dropped == row.layers_out + len(dropped)
    assert table["profile_id"].str.startswith("febr/").all()
    assert (table["soc"] > 0).all() and table["top"].min() >= 0
    assert table.groupby("profile_id").size().min() >= 2
    assert dropped["rule"].value_counts()["above_surface"] == 33
    gone = set(dropped.loc[dropped["rule"] == "duplicate_profile", "profile_id"])
    assert len(gone) == 47
    # ctb0702 P-10 and ctb0800 P10 (43 pairs, same values): one of each pair kept
    ids = table["profile_id"].str.removeprefix("febr/")
    both = pd.Series(ids[ids.str.match(r"ctb0(702|800)-")].unique())
    pair = both.str.replace(r"^ctb0\d+-P-?0*", "", regex=True)  # ctb0702-P-8, ctb0800-P08: 8
    assert sum(p.startswith(("ctb0702-", "ctb0800-")) for p in gone) == 43
    assert not pair.duplicated().any()
    h, note = ex.febr_organic_layers(pd.read_csv(hz))
    assert note.startswith("FEBR organic layers: in 21 profile(s)")
    _, rep = ex.febr_duplicate_profiles(from_gsif(sites, h)[0])
    assert_counts_add_up(rep)
    assert rep.notes == ["duplicate_profile: 47 copies dropped by datasets: ctb0640/ctb0670 1, "
                         "ctb0702/ctb0800 43, ctb0807/ctb0808 3"]
    # no copies left: the rule finds none in its own output
    again, rep = ex.febr_duplicate_profiles(table.assign(profile_id=ids))
    assert rep.profiles_dropped == 0 and len(again) == len(table)
    # BLD: measured, in kg m-3; the rest from the pedotransfer function
    measured = table["BLD"].notna()
    assert measured.sum() == row.layers_bd_measured == 805
    assert table.loc[measured, "BLD"].between(200, 2500).all()
    assert (table.loc[~measured, "bd_from_ptf"]).all()
