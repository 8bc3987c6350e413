"""Independent tasks of a cross-validation on a dask scheduler, with the same results as serial.

:func:`xproda.learning.validation.cross_validate` cuts its work into tasks (the site-level DA
of a fold, then each fold x method) and hands them to :func:`run_tasks`, which runs them

- one after another in the calling thread (``scheduler="synchronous"``, the serial path);
- on dask's local threads or processes (``"threads"``, ``"processes"``);
- on a ``dask.distributed`` cluster (a ``Client`` passed in, or the active one).

``scheduler=None`` takes the active scheduler: dask's ``scheduler`` config if set (a
``Client`` sets it when it becomes the default), else the default ``Client`` if there is one,
else ``"threads"``.

Same results whatever the scheduler
-----------------------------------
A task's result depends only on its arguments: each task seeds its own random streams (the
fold's seed), reads no shared mutable state, and runs its computations with the xproda options
of the caller (captured when the tasks are made, entered with
:class:`xproda.options.use_options` inside the task), so the serial path and every scheduler
give the same numbers; the caller assembles the results in fold and method order, never in
completion order.

Threads inside a task
---------------------
Tasks that run side by side must not each spread over every core. ``threads`` sets, inside
each task, torch's intra-op threads and the compiled kernels' threads (the ``kernel_threads``
option, :mod:`xproda.models.parallel`). By default it is the cores divided by the local
scheduler's workers (1 on a 2-core machine) for ``"threads"`` and ``"processes"``, and left to
the worker's settings on a distributed cluster (``distributed`` starts its worker processes
with ``OMP_NUM_THREADS=1`` and the kernels use 1 thread off the main thread). The serial path
leaves the caller's settings unless ``threads`` is given. torch's thread count is not
context-local: a task that changes it changes it for its own (worker) thread only, and
restores it when it ends; threads that first use torch while such a task runs inherit the
task's count as their default (torch's rule). The compiled kernels give bit-identical results
for any thread count (:mod:`xproda.models.parallel`); torch's CPU operations in training and
DA gave bit-identical results with 2 threads (the serial run on a 2-core machine) and 1 per
task (the threaded and distributed runs) in ``tests/test_cv_parallel.py``. For a guarantee
that does not rest on torch, pass the same ``threads`` to every run.

Progress
--------
With ``progress=True`` a line per finished task: its label, its own run time and the count
of finished tasks (printed by the calling process, also for a distributed cluster).
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from xproda.options import get_options, use_options

__all__ = ["Ref", "Task", "run_tasks", "resolve_scheduler", "task_context", "SCHEDULERS"]

#: Scheduler names accepted besides ``None`` and a ``distributed.Client``.
SCHEDULERS = ("synchronous", "sync", "single-threaded", "threads", "threading", "processes",
              "multiprocessing", "distributed", "dask.distributed")
_SERIAL = ("synchronous", "sync", "single-threaded")
_LOCAL = {"threads": "threads", "threading": "threads", "processes": "processes",
          "multiprocessing": "processes"}


@dataclass(frozen=True)
class Ref:
    """A positional argument of a :class:`Task`: a shared object or another task's result."""

    key: str


@dataclass
class Task:
    """One unit of work: ``fn(*args, **kwargs)`` with :class:`Ref` arguments resolved.

    ``fn`` must be a module-level function (pickled by reference for process workers).
    """

    key: str
    label: str
    fn: Callable[..., Any]
    args: tuple = ()
    kwargs: dict = field(default_factory=dict)


def _client_or_none() -> Any:
    from xproda.io.writer import distributed_client

    return distributed_client()


