"""Audit of the model sources: one Hub model is one source whatever case its repo id is typed in (and `main` is
the default branch), the Hub download cache is bounded in total, and what the source code accepts from downloads
and official checkpoints."""

import os
import time

import fakehub
import pytest
import torch
from fakehub import FakeHub
from test_checkpoint import logits, random_model

from dat_core import hub
from dat_core.checkpoint import save_model
from dat_core.loading import load_model, resolve_source

REPO = "Dat-Lab/Dat-Tiny"


class _CaseInsensitiveHandler(fakehub._Handler):
    """The Hub's own behaviour: a repo id is looked up whatever its case, and its info names it as created."""

    def _canonical(self, repo_id: str) -> str:
        return next((k for k in self.hub.repos if k.lower() == repo_id.lower()), repo_id)

    def _repo(self, repo_id):
        return super()._repo(self._canonical(repo_id))

    def _info(self, repo_id, revision):
        return super()._info(self._canonical(repo_id), revision)


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    root = tmp_path_factory.mktemp("ckpt")
    return {seed: (m, save_model(m, root / str(seed))) for seed, m in ((1, random_model(1)), (2, random_model(2)),
                                                                      (3, random_model(3)))}


@pytest.fixture
def case_hub(checkpoints, monkeypatch):
    monkeypatch.setattr(fakehub, "_Handler", _CaseInsensitiveHandler)
    with FakeHub() as h:
        for seed, (_, directory) in checkpoints.items():
            h.commit_dir(f"Dat-Lab/Model-{seed}", directory)
        h.commit_dir(REPO, checkpoints[1][1])
        yield h


def same(model, reference) -> bool:
    return torch.equal(logits(model), logits(reference))


# ---------------------------------------------------------------- one Hub model, one source

@pytest.mark.parametrize("a, b", [(("User/Model", None), ("user/model", None)),
                                  (("user/model", None), ("user/model", "main")),
                                  (("USER/MODEL", " main "), ("user/Model", ""))])
def test_repo_ids_differing_in_case_and_main_vs_blank_are_one_source_key(a, b):
    """`User/Model` and `user/model` (and revision `main` vs none) were two keys: the app loaded and kept the same
    weights twice."""
    assert resolve_source(*a).key == resolve_source(*b).key


def test_other_repos_revisions_and_folders_stay_apart(tmp_path):
    assert resolve_source("user/model").key != resolve_source("user/model", "dev").key
    assert resolve_source("user/model", "Dev").key != resolve_source("user/model", "dev").key   # git refs: by case
    assert resolve_source("user/model").key != resolve_source("user/model2").key
    (tmp_path / "A").mkdir()
    (tmp_path / "a").mkdir()
    assert resolve_source(str(tmp_path / "A")).key != resolve_source(str(tmp_path / "a")).key


def test_a_repo_id_typed_in_another_case_is_not_downloaded_again(case_hub, checkpoints, tmp_path):
    """The HF cache folder follows the spelling typed, so `dat-lab/dat-tiny` after `Dat-Lab/Dat-Tiny` downloaded
    the same weights again into a second folder, and offline only the first spelling loaded."""
    kw = dict(endpoint=case_hub.url, cache_dir=tmp_path)
    assert same(load_model("dat-lab/dat-tiny", **kw), checkpoints[1][0])
    fetched = case_hub.count("GET", "/resolve/")
    assert same(load_model("DAT-LAB/DAT-TINY", **kw), checkpoints[1][0])
    assert same(load_model(REPO, revision="main", **kw), checkpoints[1][0])
    assert case_hub.count("GET", "/resolve/") == fetched
    assert [p.name for p in tmp_path.glob("models--*")] == ["models--Dat-Lab--Dat-Tiny"]   # the Hub's spelling
    case_hub.stop()
    assert same(load_model("dat-LAB/dat-TINY", local_files_only=True, **kw), checkpoints[1][0])
    assert same(load_model("dat-lab/dat-tiny", **kw), checkpoints[1][0])   # unreachable: the cache, any case


def test_a_cache_filled_under_another_spelling_is_used_offline(case_hub, checkpoints, tmp_path):
    hub.download("dat-lab/model-2", endpoint=case_hub.url, cache_dir=tmp_path)
    case_hub.stop()
    path = hub.download("DAT-LAB/MODEL-2", cache_dir=tmp_path, local_files_only=True)
    assert path.parent.parent.name == "models--Dat-Lab--Model-2"


