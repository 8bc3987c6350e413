"""Write the gallery notebooks (sources only); ``--execute`` runs them and stores outputs.

The notebooks live in ``docs/notebooks/`` and are committed with their outputs (the docs
render them as they are, with mkdocs-jupyter); ``tests/test_notebooks.py`` executes them
again in CI. Without options this checks the notebooks against the cells here and writes
nothing. Edit the cells here, then run::

    .venv/bin/python examples/build_notebooks.py --execute
"""

from __future__ import annotations

import argparse
from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

HERE = Path(__file__).resolve().parent.parent / "docs" / "notebooks"

NOTEBOOKS: dict[str, list[tuple[str, str]]] = {
    "01_quickstart.ipynb": [
        ("md", "# Quick start: the model on a synthetic world\n\n"
               "A coarse synthetic world (forcing and covariates with a known truth), the "
               "steady state run lazily with dask through the `.proda` accessor, stocks by "
               "depth, a global total, a map, and a resumable Zarr write. About 20 s."),
        ("code", "import xproda\n"
                 "from xproda.datasets import synthetic_world, truth_parameters\n\n"
                 "world = synthetic_world(5.0).chunk({'lat': 12, 'lon': 24})\n"
                 "world.proda  # what xproda sees: grid, chunks, forcing, covariates"),
        ("code", "theta = truth_parameters(world, kind='cue')  # a parameter map\n"
                 "out = world.proda.steady_state(theta)        # lazy\n"
                 "out['soc_stock_0_1m'] = out.proda.soc_stock(depth=(0, 1))\n"
                 "out.proda"),
        ("code", "out.proda.global_total(depth=(0, 1)).compute()  # Pg C"),
        ("code", "import matplotlib.pyplot as plt\n\n"
                 "(out['soc_stock_0_1m'] / 1000).plot(cmap='viridis', robust=True,\n"
                 "    cbar_kwargs={'label': 'SOC 0-1 m (kg C m-2)'})\n"
                 "plt.title('steady-state SOC, 0-1 m');"),
        ("md", "Written region by region; a killed run resumes with `resume=True`. The "
               "progress bar is one widget (the option `progress` silences it)."),
        ("code", "import tempfile\n\n"
                 "store = tempfile.mkdtemp() + '/run.zarr'\n"
                 "report = out.proda.write_zarr(store)\n"
                 "report"),
    ],
    "02_cluster_run.ipynb": [
        ("md", "# A global run on a LocalCluster\n\n"
               "`xproda.options.local_cluster` starts dask workers tuned for xproda; the "
               "client's dashboard link shows the tasks. The run goes from a forcing store "
               "to a result store with `write_zarr`."),
        ("code", "import tempfile\n"
                 "import xproda\n"
                 "from xproda.datasets import synthetic_world, truth_parameters\n\n"
                 "root = tempfile.mkdtemp()\n"
                 "world = synthetic_world(5.0)\n"
                 "xproda.io.write_zarr(world.chunk({'lat': 12, 'lon': 24}), root + "
                 "'/forcing.zarr', progress=False)\n"
                 "theta = truth_parameters(world, kind='cue').to_dataset(name='theta')\n"
                 "xproda.io.write_zarr(theta.chunk({'lat': 12, 'lon': 24}), root + "
                 "'/params.zarr', progress=False)\n"
                 "forcing = xproda.io.open_dataset(root + '/forcing.zarr')  # lazy\n"
                 "params = xproda.io.open_dataset(root + '/params.zarr')"),
        ("md", "The inputs are stores on disk (built above without a cluster). Now the "
               "cluster: workers get xproda's allocator settings and one thread each."),
        ("code", "from distributed import Client\n"
                 "from xproda.options import local_cluster\n\n"
                 "cluster = local_cluster(2)\n"
                 "client = Client(cluster)\n"
                 "client.dashboard_link"),
        ("code", "out = forcing.proda.steady_state(params['theta'])\n"
                 "report = out.proda.write_zarr(root + '/result.zarr')\n"
                 "report"),
        ("code", "res = xproda.io.open_dataset(root + '/result.zarr')\n"
                 "float(res.proda.global_total(depth=(0, 1)))"),
        ("code", "client.close()\ncluster.close()"),
    ],
    "03_climate_and_attribution.ipynb": [
        ("md", "# Climate change and attribution\n\n"
               "Warming with heterogeneous (mapped) and homogeneous (one set everywhere) "
               "parameters, and which process groups control the global stock."),
        ("code", "import numpy as np\n"
                 "import xarray as xr\n"
                 "import xproda\n"
                 "from xproda.datasets import synthetic_world, truth_parameters\n"
                 "from xproda.xr import scenarios as sc\n\n"
                 "world = synthetic_world(15.0)\n"
                 "theta = truth_parameters(world, kind='cue')\n"
                 "uniform = theta.mean(('lat', 'lon'))  # one parameter set everywhere"),
        ("code", "clim = world[[k for k in world.data_vars if 'month' in world[k].dims\n"
                 "               or k in ('nbedrock', 'CELLSAND')]]\n"
                 "scen = sc.warming(sc.repeat_climatology(clim, years=10), 4.0)\n"
                 "het = scen.proda.simulate(theta, time_chunk=60)\n"
                 "hom = scen.proda.simulate(uniform, time_chunk=60)"),
        ("code", "def change(sim):\n"
                 "    s = sim['soc_stock']\n"
                 "    return float((s.isel(time=-1) - s.isel(time=0)).mean())\n\n"
                 "print('soc_stock units:', het['soc_stock'].attrs['units'])\n"
                 "{'heterogeneous': change(het), 'homogeneous': change(hom)}  # mean change"),
        ("code", "import matplotlib.pyplot as plt\n\n"
                 "fig, ax = plt.subplots()\n"
                 "for name, sim in (('heterogeneous', het), ('homogeneous', hom)):\n"
                 "    s = sim['soc_stock'].mean(('lat', 'lon'))\n"
                 "    ax.plot(np.arange(s.sizes['time']) / 12, s - s.isel(time=0), label=name)\n"
                 "ax.set_xlabel('years of warming')\n"
                 "ax.set_ylabel(f\"mean SOC change ({het['soc_stock'].attrs['units']})\")\n"
                 "ax.legend();"),
        ("code", "sens = world.proda.sensitivity(theta)\n"
                 "sens"),
        ("md", "Component control: how much of the spatial variation of the stock each "
               "component (input, environment, transport, ...) explains."),
        ("code", "control = world.proda.component_control(theta)\n"
                 "control"),
    ],
    "04_real_profiles.ipynb": [
        ("md", "# Real soil profiles: tables, cleaning, training, held-out skill\n\n"
               "The ISRIC world reference profiles (ISIS; GSIF tables) converted and cleaned with "
               "a report, covariates and CLM5 forcing from the WorldClim climate grid, then "
               "spatially blocked cross-validation of the CLM5 defaults, end-to-end "
               "training and a gradient-boosting baseline. The data are those of "
               "`../shared/data` beside a checkout (see `examples/real_profiles.py` for the "
               "whole study)."),
        ("code", "from pathlib import Path\n"
                 "import numpy as np\n"
                 "import xarray as xr\n"
                 "import xproda\n"
                 "from xproda.sites.observations import clean_profiles, from_gsif\n\n"
                 "DATA = Path(xproda.__file__).resolve().parents[2] / 'shared' / 'data'\n"
                 "sites, horizons = (DATA / 'profiles' / f'gsif_isis_{t}.csv'\n"
                 "                   for t in ('sites', 'horizons'))\n"
                 "table, converted = from_gsif(sites, horizons)\n"
                 "clean, cleaning = clean_profiles(table)\n"
                 "converted + cleaning  # what went, and why"),
        ("code", "clean.head()"),
        ("code", "from xproda.climate import from_climate\n\n"
                 "with xr.open_dataset(DATA / 'covariates' / 'worldclim_bio_coarse.nc') as src:\n"
                 "    clim = src[['bio3', 'bio4', 'bio7', 'bio11', 'bio12']].sel(\n"
                 "        period='current', drop=True).load()\n"
                 "out = from_climate(clim, temperature_scale=10, include_climate=True)\n"
                 "forcing = out.drop_vars(['tas', 'pr', 'pet'])\n"
                 "covariates = clim.assign(maat=out['tas'].mean('month'))\n"
                 "covariates.proda"),
        ("code", "from xproda.learning.training import cross_validate, prepare_training_data\n\n"
                 "data = prepare_training_data(covariates, clean, forcing=forcing,\n"
                 "                             features=list(covariates.data_vars))\n"
                 "print(len(data), 'profiles at sites with covariates and forcing;',\n"
                 "      len(data.dropped), 'dropped')\n"
                 "table, pred = cross_validate(\n"
                 "    data, methods=['default', 'end_to_end', 'gbm'], n_folds=2, split='blocked',\n"
                 "    block_size=10, seed=0, progress=False,\n"
                 "    train_options=dict(epochs=20, hidden=(32, 32), progress=False))\n"
                 "table"),
        ("md", "Held-out skill is low with five coarse climate covariates (a 3.3° grid, no "
               "soil properties): see the real-profiles guide for the whole study, and issue "
               "21 for site properties and finer grids."),
    ],
}


def build() -> dict[Path, nbformat.NotebookNode]:
    """The notebooks (sources only), by path."""
    out = {}
    for name, cells in NOTEBOOKS.items():
        nb = new_notebook()
        nb.cells = [new_markdown_cell(src) if kind == "md" else new_code_cell(src)
                    for kind, src in cells]
        nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                     "language": "python"}
        nbformat.validate(nb)
        out[HERE / name] = nb
    return out


def execute(path: Path, timeout: int = 600) -> nbformat.NotebookNode:
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    return nb


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--write", action="store_true", help="write the sources (no outputs)")
    ap.add_argument("--execute", action="store_true", help="write, execute, store outputs")
    args = ap.parse_args()
    for path, nb in build().items():
        if args.write or args.execute:
            nbformat.write(nb, path)
        if args.execute:
            nbformat.write(execute(path), path)
        stale = path.exists() and [c.source for c in nbformat.read(path, as_version=4).cells] \
            != [c.source for c in nb.cells]
        print(path, "(differs from the cells here: rerun with --execute)" if stale else "")


if __name__ == "__main__":
    main()
