"""`python -m train {stage1,stage2,eval,calibrate,push,import,seeds,schema}` — see `python -m train COMMAND --help`."""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from pathlib import Path

EXAMPLES = {
    "stage1": "python -m train stage1 --config train/configs/cifar10-wrn16-2-cpu-stage1.toml\n"
              "  python -m train stage1 --config CFG.toml steps=200 out_dir=runs/try optim.lr=0.05\n"
              "  torchrun --nproc_per_node=8 -m train stage1 --config CFG.toml",
    "stage2": "python -m train stage2 --config train/configs/cifar10-wrn34-10-gpu-stage2.toml "
              "model.init=runs/s1/final\n"
              "  python -m train stage2 --config CFG.toml --resume",
}


def _train(args: argparse.Namespace) -> int:
    from dat_core.training.config import load_config
    from dat_core.training.loop import train

    if args.allow_config_change and not args.resume:
        raise ValueError("--allow-config-change goes with --resume")
    declared, where = _declared_stage(args)
    if declared not in (None, args.command):   # the command used to win silently over the file's stage
        raise ValueError(f"{where} stage = {declared!r}: run `python -m train {declared}`, or change the stage")
    cfg = load_config(args.config, args.overrides, stage=args.command)
    final = train(cfg, resume=args.resume, allow_config_change=args.allow_config_change, track=args.track)
    logging.getLogger("train").info("final EMA checkpoint: %s", final)
    return 0


def _declared_stage(args: argparse.Namespace) -> tuple[object, str]:
    """(the stage the overrides or the TOML file name, or None; who names it). An unreadable file or a malformed
    override is load_config's to report."""
    import tomllib

    from dat_core.training.config import parse_override

    overrides = dict(parse_override(o) for o in args.overrides if "=" in o)
    if "stage" in overrides:
        return overrides["stage"], "the overrides say"
    try:
        stage = tomllib.loads(Path(args.config).read_text(encoding="utf-8")).get("stage") if args.config else None
    except (OSError, ValueError):
        stage = None
    return stage, f"{Path(args.config).name} says" if args.config else ""


def _schema(args: argparse.Namespace) -> int:
    from dat_core.training.config import config_schema

    print(json.dumps(config_schema(), indent=2))
    return 0


def _eval(args: argparse.Namespace) -> int:
    from train.eval_cli import run_eval

    result = run_eval(args)
    print(json.dumps(result, indent=2))
    return 0


def _push(args: argparse.Namespace) -> int:
    from dat_core.cards import read_eval_report, update_card
    from dat_core.checkpoint import model_card, read_config
    from dat_core.files import write_text
    from dat_core.hub import check_pushable, push, validate_repo_id
    from train.eval_cli import check_report_of

    validate_repo_id(args.repo_id)
    directory = Path(args.model)
    config = read_config(directory / "config.json")
    loaded = check_pushable(directory)   # before the card is read: a README.md linked out of the folder is refused
    metrics = None
    if args.eval_json:   # the numbers of this model only: a report of another checkpoint is refused by its field
        label = f"--eval-json {args.eval_json}"
        metrics = read_eval_report(args.eval_json, label)
        check_report_of(metrics, directory, loaded, label)   # defaults filled in
    dataset = card_dataset(args.dataset, metrics, args.eval_json)
    card = update_card(model_card(directory), config, metrics, repo_id=args.repo_id, dataset=dataset)
    readme = directory / "README.md"
    before = readme.read_text(encoding="utf-8") if readme.is_file() else None
    write_text(readme, card)   # the folder is uploaded as it is: the new card goes in first
    try:
        url = push(directory, args.repo_id, revision=args.revision, token=args.token, endpoint=args.endpoint,
                   private=args.private)
    except BaseException:   # nothing was published: the local card stays as it was
        if before is None:
            readme.unlink(missing_ok=True)
        else:
            write_text(readme, before)
        raise
    print(f"pushed {directory} to {args.repo_id}: {url}")
    return 0


