import math

import pytest
import torch

from dat_core import L2, build_model, joint_energy, marginal_energy, pgd, threat_model
from dat_core.pgd import attack_mode


def _norms(delta):
    flat = delta.flatten(1)
    return flat.norm(dim=1), flat.abs().max(dim=1).values


@pytest.mark.parametrize("norm", ["L2", "Linf"])
@pytest.mark.parametrize("objective", ["ce", "target_logit", "target_ce", "energy"])
def test_projection_and_range_hold(tiny_model, norm, objective):
    torch.manual_seed(1)
    x = torch.rand(6, 3, 32, 32)
    y = torch.randint(0, 10, (6,))
    eps = 0.5 if norm == "L2" else 8 / 255
    res = pgd(tiny_model, x, y, threat_model(norm, eps, eps / 2), steps=5, objective=objective,
              random_start=True)
    l2, linf = _norms(res.x - x)
    dist = l2 if norm == "L2" else linf
    assert (dist <= eps + 1e-6).all()
    assert dist.max() > eps / 4  # it actually moved
    assert res.x.min() >= 0 and res.x.max() <= 1


def test_infinite_eps_only_clamps(tiny_model):
    x = torch.rand(3, 3, 32, 32)
    y = torch.tensor([0, 1, 2])
    res = pgd(tiny_model, x, y, threat_model("L2", math.inf, 1.0), steps=4, objective="target_logit")
    l2, _ = _norms(res.x - x)
    assert (l2 > 1.0).all()  # unbounded: travels further than one step
    assert res.x.min() >= 0 and res.x.max() <= 1


@pytest.mark.parametrize("eps,steps", [(0.0, 5), (0.5, 0)])
def test_zero_eps_or_zero_steps_returns_input(tiny_model, eps, steps):
    x = torch.rand(2, 3, 32, 32)
    res = pgd(tiny_model, x, torch.tensor([1, 2]), threat_model("L2", eps, 0.1), steps=steps,
              random_start=True)
    assert torch.equal(res.x, x)


def test_target_logit_raises_target_logit(tiny_model):
    torch.manual_seed(2)
    x = torch.rand(8, 3, 32, 32)
    y = torch.arange(8) % 10
    with torch.no_grad():
        before = -joint_energy(tiny_model(x), y)
    res = pgd(tiny_model, x, y, threat_model("L2", 1.0, 0.2), steps=10, objective="target_logit")
    with torch.no_grad():
        after = -joint_energy(tiny_model(res.x), y)
    assert (after > before).all()


def test_energy_objective_lowers_marginal_energy(tiny_model):
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        before = marginal_energy(tiny_model(x))
    res = pgd(tiny_model, x, None, threat_model("L2", 1.0, 0.2), steps=8, objective="energy")
    with torch.no_grad():
        after = marginal_energy(tiny_model(res.x))
    assert (after < before).all()


def test_ce_objective_raises_loss(tiny_model):
    x = torch.rand(8, 3, 32, 32)
    with torch.no_grad():
        y = tiny_model(x).argmax(1)
        before = torch.nn.functional.cross_entropy(tiny_model(x), y, reduction="none")
    res = pgd(tiny_model, x, y, threat_model("Linf", 4 / 255, 1 / 255), steps=5, objective="ce")
    with torch.no_grad():
        after = torch.nn.functional.cross_entropy(tiny_model(res.x), y, reduction="none")
    assert (after > before).all()


def test_modes_and_requires_grad_restored_and_no_param_grads():
    model = build_model("wrn-10-1")
    model.train()
    model.fc.weight.requires_grad_(False)  # a mixed state must come back exactly
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    x = torch.rand(2, 3, 32, 32)
    seen = {}

    def spy(module, inputs, output):
        seen["training"] = module.training
        seen["any_grad"] = any(p.requires_grad for p in module.parameters())

    handle = model.register_forward_hook(spy)
    pgd(model, x, torch.tensor([0, 1]), threat_model("L2", 0.5, 0.1), steps=2)
    handle.remove()
    assert seen == {"training": False, "any_grad": False}
    assert model.training
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert all(p.grad is None for p in model.parameters())


