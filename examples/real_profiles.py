#!/usr/bin/env python
"""Real soil profiles end to end: AfSP + ISIS + Edgeroi, forcing from climate, honest CV skill.

The pipeline, with xproda's public API only:

1. **Profiles.** The GSIF tables of the Africa Soil Profiles database (AfSP), the ISRIC world
   reference profiles (ISIS) and Edgeroi (NSW, Australia) are converted with
   :func:`xproda.sites.observations.from_gsif` (SOC density = ORCDRC x BLD x (1 - CRFVOL/100), the
   Adams (1973) pedotransfer function where BLD is missing) and cleaned with
   :func:`~xproda.sites.observations.clean_profiles` (spec §5.2). Profile ids get the source as a
   prefix (``afsp/...``). Every dropped layer and profile is printed by rule and written to
   ``dropped_layers.csv``; the profiles left out later (no covariates or forcing at the site,
   not in the subsample) go to ``dropped_profiles.csv`` with the reason. The example checks
   that the counts add up.
2. **Covariates** on the WorldClim coarse grid (~3.33 deg, period "current"; 2,154 cells
   where every covariate is defined: the 2,209 cells with temperature variables minus 55 ice
   cells whose Thornthwaite PET is 0, so their aridity is undefined; covariates and forcing
   are masked to them): ``bio3``, ``bio4``, ``bio7``, ``bio11``, ``bio12`` and what follows
   from them through :func:`xproda.climate.from_climate`: annual mean air temperature
   ``maat`` (degC), Thornthwaite PET ``pet`` (mm yr-1), the aridity index ``aridity`` = bio12 / PET, and the
   annual litter input ``litter_input`` (g C m-2 yr-1, Miami-model NPP). Soil texture and depth
   to bedrock are known at the profiles only, not on a grid, so they are *not* covariates (a
   network could not be applied to the map) and the forcing uses the defaults of
   ``from_climate`` (40 % sand, no bedrock in the 8.6 m column).
3. **Forcing** of the CLM5 model from the same climate grid with ``from_climate``.
4. **Cross-validation** (:func:`xproda.learning.training.cross_validate`) on spatially blocked folds
   (``--block-size`` degrees; whole blocks per fold, so held-out profiles are away from the
   training profiles): CLM5 default parameters, batch mode, two-step PRODA, end-to-end
   training, and the gradient-boosting and random-forest baselines (same covariates + depth).
   Held-out R2 / RMSE / bias of SOC density by depth interval (0-30, 30-100, > 100 cm) and
   overall are printed and saved (``skill_by_depth.csv`` / ``.md``; by source in
   ``skill_by_source.csv``).
5. **Maps**: an end-to-end network trained on all the (subsampled) profiles predicts the
   parameters on the covariate grid; the model's steady state gives the SOC stock of 0-30 cm
   and 0-100 cm (``soc_stock_0-30cm.png``, ``soc_stock_0-100cm.png``, ``soc_stock.nc``).

Subsampling (``--max-profiles``, default 8,000, to stay within 30 min on 2 cores): each source
gets an equal share of the budget, capped at its size, and the rest goes to the larger sources
(8,000 = all 653 ISIS, all 325 Edgeroi and 7,022 of the 20,055 AfSP profiles).
``--max-profiles 0`` uses every profile.

Run (from the repository root; the data are in ``../shared/data``)::

    .venv/bin/python examples/real_profiles.py                     # the benchmark configuration
    .venv/bin/python examples/real_profiles.py --max-profiles 300 --epochs 20 --methods \\
        default,end_to_end,gbm --no-maps                            # a quick look

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
from xproda.sites.observations import clean_profiles, from_gsif
from xproda.learning.training import BASELINE_METHODS, CV_METHODS, cross_validate, prepare_training_data

#: GSIF profile sources used (file stems ``gsif_<name>_sites.csv`` / ``_horizons.csv``).
SOURCES = ("afsp", "isis", "edgeroi")
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
def load_profiles(data_dir: Path, *, sources: Sequence[str] = SOURCES,
                  verbose: bool = True) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Convert and clean the GSIF sources; report every dropped layer and profile.

    Returns
    -------
    table : DataFrame
        Clean profile table (ids prefixed ``<source>/``), with a ``source`` column.
    dropped_layers : DataFrame
        Every removed row: ``source``, ``profile_id``, ``top``, ``bottom``, ``soc``, ``rule``.
    counts : DataFrame
        Per source: profiles and layers in and out, and dropped by conversion and cleaning.
    """
    tables, dropped, counts = [], [], []
    for name in sources:
        sites = data_dir / "profiles" / f"gsif_{name}_sites.csv"
        hz = data_dir / "profiles" / f"gsif_{name}_horizons.csv"
        if not (sites.exists() and hz.exists()):
            raise FileNotFoundError(f"profiles of source {name!r}: expected {sites} and {hz}, "
                                    "not found (pass --data)")
        prof, conv = from_gsif(sites, hz)
        clean, crep = clean_profiles(prof)
        total = conv + crep
        assert total.n_profiles_in == total.n_profiles_out + total.profiles_dropped
        assert total.n_layers_in == total.n_layers_out + total.layers_dropped
        if verbose:
            print(f"--- {name} ---\n{total}\n")
        d = total.dropped.copy()
        d.insert(0, "source", name)
        dropped.append(d)
        clean = clean.copy()
        clean["profile_id"] = f"{name}/" + clean["profile_id"].astype(str)
        clean["source"] = name
        tables.append(clean)
        counts.append({"source": name, "profiles_in": total.n_profiles_in,
                       "layers_in": total.n_layers_in, "profiles_dropped":
                       total.profiles_dropped, "layers_dropped": total.layers_dropped,
                       "profiles_out": total.n_profiles_out, "layers_out": total.n_layers_out})
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
def build_parser() -> argparse.ArgumentParser:
    """The command-line options (also used by ``benchmarks/bench_real_profiles.py``)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA,
                    help="folder with profiles/ and covariates/ (default ../shared/data)")
    ap.add_argument("--out", type=Path, default=Path("real_profiles_output"))
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
    a.out.mkdir(parents=True, exist_ok=True)
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    table, dropped_layers, counts = load_profiles(a.data)
    sub, left_out = subsample(table, max_profiles=a.max_profiles, seed=a.seed)
    timing["load"] = time.perf_counter() - t0

    t = time.perf_counter()
    cov, forcing = covariates_and_forcing(a.data)
    features = list(BIOCLIM + DERIVED)
    data = prepare_training_data(cov, sub, forcing=forcing, features=features)
    timing["covariates_forcing"] = time.perf_counter() - t
    ids_in = sub["profile_id"].unique()
    # every profile of the clean table is used, dropped at the sites, or not sampled
    assert len(ids_in) == len(data) + len(data.dropped)
    assert table["profile_id"].nunique() == len(ids_in) + len(left_out)
    dropped_profiles = pd.concat([
        data.dropped.rename(columns={"site": "profile_id"}),
        pd.DataFrame({"profile_id": left_out,
                      "reason": f"not in the subsample (--max-profiles {a.max_profiles})"})],
        ignore_index=True)
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
    pred.assign_coords(source=("site", source)).to_netcdf(a.out / "cv_predictions.nc")
    print(md, flush=True)

    stocks = None
    if not a.no_maps:
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
