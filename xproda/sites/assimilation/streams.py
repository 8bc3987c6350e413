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
    """``[B, n]`` int64 random words of ``keys`` ``[B]`` at ``counter`` (reference version)."""
    pos = torch.arange(1, n + 1, dtype=torch.int64, device=keys.device) * _GOLDEN
    return mix(_row_keys(keys, counter)[..., None] + pos)


def _row_keys(keys: Tensor, counter: int | Tensor) -> Tensor:
    """The key of each row at ``counter``, ``[B]``."""
    c = torch.as_tensor(counter, dtype=torch.int64, device=keys.device)
    return mix(keys ^ mix(c))


# Speed. The dozen 64-bit integer passes of the mixer are the cost of a uniform. On the CPU
# the work goes in blocks of rows of about ``_BLOCK`` values, so that every pass runs in the
# cache (fresh [B, n] temporaries per operation would cost more in allocation and page
# faults than the arithmetic). A compiled kernel (numba, when available and the
# ``fused_kernels`` option is on) makes a block's uniforms in one pass; otherwise torch does,
# every operation in place. Integer arithmetic and the exact conversion ``(b + 0.5) 2^-53``
# give the same bits on both paths. Box-Muller's arithmetic always runs in torch (the same
# functions on every path, so the same bits), on the block's contiguous position-major
# uniforms. Every step is elementwise, so a value does not depend on the blocking or on its
# row's neighbours. On other devices all rows are one block. With more than one torch
# thread the blocks are larger, so that the transcendental functions (parallel regions
# in torch above 2,048 values) are worth their synchronisation (measured on 2 cores:
# 2^16 values, 40 % faster than 2^14 or than all rows at once).
_BLOCK = 1 << 14
_BLOCK_THREADED = 1 << 16
_NUMBA_MIN = 256  # fewer values: the torch path
_KERNELS: dict[str, Any] = {}


def _uniform_kernel(keys, ctrs, out, trans):  # pragma: no cover - numba
    """Uniforms of ``keys`` at ``ctrs`` (uint64 [r], ctrs [r] or [1]) into ``out`` [r, n]
    ([n, r] if trans).

    The row key ``mix(key ^ mix(counter))`` and the words ``mix(row key + (j+1) G)`` of
    :func:`mix` (inlined), then ``((word >> 11) + 0.5) 2^-53``.
    """
    g = np.uint64(0x9E3779B97F4A7C15)
    c1 = np.uint64(0xBF58476D1CE4E5B9)
    c2 = np.uint64(0x94D049BB133111EB)
    s30, s27, s31, s11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)
    scale = 2.0 ** -53
    r = keys.shape[0]
    n = out.shape[0] if trans else out.shape[1]
    one = ctrs.shape[0] == 1  # one counter for all rows
    rk = np.empty(r, dtype=np.uint64)
    for i in range(r):
        z = (ctrs[0] if one else ctrs[i]) + g
        z = (z ^ (z >> s30)) * c1
        z = (z ^ (z >> s27)) * c2
        z = keys[i] ^ (z ^ (z >> s31))
        z = z + g
        z = (z ^ (z >> s30)) * c1
        z = (z ^ (z >> s27)) * c2
        rk[i] = (z ^ (z >> s31)) + g  # the row key, plus mix's first addition
    if trans:  # position-major: write each position's row in order
        for j in range(n):
            pj = np.uint64(j + 1) * g
            for i in range(r):
                z = rk[i] + pj
                z = (z ^ (z >> s30)) * c1
                z = (z ^ (z >> s27)) * c2
                z = z ^ (z >> s31)
                out[j, i] = (np.float64(z >> s11) + 0.5) * scale
    else:
        for i in range(r):
            for j in range(n):
                z = rk[i] + np.uint64(j + 1) * g
                z = (z ^ (z >> s30)) * c1
                z = (z ^ (z >> s27)) * c2
                z = z ^ (z >> s31)
                out[i, j] = (np.float64(z >> s11) + 0.5) * scale


def _rows_kernel(first, second, out):  # pragma: no cover - numba
    """``out[i, j] = first[j, i]``, then ``out[i, m + j] = second[j, i]`` (as far as out goes)."""
    m, r = first.shape
    n = out.shape[1]
    for i in range(r):
        for j in range(m):
            out[i, j] = first[j, i]
        for j in range(n - m):
            out[i, m + j] = second[j, i]


def _kernel(name: str) -> Any:
    """The compiled kernel ``name`` ("uniform", "rows"), or None (no numba, option off)."""
    from xproda.options import current

    if not current("fused_kernels"):
        return None
    if name not in _KERNELS:
        from xproda.models.fused import HAVE_NUMBA, jit_kernel

        fn = {"uniform": _uniform_kernel, "rows": _rows_kernel}[name]
        _KERNELS[name] = jit_kernel(fn, nogil=True) if HAVE_NUMBA else None
    return _KERNELS[name]


