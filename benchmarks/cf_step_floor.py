"""What one counterfactual PGD step costs per pair, and how much of it the convolutions alone take.

    PYTHONPATH=.:benchmarks python benchmarks/cf_step_floor.py [--model default] [--batches 64 256 1024]

The #21 benchmark is steps x pairs of these (1,000 images x 9 targets x 100 steps = 900,000), so the
convolution time per sample-step times that count is a floor no scheduling can beat on this machine.
Per batch size: the median time of 10 compiled `pgd` steps (the benchmark's setting: bf16 where native,
channels-last weights), per pair; then one eager profile of 5 steps at the middle batch size, split into
convolution forward (`aten::mkldnn_convolution` / `aten::cudnn_convolution`), convolution backward and the rest.
`macs`: multiply-adds of one forward (convolutions and linear layers, counted with hooks).
"""

from __future__ import annotations

import argparse

import torch
from common import device_name, emit, machine, median_time
from torch.profiler import ProfilerActivity, profile

from dat_core.cli_types import int_in
from dat_core.loading import load_model
from dat_core.pgd import pgd, threat_model
from dat_core.runtime import channels_last, native_bf16
from explain.cli_options import compiled_for_cli
from explain.trajectory import model_info

CONV_FORWARD = ("aten::mkldnn_convolution", "aten::cudnn_convolution", "aten::_convolution_mode")


def forward_macs(model: torch.nn.Module, size: int, device: torch.device) -> int:
    total = 0

    def count(mod, _inp, out):
        nonlocal total
        if isinstance(mod, torch.nn.Conv2d):
            total += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        elif isinstance(mod, torch.nn.Linear):
            total += out.numel() * mod.in_features

    hooks = [m.register_forward_hook(count) for m in model.modules()]
    with torch.no_grad():
        model(torch.rand(1, 3, size, size, device=device))
    for h in hooks:
        h.remove()
    return total


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default", help="default|zoo name|DIR|REPO_ID (default: %(default)s)")
    p.add_argument("--batches", type=int_in(1), nargs="+", default=[64, 256, 1024],
                   help="pairs per PGD batch, one timing each; the middle one is profiled (default: 64 256 1024)")
    p.add_argument("--device", type=device_name, default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--steps", type=int_in(1), default=10, help="PGD steps per timing (default: %(default)s)")
    p.add_argument("--compile", default="on", choices=("on", "off", "auto"), help="the timed steps (default: on, "
                   "as the benchmark runs where a compiler exists)")
    args = p.parse_args()
    device = torch.device(args.device)
    model = channels_last(load_model(args.model, device=device))
    size, bf16 = model_info(model)[0], native_bf16(device)
    threat = threat_model("L2", 5.0, 0.1)
    fast = compiled_for_cli(model, args.compile)   # as the benchmark runs it (every shape compiles when met)
    per_pair = {}
    for b in args.batches:
        x, y = torch.rand(b, 3, size, size, device=device), torch.randint(0, 10, (b,), device=device)
        seconds = median_time(lambda: pgd(fast, x, y, threat, args.steps, "target_logit", autocast=bf16), 3)
        per_pair[b] = seconds / args.steps / b * 1e3
        print(f"batch {b}: {per_pair[b]:.3f} ms per sample-step", flush=True)
    b = args.batches[len(args.batches) // 2]
    x, y = torch.rand(b, 3, size, size, device=device), torch.randint(0, 10, (b,), device=device)
    pgd(model, x, y, threat, 2, "target_logit", autocast=bf16)
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        pgd(model, x, y, threat, 5, "target_logit", autocast=bf16)
    self_ms = {e.key: e.self_device_time_total if device.type == "cuda" else e.self_cpu_time_total
               for e in prof.key_averages()}
    scale = 1e-3 / (5 * b)                                   # microseconds over 5 steps -> ms per sample-step
    conv_fwd = sum(v for k, v in self_ms.items() if k in CONV_FORWARD) * scale
    conv_bwd = self_ms.get("aten::convolution_backward", 0.0) * scale
    total = sum(self_ms.values()) * scale
    macs = forward_macs(model, size, device)
    print(f"eager, batch {b}: {total:.3f} ms per sample-step, convolutions {conv_fwd:.3f} forward + {conv_bwd:.3f} "
          f"backward; {macs / 1e6:.1f} M multiply-adds per forward", flush=True)
    emit({"benchmark": "cf_step_floor", **machine(), "model": args.model, "bf16": bf16, "steps": args.steps,
          "compile": args.compile, "compiled_ms_per_sample_step": per_pair, "eager_profile_batch": b,
          "eager_ms_per_sample_step": round(total, 4), "conv_forward_ms": round(conv_fwd, 4),
          "conv_backward_ms": round(conv_bwd, 4), "forward_macs": macs,
          "conv_gflops": round(4 * macs / (conv_fwd + conv_bwd) / 1e6, 1)})


if __name__ == "__main__":
    main()
