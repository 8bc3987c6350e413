"""Nothing lost, nothing mixed (issue 17): verification, repair, the lock, kills at random
points, and resumes with other inputs."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import xarray as xr

from xproda import io as xio
from xproda.errors import StoreError, StoreLockedError
from xproda.io.locking import lock_holder, store_lock
from xproda.io.stores import target
from xproda.io.integrity import verify

pytestmark = pytest.mark.filterwarnings("ignore:.*took over the lock.*:RuntimeWarning")

_DATASET = textwrap.dedent(
    """
    import time
    import dask.array as da
    import numpy as np
    import xarray as xr

    def slow(block, sleep):
        time.sleep(sleep)
        return block * 1.0

    def dataset(ny=8, nx=12, chunk=2, sleep=0.0, scale=1.0):
        rng = np.random.default_rng(3)
        v = rng.uniform(0, 10, (ny, nx)) * scale
        v[:2, :2] = np.nan  # an empty region
        soc = da.from_array(v, chunks=chunk).map_blocks(slow, sleep=sleep, dtype=float)
        flags = da.from_array((v > 5).astype("int8"), chunks=chunk)
        prof = da.from_array(rng.uniform(0, 1, (ny, nx, 3)), chunks=(chunk, chunk, 3))
        return xr.Dataset(
            {"soc_stock": (("lat", "lon"), soc, {"units": "kg m-2"}),
             "flags": (("lat", "lon"), flags),
             "soc": (("lat", "lon", "layer"), prof)},
            coords={"lat": np.linspace(-60, 60, ny), "lon": np.linspace(0, 330, nx),
                    "layer": np.arange(3)},
            attrs={"title": "integrity test"},
        )
    """
)
_ns: dict = {}
exec(_DATASET, _ns)  # noqa: S102 - the same code as the subprocesses run
dataset = _ns["dataset"]


def snapshot(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob("*")
            if p.is_file()}


def assert_same_store(a: Path, b: Path) -> None:
    sa, sb = snapshot(a), snapshot(b)
    assert sorted(sa) == sorted(sb)
    for k in sa:
        assert sa[k] == sb[k], f"object {k!r} differs"


@pytest.fixture
def ref(tmp_path) -> Path:
    path = tmp_path / "ref.zarr"
    xio.write_zarr(dataset(), path, progress=False)
    return path


def _copy(src: Path, dst: Path) -> Path:
    import shutil

    shutil.copytree(src, dst)
    return dst


def _chunks(store: Path, var: str) -> list[Path]:
    return sorted(p for p in (store / var / "c").rglob("*") if p.is_file())


# ------------------------------------------------------------------------------------------
# verify and repair
# ------------------------------------------------------------------------------------------


def test_intact_store_verifies(ref):
    report = verify(ref)
    assert report.ok and report.complete and report.manifest and report.checksums
    assert report.regions_checked == 24
    # every written chunk of every variable is in the manifest, and checked
    n_chunks = sum(len(_chunks(ref, v)) for v in ("soc_stock", "flags", "soc", "lat", "lon",
                                                  "layer"))
    n_meta = 6
    assert report.objects_checked == n_chunks + n_meta
    assert xio.is_complete(ref)
    assert "intact" in repr(report)


@pytest.mark.parametrize("damage", ["delete", "truncate", "empty"])
def test_damaged_chunk_found_and_repaired_byte_identical(tmp_path, ref, damage):
    store = _copy(ref, tmp_path / "run.zarr")
    victim = _chunks(store, "soc_stock")[5]
    key = victim.relative_to(store).as_posix()
    if damage == "delete":
        victim.unlink()
    elif damage == "truncate":
        victim.write_bytes(victim.read_bytes()[:7])
    else:
        victim.write_bytes(b"")
    for checksums in (True, False):
        report = verify(store, checksums=checksums)
        assert not report.ok
        assert list(report.problems) == [key]
        assert ("missing" if damage == "delete" else "truncated") in report.problems[key]
        assert len(report.bad_regions) == 1
        (bad,) = report.bad_regions
        i, j = (int(p) for p in key.split("/")[-2:])
        assert bad == {"lat": [2 * i, 2 * i + 2], "lon": [2 * j, 2 * j + 2]}
    assert not xio.is_complete(store)
    rep = xio.write_zarr(dataset(), store, resume=True, progress=False)
    assert rep.written == 1 and rep.resumed == 23
    assert verify(store).ok and xio.is_complete(store)
    assert_same_store(ref, store)


def test_altered_chunk_found_by_digest_and_repaired_with_verify(tmp_path, ref):
    store = _copy(ref, tmp_path / "run.zarr")
    victim = _chunks(store, "soc")[3]
    raw = bytearray(victim.read_bytes())
    raw[-3] ^= 0xFF  # same size, other content
    victim.write_bytes(bytes(raw))
    assert verify(store, checksums=False).ok  # sizes agree
    report = verify(store)
    assert report.problems == {victim.relative_to(store).as_posix():
                               "content differs from the recorded digest"}
    # a plain resume checks sizes only; with verify=True it compares digests and repairs
    assert xio.write_zarr(dataset(), store, resume=True, progress=False).written == 0
    rep = xio.write_zarr(dataset(), store, resume=True, verify=True, progress=False)
    assert rep.written == 1
    assert_same_store(ref, store)


@pytest.mark.parametrize("victim", ["soc_stock/zarr.json", "lat/zarr.json", "lat/c/0",
                                    "layer/c/0"])
def test_damaged_template_restored_byte_identical(tmp_path, ref, victim):
    store = _copy(ref, tmp_path / "run.zarr")
    path = store / victim
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    report = verify(store)
    assert victim in report.problems and victim in report.template_problems
    assert not xio.is_complete(store)
    rep = xio.write_zarr(dataset(), store, resume=True, progress=False)
    assert rep.written == 0
    assert_same_store(ref, store)


def test_deleted_chunk_of_an_unfinished_store_is_redone(tmp_path, ref, monkeypatch):
    import xproda.io.writer as xwriter

    store = tmp_path / "run.zarr"
    real = xwriter._region_task
    n = {"ok": 0}

    def flaky(spec, *blocks):
        n["ok"] += 1
        if n["ok"] > 8:
            raise KeyboardInterrupt
        return real(spec, *blocks)

    monkeypatch.setattr(xwriter, "_region_task", flaky)
    with pytest.raises(KeyboardInterrupt):
        xio.write_zarr(dataset(), store, progress=False, batch_size=4,
                       storage_options=None)
    monkeypatch.undo()
    report = verify(store)
    assert not report.complete and report.ok and report.regions_checked >= 4
    victim = _chunks(store, "soc")[0]
    victim.unlink()
    report = verify(store)
    assert not report.ok and len(report.bad_regions) == 1
    xio.write_zarr(dataset(), store, resume=True, progress=False)
    assert_same_store(ref, store)


def test_verify_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no Zarr store"):
        verify(tmp_path / "nothing.zarr")
    plain = tmp_path / "plain.zarr"
    dataset().to_zarr(plain, zarr_format=3)
    with pytest.raises(StoreError, match="not written by xproda"):
        verify(plain)


def test_cli_verify(tmp_path, ref, capsys):
    from xproda.cli import main

    assert main(["verify", str(ref)]) == 0
    assert "intact" in capsys.readouterr().out
    store = _copy(ref, tmp_path / "run.zarr")
    next(iter(_chunks(store, "flags"))).unlink()
    assert main(["verify", str(store), "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert len(out["problems"]) == 1 and not out["template_problems"]
    assert main(["verify", str(store)]) == 1
    assert "--resume" in capsys.readouterr().out


# ------------------------------------------------------------------------------------------
# resume with other inputs
# ------------------------------------------------------------------------------------------


def test_resume_with_other_inputs_or_version_refused(tmp_path, monkeypatch):
    store = tmp_path / "run.zarr"
    src = tmp_path / "params.npy"
    np.save(src, np.arange(4.0))
    xio.write_zarr(dataset(), store, progress=False,
                   inputs={"params": str(src), "forcing": dataset(), "options": {"a": 1}})
    attrs = xr.open_zarr(store).attrs
    assert set(attrs["xproda_inputs"]) == {"forcing", "options", "params"}
    same = {"params": str(src), "forcing": dataset(), "options": {"a": 1}}
    assert xio.write_zarr(dataset(), store, resume=True, progress=False,
                          inputs=same).resumed == 24
    np.save(src, np.arange(4.0) + 1)
    with pytest.raises(StoreError, match="input 'params'"):
        xio.write_zarr(dataset(), store, resume=True, progress=False, inputs=same)
    np.save(src, np.arange(4.0))
    with pytest.raises(StoreError, match="input 'forcing'"):
        xio.write_zarr(dataset(), store, resume=True, progress=False,
                       inputs={**same, "forcing": dataset(scale=1.001)})
    with pytest.raises(StoreError, match="input 'options'"):
        xio.write_zarr(dataset(), store, resume=True, progress=False,
                       inputs={**same, "options": {"a": 2}})
    import xproda

    monkeypatch.setattr(xproda, "__version__", "0.0.1")
    with pytest.raises(StoreError, match=r"xproda version \(.* in the store, 0.0.1 now\)"):
        xio.write_zarr(dataset(), store, resume=True, progress=False, inputs=same)


# ------------------------------------------------------------------------------------------
# one writer
# ------------------------------------------------------------------------------------------


def test_lock_refuses_a_second_writer_and_takes_over_stale_locks(tmp_path):
    store = tmp_path / "run.zarr"
    t = target(store, None)
    with store_lock(t, command="first writer") as me:
        holder = lock_holder(t)
        assert holder["pid"] == os.getpid() and holder["command"] == "first writer"
        with pytest.raises(StoreLockedError, match=rf"{store}.*being written by another run: "
                                                   rf"process {os.getpid()} .*first writer"):
            xio.write_zarr(dataset(), store, progress=False)
        assert me["token"] == lock_holder(t)["token"]
    assert lock_holder(t) is None
    # a lock left by a killed process of this host is stale: taken over, with a warning
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)
    pid = int(dead.stdout)
    Path(str(store) + ".lock").write_text(json.dumps(
        {"host": lock_holder.__globals__["socket"].gethostname(), "pid": pid,
         "started": time.time(), "token": "x", "command": "killed"}))
    with pytest.warns(RuntimeWarning, match=f"took over the lock .*process {pid}"):
        xio.write_zarr(dataset(), store, progress=False)
    assert lock_holder(t) is None and xio.is_complete(store)
    # a lock from another host cannot be checked: refused, naming the file to delete
    Path(str(store) + ".lock").write_text(json.dumps(
        {"host": "elsewhere", "pid": 1, "started": time.time(), "token": "y"}))
    with pytest.raises(StoreLockedError, match=r"host elsewhere.*delete the lock"):
        xio.write_zarr(dataset(), store, progress=False, resume=True)


_WRITER = _DATASET + textwrap.dedent(
    """
    import sys
    from xproda import io as xio
    from xproda.errors import StoreLockedError
    store, scale, sleep = sys.argv[1], float(sys.argv[2]), float(sys.argv[3])
    try:
        xio.write_zarr(dataset(sleep=sleep, scale=scale), store, resume=True, progress=False,
                       batch_size=2, inputs={{"scale": scale}})
    except StoreLockedError as err:
        print("LOCKED", err)
        sys.exit(3)
    """
).replace("{{", "{").replace("}}", "}")


@pytest.mark.slow
def test_two_concurrent_writers_one_proceeds(tmp_path):
    store = tmp_path / "run.zarr"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    procs = [subprocess.Popen([sys.executable, str(script), str(store), str(scale), "0.05"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for scale in (1.0, 2.0)]
    outs = [p.communicate(timeout=300) for p in procs]
    codes = sorted(p.returncode for p in procs)
    assert codes == [0, 3], outs
    loser = outs[[p.returncode for p in procs].index(3)][0]
    assert f"store {str(store)!r} is being written by another run: process" in loser
    assert xio.is_complete(store) and verify(store).ok
    winner = [1.0, 2.0][[p.returncode for p in procs].index(0)]
    ref = tmp_path / "ref.zarr"
    xio.write_zarr(dataset(scale=winner), ref, progress=False, inputs={"scale": winner})
    assert_same_store(ref, store)


# ------------------------------------------------------------------------------------------
# fault injection: kill -9 at random points, resume, byte-identical
# ------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_kill_at_random_points_then_resume_is_byte_identical(tmp_path):
    ref = tmp_path / "ref.zarr"
    xio.write_zarr(dataset(), ref, progress=False, batch_size=2, inputs={"scale": 1.0})
    store = tmp_path / "run.zarr"
    script = tmp_path / "writer.py"
    script.write_text(_WRITER)
    lock = Path(str(store) + ".lock")
    rng = random.Random(17)
    kills, complete = 0, False
    while not complete:
        assert kills < 60, "the run never completes"
        proc = subprocess.Popen([sys.executable, str(script), str(store), "1.0", "0.25"],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        try:
            # wait until this process holds the lock (imports done), then kill it somewhere
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline and proc.poll() is None:
                holder = lock_holder(target(store, None)) if lock.exists() else None
                if holder and holder.get("pid") == proc.pid:
                    break
                time.sleep(0.005)
            if kills < 12:
                time.sleep(rng.uniform(0.0, 0.3))
                if proc.poll() is None:
                    proc.send_signal(signal.SIGKILL)
                    kills += 1
            proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
            proc.stdout.close()
            proc.stderr.close()
        complete = xio.is_complete(store)
    assert kills >= 10
    assert verify(store).ok
    assert_same_store(ref, store)


# ------------------------------------------------------------------------------------------
# hostile layouts
# ------------------------------------------------------------------------------------------


def test_manifest_of_integer_and_int_fill_variables(tmp_path):
    ds = dataset()
    ds["flags"] = ds["flags"].astype("int16")
    ds["flags"].encoding["fill_value"] = -1
    mask = xr.DataArray(np.ones((8, 12), bool), dims=("lat", "lon"))
    mask[:4, :6] = False
    store = tmp_path / "m.zarr"
    xio.write_zarr(ds, store, progress=False, mask=mask)
    report = verify(store)
    assert report.ok and report.regions_checked == 24
    # a region empty by the mask has no chunks; nothing to check, nothing missing
    manifest = json.loads((store / ".xproda" / "zarr.json").read_text())["attributes"]
    assert manifest["regions"]["r0_0"] == {"status": "empty", "objects": {},
                                           "region": {"lat": [0, 2], "lon": [0, 2]}}
