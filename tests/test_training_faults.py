"""Training under faults and bad input: non-finite values, resume with a changed config, corrupt state
files, unwritable run directories, kills at any point, and the two official-code choices (weight decay
on every parameter, training without a validation split). Tiny runs: wrn-10-1, 16 px, fp32, CPU."""

import errno
import json
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dat_core import build_model, load_model, save_model
from dat_core.training import loop, state, tracking
from dat_core.training.config import ConfigError, load_config
from dat_core.training.errors import NonFiniteError, StateError, StorageError
from dat_core.training.loop import STATE_FILE, Trainer, train
from dat_core.training.state import PREVIOUS_FILE
from train.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
CLASSES = ["class0", "class1", "class2"]


def values(toy, out, stage="stage1", **kw):
    v = {"out_dir": str(out), "data.dataset": str(toy), "data.image_size": 16, "data.val_size": 12,
         "model.arch": "wrn-10-1", "steps": 6, "batch_size": 8, "log_every": 1, "ckpt_every": 2,
         "eval_every": 0, "eval_size": 12, "eval_attack_steps": 1, "attack.steps": 1, "sample_grid": False,
         "channels_last": False, "contrastive.window_images": 16, "contrastive.max_steps": 3, "stage": stage,
         "autocast": "false"}
    v.update(kw)
    return v


def tiny(toy, out, stage="stage1", **kw):
    return load_config(None, **values(toy, out, stage, **kw))


def cli(toy, out, stage="stage1", *extra, **kw):
    return [stage, *(f"{k}={json.dumps(v) if isinstance(v, bool) else v}" for k, v in values(toy, out, stage, **kw)
                     .items() if k != "stage"), *extra]


