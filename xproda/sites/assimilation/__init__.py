"""Data assimilation: batched samplers and optimisers, costs and diagnostics."""

from xproda.sites.assimilation.costs import (
    COSTS,
    Cost,
    cost_cen,
    cost_gaussian,
    cost_mic,
    fit_stats,
    gaussian_loglik,
    get_cost,
    log_prior_uniform,
)

__all__ = [
    "COSTS",
    "Cost",
    "cost_cen",
    "cost_gaussian",
    "cost_mic",
    "fit_stats",
    "gaussian_loglik",
    "get_cost",
    "log_prior_uniform",
]
