"""``xproda run``: Zarr -> Zarr global runs, resume after a kill, S3 stores, errors."""

from __future__ import annotations

import json
import re
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

import xproda
from xproda import io as xio
from xproda.cli import main
from xproda.testing import forcing_dataset, kill_when, regions_done

P = 21


def _inputs(tmp_path: Path, *, ny=6, nx=8, chunks=None, storage_options=None, prefix=None):
    ds = forcing_dataset(ny, nx, seed=11, chunks=chunks or {"lat": 2, "lon": 4},
                         ocean_fraction=0.3)
    # an all-ocean region: the first 2 x 4 block
    ds = ds.map(lambda v: v.where((ds.lat < ds.lat[1]) | (ds.lon > ds.lon[3])))
    rng = np.random.default_rng(5)
    names = list(xproda.get_model("clm5").parameters.names)
    theta = xr.DataArray(rng.uniform(0.1, 0.9, (ny, nx, P)), dims=("lat", "lon", "parameter"),
                         coords={"lat": ds.lat, "lon": ds.lon, "parameter": names})
    params = theta.to_dataset(name="theta").chunk({"lat": 3, "lon": 8})
    base = prefix or str(tmp_path)
    fpath, ppath = f"{base}/forcing.zarr", f"{base}/params.zarr"
    kw = {"storage_options": storage_options} if storage_options else {}
    for obj, path in ((ds, fpath), (params, ppath)):
        for v in obj.variables.values():
            v.encoding.pop("chunks", None)
            v.encoding.pop("preferred_chunks", None)
        obj.to_zarr(path, mode="w", zarr_format=3, **kw)
    return ds, theta, fpath, ppath


def test_run_equals_in_memory(tmp_path):
    ds, theta, fpath, ppath = _inputs(tmp_path)
    out = tmp_path / "out.zarr"
    assert main(["run", "--forcing", fpath, "--params", ppath, "--out", str(out),
                 "--depth", "0-0.3", "--depth", "0-1", "--quiet"]) == 0
    assert xio.is_complete(out)
    res = xio.open_dataset(out).compute()
    ref = ds.compute().proda.steady_state(theta)
    for k in ("soc", "soc_stock", "turnover_time", "flags", "cell_area"):
        np.testing.assert_array_equal(res[k].values, ref[k].values, err_msg=k)
    np.testing.assert_array_equal(res["soc_stock_0_0.3m"].values,
                                  ref.proda.soc_stock(depth=(0, 0.3)).values)
    # the all-ocean region was skipped, yet reads back as NaN / no_data
    assert np.isnan(res["soc_stock"].values[:2, :4]).all()
    assert (res["flags"].values[:2, :4] == xproda.FLAGS["no_data"]).all()
    assert res.rio.crs.to_epsg() == 4326
    assert res["soc_stock"].attrs["standard_name"] == "soil_mass_content_of_carbon"
    # decode_coords="all" moves cell_measures from attrs to encoding
    assert res["soc_stock"].encoding["cell_measures"] == "area: cell_area"
    assert "cell_area" in res.coords
    # resuming a complete run does nothing
    assert main(["run", "--forcing", fpath, "--params", ppath, "--out", str(out),
                 "--depth", "0-0.3", "--depth", "0-1", "--quiet", "--resume"]) == 0


@pytest.mark.parametrize("flag", [[], ["--no-tune-malloc"]])
def test_run_tunes_malloc_unless_asked_not_to(tmp_path, monkeypatch, flag):
    calls = []
    monkeypatch.setattr(xproda, "tune_malloc", lambda **kw: calls.append(kw) or True)
    _, _, fpath, ppath = _inputs(tmp_path)
    assert main(["run", "--forcing", fpath, "--params", ppath, "--out",
                 str(tmp_path / "o.zarr"), "--quiet", *flag]) == 0
    assert len(calls) == (0 if flag else 1)


