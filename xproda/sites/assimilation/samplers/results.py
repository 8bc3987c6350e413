"""Results of the samplers and optimisers, as tensors and as xarray Datasets or files."""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from xproda import conventions

__all__ = ["SamplerResult", "MapResult"]

_F64 = torch.float64


def _attr_value(v: Any) -> Any:
    if isinstance(v, bool):
        return int(v)
    if v is None:
        return "none"
    if isinstance(v, (int, float, str)):
        return v
    if isinstance(v, (list, tuple)) and all(
        isinstance(e, (int, float)) and not isinstance(e, bool) for e in v
    ):
        return np.asarray(v)
    return str(v)


def _np(x: Tensor) -> np.ndarray:
    x = x.detach().to("cpu")
    if x.dtype == torch.bool:
        return x.numpy()
    if x.is_floating_point():
        return x.to(_F64).numpy()
    return x.numpy()


def _param_coord(names: Sequence[str] | None, p: int) -> np.ndarray:
    if names is None:
        names = [f"theta_{i}" for i in range(p)]
    names = [str(n) for n in names]
    if len(names) != p:
        raise ValueError(f"param_names has {len(names)} names for {p} parameters")
    return np.asarray(names, dtype=object)


class _ToFiles:
    def to_netcdf(self, path: str | os.PathLike, **kwargs: Any) -> Any:
        """Write :meth:`to_dataset` to NetCDF (``kwargs`` go to ``Dataset.to_netcdf``)."""
        return self.to_dataset().to_netcdf(path, **kwargs)

    def to_zarr(self, store: Any, **kwargs: Any) -> Any:
        """Write :meth:`to_dataset` to Zarr (``kwargs`` go to ``Dataset.to_zarr``)."""
        with warnings.catch_warnings():
            # zarr warns that consolidated metadata is not part of the v3 spec (yet)
            warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")
            return self.to_dataset().to_zarr(store, **kwargs)


@dataclass
class SamplerResult(_ToFiles):
    """Output of :func:`adaptive_metropolis` and :func:`reference_sampler`.

    Attributes
    ----------
    method : str
        ``"adaptive_metropolis"`` or ``"reference"``.
    samples : Tensor or None
        Post-burn-in draws ``[site, chain, draw, parameter]`` (None if not stored). For the
        reference sampler the accepted samples after burn-in, left-aligned and NaN-padded
        (chains have different lengths).
    mean, sd : Tensor
        Posterior mean and standard deviation ``[site, parameter]`` (AM: pooled over chains;
        reference: PRODA's optimal chain).
    best : Tensor
        Best state ``[site, parameter]``: highest log density (AM) or lowest accepted cost
        (reference).
    best_value : Tensor
        Its log density or cost ``[site]``.
    rhat, ess : Tensor
        Rank-normalised split R-hat and bulk ESS ``[site, parameter]``.
    acceptance : Tensor
        Acceptance rate ``[site, chain]`` (AM: after burn-in; reference: accepted stage-2
        proposals / ``nsimu2`` of the final chain attempt).
    n_accepted : Tensor
        Accepted proposals ``[site, chain]`` (reference: ``upgrade2``).
    settings : dict
        The sampler's settings (stored as dataset attrs).
    param_names : list of str, optional
        Names for the ``parameter`` coordinate.
    extras : dict
        Method-specific outputs, ``name -> (dims, tensor)``.
    """

    method: str
    samples: Tensor | None
    mean: Tensor
    sd: Tensor
    best: Tensor
    best_value: Tensor
    rhat: Tensor
    ess: Tensor
    acceptance: Tensor
    n_accepted: Tensor
    settings: dict[str, Any]
    param_names: list[str] | None = None
    extras: dict[str, tuple[tuple[str, ...], Tensor]] = field(default_factory=dict)

    @property
    def n_sites(self) -> int:
        return int(self.mean.shape[0])

    @property
    def n_params(self) -> int:
        return int(self.mean.shape[1])

    @property
    def n_chains(self) -> int:
        return int(self.acceptance.shape[1])

    def to_dataset(
        self, *, param_names: Sequence[str] | None = None, site: Any = None
    ) -> "xr.Dataset":  # noqa: F821
        """The result as an :class:`xarray.Dataset`.

        Parameters
        ----------
        param_names : sequence of str, optional
            Values of the ``parameter`` coordinate (default: the names given to the sampler,
            else ``theta_0, theta_1, ...``).
        site : array_like, optional
            Values of the ``site`` coordinate (default ``0..n_sites-1``).

        Returns
        -------
        xarray.Dataset
            ``samples`` (site, chain, draw, parameter), ``mean``, ``sd``, ``best``, ``rhat``,
            ``ess`` (site, parameter), ``best_value`` (site), ``acceptance``, ``n_accepted``
            (site, chain) and the method's extras; attrs hold the method and settings.
        """
        import xarray as xr

        names = _param_coord(param_names or self.param_names, self.n_params)
        coords: dict[str, Any] = {
            "site": np.arange(self.n_sites) if site is None else np.asarray(site),
            "chain": np.arange(self.n_chains),
            "parameter": names,
        }
        dv: dict[str, Any] = {}
        if self.samples is not None:
            coords["draw"] = np.arange(self.samples.shape[2])
            dv["samples"] = (("site", "chain", "draw", "parameter"), _np(self.samples))
        for name in ("mean", "sd", "best", "rhat", "ess"):
            dv[name] = (("site", "parameter"), _np(getattr(self, name)))
        dv["best_value"] = (("site",), _np(self.best_value))
        dv["acceptance"] = (("site", "chain"), _np(self.acceptance))
        dv["n_accepted"] = (("site", "chain"), _np(self.n_accepted))
        for name, (dims, value) in self.extras.items():
            dv[name] = (tuple(dims), _np(value))
            if "statistic" in dims:
                coords["statistic"] = ["r2", "rmse"]
        ds = conventions.annotate(xr.Dataset(dv, coords=coords), "assimilation")
        ds.attrs = {"method": self.method}
        ds.attrs.update({k: _attr_value(v) for k, v in self.settings.items()})
        return ds


