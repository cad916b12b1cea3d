"""Bounds on what a model source may name before anything is built, read or locked (a public app loads what
visitors type): Hub revisions spelled as git refs only, architecture numbers within a range, configs that
cannot be built refused as ValueErrors, and one visitor's slow load not holding up the others."""

import subprocess
import sys
import threading
import time

import pytest
import torch

from dat_core import build_model
from dat_core.files import read_json
from dat_core.loading import canonical_revision, resolve_source
from dat_core.models.config import validate_model_config

NOT_REFS = ["/dev/zero", "/etc", "/", "a//b", "main/", "/main", ".hidden", "refs/.x", "v1.lock", "refs/x.lock/y",
            "a..b", "refs/../x", "a/./b", "main.", "a  b", "x\\y", "~main", "a@{1}", "+x", "@"]


@pytest.mark.parametrize("revision", NOT_REFS)
def test_a_revision_that_is_not_a_git_ref_is_refused_before_the_hub_is_asked(revision):
    """`/dev/zero` passed the old check; huggingface_hub joined it to the cache's refs/ folder when the repo
    was not found and read the device to exhaustion (or a folder's existence was told apart by the message)."""
    with pytest.raises(ValueError, match="not a branch, tag or commit sha") as e:
        canonical_revision(revision)
    assert revision.strip() not in str(e.value)
    with pytest.raises(ValueError, match="not a branch, tag or commit sha"):
        resolve_source("nobody/nothing", revision)


def test_a_revision_is_checked_by_the_hub_client_wrapper_too():
    from dat_core.hub import download

    t0 = time.monotonic()
    with pytest.raises(ValueError, match="not a branch, tag or commit sha"):
        download("nobody/nothing", revision="/etc", endpoint="http://127.0.0.1:9", local_files_only=True)
    assert time.monotonic() - t0 < 5


@pytest.mark.parametrize("revision", ["main", "v1.0", "refs/pr/1", "a" * 40, "my_branch-2", "release/2026.12",
                                      "0123456789abcdef0123456789abcdef01234567", "v1.0+build", "user@fix"])
def test_git_refs_and_shas_are_kept(revision):
    assert canonical_revision(f"  {revision} ") == revision


@pytest.mark.parametrize("arch", ["wrn-" + "9" * 60 + "-1", "wrn-24004-1", "wrn-1000-1", "wrn-16-0", "wrn-4-1",
                                  "wrn-15-2", "wrn-16-99999", "wrn-16-" + "1" * 30])
def test_an_architecture_number_out_of_range_is_refused_before_building(arch):
    """wrn-<60 digits>-1 built block after block on the meta device for as long as memory lasted (a visitor's
    config.json held the whole app's model lock meanwhile); wrn-16-0 and wrn-4-1 ended in IndexError and
    RuntimeError tracebacks."""
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="arch|architecture|WRN"):
        validate_model_config({"arch": arch, "num_classes": 10})
    with pytest.raises(ValueError):
        build_model(arch)
    assert time.monotonic() - t0 < 2


def test_a_config_that_cannot_be_built_is_a_value_error():
    """ConvNeXt at image_size 8 raised PyTorch's RuntimeError out of the config check."""
    with pytest.raises(ValueError, match="image_size=8"):
        validate_model_config({"arch": "convnext-small-convstem", "num_classes": 10, "image_size": 8})


def test_the_largest_allowed_wrn_still_builds():
    assert validate_model_config({"arch": "wrn-70-16", "num_classes": 10})["arch"] == "wrn-70-16"
    assert build_model("wrn-10-1").config["arch"] == "wrn-10-1"


def test_json_nested_past_the_recursion_limit_is_not_json_we_read(tmp_path):
    path = tmp_path / "config.json"
    path.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ValueError, match="config.json is not valid JSON"):
        read_json(path, 4 << 20, "config.json", "a model config")


def test_an_official_import_is_sized_before_the_model_is_built(tmp_path):
    """`train import --arch wrn-16-56` built its 536M parameters (2.4 GB, 10 s) before refusing them."""
    pth = tmp_path / "tiny.pth"
    torch.save({"conv1.weight": torch.zeros(16, 3, 3, 3)}, pth)
    code = ("from dat_core.official import import_official\n"
            f"try:\n    import_official({str(pth)!r}, 'wrn-34-32')\n"
            "except ValueError as e:\n    print('REFUSED', e)\n"
            "peak = next(x for x in open('/proc/self/status') if x.startswith('VmHWM'))\n"   # ru_maxrss keeps the
            "print('MAXRSS_MB', int(peak.split()[1]) // 1024)\n")                           # parent's across exec
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "REFUSED" in out and "parameters" in out, out
    assert int(out.split("MAXRSS_MB")[1]) < 1500, out


