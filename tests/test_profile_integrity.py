"""Integrity of soil-profile tables (issue 17, item 5): nothing lost, nothing mixed.

Each failure of the issue is reproduced, with the new behaviour:

1. every consumer validates the profiles (once): a table in cm, or SOC divided by 1e4, is
   refused by pack_profiles, assimilate, prepare_training_data, train_network and
   cross_validate;
2. depth units are never guessed where both m and cm fit (shallow tables);
3. one ``profile_id`` at two locations is an error (or split with a report), never merged;
4. forcing rows are matched to the profile sites (realigned by id, or refused);
5. sites without usable forcing are reported and not fitted;
6. converter options for the conventions of real databases (heights above the mineral
   surface, upper-boundary-only horizons, nested sub-samples, replicates, longitude signs);
7. a plausibility bound on SOC density, and cleaning reports that add up.
"""

from __future__ import annotations

import re
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from conftest import SHARED
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xproda.errors import OptionError, ProfileError
from xproda.sites.assimilation.problem import SiteProblem, align_forcing, assimilate
from xproda.sites.observations import (
    SOC_MAX_PLAUSIBLE,
    CleaningReport,
    ProfileBatch,
    ProfileValidationError,
    as_profile_batch,
    clean_profiles,
    from_aqp,
    from_gsif,
    from_table,
    pack_profiles,
    validate_profiles,
)
from xproda.sites.observations import packing as packing_module
from xproda.sites.observations.harmonise import nested_layers
from xproda.testing import forcing_dataset, random_forcing

PROFILES = SHARED / "data" / "profiles"
DOC = Path(__file__).resolve().parents[1] / "docs" / "user-guide" / "profile-tables.md"


def table(**overrides) -> pd.DataFrame:
    """Two valid profiles in m and g C m-3 (median SOC 8,000, median layer 0.2 m)."""
    df = pd.DataFrame({
        "profile_id": ["a", "a", "a", "b", "b", "b"],
        "lat": [10.0, 10.0, 10.0, -5.0, -5.0, -5.0],
        "lon": [20.0, 20.0, 20.0, 30.0, 30.0, 30.0],
        "top": [0.0, 0.1, 0.3, 0.0, 0.2, 0.5],
        "bottom": [0.1, 0.3, 0.6, 0.2, 0.5, 0.9],
        "soc": [20000.0, 12000.0, 5000.0, 11000.0, 4000.0, 2500.0],
    })
    for k, v in overrides.items():
        df[k] = v
    return df


def cm_table() -> pd.DataFrame:
    """The issue's table: depths 0-5/5-10/10-20 cm in columns documented as m.

    The deepest bottom (20) passed the old check (> 20 m); the median layer (5 "m") does not.
    """
    return table(top=[0.0, 5.0, 10.0, 0.0, 5.0, 10.0],
                 bottom=[5.0, 10.0, 20.0, 5.0, 10.0, 20.0])


def assert_adds_up(rep: CleaningReport) -> None:
    """Rows in = rows kept + rows dropped per reason; the dropped rows are listed."""
    rules = rep.to_frame()
    assert rep.n_layers_in == rep.n_layers_out + rules["layers_dropped"].sum()
    assert rep.n_profiles_in == rep.n_profiles_out + rules["profiles_dropped"].sum()
    assert len(rep.dropped) == rules["layers_dropped"].sum()
    for rule, n in rules.groupby("rule")["layers_dropped"].sum().items():
        assert (rep.dropped["rule"] == rule).sum() == n, rule


@pytest.fixture(scope="module")
def world():
    from xproda.datasets import synthetic_world

    return synthetic_world(10.0)


@pytest.fixture(scope="module")
def world_profiles(world):
    from xproda.datasets import synthetic_profiles

    return synthetic_profiles(world, n_sites=12, seed=1)


# ------------------------------------------------------------------------------------------
# 1. every consumer validates, once
# ------------------------------------------------------------------------------------------
CM_MESSAGE = r"depths look like cm, expected m: the median layer thickness .* is 5 \(> 2 m"
SOC_MESSAGE = r"'soc' looks like percent, g/kg or kg C m-3 \(largest value 2\)"


def test_cm_table_and_scaled_soc_refused_by_pack_and_assimilate():
    f = random_forcing(2, 0, regime="bio")
    for df, pattern in ((cm_table(), CM_MESSAGE), (table(soc=table()["soc"] / 1e4),
                                                   SOC_MESSAGE)):
        with pytest.raises(ProfileError, match=pattern):
            validate_profiles(df)
        with pytest.raises(ProfileError, match=pattern):
            pack_profiles(df)
        with pytest.raises(ProfileError, match=pattern):
            assimilate(df, f, method="map", n_starts=1, progress=False)
        # declaring the units "m" does not make 10 m layers plausible
        with pytest.raises(ProfileError, match=pattern):
            pack_profiles(df, depth_units="m")


