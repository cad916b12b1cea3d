"""What stage 2 starts from (`model.init`) must be the model the run's config and data describe: its
architecture, input size and classes are checked, not overwritten or ignored."""

import pytest
import torch

from dat_core import build_model, save_model
from dat_core.training.config import ConfigError, load_config
from dat_core.training.initial import initial_model

NAMES = ["class0", "class1", "class2"]


def _cfg(toy, init, **kw):
    return load_config(None, stage="stage2", **{"data.dataset": str(toy), "data.image_size": 16,
                                                "model.init": str(init), **kw})


def test_the_init_checkpoint_is_continued_when_the_config_agrees(toy, init):
    model = initial_model(_cfg(toy, init, **{"model.arch": "wrn-10-1"}), NAMES, torch.device("cpu"))
    assert model.config["arch"] == "wrn-10-1" and model.config["class_names"] == NAMES
    assert initial_model(_cfg(toy, init), NAMES, torch.device("cpu")).config["arch"] == "wrn-10-1"   # arch unset


def test_another_architecture_than_the_inits_is_refused(toy, init):
    """stage2 model.arch=wrn-16-4 trained the init's wrn-10-1, while run_config.json said wrn-16-4."""
    with pytest.raises(ConfigError, match="model.arch=wrn-16-4"):
        initial_model(_cfg(toy, init, **{"model.arch": "wrn-16-4"}), NAMES, torch.device("cpu"))


def test_an_init_trained_at_another_size_is_exported_at_the_size_it_trains_at(toy, init):
    """The paper fine-tunes a 224 px robust ResNet-50 at 256 px: the model trains on data.image_size images, and
    its config said the init's 16 px where it trained on 32 px ones."""
    model = initial_model(_cfg(toy, init, **{"data.image_size": 32}), NAMES, torch.device("cpu"))
    assert model.config["image_size"] == 32


def test_an_init_with_a_shipped_name_set_takes_the_datas_folder_names(toy, tmp_path):
    """The documented ImageNet recipe: an import named with --class-names imagenet, train/<wnid>/ folders."""
    from dat_core.models.class_names import dataset_class_names

    cifar = save_model(build_model("wrn-10-1", num_classes=10, image_size=16).eval(), tmp_path / "cifar")
    wnids = [f"n0{i}" for i in range(10)]
    assert build_model("wrn-10-1").config["class_names"] == dataset_class_names("cifar10")
    model = initial_model(_cfg(toy, cifar), wnids, torch.device("cpu"))
    assert model.config["class_names"] == wnids


def test_classes_other_than_the_inits_are_refused_not_renamed(toy, init):
    """A class0..2 checkpoint on folders x, y, z became x, y, z: its outputs were silently given other meanings."""
    with pytest.raises(ConfigError, match="model.init's classes"):
        initial_model(_cfg(toy, init), ["x", "y", "z"], torch.device("cpu"))


def test_generic_class_names_of_an_init_take_the_datas(toy, tmp_path):
    generic = save_model(build_model("wrn-10-1", num_classes=3, image_size=16).eval(), tmp_path / "generic")
    assert initial_model(_cfg(toy, generic), ["x", "y", "z"], torch.device("cpu")).config["class_names"] == \
        ["x", "y", "z"]


def test_class_folder_names_that_no_checkpoint_may_hold_are_refused_at_the_start(toy, tmp_path):
    """Stage 2 trained to the end on folders cat, dog|x, frog and wrote a final/ that nothing could load."""
    generic = save_model(build_model("wrn-10-1", num_classes=3, image_size=16).eval(), tmp_path / "generic")
    with pytest.raises(ConfigError, match="class names must not hold"):
        initial_model(_cfg(toy, generic), ["cat", "dog|x", "frog"], torch.device("cpu"))


def test_a_carve_out_that_takes_a_class_s_every_image_is_refused(tmp_path):
    """A class of one image among two of 20 lost that image to data.val_size=30: it trained on zero images,
    past the check that refuses empty class folders."""
    import numpy as np
    from PIL import Image

    from dat_core.training.data import load_train_val

    rng = np.random.default_rng(0)
    for c, n in (("class0", 20), ("class1", 1), ("class2", 20)):
        (tmp_path / "d" / "train" / c).mkdir(parents=True)
        for i in range(n):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(tmp_path / "d" / "train" / c /
                                                                                    f"{i}.png")
    cfg = load_config(None, **{"data.dataset": str(tmp_path / "d"), "data.image_size": 16, "data.val_size": 30})
    with pytest.raises(ValueError, match="class1"):
        load_train_val(cfg)
    train, val = load_train_val(load_config(None, **{"data.dataset": str(tmp_path / "d"), "data.image_size": 16,
                                                     "data.val_size": 30, "data.allow_empty_classes": True}))
    assert len(train) + len(val) == 41


