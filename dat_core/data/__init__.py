"""Data: datasets (CIFAR archives, class-folder dirs/archives, lazy file datasets), the train/validation split,
seeds for sampling, resumable batch streams and augmentations."""

from .cifar import CIFAR_SOURCES, load_cifar
from .datasets import ImageDataset, train_val_split
from .folders import IMAGE_EXTENSIONS, FileImageDataset, LazyImages, load_image_folder
from .seeds import NOISE_KINDS, SEED_KINDS, noise_dataset, noise_seeds, seeds_for

__all__ = ["ImageDataset", "FileImageDataset", "LazyImages", "load_cifar", "load_image_folder", "noise_seeds",
           "noise_dataset", "seeds_for", "train_val_split", "SEED_KINDS", "CIFAR_SOURCES", "IMAGE_EXTENSIONS",
           "NOISE_KINDS"]
