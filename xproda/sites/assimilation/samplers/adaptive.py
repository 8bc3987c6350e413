"""Adaptive Metropolis (Haario, Saksman and Tamminen 2001) for every site and chain at once."""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from xproda.sites.assimilation import streams
from xproda.sites.assimilation.checkpoint import checkpoint_exists
from xproda.sites.assimilation.diagnostics import rhat_ess
from xproda.options import progress_bar
from xproda.sites.assimilation.samplers.common import (
    State,
    Target,
    call_target,
    hash_ids,
    hash_tensor,
    init_tensor,
    load_state,
    matmul_bt,
    ordered_sum,
    resolve_device,
    save_state,
)
from xproda.sites.assimilation.samplers.results import SamplerResult

__all__ = ["adaptive_metropolis"]

_F64 = torch.float64


def _sigmoid(z: Tensor) -> Tensor:
    """``1 / (1 + exp(-z))``: unlike ``torch.sigmoid``, whose vectorised and scalar CPU
    paths round differently, a value's bits do not depend on the tensor's size (a site's
    result must not depend on the batch)."""
    return torch.exp(-z).add_(1.0).reciprocal_()


def _logit(theta: Tensor) -> Tensor:
    """``log(theta / (1 - theta))`` (``torch.logit`` rounds by tensor size, see _sigmoid)."""
    return torch.log(theta / (1.0 - theta))


def _safe_cholesky(cov: Tensor, floor: float, *, out: Tensor) -> Tensor:
    """Batched Cholesky into ``out``; rows where it fails get the diagonal square root.

    Returns the per-row success mask.
    """
    info = torch.empty(cov.shape[0], dtype=torch.int32, device=cov.device)
    torch.linalg.cholesky_ex(cov, out=(out, info))
    ok = info == 0
    if not bool(ok.all()):
        bad = (~ok).nonzero().squeeze(1)
        diag = torch.diagonal(cov[bad], dim1=-2, dim2=-1).clamp_min(floor).sqrt()
        out[bad] = torch.diag_embed(diag)
    return ok


