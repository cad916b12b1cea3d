"""Official ImageNet layouts (timm ResNet-50 / WRN-50-k, ConvNeXt with the official ConvStem) and their import.

The official layouts are described here independently of dat_core: key -> shape tables written from the
official code's structure (timm names, `rebm/training/utils_architecture.py` stems) and a functional forward
over such a state dict. Random official-layout state dicts (reduced widths/depths) are saved with every
wrapper the released files carry, imported, and must give the reference's logits.
"""

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from dat_core.checkpoint import load_checkpoint_dir
from dat_core.models import build_model, count_parameters, registry
from dat_core.models.class_names import class_names_from, dataset_class_names, read_class_names
from dat_core.models.convnext import ConvNeXt
from dat_core.models.resnet import ResNet
from dat_core.official import import_official, official_state_dict, read_official_config
from train.__main__ import main

ROOT = Path(__file__).resolve().parent.parent
# Model configs in the official repository's model_configs/*.yaml schema (its keys and value forms: a quoted
# or bare dataset, model_type names, a folded train_cmd with key=value overrides, an optional image_size);
# the values are our own.
OFFICIAL_CONFIGS = {
    "imagenet-convnext-large.yaml": (
        "# ConvNeXt-L with a convolutional stem, trained at 256 px on raw [0,1] inputs\n"
        'method: "dat"\ndataset: imagenet\ncheckpoint: runs/convnext-l/files/model_bestfid.pth\n'
        "model_type: convnext_large\ntrain_cmd: >\n  python -m rebm.training.train experiments/imagenet/l.yaml\n"
        "  model.model_type=convnext_large\n  optimizer=adamw\n  model.normalize_input=false\n"
        "  data.image_size=256\npgd_epsilon: 3.0\nnotes: |\n  two\n  lines\n"),
    "imagenet-resnet50.yaml": (
        'method: "dat"\ndataset: "imagenet"\ncheckpoint: runs/r50/files/model_bestfid.pth\n'
        'model_type: "ResNet50ImageNet"\ntrain_cmd: >\n  python -m rebm.training.train experiments/imagenet/r.yaml\n'
        "  data.image_size=256\n  attack.max_steps=30\nimage_size: 256\n"),
    "cifar100-wrn.yaml": (
        'method: "dat"\ndataset: cifar100\ncheckpoint: runs/wrn/files/model_bestfid.pth\n'
        'model_type: WideResNet34x10\ntrain_cmd: "python -m rebm.training.train experiments/cifar100/w.yaml"\n'
        "pgd_epsilon: 0.5\n"),
}
IMAGENET_MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
IMAGENET_STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)

# ---------------------------------------------------------------- the official layouts, independently

# utils_architecture.py's ConvBlock1(48), ConvBlock3(64), ConvBlockLarge(96): (width, stride) of each 3x3 conv
OFFICIAL_STEMS = {
    "small": [(48, 2), (96, 2)], "base": [(64, 2), (96, 2), (128, 1)], "large": [(96, 2), (144, 2), (192, 1)]}
TIMM_CONVNEXT = {"small": ([3, 3, 27, 3], [96, 192, 384, 768]), "base": ([3, 3, 27, 3], [128, 256, 512, 1024]),
                 "large": ([3, 3, 27, 3], [192, 384, 768, 1536])}
TIMM_RESNET = {"resnet50": 64, "wide-resnet50-2": 128, "wide-resnet50-4": 256}  # timm base_width
TINY_CONVNEXT = {"stem2": ([(8, 2), (16, 2)], [1, 2, 1, 1], [16, 24, 32, 40]),        # 2-conv stem like small
                 "stem3": ([(8, 2), (12, 2), (16, 1)], [1, 1, 2, 1], [16, 20, 24, 28])}  # 3-conv stem like base/large


