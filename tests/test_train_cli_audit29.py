"""`python -m train` command lines, found by audit 29: a resumed run continues its tracker's run (not a new one), and
`seeds` carves its bank from the images the run in out_dir actually held out. Tiny runs: wrn-10-1, 16 px, CPU."""

import importlib.machinery
import json
import shutil
import sys
import types
from pathlib import Path

import pytest
import torch

from dat_core import build_model, save_model
from dat_core.data.seeds import fit_class_gaussians, load_class_gaussians, load_seed_bank
from dat_core.training.config import load_config
from dat_core.training.data import load_train_val, ood_parts
from train.__main__ import main

NAMES = ["class0", "class1", "class2"]


def _run(toy, out, *extra, steps=2):
    return ["stage1", f"out_dir={out}", f"data.dataset={toy}", "data.image_size=16", "data.val_size=12",
            "model.arch=wrn-10-1", f"steps={steps}", "batch_size=8", "log_every=1", "eval_every=0",
            "eval_size=12", "attack.steps=1", "sample_grid=false", "autocast=false", *extra]


def _rows(images) -> set[bytes]:
    return {bytes(x.numpy().tobytes()) for x in images[:]}


# ---------------------------------------------------------------- trackers continue their run on --resume

class _Run:
    def __init__(self, **kw):
        self.id, self.name = kw.get("id") or "fresh-id", kw.get("name")

    def log(self, row, step=None):
        pass

    def finish(self):
        pass


@pytest.fixture
def fake_trackers(monkeypatch):
    """Stand-ins for the wandb and trackio packages (neither is a dependency): they record what `init` was given."""
    calls = {"wandb": [], "trackio": []}

    def package(name):
        module = types.ModuleType(name)
        module.__spec__ = importlib.machinery.ModuleSpec(name, None)
        module.init = lambda **kw: calls[name].append(kw) or _Run(**kw)
        module.log = lambda row, step=None: None
        module.finish = lambda: None
        monkeypatch.setitem(sys.modules, name, module)
    package("wandb")
    package("trackio")
    return calls


@pytest.mark.parametrize("tracker", ["wandb", "trackio"])
def test_a_resumed_run_continues_its_tracker_run(toy, tmp_path, fake_trackers, tracker):
    """wandb.init(resume="allow") without an id opened a new wandb run on every --resume; trackio resumed any run
    of the same folder name, so a new run in another runs/try continued an old one's charts."""
    out = tmp_path / "runs" / "try"
    assert main([*_run(toy, out), "--track", tracker]) == 0
    assert main([*_run(toy, out, steps=3), "--resume", "--allow-config-change", "--track", tracker]) == 0
    first, resumed = fake_trackers[tracker]
    key = "id" if tracker == "wandb" else "name"
    assert first.get(key) and resumed.get(key) == first[key] and resumed["resume"] == "allow"
    other = tmp_path / "elsewhere" / "runs" / "try"   # a new run of the same name: not a continuation
    assert main([*_run(toy, other), "--track", tracker]) == 0
    new = fake_trackers[tracker][2]
    if tracker == "wandb":
        assert new.get("id") != first["id"]
    else:
        assert new["resume"] == "never"


# ---------------------------------------------------------------- seeds: the run's carve-out, not the config's seed

def _stage2_toml(toy, init, out, seed: int) -> str:
    return (f'stage = "stage2"\nseed = {seed}\nout_dir = "{out}"\nsteps = 2\nbatch_size = 8\nlog_every = 1\n'
            f'eval_every = 0\neval_size = 12\nsample_grid = false\nautocast = "false"\n'
            f'[model]\narch = "wrn-10-1"\ninit = "{init}"\n[attack]\nsteps = 1\n'
            f'[contrastive]\nwindow_images = 8\nmax_steps = 3\n'
            f'[data]\ndataset = "{toy}"\nimage_size = 16\nval_size = 12\nood = "{toy / "ood"}"\n'
            f'ood_holdout = 6\nood_seed_bank = 10\n')


