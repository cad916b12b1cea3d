"""The compiled fast path (dat_core.runtime.FastPath): same results as eager, never blocks, never breaks."""

import logging
import threading

import numpy as np
import pytest
import torch
from PIL import Image

import explain
from dat_core import build_model
from dat_core.checkpoint import save_model
from dat_core.pgd import pgd, threat_model
from dat_core.runtime import CompiledDispatch, FastPath, can_compile, use_compile
from explain.cli import main

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


class _Counting(torch.nn.Module):
    """Stands in for torch.compile's module: the same maths, records the input shapes it served."""

    def __init__(self, model, fail: bool = False):
        super().__init__()
        self.model, self.fail, self.shapes = model, fail, []

    def forward(self, x):
        if self.fail:
            raise RuntimeError("inductor broke\ndetail")
        self.shapes.append(tuple(x.shape))
        return self.model(x)


def test_lazy_dispatch_compiles_each_gradient_shape_when_first_met(tiny_model):
    """One-shot runs (the CLI): a shape no warm-up met runs compiled anyway, from its first call on, when it
    asks for its input's gradient (PGD steps); one-off no-grad calls stay eager instead of waiting for a compile."""
    twin = _Counting(tiny_model)
    d = CompiledDispatch(tiny_model, twin, lazy=True)
    x1, x5 = torch.rand(1, 3, 32, 32, requires_grad=True), torch.rand(5, 3, 32, 32, requires_grad=True)
    assert torch.equal(d(x5), tiny_model(x5)) and twin.shapes == [(5, 3, 32, 32)]
    d(x1)
    d(x5)
    assert twin.shapes == [(5, 3, 32, 32), (1, 3, 32, 32), (5, 3, 32, 32)] and len(d.ready) == 2
    with torch.no_grad():
        d(x5)
    d(torch.rand(3, 3, 32, 32))
    assert len(twin.shapes) == 3                        # no-grad and no-input-grad calls: eager


def test_the_dispatch_has_its_models_mode_and_an_attack_leaves_it_so(tiny_model):
    """The dispatch said training=True (nn.Module's default) around an eval model, and PGD's attack_mode then
    'restored' the model to training: every later prediction ran BatchNorm on batch statistics and moved its
    running statistics (the compiled benchmark's validity changed with the batch size; the app after its
    warm-ups). The dispatch's mode is the model's."""
    d = CompiledDispatch(tiny_model, _Counting(tiny_model), lazy=True)
    assert not d.training
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        before = d(x)
    pgd(d, x, torch.tensor([0, 1, 2, 3]), threat_model("L2", 0.5, 0.1), steps=2, objective="target_logit")
    assert not d.training and not tiny_model.training
    with torch.no_grad():
        assert torch.equal(d(x), before) and torch.allclose(d(x[:1]), before[:1], atol=1e-5)  # no batch statistics
    d.train()
    assert d.training and tiny_model.training
    d.eval()
    assert not tiny_model.training


def test_a_lazy_compile_error_runs_eager_and_says_so_once(tiny_model, caplog):
    d = CompiledDispatch(tiny_model, _Counting(tiny_model, fail=True), lazy=True)
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    with caplog.at_level(logging.WARNING, logger="dat_core.runtime"):
        assert torch.equal(d(x), tiny_model(x))
        assert torch.equal(d(x[:1]), tiny_model(x[:1]))    # later shapes: eager, no second attempt or line
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "running eager" in lines[0] and "detail" not in lines[0] and not d.ready


def test_cli_runs_its_batches_compiled_whatever_their_size(tmp_path, monkeypatch):
    """`--compile on` used to warm one batch-1 path only: a benchmark's batches (and --guide's model) ran eager."""
    seen = []

    def counting_compile(model, **kwargs):
        twin = _Counting(model)
        seen.append(twin)
        return twin

    monkeypatch.setattr(torch, "compile", counting_compile)
    torch.manual_seed(0)
    save_model(build_model("wrn-10-1").eval(), tmp_path / "model")
    (tmp_path / "imgs").mkdir()
    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(tmp_path / "imgs" / f"cat-{i}.png")
    assert main(["benchmark", "--model", str(tmp_path / "model"), "--images", str(tmp_path / "imgs"),
                 "--eps", "1", "--steps", "2", "--batch-size", "4", "--autocast", "off", "--compile", "on",
                 "--guide", str(tmp_path / "model"), "--feature-model", "none", "--transfer-model", "none",
                 "--out", str(tmp_path / "out")]) == 0
    model, guide = seen          # 2 images x 9 targets = 18 pairs in a pool of 4 rows: 5 rounds of 2 steps
    assert model.shapes == guide.shapes == [(4, 3, 32, 32)] * 10   # every step compiled, one shape (the last
    #                                                                round's 2 free rows idle along)
