"""`python -m train import`: convert a released DAT checkpoint (`.pth`) into config.json + model.safetensors."""

from __future__ import annotations

import argparse
from pathlib import Path

from dat_core.cli_types import int_in

EXAMPLES = """examples:
  python -m train import --official-config model_configs/cifar10-dat-WideResNet34x10-T40-seed0.yaml \\
      --checkpoint model_bestfid.pth --out models/cifar10-dat-t40
  python -m train import --checkpoint convnext_large_dat.pth --arch convnext-large-convstem \\
      --num-classes 1000 --image-size 256 --normalization none --class-names imagenet --out models/convnext-l

Flags given explicitly override what --official-config says. Without either, the checkpoint is taken
for a CIFAR-10 wrn-34-10 with the architecture's default image size and normalization."""


def add_import_parser(sub: argparse._SubParsersAction) -> None:
    """The `import` subcommand of `python -m train`."""
    from dat_core.models import NORMALIZATIONS, known_archs
    from dat_core.models.class_names import CLASS_NAME_SETS
    from dat_core.models.config import IMAGE_SIZE, NUM_CLASSES

    p = sub.add_parser(
        "import", help="convert an official DAT .pth checkpoint to our format", epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Convert a released DAT / InNOutRobustness / ConvNeXt-CvSt state dict (.pth, loaded with "
                    "torch.load(weights_only=True); DataParallel, EMA and base_model wrappers are unwrapped) "
                    "into config.json + model.safetensors.")
    p.add_argument("--checkpoint", help="the .pth file (default: the `checkpoint` path of --official-config)")
    p.add_argument("--official-config", metavar="YAML",
                   help="a model config of the official repo (model_configs/*.yaml): sets arch, classes, "
                        "class names, image size and normalization")
    p.add_argument("--arch", help=f"architecture ({', '.join(known_archs())}; default wrn-34-10)")
    p.add_argument("--num-classes", type=int_in(*NUM_CLASSES),
                   help="10 (CIFAR-10, the default), 100 (CIFAR-100), 1000 (ImageNet)")
    p.add_argument("--image-size", type=int_in(*IMAGE_SIZE),
                   help="input resolution (default: the architecture's)")
    p.add_argument("--normalization", choices=sorted(NORMALIZATIONS),
                   help="input normalization inside the model (default: the architecture's). The official "
                        "CIFAR-100 WRNs use cifar10; the ConvNeXt-CvSt models none; ResNet-50/WRN-50 imagenet")
    p.add_argument("--class-names", metavar="|".join(CLASS_NAME_SETS) + "|FILE",
                   help="class names: a shipped set or a text file with one name per line in class order")
    p.add_argument("--out", required=True, help="output checkpoint dir")
    p.set_defaults(func=run_import)


def import_settings(args: argparse.Namespace) -> tuple[Path, dict]:
    """(checkpoint path, import_official keyword arguments) from the flags and --official-config."""
    from dat_core.models import NORMALIZATIONS
    from dat_core.models.class_names import class_names_from
    from dat_core.official import read_official_config

    official = read_official_config(args.official_config) if args.official_config else {}

    def pick(flag, key):  # an explicit flag wins over the official config
        return flag if flag is not None else official.get(key)

    checkpoint = pick(args.checkpoint, "checkpoint")
    if not checkpoint:
        raise ValueError("give --checkpoint (the .pth file to import)")
    if args.checkpoint is None and not Path(checkpoint).is_file():
        raise ValueError(f"{args.official_config} keeps its checkpoint at {checkpoint}, which is not here; "
                         "give --checkpoint")
    settings: dict = {"arch": pick(args.arch, "arch") or "wrn-34-10"}
    names = pick(args.class_names, "class_names")
    if names is not None:
        settings["class_names"] = class_names_from(names)
    num_classes = pick(args.num_classes, "num_classes")
    if num_classes is None:  # the class names tell, else CIFAR-10's
        num_classes = len(settings["class_names"]) if "class_names" in settings else 10
    settings["num_classes"] = num_classes
    if (image_size := pick(args.image_size, "image_size")) is not None:
        settings["image_size"] = image_size
    if (normalization := pick(args.normalization, "normalization")) is not None:
        settings["mean"], settings["std"] = NORMALIZATIONS[normalization]
    return Path(checkpoint), settings


def run_import(args: argparse.Namespace) -> int:
    from dat_core.official import import_official

    checkpoint, settings = import_settings(args)
    model = import_official(checkpoint, out_dir=args.out, **settings)
    c = model.config
    print(f"imported {checkpoint} -> {args.out} (config.json + model.safetensors): {c['arch']}, "
          f"{c['num_classes']} classes ({', '.join(c['class_names'][:3])}, ...), image_size {c['image_size']}, "
          f"mean {c['mean']} std {c['std']}")
    return 0
