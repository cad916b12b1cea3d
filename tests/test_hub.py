"""Hub download/push through the real huggingface_hub client against a loopback fake Hub (tests/fakehub.py)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from fakehub import FakeHub
from test_checkpoint import logits, random_model

import dat_core
from dat_core import hub
from dat_core.checkpoint import model_card, save_model
from dat_core.loading import load_model

REPO = "dat-lab/dat-tiny"
CARD = "---\nlicense: mit\npipeline_tag: image-classification\ntags: [adversarial-robustness]\n---\n# DAT tiny\n"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two checkpoint dirs with different weights: A (the repo's main) and B (an older, pinned commit)."""
    root = tmp_path_factory.mktemp("models")
    a, b = random_model(1), random_model(2)
    return {"A": (a, save_model(a, root / "a", card=CARD)), "B": (b, save_model(b, root / "b"))}


@pytest.fixture
def fake_hub(models):
    """A running fake Hub: REPO has commit B, then A on main; branch `exp` holds B; a repo without weights."""
    with FakeHub() as h:
        h.sha_b = h.commit_dir(REPO, models["B"][1])
        h.sha_a = h.commit_dir(REPO, models["A"][1])
        h.commit(REPO, {"config.json": (models["B"][1] / "config.json").read_bytes()}, branch="exp")
        h.commit(REPO, {"model.safetensors": (models["B"][1] / "model.safetensors").read_bytes()}, branch="exp")
        h.commit("dat-lab/no-weights", {"config.json": (models["A"][1] / "config.json").read_bytes()})
        yield h


def same(model, reference):
    return torch.equal(logits(model), logits(reference))


def test_download_then_cache_hit_then_offline(fake_hub, models, tmp_path):
    a = models["A"][0]
    m = load_model(REPO, endpoint=fake_hub.url, cache_dir=tmp_path)
    assert same(m, a) and not m.training and m.config == a.config
    downloads = fake_hub.count("GET", "/resolve/")
    assert downloads == 3  # config.json, model.safetensors, README.md: nothing else is fetched
    snapshot = tmp_path / "models--dat-lab--dat-tiny" / "snapshots" / fake_hub.sha_a
    assert model_card(snapshot) == CARD
    assert (tmp_path / "models--dat-lab--dat-tiny" / "refs" / "main").read_text() == fake_hub.sha_a

    assert same(load_model(REPO, endpoint=fake_hub.url, cache_dir=tmp_path), a)
    assert fake_hub.count("GET", "/resolve/") == downloads  # second load: resolved main, served from cache

    fake_hub.stop()
    requests = len(fake_hub.requests)
    assert same(load_model(REPO, endpoint=fake_hub.url, cache_dir=tmp_path, local_files_only=True), a)
    assert same(load_model(REPO, endpoint=fake_hub.url, cache_dir=tmp_path), a)  # unreachable Hub: cache
    assert len(fake_hub.requests) == requests


def test_revision_pinning(fake_hub, models, tmp_path):
    a, b = models["A"][0], models["B"][0]
    kw = dict(endpoint=fake_hub.url, cache_dir=tmp_path)
    assert same(load_model(REPO, revision=fake_hub.sha_b, **kw), b)
    assert same(load_model(REPO, **kw), a)
    assert same(load_model(REPO, revision="main", **kw), a)
    assert same(load_model(REPO, revision="exp", **kw), b)
    fake_hub.stop()
    assert same(load_model(REPO, revision=fake_hub.sha_b, local_files_only=True, **kw), b)
    assert same(load_model(REPO, revision="exp", local_files_only=True, **kw), b)


def test_hub_offline_env_var_uses_the_cache(fake_hub, models, tmp_path):
    """HF_HUB_OFFLINE is read when huggingface_hub is imported, so the offline run is a fresh interpreter."""
    load_model(REPO, endpoint=fake_hub.url, cache_dir=tmp_path)
    fake_hub.stop()
    script = f"""
import json
import torch
from dat_core.loading import load_model
torch.manual_seed(0)
x = torch.rand(2, 3, 32, 32)
with torch.no_grad():
    print(json.dumps(load_model({REPO!r}, cache_dir={str(tmp_path)!r})(x).tolist()))
try:
    load_model("dat-lab/not-cached", cache_dir={str(tmp_path)!r})
except FileNotFoundError as e:
    print(e)
"""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_ENDPOINT": fake_hub.url,
           "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    offline_logits, error = out.stdout.strip().splitlines()
    torch.manual_seed(0)
    x = torch.rand(2, 3, 32, 32)
    with torch.no_grad():
        expected, other = models["A"][0](x), models["B"][0](x)
    got = torch.tensor(json.loads(offline_logits))
    assert torch.allclose(got, expected, atol=1e-5) and not torch.allclose(got, other, atol=1e-2)
    assert "not in the cache" in error and "HF_HUB_OFFLINE=1" in error


