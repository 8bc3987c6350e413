"""Bad input raises clear errors naming the variable; NaN propagates; array types round-trip."""

from __future__ import annotations

import re

import numpy as np
import pytest
import torch

import xproda
from conftest import random_forcing


@pytest.fixture
def forcing():
    return random_forcing(4, 0)


@pytest.fixture(params=["clm5", "microbial"])
def model(request):
    return xproda.get_model(request.param)


def _theta(model, n=4, value=0.3):
    return np.full((n, len(model.parameters)), value)


def test_missing_key(model, forcing):
    del forcing["TSOI"]
    with pytest.raises(KeyError, match=r"'TSOI'.*\[n, 12, 20\].*K"):
        model.steady_state(_theta(model), forcing)


def test_wrong_shape(model, forcing):
    forcing["W_SCALAR"] = forcing["W_SCALAR"][:, :, :10]
    with pytest.raises(ValueError, match=r"'W_SCALAR'.*\[n, 12, 20\].*\(4, 12, 10\)"):
        model.steady_state(_theta(model), forcing)


def test_layer_month_order_swapped(model, forcing):
    forcing["TSOI"] = forcing["TSOI"].transpose(0, 2, 1)
    with pytest.raises(ValueError, match="'TSOI' must have shape"):
        model.steady_state(_theta(model), forcing)


def test_celsius_instead_of_kelvin(model, forcing):
    forcing["TSOI"] = forcing["TSOI"] - 273.15
    with pytest.raises(ValueError, match=r"'TSOI' must be in kelvin.*Celsius"):
        model.steady_state(_theta(model), forcing)


@pytest.mark.parametrize("key", ["CWD_INPUT", "LITR1_INPUT", "LITR2_INPUT", "LITR3_INPUT"])
def test_negative_inputs(model, forcing, key):
    forcing[key][1, 3] = -1.0
    with pytest.raises(ValueError, match=f"'{key}' has negative values"):
        model.steady_state(_theta(model), forcing)


@pytest.mark.parametrize("bad", [0, 21, 7.5, -3])
def test_nbedrock_out_of_range(model, forcing, bad):
    forcing["nbedrock"][0, :] = bad
    with pytest.raises(ValueError, match="'nbedrock'"):
        model.steady_state(_theta(model), forcing)


@pytest.mark.parametrize("key", ["W_SCALAR", "O_SCALAR", "FPI_vr"])
def test_scalars_outside_unit_interval(model, forcing, key):
    forcing[key] = forcing[key] * 3.0
    with pytest.raises(ValueError, match=f"'{key}' has values above 1"):
        model.steady_state(_theta(model), forcing)


def test_negative_active_layer(model, forcing):
    forcing["ALTMAX"][0, 0] = -1.0
    with pytest.raises(ValueError, match="'ALTMAX' has negative values"):
        model.steady_state(_theta(model), forcing)


def test_infinite_values(model, forcing):
    forcing["TSOI"][0, 0, 0] = np.inf
    with pytest.raises(ValueError, match="'TSOI' contains infinite values"):
        model.steady_state(_theta(model), forcing)


@pytest.mark.parametrize("bad", [0.0, 1.0, -0.2, 1.5, np.inf])
def test_theta_outside_unit_interval(model, forcing, bad):
    th = _theta(model)
    th[2, 3] = bad
    name = model.parameters.names[3]
    with pytest.raises(ValueError, match=rf"theta must lie strictly inside \(0, 1\).*{re.escape(name)}"):
        model.steady_state(th, forcing)


def test_theta_wrong_shape(model, forcing):
    with pytest.raises(ValueError, match=rf"theta must have shape \[n, {len(model.parameters)}\]"):
        model.steady_state(np.full((4, 5), 0.5), forcing)


def test_batch_size_mismatch(model, forcing):
    with pytest.raises(ValueError, match="disagree on the batch size"):
        model.steady_state(_theta(model, n=3), forcing)


def test_forcing_not_a_mapping(model):
    with pytest.raises(TypeError, match="mapping"):
        model.steady_state(_theta(model), [1, 2, 3])


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'century'.*'clm5'"):
        xproda.get_model("century")


def test_unknown_option():
    with pytest.raises(TypeError, match="unknown model option"):
        xproda.get_model("clm5", conservative=True)


def test_nan_column_propagates_without_error(model, forcing):
    forcing["TSOI"][1] = np.nan  # an ocean cell
    th = _theta(model)
    th[3, 0] = np.nan  # a missing parameter
    out = model.steady_state(th, forcing)
    assert np.isnan(out["soc_stock"][[1, 3]]).all()
    assert np.isfinite(out["soc_stock"][[0, 2]]).all()
    assert out.flag_names()[1] == ["no_data"] and out.flag_names()[3] == ["no_data"]
    assert not out["valid"][[1, 3]].any()


def test_single_nan_month_is_omitted(forcing):
    """A NaN month in a scalar field is skipped in the monthly mean (reference 'omitnan')."""
    m = xproda.get_model("clm5")
    th = np.full((4, 21), 0.4)
    forcing["W_SCALAR"][0, 5, :] = np.nan
    out = m.steady_state(th, forcing)
    assert out["valid"].all()


def test_all_nan_input_is_no_data(forcing):
    forcing["LITR2_INPUT"][2] = np.nan
    out = xproda.get_model("clm5").steady_state(np.full((4, 21), 0.4), forcing)
    assert out.flag_names()[2] == ["no_data"]


