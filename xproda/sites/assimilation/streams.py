"""Per-site random streams: counter-based, so a site's draws depend on the seed and its id only.

A sampler that draws from one ``torch.Generator`` for the whole batch gives each site random
numbers that depend on its position and on every other site in the batch: adding a site,
splitting the sites into shards or running them on other workers changes the results. Here
every site (and every chain or start of a site) owns a **key**, derived from the seed and the
site's id by a stable hash, and a draw is a pure function of ``(key, counter, index)``:

* :func:`site_keys` -- one key per site from ``seed`` and the site ids (BLAKE2b of both,
  identical in every process and on every platform, unlike Python's ``hash``);
* :func:`derive` -- sub-keys for a purpose and a chain/start number (``derive(keys, "noise",
  chain)``);
* :func:`uniform` / :func:`normal` -- ``[B, n]`` draws of the rows' keys at a counter
  (e.g. the iteration number): SplitMix64 (Steele et al. 2014) of the key, the counter and
  the position, computed with vectorised integer arithmetic in torch on the keys' device.

Draws of different ``(key, counter)`` pairs are independent for practical purposes (the
64-bit mixer passes BigCrush as a counter-based generator); a row's draws never depend on
which other rows are in the batch, so a sampler that uses them gives identical results for a
site whatever the shard size, worker count or scheduler.

Examples
--------
>>> import torch
>>> keys = site_keys(["a", "b", "c"], seed=0)
>>> u = uniform(keys, counter=0, n=4)
>>> u.shape, bool(((u > 0) & (u < 1)).all())
(torch.Size([3, 4]), True)
>>> bool(torch.equal(uniform(keys[1:], 0, 4), u[1:]))   # a row's draws are its own
True
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["site_keys", "derive", "uniform", "normal", "mix"]

_M64 = (1 << 64) - 1


def _signed(x: int) -> int:
    """A 64-bit unsigned constant as the int64 torch stores."""
    x &= _M64
    return x - (1 << 64) if x >= (1 << 63) else x


_GOLDEN = _signed(0x9E3779B97F4A7C15)
_C1 = _signed(0xBF58476D1CE4E5B9)
_C2 = _signed(0x94D049BB133111EB)


def _shr(x: Tensor, s: int) -> Tensor:
    """Logical right shift of int64 (torch's ``>>`` is arithmetic)."""
    return (x >> s) & ((1 << (64 - s)) - 1)


def mix(x: Tensor) -> Tensor:
    """The SplitMix64 finaliser of int64 ``x`` (wrapping arithmetic), elementwise.

    Parameters
    ----------
    x : Tensor
        int64 values.

    Returns
    -------
    Tensor
        int64, a bijection of ``x`` with full avalanche.
    """
    z = x + _GOLDEN
    z = (z ^ _shr(z, 30)) * _C1
    z = (z ^ _shr(z, 27)) * _C2
    return z ^ _shr(z, 31)


def _hash64(*parts: Any) -> int:
    h = hashlib.blake2b(digest_size=8)
    for p in parts:
        h.update(str(p).encode("utf-8"))
        h.update(b"\x00")
    return _signed(int.from_bytes(h.digest(), "little"))


def site_keys(site_ids: Sequence[Any] | np.ndarray | None, seed: int, *, n: int | None = None,
              device: str | torch.device | None = None) -> Tensor:
    """One int64 key per site from the seed and the site's id.

    Parameters
    ----------
    site_ids : sequence or None
        Site identifiers (strings or integers; compared by their text, ``str(id)``). None:
        the positions ``0 .. n-1`` (results then depend on a site's position, not on the
        other sites).
    seed : int
        The run's seed.
    n : int, optional
        Number of sites when ``site_ids`` is None.
    device : str or torch.device, optional
        Device of the keys (that of the draws).

    Returns
    -------
    Tensor
        ``[S]`` int64.

    Raises
    ------
    ValueError
        If ``site_ids`` has repeated ids (two sites would share their random numbers), or
        neither ``site_ids`` nor ``n`` is given.
    """
    if site_ids is None:
        if n is None:
            raise ValueError("site_keys: give site_ids or n")
        ids = [f"#{i}" for i in range(int(n))]
    else:
        ids = [str(s) for s in np.asarray(site_ids, dtype=object).reshape(-1)]
        if len(set(ids)) != len(ids):
            seen: set[str] = set()
            dup = sorted({i for i in ids if i in seen or seen.add(i)})  # type: ignore[func-returns-value]
            raise ValueError(f"site ids must be unique to give each site its own random "
                             f"stream; repeated: {dup[:5]}")
    seed_key = _hash64("xproda-site-stream", int(seed))
    keys = torch.tensor([_hash64(seed_key, i) for i in ids], dtype=torch.int64)
    return keys.to(device) if device is not None else keys


def derive(keys: Tensor, purpose: str, index: int | Tensor = 0) -> Tensor:
    """Sub-keys of ``keys`` for a purpose (``"start"``, ``"noise"``, ...) and an index.

    Parameters
    ----------
    keys : Tensor
        ``[B]`` int64 keys.
    purpose : str
        What the draws are for; different purposes give independent streams.
    index : int or Tensor
        E.g. the chain or start number (a tensor broadcasts against ``keys``).

    Returns
    -------
    Tensor
        ``[B]`` int64.
    """
    tag = _hash64("xproda-purpose", purpose)
    idx = torch.as_tensor(index, dtype=torch.int64, device=keys.device)
    return mix(mix(keys ^ tag) + idx * _GOLDEN)


def _bits(keys: Tensor, counter: int | Tensor, n: int) -> Tensor:
    """``[B, n]`` int64 random words of ``keys`` ``[B]`` at ``counter``."""
    c = torch.as_tensor(counter, dtype=torch.int64, device=keys.device)
    k = mix(keys ^ mix(c))  # [B]
    pos = torch.arange(1, n + 1, dtype=torch.int64, device=keys.device) * _GOLDEN
    return mix(k[..., None] + pos)


def uniform(keys: Tensor, counter: int | Tensor, n: int, *, dtype=torch.float64) -> Tensor:
    """``[B, n]`` uniform draws in the open interval (0, 1) of each row's key at ``counter``.

    Parameters
    ----------
    keys : Tensor
        ``[B]`` int64 (e.g. :func:`derive` of :func:`site_keys`).
    counter : int or Tensor
        Position in the stream (an iteration number; a ``[B]`` tensor gives each row its
        own).
    n : int
        Draws per row.
    dtype : torch.dtype
        float64 (53 random bits) or float32.

    Returns
    -------
    Tensor
        ``[B, n]`` on the keys' device; never exactly 0 or 1.
    """
    b = _shr(_bits(keys, counter, n), 11)  # 53 bits
    u = (b.to(torch.float64) + 0.5) * (2.0 ** -53)
    return u.to(dtype)


def normal(keys: Tensor, counter: int | Tensor, n: int, *, dtype=torch.float64) -> Tensor:
    """``[B, n]`` standard normal draws (Box-Muller) of each row's key at ``counter``.

    Parameters
    ----------
    keys, counter, n, dtype
        As :func:`uniform`.

    Returns
    -------
    Tensor
        ``[B, n]``.
    """
    m = (n + 1) // 2
    u = uniform(keys, counter, 2 * m)
    r = torch.sqrt(-2.0 * torch.log(u[:, :m]))
    t = (2.0 * math.pi) * u[:, m:]
    z = torch.cat([r * torch.cos(t), r * torch.sin(t)], dim=1)[:, :n]
    return z.to(dtype)
