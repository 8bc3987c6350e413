"""Forcing schema and validation, environmental scalars and the input profile.

Kernel forcing is a mapping of CLM5 history names to arrays with a leading batch dimension
(``n`` soil columns); see :data:`FORCING_SCHEMA`.  Arrays may be numpy arrays or torch tensors.
A leading dimension of 1 broadcasts against the batch.  NaN marks missing data and propagates to
NaN outputs; it never raises.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np
import torch

from xproda import grid
from xproda.errors import RangeError
from xproda.options import current as _option

__all__ = [
    "ForcingVariable",
    "FORCING_SCHEMA",
    "LITTER_INPUTS",
    "LAYER_INPUTS",
    "validate_forcing",
    "prepare_forcing",
    "PreparedForcing",
    "temperature_scalar",
    "water_scalar",
    "depth_scalar",
    "input_profile",
    "jackson_weights",
    "profile_from_weights",
    "annual_inputs",
    "nanmean_months",
    "nansum_months",
    "DAYS_PER_YEAR",
    "KELVIN",
    "compiled_check",
    "COMPILED_CHECK_MIN",
]

DAYS_PER_YEAR = 365.0
KELVIN = 273.15
N_MONTHS = 12


@dataclass(frozen=True)
class ForcingVariable:
    """Schema entry of one forcing variable (shape excludes the batch dimension)."""

    name: str
    shape: tuple[int, ...]
    units: str
    long_name: str
    minimum: float | None = None
    maximum: float | None = None
    required: bool = True
    integer: bool = False


_M, _L = N_MONTHS, grid.N_LAYERS
#: deepest possible active layer: the bottom of CLM5's 25-level ground column (m)
_ALT_MAX = float(grid.ZISOI[-1])
#: upper bounds of litter inputs: 100x the largest annual litterfall measured (~3 kg C m-2
#: yr-1 in tropical forests) in one month; catches CLM's 1e36 fill value and factor-1000 or
#: per-second/per-month unit mistakes (a month has 2.6e6 s)
_INPUT_MAX = 2.5e4
_INPUT_VR_MAX = _INPUT_MAX / float(grid.DZ[0])
_FV = ForcingVariable
FORCING_SCHEMA: dict[str, ForcingVariable] = {
    v.name: v
    for v in (
        _FV("TSOI", (_M, _L), "K", "soil temperature", 150.0, 350.0),
        _FV("W_SCALAR", (_M, _L), "1", "CLM water scalar of decomposition", 0.0, 1.0),
        _FV("O_SCALAR", (_M, _L), "1", "CLM oxygen (anoxia) scalar of decomposition", 0.0, 1.0),
        _FV("FPI_vr", (_M, _L), "1", "fraction of potential N immobilisation", 0.0, 1.0),
        _FV("ALTMAX", (_M,), "m", "maximum active layer thickness this year", 0.0, _ALT_MAX),
        _FV("ALTMAX_LASTYEAR", (_M,), "m", "maximum active layer thickness last year", 0.0,
            _ALT_MAX),
        _FV("nbedrock", (_M,), "1", "bedrock layer index (1-based)", 1, _L, integer=True),
        # 1e-3 g C m-2 s-1 is 31.5 kg C m-2 yr-1, ten times the most productive ecosystems
        _FV("NPP", (_M,), "g m-2 s-1", "net primary production (carbon)", 0.0, 1e-3,
            required=False),
        _FV("CELLSAND", (_L,), "%", "sand content", 0.0, 100.0, required=False),
        _FV("CWD_INPUT", (_M,), "g m-2 month-1", "coarse woody debris input (column total)", 0.0,
            _INPUT_MAX),
        _FV("LITR1_INPUT", (_M,), "g m-2 month-1", "metabolic litter input (column total)", 0.0,
            _INPUT_MAX),
        _FV("LITR2_INPUT", (_M,), "g m-2 month-1", "cellulose litter input (column total)", 0.0,
            _INPUT_MAX),
        _FV("LITR3_INPUT", (_M,), "g m-2 month-1", "lignin litter input (column total)", 0.0,
            _INPUT_MAX),
        # per-layer CLM inputs, used only by the CLM5 default-parameter mode
        _FV("CWD_INPUT_vr", (_M, _L), "g m-3 month-1", "CWD input by layer", 0.0, _INPUT_VR_MAX,
            required=False),
        _FV("LITR1_INPUT_vr", (_M, _L), "g m-3 month-1", "metabolic litter input by layer", 0.0,
            _INPUT_VR_MAX, required=False),
        _FV("LITR2_INPUT_vr", (_M, _L), "g m-3 month-1", "cellulose litter input by layer", 0.0,
            _INPUT_VR_MAX, required=False),
        _FV("LITR3_INPUT_vr", (_M, _L), "g m-3 month-1", "lignin litter input by layer", 0.0,
            _INPUT_VR_MAX, required=False),
    )
}
del _FV

#: column-total litter inputs in pool order (CWD, L1, L2, L3)
LITTER_INPUTS = ("CWD_INPUT", "LITR1_INPUT", "LITR2_INPUT", "LITR3_INPUT")
#: per-layer litter inputs in pool order
LAYER_INPUTS = tuple(f"{k}_vr" for k in LITTER_INPUTS)


def kernel_dtype() -> torch.dtype:
    return torch.float64 if _option("dtype") == "float64" else torch.float32


def resolve_device(*arrays) -> torch.device:
    if _option("device") is not None:
        return torch.device(_option("device"))
    for a in arrays:
        if isinstance(a, torch.Tensor):
            return a.device
    return torch.device("cpu")


def as_tensor(x, *, name: str, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """Convert array-likes to a tensor of ``dtype`` on ``device`` (no copy where possible)."""
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise TypeError(f"forcing variable {name!r} must be numeric array-like: {err}") from None
    if not arr.flags.writeable:
        arr = arr.copy()
    return torch.as_tensor(arr, dtype=dtype, device=device)


def _finite_values(t: torch.Tensor) -> torch.Tensor:
    t = t.detach()
    return t[torch.isfinite(t)]


def check_mapping(forcing) -> None:
    """Raise a clear TypeError unless ``forcing`` is a mapping of arrays."""
    if not isinstance(forcing, Mapping):
        if hasattr(forcing, "data_vars"):
            raise TypeError(
                "forcing must be a mapping of arrays with a leading batch dimension (the kernel "
                "API); convert an xarray Dataset with {name: ds[name].values} after moving the "
                "batch dimension first"
            )
        raise TypeError(f"forcing must be a mapping of arrays, got {type(forcing).__name__}")


class PreparedForcing(dict):
    """Validated forcing tensors, reusable across many model calls without re-validation.

    Made by :func:`prepare_forcing`; behaves as a plain dict of tensors ``[n, ...]``.
    Samplers and optimisers evaluate the model thousands of times on the same forcing;
    validating (and converting) it once saves ~10% of each call.
    """

    n: int = 0
    dtype: torch.dtype | None = None
    device: torch.device | None = None
    names: frozenset = frozenset()

    def matches(self, dtype, device, required, n) -> bool:
        """Whether these tensors can be used as they are for a call."""
        return (
            (dtype is None or dtype == self.dtype)
            and (device is None or torch.device(device) == self.device)
            and set(required) <= self.names
            and (n is None or n in (1, self.n))
        )

    def subset(self, idx: torch.Tensor | Sequence[int]) -> PreparedForcing:
        """The columns ``idx`` (integer indices), still prepared (no re-validation)."""
        idx = torch.as_tensor(idx, dtype=torch.long, device=self.device)
        out = PreparedForcing({k: v[idx] if v.shape[0] == self.n else v
                               for k, v in self.items()})
        out.n, out.dtype, out.device, out.names = int(idx.numel()), self.dtype, self.device, \
            self.names
        return out


def prepare_forcing(
    forcing: Mapping,
    *,
    repeat: int = 1,
    layout: str = "site-major",
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
) -> PreparedForcing:
    """Validate forcing once and keep the tensors (optionally tiled ``repeat`` times).

    Parameters
    ----------
    forcing : mapping
        As for ``model.steady_state``.
    repeat : int, default 1
        Repeat every column ``repeat`` times (e.g. one copy per MCMC chain).
    layout : {"site-major", "chain-major"}
        Row order of the repeated batch: ``"site-major"`` puts row ``i * repeat + c`` for
        column ``i`` and copy ``c`` (the order of :mod:`xproda.sites.assimilation` samplers);
        ``"chain-major"`` puts row ``c * n + i``.
    dtype, device : optional
        Kernel dtype/device (default: the current options).

    Returns
    -------
    PreparedForcing
        Pass it as ``forcing`` to ``steady_state``: validation is skipped.
    """
    dtype = dtype or kernel_dtype()
    device = torch.device(device) if device is not None else resolve_device(*forcing.values())
    req = tuple(k for k, v in FORCING_SCHEMA.items() if v.required and k in forcing)
    f, n = validate_forcing(forcing, None, required=req, dtype=dtype, device=device)
    if layout not in ("site-major", "chain-major"):
        raise ValueError(f"layout must be 'site-major' or 'chain-major', got {layout!r}")
    if repeat > 1:
        if layout == "site-major":
            f = {k: v.repeat_interleave(repeat, dim=0) for k, v in f.items()}
        else:
            f = {k: v.repeat((repeat,) + (1,) * (v.ndim - 1)) for k, v in f.items()}
        n = n * repeat
    out = PreparedForcing(f)
    out.n, out.dtype, out.device, out.names = n, dtype, device, frozenset(f)
    return out


def validate_forcing(
    forcing: Mapping,
    n: int | None = None,
    *,
    required: tuple[str, ...] | None = None,
    dtype: torch.dtype | None = None,
    device: torch.device | None = None,
    steps: int | None = N_MONTHS,
) -> tuple[dict[str, torch.Tensor], int]:
    """Check forcing and convert it to tensors.

    Parameters
    ----------
    forcing : mapping
        CLM5 history names -> arrays with a leading batch dimension (see
        :data:`FORCING_SCHEMA` for shapes and units).
    n : int, optional
        Expected batch size; arrays with a leading dimension of 1 broadcast to it.
    required : tuple of str, optional
        Variables that must be present (default: every schema entry marked required).
    steps : int or None, default 12
        Length of the time axis of the monthly variables: 12 months for the steady state;
        the number of time steps for a transient run (:meth:`~xproda.models.clm5.CLM5Model.
        simulate`); ``None`` accepts any length shared by all of them.

    Returns
    -------
    dict, int
        Tensors of the known variables present (broadcast to the batch size) and the batch
        size.

    Raises
    ------
    KeyError
        A required variable is missing.
    ValueError
        Wrong shape, wrong units (e.g. TSOI in degrees Celsius), out-of-range values
        (negative inputs, scalars outside [0, 1], nbedrock outside 1..20).
    """
    check_mapping(forcing)
    if required is None:
        required = tuple(k for k, v in FORCING_SCHEMA.items() if v.required)
    if isinstance(forcing, PreparedForcing) and forcing.matches(dtype, device, required, n):
        return dict(forcing), forcing.n  # validated once, reused (e.g. in a sampler)
    check_required(forcing, required)
    dtype = dtype or kernel_dtype()
    device = device or resolve_device(*forcing.values())
    out: dict[str, torch.Tensor] = {}
    sizes: dict[str, int] = {}
    for name, spec in FORCING_SCHEMA.items():
        if name not in forcing:
            continue
        t = as_tensor(forcing[name], name=name, dtype=dtype, device=device)
        shape = spec.shape
        timed = shape[:1] == (N_MONTHS,)
        if timed and steps is None and t.ndim == len(shape) + 1:
            steps = t.shape[1]  # the first time-dependent variable fixes the length
        if timed:
            shape = (steps,) + shape[1:]
        check_shape(name, tuple(t.shape), shape, timed=timed and steps != N_MONTHS)
        out[name] = t
        sizes[name] = t.shape[0]
        _check_values(name, spec, t)
    size = batch_size(sizes, n)
    for name, t in out.items():
        if t.shape[0] != size:
            out[name] = t.expand(size, *t.shape[1:])
    return out, size


def check_required(forcing: Mapping, required: Sequence[str]) -> None:
    """Raise ``KeyError`` naming the required variables missing from ``forcing``."""
    missing = [k for k in required if k not in forcing]
    if missing:
        raise KeyError(
            "forcing is missing required variable(s) "
            + ", ".join(
                f"{k!r} (expected shape [n, {', '.join(map(str, FORCING_SCHEMA[k].shape))}] "
                f"in {FORCING_SCHEMA[k].units})"
                for k in missing
            )
        )


def check_shape(name: str, shape: tuple, expected: tuple, *, timed: bool = False) -> None:
    """Raise ``ValueError`` unless ``shape`` is ``[n, *expected]`` (``timed``: time steps)."""
    if len(shape) != len(expected) + 1 or tuple(shape[1:]) != tuple(expected):
        what = "time steps" if timed else "batch first"
        raise ValueError(
            f"forcing variable {name!r} must have shape [n, {', '.join(map(str, expected))}] "
            f"({what}; {FORCING_SCHEMA[name].units}), got {tuple(shape)}"
        )


def batch_size(sizes: Mapping[str, int], n: int | None = None) -> int:
    """The common batch size of variables with leading sizes ``sizes`` (1 broadcasts)."""
    batch = {s for s in sizes.values() if s != 1}
    if n is not None and n != 1:
        batch.add(n)
    if len(batch) > 1:
        raise ValueError(
            "forcing variables (and theta) disagree on the batch size: "
            + ", ".join(f"{k}={v}" for k, v in sizes.items())
            + (f", theta={n}" if n is not None else "")
        )
    return batch.pop() if batch else 1


#: tensors from this size on are checked by the compiled range kernel (torch's own
#: reductions split such tensors over OpenMP threads, whose barriers collapse on a shared
#: machine; below it they run on one thread anyway)
COMPILED_CHECK_MIN = 32768


def compiled_check(td: torch.Tensor) -> bool:
    """Whether value checks of tensor ``td`` use the compiled range kernel
    (:func:`xproda.models.fused.value_range`): a contiguous float CPU tensor of at least
    :data:`COMPILED_CHECK_MIN` values, numba present and the option ``fused_kernels`` on."""
    if td.device.type != "cpu" or td.numel() < COMPILED_CHECK_MIN or not td.is_contiguous() \
            or td.dtype not in (torch.float32, torch.float64):
        return False
    from xproda.models import fused

    return fused.HAVE_NUMBA and bool(_option("fused_kernels"))


def _check_values(name: str, spec: ForcingVariable, t: torch.Tensor) -> None:
    if t.numel() == 0:
        return
    td = t.detach()
    if compiled_check(td):  # one pass over column blocks, no OpenMP region
        from xproda.models.fused import value_range as compiled_value_range

        vmin, vmax, has_inf, non_integer = compiled_value_range(td.numpy(), integer=spec.integer)
        check_range(name, vmin, vmax, has_inf=has_inf,
                    non_integer=spec.integer and not has_inf and non_integer)
        return
    lo, hi = torch.aminmax(td)  # one pass; NaN or inf show up in the result
    vmin, vmax = float(lo), float(hi)
    has_inf = False
    if not (math.isfinite(vmin) and math.isfinite(vmax)):
        has_inf = bool(torch.isinf(td).any())
        if not has_inf:
            v = _finite_values(td)
            if v.numel() == 0:
                return
            vmin, vmax = float(v.min()), float(v.max())
    non_integer = spec.integer and not has_inf and bool(
        ((td != torch.round(td)) & ~torch.isnan(td)).any())
    check_range(name, vmin, vmax, has_inf=has_inf, non_integer=non_integer)


def value_range(a: np.ndarray) -> tuple[float, float, bool]:
    """``(min, max, has_inf)`` of a numpy array with NaN skipped (``(inf, -inf)`` if none)."""
    if a.size == 0:
        return math.inf, -math.inf, False
    with np.errstate(invalid="ignore"):
        lo, hi = float(np.min(a)), float(np.max(a))
        if math.isnan(lo) or math.isnan(hi):
            if np.isnan(a).all():
                return math.inf, -math.inf, False
            lo, hi = float(np.nanmin(a)), float(np.nanmax(a))
    return lo, hi, bool(math.isinf(lo) or math.isinf(hi))


def check_array_values(name: str, a: np.ndarray) -> None:
    """:func:`check_range` of the values of a numpy array of forcing variable ``name``.

    The numpy counterpart of the tensor checks in :func:`validate_forcing` (NaN skipped,
    infinities and non-integer layer indices reported).
    """
    lo, hi, inf = value_range(a)
    non_integer = (FORCING_SCHEMA[name].integer and not inf
                   and bool(np.any((a != np.round(a)) & ~np.isnan(a))))
    check_range(name, lo, hi, has_inf=inf, non_integer=non_integer)


def check_range(name: str, vmin: float, vmax: float, *, has_inf: bool = False,
                non_integer: bool = False) -> None:
    """Raise :class:`RangeError` where the values of forcing variable ``name`` are wrong.

    ``vmin``/``vmax``: the smallest and largest non-NaN values (``inf``/``-inf`` where every
    value is NaN: nothing to check); ``has_inf``: an infinite value is present;
    ``non_integer``: an integer variable holds a non-integer value. Messages name the
    variable, the expected range and a likely cause (fill values, Celsius, unit factors).
    """
    spec = FORCING_SCHEMA[name]
    if has_inf:
        raise RangeError(
            f"forcing variable {name!r} contains infinite values (use NaN for no data)"
        )
    if vmin > vmax:  # no value that is not NaN
        return
    if name == "TSOI" and vmax < 100.0:
        raise RangeError(
            f"forcing variable 'TSOI' must be in kelvin; its values ({vmin:.4g} .. {vmax:.4g}) "
            "look like degrees Celsius (add 273.15)"
        )
    tol = 1e-9 * max(1.0, abs(spec.maximum or 0.0))
    if spec.minimum is not None and vmin < spec.minimum - tol:
        what = "negative" if spec.minimum == 0 else f"below {spec.minimum}"
        raise RangeError(
            f"forcing variable {name!r} has {what} values (min {vmin:.6g} {spec.units}); "
            f"expected {_range_text(spec)}{_hint(vmin, spec)}"
        )
    if spec.maximum is not None and vmax > spec.maximum + tol:
        raise RangeError(
            f"forcing variable {name!r} has values above {spec.maximum:g} "
            f"(max {vmax:.6g} {spec.units}); expected {_range_text(spec)}{_hint(vmax, spec)}"
        )
    if non_integer:
        raise RangeError(
            f"forcing variable {name!r} must hold integer layer indices 1..{grid.N_LAYERS}, "
            f"found non-integer values"
        )


def _hint(value: float, spec: ForcingVariable) -> str:
    """A likely cause of an out-of-range value (fill values, unit mistakes)."""
    if abs(value) >= 1e30 or value in (-9999.0, -99999.0, -999.0):
        return ("; this looks like an undecoded fill value (CLM writes 1e36): decode it with "
                "xarray.decode_cf or declare it in the variable's _FillValue attribute")
    return ("; check the variable's values against its 'units' attribute (a factor of 100 or "
            "1000, or per second instead of per month?)")


def _range_text(spec: ForcingVariable) -> str:
    lo = "-inf" if spec.minimum is None else f"{spec.minimum:g}"
    hi = "inf" if spec.maximum is None else f"{spec.maximum:g}"
    return f"values in [{lo}, {hi}] {spec.units}"


# -------------------------------------------------------------------------------------------
# environmental scalars (spec §2.5, §3.3)
# -------------------------------------------------------------------------------------------
def temperature_scalar(tsoi: torch.Tensor, q10: torch.Tensor, froz_q10=None) -> torch.Tensor:
    """CLM5 Q10 temperature scalar, reference temperature 25 °C.

    ``xi_T = q10 ** ((T - 298.15) / 10)`` for ``T >= 273.15 K``, else
    ``q10 ** -2.5 * froz_q10 ** ((T - 273.15) / 10)``.

    Parameters
    ----------
    tsoi : Tensor
        Soil temperature (K), any shape ``[n, ...]``.
    q10, froz_q10 : Tensor
        Shape ``[n]``; ``froz_q10`` defaults to ``q10`` (as in PRODA).
    """
    shape = (-1,) + (1,) * (tsoi.ndim - 1)
    lq = torch.log(q10).reshape(shape) / 10.0
    if froz_q10 is None or froz_q10 is q10:
        # both branches coincide when the frozen Q10 equals Q10: one fused pass + exp
        expo = torch.addcmul(-(KELVIN + 25.0) * lq, tsoi, lq)
        return expo.exp_()
    lf = torch.log(froz_q10).reshape(shape) / 10.0
    expo = torch.where(
        tsoi >= KELVIN,
        lq * (tsoi - (KELVIN + 25.0)),
        -25.0 * lq + lf * (tsoi - KELVIN),
    )
    return torch.exp(expo)


def water_scalar(w_scalar: torch.Tensor, w_scaling: torch.Tensor | None) -> torch.Tensor:
    """``min(1, w_scaling * W_SCALAR)``; ``w_scaling=None`` uses CLM's scalar unchanged."""
    if w_scaling is None:
        return w_scalar
    shape = (-1,) + (1,) * (w_scalar.ndim - 1)
    return torch.clamp(w_scaling.reshape(shape) * w_scalar, max=1.0)


