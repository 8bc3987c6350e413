"""Global run, notebook style: world -> parameters -> steady state -> stocks -> global totals.

Each ``# %%`` cell runs on its own in Jupyter/VS Code (or run the file as a script). The
synthetic world of ``xproda.datasets`` stands in for real covariates and forcing; with
``--network`` the parameters come from a trained network (e.g. the one ``xproda demo``
saves), otherwise from the world's known truth parameters::

    python examples/global_run.py                          # 4 degrees, ~10 s
    python examples/global_run.py --resolution 2 --out run.zarr
    python examples/global_run.py --network demo_output/network.safetensors
"""

# %% imports and options
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import xproda
from xproda import io
from xproda.xr import api as xr_api
from xproda.datasets import synthetic_world, truth_parameters
from xproda.learning.network import load_network

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--resolution", type=float, default=4.0, help="grid spacing in degrees")
parser.add_argument("--network", type=Path, default=None,
                    help="trained network (.safetensors); default: the truth parameters")
parser.add_argument("--out", type=Path, default=None,
                    help="output Zarr store (default: a temporary directory)")
args, _ = parser.parse_known_args()  # parse_known_args: also works inside Jupyter
t0 = time.perf_counter()

# %% the world: covariates + CLM5-style forcing on a global grid, lazily chunked
chunk = max(1, int(round(90 / args.resolution)))  # 90 degrees of latitude per chunk
world = synthetic_world(args.resolution, seed=0, chunks={"lat": chunk, "lon": 2 * chunk})
print(f"world: {world.sizes['lat']} x {world.sizes['lon']} cells, "
      f"{int(world['landmask'].sum()):,} soil columns, chunks {chunk} x {2 * chunk}")

# %% parameters: normalised theta (lat, lon, parameter), from a network or the truth
if args.network is not None:
    net = load_network(args.network)
    theta = world.proda.predict_parameters(net)    # lazy; covariates matched by name
    print(f"parameters predicted by {args.network} ({net.n_features} covariates)")
else:
    theta = truth_parameters(world, kind="cue")    # the synthetic world's known parameters
    print("parameters: the synthetic world's truth (kind='cue')")

# %% steady state (lazy: nothing is computed yet)
out = world.proda.steady_state(theta, model="clm5")
out["soc_stock_0_30cm"] = out.proda.soc_stock(depth=(0, 0.3))   # kg C m-2
out["soc_stock_0_100cm"] = out.proda.soc_stock(depth=(0, 1))
print(out[["soc_stock", "soc_stock_0_30cm", "turnover_time"]])

# %% write to Zarr, region by region (resumable), land cells only
store = args.out or Path(tempfile.mkdtemp()) / "global_run.zarr"
report = io.write_zarr(out, str(store), mask=world["landmask"] == 1, overwrite=True,
                       progress=False)
print(report)

# %% reopen and summarise: global totals (Pg C) and the mean turnover time
res = io.open_dataset(str(store))
for name, depth in (("0-30 cm", (0, 0.3)), ("0-100 cm", (0, 1)), ("0-8.6 m", None)):
    total = float(xr_api.global_total(res, depth=depth))
    print(f"global SOC {name:>8}: {total:8,.0f} Pg C")
area = res["cell_area"]
tau = res["turnover_time"].weighted(area.where(res["turnover_time"].notnull(), 0)).mean()
print(f"land-area-weighted mean turnover time: {float(tau):,.0f} yr")
print(f"xproda {xproda.__version__}; done in {time.perf_counter() - t0:.1f} s -> {store}")