def test_tune_malloc(monkeypatch):
    import platform
    import sys

    if sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc":
        assert xproda.tune_malloc() is True  # mallopt accepted both settings
    with pytest.raises(ValueError, match="trim_threshold must be a non-negative int"):
        xproda.tune_malloc(trim_threshold=-1)
    with pytest.raises(ValueError, match="mmap_threshold must be a non-negative int .*'32M'"):
        xproda.tune_malloc(mmap_threshold="32M")
    with pytest.raises(ValueError, match="arena_max must be a non-negative int"):
        xproda.tune_malloc(arena_max=1.5)
    monkeypatch.setattr(sys, "platform", "darwin")
    assert xproda.tune_malloc() is False  # other C libraries: left alone


def fails(args, capsys, match: str) -> str:
    """``main(args)`` fails as a user error: status 1, one line on stderr, no traceback."""
    capsys.readouterr()
    assert main(args) == 1
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("xproda ")]
    assert "Traceback" not in err and len(lines) == 1, err
    err = lines[0]
    assert err.startswith(f"xproda {args[0]}: error: ")
    assert re.search(match, err), err
    return err


def test_existing_output_needs_resume_or_overwrite(tmp_path, capsys):
    _, _, fpath, ppath = _inputs(tmp_path)
    out = str(tmp_path / "out.zarr")
    args = ["run", "--forcing", fpath, "--params", ppath, "--out", out, "--quiet"]
    main(args)
    fails(args, capsys, "already exists; pass --resume to finish")
    # --debug shows the traceback (the exception propagates)
    with pytest.raises(FileExistsError, match="already exists; pass --resume to finish"):
        main(["--debug", *args])
    assert main(args + ["--overwrite"]) == 0


def test_missing_variable_error(tmp_path, capsys):
    ds, _, fpath, ppath = _inputs(tmp_path)
    bad = tmp_path / "bad.zarr"
    ds.drop_vars("W_SCALAR").to_zarr(bad, zarr_format=3)
    fails(["run", "--forcing", str(bad), "--params", ppath, "--out",
           str(tmp_path / "o.zarr"), "--quiet"], capsys, r"W_SCALAR \[1\]")
    fails(["run", "--forcing", str(tmp_path / "nothing.zarr"), "--params", ppath, "--out",
           str(tmp_path / "o.zarr"), "--quiet"], capsys, "nothing.zarr")
    for depth in ("a", "0.3-0.1", "1-1"):
        with pytest.raises(SystemExit) as stop:
            main(["run", "--forcing", fpath, "--params", ppath, "--out", "x.zarr",
                  "--depth", depth])
        assert stop.value.code == 2
        assert "argument --depth: expected TOP-BOTTOM" in capsys.readouterr().err


_KILL_SCRIPT = textwrap.dedent(
    """
    import time, xproda.xr.engine as x
    from xproda.cli import main
    real = x.column_block
    def slow(*a, **k):
        time.sleep(0.3)
        return real(*a, **k)
    x.column_block = slow
    main({args!r})
    """
)


@pytest.mark.slow
def test_resume_after_sigkill_is_bit_identical(tmp_path, capsys):
    _, _, fpath, ppath = _inputs(tmp_path)
    ref = tmp_path / "ref.zarr"
    common = ["run", "--forcing", fpath, "--params", ppath, "--quiet", "--depth", "0-1"]
    main(common + ["--out", str(ref)])
    out = tmp_path / "out.zarr"
    args = common + ["--out", str(out), "--chunks", "lat=1,lon=4"]
    # same run, smaller regions: the reference with the same chunks
    ref2 = tmp_path / "ref2.zarr"
    main(common + ["--out", str(ref2), "--chunks", "lat=1,lon=4"])
    kill_when([sys.executable, "-c", _KILL_SCRIPT.format(args=args)],
              lambda: regions_done(out) >= 3)
    assert not xio.is_complete(out)
    # the killed run is not finished with other parameters, another mode or other outputs
    other = str(tmp_path / "other.zarr")
    p2 = xio.open_dataset(ppath).compute()
    (p2 * 0.9 + 0.05).to_zarr(other, mode="w", zarr_format=3)
    common_out = [a if a != ppath else other for a in args]
    fails(common_out + ["--resume"], capsys, "input 'params'")
    fails(args + ["--resume", "--reference"], capsys, "StoreError: .*attribute 'source'")
    fails(args + ["--resume", "--depth", "0-0.3"], capsys, "StoreError: .*data variables")
    assert main(args + ["--resume"]) == 0
    a, b = xio.open_dataset(out).compute(), xio.open_dataset(ref2).compute()
    for k in a.data_vars:
        np.testing.assert_array_equal(a[k].values, b[k].values, err_msg=k)
    chunk_files = lambda p: sorted(
        str(f.relative_to(p)) for f in p.rglob("c/*") if f.is_file())
    assert chunk_files(out) == chunk_files(ref2)
    for f in chunk_files(out):
        assert (out / f).read_bytes() == (ref2 / f).read_bytes(), f
    # a different region layout gives the same numbers
    c = xio.open_dataset(ref).compute()
    for k in a.data_vars:
        np.testing.assert_array_equal(a[k].values, c[k].values, err_msg=k)


