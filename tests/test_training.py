"""Two-stage training on a tiny synthetic class-folder dataset (16 px, 3 classes, wrn-10-1)."""

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from conftest import sigterm_after_rows

from dat_core.loading import load_model
from dat_core.runtime import native_bf16, use_autocast
from dat_core.training.config import ConfigError, load_config, validate
from dat_core.training.loop import STATE_FILE, Trainer, TrainingError, lr_factor, train
from dat_core.training.stage2 import Curriculum, bce_loss, contrastive_samples

ROOT = Path(__file__).resolve().parent.parent


def tiny(toy, out, stage="stage1", **kw):
    values = {"out_dir": str(out), "data.dataset": str(toy), "data.image_size": 16, "data.val_size": 12,
              "model.arch": "wrn-10-1", "steps": 6, "batch_size": 8, "log_every": 1, "ckpt_every": 100,
              "eval_every": 0, "eval_size": 12, "eval_attack_steps": 1, "attack.steps": 1,
              "sample_grid": False, "channels_last": False, "contrastive.window_images": 16,
              "contrastive.max_steps": 3, "stage": stage,
              "autocast": "false"}  # fp32: exact comparisons must not depend on whether this CPU has bf16
    values.update(kw)
    return load_config(None, **values)


@pytest.fixture(scope="module")
def stage1_ckpt(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("s1")
    return train(tiny(toy, out, steps=8, sample_grid=True))


def test_stage1_then_stage2_end_to_end(toy, stage1_ckpt, tmp_path):
    s1 = load_model(stage1_ckpt)
    assert s1.config["class_names"] == ["class0", "class1", "class2"]
    assert set(s1.config["energy_quantiles"]) >= {"0.5", "0.05", "0.95"}
    assert (stage1_ckpt.parent / "samples").is_dir() and (stage1_ckpt.parent / "curves.png").is_file()
    final = train(tiny(toy, tmp_path, "stage2", **{"model.init": str(stage1_ckpt), "data.ood": str(toy / "ood")}))
    model = load_model(final)
    assert model.config["training"]["stage"] == "stage2"
    with torch.no_grad():
        assert model(torch.rand(2, 3, 16, 16)).shape == (2, 3)
    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == list(range(1, 7))
    assert {"loss_bce", "loss_ce", "adv_auc", "clean_auc", "energy_real", "energy_contrastive", "energy_ood",
            "T", "lr", "images_per_s"} <= set(rows[0])


def test_stage2_freezes_bn_statistics_but_trains_affine(toy, stage1_ckpt, tmp_path):
    cfg = tiny(toy, tmp_path, "stage2", steps=3, **{"model.init": str(stage1_ckpt)})
    trainer = Trainer(cfg)
    before = {k: v.clone() for k, v in trainer.module.state_dict().items()}
    trainer.fit()
    after = trainer.module.state_dict()
    stats = [k for k in before if "running_" in k or "num_batches" in k]
    affine = [k for k in before if k.endswith("bn1.weight")]
    assert stats and all(torch.equal(before[k], after[k]) for k in stats)
    assert any(not torch.equal(before[k], after[k]) for k in affine)


def test_stage1_updates_bn_statistics(toy, tmp_path):
    trainer = Trainer(tiny(toy, tmp_path, steps=2))
    before = trainer.module.bn1.running_mean.clone()
    trainer.fit()
    assert not torch.equal(before, trainer.module.bn1.running_mean)


def test_curriculum_raises_exactly_at_threshold_and_never_past_max():
    # dyadic AUC values keep the window means exact in floating point
    c = Curriculum(start=0, max_steps=2, threshold=0.75, window=3)
    assert [c.update(a) for a in (1.0, 1.0)] == [False, False]      # window not full yet
    assert c.update(0.25) is True and c.T == 1                       # mean exactly 0.75: raise
    assert len(c.window) == 0                                         # window reset on change
    assert [c.update(a) for a in (0.75, 0.75, 0.5)] == [False, False, False] and c.T == 1  # mean 2/3
    assert c.update(1.0) is True and c.T == 2                        # sliding window (0.75, 0.5, 1.0)
    for _ in range(10):
        assert c.update(1.0) is False
    assert c.T == 2
    c2 = Curriculum(0, 5, 0.5, 3)
    c2.load_state_dict(c.state_dict())
    assert c2.T == 2 and list(c2.window) == list(c.window)


def test_contrastive_samples_raise_the_class_logit(tiny_model):
    x = torch.rand(6, 3, 32, 32)
    y = torch.arange(6) % 10
    with torch.no_grad():
        before = tiny_model(x).gather(1, y[:, None])
        after = tiny_model(contrastive_samples(tiny_model, x, y, 0.1, 5)).gather(1, y[:, None])
    assert (after > before).all()
    assert torch.equal(contrastive_samples(tiny_model, x, y, 0.1, 0), x)  # T = 0: the raw seeds


def test_bce_labels_real_one_contrastive_zero():
    real = torch.tensor([[5.0, 0.0], [4.0, 1.0]])
    con = torch.tensor([[-5.0, -6.0], [-4.0, -7.0]])
    s_real, s_con = torch.logsumexp(real, 1), torch.logsumexp(con, 1)
    expected = -(torch.log(torch.sigmoid(s_real)).sum() + torch.log(1 - torch.sigmoid(s_con)).sum()) / 4
    torch.testing.assert_close(bce_loss(real, con), expected)
    assert bce_loss(real, con) < bce_loss(con, real)


def test_fused_forward_equals_official_order(toy, stage1_ckpt, tmp_path):
    """One fused forward gives the same loss and gradients as the official three passes."""
    grads = {}
    for fused in (True, False):
        cfg = tiny(toy, tmp_path / str(fused), "stage2", seed=3, fused_forward=fused,
                   **{"model.init": str(stage1_ckpt), "contrastive.start_steps": 2})
        trainer = Trainer(cfg)
        loss, logs = trainer.stage.loss(log=True)
        loss.backward()
        grads[fused] = (loss.detach(), logs["adv_auc"], [p.grad.clone() for p in trainer.module.parameters()])
    torch.testing.assert_close(grads[True][0], grads[False][0], rtol=1e-5, atol=1e-6)
    assert grads[True][1] == pytest.approx(grads[False][1])
    for a, b in zip(grads[True][2], grads[False][2]):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-6)