def test_cm_table_refused_by_training_and_cross_validation(world, world_profiles):
    from xproda.learning.data import prepare_training_data
    from xproda.learning.trainer import train_network
    from xproda.learning.validation import cross_validate

    bad = world_profiles.assign(top=world_profiles["top"] * 100,
                                bottom=world_profiles["bottom"] * 100)
    scaled = world_profiles.assign(soc=world_profiles["soc"] / 1e4)
    for df, pattern in ((bad, r"depths look like cm, expected m"),
                        (scaled, r"'soc' looks like percent, g/kg or kg C m-3")):
        with pytest.raises(ProfileError, match=pattern):
            prepare_training_data(world, df)
        with pytest.raises(ProfileError, match=pattern):
            train_network(world, df, epochs=1, progress=False)
        with pytest.raises(ProfileError, match=pattern):
            cross_validate(world, df, methods=("default",), n_folds=2, progress=False)


def test_each_call_chain_validates_once(world, world_profiles, monkeypatch):
    from xproda.learning.data import prepare_training_data
    from xproda.learning.trainer import train_network
    from xproda.learning.validation import cross_validate

    calls = []
    real = packing_module.validate_profiles

    def counting(df, **kw):
        calls.append(len(df))
        return real(df, **kw)

    monkeypatch.setattr(packing_module, "validate_profiles", counting)
    data = prepare_training_data(world, world_profiles)
    assert calls == [len(world_profiles)]
    train_network(data, epochs=1, validation=0.0, progress=False)
    cross_validate(data, methods=("default",), n_folds=2, progress=False)
    assimilate(data.batch, data.forcing, method="map", n_starts=1, progress=False,
               free=["efolding"], sampler_options={"steps": 2})
    assert data.subset([0, 1]).batch.validation is data.batch.validation
    assert calls == [len(world_profiles)]  # the whole chain: one validation
    # a batch built by hand (no validation report) is validated once, then carried
    b = data.batch
    hand = ProfileBatch(site_ids=b.site_ids, lat=b.lat, lon=b.lon, depth=b.depth, top=b.top,
                        bottom=b.bottom, soc=b.soc, weight=b.weight, mask=b.mask,
                        n_layers=b.n_layers)
    checked = as_profile_batch(hand)
    assert checked.validation is not None and len(calls) == 2
    assert as_profile_batch(checked) is checked and len(calls) == 2
    # and a hand-made batch in cm is refused
    bad = ProfileBatch(site_ids=b.site_ids, lat=b.lat, lon=b.lon, depth=b.depth * 100,
                       top=b.top * 100, bottom=b.bottom * 100, soc=b.soc, weight=b.weight,
                       mask=b.mask, n_layers=b.n_layers)
    with pytest.raises(ProfileError, match="depths look like cm"):
        SiteProblem(bad, data.forcing)


# ------------------------------------------------------------------------------------------
# 2. depth units: never guessed where both m and cm fit
# ------------------------------------------------------------------------------------------
def shallow() -> pd.DataFrame:
    """0-1/1-2 (and 0-1.5/1.5-2.5): m (a shallow profile) or cm (a litter sampling)?"""
    return table(top=[0.0, 1.0, 2.0, 0.0, 1.5, 2.5], bottom=[1.0, 2.0, 3.0, 1.5, 2.5, 4.0])


def test_ambiguous_depths_need_declared_units():
    df = shallow()
    msg = (r"the units of 'top'/'bottom' are ambiguous: median layer thickness 1 and deepest "
           r"'bottom' 4 fit both m and cm.*pass depth_units='m'.*df.attrs\['depth_units'\] = "
           r"'m'.*from_table\(df, units=\{'depth': 'cm'\}\)")
    with pytest.raises(ProfileError, match=msg):
        validate_profiles(df)
    with pytest.raises(ProfileError, match="ambiguous"):
        pack_profiles(df)
    with pytest.raises(ProfileError, match="ambiguous"):
        assimilate(df, random_forcing(2, 0), method="map", progress=False)
    # declared: accepted, as the user says
    assert pack_profiles(df, depth_units="m").depth[0].tolist() == [0.5, 1.5, 2.5]
    declared = df.copy()
    declared.attrs["depth_units"] = "m"
    assert validate_profiles(declared).ok
    with pytest.raises(ProfileError, match=r"depth_units='m' but the table declares "
                       r"df.attrs\['depth_units'\] = 'cm'"):
        validate_profiles(df.copy().pipe(lambda d: d.attrs.update(depth_units="cm") or d),
                          depth_units="m")
    with pytest.raises(ProfileError, match=r"declared in cm .* convert with from_table"):
        pack_profiles(df, depth_units="cm")
    # from_table: undeclared is refused, naming the source columns; declared cm converts
    raw = df.rename(columns={"top": "hzn_top", "bottom": "hzn_bot"})
    cols = {"top": "hzn_top", "bottom": "hzn_bot"}
    with pytest.raises(ProfileError, match=r"units of the depth columns 'hzn_top'/'hzn_bot' "
                       r"are not given.*median layer thickness 1\b.*units=\{'depth': 'cm'\}"):
        from_table(raw, columns=cols)
    prof, rep = from_table(raw, columns=cols, units={"depth": "cm"})
    assert prof["bottom"].max() == pytest.approx(0.04)
    assert "depths converted from cm to m" in rep.notes
    assert prof.attrs["depth_units"] == "m" and validate_profiles(prof).ok


def test_unambiguous_depths_are_taken_as_m_and_noted():
    _prof, rep = from_table(table())
    assert any("depth units not given: 'top'/'bottom' taken as m (median layer thickness 0.25"
               in n for n in rep.notes)
    # a cm table declared as m is refused by the converter too
    with pytest.raises(ProfileError, match=r"in 'm' give a median layer thickness of 5 m"):
        from_table(cm_table(), units={"depth": "m"})


