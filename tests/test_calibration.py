"""Temperature scaling: the fit recovers a known temperature, a model divides its logits by the stored one
(predictions unchanged), configs are checked, and `python -m train calibrate` fits on validation data only,
keeps the weights file and can switch the temperature off again."""

import hashlib
import json

import numpy as np
import pytest
import torch
from PIL import Image

from dat_core import build_model, load_model, save_model
from dat_core.energy import marginal_energy
from dat_core.evaluation import energy_quantiles, expected_calibration_error, fit_temperature
from dat_core.models.config import validate_model_config
from dat_core.training.config import load_config
from dat_core.training.data import load_train_val
from train.__main__ import main


@pytest.mark.parametrize("true_t", [0.5, 1.0, 2.5])
def test_fit_recovers_the_temperature_that_generated_the_labels(true_t):
    g = torch.Generator().manual_seed(0)
    logits = 3 * torch.randn(20000, 10, generator=g)
    labels = torch.multinomial(torch.softmax(logits / true_t, 1), 1, generator=g).squeeze(1)
    t = fit_temperature(logits, labels)
    assert t == pytest.approx(true_t, rel=0.05)
    before, _ = expected_calibration_error(torch.softmax(logits, 1), labels)
    after, _ = expected_calibration_error(torch.softmax(logits / t, 1), labels)
    assert after < 0.02 and (true_t == 1.0 or after < before)


@pytest.mark.parametrize("logits, labels, message", [
    (torch.zeros(0, 3), torch.zeros(0), "needs"),
    (torch.zeros(4, 3), torch.zeros(5), "needs"),
    (torch.full((2, 3), float("nan")), torch.zeros(2), "finite"),
    (torch.zeros(2, 3), torch.tensor([0, 3]), "labels must lie"),
])
def test_fit_refuses_bad_inputs(logits, labels, message):
    with pytest.raises(ValueError, match=message):
        fit_temperature(logits, labels)


def test_a_model_divides_its_logits_by_the_stored_temperature():
    torch.manual_seed(0)
    model = build_model("wrn-10-1", num_classes=3, image_size=16).eval()
    x = torch.rand(4, 3, 16, 16)
    with torch.no_grad():
        raw = model(x)
        model.config["temperature"] = 0.5
        scaled = model(x)
    torch.testing.assert_close(scaled, raw / 0.5)
    assert torch.equal(scaled.argmax(1), raw.argmax(1))


@pytest.mark.parametrize("value", [0, -1.0, 1e-9, 1e9, float("nan"), float("inf"), True, "2", [2.0]])
def test_bad_temperatures_are_refused_by_name(value):
    config = {"arch": "wrn-10-1", "num_classes": 3, "temperature": value}
    with pytest.raises(ValueError, match="temperature"):
        validate_model_config(config)


def test_integer_temperature_is_a_number():
    assert validate_model_config({"arch": "wrn-10-1", "num_classes": 3, "temperature": 2})["temperature"] == 2


def _model(seed=0):
    torch.manual_seed(seed)
    return build_model("wrn-10-1", num_classes=3, image_size=16, class_names=["class0", "class1", "class2"])


@pytest.fixture(scope="module")
def overlapping(tmp_path_factory):
    """Three colour classes whose colours overlap (a shift per image): no model gets them all right."""
    root = tmp_path_factory.mktemp("overlapping")
    rng = np.random.default_rng(0)
    for c, colour in enumerate([(140, 110, 110), (110, 140, 110), (110, 110, 140)]):
        folder = root / "train" / f"class{c}"
        folder.mkdir(parents=True)
        for i in range(40):
            image = np.array(colour) + rng.normal(0, 25, 3) + rng.normal(0, 20, (16, 16, 3))
            Image.fromarray(np.clip(image, 0, 255).astype(np.uint8)).save(folder / f"{i:03d}.png")
    return root


@pytest.fixture
def overconfident(overlapping, tmp_path):
    """A net fitted on the training part (20 full-batch steps): right on about 70 % of the validation
    images and far surer than that."""
    model = _model()
    train = _split(overlapping, 30, seed=5)[0]
    x, y = train.images[:].float() / 255, train.labels
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(20):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()
    return save_model(model.eval(), tmp_path / "model")


def _split(data, n, seed):
    """(train, validation) as training with data.val_size=n and this seed splits them."""
    cfg = load_config(None, **{"data.dataset": str(data), "data.image_size": 16, "data.val_size": n, "seed": seed})
    return load_train_val(cfg)