def resnet_layout(layers, base_width, num_classes):
    shapes = {"conv1.weight": (64, 3, 7, 7)}

    def bn(name, c):
        shapes.update({f"{name}.weight": (c,), f"{name}.bias": (c,), f"{name}.running_mean": (c,),
                       f"{name}.running_var": (c,), f"{name}.num_batches_tracked": ()})

    bn("bn1", 64)
    c_in = 64
    for i, (n, planes) in enumerate(zip(layers, (64, 128, 256, 512)), start=1):
        width, c_out = planes * base_width // 64, planes * 4
        for j in range(n):
            p = f"layer{i}.{j}"
            shapes[f"{p}.conv1.weight"] = (width, c_in, 1, 1)
            bn(f"{p}.bn1", width)
            shapes[f"{p}.conv2.weight"] = (width, width, 3, 3)
            bn(f"{p}.bn2", width)
            shapes[f"{p}.conv3.weight"] = (c_out, width, 1, 1)
            bn(f"{p}.bn3", c_out)
            if j == 0:
                shapes[f"{p}.downsample.0.weight"] = (c_out, c_in, 1, 1)
                bn(f"{p}.downsample.1", c_out)
            c_in = c_out
    shapes.update({"fc.weight": (num_classes, c_in), "fc.bias": (num_classes,)})
    return shapes


def convnext_layout(stem, depths, dims, num_classes):
    shapes, c = {}, 3
    for i, (out, _) in enumerate(stem):  # Sequential(conv, LayerNorm, GELU) per conv
        shapes.update({f"stem.stem.{3 * i}.weight": (out, c, 3, 3), f"stem.stem.{3 * i}.bias": (out,),
                       f"stem.stem.{3 * i + 1}.weight": (out,), f"stem.stem.{3 * i + 1}.bias": (out,)})
        c = out
    for n, (depth, dim) in enumerate(zip(depths, dims)):
        if n:
            p = f"stages.{n}.downsample"
            shapes.update({f"{p}.0.weight": (c,), f"{p}.0.bias": (c,), f"{p}.1.weight": (dim, c, 2, 2),
                           f"{p}.1.bias": (dim,)})
        for m in range(depth):
            p = f"stages.{n}.blocks.{m}"
            shapes.update({f"{p}.gamma": (dim,), f"{p}.conv_dw.weight": (dim, 1, 7, 7), f"{p}.conv_dw.bias": (dim,),
                           f"{p}.norm.weight": (dim,), f"{p}.norm.bias": (dim,),
                           f"{p}.mlp.fc1.weight": (4 * dim, dim), f"{p}.mlp.fc1.bias": (4 * dim,),
                           f"{p}.mlp.fc2.weight": (dim, 4 * dim), f"{p}.mlp.fc2.bias": (dim,)})
        c = dim
    shapes.update({"head.norm.weight": (c,), "head.norm.bias": (c,), "head.fc.weight": (num_classes, c),
                   "head.fc.bias": (num_classes,)})
    return shapes


def random_state(shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, shape in shapes.items():
        if k.endswith("num_batches_tracked"):
            out[k] = torch.tensor(100)
        elif k.endswith("running_var"):
            out[k] = torch.rand(shape, generator=g) + 0.5
        elif len(shape) > 1:  # conv / linear weights: unit-variance outputs
            fan_in = torch.Size(shape[1:]).numel()
            out[k] = torch.randn(shape, generator=g) / fan_in ** 0.5
        elif k.endswith(("weight", "gamma")):  # BatchNorm / LayerNorm scales, layer scale
            out[k] = 1 + 0.2 * torch.randn(shape, generator=g)
        else:  # biases, running means
            out[k] = 0.1 * torch.randn(shape, generator=g)
    return out


def reference_resnet(sd, x, layers):
    """timm ResNet (bottleneck, stride on the 3x3 conv) as the official fork runs it: ImageNet
    normalization inside forward, BatchNorm with running statistics."""
    def bn(name, t):
        return F.batch_norm(t, sd[f"{name}.running_mean"], sd[f"{name}.running_var"], sd[f"{name}.weight"],
                            sd[f"{name}.bias"], training=False, eps=1e-5)

    x = (x - IMAGENET_MEAN) / IMAGENET_STD
    x = F.max_pool2d(F.relu(bn("bn1", F.conv2d(x, sd["conv1.weight"], stride=2, padding=3))), 3, 2, 1)
    for i, n in enumerate(layers, start=1):
        for j in range(n):
            p, stride = f"layer{i}.{j}", 2 if (i > 1 and j == 0) else 1
            y = F.relu(bn(f"{p}.bn1", F.conv2d(x, sd[f"{p}.conv1.weight"])))
            y = F.relu(bn(f"{p}.bn2", F.conv2d(y, sd[f"{p}.conv2.weight"], stride=stride, padding=1)))
            y = bn(f"{p}.bn3", F.conv2d(y, sd[f"{p}.conv3.weight"]))
            if f"{p}.downsample.0.weight" in sd:
                x = bn(f"{p}.downsample.1", F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=stride))
            x = F.relu(y + x)
    return F.linear(x.mean((2, 3)), sd["fc.weight"], sd["fc.bias"])


