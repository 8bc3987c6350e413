"""Checkpoint integrity (issue 17, item 4): every damaged, foreign or edited checkpoint is refused.

Three kinds of checkpoint share one reader (:mod:`xproda.sites.assimilation.checkpoint`):
parameter networks (:func:`~xproda.learning.network.load_network`), sampler states
(:func:`~xproda.sites.assimilation.samplers.common.load_state`) and training runs
(:func:`~xproda.learning.training.train_network` with ``resume=True``). Each corruption kind
raises :class:`~xproda.errors.CheckpointError` naming the file and the reason; a missing file
stays :class:`FileNotFoundError`; a file without its content hash is refused unless
``trust_unverified=True``; saved files get the mode the umask gives.
"""

from __future__ import annotations

import json
import os
import pickle
import shutil
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from xproda.errors import CheckpointError
from xproda.learning import trainer
from xproda.learning.network import ParameterNet, load_network
from xproda.sites.assimilation.checkpoint import (
    METADATA_KEY,
    load_checkpoint,
    save_checkpoint,
)
from xproda.sites.assimilation.samplers.common import State, load_state, save_state

FEATURES = ["bio1", "clay", "sand"]
SETTINGS = {"n_chains": 2, "step": 0.1}


# -------------------------------------------------------------------------------------
# the three kinds of checkpoint
# -------------------------------------------------------------------------------------
@dataclass
class Kind:
    """How to write and read one kind of checkpoint, and a header edit that matters."""

    name: str
    write: Callable[[Path], None]
    load: Callable[..., Any]  # load(path, trust_unverified=False) -> something
    edit: Callable[[dict], None]  # changes the xproda header's "meta" in place
    edited: Callable[[Any], bool]  # True when a loaded object shows the edit


def _net() -> ParameterNet:
    return ParameterNet(FEATURES, ["a", "b"], model="clm5", hidden=(4,), seed=0,
                        x_min=[-20.0, 0.0, 0.0], x_max=[30.0, 80.0, 90.0])


def _swap_features(meta: dict) -> None:
    names = meta["config"]["features"]
    names[0], names[1] = names[1], names[0]


def _sampler_write(path: Path) -> None:
    st = State(x=torch.arange(6.0).reshape(2, 3), n=torch.tensor([3, 4]),
               accepted=torch.tensor([True, False]))
    save_state(path, st, SETTINGS, {"iteration": 12})


def _sampler_load(path: Path, trust_unverified: bool = False):
    return load_state(path, SETTINGS, torch.device("cpu"), trust_unverified=trust_unverified)


def _set_iteration(meta: dict) -> None:
    meta["iteration"] = 999


@pytest.fixture(scope="module")
def training_data():
    from xproda.datasets import synthetic_profiles, synthetic_world, truth_parameters
    from xproda.learning.training import prepare_training_data

    world = synthetic_world(10.0, seed=0)
    profiles = synthetic_profiles(world, n_sites=20, noise=0.1, seed=3,
                                  truth=truth_parameters(world, kind="cue"))
    return prepare_training_data(world, profiles)


TRAIN_KW = {"epochs": 1, "hidden": (4,), "progress": False, "mapping": "layer_mean",
            "validation": 0.0, "checkpoint_every": 1, "seed": 0}


@pytest.fixture(scope="module")
def training_checkpoint(training_data, tmp_path_factory) -> Path:
    from xproda.learning.training import train_network

    path = tmp_path_factory.mktemp("train") / "train.safetensors"
    train_network(training_data, checkpoint=str(path), **TRAIN_KW)
    return path


def _training_load(path: Path, trust_unverified: bool = False):
    return load_checkpoint(path, format=trainer.FORMAT, version=trainer.VERSION,
                           trust_unverified=trust_unverified)


def _set_epoch(meta: dict) -> None:
    meta["epoch"] = 999


@pytest.fixture(params=["network", "sampler", "training"])
def kind(request) -> Kind:
    if request.param == "network":
        return Kind("network", lambda p: _net().save(p), load_network, _swap_features,
                    lambda net: list(net.feature_names) == ["clay", "bio1", "sand"])
    if request.param == "sampler":
        return Kind("sampler", _sampler_write, _sampler_load, _set_iteration,
                    lambda out: out[1]["iteration"] == 999)
    src = request.getfixturevalue("training_checkpoint")
    return Kind("training", lambda p: shutil.copyfile(src, p), _training_load, _set_epoch,
                lambda out: out[1]["epoch"] == 999)


@pytest.fixture
def good(kind, tmp_path) -> Path:
    path = tmp_path / f"{kind.name}.safetensors"
    kind.write(path)
    return path


def _refused(kind: Kind, path: Path, match: str, **kw) -> CheckpointError:
    with pytest.raises(CheckpointError, match=match) as info:
        kind.load(path, **kw)
    assert str(path) in str(info.value), str(info.value)
    return info.value


def _header_length(path: Path) -> int:
    return int.from_bytes(path.read_bytes()[:8], "little")


