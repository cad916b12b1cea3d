"""Pure metric math on scores, confidences and energies (no models here; see evaluate.py).

Inputs may be torch tensors on any device, numpy arrays or lists; results are Python floats.
"""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np
import torch

ENERGY_QUANTILES = (0.01, 0.05, 0.1, 0.25, 0.5, 0.75, 0.9, 0.95, 0.99)


def _as_cpu_tensor(values: Any, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    if isinstance(values, torch.Tensor):
        return values.detach().to("cpu", dtype)
    return torch.as_tensor(np.asarray(values), dtype=dtype)


def roc_auc(pos_scores: Any, neg_scores: Any) -> float:
    """Area under the ROC curve = P(score_pos > score_neg) + 0.5 P(score_pos == score_neg).

    Rank-based (Mann-Whitney U) with average ranks for ties: O(n log n), exact, no sklearn.
    Positives are the class whose scores should be *larger* (e.g. in-distribution with score -E(x)).
    Scores are moved to the CPU in float64 first: one small copy, and the float result forces a
    device sync anyway (the stage-2 curriculum calls this every step on 2 x B scores).
    """
    pos = _as_cpu_tensor(pos_scores).flatten()
    neg = _as_cpu_tensor(neg_scores).flatten()
    n_pos, n_neg = pos.numel(), neg.numel()
    if n_pos == 0 or n_neg == 0:
        raise ValueError(f"roc_auc needs at least one score per class, got {n_pos} pos / {n_neg} neg")
    scores = torch.cat([pos, neg])
    if torch.isnan(scores).any():
        raise ValueError("roc_auc: scores contain NaN")
    values, order = torch.sort(scores)
    _, inverse, counts = torch.unique_consecutive(values, return_inverse=True, return_counts=True)
    ends = counts.cumsum(0).to(torch.float64)          # 1-based rank of each tie group's last member
    mean_rank = ends - (counts.to(torch.float64) - 1) / 2
    pos_rank_sum = mean_rank[inverse][order < n_pos].sum().item()
    u = pos_rank_sum - n_pos * (n_pos + 1) / 2
    return float(u / (n_pos * n_neg))


def _confidence_and_correct(probs_or_conf: Any, correct: Any) -> tuple[torch.Tensor, torch.Tensor]:
    probs = _as_cpu_tensor(probs_or_conf)
    target = correct.detach().cpu() if isinstance(correct, torch.Tensor) else torch.as_tensor(np.asarray(correct))
    if probs.dim() == 2:  # (N, K) probabilities: confidence = max prob, prediction = argmax
        conf, pred = probs.max(dim=1)
        if target.dtype == torch.bool:
            hit = target
        else:  # integer class labels; one past the classes was a wrong prediction, silently
            if target.numel() and (target.min() < 0 or target.max() >= probs.shape[1]):
                raise ValueError(f"labels out of range: expected 0..{probs.shape[1] - 1}")
            hit = pred == target.long()
    elif probs.dim() == 1:
        conf, hit = probs, target.bool() if target.dtype == torch.bool else target != 0
    else:
        raise ValueError(f"expected (N,) confidences or (N, K) probabilities, got {tuple(probs.shape)}")
    if hit.shape != conf.shape:
        raise ValueError(f"{conf.numel()} confidences but {hit.numel()} correctness values / labels")
    if conf.numel() == 0:   # an ECE of nothing read as perfectly calibrated
        raise ValueError("calibration needs at least one confidence")
    if conf.numel() and (conf.min() < 0 or conf.max() > 1 or torch.isnan(conf).any()):
        raise ValueError("confidences must lie in [0, 1]")
    return conf, hit.to(torch.float64)


def expected_calibration_error(probs_or_conf: Any, correct: Any, n_bins: int = 15
                               ) -> tuple[float, dict[str, list]]:
    """ECE = sum_b (n_b / N) |accuracy_b - confidence_b| over equal-width confidence bins (L1 norm).

    `probs_or_conf`: (N, K) class probabilities, or (N,) confidences of the predicted class.
    `correct`: (N,) bools (prediction correct) or, with (N, K) probabilities, integer labels.
    Bin b holds confidences in [b/n, (b+1)/n); the last bin also holds exactly 1.0. This equals
    torchmetrics `CalibrationError(norm="l1")` except that torchmetrics gives confidence == 1.0 a
    bin of its own. Returns (ece, bins) with JSON-safe per-bin lists `lower`, `upper`,
    `confidence`, `accuracy` (0.0 for empty bins) and `count`, ready for `plot_reliability`.
    Differs on purpose from the InNOutRobustness code DAT builds on (`TemperatureWrapper._get_ece_inner`: 20
    bins of (lower, upper]; DAT's own calibration script is not released): 15 bins, as Guo et al. and torchmetrics.
    """
    if n_bins < 1:
        raise ValueError(f"n_bins must be >= 1, got {n_bins}")
    conf, hit = _confidence_and_correct(probs_or_conf, correct)
    edges = torch.linspace(0, 1, n_bins + 1, dtype=torch.float64)
    index = (torch.bucketize(conf, edges, right=True) - 1).clamp_(0, n_bins - 1)
    count = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, torch.ones_like(conf))
    conf_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, conf)
    hit_sum = torch.zeros(n_bins, dtype=torch.float64).index_add_(0, index, hit)
    safe = count.clamp(min=1)
    mean_conf, mean_acc = conf_sum / safe, hit_sum / safe
    ece = float(((count / max(conf.numel(), 1)) * (mean_acc - mean_conf).abs()).sum())
    bins = {"lower": edges[:-1].tolist(), "upper": edges[1:].tolist(),
            "confidence": mean_conf.tolist(), "accuracy": mean_acc.tolist(),
            "count": [int(c) for c in count.tolist()]}
    return ece, bins


