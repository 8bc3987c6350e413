"""Microbial soil-carbon model (PRODA_MIC ``cesm2_clm5_mic_vr_v22``; "COMPAS"), spec §3.

Eight pools per layer: a litter part (CWD, L1, L2, L3; vertically transported except CWD,
solved as a matrix model) and a soil part (DOC, MIC, ENZ, SOC) with Michaelis-Menten uptake and
depolymerisation, solved in closed form per layer (no transport, no coupling between layers).
This is the model behind Tao et al. (2023, Nature): ``mic_cue`` is the microbial carbon use
efficiency of the paper.
"""

from __future__ import annotations

from typing import Mapping

import torch

from xproda.models import forcing as fmod
from xproda.models import fused_steady as _fused_steady
from xproda.models.base import FLAGS, SoilCarbonModel, SteadyState, layer_thickness, lf
from xproda.models.parameters import MICROBIAL_PARAMETERS

__all__ = ["MicrobialModel", "EFOLDING"]

#: fixed e-folding depth of the decomposition depth scalar (m), spec §3.2
EFOLDING = 0.5


class MicrobialModel(SoilCarbonModel):
    """Microbial (DOC/MIC/ENZ/SOC) soil carbon model with CLM5 litter and transport.

    Parameters
    ----------
    reference : bool, default False
        Reproduce the original code, including its enzyme-turnover index bug (turnover time of
        enzymes read from the ``mm_const_assim`` slot; spec §10 item 1), the open bedrock
        boundary and inputs below bedrock.  The default is the corrected model.
    **options
        Individual switches of :class:`~xproda.models.base.ModelOptions`.

    Notes
    -----
    A column has no physical steady state when a closed-form pool is negative (the
    Michaelis-Menten capacity cannot consume the supply) or, following the reference DA rule,
    when total soil C is less than ``min_soc_to_mic_ratio`` (10) times microbial C.  Such columns
    get NaN and the flags ``negative_pools`` / ``low_soc_to_mic_ratio`` (the reference code
    flipped their signs instead).
    """

    name = "microbial"
    parameters = MICROBIAL_PARAMETERS
    pools = ("cwd", "litter1", "litter2", "litter3", "doc", "mic", "enz", "soc")
    transport_parameters = ('bio', 'cryo')
    soil_pools = ("doc", "mic", "enz", "soc")

    def steady_state(self, theta, forcing: Mapping) -> SteadyState:
        """Steady state of ``n`` soil columns.

        Parameters
        ----------
        theta : array_like or Tensor
            ``[n, 23]`` normalised parameters in (0, 1), ordered as ``parameters.names``.
        forcing : mapping
            CLM5 forcing, batch first (see :data:`xproda.models.forcing.FORCING_SCHEMA`).

        Returns
        -------
        SteadyState
            ``pools`` ``[n, 20, 8]`` g C m-3, ``soc`` ``[n, 20]`` (DOC+MIC+ENZ+SOC, g C m-3),
            ``soc_stock`` ``[n]`` g C m-2, fluxes, ``flags``, ``valid``.  Numpy in gives numpy
            out; torch in gives torch out (differentiable).
        """
        fmod.check_mapping(forcing)
        if _fused_steady.steady_state_applicable(theta, forcing):
            return self._steady_state_fused(theta, forcing)
        th, f, n, numpy_out = self.prepare_inputs(theta, forcing)
        return self._chunked(th, f, numpy_out, self._steady_state)

    def _steady_state_fused(self, theta, forcing: Mapping) -> SteadyState:
        """:meth:`steady_state` in one compiled pass (:mod:`xproda.models.fused_steady`)."""
        o = self.options

        def solve(th, layered, monthly):
            return _fused_steady.microbial_steady_state(
                th, layered, monthly, self.parameters, efolding=EFOLDING,
                enzyme_turnover_index=o.enzyme_turnover_index,
                conservative=o.conservative_transport,
                inputs_below_bedrock=o.inputs_below_bedrock, clip_negative=o.clip_negative,
                detect_ill_conditioning=o.detect_ill_conditioning,
                conditioning_tolerance=o.conditioning_tolerance,
                min_soc_to_mic_ratio=o.min_soc_to_mic_ratio)

        return _fused_steady.steady_state_fused(self, theta, forcing, solve)

    def _steady_state(self, th, f) -> SteadyState:
        n = th.shape[0]
        p = self.parameters.physical_dict(th)
        # enzyme turnover time: log10 map to [1e-3, 1] yr from the configured theta slot
        p["tau_enz_turnover"] = self.parameters["tau4s3"].to_physical(
            th[:, self.options.enzyme_turnover_index]
        )
        dtype, device = th.dtype, th.device

        # environmental scalars: product of monthly means (spec §3.3)
        xt = fmod.nanmean_months(fmod.temperature_scalar(f["TSOI"], p["q10"]))
        xw = fmod.nanmean_months(fmod.water_scalar(f["W_SCALAR"], p["w_scaling"]))
        xo = fmod.nanmean_months(f["O_SCALAR"])
        xz = fmod.depth_scalar(torch.full((n,), EFOLDING, dtype=dtype, device=device))
        xi = xt * xw * xo * xz  # [n,20]
        nn = fmod.nanmean_months(f["FPI_vr"])
        day = 365.0
        k_cwd = xi / (day * p["tau4cwd"]).unsqueeze(-1)
        k_l1 = xi * nn / (day * p["tau4l1"]).unsqueeze(-1)
        k_l2 = xi * nn / (day * p["tau4l2"]).unsqueeze(-1)
        k_l3 = k_l2

        vb = self.transport_bands(p["bio"], p["cryo"], f)
        dens, u = self._input_density(p["beta"], f)
        vb_lf = tuple(lf(b) for b in vb)
        ins = [lf(dens[..., i]) for i in range(4)]
        K_lf = [lf(k) for k in (k_cwd, k_l1, k_l2, k_l3)]
        litter = self._litter(K_lf, vb_lf, ins, lf(p["fcwdl2"]))
        litter = torch.stack([x.transpose(0, 1) for x in litter], dim=-1)  # [n,20,4]
        if self.options.clip_negative:
            litter = torch.clamp(litter, min=0.0)
        else:
            tol = 1e-9 * litter.detach().abs().nan_to_num(0, 0, 0).amax((-1, -2), keepdim=True)
            litter = torch.where((litter < 0) & (litter >= -tol), torch.zeros_like(litter), litter)

        # soil part, closed form per layer (spec §3.5); all rates per day
        c = lambda name: p[name].unsqueeze(-1)  # noqa: E731  [n,1]
        d1 = k_l1 * litter[..., 1]
        d2 = k_l2 * litter[..., 2]
        d3 = k_l3 * litter[..., 3]
        pl1, pl2, pl3 = c("pl1s1"), c("pl2s1"), c("pl3s4")
        cue1, cue23, eps, pd = c("l1_cue"), c("l2l3_cue"), c("mic_cue"), c("pdeath2soc")
        u_soc = pl3 * d3
        u_doc = pl1 * d1 + pl2 * d2
        u_mic = (1 - pl1) * cue1 * d1 + (1 - pl2) * cue23 * d2 + (1 - pl3) * cue23 * d3
        # a layer without any supply (e.g. below bedrock with truncated inputs) holds no soil C:
        # the closed forms are 0/0 there but soil pools are not transported, so 0 is exact.
        # Substitute a dummy supply there so that values and gradients stay finite.
        no_supply = u_soc + u_doc + u_mic == 0
        one = torch.ones_like(u_soc)
        u_soc, u_doc, u_mic = (torch.where(no_supply, one, u) for u in (u_soc, u_doc, u_mic))
        k_d = 1.0 / (day * c("tau4s2_death"))
        k_e = 1.0 / (day * c("tau4s2_enz"))
        k_z = 1.0 / (day * c("tau_enz_turnover"))
        v_u = 1.0 / (day * c("tau4s1"))
        v_s = 1.0 / (day * c("tau4s4"))
        k_a, k_dd = c("mm_const_assim"), c("mm_const_decom")
        kde = (k_d + k_e) * xi
        mic = (u_mic + eps * (u_doc + u_soc)) / ((1 - eps) * kde)
        enz = (k_e / k_z) * mic
        supply = u_soc + pd * k_d * xi * mic
        soc = k_dd * xi * supply / (v_s * xi * enz - supply)
        doc = k_a * xi * (kde * mic - u_mic) / ((eps * v_u * xi - kde) * mic + u_mic)
        soil = torch.stack([doc, mic, enz, soc], dim=-1)
        soil = torch.where(no_supply.unsqueeze(-1), torch.zeros_like(soil), soil)
        doc, mic = soil[..., 0], soil[..., 1]
        pools = torch.cat([litter, soil], dim=-1)  # [n,20,8]

        dz = layer_thickness(xi)
        uptake = v_u * xi * mic * doc / (k_a * xi + doc)
        resp = (
            (1 - pl1) * (1 - cue1) * d1
            + (1 - pl2) * (1 - cue23) * d2
            + (1 - pl3) * (1 - cue23) * d3
            + (1 - eps) * uptake
        )
        respiration = (resp * dz).sum(-1) * fmod.DAYS_PER_YEAR
        input_total = (dens.sum(-1) * dz).sum(-1) * fmod.DAYS_PER_YEAR

        negative = (soil.detach() < 0).any(-1).any(-1)
        total_stock = (soil.sum(-1) * dz).sum(-1)
        mic_stock = (soil[..., 1] * dz).sum(-1)
        low_ratio = (total_stock < self.options.min_soc_to_mic_ratio * mic_stock) & ~negative
        cond = None
        if not self.options.conservative_transport:
            cond = self._conditioning(vb_lf, torch.stack(K_lf[1:], 0).amin(0))
        return self._finish(
            pools,
            {"input": input_total, "respiration": respiration},
            th,
            f,
            [(FLAGS["negative_pools"], negative), (FLAGS["low_soc_to_mic_ratio"], low_ratio)],
            cond=cond,
        )
