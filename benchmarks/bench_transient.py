#!/usr/bin/env python
"""Transient runs: kernel throughput, a 100-year monthly run on a 1 degree grid, spin-up speed.

What it measures
----------------
1. **kernel** (column-months per second): ``CLM5Model.simulate`` on ``--columns`` columns of
   physically shaped random forcing (:func:`xproda.testing.random_forcing`, mixed regimes)
   for ``--kernel-steps`` monthly steps from a given state (the fused numba path), against
   the differentiable torch path on a subset in the same run (the baseline ratio).
2. **global run** (fresh subprocess each): the 1° synthetic world
   (:func:`xproda.datasets.synthetic_world`, ~21,500 land columns, truth parameters "cue"),
   its climatology repeated for 10 and 100 years with +4 K warming and +20% inputs (linear
   ramps), spun up to the periodic state of the first year, then
   ``xproda.xr.transient.write_simulation`` streams the run to Zarr in 120-step chunks.
   Reported: wall time, land column-months per second (spin-up included), peak RSS of the
   process (``ru_maxrss``): it must not grow with the run length.
3. **spin-up**: ``--spin-columns`` land columns of the same world: the semi-analytic spin-up
   to 1e-8 (relative, max norm) against plain annual cycling from the mean-operator state
   and from zero (cold start), each measured against a reference periodic state (semi-analytic
   to 1e-13).  Plain cycling stops at ``--plain-years``; where it has not reached 1e-8 by then
   the years still needed are extrapolated from its last 100 years of geometric convergence
   (marked ``~``).

Target (issue 8, 2 cores): >= 1e6 column-months per second.

How to run
----------
::

    .venv/bin/python benchmarks/bench_transient.py            # all (about 10 min)
    .venv/bin/python benchmarks/bench_transient.py --quick    # smaller, about 2 min

It asserts nothing; it prints Markdown tables.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

TARGET = 1e6
RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


# -------------------------------------------------------------------------------------------
# 1. kernel
# -------------------------------------------------------------------------------------------
def kernel(columns: int, steps: int, torch_columns: int, torch_steps: int) -> list[dict]:
    import torch

    import xproda
    from xproda.models import transient as tr
    from xproda.testing import random_forcing

    m = xproda.get_model("clm5")
    f12 = random_forcing(columns, seed=1, regime="mixed")
    th = np.random.default_rng(0).uniform(0.15, 0.85, (columns, 21))
    x0 = m.simulate(th, {k: v[:, :1] if k in tr._TIMED else v for k, v in f12.items()},
                    x0="steady_state")["initial_pools"]
    fT = tr.repeat_forcing(f12, years=math.ceil(steps / 12))
    fT = {k: (v[:, :steps] if k in tr._TIMED else v) for k, v in fT.items()}
    rows = []
    m.simulate(th[:64], {k: v[:64] for k, v in fT.items()}, x0=x0[:64])  # compile
    best = math.inf
    for _ in range(2):
        t = time.perf_counter()
        m.simulate(th, fT, x0=x0)
        best = min(best, time.perf_counter() - t)
    rows.append(dict(path="fused (numba, CPU)", columns=columns, steps=steps, seconds=best,
                     rate=columns * steps / best))
    sub = {k: (v[:torch_columns, :torch_steps] if k in tr._TIMED else v[:torch_columns])
           for k, v in fT.items()}
    ft = {k: torch.as_tensor(v) for k, v in sub.items()}
    with xproda.set_options(fused_kernels=False):
        t = time.perf_counter()
        m.simulate(torch.as_tensor(th[:torch_columns]), ft,
                   x0=torch.as_tensor(x0[:torch_columns]))
        dt = time.perf_counter() - t
    rows.append(dict(path="torch (differentiable)", columns=torch_columns, steps=torch_steps,
                     seconds=dt, rate=torch_columns * torch_steps / dt))
    return rows


# -------------------------------------------------------------------------------------------
# 2. global run (subprocess)
# -------------------------------------------------------------------------------------------
def _world(res: float):
    import xarray as xr

    from xproda.datasets import synthetic_world, truth_parameters

    world = synthetic_world(res)
    theta = truth_parameters(world, kind="cue")
    names = ["TSOI", "W_SCALAR", "O_SCALAR", "FPI_vr", "ALTMAX", "ALTMAX_LASTYEAR", "nbedrock",
             "CWD_INPUT", "LITR1_INPUT", "LITR2_INPUT", "LITR3_INPUT"]
    return world[names], theta, world["landmask"], xr


def build_store(res: float, chunk: int) -> str:
    """The world's forcing, truth parameters and land mask as Zarr (built once, not timed)."""
    path = os.path.join(RESULTS, f"transient_world_{res:g}_{chunk}.zarr")
    if not os.path.exists(path):
        clim, theta, land, xr = _world(res)
        ds = clim.assign(theta=theta, landmask=land)
        ds = ds.drop_vars([c for c in ds.coords if c not in ds.dims and c != "spatial_ref"])
        ds.chunk({"lat": chunk, "lon": chunk}).to_zarr(path, mode="w", consolidated=False)
    return path


