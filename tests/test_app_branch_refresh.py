"""A Hub branch the app loaded moves on: loading it again serves the new commit (real huggingface_hub client against
the loopback fake Hub, tests/fakehub.py)."""

import pytest
import torch
from fakehub import FakeHub
from test_checkpoint import logits, random_model

from dat_core.checkpoint import save_model
from webapp import sources
from webapp.explainer import Explainer, _memo_key
from webapp.state import ModelRegistry

REPO = "dat-lab/moving"


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("models")
    a, b = random_model(1), random_model(2)
    return {"A": (a, save_model(a, root / "a")), "B": (b, save_model(b, root / "b"))}


def same(model, reference) -> bool:
    """The registry serves models channels-last, so the logits agree to float rounding."""
    return torch.allclose(logits(model), logits(reference), atol=1e-5)


@pytest.fixture
def hub(models):
    with FakeHub() as h:
        h.first = h.commit_dir(REPO, models["B"][1])
        yield h


def registry(hub, tmp_path, recheck_s: float) -> ModelRegistry:
    models = ModelRegistry(hub_options={"endpoint": hub.url, "cache_dir": tmp_path})
    models.recheck_s = recheck_s
    return models


def test_loading_a_branch_again_after_it_moved_serves_the_new_commit(hub, models, tmp_path):
    """The registry kept the first commit of `main` for as long as the process lived: a visitor who pushed new weights
    and pressed Load model again got the old ones, and so did everyone else."""
    loaded = registry(hub, tmp_path, recheck_s=0)
    first = loaded.load(sources.hub_source(REPO))
    assert same(first.model, models["B"][0]) and first.directory.name == hub.first
    second_sha = hub.commit_dir(REPO, models["A"][1])
    second = loaded.load(sources.hub_source(REPO))
    assert second.directory.name == second_sha and same(second.model, models["A"][0])
    assert loaded.get(first.key) is second   # every session on this key now runs the new commit
    x = torch.rand(3, 32, 32)
    assert _memo_key(first, x, 1, {}) != _memo_key(second, x, 1, {})   # no result of the old commit is served


def test_a_branch_is_asked_again_only_after_the_recheck_interval(hub, models, tmp_path):
    loaded = registry(hub, tmp_path, recheck_s=3600)
    first = loaded.load(sources.hub_source(REPO))
    hub.commit_dir(REPO, models["A"][1])
    asked = len(hub.requests)
    assert loaded.load(sources.hub_source(REPO)) is first
    assert len(hub.requests) == asked


def test_a_commit_sha_or_an_unreachable_hub_keeps_the_loaded_model(hub, models, tmp_path):
    loaded = registry(hub, tmp_path, recheck_s=0)
    pinned = loaded.load(sources.hub_source(REPO, hub.first))
    branch = loaded.load(sources.hub_source(REPO))
    hub.commit_dir(REPO, models["A"][1])
    asked = len(hub.requests)
    assert loaded.load(sources.hub_source(REPO, hub.first)) is pinned   # a sha never moves: the Hub is not asked
    assert len(hub.requests) == asked
    hub.stop()
    assert loaded.load(sources.hub_source(REPO)) is branch   # cannot tell: the loaded commit stays


def test_the_apps_own_hub_model_is_the_new_commit_for_everyone_once_reloaded(hub, models, tmp_path):
    """The app's model (`--model owner/name`) is pinned; loading it again after its branch moved replaces it for the
    sessions that never chose a model too, not only for the visitor who pressed Load."""
    ex = Explainer(model=REPO, standard_model=None, hub_options={"endpoint": hub.url, "cache_dir": tmp_path})
    ex.models.recheck_s = 0
    assert ex.default.directory.name == hub.first
    second_sha = hub.commit_dir(REPO, models["A"][1])
    reloaded = ex.models.load(sources.hub_source(REPO))
    assert ex.default is reloaded and reloaded.directory.name == second_sha
    assert ex.session_model(ex.new_session()) is reloaded
    assert ex.session_model(None) is reloaded


def test_a_branch_that_moved_to_a_broken_checkpoint_keeps_the_loaded_model(hub, models, tmp_path):
    """The moved-on entry was dropped before the new commit loaded: a failed load left the key with no model, and the
    app's own model (pinned) with none at all."""
    ex = Explainer(model=REPO, standard_model=None, hub_options={"endpoint": hub.url, "cache_dir": tmp_path})
    ex.models.recheck_s = 0
    first = ex.default
    hub.commit(REPO, {"model.safetensors": b"not safetensors at all"})
    with pytest.raises(ValueError):
        ex.models.load(sources.hub_source(REPO))
    assert ex.default is first and ex.models.get(first.key) is first


def test_a_path_made_before_its_branch_moved_is_not_explained_with_the_new_weights(hub, models, tmp_path):
    """Views keep the model's key, and the key stays when a moved branch loads its new commit: the landscape,
    attributions and card of a path made on the old commit ran on the new weights, and Try again offered itself as if
    the path were the current model's."""
    import gradio as gr

    from explain import counterfactual
    from webapp.tabs import landscape, try_again
    from webapp.views import CounterfactualView

    ex = Explainer(model=REPO, standard_model=None, hub_options={"endpoint": hub.url, "cache_dir": tmp_path})
    ex.models.recheck_s = 0
    old, state = ex.default, ex.new_session()
    x = torch.rand(1, 3, 32, 32)
    view = CounterfactualView.build(counterfactual(old.model, x, 3, steps=1), old.key, old.version)
    ex.put(state, "cf", view)
    assert ex.view_model(view) is old and try_again.made_for_another(view, old, x) == []
    hub.commit_dir(REPO, models["A"][1])
    new = ex.models.load(sources.hub_source(REPO))
    assert new is not old and new.key == old.key
    assert try_again.made_for_another(view, new, x) == ["model"]
    with pytest.raises(ValueError, match="changed since"):
        ex.view_model(view)
    with pytest.raises(gr.Error, match="changed since"):
        landscape.run(ex, state, 0, "E(x)", 5)


def test_a_hub_that_never_answers_the_recheck_does_not_hold_the_load(monkeypatch):
    """huggingface_hub waits without a limit by default: a Hub that took the connection and never answered held a
    Load model press on a model loaded already, which before the re-check returned at once."""
    import socket
    import threading
    import time

    from dat_core import hub as hub_module

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    held: list[socket.socket] = []
    threading.Thread(target=lambda: held.append(silent.accept()[0]), daemon=True).start()
    monkeypatch.setattr(hub_module, "RECHECK_TIMEOUT_S", 0.5, raising=False)
    started = time.monotonic()
    try:
        assert hub_module.current_commit(REPO, endpoint=f"http://127.0.0.1:{silent.getsockname()[1]}") is None
    finally:
        silent.close()
        for s in held:
            s.close()
    assert time.monotonic() - started < 5
