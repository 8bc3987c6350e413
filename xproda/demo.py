"""The xproda demo: a complete PRODA run on the embedded synthetic world, end to end.

:func:`run_demo` (and ``xproda demo`` on the command line) runs the whole pipeline on the
synthetic "twin" world of :mod:`xproda.datasets`, whose true parameters are known, so every
step can be checked against the truth:

1. **World.** Build the synthetic world (covariates and CLM5-style forcing) and its truth
   parameters (``kind="cue"``: carbon-use-efficiency-like parameters drive SOC), and write the
   world as a Zarr store (``world.zarr``).
2. **Profiles.** Simulate soil profiles at the truth (10 % log-normal noise) and split them
   into training and held-out sites by whole 10° blocks (spatially independent test sites).
3. **Training.** Train a parameter network end to end through the differentiable CLM5 model
   on the training profiles (:func:`xproda.learning.training.train_network`) and save it
   (``network.safetensors``).
4. **Global run.** Reopen the world lazily from Zarr, predict the parameters of every land
   cell with the network and run the steady state, both lazily
   (``ds.proda.predict_parameters``, ``ds.proda.steady_state``), and write the results
   region by region to ``results.zarr`` (:func:`xproda.io.write_zarr`).
5. **Evaluation.** Global SOC stocks by depth (predicted and truth), turnover time, skill on
   the held-out profiles and recovery of the truth parameters; ``summary.json`` and
   ``summary.md``.
6. **Figures** (PNG, ``figures/``): parameter maps (network vs truth), SOC stock maps,
   turnover time, observed vs predicted SOC on the held-out profiles, depth profiles and the
   training loss curve.

The defaults take about 2-3 minutes on a 2-core CPU at 2° (measured figures in
``docs/user-guide/demo.md``).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from collections.abc import Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np

__all__ = ["run_demo", "summary_markdown", "DEMO_DEFAULTS", "DEPTHS", "STOCK_VARIABLES",
           "FIGURES"]

#: Defaults of :func:`run_demo` (and ``xproda demo``).
DEMO_DEFAULTS: dict[str, Any] = {
    "resolution": 2.0, "n_sites": 1200, "epochs": 60, "hidden": (64, 64), "lr": 3e-3,
    "held_out": 0.2, "noise": 0.1, "seed": 0,
}
#: Depth intervals of the reported stocks: name -> (top, bottom) in m (0-8.6 m: the whole
#: model column).
DEPTHS: dict[str, tuple[float, float]] = {
    "0-30cm": (0.0, 0.3), "0-100cm": (0.0, 1.0), "0-8.6m": (0.0, 8.6),
}
#: Result variable of each depth interval of :data:`DEPTHS` (kg C m-2).
STOCK_VARIABLES: dict[str, str] = {
    "0-30cm": "soc_stock_0_30cm", "0-100cm": "soc_stock_0_100cm", "0-8.6m": "soc_stock",
}
#: Figure files written under ``<out>/figures``.
FIGURES: tuple[str, ...] = (
    "parameters.png", "soc_stock.png", "turnover_time.png", "observed_vs_predicted.png",
    "depth_profiles.png", "loss_curve.png",
)
_MODEL = "clm5"
_MAPPING = "layer_mean"  # how the synthetic profiles were observed (bulk layer samples)
_CHUNKS = {"lat": 45, "lon": 90}  # 2 deg: 4 regions; finer grids: more, same size


def _chunks(resolution: float) -> dict[str, int]:
    scale = max(1, int(round(2.0 / float(resolution))))
    return {k: v * scale for k, v in _CHUNKS.items()}


@contextmanager
def _stage(timings: dict[str, float], name: str, progress: bool) -> Iterator[None]:
    if progress:
        print(f"[xproda demo] {name} ...", flush=True)
    t0 = time.perf_counter()
    yield
    timings[name] = round(time.perf_counter() - t0, 2)
    if progress:
        print(f"[xproda demo] {name}: {timings[name]:.1f} s", flush=True)


def _r2(pred: np.ndarray, true: np.ndarray) -> float:
    ok = np.isfinite(pred) & np.isfinite(true)
    p, t = pred[ok], true[ok]
    sst = float(((t - t.mean()) ** 2).sum())
    return 1.0 - float(((p - t) ** 2).sum()) / sst if sst > 0 else float("nan")


def _site_soc(model: Any, theta: np.ndarray, forcing: dict) -> np.ndarray:
    """Steady-state SOC per model layer ``[S, 20]`` (g C m-3) at the sites."""
    return np.asarray(model.steady_state(theta, forcing)["soc"], dtype=float)


def _soc_at_layers(soc: np.ndarray, batch: Any) -> np.ndarray:
    """Model layers ``[S, 20]`` -> observed layers ``[S, D]`` (thickness-weighted means)."""
    import torch

    from xproda.models.interp import ModelToObs

    m2o = ModelToObs(np.where(batch.mask, batch.depth, np.nan), method=_MAPPING,
                     top=np.where(batch.mask, batch.top, 0.0),
                     bottom=np.where(batch.mask, batch.bottom, 0.1))
    out = m2o(torch.as_tensor(soc, dtype=torch.float64)).numpy()
    return np.where(batch.mask, out, np.nan)


def run_demo(
    out: str | os.PathLike,
    *,
    resolution: float = DEMO_DEFAULTS["resolution"],
    n_sites: int = DEMO_DEFAULTS["n_sites"],
    epochs: int = DEMO_DEFAULTS["epochs"],
    hidden: Sequence[int] = DEMO_DEFAULTS["hidden"],
    lr: float = DEMO_DEFAULTS["lr"],
    held_out: float = DEMO_DEFAULTS["held_out"],
    noise: float = DEMO_DEFAULTS["noise"],
    seed: int = DEMO_DEFAULTS["seed"],
    figures: bool = True,
    overwrite: bool = True,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Run the full demo pipeline on the synthetic world and write its outputs to ``out``.

    Parameters
    ----------
    out : str or path-like
        Output directory (created). It receives ``world.zarr``, ``results.zarr``,
        ``network.safetensors``, ``profiles.csv``, ``summary.json``, ``summary.md`` and
        (with ``figures``) ``figures/*.png`` (:data:`FIGURES`).
    resolution : float, default 2.0
        Grid spacing in degrees (2° = 90 x 180 cells, ~3,600 soil columns).
    n_sites : int, default 1200
        Simulated soil profiles (training and held-out together).
    epochs : int, default 60
        Maximum training epochs (early stopping on a random 10 % validation split of the
        training sites).
    hidden : sequence of int, default (64, 64)
        Hidden layer widths of the parameter network (the spec's network is
        256-512-512-256; a small one learns the synthetic world as well and is faster).
    lr : float, default 3e-3
        Adam learning rate.
    held_out : float, default 0.2
        Share of profiles held out for testing, as whole 10° x 10° blocks.
    noise : float, default 0.1
        Observation noise: sd of log(observed / true SOC).
    seed : int, default 0
        Seeds the world, the truth, the profiles, the split and the training.
    figures : bool, default True
        Write the PNG figures (needs matplotlib, the ``plot`` extra).
    overwrite : bool, default True
        Replace the demo outputs already in ``out`` (other files are left alone). With
        False, existing Zarr stores raise :class:`FileExistsError`.
    progress : bool or None, default None
        Print the stages and show progress bars (tqdm); None: the option ``progress``
        (:func:`xproda.set_options`).

    Returns
    -------
    dict
        The summary (also in ``summary.json``): ``settings``; ``global_soc_pg`` (predicted
        and truth, Pg C, per depth interval of :data:`DEPTHS`); ``turnover_time_yr``
        (global SOC / global litter input, and the land-area-weighted mean of the cell
        values, predicted and truth); ``held_out`` (skill on held-out profiles:
        :func:`xproda.learning.crossval.skill_scores` of SOC density in g C m-3, ``n_sites``);
        ``parameter_recovery`` (R^2 of predicted vs true normalised parameters over the land
        cells, for each CUE-like parameter, their mean, and the mean over all parameters);
        ``stock_map_r2`` (R^2 of the predicted vs true 0-1 m stock over land, log values);
        ``training`` (epochs run, best epoch, validation skill, profiles/s); ``timings_s``
        (wall seconds per stage and in total); ``outputs`` (paths relative to ``out``).

    Raises
    ------
    ValueError
        For an invalid resolution, site count, epoch count or held-out share.
    ImportError
        If ``figures`` is True and matplotlib is not installed.
    """
    from xproda import conventions, io, spatial
    from xproda.learning import crossval
    from xproda.xr import api as xr_api
    from xproda.datasets import (
        CUE_PARAMETERS,
        profile_sites,
        synthetic_profiles,
        synthetic_world,
        truth_parameters,
    )
    from xproda.models import get_model
    from xproda.learning.network import save_network
    from xproda.learning.training import prepare_training_data, train_network

    from xproda.options import show_progress

    progress = show_progress(progress)
    if not (0.25 <= float(resolution) <= 30):
        raise ValueError(f"resolution must be between 0.25 and 30 degrees, got {resolution}")
    if int(n_sites) < 20:
        raise ValueError(f"n_sites must be >= 20 (training and held-out sites), got {n_sites}")
    if int(epochs) < 1:
        raise ValueError(f"epochs must be >= 1, got {epochs}")
    if not 0.0 < float(held_out) < 0.9:
        raise ValueError(f"held_out must be in (0, 0.9), got {held_out}")
    if figures:
        from xproda.plotting import pyplot

        pyplot()  # fail before the long stages if matplotlib is missing

    t_all = time.perf_counter()
    outdir = Path(out)
    outdir.mkdir(parents=True, exist_ok=True)
    paths = {"world": outdir / "world.zarr", "results": outdir / "results.zarr",
             "network": outdir / "network.safetensors", "profiles": outdir / "profiles.csv",
             "summary_json": outdir / "summary.json", "summary_md": outdir / "summary.md"}
    if overwrite:
        for key in ("world", "results"):
            if paths[key].exists():
                shutil.rmtree(paths[key])
    model = get_model(_MODEL)
    timings: dict[str, float] = {}
    chunks = _chunks(resolution)

    # 1. world ---------------------------------------------------------------------------
    with _stage(timings, "build world", progress):
        world = synthetic_world(float(resolution), seed=int(seed))
        truth = truth_parameters(world, model=_MODEL, kind="cue", seed=int(seed))
    with _stage(timings, "write world.zarr", progress):
        io.write_zarr(world.chunk({k: v for k, v in chunks.items() if k in world.dims}),
                      str(paths["world"]), progress=progress,
                      attrs={"title": "xproda synthetic world", "seed": int(seed),
                             "resolution_deg": float(resolution)})

    # 2. profiles ------------------------------------------------------------------------
    with _stage(timings, "simulate profiles", progress):
        profiles = synthetic_profiles(world, n_sites=int(n_sites), truth=truth,
                                      noise=float(noise), seed=int(seed), model=_MODEL)
        sites = profile_sites(profiles)
        tr_idx, te_idx = crossval.split_sites(sites["lat"].values, sites["lon"].values,
                                              fraction=float(held_out), method="blocked",
                                              block_size=10.0, seed=int(seed))
        test_ids = set(sites.index[te_idx])
        profiles["split"] = np.where(profiles["profile_id"].isin(test_ids), "held_out", "train")
        profiles.to_csv(paths["profiles"], index=False)
        train_obs = profiles[profiles["split"] == "train"].drop(columns="split")
        test_obs = profiles[profiles["split"] == "held_out"].drop(columns="split")

    # 3. training ------------------------------------------------------------------------
    with _stage(timings, "train network (end to end)", progress):
        net, report = train_network(
            world, train_obs, model=model, method="end_to_end", hidden=tuple(hidden),
            epochs=int(epochs), lr=float(lr), patience=15, mapping=_MAPPING, seed=int(seed),
            progress=progress)
        save_network(net, paths["network"])
        report.history.to_csv(outdir / "training_history.csv", index=False)

    # 4. global run (lazy, from the Zarr store) -------------------------------------------
    with _stage(timings, "predict parameters + steady state -> results.zarr", progress):
        lazy = io.open_dataset(str(paths["world"]))
        theta = lazy.proda.predict_parameters(net)          # lazy (lat, lon, parameter)
        res = lazy.proda.steady_state(theta, model=model)    # lazy soc, soc_stock, ...
        for name, (top, bottom) in DEPTHS.items():
            if STOCK_VARIABLES[name] != "soc_stock":  # the whole column is already there
                res[STOCK_VARIABLES[name]] = xr_api.soc_stock(res, depth=(top, bottom))
        res["theta"] = theta
        res["theta_truth"] = truth.chunk({k: v for k, v in chunks.items() if k in truth.dims})
        res["theta_truth"].attrs = conventions.attrs(
            "theta_truth", section="demo", description=truth.attrs.get("description"))
        res["landmask"] = lazy["landmask"]
        # variable-length strings: Zarr v3 has no stable fixed-length string type
        res = res.assign_coords(parameter=np.asarray(theta["parameter"].values, dtype=object))
        mask = lazy["landmask"].fillna(0).astype(bool)
        report_w = io.write_zarr(res, str(paths["results"]), mask=mask, progress=progress,
                                 attrs={"demo_seed": int(seed),
                                        "network_hash": net.content_hash})

    # 5. evaluation ------------------------------------------------------------------------
    with _stage(timings, "evaluate", progress):
        res = io.open_dataset(str(paths["results"])).load()
        truth_run = world.proda.steady_state(truth, model=model)
        land = world["landmask"].values == 1
        glob = {"predicted": {}, "truth": {}}
        for name, (top, bottom) in DEPTHS.items():
            # no land-fraction weighting: every soil-column cell counts fully, as in the
            # synthetic-world tables (docs/user-guide/synthetic-world.md)
            glob["predicted"][name] = float(xr_api.global_total(res[STOCK_VARIABLES[name]],
                                                                land_fraction=None))
            glob["truth"][name] = float(xr_api.global_total(truth_run, depth=(top, bottom),
                                                            land_fraction=None))
        area = spatial.cell_area(world)
        tau = {}
        for key, ds, stock in (("predicted", res, res["soc_stock"]),
                               ("truth", truth_run, truth_run["soc_stock"])):
            inp = float((ds["input"] * area).sum()) / 1e15            # Pg C yr-1
            tot = float(xr_api.global_total(stock, land_fraction=None))
            tt = ds["turnover_time"].where(land)
            tau[key] = {"global_stock_over_input": tot / inp,
                        "area_weighted_mean": float(tt.weighted(area.fillna(0)).mean())}
        names = [str(p) for p in res["parameter"].values]
        cue = [p for p in CUE_PARAMETERS[_MODEL] if p in names]
        rec, corr, rmse = {}, {}, {}
        for p in names:
            a = res["theta"].sel(parameter=p).values[land]
            b = truth.sel(parameter=p).values[land]
            rec[p], rmse[p] = _r2(a, b), float(np.sqrt(np.nanmean((a - b) ** 2)))
            corr[p] = float(np.corrcoef(a, b)[0, 1]) if np.std(a) > 0 else float("nan")
        recovery = {"cue_parameters": {p: rec[p] for p in cue},
                    "cue_mean_r2": float(np.mean([rec[p] for p in cue])),
                    "cue_correlation": {p: corr[p] for p in cue},
                    "r2": rec, "correlation": corr, "rmse_normalised": rmse,
                    "mean_rmse_normalised": float(np.mean(list(rmse.values())))}
        s_pred = res["soc_stock_0_100cm"].values[land]
        s_true = xr_api.soc_stock(truth_run, depth=(0, 1)).values[land]
        stock_r2 = _r2(np.log(s_pred), np.log(s_true))
        # held-out profiles (sites never seen in training, whole 10-degree blocks)
        data_te = prepare_training_data(world, test_obs, model=model, features=net.feature_names)
        th_te = net.predict(data_te.x)
        th_true = truth.proda.sample_sites(lat=data_te.batch.lat, lon=data_te.batch.lon)
        th_true = th_true.transpose(..., "parameter").values.reshape(len(data_te), -1)
        soc_net = _site_soc(model, th_te, data_te.forcing)
        soc_truth = _site_soc(model, th_true, data_te.forcing)
        mod_obs = _soc_at_layers(soc_net, data_te.batch)
        obs = np.where(data_te.batch.mask, data_te.batch.soc, np.nan)
        skill = crossval.skill_scores(mod_obs, obs, mask=data_te.batch.mask)
        skill_truth = crossval.skill_scores(_soc_at_layers(soc_truth, data_te.batch), obs,
                                            mask=data_te.batch.mask)
        h = report.history
        summary: dict[str, Any] = {
            "settings": {"resolution_deg": float(resolution), "n_sites": int(n_sites),
                         "n_train_sites": int(len(tr_idx)), "n_held_out_sites": int(len(te_idx)),
                         "epochs": int(epochs), "hidden": list(hidden), "lr": float(lr),
                         "noise": float(noise), "seed": int(seed), "model": _MODEL,
                         "truth_kind": "cue", "mapping": _MAPPING,
                         "soil_columns": int(land.sum()), "torch_threads": _threads()},
            "global_soc_pg": glob,
            "turnover_time_yr": tau,
            "held_out": {"n_sites": int(len(data_te)), **skill,
                         "truth_parameters": {"r2": skill_truth["r2"],
                                              "r2_log": skill_truth["r2_log"]}},
            "parameter_recovery": recovery,
            "stock_map_r2_log_0_100cm": stock_r2,
            "training": {"epochs_run": int(len(h)), "best_epoch": int(report.best_epoch[0]),
                         "stopped_early": bool(report.stopped_early[0]),
                         "final_train_loss": float(h["train_loss"].iloc[-1]),
                         "best_val_loss": float(h["val_loss"].min()),
                         "validation_skill": report.skill,
                         "profiles_per_second": float(report.profiles_per_second),
                         "seconds": float(report.wall_seconds)},
            "zarr_regions_written": int(report_w.written),
        }

    # 6. figures ---------------------------------------------------------------------------
    if figures:
        with _stage(timings, "figures", progress):
            _figures(outdir / "figures", res=res, truth=truth, truth_run=truth_run, world=world,
                     model=model, cue=cue, recovery=rec, report=report, test_obs=test_obs,
                     data_te=data_te, mod_obs=mod_obs, obs=obs, soc_net=soc_net,
                     soc_truth=soc_truth, glob=glob, noise=float(noise))

    timings["total"] = round(time.perf_counter() - t_all, 2)
    summary["timings_s"] = timings
    outputs = [p.name for k, p in paths.items()] + ["training_history.csv"]
    if figures:
        outputs += [f"figures/{f}" for f in FIGURES]
    summary["outputs"] = outputs
    paths["summary_json"].write_text(json.dumps(_jsonable(summary), indent=2) + "\n")
    md = summary_markdown(summary)
    paths["summary_md"].write_text(md)
    if progress:
        print(md, flush=True)
    return summary