def test_numpy_in_numpy_out_torch_in_torch_out(model, forcing):
    out = model.steady_state(_theta(model), forcing)
    for k in ("pools", "soc", "soc_stock", "flags", "valid"):
        assert isinstance(out[k], np.ndarray), k
    np.asarray(out["soc"])
    tout = model.steady_state(torch.tensor(_theta(model)), forcing)
    assert isinstance(tout["soc"], torch.Tensor)
    np.testing.assert_allclose(tout["soc"].numpy(), out["soc"], rtol=0, atol=0, equal_nan=True)


def test_contract_shapes(model, forcing):
    out = model.steady_state(_theta(model), forcing)
    P = len(model.pools)
    assert out["pools"].shape == (4, 20, P)
    assert out["soc"].shape == (4, 20)
    assert out["soc_stock"].shape == (4,)
    assert out["pools"].dtype == np.float64
    soil = out["pools"][..., P - len(model.soil_pools):].sum(-1)
    np.testing.assert_allclose(out["soc"], soil, rtol=1e-15)
    np.testing.assert_allclose(out["soc_stock"], (out["soc"] * xproda.grid.DZ[:20]).sum(-1), rtol=1e-14)


def test_forcing_broadcasts_from_one_column(model, forcing):
    one = {k: v[:1] for k, v in forcing.items()}
    th = np.random.default_rng(0).uniform(0.25, 0.35, (5, len(model.parameters)))
    out = model.steady_state(th, one)
    assert out["soc"].shape == (5, 20)
    single = model.steady_state(th[2:3], one)
    np.testing.assert_allclose(out["soc"][2], single["soc"][0], rtol=1e-14, equal_nan=True)


def test_readonly_inputs_accepted(model, forcing):
    for v in forcing.values():
        v.setflags(write=False)
    th = _theta(model)
    th.setflags(write=False)
    model.steady_state(th, forcing)


def test_prepared_forcing_is_reused_and_equal():
    import torch

    from xproda.models import forcing as fmod
    from xproda.testing import random_forcing

    f = random_forcing(10, 4)
    th = np.random.default_rng(4).uniform(0.2, 0.8, (30, 21))
    m = xproda.get_model("clm5")
    prep = fmod.prepare_forcing(f, repeat=3)
    assert prep.n == 30 and prep["TSOI"].shape == (30, 12, 20)
    calls = []
    real = fmod._check_values
    fmod._check_values = lambda *a: calls.append(a) or real(*a)
    try:
        out = m.steady_state(torch.tensor(th), prep)
    finally:
        fmod._check_values = real
    assert not calls, "prepared forcing must not be validated again"
    tiled = {k: np.repeat(v, 3, axis=0) for k, v in f.items()}  # site-major
    ref = m.steady_state(th, tiled)
    np.testing.assert_array_equal(out["soc_stock"].numpy(), ref["soc_stock"])
    # a call with another dtype validates (converts) again
    with xproda.set_options(dtype="float32"):
        out32 = m.steady_state(torch.tensor(th, dtype=torch.float32), prep)
    assert out32["soc"].dtype == torch.float32
    cm = fmod.prepare_forcing(f, repeat=3, layout="chain-major")
    np.testing.assert_array_equal(cm["TSOI"][10:20].numpy(), f["TSOI"])


_BAD_CASES = [
    ("TSOI", lambda a: a - 273.15, "degrees Celsius"),
    ("W_SCALAR", lambda a: np.where(a > 0.5, 1e20, a), "above 1"),
    ("FPI_vr", lambda a: np.where(a > 0.9, np.inf, a), "infinite"),
    ("O_SCALAR", lambda a: -a, "negative"),
    ("nbedrock", lambda a: a - 0.5, "integer"),
    ("LITR2_INPUT", lambda a: np.where(a > 0, -9999.0, a), "negative"),
]


@pytest.mark.parametrize("case", _BAD_CASES, ids=[c[0] for c in _BAD_CASES])
@pytest.mark.parametrize("steps", [12, 48])
def test_large_inputs_checked_by_the_compiled_range_with_the_same_message(case, steps):
    """Arrays from ``COMPILED_CHECK_MIN`` values on are checked by the compiled range kernel
    (no OpenMP region): same errors as the torch reductions, on the steady (torch path) and
    transient entry points."""
    from xproda.models import forcing as fmod
    from xproda.models.transient import repeat_forcing

    name, spoil, words = case
    n = 800
    f = repeat_forcing(random_forcing(n, seed=4), years=steps // 12)
    f[name] = spoil(np.array(f[name]))
    if steps == 48:  # the compiled path is exercised for every variable
        assert f[name].size >= fmod.COMPILED_CHECK_MIN
    messages = []
    for fused in (True, False):
        with xproda.set_options(fused_kernels=fused):
            with pytest.raises(ValueError) as err:
                fmod.validate_forcing({k: torch.as_tensor(v) for k, v in f.items()}, n,
                                      steps=steps)
        messages.append(str(err.value))
    assert messages[0] == messages[1]
    assert words in messages[0] and repr(name) in messages[0]


def test_compiled_theta_check_same_message():
    from xproda.models import forcing as fmod

    m = xproda.get_model("clm5")
    n = fmod.COMPILED_CHECK_MIN // 21 + 50
    th = np.full((n, 21), 0.5)
    th[7, 3] = np.nan  # no data: allowed
    assert m.check_theta(th, torch.float64, "cpu").shape == (n, 21)
    th[n - 1, 5] = 1.0
    messages = []
    for fused in (True, False):
        with xproda.set_options(fused_kernels=fused), pytest.raises(ValueError) as err:
            m.check_theta(th, torch.float64, "cpu")
        messages.append(str(err.value))
    assert messages[0] == messages[1] and m.parameters.names[5] in messages[0]
