"""Launch the app on loopback and drive it: a gradio_client load test and a Playwright page on Debian chromium.

One place for tests/test_app_{browser,load}.py and benchmarks/app.py, so the tests check and the benchmark
times the same interactions. Takes a built demo (`app.build_demo(...)`) rather than importing `app`: run as a
script, `benchmarks/app.py` would shadow it.
"""

from __future__ import annotations

import contextlib
import math
import os
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no network calls from a test server

import httpx  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from gradio_client import Client, handle_file  # noqa: E402
from PIL import Image  # noqa: E402

from dat_core import build_model, save_model  # noqa: E402
from dat_core.loading import default_model_dir  # noqa: E402

HOST = "127.0.0.1"
CHROMIUM = Path("/usr/bin/chromium")
VIEWPORT = {"width": 1280, "height": 800}
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update"]


def browser_expect() -> Any:
    """Playwright's `expect` for a browser test module; the module is skipped, saying what to install, when
    chromium or Playwright is missing."""
    import pytest

    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing (apt-get install -y chromium)", allow_module_level=True)
    return pytest.importorskip("playwright.sync_api", reason="Playwright is missing (pip install -r "
                               "requirements-dev.txt)").expect
MARKER = '#cf-energy-plot line[stroke="#dc2626"]'  # the step marker of webapp.charts.LineChart
# Timed on the page's clock, from the user's event to the frame's <img> holding a new, decoded src (polled every
# animation frame): Playwright's own round trips would add tens of milliseconds.
START_CLOCK = """(el, type) => el.addEventListener(type, () => { window.__datStart = performance.now(); },
    {once: true, capture: true})"""
# A finished path's frame (a frame streamed while PGD runs has a caption starting "Running"), or with `running`
# a streamed one.
FRAME_SHOWN = """([old, running]) => { const img = document.querySelector('#cf-frame img');
    const shown = !!img && !!img.src && img.src !== old && img.complete && img.naturalWidth > 0;
    const caption = (document.querySelector('#cf-caption') || {}).textContent || '';
    return shown && caption.includes('Running') === running && Math.max(performance.now() - window.__datStart,
                                                                        0.001); }"""


# ---------------------------------------------------------------- inputs and server

def write_model(directory: str | Path, arch: str = "wrn-10-1", seed: int = 0) -> Path:
    """A random (untrained) CIFAR-10 checkpoint dir: the app's behaviour does not depend on the weights."""
    torch.manual_seed(seed)
    return save_model(build_model(arch), directory)


# A reduced-width ConvNeXt with the 3-conv ConvStem of ConvNeXt-B/L (widths 8 -> 12 -> 16, stride 4), the official
# key layout at a few milliseconds a PGD step: what an imported 1000-class ImageNet folder looks like to the app.
REDUCED_CONVNEXT = {"depths": (1, 1, 2, 1), "dims": (16, 20, 24, 28), "stem": ((8, 2), (12, 2), (16, 1))}


@contextlib.contextmanager
def reduced_imagenet_arch(arch: str = "convnext-large-convstem") -> Iterator[str]:
    """While the block runs, `arch` builds (and loads) as `REDUCED_CONVNEXT`, with `arch`'s registered resolution
    and normalization: checkpoints written and loaded meanwhile are ImageNet-layout folders a CPU serves fast."""
    from dat_core.models import registry
    from dat_core.models.convnext import ConvNeXt

    real = registry._NAMED[arch]
    r = REDUCED_CONVNEXT
    registry._NAMED[arch] = registry.ArchSpec(lambda cfg: ConvNeXt(cfg, r["depths"], r["dims"], r["stem"]),
                                              real.image_size, real.normalization, examples=real.examples)
    try:
        yield arch
    finally:
        registry._NAMED[arch] = real


def write_imagenet_model(directory: str | Path, arch: str = "convnext-large-convstem", seed: int = 0,
                         **config: Any) -> Path:
    """A random 1000-class checkpoint dir with the ImageNet class names at `arch`'s resolution (inside
    `reduced_imagenet_arch` a small one); `config` adds e.g. energy_quantiles."""
    from dat_core.models.class_names import dataset_class_names

    torch.manual_seed(seed)
    return save_model(build_model(arch, num_classes=1000, class_names=dataset_class_names("imagenet"), **config),
                      directory)


