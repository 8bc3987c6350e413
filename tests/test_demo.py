"""The demo pipeline (xproda.demo / ``xproda demo``) and the plotting helpers."""

from __future__ import annotations

import json
import math

import matplotlib
import numpy as np
import pandas as pd
import pytest
import xarray as xr

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from xproda import cli, io, plotting  # noqa: E402
from xproda.demo import (  # noqa: E402
    DEPTHS, FIGURES, STOCK_VARIABLES, run_demo, summary_markdown,
)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    summary = run_demo(out, resolution=10.0, n_sites=80, epochs=3, seed=1, progress=False)
    return out, summary


def _finite_numbers(obj, path=""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _finite_numbers(v, f"{path}.{k}")
    elif isinstance(obj, (int, float)) and not isinstance(obj, bool):
        yield path, obj


def test_demo_writes_every_output(demo):
    out, summary = demo
    for name in ("world.zarr", "results.zarr", "network.safetensors", "profiles.csv",
                 "summary.json", "summary.md", "training_history.csv"):
        assert (out / name).exists(), name
    for name in FIGURES:
        png = out / "figures" / name
        assert png.exists() and png.stat().st_size > 10_000, name
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    world = io.open_dataset(str(out / "world.zarr"))
    assert {"TSOI", "bio1", "landmask"} <= set(world.data_vars)
    res = io.open_dataset(str(out / "results.zarr"))
    for name in DEPTHS:
        v = res[STOCK_VARIABLES[name]]
        assert v.attrs["units"] == "kg m-2"
        assert np.isfinite(v.values[world["landmask"].values == 1]).all()
    assert res["theta"].dims[-1] == "parameter" and "theta_truth" in res
    prof = pd.read_csv(out / "profiles.csv")
    assert set(prof["split"]) == {"train", "held_out"}


def test_demo_summary_keys_and_finite_numbers(demo):
    out, summary = demo
    on_disk = json.loads((out / "summary.json").read_text())
    for key in ("settings", "global_soc_pg", "turnover_time_yr", "held_out",
                "parameter_recovery", "stock_map_r2_log_0_100cm", "training", "timings_s",
                "outputs"):
        assert key in on_disk, key
    for who in ("predicted", "truth"):
        assert set(on_disk["global_soc_pg"][who]) == set(DEPTHS)
        g = on_disk["global_soc_pg"][who]
        assert 0 < g["0-30cm"] < g["0-100cm"] < g["0-8.6m"]
    # truth at 10 degrees: of the order of the 2-degree world's 1,900 Pg C in 0-1 m
    assert 800 < on_disk["global_soc_pg"]["truth"]["0-100cm"] < 3000
    for key in ("r2", "r2_log", "rmse", "n"):
        assert math.isfinite(on_disk["held_out"][key])
    assert on_disk["parameter_recovery"]["cue_parameters"]
    nums = dict(_finite_numbers(on_disk))
    bad = [k for k, v in nums.items() if not math.isfinite(v)]
    assert not bad
    assert on_disk["timings_s"]["total"] > 0
    md = (out / "summary.md").read_text()
    assert md == summary_markdown(summary) and "Pg C" in md


def test_demo_rejects_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="n_sites"):
        run_demo(tmp_path, n_sites=5, progress=False)
    with pytest.raises(ValueError, match="held_out"):
        run_demo(tmp_path, held_out=1.5, progress=False)


def test_cli_demo_help(capsys):
    with pytest.raises(SystemExit) as err:
        cli.main(["demo", "--help"])
    assert err.value.code == 0
    text = capsys.readouterr().out
    for opt in ("--resolution", "--out", "--n-sites", "--epochs", "--seed", "--no-figures"):
        assert opt in text


# ---------------------------------------------------------------------------------------
# plotting
# ---------------------------------------------------------------------------------------
def _field():
    lat = np.arange(85.0, -90.0, -10.0)
    lon = np.arange(-175.0, 180.0, 10.0)
    v = np.outer(np.cos(np.deg2rad(lat)), np.ones(lon.size)) * 10 + 1
    v[:, :5] = np.nan  # "ocean"
    return xr.DataArray(v, dims=("lat", "lon"), coords={"lat": lat, "lon": lon},
                        name="soc_stock",
                        attrs={"long_name": "soil organic carbon stock", "units": "kg m-2"})


def test_map_plot_labels_and_colour_bar():
    ax = plotting.map_plot(_field(), log=True)
    try:
        assert "longitude" in ax.get_xlabel() and "latitude" in ax.get_ylabel()
        cb = ax.collections[0].colorbar
        assert "soil organic carbon stock" in cb.ax.get_ylabel()
        assert "kg m⁻²" in cb.ax.get_ylabel()
        assert ax.get_xlim() == (-180.0, 180.0) and ax.get_ylim() == (-90.0, 90.0)
        assert np.ma.count_masked(ax.collections[0].get_array()) == 18 * 5
    finally:
        plt.close(ax.figure)
    ax = plotting.map_plot(_field(), units="kg C m-2", title="t")
    assert "kg C m⁻²" in ax.collections[0].colorbar.ax.get_ylabel() and ax.get_title() == "t"
    plt.close(ax.figure)


