"""`python -m explain benchmark`: counterfactuals for many (image, target) pairs over a grid of radii, measured.

Per radius: validity (p(target) >= 0.5 and argmax = target at x_T), mean target confidence, closeness (L1, L2,
Linf of x_T - x_0, share of pixel values changed by more than 2/255), realism (Fréchet distance in a fixed
classifier's features to real images of the target class; share of x_T whose E(x) lies in the model's real
validation energy band) and transfer (share an independent model also classifies as the target); optionally
the minimal L2 radius to flip per class pair. Re-running the same command continues a stopped run.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import time
from pathlib import Path
from typing import Any, Callable

from dat_core.files import write_text

from .cli_options import cone_angle

EPILOG = """examples:
  python -m explain benchmark --data ../shared/data/cifar10-jpg.tar.gz --limit 1000 --eps 1,2,3,4 --out out/bench
  python -m explain benchmark --data DATA --pairs pairs.csv --norm Linf --eps 4/255,8/255 --minimal 200 \\
      --layout ace --out out/bench-linf

writes benchmark.json, curves.png (validity / realism / closeness against the radius), report.md with
galleries of the best and worst cases (gallery_best.png, gallery_worst.png), with --minimal N also
minimal_radius.png (class-pair heatmap), with --layout ace the DiME/ACE folder tree under ace/; partial
results live in parts/ (delete the folder to start over)"""
JUDGE = "standard-cifar10-wrn16-2"


def add_benchmark_parser(sub: argparse._SubParsersAction, load: Callable[[argparse.Namespace], Any]) -> None:
    """The `benchmark` subcommand; `load` loads the model as the other commands do."""
    from dat_core.cli_types import int_in, probability, step_size

    from .cli_options import common_options, guide_options, norm_name
    from .image_sets import image_set_options
    from .params import NORMS

    p = sub.add_parser("benchmark", help="validity, closeness, realism and transfer of counterfactuals over a "
                                         "dataset, per radius", description=__doc__.split("\n\n")[1],
                       epilog=EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_options(p)
    p.set_defaults(compile="auto")  # a long run of fixed-size batches: compiling pays (~1.2x on a CPU)
    image_set_options(p, limit=100, split_help="; choose settings on the validation carve-out of train, "
                                               "report on --split test --val-size 0")
    p.add_argument("--pairs", default="all-others",
                   help="'all-others' (every class but the image's), 'random-other' (one other class per image, "
                        "y' = (y + u) mod K with u uniform in 1..K-1 from a fixed seed: the official evaluation's "
                        "draw), or a CSV file of source,target class names (default: %(default)s)")
    p.add_argument("--norm", default="L2", choices=NORMS, type=norm_name, help="threat model (default: L2)")
    p.add_argument("--eps", default=None, help="radii, comma-separated, e.g. 1,2,3,4 or 4/255,8/255 "
                                             "(default: the app's default radius)")
    p.add_argument("--steps", type=int_in(1, 1000), default=None, help="PGD steps (default: the app's)")
    p.add_argument("--step-size", type=step_size, default=None, help="step length (default: the app's)")
    p.add_argument("--batch-size", type=int_in(1, 65536), default=256,
                   help="PGD paths run at once, (image, target) pairs as the rows of one batch; also the pairs "
                   "saved per part (default: %(default)s)")
    p.add_argument("--feature-model", default=JUDGE, help="model whose penultimate features measure realism, "
                                                         "or 'none' (default: %(default)s)")
    p.add_argument("--transfer-model", default=JUDGE, help="independent classifier for transfer, or 'none' "
                                                           "(default: %(default)s)")
    p.add_argument("--minimal", type=int_in(0, 1_000_000), default=0,
                   help="also search the minimal L2 radius to flip --model (on its own, also with --guide) for N "
                        "pairs spread over all (one search per pair: slow; default: 0 = off)")
    p.add_argument("--stop-at", type=probability, default=None, metavar="P",
                   help="each counterfactual is the first iterate of its path with p(target) >= P (compare models "
                        "at equal confidence, as the DAT paper does at ~0.89; its row of the batch then takes the "
                        "next pair at once); default: off, x_T after every step as in the app")
    guide_options(p)
    p.add_argument("--gallery", type=int_in(1, 64), default=8, help="rows in each of the best/worst galleries "
                                                                    "(default: %(default)s)")
    p.add_argument("--layout", choices=("none", "ace"), default="none",
                   help="ace: also write originals and counterfactuals in the DiME/ACE folder layout")
    p.set_defaults(func=lambda args: run_benchmark(args, load))


def _judge(source: str, model, device) -> tuple[Any, str, bool, bool]:
    """(judge model or None, its name, whether it has the explained model's classes, whether it is the explained
    model: the same weights, from whatever folder)."""
    import torch

    from dat_core.loading import load_model

    from .trajectory import model_info

    if source.strip().lower() == "none":
        return None, "", True, False
    judge = load_model(source, device=device).eval()
    ours, theirs = getattr(model, "eager", model).state_dict(), judge.state_dict()   # a compiled dispatch: `eager.*`
    itself = ours.keys() == theirs.keys() and all(
        ours[k].shape == theirs[k].shape and torch.equal(ours[k].cpu(), theirs[k].cpu()) for k in ours)
    size, names, _ = model_info(model)
    j_size, j_names, _ = model_info(judge)
    if j_size != size:
        raise ValueError(f"{source} takes {j_size}px images, the explained model {size}px")
    arch = (getattr(judge, "config", {}) or {}).get("arch", "")
    return judge, (f"{Path(source).name} ({arch})" if arch else Path(source).name), j_names == names, itself


LOCATED = ("model", "revision", "images", "data", "feature_model", "transfer_model", "guide")
"""Settings that say where the images and models were read: their contents are compared instead (`_fingerprints`)."""


def _settings(args: argparse.Namespace, radii: list[float], request: dict[str, Any], pairs: Any) -> dict[str, Any]:
    keys = ("model", "revision", "images", "data", "split", "val_size", "seed", "limit", "batch_size",
            "feature_model", "transfer_model", "autocast", "guide") + \
        (("stop_at",) if args.stop_at is not None else ())   # run.json of runs before --stop-at stay valid
    guided = {} if args.guide is None else {"cone_angle": cone_angle(args)}
    return {**{k: getattr(args, k) for k in keys}, **guided, "pairs": pairs, "radii": [str(r) for r in radii],
            **{k: v for k, v in request.items() if k != "judges"}}


def run_benchmark(args: argparse.Namespace, load: Callable[[argparse.Namespace], Any]) -> int:
    with contextlib.ExitStack() as held:   # the --out folder, claimed for this process until it ends
        return _run_benchmark(args, load, held)


def _fingerprints(x: Any, labels: Any, models: dict[str, Any]) -> tuple[dict[str, str], dict[str, str]]:
    """sha256 of what a resumed run must find unchanged behind the same paths: the decoded images with their
    labels, and each model's weights and config (a calibration's temperature, the energy band, the input
    normalization change the results as much as the weights do); and the weights-only sha256 that run.json held
    before configs counted, so that a run started then still resumes."""
    from .benchmark_parts import model_sha256, sha256_of

    present = {k: m for k, m in models.items() if m is not None}
    return ({"images_sha256": sha256_of([x, labels]), **{f"{k}_sha256": model_sha256(m) for k, m in present.items()}},
            {f"{k}_sha256": sha256_of(list(m.state_dict().values())) for k, m in present.items()})


def _run_benchmark(args: argparse.Namespace, load: Callable[[argparse.Namespace], Any],
                   held: contextlib.ExitStack) -> int:
    import numpy as np
    import torch
    from tqdm import tqdm

    from dat_core.evaluation.generative import features_of
    from dat_core.files import claimed
    from dat_core.sampling import to_uint8

    from . import benchmark as bm
    from . import benchmark_report as rep
    from .benchmark_parts import SpentTime, check_run_folder
    from .cli_options import guidance
    from .image_sets import check_image_source, load_image_set, resolve_data_options
    from .params import default_params, eps_name, parse_eps, validate_params
    from .success_cli import comma_values
    from .trajectory import check_guide, model_info

    started = time.perf_counter()
    radii = comma_values(args.eps, "--eps", parse_eps)
    cone_angle(args)             # a --cone-angle without --guide fails before anything loads,
    resolve_data_options(args)   # and a --split, --val-size or --seed without --data,
    check_image_source(args)     # and a missing --images folder or --data (a Hub model downloads first)
    if args.images and Path(args.out).resolve() == Path(args.images).resolve():
        raise ValueError("--out is the --images folder: the report's images would join the images next time")
    model = load(args)
    size, class_names, device = model_info(model)
    d = default_params(size, args.norm)
    radii = [d["eps"] if r is None else r for r in radii]
    request = {"norm": args.norm, "step_size": d["step_size"] if args.step_size is None else args.step_size,
               "steps": d["steps"] if args.steps is None else args.steps, "objective": d["objective"],
               "autocast": bool(args.autocast)}
    for eps in radii:  # fail before the images load and the folder is claimed
        validate_params(args.norm, eps, request["step_size"], request["steps"], request["objective"])
    for name in (lambda r: eps_name(r, args.norm), eps_name):   # a report row; an ACE folder (no slash)
        shown = [name(r) for r in radii]
        if len(set(shown)) < len(shown):
            same = next(n for n in shown if shown.count(n) > 1)
            raise ValueError(f"--eps: {shown.count(same)} radii go under one name, {same}, in the report and the "
                             "ACE folders: give radii that differ in their first 6 digits")
    extra = guidance(args, model)
    if extra:
        check_guide(model, extra["guide"])
    if args.stop_at is not None:
        extra["stop_at"] = args.stop_at
    kind = args.pairs.strip().lower()
    pair_set = None if kind == "all-others" else bm.RANDOM_OTHER if kind == bm.RANDOM_OTHER else \
        bm.read_pairs(args.pairs, class_names)
    images, labels, names = load_image_set(args, class_names, size)   # after every cheap check: it decodes
    x = torch.cat(images)
    with torch.no_grad():
        predictions = torch.cat([model(x[i:i + 256].to(device)).argmax(1).cpu() for i in range(0, len(x), 256)])
    labels = np.asarray([int(p) if lab is None else lab for lab, p in zip(labels, predictions)], dtype=np.int64)
    jobs = bm.make_jobs(labels, len(class_names), pair_set)
    transfer, tr_name, same_classes, itself = _judge(args.transfer_model, model, device)
    if itself:
        raise ValueError("--transfer-model has the explained model's weights: its transfer would be the validity; "
                         "choose an independent classifier (default: the bundled standard model) or none")
    if not same_classes:
        raise ValueError("the transfer model has other classes than the explained model")
    feature_model, fs_name, _, own_features = _judge(args.feature_model, model, device)
    if own_features:   # the documented --model standard runs use the default (standard) features: allowed, said
        logging.getLogger(__name__).warning(
            "--feature-model has the explained model's weights: realism is measured in the features its own "
            "counterfactuals attack, not comparable with another model's (README: Counterfactual benchmark)")
    judges = bm.Judges(feature_model, f"penultimate features of {fs_name}" if fs_name else "", transfer, tr_name)
    out = Path(args.out)
    pairs = [list(p) for p in sorted(pair_set)] if isinstance(pair_set, set) else pair_set or "all-others"  # as JSON
    held.enter_context(claimed(out, "benchmark"))
    prints, weights_only = _fingerprints(x, labels, {"model": model, "feature_model": feature_model,
                                                     "transfer_model": transfer, "guide": extra.get("guide")})
    check_run_folder(out, {**_settings(args, radii, request, pairs), **prints, "device_type": device.type},
                     located=LOCATED, earlier={**weights_only, "device_type": None})   # (run.json before it: none)
    spent = SpentTime(out, since=started)
    reported: list[bool] = []   # a stop (Ctrl-C, SIGTERM) before the report counts this process's time too
    held.callback(lambda: reported or spent.tick())
    real_features = None if feature_model is None else features_of(feature_model, x).numpy()
    band = bm.energy_band(getattr(model, "config", {}))
    minimal_jobs = jobs[bm.spread(len(jobs), args.minimal)]
    entries, results = [], []
    with tqdm(total=len(jobs) * len(radii) + len(minimal_jobs), desc="pairs", unit="pair") as bar:
        def advance(n: int) -> None:
            bar.update(n)
            spent.tick()
        for k, eps in enumerate(radii):
            res = bm.run_radius(model, x, jobs, out / "parts", f"r{k}", batch_size=args.batch_size,
                                progress=advance, on_work=spent.work, eps=eps, judges=judges, **extra, **request)
            results.append(res)
            entries.append(bm.summarize(eps, res, jobs, real_features, labels, band=band,
                                        feature_space=judges.features_name))
        minimal = bm.minimal_radii(model, x, minimal_jobs, out / "parts" / f"minimal-{args.minimal}",
                                   autocast=request["autocast"], progress=advance, on_work=spent.work) \
            if len(minimal_jobs) else None
    report: dict[str, Any] = {
        "model": str(args.model), "image_source": args.data or args.images, "split": args.split if args.data else None,
        "val_size": args.val_size if args.data else None, "seed": args.seed if args.data else None,
        "images": len(x), "pairs": len(jobs), "pairs_from": pairs if isinstance(pairs, str) else Path(args.pairs).name,
        "class_names": class_names, **request, "threshold": 0.5,
        "feature_model": judges.features_name or None, "feature_model_is_explained_model": own_features,
        "transfer_model": tr_name or None,
        "guide": args.guide and Path(args.guide).name, "cone_angle": cone_angle(args),
        "stop_at": args.stop_at,
        "seconds": spent.tick(), "seconds_this_process": spent.added, "device": str(device),
        "radii": entries,
        "minimal_radius": None if minimal is None else bm.minimal_summary(minimal, minimal_jobs, class_names)}
    reported.append(True)   # its time is in the report's "seconds" (seconds.json): no later file may follow it
    (out / "benchmark.json").unlink(missing_ok=True)   # written last: when it is there, the whole report is
    wrote = [out / "benchmark.json", rep.plot_curves(entries, args.norm, out / "curves.png")]
    if report["minimal_radius"]:
        wrote.append(rep.plot_minimal_heatmap(report["minimal_radius"]["per_class_pair"], class_names,
                                              out / "minimal_radius.png"))
    else:   # an earlier run's, beside a report without one
        (out / "minimal_radius.png").unlink(missing_ok=True)
    originals = to_uint8(x).transpose(0, 3, 1, 2)
    best, worst = rep.best_and_worst(results[-1], args.gallery)
    galleries = {f"{title} at radius {eps_name(entries[-1]['eps'], args.norm)}": (
        rep.gallery(originals, results[-1], jobs, picked, out / f"gallery_{key}.png").name,
        rep.gallery_rows(picked, results[-1], jobs, names, class_names)) for key, title, picked in
        (("best", "Best cases", best), ("worst", "Worst cases", worst))}
    wrote.append(rep.write_markdown(report, galleries, out / "report.md"))
    if args.layout == "ace":
        for eps, res in zip(entries, results):
            root = out / "ace" / f"eps_{eps_name(eps['eps'])}"   # L2-style: a folder name holds no slash
            rep.write_ace_layout(root, originals, labels, predictions.numpy(), res, jobs, bm.is_valid(res, jobs))
            wrote.append(root)
    write_text(out / "benchmark.json", json.dumps(report, indent=2))
    for e in entries:
        fd = e["realism"] and e["realism"]["frechet_distance"]
        cc = e["realism"] and e["realism"].get("class_conditional")
        print(f"eps {eps_name(e['eps'], args.norm)}: validity {e['validity']:.1%}, mean p(target) "
              f"{e['mean_target_confidence']:.3f}, mean L2 {e['closeness']['mean_l2']:.2f}"
              + ("" if args.stop_at is None else f", mean steps {e['mean_steps']:.1f}")
              + ("" if e["transfer"] is None else f", transfer {e['transfer']['fraction']:.1%}")
              + ("" if fd is None else f", Fréchet distance {fd:.2f} pooled")
              + ("" if not cc else f", {cc['frechet_distance']:.2f} per target class (originals "
                                  f"{cc['frechet_distance_originals']:.2f})"))
    for p in wrote:
        print(f"wrote {p}")
    return 0
