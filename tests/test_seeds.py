"""Seeds for sampling: the shipped seed bank (carved out of training's OOD seeds), class-conditional Gaussians,
and the one entry point `seeds_for` that explain.generate, train eval, the periodic grids and the app share."""

import json
import pickle
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch

from dat_core.data import ImageDataset
from dat_core.data.seeds import (
    CLASS_GAUSSIANS,
    SEED_BANK,
    SEED_KINDS,
    fit_class_gaussians,
    load_class_gaussians,
    load_seed_bank,
    noise_seeds,
    seeds_for,
    write_seed_bank,
)
from dat_core.training.config import load_config
from dat_core.training.data import build_streams, ood_parts, ood_split
from explain import generate
from train.__main__ import main as train_main

ROOT = Path(__file__).resolve().parent.parent


def _cfg(toy, **kw):
    values = {"data.dataset": str(toy), "data.image_size": 16, "data.val_size": 12, "data.ood": str(toy / "ood"),
              "data.ood_holdout": 6, "data.ood_seed_bank": 10, "stage": "stage2", "batch_size": 8, "seed": 3,
              "model.init": "runs/stage1/final"}
    values.update(kw)
    return load_config(None, **values)


def _rows(images) -> set[bytes]:
    return {bytes(x.numpy().tobytes()) for x in images[:]}


def test_seed_bank_is_carved_out_of_the_contrastive_seeds_and_disjoint_from_the_holdout(toy):
    seeds, holdout, bank = ood_parts(_cfg(toy))
    assert (len(seeds), len(holdout), len(bank)) == (24, 6, 10)
    s, h, b = _rows(seeds.images), _rows(holdout.images), _rows(bank.images)
    assert len(s | h | b) == 40 and not (s & b) and not (h & b) and not (s & h)
    # the OOD-evaluation holdout does not move when a bank is carved (old evaluations stay comparable)
    _, holdout_without_bank = ood_split(_cfg(toy, **{"data.ood_seed_bank": 0}))
    assert _rows(holdout_without_bank.images) == h
    assert _rows(ood_split(_cfg(toy))[0].images) == s
    # what training draws as contrastive seeds never contains a bank image
    streams = build_streams(_cfg(toy, **{"data.ood_augment": "none"}), seeds, torch.device("cpu"), 0, 1)
    drawn = set()
    for _ in range(12):
        x = (next(streams["ood"]) * 255).round().to(torch.uint8)
        drawn |= {bytes(v.numpy().tobytes()) for v in x}
    assert drawn == s                                                        # every seed, and only seeds


def test_too_large_a_carve_out_is_refused_by_name(toy):
    with pytest.raises(ValueError, match="data.ood_seed_bank=40 leave no seeds"):
        ood_parts(_cfg(toy, **{"data.ood_seed_bank": 40}))


