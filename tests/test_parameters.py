"""Parameter spaces: names, order, groups, ranges, defaults and transforms (spec §2.3, §3.2)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

import xproda

CLM5_NAMES = (
    "diffus", "cryo", "q10", "efolding", "taucwd", "taul1", "taul2", "tau4s1", "tau4s2",
    "tau4s3", "fl1s1", "fl2s1", "fl3s2", "fs1s2", "fs1s3", "fs2s1", "fs2s3", "fs3s1", "fcwdl2",
    "w-scaling", "beta",
)
MIC_NAMES = (
    "bio", "cryo", "q10", "w_scaling", "tau4cwd", "tau4l1", "tau4l2", "tau4s1", "tau4s2_death",
    "tau4s2_enz", "tau4s3", "tau4s4", "mm_const_assim", "mm_const_decom", "fcwdl2", "pl1s1",
    "pl2s1", "pl3s4", "l1_cue", "l2l3_cue", "mic_cue", "pdeath2soc", "beta",
)


def test_names_in_spec_order():
    assert xproda.get_model("clm5").parameters.names == CLM5_NAMES
    assert xproda.get_model("microbial").parameters.names == MIC_NAMES


def test_groups_follow_spec():
    g = xproda.get_model("clm5").parameters.groups
    assert g["A"] == CLM5_NAMES[10:19]
    assert g["K"] == CLM5_NAMES[4:10]
    assert g["Xi"] == ("q10", "efolding", "w-scaling")
    assert g["V"] == ("diffus", "cryo")
    assert g["I"] == ("beta",)
    sp = xproda.get_model("microbial").parameters
    idx = lambda grp: tuple(i + 1 for i in sp.group_indices(grp))  # noqa: E731  (1-based)
    assert idx("A") == (8, 13, 19, 20, 21)
    assert idx("K") == (5, 6, 7, 9, 10, 11, 12, 14)
    assert idx("Xi") == (3, 4)
    assert idx("V") == (1, 2)
    assert idx("I") == (23,)
    assert idx("E") == (15, 16, 17, 18, 22)


def test_default_normalised_positions_match_spec_table():
    sp = xproda.get_model("clm5").parameters
    kp = dict(zip(sp.names, sp.default_normalized()))
    expected = {"diffus": 0.149, "cryo": 0.299, "q10": 0.167, "taucwd": 0.467, "taul1": 0.491,
                "taul2": 0.520, "tau4s1": 0.137, "tau4s2": 0.082, "tau4s3": 0.028, "fl1s1": 0.5,
                "fl2s1": 0.5, "fl3s2": 0.5, "fs1s3": 0.08, "fs2s1": 0.5, "fs2s3": 0.3,
                "fs3s1": 0.5, "fcwdl2": 0.52, "w-scaling": 0.2, "beta": 0.900}
    for k, v in expected.items():
        assert abs(kp[k] - v) < 5e-3, k
    assert kp["efolding"] > 1  # CLM5 default 10 m lies outside the PRODA prior (§10 item 5)
    assert np.isnan(kp["fs1s2"])  # sand-dependent, no constant default


def test_microbial_enzyme_turnover_is_log_scaled():
    p = xproda.get_model("microbial").parameters["tau4s3"]
    assert p.transform == "log10"
    np.testing.assert_allclose(p.to_physical(np.array([0.0, 0.5, 1.0])), [1e-3, 10 ** -1.5, 1.0])
    # same as the reference formula 10 ** (3 kp - 3)
    kp = np.linspace(0.01, 0.99, 7)
    np.testing.assert_allclose(p.to_physical(kp), 10 ** (3 * kp - 3), rtol=1e-14)


@pytest.mark.parametrize("name", ["clm5", "microbial"])
@given(data=st.data())
def test_round_trip_numpy_and_torch(name, data):
    sp = xproda.get_model(name).parameters
    th = data.draw(arrays(np.float64, (3, len(sp)), elements=st.floats(0.001, 0.999)))
    phys = sp.to_physical(th)
    np.testing.assert_allclose(sp.to_normalized(phys), th, atol=1e-12)
    lo, hi = sp.bounds.T
    assert ((phys >= lo - 1e-12 * np.abs(lo)) & (phys <= hi + 1e-12 * np.abs(hi))).all()
    tp = sp.to_physical(torch.tensor(th))
    np.testing.assert_allclose(tp.numpy(), phys, rtol=1e-14)
    np.testing.assert_allclose(sp.to_normalized(tp).numpy(), th, atol=1e-12)


def test_physical_dict_and_errors():
    sp = xproda.get_model("clm5").parameters
    d = sp.physical_dict(np.full((2, 21), 0.5))
    np.testing.assert_allclose(d["tau4s3"], 600.0)
    with pytest.raises(ValueError, match="21 clm5 parameters"):
        sp.to_physical(np.zeros((2, 3)))
    with pytest.raises(KeyError, match="no parameter 'tau'"):
        sp.index("tau")
    with pytest.raises(KeyError, match="unknown group"):
        sp.group_indices("E")
    assert "efolding" in sp and len(sp) == 21
    assert "diffus" in sp.describe()