def resolve_scheduler(scheduler: Any = None) -> tuple[str, Any]:
    """The kind of scheduler to use and its handle.

    Parameters
    ----------
    scheduler : None, str or distributed.Client
        See the module docstring.

    Returns
    -------
    kind : {"synchronous", "threads", "processes", "distributed"}
    handle : distributed.Client or None

    Raises
    ------
    ValueError
        An unknown name, or ``"distributed"`` without an active ``Client``.
    """
    if scheduler is None:
        import dask

        cfg = dask.config.get("scheduler", None)
        if isinstance(cfg, str) and cfg in ("dask.distributed", "distributed"):
            scheduler = "distributed"
        elif isinstance(cfg, str):
            scheduler = cfg
        elif cfg is not None:  # a get function (e.g. a Client's): ask for the client
            client = _client_or_none()
            scheduler = client if client is not None else "threads"
        else:
            client = _client_or_none()
            scheduler = client if client is not None else "threads"
    if isinstance(scheduler, str):
        if scheduler in _SERIAL:
            return "synchronous", None
        if scheduler in _LOCAL:
            return _LOCAL[scheduler], None
        if scheduler in ("distributed", "dask.distributed"):
            client = _client_or_none()
            if client is None:
                raise ValueError("scheduler='distributed': no active dask.distributed Client; "
                                 "start one (distributed.Client(...)) or pass it as scheduler=")
            return "distributed", client
        raise ValueError(f"scheduler: expected None, a distributed.Client or one of "
                         f"{SCHEDULERS}, found {scheduler!r}")
    if hasattr(scheduler, "submit") and hasattr(scheduler, "gather"):
        return "distributed", scheduler
    raise ValueError(f"scheduler: expected None, a distributed.Client or one of {SCHEDULERS}, "
                     f"found {type(scheduler).__name__}")


