import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from dat_core import build_model
from dat_core.checkpoint import save_model
from explain.cli import main

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """A tiny checkpoint dir and a non-square RGBA PNG, written for these tests."""
    d = tmp_path_factory.mktemp("cli")
    torch.manual_seed(0)
    save_model(build_model("wrn-10-1").eval(), d / "ckpt")
    rgba = np.random.default_rng(0).integers(0, 256, (45, 60, 4), dtype=np.uint8)
    Image.fromarray(rgba, "RGBA").save(d / "img.png")
    (d / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 this is not really a jpeg")
    return d


def _run(*args):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "explain", *args], capture_output=True, text=True, cwd=ROOT,
                          env=env, timeout=300)


def test_a_reader_that_goes_away_does_not_stop_the_work(files, tmp_path):
    """`python -m explain counterfactual --target all | head -1` stopped at the next line it printed with
    "error: [Errno 32] Broken pipe" (exit 2), two of ten targets written. The files are the result: the run
    goes on without its reader and ends as it would have."""
    out = tmp_path / "cf"
    env = dict(os.environ, PYTHONPATH=str(ROOT), PYTHONUNBUFFERED="1")
    run = subprocess.Popen([sys.executable, "-m", "explain", "counterfactual", "--model", str(files / "ckpt"),
                            "--image", str(files / "img.png"), "--target", "all", "--steps", "2", "--device", "cpu",
                            "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=ROOT, env=env)
    assert run.stdout.readline()                                    # the first line, then the reader is gone
    run.stdout.close()
    err = run.stderr.read().decode()
    assert run.wait(timeout=300) == 0 and "Broken pipe" not in err, err
    assert len([d for d in out.iterdir() if d.is_dir()]) == 10    # every class: all targets written


def test_an_output_that_cannot_encode_a_character_does_not_stop_the_work():
    """`benchmark` printed "Fréchet" and `success` "∞" as their last lines: on an ASCII stdout (a redirect with
    PYTHONIOENCODING=ascii, a C locale) the command exited 2 after its work. The CLIs' stdout now escapes what
    it cannot encode."""
    code = "from dat_core.cli_types import outlive_the_reader; outlive_the_reader(); print('Fréchet, eps ∞')"
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, cwd=ROOT, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="ascii"))
    assert r.returncode == 0 and r.stdout == b"Fr\\xe9chet, eps \\u221e\n", r.stderr


def test_counterfactual_end_to_end_subprocess(files, tmp_path):
    out = tmp_path / "cf"
    r = _run("counterfactual", "--model", str(files / "ckpt"), "--image", str(files / "img.png"),
             "--target", "cat", "--steps", "4", "--eps", "1.5", "--device", "cpu", "--out", str(out))
    assert r.returncode == 0, r.stderr
    for name in ("trajectory.gif", "trajectory.png", "strip.png", "metrics.json"):
        assert (out / name).is_file() and f"wrote {out / name}" in r.stdout
    with Image.open(out / "trajectory.gif") as gif:
        assert gif.n_frames == 5
    with Image.open(out / "trajectory.png") as apng:
        assert apng.n_frames == 5
    m = json.loads((out / "metrics.json").read_text())
    assert m["target_name"] == "cat" and m["steps"] == [0, 1, 2, 3, 4] and m["params"]["eps"] == 1.5
    assert max(m["l2"]) <= 1.5 + 1e-5 and abs(sum(m["probs"][-1]) - 1) < 1e-4


def test_bad_input_exits_2_with_one_clear_line_subprocess(files, tmp_path):
    r = _run("counterfactual", "--model", str(files / "ckpt"), "--image", str(files / "img.png"),
             "--target", "kitten", "--steps", "2", "--out", str(tmp_path / "x"))
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert r.stderr.strip() == ("error: unknown class 'kitten'; valid classes: airplane, automobile, bird, cat, "
                                "deer, dog, frog, horse, ship, truck (or an index 0..9)")