def worker_global(res: float, years: int, chunk: int, out: str, store: str) -> dict:
    import xarray as xr

    import xproda  # noqa: F401
    from xproda.xr import scenarios as sc
    from xproda.xr.transient import write_simulation

    ds = xr.open_zarr(store, consolidated=False)
    land = ds["landmask"].load()
    n_land = int(land.sum())
    lazy = ds.drop_vars(["theta", "landmask"])
    theta = ds["theta"]
    fc = sc.scale_inputs(sc.warming(sc.repeat_climatology(lazy, years=years), 4.0), 1.2)
    t = time.perf_counter()
    res_ds = write_simulation(fc, theta, out, time_chunk=120, progress=False,
                              overwrite=True)
    wall = time.perf_counter() - t
    stock = res_ds["soc_stock"]
    change = float((stock.isel(time=-1) - res_ds["initial_soc_stock"]).mean())
    return dict(years=years, land_columns=n_land, steps=12 * years, seconds=wall,
                rate=n_land * 12 * years / wall, peak_gb=_peak_gb(),
                mean_change_kg_m2=change,
                cycles=float(np.nanmedian(res_ds["spinup_cycles"].where(land > 0).values)))


# -------------------------------------------------------------------------------------------
# 3. spin-up
# -------------------------------------------------------------------------------------------
def spin(res: float, n: int, plain_years: int) -> list[dict]:
    import xproda
    from xproda.models import transient as tr
    from xproda.xr.api import forcing_arrays

    clim, theta, land, xr = _world(res)
    cells = clim.stack(cell=("lat", "lon")).where(land.stack(cell=("lat", "lon")) > 0,
                                                  drop=True)
    idx = np.random.default_rng(0).choice(cells.sizes["cell"], n, replace=False)
    sub = cells.isel(cell=np.sort(idx))
    f = forcing_arrays(sub.drop_vars(["lat", "lon", "cell"]), dim="cell")
    th = theta.stack(cell=("lat", "lon")).transpose("cell", "parameter")
    th = th.sel(cell=sub["cell"]).values
    m = xproda.get_model("clm5")
    ref = m.spin_up(th, f, tol=1e-13, max_cycles=400)
    good = ref["converged"]
    th, f = th[good], {k: v[good] for k, v in f.items()}
    ref_p = ref["pools"][good]
    n = len(th)
    scale = np.abs(ref_p).max((1, 2))

    def err(p):
        return np.abs(p - ref_p).max((1, 2)) / scale

    rows = []
    t = time.perf_counter()
    semi = m.spin_up(th, f, tol=1e-8)
    t_semi = time.perf_counter() - t
    rows.append(dict(method="semi-analytic (mean operator + corrected cycles)",
                     years=semi.report.cycles_max, column_steps=semi.report.column_steps,
                     seconds=t_semi, error=float(err(semi["pools"]).max()), reached=True))
    _, ff, _, _, p, dts = tr._prepare(m, __import__("torch").as_tensor(th), f, None)
    ops = tr.build_operators(m, p, ff, dts)
    starts = {"plain cycling from the mean-operator state": tr.mean_state(ops).numpy(),
              "plain cycling from zero (cold start)": np.zeros_like(ref_p)}
    import torch

    for label, x0 in starts.items():
        x = torch.as_tensor(x0)
        hist = []
        t = time.perf_counter()
        years = 0
        reached = False
        while years < plain_years:
            x, _ = tr.integrate(ops, x)
            years += 1
            e = float(err(x.numpy()).max())
            hist.append(e)
            if e <= 1e-8:
                reached = True
                break
        wall = time.perf_counter() - t
        need = years
        if not reached and len(hist) > 100 and hist[-1] < hist[-101]:
            rate = (hist[-1] / hist[-101]) ** (1 / 100)  # per-year contraction
            need = years + math.log(1e-8 / hist[-1]) / math.log(rate)
        elif not reached:
            need = math.inf
        per_year = wall / years
        rows.append(dict(method=label, years=need, column_steps=int(need * 12 * n),
                         seconds=per_year * need, error=hist[-1], reached=reached))
    return rows, n


