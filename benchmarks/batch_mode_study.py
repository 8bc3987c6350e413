#!/usr/bin/env python
"""Batch mode, examined (issue 19, item 6): convergence, and the cost it optimises vs R2.

Batch mode (``assimilate(method="batch")``, the ``"batch"`` method of
:func:`xproda.learning.validation.cross_validate`) fits ONE parameter set to all training sites:
the minimum of the spec cost summed over the sites (Tao et al. 2020's "batch" assimilation).
It scored below the CLM5 defaults on held-out R2 on every data set tried. This script asks
whether that is an under-converged fit or what the cost does, on one spatially blocked split
(3 folds of ``--block-size`` degree blocks, fold 0 held out) of

* the **twin world** (``synthetic_world(4.0)``, ``truth_parameters(kind="cue")``, 300 profiles,
  log-noise 0.1: the setting of ``tests/test_training.py``), and
* **real profiles** (AfSP + ISIS + Edgeroi from ``../shared/data``, forcing from WorldClim, built
  as in ``examples/real_profiles.py``; skipped when the data are absent).

For each it prints Markdown tables:

1. **Convergence** of the batch fit on the training sites (the spec cost, ``likelihood="cen"``):
   Adam 150 steps (the cross-validation's budget) from several random starts, Adam 500 (and
   2000 with ``--long``), L-BFGS; the summed cost reached beside the cost of reference points:
   the CLM5 defaults (what the CV's ``"default"`` method runs: ``default_steady_state`` with the
   Jackson input profile), the default vector of the parameter space (clipped into (0, 1)),
   SOC = 0 everywhere, and the mean and median of the per-site MAP fits (and, on the twin
   world, of the true parameters).
2. **Cost vs metric**: every point scored on the training and on the held-out sites by the
   spec cost, by the mean squared log error per site (the networks' training loss,
   ``soc_loss(kind="log")``) and by the pooled R2 of linear SOC (what ``cross_validate``
   reports), R2 of log SOC, and the bias.
3. **Why**: the spec cost per observation against the ratio model/observation, and where the
   defaults' cost comes from.
4. **A symmetric cost**: the same batch fit with the log-normal likelihood
   (``likelihood="gaussian", log_space=True``, sd 0.6 of log SOC).
5. **Cross-validation** (``--parts cv``): the three folds pooled, as ``cross_validate``
   reports them: CLM5 defaults, batch mode with the spec cost and with the log-normal
   likelihood (L-BFGS, the batch default, 1 start).

Run from the repository root (2 torch threads; times are wall-clock on the machine, with its
load average printed, and grow with other processes)::

    .venv/bin/python benchmarks/batch_mode_study.py                   # twin world + real profiles
    .venv/bin/python benchmarks/batch_mode_study.py --data twin --quick
    .venv/bin/python benchmarks/batch_mode_study.py --long            # + Adam 2000 steps

The results are discussed in ``docs/batch-mode.md``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "data"
REL = 0.6  # relative error of the cen cost (and sd of log SOC of the log-normal likelihood)


# ----------------------------------------------------------------------------- data
def twin_data(n_sites: int):
    from xproda.datasets import (
        synthetic_profiles,
        synthetic_world,
        truth_at_sites,
        truth_parameters,
    )
    from xproda.learning.training import prepare_training_data

    world = synthetic_world(4.0, seed=0)
    truth = truth_parameters(world, kind="cue")
    prof = synthetic_profiles(world, n_sites=n_sites, truth=truth, noise=0.1, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 8 synthetic values above SOC_MAX_PLAUSIBLE
        data = prepare_training_data(world, prof)
    tr = truth_at_sites(truth, prof)
    ids = list(tr["site"].values) if "site" in tr.dims else None
    th = tr.values
    if ids is not None and list(ids) != list(data.batch.site_ids):
        th = tr.sel(site=list(data.batch.site_ids)).values
    return data, th


def real_data(n_profiles: int):
    sys.path.insert(0, str(ROOT / "examples"))
    import real_profiles as rp

    from xproda.learning.training import prepare_training_data

    table, _, _ = rp.load_profiles(DATA, verbose=False)
    sub, _ = rp.subsample(table, max_profiles=n_profiles, seed=0)
    cov, forcing = rp.covariates_and_forcing(DATA)
    data = prepare_training_data(cov, sub, forcing=forcing, features=list(rp.BIOCLIM + rp.DERIVED))
    return data, None


# ----------------------------------------------------------------------------- scoring
class Part:
    """Sites of one side of the split: observations, the spec-cost problem, scoring."""

    def __init__(self, data, model, mapping: str) -> None:
        self.data = data
        self.model = model
        self.mapping = mapping
        b = data.batch
        self.mask = np.asarray(b.mask, dtype=bool)
        self.obs = np.where(self.mask, b.soc, np.nan)
        self.weight = np.where(self.mask, b.weight, np.nan)

    def soc(self, theta) -> np.ndarray:
        """Modelled SOC at the observations for one parameter vector (or ``None``: defaults)."""
        from xproda.learning.forward import soc_at_observations

        if theta is None:
            return soc_at_observations(self.model, self.data, None, mapping=self.mapping)
        th = np.broadcast_to(np.asarray(theta, dtype=float), (len(self.data), len(theta)))
        return soc_at_observations(self.model, self.data, np.array(th), mapping=self.mapping)

    def score(self, mod: np.ndarray) -> dict[str, float]:
        from xproda.learning import crossval
        from xproda.learning.losses import soc_loss
        from xproda.sites.assimilation import costs

        mod = np.where(self.mask, mod, np.nan)
        j = costs.cost_cen(torch.as_tensor(mod), torch.as_tensor(self.obs),
                           torch.as_tensor(self.weight)).numpy()
        sk = crossval.skill_scores(mod, self.obs, mask=self.mask)
        ok = self.mask & (np.nan_to_num(mod) > 0)
        msle = float(soc_loss(torch.as_tensor(np.nan_to_num(mod, nan=1.0)),
                              torch.as_tensor(np.nan_to_num(self.obs, nan=1.0)),
                              torch.as_tensor(ok), kind="log")) if ok.any() else float("nan")
        return {"cost": float(np.sum(j)), "msle": msle, "r2": sk["r2"],
                "r2_log": sk["r2_log"], "bias": sk["bias"], "n_nan": int(np.isnan(j).sum())}


def batch_fit(part: Part, *, likelihood: str = "cen", **opts) -> dict[str, Any]:
    """``assimilate(method="batch")`` on the sites of ``part``, as ``cross_validate`` calls it."""
    from xproda.sites.assimilation.problem import assimilate

    extra = {} if likelihood == "cen" else {"likelihood": "gaussian", "log_space": True,
                                             "sigma_rel": REL}
    seed = opts.pop("seed", 0)
    t0 = time.perf_counter()
    ds = assimilate(part.data.batch, part.data.forcing, model=part.model, method="batch",
                    seed=seed, progress=False, mapping=part.mapping, sampler_options=opts,
                    **extra)
    sec = time.perf_counter() - t0
    return {"theta": ds["map"].values.reshape(-1), "loss": float(ds["loss"]),
            "start_loss": np.atleast_1d(ds["start_loss"].values), "seconds": sec,
            "converged": bool(ds["converged"]), "n_steps": int(ds["n_steps"]),
            "evaluations": int(ds.attrs["n_model_evaluations"])}


def site_fits(part: Part) -> tuple[np.ndarray, float]:
    """Per-site MAP of the spec cost (L-BFGS, 60 iterations, 2 starts)."""
    from xproda.sites.assimilation.problem import assimilate

    t0 = time.perf_counter()
    ds = assimilate(part.data.batch, part.data.forcing, model=part.model, method="map",
                    n_starts=2, seed=0, progress=False, mapping=part.mapping,
                    sampler_options={"method": "lbfgs", "steps": 60, "rtol": 1e-7})
    return ds["map"].transpose("site", "parameter").values, time.perf_counter() - t0


# ----------------------------------------------------------------------------- tables
def fmt(v: float, nd: int = 3) -> str:
    if v is None or not np.isfinite(v):
        return "–"
    if abs(v) >= 1000:
        return f"{v:,.0f}"
    return f"{v:.{nd}f}"


def study(name: str, data, truth, args) -> None:
    from xproda.learning import crossval
    from xproda.models import get_model

    t_start = time.perf_counter()
    model = get_model("clm5")
    folds = crossval.kfold_sites(data.batch.lat, data.batch.lon, n_folds=3, method="blocked",
                                 block_size=args.block_size, seed=0)
    test = folds[0]
    train = np.setdiff1d(np.arange(len(data)), test)
    tr, te = Part(data.subset(train), model, args.mapping), Part(data.subset(test), model,
                                                                  args.mapping)
    nobs = (int(tr.mask.sum()), int(te.mask.sum()))
    print(f"\n## {name}\n\n{len(train)} training sites ({nobs[0]} observations), {len(test)} "
          f"held-out sites ({nobs[1]}); 3 blocked folds of {args.block_size:g} degrees, fold 0 "
          f"held out; mapping {args.mapping!r}; mean observed SOC {np.nanmean(tr.obs):,.0f} "
          f"(training) and {np.nanmean(te.obs):,.0f} g C m-3 (held out).\n", flush=True)

    points: dict[str, Any] = {}  # label -> theta (None = CLM5 defaults, "zero" = SOC 0)
    points["CLM5 defaults (the CV's 'default')"] = None
    dn = np.clip(np.nan_to_num(model.parameters.default_normalized(), nan=0.5), 1e-6, 1 - 1e-6)
    points["default vector, clipped into (0, 1)"] = dn
    points["SOC = 0 everywhere"] = "zero"
    fits: list[tuple[str, str, dict]] = []

    def run(label: str, lik: str, **opts) -> dict:
        r = batch_fit(tr, likelihood=lik, **opts)
        fits.append((label, lik, r))
        print(f"  fitted {label} [{lik}]: loss {r['loss']:.1f} in {r['seconds']:.0f} s",
              flush=True)
        return r

    starts = 2 if args.quick else 4
    run(f"Adam 150 steps, {starts} starts", "cen", optimizer="adam", steps=150,
        n_starts=starts)
    if not args.quick:
        run("Adam 500 steps, 1 start", "cen", optimizer="adam", steps=500, n_starts=1)
    if args.long:
        run("Adam 2000 steps, 1 start", "cen", optimizer="adam", steps=2000, n_starts=1)
    run("L-BFGS ≤ 200 iterations, 2 starts", "cen", optimizer="lbfgs", steps=200, n_starts=2)
    run("Adam 150 steps, 1 start", "lognormal", optimizer="adam", steps=150, n_starts=1)
    run("L-BFGS ≤ 200 iterations, 1 start", "lognormal", optimizer="lbfgs", steps=200,
        n_starts=1)

    sf, sf_sec = site_fits(tr)
    print(f"  per-site MAP of {len(train)} training sites in {sf_sec:.0f} s", flush=True)
    points["mean of the per-site fits"] = np.nanmean(sf, 0)
    points["median of the per-site fits"] = np.nanmedian(sf, 0)
    if truth is not None:
        points["mean of the true parameters"] = truth[train].mean(0)
        points["median of the true parameters"] = np.median(truth[train], 0)
    for label, lik, r in fits:
        points[f"batch [{'spec cost' if lik == 'cen' else 'log-normal'}]: {label}"] = r["theta"]

    scores: dict[str, tuple[dict, dict]] = {}
    for label, th in points.items():
        if isinstance(th, str):
            scores[label] = (tr.score(np.zeros_like(tr.obs)), te.score(np.zeros_like(te.obs)))
        else:
            scores[label] = (tr.score(tr.soc(th)), te.score(te.soc(th)))

    # 1. convergence
    print("\n### Convergence of the batch fit (spec cost summed over the training sites)\n")
    print("| fit | cost per start (sorted) | best | converged | model evaluations | s |")
    print("|---|---|---:|---|---:|---:|")
    for label, lik, r in fits:
        if lik != "cen":
            continue
        sl = ", ".join(fmt(v, 0) for v in np.sort(r["start_loss"]))
        print(f"| {label} | {sl} | {fmt(r['loss'], 0)} | {r['converged']} | "
              f"{r['evaluations']:,} | {r['seconds']:.0f} |")
    print("\n| reference point | cost (training sites) |\n|---|---:|")
    for label in points:
        if not label.startswith("batch"):
            print(f"| {label} | {fmt(scores[label][0]['cost'], 0)} |")

    # 2. cost vs metric
    print("\n### Cost vs metric, training and held-out sites\n")
    print("Spec cost: summed over sites. MSLE: mean squared log error per site, averaged over "
          "sites (the networks' `soc_loss`). R2: pooled linear SOC (as `cross_validate`). "
          "Bias in g C m-3.\n")
    print("| parameter set | cost | MSLE | R2 | R2 log | bias | held-out cost | MSLE | R2 | "
          "R2 log | bias |")
    print("|---|" + "---:|" * 10)
    for label in points:
        a, b = scores[label]
        print(f"| {label} | {fmt(a['cost'], 0)} | {fmt(a['msle'], 2)} | {fmt(a['r2'])} | "
              f"{fmt(a['r2_log'])} | {fmt(a['bias'], 0)} | {fmt(b['cost'], 0)} | "
              f"{fmt(b['msle'], 2)} | {fmt(b['r2'])} | {fmt(b['r2_log'])} | "
              f"{fmt(b['bias'], 0)} |")
    homog = [lab for lab in points if points[lab] is not None and not isinstance(points[lab], str)]
    c = np.array([scores[lab][0]["cost"] for lab in homog])
    r2 = np.array([scores[lab][1]["r2"] for lab in homog])
    rho = _spearman(c, r2)
    print(f"\nSpearman rank correlation, over the {len(homog)} parameter vectors above, of the "
          f"training cost with the held-out R2: {rho:+.2f}.")

    # 3. why
    mod = tr.soc(None)
    ratio = (mod / tr.obs)[tr.mask]
    w = tr.weight[tr.mask]
    term = w * (ratio - 1.0) ** 2 / (2 * REL ** 2)
    over = ratio > 2
    print("\n### Where the defaults' cost comes from (training sites)\n")
    print(f"Observations the defaults overpredict more than twofold: {over.mean():.1%}; their "
          f"share of the cost: {term[over].sum() / term.sum():.1%}. Underpredicted more than "
          f"twofold: {(ratio < 0.5).mean():.1%} (share {term[ratio < 0.5].sum() / term.sum():.1%})"
          f". Median ratio model/observation {np.median(ratio):.2f}.")
    top = np.argsort(-np.nansum(np.where(tr.mask, tr.weight, 0), 1))
    wsum = np.nansum(np.where(tr.mask, tr.weight, 0), 1)
    print(f"Site weight (sum of layer weights) ranges {wsum.min():.1f}-{wsum.max():.1f}; the "
          f"10 % of sites with the most weight hold "
          f"{wsum[top[:max(1, len(top) // 10)]].sum() / wsum.sum():.1%} of it.")
    print(f"\n({name}: {time.perf_counter() - t_start:.0f} s)", flush=True)


def cv_table(name: str, data, args) -> None:
    """Held-out skill pooled over all folds, as ``cross_validate`` computes it."""
    from xproda.learning import crossval
    from xproda.learning.forward import soc_at_observations
    from xproda.models import get_model

    t_start = time.perf_counter()
    model = get_model("clm5")
    folds = crossval.kfold_sites(data.batch.lat, data.batch.lon, n_folds=3, method="blocked",
                                 block_size=args.block_size, seed=0)
    S, D = data.batch.soc.shape
    methods = {"CLM5 defaults": None,
               "batch, spec cost (L-BFGS, 1 start)": "cen",
               "batch, log-normal likelihood (L-BFGS, 1 start)": "lognormal"}
    pred = {m: np.full((S, D), np.nan) for m in methods}
    secs = dict.fromkeys(methods, 0.0)
    for test in folds:
        train = np.setdiff1d(np.arange(S), test)
        dtr, dte = data.subset(train), data.subset(test)
        for m, lik in methods.items():
            t0 = time.perf_counter()
            if lik is None:
                soc = soc_at_observations(model, dte, None, mapping=args.mapping)
            else:
                th = batch_fit(Part(dtr, model, args.mapping), likelihood=lik,
                               n_starts=1)["theta"]
                soc = soc_at_observations(model, dte, np.broadcast_to(th, (len(test), th.size)),
                                          mapping=args.mapping)
            secs[m] += time.perf_counter() - t0
            pred[m][test, :soc.shape[1]] = soc
    obs = np.where(data.batch.mask, data.batch.soc, np.nan)
    print(f"\n### {name}: three blocked folds pooled (as `cross_validate`)\n")
    print("| method | R2 | R2 log | RMSE | bias | s |\n|---|---:|---:|---:|---:|---:|")
    for m in methods:
        sk = crossval.skill_scores(pred[m], obs, mask=data.batch.mask)
        print(f"| {m} | {fmt(sk['r2'])} | {fmt(sk['r2_log'])} | {fmt(sk['rmse'], 0)} | "
              f"{fmt(sk['bias'], 0)} | {secs[m]:.0f} |")
    print(f"\n({name}, cross-validation: {time.perf_counter() - t_start:.0f} s)", flush=True)


def _spearman(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    ra = np.argsort(np.argsort(a[ok]))
    rb = np.argsort(np.argsort(b[ok]))
    return float(np.corrcoef(ra, rb)[0, 1])


def cost_curve() -> None:
    print("\n## The spec cost of one observation (weight 1) against the ratio model/observation\n")
    rs = (0.0, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
    print("| m / o | " + " | ".join(f"{r:g}" for r in rs) + " |")
    print("|---|" + "---:|" * len(rs))
    print("| spec cost (m - o)^2 / (2 (0.6 o)^2) | "
          + " | ".join(f"{(r - 1) ** 2 / (2 * REL ** 2):.2f}" for r in rs) + " |")
    print("| log-normal (log m - log o)^2 / (2 0.6^2) | "
          + " | ".join("∞" if r == 0 else f"{np.log(r) ** 2 / (2 * REL ** 2):.2f}" for r in rs)
          + " |")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", choices=("twin", "real", "both"), default="both")
    ap.add_argument("--sites", type=int, default=300, help="profiles per data set")
    ap.add_argument("--block-size", type=float, default=10.0)
    ap.add_argument("--mapping", default="layer_mean")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="Adam 150 from 2 starts (not 4), no Adam 500")
    ap.add_argument("--long", action="store_true", help="also Adam 2000 steps")
    ap.add_argument("--parts", default="study,cv",
                    help="comma-separated: study (one split, convergence and cost vs metric), "
                         "cv (three folds pooled, defaults vs batch with either cost)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    load0 = os.getloadavg()
    print("# Batch mode, examined\n")
    print(f"torch threads {args.threads}, {os.cpu_count()} CPUs; load average at start "
          f"{load0[0]:.1f} / {load0[1]:.1f} / {load0[2]:.1f} (1/5/15 min)")
    cost_curve()
    parts = {p.strip() for p in args.parts.split(",")}
    sets = []
    if args.data in ("twin", "both"):
        sets.append((f"Twin world ({args.sites} profiles)", *twin_data(args.sites)))
    if args.data in ("real", "both"):
        if (DATA / "profiles").is_dir():
            sets.append((f"Real profiles (AfSP + ISIS + Edgeroi, {args.sites} sampled)",
                         *real_data(args.sites)))
        else:
            print(f"\n(real profiles skipped: {DATA} not found)")
    for name, data, truth in sets:
        if "study" in parts:
            study(name, data, truth, args)
        if "cv" in parts:
            cv_table(name, data, args)
    load1 = os.getloadavg()
    print(f"\nTotal runtime {time.perf_counter() - t0:.0f} s; load average at the end "
          f"{load1[0]:.1f} / {load1[1]:.1f} / {load1[2]:.1f}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
