"""Transient runs of the CLM5 matrix model: implicit time stepping and semi-analytic spin-up.

The steady state solves ``(V - A K) X = I`` with the annual mean operator.  A transient run
integrates ``dX/dt = I_t - (V_t - A K_t) X`` with the operator of each time step (that step's
temperature, moisture, oxygen, nitrogen, active layer and bedrock) by the **backward Euler**
method::

    (V_t - A K_t + I / dt_t) X_{t+1} = I_t + X_t / dt_t

Each step is the steady-state system with every diagonal shifted by ``1 / dt_t`` and a
right-hand side on every pool, so it is solved by the same staged elimination (CWD in closed
form, three Thomas sweeps, one 3x3 block-tridiagonal sweep: O(20 * 3^3) per column) without
pivoting: ``V - A K`` is an M-matrix, adding a positive diagonal keeps it one, so steps are
stable for any ``dt`` and keep pools non-negative.

**Mass balance.**  The dz-weighted column sums of ``V`` vanish (conservative transport, the
default) and those of ``-A K`` are the respired fractions of the decomposition fluxes, hence
for every step, exactly up to rounding::

    total_carbon_{t+1} - total_carbon_t = (input_t - respiration_t) * dt_t / 365

with ``respiration_t`` evaluated at the end-of-step state (the implicit flux).  With the
reference (open) bedrock boundary the column leaks and the balance does not close.

**Units and time steps.**  Step lengths are in days.  Litter inputs keep the steady-state
convention: a monthly value (g C m-2 month-1) is a rate per mean month of 365/12 days, so a
year of 12 values adds the same carbon as the steady state's annual sum whatever the step
lengths.  The default step is 365/12 days: with equal steps the annual mean operator of the
steady state (an unweighted mean of the 12 months) is exactly the time mean of the step
operators, so constant forcing keeps the steady state a fixed point.  PRODA's transient code
(spec §8.7) steps explicitly with calendar month lengths and divides each monthly input by the
days of its month; pass ``dt`` as those lengths to use calendar months.

**Spin-up.**  :func:`spin_up` finds the periodic state of cyclic forcing (e.g. a 12-month
climatology) semi-analytically: start from the steady state of the dt-weighted mean operator
``Lbar X = Ibar``, then repeat one-period runs ``P(X)`` corrected by the mean operator::

    X <- P(X) + (tau Lbar)^-1 (P(X) - X)        (tau: period length, days)

For modes slower than the period the correction is a Newton step on the periodic map (their
one-period propagator is ``~ I - tau Lbar``); fast modes are damped by the period run itself.
The error contracts by a factor <= ~0.3 per cycle for every mode, so a column converges in
tens of cycles where plain cycling (``method="plain"``) needs many times the slowest turnover
time (thousands of years for passive carbon in cold soils).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace
from typing import Any, Literal, Mapping

import numpy as np
import torch

from xproda.options import current as _option
from xproda.options import progress_bar
from xproda.models import fused as _fused
from xproda.models import fused_spinup as _fused_spinup
from xproda.models import fused_steady as _fused_steady
from xproda.models import forcing as fmod
from xproda.models import transport
from xproda.models.base import FLAGS, layer_thickness, lf
from xproda.models.clm5 import CLM5Model
from xproda.models.solve import block3_thomas, thomas

__all__ = [
    "DEFAULT_DT",
    "Simulation",
    "SpinUp",
    "SpinUpReport",
    "StepOperators",
    "step_lengths",
    "build_operators",
    "integrate",
    "shifted_solve",
    "simulate",
    "spin_up",
    "repeat_forcing",
]

#: default step length (days): one mean month of a 365-day year
DEFAULT_DT = fmod.DAYS_PER_YEAR / fmod.N_MONTHS
#: litter inputs are rates per mean month; per day this factor converts them
_PER_DAY = fmod.N_MONTHS / fmod.DAYS_PER_YEAR

_FR = _fused.FRACTION_ORDER


class Simulation(dict):
    """Outputs of a transient run (a dict of arrays, batch first).

    Keys: ``pools`` ``[n, 20, 7]`` (g C m-3) at the end of the run; ``initial_pools``;
    ``soc_stock`` and ``total_carbon`` ``[n, T]`` (g C m-2; soil pools / all 7 pools at the
    end of each step); ``initial_soc_stock`` and ``initial_total_carbon`` ``[n]``;
    ``input``, ``respiration`` and ``net_flux`` ``[n, T]`` (g C m-2 yr-1, mean over each
    step; net flux = input - respiration, positive when the soil gains carbon); ``dt``
    ``[T]`` (days); ``soc`` ``[n, T, 20]`` (g C m-3) when profiles are saved; ``flags`` and
    ``valid`` ``[n]``.  ``spin_up`` holds the :class:`SpinUp` that gave the initial state,
    if any.
    """

    spin_up: "SpinUp | None" = None

    def mass_balance_error(self):
        """Relative mass-balance residual per step ``[n, T]``.

        ``|dC - (input - respiration) dt / 365| / C`` with ``C`` the total carbon: about
        1e-15 with conservative transport.
        """
        tot = self["total_carbon"]
        prev = _cat_prev(self["initial_total_carbon"], tot)
        flux = (self["input"] - self["respiration"]) * self["dt"].reshape(1, -1) / fmod.DAYS_PER_YEAR
        return abs((tot - prev) - flux) / abs(tot)

    def __repr__(self) -> str:
        n, T = self["soc_stock"].shape
        return f"<Simulation: {n} columns x {T} steps; keys: {', '.join(self)}>"


class SpinUp(dict):
    """Periodic state of cyclic forcing (a dict of arrays, batch first).

    Keys: ``pools`` ``[n, 20, 7]`` (g C m-3) at the start of the period, ``soc`` ``[n, 20]``,
    ``soc_stock`` ``[n]`` (g C m-2), ``cycles`` ``[n]`` (periods run), ``change`` ``[n]``
    (last relative update, max norm), ``converged``, ``flags`` and ``valid`` ``[n]``;
    ``report`` (:class:`SpinUpReport`) summarises the run.
    """

    report: "SpinUpReport | None" = None

    def __repr__(self) -> str:
        return f"<SpinUp: {len(self['cycles'])} columns; {self.report}>"


@dataclass
class SpinUpReport:
    """Convergence summary of :func:`spin_up`.

    Attributes
    ----------
    method : str
    tol : float
        Relative (max-norm) change per cycle below which a column has converged.
    period_steps : int
        Steps per cycle.
    period_days : float
    columns, converged, no_data : int
        Column counts (no-data columns hold NaN and are not iterated).
    max_cycles : int
        Cycle limit.
    cycles_median, cycles_max : float
        Cycles run by the converged columns.
    column_steps : int
        Column-steps integrated (the cost; the semi-analytic method adds one mean-operator
        solve per column-cycle, about the cost of one step).
    seconds : float
        Wall time.
    history : list of float
        Largest relative change among the still-iterating columns after each cycle.
    """

    method: str
    tol: float
    period_steps: int
    period_days: float
    columns: int
    converged: int
    no_data: int
    max_cycles: int
    cycles_median: float
    cycles_max: float
    column_steps: int
    seconds: float
    history: list = field(default_factory=list)

    def __str__(self) -> str:
        return (
            f"{self.method} spin-up: {self.converged}/{self.columns - self.no_data} columns "
            f"converged to {self.tol:g} in {self.cycles_median:g} (median) / "
            f"{self.cycles_max:g} (max) cycles of {self.period_steps} steps; "
            f"{self.column_steps:,} column-steps in {self.seconds:.2f} s"
        )


# -------------------------------------------------------------------------------------------
# operators of the time steps
# -------------------------------------------------------------------------------------------
@dataclass
class StepOperators:
    """Per-step operators of ``n`` columns over ``T`` steps (tensors, batch first).

    Rates are formed per step from the raw forcing (``forcing``: ``TSOI``, ``W_SCALAR``,
    ``O_SCALAR``, ``FPI_vr`` ``[n, T, L]``) and the parameters (``kb``, ``q10``,
    ``w_scaling``).  Distinct transport / input-profile operators (they change only with the
    active layer and bedrock) are stored once: ``band_index[t]`` selects step ``t``'s.
    """

    kb: torch.Tensor  # [n, L, 7] k_p * xi_z (day-1)
    q10: torch.Tensor  # [n]
    w_scaling: torch.Tensor  # [n]
    forcing: dict  # name -> [n, T, L]
    lower: torch.Tensor  # [n, B, L]
    diag: torch.Tensor
    upper: torch.Tensor
    profile: torch.Tensor  # [n, B, L] g C m-3 day-1 per g C m-2 month-1
    band_index: np.ndarray  # [T] int
    inputs: torch.Tensor  # [n, T, 4] g C m-2 month-1
    fractions: torch.Tensor  # [n, L, 9]
    dt: torch.Tensor  # [T] days

    @property
    def steps(self) -> int:
        return self.inputs.shape[1]

    @property
    def tensors(self) -> tuple[torch.Tensor, ...]:
        """Every tensor of the operators (for device, dtype and autograd checks)."""
        return (self.kb, self.q10, self.w_scaling, *(self.forcing[k] for k in _RATE_FORCING),
                self.lower, self.diag, self.upper, self.profile, self.inputs, self.fractions)

    def columns(self, idx: torch.Tensor) -> "StepOperators":
        """The operators of columns ``idx``."""
        return replace(
            self, kb=_take_rows(self.kb, idx), q10=_take_rows(self.q10, idx),
            w_scaling=_take_rows(self.w_scaling, idx),
            forcing={k: _take_rows(v, idx) for k, v in self.forcing.items()},
            lower=_take_rows(self.lower, idx), diag=_take_rows(self.diag, idx),
            upper=_take_rows(self.upper, idx), profile=_take_rows(self.profile, idx),
            inputs=_take_rows(self.inputs, idx), fractions=_take_rows(self.fractions, idx),
        )

    def environment(self, t0: int = 0, t1: int | None = None):
        """Environmental modifiers of steps ``t0:t1`` (CWD/SOM, litter), ``[n, T, L]``."""
        p = {"q10": self.q10, "froz_q10": self.q10, "w-scaling": self.w_scaling}
        return CLM5Model.environment(p, {k: v[:, t0:t1] for k, v in self.forcing.items()})

    def rates(self, t: int) -> torch.Tensor:
        """Decomposition rates of step ``t``, ``[n, L, 7]`` (day-1)."""
        es, el = (e[:, 0] for e in self.environment(t, t + 1))
        return self.kb * torch.stack([es, el, el, el, es, es, es], -1)

    def mean(self) -> tuple[torch.Tensor, tuple[torch.Tensor, ...], torch.Tensor]:
        """dt-weighted time means: rates ``[n, L, 7]``, bands, input density ``[n, L, 4]``."""
        # explicit sums over steps, not einsum: BLAS kernels chosen by matrix size would make
        # a column's rounding depend on how many columns share the call (chunk invariance)
        w = self.dt / self.dt.sum()  # [T]
        env_s, env_l = self.environment()
        idx = torch.as_tensor(self.band_index, device=w.device)
        wb = torch.zeros(self.lower.shape[1], dtype=w.dtype, device=w.device).index_add_(0, idx, w)
        tensors = (w, wb, env_s, env_l, self.kb, self.lower, self.diag, self.upper,
                   self.inputs, self.profile)
        if _fused.fused_applicable(*tensors):  # the same sums compiled: no OpenMP regions
            K, bands, dens = _fused_spinup.mean_operator(
                w.numpy(), env_s.numpy(), env_l.numpy(), self.kb.numpy(), wb.numpy(),
                self.lower.numpy(), self.diag.numpy(), self.upper.numpy(), self.inputs.numpy(),
                self.profile.numpy(), self.band_index)
            return (torch.from_numpy(K), tuple(torch.from_numpy(b) for b in bands),
                    torch.from_numpy(dens))
        es = _weighted_sum(w, env_s)
        el = _weighted_sum(w, env_l)
        K = self.kb * torch.stack([es, el, el, el, es, es, es], -1)
        bands = tuple(_weighted_sum(wb, x) for x in (self.lower, self.diag, self.upper))
        dens = _weighted_sum(w, self.inputs.unsqueeze(2) * self.profile[:, idx].unsqueeze(-1))
        return K, bands, dens


def _take_rows(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """``t[idx]`` along the first axis: compiled row copies where the fused kernels apply
    (:func:`xproda.models.fused_spinup.take_rows`, no OpenMP region), torch indexing else."""
    if _fused.fused_applicable(t, idx):
        return torch.from_numpy(_fused_spinup.take_rows(t.numpy(), idx.numpy()))
    return t[idx]


def _weighted_sum(w: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``sum_t w[t] x[:, t]`` in a fixed order (bit-identical for any batch size)."""
    acc = w[0] * x[:, 0]
    for t in range(1, x.shape[1]):
        acc = acc + w[t] * x[:, t]
    return acc


