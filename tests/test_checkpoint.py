"""Checkpoint dir format, loading errors, and import of official (DataParallel / EMA-wrapped) state dicts."""

import argparse
import json
import os
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from dat_core import loading
from dat_core.checkpoint import check_state_dict, load_checkpoint_dir, model_card, save_model
from dat_core.loading import load_model
from dat_core.models import build_model
from dat_core.official import import_official

X = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))


def logits(model):
    with torch.no_grad():
        return model(X)


def random_model(seed: int = 0, **config):
    """A wrn-10-1 in eval mode whose BN statistics and affine parameters are all non-trivial (no training)."""
    torch.manual_seed(seed)
    model = build_model("wrn-10-1", **config)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
                m.num_batches_tracked.fill_(seed + 7)
    return model.eval()


@pytest.fixture(scope="module")
def tiny_model():
    return random_model()


def test_save_load_round_trip_keeps_logits_config_and_card(tmp_path):
    model = random_model(1, num_classes=3, class_names=["a", "b", "c"], mean=(0.5, 0.4, 0.3),
                         std=(0.2, 0.25, 0.3), energy_quantiles={"0.05": -3.5, "0.95": 1.25})
    card = "---\nlicense: mit\ntags: [adversarial-robustness]\n---\n# tiny\n"
    out = save_model(model, tmp_path / "ckpt", card=card)

    assert sorted(p.name for p in out.iterdir()) == ["README.md", "config.json", "model.safetensors"]  # no temp files
    umask = os.umask(0)
    os.umask(umask)
    assert {p.stat().st_mode & 0o777 for p in out.iterdir()} == {0o666 & ~umask}  # shareable, not 0600
    assert json.loads((out / "config.json").read_text()) == model.config
    loaded = load_model(str(out))
    assert not loaded.training
    assert loaded.config == model.config
    assert torch.equal(logits(loaded), logits(model))  # weights, BN statistics and normalization all restored
    assert model_card(out) == card


def test_saved_config_records_the_code_version(tmp_path):
    """config.json says which code wrote it: the package version and, in a git checkout, the commit."""
    import re
    import subprocess

    from dat_core import __version__

    out = save_model(random_model(1), tmp_path / "ckpt")
    stamp = json.loads((out / "config.json").read_text())["code_version"]
    assert stamp["version"] == __version__
    root = Path(__file__).resolve().parent.parent
    head = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout (CI's included); an sdist copy has no commit to record
        assert re.fullmatch(r"[0-9a-f]{40}(-dirty)?", stamp["git_sha"]) and stamp["git_sha"][:40] == head.stdout.strip()
    assert load_model(out).config["code_version"] == stamp
    with pytest.raises(ValueError, match="only applies to Hub repo ids"):
        load_model(out, revision="main")


def test_save_overwrites_in_place_and_device_argument(tiny_model, tmp_path):
    save_model(random_model(1), tmp_path)
    save_model(tiny_model, tmp_path)
    assert model_card(tmp_path) is None
    assert torch.equal(logits(load_model(tmp_path, device="cpu")), logits(tiny_model))


@pytest.mark.parametrize("name", ["config.json", "model.safetensors"])
def test_missing_file_is_named(tiny_model, tmp_path, name):
    save_model(tiny_model, tmp_path)
    (tmp_path / name).unlink()
    with pytest.raises(FileNotFoundError, match=f"missing {name}"):
        load_model(tmp_path)


def test_config_without_arch_is_rejected(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"num_classes": 10}))
    with pytest.raises(ValueError, match="lacks arch"):
        load_model(tmp_path)


def test_mismatched_weights_name_keys_and_shapes(tiny_model, tmp_path):
    save_model(tiny_model, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "num_classes": 5, "class_names": list("abcde")}))
    with pytest.raises(ValueError, match=r"2 shape mismatches \(fc\.weight checkpoint \(10, 64\) vs model \(5, 64\)"):
        load_model(tmp_path)

    (tmp_path / "config.json").write_text(json.dumps({**config, "arch": "wrn-16-1"}))
    with pytest.raises(ValueError, match=r"missing keys \(block1\.layer\.1\.bn1\.weight.*more\)") as err:
        load_model(tmp_path)
    assert "unexpected" not in str(err.value)