def test_one_visitors_slow_load_does_not_hold_up_the_others(monkeypatch):
    """ModelRegistry.load held its lock while reading a checkpoint, and every request takes that lock to find its
    model: one visitor's slow download or build stalled every other visitor."""
    from webapp import sources
    from webapp.state import ModelRegistry

    started, release, calls = threading.Event(), threading.Event(), []
    real = sources.load

    def load(source, **kw):
        calls.append(source.key)
        if source.kind == "hub":
            started.set()
            assert release.wait(30)
            return build_model("wrn-10-1").eval(), None
        return real(source, **kw)

    monkeypatch.setattr(sources, "load", load)
    monkeypatch.setattr(sources, "label", lambda src, directory=None: src.name)
    registry = ModelRegistry()
    default = registry.load("default")
    slow = resolve_source("nobody/slow")
    threads = [threading.Thread(target=registry.load, args=(slow,)) for _ in range(2)]
    for t in threads:
        t.start()
    assert started.wait(30)
    t0 = time.monotonic()
    assert registry.get(default.key) is default
    assert registry.load("default") is default
    assert time.monotonic() - t0 < 1.0
    release.set()
    for t in threads:
        t.join(30)
    assert calls.count(slow.key) == 1          # the second visitor waited for the first one's load
    assert registry.get(slow.key) is not None


@pytest.mark.parametrize("content, said", [(b"x" * (2**20 + 1), "larger than 1 MB"), (b"\xff\xfe card", "not UTF-8")])
def test_the_model_tab_says_why_a_card_is_not_shown_without_a_path(tmp_path, content, said):
    """An oversized or undecodable README.md was shown as "This checkpoint has no model card"."""
    from webapp.describe import card_text
    from webapp.fastpath import FastPath
    from webapp.state import LoadedModel

    (tmp_path / "README.md").write_bytes(content)
    loaded = LoadedModel("k", FastPath(build_model("wrn-10-1"), enabled=False), "hub/x", None, tmp_path, "x")
    text = card_text(loaded)
    assert said in text and "no model card" not in text and str(tmp_path) not in text


@pytest.mark.parametrize("name", ["<img src=x onerror=alert(1)>", "![x](http://e.vil/t.png)", "[link](javascript:x)",
                                  "a|b", "`code`", "back\\slash", "www.e.vil", "see http://e.vil", "me@e.vil",
                                  "tab\there", "new\nline", "nul\x00"])
def test_class_names_that_would_be_markup_are_refused_when_checked_and_when_built(tmp_path, name):
    """A checkpoint's class names went into the app's Markdown as they were: a shared link to a Hub model named
    `<img ...>` put external images and links into every visitor's page (banner, summary, captions)."""
    names = [name] + [f"class {i}" for i in range(1, 10)]
    with pytest.raises(ValueError, match="class names"):
        validate_model_config({"arch": "wrn-10-1", "num_classes": 10, "class_names": names})
    with pytest.raises(ValueError, match="class names"):
        build_model("wrn-10-1", class_names=names)


def test_everyday_class_names_are_kept():
    from dat_core.models import class_names_of

    kept = ["T-shirt/top", "jack-o'-lantern", "aquarium_fish", "Shih-Tzu", "bird (small)", "R&B", "c++", "café",
            "水獭", "no. 5", "10"]
    assert build_model("wrn-10-1", num_classes=len(kept), class_names=kept).config["class_names"] == kept
    from dat_core.models.class_names import dataset_class_names

    for dataset in ("cifar10", "cifar100", "imagenet"):
        names = dataset_class_names(dataset)
        validate_model_config({"arch": "wrn-10-1", "num_classes": len(names), "class_names": names})
    assert class_names_of({"num_classes": 10})[0] == "airplane"


def test_visitors_waiting_on_a_load_that_fails_share_its_error_and_a_later_request_tries_again(monkeypatch):
    """The per-source lock was dropped when a load failed while others waited on it: a newcomer made a new one and
    two loads of one source ran at once (3 loads for 4 requests)."""
    from webapp import sources
    from webapp.state import ModelRegistry

    calls, running, peak = [], [0], [0]

    def load(source, **kw):
        calls.append(source.key)
        running[0] += 1
        peak[0] = max(peak[0], running[0])
        deadline = time.monotonic() + 30
        while len(calls) == 1 and registry._loading[slow.key].users < 4 and time.monotonic() < deadline:
            time.sleep(0.01)                      # the first load ends once all four requests wait on it
        running[0] -= 1
        if len(calls) == 1:
            raise ValueError("hub timeout")
        return build_model("wrn-10-1").eval(), None

    monkeypatch.setattr(sources, "load", load)
    monkeypatch.setattr(sources, "label", lambda src, directory=None: src.name)
    registry, slow, outcomes = ModelRegistry(), resolve_source("nobody/slow"), []

    def visit():
        try:
            registry.load(slow)
            outcomes.append("loaded")
        except ValueError as e:
            outcomes.append(str(e))

    threads = [threading.Thread(target=visit) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert len(calls) == 1 and peak[0] == 1 and outcomes == ["hub timeout"] * 4
    assert registry.load(slow) is registry.get(slow.key) and len(calls) == 2      # tried again, afresh


def _checkpoint(tmp_path, config: dict, tensors: dict, name: str = "ckpt"):
    import json

    from safetensors.torch import save_file

    directory = tmp_path / name
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(config))
    save_file(tensors, directory / "model.safetensors")
    return directory


