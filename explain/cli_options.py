"""Options shared by the `python -m explain` commands: model and device, the trajectory request, the mask,
and the norm-name argparse type (bounded integers: `dat_core.cli_types`, shared with `train`)."""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from dat_core.cli_types import comma_list, float_in, norm_name, refuse_unused, step_size
from dat_core.guidance import CONE_ANGLE


def mask_image(args: argparse.Namespace, image):
    """The --mask image (inverted with --mask-invert), checked to have the image's size so that both go
    through the same resize and crop; None without --mask."""
    from PIL import ImageOps

    from .image import open_image, to_rgb

    refuse_unused(args, ["mask_invert"], args.mask is not None, "--mask")
    if args.mask is None:
        return None
    mask = open_image(args.mask)
    if mask.size != image.size:
        raise ValueError(f"the mask is {mask.size[0]}x{mask.size[1]} but the image is {image.size[0]}x{image.size[1]}")
    if not args.mask_invert:
        return mask
    inverted = ImageOps.invert(to_rgb(mask))
    if max(inverted.convert("L").getextrema()) <= 127:
        raise ValueError("with --mask-invert black marks what may change, and the mask has no black pixel")
    return inverted


def common_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default="default",
                   help="'default' (bundled), a zoo name (dat_core.list_models()), a checkpoint dir, or a Hub repo "
                        "id owner/name (default: %(default)s)")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit) for a repo id")
    p.add_argument("--device", default=None,
                   help="auto, cpu, cuda or cuda:N (default: auto = cuda if available, else cpu)")
    p.add_argument("--out", required=True, help="output directory (created if missing)")
    p.add_argument("--autocast", choices=("auto", "on", "off"), nargs="?", const="on", default="auto",
                   help="bf16 forward/backward: auto = where the hardware has native bf16 (CUDA, AVX512-BF16/AMX "
                        "CPUs: ~2x faster; values carry bf16 rounding), on (also a bare --autocast; emulated and "
                        "slower where bf16 is not native), off = fp32 (default: %(default)s)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="off",
                   help="torch.compile the model (and --guide's): auto = where a C++ compiler or CUDA is present. "
                        "Each input shape (batch size) compiles when first met, 5-40 s on a CPU (less with a warm "
                        "cache in ~/.cache/dat-explainer), so it pays off for long runs (benchmarks, many targets, "
                        "landscapes), not one short path (default: %(default)s)")


def trajectory_options(p: argparse.ArgumentParser, target_help: str) -> None:
    from .params import DEFAULTS, IMAGENET_DEFAULTS, IMAGENET_MIN_SIZE, MAX_STEPS, NORMS, OBJECTIVES, eps_text

    l2, li, l1, big = DEFAULTS["L2"], DEFAULTS["Linf"], DEFAULTS["L1"], IMAGENET_DEFAULTS["L2"]
    p.add_argument("--image", required=True, help="input image (any size/mode; shorter side resized to the "
                   "model resolution with bicubic filtering, then centre-cropped; transparency on white)")
    p.add_argument("--target", required=True, help=target_help)
    p.add_argument("--norm", default="L2", choices=NORMS, type=norm_name,
                   help="threat model: L2, Linf, or L1 (sparse: few pixels change) (default: L2)")
    li_eps, li_step = eps_text(li["eps"], "Linf"), eps_text(li["step_size"], "Linf")
    p.add_argument("--eps", default=None,
                   help=f"radius of the ball around the image: a number >= 0, a fraction like 8/255, or 'inf' for "
                        f"unbounded (default at 32 px: L2 {l2['eps']:g}, Linf {li_eps}, L1 {l1['eps']:g}; L2 "
                        f"scales with image_size/32 and L1 with its square below {IMAGENET_MIN_SIZE} px; from "
                        f"{IMAGENET_MIN_SIZE} px the paper's ImageNet budgets, L2 {big['eps']:g})")
    p.add_argument("--steps", type=int, default=None,
                   help=f"PGD steps T, 0..{MAX_STEPS} (default at 32 px: L2 {int(l2['steps'])}, Linf "
                        f"{int(li['steps'])}, L1 {int(l1['steps'])}; {int(big['steps'])} from {IMAGENET_MIN_SIZE} px)")
    p.add_argument("--step-size", type=step_size, default=None,
                   help=f"step length, finite > 0, a number or a fraction like 1/255 (default at 32 px: L2 "
                        f"{l2['step_size']:g}, Linf {li_step}, L1 {l1['step_size']:g}, scaled like --eps; L2 "
                        f"{big['step_size']:g} from {IMAGENET_MIN_SIZE} px)")
    p.add_argument("--mask", default=None, metavar="PNG",
                   help="the region the path may change: an image of the same size as --image, white = may change "
                        "(pixels outside stay exactly as they are)")
    p.add_argument("--mask-invert", action="store_true", help="with --mask: white = must keep, the rest may change")
    guide_options(p)
    p.add_argument("--objective", default="target_logit", choices=OBJECTIVES,
                   help="what PGD ascends: target_logit f(x)[y] (= lowers E(x,y)), target_ce, or energy "
                        "(lowers E(x)) (default: %(default)s)")


