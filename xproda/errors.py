"""Exceptions of xproda (one module, as rioxarray's ``exceptions``).

Every error about a user's input derives from :class:`InputError`, which is also a
:class:`ValueError` (code that catches ``ValueError`` keeps working).  Messages name the
variable (or dim, option, file), what was expected and what was found.

>>> from xproda.errors import UnitsError
>>> issubclass(UnitsError, ValueError)
True
"""

from __future__ import annotations

__all__ = [
    "XprodaError",
    "InputError",
    "UnitsError",
    "DimensionError",
    "RangeError",
    "GridError",
    "OptionError",
    "ProfileError",
    "CheckpointError",
    "StoreError",
    "StoreLockedError",
]


class XprodaError(Exception):
    """Base class of xproda's own exceptions."""


class InputError(XprodaError, ValueError):
    """An input (variable, dim, coordinate, file) does not satisfy xproda's input contract."""


class UnitsError(InputError):
    """A ``units`` attribute is missing where required, unparsable, or not convertible."""


class DimensionError(InputError):
    """A variable has a dim that xproda does not know what to do with, or lacks a core dim."""


class RangeError(InputError):
    """Values outside the plausible physical range (fill values, unit mistakes)."""


class GridError(InputError):
    """Two inputs are on grids that cannot be matched (names, coordinates or CRS)."""


class OptionError(XprodaError, ValueError):
    """An unknown option or an invalid option value."""


class ProfileError(InputError):
    """A soil-profile table is ambiguous or inconsistent (depth units, ids, locations, sites)."""


class CheckpointError(XprodaError, ValueError):
    """A checkpoint file is unreadable, truncated, foreign or tampered with (message names it)."""


class StoreError(XprodaError, ValueError):
    """A Zarr store cannot be resumed or verified: it holds another run, or is damaged."""


class StoreLockedError(StoreError):
    """Another process holds the store's write lock (message names the store and the holder)."""
