"""Shared test helpers: fixture loading and random forcing."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import settings

from xproda.testing import case_forcing, random_forcing  # noqa: F401  (re-exported)

SHARED = Path(__file__).resolve().parents[1].parent / "shared"
FIXTURES = SHARED / "fixtures"

# no per-example deadline by default: speed goals live in benchmarks/, not in tests, and on a
# shared 2-core CI machine an example can stall for a few hundred ms (another worker compiling
# the numba kernels of a clean clone); tests that set their own deadline keep it
settings.register_profile("xproda", deadline=None)
settings.load_profile("xproda")

def fixture_forcing(case: dict) -> dict[str, np.ndarray]:
    """Fixture forcing (stored as the original code takes it) -> the kernel contract."""
    return case_forcing(case)


def load_fixture(name: str) -> dict:
    path = FIXTURES / name
    if not path.exists():
        pytest.skip(f"{path} not available (../shared absent)")
    return json.loads(path.read_text())


def stack_forcing(forcings: list[dict]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([f[k] for f in forcings], axis=0) for k in forcings[0]}


@pytest.fixture(autouse=True)
def _torch_defaults():
    torch.manual_seed(0)
    yield


@pytest.fixture
def one_torch_thread():
    """torch on one thread for the test (small batched linear algebra is fastest and least
    noisy there); the previous count restored."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def s3():
    """A local S3-compatible server (moto); yields (storage_options, s3fs filesystem)."""
    moto_server = pytest.importorskip("moto.server")
    s3fs = pytest.importorskip("s3fs")
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    with pytest.MonkeyPatch.context() as mp:
        for k, v in {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            mp.setenv(k, v)
        server.start()
        try:
            so = {"endpoint_url": f"http://127.0.0.1:{port}", "key": "testing", "secret": "testing"}
            fs = s3fs.S3FileSystem(**so)
            if not fs.exists("xproda-bucket"):  # moto's state is per process
                fs.mkdir("xproda-bucket")
            yield so, fs
        finally:
            server.stop()
