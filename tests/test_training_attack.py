"""The classification attack of adversarial training: `attack.pgd = "argmin"` is InNOut's default stage-1 attack
(the code the paper's authors trained stage 1 with), checked against a re-derivation of that code's loop."""

import pytest
import torch
import torch.nn.functional as F
from test_training import tiny

from dat_core.pgd import pgd, threat_model
from dat_core.training.attack import argmin_pgd
from dat_core.training.config import ConfigError, load_config
from dat_core.training.loop import train


def _official_argmin_pgd(model, x, y, norm, eps, step_size, steps, momentum=0.9):
    """InNOut's ArgminPGD.perturb_inner (xuwangyin/DAT, InNOutRobustness/utils/adversarial_attacks/argmin_pgd.py)
    as its stage-1 training builds it (untargeted cross-entropy, normalize_grad=True, no noise, no early
    stopping), with normalize_perturbation / project_perturbation of its utils.py; re-derived from the formulas:
    the loss is -CE and is minimized, and the lowest-loss perturbation of x_0..x_T is returned."""
    pert, velocity = torch.zeros_like(x), torch.zeros_like(x)
    best_perts, best_losses = torch.empty_like(x), 1e13 * torch.ones(len(x))
    for i in range(steps + 1):
        pert.requires_grad_(True)
        with torch.enable_grad():
            loss = -F.cross_entropy(model(x + pert), y, reduction="none")
            new_best = loss < best_losses
            best_losses[new_best] = loss[new_best].detach()
            best_perts[new_best] = pert[new_best].detach()
            if i == steps:
                break
            (grad,) = torch.autograd.grad(loss.mean(), pert)
        with torch.no_grad():
            velocity = momentum * velocity + grad / (1e-10 + grad.abs().reshape(len(x), -1).sum(1).view(-1, 1, 1, 1))
            if norm == "Linf":
                pert = (pert - step_size * velocity.sign()).clamp(-eps, eps)
            else:
                pert = pert - step_size * F.normalize(velocity.reshape(len(x), -1), p=2, dim=1).view_as(x)
                pert = torch.renorm(pert, p=2, dim=0, maxnorm=eps)
            pert = torch.clamp(x + pert, 0, 1) - x
    return (x + best_perts).detach()


@pytest.mark.parametrize("norm, eps, step_size", [("L2", 0.5, 0.1), ("L2", 2.0, 0.5), ("Linf", 8 / 255, 2 / 255)])
def test_argmin_equals_innouts_argmin_pgd(tiny_model, norm, eps, step_size):
    torch.manual_seed(2)
    x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 10, (6,))
    threat = threat_model(norm, eps, step_size)
    ours = argmin_pgd(tiny_model, x, y, threat, 6)
    with torch.no_grad():
        reference = _official_argmin_pgd(tiny_model.eval(), x, y, norm, eps, step_size, 6)
    torch.testing.assert_close(ours, reference, atol=2e-5, rtol=0)
    assert not torch.allclose(ours, pgd(tiny_model, x, y, threat, 6).x, atol=1e-3)   # not plain PGD's result


def test_argmin_keeps_the_highest_loss_iterate(tiny_model):
    torch.manual_seed(3)
    x, y = torch.rand(8, 3, 32, 32), torch.randint(0, 10, (8,))
    threat = threat_model("L2", 1.0, 0.4)
    best = argmin_pgd(tiny_model, x, y, threat, 5)
    with torch.no_grad():
        loss = F.cross_entropy(tiny_model.eval()(best), y, reduction="none")
        clean = F.cross_entropy(tiny_model(x), y, reduction="none")
    assert bool((loss >= clean - 1e-6).all())                    # never worse than the image itself
    assert bool(((best - x).flatten(1).norm(dim=1) <= 1.0 + 1e-5).all()) and 0 <= best.min() and best.max() <= 1
    assert torch.equal(argmin_pgd(tiny_model, x, y, threat, 0), x)   # no steps: the image


def test_argmin_trains_and_is_checked(toy, tmp_path):
    final = train(tiny(toy, tmp_path, steps=2, **{"attack.pgd": "argmin", "attack.steps": 2}))
    assert final.is_dir()
    with pytest.raises(ConfigError, match="attack.random_start"):
        load_config(None, **{"attack.pgd": "argmin", "attack.random_start": True})
    with pytest.raises(ConfigError, match="attack.pgd"):
        load_config(None, **{"attack.pgd": "apgd"})
