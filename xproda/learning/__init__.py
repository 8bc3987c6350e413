"""Learning parameters from covariates: networks, training, cross-validation and baselines."""
