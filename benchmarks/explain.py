"""Explanation latency: counterfactual trajectories (ours vs a plain recording loop), minimal counterfactual,
generation; one row per (architecture, case).

    python benchmarks/explain.py [--quick] [--device cpu|cuda] [--archs wrn-16-2 wrn-34-10] [--cases NAME ...]
    python benchmarks/explain.py --archs resnet50 convnext-large-convstem --repeats 1   # ImageNet scale

An `arch@size` sets the resolution (default: the architecture's registered one). Architectures registered at
ImageNet size (>= 128 px: 1000 classes, the ImageNet names) run `IMAGENET_CASES` unless --cases says otherwise:
one PGD step, a 60-step trajectory and the app's Run click -> first streamed frame (in chromium where it is
installed, and at the handler), all as the app runs them (channels-last copy, `--autocast auto`).

Trajectory reference: the loop most research code writes to record a PGD path: eval mode,
`loss.backward()` with parameter gradients left on, read `x.grad`, L2-normalized step, project,
clamp; per step it clones the frame and computes softmax, E(x), E(x, target), E(x, source) and the
distances from that step's logits; one more forward for x_T. Ours: `explain.counterfactuals`
(the PGD engine records frames and logits; metrics in one vectorized pass at the end).
Same model, image, targets and parameters (L2, eps 3, step 0.1, T = 60), fp32.
ratio = reference time / our time (above 1: ours is faster). The last line's `ratio` is the worst trajectory ratio
(ours must be no slower than the plain loop: ratio >= 1); `ratio_all_cases` includes landscapes and attributions, whose
single-call differences (e.g. saliency, ~10 ms) are within run-to-run noise.
`trajectory_T60_channels_last_model` times the same trajectory and landscape on the plain model and on
the channels-last copy that the CLI and the app load (ratio above 1: channels-last is faster).
bf16 autocast is timed only where the hardware has native bf16 (the `*_bf16*` fields are null elsewhere);
there it is what the CLI and the app run by default (`--autocast auto`).
`as_run_by_cli_and_app` times exactly what `python -m explain` and the app run (the channels-last model copy,
`--autocast auto`); our latency targets (T = 60 trajectory <= 0.5 s, 33x33 landscape <= 1 s for a small WRN on
a 2-core CPU) are judged on that row, and the last line's `as_run` repeats it.

Run it as users run the app: with OpenMP's default wait policy. `OMP_WAIT_POLICY=PASSIVE` (which the test
suite sets so that concurrent processes do not stall each other) puts the two worker threads to sleep after
every operator, and waking them roughly doubles a batch-1 PGD step here (a warning is printed).

Cases are a list of named functions (`CASES`): to add one, append `Case(name, fn)` where
`fn(ctx) -> dict` returns its figures (include "ratio" when it compares against a reference).
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from common import arch_spec, device_name, emit, machine, median_time

from dat_core import build_model, threat_model
from dat_core.cli_types import int_in
from dat_core.models import find_arch
from dat_core.models.class_names import dataset_class_names
from dat_core.pgd import pgd
from dat_core.runtime import native_bf16, use_autocast
from explain.generation import generate
from explain.params import IMAGENET_MIN_SIZE
from explain.trajectory import counterfactuals, minimal_counterfactual

EPS, STEP, T = 3.0, 0.1, 60
SMALL = ("wrn-16-2", "wrn-10-1", "wrn-16-4")  # the "small WRN" of the 0.5 s target


@dataclass
class Context:
    arch: str
    model: torch.nn.Module
    image: torch.Tensor        # (3, S, S) in [0,1] on the device
    device: torch.device
    repeats: int
    quick: bool
    bf16: bool                 # time bf16 autocast too (only where the hardware has native bf16)


def _maybe(ctx: Context, fn: Callable[[], Any], warmup: int = 1) -> float | None:
    """Median time of a bf16 variant, None where it is not timed (see `native_bf16`)."""
    return median_time(fn, ctx.repeats, warmup=warmup) if ctx.bf16 else None


@dataclass
class Case:
    name: str
    run: Callable[[Context], dict[str, Any]]


def reference_trajectory(model, x, y, eps=EPS, step_size=STEP, steps=T):
    """Plain recording loop (see module docstring); returns frames (F,N,C,H,W) and per-step metric lists."""
    model.eval()
    x0, xt = x.clone(), x.clone()
    frames, logits_all, probs, energy, e_target, e_source, l2, linf = ([] for _ in range(8))
    source = None

    def record(z, xt):
        nonlocal source
        if source is None:
            source = z.argmax(1)
        frames.append(xt.detach().clone())
        logits_all.append(z.detach())
        probs.append(torch.softmax(z, 1).detach())
        energy.append(-torch.logsumexp(z, 1).detach())
        e_target.append(-z.gather(1, y[:, None]).squeeze(1).detach())
        e_source.append(-z.gather(1, source[:, None]).squeeze(1).detach())
        d = (xt - x0).flatten(1)
        l2.append(d.norm(dim=1))
        linf.append(d.abs().amax(dim=1))

    for _ in range(steps):
        xt.requires_grad_(True)
        z = model(xt)
        z.gather(1, y[:, None]).sum().backward()
        g = xt.grad
        record(z.detach(), xt.detach())
        g = g / (g.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)
        xt = xt.detach() + step_size * g
        delta = xt - x0
        delta = delta * (eps / (delta.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-12)).clamp(max=1)
        xt = (x0 + delta).clamp(0, 1)
    with torch.no_grad():
        record(model(xt), xt)
    model.zero_grad(set_to_none=True)
    return torch.stack(frames), [t.cpu() for t in (torch.stack(energy), torch.stack(e_target))]


def _trajectory_case(n_targets: int) -> Callable[[Context], dict[str, Any]]:
    def run(ctx: Context) -> dict[str, Any]:
        targets = [(3 + i) % 10 for i in range(n_targets)]
        y = torch.tensor(targets, device=ctx.device)
        xb = ctx.image[None].expand(n_targets, -1, -1, -1).contiguous()
        # the untimed warm-up calls double as the correctness check
        trajs = counterfactuals(ctx.model, ctx.image, targets, eps=EPS, step_size=STEP, steps=T)
        frames, (energy, _) = reference_trajectory(ctx.model, xb, y)
        ours = median_time(lambda: counterfactuals(ctx.model, ctx.image, targets, eps=EPS, step_size=STEP,
                                                   steps=T), ctx.repeats, warmup=0)
        ref = median_time(lambda: reference_trajectory(ctx.model, xb, y), ctx.repeats, warmup=0)
        bf16 = _maybe(ctx, lambda: counterfactuals(ctx.model, ctx.image, targets, eps=EPS, step_size=STEP, steps=T,
                                                   autocast=True))  # what the CLI and app run where bf16 is native
        diff = (torch.stack([torch.from_numpy(t.images) for t in trajs], 1) - frames.cpu()).abs().flatten(2)
        diff = diff.amax(dim=(1, 2))
        # identical math per step: step 1 agrees to float rounding. Over T steps rounding differences
        # (parameter-gradient backward vs input-only autograd.grad) grow to ~1e-2 per pixel: reported, not judged
        same = bool(diff[1] < 1e-5)
        return {"targets": n_targets, "steps": T, "ours_s": ours, "ours_bf16_s": bf16, "reference_s": ref,
                "ratio": ref / ours, "ratio_bf16": None if bf16 is None else ref / bf16, "same_result": same,
                "first_step_max_diff": float(diff[1]), "final_max_diff": float(diff[-1])}
    return run


def _engine_only(ctx: Context) -> dict[str, Any]:
    """The bare engine call without recording: what recording + metrics cost on top of PGD itself."""
    y = torch.tensor([3], device=ctx.device)
    tm = threat_model("L2", EPS, STEP)
    bare = median_time(lambda: pgd(ctx.model, ctx.image[None], y, tm, T, "target_logit"), ctx.repeats)
    full = median_time(lambda: counterfactuals(ctx.model, ctx.image, [3], eps=EPS, step_size=STEP, steps=T),
                       ctx.repeats, warmup=0)
    return {"steps": T, "pgd_without_recording_s": bare, "trajectory_s": full, "overhead": full / bare - 1}


def _minimal(ctx: Context) -> dict[str, Any]:
    s = median_time(lambda: minimal_counterfactual(ctx.model, ctx.image, 3, (0.5, 0.9)), ctx.repeats)
    return {"confidences": [0.5, 0.9], "path_steps": 100, "rounds": 4, "candidates": 3, "refine_steps": 10,
            "seconds": s}


def _generate(ctx: Context) -> dict[str, Any]:
    s = median_time(lambda: generate(ctx.model, "all", n_per_class=1, seed=0), ctx.repeats)
    return {"samples": 10, "steps": 33, "seconds": s}


def _channels_last_model(ctx: Context) -> dict[str, Any]:
    """What the CLI and the app load (`explain.trajectory.channels_last`) against the plain NCHW model:
    the same trajectory and landscape, timed alternately so that a varying machine load hits both alike."""
    import copy

    from dat_core.runtime import channels_last
    from explain.landscape import energy_landscape
    from explain.trajectory import counterfactual

    cl = channels_last(copy.deepcopy(ctx.model))
    traj = counterfactual(ctx.model, ctx.image, 3, eps=EPS, step_size=STEP, steps=T)
    row: dict[str, Any] = {"steps": T, "grid": 33}
    for name, fn in (("trajectory", lambda m: counterfactual(m, ctx.image, 3, eps=EPS, step_size=STEP, steps=T)),
                     ("landscape", lambda m: energy_landscape(m, traj, grid=33))):
        nchw_s, cl_s = [], []
        for m in (ctx.model, cl):   # untimed: a model's first call (its one-time costs) is no latency
            fn(m)
        for _ in range(ctx.repeats):
            nchw_s.append(median_time(lambda: fn(ctx.model), 1, warmup=0))
            cl_s.append(median_time(lambda: fn(cl), 1, warmup=0))
        row.update({f"{name}_nchw_s": statistics.median(nchw_s), f"{name}_channels_last_s": statistics.median(cl_s),
                    f"{name}_ratio": statistics.median(nchw_s) / statistics.median(cl_s)})
    first = counterfactual(cl, ctx.image, 3, eps=EPS, step_size=STEP, steps=T)
    row["first_step_max_diff"] = float(abs(first.images[1] - traj.images[1]).max())
    return row


def _as_run(ctx: Context) -> dict[str, Any]:
    """The trajectory and landscape exactly as `python -m explain` and the app compute them."""
    import copy

    from dat_core.runtime import channels_last
    from explain.landscape import energy_landscape
    from explain.trajectory import counterfactual

    model, bf16 = channels_last(copy.deepcopy(ctx.model)), use_autocast("auto", ctx.device)
    traj = counterfactual(model, ctx.image, 3, eps=EPS, step_size=STEP, steps=T, autocast=bf16)
    row: dict[str, Any] = {
        "autocast_bf16": bf16, "steps": T, "grid": 33,
        "trajectory_T60_s": median_time(lambda: counterfactual(model, ctx.image, 3, eps=EPS, step_size=STEP,
                                                               steps=T, autocast=bf16), ctx.repeats),
        "landscape_33x33_s": median_time(lambda: energy_landscape(model, traj, grid=33, autocast=bf16),
                                         ctx.repeats)}
    if ctx.arch in SMALL:
        row.update(target_trajectory_s=TRAJECTORY_TARGET_S, target_landscape_s=LANDSCAPE_TARGET_S,
                   target_met=row["trajectory_T60_s"] <= TRAJECTORY_TARGET_S
                   and row["landscape_33x33_s"] <= LANDSCAPE_TARGET_S)
    return row


def _imagenet_as_run(ctx: Context) -> dict[str, Any]:
    """One PGD step and a 60-step trajectory as the app runs them, at the paper's ImageNet step (L2 ε 18, step 2)."""
    import copy

    from dat_core.runtime import channels_last
    from explain.params import default_params
    from explain.trajectory import counterfactual

    model, bf16 = channels_last(copy.deepcopy(ctx.model)), use_autocast("auto", ctx.device)
    d = default_params(ctx.image.shape[-1])
    run = lambda steps: counterfactual(model, ctx.image, 1, eps=d["eps"], step_size=d["step_size"],  # noqa: E731
                                       steps=steps, autocast=bf16)
    one = median_time(lambda: run(1), ctx.repeats)
    return {"image_size": ctx.image.shape[-1], "autocast_bf16": bf16, "pgd_step_s": one,
            "trajectory_T60_s": median_time(lambda: run(T), ctx.repeats, warmup=0), "app_default_steps": d["steps"]}


