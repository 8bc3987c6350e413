"""Training parameter networks: PRODA's two-step method and end-to-end through the model.

Two ways to learn a :class:`~xproda.learning.network.ParameterNet` from soil profiles:

``method="two_step"`` (PRODA, spec §7)
    First retrieve parameters site by site by data assimilation
    (:func:`xproda.sites.assimilation.problem.assimilate`, or a result you pass in), keep the
    sites whose retrieval fits (spec §5.3: DA R^2 above a threshold), then fit the network to
    the retrieved normalised parameters (a loss on parameters only).

``method="end_to_end"``
    The network's output goes straight into the differentiable process model; the loss
    compares modelled and observed SOC at the observed depths, and its gradient flows back
    through the steady-state solve into the network's weights (differentiable parameter
    learning, Tsai et al. 2021, Nat. Commun. 12:5988). No per-site MCMC is needed, and sites
    whose parameters are poorly identified individually still inform the mapping.

Both share the training loop: Adam, mini-batches of sites, a validation split (random or
spatially blocked, :mod:`xproda.learning.crossval`), early stopping on the validation loss
with the best weights restored, a seed that makes CPU runs bit-reproducible, a progress bar,
optional checkpoints (safetensors) that a killed run resumes from without changing the result,
and ensembles (repeats with different seeds or bootstrap resamples) returned as one
:class:`~xproda.learning.network.ParameterNetEnsemble`.

The pieces around the loop have their own modules: the data (:mod:`xproda.learning.data`), the
losses (:mod:`xproda.learning.losses`), the model at the observed layers
(:mod:`xproda.learning.forward`), the two-step targets (:mod:`xproda.learning.two_step`) and
cross-validation (:mod:`xproda.learning.validation`).
"""


from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Callable, Literal

import numpy as np
import pandas as pd
import torch
import xarray as xr

from xproda.learning import crossval
from xproda.models import get_model
from xproda.models.base import SoilCarbonModel
from xproda.models.parallel import torch_threads_scope
from xproda.learning.data import TrainingData, prepare_training_data
from xproda.learning.forward import SiteTensors
from xproda.learning.losses import parameter_loss, soc_loss
from xproda.learning.network import ParameterNet, ParameterNetEnsemble, SPEC_HIDDEN
from xproda.learning.two_step import two_step_targets

__all__ = ["train_network", "TrainingReport", "FORMAT", "VERSION"]

#: Checkpoint format of training runs.
FORMAT = "xproda-training-checkpoint"
VERSION = 1


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

    __repr__ = __str__  # the dataclass repr printed the whole history DataFrame

    def _facts(self) -> list[tuple[str, Any]]:
        sk = ", ".join(f"{k} {v:.3g}" for k, v in self.skill.items() if k != "n")
        epochs = self.history.groupby("member")["epoch"].max().add(1).tolist() \
            if len(self.history) and "member" in self.history else []
        return [("method", self.method),
                ("sites", f"{self.n_sites} used, {len(self.dropped)} dropped"),
                ("members", len(self.best_epoch)),
                ("training / validation sites", f"{self.n_train} / {self.n_val}"),
                ("epochs run / best", f"{epochs} / {self.best_epoch}"),
                ("stopped early", self.stopped_early),
                ("validation skill", sk or "n/a"),
                ("time", f"{self.wall_seconds:.1f} s, {self.profiles_per_second:,.0f} "
                         "profiles/s")]

    def _repr_html_(self) -> str:
        from xproda.reprs import html_report

        return html_report("TrainingReport", self._facts(),
                           {"dropped sites": self.dropped, "history": self.history})

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
    from xproda.options import progress_bar

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
        bar = progress_bar(progress, total=epochs, initial=start, desc=desc, unit="epoch",
                           leave=False)
        try:
            for epoch in range(start, epochs):
                if wait >= patience:
                    stopped = True
                    break
                t0 = time.perf_counter()
                net.train()
                perm = tr[torch.randperm(tr.numel(), generator=gen)]
                total, count = 0.0, 0
                # one torch thread for the epoch while other work fills the machine (OpenMP
                # barriers spin otherwise: 6 % of the quiet rate instead of 29 %); decided
                # per epoch, as the load changes; the same results either way
                with torch_threads_scope():
                    for b in range(0, perm.numel(), batch_size):
                        idx = perm[b:b + batch_size]
                        opt.zero_grad(set_to_none=True)
                        loss = step_loss(idx)
                        if not torch.isfinite(loss):
                            raise FloatingPointError(
                                f"training loss became {float(loss)} at epoch {epoch}: lower "
                                "lr or check the inputs")
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


def _skill_on(model, st: SiteTensors, theta: torch.Tensor, idx: np.ndarray) -> tuple:
    with torch.no_grad():
        i = torch.as_tensor(idx, dtype=torch.long)
        mod = st.soc_at_obs(model, theta, i)
    return mod.cpu().numpy(), st.obs[i].cpu().numpy(), st.mask[i].cpu().numpy()