def test_modes_restored_after_error(tiny_model):
    tiny_model.train()
    with pytest.raises(RuntimeError):
        with attack_mode(tiny_model):
            raise RuntimeError("boom")
    assert tiny_model.training
    assert all(p.requires_grad for p in tiny_model.parameters())


def test_each_modules_own_mode_is_restored(tiny_model):
    """A wrapper's flag is not its model's: nn.Module defaults to training=True, so restoring the wrapper's flag
    put an eval model in training mode after every attack (BatchNorm then ran on batch statistics and moved its
    running statistics on each later forward: the compiled benchmark's and app's defect). Mixed modes too."""
    wrapper = torch.nn.Sequential(tiny_model)            # training=True around an eval model
    bn = next(m for m in tiny_model.modules() if isinstance(m, torch.nn.BatchNorm2d))
    stats = bn.running_mean.clone()
    x = torch.rand(4, 3, 32, 32)
    with torch.no_grad():
        before = tiny_model(x)
    pgd(wrapper, x, torch.tensor([0, 1, 2, 3]), threat_model("L2", 0.5, 0.1), steps=2, objective="target_logit")
    assert wrapper.training and not any(m.training for m in tiny_model.modules())
    with torch.no_grad():
        assert torch.equal(wrapper(x), before) and torch.equal(bn.running_mean, stats)
    tiny_model.train()
    bn.eval()                                            # e.g. stage 2's frozen BatchNorm
    with attack_mode(tiny_model):
        assert not any(m.training for m in tiny_model.modules())
    assert tiny_model.training and not bn.training


@pytest.mark.parametrize("every", [1, 3])
def test_recorded_trajectory_matches_fresh_forward(tiny_model, every):
    x = torch.rand(3, 3, 32, 32)
    y = torch.tensor([3, 4, 5])
    steps = 7
    res = pgd(tiny_model, x, y, threat_model("L2", 2.0, 0.3), steps=steps, objective="target_logit",
              record_every=every)
    expected_steps = sorted(set(range(0, steps, every)) | {steps})
    assert res.steps == expected_steps
    assert res.frames.shape == (len(expected_steps), 3, 3, 32, 32)
    assert torch.equal(res.frames[0], x)
    assert torch.equal(res.frames[-1], res.x)
    with torch.no_grad():
        fresh = torch.stack([tiny_model(f) for f in res.frames])
    torch.testing.assert_close(res.logits, fresh, rtol=1e-4, atol=1e-4)


def test_recording_does_not_change_the_path(tiny_model):
    x = torch.rand(2, 3, 32, 32)
    y = torch.tensor([1, 7])
    tm = threat_model("L2", 1.0, 0.2)
    a = pgd(tiny_model, x, y, tm, steps=5, objective="target_logit")
    b = pgd(tiny_model, x, y, tm, steps=5, objective="target_logit", record_every=1)
    assert torch.equal(a.x, b.x)


def test_bf16_autocast_keeps_fp32_images_and_projection(tiny_model):
    x = torch.rand(4, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 3])
    res = pgd(tiny_model, x, y, threat_model("L2", 0.5, 0.2), steps=4, objective="target_logit",
              autocast=True, record_every=2)
    assert res.x.dtype == torch.float32 and res.logits.dtype == torch.float32
    l2, _ = _norms(res.x - x)
    assert (l2 <= 0.5 + 1e-6).all()
    with torch.no_grad():
        before = -joint_energy(tiny_model(x), y)
        after = -joint_energy(tiny_model(res.x), y)
    assert (after > before).all()


