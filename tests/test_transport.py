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


def test_mean_operator_per_column_independent_of_batch():
    """A column's operator is the same alone and beside columns of another kind (constant vs
    monthly-varying active layer), bit for bit: sharded site runs rely on it."""
    from xproda.testing import random_forcing

    f = {k: torch.as_tensor(v, dtype=torch.float64) for k, v in random_forcing(6, 3).items()}
    f["ALTMAX"][:3] = 0.9  # constant columns 0-2 (cryoturbation)
    f["ALTMAX_LASTYEAR"][:3] = 0.9
    f["ALTMAX"][3:] = torch.linspace(0.3, 1.5, 12)  # varying columns 3-5
    bio = torch.full((6,), 5e-4)
    cryo = torch.full((6,), 5e-4)
    both = transport.mean_operator(bio, cryo, f)
    for rows in (slice(0, 3), slice(3, 6), slice(2, 4)):
        part = transport.mean_operator(bio[rows], cryo[rows], {k: v[rows] for k, v in f.items()})
        for a, b in zip(part, both):
            assert torch.equal(a, b[rows])
    # gradients flow through both kinds of columns
    b2 = bio.clone().requires_grad_(True)
    transport.mean_operator(b2, cryo, {**f, "ALTMAX": f["ALTMAX"].clone()})[1].sum().backward()
    assert torch.isfinite(b2.grad).all()
