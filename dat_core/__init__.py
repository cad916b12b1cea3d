"""dat_core: the DAT method — models, energies, the PGD engine, data, training, checkpoints.

Never imports gradio (layering: app.py -> explain -> dat_core).
"""

from .checkpoint import model_card, save_model
from .energy import joint_energy, marginal_energy, probabilities
from .loading import load_model
from .models import KNOWN_ARCHS, Classifier, build_model, count_parameters
from .official import import_official
from .pgd import (
    L1,
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
from .version import __version__, code_version
from .zoo import list_models

__all__ = [
    "Classifier", "KNOWN_ARCHS", "build_model", "count_parameters",
    "joint_energy", "marginal_energy", "probabilities",
    "ThreatModel", "L2", "Linf", "L1", "threat_model", "pgd", "PGDResult", "PGDStep", "STOP", "OBJECTIVES",
    "attack_mode",
    "load_model", "save_model", "import_official", "model_card", "list_models", "DATModel",
    "__version__", "code_version",
]


def __getattr__(name: str):
    """`dat_core.DATModel` (the Hub mixin) is imported on first use: `import dat_core` stays free of
    huggingface_hub for local work."""
    if name == "DATModel":
        from .pretrained import DATModel

        return DATModel
    raise AttributeError(f"module 'dat_core' has no attribute {name!r}")