def test_check_state_dict_lists_missing_and_unexpected(tiny_model):
    sd = dict(tiny_model.state_dict())
    del sd["fc.bias"]
    sd["extra.weight"] = torch.zeros(1)
    with pytest.raises(ValueError) as err:
        check_state_dict(tiny_model, sd)
    msg = str(err.value)
    assert "1 missing key (fc.bias)" in msg and "1 unexpected key (extra.weight)" in msg
    check_state_dict(tiny_model, tiny_model.state_dict())  # a matching one passes


def _official(tiny_model, prefix, ema=True, wrap=None):
    sd = {prefix + k: v.clone() for k, v in tiny_model.state_dict().items()}
    if ema:
        sd[prefix.replace("module.module.", "module.") + "n_averaged"] = torch.tensor(1234)
    return {wrap: sd, "epoch": 100} if wrap else sd


@pytest.mark.parametrize("prefix,wrap", [("", None), ("module.", None), ("module.module.", None),
                                         ("module.", "state_dict"), ("module.module.", "ema")])
def test_import_official_gives_identical_logits(tiny_model, tmp_path, prefix, wrap):
    path = tmp_path / "official.pth"
    torch.save(_official(tiny_model, prefix, wrap=wrap), path)
    model = import_official(path, arch="wrn-10-1", out_dir=tmp_path / "ours")
    assert not model.training
    assert torch.equal(logits(model), logits(tiny_model))
    assert torch.equal(logits(load_model(tmp_path / "ours")), logits(tiny_model))


def test_import_drops_normalization_entries_with_a_warning(tiny_model, tmp_path):
    sd = _official(tiny_model, "module.")
    sd["module.mu"] = torch.tensor([0.4914, 0.4822, 0.4465]).view(1, 3, 1, 1)
    torch.save(sd, tmp_path / "official.pth")
    with pytest.warns(UserWarning, match=r"module\.mu=\[0\.49"):
        model = import_official(tmp_path / "official.pth", arch="wrn-10-1")
    assert torch.equal(logits(model), logits(tiny_model))


def test_import_rejects_wrong_arch_and_pickled_objects(tiny_model, tmp_path):
    torch.save(_official(tiny_model, "module."), tmp_path / "official.pth")
    with pytest.raises(ValueError, match=r"wrn-16-1 .*missing keys \(block1\.layer\.1"):
        import_official(tmp_path / "official.pth", arch="wrn-16-1")

    torch.save({"state_dict": tiny_model.state_dict(), "args": argparse.Namespace(lr=0.1)}, tmp_path / "pickle.pth")
    with pytest.raises(ValueError, match="weights_only=True"):
        import_official(tmp_path / "pickle.pth", arch="wrn-10-1")

    torch.save({"net": tiny_model.state_dict(), "epoch": 3}, tmp_path / "odd.pth")
    with pytest.raises(ValueError, match="top-level keys: net, epoch"):
        import_official(tmp_path / "odd.pth", arch="wrn-10-1")


