"""Full attribution suite on a synthetic grid: sensitivity (6 groups x 5 levels, plus the
baseline) and component control (5 groups), timed against one steady-state run.

Usage::

    python benchmarks/bench_analysis.py [--resolution 1.0] [--threads 2] [--chunk 30]

Prints a table: wall time per experiment, the total, the ratio to one steady-state run of the
same grid (measured in the same process) and the peak RSS.  Runs with the threaded dask
scheduler and ``threads`` workers, one torch thread each.
"""

from __future__ import annotations

import argparse
import os
import resource
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--chunk", type=int, default=30, help="lat/lon chunk edge (cells)")
    args = ap.parse_args()

    import dask
    import torch

    import xproda
    from xproda import analysis
    from xproda.datasets import synthetic_world, truth_parameters

    torch.set_num_threads(1)
    dask.config.set(scheduler="threads", num_workers=args.threads)
    t0 = time.perf_counter()
    world = synthetic_world(args.resolution).load()
    theta = truth_parameters(world, kind="cue").load()
    t_world = time.perf_counter() - t0
    ds = world.chunk({"lat": args.chunk, "lon": args.chunk})
    th = theta.chunk({"lat": args.chunk, "lon": args.chunk})
    n_land = int(world["landmask"].sum())

    rows = []

    def timed(label, fn, n_runs):
        t = time.perf_counter()
        out = fn()
        dt = time.perf_counter() - t
        rows.append((label, n_runs, dt))
        return out

    timed("steady state (baseline)",
          lambda: xproda.xr.api.global_total(ds.proda.steady_state(th)).compute(), 1)
    levels = (-0.1, -0.05, 0.05, 0.1, 0.2)
    groups = ("A", "K", "Xi", "V", "I", "NPP")
    sens = timed("sensitivity 6 groups x 5 levels",
                 lambda: ds.proda.sensitivity(th, groups=groups, levels=levels)[
                     ["global_stock", "relative_change"]].compute(),
                 len(groups) * (len(levels) + 1))
    grad = timed("sensitivity_gradient 6 groups (autograd)",
                 lambda: ds.proda.sensitivity_gradient(th, groups=groups)[
                     ["global_gradient", "elasticity"]].compute(), 1)
    cc = timed("component control 5 groups", lambda: ds.proda.component_control(
        th, groups=("A", "K", "Xi", "V", "I"))[["global_stock", "variation_loss"]].compute(),
               5 + 1)
    base = rows[0][2]
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"\nbench_analysis: synthetic_world({args.resolution:g}), {n_land} land columns, "
          f"{args.threads} dask threads, chunks {args.chunk}x{args.chunk}, "
          f"load average {os.getloadavg()[0]:.2f} (world built in {t_world:.1f} s)")
    print(f"{'experiment':<42}{'runs':>6}{'wall s':>9}{'x baseline':>12}")
    for label, n, dt in rows:
        print(f"{label:<42}{n:>6}{dt:>9.2f}{dt / base:>12.1f}")
    total = sum(r[2] for r in rows[1:])
    print(f"{'total (without baseline)':<42}{'':>6}{total:>9.2f}{total / base:>12.1f}")
    print(f"peak RSS {peak:.0f} MiB")
    print("\nrelative change of the global stock (%):")
    print(sens["relative_change"].to_pandas().round(2))
    print("\nelasticity from autograd:", grad["elasticity"].to_series().round(3).to_dict())
    print("component control, variation loss:",
          cc["variation_loss"].to_series().round(3).to_dict())


if __name__ == "__main__":
    main()