@pytest.mark.slow
def test_s3_run_equals_local(tmp_path, s3):
    so, fs = s3
    _, _, fpath, ppath = _inputs(tmp_path)
    local = tmp_path / "local.zarr"
    main(["run", "--forcing", fpath, "--params", ppath, "--out", str(local), "--quiet"])
    _, _, sf, sp = _inputs(tmp_path, storage_options=so, prefix="s3://xproda-bucket/cli")
    url = "s3://xproda-bucket/cli/out.zarr"
    assert main(["run", "--forcing", sf, "--params", sp, "--out", url, "--quiet",
                 "--storage-options", json.dumps(so)]) == 0
    assert xio.is_complete(url, storage_options=so)
    a = xio.open_dataset(url, storage_options=so).compute()
    b = xio.open_dataset(local).compute()
    for k in b.data_vars:
        np.testing.assert_array_equal(a[k].values, b[k].values, err_msg=k)
    assert a.rio.crs.to_epsg() == 4326


@pytest.mark.slow
@pytest.mark.distributed
def test_local_cluster_run_equals_threaded(tmp_path):
    _, _, fpath, ppath = _inputs(tmp_path)
    a, b = tmp_path / "threads.zarr", tmp_path / "cluster.zarr"
    main(["run", "--forcing", fpath, "--params", ppath, "--out", str(a), "--quiet"])
    main(["run", "--forcing", fpath, "--params", ppath, "--out", str(b), "--quiet",
          "--scheduler", "local-cluster", "--workers", "2", "--torch-threads", "1"])
    x, y = xio.open_dataset(a).compute(), xio.open_dataset(b).compute()
    for k in x.data_vars:
        np.testing.assert_array_equal(x[k].values, y[k].values, err_msg=k)


@pytest.mark.parametrize("separate_covariates", [False, True])
def test_run_with_network(tmp_path, separate_covariates):
    from xproda.learning.network import ParameterNet

    ds, _, fpath, _ = _inputs(tmp_path)
    rng = np.random.default_rng(3)
    cov = xr.Dataset({"c1": (("lat", "lon"), rng.uniform(0, 10, (6, 8))),
                      "c2": (("lat", "lon"), rng.uniform(-5, 5, (6, 8)))},
                     coords={"lat": ds.lat, "lon": ds.lon})
    names = list(xproda.get_model("clm5").parameters.names)
    net = ParameterNet(["c1", "c2"], names, hidden=(8,), x_min=[0, -5], x_max=[10, 5], seed=1)
    npath = tmp_path / "net.safetensors"
    net.save(npath)
    if separate_covariates:
        cpath = str(tmp_path / "cov.zarr")
        cov.to_zarr(cpath, mode="w", zarr_format=3)
        extra = ["--covariates", cpath]
    else:  # covariates inside the forcing store
        fpath = str(tmp_path / "forcing_cov.zarr")
        merged = xr.merge([ds, cov])
        for v in merged.variables.values():
            v.encoding.pop("chunks", None)
            v.encoding.pop("preferred_chunks", None)
        merged.to_zarr(fpath, mode="w", zarr_format=3)
        extra = []
    out = tmp_path / "out.zarr"
    assert main(["run", "--forcing", fpath, "--network", str(npath), "--out", str(out),
                 "--quiet", *extra]) == 0
    res = xio.open_dataset(out).compute()
    theta = cov.proda.predict_parameters(net)
    ref = ds.compute().proda.steady_state(theta)
    np.testing.assert_array_equal(res["soc_stock"].values, ref["soc_stock"].values)
    with pytest.raises(SystemExit):
        main(["run", "--forcing", fpath, "--network", str(npath), "--params", "x",
              "--out", str(out)])