def _app_first_frame(ctx: Context) -> dict[str, Any]:
    """The app on this model (saved, loaded as `--model DIR` loads it): Run -> the first frame streamed while PGD
    runs, at the handler (`counterfactual.run_live`'s first yield) and in chromium (click -> frame decoded)."""
    import importlib.util
    import tempfile
    from pathlib import Path

    from app_harness import (
        CHROMIUM,
        browser_page,
        first_streamed_frame,
        serve,
        settings,
        upload,
        upload_file,
        write_image,
    )

    from dat_core import save_model
    from webapp.demo import build_demo
    from webapp.explainer import STREAM_THREAD
    from webapp.tabs import counterfactual

    with tempfile.TemporaryDirectory() as tmp:
        demo = build_demo(str(save_model(ctx.model, Path(tmp) / "model")), standard_model=None)
        ex, photo = demo.explainer, str(write_image(Path(tmp) / "photo.png"))
        names = ex.default.class_names
        handler = []
        with serve(demo) as url:
            sent = upload_file(url, photo)  # the handler takes an uploaded image, as a visitor's Run does
            for i in range(ctx.repeats + 1):  # the first call warms up
                state, start = ex.new_session(), time.perf_counter()
                live = counterfactual.run_live(ex, sent, names[2 + i], "L2", "18", T, 2.0, state)
                next(live)
                handler.append(time.perf_counter() - start)
                live.close()  # stops PGD, as Cancel does
            row = {"steps": T, "handler_first_frame_s": statistics.median(handler[1:]),
                   "browser_first_frame_s": None}
            if CHROMIUM.exists() and importlib.util.find_spec("playwright"):
                with browser_page(url) as page:
                    upload(page, photo)
                    settings(page, steps=T)
                    row["browser_first_frame_s"] = first_streamed_frame(page, timeout_s=600)
                    if page.locator("#cf-cancel").is_visible():  # a small model may have finished meanwhile
                        page.locator("#cf-cancel").click(timeout=5000)
        for thread in threading.enumerate():  # the cancelled run ends at its next step: let it, before exiting
            if thread.name == STREAM_THREAD:
                thread.join()
    return row


