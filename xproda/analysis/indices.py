"""Bulk process indices of the CLM5 (CENTURY) model, spec §8.3.

Kernel: :func:`bulk_indices_columns` (torch, batch first).  Gridded: :func:`bulk_indices`
(lazy xarray, one value per column).
"""

from __future__ import annotations

from typing import Any, Mapping

import xarray as xr

from xproda import conventions, grid
from xproda.models import forcing as fmod
from xproda.models.base import SoilCarbonModel
from xproda.analysis import common as _common
from xproda.xr import engine

__all__ = ["INDEX_ATTRS", "bulk_indices_columns", "bulk_indices"]

#: metadata of the indices (units and meaning, spec §8.3): the registry's ``indices`` section
INDEX_ATTRS = conventions.INDICES
INDEX_NAMES = tuple(INDEX_ATTRS)

_DONORS = {  # pool index -> turnover-time parameter (CLM5 pool order)
    1: "taul1", 2: "taul2", 3: "taul2", 4: "tau4s1", 5: "tau4s2", 6: "tau4s3"}


def bulk_indices_columns(model: SoilCarbonModel, theta, forcing: Mapping) -> dict[str, Any]:
    """Bulk process indices A, K, Xi, V, I and NPP of ``n`` columns (spec §8.3, cen).

    Parameters
    ----------
    model : CLM5Model
        The ``"clm5"`` model (its options, e.g. ``reference``, apply).
    theta : array_like or Tensor
        ``[n, P]`` normalised parameters.
    forcing : mapping
        Kernel forcing, batch first.

    Returns
    -------
    dict
        ``{name: [n]}`` with the units of :data:`INDEX_ATTRS` (numpy in, numpy out):

        * ``A`` = sum_d f_d G_d / sum_d G_d over donors L1, L2, L3, S1, S2, S3 with
          ``G_d = sum_j X*_dj xi_j dz_j / tau_d`` and f_d the donor's total transfer
          fraction (``fl1s1``, ``fl2s1``, ``fl3s2``, ``fs1s2 + fs1s3``, ``fs2s1 + fs2s3``,
          ``fs3s1``);
        * ``K`` = sum_q S_q / tau_q / sum_q S_q over the soil pools (yr-1);
        * ``Xi`` = sum_j xi_j SOC_j dz_j / sum_j SOC_j dz_j with
          ``xi_j = mean_m(xi_T) mean_m(xi_W) exp(-z_j / efolding)`` (no xi_O, xi_N);
        * ``V`` = 365 sum_j M_jj SOC_j dz_j / sum_j SOC_j dz_j (yr-1), M the annual mean
          transport operator;
        * ``I`` = mean over layers with cumulative input fraction F_j < 1 of
          ``(1 - F_j) ** (1 / (100 zsoi_j))``;
        * ``NPP`` = total litter input U_tot (g m-2 yr-1).

        Columns without a valid steady state are NaN.
    """
    import torch

    if model.name != "clm5":
        raise NotImplementedError(
            f"bulk indices are implemented for model 'clm5' only, got {model.name!r} "
            "(the microbial indices of spec §8.3 are not built yet)")
    numpy_out = not isinstance(theta, torch.Tensor)
    th, f, n, _ = model.prepare_inputs(theta, forcing)
    ss = model.steady_state(th, f)
    p = model.parameters.physical_dict(th)
    X = ss["pools"]  # [n, 20, 7] g m-3
    dz = torch.tensor(grid.DZ[: grid.N_LAYERS], dtype=X.dtype, device=X.device)
    z = torch.tensor(grid.ZSOI[: grid.N_LAYERS], dtype=X.dtype, device=X.device)
    xt = fmod.nanmean_months(fmod.temperature_scalar(f["TSOI"], p["q10"], p["q10"]))
    xw = fmod.nanmean_months(fmod.water_scalar(f["W_SCALAR"], p["w-scaling"]))
    xi = xt * xw * fmod.depth_scalar(p["efolding"])  # [n, 20]
    soc = ss["soc"]
    soc_dz = soc * dz
    tot = soc_dz.sum(-1)
    S = (X * dz.reshape(1, -1, 1)).sum(1)  # [n, 7] g m-2
    K = sum(S[:, q] / p[_DONORS[q]] for q in (4, 5, 6)) / S[:, 4:].sum(-1)
    Xi = (xi * soc_dz).sum(-1) / tot
    G = {q: (X[..., q] * xi * dz).sum(-1) / p[t] for q, t in _DONORS.items()}
    frac = {1: p["fl1s1"], 2: p["fl2s1"], 3: p["fl3s2"], 4: p["fs1s2"] + p["fs1s3"],
            5: p["fs2s1"] + p["fs2s3"], 6: p["fs3s1"]}
    A = sum(frac[q] * G[q] for q in G) / sum(G.values())
    _, diag, _ = model.transport_bands(p["diffus"], p["cryo"], f)
    V = fmod.DAYS_PER_YEAR * (diag * soc_dz).sum(-1) / tot
    nb = None if model.options.inputs_below_bedrock else f["nbedrock"]
    prof = fmod.input_profile(p["beta"], f["ALTMAX_LASTYEAR"], nb)
    F = torch.cumsum(prof, -1)
    use = F < 1.0  # as the reference: layers where 1 - F is rounding-level count too
    one = torch.ones((), dtype=F.dtype, device=F.device)
    val = torch.exp(torch.log(torch.where(use, 1.0 - F, one)) / (100.0 * z))
    I_ = torch.where(use, val, torch.zeros_like(val)).sum(-1) / use.sum(-1)
    out = {"A": A, "K": K, "Xi": Xi, "V": V, "I": I_, "NPP": ss["input"]}
    nan = torch.full_like(A, float("nan"))
    out = {k: torch.where(ss["valid"], v.to(A.dtype), nan) for k, v in out.items()}
    if numpy_out:
        out = {k: v.detach().cpu().numpy() for k, v in out.items()}
    return out