@torch_threads_scope()  # the whole call too: evaluation and two-step DA outside the epochs
def train_network(
    covariates: xr.Dataset | TrainingData,
    profiles: Any = None,
    *,
    forcing: xr.Dataset | None = None,
    model: str | SoilCarbonModel = "clm5",
    method: Literal["end_to_end", "two_step"] = "end_to_end",
    features: Sequence[str] | None = None,
    site_covariates: pd.DataFrame | None = None,
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
    progress: bool | None = None,
    checkpoint: str | None = None,
    checkpoint_every: int = 10,
    resume: bool = False,
) -> tuple[ParameterNet | ParameterNetEnsemble, TrainingReport]:
    """Train a parameter network on soil profiles (end to end, or PRODA's two steps).

    Parameters
    ----------
    covariates : Dataset or TrainingData
        Gridded covariates (and forcing, unless ``forcing`` is given), or data already made
        by :func:`~xproda.learning.data.prepare_training_data` (then ``profiles``,
        ``forcing`` and ``features`` are ignored).
    profiles : DataFrame or ProfileBatch
        Profile table (:mod:`xproda.sites.observations` schema: ``profile_id``, ``lat``, ``lon``,
        ``top``, ``bottom`` (m), ``soc`` (g C m-3)).
    forcing : Dataset, optional
        Gridded model forcing (default: in ``covariates``).
    model : str or model, default "clm5"
    method : {"end_to_end", "two_step"}, default "end_to_end"
        See the module docstring.
    features : sequence of str, optional
        Gridded covariates (default :func:`~xproda.learning.data.default_features`; ``[]``
        with ``site_covariates`` for those only).
    site_covariates : DataFrame, optional
        Covariates measured at the sites, indexed by profile id (e.g.
        :func:`xproda.sites.observations.site_properties`); see
        :func:`~xproda.learning.data.prepare_training_data`. The network records them
        (``net.site_features``, saved with it) and refuses a grid that lacks them.
    assimilation : Dataset, optional
        Two-step only: a result of :func:`xproda.sites.assimilation.problem.assimilate` for
        these profiles (site ids matched); default: run ``assimilate(..., method=da_method)``.
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
        Network architecture (:class:`~xproda.learning.network.ParameterNet`; dropout defaults
        to the spec's 0.0 for clm5 and 0.2 for microbial).
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
        End-to-end loss on log SOC or relative SOC (:func:`~xproda.learning.losses.soc_loss`).
    param_loss : {"mse", "cen_product"}, default "mse"
        Two-step loss on parameters (:func:`~xproda.learning.losses.parameter_loss`).
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
    progress : bool or None, default None
        A progress bar per member; None: the option ``progress``
        (:func:`xproda.set_options`).
    checkpoint : str, optional
        Path of a safetensors training checkpoint, written atomically every
        ``checkpoint_every`` epochs (file mode from the umask); with ``resume=True`` a killed
        run continues from it and ends identical to an uninterrupted run. A checkpoint that
        is damaged, foreign, edited or has no content hash is refused with
        :class:`~xproda.errors.CheckpointError` naming it
        (:mod:`xproda.sites.assimilation.checkpoint`); ``resume=False`` starts over.

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
        covariates, profiles, forcing=forcing, model=mdl, features=features,
        site_covariates=site_covariates)
    dev = torch.device(device if device is not None else (_option("device") or "cpu"))
    ndt = {"float32": torch.float32, "float64": torch.float64}[str(net_dtype)]
    names = list(mdl.parameters.names)
    dropped = data.dropped.copy()
    da_result = None

    if method == "two_step":
        data, target, da_result, dropped = two_step_targets(
            data, mdl, assimilation=assimilation, da_method=da_method,
            da_options=da_options, min_da_r2=min_da_r2, seed=seed, progress=progress,
            mapping=mapping, dropped=dropped)
        target_t = torch.as_tensor(target, dtype=ndt, device=dev)

    st = SiteTensors(data, mapping=mapping, device=dev, net_dtype=ndt)
    S = len(data)
    pri = _prior_vector(prior, names)
    prior_t = torch.as_tensor(pri, dtype=ndt, device=dev)
    drop = (0.2 if mdl.name == "microbial" else 0.0) if dropout is None else float(dropout)

    def make_net(k: int) -> ParameterNet:
        return ParameterNet(data.features, names, model=mdl.name, hidden=hidden, dropout=drop,
                            output=output, x_min=data.x_min, x_max=data.x_max,
                            feature_units=data.feature_units or None,
                            site_features=data.site_features,
                            seed=seed + 7919 * k, dtype=ndt).to(dev)

    settings = {
        "method": method, "model": mdl.name, "features": list(data.features), "n_sites": S,
        **({"site_features": list(data.site_features)} if data.site_features else {}),
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
