#!/usr/bin/env python
"""Global steady-state run streamed Zarr -> Zarr: land columns/s, peak RSS, overhead vs kernel.

What it measures
----------------
For each resolution (default 1 and 0.25 degrees):

1. **Inputs** (cached under ``benchmarks/results/global_<res>/``; built once, not timed): a
   global lat/lon forcing store (Zarr v3, float32, chunks of ``--chunk`` x ``--chunk`` cells)
   with a real land mask (PyPI ``global-land-mask``), physically shaped random forcing on land
   (:func:`xproda.testing.random_forcing`, one seed per chunk) and NaN over the ocean, and a
   parameter store ``theta`` (normalised, one random set per land cell).
2. **end to end** (fresh subprocess, best of ``--repeats``): ``xproda.cli.build_run`` (open
   both stores lazily, ``steady_state`` + stocks for 0-0.3 m and 0-1 m) and
   ``xproda.io.write_zarr`` to a new store (template, region-by-region writes, all-ocean
   regions skipped through the land mask) on the threaded scheduler.  The clock starts after
   the libraries are imported (a one-off of about 2 s at any grid size, printed below the
   table); everything else counts, including loading the compiled kernels.  Reported: wall
   time, land columns per second, peak RSS (``ru_maxrss`` of the process, i.e. everything:
   interpreter, dask, buffers).
3. **kernel** (fresh subprocess, same land columns): the forcing and parameters of every land
   cell loaded into memory first (not timed), then ``model.steady_state(theta, forcing)`` on
   all of them (timed, best of ``--repeats``).  The ratio ``end to end / kernel`` is the
   overhead of the xarray/dask/Zarr pipeline.

Both rows run with ``xproda.tune_malloc()`` (glibc keeps freed memory for reuse), as
``xproda run`` does -- in the LocalCluster row on the workers too, applied by ``write_zarr``
(option ``tune_workers``, default) because dask starts them with
``MALLOC_TRIM_THRESHOLD_=65536``; ``--no-tune-malloc`` measures both without it.

Targets (issue 3, 2 cores): >= 20,000 land columns/s end to end, peak RSS <= 2 GB
independent of grid size (1 degree vs 0.25 degree), overhead over the raw kernel <= 2x.

How to run
----------
::

    .venv/bin/python benchmarks/bench_global_run.py                 # 1 and 0.25 degrees
    .venv/bin/python benchmarks/bench_global_run.py --res 1         # quick
    .venv/bin/python benchmarks/bench_global_run.py --rebuild       # regenerate inputs

It asserts nothing; it prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

RESULTS = Path(__file__).resolve().parent / "results"
TARGET_RATE = 20_000
TARGET_RSS_GB = 2.0
TARGET_OVERHEAD = 2.0


# -------------------------------------------------------------------------------------------
# inputs
# -------------------------------------------------------------------------------------------
def _grid(res: float):
    ny, nx = int(round(180 / res)), int(round(360 / res))
    lat = 90 - res * (np.arange(ny) + 0.5)
    lon = -180 + res * (np.arange(nx) + 0.5)
    return lat, lon


def land_mask(res: float) -> np.ndarray:
    from global_land_mask import globe

    lat, lon = _grid(res)
    lon2, lat2 = np.meshgrid(lon, lat)
    return globe.is_land(lat2, lon2)


def build_inputs(res: float, chunk: int, root: Path) -> dict:
    """Write the forcing and parameter stores for one resolution (chunk by chunk)."""
    import rioxarray  # noqa: F401  (registers .rio)
    import xarray as xr

    import xproda
    from xproda.models.forcing import FORCING_SCHEMA
    from xproda.testing import random_forcing

    lat, lon = _grid(res)
    ny, nx = lat.size, lon.size
    land = land_mask(res)
    forcing_path, params_path = root / "forcing.zarr", root / "params.zarr"
    for p in (forcing_path, params_path):
        if p.exists():
            shutil.rmtree(p)
    names = [k for k in FORCING_SCHEMA if FORCING_SCHEMA[k].required or k in ("NPP",)]
    space = xproda.get_model("clm5").parameters
    import dask.array as dsa

    def dims_of(k):
        return ("month", "layer", "lat", "lon") if FORCING_SCHEMA[k].shape == (12, 20) else (
            "month", "lat", "lon")

    def shape_of(k):
        return FORCING_SCHEMA[k].shape + (ny, nx)

    coords = {
        "lat": ("lat", lat, {"standard_name": "latitude", "units": "degrees_north"}),
        "lon": ("lon", lon, {"standard_name": "longitude", "units": "degrees_east"}),
    }
    tmpl = xr.Dataset(
        {k: (dims_of(k), dsa.full(shape_of(k), np.nan, dtype=np.float32,
                                  chunks=FORCING_SCHEMA[k].shape + (chunk, chunk)),
             {"units": FORCING_SCHEMA[k].units, "long_name": FORCING_SCHEMA[k].long_name})
         for k in names},
        coords=coords,
    ).rio.write_crs("EPSG:4326")
    tmpl.to_zarr(forcing_path, compute=False, zarr_format=3, mode="w")
    ptmpl = xr.Dataset(
        {"theta": (("lat", "lon", "parameter"),
                   dsa.full((ny, nx, len(space)), np.nan, chunks=(chunk, chunk, -1)),
                   {"units": "1", "long_name": "normalised parameters"})},
        coords={**coords, "parameter": list(space.names)},
    )
    ptmpl.to_zarr(params_path, compute=False, zarr_format=3, mode="w")
    k_chunk = 0
    for i0 in range(0, ny, chunk):
        for j0 in range(0, nx, chunk):
            i1, j1 = min(ny, i0 + chunk), min(nx, j0 + chunk)
            sub = land[i0:i1, j0:j1]
            k_chunk += 1
            if not sub.any():
                continue
            n = int(sub.sum())
            f = random_forcing(n, seed=k_chunk)
            blk = {}
            for k in names:
                arr = np.full(shape_of(k)[:-2] + sub.shape, np.nan, dtype=np.float32)
                v = f[k].astype(np.float32)  # [n, ...]
                arr[..., sub] = np.moveaxis(v, 0, -1)
                blk[k] = (dims_of(k), arr)
            region = {"lat": slice(i0, i1), "lon": slice(j0, j1)}
            xr.Dataset(blk).to_zarr(forcing_path, region=region)
            th = np.full(sub.shape + (len(space),), np.nan)
            th[sub] = np.random.default_rng(k_chunk).uniform(0.1, 0.9, (n, len(space)))
            xr.Dataset({"theta": (("lat", "lon", "parameter"), th)}).to_zarr(
                params_path, region={**region, "parameter": slice(None)})
    info = {"res": res, "chunk": chunk, "ny": ny, "nx": nx, "land": int(land.sum())}
    (root / "info.json").write_text(json.dumps(info))
    return info


def build_cells(root: Path, chunk: int) -> None:
    """Land-only copies of both stores (``xproda.spatial.to_cells``: a ``cell`` dim first)."""
    import xarray as xr

    from xproda.spatial import to_cells

    cells = root / "cells"
    if cells.exists():
        shutil.rmtree(cells)
    ds = xr.open_zarr(root / "forcing.zarr")
    pr = xr.open_zarr(root / "params.zarr")
    land = np.isfinite(pr["theta"]).all("parameter").compute()
    for name, obj in (("forcing.zarr", ds), ("params.zarr", pr)):
        obj = obj.drop_encoding()  # the gridded store's chunks
        to_cells(obj, land, chunk=chunk).to_zarr(cells / name, zarr_format=3, mode="w")
    (cells / "info.json").write_text(json.dumps({"cell_chunk": chunk}))


# -------------------------------------------------------------------------------------------
# workers (fresh processes)
# -------------------------------------------------------------------------------------------
def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _import_libraries() -> float:
    """Import what a run uses (one-off, the same at every grid size); returns seconds."""
    t0 = time.perf_counter()
    import importlib

    for mod in ("dask.array", "xarray", "zarr", "torch", "numba", "xproda.io", "xproda.cli",
                "xproda.xr.api", "xproda.models.clm5", "distributed"):
        try:
            importlib.import_module(mod)
        except ImportError:  # distributed is optional
            pass
    return time.perf_counter() - t0


def _tune(tune_malloc: bool) -> bool:
    """``xproda.tune_malloc()`` as ``xproda run`` does (both rows, so the ratio is fair)."""
    if not tune_malloc:
        return False
    import xproda

    return xproda.tune_malloc()


def worker_end_to_end(root: str, out: str, threads: int, tune_malloc: bool = True,
                      scheduler: str = "threads") -> dict:
    import xproda  # first: sets OMP_WAIT_POLICY before torch loads, as in a user's script

    t_imp = _import_libraries()
    tuned = _tune(tune_malloc)  # before any dask thread exists (arena_max applies to new ones)
    import contextlib

    import dask

    from xproda import io
    from xproda.cli import build_run

    cluster_s = 0.0
    stack = contextlib.ExitStack()
    if scheduler == "processes":  # a LocalCluster of `threads` worker processes, defaults
        from distributed import Client, LocalCluster

        t0 = time.perf_counter()
        cluster = stack.enter_context(LocalCluster(n_workers=threads, dashboard_address=None))
        client = stack.enter_context(Client(cluster))
        client.run(_import_libraries)  # the workers' imports before the clock, as ours
        cluster_s = time.perf_counter() - t0
        cfg = {}
    else:
        cfg = {"scheduler": "threads", "num_workers": threads}
    rss0 = _peak_gb()
    with stack:
        t0 = time.perf_counter()
        # tune_workers: write_zarr tunes untuned dask workers' allocators (as tune_malloc
        # here); --no-tune-malloc leaves them as dask starts them
        with dask.config.set(**cfg), xproda.set_options(tune_workers=tune_malloc):
            res, mask = build_run(f"{root}/forcing.zarr", f"{root}/params.zarr",
                                  depths=[(0, 0.3), (0, 1.0)])
            report = io.write_zarr(res, out, mask=mask, overwrite=True, progress=False)
        wall = time.perf_counter() - t0
        workers_gb = 0.0
        if scheduler == "processes":  # peak RSS of every worker process, summed
            workers_gb = sum(client.run(_peak_gb).values())
    return {"wall": wall, "peak_gb": _peak_gb() + workers_gb, "rss_after_import_gb": rss0,
            "import_s": t_imp, "tuned": tuned, "report": repr(report),
            "cluster_s": cluster_s}


def worker_kernel(root: str, threads: int, repeats: int, tune_malloc: bool = True) -> dict:
    _tune(tune_malloc)
    import torch
    import xarray as xr

    import xproda

    torch.set_num_threads(threads)
    m = xproda.get_model("clm5")
    ds = xr.open_zarr(f"{root}/forcing.zarr")
    th = xr.open_zarr(f"{root}/params.zarr")["theta"].values
    land = np.isfinite(th).all(-1)
    n = int(land.sum())
    f = {}
    for k in m.required_forcing:
        v = ds[k].values  # [..., lat, lon]
        f[k] = np.ascontiguousarray(np.moveaxis(v[..., land], -1, 0))  # float32, as stored
    theta = np.ascontiguousarray(th[land])
    del th, ds
    m.steady_state(theta[:2000], {k: v[:2000] for k, v in f.items()})  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        m.steady_state(theta, f)
        times.append(time.perf_counter() - t0)
    return {"wall": min(times), "n": n, "peak_gb": _peak_gb()}


def _run_worker(kind: str, **kw) -> dict:
    cmd = [sys.executable, __file__, "--_worker", json.dumps({"kind": kind, **kw})]
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError(f"worker {kind} failed:\n{r.stderr[-4000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--res", default="1,0.25", help="resolutions in degrees (default 1,0.25)")
    ap.add_argument("--chunk", type=int, default=120,
                    help="spatial chunk (cells per side) of the stores (default 120)")
    ap.add_argument("--threads", type=int, default=2, help="dask threads / torch threads")
    ap.add_argument("--repeats", type=int, default=3,
                    help="repeats of the kernel and of the end-to-end run (best reported)")
    ap.add_argument("--layout", choices=["grid", "cells", "both"], default="both",
                    help="input stores: gridded (lat/lon), land-only (cell) or both (default)")
    ap.add_argument("--cell-chunk", type=int, default=16384,
                    help="cells per chunk of the land-only stores (default 16384)")
    ap.add_argument("--rebuild", action="store_true", help="regenerate the input stores")
    ap.add_argument("--scheduler", default="threads",
                    help="threads, processes (a distributed LocalCluster of --threads worker "
                         "processes with default settings, started before the clock) or both")
    ap.add_argument("--no-tune-malloc", action="store_true",
                    help="leave glibc's allocator untuned in both rows (default: "
                         "xproda.tune_malloc() in both, as `xproda run` does)")
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args._worker:
        spec = json.loads(args._worker)
        kind = spec.pop("kind")
        fn = {"e2e": worker_end_to_end, "kernel": worker_kernel}[kind]
        print(json.dumps(fn(**spec)))
        return 0

    rows = []
    layouts = ["grid", "cells"] if args.layout == "both" else [args.layout]
    for res in [float(r) for r in args.res.split(",")]:
        root = RESULTS / f"global_{res:g}deg"
        root.mkdir(parents=True, exist_ok=True)
        info_p = root / "info.json"
        info = json.loads(info_p.read_text()) if info_p.exists() else None
        if args.rebuild or info is None or info.get("chunk") != args.chunk:
            print(f"building inputs at {res:g} deg ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            info = build_inputs(res, args.chunk, root)
            print(f"  {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        cinfo = root / "cells" / "info.json"
        if "cells" in layouts and (args.rebuild or not cinfo.exists() or json.loads(
                cinfo.read_text()).get("cell_chunk") != args.cell_chunk):
            print(f"building land-only stores at {res:g} deg ...", file=sys.stderr, flush=True)
            t0 = time.perf_counter()
            build_cells(root, args.cell_chunk)
            print(f"  {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
        print(f"kernel at {res:g} deg ...", file=sys.stderr, flush=True)
        ker = _run_worker("kernel", root=str(root), threads=args.threads, repeats=args.repeats,
                          tune_malloc=not args.no_tune_malloc)
        print(f"  {ker['wall']:.1f} s", file=sys.stderr, flush=True)
        for layout in layouts:
            src = root if layout == "grid" else root / "cells"
            out = str(src / "result.zarr")
            print(f"end to end at {res:g} deg, {layout} stores ...", file=sys.stderr, flush=True)
            scheds = ["threads", "processes"] if args.scheduler == "both" else [args.scheduler]
            for sched in scheds:
                runs = [_run_worker("e2e", root=str(src), out=out, threads=args.threads,
                                    tune_malloc=not args.no_tune_malloc, scheduler=sched)
                        for _ in range(args.repeats)]
                e2e = min(runs, key=lambda r: r["wall"])  # best of --repeats, as the kernel
                e2e["walls"] = [r["wall"] for r in runs]
                e2e["peak_gb"] = max(r["peak_gb"] for r in runs)
                e2e["scheduler"] = sched
                print(f"  {sched}: {', '.join(f'{w:.1f}' for w in e2e['walls'])} s",
                      file=sys.stderr, flush=True)
                rows.append((res, layout, info, e2e, ker))

    print("# xproda global run benchmark (Zarr -> Zarr)\n")
    import torch

    print(f"- machine: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs; "
          f"Python {platform.python_version()}, torch {torch.__version__}; "
          f"{args.threads} dask threads (torch 1 thread per task); kernel row: torch "
          f"{args.threads} threads; glibc allocator "
          f"{'untuned' if args.no_tune_malloc else 'tuned (xproda.tune_malloc, as xproda run)'} "
          "in both rows")
    print(f"- stores: float32 forcing, Zarr v3, chunks {args.chunk}x{args.chunk} cells; "
          "land mask from global-land-mask; random forcing and parameters on land")
    print(f"- targets: >= {TARGET_RATE:,} land columns/s end to end, peak RSS <= "
          f"{TARGET_RSS_GB:g} GB independent of grid size, overhead <= {TARGET_OVERHEAD:g}x\n")
    print("| grid | stores | scheduler | cells | land columns | end-to-end s | land columns/s | "
          "peak RSS GB | kernel s (in memory) | kernel columns/s | overhead (e2e / kernel) |")
    print("|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for res, layout, info, e2e, ker in rows:
        n = info["land"]
        what = (f"lat/lon, {args.chunk}x{args.chunk} chunks" if layout == "grid"
                else f"land-only cell, {args.cell_chunk} chunks")
        print(f"| {res:g} deg | {what} | {e2e['scheduler']} | {info['ny'] * info['nx']:,} | "
              f"{n:,} | "
              f"{e2e['wall']:.2f} | {n / e2e['wall']:,.0f} | {e2e['peak_gb']:.2f} | "
              f"{ker['wall']:.2f} | {ker['n'] / ker['wall']:,.0f} | "
              f"{e2e['wall'] / ker['wall']:.2f}x |")
    print()
    for res, layout, info, e2e, ker in rows:
        print(f"- {res:g} deg, {layout}, {e2e['scheduler']} (cluster start before the clock "
              f"{e2e['cluster_s']:.1f} s, with the workers' library imports; peak RSS: with processes, the client's plus every "
              f"worker's): end-to-end runs {', '.join(f'{w:.2f}' for w in e2e['walls'])} s "
              f"(best reported; library imports before the clock: {e2e['import_s']:.2f} s; "
              f"tune_malloc applied: {e2e['tuned']}); "
              f"{e2e['report']}; RSS after imports "
              f"{e2e['rss_after_import_gb']:.2f} GB; kernel row peak RSS {ker['peak_gb']:.2f} GB "
              "(all land columns in memory)")
    print(f"- load average after the run: {os.getloadavg()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
