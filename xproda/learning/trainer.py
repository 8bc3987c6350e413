"""Training parameter networks: PRODA's two-step method and end-to-end through the model.

Two ways to learn a :class:`~xproda.learning.network.ParameterNet` from soil profiles:

``method="two_step"`` (PRODA, spec §7)
    First retrieve parameters site by site by data assimilation
    (:func:`xproda.sites.assimilation.problem.assimilate`, or a result you pass in), keep the sites whose
    retrieval fits (spec §5.3: DA R^2 above a threshold), then fit the network to the
    retrieved normalised parameters (a loss on parameters only).

``method="end_to_end"``
    The network's output goes straight into the differentiable process model; the loss
    compares modelled and observed SOC at the observed depths, and its gradient flows back
    through the steady-state solve into the network's weights (differentiable parameter
    learning, Tsai et al. 2021, Nat. Commun. 12:5988). No per-site MCMC is needed, and sites
    whose parameters are poorly identified individually still inform the mapping.

Both share the training loop: Adam, mini-batches of sites, a validation split (random or
spatially blocked, :mod:`xproda.learning.crossval`), early stopping on the validation loss with the best
weights restored, a seed that makes CPU runs bit-reproducible, a progress bar, optional
checkpoints (safetensors) that a killed run resumes from without changing the result, and
ensembles (repeats with different seeds or bootstrap resamples) returned as one
:class:`~xproda.learning.network.ParameterNetEnsemble`.

:func:`cross_validate` compares, on the same spatially blocked folds, the SOC skill on held-out
profiles of CLM5 default parameters, batch mode (one parameter set), two-step PRODA and
end-to-end training, and optionally of machine-learning baselines (:mod:`xproda.learning.baselines`).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
import torch
import xarray as xr

from xproda.learning import crossval
from xproda.sites import observations as obsmod
from xproda.models.interp import ModelToObs
from xproda.models import get_model
from xproda.models.base import SoilCarbonModel
from xproda.models.forcing import FORCING_SCHEMA, PreparedForcing, prepare_forcing
from xproda.learning.network import ParameterNet, ParameterNetEnsemble, SPEC_HIDDEN

__all__ = [
    "TrainingData", "TrainingReport", "prepare_training_data", "default_features",
    "train_network", "cross_validate", "soc_loss", "parameter_loss", "CV_METHODS",
    "soc_at_observations", "BASELINE_METHODS",
]

#: Methods compared by :func:`cross_validate` (its default).
CV_METHODS = ("default", "batch", "two_step", "end_to_end")
#: Machine-learning baselines :func:`cross_validate` also offers (need scikit-learn).
BASELINE_METHODS = ("gbm", "random_forest")
#: Checkpoint format of training runs.
FORMAT = "xproda-training-checkpoint"
VERSION = 1

_NOT_COVARIATES = {"landfrac", "landmask", "land_mask", "area", "cell_area", "spatial_ref",
                   "crs"}


# ---------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------
def default_features(covariates: xr.Dataset) -> list[str]:
    """Covariate names used when ``features`` is not given.

    Every numeric data variable whose dims are all spatial (no ``month``/``layer``/...), that
    is not a forcing variable (:data:`~xproda.models.forcing.FORCING_SCHEMA`), not a bounds
    variable and not a land mask/area/CRS variable -- in the Dataset's order.
    """
    from xproda.spatial import spatial_dims

    sdims = set(spatial_dims(covariates))
    bounds = {str(v.attrs.get("bounds")) for v in covariates.variables.values()}
    out = []
    for name, da in covariates.data_vars.items():
        name = str(name)
        if (name in FORCING_SCHEMA or name in _NOT_COVARIATES or name in bounds
                or name.endswith(("_bnds", "_bounds"))):
            continue
        if not set(da.dims) <= sdims or not da.dims:
            continue
        if not np.issubdtype(da.dtype, np.number):
            continue
        out.append(name)
    return out


@dataclass
class TrainingData:
    """Profiles with their covariates and forcing, ready for training.

    Attributes
    ----------
    batch : ProfileBatch
        Observations of the S usable sites.
    x : numpy.ndarray, shape [S, F]
        Raw covariates at the sites (order of ``features``).
    forcing : dict of numpy.ndarray
        Kernel forcing per site, batch first.
    features : list of str
    x_min, x_max : numpy.ndarray, shape [F]
        Min-max scaling constants (spec §7.2: over the whole covariate grid).
    dropped : pandas.DataFrame
        ``site``, ``reason`` of every site that could not be used.
    """

    batch: Any
    x: np.ndarray
    forcing: dict[str, np.ndarray]
    features: list[str]
    x_min: np.ndarray
    x_max: np.ndarray
    dropped: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=["site",
                                                                                 "reason"]))

    def __len__(self) -> int:
        return len(self.batch)

    def subset(self, idx: Any) -> TrainingData:
        """The sites ``idx`` (integer indices)."""
        idx = np.asarray(idx)
        return TrainingData(self.batch.subset(idx), self.x[idx],
                            {k: v[idx] for k, v in self.forcing.items()}, list(self.features),
                            self.x_min, self.x_max, self.dropped)


def _as_batch(profiles: Any) -> Any:
    if isinstance(profiles, obsmod.ProfileBatch):
        return profiles
    if isinstance(profiles, pd.DataFrame):
        return obsmod.pack_profiles(profiles)
    raise TypeError(f"profiles must be a DataFrame (profile table) or a ProfileBatch, got "
                    f"{type(profiles).__name__}")


def prepare_training_data(
    covariates: xr.Dataset,
    profiles: Any,
    *,
    forcing: xr.Dataset | None = None,
    model: str | SoilCarbonModel = "clm5",
    features: Sequence[str] | None = None,
    scaling: Literal["grid", "sites"] = "grid",
) -> TrainingData:
    """Sample covariates and forcing at the profile sites; drop (and report) unusable sites.

    Parameters
    ----------
    covariates : Dataset
        Gridded covariates (may also hold the forcing).
    profiles : DataFrame or ProfileBatch
        Profile table (:mod:`xproda.sites.observations` schema) or a packed batch.
    forcing : Dataset, optional
        Gridded forcing (default: taken from ``covariates``).
    model : str or model, default "clm5"
    features : sequence of str, optional
        Covariates to use, in order (default :func:`default_features`).
    scaling : {"grid", "sites"}, default "grid"
        Min-max constants from the whole grid (spec §7.2) or from the sites only.

    Returns
    -------
    TrainingData
    """
    import dask

    from xproda.spatial import sample_sites
    from xproda.xr.api import forcing_arrays, require_features

    mdl = model if isinstance(model, SoilCarbonModel) else get_model(model)
    batch = _as_batch(profiles)
    feats = list(features) if features is not None else default_features(covariates)
    if not feats:
        raise ValueError("no covariates to train on: covariates has no variable with only "
                         "spatial dims; pass features=[...]")
    if scaling not in ("grid", "sites"):
        raise ValueError(f"scaling must be 'grid' or 'sites', got {scaling!r}")
    require_features(covariates, feats)
    fds = covariates if forcing is None else forcing
    need = [k for k in FORCING_SCHEMA if k in fds.variables
            and (k in mdl.required_forcing or k in ("CELLSAND", "NPP"))]
    absent = [k for k in mdl.required_forcing if k not in fds.variables]
    if absent:
        where = "covariates" if forcing is None else "forcing"
        raise KeyError(f"{where} lack forcing variable(s) {absent} needed by "
                       f"{mdl.name!r}; pass forcing=... or add them")
    cov_s = sample_sites(covariates[feats], lat=batch.lat, lon=batch.lon)
    frc_s = sample_sites(fds[need], lat=batch.lat, lon=batch.lon)
    grid = covariates[feats] if scaling == "grid" else cov_s
    cov_s, frc_s, lo, hi = dask.compute(cov_s, frc_s, grid.min(), grid.max())
    x = np.stack([np.asarray(cov_s[f].values, dtype=np.float64).reshape(-1) for f in feats], -1)
    f = forcing_arrays(frc_s, model=mdl, dim="site")
    x_min = np.array([float(lo[f_].values) for f_ in feats])
    x_max = np.array([float(hi[f_].values) for f_ in feats])
    bad_feat = [f_ for f_, a, b in zip(feats, x_min, x_max) if not (np.isfinite(a)
                                                                     and np.isfinite(b))]
    if bad_feat:
        raise ValueError(f"covariate(s) {bad_feat} are all-NaN on the {scaling}")
    S = len(batch)
    reasons = np.full(S, "", dtype=object)
    ok_obs = batch.mask.any(-1)
    reasons[~ok_obs] = "no valid observation"
    ok_x = np.isfinite(x).all(-1)
    for s in np.flatnonzero(~ok_x & ok_obs):
        reasons[s] = "NaN covariate(s): " + ", ".join(
            f_ for f_, v in zip(feats, x[s]) if not np.isfinite(v))
    ok_f = np.ones(S, dtype=bool)
    for k, v in f.items():
        ok_f &= np.isfinite(np.asarray(v, dtype=float).reshape(S, -1)).all(-1)
    reasons[(reasons == "") & ~ok_f] = "NaN forcing (off the model grid's land?)"
    keep = reasons == ""
    dropped = pd.DataFrame({"site": np.asarray(batch.site_ids)[~keep],
                            "reason": reasons[~keep].astype(str)})
    idx = np.flatnonzero(keep)
    if idx.size == 0:
        raise ValueError(f"no usable site among {S}: {dropped['reason'].value_counts().to_dict()}")
    return TrainingData(batch.subset(idx), x[idx], {k: np.asarray(v)[idx] for k, v in f.items()},
                        feats, x_min, x_max, dropped)


# ---------------------------------------------------------------------------------------
# losses
# ---------------------------------------------------------------------------------------
def soc_loss(mod: torch.Tensor, obs: torch.Tensor, mask: torch.Tensor, *,
             kind: Literal["log", "soc"] = "log") -> torch.Tensor:
    """Loss between modelled and observed SOC at the observed layers (differentiable).

    Parameters
    ----------
    mod, obs : Tensor, shape [B, D]
        Modelled and observed SOC density (g C m-3); padding may be NaN.
    mask : Tensor of bool, shape [B, D]
        Valid observations.
    kind : {"log", "soc"}
        ``"log"``: mean over sites of the mean squared log error of the site's layers
        (dimensionless; equals the squared sd of log-normal errors; observations <= 0 are
        ignored); ``"soc"``: the pooled
        relative squared error ``sum (m - o)^2 / sum o^2``.

    Returns
    -------
    Tensor
        Scalar loss. Invalid entries never reach the gradient (no ``0 * NaN``).
    """
    one = torch.ones((), dtype=mod.dtype, device=mod.device)
    if kind == "log":  # log errors need positive observations
        mask = mask & (obs > 0)
    m = torch.where(mask, mod, one)
    o = torch.where(mask, obs, one)
    w = mask.to(mod.dtype)
    if kind == "log":
        e = (torch.log(m.clamp_min(1e-12)) - torch.log(o)) ** 2 * w
        n = w.sum(-1)
        per_site = e.sum(-1) / n.clamp_min(1.0)
        return per_site[n > 0].mean()
    if kind == "soc":
        return (((m - o) ** 2) * w).sum() / ((o ** 2) * w).sum()
    raise ValueError(f"loss must be 'log' or 'soc', got {kind!r}")


def parameter_loss(pred: torch.Tensor, target: torch.Tensor, *,
                   kind: Literal["mse", "cen_product"] = "mse") -> torch.Tensor:
    """Loss on normalised parameters (two-step training, spec §7.4).

    ``"mse"`` is the microbial scripts' ``500 * MSE`` without the constant factor;
    ``"cen_product"`` reproduces the clm5 (cen) scripts' ``(500 MSE) (25 MARE)`` product
    (spec §10 item 32: degenerate, offered for parity only).
    """
    mse = ((pred - target) ** 2).mean()
    if kind == "mse":
        return mse
    if kind == "cen_product":
        mare = ((pred - target) / target).abs().mean()
        return (500.0 * mse) * (25.0 * mare)
    raise ValueError(f"param_loss must be 'mse' or 'cen_product', got {kind!r}")


# ---------------------------------------------------------------------------------------
# report
# ---------------------------------------------------------------------------------------
@dataclass
class TrainingReport:
    """What happened during training.

    Attributes
    ----------
    method : str
        ``"end_to_end"`` or ``"two_step"``.
    history : pandas.DataFrame
        Per epoch (and member): ``member``, ``epoch``, ``train_loss``, ``val_loss``,
        ``seconds``.
    best_epoch : list of int
        Epoch whose weights were kept, per member.
    stopped_early : list of bool
    n_sites : int
        Usable sites (after dropping).
    n_train, n_val : list of int
        Training/validation sites per member.
    dropped : pandas.DataFrame
        Sites dropped before training, with the reason (includes two-step DA filtering).
    skill : dict
        SOC skill on the validation sites of every member pooled (:func:`crossval.skill_scores`;
        empty without validation).
    wall_seconds : float
    profiles_per_second : float
        Training profiles processed per second of training-loop time (``n_train`` x epochs /
        time), averaged over members.
    settings : dict
    assimilation : xarray.Dataset or None
        The DA result used by two-step training.
    """

    method: str
    history: pd.DataFrame
    best_epoch: list[int]
    stopped_early: list[bool]
    n_sites: int
    n_train: list[int]
    n_val: list[int]
    dropped: pd.DataFrame
    skill: dict[str, float]
    wall_seconds: float
    profiles_per_second: float
    settings: dict[str, Any]
    assimilation: Any = None

    def __str__(self) -> str:
        sk = ", ".join(f"{k}={v:.3g}" for k, v in self.skill.items() if k != "n")
        return (f"TrainingReport({self.method}: {self.n_sites} sites ({len(self.dropped)} "
                f"dropped), {len(self.best_epoch)} member(s), best epochs {self.best_epoch}, "
                f"{self.wall_seconds:.1f} s, {self.profiles_per_second:,.0f} profiles/s; "
                f"validation skill: {sk or 'n/a'})")

    def plot(self, ax: Any = None) -> Any:
        """Loss curves (training and validation) per member; returns the axes."""
        import matplotlib.pyplot as plt

        if ax is None:
            _, ax = plt.subplots(figsize=(6, 4))
        for m, h in self.history.groupby("member"):
            ax.plot(h["epoch"], h["train_loss"], label=f"train (member {m})")
            if h["val_loss"].notna().any():
                ax.plot(h["epoch"], h["val_loss"], "--", label=f"validation (member {m})")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"loss ({self.settings.get('loss_label', 'dimensionless')})")
        ax.set_yscale("log")
        ax.set_title(f"{self.method} training")
        ax.legend(fontsize="small")
        return ax


# ---------------------------------------------------------------------------------------
# the loop
# ---------------------------------------------------------------------------------------
class _SiteTensors:
    """Observations, covariates and prepared forcing of a TrainingData as tensors."""

    def __init__(self, data: TrainingData, *, mapping: str, device: Any, net_dtype) -> None:
        t = data.batch.to_torch(device=device, fill_value=0.05)
        self.obs, self.mask = t["soc"], t["mask"]
        self.depth, self.top, self.bottom = t["depth"], t["top"], t["bottom"]
        self.x = torch.as_tensor(data.x, dtype=net_dtype, device=device)
        self.forcing = prepare_forcing(data.forcing, dtype=torch.float64, device=device)
        self.mapping = mapping

    def m2o(self, idx: torch.Tensor) -> ModelToObs:
        # padding gets a harmless valid layer (0-0.1 m), so no NaN enters a gradient; callers
        # mask it out with ``self.mask``
        mk = self.mask[idx]
        return ModelToObs(torch.where(mk, self.depth[idx], 0.05), method=self.mapping,
                          top=torch.where(mk, self.top[idx], 0.0),
                          bottom=torch.where(mk, self.bottom[idx], 0.1))

    def soc_at_obs(self, model: SoilCarbonModel, theta: torch.Tensor,
                   idx: torch.Tensor) -> torch.Tensor:
        out = model.steady_state(theta.to(torch.float64), self.forcing.subset(idx))
        return self.m2o(idx)(out["soc"])


def _state_copy(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


def _opt_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], list]:
    sd = opt.state_dict()
    tens = {f"opt.{i}.{k}": v for i, st in sd["state"].items() for k, v in st.items()}
    return tens, sd["param_groups"]


def _opt_restore(opt: torch.optim.Optimizer, tensors: Mapping[str, torch.Tensor],
                 groups: list) -> None:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, v in tensors.items():
        if key.startswith("opt."):
            _, i, k = key.split(".", 2)
            state.setdefault(int(i), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": groups})


def _fit_member(
    net: ParameterNet,
    *,
    train_idx: np.ndarray,
    val_idx: np.ndarray,
    step_loss: Callable[[torch.Tensor], torch.Tensor],
    val_loss: Callable[[torch.Tensor], float],
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    patience: int,
    min_delta: float,
    seed: int,
    progress: bool,
    desc: str,
    ckpt: _Checkpointer | None,
    member: int,
) -> tuple[list[dict], int, bool, float]:
    """Train one member in place; returns (history rows, best epoch, stopped early, seconds)."""
    from tqdm import tqdm

    # fused: one kernel per step for all weights (the per-tensor loop costs more than the
    # MLP forward at batch 128 on CPU)
    fused = next(net.parameters()).device.type in ("cpu", "cuda")
    opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=weight_decay, fused=fused)
    gen = torch.Generator().manual_seed(int(seed))
    tr = torch.as_tensor(train_idx, dtype=torch.long)
    va = torch.as_tensor(val_idx, dtype=torch.long)
    history: list[dict] = []
    best, best_epoch, wait, start, seconds = float("inf"), -1, 0, 0, 0.0
    best_state = _state_copy(net)
    with torch.random.fork_rng(devices=[]):  # dropout's RNG: seeded, global state restored
        torch.manual_seed(int(seed) + 1)
        if ckpt is not None and ckpt.resumable(member):
            st = ckpt.restore_member(net, opt, gen)
            history, best, best_epoch, wait, start, seconds, best_state = (
                st["history"], st["best"], st["best_epoch"], st["wait"], st["epoch"],
                st["seconds"], st["best_state"])
        stopped = False
        bar = tqdm(total=epochs, initial=start, disable=not progress, desc=desc, unit="epoch",
                   dynamic_ncols=True, leave=False)
        try:
            for epoch in range(start, epochs):
                if wait >= patience:
                    stopped = True
                    break
                t0 = time.perf_counter()
                net.train()
                perm = tr[torch.randperm(tr.numel(), generator=gen)]
                total, count = 0.0, 0
                for b in range(0, perm.numel(), batch_size):
                    idx = perm[b:b + batch_size]
                    opt.zero_grad(set_to_none=True)
                    loss = step_loss(idx)
                    if not torch.isfinite(loss):
                        raise FloatingPointError(
                            f"training loss became {float(loss)} at epoch {epoch}: lower lr "
                            "or check the inputs")
                    loss.backward()
                    opt.step()
                    total += loss.item() * idx.numel()
                    count += idx.numel()
                net.eval()
                v = val_loss(va) if va.numel() else float("nan")
                seconds += time.perf_counter() - t0
                monitor = v if va.numel() else total / count
                if monitor < best - min_delta * abs(best if np.isfinite(best) else 0.0):
                    best, best_epoch, wait = monitor, epoch, 0
                    best_state = _state_copy(net)
                else:
                    wait += 1
                history.append({"member": member, "epoch": epoch, "train_loss": total / count,
                                "val_loss": v, "seconds": seconds})
                bar.update(1)
                bar.set_postfix(train=f"{total / count:.4g}", val=f"{v:.4g}")
                if ckpt is not None and ckpt.due(epoch + 1, epochs):
                    ckpt.save_member(member, net, opt, gen, history=history, best=best,
                                     best_epoch=best_epoch, wait=wait, epoch=epoch + 1,
                                     seconds=seconds, best_state=best_state)
            else:
                stopped = wait >= patience
        finally:
            bar.close()
    net.load_state_dict(best_state)
    net.eval()
    return history, best_epoch, stopped, seconds


class _Checkpointer:
    """Resumable training state in one safetensors file (weights, Adam state, RNG, history)."""

    def __init__(self, path: Any, settings: Mapping[str, Any], every: int, resume: bool) -> None:
        from xproda.sites.assimilation.checkpoint import (
            checkpoint_exists,
            load_checkpoint,
            normalize_settings,
        )

        self.path, self.every = path, max(1, int(every))
        self.settings = normalize_settings(settings)
        self.done: dict[int, dict[str, torch.Tensor]] = {}
        self.done_meta: dict[int, dict] = {}
        self.tensors: dict[str, torch.Tensor] = {}
        self.meta: dict[str, Any] = {}
        if resume and checkpoint_exists(path):
            self.tensors, self.meta = load_checkpoint(path, format=FORMAT, version=VERSION)
            if self.meta.get("settings") != self.settings:
                diff = sorted(k for k in set(self.settings) | set(self.meta.get("settings", {}))
                              if self.settings.get(k) != self.meta.get("settings", {}).get(k))
                raise ValueError(f"checkpoint {str(path)!r} was written with other settings "
                                 f"({diff}); use resume=False to start over")
            for k_str, m in self.meta.get("done", {}).items():
                k = int(k_str)
                pre = f"done.{k}."
                self.done[k] = {n[len(pre):]: v for n, v in self.tensors.items()
                                if n.startswith(pre)}
                self.done_meta[k] = m

    def due(self, epoch: int, epochs: int) -> bool:
        return epoch % self.every == 0 or epoch == epochs

    def resumable(self, member: int) -> bool:
        return self.meta.get("member") == member and "epoch" in self.meta

    def restore_member(self, net, opt, gen) -> dict[str, Any]:
        t, m = self.tensors, self.meta
        net.load_state_dict({k[4:]: v for k, v in t.items() if k.startswith("net.")})
        _opt_restore(opt, t, m["param_groups"])
        gen.set_state(t["rng.gen"])
        torch.set_rng_state(t["rng.torch"])
        best_state = {k[5:]: v for k, v in t.items() if k.startswith("best.")}
        return {"history": m["history"], "best": m["best"], "best_epoch": m["best_epoch"],
                "wait": m["wait"], "epoch": m["epoch"], "seconds": m["seconds"],
                "best_state": best_state}

    def save_member(self, member, net, opt, gen, **state) -> None:
        from xproda.sites.assimilation.checkpoint import save_checkpoint

        tens, groups = _opt_tensors(opt)
        tensors = {**{f"net.{k}": v for k, v in net.state_dict().items()}, **tens,
                   **{f"best.{k}": v for k, v in state.pop("best_state").items()},
                   "rng.gen": gen.get_state(), "rng.torch": torch.get_rng_state()}
        for k, sd in self.done.items():
            tensors.update({f"done.{k}.{n}": v for n, v in sd.items()})
        meta = {"settings": self.settings, "member": member, "param_groups": groups,
                "done": {str(k): v for k, v in self.done_meta.items()}, **state}
        save_checkpoint(self.path, tensors, meta, format=FORMAT, version=VERSION)
        self.meta = {**meta}

    def finish_member(self, member: int, net, info: dict) -> None:
        self.done[member] = _state_copy(net)
        self.done_meta[member] = info


def _skill_on(model, st: _SiteTensors, theta: torch.Tensor, idx: np.ndarray) -> tuple:
    with torch.no_grad():
        i = torch.as_tensor(idx, dtype=torch.long)
        mod = st.soc_at_obs(model, theta, i)
    return mod.cpu().numpy(), st.obs[i].cpu().numpy(), st.mask[i].cpu().numpy()


def train_network(
    covariates: xr.Dataset | TrainingData,
    profiles: Any = None,
    *,
    forcing: xr.Dataset | None = None,
    model: str | SoilCarbonModel = "clm5",
    method: Literal["end_to_end", "two_step"] = "end_to_end",
    features: Sequence[str] | None = None,
    assimilation: xr.Dataset | None = None,
    da_method: str = "map",
    da_options: Mapping[str, Any] | None = None,
    min_da_r2: float | None = None,
    hidden: Sequence[int] = SPEC_HIDDEN,
    dropout: float | None = None,
    output: Literal["sigmoid", "linear"] = "sigmoid",
    net_dtype: str = "float32",
    epochs: int = 300,
    batch_size: int = 128,
    lr: float = 1e-3,
    weight_decay: float = 0.0,
    patience: int = 30,
    min_delta: float = 1e-4,
    validation: float = 0.1,
    split: Literal["random", "blocked"] = "random",
    block_size: float = 10.0,
    loss: Literal["log", "soc"] = "log",
    param_loss: Literal["mse", "cen_product"] = "mse",
    prior_weight: float = 0.0,
    prior: Any = 0.5,
    mapping: str = "pchip",
    n_members: int = 1,
    ensemble: Literal["repeats", "bootstrap"] = "repeats",
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
    checkpoint: str | None = None,
    checkpoint_every: int = 10,
    resume: bool = False,
) -> tuple[ParameterNet | ParameterNetEnsemble, TrainingReport]:
    """Train a parameter network on soil profiles (end to end, or PRODA's two steps).

    Parameters
    ----------
    covariates : Dataset or TrainingData
        Gridded covariates (and forcing, unless ``forcing`` is given), or data already made
        by :func:`prepare_training_data` (then ``profiles``/``forcing``/``features`` are
        ignored).
    profiles : DataFrame or ProfileBatch
        Profile table (:mod:`xproda.sites.observations` schema: ``profile_id``, ``lat``, ``lon``,
        ``top``, ``bottom`` (m), ``soc`` (g C m-3)).
    forcing : Dataset, optional
        Gridded model forcing (default: in ``covariates``).
    model : str or model, default "clm5"
    method : {"end_to_end", "two_step"}, default "end_to_end"
        See the module docstring.
    features : sequence of str, optional
        Covariates (default :func:`default_features`).
    assimilation : Dataset, optional
        Two-step only: a result of :func:`xproda.sites.assimilation.problem.assimilate` for these profiles
        (site ids matched); default: run ``assimilate(..., method=da_method)``.
    da_method : str, default "map"
        Two-step DA method when ``assimilation`` is not given (``"am"`` is PRODA's MCMC,
        slower; ``"map"`` the gradient-based MAP of the same cost).
    da_options : mapping, optional
        Extra keyword arguments of :func:`~xproda.sites.assimilation.problem.assimilate` (for
        ``"map"`` the default budget is 2 starts of at most 150 Adam steps, as benchmarked).
    min_da_r2 : float, optional
        Two-step: keep sites whose DA fit R^2 exceeds this (spec §5.3: 0.75 for clm5 (cen),
        0 for the microbial model; the default).
    hidden, dropout, output
        Network architecture (:class:`~xproda.learning.network.ParameterNet`; dropout defaults to the
        spec's 0.0 for clm5 and 0.2 for microbial).
    net_dtype : {"float32", "float64"}, default "float32"
        Network precision (the process model always runs in float64). float32 is ~2x faster
        on CPU and loses nothing measurable for an MLP.
    epochs : int, default 300
        Maximum epochs.
    batch_size : int, default 128
        Sites per step.
    lr, weight_decay : float
        Adam settings.
    patience : int, default 30
        Early stopping: epochs without improvement of the validation loss (relative
        ``min_delta``) before stopping; the best weights are restored.
    validation : float, default 0.1
        Share of sites held out for early stopping (0: none; train ``epochs`` epochs).
    split : {"random", "blocked"}, default "random"
        Validation split (:func:`xproda.learning.crossval.split_sites`); ``"blocked"`` holds out
        whole ``block_size``-degree blocks.
    loss : {"log", "soc"}, default "log"
        End-to-end loss on log SOC or relative SOC (:func:`soc_loss`).
    param_loss : {"mse", "cen_product"}, default "mse"
        Two-step loss on parameters (:func:`parameter_loss`).
    prior_weight : float, default 0
        Weight of ``mean((theta - prior)^2)`` added to the loss (regularisation toward the
        prior; ``prior`` is a scalar, ``[P]`` or a mapping name -> value, normalised).
    mapping : {"pchip", "pchip_mean", "layer_mean"}, default "pchip"
        Model-to-observation mapping (:class:`~xproda.models.interp.ModelToObs`).
    n_members : int, default 1
        Ensemble size; > 1 returns a :class:`~xproda.learning.network.ParameterNetEnsemble`.
    ensemble : {"repeats", "bootstrap"}
        Members differ by seed only (spec's best-guess ensemble) or are trained on bootstrap
        resamples of the training sites, validated on their out-of-bag sites.
    seed : int, default 0
        Seeds the split, initialisation, shuffling and dropout: CPU runs are bit-reproducible.
    device : str or torch.device, optional
        Default: the ``xproda.set_options`` device or CPU.
    progress : bool, default True
        tqdm progress bar per member.
    checkpoint : str, optional
        Path of a safetensors training checkpoint, written every ``checkpoint_every`` epochs;
        with ``resume=True`` a killed run continues from it and ends identical to an
        uninterrupted run.

    Returns
    -------
    net : ParameterNet or ParameterNetEnsemble
        Trained (best validation weights), in evaluation mode.
    report : TrainingReport
    """
    from xproda.options import current as _option

    t_start = time.perf_counter()
    mdl = model if isinstance(model, SoilCarbonModel) else get_model(model)
    if method not in ("end_to_end", "two_step"):
        raise ValueError(f"method must be 'end_to_end' or 'two_step', got {method!r}")
    if ensemble not in ("repeats", "bootstrap"):
        raise ValueError(f"ensemble must be 'repeats' or 'bootstrap', got {ensemble!r}")
    if int(n_members) < 1 or int(batch_size) < 1 or int(epochs) < 1:
        raise ValueError("n_members, batch_size and epochs must be >= 1")
    if not 0.0 <= validation < 1.0:
        raise ValueError(f"validation must be in [0, 1), got {validation}")
    data = covariates if isinstance(covariates, TrainingData) else prepare_training_data(
        covariates, profiles, forcing=forcing, model=mdl, features=features)
    dev = torch.device(device if device is not None else (_option("device") or "cpu"))
    ndt = {"float32": torch.float32, "float64": torch.float64}[str(net_dtype)]
    names = list(mdl.parameters.names)
    P = len(names)
    dropped = data.dropped.copy()
    da_result = None

    if method == "two_step":
        data, target, da_result, dropped = _two_step_targets(
            data, mdl, assimilation=assimilation, da_method=da_method,
            da_options=da_options, min_da_r2=min_da_r2, seed=seed, progress=progress,
            mapping=mapping, dropped=dropped)
        target_t = torch.as_tensor(target, dtype=ndt, device=dev)

    st = _SiteTensors(data, mapping=mapping, device=dev, net_dtype=ndt)
    S = len(data)
    pri = _prior_vector(prior, names)
    prior_t = torch.as_tensor(pri, dtype=ndt, device=dev)
    drop = (0.2 if mdl.name == "microbial" else 0.0) if dropout is None else float(dropout)

    def make_net(k: int) -> ParameterNet:
        return ParameterNet(data.features, names, model=mdl.name, hidden=hidden, dropout=drop,
                            output=output, x_min=data.x_min, x_max=data.x_max,
                            seed=seed + 7919 * k, dtype=ndt).to(dev)

    settings = {
        "method": method, "model": mdl.name, "features": list(data.features), "n_sites": S,
        "hidden": list(hidden), "dropout": drop, "output": output, "net_dtype": str(net_dtype),
        "epochs": int(epochs), "batch_size": int(batch_size), "lr": lr,
        "weight_decay": weight_decay, "patience": int(patience), "min_delta": min_delta,
        "validation": validation, "split": split, "block_size": block_size, "loss": loss,
        "param_loss": param_loss, "prior_weight": prior_weight, "mapping": mapping,
        "n_members": int(n_members), "ensemble": ensemble, "seed": int(seed),
        "loss_label": ("mean squared log error" if method == "end_to_end" and loss == "log"
                       else "relative squared error" if method == "end_to_end"
                       else "MSE of normalised parameters"),
    }
    ckpt = _Checkpointer(checkpoint, settings, checkpoint_every, resume) if checkpoint else None

    def data_loss(theta: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
        if method == "end_to_end":  # through the process model, against observed SOC
            mod = st.soc_at_obs(mdl, theta, idx)
            return soc_loss(mod, st.obs[idx], st.mask[idx], kind=loss)
        return parameter_loss(theta, target_t[idx], kind=param_loss)  # against DA targets

    members, rows, best_epochs, stopped_all, n_tr, n_va, secs = [], [], [], [], [], [], []
    val_pred: list[tuple] = []
    for k in range(int(n_members)):
        rng = np.random.default_rng([int(seed), k])
        if validation > 0:
            tr_idx, va_idx = crossval.split_sites(
                data.batch.lat, data.batch.lon, fraction=validation, method=split,
                block_size=block_size, seed=int(seed) if ensemble == "repeats" else int(
                    rng.integers(2**31)))
        else:
            tr_idx, va_idx = np.arange(S), np.array([], dtype=np.int64)
        if ensemble == "bootstrap":
            pool = np.concatenate([tr_idx, va_idx])
            boot = np.sort(rng.choice(pool, size=int(round(0.9 * pool.size)), replace=True))
            oob = np.setdiff1d(pool, boot)
            tr_idx, va_idx = boot, oob
        net = make_net(k)

        def step_loss(idx, net=net):
            theta = net(st.x[idx])
            val = data_loss(theta, idx)
            if prior_weight:
                val = val + prior_weight * ((theta - prior_t) ** 2).mean()
            return val

        def v_loss(idx, net=net):
            with torch.no_grad():
                return float(step_loss(idx, net))

        if ckpt is not None and k in ckpt.done:
            net.load_state_dict(ckpt.done[k])
            info = ckpt.done_meta[k]
            hist, be, stp, sec = info["history"], info["best_epoch"], info["stopped"], \
                info["seconds"]
        else:
            hist, be, stp, sec = _fit_member(
                net, train_idx=tr_idx, val_idx=va_idx, step_loss=step_loss, val_loss=v_loss,
                epochs=int(epochs), batch_size=int(batch_size), lr=lr,
                weight_decay=weight_decay, patience=int(patience), min_delta=min_delta,
                seed=int(seed) + 104729 * k, progress=progress,
                desc=f"{method} member {k + 1}/{n_members}" if n_members > 1 else method,
                ckpt=ckpt, member=k)
            if ckpt is not None:
                ckpt.finish_member(k, net, {"history": hist, "best_epoch": be, "stopped": stp,
                                            "seconds": sec})
        members.append(net)
        rows += hist
        best_epochs.append(int(be))
        stopped_all.append(bool(stp))
        n_tr.append(int(tr_idx.size))
        n_va.append(int(va_idx.size))
        epochs_run = len(hist)
        secs.append(tr_idx.size * epochs_run / sec if sec > 0 else float("nan"))
        if va_idx.size:
            with torch.no_grad():
                theta = net(st.x[torch.as_tensor(va_idx)])
            val_pred.append(_skill_on(mdl, st, theta, va_idx))

    skill: dict[str, float] = {}
    if val_pred:
        skill = crossval.skill_scores(np.concatenate([m.ravel() for m, _, _ in val_pred]),
                                      np.concatenate([o.ravel() for _, o, _ in val_pred]),
                                      mask=np.concatenate([w.ravel() for _, _, w in val_pred]))
    out_net: ParameterNet | ParameterNetEnsemble = (
        members[0] if n_members == 1 else ParameterNetEnsemble(members, kind=ensemble))
    report = TrainingReport(
        method=method, history=pd.DataFrame(rows, columns=["member", "epoch", "train_loss",
                                                          "val_loss", "seconds"]),
        best_epoch=best_epochs, stopped_early=stopped_all, n_sites=S, n_train=n_tr,
        n_val=n_va, dropped=dropped, skill=skill,
        wall_seconds=time.perf_counter() - t_start,
        profiles_per_second=float(np.nanmean(secs)), settings=settings,
        assimilation=da_result)
    return out_net.eval(), report


def _prior_vector(prior: Any, names: Sequence[str]) -> np.ndarray:
    if isinstance(prior, Mapping):
        unknown = [k for k in prior if k not in names]
        if unknown:
            raise KeyError(f"prior names {unknown} are not parameters: {list(names)}")
        v = np.full(len(names), 0.5)
        for k, val in prior.items():
            v[list(names).index(k)] = float(val)
        return v
    v = np.broadcast_to(np.asarray(prior, dtype=float), (len(names),)).copy()
    if not ((v > 0) & (v < 1)).all():
        raise ValueError("prior must be normalised parameters in (0, 1)")
    return v


def _two_step_targets(data: TrainingData, mdl, *, assimilation, da_method, da_options,
                      min_da_r2, seed, progress, mapping, dropped):
    """DA targets per site (running assimilation if needed) and the §5.3 filter."""
    from xproda.sites.assimilation.problem import assimilate

    names = list(mdl.parameters.names)
    if assimilation is None:
        opts = dict(da_options or {})
        if da_method == "map":  # the budget measured in docs/performance.md (fits R2 ~0.99)
            opts.setdefault("n_starts", 2)
            opts["sampler_options"] = {"steps": 150, **dict(opts.get("sampler_options") or {})}
        assimilation = assimilate(data.batch, data.forcing, model=mdl, method=da_method,
                                  seed=seed, progress=progress, mapping=mapping, **opts)
    est = None
    for key in ("mean", "map"):
        if key in assimilation and "parameter" in assimilation[key].dims:
            est = assimilation[key]
            break
    if est is None:
        raise ValueError("assimilation result has neither 'mean' nor 'map' with a 'parameter' "
                         "dim")
    if "site" not in est.dims:
        raise ValueError("two-step training needs per-site DA results (dim 'site'); a batch-"
                         "mode result has one parameter set")
    free = [str(p) for p in est["parameter"].values]
    if free != names:
        raise ValueError(f"DA estimated parameters {free}; two-step training needs all of "
                         f"{names}")
    ids = np.asarray(data.batch.site_ids)
    da_ids = np.asarray(assimilation["site"].values)
    pos = pd.Index(da_ids).get_indexer(ids)
    if (pos < 0).any():
        raise KeyError(f"assimilation result lacks {int((pos < 0).sum())} site(s), e.g. "
                       f"{ids[pos < 0][:5].tolist()}")
    target = est.transpose("site", "parameter").values[pos]
    r2 = assimilation["r2"].values[pos] if "r2" in assimilation else np.full(len(ids), np.inf)
    thr = (0.0 if mdl.name == "microbial" else 0.75) if min_da_r2 is None else min_da_r2
    ok_t = np.isfinite(target).all(-1)
    ok_r2 = r2 > thr
    reasons = np.where(~ok_t, "two-step: NaN DA estimate",
                       np.where(~ok_r2, f"two-step: DA fit R2 <= {thr}", ""))
    if "rhat" in assimilation and assimilation["rhat"].ndim >= 1:
        rh = assimilation["rhat"].values[pos]
        rh = rh.mean(-1) if rh.ndim == 2 else rh
        bad = (reasons == "") & ~(rh < 1.05)
        reasons = np.where(bad, "two-step: mean R-hat >= 1.05", reasons)
    keep = reasons == ""
    if not keep.any():
        raise ValueError(f"no site passes the two-step DA filter (R2 > {thr}); lower min_da_r2")
    dropped = pd.concat([dropped, pd.DataFrame({"site": ids[~keep],
                                                "reason": reasons[~keep].astype(str)})],
                        ignore_index=True)
    idx = np.flatnonzero(keep)
    return data.subset(idx), target[idx], assimilation, dropped


# ---------------------------------------------------------------------------------------
# cross-validation
# ---------------------------------------------------------------------------------------
def soc_at_observations(model: str | SoilCarbonModel, data: TrainingData, theta: Any, *,
                        mapping: str = "pchip") -> np.ndarray:
    """Modelled SOC (g C m-3) at the observed layers ``[S, D]`` of a :class:`TrainingData`.

    Parameters
    ----------
    model : str or model
    data : TrainingData
    theta : array_like of shape [S, P] or None
        Normalised parameters per site; ``None`` runs the CLM5 default parameters
        (``default_steady_state`` with the Jackson input profile; for models without a
        default mode, the defaults of the parameter space, 0.5 where none exists).
    mapping : {"pchip", "pchip_mean", "layer_mean"}, keyword-only

    Returns
    -------
    numpy.ndarray
        ``[S, D]``; padding positions are NaN.
    """
    mdl = model if isinstance(model, SoilCarbonModel) else get_model(model)
    st = _SiteTensors(data, mapping=mapping, device="cpu", net_dtype=torch.float64)
    idx = torch.arange(len(data))
    with torch.no_grad():
        if theta is None and hasattr(mdl, "default_steady_state"):
            out = mdl.default_steady_state(st.forcing, input_profile="beta")
            soc = st.m2o(idx)(out["soc"]).numpy()
        else:
            if theta is None:
                d = np.nan_to_num(mdl.parameters.default_normalized(), nan=0.5)
                theta = np.broadcast_to(np.clip(d, 1e-6, 1 - 1e-6), (len(data), d.size))
            th = torch.as_tensor(np.array(theta, dtype=np.float64))  # owned, writable
            soc = st.soc_at_obs(mdl, th, idx).numpy()
    return np.where(st.mask.numpy(), soc, np.nan)


def cross_validate(
    covariates: xr.Dataset | TrainingData,
    profiles: Any = None,
    *,
    forcing: xr.Dataset | None = None,
    model: str | SoilCarbonModel = "clm5",
    methods: Sequence[str] = CV_METHODS,
    features: Sequence[str] | None = None,
    n_folds: int = 5,
    split: Literal["random", "blocked"] = "blocked",
    block_size: float = 10.0,
    seed: int = 0,
    train_options: Mapping[str, Any] | None = None,
    batch_options: Mapping[str, Any] | None = None,
    baseline_options: Mapping[str, Mapping[str, Any]] | None = None,
    mapping: str = "pchip",
    progress: bool = True,
) -> tuple[pd.DataFrame, xr.Dataset]:
    """Held-out SOC skill of default, batch-mode, two-step and end-to-end parameters.

    Every method sees the same folds (:func:`xproda.learning.crossval.kfold_sites`): for each fold,
    the methods are fitted on the other folds' profiles only and predict SOC at the fold's
    observed layers.

    Parameters
    ----------
    covariates, profiles, forcing, model, features
        As for :func:`train_network`.
    methods : sequence of str
        Any of :data:`CV_METHODS`: ``"default"`` (CLM5 default parameters, no fitting),
        ``"batch"`` (one parameter set for all training sites, Tao et al. 2020),
        ``"two_step"``, ``"end_to_end"``; and of :data:`BASELINE_METHODS`: ``"gbm"``
        (gradient boosting) and ``"random_forest"``, log SOC predicted from the same
        covariates plus the observation depth, fitted on the training fold only
        (:func:`xproda.learning.baselines.fit_baseline`; needs scikit-learn).
    n_folds : int, default 5
    split : {"random", "blocked"}, default "blocked"
    block_size : float, default 10
        Degrees (blocked folds).
    seed : int
    train_options : mapping, optional
        Keyword arguments of :func:`train_network` (both network methods).
    batch_options : mapping, optional
        ``sampler_options`` of the batch-mode fit.
    baseline_options : mapping, optional
        Estimator options per baseline, e.g. ``{"gbm": {"max_iter": 500}}``; a ``"threads"``
        entry is the thread limit of :func:`~xproda.learning.baselines.fit_baseline`.
    mapping : str, default "pchip"
    progress : bool

    Returns
    -------
    table : pandas.DataFrame
        One row per method: pooled held-out ``r2`` (= ``nse``), ``rmse`` and ``bias``
        (g C m-3), ``corr``, ``r2_log``, ``n`` (observations) and the wall time (s).
    predictions : xarray.Dataset
        ``soc_obs`` and ``soc_<method>`` ``(site, obs)``, the ``fold`` of each site, and
        ``fitted_sites`` ``(cv_method, cv_fold)``: the training sites each fit used (all of the
        training fold, except two-step after its DA filter and 0 for the defaults).
    """
    from xproda.sites.assimilation.problem import assimilate
    from xproda.learning.baselines import fit_baseline

    unknown = [m for m in methods if m not in CV_METHODS + BASELINE_METHODS]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; choose from "
                         f"{CV_METHODS + BASELINE_METHODS}")
    bad_opts = [k for k in (baseline_options or {}) if k not in BASELINE_METHODS]
    if bad_opts:
        raise ValueError(f"baseline_options: expected keys among {BASELINE_METHODS}, found "
                         f"{bad_opts}")
    mdl = model if isinstance(model, SoilCarbonModel) else get_model(model)
    data = covariates if isinstance(covariates, TrainingData) else prepare_training_data(
        covariates, profiles, forcing=forcing, model=mdl, features=features)
    folds = crossval.kfold_sites(data.batch.lat, data.batch.lon, n_folds=n_folds,
                                 method=split, block_size=block_size, seed=seed)
    S, D = data.batch.soc.shape
    pred = {m: np.full((S, D), np.nan) for m in methods}
    wall = dict.fromkeys(methods, 0.0)
    n_fit = np.zeros((len(methods), len(folds)), dtype=np.int64)
    fold_of = np.empty(S, dtype=np.int64)
    opts = dict(train_options or {})
    opts.setdefault("progress", False)
    for k, test in enumerate(folds):
        fold_of[test] = k
        train = np.setdiff1d(np.arange(S), test)
        dtr, dte = data.subset(train), data.subset(test)
        Dt = dte.batch.soc.shape[1]
        for i, m in enumerate(methods):
            t0 = time.perf_counter()
            n_fit[i, k] = len(train)
            if m == "default":
                n_fit[i, k] = 0
                soc = soc_at_observations(mdl, dte, None, mapping=mapping)
            elif m == "batch":
                res = assimilate(dtr.batch, dtr.forcing, model=mdl, method="batch", seed=seed,
                                 progress=False, mapping=mapping,
                                 sampler_options=dict(batch_options or {}))
                th = res["map"].values.reshape(-1)
                soc = soc_at_observations(mdl, dte, np.broadcast_to(th, (len(test), th.size)),
                                          mapping=mapping)
            elif m in BASELINE_METHODS:
                o = dict((baseline_options or {}).get(m) or {})
                fitted = fit_baseline(m, dtr, seed=seed + k, threads=o.pop("threads", None),
                                      options=o)
                soc = fitted.predict(dte)
            else:
                net, rep = train_network(dtr, model=mdl, method=m, seed=seed + k,
                                         mapping=mapping, **opts)
                n_fit[i, k] = rep.n_sites
                soc = soc_at_observations(mdl, dte, net.predict(dte.x), mapping=mapping)
            wall[m] += time.perf_counter() - t0
            pred[m][test, :Dt] = soc
        if progress:
            print(f"cross_validate: fold {k + 1}/{len(folds)} done", flush=True)
    obs = np.where(data.batch.mask, data.batch.soc, np.nan)
    rows = []
    for m in methods:
        sc = crossval.skill_scores(pred[m], obs, mask=data.batch.mask)
        rows.append({"method": m, **sc, "seconds": wall[m]})
    table = pd.DataFrame(rows).set_index("method")
    ds = xr.Dataset({"soc_obs": (("site", "obs"), obs, {"units": "g C m-3"}),
                     "fold": ("site", fold_of)},
                    coords={"site": np.asarray(data.batch.site_ids),
                            "lat": ("site", data.batch.lat), "lon": ("site", data.batch.lon)})
    for m in methods:
        ds[f"soc_{m}"] = (("site", "obs"), pred[m], {"units": "g C m-3",
                                                    "long_name": f"held-out SOC ({m})"})
    ds["fitted_sites"] = (("cv_method", "cv_fold"), n_fit,
                          {"long_name": "training sites used by the fit"})
    ds = ds.assign_coords(cv_method=list(methods), cv_fold=np.arange(len(folds)))
    ds.attrs.update({"n_folds": int(n_folds), "split": split, "block_size": float(block_size)})
    return table, ds
