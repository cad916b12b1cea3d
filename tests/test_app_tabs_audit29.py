"""Audit of the tabs' handlers (session 29), called as plain functions on tiny checkpoints written here: budgets one
tab kept and another doing the same work did not, and chart labels that disagreed with the data they showed."""

import re
from pathlib import Path

import gradio as gr
import numpy as np
import pytest
import torch
from conftest import uploaded
from PIL import Image

from dat_core import build_model, save_model
from webapp import state as st
from webapp.explainer import Explainer
from webapp.tabs import alternatives, compare, counterfactual, landscape
from webapp.tabs import model as model_tab


def _model_dir(path, seed):
    torch.manual_seed(seed)
    return save_model(build_model("wrn-10-1"), path)


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit29")
    photo = root / "photo.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(photo)
    return {"robust": _model_dir(root / "robust", 0), "standard": _model_dir(root / "standard", 1),
            "photo": uploaded(photo)}


@pytest.fixture(scope="module")
def ex(dirs):
    return Explainer(str(dirs["robust"]), standard_model=str(dirs["standard"]))


class Forwards:
    """Counts the images each model is run on (a refusal must come before any computation)."""

    def __init__(self, *models):
        self.images = 0
        self.hooks = [m.register_forward_hook(self.seen) for m in models]

    def seen(self, module, args, out):
        self.images += args[0].shape[0]

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        for h in self.hooks:
            h.remove()


def test_alternatives_keep_the_requests_activation_budget(ex, dirs, monkeypatch):
    """Generate and All targets bound a request's batch of paths by its activation memory; Alternatives ran its n
    paths as one batch whatever the model (4 paths of a 256 px ConvNeXt-L need 2.2 GiB, over the 2 GiB one request
    may hold). Here the budget is three paths of the test model."""
    loaded = ex.default
    monkeypatch.setattr(st, "REQUEST_ACTIVATION_BYTES", 3 * st.activation_bytes(loaded.config))
    with Forwards(loaded.model) as seen:
        with pytest.raises(gr.Error, match=r"4 paths of this model at once need about .* \(at most 3 paths of it\)\. "
                                           r"Ask for fewer paths"):
            alternatives.run(ex, dirs["photo"], "cat", "L2", "3", 1, 0.1, 4, 0, ex.new_session(), progress=None)
        assert seen.images == 0
    shown = alternatives.run(ex, dirs["photo"], "cat", "L2", "3", 1, 0.1, 3, 0, ex.new_session(), progress=None)
    assert len(shown.alt_gallery["value"]) == 2 * (3 + 1)   # three paths still run


def test_compare_budgets_the_frames_of_all_three_paths(dirs):
    """Compare checked each of its three paths against the frames one request may keep, then stored all three: a
    request of half the budget per path was computed in full (three PGD runs) and then refused with "ask for fewer
    steps or targets" when stored, or filled the whole result cache, pushing out every other visitor's results."""
    one_path = 21 * 3 * 32 * 32 * 7          # 20 steps at 32 px, as Explainer.check_budget counts a path's frames
    small = Explainer(str(dirs["robust"]), standard_model=str(dirs["standard"]), cache_bytes=2 * one_path + 1024)
    state = small.new_session()
    with Forwards(small.default.model, small.standard.model) as seen:
        with pytest.raises(gr.Error, match=r"The frames of 3 paths of 20 steps at 32×32 px need about .*Ask for fewer "
                                           r"steps\."):
            compare.run(small, dirs["photo"], "dog", "L2", "3", 20, 0.1, state, progress=None)
        assert seen.images == 0
    shown = compare.run(small, dirs["photo"], "dog", "L2", "3", 5, 0.1, state, progress=None)
    assert shown.cmp_step["maximum"] == 5 and small.get(state, "cmp") is not None


def _axes(svg: str) -> list[str]:
    return re.findall(r">([^<]*\(L2[^<]*)<", svg)


def test_the_landscape_names_the_direction_its_horizontal_axis_shows(ex, dirs):
    """The map's horizontal axis always read "toward the counterfactual", also where the path does not move
    (ε = 0: x_T = x_0) and the axis is the gradient of the target's logit, as the text below the map said."""
    state = ex.new_session()
    counterfactual.run(ex, dirs["photo"], "cat", "L2", "0", 2, 0.1, state, progress=None)
    still = landscape.run(ex, state, 1, landscape.ENERGIES[0], 5, progress=lambda *a, **k: None)
    assert "Horizontal axis: gradient of the cat logit" in still.land_info
    assert any(a.startswith("gradient of the cat logit") for a in _axes(still.land_map))
    assert not any("toward the counterfactual" in a for a in _axes(still.land_map))
    counterfactual.run(ex, dirs["photo"], "cat", "L2", "3", 2, 0.1, state, progress=None)
    moved = landscape.run(ex, state, 1, landscape.ENERGIES[0], 5, progress=lambda *a, **k: None)
    assert "Horizontal axis: toward the counterfactual" in moved.land_info
    assert any(a.startswith("toward the counterfactual") for a in _axes(moved.land_map))


def test_compare_refuses_a_standard_model_of_another_size_before_running(dirs, tmp_path):
    """A standard model with the same classes at another resolution ran the robust and the standard path, then
    failed on the guided one with the library's "The guide must have the explained model's classes and image size"."""
    torch.manual_seed(1)
    small = build_model("wrn-10-1")
    small.config["image_size"] = 16
    other = Explainer(str(dirs["robust"]), standard_model=str(save_model(small, tmp_path / "standard-16")))
    with Forwards(other.default.model, other.standard.model) as seen:
        with pytest.raises(gr.Error, match=r"The standard model takes 16×16 px images, the current model 32×32"):
            compare.run(other, dirs["photo"], "dog", "L2", "3", 2, 0.1, other.new_session(), progress=None)
        assert seen.images == 0


def test_a_model_loads_when_the_image_shown_is_gone(ex, dirs, tmp_path):
    """Gradio prunes uploads after an hour (`delete_cache`): Load model then failed with "Image file not found" (tab
    1's preview for the new model could not read the image) and the session stayed on its model."""
    photo = tmp_path / "gone.png"
    Image.fromarray(np.full((32, 32, 3), 90, np.uint8)).save(photo)
    gone = uploaded(photo)
    Path(gone).unlink()
    state = ex.new_session()
    out = model_tab.load(ex, "Local folder", str(dirs["standard"]), "", "", gone, state,
                         progress=lambda *a, **k: None)
    assert ex.session_model(out.state).directory == dirs["standard"].resolve()
    assert out.cf_input is None and "could not be used" in out.cf_prediction
    assert out.cf_target["value"] == ex.session_model(out.state).class_names[1]

