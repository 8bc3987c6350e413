"""Cost of the column engine and the input contract (issue 16), against the bare kernel.

Rows (each in a fresh subprocess; best of ``--repeats``; the same forcing in every row):

- ``kernel``: ``model.steady_state`` on the land columns (numpy, batch first) -- the baseline;
- ``engine eager``: ``ds.proda.steady_state(theta)`` on a numpy-backed Dataset (validation,
  alignment, gather, kernel, scatter, metadata), ``soc_stock`` computed;
- ``engine lazy``: the same on a dask-backed Dataset (threaded scheduler);
- ``engine converted``: eager, with ``ALTMAX``/``ALTMAX_LASTYEAR`` in cm, ``TSOI`` in degC and
  the litter inputs in g C m-2 s-1 (converted by the contract; same result to 1e-11);
- ``build + validate``: graph build of the lazy run plus ``validate()``, nothing computed;
- ``before (eager|lazy)``: the same calls with the xproda of ``--before`` (default: the commit
  before the engine, ``5d69d8b``) checked out in a temporary git worktree.

It prints the load average, seconds, land columns per second, the ratio to the kernel row and
the peak RSS above the imports, and checks that every row gives the kernel's numbers.

    .venv/bin/python benchmarks/bench_engine.py            # 120 x 240 cells (~20k land)
    .venv/bin/python benchmarks/bench_engine.py --ny 60 --nx 120 --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

ROW = textwrap.dedent(
    """
    import json, resource, sys, time
    import numpy as np, xarray as xr, dask
    import xproda
    from xproda.testing import forcing_dataset
    ny, nx, repeats, kind = {ny}, {nx}, {repeats}, {kind!r}
    ds = forcing_dataset(ny, nx, seed=5, ocean_fraction=0.3)
    theta = xr.DataArray(np.full(21, 0.5), dims="parameter")
    land = np.isfinite(ds["TSOI"].isel(month=0, layer=0)).values
    if kind == "converted":
        days = xr.DataArray([31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31], dims="month")
        ds = ds.copy()
        for k in ("ALTMAX", "ALTMAX_LASTYEAR"):
            ds[k] = (ds[k] * 100).assign_attrs(units="cm")
        ds["TSOI"] = (ds["TSOI"] - 273.15).assign_attrs(units="degC")
        for k in ("CWD_INPUT", "LITR1_INPUT", "LITR2_INPUT", "LITR3_INPUT"):
            ds[k] = (ds[k] / (86400.0 * days)).assign_attrs(units="g m-2 s-1")
    if kind in ("lazy", "build"):
        ds = ds.chunk({{"lat": max(1, ny // 8)}})
    if kind == "kernel":
        m = xproda.get_model("clm5")
        cols = ds.stack(cell=("lat", "lon")).isel(cell=np.flatnonzero(land.ravel()))
        names = list(m.required_forcing)
        f = {{k: np.ascontiguousarray(cols[k].transpose("cell", ...).values) for k in names}}
        th = np.full((land.sum(), 21), 0.5)
    rss0 = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        if kind == "kernel":
            s = np.full(land.shape, np.nan)
            s[land] = np.asarray(m.steady_state(th, f)["soc_stock"]) / 1000.0
            out = s
        elif kind == "build":
            lazy = ds.proda.steady_state(theta)
            ds.proda.validate(params=theta)
        else:
            with dask.config.set(scheduler="threads"):
                out = ds.proda.steady_state(theta)["soc_stock"].values
        best = min(best, time.perf_counter() - t0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss0
    if out is not None:
        np.save(sys.argv[1], out)
    print(json.dumps({{"seconds": best, "land": int(land.sum()), "rss_mb": rss / 1024,
                      "xproda": xproda.__file__}}))
    """
)


def _run(python: str, cwd: str, kind: str, args, outfile: str) -> dict:
    code = ROW.format(ny=args.ny, nx=args.nx, repeats=args.repeats, kind=kind)
    env = dict(os.environ, PYTHONPATH=cwd)
    res = subprocess.run([python, "-c", code, outfile], cwd=cwd, env=env, capture_output=True,
                         text=True, check=False)
    if res.returncode:
        raise RuntimeError(f"row {kind} failed:\n{res.stderr[-3000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main(argv=None) -> None:
    import numpy as np

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ny", type=int, default=120)
    ap.add_argument("--nx", type=int, default=240)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--before", default="5d69d8b",
                    help="git revision of the 'before' rows ('' to skip them)")
    args = ap.parse_args(argv)
    python = sys.executable
    tmp = tempfile.mkdtemp(prefix="bench_engine_")
    rows = [("kernel", ROOT, "kernel"), ("engine eager", ROOT, "eager"),
            ("engine lazy", ROOT, "lazy"), ("engine converted", ROOT, "converted"),
            ("build + validate", ROOT, "build")]
    if args.before:
        wt = os.path.join(tmp, "before")
        subprocess.run(["git", "-C", ROOT, "worktree", "add", "--detach", wt, args.before],
                       check=True, capture_output=True)
        rows += [(f"before {args.before} eager", wt, "eager"),
                 (f"before {args.before} lazy", wt, "lazy")]
    print(f"load average before: {os.getloadavg()}; grid {args.ny} x {args.nx}; best of "
          f"{args.repeats}")
    results = []
    try:
        for label, cwd, kind in rows:
            out = os.path.join(tmp, f"{kind}-{len(results)}.npy")
            r = _run(python, cwd, kind, args, out)
            r["label"], r["out"] = label, out if kind != "build" else None
            if not r["xproda"].startswith(cwd):
                raise RuntimeError(f"row {label} imported {r['xproda']}, not from {cwd}")
            results.append(r)
    finally:
        if args.before:
            subprocess.run(["git", "-C", ROOT, "worktree", "remove", "--force",
                            os.path.join(tmp, "before")], check=False, capture_output=True)
    base = results[0]
    ref = np.load(base["out"])
    print(f"\n{'row':<28}{'seconds':>10}{'columns/s':>12}{'x kernel':>10}{'peak MB':>10}"
          f"{'max |diff|':>12}")
    for r in results:
        diff = "" if r["out"] is None else f"{np.nanmax(np.abs(np.load(r['out']) - ref)):.1e}"
        print(f"{r['label']:<28}{r['seconds']:>10.3f}{r['land'] / r['seconds']:>12,.0f}"
              f"{r['seconds'] / base['seconds']:>10.2f}{r['rss_mb']:>10.0f}{diff:>12}")
    print(f"\nload average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
