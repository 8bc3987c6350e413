"""Options: ``xproda.set_options`` / ``xproda.get_options`` (context-local).

Usable as a function or as a context manager, like :func:`xarray.set_options`::

    with xproda.set_options(device="cuda", torch_threads=4):
        out = model.steady_state(theta, forcing)
"""

from __future__ import annotations

import contextvars
import os
import sys
import types
from typing import Any, Mapping

from xproda.errors import OptionError

__all__ = ["set_options", "get_options", "use_options", "current", "tune_malloc",
           "passive_openmp", "dask_worker_config", "local_cluster", "check_workers",
           "progress_bar", "show_progress",
           "DEFAULTS"]

#: the default value of every option (read-only)
DEFAULTS: Mapping[str, Any] = types.MappingProxyType({
    # torch device of kernel computations ("cpu", "cuda", "cuda:1", ...); None = the device of
    # torch inputs, else CPU
    "device": None,
    # floating dtype of kernel computations; float64 is the default (rates span 1e-30..1e1)
    "dtype": "float64",
    # torch intra-op threads used by kernels (per dask worker); None leaves torch's setting
    "torch_threads": None,
    # columns per internal kernel chunk: bounds temporaries (memory linear in n with a small
    # constant) and keeps them in cache; results do not depend on it
    "kernel_batch_size": 4096,
    # threads of the compiled CPU kernels per call; None: torch's thread count from the main
    # thread, 1 from other threads (dask workers, thread pools); see xproda.models.parallel
    "kernel_threads": None,
    # use fused numba CPU kernels (the structured solve, PCHIP model-to-observation mapping)
    # when no gradient is needed (same results as the torch paths; see xproda.models.fused)
    "fused_kernels": True,
    # before sharded assimilation or write_zarr submit work to dask.distributed workers whose
    # allocator makes xproda slow (dask's MALLOC_TRIM_THRESHOLD_), apply tune_malloc there
    # (client.run); False: only warn (see check_workers)
    "tune_workers": True,
    # progress bars of long work (write_zarr, write_simulation, assimilation, training, the
    # demo): the default of every ``progress=None`` argument (see progress_bar)
    "progress": True,
})

_VALIDATORS = {
    "device": lambda v: v is None or isinstance(v, str) or type(v).__name__ == "device",
    "dtype": lambda v: v in ("float64", "float32"),
    "torch_threads": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)
                                             and v >= 1),
    "kernel_batch_size": lambda v: isinstance(v, int) and not isinstance(v, bool) and v >= 1,
    "kernel_threads": lambda v: v is None or (isinstance(v, int) and not isinstance(v, bool)
                                              and v >= 1),
    "fused_kernels": lambda v: isinstance(v, bool),
    "tune_workers": lambda v: isinstance(v, bool),
    "progress": lambda v: isinstance(v, bool),
}
_EXPECTED = {
    "device": "None, a device string ('cpu', 'cuda:0') or a torch.device",
    "dtype": "'float64' or 'float32'",
    "torch_threads": "None or an int >= 1",
    "kernel_batch_size": "an int >= 1",
    "kernel_threads": "None or an int >= 1",
    "fused_kernels": "True or False",
    "tune_workers": "True or False",
    "progress": "True or False",
}

#: the options of the current context (thread, asyncio task or dask task): an immutable
#: mapping; tasks receive the options of the code that built them as an argument and enter
#: them with :func:`use_options`, so no task reads or writes process-global option state
_CURRENT: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "xproda_options", default=DEFAULTS)


def _checked(kwargs: Mapping[str, Any]) -> dict[str, Any]:
    for key, value in kwargs.items():
        if key not in DEFAULTS:
            raise OptionError(
                f"unknown xproda option {key!r}; valid options are {sorted(DEFAULTS)}")
        if not _VALIDATORS[key](value):
            raise OptionError(f"invalid value for xproda option {key!r}: {value!r}; expected "
                              f"{_EXPECTED[key]}")
    return dict(kwargs)


