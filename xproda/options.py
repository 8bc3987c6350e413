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
           "passive_openmp", "DEFAULTS"]

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
}
_EXPECTED = {
    "device": "None, a device string ('cpu', 'cuda:0') or a torch.device",
    "dtype": "'float64' or 'float32'",
    "torch_threads": "None or an int >= 1",
    "kernel_batch_size": "an int >= 1",
    "kernel_threads": "None or an int >= 1",
    "fused_kernels": "True or False",
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
        count when called from the main thread, 1 from any other thread (dask workers).
        Results do not depend on it.
    fused_kernels : bool
        Use the fused numba CPU kernels (structured solve, PCHIP mapping) when no gradient is
        needed (default True); results equal the torch paths to rounding.

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
    return bool(ok)


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
