"""Checkpoints (samplers, networks, training): one safetensors file holding tensors plus JSON metadata; never pickle.

A checkpoint is a single ``.safetensors`` file. Its tensors are the sampler state (chain
states, adaptation sums, stored draws, counters and the ``torch.Generator`` state as a
``uint8`` tensor); its string metadata entry ``"xproda"`` is a JSON document with the
format name and version, the sampler settings (used to refuse resuming a run with different
settings) and scalar state such as the iteration counter. Files are written to a temporary
name and renamed, so an interrupted write never leaves a truncated checkpoint behind.

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
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

__all__ = ["save_checkpoint", "load_checkpoint", "checkpoint_exists", "FORMAT", "VERSION"]

#: Format name written to every checkpoint.
FORMAT = "xproda-sampler-checkpoint"
#: Format version; bumped when the layout changes incompatibly.
VERSION = 1


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
    """Settings as they read back from JSON (tuples become lists, dtypes strings)."""
    return json.loads(json.dumps(_jsonable(settings), sort_keys=True))


def checkpoint_exists(path: str | os.PathLike | None) -> bool:
    """True when ``path`` names an existing checkpoint file."""
    return path is not None and Path(path).is_file()


def save_checkpoint(
    path: str | os.PathLike, tensors: Mapping[str, torch.Tensor], meta: Mapping[str, Any],
    *, format: str = FORMAT, version: int = VERSION,
) -> None:
    """Write ``tensors`` and JSON-serialisable ``meta`` to ``path`` atomically.

    Parameters
    ----------
    path : str or path-like
        Destination file (conventionally ``*.safetensors``); parent directories are created.
    tensors : mapping of str to Tensor
        State tensors; they are copied to CPU and made contiguous. Any dtype safetensors
        supports (floating, integer, bool, uint8) is allowed, zero-size tensors included.
    meta : mapping
        Scalars and settings; stored as JSON in the file's metadata header.
    format, version : str, int
        Format name and version written to the header (default: the sampler checkpoint's;
        :mod:`xproda.learning.network` and :mod:`xproda.learning.training` use their own).
    """
    from safetensors.torch import save_file

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
    header = {"format": format, "version": version, "meta": _jsonable(meta)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(flat, str(tmp), metadata={"xproda": json.dumps(header, sort_keys=True)})
    fd = os.open(tmp, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)


def load_checkpoint(
    path: str | os.PathLike, *, device: str | torch.device | None = None,
    format: str = FORMAT, version: int = VERSION,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Parameters
    ----------
    path : str or path-like
        Checkpoint file.
    device : str or torch.device, optional
        Device to move the tensors to (default: CPU).
    format, version : str, int
        Expected format name and version (default: the sampler checkpoint's).

    Returns
    -------
    tensors : dict of str to Tensor
    meta : dict
        The ``meta`` mapping given to :func:`save_checkpoint`.

    Raises
    ------
    ValueError
        If the file is not an xproda checkpoint of ``format`` or has another version.
    """
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        md = f.metadata() or {}
        tensors = {k: f.get_tensor(k).clone() for k in f.keys()}  # owned, writable
    if "xproda" not in md:
        raise ValueError(f"{path} is not an xproda checkpoint (no 'xproda' metadata)")
    header = json.loads(md["xproda"])
    if header.get("format") != format or header.get("version") != version:
        raise ValueError(
            f"{path}: checkpoint format {header.get('format')!r} version "
            f"{header.get('version')!r}; expected {format!r} version {version}"
        )
    if device is not None:
        # the generator state must stay on the CPU (torch.Generator.set_state expects that)
        tensors = {
            k: (v if k.startswith("rng") else v.to(device)) for k, v in tensors.items()
        }
    return tensors, header["meta"]
