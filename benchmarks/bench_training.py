#!/usr/bin/env python
"""Parameter-network training and prediction: throughput, time to convergence, CV skill.

What it measures
----------------
On the synthetic twin world (``xproda.datasets``, 2 degrees, truth kind "cue", profiles with
10% log-normal noise):

1. **end-to-end training** of the spec network (256-512-512-256, sigmoid output) on
   ``--sites`` profiles (default 5,000; 10% held out for early stopping): profiles per second
   per epoch, epochs and wall time to convergence (early stopping, patience ``--patience``),
   held-out SOC skill. Baseline in the same run: the same training with a float64 network.
2. **two-step (PRODA)** on the same profiles: MAP data assimilation per site (2 starts x 150
   Adam steps), then the network fitted to the retrieved parameters. Wall time of each step,
   held-out SOC skill.
3. **lazy prediction** of parameters over a global 0.25 degree grid (1,036,800 cells, every
   covariate of the world, dask chunks of 180 x 360 cells): cells per second and peak RSS,
   against ``net.predict`` on the same land cells already in memory.
4. ``--cv``: :func:`xproda.learning.training.cross_validate` on ``--cv-sites`` profiles, spatially
   blocked folds: held-out SOC R2/RMSE for CLM5 defaults, batch mode, two-step, end to end.

Target (issue 5, 2 cores): wall time to convergence for 5,000 profiles <= 10 min.

Run::

    .venv/bin/python benchmarks/bench_training.py                # 1-3 (~10 min on 2 cores)
    .venv/bin/python benchmarks/bench_training.py --cv           # + the CV table (long)
    .venv/bin/python benchmarks/bench_training.py --skip-two-step --sites 2000
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
from xproda.datasets import synthetic_profiles, synthetic_world, truth_at_sites, truth_parameters
from xproda.learning.training import cross_validate, prepare_training_data, train_network


def _rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e6


def _fmt_skill(s: dict) -> str:
    return f"{s.get('r2', float('nan')):.3f}"


def _main_runs(a, data, world, truth, common, lines) -> None:
    """Sections 1-3: end-to-end (float32, float64), two-step, lazy prediction."""
    print("end-to-end float32 ...", flush=True)
    net, rep = train_network(data, net_dtype="float32", **common)
    base = rep.wall_seconds
    lines.append(f"| end to end | float32 | {len(rep.history)} ({rep.best_epoch[0]}) | "
                 f"{rep.wall_seconds:.1f} | {rep.profiles_per_second:,.0f} | "
                 f"{_fmt_skill(rep.skill)} | {rep.skill['r2_log']:.3f} | 1.00x |")
    if not a.skip_f64:
        print("end-to-end float64 ...", flush=True)
        n64, r64 = train_network(data, net_dtype="float64", **common)
        lines.append(f"| end to end | float64 | {len(r64.history)} ({r64.best_epoch[0]}) | "
                     f"{r64.wall_seconds:.1f} | {r64.profiles_per_second:,.0f} | "
                     f"{_fmt_skill(r64.skill)} | {r64.skill['r2_log']:.3f} | "
                     f"{r64.wall_seconds / base:.2f}x |")
    if not a.skip_two_step:
        print("two-step ...", flush=True)
        t = time.perf_counter()
        n2, r2 = train_network(data, method="two_step", net_dtype="float32", **common)
        w2 = time.perf_counter() - t
        da_s = w2 - r2.history.seconds.iloc[-1]
        lines.append(f"| two-step (MAP DA {da_s:.0f} s + fit) | float32 | {len(r2.history)} "
                     f"({r2.best_epoch[0]}) | {w2:.1f} | {r2.profiles_per_second:,.0f} | "
                     f"{_fmt_skill(r2.skill)} | {r2.skill['r2_log']:.3f} | {w2 / base:.2f}x |")
        lines.append("")
        lines.append(f"- two-step kept {r2.n_sites} of {len(data)} sites (DA fit R2 > 0.75, "
                     "spec §5.3)")
    # parameter recovery over land vs the truth
    th_pred = world.proda.predict_parameters(net)
    land = np.isfinite(truth.isel(parameter=0).values)
    rec = []
    for p in truth.parameter.values:
        tv = truth.sel(parameter=p).values[land]
        pv = th_pred.sel(parameter=p).values[land]
        ok = np.isfinite(pv)
        rec.append((str(p), 1 - np.sum((pv[ok] - tv[ok]) ** 2) / np.sum((tv[ok] - tv[ok].mean()) ** 2),
                    float(np.std(tv[ok]))))
    rec.sort(key=lambda r: -r[2])
    lines.append("")
    lines.append("- parameter recovery of the end-to-end net over land (R2 vs truth; the "
                 "parameters with the most spatial variation in the truth first): "
                 + ", ".join(f"{p} {r:.2f} (sd {s:.2f})" for p, r, s in rec[:8]))

    if not a.skip_predict:
        print("lazy prediction at 0.25 deg ...", flush=True)
        import dask
        import xarray as xr

        ny, nx = 720, 1440
        rng = np.random.default_rng(0)
        lat = 90 - 0.25 * (np.arange(ny) + 0.5)
        lon = -180 + 0.25 * (np.arange(nx) + 0.5)
        lo, hi = net.x_min.cpu().numpy(), net.x_max.cpu().numpy()
        cov = xr.Dataset(coords={"lat": ("lat", lat, {"units": "degrees_north",
                                                      "standard_name": "latitude"}),
                                 "lon": ("lon", lon, {"units": "degrees_east",
                                                      "standard_name": "longitude"})})
        import dask.array as dsa

        ocean = None
        for i, f in enumerate(net.feature_names):
            arr = dsa.random.default_rng(i).uniform(lo[i], hi[i] + 1e-9, (ny, nx),
                                                    chunks=(180, 360)).astype(np.float32)
            if ocean is None:
                ocean = dsa.random.default_rng(999).uniform(0, 1, (ny, nx),
                                                            chunks=(180, 360)) < 0.66
            cov[f] = (("lat", "lon"), dsa.where(ocean, np.nan, arr))
        theta = cov.proda.predict_parameters(net)
        rss0 = _rss_gb()
        t = time.perf_counter()
        with dask.config.set(scheduler="threads", num_workers=a.threads):
            total = theta.sum(("lat", "lon")).compute()
        tp = time.perf_counter() - t
        n_land = int((~ocean).sum().compute())
        x = np.stack([cov[f].values.ravel() for f in net.feature_names], -1)
        x = x[np.isfinite(x).all(-1)]
        t = time.perf_counter()
        net.predict(x)
        tk = time.perf_counter() - t
        lines += ["", "| prediction | cells | land cells | wall s | land cells/s | ratio vs in-memory "
                  "predict | peak RSS GB |", "|---|---:|---:|---:|---:|---:|---:|",
                  f"| lazy `predict_parameters`, 0.25 deg, chunks 180x360 | {ny * nx:,} | "
                  f"{n_land:,} | {tp:.1f} | {n_land / tp:,.0f} | {tp / tk:.2f}x | "
                  f"{max(rss0, _rss_gb()):.2f} |",
                  f"| `net.predict` on the land cells in memory | {n_land:,} | {n_land:,} | "
                  f"{tk:.1f} | {n_land / tk:,.0f} | 1.00x | |"]
        assert np.isfinite(total.values).all()



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sites", type=int, default=5000)
    ap.add_argument("--epochs", type=int, default=400)
    ap.add_argument("--patience", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--skip-two-step", action="store_true")
    ap.add_argument("--skip-f64", action="store_true")
    ap.add_argument("--skip-predict", action="store_true")
    ap.add_argument("--cv", action="store_true")
    ap.add_argument("--cv-only", action="store_true", help="only the cross-validation table")
    ap.add_argument("--cv-sites", type=int, default=1500)
    ap.add_argument("--cv-folds", type=int, default=3)
    ap.add_argument("--cv-epochs", type=int, default=150)
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "training_cpu.md"))
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    lines = ["# xproda parameter-network training benchmark", ""]
    load0 = os.getloadavg()
    lines.append(f"- machine: {platform.machine()}, {os.cpu_count()} CPUs; Python "
                 f"{platform.python_version()}, torch {torch.__version__}; torch threads "
                 f"{a.threads}; load average at start {load0[0]:.2f}")
    t = time.perf_counter()
    world = synthetic_world(2.0, seed=0)
    truth = truth_parameters(world, kind="cue")
    prof = synthetic_profiles(world, n_sites=a.sites, truth=truth, noise=0.1, seed=1)
    data = prepare_training_data(world, prof)
    t_data = time.perf_counter() - t
    lines.append(f"- twin world 2 deg, truth 'cue', {len(data)} profiles "
                 f"({int(data.batch.mask.sum())} layers, {len(data.features)} covariates); "
                 f"world + profiles + sampling {t_data:.1f} s")
    lines += ["", "| run | net dtype | epochs (best) | wall s | profiles/s/epoch | "
              "held-out SOC R2 | held-out log R2 | ratio |", "|---|---|---:|---:|---:|---:|---:|---:|"]
    common = dict(mapping="layer_mean", epochs=a.epochs, patience=a.patience,
                  batch_size=a.batch_size, seed=0, progress=sys.stderr.isatty())
    if a.cv_only:
        a.cv = True
        lines = lines[:-2]

    warm = data.subset(np.arange(64))  # JIT, allocator and thread-pool warm-up, untimed
    for dt in ("float32", "float64"):
        train_network(warm, net_dtype=dt, **{**common, "epochs": 2, "progress": False})
    if not a.cv_only:
        _main_runs(a, data, world, truth, common, lines)
    if a.cv:
        print("cross-validation ...", flush=True)
        cv_data = data.subset(np.arange(min(a.cv_sites, len(data))))
        t = time.perf_counter()
        table, _ = cross_validate(
            cv_data, n_folds=a.cv_folds, split="blocked", block_size=20.0, seed=0,
            mapping="layer_mean", progress=True,
            train_options=dict(epochs=a.cv_epochs, patience=a.patience, batch_size=a.batch_size),
            batch_options=dict(steps=300, n_starts=2))
        tcv = time.perf_counter() - t
        lines += ["", f"Cross-validation: {len(cv_data)} profiles, {a.cv_folds} spatially "
                  f"blocked folds (20 degree blocks), {tcv / 60:.1f} min in all", "",
                  "| method | held-out SOC R2 (NSE) | RMSE g C m-3 | bias g C m-3 | log R2 | "
                  "fit s |", "|---|---:|---:|---:|---:|---:|"]
        for m, r in table.iterrows():
            lines.append(f"| {m} | {r['r2']:.3f} | {r['rmse']:,.0f} | {r['bias']:,.0f} | "
                         f"{r['r2_log']:.3f} | {r['seconds']:.0f} |")
    load1 = os.getloadavg()
    lines += ["", f"- load average at the end {load1[0]:.2f}; peak RSS of the process "
              f"{_rss_gb():.2f} GB"]
    text = "\n".join(lines)
    print(text)
    os.makedirs(os.path.dirname(a.out), exist_ok=True)
    with open(a.out, "w") as fh:
        fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
