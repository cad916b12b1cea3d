"""`python -m explain` runs that stop, run again, or meet damaged saved files: a folder never mixes two runs, a
resume reruns only what was in flight, a rerun adds no time, and every refusal is one line naming what the user
typed. Tiny random models, synthetic images; stops are injected as Ctrl-C (KeyboardInterrupt) at a write."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_explain_benchmark import NAMES, make_setup

from explain.cli import main


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    return make_setup(tmp_path_factory.mktemp("stops"))


def _files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _stop_at_call(monkeypatch, module, name: str, n: int) -> None:
    """The n-th call of module.name raises KeyboardInterrupt (Ctrl-C) instead of running: a stop mid-write."""
    real, calls = getattr(module, name), [0]

    def stopping(*args, **kwargs):
        calls[0] += 1
        if calls[0] == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(module, name, stopping)


def _one_run_only(folder: Path, before: dict[str, bytes]) -> None:
    """The folder holds one run's files: all of them the earlier run's as they were, or none of them."""
    now = _files(folder)
    assert not [n for n in now if n.endswith(".tmp") or "/." in n]   # no temporary of either run is left
    kept = {n for n, b in now.items() if before.get(n) == b and not n.startswith(".")}
    new = {n for n in now if n not in kept and not n.startswith(".")}
    assert not (kept and new), f"two runs mixed: earlier {sorted(kept)[:4]}, new {sorted(new)[:4]}"


# ---------------------------------------------------------------- 1, 6: a folder never mixes two runs

def _cf(setup, out, *extra):
    return ["counterfactual", "--model", str(setup / "model"), "--image", str(setup / "imgs" / NAMES[0]),
            "--steps", "3", "--autocast", "off", "--scale", "1", "--out", str(out), *extra]


def test_a_stopped_counterfactual_never_leaves_two_runs_in_one_folder(setup, tmp_path, monkeypatch):
    """Run 2 into run 1's folder, stopped at its 4th save: summary.json and grid.png were run 1's, some target
    folders run 2's, one held a new strip.png beside an old gif, and nothing said so."""
    import explain.export as export

    out = tmp_path / "cf"
    assert main(_cf(setup, out, "--target", "all", "--eps", "0.2")) == 0
    before = _files(out)
    with monkeypatch.context() as m:
        _stop_at_call(m, export, "save_gif", 4)
        assert main(_cf(setup, out, "--target", "all", "--eps", "inf", "--step-size", "2")) == 130
    _one_run_only(out, before)
    assert main(_cf(setup, out, "--target", "all", "--eps", "inf", "--step-size", "2")) == 0   # finished: all new
    summary = json.loads((out / "summary.json").read_text())
    for row in summary:
        metrics = json.loads((out / f"{row['target']:02d}-{row['target_name']}" / "metrics.json").read_text())
        assert metrics["params"]["eps"] == "inf" and metrics["l2"][-1] == pytest.approx(row["l2"])
    with monkeypatch.context() as m:   # a one-target run stopped at minimal.json, after its path's four files
        _stop_at_call(m, export, "save_json", 2)
        before = _files(out)
        assert main(_cf(setup, out, "--target", "dog", "--eps", "0.5", "--minimal", "0.5")) == 130
    _one_run_only(out, before)


@pytest.mark.parametrize("command, extra, writer", [
    ("landscape", ["--grid", "3"], "save_json"),
    ("attribute", ["--methods", "saliency"], "save_figure")])
def test_a_stopped_landscape_or_attribution_keeps_its_two_files_from_one_run(setup, tmp_path, monkeypatch, command,
                                                                            extra, writer):
    """landscape.png and landscape.json (attributions.npz and .png) were replaced one by one: a stop between them
    left a new figure beside old numbers."""
    import explain.export as export

    out = tmp_path / command
    base = [command, "--model", str(setup / "model"), "--image", str(setup / "imgs" / NAMES[0]), "--target", "dog",
            "--steps", "2", "--autocast", "off", "--out", str(out), *extra]
    assert main([*base, "--eps", "0.3"]) == 0
    before = _files(out)
    with monkeypatch.context() as m:
        _stop_at_call(m, export, writer, 1)
        assert main([*base, "--eps", "inf", "--step-size", "2"]) == 130
    _one_run_only(out, before)


def test_generate_leaves_no_earlier_sampling_gif_beside_a_run_without_one(setup, tmp_path):
    out = tmp_path / "gen"
    base = ["generate", "--model", str(setup / "model"), "--target", "cat", "--steps", "2", "--autocast", "off",
            "--out", str(out)]
    assert main([*base, "--record-every", "1"]) == 0 and (out / "sampling.gif").is_file()
    (out / "notes.txt").write_text("mine")
    assert main(base) == 0
    assert not (out / "sampling.gif").exists() and (out / "grid.png").is_file() and (out / "samples.json").is_file()
    assert (out / "notes.txt").read_text() == "mine"


