"""Captum attributions of a class logit, beside the counterfactual difference x_T - x_0.

Every method explains the logit f(x)[c] = -E(x, c) of one class c at one image. Maps are signed
(H, W) arrays: the per-channel attributions summed over the colour channels (positive = raises
f(x)[c]); `abs=True` sums absolute values instead. Memory is bounded by `internal_batch_size`,
the number of images in any one forward/backward, whatever the method's sample count.
Random methods (SmoothGrad, GradientShap: Captum's estimators, drawn here) are deterministic under
`seed` at any `internal_batch_size`, with the same draws on every device (one CPU generator); the
global torch and numpy random states are left as they were.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn as nn
from captum.attr import (
    IntegratedGradients,
    Occlusion,
    Saliency,
)

from dat_core.models import class_names_of
from dat_core.pgd import attack_mode
from dat_core.runtime import check_seed, memory_format, model_device

from .image import check_frames
from .params import parse_int, resolve_class
from .plots import SIGNED_CMAP, new_figure, normalize_map, to_hwc

METHODS = ("saliency", "integrated_gradients", "smoothgrad", "gradient_shap", "occlusion")
TITLES = {
    "saliency": "gradient (saliency)",
    "integrated_gradients": "integrated gradients",
    "smoothgrad": "SmoothGrad",
    "gradient_shap": "GradientSHAP",
    "occlusion": "occlusion",
}
DEFAULT_SAMPLES = {"integrated_gradients": 32, "smoothgrad": 16, "gradient_shap": 16}
"""Default `n_samples` per method: IG path steps, SmoothGrad noisy copies, GradientSHAP samples."""

SMOOTHGRAD_STDEV = 0.1   # noise std in [0,1] pixel units (~10% of the range, as the SmoothGrad paper suggests)
SHAP_NOISE_BASELINES = 4  # GradientSHAP baselines: black + this many uniform-noise images


def _forward_fn(model: nn.Module, autocast: bool):
    """Captum forward function: the model on input in its weights' layout (`memory_format`), optionally
    under bf16 autocast; logits always come back as float32."""
    layout = memory_format(model)

    def forward(x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(x.device.type, dtype=torch.bfloat16, enabled=autocast):
            return model(x.contiguous(memory_format=layout)).float()
    return forward


def _occlusion_geometry(size: int) -> tuple[int, int]:
    """Window 4 / stride 2 at 32 px, scaled with the image side (28 / 14 at 224 px)."""
    return max(1, round(4 * size / 32)), max(1, round(2 * size / 32))


def _mean_gradient(f, x: torch.Tensor, target: int, n: int, batch: int, draw) -> torch.Tensor:
    """Mean over n sample points of grad f(p)[target] * w, `batch` points per forward/backward; `draw(i, k)` gives
    points i..i+k-1 as (p, w). The draws depend on the sample index only, so the chunking cannot change the map."""
    total = torch.zeros_like(x[0])
    for i in range(0, n, batch):
        p, w = draw(i, min(batch, n - i))
        p = p.requires_grad_(True)
        (g,) = torch.autograd.grad(f(p)[:, target].sum(), p)
        total += (g.float() * w).sum(dim=0)
    return (total / n)[None]


def _smoothgrad(f, x: torch.Tensor, target: int, n: int, batch: int, seed: int) -> torch.Tensor:
    """Captum's NoiseTunnel(Saliency) smoothgrad: the mean gradient at x + N(0, SMOOTHGRAD_STDEV^2) noise. Each
    copy's noise is its own draw of one CPU generator: NoiseTunnel draws a chunk at a time, and at odd image sizes
    (33, 299 px) torch's normal stream then shifts with the chunk, so the map changed with internal_batch_size."""
    gen = torch.Generator().manual_seed(seed)

    def draw(i: int, k: int) -> tuple[torch.Tensor, float]:
        noise = torch.stack([torch.randn(x.shape[1:], generator=gen) for _ in range(k)]).to(x.device)
        return x + SMOOTHGRAD_STDEV * noise, 1.0
    return _mean_gradient(f, x, target, n, batch, draw)


