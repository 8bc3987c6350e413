"""Contention-proof parallelism of the compiled kernels: column blocks on a shared thread pool.

The compiled kernels (:mod:`xproda.models.fused`) are serial functions over a range of
columns that release the GIL (numba ``nogil``). :func:`run_blocks` cuts the batch into
blocks of columns and lets the calling thread and up to ``threads - 1`` pool threads take
blocks one at a time from a shared counter until none is left.

Why not an OpenMP parallel loop (numba ``prange``)? An OpenMP loop splits the columns
statically among its threads and ends at a barrier where the finished threads spin-wait for
the others. On a shared machine (a training run, a notebook, a parallel test suite, dask
workers beside each other) a thread that the OS has descheduled holds the whole loop back
while the others burn their time slices spinning: beside two other processes running
2-thread OpenMP work the old ``prange`` kernels fell to 5-16 % of their quiet throughput.
Here nothing spins: blocks are handed out dynamically (a descheduled thread holds back one
block, not a fixed share of the columns), idle pool threads sleep on a queue, and the
caller waits for its helpers on a lock. See ``docs/performance.md`` for measurements.

Results do not depend on the number of threads or the block size: every column is computed
by the same serial code, alone, whatever block it falls in (bit-identical).

Threads per call (:func:`kernel_threads`):

1. the ``threads=`` argument of the kernel function, if given;
2. else the option ``kernel_threads`` (:func:`xproda.set_options`), if set;
3. else ``torch.get_num_threads()`` when called from the main thread, and 1 from any other
   thread: a call from a worker thread (dask's threaded scheduler, a ``distributed`` worker,
   the user's own thread pool) is already one of several running side by side, so each
   takes its share instead of every call spreading over all cores. ``distributed``'s worker
   processes set ``OMP_NUM_THREADS=1`` by default, so torch and the kernels use one core each
   there too.
4. on a full machine, twice rule 3's count (from the main thread): when other threads that are
   runnable at the call's start (:func:`other_runnable`, Linux; in three readings, so that
   a thread runnable for an instant does not count) are at least as many as the machine's
   cores. The OS shares a core among its runnable threads, not among processes: two
   kernel threads beside two processes with two busy threads each got a third of the
   machine (30 % of the quiet throughput), four get half (46-50 % measured for the steady
   state, 40-43 % for transient runs). On a quiet machine extra threads would only switch
   against each other (3-8 % slower), so they are not used there.

Concurrent calls from several threads are safe and need no lock (the old ``prange`` kernels
were serialised by one, since numba's threading layers may not be launched from two threads
at once).

torch's own parallel regions (training, MAP fits, the differentiable kernels) use OpenMP,
whose threads by default spin for a while before they sleep. ``import xproda`` therefore
sets ``OMP_WAIT_POLICY=PASSIVE`` (:func:`xproda.options.passive_openmp`) when the variable
is unset and torch has not been imported yet, i.e. before the OpenMP runtime reads it:
waiting threads sleep at once. With the machine to itself this costs nothing measurable (a
300-site MAP fit: 26 vs 24 sites/s); beside two 2-thread OpenMP loops it keeps 36 % of the
quiet rate instead of 10 %. Set ``OMP_WAIT_POLICY`` yourself (e.g. ``ACTIVE``) to opt out;
import torch after xproda, or set the variable before starting Python, for it to apply.
Where torch was imported first (an isort-ordered script) it cannot apply, which is why the
compiled CPU paths avoid torch's parallel regions altogether: the steady states, and the
transient runs' checks, operators and sums (:func:`xproda.models.fused.value_range`,
:func:`~xproda.models.fused.repeats`, :func:`~xproda.models.fused_steady.step_profiles`)
and their spin-ups (:mod:`xproda.models.fused_spinup`). Where the work is torch's own (MAP
fits, training), :func:`torch_threads_scope` gives it one torch thread on a full machine.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

__all__ = ["run_blocks", "kernel_threads", "block_size", "block_bounds", "available_cores",
           "other_runnable", "machine_full", "openmp_threads", "torch_threads_scope"]

_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()
_POOL_PID: int | None = None

#: columns per block: large enough that the per-call overhead (~10-30 us) is small against a
#: block's work, small enough that blocks are many (load balance on a shared machine)
MIN_BLOCK = 64
MAX_BLOCK = 2048


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def other_runnable() -> int | None:
    """Threads other than the caller that are runnable now, machine-wide (None: unknown).

    From the ``nr_running`` field of Linux's ``/proc/loadavg`` (a snapshot of the threads
    running or waiting for a core, the caller included); None elsewhere.
    """
    try:
        with open("/proc/loadavg", "rb") as fh:
            running = fh.read().split()[3].split(b"/")[0]
        return max(0, int(running) - 1)
    except (OSError, ValueError, IndexError):
        return None


def kernel_threads(threads: int | None = None) -> int:
    """Threads a kernel call uses (see the module docstring for the rules).

    Parameters
    ----------
    threads : int, optional
        An explicit count (>= 1); wins over the option and the defaults.

    Returns
    -------
    int
        At least 1.
    """
    if threads is not None:
        if isinstance(threads, bool) or int(threads) != threads or threads < 1:
            raise ValueError(f"threads must be an int >= 1 or None, got {threads!r}")
        return int(threads)
    from xproda.options import current

    opt = current("kernel_threads")
    if opt is not None:
        return int(opt)
    if threading.current_thread() is not threading.main_thread():
        return 1
    import torch

    base = max(1, int(torch.get_num_threads()))
    return 2 * base if machine_full() else base


def machine_full() -> bool:
    """Whether other runnable threads occupy every core of the machine (Linux; else False).

    :func:`other_runnable` at least ``os.cpu_count()`` in three readings in a row (~30 us),
    so that a thread runnable for an instant (a shell command, a short-lived helper) does
    not count. Rule 4 of :func:`kernel_threads` and :func:`torch_threads_scope` use it.
    """
    cores = os.cpu_count() or 1
    others = other_runnable()
    return others is not None and others >= cores and all(
        (other_runnable() or 0) >= cores for _ in range(2))


def openmp_threads(n: int) -> int:
    """Threads for OpenMP work (torch, scikit-learn) that would use ``n`` by default.

    1 while the machine is full (:func:`machine_full`) and the option ``torch_threads`` is
    unset: OpenMP threads spin at barriers while a partner is descheduled. ``n`` otherwise
    (a count you set is kept). :func:`torch_threads_scope` and
    :func:`xproda.learning.baselines.fit_baseline` use it.
    """
    from xproda.options import current

    if n > 1 and current("torch_threads") is None and machine_full():
        return 1
    return n


@contextlib.contextmanager
def torch_threads_scope() -> Iterator[int]:
    """Run the enclosed torch work on one thread where its OpenMP threads would spin.

    torch's parallel regions end at OpenMP barriers. Unless ``OMP_WAIT_POLICY=PASSIVE``
    reached the OpenMP runtime (``import xproda`` before torch sets it; where torch came
    first it cannot), the waiting thread spins while its partner is descheduled: beside
    two processes with two busy OpenMP threads each, a 300-site MAP fit on torch's 2
    threads keeps ~10 % of its quiet rate, on one thread ~33 % (its quiet rate is the same
    on one thread: small tensors, per-operation overhead). So, for the block, torch gets
    one thread when all of these hold, and its count is restored afterwards:

    * the option ``torch_threads`` is unset (a count you set is kept),
    * the caller is the main thread (``torch.set_num_threads`` is process-wide; worker
      threads -- dask's, a ``distributed`` worker's -- are left alone),
    * ``OMP_WAIT_POLICY`` is not ``PASSIVE`` in the environment,
    * torch has more than one thread and the machine is full (:func:`machine_full`).

    Yields the torch thread count in effect; also a decorator (``@torch_threads_scope()``).
    Results do not change (the MAP fits and the trained networks are bit-identical on one
    and two threads; tested). Used by the MAP fits of
    :func:`xproda.sites.assimilation.assimilate` and by
    :func:`xproda.learning.training.train_network` (the whole call, and each epoch again, as
    the load changes): beside the two OpenMP loops a short training run kept 10 % of its
    quiet rate before, 34 % now.
    """
    import torch

    n = int(torch.get_num_threads())
    if (threading.current_thread() is threading.main_thread()
            and os.environ.get("OMP_WAIT_POLICY", "").strip().upper() != "PASSIVE"
            and openmp_threads(n) < n):
        torch.set_num_threads(1)
        try:
            yield 1
        finally:
            torch.set_num_threads(n)
    else:
        yield n


def block_size(n: int, threads: int, *, multiple: int = 8) -> int:
    """Columns per block for ``n`` columns on ``threads`` threads (a multiple of ``multiple``).

    About 8 blocks per thread, between :data:`MIN_BLOCK` and :data:`MAX_BLOCK` columns.
    """
    b = -(-n // (8 * max(1, threads)))
    b = min(MAX_BLOCK, max(MIN_BLOCK, b))
    return -(-b // multiple) * multiple


def block_bounds(n: int, threads: int, *, block: int | None = None) -> list[int]:
    """Block boundaries ``[0, ..., n]`` of a :func:`run_blocks` call.

    With ``block`` given, blocks of that many columns. Otherwise guided: blocks of
    :func:`block_size` columns while more than ``4 * threads`` such blocks remain, then
    smaller ones (a ``2 * threads``-th of what remains, down to :data:`MIN_BLOCK`, multiples
    of 8), so that the threads finish together: the last block of a fixed size left one
    thread idle for up to a block's time (~2 % of a 1e5-column steady state), longer where
    the OS deschedules the thread that holds it.
    """
    if block is not None:
        return list(range(0, n, block)) + [n]
    t = max(1, threads)
    b = block_size(n, t)
    bounds = [0]
    while bounds[-1] < n:
        rest = n - bounds[-1]
        size = min(b, max(MIN_BLOCK, -(-rest // (2 * t))))
        size = -(-size // 8) * 8
        bounds.append(min(n, bounds[-1] + size))
    return bounds


def _pool() -> ThreadPoolExecutor:
    global _POOL, _POOL_PID
    with _POOL_LOCK:
        if _POOL is None or _POOL_PID != os.getpid():  # a fork does not inherit the threads
            # threads are started as calls need them: up to 2 x cores - 1 helpers by default
            # (rule 4), more only for an explicit thread count above that
            _POOL = ThreadPoolExecutor(max_workers=max(1, 4 * available_cores() - 1),
                                       thread_name_prefix="xproda-kernel")
            _POOL_PID = os.getpid()
        return _POOL


def run_blocks(kernel: Callable[..., Any], n: int, *args: Any, threads: int | None = None,
               block: int | None = None) -> None:
    """Run ``kernel(c0, c1, *args)`` over the column blocks ``[c0, c1)`` covering ``range(n)``.

    ``kernel`` must be safe to run on disjoint blocks at once (each writes only its own
    columns of preallocated outputs) and should release the GIL (numba ``nogil=True``).

    Parameters
    ----------
    kernel : callable
        ``kernel(c0, c1, *args)``.
    n : int
        Number of columns.
    *args
        Passed to every call.
    threads : int, optional
        Threads (default :func:`kernel_threads`); the calling thread is one of them. At most
        ``4 x available_cores()`` run at once (the pool's size), and no more than blocks.
    block : int, optional
        Columns per block (default: guided blocks, :func:`block_bounds`).

    Raises
    ------
    Exception
        The first exception raised by a block (the remaining blocks are skipped).
    """
    if n <= 0:
        return
    if n <= (block if block is not None else MIN_BLOCK):  # one block: no thread to choose
        if threads is not None:
            kernel_threads(threads)  # still validated
        kernel(0, n, *args)
        return
    t = kernel_threads(threads)
    bounds = block_bounds(n, t, block=block)
    nblocks = len(bounds) - 1
    t = min(t, nblocks)
    if t == 1:
        for i in range(nblocks):
            kernel(bounds[i], bounds[i + 1], *args)
        return
    counter = itertools.count()  # next() is atomic under the GIL
    failed: list[BaseException] = []

    def work() -> None:
        while not failed:
            i = next(counter)
            if i >= nblocks:
                return
            try:
                kernel(bounds[i], bounds[i + 1], *args)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                failed.append(e)
                return

    futures: list[Future] = [_pool().submit(work) for _ in range(t - 1)]
    work()
    for f in futures:
        # helpers that have not started (the pool is busy with another call) are not waited
        # for: the caller has done their blocks
        if not f.cancel():
            f.result()
    if failed:
        raise failed[0]