IMAGENET_CASES = ("imagenet_as_run", "app_first_streamed_frame")
TRAJECTORY_TARGET_S = 0.5  # latency targets for a small WRN on a 2-core CPU
LANDSCAPE_TARGET_S = 1.0

CASES: list[Case] = [
    Case("as_run_by_cli_and_app", _as_run),
    Case("trajectory_T60_1_target", _trajectory_case(1)),
    Case("trajectory_T60_channels_last_model", _channels_last_model),
    Case("trajectory_T60_10_targets", _trajectory_case(10)),
    Case("trajectory_recording_overhead", _engine_only),
    Case("minimal_counterfactual", _minimal),
    Case("generate_10_classes", _generate),
    Case("imagenet_as_run", _imagenet_as_run),
    Case("app_first_streamed_frame", _app_first_frame),
]


# ---------------------------------------------------------------- energy landscape and attributions
# Landscape reference: the same 33x33 clamped plane points, energies from plain NCHW fp32 forwards at
# batch 256 (what a first implementation does). Ours: `energy_landscape` (channels-last input, batch 64;
# optionally bf16). Attribution reference: the same Captum method on the bare model with NCHW input.
# Both at batch 1, 32x32, for the trajectory's target class.


def _explain_trajectory(ctx: Context):
    from explain.trajectory import counterfactual

    return counterfactual(ctx.model, ctx.image, 3, eps=EPS, step_size=STEP, steps=T)