def reference_convnext(sd, x, stem, depths, pre_logits=False):
    """ConvNeXt-CvSt as the official code runs it: raw [0,1] input, stem LayerNorms over channels."""
    def ln_channels(t, name):  # LayerNorm over dim 1 of NCHW, written out
        mu = t.mean(1, keepdim=True)
        var = (t - mu).pow(2).mean(1, keepdim=True)
        return (t - mu) * torch.rsqrt(var + 1e-6) * sd[f"{name}.weight"].view(1, -1, 1, 1) \
            + sd[f"{name}.bias"].view(1, -1, 1, 1)

    for i, (_, stride) in enumerate(stem):
        x = F.conv2d(x, sd[f"stem.stem.{3 * i}.weight"], sd[f"stem.stem.{3 * i}.bias"], stride=stride, padding=1)
        x = F.gelu(ln_channels(x, f"stem.stem.{3 * i + 1}"))
    for n, depth in enumerate(depths):
        if n:
            p = f"stages.{n}.downsample"
            x = F.conv2d(ln_channels(x, f"{p}.0"), sd[f"{p}.1.weight"], sd[f"{p}.1.bias"], stride=2)
        for m in range(depth):
            p = f"stages.{n}.blocks.{m}"
            y = F.conv2d(x, sd[f"{p}.conv_dw.weight"], sd[f"{p}.conv_dw.bias"], padding=3, groups=x.shape[1])
            y = y.permute(0, 2, 3, 1)
            y = F.layer_norm(y, y.shape[-1:], sd[f"{p}.norm.weight"], sd[f"{p}.norm.bias"], 1e-6)
            y = F.linear(F.gelu(F.linear(y, sd[f"{p}.mlp.fc1.weight"], sd[f"{p}.mlp.fc1.bias"])),
                         sd[f"{p}.mlp.fc2.weight"], sd[f"{p}.mlp.fc2.bias"])
            x = x + (y * sd[f"{p}.gamma"]).permute(0, 3, 1, 2)
    x = x.mean((2, 3))
    x = F.layer_norm(x, x.shape[-1:], sd["head.norm.weight"], sd["head.norm.bias"], 1e-6)
    return x if pre_logits else F.linear(x, sd["head.fc.weight"], sd["head.fc.bias"])


# ---------------------------------------------------------------- tiny variants of our models, registered for a test

def _register(monkeypatch, name, builder, normalization, image_size=32):
    spec = registry.ArchSpec(builder, image_size, normalization, examples=(name,))
    monkeypatch.setitem(registry._NAMED, name, spec)


@pytest.fixture
def tiny_archs(monkeypatch):
    for name, (stem, depths, dims) in TINY_CONVNEXT.items():
        _register(monkeypatch, f"convnext-{name}-test",
                  lambda cfg, d=depths, w=dims, s=stem: ConvNeXt(cfg, tuple(d), tuple(w), tuple(s)),
                  registry.NO_NORMALIZATION)
    for width in (64, 128):
        _register(monkeypatch, f"resnet-w{width}-test", lambda cfg, w=width: ResNet(cfg, (1, 1, 1, 1), w),
                  registry.IMAGENET_NORMALIZATION)


CASES = {  # our tiny arch -> (official layout, reference forward)
    **{f"convnext-{n}-test": (lambda k, s=s, d=d, w=w: convnext_layout(s, d, w, k),
                              lambda sd, x, s=s, d=d: reference_convnext(sd, x, s, d))
       for n, (s, d, w) in TINY_CONVNEXT.items()},
    **{f"resnet-w{w}-test": (lambda k, w=w: resnet_layout((1, 1, 1, 1), w, k),
                             lambda sd, x: reference_resnet(sd, x, (1, 1, 1, 1))) for w in (64, 128)},
}