def test_unreadable_image_exits_2_naming_the_file(files, tmp_path, capsys):
    assert main(["counterfactual", "--model", str(files / "ckpt"), "--image", str(files / "broken.jpg"),
                 "--target", "cat", "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: cannot read") and "broken.jpg" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()  # nothing written for a failed request


@pytest.mark.parametrize("extra,needle", [
    (["--eps", "nan"], "eps must be >= 0"), (["--steps", "5000"], "from 0 to 1000"),
    (["--step-size", "-1"], "finite number > 0"), (["--target", "42"], "out of range 0..9"),
    (["--norm", "Linf", "--eps", "8"], "did you mean 8/255"),    # pixel units: a radius that bounds nothing
])
def test_out_of_range_parameters_exit_2(files, tmp_path, capsys, extra, needle):
    args = ["counterfactual", "--model", str(files / "ckpt"), "--image", str(files / "img.png"),
            "--target", "cat", "--out", str(tmp_path / "x"), *extra]
    try:   # explain's own check, or argparse's (a --step-size that does not parse)
        code = main(args)
    except SystemExit as e:
        code = e.code
    assert code == 2 and needle in capsys.readouterr().err


def test_a_step_size_is_written_like_a_radius(files, tmp_path, capsys):
    """--eps took 8/255 but --step-size only decimals: an Linf step of 1/255 had to be typed as
    0.00392156862745098 (the help said 0.003922, another step). Both read fractions now, and the path runs
    with exactly 1/255."""
    args = ["counterfactual", "--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--target", "cat",
            "--norm", "Linf", "--eps", "8/255", "--steps", "2", "--autocast", "off"]
    assert main([*args, "--step-size", "1/255", "--out", str(tmp_path / "o")]) == 0
    params = json.loads((tmp_path / "o" / "metrics.json").read_text())["params"]
    assert (params["eps"], params["step_size"]) == (8 / 255, 1 / 255)   # every digit (it kept 7)
    for bad in ("0/255", "1/0", "inf", "1/2/3", "-1/255"):
        with pytest.raises(SystemExit) as e:
            main([*args, f"--step-size={bad}", "--out", str(tmp_path / "bad")])
        assert e.value.code == 2 and "expected a finite number > 0" in capsys.readouterr().err
    for command, where in (("success", ["--images", str(tmp_path)]), ("benchmark", ["--images", str(tmp_path)]),
                           ("generate", ["--target", "cat"])):
        try:   # argparse's usage error, or (a comma list: success) explain's own error line
            code = main([command, "--model", str(files / "ckpt"), *where, "--step-size", "1/0", "--out",
                         str(tmp_path / "b")])
        except SystemExit as e:
            code = e.code
        assert code == 2 and "finite number > 0" in capsys.readouterr().err, command
    shown = subprocess.run([sys.executable, "-m", "explain", "counterfactual", "--help"], cwd=ROOT,
                           capture_output=True, text=True).stdout
    assert "Linf 16/255" in " ".join(shown.split()) and "Linf 1/255" in " ".join(shown.split())


@pytest.mark.parametrize("command, option, value", [
    ("counterfactual", "--target", "cat,,dog"), ("counterfactual", "--target", "cat,"),
    ("counterfactual", "--minimal", "0.5,,0.9"), ("counterfactual", "--minimal", ""),
    ("generate", "--target", ","), ("attribute", "--methods", ""), ("attribute", "--methods", "saliency,"),
    ("success", "--eps", "1,,2"), ("success", "--steps", ","), ("success", "--step-size", ""),
    ("benchmark", "--eps", "1,"), ("benchmark", "--eps", ""),
])
def test_an_empty_item_in_a_comma_list_is_refused_not_dropped(files, tmp_path, capsys, command, option, value):
    """"--target cat,,dog" or "--eps 1,,2" used to run the list without the empty item, and a blank
    --eps/--steps/--methods silently meant the default: a run other than the one typed."""
    (tmp_path / "imgs").mkdir()
    Image.open(files / "img.png").convert("RGB").save(tmp_path / "imgs" / "cat-0.png")
    where = {"counterfactual": ["--image", str(files / "img.png"), "--target", "cat"], "generate": ["--target", "cat"],
             "attribute": ["--image", str(files / "img.png"), "--target", "cat"],
             "success": ["--images", str(tmp_path / "imgs")], "benchmark": ["--images", str(tmp_path / "imgs")]}
    base = [a for a in where[command] if a != option]
    if option == "--target":
        base = base[:-1]
    args = [command, "--model", str(files / "ckpt"), "--steps", "2", "--device", "cpu", *base,
            "--out", str(tmp_path / "x")]
    if option == "--steps":
        args.remove("--steps"), args.remove("2")
    if value.strip():
        assert main([*args, option, value]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {option}") and len(err.splitlines()) == 1 and repr(value) in err
    else:  # a blank value is a usage error of argparse (dat_core.cli_types.refuse_blank_values)
        with pytest.raises(SystemExit) as e:
            main([*args, option, value])
        assert e.value.code == 2 and f"argument {option}: expected a value" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("option", ["--out", "--image", "--model", "--mask"])
def test_a_blank_value_is_a_usage_error(files, tmp_path, capsys, option):
    """`--out "$OUT"` with OUT unset wrote into the current folder; a blank --image said " is a directory"."""
    args = {"--model": str(files / "ckpt"), "--image": str(files / "img.png"), "--out": str(tmp_path / "x")}
    args[option] = ""
    with pytest.raises(SystemExit) as e:
        main(["counterfactual", "--target", "cat", *[t for kv in args.items() for t in kv]])
    assert e.value.code == 2 and f"argument {option}: expected a value, got a blank one" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["counterfactual", "landscape", "attribute", "generate", "benchmark"])
def test_an_out_that_is_a_file_is_refused_before_any_work(files, tmp_path, capsys, command):
    """--out naming a file failed with FileExistsError only after the paths (or samples) had been computed."""
    (tmp_path / "taken").write_text("a file")
    extra = ["--images", str(tmp_path)] if command == "benchmark" else ["--target", "cat"]
    if command not in ("generate", "benchmark"):
        extra += ["--image", str(files / "img.png")]
    assert main([command, "--model", "no-such-model-folder", *extra, "--out", str(tmp_path / "taken")]) == 2
    assert capsys.readouterr().err.strip() == f"error: --out {tmp_path / 'taken'} is a file: give a folder"


def test_a_landscape_span_past_the_image_space_is_refused_before_the_path_runs(files, tmp_path, capsys, monkeypatch):
    import explain.trajectory

    monkeypatch.setattr(explain.trajectory, "pgd", lambda *a, **k: pytest.fail("the path ran"))
    assert main(["landscape", "--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--target", "cat",
                 "--span", "1e300", "--out", str(tmp_path / "o")]) == 2
    assert "span must be > 0 and at most 55.43" in capsys.readouterr().err


@pytest.mark.parametrize("command, option, name", [
    ("counterfactual", "--image", "strip.png"), ("counterfactual", "--mask", "mask.png"),
    ("attribute", "--image", "attributions.png"), ("generate", "--seeds", "grid.png"),
])
def test_an_input_inside_out_is_refused_before_it_could_be_overwritten(files, tmp_path, capsys, command, option,
                                                                        name):
    """`--image out/strip.png --out out` used to overwrite the input with the strip of its own counterfactual."""
    out = tmp_path / "out"
    out.mkdir()
    inside = out / name
    inside.write_bytes((files / "img.png").read_bytes())
    before = inside.read_bytes()
    image = [] if command == "generate" else ["--image", str(inside if option == "--image" else files / "img.png")]
    extra = {"--mask": ["--mask", str(inside)], "--seeds": ["--seeds", str(inside)]}.get(option, [])
    assert main([command, "--model", str(files / "ckpt"), "--target", "cat", *image, *extra, "--steps", "2",
                 "--out", str(out)]) == 2
    assert f"{option} lies inside --out" in capsys.readouterr().err
    assert inside.read_bytes() == before and sorted(p.name for p in out.iterdir()) == [name]


@pytest.mark.parametrize("command, extra, says", [
    ("attribute", ["--step", "5"], "--step 5 out of range for a path of 3 frames"),
    ("attribute", ["--frame", "-4"], "--frame -4 out of range for a path of 3 frames"),
    ("landscape", ["--step", "3"], "--step 3 out of range for a path of 3 frames")])
def test_a_frame_outside_the_path_is_refused_before_the_path_runs(files, tmp_path, capsys, monkeypatch, command,
                                                                  extra, says):
    """--step/--frame past the path's end were found only after the whole path had been computed."""
    import explain.trajectory

    def tripwire(*args, **kwargs):
        raise AssertionError("the path ran")
    monkeypatch.setattr(explain.trajectory, "counterfactual", tripwire)
    assert main([command, "--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--target", "cat",
                 "--steps", "2", "--device", "cpu", "--out", str(tmp_path / "x"), *extra]) == 2
    assert says in capsys.readouterr().err


def test_comma_lists_keep_each_item_once():
    from dat_core.cli_types import comma_list
    from explain.params import parse_eps

    assert comma_list(" 1, 2,1 ,4/255", "--eps", parse_eps) == [1.0, 2.0, 4 / 255]
    assert comma_list("dog, cat,dog", "--target") == ["dog", "cat"]
    with pytest.raises(ValueError, match="--steps: invalid literal"):
        comma_list("2,x", "--steps", int)


def test_every_target_gets_a_subdir_and_a_grid(files, tmp_path, capsys):
    out = tmp_path / "all"
    assert main(["counterfactual", "--model", str(files / "ckpt"), "--image", str(files / "img.png"),
                 "--target", "all", "--steps", "2", "--out", str(out)]) == 0
    subdirs = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert subdirs[0] == "00-airplane" and subdirs[-1] == "09-truck" and len(subdirs) == 10
    assert (out / "03-cat" / "trajectory.gif").is_file()
    with Image.open(out / "grid.png") as grid:
        assert grid.size == (11 * (128 + 2) + 2, 128 + 4)  # x_0 then x_T of each class, 4x upscaled
    assert [s["target"] for s in json.loads((out / "summary.json").read_text())] == list(range(10))


def test_minimal_option_writes_results(files, tmp_path):
    out = tmp_path / "min"
    assert main(["counterfactual", "--model", str(files / "ckpt"), "--image", str(files / "img.png"),
                 "--target", "3", "--steps", "2", "--minimal", "0.5", "--out", str(out)]) == 0
    res = json.loads((out / "minimal.json").read_text())["results"]
    assert res[0]["confidence"] == 0.5 and set(res[0]) >= {"radius", "achieved", "path_radius"}


def test_minimal_follows_the_objective_given(files, tmp_path):
    """--minimal ran its search with the default objective whatever --objective said."""
    from dat_core.loading import load_model
    from explain import minimal_counterfactual
    from explain.image import open_image

    out = tmp_path / "min"
    assert main(["counterfactual", "--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--device",
                 "cpu", "--target", "3", "--steps", "3", "--step-size", "0.5", "--objective", "energy",
                 "--autocast", "off", "--minimal", "0.11", "--out", str(out)]) == 0
    model = load_model(files / "ckpt", device="cpu")
    wanted = minimal_counterfactual(model, open_image(files / "img.png"), 3, [0.11], step_size=0.5,
                                    objective="energy").to_dict()
    other = minimal_counterfactual(model, open_image(files / "img.png"), 3, [0.11], step_size=0.5).to_dict()
    assert wanted != other   # the objectives give different searches, so the check below can fail
    assert json.loads((out / "minimal.json").read_text()) == json.loads(json.dumps(wanted))


@pytest.mark.parametrize("extra, says", [
    (("--target", "all", "--card"), "--card needs exactly one --target class"),
    (("--target", "cat,dog", "--minimal", "0.5"), "--minimal needs exactly one --target class"),
    (("--target", "cat,dog", "--alternatives", "2"), "--alternatives needs exactly one --target class"),
    (("--target", "cat", "--minimal", "0.5", "--guide", "GUIDE"), "--minimal runs --model unguided"),
    (("--target", "cat", "--alternatives", "2", "--guide", "GUIDE"), "--alternatives runs --model unguided"),
    (("--target", "cat", "--minimal", "0.5", "--norm", "Linf"), "--minimal searches L2 radii"),
    (("--target", "cat", "--alternatives", "2", "--eps", "inf"), "--eps must be finite and > 0")])
def test_one_path_options_are_refused_before_any_path_runs(files, tmp_path, capsys, extra, says):
    """--card/--minimal/--alternatives with several targets failed after every target's path had run and been
    written; with --guide, --minimal and --alternatives silently ran the model unguided."""
    extra = [str(files / "ckpt") if e == "GUIDE" else e for e in extra]
    assert main(["counterfactual", "--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--device",
                 "cpu", "--steps", "2", "--out", str(tmp_path / "x"), *extra]) == 2
    assert says in capsys.readouterr().err
    assert not (tmp_path / "x").exists()   # nothing written


def test_alternatives_keep_the_mask(files, tmp_path):
    """--alternatives with --mask was refused though the alternatives API takes a mask."""
    from explain.image import to_mask

    mask = np.zeros((45, 60), dtype=np.uint8)
    mask[:, :30] = 255
    Image.fromarray(mask).save(tmp_path / "mask.png")
    out = tmp_path / "alt"
    assert main(["counterfactual", "--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--device",
                 "cpu", "--target", "cat", "--steps", "3", "--eps", "2", "--autocast", "off", "--alternatives", "2",
                 "--mask", str(tmp_path / "mask.png"), "--scale", "1", "--out", str(out)]) == 0
    assert 0 < json.loads((out / "alternatives.json").read_text())["params"]["mask_fraction"] < 1
    grid = np.asarray(Image.open(out / "alternatives.png"))   # x_0 then each x_T, --scale 1, 2 px apart
    tiles = [grid[2:34, 2 + 34 * i: 34 + 34 * i] for i in range(3)]
    may_change = to_mask(Image.open(tmp_path / "mask.png"), 32)[0, 0].numpy()
    for tile in tiles[1:]:
        changed = (tile != tiles[0]).any(-1)
        assert changed.any() and not (changed & ~may_change).any()   # moved, and only inside the mask


def test_generate_refuses_a_seed_or_more_samples_an_image_start_ignores(files, tmp_path, capsys):
    """With --seeds IMAGE, --seed was silently ignored and --n 2 wrote the same sample twice."""
    base = ["generate", "--model", str(files / "ckpt"), "--target", "cat", "--seeds", str(files / "img.png"),
            "--steps", "2", "--device", "cpu"]
    assert main([*base, "--seed", "3", "--out", str(tmp_path / "a")]) == 2
    assert "--seed goes with a seed kind" in capsys.readouterr().err
    assert main([*base, "--n", "2", "--out", str(tmp_path / "b")]) == 2
    assert "an image seed starts every sample of a class at the same point" in capsys.readouterr().err
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
    assert main([*base, "--out", str(tmp_path / "c")]) == 0


def test_generate_end_to_end(files, tmp_path):
    out = tmp_path / "gen"
    args = ["generate", "--model", str(files / "ckpt"), "--target", "cat,dog", "--n", "2", "--seed", "3",
            "--steps", "2", "--record-every", "1", "--out", str(out)]
    assert main(args) == 0
    samples = json.loads((out / "samples.json").read_text())["samples"]
    assert [s["target_name"] for s in samples] == ["cat", "cat", "dog", "dog"]
    assert all(0 < s["confidence"] < 1 for s in samples)
    with Image.open(out / "sampling.gif") as gif:
        assert gif.n_frames == 3
    first = np.asarray(Image.open(out / "grid.png"))
    assert main(args[:-1] + [str(tmp_path / "again")]) == 0
    assert np.array_equal(first, np.asarray(Image.open(tmp_path / "again" / "grid.png")))  # seeded


def test_landscape_and_attribute_subcommands(files, tmp_path):
    common = ["--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--target", "dog", "--steps", "2"]
    assert main(["landscape", *common, "--grid", "5", "--out", str(tmp_path / "land")]) == 0
    land = json.loads((tmp_path / "land" / "landscape.json").read_text())
    assert np.asarray(land["values"]).shape == (5, 5) and len(land["path_xy"]) == 3
    assert (tmp_path / "land" / "landscape.png").stat().st_size > 0
    assert main(["attribute", *common, "--methods", "saliency", "--out", str(tmp_path / "attr")]) == 0
    maps = np.load(tmp_path / "attr" / "attributions.npz")
    assert maps["target_saliency"].shape == (32, 32) and (tmp_path / "attr" / "attributions.png").is_file()
    assert main(["attribute", *common, "--methods", "magic", "--out", str(tmp_path / "bad")]) == 2


def test_landscape_seed_goes_with_a_random_direction(files, tmp_path, capsys):
    """A class direction has no randomness: --seed with it was silently ignored."""
    common = ["--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--target", "dog", "--steps", "2",
              "--grid", "3"]
    assert main(["landscape", *common, "--direction", "cat", "--seed", "5", "--out", str(tmp_path / "bad")]) == 2
    assert "--seed goes with --direction random" in capsys.readouterr().err and not (tmp_path / "bad").exists()
    assert main(["landscape", *common, "--seed", "5", "--out", str(tmp_path / "ok")]) == 0


@pytest.mark.parametrize("command", ["counterfactual", "landscape", "attribute", "generate"])
def test_help_for_each_command(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert "examples:" in text and f"python -m explain {command}" in text and "--model" in text


@pytest.mark.parametrize("argv", [["counterfactual", "--scale", "0"], ["landscape", "--grid", "x"],
                                  ["nonsense"], ["generate", "--n"]])
def test_a_usage_error_is_one_error_line(argv, capsys):
    """The README promises one `error:` line on bad input; argparse's own refusals printed the whole usage first."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and "\n" not in err and err.startswith("python -m explain"), err
    assert "error:" in err and "--help" in err


def test_help_states_each_norms_own_default_steps(capsys):
    """--steps said "default: 100" for every norm; Linf and L1 run 60 (explain/params.py)."""
    from explain.params import IMAGENET_MIN_SIZE, NORMS, default_params

    with pytest.raises(SystemExit):
        main(["counterfactual", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    steps_help = text[text.index("--steps STEPS PGD"):text.index("--step-size STEP_SIZE step")]
    for norm in NORMS:
        assert f"{norm} {int(default_params(32, norm)['steps'])}" in steps_help, (norm, steps_help)
    assert f"{int(default_params(IMAGENET_MIN_SIZE)['steps'])} from {IMAGENET_MIN_SIZE} px" in steps_help


def test_compile_falls_back_to_eager_and_still_writes_everything(files, tmp_path, monkeypatch, caplog):
    import logging

    def broken(*args, **kwargs):
        raise RuntimeError("inductor is unavailable")

    monkeypatch.setattr(torch, "compile", broken)
    args = ["counterfactual", "--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--target", "cat",
            "--steps", "3", "--out", str(tmp_path / "cf")]
    with caplog.at_level(logging.WARNING, logger="dat_core.runtime"):
        assert main([*args, "--compile", "on"]) == 0
    assert any("staying eager" in r.getMessage() for r in caplog.records)
    first = json.loads((tmp_path / "cf" / "metrics.json").read_text())
    assert main([*args, "--compile", "off"]) == 0
    assert json.loads((tmp_path / "cf" / "metrics.json").read_text()) == first


@pytest.mark.parametrize("package", ["explain", "train"])
def test_ctrl_c_while_torch_still_loads_is_one_line(package):
    """Ctrl-C in the first seconds, while `python -m explain` (or `train`) was still importing torch, printed a
    traceback through the package's imports; it is the same "interrupted" line and exit 130 as later on. The
    Ctrl-C is made to land exactly there: an import hook raises it when torch is imported."""
    script = f"""
import runpy, sys
class CtrlC:
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt
sys.meta_path.insert(0, CtrlC())
sys.argv = ["{package}", "--help"]
runpy.run_module("{package}", run_name="__main__", alter_sys=True)
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert (done.returncode, done.stderr) == (130, "interrupted\n"), done.stderr[-2000:]


def test_explains_names_are_never_shadowed_by_its_submodules():
    """explain's names load on first use; a submodule of the same name (explain/generate.py) imported first
    would make `explain.generate` that module. Every submodule is imported before any name is used."""
    script = """
import importlib, pkgutil, types, explain
for m in pkgutil.iter_modules(explain.__path__):
    if m.name != "__main__":
        importlib.import_module("explain." + m.name)
bad = [n for n in explain.__all__ if isinstance(getattr(explain, n), types.ModuleType)]
assert not bad and sorted(explain.__all__) == sorted(set(explain.__all__)), bad
print(len(explain.__all__))
"""
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1])
    assert done.returncode == 0 and int(done.stdout) >= 20, done.stderr[-2000:]


