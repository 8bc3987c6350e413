"""Vertical mixing operator (bioturbation / cryoturbation), spec §2.6.

CLM5's ``SoilBiogeochemLittVertTranspMod`` Patankar scheme in matrix form.  For every month the
operator is a tridiagonal 20x20 matrix ``M`` (day-1) acting on every transported pool alike (the
same matrix for every pool; CWD is not transported); the model uses the arithmetic mean over the
12 months (NaN months omitted).  The equation is ``dC/dt = ... - M C``: ``M`` has a non-negative
diagonal and non-positive off-diagonals.

Two variants of the layer below bedrock exist:

* ``conservative=False`` (reference): the first layer below bedrock uses the "no-gradient"
  stencil that copies its upper exchange coefficient to its lower one.  Where the bedrock
  interface carries diffusivity this opens the column: carbon leaves layer nb+1 downwards and
  is not received by layer nb+2 (spec §2.6 "Properties", §10 item 10).
* ``conservative=True`` (default, corrected): every layer uses the interior stencil, whose
  exchange coefficient between two layers is the same seen from above and from below, and the
  (zero) advection is exactly zero instead of the reference's 1e-30 fill, which entered each
  layer's upper coefficient but not the lower coefficient of the layer above.  The dz-weighted
  column sums of ``M`` then vanish to rounding (mass is conserved exactly) and nothing below the
  first layer under bedrock is mixed (its diffusivity is zero).  Where the reference is already
  closed (nb = 20, or cryoturbation with the active layer above the bedrock interface) both
  variants agree to ~1e-30 day-1.  The 1e-30 fill of zero *diffusivities* is kept (it is
  symmetric, hence conservative).
"""

from __future__ import annotations

import math

import torch

from xproda import grid

__all__ = ["diffusivity", "monthly_operator", "mean_operator", "FILL", "dense"]

#: value replacing zero diffusivities and advective fluxes in the reference (spec §2.6 step 1)
FILL = 1e-30
MAX_ALTDEPTH_CRYOTURBATION = 2.0  # m
MAX_DEPTH_CRYOTURB = 3.0  # m
_NS = grid.N_LAYERS + 1  # stencil rows / interfaces used (21)


def _geom(dtype, device):
    t = lambda a: torch.tensor(a[:_NS + 1], dtype=dtype, device=device)  # noqa: E731
    return t(grid.ZISOI), t(grid.ZSOI), t(grid.DZ_NODE), t(grid.DZ)


def diffusivity(
    bio: torch.Tensor,
    cryo: torch.Tensor,
    altmax: torch.Tensor,
    altmax_lastyear: torch.Tensor,
    nbedrock: torch.Tensor,
) -> torch.Tensor:
    """Diffusivity at the 21 interfaces per month (m2 day-1), ``[n, 12, 21]``.

    Parameters
    ----------
    bio, cryo : Tensor
        Bioturbation and cryoturbation diffusivity (m2 yr-1), ``[n]``.
    altmax, altmax_lastyear : Tensor
        Active-layer thickness this and last year (m), ``[n, 12]``.
    nbedrock : Tensor
        1-based bedrock layer index, ``[n, 12]``.

    Returns
    -------
    Tensor
        ``D_i`` evaluated at ``zisoi(i)``, zeros replaced by 1e-30; NaN where the month's
        active layer or bedrock is NaN.
    """
    dtype, device = altmax.dtype, altmax.device
    zisoi = torch.tensor(grid.ZISOI[:_NS], dtype=dtype, device=device)  # [21]
    alt = torch.maximum(altmax, altmax_lastyear).unsqueeze(-1)  # [n,12,1]
    nb = nbedrock.unsqueeze(-1)  # [n,12,1]
    d_bio = (bio / 365.0).reshape(-1, 1, 1)
    d_cryo = (cryo / 365.0).reshape(-1, 1, 1)
    nb_idx = torch.nan_to_num(nbedrock, nan=1.0).long().clamp(1, grid.N_LAYERS)
    z_nb1 = torch.tensor(grid.ZISOI, dtype=dtype, device=device)[nb_idx].unsqueeze(-1)
    z_bottom = torch.clamp(z_nb1, max=MAX_DEPTH_CRYOTURB)
    den = z_bottom - alt
    den_safe = torch.where(den > 0, den, torch.ones_like(den))
    ramp = d_cryo * (1.0 - (zisoi - alt) / den_safe)
    # 0/0 (zisoi = zisoi(nb+1) = ALT) gives 0, as MATLAB's max ignores NaN
    ramp = torch.where(den > 0, torch.clamp(ramp, min=0.0), torch.zeros_like(ramp))
    cryo_profile = torch.where(zisoi < alt, d_cryo.expand_as(ramp), ramp)
    zero = torch.zeros((), dtype=dtype, device=device)
    is_cryo = (alt > 0) & (alt <= MAX_ALTDEPTH_CRYOTURBATION)
    is_bio = alt > MAX_ALTDEPTH_CRYOTURBATION
    d = torch.where(is_cryo, cryo_profile, torch.where(is_bio, d_bio.expand_as(ramp), zero))
    index = torch.arange(1, _NS + 1, dtype=dtype, device=device)
    d = torch.where(index <= nb + 1, d, zero)  # interfaces i <= nb+1 (1-based) mix
    d = torch.where(d.abs() < FILL, torch.full_like(d, FILL), d)
    missing = torch.isnan(alt) | torch.isnan(nb)
    return torch.where(missing, torch.full_like(d, math.nan), d)


