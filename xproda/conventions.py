"""Metadata registry: one place for the attributes of every variable xproda creates.

Units are UDUNITS strings (``g m-3``, ``kg m-2``) so that tools such as cf-xarray and pint
can parse them; "of carbon" is stated in ``long_name`` (CF convention for carbon masses, as in
CMIP's ``cSoil``).  ``standard_name`` is set only where the CF standard-name table has one.

Example
-------
>>> from xproda.conventions import attrs
>>> attrs("soc_stock")["standard_name"]
'soil_mass_content_of_carbon'
"""

from __future__ import annotations

import datetime as _dt
from typing import Any

from . import grid

__all__ = ["OUTPUTS", "attrs", "history_line", "layer_coords", "CF_CONVENTIONS",
           "forcing_attrs"]

CF_CONVENTIONS = "CF-1.10"

#: attributes of the output variables (name -> attrs)
OUTPUTS: dict[str, dict[str, Any]] = {
    "soc": {
        "units": "g m-3",
        "long_name": "soil organic carbon density by layer (mass of carbon per volume of soil)",
        "description": "steady-state soil organic carbon (sum of the model's soil pools)",
    },
    "pools": {
        "units": "g m-3",
        "long_name": "carbon density of each model pool by layer",
    },
    "soc_stock": {
        "units": "kg m-2",
        "standard_name": "soil_mass_content_of_carbon",
        "long_name": "soil organic carbon stock",
    },
    "pool_stocks": {
        "units": "kg m-2",
        "long_name": "carbon stock of each model pool (whole soil column)",
    },
    "input": {
        "units": "g m-2 yr-1",
        "long_name": "litter carbon input to the soil column (365-day year)",
    },
    "respiration": {
        "units": "g m-2 yr-1",
        "long_name": "heterotrophic respiration of the soil column at steady state "
                     "(365-day year)",
    },
    "total_carbon": {
        "units": "kg m-2",
        "long_name": "total carbon of the soil column (coarse woody debris, litter and soil "
                     "organic carbon)",
    },
    "net_flux": {
        "units": "g m-2 yr-1",
        "long_name": "net carbon uptake of the soil column (litter input minus heterotrophic "
                     "respiration; positive when the soil gains carbon)",
    },
    "spinup_cycles": {
        "units": "1",
        "long_name": "spin-up cycles run to the periodic state",
    },
    "turnover_time": {
        "units": "yr",
        "long_name": "soil organic carbon turnover time (stock / total litter input)",
    },
    "flags": {
        "long_name": "steady-state quality flags",
        "flag_masks": None,  # filled from xproda.FLAGS by attrs()
        "flag_meanings": None,
    },
    "theta": {
        "units": "1",
        "long_name": "normalised model parameters (0..1, ordered as the parameter coordinate)",
    },
    "global_total": {
        "units": "Pg",
        "long_name": "global soil organic carbon stock (mass of carbon)",
    },
}


def attrs(name: str, **extra: Any) -> dict[str, Any]:
    """Attributes of output variable ``name`` (a fresh dict; ``extra`` overrides).

    Parameters
    ----------
    name : str
        Key of :data:`OUTPUTS`.
    **extra
        Additional or overriding attributes.

    Returns
    -------
    dict
    """
    if name not in OUTPUTS:
        raise KeyError(f"no metadata registered for output {name!r}; known: {sorted(OUTPUTS)}")
    out = dict(OUTPUTS[name])
    if name == "flags":
        from .models.base import FLAGS

        out["flag_masks"] = [int(v) for v in FLAGS.values()]
        out["flag_meanings"] = " ".join(FLAGS)
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def forcing_attrs(name: str) -> dict[str, Any]:
    """Expected units and long_name of a forcing variable (from the kernel schema)."""
    from .models.forcing import FORCING_SCHEMA

    v = FORCING_SCHEMA[name]
    return {"units": v.units, "long_name": v.long_name}


def layer_coords(n_layers: int = grid.N_LAYERS) -> dict[str, Any]:
    """CF coordinates of the ``layer`` dim: ``layer`` (1-based), ``depth`` and its bounds."""
    import xarray as xr

    layer = xr.DataArray(
        list(range(1, n_layers + 1)), dims="layer",
        attrs={"long_name": "soil decomposition layer (1 = top)", "units": "1"},
    )
    depth = xr.DataArray(
        grid.ZSOI[:n_layers], dims="layer",
        attrs={"standard_name": "depth", "long_name": "depth of the layer node",
               "units": "m", "positive": "down", "axis": "Z", "bounds": "depth_bounds"},
    )
    bounds = xr.DataArray(
        grid.layer_bounds(n_layers), dims=("layer", "nv"),
        attrs={"long_name": "depth of the layer interfaces", "units": "m"},
    )
    return {"layer": layer, "depth": depth, "depth_bounds": bounds}


def history_line(action: str) -> str:
    """One CF ``history`` line: UTC timestamp, xproda version and the action."""
    from . import __version__

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{now} xproda {__version__}: {action}"
