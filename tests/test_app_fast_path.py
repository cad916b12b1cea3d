"""The app's compiled fast path and scheduling (webapp/fastpath.py, webapp/scheduling.py): the app answers while its
model compiles, compiled answers equal eager ones within bf16 tolerance, a failing compile leaves a working app, and
the computations-at-once setting reaches every model event."""

import logging
import threading

import numpy as np
import pytest
import torch
from conftest import uploaded
from gradio_client import Client, handle_file

import app
import explain
from benchmarks.app_harness import serve, write_image, write_model
from dat_core.models import Classifier
from dat_core.runtime import CompiledDispatch, can_compile
from webapp import api, fastpath, scheduling
from webapp.explainer import Explainer

needs_compiler = pytest.mark.skipif(not can_compile(torch.device("cpu")), reason="no C++ compiler for inductor")


@pytest.fixture
def gated_warmups(monkeypatch):
    """Warm-ups that first wait for the test (so it can act while the model is still compiling), then compile only
    the batch-1 path (the others take minutes on 2 cores and add nothing here)."""
    started, release = threading.Event(), threading.Event()
    real = fastpath.request_warmups

    def warmups(model, autocast):
        def gate(m):
            started.set()
            assert release.wait(300)
        return [gate, real(model, autocast)[0]]

    monkeypatch.setattr(fastpath, "request_warmups", warmups)
    return started, release


