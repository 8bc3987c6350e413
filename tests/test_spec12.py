"""Reference numbers of the spec §2.8, §3.5, §8.2 and §12 (Octave runs, printed with %.6g)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import xproda
from xproda.models import transport
from spec_cases import spec12_forcing

R6 = 5e-6  # 6 significant digits


@pytest.mark.parametrize("reference", [True, False])
def test_clm5_case1_bioturbation(reference):
    out = xproda.get_model("clm5", reference=reference).steady_state(
        np.full((1, 21), 0.5), spec12_forcing(1)
    )
    np.testing.assert_allclose(out["soc_stock"], [409325], rtol=R6)
    expected = [125175, 119844, 106242, 90510.4, 75729.5, 64127.2, 56291.4, 51348.7, 48348.2,
                46595.4, 45622, 45115, 44870.1, 44754.4, 44708.1, 44693.4, 44689.7, 44688.9,
                44688.8, 44688.8]
    np.testing.assert_allclose(out["soc"][0], expected, rtol=R6)
    np.testing.assert_allclose(out["pools"][0, 0, :4], [13416.6, 861.467, 5466.23, 2138.96], rtol=R6)
    # turnover time (§8.2): tau_full = 620.19 yr = 409,325 / 660
    np.testing.assert_allclose(out["input"], [660.0], rtol=1e-12)
    np.testing.assert_allclose(out["turnover_time"], [620.19], rtol=R6)


@pytest.mark.parametrize("reference", [True, False])
def test_clm5_case2_cryoturbation(reference):
    out = xproda.get_model("clm5", reference=reference).steady_state(
        np.full((1, 21), 0.5), spec12_forcing(2)
    )
    np.testing.assert_allclose(out["soc_stock"], [383702], rtol=R6)
    expected = [214681, 212946, 207060, 198559, 189089, 180090, 172658, 167115, 163038, 160067,
                158017, 156699]
    np.testing.assert_allclose(out["soc"][0, :12], expected, rtol=R6)
    assert (out["soc"][0, 12:] < 1e-6 * out["soc"][0, 0]).all()  # layers 13-20 ~ 0


@pytest.mark.parametrize("case,stock,tau", [(1, 13828.2, 20.95), (2, 23102.2, 35.0)])
def test_clm5_default_parameter_mode(case, stock, tau):
    """CLM5 defaults, all CLM input in layer 1, decomp_depth_efolding = 10 m (§12)."""
    m = xproda.get_model("clm5", reference=True)
    out = m.default_steady_state(spec12_forcing(case), input_profile="surface")
    np.testing.assert_allclose(out["soc_stock"], [stock], rtol=R6)
    np.testing.assert_allclose(out["turnover_time"], [tau], rtol=5e-4)


def test_microbial_kp03():
    m = xproda.get_model("microbial", reference=True)
    out = m.steady_state(np.full((1, 23), 0.3), spec12_forcing(1))
    np.testing.assert_allclose(
        out["pool_stocks"][0, 4:], [6.69082, 380.453, 0.154977, 43348], rtol=R6
    )
    np.testing.assert_allclose(out["soc_stock"], [43735.3], rtol=R6)
    np.testing.assert_allclose(out["soc"][0, 0], 58989.1, rtol=R6)
    out2 = m.steady_state(np.full((1, 23), 0.3), spec12_forcing(2))
    np.testing.assert_allclose(out2["soc_stock"], [27976.8], rtol=R6)
    np.testing.assert_allclose(out2["soc"][0, 0], 39503.3, rtol=R6)


@pytest.mark.parametrize("case", [1, 2])
@pytest.mark.parametrize("reference", [True, False])
def test_microbial_kp05_has_no_steady_state(case, reference):
    out = xproda.get_model("microbial", reference=reference).steady_state(
        np.full((1, 23), 0.5), spec12_forcing(case)
    )
    assert not out["valid"][0]
    assert np.isnan(out["soc_stock"][0])


def _band(bio, cryo, alt, alty, nb, conservative=False):
    f = {
        "ALTMAX": torch.full((1, 12), alt, dtype=torch.float64),
        "ALTMAX_LASTYEAR": torch.full((1, 12), alty, dtype=torch.float64),
        "nbedrock": torch.full((1, 12), float(nb), dtype=torch.float64),
    }
    t = lambda v: torch.tensor([v], dtype=torch.float64)  # noqa: E731
    return transport.dense(*transport.mean_operator(t(bio), t(cryo), f, conservative=conservative))[0].numpy()


def test_tri_matrix_bioturbation_values():
    d = np.diag(_band(1e-4, 5e-4, 6, 6, 20)) * 365
    np.testing.assert_allclose(d[:4], [0.166667, 0.133333, 0.0571429, 0.0303571], rtol=R6)
    np.testing.assert_allclose(d[19], 8.04764e-5, rtol=R6)


def test_tri_matrix_cryoturbation_values():
    d = np.diag(_band(1e-4, 5e-4, 0.8, 0.9, 12)) * 365
    np.testing.assert_allclose(d[:4], [0.833333, 0.666667, 0.285714, 0.151786], rtol=R6)
    np.testing.assert_allclose(d[11], 0.00102689, rtol=R6)
    assert (np.abs(d[12:]) < 1e-25).all()