#: factor applied to a valid table, and the converter units that undo it (None: no unit does;
#: g C m-3 x 1e-2 or x 1e2 are no units at all, x 1e-4 neither)
SCALINGS = {"soc": [(1e-6, "g/cm3"), (1e-4, None), (1e-3, "kg/m3"), (1e-2, None),
                    (1e2, None), (1e4, None)],
            "depth": [(100.0, "cm"), (1000.0, "mm")]}


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(what=st.sampled_from(["soc", "depth"]), k=st.integers(0, 5),
       perm=st.permutations(range(6)))
def test_random_unit_scalings_are_refused_or_converted(what, k, perm):
    base = table().iloc[list(perm)].reset_index(drop=True)
    factor, unit = SCALINGS[what][k % len(SCALINGS[what])]
    bad = base.copy()
    cols = ["soc"] if what == "soc" else ["top", "bottom"]
    bad[cols] = bad[cols] * factor
    with pytest.raises(ProfileError, match=r"soc_units|looks like|depth_units"):
        validate_profiles(bad)
    with pytest.raises(ProfileError):
        pack_profiles(bad)
    if unit is None:  # no unit of the converter gives this factor: refused, that is all
        return
    if what == "soc":
        prof, rep = from_table(bad, units={"soc": unit})
        assert any(f"soc converted from {unit} to g C m-3" in n for n in rep.notes)
    else:
        prof, rep = from_table(bad, units={"depth": unit})
        assert f"depths converted from {unit} to m" in rep.notes
    b = pack_profiles(prof)
    ref = pack_profiles(base)
    order = [list(b.site_ids).index(s) for s in ref.site_ids]
    np.testing.assert_allclose(b.soc[order], ref.soc, rtol=1e-12)
    np.testing.assert_allclose(b.depth[order], ref.depth, rtol=1e-9)


# ------------------------------------------------------------------------------------------
# 3. one id at two locations: an error, or split with a report; never merged
# ------------------------------------------------------------------------------------------
def two_places() -> pd.DataFrame:
    """Profile 'a' sampled at two sites, non-overlapping layers (0-30 cm here, 30-90 there)."""
    return table(lat=[10.0, 10.0, 12.5, -5.0, -5.0, -5.0],
                 lon=[20.0, 20.0, 21.0, 30.0, 30.0, 30.0])


def test_one_id_at_two_locations_is_refused_not_merged():
    df = two_places()
    msg = (r"1 profile id\(s\) appear at more than one location .*'a' at "
           r"\[\[10.0, 20.0\], \[12.5, 21.0\]\]")
    with pytest.raises(ProfileError, match=msg):
        pack_profiles(df)  # was packed as one site at (10, 20)
    with pytest.raises(ProfileError, match=msg):
        assimilate(df, random_forcing(2, 0), method="map", progress=False)
    with pytest.raises(ProfileError, match=r"from_table: 1 profile id\(s\) .* 'a' at "
                       r"\[\[10.0, 20.0\], \[12.5, 21.0\]\].*conflicting_locations='split'"):
        from_table(df)


def test_one_id_at_two_locations_split_or_dropped_with_report():
    df = two_places()
    prof, rep = from_table(df, conflicting_locations="split")
    assert_adds_up(rep)
    assert prof["profile_id"].unique().tolist() == ["a@1", "a@2", "b"]
    assert prof.loc[prof.profile_id == "a@2", ["lat", "lon", "top"]].values.tolist() == [
        [12.5, 21.0, 0.3]]
    assert prof["source_profile_id"].tolist()[:3] == ["a", "a", "a"]
    row = rep.to_frame().set_index("rule").loc["conflicting_locations"]
    assert (row["layers_dropped"], row["profiles_dropped"]) == (0, -1)  # one profile added
    assert (rep.n_profiles_in, rep.n_profiles_out) == (2, 3)
    assert any("split into 2 profiles" in n for n in rep.notes)
    b = pack_profiles(prof)
    assert len(b) == 3 and b.lat.tolist() == [10.0, 12.5, -5.0]
    prof, rep = from_table(df, conflicting_locations="drop_profile")
    assert_adds_up(rep)
    assert prof["profile_id"].unique().tolist() == ["b"]
    assert rep.to_frame().set_index("rule").loc["conflicting_locations",
                                                "layers_dropped"] == 3


