"""One stage-2 (DAT) step and one stage-1 (AT) step: ours vs a plain reference of the official order.

    python benchmarks/train_step.py [--quick] [--arch wrn-16-4] [--batch 128] [--T 5] [--K 10]

The reference follows METHOD §3.3 literally, written plainly: contrastive PGD (eval mode), a separate
no-grad eval forward for the AUC monitor, the BCE forward on [real, contrastive] in train mode, the
classification PGD attack, the CE forward, backward, optimizer step; fp32, NCHW.
Ours is `dat_core.training.stage2.DualAdversarialTraining` / `dat_core.training.stage1.AdversarialTraining`
as the trainer
runs them, in three settings: fp32 NCHW (exactly the same math), fp32 channels_last (same math,
different memory layout), and bf16 autocast + channels_last (step math fp32; timed only where the device
has native bf16, or with --bf16 on). ratio = reference time / our time (above 1: ours is faster); the
headline `ratio` is our best variant's. Same model, batches and T in one run.
"""

from __future__ import annotations

import argparse
import copy
import math

import torch
import torch.nn.functional as F
from common import arch_spec, device_name, emit, machine, median_time

from dat_core import build_model
from dat_core.cli_types import int_in
from dat_core.evaluation.metrics import roc_auc
from dat_core.runtime import native_bf16
from dat_core.training.config import load_config
from dat_core.training.stage1 import AdversarialTraining
from dat_core.training.stage2 import DualAdversarialTraining


def plain_pgd(model, x, y, steps, step_size, eps, loss_fn):
    """The usual research-code PGD: eval mode, autograd.grad w.r.t. the input, normalized L2 step."""
    x0, xt = x.clone(), x.clone()
    for _ in range(steps):
        xt.requires_grad_(True)
        (g,) = torch.autograd.grad(loss_fn(model(xt), y), xt)
        g = g / (g.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)
        xt = xt.detach() + step_size * g
        if math.isfinite(eps):
            d = xt - x0
            xt = x0 + d * (eps / (d.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)).clamp(max=1)
        xt = xt.clamp(0, 1)
    return xt


def reference_stage2_step(model, opt, batch, T, eta, K, eps, alpha):
    x_real, y_real, x_ood, x_clf, y_clf = batch
    opt.zero_grad()
    model.eval()
    x_con = plain_pgd(model, x_ood, y_real, T, eta, math.inf, lambda lo, y: lo.gather(1, y[:, None]).sum())
    with torch.no_grad():
        lo = model(torch.cat([x_real, x_con, x_ood]))
        b = len(x_real)
        idx = torch.arange(b)
        roc_auc(lo[:b][idx, y_real], lo[b:2 * b][idx, y_real])
    model.train()
    s = torch.logsumexp(model(torch.cat([x_real, x_con])), 1)
    bce = F.binary_cross_entropy_with_logits(s, torch.cat([torch.ones(b), torch.zeros(b)]).to(s.device))
    x_adv = plain_pgd(model, x_clf, y_clf, K, alpha, eps, lambda lo, y: F.cross_entropy(lo, y))
    ce = F.cross_entropy(model(x_adv), y_clf)
    (bce + ce).backward()
    opt.step()
    return (bce + ce).detach()


def reference_stage1_step(model, opt, batch, K, eps, alpha):
    x, y = batch
    opt.zero_grad()
    model.eval()
    x_adv = plain_pgd(model, x, y, K, alpha, eps, lambda lo, t: F.cross_entropy(lo, t))
    model.train()
    loss = F.cross_entropy(model(x_adv), y)
    loss.backward()
    opt.step()
    return loss.detach()


class Repeat:
    """A stream that yields the same batch forever (identical inputs for every variant)."""

    def __init__(self, item):
        self.item = item

    def __next__(self):
        return self.item


