"""`python -m explain {counterfactual,landscape,attribute,generate,success,benchmark}`: see
`python -m explain COMMAND --help`.

Bad input (unreadable image, unknown class, out-of-range parameter, missing model) prints one line
`error: ...` to stderr and exits with status 2, like argparse's own usage errors.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from dat_core.cli_types import OneLineParser, comma_list, int_in, refuse_blank_values, refuse_unused, step_size

from .cli_options import (
    check_inputs_outside_out,
    check_one_path_options,
    common_options,
    cone_angle,
    guidance,
    mask_image,
    minimal_confidences,
    read_by_guide,
    trajectory_options,
)

EXAMPLES = {
    "counterfactual": """examples:
  python -m explain counterfactual --image cat.png --target dog --out out/cf
  python -m explain counterfactual --model runs/s2/final --image cat.png --target 5 --eps 4 --steps 80 --out out/cf
  python -m explain counterfactual --image cat.png --target all --out out/all      # one sub-dir per class + grid.png
  python -m explain counterfactual --image cat.png --target dog --minimal 0.5,0.9 --out out/min

writes trajectory.gif, trajectory.png (animated PNG), strip.png and metrics.json to --out""",
    "generate": """examples:
  python -m explain generate --target all --n 8 --seed 0 --out out/samples
  python -m explain generate --target cat --n 16 --seeds lowfreq --steps 40 --out out/cats
  python -m explain generate --target dog --seeds photo.jpg --record-every 1 --out out/dog

writes grid.png (one row per class when --n > 1) and samples.json (per-sample target confidence);
with --record-every K also sampling.gif""",
    "landscape": """examples:
  python -m explain landscape --image cat.png --target dog --out out/land
  python -m explain landscape --image cat.png --target dog --direction frog --energy joint --grid 41 --out out/land

writes landscape.png and landscape.json (grid coordinates, energies, projected path)""",
    "attribute": """examples:
  python -m explain attribute --image cat.png --target dog --out out/attr
  python -m explain attribute --image cat.png --target dog --methods saliency,integrated_gradients --out out/attr

