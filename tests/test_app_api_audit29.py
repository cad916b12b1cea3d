"""The named API endpoints on the app served on 127.0.0.1 (real gradio_client): what an audit of their budgets and
documented behaviour found. `/attribute` keeps a request's activation budget; `/generate` with its default
target says in the API's own terms why a model of many classes cannot sample them all."""

import base64
import json
import uuid
from pathlib import Path

import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError

import app
from benchmarks.app_harness import queue_completions, queue_join, serve, write_image, write_model
from dat_core import build_model, save_model
from webapp import state as st
from webapp.inputs import MAX_ALL_TARGETS


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = tmp_path_factory.mktemp("audit29")
    demo = app.build_demo(str(write_model(root / "model")), standard_model=None)
    with serve(demo) as url:
        yield demo, Client(url, verbose=False), write_image(root / "photo.png")


@pytest.fixture(scope="module")
def many_classes(tmp_path_factory) -> Client:
    """An app whose model has more classes than one request may sample (a CIFAR-100 model has exactly 100)."""
    folder = save_model(build_model("wrn-10-1", num_classes=MAX_ALL_TARGETS + 20),
                        tmp_path_factory.mktemp("many") / "model")
    with serve(app.build_demo(str(folder), standard_model=None)) as url:
        yield Client(url, verbose=False)


@pytest.mark.parametrize("method", ["integrated_gradients", "smoothgrad", "occlusion"])
def test_attribute_batches_keep_the_requests_activation_budget(served, monkeypatch, method):
    """Captum ran 32 images at once (integrated gradients' steps, occlusion's windows) with their activations
    kept for the backward, whatever the model: 32 x 0.42 GiB = 13 GiB on an ImageNet ConvNeXt-L, where a request
    may hold 2 GiB (4 images). Here the budget is set to two images of this model."""
    demo, client, photo = served
    loaded = demo.explainer.default
    monkeypatch.setattr(st, "REQUEST_ACTIVATION_BYTES", 2 * st.activation_bytes(loaded.config))
    batches: list[int] = []
    hook = loaded.model.register_forward_hook(lambda module, args, out: batches.append(args[0].shape[0]))
    try:
        _, data = client.predict(image=handle_file(str(photo)), target="dog", methods=method, eps="3", steps=1,
                                 step_size=0.1, api_name="/attribute")
    finally:
        hook.remove()
    assert data["methods"] == [method]
    assert batches and max(batches) <= 2, (method, max(batches))


def test_generate_all_on_a_model_of_many_classes_says_what_to_send(many_classes):
    """The endpoint's default ("all") on a model of over 100 classes answered "pick one class or fewer samples
    per class": the API takes no samples per class. It says to name one class, and one class works."""
    for target in ("all", None, ""):
        with pytest.raises(AppError) as info:
            many_classes.predict(target=target, seed=0, steps=1, step_size=0.2, api_name="/generate")
        message = str(info.value)
        assert "samples per class" not in message and "name one class" in message, (target, message)
        assert f"at most {MAX_ALL_TARGETS}" in message, message
    samples, grid, _ = many_classes.predict(target="7", seed=0, steps=1, step_size=0.2, api_name="/generate")
    assert [s["target"] for s in samples["samples"]] == [7] and Path(grid).is_file()


def test_generate_says_when_all_is_refused_where_an_agent_reads_it():
    """The MCP tool's input description (Gradio parses one line per argument of the docstring's Args) says when
    "all" is refused."""
    from gradio.utils import get_function_description

    from webapp import api

    _, described, _ = get_function_description(api.generate)
    assert f"at most {MAX_ALL_TARGETS} classes" in described["target"], described["target"]


@pytest.mark.parametrize("scheme", ["data:", "DATA:", "Data:"])
def test_a_data_url_image_is_read_whatever_the_case_of_its_scheme(served, scheme):
    """A URL's scheme is case-insensitive (RFC 3986): an image sent as "DATA:image/png;base64,..." over raw HTTP
    was answered "Upload an image first", as if no image had been sent."""
    demo, client, photo = served
    index = next(i for i, fn in demo.fns.items() if fn.api_name == "counterfactual")
    image = {"url": scheme + "image/png;base64," + base64.b64encode(photo.read_bytes()).decode()}
    session = uuid.uuid4().hex[:11]
    queue_join(client.src.rstrip("/"), index, [image, "cat", "3", 1, 0.1], session)
    (_, line), = queue_completions(client.src.rstrip("/"), session, timeout_s=120)
    reply = json.loads(line.removeprefix("data:"))
    assert reply["success"], reply["output"].get("error")
    assert reply["output"]["data"][0]["target_name"] == "cat"