def test_nan_loss_stops_and_keeps_last_good_state(toy, stage1_ckpt, tmp_path, monkeypatch):
    import dat_core.training.stage2 as stage2

    cfg = tiny(toy, tmp_path, "stage2", steps=6, ckpt_every=2, **{"model.init": str(stage1_ckpt)})
    trainer = Trainer(cfg)
    real_bce = stage2.bce_loss
    calls = []

    def poisoned(*args):
        calls.append(1)
        loss = real_bce(*args)
        return loss * float("nan") if len(calls) == 3 else loss

    monkeypatch.setattr(stage2, "bce_loss", poisoned)
    with pytest.raises(TrainingError, match="step 3"):
        trainer.fit()
    state = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert state["step"] == 2
    assert all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def _run(args, env_extra=None, **kw):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT), **(env_extra or {}))
    return subprocess.Popen([sys.executable, "-m", "train", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)


def _overrides(toy, out, steps):
    return [f"out_dir={out}", f"data.dataset={toy}", "data.image_size=16", "data.val_size=12",
            "model.arch=wrn-10-1", f"steps={steps}", "batch_size=8", "log_every=1", "ckpt_every=1000",
            "eval_every=0", "eval_size=12", "eval_attack_steps=1", "attack.steps=1", "sample_grid=false",
            "contrastive.window_images=8", "contrastive.auc_threshold=0.0", "contrastive.max_steps=3",
            f"data.ood={toy / 'ood'}", "autocast=false",
            # 0.1, then 0.02, sent this toy stage 2 (batch 8, 16 px) to a non-finite loss after a change of data order
            "optim.lr=0.005"]


def test_sigterm_then_resume_matches_uninterrupted_run(toy, stage1_ckpt, tmp_path):
    steps = 14
    base = ["stage2", f"model.init={stage1_ckpt}"]
    ref = _run(base + _overrides(toy, tmp_path / "ref", steps))
    out, _ = ref.communicate(timeout=300)
    assert ref.returncode == 0, out

    run = _run(base + _overrides(toy, tmp_path / "int", steps))
    out = sigterm_after_rows(run, tmp_path / "int" / "metrics.jsonl")
    assert run.returncode == 128 + signal.SIGTERM, out
    assert "continue with --resume" in out
    stopped = torch.load(tmp_path / "int" / STATE_FILE, weights_only=True)["step"]
    assert 4 <= stopped < steps

    resumed = _run(base + _overrides(toy, tmp_path / "int", steps) + ["--resume"])
    out, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, out
    a = torch.load(tmp_path / "ref" / STATE_FILE, weights_only=True)
    b = torch.load(tmp_path / "int" / STATE_FILE, weights_only=True)
    assert a["step"] == b["step"] == steps
    assert a["stage"]["curriculum"]["T"] == b["stage"]["curriculum"]["T"] == 3
    for k in a["model"]:
        assert torch.equal(a["model"][k], b["model"][k]), k
    for k in a["ema"]["model"]:
        assert torch.equal(a["ema"]["model"][k], b["ema"]["model"][k]), k


@pytest.mark.slow
def test_torchrun_two_process_gloo(toy, tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    out = tmp_path / "ddp"
    proc = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node=2", "-m", "train", "stage1",
                           *_overrides(toy, out, 3)[:-1]], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["best", "final"]
    assert list(out.glob("state.pt*")) == [out / STATE_FILE]
    assert load_model(out / "final").config["training"]["step"] == 3
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3  # rank 0 logs alone


@pytest.mark.parametrize("override,match", [
    ("optim.lrr=0.1", "optim.lrr"), ("foo=1", "'foo'"), ("optim.lr=-1", "optim.lr"),
    ("attack.norm=L3", "attack.norm"), ("steps=2.5", "steps"), ("contrastive.auc_threshold=2", "auc_threshold"),
    # ranges: every value, named by its dotted key
    ("optim.final_lr_fraction=-5", "optim.final_lr_fraction"), ("optim.final_lr_fraction=1.5", "final_lr_fraction"),
    ("optim.momentum=5", "optim.momentum"), ("optim.momentum=-0.1", "optim.momentum"), ("seed=-1", "seed"),
    ("optim.betas=[0.9]", "optim.betas"), ("optim.betas=[0.9, 1.5]", r"optim.betas\[1\]"),
    ("optim.betas='a'", "optim.betas"), ('optim.step_milestones=["a"]', r"optim.step_milestones\[0\]"),
    ("optim.step_milestones=[0.7, 0.3]", "optim.step_milestones"), ("optim.step_milestones=[1.5]", "milestones"),
    ("device=tpu", "device"), ("device=cuda:x", "device"), ("autocast=fast", "autocast"),
    ("data.image_size=2048", "data.image_size"), ("data.image_size=0", "data.image_size"),
    ("data.val_size=-1", "data.val_size"), ("data.clf_augment=autoaugment", "data.clf_augment"),
    ("ema_decay=1", "ema_decay"), ("optim.weight_decay=-1e-4", "optim.weight_decay"), ("optim.lr=nan", "optim.lr"),
    ("optim.lr=inf", "optim.lr"), ("batch_size=0", "batch_size"), ("ckpt_every=0", "ckpt_every"),
    ("contrastive.window_images=0", "contrastive.window_images"), ("contrastive.step_size=0", "contrastive.step_size"),
    ("model.arch=resnet7", "model.arch"), ("steps=true", "steps"), ("optim.nesterov=3", "optim.nesterov"),
    ("best_metric=loss", "best_metric"), ("optim.schedule=linear", "optim.schedule"), ("steps.x=1", "steps"),
    # checks across keys name the key to change
    ("optim.warmup_steps=99999", "optim.warmup_steps"), ("contrastive.start_steps=99", "contrastive.start_steps"),
    ("data.image_size=64", "data.image_size"), ("attack.step_size=0", "attack.step_size"),
    ("attack.eps=0", "attack.eps"),
    ("attack.norm=Linf", None),
    ('steps="2"', "write it without quotes"), ('optim.lr="0.1"', "optim.lr"),   # a quoted number is text
])
def test_bad_config_keys_and_values_are_named(override, match):
    if match is None:  # a good value next to the bad ones: accepted
        assert load_config(None, [override]).attack.norm == "Linf"
        return
    with pytest.raises(ConfigError, match=match):
        load_config(None, [override, "steps=1000"] if not override.startswith("steps") else [override])


def test_linf_attack_budgets_in_pixel_units_are_refused():
    """A Linf radius or step above 1 on [0,1] images (8 for 8/255) saturates every pixel: refused by key."""
    for override, key in (("attack.eps=8", "attack.eps"), ("attack.step_size=2", "attack.step_size")):
        with pytest.raises(ConfigError, match=f"{key}.*did you mean"):
            load_config(None, ["attack.norm=Linf", override, "steps=1000"])


def test_numbers_a_shell_user_writes_are_numbers_and_quoted_toml_numbers_are_refused(tmp_path):
    assert load_config(None, ["optim.lr=.05", "steps=1000"]).optim.lr == 0.05
    (tmp_path / "c.toml").write_text('steps = "2"\n')
    with pytest.raises(ConfigError, match="steps.*without quotes"):
        load_config(tmp_path / "c.toml")


def test_config_is_pydantic_with_a_json_schema(capsys):
    from dat_core.training.config import TrainConfig, config_schema
    from train.__main__ import main

    schema = config_schema()
    optim = schema["$defs"]["OptimConfig"]
    assert optim["additionalProperties"] is False
    assert optim["properties"]["momentum"]["exclusiveMaximum"] == 1
    assert set(schema["properties"]["stage"]["enum"]) == {"stage1", "stage2"}
    cfg = load_config(None, ["optim.lr=0.05", "model.arch=wrn-10-1"], steps=20)
    assert isinstance(cfg, TrainConfig) and cfg.optim.lr == 0.05 and cfg.to_dict()["optim"]["lr"] == 0.05
    with pytest.raises(ValueError, match="momentum"):
        cfg.optim.momentum = 2  # assignments are validated too
    assert main(["schema"]) == 0
    assert json.loads(capsys.readouterr().out) == schema
    assert main(["stage1", "optim.momentum=5"]) == 2
    assert "optim.momentum" in capsys.readouterr().err


def test_stage2_defaults_are_the_papers_fine_tuning_not_stage1s(tmp_path):
    """A stage-2 config that names no optimizer schedule trained at stage 1's cosine from lr 0.1, 100 times the
    paper's constant 1e-3 (METHOD §3.5; the official code refuses anything but a fixed lr)."""
    cfg = load_config(None, ["stage=stage2", "model.init=s1"])
    assert (cfg.optim.lr, cfg.optim.schedule) == (1e-3, "constant")
    toml = tmp_path / "s2.toml"
    toml.write_text('stage = "stage2"\n[model]\ninit = "s1"\n[optim]\nlr = 0.01\n')
    assert (load_config(toml).optim.lr, load_config(toml).optim.schedule) == (0.01, "constant")  # one key set
    assert load_config(toml, ["optim.schedule=cosine"]).optim.schedule == "cosine"               # both named
    assert validate(load_config(toml, ["optim.schedule=cosine"])).optim.schedule == "cosine"     # kept on re-check
    stage1 = load_config(None)
    assert (stage1.optim.lr, stage1.optim.schedule) == (0.1, "cosine")


def test_training_takes_only_image_sizes_a_checkpoint_can_hold():
    """data.image_size took up to 1024, checkpoints up to 512: a 600 px run saved best/ and final/ that no load
    could read. One range serves both."""
    from dat_core.models.config import IMAGE_SIZE
    assert load_config(None, **{"data.dataset": "folder", "data.image_size": IMAGE_SIZE[1]}).data.image_size == 512
    for size in (IMAGE_SIZE[0] - 1, IMAGE_SIZE[1] + 1, 1024):
        with pytest.raises(ConfigError, match="data.image_size"):
            load_config(None, **{"data.dataset": "folder", "data.image_size": size})


def test_stage2_requires_init_and_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="model.init"):
        load_config(None, stage="stage2")
    bad = tmp_path / "bad.toml"
    bad.write_text("[optim]\nlearning_rate = 1\n")
    with pytest.raises(ConfigError, match="optim.learning_rate"):
        load_config(bad)


