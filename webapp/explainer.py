"""What every tab shares: the loaded models, the per-session result cache and temp files, and the steps most
requests take (find the session and its model, check the budget, run a memoized counterfactual path, report
progress through the PGD engine's `on_step` hook).

The tabs' handlers (webapp/tabs/) are plain functions taking an `Explainer` first; tests and benchmarks call
them directly, without a server or a browser.
"""

from __future__ import annotations

import contextvars
import math
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Iterator

import gradio as gr
import numpy as np
import torch

import explain
from dat_core.energy import probabilities
from dat_core.guidance import CONE_ANGLE
from dat_core.loading import DEFAULT_MODEL_DIR
from dat_core.pgd import STOP, OnStep, PGDStep
from dat_core.runtime import use_autocast, use_compile
from explain.export import save_gif, save_metrics_json
from explain.trajectory import Trajectory

from . import fairness, links
from . import state as st
from .charts import plural
from .fastpath import fast_path

STREAM_THREAD = "pgd-stream"  # the worker threads' name
STREAM_EVERY_S = 0.25
"""How often a running counterfactual shows where it is: at most 4 frames a second (a small model's 60 steps
take a fraction of a second and would flood the page; an ImageNet model's step takes ~0.4-1 s on a CPU)."""


class Explainer:
    """The app's process-wide services: a model registry, a byte-bounded result cache, download files.

    Session state (a `gr.State`) is a small dict {"id": uuid4 hex, "source", "revision"}; results live
    in `self.cache` under keys "<id>/<slot>", so sessions never see each other's results.
    """

    def __init__(self, model: str = "default", standard_model: str | None = "auto", revision: str | None = None,
                 cache_bytes: int = st.DEFAULT_CACHE_BYTES, max_models: int = 4, autocast: str = "auto",
                 allow_local_models: bool | None = None, hub_options: dict[str, Any] | None = None,
                 compile: str = "off"):
        use_autocast(autocast, torch.device("cpu"))  # validates the specs now, not on the first request
        use_compile(compile, torch.device("cpu"))
        self.autocast = autocast
        self.compile = compile  # each loaded model's fast path (webapp/fastpath.py): auto|on|off
        # visitors may load checkpoint folders of this server (the Model tab): app.py decides from where it listens
        # (sources.local_models_allowed); a library caller gets them unless on a Space
        self.allow_local_models = (not os.environ.get("SPACE_ID")) if allow_local_models is None \
            else bool(allow_local_models)
        self.models = st.ModelRegistry(max_models, hub_options=hub_options,
                                       fast_path=lambda model, name: fast_path(model, compile, autocast, name))
        self._default_key = self.models.load(model, revision, pin=True).key
        self._standard_key, self.standard_note = self._load_standard(standard_model)
        self.cache = st.TrajectoryCache(cache_bytes)
        self.files = st.TempFiles()
        self.examples = links.Examples(links.EXAMPLES_DIR)  # build_demo sets the page's own
        self._runs: dict[str, threading.Event] = {}  # session id -> its run in flight, for Cancel
        self._runs_lock = threading.Lock()

    def _load_standard(self, source: str | None) -> tuple[str | None, str]:
        if source == "auto":
            found = sorted(p for p in DEFAULT_MODEL_DIR.glob("standard-*") if (p / "config.json").is_file())
            if not found:
                return None, ("No standard (non-robust) model is available: none is bundled yet. Start the app "
                              "with `--standard-model DIR|REPO_ID` to compare.")
            source = str(found[0])
        if not source:
            return None, "No standard model was given (start the app with `--standard-model DIR|REPO_ID`)."
        loaded = self.models.load(source, pin=True)
        return loaded.key, f"Standard model: {loaded.label}."

    @property
    def default(self) -> st.LoadedModel:
        """The app's model (pinned: always loaded), read per request: loading its Hub branch again may replace it."""
        return self.models.get(self._default_key)

    @property
    def standard(self) -> st.LoadedModel | None:
        """The standard (non-robust) model the Compare tab shows, if the app has one."""
        return None if self._standard_key is None else self.models.get(self._standard_key)

    # ------------------------------------------------------------ sessions and their models

    def new_session(self) -> dict:
        return {"id": st.new_key(), "source": self.default.source, "revision": self.default.revision,
                "key": self.default.key}

    def session(self, state: Any) -> dict:
        """The session dict, or a fresh one when the browser sent none (or something that is not ours)."""
        if not isinstance(state, dict) or not isinstance(state.get("id"), str) or len(state["id"]) != 32:
            return self.new_session()
        return state

    def session_model(self, state: dict) -> st.LoadedModel:
        """The model this session chose on the Model tab (the app's model until then)."""
        key = state.get("key") if isinstance(state, dict) else None
        return self.model_by_key(key) if isinstance(key, str) else self.default

    def model_by_key(self, key: str) -> st.LoadedModel:
        """A model by its key (sessions and stored results keep it), reloaded from the source it was first
        loaded from if the registry dropped it meanwhile; the app's model for a key never loaded here."""
        loaded = self.models.get(key)
        if loaded is None:
            source = self.models.source(key)
            loaded = self.models.load(source) if source is not None else self.default
        return loaded

    def view_model(self, view: Any) -> st.LoadedModel:
        """The model a stored path was made with (`view.model_key`, `view.model_version`); ValueError when its key
        now serves other weights (a Hub branch that moved on), so no path is explained with a model it is not of."""
        loaded = self.model_by_key(view.model_key)
        if view.model_version and loaded.version != view.model_version:
            raise ValueError("The model this path was made with has changed since (its Hub branch moved on to a new "
                             "commit): run the counterfactual again.")
        return loaded

    def uses_bf16(self, loaded: st.LoadedModel) -> bool:
        """bf16 autocast for PGD and landscapes on this model's device (`auto`: where native)."""
        return use_autocast(self.autocast, loaded.device)

    # ------------------------------------------------------------ per-session results

    def put(self, state: dict, slot: str, value: Any) -> None:
        self.cache.put(f"{state['id']}/{slot}", value)

    def forget(self, state: Any, slot: str) -> bool:
        """Drop a session's stored result (made stale by another image or model); True if there was one."""
        key = f"{self.session(state)['id']}/{slot}"
        if self.cache.get(key) is None:
            return False
        self.cache.discard(key)
        return True

    def get(self, state: Any, slot: str) -> Any:
        """A session's stored result, or None (never run, or dropped from memory)."""
        return self.cache.get(f"{self.session(state)['id']}/{slot}")

    def view(self, state: Any, slot: str, what: str) -> Any:
        """A session's stored result; a clear error when there is none to show."""
        view = self.get(state, slot)
        if view is None:
            raise gr.Error(missing(what), print_exception=False)
        return view

    # ------------------------------------------------------------ computing

    def check_budget(self, loaded: st.LoadedModel, n_paths: int, steps: int, fewer: str = "steps or targets",
                     at_once: int | None = None) -> None:
        """Refuse a request (before computing anything) whose frames could not stay in the result cache (one request
        may fill half of it), or whose batch of paths (`at_once` of them, default all) needs more activation memory
        than one request may hold (100 samples of an ImageNet ConvNeXt-L: about 43 GiB). `fewer` names what the
        visitor can lower."""
        batch = min(n_paths, at_once or n_paths)
        need = batch * st.activation_bytes(loaded.config)
        if batch > st.paths_at_once(loaded.config):
            raise ValueError(f"{plural(batch, 'path')} of this model at once need about {_mb(need)} of "
                             f"activations; one request may hold {_mb(st.REQUEST_ACTIVATION_BYTES)} (at most "
                             f"{plural(st.paths_at_once(loaded.config), 'path')} of it). Ask for fewer "
                             f"{fewer.replace('steps or ', '')}.")
        size = loaded.image_size
        need = n_paths * (steps + 1) * 3 * size * size * 7  # float32 frames + uint8 frames + uint8 differences
        if need > self.cache.max_bytes // 2:
            paths = plural(n_paths, "path")
            raise ValueError(f"The frames of {paths} of {steps} steps at {size}×{size} px need about "
                             f"{_mb(need)}; one request may keep {_mb(self.cache.max_bytes // 2)} of "
                             f"results. Ask for fewer {fewer}.")

    def trajectory(self, loaded: st.LoadedModel, x: torch.Tensor, target: int, req: dict, progress: Any = None,
                   desc: str = "Running PGD", cancel: threading.Event | None = None,
                   guide: st.LoadedModel | None = None, cone_angle: float = CONE_ANGLE,
                   mask: torch.Tensor | None = None, eager: bool = False) -> Trajectory:
        """One counterfactual path, memoized by content (model, image, target, parameters; `guide` and
        `cone_angle`: steered by a DAT model, `dat_core.guidance`; `mask`: the (S, S) region it may change;
        `eager`: on the eager model even where the app compiled it, as `python -m explain replay` runs it). A set
        `cancel` ends PGD at its next step (`Cancelled`); a cut path is never memoized."""
        self.check_budget(loaded, 1, req["steps"], "steps")
        guided = {} if guide is None else {"guide": guide.model, "cone_angle": float(cone_angle)}
        model = loaded.fast.eager if eager else loaded.model
        key = {**req} if guide is None else {**req, "guide": guide.key, "cone_angle": float(cone_angle)}
        if model is not loaded.model:   # the compiled model rounds otherwise: its paths are not the eager one's
            key["eager"] = True
        memo = _memo_key(loaded, x, target, key, mask)
        traj = self.cache.get(memo)
        if traj is None:
            traj = explain.counterfactual(model, x, target, autocast=self.uses_bf16(loaded),
                                          on_step=progress_steps(progress, desc, req["steps"], cancel), **guided,
                                          mask=mask, **req)
            self._keep(memo, traj, req)
        return traj

    def stream(self, loaded: st.LoadedModel, x: torch.Tensor, target: int, req: dict, progress: Any = None,
               desc: str = "Running PGD", cancel: threading.Event | None = None,
               every_s: float | None = None, mask: torch.Tensor | None = None) -> Iterator[Running | Trajectory]:
        """`trajectory`, watched while it runs: PGD runs in a worker thread, and this yields where it stands
        (`Running`, at most every `every_s` seconds, default STREAM_EVERY_S; the first step always) and then the
        finished path.

        Closing the generator (Gradio cancels the event, the browser left) stops PGD at its next step; the
        worker is joined before the generator ends, so the model serves one computation at a time still."""
        self.check_budget(loaded, 1, req["steps"], "steps")
        memo = _memo_key(loaded, x, target, req, mask)
        traj = self.cache.get(memo)
        if traj is not None:
            yield traj
            return
        cancel = cancel or threading.Event()
        hook = progress_steps(progress, desc, req["steps"], cancel)
        news = threading.Condition()
        latest: list[Running] = []
        first: list[int] = []  # the class predicted for x_0 (step 1's logits are f(x_0))
        outcome: dict[str, Any] = {}

        def on_step(step: PGDStep) -> str | None:
            answer = hook(step) if hook is not None else None
            probs = probabilities(step.logits[:1].float())[0]
            if not first:
                first.append(int(probs.argmax()))
            seen = Running(step.step, step.steps, step.x[0].detach().cpu().numpy().copy(),
                           probs.cpu().numpy(), first[0])
            with news:
                latest[:] = [seen]
                news.notify()
            return answer

        def work() -> None:
            try:
                outcome["path"] = explain.counterfactual(loaded.model, x, target, autocast=self.uses_bf16(loaded),
                                                         on_step=on_step, mask=mask, **req)
            except BaseException as e:  # handed to the generator, which raises it in the request
                outcome["error"] = e
            finally:
                with news:
                    outcome["done"] = True
                    news.notify()

        # a copy of this request's context: Gradio's progress bar finds its event through context variables
        worker = threading.Thread(target=contextvars.copy_context().run, args=(work,), name=STREAM_THREAD,
                                  daemon=True)
        worker.start()
        shown_at, every_s = -math.inf, STREAM_EVERY_S if every_s is None else every_s
        try:
            while True:
                with news:
                    news.wait_for(lambda: bool(latest) or "done" in outcome)
                    seen, finished = (latest.pop() if latest else None), "done" in outcome
                if seen is not None and not finished and time.monotonic() - shown_at >= every_s:
                    shown_at = time.monotonic()
                    yield seen
                if finished:
                    break
        finally:
            if worker.is_alive():  # closed early: stop PGD and wait for it
                cancel.set()
                worker.join()
        if "error" in outcome:
            raise outcome["error"]
        self._keep(memo, outcome["path"], req)
        yield outcome["path"]

    def _keep(self, memo: str, traj: Trajectory, req: dict) -> None:
        """Memoize a finished path; a path Cancel cut short raises `Cancelled` instead."""
        if int(traj.steps[-1]) < req["steps"]:
            raise Cancelled(int(traj.steps[-1]), req["steps"])
        self.cache.put(memo, traj)

    # ------------------------------------------------------------ cancelling

    @contextmanager
    def cancellable(self, state: dict) -> Iterator[threading.Event]:
        """A run of this session that its Cancel button can stop: `cancel(state)` sets the event while the
        run is in flight, and the PGD hook (`progress_steps`) then answers STOP."""
        event = threading.Event()
        with self._runs_lock:
            self._runs[state["id"]] = event
        try:
            yield event
        finally:
            with self._runs_lock:
                if self._runs.get(state["id"]) is event:
                    del self._runs[state["id"]]

    def cancel(self, state: Any) -> bool:
        """Stop this session's run in flight (if any) at its next PGD step; True if there was one."""
        with self._runs_lock:
            event = self._runs.get(self.session(state)["id"])
        if event is not None:
            event.set()
        return event is not None

    def exports(self, traj: Trajectory, scale: int) -> tuple[str, str]:
        """The GIF and per-step JSON of a path, written to fresh download files."""
        names = traj.class_names
        stem = f"counterfactual_{names[traj.source]}_to_{names[traj.target]}"
        gif = save_gif(traj, self.files.path(stem + ".gif"), scale=scale)
        js = save_metrics_json(traj, self.files.path(stem + ".json"))
        return str(gif), str(js)

    def view_exports(self, view: Any) -> tuple[str, str]:
        """The downloads of a stored path (`exports`), written once and again only when the server pruned them: tab
        1's chained export, an event any visitor may send again and again (one at a time for the whole server),
        encoded the GIF anew each time, seconds of a 500-step path."""
        if view.exported is None or not all(os.path.isfile(f) for f in view.exported):
            view.exported = self.exports(view.trajectory, view.scale)
        return view.exported


