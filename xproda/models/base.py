"""Shared machinery of the process models: inputs, litter stage, flags and results."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace
from typing import Any, Mapping

import numpy as np
import torch

from xproda import grid
from xproda.options import current as _option
from xproda.models import forcing as fmod
from xproda.models import transport
from xproda.models.fused import numpy_compatible
from xproda.models.parameters import ParameterSpace
from xproda.models.solve import thomas

__all__ = ["FLAGS", "decode_flags", "ModelOptions", "SoilCarbonModel", "SteadyState"]

#: bit flags of a column's steady state (``out["flags"]``); 0 means a valid number
FLAGS: dict[str, int] = {
    "no_data": 1,  # NaN in theta or forcing: outputs NaN (ocean / missing data)
    "singular": 2,  # the steady-state system is singular (zero pivot / overflow)
    "ill_conditioned": 4,  # float64 answer is rounding noise (reference open bedrock, §2.2)
    "negative_pools": 8,  # no physical (non-negative) steady state
    "low_soc_to_mic_ratio": 16,  # microbial: total C / MIC < threshold (reference rule, §3.5)
    "not_converged": 32,  # spin-up: no periodic state within max_cycles (transient runs)
}


def decode_flags(flags) -> list[list[str]]:
    """Names of the flags set in each column of ``flags`` (array-like of int)."""
    arr = np.asarray(flags).reshape(-1)
    return [[k for k, bit in FLAGS.items() if int(v) & bit] for v in arr]


@dataclass(frozen=True)
class ModelOptions:
    """Behaviour switches; defaults are the corrected behaviour, ``reference`` the original.

    Attributes
    ----------
    reference : bool
        Reproduce the original PRODA code (fixture parity).
    conservative_transport : bool
        Flux-consistent stencil below bedrock: mass conserving (spec §10 item 10).
        Reference: False (open bedrock boundary leaks carbon).
    inputs_below_bedrock : bool
        Distribute litter inputs over all 20 layers regardless of bedrock (reference, §10
        item 4).  Corrected default: False (profile truncated at bedrock as in CLM5).
    clip_negative : bool
        Set negative steady-state pools to 0 (reference, §10 item 16).  Corrected default:
        False: rounding-level negatives (relative 1e-9 of the column maximum) are set to 0,
        larger ones flag the column ``negative_pools`` and give NaN.
    detect_ill_conditioning : bool
        Flag columns whose reference float64 solve is rounding noise (only possible with the
        open bedrock boundary; spec §2.2) and return NaN for them.
    enzyme_turnover_index : int
        Microbial only: 0-based slot of theta read for the enzyme turnover time; 10
        (``tau4s3``, corrected) or 12 (``mm_const_assim``, the reference bug §10 item 1).
    min_soc_to_mic_ratio : float
        Microbial only: columns with total soil C / MIC (depth integrals) below this are invalid
        (reference DA rule; 0 disables).
    conditioning_tolerance : float
        Estimated relative error of the reference solve above which a column is flagged
        ``ill_conditioned``.
    """

    reference: bool = False
    conservative_transport: bool = True
    inputs_below_bedrock: bool = False
    clip_negative: bool = False
    detect_ill_conditioning: bool = True
    enzyme_turnover_index: int = 10
    min_soc_to_mic_ratio: float = 10.0
    conditioning_tolerance: float = 1e-8

    @classmethod
    def make(cls, reference: bool = False, **overrides: Any) -> "ModelOptions":
        base = cls()
        if reference:
            base = replace(
                base,
                reference=True,
                conservative_transport=False,
                inputs_below_bedrock=True,
                clip_negative=True,
                enzyme_turnover_index=12,
            )
        known = {f.name for f in fields(cls)}
        bad = set(overrides) - known
        if bad:
            raise TypeError(
                f"unknown model option(s) {sorted(bad)}; valid options are {sorted(known)}"
            )
        return replace(base, **overrides)


class SteadyState(dict):
    """Steady-state outputs (a dict of arrays, batch first) with a few conveniences.

    Keys common to both models: ``pools`` ``[n, 20, n_pools]`` (g C m-3), ``soc``
    ``[n, 20]`` (g C m-3), ``soc_stock`` ``[n]`` (g C m-2, 0-8.6 m), ``pool_stocks``
    ``[n, n_pools]`` (g C m-2), ``input`` and ``respiration`` ``[n]`` (g C m-2 yr-1),
    ``turnover_time`` ``[n]`` (yr, soc_stock / input), ``flags`` ``[n]`` (int, see
    :data:`FLAGS`) and ``valid`` ``[n]`` (bool).  With the open (reference) bedrock boundary
    also ``solve_error_estimate`` ``[n]``: the estimated relative error of the reference's
    dense LU solve, above ``conditioning_tolerance`` a column is flagged ``ill_conditioned``.
    """

    pool_names: tuple[str, ...] = ()

    def flag_names(self) -> list[list[str]]:
        """Decoded flags per column."""
        return decode_flags(self["flags"])

    def __repr__(self) -> str:
        n = len(self["flags"])
        nbad = int((~np.asarray(self["valid"])).sum())
        return f"<SteadyState: {n} columns, {nbad} flagged; keys: {', '.join(self)}>"


class SoilCarbonModel:
    """Base class of the process models (see :class:`~xproda.models.clm5.CLM5Model`)."""

    name: str = ""
    parameters: ParameterSpace
    pools: tuple[str, ...] = ()
    soil_pools: tuple[str, ...] = ()
    transport_parameters: tuple[str, str] = ("diffus", "cryo")
    required_forcing: tuple[str, ...] = (
        "TSOI",
        "W_SCALAR",
        "O_SCALAR",
        "FPI_vr",
        "ALTMAX",
        "ALTMAX_LASTYEAR",
        "nbedrock",
        *fmod.LITTER_INPUTS,
    )

    def __init__(self, *, reference: bool = False, **options: Any) -> None:
        self.options = ModelOptions.make(reference, **options)

    @property
    def reference(self) -> bool:
        return self.options.reference

    def __repr__(self) -> str:
        mode = "reference" if self.reference else "corrected"
        return f"<{type(self).__name__} {self.name!r} ({mode}): {len(self.parameters)} parameters, pools {self.pools}>"

    # ---------------------------------------------------------------------------------------
    # inputs
    # ---------------------------------------------------------------------------------------
    def prepare_inputs(self, theta, forcing: Mapping, required=None, steps=fmod.N_MONTHS):
        """Validated tensors ``(theta [n, P], forcing, n, numpy_out)`` of a kernel call."""
        fmod.check_mapping(forcing)
        numpy_out = not isinstance(theta, torch.Tensor) and not any(
            isinstance(v, torch.Tensor) for v in forcing.values()
        )
        dtype = fmod.kernel_dtype()
        device = fmod.resolve_device(theta, *forcing.values())
        th = self.check_theta(theta, dtype, device)
        f, n = fmod.validate_forcing(
            forcing, th.shape[0], required=required or self.required_forcing, dtype=dtype,
            device=device, steps=steps,
        )
        if th.shape[0] != n:
            th = th.expand(n, th.shape[1])
        return th, f, n, numpy_out

    def check_theta(self, theta, dtype, device) -> torch.Tensor:
        """``theta`` as a ``[n, P]`` tensor, or a ``ValueError`` naming what is wrong.

        Shape ``[n, P]`` in :attr:`parameters` order, values strictly inside (0, 1) (NaN
        allowed: no data); the message names the parameters out of range. Shared by the
        torch path and the fused kernels' checks.
        """
        th = fmod.as_tensor(theta, name="theta", dtype=dtype, device=device)
        P = len(self.parameters)
        if th.ndim != 2 or th.shape[1] != P:
            raise ValueError(
                f"theta must have shape [n, {P}] (normalised {self.name} parameters in the "
                f"order {self.parameters.names}), got {tuple(th.shape)}"
            )
        v = th.detach()
        if fmod.compiled_check(v):  # one compiled pass where all is well (no OpenMP region)
            from xproda.models.fused import value_range

            lo, hi, _, _ = value_range(v.numpy())
            if lo > 0.0 and hi < 1.0 or lo > hi:  # inside (0, 1), or all NaN
                return th
        bad = torch.isfinite(v) & ((v <= 0) | (v >= 1))
        if torch.isinf(v).any() or bad.any():
            cols = sorted(set(torch.nonzero(bad | torch.isinf(v))[:, 1].tolist()))
            names = ", ".join(self.parameters.names[c] for c in cols)
            raise ValueError(
                f"theta must lie strictly inside (0, 1) (normalised parameters); "
                f"out-of-range values for {names} "
                f"(min {float(v[torch.isfinite(v)].min()):.6g}, "
                f"max {float(v[torch.isfinite(v)].max()):.6g})"
            )
        return th

    @staticmethod
    def nan_rows(th: torch.Tensor, f: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """Columns without data (``[n]`` bool): a NaN in theta or in any forcing variable."""
        if numpy_compatible(th, *f.values()):  # numpy: no OpenMP region
            bad = np.isnan(th.detach().numpy()).any(-1)
            for t in f.values():
                bad |= np.isnan(t.detach().numpy()).reshape(t.shape[0], -1).any(-1)
            return torch.from_numpy(bad)
        bad = torch.isnan(th).any(-1)
        for t in f.values():
            bad = bad | torch.isnan(t).reshape(t.shape[0], -1).any(-1)
        return bad

    def transport_operator(self, theta, forcing: Mapping):
        """Annual mean transport matrix bands (lower, diag, upper), each ``[n, 20]`` (day-1).

        ``M[j, j-1]``, ``M[j, j]``, ``M[j, j+1]`` of the operator in ``dC/dt = ... - M C`` for
        the given parameters and forcing (see :mod:`xproda.models.transport`).
        """
        th, f, n, numpy_out = self.prepare_inputs(theta, forcing)
        p = self.parameters.physical_dict(th)
        bio, cryo = (p[k] for k in self.transport_parameters)
        bands = self.transport_bands(bio, cryo, f)
        return tuple(b.detach().cpu().numpy() for b in bands) if numpy_out else bands

    # ---------------------------------------------------------------------------------------
    # transient runs (implemented by models with a linear operator, see CLM5Model)
    # ---------------------------------------------------------------------------------------
    def simulate(self, theta, forcing: Mapping, **options: Any):
        """Time stepping under time-varying forcing (see :meth:`CLM5Model.simulate`)."""
        raise NotImplementedError(
            f"transient simulation is implemented for the linear CLM5 model ('clm5'); the "
            f"{self.name!r} model is nonlinear in its microbial pool and has no implicit "
            "step operator yet"
        )

    def spin_up(self, theta, forcing: Mapping, **options: Any):
        """Periodic steady state of cyclic forcing (see :meth:`CLM5Model.spin_up`)."""
        return self.simulate(theta, forcing, **options)

    # ---------------------------------------------------------------------------------------
    # shared stages
    # ---------------------------------------------------------------------------------------
    def transport_bands(self, bio, cryo, f):
        """Annual-mean vertical transport operator (tridiagonal bands) of every column."""
        return transport.mean_operator(
            bio, cryo, f, conservative=self.options.conservative_transport
        )

    def _input_density(self, beta, f, u=None):
        """Litter inputs per layer ``[n, 20, 4]`` (g C m-3 day-1) and annual totals ``[n, 4]``."""
        u = fmod.annual_inputs(f) if u is None else u
        nb = None if self.options.inputs_below_bedrock else f["nbedrock"]
        prof = fmod.input_profile(beta, f["ALTMAX_LASTYEAR"], nb)
        dz = layer_thickness(beta)
        dens = u.unsqueeze(1) * (prof / (dz * fmod.DAYS_PER_YEAR)).unsqueeze(-1)
        return dens, u

    @staticmethod
    def _litter(k, vbands, inputs, fcwdl2):
        """Steady state of CWD and the three litter pools (layer-first ``[20, n]`` tensors).

        ``k``: decomposition rates [cwd, l1, l2, l3] each ``[20, n]`` (day-1); ``vbands``:
        transport (lower, diag, upper) ``[20, n]``; ``inputs``: [cwd, l1, l2, l3] ``[20, n]``
        (g C m-3 day-1); ``fcwdl2``: ``[1, n]`` or ``[20, n]``.
        """
        lo, di, up = vbands
        i_cwd = inputs[0]
        zero = torch.zeros((), dtype=i_cwd.dtype, device=i_cwd.device)
        # CWD: not transported, fed only by input; zero input and zero rate give 0, not NaN
        x_cwd = torch.where(i_cwd == 0, zero, i_cwd / torch.where(i_cwd == 0, 1.0, k[0]))
        rhs = torch.stack(
            [inputs[1], inputs[2] + fcwdl2 * i_cwd, inputs[3] + (1.0 - fcwdl2) * i_cwd], dim=1
        )  # [20, 3, n]
        diag = di.unsqueeze(1) + torch.stack([k[1], k[2], k[3]], dim=1)
        x = thomas(lo.unsqueeze(1), diag, up.unsqueeze(1), rhs)
        return [x_cwd, x[:, 0], x[:, 1], x[:, 2]]

    def _conditioning(self, vbands_lf, kmin_lf) -> torch.Tensor:
        """Estimated relative error of the reference (pivoted dense LU) solve, ``[n]``.

        Where transport leaks (dz-weighted column sum of ``V`` negative, i.e. the open bedrock
        boundary) layer ``k`` is drawn on with strength ``leak_k`` while it only absorbs
        through its own decomposition ``dz_k (K_min + V_kk)``; partial pivoting then mixes
        rounding errors of size ``eps * leak_k`` into that row (spec §2.2), so
        ``eps * leak_k / (dz_k (K_min + V_kk))`` estimates the relative error.
        """
        lo, di, up = vbands_lf
        dz = layer_thickness(di).reshape(-1, 1)
        col = dz * di
        col = col + torch.cat([torch.zeros_like(di[:1]), dz[:-1] * up[:-1]], 0)
        col = col + torch.cat([dz[1:] * lo[1:], torch.zeros_like(di[:1])], 0)
        leak = torch.clamp(-col, min=0.0)
        strength = dz * (kmin_lf + di)
        est = torch.finfo(di.dtype).eps * leak / strength
        return torch.nan_to_num(est, nan=0.0, posinf=math.inf).amax(0)

    # ---------------------------------------------------------------------------------------
    # outputs
    # ---------------------------------------------------------------------------------------
    def _chunked(self, th, f, numpy_out: bool, fn) -> SteadyState:
        """Run ``fn(theta_chunk, forcing_chunk) -> SteadyState`` over batch chunks.

        Chunks of ``xproda.get_options()["kernel_batch_size"]`` columns keep temporaries in
        cache and memory bounded (linear in n with a small constant); results are identical to
        one call because every column is independent.
        """
        n = th.shape[0]
        size = _option("kernel_batch_size")
        if n <= size:
            parts = [fn(th, f)]
        else:
            parts = [
                fn(th[i:i + size], {k: v[i:i + size] for k, v in f.items()})
                for i in range(0, n, size)
            ]
        out = parts[0]
        if len(parts) > 1:
            out = SteadyState({k: torch.cat([q[k] for q in parts], 0) for k in out})
            out.pool_names = parts[0].pool_names
        if numpy_out:
            for key in list(out):
                out[key] = out[key].detach().cpu().numpy()
        return out

    def _finish(self, pools, extra, th, f, flags_extra, *, cond=None):
        """Common post-processing: negatives, flags, NaN, stocks; ``pools`` ``[n, 20, P]``."""
        dz = layer_thickness(pools)
        opts = self.options
        pd = pools.detach()
        finite = torch.isfinite(pd.sum((-1, -2)))  # NaN/inf anywhere make the sum non-finite
        # a NaN parameter marks a no-data cell even where that parameter is not used
        finite = finite & ~torch.isnan(th.detach()).any(-1)
        if bool(finite.all()):
            nan_rows = torch.zeros_like(finite)
        else:  # tell missing data from a singular system only where needed
            nan_rows = self.nan_rows(th, f)
        lo, hi = pd.amin((-1, -2)), pd.amax((-1, -2))
        significant_neg = torch.zeros_like(finite)
        if bool((lo < 0).any()):  # negatives are rare: handle them only when present
            neg_tol = (1e-9 * torch.maximum(hi.abs(), lo.abs())).nan_to_num(0.0, 0.0, 0.0)
            neg_tol = neg_tol.reshape(-1, 1, 1)
            significant_neg = (pd < -neg_tol).any(-1).any(-1)
            zero = torch.zeros_like(pools)
            pools = torch.where(pools < 0, zero, pools) if opts.clip_negative else (
                torch.where((pools < 0) & (pools >= -neg_tol), zero, pools)
            )
        flags = torch.zeros(pools.shape[0], dtype=torch.int64, device=pools.device)
        flags = flags | torch.where(nan_rows & ~finite, FLAGS["no_data"], 0)
        flags = flags | torch.where(~nan_rows & ~finite, FLAGS["singular"], 0)
        if not opts.clip_negative:
            flags = flags | torch.where(finite & significant_neg, FLAGS["negative_pools"], 0)
        if cond is not None and opts.detect_ill_conditioning:
            flags = flags | torch.where(cond > opts.conditioning_tolerance, FLAGS["ill_conditioned"], 0)
        for bit, mask in flags_extra:
            flags = flags | torch.where(mask & finite, bit, 0)
        valid = flags == 0
        if not bool(valid.all()):
            pools = torch.where(valid.reshape(-1, 1, 1), pools, torch.full_like(pools, math.nan))
        soc = pools[..., len(self.pools) - len(self.soil_pools):].sum(-1)
        pool_stocks = (pools * dz.reshape(1, -1, 1)).sum(1)
        soc_stock = (soc * dz).sum(-1)
        out = SteadyState(pools=pools, soc=soc, soc_stock=soc_stock, pool_stocks=pool_stocks)
        out.pool_names = self.pools
        for key, val in extra.items():
            out[key] = torch.where(valid, val, torch.full_like(val, math.nan))
        out["turnover_time"] = soc_stock / out["input"]
        if cond is not None:
            # estimated relative error of the reference's dense LU solve (see _conditioning)
            out["solve_error_estimate"] = torch.where(
                flags & FLAGS["no_data"] > 0, torch.full_like(cond, math.nan), cond
            )
        out["flags"] = flags
        out["valid"] = valid
        return out


def layer_thickness(like: torch.Tensor) -> torch.Tensor:
    """Thickness (m) of the 20 decomposition layers, dtype/device of ``like``."""
    return torch.tensor(grid.DZ[: grid.N_LAYERS], dtype=like.dtype, device=like.device)


class _LayerBroadcast(torch.autograd.Function):
    """``[n]`` -> ``[L, n]`` (a view) whose backward sums over the layers row by row.

    Broadcasting a per-column value against layer-first ``[L, n]`` tensors makes autograd
    reduce the gradient over the *outer* dim, and torch's outer reductions round differently
    depending on ``n`` (the batch size): a column's gradient would then depend on how many
    other columns share its batch. Summing the transposed, contiguous gradient over its inner
    dim gives every column the same bits whatever the batch (sharded site runs rely on it).
    """

    @staticmethod
    def forward(ctx, x, n_layers):  # type: ignore[override]
        return x.unsqueeze(0).expand(n_layers, x.shape[0])

    @staticmethod
    def backward(ctx, g):  # type: ignore[override]
        return g.transpose(0, 1).contiguous().sum(1), None


def lf(x: torch.Tensor) -> torch.Tensor:
    """Batch-first ``[n]`` / ``[n, 20]`` -> layer-first ``[1, n]`` / ``[20, n]``.

    A ``[n]`` tensor that needs a gradient becomes ``[20, n]`` through
    :class:`_LayerBroadcast` (a column's gradient independent of the batch size).
    """
    if x.ndim == 1:
        if x.requires_grad and torch.is_grad_enabled():
            return _LayerBroadcast.apply(x, grid.N_LAYERS)
        return x.unsqueeze(0)
    return x.transpose(0, 1)
