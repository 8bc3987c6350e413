"""Vertical transport: mass conservation (corrected) and the reference's open bedrock leak."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from xproda import grid
from xproda.models import transport

DZ = grid.DZ[:20]


def _op(bio, cryo, alt, alty, nb, conservative):
    f = {
        "ALTMAX": torch.tensor(np.full(12, alt), dtype=torch.float64)[None],
        "ALTMAX_LASTYEAR": torch.tensor(np.full(12, alty), dtype=torch.float64)[None],
        "nbedrock": torch.tensor(np.full(12, float(nb)), dtype=torch.float64)[None],
    }
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    bands = transport.mean_operator(t(bio), t(cryo), f, conservative=conservative)
    return transport.dense(*bands)[0].numpy()


@settings(max_examples=200, deadline=None)
@given(
    bio=st.floats(3e-5, 5e-4),
    cryo=st.floats(3e-5, 1.6e-3),
    alt=st.floats(0.0, 10.0),
    dalt=st.floats(-0.5, 0.5),
    nb=st.integers(1, 20),
)
def test_corrected_transport_conserves_mass(bio, cryo, alt, dalt, nb):
    M = _op(bio, cryo, alt, max(alt + dalt, 0.0), nb, True)
    colsum = (DZ[:, None] * M).sum(0)  # dz-weighted column sums: d(total C)/dt per unit C
    assert np.abs(colsum).max() <= 1e-12 * np.abs(M).max() + 1e-28
    # Z-matrix: non-negative diagonal, non-positive off-diagonals
    assert (np.diag(M) >= 0).all()
    off = M - np.diag(np.diag(M))
    assert (off <= 0).all()


def test_reference_leak_example_of_spec():
    """bio = 1e-4 m2/yr, nb = 17: column sums +3.078e-7 and -3.078e-7 day-1 (columns 18, 19)."""
    M = _op(1e-4, 5e-4, 6.0, 6.0, 17, False)
    colsum = (DZ[:, None] * M).sum(0)
    np.testing.assert_allclose(colsum[17], 3.078e-7, rtol=1e-3)
    np.testing.assert_allclose(colsum[18], -3.078e-7, rtol=1e-3)
    others = np.delete(colsum, [17, 18])
    assert np.abs(others).max() < 1e-20
    np.testing.assert_allclose(colsum[17], (1e-4 / 365) / grid.DZ_NODE[17], rtol=1e-12)
    # corrected mode closes it
    Mc = _op(1e-4, 5e-4, 6.0, 6.0, 17, True)
    assert np.abs((DZ[:, None] * Mc).sum(0)).max() < 1e-20


@pytest.mark.parametrize("nb", [20, 12])
def test_both_stencils_agree_where_reference_is_closed(nb):
    """nb = 20, or cryoturbation with the active layer above the bedrock interface."""
    alt = 6.0 if nb == 20 else 0.9
    a = _op(1e-4, 5e-4, alt, alt, nb, False)
    b = _op(1e-4, 5e-4, alt, alt, nb, True)
    assert np.abs(a - b).max() < 1e-25


def test_frozen_column_has_no_mixing():
    M = _op(1e-4, 5e-4, 0.0, 0.0, 20, True)
    assert np.abs(M).max() < 1e-25  # only the 1e-30 fill diffusivities remain


def test_nan_month_is_omitted_from_the_mean():
    f = {
        "ALTMAX": torch.full((1, 12), 6.0, dtype=torch.float64),
        "ALTMAX_LASTYEAR": torch.full((1, 12), 6.0, dtype=torch.float64),
        "nbedrock": torch.full((1, 12), 20.0, dtype=torch.float64),
    }
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    full = transport.mean_operator(t(1e-4), t(5e-4), f)
    f["ALTMAX"][0, 3] = float("nan")
    part = transport.mean_operator(t(1e-4), t(5e-4), f)
    for x, y in zip(full, part):
        torch.testing.assert_close(x, y, rtol=1e-14, atol=0)
    f["ALTMAX"][0, :] = float("nan")
    assert torch.isnan(transport.mean_operator(t(1e-4), t(5e-4), f)[1]).all()