# ---------------------------------------------------------------- 2: the infinite radius in curves.png

def _bench(setup, out, *extra):
    return ["benchmark", "--model", str(setup / "model"), "--images", str(setup / "imgs"), "--pairs",
            str(setup / "pairs.csv"), "--eps", "0.5,inf", "--steps", "2", "--step-size", "0.4", "--batch-size", "2",
            "--autocast", "off", "--compile", "off", "--feature-model", "none", "--transfer-model", "none",
            "--out", str(out), *extra]


def test_curves_plot_the_infinite_radius_past_the_finite_ones(setup, tmp_path, monkeypatch):
    """matplotlib drops x = inf: curves.png of `--eps 0.5,inf` showed the 0.5 point alone."""
    import explain.benchmark_report as rep

    figures = []
    real = rep.save_figure

    def keep(fig, path, *args, **kwargs):   # look at the figure, then save it as the command does
        if Path(path).name == "curves.png":
            figures.append([(ax, [line.get_xdata() for line in ax.get_lines()], [t.get_text() for t in
                                                                                 ax.get_xticklabels()])
                            for ax in fig.axes])
        return real(fig, path, *args, **kwargs)

    monkeypatch.setattr(rep, "save_figure", keep)
    assert main(_bench(setup, tmp_path / "b")) == 0 and (tmp_path / "b" / "curves.png").is_file()
    (axes,) = figures
    validity, xs, ticks = axes[0]
    assert len(xs[0]) == 2 and all(np.isfinite(xs[0])) and xs[0][1] > xs[0][0] == 0.5
    assert "∞" in ticks


# ---------------------------------------------------------------- 3: a card's device

