"""The Python API as a researcher calls it: a train-mode model left as it was, inputs in the forms the library
itself hands out, and clear errors (naming the parameter) for inputs it cannot take."""

import copy

import numpy as np
import pytest
import torch

import explain
from dat_core import build_model


@pytest.fixture()
def train_mode_model():
    torch.manual_seed(0)
    model = build_model("wrn-10-1")
    model.train()
    with torch.no_grad():   # BatchNorm statistics away from their initial values, so a read-out that uses
        model(torch.rand(8, 3, 32, 32))   # batch statistics differs from eval mode
    return model


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


def test_no_call_moves_a_train_mode_models_batchnorm_statistics(train_mode_model):
    """alternatives and generate (record_every=0) read the final confidences with the model in its own (train)
    mode: its BatchNorm running statistics moved, and the confidences were of batch statistics, not the ones
    the PGD run saw (generate gave another p(target) with record_every=1 than with 0)."""
    model, before = train_mode_model, copy.deepcopy(train_mode_model)
    image = torch.rand(3, 32, 32)
    alts = explain.alternatives(model, image, 3, 2, steps=2, eps=1.0, autocast=False)
    assert _same_state(model, before) and model.training
    eval_copy = copy.deepcopy(before).eval()
    with torch.no_grad():
        expected = torch.softmax(eval_copy(torch.from_numpy(alts.images)), 1)[:, 3].numpy()
    np.testing.assert_allclose(alts.confidence, expected, atol=1e-5)
    plain = explain.generate(model, [3, 5], steps=2, autocast=False)
    recorded = explain.generate(model, [3, 5], steps=2, record_every=1, autocast=False)
    assert _same_state(model, before) and model.training
    np.testing.assert_allclose(plain.confidences, recorded.confidences, atol=1e-5)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("wrn-10-1").eval()


def test_a_mask_in_the_form_to_mask_returns_is_taken(model):
    """explain.to_mask returns (1, 1, S, S) bools and dat_core.pgd takes them, but counterfactual(mask=) refused
    that form (and 1xHxW) with a message about image tensors."""
    image = torch.rand(3, 32, 32)
    left = torch.zeros(32, 32, dtype=torch.bool)
    left[:, :16] = True
    paths = [explain.counterfactual(model, image, 3, steps=2, autocast=False, mask=m).images
             for m in (left, left[None], left[None, None], explain.to_mask(left.numpy(), 32))]
    for p in paths:
        np.testing.assert_array_equal(p, paths[0])
        assert np.array_equal(p[-1][:, :, 16:], p[0][:, :, 16:])          # outside the mask: untouched
    with pytest.raises(ValueError, match="a mask is an image .* or an array or tensor of bools"):
        explain.counterfactual(model, image, 3, steps=1, mask=torch.ones(2, 5, 32, 32, dtype=torch.bool))


