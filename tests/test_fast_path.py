"""The compiled fast path (dat_core.runtime.FastPath): same results as eager, never blocks, never breaks."""

import logging
import threading

import numpy as np
import pytest
import torch

import explain
from dat_core.runtime import CompiledDispatch, FastPath, can_compile, use_compile

pytestmark = pytest.mark.skipif(not can_compile(torch.device("cpu")), reason="no C++ compiler for inductor")


def _path(model):
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    return explain.counterfactual(model, image, 3, steps=8)


@pytest.mark.slow
def test_compiled_trajectory_equals_eager(tiny_model, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    eager = _path(tiny_model)
    fast = FastPath(tiny_model, enabled=True, warmups=[_path], background=False)
    assert fast.error is None and fast.compiled and fast.model is not tiny_model
    compiled = _path(fast.model)
    np.testing.assert_allclose(compiled.images, eager.images, atol=2e-3)   # fp32: kernel-order rounding only
    np.testing.assert_allclose(compiled.probs, eager.probs, atol=2e-3)
    assert compiled.flip_step == eager.flip_step
    assert any((tmp_path / "inductor").iterdir())  # kernels persisted for the next start


def test_a_failing_compile_stays_eager_with_one_log_line(tiny_model, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler today\nmore detail")

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="dat_core.runtime"):
        fast = FastPath(tiny_model, enabled=True, warmups=[_path], background=False)
    assert not fast.compiled and fast.model is tiny_model and isinstance(fast.error, RuntimeError)
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "staying eager" in lines[0] and "more detail" not in lines[0]
    assert _path(fast.model).flip_step == _path(tiny_model).flip_step  # still serves


def test_the_eager_model_serves_while_compiling(tiny_model, monkeypatch):
    started, release = threading.Event(), threading.Event()

    def slow_warmup(model):
        started.set()
        release.wait(10)

    fast = FastPath(tiny_model, enabled=True, warmups=[slow_warmup], background=True)
    assert started.wait(60)
    assert fast.model is tiny_model and not fast.wait(0)  # not ready: requests run eager, nothing blocks
    _path(fast.model)
    release.set()
    assert fast.wait(120)


def test_disabled_is_eager_at_once(tiny_model):
    fast = FastPath(tiny_model, enabled=False)
    assert fast.wait(0) and fast.model is tiny_model and not fast.compiled


def test_compile_setting():
    cpu = torch.device("cpu")
    assert use_compile("on", cpu) and not use_compile("off", cpu) and use_compile("auto", cpu) == can_compile(cpu)
    with pytest.raises(ValueError, match="compile must be one of"):
        use_compile("sometimes", cpu)


def test_only_warmed_shapes_run_compiled(tiny_model):
    """A shape no warm-up compiled runs eager (it would otherwise compile inside the request); warming records
    only its own thread's calls, so a request served meanwhile from another thread stays eager."""
    calls = []

    class Twin(torch.nn.Module):  # stands in for torch.compile's module: same maths, counts its calls
        def forward(self, x):
            calls.append(tuple(x.shape))
            return tiny_model(x)

    d = CompiledDispatch(tiny_model, Twin())
    assert d.config is tiny_model.config and list(d.parameters()) == list(tiny_model.parameters())
    x1, x2 = torch.rand(1, 3, 32, 32), torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        def warmup(m):
            other = threading.Thread(target=lambda: m(x2))
            other.start()
            other.join()
            m(x1)
        d.warm(warmup)
        assert calls == [(1, 3, 32, 32)]              # the other thread's batch-2 call went eager
        calls.clear()
        d(x2)
        assert calls == []                            # never warmed: eager
        d(x1)
        assert calls == [(1, 3, 32, 32)]              # warmed: compiled
    calls.clear()
    d(x1)                                              # same shape with grad mode on: another graph, not warmed
    assert calls == []