class set_options:
    """Set xproda options for the current context (also a context manager restoring them).

    Options are context-local (:mod:`contextvars`): ``with set_options(...)`` in one thread
    never changes what another thread sees, and dask tasks receive the options of the code
    that built them (captured when the graph is built, entered with :func:`use_options`
    inside the task).  Called as a plain function it sets the options of the current
    thread from then on (a notebook's cells share one).

    Parameters
    ----------
    device : str or torch.device or None
        Device of kernel computations.
    dtype : {"float64", "float32"}
        Floating dtype of kernels (float64 recommended).
    torch_threads : int or None
        Intra-op threads for torch inside kernels (process-wide in torch: it is applied
        with :func:`torch.set_num_threads` when set).
    kernel_batch_size : int
        Columns per internal kernel chunk (default 4096); results do not depend on it.
    kernel_threads : int or None
        Threads of each compiled CPU kernel call (column blocks on a shared pool that never
        spin-waits; see :mod:`xproda.models.parallel`). None (default): torch's thread
        count when called from the main thread (twice that when other runnable threads
        fill the machine's cores), 1 from any other thread (dask workers). Results do not
        depend on it.
    fused_kernels : bool
        Use the fused numba CPU kernels (structured solve, PCHIP mapping) when no gradient is
        needed (default True); results equal the torch paths to rounding.
    tune_workers : bool
        Before sharded assimilation or :func:`~xproda.io.write_zarr` submit work to
        dask.distributed workers started with dask's default allocator environment, apply
        :func:`tune_malloc` on them (``client.run``; default True); False only warns. See
        :func:`check_workers`. Results do not depend on it.
    progress : bool
        Show progress bars for long work (default True): the value of every ``progress=None``
        argument of xproda's functions (``write_zarr``, ``write_simulation``,
        ``assimilate``, ``train_network``, ``cross_validate``, the demo). One
        ``set_options(progress=False)`` silences them all. See :func:`progress_bar`.

    Raises
    ------
    OptionError
        An unknown option or an invalid value (a ``ValueError``).
    """

    def __init__(self, **kwargs: Any) -> None:
        new = _checked(kwargs)
        self._token = _CURRENT.set(types.MappingProxyType({**_CURRENT.get(), **new}))
        if new.get("torch_threads") is not None:
            import torch

            torch.set_num_threads(new["torch_threads"])

    def __enter__(self) -> "set_options":
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            _CURRENT.reset(self._token)
        except ValueError:  # pragma: no cover - exited in another context than entered
            pass


def get_options() -> dict[str, Any]:
    """A copy of the options of the current context."""
    return dict(_CURRENT.get())


class use_options:
    """Enter a complete options mapping (e.g. captured by :func:`get_options`) in a task.

    The engine's tasks run ``with use_options(opts): ...`` with the options of the code
    that built the graph; the previous options of the worker thread are restored on exit.
    Unlike :class:`set_options` it never touches torch's process-wide settings.
    """

    def __init__(self, options: Mapping[str, Any]) -> None:
        self._options = types.MappingProxyType({**DEFAULTS, **_checked(options)})
        self._token: contextvars.Token | None = None

    def __enter__(self) -> Mapping[str, Any]:
        self._token = _CURRENT.set(self._options)
        return self._options

    def __exit__(self, *exc: object) -> None:
        if self._token is not None:
            _CURRENT.reset(self._token)


def current(name: str) -> Any:
    """The current value of option ``name`` (what kernels read)."""
    return _CURRENT.get()[name]


def show_progress(progress: bool | None) -> bool:
    """Whether to show progress: ``progress`` if given, else the option ``progress``."""
    return current("progress") if progress is None else bool(progress)


