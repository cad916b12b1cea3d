"""PGD engine vs a plain reference loop of the same math (L2, untargeted CE), same model and inputs.

    python benchmarks/pgd.py [--quick] [--device cpu|cuda] [--archs wrn-16-4 wrn-34-10]

The reference is what most research code writes: eval mode, `loss.backward()` with parameter
gradients left on, read `x.grad`, normalized step, project, clamp. Ours: `dat_core.pgd`.
ratio = reference time / our time (above 1: ours is faster). `same_result`: equal to 1e-5 after one step
(`first_step_max_diff`); `final_max_diff` is the largest pixel difference after all steps (float rounding,
amplified by each normalized step).
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from common import arch_spec, device_name, emit, machine, median_time

from dat_core import build_model, pgd, threat_model
from dat_core.cli_types import int_in


def reference_pgd(model, x, y, eps, step_size, steps):
    model.eval()
    x0, xt = x.clone(), x.clone()
    for _ in range(steps):
        xt.requires_grad_(True)
        loss = F.cross_entropy(model(xt), y)
        loss.backward()
        g = xt.grad
        g = g / (g.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)
        xt = xt.detach() + step_size * g
        delta = xt - x0
        delta = delta * (eps / (delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)).clamp(max=1)
        xt = (x0 + delta).clamp(0, 1)
    model.zero_grad(set_to_none=True)
    return xt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small case, under a minute on a 2-core CPU")
    p.add_argument("--device", type=device_name, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda or cuda:N (default: cuda where there is one)")
    p.add_argument("--archs", nargs="+", type=lambda a: arch_spec(a, sized=False), default=None,
                   help="architectures at 32 px (default: wrn-16-4 wrn-34-10; wrn-16-2 with --quick)")
    p.add_argument("--batches", nargs="+", type=int_in(1), default=None, help="default: 1 128; 1 32 with --quick")
    p.add_argument("--steps", type=int_in(1), default=5, help="PGD steps (default: 5)")
    p.add_argument("--repeats", type=int_in(1), default=3, help="timings per median (default: 3)")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast in our engine (reference stays fp32)")
    args = p.parse_args()
    archs = args.archs or (["wrn-16-2"] if args.quick else ["wrn-16-4", "wrn-34-10"])
    batches = args.batches or ([1, 32] if args.quick else [1, 128])
    steps, repeats = args.steps, args.repeats
    device = torch.device(args.device)
    cases = []
    for arch in archs:
        model = build_model(arch).to(device).eval()
        for b in batches:
            torch.manual_seed(0)
            x = torch.rand(b, 3, 32, 32, device=device)
            y = torch.randint(0, 10, (b,), device=device)
            tm = threat_model("L2", 0.5, 0.1)
            ours = median_time(lambda: pgd(model, x, y, tm, steps, "ce", autocast=args.bf16), repeats)
            ref = median_time(lambda: reference_pgd(model, x, y, 0.5, 0.1, steps), repeats)
            # same math, judged after one step; over more normalized steps the rounding differences of two
            # backward implementations grow (reported as final_max_diff)
            first, final = (None if args.bf16 else float((pgd(model, x, y, tm, n, "ce").x
                                                          - reference_pgd(model, x, y, 0.5, 0.1, n)).abs().max())
                            for n in (1, steps))
            case = {"arch": arch, "batch": b, "steps": steps, "ours_s_per_step": ours / steps,
                    "reference_s_per_step": ref / steps, "ours_images_per_s": b * steps / ours,
                    "reference_images_per_s": b * steps / ref, "ratio": ref / ours,
                    "same_result": None if first is None else first < 1e-5, "first_step_max_diff": first,
                    "final_max_diff": final}
            cases.append(case)
            diffs = "" if first is None else f"  max diff after 1 step {first:.2g}, after {steps}: {final:.2g}"
            print(f"{arch:10s} batch {b:4d}: ours {1e3 * ours / steps:8.2f} ms/step  "
                  f"reference {1e3 * ref / steps:8.2f} ms/step  ratio {ref / ours:5.2f}{diffs}")
    emit({"benchmark": "pgd", "device": str(device), "bf16": args.bf16, "machine": machine(), "cases": cases,
          "ratio": min(c["ratio"] for c in cases)})


if __name__ == "__main__":
    main()