@pytest.fixture(scope="module")
def init_ckpt(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("wrn-10-1", num_classes=3, image_size=16, class_names=CLASSES)
    return save_model(model.eval(), tmp_path_factory.mktemp("init") / "ckpt")


class Killed(BaseException):
    """Stands in for SIGKILL: nothing catches it, nothing is saved on the way out."""


def rows(path):
    return [json.loads(line)["step"] for line in Path(path).read_text().splitlines()] if Path(path).exists() else []


# --------------------------------------------------------------------------- non-finite values (points 4, 5)

@pytest.mark.parametrize("stage", ["stage1", "stage2"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
def test_nonfinite_weights_stop_naming_step_and_last_good_state(toy, init_ckpt, tmp_path, stage, bad):
    """Weights poisoned after optimizer step 3: step 4 stops with the names, the step and the last state."""
    trainer = Trainer(tiny(toy, tmp_path, stage, **{"model.init": str(init_ckpt)}))
    calls = []

    def poison(optimizer, args, kwargs):
        calls.append(1)
        if len(calls) == 3:
            with torch.no_grad():
                next(trainer.module.parameters()).fill_(bad)
    trainer.optimizer.register_step_post_hook(poison)
    with pytest.raises(NonFiniteError) as e:
        trainer.fit()
    message = str(e.value)
    assert "non-finite" in message and "at step 4" in message and "logits" in message
    assert f"last good checkpoint: {tmp_path / STATE_FILE} (step 2)" in message
    assert e.value.exit_code == 3
    saved = torch.load(tmp_path / STATE_FILE, weights_only=True)
    assert saved["step"] == 2 and all(torch.isfinite(v).all() for v in saved["model"].values() if v.is_floating_point())
    assert rows(tmp_path / "metrics.jsonl") == [1, 2, 3]  # the bad step is not logged


@pytest.mark.parametrize("stage", ["stage1", "stage2"])
def test_diverging_lr_exits_with_the_non_finite_code(toy, init_ckpt, tmp_path, stage, capsys):
    code = main(cli(toy, tmp_path, stage, **{"optim.lr": 1e8, "model.init": str(init_ckpt) if stage == "stage2"
                                             else "", "ckpt_every": 5}))
    err = capsys.readouterr().err
    assert code == 3, err
    assert "non-finite" in err and "at step 2" in err and "roc_auc" not in err
    # nothing was saved yet: the message says so instead of pointing at a state.pt that does not exist
    assert "last good checkpoint: none (no state.pt was written yet; the first was due at step 5)" in err
    assert not (tmp_path / STATE_FILE).exists()


# --------------------------------------------------------------------------- resume with another config (point 7)

@pytest.fixture(scope="module")
def finished_run(toy, tmp_path_factory):
    out = tmp_path_factory.mktemp("finished") / "run"
    train(tiny(toy, out, steps=2))
    return out


def copy_run(src, dst):
    import shutil
    shutil.copytree(src, dst)
    return dst


@pytest.mark.parametrize("change,refused", [
    ({"batch_size": 4}, "batch_size"), ({"model.arch": "wrn-16-1"}, "model.arch"),
    ({"data.val_size": 6}, "data.val_size"), ({"data.image_size": 8}, "data.image_size"),
    ({"stage": "stage2", "model.init": "x"}, "stage"),
])
def test_resume_refuses_a_changed_model_data_or_batch(toy, finished_run, tmp_path, change, refused):
    out = copy_run(finished_run, tmp_path / "run")
    with pytest.raises(ConfigError, match=rf"cannot change {refused}.*start a new run"):
        Trainer(tiny(toy, out, **{"steps": 4, **change}), resume=True, allow_config_change=True)


def test_a_write_killed_midway_leaves_no_temporary_behind(toy, tmp_path):
    """A SIGKILL while state.pt (or a file of best/, final/, parts/) was written left its full-size temporary,
    one per kill, never removed. The next write removes those of processes that are gone."""
    from dat_core.files import replacing

    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()              # a pid that has exited
    out = tmp_path / "run"
    out.mkdir()
    left = [out / f"state.pt.{dead}.tmp", out / f".model.safetensors.{dead}.abcd1234.tmp"]
    mine = out / f"state.pt.{os.getpid()}.tmp.keep"             # not a temporary of this pattern: kept
    for p in (*left, mine):
        p.write_bytes(b"x" * 1000)
        os.utime(p, (1, 1))                                      # unchanged for long (files.GRACE)
    state.atomic_save({"step": 1}, out / "state.pt")
    with replacing(out / "model.safetensors") as tmp:
        tmp.write_bytes(b"weights")
    assert not any(p.exists() for p in left) and mine.exists()
    assert sorted(p.name for p in out.iterdir()) == sorted(["state.pt", "model.safetensors", mine.name])


def test_a_run_killed_between_an_exports_two_renames_finds_its_export_on_resume(tmp_path):
    """best/ is replaced by two renames (old tree away, new tree in): a SIGKILL between them left neither, and best/
    is written again only on a better metric. The run directory is claimed, so the dead writer's whole new tree is
    put in place when the run starts again, however recent."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    out = tmp_path / "run"
    for suffix, text in ((".tmp", b"new"), (".old.tmp", b"old")):
        (out / f".best.{dead}.0badc0de{suffix}").mkdir(parents=True)
        (out / f".best.{dead}.0badc0de{suffix}" / "model.safetensors").write_bytes(text)
    state.prepare_run_dir(out)
    assert (out / "best" / "model.safetensors").read_bytes() == b"new"
    assert sorted(p.name for p in out.iterdir()) == ["best"]


def test_an_export_changes_weights_and_config_together(toy, tmp_path, monkeypatch):
    """best/ and final/ were written file by file: a stop after model.safetensors left new weights beside the
    config (step, validation metrics, energy band) of the earlier export, and load_model took the pair."""

    out = tmp_path / "run"
    trainer = Trainer(tiny(toy, out, steps=2))
    trainer.step = 1
    trainer.export("best")
    before = {p.name: p.read_bytes() for p in (out / "best").iterdir()}
    writes = []

    def stop_after_the_weights(path, data):
        writes.append(path.name)
        if path.name == "config.json":
            raise KeyboardInterrupt
        return real(path, data)
    real = Path.write_bytes
    monkeypatch.setattr(Path, "write_bytes", stop_after_the_weights)
    trainer.step = 2
    with torch.no_grad():
        next(trainer.ema.model.parameters()).add_(1.0)
    with pytest.raises(KeyboardInterrupt):
        trainer.export("best")
    assert writes == ["model.safetensors", "config.json"]
    assert {p.name: p.read_bytes() for p in (out / "best").iterdir()} == before   # the earlier export, whole
    trainer.held.close()


def test_resume_refuses_other_images_behind_the_same_dataset_path(toy, tmp_path):
    """Images added or removed behind the same data.dataset were accepted: the validation carve-out was redrawn
    over them, 10 of 12 validation images then being images the run had trained on."""
    import shutil

    data = Path(shutil.copytree(toy, tmp_path / "data"))
    out = tmp_path / "run"
    train(tiny(data, out, steps=2))
    shutil.copy(data / "train" / "class0" / "000.png", data / "train" / "class0" / "new.png")
    with pytest.raises(ConfigError, match="images behind data.dataset .*are not the ones the run .* began with"):
        Trainer(tiny(data, out, steps=4), resume=True, allow_config_change=True)
    (data / "train" / "class0" / "new.png").unlink()                      # the same images again: it resumes
    train(tiny(data, out, steps=4), resume=True, allow_config_change=True)
    assert torch.load(out / STATE_FILE, weights_only=True)["step"] == 4


def test_resume_refuses_other_ood_images_behind_the_same_path(toy, init_ckpt, tmp_path):
    """Stage 2 draws its OOD seeds, and holds out data.ood_holdout of them for OOD evaluation, from data.ood: other
    images behind that path redrew the held-out ones over seeds the run had trained from (and the seeds' stream
    resumed into another permutation)."""
    import shutil

    ood = tmp_path / "ood"
    ood.mkdir()
    for i, p in enumerate(sorted((toy / "train").rglob("*.png"))[:20]):
        shutil.copy(p, ood / f"{i:03d}.png")
    out = tmp_path / "run"
    ood_run = {"data.ood": str(ood), "data.ood_holdout": 4, "model.init": str(init_ckpt)}
    train(tiny(toy, out, "stage2", steps=2, **ood_run))
    shutil.copy(ood / "000.png", ood / "new.png")
    with pytest.raises(ConfigError, match="are not the ones the run .* began with"):
        Trainer(tiny(toy, out, "stage2", steps=4, **ood_run), resume=True, allow_config_change=True)
    (ood / "new.png").unlink()                                             # the same images again: it resumes
    train(tiny(toy, out, "stage2", steps=4, **ood_run), resume=True, allow_config_change=True)
    assert torch.load(out / STATE_FILE, weights_only=True)["step"] == 4
    # a seed bank of another size is refused (it would hold seeds the run drew: test_training_audit30); a state
    # written before OOD images were counted resumes
    with pytest.raises(ConfigError, match="cannot change data.ood_seed_bank"):
        Trainer(tiny(toy, out, "stage2", steps=6, **ood_run, **{"data.ood_seed_bank": 2}), resume=True,
                allow_config_change=True)
    saved = torch.load(out / STATE_FILE, weights_only=True)
    saved.pop("ood_images", None)
    torch.save(saved, out / STATE_FILE)
    train(tiny(toy, out, "stage2", steps=6, **ood_run), resume=True, allow_config_change=True)
    assert torch.load(out / STATE_FILE, weights_only=True)["step"] == 6


@pytest.mark.parametrize("change", [{"seed": 1}, {"optim.lr": 0.05}, {"attack.eps": 0.25}, {"ema_decay": 0.9}])
def test_resume_with_other_values_needs_allow_config_change(toy, finished_run, tmp_path, change):
    out = copy_run(finished_run, tmp_path / "run")
    key = next(iter(change))
    with pytest.raises(ConfigError, match="--allow-config-change") as e:
        Trainer(tiny(toy, out, steps=4, **change), resume=True)
    assert f"{key}: " in str(e.value) and "steps: 2 -> 4" in str(e.value)
    train(tiny(toy, out, steps=4, **change), resume=True, allow_config_change=True)
    assert torch.load(out / STATE_FILE, weights_only=True)["step"] == 4
    assert json.loads((out / "run_config.json").read_text())["steps"] == 4
    assert rows(out / "metrics.jsonl") == [1, 2, 3, 4]


def test_resume_free_keys_and_the_cli_flag(toy, finished_run, tmp_path, capsys):
    out = copy_run(finished_run, tmp_path / "run")
    # where the run writes logs and checkpoints, or its device, are not part of what it trains
    Trainer(tiny(toy, out, steps=2, log_every=3, ckpt_every=1, device="cpu"), resume=True)
    assert main(cli(toy, out, "stage1", "--resume", steps=3)) == 2
    assert "--allow-config-change" in capsys.readouterr().err
    assert main(cli(toy, out, "stage1", "--resume", "--allow-config-change", steps=3)) == 0
    assert main(cli(toy, tmp_path / "new", "stage1", "--allow-config-change")) == 2  # only with --resume


# --------------------------------------------------------------------------- corrupt state files (point 8)

@pytest.fixture(scope="module")
def killed_run(toy, tmp_path_factory):
    """A run killed during step 5 of 6 (ckpt_every 2): state.pt at step 4, state.prev.pt at step 2."""
    out = tmp_path_factory.mktemp("killed") / "run"
    trainer = Trainer(tiny(toy, out))

    def kill(optimizer, args, kwargs):
        if trainer.step == 4:
            raise Killed
    trainer.optimizer.register_step_post_hook(kill)
    with pytest.raises(Killed):
        trainer.fit()
    return out


class Payload:
    def __reduce__(self):
        return os.system, (f"touch {Path(os.environ['PAYLOAD_MARKER'])}",)


def _garbage(path, killed_run):
    good = (killed_run / STATE_FILE).read_bytes()
    return {
        "truncated": lambda: path.write_bytes(good[: len(good) // 2]),
        "garbage": lambda: path.write_bytes(os.urandom(4096)),
        "empty": lambda: path.write_bytes(b""),
        "dict": lambda: torch.save({}, path),
        "list": lambda: torch.save([1, 2, 3], path),
        "bad_step": lambda: torch.save({**torch.load(killed_run / STATE_FILE, weights_only=True), "step": "x"}, path),
        "wrong_shapes": lambda: torch.save({**torch.load(killed_run / STATE_FILE, weights_only=True),
                                            "model": {"conv1.weight": torch.zeros(1)}}, path),
        "directory": lambda: path.mkdir(),
        "pickle": lambda: path.write_bytes(pickle.dumps(Payload(), protocol=2)),
    }


@pytest.mark.parametrize("kind", ["truncated", "garbage", "empty", "dict", "list", "bad_step", "wrong_shapes",
                                  "directory", "pickle"])
def test_corrupt_state_names_the_file_and_the_last_good_alternative(toy, killed_run, tmp_path, kind, monkeypatch):
    out = copy_run(killed_run, tmp_path / "run")
    path = out / STATE_FILE
    marker = tmp_path / "payload-ran"
    monkeypatch.setenv("PAYLOAD_MARKER", str(marker))
    path.unlink()
    _garbage(path, killed_run)[kind]()
    with pytest.raises(StateError) as e:
        Trainer(tiny(toy, out), resume=True)
    message = str(e.value)
    assert str(path) in message and f"{out / PREVIOUS_FILE} (step 2)" in message and "mv " in message, message
    assert "\n" not in message
    assert not marker.exists()  # the pickle payload never ran (weights_only=True)
    # the named alternative works
    if path.is_dir():
        path.rmdir()
    os.replace(out / PREVIOUS_FILE, path)
    train(tiny(toy, out), resume=True)
    assert rows(out / "metrics.jsonl") == [1, 2, 3, 4, 5, 6]


def test_no_usable_state_at_all(toy, killed_run, tmp_path, capsys):
    out = copy_run(killed_run, tmp_path / "run")
    (out / STATE_FILE).write_bytes(b"junk")
    (out / PREVIOUS_FILE).write_bytes(b"junk")
    assert main(cli(toy, out, "stage1", "--resume")) == 5
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "no earlier state or checkpoint exists" in err and str(out / STATE_FILE) in err
    (out / STATE_FILE).unlink()
    (out / PREVIOUS_FILE).unlink()
    assert main(cli(toy, out, "stage1", "--resume")) == 2
    assert "nothing to resume" in capsys.readouterr().err


# --------------------------------------------------------------------------- the run directory (point 9)

@pytest.mark.parametrize("blocker,match", [
    ("", "is a file"), ("metrics.jsonl/", "is a directory"), ("final", "is a file"), ("samples", "is a file"),
    ("state.pt/", "is a directory"),
])
def test_a_file_where_a_folder_belongs_is_one_message(toy, tmp_path, blocker, match, capsys):
    out = tmp_path / "run"
    if blocker == "":
        out.write_text("not a folder")
    elif blocker.endswith("/"):
        (out / blocker).mkdir(parents=True)
    else:
        out.mkdir()
        (out / blocker).write_text("x")
    assert main(cli(toy, out / "sub" if blocker == "" else out)) == 4
    err = capsys.readouterr().err.strip()
    assert match in err and str(out) in err and "\n" not in err and "Traceback" not in err


def test_disk_full_while_saving_keeps_the_previous_state(toy, tmp_path, monkeypatch):
    real_save = torch.save
    saves = []

    def full_disk(obj, f, *a, **kw):
        saves.append(1)
        if len(saves) == 2:  # the second save: half written, then the disk is full
            f.write(b"\0" * 1000)
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_save(obj, f, *a, **kw)
    monkeypatch.setattr(state.torch, "save", full_disk)
    with pytest.raises(StorageError, match=rf"cannot write {tmp_path / STATE_FILE}: No space left on device"):
        train(tiny(toy, tmp_path))
    assert list(tmp_path.glob("*.tmp")) == []
    monkeypatch.undo()
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["step"] == 2
    train(tiny(toy, tmp_path), resume=True)  # and the run goes on from it


def test_file_size_limit_in_a_real_process(toy, tmp_path):
    """A real write failure (RLIMIT_FSIZE: EFBIG, as a full disk gives ENOSPC) in the CLI: exit 4, no .tmp."""
    def limit():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # metrics fit, state.pt (~1 MB) does not
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    proc = subprocess.run([sys.executable, "-m", "train", *cli(toy, tmp_path)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=180, preexec_fn=limit)
    assert proc.returncode == 4, proc.stderr
    assert f"cannot write {tmp_path / STATE_FILE}: File too large" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.glob("*.tmp")) == [] and not (tmp_path / STATE_FILE).exists()


# --------------------------------------------------------------------------- every step logged once (point 10)

@pytest.mark.parametrize("where", ["step", "periodic_eval", "final_eval", "final_export", "finished_save"])
def test_killed_anywhere_then_resumed_logs_every_step_once(toy, tmp_path, monkeypatch, where):
    cfg = tiny(toy, tmp_path, steps=8, ckpt_every=3, eval_every=4)
    real_eval, real_export, real_save = loop.Trainer.evaluate, loop.Trainer.export, loop.Trainer._save_state

    def evaluate(self, final=False):
        if (where == "periodic_eval" and self.step == 4) or (where == "final_eval" and final):
            real_eval(self, final)  # eval.jsonl row written, then killed before the state is saved
            raise Killed
        return real_eval(self, final)

    def export(self, name, metrics=None):
        if where == "final_export" and name == "final":
            raise Killed
        return real_export(self, name, metrics)

    def save(self, finished=False):
        if where == "finished_save" and finished:
            raise Killed
        return real_save(self, finished)
    monkeypatch.setattr(loop.Trainer, "evaluate", evaluate)
    monkeypatch.setattr(loop.Trainer, "export", export)
    monkeypatch.setattr(loop.Trainer, "_save_state", save)
    tracked: list[tuple[int, bool]] = []  # what a tracker (--track) received over both runs: (step, eval row?)

    class Tracker:
        def __init__(self, out, config):
            pass

        def log(self, row, step):
            tracked.append((step, "val" in row))

        def close(self):
            pass
    monkeypatch.setitem(tracking.BACKENDS, "test", ("json", Tracker))
    trainer = Trainer(cfg, track="test")

    def kill_in_step_8(*args):
        if where == "step" and trainer.step == 7:
            raise Killed
    trainer.optimizer.register_step_post_hook(kill_in_step_8)
    with pytest.raises(Killed):
        trainer.fit()
    monkeypatch.undo()
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write('{"step": 99, "loss": 1.')  # a line cut short by the kill
    monkeypatch.setitem(tracking.BACKENDS, "test", ("json", Tracker))
    train(cfg, resume=True, track="test")
    assert rows(tmp_path / "metrics.jsonl") == list(range(1, 9))
    assert rows(tmp_path / "eval.jsonl") == [4, 8]
    assert sorted(tracked) == sorted([*((s, False) for s in range(1, 9)), (4, True), (8, True)])  # each row once
    assert load_model(tmp_path / "final").config["training"]["step"] == 8


def test_sigkill_then_resume_logs_every_step_once(toy, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    args = cli(toy, tmp_path, steps=16, ckpt_every=3, eval_every=5)
    run = subprocess.Popen([sys.executable, "-m", "train", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while time.time() < deadline and len(rows(tmp_path / "metrics.jsonl")) < 8 and run.poll() is None:
        time.sleep(0.02)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["step"] < 16
    assert main([*args, "--resume"]) == 0
    assert rows(tmp_path / "metrics.jsonl") == list(range(1, 17))
    assert rows(tmp_path / "eval.jsonl") == [5, 10, 15, 16]


def test_resuming_a_finished_run_changes_nothing(toy, finished_run, tmp_path, capsys):
    out = copy_run(finished_run, tmp_path / "run")
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(cli(toy, out, "stage1", "--resume", steps=2)) == 0
    assert "is finished (step 2 of 2)" in capsys.readouterr().err
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert rows(out / "eval.jsonl") == [2]


# --------------------------------------------------------------------------- official-code choices (points 12, 13)

def test_weight_decay_on_every_parameter_by_default(toy, tmp_path):
    trainer = Trainer(tiny(toy, tmp_path, **{"optim.weight_decay": 5e-4}))
    [group] = trainer.optimizer.param_groups
    assert group["weight_decay"] == 5e-4 and len(group["params"]) == len(list(trainer.module.parameters()))
    bn = trainer.module.bn1
    assert any(p is bn.weight for p in group["params"]) and any(p is bn.bias for p in group["params"])

    other = Trainer(tiny(toy, tmp_path / "b", **{"optim.decay_norm_and_bias": False}))
    decay, no_decay = other.optimizer.param_groups
    assert no_decay["weight_decay"] == 0 and all(p.ndim == 1 for p in no_decay["params"])
    assert decay["weight_decay"] == 5e-4 and all(p.ndim > 1 for p in decay["params"])
    # the decay acts on BN affine parameters: with zero gradients, SGD shrinks them (only) by default
    for t in (trainer, other):
        for p in t.module.parameters():
            p.grad = torch.zeros_like(p)
    before, before_other = bn.weight.detach().clone(), other.module.bn1.weight.detach().clone()
    trainer.optimizer.step()
    other.optimizer.step()
    assert (bn.weight.abs() < before.abs()).all() and torch.equal(other.module.bn1.weight, before_other)


def test_val_size_zero_trains_on_every_image_and_keeps_the_last_ema(toy, tmp_path):
    trainer = Trainer(tiny(toy, tmp_path, **{"data.val_size": 0, "eval_every": 3}))
    assert len(trainer.train_set) == 120 and len(trainer.val_set) == 0
    final = trainer.fit()
    best = load_model(tmp_path / "best")
    last = load_model(final)
    assert best.config["training"]["selection"] == last.config["training"]["selection"] == "last (no validation)"
    for (k, a), b in zip(best.state_dict().items(), last.state_dict().values()):
        assert torch.equal(a, b), k
    assert set(last.config["energy_quantiles"]) >= {"0.05", "0.5", "0.95"}  # of training images


# --------------------------------------------------------------------------- more kill points and bad files

def test_sigterm_while_setting_up_stops_after_the_first_step(toy, tmp_path, monkeypatch):
    real = loop.load_train_val

    def slow_data(*args, **kw):  # the signal arrives while the data loads (minutes on ImageNet)
        os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kw)
    monkeypatch.setattr(loop, "load_train_val", slow_data)
    with pytest.raises(SystemExit) as e:
        train(tiny(toy, tmp_path))
    assert e.value.code == 128 + signal.SIGTERM
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["step"] == 1
    assert signal.getsignal(signal.SIGTERM) is signal.SIG_DFL or callable(signal.getsignal(signal.SIGTERM))


@pytest.mark.parametrize("kind", ["truncated", "garbage"])
def test_a_broken_dataset_archive_is_one_line(toy, tmp_path, kind, capsys):
    import tarfile

    archive = tmp_path / "data.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(toy / "train", arcname="data/train")
    data = archive.read_bytes()
    archive.write_bytes(data[: len(data) // 2] if kind == "truncated" else os.urandom(2000))
    assert main(cli(toy, tmp_path / "run", **{"data.dataset": str(archive)})) == 2
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert line.startswith(f"error: cannot read the archive {archive}: ")


def test_curves_skip_lines_cut_short(tmp_path):
    from dat_core.training.curves import plot_curves

    (tmp_path / "metrics.jsonl").write_text('{"step": 1, "loss": 2.0}\n{"step": 2, "loss": 1.5}\n{"step": 3, "lo')
    assert plot_curves(tmp_path / "metrics.jsonl", tmp_path / "curves.png").is_file()


def test_a_state_whose_model_cannot_be_rebuilt(toy, killed_run, tmp_path):
    out = copy_run(killed_run, tmp_path / "run")
    saved = torch.load(out / STATE_FILE, weights_only=True)
    torch.save({**saved, "model_config": {"arch": "wrn-10-1"}}, out / STATE_FILE)
    with pytest.raises(StateError, match=rf"{out / STATE_FILE}.*{out / PREVIOUS_FILE} \(step 2\)"):
        Trainer(tiny(toy, out), resume=True)


@pytest.mark.parametrize("kind", ["truncated_weights", "garbage_config", "missing"])
def test_a_broken_stage1_checkpoint_is_one_line(toy, init_ckpt, tmp_path, kind, capsys):
    bad = copy_run(init_ckpt, tmp_path / "init")
    if kind == "truncated_weights":
        data = (bad / "model.safetensors").read_bytes()
        (bad / "model.safetensors").write_bytes(data[: len(data) // 2])
    elif kind == "garbage_config":
        (bad / "config.json").write_text("{not json")
    else:
        bad = tmp_path / "nowhere"
    assert main(cli(toy, tmp_path / "run", "stage2", **{"model.init": str(bad)})) == 2
    err = capsys.readouterr().err
    [line] = [line for line in err.splitlines() if "error" in line.lower() or "Traceback" in line]
    assert line.startswith("error: ") and str(bad) in line


@pytest.mark.parametrize("override,says", [
    ({"batch_size": 512}, "batch_size=512 is larger than the 108 training images"),
    ({"data.val_size": 120}, "data.val_size=120 leaves no training images"),
    ({"device": "mps"}, "device=mps"),
])
def test_values_that_only_the_data_or_machine_can_refute_are_named(toy, tmp_path, override, says, capsys):
    if override.get("device") == "mps" and torch.backends.mps.is_available():
        pytest.skip("this machine has MPS")
    assert main(cli(toy, tmp_path / "run", **override)) == 2
    assert says in capsys.readouterr().err


# --------------------------------------------------------------------------- state holds plain data only

def test_a_run_on_cached_archive_data_resumes(toy, tmp_path):
    """The second load of an archive is a cache hit (class names read back from .npz); a state saved
    then must still load with weights_only=True, or no run on cached data could ever be resumed."""
    import tarfile
    archive = tmp_path / "toy.tar"
    with tarfile.open(archive, "w") as tar:
        tar.add(toy / "train", arcname="train")
    kw = {"data.dataset": str(archive), "data.cache_dir": str(tmp_path / "cache")}
    train(tiny(toy, tmp_path / "first", steps=1, **kw))  # fills the cache
    train(tiny(toy, tmp_path / "run", steps=2, **kw))  # reads it
    saved = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)
    assert [type(n) for n in saved["model_config"]["class_names"]] == [str] * 3
    train(tiny(toy, tmp_path / "run", steps=4, **kw), resume=True, allow_config_change=True)
    assert rows(tmp_path / "run" / "metrics.jsonl") == [1, 2, 3, 4]


def test_numpy_values_are_saved_as_plain_python(tmp_path):
    import numpy as np
    path = tmp_path / "s.pt"
    state.atomic_save({"step": np.int64(3), "names": [np.str_("a"), "b"], "lr": (np.float32(0.5),),
                       "flag": np.bool_(True), "w": torch.ones(2)}, path)
    loaded = torch.load(path, weights_only=True)
    assert loaded["step"] == 3 and type(loaded["step"]) is int
    assert [type(n) for n in loaded["names"]] == [str, str] and type(loaded["lr"][0]) is float
    assert loaded["flag"] is True and torch.equal(loaded["w"], torch.ones(2))


def test_a_state_that_could_not_be_resumed_is_never_written(tmp_path):
    import numpy as np
    path = tmp_path / "s.pt"
    state.atomic_save({"step": 1}, path)
    for bad in ({"step": 2, "x": object()}, {"step": 2, "a": np.zeros(3)}, {"step": 2, "d": {"k": {1, 2}}}):
        with pytest.raises(StorageError, match="cannot be resumed"):
            state.atomic_save(bad, path)
        assert torch.load(path, weights_only=True) == {"step": 1}
        assert not path.with_name(path.name + ".tmp").exists()


def test_no_prefetch_thread_outlives_a_run(toy, tmp_path):
    """A finished (or failed) run joins its batch streams' prefetch threads: a daemon thread still inside a torch
    op when the interpreter exits aborts the process (a finished DDP rank died with SIGABRT that way)."""
    import threading

    from dat_core.data.streams import PREFETCH_THREAD
    earlier = set(threading.enumerate())  # other tests' streams, iterated by hand, may still be running

    def started_here():
        return [t for t in threading.enumerate() if t.name == PREFETCH_THREAD and t not in earlier]
    train(tiny(toy, tmp_path / "ok", steps=2))
    assert not started_here()
    with pytest.raises(NonFiniteError):
        train(tiny(toy, tmp_path / "bad", steps=4, **{"optim.lr": 1e30}))
    assert not started_here()


def test_a_second_run_on_a_busy_run_directory_is_refused(toy, tmp_path, capsys):
    """Two processes on one out_dir used to write one state.pt and cut each other's logs: the directory is
    claimed by the first run; a second (fresh or --resume) is one line, and the first's work stays whole."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    args = cli(toy, tmp_path, steps=100000, ckpt_every=2)
    first = subprocess.Popen([sys.executable, "-m", "train", *args], cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while time.time() < deadline and not (tmp_path / STATE_FILE).is_file() and first.poll() is None:
            time.sleep(0.02)
        assert (tmp_path / STATE_FILE).is_file()
        capsys.readouterr()
        for extra in ((), ("--resume",)):
            assert main([*args, *extra]) == 2
            err = capsys.readouterr().err
            assert "in use by another training run" in err and err.count("\n") == 1
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=60)
    step = torch.load(tmp_path / STATE_FILE, weights_only=True)["step"]
    assert main([*cli(toy, tmp_path, steps=step + 2, ckpt_every=2), "--resume", "--allow-config-change"]) == 0
    assert rows(tmp_path / "metrics.jsonl") == list(range(1, step + 3))   # each step logged once


def test_a_fresh_run_does_not_append_to_the_logs_of_a_run_that_saved_no_state(toy, tmp_path):
    """A run killed before its first state.pt leaves logged rows no state covers; a fresh run in that directory
    used to append to them (every step logged twice)."""
    with pytest.raises(Killed):
        trainer = Trainer(tiny(toy, tmp_path, steps=6, ckpt_every=4))
        trainer._save_state = lambda finished=False: (_ for _ in ()).throw(Killed())
        trainer.fit()
    assert rows(tmp_path / "metrics.jsonl") == [1, 2, 3, 4] and not (tmp_path / STATE_FILE).exists()
    train(tiny(toy, tmp_path, steps=6, ckpt_every=4))
    assert rows(tmp_path / "metrics.jsonl") == list(range(1, 7))


def test_a_signal_during_the_final_evaluation_stops_it_and_resume_finishes(toy, tmp_path, monkeypatch):
    """SIGTERM/SIGINT were only noted during the final evaluation (minutes on a real validation split): the run
    went on to the end. The last step is saved by then: it stops at once, and --resume evaluates again."""
    from dat_core.training import periodic_eval

    real, calls = periodic_eval.evaluate_run, []

    def interrupted_eval(*args, **kw):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(30)   # a long evaluation: the signal must cut it short
            pytest.fail("the final evaluation ran on after SIGINT")
        return real(*args, **kw)

    monkeypatch.setattr(periodic_eval, "evaluate_run", interrupted_eval)
    started = time.time()
    with pytest.raises(SystemExit) as e:
        train(tiny(toy, tmp_path))
    assert e.value.code == 128 + signal.SIGINT and time.time() - started < 25
    assert not torch.load(tmp_path / STATE_FILE, weights_only=True)["finished"] and not (tmp_path / "final").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler          # the caller's handler is back
    train(tiny(toy, tmp_path), resume=True)
    assert torch.load(tmp_path / STATE_FILE, weights_only=True)["finished"] and (tmp_path / "final").is_dir()
    assert rows(tmp_path / "eval.jsonl") == [6]


def test_a_restart_clears_every_temporary_a_killed_run_left(tmp_path):
    """A restart minutes after a SIGKILL kept the temporaries of run_config.json and samples/stepN.png (each
    written once, so never removed by a later write of the same name)."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True).stdout.strip()
    out = tmp_path / "run"
    left = [out / f".run_config.json.{dead}.0badc0de.tmp", out / "samples" / f".step0000100.png.{dead}.0badc0de.tmp",
            out / f"state.pt.{dead}.tmp"]
    for p in left:
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"half")
    state.prepare_run_dir(out)
    assert not any(p.exists() for p in left)


def _record_fsyncs(monkeypatch) -> list[str]:
    """The paths fsynced from now on, in order (a power cut cannot be made here; what reaches the disk can be seen)."""
    synced = []
    real = os.fsync

    def fsync(fd):
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        return real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    return synced


def test_a_saved_state_is_durable_on_disk_not_only_in_the_page_cache(tmp_path, monkeypatch):
    """The file was fsynced, its rename into place was not: after a power cut the folder could still name the old
    state.pt (or none). The folder is fsynced after the rename too."""
    synced = _record_fsyncs(monkeypatch)
    state.atomic_save({"step": 1}, tmp_path / "state.pt")
    assert synced[-1] == str(tmp_path) and any(p.endswith(".tmp") for p in synced[:-1])


def test_a_saved_checkpoint_is_durable_on_disk_not_only_in_the_page_cache(tmp_path, monkeypatch):
    """state.pt was fsynced, but the checkpoints (best/, final, `save_model`) were only renamed into place: after a
    power cut the folder could name a config.json and model.safetensors of zero bytes. Their data, their folder and
    the folder they were renamed into are fsynced now."""
    from dat_core.checkpoint import save_model
    from dat_core.models import build_model

    synced = _record_fsyncs(monkeypatch)
    (tmp_path / "ckpt").mkdir()
    (tmp_path / "ckpt" / ".gitattributes").write_text("*.safetensors filter=lfs\n")   # written file by file
    save_model(build_model("wrn-10-1"), tmp_path / "ckpt")
    for name in ("model.safetensors", "config.json"):
        written = [i for i, p in enumerate(synced) if p.startswith(str(tmp_path / "ckpt" / f".{name}."))]
        assert written and synced[written[0] + 1] == str(tmp_path / "ckpt"), synced   # data, then the rename
    synced.clear()
    save_model(build_model("wrn-10-1"), tmp_path / "best")   # a new folder (training's best/): written whole
    assert synced[-1] == str(tmp_path) and (tmp_path / "best" / "model.safetensors").is_file()
    assert any(p.endswith(".tmp") for p in synced[:-1])   # the new tree itself, before it was renamed
