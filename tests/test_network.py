"""ParameterNet, ensembles, checkpoints and lazy prediction."""

from __future__ import annotations

import os
import pickle

import dask
import numpy as np
import pytest
import torch
import xarray as xr
from hypothesis import given, settings
from hypothesis import strategies as st

import xproda
from xproda.learning.network import (
    SPEC_HIDDEN,
    CheckpointError,
    ParameterNet,
    ParameterNetEnsemble,
    load_network,
    save_network,
)
from xproda.testing import raise_if_dask_computes

FEATS = ["bio1", "clay", "elev"]
PARAMS = list(xproda.get_model("clm5").parameters.names)


def _net(seed=0, **kw):
    kw.setdefault("hidden", (16, 8))
    return ParameterNet(FEATS, PARAMS, x_min=[-20.0, 0.0, 0.0], x_max=[30.0, 80.0, 5000.0],
                        seed=seed, **kw)


def _covariates(ny=12, nx=18, seed=0):
    rng = np.random.default_rng(seed)
    lat = np.linspace(-80, 80, ny)
    lon = np.linspace(-175, 175, nx)
    ds = xr.Dataset(
        {"bio1": (("lat", "lon"), rng.uniform(-20, 30, (ny, nx)), {"units": "degC"}),
         "clay": (("lat", "lon"), rng.uniform(0, 80, (ny, nx)), {"units": "%"}),
         "elev": (("lat", "lon"), rng.uniform(0, 5000, (ny, nx)), {"units": "m"}),
         "unused": (("lat", "lon"), rng.uniform(size=(ny, nx)))},
        coords={"lat": ("lat", lat, {"units": "degrees_north", "standard_name": "latitude"}),
                "lon": ("lon", lon, {"units": "degrees_east", "standard_name": "longitude"})})
    ds["clay"][2, 3] = np.nan  # a no-data cell
    return ds


def test_spec_architecture_and_glorot_init():
    net = ParameterNet(FEATS, PARAMS, seed=1)
    lin = [m for m in net.layers if isinstance(m, torch.nn.Linear)]
    assert [m.out_features for m in lin] == list(SPEC_HIDDEN) + [len(PARAMS)]
    for m in lin:  # Keras default: Glorot-uniform weights, zero biases
        bound = np.sqrt(6.0 / (m.in_features + m.out_features))
        assert float(m.weight.detach().abs().max()) <= bound
        assert float(m.weight.detach().abs().max()) > 0.9 * bound
        assert float(m.bias.detach().abs().max()) == 0.0
    assert net.dtype == torch.float64


def test_outputs_bounded_and_scaling():
    net = _net(output="sigmoid")
    x = np.array([[-1000.0, 500.0, 1e6], [10.0, 20.0, 100.0]])  # far outside the scaling range
    y = net.predict(x)
    assert y.shape == (2, len(PARAMS))
    assert ((y > 0) & (y < 1)).all()
    z = net.scale(torch.tensor([[-20.0, 80.0, 2500.0]], dtype=torch.float64))
    np.testing.assert_allclose(z.numpy(), [[0.0, 1.0, 0.5]])
    clipped = _net(clip_inputs=True).scale(torch.tensor([[-40.0, 160.0, 2500.0]],
                                                        dtype=torch.float64))
    np.testing.assert_allclose(clipped.numpy(), [[0.0, 1.0, 0.5]])


def test_constant_feature_scales_to_zero():
    net = ParameterNet(["a"], ["p"], hidden=(2,), x_min=[3.0], x_max=[3.0], seed=0)
    assert float(net.scale(torch.tensor([[3.0]], dtype=torch.float64))) == 0.0


def test_seed_is_deterministic_and_private():
    state = torch.get_rng_state()
    a, b, c = _net(seed=5), _net(seed=5), _net(seed=6)
    assert torch.equal(torch.get_rng_state(), state)  # global RNG untouched
    assert a.content_hash == b.content_hash != c.content_hash