def test_attributions_npz_is_replaced_whole(files, tmp_path, monkeypatch):
    """`attribute` wrote attributions.npz in place: a stop or a full disk mid-write left a truncated file where
    the previous run's was (every other output is written beside and renamed)."""
    args = ["attribute", "--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--target", "cat",
            "--steps", "2", "--methods", "saliency", "--device", "cpu", "--out", str(tmp_path)]
    assert main(args) == 0
    before = (tmp_path / "attributions.npz").read_bytes()

    def cut_short(f, **arrays):
        f.write(b"PK\x03\x04 half")
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(np, "savez_compressed", cut_short)
    assert main(args) == 2
    assert (tmp_path / "attributions.npz").read_bytes() == before


def test_a_rerun_into_the_same_folder_leaves_no_earlier_outputs(files, tmp_path):
    """Rerunning `counterfactual` into a used --out kept the earlier run's minimal.json beside the new run's
    files (read as this run's), and its per-target folders after a one-target run. A file of the user's stays."""
    out = tmp_path / "out"
    base = ["counterfactual", "--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--steps", "2",
            "--out", str(out)]
    assert main([*base, "--target", "cat,dog"]) == 0
    folders = sorted(p.name for p in out.iterdir() if p.is_dir())
    assert len(folders) == 2 and (out / "summary.json").is_file()
    (out / "notes.txt").write_text("mine")
    assert main([*base, "--target", "3", "--minimal", "0.5"]) == 0
    assert not any(p.is_dir() for p in out.iterdir()) and not (out / "summary.json").exists()
    assert (out / "minimal.json").is_file() and (out / "metrics.json").is_file()
    assert main([*base, "--target", "3"]) == 0
    assert not (out / "minimal.json").exists() and not list(out.glob("minimal_*.png"))
    assert (out / "metrics.json").is_file() and (out / "notes.txt").read_text() == "mine"


