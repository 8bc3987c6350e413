"""The PRODA sampler as coded (spec §6.3): per-site state machines, annealing, summaries.

:func:`reference_sampler` runs the two-stage adaptive sampler of the reference for every site
in lockstep; :func:`annealed_acceptance_probability` is its acceptance rule.
"""

from __future__ import annotations

import math
import os
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch
from torch import Tensor

from xproda.sites.assimilation import streams
from xproda.sites.assimilation.checkpoint import checkpoint_exists
from xproda.sites.assimilation.diagnostics import reference_gelman_rubin, rhat_ess
from xproda.options import progress_bar
from xproda.sites.assimilation.samplers.common import (
    State,
    Target,
    call_target,
    hash_ids,
    load_state,
    matmul_bt,
    ordered_sum,
    resolve_device,
    save_state,
)
from xproda.sites.assimilation.samplers.results import SamplerResult

__all__ = ["reference_sampler", "annealed_acceptance_probability", "max_post_draws"]

_F64 = torch.float64

_PHASE_STAGE1, _PHASE_STAGE2, _PHASE_DONE, _PHASE_ERROR = 1, 2, 3, 4


def annealed_acceptance_probability(
    delta_cost: Tensor, n: Tensor | int, *, annealing: bool = True
) -> Tensor:
    """Acceptance probability of the PRODA sampler, ``min(1, exp(-dJ ln(n + 2)))``.

    Parameters
    ----------
    delta_cost : Tensor
        Cost increase ``J' - J_old`` (already penalised).
    n : Tensor or int
        Iteration index within the stage (1-based).
    annealing : bool
        If False, the corrected (non-annealed) rule ``min(1, exp(-dJ))`` (bug §10.2 #17).

    Returns
    -------
    Tensor
        Probabilities in [0, 1]; NaN ``delta_cost`` gives 1, like MATLAB's ``min(1, NaN)``.

    Examples
    --------
    >>> import torch
    >>> p = annealed_acceptance_probability(torch.tensor([0.0, 1.0, -1.0]), 1)
    >>> [round(v, 6) for v in p.tolist()]
    [1.0, 0.333333, 1.0]
    """
    delta = torch.as_tensor(delta_cost, dtype=_F64)
    n_t = torch.as_tensor(n, dtype=_F64, device=delta.device)
    temp = torch.log(n_t + 2.0) if annealing else torch.ones_like(n_t)
    p = torch.exp(-delta * temp).clamp(max=1.0)
    return torch.where(torch.isnan(p), torch.ones_like(p), p)


