"""Classifiers whose logits double as energies: a registry of architectures, one file per family.

Importing this package registers every family (wrn, preact_resnet, resnet, convnext); `build_model(arch, ...)`
builds any of them with its registered defaults.
"""

from . import convnext, preact_resnet, resnet, wrn  # noqa: F401  (each family registers its architectures)
from .base import CIFAR10_CLASSES, Classifier, class_names_of, default_class_names
from .config import build_model
from .registry import (
                       CIFAR10_NORMALIZATION,
                       IMAGENET_NORMALIZATION,
                       NORMALIZATIONS,
                       count_parameters,
                       find_arch,
                       known_archs,
                       register,
                       register_family,
)

KNOWN_ARCHS = known_archs()

__all__ = ["Classifier", "build_model", "count_parameters", "known_archs", "KNOWN_ARCHS", "find_arch", "register",
           "register_family", "class_names_of", "default_class_names", "CIFAR10_CLASSES",
           "CIFAR10_NORMALIZATION", "IMAGENET_NORMALIZATION", "NORMALIZATIONS"]