def test_shipped_configs_load():
    for path in sorted((ROOT / "train" / "configs").glob("*.toml")):
        cfg = load_config(path)
        assert cfg.stage in path.name or (path.stem.endswith("standard") and cfg.attack.steps == 0)


def test_config_comments_agree_with_their_values():
    """A comment claiming "N epochs = Mk steps at batch B (Xk train images)" matches steps, batch_size and val_size."""
    import re

    claim = re.compile(r"(\d+) epochs = ([\d.]+)k steps at batch (\d+) \((\d+)k train images")
    checked = 0
    for path in sorted((ROOT / "train" / "configs").glob("*.toml")):
        text, cfg = path.read_text(), load_config(path)
        for epochs, k_steps, batch, k_images in claim.findall(re.sub(r"\n# ?", " ", text)):
            epochs, k_steps, batch, images = int(epochs), float(k_steps), int(batch), int(k_images) * 1000
            assert batch == cfg.batch_size, path.name
            assert images == 50_000 - cfg.data.val_size, path.name  # CIFAR train split minus the validation split
            assert cfg.steps == int(epochs * images / batch), path.name
            assert round(cfg.steps / 1000, 1) == k_steps, path.name
            checked += 1
    assert checked >= 1


def test_lr_schedules():
    cfg = load_config(None, steps=100, **{"optim.warmup_steps": 10, "optim.schedule": "cosine"})
    f = [lr_factor(cfg, s) for s in range(100)]
    assert f[0] == pytest.approx(0.1) and f[9] == pytest.approx(1.0) and f[10] == pytest.approx(1.0)
    assert all(a >= b for a, b in zip(f[10:], f[11:])) and f[-1] < 0.01
    step = load_config(None, steps=100, **{"optim.schedule": "step"})
    assert [lr_factor(step, s) for s in (0, 49, 50, 75, 99)] == pytest.approx([1, 1, 0.1, 0.01, 0.01])


