"""Global options: ``xproda.set_options`` / ``xproda.get_options``.

Usable as a function or as a context manager, like :func:`xarray.set_options`::

    with xproda.set_options(device="cuda", torch_threads=4):
        out = model.steady_state(theta, forcing)
"""

from __future__ import annotations

from typing import Any

__all__ = ["set_options", "get_options", "OPTIONS"]

OPTIONS: dict[str, Any] = {
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
    # use fused numba CPU kernels (the structured solve, PCHIP model-to-observation mapping)
    # when no gradient is needed (same results as the torch paths; see xproda.models._fused)
    "fused_kernels": True,
}

_VALIDATORS = {
    "device": lambda v: v is None or isinstance(v, str) or type(v).__name__ == "device",
    "dtype": lambda v: v in ("float64", "float32"),
    "torch_threads": lambda v: v is None or (isinstance(v, int) and v >= 1),
    "kernel_batch_size": lambda v: isinstance(v, int) and v >= 1,
    "fused_kernels": lambda v: isinstance(v, bool),
}


class set_options:
    """Set global xproda options (also a context manager restoring the old values).

    Parameters
    ----------
    device : str or torch.device or None
        Device of kernel computations.
    dtype : {"float64", "float32"}
        Floating dtype of kernels (float64 recommended).
    torch_threads : int or None
        Intra-op threads for torch inside kernels.
    kernel_batch_size : int
        Columns per internal kernel chunk (default 4096); results do not depend on it.
    fused_kernels : bool
        Use the fused numba CPU kernels (structured solve, PCHIP mapping) when no gradient is
        needed (default True); results equal the torch paths to rounding.
    """

    def __init__(self, **kwargs: Any) -> None:
        self._old: dict[str, Any] = {}
        for key, value in kwargs.items():
            if key not in OPTIONS:
                raise ValueError(
                    f"unknown xproda option {key!r}; valid options are {sorted(OPTIONS)}"
                )
            if not _VALIDATORS[key](value):
                raise ValueError(f"invalid value for xproda option {key!r}: {value!r}")
        for key, value in kwargs.items():
            self._old[key] = OPTIONS[key]
            OPTIONS[key] = value
        if "torch_threads" in kwargs and kwargs["torch_threads"] is not None:
            import torch

            torch.set_num_threads(kwargs["torch_threads"])

    def __enter__(self) -> "set_options":
        return self

    def __exit__(self, *exc: object) -> None:
        OPTIONS.update(self._old)


def get_options() -> dict[str, Any]:
    """A copy of the current xproda options."""
    return dict(OPTIONS)