def step_lengths(dt: Any, steps: int, *, dtype: torch.dtype = torch.float64,
                 device: torch.device | str = "cpu") -> torch.Tensor:
    """Step lengths ``[steps]`` in days from ``None`` (365/12), a number or an array."""
    if dt is None:
        return torch.full((steps,), DEFAULT_DT, dtype=dtype, device=device)
    arr = torch.as_tensor(np.asarray(dt, dtype=np.float64), dtype=dtype, device=device)
    if arr.ndim == 0:
        arr = arr.expand(steps).clone()
    if arr.shape != (steps,):
        raise ValueError(
            f"dt must be a number of days or one length per time step ({steps}), got shape "
            f"{tuple(arr.shape)}"
        )
    if not bool(torch.isfinite(arr).all()) or bool((arr <= 0).any()):
        raise ValueError(f"dt must hold positive, finite step lengths in days, got {arr.tolist()[:12]}")
    return arr


def distinct_steps(f: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, np.ndarray]:
    """Steps whose (ALT, ALT last year, bedrock) differ: ``(stored steps, band_index)``.

    ``f``: validated forcing ``[n, T]``. All steps alike give one stored step; an annual
    cycle (the same values 12 steps later) its 12; otherwise every step is stored. The
    stored steps are always the first ``B`` (``arange(B)``).
    """
    keys = (f["ALTMAX"], f["ALTMAX_LASTYEAR"], f["nbedrock"])
    T = keys[0].shape[1]

    compiled = _fused.fused_applicable(*keys)  # one pass per variable, no OpenMP region

    def repeats(k, lag):
        if compiled:
            return _fused.repeats(k.detach().numpy(), lag)
        a, b = (k[:, lag:], k[:, :-lag]) if lag else (k, k[:, :1])
        return bool(((a == b) | (torch.isnan(a) & torch.isnan(b))).all())

    if all(repeats(k, 0) for k in keys):
        return torch.zeros(1, dtype=torch.long), np.zeros(T, dtype=np.int64)
    for period in (fmod.N_MONTHS,):  # annual cycles (climatologies, most scenarios)
        if T > period and all(repeats(k, period) for k in keys):
            return torch.arange(period), np.arange(T, dtype=np.int64) % period
    return torch.arange(T), np.arange(T, dtype=np.int64)