def adaptive_metropolis(
    log_density: Target,
    *,
    n_sites: int,
    n_params: int,
    n_chains: int = 3,
    n_iter: int = 20000,
    burn_in: int | None = None,
    thin: int = 1,
    max_draws: int | None = None,
    init: Any = None,
    init_scale: float = 0.05,
    adapt_start: int | None = None,
    adapt_every: int = 20,
    scale: float | None = None,
    eps: float = 1e-6,
    transform: str = "box",
    store_draws: bool = True,
    store_dtype: torch.dtype = torch.float64,
    store_device: str | torch.device | None = None,
    diagnostics: bool = True,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    param_names: Sequence[str] | None = None,
    site_ids: Sequence[Any] | None = None,
) -> SamplerResult:
    """Adaptive Metropolis (Haario, Saksman and Tamminen 2001) for every site and chain.

    Each of the ``n_sites * n_chains`` chains proposes ``theta' ~ N(theta, C_t)`` with
    ``C_t = scale * (Cov(theta_0..theta_{t-1}) + eps I)`` from the chain's own history once
    ``t >= adapt_start`` (``init_scale^2 I`` before), and accepts with
    ``log u < log_density(theta') - log_density(theta)``. One call of ``log_density``
    evaluates all chains of all sites.

    **Random numbers** come from per-site streams (:mod:`xproda.sites.assimilation.streams`)
    keyed by ``seed`` and the site's id: chain ``c`` of a site draws its start, start
    redraws, proposal noise and acceptance uniforms from its own keys, at counters given by
    the iteration (or redraw attempt). A site's chains are therefore the same whether the
    site runs alone or in any batch, in any position, split into shards of any size, on any
    worker (given a target whose value for a row depends on that row only).

    Parameters
    ----------
    log_density : callable
        ``log_density(theta[B, P]) -> Tensor[B]`` with ``B = n_sites * n_chains`` rows,
        site-major (``theta.view(n_sites, n_chains, P)``); ``-inf``/NaN marks invalid
        points. It is only ever called with points strictly inside (0, 1)^P.
    n_sites, n_params : int
        Number of independent sites and parameters P.
    n_chains : int
        Chains per site (default 3; at least 2 for R-hat).
    n_iter : int
        Iterations per chain (each is one ``log_density`` call for the whole batch).
    burn_in : int, optional
        Iterations discarded (default ``n_iter // 2``).
    thin : int
        Keep every ``thin``-th post-burn-in draw.
    max_draws : int, optional
        Upper bound on the kept draws per chain; ``thin`` is raised as needed.
    init : array_like, optional
        Starting points ``[n_sites, P]`` (chain 0 of each site; the other chains start
        dispersed) or ``[n_sites, n_chains, P]``. Default: uniform in (0.1, 0.9).
    init_scale : float
        Standard deviation of the initial (non-adapted) proposal, in theta units.
    adapt_start : int, optional
        Iteration from which the empirical covariance is used (default
        ``max(2P, min(1000, n_iter // 10))``).
    adapt_every : int
        The proposal covariance (and its Cholesky factor) is recomputed every
        ``adapt_every`` iterations (default 20; 1 = every iteration as in Haario et al.).
        The running covariance includes every state; updating it in blocks of
        ``adapt_every`` states turns ``adapt_every`` rank-one updates into one batched
        matrix product, which is what keeps the sampler's overhead small for large
        batches.
    scale : float, optional
        Scaling of the empirical covariance (default ``2.38**2 / P``, Haario et al. 2001).
    eps : float
        Regularisation added to the empirical covariance before scaling.
    transform : {"box", "logit"}
        ``"box"`` (default): random walk in theta; proposals outside (0, 1)^P are rejected
        (the target is zero outside the box, so detailed balance holds) without calling
        ``log_density`` for them. ``"logit"``: random walk in ``z = logit(theta)`` with the
        log-Jacobian ``sum log(theta (1 - theta))`` added, so no proposal leaves the box;
        ``init_scale`` then applies in z units multiplied by 4.
    store_draws : bool
        Keep the post-burn-in draws (needed for rank R-hat and ESS; without them R-hat is
        the classic Gelman-Rubin value from running chain moments and ESS is NaN).
    store_dtype : torch.dtype
        Dtype of stored draws (``torch.float32`` halves the memory). Memory of the draws is
        ``n_sites * n_chains * n_draws * P * itemsize``: 1,000 sites x 3 chains x 10,000
        draws x 21 parameters is 5 GB in float64, 2.5 GB in float32; use ``thin`` or
        ``max_draws`` to bound it.
    store_device : str or torch.device, optional
        Device of the stored draws (default: the computation device).
    diagnostics : bool
        Compute rank-normalised R-hat and bulk ESS from the stored draws at the end (on
        the CPU; about 10 s per 30 million stored values). If False, ``rhat`` is the
        classic Gelman-Rubin value from the running chain moments and ``ess`` is NaN;
        :func:`xproda.sites.assimilation.diagnostics.rhat_ess` computes them later.
    seed : int
        Seed of the random streams (with ``site_ids``).
    device : str or torch.device, optional
        Computation device.
    progress : bool or None, default None
        Show a tqdm progress bar. None: the option ``progress`` (:func:`xproda.set_options`).
    checkpoint : path-like, optional
        Checkpoint file (safetensors + JSON; see :mod:`xproda.sites.assimilation.checkpoint`).
    checkpoint_every : int, optional
        Iterations between checkpoints (rounded up to a multiple of ``adapt_every``;
        default ``n_iter // 20``). A final checkpoint is written at the end.
    resume : bool
        Continue from ``checkpoint`` if it exists (settings must match); the result is
        identical to an uninterrupted run with the same seed.
    param_names : sequence of str, optional
        Parameter names for :meth:`SamplerResult.to_dataset`.
    site_ids : sequence, optional
        Unique id of each site (``n_sites``; strings or integers, compared as text): the
        keys of the sites' random streams. Default: the positions ``0 .. n_sites-1``, so a
        site's result then depends on its position (not on the other sites).

    Returns
    -------
    SamplerResult
        ``mean``/``sd`` over all post-burn-in iterations (running moments, pooled over
        chains; not affected by thinning), ``rhat``/``ess`` from the stored draws,
        ``acceptance`` after burn-in, ``best`` = highest log density visited; extras
        ``acceptance_total`` (site, chain) over all iterations and ``chain_mean``,
        ``chain_sd`` (site, chain, parameter).
    """
    dev = resolve_device(device)
    S, C, P = int(n_sites), int(n_chains), int(n_params)
    if S < 1 or C < 1 or P < 1 or n_iter < 1:
        raise ValueError("n_sites, n_chains, n_params and n_iter must be >= 1")
    if transform not in ("box", "logit"):
        raise ValueError(f"transform must be 'box' or 'logit'; got {transform!r}")
    B = S * C
    burn_in = n_iter // 2 if burn_in is None else int(burn_in)
    if not 0 <= burn_in < n_iter:
        raise ValueError(f"burn_in must be in [0, n_iter); got {burn_in}")
    n_post = n_iter - burn_in
    thin = max(1, int(thin))
    if max_draws is not None:
        thin = max(thin, math.ceil(n_post / max(1, int(max_draws))))
    n_draws = n_post // thin if store_draws else 0
    scale = 2.38**2 / P if scale is None else float(scale)
    if adapt_start is None:
        adapt_start = max(2 * P, min(1000, n_iter // 10))
    adapt_every = max(1, int(adapt_every))
    if checkpoint_every is None:
        checkpoint_every = max(1, n_iter // 20)
    checkpoint_every = math.ceil(int(checkpoint_every) / adapt_every) * adapt_every
    sdev = dev if store_device is None else torch.device(store_device)
    init_t = init_tensor(init, dev)
    if init_t is not None and init_t.shape not in ((S, P), (S, C, P)):
        raise ValueError(
            f"init must have shape [{S}, {P}] or [{S}, {C}, {P}]; got {tuple(init_t.shape)}")
    site_keys = streams.site_keys(site_ids, int(seed), n=S, device=dev)
    if site_keys.shape[0] != S:
        raise ValueError(f"site_ids has {site_keys.shape[0]} ids for n_sites={S}")
    settings = dict(
        n_sites=S, n_params=P, n_chains=C, n_iter=int(n_iter), burn_in=burn_in, thin=thin,
        n_draws=n_draws, init_scale=float(init_scale), adapt_start=int(adapt_start),
        adapt_every=adapt_every, scale=scale, eps=float(eps), transform=transform,
        store_draws=bool(store_draws), store_dtype=str(store_dtype), seed=int(seed),
        init_sha1=hash_tensor(init_t), site_ids_sha1=hash_ids(site_ids),
    )
    # keys of row b = (site b // C, chain b % C), one per purpose; counters: the iteration
    # (proposal noise, acceptance) or the attempt (starts)
    row_site = site_keys.repeat_interleave(C)
    row_chain = torch.arange(B, device=dev) % C
    k_start, k_redraw, k_noise, k_accept = (
        streams.derive(row_site, f"am-{purpose}", row_chain)
        for purpose in ("start", "start-redraw", "proposal", "accept"))
    logit = transform == "logit"
    eye = torch.eye(P, dtype=_F64, device=dev)

    def evaluate(z: Tensor, fallback: Tensor | None) -> tuple[Tensor, Tensor, Tensor]:
        """(chain log density, target log density, theta) at z; invalid rows -> -inf."""
        theta = _sigmoid(z) if logit else z
        inside = ((theta > 0) & (theta < 1)).all(-1)
        if fallback is None:
            fallback = torch.full_like(theta, 0.5)
        safe = torch.where(inside[:, None], theta, fallback)
        lpt, _ = call_target(log_density, safe, B, "log_density")
        lpt = torch.where(inside & ~torch.isnan(lpt), lpt, torch.full_like(lpt, -math.inf))
        lp = lpt
        if logit:
            logsig = torch.nn.functional.logsigmoid
            lp = lpt + ordered_sum(logsig(z) + logsig(-z), -1)
        return lp, lpt, theta

    if resume and checkpoint_exists(checkpoint):
        st, meta = load_state(checkpoint, settings, dev)
        it = int(meta["iteration"])
        if store_draws:
            stored = st.pop("draws")
            draws = torch.full((S, C, n_draws, P), math.nan, dtype=store_dtype, device=sdev)
            draws[:, :, : stored.shape[2]] = stored.to(sdev, store_dtype)
    else:
        it = 0
        start = (streams.uniform(k_start, 0, P) * 0.8 + 0.1).view(S, C, P)
        given = torch.zeros(S, C, dtype=torch.bool, device=dev)
        if init_t is not None:
            if init_t.dim() == 2:
                start[:, 0] = init_t
                given[:, 0] = True
            else:
                start = init_t.clone()
                given[:] = True
        theta0 = start.reshape(B, P)
        z0 = _logit(theta0) if logit else theta0.clone()
        lp, lpt, _ = evaluate(z0, None)
        given = given.reshape(B)
        for attempt in range(1, 101):
            # a row redrawn at this attempt was bad at every earlier one: the counter is
            # the row's own attempt number
            bad = ~torch.isfinite(lp) & ~given
            if not bool(bad.any()):
                break
            redraw = streams.uniform(k_redraw[bad], attempt, P) * 0.8 + 0.1
            theta0 = theta0.clone()
            theta0[bad] = redraw
            z0 = _logit(theta0) if logit else theta0.clone()
            lp2, lpt2, _ = evaluate(z0, None)
            lp = torch.where(bad, lp2, lp)
            lpt = torch.where(bad, lpt2, lpt)
        if not bool(torch.isfinite(lp).all()):
            warnings.warn(
                f"{int((~torch.isfinite(lp)).sum())} chains start at a point with non-finite "
                "log density; they move at their first finite proposal",
                RuntimeWarning, stacklevel=2,
            )
        s0 = init_scale * (4.0 if logit else 1.0)
        st = State(
            z=z0, lp=lp, lpt=lpt,
            mean=z0.clone(), m2=torch.zeros(B, P, P, dtype=_F64, device=dev),
            count=torch.ones((), dtype=torch.int64, device=dev),
            chol=(s0 * eye).expand(B, P, P).clone(),
            n_acc=torch.zeros(B, dtype=torch.int64, device=dev),
            n_acc_post=torch.zeros(B, dtype=torch.int64, device=dev),
            post_mean=torch.zeros(B, P, dtype=_F64, device=dev),
            post_m2=torch.zeros(B, P, dtype=_F64, device=dev),
            best_lpt=lpt.clone(), best_theta=theta0.clone(),
        )
        if store_draws:
            draws = torch.full((S, C, n_draws, P), math.nan, dtype=store_dtype, device=sdev)

    def save(iteration: int) -> None:
        tensors = State(st)
        if store_draws:
            kept = max(0, (iteration - burn_in) // thin) if iteration > burn_in else 0
            tensors["draws"] = draws[:, :, : min(kept, n_draws)]
        save_state(checkpoint, tensors, settings, {"iteration": iteration})

    # Work buffers (not part of the state). Large temporaries are reused in place: on some
    # systems fresh allocations of [B, P, P] or [k, B, P] tensors cost more (page faults)
    # than the arithmetic. Tensors handed to log_density are always fresh.
    w_steps = torch.empty(adapt_every, B, P, dtype=_F64, device=dev)
    # draws of a block, iteration-major: draw row j * B + b is iteration it + j of chain row
    # b (counter it + j), whatever the block's length
    blk_noise = k_noise.repeat(adapt_every)
    blk_accept = k_accept.repeat(adapt_every)
    blk_step = torch.arange(adapt_every, device=dev).repeat_interleave(B)
    w_block = torch.empty(adapt_every, B, P, dtype=_F64, device=dev)
    w_tblock = torch.empty(adapt_every, B, P, dtype=_F64, device=dev) if logit else None
    w_dev = torch.empty(adapt_every, B, P, dtype=_F64, device=dev)
    w_cols = torch.empty(B, P, adapt_every + 1, dtype=_F64, device=dev)
    w_cov = torch.empty(B, P, P, dtype=_F64, device=dev)
    w_gram = torch.empty(B, P, P, dtype=_F64, device=dev)
    w_prop = torch.empty(B, P, dtype=_F64, device=dev)
    w_z = torch.empty(B, P, dtype=_F64, device=dev)
    w_th = torch.empty(B, P, dtype=_F64, device=dev) if logit else None
    w_best = torch.empty(B, P, dtype=_F64, device=dev)
    pbar = progress_bar(progress, total=n_iter, initial=it, desc="adaptive Metropolis",
                        leave=False)
    try:
        while it < n_iter:
            k = min(adapt_every, n_iter - it)
            kb = k * B  # the last block may be shorter: its first k iterations
            ctr = blk_step[:kb] + it
            noise = streams.normal(blk_noise[:kb], ctr, P).view(k, B, P)
            log_u = torch.log(streams.uniform(blk_accept[:kb], ctr, 1)).view(k, B)
            # L @ noise for every chain and iteration, stored iteration-major [k, B, P]
            steps = w_steps[:k]
            matmul_bt(noise.transpose(0, 1), st.chol, out=steps.transpose(0, 1))
            del noise
            block = w_block[:k]  # z after each iteration
            tblock = w_tblock[:k] if logit else block
            accs = torch.empty(k, B, dtype=torch.bool, device=dev)
            z, lp, lpt = st.z, st.lp, st.lpt
            theta = _sigmoid(z) if logit else z
            for j in range(k):
                prop = torch.add(z, steps[j], out=w_prop)
                lp_p, lpt_p, theta_p = evaluate(prop, theta)
                acc = log_u[j] < lp_p - lp  # NaN (both -inf) -> False
                accs[j] = acc
                a_ = acc[:, None]
                z, w_z = torch.where(a_, prop, z, out=w_z), z
                lp = torch.where(acc, lp_p, lp)
                if logit:
                    theta, w_th = torch.where(a_, theta_p, theta, out=w_th), theta
                    lpt = torch.where(acc, lpt_p, lpt)
                    tblock[j] = theta
                else:
                    theta, lpt = z, lp
                block[j] = z
                better = lpt > st.best_lpt
                st.best_lpt = torch.where(better, lpt, st.best_lpt)
                st.best_theta, w_best = (
                    torch.where(better[:, None], theta, st.best_theta, out=w_best),
                    st.best_theta,
                )
            it0, it = it, it + k
            st.n_acc += accs.sum(0)
            j0 = max(0, burn_in - it0)  # first post-burn-in iteration of the block
            if j0 < k:
                st.n_acc_post += accs[j0:].sum(0)
                # merge the post-burn-in part into the running chain moments (theta space)
                xb = tblock[j0:]
                n_a, n_b = max(0, it0 - burn_in), k - j0
                mb = ordered_sum(xb, 0) / n_b
                d = mb - st.post_mean
                dv = torch.sub(xb, mb, out=w_dev[:n_b])
                dv.mul_(dv)
                st.post_m2 = st.post_m2 + ordered_sum(dv, 0) + d * d * (n_a * n_b / (n_a + n_b))
                st.post_mean = st.post_mean + d * (n_b / (n_a + n_b))
                if store_draws:
                    m_first = it0 + j0 + 1 - burn_in  # post-burn-in index of row j0 (1-based)
                    start = j0 + (-m_first) % thin  # first kept row of the block
                    d0 = (m_first + start - j0) // thin - 1  # its index among the draws
                    n_keep = min(len(range(start, k, thin)), max(0, n_draws - d0))
                    if n_keep:
                        src = tblock[start : start + (n_keep - 1) * thin + 1 : thin]
                        draws[:, :, d0 : d0 + n_keep].copy_(
                            src.view(n_keep, S, C, P).permute(1, 2, 0, 3))
            st.z, st.lp, st.lpt = z, lp, lpt
            # merge the block into the running mean/covariance (Chan et al. parallel update);
            # in place into preallocated buffers: fresh [B, P, P] temporaries are slow
            n_a = int(st.count)
            n_ab = n_a + k
            mean_b = ordered_sum(block, 0) / k
            delta = mean_b - st.mean
            cols = w_cols[:, :, : k + 1]
            torch.sub(block.permute(1, 2, 0), mean_b[:, :, None], out=cols[:, :, :k])
            cols[:, :, k] = delta * math.sqrt(n_a * k / n_ab)
            st.m2 += matmul_bt(cols, cols, out=w_gram)
            st.mean.add_(delta, alpha=k / n_ab)
            st.count = st.count + k
            if it >= adapt_start:
                torch.mul(st.m2, scale / (n_ab - 1), out=w_cov)
                w_cov.diagonal(dim1=-2, dim2=-1).add_(scale * eps)
                _safe_cholesky(w_cov, scale * eps, out=st.chol)
            pbar.update(k)
            if checkpoint is not None and (it % checkpoint_every == 0 or it == n_iter):
                save(it)
    finally:
        pbar.close()

    # ---- summaries (sums over chains in a fixed order: a site's values are its own)
    nc = n_post
    cm = st.post_mean.view(S, C, P)
    cvar = st.post_m2.view(S, C, P) / max(nc - 1, 1)
    mean = ordered_sum(cm, 1) / C
    pooled_var = (ordered_sum(st.post_m2.view(S, C, P), 1)
                  + nc * ordered_sum((cm - mean[:, None]) ** 2, 1)) / max(C * nc - 1, 1)
    sd = pooled_var.sqrt()
    if store_draws and n_draws >= 4 and diagnostics:
        rh, es = rhat_ess(draws, chain_axis=1, draw_axis=2)
        rh, es = rh.to(dev), es.to(dev)
    else:
        if C > 1 and nc > 1:
            w = ordered_sum(cvar, 1) / C
            bn = ordered_sum((cm - mean[:, None]) ** 2, 1) / (C - 1)
            rh = torch.sqrt(((nc - 1) / nc * w + bn) / w)
        else:
            rh = torch.full((S, P), math.nan, dtype=_F64, device=dev)
        es = torch.full((S, P), math.nan, dtype=_F64, device=dev)
    best_lpt = st.best_lpt.view(S, C)
    bc = torch.argmax(torch.nan_to_num(best_lpt, nan=-math.inf), dim=1)
    ar = torch.arange(S, device=dev)
    best = st.best_theta.view(S, C, P)[ar, bc]
    settings_out = dict(settings, checkpoint=str(checkpoint) if checkpoint else None)
    return SamplerResult(
        method="adaptive_metropolis",
        samples=draws if store_draws else None,
        mean=mean,
        sd=sd,
        best=best,
        best_value=best_lpt[ar, bc],
        rhat=rh,
        ess=es,
        acceptance=(st.n_acc_post.view(S, C).to(_F64) / n_post),
        n_accepted=st.n_acc_post.view(S, C).clone(),
        settings=settings_out,
        param_names=list(param_names) if param_names is not None else None,
        extras={
            "acceptance_total": (("site", "chain"), st.n_acc.view(S, C).to(_F64) / n_iter),
            "chain_mean": (("site", "chain", "parameter"), cm.clone()),
            "chain_sd": (("site", "chain", "parameter"), cvar.sqrt()),
        },
    )
