import pytest
import torch
import torch.nn.functional as F

from dat_core import build_model, count_parameters, joint_energy, marginal_energy, probabilities
from dat_core.models import known_archs


@pytest.mark.parametrize("arch,params", [
    ("wrn-34-10", 46_160_474),   # the paper's CIFAR model: 46.16M
    ("wrn-16-4", 2_748_890),
    ("wrn-16-2", 691_674),
    ("preact-resnet18", 11_172_170),
])
def test_parameter_counts(arch, params):
    assert count_parameters(build_model(arch)) == params


@pytest.mark.parametrize("arch", known_archs())
def test_every_registered_arch_maps_images_to_features_and_logits(arch):
    with torch.device("meta"):  # shapes only: nothing is allocated
        m = build_model(arch, num_classes=7).eval()
        size = m.config["image_size"]
        x = torch.empty(2, 3, size, size)
        features = m.features(x)
        assert features.dim() == 2 and features.shape[0] == 2
        assert m.head(features).shape == m(x).shape == (2, 7)


def test_imagenet_resnet50_matches_torchvision_count_and_keys():
    m = build_model("resnet50", num_classes=1000)
    assert count_parameters(m) == 25_557_032  # torchvision resnet50
    keys = set(m.state_dict())
    assert {"conv1.weight", "bn1.running_mean", "layer1.0.downsample.0.weight",
            "layer4.2.conv3.weight", "fc.weight"} <= keys
    assert m.config["image_size"] == 224 and m.config["mean"] == [0.485, 0.456, 0.406]


def test_official_wrn_key_layout():
    keys = set(build_model("wrn-34-10").state_dict())
    assert "conv1.weight" in keys and "fc.bias" in keys and "bn1.running_var" in keys
    assert "block1.layer.0.convShortcut.weight" in keys          # 16 -> 160 channels
    assert "block1.layer.1.convShortcut.weight" not in keys      # equal in/out: no shortcut conv
    assert "block3.layer.4.bn2.weight" in keys                   # 5 blocks per stage
    assert not any(k.startswith(("mean", "std")) for k in keys)  # normalization is not in the state dict


def test_normalization_is_inside_the_model():
    m = build_model("wrn-10-1").eval()
    x = torch.rand(2, 3, 32, 32)
    mean = torch.tensor(m.config["mean"]).view(1, 3, 1, 1)
    std = torch.tensor(m.config["std"]).view(1, 3, 1, 1)
    with torch.no_grad():
        torch.testing.assert_close(m(x), m.logits((x - mean) / std))


OFFICIAL_MEAN = (0.4913997551666284, 0.48215855929893703, 0.4465309133731618)   # rebm WideResNet, InNOut wrappers
OFFICIAL_STD = (0.24703225141799082, 0.24348516474564, 0.26158783926049628)


def _official_wrn_forward(sd: dict, x: torch.Tensor, depth: int) -> torch.Tensor:
    """The official WideResNet's forward (rebm/models/wide_resnet_innoutrobustness.py, eval mode), written from
    its state dict: normalize, conv1, three stages of pre-activation blocks whose widening first block feeds the
    activated input to its 1x1 shortcut, BN-ReLU, avg_pool2d(8), fc."""
    def bn(o, p):
        return F.batch_norm(o, sd[p + ".running_mean"], sd[p + ".running_var"], sd[p + ".weight"], sd[p + ".bias"],
                            training=False, eps=1e-5)

    o = F.conv2d((x - torch.tensor(OFFICIAL_MEAN).view(1, 3, 1, 1)) / torch.tensor(OFFICIAL_STD).view(1, 3, 1, 1),
                 sd["conv1.weight"], padding=1)
    for stage, stride in ((1, 1), (2, 2), (3, 2)):
        for i in range((depth - 4) // 6):
            p = f"block{stage}.layer.{i}"
            s = stride if i == 0 else 1
            if p + ".convShortcut.weight" in sd:
                o = F.relu(bn(o, p + ".bn1"))
                out, shortcut = o, F.conv2d(o, sd[p + ".convShortcut.weight"], stride=s)
            else:
                out, shortcut = F.relu(bn(o, p + ".bn1")), o
            out = F.relu(bn(F.conv2d(out, sd[p + ".conv1.weight"], stride=s, padding=1), p + ".bn2"))
            o = shortcut + F.conv2d(out, sd[p + ".conv2.weight"], padding=1)
    o = F.avg_pool2d(F.relu(bn(o, "bn1")), 8).flatten(1)
    return F.linear(o, sd["fc.weight"], sd["fc.bias"])


def test_wrn_logits_equal_the_official_forward():
    """Same weights, same logits as the official model: its normalization statistics to the digit (ours were
    rounded to 4 decimals, which moved the logits of imported official checkpoints by ~1e-4)."""
    torch.manual_seed(0)
    model = build_model("wrn-16-2")
    with torch.no_grad():
        model.train()
        for _ in range(3):
            model(torch.rand(32, 3, 32, 32))   # BN statistics that are not the identity
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ours, official = model(x), _official_wrn_forward(model.state_dict(), x, 16)
    torch.testing.assert_close(ours, official, rtol=1e-5, atol=1e-6)


def test_bn_freeze_keeps_running_stats_but_trains_affine():
    torch.manual_seed(0)
    m = build_model("wrn-10-1")
    m.freeze_bn(True).train()
    bns = [mod for mod in m.modules() if isinstance(mod, torch.nn.BatchNorm2d)]
    assert m.training and not any(bn.training for bn in bns)
    stats = {k: v.clone() for k, v in m.state_dict().items() if "running" in k or "num_batches" in k}
    affine = bns[0].weight.detach().clone()
    opt = torch.optim.SGD(m.parameters(), lr=0.1)
    loss = torch.nn.functional.cross_entropy(m(torch.rand(8, 3, 32, 32)), torch.arange(8))
    loss.backward()
    opt.step()
    for k, v in m.state_dict().items():
        if k in stats:
            assert torch.equal(v, stats[k]), k
    assert bns[0].weight.grad is not None and not torch.equal(bns[0].weight, affine)
    m.freeze_bn(False)
    assert all(bn.training for bn in bns)  # switch off: BN follows the model mode again


def test_unknown_arch_lists_known_ones():
    with pytest.raises(ValueError, match="wrn-34-10"):
        build_model("vgg16")
    with pytest.raises(ValueError, match="6n\\+4"):
        build_model("wrn-15-2")
    with pytest.raises(ValueError, match="class names"):
        build_model("wrn-10-1", num_classes=3, class_names=["a", "b"])


def test_energies_match_definitions():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, -1.0, 5.0]])
    y = torch.tensor([2, 0])
    assert torch.equal(joint_energy(logits, y), torch.tensor([-3.0, 0.0]))
    assert torch.equal(joint_energy(logits, 1), torch.tensor([-2.0, 1.0]))
    torch.testing.assert_close(marginal_energy(logits), -torch.log(torch.exp(logits).sum(1)))
    p = probabilities(logits)
    torch.testing.assert_close(p.sum(1), torch.ones(2))
    # E(x, y) - E(x) = -log p(y|x)
    torch.testing.assert_close(joint_energy(logits, y) - marginal_energy(logits), -p[[0, 1], y].log())