def progress_bar(progress: bool | None, *, total: int | None, desc: str, unit: str = "it",
                 initial: int = 0, leave: bool = True) -> Any:
    """xproda's one progress bar: :mod:`tqdm.auto` (a widget in Jupyter, text elsewhere).

    Parameters
    ----------
    progress : bool or None
        Show the bar; None: the option ``progress`` (:class:`set_options`).
    total : int or None, keyword-only
        Steps in all.
    desc, unit : str, keyword-only
        Label and unit of the steps.
    initial : int, keyword-only, default 0
        Steps already done (a resumed run).
    leave : bool, keyword-only, default True
        Keep the finished bar on screen.

    Returns
    -------
    tqdm.auto.tqdm
        Disabled (prints nothing) when progress is off. Without ipywidgets in a notebook,
        tqdm's text bar is used instead of its widget, without tqdm's "IProgress not found"
        warning (install the ``notebook`` extra for widgets).
    """
    import warnings

    from tqdm.auto import tqdm

    with warnings.catch_warnings():  # tqdm.auto without ipywidgets: a text bar is fine
        warnings.filterwarnings("ignore", message="IProgress not found")
        return tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=leave,
                    disable=not show_progress(progress), dynamic_ncols=True)


#: glibc ``mallopt`` parameters (malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_ARENA_MAX = -1, -3, -8


def tune_malloc(*, trim_threshold: int = 128 * 2**20, mmap_threshold: int = 32 * 2**20,
                arena_max: int = 1) -> bool:
    """Let glibc reuse freed memory instead of handing it back to the OS and faulting it in again.

    A global run allocates and frees large temporaries in every dask task: decoded Zarr
    chunks, float64 forcing and kernel tensors of 5-30 MB.  By default glibc serves the dask
    threads from per-thread arenas whose heaps are given back to the kernel when they empty,
    and maps big blocks separately, so the next task faults the same amount of memory in
    again, zero-filled (transparent huge pages make that a 2 MB ``clear_page`` each time).
    In the 0.25 degree benchmark (``benchmarks/bench_global_run.py``, land-only store, 2
    cores) that is ~1.3 s of system time: tuned, system time falls from ~2.1 s to ~0.8 s,
    the run from ~5.7 s to ~5.2 s, and peak RSS from 1.2 GB to 1.0 GB.  ``xproda run`` calls
    it (``--no-tune-malloc`` to skip).

    Parameters
    ----------
    trim_threshold : int, default 128 MiB
        Free memory (bytes) at the top of a heap that is kept for reuse instead of trimmed.
    mmap_threshold : int, default 32 MiB
        Blocks (bytes) from this size up get their own mapping, returned to the OS when
        freed; smaller ones come from the heap and are reused.
    arena_max : int, default 1
        Most malloc arenas; 0 leaves glibc's default (8 per core).  One arena keeps every
        thread's temporaries in one growing heap that is reused from task to task; the
        allocations of a run are few and large, so threads hardly wait on its lock.  It
        applies to threads that have no arena yet: call this before starting the work.

    Returns
    -------
    bool
        Whether every setting was applied: False where the C library is not glibc (macOS,
        Windows, musl), which leaves the allocator as it was.

    Notes
    -----
    Process-wide, and not undone by a later call: once set, glibc stops adapting its
    thresholds to the program.  The memory kept is bounded by ``trim_threshold``.  The same
    can be had without code through the environment variables ``MALLOC_TRIM_THRESHOLD_``,
    ``MALLOC_MMAP_THRESHOLD_`` and ``MALLOC_ARENA_MAX`` (e.g. for dask workers, in
    ``distributed.nanny.pre-spawn-environ``).
    """
    import ctypes
    import sys

    for name, value, unit in (("trim_threshold", trim_threshold, " (bytes)"),
                              ("mmap_threshold", mmap_threshold, " (bytes)"),
                              ("arena_max", arena_max, "")):
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ValueError(f"tune_malloc: {name} must be a non-negative int{unit}, got "
                             f"{value!r}")
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(None)
        mallopt = libc.mallopt
        libc.gnu_get_libc_version  # noqa: B018 - glibc only (musl's mallopt does nothing)
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    ok = mallopt(_M_MMAP_THRESHOLD, min(mmap_threshold, 2**31 - 1))
    ok = mallopt(_M_TRIM_THRESHOLD, min(trim_threshold, 2**31 - 1)) and ok
    if arena_max:
        ok = mallopt(_M_ARENA_MAX, min(arena_max, 2**31 - 1)) and ok
    global _MALLOC_TUNED
    _MALLOC_TUNED = _MALLOC_TUNED or bool(ok)
    return bool(ok)