def _threads() -> int:
    import torch

    return int(torch.get_num_threads())


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, (np.floating, float)):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def summary_markdown(summary: dict[str, Any]) -> str:
    """The demo summary as a short Markdown report.

    Parameters
    ----------
    summary : dict
        As returned by :func:`run_demo`.

    Returns
    -------
    str
    """
    s, g = summary["settings"], summary["global_soc_pg"]
    tau, ho = summary["turnover_time_yr"], summary["held_out"]
    rec = summary["parameter_recovery"]
    lines = [
        "# xproda demo summary", "",
        f"Synthetic world at {s['resolution_deg']:g}° ({s['soil_columns']:,} soil columns), "
        f"CLM5 model, truth kind `cue`, seed {s['seed']}. {s['n_sites']:,} simulated profiles "
        f"(noise {s['noise']:g}): {s['n_train_sites']:,} for training, "
        f"{s['n_held_out_sites']:,} held out in whole 10° blocks.", "",
        "## Global SOC stock (Pg C)", "",
        "| depth | predicted | truth |", "|---|---|---|",
    ]
    for name in DEPTHS:
        lines.append(f"| {name} | {g['predicted'][name]:,.0f} | {g['truth'][name]:,.0f} |")
    lines += [
        "", "## Turnover time (yr)", "",
        "| | predicted | truth |", "|---|---|---|",
        f"| global stock / global input | {tau['predicted']['global_stock_over_input']:,.0f} "
        f"| {tau['truth']['global_stock_over_input']:,.0f} |",
        f"| land-area-weighted mean | {tau['predicted']['area_weighted_mean']:,.0f} "
        f"| {tau['truth']['area_weighted_mean']:,.0f} |",
        "", "## Skill", "",
        f"- Held-out profiles ({ho['n_sites']} sites, {int(ho['n'])} layers): "
        f"R² = {ho['r2']:.3f}, R² of log SOC = {ho['r2_log']:.3f}, "
        f"RMSE = {ho['rmse']:,.0f} g C m⁻³ (truth parameters with the same noise: "
        f"R² = {ho['truth_parameters']['r2']:.3f}).",
        f"- Parameter recovery over land (R² of predicted vs true normalised parameters): "
        f"CUE-like mean {rec['cue_mean_r2']:.2f} ("
        + ", ".join(f"{k} {v:.2f}" for k, v in rec["cue_parameters"].items())
        + "); correlation "
        + ", ".join(f"{k} {v:.2f}" for k, v in rec["cue_correlation"].items())
        + f". RMSE of all {len(rec['r2'])} normalised parameters (0-1 scale): mean "
        f"{rec['mean_rmse_normalised']:.3f}.",
        f"- 0-100 cm stock map vs truth over land: R² (log) = "
        f"{summary['stock_map_r2_log_0_100cm']:.3f}.",
        "", "## Timings (s)", "", "| stage | seconds |", "|---|---|",
    ]
    for k, v in summary.get("timings_s", {}).items():
        lines.append(f"| {k} | {v:.1f} |")
    return "\n".join(lines) + "\n"