def _rewrite_header(path: Path, change: Callable[[dict], None]) -> None:
    """Rewrite ``path`` with its xproda JSON changed by ``change`` (tensors untouched)."""
    with safe_open(str(path), framework="pt") as f:
        md = dict(f.metadata())
    tensors = load_file(str(path))
    doc = json.loads(md[METADATA_KEY])
    change(doc)
    md[METADATA_KEY] = json.dumps(doc, sort_keys=True)
    save_file(tensors, str(path), metadata=md)


# -------------------------------------------------------------------------------------
# a good file loads; a missing one is FileNotFoundError
# -------------------------------------------------------------------------------------
def test_roundtrip(kind, good):
    out = kind.load(good)
    assert not kind.edited(out)


def test_missing_file_is_file_not_found(kind, tmp_path):
    path = tmp_path / "nowhere.safetensors"
    with pytest.raises(FileNotFoundError, match="nowhere.safetensors"):
        kind.load(path)


# -------------------------------------------------------------------------------------
# truncated, empty, foreign
# -------------------------------------------------------------------------------------
@pytest.mark.parametrize("where", ["inside_length", "inside_header", "end_of_header",
                                   "inside_data", "last_byte"])
def test_truncated(kind, good, where):
    data = good.read_bytes()
    n = _header_length(good)
    cut = {"inside_length": 5, "inside_header": 8 + n // 2, "end_of_header": 8 + n,
           "inside_data": 8 + n + (len(data) - 8 - n) // 2, "last_byte": len(data) - 1}[where]
    good.write_bytes(data[:cut])
    err = _refused(kind, good, "truncated")
    if where == "inside_header":
        assert f"header says it is {n} bytes" in str(err)
    if where == "last_byte":
        assert f"the file has {len(data) - 9 - n}" in str(err)


def test_empty_file(kind, good):
    good.write_bytes(b"")
    _refused(kind, good, r"empty \(0 bytes\)")


def test_pickle_renamed(kind, good, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    good.write_bytes(pickle.dumps({"weights": np.zeros(3)}, protocol=4))
    _refused(kind, good, "Python pickle")


def test_torch_save_renamed(kind, good):
    torch.save({"weights": torch.zeros(3)}, good)
    _refused(kind, good, "zip archive")


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_bytes(kind, good, seed):
    good.write_bytes(np.random.default_rng(seed).bytes(1000))
    _refused(kind, good, "not a safetensors file")


def test_plausible_length_then_garbage(kind, good):
    good.write_bytes((64).to_bytes(8, "little") + np.random.default_rng(5).bytes(64))
    _refused(kind, good, "not a JSON object")


def test_foreign_safetensors(kind, good):
    save_file({"w": torch.zeros(3)}, str(good), metadata={"format": "pt"})
    _refused(kind, good, "without xproda's metadata")


def test_other_xproda_format(kind, good, tmp_path):
    other = tmp_path / "other.safetensors"
    save_checkpoint(other, {"x": torch.zeros(2)}, {"iteration": 1}, format="something-else")
    _refused(kind, other, "'something-else' checkpoint")


def test_directory(kind, tmp_path):
    path = tmp_path / "dir.safetensors"
    path.mkdir()
    _refused(kind, path, "is a directory")


@pytest.mark.skipif(sys.platform == "win32" or os.geteuid() == 0,
                    reason="permissions are not enforced (Windows, root)")
def test_unreadable(kind, good):
    good.chmod(0)
    try:
        _refused(kind, good, "cannot be read")
    finally:
        good.chmod(0o600)


# -------------------------------------------------------------------------------------
# tampered with: edited header, hash kept or stripped
# -------------------------------------------------------------------------------------
def test_edited_header_hash_kept_is_a_mismatch(kind, good):
    _rewrite_header(good, lambda doc: kind.edit(doc["meta"]))
    _refused(kind, good, "does not match its content hash")


def test_edited_tensor_is_a_mismatch(kind, good):
    with safe_open(str(good), framework="pt") as f:
        md = dict(f.metadata())
    tensors = load_file(str(good))
    name = min(k for k, v in tensors.items() if v.is_floating_point() and v.numel())
    tensors[name] = tensors[name] + 1
    save_file(tensors, str(good), metadata=md)
    _refused(kind, good, "does not match its content hash")


def _strip(doc: dict, edit: Callable[[dict], None]) -> None:
    edit(doc["meta"])
    doc.pop("content_hash")
    doc["meta"].pop("content_hash", None)  # a network's own hash as well


def test_edited_header_hash_stripped_is_refused_unless_trusted(kind, good):
    _rewrite_header(good, lambda doc: _strip(doc, kind.edit))
    err = _refused(kind, good, "no content hash")
    assert "trust_unverified=True" in str(err)
    out = kind.load(good, trust_unverified=True)  # explicit opt-in: loads what is there
    assert kind.edited(out)


def test_mismatch_loads_with_a_warning_when_trusted(kind, good):
    _rewrite_header(good, lambda doc: kind.edit(doc["meta"]))
    with pytest.warns(UserWarning, match="does not match"):
        out = kind.load(good, trust_unverified=True)
    assert kind.edited(out)


def test_network_file_hash_stripped_network_hash_kept(tmp_path):
    """A file whose own hash is gone is still verified by the network's hash (older files)."""
    path = tmp_path / "net.safetensors"
    net = _net()
    net.save(path)
    _rewrite_header(path, lambda doc: doc.pop("content_hash"))
    assert load_network(path).content_hash == net.content_hash
    _rewrite_header(path, lambda doc: _swap_features(doc["meta"]))
    _refused(Kind("network", None, load_network, None, None), path, "content hash mismatch")


# -------------------------------------------------------------------------------------
# through the resuming entry points
# -------------------------------------------------------------------------------------
def test_train_network_resume_refuses_damaged_checkpoint(training_data, training_checkpoint,
                                                         tmp_path):
    from xproda.learning.training import train_network

    path = tmp_path / "train.safetensors"
    data = training_checkpoint.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated") as info:
        train_network(training_data, checkpoint=str(path), resume=True, **TRAIN_KW)
    assert str(path) in str(info.value)
    shutil.copyfile(training_checkpoint, path)
    _rewrite_header(path, lambda doc: doc.pop("content_hash"))
    with pytest.raises(CheckpointError, match="no content hash"):
        train_network(training_data, checkpoint=str(path), resume=True, **TRAIN_KW)


def test_sampler_resume_refuses_damaged_checkpoint(tmp_path):
    from xproda.sites.assimilation.samplers import adaptive_metropolis

    path = tmp_path / "am.safetensors"
    path.write_bytes(pickle.dumps([1, 2, 3]))

    def log_density(theta):
        return -(theta ** 2).sum(-1)

    kw = {"n_sites": 1, "n_params": 2, "n_chains": 2, "n_iter": 10, "progress": False,
          "checkpoint": path}
    with pytest.raises(CheckpointError, match="pickle") as info:
        adaptive_metropolis(log_density, resume=True, **kw)
    assert str(path) in str(info.value)
    path.unlink()
    adaptive_metropolis(log_density, **kw)  # writes a good checkpoint
    _rewrite_header(path, lambda doc: doc.pop("content_hash"))
    with pytest.raises(CheckpointError, match="no content hash"):
        adaptive_metropolis(log_density, resume=True, **kw)


def test_sampler_checkpoint_of_the_single_generator_format_is_refused(tmp_path):
    """A checkpoint of the earlier samplers (one torch.Generator for all sites, its state as
    'rng_state') cannot continue with per-site streams: a clear CheckpointError, not a run
    that silently differs from the uninterrupted one."""
    from xproda.sites.assimilation.checkpoint import normalize_settings
    from xproda.sites.assimilation.samplers import adaptive_metropolis

    def log_density(theta):
        return -(theta ** 2).sum(-1)

    path = tmp_path / "am.safetensors"
    kw = {"n_sites": 2, "n_params": 2, "n_chains": 2, "n_iter": 20, "progress": False,
          "checkpoint": path}
    adaptive_metropolis(log_density, **kw)
    tensors, meta = load_checkpoint(path)
    # rewrite it as the earlier version did: generator state, no 'random_streams' entry
    tensors["rng_state"] = torch.Generator().manual_seed(0).get_state()
    meta.pop("random_streams")
    save_checkpoint(path, tensors, meta)
    with pytest.raises(CheckpointError, match="earlier version.*one generator") as info:
        adaptive_metropolis(log_density, resume=True, **kw)
    assert str(path) in str(info.value)
    # a checkpoint of some other state (no marker) is refused too
    save_checkpoint(path, {"x": torch.zeros(2)},
                    {"settings": normalize_settings(SETTINGS), "iteration": 3})
    with pytest.raises(CheckpointError, match="not a sampler state"):
        adaptive_metropolis(log_density, resume=True, **kw)


# -------------------------------------------------------------------------------------
# file mode and atomic writes
# -------------------------------------------------------------------------------------
@pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")
@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_mode_follows_umask(kind, tmp_path, request, umask, mode):
    path = tmp_path / f"{kind.name}.safetensors"
    data = request.getfixturevalue("training_data") if kind.name == "training" else None
    old = os.umask(umask)
    try:
        if kind.name == "training":  # written by train_network itself, not copied
            from xproda.learning.training import train_network

            train_network(data, checkpoint=str(path), **TRAIN_KW)
        else:
            kind.write(path)
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode
    kind.load(path)


def test_failed_write_keeps_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "state.safetensors"
    save_checkpoint(path, {"x": torch.zeros(3)}, {"iteration": 1})
    before = path.read_bytes()

    def boom(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, {"x": torch.ones(3)}, {"iteration": 2})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.safetensors"]
    assert load_checkpoint(path)[1]["iteration"] == 1