#: the malloc environment of tuned dask worker processes (:func:`tune_malloc`'s defaults)
_WORKER_MALLOC = {"MALLOC_TRIM_THRESHOLD_": 128 * 2**20, "MALLOC_MMAP_THRESHOLD_": 32 * 2**20,
                  "MALLOC_ARENA_MAX": 1}
_ENVIRON_KEY = "distributed.nanny.pre-spawn-environ"


def dask_worker_config(*, profile: bool = False) -> dict[str, Any]:
    """dask config for worker processes that run xproda at full speed.

    dask.distributed starts worker processes with ``MALLOC_TRIM_THRESHOLD_=65536`` (config
    ``distributed.nanny.pre-spawn-environ``), which also freezes glibc's mmap threshold at
    128 KiB: every tensor or array above that is mapped, faulted in zero-filled and unmapped
    again. xproda's torch path allocates hundreds of such temporaries per model call, and a
    MAP fit on a worker ran 3.5-4x slower than in-process (millions of page faults, most of
    the time in the kernel); the workers' statistical profiler (a stack sample every 10 ms)
    costs another ~20 % on Python-heavy work. This config gives workers
    :func:`tune_malloc`'s settings from their start and turns the profiler off.

    Parameters
    ----------
    profile : bool, default False
        Keep the workers' statistical profiler (the dashboard's profile page).

    Returns
    -------
    dict
        For ``dask.config.set(...)`` around the creation of a cluster whose workers are
        started by nannies (``LocalCluster``, dask-jobqueue, ...); see :func:`local_cluster`.

    Examples
    --------
    >>> import dask, distributed, xproda
    >>> with dask.config.set(xproda.options.dask_worker_config()):  # doctest: +SKIP
    ...     cluster = distributed.LocalCluster(n_workers=4, threads_per_worker=1)
    """
    cfg: dict[str, Any] = {f"{_ENVIRON_KEY}.{k}": v for k, v in _WORKER_MALLOC.items()}
    if not profile:
        cfg["distributed.worker.profile.enabled"] = False
    return cfg


def local_cluster(n_workers: int | None = None, *, threads_per_worker: int = 1,
                  profile: bool = False, **kwargs: Any):
    """A ``distributed.LocalCluster`` whose workers run xproda at full speed.

    The cluster of :func:`dask_worker_config`: worker processes with :func:`tune_malloc`'s
    allocator settings and (by default) no statistical profiler. The nanny copies its
    environment settings into this process's ``os.environ`` (where an earlier default cluster
    may have left ``MALLOC_TRIM_THRESHOLD_=65536``, which would win over the config); they
    are set here for the start of the workers and restored afterwards (workers added later,
    by ``scale``/``adapt`` or an asynchronous start, are tuned by :func:`check_workers`).

    Parameters
    ----------
    n_workers : int, optional
        Worker processes (default: dask's choice).
    threads_per_worker : int, default 1
        Threads per worker (one: the workers are the parallelism).
    profile : bool, default False
        Keep the workers' statistical profiler.
    **kwargs
        Other ``LocalCluster`` arguments (``dashboard_address``, ``memory_limit``, ...).

    Returns
    -------
    distributed.LocalCluster
    """
    import dask
    from distributed import LocalCluster

    saved = {k: os.environ.get(k) for k in _WORKER_MALLOC}
    os.environ.update({k: str(v) for k, v in _WORKER_MALLOC.items()})
    try:
        with dask.config.set(dask_worker_config(profile=profile)):
            kwargs.setdefault("processes", True)
            return LocalCluster(n_workers=n_workers, threads_per_worker=threads_per_worker,
                                **kwargs)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


_MALLOC_TUNED = False


def _worker_malloc() -> dict[str, Any]:
    env: dict[str, Any] = {k: os.environ.get(k) for k in _WORKER_MALLOC}
    env["tuned"] = _MALLOC_TUNED
    return env