writes attributions.png and attributions.npz (one map per method for the predicted and the target class)""",
}


# ---------------------------------------------------------------- shared helpers

def _load(args: argparse.Namespace):
    """The model (channels-last copy) on its device, compiled with `--compile` (`compiled_for_cli`); resolves
    `args.autocast` for that device too."""
    from dat_core.loading import load_model
    from dat_core.runtime import channels_last, resolve_device, use_autocast

    from .cli_options import compiled_for_cli

    device = resolve_device(args.device)
    args.autocast = use_autocast(args.autocast, device)
    return compiled_for_cli(channels_last(load_model(args.model, revision=args.revision, device=device)),
                            args.compile)


def _request(args: argparse.Namespace) -> dict[str, Any]:
    """The trajectory parameters given on the command line (unset ones take the model-scaled defaults)."""
    from .params import parse_eps, resolve_request

    if args.eps is not None:
        args.eps = parse_eps(args.eps, name="eps")
    given = {k: v for k, v in (("norm", args.norm), ("eps", args.eps), ("step_size", args.step_size),
                               ("steps", args.steps), ("objective", args.objective)) if v is not None}
    resolve_request(32, **given)  # fail fast, before the model is loaded (unset ones: the norm's defaults)
    cone_angle(args)          # likewise a --cone-angle without --guide
    return given


def _targets(text: str) -> str | list[str]:
    return "all" if text.strip().lower() == "all" else comma_list(text, "--target")


def _out_dir(path: str) -> Path:
    out = Path(path).expanduser()
    out.mkdir(parents=True, exist_ok=True)
    return out


def _wrote(paths: list[Path]) -> None:
    for p in paths:
        print(f"wrote {p}")


def _model_and_trajectory(args: argparse.Namespace):
    """For landscape/attribute: check the request and read the image (fast failures first), then load the
    model and run the one counterfactual the command explains."""
    from .image import open_image
    from .params import resolve_class, resolve_request
    from .trajectory import counterfactual, model_info

    params = _request(args)
    targets = _targets(args.target)
    if targets == "all" or len(targets) != 1:
        raise ValueError(f"this command takes one --target class, got {args.target!r}")
    image = open_image(args.image)
    mask = mask_image(args, image)
    model = _load(args)
    size, names, _ = model_info(model)
    if getattr(args, "direction", "random") != "random":   # landscape's second axis: a class known before the path
        resolve_class(args.direction, names)
    frames = resolve_request(size, **params)["steps"] + 1
    if getattr(args, "span", None) is not None:   # landscape's plane: checked before the path runs
        from .landscape import check_span
        check_span(args.span, 3 * size * size)
    for option in ("step", "frame"):   # frame indices into the path: checked before it runs, not after
        value = getattr(args, option, None)
        if value is not None and not -frames <= value < frames:
            raise ValueError(f"--{option} {value} out of range for a path of {frames} frames "
                             f"(0..{frames - 1}; negative counts from the end)")
    guided = guidance(args, model)
    traj = counterfactual(model, image, args.target, autocast=args.autocast, mask=mask, **guided, **params)
    return model, read_by_guide(args, guided, [traj])[0]


# ---------------------------------------------------------------- commands

def _counterfactual(args: argparse.Namespace) -> int:
    from .counterfactual_files import write_counterfactual
    from .export import check_animation, drop_earlier, moved, staged
    from .image import open_image, to_mask, to_model_input
    from .params import resolve_request, resolve_targets
    from .trajectory import counterfactuals, model_info

    params = _request(args)
    confidences = None if args.minimal is None else minimal_confidences(args.minimal)
    check_one_path_options(args, params)
    targets = _targets(args.target)
    source = open_image(args.image)  # bad input fails before the model loads
    mask = mask_image(args, source)
    model = _load(args)
    size, names, _ = model_info(model)
    for option in ("card", "minimal", "alternatives"):   # before any path runs, not after all of them
        if getattr(args, option) and len(resolve_targets(targets, names)) != 1:
            raise ValueError(f"--{option} needs exactly one --target class")
    check_animation(resolve_request(size, **params)["steps"] + 1, size, size, args.scale)   # the APNG, before the path
    image, mask = to_model_input(source, size), None if mask is None else to_mask(mask, size)   # both model-size
    guided = guidance(args, model)
    trajs = read_by_guide(args, guided, counterfactuals(model, image, targets, autocast=args.autocast, mask=mask,
                                                        **guided, **params))
    out = _out_dir(args.out)
    with staged(out, lambda new: drop_earlier(out, new)) as stage:   # a stop leaves the earlier run whole
        wrote = write_counterfactual(args, model, image, mask, trajs, params, confidences, stage)
    _wrote(moved(wrote, stage, out))
    return 0


def _generate(args: argparse.Namespace) -> int:
    import numpy as np

    from dat_core.data.seeds import SEED_KINDS
    from dat_core.sampling import make_grid, save_png

    from .export import fixed_outputs, moved, save_gif, save_json, staged
    from .generation import generate

    refuse_unused(args, ("seed",), args.seeds in SEED_KINDS, "a seed kind (--seeds bank, gaussian, ...): an image "
                  "file is its own start")
    if args.seeds not in SEED_KINDS:   # a seed image that cannot be read fails before the model loads
        from .image import open_image
        if not Path(args.seeds).expanduser().exists():   # "bnak" is a misspelt kind more often than a file
            raise ValueError(f"--seeds must be one of {', '.join(SEED_KINDS)} or an existing image file; "
                             f"got {args.seeds[:60]!r}")
        open_image(args.seeds)
    model = _load(args)
    samples = generate(model, _targets(args.target), n_per_class=args.n, seed=args.seed or 0, seeds=args.seeds,
                       steps=args.steps, step_size=args.step_size, record_every=args.record_every,
                       autocast=args.autocast)
    out = _out_dir(args.out)
    with staged(out, fixed_outputs(out, ("grid.png", "samples.json", "sampling.gif"))) as stage:
        save_png(samples.grid(nrow=args.nrow, scale=args.scale), stage / "grid.png")
        wrote = [stage / "grid.png", save_json(samples.to_dict(), stage / "samples.json")]
        if samples.trajectory is not None:
            nrow = args.nrow or (samples.n_per_class if samples.n_per_class > 1
                                 else int(np.ceil(np.sqrt(len(samples.images)))))
            grids = [make_grid(f, nrow=nrow) for f in samples.trajectory]   # one palette frame each is kept
            wrote.append(save_gif(grids, stage / "sampling.gif", scale=args.scale))
    conf = samples.confidences
    print(f"{len(conf)} samples, p(target): mean {conf.mean():.3f}, min {conf.min():.3f}, max {conf.max():.3f}")
    _wrote(moved(wrote, stage, out))
    return 0


def _landscape(args: argparse.Namespace) -> int:
    from .export import fixed_outputs, moved, save_figure, save_json, staged
    from .landscape import energy_landscape, plot_landscape
    from .params import resolve_class

    refuse_unused(args, ["seed"], args.direction == "random", "--direction random")
    model, traj = _model_and_trajectory(args)
    direction = args.direction if args.direction == "random" else resolve_class(args.direction, traj.class_names)
    land = energy_landscape(model, traj, direction=direction, grid=args.grid, span=args.span,
                            energy=args.energy, seed=args.seed or 0, autocast=args.autocast)
    out = _out_dir(args.out)
    with staged(out, fixed_outputs(out, ("landscape.png", "landscape.json"))) as stage:   # both files of one run
        wrote = [save_figure(plot_landscape(land, step=args.step), stage / "landscape.png"),
                 save_json({**land.to_dict(), "settings": {   # what it was computed with, to tell runs apart
                     "path": traj.params, "direction": args.direction, "grid": args.grid, "span": args.span,
                     **({"seed": args.seed or 0} if args.direction == "random" else {})}}, stage / "landscape.json")]
    print(traj.summary())
    _wrote(moved(wrote, stage, out))
    return 0


def _attribute(args: argparse.Namespace) -> int:
    import numpy as np

    from .attribution import METHODS, attribute_trajectory, plot_attributions
    from .export import fixed_outputs, moved, save_figure, staged

    methods = METHODS if args.methods is None else tuple(comma_list(args.methods, "--methods"))
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise ValueError(f"unknown attribution method(s) {', '.join(unknown) or '(none)'}; "
                         f"use a comma-separated subset of {', '.join(METHODS)}")
    model, traj = _model_and_trajectory(args)
    result = attribute_trajectory(model, traj, methods=methods, step=args.step, frame=args.frame)
    out = _out_dir(args.out)
    arrays = {f"{who}_{m}": maps[m] for who, maps in (("source", result.source_maps), ("target", result.target_maps))
              for m in result.methods}
    with staged(out, fixed_outputs(out, ("attributions.npz", "attributions.png"))) as stage:   # both files of one run
        with open(stage / "attributions.npz", "wb") as f:
            np.savez_compressed(f, start=result.start, counterfactual=result.counterfactual,
                                difference=result.difference, source=result.source, target=result.target, **arrays)
        wrote = [stage / "attributions.npz", save_figure(plot_attributions(result), stage / "attributions.png")]
    print(traj.summary())
    print("seconds per method: " + ", ".join(f"{m} {s:.2f}" for m, s in result.seconds.items()))
    _wrote(moved(wrote, stage, out))
    return 0


# ---------------------------------------------------------------- parser

def _command(sub, name: str, func, help: str, description: str,
             target_help: str | None = None) -> argparse.ArgumentParser:
    """A subcommand with its examples, the shared options, and the trajectory options when it runs a
    counterfactual (`target_help` given)."""
    p = sub.add_parser(name, help=help, description=description, epilog=EXAMPLES[name],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    common_options(p)
    if target_help is not None:
        trajectory_options(p, target_help)
    p.set_defaults(func=func)
    return p


def build_parser() -> argparse.ArgumentParser:
    from dat_core.data.seeds import DEFAULT_SEED_KIND, SEED_KINDS

    parser = OneLineParser(prog="python -m explain", description="Explain a DAT classifier: "
                                     "counterfactual PGD trajectories, energy landscapes, attributions, generation.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    seed = int_in(0, 2 ** 63 - 1)

    p = _command(sub, "counterfactual", _counterfactual, "targeted PGD path from an image toward a class",
                 "Run targeted PGD from an image toward a class and export the trajectory.",
                 "target class: name or index, comma-separated list, or 'all' (one sub-dir per class)")
    p.add_argument("--minimal", default=None, metavar="C[,C...]",
                   help="also search the smallest L2 radius reaching these target confidences, e.g. 0.5,0.9 "
                        "(writes minimal.json and minimal_C.png)")
    p.add_argument("--alternatives", type=int_in(2, 16), default=None, metavar="N",
                   help="also run N (2..16) paths toward the (single) target from seeded random starts in the eps-ball "
                        "(writes alternatives.png: x_0 then each x_T, and alternatives.json with their diversity)")
    p.add_argument("--card", action="store_true",
                   help="also write an explanation card (card.json + card.png: model source and weights hash, "
                        "exact x_0, every parameter, metrics) that `python -m explain replay` reproduces")
    p.add_argument("--scale", type=int_in(1, 64), default=8, help="GIF/APNG upscale factor, 1..64 (default: 8)")
    p.add_argument("--duration-ms", type=int_in(1, 60_000), default=80,
                   help="milliseconds per animation frame (default: 80)")

    p = _command(sub, "generate", _generate, "class-conditional samples by PGD on the class logit",
                 "Generate class-conditional samples from seeds (eps = inf, L2-normalized steps; defaults "
                 "from METHOD.md §4 scaled to the model resolution).")
    p.add_argument("--target", default="all", help="class name or index, comma-separated list, or 'all' "
                                                   "(default: all)")
    p.add_argument("--n", type=int_in(1, 1024), default=1, help="samples per class (default: 1)")
    p.add_argument("--seed", type=seed, default=None, help="random seed of a seed kind's images (default: 0)")
    p.add_argument("--seeds", default=DEFAULT_SEED_KIND,
                   help=f"seed images: {', '.join(SEED_KINDS)} or an image file (default: {DEFAULT_SEED_KIND} = "
                        "out-of-distribution photos from assets/seeds/, how DAT samples; gaussian = a class-"
                        "conditional Gaussian fitted on CIFAR-10 training images; lowfreq = smooth noise)")
    p.add_argument("--steps", type=int, default=None, help="PGD steps (default: 33 below 128 px, 20 from 128 px)")
    p.add_argument("--step-size", type=step_size, default=None, help="L2 step (default: 0.2 at 32 px, scaled by "
                                                                 "image_size/32; 8 from 128 px, the paper's ImageNet "
                                                                 "sampling step)")
    p.add_argument("--record-every", type=int_in(0, 1000), default=0,
                   help="also write sampling.gif with every K-th step (default: 0 = off)")
    p.add_argument("--nrow", type=int_in(1, 1024), default=None,
                   help="images per grid row (default: --n, or ~square when --n is 1)")
    p.add_argument("--scale", type=int_in(1, 64), default=4, help="grid upscale factor, 1..64 (default: 4)")

    p = _command(sub, "landscape", _landscape, "energy on a 2-D plane through the image and its counterfactual",
                 "Run a counterfactual, then plot the energy on the plane spanned by the counterfactual "
                 "direction and a second direction, with the path projected.", "target class: name or index")
    p.add_argument("--direction", default="random",
                   help="second axis: 'random' (seeded) or a class whose logit gradient is used (default: random)")
    p.add_argument("--grid", type=int_in(3, 257, odd=True), default=33, help="odd grid size N, 3..257 (default: 33)")
    p.add_argument("--span", type=float, default=None, help="half-width of the grid in L2 units "
                                                            "(default: 1.25 x the path's extent)")
    p.add_argument("--energy", default="marginal", choices=("marginal", "joint"),
                   help="E(x) or E(x, target) (default: marginal)")
    p.add_argument("--seed", type=seed, default=None, help="seed of the random direction (default: 0)")
    p.add_argument("--step", type=int, default=None, help="trajectory frame to mark (default: none)")

    p = _command(sub, "attribute", _attribute, "Captum attributions for the predicted and the target class",
                 "Run a counterfactual, then attribute the predicted (source) and the target class at a frame "
                 "with Captum methods.", "target class: name or index")
    p.add_argument("--methods", default=None,
                   help="comma-separated methods (default: all of saliency, integrated_gradients, smoothgrad, "
                        "gradient_shap, occlusion)")
    p.add_argument("--step", type=int, default=-1, help="frame of the counterfactual x_step (default: -1 = x_T)")
    p.add_argument("--frame", type=int, default=0, help="frame that is attributed (default: 0 = x_0)")

    from .card_cli import add_replay_parser
    add_replay_parser(sub)
    from .success_cli import add_success_parser
    add_success_parser(sub, _load)
    from .benchmark_cli import add_benchmark_parser
    add_benchmark_parser(sub, _load)
    return refuse_blank_values(parser)


def main(argv: list[str] | None = None) -> int:
    from dat_core.cli_types import error_line, outlive_the_reader
    from dat_core.logs import setup_logging

    outlive_the_reader()   # before --help is printed too
    args = build_parser().parse_args(argv)
    setup_logging()  # library warnings (e.g. a compile that stays eager) as one stderr line each
    from dat_core.signals import Terminated, sigterm_as_interrupt
    try:
        with sigterm_as_interrupt():
            from dat_core.files import check_writable
            if getattr(args, "out", None):   # "~/out" as every input is read: not a folder named ~ (success, replay)
                args.out = os.path.expanduser(args.out)
            check_writable(getattr(args, "out", None), "--out", folder=True)   # before any work, not after it
            check_inputs_outside_out(args)
            return args.func(args)
    except (ValueError, OSError) as e:  # bad input: one clear line, no traceback
        print(error_line(e), file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:   # Ctrl-C or SIGTERM: what is saved stays (benchmark parts), nothing half
        print("interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130