def _cholcov(cov: Tensor, *, out: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """Factor ``T`` with ``T T' = cov`` like MATLAB's ``cholcov`` (used by ``mvnrnd``).

    Cholesky where it succeeds; for the other rows an eigen-decomposition, accepted when
    the matrix is symmetric positive semi-definite within ``10 eps(max |diag|)`` (so a
    rank-deficient or zero covariance samples in its range, as ``mvnrnd`` does). ``ok`` is
    False where the matrix is not finite or not positive semi-definite (``mvnrnd`` fails).
    """
    if out is None:
        chol, info = torch.linalg.cholesky_ex(cov)
    else:
        info = torch.empty(cov.shape[0], dtype=torch.int32, device=cov.device)
        chol, _ = torch.linalg.cholesky_ex(cov, out=(out, info))
    finite = torch.isfinite(cov.sum((-2, -1)))  # NaN/inf propagate; cheaper than isfinite
    ok = (info == 0) & finite
    redo = (~ok & finite).nonzero().squeeze(1)
    if redo.numel():
        c = cov[redo]
        c = 0.5 * (c + c.transpose(-1, -2))
        if c.device.type == "cpu":
            # numpy's eigh (LAPACK on a copy of each matrix in one buffer) gives a matrix
            # the same result in any batch; torch's batched eigh (MKL) does not, which
            # would make a site's result depend on which other sites need this fallback
            lam_np, vec_np = np.linalg.eigh(c.numpy())
            lam, vec = torch.from_numpy(lam_np), torch.from_numpy(vec_np)
        else:
            lam, vec = torch.linalg.eigh(c)
        dmax = torch.diagonal(c, dim1=-2, dim2=-1).abs().amax(-1)
        tol = 10 * torch.finfo(_F64).eps * dmax.clamp_min(torch.finfo(_F64).tiny)
        psd = (lam >= -tol[:, None]).all(-1)
        root = torch.where(lam > tol[:, None], lam, torch.zeros_like(lam)).sqrt()
        chol[redo] = vec * root[:, None, :]
        ok[redo] = psd
    return chol, ok


def _draw_inside(
    center: Tensor, step: Callable[[Tensor | None, int, int], Tensor], max_tries: int
) -> tuple[Tensor, Tensor]:
    """Redraw ``center + step`` until strictly inside (0, 1)^P, for every row.

    Candidates are drawn in rounds of 1, 2, 4, ... (up to 1024) per pending row; the first
    valid candidate of each row is taken, which has the same distribution as redrawing one
    at a time. ``step(rows, tries, r)`` returns random steps number ``tries .. tries+r-1``
    of the given rows (None = all rows), ``[rows, r, P]``. Every pending row has made the
    same number of tries, and a row's candidate number ``i`` is its own draw, so the
    proposal of a row does not depend on the other rows. Returns (proposals, found); rows
    without a valid candidate after ``max_tries`` draws keep ``center`` and ``found = False``.
    """
    m = center.shape[0]
    out = center.clone()
    found = torch.zeros(m, dtype=torch.bool, device=center.device)
    pending = torch.arange(m, device=center.device)
    tries, r = 0, 1
    while pending.numel() and tries < max_tries:
        r = min(r, max_tries - tries)
        if tries == 0:  # all rows pending: no gathers ("None" = every row)
            cand = center[:, None, :] + step(None, tries, r)  # [m, r, P]
        else:
            cand = center[pending, None, :] + step(pending, tries, r)  # [np, r, P]
        inside = ((cand > 0) & (cand < 1)).all(-1)
        has = inside.any(-1)
        first = torch.argmax(inside.to(torch.int8), dim=-1)
        rows = pending[has]
        out[rows] = cand[has, first[has]]
        found[rows] = True
        pending = pending[~has]
        tries += r
        r = min(2 * r, 1024)
    return out, found


class _Reference:
    """Vectorised per-site state machines of the PRODA sampler (see reference_sampler)."""

    def __init__(self, cost, predict, cfg: dict, S: int, C: int, P: int, dev, site_keys,
                 callback):
        self.cost, self.predict, self.cfg = cost, predict, cfg
        self.S, self.C, self.P, self.dev = S, C, P, dev
        self.callback = callback
        self.sequential = cfg["chains"] == "sequential"
        self.k = 1 if self.sequential else C
        self.B = S * self.k
        rows = torch.arange(self.B, device=dev)
        self.site_of = rows // self.k
        # random keys [B, C] per purpose: row b, chain c (the row's current chain selects)
        row_site = site_keys[self.site_of][:, None]
        chains = torch.arange(C, device=dev)[None, :]
        self.keys = {p: streams.derive(row_site, f"reference-{p}", chains)
                     for p in ("stage1", "stage2", "accept")}
        self.rows = rows
        self.store_dtype = getattr(torch, cfg["store_dtype"].replace("torch.", ""))
        t0 = cfg["theta0"]
        self.theta0 = (torch.tensor(t0, dtype=_F64, device=dev) if isinstance(t0, list)
                       else torch.full((P,), t0, dtype=_F64, device=dev))

    def chain_keys(self, purpose: str, rows: Tensor | None = None) -> Tensor:
        """Keys of the rows' current chains (all rows, or the given row indices)."""
        ch = self.st.chain.clamp_max(self.C - 1)  # a finished sequential site has chain = C
        if rows is None:
            return self.keys[purpose][self.rows, ch]
        return self.keys[purpose][rows, ch[rows]]

    # -- evaluation ------------------------------------------------------------------
    def evaluate(self, theta: Tensor) -> tuple[Tensor, Tensor | None]:
        j, m = call_target(self.cost, theta, self.B, "cost")
        if self.predict is not None:
            m = torch.as_tensor(self.predict(theta), device=self.dev).to(_F64).reshape(self.B, -1)
        return j, m

    # -- state -----------------------------------------------------------------------
    def init_state(self) -> State:
        B, P, S, C, dev, cfg = self.B, self.P, self.S, self.C, self.dev, self.cfg
        th0 = self.theta0.expand(B, P).clone()
        j0, m0 = self.evaluate(th0)
        i64 = dict(dtype=torch.int64, device=dev)
        f64 = dict(dtype=_F64, device=dev)
        cap = max(1, min(cfg["nsimu2"], 256))
        L = 0 if m0 is None else m0.shape[1]
        st = State(
            theta=th0, J=j0.clone(), J0=j0.clone(),
            phase=torch.full((B,), _PHASE_STAGE1, **i64),
            chain=(torch.zeros(B, **i64) if self.sequential else torch.arange(B, device=dev) % C),
            n=torch.zeros(B, **i64), a=torch.full((B,), cfg["a0"], **f64),
            low=torch.zeros(B, **i64), low_total=torch.zeros(B, **i64),
            second=torch.zeros(B, dtype=torch.bool, device=dev),
            s=torch.full((B,), cfg["s0"], **f64),
            rate_restarts=torch.zeros(B, **i64), chain_restarts=torch.zeros(B, **i64),
            chain_restarts_total=torch.zeros(B, **i64),
            nacc1=torch.zeros(B, **i64), nacc2=torch.zeros(B, **i64),
            ar=torch.zeros(B, **f64), last_delta=torch.zeros(B, **f64),
            rec_n=torch.zeros(B, **i64), rec_mean=torch.zeros(B, P, **f64),
            rec_m2=torch.zeros(B, P, P, **f64), chol=torch.zeros(B, P, P, **f64),
            acc_theta=torch.full((S, C, cap, P), math.nan, dtype=self.store_dtype, device=dev),
            acc_J=torch.full((S, C, cap), math.nan, **f64),
            acc_m=torch.full((S, C, cap, L), math.nan, **f64),
            acc_count=torch.zeros(S, C, **i64), acc_ratio=torch.full((S, C), math.nan, **f64),
            finished_at=torch.full((B,), -1, **i64),
        )
        bad = ~torch.isfinite(j0)
        st.phase[bad] = _PHASE_ERROR
        return st

    # [B, P, P] tensors are updated in place and temporaries live in preallocated buffers:
    # fresh allocations of that size can cost more than the arithmetic (page faults).

    def _reset_record(self, mask: Tensor) -> None:
        st = self.st
        rows = mask.nonzero().squeeze(1)
        if rows.numel():
            st.rec_n[rows] = 0
            st.rec_mean[rows] = 0.0
            st.rec_m2[rows] = 0.0

    def _record(self, mask: Tensor) -> None:
        """Welford update of the state record with the current state for rows in mask."""
        st = self.st
        n_new = st.rec_n + mask.to(torch.int64)
        nn = n_new.clamp_min(1).to(_F64)
        delta = st.theta - st.rec_mean
        st.rec_mean = st.rec_mean + delta * (mask.to(_F64) / nn)[:, None]
        w = torch.where(mask, (nn - 1.0) / nn, torch.zeros_like(nn))
        # the outer product elementwise: unlike baddbmm (MKL), a row's value does not
        # depend on the batch
        outer = torch.mul((delta * w[:, None])[:, :, None], delta[:, None, :],
                          out=self._work("_w_outer", self.B))
        st.rec_m2.add_(outer)
        st.rec_n = n_new

    def _work(self, name: str, n: int) -> Tensor:
        """A [n, P, P] work buffer (allocated once per sampler)."""
        buf = self.__dict__.get(name)
        if buf is None:
            buf = torch.empty(self.B, self.P, self.P, dtype=_F64, device=self.dev)
            self.__dict__[name] = buf
        return buf[:n]

    def _cov_chol(self, rows: Tensor) -> tuple[Tensor, Tensor]:
        """Factor of (s/P) Cov(record) for the given row indices; returns (L, ok).

        ``L`` lives in a work buffer: copy it out (``_put_chol``) before the next call.
        """
        st = self.st
        n = st.rec_n[rows]
        cov = torch.index_select(st.rec_m2, 0, rows, out=self._work("_w_cov", rows.numel()))
        cov.mul_((st.s[rows] / self.P / (n - 1).clamp_min(1).to(_F64))[:, None, None])
        chol, ok = _cholcov(cov, out=self._work("_w_chol", rows.numel()))
        return chol, ok & (n >= 2)

    def _put_chol(self, rows: Tensor, chol: Tensor, ok: Tensor) -> None:
        if bool(ok.all()):
            self.st.chol.index_copy_(0, rows, chol)
        elif bool(ok.any()):
            self.st.chol[rows[ok]] = chol[ok]

    def restart_scratch(self, mask: Tensor, count: bool) -> None:
        """Restart the chain from theta0/J0 (stage 1, a = a0); s and is_second_time kept."""
        st, cfg = self.st, self.cfg
        if count:
            st.chain_restarts = st.chain_restarts + mask.to(torch.int64)
            st.chain_restarts_total = st.chain_restarts_total + mask.to(torch.int64)
            err = mask & (st.chain_restarts > cfg["max_chain_restarts"])
            st.phase = torch.where(err, _PHASE_ERROR, st.phase)
            mask = mask & ~err
        st.phase = torch.where(mask, _PHASE_STAGE1, st.phase)
        st.theta = torch.where(mask[:, None], self.theta0.expand_as(st.theta), st.theta)
        st.J = torch.where(mask, st.J0, st.J)
        st.a = torch.where(mask, torch.full_like(st.a, cfg["a0"]), st.a)
        for name in ("low", "n", "nacc1", "nacc2"):
            st[name] = torch.where(mask, 0, st[name])
        st.ar = torch.where(mask, 0.0, st.ar)
        st.last_delta = torch.where(mask, 0.0, st.last_delta)
        self._reset_record(mask)

    def start_stage2(self, mask: Tensor) -> None:
        st, cfg = self.st, self.cfg
        rows = mask.nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        chol, ok = self._cov_chol(rows)
        good = rows[ok]
        self._put_chol(rows, chol, ok)
        m_ok = torch.zeros_like(mask)
        m_ok[good] = True
        st.phase = torch.where(m_ok, _PHASE_STAGE2, st.phase)
        st.n = torch.where(m_ok, 0, st.n)
        if cfg["reset_cost_at_stage2"]:
            st.J = torch.where(m_ok, st.J0, st.J)
        st.nacc2 = torch.where(m_ok, 0, st.nacc2)
        st.ar = torch.where(m_ok, 0.0, st.ar)
        self._reset_record(m_ok)
        fail = mask & ~m_ok
        if bool(fail.any()):
            self.restart_scratch(fail, count=True)

    def finish_chain(self, mask: Tensor) -> None:
        st = self.st
        rows = mask.nonzero().squeeze(1)
        if rows.numel() == 0:
            return
        site, ch = self.site_of[rows], st.chain[rows]
        st.acc_count[site, ch] = st.nacc2[rows]
        st.acc_ratio[site, ch] = st.ar[rows]
        if self.sequential:
            st.chain = torch.where(mask, st.chain + 1, st.chain)
            more = mask & (st.chain < self.C)
            done = mask & ~more
            st.phase = torch.where(done, _PHASE_DONE, st.phase)
            self.restart_scratch(more, count=False)
            # a new chain starts fresh: its own restart budget
            st.chain_restarts = torch.where(more, 0, st.chain_restarts)
        else:
            st.phase = torch.where(mask, _PHASE_DONE, st.phase)

    def ensure_capacity(self, need: int) -> None:
        st = self.st
        cap = st.acc_theta.shape[2]
        if need <= cap:
            return
        new = min(max(need, 2 * cap), self.cfg["nsimu2"])
        pad = new - cap
        S, C = self.S, self.C
        st.acc_theta = torch.cat([st.acc_theta, torch.full(
            (S, C, pad, self.P), math.nan, dtype=st.acc_theta.dtype, device=self.dev)], 2)
        st.acc_J = torch.cat([st.acc_J, torch.full((S, C, pad), math.nan, dtype=_F64,
                                                   device=self.dev)], 2)
        st.acc_m = torch.cat([st.acc_m, torch.full((S, C, pad, st.acc_m.shape[3]), math.nan,
                                                   dtype=_F64, device=self.dev)], 2)

    # -- one iteration ---------------------------------------------------------------
    def step(self, iteration: int) -> None:
        st, cfg, dev, P, B = self.st, self.cfg, self.dev, self.P, self.B
        in1 = st.phase == _PHASE_STAGE1
        in2 = st.phase == _PHASE_STAGE2
        prop = st.theta.clone()
        ok = torch.ones(B, dtype=torch.bool, device=dev)

        # the draws of candidate i of this iteration: counter iteration * (max_redraws + 1) + i,
        # one number per (iteration, candidate) of the chain's stream
        base = iteration * (cfg["max_redraws"] + 1)

        def candidates(keys: Tensor, tries: int, r: int, draw) -> Tensor:
            """Draws ``[m, r, P]`` of candidates ``tries .. tries+r-1`` of the rows' keys."""
            m = keys.numel()
            ctr = torch.arange(base + tries, base + tries + r, device=dev).repeat(m)
            return draw(keys.repeat_interleave(r), ctr, P).view(m, r, P)

        i1 = in1.nonzero().squeeze(1)
        if i1.numel():
            a1 = st.a[i1]
            k1 = self.chain_keys("stage1", i1)

            def step1(rows: Tensor | None, tries: int, r: int) -> Tensor:
                a = a1 if rows is None else a1[rows]
                u = candidates(k1 if rows is None else k1[rows], tries, r, streams.uniform)
                return (u - 0.5) / a[:, None, None]

            prop[i1], ok[i1] = _draw_inside(st.theta[i1], step1, cfg["max_redraws"])
        i2 = in2.nonzero().squeeze(1)
        if i2.numel():
            l2 = torch.index_select(st.chol, 0, i2, out=self._work("_w_l2", i2.numel()))
            k2 = self.chain_keys("stage2", i2)

            def step2(rows: Tensor | None, tries: int, r: int) -> Tensor:
                z = candidates(k2 if rows is None else k2[rows], tries, r, streams.normal)
                return matmul_bt(z, l2 if rows is None else l2[rows])  # [m, r, P]: L @ z

            prop[i2], ok[i2] = _draw_inside(st.theta[i2], step2, cfg["max_redraws"])
        events: dict[str, Tensor] = {}
        # stage-2 redraw cap without any acceptance: restart the chain (replaces the 60-s abort)
        abort = in2 & ~ok & (st.nacc2 == 0)
        events["redraw_abort"] = abort
        if bool(abort.any()):
            self.restart_scratch(abort, count=True)
        ran = (in1 | in2) & ~abort
        use = ran & ok
        theta_eval = torch.where(use[:, None], prop, st.theta)
        j_new, m_new = self.evaluate(theta_eval)
        singular = ~torch.isfinite(j_new)
        j_old = st.J.clone()
        theta_old = st.theta
        j_pen = torch.where(singular, j_old + cfg["penalty"], j_new)
        delta = j_pen - j_old
        if cfg["stale_penalty_delta"]:
            delta = torch.where(singular, st.last_delta, delta)
            st.last_delta = torch.where(ran & ~singular, delta, st.last_delta)
        n_cur = st.n + 1
        p = annealed_acceptance_probability(delta, n_cur, annealing=cfg["annealing"])
        u = streams.uniform(self.chain_keys("accept"), iteration, 1)[:, 0]
        acc = use & (p > u)
        st.theta = torch.where(acc[:, None], prop, st.theta)
        st.J = torch.where(acc, j_pen, st.J)
        st.n = torch.where(ran, n_cur, st.n)
        st.nacc1 = st.nacc1 + (acc & in1).to(torch.int64)
        a2 = acc & in2
        r2 = a2.nonzero().squeeze(1)
        if r2.numel():
            pos = st.nacc2[r2]
            self.ensure_capacity(int(pos.max()) + 1)
            site, ch = self.site_of[r2], st.chain[r2]
            st.acc_theta[site, ch, pos] = prop[r2].to(st.acc_theta.dtype)
            st.acc_J[site, ch, pos] = j_pen[r2]
            if m_new is not None:
                if st.acc_m.shape[3] != m_new.shape[1]:
                    raise ValueError("the prediction length changed between calls")
                st.acc_m[site, ch, pos] = m_new[r2]
        st.nacc2 = st.nacc2 + a2.to(torch.int64)
        st.ar = torch.where(a2, st.nacc2.to(_F64) / n_cur.to(_F64), st.ar)
        self._record(ran)
        info = None
        if self.callback is not None:
            info = dict(
                iteration=iteration, phase=torch.where(in1, 1, torch.where(in2, 2, st.phase)),
                ran=ran, n=n_cur, chain=st.chain.clone(), theta_old=theta_old,
                proposal=prop, valid=ok,
                J_old=j_old, J_new=j_pen, singular=singular & ran, delta=delta,
                probability=p, accepted=acc, theta=st.theta.clone(), J=st.J.clone(),
                a=st.a.clone(), s=st.s.clone(), acceptance_ratio=st.ar.clone(),
            )
        # ---- transitions, stage 1
        low = ran & in1 & (n_cur == cfg["restart_check_at"]) & ~st.second & (
            st.nacc1 < cfg["min_accept"])
        events["low_acceptance"] = low
        events["low_acceptance_reset"] = torch.zeros_like(low)
        if bool(low.any()):
            st.low = st.low + low.to(torch.int64)
            st.low_total = st.low_total + low.to(torch.int64)
            grow = low & (st.low <= cfg["max_low_accept_restarts"])
            st.a = torch.where(grow, st.a * cfg["a_factor"], st.a)
            st.n = torch.where(grow, 0, st.n)
            st.nacc1 = torch.where(grow, 0, st.nacc1)
            self._reset_record(grow)
            reset = low & ~grow
            events["low_acceptance_reset"] = reset
            st.second = st.second | reset
            self.restart_scratch(reset, count=False)
        end1 = ran & in1 & (st.phase == _PHASE_STAGE1) & (st.n == cfg["nsimu1"])
        events["stage2_start"] = end1
        self.start_stage2(end1)
        # ---- transitions, stage 2
        cur2 = ran & in2 & (st.phase == _PHASE_STAGE2)
        check = cur2 & (n_cur == cfg["rate_check_at"])
        too_low = check & (st.ar < cfg["rate_bounds"][0])
        too_high = check & (st.ar > cfg["rate_bounds"][1])
        out = too_low | too_high
        events["rate_low"], events["rate_high"] = too_low, too_high
        events["error"] = torch.zeros_like(out)
        if bool(out.any()):
            st.rate_restarts = st.rate_restarts + out.to(torch.int64)
            err = out & (st.rate_restarts > cfg["max_rate_restarts"])
            events["error"] = err
            st.phase = torch.where(err, _PHASE_ERROR, st.phase)
            f_lo, f_hi = cfg["rate_factors"]
            st.s = torch.where(too_low & ~err, st.s * f_lo, st.s)
            st.s = torch.where(too_high & ~err, st.s * f_hi, st.s)
            self.restart_scratch(out & ~err, count=False)
        cur2 = cur2 & (st.phase == _PHASE_STAGE2)
        upd = cur2 & (n_cur > cfg["adapt_start"]) & (n_cur < cfg["nsimu2"])
        rows = upd.nonzero().squeeze(1)
        chol_fail = torch.zeros_like(upd)
        if rows.numel():
            chol, okc = self._cov_chol(rows)
            self._put_chol(rows, chol, okc)
            chol_fail[rows[~okc]] = True
            if bool(chol_fail.any()):
                self.restart_scratch(chol_fail, count=True)
        events["chol_fail"] = chol_fail
        fin = cur2 & ~chol_fail & (n_cur == cfg["nsimu2"])
        events["chain_done"] = fin
        self.finish_chain(fin)
        newly = (st.phase >= _PHASE_DONE) & (st.finished_at < 0)
        st.finished_at = torch.where(newly, iteration, st.finished_at)
        if info is not None:
            info["events"] = events
            info["phase_after"] = st.phase.clone()
            self.callback(info)


def max_post_draws(nsimu2: int | None = None) -> int:
    """The longest post-burn-in record a chain of :func:`reference_sampler` can have.

    A chain keeps at most ``nsimu2`` accepted stage-2 samples and drops the first
    ``round(N / 2)`` of its ``N`` as burn-in, so at most ``nsimu2 // 2`` remain: the width
    to which stores of sharded runs pad the ``draw`` dimension (the in-memory result is
    padded to the longest chain of the run only).

    Parameters
    ----------
    nsimu2 : int, optional
        Stage-2 iterations (default: :func:`reference_sampler`'s, 50,000).

    Returns
    -------
    int
        ``nsimu2 // 2``.
    """
    if nsimu2 is None:
        import inspect

        nsimu2 = inspect.signature(reference_sampler).parameters["nsimu2"].default
    if isinstance(nsimu2, bool) or int(nsimu2) != nsimu2 or nsimu2 < 1:
        raise ValueError(f"nsimu2 must be a positive integer, got {nsimu2!r}")
    return int(nsimu2) // 2


def _matlab_round_half(n: Tensor) -> Tensor:
    """MATLAB ``round(n / 2)`` for non-negative integers (halves away from zero)."""
    return (n + 1) // 2


def _gather_window(buf: Tensor, start: Tensor, count: Tensor) -> Tensor:
    """buf [S, C, cap, ...]: rows start..start+count-1 left-aligned, NaN-padded."""
    S, C, cap = buf.shape[:3]
    width = int(count.max()) if count.numel() else 0
    width = max(width, 0)
    idx = start[..., None] + torch.arange(width, device=buf.device)
    valid = torch.arange(width, device=buf.device) < count[..., None]
    idx = idx.clamp(0, max(cap - 1, 0))
    tail = buf.shape[3:]
    gi = idx.view(S, C, width, *([1] * len(tail))).expand(S, C, width, *tail)
    out = torch.gather(buf, 2, gi).to(_F64) if width else buf[:, :, :0].to(_F64)
    vmask = valid.view(S, C, width, *([1] * len(tail)))
    return torch.where(vmask, out, torch.full_like(out, math.nan))


# Sums in index order (ordered_sum): a site's summaries do not depend on the other sites,
# nor on the NaN padding to the batch's longest chain (torch.nanmean's order does).


def _nanmean(x: Tensor, dim: int) -> Tensor:
    n = (~torch.isnan(x)).sum(dim)
    return ordered_sum(torch.nan_to_num(x, nan=0.0), dim) / n


def _nanstd(x: Tensor, dim: int) -> Tensor:
    n = (~torch.isnan(x)).sum(dim)
    mu = _nanmean(x, dim).unsqueeze(dim)
    ss = ordered_sum(torch.nan_to_num((x - mu) ** 2, nan=0.0), dim)
    return torch.where(n > 1, (ss / (n - 1).clamp_min(1)).sqrt(), torch.full_like(ss, math.nan))


def _gev_mode(x: np.ndarray) -> float:
    """Mode of a GEV fitted by maximum likelihood (MATLAB gevfit parameterisation)."""
    from scipy import stats

    x = x[np.isfinite(x)]
    if x.size < 3 or np.ptp(x) == 0:
        return float("nan")
    # fit on standardised data (scipy's optimiser is unreliable for tiny scales)
    m, sdv = x.mean(), x.std()
    with np.errstate(all="ignore"), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        c, loc, scl = stats.genextreme.fit((x - m) / sdv)
        loc, scl = m + sdv * loc, sdv * scl
        k = -c  # MATLAB's shape parameter k = -c (scipy)
        if k == 0:
            return float(loc)
        # NaN for k <= -1 (no interior mode; MATLAB gives a complex number there)
        return float(loc + scl * ((1 + k) ** (-k) - 1) / k) if 1 + k > 0 else float("nan")


def _rhat_ess_ragged(post: Tensor, npost: Tensor) -> tuple[Tensor, Tensor]:
    """Rank R-hat and bulk ESS per site using the last min_c(npost) samples of each chain."""
    S, C, _, P = post.shape
    rh = torch.full((S, P), math.nan, dtype=_F64)
    es = torch.full((S, P), math.nan, dtype=_F64)
    nmin = npost.min(1).values.cpu()
    post_c, npost_c = post.cpu(), npost.cpu()
    for n in torch.unique(nmin).tolist():
        if n < 4:
            continue
        sites = (nmin == n).nonzero().squeeze(1)
        start = npost_c[sites] - n
        win = _gather_window(post_c[sites], start, torch.full_like(start, n))
        rh[sites], es[sites] = rhat_ess(win, chain_axis=1, draw_axis=2)
    return rh.to(post.device), es.to(post.device)


def reference_sampler(
    cost: Target,
    *,
    n_sites: int,
    n_params: int,
    n_chains: int = 3,
    nsimu1: int = 20000,
    nsimu2: int = 50000,
    seed: int = 0,
    theta0: float | Sequence[float] = 0.5,
    s0: float = 2.4,
    a0: float = 5.0,
    a_factor: float = 1.1,
    restart_check_at: int | None = None,
    min_accept: int = 50,
    max_low_accept_restarts: int = 2,
    adapt_start: int = 4000,
    rate_check_at: int | None = None,
    rate_bounds: tuple[float, float] = (0.1, 0.5),
    rate_factors: tuple[float, float] = (0.7, 2.0),
    max_rate_restarts: int = 5,
    penalty: float = 100.0,
    annealing: bool = True,
    reset_cost_at_stage2: bool = True,
    stale_penalty_delta: bool = False,
    max_redraws: int = 100_000,
    max_chain_restarts: int = 20,
    chains: str = "sequential",
    predict: Target | None = None,
    obs: Any = None,
    n_layers: Any = None,
    gev_mode: bool = False,
    store_dtype: torch.dtype = torch.float64,
    device: str | torch.device | None = None,
    progress: bool | None = None,
    checkpoint: str | os.PathLike | None = None,
    checkpoint_every: int | None = None,
    resume: bool = False,
    callback: Callable[[dict], None] | None = None,
    param_names: Sequence[str] | None = None,
    site_ids: Sequence[Any] | None = None,
) -> SamplerResult:
    """The PRODA adaptive-Metropolis-style sampler with annealing, as coded (spec §6.3).

    Every site runs its own state machine; one ``cost`` call per iteration evaluates the
    current proposal of every site (and, with ``chains="parallel"``, every chain).

    **Per chain** (``n_chains`` chains, run one after the other per site by default):

    - *Stage 1* (``nsimu1`` iterations): from ``theta0`` with ``J_old = J0 = cost(theta0)``
      and step divisor ``a = a0``, propose ``theta + (U^P - 0.5)/a``, redrawn until strictly
      inside (0, 1)^P; a non-finite cost ("singular") counts as ``J_old + penalty``;
      accept if ``min(1, exp(-(J' - J_old) ln(n + 2))) > U`` (annealing). The state after
      every iteration enters the state record. At ``n = restart_check_at``, if fewer than
      ``min_accept`` proposals were accepted and ``is_second_time`` is unset, stage 1
      restarts with ``a <- a_factor * a`` keeping the current state (counter and records
      cleared); the ``max_low_accept_restarts + 1``-th time the chain restarts from
      ``theta0``/``J0`` with ``a = a0`` and sets ``is_second_time``, which is never cleared
      (not even for later chains of the site), so no further checks happen.
    - *Stage 2* (``nsimu2`` iterations): ``C = (s/P) Cov(stage-1 record)`` (``s = s0``
      initially, not squared), start at the last stage-1 state but with ``J_old = J0``
      (bug §10.2 #19, ``reset_cost_at_stage2=True``); propose ``N(theta, C)`` redrawn until
      inside; same penalty and annealed rule; accepted samples (and predictions) are
      stored and the acceptance ratio ``a_r = accepted / n`` is updated only at
      acceptances; for ``n > adapt_start`` the covariance is recomputed after every
      iteration from the stage-2 record (running Welford sums: the same value as the
      reference's full recomputation, in O(P^2) per iteration). At
      ``n = rate_check_at``: ``a_r < rate_bounds[0]`` -> ``s <- rate_factors[0] s``,
      ``a_r > rate_bounds[1]`` -> ``s <- rate_factors[1] s``, and the chain restarts from
      scratch (stage 1 from ``theta0``); ``s`` is never reset between chains; the
      ``max_rate_restarts + 1``-th such restart marks the site as failed (MCMC_Error).
      Proposals use a factor of ``C`` computed like MATLAB's ``cholcov`` (inside
      ``mvnrnd``): Cholesky, or an eigen-decomposition for a positive *semi*-definite
      ``C`` (a zero covariance, from a chain that never moved, proposes the current
      state); only a ``C`` that is not positive semi-definite or not finite (where
      ``mvnrnd`` errors) restarts the chain from scratch.

    **Summaries** (spec §6.3 items 4-6): burn-in is the first ``round(N/2)`` accepted
    stage-2 samples of each chain (parameters use ``round(N/2)+1..N``; the prediction
    trace ``round(N/2)..N``, the reference's off-by-one); per-chain ``[R2, RMSE]`` with
    PRODA's R2 (denominator from the modelled mean) and RMSE over ``n_layers`` when
    predictions and ``obs`` are given; the optimal chain has the minimum RMSE (ties:
    maximum R2, the fix of bug §10.2 #24; without predictions: the minimum mean
    post-burn-in cost); ``mean``/``sd`` (std with N-1) of its post-burn-in samples;
    PRODA's Gelman-Rubin (``gelman_rubin``, with the last chain's N) and, in addition, the
    rank-normalised split ``rhat``/bulk ``ess`` on a common length (the last
    ``min_c N_c/2`` post-burn-in samples of every chain).

    Parameters
    ----------
    cost : callable
        ``cost(theta[B, P]) -> Tensor[B]`` (lower is better; NaN/inf = singular), or
        returning ``(cost[B], prediction[B, L])`` where ``prediction`` is the modelled
        profile at the observed depths. ``B = n_sites`` (``chains="sequential"``) or
        ``n_sites * n_chains`` site-major (``chains="parallel"``). Rows of finished or
        failed sites are evaluated at their last state and ignored.
    n_sites, n_params : int
        Sites and parameters P.
    n_chains : int
        Chains per site (3 in PRODA).
    nsimu1, nsimu2 : int
        Iterations of stage 1 and stage 2 (20000, 50000).
    seed : int
        Seed of the random streams (with ``site_ids``).
    theta0 : float or sequence of float
        Start point (0.5 for every parameter).
    s0 : float
        Initial covariance scale factor ``sd_controling_factor`` (2.4).
    a0, a_factor : float
        Stage-1 step divisor (5) and its growth at low acceptance (1.1).
    restart_check_at : int, optional
        Stage-1 iteration of the low-acceptance check (default ``nsimu1 - 1``: 19,999).
    min_accept : int
        Minimum stage-1 acceptances at the check (50).
    max_low_accept_restarts : int
        Low-acceptance restarts with ``a <- a_factor a`` before the chain is reset and
        ``is_second_time`` set (2, i.e. the third time resets).
    adapt_start : int
        Stage-2 iteration after which the covariance is updated every iteration (4000).
    rate_check_at : int, optional
        Stage-2 iteration of the acceptance-rate control (default ``nsimu2 - 1``: 49,999).
    rate_bounds, rate_factors : (float, float)
        Acceptance-rate band (0.1, 0.5) and the factors applied to ``s`` below/above it
        (0.7, 2).
    max_rate_restarts : int
        Rate-control restarts allowed per site before it is marked failed (5).
    penalty : float
        Cost added to ``J_old`` for a singular solve (100).
    annealing : bool
        Annealed acceptance ``exp(-dJ ln(n+2))`` (reference); False uses ``exp(-dJ)``.
    reset_cost_at_stage2 : bool
        Stage 2 starts with ``J_old = J0`` (reference, bug #19); False keeps the cost of
        the last stage-1 state.
    stale_penalty_delta : bool
        Reproduce the cen-v2 bug #20 (on a singular solve the acceptance uses the previous
        iteration's ``dJ``); default False = the v22 behaviour (``dJ = penalty``).
    max_redraws : int
        Cap on redraws of one proposal (replaces the reference's 60-s wall-clock abort,
        bug #27). In stage 2 before any acceptance, hitting it restarts the chain from
        scratch (as the reference's abort); otherwise the proposal is rejected.
    max_chain_restarts : int
        Safeguard (not in the reference): restarts of one chain caused by a
        non-positive-definite covariance or the redraw cap beyond which the site is marked
        failed (the reference would loop forever).
    chains : {"sequential", "parallel"}
        ``"sequential"`` (reference semantics): the chains of a site run one after the
        other, ``s`` and ``is_second_time`` carry over; ``B = n_sites``. ``"parallel"``:
        all chains run at once as batch members (``B = n_sites * n_chains``, 3x fewer
        iterations); ``s``, ``is_second_time`` and the restart counters are then per chain
        (the carry-over between chains is lost).
    predict : callable, optional
        ``predict(theta[B, P]) -> Tensor[B, L]``, called on the same batch right after
        ``cost`` (alternatively return ``(cost, prediction)`` from ``cost``).
    obs : array_like, optional
        Observations ``[n_sites, L]`` at the prediction points (NaN = padding) for the
        per-chain ``[R2, RMSE]``.
    n_layers : array_like, optional
        RMSE divisor per site (the layer count *before* cleaning in PRODA; default: the
        number of non-NaN ``obs``).
    gev_mode : bool
        Also compute ``para_es`` (mode of a GEV fitted by maximum likelihood to each
        parameter of the optimal chain; slow: one scipy fit per site and parameter).
    store_dtype : torch.dtype
        Dtype of the stored accepted samples (memory ``n_sites * n_chains * N_acc * P``).
    device : str or torch.device, optional
        Computation device.
    progress : bool or None, default None
        Show a tqdm progress bar (total = the minimum number of iterations).
        None: the option ``progress`` (:func:`xproda.set_options`).
    checkpoint, checkpoint_every, resume
        As in :func:`adaptive_metropolis` (default every ``(nsimu1 + nsimu2) // 10``
        iterations).
    callback : callable, optional
        Called after every iteration with a dict of per-row tensors (``phase``, ``n``,
        ``chain``, ``theta_old``, ``proposal``, ``J_old``, ``J_new`` (penalised), ``delta``,
        ``probability``, ``accepted``, ``theta`` (after the step), ``a``, ``s``, ...) and
        ``events`` (masks ``low_acceptance``, ``low_acceptance_reset``, ``stage2_start``,
        ``rate_low``, ``rate_high``, ``error``, ``chol_fail``, ``redraw_abort``,
        ``chain_done``), for tracing and tests.
    param_names : sequence of str, optional
        Parameter names for :meth:`SamplerResult.to_dataset`.
    site_ids : sequence, optional
        Unique id of each site (``n_sites``; strings or integers, compared as text): the
        keys of the sites' random streams. Default: the positions ``0 .. n_sites-1`` (a
        site's result then depends on its position, not on the other sites).

    Returns
    -------
    SamplerResult
        With extras ``gelman_rubin`` (site, parameter), ``optimal_chain``, ``error``,
        ``burn_in`` (site, chain), ``acceptance_ratio`` (PRODA's ``a_r``, site, chain),
        ``scale_factor`` (final ``s``), ``is_second_time``, the counters
        ``n_rate_restarts``, ``n_low_accept_restarts``, ``n_chain_restarts`` (covariance
        or redraw-cap restarts), ``finished_at`` (iteration at which the site finished),
        and with predictions ``stat`` (site, chain, statistic = [r2, rmse]),
        ``soc_mod_opt``/``soc_std_opt`` (site, obs_layer); ``para_es`` with
        ``gev_mode``. Per-site extras have dims (site, chain) with ``chains="parallel"``.
        Failed sites have NaN summaries and ``optimal_chain = -1``.

    Notes
    -----
    Interpretations where the spec is silent: the low-acceptance counter restarts with
    every chain (re)start; the checks happen after iteration ``restart_check_at`` (and
    ``rate_check_at``); the rate-control counter counts per site; the remembered ``dJ``
    of ``stale_penalty_delta`` is cleared when a chain (re)starts; a site whose ``J0`` is
    not finite is marked failed.

    **Random numbers** come from per-site streams (:mod:`xproda.sites.assimilation.streams`):
    each chain of a site has its own keys (from ``seed`` and the site's id) for the stage-1
    steps, the stage-2 steps and the acceptance uniforms; a proposal's draws are indexed by
    the iteration and the redraw number (counter ``iteration (max_redraws + 1) + redraw``),
    the uniform by the iteration. A site's result is
    therefore the same alone or in any batch, position or shard (for a ``cost`` whose value
    for a row depends on that row only); only the NaN padding of ``samples`` (its ``draw``
    length, the longest chain of the batch; at most :func:`max_post_draws`) depends on the
    batch.

    All sites advance in lockstep, one batched ``cost`` call per iteration, so a run
    lasts as long as its slowest site (a site that restarts a chain keeps the batch
    going; finished sites are evaluated at their last state and ignored). Iterations
    needed: at least ``n_chains * (nsimu1 + nsimu2)`` with ``chains="sequential"``,
    ``nsimu1 + nsimu2`` with ``"parallel"``. The sampler's own cost per iteration is
    dominated by the batched Cholesky factorisation of every stage-2 covariance (the
    reference recomputes it each iteration), ``O(B P^3)``.
    """
    dev = resolve_device(device)
    S, C, P = int(n_sites), int(n_chains), int(n_params)
    if chains not in ("sequential", "parallel"):
        raise ValueError(f"chains must be 'sequential' or 'parallel'; got {chains!r}")
    if C < 2:
        raise ValueError("the reference sampler needs at least 2 chains (Gelman-Rubin)")
    cfg = dict(
        n_sites=S, n_params=P, n_chains=C, nsimu1=int(nsimu1), nsimu2=int(nsimu2),
        seed=int(seed),
        theta0=(float(theta0) if np.ndim(theta0) == 0 else [float(v) for v in theta0]),
        s0=float(s0), a0=float(a0), a_factor=float(a_factor),
        restart_check_at=int(nsimu1 - 1 if restart_check_at is None else restart_check_at),
        min_accept=int(min_accept), max_low_accept_restarts=int(max_low_accept_restarts),
        adapt_start=int(adapt_start),
        rate_check_at=int(nsimu2 - 1 if rate_check_at is None else rate_check_at),
        rate_bounds=[float(v) for v in rate_bounds], rate_factors=[float(v) for v in rate_factors],
        max_rate_restarts=int(max_rate_restarts), penalty=float(penalty),
        annealing=bool(annealing), reset_cost_at_stage2=bool(reset_cost_at_stage2),
        stale_penalty_delta=bool(stale_penalty_delta), max_redraws=int(max_redraws),
        max_chain_restarts=int(max_chain_restarts), chains=chains,
        store_dtype=str(store_dtype), site_ids_sha1=hash_ids(site_ids),
    )
    if isinstance(cfg["theta0"], list) and len(cfg["theta0"]) != P:
        raise ValueError(f"theta0 must be a scalar or have {P} values")
    site_keys = streams.site_keys(site_ids, int(seed), n=S, device=dev)
    if site_keys.shape[0] != S:
        raise ValueError(f"site_ids has {site_keys.shape[0]} ids for n_sites={S}")
    ref = _Reference(cost, predict, cfg, S, C, P, dev, site_keys, callback)
    every = int(checkpoint_every) if checkpoint_every else max(1, (nsimu1 + nsimu2) // 10)
    if resume and checkpoint_exists(checkpoint):
        ref.st, meta = load_state(checkpoint, cfg, dev)
        it = int(meta["iteration"])
    else:
        ref.st = ref.init_state()
        it = 0
    total = (C if chains == "sequential" else 1) * (nsimu1 + nsimu2)
    pbar = progress_bar(progress, total=total, initial=it, desc="PRODA sampler", leave=False)
    active = lambda: bool(((ref.st.phase == 1) | (ref.st.phase == 2)).any())  # noqa: E731
    try:
        while active():
            it += 1
            ref.step(it)
            if pbar.total is not None and it > pbar.total:
                pbar.total = it
            pbar.update(1)
            if checkpoint is not None and it % every == 0:
                save_state(checkpoint, ref.st, cfg, {"iteration": it})
        if checkpoint is not None:
            save_state(checkpoint, ref.st, cfg, {"iteration": it})
    finally:
        pbar.close()
    return _reference_summary(ref, obs, n_layers, gev_mode, cfg, it, param_names, checkpoint)


def _reference_summary(ref: _Reference, obs, n_layers, gev_mode, cfg, it, param_names, checkpoint):
    st, S, C, P, dev = ref.st, ref.S, ref.C, ref.P, ref.dev
    err_rows = st.phase == _PHASE_ERROR
    err = err_rows.view(S, ref.k).any(1)
    N = st.acc_count.clone()
    N[err] = 0
    burn = _matlab_round_half(N)
    npost = N - burn
    post = _gather_window(st.acc_theta, burn, npost)  # [S, C, W, P]
    cmean = _nanmean(post, 2)
    csd = _nanstd(post, 2)
    have_pred = st.acc_m.shape[3] > 0
    extras: dict[str, tuple[tuple[str, ...], Tensor]] = {}
    opt = None
    if have_pred:
        tstart = (burn - 1).clamp_min(0)
        tcount = torch.where(N > 0, N - tstart, torch.zeros_like(N))
        trace = _gather_window(st.acc_m, tstart, tcount)  # [S, C, W, L]
        mbar = _nanmean(trace, 2)
        msd = _nanstd(trace, 2)
        if obs is not None:
            o = torch.as_tensor(obs, dtype=_F64, device=dev).reshape(S, -1)
            if o.shape[1] != mbar.shape[2]:
                raise ValueError(f"obs has {o.shape[1]} layers, predictions {mbar.shape[2]}")
            valid = torch.isfinite(o)[:, None, :].expand_as(mbar)
            nl = (valid[:, 0].sum(-1).to(_F64) if n_layers is None
                  else torch.as_tensor(n_layers, dtype=_F64, device=dev).reshape(S))
            zero = torch.zeros_like(mbar)
            ss_res = ordered_sum(torch.where(valid, (mbar - o[:, None]) ** 2, zero), -1)
            mmean = ordered_sum(torch.where(valid, mbar, zero), -1) / valid.sum(-1).clamp_min(1)
            ss_mod = ordered_sum(torch.where(valid, (mbar - mmean[..., None]) ** 2, zero), -1)
            r2 = 1 - ss_res / ss_mod
            rmse = torch.sqrt(ss_res / nl[:, None])
            stat = torch.stack([r2, rmse], -1)
            stat[err] = math.nan
            extras["stat"] = (("site", "chain", "statistic"), stat)
            rm = torch.nan_to_num(rmse, nan=math.inf)
            tied = rm == rm.min(1, keepdim=True).values
            ninf = torch.full_like(r2, -math.inf)
            r2k = torch.where(tied, torch.nan_to_num(r2, nan=-math.inf), ninf)
            opt = torch.argmax(r2k, 1)
            opt = torch.where(torch.isfinite(rm).any(1), opt, torch.full_like(opt, -1))
    jpost = _gather_window(st.acc_J[..., None], burn, npost)[..., 0]
    opt_j = torch.argmin(torch.nan_to_num(_nanmean(jpost, 2), nan=math.inf), 1)
    opt = opt_j if opt is None else torch.where(opt < 0, opt_j, opt)
    ar = torch.arange(S, device=dev)
    mean = cmean[ar, opt]
    sd = csd[ar, opt]
    if have_pred:
        extras["soc_mod_opt"] = (("site", "obs_layer"), mbar[ar, opt])
        extras["soc_std_opt"] = (("site", "obs_layer"), msd[ar, opt])
    gr = reference_gelman_rubin(post, npost.to(_F64))
    rh, es = _rhat_ess_ragged(post, npost)
    # best accepted sample of the final chains
    cap = st.acc_J.shape[2]
    inwin = torch.arange(cap, device=dev) < N[..., None]
    jall = torch.where(inwin, st.acc_J, torch.full_like(st.acc_J, math.inf)).reshape(S, -1)
    flat = torch.argmin(jall, 1)
    best_value = jall[ar, flat]
    best = st.acc_theta.reshape(S, C * cap, P)[ar, flat].to(_F64)
    nobest = ~torch.isfinite(best_value)
    best[nobest] = math.nan
    best_value[nobest] = math.nan
    for t in (mean, sd, gr, rh, es):
        t[err] = math.nan
    opt = torch.where(err, torch.full_like(opt, -1), opt)
    if gev_mode:
        post_opt = post[ar, opt.clamp_min(0)].cpu().numpy()
        pe = np.full((S, P), np.nan)
        for s_ in range(S):
            if bool(err[s_]):
                continue
            for p_ in range(P):
                pe[s_, p_] = _gev_mode(post_opt[s_, :, p_])
        extras["para_es"] = (("site", "parameter"), torch.from_numpy(pe).to(dev))
    per = ("site",) if ref.sequential else ("site", "chain")
    shp = (S,) if ref.sequential else (S, C)

    def per_row(x: Tensor) -> Tensor:
        return x.reshape(shp)

    extras.update({
        "gelman_rubin": (("site", "parameter"), gr),
        "optimal_chain": (("site",), opt),
        "error": (("site",), err),
        "burn_in": (("site", "chain"), burn),
        "acceptance_ratio": (("site", "chain"), st.acc_ratio),
        "scale_factor": (per, per_row(st.s)),
        "n_rate_restarts": (per, per_row(st.rate_restarts)),
        "n_low_accept_restarts": (per, per_row(st.low_total)),
        "n_chain_restarts": (per, per_row(st.chain_restarts_total)),
        "is_second_time": (per, per_row(st.second)),
        "finished_at": (per, per_row(st.finished_at)),
    })
    acc = N.to(_F64) / cfg["nsimu2"]
    acc[err] = math.nan
    settings = dict(cfg, iterations=it, checkpoint=str(checkpoint) if checkpoint else None)
    return SamplerResult(
        method="reference",
        samples=post,
        mean=mean,
        sd=sd,
        best=best,
        best_value=best_value,
        rhat=rh,
        ess=es,
        acceptance=acc,
        n_accepted=N,
        settings=settings,
        param_names=list(param_names) if param_names is not None else None,
        extras=extras,
    )
