"""`python -m train calibrate`: fit a checkpoint's temperature on validation data (temperature scaling).

Stage 2 can leave a model under- or over-confident (its reliability diagram shows it). One temperature T,
fitted by likelihood on the validation carve-out that training held out, divides every logit afterwards:
predictions and the direction of every normalized PGD step on a logit stay as they were; p(y|x) becomes
honest (attacks on the cross-entropy see a rescaled loss, so their numbers can move slightly). T is stored
in config.json (`temperature`, with how it was fitted under `calibration`) and the energy quantiles are
recomputed for it; `--off` removes it again. Never fitted on a test split.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

MAX_VAL_SIZE = 10 ** 9
"""More images than any --data holds (as many as `train eval --val-size` takes): a larger --val-size is refused
before the model and every image of --data load, not after."""

EXAMPLES = """examples:
  python -m train calibrate --model runs/s2/final --data cifar10 --val-size 2000
  python -m train calibrate --model runs/s2/final --data ../shared/data/cifar10-jpg.tar.gz --out runs/s2/calibrated
  python -m train calibrate --model runs/s2/final --data cifar10 --off"""


def add_calibrate_parser(sub: argparse._SubParsersAction) -> None:
    from dat_core.cli_types import MAX_SEED, int_in
    from train.eval_cli import CIFAR_ROOT

    p = sub.add_parser("calibrate", help="fit the temperature that makes p(y|x) calibrated (validation data)",
                       epilog=EXAMPLES, description=__doc__.split("\n\n")[1],
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint folder (config.json + model.safetensors)")
    p.add_argument("--out", default=None, help="write the calibrated checkpoint here (default: into --model)")
    p.add_argument("--data", default="cifar10",
                   help="cifar10 | cifar100 | class-folder dir or .tar(.gz) (default: %(default)s)")
    p.add_argument("--root", default=None, help=f"where the official CIFAR archives live (default: {CIFAR_ROOT})")
    p.add_argument("--split", default="train",
                   help="split holding the validation carve-out, never test (default: %(default)s)")
    p.add_argument("--val-size", type=int, default=None,
                   help="the N images training's data.val_size=N held out of --split (same train_val_split; "
                        "default: the carve-out training recorded in the checkpoint; required when it records none)")
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=None,
                   help="training's seed (it fixes which images were held out; default: the recorded one, else 0)")
    p.add_argument("--off", action="store_true", help="remove the temperature (back to the raw logits)")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    p.add_argument("--autocast", nargs="?", const="on", default="off", choices=("auto", "on", "off"),
                   help="bf16 autocast for the forward passes: auto, on (also a bare --autocast), off (the fit sees "
                        "fp32 logits, like `train eval`) (default: %(default)s)")
    p.add_argument("--cache-dir", default=None, help="cache decoded archives here (.npz)")
    p.set_defaults(func=run_calibrate)


def run_calibrate(args: argparse.Namespace) -> int:

    from dat_core.cards import without_metric
    from dat_core.checkpoint import load_checkpoint_dir, model_card, save_model
    from dat_core.energy import marginal_energy
    from dat_core.evaluation import as_batches, energy_quantiles, fit_temperature, predict
    from dat_core.models.config import TEMPERATURE_RANGE
    from dat_core.runtime import resolve_device, use_autocast
    from train.eval_cli import carve_outs, check_data_options, split_images

    if args.split == "test":
        raise ValueError("calibrate fits on validation data: a temperature fitted on the test split would make "
                         "every test metric after it optimistic (use --split train --val-size N)")
    if args.val_size is not None and not 1 <= args.val_size <= MAX_VAL_SIZE:
        raise ValueError("--val-size must be in 1..(images of --split - 1): calibrate fits on the validation "
                         "carve-out, never on images the model trained on")
    if args.batch_size < 1:
        raise ValueError("--batch-size must be >= 1")
    check_data_options(args)
    source = Path(args.model)
    if not source.is_dir():
        raise ValueError("--model must be a checkpoint folder (calibrate writes its config.json)")
    _refuse_writing_inputs(args, source)
    device = resolve_device(args.device)
    model = load_checkpoint_dir(source, label=str(args.model)).to(device)
    record = next((r for r in carve_outs(model.config) if r.get("split") == args.split), {})
    if args.val_size is None and not record:   # 2000 images at seed 0 were taken: of an imported checkpoint, which
        raise ValueError(f"{args.model} records no validation carve-out of the {args.split} split (an import or an "
                         "older run), so which of its images the model never trained on is unknown: give --val-size "
                         "N and --seed S of the images its training held out (of --data, which may be other data)")
    _take_recorded(args, record)
    autocast = use_autocast(args.autocast, device)
    val = split_images(args, model.config)

    model.config.pop("temperature", None)  # fit on the raw logits, whatever was stored before
    raw = predict(model, as_batches(val, args.batch_size), autocast=autocast, progress=True).double()
    labels = val.labels.long()
    temperature = None if args.off else fit_temperature(raw, labels)
    low, high = TEMPERATURE_RANGE
    if temperature is not None and temperature > high:
        raise ValueError(f"the fitted temperature {temperature:.3g} is above {high:g}: the model's logits carry "
                         "almost no information about these labels (is --data the data it was trained on?); "
                         "nothing was written")
    if temperature is not None and temperature < low:
        raise ValueError(f"the fitted temperature {temperature:.3g} is below {low:g}: the model is right on (nearly) "
                         "every validation image with room to spare, so the likelihood keeps rising as T falls; "
                         "calibrate on more validation images (nothing was written)")
    scaled = raw if temperature is None else raw / temperature
    report = {"temperature": temperature, "n": len(val), "split": args.split, "val_size": args.val_size,
              "seed": args.seed, **_scores(raw, labels, "before"), **_scores(scaled, labels, "after"),
              "scored_on": "the images T was fitted on: ece_after is optimistic; `python -m train eval` measures "
                           "it on others"}
    model.config.pop("calibration", None)
    if temperature is not None:
        model.config["temperature"] = temperature
        model.config["calibration"] = {
            "method": "temperature scaling (Guo et al. 2017): T minimizing the NLL on validation data",
            **{k: v for k, v in report.items() if k != "temperature"}}
    model.config["energy_quantiles"] = energy_quantiles(marginal_energy(scaled))
    out = Path(args.out) if args.out else source
    card = model_card(source)   # its ECE was the old temperature's: a card keeps only numbers still the model's
    save_model(model.cpu(), out, card=without_metric(card, "ece") if card is not None else None)
    print(json.dumps(report, indent=2))
    return 0


def _take_recorded(args: argparse.Namespace, record: dict[str, Any]) -> None:
    """--val-size and --seed not given: the carve-out training recorded, read like any input. A run with
    data.val_size=0 records 0, which split_images took as "the whole split": every image the model trained on."""
    from dat_core.cli_types import MAX_SEED

    taken = {"val_size": (args.val_size, MAX_VAL_SIZE), "seed": (args.seed, MAX_SEED)}
    for key, (given, high) in taken.items():
        value = record.get(key, 0 if key == "seed" else None)   # an older record has no seed: training's default
        if given is None and (not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= high):
            raise ValueError(f"{args.model} records a malformed carve-out of the {args.split} split ({key} "
                             f"{value!r:.40}): give --val-size N and --seed S of the images its training held out")
    if args.val_size is None and record.get("val_size") == 0:
        raise ValueError(f"training held out no images of the {args.split} split (data.val_size = 0): the model "
                         "trained on every one, so none can fit its temperature; give a split it never trained on "
                         "(--split NAME --val-size N)")
    args.val_size = record.get("val_size") if args.val_size is None else args.val_size
    args.seed = record.get("seed", 0) if args.seed is None else args.seed


def _refuse_writing_inputs(args: argparse.Namespace, source: Path) -> None:
    """--out inside the class-folder data became one more (empty) class that every later run on it refused, and
    inside --model a second checkpoint pushed with it; --out at --model itself is the default, and allowed."""
    from dat_core.cli_types import refuse_writing_inputs
    from dat_core.data import CIFAR_SOURCES

    if not args.out:
        return
    cifar = args.data in CIFAR_SOURCES
    model = None if Path(args.out).resolve() == source.resolve() else source
    refuse_writing_inputs([("--out", args.out)], [(f"--model {args.model}", model),
                                                  (f"--data {args.data}", None if cifar else args.data),
                                                  (f"--root {args.root}", args.root if cifar else None)])


def _scores(logits: Any, labels: Any, when: str) -> dict[str, float]:
    import torch

    from dat_core.evaluation import expected_calibration_error

    ece, _ = expected_calibration_error(torch.softmax(logits, 1), labels)
    nll = float(torch.nn.functional.cross_entropy(logits, labels))
    return {f"ece_{when}": ece, f"nll_{when}": nll}
