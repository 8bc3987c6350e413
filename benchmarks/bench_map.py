#!/usr/bin/env python
"""MAP defaults on evidence: time and fit quality of optimiser settings on a twin world.

What it measures
----------------
A twin world of ``--sites`` sites (default 300; random physically shaped forcing, deep soils,
six observed depth intervals, 5 % log-normal noise), two free CLM5 parameters (``efolding``,
``tau4s2``; the others fixed at the truth) and the matching Gaussian likelihood on log SOC.
Each configuration runs :func:`~xproda.sites.assimilation.samplers.map_estimate` on the
problem's cost (as ``assimilate(method="map")`` does) and reports:

* wall time and process CPU time (s; all torch threads), and the ratio of CPU times to the
  old defaults measured in the same run (CPU time is less sensitive to other jobs on a
  shared machine than wall time; on an idle machine wall ~ CPU / threads used);
* model rows evaluated (``SiteProblem.n_evaluations``: rows x calls, gradients included);
* the per-site loss reached (median and mean), how many sites reach the best loss any
  configuration found (within ``1e-6`` absolute; the loss is ~56 per site) and the largest
  shortfall from it, the median R2 of SOC and of log SOC,
  the median absolute error of the parameters against the truth, and the fraction of
  sites flagged converged.

Configurations: ``old`` are the defaults before issue 19 (Adam, 2000 steps, rtol 1e-10, 4
starts) on a loss *without* row support (every step evaluates the whole batch, as the old
code did); ``old+rows`` the same settings with row support (converged rows leave the
computation); then L-BFGS variants; ``new`` is whatever the current defaults are
(``map_estimate`` and ``assimilate(n_starts=None)``), run through :func:`assimilate`.

Run::

    .venv/bin/python benchmarks/bench_map.py                  # ~6 min on 2 cores
    .venv/bin/python benchmarks/bench_map.py --sites 100 --quick

It prints a Markdown table and the load average (timings on a loaded machine are
pessimistic). Asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time

import numpy as np
import torch

import xproda
from xproda.sites.assimilation.problem import SiteProblem, assimilate
from xproda.sites.assimilation.samplers import map_estimate
from xproda.testing import random_forcing, twin_profiles

TOP = np.array([0.0, 0.1, 0.3, 0.5, 0.8, 1.0])
BOTTOM = np.array([0.1, 0.3, 0.5, 0.8, 1.0, 1.5])
FREE = ("efolding", "tau4s2")
SIGMA = 0.05

#: name -> (options of map_estimate, n_starts, row support)
CONFIGS = {
    "old": (dict(method="adam", steps=2000, rtol=1e-10), 4, False),
    "old+rows": (dict(method="adam", steps=2000, rtol=1e-10), 4, True),
    "lbfgs 200/1e-10/4": (dict(method="lbfgs", steps=200, rtol=1e-10), 4, True),
    "lbfgs 200/1e-10/2": (dict(method="lbfgs", steps=200, rtol=1e-10), 2, True),
    "lbfgs 100/1e-8/2": (dict(method="lbfgs", steps=100, rtol=1e-8), 2, True),
    "lbfgs 60/1e-7/2": (dict(method="lbfgs", steps=60, rtol=1e-7), 2, True),
    "lbfgs 60/1e-7/1": (dict(method="lbfgs", steps=60, rtol=1e-7), 1, True),
    # the budget of the two-step training's DA stage (xproda.learning.two_step)
    "adam 150/1e-10/2": (dict(method="adam", steps=150, rtol=1e-10), 2, True),
    "lbfgs 150/1e-10/2": (dict(method="lbfgs", steps=150, rtol=1e-10), 2, True),
}
#: configurations run by default (the others with --configs)
DEFAULT = ("old", "old+rows", "lbfgs 200/1e-10/4", "lbfgs 200/1e-10/2", "lbfgs 100/1e-8/2",
           "lbfgs 60/1e-7/2", "lbfgs 60/1e-7/1")
QUICK = ("old+rows", "lbfgs 60/1e-7/2")


def twin(n_sites: int, seed: int = 0, free=FREE):
    """Forcing, truth (normalised, all parameters) and a profile table."""
    f = random_forcing(n_sites, seed, regime="bio")
    f["nbedrock"][:] = 20
    truth, df = twin_profiles(f, free, seed=seed, sigma=SIGMA, top=TOP, bottom=BOTTOM, lat=0.0)
    return f, truth, df


def run_config(df, f, truth, opts, n_starts, rows, free=FREE):
    prob = SiteProblem(df, f, likelihood="gaussian", sigma_rel=SIGMA, log_space=True,
                       free=free, fixed=truth)
    loss = prob.cost if rows else (lambda th: prob.cost(th))  # no ``rows``: full batch
    t0, c0 = time.perf_counter(), time.process_time()
    res = map_estimate(loss, n_sites=prob.n_sites, n_params=prob.n_free, n_starts=n_starts,
                       progress=False, site_ids=prob.batch.site_ids, **opts)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    evals = prob.n_evaluations
    th = res.theta_map.numpy()
    st = prob.fit(np.clip(th, 1e-9, 1 - 1e-9))
    return dict(wall=wall, cpu=cpu, evals=evals, loss=res.loss.numpy(), theta=th,
                r2=st["r2"], r2_log=st["r2_log"], converged=res.converged.numpy())


def run_new(df, f, truth, free=FREE):
    """The current defaults, end to end through ``assimilate`` (problem set-up included)."""
    t0, c0 = time.perf_counter(), time.process_time()
    ds = assimilate(df, f, method="map", likelihood="gaussian", sigma_rel=SIGMA,
                    log_space=True, free=list(free), fixed=truth, progress=False)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    return dict(wall=wall, cpu=cpu, evals=int(ds.attrs["n_model_evaluations"]),
                loss=ds["loss"].values, theta=ds["map"].transpose("site", "parameter").values,
                r2=ds["r2"].values, r2_log=ds["r2_log"].values,
                converged=ds["converged"].values.astype(bool))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sites", type=int, default=300)
    ap.add_argument("--quick", action="store_true", help=f"only {QUICK} and new")
    ap.add_argument("--configs", nargs="*",
                    help=f"names of CONFIGS to run (default {', '.join(DEFAULT)})")
    ap.add_argument("--free", default=",".join(FREE),
                    help="free parameters, comma-separated, or 'all' (default %(default)s)")
    ap.add_argument("--no-new", action="store_true", help="skip the current defaults' run")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: CPU time is then the work, whatever the "
                         "load; on an idle machine 2 threads take at most that wall time)")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    names = list(QUICK if args.quick else (args.configs or DEFAULT))
    pnames = list(xproda.get_model("clm5").parameters.names)
    free = tuple(pnames if args.free == "all" else args.free.split(","))
    f, truth, df = twin(args.sites, free=free)
    idx = [pnames.index(p) for p in free]
    out = {}
    load0 = os.getloadavg()
    for name in names:
        opts, k, rows = CONFIGS[name]
        out[name] = run_config(df, f, truth, opts, k, rows, free)
        print(f"# {name}: {out[name]['wall']:.1f} s wall, {out[name]['cpu']:.1f} s CPU, "
              f"load {os.getloadavg()[0]:.2f}", file=sys.stderr, flush=True)
    if not args.no_new:
        out["new (assimilate)"] = run_new(df, f, truth, free)
        print(f"# new: {out['new (assimilate)']['wall']:.1f} s", file=sys.stderr, flush=True)
    load1 = os.getloadavg()
    best = np.nanmin(np.stack([r["loss"] for r in out.values()]), 0)
    base = out.get("old", out[names[0]])
    print(f"MAP on {args.sites} sites, {len(free)} free parameters, gaussian log-space likelihood "
          f"(sd {SIGMA}); torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}; load average before "
          f"{load0[0]:.2f}, after {load1[0]:.2f} (1 min)\n")
    print("| configuration | wall (s) | CPU (s) | CPU vs old | rows evaluated | median loss | mean loss "
          "| at best loss | max above best | median R2 | median R2 log | median abs err "
          "| converged |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in out.items():
        at_best = np.mean(r["loss"] <= best + 1e-6)
        excess = np.nanmax(r["loss"] - best)
        err = np.nanmedian(np.abs(r["theta"] - truth[:, idx]))
        print(f"| {name} | {r['wall']:.1f} | {r['cpu']:.1f} | {r['cpu'] / base['cpu']:.2f} | "
              f"{r['evals']:,} | {np.nanmedian(r['loss']):.4f} | {np.nanmean(r['loss']):.4f} "
              f"| {at_best:.1%} | {excess:.1e} | {np.nanmedian(r['r2']):.4f} | {np.nanmedian(r['r2_log']):.4f} "
              f"| {err:.4f} | {np.mean(r['converged']):.0%} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