def default_threads(kind: str) -> int | None:
    """Threads per task when ``threads`` is not given (see the module docstring)."""
    if kind in ("threads", "processes"):
        import dask

        from xproda.models.parallel import available_cores

        cores = available_cores()
        workers = dask.config.get("num_workers", None) or cores
        return max(1, cores // int(workers))
    return None


class task_context:
    """Inside a task: the caller's xproda options, and ``threads`` torch and kernel threads.

    Parameters
    ----------
    options : mapping
        xproda options captured by the caller (:func:`xproda.options.get_options`).
    threads : int or None
        torch intra-op threads and ``kernel_threads`` inside the task (None: unchanged).
    """

    def __init__(self, options: Mapping[str, Any], threads: int | None) -> None:
        opts = dict(options)
        if threads is not None:
            opts["kernel_threads"] = int(threads)
        self._use = use_options(opts)
        self._threads = threads
        self._restore: int | None = None

    def __enter__(self) -> None:
        if self._threads is not None:
            import torch

            prev = torch.get_num_threads()
            if prev != self._threads:
                torch.set_num_threads(int(self._threads))  # this thread's OpenMP team
                self._restore = prev
        self._use.__enter__()

    def __exit__(self, *exc: object) -> None:
        self._use.__exit__(*exc)
        if self._restore is not None:
            import torch

            torch.set_num_threads(self._restore)
            self._restore = None


def _run(fn: Callable[..., Any], options: Mapping[str, Any], threads: int | None,
         results_at: tuple[int, ...], kwargs: Mapping[str, Any], *args: Any
         ) -> tuple[Any, float]:
    """The body of every task: ``(fn(*args, **kwargs), seconds)`` in :class:`task_context`.

    The positional arguments at ``results_at`` are other tasks' ``(result, seconds)``: their
    results are passed on. ``kwargs`` travel as one positional mapping, so their names never
    meet those of ``dask.delayed`` or ``Client.submit``.
    """
    args = tuple(a[0] if i in results_at else a for i, a in enumerate(args))
    with task_context(options, threads):
        t0 = time.perf_counter()
        out = fn(*args, **kwargs)
        return out, time.perf_counter() - t0


def _seconds(result: tuple[Any, float]) -> tuple[None, float]:
    return None, result[1]


def run_tasks(
    tasks: Sequence[Task],
    shared: Mapping[str, Any],
    *,
    scheduler: Any = None,
    threads: int | None = None,
    progress: bool = False,
    prefix: str = "",
    keep: Sequence[str] | None = None,
) -> dict[str, tuple[Any, float]]:
    """Run ``tasks`` (in dependency order: a :class:`Ref` names an earlier task or a shared object).

    Parameters
    ----------
    tasks : sequence of Task
        Keys distinct from each other and from ``shared``'s.
    shared : mapping
        Objects that several tasks read (sent to a distributed cluster once).
    scheduler : None, str or distributed.Client, keyword-only
        See :func:`resolve_scheduler`.
    threads : int, keyword-only, optional
        torch and kernel threads inside each task (default :func:`default_threads`).
    progress : bool, keyword-only
        A line per finished task.
    prefix : str, keyword-only
        Start of the progress lines.
    keep : sequence of str, keyword-only, optional
        Keys of the tasks whose results the caller needs (default all); the others return
        ``None`` and their seconds (on a cluster their results stay on the workers).

    Returns
    -------
    dict
        ``key -> (result, seconds)`` of every task (seconds: the task's own run time).
    """
    kind, client = resolve_scheduler(scheduler)
    if threads is not None and (isinstance(threads, bool) or int(threads) != threads
                                or threads < 1):
        raise ValueError(f"threads: expected None or an int >= 1, found {threads!r}")
    if threads is None:
        threads = default_threads(kind)
    keys = [t.key for t in tasks]
    if len(set(keys)) != len(keys) or set(keys) & set(shared):
        raise ValueError("task keys must be distinct and differ from the shared objects'")
    kept = set(keys if keep is None else keep)
    options = get_options()
    n = len(tasks)
    done = [0]
    labels = {t.key: t.label for t in tasks}
    lock = threading.Lock()

    def report(key: str, seconds: float) -> None:
        if progress:
            with lock:
                done[0] += 1
                print(f"{prefix}{labels[key]} done in {seconds:.1f} s [{done[0]}/{n}]",
                      flush=True)

    def where(task: Task) -> tuple[int, ...]:
        return tuple(i for i, a in enumerate(task.args)
                     if isinstance(a, Ref) and a.key not in shared)

    def trimmed(values: dict[str, tuple[Any, float]]) -> dict[str, tuple[Any, float]]:
        return {k: (v if k in kept else _seconds(v)) for k, v in values.items()}

    if kind == "synchronous":
        results: dict[str, tuple[Any, float]] = {}
        for t in tasks:
            args = [shared[a.key] if isinstance(a, Ref) and a.key in shared
                    else results[a.key] if isinstance(a, Ref) else a for a in t.args]
            results[t.key] = _run(t.fn, options, threads, where(t), t.kwargs, *args)
            report(t.key, results[t.key][1])
        return trimmed(results)

    run_id = uuid.uuid4().hex[:12]
    name = {k: f"{k}-{run_id}" for k in list(shared) + keys}  # unique on a shared cluster
    by_name = {name[k]: k for k in keys}
    if kind == "distributed":
        from distributed import as_completed

        refs: dict[str, Any] = {k: client.scatter(v, hash=False) for k, v in shared.items()}
        fetch = {}
        for t in tasks:
            args = [refs[a.key] if isinstance(a, Ref) else a for a in t.args]
            refs[t.key] = client.submit(_run, t.fn, options, threads, where(t), t.kwargs,
                                        *args, key=name[t.key], pure=False)
            fetch[t.key] = refs[t.key] if t.key in kept else client.submit(
                _seconds, refs[t.key], key=f"{name[t.key]}-seconds", pure=False)
        back = {f.key: k for k, f in fetch.items()}
        values = {}
        for f, value in as_completed(list(fetch.values()), with_results=True):
            values[back[f.key]] = value
            report(back[f.key], value[1])
        return {k: values[k] for k in keys}

    import dask
    from dask.callbacks import Callback

    nodes: dict[str, Any] = {k: dask.delayed(v, traverse=False, name=name[k])
                             for k, v in shared.items()}
    for t in tasks:
        args = [nodes[a.key] if isinstance(a, Ref) else a for a in t.args]
        nodes[t.key] = dask.delayed(_run, pure=False, traverse=False)(
            t.fn, options, threads, where(t), t.kwargs, *args, dask_key_name=name[t.key])

    def posttask(key: Any, result: Any, dsk: Any, state: Any, worker_id: Any) -> None:
        if key in by_name:
            report(by_name[key], result[1])

    with Callback(posttask=posttask):
        values = dask.compute(*[nodes[k] for k in keys], scheduler=kind)
    return trimmed(dict(zip(keys, values)))
