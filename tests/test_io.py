"""Tests of xproda.io: opening inputs (CRS kept) and resumable region-by-region Zarr writes."""

from __future__ import annotations

import json
import os
import sys
import textwrap
import threading
import time
import warnings
from collections import Counter
from pathlib import Path

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr

from xproda import io as xio
from xproda.io import writer as xwriter
from xproda.testing import kill_when, regions_done

rioxarray = pytest.importorskip("rioxarray")

# rioxarray 0.19 multiplies affine transforms with `*` (deprecated in affine); not ours
pytestmark = pytest.mark.filterwarnings("ignore:Use `@` matmul:PendingDeprecationWarning")

NY, NX, NL = 12, 16, 3  # grid: 3 x 4 regions of 4 x 4 cells
CHUNKS = {"lat": 4, "lon": 4}
TESTS_DIR = Path(__file__).resolve().parent

# ----------------------------------------------------------------------------------------------
# deterministic data
# ----------------------------------------------------------------------------------------------


def _values(seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    lat = np.linspace(-55.0, 55.0, NY)
    lon = np.linspace(0.0, 337.5, NX)
    rs = np.random.RandomState(seed)
    soc = 5 + 3 * np.sin(np.deg2rad(lat))[:, None] * np.cos(np.deg2rad(lon))[None, :]
    soc = soc + rs.uniform(0, 1, soc.shape)
    soc[:4, :8] = np.nan  # regions (0, 0) and (0, 1): all "ocean"
    soc[rs.uniform(size=soc.shape) < 0.1] = np.nan  # scattered no-data cells
    prof = soc[None] * np.array([0.5, 0.3, 0.2])[:, None, None]
    return lat, lon, soc, prof


def make_dataset(*, seed: int = 0, lazy: bool = True) -> xr.Dataset:
    lat, lon, soc, prof = _values(seed)
    if lazy:
        soc_d = da.from_array(soc, chunks=(4, 4))
        prof_d = da.from_array(prof, chunks=(NL, 4, 4))
    else:
        soc_d, prof_d = soc, prof
    ds = xr.Dataset(
        {
            "soc_stock": (("lat", "lon"), soc_d, {"units": "kg m-2", "long_name": "SOC stock"}),
            "soc": (
                ("layer", "lat", "lon"),
                prof_d,
                {"units": "g m-3", "long_name": "soil organic carbon", "standard_name": "x"},
            ),
        },
        coords={
            "lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
            "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"}),
            "layer": ("layer", np.arange(1, NL + 1)),
            "lat_bnds": (("lat", "bnds"), np.stack([lat - 5, lat + 5], axis=1)),
            "lon_bnds": (("lon", "bnds"), np.stack([lon - 11.25, lon + 11.25], axis=1)),
        },
        attrs={"title": "xproda test", "Conventions": "CF-1.8"},
    )
    ds["lat"].attrs["bounds"] = "lat_bnds"
    ds["lon"].attrs["bounds"] = "lon_bnds"
    return ds.rio.write_crs("EPSG:4326")


_CALLS: Counter = Counter()
_CALLS_LOCK = threading.Lock()


def _counted(block: np.ndarray, block_info=None, sleep: float = 0.0) -> np.ndarray:
    """Identity that records which block was computed (and optionally takes its time)."""
    if not block_info:  # meta inference
        return block.copy()
    with _CALLS_LOCK:
        _CALLS[tuple(block_info[0]["chunk-location"])] += 1
    if sleep:
        time.sleep(sleep)
    return block.copy()


def slow_dataset(sleep: float = 0.0) -> xr.Dataset:
    """Lazy dataset whose regions take ``sleep`` seconds each (values do not depend on it)."""
    ds = make_dataset()
    soc = ds.soc_stock.data.map_blocks(_counted, sleep=sleep, dtype=float, meta=np.array((), float))
    return ds.assign(soc_stock=(("lat", "lon"), soc, ds.soc_stock.attrs), soc=ds.soc * 1.0)


def snapshot(root: str | os.PathLike, fs=None) -> dict[str, bytes]:
    """Every object of a store, by key (relative path) -> bytes."""
    if fs is None:
        root = Path(root)
        return {
            p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*") if p.is_file()
        }
    fs.invalidate_cache()
    files = fs.find(root)
    return {f[len(root) :].lstrip("/"): fs.cat_file(f) for f in files}


def chunk_keys(snap: dict[str, bytes]) -> set[str]:
    return {k for k in snap if "/c/" in k or k.startswith("c/")}