def test_longitude_sign_errors_reported_fixed_on_request():
    df = table(lon=[20.0, -20.0, 20.0, 30.0, 30.0, 30.0])  # one row of 'a' at 20 W
    with pytest.raises(ProfileError, match=r"'a' at \[\[10.0, 20.0\], \[10.0, -20.0\]\] "
                       r"\(longitude sign differs\).*lon_sign='profile'"):
        validate_profiles(df)
    with pytest.raises(ProfileError, match=r"\(longitude sign differs\)"):
        from_table(df)
    prof, rep = from_table(df, lon_sign="profile")
    assert_adds_up(rep)
    assert prof["lon"].tolist() == [20.0] * 3 + [30.0] * 3
    assert any("lon_sign='profile': the sign of 1 longitude(s) in 1 profile(s) flipped" in n
               and "'a': -20 vs 20" in n for n in rep.notes)
    # a whole profile on the wrong side: only an expected region can tell
    west = table(lon=[-20.0, -20.0, -20.0, 30.0, 30.0, 30.0])
    prof, rep = from_table(west, lon_sign="west")
    assert prof["lon"].tolist() == [-20.0] * 3 + [-30.0] * 3
    assert any("lon_sign='west': the sign of 3 longitude(s) flipped" in n for n in rep.notes)
    # nothing changes without the option; a tie cannot be decided and stays an error
    tie = table(lon=[20.0, -20.0, 20.0, 30.0, -30.0, 30.0]).iloc[[0, 1, 3, 4, 5]]
    with pytest.raises(ProfileError, match=r"'a' at \[\[10.0, 20.0\], \[10.0, -20.0\]\]"):
        from_table(tie, lon_sign="profile")  # 'a': one row each way; 'b' is fixed


# ------------------------------------------------------------------------------------------
# 4. forcing rows checked against the profile sites
# ------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def grid_sites():
    grid = forcing_dataset(6, 8, seed=4, ocean_fraction=0.0)
    grid["nbedrock"][:] = 20
    iy, ix = [0, 2, 5, 3, 1], [1, 4, 7, 0, 6]
    rows = [{"profile_id": f"s{i}", "lat": float(grid.lat[y]) + 0.3,
             "lon": float(grid.lon[x]) - 0.2, "top": t, "bottom": b, "soc": v}
            for i, (y, x) in enumerate(zip(iy, ix))
            for t, b, v in ((0.0, 0.1, 3e4), (0.1, 0.3, 2e4), (0.3, 0.6, 1e4))]
    batch = pack_profiles(pd.DataFrame(rows))
    sites = grid.proda.sample_sites(lat=batch.lat, lon=batch.lon, ids=batch.site_ids)
    return grid, batch, sites


@settings(max_examples=25, deadline=None)
@given(perm=st.permutations(range(5)))
def test_permuted_forcing_realigned_by_id_or_refused(grid_sites, perm):
    _grid, batch, sites = grid_sites
    ref = SiteProblem(batch, sites, free=["efolding"]).forcing
    shuffled = sites.isel(site=list(perm))
    # with the profile ids as site coordinate: realigned, identical forcing
    got = SiteProblem(batch, shuffled, free=["efolding"]).forcing
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k])
    # without ids, the positions site_lat/site_lon must match row by row
    anonymous = shuffled.drop_vars("site")
    if list(perm) == sorted(perm):
        SiteProblem(batch, anonymous, free=["efolding"])
        return
    first = next(i for i, p in enumerate(perm) if p != i)
    msg = (rf"the forcing rows do not match the profile sites: \d of 5 'site_lat'/'site_lon' "
           rf"differ .* first: site {first} \('s{first}'\): profile at "
           rf"\({batch.lat[first]:g}, {batch.lon[first]:g}\), forcing at "
           rf"\({batch.lat[perm[first]]:g}, {batch.lon[perm[first]]:g}\)")
    with pytest.raises(ProfileError, match=msg):
        SiteProblem(batch, anonymous, free=["efolding"])


def test_forcing_ids_must_match_profiles(grid_sites):
    _grid, batch, sites = grid_sites
    other = sites.assign_coords(site=["s0", "s1", "s2", "s3", "x9"])
    with pytest.raises(ProfileError, match=r"missing in the forcing \['s4'\], not among the "
                       r"profiles \['x9'\]"):
        align_forcing(other, batch)
    with pytest.raises(ProfileError, match=r"the forcing has 4 rows along 'site', the "
                       r"profiles 5 sites"):
        align_forcing(sites.isel(site=slice(0, 4)).drop_vars("site"), batch)
    # assimilate refuses a shuffled anonymous forcing before any fit
    with pytest.raises(ProfileError, match="do not match the profile sites"):
        assimilate(batch, sites.isel(site=[1, 0, 2, 3, 4]).drop_vars("site"), method="map",
                   progress=False)


# ------------------------------------------------------------------------------------------
# 5. sites without forcing: reported, not fitted
# ------------------------------------------------------------------------------------------
def test_site_without_forcing_reported_and_not_fitted(grid_sites):
    _grid, batch, sites = grid_sites
    ocean = sites.copy(deep=True)
    for v in ocean.data_vars:
        if ocean[v].dtype.kind == "f":
            ocean[v].loc[{"site": "s2"}] = np.nan
    assert SiteProblem(batch, ocean).no_forcing.tolist() == [False, False, True, False, False]
    with pytest.warns(UserWarning, match=r"assimilate: 1 of 5 site\(s\) have forcing with NaN "
                      r"that leaves the model without data .*: 's2'; they are not fitted"):
        ds = assimilate(batch, ocean, method="map", free=["efolding", "tau4s2"], n_starts=1,
                        progress=False, sampler_options={"steps": 3})
    assert ds["no_forcing"].values.tolist() == [False, False, True, False, False]
    assert ds.attrs["n_sites_no_forcing"] == 1
    assert ds["site"].values.tolist() == ["s0", "s1", "s2", "s3", "s4"]
    m = ds["map"].transpose("site", "parameter").values
    assert np.isnan(m[2]).all() and np.isfinite(np.delete(m, 2, 0)).all()
    assert np.isnan(ds["r2"].values[2]) and np.isfinite(np.delete(ds["r2"].values, 2)).all()
    assert ds["lat"].values.tolist() == batch.lat.tolist()
    # every site at sea: nothing to fit
    for v in ocean.data_vars:
        if ocean[v].dtype.kind == "f":
            ocean[v][:] = np.nan
    with pytest.raises(ProfileError, match=r"no site to fit: 5 of 5 site\(s\)"):
        assimilate(batch, ocean, method="map", progress=False)


