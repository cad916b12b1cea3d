"""The app's named API endpoints (`/counterfactual`, `/generate`, `/landscape`, `/attribute`).

Stateless handlers on the model the app started with, for `gradio_client` and HTTP callers (README,
"Use the app"). They share the UI's validation, trajectory memo and exports through `Explainer`.
"""

import gradio as gr
import numpy as np
import torch

from webapp import charts as render, views
from webapp.explainer import EVERY_CLASS, Explainer, parse_methods, user_errors
from explain.attribution import attribute_trajectory, plot_attributions
from explain.landscape import energy_landscape, plot_landscape
from explain.plots import figure_to_array


class ApiEndpoints:
    """One method per endpoint; `app.py` wires them with their `api_name`."""

    def __init__(self, explainer: Explainer):
        self.ex = explainer

    def _trajectory(self, image, target, eps, steps, step_size, progress):
        ex, loaded = self.ex, self.ex.default
        req = ex.pgd_params("L2", eps, steps, step_size)
        x = ex.model_input(image, loaded)
        if target is None or (isinstance(target, str) and not target.strip()):
            with torch.no_grad():
                order = loaded.model(x.to(loaded.device)).float()[0].argsort(descending=True)
            target = int(order[1] if len(order) > 1 else order[0])
        return loaded, ex.trajectory(loaded, x, ex.target_index(target, loaded), req, progress)

    @user_errors
    def counterfactual(self, image, target, eps, steps, step_size, progress=gr.Progress()):
        """L2 counterfactual toward `target` (name or index; empty = the second most likely class).
        Returns per-step metrics (JSON), the final image at model resolution (PNG) and an animated GIF."""
        loaded, traj = self._trajectory(image, target, eps, steps, step_size, progress)
        gif, _ = self.ex.exports(traj, render.display_scale(loaded.image_size))
        return {"model": loaded.label, **traj.to_dict()}, traj.frames[-1], gif

    @user_errors
    def generate(self, target, seed, steps, step_size, progress=gr.Progress()):
        """Samples of `target` (a class, or "all") from uniform noise with random `seed`."""
        target = EVERY_CLASS if str(target).strip().lower() in ("all", EVERY_CLASS, "") else target
        loaded = self.ex.default
        view, gif = self.ex.samples(loaded, target, "Random noise", None, seed, 1, steps, step_size, progress)
        return {"model": loaded.label, **view.samples.to_dict()}, view.grid(len(view) - 1), str(gif)

    @user_errors
    def landscape(self, image, target, eps, steps, step_size, progress=gr.Progress()):
        """The energy E(x) on a 33×33 plane through the image containing the counterfactual direction."""
        loaded, traj = self._trajectory(image, target, eps, steps, step_size, progress)
        land = energy_landscape(loaded.model, traj, autocast=self.ex.uses_bf16(loaded))
        return figure_to_array(plot_landscape(land, step=-1)), views.landscape_dict(land)

    @user_errors
    def attribute(self, image, target, methods, eps, steps, step_size, progress=gr.Progress()):
        """Captum attributions (comma-separated `methods`) at the image for its predicted and the target class."""
        methods = parse_methods(methods)
        loaded, traj = self._trajectory(image, target, eps, steps, step_size, progress)
        result = attribute_trajectory(loaded.model, traj, methods)
        names = traj.class_names

        def rounded(m):
            return np.round(np.asarray(m, dtype=np.float64), 6).tolist()
        data = {"source": result.source, "source_name": names[result.source], "target": result.target,
                "target_name": names[result.target], "methods": list(result.methods),
                "source_maps": {m: rounded(v) for m, v in result.source_maps.items()},
                "target_maps": {m: rounded(v) for m, v in result.target_maps.items()},
                "difference_map": rounded(result.difference_map)}
        return figure_to_array(plot_attributions(result)), data