def test_the_app_loads_one_model_for_case_and_main_variants(case_hub, checkpoints, tmp_path):
    from webapp import sources
    from webapp.state import ModelRegistry

    registry = ModelRegistry(hub_options={"endpoint": case_hub.url, "cache_dir": tmp_path})
    first = registry.load(sources.hub_source("Dat-Lab/Model-2"))
    again = registry.load(sources.hub_source("dat-lab/model-2", "main"))
    assert again is first and torch.allclose(logits(first.model), logits(checkpoints[2][0]), atol=1e-5)
    assert case_hub.count("GET", "model.safetensors") == 1


def test_a_branch_and_its_commit_sha_share_one_loaded_model(case_hub, checkpoints, tmp_path):
    """`owner/name` and `owner/name@<the sha main names>` are one commit's weights (one snapshot folder): they were
    loaded, kept and compiled twice. Each keeps its own key; they share the model."""
    from webapp import sources
    from webapp.state import ModelRegistry

    registry = ModelRegistry(hub_options={"endpoint": case_hub.url, "cache_dir": tmp_path})
    branch = registry.load(sources.hub_source("Dat-Lab/Model-2"))
    pinned = registry.load(sources.hub_source("Dat-Lab/Model-2", branch.directory.name))
    assert pinned.key != branch.key and pinned.revision == branch.directory.name
    assert pinned.fast is branch.fast and pinned.model is branch.model


# ---------------------------------------------------------------- the cache's total bound

def _repo_dirs(cache) -> list[str]:
    return sorted(p.name for p in cache.glob("models--*"))


def _size(checkpoints, seed: int) -> int:
    return sum(p.stat().st_size for p in checkpoints[seed][1].iterdir())


def _age(cache, name: str, seconds: float) -> None:
    """Mark a cached repo as last used `seconds` ago."""
    t = time.time() - seconds
    os.utime(cache / f"models--{name.replace('/', '--')}", (t, t))


def test_the_cache_evicts_the_least_recently_used_checkpoint_to_stay_under_its_cap(case_hub, checkpoints, tmp_path):
    """A public app downloads any repo a visitor names: nothing bounded the cache's total, so repo after repo of
    checkpoints filled the disk. Now the least recently used checkpoint repos make room."""
    cap = _size(checkpoints, 1) + _size(checkpoints, 2) + 4096
    kw = dict(endpoint=case_hub.url, cache_dir=tmp_path, max_cache_bytes=cap)
    hub.download("Dat-Lab/Model-1", **kw)
    hub.download("Dat-Lab/Model-2", **kw)
    _age(tmp_path, "Dat-Lab/Model-1", 60)
    _age(tmp_path, "Dat-Lab/Model-2", 120)
    hub.download("Dat-Lab/Model-1", **kw)   # a cache hit is a use: Model-2 is now the least recently used
    hub.download("Dat-Lab/Model-3", **kw)
    assert _repo_dirs(tmp_path) == ["models--Dat-Lab--Model-1", "models--Dat-Lab--Model-3"]
    total = sum(p.stat().st_size for p in tmp_path.rglob("*") if p.is_file() and not p.is_symlink())
    assert total <= cap
    assert same(load_model("Dat-Lab/Model-2", **{k: v for k, v in kw.items() if k != "max_cache_bytes"}),
                checkpoints[2][0])   # evicted: downloaded again when named again


def test_a_download_larger_than_the_cap_is_refused_before_its_weights_are_fetched(case_hub, checkpoints, tmp_path):
    hub.download("Dat-Lab/Model-1", endpoint=case_hub.url, cache_dir=tmp_path)
    with pytest.raises(ValueError, match="cache") as e:
        hub.download("Dat-Lab/Model-2", endpoint=case_hub.url, cache_dir=tmp_path, max_cache_bytes=1000)
    assert str(tmp_path) not in str(e.value) and "Model-2" in str(e.value)
    assert case_hub.count("GET", "Model-2/resolve/") <= 1 and case_hub.count("GET", "model.safetensors") == 1
    assert _repo_dirs(tmp_path) == ["models--Dat-Lab--Model-1"]   # the refused one left nothing behind


