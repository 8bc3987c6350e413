#!/usr/bin/env python
"""Real soil profiles end to end: wall time of each stage and the held-out skill table.

What it measures
----------------
The pipeline of ``examples/real_profiles.py`` (AfSP + ISIS + Edgeroi + FEBR from ``../shared/data``,
harmonised and cleaned with a drop report; WorldClim coarse covariates and forcing from
``xproda.climate.from_climate``; spatially blocked cross-validation of CLM5 defaults, batch mode,
two-step PRODA, end to end, gradient boosting and random forest; SOC stock maps of the
end-to-end network), with the example's options (``--max-profiles``, ``--methods``, ...):

- wall time of loading + cleaning, covariates + forcing, each CV method (all folds), maps and
  the total, with the machine's load average at the start and the end;
- held-out R2 / RMSE / bias of SOC density by depth interval (0-30, 30-100, > 100 cm) and
  overall, per method.

Target (issue 9): the default configuration runs in <= 30 min on 2 cores.

Covariate sets (issue 21): ``--covariates grid|grid+open|grid+site|grid+open+site`` with
``--same-sites`` compares them on the same profiles (those with measured 0-30 cm clay and
sand).

Run::

    .venv/bin/python benchmarks/bench_real_profiles.py                     # default config
    for c in grid grid+open grid+open+site; do .venv/bin/python benchmarks/bench_real_profiles.py \
        --same-sites --covariates $c --max-profiles 4000 --out /tmp/rp_$c \
        --results benchmarks/results/real_profiles_$c.md; done
    .venv/bin/python benchmarks/bench_real_profiles.py --max-profiles 1000 --methods \\
        default,end_to_end,gbm

The table goes to stdout and ``benchmarks/results/real_profiles_cpu.md``; the example's
outputs (CSV, markdown, maps) to ``--out`` (default ``benchmarks/results/real_profiles``).
"""

from __future__ import annotations

import importlib.util
import os
import platform
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parent / "examples" / "real_profiles.py"


def _example():
    spec = importlib.util.spec_from_file_location("real_profiles_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _markdown(df) -> str:
    """A DataFrame as a markdown table (no tabulate dependency)."""
    rows = [list(map(str, df.columns))] + [list(map(str, r)) for r in df.to_numpy()]
    return "\n".join(["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
                     + ["| " + " | ".join(r) + " |" for r in rows[1:]])


def main(argv: list[str] | None = None) -> int:
    ex = _example()
    ap = ex.build_parser()
    ap.description = __doc__.split("\n")[0]
    ap.set_defaults(out=HERE / "results" / "real_profiles")
    ap.add_argument("--results", type=Path, default=HERE / "results" / "real_profiles_cpu.md",
                    help="markdown file of the benchmark table")
    a = ap.parse_args(argv)
    if not (a.data / "profiles").is_dir():
        print(f"real data not found in {a.data}; pass --data", file=sys.stderr)
        return 1
    import torch

    load0 = os.getloadavg()
    t0 = time.perf_counter()
    res = ex.run(a)
    wall = time.perf_counter() - t0
    load1 = os.getloadavg()
    tim = res["timing"]
    methods = list(res["cv_table"].index)
    lines = [
        "# xproda real-profile pipeline benchmark", "",
        f"- machine: {platform.machine()}, {os.cpu_count()} CPUs; Python "
        f"{platform.python_version()}, torch {torch.__version__}; {a.threads} threads; load "
        f"average (1 min) {load0[0]:.2f} at the start, {load1[0]:.2f} at the end",
        f"- command: `{' '.join([Path(sys.argv[0]).name] + list(argv or sys.argv[1:]))}`",
        f"- profiles used: {res['n_profiles']:,} ({res['n_layers']:,} layers; "
        + ", ".join(f"{k} {v:,}" for k, v in res["used_by_source"].items())
        + f"); {res['n_left_out']:,} clean profiles not in the subsample; "
        f"{res['n_dropped_sites']} dropped at the sites (no covariates/forcing)"
        + (f"; {res['n_same_sites_left_out']:,} without measured "
           f"{a.site_properties} (--same-sites)" if a.same_sites else ""),
        f"- covariates `{a.covariates}`: {', '.join(res['features'])}",
        f"- {a.folds} spatially blocked folds ({a.block_size:g} degree blocks); networks "
        f"(128-128) at most {a.epochs} epochs, patience {a.patience}; two-step MAP 2 x "
        f"{a.da_steps} steps; batch mode 1 x {a.batch_steps} steps", "",
        "| stage | wall s |", "|---|---:|",
        f"| load + clean (all sources) | {tim['load']:.0f} |",
        f"| covariates + forcing (from_climate) + site sampling | "
        f"{tim['covariates_forcing']:.0f} |"]
    for m in methods:
        lines.append(f"| CV: {ex.METHOD_LABELS.get(m, m)} ({a.folds} folds) | "
                     f"{tim['cv_' + m]:.0f} |")
    if "maps" in tim:
        lines.append(f"| maps (end-to-end net on all profiles, grid steady state) | "
                     f"{tim['maps']:.0f} |")
    fit = res["fitted_sites"]
    if "two_step" in fit.index:
        folds = res["folds"]
        kept = ", ".join(f"{int(n):,} of {int((folds != k).sum()):,}"
                         for k, n in enumerate(fit.loc["two_step"]))
        lines.insert(lines.index("| stage | wall s |") - 1,
                     f"- two-step kept the training sites whose DA fit R2 > 0.75: {kept} "
                     "per fold")
    lines += [f"| **total** | **{wall:.0f}** ({wall / 60:.1f} min) |", "",
              "Held-out SOC density (g C m-3) by depth interval:", "",
              ex.markdown_table(res["skill_by_depth"]), "",
              "All depths, by source and pooled:", "",
              ex.markdown_source_table(res["skill_by_source"]), "",
              "Adams (1973) pedotransfer function vs measured bulk density (g cm-3):", "",
              _markdown(res["pedotransfer"].round(3))]
    text = "\n".join(lines)
    print("\n" + text)
    a.results.parent.mkdir(parents=True, exist_ok=True)
    a.results.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
