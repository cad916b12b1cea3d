"""Counterfactual benchmarks (`python -m explain benchmark`) side by side, with realism in several feature spaces.

A Fréchet distance in a classifier's features is only fair to counterfactuals that did not attack that
classifier: the standard model's own counterfactuals fool its features, DAT's fool DAT's. To compare the two
(and a standard model guided by DAT) at equal radius, this reads what each run saved under `parts/` (per pair:
p(target), predictions, distances and x_T as uint8), rebuilds the run's image set and pairs from its `run.json`
as the benchmark did, optionally keeps the pairs of the images a `--limit N` run picks (equal sets for runs of
different `--limit`: N = 500 is every other image of a 1,000-image run), and reports what `explain.benchmark`
reports per radius plus the Fréchet distance of x_T to real target-class images in each `--features` model:
the explained models' own and an independent one.

Two distances per feature space: the benchmark's pooled one (with `--pairs all-others` the unchanged originals
score ~0 by construction, so a change a feature space does not see, such as an attack on another model, also
scores low) and the class-conditional one (per target class against that class's real images, averaged; the
originals then score their distance from the target class). `--real-limit N` takes the real images from N
images of the run's split (e.g. all 10,000 of CIFAR-10's test split) instead of the run's own, so that each
class's covariance rests on many more images than a feature has dimensions.

    python benchmarks/cf_realism.py RUN_DIR [RUN_DIR ...] --limit 500 --real-limit 10000 \
        --features default,standard-cifar10-wrn16-2,OTHER --json benchmarks/results/cf_realism.json
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch
from common import machine

from dat_core.cli_types import int_in
from dat_core.evaluation.generative import features_of
from dat_core.files import check_writable, read_json, write_text
from dat_core.loading import load_model
from explain import benchmark as bm
from explain.image_sets import check_image_source, load_image_set
from explain.trajectory import model_info


def run_images(settings: dict, limit: int) -> tuple[torch.Tensor, np.ndarray, int]:
    """`limit` labelled images of a run's split, picked as the benchmark picks them, and the number of classes."""
    size, class_names, _ = model_info(load_model(settings["model"], revision=settings.get("revision")))
    args = argparse.Namespace(**{k: settings[k] for k in ("data", "split", "val_size", "seed")}, limit=limit,
                              images=None)
    images, labels, _ = load_image_set(args, class_names, size)
    return torch.cat(images), np.asarray(labels, dtype=np.int64), len(class_names)


def run_settings(run: Path) -> dict:
    """A finished --data run's settings (run.json), checked before any model loads: its folder, its labelled
    images' source. ValueError says what is wrong."""
    path = run / "run.json"
    if not path.is_file():
        raise ValueError(f"{run} holds no run.json: not a `python -m explain benchmark` output folder")
    settings = read_json(path, 2**20, str(path), "a benchmark's settings")
    if not isinstance(settings, dict) or "pairs" not in settings or "radii" not in settings:
        raise ValueError(f"{path} holds no benchmark settings")
    if not settings.get("data"):
        raise ValueError(f"{run.name}: only --data runs (labelled images) are supported")
    check_image_source(argparse.Namespace(data=settings["data"], images=None))
    return settings


