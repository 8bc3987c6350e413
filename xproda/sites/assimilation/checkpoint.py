"""Checkpoints (samplers, networks, training): one safetensors file holding tensors plus JSON metadata; never pickle.

A checkpoint is a single ``.safetensors`` file. Its tensors are the state (for a sampler:
chain states, adaptation sums, stored draws and counters -- its random numbers are functions
of the seed, the site ids and the iteration, :mod:`xproda.sites.assimilation.streams`; for a
network: its weights); its string metadata entry ``"xproda"`` is a
JSON document with the format name and version, the caller's ``meta`` (settings, used to
refuse resuming a run with different settings; scalar state such as the iteration counter)
and a ``content_hash``: the SHA-256 of that document (without the hash) and of every tensor
(name, dtype, shape and bytes; :func:`content_digest`).

This module is the one place that reads checkpoint files. :func:`read_checkpoint` checks
the file before trusting any of it and raises :class:`~xproda.errors.CheckpointError`,
naming the file and the reason, for a file that is

* unreadable (permissions, a directory), empty or **truncated** (the header announces more
  bytes than the file holds);
* **foreign**: a Python pickle, a zip archive (``torch.save``), random bytes, or a
  safetensors file without xproda's metadata or of another checkpoint format/version;
* **tampered with**: the stored content hash differs from the content
  (:func:`verify_checkpoint`);
* **unverifiable**: it has no content hash. Such a file is refused unless the caller passes
  ``trust_unverified=True`` (the same keyword on every loader that checks a hash:
  :func:`load_checkpoint`, :func:`xproda.learning.network.load_network`,
  :func:`xproda.sites.assimilation.samplers.common.load_state`).

A missing file raises :class:`FileNotFoundError` naming it.

Files are written to a temporary file in the destination's directory and renamed
(:func:`write_file_atomic`), so an interrupted write never leaves a truncated checkpoint
behind; the file's mode follows the process umask (``0o666 & ~umask``), like any file the
user creates.

Examples
--------
>>> import tempfile, torch
>>> from pathlib import Path
>>> from xproda.sites.assimilation.checkpoint import save_checkpoint, load_checkpoint
>>> path = Path(tempfile.mkdtemp()) / "state.safetensors"
>>> save_checkpoint(path, {"x": torch.arange(3.0)}, {"iteration": 7})
>>> tensors, meta = load_checkpoint(path)
>>> tensors["x"].tolist(), meta["iteration"]
([0.0, 1.0, 2.0], 7)
>>> _ = path.write_bytes(path.read_bytes()[:-4])  # cut the last tensor short
>>> load_checkpoint(path)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
xproda.errors.CheckpointError: checkpoint '...state.safetensors' is truncated: ...
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from xproda.errors import CheckpointError

__all__ = [
    "FORMAT",
    "MAX_HEADER_BYTES",
    "METADATA_KEY",
    "VERSION",
    "CheckpointContents",
    "CheckpointError",
    "checkpoint_exists",
    "content_digest",
    "load_checkpoint",
    "normalize_settings",
    "read_checkpoint",
    "save_checkpoint",
    "verify_checkpoint",
    "write_file_atomic",
]

#: Format name written to every sampler checkpoint.
FORMAT = "xproda-sampler-checkpoint"
#: Format version; bumped when the layout changes incompatibly.
VERSION = 1
#: Key of xproda's JSON document in the safetensors metadata (``__metadata__``).
METADATA_KEY = "xproda"
#: Largest safetensors header accepted (the safetensors library's own limit).
MAX_HEADER_BYTES = 100_000_000

#: First bytes of formats that are sometimes saved under a ``.safetensors`` name.
_SIGNATURES: tuple[tuple[bytes, str], ...] = (
    (b"PK\x03\x04", "a zip archive (the format of torch.save), not a safetensors file"),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file, not a safetensors file"),
    (b"\x93NUMPY", "a NumPy .npy file, not a safetensors file"),
    (b"\x1f\x8b", "a gzip file, not a safetensors file"),
)


def _jsonable(obj: Any) -> Any:
    """Convert tuples, numpy scalars and dtypes to plain JSON values."""
    if isinstance(obj, Mapping):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (str, int, float, bool)) or obj is None:
        return obj
    if isinstance(obj, torch.dtype):
        return str(obj)
    if hasattr(obj, "item"):
        return obj.item()
    return str(obj)


def normalize_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    """Settings as they read back from JSON (tuples become lists, dtypes strings).

    Parameters
    ----------
    settings : mapping
        Settings of a run.

    Returns
    -------
    dict
        The same settings after a JSON round trip (what a checkpoint stores).
    """
    return json.loads(json.dumps(_jsonable(settings), sort_keys=True))


def checkpoint_exists(path: str | os.PathLike | None) -> bool:
    """True when ``path`` names an existing checkpoint file.

    Parameters
    ----------
    path : str, path-like or None

    Returns
    -------
    bool
    """
    return path is not None and Path(path).is_file()


def content_digest(header: Mapping[str, Any], tensors: Mapping[str, torch.Tensor]) -> str:
    """SHA-256 (hex) of a checkpoint's JSON header and tensors: what ``content_hash`` stores.

    Parameters
    ----------
    header : mapping
        xproda's JSON document (``format``, ``version``, ``meta``); a ``content_hash`` entry
        in it is ignored. It is hashed as canonical JSON (sorted keys), so the digest is the
        same before writing and after reading back.
    tensors : mapping of str to Tensor
        Every tensor of the file; hashed in name order as name, dtype, shape and the
        little-endian bytes of the values.

    Returns
    -------
    str
        64 hexadecimal digits.
    """
    doc = {k: v for k, v in header.items() if k != "content_hash"}
    h = hashlib.sha256(json.dumps(doc, sort_keys=True).encode())
    for name in sorted(tensors):
        t = tensors[name].detach().to("cpu").contiguous()
        h.update(b"\0" + name.encode() + b"\0" + str(t.dtype).encode()
                 + str(tuple(t.shape)).encode() + b"\0")
        h.update(t.reshape(-1).view(torch.uint8).numpy())
    return h.hexdigest()


def write_file_atomic(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, with the mode the umask gives new files.

    The bytes go to a new temporary file in the same directory (created with mode
    ``0o666``, which the kernel reduces by the process umask), are flushed to disk, and the
    file is renamed over ``path`` with :func:`os.replace`. Readers see the old file or the
    new one, never a partial one; on failure the temporary file is removed.

    Parameters
    ----------
    path : str or path-like
        Destination; its directory must exist.
    data : bytes
        The full content.
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0),
                 0o666)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (POSIX; not possible everywhere)
        dfd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dfd)
    except OSError:
        pass
    finally:
        os.close(dfd)


def save_checkpoint(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
    *, format: str = FORMAT, version: int = VERSION,
) -> None:
    """Write ``tensors`` and JSON-serialisable ``meta`` to ``path`` atomically.

    Parameters
    ----------
    path : str or path-like
        Destination file (conventionally ``*.safetensors``); parent directories are created.
        Its mode follows the umask (``0o666 & ~umask``).
    tensors : mapping of str to Tensor
        State tensors; they are copied to CPU and made contiguous. Any dtype safetensors
        supports (floating, integer, bool, uint8) is allowed, zero-size tensors included.
    meta : mapping
        Scalars and settings; stored as JSON in the file's metadata header.
    format, version : str, int
        Format name and version written to the header (default: the sampler checkpoint's;
        :mod:`xproda.learning.network` and :mod:`xproda.learning.trainer` use their own).

    Notes
    -----
    The header also stores ``content_hash`` (:func:`content_digest` of the header and the
    tensors), which :func:`load_checkpoint` verifies.
    """
    from safetensors.torch import save as _serialize

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    flat: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for k, v in tensors.items():
        v = v.detach().to("cpu").contiguous()
        if v.numel() and v.untyped_storage().data_ptr() in seen:
            v = v.clone()  # safetensors refuses tensors sharing memory
        if v.numel():
            seen.add(v.untyped_storage().data_ptr())
        flat[k] = v
    header: dict[str, Any] = normalize_settings(
        {"format": format, "version": version, "meta": meta})
    header["content_hash"] = content_digest(header, flat)
    data = _serialize(flat, metadata={METADATA_KEY: json.dumps(header, sort_keys=True)})
    write_file_atomic(path, data)


@dataclass(frozen=True)
class CheckpointContents:
    """What :func:`read_checkpoint` found in a checkpoint file (not yet hash-verified).

    Attributes
    ----------
    path : Path
        The file.
    tensors : dict of str to Tensor
        Its tensors (on the CPU, owned and writable).
    meta : dict
        The ``meta`` mapping given to :func:`save_checkpoint`.
    format : str
    version : int
    stored_hash : str or None
        The ``content_hash`` of the header; None when the file has none.
    computed_hash : str
        :func:`content_digest` of what was read.
    """

    path: Path
    tensors: dict[str, torch.Tensor] = field(repr=False)
    meta: dict[str, Any]
    format: str
    version: int
    stored_hash: str | None
    computed_hash: str

    @property
    def verified(self) -> bool:
        """True when the file has a content hash and it matches the content."""
        return self.stored_hash is not None and self.stored_hash == self.computed_hash


def _refuse(path: Path, reason: str) -> CheckpointError:
    return CheckpointError(f"checkpoint {str(path)!r} {reason}")


def _read_header(path: Path) -> tuple[dict[str, Any], dict[str, Any]]:
    """Check the safetensors layout of ``path``; return (tensor entries, xproda document)."""
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            head = fh.read(8)
            if size == 0:
                raise _refuse(path, "is empty (0 bytes)")
            for sig, what in _SIGNATURES:
                if head.startswith(sig):
                    raise _refuse(path, f"is {what}")
            if head[:1] == b"\x80" and 2 <= (head[1:2] or b"\0")[0] <= 5:
                raise _refuse(path, "is a Python pickle, not a safetensors file (xproda never "
                                    "unpickles files: loading one can run arbitrary code)")
            if len(head) < 8:
                raise _refuse(path, f"is truncated: {size} bytes, less than the 8-byte "
                                    "length of a safetensors header")
            n = int.from_bytes(head, "little")
            if n < 2 or n > MAX_HEADER_BYTES:
                raise _refuse(path, f"is not a safetensors file: its first 8 bytes give a "
                                    f"header length of {n} bytes (expected 2 to "
                                    f"{MAX_HEADER_BYTES})")
            if 8 + n > size:
                raise _refuse(path, f"is truncated: the header says it is {n} bytes, the "
                                    f"file has {size - 8} bytes after the length field")
            raw = fh.read(n)
    except FileNotFoundError:
        raise FileNotFoundError(f"checkpoint {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise _refuse(path, "is a directory, not a checkpoint file") from None
    except OSError as e:
        raise _refuse(path, f"cannot be read: {e.strerror or e}") from None
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise _refuse(path, f"is not a safetensors file: its {n}-byte header is not a JSON "
                            f"object ({e})") from None
    if not isinstance(header, dict):
        raise _refuse(path, f"is not a safetensors file: its {n}-byte header is not a JSON "
                            f"object (found a {type(header).__name__})")
    md = header.pop("__metadata__", None) or {}
    end = 0
    for name, entry in header.items():
        try:
            lo, hi = (int(x) for x in entry["data_offsets"])
            str(entry["dtype"])
            [int(s) for s in entry["shape"]]
        except (TypeError, KeyError, ValueError):
            raise _refuse(path, f"is not a valid safetensors file: the header entry of "
                                f"{name!r} has no dtype/shape/data_offsets") from None
        if not 0 <= lo <= hi:
            raise _refuse(path, f"is not a valid safetensors file: tensor {name!r} has data "
                                f"offsets {lo}..{hi}")
        end = max(end, hi)
    have = size - 8 - n
    if have < end:
        raise _refuse(path, f"is truncated: the header says {end} bytes of tensor data, the "
                            f"file has {have}")
    if have > end:
        raise _refuse(path, f"is damaged: {have - end} unexpected bytes after the {end} bytes "
                            "of tensor data the header describes")
    if not isinstance(md, dict) or METADATA_KEY not in md:
        raise _refuse(path, "is a safetensors file without xproda's metadata (no "
                            f"{METADATA_KEY!r} entry): not an xproda checkpoint")
    try:
        doc = json.loads(md[METADATA_KEY])
    except (TypeError, ValueError) as e:
        raise _refuse(path, f"has unreadable xproda metadata (expected a JSON object: {e})"
                      ) from None
    if not isinstance(doc, dict):
        raise _refuse(path, "has unreadable xproda metadata (expected a JSON object, found "
                            f"a {type(doc).__name__})")
    return header, doc


def read_checkpoint(
    path: str | os.PathLike, *, format: str = FORMAT, version: int = VERSION,
) -> CheckpointContents:
    """Read and check a checkpoint file, without deciding whether its hash is needed.

    Most callers want :func:`load_checkpoint`, which also verifies the content hash. This
    function is for loaders with an additional verification of their own (a network's
    :attr:`~xproda.learning.network.ParameterNet.content_hash`).

    Parameters
    ----------
    path : str or path-like
        Checkpoint file.
    format, version : str, int
        Expected format name and version (default: the sampler checkpoint's).

    Returns
    -------
    CheckpointContents

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CheckpointError
        If the file is unreadable, empty, truncated, not a safetensors file, has no xproda
        metadata, or is of another format or version (the message names the file and the
        reason).
    """
    from safetensors import safe_open

    path = Path(path)
    _, doc = _read_header(path)
    if doc.get("format") != format or doc.get("version") != version:
        raise _refuse(path, f"is a {doc.get('format')!r} checkpoint version "
                            f"{doc.get('version')!r}; expected {format!r} version {version}")
    meta = doc.get("meta")
    if not isinstance(meta, dict):
        raise _refuse(path, "has xproda metadata without a 'meta' object")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            # owned, writable copies (safe_open objects are not iterable: keys() is needed)
            tensors = {k: f.get_tensor(k).clone() for k in f.keys()}  # noqa: SIM118
    except Exception as e:  # noqa: BLE001 - safetensors' own errors, e.g. an unknown dtype
        raise _refuse(path, f"cannot be decoded as safetensors ({type(e).__name__}: {e})"
                      ) from None
    stored = doc.get("content_hash")
    return CheckpointContents(
        path=path, tensors=tensors, meta=meta, format=format, version=version,
        stored_hash=None if stored is None else str(stored),
        computed_hash=content_digest(doc, tensors),
    )


def verify_checkpoint(contents: CheckpointContents, *, trust_unverified: bool = False) -> None:
    """Refuse a checkpoint whose content hash is missing or does not match.

    Parameters
    ----------
    contents : CheckpointContents
        What :func:`read_checkpoint` returned.
    trust_unverified : bool, default False
        Accept a file without a content hash (written by an older xproda, or stripped), or
        whose hash does not match (edited or damaged; a :class:`UserWarning` names it).
        Only for files whose origin you trust.

    Raises
    ------
    CheckpointError
        Hash missing or mismatched and ``trust_unverified`` is false.
    """
    path, stored = contents.path, contents.stored_hash
    if stored is None:
        if not trust_unverified:
            raise _refuse(path, "has no content hash, so its content cannot be verified "
                                "(written by an older xproda, or edited); refusing to load "
                                "it. Pass trust_unverified=True to load it anyway if you "
                                "trust its origin, or start over (resume=False)")
        return
    if stored != contents.computed_hash:
        msg = (f"checkpoint {str(path)!r} does not match its content hash (stored "
               f"{stored[:12]}..., computed {contents.computed_hash[:12]}...): the file is "
               "damaged or was edited")
        if not trust_unverified:
            raise CheckpointError(msg)
        warnings.warn(msg + "; loading it because trust_unverified=True", UserWarning,
                      stacklevel=3)


def load_checkpoint(
    path: str | os.PathLike, *, device: str | torch.device | None = None,
    format: str = FORMAT, version: int = VERSION, trust_unverified: bool = False,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint` and verify its content hash.

    Parameters
    ----------
    path : str or path-like
        Checkpoint file.
    device : str or torch.device, optional
        Device to move the tensors to (default: CPU; tensors named ``rng*`` stay on the CPU).
    format, version : str, int
        Expected format name and version (default: the sampler checkpoint's).
    trust_unverified : bool, default False
        Load a file without a content hash, or whose hash does not match (with a warning);
        see :func:`verify_checkpoint`.

    Returns
    -------
    tensors : dict of str to Tensor
    meta : dict
        The ``meta`` mapping given to :func:`save_checkpoint`.

    Raises
    ------
    FileNotFoundError
        If ``path`` does not exist.
    CheckpointError
        If the file is unreadable, empty, truncated, foreign (pickle, zip, random bytes, a
        safetensors file without xproda's metadata), of another format or version, has no
        content hash, or does not match it. The message names the file and the reason.
    """
    contents = read_checkpoint(path, format=format, version=version)
    verify_checkpoint(contents, trust_unverified=trust_unverified)
    tensors = contents.tensors
    if device is not None:
        # the generator state must stay on the CPU (torch.Generator.set_state expects that)
        tensors = {
            k: (v if k.startswith("rng") else v.to(device)) for k, v in tensors.items()
        }
    return tensors, contents.meta
