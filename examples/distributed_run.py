"""The global run on a dask.distributed cluster of worker processes.

The same pipeline as ``global_run.py`` (world -> parameters -> steady state -> Zarr ->
global totals), executed by a ``LocalCluster`` of two single-threaded worker processes. Swap
the cluster for ``Client("tcp://scheduler:8786")`` to run on a real cluster; the code is the
same (``xproda run --scheduler ...`` does this from the command line)::

    python examples/distributed_run.py                     # 4 degrees, 2 workers, ~30 s
    python examples/distributed_run.py --resolution 2 --workers 4

Needs the ``distributed`` extra (``pip install "xproda[distributed]"``).
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from xproda import io, set_options
from xproda.options import local_cluster
from xproda.xr import api as xr_api
from xproda.datasets import synthetic_world, truth_parameters


def main(argv=None) -> None:
    from distributed import Client

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", type=float, default=4.0, help="grid spacing in degrees")
    ap.add_argument("--workers", type=int, default=2, help="worker processes")
    ap.add_argument("--out", type=Path, default=None, help="output Zarr store (default: temp)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    store = args.out or Path(tempfile.mkdtemp()) / "distributed_run.zarr"

    # the inputs: the synthetic world, chunked into 2 x 4 spatial regions (the tasks)
    chunk = int(np.ceil(90 / args.resolution))
    world = synthetic_world(args.resolution, seed=0, chunks={"lat": chunk, "lon": chunk})
    theta = truth_parameters(world, kind="cue")

    # local_cluster: a LocalCluster whose workers have xproda's allocator settings (dask's
    # default MALLOC_TRIM_THRESHOLD_ makes model calls on workers several times slower)
    with local_cluster(args.workers, dashboard_address=None) as cluster, \
            Client(cluster) as client:
        print(f"cluster: {len(client.scheduler_info()['workers'])} worker processes")
        # one torch thread per worker task (the workers are the parallelism); set_options is
        # captured when the graph is built and applied in every task on the workers
        with set_options(torch_threads=1):
            out = world.proda.steady_state(theta)                 # lazy
            out["soc_stock_0_100cm"] = out.proda.soc_stock(depth=(0, 1))
            report = io.write_zarr(out, str(store), mask=world["landmask"] == 1,
                                   overwrite=True, progress=False)  # regions run on workers
        print(report)
        res = io.open_dataset(str(store))
        totals = {name: xr_api.global_total(res, depth=d)
                  for name, d in (("0-30 cm", (0, 0.3)), ("0-100 cm", (0, 1)),
                                  ("0-8.6 m", None))}
        totals = client.compute(totals, sync=True)                # reduced on the cluster
    for name, total in totals.items():
        print(f"global SOC {name:>8}: {float(total):8,.0f} Pg C")
    print(f"done in {time.perf_counter() - t0:.1f} s -> {store}")


if __name__ == "__main__":
    main()
