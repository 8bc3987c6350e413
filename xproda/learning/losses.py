"""Training losses: modelled vs observed SOC (end to end) and parameters (two-step).

:func:`soc_loss` compares modelled and observed SOC at the observed layers and is
differentiable through the process model (end-to-end training); :func:`parameter_loss`
compares predicted and data-assimilated normalised parameters (PRODA's two-step training,
spec §7.4). Both take the model/prediction first and the observation/target second.
"""

from __future__ import annotations

from typing import Literal

import torch

__all__ = ["soc_loss", "parameter_loss"]


def soc_loss(mod: torch.Tensor, obs: torch.Tensor, mask: torch.Tensor, *,
             kind: Literal["log", "soc"] = "log") -> torch.Tensor:
    """Loss between modelled and observed SOC at the observed layers (differentiable).

    Parameters
    ----------
    mod, obs : Tensor, shape [B, D]
        Modelled and observed SOC density (g C m-3); padding may be NaN.
    mask : Tensor of bool, shape [B, D]
        Valid observations.
    kind : {"log", "soc"}
        ``"log"``: mean over sites of the mean squared log error of the site's layers
        (dimensionless; equals the squared sd of log-normal errors; observations <= 0 are
        ignored); ``"soc"``: the pooled
        relative squared error ``sum (m - o)^2 / sum o^2``.

    Returns
    -------
    Tensor
        Scalar loss. Invalid entries never reach the gradient (no ``0 * NaN``).
    """
    one = torch.ones((), dtype=mod.dtype, device=mod.device)
    if kind == "log":  # log errors need positive observations
        mask = mask & (obs > 0)
    m = torch.where(mask, mod, one)
    o = torch.where(mask, obs, one)
    w = mask.to(mod.dtype)
    if kind == "log":
        e = (torch.log(m.clamp_min(1e-12)) - torch.log(o)) ** 2 * w
        n = w.sum(-1)
        per_site = e.sum(-1) / n.clamp_min(1.0)
        return per_site[n > 0].mean()
    if kind == "soc":
        return (((m - o) ** 2) * w).sum() / ((o ** 2) * w).sum()
    raise ValueError(f"loss must be 'log' or 'soc', got {kind!r}")


def parameter_loss(pred: torch.Tensor, target: torch.Tensor, *,
                   kind: Literal["mse", "cen_product"] = "mse") -> torch.Tensor:
    """Loss on normalised parameters (two-step training, spec §7.4).

    ``"mse"`` is the microbial scripts' ``500 * MSE`` without the constant factor;
    ``"cen_product"`` reproduces the clm5 (cen) scripts' ``(500 MSE) (25 MARE)`` product
    (spec §10 item 32: degenerate, offered for parity only).
    """
    mse = ((pred - target) ** 2).mean()
    if kind == "mse":
        return mse
    if kind == "cen_product":
        mare = ((pred - target) / target).abs().mean()
        return (500.0 * mse) * (25.0 * mare)
    raise ValueError(f"param_loss must be 'mse' or 'cen_product', got {kind!r}")
