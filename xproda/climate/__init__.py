"""Kernel forcing from climate and soil covariates, for users without CLM5 history output.

:func:`from_climate` builds the CLM5-style forcing of the process models (``TSOI``,
``W_SCALAR``, ``O_SCALAR``, ``FPI_vr``, ``ALTMAX``, ``ALTMAX_LASTYEAR``, ``nbedrock``, ``NPP``,
``CELLSAND`` and the column-total litter inputs) from a monthly climatology (``tas``, ``pr``),
from WorldClim bioclimatic summaries (:func:`monthly_climate_from_bioclim`) or from site
values of mean annual air temperature and precipitation, plus optional soil covariates (sand
content, depth to bedrock, elevation) and NPP.  The same per-column functions
(:func:`column_forcing` and the formulas of :mod:`xproda.climate.formulas`) make the forcing
of the synthetic world (:func:`xproda.datasets.synthetic_world`).

Every input is read against :data:`CLIMATE_SCHEMA` (its units, dims and plausible range):
units are converted with :mod:`xproda.units` (pint), every conversion is written to the
output's ``history``, and values outside the plausible range raise
:class:`~xproda.errors.RangeError` (at compute time for dask input).

Every formula, its source and its limits: ``docs/user-guide/forcing-from-climate.md`` and
``docs/user-guide/synthetic-world.md``.

Modules (the names below are also available from :mod:`xproda.climate` itself):

- :mod:`xproda.climate.contract`: the input contract, :data:`CLIMATE_SCHEMA` and
  :class:`ClimateInput` (units, dims, plausible ranges; reading and converting inputs);
- :mod:`xproda.climate.formulas`: climate formulas (:func:`thornthwaite_pet`,
  :func:`bioclim`, :func:`miami_npp`, :func:`active_layer_thickness`, ...);
- :mod:`xproda.climate.reconstruction`: monthly climate from bioclimatic summaries
  (:func:`monthly_climate_from_bioclim`);
- :mod:`xproda.climate.columns`: the per-column forcing kernel (:func:`column_forcing`,
  :data:`FORCING_VARIABLES`);
- :mod:`xproda.climate.forcing`: forcing from climate covariates (:func:`from_climate`,
  :data:`DEFAULTS`);
- :mod:`xproda.climate.metadata`: attributes of the outputs (:data:`CLIMATE_VARIABLES`).

Examples
--------
>>> import numpy as np, xarray as xr
>>> from xproda.climate import from_climate
>>> sites = xr.Dataset({"maat": ("site", [15.0, -8.0]),
...                     "map": ("site", [600.0, 300.0], {"units": "mm"})},
...                    coords={"lat": ("site", [37.0, 68.0]), "lon": ("site", [-119.5, 133.0])})
>>> f = from_climate(sites)
>>> f["TSOI"].dims
('month', 'layer', 'site')
>>> f["ALTMAX_LASTYEAR"].isel(month=0).values.round(1)  # m: permafrost at the cold site
array([42. ,  3.9])
"""

from __future__ import annotations

from xproda.climate.columns import FORCING_VARIABLES, column_forcing
from xproda.climate.contract import CLIMATE_SCHEMA, ClimateInput
from xproda.climate.forcing import DEFAULTS, from_climate
from xproda.climate.formulas import active_layer_thickness, bioclim, miami_npp, thornthwaite_pet
from xproda.climate.metadata import CLIMATE_VARIABLES
from xproda.climate.reconstruction import monthly_climate_from_bioclim

__all__ = [
    "CLIMATE_SCHEMA", "CLIMATE_VARIABLES", "DEFAULTS", "FORCING_VARIABLES", "ClimateInput",
    "active_layer_thickness", "bioclim", "column_forcing", "from_climate", "miami_npp",
    "monthly_climate_from_bioclim", "thornthwaite_pet",
]