def _patankar(pe: torch.Tensor) -> torch.Tensor:
    x = torch.clamp(1.0 - 0.1 * pe.abs(), min=0.0)  # max(0, x^5) == max(0, x)^5
    x2 = x * x
    return x2 * x2 * x


def _harmonic(a: torch.Tensor, b: torch.Tensor, w) -> torch.Tensor:
    return 1.0 / ((1.0 - w) / a + w / b)


def monthly_operator(
    d: torch.Tensor, nbedrock: torch.Tensor, *, conservative: bool = True
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Tridiagonal transport matrices per month from interface diffusivities.

    Parameters
    ----------
    d : Tensor
        ``[n, 12, 21]`` diffusivities (m2 day-1) from :func:`diffusivity`.
    nbedrock : Tensor
        ``[n, 12]`` 1-based bedrock index.
    conservative : bool
        Use the flux-consistent stencil below bedrock (see module docstring).

    Returns
    -------
    lower, diag, upper : Tensor
        ``[n, 12, 20]`` each (day-1): ``M[j, j-1]``, ``M[j, j]``, ``M[j, j+1]`` (``lower[..., 0]``
        and ``upper[..., -1]`` are 0).
    """
    dtype, device = d.dtype, d.device
    zisoi, zsoi, dzn, dz = _geom(dtype, device)
    L = grid.N_LAYERS
    j = torch.arange(L, device=device)
    # exchange coefficient with the layer above (rows 1..19): uses D_j, D_{j-1}
    w_m = (zisoi[:L - 1] - zsoi[:L - 1]) / dzn[1:L]  # rows 1..19
    dm_in = _harmonic(d[..., 1:L], d[..., : L - 1], w_m) / dzn[1:L]
    zero_col = torch.zeros_like(d[..., :1])
    dm = torch.cat([zero_col, dm_in], dim=-1)  # [n,12,20], row 0 -> 0
    # exchange coefficient with the layer below (rows 0..19): uses D_j, D_{j+1}
    w_p = (zsoi[1:L + 1] - zisoi[:L]) / dzn[1:L + 1]
    dp_int = _harmonic(d[..., :L], d[..., 1:L + 1], w_p) / dzn[1:L + 1]
    if conservative:
        # exactly zero advection (the reference's 1e-30 advective fill enters a_j but not
        # c_{j-1}, a one-way flux of 1e-30 * C per day that is not negligible where isolated
        # deep layers hold 1e20+ g C m-3): Peclet numbers 0, flux-consistent coefficients
        a = -dm
        c = -dp_int
    else:
        fill = torch.full_like(dm, FILL)
        nb0 = nbedrock.unsqueeze(-1)  # 1-based nb == 0-based index of the first layer below
        bottom = (j >= nb0) & (j >= 1)
        dp = torch.where(bottom, dm, dp_int)
        safe_dm = torch.where(j >= 1, dm, torch.ones_like(dm))
        pe_m = torch.where(j >= 1, fill / safe_dm, torch.zeros_like(dm))
        pe_p = torch.where(bottom, torch.zeros_like(dm), fill / dp_int)
        f_p = torch.where(bottom, torch.zeros_like(dm), fill)
        a = -(dm * _patankar(pe_m) + fill)  # max(F_m, 0) = 1e-30
        c = -(dp * _patankar(pe_p) + torch.clamp(-f_p, min=0.0))
    b = -a - c
    dzl = dz[:L]
    diag = b / dzl
    diag = torch.cat(
        [(-c[..., :1] / dzl[0]), diag[..., 1 : L - 1], (-a[..., L - 1 :] / dzl[L - 1])], dim=-1
    )
    upper = torch.cat([c[..., : L - 1] / dzl[: L - 1], torch.zeros_like(c[..., :1])], dim=-1)
    lower = torch.cat([torch.zeros_like(a[..., :1]), a[..., 1:] / dzl[1:]], dim=-1)
    return lower, diag, upper


def mean_operator(
    bio: torch.Tensor,
    cryo: torch.Tensor,
    forcing: dict,
    *,
    conservative: bool = True,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Annual (12-month mean) tridiagonal transport operator, each ``[n, 20]`` (day-1).

    Decided per column: a column whose active layer (ALTMAX, ALTMAX_LASTYEAR) and bedrock are
    constant over the months builds one month's operator (the mean of 12 equal terms), the
    others the mean of their monthly operators (NaN months omitted). A column's result
    therefore never depends on the other columns of the batch (as the fused kernel of
    :mod:`xproda.models.fused_steady`), which sharded site runs rely on.
    """
    from xproda.models.forcing import nanmean_months

    alt, alt_ly, nb = forcing["ALTMAX"], forcing["ALTMAX_LASTYEAR"], forcing["nbedrock"]
    n = max(x.shape[0] for x in (alt, alt_ly, nb, bio, cryo) if x.dim() > 0)
    const = _constant_over_months(alt) & _constant_over_months(alt_ly) & _constant_over_months(nb)
    const = const.expand(n) if const.shape[0] != n else const
    d = diffusivity(bio, cryo, alt[:, :1], alt_ly[:, :1], nb[:, :1])
    one = tuple(nanmean_months(p, dim=1) for p in monthly_operator(d, nb[:, :1],
                                                                   conservative=conservative))
    if bool(const.all()):
        return one  # type: ignore[return-value]
    idx = torch.nonzero(~const).reshape(-1)

    def rows(x):
        return x.index_select(0, idx) if x.dim() > 0 and x.shape[0] == n else x

    d = diffusivity(rows(bio), rows(cryo), rows(alt), rows(alt_ly), rows(nb))
    parts = monthly_operator(d, rows(nb), conservative=conservative)
    full = tuple(nanmean_months(p, dim=1) for p in parts)
    out = []
    for o, f in zip(one, full):
        o = o.expand(n, *o.shape[1:]) if o.shape[0] != n else o
        out.append(o.index_copy(0, idx, f.to(o.dtype)))
    return tuple(out)  # type: ignore[return-value]


def _constant_over_months(x: torch.Tensor) -> torch.Tensor:
    """Per row ``[n]``: whether ``x`` ``[n, 12]`` is the same in every month (NaN == NaN)."""
    first = x[:, :1]
    return ((x == first) | (torch.isnan(x) & torch.isnan(first))).all(-1)


def dense(lower: torch.Tensor, diag: torch.Tensor, upper: torch.Tensor) -> torch.Tensor:
    """Dense ``[n, 20, 20]`` matrix from tridiagonal bands (for tests and diagnostics)."""
    return torch.diag_embed(diag) + torch.diag_embed(lower[..., 1:], -1) + torch.diag_embed(
        upper[..., :-1], 1
    )
