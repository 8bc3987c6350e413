"""Import anywhere (issue 17, item 7): read-only install, no usable HOME, no NUMBA_CACHE_DIR.

numba alone raises ``cannot cache function '_group_solve': no locator available`` there;
:func:`xproda.models.fused.jit_kernel` falls back to a private per-user directory under the
temporary directory, or to no disk cache.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
from pathlib import Path

import numba
import numpy as np
import pytest

import xproda
from xproda.models import fused

SCRIPT = r"""
import json, sys
import numpy as np
import xproda
from xproda.models import fused, get_model
from xproda.models.interp import ModelToObs
from xproda.testing import random_forcing

assert xproda.__file__.startswith(sys.argv[1]), xproda.__file__
model = get_model("clm5")
theta = np.full((4, len(model.parameters.names)), 0.5)
out = model.steady_state(theta, random_forcing(4, 0))
soc = np.asarray(out["soc"], dtype=np.float64)
at_obs = ModelToObs([[0.05, 0.3, 1.2]] * 4)(soc).numpy()  # the PCHIP kernel
assert np.isfinite(soc).all() and np.isfinite(at_obs).all()
print(json.dumps({"cache": fused.KERNEL_CACHE, "soc": soc.tolist(), "obs": at_obs.tolist()}))
"""


def _read_only_copy(root: Path) -> Path:
    """A copy of the package that neither numba nor Python can write next to (even as root)."""
    site = root / "site"
    shutil.copytree(Path(xproda.__file__).parent, site / "xproda",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    for d in [site, *(p for p in site.rglob("*") if p.is_dir())]:
        (d / "__pycache__").write_text("")  # a file: no cache directory can be made here
    for p in [site, *site.rglob("*")]:
        p.chmod(p.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
    return site


def _make_writable(root: Path) -> None:
    for p in [root, *root.rglob("*")]:
        if not p.is_symlink():
            p.chmod(p.stat().st_mode | stat.S_IWUSR)


@pytest.fixture
def sandbox():
    root = Path(tempfile.mkdtemp(prefix="xproda-ro-"))
    try:
        yield root
    finally:
        _make_writable(root)
        shutil.rmtree(root, ignore_errors=True)


def _run(site: Path, root: Path, tmpdir: Path) -> dict:
    not_a_dir = root / "not-a-dir"
    not_a_dir.write_text("")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("NUMBA_", "PYTHON", "XDG_"))}
    env.update(
        HOME=str(not_a_dir / "home"),  # below a file: ~/.cache cannot be created
        PYTHONPATH=str(site), PYTHONDONTWRITEBYTECODE="1", PYTHONNOUSERSITE="1",
        TMPDIR=str(tmpdir), OMP_NUM_THREADS="2",
    )
    cwd = root / "cwd"
    cwd.mkdir(exist_ok=True)
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(site)], check=False, cwd=cwd,
                          env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


@pytest.mark.slow
def test_import_and_kernels_with_read_only_install_and_no_home(sandbox):
    site = _read_only_copy(sandbox)
    tmpdir = sandbox / "tmp"
    tmpdir.mkdir()
    first = _run(site, sandbox, tmpdir)
    uid = os.getuid() if hasattr(os, "getuid") else None
    cache = tmpdir / f"xproda-numba-cache-{uid if uid is not None else 'user'}"
    assert set(first["cache"].values()) == {str(cache)}, first["cache"]
    assert "xproda.models.fused._group_solve" in first["cache"]
    assert "xproda.models.interp._pchip_kernel" in first["cache"]
    assert stat.S_IMODE(cache.stat().st_mode) == 0o700
    assert list(cache.rglob("*.nbi")), "nothing was cached"
    assert not list(site.rglob("*.nbi")) and not list(site.rglob("*.pyc"))
    # a second process loads the kernels from that cache, with the same results
    second = _run(site, sandbox, tmpdir)
    assert second["soc"] == first["soc"] and second["obs"] == first["obs"]
    assert np.isfinite(np.asarray(first["soc"])).all()


# -------------------------------------------------------------------------------------
# the fallback, in this process
# -------------------------------------------------------------------------------------
def _add(a, b):  # compiled by the tests below
    return a + b


@pytest.fixture
def private_tempdir(tmp_path, monkeypatch):
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_no_locator_uses_the_private_directory(private_tempdir, monkeypatch):
    # numba finds no location of its own (only the user-provided one, and none is set)
    monkeypatch.setattr(numba.config, "CACHE_LOCATOR_CLASSES", "UserProvidedCacheLocator")
    monkeypatch.setattr(numba.config, "CACHE_DIR", "")
    with pytest.raises(RuntimeError, match="no locator"):
        numba.njit(cache=True)(_add)
    disp = fused.jit_kernel(_add)
    assert disp(2.0, 3.0) == 5.0
    path = fused.KERNEL_CACHE[f"{__name__}._add"]
    assert path == fused.fallback_cache_dir() and Path(path).parent == private_tempdir
    assert numba.config.CACHE_DIR == ""  # restored: nothing else sees the fallback
    assert list(Path(path).rglob("*.nbi"))


def test_nothing_writable_compiles_without_cache(private_tempdir, monkeypatch):
    monkeypatch.setattr(numba.config, "CACHE_LOCATOR_CLASSES", "ZipCacheLocator")
    disp = fused.jit_kernel(_add)
    assert disp(1, 2) == 3
    assert fused.KERNEL_CACHE[f"{__name__}._add"] is None


@pytest.mark.skipif(not hasattr(os, "getuid"), reason="POSIX permissions")
def test_fallback_directory_must_be_private(private_tempdir):
    path = Path(fused.fallback_cache_dir())
    assert stat.S_IMODE(path.stat().st_mode) == 0o700
    path.chmod(0o777)  # another user could plant pickles there
    assert fused.fallback_cache_dir() is None
    path.rmdir()
    path.symlink_to(private_tempdir)
    assert fused.fallback_cache_dir() is None
    path.unlink()
    path.write_text("")
    assert fused.fallback_cache_dir() is None