def test_a_model_without_a_config_has_the_classes_it_outputs():
    """A plain nn.Module was taken as CIFAR-10's ten classes: a 5-class model's target 7 failed deep in PGD
    (a device-side assert on a GPU) and its paths were labelled airplane..truck."""
    class Net(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.lin = torch.nn.Linear(3 * 32 * 32, k)

        def forward(self, x):
            return self.lin(x.flatten(1))

    torch.manual_seed(0)
    path = explain.counterfactual(Net(5), torch.rand(3, 32, 32), 4, steps=1)
    assert path.class_names == ["0", "1", "2", "3", "4"]
    with pytest.raises(ValueError, match="out of range 0..4"):
        explain.counterfactual(Net(5), torch.rand(3, 32, 32), 7, steps=1)


def test_a_model_that_gives_nan_is_an_error_not_a_nan_path(model):
    class NaNNet(torch.nn.Module):
        config = {"num_classes": 10, "image_size": 32}

        def forward(self, x):
            return model(x) * float("nan")

    with pytest.raises(ValueError, match="NaN or infinite logits"):
        explain.counterfactual(NaNNet(), torch.rand(3, 32, 32), 3, steps=2)


def test_attributions_take_what_they_document_and_refuse_the_rest(model):
    path = explain.counterfactual(model, torch.rand(3, 32, 32), 3, steps=2, autocast=False)
    one = explain.attribute_trajectory(model, path, methods="saliency")       # was split into 's', 'a', ...
    assert one.methods == ("saliency",)
    assert explain.attribute_trajectory(model, path, methods=["saliency", "saliency"]).methods == ("saliency",)
    with pytest.raises(ValueError, match="step"):
        explain.attribute_trajectory(model, path, methods="saliency", step=1.5)
    for x, says in ((torch.rand(1, 1, 32, 32), "one RGB image"), (torch.rand(1, 3, 64, 64), r"\(1, 3, 32, 32\)"),
                    (np.random.rand(32, 32, 3), "torch tensor")):
        with pytest.raises(ValueError, match=says):
            explain.attribute(model, x, 3, "saliency")
    for option, value in (("n_samples", 2.5), ("n_samples", True), ("internal_batch_size", 0), ("abs", "yes")):
        with pytest.raises(ValueError, match=option):
            explain.attribute(model, torch.rand(1, 3, 32, 32), 3, "smoothgrad", **{option: value})


@pytest.mark.parametrize("frames, says", [
    (lambda f: f * np.nan, "finite"), (lambda f: f * 255, r"\[0,1\]"), (lambda f: f[:, :, :16, :16], "16 px"),
    (lambda f: f.transpose(0, 2, 3, 1), "shape")])
def test_a_landscape_refuses_frames_the_model_cannot_take(model, frames, says):
    """NaN frames gave a NaN landscape, [0,255] frames a clamped flat one, 16-px frames a map of a 32-px model."""
    path = explain.counterfactual(model, torch.rand(3, 32, 32), 3, steps=2, autocast=False)
    path.images = frames(path.images)
    with pytest.raises(ValueError, match=says):
        explain.energy_landscape(model, path, grid=3)


def test_numbers_come_as_the_cli_and_the_app_take_them(model):
    """Numpy scalars, and radii and steps written as fractions ("8/255"), as the CLI and the app read them."""
    image = torch.rand(3, 32, 32)
    typed = explain.counterfactual(model, image, 3, norm="Linf", eps="8/255", step_size="1/255", steps=2)
    number = explain.counterfactual(model, image, 3, norm="Linf", eps=8 / 255, step_size=1 / 255, steps=2)
    assert typed.params == number.params and np.array_equal(typed.frames, number.frames)
    for angle in (np.float32(30), np.int64(30)):
        guided = explain.counterfactual(model, image, 3, steps=1, guide=model, cone_angle=angle)
        assert guided.params["cone_angle"] == 30.0
    with pytest.raises(ValueError, match="cone angle"):
        explain.counterfactual(model, image, 3, steps=1, guide=model, cone_angle=np.float64("nan"))
    with pytest.raises(ValueError, match="a Linf radius.*1.17647 bounds nothing") as refused:
        explain.counterfactual(model, image, 3, norm="Linf", eps="300/255", steps=1)
    assert "did you mean" not in str(refused.value)     # no k/255 reads back 300/255 as a budget
    for step in (1e7, "1e7"):                          # the CLI's and the app's bound, whatever the form
        with pytest.raises(ValueError, match="at most 1e\\+06"):
            explain.counterfactual(model, image, 3, step_size=step, steps=1)


def test_numbers_and_switches_are_checked_by_name(model):
    image = torch.rand(3, 32, 32)
    with pytest.raises(ValueError, match="max_batch"):
        explain.counterfactuals(model, image, [1, 2], steps=1, max_batch=0)
    with pytest.raises(ValueError, match="autocast must be True or False"):
        explain.counterfactual(model, image, 3, steps=1, autocast=1)
    with pytest.raises(ValueError, match="did you mean 8/255"):     # pixel units on a [0,1] image: no bound
        explain.counterfactual(model, image, 3, norm="Linf", eps=8, steps=1)
    with pytest.raises(ValueError, match="did you mean 2/255"):
        explain.counterfactual(model, image, 3, norm="Linf", eps=8 / 255, step_size=2, steps=1)
    with pytest.raises(ValueError, match="guide must be a torch nn.Module"):
        explain.counterfactual(model, image, 3, steps=1, guide="default")
    with pytest.raises(ValueError, match="the model must be a torch nn.Module"):
        explain.counterfactual("default", image, 3, steps=1)
    for angle in ("30", None, True, 200):
        with pytest.raises(ValueError, match="cone angle must be a number in 0..180"):
            explain.counterfactual(model, image, 3, steps=1, guide=model, cone_angle=angle)


def test_pgd_says_what_is_wrong_with_its_labels_and_budget(model):
    from dat_core.pgd import pgd, threat_model

    x = torch.rand(2, 3, 32, 32)
    with pytest.raises(ValueError, match="labels must be a torch tensor"):         # said "shape (2,), got (2,)"
        pgd(model, x, np.array([3, 5]), threat_model("L2", 1, 0.1), 1, objective="target_logit")
    assert pgd(model, x, torch.tensor([3, 5]), threat_model("L2", 0.5, 0.1), np.int64(1),
               objective="target_logit").x.shape == x.shape
    with pytest.raises(ValueError, match="step_size must be a finite number > 0"):   # PGD that moves nothing
        threat_model("L2", 1.0, 0)
    with pytest.raises(ValueError, match="eps must be a number"):                # said "could not convert"
        threat_model("L2", "8/255", 0.1)
    from dat_core.pgd import L2
    with pytest.raises(ValueError, match="one value per image: 2 for 1"):         # made 2 images of 1
        pgd(model, x[:1], torch.tensor([3]), L2(torch.tensor([1.0, 2.0]), 0.1), 1, objective="target_logit")
    with pytest.raises(ValueError, match="weights are torch.bfloat16"):          # failed deep in a conv
        explain.counterfactual(copy.deepcopy(model).bfloat16(), torch.rand(3, 32, 32), 3, steps=1)


def test_an_input_tensor_is_never_the_callers_own():
    x = torch.rand(1, 3, 32, 32)
    y = explain.to_model_input(x, 32)
    y.zero_()
    assert x.sum() > 0
    with pytest.raises(ValueError, match=r"got \(32, 32, 3\)"):                  # the shape passed, as passed
        explain.to_model_input(torch.rand(32, 32, 3), 32)
    with pytest.raises(ValueError, match="the path is empty"):                   # said " is a directory"
        explain.to_model_input("", 32)


def test_a_mask_of_other_proportions_than_its_image_is_refused(model):
    """Each was resized and centre-cropped on its own: for a 64x32 image, a 64x64 mask of its left 16 columns
    let the path change image columns 16-23 instead."""
    image = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)     # H 32, W 64
    square = np.zeros((64, 64), dtype=bool)
    square[:, :16] = True
    with pytest.raises(ValueError, match="the mask is 64x64 px and the image 64x32"):
        explain.counterfactual(model, image, 3, steps=1, mask=square)
    with pytest.raises(ValueError, match="the mask is 64x64 px"):
        explain.alternatives(model, image, 3, 2, steps=1, eps=1.0, mask=square)
    same = np.zeros((32, 64), dtype=bool)
    same[:, 16:48] = True                                                    # the image's size: fine
    explain.counterfactual(model, image, 3, steps=1, mask=same)
    explain.counterfactual(model, image, 3, steps=1, mask=explain.to_mask(same, 32))   # the model's size: fine