def _memo_key(loaded: st.LoadedModel, x: torch.Tensor, target: int, req: dict,
              mask: torch.Tensor | None = None) -> str:
    """By content, and by the commit or folder the model was read from: a Hub branch that moved is another model."""
    return "memo/" + st.request_hash(loaded.key, loaded.version, x, target, sorted(req.items()), "mask", mask)


@dataclass(frozen=True)
class Running:
    """Where a PGD run stands after `step` of `steps`: the iterate x_t (3, H, W), the class probabilities of
    x_{t-1} (the forward that step took anyway: no extra pass) and the class predicted for x_0."""

    step: int
    steps: int
    image: np.ndarray
    probs: np.ndarray
    source: int


def _mb(n: int) -> str:
    """Bytes in MB for a message: whole MB, or two decimals below one (a small result cache said "0 MB")."""
    return f"{n / 2**20:.0f} MB" if n >= 2**20 else f"{n / 2**20:.2f} MB"


def missing(what: str) -> str:
    """Why there is no `what` to show. A slider (an unqueued event, which shows no toast) says it in its caption:
    on a busy server a visitor's result can be dropped from memory between two moves."""
    return f"No {what} to show yet (or it was dropped from memory): run it first."


class Cancelled(gr.Error):
    """A run stopped by its Cancel button (the PGD hook answered STOP, or a `stoppable` model refused a forward)."""

    def __init__(self, step: int | None = None, steps: int | None = None):
        at = "" if step is None else f" at step {step} of {steps}"
        super().__init__(f"Cancelled{at}; nothing was changed.", title="Cancelled", duration=4, print_exception=False)


