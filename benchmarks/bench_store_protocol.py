#!/usr/bin/env python
"""Cost of the resumable-write protocol (issue 17): manifest, lock, input digests, verify.

What it measures
----------------
The global steady-state run of ``bench_global_run.py`` (same cached inputs under
``benchmarks/results/global_<res>/``: a lat/lon forcing store with a real land mask and a
parameter store), streamed Zarr -> Zarr with ``xproda.cli.build_run`` + ``io.write_zarr`` on
the threaded scheduler, each row in a fresh subprocess, best of ``--repeats``:

- **before**: the same run with the writer of ``--before`` (a git worktree of the commit
  before the protocol: no manifest, no lock, no input digests);
- **now**: the writer of this tree (each region reads back its chunks and records size and
  digest; lock; manifest);
- **now + inputs**: as ``xproda run`` does, with ``inputs=`` the forcing and parameter stores
  (their bytes are hashed: SHA-256 of every object);
- **resume (complete)**: ``write_zarr(..., resume=True)`` on the finished store (one listing:
  presence and size of every recorded object);
- **verify (digests)**: ``io.verify(store)`` (reads every object, BLAKE2b);
- **digest inputs**: ``digest_inputs`` of the two input stores alone.

How to run
----------
::

    .venv/bin/python benchmarks/bench_store_protocol.py               # 1 degree
    .venv/bin/python benchmarks/bench_store_protocol.py --res 0.25

It asserts nothing; it prints a Markdown table. Run it with nothing else on the machine and
compare ratios (the 'before' row is measured in the same run).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = str(Path(__file__).resolve().parents[1])
RESULTS = Path(__file__).resolve().parent / "results"

ROW = textwrap.dedent(
    """
    import json, resource, shutil, sys, time
    import dask, xproda
    from xproda import io
    from xproda.cli import build_run
    root, out, kind, repeats = {root!r}, {out!r}, {kind!r}, {repeats}
    xproda.tune_malloc()
    best = float("inf")
    extra = {{}}
    for _ in range(repeats):
        if kind in ("before", "now", "inputs"):
            shutil.rmtree(out, ignore_errors=True)
        t0 = time.perf_counter()
        with dask.config.set(scheduler="threads", num_workers=2), \\
                xproda.set_options(torch_threads=1):
            if kind in ("before", "now", "inputs", "resume"):
                res, mask = build_run(f"{{root}}/forcing.zarr", f"{{root}}/params.zarr",
                                      depths=[(0, 0.3), (0, 1.0)])
                kw = {{}}
                if kind == "inputs":
                    kw["inputs"] = {{"forcing": f"{{root}}/forcing.zarr",
                                    "params": f"{{root}}/params.zarr", "network": None,
                                    "covariates": None}}
                if kind == "resume":
                    kw["resume"] = True
                    kw["inputs"] = {{"forcing": f"{{root}}/forcing.zarr",
                                    "params": f"{{root}}/params.zarr", "network": None,
                                    "covariates": None}}
                rep = io.write_zarr(res, out, mask=mask, progress=False, **kw)
                extra["report"] = repr(rep)
            elif kind == "verify":
                rep = io.verify(out)
                extra["ok"] = rep.ok
                extra["objects"] = rep.objects_checked
            elif kind == "digest":
                from xproda.io.digest import digest_inputs
                digest_inputs({{"forcing": f"{{root}}/forcing.zarr",
                               "params": f"{{root}}/params.zarr"}})
        best = min(best, time.perf_counter() - t0)
    print(json.dumps({{"seconds": best,
                      "peak_gb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
                      "xproda": xproda.__file__, **extra}}))
    """
)


def _run(cwd: str, **kw) -> dict:
    code = ROW.format(**kw)
    env = dict(os.environ, PYTHONPATH=cwd)
    res = subprocess.run([sys.executable, "-c", code], cwd=cwd, env=env, capture_output=True,
                         text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"row {kw['kind']} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def _size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import bench_global_run as bg

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--res", type=float, default=1.0)
    ap.add_argument("--chunk", type=int, default=120)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--before", default="d144127",
                    help="git revision of the 'before' row ('' to skip it)")
    args = ap.parse_args(argv)
    root = RESULTS / f"global_{args.res:g}"
    if not (root / "forcing.zarr").exists():
        root.mkdir(parents=True, exist_ok=True)
        bg.build_inputs(args.res, args.chunk, root)
    tmp = Path(tempfile.mkdtemp(prefix="bench_store_"))
    rows = []
    if args.before:
        wt = tmp / "before"
        subprocess.run(["git", "worktree", "add", "--detach", str(wt), args.before], cwd=ROOT,
                       check=True, capture_output=True)
        try:
            r = _run(str(wt), root=str(root), out=str(tmp / "before.zarr"), kind="before",
                     repeats=args.repeats)
            assert "before" in r["xproda"], r["xproda"]
            rows.append(("before (" + args.before + ")", r))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(wt)], cwd=ROOT,
                           check=False, capture_output=True)
    out = str(tmp / "now.zarr")
    rows.append(("now", _run(ROOT, root=str(root), out=out, kind="now", repeats=args.repeats)))
    rows.append(("now + inputs (as xproda run)",
                 _run(ROOT, root=str(root), out=out, kind="inputs", repeats=args.repeats)))
    rows.append(("resume of the complete store",
                 _run(ROOT, root=str(root), out=out, kind="resume", repeats=args.repeats)))
    rows.append(("verify (digests)",
                 _run(ROOT, root=str(root), out=out, kind="verify", repeats=args.repeats)))
    rows.append(("digest inputs alone",
                 _run(ROOT, root=str(root), out=out, kind="digest", repeats=args.repeats)))
    base = rows[0][1]["seconds"] if args.before else rows[1][1]["seconds"]
    in_mb = (_size(root / "forcing.zarr") + _size(root / "params.zarr")) / 2**20
    out_mb = _size(Path(out)) / 2**20
    load = os.getloadavg()
    print(f"\n{args.res:g} degree grid, inputs {in_mb:.0f} MiB, output {out_mb:.0f} MiB; "
          f"load average before: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}\n")
    print("| row | seconds | x first row | peak RSS GB |")
    print("|---|---:|---:|---:|")
    for name, r in rows:
        print(f"| {name} | {r['seconds']:.2f} | {r['seconds'] / base:.2f} | "
              f"{r['peak_gb']:.2f} |")
    for name, r in rows:
        if "report" in r:
            print(f"\n{name}: {r['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