def card_dataset(given: str | None, report: dict | None, report_path: str | None) -> str:
    """The dataset a pushed card names: --dataset, else the one the report measured (named as `eval --update-card`
    names it), else cifar10. It defaulted to cifar10 whatever the report measured, so a CIFAR-100 model's numbers
    went up as CIFAR-10's; a --dataset other than the built-in set a report measured is refused for that reason."""
    from dat_core.data import CIFAR_SOURCES

    data = report.get("data") if report else None
    measured = Path(data).name if isinstance(data, str) and data.strip() else None
    if given is not None and measured in CIFAR_SOURCES and given.rsplit("/", 1)[-1].lower() != measured:
        raise ValueError(f"--dataset {given}, but --eval-json {report_path} measured {measured}: leave --dataset out "
                         f"to name {measured}, or push a report of {given}")
    return given or measured or "cifar10"


def hub_endpoint(text: str) -> str:
    """--endpoint: an http(s) address. `http://[::1` ended in the HTTP client's traceback, `huggingface.co` in
    "could not reach the Hub", as if the network were down."""
    from urllib.parse import urlsplit

    try:
        url = urlsplit(text.strip())
        ok = url.scheme in ("http", "https") and bool(url.hostname) and (url.port or 1) > 0
    except ValueError:   # a malformed host or a port out of range
        ok = False
    if not ok:
        raise argparse.ArgumentTypeError(f"expected the http:// or https:// address of a Hub, got {text[:80]!r}")
    return text.strip()


def build_parser() -> argparse.ArgumentParser:
    from dat_core.cli_types import DefaultsHelpFormatter, OneLineParser, refuse_blank_values
    from dat_core.training.tracking import TRACKERS

    parser = OneLineParser(
        prog="python -m train", description="Train, evaluate, import and publish DAT models.",
        formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for stage, what in (("stage1", "adversarial training (cross-entropy on PGD examples), BN active"),
                        ("stage2", "Dual Adversarial Training from a stage-1 checkpoint, BN frozen")):
        p = sub.add_parser(stage, help=what, description=f"Stage {stage[-1]}: {what}.",
                           epilog="examples:\n  " + EXAMPLES[stage] + "\n\nAny config key can be overridden "
                           "as key=value (dotted for tables: optim.lr=0.05, contrastive.max_steps=20), each key once. "
                           "Unknown keys and out-of-range values are rejected by name (all keys, ranges and "
                           "choices: python -m train schema). The run directory (out_dir) gets state.pt "
                           "(resumable, saved every ckpt_every steps and on SIGTERM/SIGINT), metrics.jsonl, "
                           "eval.jsonl, samples/, curves.png, best/ and final/ (EMA weights).\n\nexit codes:\n"
                           + _exit_codes(),
                           formatter_class=argparse.RawDescriptionHelpFormatter)
        p.add_argument("--config", help="TOML config (train/configs/*.toml); defaults apply without one")
        p.add_argument("--resume", action="store_true", help="continue the run in out_dir from its state.pt")
        p.add_argument("--allow-config-change", action="store_true",
                       help="with --resume: accept config values that differ from the run's (they are listed); "
                            "the model, data, batch size and optimizer kind of a run never change")
        p.add_argument("--track", default=None, metavar="NAME",
                       help=f"also mirror metrics.jsonl and eval.jsonl rows to a tracker: {', '.join(TRACKERS)} "
                            "(its package must be installed; metrics.jsonl stays the record)")
        p.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
        p.set_defaults(func=_train)

    from train.eval_cli import add_eval_arguments
    p = sub.add_parser("eval", help="clean/robust accuracy, calibration, OOD AUROC, samples",
                       description="Evaluate a checkpoint; prints (and with --json writes) a JSON report "
                                   "with clean_accuracy and robust_accuracy as fractions.",
                       formatter_class=DefaultsHelpFormatter)
    add_eval_arguments(p)
    p.set_defaults(func=_eval)

    p = sub.add_parser("schema", help="print the JSON schema of training configs (keys, ranges, choices)",
                       description="JSON schema of the TOML training configs: every key with its type, range, "
                                   "choices and description.")
    p.set_defaults(func=_schema)

    p = sub.add_parser("push", help="update the model card and upload a checkpoint dir to the Hub",
                       formatter_class=DefaultsHelpFormatter,
                       description="Write the model card's Hub metadata (with metrics from an eval JSON) "
                                   "and upload config.json, model.safetensors and README.md: nothing else in the "
                                   "folder (state.pt, logs), and none of them linked from outside it.")
    p.add_argument("--model", required=True, help="checkpoint dir")
    p.add_argument("--repo-id", required=True, help="owner/name")
    p.add_argument("--revision", default=None, help="branch to push to (default: main)")
    p.add_argument("--eval-json", default=None, help="metrics from `python -m train eval --json`")
    p.add_argument("--dataset", default=None,
                   help="dataset name for the card metadata (default: the dataset --eval-json measured, else cifar10)")
    p.add_argument("--token", default=None, help="Hub token with write access (default: HF_TOKEN / cached login; "
                                                  "prefer those: a token given here shows in the process list)")
    p.add_argument("--endpoint", default=None, type=hub_endpoint,
                   help="Hub endpoint, an http(s) address (default: HF_ENDPOINT or huggingface.co)")
    p.add_argument("--private", action="store_true", help="create the repo as private")
    p.set_defaults(func=_push)

    from train.import_cli import add_import_parser
    add_import_parser(sub)
    from train.seeds_cli import add_seeds_parser
    add_seeds_parser(sub)
    from train.calibrate_cli import add_calibrate_parser
    add_calibrate_parser(sub)
    return refuse_blank_values(parser)


def _exit_codes() -> str:
    from dat_core.training.errors import EXIT_CODES

    return "\n".join(f"  {code:<6} {what}" for code, what in EXIT_CODES.items())


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line; a stage's key=value overrides may sit on both sides of its options (argparse alone fills
    a positional list once: `--config C steps=5 --resume seed=1` lost `seed=1` to "unrecognized arguments")."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra and (getattr(args, "overrides", None) is None
                  or not all("=" in e and not e.startswith("-") for e in extra)):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if extra:
        args.overrides += extra
    if overrides := getattr(args, "overrides", None):
        from dat_core.training.config import repeated_key

        twice = repeated_key(overrides)
    if overrides and twice:   # a usage error of the subcommand, as argparse's own
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub.choices[args.command].error(twice)
    return args