def wrapped(sd, wrapper):
    """`sd` as a released file holds it."""
    if wrapper == "ema":  # DataParallel(AveragedModel(model)), as the official loader expects it
        return {**{f"module.module.{k}": v for k, v in sd.items()}, "module.n_averaged": torch.tensor(1234)}
    if wrapper == "ema-of-dp":  # AveragedModel(DataParallel(model))
        return {**{f"module.module.{k}": v for k, v in sd.items()}, "n_averaged": torch.tensor(1234)}
    if wrapper == "madry":  # MadryLab robustness: {"model": module.model.* + module.attacker.model.* + normalizer}
        state = {f"module.{p}{k}": v for k, v in sd.items() for p in ("model.", "attacker.model.")}
        for p in ("module.normalizer.", "module.attacker.normalize."):
            state.update({p + "new_mean": IMAGENET_MEAN.flatten(), p + "new_std": IMAGENET_STD.flatten()})
        return {"model": state, "epoch": 90, "schedule": None}
    return {f"{wrapper}{k}": v for k, v in sd.items()}


# ---------------------------------------------------------------- layouts and sizes of the full models

@pytest.mark.parametrize("size", ["small", "base", "large"])
def test_convnext_convstem_has_the_official_layout(size):
    with torch.device("meta"):
        model = build_model(f"convnext-{size}-convstem", num_classes=1000)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == convnext_layout(OFFICIAL_STEMS[size], *TIMM_CONVNEXT[size], 1000)
    assert model.config["mean"] == [0, 0, 0] and model.config["std"] == [1, 1, 1]  # [0,1] pixels as they are
    assert model.config["image_size"] == (256 if size == "large" else 224)


@pytest.mark.parametrize("arch", sorted(TIMM_RESNET))
def test_imagenet_resnets_have_the_timm_layout(arch):
    with torch.device("meta"):
        model = build_model(arch, num_classes=1000)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == resnet_layout((3, 4, 6, 3), TIMM_RESNET[arch], 1000)
    assert model.config["mean"] == [0.485, 0.456, 0.406] and model.config["std"] == [0.229, 0.224, 0.225]


# torchvision's published counts of the patch-stem ConvNeXts (4x4 conv 3->C, LayerNorm)
PATCH_STEM_CONVNEXT = {"small": 50_223_688, "base": 88_591_464, "large": 197_767_336}


@pytest.mark.parametrize("arch,params", [
    ("resnet50", 25_557_032), ("wide-resnet50-2", 68_883_240),  # torchvision's counts
    ("wide-resnet50-4", 223_439_144),  # the paper's "223M"
    *[(f"convnext-{s}-convstem", PATCH_STEM_CONVNEXT[s] - (48 * TIMM_CONVNEXT[s][1][0] + 3 * TIMM_CONVNEXT[s][1][0])
       + sum(9 * c_in * c + 3 * c for c_in, (c, _) in zip([3] + [c for c, _ in OFFICIAL_STEMS[s]], OFFICIAL_STEMS[s])))
      for s in ("small", "base", "large")],
])
def test_full_size_parameter_counts(arch, params):
    with torch.device("meta"):
        model = build_model(arch, num_classes=1000)
    assert count_parameters(model) == params
    if arch == "convnext-large-convstem":
        assert round(params / 1e6) == 198  # the paper's ConvNeXt-L-CvSt


# ---------------------------------------------------------------- import with identical logits

WRAPPERS = ["", "module.", "ema", "ema-of-dp", "base_model.", "module.base_model.", "madry"]


@pytest.mark.parametrize("arch,wrapper", [*[("convnext-stem2-test", w) for w in WRAPPERS],
                                          *[("resnet-w64-test", w) for w in WRAPPERS],
                                          ("convnext-stem3-test", "ema"), ("resnet-w128-test", "madry")])