def assert_same_store(a: dict[str, bytes], b: dict[str, bytes]) -> None:
    assert chunk_keys(a) == chunk_keys(b)
    assert set(a) == set(b)
    for k in a:
        assert a[k] == b[k], f"object {k!r} differs"


def assert_same_arrays(path_a, path_b, so_a=None, so_b=None) -> None:
    a = xio.open_dataset(path_a, storage_options=so_a).load()
    b = xio.open_dataset(path_b, storage_options=so_b).load()
    assert set(a.variables) == set(b.variables)
    for name in a.variables:
        np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=str(name))


@pytest.fixture(autouse=True)
def _reset_calls():
    _CALLS.clear()
    yield


# ----------------------------------------------------------------------------------------------
# round trip, CRS, attrs
# ----------------------------------------------------------------------------------------------


def test_round_trip_values_attrs_crs(tmp_path):
    ds = make_dataset()
    store = tmp_path / "run.zarr"
    report = xio.write_zarr(ds, store, progress=False, attrs={"run_id": "abc"})
    assert report.regions == 12 and report.complete
    assert report.written + report.skipped_empty == 12 and report.resumed == 0
    assert "12 regions" in repr(report) and "written=" in repr(report)
    assert xio.is_complete(store)

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        out = xio.open_dataset(store)
        xr.open_zarr(store, consolidated=False).close()
    assert all(v.chunks is not None for v in out.data_vars.values())  # lazy
    for name in ds.data_vars:
        np.testing.assert_array_equal(out[name].values, ds[name].values)
        assert out[name].attrs == ds[name].attrs
        assert out[name].dims == ds[name].dims
    for name in ("lat", "lon", "layer", "lat_bnds", "lon_bnds"):
        np.testing.assert_array_equal(out[name].values, ds[name].values)
        assert name in out.coords
    for name in ("lat", "lon"):
        attrs = {**out[name].attrs, "bounds": out[name].encoding.get("bounds")}
        assert attrs == ds[name].attrs
    assert "spatial_ref" in out.coords
    assert out.rio.crs == ds.rio.crs
    assert out.rio.crs.to_epsg() == 4326
    assert out.attrs["title"] == "xproda test" and out.attrs["run_id"] == "abc"
    assert out.attrs[xio.ATTR_COMPLETE] == 1
    assert len(out.attrs[xio.ATTR_FINGERPRINT]) == 64
    # float variables use NaN as fill value; progress markers are gone
    meta = json.loads((store / "soc_stock" / "zarr.json").read_text())
    assert meta["fill_value"] == "NaN"
    assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [4, 4]
    # chunks are compressed with xproda's Zstandard level (not Zarr's slower default)
    assert {"name": "zstd", "configuration": {"level": xio.ZSTD_LEVEL, "checksum": False}} in \
        meta["codecs"]
    # the markers are gone; the manifest of what was written stays
    assert not list((store / ".xproda").glob("r*"))
    manifest = json.loads((store / ".xproda" / "zarr.json").read_text())["attributes"]
    assert len(manifest["regions"]) == 12 and "soc_stock/zarr.json" in manifest["template"]
    assert len(xio.list_done_regions(store)) == 12


def test_rewrite_of_opened_result(tmp_path):
    """A result opened with open_dataset can be written again (encodings do not get in the way)."""
    xio.write_zarr(make_dataset(), tmp_path / "a.zarr", progress=False)
    again = xio.open_dataset(tmp_path / "a.zarr")
    report = xio.write_zarr(again, tmp_path / "b.zarr", progress=False)
    assert report.regions == 12
    out = xio.open_dataset(tmp_path / "b.zarr")
    assert out.rio.crs.to_epsg() == 4326
    assert out.lat.encoding.get("bounds") == "lat_bnds"
    assert_same_arrays(tmp_path / "a.zarr", tmp_path / "b.zarr")


def test_numpy_backed_dataset(tmp_path):
    ds = make_dataset(lazy=False)
    r1 = xio.write_zarr(ds, tmp_path / "one.zarr", progress=False)
    assert r1.regions == 1 and r1.written == 1
    r2 = xio.write_zarr(
        ds, tmp_path / "many.zarr", region_dims={"lat": 6, "lon": 8}, progress=False
    )
    assert r2.regions == 4
    for store in ("one.zarr", "many.zarr"):
        out = xio.open_dataset(tmp_path / store)
        for name in ds.data_vars:
            np.testing.assert_array_equal(out[name].values, ds[name].values)
    assert json.loads((tmp_path / "many.zarr/soc/zarr.json").read_text())["chunk_grid"][
        "configuration"
    ]["chunk_shape"] == [NL, 6, 8]