def test_existing_run_requires_resume(toy, tmp_path):
    (tmp_path / STATE_FILE).write_bytes(b"")
    with pytest.raises(ConfigError, match="--resume"):
        Trainer(tiny(toy, tmp_path))


def test_a_seed_kind_that_cannot_serve_the_data_fails_before_training(toy, tmp_path):
    """The sample grid's seeds are drawn at the first evaluation: CIFAR-10 Gaussians for other classes failed
    there, after eval_every steps of training, with a ValueError (exit 1) instead of a config error."""
    cfg = tiny(toy, tmp_path / "run", sample_grid=True, sample_seeds="gaussian", eval_every=3)
    with pytest.raises(ConfigError, match="sample_seeds=gaussian: .*other classes"):
        Trainer(cfg)
    assert not (tmp_path / "run" / "metrics.jsonl").exists()
    Trainer(tiny(toy, tmp_path / "ok", sample_grid=False, sample_seeds="gaussian"))  # no grid, no seeds needed


def test_autocast_auto_means_native_bf16_only():
    """bf16 autocast is emulated (~10x slower) on AVX2-only CPUs, so `auto` must not pick it there."""
    avx2 = "flags : fpu sse2 avx avx2 fma"
    assert not native_bf16(torch.device("cpu"), cpuinfo=avx2)
    assert native_bf16(torch.device("cpu"), cpuinfo=avx2 + " avx512f avx512_bf16")
    assert native_bf16(torch.device("cpu"), cpuinfo=avx2 + " amx_bf16 amx_tile")
    assert native_bf16(torch.device("cuda")) == (torch.cuda.is_available() and torch.cuda.is_bf16_supported(False))
    cpu = torch.device("cpu")
    assert use_autocast("auto", cpu) == native_bf16(cpu)
    assert use_autocast("true", cpu) and use_autocast("on", cpu) and not use_autocast("off", torch.device("cuda"))
    assert use_autocast(False, torch.device("cuda")) is False
    with pytest.raises(ValueError, match="autocast must be one of"):
        use_autocast("fast", cpu)


