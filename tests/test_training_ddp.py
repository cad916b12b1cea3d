"""Training under torchrun (2 ranks, gloo on CPU): stopping agreed across ranks, exact resume, reproducibility.

Each run is a tiny stage-1 job (wrn-10-1 at 16 px, BatchNorm active so each rank's running statistics
differ); every subprocess has a timeout and its whole process group is killed on the way out.
"""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from dat_core.training.loop import STATE_FILE

ROOT = Path(__file__).resolve().parent.parent
TORCHRUN = Path(sys.executable).parent / "torchrun"
pytestmark = pytest.mark.slow


def overrides(toy, out, steps, *extra):
    """Stage-1 overrides; `extra` keys replace the defaults' (a key given twice is refused)."""
    given = {o.split("=", 1)[0]: o for o in (
        f"out_dir={out}", f"data.dataset={toy}", "data.image_size=16", "data.val_size=12", "model.arch=wrn-10-1",
        f"steps={steps}", "batch_size=8", "log_every=1", "ckpt_every=1000", "eval_every=0", "eval_size=12",
        "eval_attack_steps=1", "attack.steps=2", "sample_grid=false", "channels_last=false", "autocast=false",
        *extra)}
    return list(given.values())


def torchrun(args, nproc=2, launcher="torchrun"):
    """torchrun itself, or `python -m train.launch` (the same launcher without its failure traceback)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    cmd = [str(TORCHRUN)] if launcher == "torchrun" else [sys.executable, "-m", "train.launch"]
    return subprocess.Popen([*cmd, "--standalone", f"--nproc_per_node={nproc}", "-m", "train", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def finish(proc, timeout):
    """(returncode, output); on a hang past `timeout`, torchrun and its workers (own sessions) are killed
    and the returncode is None."""
    try:
        out, _ = proc.communicate(timeout=timeout)
        return proc.returncode, out
    except subprocess.TimeoutExpired:
        kill_job(proc)
        out, _ = proc.communicate()
        return None, out


def kill_job(proc):
    """SIGKILL torchrun and every worker it started (workers run in sessions of their own)."""
    for pid in [*workers(proc).values(), proc.pid]:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def workers(proc) -> dict[int, int]:
    """{rank: pid} of torchrun's worker processes (read from their environment)."""
    found = {}
    for status in Path("/proc").glob("[0-9]*/status"):
        try:
            ppid = int(next(line.split()[1] for line in status.read_text().splitlines() if line.startswith("PPid")))
            if ppid != proc.pid and not _descends(ppid, proc.pid):
                continue
            env = (status.parent / "environ").read_bytes().split(b"\0")
        except (OSError, StopIteration, ValueError):
            continue
        rank = [e[5:] for e in env if e.startswith(b"RANK=")]
        if rank and any(e.startswith(b"LOCAL_WORLD_SIZE=") for e in env):
            found[int(rank[0])] = int(status.parent.name)
    return found


def _descends(pid: int, ancestor: int) -> bool:
    for _ in range(5):
        try:
            line = next(s for s in Path(f"/proc/{pid}/status").read_text().splitlines() if s.startswith("PPid"))
        except (OSError, StopIteration):
            return False
        pid = int(line.split()[1])
        if pid == ancestor:
            return True
    return False


