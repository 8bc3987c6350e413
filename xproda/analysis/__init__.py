"""Post-DA analyses (spec §8): bulk process indices, marginal sensitivity (finite and
gradient-based), component control, covariate importance and skill.

Layers as elsewhere in xproda: torch kernels per column (:func:`bulk_indices_columns`, the
gradients of :func:`sensitivity_gradient`), xarray functions that are lazy and
chunk-invariant (:func:`bulk_indices`, :func:`sensitivity`, :func:`sensitivity_gradient`,
:func:`component_control`), and ``ds.proda.*`` accessor methods for the gridded ones.
Site-level analyses (:func:`permutation_importance`, :func:`skill_by_group`) work on
profile tables and return computed results.
"""

from xproda.analysis.control import DEFAULT_CONTROL_GROUPS, component_control, ranking
from xproda.analysis.importance import covariate_groups, permutation_importance, soc_at_observations
from xproda.analysis.indices import INDEX_ATTRS, bulk_indices, bulk_indices_columns
from xproda.analysis.sensitivity import (
    DEFAULT_GROUPS,
    DEFAULT_LEVELS,
    compare_sensitivities,
    sensitivity,
    sensitivity_gradient,
)
from xproda.analysis.skill import DEPTH_BANDS, LATITUDE_REGIONS, latitude_regions, skill_by_group

__all__ = [
    "DEFAULT_CONTROL_GROUPS", "DEFAULT_GROUPS", "DEFAULT_LEVELS", "DEPTH_BANDS",
    "INDEX_ATTRS", "LATITUDE_REGIONS", "bulk_indices", "bulk_indices_columns",
    "compare_sensitivities", "component_control", "covariate_groups", "latitude_regions",
    "permutation_importance", "ranking", "sensitivity", "sensitivity_gradient",
    "skill_by_group", "soc_at_observations",
]