def load_run(run: Path, settings: dict, limit: int | None) -> tuple[torch.Tensor, np.ndarray, np.ndarray,
                                                                    list[dict]]:
    """(originals x, their labels, the jobs, per radius the saved per-pair arrays) of a run, restricted to the
    images a `--limit limit` run of the same settings picks (each must be among the run's own)."""
    x, labels, classes = run_images(settings, settings["limit"])
    pairs = settings["pairs"]   # "all-others", "random-other" (drawn again, as the run drew them) or class pairs
    jobs = bm.make_jobs(labels, classes, None if pairs == "all-others" else pairs if isinstance(pairs, str)
                        else {tuple(p) for p in pairs})
    chosen = np.arange(len(x))
    if limit is not None:
        where = {im.numpy().tobytes(): i for i, im in enumerate(x)}
        subset = run_images(settings, limit)[0]
        chosen = np.asarray([where.get(im.numpy().tobytes(), -1) for im in subset])
        if (chosen < 0).any():
            raise SystemExit(f"{run.name}: the images of --limit {limit} are not all among its images")
    keep = np.flatnonzero(np.isin(jobs[:, 0], chosen))
    per_radius = []
    for k in range(len(settings["radii"])):
        saved = bm.read_parts(run / "parts", f"r{k}")
        if not np.isin(keep, saved["job"]).all():
            raise SystemExit(f"{run.name}: radius {k} has not yet saved the pairs of those images")
        at = np.searchsorted(saved["job"], keep)
        per_radius.append({name: v[at] for name, v in saved.items() if name != "job"})
    renumber = np.full(len(x), -1)
    renumber[np.sort(chosen)] = np.arange(len(chosen))
    jobs = jobs[keep]
    jobs[:, 0] = renumber[jobs[:, 0]]
    order = np.sort(chosen)
    return x[order], labels[order], jobs, per_radius


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("runs", nargs="+", help="benchmark output folders (finished --data runs)")
    p.add_argument("--features", required=True, help="comma-separated feature models (zoo names, dirs)")
    p.add_argument("--limit", type=int_in(1), default=None, help="only the pairs of the images a --limit N run picks")
    p.add_argument("--real-limit", type=int_in(1), default=None,
                   help="real images for the class-conditional distance: this many of the run's split (default: "
                        "the run's own images)")
    p.add_argument("--json", default=None, help="also write the results here (one JSON with the command)")
    args = p.parse_args()
    spaces = [s.strip() for s in args.features.split(",") if s.strip()]
    if not spaces:
        p.error("--features names no feature model")
    try:   # every input before the first model loads, the output before the work
        check_writable(args.json, "--json")
        runs = {run: run_settings(run) for run in map(Path, args.runs)}
    except ValueError as e:
        p.error(str(e))
    judges = {s: load_model(s).eval() for s in spaces}
    rows, reals = [], {}  # real images' labels and features per split (runs of one split share them)
    for run, settings in runs.items():
        x, labels, jobs, per_radius = load_run(run, settings, args.limit)
        originals = {space: features_of(judge, x).numpy() for space, judge in judges.items()}
        real_labels, real = labels, originals
        if args.real_limit is not None:
            key = tuple(settings[k] for k in ("data", "split", "val_size", "seed"))
            if key not in reals:
                real_x, split_labels, _ = run_images(settings, args.real_limit)
                reals[key] = split_labels, {s: features_of(judge, real_x).numpy() for s, judge in judges.items()}
            real_labels, real = reals[key]
        for eps, arrays in zip(settings["radii"], per_radius):
            row = {"run": run.name, "model": settings["model"], "guide": settings.get("guide"),
                   "cone_angle": settings.get("cone_angle"), "stop_at": settings.get("stop_at"),
                   "transfer_model": settings.get("transfer_model"),
                   "images": len(labels), **bm.summarize(float(eps), arrays, jobs, None, labels), "frechet": {}}
            xt = torch.from_numpy(arrays["images"]).float().div(255)
            for space, judge in judges.items():
                cf = features_of(judge, xt).numpy()
                pooled = bm.realism(cf, jobs, originals[space], labels, space)
                per_class = bm.class_conditional_frechet(cf, jobs[:, 2], real[space], real_labels,
                                                         originals[space][jobs[:, 0]])
                row["frechet"][Path(space).name] = {
                    "pooled": pooled and pooled["frechet_distance"],
                    "class_conditional": per_class and per_class["frechet_distance"],
                    "class_conditional_originals": per_class and per_class["frechet_distance_originals"],
                    "class_conditional_mean_term": per_class and per_class["mean_term"],
                    "class_conditional_mean_term_originals": per_class and per_class["mean_term_originals"],
                    "progress": per_class and per_class["progress"]}
            row["real_images"] = len(real_labels)
            rows.append(row)
            print(json.dumps(row), flush=True)
    if args.json:   # whole or not at all
        write_text(Path(args.json), json.dumps({"command": " ".join(["python", *sys.argv]), "machine": machine(),
                                                "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
