"""`DATModel.from_pretrained` checks a checkpoint exactly as `load_model` does: config.json is size-capped and checked
field by field before anything parses it whole, from a local folder and from the Hub cache (the real
`huggingface_hub` client against the loopback fake Hub, tests/fakehub.py)."""

import json

import pytest
import torch
from fakehub import FakeHub
from huggingface_hub import snapshot_download
from test_checkpoint import logits, random_model

from dat_core import DATModel, hub
from dat_core.checkpoint import save_model
from dat_core.loading import load_model

REPO = "dat-lab/odd-config"
BIG = json.dumps({"arch": "wrn-10-1", "num_classes": 10, "pad": "x" * (5 * 2**20)})
"""A valid JSON object over the 4 MB config cap: refused by its size, not parsed."""

MALFORMED = [
    ("[1]", "must hold a JSON object"),                     # was AttributeError: 'list' has no attribute 'items'
    ('"wrn-10-1"', "must hold a JSON object"),
    ("{", "not valid JSON"),                                # was the bare json.JSONDecodeError
    ("[" + "0," * (3 * 2**20) + "0]", "larger than 4 MB"),  # was parsed whole (then AttributeError)
    (BIG, "larger than 4 MB"),
    ('{"num_classes": 10}', "lacks arch"),
    ('{"arch": "wrn-10-1", "num_classes": true}', "num_classes"),
]


def _checkpoint(directory, config: str | None = None):
    """A wrn-10-1 checkpoint dir; `config` (raw text) replaces its config.json."""
    save_model(random_model(1), directory)
    if config is not None:
        (directory / "config.json").write_text(config)
    return directory


@pytest.mark.parametrize("config, message", MALFORMED, ids=range(len(MALFORMED)))
def test_malformed_configs_end_in_a_value_error_from_a_folder(tmp_path, config, message):
    directory = _checkpoint(tmp_path / "ckpt", config)
    with pytest.raises(ValueError, match=message):
        load_model(directory)
    with pytest.raises(ValueError, match=message):
        DATModel.from_pretrained(directory)


def test_extra_config_keys_load_as_with_load_model(tmp_path):
    """load_model accepts extra top-level keys; the mixin used to hand them to `__init__`/`_from_pretrained`
    (TypeError: unexpected keyword argument 'classifier')."""
    directory = _checkpoint(tmp_path / "ckpt")
    config = json.loads((directory / "config.json").read_text())
    (directory / "config.json").write_text(json.dumps({**config, "classifier": "linear", "note": [1, 2]}))
    model = DATModel.from_pretrained(directory)
    assert torch.equal(logits(model), logits(load_model(directory))) and not model.training
    assert model.config["classifier"] == "linear"


@pytest.fixture
def cached(tmp_path, monkeypatch):
    """A Hub cache filled through the real client from the loopback Hub: `REPO` on branches named after each
    case of MALFORMED (0, 1, ...), and a good checkpoint with an extra key on main. (The malformed configs get
    into the cache past `hub.download`'s own checks, through huggingface_hub itself: a cache may hold what another
    client put.)"""
    monkeypatch.setitem(hub.MAX_DOWNLOAD_BYTES, "config.json", 1 << 30)
    good = _checkpoint(tmp_path / "good")
    config = json.loads((good / "config.json").read_text())
    (good / "config.json").write_text(json.dumps({**config, "classifier": "linear"}))
    cache = tmp_path / "cache"
    with FakeHub() as fake:
        fake.commit_dir(REPO, good)
        hub.download(REPO, endpoint=fake.url, cache_dir=cache)
        for i, (text, _) in enumerate(MALFORMED):
            fake.commit(REPO, {"config.json": text.encode()}, branch=str(i))
            snapshot_download(REPO, revision=str(i), endpoint=fake.url, cache_dir=cache,   # another client's:
                              allow_patterns=hub.HUB_FILES)   # hub.download refuses a bad config before the weights
    return cache, good


def test_from_pretrained_checks_a_hub_download_like_load_model(cached):
    cache, good = cached
    model = DATModel.from_pretrained(REPO, cache_dir=cache, local_files_only=True)
    assert torch.equal(logits(model), logits(load_model(good)))
    for i, (_, message) in enumerate(MALFORMED):
        with pytest.raises(ValueError, match=message):
            DATModel.from_pretrained(REPO, revision=str(i), cache_dir=cache, local_files_only=True)


def test_from_pretrained_keeps_its_arguments(tmp_path):
    """map_location as before; a revision only applies to Hub repo ids; unknown keywords are a TypeError."""
    directory = _checkpoint(tmp_path / "ckpt")
    assert next(DATModel.from_pretrained(directory, map_location="cpu").parameters()).device.type == "cpu"
    with pytest.raises(TypeError):
        DATModel.from_pretrained(directory, strict=False)
    with pytest.raises(FileNotFoundError, match="not in the cache"):
        DATModel.from_pretrained(REPO, cache_dir=tmp_path / "empty", local_files_only=True)
