"""xproda: PRODA soil-carbon modelling for xarray, dask and Zarr.

Importing xproda registers the ``.proda`` accessor on xarray objects.  The process models
live in :mod:`xproda.models`, the xarray functions in :mod:`xproda.xr_api`, Zarr I/O in
:mod:`xproda.io` and grid helpers in :mod:`xproda.spatial`.
"""

from __future__ import annotations

from . import grid
from .models import FLAGS, ParameterSpace, get_model
from .options import get_options, set_options, tune_malloc
from . import accessor as _accessor  # noqa: F401  (registers the .proda accessor)
from . import io, spatial, xr_api

__version__ = "0.1.0.dev0"

_LAZY = {
    "train_network": ("training", "train_network"),
    "cross_validate": ("training", "cross_validate"),
    "ParameterNet": ("network", "ParameterNet"),
    "ParameterNetEnsemble": ("network", "ParameterNetEnsemble"),
    "load_network": ("network", "load_network"),
    "save_network": ("network", "save_network"),
    "from_climate": ("climate", "from_climate"),
}

__all__ = [
    "get_model", "ParameterSpace", "FLAGS", "grid", "xr_api", "io", "spatial", "set_options",
    "get_options", "tune_malloc", *_LAZY,
    "__version__",
]


def __getattr__(name: str):
    """Training and network entry points, imported on first use."""
    if name in _LAZY:
        import importlib

        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(f".{mod}", __name__), attr)
    raise AttributeError(f"module 'xproda' has no attribute {name!r}")
