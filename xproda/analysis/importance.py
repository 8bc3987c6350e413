"""Covariate importance on held-out profiles: permutation and the spec's group replacement
(spec §8.6), measured as the drop of SOC skill through a network and the process model."""

from __future__ import annotations

from typing import Any, Callable, Mapping, Sequence

import numpy as np
import xarray as xr

from xproda import conventions
from xproda.learning.crossval import skill_scores
from xproda.models.base import SoilCarbonModel
from xproda.learning.forward import soc_at_observations
from xproda.xr import engine

__all__ = ["covariate_groups", "soc_at_observations", "permutation_importance"]

_HIGHER_IS_BETTER = {"r2": True, "nse": True, "corr": True, "r2_log": True, "rmse": False}


def covariate_groups(covariates: xr.Dataset, features: Sequence[str], *,
                     attr: str = "covariate_group") -> dict[str, list[str]]:
    """``{group: features}`` from the ``covariate_group`` attrs of the covariates.

    Features without the attribute form a group of their own.
    """
    from xproda.xr.api import require_features

    require_features(covariates, features)
    out: dict[str, list[str]] = {}
    for f in features:
        out.setdefault(str(covariates[f].attrs.get(attr, f)), []).append(str(f))
    return out


def _predict(net: Any, x: np.ndarray) -> np.ndarray:
    from xproda.xr.api import apply_net

    return apply_net(net, np.ascontiguousarray(x, dtype=np.float64))


def permutation_importance(
    net: Callable | Any,
    data: Any,
    *,
    groups: Mapping[str, Sequence[str]] | str | None = None,
    covariates: xr.Dataset | None = None,
    method: str = "permute",
    n_repeats: int = 10,
    metric: str = "r2",
    model: str | SoilCarbonModel = "clm5",
    mapping: str = "pchip",
    seed: int = 0,
) -> xr.Dataset:
    """Drop of held-out SOC skill when a covariate (group) is scrambled.

    Parameters
    ----------
    net : ParameterNet or callable
        Maps raw covariates ``[S, F]`` (in ``data.features`` order) to normalised
        parameters ``[S, P]``.
    data : TrainingData
        Held-out profiles with covariates and forcing (:func:`xproda.learning.training.
        prepare_training_data`, e.g. ``.subset(test_idx)`` of a fold).
    groups : mapping, "covariate_group" or None, keyword-only
        ``{label: [features]}``; ``"covariate_group"`` groups the features by that attr of
        ``covariates`` (the synthetic world's groups: climate, geography, vegetation, soil
        texture, soil chemistry); None: every feature alone.
    covariates : Dataset, keyword-only, optional
        Source of the attrs for ``groups="covariate_group"``.
    method : {"permute", "constant"}, keyword-only, default "permute"
        ``"permute"``: a true permutation test -- the group's columns are permuted jointly
        across sites (within-group correlations kept).  ``"constant"``: spec §8.6's
        replacement -- one ``u ~ U(0, 1)`` per repeat, every covariate of the group set to
        ``x_min + u (x_max - x_min)`` (its scaled value ``u``) at every site.
    n_repeats : int, keyword-only, default 10
    metric : {"r2", "nse", "r2_log", "corr", "rmse"}, keyword-only, default "r2"
        Skill of :func:`xproda.learning.crossval.skill_scores` (``rmse`` in g C m-3).
    model : str or model, keyword-only, default "clm5"
    mapping : str, keyword-only, default "pchip"
        Model-to-observation mapping (:class:`~xproda.models.interp.ModelToObs`).
    seed : int, keyword-only, default 0

    Returns
    -------
    Dataset
        ``score`` ``(group, repeat)``: skill with the group scrambled; ``importance``
        ``(group, repeat)``: loss of skill (baseline minus score; score minus baseline for
        ``rmse``), positive when the group matters; ``importance_mean`` and
        ``importance_std`` ``(group)`` over repeats; ``baseline`` (the unscrambled skill).
        Attributes: ``metric``, ``method``, ``n_sites``.
    """
    if metric not in _HIGHER_IS_BETTER:
        raise ValueError(f"metric: expected one of {sorted(_HIGHER_IS_BETTER)}, found {metric!r}")
    if method not in ("permute", "constant"):
        raise ValueError(f"method: expected 'permute' or 'constant', found {method!r}")
    if int(n_repeats) < 1:
        raise ValueError(f"n_repeats: expected >= 1, found {n_repeats}")
    m = engine.resolve_model(model)
    feats = list(data.features)
    if groups is None:
        grp = {f: [f] for f in feats}
    elif isinstance(groups, str):
        if groups != "covariate_group" or covariates is None:
            raise ValueError("groups: a str must be 'covariate_group' together with "
                             f"covariates=<Dataset>; found groups={groups!r}")
        grp = covariate_groups(covariates, feats)
    else:
        grp = {str(k): [str(f) for f in v] for k, v in groups.items()}
    for k, v in grp.items():
        bad = [f for f in v if f not in feats]
        if bad or not v:
            raise KeyError(f"groups[{k!r}]: expected features of the data {feats}, found "
                           f"{v}")
    b = data.batch
    obs = np.where(b.mask, b.soc, np.nan)
    x = np.asarray(data.x, dtype=np.float64)
    S = x.shape[0]

    def score(xx):
        mod = soc_at_observations(m, data, _predict(net, xx), mapping=mapping)
        return skill_scores(mod, obs, mask=b.mask)[metric]

    base = score(x)
    rng = np.random.default_rng(seed)
    sc = np.full((len(grp), int(n_repeats)), np.nan)
    for gi, cols in enumerate(grp.values()):
        idx = [feats.index(f) for f in cols]
        for r in range(int(n_repeats)):
            x2 = x.copy()
            if method == "permute":
                x2[:, idx] = x[rng.permutation(S)][:, idx]
            else:
                u = rng.uniform()
                x2[:, idx] = data.x_min[idx] + u * (data.x_max[idx] - data.x_min[idx])
            sc[gi, r] = score(x2)
    imp = (base - sc) if _HIGHER_IS_BETTER[metric] else (sc - base)
    coords = {"group": list(grp), "repeat": np.arange(int(n_repeats))}
    out = xr.Dataset({
        "score": (("group", "repeat"), sc),
        "importance": (("group", "repeat"), imp),
        "baseline": ((), base),
    }, coords=coords)
    out["importance_mean"] = out["importance"].mean("repeat")
    out["importance_std"] = out["importance"].std("repeat", ddof=1 if n_repeats > 1 else 0)
    metric_units = conventions.attrs(metric, section="skill")["units"]
    out = conventions.annotate(out, "importance",
                               fields={"metric": metric, "metric_units": metric_units})
    out["group"].attrs["members"] = "; ".join(f"{k}: {' '.join(v)}" for k, v in grp.items())
    out.attrs = {"metric": metric, "method": method, "n_sites": int(S)}
    return out
