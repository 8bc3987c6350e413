"""Soil-profile observations: schema, validation, converters, cleaning, layer weights, packing.

xproda keeps soil-profile observations in one **long table** (a pandas DataFrame, one row
per layer, see :data:`PROFILE_COLUMNS`): ``profile_id``, ``lat``/``lon`` (degrees), layer
``top``/``bottom`` depths (m below the mineral soil surface) and ``soc``, the soil organic
carbon *density* in g C m-3 of whole soil, the quantity the models simulate (spec §5.1).

The pipeline is

1. a converter (:func:`from_gsif`, :func:`from_aqp`, :func:`from_table`) brings a source table
   to the schema: units, bulk density (with a documented pedotransfer function where it is
   missing), coarse fragments, organic layers, replicate and overlapping layers;
2. :func:`validate_profiles` checks the table and names every problem;
3. :func:`clean_profiles` applies the per-profile rules of the data assimilation (spec §5.2),
   optionally the "invalid profile" rules used before network training (spec §5.3);
4. :func:`pack_profiles` validates the table and packs it into padded ``[site, obs]`` arrays
   (:class:`ProfileBatch`) with the layer weights of spec §5.2 (:func:`layer_weights`), ready
   for the batched kernels (:meth:`ProfileBatch.to_torch`) or xarray
   (:meth:`ProfileBatch.to_xarray`).

Every consumer of profiles (data assimilation, training, cross-validation) goes through
:func:`as_profile_batch`: a table is validated and packed once, a packed batch is accepted as
it is. Depth units are never guessed where both m and cm fit (see :func:`validate_profiles`).

Nothing is discarded silently: every converter and :func:`clean_profiles` return a
:class:`CleaningReport` that counts the layers and profiles each rule removed, lists the
removed rows (``report.dropped``) and notes every value that was derived or defaulted.

The package keeps one concept per module:

- :mod:`~xproda.sites.observations.schema`: the table's columns and units, node depths;
- :mod:`~xproda.sites.observations.validation`: :func:`validate_profiles` and its report;
- :mod:`~xproda.sites.observations.report`: :class:`CleaningReport`, what each step dropped;
- :mod:`~xproda.sites.observations.cleaning`: the per-profile rules (:func:`clean_profiles`);
- :mod:`~xproda.sites.observations.weights`: the layer weights of the cen cost;
- :mod:`~xproda.sites.observations.packing`: :class:`ProfileBatch`, :func:`pack_profiles`;
- :mod:`~xproda.sites.observations.pedotransfer`: bulk density and SOC density;
- :mod:`~xproda.sites.observations.properties`: measured properties per site
  (:func:`site_properties`, e.g. topsoil clay as a covariate);
- :mod:`~xproda.sites.observations.harmonise`: the converter steps shared by every source;
- :mod:`~xproda.sites.observations.gsif`, :mod:`~xproda.sites.observations.aqp`,
  :mod:`~xproda.sites.observations.table`: one converter per kind of source table.

Example
-------
>>> import pandas as pd
>>> df = pd.DataFrame({
...     "profile_id": ["a"] * 3 + ["b"] * 2,
...     "lat": [10.0] * 3 + [-5.0] * 2, "lon": [20.0] * 3 + [30.0] * 2,
...     "top": [0.0, 0.1, 0.3, 0.0, 0.2], "bottom": [0.1, 0.3, 0.6, 0.2, 0.5],
...     "soc": [20000.0, 12000.0, 5000.0, 8000.0, 0.0]})
>>> report = validate_profiles(df)
>>> clean, rep = clean_profiles(df)
>>> rep.n_profiles_out, rep.n_layers_out
(1, 3)
>>> batch = pack_profiles(clean)
>>> batch.soc.shape, batch.weight[0].round(4).tolist()
((1, 3), [6.0653, 1.3534, 6.0653])
"""

from xproda.sites.observations.aqp import from_aqp
from xproda.sites.observations.cleaning import CLEANING_RULES, clean_profiles
from xproda.sites.observations.gsif import from_gsif
from xproda.sites.observations.packing import ProfileBatch, as_profile_batch, pack_profiles
from xproda.sites.observations.pedotransfer import (
    PEDOTRANSFER_FUNCTIONS,
    bulk_density_adams,
    soc_density,
)
from xproda.sites.observations.properties import GSIF_PROPERTY_UNITS, site_properties
from xproda.sites.observations.report import CleaningReport
from xproda.sites.observations.schema import (
    DEPTH_UNITS_ATTR,
    PROFILE_COLUMNS,
    REQUIRED_COLUMNS,
    SOC_MAX_PLAUSIBLE,
    node_depth,
    profile_columns_markdown,
)
from xproda.sites.observations.table import from_table
from xproda.sites.observations.validation import (
    Problem,
    ProfileValidationError,
    ValidationReport,
    validate_profiles,
)
from xproda.sites.observations.weights import layer_weights

# public constants of the module this package replaces, still reachable as attributes
from xproda.sites.observations.pedotransfer import VAN_BEMMELEN  # noqa: F401
from xproda.sites.observations.validation import (  # noqa: F401
    DEPTH_MAX_PLAUSIBLE,
    DEPTH_TOL,
    SOC_MIN_PLAUSIBLE_MAX,
    SOC_MIN_PLAUSIBLE_MEDIAN,
    THICKNESS_MAX_PLAUSIBLE,
    THICKNESS_UNAMBIGUOUS,
)

__all__ = [
    "PROFILE_COLUMNS",
    "REQUIRED_COLUMNS",
    "SOC_MAX_PLAUSIBLE",
    "DEPTH_UNITS_ATTR",
    "CLEANING_RULES",
    "PEDOTRANSFER_FUNCTIONS",
    "Problem",
    "ValidationReport",
    "ProfileValidationError",
    "CleaningReport",
    "ProfileBatch",
    "GSIF_PROPERTY_UNITS",
    "site_properties",
    "validate_profiles",
    "clean_profiles",
    "layer_weights",
    "node_depth",
    "pack_profiles",
    "as_profile_batch",
    "from_gsif",
    "from_aqp",
    "from_table",
    "bulk_density_adams",
    "soc_density",
    "profile_columns_markdown",
]