@dataclass
class MapResult(_ToFiles):
    """Output of :func:`map_estimate`.

    Attributes
    ----------
    theta_map : Tensor
        Best normalised parameters per site ``[site, parameter]`` (best start).
    loss : Tensor
        Loss at ``theta_map`` ``[site]``.
    n_steps : Tensor
        Optimiser steps of the selected start ``[site]``.
    converged : Tensor
        Whether the selected start met the convergence criteria ``[site]``.
    best_start : Tensor
        Index of the selected start ``[site]``.
    start_theta, start_loss, start_converged, start_n_steps : Tensor
        The same per start, ``[site, start, ...]``.
    method : str
        ``"adam"`` or ``"lbfgs"``.
    settings : dict
    param_names : list of str, optional
    """

    theta_map: Tensor
    loss: Tensor
    n_steps: Tensor
    converged: Tensor
    best_start: Tensor
    start_theta: Tensor
    start_loss: Tensor
    start_converged: Tensor
    start_n_steps: Tensor
    method: str
    settings: dict[str, Any]
    param_names: list[str] | None = None

    @property
    def theta(self) -> Tensor:
        """Alias of :attr:`theta_map`."""
        return self.theta_map

    def to_dataset(
        self, *, param_names: Sequence[str] | None = None, site: Any = None
    ) -> "xr.Dataset":  # noqa: F821
        """The result as an :class:`xarray.Dataset` (``map``, ``loss``, per-start values).

        Parameters
        ----------
        param_names : sequence of str, optional
            Values of the ``parameter`` coordinate.
        site : array_like, optional
            Values of the ``site`` coordinate.

        Returns
        -------
        xarray.Dataset
        """
        import xarray as xr

        s, k, p = self.start_theta.shape
        names = _param_coord(param_names or self.param_names, p)
        ds = xr.Dataset(
            {
                "map": (("site", "parameter"), _np(self.theta_map)),
                "loss": (("site",), _np(self.loss)),
                "converged": (("site",), _np(self.converged)),
                "n_steps": (("site",), _np(self.n_steps)),
                "best_start": (("site",), _np(self.best_start)),
                "start_map": (("site", "start", "parameter"), _np(self.start_theta)),
                "start_loss": (("site", "start"), _np(self.start_loss)),
                "start_converged": (("site", "start"), _np(self.start_converged)),
                "start_n_steps": (("site", "start"), _np(self.start_n_steps)),
            },
            coords={
                "site": np.arange(s) if site is None else np.asarray(site),
                "start": np.arange(k),
                "parameter": names,
            },
        )
        ds = conventions.annotate(ds, "assimilation")
        ds.attrs = {"method": f"map_{self.method}"}
        ds.attrs.update({kk: _attr_value(v) for kk, v in self.settings.items()})
        return ds
