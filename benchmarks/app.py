"""App latency as a person sees it: the launched app in Debian chromium (Playwright, 1280x800) and under load.

    python benchmarks/app.py [--quick] [--model default|DIR|REPO_ID]

--model defaults to the bundled model when there is one, else a random wrn-16-2 written to a temp dir. Figures
(medians; the counterfactual runs use the app's default settings, L2, 60 steps):
- click_to_first_frame_s: browser, from clicking Run to the result frame decoded in its <img> (each run a new
  target, so the trajectory memo never answers); server_run_s: the Run handler alone (PGD, views);
  server_exports_s: the GIF/JSON downloads, written by a chained event after the result is shown.
- browser_slider_move_s: a key press on the step slider until the new frame is decoded;
  server_slider_move_s: the slider handler called directly (index cached frames, move the chart markers).
- recompute_trajectory_s: PGD for the same path again, what a slider move would cost without the cache;
  ratio = recompute_trajectory_s / server_slider_move_s.
- load: 8 gradio_client clients x N /counterfactual requests (5 steps) on loopback: latency p50/p95 split into
  queue wait (submitted -> the server starts it) and compute (the server working on it), failures, peak RSS.
  The model computes one request at a time, so under load the latency is mostly queue wait.
- burst: 40 requests submitted at once (a class pressing Run together): all must be queued and answered (the
  app's queue holds webapp.demo.QUEUE_SIZE requests; past it a request is refused with "queue is full").
Browser figures are null when chromium or Playwright is missing.
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any

# common first: it puts the repo root ahead of benchmarks/ on sys.path, so `import app` finds the app, not this file
from common import emit, machine, median_time

# isort: split
from app_harness import (
    CHROMIUM,
    browser_page,
    bundled_model,
    burst,
    load_test,
    move_slider,
    pick_target,
    run_counterfactual,
    serve,
    upload,
    upload_file,
    write_image,
    write_model,
)

import app
import explain
from webapp.tabs import counterfactual


def browser_figures(url: str, image: Path, targets: list[str], moves: int) -> dict[str, Any]:
    """Run once per target, then step the slider back from the end `moves` times."""
    with browser_page(url) as page:
        upload(page, image)
        clicks = []
        for name in targets:
            pick_target(page, name)
            clicks.append(run_counterfactual(page))
        slider = [move_slider(page, "ArrowLeft") for _ in range(moves)]
    return {"click_to_first_frame_s": statistics.median(clicks), "runs": len(clicks),
            "browser_slider_move_s": statistics.median(slider), "slider_moves": moves}


def server_figures(ex: Any, url: str, image: Path, targets: list[str], scrubs: int) -> dict[str, Any]:
    """The handlers called directly, with the app's default settings; one Run per target. The image reaches
    them as a visitor's does: uploaded to the app served at `url`, then named by its file payload (the app
    refuses a path that no upload made)."""
    d = explain.default_params(ex.default.image_size)
    bf16 = ex.uses_bf16(ex.default)  # the app's own autocast choice (bf16 where native)
    recompute = median_time(lambda: explain.counterfactual(ex.default.model, str(image), targets[0], autocast=bf16),
                            len(targets))
    state = ex.new_session()
    settings = ("L2", str(d["eps"]), d["steps"], d["step_size"])
    left, sent = iter(targets), upload_file(url, image)
    run = median_time(lambda: counterfactual.run(ex, sent, next(left), *settings, state), len(targets),
                      warmup=0)
    exports = median_time(lambda: counterfactual.export(ex, state), len(targets))
    frames = itertools.cycle(range(d["steps"] + 1))
    slider = median_time(lambda: counterfactual.scrub(ex, state, next(frames)), scrubs, warmup=10)
    return {"steps": d["steps"], "bf16": bf16, "server_run_s": run, "server_exports_s": exports,
            "server_slider_move_s": slider,
            "recompute_trajectory_s": recompute, "ratio": recompute / slider}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="fewer runs, moves and requests: under a minute on 2 cores")
    p.add_argument("--model", default=None, help="default|DIR|REPO_ID (default: bundled, else a random wrn-16-2)")
    args = p.parse_args()
    os.environ.setdefault("GRADIO_TEMP_DIR", tempfile.mkdtemp(prefix="bench-app-gradio-"))  # not /tmp/gradio: shared
    runs, moves, scrubs, requests = (2, 10, 200, 2) if args.quick else (5, 30, 1000, 10)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model or bundled_model() or str(write_model(Path(tmp) / "model", "wrn-16-2"))
        images = [write_image(Path(tmp) / f"photo{i}.png", seed=i) for i in range(8)]
        demo = app.build_demo(model, standard_model=None)
        ex = demo.explainer
        names = ex.default.class_names
        # browser and server runs use different images: the trajectory memo is shared, keyed by content
        result: dict[str, Any] = {"benchmark": "app", "machine": machine(), "quick": args.quick,
                                  "model": ex.default.label, "arch": ex.default.config.get("arch")}
        with serve(demo) as url:
            result.update(server_figures(ex, url, images[1], names[:runs], scrubs))
            if CHROMIUM.exists() and importlib.util.find_spec("playwright"):
                result.update(browser_figures(url, images[0], names[-runs:], moves))
            else:
                result.update(click_to_first_frame_s=None, browser_slider_move_s=None)
            result["load"] = load_test(url, images, 8, requests, steps=5).summary()
            result["burst"] = burst(url, images, 40 if not args.quick else 16, steps=5).summary()
    emit(result)


if __name__ == "__main__":
    main()
