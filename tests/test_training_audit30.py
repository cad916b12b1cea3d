"""Training, data and `python -m train` defects found by audit 30: the seed bank never holds an image the run trained
from (not after a resume, not after `train seeds` with other carve-outs, not when only state.prev.pt is left), a
fresh run never overwrites what a killed run left, and blank paths or impossible sizes are refused before any work.
Tiny runs: wrn-10-1, 16 px, fp32, CPU."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from dat_core import build_model, save_model
from dat_core.data.seeds import load_seed_bank
from dat_core.training.config import ConfigError, flat, load_config
from dat_core.training.data import ood_parts
from dat_core.training.loop import STATE_FILE, Trainer, train
from dat_core.training.state import PREVIOUS_FILE
from train.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
NAMES = ["class0", "class1", "class2"]


def _values(toy, out, init, **kw):
    v = {"out_dir": str(out), "stage": "stage2", "data.dataset": str(toy), "data.image_size": 16, "data.val_size": 12,
         "data.ood": str(toy / "ood"), "model.arch": "wrn-10-1", "model.init": str(init), "steps": 2,
         "batch_size": 8, "log_every": 1, "ckpt_every": 100, "eval_every": 0, "eval_size": 12,
         "eval_attack_steps": 1, "attack.steps": 1, "sample_grid": False, "channels_last": False,
         "contrastive.window_images": 8, "contrastive.max_steps": 3, "autocast": "false"}
    return {**v, **kw}


def _toml(toy, init, out, seed: int, bank: int = 10, steps: int = 2) -> str:
    return (f'stage = "stage2"\nseed = {seed}\nout_dir = "{out}"\nsteps = {steps}\nbatch_size = 8\nlog_every = 1\n'
            f'eval_every = 0\neval_size = 12\nsample_grid = false\nautocast = "false"\n'
            f'[model]\narch = "wrn-10-1"\ninit = "{init}"\n[attack]\nsteps = 1\n'
            f'[contrastive]\nwindow_images = 8\nmax_steps = 3\n'
            f'[data]\ndataset = "{toy}"\nimage_size = 16\nval_size = 12\nood = "{toy / "ood"}"\n'
            f'ood_holdout = 6\nood_seed_bank = {bank}\n')


def _rows(images) -> set[bytes]:
    return {bytes(x.numpy().tobytes()) for x in images[:]}


# ---------------------------------------------------------------- the seed bank stays out of training

@pytest.mark.parametrize("first, then", [(0, 10), (10, 4)])
def test_a_seed_bank_changed_on_resume_is_refused(toy, init, tmp_path, first, then):
    """The bank is carved out of the contrastive seeds: raised on resume it took images the run had already drawn as
    seeds, lowered it gave bank images back to the seeds, so a bank written before was no longer unseen."""
    values = _values(toy, tmp_path / "run", init, **{"data.ood_seed_bank": first})
    train(load_config(None, **values))
    with pytest.raises(ConfigError, match=rf"cannot change data.ood_seed_bank: {first} -> {then}"):
        Trainer(load_config(None, **{**values, "steps": 3, "data.ood_seed_bank": then}), resume=True,
                allow_config_change=True)


def test_seeds_refuses_carve_outs_other_than_the_run_in_out_dir(toy, init, tmp_path, capsys):
    """A run trained with no bank, then `train seeds ... data.ood_seed_bank=10` on its out_dir: the bank was ten
    images that run had drawn as contrastive seeds."""
    out, cfg = tmp_path / "s2", tmp_path / "cfg.toml"
    cfg.write_text(_toml(toy, init, out, seed=3, bank=0))
    assert main(["stage2", "--config", str(cfg)]) == 0
    bank = tmp_path / "bank.safetensors"
    capsys.readouterr()
    assert main(["seeds", "--config", str(cfg), "data.ood_seed_bank=10", "--bank-out", str(bank),
                 "--gaussians-out", ""]) == 2
    err = capsys.readouterr().err
    assert "data.ood_seed_bank" in err and "0" in err and not bank.exists()


def test_seeds_reads_the_carve_outs_of_a_run_left_with_only_state_prev(toy, init, tmp_path, capsys):
    """A run resumed with a new seed keeps its carve-outs' seed in its state; with state.pt gone and state.prev.pt
    left (which --resume points to), `train seeds` carved the bank with the config's new seed, over images the run
    drew as contrastive seeds."""
    out, cfg = tmp_path / "s2", tmp_path / "cfg.toml"
    cfg.write_text(_toml(toy, init, out, seed=3))
    assert main(["stage2", "--config", str(cfg)]) == 0
    cfg.write_text(_toml(toy, init, out, seed=4, steps=3))
    assert main(["stage2", "--config", str(cfg), "--resume", "--allow-config-change"]) == 0
    (out / STATE_FILE).replace(out / PREVIOUS_FILE)
    bank = tmp_path / "bank.safetensors"
    assert main(["seeds", "--config", str(cfg), "--bank-out", str(bank), "--gaussians-out", ""]) == 0
    run_seeds, _, run_bank = ood_parts(load_config(str(cfg)), 3)
    written = _rows(load_seed_bank(bank).images)
    assert written == _rows(run_bank.images) and not written & _rows(run_seeds.images)


def test_seeds_reads_the_data_seed_without_loading_the_weights(toy, tmp_path):
    """Only the data seed and the config are wanted from state.pt, which holds the weights, optimizer and chains
    (GBs on a large model): all of it was read into memory."""
    out = tmp_path / "run"
    out.mkdir()
    cfg = load_config(None, **{"out_dir": str(out), "data.dataset": str(toy)})
    big = torch.zeros(48 * 2 ** 20)   # 192 MiB of weights
    torch.save({"step": 1, "config": cfg.to_dict(), "world_size": 1, "model": {"w": big}, "ema": {},
                "optimizer": {}, "stage": "stage1", "best": {}, "ranks": [], "data_seed": 7}, out / STATE_FILE)
    del big
    peak = "int(next(l for l in open('/proc/self/status') if l.startswith('VmHWM')).split()[1])"  # KiB, this exec
    script = ("from dat_core.training.config import load_config\n"
              "from train.seeds_cli import run_data_seed\n"
              f"cfg = load_config(None, out_dir={str(out)!r}, **{{'data.dataset': {str(toy)!r}}})\n"
              f"before = {peak}\n"
              f"seed = run_data_seed(cfg)\n"
              f"print(seed, {peak} - before)\n")
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    seed, grown_kib = map(int, done.stdout.split())
    assert seed == 7 and grown_kib < 64 * 1024


# ---------------------------------------------------------------- a fresh run never overwrites a killed one

def test_a_fresh_run_refuses_a_folder_with_only_state_prev(toy, init, tmp_path):
    """state.pt gone, state.prev.pt left (the last good state --resume names): a run started without --resume
    trained over it, cut its logs to nothing and, at its second save, replaced state.prev.pt."""
    values = _values(toy, tmp_path / "run", init, steps=2, ckpt_every=1)
    train(load_config(None, **values))
    out = tmp_path / "run"
    (out / STATE_FILE).replace(out / PREVIOUS_FILE)
    before, logs = (out / PREVIOUS_FILE).read_bytes(), (out / "metrics.jsonl").read_text()
    with pytest.raises(ConfigError, match=f"already holds a run.*{PREVIOUS_FILE}.*--resume"):
        train(load_config(None, **values))
    assert (out / PREVIOUS_FILE).read_bytes() == before and (out / "metrics.jsonl").read_text() == logs


# ---------------------------------------------------------------- blank paths in the config

@pytest.mark.parametrize("key", ["out_dir", "data.dataset", "data.root", "data.ood", "data.train_split",
                                 "data.cache_dir", "model.init"])
@pytest.mark.parametrize("blank", ["", "  ", "\t"])
def test_blank_paths_in_the_config_are_refused_by_key(key, blank):
    """`data.root=` (or "  " in a TOML file) meant the current folder: CIFAR archives downloaded into it; a blank
    cache_dir or init named a folder called "  "; a blank dataset or ood failed later as a missing folder."""
    optional = key in ("data.train_split", "data.cache_dir", "model.init")   # "" means none there
    if optional and not blank:
        assert flat(load_config(None, **{key: blank}))[key] == ""
        return
    with pytest.raises(ConfigError, match=rf"{key}: .*blank"):
        load_config(None, **{key: blank})


def test_a_blank_root_override_is_refused_on_the_command_line(tmp_path, capsys):
    assert main(["stage1", f"out_dir={tmp_path / 'run'}", "data.root="]) == 2
    assert "data.root" in capsys.readouterr().err and not (tmp_path / "run").exists()


@pytest.mark.parametrize("key", ["data.clf_augment", "data.ood_augment", "data.gen_augment"])
def test_autoaugment_without_kornia_is_refused_with_the_config(monkeypatch, key):
    """AutoAugment's equalize imports kornia at its first draw, so a packaged install without kornia
    (`pip install .`) failed mid-training; the config now says what to install before any work."""
    monkeypatch.setitem(sys.modules, "kornia", None)   # as if it were not installed
    with pytest.raises(ConfigError, match=rf"{key}: .*needs kornia.*pip install"):
        load_config(None, **{key: "autoaugment_cutout"})
    assert flat(load_config(None, **{key: "crop_flip"}))[key] == "crop_flip"


@pytest.mark.parametrize("split", ["test", "TEST", " test "])
def test_training_on_the_test_split_is_refused(split):
    """`data.train_split=test` trained on the test split (CIFAR's test archive or a test/ folder) without a word, and
    `train eval --split test` then reported training accuracy."""
    with pytest.raises(ConfigError, match="data.train_split: .*test split"):
        load_config(None, **{"data.train_split": split})
    assert flat(load_config(None, **{"data.train_split": "train2"}))["data.train_split"] == "train2"


# ---------------------------------------------------------------- calibrate: impossible sizes before any work

@pytest.mark.parametrize("value", [str(10 ** 12), str(2 ** 64)])
def test_calibrate_refuses_a_huge_val_size_before_loading_anything(tmp_path, capsys, value):
    """--val-size 10**12 was refused only after the model and every image of --data had loaded."""
    broken = tmp_path / "model"
    broken.mkdir()
    (broken / "config.json").write_text("{")   # loading it would say so: the refusal must come first
    assert main(["calibrate", "--model", str(broken), "--data", str(tmp_path / "nowhere"), "--val-size", value]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--val-size must be in" in errors[0]


def test_calibrate_still_fits_with_a_val_size_in_range(toy, tmp_path):
    model = save_model(build_model("wrn-10-1", num_classes=3, image_size=16, class_names=NAMES), tmp_path / "m")
    assert main(["calibrate", "--model", str(model), "--data", str(toy), "--val-size", "12", "--off"]) == 0
    assert "energy_quantiles" in json.loads((model / "config.json").read_text())


def _recording(tmp_path, record) -> Path:
    model = save_model(build_model("wrn-10-1", num_classes=3, image_size=16, class_names=NAMES), tmp_path / "m")
    config = json.loads((model / "config.json").read_text())
    config["training"] = {"carve_outs": [record]}
    (model / "config.json").write_text(json.dumps(config))
    return model


def test_calibrate_refuses_the_default_carve_out_of_a_run_that_held_none_out(toy, tmp_path, capsys):
    """A checkpoint of a run with data.val_size=0 (it trained on every image) records val_size 0: calibrate took it
    as "no carve-out" and fitted the temperature on the whole train split, every image of which the model trained
    on. An explicit --val-size was refused already ("held out no images")."""
    model = _recording(tmp_path, {"split": "train", "val_size": 0, "seed": 0})
    before = (model / "config.json").read_bytes()
    assert main(["calibrate", "--model", str(model), "--data", str(toy)]) == 2
    err = capsys.readouterr().err
    assert "held out no images of the train split" in err and (model / "config.json").read_bytes() == before


@pytest.mark.parametrize("record", [{"val_size": "12", "seed": 0}, {"val_size": 12, "seed": -1},
                                    {"val_size": True, "seed": 0}, {"val_size": 12, "seed": "x"}, {"seed": 0}])
def test_calibrate_refuses_a_malformed_recorded_carve_out_in_one_line(toy, tmp_path, capsys, record):
    """A recorded carve-out is read like any input: a val_size of "12" ended in a TypeError traceback."""
    model = _recording(tmp_path, {"split": "train", **record})
    assert main(["calibrate", "--model", str(model), "--data", str(toy)]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "--val-size" in errors[0] and "--seed" in errors[0]
