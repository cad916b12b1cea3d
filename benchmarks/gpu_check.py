"""Everything a lent GPU should check, in one run that ends within a time budget and writes one JSON.

    bash benchmarks/gpu_check.sh [--out benchmarks/results/gpu_check.json] [--budget 480]
    bash benchmarks/gpu_check.sh --dry-run      # the same code paths on the CPU at toy sizes (CI runs this)

Parts, each a subprocess with its own time limit (a part that fails or times out is recorded, the rest run):
  cuda_tests      pytest -m cuda (tests that skip without CUDA)
  train_step      one stage-2 step (WRN-34-10, batch 128, T=10, K=10): ours bf16 / ours fp32 / the
                  official-order fp32 reference, ratios; and one stage-1 step (benchmarks/train_step.py)
  latency         a 60-step trajectory, eager vs torch.compile, for WRN-16-2@32, ResNet-50@224 and
                  ConvNeXt-L@256 with random weights (benchmarks/latency.py; unknown archs are skipped)
  torchrun        a 1-GPU `torchrun` smoke of stage 1 then stage 2 over NCCL on a synthetic dataset
  cf_benchmark    `python -m explain benchmark` with the bundled models, timed: with --cf-data (the CIFAR-10
                  archive) the 1,000-image x 9-target run of issue 21 on the test split, else the bundled examples
  cf_batch_invariance  validity of the same 300 images x 9 targets compiled at batch 256 and 2,700 and eager at
                  2,700: equal up to rounding, or a pair's path depends on its batch neighbours
Peak GPU memory is in each part's JSON.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable


def toy_dataset(root: Path, size: int = 32) -> Path:
    """Three colour-coded classes (train/test) and an unlabeled noise folder for OOD seeds."""
    rng = np.random.default_rng(0)
    for split, n in (("train", 48), ("test", 12)):
        for c, colour in enumerate([(200, 40, 40), (40, 200, 40), (40, 40, 200)]):
            d = root / "data" / split / f"class{c}"
            d.mkdir(parents=True, exist_ok=True)
            for i in range(n):
                img = np.clip(np.array(colour) + rng.normal(0, 40, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(img).save(d / f"{i:03d}.png")
    ood = root / "ood"
    ood.mkdir(exist_ok=True)
    for i in range(48):
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(ood / f"{i:03d}.png")
    return root


def cuda_test_files() -> list[str]:
    """Only the test files that hold CUDA tests: collecting the whole suite would import the app's stack
    (gradio, playwright), which a bare GPU image lacks, and one collection error fails the run."""
    return sorted(str(f.relative_to(ROOT)) for f in (ROOT / "tests").glob("test_*.py")
                  if "mark.cuda" in f.read_text())


def benchmark_parts(dry_run: bool, device: str, work: Path, cf_data: str | None) -> tuple[list[str], list[str]]:
    """The commands of cf_benchmark (issue 21's run, timed) and cf_batch_invariance (the same pairs at two batch
    sizes, compiled and eager: validity must not move; it did on an H200, compiled). Each prints one JSON line."""
    def bench(out: Path, *extra: str) -> str:
        return " ".join([PY, "-m", "explain", "benchmark", "--device", device, "--out", str(out), *extra])

    test_split = ["--data", cf_data, "--split", "test", "--val-size", "0"] if cf_data else []
    images = [*test_split, "--limit", "1000" if cf_data else "100"]
    subset, variants = [*test_split, "--limit", "300"], [("compiled", 256), ("compiled", 2700), ("eager", 2700)]
    if dry_run:
        images = ["--limit", "2", "--steps", "2", "--compile", "off", "--feature-model", "none"]
        subset, variants = ["--limit", "2", "--steps", "2", "--compile", "off"], [("eager", 1), ("eager", 18)]
    summary = (f"{PY} -c \"import json; r = json.load(open('{work / 'cf' / 'benchmark.json'}')); "
               "print(json.dumps(dict(pairs=r['pairs'], seconds=r['seconds'], autocast=r['autocast'], "
               "**{k: r['radii'][0][k] for k in ('validity', 'mean_target_confidence', 'transfer')})))\"")
    runs = [bench(work / f"inv-{how}-{batch}", "--feature-model", "none", "--transfer-model", "none",
                  "--batch-size", str(batch), *subset, *(["--compile", "off"] if how == "eager" else []))
            for how, batch in variants]
    names = [f"{how}-{batch}" for how, batch in variants]
    validity = (f"{PY} -c \"import json; print(json.dumps({{n: json.load(open(f'{work}/inv-{{n}}/benchmark.json'))"
                f"['radii'][0]['validity'] for n in {names!r}}}))\"")
    return (["bash", "-c", f"{bench(work / 'cf', *images)} && {summary}"],
            ["bash", "-c", " && ".join([*runs, validity])])


def parts(dry_run: bool, work: Path, cf_data: str | None = None) -> list[tuple[str, list[str], float]]:
    """(name, command, time limit in s) of every part."""
    cuda = not dry_run
    device = "cuda" if cuda else "cpu"
    if dry_run:
        step = ["--arch", "wrn-10-1", "--batch", "8", "--T", "2", "--K", "2", "--repeats", "1"]
        latency = ["--archs", "wrn-10-1", "no-such-net", "--steps", "3", "--repeats", "1", "--compile", "both"]
    else:
        step = ["--arch", "wrn-34-10", "--batch", "128", "--T", "10", "--K", "10", "--repeats", "3", "--bf16", "on"]
        latency = ["--archs", "wrn-16-2", "resnet50@224", "convnext-large-convstem@256", "--steps", "60",
                   "--repeats", "5", "--compile", "both"]
    data = toy_dataset(work)
    common = [f"data.dataset={data / 'data'}", "data.image_size=32", "data.val_size=12", "model.arch=wrn-10-1",
              "batch_size=8", "log_every=1", "ckpt_every=100", "eval_every=0", "eval_size=12",
              "eval_attack_steps=1", "attack.steps=1", "sample_grid=false", f"device={device}"]
    torchrun = [PY, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=1", "-m", "train"]
    smoke = " && ".join(" ".join(cmd) for cmd in (
        [*torchrun, "stage1", "steps=4", f"out_dir={work / 's1'}", *common],
        [*torchrun, "stage2", "steps=4", f"out_dir={work / 's2'}", f"model.init={work / 's1' / 'final'}",
         f"data.ood={data / 'ood'}", "contrastive.max_steps=2", "contrastive.window_images=16", *common]))
    cf, invariance = benchmark_parts(dry_run, device, work, cf_data)
    return [
        ("cuda_tests", [PY, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "cuda", *cuda_test_files()], 120),
        ("train_step", [PY, str(ROOT / "benchmarks" / "train_step.py"), "--device", device, *step], 180),
        ("cf_benchmark", cf, 200),
        ("cf_batch_invariance", invariance, 300),
        ("torchrun", ["bash", "-c", smoke + " && echo '{\"torchrun\": \"ok\"}'"], 150),
        ("latency", [PY, str(ROOT / "benchmarks" / "latency.py"), "--device", device, *latency], 240),
    ]  # most wanted first: a spent --budget skips the last


def run_part(name: str, cmd: list[str], limit: float) -> dict:
    start = time.perf_counter()
    try:
        r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=limit,
                           env=dict(os.environ, PYTHONPATH=os.pathsep.join(
                               filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))))
        out, rc = r.stdout, r.returncode
        err = r.stderr
    except subprocess.TimeoutExpired as e:
        out, rc, err = (e.stdout or b"").decode() if isinstance(e.stdout, bytes) else (e.stdout or ""), "timeout", ""
    result: dict = {"rc": rc, "wall_s": round(time.perf_counter() - start, 1)}
    last = [line for line in out.strip().splitlines() if line.strip()]
    if last:
        try:
            result["result"] = json.loads(last[-1])
        except json.JSONDecodeError:
            result["summary"] = last[-1][-300:]
    if rc != 0:  # the first error lines (a launcher's trace can bury them) and the end of each stream
        result["errors"] = [line for line in (out + "\n" + err).splitlines()
                            if line.startswith("error:") or "Error:" in line][:10]
        result["tail"] = out[-1500:] + "\n--- stderr ---\n" + err[-2500:]
    print(f"{name}: rc={rc} in {result['wall_s']} s", flush=True)
    return result


PART_NAMES = ("cuda_tests", "train_step", "cf_benchmark", "cf_batch_invariance", "torchrun", "latency")
"""The parts, in the order `parts` runs them (--only takes these names)."""


def budget_seconds(text: str) -> float:
    """--budget: finite seconds in 10..86400 (a part needs 10; nan or inf would leave the run uncapped). Local, not
    dat_core.cli_types.float_in: this orchestrator imports nothing of the project (only its parts do), so a package
    missing on a lent machine fails the parts that need it, not the whole check."""
    try:
        seconds = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected seconds in 10..86400, got {text!r}") from None
    if not 10 <= seconds <= 24 * 3600:   # nan fails this too
        raise argparse.ArgumentTypeError(f"expected seconds in 10..86400, got {text}")
    return seconds


def writable_file(out: str | Path) -> str | None:
    """Why `out` cannot take the report, or None: checked before any part runs, not after the whole budget (a probe
    write; a file that was not there is removed again)."""
    path = Path(out)
    if path.is_dir() or str(out).endswith(("/", os.sep)):   # Path drops a trailing "/": "new_folder/" is a folder
        return f"--out {out} is a folder; it takes a JSON file path"
    existed = path.exists()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a"):
            pass
    except OSError as e:
        return f"--out {path} cannot be written: {e.strerror}"
    if not existed:
        path.unlink()
    return None


def write_whole(path: Path, text: str) -> None:
    """`path.write_text(text)` whole or not at all: a full disk or a stop mid-write keeps the earlier report (what
    dat_core.files.write_text does; not imported, see `budget_seconds`)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dry-run", action="store_true", help="CPU, toy sizes: checks the script itself (CI)")
    p.add_argument("--out", default=None, help="JSON path (default: benchmarks/results/gpu_check[_dry_run].json)")
    p.add_argument("--budget", type=budget_seconds, default=480,
                   help="seconds for everything, 10..86400 (default: 480 = 8 min)")
    p.add_argument("--cf-data", default=None, help="CIFAR-10 archive for the cf_benchmark part (1,000 test images "
                   "x 9 targets); without it the bundled examples")
    p.add_argument("--only", nargs="+", default=None, choices=PART_NAMES, metavar="PART",
                   help=f"run only these parts, of {', '.join(PART_NAMES)}")
    args = p.parse_args()
    out = args.out or ROOT / "benchmarks" / "results" / f"gpu_check{'_dry_run' if args.dry_run else ''}.json"
    if (why := writable_file(out)) is not None:
        p.error(why)
    out = Path(out)
    if args.cf_data is not None and not Path(args.cf_data).exists():
        p.error(f"--cf-data {args.cf_data} does not exist")
    start = time.perf_counter()
    report: dict = {"benchmark": "gpu_check", "dry_run": args.dry_run, "parts": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        for name, cmd, limit in parts(args.dry_run, Path(tmp), args.cf_data):
            if args.only and name not in args.only:
                continue
            left = args.budget - (time.perf_counter() - start)
            if left < 10:
                report["parts"][name] = {"rc": "skipped", "why": "time budget spent"}
                continue
            report["parts"][name] = run_part(name, cmd, min(limit, left))
    report["wall_s"] = round(time.perf_counter() - start, 1)
    # nothing run proves nothing: an empty report is a failure, not "all parts ok"
    report["ok"] = bool(report["parts"]) and all(part["rc"] == 0 for part in report["parts"].values())
    write_whole(out, json.dumps(report, indent=1) + "\n")
    print(f"wrote {out} ({'all parts ok' if report['ok'] else 'some parts failed'}, {report['wall_s']} s)")
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