def test_mapping_forcing_with_nan_rows_is_flagged():
    f = random_forcing(2, 3, regime="bio")
    f = {k: np.array(v, dtype=float) if np.asarray(v).dtype.kind == "f" else v
         for k, v in f.items()}
    for v in f.values():
        if v.dtype.kind == "f":
            v[1] = np.nan
    with pytest.warns(UserWarning, match=r"'b'; they are not fitted"):
        ds = assimilate(table(), f, method="map", free=["efolding"], n_starts=1,
                        progress=False, sampler_options={"steps": 2})
    assert ds["no_forcing"].values.tolist() == [False, True]
    assert np.isnan(ds["map"].sel(site="b")).all() and np.isfinite(ds["map"].sel(site="a")).all()


# ------------------------------------------------------------------------------------------
# 6. conventions of real databases: converter options
# ------------------------------------------------------------------------------------------
def npctr() -> pd.DataFrame:
    """NPCTR-style heights above the mineral surface (cm): forest floor +5 … 0, mineral < 0."""
    return pd.DataFrame({
        "plot": ["P1"] * 6 + ["P2"] * 4,
        "lat": [61.85] * 6 + [60.20] * 4, "lon": [24.28] * 6 + [24.90] * 4,
        "horizon": ["L", "F/H", "Ae", "Bs", "BC", "C", "O", "A", "B", "C"],
        "upper_cm": [5.0, 4.0, 0.0, -8.0, -30.0, -60.0, 3.0, 0.0, -15.0, -40.0],
        "lower_cm": [4.0, 0.0, -8.0, -30.0, -60.0, np.nan, 0.0, -15.0, -40.0, np.nan],
        "oc_g_kg": [480.0, 350.0, 12.0, 20.0, 4.0, 1.5, 300.0, 25.0, 8.0, 2.0],
        "bd": [0.08, 0.15, 1.10, 1.20, 1.45, 1.60, 0.20, 1.05, 1.35, 1.55],
    })


NPCTR_OPTS = {"columns": {"profile_id": "plot", "top": "upper_cm", "bottom": "lower_cm",
                           "soc": "oc_g_kg", "bulk_density": "bd"},
                  "units": {"depth": "cm", "soc": "g/kg", "bulk_density": "g/cm3"},
                  "depth_convention": "height"}


def test_height_above_mineral_surface():
    raw = npctr()
    with pytest.raises(ProfileError, match=r"8 of 8 layers have 'top' > 'bottom' or lie "
                       r"entirely above the mineral surface .* looks like heights above the "
                       r"mineral surface .* depth_convention='height'"):
        from_table(raw, **{k: v for k, v in NPCTR_OPTS.items() if k != "depth_convention"})
    # depths below the top of the profile, organic layers included
    prof, rep = from_table(raw, **NPCTR_OPTS, above_surface="shift",
                           missing_bottom="next_top", default_thickness=0.3)
    assert_adds_up(rep)
    p1 = prof[prof.profile_id == "P1"]
    assert p1["horizon"].tolist() == ["L", "F/H", "Ae", "Bs", "BC", "C"]
    np.testing.assert_allclose(p1["top"], [0.0, 0.01, 0.05, 0.13, 0.35, 0.65])
    np.testing.assert_allclose(p1["bottom"], [0.01, 0.05, 0.13, 0.35, 0.65, 0.95])
    np.testing.assert_allclose(p1["soc"], [480 * 80, 350 * 150, 12 * 1100, 20 * 1200,
                                           4 * 1450, 1.5 * 1600])
    # depths below the mineral surface: the forest floor is dropped, and counted
    prof, rep = from_table(raw, **NPCTR_OPTS, above_surface="drop",
                           missing_bottom="next_top", default_thickness=0.3)
    assert_adds_up(rep)
    assert rep.to_frame().set_index("rule").loc["above_surface", "layers_dropped"] == 3
    p2 = prof[prof.profile_id == "P2"]
    np.testing.assert_allclose(p2["top"], [0.0, 0.15, 0.40])
    np.testing.assert_allclose(p2["bottom"], [0.15, 0.40, 0.70])
    assert any("depth_convention='height'" in n and "3 organic layer(s)" in n
               for n in rep.notes)
    validate_profiles(prof)