@pytest.mark.parametrize("kwargs,match", [
    ({"x": torch.rand(2, 3, 32, 32) * 2}, r"\[0,1\]"),
    ({"x": torch.full((2, 3, 32, 32), float("nan"))}, "NaN"),
    ({"x": torch.rand(3, 32, 32)}, "NCHW"),
    ({"steps": -1}, "steps"),
    ({"steps": 2.5}, "steps"),
    ({"y": torch.tensor([1, 2, 3])}, "labels"),
    ({"objective": "foo"}, "objective"),
    ({"y": None, "objective": "target_logit"}, "labels"),
    ({"x": torch.rand(0, 3, 32, 32), "y": torch.tensor([], dtype=torch.long)}, "at least one image"),
    ({"y": torch.tensor([0.0, 1.0])}, "integer class indices"),
    ({"y": torch.tensor([True, False])}, "integer class indices"),
    ({"y": torch.tensor([0, -1])}, "out of range"),
    ({"y": torch.tensor([0, 10])}, "out of range"),
    ({"y": torch.tensor([0, 10]), "objective": "target_logit"}, "out of range"),
    ({"record_every": -1}, "record_every"),
    ({"record_every": 1.5}, "record_every"),
    ({"mask": torch.full((1, 1, 32, 32), 0.5)}, "mask"),
    ({"mask": torch.full((1, 1, 32, 32), float("nan"))}, "mask"),
    ({"mask": torch.full((1, 1, 32, 32), 2, dtype=torch.long)}, "mask"),
])
def test_bad_inputs_are_rejected(tiny_model, kwargs, match):
    """Every bad argument is refused with a message naming it, before any work (an out-of-range label used to
    reach the gather: an IndexError on CPU, a device-side assert that ends the CUDA context on a GPU)."""
    args = dict(x=torch.rand(2, 3, 32, 32), y=torch.tensor([0, 1]), steps=2, objective="ce")
    args.update(kwargs)
    extra = {k: args[k] for k in ("record_every", "mask") if k in args}
    with pytest.raises(ValueError, match=match):
        pgd(tiny_model, args["x"], args["y"], threat_model("L2", 0.5, 0.1), steps=args["steps"],
            objective=args["objective"], **extra)


def test_binary_masks_of_any_dtype_are_accepted(tiny_model):
    x, y = torch.rand(2, 3, 32, 32), torch.tensor([0, 1])
    region = torch.zeros(1, 1, 32, 32, dtype=torch.bool)
    region[..., :16, :] = True
    runs = [pgd(tiny_model, x, y, threat_model("L2", 0.5, 0.1), steps=2, objective="target_logit", mask=m).x
            for m in (region, region.float(), region.to(torch.uint8))]
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[0], runs[2])
    assert torch.equal(runs[0][..., 16:, :], x[..., 16:, :])


@pytest.mark.parametrize("norm,eps,step", [("L2", -0.1, 0.1), ("L2", float("nan"), 0.1),
                                           ("Linf", 0.1, float("inf")), ("L3", 0.1, 0.1)])
def test_bad_threat_models_are_rejected(norm, eps, step):
    with pytest.raises(ValueError):
        threat_model(norm, eps, step)


def test_works_under_no_grad(tiny_model):
    x = torch.rand(2, 3, 32, 32)
    y = torch.tensor([0, 1])
    expected = pgd(tiny_model, x, y, threat_model("L2", 1.0, 0.2), steps=3, objective="target_logit").x
    with torch.no_grad():
        got = pgd(tiny_model, x, y, threat_model("L2", 1.0, 0.2), steps=3, objective="target_logit").x
    assert torch.equal(got, expected)


def test_per_sample_radii_match_separate_runs(tiny_model):
    x = torch.rand(3, 3, 32, 32)
    y = torch.tensor([1, 2, 3])
    eps = torch.tensor([0.2, 1.0, float("inf")])
    steps = torch.tensor([0.1, 0.3, 0.5])
    batched = pgd(tiny_model, x, y, L2(eps, steps), steps=4, objective="target_logit").x
    for i in range(3):
        alone = pgd(tiny_model, x[i:i + 1], y[i:i + 1], threat_model("L2", eps[i].item(), steps[i].item()),
                    steps=4, objective="target_logit").x
        torch.testing.assert_close(batched[i:i + 1], alone, rtol=1e-5, atol=1e-6)
    assert (batched - x)[0].norm() <= 0.2 + 1e-6 and (batched - x)[1].norm() <= 1.0 + 1e-6
    with pytest.raises(ValueError):
        L2(torch.tensor([0.1, -1.0]), 0.1)