def test_import_gives_the_official_logits(tiny_archs, tmp_path, recwarn, arch, wrapper):
    layout, reference = CASES[arch]
    sd = random_state(layout(7), seed=len(wrapper))
    torch.save(wrapped(sd, wrapper), tmp_path / "official.pth")
    model = import_official(tmp_path / "official.pth", arch=arch, num_classes=7, out_dir=tmp_path / "ours")
    dropped = [str(w.message) for w in recwarn if "input-normalization" in str(w.message)]
    assert len(dropped) == (wrapper == "madry") and all("new_mean" in d for d in dropped)
    x = torch.rand(3, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        expected = reference(sd, x)
        assert (model(x) - expected).abs().max() <= 1e-4
        assert (load_checkpoint_dir(tmp_path / "ours")(x) - expected).abs().max() <= 1e-4
    assert expected.std() > 0.1  # the reference is not degenerate


def test_convnext_features_end_after_head_norm(tiny_archs):
    stem, depths, dims = TINY_CONVNEXT["stem3"]
    sd = random_state(convnext_layout(stem, depths, dims, 5))
    model = build_model("convnext-stem3-test", num_classes=5).eval()
    model.load_state_dict(sd)
    x = torch.rand(2, 3, 40, 40)
    with torch.no_grad():
        features = model.features(x)
        torch.testing.assert_close(features, reference_convnext(sd, x, stem, depths, pre_logits=True),
                                   atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(model.head(features), model(x))
    assert features.shape == (2, dims[-1]) and isinstance(model.head.fc, torch.nn.Linear)
    assert model.get_submodule("head.fc") is model.head.fc


def test_wrong_keys_are_listed(tiny_archs, tmp_path):
    stem, depths, dims = TINY_CONVNEXT["stem2"]
    sd = random_state(convnext_layout(stem, depths, dims, 7))
    sd["stages.0.blocks.0.ls.gamma"] = sd.pop("stages.0.blocks.0.gamma")
    torch.save(wrapped(sd, "module."), tmp_path / "renamed.pth")
    with pytest.raises(ValueError, match=r"1 missing key \(stages\.0\.blocks\.0\.gamma\).*"
                                         r"1 unexpected key \(stages\.0\.blocks\.0\.ls\.gamma\)"):
        import_official(tmp_path / "renamed.pth", arch="convnext-stem2-test", num_classes=7)

    sd["stages.0.blocks.0.gamma"] = sd.pop("stages.0.blocks.0.ls.gamma")
    patch = {k: v for k, v in sd.items() if not k.startswith("stem.")}  # timm's own patch stem
    patch.update({"stem.0.weight": torch.zeros(16, 3, 4, 4), "stem.0.bias": torch.zeros(16),
                  "stem.1.weight": torch.ones(16), "stem.1.bias": torch.zeros(16)})
    torch.save(patch, tmp_path / "patch.pth")
    with pytest.raises(ValueError, match=r"8 missing keys \(stem\.stem\.0\.weight.*"
                                         r"4 unexpected keys \(stem\.0\.weight"):
        import_official(tmp_path / "patch.pth", arch="convnext-stem2-test", num_classes=7)

    torch.save(random_state(resnet_layout((1, 1, 1, 1), 64, 7)), tmp_path / "resnet.pth")
    with pytest.raises(ValueError, match=r"shape mismatches \(layer1\.0\.conv1\.weight checkpoint \(64, 64, 1, 1\) "
                                         r"vs model \(128, 64, 1, 1\)"):
        import_official(tmp_path / "resnet.pth", arch="resnet-w128-test", num_classes=7)


# ---------------------------------------------------------------- official model configs

@pytest.mark.parametrize("name,expected", [
    ("imagenet-convnext-large.yaml",  # size only in train_cmd (data.image_size=256)
     {"arch": "convnext-large-convstem", "num_classes": 1000, "image_size": 256, "normalization": "none",
      "class_names": "imagenet", "method": "dat"}),
    ("imagenet-resnet50.yaml",
     {"arch": "resnet50", "num_classes": 1000, "image_size": 256, "normalization": "imagenet",
      "class_names": "imagenet", "method": "dat"}),
    ("cifar100-wrn.yaml",  # InNOut WRNs normalize CIFAR-100 with CIFAR-10 statistics
     {"arch": "wrn-34-10", "num_classes": 100, "image_size": 32, "normalization": "cifar10",
      "class_names": "cifar100", "method": "dat"}),
])
def test_official_configs_are_read(tmp_path, name, expected):
    (tmp_path / name).write_text(OFFICIAL_CONFIGS[name])
    got = read_official_config(tmp_path / name)
    assert got.pop("checkpoint").endswith("/files/model_bestfid.pth")
    assert got == expected


@pytest.mark.parametrize("text,message", [
    ("dataset: imagenet\nmodel_type: convnext_base\ntrain_cmd: python -m x model.use_convstem=false\n", "patch stem"),
    ("dataset: imagenet\nmodel_type: vit_b\n", "vit_b.*known: WideResNet"),
    ("dataset: svhn\nmodel_type: WideResNet34x10\n", "svhn"),
    ("- just\n- a list\n", "not an official DAT model config"),
    ("dataset: [unclosed\n", "not valid YAML"),
    # a list, inf, a fraction or non-ASCII digits as the size: TypeError/OverflowError tracebacks or silently 32
    ("dataset: cifar10\nmodel_type: WideResNet34x10\nimage_size: [32]\n", "image size .* not a whole number"),
    ("dataset: cifar10\nmodel_type: WideResNet34x10\nimage_size: .inf\n", "image size .* not a whole number"),
    ("dataset: cifar10\nmodel_type: WideResNet34x10\nimage_size: 32.9\n", "image size .* not a whole number"),
    ("dataset: cifar10\nmodel_type: WideResNet34x10\ntrain_cmd: x data.image_size=\u0663\u0662\n",
     "image size .* not a whole number"),
    ("dataset: cifar10\nmodel_type: WideResNet34x10\ncheckpoint: [a, b]\n", "checkpoint must be text"),
    ("dataset: cifar10\nmodel_type: WideResNet\u0663\u0664x10\n", "no architecture here"),
])
def test_bad_official_configs_are_refused(tmp_path, text, message):
    (tmp_path / "c.yaml").write_text(text)
    with pytest.raises(ValueError, match=message):
        read_official_config(tmp_path / "c.yaml")


def test_normalize_input_override_is_honoured(tmp_path):
    (tmp_path / "c.yaml").write_text("dataset: imagenet\nmodel_type: convnext_small\nimage_size: 224\ntrain_cmd: >\n"
                                     "  python -m rebm.training.train x.yaml\n  model.normalize_input=true\n")
    assert read_official_config(tmp_path / "c.yaml")["normalization"] == "imagenet"


# ---------------------------------------------------------------- class names

def test_shipped_class_names():
    imagenet = dataset_class_names("imagenet")
    assert len(imagenet) == len(set(imagenet)) == 1000
    assert (imagenet[0], imagenet[1], imagenet[134], imagenet[517], imagenet[999]) == \
        ("tench", "goldfish", "crane (bird)", "crane (machine)", "toilet paper")
    cifar100 = dataset_class_names("cifar100")
    assert len(set(cifar100)) == 100 and cifar100 == sorted(cifar100)  # fine_label_names are alphabetical
    assert cifar100[:3] == ["apple", "aquarium_fish", "baby"] and cifar100[-1] == "worm"
    assert class_names_from("cifar10")[0] == "airplane"


def test_class_name_files(tmp_path):
    (tmp_path / "names.txt").write_text("cat\n dog \n\n")
    assert read_class_names(tmp_path / "names.txt") == ["cat", "dog"]
    (tmp_path / "gap.txt").write_text("cat\n\ndog\n")
    with pytest.raises(ValueError, match="one non-empty class name per line"):
        read_class_names(tmp_path / "gap.txt")
    with pytest.raises(ValueError, match="neither one of cifar10, cifar100, imagenet nor a file"):
        class_names_from("imagenet1k")


# ---------------------------------------------------------------- the CLI

def test_cli_import_end_to_end(tmp_path):
    torch.manual_seed(0)
    official = build_model("wrn-10-1", num_classes=3).eval()
    torch.save(wrapped(official.state_dict(), "ema"), tmp_path / "model_bestfid.pth")
    (tmp_path / "names.txt").write_text("ant\nbee\ncow\n")
    run = subprocess.run([sys.executable, "-m", "train", "import", "--checkpoint", str(tmp_path / "model_bestfid.pth"),
                          "--arch", "wrn-10-1", "--class-names", str(tmp_path / "names.txt"),
                          "--normalization", "cifar100", "--out", str(tmp_path / "ours")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    assert "wrn-10-1, 3 classes (ant, bee, cow" in run.stdout
    model = load_checkpoint_dir(tmp_path / "ours")
    assert model.config["class_names"] == ["ant", "bee", "cow"]  # --num-classes follows the names
    assert model.config["mean"] == [0.5071, 0.4865, 0.4409]
    expected = build_model("wrn-10-1", num_classes=3, mean=(0.5071, 0.4865, 0.4409), std=(0.2673, 0.2564, 0.2762))
    expected.load_state_dict(official.state_dict())
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(model(x), expected.eval()(x))


def test_cli_import_with_an_official_config(tiny_archs, monkeypatch, tmp_path, capsys):
    stem, depths, dims = TINY_CONVNEXT["stem3"]  # stands in for the real ConvNeXt-L (198M parameters)
    _register(monkeypatch, "convnext-large-convstem",
              lambda cfg: ConvNeXt(cfg, tuple(depths), tuple(dims), tuple(stem)), registry.NO_NORMALIZATION, 256)
    config = tmp_path / "imagenet-convnext-large.yaml"
    config.write_text(OFFICIAL_CONFIGS[config.name])
    sd = random_state(convnext_layout(stem, depths, dims, 1000))
    monkeypatch.chdir(tmp_path)
    assert main(["import", "--official-config", str(config), "--out", "ours"]) == 2
    assert "which is not here; give --checkpoint" in capsys.readouterr().err
    released = tmp_path / read_official_config(config)["checkpoint"]  # where the official repo keeps it
    released.parent.mkdir(parents=True)
    torch.save(wrapped(sd, "ema"), released)
    assert main(["import", "--official-config", str(config), "--out", "ours"]) == 0
    assert "convnext-large-convstem, 1000 classes (tench, goldfish, great white shark" in capsys.readouterr().out
    model = load_checkpoint_dir(tmp_path / "ours")
    assert model.config["image_size"] == 256 and model.config["mean"] == [0, 0, 0]
    x = torch.rand(2, 3, 64, 64)
    with torch.no_grad():
        assert (model(x) - reference_convnext(sd, x, stem, depths)).abs().max() <= 1e-4

    # explicit flags win over the config; errors are one line with exit code 2
    assert main(["import", "--official-config", str(config), "--checkpoint", str(released),
                 "--image-size", "224", "--out", "ours224"]) == 0
    assert load_checkpoint_dir(tmp_path / "ours224").config["image_size"] == 224
    assert main(["import", "--official-config", str(config), "--checkpoint", str(released),
                 "--num-classes", "10", "--class-names", "cifar10", "--out", "bad"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "shape mismatch" in err and "head.fc.weight" in err


def test_cli_import_checks_out_before_it_reads_the_checkpoint(tmp_path, capsys):
    """`train import --out FILE` converted the whole checkpoint and then said "[Errno 17] File exists"."""
    from train.__main__ import main

    torch.save(wrapped(build_model("wrn-10-1", num_classes=3).state_dict(), "ema"), tmp_path / "m.pth")
    (tmp_path / "taken").write_text("x")
    for out, said in ((tmp_path / "taken", "is a file: give a folder"), ("/proc/ours", "cannot write")):
        assert main(["import", "--checkpoint", str(tmp_path / "m.pth"), "--arch", "wrn-10-1", "--num-classes", "3",
                     "--out", str(out)]) == 2
        assert said in capsys.readouterr().err


def test_a_large_normalization_tensor_is_described_not_written_out(tmp_path):
    """An 80 MB `normalizer.mean` went into the warning value by value: 100 million characters and a GB of memory."""
    sd = {f"module.{k}": v for k, v in build_model("wrn-10-1").state_dict().items()}
    sd["module.normalizer.mean"] = torch.zeros(2_000_000)
    sd["module.normalizer.std"] = torch.tensor([0.2, 0.2, 0.2])
    with pytest.warns(UserWarning) as caught:
        official_state_dict(sd, "x.pth")
    text = str(caught[0].message)
    assert len(text) < 600 and "<2000000 values of shape (2000000,)>" in text and "[0.2" in text, text


def test_architecture_names_take_ascii_digits_only():
    """"wrn-١٠-1" loaded as wrn-10-1 and was stored under that spelling in the model's config."""
    from dat_core.models.config import validate_model_config

    for arch in ("wrn-\u0661\u0660-1", "wrn-10-\u0661", "wrn-\uff11\uff10-1"):
        with pytest.raises(ValueError, match="unknown architecture"):
            validate_model_config({"arch": arch, "num_classes": 10})