def guide_options(p: argparse.ArgumentParser) -> None:
    """--guide / --cone-angle: explain a (non-robust) model steered by a DAT model (`dat_core.guidance`)."""
    p.add_argument("--guide", default=None, metavar="MODEL",
                   help="explain --model (e.g. a standard classifier) guided by this DAT model: each step follows "
                        "--model's gradient projected into a cone around the guide's (same classes and size)")
    p.add_argument("--cone-angle", type=float_in(0, 180), default=None,
                   help=f"with --guide: the cone's half-angle in degrees, 0..180 (default: {CONE_ANGLE:g})")


def compiled_for_cli(model, spec: str):
    """`model` compiled as `--compile spec` says: every input shape the run meets compiles when first met (a
    one-shot run waits for its compiles anyway; its batches then all run compiled), a compile error falls back
    to eager with one log line. The model itself when compiling is off."""
    from dat_core.runtime import FastPath, model_device, use_compile

    if not use_compile(spec, model_device(model)):
        return model
    return FastPath(model, enabled=True, background=False, lazy=True,
                    name=str((getattr(model, "config", None) or {}).get("arch", "model"))).model


def cone_angle(args: argparse.Namespace) -> float | None:
    """The cone's half-angle of a --guide run (--cone-angle or its default); None without --guide, where a
    --cone-angle would silently change nothing and is refused."""
    refuse_unused(args, ["cone_angle"], args.guide is not None, "--guide")
    if args.guide is None:
        return None
    return CONE_ANGLE if args.cone_angle is None else args.cone_angle


def guidance(args: argparse.Namespace, model) -> dict:
    """`guide=` and `cone_angle=` for a counterfactual of `model`: the --guide model on its device, compiled with
    `--compile`; {} without --guide."""
    angle = cone_angle(args)
    if angle is None:
        return {}
    from dat_core.loading import load_model
    from dat_core.runtime import model_device

    return {"guide": compiled_for_cli(load_model(args.guide, device=model_device(model)), args.compile),
            "cone_angle": angle}


def read_by_guide(args: argparse.Namespace, guided: dict, trajs: list) -> list:
    """A --guide run's paths as their guide sees where they end: the guide (as named) and its p(target | x_T) go
    into each path's params (metrics.json, the card) and its summary line, so whether the DAT model
    agrees with the change is read off the run itself."""
    if not guided:
        return trajs
    import numpy as np
    import torch

    from dat_core.pgd import logits_at
    from dat_core.runtime import model_device

    guide = guided["guide"]
    x = torch.from_numpy(np.stack([t.images[-1] for t in trajs])).to(model_device(guide))
    p = torch.softmax(logits_at(guide, x, args.autocast), 1).cpu().numpy()
    for t, row in zip(trajs, p):
        t.params.update(guide=Path(str(args.guide)).name, guide_p_target=round(float(row[t.target]), 6))
    return trajs


def check_one_path_options(args: argparse.Namespace, params: dict[str, Any]) -> None:
    """--minimal and --alternatives explain --model on its own (no --guide): with it they would silently run
    unguided. --minimal searches L2 radii on the whole image (no --mask; a --step-size of another --norm would be
    in the wrong units); --alternatives start at random points of a finite ball. Checked before anything runs."""
    for option in ("minimal", "alternatives"):
        if getattr(args, option) is not None and args.guide is not None:
            raise ValueError(f"--{option} runs --model unguided: leave out --guide")
    if args.minimal is not None and args.mask:
        raise ValueError("--minimal searches the whole image: leave out --mask")
    if args.minimal is not None and params.get("norm", "L2") != "L2":
        raise ValueError("--minimal searches L2 radii: use --norm L2")
    if args.alternatives is not None and params.get("eps") is not None and not 0 < params["eps"] < math.inf:
        raise ValueError("--alternatives start at random points of the eps-ball: --eps must be finite and > 0")


def minimal_confidences(text: str) -> list[float]:
    """--minimal's target confidences, each in (0, 1)."""
    try:
        values = comma_list(text, "--minimal", float)
    except ValueError:
        raise ValueError(f"--minimal takes confidences in (0, 1) separated by commas, e.g. 0.5,0.9; "
                         f"got {text!r}") from None
    if not all(0 < v < 1 for v in values):
        raise ValueError(f"--minimal confidences must lie in (0, 1); got {text!r}")
    names = [minimal_png(v) for v in values]
    same = next((n for n in names if names.count(n) > 1), None)
    if same:   # two results, one file: the second would overwrite the first
        raise ValueError(f"--minimal: {names.count(same)} confidences go under one file name, {same}: give "
                         "confidences that differ in their first 6 digits")
    return values


def minimal_png(confidence: float) -> str:
    """The file of --minimal's witness for `confidence` (6 significant digits, as printed)."""
    return f"minimal_{confidence:g}.png"


def check_inputs_outside_out(args: argparse.Namespace) -> None:
    """An input file inside --out could be overwritten by what the command writes there (strip.png, grid.png…)."""
    if getattr(args, "out", None) is None:
        return
    out = Path(args.out).expanduser().resolve()
    for option in ("image", "mask", "seeds", "pairs"):
        value = getattr(args, option, None)
        path = Path(value).expanduser() if isinstance(value, str) else None   # "~/o/cat.png", as it is read
        if path is not None and path.is_file() and out in path.resolve().parents:
            raise ValueError(f"--{option} lies inside --out, where this command writes its files: choose "
                             "another --out, or move the input")
