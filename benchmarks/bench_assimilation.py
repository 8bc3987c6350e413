#!/usr/bin/env python
"""Data-assimilation throughput: model evaluations/s in the sampler, full AM runs, MAP.

What it measures
----------------
Synthetic twin sites (random physically shaped forcing, deep soils, profiles observed at six
depth intervals with 5% log-normal noise; all 21 CLM5 parameters free unless ``--free``):

1. **sampler rate** — adaptive Metropolis over ``--sites`` sites x 3 chains for
   ``--rate-iters`` iterations: model evaluations per second *inside the sampler* (model +
   PCHIP mapping + likelihood + proposal/accept bookkeeping), and the same model call alone.
2. **full AM** — ``--full-iters`` iterations per chain (default 20,000 as in the issue) for
   the same sites: wall time (``--skip-full`` to skip; it takes ~10-20 min on 2 cores).
3. **MAP** — gradient-based MAP (``--map-sites`` sites, default 10,000, ``--starts`` starts)
   through the differentiable model: wall time.

The reference code needs ~65 ms per model evaluation (spec; one profile at a time), i.e. ~15
evaluations/s; 1,000 sites x 3 chains x 70,000 iterations would take ~150 CPU-days.

Targets (issue 4, 2 cores): >= 30,000 evaluations/s in the sampler; 1,000 sites fully sampled
(20,000 iterations per chain) in <= 30 min; MAP for 10,000 sites in <= 5 min.

Run::

    .venv/bin/python benchmarks/bench_assimilation.py                 # everything
    .venv/bin/python benchmarks/bench_assimilation.py --skip-full     # rate + MAP only
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import sys
import time

import numpy as np
import torch

import xproda
from xproda.sites.assimilation.problem import SiteProblem, assimilate
from xproda.testing import random_forcing, twin_profiles

TOP = np.array([0.0, 0.1, 0.3, 0.5, 0.8, 1.0])
BOTTOM = np.array([0.1, 0.3, 0.5, 0.8, 1.0, 1.5])
REFERENCE_S_PER_EVAL = 0.065


def twin(n_sites: int, seed: int = 0, free=None):
    f = random_forcing(n_sites, seed, regime="bio")
    f["nbedrock"][:] = 20
    free = list(free or xproda.get_model("clm5").parameters.names)
    truth, df = twin_profiles(f, free, seed=seed, low=0.3, high=0.7, top=TOP, bottom=BOTTOM,
                              lat=0.0, lon=0.0)
    return f, truth, df, free


def problem(n_sites, free=None, seed=0):
    f, truth, df, free = twin(n_sites, seed, free)
    return SiteProblem(df, f, likelihood="gaussian", sigma_rel=0.05, log_space=True,
                       free=free, fixed=truth), free


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sites", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=3)
    ap.add_argument("--rate-iters", type=int, default=200)
    ap.add_argument("--full-iters", type=int, default=20000)
    ap.add_argument("--skip-full", action="store_true")
    ap.add_argument("--map-sites", type=int, default=10000)
    ap.add_argument("--starts", type=int, default=2)
    ap.add_argument("--map-steps", type=int, default=150)
    ap.add_argument("--free", default=None, help="comma-separated free parameters (default all)")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    free = args.free.split(",") if args.free else None
    rows = []

    # 1. sampler rate
    prob, free_used = problem(args.sites, free)
    B = args.sites * args.chains
    th = torch.full((B, prob.n_free), 0.5, dtype=torch.float64)
    with torch.no_grad():
        prob.log_density(th)  # warm-up (JIT, caches)
        t0 = time.perf_counter()
        for _ in range(20):
            prob.log_density(th)
        t_model = (time.perf_counter() - t0) / 20
    prob.n_evaluations = 0
    t0 = time.perf_counter()
    out = assimilate(prob.batch, prob.forcing, method="am", likelihood="gaussian",
                     sigma_rel=0.05, log_space=True, free=free_used, fixed=prob.fixed.numpy(),
                     n_chains=args.chains, n_iter=args.rate_iters, progress=False,
                     sampler_options={"store_draws": False})
    t_am = time.perf_counter() - t0
    evals = int(out.attrs["n_model_evaluations"])  # proposals outside (0,1)^P are not run
    rate = evals / t_am
    chain_rate = args.rate_iters * B / t_am
    rows.append(("sampler: AM", f"{args.sites:,} sites x {args.chains} chains, "
                 f"{args.rate_iters} iterations", t_am,
                 f"{rate:,.0f} model evaluations/s ({chain_rate:,.0f} chain-iterations/s)"))
    rows.append(("model + mapping + likelihood alone", f"batch of {B:,}", t_model,
                 f"{B / t_model:,.0f} evaluations/s"))

    # 2. full AM
    if not args.skip_full:
        t0 = time.perf_counter()
        full = assimilate(prob.batch, prob.forcing, method="am", likelihood="gaussian",
                          sigma_rel=0.05, log_space=True, free=free_used,
                          fixed=prob.fixed.numpy(), n_chains=args.chains,
                          n_iter=args.full_iters, progress=True,
                          sampler_options={"max_draws": 1000})
        t_full = time.perf_counter() - t0
        rhat = full["rhat"].values
        rows.append(("full AM", f"{args.sites:,} sites x {args.chains} chains x "
                     f"{args.full_iters:,} iterations", t_full,
                     f"{int(full.attrs['n_model_evaluations']) / t_full:,.0f} model "
                     f"evaluations/s; R-hat < 1.05 for {np.mean(rhat < 1.05):.0%} of "
                     f"site-parameters; median fit R2 {float(np.nanmedian(full['r2'])):.3f}"))
    else:
        t_full = args.full_iters * B / chain_rate
        rows.append(("full AM (estimated from the sampler rate, not run)",
                     f"{args.sites:,} sites x {args.chains} chains x {args.full_iters:,}",
                     t_full, "estimate"))

    # 3. MAP
    pm, free_map = problem(args.map_sites, free, seed=1)
    t0 = time.perf_counter()
    res = assimilate(pm.batch, pm.forcing, method="map", likelihood="gaussian", sigma_rel=0.05,
                     log_space=True, free=free_map, fixed=pm.fixed.numpy(),
                     n_starts=args.starts, progress=True,
                     sampler_options={"steps": args.map_steps})
    t_map = time.perf_counter() - t0
    r2 = float(np.nanmedian(res["r2"].values))
    rows.append(("MAP", f"{args.map_sites:,} sites x {args.starts} starts, <= "
                 f"{args.map_steps} steps", t_map, f"median R2 of the fit {r2:.3f}"))

    print("# xproda data-assimilation benchmark\n")
    print(f"- machine: {platform.machine()}, {os.cpu_count()} CPUs, torch "
          f"{torch.__version__}, {args.threads} threads; free parameters: "
          f"{len(free_used)} ({'all' if free is None else ', '.join(free_used)})")
    print("- twin sites: random forcing, deep soils, 6 observed depths, 5% log-normal noise, "
          "Gaussian likelihood on log SOC")
    print(f"- reference code: ~{REFERENCE_S_PER_EVAL * 1e3:.0f} ms per evaluation "
          f"(~{1 / REFERENCE_S_PER_EVAL:.0f} evaluations/s)\n")
    print("| what | size | wall s | rate / result |")
    print("|---|---|---:|---|")
    for what, size, wall, res_ in rows:
        print(f"| {what} | {size} | {wall:,.1f} | {res_} |")
    print(f"\nspeed-up of the sampler over the reference per-evaluation cost: "
          f"{rate * REFERENCE_S_PER_EVAL:,.0f}x; peak RSS "
          f"{resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.2f} GB")
    print("targets: >= 30,000 evaluations/s in the sampler; full AM of 1,000 sites <= 30 min; "
          "MAP of 10,000 sites <= 5 min")
    return 0


if __name__ == "__main__":
    sys.exit(main())
