"""Explanation cards: `--card` writes everything needed, `python -m explain replay` reproduces it bit for bit,
and refuses weights that are not the card's."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from dat_core import build_model
from dat_core.checkpoint import save_model
from explain.card import _pack, read_card, replay
from explain.cli import main


@pytest.fixture
def setup(tmp_path):
    torch.manual_seed(0)
    model_dir = save_model(build_model("wrn-10-1").eval(), tmp_path / "model")
    torch.manual_seed(1)
    guide_dir = save_model(build_model("wrn-10-1").eval(), tmp_path / "guide")
    rng = np.random.default_rng(0)
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(tmp_path / "img.png")
    mask = np.zeros((40, 48), dtype=np.uint8)
    mask[5:30, 10:40] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    return tmp_path, model_dir, guide_dir


def _cf(tmp, model_dir, out, *extra):
    return main(["counterfactual", "--model", str(model_dir), "--image", str(tmp / "img.png"), "--target", "4",
                 "--steps", "6", "--autocast", "off", "--card", "--out", str(out), *extra])


def test_card_replays_bit_for_bit(setup, capsys):
    tmp, model_dir, _ = setup
    assert _cf(tmp, model_dir, tmp / "cf") == 0
    card = read_card(tmp / "cf" / "card.json")
    assert card["model"]["weights_sha256"] and card["image"]["sha256"] and card["params"]["steps"] == 6
    assert card["dtype"] == "float32" and (tmp / "cf" / "card.png").is_file()
    capsys.readouterr()
    assert main(["replay", str(tmp / "cf" / "card.json"), "--out", str(tmp / "again")]) == 0
    assert "reproduced bit for bit" in capsys.readouterr().out
    metrics = json.loads((tmp / "again" / "metrics.json").read_text())
    assert metrics["confidence_target"][-1] == pytest.approx(card["metrics"]["confidence_target"])


def test_a_device_named_another_way_is_the_same_device(setup):
    """A card made on "cpu:0" replayed on "cpu" said it ran on another device (while reproducing it exactly)."""
    tmp, model_dir, _ = setup
    assert _cf(tmp, model_dir, tmp / "cf") == 0
    path = tmp / "cf" / "card.json"
    card = json.loads(path.read_text())
    card["device"] = "cpu:0"
    path.write_text(json.dumps(card))
    result = replay(path)
    assert result.identical and result.same_setting


def test_card_with_mask_and_guide_replays(setup):
    tmp, model_dir, guide_dir = setup
    assert _cf(tmp, model_dir, tmp / "cf", "--mask", str(tmp / "mask.png"), "--guide", str(guide_dir),
               "--cone-angle", "40") == 0
    card = read_card(tmp / "cf" / "card.json")
    assert card["mask"] is not None and card["guide"]["weights_sha256"] and card["params"]["cone_angle"] == 40.0
    result = replay(tmp / "cf" / "card.json")
    assert result.identical and result.max_abs_diff == 0.0
    torch.manual_seed(7)
    save_model(build_model("wrn-10-1").eval(), guide_dir)                   # the guide's folder, other weights
    with pytest.raises(ValueError, match="not the ones the card was made with"):
        replay(tmp / "cf" / "card.json")


def test_replay_checks_the_image_it_is_given(setup, capsys):
    """A card records its image's sha256, but replay could not check it: nothing said whether a file at hand is
    the image the card explains. `--image FILE` checks the hash (or, in a card without one, the exact x_0)."""
    tmp, model_dir, _ = setup
    assert _cf(tmp, model_dir, tmp / "cf") == 0
    path = tmp / "cf" / "card.json"
    capsys.readouterr()
    assert main(["replay", str(path), "--image", str(tmp / "img.png")]) == 0
    assert "img.png is the card's image (sha256)" in capsys.readouterr().out
    other = np.asarray(Image.open(tmp / "img.png")).copy()
    other[0, 0] ^= 1
    Image.fromarray(other).save(tmp / "other.png")
    assert main(["replay", str(path), "--image", str(tmp / "other.png")]) == 2
    assert "other.png is not the card's image" in capsys.readouterr().err
    card = json.loads(path.read_text())
    card["image"]["sha256"] = None                                          # e.g. an app upload not hashed
    path.write_text(json.dumps(card))
    assert main(["replay", str(path), "--image", str(tmp / "img.png")]) == 0
    assert "img.png gives the card's exact x_0" in capsys.readouterr().out
    Image.fromarray(np.full((40, 48, 3), 9, np.uint8)).save(tmp / "flat.png")
    assert main(["replay", str(path), "--image", str(tmp / "flat.png")]) == 2
    assert "flat.png is not the card's image" in capsys.readouterr().err
    assert main(["replay", str(path), "--image", str(tmp / "nowhere.png")]) == 2


def test_other_weights_or_frames_are_caught(setup, capsys):
    tmp, model_dir, _ = setup
    assert _cf(tmp, model_dir, tmp / "cf") == 0
    path = tmp / "cf" / "card.json"
    card = json.loads(path.read_text())
    card["frames_sha256"] = "0" * 64
    path.write_text(json.dumps(card))
    capsys.readouterr()
    assert main(["replay", str(path)]) == 1
    said = capsys.readouterr().out   # x_T itself is the card's: no "max |x_T - card x_T| = 0" contradiction
    assert "differs from the card" in said and "frames_sha256 was edited" in said and "= 0" not in said
    torch.manual_seed(5)
    save_model(build_model("wrn-10-1").eval(), model_dir)                   # the folder now holds other weights
    assert main(["replay", str(path)]) == 2
    assert "not the ones the card was made with" in capsys.readouterr().err


def test_bad_cards_are_one_line(setup, capsys):
    tmp, _, _ = setup
    (tmp / "x.json").write_text("[1, 2]")
    assert main(["replay", str(tmp / "x.json")]) == 2
    assert "not an explanation card" in capsys.readouterr().err
    (tmp / "y.json").write_bytes(b"\x80\x04pickle")
    assert main(["replay", str(tmp / "y.json")]) == 2
    assert "not valid JSON" in capsys.readouterr().err
    (tmp / "folder").mkdir(exist_ok=True)   # was "[Errno 21] Is a directory"
    assert main(["replay", str(tmp / "folder")]) == 2
    assert capsys.readouterr().err.strip() == "error: folder is a folder, not an explanation card"
    with pytest.raises(SystemExit) as e:     # a blank path read the current folder
        main(["replay", ""])
    assert e.value.code == 2 and "argument card: expected a value, got a blank one" in capsys.readouterr().err


def test_hostile_arrays_in_a_card_are_refused_before_inflating(setup, capsys):
    import base64
    import zlib

    tmp, model_dir, _ = setup
    assert _cf(tmp, model_dir, tmp / "cf") == 0
    path = tmp / "cf" / "card.json"
    good = json.loads(path.read_text())
    bomb = base64.b64encode(zlib.compress(b"\0" * (64 * 2 ** 20))).decode()  # 64 MB of zeros, ~64 kB packed
    for x0, needle in (({**good["image"]["x0"], "zlib_base64": bomb}, "bytes for shape"),
                       ({**good["image"]["x0"], "shape": [3, 100000, 100000]}, "does not belong"),
                       ({**good["image"]["x0"], "dtype": "object"}, "float32 or bool"),
                       ({**good["image"]["x0"], "zlib_base64": "!!!"}, "malformed")):
        card = json.loads(json.dumps(good))
        card["image"]["x0"] = x0
        path.write_text(json.dumps(card))
        capsys.readouterr()
        assert main(["replay", str(path)]) == 2
        assert needle in capsys.readouterr().err


@pytest.mark.parametrize("tamper, needle", [
    (lambda c: c.pop("model"), "model"),
    (lambda c: c["params"].pop("eps"), "params.eps"),
    (lambda c: c.__setitem__("params", []), "params"),
    (lambda c: c["image"].pop("x0"), "image.x0"),
    (lambda c: c.__setitem__("image", [1]), "image"),
    (lambda c: c.__setitem__("target", 4.7), "target"),
    (lambda c: c.__setitem__("target", "4"), "target"),
    (lambda c: c["params"].__setitem__("steps", "6"), "params.steps"),
    (lambda c: c.__setitem__("dtype", 5), "dtype"),
    (lambda c: c.__setitem__("memory_format", "diagonal"), "memory_format"),
    (lambda c: c["model"].__setitem__("weights_sha256", "abc"), "model.weights_sha256"),
    (lambda c: c["model"].__setitem__("kind", "ftp"), "model.kind"),
    (lambda c: c.__setitem__("device", "toaster"), "toaster"),
    (lambda c: c.__setitem__("device", "cuda:7"), "--device cpu"),
    (lambda c: c.__setitem__("mask", c["image"]["x0"]), "mask"),
    (lambda c: c["metrics"].__setitem__("confidence_target", float("nan")), "metrics.confidence_target"),
    (lambda c: c["params"].__setitem__("step_size", float("inf")), "params.step_size"),
    # names that are not the model's: replay printed them ("frog -> cat" for a path that ran toward class 4)
    (lambda c: c.__setitem__("target_name", "cat"), "target_name"),
    (lambda c: c["metrics"].__setitem__("source_name", "cat"), "source_name"),
    # an x_0 of another size was resized, and the failure blamed the source class
    (lambda c: c["image"].__setitem__("x0", _pack(np.zeros((3, 16, 16), np.float32))), "image.x0 is 16x16"),
])
def test_a_tampered_card_is_one_line_naming_the_field(setup, capsys, tamper, needle):
    """Every field of a card (it may come from anyone) is checked before anything runs: exit 2 and one line that
    names the field, never a traceback or exit 1 (which means 'the path differs')."""
    tmp, model_dir, _ = setup
    assert _cf(tmp, model_dir, tmp / "cf") == 0
    path = tmp / "cf" / "card.json"
    card = json.loads(path.read_text())
    tamper(card)
    path.write_text(json.dumps(card))
    capsys.readouterr()
    assert main(["replay", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and err.count("\n") == 1 and needle in err, err


def test_a_card_made_with_relative_paths_replays_from_another_folder(setup, monkeypatch):
    """A card stored `--model model` as given: replayed from another working folder it named a missing model."""
    tmp, _, _ = setup
    (tmp / "elsewhere").mkdir()
    monkeypatch.chdir(tmp)
    assert main(["counterfactual", "--model", "model", "--image", "img.png", "--target", "4", "--steps", "4",
                 "--autocast", "off", "--guide", "guide", "--card", "--out", "cf"]) == 0
    monkeypatch.chdir(tmp / "elsewhere")
    result = replay(tmp / "cf" / "card.json")
    assert result.identical


def test_a_replay_is_not_written_over_the_run_it_replays(setup, capsys):
    """`replay cf/card.json --out cf` replaced the card's metrics.json and trajectory.gif with the replay's (one
    that did not match the card), beside the card run's own trajectory.png: two runs in one folder."""
    tmp, model_dir, _ = setup
    assert _cf(tmp, model_dir, tmp / "cf") == 0
    before = {p.name: p.read_bytes() for p in (tmp / "cf").iterdir() if p.is_file()}
    capsys.readouterr()
    for out in (tmp / "cf", tmp / "cf" / "."):
        assert main(["replay", str(tmp / "cf" / "card.json"), "--out", str(out)]) == 2
        assert "--out" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in (tmp / "cf").iterdir() if p.is_file()} == before