def column_terms(model, p: Mapping) -> dict[str, torch.Tensor]:
    """The terms of :func:`build_operators` that depend on the parameters alone.

    ``kb`` ``[n, L, 7]`` base rates times the depth scalar (day-1), ``weights`` ``[n, 1, L]``
    the input profile's Jackson weights, ``fractions`` ``[n, L, 9]``.
    """
    xz = fmod.depth_scalar(p["efolding"])
    kb = model.turnover_rates(p).unsqueeze(1) * xz.unsqueeze(-1)  # [n, L, 7]
    n, L = kb.shape[0], kb.shape[1]
    return {"kb": kb, "weights": fmod.jackson_weights(p["beta"]).unsqueeze(1),
            "fractions": model.fraction_array(p, n, L)}


def build_operators(model, p: Mapping, f: Mapping, dt: torch.Tensor, *,
                    steps: tuple[torch.Tensor, np.ndarray] | None = None,
                    terms: Mapping[str, torch.Tensor] | None = None) -> StepOperators:
    """Per-step operators of a CLM5 model for physical parameters ``p`` and forcing ``f``.

    ``f`` holds validated tensors with a time axis of ``T`` steps; ``dt`` ``[T]`` (days);
    ``steps``: :func:`distinct_steps` of ``f``, ``terms``: :func:`column_terms` of ``p``
    where already known (e.g. for a whole run split into chunks of columns).
    """
    if terms is None:
        terms = column_terms(model, p)
    kb = terms["kb"]
    alt, alt_ly, nb = f["ALTMAX"], f["ALTMAX_LASTYEAR"], f["nbedrock"]
    sel, band_index = distinct_steps(f) if steps is None else steps
    B = len(sel)  # the stored steps are always the first B (see distinct_steps): views
    alt, alt_ly, nb = alt[:, :B], alt_ly[:, :B], nb[:, :B]
    bio, cryo = (p[k] for k in model.transport_parameters)
    if _fused.fused_applicable(bio, cryo, alt, alt_ly, nb):  # compiled, the same bits
        lower, diag, upper = (torch.from_numpy(a) for a in _fused_steady.transport_bands(
            bio.numpy(), cryo.numpy(), alt.numpy(), alt_ly.numpy(), nb.numpy(),
            conservative=model.options.conservative_transport))
    else:
        d = transport.diffusivity(bio, cryo, alt, alt_ly, nb)
        lower, diag, upper = transport.monthly_operator(
            d, nb, conservative=model.options.conservative_transport)
    g = terms["weights"]  # [n, 1, L]
    below = model.options.inputs_below_bedrock
    if _fused.fused_applicable(g, alt_ly, nb):  # compiled (no OpenMP regions)
        profile = torch.from_numpy(_fused_steady.step_profiles(
            g.numpy()[:, 0], alt_ly.numpy(), None if below else nb.numpy(),
            _PER_DAY / layer_thickness(g).numpy()))
    else:
        nbk = None if below else nb.unsqueeze(-1)
        prof = fmod.profile_from_weights(g, (alt_ly > 0).unsqueeze(-1), nbk)  # [n, B, L]
        profile = prof * (_PER_DAY / layer_thickness(prof))
    inputs = [f[k] for k in fmod.LITTER_INPUTS]
    if _fused.fused_applicable(*inputs):  # numpy: no OpenMP region (same values)
        inputs = torch.from_numpy(np.stack([t.numpy() for t in inputs], -1))
    else:
        inputs = torch.stack(inputs, -1)  # [n, T, 4]
    fractions = terms["fractions"]
    return StepOperators(
        kb, p["q10"], p["w-scaling"], {k: f[k] for k in _RATE_FORCING}, lower, diag, upper,
        profile, band_index, inputs, fractions, dt)


