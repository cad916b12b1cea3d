"""Labelled image sets for the batch commands (`success`, `benchmark`): a folder of images, or the
validation carve-out of a training set (the same `train_val_split` as training: never trained on, never
the test split unless asked for with `--split test`)."""

from __future__ import annotations

import argparse
import itertools
from pathlib import Path
from typing import Any

from dat_core.assets import ASSETS_DIR
from dat_core.cli_types import refuse_unused

from .image import to_model_input

EXAMPLES_DIR = ASSETS_DIR / "examples"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
DATA_DEFAULTS = {"split": "train", "val_size": 2000, "seed": 0}


def image_set_options(p: argparse.ArgumentParser, limit: int, split_help: str = "") -> None:
    """--images | --data ARCHIVE --split --val-size --seed, and --limit (out-of-range numbers: a usage error)."""
    from dat_core.cli_types import MAX_SEED, int_in

    source = p.add_mutually_exclusive_group()   # both given: one would be silently ignored
    source.add_argument("--images", default=str(EXAMPLES_DIR),
                        help="a folder of images; a file named CLASS-ID.ext is labelled CLASS, the text before the "
                             "last '-' (cat-0001.png: cat), when the model has such a class; others by the model's "
                             "prediction (default: the bundled examples)")
    source.add_argument("--data", default=None, help="a class-folder archive/dir: use its validation carve-out instead")
    p.add_argument("--split", default=None,
                   help=f"split folder of --data (default: {DATA_DEFAULTS['split']})" + split_help)
    p.add_argument("--val-size", type=int_in(0), default=None,
                   help=f"validation images of --data carved as training does (data.val_size; default: "
                        f"{DATA_DEFAULTS['val_size']}); 0 = every image of --split")
    p.add_argument("--seed", type=int_in(0, MAX_SEED), default=None,
                   help=f"training's seed (the carve-out's of --data; default: {DATA_DEFAULTS['seed']})")
    p.add_argument("--limit", type=int_in(1), default=limit,
                   help="at most this many images, spread over the classes (default: %(default)s)")


def resolve_data_options(args: argparse.Namespace) -> None:
    """--split, --val-size and --seed choose from --data: without it they would be silently ignored, so they are
    refused; with it, unset ones take their defaults (set in `args`, which run folders record)."""
    refuse_unused(args, DATA_DEFAULTS, args.data is not None, "--data")
    if args.data is None:
        return
    for k, v in DATA_DEFAULTS.items():
        if getattr(args, k) is None:
            setattr(args, k, v)


def check_image_source(args: argparse.Namespace) -> None:
    """A --images folder that is none (or holds no image) or a --data that does not exist, refused before the model
    loads (a Hub model downloads first)."""
    if args.data is None:
        _image_files(args.images)
    elif args.data not in ("cifar10", "cifar100") and not Path(args.data).expanduser().exists():
        raise ValueError(f"--data {args.data} does not exist")


def load_image_set(args: argparse.Namespace, class_names: list[str], size: int) -> tuple[list[Any],
                                                                                        list[int | None], list[str]]:
    """(images, labels, names) from `image_set_options`: images are (1,3,H,W) float tensors, every file decoded
    here, before any work (a bad file found midway would throw away the work before it); a label is None where
    a file name does not name a class."""
    if not 0 < args.limit:
        raise ValueError(f"--limit must be >= 1; got {args.limit}")
    resolve_data_options(args)
    if args.data:
        from dat_core.data import train_val_split
        from dat_core.training.data import load_dataset

        full = load_dataset(args.data, args.split, size)
        if list(full.class_names) != list(class_names):
            raise ValueError(f"--data has classes {full.class_names[:4]}…, the model {class_names[:4]}…")
        val = train_val_split(full, args.val_size, seed=args.seed)[1] if args.val_size > 0 else full
        n = min(args.limit, len(val))
        picked = [k * len(val) // n for k in range(n)]  # evenly spread: class-folder data is sorted by class
        tag = "val" if args.val_size > 0 else args.split
        return ([val.images[i].float().div(255)[None] for i in picked], [int(val.labels[i]) for i in picked],
                [f"{tag}[{i}]" for i in picked])
    files = _image_files(args.images)
    index = {n.lower(): i for i, n in enumerate(class_names)}
    label = {f: index.get(f.stem.rsplit("-", 1)[0].lower()) for f in files}   # a class name may hold a '-' too
    by_label: dict[int | None, list[Path]] = {}
    for f in files:
        by_label.setdefault(label[f], []).append(f)
    # --limit takes the classes in turn (the unlabelled files as one more), as --data's carve-out spreads
    in_turn = [f for turn in itertools.zip_longest(*by_label.values()) for f in turn if f is not None]
    files = sorted(in_turn[:args.limit])
    return [to_model_input(f, size) for f in files], [label[f] for f in files], [f.name for f in files]


def _image_files(images: str) -> list[Path]:
    """The image files of the --images folder, sorted; ValueError when it is no folder or holds none."""
    folder = Path(images).expanduser()
    if not folder.is_dir():
        raise ValueError(f"--images {images} is not a folder")
    files = sorted(f for f in folder.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise ValueError(f"--images {images} holds no images")
    return files