@pytest.mark.parametrize("kw, match", [
    (dict(hidden=(0,)), "hidden widths"),
    (dict(dropout=1.0), "dropout"),
    (dict(activation="sigmoidal"), "activation"),
    (dict(output="softmax"), "output"),
    (dict(x_min=[0.0, 0.0]), "one value per feature"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        ParameterNet(FEATS, PARAMS, **kw)


def test_bad_names():
    with pytest.raises(ValueError, match="duplicates"):
        ParameterNet(["a", "a"], ["p"])
    with pytest.raises(TypeError, match="sequence of names"):
        ParameterNet("abc", ["p"])


def test_predict_shape_error_names_features():
    with pytest.raises(ValueError, match="bio1"):
        _net().predict(np.zeros((3, 2)))


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_save_load_bit_identical(tmp_path, dtype):
    net = _net(seed=3, dropout=0.2, dtype=dtype)
    x = np.random.default_rng(0).uniform(0, 50, (64, 3))
    path = tmp_path / "net.safetensors"
    digest = save_network(net, path)
    again = load_network(path)
    assert isinstance(again, ParameterNet)
    assert again.content_hash == digest == net.content_hash
    assert again.feature_names == tuple(FEATS) and again.parameter_names == tuple(PARAMS)
    assert again.dtype == net.dtype and again.dropout == 0.2
    assert not again.training
    np.testing.assert_array_equal(again.predict(x), net.predict(x))


def test_ensemble_save_load_and_member_axis(tmp_path):
    ens = ParameterNetEnsemble([_net(seed=k) for k in range(3)], kind="bootstrap")
    x = np.random.default_rng(1).uniform(0, 50, (10, 3))
    y = ens.predict(x)
    assert y.shape == (10, 3, len(PARAMS))
    np.testing.assert_array_equal(y[:, 1], ens[1].predict(x))
    path = tmp_path / "ens.safetensors"
    ens.save(path)
    again = load_network(path)
    assert isinstance(again, ParameterNetEnsemble) and again.kind == "bootstrap"
    assert again.n_members == 3
    np.testing.assert_array_equal(again.predict(x), y)


def test_ensemble_members_must_agree():
    other = ParameterNet(["x", "y", "z"], PARAMS, hidden=(4,), seed=0)
    with pytest.raises(ValueError, match="feature_names"):
        ParameterNetEnsemble([_net(), other])
    with pytest.raises(ValueError, match="at least one"):
        ParameterNetEnsemble([])


class _Evil:
    def __reduce__(self):
        return (os.system, ("touch evil_was_here",))


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
def test_pickled_payload_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "net.pt"
    with open(path, "wb") as fh:
        pickle.dump({"weights": _Evil()}, fh)
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_network(path)
    assert not (tmp_path / "evil_was_here").exists()
    # torch.save of a whole module (pickled class) is refused as well
    torch.save(_net(), tmp_path / "module.pt")
    with pytest.raises(CheckpointError, match="refusing to load"):
        load_network(tmp_path / "module.pt")


def test_state_dict_with_json_sidecar(tmp_path):
    import json

    net = _net(seed=2)
    torch.save(net.state_dict(), tmp_path / "net.pt")
    with pytest.raises(CheckpointError, match="configuration"):
        load_network(tmp_path / "net.pt")
    (tmp_path / "net.json").write_text(json.dumps({"config": net.config()}))
    with pytest.raises(CheckpointError, match="no content_hash"):
        load_network(tmp_path / "net.pt")  # nothing to verify the weights against
    again = load_network(tmp_path / "net.pt", trust_unverified=True)
    x = np.ones((2, 3))
    np.testing.assert_array_equal(again.predict(x), net.predict(x))
    (tmp_path / "net.json").write_text(json.dumps({"config": net.config(),
                                                   "content_hash": net.content_hash}))
    again = load_network(tmp_path / "net.pt")
    x = np.ones((2, 3))
    np.testing.assert_array_equal(again.predict(x), net.predict(x))


def test_tampered_weights_detected(tmp_path):
    from safetensors.torch import load_file, save_file
    from safetensors import safe_open

    path = tmp_path / "net.safetensors"
    _net().save(path)
    with safe_open(str(path), framework="pt") as f:
        md = f.metadata()
    t = load_file(str(path))
    key = next(k for k in t if k.endswith("weight"))
    t[key] = t[key] * 1.001
    save_file(t, str(path), metadata=md)
    with pytest.raises(CheckpointError, match="does not match its content hash"):
        load_network(path)
    with pytest.warns(UserWarning, match="trust_unverified"):
        assert isinstance(load_network(path, trust_unverified=True), ParameterNet)


def test_not_a_network(tmp_path):
    from xproda.sites.assimilation.checkpoint import save_checkpoint

    path = tmp_path / "sampler.safetensors"
    save_checkpoint(path, {"x": torch.zeros(2)}, {"iteration": 1})
    with pytest.raises(CheckpointError, match="xproda-parameter-net"):
        load_network(path)
    with pytest.raises(FileNotFoundError):
        load_network(tmp_path / "missing.safetensors")


# -------------------------------------------------------------------------------------
# gridded prediction
# -------------------------------------------------------------------------------------
def test_predict_parameters_eager_equals_lazy_and_nan():
    ds = _covariates()
    net = _net(seed=4)
    eager = ds.proda.predict_parameters(net)
    with raise_if_dask_computes():
        lazy = ds.chunk(lat=5, lon=7).proda.predict_parameters(net)
    assert lazy.chunks is not None
    assert eager.dims == ("lat", "lon", "parameter")
    assert list(eager.parameter.values) == PARAMS
    np.testing.assert_array_equal(lazy.values, eager.values)
    assert np.isnan(eager.values[2, 3]).all()
    assert np.isfinite(eager.values[0, 0]).all()
    # same as predicting the table directly
    x = np.stack([ds[f].values.ravel() for f in FEATS], -1)
    np.testing.assert_array_equal(eager.values.reshape(-1, len(PARAMS)), net.predict(x))


@settings(max_examples=10, deadline=None)
@given(cy=st.integers(1, 12), cx=st.integers(1, 18))
def test_predict_parameters_chunk_invariant(cy, cx):
    ds = _covariates()
    net = _net(seed=7)
    ref = ds.proda.predict_parameters(net).values
    got = ds.chunk(lat=cy, lon=cx).proda.predict_parameters(net).values
    np.testing.assert_array_equal(got, ref)


def test_predict_parameters_ensemble_member_dim():
    ds = _covariates()
    ens = ParameterNetEnsemble([_net(seed=k) for k in range(2)])
    with raise_if_dask_computes():
        th = ds.chunk(lat=4).proda.predict_parameters(ens)
    assert th.dims == ("lat", "lon", "member", "parameter")
    assert list(th.member.values) == [0, 1]
    v = th.values
    np.testing.assert_array_equal(v[..., 1, :], ds.proda.predict_parameters(ens[1]).values)


def test_predict_parameters_reloaded_net_bit_identical(tmp_path):
    ds = _covariates().chunk(lat=6)
    net = _net(seed=9)
    net.save(tmp_path / "n.safetensors")
    a = ds.proda.predict_parameters(net).values
    b = ds.proda.predict_parameters(load_network(tmp_path / "n.safetensors")).values
    np.testing.assert_array_equal(a, b)


def test_predict_parameters_missing_features_listed():
    ds = _covariates().drop_vars(["clay", "elev"])
    with pytest.raises(KeyError, match=r"\['clay', 'elev'\]"):
        ds.proda.predict_parameters(_net())


def test_predict_parameters_weights_one_key():
    ds = _covariates().chunk(lat=3, lon=3)
    th = ds.proda.predict_parameters(_net())
    graph = dict(th.data.__dask_graph__())
    nets = [k for k, v in graph.items() if isinstance(v, ParameterNet)
            or getattr(v, "__class__", None) is ParameterNet]
    n_tasks = len(th.data.__dask_keys__()) * 0 + th.data.npartitions
    assert n_tasks > 1
    # the network object is stored under exactly one key, referenced by every task
    from dask.core import get_dependencies

    holders = [k for k in graph if any(isinstance(x, ParameterNet) for x in _leaves(graph[k]))]
    assert len(holders) == 1, holders
    users = [k for k in graph if holders[0] in get_dependencies(graph, k)]
    assert len(users) == th.data.npartitions


def _leaves(task):
    try:
        from dask._task_spec import DataNode, Task

        if isinstance(task, DataNode):
            return [task.value]
        if isinstance(task, Task):
            return []
    except ImportError:  # pragma: no cover - older dask
        pass
    return [task]
