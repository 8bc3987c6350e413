"""The fused microbial steady state (one compiled pass per column) equals the torch path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import load_fixture, random_forcing
from hypothesis import given, settings
from hypothesis import strategies as st

import xproda
from xproda.models import fused as _fused
from xproda.testing import resampled_forcing

pytestmark = pytest.mark.skipif(not _fused.HAVE_NUMBA, reason="numba not installed")

P = 23
#: solve_error_estimate below this is rounding noise of the leak (the torch path builds the
#: transport operator from 12 months unless the months are constant in the whole batch, the
#: kernel decides per column): compared in absolute terms there
_NOISE = 1e-16


def _both(fn):
    """``fn()`` with the fused kernel and with the torch path."""
    with xproda.set_options(fused_kernels=True):
        a = fn()
    with xproda.set_options(fused_kernels=False):
        b = fn()
    return a, b


def _column_error(x, y, key):
    """``|x - y|`` per column relative to the column's largest ``|y|``."""
    x, y = np.asarray(x), np.asarray(y)
    axes = tuple(range(1, x.ndim))
    ay = np.where(np.isnan(y), 0.0, np.abs(y))
    scale = ay.max(axis=axes) if axes else ay
    if key == "solve_error_estimate":
        scale = np.maximum(scale, _NOISE)
    scale = np.where(scale > 0, scale, 1.0)
    d = np.nan_to_num(np.abs(x - y))
    return (d.max(axis=axes) if axes else d) / scale


def _perturbed(m, th, f):
    """The torch path with TSOI changed by one unit in the last place (float64)."""
    g = dict(f)
    g["TSOI"] = np.asarray(f["TSOI"], dtype=np.float64) * (1 + 2.0**-52)
    with xproda.set_options(fused_kernels=False):
        return m.steady_state(th, g)


def _assert_same(a, b, bp, rtol=5e-12):
    """Same keys, flags and NaN; values to ``rtol`` of each column's largest magnitude.

    The kernel computes the environmental scalars with :func:`xproda.models.fused.vexp`
    (within 1 ulp of the C library's ``exp``) and its own order of sums, torch with a
    vectorised ``exp``: inputs of the soil part differ in the
    last bit. Near the edge of the physical steady state the closed-form SOC
    ``k_dd xi supply / (v_s xi enz - supply)`` amplifies that by its condition number (up
    to ~1e6), and so does the torch path itself for an input changed by one unit in the last
    place (``bp``, :func:`_perturbed`): a column may differ by up to 20 times that change.
    Columns whose flags that change flips (on a flag's threshold) are left out.
    """
    assert list(a) == list(b)
    edge = np.asarray(bp["flags"]) != np.asarray(b["flags"])
    assert edge.mean() < 0.05
    keep = ~edge
    np.testing.assert_array_equal(np.asarray(a["flags"])[keep], np.asarray(b["flags"])[keep])
    np.testing.assert_array_equal(np.asarray(a["valid"])[keep], np.asarray(b["valid"])[keep])
    for key in a:
        if key in ("flags", "valid"):
            continue
        x, y = np.asarray(a[key])[keep], np.asarray(b[key])[keep]
        assert x.shape == y.shape, key
        np.testing.assert_array_equal(np.isnan(x), np.isnan(y), err_msg=key)
        err = _column_error(x, y, key)
        tol = np.maximum(rtol, 20 * _column_error(np.asarray(bp[key])[keep], y, key))
        assert (err <= tol).all(), (key, err.max(), (err / tol).max())


def _check(m, th, f):
    """The fused and the torch path of ``m.steady_state(th, f)`` agree."""
    a, b = _both(lambda: m.steady_state(th, f))
    _assert_same(a, b, _perturbed(m, th, f))
    return a


def _theta(n, seed):
    return np.random.default_rng(seed).uniform(0.01, 0.99, (n, P))


def test_fused_microbial_path_is_taken(monkeypatch):
    from xproda.models import fused_steady

    calls = []
    real = fused_steady.microbial_steady_state
    monkeypatch.setattr(fused_steady, "microbial_steady_state",
                        lambda *a, **k: calls.append(1) or real(*a, **k))
    f = random_forcing(8, 0)
    th = np.full((8, P), 0.5)
    m = xproda.get_model("microbial")
    m.steady_state(th, f)
    assert calls, "no-grad CPU call must use the fused kernel"
    calls.clear()
    with xproda.set_options(fused_kernels=False):
        m.steady_state(th, f)
    assert not calls
    thr = torch.tensor(th, requires_grad=True)
    out = m.steady_state(thr, {k: torch.as_tensor(v) for k, v in f.items()})
    assert not calls, "a call that needs gradients must use the torch path"
    assert out["soc_stock"].requires_grad
    with torch.no_grad():  # torch in, no gradient: fused, torch out
        out = m.steady_state(thr, {k: torch.as_tensor(v) for k, v in f.items()})
    assert calls and isinstance(out["soc_stock"], torch.Tensor)


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    regime=st.sampled_from(["bio", "cryo", "mixed"]),
    reference=st.booleans(),
)
def test_fused_microbial_equals_torch(seed, regime, reference):
    n = 60
    f = random_forcing(n, seed, regime=regime)
    th = _theta(n, seed)
    _check(xproda.get_model("microbial", reference=reference), th, f)