# ----------------------------------------------------------------------------------------------
# skip_empty and mask
# ----------------------------------------------------------------------------------------------


def test_skip_empty_without_mask(tmp_path):
    ds = make_dataset()
    store = tmp_path / "run.zarr"
    report = xio.write_zarr(ds, store, progress=False)
    assert report.skipped_empty == 2 and report.written == 10
    keys = chunk_keys(snapshot(store))
    for i, j in [(0, 0), (0, 1)]:  # all-NaN regions: no chunk of any variable
        assert f"soc_stock/c/{i}/{j}" not in keys
        assert f"soc/c/0/{i}/{j}" not in keys
    assert "soc_stock/c/0/2" in keys and "soc/c/0/2/3" in keys
    assert len([k for k in keys if k.startswith("soc_stock/")]) == 10
    out = xio.open_dataset(store)
    assert np.isnan(out.soc_stock.values[:4, :8]).all()
    np.testing.assert_array_equal(out.soc_stock.values, ds.soc_stock.values)
    np.testing.assert_array_equal(out.soc.values, ds.soc.values)


def test_skip_empty_false_writes_every_chunk(tmp_path):
    store = tmp_path / "run.zarr"
    report = xio.write_zarr(make_dataset(), store, skip_empty=False, progress=False)
    assert report.written == 12 and report.skipped_empty == 0
    keys = chunk_keys(snapshot(store))
    assert len([k for k in keys if k.startswith("soc_stock/")]) == 12
    assert_same_arrays(store, store)
    np.testing.assert_array_equal(
        xio.open_dataset(store).soc.values, make_dataset().soc.values
    )


def test_skip_empty_with_mask_does_not_compute_masked_regions(tmp_path):
    ds = make_dataset()
    lat, lon = ds.lat.values, ds.lon.values
    land = np.ones((NY, NX), dtype=bool)
    land[:, 12:] = False  # region column 3: all sea
    land[8:, 0] = False  # partly masked regions (2, 0)
    mask = xr.DataArray(land, dims=("lat", "lon"), coords={"lat": lat, "lon": lon})
    soc = ds.soc_stock.data.map_blocks(_counted, dtype=float, meta=np.array((), float))
    ds = ds.assign(soc_stock=(("lat", "lon"), soc, ds.soc_stock.attrs))
    store = tmp_path / "run.zarr"
    report = xio.write_zarr(ds, store, mask=mask, progress=False)
    # column 3 skipped from the mask (3 regions), row 0 columns 0-1 all NaN after computing
    assert report.skipped_empty == 5 and report.written == 7
    computed = {loc for loc in _CALLS}
    assert not any(j == 3 for (_, j) in computed), "masked regions were computed"
    assert len(computed) == 9
    keys = chunk_keys(snapshot(store))
    assert not any(k.startswith("soc_stock/c/") and k.endswith("/3") for k in keys)
    out = xio.open_dataset(store)
    expected = make_dataset().where(mask)
    np.testing.assert_array_equal(out.soc_stock.values, expected.soc_stock.values)
    np.testing.assert_array_equal(out.soc.values, expected.soc.transpose(*out.soc.dims).values)


def test_mask_errors(tmp_path):
    ds = make_dataset()
    with pytest.raises(TypeError, match="mask must have dtype bool"):
        xio.write_zarr(ds, tmp_path / "a.zarr", mask=xr.ones_like(ds.soc_stock), progress=False)
    with pytest.raises(ValueError, match="not dimensions of ds"):
        xio.write_zarr(
            ds, tmp_path / "b.zarr", mask=xr.DataArray(np.ones(3, bool), dims="x"), progress=False
        )
    with pytest.raises(ValueError, match="size 5 along 'lat'"):
        xio.write_zarr(
            ds, tmp_path / "c.zarr", mask=xr.DataArray(np.ones(5, bool), dims="lat"), progress=False
        )


# ----------------------------------------------------------------------------------------------
# resume, fingerprint, existing stores
# ----------------------------------------------------------------------------------------------


class _Boom(RuntimeError):
    pass


def _interrupt_after(monkeypatch, n_ok: int):
    """Make region tasks fail after ``n_ok`` regions were written (simulated crash)."""
    real = xwriter._region_task
    done = []
    lock = threading.Lock()

    def flaky(spec, *blocks):
        with lock:
            ok = len(done) < n_ok
            if ok:
                done.append(spec.key)
        if not ok:
            raise _Boom(f"simulated crash at {spec.key}")
        return real(spec, *blocks)

    monkeypatch.setattr(xwriter, "_region_task", flaky)
    return done


