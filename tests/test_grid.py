"""The CLM5 soil column and depth helpers (spec §1, §8.1)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from xproda import grid


def test_column_matches_spec_table():
    assert grid.N_LAYERS == 20
    np.testing.assert_allclose(grid.DZ[:20].sum(), 8.60, rtol=1e-14)
    np.testing.assert_allclose(grid.ZISOI[19], 8.60)
    np.testing.assert_allclose(grid.ZSOI, 0.5 * (grid.ZISOI + grid.ZISOI_TOP), rtol=1e-15)
    np.testing.assert_allclose(grid.ZSOI[:4], [0.01, 0.04, 0.09, 0.16], rtol=1e-14)
    np.testing.assert_allclose(grid.ZSOI[19], 8.03, rtol=1e-14)
    np.testing.assert_allclose(grid.DZ_NODE[[0, 1, 19, 20]], [0.01, 0.03, 1.09, 1.765], rtol=1e-12)
    np.testing.assert_allclose(grid.ZSOI[24], 41.9984368640029, rtol=1e-13)
    np.testing.assert_allclose(grid.DZ_NODE[24], 13.1277124296869, rtol=1e-12)


def test_constants_are_read_only():
    with pytest.raises(ValueError):
        grid.DZ[0] = 1.0


def test_layer_bounds():
    b = grid.layer_bounds()
    assert b.shape == (20, 2)
    np.testing.assert_allclose(b[:, 1] - b[:, 0], grid.DZ[:20])


@pytest.mark.parametrize(
    "top,bottom,last,frac",
    [(0.0, 0.3, 4, 0.10), (0.0, 1.0, 8, 0.08), (0.0, 2.0, 11, 0.12)],
)
def test_standard_interval_weights_match_spec(top, bottom, last, frac):
    """0-30 cm = layers 1-4 + 0.10 m of layer 5, etc. (spec §8.1)."""
    w = grid.depth_weights(top, bottom)
    np.testing.assert_allclose(w[:last], grid.DZ[:last], rtol=1e-14)
    np.testing.assert_allclose(w[last], frac, rtol=1e-12)
    assert (w[last + 1:] == 0).all()
    np.testing.assert_allclose(w.sum(), bottom - top, rtol=1e-14)


@given(a=st.floats(0, 8.6), b=st.floats(0, 8.6), c=st.floats(0, 8.6))
def test_weights_are_additive(a, b, c):
    lo, mid, hi = sorted([a, b, c])
    if not (lo < mid < hi):
        return
    np.testing.assert_allclose(
        grid.depth_weights(lo, mid) + grid.depth_weights(mid, hi), grid.depth_weights(lo, hi), atol=1e-14
    )


def test_integrate_numpy_and_torch_agree_and_ignore_nan_outside():
    v = np.linspace(1000, 10, 20)[None].repeat(3, 0)
    v[:, 15] = np.nan  # below 1 m: must not spoil the 0-100 cm stock
    s = grid.integrate(v, 0, 1.0)
    st_ = grid.integrate(torch.tensor(v), 0, 1.0)
    np.testing.assert_allclose(s, st_.numpy(), rtol=1e-15)
    assert np.isfinite(s).all()
    assert np.isnan(grid.integrate(v)).all()


@pytest.mark.parametrize("top,bottom", [(-0.1, 0.3), (0.5, 0.5), (0.0, 9.0), (np.nan, 1.0)])
def test_bad_intervals(top, bottom):
    with pytest.raises(ValueError, match="depth interval"):
        grid.depth_weights(top, bottom)


def test_layer_index():
    np.testing.assert_array_equal(grid.layer_index([0.0, 0.01, 0.02, 0.021, 8.6]), [0, 0, 0, 1, 19])
    with pytest.raises(ValueError):
        grid.layer_index(9.0)
