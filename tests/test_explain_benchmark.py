"""Counterfactual benchmark (explain.benchmark, `python -m explain benchmark`) on a tiny random model and synthetic
images: metrics match a recomputation, the realism number equals a NumPy/SciPy Fréchet distance on the same
features, a stopped run resumes from its saved batches, and --layout ace writes the DiME/ACE tree."""

import argparse
import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_generative_metrics import reference_frechet

from dat_core import build_model
from dat_core.checkpoint import save_model
from dat_core.energy import probabilities
from dat_core.evaluation.generative import features_of, frechet_from_features
from dat_core.loading import load_model
from dat_core.pgd import pgd, threat_model
from explain import benchmark as bm
from explain.cli import main
from explain.image import to_model_input
from explain.image_sets import load_image_set

NAMES = ["cat-0000.png", "cat-0002.png", "ship-0001.png", "ship-0003.png"]  # the order a folder is read in
PAIRS = "source,target\ncat,ship  # a comment\nship,cat\ncat,dog\n"


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("bench"))


def make_setup(d: Path) -> Path:
    """Two tiny checkpoints in `d` (the explained model and an independent judge), four labelled 32 px images and
    a pairs file."""
    torch.manual_seed(0)
    save_model(build_model("wrn-10-1").eval(), d / "model")
    torch.manual_seed(1)
    save_model(build_model("wrn-10-1").eval(), d / "judge")
    rng = np.random.default_rng(0)
    (d / "imgs").mkdir()
    for name in NAMES:
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(d / "imgs" / name)
    (d / "pairs.csv").write_text(PAIRS)
    return d


def command(d, out, *extra):
    return ["benchmark", "--model", str(d / "model"), "--images", str(d / "imgs"), "--pairs", str(d / "pairs.csv"),
            "--eps", "0.5,inf", "--steps", "4", "--step-size", "0.4", "--batch-size", "2", "--autocast", "off",
            "--compile", "off", "--feature-model", str(d / "judge"), "--transfer-model", str(d / "judge"),
            "--out", str(out), *extra]