# ---------------------------------------------------------------- the on_step hook

def test_on_step_sees_every_step_with_the_logits_that_step_used(tiny_model):
    from dat_core import STOP, PGDStep  # noqa: F401  (public names)

    x, y = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(3)), torch.tensor([1, 2])
    threat = threat_model("L2", 1.0, 0.2)
    seen: list[PGDStep] = []
    res = pgd(tiny_model, x, y, threat, steps=5, objective="target_logit", record_every=1,
              on_step=lambda s: seen.append(s))
    assert [s.step for s in seen] == [1, 2, 3, 4, 5] and all(s.steps == 5 for s in seen)
    assert res.stopped_at is None
    for s in seen:  # x_t after step t; logits of x_{t-1}, exactly what the trajectory recorded
        torch.testing.assert_close(s.x, res.frames[s.step])
        torch.testing.assert_close(s.logits, res.logits[s.step - 1])


def test_on_step_stop_ends_the_run_exactly_where_a_shorter_run_ends(tiny_model):
    from dat_core import STOP

    x, y = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(4)), torch.tensor([0, 5])
    threat = threat_model("Linf", 8 / 255, 2 / 255)
    stopped = pgd(tiny_model, x, y, threat, steps=50, objective="target_logit", record_every=2,
                  on_step=lambda s: STOP if s.step == 3 else None)
    short = pgd(tiny_model, x, y, threat, steps=3, objective="target_logit", record_every=2)
    assert stopped.stopped_at == 3
    assert torch.equal(stopped.x, short.x)
    assert stopped.steps == short.steps == [0, 2, 3]
    assert torch.equal(stopped.frames, short.frames) and torch.equal(stopped.logits, short.logits)


def test_explain_paths_stop_early_and_stay_consistent(tiny_model):
    import explain
    from dat_core import STOP

    image = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(5))
    calls = []

    def stop_at_4(s):
        calls.append(s.step)
        return STOP if s.step == 4 else None

    traj = explain.counterfactual(tiny_model, image, 3, steps=20, on_step=stop_at_4)
    assert calls == [1, 2, 3, 4] and list(traj.steps) == [0, 1, 2, 3, 4] and len(traj.frames) == 5
    samples = explain.generate(tiny_model, [1, 2], steps=20, on_step=lambda s: STOP if s.step == 2 else None)
    reference = explain.generate(tiny_model, [1, 2], steps=2)
    assert torch.equal(torch.from_numpy(samples.images), torch.from_numpy(reference.images))


def _official_pgd(model, x, y, norm, eps, step_size, steps, objective):
    """The iterates x_0..x_T of the official DAT code's PGD loop (xuwangyin/DAT, rebm/attacks/adv_attacks.py:
    pgd_attack and pgd_attack_xent, no random start) with the steps and projections of
    rebm/attacks/attack_steps.py (L2Step, LinfStep), re-derived from their formulas: an independent reference
    for dat_core.pgd."""
    x0, path = x.clone(), [x.clone()]
    for _ in range(steps):
        x = x.clone().detach().requires_grad_(True)
        logits = model(x)
        loss = {"target_logit": lambda: logits.gather(1, y[:, None]).sum(),   # model(x, y=attack_labels).sum()
                "energy": lambda: torch.logsumexp(logits, 1).sum(),            # logsumexp=True
                "target_ce": lambda: -torch.nn.functional.cross_entropy(logits, y),   # adv_targets
                "ce": lambda: torch.nn.functional.cross_entropy(logits, y)}[objective]()   # pgd_attack_xent
        (grad,) = torch.autograd.grad(loss, [x])
        with torch.no_grad():
            if norm == "L2":
                x = x + step_size * grad / (grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1) + 1e-10)
                x = torch.clamp(x0 + (x - x0).renorm(p=2, dim=0, maxnorm=eps), 0, 1)
            else:
                x = x + step_size * grad.sign()
                x = torch.clamp(x0 + torch.clamp(x - x0, -eps, eps), 0, 1)
        path.append(x.detach())
    return path


