"""Parameter spaces: names, prior ranges, defaults, units, groups and transforms.

Parameters travel through xproda in *normalised* form ``theta`` in (0, 1), shape ``[n, P]``,
ordered as :attr:`ParameterSpace.names`.  Physical values come only from
:meth:`ParameterSpace.to_physical` (linear ``min + theta (max - min)`` or, where the spec says so,
log10-linear).  This mirrors the reference code, where every sampler, network target and
perturbation lives in normalised space (spec §13).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable, Literal, Sequence

import numpy as np

__all__ = ["Parameter", "ParameterSpace", "CLM5_PARAMETERS", "MICROBIAL_PARAMETERS"]

Transform = Literal["linear", "log10"]


@dataclass(frozen=True)
class Parameter:
    """One model parameter.

    Attributes
    ----------
    name : str
        Name as in the reference ``para_name`` list.
    minimum, maximum : float
        Prior range in physical units.
    units : str
        UDUNITS-style units of the physical value ("1" for dimensionless).
    group : str
        Process group (A, K, Xi, V, I, E) used by the post-DA analyses.
    description : str
        Meaning of the parameter.
    transform : {"linear", "log10"}
        Map between ``theta`` in (0, 1) and the physical value.
    default : float or None
        CLM5 (clm5 model) or reference-comment (microbial model) default in physical units;
        ``None`` where the default is not a constant (e.g. sand-dependent ``fs1s2``).
    """

    name: str
    minimum: float
    maximum: float
    units: str
    group: str
    description: str
    transform: Transform = "linear"
    default: float | None = None

    def __post_init__(self) -> None:
        if not self.maximum > self.minimum:
            raise ValueError(f"parameter {self.name!r}: maximum must exceed minimum")
        if self.transform == "log10" and self.minimum <= 0:
            raise ValueError(f"parameter {self.name!r}: log10 transform needs a positive minimum")

    def to_physical(self, theta):
        """Map normalised ``theta`` (array or tensor) to physical units."""
        if self.transform == "linear":
            return self.minimum + theta * (self.maximum - self.minimum)
        lo, hi = math.log10(self.minimum), math.log10(self.maximum)
        return 10.0 ** (lo + theta * (hi - lo))

    def to_normalized(self, value):
        """Map a physical value (array or tensor) to normalised space (may leave (0, 1))."""
        if self.transform == "linear":
            return (value - self.minimum) / (self.maximum - self.minimum)
        lo, hi = math.log10(self.minimum), math.log10(self.maximum)
        log = np.log10 if not hasattr(value, "log10") else (lambda v: v.log10())
        return (log(value) - lo) / (hi - lo)


@dataclass(frozen=True)
class ParameterSpace:
    """Ordered set of :class:`Parameter` of one model.

    Examples
    --------
    >>> import xproda
    >>> space = xproda.get_model("clm5").parameters
    >>> space.names[:3]
    ('diffus', 'cryo', 'q10')
    >>> space.groups["V"]
    ('diffus', 'cryo')
    """

    model: str
    parameters: tuple[Parameter, ...]
    group_order: tuple[str, ...] = field(default=("A", "K", "Xi", "V", "I"))

    def __post_init__(self) -> None:
        names = [p.name for p in self.parameters]
        if len(set(names)) != len(names):
            raise ValueError("duplicate parameter names")
        unknown = {p.group for p in self.parameters} - set(self.group_order)
        if unknown:
            raise ValueError(f"parameters use groups {sorted(unknown)} not in group_order")

    # -- discovery -------------------------------------------------------------------------
    def __len__(self) -> int:
        return len(self.parameters)

    def __iter__(self):
        return iter(self.parameters)

    def __getitem__(self, key: str | int) -> Parameter:
        if isinstance(key, str):
            return self.parameters[self.index(key)]
        return self.parameters[key]

    def __contains__(self, name: object) -> bool:
        return name in self.names

    @property
    def names(self) -> tuple[str, ...]:
        """Parameter names in the spec's order."""
        return tuple(p.name for p in self.parameters)

    @property
    def units(self) -> dict[str, str]:
        return {p.name: p.units for p in self.parameters}

    @property
    def bounds(self) -> np.ndarray:
        """Physical prior ranges, shape ``[P, 2]``."""
        return np.array([[p.minimum, p.maximum] for p in self.parameters])

    @property
    def groups(self) -> dict[str, tuple[str, ...]]:
        """Process groups (A, K, Xi, V, I[, E]) -> parameter names."""
        return {
            g: tuple(p.name for p in self.parameters if p.group == g) for g in self.group_order
        }

    def group_indices(self, group: str) -> tuple[int, ...]:
        """0-based positions of the parameters of ``group``."""
        if group not in self.group_order:
            raise KeyError(f"unknown group {group!r}; {self.model} groups are {self.group_order}")
        return tuple(i for i, p in enumerate(self.parameters) if p.group == group)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise KeyError(
                f"{self.model} has no parameter {name!r}; known parameters: {', '.join(self.names)}"
            ) from None

    @property
    def defaults(self) -> dict[str, float | None]:
        """Default physical values (``None`` where not a constant)."""
        return {p.name: p.default for p in self.parameters}

    def default_normalized(self) -> np.ndarray:
        """Defaults in normalised space, shape ``[P]``; NaN where no constant default exists.

        Values outside (0, 1) mean the default lies outside the PRODA prior (spec §10 item 5,
        e.g. ``efolding`` = 10 m for clm5).
        """
        return np.array(
            [np.nan if p.default is None else p.to_normalized(p.default) for p in self.parameters]
        )

    # -- transforms ------------------------------------------------------------------------
    def to_physical(self, theta):
        """Normalised ``theta`` ``[..., P]`` -> physical values ``[..., P]`` (numpy or torch)."""
        self._check_last_dim(theta)
        cols = [p.to_physical(theta[..., i]) for i, p in enumerate(self.parameters)]
        return _stack(cols, theta)

    def to_normalized(self, values):
        """Physical values ``[..., P]`` -> normalised ``[..., P]`` (numpy or torch)."""
        self._check_last_dim(values)
        cols = [p.to_normalized(values[..., i]) for i, p in enumerate(self.parameters)]
        return _stack(cols, values)

    def physical_dict(self, theta) -> dict:
        """Normalised ``theta`` ``[..., P]`` -> ``{name: physical value [...]}``."""
        self._check_last_dim(theta)
        return {p.name: p.to_physical(theta[..., i]) for i, p in enumerate(self.parameters)}

    def _check_last_dim(self, x) -> None:
        if x.shape[-1] != len(self):
            raise ValueError(
                f"theta must have {len(self)} {self.model} parameters in its last dimension, "
                f"got shape {tuple(x.shape)}"
            )

    def describe(self) -> str:
        """A plain-text table of the space."""
        rows = [f"{'#':>2} {'name':<16}{'group':<6}{'min':>11}{'max':>11} {'transform':<8} units"]
        for i, p in enumerate(self.parameters, 1):
            rows.append(
                f"{i:>2} {p.name:<16}{p.group:<6}{p.minimum:>11.4g}{p.maximum:>11.4g} "
                f"{p.transform:<8} {p.units}"
            )
        return "\n".join(rows)

    def subset(self, names: Iterable[str]) -> tuple[int, ...]:
        return tuple(self.index(n) for n in names)


