"""The DAT Explainer app's handlers: `Explainer` methods that tests and benchmarks call without a server or a
browser; `app.py` lays out the UI and wires them to events.

Gradio appears here only in what handlers take and give back (progress, `gr.update`, `gr.Error` for bad input);
the math lives in `explain/` and `dat_core/`, per-session results in the byte-bounded cache of `explain.session`.
Input checks live in `app_inputs`, the stateless named API endpoints in `app_api`.
"""

import math
from pathlib import Path

import gradio as gr
import numpy as np
import torch

import explain
from dat_core.loading import DEFAULT_MODEL_DIR
from dat_core.energy import marginal_energy, probabilities
from dat_core.runtime import use_autocast
from explain import params
from webapp import charts as render, state as session, views
from webapp.inputs import (ATTR_FRAMES, EVERY_CLASS, MAX_ALL_TARGETS, MAX_SAMPLES_PER_CLASS, MAX_STEPS, NORMS,
                        SEED_KINDS, eps_choices, eps_text, image_source, parse_methods, user_errors)
from explain.attribution import TITLES, attribute_trajectory, plot_attributions
from explain.export import save_gif, save_metrics_json
from explain.landscape import energy_landscape
from explain.plots import figure_to_array


class Explainer:
    """The app's handlers, as plain methods over a model registry and a per-session result cache.

    Session state (a `gr.State`) is a small dict {"id": uuid4 hex, "source", "revision"}; results live
    in `self.cache` under keys "<id>/<slot>", so sessions never see each other's results.
    """

    def __init__(self, model: str = "default", standard_model: str | None = "auto", revision: str | None = None,
                 cache_bytes: int = session.DEFAULT_CACHE_BYTES, max_models: int = 4, autocast: str = "auto"):
        use_autocast(autocast, torch.device("cpu"))  # validates the spec now, not on the first request
        self.autocast = autocast
        self.models = session.ModelRegistry(max_models)
        self.default = self.models.load(model, revision, pin=True)
        self.standard, self.standard_note = self._load_standard(standard_model)
        self.cache = session.TrajectoryCache(cache_bytes)
        self.files = session.TempFiles()

    def _load_standard(self, source: str | None):
        if source == "auto":
            found = sorted(p for p in DEFAULT_MODEL_DIR.glob("standard-*") if (p / "config.json").is_file())
            if not found:
                return None, ("No standard (non-robust) model is available: none is bundled yet. Start the app "
                              "with `--standard-model DIR|REPO_ID` to compare.")
            source = str(found[0])
        if not source:
            return None, "No standard model was given (start the app with `--standard-model DIR|REPO_ID`)."
        loaded = self.models.load(source, pin=True)
        return loaded, f"Standard model: {loaded.label}."

    # ------------------------------------------------------------ session helpers

    def new_session(self) -> dict:
        return {"id": session.new_key(), "source": self.default.source, "revision": self.default.revision}

    def _session(self, state) -> dict:
        if not isinstance(state, dict) or not isinstance(state.get("id"), str) or len(state["id"]) != 32:
            return self.new_session()
        return state

    def _model(self, state: dict) -> session.LoadedModel:
        return self.models.load(state.get("source", "default"), state.get("revision"))

    def uses_bf16(self, loaded: session.LoadedModel) -> bool:
        """bf16 autocast for PGD and landscapes on this model's device (`auto`: where native)."""
        return use_autocast(self.autocast, loaded.device)

    def _key(self, state: dict, slot: str) -> str:
        return f"{state['id']}/{slot}"

    def _view(self, state, slot: str, what: str):
        state = self._session(state)
        view = self.cache.get(self._key(state, slot))
        if view is None:
            raise gr.Error(f"No {what} to show yet (or it was dropped from memory): run it first.",
                           print_exception=False)
        return view

    @staticmethod
    def model_input(image, loaded: session.LoadedModel) -> torch.Tensor:
        image = image_source(image)
        if image is None or (isinstance(image, str) and not image.strip()):
            raise gr.Error("Upload an image first (or click an example).", print_exception=False)
        try:
            return explain.to_model_input(image, loaded.image_size)
        except explain.ImageError as e:  # name the file as the person knows it, not by its server path
            name = Path(image).name if isinstance(image, str) else ""
            text = str(e).replace(image, name) if name else str(e)
            text = text if name and text.startswith(name) else text[:1].upper() + text[1:]
            raise gr.Error(text, print_exception=False) from None

    @staticmethod
    def target_index(target, loaded: session.LoadedModel) -> int:
        if target is None or (isinstance(target, str) and not target.strip()):
            raise gr.Error("Choose a target class.", print_exception=False)
        return explain.resolve_class(target, loaded.class_names)

    @staticmethod
    def pgd_params(norm, eps, steps, step_size) -> dict:
        return explain.validate_params(norm or "L2", params.parse_eps(eps),
                                       params.parse_positive("step size", step_size),
                                       params.parse_int("steps", steps, 1, MAX_STEPS))

    @staticmethod
    def _reporter(progress, desc: str):
        if progress is None:
            return lambda done, total: None
        return lambda done, total: progress((done, total), desc=desc, unit="steps")

    def _check_budget(self, n_paths: int, steps: int, size: int) -> None:
        need = n_paths * (steps + 1) * 3 * size * size * 7  # float32 frames + uint8 frames + uint8 differences
        if need > self.cache.max_bytes // 2:
            raise ValueError(f"{n_paths} paths of {steps} steps at {size}×{size} px need about {need / 2**20:.0f} MB; "
                             f"the server keeps {self.cache.max_bytes / 2**20:.0f} MB of results. "
                             "Ask for fewer steps or targets.")

    def trajectory(self, loaded, x, target: int, req: dict, progress=None, desc: str = "Running PGD"):
        """One counterfactual path, memoized by content (model, image, target, parameters)."""
        self._check_budget(1, req["steps"], loaded.image_size)
        memo = "memo/" + session.request_hash(loaded.key, x, target, sorted(req.items()))
        traj = self.cache.get(memo)
        if traj is None:
            model = session.ProgressModel(loaded.model, req["steps"] + 1, self._reporter(progress, desc))
            traj = explain.counterfactual(model, x, target, autocast=self.uses_bf16(loaded), **req)
            self.cache.put(memo, traj)
        return traj

    def exports(self, traj, scale: int):
        names = traj.class_names
        stem = f"counterfactual_{names[traj.source]}_to_{names[traj.target]}"
        gif = save_gif(traj, self.files.path(stem + ".gif"), scale=scale)
        js = save_metrics_json(traj, self.files.path(stem + ".json"))
        return str(gif), str(js)

    def banner(self, loaded: session.LoadedModel) -> str:
        names = loaded.class_names
        shown = ", ".join(names[:10]) + (", …" if len(names) > 10 else "")
        return (f"**Model:** {loaded.label} · `{loaded.config.get('arch')}` · {len(names)} classes ({shown}) · "
                f"{loaded.image_size}×{loaded.image_size} px")

    # ------------------------------------------------------------ tab 1: counterfactual

    PREVIEW = ("state", "cf_input", "cf_prediction", "cf_energy", "cf_target")

    @user_errors
    def preview(self, image, state):
        """The uploaded image at model resolution, its top-k prediction and its energy E(x)."""
        state = self._session(state)
        loaded = self._model(state)
        if image_source(image) is None:
            return (state, None, render.placeholder("Upload an image to see what the model predicts"),
                    "", gr.update())
        x = self.model_input(image, loaded)
        with torch.no_grad():
            logits = loaded.model(x.to(loaded.device)).float()
        probs = probabilities(logits)[0].cpu().numpy()
        energy = float(marginal_energy(logits)[0])
        order = np.argsort(-probs)
        runner_up = int(order[1] if len(order) > 1 else order[0])
        names = loaded.class_names
        bars = render.probability_bars(probs, names, k=5, source=int(order[0]), title="What the model predicts")
        text = (f"**Energy E(x) = {render.fmt(energy)}** — lower is more typical: "
                f"{session.typicality(energy, loaded.config.get('energy_quantiles'))}.")
        image_u8 = (x[0].permute(1, 2, 0).numpy() * 255 + 0.5).astype(np.uint8)
        return (state, render.upscale(image_u8, render.display_scale(loaded.image_size)), bars, text,
                gr.update(value=names[runner_up]))

    def norm_defaults(self, norm, state):
        """Default radius and step size for a threat model at the session model's resolution."""
        loaded = self._model(self._session(state))
        d = explain.default_params(loaded.image_size, norm if norm in NORMS else "L2")
        return gr.update(choices=eps_choices(d["norm"], loaded.image_size), value=eps_text(d["eps"], d["norm"])), \
            d["step_size"]

    SCRUB = ("cf_frame", "cf_diff", "cf_probs", "cf_energy_plot", "cf_prob_plot", "cf_distance_plot", "cf_caption",
             "land_map", "land_path")
    SHOW = ("state", "cf_step", *SCRUB, "cf_summary", "cf_gif", "cf_json", "land_step", "land_info",
            "attr_figure", "attr_info")

    def _scrub_outputs(self, view: views.CounterfactualView, i: int) -> tuple:
        land = view.landscape
        return (view.frame(i), view.diff(i), view.bars(i), view.chart("energy", i), view.chart("confidence", i),
                view.chart("distance", i), view.caption(i),
                land.map(i) if land else gr.skip(), land.path(i) if land else gr.skip())

    def _show(self, state: dict, view: views.CounterfactualView) -> tuple:
        """Store a counterfactual view for this session and return everything tab 1 shows for it.

        The downloads are written afterwards by `export_counterfactual` (chained in app.py): the GIF's
        per-frame palettes take about as long as the PGD path itself, and the frame should not wait for them.
        """
        self.cache.put(self._key(state, "cf"), view)
        last = len(view) - 1
        pending = gr.update(value=None, interactive=False)
        return (state, gr.update(maximum=last, value=last, interactive=True), *self._scrub_outputs(view, last),
                view.summary(), pending, pending,
                gr.update(value=0, maximum=last, interactive=False),
                "Press **Compute landscape** to see the energy around this path.", None,
                "Press **Compute attributions** to explain this counterfactual.")

    @user_errors
    def run_counterfactual(self, image, target, norm, eps, steps, step_size, state, progress=gr.Progress()):
        """Targeted PGD from the image toward `target`; the path is kept for scrubbing."""
        state = self._session(state)
        loaded = self._model(state)
        req = self.pgd_params(norm, eps, steps, step_size)
        x = self.model_input(image, loaded)
        traj = self.trajectory(loaded, x, self.target_index(target, loaded), req, progress)
        return self._show(state, views.CounterfactualView.build(traj, loaded.key))

    EXPORTS = ("cf_gif", "cf_json")

    @user_errors
    def export_counterfactual(self, state):
        """The GIF and JSON downloads of the path the session shows now."""
        view = self._view(self._session(state), "cf", "counterfactual")
        gif, js = self.exports(view.trajectory, view.scale)
        return gr.update(value=gif, interactive=True), gr.update(value=js, interactive=True)

    @user_errors
    def scrub(self, state, step):
        """A slider move: index the cached frames and move the chart markers (no model call)."""
        view = self._view(state, "cf", "counterfactual")
        i = view.index(step)
        return (*self._scrub_outputs(view, i), gr.update(value=i))

    def play_start(self, state, step):
        """Start the animation (from the beginning when the slider is at the end)."""
        view = self.cache.get(self._key(self._session(state), "cf"))
        if view is None:
            return (gr.skip(),) * (len(self.SCRUB) + 1) + (gr.Timer(active=False),)
        i = view.index(step)
        i = 0 if i >= len(view) - 1 else i
        return (gr.update(value=i), *self._scrub_outputs(view, i), gr.Timer(active=True))

    def play_tick(self, state, step):
        view = self.cache.get(self._key(self._session(state), "cf"))
        if view is None:
            return (gr.skip(),) * (len(self.SCRUB) + 1) + (gr.Timer(active=False),)
        i = min(view.index(step) + 1, len(view) - 1)
        done = i >= len(view) - 1
        # only ever switch the timer off here: answering "active" would undo a Stop pressed meanwhile
        return (gr.update(value=i), *self._scrub_outputs(view, i), gr.Timer(active=False) if done else gr.skip())

    # ------------------------------------------------------------ tab 2: all targets

    @user_errors
    def run_all_targets(self, image, norm, eps, steps, step_size, state, progress=gr.Progress()):
        """Counterfactuals toward every class (the most probable MAX_ALL_TARGETS ones for big label sets)."""
        state = self._session(state)
        loaded = self._model(state)
        req = self.pgd_params(norm, eps, steps, step_size)
        x = self.model_input(image, loaded)
        k = len(loaded.class_names)
        if k <= MAX_ALL_TARGETS:
            targets, note = list(range(k)), ""
        else:
            with torch.no_grad():
                order = loaded.model(x.to(loaded.device)).float()[0].argsort(descending=True)
            targets = sorted(int(c) for c in order[:MAX_ALL_TARGETS])
            note = f"\n\n_Showing the {MAX_ALL_TARGETS} most probable of {k} classes._"
        self._check_budget(len(targets), req["steps"], loaded.image_size)
        chunks = math.ceil(len(targets) / 64)
        model = session.ProgressModel(loaded.model, chunks * (req["steps"] + 1),
                                      self._reporter(progress, f"PGD toward {len(targets)} classes"))
        trajs = explain.counterfactuals(model, x, targets, autocast=self.uses_bf16(loaded), **req)
        view = views.AllTargetsView(trajs, loaded.key, render.display_scale(loaded.image_size))
        self.cache.put(self._key(state, "all"), view)
        return state, view.gallery(), view.table() + note

    @user_errors
    def open_target(self, state, evt: gr.SelectData):
        """A click on a cell of the all-targets grid opens that path in the scrubber (tab 1)."""
        state = self._session(state)
        view = self._view(state, "all", "all-targets grid")
        i = evt.index[0] if isinstance(evt.index, (list, tuple)) else evt.index
        if not isinstance(i, int) or not 0 <= i < len(view.trajectories):
            raise gr.Error(f"No grid cell {evt.index!r}.", print_exception=False)
        traj = view.trajectories[i]
        shown = self._show(state, views.CounterfactualView.build(traj, view.model_key))
        return (*shown, gr.Tabs(selected="counterfactual"), gr.update(value=traj.class_names[traj.target]))

    # ------------------------------------------------------------ tab 3: energy landscape

    @user_errors
    def run_landscape(self, state, step, energy, grid, progress=gr.Progress()):
        """The energy on a plane through x_0 containing the counterfactual direction."""
        state = self._session(state)
        view = self._view(state, "cf", "counterfactual (run one in the first tab)")
        grid = params.parse_int("grid size", grid, 5, 65)
        if grid % 2 == 0:
            raise gr.Error("The grid size must be odd (so the start image is a grid point).", print_exception=False)
        loaded = self._loaded(view.model_key)
        progress(None, desc=f"Evaluating the energy on {grid}×{grid} points")
        land = energy_landscape(loaded.model, view.trajectory, grid=grid, autocast=self.uses_bf16(loaded),
                                energy="joint" if str(energy).startswith("E(x, ") else "marginal")
        view.landscape = views.LandscapeView.build(land)
        self.cache.put(self._key(state, "cf"), view)  # re-measured: the landscape is part of the view now
        i = view.index(step)
        return (view.landscape.map(i), view.landscape.path(i),
                gr.update(value=i, maximum=len(view) - 1, interactive=True), view.landscape.info())

    @user_errors
    def scrub_landscape(self, state, step):
        view = self._view(state, "cf", "counterfactual")
        i = view.index(step)
        return (*self._scrub_outputs(view, i), gr.update(value=i))

    def _loaded(self, key: str) -> session.LoadedModel:
        loaded = self.models.get(key)
        if loaded is None:
            source, _, revision = key.rpartition("@")
            loaded = self.models.load(source, revision or None)
        return loaded

    # ------------------------------------------------------------ tab 4: attributions

    @user_errors
    def run_attribution(self, state, methods, at, step, progress=gr.Progress()):
        """Captum maps for the predicted and the target class beside the counterfactual difference."""
        state = self._session(state)
        view = self._view(state, "cf", "counterfactual (run one in the first tab)")
        methods = parse_methods(methods)
        frame = {ATTR_FRAMES[0]: 0, ATTR_FRAMES[2]: len(view) - 1}.get(at, None)
        frame = view.index(step) if frame is None else frame
        progress(None, desc="Computing attributions")
        result = attribute_trajectory(self._loaded(view.model_key).model, view.trajectory, methods, step=-1,
                                      frame=frame)
        timing = ", ".join(f"{TITLES[m]} {s:.1f} s" for m, s in result.seconds.items())
        return figure_to_array(plot_attributions(result)), f"Explained the image at step {frame}. Time: {timing}."

    # ------------------------------------------------------------ tab 5: robust vs standard

    CMP = ("cmp_robust_frame", "cmp_robust_diff", "cmp_standard_frame", "cmp_standard_diff", "cmp_prob_plot",
           "cmp_energy_plot", "cmp_caption")

    def _cmp_outputs(self, view: views.CompareView, i: int) -> tuple:
        return (view.robust.frame(i), view.robust.diff(i), view.standard.frame(i), view.standard.diff(i),
                view.charts["confidence"].svg(i), view.charts["energy"].svg(i), view.caption(i))

    @user_errors
    def run_compare(self, image, target, norm, eps, steps, step_size, state, progress=gr.Progress()):
        """The same counterfactual request on the session's (robust) model and the standard model."""
        if self.standard is None:
            raise gr.Error(self.standard_note, print_exception=False)
        state = self._session(state)
        loaded = self._model(state)
        std = self.standard
        if std.class_names != loaded.class_names:
            raise gr.Error("The standard model has different classes than the current model; load a model with "
                           "the same classes to compare.", print_exception=False)
        req = self.pgd_params(norm, eps, steps, step_size)
        target = self.target_index(target, loaded)
        robust = self.trajectory(loaded, self.model_input(image, loaded), target, req, progress,
                                 "PGD on the robust model")
        standard = self.trajectory(std, self.model_input(image, std), target, req, progress,
                                   "PGD on the standard model")
        view = views.CompareView.build(robust, standard, loaded.key, std.key)
        self.cache.put(self._key(state, "cmp"), view)
        last = len(view) - 1
        return (state, gr.update(maximum=last, value=last, interactive=True), *self._cmp_outputs(view, last),
                view.summary())

    @user_errors
    def scrub_compare(self, state, step):
        view = self._view(state, "cmp", "comparison")
        return self._cmp_outputs(view, view.index(step))

    # ------------------------------------------------------------ tab 6: generate

    GEN = ("state", "gen_step", "gen_grid", "gen_plot", "gen_caption", "gen_gif")

    @user_errors
    def run_generate(self, target, seed_kind, seed_image, seed, n_per_class, steps, step_size, state,
                     progress=gr.Progress()):
        """Class-conditional samples by PGD on the class logit from noise or from an uploaded seed image."""
        state = self._session(state)
        view, gif = self.samples(self._model(state), target, seed_kind, seed_image, seed, n_per_class, steps,
                                 step_size, progress)
        self.cache.put(self._key(state, "gen"), view)
        last = len(view) - 1
        return (state, gr.update(maximum=last, value=last, interactive=True), view.grid(last), view.chart.svg(last),
                view.caption(last), gr.update(value=str(gif), interactive=True))

    def samples(self, loaded, target, seed_kind, seed_image, seed, n_per_class, steps, step_size,
                progress=None) -> tuple[views.SamplingView, Path]:
        """Validate a sampling request, run it, and write the animation of its sampling path."""
        seed = params.parse_int("random seed", seed, 0, 2**63 - 1)
        n = params.parse_int("samples per class", n_per_class, 1, MAX_SAMPLES_PER_CLASS)
        steps = params.parse_int("steps", steps, 1, MAX_STEPS)
        step_size = params.parse_positive("step size", step_size)
        targets = "all" if str(target).strip().lower() in (EVERY_CLASS, "all") else self.target_index(target, loaded)
        k = len(loaded.class_names) if targets == "all" else 1
        if k * n > MAX_ALL_TARGETS:
            raise gr.Error(f"{k} classes × {n} samples is more than {MAX_ALL_TARGETS} samples; pick one class or "
                           "fewer samples per class.", print_exception=False)
        kind = SEED_KINDS.get(seed_kind, seed_kind)
        if kind not in ("uniform", "lowfreq", "image"):
            raise gr.Error(f"Unknown seed kind {seed_kind!r}; choose one of {', '.join(SEED_KINDS)}.",
                           print_exception=False)
        seeds = self.model_input(seed_image, loaded) if kind == "image" else kind
        self._check_budget(1, steps, loaded.image_size)
        model = session.ProgressModel(loaded.model, steps + 1, self._reporter(progress, "Sampling"))
        samples = explain.generate(model, targets, n, seed=seed, seeds=seeds, steps=steps, step_size=step_size,
                                   record_every=1, autocast=self.uses_bf16(loaded))
        view = views.SamplingView.build(samples)
        return view, save_gif(view.grids(), self.files.path("samples.gif"), scale=1)

    @user_errors
    def scrub_generate(self, state, step):
        view = self._view(state, "gen", "sampling run")
        i = view.index(step)
        return view.grid(i), view.chart.svg(i), view.caption(i)

    # ------------------------------------------------------------ tab 7: model

    MODEL = ("state", "banner", "model_info", "model_card", "cf_target", "gen_target", "cf_input", "cf_prediction",
             "cf_energy")

    @user_errors
    def load_model(self, kind, path, repo_id, revision, image, state, progress=gr.Progress()):
        """Switch this session's model; on any failure the current model stays."""
        state = self._session(state)
        if kind == "Local folder":
            if not str(path or "").strip():
                raise gr.Error("Enter the path of a checkpoint folder.", print_exception=False)
            source, rev = str(path), None
        elif kind == "Hugging Face Hub":
            if not str(repo_id or "").strip():
                raise gr.Error("Enter a Hub repo id like owner/name.", print_exception=False)
            source, rev = str(repo_id).strip(), revision
            progress(None, desc=f"Downloading {source}")
        else:
            source, rev = "default", None
        loaded = self.models.load(source, rev)
        new_state = {**state, "source": loaded.source, "revision": loaded.revision}
        names = loaded.class_names
        preview = self.preview(image, new_state) if image_source(image) is not None else (
            new_state, None, render.placeholder("Upload an image to see what the model predicts"), "",
            gr.update(value=names[min(1, len(names) - 1)]))
        return (new_state, self.banner(loaded), session.describe_model(loaded), session.card_text(loaded),
                gr.update(choices=names, value=preview[4].get("value", names[0])),
                gr.update(choices=[EVERY_CLASS, *names], value=EVERY_CLASS), *preview[1:4])

    def model_view(self, state):
        loaded = self._model(self._session(state))
        return self.banner(loaded), session.describe_model(loaded), session.card_text(loaded)
