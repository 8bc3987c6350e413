"""Profiles packed into padded ``[site, obs]`` arrays for the batched kernels.

:func:`pack_profiles` validates a profile table (:func:`validate_profiles`) and turns it into a
:class:`ProfileBatch`, which converts to torch tensors, an xarray Dataset or back to a table.
The batch keeps its validation report (``batch.validation``), so the consumers
(:func:`~xproda.sites.assimilation.problem.assimilate`,
:func:`~xproda.learning.data.prepare_training_data`, ...) accept it without validating it
again; :func:`as_profile_batch` is the one entry point they share.
"""

from __future__ import annotations

import dataclasses
import warnings
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from xproda import conventions
from xproda.sites.observations.schema import (
    DEPTH_UNITS_ATTR,
    REQUIRED_COLUMNS,
    as_float_array,
    node_depth,
)
from xproda.sites.observations.validation import (
    ValidationReport,
    require_columns,
    validate_profiles,
)
from xproda.sites.observations.weights import layer_weights

if TYPE_CHECKING:  # pragma: no cover
    import torch
    import xarray as xr

__all__ = ["ProfileBatch", "pack_profiles", "as_profile_batch"]


@dataclasses.dataclass
class ProfileBatch:
    """Profiles packed into padded ``[site, obs]`` arrays for the batched kernels.

    Layers of each site are sorted by node depth; positions ``j >= n_layers[s]`` are padding
    (NaN in the float arrays, 0 in ``weight``, False in ``mask``). ``mask`` is True where a
    layer is present and has a finite depth and obs.

    Attributes
    ----------
    site_ids : numpy.ndarray, shape [S]
        Profile ids, in order of first appearance in the table.
    lat, lon : numpy.ndarray, shape [S]
        Location (degrees_north, degrees_east).
    depth : numpy.ndarray, shape [S, D]
        Node depths (m).
    top, bottom : numpy.ndarray, shape [S, D]
        Layer bounds (m).
    soc : numpy.ndarray, shape [S, D]
        Observed SOC density (g C m-3).
    weight : numpy.ndarray, shape [S, D]
        Layer weights (spec §5.2), 0 in padding.
    mask : numpy.ndarray of bool, shape [S, D]
        Valid observations.
    n_layers : numpy.ndarray of int, shape [S]
        Layers per site (rows of the table).
    date : numpy.ndarray or None, shape [S]
        Sampling date of each site (first layer's), if the table had a ``date`` column.
    validation : ValidationReport or None
        The report of :func:`validate_profiles` on the packed table (set by
        :func:`pack_profiles` and kept by :meth:`subset`); None for a batch built by hand or
        read back with :meth:`from_xarray`, which :func:`as_profile_batch` validates.
    """

    site_ids: np.ndarray
    lat: np.ndarray
    lon: np.ndarray
    depth: np.ndarray
    top: np.ndarray
    bottom: np.ndarray
    soc: np.ndarray
    weight: np.ndarray
    mask: np.ndarray
    n_layers: np.ndarray
    date: np.ndarray | None = None
    validation: ValidationReport | None = dataclasses.field(default=None, repr=False,
                                                             compare=False)

    _LAYERED = ("depth", "top", "bottom", "soc", "weight", "mask")

    def __post_init__(self) -> None:
        s = len(self.site_ids)
        for name in ("lat", "lon", "n_layers"):
            if getattr(self, name).shape != (s,):
                raise ValueError(f"ProfileBatch.{name}: expected shape ({s},), got "
                                 f"{getattr(self, name).shape}")
        shape = self.soc.shape
        if len(shape) != 2 or shape[0] != s:
            raise ValueError(f"ProfileBatch.soc: expected shape ({s}, D), got {shape}")
        for name in self._LAYERED:
            if getattr(self, name).shape != shape:
                raise ValueError(f"ProfileBatch.{name}: expected shape {shape}, got "
                                 f"{getattr(self, name).shape}")
        if self.date is not None and self.date.shape != (s,):
            raise ValueError(f"ProfileBatch.date: expected shape ({s},), got {self.date.shape}")

    def __len__(self) -> int:
        return len(self.site_ids)

    @property
    def n_obs(self) -> int:
        """Padded number of layers ``D``."""
        return self.soc.shape[1]

    def __repr__(self) -> str:
        return (f"ProfileBatch({len(self)} sites, up to {self.n_obs} layers, "
                f"{int(self.mask.sum())} valid obs)")

    def subset(self, idx: Any) -> ProfileBatch:
        """The sites ``idx`` (integer indices, a slice or a boolean mask over sites).

        The layer axis is trimmed to the deepest selected site's ``n_layers``.
        """
        if isinstance(idx, slice):
            idx = np.arange(len(self))[idx]
        idx = np.asarray(idx)
        if idx.dtype == bool:
            if idx.shape != (len(self),):
                raise IndexError(f"boolean subset needs shape ({len(self)},), got {idx.shape}")
            idx = np.flatnonzero(idx)
        nl = self.n_layers[idx]
        dmax = int(nl.max()) if nl.size else 0
        kw = {name: getattr(self, name)[idx][:, :dmax] for name in self._LAYERED}
        return ProfileBatch(site_ids=self.site_ids[idx], lat=self.lat[idx], lon=self.lon[idx],
                            n_layers=nl, date=None if self.date is None else self.date[idx],
                            validation=self.validation, **kw)

    def to_torch(self, dtype: torch.dtype | None = None, device: Any = None, *,
                 fill_value: float | None = None) -> dict[str, torch.Tensor]:
        """The arrays as torch tensors.

        Parameters
        ----------
        dtype : torch.dtype, optional
            Float dtype (default ``torch.float64``).
        device : torch.device or str, optional
            Target device (default CPU).
        fill_value : float, keyword-only, optional
            If given, replaces padding and invalid entries (``~mask``) of ``depth``, ``top``,
            ``bottom`` and ``soc``, so that no NaN enters a differentiable computation
            (``0 * NaN`` is NaN even where masked).

        Returns
        -------
        dict of str to torch.Tensor
            ``lat``, ``lon`` [S]; ``depth``, ``top``, ``bottom``, ``soc``, ``weight`` [S, D]
            (float); ``mask`` [S, D] (bool); ``n_layers`` [S] (int64).
        """
        import torch

        dtype = torch.float64 if dtype is None else dtype
        out: dict[str, torch.Tensor] = {}
        for name in ("lat", "lon", "depth", "top", "bottom", "soc", "weight"):
            a = np.asarray(getattr(self, name), dtype=float)
            if fill_value is not None and name in ("depth", "top", "bottom", "soc"):
                a = np.where(self.mask, a, fill_value)
            out[name] = torch.as_tensor(a, dtype=dtype, device=device)
        out["mask"] = torch.as_tensor(self.mask, dtype=torch.bool, device=device)
        out["n_layers"] = torch.as_tensor(self.n_layers, dtype=torch.int64, device=device)
        return out

    def to_xarray(self) -> xr.Dataset:
        """The batch as an xarray Dataset with dims ``site`` and ``obs``.

        ``site`` is indexed by the profile ids; ``lat``, ``lon`` (and ``date``) are site
        coordinates; ``depth``, ``top``, ``bottom``, ``soc``, ``weight``, ``mask`` are
        ``(site, obs)`` variables and ``n_layers`` a ``site`` variable, each with units.
        """
        import xarray as xr

        def a(name: str) -> dict[str, Any]:
            return conventions.attrs(name, section="observations")

        so = ("site", "obs")
        data_vars = {k: (so, getattr(self, k), a(k))
                     for k in ("soc", "depth", "top", "bottom", "weight", "mask")}
        data_vars["n_layers"] = ("site", self.n_layers, a("n_layers"))
        coords: dict[str, Any] = {
            "site": ("site", self.site_ids, a("site")),
            "obs": ("obs", np.arange(self.n_obs), a("obs")),
            "lat": ("site", self.lat, a("lat")),
            "lon": ("site", self.lon, a("lon")),
        }
        if self.date is not None:
            coords["date"] = ("site", self.date, a("date"))
        return xr.Dataset(data_vars, coords=coords)

    @classmethod
    def from_xarray(cls, ds: xr.Dataset) -> ProfileBatch:
        """Inverse of :meth:`to_xarray`."""
        return cls(site_ids=ds["site"].values, lat=ds["lat"].values, lon=ds["lon"].values,
                   depth=ds["depth"].values, top=ds["top"].values, bottom=ds["bottom"].values,
                   soc=ds["soc"].values, weight=ds["weight"].values,
                   mask=ds["mask"].values.astype(bool),
                   n_layers=ds["n_layers"].values.astype(np.int64),
                   date=ds["date"].values if "date" in ds.coords else None)

    def to_frame(self) -> pd.DataFrame:
        """Unpack to a profile table (one row per layer, padding removed)."""
        s_idx, j_idx = np.nonzero(np.arange(self.n_obs)[None, :] < self.n_layers[:, None])
        out = pd.DataFrame({"profile_id": self.site_ids[s_idx], "lat": self.lat[s_idx],
                            "lon": self.lon[s_idx], "top": self.top[s_idx, j_idx],
                            "bottom": self.bottom[s_idx, j_idx], "soc": self.soc[s_idx, j_idx],
                            "weight": self.weight[s_idx, j_idx]})
        if self.date is not None:
            out["date"] = self.date[s_idx]
        out.attrs[DEPTH_UNITS_ATTR] = "m"
        return out


