"""The process model at the observed layers of training sites.

:class:`SiteTensors` holds the observations, covariates and prepared forcing of a
:class:`~xproda.learning.data.TrainingData` as tensors and runs a model's steady state for
some of its sites, mapped to the observed layers (:class:`~xproda.models.interp.ModelToObs`);
training differentiates through it. :func:`soc_at_observations` is the same forward map as
plain arrays, for evaluation (cross-validation, covariate importance).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from xproda.models.interp import ModelToObs
from xproda.models import get_model
from xproda.models.base import SoilCarbonModel
from xproda.models.forcing import prepare_forcing
from xproda.learning.data import TrainingData

__all__ = ["SiteTensors", "soc_at_observations"]


class SiteTensors:
    """Observations, covariates and prepared forcing of a :class:`TrainingData` as tensors.

    Parameters
    ----------
    data : TrainingData
    mapping : {"pchip", "pchip_mean", "layer_mean"}, keyword-only
        Model-to-observation mapping (:class:`~xproda.models.interp.ModelToObs`).
    device : str or torch.device, keyword-only
    net_dtype : torch.dtype, keyword-only
        Dtype of the covariates ``x`` (the network's input); the forcing is float64.

    Attributes
    ----------
    obs, mask : Tensor, shape [S, D]
        Observed SOC density (g C m-3) and valid observations.
    depth, top, bottom : Tensor, shape [S, D]
        Node depth and layer bounds of the observations (m).
    x : Tensor, shape [S, F]
        Raw covariates.
    forcing : PreparedForcing
        Kernel forcing of the sites.
    mapping : str
    """

    def __init__(self, data: TrainingData, *, mapping: str, device: Any, net_dtype) -> None:
        t = data.batch.to_torch(device=device, fill_value=0.05)
        self.obs, self.mask = t["soc"], t["mask"]
        self.depth, self.top, self.bottom = t["depth"], t["top"], t["bottom"]
        self.x = torch.as_tensor(data.x, dtype=net_dtype, device=device)
        self.forcing = prepare_forcing(data.forcing, dtype=torch.float64, device=device)
        self.mapping = mapping

    def m2o(self, idx: torch.Tensor) -> ModelToObs:
        """The mapping from model layers to the observed layers of the sites ``idx``."""
        # padding gets a harmless valid layer (0-0.1 m), so no NaN enters a gradient; callers
        # mask it out with ``self.mask``
        mk = self.mask[idx]
        return ModelToObs(torch.where(mk, self.depth[idx], 0.05), method=self.mapping,
                          top=torch.where(mk, self.top[idx], 0.0),
                          bottom=torch.where(mk, self.bottom[idx], 0.1))

    def soc_at_obs(self, model: SoilCarbonModel, theta: torch.Tensor,
                   idx: torch.Tensor) -> torch.Tensor:
        """Modelled SOC at the observed layers ``[len(idx), D]`` of the sites ``idx``.

        Parameters
        ----------
        model : SoilCarbonModel
        theta : Tensor, shape [len(idx), P]
            Normalised parameters (run in float64; differentiable).
        idx : Tensor of int
            Site indices.

        Returns
        -------
        Tensor
            SOC density (g C m-3); padding positions hold finite values of a dummy layer
            (mask them with :attr:`mask`).
        """
        out = model.steady_state(theta.to(torch.float64), self.forcing.subset(idx))
        return self.m2o(idx)(out["soc"])


def soc_at_observations(model: str | SoilCarbonModel, data: TrainingData, theta: Any, *,
                        mapping: str = "pchip") -> np.ndarray:
    """Modelled SOC (g C m-3) at the observed layers ``[S, D]`` of a :class:`TrainingData`.

    Parameters
    ----------
    model : str or model
    data : TrainingData
    theta : array_like of shape [S, P] or None
        Normalised parameters per site; ``None`` runs the CLM5 default parameters
        (``default_steady_state`` with the Jackson input profile; for models without a
        default mode, the defaults of the parameter space, 0.5 where none exists).
    mapping : {"pchip", "pchip_mean", "layer_mean"}, keyword-only

    Returns
    -------
    numpy.ndarray
        ``[S, D]``; padding positions are NaN.
    """
    mdl = model if isinstance(model, SoilCarbonModel) else get_model(model)
    st = SiteTensors(data, mapping=mapping, device="cpu", net_dtype=torch.float64)
    idx = torch.arange(len(data))
    with torch.no_grad():
        if theta is None and hasattr(mdl, "default_steady_state"):
            out = mdl.default_steady_state(st.forcing, input_profile="beta")
            soc = st.m2o(idx)(out["soc"]).numpy()
        else:
            if theta is None:
                d = np.nan_to_num(mdl.parameters.default_normalized(), nan=0.5)
                theta = np.broadcast_to(np.clip(d, 1e-6, 1 - 1e-6), (len(data), d.size))
            th = torch.as_tensor(np.array(theta, dtype=np.float64))  # owned, writable
            soc = st.soc_at_obs(mdl, th, idx).numpy()
    return np.where(st.mask.numpy(), soc, np.nan)