def depth_scalar(efolding: torch.Tensor) -> torch.Tensor:
    """``exp(-zsoi / efolding)`` per layer, shape ``[n, 20]``."""
    z = torch.tensor(grid.ZSOI[: grid.N_LAYERS], dtype=efolding.dtype, device=efolding.device)
    return torch.exp(-z / efolding.reshape(-1, 1))


def nanmean_months(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Mean over months omitting NaN (the reference's ``mean(..., 'omitnan')``).

    All-NaN gives NaN.  Gradients flow only through the finite months.
    """
    total = x.sum(dim)
    if not torch.isnan(total).any():  # fast path: no missing month anywhere
        return total / x.shape[dim]
    ok = ~torch.isnan(x)
    xs = torch.where(ok, x, torch.zeros((), dtype=x.dtype, device=x.device))
    cnt = ok.sum(dim).to(x.dtype)
    return xs.sum(dim) / cnt  # 0/0 -> NaN for all-NaN


def input_profile(
    beta: torch.Tensor,
    altmax_lastyear: torch.Tensor,
    nbedrock: torch.Tensor | None = None,
) -> torch.Tensor:
    """Vertical distribution of litter inputs (Jackson et al. 1996 beta model), ``[n, 20]``.

    ``g_j = beta ** (100 zisoi_{j-1}) - beta ** (100 zisoi_j)`` (depths in cm), normalised to
    sum 1, where ALTMAX_LASTYEAR > 0 in all 12 months; otherwise all input enters layer 1
    (spec §2.7, bug list item 3 made explicit).  With ``nbedrock`` the profile is truncated at
    the bedrock (layers ``j <= nbedrock`` only, minimum over months) and renormalised, as CLM5
    does (spec §10 item 4); NaN ``nbedrock`` gives a NaN profile.
    """
    g = jackson_weights(beta)
    nb = None if nbedrock is None else _nanmin_months(nbedrock).unsqueeze(-1)
    all_thawed = (altmax_lastyear > 0).all(dim=-1, keepdim=True)  # NaN compares False
    return profile_from_weights(g, all_thawed, nb)


def jackson_weights(beta: torch.Tensor) -> torch.Tensor:
    """Unnormalised Jackson weights ``beta ** (100 z_top) - beta ** (100 z_bottom)``, ``[n, 20]``."""
    dtype, device = beta.dtype, beta.device
    zt = torch.tensor(grid.ZISOI_TOP[: grid.N_LAYERS], dtype=dtype, device=device)
    zb = torch.tensor(grid.ZISOI[: grid.N_LAYERS], dtype=dtype, device=device)
    b = beta.reshape(-1, 1)
    return torch.pow(b, 100.0 * zt) - torch.pow(b, 100.0 * zb)


def profile_from_weights(
    g: torch.Tensor, thawed: torch.Tensor, nbedrock: torch.Tensor | None
) -> torch.Tensor:
    """Input profile from :func:`jackson_weights` ``g`` ``[..., 20]``.

    ``thawed`` (bool) and ``nbedrock`` (1-based layer, NaN = no data) have the shape of ``g``
    without its last dimension plus a trailing 1 (they broadcast against ``g``): the profile
    is truncated below ``nbedrock`` and renormalised, and all input enters layer 1 where not
    ``thawed``.  Shared by the annual profile (:func:`input_profile`) and the per-step profiles
    of transient runs.
    """
    dtype, device = g.dtype, g.device
    if nbedrock is not None:
        layer = torch.arange(1, grid.N_LAYERS + 1, device=device, dtype=dtype)
        g = torch.where(layer <= nbedrock, g, torch.zeros((), dtype=dtype, device=device))
        g = torch.where(torch.isnan(nbedrock), torch.full_like(g, math.nan), g)
    f = g / g.sum(-1, keepdim=True)
    surface = torch.zeros_like(f)
    surface[..., 0] = 1.0
    return torch.where(thawed, f, surface)


def _nanmin_months(x: torch.Tensor) -> torch.Tensor:
    big = torch.full_like(x, math.inf)
    m = torch.where(torch.isnan(x), big, x).min(dim=-1).values
    return torch.where(torch.isinf(m), torch.full_like(m, math.nan), m)


def annual_inputs(forcing: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """Annual column-total litter inputs ``U_p`` (g C m-2 yr-1), shape ``[n, 4]``.

    The 12 monthly values (g C m-2 month-1) are summed; NaN months count as 0 but an input
    that is NaN in every month is NaN (no data), so ocean cells stay NaN (spec §2.7).
    """
    return torch.stack([nansum_months(forcing[k], dim=-1) for k in LITTER_INPUTS], dim=-1)


def nansum_months(x: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Sum over months with NaN months as 0; a value NaN in every month stays NaN (no data)."""
    ok = ~torch.isnan(x)
    s = torch.where(ok, x, torch.zeros((), dtype=x.dtype, device=x.device)).sum(dim)
    return torch.where(ok.any(dim), s, torch.full_like(s, math.nan))
