"""`python -m explain replay card.json`, and the `--card` export of `python -m explain counterfactual`."""

from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import Any

EPILOG = """examples:
  python -m explain counterfactual --image cat.png --target dog --card --out out/cf   # writes out/cf/card.json
  python -m explain replay out/cf/card.json --out out/replay
  python -m explain replay out/cf/card.json --image cat.png   # and check that cat.png is the card's image

Exit status 0 when every frame is reproduced bit for bit, 1 when the path differs (another device or dtype,
another PyTorch build), 2 on bad input or when the model's weights (or --image) are not the card's."""


def add_replay_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("replay", help="run an explanation card's counterfactual again and check it bit for bit",
                       description="Load the card's model (checking its weights' sha256), run the same path from the "
                                   "card's exact x_0 and compare every frame.", epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("card", help="card.json written by `python -m explain counterfactual --card`")
    p.add_argument("--device", default=None, help="run on this device instead of the card's")
    p.add_argument("--out", default=None, help="also write the replayed trajectory here")
    p.add_argument("--image", default=None, metavar="FILE",
                   help="also check that FILE is the image the card explains (its sha256; for a card without one, "
                        "that it gives the card's exact x_0); exit 2 when it is not")
    p.set_defaults(func=run_replay)


def run_replay(args: argparse.Namespace) -> int:
    from .card import check_image, read_card, replay
    from .export import fixed_outputs, save_gif, save_metrics_json, staged

    card = read_card(args.card)
    if args.out and _holds_a_run(Path(args.out), Path(args.card)):
        raise ValueError("--out holds the card's run (or another counterfactual's): a replay written there would mix "
                         "two runs in one folder; choose another --out")
    if args.image:
        print(check_image(card, args.image))
    result = replay(args.card, device=args.device)
    t = result.trajectory
    if args.out:   # both files of one replay: a stop leaves the earlier replay's (`staged`)
        out = Path(args.out)
        with staged(out, fixed_outputs(out, ("trajectory.gif", "metrics.json"))) as stage:
            save_gif(t, stage / "trajectory.gif")
            save_metrics_json(t, stage / "metrics.json")
    where = "" if result.same_setting else f" (card: {card['device']}, here: another device)"
    if result.identical:
        print(f"reproduced bit for bit: {t.class_names[t.source]} -> {t.class_names[t.target]}, "
              f"p = {float(t.confidence[-1]):.4f}{where}")
        return 0
    if result.max_abs_diff == 0:
        print(f"differs from the card: x_T equals the card's, but the frames' sha256 does not (an intermediate frame "
              f"differs, or the card's frames_sha256 was edited){where}")
        return 1
    print(f"differs from the card: max |x_T - card x_T| = {result.max_abs_diff:.3g}, p = {float(t.confidence[-1]):.4f} "
          f"(card {card['metrics']['confidence_target']:.4f}){where}")
    return 1


def write_card_for(args: argparse.Namespace, model: Any, traj: Any, out: Path, mask: Any = None) -> list[Path]:
    """The `--card` export of one counterfactual run by the CLI (`mask`: the mask image the run used)."""
    from dat_core.runtime import model_device

    from .card import make_card, write_card
    from .image import to_mask

    image_sha = hashlib.sha256(Path(args.image).expanduser().read_bytes()).hexdigest()   # "~/cat.png", as it was read
    mask = None if mask is None else to_mask(mask, int(model.config["image_size"]))
    card = make_card(traj, model, args.model, args.revision, image_sha256=image_sha, autocast=bool(args.autocast),
                     device=model_device(model), mask=mask, guide=args.guide)
    return write_card(card, traj, out, scale=args.scale)


def _holds_a_run(out: Path, card: Path) -> bool:
    """Whether `out` is the card's folder or holds a counterfactual's outputs (its card, its list of outputs)."""
    from .export import MANIFEST

    return out.is_dir() and (out.resolve() == card.resolve().parent or (out / "card.json").is_file()
                             or (out / MANIFEST).is_file())