def test_a_card_with_a_device_that_is_no_device_is_refused_in_one_line(setup, tmp_path, capsys):
    out = tmp_path / "cf"
    assert main(_cf(setup, out, "--target", "dog", "--card", "--device", "cpu")) == 0
    card = json.loads((out / "card.json").read_text())
    card["device"] = "gpu"
    (tmp_path / "gpu.json").write_text(json.dumps(card))
    capsys.readouterr()
    for extra in (["--device", "cpu"], []):
        assert main(["replay", str(tmp_path / "gpu.json"), *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and "'gpu'" in err and "Traceback" not in err


def test_a_stopped_replay_keeps_the_earlier_replays_two_files(setup, tmp_path, monkeypatch):
    import explain.export as export

    assert main(_cf(setup, tmp_path / "cf", "--target", "dog", "--card", "--device", "cpu")) == 0
    card = json.loads((tmp_path / "cf" / "card.json").read_text())
    card["params"]["steps"] = 2   # another path: the replay says it differs, and writes it all the same
    (tmp_path / "other.json").write_text(json.dumps(card))
    out = tmp_path / "replay"
    assert main(["replay", str(tmp_path / "cf" / "card.json"), "--out", str(out)]) == 0
    before = _files(out)
    with monkeypatch.context() as m:
        _stop_at_call(m, export, "save_json", 1)
        assert main(["replay", str(tmp_path / "other.json"), "--out", str(out)]) == 130
    assert _files(out) == before


# ---------------------------------------------------------------- 4, 5, 7: benchmark resumes and time

def test_a_benchmark_stopped_in_its_minimal_searches_reruns_only_the_one_in_flight(setup, tmp_path, monkeypatch):
    """Saved per chunk of 16: a stop at the 11th search threw away the 10 finished ones."""
    import explain.benchmark as bm

    args = _bench(setup, tmp_path / "b", "--eps", "0.5", "--minimal", "12", "--pairs", "all-others")
    with monkeypatch.context() as m:
        _stop_at_call(m, bm, "minimal_counterfactual", 11)
        assert main(args) == 130
    real, calls = bm.minimal_counterfactual, []
    monkeypatch.setattr(bm, "minimal_counterfactual", lambda *a, **k: calls.append(1) or real(*a, **k))
    assert main(args) == 0
    assert len(calls) == 2   # the one in flight, and the last one
    report = json.loads((tmp_path / "b" / "benchmark.json").read_text())
    assert report["minimal_radius"]["pairs"] == 12


def test_running_a_finished_benchmark_again_adds_no_time(setup, tmp_path):
    out = tmp_path / "b"
    assert main(_bench(setup, out)) == 0
    first = json.loads((out / "benchmark.json").read_text())["seconds"]
    assert main(_bench(setup, out)) == 0
    report = json.loads((out / "benchmark.json").read_text())
    assert report["seconds"] == first and "several sessions" not in (out / "report.md").read_text()


@pytest.mark.parametrize("text", ['{"s": 1}', "null", "[1]", '"3"'])
def test_a_damaged_seconds_file_is_set_aside_not_a_traceback(setup, tmp_path, text):
    out = tmp_path / "b"
    assert main(_bench(setup, out)) == 0
    (out / "seconds.json").write_text(text)
    assert main(_bench(setup, out)) == 0
    assert (out / "seconds.json.damaged").read_text() == text
    assert json.loads((out / "benchmark.json").read_text())["seconds"] >= 0


def test_a_part_file_without_an_array_is_damage_and_its_pairs_run_again(setup, tmp_path):
    out = tmp_path / "b"
    assert main(_bench(setup, out)) == 0
    before = json.loads((out / "benchmark.json").read_text())["radii"]
    part = sorted((out / "parts").glob("r0-p*.npz"))[1]
    with np.load(part) as f:
        arrays = {k: f[k] for k in f.files if k != "step"}
    with open(part, "wb") as f:
        np.savez(f, **arrays)
    assert main(_bench(setup, out)) == 0
    assert (part.parent / (part.name + ".damaged")).is_file() and part.is_file()
    assert json.loads((out / "benchmark.json").read_text())["radii"] == before


# ---------------------------------------------------------------- 8: one file per --minimal confidence

def test_minimal_confidences_that_share_a_file_name_are_refused(setup, tmp_path, capsys):
    out = tmp_path / "cf"
    assert main(_cf(setup, out, "--target", "dog", "--minimal", "0.1,0.1000001")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "minimal_0.1.png" in err and not out.exists()


# ---------------------------------------------------------------- 9: messages name the path as typed

def test_messages_name_a_folder_as_typed(setup, tmp_path, monkeypatch, capsys):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.chdir(empty)
    assert main(["success", "--model", str(setup / "model"), "--images", ".", "--out", str(tmp_path / "s")]) == 2
    assert "error: --images . holds no images" in capsys.readouterr().err
    out = tmp_path / "b"
    assert main(_bench(setup, out)) == 0
    monkeypatch.chdir(out)
    assert main(_bench(setup, ".", "--steps", "3")) == 2
    assert "error: . holds a benchmark with other settings" in capsys.readouterr().err
    success = ["success", "--model", str(setup / "model"), "--images", str(setup / "imgs"), "--steps", "2",
               "--autocast", "off", "--compile", "off", "--out", "."]
    sweep = tmp_path / "sweep"
    sweep.mkdir()
    monkeypatch.chdir(sweep)
    assert main(success) == 0
    assert main([*success, "--norm", "Linf"]) == 2
    assert "error: success.json holds another sweep" in capsys.readouterr().err


# ---------------------------------------------------------------- 10: --images labels as its help says

def test_images_help_says_which_text_of_a_file_name_is_its_class(setup, tmp_path, capsys):
    from explain.image_sets import load_image_set

    with pytest.raises(SystemExit):
        main(["benchmark", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    assert "before the last '-'" in help_text
    folder = tmp_path / "imgs"
    folder.mkdir()
    for name in ("cat-0000-b.png", "cat-0000.png", "ship-x-1.png"):
        shutil.copy(setup / "imgs" / NAMES[0], folder / name)
    args = type("Args", (), {"images": str(folder), "data": None, "limit": 10, "split": None, "val_size": None,
                             "seed": None})()
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    _, labels, files = load_image_set(args, names, 32)
    assert dict(zip(files, labels)) == {"cat-0000-b.png": None, "cat-0000.png": 3, "ship-x-1.png": None}


def test_a_benchmark_begun_on_another_device_is_not_resumed_here(setup, tmp_path, capsys):
    """run.json did not record the device: a run begun on CUDA (TF32 convolutions, its own kernels) and resumed on
    the CPU mixed two devices' paths in one report. (No GPU here: the CUDA start is written into run.json.)"""
    out = tmp_path / "b"
    assert main(_bench(setup, out)) == 0
    run = json.loads((out / "run.json").read_text())
    assert run["device_type"] == "cpu"
    (out / "run.json").write_text(json.dumps({**run, "device_type": "cuda"}))
    capsys.readouterr()
    assert main(_bench(setup, out)) == 2
    assert "other settings (device_type differ)" in capsys.readouterr().err
    del run["device_type"]   # a run.json from before the device was recorded: continues, and records it
    (out / "run.json").write_text(json.dumps(run))
    assert main(_bench(setup, out)) == 0
    assert json.loads((out / "run.json").read_text())["device_type"] == "cpu"