def _gradient_shap(f, x: torch.Tensor, target: int, n: int, batch: int, seed: int) -> torch.Tensor:
    """Captum's GradientShap estimator (stdevs 0): the mean of grad f(p)[target] * (x - b) at p = b + a (x - b),
    b drawn from {black, noise images}, a ~ U(0, 1), all drawn from one CPU generator up front: Captum draws per
    call, so chunking its calls gave another map for every `internal_batch_size`."""
    gen = torch.Generator().manual_seed(seed)
    noise = torch.rand(SHAP_NOISE_BASELINES, *x.shape[1:], generator=gen).to(x.device)
    baselines = torch.cat([torch.zeros_like(x), noise])
    pick = torch.randint(len(baselines), (n,), generator=gen).to(x.device)
    alpha = torch.rand(n, generator=gen).to(x.device).view(-1, 1, 1, 1)

    def draw(i: int, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        b = baselines[pick[i:i + k]]
        return b + alpha[i:i + k] * (x - b), x - b
    return _mean_gradient(f, x, target, n, batch, draw)


def attribute(model: nn.Module, x: torch.Tensor, target: int | str, method: str, *, abs: bool = False,
              internal_batch_size: int = 32, n_samples: int | None = None, seed: int = 0,
              autocast: bool = False) -> np.ndarray:
    """Attribution map (H, W) float32 of the logit f(x)[target] for one image x (1, 3, H, W) in [0,1]; `target`
    is a class index or name, checked against the model's classes (its config, else its number of outputs).

    saliency              d f / dx.
    integrated_gradients  baseline black (zeros), `n_samples` Gauss-Legendre steps (default 32).
    smoothgrad            as NoiseTunnel(Saliency): mean gradient over `n_samples` (16) copies with
                          N(0, 0.1^2) pixel noise.
    gradient_shap         `n_samples` (16) random points between x and a baseline drawn from
                          {black, 4 uniform-noise images} (seeded).
    occlusion             f(x) - f(x with a black window), window 4x4 stride 2 at 32 px (scaled).

    `autocast=True` runs forwards/backwards in bf16 (about 2x faster on this CPU; maps get bf16 noise).
    """
    if method not in METHODS:
        raise ValueError(f"unknown attribution method {method!r}; use one of {METHODS}")
    config = getattr(model, "config", None) or {}
    size = config.get("image_size")
    if not isinstance(x, torch.Tensor):
        raise ValueError(f"x must be a torch tensor (1, 3, H, W), got {type(x).__name__} (explain.to_model_input "
                         "makes one from a path, an array or a PIL image)")
    shape = tuple(x.shape)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or tuple(x.shape[:2]) != (1, 3) or (size is not None and tuple(x.shape[2:]) != (size, size)):
        raise ValueError(f"x must be one RGB image (1, 3, {size or 'H'}, {size or 'W'}), got {shape} "
                         "(explain.to_model_input resizes and crops one)")
    if not x.is_floating_point() or not bool(torch.isfinite(x).all()) or x.min() < 0 or x.max() > 1:
        raise ValueError("x must be a float image with finite values in [0,1] (explain.to_model_input makes one)")
    internal_batch_size = parse_int("internal_batch_size", internal_batch_size, 1, 1 << 20)
    if not isinstance(abs, bool):
        raise ValueError(f"abs must be True or False, got {abs!r}")
    seed = check_seed(seed)
    n = DEFAULT_SAMPLES.get(method, 1) if n_samples is None else parse_int("n_samples", n_samples, 1, 1 << 20)
    device = model_device(model)
    x = x.detach().float().to(device).clone().requires_grad_(True)  # Captum wants a leaf needing grad
    f = _forward_fn(model, autocast)
    if "num_classes" in config:
        names = class_names_of(config)
    else:  # any classifier: one forward tells how many classes it has
        with torch.no_grad(), attack_mode(model):
            names = [str(i) for i in range(int(f(x).shape[1]))]
    target = resolve_class(target, names)

    with attack_mode(model), torch.enable_grad():
        if method == "saliency":
            a = Saliency(f).attribute(x, target=target, abs=False)
        elif method == "integrated_gradients":
            a = IntegratedGradients(f).attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=n,
                                                 internal_batch_size=internal_batch_size)
        elif method == "smoothgrad":
            a = _smoothgrad(f, x.detach(), target, n, internal_batch_size, seed)
        elif method == "gradient_shap":
            a = _gradient_shap(f, x.detach(), target, n, internal_batch_size, seed)
        else:
            window, stride = _occlusion_geometry(x.shape[-1])
            a = Occlusion(f).attribute(x, sliding_window_shapes=(x.shape[1], window, window),
                                       strides=(x.shape[1], stride, stride), baselines=0.0,
                                       target=target, perturbations_per_eval=internal_batch_size)
    a = a.detach().float()[0]
    return (a.abs() if abs else a).sum(dim=0).cpu().numpy()


@dataclass
class AttributionResult:
    """Attribution maps at one trajectory frame for the source and target class, plus the difference.

    `source_maps[m]` / `target_maps[m]`: (H, W) signed maps of method m for the class predicted at x_0
    and for the counterfactual's target class, computed at frame `frame` (default x_0).
    `difference`: x_step - x_0 as a signed (H, W, 3) array; `difference_map` its channel sum.
    """

    methods: tuple[str, ...]
    source: int
    target: int
    class_names: list[str]
    frame: int
    step: int
    image: np.ndarray             # (H, W, 3) the attributed frame
    start: np.ndarray             # (H, W, 3) x_0
    counterfactual: np.ndarray    # (H, W, 3) x_step
    difference: np.ndarray        # (H, W, 3) x_step - x_0
    difference_map: np.ndarray    # (H, W) channel sum of the difference
    source_maps: dict[str, np.ndarray] = field(default_factory=dict)
    target_maps: dict[str, np.ndarray] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)  # wall time per method (both classes)