def test_weights_that_cannot_fit_the_config_are_refused_before_the_model_is_built(tmp_path):
    """A 136-byte repo (a config naming a 200M-parameter model, weights of one number) cost the server a GiB and
    seconds per attempt: the model was built for real before its weights were read."""
    big = {"arch": "wide-resnet50-4", "num_classes": 1000, "image_size": 64}
    directory = _checkpoint(tmp_path, big, {"x": torch.zeros(1)})
    code = ("import time\nfrom dat_core.checkpoint import load_checkpoint_dir\nt = time.monotonic()\n"
            f"try:\n    load_checkpoint_dir({str(directory)!r}, label='repo')\n"
            "except ValueError as e:\n    print('REFUSED', str(e)[:200])\n"
            "print('SECONDS', time.monotonic() - t)\n"
            "peak = next(x for x in open('/proc/self/status') if x.startswith('VmHWM'))\n"
            "print('MAXRSS_MB', int(peak.split()[1]) // 1024)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120).stdout
    assert "REFUSED repo/model.safetensors does not match wide-resnet50-4" in out, out
    assert int(out.split("MAXRSS_MB")[1]) < 700 and float(out.split("SECONDS")[1].split()[0]) < 2.5, out


def test_a_header_larger_than_the_model_needs_is_refused_unparsed(tmp_path):
    """16 MB of header describing 250,000 empty tensors (under every size cap) took 7 s and 360 MB to parse before
    its keys were compared; a 5000-dimensional shape came back as a 15,000-character message."""
    from dat_core.checkpoint import load_checkpoint_dir

    config = {"arch": "wrn-10-1", "num_classes": 10}
    many = _checkpoint(tmp_path, config, {f"t{i}": torch.zeros(0) for i in range(20_000)}, "many")
    t0 = time.monotonic()
    with pytest.raises(ValueError, match="has a header of .* bytes; the model's .* tensors need at most"):
        load_checkpoint_dir(many)
    assert time.monotonic() - t0 < 1
    sd = build_model("wrn-10-1").state_dict()
    sd["fc.weight"] = torch.zeros([1] * 5000)
    with pytest.raises(ValueError) as e:
        load_checkpoint_dir(_checkpoint(tmp_path, config, sd, "deep"))
    assert len(str(e.value)) < 500


@pytest.mark.parametrize("change,field", [({"std": [5e-324, 1, 1]}, "std"), ({"mean": [1e308, 0, 0]}, "mean"),
                                          ({"std": [1e300, 1, 1]}, "std")])
def test_a_normalization_that_float32_cannot_hold_is_refused(change, field):
    """A std of 5e-324 is 0 in float32 and a mean of 1e308 inf: the model loaded and every logit was NaN."""
    with pytest.raises(ValueError, match=field):
        validate_model_config({"arch": "wrn-10-1", "num_classes": 10, **change})
    assert validate_model_config({"arch": "wrn-10-1", "num_classes": 10, "std": [0.229, 0.224, 0.225],
                                  "mean": [0.5, 0.5, 0.5]})


@pytest.mark.parametrize("key,value,said", [("fc.weight", float("nan"), "NaN or infinite"),
                                            ("fc.bias", 1e300, "NaN or infinite"),
                                            ("block1.layer.0.bn1.running_var", -1.0, "negative variances")])
def test_weights_that_make_every_logit_nan_are_refused_by_name(tmp_path, key, value, said):
    """NaN weights, float64 values beyond float32 and negative BatchNorm variances loaded silently, and every
    explanation of the model was NaN."""
    from dat_core.checkpoint import load_checkpoint_dir

    sd = {k: v.clone() for k, v in build_model("wrn-10-1").state_dict().items()}
    assert key in sd, sorted(sd)
    sd[key] = sd[key].double()
    sd[key].view(-1)[0] = value
    with pytest.raises(ValueError, match=f"{key.replace('.', '[.]')}.*{said}"):
        load_checkpoint_dir(_checkpoint(tmp_path, {"arch": "wrn-10-1", "num_classes": 10}, sd))