def test_resume_after_interruption_in_process(tmp_path, monkeypatch):
    ref = tmp_path / "ref.zarr"
    xio.write_zarr(make_dataset(), ref, progress=False)

    store = tmp_path / "run.zarr"
    _interrupt_after(monkeypatch, 5)
    with pytest.raises(_Boom):
        xio.write_zarr(make_dataset(), store, progress=False, batch_size=3)
    monkeypatch.undo()

    assert not xio.is_complete(store)
    done = xio.list_done_regions(store)
    assert 1 <= len(done) <= 5
    assert all(set(r) == {"lat", "lon"} for r in done)
    # an interrupted store opens without warnings, consolidated or not
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xr.open_zarr(store).close()
        xr.open_zarr(store, consolidated=False).close()
        xio.open_dataset(store).close()
    assert xr.open_zarr(store).attrs[xio.ATTR_COMPLETE] == 0

    with pytest.raises(FileExistsError, match="resume=True"):
        xio.write_zarr(make_dataset(), store, progress=False)
    report = xio.write_zarr(make_dataset(), store, resume=True, progress=False)
    assert report.resumed == len(done)
    assert report.written + report.skipped_empty + report.resumed == 12
    assert xio.is_complete(store)
    assert_same_store(snapshot(ref), snapshot(store))
    assert_same_arrays(ref, store)

    # resuming a complete store is a no-op
    again = xio.write_zarr(make_dataset(), store, resume=True, progress=False)
    assert again.resumed == 12 and again.written == 0
    assert_same_store(snapshot(ref), snapshot(store))


