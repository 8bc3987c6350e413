"""xproda: PRODA soil-carbon modelling for xarray, dask and Zarr.

Importing xproda registers the ``.proda`` accessor on xarray objects and nothing heavier:
torch, numba and the kernels load on first use (``xproda --help`` starts fast).  The package
is layered (see the README's "Layout"):

- :mod:`xproda.models` -- the kernels (torch and numba; batch first, float64 results);
- :mod:`xproda.xr` -- the xarray layer: the column engine (:mod:`xproda.xr.engine`), the input
  contract (:mod:`xproda.xr.contract`), the public functions (:mod:`xproda.xr.api`), transient
  runs and scenarios, and the ``.proda`` accessor;
- :mod:`xproda.sites` (observations, assimilation), :mod:`xproda.learning` (networks,
  training, cross-validation, baselines), :mod:`xproda.io` (Zarr, files, CLM history),
  :mod:`xproda.spatial`, :mod:`xproda.climate`, :mod:`xproda.analysis`,
  :mod:`xproda.datasets`;
- shared: :mod:`xproda.options`, :mod:`xproda.errors`, :mod:`xproda.units`,
  :mod:`xproda.conventions` (the metadata registry), :mod:`xproda.grid`.
"""

from __future__ import annotations

import importlib
from typing import Any

from xproda.options import get_options, set_options, tune_malloc
from xproda.options import passive_openmp as _passive_openmp

#: whether ``import xproda`` set OMP_WAIT_POLICY=PASSIVE (see xproda.options.passive_openmp)
OPENMP_PASSIVE_SET = _passive_openmp()

from xproda.xr import accessor as _accessor  # noqa: F401  (registers the .proda accessor)

__version__ = "0.1.0.dev0"

#: public names imported on first use: name -> (module, attribute or None for the module)
_LAZY = {
    "get_model": ("xproda.models", "get_model"),
    "ParameterSpace": ("xproda.models", "ParameterSpace"),
    "FLAGS": ("xproda.models.base", "FLAGS"),
    "train_network": ("xproda.learning.training", "train_network"),
    "cross_validate": ("xproda.learning.training", "cross_validate"),
    "ParameterNet": ("xproda.learning.network", "ParameterNet"),
    "ParameterNetEnsemble": ("xproda.learning.network", "ParameterNetEnsemble"),
    "load_network": ("xproda.learning.network", "load_network"),
    "save_network": ("xproda.learning.network", "save_network"),
    "from_climate": ("xproda.climate", "from_climate"),
}
_SUBMODULES = ("analysis", "climate", "contract", "conventions", "datasets", "engine", "errors",
               "grid", "io", "learning", "models", "plotting", "sites", "spatial", "testing",
               "units", "xr")

__all__ = ["set_options", "get_options", "tune_malloc", *_LAZY, *_SUBMODULES, "__version__"]


def __getattr__(name: str) -> Any:
    """Kernels, training entry points and subpackages, imported on first use."""
    if name in _LAZY:
        mod, attr = _LAZY[name]
        return getattr(importlib.import_module(mod), attr)
    if name in ("engine", "contract"):
        return importlib.import_module(f"xproda.xr.{name}")
    if name in _SUBMODULES:
        return importlib.import_module(f"xproda.{name}")
    raise AttributeError(f"module 'xproda' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