def test_upper_boundary_only_horizons():
    raw = npctr()
    tab = lambda rep: rep.to_frame().set_index("rule")
    prof, rep = from_table(raw, **NPCTR_OPTS)  # default: missing_bottom="drop"
    assert_adds_up(rep)
    assert tab(rep).loc["no_bottom", "layers_dropped"] == 2
    assert set(rep.dropped.loc[rep.dropped.rule == "no_bottom", "row"]) == {5, 9}
    prof, rep = from_table(raw, **NPCTR_OPTS, missing_bottom="next_top")
    assert_adds_up(rep)  # no next horizon below C: dropped, and reported
    assert tab(rep).loc["no_bottom", "layers_dropped"] == 2
    prof, rep = from_table(raw, **NPCTR_OPTS, missing_bottom="thickness",
                           default_thickness=0.25)
    assert tab(rep).loc["no_bottom", "layers_dropped"] == 0
    assert prof.loc[prof.horizon == "C", "bottom"].tolist() == [0.85, 0.65]
    assert any("closed with default_thickness=0.25 m" in n for n in rep.notes)
    # an open horizon above another is closed at that horizon's top
    mid = pd.DataFrame({"profile_id": "x", "lat": 1.0, "lon": 1.0, "top": [0.0, 10, 30],
                        "bottom": [np.nan, 30, 50], "soc": [2e4, 9e3, 4e3]})
    prof, rep = from_table(mid, units={"depth": "cm"}, missing_bottom="next_top")
    assert prof["bottom"].tolist() == [0.1, 0.3, 0.5]
    assert any("1 horizon(s) with only an upper boundary closed at the top of the next" in n
               for n in rep.notes)
    with pytest.raises(OptionError, match=r"missing_bottom='thickness' needs "
                       r"default_thickness"):
        from_table(mid, units={"depth": "cm"}, missing_bottom="thickness")
    with pytest.raises(OptionError, match=r"missing_bottom=.*expected one of"):
        from_table(mid, units={"depth": "cm"}, missing_bottom="close")


def nested_table() -> pd.DataFrame:
    """'n' has a 0-30 cm bulk layer and 0-10, 10-20 cm sub-samples; 'm' is plain."""
    return pd.DataFrame({
        "profile_id": ["n"] * 5 + ["m"] * 2, "lat": [45.0] * 5 + [46.0] * 2, "lon": 6.0,
        "top": [0.0, 0.0, 10.0, 30.0, 60.0, 0.0, 20.0],
        "bottom": [30.0, 10.0, 20.0, 60.0, 100.0, 20.0, 50.0],
        "soc": [15000.0, 21000.0, 12000.0, 6000.0, 3000.0, 9000.0, 4000.0],
    })


def test_nested_sub_samples():
    raw = nested_table()
    parent, child = nested_layers(raw["profile_id"], raw["top"], raw["bottom"])
    assert parent.tolist() == [True] + [False] * 6
    assert child.tolist() == [False, True, True] + [False] * 4
    opts = {"units": {"depth": "cm"}}
    prof, rep = from_table(raw, **opts)  # default: like any overlap, the profile is dropped
    assert prof["profile_id"].unique().tolist() == ["m"]
    assert rep.to_frame().set_index("rule").loc["overlapping_layers", "layers_dropped"] == 5
    prof, rep = from_table(raw, **opts, nested="finest")
    assert_adds_up(rep)
    assert prof.loc[prof.profile_id == "n", "top"].tolist() == [0.0, 0.1, 0.3, 0.6]
    assert rep.dropped.loc[rep.dropped.rule == "nested_layers", "soc"].tolist() == [15000.0]
    prof, rep = from_table(raw, **opts, nested="parent")
    assert_adds_up(rep)
    assert prof.loc[prof.profile_id == "n", "bottom"].tolist() == [0.3, 0.6, 1.0]
    assert rep.to_frame().set_index("rule").loc["nested_layers", "layers_dropped"] == 2
    with pytest.raises(ProfileError, match=r"2 sub-sample\(s\) nested in a parent layer of the "
                       r"same profile in profile\(s\) 'n', e.g. 'n' 0-0.3 m contains another "
                       r"layer; pass nested='finest'"):
        from_table(raw, **opts, nested="error")


def test_replicate_rows_mean_or_error():
    raw = table()
    rep_rows = pd.concat([raw, raw.iloc[[1]].assign(soc=14000.0)], ignore_index=True)
    with pytest.raises(ProfileError, match=r"1 replicate row\(s\) \(same 'profile_id', 'top', "
                       r"'bottom'\) in profile\(s\) 'a', e.g. 'a' 0.1-0.3 m; pass "
                       r"duplicates='mean'"):
        from_table(rep_rows, duplicates="error")
    prof, rep = from_table(rep_rows)  # default: mean, reported
    assert_adds_up(rep)
    assert prof.loc[(prof.profile_id == "a") & (prof.top == 0.1), "soc"].tolist() == [13000.0]
    assert rep.to_frame().set_index("rule").loc["duplicate_layers", "layers_dropped"] == 1