def test_every_count_takes_the_same_forms(model):
    """One integer check: max_batch took 5.0 and "5" while n, grid, scale and n_per_class refused them; every count
    now takes an int, a numpy integer, a whole float or a numeric string, and refuses bools and fractions. Large
    values stay exact (a float round trip turned 2**60 + 1 into 2**60)."""
    from explain.params import parse_int

    image = torch.rand(3, 32, 32)
    for n in (2.0, "2", np.int64(2)):
        assert len(explain.alternatives(model, image, 3, n, steps=1, eps=1.0).images) == 2
    path = explain.counterfactual(model, image, 3, steps="2")
    assert len(path.steps) == 3
    assert explain.energy_landscape(model, path, grid=3.0).values.shape == (3, 3)
    assert explain.minimal_counterfactual(model, image, 3, rounds=1.0, candidates="2", refine_steps=2.0,
                                          steps=2).results
    assert parse_int("seed", 2**60 + 1, 0, 2**63 - 1) == parse_int("seed", str(2**60 + 1), 0, 2**63 - 1) == 2**60 + 1
    for bad in (True, 2.5, "2.5", None, float("nan"), "two"):
        with pytest.raises(ValueError, match="n must be a whole number from 2 to"):
            explain.alternatives(model, image, 3, bad, steps=1, eps=1.0)


