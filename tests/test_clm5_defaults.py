"""CLM5 default constants against the CTSM parameter file, and the default-parameter mode."""

from __future__ import annotations

import numpy as np
import pytest

import xproda
from conftest import SHARED, random_forcing
from spec_cases import spec12_forcing
from xproda.models.clm5_defaults import CLM5_DEFAULTS, PROVENANCE, SECONDS_PER_YEAR

PARAMS = SHARED / "data" / "clm5" / "clm5_params.c171117.nc"


@pytest.mark.shared
def test_constants_match_parameter_file():
    if not PARAMS.exists():
        pytest.skip("clm5_params.c171117.nc not available")
    xr = pytest.importorskip("xarray")
    pytest.importorskip("netCDF4")
    ds = xr.open_dataset(PARAMS, decode_times=False)
    for name, (var, units, note) in PROVENANCE.items():
        v = float(np.asarray(ds[var]).ravel()[0])
        if units == "m2 s-1":
            v *= SECONDS_PER_YEAR
        if note.startswith("1 - value"):
            v = 1 - v
        elif "0.42/0.45" in note:
            v = (1 - v) * 0.42 / 0.45
        elif "0.03/0.45" in note:
            v = (1 - v) * 0.03 / 0.45
        np.testing.assert_allclose(CLM5_DEFAULTS[name], v, rtol=2e-7, err_msg=name)


def test_sand_dependent_fractions_range():
    f = random_forcing(3, 0)
    f["CELLSAND"] = np.array([[0.0] * 20, [40.0] * 20, [100.0] * 20])
    import torch

    from xproda.models.clm5_defaults import sand_dependent_fractions

    a, b = sand_dependent_fractions(torch.tensor(f["CELLSAND"]))
    np.testing.assert_allclose(a[:, 0].numpy(), [1 - 0.17 - 0.004, 1 - 0.442 - 0.004, 1 - 0.85 - 0.004])
    np.testing.assert_allclose(b.numpy(), 0.004)


def test_default_mode_clm_profile_equals_surface_when_all_input_in_layer1():
    f = spec12_forcing(1)
    for k, tot in (("CWD_INPUT_vr", 5.0), ("LITR1_INPUT_vr", 15.0), ("LITR2_INPUT_vr", 25.0), ("LITR3_INPUT_vr", 10.0)):
        v = np.zeros((1, 12, 20))
        v[:, :, 0] = tot / xproda.grid.DZ[0]
        f[k] = v
    m = xproda.get_model("clm5", reference=True)
    a = m.default_steady_state(f, input_profile="clm")
    b = m.default_steady_state(f, input_profile="surface")
    np.testing.assert_allclose(a["soc_stock"], b["soc_stock"], rtol=1e-12)
    np.testing.assert_allclose(a["soc_stock"], [13828.2], rtol=5e-6)


def test_default_mode_errors():
    m = xproda.get_model("clm5")
    f = spec12_forcing(1)
    with pytest.raises(KeyError, match="per-layer inputs"):
        m.default_steady_state(f)
    with pytest.raises(ValueError, match="input_profile must be"):
        m.default_steady_state(f, input_profile="deep")
    del f["CELLSAND"]
    with pytest.raises(KeyError, match="CELLSAND"):
        m.default_steady_state(f, input_profile="surface")


def test_default_mode_beta_profile_and_mass_balance():
    out = xproda.get_model("clm5").default_steady_state(random_forcing(5, 2), input_profile="beta")
    assert out["valid"].all()
    np.testing.assert_allclose(out["respiration"], out["input"], rtol=1e-10)
