"""Class-conditional generation: PGD on the class logit from seed images (METHOD §4), seeded and reproducible.

eps = inf, per-sample L2-normalized steps, no noise (`dat_core.sampling.sample`); defaults scaled to
the model resolution (`default_steps`, `default_step_size`: step 0.2 and 33 steps at 32 px).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn as nn

from dat_core.data.seeds import DEFAULT_SEED_KIND, SEED_KINDS, seeds_for
from dat_core.energy import probabilities
from dat_core.pgd import OnStep, logits_at
from dat_core.runtime import check_seed
from dat_core.sampling import (
    default_step_size,
    default_steps,
    make_grid,
    sample,
    to_uint8,
)

from .image import ImageLike, to_model_input
from .params import MAX_STEPS, parse_int, resolve_targets, validate_params
from .trajectory import model_info

MAX_SAMPLES = 1024
MAX_PIXELS = MAX_SAMPLES * 64 * 64   # samples x H x W in one call: bounds PGD's batch memory at any resolution
MAX_FRAME_BYTES = 2 * 2**30          # recorded frames (float32 while PGD runs)


@dataclass
class Samples:
    """Generated images (class-major: all samples of targets[0] first) and their target confidences."""

    images: np.ndarray            # (N, 3, H, W) float32 in [0,1]
    targets: np.ndarray           # (N,) class index per sample
    confidences: np.ndarray       # (N,) p(target | x_T)
    class_names: list[str]
    n_per_class: int
    params: dict[str, Any] = field(default_factory=dict)   # seed, seeds, steps, step_size
    steps: np.ndarray | None = None                         # (F,) recorded step indices (record_every > 0)
    trajectory: np.ndarray | None = None                    # (F, N, H, W, 3) uint8 frames for scrubbing
    trajectory_confidences: np.ndarray | None = None        # (F, N) p(target) per recorded frame

    @cached_property
    def frames(self) -> np.ndarray:
        """(N, H, W, 3) uint8."""
        return to_uint8(torch.from_numpy(self.images))

    def grid(self, nrow: int | None = None, scale: int = 1, pad: int = 2) -> np.ndarray:
        """uint8 grid, `nrow` images per row (default: one row per class, or ~square when n_per_class == 1).
        Checked as the CLI checks them: nrow 0 drew a column, scale 1.5 scale 1, a negative pad a broadcast error."""
        if nrow is None:
            nrow = self.n_per_class if self.n_per_class > 1 else math.ceil(math.sqrt(len(self.images)))
        nrow, scale, pad = parse_int("nrow", nrow, 1), parse_int("scale", scale, 1, 64), parse_int("pad", pad, 0, 64)
        return make_grid(self.frames, nrow=nrow, pad=pad, scale=scale)

    def to_dict(self) -> dict[str, Any]:
        return {"params": dict(self.params), "class_names": list(self.class_names),
                "samples": [{"index": i, "target": int(t), "target_name": self.class_names[int(t)],
                             "confidence": float(f"{c:.7g}")}
                            for i, (t, c) in enumerate(zip(self.targets, self.confidences))]}


def make_seeds(kind: str | ImageLike, targets: Sequence[int], image_size: int, seed: int = 0,
               class_names: Sequence[str] | None = None) -> torch.Tensor:
    """One CPU seed image per target class index: a named kind (`dat_core.data.seeds.SEED_KINDS`: "bank" =
    out-of-distribution photos, how DAT samples; "gaussian" = class-conditional Gaussian; "uniform" /
    "lowfreq" noise), or copies of a given image."""
    if isinstance(kind, str) and kind in SEED_KINDS:
        return seeds_for(kind, list(targets), image_size, torch.Generator().manual_seed(seed), class_names)
    return to_model_input(kind, image_size).expand(len(targets), -1, -1, -1).contiguous()


def generate(model: nn.Module, targets: int | str | Sequence[int | str] = "all", n_per_class: int = 1,
             seed: int = 0, seeds: str | ImageLike = DEFAULT_SEED_KIND, steps: int | None = None,
             step_size: float | None = None, record_every: int = 0, autocast: bool = False,
             on_step: OnStep | None = None) -> Samples:
    """`n_per_class` samples for each target class by PGD ascent on f(x)[y] from seeds.

    Seeds (default: the shipped bank of out-of-distribution photos, METHOD §4) are drawn with a CPU
    `torch.Generator(seed)` and then move to the model's device, so a seed gives the same samples on every run.
    `record_every=k > 0` also keeps every k-th frame. `on_step` is `dat_core.pgd`'s per-step hook (progress,
    Cancel).
    """
    size, names, device = model_info(model)
    tgt = resolve_targets(targets, names)
    n_per_class = parse_int("n_per_class", n_per_class, 1)
    n = n_per_class * len(tgt)
    if n > MAX_SAMPLES or n * size * size > MAX_PIXELS:
        raise ValueError(f"at most {min(MAX_SAMPLES, MAX_PIXELS // (size * size))} samples of {size} px per call; "
                         f"asked for {n_per_class} x {len(tgt)}")
    seed = check_seed(seed)
    record_every = parse_int("record_every", record_every, 0, MAX_STEPS)
    if isinstance(seeds, str) and seeds not in SEED_KINDS and not Path(seeds).expanduser().exists():
        raise ValueError(f"seeds must be one of {', '.join(SEED_KINDS)} or an existing image file; "
                         f"got {seeds[:60]!r}")
    if n_per_class > 1 and not (isinstance(seeds, str) and seeds in SEED_KINDS):
        raise ValueError("an image seed starts every sample of a class at the same point, so more than one sample "
                         "per class would repeat the first: ask for 1 per class, or use a seed kind")
    p = validate_params("L2", math.inf, default_step_size(size) if step_size is None else step_size,
                        default_steps(size) if steps is None else steps)
    frames = p["steps"] // record_every + 2 if record_every else 0
    if frames * n * 3 * size * size * 4 > MAX_FRAME_BYTES:
        raise ValueError(f"recording every {record_every} step(s) of {p['steps']} for {n} samples would hold "
                         f"{frames * n * 3 * size * size * 4 / 2**30:.1f} GB of frames (at most "
                         f"{MAX_FRAME_BYTES >> 30} GB): record less often, or ask for fewer samples or steps")
    y = torch.tensor(tgt, device=device).repeat_interleave(n_per_class)
    x = make_seeds(seeds, y.tolist(), size, seed, names).to(device)
    res = sample(model, x, y, steps=p["steps"], step_size=p["step_size"],
                 record_every=record_every, autocast=autocast, on_step=on_step)
    final_logits = res.logits[-1] if res.logits is not None else logits_at(model, res.x, autocast)
    conf = probabilities(final_logits).gather(1, y[:, None]).squeeze(1).cpu().numpy()
    traj = traj_conf = rec_steps = None
    if res.frames is not None:
        f, n = res.frames.shape[:2]
        traj = to_uint8(res.frames.flatten(0, 1)).reshape(f, n, size, size, 3)
        traj_conf = probabilities(res.logits.flatten(0, 1)).gather(1, y.repeat(f)[:, None]).view(f, n).cpu().numpy()
        rec_steps = np.asarray(res.steps, dtype=np.int64)
    params = {"seed": seed, "seeds": seeds if isinstance(seeds, str) else "image",
              "steps": p["steps"], "step_size": p["step_size"]}
    return Samples(images=res.x.float().cpu().numpy(), targets=y.cpu().numpy(), confidences=conf,
                   class_names=names, n_per_class=n_per_class, params=params, steps=rec_steps,
                   trajectory=traj, trajectory_confidences=traj_conf)
