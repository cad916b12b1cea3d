"""Cost of the classification-batch augmentations per batch, and what it adds to one training step.

    python benchmarks/augment.py [--batch 128] [--size 32] [--repeats 20] [--step]

Times, on one float [0,1] batch: our crop + flip, crop + flip + Cutout, and `autoaugment_cutout`
(crop + flip + the official CIFAR-10 AutoAugment policy, one sub-policy per image, + Cutout); beside them
kornia's own `AutoAugment("cifar10")` on the whole batch (one sub-policy per batch, kornia's magnitudes), the
cost of a batched library AutoAugment for reference. With `--step`: one stage-1 step of the CPU
recipe (train/configs/cifar10-wrn16-2-cpu-stage1.toml: wrn-16-2, 2 PGD steps, autocast auto) for scale.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import torch
from common import emit, machine, median_time

from dat_core.cli_types import int_in
from dat_core.data.augment import augment


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--batch", type=int_in(1), default=128, help="images per batch (default: %(default)s)")
    p.add_argument("--size", type=int_in(3), default=32, help="image side (AutoAugment's 3x3 filters need 3+)")
    p.add_argument("--repeats", type=int_in(1), default=20,
                   help="timed rounds per median, after 3 untimed ones (default: %(default)s)")
    p.add_argument("--step", action="store_true", help="also time one stage-1 step of the CPU recipe")
    args = p.parse_args()
    from kornia.augmentation.auto import AutoAugment

    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.batch, 3, args.size, args.size, generator=g)
    kornia_batch = AutoAugment("cifar10")
    variants = {name: (lambda name=name: augment(name, x, g))
                for name in ("crop_flip", "crop_flip_cutout", "autoaugment_cutout")}
    variants["kornia AutoAugment per batch"] = lambda: kornia_batch(x)
    # round robin, one call of each per round: a shared machine's load drifts alike over all variants
    samples: dict[str, list[float]] = {name: [] for name in variants}
    for r in range(args.repeats + 3):
        for name, fn in variants.items():
            t = time.perf_counter()
            fn()
            if r >= 3:  # the first rounds warm up (kornia's first call builds its modules)
                samples[name].append(time.perf_counter() - t)
    timings = {name: statistics.median(v) for name, v in samples.items()}
    ms = {k: round(v * 1e3, 2) for k, v in timings.items()}
    result = {"benchmark": "augment", "batch": list(x.shape), "ms_per_batch": ms,
              "autoaugment_cutout_over_crop_flip_cutout": round(timings["autoaugment_cutout"]
                                                                / timings["crop_flip_cutout"], 1),
              "load_average": [round(v, 2) for v in os.getloadavg()], "machine": machine()}
    if args.step:
        from train_step import Repeat, ours

        from dat_core import build_model
        from dat_core.runtime import native_bf16
        from dat_core.training.config import load_config
        from dat_core.training.stage1 import AdversarialTraining

        bf16 = native_bf16(torch.device("cpu"))  # the recipe's autocast "auto", resolved here
        cfg = load_config("train/configs/cifar10-wrn16-2-cpu-stage1.toml", batch_size=args.batch,
                          autocast=str(bf16).lower())
        result["stage1_step_bf16"] = bf16
        model = build_model("wrn-16-2", num_classes=10, image_size=args.size).to(memory_format=torch.channels_last)
        y = torch.randint(10, (args.batch,), generator=g)
        step = ours(AdversarialTraining, cfg, model, {"clf": Repeat((x, y))}, True)
        result["stage1_step_ms"] = round(median_time(step, max(3, args.repeats // 4), warmup=1) * 1e3, 1)
        extra = timings["autoaugment_cutout"] - timings["crop_flip_cutout"]
        result["autoaugment_extra_fraction_of_step"] = round(extra * 1e3 / result["stage1_step_ms"], 3)
    result["load_average_after"] = [round(v, 2) for v in os.getloadavg()]
    emit(result)


if __name__ == "__main__":
    main()