_RATE_FORCING = ("TSOI", "W_SCALAR", "O_SCALAR", "FPI_vr")


# -------------------------------------------------------------------------------------------
# solves and steps
# -------------------------------------------------------------------------------------------
def shifted_solve(K: torch.Tensor, bands, fractions: torch.Tensor, rhs: torch.Tensor,
                  shift: float) -> torch.Tensor:
    """Solve ``(V - A K + shift I) X = rhs`` for every column, ``[n, L, 7]``.

    ``K`` ``[n, L, 7]`` (day-1), ``bands`` = (lower, diag, upper) ``[n, L]``, ``fractions``
    ``[n, L, 9]`` (:data:`~xproda.models.fused.FRACTION_ORDER`), ``rhs`` ``[n, L, 7]``
    (g C m-3 day-1), ``shift`` (day-1; 0 gives a steady state).  Uses the fused kernel where
    applicable (CPU float64 without autograd), the differentiable torch solver otherwise.
    """
    if _fused.fused_applicable(K, *bands, fractions, rhs):
        np_ = lambda t: t.detach().numpy()  # noqa: E731
        out = _fused.clm5_shifted_solve(np_(K), *(np_(b) for b in bands), np_(fractions),
                                        np_(rhs), float(shift))
        return torch.from_numpy(out)
    return _shifted_solve_torch(K, bands, fractions, rhs, shift)


def _shifted_solve_torch(K, bands, fractions, rhs, shift):
    Kl = [lf(K[..., i]) for i in range(7)]
    bl = [lf(rhs[..., i]) for i in range(7)]
    fr = {k: lf(fractions[..., i]) for i, k in enumerate(_FR)}
    lo, di, up = (lf(b) for b in bands)
    zero = torch.zeros((), dtype=K.dtype, device=K.device)
    x_cwd = torch.where(bl[0] == 0, zero, bl[0] / (Kl[0] + shift))
    flux = bl[0] if isinstance(shift, float) and shift == 0.0 else Kl[0] * x_cwd
    f2 = fr["fcwdl2"]
    rr = torch.stack([bl[1], bl[2] + f2 * flux, bl[3] + (1.0 - f2) * flux], dim=1)
    dg = di.unsqueeze(1) + torch.stack(Kl[1:4], dim=1) + shift
    lit = thomas(lo.unsqueeze(1), dg, up.unsqueeze(1), rr)
    x1, x2, x3 = lit[:, 0], lit[:, 1], lit[:, 2]
    k1, k2, k3 = Kl[4:]
    d = di + shift
    zeros = torch.zeros_like(k1)
    blocks = [
        [d + k1, -fr["fs2s1"] * k2, -fr["fs3s1"] * k3],
        [-fr["fs1s2"] * k1, d + k2, zeros],
        [-fr["fs1s3"] * k1, -fr["fs2s3"] * k2, d + k3],
    ]
    rs = [
        bl[4] + fr["fl1s1"] * Kl[1] * x1 + fr["fl2s1"] * Kl[2] * x2,
        bl[5] + fr["fl3s2"] * Kl[3] * x3,
        bl[6],
    ]
    s1, s2, s3 = block3_thomas(lo, blocks, up, rs)
    return torch.stack([x.transpose(0, 1) for x in (x_cwd, x1, x2, x3, s1, s2, s3)], dim=-1)


