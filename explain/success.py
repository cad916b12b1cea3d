"""Counterfactual success: over (image, other class) pairs, how often a targeted PGD path reaches the target.

The app's promise is that a path toward another class gets there at the default settings. This measures it:
for every image and every class other than its label, run the path (all targets of one image as one PGD
batch) and record whether p(target | x_t) reaches `threshold` at some step, the final confidence and the L2
distance travelled. `sweep` does it for several settings, for choosing the defaults on a validation split
(never on the test split or on the examples the card reports).
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn as nn

from dat_core.pgd import logits_at

from .image import ImageLike, to_model_input
from .trajectory import counterfactuals, model_info


@dataclass
class Success:
    """Per-pair outcomes of one setting (arrays over pairs, in image-major order)."""

    params: dict[str, Any]
    images: list[str]                 # a name per image (file name or dataset index)
    sources: np.ndarray               # (P,) the image's label (or prediction when unlabeled)
    targets: np.ndarray               # (P,)
    reached: np.ndarray               # (P,) bool: p(target) >= threshold at some step
    final_confidence: np.ndarray      # (P,) p(target) at the last step
    l2: np.ndarray                    # (P,) ||x_T - x_0||_2
    class_names: list[str]
    threshold: float = 0.5
    image_of_pair: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=int))

    @property
    def rate(self) -> float:
        return float(self.reached.mean()) if len(self.reached) else math.nan

    def summary(self) -> dict[str, Any]:
        """JSON-safe: the rate, its parts and the pairs that fell short (by name)."""
        missed = [{"image": self.images[int(i)], "source": self.class_names[int(s)],
                   "target": self.class_names[int(t)], "final_confidence": round(float(c), 4)}
                  for i, s, t, c, ok in zip(self.image_of_pair, self.sources, self.targets,
                                             self.final_confidence, self.reached) if not ok]
        eps = self.params.get("eps")
        return {"params": {**self.params, "eps": "inf" if eps == math.inf else eps}, "threshold": self.threshold,
                "images": len(self.images), "pairs": int(len(self.reached)), "success_rate": self.rate,
                "final_success_rate": float((self.final_confidence >= self.threshold).mean()),
                "mean_final_confidence": float(self.final_confidence.mean()),
                "median_l2": float(np.median(self.l2)), "missed": missed}


def counterfactual_success(model: nn.Module, images: Sequence[ImageLike], labels: Sequence[int | None] | None = None,
                           names: Sequence[str] | None = None, *, threshold: float = 0.5, norm: str = "L2",
                           eps: float | None = None, step_size: float | None = None, steps: int | None = None,
                           autocast: bool = False, progress: Callable[[int], None] | None = None) -> Success:
    """Paths from each image toward every class but its label (None: the model's prediction at x_0);
    unset parameters take the defaults for the model's resolution (`default_params`), as in the app."""
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must be in (0, 1); got {threshold}")
    _, class_names, _ = model_info(model)
    labels = list(labels) if labels is not None else [None] * len(images)
    if len(labels) != len(images):
        raise ValueError(f"{len(labels)} labels for {len(images)} images")
    rows: list[tuple[int, int, int, bool, float, float]] = []
    params: dict[str, Any] = {}
    for i, (image, label) in enumerate(zip(images, labels)):
        if label is None:
            label = _prediction(model, image)
        others = [k for k in range(len(class_names)) if k != label]
        for t in counterfactuals(model, image, others, norm=norm, eps=eps, step_size=step_size, steps=steps,
                                 autocast=autocast):
            conf = t.confidence
            rows.append((i, int(label), t.target, bool((conf >= threshold).any()), float(conf[-1]), float(t.l2[-1])))
            params = dict(t.params)
        if progress is not None:
            progress(i + 1)
    cols = list(zip(*rows)) if rows else [[]] * 6
    return Success(params=params, images=list(names) if names is not None else [str(i) for i in range(len(images))],
                   image_of_pair=np.asarray(cols[0], dtype=int), sources=np.asarray(cols[1], dtype=int),
                   targets=np.asarray(cols[2], dtype=int), reached=np.asarray(cols[3], dtype=bool),
                   final_confidence=np.asarray(cols[4], dtype=float), l2=np.asarray(cols[5], dtype=float),
                   class_names=class_names, threshold=threshold)


def _prediction(model: nn.Module, image: ImageLike) -> int:
    size, _, device = model_info(model)
    with torch.no_grad():   # as PGD sees the model (eval mode), whatever mode the caller left it in
        return int(logits_at(model, to_model_input(image, size).to(device)).argmax(1))


def sweep(model: nn.Module, images: Sequence[ImageLike], labels: Sequence[int | None] | None = None,
          names: Sequence[str] | None = None, *, eps: Sequence[float | None] = (None,),
          steps: Sequence[int | None] = (None,), step_size: Sequence[float | None] = (None,),
          **kw: Any) -> list[Success]:
    """`counterfactual_success` for every combination of the given eps, steps and step sizes."""
    return [counterfactual_success(model, images, labels, names, eps=e, steps=s, step_size=a, **kw)
            for e, s, a in itertools.product(eps, steps, step_size)]