def fit_temperature(logits: Any, labels: Any, bounds: tuple[float, float] = (1e-3, 1e3)) -> float:
    """The temperature T in `bounds` that minimizes the negative log-likelihood of softmax(logits / T) on
    held-out labels (temperature scaling, Guo et al. 2017). One positive scale cannot change which class
    wins, so accuracy stays as it is; only the confidence is corrected. The NLL is convex in 1/T, hence
    unimodal in log T: a golden-section search finds its minimum to float precision, with no gradient to
    vanish where the model is already (nearly) certain. A result at a bound means the optimum lies beyond.
    Differs on purpose from InNOutRobustness's `compute_temperature`, which picks the T of least 20-bin ECE on a grid
    of log T in [-3, 1]: the NLL is the standard criterion, has no bins to overfit and no grid to bound T."""
    z = _as_cpu_tensor(logits)
    y = _as_cpu_tensor(labels, torch.long).flatten()
    if z.dim() != 2 or z.shape[0] == 0 or z.shape[0] != y.numel():
        raise ValueError(f"fit_temperature needs (N, K) logits and N labels, got {tuple(z.shape)} and {y.numel()}")
    if not torch.isfinite(z).all():
        raise ValueError("fit_temperature: logits must be finite")
    if y.min() < 0 or y.max() >= z.shape[1]:
        raise ValueError(f"labels must lie in 0..{z.shape[1] - 1}")
    if not 0 < bounds[0] < bounds[1] < math.inf:
        raise ValueError(f"bounds must satisfy 0 < low < high < inf, got {bounds}")

    def nll(log_t: float) -> float:
        return float(torch.nn.functional.cross_entropy(z * math.exp(-log_t), y))

    a, b = math.log(bounds[0]), math.log(bounds[1])
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = nll(c), nll(d)
    while b - a > 1e-12:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = nll(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = nll(d)
    return math.exp((a + b) / 2)


def _quantile_key(q: float) -> str:
    return f"{q:g}"


def energy_quantiles(energies: Any, qs: Sequence[float] = ENERGY_QUANTILES) -> dict[str, float]:
    """Quantiles of E(x) (linear interpolation), keyed by `str(q)` ("0.01", "0.5", ...) for config.json."""
    e = _as_cpu_tensor(energies).flatten().numpy()
    if e.size == 0:
        raise ValueError("energy_quantiles needs at least one energy")
    if not np.isfinite(e).all():
        raise ValueError("energy_quantiles needs finite energies; got NaN or inf")
    if not all(0 <= q <= 1 for q in qs):
        raise ValueError(f"quantile levels must lie in [0, 1], got {qs}")
    return {_quantile_key(q): float(v) for q, v in zip(qs, np.quantile(e, qs))}


def energy_percentile(e: Any, quantiles: Mapping[Any, float]) -> float | np.ndarray:
    """Percentile rank (0-100) of energy `e` among the reference images whose quantiles are stored.

    Returns p = 100 * P(E(reference) <= e), interpolated linearly between stored quantiles. LOWER
    energy = MORE typical, so an image at percentile p is more typical than (100 - p)% of the
    reference images (p = 5: "more typical than 95% of validation images"). Outside the stored range
    the result saturates at the extreme stored levels (e.g. 1 and 99), since nothing is known beyond.
    Scalars give a float; arrays/tensors give a numpy array.
    """
    if not quantiles:
        raise ValueError("no stored energy quantiles")
    levels = np.array([float(q) for q in quantiles], dtype=np.float64)
    values = np.array(list(quantiles.values()), dtype=np.float64)
    order = np.argsort(levels)
    levels, values = levels[order], np.maximum.accumulate(values[order])  # keep values non-decreasing
    x = _as_cpu_tensor(e).numpy()
    # Ties among stored values (a flat energy): report the middle of the tied levels.
    p_lo = np.interp(x, values, levels)
    p_hi = -np.interp(-x, -values[::-1], -levels[::-1])
    p = 50.0 * (p_lo + p_hi)
    return float(p) if p.ndim == 0 else p
