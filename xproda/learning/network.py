"""Parameter networks: covariates -> normalised model parameters (PRODA stage two).

:class:`ParameterNet` is the multilayer perceptron of spec §7.3 (Dense 256-512-512-256 with
ReLU, dropout, P outputs) with three changes, each documented where it lives:

* **Bounded output.** The last layer goes through a logistic sigmoid by default, so every
  prediction is a valid normalised parameter in (0, 1). The original's linear output can
  leave (0, 1) and is clipped inconsistently downstream (spec §10 item 38). ``output="linear"``
  restores the original behaviour.
* **Scaling inside the network.** The min-max scaling of spec §7.2 (grid minimum and maximum
  of each covariate) is stored in the network as buffers, so a saved network carries its
  preprocessing and is applied to covariates in their own units.
* **Names inside the network.** The network knows its feature names (input order), parameter
  names (output order), model name and the xproda version that made it;
  :func:`xproda.xr.api.predict_parameters` matches covariates by name.

:class:`ParameterNetEnsemble` holds several members (best-guess repeats with different seeds,
or bootstrap resamples; spec §7.5) as one object; its output has a ``member`` axis.

Checkpoints (:func:`save_network`, :func:`load_network`) are a single ``.safetensors`` file:
the weights as tensors and the configuration as JSON in the file's metadata header. Nothing is
unpickled, ever. A ``state_dict`` saved with ``torch.save`` next to a JSON file of the same
name is also accepted; it is read with ``torch.load(weights_only=True)``, which refuses any
pickled Python object that is not a plain tensor container. Files are read and checked by
:mod:`xproda.sites.assimilation.checkpoint`: a damaged, truncated, foreign or edited file
raises :class:`~xproda.errors.CheckpointError` naming it, and one without a content hash is
refused unless ``load_network(..., trust_unverified=True)``.

Examples
--------
>>> import numpy as np, tempfile, os
>>> from xproda.learning.network import ParameterNet, load_network
>>> net = ParameterNet(["bio1", "clay"], ["a", "b", "c"], model="clm5", hidden=(8,), seed=0,
...                    x_min=[-20.0, 0.0], x_max=[30.0, 80.0])
>>> y = net.predict(np.array([[10.0, 20.0], [np.nan, 1.0]]))
>>> y.shape, bool(np.isnan(y[1]).all()), bool(((y[0] > 0) & (y[0] < 1)).all())
((2, 3), True, True)
>>> path = os.path.join(tempfile.mkdtemp(), "net.safetensors")
>>> digest = net.save(path)
>>> again = load_network(path)
>>> bool((again.predict(np.array([[10.0, 20.0]])) == y[:1]).all())
True
>>> again.content_hash == net.content_hash == digest
True
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from xproda.errors import CheckpointError

__all__ = [
    "ParameterNet", "ParameterNetEnsemble", "save_network", "load_network",
    "CheckpointError", "SPEC_HIDDEN", "FORMAT", "VERSION", "PREDICT_BLOCK", "OUTPUT_EPS",
]

#: Hidden layer widths of spec §7.3.
SPEC_HIDDEN: tuple[int, ...] = (256, 512, 512, 256)
#: Format name written into every network checkpoint.
FORMAT = "xproda-parameter-net"
#: Checkpoint format version (bumped on incompatible layout changes).
VERSION = 1

#: Rows per forward pass of :meth:`ParameterNet.predict` (fixed, for bit-exact chunk
#: invariance).
PREDICT_BLOCK = 512
#: Sigmoid outputs are kept in [OUTPUT_EPS, 1 - OUTPUT_EPS] (strictly inside the prior box,
#: also in float32).
OUTPUT_EPS = 1e-7

_ACTIVATIONS = {"relu": torch.nn.ReLU, "tanh": torch.nn.Tanh, "gelu": torch.nn.GELU,
                "silu": torch.nn.SiLU}


def _version() -> str:
    from xproda import __version__

    return __version__


def _torch_dtype(dtype: Any) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype is None:
        from xproda.options import current as _option

        dtype = _option("dtype")
    try:
        return {"float64": torch.float64, "float32": torch.float32}[str(dtype)]
    except KeyError:
        raise ValueError(f"dtype must be 'float64' or 'float32', got {dtype!r}") from None


def _names(x: Sequence[str], what: str) -> tuple[str, ...]:
    if isinstance(x, str):
        raise TypeError(f"{what} must be a sequence of names, got the string {x!r}")
    out = tuple(str(v) for v in x)
    if not out:
        raise ValueError(f"{what} must not be empty")
    dup = sorted({v for v in out if out.count(v) > 1})
    if dup:
        raise ValueError(f"{what} contain duplicates: {dup}")
    return out


class _NetBase(torch.nn.Module):
    """What single networks and ensembles share: names, prediction helpers, checkpoints."""

    feature_names: tuple[str, ...]
    parameter_names: tuple[str, ...]
    model_name: str

    @property
    def n_features(self) -> int:
        return len(self.feature_names)

    @property
    def n_parameters(self) -> int:
        return len(self.parameter_names)

    @property
    def dtype(self) -> torch.dtype:
        return self.x_min.dtype  # type: ignore[attr-defined]

    @property
    def device(self) -> torch.device:
        return self.x_min.device  # type: ignore[attr-defined]

    def predict(self, x: Any) -> np.ndarray:
        """Normalised parameters for raw covariates (numpy in, numpy out, no gradient).

        Rows are evaluated in fixed blocks of :data:`PREDICT_BLOCK` rows (the last one
        zero-padded). BLAS picks its kernels by matrix size, so a row's rounding would
        otherwise depend on how many rows are predicted together; with fixed blocks a row's
        result is the same bits whatever the chunking of a gridded prediction.

        Parameters
        ----------
        x : array_like, shape [n, F]
            Covariates in the order of :attr:`feature_names`, in their own units.

        Returns
        -------
        numpy.ndarray
            ``[n, P]`` (or ``[n, M, P]`` for an ensemble), float64; rows with any NaN
            covariate are NaN.
        """
        x = np.asarray(x, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.n_features:
            raise ValueError(f"covariates must have shape [n, {self.n_features}] (features "
                             f"{list(self.feature_names)}), got {x.shape}")
        ok = np.isfinite(x).all(-1)
        out = np.full((x.shape[0],) + self._out_tail(), np.nan)
        n = int(ok.sum())
        if n:
            B = PREDICT_BLOCK
            xs = torch.zeros((n + (-n) % B, self.n_features), dtype=self.dtype,
                             device=self.device)
            xs[:n] = torch.as_tensor(x[ok], dtype=self.dtype, device=self.device)
            was = self.training
            self.eval()
            try:
                with torch.no_grad():
                    parts = [self(xs[i:i + B]) for i in range(0, xs.shape[0], B)]
            finally:
                self.train(was)
            out[ok] = torch.cat(parts)[:n].to("cpu", torch.float64).numpy()
        return out

    def _out_tail(self) -> tuple[int, ...]:
        return (self.n_parameters,)

    # -- checkpoints ---------------------------------------------------------------------
    def config(self) -> dict[str, Any]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _tensors(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().to("cpu").contiguous() for k, v in self.state_dict().items()}

    @property
    def content_hash(self) -> str:
        """SHA-256 of the configuration and every weight (bytes, in key order)."""
        h = hashlib.sha256(json.dumps(self.config(), sort_keys=True).encode())
        for k, v in sorted(self._tensors().items()):
            h.update(k.encode())
            h.update(str(v.dtype).encode())
            h.update(str(tuple(v.shape)).encode())
            h.update(v.numpy().tobytes())
        return h.hexdigest()

    def save(self, path: str | os.PathLike) -> str:
        """Write the network to ``path`` (safetensors + JSON metadata); returns its hash."""
        return save_network(self, path)

    def __repr__(self) -> str:
        site = getattr(self, "site_features", ())
        at = f" ({len(site)} measured at sites)" if site else ""
        return (f"{type(self).__name__}(model={self.model_name!r}, {self.n_features} features"
                f"{at} -> {self.n_parameters} parameters{self._repr_extra()})")

    def _repr_extra(self) -> str:
        return ""


class ParameterNet(_NetBase):
    """MLP mapping covariates (own units) to normalised parameters ``theta`` in (0, 1).

    Parameters
    ----------
    features : sequence of str
        Covariate names in input order.
    parameter_names : sequence of str
        Output names (the model's ``ParameterSpace.names`` or a subset).
    model : str, default "clm5"
        Model the parameters belong to (stored, used by prediction and training).
    hidden : sequence of int, default (256, 512, 512, 256)
        Hidden layer widths (spec §7.3).
    dropout : float, default 0.0
        Dropout after every hidden layer (spec: 0.0 for clm5/cen, 0.2 for microbial).
    activation : {"relu", "tanh", "gelu", "silu"}, default "relu"
    output : {"sigmoid", "linear"}, default "sigmoid"
        ``"sigmoid"`` bounds every output to (0, 1) -- precisely to ``[OUTPUT_EPS,
        1 - OUTPUT_EPS]`` (1e-7), as a saturated sigmoid would round to the bounds -- (our
        fix of spec §10 item 38);
        ``"linear"`` is the original's unbounded output.
    x_min, x_max : array_like of shape [F], optional
        Min-max scaling constants per feature (spec §7.2: the grid's minimum and maximum);
        default 0 and 1 (no scaling). Constant features (max == min) map to 0.
    clip_inputs : bool, default False
        Clip scaled covariates to [0, 1] (the microbial scripts do, clm5's do not; §7.2).
    feature_units : sequence of (str or None), optional
        Units of each covariate during training (saved with the network):
        :func:`xproda.xr.api.predict_parameters` converts covariates given in other units
        (``degC``/``K``, ``mm``/``m``...) and refuses inconvertible ones.
    site_features : sequence of str, optional
        The features (a subset of ``features``) that were measured at the training sites
        (site covariates, e.g. topsoil clay from the profile table) rather than sampled from
        a grid (saved with the network): :func:`xproda.xr.api.predict_parameters` refuses a
        grid that lacks them, with a message that says so; a grid that has a variable of the
        same name (e.g. a mapped clay fraction in the same units) is used.
    init : {"glorot", "torch"}, default "glorot"
        Weight initialisation: Keras' default (Glorot-uniform weights, zero biases) as in the
        original, or torch's default.
    seed : int, optional
        Seed of the weight initialisation (a private generator; the global RNG is untouched).
    dtype : {"float64", "float32"} or torch.dtype, optional
        Default: the ``xproda.set_options`` dtype (float64).

    Notes
    -----
    The forward pass takes raw covariates ``[n, F]`` and returns ``theta`` ``[n, P]``. NaN
    covariates give NaN outputs (use :meth:`predict` or
    :func:`xproda.xr.api.predict_parameters` to skip them cheaply).
    """

    def __init__(
        self,
        features: Sequence[str],
        parameter_names: Sequence[str],
        *,
        model: str = "clm5",
        hidden: Sequence[int] = SPEC_HIDDEN,
        dropout: float = 0.0,
        activation: Literal["relu", "tanh", "gelu", "silu"] = "relu",
        output: Literal["sigmoid", "linear"] = "sigmoid",
        x_min: Any = None,
        x_max: Any = None,
        clip_inputs: bool = False,
        feature_units: Sequence[str | None] | None = None,
        site_features: Sequence[str] = (),
        init: Literal["glorot", "torch"] = "glorot",
        seed: int | None = None,
        dtype: Any = None,
    ) -> None:
        super().__init__()
        self.feature_names = _names(features, "features")
        units = [None] * len(self.feature_names) if feature_units is None else [
            None if u is None else str(u) for u in feature_units]
        if len(units) != len(self.feature_names):
            raise ValueError(f"feature_units must have one entry per feature "
                             f"({len(self.feature_names)}), got {len(units)}")
        self.feature_units = tuple(units)
        self.site_features = tuple(str(f) for f in site_features)
        unknown = [f for f in self.site_features if f not in self.feature_names]
        if unknown:
            raise ValueError(f"site_features must be among the features {self.feature_names}; "
                             f"found {unknown}")
        self.parameter_names = _names(parameter_names, "parameter_names")
        self.model_name = str(model)
        self.hidden = tuple(int(h) for h in hidden)
        if any(h < 1 for h in self.hidden):
            raise ValueError(f"hidden widths must be >= 1, got {self.hidden}")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout}")
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation must be one of {sorted(_ACTIVATIONS)}, got "
                             f"{activation!r}")
        if output not in ("sigmoid", "linear"):
            raise ValueError(f"output must be 'sigmoid' or 'linear', got {output!r}")
        if init not in ("glorot", "torch"):
            raise ValueError(f"init must be 'glorot' or 'torch', got {init!r}")
        self.dropout, self.activation, self.output = float(dropout), activation, output
        self.clip_inputs, self.init = bool(clip_inputs), init
        dt = _torch_dtype(dtype)
        F, P = len(self.feature_names), len(self.parameter_names)
        lo = torch.zeros(F, dtype=dt) if x_min is None else torch.as_tensor(
            np.asarray(x_min, dtype=np.float64), dtype=dt)
        hi = torch.ones(F, dtype=dt) if x_max is None else torch.as_tensor(
            np.asarray(x_max, dtype=np.float64), dtype=dt)
        for name, v in (("x_min", lo), ("x_max", hi)):
            if v.shape != (F,):
                raise ValueError(f"{name} must have one value per feature ({F}), got shape "
                                 f"{tuple(v.shape)}")
            if not bool(torch.isfinite(v).all()):
                raise ValueError(f"{name} must be finite; features "
                                 f"{[f for f, ok in zip(self.feature_names, torch.isfinite(v)) if not ok]}"
                                 " are not")
        if bool((hi < lo).any()):
            bad = [f for f, b in zip(self.feature_names, (hi < lo).tolist()) if b]
            raise ValueError(f"x_max < x_min for features {bad}")
        self.register_buffer("x_min", lo)
        self.register_buffer("x_max", hi)
        layers: list[torch.nn.Module] = []
        width = F
        with torch.random.fork_rng(devices=[]):  # Linear's own init must not touch global RNG
            for h in self.hidden:
                layers += [torch.nn.Linear(width, h, dtype=dt), _ACTIVATIONS[activation]()]
                if self.dropout > 0:
                    layers.append(torch.nn.Dropout(self.dropout))
                width = h
            layers.append(torch.nn.Linear(width, P, dtype=dt))
        self.layers = torch.nn.Sequential(*layers)
        self.reset_parameters(seed)

    def reset_parameters(self, seed: int | None = None) -> None:
        """Re-initialise the weights (``init`` scheme) from a private generator."""
        gen = torch.Generator().manual_seed(int(seed)) if seed is not None else None
        for m in self.layers:
            if not isinstance(m, torch.nn.Linear):
                continue
            with torch.no_grad():
                if self.init == "glorot":
                    bound = float(np.sqrt(6.0 / (m.in_features + m.out_features)))
                    w = torch.rand(m.weight.shape, generator=gen, dtype=torch.float64)
                    m.weight.copy_((2 * w - 1) * bound)
                    m.bias.zero_()
                else:
                    bound = 1.0 / float(np.sqrt(m.in_features))
                    m.weight.copy_((2 * torch.rand(m.weight.shape, generator=gen,
                                                   dtype=torch.float64) - 1) * bound)
                    m.bias.copy_((2 * torch.rand(m.bias.shape, generator=gen,
                                                 dtype=torch.float64) - 1) * bound)

    def scale(self, x: torch.Tensor) -> torch.Tensor:
        """Min-max scaled covariates (spec §7.2); constant features map to 0."""
        rng = self.x_max - self.x_min
        z = (x - self.x_min) / torch.where(rng > 0, rng, torch.ones_like(rng))
        return z.clamp(0.0, 1.0) if self.clip_inputs else z

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``theta`` ``[n, P]`` from raw covariates ``[n, F]``."""
        z = self.layers(self.scale(x))
        if self.output == "linear":
            return z
        # a saturated sigmoid rounds to exactly 0 or 1 (a prior bound); keep strictly inside
        return torch.sigmoid(z).clamp(OUTPUT_EPS, 1.0 - OUTPUT_EPS)

    def config(self) -> dict[str, Any]:
        """JSON-serialisable description (everything but the weights)."""
        return {
            "kind": "ParameterNet", "features": list(self.feature_names),
            "parameter_names": list(self.parameter_names), "model": self.model_name,
            "hidden": list(self.hidden), "dropout": self.dropout, "activation": self.activation,
            "output": self.output, "clip_inputs": self.clip_inputs, "init": self.init,
            "dtype": str(self.dtype).replace("torch.", ""),
            # only when known: files written before units were recorded keep their hash
            **({"feature_units": list(self.feature_units)}
               if any(u is not None for u in self.feature_units) else {}),
            **({"site_features": list(self.site_features)} if self.site_features else {}),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> ParameterNet:
        """An untrained network with the architecture of ``config`` (see :meth:`config`)."""
        c = dict(config)
        if c.pop("kind", "ParameterNet") != "ParameterNet":
            raise CheckpointError(f"config describes a {config.get('kind')!r}, not a ParameterNet")
        return cls(c.pop("features"), c.pop("parameter_names"), **c)

    def _repr_extra(self) -> str:
        return f", hidden={self.hidden}, output={self.output!r}"


class ParameterNetEnsemble(_NetBase):
    """Several :class:`ParameterNet` members with the same inputs and outputs, as one object.

    Parameters
    ----------
    members : sequence of ParameterNet
        Members with identical feature names, parameter names and model.
    kind : str, default "repeats"
        How the members were made (``"repeats"``: different seeds on the same data, the spec's
        best-guess ensemble; ``"bootstrap"``: resampled training sites); stored only.

    Notes
    -----
    ``forward`` returns ``[n, M, P]``; :func:`xproda.xr.api.predict_parameters` turns the
    member axis into a ``member`` dim. :meth:`mean_net`-style averaging is left to the user
    (``theta.mean("member")``), because the mean of parameters is not the parameter of means.
    """

    def __init__(self, members: Sequence[ParameterNet], *, kind: str = "repeats") -> None:
        super().__init__()
        members = list(members)
        if not members:
            raise ValueError("an ensemble needs at least one member")
        if not all(isinstance(m, ParameterNet) for m in members):
            raise TypeError("ensemble members must be ParameterNet instances, got "
                            f"{sorted({type(m).__name__ for m in members})}")
        ref = members[0]
        for k, m in enumerate(members[1:], 1):
            for attr in ("feature_names", "feature_units", "site_features", "parameter_names",
                         "model_name"):
                if getattr(m, attr) != getattr(ref, attr):
                    raise ValueError(f"member {k} has {attr} {getattr(m, attr)!r}; member 0 has "
                                     f"{getattr(ref, attr)!r}")
        self.members = torch.nn.ModuleList(members)
        self.kind = str(kind)
        self.feature_names = ref.feature_names
        self.feature_units = ref.feature_units
        self.site_features = ref.site_features
        self.parameter_names = ref.parameter_names
        self.model_name = ref.model_name

    @property
    def x_min(self) -> torch.Tensor:  # dtype/device of the ensemble
        return self.members[0].x_min

    @property
    def n_members(self) -> int:
        return len(self.members)

    def __len__(self) -> int:
        return len(self.members)

    def __getitem__(self, k: int) -> ParameterNet:
        return self.members[k]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``theta`` ``[n, M, P]`` from raw covariates ``[n, F]``."""
        return torch.stack([m(x) for m in self.members], dim=1)

    def _out_tail(self) -> tuple[int, ...]:
        return (self.n_members, self.n_parameters)

    def config(self) -> dict[str, Any]:
        return {"kind": "ParameterNetEnsemble", "ensemble_kind": self.kind,
                "members": [m.config() for m in self.members]}

    def _repr_extra(self) -> str:
        return f", {self.n_members} members ({self.kind})"


# ---------------------------------------------------------------------------------------
# checkpoints
# ---------------------------------------------------------------------------------------
def save_network(net: _NetBase, path: str | os.PathLike) -> str:
    """Save a network or ensemble as one safetensors file with JSON metadata.

    Parameters
    ----------
    net : ParameterNet or ParameterNetEnsemble
    path : str or path-like
        Destination (conventionally ``*.safetensors``); written atomically.

    Returns
    -------
    str
        The network's :attr:`~ParameterNet.content_hash` (also stored in the file).
    """
    from xproda.sites.assimilation.checkpoint import save_checkpoint

    if not isinstance(net, _NetBase):
        raise TypeError(f"net must be a ParameterNet or ParameterNetEnsemble, got "
                        f"{type(net).__name__}")
    digest = net.content_hash
    save_checkpoint(path, net._tensors(), {"config": net.config(), "xproda_version": _version(),
                                           "content_hash": digest},
                    format=FORMAT, version=VERSION)
    return digest


def _build(config: Mapping[str, Any]) -> _NetBase:
    kind = config.get("kind")
    if kind == "ParameterNet":
        return ParameterNet.from_config(config)
    if kind == "ParameterNetEnsemble":
        return ParameterNetEnsemble([ParameterNet.from_config(c) for c in config["members"]],
                                    kind=config.get("ensemble_kind", "repeats"))
    raise CheckpointError(f"unknown network kind {kind!r} in the checkpoint configuration")


def _is_safetensors(path: Path) -> bool:
    """True for a ``.safetensors`` name, or a file that starts like one (else: torch.save)."""
    if path.suffix.lower() == ".safetensors":
        return True
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
    except OSError:
        return True  # let the checkpoint reader report why it cannot be read
    if len(head) < 9:
        return True
    n = int.from_bytes(head[:8], "little")
    return 0 < n < 100_000_000 and head[8:9] == b"{"


def _load_torch_state_dict(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """A ``torch.save``-d state_dict and its JSON sidecar (``net.pt`` + ``net.json``)."""
    sidecar = path.with_suffix(".json")
    try:
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:  # noqa: BLE001 - UnpicklingError, RuntimeError, EOFError, ...
        raise CheckpointError(
            f"refusing to load {str(path)!r}: it is not a safetensors file, and as a torch "
            "file it holds pickled Python objects other than tensors (loading it would "
            "run arbitrary code) or is damaged. Save networks with "
            f"xproda.learning.network.save_network. ({type(e).__name__}: {e})"
        ) from None
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor)
                                               for v in obj.values()):
        raise CheckpointError(f"{str(path)!r} is not a state_dict of tensors")
    if not sidecar.is_file():
        raise CheckpointError(f"{str(path)!r} is a state_dict; its configuration "
                              f"{str(sidecar)!r} (JSON) is missing")
    try:
        meta = json.loads(sidecar.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CheckpointError(f"configuration {str(sidecar)!r} of {str(path)!r} is not "
                              f"readable JSON ({e})") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"configuration {str(sidecar)!r} of {str(path)!r}: expected a "
                              f"JSON object, found a {type(meta).__name__}")
    return dict(obj), meta


def load_network(path: str | os.PathLike, *, device: str | torch.device | None = None,
                 trust_unverified: bool = False) -> _NetBase:
    """Load a network saved by :func:`save_network` (never unpickles anything).

    The file is read and checked by :func:`xproda.sites.assimilation.checkpoint.read_checkpoint`;
    then the network's :attr:`~ParameterNet.content_hash` (configuration and weights) is
    compared with the one stored at save time.

    Parameters
    ----------
    path : str or path-like
        A ``.safetensors`` checkpoint; or a ``torch.save``-d ``state_dict`` (``.pt``) with
        the configuration in a JSON file of the same stem (``net.pt`` + ``net.json``, with
        the ``content_hash`` of :func:`save_network`), read with
        ``torch.load(weights_only=True)``. A file named ``*.safetensors`` is always read as
        safetensors.
    device : str or torch.device, optional
        Move the network there (default CPU).
    trust_unverified : bool, default False
        Load a checkpoint that has no content hash (a hand-made ``.pt`` + ``.json``, a file
        from an older xproda, or one whose hash was stripped), or whose hash does not
        match its content (a :class:`UserWarning` names the file). Without it such files
        are refused: an edited header could, for example, swap the feature names. Use it
        only for files whose origin you trust.

    Returns
    -------
    ParameterNet or ParameterNetEnsemble
        In evaluation mode.

    Raises
    ------
    FileNotFoundError
        ``path`` does not exist.
    CheckpointError
        The file is unreadable, empty, truncated or foreign (a pickle, a zip archive, random
        bytes, a safetensors file that is not an xproda network); would need unpickling
        arbitrary objects; has no content hash (unless ``trust_unverified``); or its hash
        does not match (damaged or edited). The message names the file and the reason.
    """
    from xproda.sites.assimilation.checkpoint import read_checkpoint, verify_checkpoint

    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"network checkpoint {str(path)!r} does not exist")
    if _is_safetensors(path):
        contents = read_checkpoint(path, format=FORMAT, version=VERSION)
        config, stored = contents.meta.get("config"), contents.meta.get("content_hash")
        warned = contents.stored_hash is not None and not contents.verified
        if contents.stored_hash is not None or stored is None:
            verify_checkpoint(contents, trust_unverified=trust_unverified)
        # else: written before checkpoints had a file hash; the network hash below covers
        # the configuration and every weight
        tensors = contents.tensors
    else:
        tensors, meta = _load_torch_state_dict(path)
        warned = False
        config, stored = meta.get("config", meta), meta.get("content_hash")
        if stored is None and not trust_unverified:
            raise CheckpointError(
                f"{str(path)!r}: its configuration {str(path.with_suffix('.json'))!r} has no "
                "content_hash, so the weights and configuration cannot be verified; refusing "
                "to load it. Pass trust_unverified=True to load it anyway if you trust its "
                "origin, or save the network with xproda.learning.network.save_network")
    if not isinstance(config, Mapping):
        raise CheckpointError(f"{str(path)!r}: no network configuration in the checkpoint "
                              f"(expected a JSON object, found {type(config).__name__})")
    try:
        net = _build(config)
    except CheckpointError as e:
        raise CheckpointError(f"{str(path)!r}: {e}") from None
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{str(path)!r}: invalid network configuration "
                              f"({type(e).__name__}: {e})") from None
    missing = set(net.state_dict()) ^ set(tensors)
    if missing:
        raise CheckpointError(f"{str(path)!r}: weights do not match the configuration "
                              f"(keys {sorted(missing)[:5]} differ)")
    try:
        net.load_state_dict({k: v.to(net.state_dict()[k].dtype) for k, v in tensors.items()})
    except RuntimeError as e:  # shapes that do not fit the configuration
        raise CheckpointError(f"{str(path)!r}: weights do not match the configuration "
                              f"({e})") from None
    if stored is not None and net.content_hash != stored:
        msg = (f"{str(path)!r}: content hash mismatch (stored {str(stored)[:12]}..., computed "
               f"{net.content_hash[:12]}...): the file is corrupted or was edited")
        if not trust_unverified:
            raise CheckpointError(msg)
        if not warned:  # (the file's own hash has already been reported)
            import warnings

            warnings.warn(msg + "; loading it because trust_unverified=True", UserWarning,
                          stacklevel=2)
    if device is not None:
        net = net.to(device)
    return net.eval()