def test_ema_equals_the_official_averaged_model():
    """EMA as the official `AveragedModel(avg_type="ema", ema_decay=0.999, avg_batchnorm=True)` (xuwangyin/DAT,
    rebm/training/average_model.py), re-derived from its formulas: update n copies the weights when n == 0, else
    averages parameters and BN running mean/var with decay min(0.999, (1+n)/(10+n)). Ours used to average the
    first update too, so the starting weights kept a 10% share that decayed away only slowly."""
    from dat_core import build_model
    from dat_core.training.optim import EMA

    torch.manual_seed(0)
    model = build_model("wrn-10-1")
    ema = EMA(model, 0.999)
    reference = {k: v.clone() for k, v in model.state_dict().items()}
    averaged = [k for k, v in reference.items() if v.dtype.is_floating_point]  # parameters and running mean/var
    for n in range(4):
        with torch.no_grad():
            for v in model.state_dict().values():
                if v.dtype.is_floating_point:
                    v.add_(torch.randn_like(v))
                else:
                    v.add_(1)
        ema.update(model)
        decay = min(0.999, (1 + n) / (10 + n))
        for k in averaged:
            p = model.state_dict()[k]
            reference[k] = p.clone() if n == 0 else decay * reference[k] + (1 - decay) * p
        for k in averaged:
            torch.testing.assert_close(ema.model.state_dict()[k], reference[k], rtol=1e-6, atol=1e-6)


