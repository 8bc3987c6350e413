"""CLM5 vertically resolved CENTURY model (PRODA ``cesm2_clm5_cen_vr_v2``), spec §2.

Seven pools (CWD, metabolic/cellulose/lignin litter, fast/slow/passive SOM) x 20 layers in the
CLM5 matrix form ``dX/dt = I + A K X - V X`` (days, g C m-3).  The steady state
``X* = (V - A K)^-1 I`` is solved with the structured solver of :mod:`xproda.models.solve`.
"""

from __future__ import annotations

from typing import Literal, Mapping

import numpy as np
import torch

from xproda.models import forcing as fmod
from xproda.models import fused_steady as _fused_steady
from xproda.models import transport
from xproda.models.base import SoilCarbonModel, SteadyState, layer_thickness, lf
from xproda.models.clm5_defaults import CLM5_DEFAULTS, sand_dependent_fractions
from xproda.models.parameters import CLM5_PARAMETERS
from xproda.models import fused as _fused
from xproda.models.solve import block3_thomas

__all__ = ["CLM5Model"]

_TAU = ("taucwd", "taul1", "taul2", "taul2", "tau4s1", "tau4s2", "tau4s3")


class CLM5Model(SoilCarbonModel):
    """CLM5 vertically resolved soil carbon (CENTURY) model.

    Parameters
    ----------
    reference : bool, default False
        Reproduce the original PRODA code exactly (open bedrock boundary, inputs below bedrock,
        negative pools clipped to 0); otherwise the corrected behaviour of the spec's bug list.
    **options
        Individual switches of :class:`~xproda.models.base.ModelOptions`.

    Examples
    --------
    >>> import numpy as np, xproda
    >>> m = xproda.get_model("clm5")
    >>> theta = np.full((1, 21), 0.5)
    >>> forcing = {  # one column, batch first (see FORCING_SCHEMA)
    ...     "TSOI": np.full((1, 12, 20), 283.15), "W_SCALAR": np.full((1, 12, 20), 0.6),
    ...     "O_SCALAR": np.ones((1, 12, 20)), "FPI_vr": np.full((1, 12, 20), 0.7),
    ...     "ALTMAX": np.full((1, 12), 6.0), "ALTMAX_LASTYEAR": np.full((1, 12), 6.0),
    ...     "nbedrock": np.full((1, 12), 20), "CWD_INPUT": np.full((1, 12), 5.0),
    ...     "LITR1_INPUT": np.full((1, 12), 15.0), "LITR2_INPUT": np.full((1, 12), 25.0),
    ...     "LITR3_INPUT": np.full((1, 12), 10.0)}
    >>> out = m.steady_state(theta, forcing)
    >>> out["soc"].shape, out["pools"].shape
    ((1, 20), (1, 20, 7))
    >>> bool(out["valid"][0])
    True
    """

    name = "clm5"
    parameters = CLM5_PARAMETERS
    pools = ("cwd", "litter1", "litter2", "litter3", "soil1", "soil2", "soil3")
    transport_parameters = ('diffus', 'cryo')
    soil_pools = ("soil1", "soil2", "soil3")

    # ---------------------------------------------------------------------------------------
    def steady_state(self, theta, forcing: Mapping) -> SteadyState:
        """Steady state of ``n`` soil columns.

        Parameters
        ----------
        theta : array_like or Tensor
            ``[n, 21]`` normalised parameters in (0, 1), ordered as ``parameters.names``.
        forcing : mapping
            CLM5 forcing, batch first (see :data:`xproda.models.forcing.FORCING_SCHEMA`).

        Returns
        -------
        SteadyState
            ``pools`` ``[n, 20, 7]`` g C m-3, ``soc`` ``[n, 20]`` g C m-3 (soil1+soil2+soil3),
            ``soc_stock`` ``[n]`` g C m-2 (0-8.6 m), fluxes, ``flags`` and ``valid``.  Numpy
            in gives numpy out; torch in gives torch out (differentiable).
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
            return _fused_steady.clm5_steady_state(
                th, layered, monthly, self.parameters, conservative=o.conservative_transport,
                inputs_below_bedrock=o.inputs_below_bedrock, clip_negative=o.clip_negative,
                detect_ill_conditioning=o.detect_ill_conditioning,
                conditioning_tolerance=o.conditioning_tolerance)

        return _fused_steady.steady_state_fused(self, theta, forcing, solve)

    def _steady_state(self, th, f) -> SteadyState:
        return self._run(self.physical_parameters(th), f, th)

    def physical_parameters(self, th) -> dict:
        """Physical parameter values ``{name: [n]}`` of normalised ``th [n, P]``."""
        p = self.parameters.physical_dict(th)
        p["froz_q10"] = p["q10"]  # PRODA ties the frozen Q10 to Q10 (spec §2.5)
        return p

    def default_steady_state(
        self,
        forcing: Mapping,
        *,
        input_profile: Literal["clm", "surface", "beta"] = "clm",
    ) -> SteadyState:
        """Steady state with the CLM5 default parameters (PRODA's ``is_default`` mode).

        Uses the constants of :data:`~xproda.models.clm5_defaults.CLM5_DEFAULTS` (read from
        ``clm5_params.c171117.nc``), the sand-dependent S1 transfer fractions of CLM5, and CLM's
        water scalar unscaled (spec §2.4, §2.7).

        Parameters
        ----------
        forcing : mapping
            As for :meth:`steady_state`, plus ``CELLSAND`` ``[n, 20]`` (%).
        input_profile : {"clm", "surface", "beta"}
            Vertical distribution of litter inputs: ``"clm"`` uses CLM's own per-layer inputs
            ``*_INPUT_vr`` ``[n, 12, 20]`` (g C m-3 month-1) as PRODA does; ``"surface"`` puts
            the column totals into layer 1; ``"beta"`` uses the Jackson profile with beta = 0.95.
        """
        fmod.check_mapping(forcing)
        required = self.required_forcing + ("CELLSAND",)
        if input_profile == "clm":
            missing = [k for k in fmod.LAYER_INPUTS if k not in forcing]
            if missing:
                raise KeyError(
                    f"input_profile='clm' needs CLM's per-layer inputs {missing} "
                    "([n, 12, 20], g C m-3 month-1); pass them or choose "
                    "input_profile='surface' or 'beta'"
                )
            required = required + fmod.LAYER_INPUTS
        elif input_profile not in ("surface", "beta"):
            raise ValueError(
                f"input_profile must be 'clm', 'surface' or 'beta', got {input_profile!r}"
            )
        numpy_out = not any(isinstance(v, torch.Tensor) for v in forcing.values())
        f, n = fmod.validate_forcing(
            forcing, None, required=required, dtype=fmod.kernel_dtype(),
            device=fmod.resolve_device(*forcing.values()),
        )
        th = torch.zeros((n, 1), dtype=f["TSOI"].dtype, device=f["TSOI"].device)
        return self._chunked(th, f, numpy_out, lambda t, ff: self._default(t, ff, input_profile))

    def _default(self, th, f, input_profile) -> SteadyState:
        n = th.shape[0]
        dtype, device = f["TSOI"].dtype, f["TSOI"].device
        p = {
            k: torch.full((n,), float(v), dtype=dtype, device=device)
            for k, v in CLM5_DEFAULTS.items()
            if k in self.parameters.names or k == "froz_q10"
        }
        p["fs1s2"], p["fs1s3"] = sand_dependent_fractions(f["CELLSAND"])
        p["w-scaling"] = None  # CLM's W_SCALAR unscaled
        dens = None
        if input_profile == "clm":
            dz = layer_thickness(th)
            per_layer = torch.stack(
                [fmod.nansum_months(f[k]) for k in fmod.LAYER_INPUTS], dim=-1
            )  # [n, 20, 4] g C m-3 yr-1
            u = (per_layer * dz.reshape(1, -1, 1)).sum(1)
            dens = (per_layer / fmod.DAYS_PER_YEAR, u)
        elif input_profile == "surface":
            u = fmod.annual_inputs(f)
            dz1 = float(fmod.grid.DZ[0])
            d = torch.zeros((n, 20, 4), dtype=dtype, device=device)
            d = torch.cat([(u / (dz1 * fmod.DAYS_PER_YEAR)).unsqueeze(1), d[:, 1:]], dim=1)
            dens = (d, u)
        return self._run(p, f, th, inputs=dens)

    # ---------------------------------------------------------------------------------------
    def rates(self, p: Mapping, f: Mapping) -> torch.Tensor:
        """Annual mean decomposition rates ``K`` ``[n, 20, 7]`` (day-1), spec §2.5.

        ``K_m = k_p xi_T xi_W xi_O xi_z (xi_N for litter)``, averaged over the 12 months
        (NaN months omitted).
        """
        soil, litter = self.environment(p, f)
        m_soil = fmod.nanmean_months(soil)  # [n,20]
        m_litter = fmod.nanmean_months(litter)
        xz = fmod.depth_scalar(p["efolding"])
        env = torch.stack([m_soil, m_litter, m_litter, m_litter, m_soil, m_soil, m_soil], -1)
        return self.turnover_rates(p).unsqueeze(1) * (xz.unsqueeze(-1) * env)

    @staticmethod
    def environment(p: Mapping, f: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        """Environmental rate modifiers per month (or time step), ``[n, T, 20]`` each.

        ``xi_T xi_W xi_O`` (CWD and SOM pools) and ``xi_T xi_W xi_O xi_N`` (litter pools),
        before the depth scalar; :meth:`rates` averages them over the months.
        """
        xt = fmod.temperature_scalar(f["TSOI"], p["q10"], p.get("froz_q10"))
        xw = fmod.water_scalar(f["W_SCALAR"], p["w-scaling"])
        two = xt * xw
        two = two.mul_(f["O_SCALAR"]) if _inplace_ok(two, f["O_SCALAR"]) else two * f["O_SCALAR"]
        return two, two * f["FPI_vr"]

    @staticmethod
    def turnover_rates(p: Mapping) -> torch.Tensor:
        """Base decomposition rates ``1 / (365 tau)`` of the 7 pools, ``[n, 7]`` (day-1)."""
        return torch.stack([1.0 / (365.0 * p[t]) for t in _TAU], dim=-1)

    def _assemble(self, p, f, inputs=None):
        K = self.rates(p, f)  # [n,20,7]
        vb = self.transport_bands(p["diffus"], p["cryo"], f)
        dens, _ = self._input_density(p["beta"], f) if inputs is None else inputs
        return K, vb, dens

    def dense_system(self, theta, forcing: Mapping) -> tuple[torch.Tensor, torch.Tensor]:
        """The steady-state system as dense matrices (diagnostics, tests, baselines only).

        Returns ``(L, I)`` with ``L = V - A K`` ``[n, 140, 140]`` (day-1) and ``I`` ``[n, 140]``
        (g C m-3 day-1) in the reference's pool-major order (index = pool * 20 + layer), so
        that ``X = solve(L, I)`` is the steady state before clipping.  Never used on the hot
        path: :meth:`steady_state` solves the same system in O(20 * 3^3) per column.
        """
        th, f, n, _ = self.prepare_inputs(theta, forcing)
        p = self.parameters.physical_dict(th)
        K, (lo, di, up), dens = self._assemble(p, f)
        nl, npool = K.shape[1], K.shape[2]
        dtype, device = K.dtype, K.device
        band = transport.dense(lo, di, up)  # [n,20,20]
        L = torch.zeros((n, npool * nl, npool * nl), dtype=dtype, device=device)
        for q in range(1, npool):  # CWD is not transported
            L[:, q * nl:(q + 1) * nl, q * nl:(q + 1) * nl] = band
        lay = lambda x: x.expand(n) if x.ndim == 1 else x  # noqa: E731
        frac = {  # (receiver, donor): fraction
            (2, 0): p["fcwdl2"], (3, 0): 1.0 - p["fcwdl2"], (4, 1): p["fl1s1"],
            (4, 2): p["fl2s1"], (4, 5): p["fs2s1"], (4, 6): p["fs3s1"], (5, 3): p["fl3s2"],
            (5, 4): p["fs1s2"], (6, 4): p["fs1s3"], (6, 5): p["fs2s3"],
        }
        idx = torch.arange(nl, device=device)
        for q in range(npool):
            L[:, q * nl + idx, q * nl + idx] += K[..., q]
        for (r, d), fr in frac.items():
            fr = lay(fr)
            fr = fr.unsqueeze(-1) if fr.ndim == 1 else fr
            L[:, r * nl + idx, d * nl + idx] -= fr * K[..., d]
        rhs = torch.zeros((n, npool * nl), dtype=dtype, device=device)
        rhs[:, : 4 * nl] = dens.transpose(1, 2).reshape(n, 4 * nl)
        return L, rhs

    def _pools_torch(self, K, vb, dens, p) -> torch.Tensor:
        """Staged structured solve in torch (differentiable, any device): pools ``[n, 20, 7]``."""
        K_lf = [lf(K[..., i]) for i in range(7)]
        vb_lf = tuple(lf(b) for b in vb)
        ins = [lf(dens[..., i]) for i in range(4)]
        fr = {k: lf(p[k]) for k in _fused.FRACTION_ORDER}
        x_cwd, x1, x2, x3 = self._litter(K_lf[:4], vb_lf, ins, fr["fcwdl2"])
        k1, k2, k3 = K_lf[4:]
        lo, di, up = vb_lf
        zero = torch.zeros_like(k1)
        blocks = [
            [di + k1, -fr["fs2s1"] * k2, -fr["fs3s1"] * k3],
            [-fr["fs1s2"] * k1, di + k2, zero],
            [-fr["fs1s3"] * k1, -fr["fs2s3"] * k2, di + k3],
        ]
        rhs = [
            fr["fl1s1"] * K_lf[1] * x1 + fr["fl2s1"] * K_lf[2] * x2,
            fr["fl3s2"] * K_lf[3] * x3,
            zero,
        ]
        s1, s2, s3 = block3_thomas(lo, blocks, up, rhs)
        return torch.stack([x.transpose(0, 1) for x in (x_cwd, x1, x2, x3, s1, s2, s3)], dim=-1)

    @staticmethod
    def fraction_array(p: Mapping, n: int, n_layers: int) -> torch.Tensor:
        """Transfer fractions ``[n, L, 9]`` in :data:`~xproda.models.fused.FRACTION_ORDER`."""
        cols = [(p[k].unsqueeze(-1) if p[k].ndim == 1 else p[k]).expand(n, n_layers)
                for k in _fused.FRACTION_ORDER]
        if _fused.fused_applicable(*cols):  # the same copies in numpy: no OpenMP region
            return torch.from_numpy(np.stack([c.numpy() for c in cols], -1))
        return torch.stack(cols, dim=-1)

    @staticmethod
    def respired_fractions(fr: torch.Tensor) -> torch.Tensor:
        """Respired fraction of each donor pool's decomposition flux ``[n, L, 7]``.

        ``fr``: :meth:`fraction_array`.  CWD respires nothing (it fragments into L2/L3).
        """
        g = {k: fr[..., i] for i, k in enumerate(_fused.FRACTION_ORDER)}
        return torch.stack([
            torch.zeros_like(g["fl1s1"]), 1.0 - g["fl1s1"], 1.0 - g["fl2s1"], 1.0 - g["fl3s2"],
            1.0 - g["fs1s2"] - g["fs1s3"], 1.0 - g["fs2s1"] - g["fs2s3"], 1.0 - g["fs3s1"],
        ], -1)

    @staticmethod
    def _pools_fused(K, vb, dens, fr) -> torch.Tensor:
        """The same solve by the fused numba kernel (CPU, no autograd): pools ``[n, 20, 7]``."""
        n, nl = K.shape[0], K.shape[1]
        np_ = lambda t: t.detach().numpy()  # noqa: E731  (no autograd on this path)
        bands = [np_(b.expand(n, nl)) for b in vb]
        out = _fused.clm5_pools(np_(K), *bands, np_(dens), np_(fr))
        return torch.from_numpy(out)

    # ---------------------------------------------------------------------------------------
    def _run(self, p, f, th, *, inputs=None) -> SteadyState:
        K, vb, dens = self._assemble(p, f, inputs)
        fr = self.fraction_array(p, K.shape[0], K.shape[1])
        if _fused.fused_applicable(K, *vb, dens, fr):
            pools = self._pools_fused(K, vb, dens, fr)
        else:
            pools = self._pools_torch(K, vb, dens, p)
        # heterotrophic respiration: respired fraction of each donor's decomposition flux
        rf = self.respired_fractions(fr)
        dz = layer_thickness(K)
        resp = (rf * K * pools).sum(-1)  # g C m-3 day-1 per layer
        respiration = (resp * dz).sum(-1) * fmod.DAYS_PER_YEAR
        input_total = (dens.sum(-1) * dz).sum(-1) * fmod.DAYS_PER_YEAR
        cond = None
        if not self.options.conservative_transport:
            cond = self._conditioning(tuple(lf(b) for b in vb), lf(K[..., 1:].amin(-1)))
        extra = {"input": input_total, "respiration": respiration}
        return self._finish(pools, extra, th, f, [], cond=cond)


def _inplace_ok(*ts: torch.Tensor) -> bool:
    """In-place update of a fresh temporary is safe when autograd records nothing."""
    return not (torch.is_grad_enabled() and any(t.requires_grad for t in ts))