def _stack(cols: Sequence, like):
    if hasattr(like, "new_tensor"):
        import torch

        return torch.stack(cols, dim=-1)
    return np.stack(cols, axis=-1)


# --------------------------------------------------------------------------------------------
# CLM5 vertically resolved CENTURY model (spec §2.3); defaults from CLM5 (see clm5_defaults.py)
# --------------------------------------------------------------------------------------------
_P = Parameter
CLM5_PARAMETERS = ParameterSpace(
    model="clm5",
    parameters=(
        _P("diffus", 3e-5, 5e-4, "m2 yr-1", "V", "bioturbation diffusivity", default=1e-4),
        _P("cryo", 3e-5, 1.6e-3, "m2 yr-1", "V", "cryoturbation diffusivity", default=5e-4),
        _P("q10", 1.2, 3.0, "1", "Xi", "Q10 of decomposition (frozen Q10 set equal)", default=1.5),
        _P("efolding", 0.0, 1.0, "m", "Xi", "e-folding depth of the decomposition depth scalar",
           default=10.0),
        _P("taucwd", 1.0, 6.0, "yr", "K", "CWD turnover time", default=1 / 0.3),
        _P("taul1", 0.0, 0.11, "yr", "K", "metabolic litter turnover time", default=1 / 18.5),
        _P("taul2", 0.1, 0.3, "yr", "K", "cellulose and lignin litter turnover time",
           default=1 / 4.9),
        _P("tau4s1", 0.0, 1.0, "yr", "K", "fast SOM turnover time", default=1 / 7.3),
        _P("tau4s2", 1.0, 50.0, "yr", "K", "slow SOM turnover time", default=1 / 0.2),
        _P("tau4s3", 200.0, 1000.0, "yr", "K", "passive SOM turnover time", default=1 / 0.0045),
        _P("fl1s1", 0.1, 0.8, "1", "A", "L1 -> S1 transfer fraction", default=0.45),
        _P("fl2s1", 0.2, 0.8, "1", "A", "L2 -> S1 transfer fraction", default=0.5),
        _P("fl3s2", 0.2, 0.8, "1", "A", "L3 -> S2 transfer fraction", default=0.5),
        _P("fs1s2", 0.0, 0.4, "1", "A", "S1 -> S2 transfer fraction (sand-dependent in CLM5)",
           default=None),
        _P("fs1s3", 0.0, 0.05, "1", "A", "S1 -> S3 transfer fraction", default=0.004),
        _P("fs2s1", 0.1, 0.74, "1", "A", "S2 -> S1 transfer fraction", default=0.42),
        _P("fs2s3", 0.0, 0.1, "1", "A", "S2 -> S3 transfer fraction", default=0.03),
        _P("fs3s1", 0.0, 0.9, "1", "A", "S3 -> S1 transfer fraction", default=0.45),
        _P("fcwdl2", 0.5, 1.0, "1", "A", "CWD -> L2 fraction (rest to L3)", default=0.76),
        _P("w-scaling", 0.0, 5.0, "1", "Xi", "multiplier on W_SCALAR (capped at 1)", default=1.0),
        _P("beta", 0.5, 0.9999, "1", "I", "Jackson et al. (1996) beta of the input profile",
           default=0.95),
    ),
)

