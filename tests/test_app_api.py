"""The launched app on 127.0.0.1 driven through gradio_client: every named endpoint, and bad input
answered with a clear error while the app keeps serving."""

import json
import struct
import zlib

import numpy as np
import pytest
from gradio_client import Client, handle_file
from gradio_client.exceptions import AppError
from PIL import Image

import app
from benchmarks.app_harness import serve, write_model

STEPS = 2


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("api")
    model_dir = write_model(root / "model")
    rng = np.random.default_rng(0)
    photo = root / "photo.png"
    Image.fromarray(rng.integers(0, 256, (36, 40, 3), dtype=np.uint8)).save(photo)
    (root / "notes.png").write_bytes(b"definitely not an image")
    good = photo.read_bytes()
    (root / "corrupt.png").write_bytes(good[: len(good) // 2])

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    header = chunk(b"IHDR", struct.pack(">IIBBBBB", 9000, 9000, 8, 2, 0, 0, 0))
    (root / "bomb.png").write_bytes(b"\x89PNG\r\n\x1a\n" + header
                                    + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))
    rgba = root / "rgba.png"
    Image.fromarray(rng.integers(0, 256, (30, 30, 4), dtype=np.uint8), "RGBA").save(rgba)
    return {"model": model_dir, "photo": str(photo), "notes": str(root / "notes.png"),
            "corrupt": str(root / "corrupt.png"), "bomb": str(root / "bomb.png"), "rgba": str(rgba)}


@pytest.fixture(scope="module")
def client(files):
    with serve(app.build_demo(str(files["model"]), standard_model=None)) as url:
        yield Client(url, verbose=False)


def test_named_endpoints_and_their_parameters(client):
    api = client.view_api(print_info=False, return_format="dict")["named_endpoints"]
    assert set(api) == {"/counterfactual", "/generate", "/landscape", "/attribute"}  # UI events stay private
    params = {name: [p["parameter_name"] for p in info["parameters"]] for name, info in api.items()}
    assert params["/counterfactual"] == ["image", "target", "eps", "steps", "step_size"]
    assert params["/generate"] == ["target", "seed", "steps", "step_size"]
    assert params["/landscape"] == ["image", "target", "eps", "steps", "step_size"]
    assert params["/attribute"] == ["image", "target", "methods", "eps", "steps", "step_size"]


def test_counterfactual_endpoint(client, files):
    metrics, final, gif = client.predict(image=handle_file(files["photo"]), target="cat", eps="inf", steps=STEPS,
                                         step_size=0.1, api_name="/counterfactual")
    assert metrics["target_name"] == "cat" and metrics["params"]["eps"] == "inf"
    assert metrics["steps"] == list(range(STEPS + 1)) and len(metrics["energy"]) == STEPS + 1
    with Image.open(final) as im:
        assert im.size == (32, 32)                                 # the counterfactual at model resolution
    with Image.open(gif) as im:
        assert im.n_frames == STEPS + 1
    assert np.isclose(metrics["l2"][0], 0.0) and metrics["l2"][-1] > 0


def test_counterfactual_defaults_to_the_runner_up_class(client, files):
    metrics, _, _ = client.predict(image=handle_file(files["rgba"]), steps=1, api_name="/counterfactual")
    probs = np.array(metrics["probs"][0])
    assert metrics["target"] == int(np.argsort(-probs)[1])


def test_generate_endpoint_is_seeded(client):
    a = client.predict(target="cat", seed=3, steps=STEPS, step_size=0.2, api_name="/generate")
    b = client.predict(target="cat", seed=3, steps=STEPS, step_size=0.2, api_name="/generate")
    assert [s["target_name"] for s in a[0]["samples"]] == ["cat"]
    assert np.array_equal(np.asarray(Image.open(a[1])), np.asarray(Image.open(b[1])))
    with Image.open(a[2]) as im:
        assert im.n_frames == STEPS + 1


def test_landscape_endpoint(client, files):
    figure, data = client.predict(image=handle_file(files["photo"]), target="dog", eps="3", steps=STEPS,
                                  step_size=0.1, api_name="/landscape")
    values = np.array(data["values"], dtype=float)
    assert values.shape == (33, 33) and np.isfinite(values).all()
    assert len(data["path_xy"]) == STEPS + 1 and data["path_xy"][0] == [0.0, 0.0]
    assert Image.open(figure).size[0] > 200


def test_attribute_endpoint(client, files):
    figure, data = client.predict(image=handle_file(files["photo"]), target="dog", methods="saliency", eps="3",
                                  steps=STEPS, step_size=0.1, api_name="/attribute")
    assert data["methods"] == ["saliency"] and data["target_name"] == "dog"
    assert np.array(data["source_maps"]["saliency"]).shape == (32, 32)
    assert np.array(data["difference_map"]).shape == (32, 32)
    assert Image.open(figure).size[0] > 200


BAD = [
    ({"image": "notes", "target": "cat"}, "cannot read"),
    ({"image": "corrupt", "target": "cat"}, "corrupt|truncated|cannot read"),
    ({"image": "bomb", "target": "cat"}, "refused"),
    ({"image": "photo", "target": "zebra"}, "unknown class"),
    ({"image": "photo", "target": "-1"}, "class index -1 is out of range 0–9"),
    ({"image": "photo", "target": "cat", "eps": "-1"}, "ε must be"),
    ({"image": "photo", "target": "cat", "eps": "NaN"}, "ε must be"),
    ({"image": "photo", "target": "cat", "steps": 0}, "steps must"),
    ({"image": "photo", "target": "cat", "steps": 10000}, "steps must"),
    ({"image": "photo", "target": "cat", "step_size": -1}, "step size"),
]


def test_bad_inputs_are_errors_and_the_app_keeps_serving(client, files):
    for request, message in BAD:
        kwargs = {"eps": "3", "steps": STEPS, "step_size": 0.1, **request}
        kwargs["image"] = handle_file(files[kwargs["image"]])
        with pytest.raises(AppError) as info:
            client.predict(**kwargs, api_name="/counterfactual")
        assert any(m in str(info.value).lower() for m in message.split("|")), (request, str(info.value))
    with pytest.raises(AppError, match="(?i)unknown attribution method"):
        client.predict(image=handle_file(files["photo"]), target="cat", methods="magic", steps=STEPS,
                       api_name="/attribute")
    with pytest.raises(AppError, match="(?i)random seed"):
        client.predict(target="cat", seed=-5, steps=STEPS, api_name="/generate")
    # still serving, and the good request after all that succeeds
    metrics, _, _ = client.predict(image=handle_file(files["photo"]), target="ship", eps="3", steps=1, step_size=0.1,
                                   api_name="/counterfactual")
    assert metrics["target_name"] == "ship"
    json.dumps(metrics)  # strict JSON all the way


def test_answers_quote_at_most_a_short_piece_of_the_input(client, files):
    """A 100,000-character target (or ε, or method list) comes back cut to ~60 characters, not in full."""
    long = "x" * 100_000
    calls = [dict(image=handle_file(files["photo"]), target=long, eps="3", steps=1, api_name="/counterfactual"),
             dict(image=handle_file(files["photo"]), target="cat", eps=long, steps=1, api_name="/counterfactual"),
             dict(image=handle_file(files["photo"]), target="cat", methods=long, steps=1, api_name="/attribute"),
             dict(target=long, seed=0, steps=1, api_name="/generate")]
    for kwargs in calls:
        with pytest.raises(AppError) as info:
            client.predict(**kwargs)
        message = str(info.value)
        assert len(message) < 400 and "…" in message, message[:200]


def test_the_landscape_endpoint_keeps_the_tabs_time_budget(client, files, monkeypatch):
    """The tab shrinks its grid to fit 60 s of forwards; the API computed 33x33 whatever the model cost, holding the
    one model worker past the budget (an ImageNet model: 84 s where the tab took 55)."""
    import webapp.tabs.landscape as landscape_tab

    monkeypatch.setattr(landscape_tab, "seconds_per_image", lambda *a, **k: 0.1)   # a model 0.1 s an image
    _, data = client.predict(image=handle_file(files["photo"]), target="dog", eps="3", steps=STEPS, step_size=0.1,
                             api_name="/landscape")
    grid = np.array(data["values"]).shape[0]
    assert grid < 33 and (grid * grid + STEPS + 1) * 0.1 <= 60
    assert data["grid"] == {"points_per_side": grid, "requested": 33,
                            "reason": "the time budget of one request (60 s)"}
