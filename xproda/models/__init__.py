"""Process models (torch kernels): CLM5 vertically resolved CENTURY and the microbial model."""

from __future__ import annotations

from xproda.models.base import FLAGS, ModelOptions, SoilCarbonModel, SteadyState, decode_flags
from xproda.models.clm5 import CLM5Model
from xproda.models.microbial import MicrobialModel
from xproda.models.parameters import (
    CLM5_PARAMETERS,
    MICROBIAL_PARAMETERS,
    Parameter,
    ParameterSpace,
)
from xproda.models import transient

# transient runs of the CLM5 model as methods: transient builds on clm5, so clm5 itself does
# not import transient (no import cycle); the functions take the model as first argument
CLM5Model.simulate = transient.simulate
CLM5Model.spin_up = transient.spin_up

__all__ = [
    "get_model",
    "MODELS",
    "CLM5Model",
    "MicrobialModel",
    "SoilCarbonModel",
    "SteadyState",
    "ModelOptions",
    "FLAGS",
    "decode_flags",
    "Parameter",
    "ParameterSpace",
    "CLM5_PARAMETERS",
    "MICROBIAL_PARAMETERS",
]

#: registry of model names (and aliases) -> classes
MODELS: dict[str, type[SoilCarbonModel]] = {
    "clm5": CLM5Model,
    "cen": CLM5Model,
    "microbial": MicrobialModel,
    "mic": MicrobialModel,
}


def get_model(name: str, *, reference: bool = False, **options) -> SoilCarbonModel:
    """Return a process model by name.

    Parameters
    ----------
    name : {"clm5", "microbial"}
        ``"clm5"`` (alias ``"cen"``): CLM5 vertically resolved CENTURY model (21 parameters);
        ``"microbial"`` (alias ``"mic"``): PRODA_MIC v22 microbial model (23 parameters).
    reference : bool, default False
        Reproduce the original PRODA code exactly (fixture parity) instead of the corrected
        behaviour of the spec's bug list (§10).
    **options
        Individual behaviour switches, see :class:`~xproda.models.base.ModelOptions`.

    Returns
    -------
    SoilCarbonModel

    Examples
    --------
    >>> import xproda
    >>> m = xproda.get_model("clm5")
    >>> len(m.parameters.names)
    21
    >>> xproda.get_model("microbial", reference=True).reference
    True
    """
    try:
        cls = MODELS[str(name).lower()]
    except KeyError:
        raise ValueError(
            f"unknown model {name!r}; available models: 'clm5' (alias 'cen'), "
            "'microbial' (alias 'mic')"
        ) from None
    return cls(reference=reference, **options)