def attribute_trajectory(model: nn.Module, trajectory: Any, methods: tuple[str, ...] | list[str] | str = METHODS,
                         step: int = -1, frame: int = 0, **kwargs: Any) -> AttributionResult:
    """Run `methods` at trajectory frame `frame` for the source and the target class.

    trajectory: anything with `images` ((T+1, 3, H, W) float in [0,1]), `source`, `target`,
    `class_names`. `step` picks the frame of the difference x_step - x_0 (default: x_T).
    `kwargs` go to `attribute` (abs, internal_batch_size, n_samples, seed, autocast).
    """
    names = methods.split(",") if isinstance(methods, str) else list(methods)   # "saliency" is one method
    methods = tuple(dict.fromkeys(str(m).strip() for m in names if str(m).strip()))
    if not methods:
        raise ValueError(f"methods: name at least one of {METHODS}")
    for m in methods:
        if m not in METHODS:
            raise ValueError(f"unknown attribution method {m!r}; use one of {METHODS}")
    images = check_frames(trajectory.images, (getattr(model, "config", None) or {}).get("image_size"))
    n = images.shape[0]
    step, frame = (parse_int(name, i, -n, n - 1) for name, i in (("step", step), ("frame", frame)))
    step, frame = step % n, frame % n
    source, target = int(trajectory.source), int(trajectory.target)
    x = torch.from_numpy(images[frame:frame + 1])
    result = AttributionResult(
        methods=methods, source=source, target=target, class_names=list(trajectory.class_names),
        frame=frame, step=step, image=to_hwc(images[frame]), start=to_hwc(images[0]),
        counterfactual=to_hwc(images[step]), difference=to_hwc(images[step] - images[0]),
        difference_map=(images[step] - images[0]).sum(axis=0))
    for m in methods:
        t0 = time.perf_counter()
        result.source_maps[m] = attribute(model, x, source, m, **kwargs)
        result.target_maps[m] = (result.source_maps[m] if target == source
                                 else attribute(model, x, target, m, **kwargs))
        result.seconds[m] = time.perf_counter() - t0
    return result


def plot_attributions(result: AttributionResult, percentile: float = 99.0):
    """Grid: rows = predicted (source) class, target class; columns = images, then one per method.

    Column 0 shows the attributed frame (x_0 by default; row 1) and x_step (row 2); column 1 shows
    the signed counterfactual difference (x_step - x_0 summed over channels) in row 1 and the
    difference as an image (grey = no change) in row 2. Every map is scaled by its own `percentile`
    of |map| into [-1, 1], diverging colormap centred at 0 (red raises the class score, blue lowers
    it). Returns a Figure outside pyplot.
    """
    r = result
    names = r.class_names
    cols = 2 + len(r.methods)
    fig = new_figure(1.9 * cols, 4.4)
    axes = fig.subplots(2, cols, squeeze=False)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    frame_name = "x_0" if r.frame == 0 else f"frame {r.frame}"
    axes[0, 0].imshow(np.clip(r.image, 0, 1))
    axes[0, 0].set_title(f"{'start x_0' if r.frame == 0 else f'frame {r.frame}'}\n"
                         f"(predicted at x_0: {names[r.source]})", fontsize=8)
    axes[1, 0].imshow(np.clip(r.counterfactual, 0, 1))
    axes[1, 0].set_title(f"counterfactual (frame {r.step})\ntoward {names[r.target]}", fontsize=8)
    axes[0, 1].imshow(normalize_map(r.difference_map, percentile), cmap=SIGNED_CMAP, vmin=-1, vmax=1)
    axes[0, 1].set_title("change: counterfactual − x_0\n(red brighter, blue darker)", fontsize=8)
    scale = float(np.abs(r.difference).max()) or 1.0
    axes[1, 1].imshow(np.clip(0.5 + 0.5 * r.difference / scale, 0, 1))
    axes[1, 1].set_title("change in colour\n(grey = unchanged)", fontsize=8)
    for j, m in enumerate(r.methods, start=2):
        for i, (maps, c) in enumerate(((r.source_maps, r.source), (r.target_maps, r.target))):
            axes[i, j].imshow(normalize_map(maps[m], percentile), cmap=SIGNED_CMAP, vmin=-1, vmax=1)
            axes[i, j].set_title(f"{TITLES[m]}\nfor {names[c]} at {frame_name}", fontsize=8)
    axes[0, 2 if r.methods else 0].set_ylabel("predicted class", fontsize=8)
    axes[1, 2 if r.methods else 0].set_ylabel("target class", fontsize=8)
    fig.suptitle("attributions of the class score: red raises it, blue lowers it; each map scaled "
                 "to its own range", fontsize=9)
    fig.tight_layout()
    return fig
