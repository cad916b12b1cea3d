"""Evaluation (METHOD §6): clean and PGD-robust accuracy, AutoAttack accuracy (pyautoattack), calibration,
OOD AUROC of the energy score, fidelity of class-conditional samples, energy quantiles, and `evaluate`
(all of it but AutoAttack, as one report).

Every pass runs in eval mode (restored afterwards); our PGD attacks go through `dat_core.pgd.pgd`, AutoAttack
through the reference package `pyautoattack`.
"""

from .accuracy import (
           ROBUST,
           ROBUST_STRONG,
           clean_accuracy,
           predict,
           robust_accuracy,
)
from .autoattack import STANDARD_ATTACKS, autoattack_accuracy, model_info
from .batches import as_batches, iterate
from .metrics import (
           energy_percentile,
           energy_quantiles,
           expected_calibration_error,
           fit_temperature,
           roc_auc,
)
from .ood import OOD_SCORES, ood_auroc, ood_scores
from .report import calibration, evaluate, plot_reliability, sample_fidelity

__all__ = ["ROBUST", "ROBUST_STRONG", "clean_accuracy", "predict", "robust_accuracy", "STANDARD_ATTACKS",
           "autoattack_accuracy", "model_info",
           "as_batches", "iterate",
           "energy_percentile", "energy_quantiles", "expected_calibration_error", "fit_temperature", "roc_auc",
           "OOD_SCORES", "ood_auroc", "ood_scores", "calibration", "evaluate", "plot_reliability", "sample_fidelity"]
