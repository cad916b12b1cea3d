"""The benchmark scripts' command lines: a bad option is a one-line usage error before any work (a lent GPU's
minutes are too few to lose to a typo), never a traceback afterwards or a silently different run; BENCHMARKS.md
says truly which scripts take `--quick`; explain.py's last line repeats the row its latency targets are judged on.
Subprocess runs use tiny inputs; parsers are read in-process (each script's `main` up to its `parse_args`)."""

import argparse
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
SCRIPTS = sorted(f.name for f in BENCH.glob("*.py") if 'if __name__ == "__main__"' in f.read_text())


def run_script(name: str, *args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, str(BENCH / name), *args], capture_output=True, text=True, env=env,
                          cwd=cwd, timeout=timeout)


def load_script(name: str):
    """A benchmark script as a module of its own name (benchmarks/explain.py must not shadow the `explain` package:
    benchmarks/ goes last on sys.path, only for the scripts' `from common import ...`)."""
    if str(BENCH) not in sys.path:
        sys.path.append(str(BENCH))
    spec = importlib.util.spec_from_file_location(f"benchmark_script_{Path(name).stem}", BENCH / name)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module


class _Parsed(Exception):
    pass


def parser_of(name: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser a script's main builds, taken at its parse_args (nothing after that runs)."""
    module = load_script(name)
    built = []

    def capture(self, *args, **kwargs):
        built.append(self)
        raise _Parsed

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(sys, "argv", [name])
    with pytest.raises(_Parsed):
        module.main()
    return built[0]


def assert_usage_error(r: subprocess.CompletedProcess, *words: str) -> None:
    assert r.returncode == 2, (r.returncode, r.stdout[-1500:], r.stderr[-1500:])
    assert "Traceback" not in r.stderr and "error:" in r.stderr
    for word in words:
        assert word in r.stderr, r.stderr


# ---------------------------------------------------------------- gpu_check.py: refusals before any part runs

@pytest.fixture
def gpu_check(monkeypatch):
    """gpu_check's main with each part's subprocess replaced by a recorder (what ran, in order)."""
    module = load_script("gpu_check.py")
    ran = []

    def fake_part(name, cmd, limit):
        ran.append(name)
        return {"rc": 0, "wall_s": 0.0}

    monkeypatch.setattr(module, "run_part", fake_part)

    def main(*argv: str):
        monkeypatch.setattr(sys, "argv", ["gpu_check.py", "--dry-run", *argv])
        return module.main()
    main.module, main.ran = module, ran
    return main


def test_gpu_check_only_refuses_misspelled_part_names(tmp_path):
    out = tmp_path / "gc.json"
    r = run_script("gpu_check.py", "--dry-run", "--only", "cuda-tests", "train-step", "--out", str(out),
                   cwd=tmp_path, timeout=60)
    assert_usage_error(r, "cuda-tests", "cuda_tests", "train_step")   # names what it got and the known parts
    assert not out.exists() and "wrote" not in r.stdout


def test_gpu_check_only_runs_the_named_parts(gpu_check, tmp_path):
    out = tmp_path / "gc.json"
    assert gpu_check("--only", "latency", "train_step", "--out", str(out)) == 0
    assert gpu_check.ran == ["train_step", "latency"]                  # in the script's order of importance
    report = json.loads(out.read_text())
    assert report["ok"] and set(report["parts"]) == {"train_step", "latency"}


def test_gpu_check_part_names_are_the_parts_it_runs(gpu_check, tmp_path):
    assert gpu_check("--out", str(tmp_path / "gc.json")) == 0
    assert gpu_check.ran == list(gpu_check.module.PART_NAMES)


def test_gpu_check_an_empty_report_is_not_ok(gpu_check, tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check.module, "parts", lambda *args, **kwargs: [])
    out = tmp_path / "gc.json"
    assert gpu_check("--out", str(out)) != 0
    report = json.loads(out.read_text())
    assert report["parts"] == {} and report["ok"] is False


@pytest.mark.parametrize("bad", ["folder", "new_folder/", "under_a_file", "budget_nan", "budget_inf", "budget_0",
                                 "budget_-5", "budget_9", "missing_cf_data"])
def test_gpu_check_refuses_a_bad_out_budget_or_cf_data_before_any_part(gpu_check, tmp_path, capsys, bad):
    (tmp_path / "a_file").write_text("x")
    args = {"folder": ["--out", str(tmp_path)],
            "new_folder/": ["--out", f"{tmp_path / 'new'}/"],
            "under_a_file": ["--out", str(tmp_path / "a_file" / "gc.json")],
            "missing_cf_data": ["--out", str(tmp_path / "gc.json"), "--cf-data", str(tmp_path / "no.tar.gz")]}.get(
        bad, ["--out", str(tmp_path / "gc.json"), "--budget", bad.partition("_")[2]])
    with pytest.raises(SystemExit) as stop:
        gpu_check(*args)
    assert stop.value.code == 2 and gpu_check.ran == []
    err = capsys.readouterr().err
    assert "error:" in err and args[-1] in err
    assert not (tmp_path / "gc.json").exists()


# ---------------------------------------------------------------- BENCHMARKS.md's --quick claim

def quick_claim() -> set[str]:
    """The scripts BENCHMARKS.md's opening paragraph says take --quick: those named in the clause of its
    `--quick` sentence up to the first ";" (or every script, where it says "Every script")."""
    top = (ROOT / "BENCHMARKS.md").read_text().split("\n\n")[1].replace("\n", " ")
    sentence = next(s for s in re.split(r"(?<=\.) ", top) if "`--quick`" in s)
    clause = sentence.split(";")[0]
    return set(SCRIPTS) if "Every script" in clause else set(re.findall(r"`(\w+\.py)`", clause))


@pytest.mark.parametrize("script", SCRIPTS)
def test_benchmarks_md_names_exactly_the_scripts_that_take_quick(script, monkeypatch):
    options = parser_of(script, monkeypatch)._option_string_actions
    assert ("--quick" in options) == (script in quick_claim())


# ---------------------------------------------------------------- counts and numbers are bounded

@pytest.mark.parametrize("script", SCRIPTS)
def test_every_numeric_option_refuses_negative_and_nan(script, monkeypatch):
    """A count or a duration below its range is a usage error, not a StatisticsError after the work, a division by
    zero, or "0 means the default" (plain `int`/`float` take -1 and nan)."""
    for action in parser_of(script, monkeypatch)._actions:
        if action.type in (None, str, Path) or action.choices:
            continue
        for bad in ("-1", "nan"):
            with pytest.raises(argparse.ArgumentTypeError):
                action.type(bad)
                pytest.fail(f"{script} {action.option_strings} took {bad}")


TINY = {"latency.py": ["--archs", "wrn-10-1@8", "--steps", "1", "--compile", "off"],
        "augment.py": ["--batch", "2", "--size", "8"],
        "cf_step_floor.py": ["--batches", "1", "--compile", "off"],
        "pgd.py": ["--archs", "wrn-10-1", "--batches", "1", "--steps", "1"],
        "train_step.py": ["--quick", "--arch", "wrn-10-1", "--batch", "2", "--T", "1", "--K", "1", "--bf16", "off"],
        "explain.py": ["--quick", "--archs", "wrn-10-1@8", "--cases", "as_run_by_cli_and_app"]}


@pytest.mark.parametrize("script, option, value", [
    ("latency.py", "--repeats", "0"), ("latency.py", "--repeats", "-1"), ("augment.py", "--repeats", "0"),
    ("cf_step_floor.py", "--steps", "0"), ("pgd.py", "--repeats", "0"), ("train_step.py", "--repeats", "0"),
    ("explain.py", "--repeats", "0")])
def test_a_zero_count_is_a_usage_error_not_a_traceback_or_the_default(tmp_path, script, option, value):
    r = run_script(script, *TINY[script], option, value, cwd=tmp_path)
    assert_usage_error(r, option)


# ---------------------------------------------------------------- explain.py's summary line

def test_explain_as_run_is_repeated_for_an_arch_given_with_its_size(tmp_path):
    r = run_script("explain.py", *TINY["explain.py"], "--device", "cpu", cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    result = json.loads(r.stdout.strip().splitlines()[-1])
    [row] = result["cases"]
    assert row["arch"] == "wrn-10-1@8" and "target_met" in row
    assert result["as_run"] == row
