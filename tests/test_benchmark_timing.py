"""benchmarks/common.py's timer on an asynchronous device: a timing holds the work of its own call, not the
work earlier calls left queued (CUDA returns before its kernels finish). CUDA cannot exist here, so the queue
is a stand-in: a call enqueues seconds of work, `synchronize` waits them out."""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))

from common import median_time  # noqa: E402


class FakeQueue:
    def __init__(self, pending: float = 0.0):
        self.pending = pending

    def enqueue(self, seconds: float) -> None:
        self.pending += seconds

    def synchronize(self) -> None:
        time.sleep(self.pending)
        self.pending = 0.0


def test_a_timing_excludes_work_queued_before_it(monkeypatch):
    queue = FakeQueue(pending=0.4)  # another benchmark's kernels, still running
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", queue.synchronize)
    seconds = median_time(lambda: queue.enqueue(0.02), repeats=1, warmup=0)
    assert 0.02 <= seconds < 0.2


def test_warmup_work_is_not_timed(monkeypatch):
    queue = FakeQueue()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "synchronize", queue.synchronize)
    calls = iter([0.4, 0.02])  # the first (warm-up) call compiles: slow, and asynchronous
    seconds = median_time(lambda: queue.enqueue(next(calls)), repeats=1, warmup=1)
    assert 0.02 <= seconds < 0.2