def integrate(ops: StepOperators, x: torch.Tensor, *, save_soc: bool = False,
              increments: bool = False, outputs: bool = True,
              rows: torch.Tensor | None = None, out: Mapping[str, np.ndarray] | None = None
              ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Backward Euler through the steps of ``ops`` from state ``x`` ``[n, L, 7]``.

    Returns the final state and per-step outputs (see :func:`xproda.models.fused.clm5_steps`
    for keys and units; ``increments`` adds ``change``, the summed step increments computed
    in defect form; ``outputs=False`` leaves out the per-step outputs: the final state and
    ``change`` alone, as a spin-up cycle needs them; ``rows``: step only these columns of
    ``ops``, ``x`` holding their states -- the compiled kernel reads them in place, the
    torch path gathers them).  The fused CPU kernel runs where applicable; the torch path is
    differentiable and runs on any device. ``out``: float64 arrays to hold results (keys
    of the outputs, ``pools`` for the final state; e.g. rows of a whole run's arrays, so
    that chunks need no concatenation), filled on either path.
    """
    dz = layer_thickness(x)
    out = dict(out or {})
    if not outputs and (save_soc or set(out) - {"pools"}):
        raise ValueError("integrate: save_soc and out arrays other than 'pools' need "
                         f"outputs=True; got save_soc={save_soc}, out keys {sorted(out)}")
    if _fused.fused_applicable(*ops.tensors, x):
        np_ = lambda t: t.detach().numpy()  # noqa: E731
        state = out.pop("pools", None)
        if state is None:
            state = np.array(np_(x), dtype=np.float64, order="C", copy=True)
        else:
            state[...] = np_(x)
        res = _fused.clm5_steps(
            *_step_inputs(ops, dz), state, save_soc=save_soc, increments=increments,
            outputs=outputs, rows=None if rows is None else rows.numpy(), out=out)
        return torch.from_numpy(state), {k: torch.from_numpy(v) for k, v in res.items()}
    x, res = _integrate_torch(ops if rows is None else ops.columns(rows), x, dz, save_soc,
                              increments)
    if not outputs:
        res = {k: v for k, v in res.items() if k == "change"}
    for k, a in out.items():
        a[...] = (x if k == "pools" else res[k]).detach().cpu().numpy()
    return x, res


def _step_inputs(ops: StepOperators, dz: torch.Tensor) -> tuple:
    """The numpy arguments of :func:`xproda.models.fused.clm5_steps` before the state."""
    np_ = lambda t: t.detach().numpy()  # noqa: E731
    return (np_(ops.kb), np_(torch.log(ops.q10) / 10.0), np_(ops.w_scaling),
            *(np_(ops.forcing[k]) for k in _RATE_FORCING), np_(ops.lower), np_(ops.diag),
            np_(ops.upper), np_(ops.profile), ops.band_index, np_(ops.inputs),
            np_(ops.fractions), np_(1.0 / ops.dt), dz.numpy())


def _apply_torch(K, bands, fractions, x):
    """``(V - A K) x`` for every column ``[n, L, 7]`` (torch, differentiable)."""
    g = {k: fractions[..., i] for i, k in enumerate(_FR)}
    f = K * x
    dec = torch.stack([
        f[..., 0], f[..., 1], f[..., 2] - g["fcwdl2"] * f[..., 0],
        f[..., 3] - (1.0 - g["fcwdl2"]) * f[..., 0],
        f[..., 4] - g["fl1s1"] * f[..., 1] - g["fl2s1"] * f[..., 2] - g["fs2s1"] * f[..., 5]
        - g["fs3s1"] * f[..., 6],
        f[..., 5] - g["fl3s2"] * f[..., 3] - g["fs1s2"] * f[..., 4],
        f[..., 6] - g["fs1s3"] * f[..., 4] - g["fs2s3"] * f[..., 5],
    ], -1)
    lo, di, up = (b.unsqueeze(-1) for b in bands)
    xs = x[..., 1:]
    zero = torch.zeros_like(xs[:, :1])
    tr = di * xs + lo * torch.cat([zero, xs[:, :-1]], 1) + up * torch.cat([xs[:, 1:], zero], 1)
    return dec + torch.cat([torch.zeros_like(x[..., :1]), tr], -1)


def _integrate_torch(ops, x, dz, save_soc, increments=False):
    rf = CLM5Model.respired_fractions(ops.fractions)
    outs: dict[str, list] = {k: [] for k in ("total_carbon", "soc_stock", "respiration", "input")}
    socs = []
    w = dz.reshape(1, -1)
    acc = torch.zeros_like(x) if increments else None
    for t in range(ops.steps):
        b = int(ops.band_index[t])
        r = 1.0 / ops.dt[t]
        K = ops.rates(t)
        bands = (ops.lower[:, b], ops.diag[:, b], ops.upper[:, b])
        dens = ops.inputs[:, t].unsqueeze(1) * ops.profile[:, b].unsqueeze(-1)  # [n, L, 4]
        src = torch.cat([dens, torch.zeros_like(x[..., 4:])], -1)
        if increments:
            d = _shifted_solve_torch(K, bands, ops.fractions,
                                     src - _apply_torch(K, bands, ops.fractions, x), r)
            acc = acc + d
            x = x + d
        else:
            x = _shifted_solve_torch(K, bands, ops.fractions, src + r * x, r)
        soc = x[..., 4:].sum(-1)
        outs["total_carbon"].append((x.sum(-1) * w).sum(-1))
        outs["soc_stock"].append((soc * w).sum(-1))
        outs["respiration"].append(((rf * K * x).sum(-1) * w).sum(-1) * fmod.DAYS_PER_YEAR)
        outs["input"].append((dens.sum(-1) * w).sum(-1) * fmod.DAYS_PER_YEAR)
        if save_soc:
            socs.append(soc)
    res = {k: torch.stack(v, 1) for k, v in outs.items()}
    if save_soc:
        res["soc"] = torch.stack(socs, 1)
    if increments:
        res["change"] = acc
    return x, res


def mean_state(ops: StepOperators, *, mean: tuple | None = None) -> torch.Tensor:
    """Steady state of the dt-weighted mean operator, ``[n, L, 7]`` (g C m-3).

    ``mean``: ``ops.mean()`` where already computed.
    """
    K, bands, dens = ops.mean() if mean is None else mean
    rhs = torch.cat([dens, torch.zeros_like(dens[..., :3])], -1)
    return shifted_solve(K, bands, ops.fractions, rhs, 0.0)


# -------------------------------------------------------------------------------------------
# drivers
# -------------------------------------------------------------------------------------------
def _prepare(model, theta, forcing, dt):
    th, f, n, numpy_out = model.prepare_inputs(theta, forcing, steps=None)
    T = f["TSOI"].shape[1]
    dts = step_lengths(dt, T, dtype=th.dtype, device=th.device)
    p = model.physical_parameters(th)
    return th, f, n, numpy_out, p, dts


def spin_up(
    model,
    theta,
    forcing: Mapping,
    *,
    dt: Any = None,
    tol: float = 1e-10,
    max_cycles: int = 200,
    method: Literal["semi_analytic", "plain"] = "semi_analytic",
    x0: Any = None,
    progress: bool = False,
) -> SpinUp:
    """Periodic state of a CLM5 model under cyclic forcing (see module docs).

    Parameters
    ----------
    model : CLM5Model
    theta : array_like or Tensor
        ``[n, 21]`` normalised parameters.
    forcing : mapping
        One period of forcing, batch first, with ``T`` steps in place of the 12 months
        (a monthly climatology is the usual period).
    dt : float or array_like, optional
        Step lengths (days); default 365/12.
    tol : float, default 1e-10
        Convergence: relative (max-norm over layers and pools) change of the period-start
        state in one cycle.  With ``method="semi_analytic"`` this change estimates the
        remaining error; with ``"plain"`` the error is larger by the inverse of the slowest
        mode's relative decay per period (compare runs against a tight semi-analytic state).
    max_cycles : int, default 200
        Columns not converged by then are flagged ``not_converged``.
    method : {"semi_analytic", "plain"}
        Mean-operator start and Newton-like correction (default), or plain cycling.
    x0 : array_like, optional
        ``[n, 20, 7]`` initial state; default: the mean-operator steady state
        (``"semi_analytic"``) or zero (``"plain"``).
    progress : bool
        Show a progress bar of the cycles.

    Returns
    -------
    SpinUp
        Numpy in gives numpy out.
    """
    if method not in ("semi_analytic", "plain"):
        raise ValueError(f"method must be 'semi_analytic' or 'plain', got {method!r}")
    if not (tol > 0 and math.isfinite(tol)):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    if int(max_cycles) < 1:
        raise ValueError(f"max_cycles must be >= 1, got {max_cycles!r}")
    t0 = time.perf_counter()
    th, f, n, numpy_out, p, dts = _prepare(model, theta, forcing, dt)
    ops = build_operators(model, p, f, dts)
    semi = method == "semi_analytic"
    tau = float(dts.sum())
    if semi:
        mean = ops.mean()
        Kbar, bbar = mean[0], mean[1]
    if x0 is not None:
        X = _state(x0, n, th)
    elif semi:
        X = mean_state(ops, mean=mean)
    else:
        X = torch.zeros((n, layer_thickness(th).shape[0], 7), dtype=th.dtype, device=th.device)
    X = X.to(th.dtype)
    no_data = ~torch.isfinite(X.detach()).all(-1).all(-1) | model.nan_rows(th, f)
    # the bookkeeping of the cycles in numpy: each torch operation releases and retakes the
    # GIL, which on a shared machine waits for the kernel's helper threads (descheduled)
    cycles = np.zeros(n, dtype=np.int64)
    change = np.full(n, math.nan, dtype=torch.empty((), dtype=th.dtype).numpy().dtype)
    active = np.flatnonzero(~no_data.cpu().numpy())
    history: list[float] = []
    steps_done = 0
    bar = progress_bar(progress, total=max_cycles, desc="spin-up cycles", leave=False)
    # compiled cycles (CPU, float64, no gradient): one pass per column block gathers the
    # period-start states, steps the period, corrects and updates (fused_spinup.spin_cycle);
    # the torch path below does the same operations as separate tensor operations
    compiled = _fused.fused_applicable(*ops.tensors, X, *(mean[0], *mean[1]) if semi else ())
    if compiled:  # X may be the caller's x0 or a view of it: updated in place, so a copy
        X = torch.from_numpy(np.array(X.detach().numpy(), dtype=np.float64, order="C"))
        step_args = _fused.step_arguments(*_step_inputs(ops, layer_thickness(X)))
        workspace = _fused_spinup.cycle_workspace(n)
    work = None  # columns integrated: a superset of the active ones, re-gathered when
    for k in range(1, int(max_cycles) + 1):  # it holds 25% more (gathers cost a cycle)
        if active.size == 0:
            break
        if work is None or active.size < 0.75 * work.size:
            work = active
            widx = torch.from_numpy(work).to(th.device)
            whole = work.size == n
            sub = ops if whole or compiled else ops.columns(widx)  # compiled: read in place
            if semi:
                Kw, bw = (Kbar, bbar) if whole else (
                    _take_rows(Kbar, widx), tuple(_take_rows(b, widx) for b in bbar))
                # the correction's fractions: gathered with the operators on the torch path
                fr_w = _take_rows(ops.fractions, widx) if compiled and not whole else \
                    sub.fractions
        steps_done += int(work.size) * ops.steps
        live = np.zeros(n, dtype=bool)
        live[active] = True
        keep = live[work]  # converged columns in the work set stay frozen
        if compiled:
            d = _fused_spinup.spin_cycle(
                step_args, X.numpy(), work, keep, plain=not semi, tau=tau,
                mean=(Kw.numpy(), *(b.numpy() for b in bw), fr_w.numpy()) if semi else None,
                workspace=workspace)
        else:
            Xa = X[widx]
            Xp, res = integrate(sub, Xa, increments=semi, outputs=False)
            if semi:
                # defect form: the period change D is summed from the step increments, so
                # the mean-operator correction does not amplify the rounding of x_end -
                # x_start in nearly inert layers (rates ~1e-20 day-1 below bedrock or in
                # deep permafrost)
                D = res["change"].to(Xa.dtype)
                delta = D + shifted_solve(Kw, bw, fr_w, D / tau, 0.0)
            else:
                delta = Xp - Xa
            Xn = Xa + delta
            d = delta.detach().abs().amax((1, 2)) / Xn.detach().abs().amax((1, 2))
            kt = torch.from_numpy(keep)
            X = X.index_copy(0, widx[kt.to(widx.device)], Xn[kt.to(Xn.device)].to(X.dtype))
            d = d.detach().cpu().numpy()
        upd = work[keep]
        cycles[upd] = k
        dk = d[keep].astype(change.dtype)
        change[upd] = dk
        done = (dk <= tol) | ~np.isfinite(dk)
        history.append(float(dk.max()) if dk.size else 0.0)
        active = upd[~done]
        bar.update(1)
        bar.set_postfix(active=int(active.size), change=f"{history[-1]:.1e}")
    bar.close()
    cycles, change = torch.from_numpy(cycles), torch.from_numpy(change)
    converged = (change <= tol) & ~no_data.cpu()
    flags = torch.where(no_data.cpu(), FLAGS["no_data"], 0)
    flags = flags | torch.where(~converged & ~no_data.cpu(), FLAGS["not_converged"], 0)
    X = torch.where(no_data.reshape(-1, 1, 1), torch.full_like(X, math.nan), X)
    dz = layer_thickness(X)
    soc = X[..., 4:].sum(-1)
    out = SpinUp(pools=X, soc=soc, soc_stock=(soc * dz).sum(-1), cycles=cycles, change=change,
                 converged=converged, flags=flags, valid=flags == 0)
    done_cycles = cycles[converged].to(torch.float64)
    out.report = SpinUpReport(
        method=method, tol=float(tol), period_steps=ops.steps, period_days=tau, columns=n,
        converged=int(converged.sum()), no_data=int(no_data.sum()), max_cycles=int(max_cycles),
        cycles_median=float(done_cycles.median()) if done_cycles.numel() else math.nan,
        cycles_max=float(done_cycles.max()) if done_cycles.numel() else math.nan,
        column_steps=steps_done, seconds=time.perf_counter() - t0, history=history,
    )
    if numpy_out:
        for key in list(out):
            out[key] = out[key].detach().cpu().numpy()
    return out


def simulate(
    model,
    theta,
    forcing: Mapping,
    *,
    x0: Any = "spin_up",
    dt: Any = None,
    save_soc: bool = False,
    spin_up_steps: int = fmod.N_MONTHS,
    spin_up_options: Mapping[str, Any] | None = None,
    progress: bool = False,
) -> Simulation:
    """Transient run of a CLM5 model under time-varying forcing (see module docs).

    Parameters
    ----------
    model : CLM5Model
    theta : array_like or Tensor
        ``[n, 21]`` normalised parameters.
    forcing : mapping
        Forcing with ``T`` time steps in place of the 12 months: ``TSOI``, ``W_SCALAR``,
        ``O_SCALAR``, ``FPI_vr`` ``[n, T, 20]``; ``ALTMAX``, ``ALTMAX_LASTYEAR``,
        ``nbedrock`` and the litter inputs ``[n, T]`` (inputs in g C m-2 month-1).
    x0 : {"spin_up", "steady_state"} or array_like, default "spin_up"
        Initial state: the periodic state of the first ``spin_up_steps`` steps of forcing
        (:func:`spin_up`), the steady state of their mean operator, or pools ``[n, 20, 7]``
        (g C m-3; a :class:`SpinUp`, :class:`Simulation` or steady-state result works too).
    dt : float or array_like, optional
        Step lengths in days (default 365/12, see module docs).
    save_soc : bool
        Also return the SOC profile of every step, ``soc`` ``[n, T, 20]``.
    spin_up_steps : int, default 12
        Period of the initial spin-up.
    spin_up_options : mapping, optional
        Keyword arguments of :func:`spin_up` (``tol``, ``max_cycles``, ``method``).
    progress : bool
        Progress bar over the time blocks.

    Returns
    -------
    Simulation
        Numpy in gives numpy out; torch in gives torch out (differentiable on the torch
        path: CUDA, float32 or autograd).

    Notes
    -----
    Also the method ``CLM5Model.simulate(theta, forcing, **options)`` (attached by
    :mod:`xproda.models`; this module builds on :mod:`xproda.models.clm5`, not the reverse).

    Examples
    --------
    >>> import numpy as np, xproda
    >>> from xproda.models.transient import repeat_forcing
    >>> from xproda.testing import random_forcing
    >>> m = xproda.get_model("clm5")
    >>> f = repeat_forcing(random_forcing(2), years=2)  # two years of monthly steps
    >>> out = m.simulate(np.full((2, 21), 0.5), f)
    >>> out["soc_stock"].shape
    (2, 24)
    """
    th, f, n, numpy_out, p, dts = _prepare(model, theta, forcing, dt)
    T = dts.shape[0]
    spun = None
    if isinstance(x0, str):
        if x0 not in ("spin_up", "steady_state"):
            raise ValueError(f"x0 must be 'spin_up', 'steady_state' or an array, got {x0!r}")
        period = min(int(spin_up_steps), T)
        # contiguous once: the spin-up's every cycle reads these (as strided views of the
        # run's forcing the step kernel copied them on each call, ~1 s of a 20,000-column run)
        def first(v):  # numpy's copy for CPU tensors: no OpenMP region
            v = v[:, :period]
            if not v.requires_grad and _fused.numpy_compatible(v):
                return torch.from_numpy(np.ascontiguousarray(v.numpy()))
            return v.contiguous()

        fp = {k: (first(v) if v.ndim >= 2 and v.shape[1] == T and k in _TIMED else v)
              for k, v in f.items()}
        if x0 == "spin_up":
            spun = spin_up(model, th, fp, dt=dts[:period], **dict(spin_up_options or {}))
            X = spun["pools"]
        else:
            X = mean_state(build_operators(model, p, fp, dts[:period]))
    else:
        X = _state(x0, n, th)
    X0 = X
    out_parts: list[dict] = []
    size = _option("kernel_batch_size")
    bar = progress_bar(progress, total=T * n, desc="column-steps", leave=False)
    finals = []
    whole = None
    if _fused.fused_applicable(th, X, *f.values()):  # the chunks fill rows of these arrays
        L = X.shape[1]
        whole = {k: np.empty((n, T)) for k in _fused.STEP_OUTPUTS}
        whole["pools"] = np.empty((n, L, 7))
        if save_soc:
            whole["soc"] = np.empty((n, T, L))
    # all steps at once: the operators reference the forcing (views, no copies) and store
    # only the distinct transport operators and the stacked inputs. The distinct steps and
    # the parameters' terms once per run, the operators per chunk (bounded temporaries that
    # the allocator reuses; one torch operation per term and run, not per chunk: each is an
    # OpenMP region, slow on a shared machine)
    steps = distinct_steps(f)
    terms = column_terms(model, p)
    for c0 in range(0, n, size):
        cols = slice(c0, min(n, c0 + size))
        fc = {k: v[cols] for k, v in f.items()}
        pc = {k: (v[cols] if v.ndim >= 1 and v.shape[0] == n else v) for k, v in p.items()}
        ops = build_operators(model, pc, fc, dts, steps=steps,
                              terms={k: v[cols] for k, v in terms.items()})
        x = X[cols]
        x, res = integrate(ops, x, save_soc=save_soc,
                           out=None if whole is None else {k: a[cols] for k, a in whole.items()})
        bar.update(T * (cols.stop - cols.start))
        if whole is None:
            finals.append(x)
            out_parts.append(res)
    bar.close()
    if whole is not None:
        X1 = torch.from_numpy(whole.pop("pools"))
        res = {k: torch.from_numpy(a) for k, a in whole.items()}
    else:
        res = out_parts[0] if len(out_parts) == 1 else {
            k: torch.cat([q[k] for q in out_parts], 0) for k in out_parts[0]}
        X1 = torch.cat(finals, 0)
    dz = layer_thickness(X1)
    out = Simulation(pools=X1, initial_pools=X0)
    out.update(res)
    if whole is not None:  # the same sums in numpy: no OpenMP regions
        x0, dzn = X0.detach().numpy(), dz.numpy()
        out["net_flux"] = torch.from_numpy(res["input"].numpy() - res["respiration"].numpy())
        out["initial_total_carbon"] = torch.from_numpy((x0.sum(-1) * dzn).sum(-1))
        out["initial_soc_stock"] = torch.from_numpy((x0[..., 4:].sum(-1) * dzn).sum(-1))
        no_data = torch.from_numpy(~np.isfinite(X1.numpy()).all((-1, -2))
                                   | np.isnan(th.detach().numpy()).any(-1))
    else:
        out["net_flux"] = res["input"] - res["respiration"]
        out["initial_total_carbon"] = (X0.sum(-1) * dz).sum(-1)
        out["initial_soc_stock"] = (X0[..., 4:].sum(-1) * dz).sum(-1)
        no_data = ~torch.isfinite(X1.detach()).all(-1).all(-1) | torch.isnan(th.detach()).any(-1)
    out["dt"] = dts
    flags = torch.where(no_data, FLAGS["no_data"], 0)
    if spun is not None:
        sf = torch.as_tensor(spun["flags"], device=flags.device)
        flags = flags | (sf & FLAGS["not_converged"])
    out["flags"] = flags
    out["valid"] = flags == 0
    out.spin_up = spun
    if numpy_out:
        for key in list(out):
            out[key] = out[key].detach().cpu().numpy()
    return out


def repeat_forcing(forcing: Mapping, *, years: int) -> dict:
    """Tile a 12-month (or any one-period) forcing mapping ``years`` times along time.

    Variables with a time axis (second dimension) are repeated; others (``CELLSAND``) are
    kept.  Numpy or torch arrays, batch first.
    """
    if int(years) < 1:
        raise ValueError(f"years must be >= 1, got {years!r}")
    out = {}
    for k, v in forcing.items():
        if k in _TIMED and getattr(v, "ndim", 0) >= 2:
            reps = (1, int(years)) + (1,) * (v.ndim - 2)
            out[k] = v.repeat(*reps) if isinstance(v, torch.Tensor) else np.tile(v, reps)
        else:
            out[k] = v
    return out


#: forcing variables with a time axis (second dimension)
_TIMED = frozenset(k for k, v in fmod.FORCING_SCHEMA.items() if v.shape[:1] == (fmod.N_MONTHS,))


def _state(x0: Any, n: int, th: torch.Tensor) -> torch.Tensor:
    """Initial pools from an array or a result mapping with ``pools``."""
    if isinstance(x0, Mapping):
        if "pools" not in x0:
            raise ValueError("x0 mapping must hold 'pools' [n, 20, 7] (g C m-3)")
        x0 = x0["pools"]
    x = fmod.as_tensor(x0, name="x0", dtype=th.dtype, device=th.device)
    L = layer_thickness(th).shape[0]
    if x.ndim != 3 or x.shape[1:] != (L, 7) or x.shape[0] not in (1, n):
        raise ValueError(f"x0 must have shape [n={n}, {L}, 7] (pools, g C m-3), got {tuple(x.shape)}")
    if bool((x.detach() < 0).any()):
        raise ValueError("x0 has negative pools; the initial state must be non-negative (g C m-3)")
    return x.expand(n, L, 7) if x.shape[0] == 1 else x


def _cat_prev(first, series):
    if isinstance(series, np.ndarray):
        return np.concatenate([np.asarray(first)[:, None], series[:, :-1]], 1)
    return torch.cat([first.unsqueeze(1), series[:, :-1]], 1)