def test_conventions_are_options_of_every_converter():
    sites = pd.DataFrame({"SOURCEID": ["p"], "LONWGS84": [-20.0], "LATWGS84": [60.0]})
    hz = pd.DataFrame({"SOURCEID": ["p"] * 3, "UHDICM": [5.0, 0.0, -20.0],
                       "LHDICM": [0.0, -20.0, np.nan], "ORCDRC": [400.0, 30.0, 5.0],
                       "BLD": [150.0, 1100.0, 1400.0]})
    kw = {"depth_convention": "height", "above_surface": "shift", "missing_bottom": "thickness",
              "default_thickness": 0.2, "lon_sign": "east"}
    prof, rep = from_gsif(sites, hz, **kw)
    assert_adds_up(rep)
    np.testing.assert_allclose(prof["top"], [0.0, 0.05, 0.25])
    np.testing.assert_allclose(prof["bottom"], [0.05, 0.25, 0.45])
    assert prof["lon"].tolist() == [20.0] * 3
    site = pd.DataFrame({"id": ["p"], "x": [-20.0], "y": [60.0]})
    h = hz.rename(columns={"SOURCEID": "id", "UHDICM": "top", "LHDICM": "bottom",
                           "ORCDRC": "C", "BLD": "Db"}).assign(Db=[0.15, 1.1, 1.4])
    prof2, rep2 = from_aqp(site, h, **kw)
    assert_adds_up(rep2)
    np.testing.assert_allclose(prof2[["top", "bottom", "soc"]], prof[["top", "bottom", "soc"]])
    # an id listed at two places in a site table is dropped and reported, never merged
    twice = pd.concat([site, site.assign(y=61.0)], ignore_index=True)
    prof3, rep3 = from_aqp(twice, h)
    assert_adds_up(rep3)
    assert prof3.empty and rep3.to_frame().set_index("rule").loc["ambiguous_site",
                                                                 "layers_dropped"] == 3
    with pytest.raises(OptionError, match=r"nested='all': expected one of"):
        from_gsif(sites, hz, nested="all")
    with pytest.raises(OptionError, match=r"soc_max=200000.0: expected a bound in \(0, "
                       r"150,000\] g C m-3"):
        from_aqp(site, h, soc_max=2e5)


# ------------------------------------------------------------------------------------------
# 7. SOC density bound, and reports that add up
# ------------------------------------------------------------------------------------------
def test_soc_density_bound():
    raw = pd.DataFrame({"profile_id": ["a"] * 3 + ["b"] * 3, "lat": 1.0, "lon": 2.0,
                        "top": [0, 10, 30] * 2, "bottom": [10, 30, 60] * 2,
                        "oc_pct": [14.0, 2.0, 1.0, 3.0, 1.5, 0.5],
                        "bd": [1.7, 1.4, 1.5, 1.2, 1.4, 1.5]})
    prof, rep = from_table(raw, columns={"soc": "oc_pct", "bulk_density": "bd"},
                           units={"depth": "cm", "soc": "%", "bulk_density": "g/cm3"})
    assert_adds_up(rep)
    gone = rep.dropped[rep.dropped.rule == "soc_max"]
    assert gone[["profile_id", "top", "soc"]].values.tolist() == [["a", 0.0, 238000.0]]
    row = rep.to_frame().set_index("rule").loc["soc_max"]
    assert row["layers_dropped"] == 1 and "above soc_max=150,000 g C m-3" in row["description"]
    assert prof["soc"].max() < SOC_MAX_PLAUSIBLE
    # given as densities, such a layer is flagged by the validation (and every consumer)
    dense = table(soc=[238000.0, 12000.0, 5000.0, 11000.0, 4000.0, 2500.0])
    report = validate_profiles(dense)
    (p,) = report.warnings
    assert p.check == "soc_range" and p.profiles == ("a",)
    assert re.search(r"1 'soc' value\(s\) above 150,000 g C m-3 \(max 238000\) in profile\(s\) "
                     r"'a': denser than pure organic matter", p.message)
    with pytest.warns(UserWarning, match=r"(?s)pack_profiles: the profile table has 1 "
                      r"warning.*soc_range"):
        pack_profiles(dense)
    clean, crep = clean_profiles(dense, rules=["soc_max", "zero_obs", "missing",
                                               "single_layer"])
    assert_adds_up(crep)
    assert crep.to_frame().set_index("rule").loc["soc_max", "layers_dropped"] == 1
    assert not validate_profiles(clean).warnings
    assert validate_profiles(table(soc=[149000.0, 1e4, 5e3, 1e4, 4e3, 2e3])).ok
    # a whole table x 100 (e.g. mg vs g) is a units error, not a few dense rows
    with pytest.raises(ProfileError, match=r"median is 800000, above the densest plausible "
                       r"layer \(150,000 g C m-3"):
        validate_profiles(table(soc=table()["soc"] * 100))