_CHECKED_CLIENTS: dict[str, list[str]] = {}


def check_workers(client, *, warn: bool = True, refresh: bool = False) -> list[str]:
    """Find the workers of ``client`` whose allocator makes xproda slow, and tune them (option
    ``tune_workers``, default) or warn.

    A worker started by a default nanny has ``MALLOC_TRIM_THRESHOLD_=65536`` and no
    ``MALLOC_MMAP_THRESHOLD_`` (see :func:`dask_worker_config`; any trim threshold without an
    mmap threshold freezes the latter at 128 KiB): model calls there ran up to
    ~4x slower. With ``tune_workers`` (default) :func:`tune_malloc` is applied on those
    workers through ``client.run`` -- a process-wide allocator setting of each worker, made
    from the client before any task runs, never inside a task -- else a ``RuntimeWarning``
    names the fix. Called by the sharded
    :func:`~xproda.sites.assimilation.problem.assimilate` and by
    :func:`~xproda.io.write_zarr` before they submit work to a client; the workers are asked
    once per client and set of workers.

    Parameters
    ----------
    client : distributed.Client
    warn : bool, default True
        Warn when the workers stay untuned (``tune_workers=False``, or tuning failed: not
        glibc).
    refresh : bool, default False
        Ask the workers again.

    Returns
    -------
    list of str
        Addresses of the workers that remain untuned.
    """
    import warnings

    key = f"{getattr(client, 'id', id(client))}:{sorted(client.nthreads())}"
    if key in _CHECKED_CLIENTS and not refresh:  # once per client and set of workers
        return _CHECKED_CLIENTS[key]
    try:
        env = client.run(_worker_malloc)
    except Exception:  # noqa: BLE001 - a client without workers or run(): nothing to check
        return []
    slow = [addr for addr, e in env.items() if _untuned(e)]
    trim = env[slow[0]]["MALLOC_TRIM_THRESHOLD_"] if slow else None
    if slow and current("tune_workers"):
        try:
            done = client.run(tune_malloc, workers=slow)
        except Exception:  # noqa: BLE001 - a worker left meanwhile: they stay untuned
            done = {}
        slow = [a for a in slow if not done.get(a)]
    _CHECKED_CLIENTS[key] = slow
    if slow and warn:
        warnings.warn(
            f"{len(slow)} of {len(env)} dask worker(s) run with MALLOC_TRIM_THRESHOLD_="
            f"{trim} and no MALLOC_MMAP_THRESHOLD_ (dask's default): glibc then maps and "
            "faults in every temporary over 128 KiB anew, and xproda's model calls run up "
            "to ~4x slower there (MAP fits measured 3.5-4x). Start the cluster with "
            "xproda.options.local_cluster(...) or inside "
            "dask.config.set(xproda.options.dask_worker_config()), call "
            "client.run(xproda.tune_malloc), or leave the option tune_workers=True",
            RuntimeWarning, stacklevel=3)
    return slow


def _untuned(env: Mapping[str, Any]) -> bool:
    """A trim threshold set (any value) without an mmap threshold freezes glibc's mmap
    threshold at 128 KiB -- unless tune_malloc ran in that process."""
    return (env.get("MALLOC_TRIM_THRESHOLD_") is not None
            and env.get("MALLOC_MMAP_THRESHOLD_") is None and not env.get("tuned"))


def passive_openmp() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` for this process and its children, if still possible.

    OpenMP threads (torch's parallel regions) spin for a while when they wait; on a shared
    machine the spinning threads of several processes take each other's time slices (see
    :mod:`xproda.models.parallel`). Passive waiting makes them sleep at once. Applied only
    when the variable is unset (the user's choice wins) and torch is not imported yet (the
    OpenMP runtime reads the variable once, when torch loads it). Called by
    ``import xproda``; worker processes started later (dask) inherit it.

    Returns
    -------
    bool
        Whether the variable was set.
    """
    if "OMP_WAIT_POLICY" in os.environ or "torch" in sys.modules:
        return False
    os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return True
