"""Background load for the benchmarks: processes running 2-thread OpenMP loops (torch matmuls).

``omp_load(k)`` starts ``k`` processes that each run ``torch.mm`` on 256x256 float64 matrices
with ``threads`` torch (OpenMP) threads in a loop -- the kind of work a training run or a
parallel test worker does -- and stops them on exit. Used by the benchmarks' "shared" rows,
which report the throughput beside such processes as a fraction of the quiet throughput
measured in the same run.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

_LOOP = """
import torch, sys
torch.set_num_threads(int(sys.argv[1]))
a = torch.rand(256, 256, dtype=torch.float64)
b = torch.rand(256, 256, dtype=torch.float64)
print("ready", flush=True)
while True:
    c = torch.mm(a, b)
"""


@contextlib.contextmanager
def omp_load(k: int = 2, threads: int = 2):
    """Run ``k`` background processes of ``threads``-thread OpenMP matmul loops."""
    env = {key: v for key, v in os.environ.items() if key != "OMP_WAIT_POLICY"}
    procs = [subprocess.Popen([sys.executable, "-c", _LOOP, str(threads)], env=env,
                              stdout=subprocess.PIPE, text=True) for _ in range(k)]
    try:
        for p in procs:
            p.stdout.readline()
        time.sleep(0.5)
        yield procs
    finally:
        for p in procs:
            p.kill()
        for p in procs:
            p.wait()


def load_average() -> float:
    """The 1-minute load average (nan where unknown)."""
    try:
        return os.getloadavg()[0]
    except OSError:  # pragma: no cover
        return float("nan")