def pack_profiles(df: pd.DataFrame, *, weights: str | None = "spec",
                  depth_units: str | None = None) -> ProfileBatch:
    """Validate a (cleaned) profile table and pack it into padded ``[site, obs]`` arrays.

    The table is checked first with :func:`validate_profiles` (strict): a table in other
    units, with ambiguous depth units, one id at two locations, overlapping layers ... is
    refused with :class:`ProfileValidationError` (a :class:`~xproda.errors.ProfileError`);
    its warnings (e.g. ``soc_range``) are issued as one ``UserWarning`` and kept in
    ``batch.validation``. Sites come in order of first appearance of ``profile_id``; the
    layers of each site are sorted by node depth (stable). ``lat``, ``lon`` and ``date`` are
    those of a site's first row (one location per id: validated).

    Parameters
    ----------
    df : pandas.DataFrame
        Profile table (:data:`PROFILE_COLUMNS`), typically the output of
        :func:`clean_profiles`.
    weights : {"spec", "column", None}, keyword-only
        ``"spec"`` (default): :func:`layer_weights` of each site; ``"column"``: the table's
        ``weight`` column; None: 1 for every valid layer.
    depth_units : {"m"} or None, keyword-only
        Declares that ``top``/``bottom`` are in m, for tables whose values fit both m and cm
        (see :func:`validate_profiles`); default ``df.attrs["depth_units"]`` (set by the
        converters).

    Returns
    -------
    ProfileBatch
        With ``validation`` set to the report.

    Raises
    ------
    ProfileValidationError
        If the table fails validation (the message lists every error).

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"profile_id": ["x", "y", "x"], "lat": [1.0, 2.0, 1.0],
    ...                    "lon": [3.0, 4.0, 3.0], "top": [0.2, 0.0, 0.0],
    ...                    "bottom": [0.5, 0.3, 0.2], "soc": [4e3, 9e3, 1e4]})
    >>> b = pack_profiles(df)
    >>> b.site_ids.tolist(), b.n_layers.tolist(), b.depth.tolist()
    (['x', 'y'], [2, 1], [[0.1, 0.35], [0.15, nan]])
    """
    require_columns(df, REQUIRED_COLUMNS, "pack_profiles")
    if weights not in ("spec", "column", None):
        raise ValueError(f"weights={weights!r}: expected 'spec', 'column' or None")
    if weights == "column" and "weight" not in df.columns:
        raise ValueError("weights='column' but the table has no 'weight' column")
    report = validate_profiles(df, depth_units=depth_units)
    _warn(report, "pack_profiles")
    codes, uniq = pd.factorize(df["profile_id"], sort=False)
    if (codes < 0).any():
        raise ValueError("pack_profiles: 'profile_id' has missing values")
    n_sites = len(uniq)
    top = as_float_array(df["top"])
    bot = as_float_array(df["bottom"])
    soc = as_float_array(df["soc"])
    dep = node_depth(top, bot)
    order = np.lexsort((dep, codes))
    c = codes[order]
    n_layers = np.bincount(c, minlength=n_sites).astype(np.int64)
    start = np.cumsum(n_layers) - n_layers
    j = np.arange(len(c)) - start[c]
    dmax = int(n_layers.max()) if n_sites else 0

    def grid(v: np.ndarray, fill: Any = np.nan, dtype: Any = float) -> np.ndarray:
        out = np.full((n_sites, dmax), fill, dtype=dtype)
        out[c, j] = v[order]
        return out

    T, B, Y, Dp = grid(top), grid(bot), grid(soc), grid(dep)
    mask = np.isfinite(Y) & np.isfinite(Dp)
    if weights == "spec":
        W = layer_weights(np.where(mask, Dp, np.nan), np.where(mask, Y, np.nan))
    elif weights == "column":
        W = np.where(mask, grid(as_float_array(df["weight"]), 0.0), 0.0)
    else:
        W = mask.astype(float)
    first_row = np.unique(codes, return_index=True)[1]  # each site's first row (table order)
    date = None
    if "date" in df.columns:
        date = df["date"].to_numpy()[first_row]
    site_ids = np.asarray(uniq.to_numpy() if hasattr(uniq, "to_numpy") else uniq)
    return ProfileBatch(site_ids=site_ids,
                        lat=as_float_array(df["lat"])[first_row],
                        lon=as_float_array(df["lon"])[first_row],
                        depth=Dp, top=T, bottom=B, soc=Y, weight=W, mask=mask,
                        n_layers=n_layers, date=date, validation=report)


