"""DAT Explainer web app: `python app.py [--host H] [--port P] [--model default|DIR|REPO_ID] [--share]`.

Gradio UI only (DESIGN §2): `build_demo()` lays out the UI and wires the handlers of `app_handlers.Explainer`
(plain methods, tested without a browser) to its events; `main()` is the command line.

Named API endpoints (gradio_client), all on the model the app started with:
  counterfactual(image, target, eps, steps, step_size) -> (metrics JSON, final image, GIF)
  generate(target, seed, steps, step_size)             -> (samples JSON, sample grid, GIF)
  landscape(image, target, eps, steps, step_size)      -> (figure, landscape JSON)
  attribute(image, target, methods, eps, steps, step_size) -> (figure, attributions JSON)
"""

import argparse
import os
import sys
from pathlib import Path

import gradio as gr

import explain
from webapp.api import ApiEndpoints
from webapp.explainer import Explainer
from webapp.inputs import ATTR_FRAMES, EVERY_CLASS, MAX_STEPS, NORMS, SEED_KINDS, eps_choices, eps_text
from dat_core.loading import default_model_dir
from dat_core.sampling import default_step_size, default_steps
from webapp import charts as render, state as session
from explain.attribution import METHODS, TITLES

EXAMPLES_DIR = Path(__file__).resolve().parent / "assets" / "examples"
NO_MODEL_MESSAGE = ("no bundled model yet; pass --model DIR or a Hub repo id (owner/name); train one with "
                    "`python -m train stage1 ...` then `python -m train stage2 ...` (see README)")


# ---------------------------------------------------------------- layout

INTRO = """## DAT Explainer: watch a robust classifier change its mind
Pick an image and a target class. PGD changes the image step by step until the model sees the target; because the
model was trained with Dual Adversarial Training, the changes look like the target class. **Scrub the slider** to
watch every step. Energy E(x): lower means more like the training data."""


