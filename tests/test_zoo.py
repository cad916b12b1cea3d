"""The named model zoo: names resolve to the bundled copy offline when its bytes are the pinned ones, else to
the Hub repo at the pinned commit (loopback Hub)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import huggingface_hub.constants  # noqa: F401  (reads $HF_HUB_OFFLINE once, at import: not in a test that sets it)
import pytest
import torch
from fakehub import FakeHub
from test_checkpoint import X, random_model

import dat_core
from dat_core import loading, zoo
from dat_core.checkpoint import save_model
from dat_core.loading import DEFAULT_MODEL_DIR, load_model, resolve_source


def test_list_models_like_timm():
    assert dat_core.list_models() == sorted(zoo.ZOO)
    assert "dat-cifar10-wrn16-2" in dat_core.list_models("dat-*")
    assert dat_core.list_models("dat-*") == [n for n in sorted(zoo.ZOO) if n.startswith("dat-")]
    assert dat_core.list_models("nothing-*") == []


@pytest.mark.parametrize("name", sorted(n for n, m in zoo.ZOO.items() if m.bundled))
def test_bundled_zoo_models_are_the_pinned_bytes(name):
    """If a bundled checkpoint is retrained, its pin in dat_core/zoo.py must change with it."""
    entry = zoo.ZOO[name]
    assert zoo.bundled_copy(entry, DEFAULT_MODEL_DIR) == DEFAULT_MODEL_DIR / name
    model = load_model(name)
    assert model.config["arch"] == entry.arch and not model.training
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), load_model(DEFAULT_MODEL_DIR / name)(x))


def test_zoo_name_resolves_offline_to_the_bundled_copy(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    source = resolve_source("dat-cifar10-wrn16-2")
    assert source.kind == "local" and source.name == str((DEFAULT_MODEL_DIR / "dat-cifar10-wrn16-2").resolve())
    with pytest.raises(ValueError, match="pinned to one commit"):
        resolve_source("dat-cifar10-wrn16-2", revision="main")


def test_a_mistyped_zoo_name_is_answered_with_the_zoo():
    """`--model dat-cifar10-wrn16-3` said only "not a valid Hub repo id": a name without an owner is meant for
    the zoo, so the answer names the closest zoo name and where the list is."""
    with pytest.raises(ValueError, match="did you mean 'dat-cifar10-wrn16-2'") as e:
        resolve_source("dat-cifar10-wrn16-3")
    assert "list_models" in str(e.value) and "'default'" in str(e.value)
    with pytest.raises(ValueError, match="owner/name") as e:
        resolve_source("nothing-like-it")
    assert "did you mean" not in str(e.value) and "zoo" in str(e.value)


def test_zoo_entries_must_be_pinned():
    sha = "0" * 64
    with pytest.raises(ValueError, match="40-hex commit sha"):
        zoo.ZooModel("x", "wrn-10-1", "cifar10", "DAT", "L2", sha, repo_id="a/b", revision="main")
    with pytest.raises(ValueError, match="both repo_id and a pinned revision"):
        zoo.ZooModel("x", "wrn-10-1", "cifar10", "DAT", "L2", sha, repo_id="a/b")
    with pytest.raises(ValueError, match="bundled copy or a pinned Hub copy"):
        zoo.ZooModel("x", "wrn-10-1", "cifar10", "DAT", "L2", sha)
    with pytest.raises(ValueError, match="64 lowercase hex"):
        zoo.ZooModel("x", "wrn-10-1", "cifar10", "DAT", "L2", "abc", bundled=True)


def test_changed_bundled_bytes_fall_back_to_the_pinned_hub_commit(tmp_path, monkeypatch):
    """A bundled copy whose weights differ from the pin is not used; the pinned Hub commit is, even after main
    moves on; without a Hub copy the name fails with a clear message."""
    pinned, later, tampered = random_model(11), random_model(12), random_model(13)
    models = tmp_path / "models"
    save_model(tampered, models / "dat-test-zoo")
    with FakeHub() as hub:
        source_dir = save_model(pinned, tmp_path / "pinned")
        sha = hub.commit_dir("lab/zoo", source_dir)
        hub.commit_dir("lab/zoo", save_model(later, tmp_path / "later"))  # main moves on
        entry = zoo.ZooModel("dat-test-zoo", "wrn-10-1", "cifar10", "DAT", "L2",
                             zoo.weights_sha256(source_dir / "model.safetensors"), bundled=True,
                             repo_id="lab/zoo", revision=sha)
        monkeypatch.setitem(zoo.ZOO, entry.name, entry)
        monkeypatch.setattr(loading, "DEFAULT_MODEL_DIR", models)
        assert resolve_source(entry.name).kind == "hub"
        got = load_model(entry.name, endpoint=hub.url, cache_dir=tmp_path / "cache")
        with torch.no_grad():
            assert torch.equal(got(X), pinned(X))

        bad_pin = dataclasses.replace(entry, weights_sha256="f" * 64)
        monkeypatch.setitem(zoo.ZOO, entry.name, bad_pin)
        with pytest.raises(ValueError, match="differ from the pinned sha256"):
            load_model(entry.name, endpoint=hub.url, cache_dir=tmp_path / "cache")

    save_model(pinned, models / "dat-test-zoo")  # now the bundled bytes are the pinned ones: no Hub needed
    monkeypatch.setitem(zoo.ZOO, entry.name, entry)
    assert resolve_source(entry.name).kind == "local"
    monkeypatch.setitem(zoo.ZOO, entry.name, dataclasses.replace(entry, weights_sha256="f" * 64, repo_id=None,
                                                                 revision=None))
    with pytest.raises(ValueError, match="not bundled with this copy"):
        resolve_source(entry.name)


def test_mixin_from_pretrained_takes_zoo_names_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = dat_core.DATModel.from_pretrained("dat-cifar10-wrn16-2")
    reference = load_model("default")
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(model(x), reference(x))


def test_space_header_lists_the_published_zoo_models():
    """README.md's Space front matter `models:` names exactly the zoo's Hub repos (the Hub links them)."""
    import yaml

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text(encoding="utf-8")
    front = yaml.safe_load(readme.split("---\n", 2)[1])
    published = sorted({m.repo_id for m in zoo.ZOO.values() if m.repo_id})
    assert sorted(front.get("models") or []) == published
    assert front["sdk"] == "gradio" and front["app_file"] == "app.py"