def test_a_seed_changed_on_one_resume_keeps_the_held_out_images_on_the_next(toy, tmp_path):
    """The state saved the new seed in its config and the next resume drew the carve-out from it: the validation
    images changed (a stratified split keeps the labels, so the data check could not see it)."""
    from dat_core.training.loop import Trainer, train

    values = {"out_dir": str(tmp_path / "run"), "data.dataset": str(toy), "data.image_size": 16,
              "data.val_size": 12, "model.arch": "wrn-10-1", "batch_size": 8, "eval_every": 0, "ckpt_every": 100,
              "sample_grid": False, "attack.steps": 1, "autocast": "false", "channels_last": False}
    train(load_config(None, **values, steps=2))
    train(load_config(None, **values, steps=3, seed=1), resume=True, allow_config_change=True)
    held = []
    for steps in (4, 5):
        trainer = Trainer(load_config(None, **values, steps=steps, seed=1), resume=True, allow_config_change=True)
        held.append(trainer.val_set.images.clone())
        trainer.fit()
    from dat_core.training.data import load_train_val

    _, val = load_train_val(load_config(None, **values, steps=2))   # seed 0: the run's first carve-out
    assert torch.equal(held[0], val.images) and torch.equal(held[1], val.images)


@pytest.mark.parametrize("key, value", [("data.ood_noise_fraction", 0.25), ("contrastive.buffer_size", 16)])
def test_a_resume_may_not_change_the_shape_of_saved_streams_or_chains(toy, tmp_path, key, value):
    """With --allow-config-change the change was listed as accepted, then the saved state did not fit (exit 5, and
    advice to move state.prev.pt over a good state.pt)."""
    from dat_core.training.loop import train

    values = {"out_dir": str(tmp_path / "run"), "data.dataset": str(toy), "data.image_size": 16,
              "data.val_size": 12, "model.arch": "wrn-10-1", "batch_size": 8, "eval_every": 0, "ckpt_every": 100,
              "sample_grid": False, "attack.steps": 1, "autocast": "false", "channels_last": False}
    train(load_config(None, **values, steps=1))
    with pytest.raises(ConfigError, match=f"cannot change {key}"):
        train(load_config(None, **values, steps=2, **{key: value}), resume=True, allow_config_change=True)


def test_persistent_chains_too_large_to_hold_are_refused_with_the_config():
    """contrastive.buffer_size=200000000 passed the config check and failed allocating 614 GB after the data
    loaded, with a traceback."""
    with pytest.raises(ConfigError, match="contrastive.buffer_size"):
        load_config(None, stage="stage2", **{"model.init": "x", "contrastive.buffer_size": 200_000_000})
    official = {"model.init": "x", "contrastive.buffer_size": 10_000, "data.dataset": "d", "data.image_size": 224}
    assert load_config(None, stage="stage2", **official).contrastive.buffer_size == 10_000


def test_a_best_export_no_state_recorded_is_not_kept_on_resume(toy, tmp_path):
    """A run killed after an evaluation exported best/ but before its next state.pt resumed with the state's best
    (step 4) beside the killed attempt's best/ (step 8, whose claimed accuracy the resumed run never saw): with a
    changed attack, best/ held weights and numbers of a path the run no longer took."""
    import json

    from dat_core.training.loop import Trainer, train
    from dat_core.training.state import load_state_file

    values = {"out_dir": str(tmp_path / "run"), "data.dataset": str(toy), "data.image_size": 16,
              "data.val_size": 12, "model.arch": "wrn-10-1", "batch_size": 8, "eval_every": 2, "ckpt_every": 100,
              "eval_size": 12, "eval_attack_steps": 1, "sample_grid": False, "attack.steps": 1, "autocast": "false",
              "channels_last": False}
    train(load_config(None, **values, steps=4))
    best = tmp_path / "run" / "best" / "config.json"
    config = json.loads(best.read_text())
    config["training"]["step"] = 6      # as an export after the state: the state never recorded it
    best.write_text(json.dumps(config))
    trainer = Trainer(load_config(None, **values, steps=6), resume=True, allow_config_change=True)
    assert not best.parent.exists() and trainer.best["step"] is None
    trainer.fit()
    exported = json.loads(best.read_text())["training"]
    state = load_state_file(tmp_path / "run" / "state.pt")   # the run's own reader: weights_only=True
    assert exported["step"] == state["best"]["step"] == 6


@pytest.mark.parametrize("key, value", [("data.ood_holdout", 10), ("data.ood_seed_bank", 10),
                                        ("data.ood_noise_fraction", 0.1)])
def test_ood_image_settings_with_noise_seeds_are_refused(key, value):
    """With data.ood = uniform (the default) these were accepted and did nothing: no hold-out to evaluate OOD
    detection on, no seed bank, no mixing."""
    with pytest.raises(ConfigError, match=f"{key}: it needs OOD images, and data.ood = uniform is noise"):
        load_config(None, stage="stage2", **{"model.init": "x", key: value})
    assert getattr(load_config(None, stage="stage2", **{"model.init": "x", "data.ood": "some/folder", key: value}
                               ).data, key.split(".")[1]) == value
