"""`python -m train seeds`: write the sampling seed bank and the class-conditional Gaussians from a training config.

The bank is the config's `data.ood_seed_bank` carve-out of the OOD images (after `data.ood_holdout`), so a
model trained with that config never saw a bank image as a contrastive seed, and the OOD-detection holdout
stays disjoint from it. The Gaussians are fitted on the config's training split (validation carved out).
Where out_dir holds the config's run, its carve-outs are the ones its state records (a seed changed on resume
changes the data order, never which images were held out).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import TYPE_CHECKING

from dat_core.cli_types import int_in, refuse_writing_inputs
from dat_core.logs import get_logger

if TYPE_CHECKING:
    from dat_core.training.config import TrainConfig

log = get_logger("train")

MAX_RESOLUTION = 32
"""Largest side the Gaussians are fitted at: a full covariance of 3 * 32^2 = 3,072 pixels per class."""

EXAMPLES = """examples:
  python -m train seeds --config train/configs/cifar10-wrn16-2-cpu-stage2.toml
  python -m train seeds --config CFG.toml --bank-out my-bank.safetensors --gaussians-out ""

Defaults write the shipped files (assets/seeds/); "" skips one of them."""


def add_seeds_parser(sub: argparse._SubParsersAction) -> None:
    from dat_core.data.seeds import CLASS_GAUSSIANS, SEED_BANK

    p = sub.add_parser("seeds", help="write the seed bank and class Gaussians used for sampling", epilog=EXAMPLES,
                       formatter_class=argparse.RawDescriptionHelpFormatter, description=__doc__.split("\n\n")[1])
    p.add_argument("--config", required=True, help="the stage-2 TOML config whose data.ood_seed_bank carve-out "
                                                   "becomes the bank")
    # type=str: "" is meaningful here (skip that file), so refuse_blank_values leaves these two alone
    p.add_argument("--bank-out", type=str, default=str(SEED_BANK), help='seed bank file (.safetensors; "": skip)')
    p.add_argument("--gaussians-out", type=str, default=str(CLASS_GAUSSIANS),
                   help='class Gaussians file (.safetensors; "": skip)')
    p.add_argument("--resolution", type=int_in(1, MAX_RESOLUTION), default=8,
                   help=f"side of the images the Gaussians are fitted at (1-{MAX_RESOLUTION}: a full covariance of "
                        f"3*side^2 pixels per class; {MAX_RESOLUTION} px is 3,072)")
    p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    p.set_defaults(func=run_seeds)


def run_seeds(args: argparse.Namespace) -> int:
    from dat_core.data import CIFAR_SOURCES
    from dat_core.data.seeds import NOISE_KINDS, fit_class_gaussians, write_class_gaussians, write_seed_bank
    from dat_core.training.config import load_config
    from dat_core.training.data import load_train_val, ood_parts
    from dat_core.training.state import PREVIOUS_FILE, STATE_FILE
    from dat_core.zoo import weights_sha256

    _check_outputs(args.bank_out, args.gaussians_out)
    cfg = load_config(args.config, args.overrides)
    d = cfg.data
    cifar = d.dataset in CIFAR_SOURCES
    refuse_writing_inputs((("--bank-out", args.bank_out), ("--gaussians-out", args.gaussians_out)), (
        (f"--config {args.config}", args.config), (f"data.dataset {d.dataset}", None if cifar else d.dataset),
        (f"data.root {d.root}", d.root if cifar else None),
        (f"data.ood {d.ood}", None if d.ood in NOISE_KINDS else d.ood),
        *((f"the run's {name}", Path(cfg.out_dir) / name) for name in (STATE_FILE, PREVIOUS_FILE))))   # read
    seed = run_data_seed(cfg, (("data.ood_holdout", "data.ood_seed_bank") if args.bank_out else ())
                         + (("data.val_size",) if args.gaussians_out else ()))
    pending = {}   # everything is computed before the first file is written: a failure replaces neither
    if args.bank_out:
        if d.ood in NOISE_KINDS:   # said before any data loads; it was "error: uniform does not exist"
            raise ValueError(f"the seed bank is carved from OOD images, and data.ood = {d.ood} is noise with none: "
                             "set data.ood to an image folder or archive, or skip the bank with --bank-out \"\"")
        if not d.ood_seed_bank:
            raise ValueError("data.ood_seed_bank is 0 in this config: set it (e.g. data.ood_seed_bank=1000)")
        _, _, bank = ood_parts(cfg, seed)
        source = Path(d.ood)
        meta = {"source": source.name, "how": (
            f"data.ood_seed_bank={d.ood_seed_bank} images carved (train_val_split, seed {seed + 1}) from the "
            f"{source.name} images left after the data.ood_holdout={d.ood_holdout} OOD-evaluation holdout "
            f"(seed {seed}); disjoint from both the contrastive seeds and the holdout of this config"),
            "config": Path(args.config).name}
        if source.is_file():
            meta["source_sha256"] = weights_sha256(source)  # the zoo's file hasher: any file
        pending["bank"] = (write_seed_bank, args.bank_out, bank.images[:], meta)
    if args.gaussians_out:
        train_set, _ = load_train_val(cfg, seed)
        g = fit_class_gaussians(train_set, args.resolution)
        meta = {"source": Path(d.dataset).name, "how": (
            f"per-class mean and covariance of the {len(train_set)} training images (validation carved out, "
            f"seed {seed}) "
            f"area-pooled to {args.resolution}x{args.resolution}, + 1e-3 x mean variance on the diagonal")}
        pending["gaussians"] = (write_class_gaussians, args.gaussians_out, g, meta)
    written = {name: str(write(path, data, meta)) for name, (write, path, data, meta) in pending.items()}
    print(json.dumps(written, indent=2))
    return 0


def run_data_seed(cfg: "TrainConfig", carve_outs: tuple[str, ...] = ()) -> int:
    """The seed the run in out_dir carved its validation split, OOD holdout and bank with (its state saves it:
    a resume with another seed keeps them); the config's seed where no run is there yet. The bank carved with
    another seed, or of other `carve_outs` sizes (dotted keys) than the run's, would hold images that run drew as
    contrastive seeds: those sizes are refused."""
    from dat_core.training.config import flat

    saved, path = _run_state(Path(cfg.out_dir))
    if saved is None:
        return cfg.seed
    old, new = flat(saved["config"]), flat(cfg)
    differ = [k for k in carve_outs if k in old and old[k] != new[k]]
    if differ:
        raise ValueError(f"the run in {cfg.out_dir} carved {', '.join(f'{k}={old[k]!r}' for k in differ)} (its "
                         f"{path.name} says), this config {', '.join(f'{k}={new[k]!r}' for k in differ)}: the files "
                         "would not be carved as that run's images were (a bank of seeds it trained from, Gaussians "
                         "of its validation images); give the run's values, or another out_dir")
    seed = saved.get("data_seed", saved["config"].get("seed", cfg.seed))
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ValueError(f"{path} records no usable data seed ({seed!r}): give another out_dir")
    if seed != cfg.seed:
        log.warning("the run in %s held its images out with seed %d (its state says; the config says %d): the "
                    "files are carved and fitted with seed %d", cfg.out_dir, seed, cfg.seed, seed)
    return seed


def _run_state(out: Path) -> tuple[dict | None, Path | None]:
    """(state, its file) of the run in `out`, or (None, None) where none is. A run is there when state.pt or
    state.prev.pt is (as --resume sees it); every state of a run records the same carve-outs, so state.prev.pt
    stands in for a state.pt that is gone or unusable. Memory-mapped: its weights are never read."""
    from dat_core.training.errors import StateError
    from dat_core.training.state import PREVIOUS_FILE, STATE_FILE, load_state_file

    problems = []
    for path in (out / STATE_FILE, out / PREVIOUS_FILE):
        if not path.exists():
            continue
        try:
            saved = load_state_file(path, mmap=True)
        except StateError as e:
            problems.append(str(e))
            continue
        if problems or path.name == PREVIOUS_FILE:
            log.warning("%s; the carve-outs are read from %s", problems[0] if problems else
                        f"{out / STATE_FILE} does not exist", path)
        return saved, path
    if problems:
        raise ValueError(f"{'; '.join(problems)}: which images the run in out_dir held out is unknown (point "
                         "out_dir at a run folder, or at a new one)")
    return None, None


def _check_outputs(bank_out: str, gaussians_out: str) -> None:
    """Both output paths usable, before any work: "" skips a file, a blank one is a mistake, one file for both
    would hold only the Gaussians (and, once the config is read, neither may replace or join an input)."""
    from dat_core.files import check_writable

    if not bank_out and not gaussians_out:
        raise ValueError('--bank-out "" and --gaussians-out "" skip both files: nothing would be written')
    for option, value in (("--bank-out", bank_out), ("--gaussians-out", gaussians_out)):
        if value and not value.strip():
            raise ValueError(f'{option} is blank: give a file name, or "" to skip that file')
        check_writable(value or None, option)
    if bank_out and gaussians_out and Path(bank_out).resolve() == Path(gaussians_out).resolve():
        raise ValueError("--bank-out and --gaussians-out name the same file: give each its own")