def test_a_counterfactual_removes_only_what_an_earlier_counterfactual_wrote(files, tmp_path):
    """`generate --out X` then `counterfactual --out X` deleted generate's grid.png (a name both write), leaving
    samples.json without its grid."""
    out = tmp_path / "out"
    assert main(["generate", "--model", str(files / "ckpt"), "--target", "cat", "--n", "2", "--steps", "2",
                 "--out", str(out)]) == 0
    grid = (out / "grid.png").read_bytes()
    base = ["counterfactual", "--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--steps", "2",
            "--out", str(out)]
    assert main([*base, "--target", "3"]) == 0
    assert (out / "grid.png").read_bytes() == grid and (out / "samples.json").is_file()
    assert main([*base, "--target", "cat,dog"]) == 0 and (out / "summary.json").is_file()   # its own grid now
    assert main([*base, "--target", "3"]) == 0
    assert not (out / "grid.png").exists() and not (out / "summary.json").exists()   # that one was its own
    assert (out / "samples.json").is_file()


@pytest.mark.parametrize("module, args", [("explain", ["benchmark", "--help"]), ("train", ["eval", "--help"])])
def test_help_on_an_ascii_output(module, args):
    """--help printed before the CLIs set their stdout to escape what it cannot encode: "Fréchet" in the help ended
    it with a UnicodeEncodeError on an ASCII stdout."""
    r = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, cwd=ROOT, timeout=120,
                       env=dict(os.environ, PYTHONPATH=str(ROOT), PYTHONIOENCODING="ascii"))
    assert r.returncode == 0 and b"usage:" in r.stdout, r.stderr