def test_default_model(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setattr(loading, "DEFAULT_MODEL_DIR", tmp_path)
    with pytest.raises(FileNotFoundError, match="no bundled model is available yet.*Hub repo id"):
        load_model("default")
    save_model(tiny_model, tmp_path / "dat-tiny")
    assert torch.equal(logits(load_model()), logits(tiny_model))

    (tmp_path / "DEFAULT").write_text("dat-other\n")
    with pytest.raises(FileNotFoundError, match="names the default model 'dat-other'"):
        load_model("default")
    save_model(build_model("wrn-10-1", num_classes=2), tmp_path / "dat-other")
    assert load_model("default").config["num_classes"] == 2


@pytest.mark.parametrize("source", ["no such thing", "", "a/b/c"])
def test_unknown_source_is_a_clear_error(source):
    with pytest.raises(ValueError, match="existing checkpoint folder n?or (a valid )?Hub repo id"):
        load_model(source)


def test_a_pth_file_is_not_a_checkpoint_dir(tiny_model, tmp_path):
    torch.save(tiny_model.state_dict(), tmp_path / "w.pth")
    with pytest.raises(NotADirectoryError, match="import_official"):
        load_model(tmp_path / "w.pth")


# ---------------------------------------------------------------- hostile checkpoints

def _with_config(tmp_path, **changes):
    directory = save_model(build_model("wrn-10-1"), tmp_path / "ckpt")
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    for k in [k for k, v in changes.items() if v is None]:
        del config[k]
    (directory / "config.json").write_text(json.dumps(config))
    return directory


@pytest.mark.parametrize("changes, field", [
    ({"image_size": -32}, "image_size"), ({"image_size": 2048}, "image_size"), ({"image_size": 100000}, "image_size"),
    ({"image_size": "32"}, "image_size"), ({"image_size": 32.5}, "image_size"),
    ({"mean": [float("nan"), 0.5, 0.5]}, "mean"), ({"std": [0, 0.2, 0.2]}, "std"), ({"std": [0.2, -1, 0.2]}, "std"),
    ({"mean": [0.5, 0.5]}, "mean"), ({"std": "0.2"}, "std"), ({"mean": [True, 0.5, 0.5]}, "mean"),
    ({"num_classes": 2_000_000}, "num_classes"), ({"num_classes": 0}, "num_classes"),
    ({"num_classes": True}, "num_classes"),
    ({"class_names": ["a", "b"]}, "class_names"), ({"class_names": [1] * 10}, "class_names"),
    ({"class_names": ["x" * 300] * 10}, "class_names"),
    ({"class_names": [*"abcdefghi", "A"]}, "'A' appears twice"),
    ({"class_names": [*"abcdefghi", "a"]}, "appears twice"),
    ({"class_names": [*"abcdefghi", " "]}, "blank"),
    ({"class_names": [*"abcdefghi", "dog,cat"]}, "no comma"), ({"class_names": [*"abcdefghi", "All"]}, "not be 'all'"),
    ({"arch": "wrn-34-32"}, "parameters"), ({"arch": "wrn-16-64"}, "widen"), ({"arch": "no-such-net"}, "arch"),
    ({"arch": 7}, "arch"),
    # fields the tools read beyond the model's own: checked on every load, not only by the app (a null
    # quantile was a TypeError traceback in `explain benchmark`, a string code_version one in model cards)
    ({"energy_quantiles": {"0.05": None, "0.95": 1}}, "energy_quantiles"),
    ({"energy_quantiles": "lots"}, "energy_quantiles"), ({"energy_quantiles": {"1.5": 0.0}}, "energy_quantiles"),
    ({"energy_quantiles": {"half": 0.0}}, "energy_quantiles"),
    ({"energy_quantiles": {"0.5": True}}, "energy_quantiles"),
    ({"energy_quantiles": {"0.5": float("inf")}}, "energy_quantiles"), ({"energy_quantiles": {}}, "energy_quantiles"),
    ({"code_version": "0.1.0"}, "code_version"), ({"code_version": {"version": 3}}, "code_version"),
    ({"arch": "resnet50", "num_classes": 10, "image_size": 512, "class_names": None}, None),  # allowed: under budget
])
def test_hostile_configs_are_refused_naming_the_field(tmp_path, changes, field):
    directory = _with_config(tmp_path, **changes)
    if field is None:
        with pytest.raises(ValueError, match="does not match"):  # config fine; the weights are a wrn-10-1's
            load_model(directory)
        return
    with pytest.raises(ValueError, match=field) as info:
        load_model(directory)
    assert "config.json" in str(info.value)


def test_config_limits_leave_the_paper_models_loadable():
    from dat_core.models.config import validate_model_config

    for config in ({"arch": "wrn-34-10", "num_classes": 100}, {"arch": "resnet50", "num_classes": 1000},
                   {"arch": "wide-resnet50-4", "num_classes": 1000, "image_size": 256},
                   {"arch": "convnext-large-convstem", "num_classes": 1000, "image_size": 256},
                   {"arch": "convnext-base-convstem", "num_classes": 1000}):
        assert validate_model_config(config) is config


@pytest.mark.parametrize("content", [
    "pickle", b"", b"\x00" * 4, b"\xff" * 64, (10**6).to_bytes(8, "little") + b"{}",
    b"\x08" + b"\x00" * 7 + b"not json", "truncated",
])
def test_weights_that_are_not_safetensors_get_one_clear_error(tmp_path, content):
    directory = save_model(build_model("wrn-10-1"), tmp_path / "ckpt")
    weights = directory / "model.safetensors"
    if content == "pickle":
        torch.save(build_model("wrn-10-1").state_dict(), weights)
    elif content == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        weights.write_bytes(content)
    with pytest.raises(ValueError, match="not a safetensors file"):
        load_model(directory)


def test_train_eval_reports_a_pickled_checkpoint_in_one_line(tmp_path, capsys):
    from train.__main__ import main

    directory = save_model(build_model("wrn-10-1"), tmp_path / "ckpt")
    torch.save(build_model("wrn-10-1").state_dict(), directory / "model.safetensors")
    assert main(["eval", "--model", str(directory), "--data", "cifar10", "--root", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "not a safetensors file" in err and "Traceback" not in err


def test_missing_files_do_not_list_the_directory(tmp_path):
    (tmp_path / "secret.txt").write_text("x")
    with pytest.raises(FileNotFoundError) as info:
        load_model(tmp_path)
    assert "secret" not in str(info.value)
    with pytest.raises(FileNotFoundError) as info:
        load_checkpoint_dir(tmp_path, label="the folder you chose")
    assert str(tmp_path) not in str(info.value) and "the folder you chose" in str(info.value)


def test_an_oversized_model_card_is_refused_unread(tiny_model, tmp_path):
    """A card over the 1 MB cap is refused by its size (a 400 MB README.md used to be read whole); up to the cap
    it is read as before."""
    directory = save_model(tiny_model, tmp_path / "ckpt")
    card = directory / "README.md"
    card.write_text("# tiny\n" + "x" * (2**20 - 8) + "\n")
    assert model_card(directory) == card.read_text()
    with card.open("a") as f:   # one byte over, then a sparse 400 MB: neither is read
        f.write("y")
    for size in (2**20 + 1, 400 * 2**20):
        os.truncate(card, size)
        with pytest.raises(ValueError, match=r"README\.md is larger than 1 MB"):
            model_card(directory)
    assert torch.equal(logits(load_model(directory)), logits(tiny_model))   # the card is optional to loading


def _with_weights(tmp_path, tiny_model, **dtypes):
    """A checkpoint of `tiny_model` with the named tensors stored in other dtypes (`fc__weight` is fc.weight)."""
    from safetensors.torch import save_file

    directory = save_model(tiny_model, tmp_path / "ckpt")
    sd = {k: v.contiguous() for k, v in tiny_model.state_dict().items()}
    for key, dtype in dtypes.items():
        sd[key.replace("__", ".")] = sd[key.replace("__", ".")].to(dtype)
    save_file(sd, directory / "model.safetensors")
    return directory


@pytest.mark.parametrize("dtype", [torch.bool, torch.int8, torch.uint8, torch.int64, torch.complex64,
                                   torch.float8_e4m3fn, torch.float8_e5m2])
def test_weights_of_a_non_float_dtype_are_refused_naming_the_key(tiny_model, tmp_path, dtype):
    """bool weights gave logits of 6e34 and int8 ones zeros, silently; the first offending key is named."""
    directory = _with_weights(tmp_path, tiny_model, fc__weight=dtype, fc__bias=dtype)
    with pytest.raises(ValueError, match=rf"fc\.weight is {dtype}, not a floating dtype"):
        load_model(directory)


def test_a_float_batch_count_is_refused(tiny_model, tmp_path):
    key = "bn1.num_batches_tracked"
    directory = _with_weights(tmp_path, tiny_model, bn1__num_batches_tracked=torch.float32)
    assert key in tiny_model.state_dict()
    with pytest.raises(ValueError, match=rf"{key} is torch\.float32; the model stores torch\.int64"):
        load_model(directory)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_half_and_double_weights_still_load(tiny_model, tmp_path, dtype):
    """Common float checkpoints (fp16/bf16 as published, fp64) load, cast to the model's float32."""
    directory = _with_weights(tmp_path, tiny_model, **{k.replace(".", "__"): dtype for k, v in
                                                       tiny_model.state_dict().items() if v.is_floating_point()})
    model = load_model(directory)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    torch.testing.assert_close(logits(model), logits(tiny_model), rtol=0.05, atol=0.05)


def test_bundled_checkpoints_pass_the_weight_checks():
    for directory in sorted(p for p in loading.DEFAULT_MODEL_DIR.iterdir() if p.is_dir()):
        assert not load_checkpoint_dir(directory).training


def test_a_kill_while_saving_over_a_checkpoint_leaves_the_old_one_whole(tmp_path):
    """save_model replaced model.safetensors, then config.json: a SIGKILL between the two (an `import` or
    `calibrate --out` over an existing folder) left new weights beside the old config, which loaded and evaluated
    without a word. The folder is swapped whole now: the old checkpoint, or the new one."""
    import signal
    import subprocess
    import sys

    old = save_model(random_model(1, image_size=32), tmp_path / "ckpt", card="# the old model\n")
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    code = f"""
import os, signal, pathlib
from test_checkpoint import random_model
from dat_core.checkpoint import save_model
write = pathlib.Path.write_bytes
def write_then_die(self, data):
    if "config.json" in self.name:   # the weights are written: die before the config is
        os.kill(os.getpid(), signal.SIGKILL)
    return write(self, data)
pathlib.Path.write_bytes = write_then_die
save_model(random_model(2, image_size=16), {str(old)!r})
"""
    run = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).parent, capture_output=True, text=True,
                         timeout=120, env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[1])})
    assert run.returncode == -signal.SIGKILL, run.stderr
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before   # nothing of the new model got in
    assert torch.equal(logits(load_model(old)), logits(random_model(1, image_size=32)))


