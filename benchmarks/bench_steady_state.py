#!/usr/bin/env python
"""Steady-state throughput and memory benchmark (CLM5 structured vs dense; microbial).

What it measures
----------------
For each batch size ``n`` (default 1,000 / 10,000 / 100,000 random soil columns):

* ``clm5`` / ``structured``: ``xproda.get_model("clm5").steady_state(theta, forcing)`` end to
  end, numpy inputs -> numpy outputs (validation, assembly, structured block-tridiagonal
  solve, post-processing).  Without autograd on the CPU the solve runs in the fused numba
  kernel (:mod:`xproda.models.fused`).
* ``clm5`` / ``torch``: the same call with ``fused_kernels=False``: the torch solver
  (the differentiable path) without autograd.
* ``clm5`` / ``grad``: forward + backward: torch tensors in, ``theta.requires_grad``,
  ``soc_stock.nansum().backward()`` (the cost of one gradient step of training/MAP).
* ``clm5`` / ``dense``: the *same* linear systems through the dense baseline,
  ``L, I = m.dense_system(...)`` + ``torch.linalg.solve(L, I)`` (batched pivoted LU on
  ``[chunk, 140, 140]``), numpy inputs -> numpy ``X`` ``[n, 140]`` plus ``soc_stock``.  It
  runs in chunks (``--chunk``, default 2,000 columns) because ``L`` alone would need
  ``n * 140 * 140 * 8`` bytes (~16 GB at n = 100,000).  The time covers all ``n`` columns
  unless the estimate exceeds ``--max-dense-s`` (default 180 s); then a documented subset of
  chunks is timed and the row is labelled ``extrapolated``.
* ``microbial`` / ``structured``: ``xproda.get_model("microbial").steady_state`` end to end
  (it has no dense baseline: its soil part is closed form per layer).

Every (model, method, n) runs in a **fresh subprocess**: it generates its inputs, resets
the kernel's peak-RSS mark (``/proc/self/clear_refs``, Linux), records the RSS, then warms up
once (on the first ``min(n, chunk)`` columns) and times ``--repeats`` calls (the best is
reported, since the machine may be shared; fewer repeats so that a row takes <= ~60 s, at
least one).  The 1-minute load average and the CPU/wall ratio of each row are printed to
expose contention.  ``peak MB`` is ``getrusage(RUSAGE_SELF).ru_maxrss`` at the end minus the
RSS after imports and input generation, i.e. the extra resident memory the computation needed at its peak (inputs
excluded).  Where the peak mark cannot be reset the baseline is the peak so far, which is
stated in the footnotes.

Targets (from the issue): >= 50,000 CLM5 columns/s end to end, >= 20x the dense baseline,
memory linear in n.

How to run
----------
::

    .venv/bin/python benchmarks/bench_steady_state.py             # 1k, 10k, 100k (~3 min)
    .venv/bin/python benchmarks/bench_steady_state.py --quick     # 1k, 10k
    .venv/bin/python benchmarks/bench_steady_state.py --sizes 1000,50000 --threads 2
    .venv/bin/python benchmarks/bench_steady_state.py --device cuda  # skipped without CUDA
    .venv/bin/python benchmarks/bench_steady_state.py --quick --profile  # + cProfile of clm5
    .venv/bin/python benchmarks/bench_steady_state.py --call-chunk 2048  # + caller-chunked row

A small correctness check runs as well: on the first ``--check-n`` (default 1,000) columns it
compares the structured and dense solutions (soc_stock agreement, normwise backward error
``max|L x - I| / max(|L| |x| + |I|)`` of both, and the 2-norm condition number of the
systems where they disagree).

Inputs come from :func:`xproda.testing.random_forcing` (shared with the tests); it is a
benchmark, not a test, and asserts nothing.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from xproda.testing import random_forcing

TARGET_COLS_PER_S = 50_000
TARGET_RATIO = 20.0
_SHORT = {"structured": "st", "structured_chunked": "st-ch", "torch": "to", "grad": "gr",
          "dense": "de"}
GEN_CHUNK = 10_000  # columns per input-generation chunk (keeps generation temporaries small)


# -------------------------------------------------------------------------------------------
# inputs (xproda.testing.random_forcing)
# -------------------------------------------------------------------------------------------
def make_inputs(n: int, n_params: int, seed: int = 0):
    """theta ``[n, n_params]`` in (0.05, 0.95) and forcing for ``n`` columns.

    Generated in chunks of ``GEN_CHUNK`` columns into preallocated arrays (chunk ``i`` uses
    seed ``(seed, i)``), so that generation temporaries stay small and the same columns are
    produced for every method at a given ``n``.
    """
    theta = np.random.default_rng(seed).uniform(0.05, 0.95, (n, n_params))
    forcing: dict[str, np.ndarray] = {}
    for i, s in enumerate(range(0, n, GEN_CHUNK)):
        e = min(n, s + GEN_CHUNK)
        part = random_forcing(e - s, seed=np.random.SeedSequence([seed, i]).generate_state(1)[0])
        for k, v in part.items():
            if k not in forcing:
                forcing[k] = np.empty((n,) + v.shape[1:], dtype=np.float64)
            forcing[k][s:e] = v
        del part
    return theta, forcing


# -------------------------------------------------------------------------------------------
# memory helpers (Linux)
# -------------------------------------------------------------------------------------------
def _rss_kb() -> int:
    """Current resident set size (kB)."""
    try:
        with open("/proc/self/statm") as fh:
            pages = int(fh.read().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE") // 1024
    except OSError:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def _reset_peak() -> bool:
    """Reset the kernel's peak-RSS mark to the current RSS (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def _peak_kb() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # kB on Linux