def test_repos_that_are_not_checkpoints_are_neither_counted_nor_evicted(case_hub, checkpoints, tmp_path):
    """The default HF cache is shared with other libraries: a researcher's 50 GB of language models there must not
    be deleted, nor count against the checkpoints' bound."""
    case_hub.commit("other/llm", {"config.json": b"{}", "tokenizer.json": b"x" * 200_000})
    from huggingface_hub import snapshot_download

    snapshot_download("other/llm", endpoint=case_hub.url, cache_dir=tmp_path)
    cap = _size(checkpoints, 1) + 4096
    hub.download("Dat-Lab/Model-1", endpoint=case_hub.url, cache_dir=tmp_path, max_cache_bytes=cap)
    hub.download("Dat-Lab/Model-2", endpoint=case_hub.url, cache_dir=tmp_path, max_cache_bytes=cap)
    assert _repo_dirs(tmp_path) == ["models--Dat-Lab--Model-2", "models--other--llm"]


@pytest.mark.parametrize("value, cap", [("", 20 << 30), ("2", 2 << 30), ("0.5", 1 << 29), (" off ", None)])
def test_the_cache_cap_comes_from_the_environment(monkeypatch, value, cap):
    monkeypatch.setenv("DAT_HUB_CACHE_GB", value)
    assert hub.cache_cap() == cap


@pytest.mark.parametrize("value", ["-1", "0", "lots", "nan", "inf"])
def test_a_cache_cap_that_is_no_size_is_refused_with_what_is_allowed(monkeypatch, value):
    monkeypatch.setenv("DAT_HUB_CACHE_GB", value)
    with pytest.raises(ValueError, match="DAT_HUB_CACHE_GB.*positive number of GiB.*off"):
        hub.cache_cap()


def test_the_app_refuses_a_bad_cache_cap_at_its_start(monkeypatch, capsys):
    """A bad $DAT_HUB_CACHE_GB surfaced only at a visitor's first Hub download, as that visitor's error."""
    import app

    monkeypatch.setenv("DAT_HUB_CACHE_GB", "lots")
    with pytest.raises(SystemExit) as e:
        app.parse_args([])
    assert e.value.code == 2 and "DAT_HUB_CACHE_GB" in capsys.readouterr().err
    monkeypatch.setenv("DAT_HUB_CACHE_GB", "off")
    assert app.parse_args([]).workers >= 1


def test_a_repo_shaped_like_ours_from_another_library_is_not_evicted(case_hub, checkpoints, tmp_path):
    """timm fetches only config.json and model.safetensors, the file names of ours: a researcher's timm checkpoints
    in the shared cache counted against the bound and were deleted oldest first. Ours have a config of ours."""
    from huggingface_hub import snapshot_download

    case_hub.commit("timm/resnet50.a1_in1k", {"config.json": b'{"architecture": "resnet50", "num_classes": 1000}',
                                              "model.safetensors": b"x" * 200_000})
    snapshot_download("timm/resnet50.a1_in1k", endpoint=case_hub.url, cache_dir=tmp_path)
    _age(tmp_path, "timm/resnet50.a1_in1k", 600)
    cap = _size(checkpoints, 1) + 4096
    hub.download("Dat-Lab/Model-1", endpoint=case_hub.url, cache_dir=tmp_path, max_cache_bytes=cap)
    hub.download("Dat-Lab/Model-2", endpoint=case_hub.url, cache_dir=tmp_path, max_cache_bytes=cap)
    assert _repo_dirs(tmp_path) == ["models--Dat-Lab--Model-2", "models--timm--resnet50.a1_in1k"]


def test_a_model_the_app_has_loaded_is_not_evicted(case_hub, checkpoints, tmp_path):
    """The app's Hub model (pinned at start, so never used again as far as the cache saw) was the first one evicted
    once visitors' downloads filled the cache: its card left the Model tab and card exports failed. A loaded model's
    repo is held; once the registry drops it, it may go."""
    from webapp import sources
    from webapp.state import ModelRegistry

    cap = _size(checkpoints, 1) + _size(checkpoints, 2) + 4096
    registry = ModelRegistry(max_models=1, hub_options={"endpoint": case_hub.url, "cache_dir": tmp_path,
                                                        "max_cache_bytes": cap})
    registry.load("Dat-Lab/Model-1", pin=True)
    _age(tmp_path, "Dat-Lab/Model-1", 600)
    hub.download("Dat-Lab/Model-2", endpoint=case_hub.url, cache_dir=tmp_path)   # cached, not loaded
    _age(tmp_path, "Dat-Lab/Model-2", 300)
    registry.load(sources.hub_source("Dat-Lab/Model-3"))   # the idle Model-2 makes room, not the older Model-1
    assert _repo_dirs(tmp_path) == ["models--Dat-Lab--Model-1", "models--Dat-Lab--Model-3"]
    with pytest.raises(ValueError, match="cache of this server is full"):   # Model-1 and Model-3 are both loaded
        registry.load(sources.hub_source("Dat-Lab/Model-2"))
    assert (registry.load("Dat-Lab/Model-1").directory / "model.safetensors").exists()


