"""Machinery shared by the samplers and optimisers: devices, generators, target calls, state.

Every method evaluates a batched target (:data:`Target`) through :func:`call_target`, draws
its random numbers from per-site streams (:mod:`xproda.sites.assimilation.streams`, keyed by
the seed and the site ids; :func:`hash_ids` records the ids in the settings) or, for
methods that are not per site, from :func:`make_generator`, and keeps its state in a
:class:`State` that :func:`save_state`/:func:`load_state` write to and read from a checkpoint
(:mod:`xproda.sites.assimilation.checkpoint`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np
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
    "hash_ids",
    "ordered_sum",
    "matmul_bt",
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


def ordered_sum(x: Tensor, dim: int) -> Tensor:
    """Sum over ``dim`` in index order, ``((0 + x_0) + x_1) + ...``, element by element.

    torch's reductions choose their summation order from the shapes, strides and threads
    (a sum over the chains of ``[sites, chains, P]`` rounds differently for 1 site than for
    10), so a site's sum could depend on the rest of the batch. Here every output element
    depends on its own inputs only: a loop of elementwise additions for short dimensions, a
    sequential ``cumsum`` (same order) for long ones.

    Parameters
    ----------
    x : Tensor
        Values (floating).
    dim : int
        Dimension summed.

    Returns
    -------
    Tensor
        ``x`` without ``dim``.

    Examples
    --------
    >>> import torch
    >>> x = torch.tensor([[1e16, 1.0, -1e16], [1.0, 2.0, 3.0]], dtype=torch.float64)
    >>> ordered_sum(x, 1).tolist()   # ((1e16 + 1) - 1e16): left to right
    [0.0, 6.0]
    """
    x = x.movedim(dim, 0)
    if x.shape[0] > 32:
        return x.cumsum(0)[-1]
    acc = torch.zeros(x.shape[1:], dtype=x.dtype, device=x.device)
    for i in range(x.shape[0]):
        acc += x[i]
    return acc


def _matmul_bt_kernel(a, bt, out):  # pragma: no cover - numba
    """out[n, i, j] = sum_q a[n, i, q] * bt[n, q, j], q ascending (separate multiply, add)."""
    nb, ni, nq = a.shape
    nj = bt.shape[2]
    for n in range(nb):
        for i in range(ni):
            for j in range(nj):
                out[n, i, j] = 0.0
            for q in range(nq):
                x = a[n, i, q]
                for j in range(nj):
                    out[n, i, j] += x * bt[n, q, j]


_KERNELS: dict[str, Any] = {}


def matmul_bt(a: Tensor, b: Tensor, *, out: Tensor | None = None) -> Tensor:
    """Batched ``a @ b^T`` (``[N, I, Q] x [N, J, Q] -> [N, I, J]``), row by row reproducible.

    ``torch.bmm`` on the CPU (MKL) rounds differently for some shapes depending on the
    number of matrices in the batch, so a site's proposals would depend on the batch. Here
    every element is ``((0 + a_0 b_0) + a_1 b_1) + ...`` (products rounded, then added, in
    the order of ``q``): a compiled loop on the CPU (numba, with the ``fused_kernels``
    option), else the same arithmetic in torch (a loop over ``q``); on other devices
    ``torch.bmm`` (fast, without that guarantee).

    Parameters
    ----------
    a : Tensor
        ``[N, I, Q]`` float64.
    b : Tensor
        ``[N, J, Q]`` float64.
    out : Tensor, optional
        ``[N, I, J]`` destination (any strides; not overlapping ``a`` or ``b``).

    Returns
    -------
    Tensor
        ``[N, I, J]`` (``out`` if given).

    Examples
    --------
    >>> import torch
    >>> a = torch.arange(6.0, dtype=torch.float64).view(1, 2, 3)
    >>> matmul_bt(a, a).tolist()
    [[[5.0, 14.0], [14.0, 50.0]]]
    """
    if out is None:
        out = torch.empty(a.shape[0], a.shape[1], b.shape[1], dtype=a.dtype, device=a.device)
    if a.device.type != "cpu":
        return out.copy_(torch.bmm(a, b.transpose(1, 2)))
    kernel = None
    from xproda.options import current

    if current("fused_kernels") and a.dtype == torch.float64 and b.dtype == torch.float64:
        if "matmul_bt" not in _KERNELS:
            from xproda.models.fused import HAVE_NUMBA, jit_kernel

            _KERNELS["matmul_bt"] = (jit_kernel(_matmul_bt_kernel, nogil=True)
                                     if HAVE_NUMBA else None)
        kernel = _KERNELS["matmul_bt"]
    if kernel is not None:
        kernel(a.detach().numpy(), b.detach().transpose(1, 2).contiguous().numpy(),
               out.detach().numpy())
        return out
    out.zero_()
    for q in range(a.shape[2]):
        out += a[:, :, q, None] * b[:, None, :, q]
    return out


def hash_ids(site_ids: Any) -> str | None:
    """SHA-1 of the site ids as text (None for None), to record them in the settings.

    Parameters
    ----------
    site_ids : sequence or None
        Site ids (compared as ``str(id)``, as :func:`xproda.sites.assimilation.streams.site_keys`
        does).

    Returns
    -------
    str or None
        The hex digest.

    Examples
    --------
    >>> hash_ids(["a", 1]) == hash_ids(["a", "1"]), hash_ids(None)
    (True, None)
    """
    if site_ids is None:
        return None
    h = hashlib.sha1()
    for i in np.asarray(site_ids, dtype=object).reshape(-1):
        h.update(str(i).encode("utf-8"))
        h.update(b"\x00")
    return h.hexdigest()


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


#: marks checkpoints whose random numbers come from the per-site streams (the state is
#: then the iteration counter); checkpoints of the earlier single-generator samplers lack it
RANDOM_STREAMS = "per-site-v1"


def save_state(path: Any, st: State, settings: Mapping, scalars: Mapping) -> None:
    """Write a method's state and settings to a checkpoint.

    The random numbers need no state of their own: they are functions of the seed, the
    site ids (both in ``settings``) and a counter (the ``iteration`` in ``scalars``).

    Parameters
    ----------
    path : path-like
        Checkpoint file (see :func:`xproda.sites.assimilation.checkpoint.save_checkpoint`).
    st : State
        The tensors of the state.
    settings : mapping
        The method's settings (compared on resume).
    scalars : mapping
        Other JSON metadata (e.g. ``iteration``).
    """
    save_checkpoint(path, dict(st), {"settings": normalize_settings(settings),
                                     "random_streams": RANDOM_STREAMS, **scalars})


def load_state(path: Any, settings: Mapping, device: torch.device,
               *, trust_unverified: bool = False) -> tuple[State, dict[str, Any]]:
    """Read a checkpoint written by :func:`save_state`.

    Parameters
    ----------
    path : path-like
        Checkpoint file.
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
        match it (:func:`~xproda.sites.assimilation.checkpoint.load_checkpoint`), or was
        written by a sampler of an earlier version (one random generator for all sites:
        such a run cannot be continued with per-site streams).
    ValueError
        If the checkpoint was written with different settings.
    """
    tensors, meta = load_checkpoint(path, device=device, trust_unverified=trust_unverified)
    if meta.get("random_streams") != RANDOM_STREAMS:
        if "rng_state" in tensors:
            raise CheckpointError(
                f"checkpoint {str(path)!r} was written by an earlier version of the sampler, "
                "which drew the random numbers of all sites from one generator; it cannot be "
                "resumed with the per-site random streams of this version (results would "
                "differ from an uninterrupted run): run again with resume=False or a new "
                "checkpoint path")
        raise CheckpointError(f"checkpoint {str(path)!r} has no 'random_streams' entry: not "
                              "a sampler state written by save_state")
    _check_resume_settings(meta, settings, path)
    return State(tensors), meta