@pytest.mark.parametrize("norm, eps, step_size", [("L2", 0.5, 0.1), ("L2", 3.0, 0.5), ("Linf", 8 / 255, 2 / 255),
                                                ("L2", math.inf, 0.2)])   # the last: sampling (image_log)
@pytest.mark.parametrize("objective", ["target_logit", "energy", "target_ce", "ce"])
def test_steps_equal_the_official_pgd_loop(tiny_model, norm, eps, step_size, objective):
    """Counterfactuals (target logit), sampling (energy), training attacks (cross-entropy): every step of
    dat_core.pgd, from each iterate of the official loop, is the official step (gradient step, projection onto the
    ball around x_0, clamp to [0, 1], in that order), in fp32. Step by step: over a whole path, fp32 rounding
    differences grow chaotically once a sample's gradient nearly vanishes (a saturated softmax)."""
    from dat_core.pgd import pgd_step

    torch.manual_seed(1)
    x, y = torch.rand(6, 3, 32, 32), torch.randint(0, 10, (6,))
    labels = None if objective == "energy" else y
    threat = threat_model(norm, eps, step_size)
    path = _official_pgd(tiny_model, x, y, norm, eps, step_size, 10, objective)
    assert not torch.allclose(path[-1], x, atol=1e-3)   # the path moved
    assert norm == "Linf" or bool(((path[-1] - x).flatten(1).norm(dim=1) > min(0.95 * eps, 1)).any())   # L2: far
    torch.testing.assert_close(pgd(tiny_model, x, labels, threat, 1, objective=objective).x, path[1],
                               atol=1e-6, rtol=0)
    with attack_mode(tiny_model):
        for t in range(1, 10):
            ours, _ = pgd_step(tiny_model, path[t], x, labels, threat, objective)
            torch.testing.assert_close(ours, path[t + 1], atol=1e-5, rtol=0, msg=f"step {t + 1}")


def test_a_linf_budget_in_pixel_units_is_refused_wherever_a_threat_model_is_made():
    """Every PGD (explain, training, evaluation) builds its threat model here: a Linf radius in (1, inf) or a step
    above 1 on [0,1] images saturates every pixel at once. The hint offers k/255 only for a whole k <= 255."""
    with pytest.raises(ValueError, match="did you mean 8/255"):
        threat_model("linf", 8, 0.01)
    with pytest.raises(ValueError, match="did you mean 2/255"):
        threat_model("Linf", 8 / 255, 2)
    with pytest.raises(ValueError, match="bounds nothing") as refused:
        threat_model("Linf", 300 / 255, 0.01)
    assert "did you mean" not in str(refused.value)
    assert threat_model("Linf", math.inf, 0.01).eps == math.inf and threat_model("Linf", 1.0, 1.0).eps == 1.0
    assert threat_model("L2", 8, 2).eps == 8


def test_a_linf_ball_in_pixel_units_is_refused_however_it_is_made():
    """Linf(8.0, 2.0) built directly, and AutoAttack's own norm/eps, skipped the check `threat_model` makes."""
    from dat_core import Linf
    from dat_core.evaluation import autoattack_accuracy

    with pytest.raises(ValueError, match="did you mean 8/255"):
        Linf(8.0, 0.01)
    with pytest.raises(ValueError, match="bounds nothing"):
        Linf(torch.tensor([8 / 255, 3.0]), 0.01)           # per-sample radii too
    with pytest.raises(ValueError, match="did you mean 8/255"):
        autoattack_accuracy(torch.nn.Linear(2, 2), [], norm="Linf", eps=8)
    assert Linf(torch.tensor([]), torch.tensor([])).norm == "Linf"     # no samples: nothing to check