# --------------------------------------------------------------------------------------------
# Microbial model (PRODA_MIC v22, spec §3.2); defaults are the reference code comments
# --------------------------------------------------------------------------------------------
MICROBIAL_PARAMETERS = ParameterSpace(
    model="microbial",
    group_order=("A", "K", "Xi", "V", "I", "E"),
    parameters=(
        _P("bio", 3e-5, 5e-4, "m2 yr-1", "V", "bioturbation diffusivity", default=1e-4),
        _P("cryo", 3e-5, 1.6e-3, "m2 yr-1", "V", "cryoturbation diffusivity", default=5e-4),
        _P("q10", 1.2, 3.0, "1", "Xi", "Q10 of decomposition (frozen Q10 set equal)", default=1.5),
        _P("w_scaling", 0.0, 5.0, "1", "Xi", "multiplier on W_SCALAR (capped at 1)", default=1.0),
        _P("tau4cwd", 1.0, 6.0, "yr", "K", "CWD turnover time", default=1 / 0.3),
        _P("tau4l1", 0.0, 0.1, "yr", "K", "metabolic litter turnover time", default=1 / 18.5),
        _P("tau4l2", 0.1, 0.3, "yr", "K", "cellulose and lignin litter turnover time",
           default=1 / 4.9),
        _P("tau4s1", 0.001, 0.03, "yr", "A", "1/Vmax of DOC uptake by microbes", default=1.1e-2),
        _P("tau4s2_death", 0.0, 2.0, "yr", "K", "1/k of microbial death", default=0.57),
        _P("tau4s2_enz", 15.0, 30.0, "yr", "K", "1/k of enzyme production", default=22.0),
        _P("tau4s3", 1e-3, 1.0, "yr", "K",
           "enzyme turnover time (log10 map; the reference code reads the mm_const_assim slot instead)",
           transform="log10", default=0.11),
        _P("tau4s4", 0.0, 3e-4, "yr", "K", "1/Vmax of SOC depolymerisation", default=None),
        _P("mm_const_assim", 300.0, 3000.0, "g m-3", "A", "half-saturation of DOC uptake",
           default=400.0),
        _P("mm_const_decom", 1e5, 1e6, "g m-3", "K", "half-saturation of SOC depolymerisation",
           default=None),
        _P("fcwdl2", 0.5, 1.0, "1", "E", "CWD -> L2 fraction (rest to L3)", default=0.75),
        _P("pl1s1", 0.0, 0.1, "1", "E", "fraction of L1 decomposition going to DOC"),
        _P("pl2s1", 0.05, 0.3, "1", "E", "fraction of L2 decomposition going to DOC"),
        _P("pl3s4", 0.6, 0.95, "1", "E", "fraction of L3 decomposition going to SOC"),
        _P("l1_cue", 0.4, 0.9, "1", "A", "CUE of microbial uptake of L1"),
        _P("l2l3_cue", 0.0, 0.4, "1", "A", "CUE of microbial uptake of L2 and L3"),
        _P("mic_cue", 0.01, 0.7, "1", "A", "microbial carbon use efficiency on DOC"),
        _P("pdeath2soc", 0.0, 1.0, "1", "E", "fraction of microbial necromass going to SOC",
           default=0.5),
        _P("beta", 0.5, 0.9999, "1", "I", "Jackson et al. (1996) beta of the input profile",
           default=0.95),
    ),
)
del _P