def _sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_calibrate_fits_on_the_validation_carve_out_and_keeps_the_weights(overlapping, overconfident, tmp_path,
                                                                          capsys):
    weights = _sha(overconfident / "model.safetensors")
    out = tmp_path / "calibrated"
    assert main(["calibrate", "--model", str(overconfident), "--out", str(out), "--data", str(overlapping),
                 "--val-size", "30", "--seed", "5"]) == 0
    report = json.loads(capsys.readouterr().out)
    config = json.loads((out / "config.json").read_text())
    assert config["temperature"] == report["temperature"] > 1  # over-confident: T > 1 softens it
    assert report["nll_after"] < report["nll_before"] and report["n"] == 30
    assert _sha(out / "model.safetensors") == weights
    assert "temperature" not in json.loads((overconfident / "config.json").read_text())  # --out left it alone

    val = _split(overlapping, 30, seed=5)[1]
    raw, calibrated = load_model(overconfident), load_model(out)
    with torch.no_grad():
        x = val.images[:].float() / 255
        logits = raw(x)
        assert fit_temperature(logits.double(), val.labels) == pytest.approx(report["temperature"], rel=1e-4)
        torch.testing.assert_close(calibrated(x), logits / report["temperature"], rtol=1e-4, atol=1e-5)
    stored = config["energy_quantiles"]
    expected = energy_quantiles(marginal_energy(logits.double() / report["temperature"]))
    assert stored == pytest.approx(expected, rel=1e-4, abs=1e-5)


def test_calibrate_off_restores_the_raw_logits(overlapping, overconfident):
    assert main(["calibrate", "--model", str(overconfident), "--data", str(overlapping), "--val-size", "30"]) == 0
    assert "temperature" in json.loads((overconfident / "config.json").read_text())
    assert main(["calibrate", "--model", str(overconfident), "--data", str(overlapping), "--val-size", "30",
                 "--off"]) == 0
    config = json.loads((overconfident / "config.json").read_text())
    assert "temperature" not in config and "calibration" not in config
    val = _split(overlapping, 30, seed=0)[1]
    with torch.no_grad():
        logits = load_model(overconfident)(val.images[:].float() / 255)
    assert config["energy_quantiles"] == pytest.approx(energy_quantiles(marginal_energy(logits.double())),
                                                       rel=1e-4, abs=1e-5)


@pytest.mark.parametrize("trained, message", [(False, "is above 100"), (True, "is below 0.01")])
def test_calibrate_refuses_a_temperature_no_config_may_hold(toy, tmp_path, capsys, trained, message):
    """Logits that say nothing about the labels send the best T off to infinity; a net right
    on every image of the separable toy data gains likelihood as T falls to 0. Neither fit may write a config
    that every reader then refuses."""
    model = _model(seed=1)
    if trained:
        train = _split(toy, 30, seed=0)[0]
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(15):
            opt.zero_grad()
            torch.nn.functional.cross_entropy(model(train.images[:].float() / 255), train.labels).backward()
            opt.step()
    else:  # sure of one class whatever the image: the rarest class of the validation images
        rarest = int(torch.bincount(_split(toy, 30, seed=0)[1].labels, minlength=3).argmin())
        with torch.no_grad():
            model.head.weight.zero_()
            model.head.bias.copy_(100 * torch.nn.functional.one_hot(torch.tensor(rarest), 3))
    directory = save_model(model.eval(), tmp_path / "model")
    before = (directory / "config.json").read_bytes()
    assert main(["calibrate", "--model", str(directory), "--data", str(toy), "--val-size", "30"]) == 2
    assert message in capsys.readouterr().err
    assert (directory / "config.json").read_bytes() == before
    load_model(directory)


