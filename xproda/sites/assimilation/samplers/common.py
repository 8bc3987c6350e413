"""Machinery shared by the samplers and optimisers: devices, generators, target calls, state.

Every method evaluates a batched target (:data:`Target`) through :func:`call_target`, draws
its random numbers from :func:`make_generator`, and keeps its state in a :class:`State` that
:func:`save_state`/:func:`load_state` write to and read from a checkpoint
(:mod:`xproda.sites.assimilation.checkpoint`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import torch
from torch import Tensor

from xproda.errors import CheckpointError
from xproda.sites.assimilation.checkpoint import (
    load_checkpoint,
    normalize_settings,
    save_checkpoint,
)

__all__ = [
    "Target",
    "resolve_device",
    "make_generator",
    "call_target",
    "init_tensor",
    "hash_tensor",
    "progress_bar",
    "State",
    "save_state",
    "load_state",
]

_F64 = torch.float64

#: a batched target: ``fn(theta[B, P])`` -> values ``[B]`` (or a (values, prediction) pair)
Target = Callable[[Tensor], Any]


def resolve_device(device: str | torch.device | None) -> torch.device:
    """The computation device: ``device``, else the ``device`` option, else the CPU.

    Parameters
    ----------
    device : str, torch.device or None
        The device asked for; None reads :func:`xproda.get_options`.

    Returns
    -------
    torch.device

    Examples
    --------
    >>> resolve_device("cpu")
    device(type='cpu')
    """
    if device is None:
        from xproda.options import get_options

        device = get_options().get("device") or "cpu"
    return torch.device(device)


def make_generator(seed: int, device: torch.device) -> torch.Generator:
    """A ``torch.Generator`` on ``device`` seeded with ``seed``.

    Parameters
    ----------
    seed : int
        The seed.
    device : torch.device
        Device of the generator (that of the tensors it fills).

    Returns
    -------
    torch.Generator
    """
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def call_target(fn: Target, theta: Tensor, n: int, what: str) -> tuple[Tensor, Tensor | None]:
    """Call a batched target; returns (values [n] float64, optional extra [n, ...]).

    Parameters
    ----------
    fn : Target
        The target; it returns one value per row, or a (values, prediction) pair.
    theta : Tensor
        The batch ``[n, P]``.
    n : int
        Number of rows.
    what : str
        Name of the target in error messages (``"cost"``, ``"log_density"``).

    Returns
    -------
    values : Tensor
        ``[n]`` float64 on the device of ``theta``.
    extra : Tensor or None
        The prediction as ``[n, L]`` float64, if ``fn`` returned a pair.

    Raises
    ------
    ValueError
        If ``fn`` returns a tuple that is not a pair, or not one value per row.

    Examples
    --------
    >>> import torch
    >>> v, extra = call_target(lambda th: th.sum(-1), torch.ones(3, 2), 3, "cost")
    >>> v.tolist(), extra
    ([2.0, 2.0, 2.0], None)
    """
    out = fn(theta)
    extra = None
    if isinstance(out, tuple):
        if len(out) != 2:
            raise ValueError(f"{what} must return a tensor or a (value, prediction) pair")
        out, extra = out
        extra = torch.as_tensor(extra, device=theta.device).to(_F64).reshape(n, -1)
    val = torch.as_tensor(out, device=theta.device)
    if val.numel() != n:
        raise ValueError(
            f"{what} returned {val.numel()} values for a batch of {n} rows; it must return "
            "one value per row, shape [B]"
        )
    return val.to(_F64).reshape(n), extra


def init_tensor(init: Any, device: torch.device) -> Tensor | None:
    """The ``init=`` argument of a method as a float64 tensor on ``device`` (None stays None).

    Parameters
    ----------
    init : array_like or None
        Starting points.
    device : torch.device
        Target device.

    Returns
    -------
    Tensor or None
    """
    if init is None:
        return None
    return torch.as_tensor(init, dtype=_F64, device=device)


def hash_tensor(x: Tensor | None) -> str | None:
    """SHA-1 of a tensor's float64 values (None for None), to record it in the settings.

    Parameters
    ----------
    x : Tensor or None
        The tensor (any device).

    Returns
    -------
    str or None
        The hex digest.
    """
    if x is None:
        return None
    return hashlib.sha1(x.detach().to("cpu", _F64).contiguous().numpy().tobytes()).hexdigest()


def progress_bar(progress: bool, total: int, initial: int, desc: str):
    """A tqdm progress bar of ``total`` iterations from ``initial`` (disabled if not ``progress``).

    Parameters
    ----------
    progress : bool
        Show the bar.
    total, initial : int
        Iterations in all, and already done (a resumed run).
    desc : str
        Label of the bar.

    Returns
    -------
    tqdm.tqdm
    """
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, disable=not progress, desc=desc, unit="it",
                dynamic_ncols=True, leave=False)


def _check_resume_settings(meta: Mapping[str, Any], settings: Mapping[str, Any], path: Any):
    old = meta.get("settings")
    new = normalize_settings(settings)
    if old != new:
        diff = sorted(k for k in set(old or {}) | set(new) if (old or {}).get(k) != new.get(k))
        raise ValueError(
            f"checkpoint {path} was written with different settings ({', '.join(diff)}); "
            "use resume=False or a new checkpoint path"
        )


class State(dict):
    """A dict of tensors with attribute access (serialised as-is into checkpoints).

    Examples
    --------
    >>> import torch
    >>> st = State(n=torch.zeros(2))
    >>> st.n = st.n + 1
    >>> st["n"].tolist()
    [1.0, 1.0]
    """

    __getattr__ = dict.__getitem__

    def __setattr__(self, key: str, value: Any) -> None:
        self[key] = value


def save_state(path: Any, st: State, gen: torch.Generator, settings: Mapping, scalars: Mapping):
    """Write a method's state, its generator state and settings to a checkpoint.

    Parameters
    ----------
    path : path-like
        Checkpoint file (see :func:`xproda.sites.assimilation.checkpoint.save_checkpoint`).
    st : State
        The tensors of the state.
    gen : torch.Generator
        The generator, whose state is saved as ``rng_state``.
    settings : mapping
        The method's settings (compared on resume).
    scalars : mapping
        Other JSON metadata (e.g. ``iteration``).
    """
    tensors = dict(st)
    tensors["rng_state"] = gen.get_state()
    save_checkpoint(path, tensors, {"settings": normalize_settings(settings), **scalars})


def load_state(path: Any, gen: torch.Generator, settings: Mapping, device: torch.device,
               *, trust_unverified: bool = False) -> tuple[State, dict[str, Any]]:
    """Read a checkpoint written by :func:`save_state` and restore the generator state.

    Parameters
    ----------
    path : path-like
        Checkpoint file.
    gen : torch.Generator
        Generator whose state is set from the checkpoint.
    settings : mapping
        The settings of the run being resumed; they must equal the checkpoint's.
    device : torch.device
        Device of the loaded tensors.
    trust_unverified : bool, default False
        Accept a checkpoint without a content hash, or whose hash does not match (see
        :func:`~xproda.sites.assimilation.checkpoint.verify_checkpoint`); only for files
        whose origin you trust.

    Returns
    -------
    state : State
        The state tensors.
    meta : dict
        The checkpoint's metadata (``settings``, ``iteration``, ...).

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CheckpointError
        If the file is unreadable, truncated, foreign, has no content hash or does not
        match it (:func:`~xproda.sites.assimilation.checkpoint.load_checkpoint`).
    ValueError
        If the checkpoint was written with different settings.
    """
    tensors, meta = load_checkpoint(path, device=device, trust_unverified=trust_unverified)
    if "rng_state" not in tensors:
        raise CheckpointError(f"checkpoint {str(path)!r} has no 'rng_state' tensor: not a "
                              "sampler state written by save_state")
    _check_resume_settings(meta, settings, path)
    gen.set_state(tensors.pop("rng_state"))
    return State(tensors), meta
