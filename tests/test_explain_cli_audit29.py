"""Audit 29 of `python -m explain`: "~" in paths read as the shell would, and bad input refused before the work."""

import hashlib
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dat_core import build_model
from dat_core.checkpoint import save_model
from explain.cli import main

MISSING_MODEL = "no-such-model"   # no zoo name, folder or Hub id: refused when the model loads


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """A tiny checkpoint, a small RGB image and a file that is no image."""
    d = tmp_path_factory.mktemp("audit29")
    torch.manual_seed(0)
    save_model(build_model("wrn-10-1").eval(), d / "ckpt")
    rgb = np.random.default_rng(0).integers(0, 256, (40, 40, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(d / "img.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not a jpeg")
    return d


@pytest.fixture
def home(files: Path, tmp_path: Path, monkeypatch) -> Path:
    """HOME with the checkpoint and the image in it; the working folder elsewhere."""
    home = tmp_path / "home"
    shutil.copytree(files / "ckpt", home / "ckpt")
    shutil.copy(files / "img.png", home / "img.png")
    (tmp_path / "cwd").mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(tmp_path / "cwd")
    return home


def _cf(*extra: str) -> list[str]:
    return ["counterfactual", "--device", "cpu", "--target", "cat", "--steps", "1", "--autocast", "off", *extra]


def test_a_card_of_an_image_named_with_a_tilde_is_written(home):
    """The image "~/img.png" was read for the path (expanded), then its card hashed the literal "~/img.png": the
    path ran and the command ended "error: ~/img.png does not exist" (exit 2), no card."""
    assert main(_cf("--model", str(home / "ckpt"), "--image", "~/img.png", "--card", "--out", str(home / "cf"))) == 0
    card = json.loads((home / "cf" / "card.json").read_text())
    assert card["image"]["sha256"] == hashlib.sha256((home / "img.png").read_bytes()).hexdigest()


def test_a_card_of_a_model_named_with_a_tilde_replays(home, capsys):
    """--model "~/ckpt" loaded from HOME, but the card named it "<cwd>/~/ckpt", a folder that is not there: the
    replay failed with "checkpoint folder ... does not exist"."""
    out = home / "cf"
    assert main(_cf("--model", "~/ckpt", "--image", str(home / "img.png"), "--card", "--out", str(out))) == 0
    assert json.loads((out / "card.json").read_text())["model"]["source"] == str((home / "ckpt").resolve())
    assert main(["replay", str(out / "card.json"), "--device", "cpu"]) == 0, capsys.readouterr().err


def test_an_input_inside_an_out_named_with_a_tilde_is_refused(home, capsys):
    """--out "~/o" with --image "~/o/strip.png": the check that an input is not inside --out compared the literal
    paths, let it pass, and the run wrote its strip.png over the input image."""
    (home / "o").mkdir()
    shutil.copy(home / "img.png", home / "o" / "strip.png")
    before = (home / "o" / "strip.png").read_bytes()
    assert main(_cf("--model", str(home / "ckpt"), "--image", "~/o/strip.png", "--out", "~/o")) == 2
    assert "lies inside --out" in capsys.readouterr().err
    assert (home / "o" / "strip.png").read_bytes() == before


def test_every_command_writes_an_out_named_with_a_tilde_into_home(home, files):
    """counterfactual expanded "~/out" but success (and replay, benchmark) made a folder named "~" in the working
    folder: the same --out meant two places."""
    (home / "imgs").mkdir()
    shutil.copy(files / "img.png", home / "imgs" / "cat-0000.png")
    assert main(["success", "--model", str(home / "ckpt"), "--device", "cpu", "--images", str(home / "imgs"),
                 "--steps", "1", "--autocast", "off", "--out", "~/s"]) == 0
    assert (home / "s" / "success.json").is_file() and not Path("~").exists()


def test_a_sweep_refuses_each_of_its_settings_before_the_first_runs(files, tmp_path, capsys):
    """--norm Linf --eps 8/255,8: the sweep ran the whole first setting (and saved it), then ended on eps 8 in
    pixel units. Every setting is checked before the model loads (a missing model is not reached)."""
    argv = ["success", "--model", MISSING_MODEL, "--norm", "Linf", "--out", str(tmp_path / "s")]
    assert main([*argv, "--eps", "8/255,8"]) == 2
    assert "did you mean 8/255" in capsys.readouterr().err
    assert main([*argv, "--step-size", "1/255,2"]) == 2
    assert "a Linf step is per pixel" in capsys.readouterr().err


def test_generate_reads_its_seed_image_before_the_model_loads(files, tmp_path, capsys):
    """counterfactual reads --image before loading the model (a Hub model downloads); generate loaded the model,
    then found that its --seeds image could not be read."""
    assert main(["generate", "--model", MISSING_MODEL, "--seeds", str(files / "broken.jpg"),
                 "--out", str(tmp_path / "g")]) == 2
    err = capsys.readouterr().err
    assert "broken.jpg" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize("source, says", [(("--images", "nowhere"), "--images nowhere is not a folder"),
                                          (("--data", "nowhere.tar.gz"), "--data nowhere.tar.gz does not exist")])
def test_an_image_source_that_is_none_is_refused_before_the_model_loads(tmp_path, capsys, source, says):
    """A misspelt --images folder or --data archive of a sweep was found only after the model had loaded."""
    assert main(["success", "--model", MISSING_MODEL, *source, "--out", str(tmp_path / "o")]) == 2
    assert says in capsys.readouterr().err


def test_an_images_folder_without_images_is_refused_before_the_model_loads(tmp_path, capsys):
    (tmp_path / "empty").mkdir()
    assert main(["success", "--model", MISSING_MODEL, "--images", str(tmp_path / "empty"),
                 "--out", str(tmp_path / "o")]) == 2
    assert "holds no images" in capsys.readouterr().err


def test_a_landscape_direction_that_is_no_class_is_refused_before_the_path_runs(files, tmp_path, capsys,
                                                                              monkeypatch):
    """--direction kitten was looked up only after the whole counterfactual path had run (300 steps: ~45 s here)."""
    import explain.trajectory

    def tripwire(*args, **kwargs):
        raise AssertionError("the path ran")
    monkeypatch.setattr(explain.trajectory, "counterfactual", tripwire)
    assert main(["landscape", "--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--target", "cat",
                 "--direction", "kitten", "--device", "cpu", "--out", str(tmp_path / "o")]) == 2
    assert "unknown class 'kitten'" in capsys.readouterr().err


def test_an_animation_too_large_to_hold_is_refused_before_the_path_runs(files, tmp_path, capsys, monkeypatch):
    """Pillow's GIF and APNG writers keep every frame until the file is written: 1000 steps of a 224 px path at the
    default scale 8 asked for 10 GB (a MemoryError, or the kernel's OOM kill) after the whole path had run."""
    import explain.export
    import explain.trajectory

    def tripwire(*args, **kwargs):
        raise AssertionError("the path ran")
    monkeypatch.setattr(explain.export, "MAX_ANIMATION_BYTES", 40 * 32 * 32 * 64 * 3, raising=False)
    monkeypatch.setattr(explain.trajectory, "counterfactual", tripwire)
    assert main(["counterfactual", "--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--target", "cat",
                 "--steps", "50", "--scale", "8", "--out", str(tmp_path / "x")]) == 2
    assert "animation of 51 frames of 256x256 px" in capsys.readouterr().err


def test_the_animation_writers_refuse_frames_they_cannot_hold(tmp_path, monkeypatch):
    import explain.export
    from explain.export import save_apng, save_gif

    frames = np.zeros((4, 32, 32, 3), dtype=np.uint8)
    monkeypatch.setattr(explain.export, "MAX_ANIMATION_BYTES", 4 * 32 * 32 * 3 * 9, raising=False)
    save_apng(frames, tmp_path / "ok.png", scale=3)   # 9 pixels a pixel: just fits
    save_gif(frames, tmp_path / "ok.gif", scale=5)    # a palette byte a pixel: 25 bytes
    for save, name in ((save_apng, "a.png"), (save_gif, "a.gif")):
        with pytest.raises(ValueError, match="would hold"):
            save(frames, tmp_path / name, scale=8)
        assert not (tmp_path / name).exists()


def test_landscape_json_records_what_it_was_computed_with(files, tmp_path):
    """landscape.json held the grid and the path but not the path's settings, the random direction's seed or the
    class of the joint energy: a reader could not tell two runs apart, nor redo one."""
    assert main(["landscape", "--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--target", "dog",
                 "--steps", "2", "--eps", "3", "--grid", "3", "--seed", "7", "--energy", "joint",
                 "--out", str(tmp_path / "land")]) == 0
    land = json.loads((tmp_path / "land" / "landscape.json").read_text())
    assert land["energy_class"] == 5 and land["settings"]["seed"] == 7 and land["settings"]["direction"] == "random"
    assert land["settings"]["path"]["steps"] == 2 and land["settings"]["path"]["eps"] == 3.0


def test_the_minimal_search_records_the_path_it_searched_from(files, tmp_path):
    """minimal.json did not say which path its search started from: it runs its own 100 steps (a short --steps for a
    quick look must not starve the search), with the path's step size and objective."""
    assert main(["counterfactual", "--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--target", "dog",
                 "--steps", "7", "--step-size", "0.3", "--minimal", "0.5", "--out", str(tmp_path / "min")]) == 0
    search = json.loads((tmp_path / "min" / "minimal.json").read_text())
    assert search["path_params"]["steps"] == 100 and search["path_params"]["step_size"] == 0.3
    assert search["path_params"]["eps"] is None or search["path_params"]["eps"] in ("inf", "Infinity")