def reference_landscape(model, land, x0: torch.Tensor, energy_fn, batch: int = 256) -> torch.Tensor:
    u, v = (torch.from_numpy(a).to(x0.device) for a in (land.u, land.v))
    a = torch.from_numpy(land.alphas).float().to(x0.device)
    b = torch.from_numpy(land.betas).float().to(x0.device)
    pts = (x0 + a[None, :, None, None, None] * u + b[:, None, None, None, None] * v).clamp(0, 1).flatten(0, 1)
    with torch.no_grad():
        return torch.cat([energy_fn(model(pts[i:i + batch])) for i in range(0, len(pts), batch)]).view(
            len(b), len(a))


def _landscape(ctx: Context) -> dict[str, Any]:
    from dat_core.energy import marginal_energy
    from explain.landscape import energy_landscape

    traj = _explain_trajectory(ctx)
    land = energy_landscape(ctx.model, traj, grid=33)
    x0 = torch.from_numpy(traj.images[0]).to(ctx.device)
    ref_values = reference_landscape(ctx.model, land, x0, marginal_energy).cpu().numpy()
    max_diff = float(abs(ref_values - land.values).max())
    warm = 1 if ctx.arch in SMALL and not ctx.quick else 0  # the correctness calls above warmed both paths up
    ours = median_time(lambda: energy_landscape(ctx.model, traj, grid=33), ctx.repeats, warmup=warm)
    bf16 = _maybe(ctx, lambda: energy_landscape(ctx.model, traj, grid=33, autocast=True))  # no call warmed bf16
    ref = median_time(lambda: reference_landscape(ctx.model, land, x0, marginal_energy), ctx.repeats, warmup=warm)
    row = {"grid": 33, "ours_s": ours, "ours_bf16_s": bf16, "reference_s": ref, "ratio": ref / ours,
           "ratio_bf16": None if bf16 is None else ref / bf16, "same_result": max_diff < 1e-3, "max_abs_diff": max_diff}
    return row


