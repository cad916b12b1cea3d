"""Audit 30 of the models and the runtime: `build_model` names the field a wrong value is in (it raised
AttributeError/TypeError or a self-contradicting count), and `resolve_device` refuses a GPU index the machine
lacks however it is reached (a bare "cuda" or "auto" takes this rank's index)."""

from __future__ import annotations

import pytest
import torch

from dat_core.models import build_model
from dat_core.runtime import resolve_device

NAMES = [str(i) for i in range(10)]

WRONG_TYPES = [
    ({"arch": None}, "arch"),                                   # AttributeError: 'NoneType' has no attribute 'lower'
    ({"arch": 123}, "arch"),
    ({"num_classes": "10", "class_names": NAMES}, "num_classes"),   # said "10 class names for 10 classes"
    ({"class_names": 5}, "class_names"),                        # TypeError: object of type 'int' has no len()
    ({"class_names": iter(NAMES)}, "class_names"),              # TypeError: 'list_iterator' has no len()
    ({"class_names": {"cat": 1}}, "class_names"),               # said "1 class names for 10 classes"
]


@pytest.mark.parametrize("change,field", WRONG_TYPES, ids=[f"{f}-{i}" for i, (_, f) in enumerate(WRONG_TYPES)])
def test_build_model_names_the_field_of_a_wrong_type(change, field):
    with pytest.raises(ValueError, match=field):
        build_model(**{"arch": "wrn-10-1", **change})


def test_build_model_still_counts_class_names():
    with pytest.raises(ValueError, match="3 class names for num_classes=10"):
        build_model("wrn-10-1", class_names=["a", "b", "c"])
    assert build_model("WRN-10-1", class_names=NAMES).config["class_names"] == NAMES


@pytest.fixture
def two_gpus(monkeypatch):
    """Only CUDA's presence is stood in for (CUDA cannot exist here): a machine with 2 GPUs."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)


@pytest.mark.parametrize("spec", ["cuda", "auto", None, torch.device("cuda")])
def test_a_ranks_gpu_past_the_machines_gpus_is_refused(two_gpus, spec):
    """torchrun --nproc-per-node 4 on 2 GPUs: ranks 2 and 3 got cuda:2 / cuda:3 and died in set_device with
    "CUDA error: invalid device ordinal" instead of the ValueError training turns into a config error."""
    assert resolve_device(spec, local_rank=1) == torch.device("cuda:1")
    with pytest.raises(ValueError, match="2 GPU"):
        resolve_device(spec, local_rank=2)


def test_a_negative_local_rank_is_a_value_error(two_gpus):
    with pytest.raises(ValueError, match="local rank"):
        resolve_device("cuda", local_rank=-1)     # was torch's RuntimeError "Device index must not be negative"


def test_mps_has_one_device(monkeypatch):
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert resolve_device("mps") == torch.device("mps")
    with pytest.raises(ValueError, match="one"):
        resolve_device("mps:1")


def test_the_benchmark_knows_a_compiled_model_as_its_own_weights(tmp_path, monkeypatch):
    """The CLI's `--compile` model is a CompiledDispatch, whose state dict says `eager.conv1.weight`: the benchmark's
    check that --transfer-model is not the explained model itself (`_judge`, keys and values) never matched. The
    dispatch keeps torch's key names, so it saves and loads inside another module as any module does."""
    from dat_core.checkpoint import save_model
    from dat_core.loading import load_model
    from dat_core.runtime import FastPath
    from explain.benchmark_cli import _judge

    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))   # FastPath sets it process-wide
    model = build_model("wrn-10-1").eval()
    save_model(model, tmp_path / "m")
    loaded = load_model(tmp_path / "m")
    fast = FastPath(loaded, enabled=True, background=False, lazy=True).model   # nothing compiles until a call
    assert fast is not loaded
    assert _judge(str(tmp_path / "m"), fast, torch.device("cpu"))[3]     # recognised as the same weights
    wrapped = torch.nn.Sequential(fast)
    wrapped.load_state_dict(wrapped.state_dict())                         # round trip through a parent


def test_a_backward_compile_error_in_a_lazy_run_falls_back_to_eager(tiny_model, tmp_path, monkeypatch, caplog):
    """The backward graph is lowered at its first use, inside the caller's PGD step, after the compiled forward
    returned: an error there escaped `--compile`'s fallback and ended the CLI run with a traceback."""
    import logging

    import numpy as np
    from torch._dynamo.backends.common import aot_autograd

    import explain
    from dat_core.runtime import FastPath

    def failing_backward(gm, example_inputs):
        raise RuntimeError("cannot lower the backward\nmore detail")

    compile_ = torch.compile
    backend = aot_autograd(fw_compiler=lambda gm, example_inputs: gm.forward, bw_compiler=failing_backward)
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: compile_(model, backend=backend))
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    torch._dynamo.reset()
    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    eager = explain.counterfactual(tiny_model, image, 3, steps=3)
    fast = FastPath(tiny_model, enabled=True, background=False, lazy=True).model
    with caplog.at_level(logging.WARNING, logger="dat_core.runtime"):
        got = explain.counterfactual(fast, image, 3, steps=3)
        again = explain.counterfactual(fast, image, 3, steps=3)
    np.testing.assert_allclose(got.images, eager.images, atol=1e-5)
    np.testing.assert_allclose(again.images, eager.images, atol=1e-5)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1 and "running eager" in lines[0] and "cannot lower the backward" in lines[0]
    torch._dynamo.reset()
