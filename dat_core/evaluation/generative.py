"""How well a model generates: Fréchet distance and within-class diversity in a fixed feature space.

The feature space is another classifier's penultimate layer (`Classifier.features`, e.g. the bundled
standard model): offline, fixed, and the same for every model compared. A Fréchet distance there is
*not* FID (that needs Inception-v3 features) and is never called so; `inception_fid` computes real FID
when the optional Inception weights are present. The Fréchet math is torchmetrics' (the kept library).

Deliberately not the official FID (pytorch-fid: Inception pool features of 50K generated images saved as 8-bit PNGs,
against precomputed training-set statistics): here the samples are measured as generated (floats), against the
evaluated images (the evaluated split, e.g. test), with both set sizes reported (`n_real`, `n_samples`); the
Fréchet distance is biased upward for small sets, which the kernel distance is not.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..pgd import attack_mode, check_images
from ..runtime import model_device
from .batches import as_batches


def _images(data: Any) -> torch.Tensor:
    """Every image of `data` (the forms of `dat_core.evaluation.batches`) as one float [0,1] CPU tensor, checked as
    every other pass checks its images: 0..255 as floats gave features of saturated noise, silently."""
    out = []
    for batch in as_batches(data):
        x = batch if isinstance(batch, torch.Tensor) else batch[0]
        out.append(x.float().div(255) if x.dtype == torch.uint8 else x.float())
        check_images(out[-1])
    if not out:
        raise ValueError("no images: the data was empty (or a one-shot iterator read a second time)")
    return torch.cat([x.cpu() for x in out])


def check_feature_size(feature_model: nn.Module, image_size: int | None) -> None:
    """ValueError unless the feature model (its config, where it has one) takes images of `image_size`: its pooling
    takes any size, so another size gave features the model never learned, and a distance in them, silently."""
    own = getattr(feature_model, "config", {}).get("image_size")
    if own is not None and image_size is not None and int(own) != int(image_size):
        raise ValueError(f"the feature model takes {own} px images, these are {image_size} px: use a feature model "
                         "of the evaluated images' size")


@torch.no_grad()
def features_of(feature_model: nn.Module, data: Any, batch_size: int = 256) -> torch.Tensor:
    """(N, D) float64 CPU features of every image in `data`: `feature_model.features` (a dat_core Classifier's
    penultimate layer), in eval mode, at the feature model's own image size (`check_feature_size`)."""
    if not hasattr(feature_model, "features"):
        raise ValueError("the feature model must have .features(x) (a dat_core Classifier)")
    images, device = _images(data), model_device(feature_model)
    check_feature_size(feature_model, images.shape[-1])
    with attack_mode(feature_model):
        return torch.cat([feature_model.features(images[i:i + batch_size].to(device)).double().cpu()
                          for i in range(0, len(images), batch_size)])


def frechet_distance(feature_model: nn.Module, real: Any, generated: Any) -> float:
    """Fréchet distance between Gaussians fitted to the features of `real` and `generated` images in
    `feature_model`'s feature space."""
    return frechet_from_features(features_of(feature_model, real), features_of(feature_model, generated))


class _Given(nn.Module):
    """Features already computed: torchmetrics' feature module that passes them through."""

    def __init__(self, num_features: int):
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


def _check_feature_sets(real: torch.Tensor, generated: torch.Tensor, what: str) -> None:
    """Two (N, D) sets of finite features of one width: a NaN gave a NaN distance, unequal widths a torch
    broadcast error (and an MKL error line on stderr)."""
    for f in (real, generated):
        if not isinstance(f, torch.Tensor) or f.dim() != 2 or f.shape[0] < 2:
            raise ValueError(f"{what} needs (N, D) features with at least 2 images per set")
        if not torch.isfinite(f).all():
            raise ValueError(f"{what} needs finite features; got NaN or inf")
    if real.shape[1] != generated.shape[1]:
        raise ValueError(f"{what} needs features of one width; got {real.shape[1]} and {generated.shape[1]}")


def frechet_from_features(real: torch.Tensor, generated: torch.Tensor) -> float:
    """The Fréchet distance of two (N, D) feature sets: torchmetrics' FrechetInceptionDistance over them."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    _check_feature_sets(real, generated, "a Fréchet distance")
    metric = FrechetInceptionDistance(feature=_Given(real.shape[1]), reset_real_features=True)
    metric.update(real.double(), real=True)
    metric.update(generated.double(), real=False)
    return float(metric.compute())


KID_SUBSETS, KID_SUBSET_SIZE = 10, 1000
"""The kernel distance's random subsets: how many, and at most how many images each (torchmetrics: 100 of 1000)."""


def kernel_distance_from_features(real: torch.Tensor, generated: torch.Tensor, subsets: int = KID_SUBSETS,
                                  subset_size: int = KID_SUBSET_SIZE, seed: int = 0) -> tuple[float, float]:
    """The kernel distance (KID's unbiased MMD² with the cubic polynomial kernel) of two (N, D) feature sets:
    torchmetrics' KernelInceptionDistance over them, mean and std over `subsets` random subsets of
    min(subset_size, N) images each. Unbiased for small N, where the Fréchet distance is biased upward."""
    from torchmetrics.image.kid import KernelInceptionDistance

    _check_feature_sets(real, generated, "a kernel distance")
    size = min(subset_size, len(real), len(generated))
    metric = KernelInceptionDistance(feature=_Given(real.shape[1]), subsets=subsets, subset_size=size,
                                     reset_real_features=True)
    metric.update(real.double(), real=True)
    metric.update(generated.double(), real=False)
    with torch.random.fork_rng():
        torch.manual_seed(seed)  # torchmetrics draws the subsets from torch's global RNG
        mean, std = metric.compute()
    return float(mean), float(std)


def within_class_diversity(features: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean pairwise L2 distance between features of the same class, averaged over classes with >= 2 images.

    Compare a model's samples with real images of the same classes (their ratio is the diversity score): a
    model that draws one near-identical image per class scores near 0.
    """
    labels = torch.as_tensor(labels)
    per_class = []
    for c in labels.unique():
        f = features[labels == c].double()
        if len(f) >= 2:
            d = torch.cdist(f, f)
            per_class.append(d.sum() / (len(f) * (len(f) - 1)))
    if not per_class:
        raise ValueError("within-class diversity needs at least one class with 2 or more images")
    return float(torch.stack(per_class).mean())


def inception_fid(real: Any, generated: Any, weights: str | Path | None = None) -> float:
    """Real FID (Inception-v3 pool features, as in papers) through torchmetrics + torch-fidelity.

    Optional: torch-fidelity imports torchvision, which this project does not install, and its weights are
    downloaded once. Raises a clear ImportError / FileNotFoundError when either is missing.
    """
    try:
        from torchmetrics.image.fid import FrechetInceptionDistance
        metric = FrechetInceptionDistance(feature=2048, normalize=True,
                                          feature_extractor_weights_path=None if weights is None else str(weights))
    except (ModuleNotFoundError, ImportError) as e:
        raise ImportError("Inception FID needs torch-fidelity (which pulls torchvision) and its Inception "
                          "weights; the Fréchet distance in a classifier's features needs neither") from e
    except (FileNotFoundError, OSError, RuntimeError) as e:
        raise FileNotFoundError(f"the Inception weights could not be loaded ({e}); pass weights=PATH to "
                                "pt_inception-2015-12-05 weights downloaded once on a machine with internet") from e
    metric.update(_images(real), real=True)
    metric.update(_images(generated), real=False)
    return float(metric.compute())