def test_seeds_carves_the_bank_the_run_in_out_dir_held_out_after_a_seed_change(toy, init, tmp_path, capsys):
    """A run resumed with a new seed keeps its carve-outs (the state saves their seed), but `train seeds` carved the
    bank with the config's new seed: bank images the run had drawn as contrastive seeds."""
    out, cfg = tmp_path / "s2", tmp_path / "cfg.toml"
    cfg.write_text(_stage2_toml(toy, init, out, seed=3))
    assert main(["stage2", "--config", str(cfg)]) == 0
    cfg.write_text(_stage2_toml(toy, init, out, seed=4).replace("steps = 2", "steps = 3", 1))
    assert main(["stage2", "--config", str(cfg), "--resume", "--allow-config-change"]) == 0
    bank, gauss = tmp_path / "bank.safetensors", tmp_path / "g.safetensors"
    capsys.readouterr()
    assert main(["seeds", "--config", str(cfg), "--bank-out", str(bank), "--gaussians-out", str(gauss),
                 "--resolution", "4"]) == 0
    said = capsys.readouterr().err
    run_seeds, _, run_bank = ood_parts(load_config(str(cfg)), 3)   # what the run drew from, and held out
    written = _rows(load_seed_bank(bank).images)
    assert written == _rows(run_bank.images) and not written & _rows(run_seeds.images)
    assert "(seed 3)" in load_seed_bank(bank).metadata["how"] and "seed 3" in said
    expected = fit_class_gaussians(load_train_val(load_config(str(cfg)), seed=3)[0], 4)
    torch.testing.assert_close(load_class_gaussians(gauss).mean, expected.mean.float())
    assert json.loads((out / "run_config.json").read_text())["seed"] == 4


# ---------------------------------------------------------------- calibrate never writes into its inputs

@pytest.mark.parametrize("where", ["data", "model"])
def test_calibrate_never_writes_its_checkpoint_into_an_input(toy, tmp_path, capsys, where):
    """`calibrate --out DATA/train/cal` wrote config.json + model.safetensors into the class-folder data: an empty
    class `cal` that every later eval, calibrate and training run on that data refused. Into the model folder, a
    second checkpoint that `push` would upload with it. `eval` and `seeds` refused such an output already."""
    data = Path(shutil.copytree(toy / "train", tmp_path / "data" / "train")).parent   # the shared toy stays clean
    model = save_model(build_model("wrn-10-1", num_classes=3, image_size=16, class_names=NAMES), tmp_path / "m")
    out = (data / "train" / "cal") if where == "data" else (model / "cal")
    assert main(["calibrate", "--model", str(model), "--data", str(data), "--val-size", "12", "--off",
                 "--out", str(out)]) == 2
    assert "an input" in capsys.readouterr().err and not out.exists()


def test_calibrate_still_writes_into_the_model_folder_or_beside_it(toy, tmp_path):
    model = save_model(build_model("wrn-10-1", num_classes=3, image_size=16, class_names=NAMES), tmp_path / "m")
    for out in (model, tmp_path / "calibrated"):
        assert main(["calibrate", "--model", str(model), "--data", str(toy), "--val-size", "12", "--off",
                     "--out", str(out)]) == 0
        assert "energy_quantiles" in json.loads((out / "config.json").read_text())


def test_seeds_never_writes_over_the_state_it_reads(toy, init, tmp_path, capsys):
    out, cfg = tmp_path / "s2", tmp_path / "cfg.toml"
    cfg.write_text(_stage2_toml(toy, init, out, seed=3))
    assert main(["stage2", "--config", str(cfg), "steps=1"]) == 0
    before = (out / "state.pt").read_bytes()
    assert main(["seeds", "--config", str(cfg), "--bank-out", str(out / "state.pt"), "--gaussians-out", ""]) == 2
    assert "an input" in capsys.readouterr().err and (out / "state.pt").read_bytes() == before


def test_a_run_begun_before_tracker_runs_were_recorded_still_continues_its_trackio_run(toy, tmp_path, fake_trackers):
    """A run whose folder has a state but no tracker_run.json (begun by an earlier version) resumed with
    resume="never": trackio opened a new run instead of the one it had been charting."""
    out = tmp_path / "runs" / "old"
    assert main([*_run(toy, out), "--track", "trackio"]) == 0
    (out / "tracker_run.json").unlink()
    assert main([*_run(toy, out, steps=3), "--resume", "--allow-config-change", "--track", "trackio"]) == 0
    resumed = fake_trackers["trackio"][1]
    assert resumed["name"] == "old" and resumed["resume"] == "allow"