def test_every_random_stream_of_every_rank_has_its_own_seed(toy, tmp_path):
    """The noise seeds (seed*1000 + rank) of rank 7 were the persistent chains' (seed*1000 + 7 + rank) of rank 0: at
    8 ranks, the official setting, two streams drew the same numbers."""
    from dat_core.training.data import build_streams, load_train_val, rank_seed

    seen: dict[bytes, tuple] = {}

    def once(generator, *where):
        state = bytes(generator.get_state().numpy())
        assert state not in seen, (where, seen.get(state))
        seen[state] = where

    for seed in range(2):
        noise = tiny(toy, tmp_path, "stage2", seed=seed, batch_size=16, **{"data.ood": "uniform", "model.init": "x"})
        mixed = tiny(toy, tmp_path, "stage2", seed=seed, batch_size=16,
                     **{"data.ood": str(toy / "ood"), "data.ood_noise_fraction": 0.5, "model.init": "x"})
        train_set = load_train_val(noise)[0]
        for rank in range(16):
            once(build_streams(noise, train_set, torch.device("cpu"), rank, 16)["ood"].generator, "noise", seed, rank)
            once(build_streams(mixed, train_set, torch.device("cpu"), rank, 16)["ood"].generator, "mix", seed, rank)
            once(torch.Generator().manual_seed(rank_seed(seed, "chains", rank)), "chains", seed, rank)
