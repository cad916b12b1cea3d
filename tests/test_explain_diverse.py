"""Diverse counterfactuals: n seeded random-start paths toward one target, inside the ball, with a diversity score."""

import json

import numpy as np
import pytest
from PIL import Image

from dat_core.checkpoint import save_model
from explain import alternatives
from explain.cli import main


def test_alternatives_are_seeded_inside_the_ball_and_differ(tiny_model):
    image = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    a = alternatives(tiny_model, image, 3, n=4, seed=1, eps=1.5, steps=5, step_size=0.3)
    b = alternatives(tiny_model, image, 3, n=4, seed=1, eps=1.5, steps=5, step_size=0.3)
    c = alternatives(tiny_model, image, 3, n=4, seed=2, eps=1.5, steps=5, step_size=0.3)
    assert np.array_equal(a.images, b.images) and not np.array_equal(a.images, c.images)
    assert a.images.shape == (4, 3, 32, 32) and (a.l2 <= 1.5 + 1e-4).all()
    assert 0 < a.diversity < 2 and len({row.tobytes() for row in a.images}) == 4
    same = a.images.copy()
    a.images = np.repeat(same[:1], 4, axis=0)
    assert a.diversity == 0.0                                   # identical changes: no diversity
    d = b.to_dict()
    assert d["target"] == 3 and d["n"] == 4 and d["params"]["seed"] == 1


def test_alternatives_need_a_finite_ball_and_a_sane_n(tiny_model):
    image = np.zeros((32, 32, 3), dtype=np.uint8)
    with pytest.raises(ValueError, match="finite"):
        alternatives(tiny_model, image, 1, eps=float("inf"))
    with pytest.raises(ValueError, match="from 2 to 16"):
        alternatives(tiny_model, image, 1, n=1)


def test_cli_writes_alternatives(tiny_model, tmp_path, capsys):
    ckpt = save_model(tiny_model, tmp_path / "ckpt")
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / "i.png")
    base = ["counterfactual", "--model", str(ckpt), "--image", str(tmp_path / "i.png"), "--steps", "3",
            "--autocast", "off", "--alternatives", "3"]
    assert main([*base, "--target", "2", "--out", str(tmp_path / "o")]) == 0
    report = json.loads((tmp_path / "o" / "alternatives.json").read_text())
    assert report["n"] == 3 and len(report["confidence"]) == 3 and (tmp_path / "o" / "alternatives.png").is_file()
    assert "3 alternatives: diversity" in capsys.readouterr().out
    assert main([*base, "--target", "all", "--out", str(tmp_path / "o2")]) == 2
