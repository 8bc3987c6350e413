"""One writer per store: a lock object beside the store.

Every resumable write (:func:`xproda.io.write_zarr`, ``xproda run``,
:func:`xproda.xr.transient.write_simulation`) holds :func:`store_lock` for its whole duration,
from the first look at an existing store to the final completion flag.  The lock is a small
JSON object ``<store>.lock`` *beside* the store (so that replacing the store keeps it) naming
the holder: host, process id, user, start time, command.

- A second writer gets :class:`~xproda.errors.StoreLockedError` naming the store, the lock
  object and the holder.
- A lock whose holder is a dead process on this host (a killed run) is stale: it is taken
  over, atomically, and the takeover is reported with a warning.
- A lock held from another host cannot be checked: the error says so and names the file to
  delete once that run is known to be gone.

Local disks: the lock is created with ``O_CREAT | O_EXCL`` (atomic, also on NFS v3+).  Object
stores (S3, GCS) have no atomic create-if-absent: there the lock is written, read back and
compared (the last writer wins a race of a few milliseconds); it protects against the common
mistakes (two jobs started on the same output), not against adversarial timing.
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import socket
import sys
import time
import uuid
import warnings
from collections.abc import Iterator
from typing import Any

from xproda.errors import StoreLockedError
from xproda.io.stores import Target, read_json

__all__ = ["store_lock", "lock_holder", "lock_path", "LOCK_SUFFIX"]

#: Suffix of the lock object beside a store: ``run.zarr`` -> ``run.zarr.lock``.
LOCK_SUFFIX = ".lock"


def lock_path(target: Target) -> str:
    """Location of the lock object of ``target`` (its URL plus :data:`LOCK_SUFFIX`).

    Parameters
    ----------
    target : Target

    Returns
    -------
    str
    """
    return target.url + LOCK_SUFFIX


def _lock_fs(target: Target) -> tuple[Any, str]:
    fs, root = target.fs()
    return fs, root + LOCK_SUFFIX


def lock_holder(target: Target) -> dict[str, Any] | None:
    """The holder of the store's lock (host, pid, user, started, command), or None.

    Parameters
    ----------
    target : Target

    Returns
    -------
    dict or None
        The lock's JSON content (``{"unreadable": True}`` if it cannot be parsed); None when
        the store is not locked.
    """
    fs, path = _lock_fs(target)
    out = read_json(fs, path, invalid={"unreadable": True})
    if out is None or isinstance(out, dict):
        return out
    return {"unreadable": True}


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def _is_stale(holder: dict[str, Any]) -> bool:
    """Whether the holder is a process of this host that no longer exists."""
    if holder.get("host") != socket.gethostname():
        return False
    pid = holder.get("pid")
    return isinstance(pid, int) and not _pid_alive(pid)


def _describe(holder: dict[str, Any]) -> str:
    if holder.get("unreadable"):
        return "an unreadable lock"
    age = time.time() - float(holder.get("started", time.time()))
    return (f"process {holder.get('pid')} of {holder.get('user', '?')} on host "
            f"{holder.get('host', '?')}, started {age:.0f} s ago ({holder.get('command', '?')})")


def _create_local(path: str, data: bytes) -> bool:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    try:
        fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return True


def _acquire(target: Target, me: dict[str, Any]) -> None:
    fs, path = _lock_fs(target)
    data = json.dumps(me, sort_keys=True).encode()
    for _ in range(3):
        if target.is_local:
            if _create_local(path, data):
                return
        else:
            if lock_holder(target) is None:
                fs.pipe_file(path, data)
                time.sleep(0.05)
                if (lock_holder(target) or {}).get("token") == me["token"]:
                    return
        holder = lock_holder(target)
        if holder is None:
            continue  # released in the meantime: try again
        if _is_stale(holder):
            # take over atomically: only one of several takers renames the stale lock away
            stale = f"{path}.{me['token']}.stale"
            try:
                if target.is_local:
                    os.rename(path, stale)
                    moved = read_json(fs, stale, invalid={}) or {}
                    if moved.get("token") != holder.get("token"):
                        # another taker replaced the stale lock first: that lock is live,
                        # put it back (no-clobber) and look again
                        with contextlib.suppress(FileExistsError):
                            os.link(stale, path)
                    os.remove(stale)
                else:
                    fs.rm_file(path)
            except FileNotFoundError:
                continue
            warnings.warn(
                f"{target.url}: took over the lock {lock_path(target)!r} of a run that no "
                f"longer exists ({_describe(holder)})", RuntimeWarning, stacklevel=4)
            continue
        raise StoreLockedError(
            f"store {target.url!r} is being written by another run: {_describe(holder)}. "
            f"Wait for it to finish, or, if that run is gone (another host cannot be "
            f"checked from here), delete the lock {lock_path(target)!r} and resume")
    raise StoreLockedError(f"store {target.url!r}: could not take the lock "
                           f"{lock_path(target)!r} (contended)")


def _release(target: Target, token: str) -> None:
    fs, path = _lock_fs(target)
    holder = lock_holder(target)
    if holder is None or holder.get("token") != token:
        return  # taken over or removed by hand: not ours any more
    with contextlib.suppress(FileNotFoundError):
        if target.is_local:
            os.remove(path)
        else:
            fs.rm_file(path)


@contextlib.contextmanager
def store_lock(target: Target, *, command: str | None = None) -> Iterator[dict[str, Any]]:
    """Hold the write lock of a store for the duration of a ``with`` block.

    Parameters
    ----------
    target : Target
        The store (it need not exist yet).
    command : str, optional
        What holds the lock, shown to a second writer (default: the process's command line).

    Yields
    ------
    dict
        The lock's content (host, pid, user, started, command, token).

    Raises
    ------
    StoreLockedError
        If another live process holds the lock (message names the store, the lock and the
        holder).
    """
    try:
        user = getpass.getuser()
    except Exception:  # noqa: BLE001 - no user name in some containers
        user = str(os.getuid()) if hasattr(os, "getuid") else "?"
    me = {
        "host": socket.gethostname(), "pid": os.getpid(), "user": user,
        "started": time.time(), "token": uuid.uuid4().hex,
        "command": command or " ".join(os.path.basename(a) if i == 0 else a
                                       for i, a in enumerate(sys.argv))[:200],
    }
    _acquire(target, me)
    try:
        yield me
    finally:
        _release(target, me["token"])
