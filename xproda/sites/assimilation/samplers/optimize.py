"""Gradient-based MAP / minimum-loss estimates per site: batched Adam and L-BFGS, multi-start."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from xproda.sites.assimilation.samplers.common import (
    Target,
    init_tensor,
    make_generator,
    progress_bar,
    resolve_device,
)
from xproda.sites.assimilation.samplers.results import MapResult

__all__ = ["map_estimate"]

_F64 = torch.float64


def _value_and_grad(loss: Target, z: Tensor, n: int) -> tuple[Tensor, Tensor, Tensor]:
    """Loss [n], gradient w.r.t. z [n, P] (zeros where not finite) and finite mask."""
    zz = z.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        theta = torch.sigmoid(zz)
        # saturated sigmoid (|z| very large) gives theta = 0 or 1 exactly: never pass those
        inside = ((theta > 0) & (theta < 1)).all(-1).detach()
        theta = torch.where(inside[:, None], theta, torch.full_like(theta, 0.5))
        out = loss(theta)
        if isinstance(out, tuple):
            out = out[0]
        val = torch.as_tensor(out)
        if val.numel() != n:
            raise ValueError(f"loss returned {val.numel()} values for a batch of {n} rows")
        val = val.reshape(n)
        if not val.requires_grad:
            raise ValueError("loss must be differentiable with respect to theta (torch ops)")
        fin = torch.isfinite(val.detach()) & inside
        total = torch.where(fin, val, torch.zeros_like(val)).sum()
        (g,) = torch.autograd.grad(total, zz, allow_unused=True)
    if g is None:
        g = torch.zeros_like(z)
    fin = fin & torch.isfinite(g).all(-1)
    g = torch.where(fin[:, None], g, torch.zeros_like(g)).to(_F64)
    v = val.detach().to(_F64)
    return torch.where(fin, v, torch.full_like(v, math.inf)), g, fin


def map_estimate(
    loss: Target,
    *,
    n_sites: int,
    n_params: int,
    n_starts: int = 4,
    method: str = "adam",
    steps: int | None = None,
    lr: float | None = None,
    init: Any = None,
    seed: int = 0,
    rtol: float = 1e-10,
    gtol: float = 1e-8,
    patience: int = 20,
    min_lr: float | None = None,
    history: int = 10,
    max_line_search: int = 30,
    device: str | torch.device | None = None,
    progress: bool = True,
    param_names: Sequence[str] | None = None,
) -> MapResult:
    """Gradient-based MAP / minimum-loss estimate per site, multi-start, in logit space.

    The optimiser works on ``z = logit(theta)`` (``theta = sigmoid(z)``), so every iterate
    is inside (0, 1)^P. All ``n_sites * n_starts`` problems form one batch (site-major);
    each site keeps its best start.

    Parameters
    ----------
    loss : callable
        Differentiable ``loss(theta[B, P]) -> Tensor[B]`` (lower is better; e.g. a cost or
        a negative log posterior), ``B = n_sites * n_starts`` site-major. Rows must be
        independent (the gradient of the summed loss is then the per-row gradient).
    n_sites, n_params : int
        Sites and parameters.
    n_starts : int
        Starts per site: uniform in (0.1, 0.9), except those given by ``init``.
    method : {"adam", "lbfgs"}
        ``"adam"``: batched Adam with a per-row learning rate halved whenever the row's
        best loss has not improved for ``patience`` steps (converged when it falls below
        ``min_lr``). ``"lbfgs"``: a batched L-BFGS with per-row two-loop recursion,
        per-row backtracking Armijo line search and per-row curvature-pair memory, so line
        searches are *not* coupled across sites (torch.optim.LBFGS on the summed loss
        would use one step length for every site). Each line-search trial is one batched
        call. Converged rows are frozen.
    steps : int, optional
        Maximum iterations (default 2000 for Adam, 200 for L-BFGS).
    lr : float, optional
        Adam learning rate in z units (default 0.05). Unused by L-BFGS.
    init : array_like, optional
        Starts ``[n_sites, P]`` (start 0) or ``[n_sites, n_starts, P]``.
    seed : int
        Seed of the random starts.
    rtol : float
        L-BFGS: converged when the loss decrease is at most ``rtol * max(|L|, 1)``; Adam:
        improvements smaller than this do not reset the patience counter.
    gtol : float
        L-BFGS: converged when ``max |dL/dz| <= gtol``.
    patience : int
        Adam: steps without improvement before the row's learning rate is halved.
    min_lr : float, optional
        Adam: a row is converged when its learning rate falls below this (default
        ``lr * 1e-4``).
    history : int
        L-BFGS memory (curvature pairs).
    max_line_search : int
        L-BFGS: step halvings per line search; a row whose search fails with an empty
        memory is frozen and reported not converged.
    device : str or torch.device, optional
        Computation device.
    progress : bool
        Show a tqdm progress bar.
    param_names : sequence of str, optional
        Names for :meth:`MapResult.to_dataset`.

    Returns
    -------
    MapResult
        ``theta_map [S, P]``, ``loss [S]``, ``n_steps [S]``, ``converged [S]`` of the best
        start of each site, and the per-start values.
    """
    dev = resolve_device(device)
    S, K, P = int(n_sites), int(n_starts), int(n_params)
    B = S * K
    if method not in ("adam", "lbfgs"):
        raise ValueError(f"method must be 'adam' or 'lbfgs'; got {method!r}")
    steps = (2000 if method == "adam" else 200) if steps is None else int(steps)
    lr = 0.05 if lr is None else float(lr)
    min_lr = lr * 1e-4 if min_lr is None else float(min_lr)
    gen = make_generator(seed, dev)
    start = torch.rand(S, K, P, generator=gen, device=dev, dtype=_F64) * 0.8 + 0.1
    given = torch.zeros(S, K, dtype=torch.bool, device=dev)
    init_t = init_tensor(init, dev)
    if init_t is not None:
        if init_t.shape == (S, P):
            start[:, 0] = init_t
            given[:, 0] = True
        elif init_t.shape == (S, K, P):
            start = init_t.clone()
            given[:] = True
        else:
            raise ValueError(f"init must have shape [{S}, {P}] or [{S}, {K}, {P}]")
    theta = start.reshape(B, P).clamp(1e-12, 1 - 1e-12)
    given = given.reshape(B)
    z = torch.logit(theta)
    L, g, fin = _value_and_grad(loss, z, B)
    for _ in range(20):  # redraw random starts with a non-finite loss
        bad = ~fin & ~given
        if not bool(bad.any()):
            break
        z = z.clone()
        z[bad] = torch.logit(
            torch.rand(int(bad.sum()), P, generator=gen, device=dev, dtype=_F64) * 0.8 + 0.1)
        L2, g2, f2 = _value_and_grad(loss, z, B)
        L = torch.where(bad, L2, L)
        g = torch.where(bad[:, None], g2, g)
        fin = torch.where(bad, f2, fin)
    conv = torch.zeros(B, dtype=torch.bool, device=dev)
    frozen = ~fin  # rows that cannot be optimised
    nsteps = torch.zeros(B, dtype=torch.int64, device=dev)
    pbar = progress_bar(progress, steps, 0, f"MAP ({method})")
    try:
        if method == "adam":
            z, L, conv, nsteps = _adam(loss, z, L, g, fin, frozen, steps, lr, min_lr, rtol,
                                       patience, pbar)
        else:
            z, L, conv, nsteps = _lbfgs(loss, z, L, g, frozen, steps, rtol, gtol, history,
                                        max_line_search, pbar)
    finally:
        pbar.close()
    theta_all = torch.sigmoid(z).view(S, K, P)
    loss_all = L.view(S, K)
    best = torch.argmin(torch.nan_to_num(loss_all, nan=math.inf), 1)
    ar = torch.arange(S, device=dev)
    settings = dict(n_sites=S, n_params=P, n_starts=K, optimizer=method, steps=steps, lr=lr,
                    seed=int(seed), rtol=rtol, gtol=gtol, patience=patience, min_lr=min_lr,
                    history=history, max_line_search=max_line_search)
    lb = loss_all[ar, best]
    return MapResult(
        theta_map=theta_all[ar, best],
        loss=torch.where(torch.isfinite(lb), lb, torch.full_like(lb, math.nan)),
        n_steps=nsteps.view(S, K)[ar, best],
        converged=conv.view(S, K)[ar, best],
        best_start=best,
        start_theta=theta_all,
        start_loss=torch.where(torch.isfinite(loss_all), loss_all,
                               torch.full_like(loss_all, math.nan)),
        start_converged=conv.view(S, K),
        start_n_steps=nsteps.view(S, K),
        method=method,
        settings=settings,
        param_names=list(param_names) if param_names is not None else None,
    )


def _adam(loss, z, L, g, fin, frozen, steps, lr, min_lr, rtol, patience, pbar):
    B, P = z.shape
    dev = z.device
    b1, b2, eps = 0.9, 0.999, 1e-8
    m = torch.zeros_like(z)
    v = torch.zeros_like(z)
    t = torch.zeros(B, dtype=_F64, device=dev)
    lr_row = torch.full((B,), lr, dtype=_F64, device=dev)
    bad = torch.zeros(B, dtype=torch.int64, device=dev)
    conv = torch.zeros(B, dtype=torch.bool, device=dev)
    nsteps = torch.zeros(B, dtype=torch.int64, device=dev)
    best_z, best_L, best_g = z.clone(), L.clone(), g.clone()
    for _ in range(steps):
        act = ~conv & ~frozen
        if not bool(act.any()):
            break
        a = act[:, None]
        t = t + act.to(_F64)
        m = torch.where(a, b1 * m + (1 - b1) * g, m)
        v = torch.where(a, b2 * v + (1 - b2) * g * g, v)
        tt = t.clamp_min(1)[:, None]
        mhat = m / (1 - b1**tt)
        vhat = v / (1 - b2**tt)
        z = torch.where(a, z - lr_row[:, None] * mhat / (vhat.sqrt() + eps), z)
        nsteps = nsteps + act.to(torch.int64)
        L, g, fin = _value_and_grad(loss, z, B)
        # a non-finite loss: back to the best point, half the learning rate, fresh moments
        nf = act & ~fin
        z = torch.where(nf[:, None], best_z, z)
        L = torch.where(nf, best_L, L)
        g = torch.where(nf[:, None], best_g, g)
        lr_row = torch.where(nf, lr_row * 0.5, lr_row)
        m = torch.where(nf[:, None], 0.0, m)
        v = torch.where(nf[:, None], 0.0, v)
        t = torch.where(nf, 0.0, t)
        ok = act & fin
        improved = ok & (L < best_L - rtol * best_L.abs().clamp_min(1.0))
        better = ok & (L < best_L)
        best_z = torch.where(better[:, None], z, best_z)
        best_g = torch.where(better[:, None], g, best_g)
        best_L = torch.where(better, L, best_L)
        bad = torch.where(improved, 0, bad + act.to(torch.int64))
        plateau = act & (bad >= patience)
        lr_row = torch.where(plateau, lr_row * 0.5, lr_row)
        bad = torch.where(plateau, 0, bad)
        conv = conv | (act & (lr_row < min_lr))
        pbar.update(1)
    return best_z, best_L, conv, nsteps


def _lbfgs(loss, z, L, g, frozen, steps, rtol, gtol, history, max_ls, pbar):
    B, P = z.shape
    dev = z.device
    M = max(1, int(history))
    S_h = torch.zeros(B, M, P, dtype=_F64, device=dev)
    Y_h = torch.zeros(B, M, P, dtype=_F64, device=dev)
    rho = torch.zeros(B, M, dtype=_F64, device=dev)
    conv = (g.abs().amax(-1) <= gtol) & ~frozen
    stuck = frozen.clone()
    nsteps = torch.zeros(B, dtype=torch.int64, device=dev)
    c1 = 1e-4
    for _ in range(steps):
        act = ~conv & ~stuck
        if not bool(act.any()):
            break
        # two-loop recursion (empty memory slots have rho = 0 and do nothing)
        q = g.clone()
        alpha = torch.zeros(B, M, dtype=_F64, device=dev)
        for i in range(M - 1, -1, -1):
            alpha[:, i] = rho[:, i] * (S_h[:, i] * q).sum(-1)
            q = q - alpha[:, i, None] * Y_h[:, i]
        sy = (S_h[:, -1] * Y_h[:, -1]).sum(-1)
        yy = (Y_h[:, -1] ** 2).sum(-1)
        gamma0 = torch.clamp(1.0 / g.abs().sum(-1).clamp_min(1e-300), max=1.0)
        gamma = torch.where(rho[:, -1] > 0, sy / yy.clamp_min(1e-300), gamma0)
        r = gamma[:, None] * q
        for i in range(M):
            beta = rho[:, i] * (Y_h[:, i] * r).sum(-1)
            r = r + S_h[:, i] * (alpha[:, i] - beta)[:, None]
        d = -r
        gd = (g * d).sum(-1)
        nd = act & ~(gd < 0)
        if bool(nd.any()):  # not a descent direction: steepest descent, memory cleared
            d = torch.where(nd[:, None], -g * gamma0[:, None], d)
            gd = (g * d).sum(-1)
            S_h[nd], Y_h[nd], rho[nd] = 0.0, 0.0, 0.0
        step = torch.ones(B, dtype=_F64, device=dev)
        done = ~act
        z_new, L_new, g_new = z.clone(), L.clone(), g.clone()
        for _ls in range(max_ls):
            trial = ~done
            if not bool(trial.any()):
                break
            zt = torch.where(trial[:, None], z + step[:, None] * d, z_new)
            Lt, gt, ft = _value_and_grad(loss, zt, B)
            arm = trial & ft & (Lt <= L + c1 * step * gd)
            z_new = torch.where(arm[:, None], zt, z_new)
            L_new = torch.where(arm, Lt, L_new)
            g_new = torch.where(arm[:, None], gt, g_new)
            done = done | arm
            step = torch.where(trial & ~arm, step * 0.5, step)
        failed = act & ~done
        had_memory = (rho > 0).any(-1)
        # failed search: clear the memory and retry with steepest descent; if that already
        # failed, the row cannot make progress
        stuck = stuck | (failed & ~had_memory)
        reset = failed & had_memory
        S_h[reset], Y_h[reset], rho[reset] = 0.0, 0.0, 0.0
        succ = act & done
        s = z_new - z
        y = g_new - g
        sy_new = (s * y).sum(-1)
        upd = succ & (sy_new > 1e-12 * (y * y).sum(-1).clamp_min(1e-300)) & (sy_new > 0)
        if bool(upd.any()):
            S_h[upd] = torch.cat([S_h[upd, 1:], s[upd, None]], 1)
            Y_h[upd] = torch.cat([Y_h[upd, 1:], y[upd, None]], 1)
            rho[upd] = torch.cat([rho[upd, 1:], (1.0 / sy_new[upd])[:, None]], 1)
        dec = L - L_new
        scale = torch.maximum(torch.maximum(L.abs(), L_new.abs()), torch.ones_like(L))
        small = succ & (dec <= rtol * scale)
        gconv = succ & (g_new.abs().amax(-1) <= gtol)
        z = torch.where(succ[:, None], z_new, z)
        L = torch.where(succ, L_new, L)
        g = torch.where(succ[:, None], g_new, g)
        nsteps = nsteps + act.to(torch.int64)
        conv = conv | small | gconv
        pbar.update(1)
    return z, L, conv & ~frozen, nsteps