def test_an_even_landscape_grid_is_a_usage_error(files, tmp_path, capsys, monkeypatch):
    """`landscape --grid 4` passed argument checking, loaded the model and ran the path before it was refused."""
    import explain.cli as cli

    monkeypatch.setattr(cli, "_load", lambda args: pytest.fail("the model loaded before the grid was checked"))
    with pytest.raises(SystemExit) as e:
        main(["landscape", "--model", str(files / "ckpt"), "--image", str(files / "img.png"), "--target", "cat",
              "--grid", "4", "--out", str(tmp_path / "land")])
    assert e.value.code == 2 and "argument --grid: expected an odd integer in 3..257, got 4" in capsys.readouterr().err


def test_an_earlier_runs_outputs_are_removed_only_inside_the_folder_and_never_a_users_file(tmp_path):
    """A manifest entry under a linked target folder unlinked a file outside --out (then a traceback); a folder
    from before the manifest lost a target folder whole, with the user's file in it."""
    import json

    from explain.export import MANIFEST, drop_earlier

    out, home = tmp_path / "out", tmp_path / "home"
    out.mkdir()
    home.mkdir()
    (home / "thesis.pdf").write_text("mine")
    (out / "03-cat").symlink_to(home)
    (out / MANIFEST).write_text(json.dumps(["03-cat/thesis.pdf", "../home/thesis.pdf"]))
    assert drop_earlier(out, []) == [] and (home / "thesis.pdf").read_text() == "mine"
    (out / "03-cat").unlink()
    (out / MANIFEST).unlink()
    target = out / "05-dog"
    target.mkdir()
    for name in ("metrics.json", "trajectory.gif", "notes.txt"):
        (target / name).write_text("x")
    removed = drop_earlier(out, [])
    assert sorted(p.name for p in removed) == ["metrics.json", "trajectory.gif"]
    assert (target / "notes.txt").read_text() == "x"