def write_image(path: str | Path, seed: int = 0) -> Path:
    """A random RGB photo at a size the app has to resize (not the model's 32x32)."""
    Image.fromarray(np.random.default_rng(seed).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(path)
    return Path(path)


def bundled_model() -> str | None:
    """"default" when a bundled model exists (assets/models), else None."""
    try:
        default_model_dir()
    except FileNotFoundError:
        return None
    return "default"


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def serve(demo: Any) -> Iterator[str]:
    """Serve a built demo in this process on 127.0.0.1 and a free port; yields its URL."""
    demo.launch(prevent_thread_lock=True, server_name=HOST, server_port=free_port(), quiet=True)
    try:
        yield demo.local_url
    finally:
        demo.close()


# ---------------------------------------------------------------- raw events, as a browser sends them

def upload_file(url: str, path: str | Path) -> dict[str, Any]:
    """`path` as a browser hands it to the app: uploaded (POST to the app's upload route, as the page and
    gradio_client's `handle_file` do), then named in an event by the file payload of the server's copy. The app
    refuses an image path that did not come from an upload (webapp.inputs.uploaded): a handler called directly
    gets this payload, not a path of this machine."""
    path = Path(path)
    with path.open("rb") as f:
        reply = httpx.post(f"{url.rstrip('/')}/gradio_api/upload", files={"files": (path.name, f)}, timeout=60)
    reply.raise_for_status()
    return {"path": reply.json()[0], "orig_name": path.name, "size": path.stat().st_size,
            "meta": {"_type": "gradio.FileData"}}


def queue_join(url: str, fn_index: int, data: list, session: str, event_data: dict | None = None) -> None:
    """Put one event of page session `session` in the app's queue (what the page's JavaScript posts)."""
    body = {"data": data, "fn_index": fn_index, "session_hash": session, "event_data": event_data, "trigger_id": None}
    httpx.post(f"{url}/gradio_api/queue/join", json=body, timeout=60).raise_for_status()


def queue_completions(url: str, session: str, n: int = 1, timeout_s: float = 300.0) -> list[tuple[float, str]]:
    """The first `n` completion messages of `session`'s events, each with the monotonic time it arrived."""
    done: list[tuple[float, str]] = []
    with httpx.stream("GET", f"{url}/gradio_api/queue/data?session_hash={session}", timeout=timeout_s) as s:
        for line in s.iter_lines():
            if "process_completed" in line:
                done.append((time.monotonic(), line))
                if len(done) == n:
                    break
    return done


# ---------------------------------------------------------------- load test

class PeakRss:
    """Samples this process's resident memory in a thread (the app runs in-process, so this is the server's)."""

    def __init__(self, interval_s: float = 0.02):
        self.interval_s = interval_s
        self.baseline_mb = self.peak_mb = rss_mb()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.peak_mb = max(self.peak_mb, rss_mb())

    def __enter__(self) -> "PeakRss":
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mb())


def rss_mb() -> float:
    with open("/proc/self/status", encoding="ascii") as f:
        kb = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
    return kb / 1024


@dataclass
class LoadResult:
    clients: int
    requests_per_client: int
    steps: int
    latencies_s: list[float] = field(default_factory=list)
    queue_wait_s: list[float] = field(default_factory=list)   # submitted -> the server starts computing it
    compute_s: list[float] = field(default_factory=list)      # the server computing it (PGD, views, GIF)
    failures: list[str] = field(default_factory=list)
    wall_s: float = 0.0
    baseline_rss_mb: float = 0.0
    peak_rss_mb: float = 0.0

    def summary(self) -> dict[str, Any]:
        def pct(values: list[float]) -> tuple[float, float]:
            return tuple(float(v) for v in np.percentile(values, [50, 95])) if values else (math.nan, math.nan)
        (p50, p95), (w50, w95), (c50, c95) = pct(self.latencies_s), pct(self.queue_wait_s), pct(self.compute_s)
        ok = len(self.latencies_s)
        return {"clients": self.clients, "requests_per_client": self.requests_per_client, "steps": self.steps,
                "requests": self.clients * self.requests_per_client, "ok": ok, "failures": len(self.failures),
                "p50_s": p50, "p95_s": p95, "queue_wait_p50_s": w50, "queue_wait_p95_s": w95,
                "compute_p50_s": c50, "compute_p95_s": c95, "wall_s": self.wall_s,
                "throughput_rps": ok / self.wall_s if self.wall_s else 0.0,
                "baseline_rss_mb": self.baseline_rss_mb, "peak_rss_mb": self.peak_rss_mb,
                "failure_examples": self.failures[:3]}


def phases(job: Any, submitted: float) -> tuple[float, float] | None:
    """(queue wait, compute) seconds of a finished gradio_client job, from the status messages the server sent:
    submitted -> "process_starts" -> "process_completed", as the client received them."""
    updates = job.communicator.updates
    times: dict[str, float] = {}
    while not updates.empty():
        update = updates.get_nowait()
        code, when = getattr(update, "code", None), getattr(update, "time", None)
        if when is not None and code is not None:
            times.setdefault(code.name, when.timestamp())
    if "PROCESSING" not in times or "FINISHED" not in times:
        return None
    return max(0.0, times["PROCESSING"] - submitted), max(0.0, times["FINISHED"] - times["PROCESSING"])


