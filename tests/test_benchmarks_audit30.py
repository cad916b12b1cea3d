"""Audit 30 of the benchmarks: a bad input is refused before any model loads or any work runs (a missing image folder,
a misspelt device or architecture, a cf_realism run folder or --json that cannot be used), every timed call of
benchmarks/explain.py is a warm one, and cf_realism scores every kind of benchmark run as the benchmark itself did."""

import argparse
import json
import resource
import signal
import sys
import types

import pytest
import torch
from test_benchmark_scripts import SCRIPTS, assert_usage_error, load_script, parser_of, run_script

from dat_core import build_model
from dat_core.checkpoint import save_model
from explain.cli import main

# ---------------------------------------------------------------- python -m explain benchmark: the image source


@pytest.mark.parametrize("source", ["missing_folder", "empty_folder", "missing_data"])
def test_the_benchmark_refuses_a_missing_image_source_before_the_model_loads(tmp_path, capsys, source):
    """A missing --images folder or --data archive failed only after the model loaded (a Hub model downloads first):
    here the model is no checkpoint, so loading it first would be the error."""
    (tmp_path / "no_model").mkdir()
    (tmp_path / "empty").mkdir()
    given = {"missing_folder": ["--images", str(tmp_path / "nope")],
             "empty_folder": ["--images", str(tmp_path / "empty")],
             "missing_data": ["--data", str(tmp_path / "nope.tar.gz")]}[source]
    code = main(["benchmark", "--model", str(tmp_path / "no_model"), *given, "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and given[1] in err and "config.json" not in err, err
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------- the scripts' --device and --archs

DEVICE_SCRIPTS = {"pgd.py": ["--archs", "wrn-10-1", "--batches", "1", "--steps", "1", "--repeats", "1"],
                  "latency.py": ["--archs", "wrn-10-1@8", "--steps", "1", "--compile", "off", "--repeats", "1"],
                  "train_step.py": ["--quick", "--arch", "wrn-10-1", "--batch", "2", "--T", "1", "--K", "1"],
                  "cf_step_floor.py": ["--model", "default", "--batches", "1", "--compile", "off"],
                  "explain.py": ["--quick", "--archs", "wrn-10-1@8", "--cases", "as_run_by_cli_and_app"]}


@pytest.mark.parametrize("script", sorted(DEVICE_SCRIPTS))
@pytest.mark.parametrize("device", ["gpu", "cuda"])
def test_an_unknown_or_absent_device_is_a_usage_error(tmp_path, script, device):
    """`--device gpu` was a RuntimeError traceback, `--device cuda` on a machine without CUDA one from deep inside
    the first model move."""
    if device == "cuda" and torch.cuda.is_available():
        pytest.skip("CUDA is here")
    r = run_script(script, *DEVICE_SCRIPTS[script], "--device", device, cwd=tmp_path)
    assert_usage_error(r, "--device", device)


@pytest.mark.parametrize("script, args, bad", [
    ("explain.py", ["--quick", "--device", "cpu", "--cases", "as_run_by_cli_and_app", "--archs", "wrn-10-1@8"],
     "no-such-net"),
    ("explain.py", ["--quick", "--device", "cpu", "--cases", "as_run_by_cli_and_app", "--archs", "wrn-10-1@8"],
     "wrn-10-1@x"),
    ("explain.py", ["--quick", "--device", "cpu", "--cases", "as_run_by_cli_and_app", "--archs", "wrn-10-1@8"],
     "wrn-10-1@0"),
    ("pgd.py", ["--device", "cpu", "--batches", "1", "--steps", "1", "--repeats", "1", "--archs", "wrn-10-1"],
     "no-such-net"),
    ("latency.py", ["--device", "cpu", "--steps", "1", "--compile", "off", "--repeats", "1", "--archs", "wrn-10-1@8"],
     "wrn-10-1@8px"),
    ("train_step.py", ["--device", "cpu", "--quick", "--batch", "2", "--T", "1", "--K", "1", "--arch"],
     "no-such-net")])
def test_every_architecture_is_checked_before_the_first_one_runs(tmp_path, script, args, bad):
    """A misspelt second architecture (or a size that is no number) was a traceback after the first one's whole
    run, whose results were lost with it (the JSON line comes at the end)."""
    r = run_script(script, *args, bad, cwd=tmp_path)
    assert_usage_error(r, bad)
    assert r.stdout.strip() == ""


def test_latency_still_skips_an_architecture_it_does_not_know(tmp_path):
    """latency.py documents unknown names as skipped (the GPU check lists archs a lent machine's torch may lack)."""
    r = run_script("latency.py", *DEVICE_SCRIPTS["latency.py"], "--device", "cpu", "--archs", "wrn-10-1@8",
                   "no-such-net", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert json.loads(r.stdout.strip().splitlines()[-1])["archs"]["no-such-net"] == {"skipped": "unknown architecture"}


# ---------------------------------------------------------------- benchmarks/explain.py: no timed call is a cold one

COLD_S = 100.0

def small_cases() -> list[str]:
    """explain.py's cases of a 32 px model (the ImageNet ones start the app or time what these warm)."""
    bench = load_script("explain.py")
    return [c.name for c in bench.CASES if c.name not in bench.IMAGENET_CASES]



@pytest.fixture
def cold_start_clock(monkeypatch):
    """The benchmarks' clock (common.time) stands still but for 1 ms a reading, and a model's first call at an input
    shape and precision costs COLD_S on it (what a new shape costs on CUDA or a compiled model: autotuning, a
    graph): a timing holding one such call reads >= COLD_S."""
    bench = load_script("explain.py")
    common = sys.modules["common"]
    now = [0.0]

    def perf_counter() -> float:
        now[0] += 1e-3
        return now[0]

    monkeypatch.setattr(common, "time", types.SimpleNamespace(perf_counter=perf_counter))
    seen = set()

    def first_call_is_slow(module, inputs):
        key = (id(module), tuple(inputs[0].shape), torch.is_autocast_enabled("cpu"))
        if key not in seen:
            seen.add(key)
            now[0] += COLD_S

    torch.manual_seed(0)
    model = build_model("wrn-10-1", image_size=8).eval()
    model.register_forward_pre_hook(first_call_is_slow)
    ctx = bench.Context("wrn-10-1", model, torch.rand(3, 8, 8), torch.device("cpu"), repeats=1, quick=True, bf16=True)
    return bench, ctx


@pytest.mark.parametrize("case", small_cases())
def test_every_timed_call_of_a_case_is_a_warm_one(cold_start_clock, case):
    """With one repeat (--quick, or `--repeats 1` as BENCHMARKS.md runs wrn-34-10) minimal_counterfactual and
    generate timed their only, first call, the channels-last copy its first trajectory and both models their first
    landscape, and the landscape its first bf16 one: a one-time cost reported as the latency."""
    bench, ctx = cold_start_clock
    row = next(c for c in bench.CASES if c.name == case).run(ctx)
    timings = {k: v for k, v in row.items() if (k.endswith("_s") or k == "seconds") and isinstance(v, float)}
    assert timings and all(v < COLD_S for v in timings.values()), timings


# ---------------------------------------------------------------- benchmarks/cf_realism.py

def test_cf_realism_checks_its_runs_and_json_before_loading_any_feature_model(tmp_path):
    """A missing run folder was a FileNotFoundError traceback, an --images run a refusal, an unwritable --json an
    IsADirectoryError traceback: each after every feature model had loaded (and the last after all the work).
    Here the feature model is no checkpoint, so loading it first would be the error."""
    (tmp_path / "no_model").mkdir()
    images_run, gone_run = tmp_path / "images_run", tmp_path / "gone_run"
    for run, source in ((images_run, {"data": None, "images": "photos"}),
                        (gone_run, {"data": str(tmp_path / "gone.tar.gz"), "images": None})):
        run.mkdir()
        (run / "run.json").write_text(json.dumps({**source, "pairs": "all-others", "radii": ["1.0"]}))
    empty_run = tmp_path / "empty_run"
    empty_run.mkdir()
    for runs, extra, says in [([tmp_path / "no_run"], [], "no_run"), ([images_run], [], "only --data runs"),
                              ([empty_run], [], "run.json"), ([gone_run], [], "gone.tar.gz does not exist"),
                              ([images_run], ["--json", str(tmp_path)], "--json"),
                              ([images_run], ["--features", " , "], "--features")]:
        r = run_script("cf_realism.py", *map(str, runs), "--features", str(tmp_path / "no_model"), *extra,
                       cwd=tmp_path)
        assert_usage_error(r, says)
        assert "config.json" not in r.stderr


@pytest.fixture(scope="module")
def toy_models(tmp_path_factory):
    """Two 3-class 16 px models of the toy dataset's classes: the explained one and an independent judge."""
    d = tmp_path_factory.mktemp("cf-realism")
    names = ["class0", "class1", "class2"]
    for seed, name in enumerate(("model", "judge")):
        torch.manual_seed(seed)
        save_model(build_model("wrn-10-1", num_classes=3, image_size=16, class_names=names).eval(), d / name)
    return d


@pytest.mark.parametrize("pairs", ["random-other", "all-others"])
def test_cf_realism_scores_a_run_as_the_benchmark_did(toy, toy_models, tmp_path, pairs):
    """cf_realism rebuilt a run's pairs from run.json; a `--pairs random-other` run ended in "no (image, target)
    pairs" (its pairs were read as a list of class pairs). Its pairs, validity and closeness must be the benchmark's."""
    out = tmp_path / "run"
    assert main(["benchmark", "--model", str(toy_models / "model"), "--data", str(toy), "--split", "test",
                 "--val-size", "0", "--limit", "9", "--pairs", pairs, "--eps", "1", "--steps", "2",
                 "--feature-model", str(toy_models / "judge"), "--transfer-model", str(toy_models / "judge"),
                 "--compile", "off", "--autocast", "off", "--out", str(out)]) == 0
    bench = json.loads((out / "benchmark.json").read_text())["radii"][0]
    r = run_script("cf_realism.py", str(out), "--features", str(toy_models / "judge"), "--json",
                   str(tmp_path / "cf.json"), cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    [row] = json.loads((tmp_path / "cf.json").read_text())["rows"]
    assert row["pairs"] == bench["pairs"] == (9 if pairs == "random-other" else 18)
    assert row["validity"] == bench["validity"] and row["closeness"] == bench["closeness"]
    # (its Fréchet distances are of the saved uint8 x_T, the benchmark's of x_T itself: close, not equal)
    assert row["frechet"]["judge"]["pooled"] == pytest.approx(bench["realism"]["frechet_distance"], rel=0.2)



# ---------------------------------------------------------------- gpu_check.py: the report, whole or not at all

def test_gpu_check_keeps_the_earlier_report_when_writing_the_new_one_fails(tmp_path, monkeypatch):
    """The report was written in place: a full disk (here a file-size limit) or a stop mid-write left half a JSON
    where the last lent GPU's report had been."""
    module = load_script("gpu_check.py")
    out = tmp_path / "gc.json"
    out.write_text('{"old": "report"}\n')
    monkeypatch.setattr(module, "run_part", lambda name, cmd, limit: {"rc": 0, "tail": "x" * 2**20})
    monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--dry-run", "--only", "latency", "--out", str(out)])
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    handler = signal.signal(signal.SIGXFSZ, signal.SIG_IGN)   # a write past the limit fails instead of killing
    resource.setrlimit(resource.RLIMIT_FSIZE, (2**19, hard))
    try:
        with pytest.raises(OSError):
            module.main()
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        signal.signal(signal.SIGXFSZ, handler)
    assert json.loads(out.read_text()) == {"old": "report"}
    assert sorted(tmp_path.iterdir()) == [out]   # and no temporary file beside it


# ---------------------------------------------------------------- --help explains every option

@pytest.mark.parametrize("script", SCRIPTS)
def test_help_explains_every_option(script, monkeypatch):
    """--help listed bare `--clients CLIENTS`, `--repeats REPEATS`, `--device DEVICE`: what they count, and their
    defaults, were only in the code."""
    bare = [a.option_strings or [a.dest] for a in parser_of(script, monkeypatch)._actions
            if not a.help and a.help != argparse.SUPPRESS]
    assert not bare, f"{script}: no help for {bare}"
