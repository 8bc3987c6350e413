"""ds.proda.simulate / spin_up / write_simulation and the scenario helpers."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import xproda
from xproda.models import FLAGS
from xproda.testing import forcing_dataset, kill_when, raise_if_dask_computes, regions_done
from xproda.xr import scenarios as sc
from xproda.xr import transient as xt

TH = xr.DataArray(np.full(21, 0.5), dims="parameter")


@pytest.fixture(scope="module")
def clim():
    return forcing_dataset(ny=3, nx=4, seed=2)


@pytest.fixture(scope="module")
def scenario(clim):
    return sc.scale_inputs(sc.warming(sc.repeat_climatology(clim, years=3), 3.0), 1.2)


@pytest.fixture(scope="module")
def eager(scenario):
    return scenario.proda.simulate(TH, time_chunk=12)


def _same(a: xr.Dataset, b: xr.Dataset, keys=("soc_stock", "net_flux", "respiration",
                                             "pools", "initial_soc_stock", "flags")):
    for k in keys:
        np.testing.assert_array_equal(a[k].values, b[k].values, err_msg=k)


def test_outputs_metadata_and_kernel_parity(scenario, eager):
    out = eager
    assert out["soc_stock"].dims == ("time", "lat", "lon")
    assert out["pools"].dims == ("layer", "pool", "lat", "lon")
    assert out["soc_stock"].attrs["standard_name"] == "soil_mass_content_of_carbon"
    assert out["soc_stock"].attrs["units"] == "kg m-2"
    assert out["net_flux"].attrs["units"] == "g m-2 yr-1"
    assert "spatial_ref" in out.coords and "cell_area" in out.coords
    assert out.sizes["time"] == 36 and out["time"].values[0].year == 2001
    assert "units" not in out.attrs and "simulate" in out.attrs["history"]
    # ocean / no-data cells are NaN and flagged; land cells ran and spun up
    nodata = np.isnan(scenario["TSOI"].isel(time=0, layer=0)).values
    assert np.isnan(out["soc_stock"].values[:, nodata]).all()
    assert (out["flags"].values[nodata] & FLAGS["no_data"]).all()
    assert np.isfinite(out["soc_stock"].values[:, ~nodata]).all()
    assert (out["spinup_cycles"].values[~nodata] > 0).all()
    # the same columns through the kernel
    m = xproda.get_model("clm5")
    i, j = np.argwhere(~nodata)[0]
    col = scenario.isel(lat=i, lon=j)
    f = {k: col[k].transpose("time", ...).values[None] for k in m.required_forcing}
    f = {k: (v if "time" in col[k].dims else np.repeat(v[:, None], 36, 1)) for k, v in f.items()}
    sim = m.simulate(np.full((1, 21), 0.5), f)
    np.testing.assert_allclose(out["soc_stock"].values[:, i, j], sim["soc_stock"][0] / 1e3,
                               rtol=1e-12)


def test_lazy_and_equal_to_eager(scenario, eager):
    lazy_in = scenario.chunk({"lat": 2, "lon": 3})
    with raise_if_dask_computes():
        lazy = lazy_in.proda.simulate(TH, time_chunk=7)
    assert lazy["soc_stock"].chunks is not None
    assert lazy["soc_stock"].data.chunks[0] == (7, 7, 7, 7, 7, 1)
    _same(lazy.compute(), eager)


@settings(max_examples=6, deadline=None)
@given(lat=st.integers(1, 3), lon=st.integers(1, 4), tc=st.integers(1, 36))
def test_chunk_invariance(scenario, eager, lat, lon, tc):
    out = scenario.chunk({"lat": lat, "lon": lon}).proda.simulate(TH, time_chunk=tc)
    _same(out.compute(), eager)


def test_parameter_maps_and_x0_continuation(scenario, clim):
    theta = xr.DataArray(np.random.default_rng(0).uniform(0.3, 0.7, (3, 4, 21)),
                         dims=("lat", "lon", "parameter"),
                         coords={"lat": clim.lat, "lon": clim.lon})
    full = scenario.proda.simulate(theta)
    a = scenario.isel(time=slice(0, 20)).proda.simulate(theta, spin_up_forcing=scenario.isel(
        time=slice(0, 12)))
    b = scenario.isel(time=slice(20, None)).proda.simulate(theta, x0=a)
    np.testing.assert_array_equal(
        np.concatenate([a["soc_stock"].values, b["soc_stock"].values]), full["soc_stock"].values)
    ss = clim.proda.steady_state(theta, pools=True)
    from_ss = scenario.proda.simulate(theta, x0=ss)
    np.testing.assert_allclose(from_ss["initial_soc_stock"].values, ss["soc_stock"].values,
                               rtol=1e-12)


def test_spin_up_dataset(clim):
    su = clim.proda.spin_up(TH)
    assert su["pools"].dims == ("layer", "pool", "lat", "lon")
    land = np.isfinite(su["soc_stock"].values)
    assert land.any() and (su["spinup_cycles"].values[land] > 0).all()
    assert (su["flags"].values[land] == 0).all()
    # the periodic state of the climatology: a run of it stays there
    run = sc.repeat_climatology(clim, years=2).proda.simulate(TH, x0=su)
    rel = np.abs(run["soc_stock"].isel(time=-1) / su["soc_stock"] - 1).values[land]
    assert rel.max() < 1e-9


def _interrupted(monkeypatch, at: int, write) -> None:
    """Run ``write()`` with :func:`simulate` interrupted at its ``at``-th call (a kill)."""
    real = xt.simulate
    calls = {"n": 0}

    def failing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == at:
            raise KeyboardInterrupt("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(xt, "simulate", failing)
    with pytest.raises(KeyboardInterrupt):
        write()
    monkeypatch.setattr(xt, "simulate", real)


def test_write_simulation_equals_and_resumes(scenario, eager, tmp_path, monkeypatch):
    store = tmp_path / "run.zarr"
    out = scenario.proda.write_simulation(TH, store, time_chunk=10, progress=False)
    assert out.attrs["xproda_steps_done"] == 36
    _same(out, eager)
    import json

    from xproda.io import ZSTD_LEVEL

    codecs = json.loads((store / "soc_stock" / "zarr.json").read_text())["codecs"]
    assert {"name": "zstd", "configuration": {"level": ZSTD_LEVEL, "checksum": False}} in codecs
    with pytest.raises(FileExistsError, match="resume=True"):
        scenario.proda.write_simulation(TH, store, time_chunk=10, progress=False)
    # interrupted after two time chunks, then resumed: identical to the uninterrupted store
    store2 = tmp_path / "run2.zarr"
    _interrupted(monkeypatch, 3, lambda: scenario.proda.write_simulation(
        TH, store2, time_chunk=10, progress=False))
    assert xr.open_zarr(store2, consolidated=False).attrs["xproda_steps_done"] == 20
    resumed = scenario.proda.write_simulation(TH, store2, time_chunk=10, progress=False,
                                              resume=True)
    _same(resumed, eager)


def _files(root):
    """Every object of a store; the root document without ``history`` (time stamps)."""
    import json

    out = {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
           if p.is_file()}
    doc = json.loads(out.pop("zarr.json"))
    doc["attributes"].pop("history", None)
    out["zarr.json"] = json.dumps(doc, sort_keys=True).encode()
    return out


def test_write_simulation_protocol(scenario, eager, tmp_path, monkeypatch):
    """One resumable-write protocol (issue 17): other inputs refused by name, the lock,
    verification, byte-identical resume, damaged stores recomputed."""
    from xproda.errors import StoreError, StoreLockedError
    from xproda.io import verify
    from xproda.io.locking import store_lock
    from xproda.io.stores import target

    ref = tmp_path / "ref.zarr"
    scenario.proda.write_simulation(TH, ref, time_chunk=10, progress=False)
    assert verify(ref).ok and xproda.io.is_complete(ref)
    assert not list((ref / ".xproda").glob("state_*"))  # saved states are gone
    store = tmp_path / "run.zarr"
    _interrupted(monkeypatch, 3, lambda: scenario.proda.write_simulation(
        TH, store, time_chunk=10, progress=False))
    report = verify(store)
    assert report.ok and not report.complete and report.regions_checked == 2
    kw = dict(time_chunk=10, progress=False, resume=True)
    with pytest.raises(StoreError, match="input 'params'"):
        scenario.proda.write_simulation(TH * 0.9, store, **kw)
    with pytest.raises(StoreError, match="input 'forcing'"):
        sc.warming(scenario, 0.5).proda.write_simulation(TH, store, **kw)
    with pytest.raises(StoreError, match="input 'options'"):
        scenario.proda.write_simulation(TH, store, reference=True, **kw)
    with pytest.raises(StoreError, match="input 'run'"):
        scenario.proda.write_simulation(TH, store, **{**kw, "time_chunk": 12})
    with store_lock(target(store, None)), pytest.raises(StoreLockedError, match="another run"):
        scenario.proda.write_simulation(TH, store, **kw)
    out = scenario.proda.write_simulation(TH, store, **kw)
    _same(out, eager)
    assert _files(store) == _files(ref)
    # a chunk deleted from the finished store: found, and the run is computed again
    victim = sorted((store / "soc_stock" / "c").rglob("*"))[-1]
    victim.unlink()
    assert not verify(store).ok and not xproda.io.is_complete(store)
    with pytest.warns(RuntimeWarning, match="damaged .*computing the run again"):
        scenario.proda.write_simulation(TH, store, **kw)
    assert _files(store) == _files(ref)


_SIM_SCRIPT = """
import sys, time
import numpy as np, xarray as xr
from xproda.testing import forcing_dataset
from xproda.xr import scenarios as sc
from xproda.xr import transient as xt
real = xt.simulate
def slow(*a, **k):
    time.sleep(0.4)
    return real(*a, **k)