def wait_rows(path: Path, n: int, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if path.exists() and len(path.read_text().splitlines()) >= n:
            return
        time.sleep(0.05)
    raise AssertionError(f"{path} did not reach {n} rows")


def states_equal(a: Path, b: Path):
    sa, sb = (torch.load(p / STATE_FILE, weights_only=True) for p in (a, b))
    assert sa["step"] == sb["step"]
    for part in ("model",):
        for k in sa[part]:
            assert torch.equal(sa[part][k], sb[part][k]), (part, k)
    for k in sa["ema"]["model"]:
        assert torch.equal(sa["ema"]["model"][k], sb["ema"]["model"][k]), ("ema", k)
    for r in range(2):  # every rank's own BatchNorm statistics
        for k, v in sa["ranks"][r]["buffers"].items():
            assert torch.equal(v, sb["ranks"][r]["buffers"][k]), (r, k)


@pytest.fixture(scope="module")
def reference(toy, tmp_path_factory):
    """An uninterrupted 2-rank run of 30 steps."""
    out = tmp_path_factory.mktemp("ddp") / "ref"
    code, text = finish(torchrun(["stage1", *overrides(toy, out, 30)]), 240)
    assert code == 0, text
    return out


def test_two_rank_runs_are_reproducible(toy, reference, tmp_path):
    code, text = finish(torchrun(["stage1", *overrides(toy, tmp_path / "again", 30)]), 240)
    assert code == 0, text
    states_equal(reference, tmp_path / "again")
    s = torch.load(reference / STATE_FILE, weights_only=True)
    # BN statistics are per rank (each normalizes its own half batch): they differ, and both are kept
    assert any(not torch.equal(v, s["ranks"][1]["buffers"][k]) for k, v in s["ranks"][0]["buffers"].items())


@pytest.mark.parametrize("launcher,target,sig", [
    ("train.launch", 1, signal.SIGTERM), ("torchrun", 0, signal.SIGINT), ("train.launch", "launcher", signal.SIGTERM),
], ids=["SIGTERM-rank1", "SIGINT-rank0-torchrun", "SIGTERM-launcher"])
def test_signal_to_one_rank_stops_all_then_resume_is_exact(toy, reference, tmp_path, launcher, target, sig):
    out = tmp_path / "run"
    proc = torchrun(["stage1", *overrides(toy, out, 30)], launcher=launcher)
    try:
        wait_rows(out / "metrics.jsonl", 3, proc)
        os.kill(proc.pid if target == "launcher" else workers(proc)[target], sig)
        code, text = finish(proc, 90)
    finally:
        if proc.poll() is None:
            kill_job(proc)
            proc.communicate()
    assert code is not None, "a signal to one rank left the job running:\n" + text
    # every rank stopped cleanly with 128 + signal, the state saved once (rank 0 says so)
    assert text.count("continue with --resume") == 1, text
    if launcher == "torchrun":  # torchrun reports the failure with a traceback of its own, and only that one
        assert code != 0 and text.count("Traceback") == 1 and "ChildFailedError" in text, text
        assert text.count(f"exitcode  : {128 + sig}") == 2, text
    else:
        assert code == 128 + sig and "Traceback" not in text, text
    stopped = torch.load(out / STATE_FILE, weights_only=True)["step"]
    assert 3 <= stopped < 30
    assert list(out.glob("*.tmp")) == []

    code, text = finish(torchrun(["stage1", *overrides(toy, out, 30), "--resume"]), 240)
    assert code == 0, text
    states_equal(reference, out)
    rows = [json.loads(line)["step"] for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert rows == list(range(1, 31))  # each step logged once


def test_launcher_exit_code_is_the_workers():
    from train.launch import exit_code

    assert [exit_code(c) for c in (143, 3, 0, -15, -9)] == [143, 3, 0, 143, 137]


FAULTS = '''
import errno, os
if os.environ.get("RANK") == os.environ.get("DAT_FAULT_RANK"):
    import torch
    from dat_core.training import loop, stage1
    kind, at = os.environ["DAT_FAULT"], int(os.environ["DAT_FAULT_STEP"])
    if kind == "nan":  # this rank's loss (only) becomes NaN at step `at`
        real_loss = stage1.AdversarialTraining.loss
        def loss(self, log, calls=[]):
            calls.append(1)
            value, logs = real_loss(self, log)
            return (value * float("nan"), logs) if len(calls) == at else (value, logs)
        stage1.AdversarialTraining.loss = loss
    if kind == "log_write":  # the disk fills up while rank 0 appends to metrics.jsonl
        real_open = loop.Trainer._open_logs
        class Full:
            def __init__(self, f, trainer): self.f, self.trainer = f, trainer
            def write(self, text):
                if self.trainer.step >= at: raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "metrics.jsonl")
                return self.f.write(text)
            def __getattr__(self, name): return getattr(self.f, name)
        def open_logs(self):
            real_open(self)
            self.log_file = Full(self.log_file, self)
        loop.Trainer._open_logs = open_logs
    if kind == "export":  # rank 0 cannot write final/
        def save_model(model, directory, card=None):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(directory))
        loop.save_model = save_model
'''


@pytest.mark.parametrize("kind,rank,code,says", [
    ("nan", 1, 3, "non-finite loss at step 4"), ("log_write", 0, 4, "No space left on device"),
    ("export", 0, 4, "Read-only file system"),
])
def test_a_fault_on_one_rank_stops_every_rank_with_its_code(toy, tmp_path, kind, rank, code, says):
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(FAULTS)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{tmp_path / 'inject'}:{ROOT}", DAT_FAULT=kind,
               DAT_FAULT_RANK=str(rank), DAT_FAULT_STEP="4")
    proc = subprocess.Popen([sys.executable, "-m", "train.launch", "--standalone", "--nproc_per_node=2", "-m", "train",
                             "stage1", *overrides(toy, tmp_path / "run", 8, "ckpt_every=2")], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    got, text = finish(proc, 120)
    assert got == code, text
    assert text.count(says) == 1 and "Traceback" not in text, text
    assert f"exit code by rank: {{0: {code}, 1: {code}}}" in text or f"{{0: {code}}}" in text, text


def test_messages_and_progress_bars_come_from_rank_0_only(toy, tmp_path):
    """An unreadable image is named once (not once per rank), and the data bars are drawn once."""
    import re
    import shutil

    data = shutil.copytree(toy, tmp_path / "data")
    (data / "train" / "class0" / "broken.png").write_bytes(b"\x89PNG broken")
    code, text = finish(torchrun(["stage1", *overrides(data, tmp_path / "run", 2)]), 240)
    assert code == 0, text
    assert text.count("warning: skipped 1 unreadable image(s)") == 1, text
    assert len(re.findall(r"decoding data:\s+0%", text)) == 1, text
    assert text.count("final EMA checkpoint") == 1, text


BEST_RACE = '''
import os, time
from dat_core.training import loop
if os.environ.get("DAT_KILL_AFTER_EVAL"):   # every rank dies right after the evaluation of that step
    at, real_evaluate = int(os.environ["DAT_KILL_AFTER_EVAL"]), loop.Trainer.evaluate
    def evaluate(self, final=False):
        result = real_evaluate(self, final)
        if self.step == at:
            os._exit(9)
        return result
    loop.Trainer.evaluate = evaluate
if os.environ.get("DAT_LATE_RANK") == os.environ.get("RANK"):   # this rank reads best/ late: after rank 0's delete
    real_export_step = loop.export_step
    def export_step(folder):
        deadline = time.monotonic() + 20
        while os.path.isdir(folder) and time.monotonic() < deadline:
            time.sleep(0.05)
        return real_export_step(folder)
    loop.export_step = export_step
'''


def test_resume_after_a_stop_between_evaluation_and_state_agrees_on_best_across_ranks(toy, tmp_path):
    """Each rank decided alone whether best/ was stale; rank 0 deleted it inside a collective, and a rank that looked
    afterwards saw nothing stale, skipped the collective, and every rank hung (SIGTERM could not end them)."""
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(BEST_RACE)
    run = overrides(toy, tmp_path / "run", 6, "ckpt_every=1", "eval_every=2")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{tmp_path / 'inject'}:{ROOT}")

    def launch(*extra, **more):
        return subprocess.Popen([str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "train", "stage1", *run,
                                 *extra], cwd=ROOT, env={**env, **more}, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    code, text = finish(launch(DAT_KILL_AFTER_EVAL="2"), 180)
    assert code != 0 and (tmp_path / "run" / "best").is_dir(), text   # best/ of step 2, state.pt of step 1
    code, text = finish(launch("--resume", DAT_LATE_RANK="1"), 180)
    assert code == 0, text
    assert torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)["step"] == 6


RANK_LOSSES = '''
import json, os
from dat_core.training import stage1
real_loss = stage1.AdversarialTraining.loss
def loss(self, log, calls=[]):
    value, logs = real_loss(self, log)
    calls.append(1)
    with open(os.path.join(os.environ["DAT_RANK_LOG"], f"rank{os.environ['RANK']}.jsonl"), "a") as f:
        f.write(json.dumps({"step": len(calls), "loss": value.item(),
                            "adv_train_accuracy": float(logs.get("adv_train_accuracy", -1))}) + "\\n")
    return value, logs
stage1.AdversarialTraining.loss = loss
'''


def test_the_log_holds_the_global_batch_not_rank_0s_share(toy, tmp_path):
    """metrics.jsonl (and the tracker, and curves.png) held rank 0's own loss and accuracy: half the batch, while the
    gradient step (and stage 2's curriculum) used the average over the ranks."""
    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(RANK_LOSSES)
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{tmp_path / 'inject'}:{ROOT}",
               DAT_RANK_LOG=str(tmp_path))
    proc = subprocess.Popen([str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "train", "stage1",
                             *overrides(toy, tmp_path / "run", 4)], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    code, text = finish(proc, 180)
    assert code == 0, text
    ranks = [{r["step"]: r for r in map(json.loads, (tmp_path / f"rank{i}.jsonl").read_text().splitlines())}
             for i in (0, 1)]
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4]
    for row in rows:
        for key in ("loss", "adv_train_accuracy"):
            mean = (ranks[0][row["step"]][key] + ranks[1][row["step"]][key]) / 2
            assert row[key] == pytest.approx(mean, rel=1e-6, abs=1e-7), (row, key)
    assert any(row["loss"] != pytest.approx(ranks[0][row["step"]]["loss"], rel=1e-6) for row in rows)


KILL_AFTER_SAVE = '''
import os
from dat_core.training import loop
at, real_save = int(os.environ["DAT_KILL_AFTER_SAVE"]), loop.Trainer._save_state
def save(self, finished=False):
    real_save(self, finished)
    if self.step == at:
        os._exit(9)
loop.Trainer._save_state = save
'''


def test_a_resume_on_another_number_of_ranks_continues_the_data_where_it_stopped(toy, tmp_path):
    """The saved positions were dropped with the per-rank state: a 2-rank run resumed on one process started every
    stream at epoch 0, batch 0 again, and trained on the run's first batches twice."""
    from train.__main__ import main

    (tmp_path / "inject").mkdir()
    (tmp_path / "inject" / "sitecustomize.py").write_text(KILL_AFTER_SAVE)
    run = overrides(toy, tmp_path / "run", 8, "ckpt_every=2")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=f"{tmp_path / 'inject'}:{ROOT}", DAT_KILL_AFTER_SAVE="4")
    proc = subprocess.Popen([str(TORCHRUN), "--standalone", "--nproc_per_node=2", "-m", "train", "stage1", *run],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    code, text = finish(proc, 180)
    saved = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)
    assert saved["step"] == 4 and saved["world_size"] == 2, text
    assert {k: saved["ranks"][0]["streams"]["clf"][k] for k in ("epoch", "index")} == {"epoch": 0, "index": 4}
    assert main(["stage1", *run, "--resume", "--allow-config-change"]) == 0
    final = torch.load(tmp_path / "run" / STATE_FILE, weights_only=True)
    clf = final["ranks"][0]["streams"]["clf"]
    assert final["step"] == 8 and (clf["epoch"], clf["index"]) == (0, 8)


def test_a_config_every_rank_refuses_is_said_once(toy, tmp_path):
    """`batch_size=9` on 2 ranks: each rank printed the same error line."""
    code, text = finish(torchrun(["stage1", *overrides(toy, tmp_path / "run", 2, "batch_size=9")],
                                 launcher="train.launch"), 120)
    assert code == 2, text
    assert text.count("batch_size 9 is not divisible by 2 ranks") == 1, text
