"""`python -m explain success`: counterfactual success over (image, other class) pairs, for one setting or a sweep.

Images come from a folder (default: the bundled examples, labelled by file name `class-NNNN.jpg`) or from the
validation carve-out of a training set (`--data`, the same `train_val_split` as training: never trained on,
never the test split), which is where defaults are chosen.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable

from dat_core.cli_types import comma_list, int_in, probability, step_size
from dat_core.files import write_text

EPILOG = """examples:
  python -m explain success --out out/success                                   # bundled examples, defaults
  python -m explain success --data ../shared/data/cifar10-jpg.tar.gz --limit 100 \\
      --eps 2,3,4 --steps 60,100 --out out/tune                                  # a sweep on validation images

writes success.json (one entry per setting: success rate, final-step rate, mean final confidence, median L2,
the pairs that fell short) as each setting ends, and prints one line per setting; the same command into the same
--out continues a stopped sweep (settings finished with the same model, images and options are not run again)"""


def add_success_parser(sub: argparse._SubParsersAction, load: Callable[[argparse.Namespace], Any]) -> None:
    """The `success` subcommand; `load` loads the model as the other commands do."""
    from .cli_options import common_options, norm_name
    from .image_sets import image_set_options
    from .params import NORMS

    p = sub.add_parser("success", help="how often paths toward every other class reach it (default tuning)",
                       description=__doc__.split("\n\n")[1], epilog=EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    common_options(p)
    image_set_options(p, limit=50)
    p.add_argument("--threshold", type=probability, default=0.5, help="p(target) that counts as reached "
                                                                      "(default: %(default)s)")
    p.add_argument("--norm", default="L2", choices=NORMS, type=norm_name, help="threat model (default: L2)")
    p.add_argument("--eps", default=None, help="radius or comma list to sweep (default: the app's default)")
    p.add_argument("--steps", default=None, help="PGD steps or comma list (default: the app's default)")
    p.add_argument("--step-size", default=None, help="step length or comma list (default: the app's default)")
    p.set_defaults(func=lambda args: run_success(args, load))


def comma_values(text: str | None, option: str, parse: Callable[[str], Any]) -> list[Any]:
    """"1,2,3" -> parsed values, each once (`dat_core.cli_types.comma_list`); not given (None) -> [None], the
    default."""
    return [None] if text is None else comma_list(text, option, parse)


def run_success(args: argparse.Namespace, load: Callable[[argparse.Namespace], Any]) -> int:
    import itertools

    from tqdm import tqdm

    from dat_core.files import claimed

    from . import success
    from .image_sets import check_image_source, load_image_set, resolve_data_options
    from .params import eps_name, eps_text, parse_eps, resolve_request
    from .trajectory import model_info

    grid = {"eps": comma_values(args.eps, "--eps", parse_eps),
            "steps": comma_values(args.steps, "--steps", int_in(1, 1000)),
            "step_size": comma_values(args.step_size, "--step-size", step_size)}
    settings = list(itertools.product(grid["eps"], grid["steps"], grid["step_size"]))
    for e, s, a in settings:   # every setting, before the first runs: an Linf eps 8 ended a sweep halfway
        resolve_request(32, args.norm, eps=e, step_size=a, steps=s)
    resolve_data_options(args)   # before the model loads
    check_image_source(args)
    out = Path(args.out)   # checked by explain's main before any work; made once the inputs are read
    model = load(args)
    size, class_names, _ = model_info(model)
    images, labels, names = load_image_set(args, class_names, size)
    run = _run_print(args, model, images, labels, names)
    with claimed(out, "success sweep"), tqdm(total=len(images) * len(settings), desc="images", unit="img") as bar:
        done = _finished(out / "success.json", run)
        summaries, keys = [], []
        for e, s, a in settings:
            key = json.dumps([e, s, a])   # as asked (None: the default), not as resolved
            if key in done:
                summaries.append(done[key])
                bar.update(len(images))
            else:
                summaries.append(success.counterfactual_success(
                    model, images, labels, names, eps=e, steps=s, step_size=a, norm=args.norm,
                    threshold=args.threshold, autocast=args.autocast, progress=lambda _: bar.update(1)).summary())
            keys.append(key)
            rest = [k for k in done if k not in keys]   # settings of earlier sweeps of this run, not asked now: kept
            write_text(out / "success.json", json.dumps({
                "model": str(args.model), "images": args.data or args.images,
                "settings": summaries + [done[k] for k in rest], "complete": len(summaries) == len(settings),
                "run": run, "asked": keys + rest}, indent=2))
    for s in summaries:
        p = s["params"]
        print(f"eps {eps_name(p['eps'], args.norm)} steps {p['steps']} step "
              f"{eps_text(p['step_size'], args.norm)}: {s['success_rate']:.1%} of "
              f"{s['pairs']} pairs reach p >= {s['threshold']:g} (final step {s['final_success_rate']:.1%}, "
              f"mean final p {s['mean_final_confidence']:.3f}, median L2 {s['median_l2']:.2f})")
    print(f"wrote {out / 'success.json'}")
    return 0


def _run_print(args: argparse.Namespace, model: Any, images: list[Any], labels: list[Any], names: list[str]) -> dict:
    """What a saved setting's result depends on besides the setting: the model, the images, their labels and
    names, the norm, the threshold and the autocast (a setting saved under other ones is done again)."""
    from dat_core.runtime import model_device

    from .benchmark_parts import model_sha256, sha256_of

    return {"model_sha256": model_sha256(model), "images_sha256": sha256_of(list(images)),
            "labels": [None if lab is None else int(lab) for lab in labels], "names": list(names),
            "norm": args.norm, "threshold": args.threshold, "autocast": bool(args.autocast),
            "device_type": model_device(model).type}


RUN_NAMES = {"model_sha256": "model weights", "images_sha256": "images", "labels": "labels", "names": "image names",
             "norm": "--norm", "threshold": "--threshold", "autocast": "--autocast", "device_type": "device"}


def _finished(path: Path, run: dict[str, Any]) -> dict[str, Any]:
    """The settings an earlier sweep into the same folder finished under the same `run`: asked -> summary, in
    its order. ValueError when it was a sweep under another run (other images, model, ...): never overwritten."""
    from dat_core.files import read_json

    from .benchmark_parts import read_saved

    old = read_saved(path, lambda p: read_json(p, 64 << 20, p.name, "a success sweep")) if path.is_file() else None
    if not isinstance(old, dict):   # none, or damaged (set aside as .damaged)
        return {}
    if isinstance(old.get("run"), dict) and "device_type" not in old["run"]:   # a sweep from before it was recorded
        old["run"] = {**old["run"], "device_type": run["device_type"]}
    if isinstance(old.get("run"), dict) and old["run"] != run:
        differ = [RUN_NAMES.get(k, k) for k in sorted(set(old["run"]) | set(run)) if old["run"].get(k) != run.get(k)]
        raise ValueError(f"{path} holds another sweep ({', '.join(differ)} differ): re-run "
                         "its command to continue or extend it, or choose another --out")
    asked, settings = old.get("asked"), old.get("settings")
    if old.get("run") != run or not (isinstance(asked, list) and isinstance(settings, list)
                                     and all(isinstance(a, str) for a in asked)):
        return {}
    return dict(zip(asked, settings))