def ours(stage_cls, cfg, model, streams, channels_last):
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        streams = {k: Repeat(tuple(t.contiguous(memory_format=torch.channels_last) if t.dim() == 4 else t
                                   for t in s.item) if isinstance(s.item, tuple)
                              else s.item.contiguous(memory_format=torch.channels_last)) for k, s in streams.items()}
    opt = torch.optim.SGD(model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
    stage = stage_cls(cfg, model, model, streams, cfg.autocast == "true")

    def step():
        loss, _ = stage.loss(log=False)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.detach()
    return step


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small case, under a minute on a 2-core CPU")
    p.add_argument("--arch", type=lambda a: arch_spec(a, sized=False), default=None,
                   help="architecture at 32 px (default: wrn-16-4; wrn-16-2 with --quick)")
    p.add_argument("--batch", type=int_in(1), default=None, help="default: 128; 32 with --quick")
    p.add_argument("--T", type=int_in(0), default=None, help="contrastive PGD steps (default: 5; 2 with --quick)")
    p.add_argument("--K", type=int_in(0), default=None,
                   help="classification PGD steps (default: 10; 2 with --quick)")
    p.add_argument("--repeats", type=int_in(1), default=None, help="default: 3; 2 with --quick")
    p.add_argument("--device", type=device_name, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda or cuda:N (default: cuda where there is one)")
    p.add_argument("--bf16", choices=("auto", "on", "off"), default="auto",
                   help="also time bf16 autocast + channels_last; auto: where the device has native bf16")
    args = p.parse_args()
    arch = args.arch or ("wrn-16-2" if args.quick else "wrn-16-4")
    b = args.batch if args.batch is not None else (32 if args.quick else 128)
    T = args.T if args.T is not None else (2 if args.quick else 5)
    K = args.K if args.K is not None else (2 if args.quick else 10)
    repeats = args.repeats if args.repeats is not None else (2 if args.quick else 3)
    device = torch.device(args.device)
    bf16 = args.bf16 == "on" or (args.bf16 == "auto" and native_bf16(device))

    torch.manual_seed(0)
    base = build_model(arch).to(device)
    with torch.no_grad():  # non-trivial BN statistics, as after stage 1
        base.train()
        base(torch.rand(64, 3, 32, 32, device=device))
    g = torch.Generator().manual_seed(1)
    x_real, x_ood, x_clf = (torch.rand(b, 3, 32, 32, generator=g).to(device) for _ in range(3))
    y_real, y_clf = (torch.randint(0, 10, (b,), generator=g).to(device) for _ in range(2))
    batch2 = (x_real, y_real, x_ood, x_clf, y_clf)
    streams2 = {"real": Repeat((x_real, y_real)), "ood": Repeat(x_ood), "clf": Repeat((x_clf, y_clf))}
    streams1 = {"clf": Repeat((x_clf, y_clf))}
    common = {"batch_size": b, "attack.steps": K, "attack.eps": 0.5, "attack.step_size": 0.1,
              "contrastive.step_size": 0.1, "contrastive.start_steps": T, "contrastive.max_steps": max(T, 1),
              "model.init": "unused"}
    results = {}
    for stage, stage_cls in (("stage2", DualAdversarialTraining), ("stage1", AdversarialTraining)):
        def fresh():
            m = copy.deepcopy(base)
            m.freeze_bn(stage == "stage2")
            return m

        ref_model = fresh()
        ref_opt = torch.optim.SGD(ref_model.parameters(), lr=1e-3, momentum=0.9, nesterov=True)
        if stage == "stage2":
            def ref_step():
                return reference_stage2_step(ref_model, ref_opt, batch2, T, 0.1, K, 0.5, 0.1)
        else:
            def ref_step():
                return reference_stage1_step(ref_model, ref_opt, (x_clf, y_clf), K, 0.5, 0.1)
        variants = {"fp32": ("false", False), "fp32_channels_last": ("false", True)}
        if bf16:
            variants["bf16_channels_last"] = ("true", True)
        # equal math: the first step's loss from identical weights must match the reference
        m0 = fresh()
        opt0 = torch.optim.SGD(m0.parameters(), lr=0.0)
        first_ref = (reference_stage2_step(m0, opt0, batch2, T, 0.1, K, 0.5, 0.1) if stage == "stage2"
                     else reference_stage1_step(m0, opt0, (x_clf, y_clf), K, 0.5, 0.1))
        row = {"reference_s": median_time(ref_step, repeats)}
        for name, (ac, cl) in variants.items():
            cfg = load_config(None, stage=stage, autocast=ac, **common)
            step = ours(stage_cls, cfg, fresh(), streams2 if stage == "stage2" else streams1, cl)
            if name == "fp32":
                row["same_loss_as_reference"] = bool(torch.allclose(step(), first_ref, rtol=1e-4, atol=1e-5))
            t = median_time(step, repeats)
            row[f"ours_{name}_s"] = t
            row[f"ratio_{name}"] = row["reference_s"] / t
        row["reference_images_per_s"] = b / row["reference_s"]
        row["ours_best_images_per_s"] = b / min(row[f"ours_{n}_s"] for n in variants)
        results[stage] = row
        print(stage, {k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()})
    emit({"benchmark": "train_step", "device": str(device), "arch": arch, "batch": b, "T": T, "K": K,
          "machine": machine(), **results,
          "bf16": bf16, "ratio": max(v for k, v in results["stage2"].items() if k.startswith("ratio_")),
          "ratio_equal_math": max(results["stage2"]["ratio_fp32"], results["stage2"]["ratio_fp32_channels_last"])})


if __name__ == "__main__":
    main()
