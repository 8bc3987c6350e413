"""The accessor's repr says what a dataset looks like to xproda, without computing anything."""

from __future__ import annotations

import numpy as np
import xarray as xr

from xproda.datasets import synthetic_world, truth_parameters
from xproda.testing import raise_if_dask_computes
from xproda.xr.accessor import describe


def test_world_forcing_and_covariates_lazy():
    w = synthetic_world(15.0).chunk({"lat": 4, "lon": 8})
    with raise_if_dask_computes():
        text = repr(w.proda)
        d = describe(w)
    assert text.startswith("<xproda Dataset accessor (")
    assert d["grid"] == f"lat {w.sizes['lat']} x lon {w.sizes['lon']}; chunks lat 4, lon 8 (lazy)"
    assert "complete for steady_state" in d["forcing"]
    n_cov = sum(1 for k in w.data_vars if "covariate_group" in w[k].attrs)
    assert n_cov > 0 and d["covariates"].startswith(f"{n_cov} (")
    assert "outputs" not in d
    for line in ("grid", "forcing", "covariates", "methods"):
        assert f"\n{line}" in text, line
    assert "steady_state" in text and "write_zarr" in text


def test_missing_forcing_is_named():
    w = synthetic_world(30.0).drop_vars(["O_SCALAR", "LITR2_INPUT"])
    assert describe(w)["forcing"].endswith("missing for steady_state: O_SCALAR, LITR2_INPUT")


def test_outputs_parameters_and_unknown():
    w = synthetic_world(30.0)
    theta = truth_parameters(w, kind="cue")
    out = w.proda.steady_state(theta)
    out["soc_stock_0_0.3m"] = out.proda.soc_stock(depth=(0, 0.3))
    out["theta"] = theta
    d = describe(out)
    assert "forcing" not in d and "covariates" not in d
    for k in ("soc", "soc_stock", "turnover_time", "flags", "soc_stock_0_0.3m"):
        assert k in d["outputs"], k
    assert d["parameters"] == "theta (21 on 'parameter')"
    assert describe(out["soc"])["grid"].startswith("lat ")
    other = xr.Dataset({"a": ("x", np.arange(3))})
    assert describe(other) == {
        "grid": "no horizontal dims found (lat/lon, y/x, or a site/cell dim)",
        "variables": "none xproda knows: a"}


# -------------------------------------------------------------------------------------------
# report objects: short text repr, HTML in notebooks
# -------------------------------------------------------------------------------------------
def test_report_reprs():
    import pandas as pd

    from xproda.io import WriteReport
    from xproda.learning.trainer import TrainingReport
    from xproda.sites.observations.report import CleaningReport

    hist = pd.DataFrame({"member": [0] * 40, "epoch": range(40), "train_loss": 1.0,
                         "val_loss": 2.0, "seconds": 0.1})
    t = TrainingReport(method="end_to_end", history=hist, best_epoch=[31],
                       stopped_early=[True], n_sites=120, n_train=[96], n_val=[12],
                       dropped=pd.DataFrame({"site": ["a"], "reason": ["no forcing"]}),
                       skill={"r2": 0.5, "n": 12}, wall_seconds=3.2,
                       profiles_per_second=1234.0, settings={})
    text = repr(t)
    assert "\n" not in text and "train_loss" not in text  # no DataFrame dump
    assert text.startswith("TrainingReport(end_to_end: 120 sites (1 dropped)")
    h = t._repr_html_()
    assert "<table>" in h and "[40] / [31]" in h and "no forcing" in h
    assert "first 12 of 40" in h  # the history is cut
    w = WriteReport(store="/x.zarr", regions=4, written=3, skipped_empty=1, resumed=0,
                    seconds=1.5)
    assert "skipped (empty)</th><td style='text-align:left'>1" in w._repr_html_()
    c = CleaningReport(source="clean_profiles", n_layers_in=10, n_profiles_in=2,
                       n_layers_out=8, n_profiles_out=2,
                       rules=pd.DataFrame({"rule": ["soc_max"], "description": ["<b>"],
                                           "layers_dropped": [2], "profiles_dropped": [0]}),
                       notes=["bulk density from a pedotransfer function"])
    h = c._repr_html_()
    assert "soc_max" in h and "&lt;b&gt;" in h and "pedotransfer" in h  # escaped