@pytest.mark.parametrize("extra, message", [
    (["--split", "test"], "test split"),
    (["--val-size", "0"], "--val-size must be in"),
    (["--batch-size", "0"], "--batch-size"),
    (["--device", "nonsense"], "unknown device"),
    # an --out that cannot be written was found after the fit ("[Errno 17] File exists"), now before it
    (["--out", __file__], "is a file: give a folder"), (["--out", "/proc/calibrated"], "cannot write"),
])
def test_calibrate_refuses_in_one_line(overlapping, overconfident, extra, message, capsys):
    assert main(["calibrate", "--model", str(overconfident), "--data", str(overlapping), *extra]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    assert "temperature" not in json.loads((overconfident / "config.json").read_text())


def test_training_from_a_calibrated_checkpoint_starts_from_the_raw_logits(toy, tmp_path):
    """A temperature belongs to the weights it was fitted for: training moves them, so model.init drops it."""
    from dat_core.training.initial import initial_model

    model = _model()
    model.config.update(temperature=0.5, calibration={"n": 30})
    init = save_model(model.eval(), tmp_path / "calibrated")
    cfg = load_config(None, stage="stage2", **{"data.dataset": str(toy), "data.image_size": 16,
                                               "model.init": str(init)})
    started = initial_model(cfg, ["class0", "class1", "class2"], torch.device("cpu"))
    assert "temperature" not in started.config and "calibration" not in started.config
    x = torch.rand(2, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(started.eval()(x), model(x) * 0.5)


def test_the_model_tab_says_a_model_is_calibrated_and_how():
    from types import SimpleNamespace

    from webapp.describe import describe_model

    model = _model()
    loaded = SimpleNamespace(config=model.config, class_names=["class0", "class1", "class2"], label="m",
                             model=model, image_size=16)
    assert "Calibration" not in describe_model(loaded)
    model.config.update(temperature=0.683, calibration={"ece_before": 0.112, "ece_after": 0.026, "n": 2000})
    row = next(line for line in describe_model(loaded).splitlines() if line.startswith("| Calibration"))
    assert "T = 0.683" in row and "2000 validation images (ECE 11.2% → 2.6%)" in row
    model.config["calibration"] = {"ece_before": "<b>", "n": True}  # passed-through metadata: shown only if numbers
    row = next(line for line in describe_model(loaded).splitlines() if line.startswith("| Calibration"))
    assert "T = 0.683 fitted:" in row and "<b>" not in row


def test_calibrate_defaults_to_the_carve_out_training_recorded(overlapping, overconfident, capsys):
    """The default was 2000 images and seed 0 whatever training held out: with training's 30 at seed 5 it fitted on
    images the model trained on. The checkpoint records its carve-out, and calibrate takes it."""
    config = json.loads((overconfident / "config.json").read_text())
    config["training"] = {"carve_outs": [{"split": "train", "val_size": 30, "seed": 5}]}
    (overconfident / "config.json").write_text(json.dumps(config))
    assert main(["calibrate", "--model", str(overconfident), "--data", str(overlapping)]) == 0
    report = json.loads(capsys.readouterr().out)
    assert (report["val_size"], report["seed"], report["n"]) == (30, 5, 30)
    assert "fitted on" in report["scored_on"]   # its ECE after is measured on the images it was fitted on


def test_calibrate_asks_for_the_carve_out_of_a_checkpoint_that_records_none(overlapping, overconfident, capsys):
    """Without a recorded carve-out (an imported checkpoint, trained on the whole train split) calibrate took 2000
    images of train at seed 0 without a word: it fitted the temperature on images the model trained on."""
    config = json.loads((overconfident / "config.json").read_text())
    assert not config.get("training", {}).get("carve_outs")
    assert main(["calibrate", "--model", str(overconfident), "--data", str(overlapping)]) == 2
    err = capsys.readouterr().err
    assert "records no validation carve-out of the train split" in err and "--val-size" in err
    assert err.count("\n") == 1 and "temperature" not in json.loads((overconfident / "config.json").read_text())


def test_calibrate_drops_the_cards_ece_of_the_old_temperature(overlapping, overconfident, tmp_path):
    """The card was carried over whole: its ECE, measured before the new temperature, stayed in the model-index
    and the table, and `push` would publish it for the calibrated model. The accuracies (which T leaves) stay."""
    from huggingface_hub import ModelCard

    from dat_core.cards import build_card
    from dat_core.checkpoint import model_card

    config = json.loads((overconfident / "config.json").read_text())
    report = {"clean_accuracy": 0.75, "ece": 0.21, "n": 30, "split": "test"}
    (overconfident / "README.md").write_text(str(build_card(config, report)) + "\nMy notes.\n")
    out = tmp_path / "calibrated"
    assert main(["calibrate", "--model", str(overconfident), "--out", str(out), "--data", str(overlapping),
                 "--val-size", "30"]) == 0
    card = model_card(out)
    names = [r.metric_name for r in ModelCard(card).data.eval_results]
    assert names == ["Clean accuracy"] and "| Clean accuracy | 0.7500 |" in card and "My notes." in card
    assert "calibration error" not in card.lower() and "0.21" not in card


@pytest.mark.parametrize("card", ["---\nfoo: [unclosed\n---\nMy notes.\n", "---\n- a list\n---\nMy notes.\n",
                                  "---\nmodel-index: 3\n---\nMy notes.\n"])
def test_calibrate_copies_a_card_whose_front_matter_it_cannot_read(overlapping, overconfident, tmp_path, card):
    """Dropping the ECE parsed the card after the fit: broken YAML ended in a traceback, a bad model-index threw the
    finished calibration away. Such a card is the person's to fix; it is copied as it is."""
    (overconfident / "README.md").write_text(card)
    out = tmp_path / "calibrated"
    assert main(["calibrate", "--model", str(overconfident), "--out", str(out), "--data", str(overlapping),
                 "--val-size", "30"]) == 0
    assert (out / "README.md").read_text() == card and "temperature" in json.loads((out / "config.json").read_text())