def load_test(url: str, images: list[Path], clients: int = 8, requests: int = 10, steps: int = 5,
              timeout_s: float = 300.0, *, clients_made: list[Any] | None = None) -> LoadResult:
    """`clients` gradio_client clients, each sending `requests` /counterfactual calls one after another.

    Client c uses images[c % len(images)] and request j targets class (c + j) % 10, so requests differ and the app's
    trajectory memo cannot answer them. Any exception or wrong answer is a failure (recorded, not raised); the
    whole run stops at `timeout_s`. `clients_made`: clients connected beforehand (one per `clients`), so the
    requests start together. Each request's latency is split into queue wait and compute (`phases`).
    """
    result = LoadResult(clients, requests, steps)
    deadline = time.monotonic() + timeout_s
    lock = threading.Lock()

    def client_run(c: int) -> None:
        client = clients_made[c] if clients_made else None
        for j in range(requests):
            if time.monotonic() >= deadline:
                return
            try:
                client = client or Client(url, verbose=False)
                t, submitted = time.perf_counter(), time.time()
                target = (c + j) % 10
                job = client.submit(image=handle_file(str(images[c % len(images)])), target=str(target), eps="3",
                                    steps=steps, step_size=0.1, api_name="/counterfactual")
                metrics, _, _ = job.result(timeout=max(0.1, deadline - time.monotonic()))
                if metrics["target"] != target or len(metrics["energy"]) != steps + 1:
                    raise AssertionError(f"wrong answer: target {metrics['target']}, {len(metrics['energy'])} steps")
            except Exception as e:  # a load test records every failure and goes on
                with lock:
                    result.failures.append(f"client {c} request {j}: {e!r}")
                continue
            latency, split = time.perf_counter() - t, phases(job, submitted)
            with lock:
                result.latencies_s.append(latency)
                if split is not None:
                    result.queue_wait_s.append(split[0])
                    result.compute_s.append(split[1])

    with PeakRss() as rss:
        start = time.perf_counter()
        with ThreadPoolExecutor(clients) as pool:
            list(pool.map(client_run, range(clients)))
        result.wall_s = time.perf_counter() - start
    result.baseline_rss_mb, result.peak_rss_mb = rss.baseline_mb, rss.peak_mb
    return result


def burst(url: str, images: list[Path], requests: int = 40, steps: int = 5, timeout_s: float = 300.0) -> LoadResult:
    """`requests` /counterfactual calls submitted at once (one client each, all connected first), as a class of
    students pressing Run together: every one must be queued and answered (no "queue is full")."""
    clients = [Client(url, verbose=False) for _ in range(requests)]
    return load_test(url, images, requests, 1, steps, timeout_s, clients_made=clients)


# ---------------------------------------------------------------- browser (Playwright on Debian chromium)

@contextlib.contextmanager
def browser_page(url: str) -> Iterator[Any]:
    """A 1280x800 chromium page on the app, loaded. Imports Playwright here: only browser runs need it."""
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport=VIEWPORT)
            page.goto(url)
            page.wait_for_selector("#cf-run")
            yield page
        finally:
            browser.close()


def frame_src(page: Any) -> str | None:
    img = page.locator("#cf-frame img")
    return img.get_attribute("src") if img.count() else None


def shown_pixels(page: Any, selector: str) -> np.ndarray:
    """The decoded image an <img> under `selector` shows, fetched from the app like the browser did."""
    import io

    src = page.locator(f"{selector} img").get_attribute("src")
    return np.asarray(Image.open(io.BytesIO(page.request.get(src).body())).convert("RGB"))


def marker_x(page: Any) -> str | None:
    line = page.locator(MARKER)
    return line.get_attribute("x1") if line.count() else None


def slider_value(page: Any) -> int:
    return int(page.locator("#cf-step input[type=range]").input_value())


def _new_model_view(page: Any, act: Callable[[], None]) -> None:
    """Do `act` and wait until tab 1's model-input view shows a new image. An image already there (an earlier
    upload) must not count, or the preview could land after the caller's next step (it sets the target to the
    runner-up)."""
    old = page.eval_on_selector_all("#cf-input img", "els => els.length ? els[0].src : null")
    act()
    page.wait_for_function("""old => { const img = document.querySelector('#cf-input img');
        return !!img && !!img.src && img.src !== old && img.complete; }""", arg=old)