def _figures(figdir: Path, *, res, truth, truth_run, world, model, cue, recovery, report,
             test_obs, data_te, mod_obs, obs, soc_net, soc_truth, glob, noise) -> None:
    """Write the demo figures (see :data:`FIGURES`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import xarray as xr

    from xproda import plotting
    from xproda.xr import api as xr_api

    figdir.mkdir(parents=True, exist_ok=True)
    land = world["landmask"] == 1

    # parameters: the best and the worst recovered CUE-like parameter and one other, in
    # physical units, network vs truth
    space = model.parameters
    cue_sorted = sorted(cue, key=lambda p: -recovery[p])
    others = [p for p in space.names if p not in cue]
    shown = [cue_sorted[0], cue_sorted[-1], max(others, key=lambda p: recovery[p])]
    fig, axes = plt.subplots(len(shown), 2, figsize=(13, 3.3 * len(shown)),
                             layout="constrained")
    for row, p in enumerate(shown):
        par = space[p]
        pred = xr.apply_ufunc(par.to_physical, res["theta"].sel(parameter=p))
        true = xr.apply_ufunc(par.to_physical, truth.sel(parameter=p).where(land))
        vals = np.concatenate([pred.values[np.isfinite(pred.values)],
                               true.values[np.isfinite(true.values)]])
        vmin, vmax = np.percentile(vals, [2, 98])
        kind = "CUE-like " if p in cue else ""
        ok = np.isfinite(pred.values) & np.isfinite(true.values)
        r = float(np.corrcoef(pred.values[ok], true.values[ok])[0, 1])
        skill = f", R² = {recovery[p]:.2f}, r = {r:.2f}"
        if recovery[p] < 0:  # the map follows the truth's pattern but not its level/scale
            skill += "\n(R² < 0: further from the truth than its mean map is; r: the pattern)"
        for col, (da, who) in enumerate(((pred, "network"), (true, "truth"))):
            name = re.sub(r"\s*\([^)]*\)$", "", par.description).replace("->", "→")
            da = da.assign_attrs(long_name=name, units=par.units)
            plotting.map_plot(da, ax=axes[row, col], vmin=vmin, vmax=vmax, cmap="viridis",
                              title=f"{kind}parameter {p} ({who})"
                                    + (skill if col == 0 else ""))
    fig.suptitle("Parameters predicted by the network vs the truth (physical values)")
    fig.savefig(figdir / "parameters.png", dpi=110)
    plt.close(fig)

    # SOC stocks: the network's map and its relative difference to the truth's, per depth
    fig, axes = plt.subplots(3, 2, figsize=(16, 12), layout="constrained")
    for row, (name, (top, bottom)) in enumerate(DEPTHS.items()):
        label = (f"{top * 100:g}-{bottom * 100:g} cm" if bottom <= 1 else
                 f"{top:g}-{bottom:g} m (whole column)")
        da = res[STOCK_VARIABLES[name]].assign_attrs(long_name=f"SOC stock {label}")
        plotting.map_plot(da, ax=axes[row, 0], log=True, cmap="YlOrBr", units="kg C m-2",
                          title=f"SOC stock {label}: "
                                f"{glob['predicted'][name]:,.0f} Pg C "
                                f"(truth {glob['truth'][name]:,.0f})")
        ref = xr_api.soc_stock(truth_run, depth=(top, bottom)) if bottom <= 1 else \
            truth_run["soc_stock"]
        plotting.difference_map(da, ref.where(land).assign_attrs(da.attrs), relative=True,
                                ax=axes[row, 1],
                                title=f"SOC stock {label}: (network - truth) / truth")
    fig.savefig(figdir / "soc_stock.png", dpi=110)
    plt.close(fig)

    # turnover time: network, truth and their relative difference, on one colour scale
    fig, axes = plt.subplots(3, 1, figsize=(8.5, 12.5), layout="constrained")
    tt = res["turnover_time"].assign_attrs(long_name="SOC turnover time")
    tt_true = truth_run["turnover_time"].where(land).assign_attrs(tt.attrs)
    both = np.concatenate([v[np.isfinite(v) & (v > 0)] for v in (tt.values, tt_true.values)])
    lo, hi = np.percentile(both, [2, 98])
    for ax, (da, who) in zip(axes, ((tt, "network"), (tt_true, "truth"))):
        plotting.map_plot(da, ax=ax, log=True, cmap="viridis", vmin=lo, vmax=hi,
                          title=f"SOC turnover time (0-8.6 m stock / litter input), {who}")
    plotting.difference_map(tt, tt_true, relative=True, ax=axes[2],
                            title="SOC turnover time: (network - truth) / truth")
    fig.savefig(figdir / "turnover_time.png", dpi=110)
    plt.close(fig)

    # held-out skill
    fig, ax = plt.subplots(figsize=(5.5, 5.5), layout="constrained")
    plotting.predicted_vs_observed(mod_obs, obs, ax=ax, log=True, units="g C m-3",
                                   title=f"Held-out profiles ({len(data_te)} sites)")
    fig.savefig(figdir / "observed_vs_predicted.png", dpi=110)
    plt.close(fig)

    # depth profiles of a few held-out sites
    ids = [str(s) for s in data_te.batch.site_ids]
    layer = np.arange(soc_net.shape[1])
    modelled = {
        "network": xr.DataArray(soc_net, dims=("site", "layer"),
                                coords={"site": ids, "layer": layer}),
        "truth parameters": xr.DataArray(soc_truth, dims=("site", "layer"),
                                         coords={"site": ids, "layer": layer}),
    }
    # four sites spread over the range of surface SOC
    order = np.argsort(np.nan_to_num(obs[:, 0], nan=np.inf))
    pick = [ids[order[int(q * (len(order) - 1))]] for q in (0.1, 0.4, 0.7, 0.95)]
    axes = plotting.depth_profile(test_obs, modelled, sites=list(dict.fromkeys(pick)))
    axes[0].figure.suptitle("Held-out profiles: observed layers vs modelled SOC")
    axes[0].figure.savefig(figdir / "depth_profiles.png", dpi=110)
    plt.close(axes[0].figure)

    # loss
    fig, ax = plt.subplots(figsize=(6, 4), layout="constrained")
    plotting.loss_curve(report, ax=ax)
    if noise > 0 and report.settings.get("loss") == "log":
        ax.axhline(noise ** 2, color="grey", lw=1, ls=":",
                   label=f"noise floor (σ² = {noise ** 2:.3g})")
        ax.legend(fontsize="small")
    ax.set_title("End-to-end training of the parameter network")
    fig.savefig(figdir / "loss_curve.png", dpi=110)
    plt.close(fig)