def test_resume_after_interrupted_template_or_completion(tmp_path, monkeypatch):
    ref = tmp_path / "ref.zarr"
    xio.write_zarr(make_dataset(), ref, progress=False)

    # killed while the template is written: root group with fingerprint, no template marker
    store = tmp_path / "a.zarr"
    monkeypatch.setattr(xwriter, "consolidate", lambda target: (_ for _ in ()).throw(_Boom()))
    with pytest.raises(_Boom):
        xio.write_zarr(make_dataset(), store, progress=False)
    monkeypatch.undo()
    assert (store / "zarr.json").exists() and not (store / ".xproda").exists()
    report = xio.write_zarr(make_dataset(), store, resume=True, progress=False)
    assert report.resumed == 0 and report.written == 10
    assert_same_store(snapshot(ref), snapshot(store))

    # killed between the completion flag and the removal of the markers
    store = tmp_path / "b.zarr"
    monkeypatch.setattr(xwriter, "remove_markers", lambda target: (_ for _ in ()).throw(_Boom()))
    with pytest.raises(_Boom):
        xio.write_zarr(make_dataset(), store, progress=False)
    monkeypatch.undo()
    assert xio.is_complete(store) and list((store / ".xproda").glob("r*"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        xr.open_zarr(store, consolidated=False).close()
        xio.open_dataset(store).close()
    report = xio.write_zarr(make_dataset(), store, resume=True, progress=False)
    assert report.resumed == 12 and report.written == 0
    assert_same_store(snapshot(ref), snapshot(store))


def test_resume_does_not_recompute_done_regions(tmp_path, monkeypatch):
    store = tmp_path / "run.zarr"
    _interrupt_after(monkeypatch, 6)
    with pytest.raises(_Boom):
        xio.write_zarr(slow_dataset(), store, progress=False, batch_size=2)
    monkeypatch.undo()
    n_done = len(xio.list_done_regions(store))
    _CALLS.clear()
    report = xio.write_zarr(slow_dataset(), store, resume=True, progress=False)
    assert report.resumed == n_done
    assert sum(_CALLS.values()) == 12 - n_done  # one computation per missing region


def test_resume_with_different_fingerprint_raises(tmp_path):
    store = tmp_path / "run.zarr"
    xio.write_zarr(make_dataset(), store, progress=False)
    other = make_dataset().drop_vars("soc")
    with pytest.raises(ValueError, match="different dataset, inputs or options.*data variables"):
        xio.write_zarr(other, store, resume=True, progress=False)
    with pytest.raises(ValueError, match="different dataset, inputs or options"):
        xio.write_zarr(make_dataset(), store, resume=True, attrs={"run": 2}, progress=False)
    rechunked = make_dataset().chunk({"lat": 6})
    with pytest.raises(ValueError, match="chunks"):
        xio.write_zarr(rechunked, store, resume=True, progress=False)
    # overwrite=True together with resume=True starts over when the fingerprints differ
    report = xio.write_zarr(other, store, resume=True, overwrite=True, progress=False)
    assert report.resumed == 0 and "soc" not in xio.open_dataset(store)


def test_existing_store_needs_resume_or_overwrite(tmp_path):
    store = tmp_path / "run.zarr"
    xio.write_zarr(make_dataset(), store, progress=False)
    with pytest.raises(FileExistsError, match="already exists.*overwrite=True"):
        xio.write_zarr(make_dataset(), store, progress=False)
    report = xio.write_zarr(make_dataset(seed=1), store, overwrite=True, progress=False)
    assert report.resumed == 0
    np.testing.assert_array_equal(
        xio.open_dataset(store).soc_stock.values, make_dataset(seed=1).soc_stock.values
    )
    # resume on a missing store starts fresh
    fresh = xio.write_zarr(make_dataset(), tmp_path / "new.zarr", resume=True, progress=False)
    assert fresh.resumed == 0 and xio.is_complete(tmp_path / "new.zarr")
    # never delete something that is not a Zarr store
    other = tmp_path / "notes"
    other.mkdir()
    (other / "keep.txt").write_text("precious")
    with pytest.raises(FileExistsError, match="not a Zarr store"):
        xio.write_zarr(make_dataset(), other, overwrite=True, progress=False)
    with pytest.raises(ValueError, match="not written by xproda"):
        xio.write_zarr(make_dataset(), other, resume=True, progress=False)
    assert (other / "keep.txt").read_text() == "precious"


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {tests!r})
    import dask
    from test_io import slow_dataset
    from xproda.io import write_zarr
    dask.config.set(num_workers=2)
    write_zarr(slow_dataset(sleep={sleep}), {store!r}, progress=False, batch_size=2)
    """
)


@pytest.mark.slow
@pytest.mark.parametrize("kill_after", [0, 5])
def test_resume_after_sigkill(tmp_path, kill_after):
    """Kill a writing process with SIGKILL, resume in-process: identical to an uninterrupted run."""
    ref = tmp_path / "ref.zarr"
    xio.write_zarr(slow_dataset(), ref, progress=False)

    store = tmp_path / "run.zarr"
    script = _KILL_SCRIPT.format(tests=str(TESTS_DIR), sleep=0.4, store=str(store))
    kill_when([sys.executable, "-c", script], lambda: regions_done(store) >= kill_after,
              timeout=60)
    assert not xio.is_complete(store)
    n_done = regions_done(store)
    assert n_done >= kill_after and n_done < 12

    _CALLS.clear()
    report = xio.write_zarr(slow_dataset(), store, resume=True, progress=False)
    assert report.resumed == n_done
    assert report.written + report.skipped_empty == 12 - n_done
    assert sum(_CALLS.values()) == 12 - n_done
    assert_same_store(snapshot(ref), snapshot(store))
    assert_same_arrays(ref, store)


def test_batches_bound_work_in_flight(tmp_path, monkeypatch):
    """Regions go to dask in batches of at most batch_size (bounded memory)."""
    sizes = []
    real = dask.compute

    def spy(*args, **kwargs):
        graph = args[0].__dask_graph__()
        sizes.append(sum(1 for k in graph if isinstance(k, tuple) and "xproda-region" in str(k[0])))
        return real(*args, **kwargs)

    monkeypatch.setattr(dask, "compute", spy)
    xio.write_zarr(make_dataset(), tmp_path / "a.zarr", batch_size=5, progress=False)
    assert sizes == [5, 5, 2]


@pytest.mark.parametrize("with_time", [False, True])
def test_region_writes_keep_the_template_encoding(tmp_path, with_time):
    """Region data are encoded as the template: int fill values, float32, times (the
    direct path, and xarray's region mode for blocks with times)."""
    ds = make_dataset()
    shape = ds.soc_stock.shape
    days = np.arange(np.prod(shape)).reshape(shape)
    if with_time:
        ds["when"] = (("lat", "lon"), da.from_array(
            np.datetime64("2000-01-01") + days.astype("timedelta64[D]"), chunks=(4, 4)))
    ds["count"] = (("lat", "lon"), da.from_array(days.astype(np.int32), chunks=(4, 4)))
    ds["count"].encoding["fill_value"] = -1
    ds["small"] = ds.soc_stock.astype(np.float32)
    store = tmp_path / "enc.zarr"
    xio.write_zarr(ds, store, progress=False)
    out = xio.open_dataset(store).compute()
    for name in ("count", "small", "soc_stock") + (("when",) if with_time else ()):
        np.testing.assert_array_equal(out[name].values, ds[name].values, err_msg=name)
        assert out[name].dtype.kind == ds[name].dtype.kind, name
    assert out["small"].dtype == np.float32 and out["count"].dtype == np.int32


@pytest.mark.parametrize("scheduler", ["threads", "synchronous"])
def test_progress_advances_region_by_region(tmp_path, monkeypatch, scheduler):
    """Local schedulers report every region as it finishes, not only at the end of a batch."""
    calls = []
    real = xwriter._RegionProgress

    class Spy(real):
        def __init__(self, prefix, on_region):
            def wrapped(status):
                calls.append(status)
                on_region(status)

            super().__init__(prefix, wrapped)

    monkeypatch.setattr(xwriter, "_RegionProgress", Spy)
    with dask.config.set(scheduler=scheduler):
        report = xio.write_zarr(make_dataset(), tmp_path / "a.zarr", batch_size=5,
                                progress=True)
    # no mask: every region is computed, then written or found empty
    assert Counter(calls) == {"written": report.written, "empty": report.skipped_empty}
    assert report.written and report.skipped_empty and len(calls) == report.regions == 12


def _big_dataset(ny: int, nx: int, nl: int = 16) -> xr.Dataset:
    """Lazy field with regions of 32 x 64 cells x nl layers (256 KiB each)."""
    lat = da.from_array(np.linspace(-60, 60, ny), chunks=32)
    lon = da.from_array(np.linspace(0, 359, nx), chunks=64)
    layer = da.from_array(np.arange(nl, dtype=float), chunks=nl)
    field = (
        da.cos(np.deg2rad(lat))[None, :, None] * da.sin(np.deg2rad(lon))[None, None, :]
        + layer[:, None, None]
    )
    return xr.Dataset(
        {"v": (("layer", "lat", "lon"), field)},
        coords={"lat": np.linspace(-60, 60, ny), "lon": np.linspace(0, 359, nx)},
    )


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_regions(tmp_path):
    """Peak traced memory is about the same for 8 and 128 regions of the same size."""
    import tracemalloc

    def peak(ds, name, batch_size=4):
        tracemalloc.start()
        try:
            with dask.config.set(scheduler="threads", num_workers=2):
                report = xio.write_zarr(ds, tmp_path / name, batch_size=batch_size,
                                        progress=False)
            return tracemalloc.get_traced_memory()[1], report
        finally:
            tracemalloc.stop()

    peak(_big_dataset(64, 128), "warmup.zarr")  # first-use allocations (codecs, caches)
    small_peak, small = peak(_big_dataset(64, 256), "small.zarr")
    big_ds = _big_dataset(256, 1024)
    big_peak, big = peak(big_ds, "big.zarr")
    assert (small.regions, big.regions) == (8, 128)
    nbytes = big_ds.v.nbytes  # 32 MiB
    assert big_peak < 0.1 * nbytes, f"peak {big_peak / 2**20:.1f} MiB"
    assert big_peak < 2 * small_peak + 2**20, (small_peak, big_peak)
    # all 128 regions in one dask.compute: dask finishes regions before it reads far ahead
    one_peak, one = peak(big_ds, "one_batch.zarr", batch_size=128)
    assert one.regions == 128 and one.written == 128
    assert one_peak < 0.1 * nbytes and one_peak < 2 * small_peak + 2**20, (small_peak, one_peak)
    out = xio.open_dataset(tmp_path / "big.zarr").v.isel(lat=slice(224, None))
    np.testing.assert_array_equal(out.values, big_ds.v.isel(lat=slice(224, None)).values)


# ----------------------------------------------------------------------------------------------
# chunking errors
# ----------------------------------------------------------------------------------------------


def test_inconsistent_chunks_raise(tmp_path):
    ds = make_dataset()
    ds["soc"] = ds.soc.chunk({"lat": 6})
    msg = r"do not share the chunks along region dimension 'lat'.*'soc'"
    with pytest.raises(ValueError, match=msg):
        xio.write_zarr(ds, tmp_path / "a.zarr", progress=False)
    assert not (tmp_path / "a.zarr").exists()


def test_split_non_region_dim_raises(tmp_path):
    ds = make_dataset()
    ds["soc"] = ds.soc.chunk({"layer": 1})
    msg = r"'soc' is split into 3 chunks along 'layer'.*not a region"
    with pytest.raises(ValueError, match=msg):
        xio.write_zarr(ds, tmp_path / "a.zarr", region_dims=["lat", "lon"], progress=False)


def test_irregular_chunks_raise(tmp_path):
    ds = make_dataset().chunk({"lat": (4, 2, 6)})
    with pytest.raises(ValueError, match="irregular"):
        xio.write_zarr(ds, tmp_path / "a.zarr", progress=False)


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="region_dims names"):
        xio.write_zarr(make_dataset(), tmp_path / "a.zarr", region_dims=["x"], progress=False)
    with pytest.raises(ValueError, match="batch_size"):
        xio.write_zarr(make_dataset(), tmp_path / "a.zarr", batch_size=0, progress=False)
    with pytest.raises(TypeError, match="ds must be an xarray.Dataset"):
        xio.write_zarr(make_dataset().soc, tmp_path / "a.zarr", progress=False)


def test_region_dims_subset_and_1d_variables(tmp_path):
    """Variables lacking a region dim are written once; regions along one dim only."""
    ds = make_dataset()
    ds["zonal"] = ds.soc_stock.mean("lon")  # (lat,)
    ds["total"] = ds.soc_stock.sum()  # scalar: written with the template
    store = tmp_path / "run.zarr"
    report = xio.write_zarr(ds, store, progress=False)
    assert report.regions == 12
    out = xio.open_dataset(store)
    for name in ("zonal", "total", "soc_stock"):
        np.testing.assert_array_equal(out[name].values, ds[name].values)
    keys = chunk_keys(snapshot(store))
    assert {k for k in keys if k.startswith("zonal/")} == {"zonal/c/0", "zonal/c/1", "zonal/c/2"}
    by_lat = xio.write_zarr(
        make_dataset().chunk({"lon": -1}), tmp_path / "lat.zarr", progress=False
    )
    assert by_lat.regions == 3


# ----------------------------------------------------------------------------------------------
# open_dataset
# ----------------------------------------------------------------------------------------------


def test_open_dataset_passthrough_and_missing(tmp_path):
    ds = make_dataset()
    assert xio.open_dataset(ds) is ds
    with pytest.raises(FileNotFoundError, match="does not exist"):
        xio.open_dataset(tmp_path / "missing.zarr")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        xio.open_dataset(f"file://{tmp_path}/missing.nc")


def test_open_dataset_netcdf_keeps_crs(tmp_path):
    ds = make_dataset().load()
    path = tmp_path / "cov.nc"
    ds.to_netcdf(path)
    out = xio.open_dataset(path)
    assert out.soc_stock.chunks is not None  # lazy
    assert "spatial_ref" in out.coords
    assert "lat_bnds" in out.coords
    assert out.rio.crs.to_epsg() == 4326
    np.testing.assert_array_equal(out.soc.values, ds.soc.values)
    out.close()


def test_open_dataset_geotiff(tmp_path):
    band = make_dataset().soc_stock.load().rename({"lat": "y", "lon": "x"})
    band = band.rio.write_crs("EPSG:4326").rio.write_nodata(np.nan)
    path = tmp_path / "clay.tif"
    band.rio.to_raster(path)
    out = xio.open_dataset(path)
    assert list(out.data_vars) == ["clay"]
    assert out.clay.dims == ("y", "x")
    assert out.clay.chunks is not None
    assert out.rio.crs.to_epsg() == 4326 and "spatial_ref" in out.coords
    np.testing.assert_array_equal(out.clay.values, band.values)
    multi = xr.concat([band, band * 2], dim="band").assign_coords(band=[1, 2])
    multi.rio.to_raster(tmp_path / "two.tif")
    two = xio.open_dataset(tmp_path / "two.tif")
    assert two["two"].dims == ("band", "y", "x")


def test_open_dataset_urls(tmp_path):
    """GeoTIFF and NetCDF through fsspec URLs (file objects)."""
    fsspec = pytest.importorskip("fsspec")
    ds = make_dataset().load()
    band = ds.soc_stock.rename({"lat": "y", "lon": "x"}).rio.write_crs("EPSG:4326")
    band.rio.write_nodata(np.nan).rio.to_raster(tmp_path / "silt.tif")
    ds.to_netcdf(tmp_path / "cov.nc")
    mem = fsspec.filesystem("memory")
    root = f"/xproda-urls-{os.getpid()}"
    mem.pipe(f"{root}/silt.tif", (tmp_path / "silt.tif").read_bytes())
    mem.pipe(f"{root}/cov.nc", (tmp_path / "cov.nc").read_bytes())
    tif = xio.open_dataset(f"memory://{root}/silt.tif")
    assert tif.rio.crs.to_epsg() == 4326
    np.testing.assert_array_equal(tif.silt.values, band.values)
    try:  # both are needed (h5py alone comes with pvlib, of the covariates extra)
        import h5netcdf  # noqa: F401
        import h5py  # noqa: F401
    except ImportError:
        with pytest.raises(ImportError, match="needs h5netcdf and h5py"):
            xio.open_dataset(f"memory://{root}/cov.nc")
    else:
        nc = xio.open_dataset(f"memory://{root}/cov.nc")
        assert nc.rio.crs.to_epsg() == 4326
        np.testing.assert_array_equal(nc.soc.values, ds.soc.values)


def test_open_dataset_memory_url():
    ds = make_dataset()
    url = f"memory://xproda-test-{os.getpid()}/run.zarr"
    xio.write_zarr(ds, url, progress=False)
    out = xio.open_dataset(url)
    np.testing.assert_array_equal(out.soc_stock.values, ds.soc_stock.values)
    assert out.rio.crs.to_epsg() == 4326
    assert xio.is_complete(url)


# ----------------------------------------------------------------------------------------------
# S3 (moto server)
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_s3_write_read_resume(s3, tmp_path, monkeypatch):
    so, fs = s3
    local = tmp_path / "local.zarr"
    xio.write_zarr(make_dataset(), local, progress=False)

    url = "s3://xproda-bucket/run.zarr"
    report = xio.write_zarr(make_dataset(), url, storage_options=so, progress=False)
    assert report.written == 10 and report.skipped_empty == 2
    assert xio.is_complete(url, storage_options=so)
    out = xio.open_dataset(url, storage_options=so)
    assert out.rio.crs.to_epsg() == 4326
    assert_same_arrays(local, url, so_b=so)
    assert_same_store(snapshot(local), snapshot("xproda-bucket/run.zarr", fs))

    # interrupted run on S3, then resume
    url2 = "s3://xproda-bucket/resumed.zarr"
    _interrupt_after(monkeypatch, 4)
    with pytest.raises(_Boom):
        xio.write_zarr(make_dataset(), url2, storage_options=so, progress=False, batch_size=2)
    monkeypatch.undo()
    assert not xio.is_complete(url2, storage_options=so)
    n_done = len(xio.list_done_regions(url2, storage_options=so))
    assert n_done >= 1
    with pytest.raises(FileExistsError):
        xio.write_zarr(make_dataset(), url2, storage_options=so, progress=False)
    report = xio.write_zarr(make_dataset(), url2, storage_options=so, resume=True, progress=False)
    assert report.resumed == n_done
    assert xio.is_complete(url2, storage_options=so)
    assert_same_store(snapshot(local), snapshot("xproda-bucket/resumed.zarr", fs))


# ----------------------------------------------------------------------------------------------
# dask.distributed
# ----------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.distributed
def test_distributed_equals_threaded(tmp_path):
    distributed = pytest.importorskip("distributed")
    threaded = tmp_path / "threaded.zarr"
    with dask.config.set(scheduler="threads"):
        xio.write_zarr(make_dataset(), threaded, progress=False)
    store = tmp_path / "dist.zarr"
    with distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster, distributed.Client(cluster):
        report = xio.write_zarr(make_dataset(), store, progress=False)
    assert report.written == 10 and report.skipped_empty == 2
    assert_same_store(snapshot(threaded), snapshot(store))
    assert_same_arrays(threaded, store)


def test_fuse_regions_keeps_results_and_shared_tasks():
    """Region subgraphs fused for dask.distributed compute what the plain graph computes."""
    from dask._task_spec import Task, TaskRef
    from dask.local import get_sync

    from xproda.io.writer import fuse_regions

    def add(*xs):
        return sum(xs)

    graph = {
        "shared": Task("shared", add, 100),
        "read-a": Task("read-a", add, 1),
        "read-b": Task("read-b", add, 2),
        "kern-a": Task("kern-a", add, TaskRef("read-a"), TaskRef("shared")),
        "kern-b": Task("kern-b", add, TaskRef("read-b"), TaskRef("shared")),
        "out-a1": Task("out-a1", add, TaskRef("kern-a"), 10),
        "out-a2": Task("out-a2", add, TaskRef("kern-a"), 20),
        "region-a": Task("region-a", add, TaskRef("out-a1"), TaskRef("out-a2")),
        "region-b": Task("region-b", add, TaskRef("kern-b")),
    }
    fused = fuse_regions(dict(graph), ["region-a", "region-b"])
    assert set(fused) == {"shared", "region-a", "region-b"}  # private ancestors fused
    keys = ["region-a", "region-b"]
    assert get_sync(fused, keys) == get_sync(graph, keys) == (2 * 101 + 30, 102)