@settings(max_examples=6, deadline=None)
@given(
    seed=st.integers(0, 2**31 - 1),
    layout=st.sampled_from(["C", "transposed"]),
    dtype=st.sampled_from([np.float32, np.float64]),
    reference=st.booleans(),
)
def test_fused_microbial_equals_torch_realistic(seed, layout, dtype, reference):
    """Forcing resampled from the reference cases, float32 and transposed views read as is."""
    cases = load_fixture("reference_microbial.json")["cases"]
    n = 60
    f = resampled_forcing(cases, n, seed, layout=layout, dtype=dtype)
    th = _theta(n, seed)
    _check(xproda.get_model("microbial", reference=reference), th, f)


@pytest.mark.parametrize("reference", [False, True])
def test_fused_microbial_nan_and_zero_input_columns(reference):
    n = 10
    f = random_forcing(n, 3)
    th = np.full((n, P), 0.3)  # kp = 0.3 has a physical steady state (spec §3.5)
    f["TSOI"][1] = np.nan  # no data
    th[3, 0] = np.nan  # no data (NaN theta row)
    for k in ("CWD_INPUT", "LITR1_INPUT", "LITR2_INPUT", "LITR3_INPUT"):
        f[k][2] = 0.0  # no input at all: every pool 0, no supply to the soil part
    f["CWD_INPUT"][4] = 0.0  # no CWD input: CWD 0, not NaN
    f["W_SCALAR"][5, 3] = np.nan  # one month missing: omitted from the means
    f["NPP"][6] = np.nan  # a variable the kernel does not read
    f["ALTMAX"][7, 2] = np.nan  # a missing month of the active layer
    f["nbedrock"][8] = np.nan  # no data
    th[9, 5] = np.nan  # NaN parameter: no data
    m = xproda.get_model("microbial", reference=reference)
    a = _check(m, th, f)
    nodata = [1, 3, 8, 9]
    assert (a["flags"][nodata] & 1).all()
    assert np.isnan(a["soc_stock"][nodata]).all()
    assert a["valid"][[0, 2, 4, 5, 6]].all()
    assert np.all(a["pools"][2] == 0.0) and a["input"][2] == 0.0
    assert np.all(a["pools"][4, :, 0] == 0.0)
    # torch in gives torch out, on both paths
    ft = {k: torch.as_tensor(v) for k, v in f.items()}
    ta, tb = _both(lambda: m.steady_state(torch.as_tensor(th), ft))
    assert all(isinstance(v, torch.Tensor) for v in ta.values())
    _assert_same({k: v.numpy() for k, v in ta.items()}, {k: v.numpy() for k, v in tb.items()},
                 _perturbed(m, th, f))


def test_fused_microbial_broadcast_and_options():
    """A ``[1, P]`` theta broadcasts; option switches are honoured on the fused path."""
    n = 30
    f = random_forcing(n, 11)
    th = _theta(1, 11)
    for opts in ({"clip_negative": True}, {"conservative_transport": False},
                 {"inputs_below_bedrock": True}, {"enzyme_turnover_index": 12},
                 {"min_soc_to_mic_ratio": 0.0}, {"detect_ill_conditioning": False,
                                                 "conservative_transport": False}):
        _check(xproda.get_model("microbial", **opts), th, f)


def _raised(fn):
    try:
        fn()
    except Exception as e:  # noqa: BLE001 - compared below
        return type(e), str(e)
    return None


@pytest.mark.parametrize("case", ["theta_range", "theta_shape", "celsius", "enzyme_index"])
def test_fused_microbial_errors_match(case):
    n = 4
    f = random_forcing(n, 0)
    th = np.full((n, P), 0.5)
    opts = {}
    if case == "theta_range":
        th[1, 4] = 1.2
    elif case == "theta_shape":
        th = th[:, :-1]
    elif case == "celsius":
        f["TSOI"] = f["TSOI"] - 273.15
    else:
        opts = {"enzyme_turnover_index": 30}
    m = xproda.get_model("microbial", **opts)
    a, b = _both(lambda: _raised(lambda: m.steady_state(th, f)))
    assert a is not None and a == b