def _mix_(z: Tensor, t: Tensor) -> Tensor:
    """:func:`mix` in place on ``z`` (``t``: scratch of the same shape)."""
    z.add_(_GOLDEN)
    for s, c in ((30, _C1), (27, _C2)):
        torch.bitwise_right_shift(z, s, out=t).bitwise_and_((1 << (64 - s)) - 1)
        z.bitwise_xor_(t).mul_(c)
    torch.bitwise_right_shift(z, 31, out=t).bitwise_and_((1 << 33) - 1)
    return z.bitwise_xor_(t)


class _Filler:
    """Fills float64 arrays with the uniforms of the rows' keys at their counters.

    ``blocks``: rows of about ``_BLOCK`` values on the CPU, all rows on other devices.
    """

    def __init__(self, keys: Tensor, counter: int | Tensor, width: int):
        self.dev = keys.device
        c = torch.as_tensor(counter, dtype=torch.int64, device=self.dev)
        if c.shape != keys.shape:
            if c.numel() == 1 and keys.dim() == 1:
                c = c.reshape(1)  # one counter for every row
            else:
                keys, c = torch.broadcast_tensors(keys, c)
        self.n_rows = n_rows = keys.reshape(-1).shape[0]
        cpu = self.dev.type == "cpu"
        self.kernel = _kernel("uniform") if cpu and n_rows * width >= _NUMBA_MIN else None
        block = _BLOCK if torch.get_num_threads() == 1 else _BLOCK_THREADED
        per = max(1, block // max(width, 1)) if cpu else max(n_rows, 1)
        self.blocks = [(r, min(r + per, n_rows)) for r in range(0, n_rows, per)]
        self.rows = max((b - a for a, b in self.blocks), default=0)
        if self.kernel is not None:
            self.k64 = keys.reshape(-1).contiguous().numpy().view(np.uint64)
            self.c64 = c.reshape(-1).contiguous().numpy().view(np.uint64)
            return
        self.k = _row_keys(keys.reshape(-1), c.reshape(-1)).expand(n_rows).contiguous()
        self.z = torch.empty(self.rows * width, dtype=torch.int64, device=self.dev)
        self.t = torch.empty(self.rows * width, dtype=torch.int64, device=self.dev)
        self.pos = torch.arange(1, width + 1, dtype=torch.int64, device=self.dev) * _GOLDEN

    def fill(self, a: int, b: int, out: Tensor, trans: bool) -> Tensor:
        """Uniforms of rows a..b-1 into contiguous ``out`` ([b-a, n], [n, b-a] if ``trans``)."""
        if self.kernel is not None:
            c64 = self.c64 if self.c64.shape[0] == 1 else self.c64[a:b]
            self.kernel(self.k64[a:b], c64, out.numpy(), trans)
            return out
        z, t = self.z[: out.numel()].view(out.shape), self.t[: out.numel()].view(out.shape)
        if trans:
            torch.add(self.pos[:, None], self.k[None, a:b], out=z)
        else:
            torch.add(self.k[a:b, None], self.pos, out=z)
        _mix_(z, t)
        torch.bitwise_right_shift(z, 11, out=t).bitwise_and_((1 << 53) - 1)  # 53 bits
        out.copy_(t)
        return out.add_(0.5).mul_(2.0 ** -53)


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
    fl = _Filler(keys, counter, n)
    out = torch.empty(fl.n_rows, n, dtype=torch.float64, device=fl.dev)
    if fl.kernel is not None:  # no temporaries: one call
        fl.fill(0, fl.n_rows, out, False)
    else:
        for a, b in fl.blocks:
            fl.fill(a, b, out[a:b], False)
    return out.to(dtype)


def normal(keys: Tensor, counter: int | Tensor, n: int, *, dtype=torch.float64) -> Tensor:
    """``[B, n]`` standard normal draws (Box-Muller) of each row's key at ``counter``.

    Draws ``2 ceil(n/2)`` uniforms per row (as :func:`uniform` with ``n`` rounded up to
    even): the first half gives the radii, the second half the angles; the cosines fill
    the first ``ceil(n/2)`` values, the sines the rest.

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
    w = 2 * m
    fl = _Filler(keys, counter, w)
    out = torch.empty(fl.n_rows, n, dtype=torch.float64, device=fl.dev)
    rows_kernel = _kernel("rows") if fl.kernel is not None else None
    ub = torch.empty(fl.rows * w, dtype=torch.float64, device=fl.dev)
    cb = torch.empty(fl.rows * m, dtype=torch.float64, device=fl.dev)
    for a, b in fl.blocks:
        r = b - a
        # position-major ([w, r]): the values of uniform(keys, counter, w), transposed
        u = fl.fill(a, b, ub[: r * w].view(w, r), True)
        rad, ang = u[:m], u[m:]
        rad.log_().mul_(-2.0).sqrt_()  # sqrt(-2 log u1)
        ang.mul_(2.0 * math.pi)  # 2 pi u2
        cos = torch.cos(ang, out=cb[: r * m].view(m, r)).mul_(rad)  # r cos
        ang.sin_().mul_(rad)  # r sin
        if rows_kernel is not None:
            rows_kernel(cos.numpy(), ang.numpy(), out[a:b].numpy())
        else:
            out[a:b, :m].copy_(cos.t())
            out[a:b, m:].copy_(ang[: n - m].t())
    return out.to(dtype)