def main(argv: list[str] | None = None) -> int:
    from dat_core.cli_types import outlive_the_reader
    from dat_core.logs import setup_logging

    outlive_the_reader()   # before --help is printed too
    args = parse(argv)
    setup_logging()
    from dat_core.signals import Terminated, sigterm_as_interrupt
    from dat_core.training.errors import TrainingError
    try:
        with sigterm_as_interrupt():   # training sets its own handlers (it saves its state first)
            from dat_core.files import check_writable
            check_writable(getattr(args, "out", None), "--out", folder=True)   # before any work, not after it
            return args.func(args)
    except (ValueError, OSError) as e:  # bad config, input or path (missing, unreadable, a folder): one clear line
        _say(e)
        return 2
    except TrainingError as e:  # the exception names its exit code (dat_core.training.errors)
        _say(e)
        return e.exit_code
    except KeyboardInterrupt as e:  # Ctrl-C or SIGTERM in eval, calibrate, import... (training saves its state)
        print("interrupted", file=sys.stderr)
        return 143 if isinstance(e, Terminated) else 130


def _say(error: BaseException) -> None:
    if getattr(error, "shared", False) and os.environ.get("RANK", "0") != "0":
        return  # under torchrun, rank 0 reports an error that every rank raised
    from dat_core.cli_types import error_line

    print(error_line(error), file=sys.stderr)


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:  # Ctrl-C while torch still loads: the same one line as later (main), no traceback
        print("interrupted", file=sys.stderr)
        sys.exit(130)