def test_resume_refuses_other_inputs_model_or_mode(tmp_path, capsys):
    """A store started with other parameters, another model or mode is not finished with
    regions of a second run (issue 16/17: inputs and the model enter the fingerprint)."""
    ds, theta, fpath, ppath = _inputs(tmp_path)
    out = str(tmp_path / "out.zarr")
    common = ["run", "--forcing", fpath, "--out", out, "--quiet"]
    assert main(common + ["--params", ppath]) == 0
    # the same inputs: resuming a finished store is a no-op
    assert main(common + ["--params", ppath, "--resume"]) == 0
    other = str(tmp_path / "other.zarr")
    (theta * 0.9 + 0.05).to_dataset(name="theta").to_zarr(other, mode="w", zarr_format=3)
    for extra, what in ((["--params", other], "input 'params'"),
                        (["--params", ppath, "--reference"], "attribute 'source'")):
        fails(common + extra + ["--resume"], capsys,
              f"StoreError: .*different dataset, inputs or options.*{what}")
    # other forcing values with the same metadata: the forcing's bytes are hashed
    ds2 = ds.copy(deep=True)
    ds2["ALTMAX"] = ds2["ALTMAX"] * 0.99
    fpath2 = str(tmp_path / "forcing2.zarr")
    for v in ds2.variables.values():
        v.encoding.pop("chunks", None)
        v.encoding.pop("preferred_chunks", None)
    ds2.to_zarr(fpath2, mode="w", zarr_format=3)
    fails(["run", "--forcing", fpath2, "--out", out, "--quiet", "--params", ppath, "--resume"],
          capsys, "input 'forcing'")


@pytest.mark.parametrize("option,value,match", [
    ("--chunks", "lat=abc", "argument --chunks: expected dim=size"),
    ("--chunks", "lat", "argument --chunks: expected dim=size"),
    ("--storage-options", "{bad json", "argument --storage-options: not valid JSON"),
    ("--storage-options", "[1, 2]", "argument --storage-options: expected a JSON object"),
    ("--scheduler", "bogus", "argument --scheduler: expected one of threads"),
    ("--scheduler", "tcp://host", "tcp://10.0.0.5:8786, got 'tcp://host'"),
    ("--scheduler", "http://host:8786", "unknown scheme 'http'"),
    ("--scheduler", "host:99999", "argument --scheduler: expected one of threads"),
])
def test_bad_options_name_the_option(tmp_path, capsys, option, value, match):
    with pytest.raises(SystemExit) as stop:
        main(["run", "--forcing", "f.zarr", "--params", "p.zarr", "--out",
              str(tmp_path / "o.zarr"), option, value])
    assert stop.value.code == 2
    assert match in capsys.readouterr().err


def test_chunks_of_an_unknown_dim_refused(tmp_path, capsys):
    _, _, fpath, ppath = _inputs(tmp_path)
    fails(["run", "--forcing", fpath, "--params", ppath, "--out",
           str(tmp_path / "o.zarr"), "--chunks", "latitude=10", "--quiet"], capsys,
          r"DimensionError: chunks: no dim\(s\) \['latitude'\] in the forcing")


def test_scheduler_addresses_are_normalised():
    from xproda.cli import _parse_scheduler

    assert _parse_scheduler("10.0.0.5:8786") == "tcp://10.0.0.5:8786"
    assert _parse_scheduler("tls://h:1") == "tls://h:1"
    assert _parse_scheduler("local-cluster") == "local-cluster"


def test_version(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--version"])
    assert stop.value.code == 0
    assert capsys.readouterr().out.strip() == f"xproda {xproda.__version__}"