def _landscape_plot(ctx: Context) -> dict[str, Any]:
    from explain.landscape import LandscapeRenderer, energy_landscape, plot_landscape
    from explain.plots import figure_to_array

    land = energy_landscape(ctx.model, _explain_trajectory(ctx), grid=33)
    full = median_time(lambda: figure_to_array(plot_landscape(land, step=10)), ctx.repeats)
    with LandscapeRenderer(land) as renderer:  # slider scrubbing: only the step markers are redrawn
        step = median_time(lambda: renderer.render(10), ctx.repeats)
    return {"plot_and_array_s": full, "renderer_step_s": step, "ratio_renderer": full / step}


def _reference_attribution(model, x: torch.Tensor, target: int, method: str) -> torch.Tensor:
    from captum.attr import GradientShap, IntegratedGradients, NoiseTunnel, Occlusion, Saliency

    from explain.attribution import SMOOTHGRAD_STDEV

    x = x.clone().requires_grad_(True)
    if method == "saliency":
        return Saliency(model).attribute(x, target=target, abs=False)
    if method == "integrated_gradients":
        return IntegratedGradients(model).attribute(x, baselines=torch.zeros_like(x), target=target, n_steps=32,
                                                    internal_batch_size=32)
    if method == "smoothgrad":
        return NoiseTunnel(Saliency(model)).attribute(x, nt_type="smoothgrad", nt_samples=16, nt_samples_batch_size=32,
                                                      stdevs=SMOOTHGRAD_STDEV, target=target, abs=False)
    if method == "gradient_shap":
        baselines = torch.cat([torch.zeros_like(x), torch.rand(4, *x.shape[1:], device=x.device)])
        return GradientShap(model).attribute(x, baselines=baselines, n_samples=16, target=target)
    return Occlusion(model).attribute(x, sliding_window_shapes=(3, 4, 4), strides=(3, 2, 2), baselines=0.0,
                                      target=target, perturbations_per_eval=32)


def _attribution_case(method: str) -> Callable[[Context], dict[str, Any]]:
    def run(ctx: Context) -> dict[str, Any]:
        from explain.attribution import attribute

        x, target = ctx.image[None], 3
        ours_map = attribute(ctx.model, x, target, method)
        ref_map = _reference_attribution(ctx.model, x, target, method).detach()[0].sum(0).cpu().numpy()
        ours = median_time(lambda: attribute(ctx.model, x, target, method), ctx.repeats, warmup=0)
        bf16 = _maybe(ctx, lambda: attribute(ctx.model, x, target, method, autocast=True))
        ref = median_time(lambda: _reference_attribution(ctx.model, x, target, method), ctx.repeats, warmup=0)
        row = {"method": method, "ours_s": ours, "ours_bf16_s": bf16, "reference_s": ref, "ratio": ref / ours}
        if method in ("saliency", "integrated_gradients", "occlusion"):  # deterministic: same map expected
            # up to float rounding: channels-last convolutions sum in another order (IG: ~1e-3 of max |map|)
            rel = float(abs(ours_map - ref_map).max()) / (float(abs(ref_map).max()) or 1.0)
            row.update(same_result=rel <= 1e-2, max_rel_diff=rel)
        return row
    return run


