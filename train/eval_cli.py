"""Arguments and driver of `python -m train eval`: argparse lives in train/, the evaluation in dat_core."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import Any

import numpy as np
import torch

from dat_core.checkpoint import CARD_NAME, WEIGHTS_NAME, model_card
from dat_core.cli_types import (
    MAX_SEED,
    comma_list,
    int_in,
    norm_name,
    parse_eps,
    refuse_unused,
    refuse_writing_inputs,
    step_size,
)
from dat_core.data import CIFAR_SOURCES, NOISE_KINDS, SEED_KINDS, ImageDataset, noise_seeds, train_val_split
from dat_core.data.folders import EmptyClassError
from dat_core.evaluation import ROBUST_STRONG, autoattack_accuracy, evaluate, model_info
from dat_core.evaluation.accuracy import check_radius
from dat_core.evaluation.autoattack import ATTACKS, check_autoattack
from dat_core.evaluation.ood import MAX_ADVERSARIAL_OOD, uniform_ood
from dat_core.evaluation.report import PLOT_FILES, check_judge
from dat_core.files import check_writable, write_text
from dat_core.loading import load_model, locate, resolve_source
from dat_core.pgd import NORMS, check_pixel_units
from dat_core.runtime import resolve_device, use_autocast
from dat_core.training.data import load_dataset
from dat_core.zoo import weights_sha256

OOD_LIMIT = MAX_ADVERSARIAL_OOD  # the official MAX_OOD_SAMPLES: clean and adversarial AUROC on the same images
CIFAR_ROOT = "data"   # where the official CIFAR archives are looked for (and downloaded to)
PARTS = ((("judge", "sample_seeds", "feature_model", "sample_steps", "sample_step_size"), "samples", "--samples N"),
         (("ood_holdout", "ood_limit", "ood_clean_only"), "ood", "--ood SET"),
         (("restarts", "strong"), "steps", "--steps N > 0"))
"""Options that shape one part of the report, the argument that makes that part run, and how to ask for it."""
MODEL_INFO_NAME = "model_info.json"   # RobustBench's name for the summary --model-info writes beside --json
MODEL_FIELDS = ("arch", "num_classes", "image_size", "class_names", "temperature")
"""What a report records about the model it evaluated (from its config), beside its weights' `weights_sha256`:
`train calibrate` changes the temperature (and with it ECE and energies) and not the weights."""


def radius(text: str) -> float:
    """--eps as `explain` takes it (8/255 works), finite: an attack needs a radius."""
    try:
        eps = parse_eps(text, "--eps")
    except ValueError:
        eps = math.nan
    if not math.isfinite(eps):
        raise argparse.ArgumentTypeError(f"expected a finite radius >= 0 (a number or a fraction like 8/255), "
                                         f"got {text!r}")
    return eps


def add_eval_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", required=True, help="checkpoint: 'default' (bundled), a zoo name "
                   "(dat_core.list_models()), a dir, or a Hub repo id owner/name")
    p.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit sha)")
    p.add_argument("--data", default="cifar10", help="cifar10 | cifar100 | class-folder dir or .tar(.gz)")
    p.add_argument("--root", default=None, help=f"where the official CIFAR archives live (default: {CIFAR_ROOT})")
    p.add_argument("--split", default="test", help="split to evaluate (never tune on test)")
    p.add_argument("--limit", type=int_in(1), default=None,
                   help="evaluate a fixed random subset of N images (drawn with --seed; class-sorted folders "
                        "make the first N a poor sample; default: every image of the split)")
    p.add_argument("--val-size", type=int_in(0), default=0,
                   help="evaluate only the validation carve-out of --split: the N images training's data.val_size=N "
                        "held out (same train_val_split, --seed = training's seed). Choose settings here, not on test")
    p.add_argument("--batch-size", type=int_in(1), default=256, help="images per forward/attack batch")
    p.add_argument("--norm", default="L2", choices=NORMS, type=norm_name, help="threat model of the attack")
    p.add_argument("--eps", type=radius, default=0.5,
                   help="attack radius in --norm, a number or a fraction like 8/255 (0: clean images)")
    p.add_argument("--steps", type=int_in(0), default=20, help="PGD steps (0 skips the attack)")
    p.add_argument("--step-size", type=step_size, default=0.1,
                   help="PGD step length in --norm, a number or a fraction like 2/255 (default: %(default)s)")
    p.add_argument("--restarts", type=int_in(0), default=None, help="extra random-start restarts (default: 0)")
    p.add_argument("--strong", action="store_true", help="also run 50 steps with 2 random restarts")
    p.add_argument("--autoattack", action="store_true",
                   help="also run standard AutoAttack (APGD-CE, APGD-T, FAB-T, Square; pyautoattack) at --norm/--eps: "
                        "the robust accuracy the paper reports (slow: use --limit for a first look)")
    p.add_argument("--autoattack-attacks", default=None, metavar="A,B",
                   help=f"run only these AutoAttack attacks (its 'custom' version with the standard settings, one "
                        f"restart each; implies --autoattack): {', '.join(ATTACKS)}")
    p.add_argument("--model-info", action="store_true",
                   help=f"with --autoattack and --json: also write a RobustBench-style {MODEL_INFO_NAME} beside the "
                        "JSON (clean_acc, autoattack_acc, eps, threat_model)")
    p.add_argument("--additional-data", choices=("yes", "no"), default=None,
                   help="with --model-info: whether training used images beyond the dataset's, RobustBench's "
                        "additional_data (DAT's CIFAR models: OOD images; default: what training recorded)")
    p.add_argument("--update-card", action="store_true",
                   help="write the report's numbers (AutoAttack's too) into the model-index of the README.md card of "
                        "the checkpoint dir given as --model, keeping the prose below its metadata")
    p.add_argument("--allow-empty-classes", action="store_true",
                   help="accept class folders without a usable image (they count as classes with no images)")
    p.add_argument("--ood", action="append", default=[], metavar="SET",
                   help=f"OOD set for the energy-score AUROC: {' or '.join(NOISE_KINDS)} noise, or an image "
                        "dir/archive (repeatable)")
    p.add_argument("--ood-holdout", type=int_in(0), default=None,
                   help="use only the N held-out images of an OOD archive (same split as training's "
                        "data.ood_holdout with --seed; default: all)")
    p.add_argument("--ood-limit", type=int_in(1), default=None,
                   help=f"at most this many OOD images per set (default: {OOD_LIMIT}, the official evaluation's "
                        "cap; uniform noise: also at most as many as the data and 1024)")
    p.add_argument("--ood-clean-only", action="store_true",
                   help=f"skip the adversarial OOD AUROC (by default each set's first {MAX_ADVERSARIAL_OOD} images "
                        "are also attacked to look in-distribution, L2 eps 1, 20 steps of 0.1 at 32 px, as the "
                        "official evaluation)")
    p.add_argument("--judge", default=None, help="standard model that judges class-conditional samples")
    p.add_argument("--samples", type=int_in(0), default=0,
                   help="class-conditional samples in all, cycling over the classes (PGD on f(x)[y] from seeds); "
                        "with --feature-model more than the number of classes (default: 0 = none)")
    p.add_argument("--sample-seeds", default=None, choices=SEED_KINDS,
                   help="seeds of the samples: bank = out-of-distribution photos (assets/seeds/, how DAT samples), "
                        "gaussian = class-conditional Gaussian fitted on CIFAR-10 train, uniform = pixel noise, "
                        f"lowfreq = smooth noise (default: {SEED_KINDS[0]})")
    p.add_argument("--feature-model", default=None, metavar="MODEL",
                   help="with --samples: a fixed classifier (e.g. the bundled standard model) whose penultimate "
                        "features give the samples' Fréchet distance to the evaluated images and their within-class "
                        "diversity (not FID: no Inception network)")
    p.add_argument("--sample-steps", type=int_in(1), default=None,
                   help="PGD steps per sample (default: 33 at 32 px, METHOD §4's base; more steps wash out more "
                        "of the noise seed)")
    p.add_argument("--sample-step-size", type=step_size, default=None, help="L2 step per sample step (default: 0.2 at "
                   "32 px, scaled by image_size/32)")
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=0,
                   help="seed of --limit's subset, the carve-outs, the attacks' random starts and the samples")
    p.add_argument("--out", default=None, help="dir for reliability.png / samples.png")
    p.add_argument("--json", default=None, help="write the report here")
    p.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N (default: %(default)s)")
    p.add_argument("--autocast", choices=("auto", "on", "off"), nargs="?", const="on", default="off",
                   help="bf16 autocast for forwards and attacks: auto = where the hardware has native bf16, on "
                        "(also a bare --autocast), off = fp32, the numbers papers report")
    p.add_argument("--cache-dir", default=None, help="decoded-image cache for archives (.npz)")


def ood_names(specs: list[str]) -> list[str]:
    """The report's name of each --ood set: its folder or archive name, with as many parent folders as it takes to
    tell sets of one name apart (svhn/test, cifar100/test). The same set twice is refused."""
    keys = [spec if spec in NOISE_KINDS else str(Path(spec).resolve()) for spec in specs]
    if len(set(keys)) < len(keys):
        raise ValueError("an --ood set is given twice: each set is one entry of the report")
    parts = [Path(key).parts if key not in NOISE_KINDS else (key,) for key in keys]
    for depth in range(1, max(map(len, parts), default=1) + 1):
        names = ["/".join(p[-depth:]) for p in parts]
        if len(set(names)) == len(names):
            return names
    return keys


def _ood_sets(args: argparse.Namespace, image_size: int, n_data: int) -> dict[str, Any]:
    from dat_core.data import load_image_folder

    sets: dict[str, Any] = {}
    for spec, name in zip(args.ood, ood_names(args.ood)):
        if spec == "uniform":  # `evaluate`'s own "uniform" set, capped by --ood-limit too
            sets[name] = uniform_ood(n_data, image_size, args.seed, args.ood_limit)
            continue
        if spec in NOISE_KINDS:
            sets[name] = noise_seeds(args.ood_limit, image_size, spec, seed=args.seed)
            continue
        ds = load_image_folder(spec, labeled=False, image_size=image_size, cache_dir=args.cache_dir or None)
        if args.ood_holdout:
            if not args.ood_holdout < len(ds):   # train_val_split would name its own val_size, never given here
                raise ValueError(f"--ood-holdout {args.ood_holdout}: the OOD set {name} has {len(ds)} images; hold "
                                 "out fewer, as training's data.ood_holdout leaves some as seeds")
            _, ds = train_val_split(ds, args.ood_holdout, seed=args.seed)
        # a fixed random draw, shuffled as the official loader: the attack takes the first MAX_ADVERSARIAL_OOD, and
        # sorted class folders made the first N (of the set or of a sorted draw) one folder
        pick = torch.randperm(len(ds), generator=torch.Generator().manual_seed(args.seed))[:args.ood_limit]
        sets[name] = ds.subset(pick).images
    return sets


def random_subset(data: ImageDataset, n: int, seed: int) -> ImageDataset:
    """A fixed random subset of `n` images, in dataset order: class-sorted folders make the first n one class."""
    pick = torch.randperm(len(data), generator=torch.Generator().manual_seed(seed))[:n]
    return data.subset(sorted(pick.tolist()))


def check_data_options(args: argparse.Namespace) -> None:
    """--root locates the official CIFAR archives and --cache-dir caches decoded class-folder archives: where no
    such input is read they would be silently ignored, so they are refused (before the model loads). Unset,
    --root is CIFAR_ROOT."""
    refuse_unused(args, ("root",), args.data in CIFAR_SOURCES, f"--data {' or '.join(CIFAR_SOURCES)}")
    for spec in getattr(args, "ood", []):   # an OOD folder that is not there: said now, not after the data and model
        if spec not in NOISE_KINDS and not Path(spec).exists():
            raise FileNotFoundError(2, "No such file or directory", spec)
    archives = [spec for spec in (args.data, *getattr(args, "ood", [])) if Path(spec).is_file()]
    refuse_unused(args, ("cache_dir",), bool(archives), "an archive (.tar/.tar.gz) as --data"
                  + (" or --ood" if hasattr(args, "ood") else ""))
    args.root = args.root or CIFAR_ROOT


def split_images(args: argparse.Namespace, config: dict[str, Any]) -> ImageDataset:
    """The images of `--data`/`--split` at the model's size, checked against its classes; with `--val-size N`
    only the N that training's `data.val_size=N` held out (same `train_val_split`, `--seed` = training's)."""
    try:
        data = load_dataset(args.data, args.split, config["image_size"], args.root, args.cache_dir,
                            allow_empty_classes=getattr(args, "allow_empty_classes", False))
    except EmptyClassError as e:
        raise EmptyClassError(f"{e} (here: --allow-empty-classes)") from None
    if data.class_names and list(data.class_names) != list(config["class_names"]):
        raise ValueError(f"the data's classes {data.class_names} differ from the model's {config['class_names']}")
    if args.val_size:
        if not 0 < args.val_size < len(data):
            raise ValueError(f"--val-size must be in 1..{len(data) - 1} for the {len(data)} images of --split")
        check_carve_out(args, config, data)
        data = train_val_split(data, args.val_size, seed=args.seed)[1]
    return data


def carve_outs(config: dict[str, Any]) -> list[dict[str, Any]]:
    """The validation carve-outs training recorded in the checkpoint (its own first, then its init's): split,
    val_size, seed and `val_sha256` (`data_fingerprint` of the held-out images)."""
    training = config.get("training")
    records = training.get("carve_outs") if isinstance(training, dict) else None
    return [r for r in records if isinstance(r, dict)] if isinstance(records, list) else []


def check_carve_out(args: argparse.Namespace, config: dict[str, Any], data: ImageDataset) -> None:
    """ValueError unless the `--val-size`/`--seed` carve-out of `data` lies inside every carve-out training (and the
    model it started from) held out of this split: none held out, other data, more images, another seed's draw
    or, rounding per class, another share of a class would take images the model trained on."""
    from dat_core.data.datasets import val_indices
    from dat_core.training.state import data_fingerprint

    for record in carve_outs(config):
        held, seed = record.get("val_size"), record.get("seed")
        if record.get("split") != args.split or not isinstance(held, int) or not isinstance(seed, int):
            continue
        if held == 0:
            raise ValueError(f"training held out no images of the {args.split} split (data.val_size = 0): the model "
                             "trained on every one, so a carve-out of it is not validation data")
        kept = val_indices(data, held, seed) if 0 < held < len(data) else None
        if kept is None or record.get("val_sha256") not in (None, data_fingerprint(data.subset(np.sort(kept)))):
            raise ValueError(f"--data is not the data training held {held} images of the {args.split} split out of "
                             "(other images, or in another order): its carve-out would be of other images")
        if not set(val_indices(data, args.val_size, args.seed).tolist()) <= set(kept.tolist()):
            raise ValueError(f"training held out only {held} images of the {args.split} split (seed {seed}): "
                             f"--val-size {args.val_size} --seed {args.seed} would take images the model trained "
                             f"on; use --val-size {held} --seed {seed}")


def run_eval(args: argparse.Namespace) -> dict[str, Any]:
    check_pixel_units(args.norm, args.eps, args.step_size)   # 8 for 8/255: an attack that bounds nothing
    attacks = None if args.autoattack_attacks is None else comma_list(args.autoattack_attacks, "--autoattack-attacks")
    if attacks is not None and set(attacks) - set(ATTACKS):
        raise ValueError(f"--autoattack-attacks: choose from {', '.join(ATTACKS)}, got {args.autoattack_attacks!r}")
    for options, part, needs in PARTS:
        refuse_unused(args, options, bool(getattr(args, part)), needs)
    refuse_unused(args, ("additional_data",), args.model_info, "--model-info")
    refuse_unused(args, ("ood_holdout",), any(spec not in NOISE_KINDS for spec in args.ood),
                  "an --ood folder or archive (noise holds no images out)")
    check_data_options(args)
    check_writable(args.json, "--json")
    args.restarts, args.ood_holdout = args.restarts or 0, args.ood_holdout or 0
    args.ood_limit, args.sample_seeds = args.ood_limit or OOD_LIMIT, args.sample_seeds or SEED_KINDS[0]
    run_autoattack = args.autoattack or attacks is not None
    if args.update_card and not Path(str(args.model)).is_dir():
        raise ValueError("--update-card writes into the card of a checkpoint folder: pass --model DIR")
    if args.model_info and not (run_autoattack and args.json):
        raise ValueError("--model-info writes AutoAttack results beside the report: pass --autoattack and --json")
    info_path = Path(args.json).parent / MODEL_INFO_NAME if args.model_info else None
    if info_path is not None:
        if Path(args.json).resolve() == info_path.resolve():
            raise ValueError(f"--json {args.json} is where --model-info writes {MODEL_INFO_NAME}, which would replace "
                             "the report: give the report another name")
        check_writable(info_path, "--model-info's")
    refuse_writing_inputs(outputs(args, info_path), inputs(args))
    device = resolve_device(args.device)
    directory = locate(resolve_source(args.model, args.revision))   # once: its weights' sha256 goes in the report
    model = load_model(directory, device=device)
    autocast = use_autocast(args.autocast, next(model.parameters()).device)
    size = model.config["image_size"]
    check_radius(args.norm, args.eps, (3, size, size))
    if run_autoattack:   # before the work below, which AutoAttack's refusal would otherwise throw away
        check_autoattack(args.norm, args.eps, attacks, model.config["num_classes"], (3, size, size))
    additional_data = _additional_data(args, model.config) if info_path is not None else None
    data = split_images(args, model.config)
    if args.limit:
        data = random_subset(data, args.limit, args.seed)
    if args.update_card:   # a subset does not replace numbers measured on more images: refused before the work
        from dat_core.cards import card_sample_count
        held = card_sample_count(model_card(args.model))
        if held and held > len(data):
            raise ValueError(f"--update-card: the card's results on {held} images would be replaced by this run's, "
                             f"which evaluates {len(data)}; evaluate as many, or remove the card's model-index")
    judge, judged_by = _checkpoint(args.judge, device)
    if judge is not None:
        try:
            check_judge(model, judge)
        except ValueError as e:
            raise ValueError(f"--judge {args.judge}: {e}") from None
    feature_model, featurized_by = _checkpoint(args.feature_model, device)
    robust = None if args.steps == 0 else {"norm": args.norm, "eps": args.eps, "steps": args.steps,
                                            "step_size": args.step_size, "restarts": args.restarts}
    report = evaluate(model, data, ood=_ood_sets(args, size, len(data)) or None, robust=robust,
                      robust_strong=ROBUST_STRONG if args.strong and robust else None, judge=judge,
                      samples=args.samples, out_dir=args.out, autocast=autocast, seed=args.seed,
                      batch_size=args.batch_size, sample_steps=args.sample_steps,
                      sample_step_size=args.sample_step_size, feature_model=feature_model,
                      sample_seeds=args.sample_seeds, ood_adversarial=not args.ood_clean_only)
    for part, key, named in (("sample_fidelity", "judge_model", judged_by),
                             ("sample_realism", "feature_model", featurized_by)):
        if named and part in report:   # an arch name alone: two checkpoints of one arch, two numbers under one name
            report[part][key] = named
    if run_autoattack:
        aa = autoattack_accuracy(model, data, norm=args.norm, eps=args.eps, attacks=attacks, seed=args.seed,
                                 batch_size=args.batch_size, progress=True)
        report.update(autoattack=aa, autoattack_accuracy=aa["autoattack_accuracy"])
    report.update(model=str(args.model), weights_sha256=weights_sha256(directory / WEIGHTS_NAME),
                  **{key: model.config.get(key) for key in MODEL_FIELDS},
                  data=str(args.data), split=args.split, val_size=args.val_size or None, limit=args.limit,
                  autocast=autocast, **({"ood_holdout": args.ood_holdout or None, "ood_limit": args.ood_limit}
                                        if args.ood else {}))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        write_text(Path(args.json), json.dumps(report, indent=2))
        if info_path is not None:
            info = model_info(report["autoattack"], name=str(args.model), architecture=model.config["arch"],
                              dataset=Path(str(args.data)).name, additional_data=additional_data)
            write_text(info_path, json.dumps(info, indent=2) + "\n")
    if args.update_card:
        from dat_core.cards import update_card
        card = update_card(model_card(args.model), model.config, report, dataset=Path(str(args.data)).name)
        write_text(Path(args.model) / CARD_NAME, card)
    return report


def outputs(args: argparse.Namespace, info_path: Path | None) -> list[tuple[str, Any]]:
    """What this run writes, by option: the report, the RobustBench summary beside it, the figure folder and the
    figures in it (the card --update-card writes is the one file written into an input, on purpose)."""
    figures = [] if args.out is None else [("--out", Path(args.out) / name) for name in PLOT_FILES.values()]
    return [("--json", args.json), ("--model-info", info_path), ("--out", args.out), *figures]


def inputs(args: argparse.Namespace) -> list[tuple[str, Any]]:
    """What this run reads, named by option: the checkpoint folders on this machine (a Hub model is read from the
    Hub's cache), the data (the CIFAR archives' --root) and the OOD folders or archives."""
    def model(option: str) -> tuple[str, Path | None]:
        given = getattr(args, option.strip("-").replace("-", "_"))
        try:
            source = resolve_source(given, args.revision if option == "--model" else None) if given else None
        except ValueError:   # loading it says what is wrong, in its turn
            source = None
        return f"{option} {given}", locate(source) if source is not None and source.kind != "hub" else None
    cifar = args.data in CIFAR_SOURCES
    return [model("--model"), model("--judge"), model("--feature-model"),
            (f"--data {args.data}", None if cifar else args.data),
            (f"--root {args.root}", args.root if cifar else None),
            *((f"--ood {spec}", spec) for spec in args.ood if spec not in NOISE_KINDS)]


def _additional_data(args: argparse.Namespace, config: dict[str, Any]) -> bool:
    """RobustBench's `additional_data`: --additional-data, else what training recorded, else refused (a guess
    would be published as a fact)."""
    if args.additional_data is not None:
        return args.additional_data == "yes"
    training = config.get("training")
    recorded = training.get("additional_data") if isinstance(training, dict) else None
    if isinstance(recorded, bool):
        return recorded
    raise ValueError("--model-info: say whether training used images beyond the dataset's (DAT's CIFAR models train "
                     "on 80M Tiny Images as OOD seeds): --additional-data yes|no; the checkpoint does not record it")


def check_report_of(report: dict[str, Any], directory: Path, config: dict[str, Any], label: str) -> None:
    """ValueError naming the field unless `report` (`python -m train eval --json`) is of the checkpoint in
    `directory`: the sha256 of its weights where the report records one (an older report: that of the checkpoint
    folder it names, where that is here), and the config fields it records (`MODEL_FIELDS`). A report that records
    none of these cannot be checked, and is refused too."""
    other = f"{label} is the report of another model"
    compared = [key for key in MODEL_FIELDS if key in report]
    for key in compared:
        if report[key] != config.get(key):
            raise ValueError(f"{other}: its {key} is {report[key]!r}, {directory}'s is {config.get(key)!r}")
    theirs = report.get("weights_sha256")
    if theirs is None:
        theirs = _weights_named(report.get("model"))
    ours = weights_sha256(directory / WEIGHTS_NAME)
    if theirs is not None and theirs != ours:
        raise ValueError(f"{other}: its weights (weights_sha256 {str(theirs)[:12]}...) are not those of {directory} "
                         f"({ours[:12]}...); evaluate this one: python -m train eval --model {directory} --json ...")
    if theirs is None and not compared:
        raise ValueError(f"{label} records nothing about its model (weights_sha256, {', '.join(MODEL_FIELDS)}), so "
                         f"it cannot be checked against {directory}: use the --json of `python -m train eval`")


def _checkpoint(given: str | None, device: Any) -> tuple[Any, dict[str, str] | None]:
    """(model, {"source", "weights_sha256"}) of a --judge or --feature-model, hashed as loaded (a Hub branch looked
    up again after the run could name other weights), or (None, None)."""
    if not given:
        return None, None
    directory = locate(resolve_source(given))
    return (load_model(directory, device=device),
            {"source": given, "weights_sha256": weights_sha256(directory / WEIGHTS_NAME)})


def _weights_named(model: object) -> str | None:
    """The sha256 of the weights of the checkpoint folder (or bundled model) a report names, where that is on this
    machine; None for a Hub repo (nothing is downloaded to check a report) or a folder that is gone."""
    try:
        source = resolve_source(str(model))
        if source.kind == "hub":
            return None
        weights = locate(source) / WEIGHTS_NAME
        return weights_sha256(weights) if weights.is_file() else None
    except (ValueError, OSError):
        return None