def upload(page: Any, image: str | Path) -> None:
    """Upload through the cf-image file input and wait for the model-input preview."""
    _new_model_view(page, lambda: page.set_input_files("#cf-image input[type=file]", str(image)))


def pick_target(page: Any, name: str) -> None:
    page.locator("#cf-target input").click()
    page.get_by_role("option", name=name, exact=True).click()
    page.wait_for_function("v => document.querySelector('#cf-target input').value === v", arg=name)


def _until_new_frame(page: Any, selector: str, event: str, act: Callable[[], None], timeout_s: float,
                     running: bool = False) -> float:
    """Seconds from `event` on `selector` (fired by `act`) until a new frame is shown (`running`: a frame
    streamed while PGD runs; otherwise a finished path's)."""
    old = frame_src(page)
    page.eval_on_selector(selector, START_CLOCK, event)
    act()
    return page.wait_for_function(FRAME_SHOWN, arg=[old, running], timeout=timeout_s * 1000).json_value() / 1000


def run_counterfactual(page: Any, timeout_s: float = 120.0) -> float:
    """Click Run; seconds until the result's frame is shown (the finished path, after any streamed frames)."""
    return _until_new_frame(page, "#cf-run", "click", lambda: page.click("#cf-run"), timeout_s)


def first_streamed_frame(page: Any, timeout_s: float = 120.0) -> float:
    """Click Run; seconds until the first frame streamed while PGD runs is shown (the run goes on)."""
    return _until_new_frame(page, "#cf-run", "click", lambda: page.click("#cf-run"), timeout_s, running=True)


def move_slider(page: Any, key: str, timeout_s: float = 10.0) -> float:
    """Press `key` (Home, ArrowLeft, ...) on the step slider; seconds until the new frame is shown."""
    slider = "#cf-step input[type=range]"
    return _until_new_frame(page, slider, "keydown", lambda: page.locator(slider).press(key), timeout_s)


def open_tab(page: Any, name: str) -> None:
    page.get_by_role("tab", name=name, exact=True).click()


def toasts(page: Any) -> list[str]:
    """The texts of the notifications (toasts) on screen now."""
    return [t.inner_text() for t in page.locator(".toast-body").all()]


def settings(page: Any, **values: Any) -> None:
    """Open tab 1's settings and type values: eps="0.5", steps=3, step_size=0.1 (each box left with Tab)."""
    if not page.locator("#cf-steps input").is_visible():
        page.locator("#cf-settings").get_by_text("Settings").click()
    for name, value in values.items():
        type_into(page, f"#cf-{name.replace('_', '-')} input", value, check=name != "eps")


def type_into(page: Any, selector: str, value: Any, check: bool = True) -> None:
    """Type `value` into the box at `selector` and leave it (Tab; Enter when not `check`ed, e.g. a dropdown's
    text), retrying while a late page event (the page-load one on a busy machine) resets it."""
    box = page.locator(selector).first
    for attempt in range(3):
        box.fill(str(value))
        box.press("Tab" if check else "Enter")
        if not check or _holds(page, box, str(value)):
            return
    raise AssertionError(f"the box {selector} does not keep {value!r}: it shows {box.input_value()!r}")


def _holds(page: Any, box: Any, value: str, timeout_ms: int = 5000) -> bool:
    """Whether a number box shows `value` within the timeout (the locator is re-resolved on every poll)."""
    deadline = time.monotonic() + timeout_ms / 1000
    while time.monotonic() < deadline:
        if box.input_value() == value:
            page.wait_for_timeout(100)          # and still does a moment later
            if box.input_value() == value:
                return True
        page.wait_for_timeout(100)
    return False


def pick_example(page: Any, index: int = 0) -> None:
    """Click an example of tab 1's strip and wait for the model's view of it."""
    _new_model_view(page, lambda: page.locator("#cf-examples .thumbnail-item").nth(index).click())


@contextlib.contextmanager
def model_hooked(demo: Any, seconds: float = 0.02, slow_from: int = 1, fail_at: int | None = None,
                 failure: str = "simulated: CUDA out of memory") -> Iterator[list]:
    """Every forward of the served app's model from now is counted (the list yielded), takes `seconds` from the
    `slow_from`-th on (long runs to stop), and the `fail_at`-th raises RuntimeError(`failure`), as running out of GPU
    memory partway does."""
    calls: list = []

    def hook(*_: Any) -> None:
        calls.append(1)
        if len(calls) >= slow_from:
            time.sleep(seconds)
        if len(calls) == fail_at:
            raise RuntimeError(failure)
    handle = demo.explainer.default.model.register_forward_hook(hook)
    try:
        yield calls
    finally:
        handle.remove()
