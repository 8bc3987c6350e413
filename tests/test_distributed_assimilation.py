"""Site-level assimilation in shards: invariance, Zarr resume after a kill, clusters, CLI."""

from __future__ import annotations

import sys
import textwrap
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import xproda
from xproda import io as xio
from xproda.cli import main
from xproda.sites.assimilation import distributed, samplers
from xproda.sites.assimilation.problem import assimilate
from xproda.testing import forcing_dataset, kill_when, regions_done, twin_profiles

TOP = np.array([0.0, 0.1, 0.3, 0.6])
BOTTOM = np.array([0.1, 0.3, 0.6, 1.0])
FREE = ["efolding", "tau4s2"]


def _world(n_sites: int = 10, seed: int = 0, ocean_sites: int = 0):
    """Gridded forcing and twin profiles at its land cells (the last ``ocean_sites`` sites
    placed on NaN cells)."""
    ds = forcing_dataset(6, 8, seed=seed, ocean_fraction=0.25)
    land = ds["nbedrock"].isel(month=0).notnull().values
    iy, ix = np.nonzero(land)
    wy, wx = np.nonzero(~land)
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(iy), n_sites - ocean_sites, replace=False)
    ys = np.concatenate([iy[pick], wy[:ocean_sites]])
    xs = np.concatenate([ix[pick], wx[:ocean_sites]])
    lat, lon = ds.lat.values[ys], ds.lon.values[xs]
    ids = [f"site-{i:03d}" for i in range(n_sites)]
    at = xproda.spatial.sample_sites(ds, lat=lat, lon=lon, ids=ids)
    from xproda.xr.api import forcing_arrays

    # scale: plausible densities; ocean sites (no model value) get a plausible profile
    _, df = twin_profiles(forcing_arrays(at, model="clm5"), FREE, seed=rng, low=0.3,
                          high=0.7, top=TOP, bottom=BOTTOM, ids=ids, lat=lat, lon=lon,
                          scale=0.02)
    return ds, df, at


MAP = dict(method="map", free=FREE, likelihood="gaussian", sigma_rel=0.05, log_space=True,
           n_starts=2, seed=3, progress=False, sampler_options={"method": "lbfgs", "steps": 8})
AM = dict(method="am", free=FREE, likelihood="gaussian", sigma_rel=0.05, log_space=True,
          n_chains=2, n_iter=60, seed=3, progress=False)


def _same(a: xr.Dataset, b: xr.Dataset, *, skip_attrs=("n_shards", "n_model_evaluations")):
    """Equal results, bit for bit (NaN where NaN), same dtypes, sites and attributes."""
    assert sorted(a.data_vars) == sorted(b.data_vars)
    for k in a.data_vars:
        x, y = np.asarray(a[k].values), np.asarray(b[k].values)
        assert x.dtype == y.dtype, k
        np.testing.assert_array_equal(x, y, err_msg=k)
    assert [str(s) for s in a["site"].values] == [str(s) for s in b["site"].values]
    for k, v in a.attrs.items():
        if k in skip_attrs or k.startswith("xproda_"):
            continue
        assert k in b.attrs, k  # sequences come back from Zarr as arrays
        assert str(np.asarray(b.attrs[k]).tolist()) == str(np.asarray(v).tolist()), k


@pytest.fixture(scope="module")
def world():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return _world(10, ocean_sites=0)


@pytest.fixture(scope="module")
def reference(world):
    _, df, at = world
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return assimilate(df, at, **MAP)