@pytest.fixture(scope="module")
def run(setup, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench-out")
    assert main(command(setup, out, "--layout", "ace", "--minimal", "2", "--gallery", "3")) == 0
    return setup, out


def test_pairs_follow_the_file_and_metrics_match_a_recomputation(run):
    d, out = run
    report = json.loads((out / "benchmark.json").read_text())
    # cats go to ship and dog (2 x 2), ships to cat (2 x 1)
    assert report["pairs"] == 6 and report["images"] == 4 and [r["eps"] for r in report["radii"]] == [0.5, "inf"]
    assert report["device"] == "cpu"   # where its seconds were spent (a timing says on which device)
    assert "bf16 autocast off, on cpu" in (out / "report.md").read_text()
    model = load_model(str(d / "model")).eval()
    x = torch.cat([to_model_input(d / "imgs" / n, 32) for n in NAMES])
    jobs = bm.make_jobs([3, 3, 8, 8], 10, bm.read_pairs(d / "pairs.csv", model.config["class_names"]))
    y = torch.from_numpy(jobs[:, 2])
    for entry, eps in zip(report["radii"], (0.5, float("inf"))):
        xt = pgd(model, x[jobs[:, 0]], y, threat_model("L2", eps, 0.4), 4, objective="target_logit").x
        with torch.no_grad():
            logits = model(xt)
        p = probabilities(logits).gather(1, y[:, None]).squeeze(1)
        valid = (p >= 0.5) & (logits.argmax(1) == y)
        l2 = (xt - x[jobs[:, 0]]).flatten(1).norm(dim=1)
        assert entry["validity"] == pytest.approx(valid.float().mean().item())
        assert entry["mean_target_confidence"] == pytest.approx(p.mean().item(), abs=1e-5)
        assert entry["closeness"]["mean_l2"] == pytest.approx(l2.mean().item(), abs=1e-5)
        assert entry["closeness"]["mean_linf"] <= entry["closeness"]["mean_l2"] + 1e-6
        assert 0 <= entry["closeness"]["fraction_changed"] <= 1 and entry["transfer"] is not None
    assert report["radii"][0]["closeness"]["mean_l2"] <= 0.5 + 1e-4 < report["radii"][1]["closeness"]["mean_l2"]
    m = report["minimal_radius"]
    assert m["pairs"] == 2 and len(m["per_class_pair"]) == 10
    for name in ("curves.png", "minimal_radius.png", "gallery_best.png", "gallery_worst.png", "report.md"):
        assert (out / name).stat().st_size > 0
    assert Image.open(out / "gallery_best.png").size == (3 * (32 * 3 + 2) + 2,) * 2  # 3 rows of x_0, x_T, diff
    assert "Fréchet distance in penultimate features of judge" in (out / "report.md").read_text()
    assert "FID" not in (out / "report.md").read_text().replace("(not FID)", "")


def test_realism_compares_the_counterfactual_features_with_real_target_class_features(run):
    d, out = run
    report = json.loads((out / "benchmark.json").read_text())
    judge = load_model(str(d / "judge")).eval()
    x = torch.cat([to_model_input(d / "imgs" / n, 32) for n in NAMES])
    real = features_of(judge, x)
    cf = bm.read_parts(out / "parts", "r0")["features"]
    # dog has no real images: only the 4 cat->ship / ship->cat pairs count
    keep = [1, 3, 4, 5]  # image-major jobs: cat0->dog, cat0->ship, cat2->dog, cat2->ship, ship1->cat, ship3->cat
    realism = report["radii"][0]["realism"]
    assert realism["n"] == 4 and realism["feature_space"] == "penultimate features of judge (wrn-10-1)"
    targets_real = real  # the real cats then ships, one per counterfactual of that target class
    assert realism["frechet_distance"] == pytest.approx(
        frechet_from_features(targets_real, torch.from_numpy(cf[keep]).double()), rel=1e-9)
    assert realism["frechet_distance_originals"] == pytest.approx(
        frechet_from_features(targets_real, real[[0, 1, 2, 3]]), abs=1e-9)
    # per target class: cat (index 3) from the two ship->cat pairs, ship (8) from the two cat->ship pairs
    cc = realism["class_conditional"]
    expected = {3: frechet_from_features(real[[0, 1]], torch.from_numpy(cf[[4, 5]]).double()),
                8: frechet_from_features(real[[2, 3]], torch.from_numpy(cf[[1, 3]]).double())}
    assert cc["classes"] == 2 and {int(k): v for k, v in cc["per_class"].items()} == pytest.approx(expected)
    assert cc["frechet_distance_originals"] == pytest.approx(
        np.mean([frechet_from_features(real[[0, 1]], real[[2, 3]]), frechet_from_features(real[[2, 3]], real[[0, 1]])]))
    means = [((cf[pairs].mean(0) - real[c].numpy().mean(0)) ** 2).sum() for pairs, c in (([4, 5], [0, 1]),
                                                                                           ([1, 3], [2, 3]))]
    assert cc["mean_term"] == pytest.approx(np.mean(means), rel=1e-6)
    assert f"| {cc['mean_term']:.2f} | {cc['progress']:.2f} |" in (out / "report.md").read_text()


def test_realism_equals_a_scipy_frechet_distance_on_the_same_features(tiny_model):
    """Enough images per set for full-rank covariances (64 features), targets in unequal proportions."""
    pytest.importorskip("scipy")
    g = torch.Generator().manual_seed(3)
    real_images, real_labels = torch.rand(120, 3, 32, 32, generator=g), np.arange(120) % 3
    real = features_of(tiny_model, real_images).numpy()
    jobs = np.stack([np.arange(150) % 120, real_labels[np.arange(150) % 120], (np.arange(150) % 5).clip(0, 2)], 1)
    cf = features_of(tiny_model, (real_images[jobs[:, 0]] * 0.7 + 0.1).clamp(0, 1)).numpy()
    ours = bm.realism(cf, jobs, real, real_labels, "tiny")
    counts = np.bincount(jobs[:, 2], minlength=3)          # 30, 30, 90 counterfactuals per target class
    reference_real = np.concatenate([np.tile(real[real_labels == c], (-(-counts[c] // 40), 1))[:counts[c]]
                                     for c in range(3)])
    assert ours["n"] == 150
    assert ours["frechet_distance"] == pytest.approx(reference_frechet(reference_real, cf), rel=1e-6)
    assert ours["frechet_distance_originals"] == pytest.approx(reference_frechet(reference_real, real[jobs[:, 0]]),
                                                               rel=1e-6)


def test_class_conditional_realism_equals_scipy_per_class_and_sees_unchanged_images():
    """Per target class against SciPy, on 6-dim features (full-rank covariances); and the reason it exists: with
    all-others pairs, 'counterfactuals' that are the unchanged originals score ~0 pooled but far per class."""
    pytest.importorskip("scipy")
    rng = np.random.default_rng(0)
    labels = np.arange(90) % 3
    real = rng.normal(size=(90, 6)) + labels[:, None] * 2.0           # three separated classes
    jobs = bm.make_jobs(labels, 3)                                    # all-others: 180 pairs
    moved = real[jobs[:, 0]] + (jobs[:, 2] - jobs[:, 1])[:, None] * 2.0 + rng.normal(0, 0.3, (len(jobs), 6))
    cc = bm.class_conditional_frechet(moved, jobs[:, 2], real, labels, real[jobs[:, 0]])
    expected = [reference_frechet(real[labels == c], moved[jobs[:, 2] == c]) for c in range(3)]
    started = [reference_frechet(real[labels == c], real[jobs[jobs[:, 2] == c, 0]]) for c in range(3)]
    assert cc["classes"] == 3 and cc["per_class"] == pytest.approx(dict(enumerate(expected)), rel=1e-6)
    assert cc["frechet_distance"] == pytest.approx(np.mean(expected), rel=1e-6)
    assert cc["frechet_distance_originals"] == pytest.approx(np.mean(started), rel=1e-6)
    centres = [real[labels == c].mean(0) for c in range(3)]
    assert cc["mean_term"] == pytest.approx(np.mean([((moved[jobs[:, 2] == c].mean(0) - centres[c]) ** 2).sum()
                                                     for c in range(3)]), rel=1e-9)
    assert cc["mean_term_originals"] == pytest.approx(np.mean(
        [((real[jobs[jobs[:, 2] == c, 0]].mean(0) - centres[c]) ** 2).sum() for c in range(3)]), rel=1e-9)
    assert 0 < cc["mean_term"] <= cc["frechet_distance"]  # the covariances' part is a squared distance, >= 0
    assert cc["mean_term_originals"] <= cc["frechet_distance_originals"]
    unchanged = bm.realism(real[jobs[:, 0]], jobs, real, labels, "toy")
    assert unchanged["frechet_distance"] < 0.05                        # pooled: blind to the missing change
    assert unchanged["class_conditional"]["frechet_distance"] > 10 * cc["frechet_distance"] > 0
    assert bm.class_conditional_frechet(moved[:1], jobs[:1, 2], real, labels, real[:1]) is None


def test_progress_says_how_far_toward_the_class_the_counterfactuals_went():
    """Class means at the corners of a simplex (no class sits at its sources' average): moving every original by
    the difference of class means reaches the target's mean (progress 1), half of it 0.5, twice 2, whatever the
    spread of the moved images; and the mean term is zero exactly where progress is 1."""
    rng = np.random.default_rng(1)
    labels = np.arange(300) % 3
    centres = np.eye(3, 5) * 4.0
    real = rng.normal(size=(300, 5)) + centres[labels]
    jobs = bm.make_jobs(labels, 3)
    sample_means = np.stack([real[labels == c].mean(0) for c in range(3)])
    for scale in (0.5, 1.0, 2.0):
        moved = real[jobs[:, 0]] + scale * (sample_means[jobs[:, 2]] - sample_means[jobs[:, 1]])
        moved += rng.normal(0, 0.5, moved.shape)  # extra spread: the mean hardly moves
        cc = bm.class_conditional_frechet(moved, jobs[:, 2], real, labels, real[jobs[:, 0]])
        assert cc["progress"] == pytest.approx(scale, abs=0.03)
        assert (cc["mean_term"] < 0.05) == (scale == 1.0)


def test_ace_layout_lines_originals_and_counterfactuals_up_by_name(run):
    _, out = run
    root = out / "ace" / "eps_0.5"
    originals = sorted(p.name for p in (root / "Original").rglob("*.png"))
    cfs = sorted(p.name for p in (root / "Results" / "benchmark").rglob("CF/*.png"))
    assert originals == cfs == [f"{n:07d}.png" for n in range(6)]
    for info in (root / "Results" / "benchmark").rglob("Info/*.txt"):
        fields = dict(line.split(": ") for line in info.read_text().splitlines())
        if info.parent.parent.name == "CCF":              # valid: flipped to the target
            assert fields["cf pred"] == fields["target"]
        correct = info.parent.parent.parent.name == "CC"
        assert correct == (fields["label"] == fields["pred"])
    assert (out / "ace" / "eps_inf").is_dir()


def test_a_stopped_run_resumes_from_its_saved_batches(setup, tmp_path, capsys):
    assert main(command(setup, tmp_path, "--feature-model", "none")) == 0
    first = json.loads((tmp_path / "benchmark.json").read_text())
    parts = sorted((tmp_path / "parts").glob("*.npz"))
    assert len(parts) == 6                               # 2 radii x 3 batches of 2 pairs
    lost = parts[2]
    lost.unlink()                                        # as if stopped while this batch ran
    kept = {p: p.stat().st_mtime_ns for p in parts if p != lost}
    assert main(command(setup, tmp_path, "--feature-model", "none")) == 0
    assert lost.is_file() and all(p.stat().st_mtime_ns == t for p, t in kept.items())
    again = json.loads((tmp_path / "benchmark.json").read_text())
    assert again["radii"] == first["radii"] and first["radii"][0]["realism"] is None
    capsys.readouterr()
    assert main(command(setup, tmp_path, "--feature-model", "none", "--steps", "5")) == 2
    assert "other settings (steps differ)" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:   # a usage error, before anything is made
        main(command(setup, tmp_path / "new", "--step-size", "-1"))
    assert refused.value.code == 2 and "expected a finite number > 0" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_a_run_resumes_under_other_spellings_of_the_same_paths(setup, tmp_path, monkeypatch, capsys):
    """The images and models are recognised by their contents (run.json's sha256s), not by how their paths are
    written: a relative path, a symlink or a copy continues the run; other contents are still refused."""
    out = tmp_path / "out"
    assert main(command(setup, out, "--feature-model", "none")) == 0
    parts = {p: p.stat().st_mtime_ns for p in (out / "parts").glob("*.npz")}
    (tmp_path / "linked").symlink_to(setup / "imgs")
    shutil.copytree(setup / "model", tmp_path / "copied")
    monkeypatch.chdir(setup)
    again = command(setup, out, "--feature-model", "none")
    for flag, where in (("--model", "../" + setup.name + "/model"), ("--images", str(tmp_path / "linked")),
                        ("--transfer-model", "judge")):
        again[again.index(flag) + 1] = where
    assert main(again) == 0, capsys.readouterr().err
    again[again.index("--model") + 1] = str(tmp_path / "copied")
    assert main(again) == 0, capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (out / "parts").glob("*.npz")} == parts   # nothing ran again
    torch.manual_seed(2)
    save_model(build_model("wrn-10-1").eval(), tmp_path / "other")
    again[again.index("--model") + 1] = str(tmp_path / "other")
    assert main(again) == 2 and "other settings (model_sha256 differ)" in capsys.readouterr().err


def test_a_run_started_before_model_configs_were_fingerprinted_resumes(setup, tmp_path, capsys):
    """run.json of earlier versions holds each model's sha256 of its weights alone: a resume after the upgrade
    continues such a run when the weights match (and records the new fingerprints), and still refuses other
    weights."""
    from explain.benchmark_parts import sha256_of

    out = tmp_path / "out"
    assert main(command(setup, out, "--feature-model", "none")) == 0
    parts = {p: p.stat().st_mtime_ns for p in (out / "parts").glob("*.npz")}
    settings = json.loads((out / "run.json").read_text())
    current = {k: settings[k] for k in ("model_sha256", "transfer_model_sha256")}
    weights_only = {k: sha256_of(list(load_model(str(setup / name)).state_dict().values()))
                    for k, name in (("model_sha256", "model"), ("transfer_model_sha256", "judge"))}
    (out / "run.json").write_text(json.dumps({**settings, **weights_only}))
    assert main(command(setup, out, "--feature-model", "none")) == 0, capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in (out / "parts").glob("*.npz")} == parts
    assert {k: json.loads((out / "run.json").read_text())[k] for k in current} == current
    (out / "run.json").write_text(json.dumps({**settings, **weights_only, "model_sha256": "0" * 64}))
    assert main(command(setup, out, "--feature-model", "none")) == 2
    assert "other settings (model_sha256 differ)" in capsys.readouterr().err


@pytest.mark.parametrize("compiled", ["off", "on"])
def test_a_pairs_counterfactual_does_not_depend_on_its_batch(setup, tmp_path, compiled):
    """Seen on an H200 (compiled, bf16): validity fell as batches grew (95.5 % at 256 pairs a batch, 92.8 % at
    1,024, 90.2 % at 4,096) while eager runs gave equal numbers. Each pair's path is its own: batching may only
    change float rounding."""
    runs = []
    for batch in (1, 6):
        out = tmp_path / f"batch{batch}"
        assert main(command(setup, out, "--feature-model", "none", "--eps", "0.5", "--batch-size", str(batch),
                            "--compile", compiled)) == 0
        parts = sorted((out / "parts").glob("*.npz"))
        assert len(parts) == 6 // batch
        runs.append({k: np.concatenate([np.load(p)[k] for p in parts]) for k in ("p_target", "l2", "images")})
    one, six = runs
    assert np.abs(one["images"].astype(int) - six["images"].astype(int)).max() <= 1
    np.testing.assert_allclose(one["p_target"], six["p_target"], atol=1e-4)
    np.testing.assert_allclose(one["l2"], six["l2"], atol=1e-4)


def test_linf_radii_are_said_as_typed(setup, tmp_path, capsys):
    """Lines, report.md and gallery titles say 8/255 (as --eps was typed), not 0.0313725; the ACE folders keep
    names without a slash."""
    out = tmp_path / "linf"
    args = command(setup, out, "--feature-model", "none", "--norm", "Linf", "--eps", "8/255", "--layout", "ace")
    args[args.index("--step-size") + 1] = "2/255"
    assert main(args) == 0
    assert "eps 8/255: validity" in capsys.readouterr().out
    report = (out / "report.md").read_text()
    assert "| 8/255 |" in report and "at radius 8/255" in report and "0.0313725" not in report
    assert (out / "ace" / "eps_0.0313725").is_dir()


@pytest.mark.parametrize("norm, radii", [("L2", "1,1.0000001"), ("Linf", "8/255,0.03137255")])
def test_radii_that_would_share_a_name_are_refused_before_any_work(setup, tmp_path, capsys, norm, radii):
    """--eps 1,1.0000001 wrote "wrote ace/eps_1" twice (the second tree replaced the first) and gave two "1" rows."""
    out = tmp_path / "same"
    args = command(setup, out, "--norm", norm, "--eps", radii, "--layout", "ace", "--feature-model", "none")
    args[args.index("--step-size") + 1] = "0.01"
    assert main(args) == 2
    assert "one name" in capsys.readouterr().err and not out.exists()


def test_jobs_are_image_major_and_follow_the_pairs():
    assert bm.make_jobs([0, 2], 3).tolist() == [[0, 0, 1], [0, 0, 2], [1, 2, 0], [1, 2, 1]]
    assert bm.make_jobs([0, 2], 3, {(2, 1)}).tolist() == [[1, 2, 1]]
    with pytest.raises(ValueError, match="no \\(image, target\\) pairs"):
        bm.make_jobs([1], 3, {(2, 1)})


def test_random_other_draws_one_other_class_per_image_as_the_official_evaluation():
    """y' = (y + u) mod K, u uniform in 1..K-1 (official `generate_indist_adv_images`), seeded: never the image's
    own class, every other class about equally often, the same draw every run."""
    labels = np.arange(3000) % 10
    jobs = bm.make_jobs(labels, 10, bm.RANDOM_OTHER)
    assert jobs.shape == (3000, 3) and (jobs[:, 0] == np.arange(3000)).all() and (jobs[:, 1] == labels).all()
    assert (jobs[:, 2] != labels).all() and np.array_equal(jobs, bm.make_jobs(labels, 10, bm.RANDOM_OTHER))
    shifts = np.bincount((jobs[:, 2] - labels) % 10, minlength=10)
    assert shifts[0] == 0 and shifts[1:].min() > 3000 / 9 * 0.8
    assert not np.array_equal(jobs, bm.make_jobs(labels, 10, bm.RANDOM_OTHER, seed=1))


def test_random_other_on_the_command_line(setup, tmp_path):
    args = command(setup, tmp_path / "random", "--feature-model", "none", "--eps", "inf")
    args[args.index("--pairs") + 1] = "random-other"
    assert main(args) == 0
    report = json.loads((tmp_path / "random" / "benchmark.json").read_text())
    assert report["pairs"] == len(NAMES) and report["pairs_from"] == "random-other"
    assert "(image, target) pairs (random-other)" in (tmp_path / "random" / "report.md").read_text()


@pytest.mark.parametrize("text, match", [("cat;dog\n", "expected 'source,target'"), ("cat,cat\n", "same class"),
                                         ("# nothing\n", "no class pairs"),
                                         ("cat,dog\ncat,horse\n", "p.csv line 2: unknown class"),
                                         (b"\xfa\x00\x81", "p.csv is not UTF-8 text")])
def test_bad_pairs_files_say_what_is_wrong(tmp_path, text, match):
    (tmp_path / "p.csv").write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(ValueError, match=match):
        bm.read_pairs(tmp_path / "p.csv", ["cat", "dog", "ship"])


@pytest.mark.parametrize("data", [b"\xef\xbb\xbfcat,dog\r\nship,cat\r\n",
                                  b"\xef\xbb\xbfsource,target\ncat,dog\nship,cat\n",
                                  b'"cat","dog"\n"ship", "cat"\n',
                                  b"source , target\n cat , dog # a comment\nship,cat"])
def test_pairs_files_as_spreadsheets_save_them_are_read(tmp_path, data):
    """Excel's "CSV UTF-8" starts with a byte-order mark: 'unknown class '\\ufeffcat''; quoted cells were refused."""
    (tmp_path / "p.csv").write_bytes(data)
    assert bm.read_pairs(tmp_path / "p.csv", ["cat", "dog", "ship"]) == {(0, 1), (2, 0)}


def test_a_limited_carve_out_spreads_over_the_classes(toy):
    args = argparse.Namespace(data=str(toy), split="train", val_size=30, seed=0, limit=6, images=None)
    images, labels, names = load_image_set(args, ["class0", "class1", "class2"], 16)
    assert sorted(labels) == [0, 0, 1, 1, 2, 2] and len(set(names)) == 6 and images[0].shape == (1, 3, 16, 16)


def test_a_limited_folder_spreads_over_the_classes_its_names_give(tmp_path):
    """--images with --limit took the first N files by name: --limit 2 on the bundled examples ran two airplanes.
    It now takes the classes in turn (file names CLASS-*.ext), unlabelled files as one more group."""
    from PIL import Image
    for name in ("cat-0", "cat-1", "cat-2", "dog-0", "dog-1", "ship-0", "photo"):
        Image.new("RGB", (8, 8), (len(name) * 20, 40, 90)).save(tmp_path / f"{name}.png")
    args = argparse.Namespace(data=None, split=None, val_size=None, seed=None, images=str(tmp_path), limit=4)
    _, labels, names = load_image_set(args, ["cat", "dog", "ship"], 8)
    assert sorted(labels, key=str) == sorted([0, 1, 2, None], key=str)
    assert names == sorted(names)                                       # still in name order
    args.limit = 6
    _, labels, _ = load_image_set(args, ["cat", "dog", "ship"], 8)
    assert sorted(labels, key=str) == sorted([0, 0, 1, 1, 2, None], key=str)


def test_guide_steers_the_explained_model_and_a_full_cone_changes_nothing(setup, tmp_path, capsys):
    """--guide: each step follows the explained model's gradient turned toward the guide's; a 180° cone is
    no guidance (bit-identical counterfactuals), a 0° cone follows the guide's direction only."""
    d = setup
    base = ("--feature-model", "none", "--transfer-model", "none", "--eps", "inf")
    results = {}
    for name, extra in {"plain": (), "full": ("--guide", str(d / "judge"), "--cone-angle", "180"),
                        "tight": ("--guide", str(d / "judge"), "--cone-angle", "0")}.items():
        assert main(command(d, tmp_path / name, *base, *extra)) == 0
        parts = sorted((tmp_path / name / "parts").glob("*.npz"))
        results[name] = np.concatenate([np.load(p)["images"] for p in parts])
    assert np.array_equal(results["full"], results["plain"]) and not np.array_equal(results["tight"], results["plain"])
    report = json.loads((tmp_path / "tight" / "benchmark.json").read_text())
    assert report["guide"] == "judge" and report["cone_angle"] == 0
    assert "guided by judge (cone of 0°)" in (tmp_path / "tight" / "report.md").read_text()
    # a 0° cone moves x along the guide's normalized gradient: the first step equals the guide's own PGD step
    model, guide = load_model(str(d / "model")), load_model(str(d / "judge"))
    x0 = torch.cat([to_model_input(d / "imgs" / n, 32) for n in NAMES[:2]])
    y = torch.tensor([8, 8])  # cat -> ship, as the pairs file's first jobs
    one = bm.run_batch(model, x0, y, norm="L2", eps=math.inf, step_size=0.4, steps=1, objective="target_logit",
                       autocast=False, judges=bm.Judges(None, "", None, ""), guide=guide, cone_angle=0.0)
    own = pgd(guide, x0, y, threat_model("L2", math.inf, 0.4), 1, objective="target_logit").x
    assert np.array_equal(one["images"], own.clamp(0, 1).mul(255).add(0.5).floor().byte().numpy())
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main(command(d, tmp_path / "bad", *base, "--guide", str(d / "judge"), "--cone-angle", "200"))
    assert exit_.value.code == 2 and "--cone-angle: expected a number in 0..180" in capsys.readouterr().err
    assert main(command(d, tmp_path / "bad", *base, "--cone-angle", "10")) == 2   # no --guide: it would do nothing
    assert "--cone-angle goes with --guide" in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_stop_at_keeps_each_pairs_first_iterate_that_reaches_the_confidence(setup):
    """--stop-at P: a pair's counterfactual is the first x_t of its own full path with p(target) >= P (x_T when
    none gets there), found independently here from every recorded frame of the plain run."""
    model = load_model(str(setup / "model"))
    x0 = torch.cat([to_model_input(setup / "imgs" / n, 32) for n in NAMES])
    x0, y = x0.repeat(2, 1, 1, 1), torch.tensor([8, 3, 1, 8, 0, 5, 9, 2])
    threat, steps = threat_model("L2", math.inf, 0.4), 6
    full = pgd(model, x0, y, threat, steps, objective="target_logit", record_every=1)
    p = full.logits.softmax(-1)[:, torch.arange(len(y)), y]   # (frames, pairs): p(target) of every x_t
    tau = float(p[steps // 2].median())          # some pairs get there early, some late or never
    reached = p >= tau
    first = torch.where(reached.any(0), reached.float().argmax(0), torch.full((len(y),), steps))
    assert len(set(first.tolist())) >= 3         # the test sees pairs stopping at different steps
    expected = full.frames[first, torch.arange(len(y))]
    none = bm.Judges(None, "", None, "")
    got = bm.run_batch(model, x0, y, norm="L2", eps=math.inf, step_size=0.4, steps=steps, objective="target_logit",
                       autocast=False, judges=none, stop_at=tau)
    assert np.array_equal(got["step"], first.numpy())
    assert np.array_equal(got["images"], expected.clamp(0, 1).mul(255).add(0.5).floor().byte().numpy())
    plain = bm.run_batch(model, x0, y, norm="L2", eps=math.inf, step_size=0.4, steps=steps, objective="target_logit",
                         autocast=False, judges=none)
    assert (plain["step"] == steps).all() and not np.array_equal(plain["images"], got["images"])
    with pytest.raises(ValueError, match=r"lie in \(0, 1\)"):
        bm.run_batch(model, x0, y, norm="L2", eps=math.inf, step_size=0.4, steps=steps, objective="target_logit",
                     autocast=False, judges=none, stop_at=1.0)


class Counting(torch.nn.Module):
    """The model, counting the rows of the batches it is called on with a gradient (PGD steps)."""

    def __init__(self, model):
        super().__init__()
        self.model, self.calls, self.rows = model, 0, 0

    def forward(self, x):
        if torch.is_grad_enabled():
            self.calls, self.rows = self.calls + 1, self.rows + len(x)
        return self.model(x)


def test_a_path_that_ends_early_hands_its_row_to_the_next_pair(setup, tmp_path):
    """A pool of 3 rows runs 8 pairs: each ends at its own first iterate with p(target) >= P, whenever its row
    took it, exactly as in one full batch of all 8; and it needs fewer steps than fixed batches of 3 would."""
    model = load_model(str(setup / "model"))
    x0 = torch.cat([to_model_input(setup / "imgs" / n, 32) for n in NAMES]).repeat(2, 1, 1, 1)
    y = torch.tensor([8, 3, 1, 8, 0, 5, 9, 2])
    jobs = np.stack([np.arange(8), np.zeros(8, dtype=np.int64), y.numpy()], 1)
    steps, none = 6, bm.Judges(None, "", None, "")
    full = pgd(model, x0, y, threat_model("L2", math.inf, 0.4), steps, objective="target_logit", record_every=1)
    middle = full.logits.softmax(-1)[steps // 2, torch.arange(8), y].sort().values[3:5]
    tau = float(middle.mean())               # between two pairs' p: other rows may change p by float rounding
    request = dict(norm="L2", eps=math.inf, step_size=0.4, steps=steps, objective="target_logit", autocast=False,
                   judges=none, stop_at=tau)
    whole = bm.run_batch(model, x0, y, **request)
    counting = Counting(model)
    pooled = bm.run_radius(counting, x0, jobs, tmp_path / "parts", "r0", batch_size=3, **request)
    assert np.array_equal(pooled["job"], np.arange(8)) and np.array_equal(pooled["step"], whole["step"])
    assert np.array_equal(pooled["images"], whole["images"])
    assert counting.rows == 3 * counting.calls                     # every step one batch of one shape
    fixed = sum(int(whole["step"][i:i + 3].max()) for i in range(0, 8, 3))
    assert len(set(whole["step"].tolist())) >= 3 and counting.calls < fixed
    assert len(list((tmp_path / "parts").glob("r0-p*.npz"))) == 3  # a part each 3 ended pairs (3 + 3 + 2)


def test_a_radius_killed_mid_run_resumes_without_losing_or_repeating_a_pair(setup, tmp_path):
    model = load_model(str(setup / "model"))
    x0 = torch.cat([to_model_input(setup / "imgs" / n, 32) for n in NAMES])
    jobs = bm.make_jobs([0, 0, 1, 1], 10)                           # 36 pairs
    request = dict(norm="L2", eps=2.0, step_size=0.4, steps=5, objective="target_logit", autocast=False,
                   judges=bm.Judges(None, "", None, ""), stop_at=0.2)
    clean = bm.run_radius(model, x0, jobs, tmp_path / "clean", "r0", batch_size=4, **request)
    seen = []

    def kill_after_10(n):
        seen.append(n)
        if sum(seen) >= 10:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bm.run_radius(model, x0, jobs, tmp_path / "killed", "r0", batch_size=4, progress=kill_after_10, **request)
    saved = bm.read_parts(tmp_path / "killed", "r0")["job"]
    assert 0 < len(saved) < len(jobs) and len(set(saved)) == len(saved)
    assert model.training is False and all(p.requires_grad for p in model.parameters())   # attack mode undone
    resumed = []
    again = bm.run_radius(model, x0, jobs, tmp_path / "killed", "r0", batch_size=4, progress=resumed.append,
                          **request)
    assert sum(resumed) == len(jobs)
    for k in clean:
        np.testing.assert_allclose(again[k], clean[k], atol=1e-5, err_msg=k)


@pytest.mark.parametrize("autocast", [False, True])
def test_a_resumed_radius_runs_its_paths_in_batches_of_the_same_shape(setup, tmp_path, autocast):
    """The pool's row count was worked out from the pairs still to do: 10 pairs at batch size 4 ran 4 rows, the
    resume of the 6 left ran 3, and the gradients rounded differently (mean L1 40.7417 against 40.7421)."""
    model = load_model(str(setup / "model"))
    x0 = torch.cat([to_model_input(setup / "imgs" / n, 32) for n in NAMES])
    jobs = bm.make_jobs([0, 1], 10)[:10]
    request = dict(norm="L2", eps=2.0, step_size=0.4, steps=6, objective="target_logit", autocast=autocast,
                   judges=bm.Judges(None, "", None, ""))
    clean = bm.run_radius(model, x0, jobs, tmp_path / "clean", "r0", batch_size=4, **request)

    def kill(n):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        bm.run_radius(model, x0, jobs, tmp_path / "killed", "r0", batch_size=4, progress=kill, **request)
    assert len(bm.read_parts(tmp_path / "killed", "r0")["job"]) == 4
    again = bm.run_radius(model, x0, jobs, tmp_path / "killed", "r0", batch_size=4, **request)
    for k in clean:
        np.testing.assert_array_equal(again[k], clean[k], err_msg=k)


def test_stop_at_on_the_command_line(setup, tmp_path, capsys):
    base = ("--feature-model", "none", "--eps", "inf")
    for bad in ("0", "1", "nan", "x"):
        with pytest.raises(SystemExit) as exit_:
            main(command(setup, tmp_path / "bad", *base, "--stop-at", bad))
        assert exit_.value.code == 2 and "expected a probability in (0, 1)" in capsys.readouterr().err
    assert main(command(setup, tmp_path / "stop", *base, "--stop-at", "0.2")) == 0
    report = json.loads((tmp_path / "stop" / "benchmark.json").read_text())
    assert report["stop_at"] == 0.2 and 0 <= report["radii"][0]["mean_steps"] <= 4
    assert "mean steps" in capsys.readouterr().out
    assert "first iterate of its path with p(target) >= 0.2" in (tmp_path / "stop" / "report.md").read_text()
    assert main(command(setup, tmp_path / "stop", *base)) == 2          # the folder holds a --stop-at run
    assert "stop_at differ" in capsys.readouterr().err


@pytest.mark.parametrize("extra, says", [(("--data", "nowhere.tar.gz"), "not allowed with argument --images"),
                                         (("--val-size", "-1"), "--val-size: expected an integer in 0.."),
                                         (("--limit", "0"), "--limit: expected an integer in 1.."),
                                         (("--seed", "-1"), "--seed: expected an integer in 0..")])
def test_image_set_options_refuse_what_they_would_ignore_or_misread(setup, tmp_path, capsys, extra, says):
    """--images with --data used to run on --data alone, a negative --val-size on the whole split."""
    with pytest.raises(SystemExit) as exit_:
        main(command(setup, tmp_path / "bad", *extra))
    assert exit_.value.code == 2 and says in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_a_bad_pairs_file_is_refused_before_any_image_is_read(setup, tmp_path, capsys):
    (tmp_path / "p.csv").write_text("cat,unicorn\n")
    (tmp_path / "imgs").mkdir()
    (tmp_path / "imgs" / "cat-9.png").write_bytes(b"no png")   # decoded first, it would be the error
    args = command(setup, tmp_path / "bad", "--pairs", str(tmp_path / "p.csv"))
    args[args.index("--images") + 1] = str(tmp_path / "imgs")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "unknown class 'unicorn'" in err and "cat-9.png" not in err


@pytest.mark.parametrize("extra, says", [(("--split", "test"), "--split goes with --data"),
                                         (("--val-size", "0", "--seed", "3"), "--val-size, --seed go with --data")])
def test_data_options_without_data_are_refused_not_ignored(setup, tmp_path, capsys, extra, says):
    """--split/--val-size/--seed pick from --data; with --images they used to be silently ignored."""
    assert main(command(setup, tmp_path / "bad", *extra)) == 2
    assert says in capsys.readouterr().err and not (tmp_path / "bad").exists()


def test_damaged_saved_work_is_set_aside_and_redone(setup, tmp_path, capsys):
    """A part or minimal-radius file that cannot be read (a disk that filled up, a copy cut short) used to end the
    resumed run in a BadZipFile traceback: it is set aside as *.damaged and its pairs are run again, giving the
    same report. A damaged run.json is one line naming it."""
    extra = ("--feature-model", "none", "--minimal", "3")
    assert main(command(setup, tmp_path, *extra)) == 0
    first = json.loads((tmp_path / "benchmark.json").read_text())
    part = sorted((tmp_path / "parts").glob("*.npz"))[1]
    minimal = sorted((tmp_path / "parts").rglob("minimal-b*.npy"))[0]
    part.write_bytes(part.read_bytes()[:100])
    minimal.write_bytes(minimal.read_bytes()[:90])
    capsys.readouterr()
    assert main(command(setup, tmp_path, *extra)) == 0
    assert "damaged" in capsys.readouterr().err
    again = json.loads((tmp_path / "benchmark.json").read_text())
    assert again["radii"] == first["radii"] and again["minimal_radius"] == first["minimal_radius"]
    assert part.is_file() and minimal.is_file()                                   # redone
    assert len(list((tmp_path / "parts").rglob("*.damaged"))) == 2                 # and the damaged ones kept aside
    (tmp_path / "run.json").write_text("{bad")
    assert main(command(setup, tmp_path, *extra)) == 2
    err = capsys.readouterr().err
    assert "run.json" in err and "not valid JSON" in err and err.count("\n") == 1


def test_a_benchmark_killed_by_sigkill_resumes_to_the_same_report(setup, tmp_path):
    """A real process, killed with SIGKILL (nothing runs on the way out) after its first saved batch: the same
    command continues from the saved batches and writes the report an uninterrupted run writes."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    args = command(setup, tmp_path / "killed", "--feature-model", "none", "--steps", "150", "--batch-size", "1")
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen([sys.executable, "-m", "explain", *args], cwd=root, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.DEVNULL)
    parts = tmp_path / "killed" / "parts"
    deadline = time.time() + 120
    while not list(parts.glob("*.npz")) and run.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGKILL)
    run.wait(timeout=60)
    saved = len(list(parts.glob("*.npz")))
    assert run.returncode == -signal.SIGKILL and 1 <= saved < 12   # stopped mid-run, with work saved
    assert not (tmp_path / "killed" / "benchmark.json").exists()
    kept = {p: p.stat().st_mtime_ns for p in parts.glob("*.npz")}
    resumed = subprocess.run([sys.executable, "-m", "explain", *args], cwd=root, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert all(p.stat().st_mtime_ns == t for p, t in kept.items())   # saved batches were not run again
    assert main(command(setup, tmp_path / "whole", "--feature-model", "none", "--steps", "150",
                        "--batch-size", "1")) == 0
    killed, whole = (json.loads((tmp_path / d / "benchmark.json").read_text()) for d in ("killed", "whole"))
    assert killed["radii"] == whole["radii"] and killed["pairs"] == whole["pairs"] == 6


def test_a_second_run_on_a_busy_folder_is_refused_and_leaves_the_first_intact(setup, tmp_path, capsys):
    """Two identical commands on one --out used to interleave their saved parts: every later resume ended in
    "the saved parts do not hold each pair once". The folder is claimed by the first; the second is one line."""
    import os
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    args = command(setup, tmp_path, "--feature-model", "none", "--steps", "150", "--batch-size", "1")
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen([sys.executable, "-m", "explain", *args], cwd=root, env=env, stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL)
    try:
        deadline = time.time() + 120
        while not (tmp_path / "run.json").is_file() and first.poll() is None and time.time() < deadline:
            time.sleep(0.01)
        capsys.readouterr()
        assert main(args) == 2
        err = capsys.readouterr().err
        assert "in use by another benchmark" in err and err.count("\n") == 1
    finally:
        first.kill()
        first.wait(timeout=60)
    assert main(args) == 0     # the lock went with the killed process; the run completes


def test_a_pair_saved_twice_counts_once(setup, tmp_path):
    """Saved work a run wrote twice (two runs at once, before folders were claimed) resumes to the same report."""

    assert main(command(setup, tmp_path, "--feature-model", "none")) == 0
    first = json.loads((tmp_path / "benchmark.json").read_text())
    shutil.copy(tmp_path / "parts" / "r0-p00001.npz", tmp_path / "parts" / "r0-p00009.npz")
    assert main(command(setup, tmp_path, "--feature-model", "none")) == 0
    assert json.loads((tmp_path / "benchmark.json").read_text())["radii"] == first["radii"]


@pytest.mark.parametrize("change", ["image", "model", "transfer", "config"])
def test_a_resume_refuses_images_or_weights_that_changed_behind_the_same_paths(setup, tmp_path_factory, capsys,
                                                                                change):
    """The settings a resume checks are paths; what lies behind them is now checked too (stale parts of other
    images or weights used to be mixed into the report)."""

    d = tmp_path_factory.mktemp("changed")
    for name in ("model", "judge", "imgs"):
        shutil.copytree(setup / name, d / name)
    (d / "pairs.csv").write_text(PAIRS)
    out = d / "out"
    assert main(command(d, out, "--feature-model", "none")) == 0
    if change == "image":
        Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(d / "imgs" / NAMES[1])
    elif change == "config":   # the same weights, calibrated (`train calibrate` writes into the model's folder)
        config = json.loads((d / "model" / "config.json").read_text())
        (d / "model" / "config.json").write_text(json.dumps({**config, "temperature": 0.1}))
    else:
        torch.manual_seed(7)
        save_model(build_model("wrn-10-1").eval(), d / ("model" if change == "model" else "judge"))
    capsys.readouterr()
    assert main(command(d, out, "--feature-model", "none")) == 2
    key = {"image": "images", "model": "model", "transfer": "transfer_model", "config": "model"}[change]
    assert f"{key}_sha256" in capsys.readouterr().err


def test_out_may_not_be_the_images_folder(setup, capsys):
    assert main(command(setup, setup / "imgs")) == 2
    assert "--out is the --images folder" in capsys.readouterr().err
    assert not (setup / "imgs" / "run.json").exists()


@pytest.mark.parametrize("make, says", [(lambda d: d / "nope.csv", "does not exist"),
                                        (lambda d: d, "is a folder, not a file")])
def test_a_pairs_path_that_is_no_file_is_named_in_words(setup, tmp_path, capsys, make, says):
    assert main(command(setup, tmp_path / "out", "--pairs", str(make(tmp_path)))) == 2
    err = capsys.readouterr().err
    assert says in err and "Errno" not in err and err.count("\n") == 1


def test_sigterm_stops_a_benchmark_cleanly_and_the_same_command_resumes(setup, tmp_path):
    """SIGTERM (a job scheduler, `timeout`) killed the process where it stood, traceback-free but with any
    half-written temporary left in parts/: it now stops like Ctrl-C, exit 143, nothing half-written behind."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    args = command(setup, tmp_path, "--feature-model", "none", "--steps", "150", "--batch-size", "1")
    env = {**os.environ, "PYTHONPATH": str(root), "OMP_NUM_THREADS": "1"}
    run = subprocess.Popen([sys.executable, "-m", "explain", *args], cwd=root, env=env, stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not list((tmp_path / "parts").glob("*.npz")) and run.poll() is None and time.time() < deadline:
        time.sleep(0.01)
    run.send_signal(signal.SIGTERM)
    err = run.communicate(timeout=60)[1]
    assert run.returncode == 143 and "Traceback" not in err and "interrupted" in err
    assert not [p for p in tmp_path.rglob("*") if p.name.endswith(".tmp")]
    assert main(args) == 0
    report = json.loads((tmp_path / "benchmark.json").read_text())   # the stopped process's time counts too
    assert report["seconds"] > report["seconds_this_process"]


def test_the_ace_tree_is_replaced_whole_and_never_mixes_two_runs(tmp_path, monkeypatch):
    """write_ace_layout wrote into ace/eps_<r>/ file by file: a stop mid-export left half a tree, and a rerun whose
    counterfactuals fell on the other side (CCF vs ICF) left both files, so FID scripts read the old one too."""
    from PIL import Image

    from explain import benchmark_report as rep

    originals = np.zeros((2, 3, 4, 4), np.uint8)
    result = {"images": np.full((2, 3, 4, 4), 255, np.uint8), "prediction": np.array([1, 0])}
    jobs, labels, predictions = np.array([[0, 0, 1], [1, 1, 0]]), np.array([0, 1]), np.array([0, 1])
    root = tmp_path / "ace" / "eps_0.5"

    def tree():
        return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())

    rep.write_ace_layout(root, originals, labels, predictions, result, jobs, np.array([True, True]))
    first = tree()
    assert len(first) == 6 and all("/CCF/" in p for p in first if p.startswith("Results"))
    saved, calls = Image.Image.save, []

    def stop_on_third(self, *a, **k):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return saved(self, *a, **k)

    monkeypatch.setattr(Image.Image, "save", stop_on_third)
    with pytest.raises(KeyboardInterrupt):
        rep.write_ace_layout(root, originals, labels, predictions, result, jobs, np.array([False, False]))
    monkeypatch.setattr(Image.Image, "save", saved)
    assert tree() == first and [p.name for p in root.parent.iterdir()] == ["eps_0.5"]
    rep.write_ace_layout(root, originals, labels, predictions, result, jobs, np.array([False, False]))
    assert len(tree()) == 6 and not any("/CCF/" in p for p in tree())


def test_the_explained_model_as_its_own_judge_is_refused_or_said(setup, tmp_path, capsys):
    """The README says the feature model must not be the explained model (its counterfactuals attack its own
    features) and transfer asks an independent model; both were taken without a word. Judged by the weights, so a
    copy in another folder is the same model. Transfer to itself is refused; its own features (the documented
    `--model standard` runs use them, then recompute realism elsewhere) are said in the log and the report."""

    shutil.copytree(setup / "model", tmp_path / "copy")
    for judge in (setup / "model", tmp_path / "copy"):
        args = command(setup, tmp_path / "out", "--feature-model", "none", "--transfer-model", str(judge))
        assert main(args) == 2
        assert "--transfer-model has the explained model's weights" in capsys.readouterr().err
    out = tmp_path / "own"
    assert main(command(setup, out, "--feature-model", str(tmp_path / "copy"), "--transfer-model", "none",
                        "--eps", "inf")) == 0
    assert "--feature-model has the explained model's weights" in capsys.readouterr().err
    assert json.loads((out / "benchmark.json").read_text())["feature_model_is_explained_model"] is True
    assert "The feature model is the explained model" in (out / "report.md").read_text()


def test_a_report_without_a_transfer_model_says_nothing_of_transfer(setup, tmp_path):
    """With --transfer-model none, report.md read "Transfer: share that (no transfer model) also classifies..."."""
    assert main(command(setup, tmp_path, "--feature-model", "none", "--transfer-model", "none", "--eps", "inf")) == 0
    report = (tmp_path / "report.md").read_text()
    assert "no transfer model" not in report and "Transfer:" not in report


def test_benchmark_json_means_the_whole_report_was_written(setup, tmp_path, monkeypatch, capsys):
    """benchmark.json was written first: a stop while the plots, report.md or ace/ were written left it beside
    no report (or an earlier run's), and a rerun without --minimal kept the earlier minimal_radius.png."""
    import explain.benchmark_report as rep

    out = tmp_path / "out"
    assert main(command(setup, out, "--feature-model", "none", "--minimal", "2")) == 0
    assert (out / "minimal_radius.png").is_file()

    def stopped(*args, **kwargs):
        raise KeyboardInterrupt   # as a stop while report.md is written
    monkeypatch.setattr(rep, "write_markdown", stopped)
    assert main(command(setup, out, "--feature-model", "none")) == 130   # explain's exit for a stop
    assert not (out / "benchmark.json").exists()
    monkeypatch.undo()
    assert main(command(setup, out, "--feature-model", "none")) == 0
    done = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.is_file()}
    assert done["benchmark.json"] == max(done.values()) and "minimal_radius.png" not in done
    capsys.readouterr()


@pytest.mark.parametrize("extra, says", [((), "validation carve-out of train (val-size 30, seed 0)"),
                                         (("--split", "test", "--val-size", "0"), "test split")])
def test_a_report_says_which_images_of_the_data_it_ran_on(toy, tmp_path, extra, says):
    """report.md said "6 images (toy)" for the test split and for a validation carve-out alike, and
    benchmark.json held neither the carve-out's size nor its seed."""
    model = save_model(build_model("wrn-10-1", num_classes=3, image_size=16,
                                   class_names=["class0", "class1", "class2"]).eval(), tmp_path / "m")
    out = tmp_path / "out"
    args = ["benchmark", "--model", str(model), "--data", str(toy), "--limit", "3", "--steps", "2",
            "--feature-model", "none", "--transfer-model", "none", "--compile", "off", "--autocast", "off",
            "--out", str(out)]
    if not extra:
        extra = ("--val-size", "30")
    assert main([*args, *extra]) == 0
    report = json.loads((out / "benchmark.json").read_text())
    assert says in (out / "report.md").read_text()
    assert report["split"] == ("test" if "test" in extra else "train")
    assert report["val_size"] == (0 if "test" in extra else 30) and report["seed"] == 0
