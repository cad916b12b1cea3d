"""The app's fast path and its scheduling, side by side in one run: today's settings against the candidates, on a
quiet machine and beside CPU-burning neighbours.

    python benchmarks/fast_path.py [--model default|DIR] [--configs today fast ...] [--new fast_1t_2w]
                                   [--neighbours 0 1] [--steps 60] [--repeats 5] [--clients 8] [--requests 5]

Each configuration (`CONFIGS`: compile on/off, torch threads per request, model computations at once) runs in a
fresh process, as an operator would start the app: torch's thread count is set per process before any work, and
the fast path compiles in the background at start (waited for here; inductor's cache dir makes later starts faster).
Per configuration and neighbour count:
- single_s: one counterfactual as the app runs it (`explain.counterfactual` on the loaded model's current
  `.model`, the app's bf16 choice, `--steps` steps, a new target each time), median of `--repeats`;
- load: `--clients` gradio_client clients x `--requests` /counterfactual requests (`--steps` steps) on the launched
  app over loopback: latency p50/p95, queue wait and compute apart (benchmarks/app_harness.load_test), stopped
  after `--load-timeout` s (then `ok` < requests and the percentiles cover the requests that finished).
A neighbour is one `python -c "while True: pass"` process per count (it keeps one core busy, as another
tenant's job does on a shared CPU). `uptime`'s load average is recorded beside every row: this machine is shared,
so "quiet" means no neighbour of ours, not an idle machine.
Ratios against `today` (compile off, every core for one request, one request at a time): ratio_fast_path =
single_s(today) / single_s(fast) (the compiled path alone, same threads); ratio_single = single_s(today) /
single_s(new); ratio_load_p50 = load p50(today) / load p50(new).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import emit, machine

from dat_core.cli_types import float_in, int_in

CORES = os.cpu_count() or 1
# name: (compile, torch threads per request, model computations at once)
CONFIGS = {
    "today": ("off", CORES, 1),
    "fast": ("on", CORES, 1),
    "eager_1t": ("off", 1, 1),
    "fast_1t": ("on", 1, 1),
    "eager_1t_2w": ("off", 1, 2),
    "fast_1t_2w": ("on", 1, 2),
}
BURN = "while True: pass"


def load_average() -> list[float]:
    return [float(v) for v in Path("/proc/loadavg").read_text().split()[:3]]


def child(args: argparse.Namespace) -> dict[str, Any]:
    """One configuration in this process: compile wait, single requests, then the load test."""
    compile_, threads, workers = CONFIGS[args.child]
    # a private upload cache: on a shared machine, other processes' Gradio apps share /tmp/gradio and delete their
    # (same-content, same-path) uploads when they close, which once failed 6 requests of a run here
    os.environ["GRADIO_TEMP_DIR"] = tempfile.mkdtemp(prefix="fast-path-gradio-")
    import torch
    torch.set_num_threads(threads)

    # isort: split
    from app_harness import load_test, serve, write_image, write_model

    import app
    import explain

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(write_model(Path(tmp) / "model", "wrn-16-2"))
        images = [write_image(Path(tmp) / f"photo{i}.png", seed=i) for i in range(args.clients)]
        start = time.perf_counter()
        demo = app.build_demo(model, standard_model=None, compile=compile_, workers=workers)
        ex = demo.explainer
        loaded = ex.default
        loaded.fast.wait()
        row: dict[str, Any] = {"compile": compile_, "threads": threads, "workers": workers,
                               "ready_s": time.perf_counter() - start, "compiled": loaded.fast.compiled,
                               "load_average_before": load_average()}
        bf16 = ex.uses_bf16(loaded)
        x = explain.to_model_input(str(images[0]), loaded.image_size)
        k = len(loaded.class_names)
        times: list[float] = []
        deadline = time.monotonic() + args.single_budget
        for i in range(args.repeats + 1):  # the first is a warm-up
            t = time.perf_counter()
            explain.counterfactual(loaded.model, x, (i + 1) % k, steps=args.steps, autocast=bf16)
            if i:
                times.append(time.perf_counter() - t)
            if time.monotonic() > deadline and times:
                break
        row.update(single_s=statistics.median(times), single_runs=len(times), bf16=bf16)
        with serve(demo) as url:
            row["load"] = load_test(url, images, args.clients, args.requests, args.steps, args.load_timeout).summary()
        row["load_average_after"] = load_average()
    return row


def interleaved(args: argparse.Namespace) -> dict[str, Any]:
    """Eager and compiled single requests alternated in one process (what drifts in a shared machine's load hits
    both alike), at each thread count of `--threads`; medians and ratio_fast_path per thread count."""
    import torch

    # isort: split
    from app_harness import write_image, write_model

    import explain
    from webapp.explainer import Explainer

    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or str(write_model(Path(tmp) / "model", "wrn-16-2"))
        ex = Explainer(model, standard_model=None, compile="on")
        loaded = ex.default
        loaded.fast.wait()
        x = explain.to_model_input(str(write_image(Path(tmp) / "photo.png")), loaded.image_size)
        bf16, k = ex.uses_bf16(loaded), len(loaded.class_names)
        paths = {"eager": loaded.fast.eager, "fast": loaded.model}
        out: dict[str, Any] = {"compiled": loaded.fast.compiled, "load_average_before": load_average()}
        for threads in args.threads:
            torch.set_num_threads(threads)
            times: dict[str, list[float]] = {"eager": [], "fast": []}
            for i in range(args.repeats + 1):  # the first round is a warm-up
                for name, m in paths.items():
                    t = time.perf_counter()
                    explain.counterfactual(m, x, (i + 1) % k, steps=args.steps, autocast=bf16)
                    if i:
                        times[name].append(time.perf_counter() - t)
            eager, fast = statistics.median(times["eager"]), statistics.median(times["fast"])
            out[f"threads_{threads}"] = {"eager_s": eager, "fast_s": fast, "ratio_fast_path": eager / fast}
        out["load_average_after"] = load_average()
    return out


def run_config(name: str, args: argparse.Namespace) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", name, "--steps", str(args.steps), "--repeats", str(args.repeats),
           "--clients", str(args.clients), "--requests", str(args.requests), "--load-timeout", str(args.load_timeout),
           "--single-budget", str(args.single_budget)] + (["--model", args.model] if args.model else [])
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode or not lines:
        return {"error": (out.stderr or out.stdout)[-800:]}
    return json.loads(lines[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default=None, help="default|DIR|REPO_ID (default: a random wrn-16-2)")
    p.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS), metavar="CONFIG",
                   help=f"configurations to run, of {', '.join(CONFIGS)} (default: all)")
    p.add_argument("--new", default="fast_1t_2w", choices=list(CONFIGS), help="the app's new default settings")
    p.add_argument("--neighbours", nargs="+", type=int_in(0), default=[0, 1],
                   help="CPU-burning neighbour processes, one run per count (default: 0 1)")
    p.add_argument("--steps", type=int_in(1), default=60, help="PGD steps per counterfactual (default: %(default)s)")
    p.add_argument("--repeats", type=int_in(1), default=5,
                   help="timed single counterfactuals per median, after one untimed (default: %(default)s)")
    p.add_argument("--single-budget", type=float_in(1, 24 * 3600), default=60.0,
                   help="stop single runs after this many seconds")
    p.add_argument("--clients", type=int_in(1), default=8, help="concurrent clients of the load test "
                   "(default: %(default)s)")
    p.add_argument("--requests", type=int_in(1), default=5, help="requests per client (default: %(default)s)")
    p.add_argument("--load-timeout", type=float_in(1, 24 * 3600), default=180.0,
                   help="seconds after which the load test stops (default: %(default)s)")
    p.add_argument("--quick", action="store_true", help="2 configs, quiet only, 2 clients x 2 requests, 5 steps")
    p.add_argument("--interleaved", action="store_true",
                   help="only: eager and compiled single requests alternated in one process, per --threads")
    p.add_argument("--threads", nargs="+", type=int_in(1), default=[1, CORES],
                   help=f"with --interleaved: torch threads, one run per count (default: 1 {CORES})")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        print(json.dumps(child(args)), flush=True)
        return
    if args.interleaved:
        runs = {}
        for n in args.neighbours:
            burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(n)]
            try:
                runs[f"neighbours_{n}"] = interleaved(args)
            finally:
                for b in burners:
                    b.kill()
                    b.wait()
            print(f"neighbours={n}: {json.dumps(runs[f'neighbours_{n}'])}", flush=True)
        emit({"benchmark": "fast_path_interleaved", "machine": machine(), "model": args.model or "random wrn-16-2",
              "steps": args.steps, "repeats": args.repeats, "runs": runs})
        return
    if args.quick:
        args.configs, args.neighbours, args.clients, args.requests, args.steps, args.repeats = \
            ["today", args.new], [0], 2, 2, 5, 2
    result: dict[str, Any] = {"benchmark": "fast_path", "machine": machine(), "model": args.model or "random wrn-16-2",
                              "steps": args.steps, "clients": args.clients, "requests": args.requests,
                              "new": args.new, "configs": {n: CONFIGS[n] for n in args.configs}, "runs": {}}
    for n in args.neighbours:
        burners = [subprocess.Popen([sys.executable, "-c", BURN]) for _ in range(n)]
        try:
            rows = {}
            for name in args.configs:
                rows[name] = run_config(name, args)
                print(f"neighbours={n} {name}: {json.dumps(rows[name])}", flush=True)
        finally:
            for b in burners:
                b.kill()
                b.wait()
        run: dict[str, Any] = {"neighbours": n, "rows": rows}
        today, fast, new = rows.get("today", {}), rows.get("fast", {}), rows.get(args.new, {})
        if "single_s" in today and "single_s" in fast:
            run["ratio_fast_path"] = today["single_s"] / fast["single_s"]
        if "single_s" in today and "single_s" in new:
            run["ratio_single"] = today["single_s"] / new["single_s"]
        if "load" in today and "load" in new:
            run["ratio_load_p50"] = today["load"]["p50_s"] / new["load"]["p50_s"]
        result["runs"][f"neighbours_{n}"] = run
    emit(result)


if __name__ == "__main__":
    main()