def _warn(report: ValidationReport, where: str) -> None:
    if report.warnings:
        warnings.warn(f"{where}: the profile table has {len(report.warnings)} warning(s):\n"
                      + "\n".join(f"  - {p.check}: {p.message}" for p in report.warnings),
                      UserWarning, stacklevel=3)


def as_profile_batch(profiles: Any, *, where: str = "as_profile_batch") -> ProfileBatch:
    """A validated :class:`ProfileBatch` from a profile table or a batch (validated once).

    The one entry point of the consumers of profiles: a DataFrame is validated and packed
    (:func:`pack_profiles`); a batch made by :func:`pack_profiles` (``batch.validation``
    set, also after :meth:`ProfileBatch.subset`) is returned as it is; a batch built by hand
    or read back from xarray is validated once (its table, depths in m) and returned with
    ``validation`` set.

    Parameters
    ----------
    profiles : pandas.DataFrame or ProfileBatch
        Profile table (:data:`PROFILE_COLUMNS`; declare ambiguous depth units with
        ``df.attrs["depth_units"] = "m"`` or pack it with ``pack_profiles(df,
        depth_units="m")``) or a batch.
    where : str, keyword-only
        The caller, named in the error messages.

    Returns
    -------
    ProfileBatch

    Raises
    ------
    TypeError
        For any other type.
    ProfileValidationError
        If the profiles fail validation.

    Examples
    --------
    >>> import pandas as pd
    >>> df = pd.DataFrame({"profile_id": ["x", "x"], "lat": 1.0, "lon": 3.0,
    ...                    "top": [0.0, 0.2], "bottom": [0.2, 0.5], "soc": [1e4, 4e3]})
    >>> b = as_profile_batch(df)
    >>> as_profile_batch(b) is b, b.validation.ok
    (True, True)
    """
    if isinstance(profiles, ProfileBatch):
        if profiles.validation is not None:
            return profiles
        report = validate_profiles(profiles.to_frame(), depth_units="m")
        _warn(report, where)
        return dataclasses.replace(profiles, validation=report)
    if isinstance(profiles, pd.DataFrame):
        return pack_profiles(profiles)
    raise TypeError(f"{where}: profiles must be a DataFrame (profile table) or a ProfileBatch, "
                    f"got {type(profiles).__name__}")