# ---------------------------------------------------------------- forged files

def test_a_safetensors_header_nested_past_the_recursion_limit_is_not_a_checkpoint(tmp_path):
    """A 24 kB header of nested brackets (within the header budget of a wrn-10-1) ended in a RecursionError
    traceback, not the "not a safetensors file" ValueError every other forged header gets."""
    import struct

    from dat_core.checkpoint import load_checkpoint_dir

    directory = save_model(random_model(1), tmp_path / "forged")
    header = b"[" * 12000 + b"]" * 12000
    (directory / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header)
    with pytest.raises(ValueError, match="forged/model.safetensors is not a safetensors file of this model"):
        load_checkpoint_dir(directory, label="forged")


@pytest.mark.parametrize("text", ["[" * 5000 + "]" * 5000, "{a: " * 5000 + "}" * 5000])
def test_an_official_config_nested_past_the_recursion_limit_is_not_yaml_we_read(tmp_path, text):
    from dat_core.official import read_official_config

    path = tmp_path / "deep.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match="deep.yaml is not"):
        read_official_config(path)


def test_an_official_config_larger_than_a_config_is_refused_unread(tmp_path):
    """`--official-config` read any file whole (a log, /dev/zero) before looking at it."""
    from dat_core.official import read_official_config

    path = tmp_path / "big.yaml"
    path.write_text("model_type: WideResNet34x10\ndataset: cifar10\nnotes: |\n" + "  x\n" * 600_000)
    with pytest.raises(ValueError, match="big.yaml is larger than 1 MB"):
        read_official_config(path)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="needs /dev/zero")
def test_a_file_that_says_size_zero_is_read_no_further_than_the_limit(tmp_path):
    """/dev/zero (or a FIFO) says size 0: the size check let it through and it was read whole, until memory ran out."""
    from dat_core.checkpoint import read_config
    from dat_core.official import read_official_config

    with pytest.raises(ValueError, match="larger than 1 MB"):
        read_official_config("/dev/zero")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "config.json").symlink_to("/dev/zero")
    with pytest.raises(ValueError, match="larger than"):
        read_config(tmp_path / "m" / "config.json")


def test_a_zoo_models_pinned_weights_are_checked_whatever_case_its_repo_is_typed_in(case_hub, tmp_path, monkeypatch):
    """The sha256 pin of a zoo model's Hub copy was only checked when the repo id was typed exactly as in the zoo:
    `dat-lab/model-1` at the pinned commit loaded whatever bytes the Hub served."""
    from dat_core import zoo

    sha = case_hub.repos["Dat-Lab/Model-1"].branches["main"]
    monkeypatch.setitem(zoo.ZOO, "dat-cifar10-test", zoo.ZooModel(
        "dat-cifar10-test", arch="wrn-10-1", dataset="cifar10", training="test", threat_model="none",
        weights_sha256="0" * 64, repo_id="Dat-Lab/Model-1", revision=sha))
    for typed in ("Dat-Lab/Model-1", "dat-lab/model-1"):
        with pytest.raises(ValueError, match="differ from the pinned sha256"):
            load_model(typed, revision=sha, endpoint=case_hub.url, cache_dir=tmp_path)


class _FailingHub(FakeHub):
    """A Hub that answers every GET with 400 and a message (a Hub-side failure that is not "not found")."""

    def start(self) -> str:
        url = super().start()

        def fail(h):
            h._error(400, None, "Bad request: the repo could not be read")
        self._server.RequestHandlerClass.do_GET = fail
        return url


def test_a_hub_failure_on_download_is_said_in_one_line(tmp_path):
    """The client's text was put in whole: several lines, with a link to MDN's page on the HTTP status."""
    with _FailingHub() as failing, pytest.raises(OSError) as e:
        hub.download("dat-lab/model", endpoint=failing.url, cache_dir=tmp_path)
    said = str(e.value)
    assert len(said.splitlines()) == 1 and "mozilla" not in said, said
    assert "400" in said and "the repo could not be read" in said and "dat-lab/model" in said