# -------------------------------------------------------------------------------------------
def _run_worker(**kw) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps(kw)]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode:
        raise RuntimeError(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--columns", type=int, default=16384)
    ap.add_argument("--kernel-steps", type=int, default=120)
    ap.add_argument("--res", type=float, default=1.0)
    ap.add_argument("--years", type=int, nargs="*", default=[10, 100])
    ap.add_argument("--chunk", type=int, default=60)
    ap.add_argument("--spin-columns", type=int, default=512)
    ap.add_argument("--plain-years", type=int, default=1500)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    import torch

    torch.set_num_threads(a.threads)
    if a.worker:
        kw = json.loads(a.worker)
        print(json.dumps(worker_global(**kw)))
        return 0
    if a.quick:
        a.columns, a.years, a.spin_columns, a.plain_years, a.res = 4096, [5, 20], 128, 300, 2.0
    print(f"# Transient benchmark ({platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs, torch threads {a.threads}, load {os.getloadavg()[0]:.1f})\n")
    rows = kernel(a.columns, a.kernel_steps, min(a.columns, 1024), 24)
    print("## Kernel: column-months per second\n")
    print("| path | columns | steps | s | column-months/s | column-years/s | vs fused |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['path']} | {r['columns']:,} | {r['steps']} | {r['seconds']:.2f} | "
              f"{r['rate']:,.0f} | {r['rate'] / 12:,.0f} | {r['rate'] / rows[0]['rate']:.3f} |")
    print(f"\nTarget >= {TARGET:,.0f} column-months/s: "
          f"{'met' if rows[0]['rate'] >= TARGET else 'NOT met'} by the fused path.\n")
    print(f"## {a.res:g} degree world, monthly steps, +4 K and +20% inputs, Zarr streamed\n")
    print("| years | land columns | steps | wall s | land column-months/s | land column-years/s "
          "| peak RSS GB | median spin-up cycles | mean SOC change kg m-2 |")
    print("|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    tmp = tempfile.mkdtemp(prefix="bench_transient_")
    store = build_store(a.res, a.chunk)
    try:
        for y in a.years:
            r = _run_worker(res=a.res, years=y, chunk=a.chunk, store=store,
                            out=os.path.join(tmp, f"{y}.zarr"))
            print(f"| {r['years']} | {r['land_columns']:,} | {r['steps']:,} | {r['seconds']:.1f} "
                  f"| {r['rate']:,.0f} | {r['rate'] / 12:,.0f} | {r['peak_gb']:.2f} | "
                  f"{r['cycles']:.0f} | "
                  f"{r['mean_change_kg_m2']:+.3f} |")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    rows, n = spin(a.res, a.spin_columns, a.plain_years)
    print(f"\n## Spin-up to 1e-8 (relative, max norm) on {n} land columns\n")
    print("| method | years (cycles) | column-steps | s | final error | speed-up of semi-analytic |")
    print("|---|---:|---:|---:|---:|---:|")
    for r in rows:
        mark = "" if r["reached"] else "~"
        print(f"| {r['method']} | {mark}{r['years']:,.0f} | {mark}{r['column_steps']:,} | "
              f"{mark}{r['seconds']:.1f} | {r['error']:.1e} | "
              f"{mark}{r['seconds'] / rows[0]['seconds']:,.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