def test_train_seeds_writes_the_bank_and_gaussians(toy, tmp_path, capsys):
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'stage = "stage2"\nseed = 3\n[model]\ninit = "s1"\n'
                   f'[data]\ndataset = "{toy}"\nimage_size = 16\nval_size = 12\n'
                   f'ood = "{toy / "ood"}"\nood_holdout = 6\nood_seed_bank = 10\n')
    bank_file, gauss_file = tmp_path / "bank.safetensors", tmp_path / "g.safetensors"
    assert train_main(["seeds", "--config", str(cfg), "--bank-out", str(bank_file), "--gaussians-out",
                       str(gauss_file), "--resolution", "4"]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {"bank", "gaussians"}
    bank = load_seed_bank(bank_file)
    assert _rows(bank.images) == _rows(ood_parts(load_config(str(cfg)))[2].images)
    assert "ood_holdout=6" in bank.metadata["how"] and bank.metadata["config"] == "cfg.toml"
    g = load_class_gaussians(gauss_file)
    assert g.class_names == ["class0", "class1", "class2"] and g.resolution == 4
    # the toy classes are red, green and blue: each class's Gaussian has that colour's mean
    assert [int(m.view(3, -1).mean(1).argmax()) for m in g.mean] == [0, 1, 2]
    assert train_main(["seeds", "--config", str(cfg), "data.ood_seed_bank=0", "--gaussians-out", ""]) == 2
    assert "data.ood_seed_bank is 0" in capsys.readouterr().err


def test_the_shipped_bank_and_gaussians():
    bank = load_seed_bank()
    assert bank.images.dtype == torch.uint8 and tuple(bank.images.shape) == (1000, 3, 32, 32)
    assert len(_rows(bank.images)) == 1000                                   # 1,000 distinct photos
    config = tomllib.loads((ROOT / "train/configs" / bank.metadata["config"]).read_text())
    assert config["data"]["ood_seed_bank"] == 1000 and "ood_holdout=2000" in bank.metadata["how"]
    assert bank.metadata["source"] == Path(config["data"]["ood"]).name
    g = load_class_gaussians()
    assert g.class_names[:2] == ["airplane", "automobile"] and g.mean.shape == (10, 3 * g.resolution ** 2)
    assert CLASS_GAUSSIANS.stat().st_size + SEED_BANK.stat().st_size < 8 * 2 ** 20


def test_seeds_for_every_kind_is_seeded_and_sized():
    targets = [0, 1, 2, 3, 0, 1]
    for kind in SEED_KINDS:
        a = seeds_for(kind, targets, 48, torch.Generator().manual_seed(5))
        b = seeds_for(kind, targets, 48, torch.Generator().manual_seed(5))
        c = seeds_for(kind, targets, 48, torch.Generator().manual_seed(6))
        assert a.shape == (6, 3, 48, 48) and a.dtype == torch.float32 and 0 <= a.min() and a.max() <= 1
        assert torch.equal(a, b) and not torch.equal(a, c), kind
    # uniform noise is what noise_seeds always gave (old seeds reproduce old samples)
    assert torch.equal(seeds_for("uniform", targets, 32, torch.Generator().manual_seed(1)),
                       noise_seeds(6, 32, "uniform", seed=1))
    # the bank hands out distinct photos until it runs out
    x = seeds_for("bank", list(range(10)) * 100, 32, torch.Generator().manual_seed(0))
    assert len({bytes(v.mul(255).round().to(torch.uint8).numpy().tobytes()) for v in x}) == 1000
    with pytest.raises(ValueError, match="seeds must be one of bank, gaussian, uniform, lowfreq"):
        seeds_for("photos", targets, 32, torch.Generator())


def test_gaussian_seeds_refuse_another_label_set_and_out_of_range_classes():
    with pytest.raises(ValueError, match="fitted on other classes"):
        seeds_for("gaussian", [0], 32, torch.Generator(), class_names=[f"n{i}" for i in range(10)])
    with pytest.raises(ValueError, match="know 10 classes"):
        seeds_for("gaussian", [10], 32, torch.Generator())


def test_fitted_gaussians_reproduce_the_class_statistics():
    rng = np.random.default_rng(0)
    n, k = 4000, 2
    labels = torch.arange(n) % k
    base = torch.tensor([[0.2, 0.5, 0.8], [0.7, 0.3, 0.4]])[labels][:, :, None, None]
    images = (base + 0.1 * torch.from_numpy(rng.standard_normal((n, 3, 4, 4))).float()).clamp(0, 1)
    data = ImageDataset(images.mul(255).round().to(torch.uint8), labels, ["a", "b"])
    g = fit_class_gaussians(data, resolution=4)
    drawn = g.draw(torch.ones(n, dtype=torch.long), 4, torch.Generator().manual_seed(0))
    real = images[labels == 1]
    assert torch.allclose(drawn.mean(0), real.mean(0), atol=0.01)
    assert torch.allclose(drawn.std(0), real.std(0), atol=0.01)
    with pytest.raises(ValueError, match="labeled"):
        fit_class_gaussians(ImageDataset(data.images, torch.full((n,), -1), []))


def test_seed_files_are_never_unpickled(tmp_path):
    evil = tmp_path / "bank.safetensors"
    evil.write_bytes(pickle.dumps({"images": "boom"}))
    for load in (load_seed_bank, load_class_gaussians):
        with pytest.raises(ValueError, match="not a safetensors file"):
            load(evil)
    with pytest.raises(FileNotFoundError, match="python -m train seeds"):
        load_seed_bank(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="uint8 N x 3 x S x S"):
        write_seed_bank(tmp_path / "b.safetensors", torch.zeros(2, 3, 4, 4), {})


def test_a_write_that_fails_midway_keeps_the_old_file(tmp_path, monkeypatch):
    """`train seeds` rewrites the shipped assets/seeds files in place: a write cut short (a full disk, a kill)
    used to leave a truncated bank that no sampling could read. Now the old file stays whole."""
    path = write_seed_bank(tmp_path / "bank.safetensors", torch.full((2, 3, 4, 4), 7, dtype=torch.uint8), {"v": 1})
    before = path.read_bytes()

    def cut_short(self, data):
        with open(self, "wb") as f:
            f.write(data[:10])                     # the first bytes reached the disk, then it filled up
        raise OSError(28, "No space left on device", str(self))
    monkeypatch.setattr(Path, "write_bytes", cut_short)
    with pytest.raises(OSError, match="No space left"):
        write_seed_bank(path, torch.zeros(2, 3, 4, 4, dtype=torch.uint8), {"v": 2})
    assert path.read_bytes() == before and load_seed_bank(path).metadata["v"] == "1"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bank.safetensors"]   # no temporary file left


def test_generate_starts_from_the_bank_by_default(tiny_model):
    default = generate(tiny_model, [0, 1], seed=2, steps=2)
    assert default.params["seeds"] == "bank"
    again = generate(tiny_model, [0, 1], seed=2, steps=2, seeds="bank")
    assert np.array_equal(default.images, again.images)
    noise = generate(tiny_model, [0, 1], seed=2, steps=2, seeds="uniform")
    assert not np.array_equal(default.images, noise.images)


def test_noise_mixed_into_the_ood_seeds_is_a_fixed_share_and_resumes_exactly(toy):
    cfg = _cfg(toy, **{"data.ood_augment": "none", "data.ood_noise_fraction": 0.25})
    seeds, _, _ = ood_parts(cfg)
    mixed = build_streams(cfg, seeds, torch.device("cpu"), 0, 1)["ood"]
    plain = build_streams(_cfg(toy, **{"data.ood_augment": "none"}), seeds, torch.device("cpu"), 0, 1)["ood"]
    a, b = next(mixed), next(plain)
    assert torch.equal(a[2:], b[2:]) and not torch.equal(a[:2], b[:2])       # 2 of 8 replaced, the rest kept
    smooth = (a[1, :, 1:] - a[1, :, :-1]).abs().mean() < (a[0, :, 1:] - a[0, :, :-1]).abs().mean() / 3
    assert smooth                                                             # row 0 uniform, row 1 lowfreq
    state = mixed.state_dict()
    after = next(mixed)
    mixed.load_state_dict(state)
    assert torch.equal(next(mixed), after)


def test_train_seeds_checks_everything_before_it_writes_a_file(toy, tmp_path, capsys):
    """`train seeds` wrote the bank and only then found the dataset missing (one file of the pair replaced); took
    one path for both files (the bank silently overwritten), a path of spaces as a file name, an unwritable place
    as a SafetensorError traceback, and --resolution 64 as a 46 GB allocation traceback."""
    cfg = tmp_path / "cfg.toml"
    cfg.write_text(f'stage = "stage2"\nseed = 3\n[model]\ninit = "s1"\n'
                   f'[data]\ndataset = "{toy}"\nimage_size = 16\nval_size = 12\n'
                   f'ood = "{toy / "ood"}"\nood_holdout = 6\nood_seed_bank = 10\n')
    bank, gauss = tmp_path / "out" / "bank.safetensors", tmp_path / "out" / "g.safetensors"

    def seeds(*args):
        return train_main(["seeds", "--config", str(cfg), "--resolution", "4", *args])
    assert seeds("--bank-out", str(bank), "--gaussians-out", str(gauss), f"data.dataset={tmp_path / 'none'}") == 2
    assert "does not exist" in capsys.readouterr().err and not bank.exists()
    assert seeds("--bank-out", str(bank), "--gaussians-out", str(bank)) == 2
    assert "the same file" in capsys.readouterr().err and not bank.exists()
    assert seeds("--bank-out", " ", "--gaussians-out", "") == 2
    assert "--bank-out" in capsys.readouterr().err and not (Path.cwd() / " ").exists()
    assert seeds("--bank-out", "/proc/y.safetensors", "--gaussians-out", "") == 2
    assert "cannot write" in capsys.readouterr().err
    with pytest.raises(SystemExit, match="2"):
        train_main(["seeds", "--config", str(cfg), "--bank-out", "", "--gaussians-out", str(gauss),
                    "--resolution", "64"])
    assert "--resolution: expected an integer in 1..32" in capsys.readouterr().err and not gauss.exists()


def test_imagenet_size_models_take_the_imagenet_sampling_budget_at_every_size():
    """From 128 px the step is the paper's 8.0, but only 224 and 256 px took its 20 steps: a 128, 192 or 288 px
    model walked 33 steps of 8.0, a path 65 % longer than at 224 px."""
    from dat_core.sampling import IMAGENET_MIN_SIZE, default_step_size, default_steps

    budgets = {size: (default_steps(size), default_step_size(size)) for size in (128, 160, 192, 224, 256, 288, 384)}
    assert set(budgets.values()) == {(20, 8.0)}, budgets
    assert default_steps(32) == 33 and default_steps(IMAGENET_MIN_SIZE - 1) == 33
