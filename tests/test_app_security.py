"""What a hostile visitor can send the app's handlers, and what the app answers: model sources that point at server
folders, hostile checkpoints, and inputs long enough to flood a message. The answer is always one clear
`gr.Error` that shows neither a server path nor a folder's contents, and echoes input at most ~60 characters."""

import json
import os
import re
import shutil
from pathlib import Path

import gradio as gr
import huggingface_hub
import pytest
from conftest import uploaded
from fakehub import FakeHub
from PIL import Image

import app
from dat_core import build_model, save_model
from dat_core.loading import DEFAULT_MODEL_DIR
from webapp import api, describe, sources
from webapp.explainer import Explainer
from webapp.inputs import ECHO_LIMIT, echo, safe_message
from webapp.tabs import all_targets, attributions, compare, counterfactual, generate, landscape
from webapp.tabs import model as model_tab

REPO_ROOT = Path(__file__).resolve().parents[1]
LOCAL, HUB = "Local folder", "Hugging Face Hub"


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A robust and a standard checkpoint, a photo, and the kinds of places a visitor should never see into."""
    root = tmp_path_factory.mktemp("security")
    robust = save_model(build_model("wrn-10-1"), root / "robust")
    standard = save_model(build_model("wrn-10-1"), root / "standard")
    photo = root / "photo.png"
    Image.new("RGB", (40, 40), (120, 30, 200)).save(photo)
    private = root / "private-notes"                        # an existing folder without a checkpoint
    private.mkdir()
    (private / "secret-passwords.txt").write_text("hunter2")
    (root / "link-to-etc").symlink_to("/etc")
    (root / "a-file.txt").write_text("not a checkpoint")
    return {"root": root, "robust": robust, "standard": standard, "photo": uploaded(photo), "private": private}


@pytest.fixture(scope="module")
def ex(world):
    return Explainer(str(world["robust"]), standard_model=str(world["standard"]), allow_local_models=True)


def server_paths(world) -> list[str]:
    """Strings that would tell a visitor where things live on the server."""
    return [str(world["root"]), str(REPO_ROOT), str(Path.home()), os.getcwd(), "/etc", "/root", "/proc", "/tmp",
            "/usr", "/home"]


def listed_names(world) -> list[str]:
    """Names inside the folders a visitor tried: none may appear in an answer."""
    return ["secret-passwords", "passwd", "hostname", ".ssh", ".bashrc", ".cache", "hunter2"]


def assert_clean(message: str, world, short: bool = True) -> None:
    for p in server_paths(world):
        assert p not in message, (p, message)
    for name in listed_names(world):
        assert name not in message, (name, message)
    assert "it holds" not in message and "Traceback" not in message
    assert len(message) < 400 or not short, message


def hostile_paths(world) -> list[str]:
    root = world["root"]
    return ["/etc", "~", "~/.ssh", "../../etc", "../../../../../../etc/passwd", "/root/.ssh", "/proc/self/cwd",
            str(root / "link-to-etc"), str(root / "a-file.txt"), str(world["private"]), "/etc/passwd",
            "..%2F..%2Fetc", "file:///etc", str(root / "no-such-dir"), "/" + "a" * 5000]


# ------------------------------------------------------------------ 1. server folders

@pytest.mark.parametrize("allow_local", [True, False])
@pytest.mark.parametrize("kind", [LOCAL, HUB])
def test_hostile_model_sources_never_show_a_server_path(world, kind, allow_local):
    ex = Explainer(str(world["robust"]), standard_model=None, allow_local_models=allow_local)
    for text in hostile_paths(world):
        state = ex.new_session()
        before = dict(state)
        with pytest.raises(gr.Error) as info:
            model_tab.load(ex, kind, text if kind == LOCAL else "", text if kind == HUB else "", "", None, state)
        assert_clean(info.value.message, world)
        assert state == before and ex.session_model(state) is ex.default, text


def test_server_folders_are_refused_unless_local_models_are_allowed(world):
    closed = Explainer(str(world["robust"]), standard_model=None, allow_local_models=False)
    with pytest.raises(gr.Error, match="(?i)folders on this server is turned off") as info:
        model_tab.load(closed, LOCAL, str(world["standard"]), "", "", None, closed.new_session())
    assert_clean(info.value.message, world)
    assert LOCAL not in model_tab.kinds(closed)                # the Model tab does not even offer them
    opened = Explainer(str(world["robust"]), standard_model=None, allow_local_models=True)
    out = model_tab.load(opened, LOCAL, str(world["standard"]), "", "", None, opened.new_session())._asdict()
    assert "standard" in out["banner"] and LOCAL in model_tab.kinds(opened)
    assert_clean(out["banner"] + out["model_info"], world, short=False)


def test_a_repo_id_that_is_also_a_server_path_goes_to_the_hub(world, monkeypatch):
    """`assets/models` is a valid repo id and an existing relative folder: typed as a Hub repo it is a Hub repo."""
    monkeypatch.chdir(REPO_ROOT)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    ex = Explainer(str(world["robust"]), standard_model=None, allow_local_models=True)
    with pytest.raises(gr.Error, match="Hub repo assets/models") as info:
        model_tab.load(ex, HUB, "", "assets/models", "", None, ex.new_session())
    assert_clean(info.value.message, world)


def test_bundled_models_are_offered_by_name(world):
    ex = Explainer(str(world["robust"]), standard_model=None, allow_local_models=False)
    names = list(sources.bundled_models())
    assert names and all("/" not in n for n in names)
    out = model_tab.load(ex, model_tab.BUNDLED, "", "", "", None, ex.new_session(), names[-1])._asdict()
    assert out["state"]["source"] != "default" or len(names) == 1
    assert "bundled" in out["banner"] and str(DEFAULT_MODEL_DIR) not in out["banner"]
    with pytest.raises(gr.Error, match="(?i)no bundled model"):
        model_tab.load(ex, model_tab.BUNDLED, "", "", "", None, ex.new_session(), "../../etc")


def test_no_page_text_and_no_api_answer_shows_a_server_path(world, ex):
    """The banner, the model table, the comparison note, every component's text, and the API's `model` field."""
    texts = [ex.standard_note, describe.banner(ex.default), describe.describe_model(ex.default),
             describe.banner(ex.standard)]
    demo = app.build_demo(explainer=ex)
    for block in demo.blocks.values():
        for attr in ("value", "label", "info", "placeholder"):
            value = getattr(block, attr, None)
            if isinstance(value, str) and not value.startswith(str(REPO_ROOT / "assets" / "examples")):
                texts.append(value)
    metrics, _, _ = api.counterfactual(ex, world["photo"], "cat", "3", 1, 0.1)
    texts.append(metrics["model"])
    for text in texts:
        assert str(world["root"]) not in text and str(REPO_ROOT) not in text, text


def test_the_bundled_standard_model_is_named_not_located():
    ex = Explainer("default", standard_model="auto")
    if ex.standard is None:
        pytest.skip("no bundled standard model")
    assert str(DEFAULT_MODEL_DIR) not in ex.standard_note and "bundled" in ex.standard_note


@pytest.mark.parametrize("host, share, space, allowed", [
    ("127.0.0.1", False, None, True), ("localhost", False, None, True), ("::1", False, None, True),
    ("0.0.0.0", False, None, False), ("192.168.1.5", False, None, False), ("127.0.0.1", True, None, False),
    ("127.0.0.1", False, "owner/space", False),
])
def test_allow_local_models_defaults_to_loopback_only(monkeypatch, caplog, host, share, space, allowed):
    if space:
        monkeypatch.setenv("SPACE_ID", space)
    else:
        monkeypatch.delenv("SPACE_ID", raising=False)
    assert sources.local_models_allowed(host, share) is allowed
    args = app.parse_args(["--host", host] + (["--share"] if share else []))
    assert args.allow_local_models is allowed
    caplog.clear()
    assert app.parse_args(["--host", host, "--allow-local-models"]
                          + (["--share"] if share else [])).allow_local_models is True
    warned = [r.getMessage() for r in caplog.records if "every visitor can load" in r.getMessage()]
    assert bool(warned) is not allowed   # an explicit opt-in on a reachable server is said out loud
    assert app.parse_args(["--host", host, "--no-allow-local-models"]).allow_local_models is False


# ------------------------------------------------------------------ 2. hostile checkpoints

HOSTILE_CONFIGS = {
    "image_size": ({"image_size": 4096}, "image_size"),
    "num_classes": ({"num_classes": 10**9}, "num_classes"),
    "std": ({"std": [0, 0, 0]}, "std"),
    "mean": ({"mean": ["a", 1, 2]}, "mean"),
    "arch": ({"arch": "os.system"}, "arch"),
    "budget": ({"arch": "wrn-34-10", "image_size": 512}, "activations"),
    "class_names": ({"class_names": ["a"] * 3}, "class_names"),
    "not-json": (None, "not valid JSON"),
    "quantiles": ({"energy_quantiles": "lots"}, "energy_quantiles"),
    "training": ({"training": ["not", "a", "table"]}, None),   # a note the app reads: ignored, still loads
}


def _hostile_dir(root: Path, base: Path, name: str) -> Path:
    patch, _ = HOSTILE_CONFIGS[name]
    d = root / name
    shutil.copytree(base, d)
    config = json.loads((base / "config.json").read_text())
    (d / "config.json").write_text("{not json" if patch is None else json.dumps({**config, **patch}))
    return d


@pytest.mark.parametrize("name", sorted(HOSTILE_CONFIGS))
def test_hostile_configs_are_one_clear_message(world, ex, tmp_path, name):
    d = _hostile_dir(tmp_path, world["robust"], name)
    state = ex.new_session()
    field = HOSTILE_CONFIGS[name][1]
    if field is None:
        out = model_tab.load(ex, LOCAL, str(d), "", "", world["photo"], state)._asdict()
        assert "About this model" in out["model_info"]
        return
    with pytest.raises(gr.Error, match=field) as info:
        model_tab.load(ex, LOCAL, str(d), "", "", None, state)
    assert_clean(info.value.message, world)
    assert "entered/" not in info.value.message     # read "The folder you entered/config.json is not valid JSON"
    assert str(tmp_path) not in info.value.message and ex.session_model(state) is ex.default


def test_pickled_weights_are_refused_clearly(world, ex, tmp_path):
    d = tmp_path / "pickled"
    shutil.copytree(world["robust"], d)
    (d / "model.safetensors").write_bytes(b"\x80\x04\x95" + b"\x00" * 64 + b"cos\nsystem\n.")
    with pytest.raises(gr.Error, match="not a safetensors file") as info:
        model_tab.load(ex, LOCAL, str(d), "", "", None, ex.new_session())
    assert_clean(info.value.message, world)
    assert str(tmp_path) not in info.value.message


def test_hostile_hub_checkpoints_are_one_clear_message(world, tmp_path):
    """The real huggingface_hub client against a loopback Hub: the messages name the repo, never the cache."""
    cache = tmp_path / "hf-cache"
    base = json.loads((world["robust"] / "config.json").read_text())
    weights = (world["robust"] / "model.safetensors").read_bytes()
    with FakeHub() as hub:
        ex = Explainer(str(world["robust"]), standard_model=None, allow_local_models=False,
                       hub_options={"endpoint": hub.url, "cache_dir": str(cache)})
        hub.commit("evil/big", {"config.json": json.dumps({**base, "image_size": 4096}).encode(),
                                "model.safetensors": weights})
        hub.commit("evil/pickle", {"config.json": json.dumps(base).encode(),
                                   "model.safetensors": b"\x80\x04\x95" + b"\x00" * 64})
        hub.commit("evil/empty", {"notes.txt": b"nothing here"})
        hub.commit("good/model", {"config.json": json.dumps(base).encode(), "model.safetensors": weights})
        for repo, message in [("evil/big", "image_size"), ("evil/pickle", "not a safetensors file"),
                              ("evil/empty", "config.json"), ("nobody/here", "(?i)not found")]:
            state = ex.new_session()
            with pytest.raises(gr.Error, match=message) as info:
                model_tab.load(ex, HUB, "", repo, "", None, state)
            assert repo in info.value.message and str(cache) not in info.value.message
            assert hub.url not in info.value.message
            assert_clean(info.value.message, world)
            assert ex.session_model(state) is ex.default
        out = model_tab.load(ex, HUB, "", "good/model", "", None, ex.new_session())._asdict()
        assert "good/model" in out["banner"] and str(cache) not in out["banner"] + out["model_info"]
    # what was refused left the server's disk (kept, every repo of junk a visitor names would stay there); the
    # model that loaded stays cached
    kept = sorted({p.relative_to(cache).parts[0] for p in cache.rglob("*") if p.is_file() and "blobs" in p.parts})
    assert kept == ["models--good--model"], kept


def test_hostile_model_on_the_command_line_is_one_line(world, tmp_path, capsys):
    d = _hostile_dir(tmp_path, world["robust"], "image_size")
    assert app.main(["--model", str(d)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "image_size" in err and "Traceback" not in err


# ------------------------------------------------------------------ 3. echoed input

LONG = "x" * 100_000


def test_echo_caps_input():
    assert echo("cat") == "cat"
    short = echo(LONG)
    assert len(short) == ECHO_LIMIT and short.endswith("…")
    assert len(safe_message(f"unknown class {LONG!r}; pick another", [LONG])) < 150


@pytest.mark.parametrize("where", ["target", "eps", "steps", "step_size", "norm"])
def test_long_inputs_are_not_echoed_in_full(ex, world, where):
    values = {"target": "cat", "norm": "L2", "eps": "3", "steps": 1, "step_size": 0.1, where: LONG}
    with pytest.raises(gr.Error) as info:
        counterfactual.run(ex, world["photo"], values["target"], values["norm"], values["eps"], values["steps"],
                           values["step_size"], ex.new_session())
    message = info.value.message
    assert len(message) < 300 and "…" in message, message[:300]


def test_long_inputs_in_every_tab_are_capped(ex, world):
    state = ex.new_session()
    counterfactual.run(ex, world["photo"], "cat", "L2", "3", 1, 0.1, state)
    calls = [
        lambda: generate.run(ex, LONG, "Random noise", None, 0, 1, 1, 0.2, state),
        lambda: generate.run(ex, "cat", LONG, None, 0, 1, 1, 0.2, state),
        lambda: generate.run(ex, "cat", "Random noise", None, LONG, 1, 1, 0.2, state),
        lambda: all_targets.run(ex, world["photo"], "L2", LONG, 1, 0.1, state),
        lambda: compare.run(ex, world["photo"], LONG, "L2", "3", 1, 0.1, state),
        lambda: attributions.run(ex, state, [LONG], "start x₀", 0),
        lambda: landscape.run(ex, state, 1, "E(x)", LONG),
        lambda: model_tab.load(ex, HUB, "", "owner/name", LONG, None, state),
        lambda: model_tab.load(ex, HUB, "", LONG, "", None, state),
        lambda: model_tab.load(ex, LOCAL, LONG, "", "", None, state),
        lambda: api.counterfactual(ex, world["photo"], LONG, "3", 1, 0.1),
        lambda: api.attribute(ex, world["photo"], "cat", LONG, "3", 1, 0.1),
        lambda: api.generate(ex, LONG, 0, 1, 0.2),
    ]
    for i, call in enumerate(calls):
        with pytest.raises(gr.Error) as info:
            call()
        assert len(info.value.message) < 400, (i, info.value.message[:200])


@pytest.mark.parametrize("target", ["-1", "10", "+11", "99999999999999999999", " -3 ", "1" * 5000])
def test_a_class_index_out_of_range_says_so(ex, world, target):
    with pytest.raises(gr.Error, match="(?i)class index .* out of range 0–9"):
        counterfactual.run(ex, world["photo"], target, "L2", "3", 1, 0.1, ex.new_session())


def test_unknown_names_still_list_the_classes(ex, world):
    with pytest.raises(gr.Error, match="(?i)unknown class 'zebra'.*airplane"):
        counterfactual.run(ex, world["photo"], "zebra", "L2", "3", 1, 0.1, ex.new_session())


def test_messages_never_hold_absolute_paths():
    text = safe_message("checkpoint directory /srv/models/x is missing config.json; see ~/.cache/x and C:\\models",
                        [])
    assert "/srv" not in text and "~/.cache" not in text and "C:\\" not in text
    kept = "eps must be 8/255 or owner/name or L2/Linf"
    assert safe_message(kept, []) == kept
    assert re.search("https://huggingface.co", safe_message("see https://huggingface.co/docs", []))


def test_download_files_are_bounded_in_bytes_not_only_in_age():
    """Each run wrote fresh GIF/JSON downloads kept for an hour with no size cap: ten 500-step calls added 89 MB,
    about 7 GB an hour for one scripted client."""
    import os
    import time

    from webapp.state import TempFiles

    files = TempFiles(max_bytes=10_000)
    written = []
    for i in range(8):
        path = files.path(f"run{i}.gif")
        path.write_bytes(b"x" * 3_000)
        os.utime(path.parent, (time.time() - 100 + i, time.time() - 100 + i))   # oldest first
        written.append(path)
    files.path("next.json")
    kept = [p for p in written if p.exists()]
    assert sum(p.stat().st_size for p in kept) <= 10_000
    assert kept == written[-len(kept):] and len(kept) >= 3          # the newest stay


def test_opening_a_page_never_downloads_a_model(world, tmp_path):
    """A link (model=hf:owner/name) or a remembered Hub choice made the page-load event download and load the model:
    four at a time, outside the model queue and the one-computation-per-visitor rule. Now the Model tab is set to
    it and the visitor presses Load; a model already loaded here opens at once."""
    from starlette.datastructures import QueryParams

    from webapp import opening

    class Request:
        def __init__(self, query):
            self.query_params = QueryParams(query)

    base = json.loads((world["robust"] / "config.json").read_text())
    weights = (world["robust"] / "model.safetensors").read_bytes()
    with FakeHub() as hub:
        hub.commit("owner/model", {"config.json": json.dumps(base).encode(), "model.safetensors": weights})
        ex = Explainer(str(world["robust"]), standard_model=None, allow_local_models=False,
                       hub_options={"endpoint": hub.url, "cache_dir": str(tmp_path / "hf-cache")})
        before = hub.count()
        for saved, query in ((None, "model=hf:owner/model"), ({"kind": HUB, "repo": "owner/model"}, "")):
            page = opening.open_page(ex, saved, Request(query))._asdict()
            assert page["state"]["key"] == ex.default.key and hub.count() == before, saved
            assert page["model_repo"] == "owner/model" and page["model_kind"] == HUB
            assert "press Load" in (page["cf_summary"] if query else page["model_info"])
        loaded = model_tab.load(ex, HUB, "", "owner/model", "", None, ex.new_session())   # the visitor's click
        page = opening.open_page(ex, None, Request("model=hf:owner/model"))._asdict()
        assert page["state"]["key"] == loaded.state["key"] != ex.default.key   # loaded here already: opens on it
