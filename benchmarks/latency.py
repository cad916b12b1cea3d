"""Latency of one counterfactual trajectory (batch 1, `explain.counterfactual`), eager vs torch.compile.

    python benchmarks/latency.py [--archs wrn-16-2 resnet50@224 convnext-large-convstem@256] [--steps 60]
                                 [--compile both|on|off] [--device cuda] [--repeats 5]

Random weights (speed does not depend on them); `arch@size` sets the input resolution. Per arch: one PGD
step, the full trajectory (eager and compiled, same inputs), the compile time including warm-up, and
`ratio_fast_path` = eager / compiled. Archs the registry does not know are reported as skipped.
"""

from __future__ import annotations

import argparse
import time

import torch
from common import arch_spec, device_name, emit, machine, median_time

import explain
from dat_core import build_model
from dat_core.cli_types import int_in
from dat_core.models import find_arch
from dat_core.runtime import FastPath, channels_last, use_autocast


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--archs", nargs="+", default=["wrn-16-2"],
                   help="ARCH or ARCH@SIZE; one the registry does not know is reported as skipped (default: wrn-16-2)")
    p.add_argument("--steps", type=int_in(1), default=60, help="PGD steps of the trajectory (default: %(default)s)")
    p.add_argument("--compile", choices=("both", "on", "off"), default="both",
                   help="time eager (off), torch.compile (on) or both and their ratio (default: %(default)s)")
    p.add_argument("--device", type=device_name, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda or cuda:N (default: cuda where there is one)")
    p.add_argument("--autocast", choices=("auto", "on", "off"), default="auto",
                   help="bf16 autocast: auto = where the device has native bf16 (default: %(default)s)")
    p.add_argument("--repeats", type=int_in(1), default=5, help="timings per median (default: %(default)s)")
    args = p.parse_args()
    for spec in args.archs:   # every size before the first runs (an unknown name is skipped, as documented)
        try:
            arch_spec(spec, known=False)
        except argparse.ArgumentTypeError as e:
            p.error(f"argument --archs: {e}")
    device = torch.device(args.device)
    autocast = use_autocast(args.autocast, device)
    rows = {}
    for spec in args.archs:
        arch, _, size = spec.partition("@")
        try:
            find_arch(arch)
        except ValueError:
            rows[spec] = {"skipped": "unknown architecture"}
            continue
        torch.manual_seed(0)
        model = build_model(arch, num_classes=10, **({"image_size": int(size)} if size else {}))
        model = channels_last(model.to(device).eval())
        s = int(model.config["image_size"])
        image = torch.rand(3, s, s)

        def run(m):
            return explain.counterfactual(m, image, 1, steps=args.steps, autocast=autocast)

        def one_step(m):
            return explain.counterfactual(m, image, 1, steps=1, autocast=autocast)

        row = {"image_size": s}
        if args.compile in ("both", "off"):
            row["step_eager_s"] = median_time(lambda: one_step(model), args.repeats)
            row["trajectory_eager_s"] = median_time(lambda: run(model), args.repeats)
        if args.compile in ("both", "on"):
            start = time.perf_counter()
            fast = FastPath(model, enabled=True, warmups=[one_step, run], background=False, name=arch)
            row["compile_s"] = time.perf_counter() - start
            row["compiled"] = fast.compiled
            if fast.error is not None:
                row["compile_error"] = f"{type(fast.error).__name__}: {str(fast.error).splitlines()[0][:200]}"
            row["step_compiled_s"] = median_time(lambda: one_step(fast.model), args.repeats)
            row["trajectory_compiled_s"] = median_time(lambda: run(fast.model), args.repeats)
            if "trajectory_eager_s" in row:
                row["ratio_fast_path"] = row["trajectory_eager_s"] / row["trajectory_compiled_s"]
        rows[spec] = row
        print(spec, {k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}, flush=True)
    emit({"benchmark": "latency", "device": str(device), "steps": args.steps, "autocast": autocast,
          "machine": machine(), "archs": rows})


if __name__ == "__main__":
    main()