def build_demo(model: str = "default", *, standard_model: str | None = "auto", revision: str | None = None,
               explainer: Explainer | None = None, autocast: str = "auto") -> gr.Blocks:
    """The app. Loads `model` (and the comparison model) now; raises if the model cannot be loaded."""
    ex = explainer or Explainer(model, standard_model=standard_model, revision=revision, autocast=autocast)
    m = ex.default
    names = m.class_names
    d = explain.default_params(m.image_size, "L2")
    c: dict[str, gr.components.Component] = {}

    def out(*keys):
        return [c[k] for k in keys]

    with gr.Blocks(title="DAT Explainer", delete_cache=(900, 3600)) as demo:
        c["state"] = gr.State(None)
        gr.Markdown(INTRO, elem_id="intro")
        c["banner"] = gr.Markdown(ex.banner(m), elem_id="model-banner")
        with gr.Tabs(elem_id="tabs") as tabs:
            c["tabs"] = tabs
            with gr.Tab("Counterfactual", id="counterfactual", elem_id="tab-counterfactual"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3, min_width=300):
                        with gr.Row(equal_height=True):
                            c["cf_image"] = gr.Image(type="filepath", image_mode=None, label="1 · Your image",
                                                  sources=["upload", "clipboard"], height=190, elem_id="cf-image",
                                                  scale=3, min_width=150)
                            c["cf_input"] = gr.Image(label="Model input",
                                                     interactive=False, format="png", height=190, min_width=110,
                                                     elem_id="cf-input", buttons=[], scale=2)
                        c["cf_target"] = gr.Dropdown(names, value=names[min(1, len(names) - 1)],
                                                     allow_custom_value=True, elem_id="cf-target",
                                                     label="2 · Target class: what should the image become?")
                        c["cf_run"] = gr.Button("3 · Run counterfactual", variant="primary", elem_id="cf-run")
                        with gr.Accordion("Settings: threat model, ε, steps", open=False, elem_id="cf-settings"):
                            c["cf_norm"] = gr.Radio(list(NORMS), value="L2", label="Threat model (how change is "
                                                    "measured)", elem_id="cf-norm")
                            c["cf_eps"] = gr.Dropdown(eps_choices("L2", m.image_size), value=eps_text(d["eps"], "L2"),
                                                      allow_custom_value=True, elem_id="cf-eps",
                                                      label="Radius ε: largest allowed change (∞ = no limit)")
                            with gr.Row():
                                c["cf_steps"] = gr.Number(d["steps"], label=f"Steps (1–{MAX_STEPS})", precision=0,
                                                          elem_id="cf-steps", min_width=100)
                                c["cf_step_size"] = gr.Number(d["step_size"], label="Step size", elem_id="cf-step-size",
                                                              min_width=100)
                        c["cf_prediction"] = gr.HTML(render.placeholder("Upload an image to see what the model "
                                                                        "predicts", 300, 80), elem_id="cf-prediction")
                        c["cf_energy"] = gr.Markdown("", elem_id="cf-energy")
                        examples = sorted(p for p in EXAMPLES_DIR.glob("*") if p.suffix.lower() in (".png", ".jpg"))
                        if examples:
                            gr.Examples([[str(p)] for p in examples], inputs=[c["cf_image"]],
                                        label="Examples: click one to use it as your image", examples_per_page=12)
                    with gr.Column(scale=8):
                        c["cf_summary"] = gr.Markdown("Results appear here: upload an image, choose a target and "
                                                      "press **Run**.", elem_id="cf-summary")
                        with gr.Row(equal_height=False):
                            c["cf_step"] = gr.Slider(0, 1, value=0, step=1, label="PGD step t: drag to scrub",
                                                     interactive=False, elem_id="cf-step", scale=8)
                            with gr.Column(scale=1, min_width=90):
                                c["cf_play"] = gr.Button("▶ Play", size="sm", elem_id="cf-play")
                                c["cf_pause"] = gr.Button("■ Stop", size="sm", elem_id="cf-pause")
                        c["cf_caption"] = gr.Markdown("", elem_id="cf-caption")
                        with gr.Row(equal_height=False):
                            c["cf_frame"] = gr.Image(label="Image at step t", interactive=False, format="png",
                                                     height=210, elem_id="cf-frame", buttons=["download"], scale=2)
                            c["cf_diff"] = gr.Image(label="Change x_t − x_0 (grey = none)", interactive=False,
                                                    format="png", height=210, elem_id="cf-diff", buttons=[], scale=2)
                            with gr.Column(scale=2, min_width=220):  # gr.HTML ignores scale
                                c["cf_probs"] = gr.HTML(render.placeholder("Probabilities at step t"),
                                                        elem_id="cf-probs")
                        with gr.Row(equal_height=False):
                            c["cf_energy_plot"] = gr.HTML(render.placeholder("Energy vs step"),
                                                          elem_id="cf-energy-plot", min_width=220)
                            c["cf_prob_plot"] = gr.HTML(render.placeholder("Target probability vs step"),
                                                        elem_id="cf-prob-plot", min_width=220)
                            c["cf_distance_plot"] = gr.HTML(render.placeholder("Distance vs step"),
                                                            elem_id="cf-distance-plot", min_width=220)
                        with gr.Row():
                            c["cf_gif"] = gr.DownloadButton("Download animation (GIF)", interactive=False,
                                                            size="sm", elem_id="cf-gif")
                            c["cf_json"] = gr.DownloadButton("Download per-step metrics (JSON)", interactive=False,
                                                             size="sm", elem_id="cf-json")
                c["cf_timer"] = gr.Timer(0.15, active=False)

            with gr.Tab("All targets", id="all", elem_id="tab-all"):
                gr.Markdown("One click runs the counterfactual from the image in the first tab toward **every class** "
                            "(same settings). Click a result to scrub its path in the first tab.")
                c["all_run"] = gr.Button("Run toward every class", variant="primary", elem_id="all-run")
                with gr.Row(equal_height=False):
                    c["all_grid"] = gr.Gallery(label="Final image per target class", columns=5, height="auto",
                                               format="png", allow_preview=False, elem_id="all-grid", scale=3)
                    c["all_table"] = gr.Markdown("", elem_id="all-table")

            with gr.Tab("Energy landscape", id="landscape", elem_id="tab-landscape"):
                gr.Markdown("The energy on a flat slice of image space through the start image: one axis points "
                            "toward the counterfactual, the other is a random direction. The white line is the PGD "
                            "path. Uses the latest result of the first tab.")
                with gr.Row(equal_height=True):
                    c["land_energy"] = gr.Radio(["E(x) — how typical the image is",
                                                 "E(x, y) — how typical it is as the target class"],
                                                value="E(x) — how typical the image is", label="Energy",
                                                elem_id="land-energy", scale=3)
                    c["land_grid"] = gr.Slider(9, 41, value=21, step=2, label="Grid points per side",
                                               elem_id="land-grid", scale=2)
                    c["land_run"] = gr.Button("Compute landscape", variant="primary", elem_id="land-run", scale=1)
                c["land_step"] = gr.Slider(0, 1, value=0, step=1, label="PGD step t (linked to the first tab)",
                                           interactive=False, elem_id="land-step")
                with gr.Row(equal_height=False):
                    c["land_map"] = gr.HTML(render.placeholder("Energy on the plane", 440, 200), elem_id="land-map")
                    c["land_path"] = gr.HTML(render.placeholder("Energy along the path"), elem_id="land-path")
                c["land_info"] = gr.Markdown("Run a counterfactual first, then press **Compute landscape**.",
                                             elem_id="land-info")

            with gr.Tab("Attributions", id="attributions", elem_id="tab-attributions"):
                gr.Markdown("Which pixels raise (red) or lower (blue) the score of the predicted class and of the "
                            "target class, beside the change the counterfactual made. Uses the latest result of the "
                            "first tab.")
                with gr.Row(equal_height=True):
                    c["attr_methods"] = gr.CheckboxGroup([(TITLES[k], k) for k in METHODS],
                                                         value=["saliency", "integrated_gradients", "smoothgrad"],
                                                         label="Methods (Captum)", elem_id="attr-methods", scale=3)
                    c["attr_at"] = gr.Radio(list(ATTR_FRAMES), value=ATTR_FRAMES[0], label="Explain the image at",
                                            elem_id="attr-at", scale=2)
                    c["attr_run"] = gr.Button("Compute attributions", variant="primary", elem_id="attr-run", scale=1)
                c["attr_figure"] = gr.Image(label="Attributions", interactive=False, format="png",
                                            elem_id="attr-figure", buttons=["download", "fullscreen"])
                c["attr_info"] = gr.Markdown("Run a counterfactual first, then press **Compute attributions**.",
                                             elem_id="attr-info")

            with gr.Tab("Robust vs standard", id="compare", elem_id="tab-compare"):
                gr.Markdown("The same request (image, target and settings of the first tab) on the robust DAT model "
                            "and on a standard, non-robust classifier. A standard model flips with invisible noise; "
                            "the robust one has to paint the target class. " + ex.standard_note,
                            elem_id="cmp-note")
                c["cmp_run"] = gr.Button("Compare", variant="primary", elem_id="cmp-run",
                                         interactive=ex.standard is not None)
                c["cmp_summary"] = gr.Markdown("", elem_id="cmp-summary")
                c["cmp_step"] = gr.Slider(0, 1, value=0, step=1, label="PGD step t (both models)", interactive=False,
                                          elem_id="cmp-step")
                c["cmp_caption"] = gr.Markdown("", elem_id="cmp-caption")
                with gr.Row(equal_height=False):
                    c["cmp_robust_frame"] = gr.Image(label="Robust (DAT): image at step t", interactive=False,
                                                     format="png", height=200, elem_id="cmp-robust-frame", buttons=[])
                    c["cmp_robust_diff"] = gr.Image(label="Robust: change", interactive=False, format="png",
                                                    height=200, elem_id="cmp-robust-diff", buttons=[])
                    c["cmp_standard_frame"] = gr.Image(label="Standard: image at step t", interactive=False,
                                                       format="png", height=200, elem_id="cmp-standard-frame",
                                                       buttons=[])
                    c["cmp_standard_diff"] = gr.Image(label="Standard: change", interactive=False, format="png",
                                                      height=200, elem_id="cmp-standard-diff", buttons=[])
                with gr.Row(equal_height=False):
                    c["cmp_prob_plot"] = gr.HTML(render.placeholder("Target probability, both models"),
                                                 elem_id="cmp-prob-plot")
                    c["cmp_energy_plot"] = gr.HTML(render.placeholder("Energy, both models"),
                                                   elem_id="cmp-energy-plot")

            with gr.Tab("Generate", id="generate", elem_id="tab-generate"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4, min_width=300):
                        gr.Markdown("Start from noise (or your image) and let PGD lower the energy of a class: the "
                                    "model paints what it thinks the class looks like.")
                        c["gen_target"] = gr.Dropdown([EVERY_CLASS, *names], value=EVERY_CLASS,
                                                      label="Class to generate", elem_id="gen-target")
                        c["gen_seed_kind"] = gr.Radio(list(SEED_KINDS), value="Random noise", label="Start from",
                                                      elem_id="gen-seed-kind")
                        c["gen_seed_image"] = gr.Image(type="filepath", image_mode=None, height=140,
                                                    label="Seed image", visible=False,
                                                    sources=["upload", "clipboard"], elem_id="gen-seed-image")
                        with gr.Row():
                            c["gen_seed"] = gr.Number(0, label="Random seed", precision=0, elem_id="gen-seed")
                            c["gen_n"] = gr.Number(1, label="Samples per class", precision=0, elem_id="gen-n")
                        with gr.Row():
                            c["gen_steps"] = gr.Number(default_steps(m.image_size), label=f"Steps (1–{MAX_STEPS})",
                                                       precision=0, elem_id="gen-steps")
                            c["gen_step_size"] = gr.Number(default_step_size(m.image_size), label="Step size",
                                                           elem_id="gen-step-size")
                        c["gen_run"] = gr.Button("Generate", variant="primary", elem_id="gen-run")
                    with gr.Column(scale=7):
                        c["gen_step"] = gr.Slider(0, 1, value=0, step=1, label="Sampling step t — drag to scrub",
                                                  interactive=False, elem_id="gen-step")
                        c["gen_caption"] = gr.Markdown("", elem_id="gen-caption")
                        with gr.Row(equal_height=False):
                            c["gen_grid"] = gr.Image(label="Samples at step t", interactive=False, format="png",
                                                     height=320, elem_id="gen-grid", buttons=["download"])
                            c["gen_plot"] = gr.HTML(render.placeholder("Class probability vs step"),
                                                    elem_id="gen-plot")
                        c["gen_gif"] = gr.DownloadButton("Download sampling animation (GIF)", interactive=False,
                                                         size="sm", elem_id="gen-gif")

            with gr.Tab("Model", id="model", elem_id="tab-model"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=4, min_width=300):
                        c["model_kind"] = gr.Radio(["Bundled default", "Local folder", "Hugging Face Hub"],
                                                   value="Bundled default", label="Load a model from",
                                                   elem_id="model-kind")
                        c["model_path"] = gr.Textbox(label="Checkpoint folder (config.json + model.safetensors)",
                                                     placeholder="runs/my-run/final", elem_id="model-path")
                        with gr.Row():
                            c["model_repo"] = gr.Textbox(label="Hub repo id", placeholder="owner/name",
                                                         elem_id="model-repo", scale=3)
                            c["model_revision"] = gr.Textbox(label="Revision (optional)", placeholder="main or sha",
                                                             elem_id="model-revision", scale=2)
                        c["model_load"] = gr.Button("Load model", variant="primary", elem_id="model-load")
                        gr.Markdown("The model applies to your session only. If loading fails, the current model "
                                    "stays.")
                    with gr.Column(scale=7):
                        c["model_info"] = gr.Markdown(session.describe_model(m), elem_id="model-info")
                        with gr.Accordion("Model card", open=False):
                            c["model_card"] = gr.Markdown(session.card_text(m), elem_id="model-card")

        # hidden components of the named API endpoints (stateless; the model the app started with)
        with gr.Column(visible=False):
            api_image = gr.Image(type="filepath", image_mode=None, label="image")
            api_target = gr.Textbox("", label="target")
            api_eps = gr.Textbox(eps_text(d["eps"], "L2"), label="eps")
            api_steps = gr.Number(d["steps"], label="steps")
            api_step_size = gr.Number(d["step_size"], label="step_size")
            api_methods = gr.Textbox("saliency,integrated_gradients", label="methods")
            api_gen_target = gr.Textbox("all", label="target")
            api_seed = gr.Number(0, label="seed")
            api_gen_steps = gr.Number(default_steps(m.image_size), label="steps")
            api_gen_step_size = gr.Number(default_step_size(m.image_size), label="step_size")
            api_json = gr.JSON(label="metrics")
            api_image_out = gr.Image(type="numpy", format="png", label="image")
            api_file = gr.File(label="file")
            api_trigger = gr.Button(visible=False)

        # ---------------------------------------------------------- events (UI events are private)
        ui = {"api_visibility": "private"}
        compute = {"concurrency_id": "model", "concurrency_limit": 1, **ui}
        raw = {"preprocess": False}  # events with image inputs decode the upload themselves (image_source)
        instant = {"queue": False, "show_progress": "hidden", "trigger_mode": "always_last", **ui}
        settings = out("cf_norm", "cf_eps", "cf_steps", "cf_step_size")

        demo.load(ex.new_session, None, c["state"], **ui)
        c["cf_image"].change(ex.preview, [c["cf_image"], c["state"]], out(*Explainer.PREVIEW),
                             concurrency_id="model", concurrency_limit=1, show_progress="minimal", **raw, **ui)
        c["cf_norm"].input(ex.norm_defaults, [c["cf_norm"], c["state"]], out("cf_eps", "cf_step_size"), **ui)
        exports = {"fn": ex.export_counterfactual, "inputs": [c["state"]], "outputs": out(*Explainer.EXPORTS),
                   "show_progress": "hidden", **ui}  # after the result is shown (see Explainer._show)
        c["cf_run"].click(ex.run_counterfactual, [c["cf_image"], c["cf_target"], *settings, c["state"]],
                          out(*Explainer.SHOW), **raw, **compute).success(**exports)
        c["cf_step"].input(ex.scrub, [c["state"], c["cf_step"]], out(*Explainer.SCRUB, "land_step"), **instant)
        c["cf_play"].click(ex.play_start, [c["state"], c["cf_step"]], [c["cf_step"], *out(*Explainer.SCRUB),
                                                                        c["cf_timer"]], queue=False, **ui)
        c["cf_pause"].click(lambda: gr.Timer(active=False), None, c["cf_timer"], queue=False, **ui)
        c["cf_timer"].tick(ex.play_tick, [c["state"], c["cf_step"]], [c["cf_step"], *out(*Explainer.SCRUB),
                                                                       c["cf_timer"]], **instant)

        c["all_run"].click(ex.run_all_targets, [c["cf_image"], *settings, c["state"]],
                           out("state", "all_grid", "all_table"), **raw, **compute)
        c["all_grid"].select(ex.open_target, [c["state"]], [*out(*Explainer.SHOW), c["tabs"], c["cf_target"]],
                             **compute).success(**exports)

        c["land_run"].click(ex.run_landscape, [c["state"], c["cf_step"], c["land_energy"], c["land_grid"]],
                            out("land_map", "land_path", "land_step", "land_info"), **compute)
        c["land_step"].input(ex.scrub_landscape, [c["state"], c["land_step"]], out(*Explainer.SCRUB, "cf_step"),
                             **instant)

        c["attr_run"].click(ex.run_attribution, [c["state"], c["attr_methods"], c["attr_at"], c["cf_step"]],
                            out("attr_figure", "attr_info"), **compute)

        c["cmp_run"].click(ex.run_compare, [c["cf_image"], c["cf_target"], *settings, c["state"]],
                           out("state", "cmp_step", *Explainer.CMP, "cmp_summary"), **raw, **compute)
        c["cmp_step"].input(ex.scrub_compare, [c["state"], c["cmp_step"]], out(*Explainer.CMP), **instant)

        c["gen_run"].click(ex.run_generate, [c["gen_target"], c["gen_seed_kind"], c["gen_seed_image"], c["gen_seed"],
                                             c["gen_n"], c["gen_steps"], c["gen_step_size"], c["state"]],
                           out(*Explainer.GEN), **raw, **compute)
        c["gen_seed_kind"].change(lambda kind: gr.update(visible=kind == "My image"), c["gen_seed_kind"],
                                  c["gen_seed_image"], queue=False, show_progress="hidden", **ui)
        c["gen_step"].input(ex.scrub_generate, [c["state"], c["gen_step"]], out("gen_grid", "gen_plot",
                                                                                 "gen_caption"), **instant)

        c["model_load"].click(ex.load_model, [c["model_kind"], c["model_path"], c["model_repo"], c["model_revision"],
                                              c["cf_image"], c["state"]], out(*Explainer.MODEL), **raw, **compute)

        api = {"concurrency_id": "model", "concurrency_limit": 1, "api_visibility": "public", **raw}
        endpoints = ApiEndpoints(ex)
        api_trigger.click(endpoints.counterfactual, [api_image, api_target, api_eps, api_steps, api_step_size],
                          [api_json, api_image_out, api_file], api_name="counterfactual", **api)
        api_trigger.click(endpoints.generate, [api_gen_target, api_seed, api_gen_steps, api_gen_step_size],
                          [api_json, api_image_out, api_file], api_name="generate", **api)
        api_trigger.click(endpoints.landscape, [api_image, api_target, api_eps, api_steps, api_step_size],
                          [api_image_out, api_json], api_name="landscape", **api)
        api_trigger.click(endpoints.attribute, [api_image, api_target, api_methods, api_eps, api_steps,
                                                api_step_size], [api_image_out, api_json], api_name="attribute", **api)

    demo.queue(default_concurrency_limit=1, max_size=32)
    demo.explainer = ex  # handy for tests and benchmarks
    return demo


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="DAT Explainer web app (Gradio).")
    parser.add_argument("--host", default=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"),
                        help="interface to listen on (default 127.0.0.1; 0.0.0.0 to serve the network)")
    parser.add_argument("--port", type=int, default=int(os.environ.get("GRADIO_SERVER_PORT", "7860")),
                        help="port (default 7860)")
    parser.add_argument("--model", default="default",
                        help="'default' (bundled), a checkpoint dir, or a Hub repo id owner/name")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit sha) for --model")
    parser.add_argument("--standard-model", default="auto",
                        help="non-robust model for the 'Robust vs standard' tab: a dir or repo id "
                             "(default: the bundled assets/models/standard-* if present)")
    parser.add_argument("--autocast", choices=("auto", "on", "off"), default="auto",
                        help="bf16 for PGD and landscapes: auto = where the hardware has native bf16 (CUDA, "
                             "AVX512-BF16/AMX CPUs; ~2x faster), off = fp32 everywhere (default: auto)")
    parser.add_argument("--share", action="store_true", help="also serve through a public *.gradio.live link")
    args = parser.parse_args(argv)
    if args.model == "default":
        try:
            default_model_dir()
        except FileNotFoundError:
            print(f"app.py: {NO_MODEL_MESSAGE}", file=sys.stderr)
            return 2
    try:
        demo = build_demo(args.model, standard_model=args.standard_model, revision=args.revision, autocast=args.autocast)
    except (ValueError, OSError) as e:
        print(f"app.py: cannot load the model: {e}", file=sys.stderr)
        return 2
    demo.launch(server_name=args.host, server_port=args.port, share=args.share, max_file_size="25mb")
    return 0


if __name__ == "__main__":
    sys.exit(main())