def test_clear_errors(fake_hub, tmp_path):
    kw = dict(endpoint=fake_hub.url, cache_dir=tmp_path)
    with pytest.raises(FileNotFoundError, match="Hub repo 'dat-lab/missing' not found") as err:
        load_model("dat-lab/missing", **kw)
    assert err.value.__cause__ is not None
    with pytest.raises(FileNotFoundError, match="revision 'v9' does not exist"):
        load_model(REPO, revision="v9", **kw)
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        load_model("dat-lab/no-weights", **kw)
    with pytest.raises(FileNotFoundError, match="not in the cache.*local_files_only=True"):
        load_model(REPO, local_files_only=True, **kw)
    fake_hub.stop()
    with pytest.raises(FileNotFoundError,
                       match="could not reach the Hub and the model 'dat-lab/dat-tiny' is not in the cache"):
        load_model(REPO, **kw)


@pytest.mark.parametrize("repo_id", ["foo", "a/b/c", "../x", "a/..b", "", "a b/c", "a--b/c", "-a/b", "a/b.",
                                     "a/" + "b" * 96, "a/b\n"])
def test_malformed_repo_ids_are_rejected(repo_id):
    assert not hub.is_repo_id(repo_id)
    with pytest.raises(ValueError, match="invalid Hub repo id"):
        hub.download(repo_id)  # no network call: the id is rejected first
    with pytest.raises(ValueError, match="invalid Hub repo id"):
        hub.push(".", repo_id)


@pytest.mark.parametrize("repo_id", ["owner/dat-cifar10", "A_b/c.d-e", "u/x", "_a/b_"])
def test_valid_repo_ids(repo_id):
    assert hub.validate_repo_id(repo_id) == repo_id


def test_push_then_load_back(fake_hub, models, tmp_path):
    (a, dir_a), (b, dir_b) = models["A"], models["B"]
    info = hub.push(dir_a, "someone/pushed", endpoint=fake_hub.url, token="hf_fake")
    assert info.oid == fake_hub.repos["someone/pushed"].branches["main"]
    assert set(fake_hub.files("someone/pushed")) == {"config.json", "model.safetensors", "README.md"}
    assert fake_hub.count("POST", "/api/validate-yaml") == 1  # the card's YAML went through validation

    info_dev = hub.push(dir_b, "someone/pushed", revision="dev", endpoint=fake_hub.url, token="hf_fake",
                        commit_message="B on dev")
    assert info_dev.oid != info.oid
    kw = dict(endpoint=fake_hub.url, cache_dir=tmp_path)
    assert same(load_model("someone/pushed", **kw), a)
    assert same(load_model("someone/pushed", revision="dev", **kw), b)
    assert same(load_model("someone/pushed", revision=info.oid, **kw), a)


def test_push_refuses_an_incomplete_dir(fake_hub, models, tmp_path):
    (tmp_path / "config.json").write_bytes((models["A"][1] / "config.json").read_bytes())
    with pytest.raises(FileNotFoundError, match="missing model.safetensors"):
        hub.push(tmp_path, "someone/broken", endpoint=fake_hub.url, token="hf_fake")
    assert fake_hub.requests == []


@pytest.mark.parametrize("damage", ["empty", "truncated", "other arch"])
def test_push_refuses_weights_that_cannot_be_loaded_back(fake_hub, models, tmp_path, damage):
    """`train push` read only config.json: a zero-byte, truncated or mismatched model.safetensors went up."""
    import shutil

    d = tmp_path / "ckpt"
    shutil.copytree(models["A"][1], d)
    weights = d / "model.safetensors"
    if damage == "empty":
        weights.write_bytes(b"")
    elif damage == "truncated":
        weights.write_bytes(weights.read_bytes()[:1000])
    else:
        config = json.loads((d / "config.json").read_text())
        (d / "config.json").write_text(json.dumps({**config, "arch": "wrn-16-2"}))
    with pytest.raises(ValueError, match="cannot push"):
        hub.push(d, "someone/broken", endpoint=fake_hub.url, token="hf_fake")
    assert fake_hub.requests == []


