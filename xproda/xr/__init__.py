"""The xarray layer: the column engine, the input contract, the public xarray functions, transient runs, scenarios and the ``.proda`` accessor."""

import importlib as _importlib


def __getattr__(name: str):
    """Submodules, imported on first use (``import xproda`` stays light)."""
    try:
        return _importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError as err:
        if err.name != f"{__name__}.{name}":
            raise
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}") from None