# -------------------------------------------------------------------------------------------
# worker: one (model, method, n) in a fresh process
# -------------------------------------------------------------------------------------------
def worker(spec: dict) -> dict:
    import torch

    import xproda
    from xproda import grid

    torch.set_num_threads(spec["threads"])
    device = spec["device"]
    cuda = device.startswith("cuda")
    if cuda:
        xproda.set_options(device=device)
    model_name, method, n, chunk = spec["model"], spec["method"], spec["n"], spec["chunk"]
    m = xproda.get_model(model_name)
    theta, forcing = make_inputs(n, len(m.parameters), seed=spec["seed"])
    dz = np.asarray(grid.DZ[:20], dtype=np.float64)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def sl(s, e):
        return theta[s:e], {k: v[s:e] for k, v in forcing.items()}

    def structured(s, e):
        th, f = sl(s, e)
        out = m.steady_state(th, f)
        sync()
        return out["soc_stock"]

    def torch_path(s, e):
        # the differentiable torch solver without autograd (fused numba kernel switched off)
        with xproda.set_options(fused_kernels=False):
            return structured(s, e)

    def grad(s, e):
        # forward + backward of d(sum soc_stock)/d(theta) through the torch solver
        th, f = sl(s, e)
        tht = torch.tensor(th, requires_grad=True)
        out = m.steady_state(tht, {k: torch.as_tensor(v) for k, v in f.items()})
        out["soc_stock"].nansum().backward()
        sync()
        return out["soc_stock"].detach().cpu().numpy()

    def structured_chunked(s, e):
        # the same public call, made by the caller on slices of ``spec["call_chunk"]`` columns
        c = spec["call_chunk"]
        return np.concatenate([structured(a, min(e, a + c)) for a in range(s, e, c)])

    def dense_chunk(s, e, X_out, soc_out):
        th, f = sl(s, e)
        L, rhs = m.dense_system(th, f)
        X = torch.linalg.solve(L, rhs)  # [c, 140]
        X_np = X.cpu().numpy()
        X_out[s:e] = X_np
        # pool-major order: index = pool * 20 + layer; soil pools are 4, 5, 6
        soc_out[s:e] = (X_np.reshape(e - s, 7, 20)[:, 4:].sum(1) * dz).sum(-1)

    gc.collect()
    reset_ok = _reset_peak()
    base_kb = _rss_kb() if reset_ok else max(_rss_kb(), _peak_kb())
    if cuda:
        torch.cuda.reset_peak_memory_stats()

    res = {"model": model_name, "method": method, "n": n, "reset_ok": reset_ok,
           "load": [os.getloadavg()[0]]}
    cpu_timed = []  # CPU seconds of the timed calls

    def cpu_now():
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    w = min(n, chunk)
    if method in ("structured", "structured_chunked", "torch", "grad"):
        call = {"structured": structured, "structured_chunked": structured_chunked,
                "torch": torch_path, "grad": grad}[method]
        t0 = time.perf_counter()
        call(0, w)  # warm-up
        t_warm = time.perf_counter() - t0
        times = []
        soc = None
        est = t_warm * n / w
        reps = max(1, min(spec["repeats"], int(60.0 / est)))
        for _ in range(reps):
            soc = None
            gc.collect()
            c0, t0 = cpu_now(), time.perf_counter()
            soc = call(0, n)
            times.append(time.perf_counter() - t0)
            cpu_timed.append(cpu_now() - c0)
        res.update(times=times, wall=min(times), extrapolated=False)
    elif method == "dense":
        X_out = np.empty((n, 140))
        soc = np.empty(n)
        t0 = time.perf_counter()
        dense_chunk(0, w, X_out, soc)  # warm-up (one chunk)
        sync()
        t_chunk = time.perf_counter() - t0
        starts = list(range(0, n, chunk))
        est = t_chunk * n / w
        if est > spec["max_dense_s"]:
            # time a subset of chunks (~half the budget) and extrapolate linearly
            k = max(1, int(spec["max_dense_s"] / 2 / t_chunk))
            sub = starts[:k]
            c0, t0 = cpu_now(), time.perf_counter()
            for s in sub:
                dense_chunk(s, min(n, s + chunk), X_out, soc)
            sync()
            t_sub = time.perf_counter() - t0
            cpu_timed.append(cpu_now() - c0)
            cols = sum(min(n, s + chunk) - s for s in sub)
            res.update(times=[t_sub], wall=t_sub * n / cols, extrapolated=True,
                       timed_columns=cols)
            soc[cols:] = np.nan
        else:
            reps = max(1, min(spec["repeats"], int(60.0 / est)))
            times = []
            for _ in range(reps):
                gc.collect()
                c0, t0 = cpu_now(), time.perf_counter()
                for s in starts:
                    dense_chunk(s, min(n, s + chunk), X_out, soc)
                sync()
                times.append(time.perf_counter() - t0)
                cpu_timed.append(cpu_now() - c0)
            res.update(times=times, wall=min(times), extrapolated=False)
    else:
        raise ValueError(method)

    res["cpu_s"] = sum(cpu_timed)
    res["load"].append(os.getloadavg()[0])
    res["peak_mb"] = (_peak_kb() - base_kb) / 1024.0
    res["base_mb"] = base_kb / 1024.0
    res["input_mb"] = (theta.nbytes + sum(v.nbytes for v in forcing.values())) / 2**20
    if cuda:
        res["gpu_peak_mb"] = torch.cuda.max_memory_allocated() / 2**20
    soc = np.asarray(soc, dtype=np.float64)
    res["valid_frac"] = float(np.isfinite(soc).mean())
    if spec.get("save"):
        np.save(spec["save"], soc)
    return res