def test_map_plot_coastlines_and_difference_map():
    from matplotlib.contour import QuadContourSet

    ax = plotting.map_plot(_field())
    try:  # the land mask's 0.5 contour, limits unchanged
        assert any(isinstance(c, QuadContourSet) for c in ax.get_children()) or ax.collections[1:]
        assert ax.get_xlim() == (-180.0, 180.0)
    finally:
        plt.close(ax.figure)
    ax = plotting.map_plot(_field(), coast=False)
    assert len(ax.collections) == 1
    plt.close(ax.figure)
    ref = _field() * 0 + 5.0
    ax = plotting.difference_map(_field(), ref, relative=True)
    try:
        norm = ax.collections[0].norm
        assert norm.vcenter == 0.0 and norm.vmin == -norm.vmax  # centred, symmetric
        d = ((_field() - ref) / ref).values
        assert np.nanmax(np.abs(d)) >= norm.vmax > 0
        assert "relative difference" in ax.collections[0].colorbar.ax.get_ylabel()
    finally:
        plt.close(ax.figure)
    with pytest.raises(ValueError, match="exact|indexes|align"):
        plotting.difference_map(_field(), ref.isel(lat=slice(1, None)))


def test_map_plot_errors():
    with pytest.raises(ValueError, match="2-D"):
        plotting.map_plot(_field().expand_dims(month=2))
    with pytest.raises(ValueError, match="no finite"):
        plotting.map_plot(_field() * np.nan)


def test_predicted_vs_observed_annotates_skill():
    rng = np.random.default_rng(0)
    obs = rng.lognormal(9, 1, size=(20, 4))
    mod = obs * rng.lognormal(0, 0.1, size=obs.shape)
    obs[0, 3] = np.nan
    ax = plotting.predicted_vs_observed(mod, obs)
    try:
        assert "observed SOC" in ax.get_xlabel() and "g C m⁻³" in ax.get_xlabel()
        assert "predicted SOC" in ax.get_ylabel()
        text = " ".join(t.get_text() for t in ax.texts)
        assert "R² =" in text and "RMSE" in text and "n = 79" in text
        assert ax.get_xscale() == "log"
    finally:
        plt.close(ax.figure)


def test_depth_profile_and_loss_curve():
    prof = pd.DataFrame({"profile_id": ["a", "a", "b"], "lat": [10.0, 10.0, -5.0],
                         "lon": [20.0, 20.0, -60.0], "top": [0.0, 0.1, 0.0],
                         "bottom": [0.1, 0.3, 0.2], "soc": [2e4, 1e4, 5e3]})
    mod = xr.DataArray(np.linspace(2e4, 1e2, 40).reshape(2, 20), dims=("site", "layer"),
                       coords={"site": ["a", "b"]})
    axes = plotting.depth_profile(prof, {"model": mod})
    try:
        assert len(axes) == 2 and axes[0].get_ylabel() == "depth (m)"
        assert "SOC" in axes[0].get_xlabel() and axes[0].get_ylim()[0] > 0  # depth downwards
        assert {a.get_xscale() for a in axes} == {"log"}  # one scale on every panel
        assert axes[0].get_ylim()[1] < 0  # the top layer's bar is inside the frame
    finally:
        plt.close(axes[0].figure)
    with pytest.raises(KeyError, match="soc"):
        plotting.depth_profile(prof.drop(columns="soc"), {"model": mod})

    class Rep:  # the TrainingReport interface loss_curve needs
        method = "end_to_end"
        settings = {"loss_label": "mean squared log error"}
        history = pd.DataFrame({"member": [0, 0], "epoch": [0, 1], "train_loss": [1.0, 0.5],
                                "val_loss": [1.1, 0.6], "seconds": [1.0, 2.0]})

    ax = plotting.loss_curve(_as_report(Rep))
    try:
        assert ax.get_xlabel() == "epoch" and "loss" in ax.get_ylabel()
    finally:
        plt.close(ax.figure)
    with pytest.raises(TypeError, match="TrainingReport"):
        plotting.loss_curve(object())


def _as_report(rep):
    from xproda.learning.training import TrainingReport

    return TrainingReport(method=rep.method, history=rep.history, best_epoch=[1],
                          stopped_early=[False], n_sites=2, n_train=[1], n_val=[1],
                          dropped=pd.DataFrame(), skill={}, wall_seconds=1.0,
                          profiles_per_second=1.0, settings=rep.settings)


def test_pretty_units():
    assert plotting.pretty_units("g m-2 yr-1") == "g m⁻² yr⁻¹"
    assert plotting.pretty_units("kg C m-2") == "kg C m⁻²"
    assert plotting.pretty_units("m2 yr-1") == "m² yr⁻¹"
    assert plotting.pretty_units(None) == "" and plotting.pretty_units("1") == ""
