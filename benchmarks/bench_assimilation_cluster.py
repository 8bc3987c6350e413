#!/usr/bin/env python
"""Site-level assimilation in shards: in-process vs a LocalCluster of worker processes.

What it measures
----------------
A twin problem (forcing resampled from the fixture cases of
``../shared/fixtures/reference_clm5_cen.json``, every regime; profiles simulated from known
parameters with 5 % log-normal noise; free parameters ``efolding`` and ``tau4s2``) is
assimilated three ways, in one run:

* ``in-process`` -- :func:`assimilate` without shards (torch's default threads: all cores);
* ``in-process, 1 thread`` -- the same with ``torch_threads=1`` (the per-worker baseline);
* ``LocalCluster 2x1`` -- ``assimilate(..., shard_size=...)`` on
  ``xproda.options.local_cluster(2)`` (2 single-threaded worker processes with xproda's
  allocator settings; ``--dask-defaults``: a plain ``distributed.LocalCluster``, whose
  ``MALLOC_TRIM_THRESHOLD_=65536`` makes MAP several times slower); cluster start-up and
  worker warm-up timed apart.

for ``map`` (``--map-sites``, default options) and ``am`` (``--am-sites`` x 3 chains x
``--am-iter`` iterations). The table gives seconds, sites/s, the parallel efficiency
``t(1 thread) / (2 x t(cluster))``, the speed-up over the in-process run, and whether the
results are identical bit for bit (per-site random streams and per-column model
arithmetic, see docs/user-guide/assimilation-cluster.md) -- plus the load average.

How to run
----------
::

    .venv/bin/python benchmarks/bench_assimilation_cluster.py                 # ~10 min
    .venv/bin/python benchmarks/bench_assimilation_cluster.py --map-sites 10000 --am-sites 2000

Issue 19's targets: 10,000 sites MAP and 2,000 sites AM (3 x 20,000): >= 85 % parallel
efficiency on 2 cores, identical results. It asserts nothing; it prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
FIXTURE = HERE.parent.parent / "shared" / "fixtures" / "reference_clm5_cen.json"
FREE = ["efolding", "tau4s2"]
TOP = np.array([0.0, 0.1, 0.3, 0.6])
BOTTOM = np.array([0.1, 0.3, 0.6, 1.0])


def twin(n: int, seed: int = 0):
    from xproda import testing

    cases = json.loads(FIXTURE.read_text())["cases"]
    f = testing.resampled_forcing(cases, n, seed)
    _, rows = testing.twin_profiles(f, FREE, seed=seed, low=0.3, high=0.7, top=TOP,
                                    bottom=BOTTOM, ids=[f"s{i:06d}" for i in range(n)])
    rows["soc"] *= 1e4 / rows["soc"].median()  # plausible densities for the validation
    return f, rows


def _warm() -> None:
    """Import xproda and compile its kernels in this process (a 2-site MAP fit)."""
    import warnings

    from xproda.sites.assimilation.problem import assimilate

    f, df = twin(2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assimilate(df, f, method="map", free=FREE, likelihood="gaussian", sigma_rel=0.05,
                   log_space=True, progress=False, sampler_options={"steps": 2})


def same(a, b, exact):
    for k in a.data_vars:
        x, y = np.asarray(a[k].values), np.asarray(b[k].values)
        if exact or x.dtype.kind != "f":
            if not np.array_equal(x, y, equal_nan=x.dtype.kind == "f"):
                return False
        elif not np.allclose(x, y, rtol=1e-12, atol=1e-13, equal_nan=True):
            return False
    return True


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--map-sites", type=int, default=1000)
    ap.add_argument("--am-sites", type=int, default=200)
    ap.add_argument("--am-iter", type=int, default=20000)
    ap.add_argument("--shard-size", type=int, default=None)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dask-defaults", action="store_true",
                    help="workers as dask starts them (not xproda.options.local_cluster)")
    args = ap.parse_args()
    import distributed

    import xproda
    from xproda.sites.assimilation.distributed import default_shard_size
    from xproda.sites.assimilation.problem import assimilate

    warnings.simplefilter("ignore")
    rows = []
    t0 = time.perf_counter()
    tc = time.perf_counter()
    if args.dask_defaults:  # dask's worker environment (MALLOC_TRIM_THRESHOLD_=65536, profiler)
        cluster = distributed.LocalCluster(n_workers=args.workers, threads_per_worker=1,
                                           processes=True, dashboard_address=None)
    else:
        cluster = xproda.options.local_cluster(args.workers, dashboard_address=None)
    with distributed.Client(cluster) as client:
        t_cluster = time.perf_counter() - tc
        tw = time.perf_counter()
        client.run(_warm)  # imports and compiled kernels on every worker, timed apart
        t_warm = time.perf_counter() - tw
    _warm()  # and in this process
    for method, n in (("map", args.map_sites), ("am", args.am_sites)):
        if n <= 0:
            continue
        f, df = twin(n)
        kw = dict(method=method, free=FREE, likelihood="gaussian", sigma_rel=0.05,
                  log_space=True, seed=0, progress=False)
        if method == "am":
            kw.update(n_chains=3, n_iter=args.am_iter)
        t = time.perf_counter()
        ref = assimilate(df, f, **kw)
        t_in = time.perf_counter() - t
        with xproda.set_options(torch_threads=1):
            t = time.perf_counter()
            one = assimilate(df, f, **kw)
            t_one = time.perf_counter() - t
        with distributed.Client(cluster):
            # the library's default shard size (default_shard_size) unless given
            size = args.shard_size or default_shard_size(n, method)
            t = time.perf_counter()
            clu = assimilate(df, f, shard_size=size, **kw)
            t_clu = time.perf_counter() - t
        rows.append(dict(method=method, sites=n, shard=size, t_in=t_in, t_one=t_one,
                         t_clu=t_clu, eff=t_one / (args.workers * t_clu),
                         speedup=t_in / t_clu, ident=same(ref, clu, True), ident1=same(ref, one, True),
                         load=os.getloadavg()[0]))
    cluster.close()
    kind = "dask defaults" if args.dask_defaults else "xproda.options.local_cluster"
    print(f"\n## Site-level assimilation, in-process vs LocalCluster({args.workers} x 1 "
          f"thread, {kind})"
          f"\n\n{os.cpu_count()} CPUs; cluster start-up {t_cluster:.1f} s and worker warm-up "
          f"(imports, kernel compilation) {t_warm:.1f} s, not in the times; "
          f"total {time.perf_counter() - t0:.0f} s\n")
    print("| method | sites | shard | in-process s | 1 thread s | cluster s | sites/s cluster "
          "| efficiency vs 1 thread | speed-up vs in-process | identical | load |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['method']} | {r['sites']} | {r['shard']} | {r['t_in']:.1f} | "
              f"{r['t_one']:.1f} | {r['t_clu']:.1f} | {r['sites'] / r['t_clu']:.1f} | "
              f"{100 * r['eff']:.0f} % | {r['speedup']:.2f}x | "
              f"{'yes' if r['ident'] and r['ident1'] else 'NO'} | {r['load']:.2f} |")


if __name__ == "__main__":
    main()