def test_every_count_takes_a_numpy_integer_and_refuses_a_fraction(model):
    """np.int64 worked for steps and targets but not for n_per_class, n, grid, rounds or image_size; n=0 or
    2.5 frames went through contact_strip; scale=-1 said "negative dimensions are not allowed"."""
    image = torch.rand(3, 32, 32)
    assert explain.to_model_input(image, np.int64(32)).shape == (1, 3, 32, 32)
    assert len(explain.generate(model, [3], n_per_class=np.int64(2), steps=1).images) == 2
    assert len(explain.alternatives(model, image, 3, np.int64(2), steps=1, eps=1.0).images) == 2
    path = explain.counterfactual(model, image, 3, steps=2)
    assert explain.energy_landscape(model, path, grid=np.int64(3)).values.shape == (3, 3)
    for call, name in ((lambda: explain.contact_strip(path, n=0), "n must be"),
                       (lambda: explain.contact_strip(path, n=2.5), "n must be"),
                       (lambda: explain.contact_strip(path, scale=-1), "scale must be a whole number from 1 to 64"),
                       (lambda: explain.generate(model, [3], n_per_class=1.5, steps=1), "n_per_class"),
                       (lambda: explain.energy_landscape(model, path, grid=4), "odd integer")):
        with pytest.raises(ValueError, match=name):
            call()


def test_a_count_or_radius_that_is_not_a_number_is_refused_by_name(model):
    """np.True_ passed as a count and True as a radius; "5.0" passed the grid check and failed int("5.0"); "--5"
    passed the digits shortcut and failed with int()'s own message."""
    from explain.params import parse_int, validate_params

    for bad in (np.True_, "--5", "+-3", "²"):
        with pytest.raises(ValueError, match="steps must be a whole number"):
            parse_int("steps", bad, 0, 10)
    for key in ("eps", "step_size"):
        with pytest.raises(ValueError, match=key):
            validate_params("L2", **{key: True})
    path = explain.counterfactual(model, torch.rand(3, 32, 32), 3, steps=2)
    assert explain.energy_landscape(model, path, grid="5.0").values.shape == (5, 5)


@pytest.mark.parametrize("value", [10 ** 400, -(10 ** 400), "9" * 5000, "1e999", "1e308/1e-308"])
def test_a_number_beyond_any_float_is_refused_by_name_not_with_an_overflow(value):
    """A JSON integer of 400 digits as ε, step size, cone angle or count raised OverflowError from float(): the app
    answered "error": null with a traceback in its log; a 5000-digit count said Python's "Exceeds the limit".
    Typed as text, such a number read as inf: a finite radius typed with a slip became a path without any limit
    (only the words inf, ∞, infinity, none, unbounded ask for that)."""
    from dat_core.cli_types import parse_eps, parse_step
    from webapp.tabs.compare import cone_angle

    checks = [(parse_eps, "ε"), (parse_step, "step size"), (cone_angle, "cone angle"),
              (lambda v: explain.validate_params("L2", eps=v), "eps"),
              (lambda v: explain.validate_params("L2", step_size=v), "step_size"),
              (lambda v: explain.validate_params("L2", steps=v), "steps")]
    for check, name in checks:
        with pytest.raises(ValueError, match=name) as caught:
            check(value)
        assert "Exceeds the limit" not in str(caught.value) and len(str(caught.value)) < 300, str(caught.value)
