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
