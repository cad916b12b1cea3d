"""dat_core.runtime: device resolution, bf16 where native (GPUs too), seeded RNG."""

from contextlib import nullcontext

import numpy as np
import pytest
import torch

from dat_core.runtime import check_seed, native_bf16, resolve_device, seeded, use_autocast


def test_bf16_on_a_gpu_means_real_bf16_units_not_emulation(monkeypatch):
    """Pre-Ampere GPUs emulate bf16; `auto` must not pick it there (CUDA cannot exist here, so the
    driver's answer is stood in for)."""
    asked = []

    def fake_is_bf16_supported(including_emulation=True):
        asked.append(including_emulation)
        return including_emulation  # an emulating (pre-Ampere) GPU: yes only when emulation counts

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", fake_is_bf16_supported)
    monkeypatch.setattr(torch.cuda, "device", lambda d: nullcontext())
    assert not native_bf16(torch.device("cuda:0"))
    assert asked == [False]
    assert not use_autocast("auto", torch.device("cuda:0"))
    assert use_autocast("on", torch.device("cuda:0"))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_bf16_on_this_gpu_follows_the_driver():
    device = torch.device("cuda:0")
    assert native_bf16(device) == torch.cuda.is_bf16_supported(including_emulation=False)


def test_no_cuda_means_no_bf16_claim_for_cuda():
    if torch.cuda.is_available():
        pytest.skip("has CUDA")
    assert not native_bf16(torch.device("cuda"))


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "", "gpu0", *([] if torch.backends.mps.is_available() else ["mps"])])
def test_bad_devices_are_value_errors(spec):
    with pytest.raises(ValueError, match="device"):
        resolve_device(spec)


def test_auto_device_and_cuda_without_cuda():
    assert resolve_device(None).type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("auto") == resolve_device(None)
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            resolve_device("cuda")


def test_bare_cuda_means_this_ranks_gpu(monkeypatch):
    """Seen on an H200: `torchrun ... device=cuda` died in torch.cuda.set_device(torch.device("cuda")), which
    needs an index (and every rank would have shared GPU 0). Only CUDA's presence is faked here."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 4)
    assert resolve_device("cuda") == torch.device("cuda:0")
    assert resolve_device("cuda", local_rank=3) == torch.device("cuda:3")
    assert resolve_device(torch.device("cuda"), local_rank=2) == torch.device("cuda:2")
    assert resolve_device("cuda:1", local_rank=3) == torch.device("cuda:1")      # an explicit index wins
    assert resolve_device("auto", local_rank=1) == torch.device("cuda:1")
    assert resolve_device("cpu", local_rank=1) == torch.device("cpu")


def test_a_gpu_index_past_the_machines_gpus_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert resolve_device("cuda:0") == torch.device("cuda:0")
    with pytest.raises(ValueError, match="1 GPU"):
        resolve_device("cuda:1")


@pytest.mark.parametrize("spec", ["tpu", "cuda:x", "gpu0", *([] if torch.cuda.is_available() else ["cuda"])])
def test_load_model_checks_its_device_first(spec):
    """load_model passed any device to torch: "tpu" and "cuda:x" were torch RuntimeErrors, "cuda" on a CPU
    build an AssertionError, each after the checkpoint had been read."""
    import dat_core
    with pytest.raises(ValueError, match="device"):
        dat_core.load_model("default", device=spec)
    assert dat_core.load_model("default", device="auto").mean.device.type == resolve_device("auto").type


def test_seeded_restores_the_callers_rng():
    torch.manual_seed(0)
    np.random.seed(0)
    expected_torch, expected_np = torch.rand(3), np.random.rand(3)
    torch.manual_seed(0)
    np.random.seed(0)
    with seeded(123, torch.device("cpu"), numpy_too=True):
        a = torch.rand(2), np.random.rand(2)
    with seeded(123, torch.device("cpu"), numpy_too=True):
        b = torch.rand(2), np.random.rand(2)
    assert torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert torch.equal(torch.rand(3), expected_torch) and np.array_equal(np.random.rand(3), expected_np)


@pytest.mark.parametrize("bad", [-1, 2 ** 63, 2 ** 70, 1.5, "3", True, None])
def test_every_seeded_api_takes_the_same_seeds(bad, tiny_model):
    """Seeds are integers in 0..2**63-1 for every API alike: `alternatives` took -1 and failed on 2**70 with
    "Overflow when unpacking long long"; `attribute` passed any seed to torch's generator."""
    from explain import alternatives, attribute, generate
    image = torch.rand(3, 32, 32)
    assert check_seed(2 ** 63 - 1) == 2 ** 63 - 1 and check_seed(np.int64(7)) == 7
    calls = [lambda s: alternatives(tiny_model, image, 3, n=2, seed=s, eps=1.0, steps=1),
             lambda s: attribute(tiny_model, image, 3, "gradient_shap", seed=s, n_samples=1),
             lambda s: generate(tiny_model, 3, seed=s, steps=1)]
    if bad is not None:
        calls.append(lambda s: check_seed(s))
    for call in calls:
        with pytest.raises(ValueError, match=r"seed must be an integer in 0\.\.2\*\*63-1"):
            call(bad)
