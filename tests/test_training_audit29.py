"""Resume and config checks found by audit 29: a change accepted on resume must be the one that trains (or be
refused by name before anything runs), and a config that cannot train, or would not write what the CLI promises,
is refused by its key. Tiny runs: wrn-10-1, 16 px, fp32, CPU."""

import json

import pytest
import torch

from dat_core import build_model
from dat_core.training.config import ConfigError, load_config
from dat_core.training.loop import STATE_FILE, Trainer, train

NAMES = ["class0", "class1", "class2"]


def _values(toy, out, **kw):
    v = {"out_dir": str(out), "data.dataset": str(toy), "data.image_size": 16, "data.val_size": 12,
         "model.arch": "wrn-10-1", "steps": 2, "batch_size": 8, "log_every": 1, "ckpt_every": 100, "eval_every": 0,
         "eval_size": 12, "eval_attack_steps": 1, "attack.steps": 1, "sample_grid": False, "channels_last": False,
         "autocast": "false"}
    return {**v, **kw}


def _stage2(toy, out, init, **kw):
    return _values(toy, out, stage="stage2", **{"model.init": str(init), "data.ood": str(toy / "ood"),
                                                "contrastive.window_images": 8, "contrastive.max_steps": 3, **kw})


@pytest.mark.parametrize("first, change, group", [
    ({}, {"optim.weight_decay": 0.1}, {"weight_decay": 0.1}),
    ({}, {"optim.momentum": 0.5, "optim.nesterov": False}, {"momentum": 0.5, "nesterov": False}),
    ({"optim.name": "adamw"}, {"optim.betas": [0.8, 0.9]}, {"betas": (0.8, 0.9)})])
def test_optimizer_values_changed_on_resume_are_the_ones_that_train(toy, tmp_path, first, change, group):
    """torch's load_state_dict puts the saved groups' values back: the change was listed as accepted, then the
    run went on with the old weight decay, momentum or betas."""
    values = _values(toy, tmp_path / "run", **first)
    train(load_config(None, **values))
    trainer = Trainer(load_config(None, **{**values, "steps": 3, **change}), resume=True, allow_config_change=True)
    assert {k: trainer.optimizer.param_groups[0][k] for k in group} == group
    trainer.fit()
    saved = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)["optimizer"]["param_groups"][0]
    assert {k: tuple(v) if isinstance(v, list) else v for k, v in saved.items() if k in group} == group


@pytest.mark.parametrize("key, value", [("optim.name", "adamw"), ("optim.decay_norm_and_bias", False)])
def test_a_resume_may_not_change_the_shape_of_the_optimizer_state(toy, tmp_path, key, value):
    """Accepted with --allow-config-change, then the saved optimizer state did not fit: exit 5, 'state.pt does not
    fit this run', and advice to move state.prev.pt over a state.pt that was fine."""
    values = _values(toy, tmp_path / "run")
    train(load_config(None, **values))
    with pytest.raises(ConfigError, match=f"cannot change {key}"):
        train(load_config(None, **{**values, "steps": 3, key: value}), resume=True, allow_config_change=True)


def test_a_seed_bank_raised_on_resume_is_refused_before_the_seed_stream_resumes(toy, tmp_path, init):
    """The bank is carved out of the seeds: 24 of 40 left 2 batches an epoch, and the seed stream resumed at batch 4
    of its epoch, past the end ('images must hold at least one image' mid-run). Audit 30: a bank resized on resume
    is refused (it would hold seeds the run drew), so the stream always resumes over the seeds it left."""
    values = _stage2(toy, tmp_path / "run", init, steps=4)
    train(load_config(None, **values))
    assert torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)["ranks"][0]["streams"]["ood"]["index"] == 4
    with pytest.raises(ConfigError, match="cannot change data.ood_seed_bank: 0 -> 24"):
        train(load_config(None, **{**values, "steps": 6, "data.ood_seed_bank": 24}), resume=True,
              allow_config_change=True)
    assert torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)["step"] == 4


def test_a_best_metric_changed_on_resume_chooses_best_by_the_new_metric(toy, tmp_path):
    """The saved best value of the old metric stayed the bar (and the state kept its name): best/ stayed the one
    chosen by clean accuracy while the config said robust accuracy."""
    values = _values(toy, tmp_path / "run", eval_every=2, best_metric="clean_accuracy")
    train(load_config(None, **values))
    train(load_config(None, **{**values, "steps": 4, "best_metric": "robust_accuracy"}), resume=True,
          allow_config_change=True)
    best = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)["best"]
    assert best["metric"] == "robust_accuracy" and best["step"] > 2
    rows = [json.loads(line) for line in (tmp_path / "run" / "eval.jsonl").read_text().splitlines()]
    assert best["value"] == max(r["robust_accuracy"] for r in rows if r["step"] > 2)
    record = json.loads((tmp_path / "run" / "best" / "config.json").read_text())["training"]
    assert record["selection"] == "best robust_accuracy on validation" and record["step"] == best["step"]


def test_lowering_max_steps_on_resume_caps_t(toy, tmp_path, init):
    """T_max lowered with --allow-config-change: the run went on at the saved T, above the new cap."""
    values = _stage2(toy, tmp_path / "run", init, steps=4, **{"contrastive.auc_threshold": 0.0})
    train(load_config(None, **values))
    assert torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)["stage"]["curriculum"]["T"] == 3
    train(load_config(None, **{**values, "steps": 5, "contrastive.max_steps": 1}), resume=True,
          allow_config_change=True)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 5 and rows[-1]["T"] == 1
    assert torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)["stage"]["curriculum"]["T"] == 1


def test_a_zero_attack_step_is_refused_by_its_key_without_an_attack_too():
    """attack.steps=0 attack.step_size=0 passed the config, then the run stopped after loading its data with
    'step_size must be a finite number > 0' (no key named); evaluation attacks with it as well."""
    with pytest.raises(ConfigError, match="attack.step_size"):
        load_config(None, **{"attack.steps": 0, "attack.step_size": 0})


def test_eval_size_zero_beside_a_validation_split_is_refused():
    """No metric was ever measured, so best/ (promised by --help) was never written, and the carve-out went unused
    for selection; without a validation split eval_size=0 stays valid (best/ = the last weights)."""
    with pytest.raises(ConfigError, match="eval_size"):
        load_config(None, **{"eval_size": 0, "data.val_size": 12})
    assert load_config(None, **{"eval_size": 0, "data.val_size": 0}).eval_size == 0


def test_periodic_evaluation_measures_every_class_when_eval_size_is_below_val_size(toy, tmp_path):
    """The first eval_size images of a class-sorted validation split are its first classes only: a model that always
    says class 0 scored 100% on eval_size=4 of 12 (4 per class), and best/ was chosen on that."""
    from dat_core.training.data import load_train_val
    from dat_core.training.periodic_eval import evaluate_run

    cfg = load_config(None, **_values(toy, tmp_path / "run", eval_size=6, eval_attack_steps=0))
    _, val = load_train_val(cfg)
    assert val.labels.tolist() == [0] * 4 + [1] * 4 + [2] * 4   # class folders come sorted
    model = build_model("wrn-10-1", num_classes=3, image_size=16, class_names=NAMES).eval()
    with torch.no_grad():
        model.fc.weight.zero_()
        model.fc.bias.copy_(torch.tensor([10.0, 0.0, 0.0]))   # class 0, whatever the image
    metrics = evaluate_run(cfg, model, val, tmp_path, 1, autocast=False)
    assert metrics["clean_accuracy"] == pytest.approx(1 / 3)