def _attribution_plot(ctx: Context) -> dict[str, Any]:
    from explain.attribution import METHODS, attribute_trajectory, plot_attributions
    from explain.plots import figure_to_array

    result = attribute_trajectory(ctx.model, _explain_trajectory(ctx), methods=METHODS)
    return {"methods": len(METHODS), "attribute_all_both_classes_s": sum(result.seconds.values()),
            "plot_s": median_time(lambda: figure_to_array(plot_attributions(result)), ctx.repeats)}


CASES += [
    Case("landscape_33x33", _landscape),
    Case("landscape_plot", _landscape_plot),
    *(Case(f"attribution_{m}", _attribution_case(m))
      for m in ("saliency", "integrated_gradients", "smoothgrad", "gradient_shap", "occlusion")),
    Case("attribution_plot", _attribution_plot),
]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="small WRN only, fewer repeats: under a minute on 2 cores")
    p.add_argument("--device", type=device_name, default="cuda" if torch.cuda.is_available() else "cpu",
                   help="cpu, cuda or cuda:N (default: cuda where there is one)")
    p.add_argument("--archs", nargs="+", type=arch_spec, default=None,
                   help="ARCH or ARCH@SIZE (default: wrn-16-2 wrn-34-10; wrn-16-2 with --quick)")
    p.add_argument("--cases", nargs="+", default=None, help=f"subset of {[c.name for c in CASES]}")
    p.add_argument("--repeats", type=int_in(1), default=None,
                   help="default: 1 with --quick; else 7, 3 for a big model on the CPU")
    args = p.parse_args()
    archs = args.archs or (["wrn-16-2"] if args.quick else ["wrn-16-2", "wrn-34-10"])
    unknown = set(args.cases or ()) - {c.name for c in CASES}
    if unknown:
        p.error(f"unknown case(s) {sorted(unknown)}; known: {[c.name for c in CASES]}")
    device = torch.device(args.device)
    if os.environ.get("OMP_WAIT_POLICY", "").upper() == "PASSIVE":
        print("warning: OMP_WAIT_POLICY=PASSIVE roughly doubles batch-1 latency on CPU; unset it to measure what "
              "users see", file=sys.stderr)
    rows = []
    for spec in archs:
        arch, _, size = spec.partition("@")
        image_size = int(size) if size else find_arch(arch)[0].image_size
        imagenet = image_size >= IMAGENET_MIN_SIZE
        torch.manual_seed(0)
        model = build_model(arch, image_size=image_size, **({"num_classes": 1000, "class_names": dataset_class_names(
            "imagenet")} if imagenet else {})).to(device).eval()
        big = arch not in SMALL
        repeats = (args.repeats if args.repeats is not None
                   else 1 if args.quick else 3 if big and device.type == "cpu" else 7)
        ctx = Context(arch, model, torch.rand(3, image_size, image_size, device=device), device, repeats, args.quick,
                      native_bf16(device))
        names = args.cases or (IMAGENET_CASES if imagenet else [c.name for c in CASES if c.name not in IMAGENET_CASES])
        for case in [c for c in CASES if c.name in names]:
            start = time.perf_counter()
            row = {"arch": spec, "case": case.name, **case.run(ctx)}
            rows.append(row)
            print("  ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
                  f"({time.perf_counter() - start:.0f} s)", flush=True)

    def worst(prefix: str) -> float | None:
        found = [r["ratio"] for r in rows if r["case"].startswith(prefix) and isinstance(r.get("ratio"), float)
                 and math.isfinite(r["ratio"])]
        return min(found) if found else None
    as_run = [r for r in rows if r["case"] == "as_run_by_cli_and_app"   # "wrn-16-2@32" is a small WRN too
              and r["arch"].partition("@")[0] in SMALL]
    emit({"benchmark": "explain", "device": str(device), "machine": machine(),
          "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"), "cases": rows,
          "ratio": worst("trajectory_"), "ratio_all_cases": worst(""), "as_run": as_run[0] if as_run else None})

if __name__ == "__main__":
    main()
