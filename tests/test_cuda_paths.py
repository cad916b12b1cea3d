"""The CUDA code paths against their CPU twins (run by benchmarks/gpu_check.sh on a lent GPU; skipped here).

PGD and the bundled default must give the CPU's numbers on CUDA in fp32 (up to cuDNN's summation order),
bf16 autocast must stay inside the threat model, and a checkpoint saved from the GPU must load on the CPU.
"""

import pytest
import torch
from conftest import warmed_wrn

from dat_core import load_model
from dat_core.checkpoint import load_checkpoint_dir, save_model
from dat_core.pgd import pgd, threat_model

pytestmark = [pytest.mark.cuda, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
CUDA = torch.device("cuda:0")


@pytest.fixture(autouse=True)
def fp32_matmuls():
    """TF32 would make CUDA differ from the CPU by ~1e-3 per layer: compare true fp32."""
    old = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    yield
    torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = old


def test_bundled_default_gives_the_cpu_logits_on_cuda():
    model = load_model("default")
    x = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        cpu = model(x)
        gpu = model.to(CUDA)(x.to(CUDA)).cpu()
    assert torch.allclose(cpu, gpu, atol=1e-3, rtol=1e-3), (cpu - gpu).abs().max()


def test_l2_pgd_path_on_cuda_matches_the_cpu():
    model = warmed_wrn()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    y = torch.tensor([0, 1, 2, 3])
    threat = threat_model("L2", 1.0, 0.25)
    cpu = pgd(model, x, y, threat, steps=10, objective="target_logit", record_every=1).frames
    gpu = pgd(model.to(CUDA), x.to(CUDA), y, threat, steps=10, objective="target_logit", record_every=1).frames.cpu()
    # One step agrees to fp32 precision; later steps drift apart slowly (ReLU and sign flips amplify
    # cuDNN's different summation order; seen on an H200: 5e-3 max after 10 steps).
    assert (cpu[1] - gpu[1]).abs().max() < 1e-4
    assert (cpu[-1] - gpu[-1]).abs().max() < 2e-2 and (cpu[-1] - gpu[-1]).abs().mean() < 1e-3


@pytest.mark.parametrize("norm,eps,step", [("L2", 1.0, 0.25), ("Linf", 8 / 255, 2 / 255), ("L1", 10.0, 2.0)])
def test_bf16_pgd_on_cuda_stays_in_the_ball(norm, eps, step):
    model = warmed_wrn().to(CUDA)
    x = torch.rand(6, 3, 32, 32, device=CUDA)
    out = pgd(model, x, torch.arange(6, device=CUDA) % 10, threat_model(norm, eps, step), steps=5,
              objective="target_logit", random_start=True, autocast=True).x
    delta = (out - x).flatten(1)
    size = {"L2": delta.norm(dim=1), "Linf": delta.abs().amax(dim=1), "L1": delta.abs().sum(dim=1)}[norm]
    assert out.dtype == torch.float32 and out.min() >= 0 and out.max() <= 1
    assert (size <= eps * (1 + 1e-4)).all(), size.max()
    assert delta.abs().amax() > 0                                  # it moved


def test_checkpoint_saved_from_cuda_loads_on_the_cpu(tmp_path):
    model = warmed_wrn().to(CUDA)
    save_model(model, tmp_path / "ckpt")
    back = load_checkpoint_dir(tmp_path / "ckpt")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(back(x), model(x.to(CUDA)).cpu(), atol=1e-3, rtol=1e-3)


def test_autoaugment_on_cuda_gives_the_cpu_batch():
    """The pipeline runs on the batch's device (the draws stay on the CPU generator): the same seed gives the same
    8-bit values, up to a step where the bicubic shears sum in another order."""
    from dat_core.data.augment import augment

    x = (torch.rand(64, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).round() / 255
    cpu = augment("autoaugment_cutout", x, torch.Generator().manual_seed(3))
    cuda = augment("autoaugment_cutout", x.to(CUDA), torch.Generator().manual_seed(3))
    assert cuda.device.type == "cuda"
    diff = (cuda.cpu() - cpu).abs() * 255
    assert diff.max() <= 1.01 and (diff > 0.5).float().mean() < 0.01
