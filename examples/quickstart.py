"""xproda quick start: steady-state soil carbon of a few soil columns.

Runs both PRODA process models (the CLM5 vertically resolved CENTURY model and the microbial
model) in their corrected and reference modes on synthetic CLM5-style forcing, prints SOC
stocks, depth-interval stocks, turnover times and flags, and differentiates the SOC stock
with respect to the normalised parameters with torch autograd.

Self-contained (no data files needed) and takes a few seconds on a laptop CPU::

    python examples/quickstart.py                 # print results
    python examples/quickstart.py --out figures   # also save a depth-profile PNG (matplotlib)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import xproda
from xproda import grid

KG = 1e-3  # g C m-2 -> kg C m-2


# ----------------------------------------------------------------------------------------------
# forcing: a mapping of CLM5 history names to arrays with a leading batch ("column") dimension
# (see xproda.models.forcing.FORCING_SCHEMA for every variable's shape, units and range)
# ----------------------------------------------------------------------------------------------
COLUMNS = (
    "temperate, deep soil",  # bioturbation (active layer > 2 m), bedrock below layer 20
    "permafrost",  # cryoturbation (active layer 0.8-0.9 m), bedrock at layer 12, 12 K colder
    "shallow soil",  # bioturbation, bedrock at layer 8 (1.2 m): the reference leaks carbon here
    "ocean (no data)",  # NaN forcing: NaN outputs and the flag 'no_data', never an error
)


def make_forcing() -> dict[str, np.ndarray]:
    """Monthly forcing for the four columns of ``COLUMNS`` (the spec's §12 test forcing).

    ``TSOI = 273.15 + 10 + 12 sin(2 pi (m - 4) / 12) exp(-j / 8)`` K for month m and layer j,
    ``W_SCALAR = 0.5 + 0.2 cos(2 pi m / 12)``, ``O_SCALAR = 1``, ``FPI_vr = 0.7``, and column
    litter inputs CWD/L1/L2/L3 = 5/15/25/10 g C m-2 month-1 (660 g C m-2 yr-1 in total).
    """
    n = len(COLUMNS)
    m = np.arange(1, 13)[:, None]  # month, [12, 1]
    j = np.arange(1, 21)[None, :]  # layer, [1, 20]
    tsoi = 273.15 + 10 + 12 * np.sin(2 * np.pi * (m - 4) / 12) * np.exp(-j / 8)  # [12, 20] K
    w = (0.5 + 0.2 * np.cos(2 * np.pi * m / 12)) * np.ones((1, 20))

    def per_column(x):  # repeat a field for every column: [n, ...]
        return np.repeat(np.asarray(x, dtype=float)[None], n, axis=0)

    f = {
        "TSOI": per_column(tsoi),  # [n, 12, 20] K
        "W_SCALAR": per_column(w),  # [n, 12, 20] 1
        "O_SCALAR": per_column(np.ones((12, 20))),  # [n, 12, 20] 1
        "FPI_vr": per_column(np.full((12, 20), 0.7)),  # [n, 12, 20] 1
        "ALTMAX": per_column(np.full(12, 6.0)),  # [n, 12] m
        "ALTMAX_LASTYEAR": per_column(np.full(12, 6.0)),  # [n, 12] m
        "nbedrock": per_column(np.full(12, 20.0)),  # [n, 12] 1-based layer index
        "CELLSAND": per_column(np.full(20, 40.0)),  # [n, 20] % (CLM5 default mode only)
        "CWD_INPUT": per_column(np.full(12, 5.0)),  # [n, 12] g C m-2 month-1
        "LITR1_INPUT": per_column(np.full(12, 15.0)),
        "LITR2_INPUT": per_column(np.full(12, 25.0)),
        "LITR3_INPUT": per_column(np.full(12, 10.0)),
    }
    # column 1: permafrost
    f["ALTMAX"][1], f["ALTMAX_LASTYEAR"][1], f["nbedrock"][1] = 0.8, 0.9, 12
    f["TSOI"][1] -= 12.0
    # column 2: shallow bedrock, warmer and wetter
    f["nbedrock"][2] = 8
    f["TSOI"][2] += 5.0
    f["W_SCALAR"][2] = np.minimum(f["W_SCALAR"][2] + 0.2, 1.0)
    # column 3: no data
    for v in f.values():
        v[3] = np.nan
    return f


# ----------------------------------------------------------------------------------------------
def report(title: str, out) -> None:
    """Print stocks (kg C m-2), turnover time and flags of a SteadyState."""
    soc = out["soc"]  # [n, 20] g C m-3
    s30 = grid.integrate(soc, 0.0, 0.3)  # g C m-2, partial layers counted linearly
    s100 = grid.integrate(soc, 0.0, 1.0)
    print(f"\n{title}")
    print(
        f"  {'column':<22}{'0-30 cm':>9}{'0-100 cm':>10}{'0-8.6 m':>10}"
        f"{'input':>8}{'resp.':>8}{'tau (yr)':>10}  flags"
    )
    for i, name in enumerate(COLUMNS):
        flags = ", ".join(out.flag_names()[i]) or "-"
        print(
            f"  {name:<22}{s30[i] * KG:>9.2f}{s100[i] * KG:>10.2f}{out['soc_stock'][i] * KG:>10.2f}"
            f"{out['input'][i]:>8.0f}{out['respiration'][i]:>8.0f}"
            f"{out['turnover_time'][i]:>10.1f}  {flags}"
        )


def gradient_demo(model, forcing, theta_value: float) -> None:
    """d soc_stock / d theta with torch autograd, checked against a finite difference."""
    names = model.parameters.names
    theta = torch.full((1, len(names)), theta_value, dtype=torch.float64, requires_grad=True)
    first = {k: v[:1] for k, v in forcing.items()}  # the temperate column only
    out = model.steady_state(theta, first)  # a torch input gives torch outputs
    out["soc_stock"].sum().backward()
    grad = theta.grad[0].numpy() * KG  # kg C m-2 per unit of normalised parameter
    order = np.argsort(-np.abs(grad))[:5]
    print(f"\n{model.name} (corrected), theta = {theta_value}: d SOC stock / d theta "
          "(kg C m-2 per unit theta), temperate column, largest five")
    for i in order:
        p = model.parameters[int(i)]
        units = "" if p.units == "1" else f" {p.units}"
        print(f"  {p.name:<16}{grad[i]:>+10.1f}   {p.description} [{p.minimum:g}, {p.maximum:g}]{units}")
    # central finite difference of the largest one, for comparison
    i, h = int(order[0]), 1e-6
    th = np.full((2, len(names)), theta_value)
    th[0, i] += h
    th[1, i] -= h
    s = model.steady_state(th, first)["soc_stock"]  # forcing with batch 1 broadcasts to theta
    print(f"  {names[i]} by central finite difference: {(s[0] - s[1]) / (2 * h) * KG:+.1f}")


def plot_profiles(results: dict, path: Path) -> None:
    """SOC density profiles, one panel per model; solid: corrected, dashed: reference."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    depth = grid.ZSOI[: grid.N_LAYERS]
    models = sorted({key[0] for key in results})
    fig, axes = plt.subplots(1, len(models), figsize=(4.5 * len(models), 5), sharey=True)
    for ax, name in zip(np.atleast_1d(axes), models):
        for (model, reference), out in results.items():
            if model != name:
                continue
            for i, column in enumerate(COLUMNS):
                if out["valid"][i]:
                    ax.plot(out["soc"][i] * KG, depth, ls="--" if reference else "-", marker=".",
                            color=f"C{i}", label=None if reference else column)
        ax.set_title(f"{name} (solid: corrected, dashed: reference)", fontsize=9)
        ax.set_xlabel("SOC density (kg C m$^{-3}$)")
        ax.set_ylim(grid.SOIL_DEPTH, 0)
    axes[0].set_ylabel("depth (m)")
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    print(f"\nsaved {path}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for a depth-profile PNG (needs matplotlib); default: no plot")
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    xproda.set_options(torch_threads=1)  # tiny batches: one thread is fastest

    forcing = make_forcing()
    n = len(COLUMNS)
    print(f"xproda {xproda.__version__}: {n} soil columns x 12 months x {grid.N_LAYERS} layers "
          f"(0-{grid.SOIL_DEPTH} m)")

    results = {}
    for name, theta_value in (("clm5", 0.5), ("microbial", 0.3)):
        for reference in (False, True):
            model = xproda.get_model(name, reference=reference)
            theta = np.full((n, len(model.parameters)), theta_value)  # normalised, in (0, 1)
            out = model.steady_state(theta, forcing)  # numpy in -> numpy out
            mode = "reference" if reference else "corrected"
            title = f"{name} ({mode}), theta = {theta_value}"
            report(title, out)
            results[(name, reference)] = out

    # CLM5 default parameters (PRODA's "is_default" mode), all litter input into layer 1
    clm5 = xproda.get_model("clm5")
    report("clm5 with CLM5 default parameters (input_profile='surface')",
           clm5.default_steady_state(forcing, input_profile="surface"))

    print("\nstocks in kg C m-2; input and respiration in g C m-2 yr-1; tau = stock / input (yr)")
    print("flag bits:", xproda.FLAGS)
    # at steady state respiration equals input, unless transport loses carbon
    ref = results[("clm5", True)]
    leak = ref["input"] - ref["respiration"]
    for i in np.flatnonzero(np.nan_to_num(leak) > 1e-6 * np.nan_to_num(ref["input"])):
        print(f"note: clm5 (reference) '{COLUMNS[i]}' respires {ref['respiration'][i]:.1f} of its "
              f"{ref['input'][i]:.0f} g C m-2 yr-1 input: the original code's open bedrock boundary "
              "loses carbon (spec §10 item 10); the corrected transport conserves mass.")

    gradient_demo(clm5, forcing, 0.5)
    gradient_demo(xproda.get_model("microbial"), forcing, 0.3)

    if args.out is not None:
        try:
            import matplotlib  # noqa: F401
        except ImportError:
            print("\nmatplotlib is not installed: no plot (pip install matplotlib)")
        else:
            args.out.mkdir(parents=True, exist_ok=True)
            plot_profiles(results, args.out / "quickstart_profiles.png")
    print(f"\ndone in {time.perf_counter() - t0:.1f} s")


if __name__ == "__main__":
    main()
