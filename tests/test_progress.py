"""One switch for progress: ``set_options(progress=...)`` is the default of every bar."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr

import xproda
from xproda import io as xio
from xproda.options import progress_bar, show_progress


def _lazy():
    return xr.Dataset({"a": (("lat", "lon"), np.ones((4, 6)))},
                      coords={"lat": np.arange(4.0), "lon": np.arange(6.0)}).chunk(
        {"lat": 2, "lon": 3})


def test_the_option_is_the_default(tmp_path, capsys):
    xio.write_zarr(_lazy(), tmp_path / "a.zarr", progress=None)
    assert "write_zarr a.zarr" in capsys.readouterr().err  # default: on
    with xproda.set_options(progress=False):
        assert not show_progress(None) and show_progress(True)
        xio.write_zarr(_lazy(), tmp_path / "b.zarr")
        assert capsys.readouterr().err == ""
        xio.write_zarr(_lazy(), tmp_path / "c.zarr", progress=True)  # explicit wins
        assert "write_zarr c.zarr" in capsys.readouterr().err
    assert show_progress(None)


def test_progress_bar_is_tqdm_auto_and_disabled_by_the_option():
    from tqdm.auto import tqdm

    with xproda.set_options(progress=False):
        bar = progress_bar(None, total=3, desc="x")
    assert isinstance(bar, tqdm) and bar.disable
    bar.update(1)
    bar.close()
    with pytest.raises(ValueError, match="progress"):
        xproda.set_options(progress="yes")


def test_assimilation_follows_the_option(capsys):
    from xproda.sites.assimilation.problem import SiteProblem, assimilate
    from xproda.testing import random_forcing, twin_profiles

    f = random_forcing(3, 1, regime="bio")
    truth, df = twin_profiles(f, ("efolding",), seed=1, ids=["a", "b", "c"])
    prob = SiteProblem(df, f, free=("efolding",), fixed=truth)
    kw = dict(method="map", free=("efolding",), fixed=truth, n_starts=1, seed=0,
              sampler_options={"steps": 5})
    with xproda.set_options(progress=False):
        assimilate(prob.batch, prob.forcing, **kw)
    assert capsys.readouterr().err == ""
    assimilate(prob.batch, prob.forcing, **kw)  # default: on
    assert "MAP" in capsys.readouterr().err