def test_push_to_an_unreachable_hub(models):
    with FakeHub() as dead:
        url = dead.url
    with pytest.raises(ConnectionError, match="could not reach the Hub"):
        hub.push(models["A"][1], "someone/pushed", endpoint=url, token="hf_fake")


AUTOATTACK_EVAL = {"clean_accuracy": 0.75, "robust_accuracy": 0.5, "robust": {"norm": "L2", "eps": 0.5, "steps": 20},
                   "autoattack_accuracy": 0.4375, "split": "test", "n": 16,
                   "autoattack": {"clean_accuracy": 0.75, "autoattack_accuracy": 0.4375, "n": 16, "norm": "L2",
                                  "eps": 0.5, "version": "standard", "attacks": ["apgd-ce", "apgd-t"], "seed": 0}}


def test_mixin_round_trip_through_the_loopback_hub(fake_hub, tmp_path):
    """DATModel.push_to_hub -> loopback Hub -> DATModel.from_pretrained: the same logits, our three files only,
    AutoAttack in the card's model-index. The mixin's own calls take the Hub from HF_ENDPOINT, which
    huggingface_hub reads on import: so the push and the load run in a fresh interpreter."""
    root = Path(__file__).resolve().parent.parent
    script = f"""
import json, sys
import torch
sys.path.insert(0, {str(root / "tests")!r})
from test_checkpoint import X, random_model
from dat_core import DATModel
model = DATModel.wrap(random_model(3))
url = model.push_to_hub("someone/mixin", model_card_kwargs={{"metrics": {AUTOATTACK_EVAL!r}}})
back = DATModel.from_pretrained("someone/mixin", cache_dir={str(tmp_path / "cache")!r})
with torch.no_grad():
    print(json.dumps({{"same": torch.equal(back(X), model(X)), "wrapper": type(back).__name__,
                      "training": back.training, "url": str(url)}}))
"""
    env = {**os.environ, "HF_ENDPOINT": fake_hub.url, "HF_TOKEN": "hf_fake", "HF_HOME": str(tmp_path / "home"),
           "PYTHONPATH": str(root)}
    out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result == {"same": True, "wrapper": "DATModel", "training": False, "url": result["url"]}
    files = fake_hub.files("someone/mixin")
    assert set(files) == {"config.json", "model.safetensors", "README.md"}
    assert json.loads(files["config.json"])["code_version"]["version"] == dat_core.__version__

    from huggingface_hub import ModelCard

    card = ModelCard(files["README.md"].decode())
    assert card.data.library_name == "dat-explainer" and "pytorch_model_hub_mixin" in card.data.tags
    autoattack = [r for r in card.data.eval_results if r.metric_name.startswith("AutoAttack")]
    assert len(autoattack) == 1 and autoattack[0].metric_value == 0.4375
    assert autoattack[0].dataset_split == "test" and autoattack[0].metric_args["attacks"] == ["apgd-ce", "apgd-t"]
    assert autoattack[0].source_url.endswith("/someone/mixin")  # model_card_kwargs got the repo id
    reference = random_model(3)
    assert same(load_model("someone/mixin", endpoint=fake_hub.url, cache_dir=tmp_path / "other"), reference)


def test_mixin_save_pretrained_writes_our_checkpoint_format(tmp_path):
    from dat_core import DATModel

    model = DATModel.wrap(random_model(4))
    model.save_pretrained(tmp_path / "m", model_card_kwargs={"metrics": AUTOATTACK_EVAL})
    assert sorted(p.name for p in (tmp_path / "m").iterdir()) == ["README.md", "config.json", "model.safetensors"]
    assert same(load_model(tmp_path / "m"), random_model(4))  # the plain loader reads what the mixin wrote
    back = DATModel.from_pretrained(tmp_path / "m")
    assert same(back, random_model(4)) and back.config == load_model(tmp_path / "m").config
    assert "AutoAttack robust accuracy" in model_card(tmp_path / "m")


def test_mixin_never_unpickles(tmp_path):
    """A repo holding only a pickle (the mixin's own fallback is pytorch_model.bin) is refused, not loaded."""
    from dat_core import DATModel

    directory = save_model(random_model(5), tmp_path / "m")
    torch.save(random_model(5).state_dict(), directory / "pytorch_model.bin")
    (directory / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="missing model.safetensors"):
        DATModel.from_pretrained(directory)