class _Stoppable(torch.nn.Module):
    """`model`, whose every forward first looks at the events that end a run (`stoppable`)."""

    def __init__(self, model: torch.nn.Module, stops: list[threading.Event]):
        super().__init__()
        self.model, self.stops, self.config = model, stops, getattr(model, "config", None)
        self.training = model.training   # the mode it wraps (a fresh module says train)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if any(e.is_set() for e in self.stops):
            raise Cancelled()
        return self.model(x)


def stoppable(model: torch.nn.Module, cancel: threading.Event | None = None) -> torch.nn.Module:
    """`model` for a computation without a PGD hook (Captum's attributions, a landscape's batches): its next forward
    raises `Cancelled` once `cancel` is set or the visitor's page has gone (`fairness.LEFT`), as PGD stops at its
    next step; they ran to the end for a page nobody had any more, holding a model worker for minutes."""
    stops = [e for e in (cancel, fairness.LEFT.get()) if e is not None]
    return _Stoppable(model, stops) if stops else model


def progress_steps(progress: Any, desc: str, total: int, cancel: threading.Event | None = None) -> OnStep | None:
    """A `dat_core.pgd` on_step hook that moves a Gradio progress bar by one per PGD step, and ends the run
    (STOP) once `cancel` is set or the visitor's page has gone.

    `total` counts the steps of every PGD run the hook serves (the all-targets tab runs several batches),
    so the bar fills once across all of them.
    """
    left = fairness.LEFT.get()   # set when the visitor's page has gone (fairness.Visitors.leave)
    stops = [e for e in (cancel, left) if e is not None]
    if progress is None and not stops:
        return None
    done = 0

    def on_step(step: PGDStep) -> str | None:
        nonlocal done
        done += 1
        if progress is not None:
            progress((min(done, total), total), desc=desc, unit="steps")
        return STOP if any(e.is_set() for e in stops) else None
    return on_step