def run_worker(spec: dict) -> dict:
    """Run :func:`worker` in a fresh interpreter; returns its JSON result."""
    cmd = [sys.executable, os.path.abspath(__file__), "--_worker", json.dumps(spec)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.stderr.write(proc.stderr)
        raise RuntimeError(f"worker {spec['model']}/{spec['method']}/n={spec['n']} failed")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# -------------------------------------------------------------------------------------------
# correctness check (structured vs dense on the same systems)
# -------------------------------------------------------------------------------------------
def correctness_check(n: int, threads: int, device: str, seed: int) -> None:
    import torch

    import xproda

    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        xproda.set_options(device=device)
    m = xproda.get_model("clm5")
    theta, forcing = make_inputs(n, len(m.parameters), seed=seed)
    out = m.steady_state(theta, forcing)
    L, rhs = m.dense_system(theta, forcing)
    xd = torch.linalg.solve(L, rhs)
    pools = torch.as_tensor(out["pools"], dtype=L.dtype, device=L.device)  # [n, 20, 7]
    xs = pools.transpose(1, 2).reshape(n, -1)  # pool-major, as dense_system

    def backward_error(x):
        r = (L @ x.unsqueeze(-1)).squeeze(-1) - rhs
        scale = (L.abs() @ x.abs().unsqueeze(-1)).squeeze(-1) + rhs.abs()
        return (r.abs().amax(-1) / scale.amax(-1)).cpu().numpy()

    valid = out["valid"]
    soc_s = out["soc_stock"]
    dz = torch.as_tensor(np.array(xproda.grid.DZ[:20], dtype=np.float64), dtype=L.dtype, device=L.device)
    soc_d = (xd.reshape(n, 7, 20)[:, 4:].sum(1) * dz).sum(-1).cpu().numpy()
    rel = np.abs(soc_s - soc_d) / np.abs(soc_s)
    bad = valid & ~(rel <= 1e-6)
    be_s = backward_error(torch.nan_to_num(xs))[valid]
    be_d = backward_error(xd)[valid]
    print(f"- check (n={n:,}, same systems): {valid.sum():,} columns valid for steady_state; "
          f"soc_stock agrees to 1e-6 relative in {(valid & (rel <= 1e-6)).sum():,}; normwise "
          f"backward error max {be_s.max():.1e} (structured) / {be_d.max():.1e} (dense).", end="")
    if bad.any():
        idx = np.nonzero(bad)[0]
        cond = torch.linalg.cond(L[torch.as_tensor(idx, device=L.device)]).cpu().numpy()
        neg = (xd[torch.as_tensor(idx, device=L.device)].amin(-1) < 0).sum().item()
        print(f" The {len(idx)} disagreeing columns are near-singular (2-norm cond "
              f"{cond.min():.0e}..{cond.max():.0e}; max relative soc_stock difference "
              f"{rel[idx].max():.0e}); dense LU gives negative pools in {neg} of them, so both "
              "answers there are rounding-dominated (both backward stable).")
    else:
        print()


# -------------------------------------------------------------------------------------------
# profile (optional)
# -------------------------------------------------------------------------------------------
def profile_clm5(n: int, threads: int, device: str) -> None:
    import cProfile
    import pstats

    import torch

    import xproda

    torch.set_num_threads(threads)
    if device.startswith("cuda"):
        xproda.set_options(device=device)
    m = xproda.get_model("clm5")
    theta, forcing = make_inputs(n, len(m.parameters))
    m.steady_state(theta, forcing)
    pr = cProfile.Profile()
    pr.enable()
    m.steady_state(theta, forcing)
    pr.disable()
    print(f"\n### cProfile of clm5 steady_state, n = {n:,} (functions in xproda, by cumulative)\n")
    st = pstats.Stats(pr)
    total = max(v[3] for v in st.stats.values())
    rows = []
    for (fname, line, func), (_cc, _nc, tt, ct, _callers) in st.stats.items():
        if "xproda" in fname:
            rel = fname[fname.index("xproda"):]
            rows.append((ct, tt, f"{rel}:{line}({func})"))
    rows.sort(reverse=True)
    print("| function | cumulative s | share | own s |")
    print("|---|---:|---:|---:|")
    for ct, tt, name in rows[:20]:
        print(f"| `{name}` | {ct:.3f} | {100 * ct / total:.0f}% | {tt:.3f} |")


# -------------------------------------------------------------------------------------------
# driver
# -------------------------------------------------------------------------------------------
def machine_info(threads: int, device: str) -> list[str]:
    import torch

    import xproda

    cpu_model = "?"
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        avail = len(os.sched_getaffinity(0))
    except AttributeError:
        avail = os.cpu_count()
    mem = "?"
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemTotal"):
                mem = f"{int(line.split()[1]) / 2**20:.1f} GiB"
    except OSError:
        pass
    commit = "?"
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
            cwd=Path(__file__).resolve().parent,
        ).stdout.strip() or "?"
    except OSError:
        pass
    dev = device
    if device.startswith("cuda"):
        dev += f" ({torch.cuda.get_device_name(0)})"
    return [
        f"- CPU: {cpu_model}; os.cpu_count() = {os.cpu_count()}, usable = {avail}; RAM {mem}",
        f"- Python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__}, "
        f"xproda {xproda.__version__} (git {commit})",
        f"- torch threads: {threads} (torch.set_num_threads); device: {dev}; dtype float64",
    ]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000",
                    help="comma-separated batch sizes (default 1000,10000,100000)")
    ap.add_argument("--quick", action="store_true", help="sizes 1000,10000")
    ap.add_argument("--device", default="cpu", help="cpu (default) or cuda[:i]")
    ap.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    ap.add_argument("--chunk", type=int, default=2000,
                    help="columns per dense chunk and warm-up size (default 2000)")
    ap.add_argument("--repeats", type=int, default=5,
                    help="timed repeats, best reported (default 5; fewer so a row takes <= ~60 s)")
    ap.add_argument("--max-dense-s", type=float, default=180.0,
                    help="above this estimated dense time, time a subset and extrapolate")
    ap.add_argument("--no-dense", action="store_true", help="skip the dense baseline")
    ap.add_argument("--call-chunk", type=int, default=0,
                    help="also time clm5 steady_state called by the caller on slices of this "
                         "many columns (e.g. 2048; 0 = off): shows the effect of chunking")
    ap.add_argument("--no-microbial", action="store_true", help="skip the microbial model")
    ap.add_argument("--no-torch", action="store_true",
                    help="skip the clm5 rows of the torch solver (no fused kernel) and of "
                         "forward + backward (gradients)")
    ap.add_argument("--profile", action="store_true",
                    help="also cProfile one clm5 steady_state call (n = --profile-n)")
    ap.add_argument("--profile-n", type=int, default=10000)
    ap.add_argument("--check-n", type=int, default=1000,
                    help="columns of the structured-vs-dense correctness check (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--_worker", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args._worker:
        print(json.dumps(worker(json.loads(args._worker))))
        return 0

    if args.device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            print(f"--device {args.device}: CUDA is not available on this machine; skipped.")
            return 0

    sizes = [1000, 10000] if args.quick else [int(s) for s in args.sizes.split(",") if s]
    jobs = [("clm5", "structured")]
    if args.call_chunk > 0:
        jobs.append(("clm5", "structured_chunked"))
    if not args.no_torch:
        jobs += [("clm5", "torch"), ("clm5", "grad")]
    if not args.no_dense:
        jobs.append(("clm5", "dense"))
    if not args.no_microbial:
        jobs.append(("microbial", "structured"))

    results: dict[tuple, dict] = {}
    t_start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        for n in sizes:
            for model, method in jobs:
                spec = dict(model=model, method=method, n=n, chunk=args.chunk,
                            threads=args.threads, device=args.device, repeats=args.repeats,
                            max_dense_s=args.max_dense_s, seed=args.seed,
                            call_chunk=args.call_chunk,
                            save=os.path.join(tmp, f"{model}_{method}_{n}.npy"))
                print(f"  running {model:9s} {method:10s} n={n:>9,} ...", file=sys.stderr,
                      flush=True)
                r = run_worker(spec)
                r["soc"] = np.load(spec["save"])
                results[(model, method, n)] = r
                print(f"    {r['wall']:.3f} s, {n / r['wall']:,.0f} columns/s, "
                      f"peak {r['peak_mb']:.0f} MB", file=sys.stderr, flush=True)
    elapsed = time.perf_counter() - t_start

    # ------------------------------------------------------------------ report
    print("# xproda steady-state benchmark\n")
    print("\n".join(machine_info(args.threads, args.device)))
    print(f"- sizes: {', '.join(f'{n:,}' for n in sizes)}; random forcing/theta (seed "
          f"{args.seed}); dense chunk {args.chunk:,} columns; total benchmark time "
          f"{elapsed:.0f} s")
    print(f"- targets (issue): >= {TARGET_COLS_PER_S:,} CLM5 columns/s end to end, "
          f">= {TARGET_RATIO:.0f}x the dense baseline, memory linear in n\n")
    gpu = args.device.startswith("cuda")
    hdr = "| model | n | method | wall s | columns/s | ratio vs dense | peak MB |"
    sep = "|---|---:|---|---:|---:|---:|---:|"
    if gpu:
        hdr += " GPU peak MB |"
        sep += "---:|"
    print(hdr)
    print(sep)
    for n in sizes:
        for model, method in jobs:
            r = results[(model, method, n)]
            rate = n / r["wall"]
            label = method
            if method == "structured" and model == "clm5":
                label = "structured (steady_state)"
            elif method == "torch":
                label = "structured, torch solver (fused_kernels=False)"
            elif method == "grad":
                label = "structured, torch: forward + backward d soc_stock / d theta"
            elif method == "structured_chunked":
                label = f"structured, caller-chunked ({args.call_chunk:,} columns per call)"
            elif method == "structured":
                label = "steady_state"
            if method == "dense":
                label = f"dense (dense_system + linalg.solve, chunks of {args.chunk:,})"
                if r["extrapolated"]:
                    label += f" **extrapolated from {r['timed_columns']:,} columns**"
            ratio = "-"
            if model == "clm5" and ("clm5", "dense", n) in results:
                d = results[("clm5", "dense", n)]
                ratio = "1.0x" if method == "dense" else f"{d['wall'] / r['wall']:.1f}x"
            elif model != "clm5":
                ratio = "n/a (no dense form)"
            row = (f"| {model} | {n:,} | {label} | {r['wall']:.3f} | {rate:,.0f} | {ratio} | "
                   f"{r['peak_mb']:,.0f} |")
            if gpu:
                row += f" {r.get('gpu_peak_mb', float('nan')):,.0f} |"
            print(row)

    # ------------------------------------------------------------------ footnotes
    reset_ok = all(r["reset_ok"] for r in results.values())
    print()
    print("Notes:")
    print("- wall s: best of the timed calls (repeats: "
          + "; ".join(f"{m}/{me} n={n:,}: {len(r['times'])}" for (m, me, n), r in results.items())
          + ") after one warm-up call on the first "
          f"min(n, {args.chunk:,}) columns, in a fresh subprocess per row; numpy in -> numpy out.")
    print(f"- dense: `m.dense_system` (assembly of L [c,140,140] and I [c,140]) + "
          f"`torch.linalg.solve` per chunk of {args.chunk:,} columns, results copied into a "
          "numpy X [n,140] and soc_stock; the time covers all n columns"
          + (" except rows marked extrapolated." if any(r.get("extrapolated") for r in
                                                         results.values()) else
             " (no row extrapolated)."))
    print("- ratio vs dense: dense wall s / structured wall s for the same n and systems.")
    if reset_ok:
        print("- peak MB: ru_maxrss at the end minus the RSS after imports and input generation "
              "(peak mark reset via /proc/self/clear_refs), i.e. extra resident memory at the "
              "peak of warm-up + timed calls, inputs excluded; input arrays were "
              + ", ".join(f"{results[(jobs[0][0], jobs[0][1], n)]['input_mb']:,.0f} MB "
                          f"(n={n:,})" for n in sizes) + " for clm5.")
    else:
        print("- peak MB: ru_maxrss at the end minus the peak RSS after imports and input "
              "generation (the peak mark could not be reset, so this can UNDERestimate).")
    for model, method in jobs:
        per = [results[(model, method, n)]["peak_mb"] / n * 1000 for n in sizes]
        print(f"- memory per 1,000 columns, {model}/{method}: "
              + ", ".join(f"{p:,.1f} MB (n={n:,})" for p, n in zip(per, sizes)))
    for n in sizes:
        if ("clm5", "dense", n) in results:
            a = results[("clm5", "structured", n)]["soc"]
            b = results[("clm5", "dense", n)]["soc"]
            ok = np.isfinite(a) & np.isfinite(b)
            rel = np.abs(a[ok] - b[ok]) / np.maximum(np.abs(a[ok]), 1e-300)
            print(f"- agreement n={n:,}: structured and dense soc_stock agree to 1e-6 relative in "
                  f"{(rel <= 1e-6).sum():,} of {ok.sum():,} columns finite in both "
                  f"(structured: {100 * results[('clm5', 'structured', n)]['valid_frac']:.1f}% "
                  "valid); see the check below for the others")
    for n in sizes:
        if ("microbial", "structured", n) in results:
            r = results[("microbial", "structured", n)]
            print(f"- microbial n={n:,}: {100 * r['valid_frac']:.1f}% of random columns valid "
                  "(the others are flagged NaN: no physical steady state for random theta)")
            break

    loads = [x for r in results.values() for x in r["load"]]
    print(f"- contention: 1-minute load average {min(loads):.2f}..{max(loads):.2f} during the "
          f"rows on {os.cpu_count()} CPUs (values above ~{args.threads} mean other processes "
          "shared the CPUs and timings are pessimistic); CPU s / wall s of the timed calls "
          f"(<= {args.threads} ideal; ~1 = one thread's worth of CPU): "
          + ", ".join(f"{m[:3]}/{_SHORT[me]}/{n:,}: {r['cpu_s'] / sum(r['times']):.1f}"
                      for (m, me, n), r in results.items()))
    if args.check_n > 0 and not args.no_dense:
        correctness_check(args.check_n, args.threads, args.device, args.seed)

    # ------------------------------------------------------------------ verdict
    big = max(sizes)
    s = results[("clm5", "structured", big)]
    rate = big / s["wall"]
    print(f"\nVerdict at n = {big:,}: CLM5 {rate:,.0f} columns/s "
          f"({'meets' if rate >= TARGET_COLS_PER_S else 'BELOW'} the {TARGET_COLS_PER_S:,} "
          "target)", end="")
    if ("clm5", "dense", big) in results:
        ratio = results[("clm5", "dense", big)]["wall"] / s["wall"]
        print(f"; {ratio:.1f}x dense ({'meets' if ratio >= TARGET_RATIO else 'BELOW'} the "
              f"{TARGET_RATIO:.0f}x target)", end="")
    print(".")

    if args.profile:
        profile_clm5(args.profile_n, args.threads, args.device)
    return 0


if __name__ == "__main__":
    sys.exit(main())
