#!/usr/bin/env python
"""Kernel throughput on realistic forcing, quiet and beside other OpenMP work (issue 18).

What it measures
----------------
Each row runs in a fresh subprocess (kernels compiled from the on-disk cache, warmed up on
a small batch), with ``--threads`` kernel threads (default: all cores):

* ``steady clm5`` -- ``get_model("clm5").steady_state(theta, forcing)``, numpy in, numpy
  out, ``--n`` columns (default 100,000), for four inputs:
  ``random`` (:func:`xproda.testing.random_forcing`), ``fixture C`` (forcing resampled from
  the reference cases of ``../shared/fixtures/reference_clm5_cen.json``, every regime:
  bioturbation, cryoturbation, frozen, shallow bedrock; C-contiguous ``[n, 12, 20]``),
  ``fixture T`` (the same stored ``[n, 20, 12]`` and passed as transposed views) and
  ``fixture f32`` (float32, as read from a float32 store).
* ``steady microbial`` -- the same for ``get_model("microbial")`` (random, fixture C).
* ``dense`` -- the same CLM5 systems through ``dense_system`` + ``torch.linalg.solve``
  (batched pivoted LU on ``[2000, 140, 140]``, timed on 2,000 columns; the rate is per
  column) -- the ratio row divides the CLM5 fixture-C rate by it.
* ``transient`` -- ``CLM5Model.simulate`` of ``--transient-n`` columns (fixture C forcing,
  its 12 months repeated for 10 years) from a given state: column-months per second.
* ``spin-up`` -- the same ``simulate`` with its default start (``x0="spin_up"``: the
  periodic state of the first year's forcing, then the 10 years): column-months of the run
  per second, spin-up included (about three quarters of the time).
* ``MAP`` -- ``assimilate(method="map")`` on a 300-site twin problem (two free
  parameters, L-BFGS, 40 steps): sites per second (torch autograd, not the fused kernels).
* ``train`` -- ``train_network`` (end to end, float32 spec network, batch 128) on
  ``--train-sites`` profiles of the 2-degree twin world for 4 epochs: profile-epochs per
  second (torch autograd through the model).

Every row is timed quiet and then **shared**: beside two processes that each run a
2-thread OpenMP loop (``torch.mm`` of 256x256 matrices, :mod:`_load`), started and stopped
by the row itself; ``shared/quiet`` is the fraction kept. The best of ``--repeats`` is
reported (the machine is shared); the 1-minute load average is printed per row.

``--baseline PATH`` runs every row a second time with ``PYTHONPATH=PATH`` (e.g. a git
worktree of an older commit: ``git worktree add --detach /tmp/base REV``) and prints the
ratio new/old, measured in the same run.

How to run
----------
::

    .venv/bin/python benchmarks/bench_kernels.py                   # ~4 min
    .venv/bin/python benchmarks/bench_kernels.py --quick           # n = 20,000
    .venv/bin/python benchmarks/bench_kernels.py --baseline /tmp/base --rows steady,transient
    .venv/bin/python benchmarks/bench_kernels.py --rows map,train --torch-threads 3
    .venv/bin/python benchmarks/bench_kernels.py --rows map,train --xproda-first

Targets (issue 18, 2 cores): CLM5 steady state >= 600,000 columns/s and >= 100x dense;
microbial >= 400,000; transient >= 3e6 column-months/s; shared >= 40 % of quiet for the
steady state, the transient kernel and MAP. It asserts nothing; it prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent.parent / "shared" / "fixtures" / "reference_clm5_cen.json"
ROWS = ("steady", "microbial", "dense", "transient", "spin-up", "map", "train")


# -------------------------------------------------------------------------------------------
# child: one row
# -------------------------------------------------------------------------------------------
def _forcing(kind: str, n: int, seed: int = 0):
    import numpy as np

    from xproda import testing

    if kind == "random":
        return testing.random_forcing(n, seed)
    cases = json.loads(FIXTURE.read_text())["cases"]
    layout = "transposed" if kind == "fixture T" else "C"
    dtype = np.float32 if kind == "fixture f32" else np.float64
    return testing.resampled_forcing(cases, n, seed, layout=layout, dtype=dtype)


def _best(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


def _child(row: str, kind: str, n: int, repeats: int, threads: int | None,
           torch_threads: int | None = None, xproda_first: bool = False) -> dict:
    import numpy as np

    if xproda_first:  # sets OMP_WAIT_POLICY=PASSIVE before torch's OpenMP runtime starts
        import xproda
    import torch

    # by default torch before xproda, as an isort-ordered script imports them: the harder
    # case, where xproda can no longer make torch's OpenMP threads wait passively
    # (docs/performance.md)
    import xproda

    sys.path.insert(0, str(HERE))
    from _load import load_average, omp_load

    if threads:
        torch.set_num_threads(threads)
    if torch_threads:  # a fixed count: parallel.torch_threads_scope then stays out
        xproda.set_options(torch_threads=torch_threads)
    rng = np.random.default_rng(0)
    work: float
    if row in ("steady", "microbial", "dense"):
        model = xproda.get_model("clm5" if row != "microbial" else "microbial")
        P = len(model.parameters)
        f = _forcing(kind, n)
        th = rng.uniform(0.05, 0.95, (n, P))
        if row == "dense":
            m = 2000
            th, f = th[:m], {k: v[:m] for k, v in f.items()}

            def call():
                L, rhs = model.dense_system(th, f)
                torch.linalg.solve(L, rhs.unsqueeze(-1))

            work = m
        else:
            def call():
                model.steady_state(th, f)

            work = n
        small = {k: v[:256] for k, v in f.items()}
        model.steady_state(th[:256], small)
    elif row == "transient":
        from xproda.models.transient import repeat_forcing

        model = xproda.get_model("clm5")
        f12 = _forcing(kind, n)
        fT = repeat_forcing(f12, years=10)
        th = rng.uniform(0.05, 0.95, (n, 21))
        x0 = model.steady_state(th, f12)["pools"]
        x0 = np.nan_to_num(x0)
        model.simulate(th[:64], {k: v[:64] for k, v in fT.items()}, x0=x0[:64])

        def call():
            model.simulate(th, fT, x0=x0)

        work = n * 120
    elif row == "spin-up":
        from xproda.models.transient import repeat_forcing

        model = xproda.get_model("clm5")
        fT = repeat_forcing(_forcing(kind, n), years=10)
        th = rng.uniform(0.05, 0.95, (n, 21))
        model.simulate(th[:64], {k: v[:64] for k, v in fT.items()})

        def call():
            model.simulate(th, fT)

        work = n * 120
    elif row == "map":
        from bench_assimilation import problem

        from xproda.sites.assimilation.problem import assimilate

        free = ["q10", "tau4s2"]
        pm, free_map = problem(n, free, seed=1)

        def call():
            assimilate(pm.batch, pm.forcing, method="map", likelihood="gaussian",
                       sigma_rel=0.05, log_space=True, free=free_map, fixed=pm.fixed.numpy(),
                       n_starts=1, progress=False,
                       sampler_options={"steps": 40, "method": "lbfgs"})

        work = n
    elif row == "train":
        from xproda.datasets import synthetic_profiles, synthetic_world, truth_parameters
        from xproda.learning.training import prepare_training_data, train_network

        world = synthetic_world(2.0, seed=0)
        truth = truth_parameters(world, kind="cue")
        prof = synthetic_profiles(world, n_sites=n, truth=truth, noise=0.1, seed=1)
        data = prepare_training_data(world, prof)
        opts = dict(mapping="layer_mean", epochs=4, patience=100, batch_size=128, seed=0,
                    progress=False, net_dtype="float32")
        train_network(data.subset(np.arange(64)), **{**opts, "epochs": 2})

        def call():
            train_network(data, **opts)

        work = n * 4
    else:  # pragma: no cover
        raise SystemExit(f"unknown row {row}")
    quiet = _best(call, repeats)
    with omp_load(2, 2):
        load = load_average()
        shared = _best(call, repeats)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"quiet": work / quiet, "shared": work / shared, "load": load, "peak_mb": peak,
            "torch_threads": torch.get_num_threads()}


# -------------------------------------------------------------------------------------------
# parent: the table
# -------------------------------------------------------------------------------------------
def _run(row, kind, n, repeats, threads, path=None, torch_threads=None,
         xproda_first=False) -> dict | None:
    env = dict(os.environ)
    if path:
        env["PYTHONPATH"] = os.pathsep.join([str(path), str(HERE)])
    cmd = [sys.executable, __file__, "--child", row, "--kind", kind, "--n", str(n),
           "--repeats", str(repeats)] + (["--threads", str(threads)] if threads else []) + (
               ["--torch-threads", str(torch_threads)] if torch_threads else []) + (
               ["--xproda-first"] if xproda_first else [])
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=str(HERE.parent))
    if p.returncode != 0:
        print(f"<!-- {row} {kind} failed: {p.stderr.strip().splitlines()[-1:]} -->")
        return None
    return json.loads(p.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--n", type=int, default=100_000)
    ap.add_argument("--transient-n", type=int, default=20_000)
    ap.add_argument("--map-sites", type=int, default=300)
    ap.add_argument("--train-sites", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="the option torch_threads in every row: a fixed torch thread count, "
                         "quiet and shared (default: unset, so torch_threads_scope gives "
                         "MAP and training one thread on a full machine)")
    ap.add_argument("--xproda-first", action="store_true",
                    help="import xproda before torch in every row (it then sets "
                         "OMP_WAIT_POLICY=PASSIVE for torch's OpenMP threads); default: torch "
                         "first, as an isort-ordered script")
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--rows", default=",".join(ROWS))
    ap.add_argument("--baseline", default=None)
    ap.add_argument("--child", default=None)
    ap.add_argument("--kind", default="random")
    args = ap.parse_args(argv)
    if args.child:
        print(json.dumps(_child(args.child, args.kind, args.n, args.repeats, args.threads,
                                args.torch_threads, args.xproda_first)))
        return 0
    n = 20_000 if args.quick else args.n
    tn = 4_000 if args.quick else args.transient_n
    rows = [r for r in args.rows.split(",") if r]
    fixtures = FIXTURE.exists()
    plan = []
    if "steady" in rows:
        kinds = ["random"] + (["fixture C", "fixture T", "fixture f32"] if fixtures else [])
        plan += [("steady", k, n, "columns/s") for k in kinds]
    if "microbial" in rows:
        plan += [("microbial", k, n, "columns/s")
                 for k in ["random"] + (["fixture C"] if fixtures else [])]
    if "dense" in rows:
        plan.append(("dense", "fixture C" if fixtures else "random", 2000, "columns/s"))
    for r in ("transient", "spin-up"):
        if r in rows:
            plan.append((r, "fixture C" if fixtures else "random", tn, "column-months/s"))
    if "map" in rows:
        plan.append(("map", "twin", args.map_sites, "sites/s"))
    if "train" in rows:
        plan.append(("train", "twin world", args.train_sites, "profile-epochs/s"))
    print(f"# bench_kernels: {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} cores, load before {os.getloadavg()[0]:.2f}"
          + (f", option torch_threads={args.torch_threads}" if args.torch_threads else "")
          + (", xproda imported before torch" if args.xproda_first else
             ", torch imported before xproda"))
    head = "| row | input | n | unit | quiet | shared | shared/quiet | load | peak MB |"
    if args.baseline:
        head += " old quiet | old shared | new/old quiet | new/old shared |"
    print(head)
    print("|" + "---|" * (head.count("|") - 1))
    results = {}
    for row, kind, size, unit in plan:
        r = _run(row, kind, size, args.repeats, args.threads,
                 torch_threads=args.torch_threads, xproda_first=args.xproda_first)
        if r is None:
            continue
        results[(row, kind)] = r
        line = (f"| {row} | {kind} | {size:,} | {unit} | {r['quiet']:,.0f} | "
                f"{r['shared']:,.0f} | {r['shared'] / r['quiet']:.0%} | {r['load']:.2f} | "
                f"{r['peak_mb']:,.0f} |")
        if args.baseline:
            b = _run(row, kind, size, args.repeats, args.threads, args.baseline,
                     torch_threads=args.torch_threads, xproda_first=args.xproda_first)
            if b:
                line += (f" {b['quiet']:,.0f} | {b['shared']:,.0f} | "
                         f"{r['quiet'] / b['quiet']:.2f}x | {r['shared'] / b['shared']:.2f}x |")
        print(line, flush=True)
    d = results.get(("dense", "fixture C")) or results.get(("dense", "random"))
    s = results.get(("steady", "fixture C")) or results.get(("steady", "random"))
    if d and s:
        print(f"\nCLM5 steady state / dense LU (same systems): {s['quiet'] / d['quiet']:.0f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
