"""Model-to-observation mapping: torch PCHIP (SciPy parity), exact means, layer means (§6.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from scipy.interpolate import PchipInterpolator

import xproda
from xproda import grid
from xproda.models.interp import (
    MODEL_NODE_DEPTHS,
    ModelToObs,
    PchipMap,
    PchipMeanMap,
    layer_mean_weights,
    model_to_obs,
    pchip,
    pchip_coefficients,
    pchip_derivatives,
    pchip_integral,
    pchip_mean,
)

X = np.asarray(MODEL_NODE_DEPTHS)
TOL = 1e-12  # relative to the row's magnitude (the brief's parity target)


def scipy_rows(x, y, xq, extrapolate=True):
    """Reference: one PchipInterpolator per row."""
    x = np.broadcast_to(x, y.shape) if np.ndim(x) == 1 else x
    with np.errstate(over="ignore", divide="ignore", invalid="ignore"):  # SciPy on tiny slopes
        return np.stack([PchipInterpolator(x[b], y[b], extrapolate=extrapolate)(xq[b])
                         for b in range(y.shape[0])])


def assert_rows_close(out, ref, y, tol=TOL):
    out = np.asarray(out)
    scale = np.maximum(np.nanmax(np.abs(ref), axis=-1, keepdims=True),
                       np.abs(y).max(axis=-1, keepdims=True))
    scale = np.where(scale > 0, scale, 1.0)
    np.testing.assert_array_equal(np.isnan(out), np.isnan(ref))
    err = np.nan_to_num(np.abs(out - ref) / scale)
    assert (err <= tol).all(), (err.max(), (err / tol).max())


def profiles(rng, kind, b=40, k=20):
    """Profiles with the features PCHIP treats specially."""
    if kind == "smooth":
        return np.sort(rng.exponential(1e4, (b, k)), axis=1)[:, ::-1].copy()
    if kind == "normal":
        return rng.normal(size=(b, k))
    if kind == "flat":  # many flat segments, zeros, sign changes
        return np.round(rng.normal(size=(b, k)))
    if kind == "steps":
        return rng.choice([0.0, 1.0, -1.0, 2.0], size=(b, k))
    if kind == "spiky":
        y = rng.exponential(1.0, (b, k))
        y[:, ::3] *= 100
        return y
    raise ValueError(kind)


KINDS = ["smooth", "normal", "flat", "steps", "spiky"]


def queries(rng, b, q=8):
    """Inside, on the knots, and beyond both ends of the CLM grid (0.005 m, 8.5 m)."""
    inside = rng.uniform(0.0, 9.0, (b, q))
    fixed = np.tile([0.005, 8.5, X[0], X[-1], X[7], 0.0, 8.6], (b, 1))
    return np.concatenate([inside, fixed], axis=1)


# ------------------------------------------------------------------------------------------
# SciPy parity
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("fused", [True, False])
def test_pchip_matches_scipy_clm_grid(kind, fused):
    rng = np.random.default_rng(KINDS.index(kind))
    y = profiles(rng, kind)
    xq = queries(rng, y.shape[0])
    with xproda.set_options(fused_kernels=fused):
        out = pchip(X, y, xq).numpy()
    assert_rows_close(out, scipy_rows(X, y, xq), y)


def test_pchip_spec_extrapolation_points():
    # spec §6.1: extrapolation at 0.005 m and 8.5 m verified against MATLAB/Octave
    y = 20000.0 * np.exp(-np.asarray(X) / 0.7) + 500.0
    out = pchip(X, y, [0.005, 8.5]).numpy()
    ref = PchipInterpolator(X, y, extrapolate=True)([0.005, 8.5])
    np.testing.assert_allclose(out, ref, rtol=1e-14)


finite = st.floats(-1e6, 1e6, allow_nan=False, allow_infinity=False, width=64)
row_values = st.one_of(
    finite,
    st.sampled_from([0.0, 1.0, -1.0, 2.0, 1e4]),  # repeated values -> flat segments, zeros
)


@settings(max_examples=150, deadline=None)
@given(
    y=hnp.arrays(np.float64, (3, 20), elements=row_values),
    xq=hnp.arrays(np.float64, (3, 6), elements=st.floats(0.0, 9.0, width=64)),
    fused=st.booleans(),
)
def test_pchip_matches_scipy_hypothesis(y, xq, fused):
    with xproda.set_options(fused_kernels=fused):
        out = pchip(X, y, xq).numpy()
    assert_rows_close(out, scipy_rows(X, y, xq), y)


@settings(max_examples=80, deadline=None)
@given(
    k=st.integers(2, 9),
    data=st.data(),
)
def test_pchip_matches_scipy_random_knots(k, data):
    gaps = data.draw(hnp.arrays(np.float64, (2, k), elements=st.floats(0.01, 3.0)))
    x = np.cumsum(gaps, axis=1) - 1.0  # per-row knots [B, K]
    y = data.draw(hnp.arrays(np.float64, (2, k), elements=row_values))
    xq = data.draw(hnp.arrays(np.float64, (2, 5), elements=st.floats(-3.0, 30.0)))
    out = pchip(x, y, xq).numpy()
    assert_rows_close(out, scipy_rows(x, y, xq), y, tol=_extrapolation_tol(x, xq))
    # shared knots too
    out1 = pchip(x[0], y, xq).numpy()
    assert_rows_close(out1, scipy_rows(x[0], y, xq), y, tol=_extrapolation_tol(x[[0, 0]], xq))


def _extrapolation_tol(x, xq):
    """TOL inside the knots; outside it grows with the distance in end-interval widths (the
    end cubic evaluated d / h intervals away amplifies the coefficients' rounding: e.g. knots
    0.01 apart queried 18 units beyond gave 1.02e-12 against SciPy)."""
    h_lo = (x[:, 1] - x[:, 0])[:, None]
    h_hi = (x[:, -1] - x[:, -2])[:, None]
    d = np.maximum(np.maximum(x[:, :1] - xq, 0) / h_lo, np.maximum(xq - x[:, -1:], 0) / h_hi)
    return TOL * (1.0 + d)


@pytest.mark.parametrize("kind", KINDS)
def test_derivatives_and_coefficients_match_scipy(kind):
    rng = np.random.default_rng(10 + KINDS.index(kind))
    y = profiles(rng, kind, b=10)
    d = pchip_derivatives(X, y).numpy()
    c = pchip_coefficients(X, y).numpy()
    for b in range(y.shape[0]):
        p = PchipInterpolator(X, y[b])
        scale = max(np.abs(p.c).max(), 1.0)
        np.testing.assert_allclose(c[b], p.c.T, rtol=0, atol=1e-12 * scale)
        np.testing.assert_allclose(d[b, :-1], p.c[2], rtol=0, atol=1e-12 * scale)


def test_two_and_three_knots():
    for k in (2, 3):
        x = np.arange(k, dtype=float) ** 1.5
        y = np.array([[3.0, 1.0, 5.0][:k], [0.0, 2.0, 2.0][:k]])
        xq = np.array([[-1.0, 0.3, 1.1, 9.0], [0.0, 0.5, 2.0, 3.0]])
        assert_rows_close(pchip(x, y, xq).numpy(), scipy_rows(x, y, xq), y)


def test_nan_queries_and_no_extrapolation():
    y = profiles(np.random.default_rng(1), "smooth", b=2)
    xq = np.array([[0.005, np.nan, 0.5, 8.5], [np.nan, np.nan, 8.03, 0.01]])
    out = pchip(X, y, xq, extrapolate=False).numpy()
    ref = scipy_rows(X, y, np.nan_to_num(xq, nan=1.0), extrapolate=False)
    ref[np.isnan(xq)] = np.nan
    assert_rows_close(out, ref, y)
    assert np.isnan(out[0, [0, 1, 3]]).all() and np.isfinite(out[1, 2:]).all()


def test_nan_knot_values_stay_local():
    # SciPy rejects NaN values; here a NaN layer value spoils only the two intervals next to
    # it (its neighbours' slopes become 0), identically in both paths, and other rows not at all
    y = profiles(np.random.default_rng(12), "smooth", b=3)
    clean = pchip(X, y, np.tile(np.linspace(0.0, 8.6, 23), (3, 1))).numpy()
    y[0, 5] = np.nan
    y[2, :] = np.nan
    xq = np.tile(np.linspace(0.0, 8.6, 23), (3, 1))
    outs = []
    for fused in (True, False):
        with xproda.set_options(fused_kernels=fused):
            outs.append(pchip(X, y, xq).numpy())
    np.testing.assert_array_equal(outs[0], outs[1])
    out = outs[0]
    near = (xq[0] >= X[4]) & (xq[0] < X[6])
    assert np.isnan(out[0, near]).all() and np.isfinite(out[0, ~near]).all()
    np.testing.assert_array_equal(out[1], clean[1])
    assert np.isnan(out[2]).all()


def test_shapes_broadcast_dtype():
    rng = np.random.default_rng(2)
    y = torch.tensor(profiles(rng, "smooth", b=6)).reshape(2, 3, 20)
    xq = torch.tensor(rng.uniform(0, 2, (3, 4)))  # per-site queries shared across chains
    out = pchip(X, y, xq)
    assert out.shape == (2, 3, 4) and out.dtype == torch.float64
    ref = torch.stack([pchip(X, y[c], xq) for c in range(2)])
    torch.testing.assert_close(out, ref, rtol=0, atol=0)
    assert pchip(X, y[0, 0], [0.1, 0.2]).shape == (2,)
    out32 = pchip(X, y.float(), xq.float())
    assert out32.dtype == torch.float32
    torch.testing.assert_close(out32.double(), out, rtol=1e-5, atol=0)


def test_invalid_knots():
    with pytest.raises(ValueError, match="strictly increasing"):
        pchip([0.0, 1.0, 1.0], [1.0, 2.0, 3.0], [0.5])
    with pytest.raises(ValueError, match="same number of knots"):
        pchip([0.0, 1.0, 2.0], [1.0, 2.0], [0.5])
    with pytest.raises(ValueError, match="at least 2"):
        PchipMap([0.0], [0.5])


# ------------------------------------------------------------------------------------------
# precomputed maps
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fused", [True, False])
def test_pchip_map_equals_function(fused):
    rng = np.random.default_rng(3)
    y = torch.tensor(profiles(rng, "normal", b=30))
    xq = torch.tensor(queries(rng, 30))
    xq[::4, -2:] = float("nan")  # padding
    m = PchipMap(X, xq)
    with xproda.set_options(fused_kernels=fused):
        a = m(y)
        b = pchip(X, y, xq)
        c = m(y * 2.0)  # reuse with new values
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(c, 2.0 * b, rtol=1e-14, atol=1e-9, equal_nan=True)
    # extra leading (chain) dims on y broadcast against the precomputed sites
    yc = torch.stack([y, 3.0 * y])
    torch.testing.assert_close(m(yc)[1], m(3.0 * y), rtol=0, atol=0, equal_nan=True)


def test_fused_and_torch_paths_agree():
    rng = np.random.default_rng(4)
    for kind in KINDS:
        y = torch.tensor(profiles(rng, kind, b=50))
        m = PchipMap(X, torch.tensor(queries(rng, 50)))
        with xproda.set_options(fused_kernels=True):
            a = m(y)
        with xproda.set_options(fused_kernels=False):
            b = m(y)
        assert torch.equal(a, b)


# ------------------------------------------------------------------------------------------
# integrals and means
# ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_integral_and_mean_match_scipy(kind):
    rng = np.random.default_rng(20 + KINDS.index(kind))
    y = profiles(rng, kind, b=12)
    a = rng.uniform(0.0, 8.6, (12, 5))
    b = a + rng.uniform(0.0, 3.0, (12, 5))
    a[:, 0], b[:, 0] = 0.0, 0.1  # above the first node (extrapolated end cubic)
    a[:, 1], b[:, 1] = 7.9, 8.6  # below the last node
    a[:, 2], b[:, 2] = 0.0, 8.6  # the whole column
    ig = pchip_integral(X, y, a, b).numpy()
    mean = pchip_mean(X, y, a, b).numpy()
    ref = np.stack([[PchipInterpolator(X, y[r]).integrate(a[r, i], b[r, i]) for i in range(5)]
                    for r in range(12)])
    scale = np.abs(y).max(axis=1, keepdims=True) * 10.0
    assert np.abs(ig - ref).max() <= 1e-12 * scale.max()
    np.testing.assert_allclose(mean * (b - a), ig, rtol=1e-12, atol=1e-12 * scale.max())
    # negative direction
    np.testing.assert_allclose(pchip_integral(X, y, b, a).numpy(), -ig, rtol=1e-14, atol=0)


def test_mean_zero_width_is_point_value_and_nan_padding():
    y = profiles(np.random.default_rng(5), "smooth", b=3)
    top = np.array([[0.3, 0.0, np.nan]] * 3)
    bottom = np.array([[0.3, 0.2, np.nan]] * 3)
    out = pchip_mean(X, y, top, bottom).numpy()
    np.testing.assert_allclose(out[:, 0], pchip(X, y, [0.3]).numpy()[:, 0], rtol=1e-15)
    assert np.isnan(out[:, 2]).all() and np.isfinite(out[:, :2]).all()
    with pytest.raises(ValueError, match="bottom must be >= top"):
        PchipMeanMap(X, [0.5], [0.4])


# ------------------------------------------------------------------------------------------
# ModelToObs
# ------------------------------------------------------------------------------------------


def obs_layers(rng, b=8, d=6):
    """NaN-padded observed layers (m) with contiguous bounds."""
    th = rng.uniform(0.02, 0.6, (b, d))
    bottom = np.cumsum(th, axis=1)
    top = bottom - th
    depth = 0.5 * (top + bottom)
    n = rng.integers(2, d + 1, b)
    pad = np.arange(d)[None] >= n[:, None]
    for v in (top, bottom, depth):
        v[pad] = np.nan
    return depth, top, bottom


def test_model_to_obs_pchip_is_reference():
    rng = np.random.default_rng(6)
    soc = profiles(rng, "smooth", b=8)
    depth, _, _ = obs_layers(rng)
    out = model_to_obs(soc, depth).numpy()
    ref = scipy_rows(X, soc, np.nan_to_num(depth, nan=0.1))
    ref[np.isnan(depth)] = np.nan
    assert_rows_close(out, ref, soc)


def test_layer_mean_equals_depth_integral():
    rng = np.random.default_rng(7)
    soc = profiles(rng, "spiky", b=8)
    depth, top, bottom = obs_layers(rng)
    out = model_to_obs(soc, depth, method="layer_mean", top=top, bottom=bottom).numpy()
    for b in range(8):
        for i in range(6):
            if np.isnan(top[b, i]):
                assert np.isnan(out[b, i])
                continue
            stock = grid.integrate(soc[b], top[b, i], bottom[b, i])
            np.testing.assert_allclose(out[b, i] * (bottom[b, i] - top[b, i]), stock,
                                       rtol=1e-13)


def test_layer_mean_weights_edge_cases():
    w = layer_mean_weights([[0.0, 0.3, 0.02, 8.0, np.nan]], [[8.6, 0.3, 0.06, 10.0, np.nan]])
    assert w.shape == (1, 5, 20)
    np.testing.assert_allclose(w[0, 0].numpy(), grid.DZ[:20] / 8.6, rtol=1e-14)
    # zero thickness: the layer containing the depth (0.3 m is in layer 5, 0.20-0.32 m)
    np.testing.assert_array_equal(w[0, 1].numpy(), np.eye(20)[4])
    # exactly one layer
    np.testing.assert_allclose(w[0, 2].numpy(), np.eye(20)[1], atol=1e-15)
    # below the column: the deepest layer extends downwards
    np.testing.assert_allclose(w[0, 3, 19].item(), 1.0, rtol=1e-14)
    assert w[0, 4].abs().sum() == 0
    with pytest.raises(ValueError, match="0 <= top <= bottom"):
        layer_mean_weights([0.5], [0.4])


def test_constant_profile_is_preserved_by_every_method():
    soc = torch.full((3, 20), 4321.0, dtype=torch.float64)
    depth, top, bottom = obs_layers(np.random.default_rng(8), b=3)
    bottom = np.where(np.isnan(bottom), bottom, np.minimum(bottom, 12.0))
    for method in ModelToObs.METHODS:
        out = model_to_obs(soc, depth, method=method, top=top, bottom=bottom).numpy()
        np.testing.assert_allclose(out[~np.isnan(depth)], 4321.0, rtol=1e-13)
        assert np.isnan(out[np.isnan(depth)]).all()


def test_pchip_mean_method_matches_scipy():
    rng = np.random.default_rng(9)
    soc = profiles(rng, "smooth", b=8)
    depth, top, bottom = obs_layers(rng)
    out = ModelToObs(depth, method="pchip_mean", top=top, bottom=bottom)(soc).numpy()
    for b in range(8):
        p = PchipInterpolator(X, soc[b])
        for i in range(6):
            if np.isnan(top[b, i]):
                assert np.isnan(out[b, i])
            else:
                ref = p.integrate(top[b, i], bottom[b, i]) / (bottom[b, i] - top[b, i])
                np.testing.assert_allclose(out[b, i], ref, rtol=1e-12)


def test_model_to_obs_validation():
    soc = np.ones((1, 20))
    with pytest.raises(ValueError, match="method must be one of"):
        model_to_obs(soc, [[0.1]], method="linear")
    with pytest.raises(ValueError, match="needs the observed node depths"):
        ModelToObs(None)
    with pytest.raises(ValueError, match="needs the observed layer bounds"):
        model_to_obs(soc, [[0.1]], method="layer_mean")
    with pytest.raises(ValueError, match=">= 0"):
        model_to_obs(soc, [[-0.1]])
    with pytest.raises(ValueError, match="20 layers"):
        ModelToObs([[0.1]])(np.ones((1, 19)))
    with pytest.raises(ValueError, match="0 <= top <= bottom"):
        model_to_obs(soc, None, method="pchip_mean", top=[[0.3]], bottom=[[0.2]])


# ------------------------------------------------------------------------------------------
# gradients
# ------------------------------------------------------------------------------------------


def _rand_y(n, seed):
    g = torch.Generator().manual_seed(seed)
    # strictly decreasing with random steps: away from the sign-change kinks of PCHIP
    return (100.0 - torch.cumsum(torch.rand(n, 20, generator=g, dtype=torch.float64) + 0.1,
                                 dim=1)).requires_grad_()


@pytest.mark.parametrize("method", ModelToObs.METHODS)
def test_gradcheck_model_to_obs(method):
    depth = torch.tensor([[0.005, 0.3, 1.1, 8.5], [0.05, 2.0, float("nan"), float("nan")]],
                         dtype=torch.float64)
    top = depth - 0.02
    top[0, 0] = 0.0
    bottom = depth + 0.05
    m2o = ModelToObs(depth, method=method, top=top, bottom=bottom)
    y = _rand_y(2, 0)

    def f(v):
        return torch.nan_to_num(m2o(v))

    assert torch.autograd.gradcheck(f, (y,))


def test_gradcheck_mixed_shapes_and_signs():
    g = torch.Generator().manual_seed(1)
    y = torch.randn(3, 20, generator=g, dtype=torch.float64).requires_grad_()
    xq = torch.tensor([[0.2, 3.0], [0.07, 7.0], [0.005, 8.5]], dtype=torch.float64,
                      requires_grad=True)
    assert torch.autograd.gradcheck(lambda v, q: pchip(X, v, q), (y, xq))


def test_nan_padding_gives_finite_gradients():
    y = _rand_y(2, 2)
    depth = torch.tensor([[0.1, float("nan")], [float("nan"), 0.3]], dtype=torch.float64)
    out = ModelToObs(depth)(y)
    loss = torch.where(torch.isnan(out), 0.0, out).sum()
    loss.backward()
    assert torch.isfinite(y.grad).all()
    # zero and flat segments (discarded harmonic-mean branch) do not poison gradients
    y2 = torch.zeros(1, 20, dtype=torch.float64, requires_grad=True)
    pchip(X, y2, [[0.1, 5.0]]).sum().backward()
    assert torch.isfinite(y2.grad).all()


@pytest.mark.skipif(not torch.cuda.is_available(), reason="CUDA not available")
def test_cuda_matches_cpu():  # pragma: no cover - needs a GPU
    rng = np.random.default_rng(11)
    y = torch.tensor(profiles(rng, "normal", b=64))
    xq = torch.tensor(queries(rng, 64))
    cpu = PchipMap(X, xq)(y)
    gpu = PchipMap(X, xq.cuda())(y.cuda())
    torch.testing.assert_close(gpu.cpu(), cpu, rtol=1e-14, atol=1e-12)
