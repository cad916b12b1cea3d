"""How well a model generates: Fréchet distance and within-class diversity in a fixed feature space.

The feature space is another classifier's penultimate layer (`Classifier.features`, e.g. the bundled
standard model): offline, fixed, and the same for every model compared. A Fréchet distance there is
*not* FID (that needs Inception-v3 features) and is never called so; `inception_fid` computes real FID
when the optional Inception weights are present. The Fréchet math is torchmetrics' (the kept library).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from ..pgd import attack_mode
from ..runtime import model_device
from .batches import as_batches


class FeatureSpace(nn.Module):
    """[0,1] images -> a classifier's penultimate features (float64 CPU rows): torchmetrics' `feature=` module."""

    def __init__(self, model: nn.Module, batch_size: int = 256):
        super().__init__()
        if not hasattr(model, "features"):
            raise ValueError("the feature model must have .features(x) (a dat_core Classifier)")
        self.model = model.eval()
        self.batch_size = batch_size
        size = int(getattr(model, "config", {}).get("image_size", 32))
        with torch.no_grad():
            self.num_features = int(model.features(torch.zeros(1, 3, size, size, device=model_device(model))).shape[1])

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> torch.Tensor:
        device = model_device(self.model)
        out = [self.model.features(images[i:i + self.batch_size].to(device).float()).double().cpu()
               for i in range(0, images.shape[0], self.batch_size)]
        return torch.cat(out)


def _images(data: Any) -> torch.Tensor:
    """Every image of `data` (the forms of `dat_core.evaluation.batches`) as one float [0,1] CPU tensor."""
    out = []
    for batch in as_batches(data):
        x = batch if isinstance(batch, torch.Tensor) else batch[0]
        out.append(x.float().div(255) if x.dtype == torch.uint8 else x.float())
    if not out:
        raise ValueError("no images: the data was empty (or a one-shot iterator read a second time)")
    return torch.cat([x.cpu() for x in out])


def features_of(feature_model: nn.Module, data: Any) -> torch.Tensor:
    """(N, D) float64 features of every image in `data`."""
    with attack_mode(feature_model):
        return FeatureSpace(feature_model)(_images(data))


def frechet_distance(feature_model: nn.Module, real: Any, generated: Any) -> float:
    """Fréchet distance between Gaussians fitted to the features of `real` and `generated` images in
    `feature_model`'s feature space (torchmetrics' FrechetInceptionDistance with a custom feature module)."""
    from torchmetrics.image.fid import FrechetInceptionDistance

    with attack_mode(feature_model):
        space = FeatureSpace(feature_model)
        metric = FrechetInceptionDistance(feature=space, normalize=True, reset_real_features=True)
        for data, is_real in ((real, True), (generated, False)):
            images = _images(data)
            if images.shape[0] < 2:
                raise ValueError("a Fréchet distance needs at least 2 images per set")
            metric.update(images, real=is_real)
        return float(metric.compute())


def frechet_from_features(real: torch.Tensor, generated: torch.Tensor) -> float:
    """The same distance from precomputed (N, D) features (torchmetrics' formula)."""
    from torchmetrics.image.fid import _compute_fid

    def stats(f: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        f = f.double()
        return f.mean(0), torch.cov(f.T)

    (m1, s1), (m2, s2) = stats(real), stats(generated)
    return float(_compute_fid(m1, s1, m2, s2))


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
