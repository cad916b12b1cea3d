"""Bounded load on the launched app over 127.0.0.1: 8 gradio_client clients x 10 /counterfactual requests
(5 PGD steps each, all different) on a tiny checkpoint. Every request must come back with the right answer.

Latency percentiles and the server's peak RSS are printed and written to tests/artifacts/app-load.json: figures
to read, not to assert (DESIGN §7; `python benchmarks/app.py` measures them on the real model).
"""

import json
from pathlib import Path

import pytest

import app
from benchmarks.app_harness import load_test, serve, write_image, write_model

CLIENTS, REQUESTS, STEPS, TIMEOUT_S = 8, 10, 5, 300.0
REPORT = Path(__file__).resolve().parent / "artifacts" / "app-load.json"


@pytest.mark.slow
def test_concurrent_clients_all_get_their_answer(tmp_path):
    model = write_model(tmp_path / "model")
    images = [write_image(tmp_path / f"photo{c}.png", seed=c) for c in range(CLIENTS)]
    with serve(app.build_demo(str(model), standard_model=None)) as url:
        result = load_test(url, images, CLIENTS, REQUESTS, STEPS, TIMEOUT_S)
    summary = result.summary()
    REPORT.parent.mkdir(parents=True, exist_ok=True)
    REPORT.write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    print(f"\napp load: {json.dumps(summary)}")
    assert result.failures == []
    assert summary["ok"] == CLIENTS * REQUESTS