def bulk_indices(
    ds: xr.Dataset,
    params: xr.DataArray | xr.Dataset,
    *,
    model: str | SoilCarbonModel = "clm5",
) -> xr.Dataset:
    """Bulk process indices of every column of a gridded forcing (spec §8.3), lazily.

    Parameters
    ----------
    ds : Dataset
        Forcing, as for :func:`xproda.xr.api.steady_state`.
    params : DataArray or Dataset
        Normalised parameters on the forcing grid (or broadcastable to it); extra dims
        (``member``, ...) are kept.
    model : str or model, keyword-only, default "clm5"
        Only ``"clm5"`` (CENTURY) is supported.

    Returns
    -------
    Dataset
        ``A`` (1, carbon transfer efficiency / CUE-like), ``K`` (yr-1, baseline
        decomposition), ``Xi`` (1, environmental modifier), ``V`` (yr-1, vertical
        transport), ``I`` (1, input allocation, effective beta) and ``NPP``
        (g m-2 yr-1, total input) on the spatial dims, with the definitions of
        :func:`bulk_indices_columns`; NaN where no valid steady state exists.  Lazy on
        dask input, chunk-invariant.
    """
    m = engine.resolve_model(model)
    if m.name != "clm5":
        raise NotImplementedError(f"model: bulk indices support 'clm5' only, found {m.name!r}")

    def fn(th, f):
        out = bulk_indices_columns(m, th, f)
        return [out[k] for k in INDEX_NAMES]

    res = _common.gridded_columns(ds, params, m, fn, [()] * len(INDEX_NAMES),
                                  [[]] * len(INDEX_NAMES))
    out = conventions.annotate(xr.Dataset(dict(zip(INDEX_NAMES, res))), "indices")
    out.attrs = {"Conventions": conventions.CF_CONVENTIONS,
                 "title": "Bulk process indices (spec 8.3)",
                 "history": conventions.history_line(f"bulk_indices(model={m.name!r})")}
    return out