xt.simulate = slow
clim = forcing_dataset(ny=3, nx=4, seed=2)
scenario = sc.scale_inputs(sc.warming(sc.repeat_climatology(clim, years=3), 3.0), 1.2)
TH = xr.DataArray(np.full(21, 0.5), dims="parameter")
scenario.proda.write_simulation(TH, sys.argv[1], time_chunk=6, progress=False)
"""


@pytest.mark.slow
def test_write_simulation_killed_then_resumed(scenario, tmp_path):
    """kill -9 in the middle of write_simulation: a resume with other parameters is refused,
    the same call finishes it byte-identically (the stale lock is taken over)."""
    import sys

    from xproda.errors import StoreError

    ref = tmp_path / "ref.zarr"
    scenario.proda.write_simulation(TH, ref, time_chunk=6, progress=False)
    store = tmp_path / "run.zarr"
    kill_when([sys.executable, "-c", _SIM_SCRIPT, str(store)],
              lambda: regions_done(store) >= 2)
    assert not xproda.io.is_complete(store) and xproda.io.verify(store).ok
    kw = dict(time_chunk=6, progress=False, resume=True)
    with pytest.warns(RuntimeWarning, match="took over the lock"), \
            pytest.raises(StoreError, match="input 'params'"):
        scenario.proda.write_simulation(TH * 0.8, store, **kw)
    scenario.proda.write_simulation(TH, store, **kw)
    assert _files(store) == _files(ref)


def test_scenario_helpers(clim):
    base = sc.repeat_climatology(clim, years=2, start="1850-01-01")
    assert base.sizes["time"] == 24 and base["time"].values[0].year == 1850
    i, j = np.argwhere(np.isfinite(clim["TSOI"].isel(month=0, layer=0).values))[0]
    warm = sc.warming(base, 2.0)
    d = (warm["TSOI"] - base["TSOI"]).isel(lat=i, lon=j, layer=0).values
    np.testing.assert_allclose(d, np.linspace(0, 2, 24), atol=1e-12)
    assert "warming +2 K" in warm.attrs["scenario"]
    step = sc.warming(base, 2.0, gradual=False)
    assert float((step["TSOI"] - base["TSOI"]).min()) == pytest.approx(2.0)
    more = sc.scale_inputs(base, 1.5, gradual=False)
    np.testing.assert_allclose((more["LITR1_INPUT"] / base["LITR1_INPUT"]).values[np.isfinite(
        base["LITR1_INPUT"].values)], 1.5)
    anom = xr.Dataset({"TSOI": xr.DataArray(np.arange(12.0), dims="month"),
                       "LITR2_INPUT": xr.DataArray(2.0)})
    a = sc.apply_anomaly(base, anom)
    np.testing.assert_allclose((a["TSOI"] - base["TSOI"]).isel(lat=i, lon=j, layer=0).values,
                               np.tile(np.arange(12.0), 2))
    with pytest.raises(ValueError, match="not in the forcing"):
        sc.apply_anomaly(base, xr.Dataset({"FOO": xr.DataArray(1.0)}))
    with pytest.raises(ValueError, match="'time' dim"):
        sc.warming(clim, 1.0)
    with pytest.raises(ValueError, match="12 entries"):
        sc.repeat_climatology(clim.isel(month=slice(0, 6)), years=1)


def test_compare_parameters_sign_of_the_seeds_experiment(clim):
    """Warmer soils lose carbon; more input gains it: the comparison reports both runs."""
    runs = sc.compare_parameters(
        sc.warming(sc.repeat_climatology(clim, years=3), 4.0),
        {"heterogeneous": TH, "homogeneous": TH * 0 + 0.4})
    assert list(runs["experiment"].values) == ["heterogeneous", "homogeneous"]
    land = np.isfinite(runs["soc_change"].isel(experiment=0)).values
    assert (runs["soc_change"].values[:, land] < 0).all()  # warming only: losses everywhere
    gain = sc.compare_parameters(sc.scale_inputs(sc.repeat_climatology(clim, years=3), 1.5),
                                 {"one": TH})
    assert (gain["soc_change"].values[:, land] > 0).all()


def test_errors(clim, scenario):
    with pytest.raises(ValueError, match="'time' dim"):
        clim.proda.simulate(TH)
    with pytest.raises(ValueError, match="missing forcing variable"):
        scenario.drop_vars("TSOI").proda.simulate(TH)
    with pytest.raises(ValueError, match="x0 must be"):
        scenario.proda.simulate(TH, x0="cold")
    with pytest.raises(ValueError, match="dt='calendar' needs"):
        xt.step_days(None, 3, "calendar")
    with pytest.raises(NotImplementedError, match="linear CLM5"):
        scenario.proda.simulate(xr.DataArray(np.full(23, 0.5), dims="parameter"),
                                model="microbial")
    days = xt.step_days(scenario["time"], 36, "calendar")
    assert days[:3].tolist() == [31.0, 28.0, 31.0]


@pytest.mark.slow
def test_write_simulation_on_s3_resumes(scenario, eager, s3, monkeypatch):
    so, _ = s3
    url = "s3://xproda-bucket/transient.zarr"
    _interrupted(monkeypatch, 2, lambda: scenario.proda.write_simulation(
        TH, url, storage_options=so, time_chunk=12, progress=False))
    out = scenario.proda.write_simulation(TH, url, storage_options=so, time_chunk=12,
                                          progress=False, resume=True)
    assert out.attrs["xproda_steps_done"] == 36
    _same(out, eager)
