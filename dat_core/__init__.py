"""dat_core: the DAT method — models, energies, the PGD engine, data, training, checkpoints.

Never imports gradio (layering: app.py -> explain -> dat_core).
"""

from .checkpoint import model_card, save_model
from .energy import joint_energy, marginal_energy, probabilities
from .loading import load_model
from .models import KNOWN_ARCHS, Classifier, build_model, count_parameters
from .official import import_official
from .pgd import (
    L2,
    OBJECTIVES,
    STOP,
    Linf,
    PGDResult,
    PGDStep,
    ThreatModel,
    attack_mode,
    pgd,
    threat_model,
)

__all__ = [
    "Classifier", "KNOWN_ARCHS", "build_model", "count_parameters",
    "joint_energy", "marginal_energy", "probabilities",
    "ThreatModel", "L2", "Linf", "threat_model", "pgd", "PGDResult", "PGDStep", "STOP", "OBJECTIVES", "attack_mode",
    "load_model", "save_model", "import_official", "model_card",
]