def test_shard_bounds():
    assert distributed.shard_bounds(5, 2) == [(0, 2), (2, 4), (4, 5)]
    assert distributed.shard_bounds(3, 10) == [(0, 3)]
    for bad in (0, -1, 1.5, True, "2"):
        with pytest.raises(ValueError, match="shard_size must be a positive integer"):
            distributed.shard_bounds(4, bad)


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.integers(1, 11))
def test_map_shards_equal_in_process(world, reference, shard_size):
    """MAP: any shard size gives the in-process result bit for bit (threads scheduler)."""
    _, df, at = world
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = assimilate(df, at, shard_size=shard_size, **MAP)
    assert res.attrs["n_shards"] == -(-10 // shard_size)
    assert res.attrs["n_sites"] == reference.attrs["n_sites"] == 10
    _same(reference, res)


def test_am_shards_equal_in_process(world):
    _, df, at = world
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = assimilate(df, at, **AM)
        for size in (3, 7):
            _same(ref, assimilate(df, at, shard_size=size, scheduler="threads", **AM))


REF = dict(method="reference", free=FREE, likelihood="gaussian", sigma_rel=0.05,
           log_space=True, seed=3, progress=False, sampler_options={"nsimu1": 40, "nsimu2": 60})


def test_reference_shards_equal_in_process(world, tmp_path):
    """The reference sampler's draws (NaN-padded to the batch's longest chain) combine across
    shards of other lengths: in memory as in-process; in a store padded to nsimu2 // 2."""
    _, df, at = world
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = assimilate(df, at, **REF)
        n_post = ref["n_accepted"].values // 2
        width = ref.sizes["draw"]
        assert width == n_post.max() < 60 // 2
        # the subject: shards whose longest chains are shorter than the run's
        widths = [int(n_post[a:b].max()) for a, b in distributed.shard_bounds(10, 2)]
        assert min(widths) < width
        for size in (1, 2, 7):
            _same(ref, assimilate(df, at, shard_size=size, **REF))
        store = tmp_path / "ref.zarr"
        res = assimilate(df, at, shard_size=3, store=str(store), **REF).compute()
    assert res.sizes["draw"] == samplers.max_post_draws(60) == 30
    assert np.isnan(res["samples"].values[:, :, width:]).all()
    np.testing.assert_array_equal(res["draw"].values, np.arange(30))
    _same(ref, res.isel(draw=slice(0, width)))


def test_sites_without_forcing_in_shards():
    """Ocean sites: NaN results and no_forcing flags as in-process, whole shards of them too."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _, df, at = _world(8, seed=1, ocean_sites=3)
        ref = assimilate(df, at, **MAP)
        assert ref["no_forcing"].values.sum() == 3 and np.isnan(ref["map"].values[-3:]).all()
        assert np.isfinite(ref["map"].values[:5]).all()
        for size in (2, 3, 8):  # size 3: the last shard has ocean sites only
            _same(ref, assimilate(df, at, shard_size=size, **MAP))


def test_store_round_trip_and_refusals(world, reference, tmp_path):
    _, df, at = world
    store = tmp_path / "post.zarr"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = assimilate(df, at, shard_size=4, store=str(store), **MAP)
    assert xio.is_complete(store)
    assert res.chunks["site"] == (4, 4, 2)
    _same(reference, res.compute())
    with pytest.raises(FileExistsError):
        assimilate(df, at, shard_size=4, store=str(store), **MAP)
    # a resume with other inputs is refused, naming what differs
    with pytest.raises(xproda.errors.StoreError, match="options"):
        assimilate(df, at, shard_size=4, store=str(store), resume=True, **{**MAP, "seed": 4})
    df2 = df.assign(soc=df.soc * 1.1)
    with pytest.raises(xproda.errors.StoreError, match="profiles_soc"):
        assimilate(df2, at, shard_size=4, store=str(store), resume=True, **MAP)
    with pytest.raises(ValueError, match="cannot be sharded"):
        assimilate(df, at, shard_size=4, **{**MAP, "method": "batch"})
    with pytest.raises(ValueError, match="checkpoint="):
        assimilate(df, at, shard_size=4, checkpoint=str(tmp_path / "c"), **MAP)


_KILL = textwrap.dedent(
    """
    import time, warnings
    import pandas as pd, xarray as xr
    warnings.simplefilter("ignore")
    from xproda.sites.assimilation import distributed as d
    from xproda.sites.assimilation.problem import assimilate
    real = d._shard_task
    def slow(spec):
        out = real(spec)
        time.sleep(0.4)
        return out
    d._shard_task = slow
    df = pd.read_csv({csv!r})
    at = xr.open_zarr({at!r}).load()
    assimilate(df, at, shard_size=2, store={store!r}, scheduler="synchronous", **{kw!r})
    """
)


@pytest.mark.slow
def test_resume_after_sigkill_redoes_no_finished_shard(world, reference, tmp_path,
                                                        monkeypatch):
    _, df, at = world
    csv, atp, store = tmp_path / "p.csv", tmp_path / "at.zarr", tmp_path / "post.zarr"
    df.to_csv(csv, index=False)
    at.to_zarr(atp, mode="w")
    code = _KILL.format(csv=str(csv), at=str(atp), store=str(store), kw=MAP)
    kill_when([sys.executable, "-c", code], lambda: regions_done(store) >= 2, timeout=180)
    assert not xio.is_complete(store)
    done = len(xio.list_done_regions(store))
    assert 2 <= done < 5
    calls = []
    real = distributed._shard_task

    def counting(spec):
        calls.append(list(spec["batch"].site_ids))
        return real(spec)

    monkeypatch.setattr(distributed, "_shard_task", counting)
    df_back = pd.read_csv(csv)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = assimilate(df_back, xr.open_zarr(atp).load(), shard_size=2, store=str(store),
                         resume=True, **MAP)
    # only the unfinished shards ran (the template adds one single-site call)
    shard_calls = [c for c in calls if len(c) == 2]
    assert len(shard_calls) == 5 - done
    assert xio.is_complete(store)
    _same(reference, res.compute())


@pytest.mark.slow
def test_local_cluster_equals_threads(world, reference):
    distributed_mod = pytest.importorskip("distributed")
    _, df, at = world
    with distributed_mod.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                      dashboard_address=None) as cluster, \
            distributed_mod.Client(cluster), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = assimilate(df, at, shard_size=3, **MAP)
    _same(reference, res)


# -------------------------------------------------------------------------------------------
# command line
# -------------------------------------------------------------------------------------------
def _fails(args, capsys, match):
    capsys.readouterr()
    assert main(args) != 0
    err = capsys.readouterr().err
    assert err.startswith("xproda ") and len(err.strip().splitlines()) == 1, err
    import re

    assert re.search(match, err), err
    return err


@pytest.fixture(scope="module")
def cli_files(world, tmp_path_factory):
    ds, df, _ = world
    d = tmp_path_factory.mktemp("cli")
    csv, fz = d / "profiles.csv", d / "forcing.zarr"
    df.to_csv(csv, index=False)
    ds.drop_vars("spatial_ref", errors="ignore").to_zarr(fz, mode="w", zarr_format=3)
    return str(csv), str(fz)


def test_cli_assimilate_equals_api(cli_files, reference, tmp_path):
    csv, fz = cli_files
    out = tmp_path / "post.zarr"
    args = ["assimilate", "--profiles", csv, "--forcing", fz, "--out", str(out), "--method",
            "map", "--free", ",".join(FREE), "--likelihood", "gaussian", "--n-starts", "2",
            "--seed", "3", "--shard-size", "4", "--quiet"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # the CLI uses the default sigma and steps: compare with the API given the same
        assert main(args) == 0
        api = assimilate(pd.read_csv(csv), xr.open_zarr(fz).load().proda.sample_sites(
            pd.read_csv(csv).drop_duplicates("profile_id").set_index("profile_id")),
            method="map", free=FREE, likelihood="gaussian", n_starts=2, seed=3,
            progress=False, shard_size=4)
    res = xio.open_dataset(out).compute()
    np.testing.assert_array_equal(res["map"].values, api["map"].values)


def test_cli_assimilate_bad_input(cli_files, tmp_path, capsys):
    csv, fz = cli_files
    out = str(tmp_path / "p.zarr")
    base = ["assimilate", "--forcing", fz, "--out", out, "--method", "map", "--quiet"]
    _fails(base + ["--profiles", str(tmp_path / "none.csv")], capsys,
           "--profiles: no file .*none.csv")
    bad = tmp_path / "bad.csv"
    pd.read_csv(csv).drop(columns="soc").to_csv(bad, index=False)
    _fails(base + ["--profiles", str(bad)], capsys, "soc")
    _fails(base + ["--profiles", csv, "--free", "q10,nope"], capsys, "nope")
    _fails(base + ["--profiles", csv, "--method", "batch", "--resume"], capsys,
           "--resume: batch mode")
    with pytest.raises(SystemExit):
        main(base + ["--profiles", csv, "--units", "soc"])
    assert "expected column=unit" in capsys.readouterr().err