def messy_table() -> pd.DataFrame:
    """Every kind of trouble at once (cm, % OC, g cm-3): each row must be accounted for."""
    rows = [
        # id, lat, lon, top, bottom, oc %, bd
        ("ok", 50.0, 10.0, 0, 10, 3.0, 1.1), ("ok", 50.0, 10.0, 10, 30, 1.0, 1.4),
        ("ok", 50.0, 10.0, 30, 60, 0.4, 1.5),
        ("rep", 51.0, 11.0, 0, 20, 2.0, 1.2), ("rep", 51.0, 11.0, 0, 20, 2.4, 1.2),
        ("rep", 51.0, 11.0, 20, 50, 0.8, 1.4),
        ("dense", 52.0, 12.0, 0, 10, 14.0, 1.7), ("dense", 52.0, 12.0, 10, 40, 1.0, 1.4),
        ("dense", 52.0, 12.0, 40, 70, 0.5, 1.5),
        ("open", 53.0, 13.0, 0, 15, 2.0, 1.2), ("open", 53.0, 13.0, 15, np.nan, 0.6, 1.5),
        ("nosoc", 54.0, 14.0, 0, 10, np.nan, 1.2), ("nosoc", 54.0, 14.0, 10, 30, np.nan, 1.4),
        ("noloc", np.nan, 15.0, 0, 10, 1.0, 1.2), ("noloc", np.nan, 15.0, 10, 30, 0.5, 1.4),
        ("inv", 55.0, 16.0, 0, 10, 1.5, 1.2), ("inv", 55.0, 16.0, 30, 10, 0.5, 1.4),
        ("inv", 55.0, 16.0, 40, 60, 0.5, 1.4),
        ("ovl", 56.0, 17.0, 0, 20, 1.5, 1.2), ("ovl", 56.0, 17.0, 15, 40, 0.5, 1.4),
        ("zero", 57.0, 18.0, 0, 10, 0.0, 1.2), ("zero", 57.0, 18.0, 10, 30, 0.0, 1.4),
        ("single", 58.0, 19.0, 0, 30, 1.0, 1.3),
        ("noBD", 59.0, 20.0, 0, 10, 2.0, np.nan), ("noBD", 59.0, 20.0, 10, 30, 1.0, 1.4),
    ]
    df = pd.DataFrame(rows, columns=["pid", "lat", "lon", "top", "bottom", "oc", "bd"])
    df["rowid"] = [f"r{i}" for i in range(len(df))]  # text: replicates are not averaged
    return df


def _accounted(raw: pd.DataFrame, dropped: list[pd.DataFrame], out: pd.DataFrame) -> None:
    """Every input row is kept (its rowid in ``out``) or listed as dropped, exactly once."""
    kept = set(out["rowid"])
    gone = [r for d in dropped for r in d["rowid"]]
    assert len(gone) == len(set(gone)) and len(kept) == len(out)
    assert kept | set(gone) == set(raw["rowid"]) and not kept & set(gone)


def test_messy_table_report_adds_up():
    raw = messy_table()
    prof, conv = from_table(raw, columns={"profile_id": "pid", "soc": "oc",
                                          "bulk_density": "bd"},
                            units={"depth": "cm", "soc": "%", "bulk_density": "g/cm3"})
    clean, crep = clean_profiles(prof)
    total = conv + crep
    for r in (conv, crep, total):
        assert_adds_up(r)
    assert (total.n_layers_in, total.n_profiles_in) == (25, 11)
    by_rule = total.to_frame().groupby("rule")["layers_dropped"].sum()
    expected = {"no_location": 2, "no_soc": 2, "no_bottom": 1, "bad_depths": 1,
                "soc_max": 1, "duplicate_layers": 1, "overlapping_layers": 2,
                "zero_obs": 2, "single_layer": 2}
    assert {k: v for k, v in by_rule.items() if v} == expected
    assert total.n_layers_out == 25 - sum(expected.values()) == len(clean)
    # the rows themselves: kept or dropped, never both, never lost (rowid travels along)
    conv_rows = conv.dropped.merge(raw[["rowid"]], left_on="row", right_index=True)
    crep_rows = crep.dropped.merge(prof[["rowid"]], left_on="row", right_index=True)
    _accounted(raw, [conv_rows, crep_rows], clean)
    b = pack_profiles(clean)
    assert b.mask.sum() == total.n_layers_out and len(b) == total.n_profiles_out


@pytest.mark.shared
@pytest.mark.parametrize("name", ["afsp", "isis"])
def test_real_table_report_adds_up(name):
    if not PROFILES.exists():
        pytest.skip(f"{PROFILES} not available (../shared absent)")
    hz = pd.read_csv(PROFILES / f"gsif_{name}_horizons.csv")
    hz["rowid"] = [f"r{i}" for i in range(len(hz))]
    prof, conv = from_gsif(PROFILES / f"gsif_{name}_sites.csv", hz)
    clean, crep = clean_profiles(prof)
    total = conv + crep
    for r in (conv, crep, total):
        assert_adds_up(r)
    assert total.n_layers_in == len(hz)
    conv_rows = conv.dropped.merge(hz[["rowid"]], left_on="row", right_index=True)
    crep_rows = crep.dropped.merge(prof[["rowid"]], left_on="row", right_index=True)
    _accounted(hz, [conv_rows, crep_rows], clean)
    soc_max = conv.dropped[conv.dropped.rule == "soc_max"]
    assert (soc_max["soc"] > SOC_MAX_PLAUSIBLE).all()
    if name == "afsp":  # 10 % OC at 1.8 g cm-3 and 30 % OC at 0.74 g cm-3
        assert sorted(soc_max["soc"].round().tolist()) == [180000.0, 222000.0]
    b = pack_profiles(clean)  # validated: converter outputs declare m
    assert b.mask.sum() == total.n_layers_out and not b.validation.errors


# ------------------------------------------------------------------------------------------
# the user guide's worked example runs
# ------------------------------------------------------------------------------------------
def test_profile_tables_guide_examples_run():
    if not DOC.exists():
        pytest.skip("docs not present")
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.DOTALL)
    assert blocks
    ns: dict = {}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the example raises no warning
        for code in blocks:
            exec(compile(code, str(DOC), "exec"), ns)  # noqa: S102


def test_profile_error_is_input_error():
    from xproda.errors import InputError

    assert issubclass(ProfileValidationError, ProfileError)
    assert issubclass(ProfileError, InputError) and issubclass(ProfileError, ValueError)
