"""Training parameter networks: the public entry points in one namespace.

This module defines nothing; it gathers the names a user of training needs from the modules
that define them, so ``from xproda.learning.training import ...`` (and ``xproda.train_network``,
``xproda.cross_validate``) keep one stable address:

- :mod:`xproda.learning.data`: :class:`TrainingData`, :func:`prepare_training_data`,
  :func:`default_features` (profiles with covariates and forcing at their sites);
- :mod:`xproda.learning.losses`: :func:`soc_loss`, :func:`parameter_loss`;
- :mod:`xproda.learning.forward`: :func:`soc_at_observations` (the model at the observed
  layers);
- :mod:`xproda.learning.trainer`: :func:`train_network`, :class:`TrainingReport` (the training
  loop, end to end or PRODA's two steps, with checkpoints and ensembles);
- :mod:`xproda.learning.validation`: :func:`cross_validate`, :data:`CV_METHODS`,
  :data:`BASELINE_METHODS`.

Cross-validation trains networks, so :mod:`~xproda.learning.validation` imports
:mod:`~xproda.learning.trainer`; gathering both here (and not in either) keeps the imports
acyclic.

Examples
--------
>>> from xproda.learning import training, trainer, validation
>>> training.train_network is trainer.train_network
True
>>> training.cross_validate is validation.cross_validate
True
"""

from __future__ import annotations

from xproda.learning.data import TrainingData, default_features, prepare_training_data
from xproda.learning.forward import soc_at_observations
from xproda.learning.losses import parameter_loss, soc_loss
from xproda.learning.trainer import TrainingReport, train_network
from xproda.learning.validation import BASELINE_METHODS, CV_METHODS, cross_validate

__all__ = [
    "TrainingData", "TrainingReport", "prepare_training_data", "default_features",
    "train_network", "cross_validate", "soc_loss", "parameter_loss", "CV_METHODS",
    "soc_at_observations", "BASELINE_METHODS",
]