@needs_compiler
@pytest.mark.slow
def test_the_app_answers_while_compiling_and_compiled_answers_equal_eager(tmp_path, gated_warmups, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    started, release = gated_warmups
    image = write_image(tmp_path / "photo.png")
    demo = app.build_demo(str(write_model(tmp_path / "model")), standard_model=None, autocast="on", compile="on")
    loaded = demo.explainer.default
    assert started.wait(60)
    with serve(demo) as url:
        client = Client(url, verbose=False)

        def ask(target):
            return client.predict(image=handle_file(str(image)), target=str(target), eps="3", steps=8, step_size=0.1,
                                  api_name="/counterfactual")[0]
        during = ask(3)  # answered by the eager model: the compile is still held at its gate
        assert not loaded.fast.wait(0) and loaded.model is loaded.fast.eager
        release.set()
        assert loaded.fast.wait(600) and loaded.fast.error is None
        assert isinstance(loaded.model, CompiledDispatch) and loaded.fast.compiled
        compiled_calls = []
        compiled = loaded.model.__dict__["_compiled"]
        loaded.model.__dict__["_compiled"] = lambda *a, **k: (compiled_calls.append(a[0].shape), compiled(*a, **k))[1]
        after = ask(5)
    assert compiled_calls, "the app's batch-1 path did not run compiled"
    # warm-ups and requests attack through the compiled wrapper: the model must come out in eval mode (it came out
    # training, BatchNorm on each request's own statistics, until attack_mode restored each module's own mode)
    assert not loaded.model.training and not any(m.training for m in loaded.fast.eager.modules())
    eager = explain.counterfactual(loaded.fast.eager, explain.to_model_input(str(image), loaded.image_size), 5,
                                   eps=3.0, steps=8, step_size=0.1, autocast=True)
    assert during["target"] == 3 and after["target"] == 5
    # bf16 forwards: compiled and eager kernels round differently; over 8 steps the paths stay within bf16 noise
    np.testing.assert_allclose(after["confidence_target"], eager.confidence, atol=0.03)
    np.testing.assert_allclose(after["l2"], eager.l2, atol=0.03)
    assert after["prediction"][-1] == int(eager.predictions[-1])


def test_a_failing_compile_keeps_the_app_working(tmp_path, monkeypatch, caplog):
    def broken(*args, **kwargs):
        raise RuntimeError("no compiler today\nlong detail")

    monkeypatch.setattr(torch, "compile", broken)
    with caplog.at_level(logging.WARNING, logger="dat_core.runtime"):
        ex = Explainer(str(write_model(tmp_path / "model")), standard_model=None, compile="on")
        assert ex.default.fast.wait(60)
    loaded = ex.default
    assert loaded.model is loaded.fast.eager and not loaded.fast.compiled
    lines = [r.getMessage() for r in caplog.records if r.name == "dat_core.runtime"]
    assert len(lines) == 1 and "staying eager" in lines[0] and "long detail" not in lines[0]
    metrics, final, _ = api.counterfactual(ex, uploaded(write_image(tmp_path / "photo.png")), "3", "3", 4, 0.1)
    assert metrics["target"] == 3 and len(metrics["energy"]) == 5 and final.shape[-1] == 3


def test_compile_off_never_compiles(tmp_path, monkeypatch):
    monkeypatch.setattr(torch, "compile", lambda *a, **k: pytest.fail("compiled with compile=off"))
    ex = Explainer(str(write_model(tmp_path / "model")), standard_model=None, compile="off")
    assert ex.default.fast.wait(0) and ex.default.model is ex.default.fast.eager
    with pytest.raises(ValueError, match="compile must be one of"):
        Explainer(str(tmp_path / "model"), standard_model=None, compile="sometimes")


def test_every_model_event_takes_the_workers_setting(tmp_path):
    demo = app.build_demo(str(write_model(tmp_path / "model")), standard_model=None, workers=2)
    model_fns = [fn for fn in demo.fns.values() if fn.concurrency_id == "model"]
    named = {fn.api_name for fn in model_fns}
    assert {"counterfactual", "generate", "landscape", "attribute"} <= named and len(model_fns) > 4
    assert all(fn.concurrency_limit == 2 for fn in model_fns)


def test_scheduling_plan():
    assert scheduling.plan(cuda=False, cores=2) == (2, 1)        # one single-threaded computation per core
    assert scheduling.plan(cuda=False, cores=8, threads="2") == (4, 2)
    assert scheduling.plan("3", "1", cuda=False, cores=2) == (3, 1)
    assert scheduling.plan(cuda=True, cores=16) == (1, 16)
    for bad in ("0", "-1", "two", "1.5", "65", "100000"):
        with pytest.raises(ValueError, match="workers must be auto or a whole number from 1 to 64"):
            scheduling.plan(bad, cuda=False, cores=2)
    with pytest.raises(SystemExit):
        app.parse_args(["--threads", "0"])
    args = app.parse_args(["--workers", "1", "--threads", "2", "--compile", "off"])
    assert (args.workers, args.threads, args.compile) == (1, 2, "off")


@pytest.mark.parametrize("argv, says", [(["--port", "0"], "--port: expected an integer in 1..65535"),
                                        (["--port", "70000"], "--port: expected an integer in 1..65535"),
                                        (["--host", "::::"], "--host: '::::' is not an address"),
                                        (["--host", "no-such-host.invalid"], "is not an address or host name"),
                                        (["--model", ""], "--model: expected a value, got a blank one"),
                                        (["--standard-model", " "], "expected a value, got a blank one")])
def test_the_command_line_refuses_what_the_server_would_crash_on(argv, says, capsys):
    """Port 0 and 70000 ended in tracebacks from inside Gradio, a malformed host in a C++ abort."""
    with pytest.raises(SystemExit) as exit_:
        app.parse_args(argv)
    assert exit_.value.code == 2 and says in capsys.readouterr().err


class _Small(Classifier):
    """A few-op classifier: compiles in a second, so a test can compile many shapes."""

    def __init__(self, config):
        super().__init__(config)
        self.conv = torch.nn.Conv2d(3, 4, 3, padding=1)
        self.fc = torch.nn.Linear(4, config["num_classes"])

    @property
    def head(self):
        return self.fc

    def forward_features(self, x):
        return torch.relu(self.conv(x)).mean((2, 3))


@needs_compiler
def test_every_warmed_shape_of_several_models_compiles():
    """All models share one compiled function (`Classifier.forward`), and models whose configs differ (a calibrated
    one holds a temperature, an imported one another architecture) need graphs of their own: the app's two bundled
    models once passed dynamo's default of 8 graphs per function, so the landscape's shape of the second silently
    ran eager (dynamo only logs a warning when it gives up on a shape: the test listens for it)."""
    torch._dynamo.reset()
    warnings = []
    listener = logging.Handler(logging.WARNING)
    listener.emit = lambda record: warnings.append(record.getMessage())
    dynamo_log = logging.getLogger("torch._dynamo")
    dynamo_log.addHandler(listener)
    config = {"arch": "small", "num_classes": 10, "image_size": 8, "mean": [0.5] * 3, "std": [0.25] * 3}
    image = torch.rand(3, 8, 8)
    try:
        with torch._dynamo.config.patch(recompile_limit=8):  # dynamo's default, whatever ran before
            fasts = []
            for temperature in (None, 2.0, 0.5):
                torch.manual_seed(0)
                model = _Small(config if temperature is None else {**config, "temperature": temperature}).eval()
                fast = fastpath.fast_path(model, compile="on", autocast="off", name=f"T={temperature}")
                assert fast.wait(600)
                fasts.append(fast)
            for fast in fasts:  # and the warmed shapes answer from their graphs, with no recompile
                assert fast.error is None and fast.compiled, fast.error
                assert len(fast.model.ready) >= 4  # the batch-1 path, the all-targets batch (grad, no grad), landscape
                explain.counterfactual(fast.model, image, 1, steps=2)
                explain.counterfactuals(fast.model, image, list(range(10)), steps=2)
    finally:
        dynamo_log.removeHandler(listener)
    limits = [w for w in warnings if "recompile_limit" in w]
    assert not limits, limits[0]