def test_saving_over_a_checkpoint_drops_the_earlier_models_card(tmp_path):
    """`import --out` or `calibrate --out` into a folder with a card kept the earlier model's README.md and its
    numbers beside the new weights (`push` would have published them). A card is the model's own or none; a folder
    holding other files (a git clone of a Hub repo) keeps them."""
    directory = save_model(random_model(1), tmp_path / "ckpt", card="# model 1: accuracy 0.9\n")
    save_model(random_model(2), directory)
    assert sorted(p.name for p in directory.iterdir()) == ["config.json", "model.safetensors"]
    save_model(random_model(3), directory, card="# model 3\n")
    assert model_card(directory) == "# model 3\n"
    clone = save_model(random_model(1), tmp_path / "clone", card="# mine\n")
    (clone / ".gitattributes").write_text("*.safetensors filter=lfs\n")
    save_model(random_model(2), clone)
    assert (clone / ".gitattributes").is_file() and model_card(clone) == "# mine\n"
    assert torch.equal(logits(load_model(clone)), logits(random_model(2)))


def test_a_checkpoint_in_a_folder_it_cannot_rename_is_written_in_place(tmp_path, monkeypatch):
    """The whole-folder swap renames the folder in its parent: a checkpoint folder inside a read-only parent (or a
    mounted volume) failed where writing file by file worked, and lost its owner and mode. Such a folder is written
    in place. (Tests run as root, for whom every folder is writable: the parent's refusal is simulated.)"""
    directory = save_model(random_model(1), tmp_path / "ckpt", card="# one\n")
    inode = directory.stat().st_ino
    real = os.access
    monkeypatch.setattr(os, "access", lambda p, mode, **k: Path(p) != tmp_path.resolve() and real(p, mode, **k))
    save_model(random_model(2), directory)
    assert directory.stat().st_ino == inode and torch.equal(logits(load_model(directory)), logits(random_model(2)))
    monkeypatch.undo()
    save_model(random_model(3), directory)   # a parent it may write: swapped whole
    assert directory.stat().st_ino != inode and model_card(directory) is None