@pytest.mark.parametrize("name", ["model.safetensors", "README.md", "config.json"])
def test_a_file_too_large_to_be_a_checkpoints_is_not_downloaded(fake_hub, tmp_path, monkeypatch, name):
    """A Hub repo named by a visitor was downloaded whole before any check: a 50 GB model.safetensors would have
    filled the Space's disk. The sizes the Hub lists are checked first (here against lowered caps)."""
    monkeypatch.setitem(hub.MAX_DOWNLOAD_BYTES, name, 10)
    before = fake_hub.count("GET", "/resolve/")
    with pytest.raises(ValueError, match=f"{name} is larger than") as e:
        hub.download(REPO, endpoint=fake_hub.url, cache_dir=tmp_path)
    assert fake_hub.count("GET", "/resolve/") == before          # nothing fetched
    assert str(tmp_path) not in str(e.value)


def test_the_download_caps_hold_the_largest_checkpoint_we_load():
    from dat_core.checkpoint import MAX_CARD_BYTES, MAX_CONFIG_BYTES
    from dat_core.models.config import MAX_PARAMETERS

    assert hub.MAX_DOWNLOAD_BYTES["model.safetensors"] >= 8 * MAX_PARAMETERS     # fp64 weights at the limit
    assert hub.MAX_DOWNLOAD_BYTES["config.json"] == MAX_CONFIG_BYTES
    assert hub.MAX_DOWNLOAD_BYTES["README.md"] == MAX_CARD_BYTES


def test_a_branch_that_moves_after_the_size_check_cannot_slip_a_file_past_it(fake_hub, tmp_path, monkeypatch):
    """The sizes were listed for `main`, then `main` was resolved again by the download: a commit pushed in between
    (a 5 MB README.md here, under caps of 1 MB) was fetched unchecked. Every request now names the checked commit."""
    from huggingface_hub import HfApi

    listing = HfApi.list_repo_tree

    def then_push(*args, **kwargs):
        listed = list(listing(*args, **kwargs))
        fake_hub.commit(REPO, {"README.md": b"x" * (5 << 20)})   # the branch moves right after its listing
        return listed

    monkeypatch.setattr(HfApi, "list_repo_tree", then_push)
    path = hub.download(REPO, endpoint=fake_hub.url, cache_dir=tmp_path)
    assert path.name == fake_hub.sha_a and (path / "README.md").stat().st_size < 1 << 20
    assert (tmp_path / "models--dat-lab--dat-tiny" / "refs" / "main").read_text() == fake_hub.sha_a
    assert not [p for p in tmp_path.rglob("*") if p.is_file() and p.stat().st_size >= 5 << 20]
    monkeypatch.undo()   # the next download sees the new commit, and refuses it before fetching anything
    with pytest.raises(ValueError, match="README.md is larger than 1 MB"):
        hub.download(REPO, endpoint=fake_hub.url, cache_dir=tmp_path)


def test_weights_larger_than_the_config_allows_are_not_downloaded(fake_hub, models, tmp_path):
    """Any repo could make the app download 3 GB (the cap of the largest model we load) whatever its config said:
    a wrn-10-1 config (78,000 parameters) with 2 MB of weights is refused before the weights are fetched."""
    config = (models["A"][1] / "config.json").read_bytes()
    fake_hub.commit("dat-lab/padded", {"config.json": config, "model.safetensors": b"\0" * (2 << 20)})
    with pytest.raises(ValueError, match=r"model.safetensors of Hub repo dat-lab/padded is 2.0 MB, more than a "
                                         r"wrn-10-1 checkpoint can be \(0\.\d MB\)") as e:
        hub.download("dat-lab/padded", endpoint=fake_hub.url, cache_dir=tmp_path)
    assert str(tmp_path) not in str(e.value)
    assert fake_hub.count("GET", "padded/resolve") == 1 and fake_hub.count("GET", "model.safetensors") == 0
    fp64 = {k: v.double() if v.is_floating_point() else v for k, v in models["A"][0].state_dict().items()}
    widest = tmp_path / "fp64"
    widest.mkdir()
    from safetensors.torch import save_file

    save_file(fp64, widest / "model.safetensors")   # the largest the config allows is still taken
    fake_hub.commit("dat-lab/fp64", {"config.json": config,
                                     "model.safetensors": (widest / "model.safetensors").read_bytes()})
    assert same(load_model("dat-lab/fp64", endpoint=fake_hub.url, cache_dir=tmp_path), models["A"][0])
